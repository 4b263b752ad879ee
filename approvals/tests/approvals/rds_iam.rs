//! People's roles as RDS IAM logins (issue 17: a person's database password must be useless
//! outside the proxy; on RDS there is none). The server here is PostgreSQL with a role named
//! `rds_iam`, which is all RDS's IAM authentication is from the database's side: what RDS
//! then does with a member's login (asks for an IAM token, never a password) cannot run
//! here. What is tested is dbgw's side: the app makes no password and no secret, its login
//! cannot give one back (as itself, or as the rotation function acting for it), roles from
//! a password era are switched at start-up, and a server without `rds_iam` is refused.

use crate::common::{Options, Stack};
use approvals::settings::Settings;
use tokio_postgres::error::SqlState;

/// Whether the role has a password (only a superuser may read pg_authid).
async fn has_password(stack: &Stack, role: &str) -> bool {
    let admin = stack.cluster.connect("postgres").await.unwrap();
    admin
        .query_one(
            "SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = $1",
            &[&role],
        )
        .await
        .unwrap()
        .get(0)
}

async fn member_of(stack: &Stack, role: &str, group: &str) -> bool {
    let admin = stack.cluster.connect("postgres").await.unwrap();
    admin
        .query_one("SELECT pg_has_role($1, $2, 'MEMBER')", &[&role, &group])
        .await
        .unwrap()
        .get(0)
}

async fn db_user(stack: &Stack, request: i64) -> String {
    stack
        .control()
        .await
        .query_one(
            "SELECT g.db_user FROM access_requests r JOIN grants g ON g.id = r.grant_id \
             WHERE r.id = $1",
            &[&request],
        )
        .await
        .unwrap()
        .get(0)
}

fn refused(what: &str, result: Result<impl std::fmt::Debug, tokio_postgres::Error>) {
    match result {
        Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {}
        other => panic!("{what}: expected a refusal (42501), got {other:?}"),
    }
}

