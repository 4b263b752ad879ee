//! Making and ending access on the database server, one idempotent step at a time, each
//! step an event.
//!
//! Provisioning (request `approved` -> `active`): the person's role (without LOGIN), a new
//! password (secret store first, then the role; with `people.login = "rds-iam"` instead
//! membership in `rds_iam` and no password at all), membership in the level's group role, the
//! grant row the proxy checks, and LOGIN last. A crash after any step leaves no access: the
//! role cannot log in until the last step, and the proxy lets nobody in without the grant
//! row. Running it again finishes the job.
//!
//! Ending (request `ending` -> `ended`, for expiry, revocation, giving up, withdrawal): the
//! grant row is marked revoked (the proxy closes its sessions within a second), the role
//! keeps only the memberships of its other active grants and loses LOGIN when none is left,
//! its leftover server sessions are terminated, and its secret is deleted when no grant is
//! left.
//!
//! Both run under an advisory lock on the person's role, so two app instances (or two
//! requests of one person, one starting while another ends) never change the same role at
//! once; the scheduler skips a role that is locked, a person's action waits a few seconds.

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::db::{self, Conn};
use crate::error::{Error, Result};
use crate::model::{self, Request, SYSTEM};
use crate::status::{Action, Decision};
use crate::App;

/// First key of the app's advisory locks (the second is a hash of the person's role).
const LOCK_SPACE: i32 = 0x00db_9a99;

/// The steps of provisioning, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Role,
    Password,
    Membership,
    Grant,
    Login,
    Active,
}

pub const STEPS: [Step; 6] = [
    Step::Role,
    Step::Password,
    Step::Membership,
    Step::Grant,
    Step::Login,
    Step::Active,
];

/// What a provisioning or ending run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The request is now active / ended.
    Done,
    /// Another instance (or task) holds the request's lock; it will finish.
    Busy,
    /// Nothing to do: not in the state this run is for, or not due yet.
    NotDue,
    /// Stopped after the given step (tests of crash safety).
    Interrupted,
}

/// The lock on the role of a request's person, held on its own connection. Released by [`Lock::release`]; if the
/// holder is dropped half-way (a crash of the task), its connection is closed, which
/// releases the lock too.
pub struct Lock {
    conn: Option<Conn>,
    key: String,
}

