//! The rotation function against moto server (Secrets Manager) and a real PostgreSQL: each
//! step's contract (idempotent, resumable after a crash between any two steps, wrong and
//! stale tokens refused, rotation off refused), both strategies, the secret store's cache
//! across a stage change, and the `bootstrap` binary itself (both TLS users in one process).

// A panic is how a test reports a failure.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use dbgw_db::Cluster;
use rotation::steps::{CURRENT, PENDING, PREVIOUS};
use rotation::{local, Error, Rotator, Settings, Step};
use secrecy::ExposeSecret;
use secret_store::{DbCredentials, Stage};
use serde_json::{json, Value};
use testkit::Moto;

const MASTER: &str = "dbgw/postgres-admin";
const APP: &str = "dbgw/rates-api";

struct Env {
    cluster: Cluster,
    moto: Moto,
    rotator: Rotator,
}

async fn env() -> Env {
    let cluster = tokio::task::spawn_blocking(Cluster::start)
        .await
        .unwrap()
        .expect("a throwaway cluster");
    let moto = Moto::start().await;
    let settings = Settings {
        database: rotation::settings::DatabaseSettings {
            ca_file: cluster.ca_cert(),
            default_host: "127.0.0.1".into(),
            // The function's client certificate: the cluster admits people's roles (whose
            // testSecret logs in as the person) only with it.
            client_cert_file: Some(cluster.client_cert().cert_file),
            client_key_file: Some(cluster.client_cert().key_file),
        },
        secrets: moto.settings(0),
        log: Default::default(),
    };
    // The default policy: the local stack's names, which these tests use.
    let rotator = Rotator::new(moto.client(), settings);
    Env {
        cluster,
        moto,
        rotator,
    }
}

impl Env {
    fn layout(&self, creds: &DbCredentials, dbname: &str, master: Option<&str>) -> Value {
        testkit::moto::layout(
            self.cluster.host(),
            self.cluster.port(),
            creds,
            dbname,
            master,
        )
    }

    /// The master secret and the rates API's (alternating), rotation on. Returns the
    /// original login.
    async fn alternating(&self) -> DbCredentials {
        let admin = self.cluster.admin().clone();
        self.moto
            .client()
            .create_secret()
            .name(MASTER)
            .secret_string(self.layout(&admin, "postgres", None).to_string())
            .send()
            .await
            .unwrap();
        let app = self.cluster.login_for("rates_api").await.unwrap();
        self.moto
            .rotated_secret(APP, &self.layout(&app, "rates", Some(MASTER)))
            .await;
        app
    }

    async fn value(&self, id: &str, stage: &str) -> Value {
        Value::Object(self.rotator.value(id, None, stage).await.unwrap().unwrap())
    }

    async fn creds(&self, id: &str, stage: &str) -> DbCredentials {
        serde_json::from_value(self.value(id, stage).await).unwrap()
    }

    /// The approvals app's login as people's master (`APPROVALS`), as deployed:
    /// CREATEROLE, and no CONNECT on the database a person's secret names.
    async fn approvals_master(&self) {
        let approvals = self.cluster.login_for("dbgw_approvals").await.unwrap();
        self.moto
            .client()
            .create_secret()
            .name(APPROVALS)
            .secret_string(self.layout(&approvals, "dbgw", None).to_string())
            .send()
            .await
            .unwrap();
    }

    async fn logs_in(&self, creds: &DbCredentials) -> bool {
        self.cluster
            .server()
            .connect_as("rates", creds)
            .await
            .is_ok()
    }

    async fn stages(&self, id: &str) -> std::collections::HashMap<String, Vec<String>> {
        self.rotator.versions(id).await.unwrap()
    }
}

