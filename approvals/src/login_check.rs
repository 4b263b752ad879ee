//! At start-up: the app's login on the target server must not be able to exceed its job
//! (issue 17, item 4). It changes roles only through the `dbgw_provision` functions
//! (db/provisioner.sql); a login that could grant itself a role (a superuser, CREATEROLE,
//! which on PostgreSQL 15 and older covers every predefined role, any ADMIN OPTION, or
//! membership in a predefined role, a role with administrative attributes or the
//! provisioner) is refused, and so is a server without the functions or without the
//! `dbgw_people` marker, and, with `people.login = "rds-iam"`, one without `rds_iam`.

use anyhow::{bail, Context};

use crate::db;
use crate::settings::Settings;

/// The functions the app calls.
const FUNCTIONS: &[&str] = &[
    "dbgw_provision.grantable(text)",
    "dbgw_provision.ensure_role(text)",
    "dbgw_provision.set_password(text,text)",
    "dbgw_provision.use_iam(text)",
    "dbgw_provision.grant_role(text,text)",
    "dbgw_provision.revoke_role(text,text)",
    "dbgw_provision.set_login(text,boolean)",
    "dbgw_provision.terminate_sessions(text)",
];

/// Refuses a login that could exceed its job, a server without the provisioning functions,
/// and a catalogue role that is not a grantable group role.
pub async fn check(settings: &Settings, target: &db::Pool) -> anyhow::Result<()> {
    let client = target
        .get()
        .await
        .context("connecting to the target database server")?;
    let row = client
        .query_one(
            "SELECT rolsuper, rolcreaterole, current_user::text FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?;
    let (superuser, createrole, user): (bool, bool, String) = (row.get(0), row.get(1), row.get(2));
    let fix = "it needs a dedicated login that holds nothing but EXECUTE on the dbgw_provision \
               functions (see docs/approvals.md)";
    if superuser {
        bail!("the database login `{user}` is a superuser; {fix}");
    }
    if createrole {
        bail!(
            "the database login `{user}` has CREATEROLE: on PostgreSQL 15 and older it could \
             grant itself any predefined role (pg_execute_server_program runs OS commands); \
             `ALTER ROLE {user} NOCREATEROLE` ({fix})"
        );
    }
    let admin: Vec<String> = client
        .query(
            "SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid \
             WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = current_user) \
             AND m.admin_option ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !admin.is_empty() {
        bail!(
            "the database login `{user}` holds ADMIN OPTION on {}: it could grant them, to \
             itself too; {fix}",
            admin.join(", ")
        );
    }
    let powerful: Vec<String> = client
        .query(
            "SELECT p.rolname::text FROM pg_roles p \
             WHERE p.rolname <> current_user \
               AND ((p.rolname ~ '^pg_' AND p.rolname <> 'pg_database_owner') \
                    OR p.rolsuper OR p.rolcreaterole OR p.rolcreatedb OR p.rolreplication \
                    OR p.rolbypassrls OR p.rolname = 'dbgw_provisioner') \
               AND pg_has_role(current_user, p.oid, 'MEMBER') ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !powerful.is_empty() {
        bail!(
            "the database login `{user}` is a member of {}; {fix}",
            powerful.join(", ")
        );
    }
    for function in FUNCTIONS {
        let usable: bool = client
            .query_one(
                "SELECT to_regprocedure($1) IS NOT NULL \
                 AND has_function_privilege(to_regprocedure($1), 'EXECUTE')",
                &[function],
            )
            .await?
            .get(0);
        if !usable {
            bail!(
                "the target database has no {function} that `{user}` may run: install the \
                 provisioning functions (db/provisioner.sql; `dbgw-db setup` does it)"
            );
        }
    }
    // Outside AWS, pg_hba admits people's roles only with the proxy's client certificate by
    // this marker (db/control/0011_people.sql): without it people's passwords would log in
    // from anywhere the server listens.
    let marker: bool = client
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dbgw_people')",
            &[],
        )
        .await?
        .get(0);
    if !marker {
        bail!(
            "the target server has no role dbgw_people, the marker of people's roles that \
             pg_hba and the provisioning functions rely on: run `dbgw-db setup` on it"
        );
    }
    if settings.people.login == grants::PeopleLogin::RdsIam {
        let rds: bool = client
            .query_one(
                "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rds_iam')",
                &[],
            )
            .await?
            .get(0);
        if !rds {
            bail!(
                "people.login = \"rds-iam\", but the target server has no role rds_iam: RDS IAM \
                 authentication exists on RDS only (elsewhere use \"password\" with pg_hba's \
                 client certificates, docs/operations.md)"
            );
        }
    }
    for level in &settings.catalogue {
        let context = || format!("catalogue {}/{}", level.database, level.level);
        grants::check_group_role(&client, &level.role)
            .await
            .with_context(context)?;
        let grantable: bool = client
            .query_one("SELECT dbgw_provision.grantable($1)", &[&level.role])
            .await?
            .get(0);
        if !grantable {
            bail!(
                "{}: role `{}` is not grantable: as an admin, `GRANT dbgw_grantable TO {}` \
                 (docs/approvals.md)",
                context(),
                level.role,
                level.role
            );
        }
    }
    Ok(())
}