/// Approval makes a role that is a member of rds_iam with no password and no secret; the
/// app's login cannot give it a password or take rds_iam away; ending takes the access away
/// and leaves it passwordless.
#[tokio::test]
async fn an_approved_person_on_rds_gets_an_iam_login_and_no_password() {
    let stack = Stack::with(Options {
        rds_iam: true,
        ..Options::default()
    })
    .await;
    let alice = stack.browser();
    alice.sign_in("alice@example.com").await;
    let id = alice.request("read-only", 30).await;
    let dana = stack.browser();
    dana.sign_in("dana@example.com").await;
    let answer = dana.decide(id, "approve", "ok").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(stack.status(id).await, "active");

    let role = db_user(&stack, id).await;
    assert!(member_of(&stack, &role, "rds_iam").await);
    assert!(member_of(&stack, &role, "dbgw_people").await);
    assert!(member_of(&stack, &role, "rates_reader").await);
    assert!(!has_password(&stack, &role).await, "{role} has a password");
    assert!(
        stack
            .store
            .db_credentials(&grants::person_secret(&role))
            .await
            .is_err(),
        "a secret was made for {role}"
    );
    // What the app's grants and the proxy see: the catalogue role only.
    assert_eq!(
        stack.memberships("alice@example.com").await,
        ["rates_reader"]
    );
    let kinds = stack.event_kinds(id).await;
    assert!(
        kinds.contains(&"provision.password".to_string()),
        "{kinds:?}"
    );

    // The app's login (or the rotation function, which logs in as it to set people's
    // passwords) cannot give the role a password back, nor take rds_iam away, nor hand
    // rds_iam out as a catalogue role, even one an admin marked grantable.
    let app = stack.as_app("postgres").await;
    let verifier = postgres_protocol::password::scram_sha_256(b"chosen by the attacker");
    refused(
        "set_password on an IAM login",
        app.query_one(
            "SELECT dbgw_provision.set_password($1, $2)",
            &[&role, &verifier],
        )
        .await,
    );
    refused(
        "revoke_role rds_iam",
        app.query_one("SELECT dbgw_provision.revoke_role($1, 'rds_iam')", &[&role])
            .await,
    );
    let admin = stack.cluster.connect("postgres").await.unwrap();
    admin
        .batch_execute("GRANT dbgw_grantable TO rds_iam")
        .await
        .unwrap();
    let grantable: bool = app
        .query_one("SELECT dbgw_provision.grantable('rds_iam')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!grantable, "rds_iam must never be a catalogue role");
    assert!(!has_password(&stack, &role).await);

    // Ending takes the access away; the role stays an IAM login with no password.
    assert!(
        approvals::provision::begin_end(&stack.app, id, "revoked", "dana@example.com")
            .await
            .unwrap()
    );
    approvals::provision::finish_end(&stack.app, id)
        .await
        .unwrap();
    assert_eq!(stack.status(id).await, "ended");
    assert!(stack.memberships("alice@example.com").await.is_empty());
    assert!(!grants::can_login(&admin, &role).await.unwrap());
    assert!(member_of(&stack, &role, "rds_iam").await);
    assert!(!has_password(&stack, &role).await);
    stack.stop().await;
}

/// Switching `people.login` to `rds-iam` leaves no password behind: at start-up every
/// person's role made with one becomes an IAM login and its secret is deleted.
#[tokio::test]
async fn switching_to_rds_iam_removes_earlier_passwords_and_secrets() {
    let stack = Stack::start().await;
    let alice = stack.browser();
    alice.sign_in("alice@example.com").await;
    let id = alice.request("read-only", 30).await;
    let dana = stack.browser();
    dana.sign_in("dana@example.com").await;
    dana.decide(id, "approve", "ok").await;
    assert_eq!(stack.status(id).await, "active");
    let role = db_user(&stack, id).await;
    let secret = grants::person_secret(&role);
    assert!(has_password(&stack, &role).await);
    assert!(stack.store.db_credentials(&secret).await.is_ok());

    // The deploy that turns IAM on: the server gets rds_iam (RDS has it), setup runs again.
    let admin = stack.cluster.connect("postgres").await.unwrap();
    admin
        .batch_execute("CREATE ROLE rds_iam NOLOGIN")
        .await
        .unwrap();
    dbgw_db::schema::setup_control(&stack.cluster.server())
        .await
        .unwrap();
    let switched =
        approvals::provision::switch_to_iam(&stack.app.control, &stack.app.target, &stack.store)
            .await
            .unwrap();
    assert_eq!(switched, 1);
    assert!(member_of(&stack, &role, "rds_iam").await);
    assert!(!has_password(&stack, &role).await);
    assert!(stack.store.db_credentials(&secret).await.is_err());
    // The grant itself is untouched: still active, same catalogue role.
    assert_eq!(stack.status(id).await, "active");
    assert_eq!(
        stack.memberships("alice@example.com").await,
        ["rates_reader"]
    );
    // Nothing left to switch.
    let again =
        approvals::provision::switch_to_iam(&stack.app.control, &stack.app.target, &stack.store)
            .await
            .unwrap();
    assert_eq!(again, 0);
    stack.stop().await;
}

/// `rds-iam` on a server without `rds_iam` (not RDS) is refused at start-up, and so is
/// rotating people's passwords that would not exist.
#[tokio::test]
async fn rds_iam_is_refused_where_it_cannot_work() {
    let stack = Stack::start().await;
    let mut settings = Settings {
        listen: "127.0.0.1:0".into(),
        ..Settings::default()
    };
    settings.secrets.dir = stack.dir.path().join("secrets");
    settings.oidc.issuer = stack.idp.issuer().to_string();
    for db in [&mut settings.control, &mut settings.target] {
        db.port = stack.cluster.port();
        db.ca_file = stack.cluster.ca_cert();
    }
    settings.people.login = grants::PeopleLogin::RdsIam;
    let err = approvals::Application::build(settings.clone())
        .await
        .err()
        .expect("rds-iam without rds_iam is refused");
    assert!(
        format!("{err:#}").contains("has no role rds_iam"),
        "{err:#}"
    );

    settings.rotation.function_arn = "arn:aws:lambda:eu-west-1:111122223333:function:rotate".into();
    let err = settings.validate().expect_err("rotation with rds-iam");
    assert!(err.to_string().contains("nothing to rotate"), "{err}");
    stack.stop().await;
}
