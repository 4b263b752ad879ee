//! Extending active access without a drop (`db/control/0008_...sql`, table `extensions`).
//!
//! The person asks for a later end of their own active access, with a justification. The
//! level's rules decide: as many distinct approvers as the level needs (the request's number
//! if that was higher), never the person themself. The final approval moves the grant's
//! `expires_at` in place: same grant id, same role, same password; the control plane's
//! trigger tells the proxies (`NOTIFY dbgw_grants`), which move their live sessions' end.
//! The request's end is the grant's, so the pages, the API and the scheduler's expiry all
//! see the new one.
//!
//! The cap: the new end is at most the level's `max_duration_secs` after the moment it is
//! asked for (checked again at the final approval, against that moment). A denial, or
//! access that ends first (expiry, revocation, giving up), changes nothing: the extension
//! is closed (`denied`, `expired`) and access ends at its time; so does a pending extension
//! the person withdraws (`withdrawn`). Only active, unrevoked, unexpired access can be
//! extended, so an extension never brings ended access back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_postgres::{GenericClient, Row};

use crate::error::{Error, Result};
use crate::model::{self, SYSTEM};
use crate::status::{Decision, Status};
use crate::workflow::{self, Actor};
use crate::App;

/// One extension request.
#[derive(Debug, Clone, Serialize)]
pub struct Extension {
    pub id: i64,
    pub request_id: i64,
    pub email: String,
    pub justification: String,
    /// The end when it was asked for.
    pub previous_end: DateTime<Utc>,
    /// The end asked for.
    pub extend_to: DateTime<Utc>,
    pub approvals_needed: i32,
    /// `pending`, `approved`, `denied`, `expired` or `withdrawn`.
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, request_id, email, justification, previous_end, extend_to, \
    approvals_needed, state, created_at, decided_at";

impl Extension {
    fn from_row(r: &Row) -> Extension {
        Extension {
            id: r.get("id"),
            request_id: r.get("request_id"),
            email: r.get("email"),
            justification: r.get("justification"),
            previous_end: r.get("previous_end"),
            extend_to: r.get("extend_to"),
            approvals_needed: r.get("approvals_needed"),
            state: r.get("state"),
            created_at: r.get("created_at"),
            decided_at: r.get("decided_at"),
        }
    }

    pub fn pending(&self) -> bool {
        self.state == "pending"
    }
}

/// An extension as asked for: a new end, or a length of extra time after the current end.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewExtension {
    pub justification: String,
    #[serde(default)]
    pub extend_to: Option<DateTime<Utc>>,
    #[serde(default)]
    pub extra_secs: Option<i64>,
}

async fn one(db: &impl GenericClient, id: i64, lock: bool) -> Result<Option<Extension>> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    Ok(db
        .query_opt(
            &format!("SELECT {COLUMNS} FROM extensions WHERE id = $1{lock}"),
            &[&id],
        )
        .await?
        .map(|r| Extension::from_row(&r)))
}

/// The extensions of a request, oldest first.
pub async fn of_request(db: &impl GenericClient, request_id: i64) -> Result<Vec<Extension>> {
    Ok(db
        .query(
            &format!("SELECT {COLUMNS} FROM extensions WHERE request_id = $1 ORDER BY id"),
            &[&request_id],
        )
        .await?
        .iter()
        .map(Extension::from_row)
        .collect())
}

/// Extensions waiting for approvers, oldest first.
pub async fn pending(db: &impl GenericClient) -> Result<Vec<Extension>> {
    Ok(db
        .query(
            &format!(
                "SELECT {COLUMNS} FROM extensions WHERE state = 'pending' ORDER BY id LIMIT 500"
            ),
            &[],
        )
        .await?
        .iter()
        .map(Extension::from_row)
        .collect())
}

