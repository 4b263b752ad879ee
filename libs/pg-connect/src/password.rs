//! Setting a role's password without the password reaching the server: the one way the
//! database setup, the local clusters and the rotation function do it.

use postgres_protocol::escape::escape_identifier;
use tokio_postgres::Client;

/// The statement that set a password failed. Never carries the password.
#[derive(Debug, thiserror::Error)]
#[error("setting the password of role {role}: {source}")]
pub struct SetPasswordError {
    pub role: String,
    #[source]
    pub source: tokio_postgres::Error,
}

/// Sets a role's password as a SCRAM-SHA-256 verifier computed here, so the password itself
/// never crosses the wire nor reaches a server log. A person's role (`p_..._<16 hex>`) is
/// changed through `dbgw_provision.set_password` when the connected database has it: the
/// approvals app's login, the master of people's secrets, may change roles only that way.
pub async fn set_password(
    client: &Client,
    role: &str,
    password: &str,
) -> Result<(), SetPasswordError> {
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    let failed = |source| SetPasswordError {
        role: role.to_string(),
        source,
    };
    let through_interface: bool = client
        .query_one(
            "SELECT $1 ~ '^p_[a-z0-9_]*_[0-9a-f]{16}$' \
             AND to_regprocedure('dbgw_provision.set_password(text,text)') IS NOT NULL",
            &[&role],
        )
        .await
        .map_err(failed)?
        .get(0);
    if through_interface {
        client
            .execute(
                "SELECT dbgw_provision.set_password($1, $2)",
                &[&role, &verifier],
            )
            .await
            .map(drop)
            .map_err(failed)
    } else {
        client
            .batch_execute(&format!(
                "ALTER ROLE {} PASSWORD '{verifier}'",
                escape_identifier(role)
            ))
            .await
            .map_err(failed)
    }
}
