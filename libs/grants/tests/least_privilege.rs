//! The approvals app's database login from the attacker's side (issue 17, item 4), on the
//! harness's PostgreSQL (15, and 18 in `make test-pg18`; grantors.rs for what 16+ changes):
//! with the login's own credentials, whoever holds them (the app, or anyone who took its
//! secret) tries to exceed its job. Provisioning goes through the
//! `dbgw_provision` functions (db/provisioner.sql), owned by the NOLOGIN `dbgw_provisioner`;
//! the login holds EXECUTE on them and nothing else on the server.

// A panic is how a test reports a failure.
#![allow(clippy::unwrap_used)]

use chrono::{Duration, Utc};
use grants::{GrantError, NewGrant, PeopleLogin, SecretLayout};
use testkit::TestDb;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

const APP: &str = "dbgw_approvals";

fn layout(db: &TestDb) -> SecretLayout {
    SecretLayout {
        host: db.cluster.host().to_string(),
        port: db.cluster.port(),
        master: "dbgw/approvals-db".into(),
    }
}

/// Erin's hour of read-only access to rates, as the approvals app asks for it.
fn erin_reads_rates() -> NewGrant {
    NewGrant {
        email: "erin@example.com".into(),
        database: "rates".into(),
        role: "rates_reader".into(),
        expires_at: Utc::now() + Duration::hours(1),
        created_by: "approvals".into(),
        policy: Default::default(),
    }
}

/// The app's login, connected to `database` (the app's target is `postgres`, its control
/// plane `dbgw`).
async fn app(db: &TestDb, database: &str) -> Client {
    let creds = db.login(APP, "dbgw/approvals-db").await;
    db.cluster
        .server()
        .connect_as(database, &creds)
        .await
        .unwrap()
}

/// The statement failed for lack of privilege (not because something is missing).
fn denied<T: std::fmt::Debug>(what: &str, result: Result<T, tokio_postgres::Error>) {
    match result {
        Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {}
        other => panic!("{what}: expected a refusal (42501), got {other:?}"),
    }
}

/// The library call failed for lack of privilege or because the role is not grantable.
fn refused<T: std::fmt::Debug>(what: &str, result: Result<T, GrantError>) {
    match result {
        Err(GrantError::Db(e)) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {}
        Err(GrantError::BadRole(..)) => {}
        other => panic!("{what}: expected a refusal, got {other:?}"),
    }
}

async fn member_of(admin: &Client, role: &str, group: &str) -> bool {
    admin
        .query_one("SELECT pg_has_role($1, $2, 'MEMBER')", &[&role, &group])
        .await
        .unwrap()
        .get(0)
}

/// PostgreSQL 15: a CREATEROLE login may grant any non-superuser role, predefined ones
/// included, to itself; with `pg_execute_server_program` it runs OS commands as `postgres`.
#[tokio::test]
async fn the_app_login_cannot_grant_itself_predefined_roles() {
    let db = TestDb::start().await;
    let admin = db.cluster.connect("postgres").await.unwrap();
    let app = app(&db, "postgres").await;
    for role in [
        "pg_execute_server_program",
        "pg_read_server_files",
        "pg_write_server_files",
        "pg_read_all_data",
        "pg_signal_backend",
        "rates_writer",
    ] {
        denied(
            &format!("GRANT {role} TO {APP}"),
            app.batch_execute(&format!("GRANT {role} TO {APP}")).await,
        );
        assert!(!member_of(&admin, APP, role).await, "{APP} is in {role}");
    }
    denied(
        "COPY ... TO PROGRAM",
        app.batch_execute("COPY (SELECT 1) TO PROGRAM 'id'").await,
    );
    // Nor through the provisioning functions, with its own name or a person's.
    let person = grants::person_role("mallory@example.com");
    grants::ensure_role(&app, &person).await.unwrap();
    for (who, role) in [
        (APP, "pg_execute_server_program"),
        (person.as_str(), "pg_execute_server_program"),
        (person.as_str(), "pg_read_server_files"),
        (person.as_str(), "dbgw_provisioner"),
        (person.as_str(), "rates_owner"),
    ] {
        denied(
            &format!("dbgw_provision.grant_role({who}, {role})"),
            app.query_one("SELECT dbgw_provision.grant_role($1, $2)", &[&who, &role])
                .await,
        );
        refused(
            &format!("grants::grant_membership({who}, {role})"),
            grants::grant_membership(&app, who, role).await,
        );
        assert!(!member_of(&admin, who, role).await, "{who} is in {role}");
    }
}

