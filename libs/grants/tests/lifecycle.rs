//! A grant from creation to revocation, against a real cluster: the person's role can log
//! in with the stored credentials while the grant is active and cannot afterwards.

// A panic is how a test reports a failure.
#![allow(clippy::unwrap_used)]

use chrono::{Duration, Utc};
use grants::{Check, GrantError, NewGrant, SecretLayout};
use testkit::TestDb;

/// grants::add with the test's secret layout.
async fn add(
    db: &TestDb,
    control: &tokio_postgres::Client,
    target: &tokio_postgres::Client,
    new: NewGrant,
) -> Result<grants::Grant, GrantError> {
    grants::add(
        control,
        target,
        &db.store,
        &layout(db),
        grants::PeopleLogin::Password,
        new,
    )
    .await
}

/// A grant as made before roles were per grant: the person's one role for all their grants
/// (rows like these stay valid, and ending them is reconciled per role).
async fn add_shared(
    db: &TestDb,
    control: &tokio_postgres::Client,
    target: &tokio_postgres::Client,
    new: NewGrant,
) -> grants::Grant {
    let user = grants::person_role(&new.email);
    grants::ensure_role(target, &user).await.unwrap();
    let others = grants::active_roles(control, &user).await.unwrap();
    if others.is_empty() {
        grants::set_password(target, &db.store, &layout(db), &user, &new.database)
            .await
            .unwrap();
    }
    grants::grant_membership(target, &user, &new.role)
        .await
        .unwrap();
    let grant = grants::record(control, &new, &user, None).await.unwrap();
    grants::enable_login(target, &user).await.unwrap();
    grant
}

/// People's secrets name the test cluster and a master secret, as the approvals app's do.
fn layout(db: &TestDb) -> SecretLayout {
    SecretLayout {
        host: db.cluster.host().to_string(),
        port: db.cluster.port(),
        master: "dbgw/postgres-admin".into(),
    }
}