/// An extension the actor may see: their own, or any for an approver.
pub async fn get(app: &App, actor: &Actor, id: i64) -> Result<Extension> {
    let control = app.control.get().await?;
    match one(&**control, id, false).await? {
        Some(e) if actor.approver || e.email == actor.email() => Ok(e),
        _ => Err(Error::NotFound(format!("There is no extension {id}."))),
    }
}

/// The grant of an active request, locked, if it still gives access now: its id and end.
async fn live_grant(
    db: &impl GenericClient,
    req: &model::Request,
) -> Result<Option<(i64, DateTime<Utc>)>> {
    let Some(grant_id) = req.grant_id.filter(|_| req.status == Status::Active) else {
        return Ok(None);
    };
    Ok(db
        .query_opt(
            "SELECT expires_at FROM grants WHERE id = $1 AND revoked_at IS NULL \
             AND expires_at > now() FOR UPDATE",
            &[&grant_id],
        )
        .await?
        .map(|r| (grant_id, r.get(0))))
}

fn ended(id: i64) -> Error {
    Error::Conflict(format!(
        "Request {id} gives no access now (it is not active, or it has expired or been \
         revoked): only active access can be extended; ask for access again instead."
    ))
}

/// The latest end the level allows for an extension decided at `now`.
fn cap(app: &App, req: &model::Request, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let level = app
        .settings
        .level(&req.database, &req.level)
        .ok_or_else(|| {
            Error::Conflict(format!(
                "{}/{} is no longer in the catalogue; its access cannot be extended",
                req.database, req.level
            ))
        })?;
    let max = i64::try_from(level.max_duration_secs).unwrap_or(i64::MAX / 2);
    Ok(now + chrono::Duration::seconds(max))
}

/// A person asks to extend their own active access.
pub async fn create(
    app: &App,
    actor: &Actor,
    request_id: i64,
    new: NewExtension,
) -> Result<Extension> {
    let justification = workflow::check_text("justification", &new.justification, true)?;
    let mut control = app.control.get().await?;
    let tx = control.transaction().await?;
    let req = model::request(&tx, request_id, true).await?;
    let req = workflow::own(req, request_id, actor)?;
    let Some((grant_id, previous_end)) = live_grant(&tx, &req).await? else {
        return Err(ended(request_id));
    };
    let extend_to = match (new.extend_to, new.extra_secs) {
        (Some(to), None) => to,
        (None, Some(secs)) if secs >= 60 => previous_end + chrono::Duration::seconds(secs),
        (None, Some(_)) => {
            return Err(Error::BadInput(
                "The extra time must be at least one minute.".into(),
            ))
        }
        _ => {
            return Err(Error::BadInput(
                "Give either a new end (extend_to) or extra time (extra_secs).".into(),
            ))
        }
    };
    if extend_to <= previous_end {
        return Err(Error::BadInput(format!(
            "The new end must be after the current end ({}).",
            previous_end.format("%Y-%m-%d %H:%M:%S UTC")
        )));
    }
    let now = Utc::now();
    let latest = cap(app, &req, now)?;
    if extend_to > latest {
        return Err(Error::BadInput(format!(
            "{} of {} may be extended to at most {} from now ({}); you asked for {}.",
            req.level,
            req.database,
            model::duration_text((latest - now).num_seconds()),
            latest.format("%Y-%m-%d %H:%M:%S UTC"),
            extend_to.format("%Y-%m-%d %H:%M:%S UTC")
        )));
    }
    let pending: Option<i64> = tx
        .query_opt(
            "SELECT id FROM extensions WHERE request_id = $1 AND state = 'pending'",
            &[&request_id],
        )
        .await?
        .map(|r| r.get(0));
    if let Some(other) = pending {
        return Err(Error::Conflict(format!(
            "Extension {other} of request {request_id} is still waiting for approvers."
        )));
    }
    let approvals = app
        .settings
        .level(&req.database, &req.level)
        .map_or(req.approvals_needed, |l| {
            (l.approvals as i32).max(req.approvals_needed)
        });
    let id: i64 = tx
        .query_one(
            "INSERT INTO extensions (request_id, email, justification, previous_end, \
             extend_to, approvals_needed) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            &[
                &request_id,
                &req.email,
                &justification,
                &previous_end,
                &extend_to,
                &approvals,
            ],
        )
        .await?
        .get(0);
    model::record(
        &tx,
        Some(request_id),
        Some(grant_id),
        actor.email(),
        "extension.requested",
        json!({"extension_id": id, "previous_end": previous_end, "extend_to": extend_to,
               "approvals_needed": approvals, "justification": justification}),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(request = request_id, extension = id, "extension requested");
    get(app, actor, id).await
}

