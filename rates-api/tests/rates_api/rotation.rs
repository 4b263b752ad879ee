//! Password rotation: a new password in the database and the secret store is picked up by
//! new connections, without restarting the service.

use std::time::Duration;

use crate::common::{spawn_app_with, SECRET_ID};

async fn backends(admin: &tokio_postgres::Client) -> Vec<i32> {
    admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'rates-api' ORDER BY pid",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn a_rotated_password_is_picked_up_without_a_restart() {
    let app = spawn_app_with(|s| {
        s.database.pool_size = 1;
        s.database.max_lifetime_secs = 1;
        s.database.credentials_ttl_ms = 100;
    })
    .await;
    let db = &app.db;
    assert_eq!(
        app.rates("2021-01-05", "2021-01-05", "CNGGZ", "EETLL")
            .await[0]["count"],
        3
    );
    let before = backends(&db.admin).await;
    assert_eq!(before.len(), 1);

    // Rotate: the database first, then the store (as a rotation job does).
    let old = db.creds.clone();
    let new = db.cluster.login_for("rates_api").await.unwrap();
    db.store.put_db_credentials(SECRET_ID, &new).await.unwrap();
    // The old password is really gone.
    assert!(db.cluster.server().connect_as("rates", &old).await.is_err());

    // The open connection keeps serving until its lifetime ends; then a new one logs in
    // with the new password.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        app.rates("2021-01-06", "2021-01-06", "CNGGZ", "EETLL")
            .await[0]["count"],
        3
    );
    let after = backends(&db.admin).await;
    assert_eq!(after.len(), 1);
    assert_ne!(
        before, after,
        "the connection was not replaced after max_lifetime"
    );
    app.stop().await;
}
