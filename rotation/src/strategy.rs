//! The two rotation strategies and what they do in PostgreSQL.
//!
//! - Alternating users (the secret names a `masterarn`): versions alternate between `NAME`
//!   and `NAME_clone`. The master login creates the clone on first use, with the original's
//!   role memberships and per-role settings, and sets the new password on the user *not* in
//!   use.
//! - Single user: the user logs in and changes its own password; or, when the secret names a
//!   master and says `"rotation": "single-user"`, the master changes it.
//!
//! Passwords reach PostgreSQL only as SCRAM verifiers (`ALTER ROLE .. PASSWORD 'SCRAM-..'`),
//! so a statement log never holds one. All connections go through [`connect`].

use postgres_protocol::escape::{escape_identifier, escape_literal};
use secret_store::DbCredentials;
use serde_json::Value;
use tokio_postgres::error::SqlState;

use crate::steps::Value_;
use crate::{Error, Settings};

pub const CLONE_SUFFIX: &str = "_clone";

/// The other user of an alternating pair.
pub fn other_user(user: &str) -> String {
    match user.strip_suffix(CLONE_SUFFIX) {
        Some(base) => base.to_string(),
        None => format!("{user}{CLONE_SUFFIX}"),
    }
}

/// Whether a secret rotates with alternating users: it names a master (`masterarn`), as for
/// AWS's multi-user functions, unless it says `"rotation": "single-user"` (a user whose
/// password the master changes, e.g. one that cannot log in to change its own).
pub fn alternating(value: &Value_) -> bool {
    value.get("masterarn").is_some_and(|m| !m.is_null())
        && value.get("rotation").and_then(Value::as_str) != Some("single-user")
}

/// The next version's value: the current one with a new password and, alternating, the
/// other user. Every other field is kept.
pub fn next_value(current: &Value_) -> Result<Value_, Error> {
    let mut next = current.clone();
    let Some(Value::String(user)) = current.get("username") else {
        return Err(Error::Refused("the current version has no username".into()));
    };
    if alternating(current) {
        next.insert("username".into(), Value::String(other_user(user)));
    }
    next.insert(
        "password".into(),
        Value::String(secret_store::generate_password()),
    );
    Ok(next)
}

/// A rotation never moves a login to another server or database.
pub fn same_database(current: &DbCredentials, pending: &DbCredentials) -> Result<(), Error> {
    if (&current.host, current.port, &current.dbname)
        != (&pending.host, pending.port, &pending.dbname)
    {
        return Err(Error::Refused(
            "the pending version names another host, port or database than the current one".into(),
        ));
    }
    let base = |u: &str| u.strip_suffix(CLONE_SUFFIX).unwrap_or(u).to_string();
    if base(&current.username) != base(&pending.username) {
        return Err(Error::Refused(format!(
            "the pending version's user {} is not {} or its clone",
            pending.username, current.username
        )));
    }
    Ok(())
}

/// The one place this crate opens a database connection: verified TLS to the secret's
/// server and database.
pub async fn connect(
    settings: &Settings,
    creds: &DbCredentials,
) -> anyhow::Result<tokio_postgres::Client> {
    let server = dbgw_db::schema::Server {
        host: creds
            .host
            .clone()
            .unwrap_or_else(|| settings.database.default_host.clone()),
        port: creds.port.unwrap_or(5432),
        admin: creds.clone(),
        ca: Some(settings.database.ca_file.clone()),
    };
    let db = creds.dbname.as_deref().unwrap_or("postgres");
    server.connect_as(db, creds).await
}

/// Whether the login refused the password (as opposed to the database being unreachable).
fn wrong_password(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<tokio_postgres::Error>())
        .any(|e| e.code() == Some(&SqlState::INVALID_PASSWORD))
}

/// Whether `creds` log in now.
pub async fn logs_in(settings: &Settings, creds: &DbCredentials) -> bool {
    connect(settings, creds).await.is_ok()
}

/// `testSecret`: the login works and is the user it says.
pub async fn test_login(settings: &Settings, creds: &DbCredentials) -> Result<(), Error> {
    let client = connect(settings, creds).await.map_err(Error::Database)?;
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .map_err(|e| Error::Database(e.into()))?;
    let user: String = row.get(0);
    if user != creds.username {
        return Err(Error::Refused(format!(
            "logged in as {user}, expected {}",
            creds.username
        )));
    }
    Ok(())
}