/// An approver's decision on an extension; the final approval moves the grant's end.
pub async fn decide(
    app: &App,
    actor: &Actor,
    id: i64,
    decision: Decision,
    comment: &str,
) -> Result<Extension> {
    actor.require_approver("approve or deny extensions")?;
    let approve = decision == Decision::Approve;
    let comment = workflow::check_text("comment", comment, !approve)?;
    let mut control = app.control.get().await?;
    let tx = control.transaction().await?;
    let Some(ext) = one(&tx, id, true).await? else {
        return Err(Error::NotFound(format!("There is no extension {id}.")));
    };
    if ext.email == actor.email() {
        return Err(Error::Forbidden(
            "Nobody decides on their own extension; another approver must.".into(),
        ));
    }
    if !ext.pending() {
        return Err(Error::Conflict(format!(
            "Extension {id} is already closed (it is {}).",
            ext.state
        )));
    }
    let earlier: Vec<(String, String)> = tx
        .query(
            "SELECT approver, decision FROM extension_decisions WHERE extension_id = $1 ORDER BY id",
            &[&id],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if earlier.iter().any(|(a, _)| a == actor.email()) {
        return Err(Error::Conflict(format!(
            "You have already approved extension {id}; it needs another approver."
        )));
    }
    // The request (and its grant) locked before anything changes: an ending that runs
    // meanwhile either sees the new end or ends the access first.
    let req = model::request(&tx, ext.request_id, true)
        .await?
        .ok_or_else(|| Error::not_found_request(ext.request_id))?;
    let live = live_grant(&tx, &req).await?;
    if approve && live.is_none() {
        return Err(ended(ext.request_id));
    }
    let approvers: Vec<&str> = earlier
        .iter()
        .filter(|(_, d)| d == Decision::Approve.as_str())
        .map(|(a, _)| a.as_str())
        .chain([actor.email()])
        .collect();
    let final_approval = approve && approvers.len() as i32 >= ext.approvals_needed;
    if let (true, Some((grant_id, _))) = (final_approval, live) {
        let now = Utc::now();
        if ext.extend_to > cap(app, &req, now)? {
            return Err(Error::Conflict(format!(
                "Extension {id} asks for more than the level allows from now; it cannot be \
                 approved (deny it, and the person may ask again)."
            )));
        }
        tx.execute(
            "INSERT INTO extension_decisions (extension_id, approver, decision, comment) \
             VALUES ($1, $2, $3, $4)",
            &[&id, &actor.email(), &decision.as_str(), &comment],
        )
        .await?;
        grants::set_end(&tx, grant_id, ext.extend_to).await?;
        tx.execute(
            "UPDATE extensions SET state = 'approved', decided_at = now() WHERE id = $1",
            &[&id],
        )
        .await?;
        model::record(
            &tx,
            Some(ext.request_id),
            Some(grant_id),
            actor.email(),
            "access.extended",
            json!({"extension_id": id, "email": ext.email, "database": req.database,
                   "role": req.role, "previous_end": ext.previous_end,
                   "expires_at": ext.extend_to, "approvers": approvers, "comment": comment}),
        )
        .await?;
        tx.commit().await?;
        app.metrics.decisions.inc();
        tracing::info!(request = ext.request_id, extension = id, grant = grant_id,
                       expires_at = %ext.extend_to, "access extended");
        return get(app, actor, id).await;
    }
    tx.execute(
        "INSERT INTO extension_decisions (extension_id, approver, decision, comment) \
         VALUES ($1, $2, $3, $4)",
        &[&id, &actor.email(), &decision.as_str(), &comment],
    )
    .await?;
    model::record(
        &tx,
        Some(ext.request_id),
        req.grant_id,
        actor.email(),
        &format!("extension.decision.{decision}"),
        json!({"extension_id": id, "comment": comment}),
    )
    .await?;
    if !approve {
        tx.execute(
            "UPDATE extensions SET state = 'denied', decided_at = now() WHERE id = $1",
            &[&id],
        )
        .await?;
        model::record(
            &tx,
            Some(ext.request_id),
            req.grant_id,
            actor.email(),
            "extension.denied",
            json!({"extension_id": id, "comment": comment, "expires_at": ext.previous_end}),
        )
        .await?;
    }
    tx.commit().await?;
    app.metrics.decisions.inc();
    get(app, actor, id).await
}

/// The person withdraws their own pending extension: nothing about the access changes, it
/// ends at the time it had. Approvers can no longer decide on it.
pub async fn withdraw(app: &App, actor: &Actor, id: i64) -> Result<Extension> {
    let mut control = app.control.get().await?;
    let tx = control.transaction().await?;
    let ext = match one(&tx, id, true).await? {
        Some(e) if e.email == actor.email() => e,
        // Someone else's is not found: the same answer as for one that does not exist.
        _ => {
            return Err(Error::NotFound(format!(
                "There is no extension {id} of yours."
            )))
        }
    };
    if !ext.pending() {
        return Err(Error::Conflict(format!(
            "Extension {id} is already closed (it is {}); only a pending one can be withdrawn.",
            ext.state
        )));
    }
    tx.execute(
        "UPDATE extensions SET state = 'withdrawn', decided_at = now() WHERE id = $1",
        &[&id],
    )
    .await?;
    // The end the access keeps (the grant's, as it is now).
    let (grant_id, expires_at): (Option<i64>, Option<DateTime<Utc>>) = tx
        .query_opt(
            "SELECT r.grant_id, g.expires_at FROM access_requests r \
             LEFT JOIN grants g ON g.id = r.grant_id WHERE r.id = $1",
            &[&ext.request_id],
        )
        .await?
        .map_or((None, None), |r| (r.get(0), r.get(1)));
    model::record(
        &tx,
        Some(ext.request_id),
        grant_id,
        actor.email(),
        "extension.withdrawn",
        json!({"extension_id": id, "expires_at": expires_at}),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(
        request = ext.request_id,
        extension = id,
        "extension withdrawn"
    );
    get(app, actor, id).await
}

/// Closes pending extensions whose access has ended (the scheduler): they can no longer be
/// approved, and the record says why.
pub async fn expire_stale(app: &App) -> Result<()> {
    let mut control = app.control.get().await?;
    let tx = control.transaction().await?;
    let rows = tx
        .query(
            "UPDATE extensions e SET state = 'expired', decided_at = now() \
             FROM access_requests r LEFT JOIN grants g ON g.id = r.grant_id \
             WHERE e.state = 'pending' AND r.id = e.request_id AND (r.status <> $1 \
                OR g.id IS NULL OR g.revoked_at IS NOT NULL OR g.expires_at <= now()) \
             RETURNING e.id, e.request_id, r.grant_id",
            &[&Status::Active.as_str()],
        )
        .await?;
    for r in &rows {
        let (id, request_id, grant_id): (i64, i64, Option<i64>) = (r.get(0), r.get(1), r.get(2));
        model::record(
            &tx,
            Some(request_id),
            grant_id,
            SYSTEM,
            "extension.expired",
            json!({"extension_id": id, "reason": "the access ended before a decision"}),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