#[tokio::test]
async fn add_check_revoke() {
    let db = TestDb::start().await;
    let (cluster, secrets) = (&db.cluster, &db.store);
    let control = cluster.connect("dbgw").await.unwrap();
    let target = cluster.connect("postgres").await.unwrap();

    assert_eq!(
        grants::check(&control, "alice@example.com", "rates")
            .await
            .unwrap(),
        Check::None
    );
    let refused = add(
        &db,
        &control,
        &target,
        NewGrant {
            email: "alice@example.com".into(),
            database: "rates".into(),
            role: "rates_api".into(),
            expires_at: Utc::now() + Duration::hours(1),
            created_by: "test".into(),
            policy: Default::default(),
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(refused, GrantError::BadRole(..)),
        "login roles are not grantable: {refused}"
    );

    let grant = add(
        &db,
        &control,
        &target,
        NewGrant {
            email: "Alice@Example.com".into(),
            database: "rates".into(),
            role: "rates_reader".into(),
            expires_at: Utc::now() + Duration::hours(1),
            created_by: "test".into(),
            policy: Default::default(),
        },
    )
    .await
    .unwrap();
    assert_eq!(grant.email, "alice@example.com");
    // A login role of the grant's own, in the shape of a person's role.
    assert!(
        grant.db_user.starts_with("p_alice_example_com_o"),
        "{}",
        grant.db_user
    );
    assert_eq!(
        grants::check(&control, "ALICE@example.com", "rates")
            .await
            .unwrap(),
        Check::Active(grant.clone())
    );
    assert_eq!(
        grants::check(&control, "alice@example.com", "postgres")
            .await
            .unwrap(),
        Check::None
    );

    // The stored credentials log in as the person's role, which reads but cannot write.
    let creds = secrets
        .db_credentials(&grants::person_secret(&grant.db_user))
        .await
        .unwrap();
    // In the layout of AWS's RDS rotation functions: a single user rotated by the master.
    assert_eq!(
        (
            creds.host.as_deref(),
            creds.port,
            creds.dbname.as_deref(),
            creds.masterarn.as_deref(),
            creds.rotation.as_deref()
        ),
        (
            Some(cluster.host()),
            Some(cluster.port()),
            Some("rates"),
            Some("dbgw/postgres-admin"),
            Some("single-user")
        )
    );
    let person = cluster.server().connect_as("rates", &creds).await.unwrap();
    let n: i64 = person
        .query_one("SELECT count(*) FROM ports", &[])
        .await
        .unwrap()
        .get(0);
    assert!(n > 0);
    assert!(person.batch_execute("DELETE FROM ports").await.is_err());

    let revoked = grants::revoke(
        &control,
        &target,
        grant.id,
        "dana@example.com",
        "left the team",
    )
    .await
    .unwrap();
    assert!(revoked.revoked_at.is_some());
    match grants::check(&control, "alice@example.com", "rates")
        .await
        .unwrap()
    {
        Check::Inactive(why) => assert!(
            why.contains("revoked by dana@example.com") && why.contains("left the team"),
            "{why}"
        ),
        other => panic!("{other:?}"),
    }
    let gone = grants::no_longer_active(&control, &[grant.id])
        .await
        .unwrap();
    assert_eq!(gone.len(), 1);
    assert!(
        cluster.server().connect_as("rates", &creds).await.is_err(),
        "the role can no longer log in"
    );
    assert!(matches!(
        grants::revoke(&control, &target, grant.id, "x", "y").await,
        Err(GrantError::AlreadyRevoked(_))
    ));
}

#[tokio::test]
async fn a_role_is_never_handed_to_another_person() {
    let db = TestDb::start().await;
    let cluster = &db.cluster;
    let control = cluster.connect("dbgw").await.unwrap();
    let target = cluster.connect("postgres").await.unwrap();
    let new = |email: &str| NewGrant {
        email: email.into(),
        database: "rates".into(),
        role: "rates_reader".into(),
        expires_at: Utc::now() + Duration::hours(1),
        created_by: "test".into(),
        policy: Default::default(),
    };
    // A row claiming the role of kate's request 5 for someone else, as a name collision
    // would leave it.
    let kate_role = grants::request_role("kate@example.com", 5);
    control
        .execute(
            "INSERT INTO grants (email, database, role, db_user, expires_at, created_by) \
             VALUES ('mallory@example.com', 'rates', 'rates_reader', $1, now() + interval '1 hour', 'test')",
            &[&kate_role],
        )
        .await
        .unwrap();
    let refused = grants::check_owner(&control, &kate_role, "kate@example.com")
        .await
        .unwrap_err();
    assert!(matches!(refused, GrantError::RoleTaken(_)), "{refused}");

    // Unicode case folding would make the Kelvin sign a `k`: not the same person.
    let kelvin = "\u{212A}ate@example.com";
    assert_ne!(grants::request_role(kelvin, 5), kate_role);
    assert_ne!(
        grants::person_role(kelvin),
        grants::person_role("kate@example.com")
    );
    let other = add(&db, &control, &target, new(kelvin)).await.unwrap();
    assert_ne!(other.db_user, kate_role);
    assert_eq!(
        grants::check(&control, "kate@example.com", "rates")
            .await
            .unwrap(),
        Check::None,
        "kate has no grant of her own"
    );
}

/// Grants made before roles were per grant (one role per person): the known bug this
/// library had, an ended grant's group membership stayed while the person had another
/// active grant (for another role). Reconciling takes exactly the ended grant's role away,
/// keeps the other grant working, and removes LOGIN only at the end.
#[tokio::test]
async fn an_ended_grant_loses_its_role_while_another_grant_stays() {
    let db = TestDb::start().await;
    let (cluster, secrets) = (&db.cluster, &db.store);
    let control = cluster.connect("dbgw").await.unwrap();
    let target = cluster.connect("postgres").await.unwrap();
    let new = |role: &str| NewGrant {
        email: "erin@example.com".into(),
        database: "rates".into(),
        role: role.into(),
        expires_at: Utc::now() + Duration::hours(1),
        created_by: "test".into(),
        policy: Default::default(),
    };
    let writer = add_shared(&db, &control, &target, new("rates_writer")).await;
    let reader = add_shared(&db, &control, &target, new("rates_reader")).await;
    let user = reader.db_user.clone();
    assert_eq!(
        grants::memberships(&target, &user).await.unwrap(),
        ["rates_reader", "rates_writer"]
    );
    let creds = secrets
        .db_credentials(&grants::person_secret(&user))
        .await
        .unwrap();
    let person = cluster.server().connect_as("rates", &creds).await.unwrap();
    person
        .batch_execute("BEGIN; DELETE FROM ports WHERE false; ROLLBACK")
        .await
        .expect("the writer grant lets erin write");
    // A session that switched to the writer's role: PostgreSQL keeps an earlier SET ROLE
    // after the membership is revoked, so only ending the session takes it away.
    person.batch_execute("SET ROLE rates_writer").await.unwrap();

    // The writer grant expires (nothing else changes).
    expire(&control, writer.id).await;
    let done = grants::reconcile(&control, &target, &user).await.unwrap();
    assert_eq!(done.revoked, ["rates_writer"]);
    assert!(!done.login_removed);
    assert_eq!(done.active_left, 1);
    assert_eq!(done.terminated, 1, "the session opened before is ended");
    assert!(
        person
            .batch_execute("BEGIN; DELETE FROM ports WHERE false; ROLLBACK")
            .await
            .is_err(),
        "the writer's privileges outlived the writer grant"
    );
    assert_eq!(
        grants::memberships(&target, &user).await.unwrap(),
        ["rates_reader"]
    );
    // A new session has only what the reader grant gives; reconciling again changes nothing.
    let person = cluster.server().connect_as("rates", &creds).await.unwrap();
    person
        .query_one("SELECT 1 FROM ports LIMIT 1", &[])
        .await
        .unwrap();
    let refused = person
        .batch_execute("DELETE FROM ports WHERE false")
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("permission denied")
            || format!("{:?}", refused.as_db_error()).contains("permission denied"),
        "{refused:?}"
    );
    assert_eq!(
        grants::reconcile(&control, &target, &user).await.unwrap(),
        grants::Reconciled {
            active_left: 1,
            ..Default::default()
        }
    );

    // The last grant revoked: no membership, no login.
    grants::revoke(&control, &target, reader.id, "dana@example.com", "done")
        .await
        .unwrap();
    assert!(grants::memberships(&target, &user)
        .await
        .unwrap()
        .is_empty());
    assert!(!grants::can_login(&target, &user).await.unwrap());
    assert!(cluster.server().connect_as("rates", &creds).await.is_err());

    // The case as it happened before: the writer grant expired and nobody reconciled; then
    // the other grant is revoked. Revoking must take away the expired grant's role too.
    let gina = |role: &str| NewGrant {
        email: "gina@example.com".into(),
        ..new(role)
    };
    let writer = add_shared(&db, &control, &target, gina("rates_writer")).await;
    let reader = add_shared(&db, &control, &target, gina("rates_reader")).await;
    expire(&control, writer.id).await;
    grants::revoke(&control, &target, reader.id, "dana@example.com", "done")
        .await
        .unwrap();
    assert!(
        grants::memberships(&target, &reader.db_user)
            .await
            .unwrap()
            .is_empty(),
        "the expired writer grant's role stayed"
    );
}