impl Lock {
    pub async fn try_take(app: &App, id: i64) -> Result<Option<Lock>> {
        let conn = app.control.get().await?;
        let email: Option<String> = conn
            .query_opt("SELECT email FROM access_requests WHERE id = $1", &[&id])
            .await?
            .map(|r| r.get(0));
        let key = match email {
            Some(email) => grants::person_role(&email),
            None => format!("request {id}"),
        };
        let got: bool = conn
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                &[&LOCK_SPACE, &key],
            )
            .await?
            .get(0);
        Ok(got.then_some(Lock {
            conn: Some(conn),
            key,
        }))
    }

    /// [`Lock::take`] or [`Lock::try_take`].
    async fn get(app: &App, id: i64, wait: bool) -> Result<Option<Lock>> {
        if wait {
            Lock::take(app, id).await
        } else {
            Lock::try_take(app, id).await
        }
    }

    /// Waits up to a few seconds for the lock (a person's action should not fail because
    /// the scheduler is busy with the same request).
    pub async fn take(app: &App, id: i64) -> Result<Option<Lock>> {
        for _ in 0..50 {
            if let Some(lock) = Lock::try_take(app, id).await? {
                return Ok(Some(lock));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(None)
    }

    pub async fn release(mut self) {
        if let Some(conn) = self.conn.take() {
            let unlocked = conn
                .query_one(
                    "SELECT pg_advisory_unlock($1, hashtext($2))",
                    &[&LOCK_SPACE, &self.key],
                )
                .await;
            if unlocked.is_err() {
                drop(deadpool::managed::Object::take(conn));
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Not released cleanly: close the connection instead of returning it to the
            // pool still holding the lock.
            drop(deadpool::managed::Object::take(conn));
        }
    }
}

/// When a request's grant ends: its start (the later start, or the final approval) plus
/// its duration. Fixed at approval, so a retry never lengthens access.
pub fn expires_at(req: &Request) -> DateTime<Utc> {
    let start = match (req.starts_at, req.decided_at) {
        (Some(s), Some(d)) => s.max(d),
        (Some(s), None) => s,
        (None, Some(d)) => d,
        (None, None) => req.created_at,
    };
    start + chrono::Duration::seconds(req.duration_secs)
}

/// Provisions an approved request whose start has come, waiting a few seconds for the lock
/// if another task holds it (a person's approval should see the access in place).
pub async fn provision(app: &App, id: i64) -> Result<Outcome> {
    run_provisioning(app, id, None, true).await
}

/// Provisions if nobody else is at it (the scheduler: the holder will finish).
pub async fn provision_if_free(app: &App, id: i64) -> Result<Outcome> {
    run_provisioning(app, id, None, false).await
}

/// Provisions, stopping after `stop_after` when given (as a crash there would).
pub async fn provision_until(app: &App, id: i64, stop_after: Option<Step>) -> Result<Outcome> {
    run_provisioning(app, id, stop_after, false).await
}

async fn run_provisioning(
    app: &App,
    id: i64,
    stop_after: Option<Step>,
    wait: bool,
) -> Result<Outcome> {
    let Some(lock) = Lock::get(app, id, wait).await? else {
        return Ok(Outcome::Busy);
    };
    let result = provision_locked(app, id, stop_after).await;
    lock.release().await;
    if let Err(e) = &result {
        app.metrics.provisioning_failures.inc();
        tracing::warn!(request = id, error = %e, "provisioning failed; the scheduler retries");
    }
    result
}

async fn provision_locked(app: &App, id: i64, stop_after: Option<Step>) -> Result<Outcome> {
    let control = app.control.get().await?;
    let Some(req) = model::request(&**control, id, false).await? else {
        return Ok(Outcome::NotDue);
    };
    let now = Utc::now();
    if !req.status.allows(Action::Activate) || req.starts_at.is_some_and(|s| s > now) {
        return Ok(Outcome::NotDue);
    }
    let expires = expires_at(&req);
    if expires <= now {
        // Nothing may be half-made from an earlier attempt: ending takes it all away (the
        // scheduler's ending pass, once this lock is released).
        drop(control);
        begin_end(app, id, "expired before it started", SYSTEM).await?;
        return Ok(Outcome::NotDue);
    }
    let target = app.target.get().await?;
    // The grant's own login role (see grants::grant_role).
    let db_user = grants::request_role(&req.email, id);
    grants::check_owner(&control, &db_user, &req.email).await?;
    let log = |kind: &'static str, grant: Option<i64>, data: serde_json::Value| {
        let control = &control;
        async move { model::record(&***control, Some(id), grant, SYSTEM, kind, data).await }
    };
    for step in STEPS {
        match step {
            Step::Role => {
                let created = grants::ensure_role(&target, &db_user).await?;
                log(
                    "provision.role",
                    None,
                    json!({"db_user": db_user, "created": created}),
                )
                .await?;
            }
            Step::Password if app.settings.people.login == grants::PeopleLogin::RdsIam => {
                // No password and no secret: RDS takes only IAM tokens for the role.
                let added = grants::use_iam(&target, &db_user).await?;
                log(
                    "provision.password",
                    None,
                    json!({"rds_iam": true, "new": added}),
                )
                .await?;
            }
            Step::Password => {
                // A person with another active grant keeps the password the proxy uses
                // for their open sessions' reconnects; otherwise a new one.
                let others = grants::active_roles(&control, &db_user).await?;
                let stored = app
                    .secrets
                    .db_credentials(&grants::person_secret(&db_user))
                    .await
                    .is_ok();
                let rotated = others.is_empty() || !stored;
                if rotated {
                    let layout = grants::SecretLayout {
                        host: app.settings.target.host.clone(),
                        port: app.settings.target.port,
                        master: app.settings.target.secret.clone(),
                    };
                    grants::set_password(&target, &app.secrets, &layout, &db_user, &req.database)
                        .await?;
                }
                let rotation = &app.settings.rotation;
                if !rotation.function_arn.is_empty() {
                    // Idempotent: already on with this function, one DescribeSecret and nothing else.
                    app.secrets
                        .enable_rotation(
                            &grants::person_secret(&db_user),
                            &rotation.function_arn,
                            rotation.days,
                        )
                        .await?;
                }
                log(
                    "provision.password",
                    None,
                    json!({"secret": grants::person_secret(&db_user), "new": rotated}),
                )
                .await?;
            }
            Step::Membership => {
                let added = grants::grant_membership(&target, &db_user, &req.role).await?;
                log(
                    "provision.membership",
                    None,
                    json!({"role": req.role, "added": added}),
                )
                .await?;
            }
            Step::Grant => {
                let approved_by: Vec<String> = model::decisions(&**control, id)
                    .await?
                    .into_iter()
                    .filter(|d| d.decision == Decision::Approve)
                    .map(|d| d.approver)
                    .collect();
                let grant = grants::record(
                    &control,
                    &grants::NewGrant {
                        email: req.email.clone(),
                        database: req.database.clone(),
                        role: req.role.clone(),
                        expires_at: expires,
                        created_by: "approvals".into(),
                        policy: request_policy(app, &req)?,
                    },
                    &db_user,
                    Some(&grants::Approval {
                        request_id: id,
                        approved_by,
                        issuer: app.settings.oidc.issuer.clone(),
                        subject: req.subject.clone(),
                    }),
                )
                .await?;
                control
                    .execute(
                        "UPDATE access_requests SET grant_id = $2 WHERE id = $1",
                        &[&id, &grant.id],
                    )
                    .await?;
                log(
                    "provision.grant",
                    Some(grant.id),
                    json!({"grant_id": grant.id, "expires_at": grant.expires_at}),
                )
                .await?;
            }
            Step::Login => {
                let enabled = grants::enable_login(&target, &db_user).await?;
                log("provision.login", None, json!({"enabled": enabled})).await?;
            }
            Step::Active => {
                let grant_id: Option<i64> = control
                    .query_one("SELECT grant_id FROM access_requests WHERE id = $1", &[&id])
                    .await?
                    .get(0);
                if model::transition(&**control, id, req.status, Action::Activate).await? {
                    log(
                        "access.active",
                        grant_id,
                        json!({"email": req.email, "database": req.database,
                               "role": req.role, "expires_at": expires}),
                    )
                    .await?;
                }
            }
        }
        if stop_after == Some(step) {
            return Ok(Outcome::Interrupted);
        }
    }
    Ok(Outcome::Done)
}

/// With `people.login = "rds-iam"`, at start-up: people's roles made earlier with a password
/// become RDS IAM logins too (`rds_iam`, no password), so a switch of the setting leaves no
/// password behind, and their secrets (which no longer log in) are deleted. Returns how many
/// changed. A role the provisioning functions refuse is reported and left (it cannot be
/// given a login or a password either).
pub async fn switch_to_iam(
    control: &db::Pool,
    target: &db::Pool,
    secrets: &secret_store::SecretStore,
) -> Result<usize> {
    let control = control.get().await?;
    let target = target.get().await?;
    let roles: Vec<String> = target
        .query(
            "SELECT rolname::text FROM pg_roles \
             WHERE rolname ~ '^p_[a-z0-9_]*_[0-9a-f]{16}$' \
               AND NOT pg_has_role(oid, 'rds_iam', 'MEMBER') ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut switched = 0;
    for db_user in roles {
        match grants::use_iam(&target, &db_user).await {
            Ok(_) => {
                let secret = grants::person_secret(&db_user);
                secrets
                    .delete(&secret)
                    .await
                    .map_err(|e| Error::Internal(e.into()))?;
                model::record(
                    &**control,
                    None,
                    None,
                    SYSTEM,
                    "provision.password",
                    json!({"db_user": db_user, "rds_iam": true, "new": true, "secret_deleted": secret}),
                )
                .await?;
                switched += 1;
            }
            Err(e) => tracing::warn!(%db_user, error = %e, "could not switch the role to RDS IAM"),
        }
    }
    Ok(switched)
}

/// Moves an `active` or `approved` request to `ending`, for `reason`, recording it.
/// Returns false when the request is not in such a state (someone else ended it first).
pub async fn begin_end(app: &App, id: i64, reason: &str, by: &str) -> Result<bool> {
    let mut control = app.control.get().await?;
    let tx = control.transaction().await?;
    let Some(req) = model::request(&tx, id, true).await? else {
        return Err(Error::not_found_request(id));
    };
    if !req.status.allows(Action::End)
        || !model::transition(&tx, id, req.status, Action::End).await?
    {
        return Ok(false);
    }
    tx.execute(
        "UPDATE access_requests SET end_reason = $2, ended_by = $3 WHERE id = $1",
        &[&id, &reason, &by],
    )
    .await?;
    model::record(
        &tx,
        Some(id),
        req.grant_id,
        by,
        "access.ending",
        json!({"email": req.email, "database": req.database, "role": req.role, "reason": reason}),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Takes away what an `ending` request's grant gave, then marks it `ended`; waits a few
/// seconds for the lock if another task holds it.
pub async fn finish_end(app: &App, id: i64) -> Result<Outcome> {
    run_end(app, id, true).await
}

/// Finishes ending if nobody else is at it (the scheduler).
pub async fn finish_end_if_free(app: &App, id: i64) -> Result<Outcome> {
    run_end(app, id, false).await
}

async fn run_end(app: &App, id: i64, wait: bool) -> Result<Outcome> {
    let Some(lock) = Lock::get(app, id, wait).await? else {
        return Ok(Outcome::Busy);
    };
    let result = finish_end_locked(app, id).await;
    lock.release().await;
    if let Err(e) = &result {
        app.metrics.provisioning_failures.inc();
        tracing::warn!(request = id, error = %e, "ending access failed; the scheduler retries");
    }
    result
}

async fn finish_end_locked(app: &App, id: i64) -> Result<Outcome> {
    let control = app.control.get().await?;
    let Some(req) = model::request(&**control, id, false).await? else {
        return Ok(Outcome::NotDue);
    };
    if !req.status.allows(Action::Finish) {
        return Ok(Outcome::NotDue);
    }
    let target = app.target.get().await?;
    // The grant's login role as recorded (grants made before roles were per grant have the
    // person's); a request that never got its grant row may still have its role half-made.
    let db_user = match req.grant_id {
        Some(grant_id) => grants::get(&control, grant_id).await?.db_user,
        None => grants::request_role(&req.email, id),
    };
    let reason = req.end_reason.clone().unwrap_or_default();
    let by = req.ended_by.clone().unwrap_or_else(|| SYSTEM.into());
    let log = |kind: &'static str, data: serde_json::Value| {
        let control = &control;
        async move { model::record(&***control, Some(id), req.grant_id, SYSTEM, kind, data).await }
    };
    if let Some(grant_id) = req.grant_id {
        let grant = grants::get(&control, grant_id).await?;
        if grant.revoked_at.is_none() && grant.expires_at > Utc::now() {
            match grants::mark_revoked(&control, grant_id, &by, &reason).await {
                Ok(_) | Err(grants::GrantError::AlreadyRevoked(_)) => {}
                Err(e) => return Err(e.into()),
            }
            log("access.grant_revoked", json!({"grant_id": grant_id})).await?;
        }
    }
    let done = grants::reconcile(&control, &target, &db_user).await?;
    log(
        "access.membership_removed",
        json!({
            "roles": done.revoked,
            "other_active_grants": done.active_left,
            "sessions_terminated": done.terminated,
        }),
    )
    .await?;
    if done.login_removed {
        log("access.login_removed", json!({"db_user": db_user})).await?;
    }
    if done.active_left == 0 {
        let ended = grants::terminate_sessions(&target, &db_user).await?;
        log("access.sessions_terminated", json!({"count": ended})).await?;
        app.secrets
            .delete(&grants::person_secret(&db_user))
            .await
            .map_err(|e| Error::Internal(e.into()))?;
        log(
            "access.secret_deleted",
            json!({"secret": grants::person_secret(&db_user)}),
        )
        .await?;
    }
    model::transition(&**control, id, req.status, Action::Finish).await?;
    log("access.ended", json!({"reason": reason})).await?;
    if reason == "expired" {
        app.metrics.expiries.inc();
    }
    Ok(Outcome::Done)
}

/// The session controls the grant carries: the request's snapshot, taken when it was made
/// (what the approvers saw). A request made before snapshots were recorded gets its level's
/// controls as configured now; a level taken out of the catalogue then gives no grant: its
/// controls are unknown, so access is not made.
fn request_policy(app: &App, req: &Request) -> Result<grants::SessionPolicy> {
    if let Some(policy) = &req.policy {
        return Ok(policy.clone());
    }
    app.settings
        .level(&req.database, &req.level)
        .map(|l| l.policy.clone())
        .ok_or_else(|| {
            Error::Conflict(format!(
                "{}/{} is no longer in the catalogue; its session controls are unknown",
                req.database, req.level
            ))
        })
}
