//! A person the company's identity provider deactivated or deleted (SCIM, see
//! [`crate::scim`]) loses everything at once, not at each grant's end: pending requests are
//! withdrawn, approved and active access ends the way a revocation does (grant row revoked,
//! so the proxies close its sessions; memberships and LOGIN taken away; server sessions
//! terminated; the secret deleted), and operators' grants are revoked the same way. Each
//! step is an event of the hash-chained history.
//!
//! Until the provider sets them active again they can neither ask for access nor have a
//! request approved, whatever token they still hold. Reactivation gives nothing back.

use serde_json::json;
use tokio_postgres::GenericClient;

use crate::error::{Error, Result};
use crate::model;
use crate::provision;
use crate::status::{Action, Status};
use crate::App;

/// Why, in the history and on the request's page.
pub const REASON: &str = "deprovisioned at the identity provider";
/// Who acts, in the history: the identity provider, through SCIM.
pub const ACTOR: &str = "scim";

/// Refuses when the provider has deactivated `email`. The row is locked for share: a
/// deactivation (which updates it) waits for this transaction, and its sweep then sees
/// what this transaction made.
pub async fn refuse_if_deprovisioned(
    db: &impl GenericClient,
    email: &str,
    what: &str,
) -> Result<()> {
    let inactive = db
        .query_opt(
            "SELECT NOT active FROM scim_users WHERE user_name = $1 FOR SHARE",
            &[&grants::normalize_email(email)],
        )
        .await?
        .is_some_and(|r| r.get::<_, bool>(0));
    if inactive {
        return Err(Error::Forbidden(format!(
            "{email} was deprovisioned at the identity provider: {what} until the provider \
             makes the account active again."
        )));
    }
    Ok(())
}

/// What [`end_all`] did.
#[derive(Debug, Default)]
pub struct Swept {
    pub withdrawn: Vec<i64>,
    /// Requests whose access ended (or, on error, is left `ending` for the scheduler).
    pub ended: Vec<i64>,
    pub operator_grants: Vec<i64>,
}

/// Ends everything `email` has or asked for. Idempotent: run at every push that leaves
/// the person inactive, it finds nothing the second time.
pub async fn end_all(app: &App, email: &str) -> Result<Swept> {
    let email = grants::normalize_email(email);
    let mut swept = Swept::default();
    let control = app.control.get().await?;
    let open: Vec<(i64, Status)> = control
        .query(
            "SELECT id, status FROM access_requests WHERE lower(btrim(email)) = $1 \
             AND status = ANY($2) ORDER BY id",
            &[
                &email,
                &[
                    Status::Pending,
                    Status::Approved,
                    Status::Active,
                    Status::Ending,
                ]
                .map(Status::as_str)
                .to_vec(),
            ],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    drop(control);
    for (id, status) in open {
        if status == Status::Pending {
            if withdraw(app, id).await? {
                swept.withdrawn.push(id);
            }
            continue;
        }
        if status != Status::Ending {
            provision::begin_end(app, id, REASON, ACTOR).await?;
        }
        if let Err(e) = provision::finish_end(app, id).await {
            tracing::warn!(request = id, error = %e, "ending deprovisioned access will be retried");
        }
        swept.ended.push(id);
    }
    swept.operator_grants = revoke_operator_grants(app, &email).await?;
    Ok(swept)
}

/// Withdraws a pending request for the provider; false if it was decided meanwhile.
async fn withdraw(app: &App, id: i64) -> Result<bool> {
    let mut control = app.control.get().await?;
    let tx = control.transaction().await?;
    match model::request(&tx, id, true).await? {
        Some(req) if req.status == Status::Pending => {}
        _ => return Ok(false),
    }
    tx.execute(
        "UPDATE access_requests SET end_reason = $2, ended_by = $3 WHERE id = $1",
        &[&id, &REASON, &ACTOR],
    )
    .await?;
    model::close_decision(
        &tx,
        id,
        Action::Withdraw,
        ACTOR,
        "request.withdrawn",
        json!({"reason": REASON}),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Operators' grants (`proxy grant add`, no request): revoked and taken away like a
/// request's.
async fn revoke_operator_grants(app: &App, email: &str) -> Result<Vec<i64>> {
    let control = app.control.get().await?;
    let ids: Vec<i64> = control
        .query(
            "SELECT id FROM grants WHERE email = $1 AND request_id IS NULL \
             AND revoked_at IS NULL AND expires_at > now() ORDER BY id",
            &[&email],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if ids.is_empty() {
        return Ok(ids);
    }
    let target = app.target.get().await?;
    for &id in &ids {
        let grant = match grants::revoke(&control, &target, id, ACTOR, REASON).await {
            Ok(g) => g,
            Err(grants::GrantError::AlreadyRevoked(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        let left = grants::active_roles(&control, &grant.db_user).await?;
        let mut terminated = 0;
        if left.is_empty() {
            terminated = grants::terminate_sessions(&target, &grant.db_user).await?;
            app.secrets
                .delete(&grants::person_secret(&grant.db_user))
                .await?;
        }
        model::record(
            &**control,
            None,
            Some(id),
            ACTOR,
            "access.grant_revoked",
            json!({"grant_id": id, "email": email, "db_user": grant.db_user,
                   "reason": REASON, "sessions_terminated": terminated}),
        )
        .await?;
    }
    Ok(ids)
}
