//! The app's records in the control plane (`db/control/0002_approvals.sql`): requests,
//! decisions and the append-only event history, and the queries that read them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::{GenericClient, Row};

use crate::error::{Error, Result};
use crate::status::{Action, Decision, Status};

/// Who acts, for the record: a person's email, or `system` for the scheduler.
pub const SYSTEM: &str = "system";

#[derive(Debug, Clone, Serialize)]
pub struct Request {
    pub id: i64,
    pub email: String,
    /// The requester's subject at the identity provider: the grant is theirs alone.
    pub subject: String,
    pub name: String,
    pub database: String,
    pub level: String,
    pub role: String,
    pub approvals_needed: i32,
    pub justification: String,
    pub duration_secs: i64,
    pub starts_at: Option<DateTime<Utc>>,
    pub status: Status,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub grant_id: Option<i64>,
    pub end_reason: Option<String>,
    pub ended_by: Option<String>,
    pub ended_at: Option<DateTime<Utc>>,
    /// When the grant ends (from the grant row, once there is one; an approved extension
    /// moves it).
    pub expires_at: Option<DateTime<Utc>>,
    /// The session controls asked for: the level's when the request was made, copied into
    /// the grant. `None` for requests made before they were recorded (the level's apply).
    pub policy: Option<grants::SessionPolicy>,
}

const REQUEST_COLUMNS: &str = "r.id, r.email, r.subject, r.name, r.database, r.level, r.role, \
    r.approvals_needed, r.justification, r.duration_secs, r.starts_at, r.status, r.created_at, \
    r.decided_at, r.grant_id, r.end_reason, r.ended_by, r.ended_at, g.expires_at, r.policy";

const REQUEST_FROM: &str = "access_requests r LEFT JOIN grants g ON g.id = r.grant_id";

impl Request {
    fn from_row(r: &Row) -> Request {
        Request {
            id: r.get("id"),
            email: r.get("email"),
            subject: r.get("subject"),
            name: r.get("name"),
            database: r.get("database"),
            level: r.get("level"),
            role: r.get("role"),
            approvals_needed: r.get("approvals_needed"),
            justification: r.get("justification"),
            duration_secs: r.get("duration_secs"),
            starts_at: r.get("starts_at"),
            status: r.get("status"),
            created_at: r.get("created_at"),
            decided_at: r.get("decided_at"),
            grant_id: r.get("grant_id"),
            end_reason: r.get("end_reason"),
            ended_by: r.get("ended_by"),
            ended_at: r.get("ended_at"),
            expires_at: r.get("expires_at"),
            // A snapshot this version cannot read is treated as absent (the level's apply).
            policy: r
                .get::<_, Option<serde_json::Value>>("policy")
                .and_then(|v| serde_json::from_value(v).ok()),
        }
    }

    /// "2 hours", "3 days", "90 minutes".
    pub fn duration_text(&self) -> String {
        duration_text(self.duration_secs)
    }
}

pub fn duration_text(secs: i64) -> String {
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    match secs {
        s if s % 86_400 == 0 => plural(s / 86_400, "day"),
        s if s % 3_600 == 0 => plural(s / 3_600, "hour"),
        s if s % 60 == 0 => plural(s / 60, "minute"),
        s => plural(s, "second"),
    }
}

/// One request, locked for update when `lock` (inside a transaction).
pub async fn request(db: &impl GenericClient, id: i64, lock: bool) -> Result<Option<Request>> {
    let sql = if lock {
        format!("SELECT {REQUEST_COLUMNS} FROM {REQUEST_FROM} WHERE r.id = $1 FOR UPDATE OF r")
    } else {
        format!("SELECT {REQUEST_COLUMNS} FROM {REQUEST_FROM} WHERE r.id = $1")
    };
    Ok(db
        .query_opt(&sql, &[&id])
        .await?
        .map(|r| Request::from_row(&r)))
}

/// Requests in any of `statuses`, newest first.
pub async fn requests_with_status(
    db: &impl GenericClient,
    statuses: &[Status],
) -> Result<Vec<Request>> {
    let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
    requests_where(db, "r.status = ANY($1)", &[&names]).await
}

/// Requests matching a condition on `r` (trusted SQL from this module's callers only).
pub async fn requests_where(
    db: &impl GenericClient,
    condition: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Request>> {
    Ok(db
        .query(
            &format!(
                "SELECT {REQUEST_COLUMNS} FROM {REQUEST_FROM} WHERE {condition} ORDER BY r.id DESC LIMIT 500"
            ),
            params,
        )
        .await?
        .iter()
        .map(Request::from_row)
        .collect())
}

/// One approver's decision on a request.
#[derive(Debug, Clone, Serialize)]
pub struct ApproverDecision {
    pub approver: String,
    pub decision: Decision,
    pub comment: String,
    pub decided_at: DateTime<Utc>,
}

pub async fn decisions(db: &impl GenericClient, request_id: i64) -> Result<Vec<ApproverDecision>> {
    Ok(db
        .query(
            "SELECT approver, decision, comment, decided_at FROM decisions \
             WHERE request_id = $1 ORDER BY id",
            &[&request_id],
        )
        .await?
        .iter()
        .map(|r| ApproverDecision {
            approver: r.get(0),
            decision: r.get(1),
            comment: r.get(2),
            decided_at: r.get(3),
        })
        .collect())
}

/// One entry of the history.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub request_id: Option<i64>,
    pub grant_id: Option<i64>,
    pub actor: String,
    pub kind: String,
    pub data: serde_json::Value,
    /// Its link in the hash chain (hex; `approvals events verify`).
    pub hash: Option<String>,
}

