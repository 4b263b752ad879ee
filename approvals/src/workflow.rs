//! The rules of requesting and deciding, shared by the pages and the API: who may do what
//! to which request, checked here (and, where it can be, again by the database).

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use crate::deprovision;
use crate::error::{Error, Result};
use crate::model::{self, Request};
use crate::oidc::User;
use crate::provision::{self, Outcome};
use crate::status::{Action, Decision, Status};
use crate::App;

/// Longest justification or comment, in characters.
pub const MAX_TEXT: usize = 2000;
/// Latest start a request may ask for.
const MAX_START_AHEAD_DAYS: i64 = 90;

/// Who is acting, and whether the provider (just now, for decisions) puts them in the
/// data-security group.
#[derive(Debug, Clone)]
pub struct Actor {
    pub user: User,
    pub approver: bool,
}

impl Actor {
    pub fn new(user: User, approvers_group: &str) -> Actor {
        let approver = user.groups.iter().any(|g| g == approvers_group);
        Actor { user, approver }
    }

    pub fn email(&self) -> &str {
        &self.user.email
    }

    pub(crate) fn require_approver(&self, what: &str) -> Result<()> {
        if self.approver {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "Only members of the data-security group can {what}; the identity provider \
                 does not list you in it."
            )))
        }
    }
}

/// A request as asked for.
#[derive(Debug, Clone, Deserialize)]
pub struct NewRequest {
    pub database: String,
    pub level: String,
    pub justification: String,
    pub duration_secs: i64,
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
}

pub(crate) fn check_text(what: &str, text: &str, required: bool) -> Result<String> {
    let text = text.trim();
    if required && text.is_empty() {
        return Err(Error::BadInput(format!("A {what} is required.")));
    }
    let n = text.chars().count();
    if n > MAX_TEXT {
        return Err(Error::BadInput(format!(
            "The {what} is {n} characters long; at most {MAX_TEXT} are allowed."
        )));
    }
    Ok(text.to_string())
}

pub async fn create(app: &App, actor: &Actor, new: NewRequest) -> Result<Request> {
    let Some(level) = app.settings.level(&new.database, &new.level) else {
        return Err(Error::BadInput(format!(
            "There is no access level `{}` for database `{}` in the catalogue.",
            new.level, new.database
        )));
    };
    let justification = check_text("justification", &new.justification, true)?;
    if new.duration_secs < 60 {
        return Err(Error::BadInput(
            "The duration must be at least one minute.".into(),
        ));
    }
    if new.duration_secs as u64 > level.max_duration_secs {
        return Err(Error::BadInput(format!(
            "{} of {} is limited to {}; you asked for {}.",
            level.level,
            level.database,
            model::duration_text(level.max_duration_secs as i64),
            model::duration_text(new.duration_secs)
        )));
    }
    let now = Utc::now();
    if let Some(start) = new.starts_at {
        if start < now - chrono::Duration::minutes(5) {
            return Err(Error::BadInput("The start is in the past.".into()));
        }
        if start > now + chrono::Duration::days(MAX_START_AHEAD_DAYS) {
            return Err(Error::BadInput(format!(
                "The start may be at most {MAX_START_AHEAD_DAYS} days ahead."
            )));
        }
    }
    // What the approvers see and the grant gets, whatever the catalogue says later.
    let policy = serde_json::to_value(&level.policy).map_err(|e| Error::Internal(e.into()))?;
    let mut control = app.control.get().await?;
    let tx = control.transaction().await?;
    deprovision::refuse_if_deprovisioned(&tx, actor.email(), "you cannot ask for access").await?;
    let id: i64 = tx
        .query_one(
            "INSERT INTO access_requests (email, subject, name, database, level, role, \
             approvals_needed, justification, duration_secs, starts_at, policy) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
            &[
                &actor.user.email,
                &actor.user.subject,
                &actor.user.name,
                &level.database,
                &level.level,
                &level.role,
                &(level.approvals as i32),
                &justification,
                &new.duration_secs,
                &new.starts_at,
                &policy,
            ],
        )
        .await?
        .get(0);
    model::record(
        &tx,
        Some(id),
        None,
        actor.email(),
        "request.created",
        json!({"database": level.database, "level": level.level, "role": level.role,
               "approvals_needed": level.approvals, "duration_secs": new.duration_secs,
               "starts_at": new.starts_at, "justification": justification,
               "policy": policy}),
    )
    .await?;
    tx.commit().await?;
    app.metrics.requests_created.inc();
    get(app, actor, id).await
}

/// A request the actor may see: their own, or any for an approver.
pub async fn get(app: &App, actor: &Actor, id: i64) -> Result<Request> {
    let control = app.control.get().await?;
    let req = model::request(&**control, id, false).await?;
    model::visible(req, id, actor.email(), actor.approver)
}

/// Withdraws one's own pending (or approved, not yet started) request.
pub async fn withdraw(app: &App, actor: &Actor, id: i64) -> Result<Request> {
    let mut control = app.control.get().await?;
    let tx = control.transaction().await?;
    let req = model::request(&tx, id, true).await?;
    let req = own(req, id, actor)?;
    match req.status {
        Status::Pending => {
            model::close_decision(
                &tx,
                id,
                Action::Withdraw,
                actor.email(),
                "request.withdrawn",
                json!({}),
            )
            .await?;
            tx.commit().await?;
        }
        // Approved, not started yet: its (maybe half-made) access is ended instead.
        Status::Approved => {
            drop(tx);
            drop(control);
            end(app, id, "withdrawn", actor.email()).await?;
        }
        other => {
            return Err(Error::Conflict(format!(
                "Request {id} is {other}; only a pending request can be withdrawn."
            )))
        }
    }
    get(app, actor, id).await
}