fn refused(r: Result<(), Error>) -> String {
    match r {
        Err(Error::Refused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn alternating_users_step_contract() {
    let e = env().await;
    let original = e.alternating().await;
    let r = &e.rotator;

    // Tokens Secrets Manager did not stage are refused, at every step.
    let wrong = local::new_token();
    for step in Step::ALL {
        let why = refused(r.handle(APP, &wrong, step).await);
        assert!(why.contains("no version"), "{why}");
    }

    // Secrets Manager stages the new version (here: as the local command does), then calls
    // createSecret; twice: one pending version, the other user, the same password.
    let token = local::new_token();
    r.run(APP, &token, Step::CreateSecret, true).await.unwrap();
    let pending = e
        .rotator
        .value(APP, Some(&token), PENDING)
        .await
        .unwrap()
        .unwrap();
    r.handle(APP, &token, Step::CreateSecret).await.unwrap();
    let again = e
        .rotator
        .value(APP, Some(&token), PENDING)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pending, again, "createSecret is not idempotent");
    assert_eq!(pending["username"], "rates_api_clone");
    assert_eq!(pending["masterarn"], MASTER);
    assert_ne!(
        pending["password"],
        json!(original.password.expose_secret())
    );
    let pending: DbCredentials = serde_json::from_value(Value::Object(pending)).unwrap();
    assert!(
        !e.logs_in(&pending).await,
        "the clone logs in before setSecret"
    );

    // testSecret before setSecret fails (and changes nothing); setSecret twice is fine.
    assert!(r.handle(APP, &token, Step::TestSecret).await.is_err());
    r.handle(APP, &token, Step::SetSecret).await.unwrap();
    r.handle(APP, &token, Step::SetSecret).await.unwrap();
    assert!(e.logs_in(&pending).await);
    assert!(
        e.logs_in(&original).await,
        "the user in use lost its password"
    );
    r.handle(APP, &token, Step::TestSecret).await.unwrap();

    // The clone is made like the original: same memberships, same data access.
    let clone = e
        .cluster
        .server()
        .connect_as("rates", &pending)
        .await
        .unwrap();
    let n: i64 = clone
        .query_one("SELECT count(*) FROM prices", &[])
        .await
        .unwrap()
        .get(0);
    assert!(n > 0);
    let admin = e.cluster.connect("rates").await.unwrap();
    let member: bool = admin
        .query_one(
            "SELECT pg_has_role('rates_api_clone', 'rates_reader', 'MEMBER')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(member);

    // A crash here: the local command finds the pending version and resumes it.
    assert_eq!(e.value(APP, CURRENT).await["username"], "rates_api");
    let resumed = local::rotate(r, APP).await.unwrap();
    assert_eq!(
        resumed, token,
        "a second rotation started instead of resuming"
    );
    let stages = e.stages(APP).await;
    assert_eq!(stages[&token], vec![CURRENT.to_string()]);
    assert_eq!(e.value(APP, CURRENT).await["username"], "rates_api_clone");
    let previous = e.creds(APP, PREVIOUS).await;
    assert_eq!(previous.username, "rates_api");
    assert!(e.logs_in(&previous).await, "AWSPREVIOUS must keep working");

    // finishSecret again, and any step with the now-current token: nothing to do.
    for step in Step::ALL {
        r.handle(APP, &token, step).await.unwrap();
    }
    assert_eq!(e.value(APP, CURRENT).await["username"], "rates_api_clone");
    // A stale token (a version no longer pending) is refused.
    let old = stages
        .iter()
        .find(|(_, s)| s.iter().any(|s| s == PREVIOUS))
        .map(|(v, _)| v.clone())
        .unwrap();
    let why = refused(r.handle(APP, &old, Step::SetSecret).await);
    assert!(why.contains("not pending"), "{why}");

    // Second rotation: back to rates_api with a new password; the original password is
    // retired, the clone's still works (AWSPREVIOUS).
    local::rotate(r, APP).await.unwrap();
    let current = e.creds(APP, CURRENT).await;
    assert_eq!(current.username, "rates_api");
    assert!(e.logs_in(&current).await);
    assert!(
        !e.logs_in(&original).await,
        "a retired password still logs in"
    );
    assert!(e.logs_in(&pending).await);
    // Third: the clone's first password is retired too.
    local::rotate(r, APP).await.unwrap();
    assert!(
        !e.logs_in(&pending).await,
        "a retired password still logs in"
    );
    assert!(e.logs_in(&e.creds(APP, CURRENT).await).await);
    assert!(e.logs_in(&e.creds(APP, PREVIOUS).await).await);
}

#[tokio::test]
async fn a_crash_between_any_two_steps_is_resumed() {
    let e = env().await;
    e.alternating().await;
    let r = &e.rotator;
    // Stop after 0, 1, 2, 3 steps, then retry the whole rotation as Secrets Manager does.
    for done in 0..=3 {
        let token = local::new_token();
        let before = e.value(APP, CURRENT).await;
        for step in &Step::ALL[..done] {
            r.run(APP, &token, *step, true).await.unwrap();
        }
        // The user in use keeps working whatever the state.
        assert!(
            e.logs_in(&serde_json::from_value(before.clone()).unwrap())
                .await
        );
        assert_eq!(
            e.value(APP, CURRENT).await,
            before,
            "changed before finishSecret"
        );
        for step in Step::ALL {
            r.run(APP, &token, step, true).await.unwrap();
        }
        let after = e.value(APP, CURRENT).await;
        assert_ne!(after["username"], before["username"], "after {done} steps");
        assert!(e.logs_in(&serde_json::from_value(after).unwrap()).await);
        let mut stages = e.stages(APP).await[&token].clone();
        stages.sort();
        assert_eq!(stages, [CURRENT, PENDING]);
        local::clear_pending(r, APP, &token).await.unwrap();
    }
}

#[tokio::test]
async fn single_user_rotation_and_refusals() {
    let e = env().await;
    let admin = e.cluster.connect("postgres").await.unwrap();
    admin
        .batch_execute("CREATE ROLE dbgw_proxy_control LOGIN")
        .await
        .unwrap();
    let original = e.cluster.login_for("dbgw_proxy_control").await.unwrap();
    let id = "dbgw/proxy-control";
    e.moto
        .rotated_secret(id, &e.layout(&original, "postgres", None))
        .await;
    let session = e
        .cluster
        .server()
        .connect_as("postgres", &original)
        .await
        .unwrap();

    local::rotate(&e.rotator, id).await.unwrap();
    let current = e.creds(id, CURRENT).await;
    assert_eq!(current.username, "dbgw_proxy_control");
    assert!(e
        .cluster
        .server()
        .connect_as("postgres", &current)
        .await
        .is_ok());
    assert!(
        e.cluster
            .server()
            .connect_as("postgres", &original)
            .await
            .is_err(),
        "the old password still logs in"
    );
    // A session open across the rotation keeps working.
    session.simple_query("SELECT 1").await.unwrap();

    // Rotation off: refused, by the handler and by the command, and nothing changes.
    e.moto
        .client()
        .create_secret()
        .name("dbgw/not-rotated")
        .secret_string(e.layout(&current, "postgres", None).to_string())
        .send()
        .await
        .unwrap();
    let why = refused(
        e.rotator
            .handle("dbgw/not-rotated", &local::new_token(), Step::CreateSecret)
            .await,
    );
    assert!(why.contains("not enabled"), "{why}");
    assert!(matches!(
        local::rotate(&e.rotator, "dbgw/not-rotated").await,
        Err(Error::Refused(_))
    ));
    assert!(e
        .cluster
        .server()
        .connect_as("postgres", &current)
        .await
        .is_ok());
}

/// A person's secret as the approvals app writes it (grants::set_password, then rotation
/// turned on through the store): single user, its password set by the master (the role is
/// not asked to change its own).
#[tokio::test]
async fn a_persons_secret_rotates_as_written_by_the_approvals_app() {
    let e = env().await;
    // The master is the approvals app's login, as deployed: CREATEROLE, and no CONNECT on
    // the database the person's secret names.
    e.approvals_master().await;
    let target = e.cluster.connect("postgres").await.unwrap();
    let user = grants::person_role("erin@example.com");
    grants::ensure_role(&target, &user).await.unwrap();
    let layout = grants::SecretLayout {
        host: e.cluster.host().into(),
        port: e.cluster.port(),
        master: APPROVALS.into(),
    };
    let store = e.moto.store(0);
    grants::set_password(&target, &store, &layout, &user, "rates")
        .await
        .unwrap();
    grants::grant_membership(&target, &user, "rates_reader")
        .await
        .unwrap();
    grants::enable_login(&target, &user).await.unwrap();
    let id = grants::person_secret(&user);
    // Rotation off until the app turns it on; then on, and turning it on again is a no-op.
    assert!(matches!(
        local::rotate(&e.rotator, &id).await,
        Err(Error::Refused(_))
    ));
    let calls = |s: &secret_store::SecretStore| match s {
        secret_store::SecretStore::Aws(a) => a.api_calls(),
        secret_store::SecretStore::File(_) => 0,
    };
    store
        .enable_rotation(&id, testkit::moto::FUNCTION_ARN, 30)
        .await
        .unwrap();
    let before = calls(&store);
    store
        .enable_rotation(&id, testkit::moto::FUNCTION_ARN, 30)
        .await
        .unwrap();
    assert_eq!(calls(&store), before + 1, "only a DescribeSecret");

    let original = e.creds(&id, CURRENT).await;
    assert!(e.logs_in(&original).await);
    local::rotate(&e.rotator, &id).await.unwrap();
    let current = e.creds(&id, CURRENT).await;
    assert_eq!(current.username, user, "a single user keeps its name");
    assert_eq!(current.masterarn.as_deref(), Some(APPROVALS));
    assert_eq!(current.rotation.as_deref(), Some("single-user"));
    assert_ne!(
        current.password.expose_secret(),
        original.password.expose_secret()
    );
    assert!(e.logs_in(&current).await, "the new password logs in");
    assert!(
        !e.logs_in(&original).await,
        "the old password still logs in"
    );
}

/// The confused deputy with RDS IAM logins (issue 17): whoever may write `dbgw/person/*`
/// forges a secret for a person's IAM role (a member of rds_iam, no password) naming the
/// approvals login as its master, and rotates it to get a password that would log in
/// around the proxy. The function first proves the secret's credentials, which cannot log
/// in (the role has none); and the master could not set one anyway (set_password refuses
/// rds_iam's members). The role is left as it was: no password.
#[tokio::test]
async fn a_forged_secret_cannot_give_an_iam_login_a_password() {
    let e = env().await;
    e.approvals_master().await;
    let target = e.cluster.connect("postgres").await.unwrap();
    // RDS's rds_iam, and setup again (on 16+ it gives the provisioner ADMIN OPTION on it).
    target
        .batch_execute("CREATE ROLE rds_iam NOLOGIN")
        .await
        .unwrap();
    dbgw_db::schema::setup_control(&e.cluster.server())
        .await
        .unwrap();
    let user = grants::person_role("erin@example.com");
    grants::ensure_role(&target, &user).await.unwrap();
    grants::use_iam(&target, &user).await.unwrap();
    grants::grant_membership(&target, &user, "rates_reader")
        .await
        .unwrap();
    grants::enable_login(&target, &user).await.unwrap();
    let has_password = async || -> bool {
        target
            .query_one(
                "SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = $1",
                &[&user],
            )
            .await
            .unwrap()
            .get(0)
    };
    assert!(!has_password().await);

    let id = grants::person_secret(&user);
    let forged = DbCredentials::new(&user, "guessed".to_string());
    e.moto
        .client()
        .create_secret()
        .name(&id)
        .secret_string(e.layout(&forged, "rates", Some(APPROVALS)).to_string())
        .send()
        .await
        .unwrap();
    e.moto.enable_rotation(&id).await;
    let err = local::rotate(&e.rotator, &id)
        .await
        .expect_err("a forged secret of an IAM login rotated");
    assert!(matches!(err, Error::Refused(_)), "{err:?}");
    assert!(!has_password().await, "the IAM login got a password");
    assert!(e.creds(&id, CURRENT).await.password.expose_secret() == "guessed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_cache_follows_a_stage_change() {
    let e = env().await;
    e.alternating().await;
    let store = e.moto.store(400);
    let api_calls = |s: &secret_store::SecretStore| match s {
        secret_store::SecretStore::Aws(a) => a.api_calls(),
        _ => unreachable!(),
    };
    let (v1, c1) = store.db_credentials_at(APP, Stage::Current).await.unwrap();
    for _ in 0..50 {
        store.db_credentials_at(APP, Stage::Current).await.unwrap();
    }
    assert_eq!(api_calls(&store), 1, "reads within the TTL must be cached");
    // A burst of logins after a refresh makes one read, not one each.
    store.refresh(APP);
    let burst: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.db_credentials_at(APP, Stage::Current).await })
        })
        .collect();
    for b in burst {
        b.await.unwrap().unwrap();
    }
    assert_eq!(
        api_calls(&store),
        2,
        "concurrent misses must share one read"
    );

    local::rotate(&e.rotator, APP).await.unwrap();
    // Still the cached version until refreshed or expired...
    let (cached, _) = store.db_credentials_at(APP, Stage::Current).await.unwrap();
    assert_eq!(cached, v1);
    // ...a login failure refreshes at once...
    store.refresh(APP);
    let (v2, c2) = store.db_credentials_at(APP, Stage::Current).await.unwrap();
    assert_ne!(v2, v1);
    assert_ne!(c2.username, c1.username);
    let (prev, p) = store.db_credentials_at(APP, Stage::Previous).await.unwrap();
    assert_eq!(
        (prev.as_str(), p.username.as_str()),
        (v1.as_str(), c1.username.as_str())
    );

    // ...and the TTL bounds how stale a read can be.
    local::rotate(&e.rotator, APP).await.unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    let (v3, _) = store.db_credentials_at(APP, Stage::Current).await.unwrap();
    assert!(v3 != v2 && v3 != v1);
}