/// Without CREATEROLE the login neither makes roles nor changes existing ones: no new
/// superuser or login of its choosing, no password of another application, no login for a
/// group role, no ending another application's sessions.
#[tokio::test]
async fn the_app_login_cannot_make_or_change_roles_directly() {
    let db = TestDb::start().await;
    let admin = db.cluster.connect("postgres").await.unwrap();
    let app = app(&db, "postgres").await;
    for sql in [
        "CREATE ROLE attacker SUPERUSER",
        "CREATE ROLE attacker LOGIN PASSWORD 'chosen'",
        "CREATE ROLE attacker CREATEROLE",
        "ALTER ROLE rates_api PASSWORD 'stolen'",
        "ALTER ROLE rates_reader LOGIN",
        "ALTER ROLE dbgw_approvals CREATEROLE",
        "ALTER ROLE dbgw_provisioner LOGIN",
        "GRANT rates_writer TO rates_api",
    ] {
        denied(sql, app.batch_execute(sql).await);
    }
    let exists: bool = admin
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = 'attacker')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!exists, "the app's login made a role");
    // A person's role, too, changes only through the functions.
    let person = grants::person_role("mallory@example.com");
    grants::ensure_role(&app, &person).await.unwrap();
    for sql in [
        format!("ALTER ROLE {person} LOGIN PASSWORD 'chosen'"),
        format!("GRANT rates_writer TO {person}"),
        format!("ALTER ROLE {person} CREATEROLE"),
    ] {
        denied(&sql, app.batch_execute(&sql).await);
    }
    // rates-api's sessions are not the app's to end.
    let rates_api = db.cluster.login_for("rates_api").await.unwrap();
    let victim = db
        .cluster
        .server()
        .connect_as("rates", &rates_api)
        .await
        .unwrap();
    denied(
        "pg_terminate_backend(rates_api)",
        app.query_one(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'rates_api'",
            &[],
        )
        .await,
    );
    assert!(victim.query_one("SELECT 1", &[]).await.is_ok());
}

/// The provisioning interface acts on people's roles only (`p_<email>_<16 hex>`, holding
/// nothing but catalogue roles) and hands out catalogue roles only.
#[tokio::test]
async fn the_interface_refuses_roles_that_are_not_a_persons() {
    let db = TestDb::start().await;
    let admin = db.cluster.connect("postgres").await.unwrap();
    let app = app(&db, "postgres").await;
    let layout = layout(&db);
    let rates_api = db.cluster.login_for("rates_api").await.unwrap();
    let victim = db
        .cluster
        .server()
        .connect_as("rates", &rates_api)
        .await
        .unwrap();
    // A role shaped like a person's that holds more than catalogue roles (an admin's, say).
    admin
        .batch_execute(
            "CREATE ROLE p_root_0123456789abcdef NOLOGIN IN ROLE pg_read_server_files;
             CREATE ROLE p_admin_0123456789abcdef NOLOGIN CREATEROLE;
             CREATE ROLE p_owner_0123456789abcdef NOLOGIN;
             GRANT CREATE ON DATABASE postgres TO p_owner_0123456789abcdef",
        )
        .await
        .unwrap();
    for who in [
        "rates_api",
        "postgres",
        "dbgw_provisioner",
        "dbgw_approvals",
        "rates_reader",
        "p_root_0123456789abcdef",
        "p_admin_0123456789abcdef",
        "p_owner_0123456789abcdef",
        // Almost a person's role: upper case, short hash, too long, trailing text.
        "p_Alice_0123456789abcdef",
        "p_alice_0123456789abcde",
        "p_alice_0123456789abcdef_x",
    ] {
        refused(
            &format!("set_password({who})"),
            grants::set_password(&app, &db.store, &layout, who, "rates").await,
        );
        refused(
            &format!("enable_login({who})"),
            grants::enable_login(&app, who).await,
        );
        refused(
            &format!("grant_membership({who}, rates_writer)"),
            grants::grant_membership(&app, who, "rates_writer").await,
        );
        for function in [
            "ensure_role($1)",
            "set_login($1, true)",
            "grant_role($1, 'rates_reader')",
            "set_password($1, 'SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy')",
            // Taking away (NOLOGIN, a membership, sessions) needs only a person's name.
            "terminate_sessions($1)",
            "set_login($1, false)",
            "revoke_role($1, 'rates_reader')",
        ] {
            let taking_away = ["terminate", "false", "revoke"]
                .iter()
                .any(|w| function.contains(w));
            if taking_away
                && ["p_root_", "p_admin_", "p_owner_"]
                    .iter()
                    .any(|p| who.starts_with(p))
            {
                continue;
            }
            denied(
                &format!("dbgw_provision.{function} with {who}"),
                app.query_one(&format!("SELECT dbgw_provision.{function}"), &[&who])
                    .await,
            );
        }
    }
    refused(
        "terminate_sessions(rates_api)",
        grants::terminate_sessions(&app, "rates_api").await,
    );
    assert!(
        victim.query_one("SELECT 1", &[]).await.is_ok(),
        "rates-api's session was ended"
    );
    // rates-api's password is unchanged, and nothing gained a login or a role.
    assert!(db
        .cluster
        .server()
        .connect_as("rates", &rates_api)
        .await
        .is_ok());
    for role in ["rates_reader", "p_root_0123456789abcdef"] {
        let login: bool = admin
            .query_one(
                "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1",
                &[&role],
            )
            .await
            .unwrap()
            .get(0);
        assert!(!login, "{role} can log in");
    }
    assert!(!member_of(&admin, "rates_api", "rates_writer").await);
}