/// Gives up one's own active grant before it expires.
pub async fn give_up(app: &App, actor: &Actor, id: i64) -> Result<Request> {
    let req = get(app, actor, id).await?;
    let req = own(Some(req), id, actor)?;
    if !req.status.allows(Action::End) {
        return Err(Error::Conflict(format!(
            "Request {id} is {}; only active access can be given up.",
            req.status
        )));
    }
    end(app, id, "given up", actor.email()).await?;
    get(app, actor, id).await
}

/// An approver revokes active (or approved, not yet started) access, with a reason.
pub async fn revoke(app: &App, actor: &Actor, id: i64, reason: &str) -> Result<Request> {
    actor.require_approver("revoke access")?;
    let reason = check_text("reason", reason, true)?;
    let req = get(app, actor, id).await?;
    if !req.status.allows(Action::End) {
        return Err(Error::Conflict(format!(
            "Request {id} is {}; there is no access to revoke.",
            req.status
        )));
    }
    end(app, id, &format!("revoked: {reason}"), actor.email()).await?;
    app.metrics.revocations.inc();
    get(app, actor, id).await
}

/// Starts ending access and finishes it now if the lock is free (else the scheduler does).
async fn end(app: &App, id: i64, reason: &str, by: &str) -> Result<()> {
    if !provision::begin_end(app, id, reason, by).await? {
        return Err(Error::Conflict(format!(
            "Request {id} changed meanwhile; reload the page."
        )));
    }
    let app2 = app.clone();
    // In its own task: a client that goes away must not stop it half-way.
    let outcome = tokio::spawn(async move { provision::finish_end(&app2, id).await })
        .await
        .map_err(|e| Error::Internal(e.into()))?;
    if let Err(e) = outcome {
        tracing::warn!(request = id, error = %e, "ending access will be retried");
    }
    Ok(())
}

pub(crate) fn own(req: Option<Request>, id: i64, actor: &Actor) -> Result<Request> {
    match req {
        Some(r) if r.email == actor.email() => Ok(r),
        Some(_) if actor.approver => Err(Error::Forbidden(format!(
            "Request {id} is someone else's; only they can do that."
        ))),
        _ => Err(Error::not_found_request(id)),
    }
}

/// An approver's decision. `actor.approver` must come from the provider now (userinfo for
/// the pages, the bearer token for the API), not from the sign-in.
pub async fn decide(
    app: &App,
    actor: &Actor,
    id: i64,
    decision: Decision,
    comment: &str,
) -> Result<Request> {
    actor.require_approver("approve or deny requests")?;
    let approve = decision == Decision::Approve;
    let comment = check_text("comment", comment, !approve)?;
    let mut control = app.control.get().await?;
    let tx = control.transaction().await?;
    let Some(req) = model::request(&tx, id, true).await? else {
        return Err(Error::not_found_request(id));
    };
    if req.email == actor.email() {
        return Err(Error::Forbidden(
            "Nobody decides on their own request; another approver must.".into(),
        ));
    }
    if !req.status.decidable() {
        return Err(Error::Conflict(format!(
            "Request {id} is already decided (it is {}).",
            req.status
        )));
    }
    if approve {
        deprovision::refuse_if_deprovisioned(&tx, &req.email, "their requests cannot be approved")
            .await?;
    }
    let earlier = model::decisions(&tx, id).await?;
    if earlier.iter().any(|d| d.approver == actor.email()) {
        return Err(Error::Conflict(format!(
            "You have already approved request {id}; it needs another approver."
        )));
    }
    tx.execute(
        "INSERT INTO decisions (request_id, approver, decision, comment) VALUES ($1, $2, $3, $4)",
        &[&id, &actor.email(), &decision.as_str(), &comment],
    )
    .await?;
    model::record(
        &tx,
        Some(id),
        None,
        actor.email(),
        &format!("decision.{decision}"),
        json!({"comment": comment}),
    )
    .await?;
    let approvals = earlier
        .iter()
        .filter(|d| d.decision == Decision::Approve)
        .count()
        + 1;
    let final_approval = approve && approvals as i32 >= req.approvals_needed;
    if !approve {
        model::close_decision(
            &tx,
            id,
            Action::Deny,
            actor.email(),
            "request.denied",
            json!({"comment": comment}),
        )
        .await?;
    } else if final_approval {
        let approvers: Vec<&str> = earlier
            .iter()
            .filter(|d| d.decision == Decision::Approve)
            .map(|d| d.approver.as_str())
            .chain([actor.email()])
            .collect();
        model::close_decision(
            &tx,
            id,
            Action::Approve,
            actor.email(),
            "request.approved",
            json!({"approvers": approvers}),
        )
        .await?;
    }
    tx.commit().await?;
    app.metrics.decisions.inc();
    drop(control);
    if final_approval {
        let app2 = app.clone();
        let outcome = tokio::spawn(async move { provision::provision(&app2, id).await })
            .await
            .map_err(|e| Error::Internal(e.into()))?;
        match outcome {
            Ok(Outcome::Done | Outcome::NotDue | Outcome::Busy | Outcome::Interrupted) => {}
            Err(e) => tracing::warn!(request = id, error = %e, "provisioning will be retried"),
        }
    }
    get(app, actor, id).await
}
