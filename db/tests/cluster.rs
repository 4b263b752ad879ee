//! The harness every integration test relies on: a cluster with the data, TLS and SCRAM.

// A panic is how a test reports a failure.
#![allow(clippy::unwrap_used)]

use dbgw_db::{schema, Cluster};
use secret_store::DbCredentials;

#[tokio::test]
async fn a_throwaway_cluster_holds_the_rates_data_over_tls_and_scram() {
    let cluster = Cluster::start().unwrap();
    let root = cluster.root().to_path_buf();
    let client = cluster.connect("rates").await.unwrap();

    let prices: i64 = client
        .query_one("SELECT count(*) FROM prices", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(prices, 56_689);
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the harness connection must use TLS");
    let applied: i64 = client
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied as usize, schema::MIGRATIONS.len());
    // Migrations are idempotent: running them again applies nothing.
    assert!(schema::migrate(&client).await.unwrap().is_empty());

    // The application role logs in with the password set for it, and only reads.
    let creds = cluster.login_for("rates_api").await.unwrap();
    let app = cluster.server().connect_as("rates", &creds).await.unwrap();
    let n: i64 = app
        .query_one("SELECT count(*) FROM ports", &[])
        .await
        .unwrap()
        .get(0);
    assert!(n > 0);
    let denied = app.batch_execute("DELETE FROM prices").await.unwrap_err();
    assert_eq!(
        denied.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );

    // A wrong password is refused (SCRAM).
    let wrong = DbCredentials::new("rates_api", "not-the-password");
    assert!(cluster.server().connect_as("rates", &wrong).await.is_err());

    // Restart keeps the port and the data.
    drop(app);
    drop(client);
    cluster.restart().unwrap();
    let again = cluster.connect("rates").await.unwrap();
    let ports: i64 = again
        .query_one("SELECT count(*) FROM ports", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ports, n);

    drop(again);
    drop(cluster);
    assert!(!root.exists(), "dropping a cluster removes its directory");
}

/// `dbgw-db setup --adopt SECRET` (the db-admin task in AWS): the role named in the secret
/// logs in with the secret's current password afterwards, the first password Terraform
/// wrote and nothing set on the database; the rotation function then can prove ownership.
#[tokio::test]
async fn setup_adopts_the_first_password_of_a_secret() {
    let db = testkit::TestDb::start().await;
    let secrets = db.dir.path().join("secrets");
    db.store
        .put_db_credentials("dbgw/postgres-admin", db.cluster.admin())
        .await
        .unwrap();
    let first = DbCredentials::new("rates_api", "written-by-terraform-1");
    db.store
        .put_db_credentials("dbgw/rates-api", &first)
        .await
        .unwrap();
    assert!(
        db.cluster
            .server()
            .connect_as("rates", &first)
            .await
            .is_err(),
        "the secret's password was never set on the database"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dbgw-db"))
        .arg("--secrets-dir")
        .arg(&secrets)
        .args(["setup", "--host", db.cluster.host()])
        .args(["--port", &db.cluster.port().to_string()])
        .arg("--ca")
        .arg(db.cluster.ca_cert())
        .args(["--adopt", "dbgw/rates-api"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("written-by-terraform-1"), "{stdout}");
    db.cluster
        .server()
        .connect_as("rates", &first)
        .await
        .expect("the adopted password logs in");
}