/// Each grant has a login role of its own, a member of its group role only: a session of
/// the reader grant cannot switch to the writer grant's role by any SQL (here built at run
/// time, which the proxy cannot see), and ending the writer grant touches nothing of the
/// reader's: its role, its password and its sessions stay.
#[tokio::test]
async fn grants_of_one_person_share_nothing() {
    let db = TestDb::start().await;
    let (cluster, secrets) = (&db.cluster, &db.store);
    let control = cluster.connect("dbgw").await.unwrap();
    let target = cluster.connect("postgres").await.unwrap();
    let new = |role: &str| NewGrant {
        email: "ivy@example.com".into(),
        database: "rates".into(),
        role: role.into(),
        expires_at: Utc::now() + Duration::hours(1),
        created_by: "test".into(),
        policy: Default::default(),
    };
    let writer = add(&db, &control, &target, new("rates_writer"))
        .await
        .unwrap();
    let reader = add(&db, &control, &target, new("rates_reader"))
        .await
        .unwrap();
    assert_ne!(writer.db_user, reader.db_user);
    assert_eq!(
        grants::memberships(&target, &reader.db_user).await.unwrap(),
        ["rates_reader"]
    );
    assert_eq!(
        grants::memberships(&target, &writer.db_user).await.unwrap(),
        ["rates_writer"]
    );
    let creds = secrets
        .db_credentials(&grants::person_secret(&reader.db_user))
        .await
        .unwrap();
    let session = cluster.server().connect_as("rates", &creds).await.unwrap();
    let switch = session
        .batch_execute("DO $$ BEGIN EXECUTE 'SET ' || 'ROLE ' || 'rates_writer'; END $$")
        .await
        .unwrap_err();
    assert_eq!(
        switch.as_db_error().map(|e| e.code().code()),
        Some("42501"),
        "{switch:?}"
    );
    let write = session
        .batch_execute("DELETE FROM ports WHERE false")
        .await
        .unwrap_err();
    assert_eq!(write.as_db_error().map(|e| e.code().code()), Some("42501"));

    grants::revoke(&control, &target, writer.id, "dana@example.com", "done")
        .await
        .unwrap();
    assert!(!grants::can_login(&target, &writer.db_user).await.unwrap());
    assert!(grants::can_login(&target, &reader.db_user).await.unwrap());
    session
        .query_one("SELECT 1 FROM ports LIMIT 1", &[])
        .await
        .expect("the reader's session goes on");
}