/// What the login is for still works, as the login: a person's role made, given a password
/// and a catalogue role, logged in, then taken back and its session ended; the rotation's
/// password change for a person (`pg_connect::set_password`, as the app's login on the
/// control plane) goes through the same interface.
#[tokio::test]
async fn the_app_login_provisions_and_ends_access_through_the_interface() {
    let db = TestDb::start().await;
    let app = app(&db, "postgres").await;
    let control = {
        let creds = db.store.db_credentials("dbgw/approvals-db").await.unwrap();
        db.cluster
            .server()
            .connect_as("dbgw", &creds)
            .await
            .unwrap()
    };
    let email = "erin@example.com";
    let user = grants::person_role(email);
    grants::check_owner(&control, &user, email).await.unwrap();
    assert!(grants::ensure_role(&app, &user).await.unwrap());
    assert!(!grants::ensure_role(&app, &user).await.unwrap());
    grants::set_password(&app, &db.store, &layout(&db), &user, "rates")
        .await
        .unwrap();
    assert!(grants::grant_membership(&app, &user, "rates_reader")
        .await
        .unwrap());
    assert!(!grants::grant_membership(&app, &user, "rates_reader")
        .await
        .unwrap());
    let grant = grants::record(
        &control,
        &NewGrant {
            email: email.into(),
            database: "rates".into(),
            role: "rates_reader".into(),
            expires_at: Utc::now() + Duration::hours(1),
            created_by: "approvals".into(),
            policy: Default::default(),
        },
        &user,
        None,
    )
    .await
    .unwrap();
    assert!(grants::enable_login(&app, &user).await.unwrap());
    assert!(!grants::enable_login(&app, &user).await.unwrap());

    let creds = db
        .store
        .db_credentials(&grants::person_secret(&user))
        .await
        .unwrap();
    let person = db
        .cluster
        .server()
        .connect_as("rates", &creds)
        .await
        .unwrap();
    let n: i64 = person
        .query_one("SELECT count(*) FROM ports", &[])
        .await
        .unwrap()
        .get(0);
    assert!(n > 0);

    // The rotation function sets a person's password as the app's login, on the control
    // plane's database; another role's it cannot.
    pg_connect::set_password(&control, &user, "rotated-password-1234567890")
        .await
        .unwrap();
    assert!(
        pg_connect::set_password(&control, "rates_api", "stolen-password-123")
            .await
            .is_err()
    );
    let rotated = secret_store::DbCredentials::new(&user, "rotated-password-1234567890");
    assert!(db
        .cluster
        .server()
        .connect_as("rates", &rotated)
        .await
        .is_ok());

    grants::mark_revoked(&control, grant.id, "dana@example.com", "done")
        .await
        .unwrap();
    let done = grants::reconcile(&control, &app, &user).await.unwrap();
    assert_eq!(done.revoked, vec!["rates_reader".to_string()]);
    assert!(done.login_removed);
    assert!(grants::backends(&app, &user).await.unwrap() >= 1);
    assert!(grants::terminate_sessions(&app, &user).await.unwrap() >= 1);
    assert!(person.query_one("SELECT 1", &[]).await.is_err());
    assert!(db
        .cluster
        .server()
        .connect_as("rates", &rotated)
        .await
        .is_err());
    assert!(grants::memberships(&app, &user).await.unwrap().is_empty());
}