/// As the master: create the pending user if needed (like the current one; alternating),
/// then set its password.
pub async fn set_alternating(
    settings: &Settings,
    master: &DbCredentials,
    current: &DbCredentials,
    pending: &DbCredentials,
) -> Result<(), Error> {
    let mut master = master.clone();
    // The master connects to the rotated secret's server, in its own database: roles are
    // the server's, and a master such as the approvals app's login may not connect to the
    // database a person's secret names.
    master.host = pending.host.clone().or(master.host);
    master.port = pending.port.or(master.port);
    master.dbname = master.dbname.or(pending.dbname.clone());
    let db = connect(settings, &master).await.map_err(Error::Database)?;
    ensure_like(&db, &current.username, &pending.username)
        .await
        .map_err(Error::Database)?;
    set_password(&db, pending).await
}

/// Creates `user` as a login with the memberships and per-role settings of `model`, unless
/// it exists. Both orders happen: the clone is modelled on the original on the first
/// rotation, and any later call finds it in place.
pub async fn ensure_like(
    db: &tokio_postgres::Client,
    model: &str,
    user: &str,
) -> anyhow::Result<()> {
    let exists = db
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&user])
        .await?
        .is_some();
    if exists {
        return Ok(());
    }
    let memberships: Vec<String> = db
        .query(
            "SELECT r.rolname::text FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid \
             JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = $1",
            &[&model],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let settings: Vec<(Option<String>, String)> = db
        .query(
            "SELECT d.datname::text, unnest(s.setconfig) FROM pg_db_role_setting s \
             JOIN pg_roles u ON u.oid = s.setrole LEFT JOIN pg_database d ON d.oid = s.setdatabase \
             WHERE u.rolname = $1",
            &[&model],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let user_id = escape_identifier(user);
    let mut sql = format!("BEGIN; CREATE ROLE {user_id} LOGIN;");
    for role in &memberships {
        sql.push_str(&format!(" GRANT {} TO {user_id};", escape_identifier(role)));
    }
    for (database, setting) in &settings {
        let Some((name, value)) = setting.split_once('=') else {
            continue;
        };
        let scope = database
            .as_ref()
            .map(|d| format!(" IN DATABASE {}", escape_identifier(d)))
            .unwrap_or_default();
        sql.push_str(&format!(
            " ALTER ROLE {user_id}{scope} SET {} = {};",
            escape_identifier(name),
            escape_literal(value)
        ));
    }
    sql.push_str(" COMMIT;");
    match db.batch_execute(&sql).await {
        Ok(()) => {
            tracing::info!(user, model, ?memberships, "created the alternate user");
            Ok(())
        }
        // Another attempt created it meanwhile.
        Err(e) if e.code() == Some(&SqlState::DUPLICATE_OBJECT) => {
            let _ = db.batch_execute("ROLLBACK").await;
            Ok(())
        }
        Err(e) => {
            let _ = db.batch_execute("ROLLBACK").await;
            Err(e.into())
        }
    }
}

/// Sets the pending login's password (as a SCRAM verifier).
async fn set_password(db: &tokio_postgres::Client, pending: &DbCredentials) -> Result<(), Error> {
    let password = secrecy::ExposeSecret::expose_secret(&pending.password);
    dbgw_db::schema::set_password(db, &pending.username, password)
        .await
        .map_err(Error::Database)
}

/// Single user: log in as the user (current password, else the previous one) and set the
/// pending password.
pub async fn set_single(
    settings: &Settings,
    current: &DbCredentials,
    previous: Option<&DbCredentials>,
    pending: &DbCredentials,
) -> Result<(), Error> {
    let db = match connect(settings, current).await {
        Ok(db) => db,
        Err(e) if wrong_password(&e) => {
            let Some(previous) = previous.filter(|p| p.username == current.username) else {
                return Err(Error::Database(e));
            };
            connect(settings, previous).await.map_err(Error::Database)?
        }
        Err(e) => return Err(Error::Database(e)),
    };
    set_password(&db, pending).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_alternate_and_fields_survive() {
        assert_eq!(other_user("rates_api"), "rates_api_clone");
        assert_eq!(other_user("rates_api_clone"), "rates_api");
        let current: Value_ = serde_json::from_str(
            r#"{"engine":"postgres","host":"h","port":5432,"username":"rates_api",
                "password":"old","dbname":"rates","masterarn":"m","extra":1}"#,
        )
        .unwrap();
        let next = next_value(&current).unwrap();
        assert_eq!(next["username"], "rates_api_clone");
        assert_ne!(next["password"], "old");
        assert_eq!(next["extra"], 1);
        assert_eq!(next["masterarn"], "m");
        let mut single = current.clone();
        single.remove("masterarn");
        assert_eq!(next_value(&single).unwrap()["username"], "rates_api");
        let mut by_master = current.clone();
        by_master.insert("rotation".into(), "single-user".into());
        assert_eq!(next_value(&by_master).unwrap()["username"], "rates_api");
    }
}
