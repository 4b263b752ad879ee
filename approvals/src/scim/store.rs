//! People as the provider pushed them (`scim_users`, db/control/0009_scim_users.sql). A
//! deleted row stays (inactive, `deleted_at` set) so that the person stays out; the
//! provider no longer sees it.

use tokio_postgres::error::SqlState;
use tokio_postgres::{GenericClient, Row};

use super::error::ScimError;
use super::resource::{Change, Filter, User};

const COLUMNS: &str = "id, user_name, external_id, active, created_at, updated_at";

fn from_row(r: &Row) -> User {
    User {
        id: r.get("id"),
        user_name: r.get("user_name"),
        external_id: r.get("external_id"),
        active: r.get("active"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    }
}

/// One person the provider can see, locked for update when `lock`.
pub async fn get(db: &impl GenericClient, id: &str, lock: bool) -> Result<User, ScimError> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    db.query_opt(
        &format!("SELECT {COLUMNS} FROM scim_users WHERE id = $1 AND deleted_at IS NULL{lock}"),
        &[&id],
    )
    .await?
    .map(|r| from_row(&r))
    .ok_or_else(|| ScimError::not_found(id))
}

/// A page of the people matching `filter` (1-based `start`), and how many match in all.
pub async fn find(
    db: &impl GenericClient,
    filter: &Filter,
    start: i64,
    count: i64,
) -> Result<(Vec<User>, i64), ScimError> {
    let (condition, value) = match filter {
        Filter::All => ("true", None),
        Filter::UserName(v) => ("user_name = $3", Some(v)),
        Filter::ExternalId(v) => ("external_id = $3", Some(v)),
    };
    let sql = format!(
        "SELECT {COLUMNS}, count(*) OVER () AS total FROM scim_users \
         WHERE deleted_at IS NULL AND ($3::text IS NULL OR {condition}) \
         ORDER BY created_at, id OFFSET $1 LIMIT $2"
    );
    let rows = db.query(&sql, &[&(start - 1), &count, &value]).await?;
    let total = match rows.first() {
        Some(r) => r.get("total"),
        // An empty page beyond the end still says how many there are.
        None if start > 1 => db
            .query_one(
                &format!(
                    "SELECT count(*) FROM scim_users WHERE deleted_at IS NULL \
                     AND ($1::text IS NULL OR {})",
                    condition.replace("$3", "$1")
                ),
                &[&value],
            )
            .await?
            .get(0),
        None => 0,
    };
    Ok((rows.iter().map(from_row).collect(), total))
}

/// Records a person the provider pushes (POST): a new row, or a deleted one brought back
/// (then also whether it was active before: it was not). A person it can already see is a
/// conflict (RFC 7644 3.3).
pub async fn create(
    db: &impl GenericClient,
    change: &Change,
) -> Result<(Option<bool>, User), ScimError> {
    let user_name = change.user_name.clone().unwrap_or_default();
    let external_id = change.external_id.clone().flatten();
    let active = change.active.unwrap_or(true);
    let existing = db
        .query_opt(
            "SELECT deleted_at IS NOT NULL FROM scim_users WHERE user_name = $1 FOR UPDATE",
            &[&user_name],
        )
        .await?;
    let revived = existing.is_some();
    let row = match existing {
        Some(r) if !r.get::<_, bool>(0) => {
            return Err(ScimError::conflict(format!(
                "{user_name} is already provisioned."
            )))
        }
        Some(_) => {
            db.query_one(
                &format!(
                    "UPDATE scim_users SET external_id = $2, active = $3, deleted_at = NULL, \
                     created_at = now(), updated_at = now(), \
                     deactivated_at = CASE WHEN $3 THEN NULL ELSE now() END \
                     WHERE user_name = $1 RETURNING {COLUMNS}"
                ),
                &[&user_name, &external_id, &active],
            )
            .await?
        }
        None => {
            db.query_one(
                &format!(
                    "INSERT INTO scim_users (user_name, external_id, active, deactivated_at) \
                     VALUES ($1, $2, $3, CASE WHEN $3 THEN NULL ELSE now() END) \
                     RETURNING {COLUMNS}"
                ),
                &[&user_name, &external_id, &active],
            )
            .await?
        }
    };
    Ok((revived.then_some(false), from_row(&row)))
}

/// Applies `change` to `before` (read with its lock); a `delete` also marks it deleted
/// (and so inactive).
pub async fn update(
    db: &impl GenericClient,
    before: &User,
    change: &Change,
    delete: bool,
) -> Result<User, ScimError> {
    let user_name = change.user_name.as_ref().unwrap_or(&before.user_name);
    let external_id = match &change.external_id {
        Some(e) => e.clone(),
        None => before.external_id.clone(),
    };
    let active = !delete && change.active.unwrap_or(before.active);
    let row = db
        .query_one(
            &format!(
                "UPDATE scim_users SET user_name = $2, external_id = $3, active = $4, \
                 updated_at = now(), \
                 deleted_at = CASE WHEN $5 THEN now() ELSE deleted_at END, \
                 deactivated_at = CASE WHEN $4 THEN NULL \
                                       ELSE coalesce(deactivated_at, now()) END \
                 WHERE id = $1 RETURNING {COLUMNS}"
            ),
            &[&before.id, user_name, &external_id, &active, &delete],
        )
        .await
        .map_err(|e| {
            if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                ScimError::conflict(format!("{user_name} is another user's userName."))
            } else {
                e.into()
            }
        })?;
    Ok(from_row(&row))
}