/// Each provisioning step can be repeated without changing the outcome, and the grant row
/// of a request is written once however often it is recorded.
#[tokio::test]
async fn steps_are_idempotent_and_a_request_has_one_grant() {
    let db = TestDb::start().await;
    let (cluster, secrets) = (&db.cluster, &db.store);
    let control = cluster.connect("dbgw").await.unwrap();
    let target = cluster.connect("postgres").await.unwrap();
    let user = grants::person_role("finn@example.com");
    assert!(grants::ensure_role(&target, &user).await.unwrap());
    assert!(!grants::ensure_role(&target, &user).await.unwrap());
    assert!(!grants::can_login(&target, &user).await.unwrap());
    grants::set_password(&target, secrets, &layout(&db), &user, "rates")
        .await
        .unwrap();
    assert!(grants::grant_membership(&target, &user, "rates_reader")
        .await
        .unwrap());
    assert!(!grants::grant_membership(&target, &user, "rates_reader")
        .await
        .unwrap());
    assert!(matches!(
        grants::grant_membership(&target, &user, "rates_api").await,
        Err(GrantError::BadRole(..))
    ));
    let new = NewGrant {
        email: "finn@example.com".into(),
        database: "rates".into(),
        role: "rates_reader".into(),
        expires_at: Utc::now() + Duration::hours(1),
        created_by: "approvals".into(),
        policy: Default::default(),
    };
    let approval = grants::Approval {
        request_id: 42,
        approved_by: vec!["dana@example.com".into()],
        issuer: "http://idp.example/".into(),
        subject: "sub-finn".into(),
    };
    let role = grants::request_role("finn@example.com", 42);
    let first = grants::record(&control, &new, &role, Some(&approval))
        .await
        .unwrap();
    let again = grants::record(&control, &new, &role, Some(&approval))
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(first.request_id, Some(42));
    assert_eq!(first.approved_by, ["dana@example.com"]);
    // The grant is the requester's: the same email under another subject does not count,
    // and the issuer's final slash does not matter.
    let theirs = grants::check_person(
        &control,
        Some(("http://idp.example", "sub-finn")),
        "finn@example.com",
        "rates",
    )
    .await
    .unwrap();
    assert!(matches!(theirs, Check::Active(g) if g.id == first.id));
    let someone_else = grants::check_person(
        &control,
        Some(("http://idp.example/", "sub-impostor")),
        "finn@example.com",
        "rates",
    )
    .await
    .unwrap();
    assert!(
        matches!(&someone_else, Check::Inactive(why) if why.contains("another identity")),
        "{someone_else:?}"
    );
    assert!(grants::enable_login(&target, &user).await.unwrap());
    assert!(!grants::enable_login(&target, &user).await.unwrap());
    let creds = secrets
        .db_credentials(&grants::person_secret(&user))
        .await
        .unwrap();
    let person = cluster.server().connect_as("rates", &creds).await.unwrap();
    let n: i64 = grants::terminate_sessions(&target, &user).await.unwrap();
    assert_eq!(n, 1);
    assert!(person.query_one("SELECT 1", &[]).await.is_err());
}