/// A server set up before: the login had CREATEROLE and pg_signal_backend (and a role
/// granted with ADMIN OPTION, as PostgreSQL 16 set-ups had). Setting up again takes them
/// away and leaves the functions working.
#[tokio::test]
async fn setting_up_again_takes_an_old_logins_rights_away() {
    let db = TestDb::start().await;
    let admin = db.cluster.connect("postgres").await.unwrap();
    admin
        .batch_execute(
            "ALTER ROLE dbgw_approvals CREATEROLE;
             GRANT pg_signal_backend TO dbgw_approvals;
             GRANT rates_reader TO dbgw_approvals WITH ADMIN OPTION",
        )
        .await
        .unwrap();
    dbgw_db::schema::setup_control(&db.cluster.server())
        .await
        .unwrap();
    let row = admin
        .query_one(
            "SELECT rolcreaterole, (SELECT count(*) FROM pg_auth_members WHERE member = r.oid) \
             FROM pg_roles r WHERE rolname = 'dbgw_approvals'",
            &[],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0), "CREATEROLE left");
    assert_eq!(row.get::<_, i64>(1), 0, "memberships left");
    let app = app(&db, "postgres").await;
    denied(
        "GRANT pg_execute_server_program",
        app.batch_execute("GRANT pg_execute_server_program TO dbgw_approvals")
            .await,
    );
    let person = grants::person_role("erin@example.com");
    assert!(grants::ensure_role(&app, &person).await.unwrap());
    assert!(grants::grant_membership(&app, &person, "rates_reader")
        .await
        .unwrap());
}

/// Operators' `proxy grant add --database rates` connects its admin login to `rates`, which
/// has no `dbgw_provision` functions: the same steps run as plain SQL with the admin's rights.
#[tokio::test]
async fn an_admin_login_on_a_database_without_the_functions_still_adds_and_revokes() {
    let db = TestDb::start().await;
    let control = db.cluster.connect("dbgw").await.unwrap();
    let target = db.cluster.connect("rates").await.unwrap();
    assert!(!grants::has_interface(&target).await.unwrap());
    let grant = grants::add(
        &control,
        &target,
        &db.store,
        &layout(&db),
        PeopleLogin::Password,
        NewGrant {
            email: "olga@example.com".into(),
            database: "rates".into(),
            role: "rates_reader".into(),
            expires_at: Utc::now() + Duration::hours(1),
            created_by: "operator".into(),
            policy: Default::default(),
        },
    )
    .await
    .unwrap();
    assert!(grants::can_login(&target, &grant.db_user).await.unwrap());
    grants::revoke(&control, &target, grant.id, "operator", "done")
        .await
        .unwrap();
    assert!(!grants::can_login(&target, &grant.db_user).await.unwrap());
    assert!(grants::memberships(&target, &grant.db_user)
        .await
        .unwrap()
        .is_empty());
}

/// Empties the test cluster down to what a new RDS instance holds: no database but
/// `postgres` and the templates, no role but the bootstrap superuser and the predefined ones.
async fn empty_server(admin: &Client) {
    for database in ["rates", "dbgw"] {
        admin
            .batch_execute(&format!("DROP DATABASE {database} WITH (FORCE)"))
            .await
            .unwrap();
    }
    admin
        .batch_execute(
            "DROP SCHEMA dbgw_provision CASCADE;
             DO $$
             DECLARE r record;
             BEGIN
                 FOR r IN SELECT rolname FROM pg_roles WHERE oid >= 16384 LOOP
                     EXECUTE format('DROP OWNED BY %I CASCADE', r.rolname);
                 END LOOP;
                 FOR r IN SELECT rolname FROM pg_roles WHERE oid >= 16384 LOOP
                     EXECUTE format('DROP ROLE %I', r.rolname);
                 END LOOP;
             END
             $$",
        )
        .await
        .unwrap();
}

