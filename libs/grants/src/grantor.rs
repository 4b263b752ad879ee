//! Who grants a person's membership, on the admin's plain-SQL path (a database without the
//! provisioning functions, e.g. `proxy grant add --database rates`).
//!
//! PostgreSQL 16 and later record a membership's grantor, and a REVOKE without `GRANTED BY`
//! takes away only the revoker's own grant (a superuser's is the bootstrap superuser's),
//! with a warning for anyone else's; CREATEROLE acts only on roles one has ADMIN OPTION on.
//! Roles are server-wide, so a grant made on one path is ended on the other: the approvals
//! app and `proxy grant revoke` go through the functions (as `dbgw_provisioner`), an admin
//! on `rates` does not. So on 16+, when the provisioner exists, this path makes the
//! provisioner the grantor of the membership and gives it ADMIN OPTION on the roles it
//! creates, and revokes a membership from every grantor. On 15 grantors are not checked:
//! plain GRANT and REVOKE.

use postgres_protocol::escape::escape_identifier;
use tokio_postgres::Client;

use crate::GrantError;

const PROVISIONER: &str = "dbgw_provisioner";

/// Whether the server checks grantors (16+) and has the provisioner (db/control/0006).
async fn provisioner_grants(target: &Client) -> Result<bool, GrantError> {
    Ok(target
        .query_one(
            "SELECT current_setting('server_version_num')::int >= 160000 \
             AND EXISTS (SELECT FROM pg_roles WHERE rolname = $1)",
            &[&PROVISIONER],
        )
        .await?
        .get(0))
}

/// After the admin created `db_user`: on 16+ the provisioner may alter it (NOLOGIN, a new
/// password) as it may the roles it creates itself (ADMIN only, no SET or INHERIT).
pub(crate) async fn after_create(target: &Client, db_user: &str) -> Result<(), GrantError> {
    if provisioner_grants(target).await? {
        target
            .batch_execute(&format!(
                "GRANT {} TO {PROVISIONER} WITH ADMIN OPTION, INHERIT FALSE, SET FALSE",
                escape_identifier(db_user)
            ))
            .await?;
    }
    Ok(())
}

/// `GRANT role TO db_user`, on 16+ as the provisioner when it holds `role` with ADMIN
/// OPTION (a catalogue role), so that its REVOKE can end it.
pub(crate) async fn grant(target: &Client, db_user: &str, role: &str) -> Result<(), GrantError> {
    let mut sql = format!(
        "GRANT {} TO {}",
        escape_identifier(role),
        escape_identifier(db_user)
    );
    if provisioner_grants(target).await? {
        let provisioner_admin: bool = target
            .query_one(
                "SELECT EXISTS (SELECT FROM pg_auth_members m \
                 JOIN pg_roles p ON p.oid = m.member JOIN pg_roles g ON g.oid = m.roleid \
                 WHERE p.rolname = $1 AND g.rolname = $2 AND m.admin_option)",
                &[&PROVISIONER, &role],
            )
            .await?
            .get(0);
        if provisioner_admin {
            sql.push_str(&format!(" GRANTED BY {PROVISIONER}"));
        }
    }
    target.batch_execute(&sql).await?;
    Ok(())
}

/// `REVOKE role FROM db_user`, on 16+ once per grantor: whoever granted it.
pub(crate) async fn revoke(target: &Client, db_user: &str, role: &str) -> Result<(), GrantError> {
    let plain = format!(
        "REVOKE {} FROM {}",
        escape_identifier(role),
        escape_identifier(db_user)
    );
    if !provisioner_grants(target).await? {
        target.batch_execute(&plain).await?;
        return Ok(());
    }
    let grantors = target
        .query(
            "SELECT DISTINCT gr.rolname::text FROM pg_auth_members m \
             JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member \
             JOIN pg_roles gr ON gr.oid = m.grantor WHERE u.rolname = $1 AND g.rolname = $2",
            &[&db_user, &role],
        )
        .await?;
    for row in grantors {
        let grantor: String = row.get(0);
        target
            .batch_execute(&format!(
                "{plain} GRANTED BY {}",
                escape_identifier(&grantor)
            ))
            .await?;
    }
    Ok(())
}
