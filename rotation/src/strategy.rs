//! The two rotation strategies and what they do in PostgreSQL.
//!
//! - Alternating users (secrets the configuration lists, `policy.alternating`): versions
//!   alternate between `NAME` and `NAME_clone`. The master login creates the clone on first
//!   use, with the original's role memberships and per-role settings, and sets the new
//!   password on the user *not* in use.
//! - Single user: the user logs in and changes its own password; or, when the secret names a
//!   master, the master changes it (after the user's current password proved itself).
//!
//! Which one, and which master, is [`crate::policy`]'s decision, not the secret's.
//!
//! Passwords reach PostgreSQL only as SCRAM verifiers (`ALTER ROLE .. PASSWORD 'SCRAM-..'`),
//! so a statement log never holds one. All connections go through [`connect`].

use postgres_protocol::escape::{escape_identifier, escape_literal};
use secret_store::DbCredentials;
use serde_json::Value;
use tokio_postgres::error::SqlState;

use crate::value::SecretValue;
use crate::{Error, Settings};

pub const CLONE_SUFFIX: &str = "_clone";

/// The other user of an alternating pair.
pub fn other_user(user: &str) -> String {
    match user.strip_suffix(CLONE_SUFFIX) {
        Some(base) => base.to_string(),
        None => format!("{user}{CLONE_SUFFIX}"),
    }
}

/// The next version's value: the current one with a new password and, alternating, the
/// other user. Every other field is kept. Whether it alternates is the configuration's
/// choice ([`crate::policy`]), never the secret's.
pub fn next_value(current: &SecretValue, alternating: bool) -> Result<SecretValue, Error> {
    let mut next = current.clone();
    let Some(Value::String(user)) = current.get("username") else {
        return Err(Error::Refused("the current version has no username".into()));
    };
    if alternating {
        next.insert("username".into(), Value::String(other_user(user)));
    }
    next.insert(
        "password".into(),
        Value::String(secret_store::generate_password()),
    );
    Ok(next)
}

/// Where a master connects: the server its own secret names, or for a master secret that
/// names none (RDS's), the function's configured one; never the rotated secret's.
pub fn master_server(settings: &Settings, master: &DbCredentials) -> (String, u16) {
    (
        master
            .host
            .clone()
            .unwrap_or_else(|| settings.database.default_host.clone()),
        master.port.unwrap_or(5432),
    )
}

/// `creds` as they log in to `server` (which the secret was checked to name).
pub fn at(server: &(String, u16), creds: &DbCredentials) -> DbCredentials {
    DbCredentials {
        host: Some(server.0.clone()),
        port: Some(server.1),
        ..creds.clone()
    }
}

