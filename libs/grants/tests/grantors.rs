//! Who granted a membership, and what a CREATEROLE role may do, changed in PostgreSQL 16:
//! role grants have a grantor, and a REVOKE without `GRANTED BY` takes away only the
//! current role's own grant (a superuser's is the bootstrap superuser's), so a membership
//! granted by one login survives another login's REVOKE, with a warning only; CREATEROLE
//! acts only on roles one has ADMIN OPTION on; a CREATEROLE role that creates a role is
//! granted it implicitly, with the options in the *session's* `createrole_self_grant`.
//! These tests run on the harness's PostgreSQL (15 by default) and on 18 (`make test-pg18`,
//! PG_BINDIR): on 15 they check that nothing differs, on 16+ they attack the differences.

// A panic is how a test reports a failure.
#![allow(clippy::unwrap_used)]

use chrono::{Duration, Utc};
use grants::{NewGrant, PeopleLogin, SecretLayout};
use testkit::TestDb;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

const APP: &str = "dbgw_approvals";

fn layout(db: &TestDb) -> SecretLayout {
    SecretLayout {
        host: db.cluster.host().to_string(),
        port: db.cluster.port(),
        master: "dbgw/postgres-admin".into(),
    }
}

async fn app(db: &TestDb, database: &str) -> Client {
    let creds = db.login(APP, "dbgw/approvals-db").await;
    db.cluster
        .server()
        .connect_as(database, &creds)
        .await
        .unwrap()
}

async fn server_version(client: &Client) -> i32 {
    client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap()
        .get(0)
}