impl Event {
    fn from_row(r: &Row) -> Event {
        Event {
            id: r.get("id"),
            at: r.get("at"),
            request_id: r.get("request_id"),
            grant_id: r.get("grant_id"),
            actor: r.get("actor"),
            kind: r.get("kind"),
            data: r.get("data"),
            hash: r.get::<_, Option<Vec<u8>>>("hash").map(hex::encode),
        }
    }

    /// The data as compact JSON, for pages.
    pub fn data_text(&self) -> String {
        if self.data.as_object().is_some_and(|o| o.is_empty()) {
            String::new()
        } else {
            self.data.to_string()
        }
    }
}

/// Kinds whose events are also sent to the webhook.
const NOTIFIED: &[&str] = &[
    "request.created",
    "request.approved",
    "request.denied",
    "request.withdrawn",
    "decision.approve",
    "access.active",
    "access.ending",
    "extension.requested",
    "extension.withdrawn",
    "access.extended",
];

/// Appends an event (and, for the kinds people are told about, a webhook message in the
/// same transaction: the notification is sent later and never holds anything up).
pub async fn record(
    db: &impl GenericClient,
    request_id: Option<i64>,
    grant_id: Option<i64>,
    actor: &str,
    kind: &str,
    data: serde_json::Value,
) -> Result<i64> {
    let id: i64 = db
        .query_one(
            "INSERT INTO events (request_id, grant_id, actor, kind, data) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[&request_id, &grant_id, &actor, &kind, &data],
        )
        .await?
        .get(0);
    if NOTIFIED.contains(&kind) {
        let payload = serde_json::json!({
            "text": crate::webhook::text(request_id, actor, kind, &data),
            "event": {"id": id, "request_id": request_id, "grant_id": grant_id,
                      "actor": actor, "kind": kind, "data": data},
        });
        db.execute(
            "INSERT INTO webhook_outbox (event_id, payload) VALUES ($1, $2)",
            &[&id, &payload],
        )
        .await?;
    }
    Ok(id)
}

/// Moves request `id`, read in state `from`, by `action`: the guarded `UPDATE` (it changes
/// the row only while it is still in `from`). True when it moved; false when the row was no
/// longer in `from` (another instance moved it first). An action [`Status::transition`]
/// refuses from `from` is a conflict and changes nothing. Leaving `pending` sets
/// `decided_at`, reaching `ended` sets `ended_at`.
pub async fn transition(
    db: &impl GenericClient,
    id: i64,
    from: Status,
    action: Action,
) -> Result<bool> {
    let to = from
        .transition(action)
        .map_err(|refused| Error::Conflict(format!("Request {id}: {refused}.")))?;
    let sql = match (from, to) {
        (Status::Pending, _) => {
            "UPDATE access_requests SET status = $3, decided_at = now() \
             WHERE id = $1 AND status = $2"
        }
        (_, Status::Ended) => {
            "UPDATE access_requests SET status = $3, ended_at = now() \
             WHERE id = $1 AND status = $2"
        }
        _ => "UPDATE access_requests SET status = $3 WHERE id = $1 AND status = $2",
    };
    let changed = db
        .execute(sql, &[&id, &from.as_str(), &to.as_str()])
        .await?;
    Ok(changed == 1)
}

/// Ends the decision phase of a pending request (`action`: the final approval, a denial or
/// a withdrawal) and records why. The caller holds the row's lock.
pub async fn close_decision(
    db: &impl GenericClient,
    id: i64,
    action: Action,
    actor: &str,
    kind: &str,
    data: serde_json::Value,
) -> Result<()> {
    if !transition(db, id, Status::Pending, action).await? {
        return Err(Error::Conflict(format!(
            "Request {id} changed meanwhile; reload the page."
        )));
    }
    record(db, Some(id), None, actor, kind, data).await?;
    Ok(())
}

/// The history of one request, oldest first.
pub async fn events_of(db: &impl GenericClient, request_id: i64) -> Result<Vec<Event>> {
    Ok(db
        .query(
            "SELECT id, at, request_id, grant_id, actor, kind, data, hash FROM events \
             WHERE request_id = $1 ORDER BY id",
            &[&request_id],
        )
        .await?
        .iter()
        .map(Event::from_row)
        .collect())
}

/// Events with an id above `after`, oldest first, at most `limit`.
pub async fn events_after(db: &impl GenericClient, after: i64, limit: i64) -> Result<Vec<Event>> {
    Ok(db
        .query(
            "SELECT id, at, request_id, grant_id, actor, kind, data, hash FROM events \
             WHERE id > $1 ORDER BY id LIMIT $2",
            &[&after, &limit],
        )
        .await?
        .iter()
        .map(Event::from_row)
        .collect())
}

/// The newest events, newest first.
pub async fn recent_events(db: &impl GenericClient, limit: i64) -> Result<Vec<Event>> {
    Ok(db
        .query(
            "SELECT id, at, request_id, grant_id, actor, kind, data, hash FROM events \
             ORDER BY id DESC LIMIT $1",
            &[&limit],
        )
        .await?
        .iter()
        .map(Event::from_row)
        .collect())
}

/// Refuses a request the actor may not see, without telling whether it exists.
pub fn visible(req: Option<Request>, id: i64, email: &str, approver: bool) -> Result<Request> {
    match req {
        Some(r) if approver || r.email == email => Ok(r),
        _ => Err(Error::not_found_request(id)),
    }
}
