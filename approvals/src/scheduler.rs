//! The app's own clock: every `scheduler.interval_ms` it starts approved grants whose start
//! has come, ends expired or externally revoked grants, finishes endings and provisionings
//! that a crash interrupted, delivers webhook messages and deletes timed-out sessions.
//!
//! Safe with several instances: each request is worked on under its advisory lock (the
//! other instance skips it), state changes check the state they start from under a row lock,
//! and webhook messages are claimed with `FOR UPDATE SKIP LOCKED`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::model::SYSTEM;
use crate::provision;
use crate::status::Status;
use crate::App;

/// Runs until `stop`.
pub async fn run(app: App, stop: CancellationToken) {
    let every = Duration::from_millis(app.settings.scheduler.interval_ms);
    loop {
        if let Err(e) = tick(&app).await {
            tracing::warn!(error = %e, "scheduler run failed; next run retries");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// The ids of the requests in `status` that `condition` (trusted SQL) selects, in order.
async fn ids(app: &App, status: Status, condition: &str) -> Result<Vec<i64>> {
    let control = app.control.get().await?;
    let sql =
        format!("SELECT id FROM access_requests WHERE status = $1 AND {condition} ORDER BY id");
    Ok(control
        .query(&sql, &[&status.as_str()])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// One pass over everything due.
pub async fn tick(app: &App) -> Result<()> {
    for id in ids(
        app,
        Status::Approved,
        "(starts_at IS NULL OR starts_at <= now())",
    )
    .await?
    {
        if let Err(e) = provision::provision_if_free(app, id).await {
            tracing::warn!(request = id, error = %e, "provisioning failed");
        }
    }
    for (id, reason) in {
        let control = app.control.get().await?;
        control
            .query(
                "SELECT r.id, CASE WHEN g.revoked_at IS NOT NULL \
                     THEN 'revoked by ' || coalesce(g.revoked_by, 'an operator') || ': ' || coalesce(g.revoke_reason, '') \
                     ELSE 'expired' END \
                 FROM access_requests r JOIN grants g ON g.id = r.grant_id \
                 WHERE r.status = $1 AND (g.expires_at <= now() OR g.revoked_at IS NOT NULL) \
                 ORDER BY r.id",
                &[&Status::Active.as_str()],
            )
            .await?
            .iter()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1)))
            .collect::<Vec<_>>()
    } {
        if let Err(e) = provision::begin_end(app, id, &reason, SYSTEM).await {
            tracing::warn!(request = id, error = %e, "ending access failed");
        }
    }
    for id in ids(app, Status::Ending, "true").await? {
        if let Err(e) = provision::finish_end_if_free(app, id).await {
            tracing::warn!(request = id, error = %e, "ending access failed");
        }
    }
    // After the endings: an extension of access that has ended can no longer be approved.
    if let Err(e) = crate::extension::expire_stale(app).await {
        tracing::warn!(error = %e, "closing stale extensions failed; next pass retries");
    }
    // One failing part (a webhook down, its secret missing) does not hold up the others.
    if let Err(e) = crate::webhook::deliver_due(app).await {
        tracing::warn!(error = %e, "webhook delivery stopped; next pass retries");
    }
    app.sessions.sweep().await?;
    app.metrics.scheduler_runs.inc();
    Ok(())
}