#[tokio::test]
async fn the_binary_rotates_with_one_crypto_provider() {
    // One process that talks TLS to PostgreSQL (rustls, ring) and HTTP to Secrets Manager
    // (the SDK's client, ring too): it would panic at the first TLS config with two.
    let e = env().await;
    let original = e.alternating().await;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bootstrap"));
    cmd.args(["rotate", APP])
        .env("ROTATION_DATABASE__CA_FILE", e.cluster.ca_cert())
        .env("ROTATION_LOG__FORMAT", "text");
    for (k, v) in e.moto.env("ROTATION_") {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let current = e.creds(APP, CURRENT).await;
    assert_eq!(current.username, "rates_api_clone");
    assert!(e.logs_in(&current).await);
    // Nothing secret on the way out.
    let all = format!("{stderr}{}", String::from_utf8_lossy(&out.stdout));
    assert!(!all.contains(current.password.expose_secret()));
    assert!(!all.contains(original.password.expose_secret()));
}

// The rotation function as a confused deputy (issue 17, item 2). Each test is the attack as
// the writer of a secret would make it: whoever may write `dbgw/person/*` (the approvals
// app's role) writes a secret of its choosing and asks for a rotation, hoping the function
// sets a password it can then read on a user it does not own.

const APPROVALS: &str = "dbgw/approvals-db";

impl Env {
    /// The master secret and the approvals login's (the master people's secrets name).
    async fn masters(&self) {
        let admin = self.cluster.admin().clone();
        self.moto
            .client()
            .create_secret()
            .name(MASTER)
            .secret_string(self.layout(&admin, "postgres", None).to_string())
            .send()
            .await
            .unwrap();
        self.approvals_master().await;
    }

    /// Writes `value` as secret `id` and runs a rotation, as `RotateSecret` would; returns
    /// the error and checks that it left the secret as written.
    async fn attack(&self, id: &str, value: &Value) -> Error {
        self.moto.rotated_secret(id, value).await;
        let err = local::rotate(&self.rotator, id)
            .await
            .expect_err("the attacker's rotation succeeded");
        assert_eq!(
            &self.value(id, CURRENT).await,
            value,
            "the attacker's secret was rotated"
        );
        err
    }

    async fn role_exists(&self, role: &str) -> bool {
        let admin = self.cluster.connect("postgres").await.unwrap();
        admin
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
            .await
            .unwrap()
            .is_some()
    }
}

/// A person's secret naming `rates_api`, with the RDS master as `masterarn` and no
/// `"rotation"`: the old function took it for alternating users, made `rates_api_clone`
/// (a `rates_reader`, as `rates_api` is) and handed the attacker its password.
#[tokio::test]
async fn a_persons_secret_naming_rates_api_with_the_master_is_refused() {
    let e = env().await;
    e.masters().await;
    let rates_api = e.cluster.login_for("rates_api").await.unwrap();
    let forged = DbCredentials::new("rates_api", "guessed");
    let err = e
        .attack(
            "dbgw/person/rates_api",
            &e.layout(&forged, "rates", Some(MASTER)),
        )
        .await;
    eprintln!("refused: {err}");
    assert!(e.logs_in(&rates_api).await, "rates_api's password changed");
    assert!(
        !e.role_exists("rates_api_clone").await,
        "the function created rates_api_clone for the attacker"
    );
}

/// The same with the approvals login as master and `"rotation": "single-user"`, exactly as
/// the approvals app writes a person's secret: the old function had the approvals login
/// (CREATEROLE) set `rates_api`'s password, so the attacker read it and rates-api lost its
/// login.
#[tokio::test]
async fn a_persons_secret_naming_rates_api_with_the_approvals_login_is_refused() {
    let e = env().await;
    e.masters().await;
    let rates_api = e.cluster.login_for("rates_api").await.unwrap();
    let mut value = e.layout(
        &DbCredentials::new("rates_api", "guessed"),
        "rates",
        Some(APPROVALS),
    );
    value["rotation"] = json!("single-user");
    // Named as a person's role would be, to pass a check of the secret's name alone.
    let id = grants::person_secret(&grants::person_role("mallory@example.com"));
    let err = e.attack(&id, &value).await;
    eprintln!("refused: {err}");
    assert!(e.logs_in(&rates_api).await, "rates_api's password changed");
    assert!(!e.role_exists("rates_api_clone").await);
}

/// A person's secret naming the master's own user, changed "by the master": the old
/// function set the RDS master's password to one the attacker reads (and locked everyone
/// else out of the master).
#[tokio::test]
async fn a_persons_secret_naming_the_master_is_refused() {
    let e = env().await;
    e.masters().await;
    let admin = e.cluster.admin().clone();
    let mut value = e.layout(
        &DbCredentials::new(admin.username.clone(), "guessed"),
        "postgres",
        Some(MASTER),
    );
    value["rotation"] = json!("single-user");
    let id = grants::person_secret(&admin.username);
    let err = e.attack(&id, &value).await;
    eprintln!("refused: {err}");
    assert!(
        e.cluster.connect("postgres").await.is_ok(),
        "the master's password changed"
    );
    assert!(!e.role_exists(&format!("{}_clone", admin.username)).await);
}

/// A person's secret in every way as the approvals app writes it (its name, the person's
/// role, the approvals login as master, single user, the real server), but whose writer
/// does not know the role's password: the old function set a new one anyway, so the
/// writer of a secret could take over any person's role.
#[tokio::test]
async fn a_secret_whose_current_password_is_wrong_is_refused() {
    let e = env().await;
    e.masters().await;
    let target = e.cluster.connect("postgres").await.unwrap();
    let user = grants::person_role("erin@example.com");
    grants::ensure_role(&target, &user).await.unwrap();
    grants::grant_membership(&target, &user, "rates_reader")
        .await
        .unwrap();
    grants::enable_login(&target, &user).await.unwrap();
    let erin = e.cluster.login_for(&user).await.unwrap();
    let mut value = e.layout(
        &DbCredentials::new(&user, "not-erins"),
        "rates",
        Some(APPROVALS),
    );
    value["rotation"] = json!("single-user");
    let err = e.attack(&grants::person_secret(&user), &value).await;
    eprintln!("refused: {err}");
    assert!(e.logs_in(&erin).await, "erin's password changed");
}

/// A secret that points the master at another server (here a second PostgreSQL standing
/// for the attacker's, with a certificate the function trusts and accepting the master's
/// login): the old function logged in there as the master (handing the server the master's
/// credentials; a server of the attacker's would ask for them in clear text) and made
/// `rates_api_clone` there.
#[tokio::test]
async fn a_secret_pointing_the_master_at_another_server_is_refused() {
    let e = env().await;
    e.alternating().await;
    let elsewhere = tokio::task::spawn_blocking(Cluster::start)
        .await
        .unwrap()
        .expect("a second cluster");
    assert_ne!(elsewhere.port(), e.cluster.port());
    let original = e.creds(APP, CURRENT).await;
    let mut value = e.value(APP, CURRENT).await;
    value["port"] = json!(elsewhere.port());
    e.rotator
        .sm
        .put_secret_value()
        .secret_id(APP)
        .secret_string(value.to_string())
        .send()
        .await
        .unwrap();
    let err = local::rotate(&e.rotator, APP)
        .await
        .expect_err("the rotation used the master on another server");
    eprintln!("refused: {err}");
    let there = elsewhere.connect("postgres").await.unwrap();
    let cloned = there
        .query_opt(
            "SELECT 1 FROM pg_roles WHERE rolname = 'rates_api_clone'",
            &[],
        )
        .await
        .unwrap()
        .is_some();
    assert!(!cloned, "the master acted on the other server");
    assert_eq!(e.value(APP, CURRENT).await, value);
    assert!(e.logs_in(&original).await);
    assert!(!e.role_exists("rates_api_clone").await);
}

/// The attacker can also write the pending version itself (`PutSecretValue` with
/// `AWSPENDING`) and have Secrets Manager call `setSecret` with it, skipping `createSecret`'s
/// checks: `setSecret` makes them all again. On the old function this made
/// `rates_api_clone` with `rates_api`'s memberships and the attacker's password.
#[tokio::test]
async fn a_pending_version_written_by_the_attacker_is_refused_by_set_secret() {
    let e = env().await;
    e.masters().await;
    let rates_api = e.cluster.login_for("rates_api").await.unwrap();
    let id = "dbgw/person/rates_api";
    let current = e.layout(
        &DbCredentials::new("rates_api", "guessed"),
        "rates",
        Some(MASTER),
    );
    e.moto.rotated_secret(id, &current).await;
    let mut pending = current.clone();
    pending["username"] = json!("rates_api_clone");
    pending["password"] = json!("chosen-by-the-attacker");
    let token = local::new_token();
    e.rotator
        .sm
        .put_secret_value()
        .secret_id(id)
        .client_request_token(&token)
        .secret_string(pending.to_string())
        .version_stages(PENDING)
        .send()
        .await
        .unwrap();
    let why = refused(e.rotator.handle(id, &token, Step::SetSecret).await);
    eprintln!("refused: {why}");
    assert!(e.logs_in(&rates_api).await);
    assert!(!e.role_exists("rates_api_clone").await);
}

/// People's secrets as the approvals app makes them in AWS: created with the configured
/// KMS key (`secrets.kms_key_id`), deleted with a recovery window
/// (`secrets.recovery_window_days`), and restored when the same person is granted again
/// inside the window.
#[tokio::test]
async fn a_store_creates_with_its_key_and_deletes_with_a_recovery_window() {
    let moto = Moto::start().await;
    let store = secret_store::SecretStore::from_settings(&secret_store::SecretsSettings {
        kms_key_id: Some("alias/dbgw-test-people-secrets".into()),
        recovery_window_days: 7,
        ..moto.settings(0)
    });
    let id = "dbgw/person/p_erin_example_com_0123456789abcdef";
    let creds = DbCredentials::new("p_erin_example_com_0123456789abcdef", "first");
    store.put_db_credentials(id, &creds).await.unwrap();
    let client = moto.client();
    let described = client.describe_secret().secret_id(id).send().await.unwrap();
    assert_eq!(
        described.kms_key_id(),
        Some("alias/dbgw-test-people-secrets")
    );

    store.delete(id).await.unwrap();
    let described = client.describe_secret().secret_id(id).send().await.unwrap();
    assert!(
        described.deleted_date().is_some(),
        "deleted without a recovery window"
    );

    // Granted again inside the window: the secret comes back with the new value.
    let again = DbCredentials::new(creds.username.clone(), "second");
    store.put_db_credentials(id, &again).await.unwrap();
    let described = client.describe_secret().secret_id(id).send().await.unwrap();
    assert!(
        described.deleted_date().is_none(),
        "still scheduled for deletion"
    );
    let read = secret_store::SecretStore::from_settings(&moto.settings(0));
    let (_, got) = read.db_credentials_at(id, Stage::Current).await.unwrap();
    assert_eq!(got.password.expose_secret(), "second");
}