/// The rotated secret names the master's server, so its master never logs in anywhere else.
pub fn same_server(
    settings: &Settings,
    server: &(String, u16),
    creds: &DbCredentials,
) -> Result<(), Error> {
    let named = (
        creds
            .host
            .clone()
            .unwrap_or_else(|| settings.database.default_host.clone()),
        creds.port.unwrap_or(5432),
    );
    if &named != server {
        return Err(Error::Refused(format!(
            "the secret names server {}:{}, not its master's {}:{}: the master logs in only \
             to its own server",
            named.0, named.1, server.0, server.1
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
    let target = pg_connect::Target {
        host: creds
            .host
            .clone()
            .unwrap_or_else(|| settings.database.default_host.clone()),
        port: creds.port.unwrap_or(5432),
        tls: pg_connect::TlsMode::VerifyFull,
        ca_file: Some(settings.database.ca_file.clone()),
        connect_timeout: std::time::Duration::from_secs(10),
        client_cert: settings.database.client_cert()?,
    };
    let db = creds.dbname.as_deref().unwrap_or("postgres");
    Ok(target.connect(db, creds, APPLICATION_NAME).await?)
}

/// The application name of the function's logins (the one `dbgw-db` gives its own, which
/// they have always had).
const APPLICATION_NAME: &str = "dbgw-db";

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

/// The one statement a rotation's test login runs. `proxy audit crosscheck` recognises the
/// function's test logins by it, together with the log line [`test_login`] writes (the
/// server process that served it) and the function's source address: a login outside the
/// proxy that runs anything else is reported as a bypass. Keep it in step with
/// `proxy::audit::crosscheck::ROTATION_TEST_STATEMENT`.
pub const TEST_STATEMENT: &str = "SELECT current_user::text, pg_backend_pid()";

/// What the log line of a test login says it was for.
#[derive(Debug, Clone, Copy)]
pub struct Purpose<'a> {
    /// The secret rotated.
    pub secret: &'a str,
    /// The rotation's pending version (its token).
    pub version: &'a str,
    /// `testSecret`, or `setSecret` proving the current credentials before a master acts.
    pub step: &'a str,
}

/// A login outside the proxy that runs [`TEST_STATEMENT`] only: it logs in, checks that it
/// is the user it says, and writes one log line, `rotation test login`, with the secret,
/// version, step, user, database, server and the server process (`backend_pid`) that served
/// it, which is what lets the pgaudit crosscheck tell it from a bypass (docs/rotation.md).
/// Used by `testSecret` (the pending login works) and by `setSecret` (the current login
/// proves ownership).
pub async fn test_login(
    settings: &Settings,
    creds: &DbCredentials,
    purpose: Purpose<'_>,
) -> Result<(), Error> {
    let client = connect(settings, creds).await.map_err(Error::Database)?;
    let row = client
        .query_one(TEST_STATEMENT, &[])
        .await
        .map_err(|e| Error::Database(e.into()))?;
    let user: String = row.get(0);
    let backend_pid: i32 = row.get(1);
    tracing::info!(
        secret = purpose.secret,
        version = purpose.version,
        step = purpose.step,
        user = %creds.username,
        database = creds.dbname.as_deref().unwrap_or("postgres"),
        server = %format!(
            "{}:{}",
            creds.host.as_deref().unwrap_or(&settings.database.default_host),
            creds.port.unwrap_or(5432)
        ),
        backend_pid,
        "rotation test login"
    );
    if user != creds.username {
        return Err(Error::Refused(format!(
            "logged in as {user}, expected {}",
            creds.username
        )));
    }
    Ok(())
}

/// Proves that the secret's owner holds it: its current credentials, else the previous
/// ones (when `proves` accepts their user), log in to `server` as that user. Before a master
/// changes anything.
pub async fn prove(
    settings: &Settings,
    server: &(String, u16),
    current: &DbCredentials,
    previous: Option<&DbCredentials>,
    purpose: Purpose<'_>,
) -> Result<(), Error> {
    let current_error = match test_login(settings, &at(server, current), purpose).await {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    if let Some(previous) = previous {
        if test_login(settings, &at(server, previous), purpose)
            .await
            .is_ok()
        {
            return Ok(());
        }
    }
    Err(Error::Refused(format!(
        "the secret's current credentials do not log in to {}:{} as {} ({current_error}), nor \
         do its previous ones: the function changes a password only for whoever holds the \
         current one",
        server.0, server.1, current.username
    )))
}

/// As the master (already placed on its own server), in its own database: alternating, create
/// the pending user if needed (like the current one); then set its password.
pub async fn set_by_master(
    settings: &Settings,
    master: &DbCredentials,
    current: &DbCredentials,
    pending: &DbCredentials,
    alternating: bool,
) -> Result<(), Error> {
    let db = connect(settings, master).await.map_err(Error::Database)?;
    if alternating {
        ensure_like(&db, &current.username, &pending.username)
            .await
            .map_err(Error::Database)?;
    }
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
    pg_connect::set_password(db, &pending.username, password)
        .await
        .map_err(|e| Error::Database(e.into()))
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
        let current: SecretValue = serde_json::from_str(
            r#"{"engine":"postgres","host":"h","port":5432,"username":"rates_api",
                "password":"old","dbname":"rates","masterarn":"m","extra":1}"#,
        )
        .unwrap();
        let next = next_value(&current, true).unwrap();
        assert_eq!(next["username"], "rates_api_clone");
        assert_ne!(next["password"], "old");
        assert_eq!(next["extra"], 1);
        assert_eq!(next["masterarn"], "m");
        // The secret's own fields do not make it alternate.
        assert_eq!(
            next_value(&current, false).unwrap()["username"],
            "rates_api"
        );
    }
}