/// Makes a grant expired a second ago.
async fn expire(control: &tokio_postgres::Client, id: i64) {
    control
        .execute(
            "UPDATE grants SET valid_from = now() - interval '2 hours', \
             expires_at = now() - interval '1 second' WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
}

fn new_grant(email: &str, role: &str) -> NewGrant {
    NewGrant {
        email: email.into(),
        database: "rates".into(),
        role: role.into(),
        expires_at: Utc::now() + Duration::hours(1),
        created_by: "operator".into(),
        policy: Default::default(),
    }
}

/// Issue 17: ending a grant fails closed. A membership the provisioner cannot take away (an
/// admin made the person's role a member of a superuser role, which only a superuser may
/// revoke; on 16+ also any membership another role granted) used to stop `reconcile` at the
/// error, before it took the login away: the person went on logging in with the grant's
/// password until some later pass. Now the login goes first, the sessions end, the other
/// memberships go, and the error names what is left.
#[tokio::test]
async fn a_revocation_that_fails_still_takes_the_login_away() {
    let db = TestDb::start().await;
    let control = db.cluster.connect("dbgw").await.unwrap();
    let target = db.cluster.connect("postgres").await.unwrap();
    let grant = add(
        &db,
        &control,
        &target,
        new_grant("mallory@example.com", "rates_reader"),
    )
    .await
    .unwrap();
    let user = grant.db_user.clone();
    target
        .batch_execute(&format!(
            "CREATE ROLE boss SUPERUSER NOLOGIN; GRANT boss TO {user}"
        ))
        .await
        .unwrap();
    // What the person holds: the grant's password, and a session open with it.
    let creds = db
        .store
        .db_credentials(&grants::person_secret(&user))
        .await
        .unwrap();
    let session = db
        .cluster
        .server()
        .connect_as("rates", &creds)
        .await
        .unwrap();

    let failed = grants::revoke(&control, &target, grant.id, "operator", "done").await;
    assert!(failed.is_err(), "{failed:?}");
    assert!(
        !grants::can_login(&target, &user).await.unwrap(),
        "the role still logs in after a failed revocation"
    );
    testkit::eventually(
        "the person's open session is terminated",
        std::time::Duration::from_secs(10),
        async || session.query_one("SELECT 1", &[]).await.is_err(),
    )
    .await;
    assert!(
        db.cluster
            .server()
            .connect_as("rates", &creds)
            .await
            .is_err(),
        "the person logs in with the ended grant's password"
    );
    assert_eq!(
        grants::memberships(&target, &user).await.unwrap(),
        vec!["boss".to_string()],
        "the memberships that could be revoked are left"
    );
    match &failed {
        Err(GrantError::NotRevoked { db_user, role, .. }) if db_user == &user && role == "boss" => {
        }
        other => panic!("expected the error to name boss, got {other:?}"),
    }
    // Another pass fails the same way and gives nothing back.
    assert!(grants::reconcile(&control, &target, &user).await.is_err());
    assert!(!grants::can_login(&target, &user).await.unwrap());
}

/// Issue 17: a person the identity provider deprovisioned (SCIM) gets no grant by any path:
/// not from an operator's `proxy grant add` (which used to check nothing), nor from a
/// request recorded after the deactivation. Nothing is made on the server either.
#[tokio::test]
async fn no_grant_for_a_person_the_identity_provider_deprovisioned() {
    let db = TestDb::start().await;
    let control = db.cluster.connect("dbgw").await.unwrap();
    let target = db.cluster.connect("postgres").await.unwrap();
    control
        .batch_execute(
            "INSERT INTO scim_users (user_name, active, deactivated_at) \
             VALUES ('mallory@example.com', false, now()); \
             INSERT INTO scim_users (user_name, active) VALUES ('bob@example.com', true)",
        )
        .await
        .unwrap();
    let roles = async || -> i64 {
        target
            .query_one(
                "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'p\\_mallory%'",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    };
    let refused = add(
        &db,
        &control,
        &target,
        new_grant(" Mallory@Example.com", "rates_writer"),
    )
    .await;
    assert!(
        matches!(refused, Err(GrantError::Deprovisioned(ref e)) if e == "mallory@example.com"),
        "{refused:?}"
    );
    assert_eq!(
        roles().await,
        0,
        "a role was made for a deprovisioned person"
    );
    // The one place every path writes a grant: with or without an approval.
    let new = new_grant("mallory@example.com", "rates_writer");
    let approval = grants::Approval {
        request_id: 7,
        approved_by: vec!["dana@example.com".into()],
        issuer: "https://idp.example".into(),
        subject: "mallory".into(),
    };
    for approval in [None, Some(&approval)] {
        let user = grants::request_role(&new.email, 7);
        let recorded = grants::record(&control, &new, &user, approval).await;
        assert!(
            matches!(recorded, Err(GrantError::Deprovisioned(_))),
            "{recorded:?}"
        );
    }
    let n: i64 = control
        .query_one("SELECT count(*) FROM grants", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "a grant was recorded for a deprovisioned person");
    // Active at the provider, or never pushed by it: granted as before.
    for email in ["bob@example.com", "carol@example.com"] {
        add(&db, &control, &target, new_grant(email, "rates_reader"))
            .await
            .unwrap();
    }
    // Reactivated: granted again.
    control
        .batch_execute(
            "UPDATE scim_users SET active = true WHERE user_name = 'mallory@example.com'",
        )
        .await
        .unwrap();
    add(
        &db,
        &control,
        &target,
        new_grant("mallory@example.com", "rates_reader"),
    )
    .await
    .unwrap();
}