/// RDS: the master user is not a superuser (`LOGIN CREATEROLE CREATEDB`, a member of
/// `rds_superuser`), and it is the login that sets the server up (the db-admin task,
/// docs/operations.md). On PostgreSQL 16+ its CREATEROLE reaches only the roles it has
/// ADMIN OPTION on (those it created), and only a superuser changes some attributes. A
/// server set up by such a master from empty provisions end to end through the interface:
/// the app's login creates a person's role, grants a catalogue role, the person logs in
/// and reads, the grant is revoked, and the role has nothing and cannot log in.
/// An emptied server set up as on RDS, by a master that is no superuser (see
/// [`a_server_set_up_by_a_non_superuser_master_provisions_end_to_end`]), with RDS's
/// `rds_iam`; returns it with the app's login (also stored as `dbgw/approvals-db`).
async fn rds_like_server(
    db: &TestDb,
    superuser: &Client,
) -> (dbgw_db::schema::Server, secret_store::DbCredentials) {
    empty_server(superuser).await;
    // rds_superuser as far as the set-up needs it: signalling backends and rds_iam, and
    // handing them on (the provisioner ends people's sessions and makes IAM logins). The
    // master owns `postgres`, where the provisioning functions go. (As understood from
    // AWS's documentation, not tried on an instance.)
    superuser
        .batch_execute(
            "CREATE ROLE rds_superuser NOLOGIN;
             CREATE ROLE rds_iam NOLOGIN;
             GRANT pg_signal_backend TO rds_superuser WITH ADMIN OPTION;
             GRANT rds_iam TO rds_superuser WITH ADMIN OPTION;
             CREATE ROLE rds_master LOGIN CREATEROLE CREATEDB IN ROLE rds_superuser;
             ALTER DATABASE postgres OWNER TO rds_master",
        )
        .await
        .unwrap();
    let password = secret_store::generate_password();
    pg_connect::set_password(superuser, "rds_master", &password)
        .await
        .unwrap();
    let server = dbgw_db::schema::Server {
        admin: secret_store::DbCredentials::new("rds_master", password),
        ..db.cluster.server()
    };
    dbgw_db::schema::setup(&server, "rates").await.unwrap();
    dbgw_db::schema::setup_control(&server).await.unwrap();
    // Twice: every deploy runs it again.
    dbgw_db::schema::setup_control(&server).await.unwrap();

    // The master gives the app its password, as the db-admin task does.
    let master = server.connect("postgres").await.unwrap();
    let app_password = secret_store::generate_password();
    pg_connect::set_password(&master, APP, &app_password)
        .await
        .unwrap();
    let app_creds = secret_store::DbCredentials::new(APP, app_password);
    db.store
        .put_db_credentials("dbgw/approvals-db", &app_creds)
        .await
        .unwrap();
    (server, app_creds)
}