/// Every row of `member`'s memberships: (role, grantor); not the marker `dbgw_people`,
/// which every person's role holds and no grant gives.
async fn grants_of(admin: &Client, member: &str) -> Vec<(String, String)> {
    admin
        .query(
            "SELECT g.rolname::text, coalesce(gr.rolname::text, '') FROM pg_auth_members m \
             JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member \
             LEFT JOIN pg_roles gr ON gr.oid = m.grantor WHERE u.rolname = $1 \
             AND g.rolname <> 'dbgw_people' ORDER BY 1, 2",
            &[&member],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn grant(email: &str, role: &str) -> NewGrant {
    NewGrant {
        email: email.into(),
        database: "rates".into(),
        role: role.into(),
        expires_at: Utc::now() + Duration::hours(1),
        created_by: "operator".into(),
        policy: Default::default(),
    }
}

/// `proxy grant add --database rates` provisions with the admin login on `rates`, which has
/// no provisioning functions; `proxy grant revoke` revokes on `postgres`, through them (as
/// the approvals app does). On 16+ the provisioner could not revoke the admin's grant nor
/// take the admin-created role's login away.
#[tokio::test]
async fn an_operators_grant_made_without_the_functions_ends_through_them() {
    let db = TestDb::start().await;
    let control = db.cluster.connect("dbgw").await.unwrap();
    let rates = db.cluster.connect("rates").await.unwrap();
    let postgres = db.cluster.connect("postgres").await.unwrap();
    assert!(!grants::has_interface(&rates).await.unwrap());
    assert!(grants::has_interface(&postgres).await.unwrap());
    let g = grants::add(
        &control,
        &rates,
        &db.store,
        &layout(&db),
        PeopleLogin::Password,
        grant("olga@example.com", "rates_writer"),
    )
    .await
    .unwrap();
    grants::revoke(&control, &postgres, g.id, "operator", "done")
        .await
        .unwrap();
    assert_eq!(
        grants_of(&postgres, &g.db_user).await,
        vec![],
        "the ended grant's membership is left"
    );
    assert!(!grants::can_login(&postgres, &g.db_user).await.unwrap());
}

/// The other way round: the approvals app's grant (made by the provisioner, through the
/// functions) revoked with an admin login on a database without them. On 16+ the admin's
/// plain REVOKE removed only a grant of its own, leaving the provisioner's.
#[tokio::test]
async fn an_apps_grant_ends_through_an_admin_login_without_the_functions() {
    let db = TestDb::start().await;
    let control = db.cluster.connect("dbgw").await.unwrap();
    let rates = db.cluster.connect("rates").await.unwrap();
    let app = app(&db, "postgres").await;
    let g = grants::add(
        &control,
        &app,
        &db.store,
        &layout(&db),
        PeopleLogin::Password,
        grant("erin@example.com", "rates_writer"),
    )
    .await
    .unwrap();
    assert!(!grants_of(&rates, &g.db_user).await.is_empty());
    grants::revoke(&control, &rates, g.id, "operator", "done")
        .await
        .unwrap();
    assert_eq!(
        grants_of(&rates, &g.db_user).await,
        vec![],
        "the ended grant's membership is left"
    );
    assert!(!grants::can_login(&rates, &g.db_user).await.unwrap());
}

/// A membership granted before the provisioner existed (by an admin, or by the old
/// CREATEROLE login: on a server upgraded to 16+ such grants keep their grantor) is still
/// the app's to take away once setup has run again.
#[tokio::test]
async fn a_membership_granted_before_setup_ends_through_the_functions() {
    let db = TestDb::start().await;
    let control = db.cluster.connect("dbgw").await.unwrap();
    let admin = db.cluster.connect("postgres").await.unwrap();
    let user = grants::person_role("frank@example.com");
    admin
        .batch_execute(&format!(
            "CREATE ROLE {user} LOGIN; GRANT rates_writer TO {user}"
        ))
        .await
        .unwrap();
    dbgw_db::schema::setup_control(&db.cluster.server())
        .await
        .unwrap();
    let app = app(&db, "postgres").await;
    // No active grant for the role: reconciling takes everything away.
    let done = grants::reconcile(&control, &app, &user).await.unwrap();
    assert_eq!(done.revoked, vec!["rates_writer".to_string()]);
    assert_eq!(
        grants_of(&admin, &user).await,
        vec![],
        "the old membership is left"
    );
    assert!(!grants::can_login(&admin, &user).await.unwrap());
}

/// PostgreSQL 16+ only: the powers a CREATEROLE role has there, attacked with the app's
/// login (which holds EXECUTE on the functions and nothing else).
#[tokio::test]
async fn the_app_login_cannot_use_what_postgresql_16_gives_a_createrole_role() {
    let db = TestDb::start().await;
    let admin = db.cluster.connect("postgres").await.unwrap();
    if server_version(&admin).await < 160000 {
        eprintln!("PostgreSQL 15: no grantors, SET/INHERIT options or createrole_self_grant");
        return;
    }
    let app = app(&db, "postgres").await;
    // The session's createrole_self_grant shapes the implicit grant of a role the
    // provisioner creates: SET and INHERIT would let the provisioner (and whoever can act
    // as it, the RDS master) become the person, or take on their privileges.
    app.batch_execute("SET createrole_self_grant = 'set, inherit'")
        .await
        .unwrap();
    let person = grants::person_role("mallory@example.com");
    assert!(grants::ensure_role(&app, &person).await.unwrap());
    let row = admin
        .query_one(
            "SELECT bool_or(m.admin_option), bool_or(m.set_option), bool_or(m.inherit_option) \
             FROM pg_auth_members m JOIN pg_roles p ON p.oid = m.member \
             WHERE m.roleid = $1::text::regrole AND p.rolname = 'dbgw_provisioner'",
            &[&person],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get(0), row.get(1), row.get(2)),
        (Some(true), Some(false), Some(false)),
        "the provisioner's implicit grant of the role it created is ADMIN only"
    );
    // The creator of the person's role is the function's owner, not the caller: the app's
    // login holds no ADMIN OPTION (nor anything else) on it.
    assert_eq!(grants_of(&admin, APP).await, vec![]);
    for sql in [
        // The provisioner's ADMIN OPTION on the catalogue roles and the person's role is not
        // the login's to use: not as a grantor, not with the new grant options.
        format!("GRANT rates_writer TO {APP} GRANTED BY dbgw_provisioner"),
        format!("GRANT rates_writer TO {APP} WITH INHERIT FALSE, SET TRUE"),
        format!("GRANT pg_read_all_data TO {APP} WITH INHERIT TRUE, SET FALSE"),
        format!("GRANT {person} TO {APP} WITH ADMIN OPTION"),
        format!("GRANT rates_writer TO {person} GRANTED BY dbgw_provisioner"),
        format!("ALTER ROLE {person} LOGIN PASSWORD 'chosen'"),
        "SET ROLE dbgw_provisioner".to_string(),
        "SET ROLE rates_writer".to_string(),
    ] {
        match app.batch_execute(&sql).await {
            Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {}
            other => panic!("{sql}: expected a refusal (42501), got {other:?}"),
        }
    }
    assert_eq!(grants_of(&admin, APP).await, vec![]);
    // The provisioner holds the catalogue roles with ADMIN OPTION only: its SECURITY
    // DEFINER functions cannot read or write the data it hands out.
    for (role, how) in [
        ("rates_reader", "USAGE"),
        ("rates_reader", "SET"),
        ("rates_writer", "USAGE"),
        ("rates_writer", "SET"),
        (person.as_str(), "USAGE"),
        (person.as_str(), "SET"),
    ] {
        let has: bool = admin
            .query_one(
                "SELECT pg_has_role('dbgw_provisioner', $1, $2)",
                &[&role, &how],
            )
            .await
            .unwrap()
            .get(0);
        assert!(!has, "dbgw_provisioner has {how} on {role}");
    }
}

/// A membership someone else granted after setup (an admin by hand, on 16+): the
/// provisioner cannot revoke it, and the function says so instead of reporting a
/// revocation that did not happen. On 15 a CREATEROLE role's REVOKE takes any grant.
#[tokio::test]
async fn a_revocation_the_provisioner_cannot_make_is_an_error_not_a_success() {
    let db = TestDb::start().await;
    let admin = db.cluster.connect("postgres").await.unwrap();
    let app = app(&db, "postgres").await;
    let user = grants::person_role("grace@example.com");
    assert!(grants::ensure_role(&app, &user).await.unwrap());
    admin
        .batch_execute(&format!("GRANT rates_writer TO {user}"))
        .await
        .unwrap();
    let revoked = app
        .query_one(
            "SELECT dbgw_provision.revoke_role($1, 'rates_writer')",
            &[&user],
        )
        .await;
    if server_version(&admin).await < 160000 {
        assert!(revoked.unwrap().get::<_, bool>(0));
        assert_eq!(grants_of(&admin, &user).await, vec![]);
        return;
    }
    match revoked {
        Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {}
        other => panic!("expected a refusal (42501), got {other:?}"),
    }
    assert_eq!(
        grants_of(&admin, &user).await,
        vec![("rates_writer".to_string(), "postgres".to_string())]
    );
}