/// RDS IAM logins for people (issue 17), on a server set up by a non-superuser master: a
/// grant's role is a member of `rds_iam` with no password and no secret; nobody acting
/// through the app's login gives it a password back (the rotation function sets people's
/// passwords as that login) or takes `rds_iam` away; ending leaves it passwordless. On
/// PostgreSQL 16+ the provisioner needs ADMIN OPTION on rds_iam, which setup gives it.
#[tokio::test]
async fn on_rds_a_persons_role_logs_in_with_iam_and_never_gets_a_password() {
    let db = TestDb::start().await;
    let superuser = db.cluster.connect("postgres").await.unwrap();
    let (server, app_creds) = rds_like_server(&db, &superuser).await;
    let app = server.connect_as("postgres", &app_creds).await.unwrap();
    let control = server.connect_as("dbgw", &app_creds).await.unwrap();
    let has_password = async |role: &str| -> bool {
        superuser
            .query_one(
                "SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = $1",
                &[&role],
            )
            .await
            .unwrap()
            .get(0)
    };

    let grant = grants::add(
        &control,
        &app,
        &db.store,
        &layout(&db),
        PeopleLogin::RdsIam,
        erin_reads_rates(),
    )
    .await
    .unwrap();
    let role = grant.db_user.as_str();
    assert!(member_of(&superuser, role, "rds_iam").await);
    assert!(member_of(&superuser, role, "rates_reader").await);
    assert!(grants::can_login(&app, role).await.unwrap());
    assert!(!has_password(role).await);
    assert!(db
        .store
        .db_credentials(&grants::person_secret(role))
        .await
        .is_err());
    assert_eq!(
        grants::memberships(&app, role).await.unwrap(),
        ["rates_reader"]
    );

    let verifier = postgres_protocol::password::scram_sha_256(b"chosen by the attacker");
    for (what, sql) in [
        ("set_password", "SELECT dbgw_provision.set_password($1, $2)"),
        (
            "revoke_role rds_iam",
            "SELECT dbgw_provision.revoke_role($1, 'rds_iam') AND $2 <> ''",
        ),
        (
            "grant_role rds_iam",
            "SELECT dbgw_provision.grant_role($1, 'rds_iam') AND $2 <> ''",
        ),
    ] {
        denied(what, app.query_one(sql, &[&role, &verifier]).await);
    }
    denied(
        "the app's login as itself",
        app.batch_execute(&format!("ALTER ROLE {role} PASSWORD 'chosen'"))
            .await,
    );
    assert!(!has_password(role).await);

    grants::revoke(&control, &app, grant.id, "operator", "done")
        .await
        .unwrap();
    assert!(grants::memberships(&app, role).await.unwrap().is_empty());
    assert!(!grants::can_login(&app, role).await.unwrap());
    assert!(member_of(&superuser, role, "rds_iam").await);
    assert!(!has_password(role).await);
}

/// Off RDS there is no `rds_iam`: asking for an IAM login is refused, never a role that
/// merely lost its password.
#[tokio::test]
async fn an_iam_login_is_refused_on_a_server_without_rds_iam() {
    let db = TestDb::start().await;
    let control = app(&db, "dbgw").await;
    let app = app(&db, "postgres").await;
    let err = grants::add(
        &control,
        &app,
        &db.store,
        &layout(&db),
        PeopleLogin::RdsIam,
        erin_reads_rates(),
    )
    .await
    .expect_err("no rds_iam here");
    match &err {
        GrantError::Db(e) => {
            assert_eq!(e.code(), Some(&SqlState::UNDEFINED_OBJECT), "{e:?}");
            let said = e.as_db_error().map(|d| d.message()).unwrap_or_default();
            assert!(said.contains("no role rds_iam"), "{said}");
        }
        other => panic!("expected the server's refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_server_set_up_by_a_non_superuser_master_provisions_end_to_end() {
    let db = TestDb::start().await;
    let superuser = db.cluster.connect("postgres").await.unwrap();
    let (server, app_creds) = rds_like_server(&db, &superuser).await;
    let app = server.connect_as("postgres", &app_creds).await.unwrap();
    let control = server.connect_as("dbgw", &app_creds).await.unwrap();

    let grant = grants::add(
        &control,
        &app,
        &db.store,
        &layout(&db),
        PeopleLogin::Password,
        erin_reads_rates(),
    )
    .await
    .unwrap();
    let creds = db
        .store
        .db_credentials(&grants::person_secret(&grant.db_user))
        .await
        .unwrap();
    let person = server.connect_as("rates", &creds).await.unwrap();
    let n: i64 = person
        .query_one("SELECT count(*) FROM ports", &[])
        .await
        .unwrap()
        .get(0);
    assert!(n > 0);
    denied(
        "the person writes",
        person.batch_execute("DELETE FROM ports").await,
    );

    grants::revoke(&control, &app, grant.id, "operator", "done")
        .await
        .unwrap();
    assert!(
        grants::terminate_sessions(&app, &grant.db_user)
            .await
            .unwrap()
            >= 1
    );
    assert!(grants::memberships(&app, &grant.db_user)
        .await
        .unwrap()
        .is_empty());
    assert!(!grants::can_login(&app, &grant.db_user).await.unwrap());
    assert!(server.connect_as("rates", &creds).await.is_err());
    // And the app's login holds nothing on that server either.
    let row = superuser
        .query_one(
            "SELECT rolcreaterole OR rolsuper, \
             (SELECT count(*) FROM pg_auth_members WHERE member = r.oid) \
             FROM pg_roles r WHERE rolname = $1",
            &[&APP],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0));
    assert_eq!(row.get::<_, i64>(1), 0);
}
