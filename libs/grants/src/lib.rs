//! Access grants: a person (by email) may connect to a database with the privileges of a
//! group role until a given time. A grant gives the person their own login role, named
//! from their email ([`person_role`]), member of the granted group role, with a random
//! password that only the secret store and the proxy ever see.
//!
//! The grants live in the control-plane database (`db/control`). The approvals app writes
//! them, one idempotent step at a time ([`ensure_role`], [`set_password`],
//! [`grant_membership`], [`record`], [`enable_login`]; ending: [`mark_revoked`],
//! [`reconcile`], [`terminate_sessions`]); the proxy checks them at every login ([`check`])
//! and watches them for revocations and expiries ([`no_longer_active`]); operators use
//! `proxy grant ...` ([`add`], [`revoke`], [`list`]).
//!
//! On the server, roles change through the `dbgw_provision` functions (db/provisioner.sql):
//! `SECURITY DEFINER`, owned by the NOLOGIN `dbgw_provisioner`, they act on people's roles
//! only and hand out only roles an admin marked grantable. The approvals app's login holds
//! EXECUTE on them and nothing else. In a database without them (an operator's admin login
//! on another database) the same steps run as plain SQL, with the login's own rights.

use chrono::{DateTime, Utc};
use postgres_protocol::escape::escape_identifier;
use secret_store::{DbCredentials, SecretStore};
use sha2::{Digest, Sha256};
use tokio_postgres::{Client, Row};

mod grantor;
pub mod history;
mod policy;
pub use policy::SessionPolicy;

/// PostgreSQL truncates identifiers longer than this (NAMEDATALEN - 1).
const MAX_IDENTIFIER: usize = 63;

/// One grant as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Grant {
    pub id: i64,
    pub email: String,
    pub database: String,
    pub role: String,
    pub db_user: String,
    pub valid_from: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
    pub revoke_reason: Option<String>,
    /// The approvals app's request this grant was made for (none for `proxy grant add`).
    pub request_id: Option<i64>,
    /// Who approved it (emails), in the order they approved.
    pub approved_by: Vec<String>,
    /// The identity it was approved for (issuer, subject); none for operators' grants,
    /// which name an email only.
    pub issuer: Option<String>,
    pub subject: Option<String>,
    /// Session controls the proxy enforces (idle and age limits, read-only, fresh MFA).
    pub policy: SessionPolicy,
}

const COLUMNS: &str = "id, email, database, role, db_user, valid_from, expires_at, created_by, \
                       revoked_at, revoked_by, revoke_reason, request_id, approved_by, issuer, \
                       subject, idle_timeout_secs, idle_in_transaction_timeout_secs, \
                       max_session_secs, read_only, require_amr, max_auth_age_secs";

impl Grant {
    fn from_row(r: &Row) -> Grant {
        Grant {
            id: r.get("id"),
            email: r.get("email"),
            database: r.get("database"),
            role: r.get("role"),
            db_user: r.get("db_user"),
            valid_from: r.get("valid_from"),
            expires_at: r.get("expires_at"),
            created_by: r.get("created_by"),
            revoked_at: r.get("revoked_at"),
            revoked_by: r.get("revoked_by"),
            revoke_reason: r.get("revoke_reason"),
            request_id: r.get("request_id"),
            approved_by: r.get("approved_by"),
            issuer: r.get("issuer"),
            subject: r.get("subject"),
            policy: policy::from_columns(
                r.get("idle_timeout_secs"),
                r.get("idle_in_transaction_timeout_secs"),
                r.get("max_session_secs"),
                r.get("read_only"),
                r.get("require_amr"),
                r.get("max_auth_age_secs"),
            ),
        }
    }

    /// Whether the person with this issuer and subject may use the grant: its own, or an
    /// operator's grant (which names no subject).
    pub fn is_for(&self, issuer: &str, subject: &str) -> bool {
        match (&self.issuer, &self.subject) {
            // Issuers are URLs that configurations spell with or without a final slash.
            (Some(i), Some(s)) => {
                i.trim_end_matches('/') == issuer.trim_end_matches('/') && s == subject
            }
            _ => true,
        }
    }

    /// Why this grant does not allow a login at `now`, if it does not.
    pub fn inactive_reason(&self, now: DateTime<Utc>) -> Option<String> {
        if let Some(at) = self.revoked_at {
            let by = self.revoked_by.as_deref().unwrap_or("an administrator");
            let why = self
                .revoke_reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            return Some(format!(
                "grant {} was revoked by {by} at {}{why}",
                self.id,
                at.format("%Y-%m-%d %H:%M UTC")
            ));
        }
        if self.expires_at <= now {
            return Some(format!(
                "grant {} expired at {}",
                self.id,
                self.expires_at.format("%Y-%m-%d %H:%M UTC")
            ));
        }
        if self.valid_from > now {
            return Some(format!(
                "grant {} is valid only from {}",
                self.id,
                self.valid_from.format("%Y-%m-%d %H:%M UTC")
            ));
        }
        None
    }
}

/// An email address as grants store and compare it: trimmed, ASCII letters lowercased.
/// Only ASCII is folded: Unicode case folding would make distinct addresses equal (the
/// Kelvin sign `\u{212A}` lowercases to `k`).
pub fn normalize_email(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

/// A person's name for locks and logs, in the shape of their login roles: readable,
/// deterministic, a valid identifier for any email, and distinct for distinct emails (a
/// hash of the whole address ends it). Grants made before roles were per grant used it as
/// the login role.
pub fn person_role(email: &str) -> String {
    role_name(&normalize_email(email), None)
}

/// The login role of one grant: `p_<email, readable>_<key>_<hash>`. Each grant has a role
/// of its own, a member of its group role only, so a session opened under one grant can
/// never reach another grant's privileges, by any SQL (issue 17: a role switch built at run
/// time is refused by the server). `key` names the grant before it exists: `r<id>` for a
/// request ([`request_role`]), `o<...>` for an operator's grant.
pub fn grant_role(email: &str, key: &str) -> String {
    role_name(&normalize_email(email), Some(key))
}

/// The login role of the grant an approved request makes.
pub fn request_role(email: &str, request_id: i64) -> String {
    grant_role(email, &format!("r{request_id}"))
}

fn role_name(email: &str, key: Option<&str>) -> String {
    let hashed = match key {
        Some(key) => format!("{email}\n{key}"),
        None => email.to_string(),
    };
    // 64 bits: finding another address (and key) with the same role name is out of reach.
    let hash = hex::encode(&Sha256::digest(hashed.as_bytes())[..8]);
    let clean = |t: &str| -> String {
        t.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect()
    };
    let key = key.map(|k| format!("_{}", clean(k))).unwrap_or_default();
    // "p_" + readable + key + "_" + 16 hex digits, within the identifier limit.
    let room = MAX_IDENTIFIER.saturating_sub(2 + key.len() + 1 + hash.len());
    let readable = clean(email);
    let readable = &readable[..readable.len().min(room)];
    format!("p_{readable}{key}_{hash}")
}

/// The secret that holds a person role's credentials.
pub fn person_secret(db_user: &str) -> String {
    format!("dbgw/person/{db_user}")
}

/// What a person's secret holds besides the login, in the layout of AWS's RDS rotation
/// functions: the server (and the grant's database), and the secret whose user (one allowed
/// to create roles) sets the next password when the secret rotates. People's roles rotate as
/// single users changed by that master; the rotation logs in as the person only to test the
/// new password (docs/rotation.md).
#[derive(Debug, Clone)]
pub struct SecretLayout {
    pub host: String,
    pub port: u16,
    pub master: String,
}

impl SecretLayout {
    fn credentials(&self, db_user: &str, database: &str, password: String) -> DbCredentials {
        DbCredentials {
            host: Some(self.host.clone()),
            port: Some(self.port),
            dbname: Some(database.to_string()),
            masterarn: Some(self.master.clone()),
            rotation: Some("single-user".into()),
            ..DbCredentials::new(db_user, password)
        }
    }
}

/// The result of looking for a usable grant.
// Made once per login and matched at once, never stored: boxing the grant buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// This grant allows the login.
    Active(Grant),
    /// Grants exist, none is usable; the reason names the most recent one.
    Inactive(String),
    /// No grant at all for this person and database.
    None,
}

/// Finds the grant that lets `email` connect to `database` now.
pub async fn check(
    control: &Client,
    email: &str,
    database: &str,
) -> Result<Check, tokio_postgres::Error> {
    check_person(control, None, email, database).await
}

/// Finds the grant that lets the person with `identity` (issuer, subject) and `email`
/// connect to `database` now: grants approved for another identity with the same email do
/// not count.
pub async fn check_person(
    control: &Client,
    identity: Option<(&str, &str)>,
    email: &str,
    database: &str,
) -> Result<Check, tokio_postgres::Error> {
    let rows = control
        .query(
            &format!(
                "SELECT {COLUMNS} FROM grants WHERE email = $1 AND database = $2 ORDER BY id DESC"
            ),
            &[&normalize_email(email), &database],
        )
        .await?;
    let now = Utc::now();
    let (grants, others): (Vec<Grant>, Vec<Grant>) = rows
        .iter()
        .map(Grant::from_row)
        .partition(|g| identity.is_none_or(|(issuer, subject)| g.is_for(issuer, subject)));
    if let Some(active) = grants.iter().find(|g| g.inactive_reason(now).is_none()) {
        return Ok(Check::Active(active.clone()));
    }
    if let Some(theirs) = others.iter().find(|g| g.inactive_reason(now).is_none()) {
        return Ok(Check::Inactive(format!(
            "grant {} was approved for another identity at the identity provider with this \
             email (subject {})",
            theirs.id,
            theirs.subject.as_deref().unwrap_or("?")
        )));
    }
    Ok(match grants.first() {
        Some(latest) => Check::Inactive(latest.inactive_reason(now).expect("inactive")),
        None => Check::None,
    })
}

/// Of `ids`, the grants that no longer allow access, with the reason.
pub async fn no_longer_active(
    control: &Client,
    ids: &[i64],
) -> Result<Vec<(i64, String)>, tokio_postgres::Error> {
    Ok(review(control, ids).await?.ended)
}

/// What the proxy's grant watcher learns of the grants behind open sessions.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Review {
    /// Grants that no longer allow access, with the reason.
    pub ended: Vec<(i64, String)>,
    /// The others, with their current end (an extension moves it later).
    pub ends: Vec<(i64, DateTime<Utc>)>,
}

/// Of `ids`, which grants ended and when the others end now, in one query.
pub async fn review(control: &Client, ids: &[i64]) -> Result<Review, tokio_postgres::Error> {
    if ids.is_empty() {
        return Ok(Review::default());
    }
    let rows = control
        .query(
            &format!("SELECT {COLUMNS} FROM grants WHERE id = ANY($1)"),
            &[&ids],
        )
        .await?;
    let now = Utc::now();
    let mut review = Review::default();
    for g in rows.iter().map(Grant::from_row) {
        match g.inactive_reason(now) {
            Some(why) => review.ended.push((g.id, why)),
            None => review.ends.push((g.id, g.expires_at)),
        }
    }
    // A grant deleted outright is no longer active either.
    for id in ids {
        if !rows.iter().any(|r| r.get::<_, i64>("id") == *id) {
            review
                .ended
                .push((*id, format!("grant {id} no longer exists")));
        }
    }
    Ok(review)
}

pub async fn list(control: &Client) -> Result<Vec<Grant>, tokio_postgres::Error> {
    let rows = control
        .query(&format!("SELECT {COLUMNS} FROM grants ORDER BY id"), &[])
        .await?;
    Ok(rows.iter().map(Grant::from_row).collect())
}

#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("role `{0}` cannot be granted: {1}")]
    BadRole(String, &'static str),
    #[error("`{0}` is not an email address")]
    BadEmail(String),
    #[error("no grant {0}")]
    NotFound(i64),
    #[error("grant {0} is already revoked")]
    AlreadyRevoked(i64),
    #[error("database role `{0}` already belongs to another person; refusing to share it")]
    RoleTaken(String),
    #[error(
        "`{db_user}` is still a member of `{role}`, which could not be revoked ({cause}); \
         its login was taken away and its sessions ended: an admin revokes the membership"
    )]
    NotRevoked {
        db_user: String,
        role: String,
        cause: Box<GrantError>,
    },
    #[error("{0} was deprovisioned at the identity provider: no grant until it makes the account active again")]
    Deprovisioned(String),
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Secret(#[from] secret_store::Error),
}

/// A grant to create.
#[derive(Debug, Clone)]
pub struct NewGrant {
    pub email: String,
    pub database: String,
    pub role: String,
    pub expires_at: DateTime<Utc>,
    pub created_by: String,
    /// The level's session controls (none for operators' grants unless asked for).
    pub policy: SessionPolicy,
}

/// Creates a grant in one go: the person's login role (or a fresh password for it),
/// membership in the granted group role, the credentials in the secret store, and the grant
/// row. Operators' `proxy grant add`; the approvals app runs the same steps one by one.
///
/// `target` is an admin connection to the database server the grant is for (RDS: the
/// master user or a role with CREATEROLE and ADMIN OPTION on the group roles).
pub async fn add(
    control: &Client,
    target: &Client,
    secrets: &SecretStore,
    layout: &SecretLayout,
    login: PeopleLogin,
    new: NewGrant,
) -> Result<Grant, GrantError> {
    let email = check_email(&new.email)?;
    // Before anything is made on the server; `record` checks again, atomically.
    if deprovisioned(control, &email).await? {
        return Err(GrantError::Deprovisioned(email));
    }
    check_group_role(target, &new.role).await?;
    let db_user = grant_role(&email, &operator_key(Utc::now()));
    check_owner(control, &db_user, &email).await?;
    ensure_role(target, &db_user).await?;
    set_credential(target, secrets, layout, login, &db_user, &new.database).await?;
    grant_membership(target, &db_user, &new.role).await?;
    let grant = record(control, &new, &db_user, None).await?;
    enable_login(target, &db_user).await?;
    Ok(grant)
}

/// The role key of an operator's grant, which has no request id: `o<millis hex><8 random
/// hex>`. The time keeps keys readable and ordered; the random part keeps two grants of one
/// person made in the same millisecond apart (the owner check only keeps other people out,
/// so without it both would share one role and one password).
pub fn operator_key(now: DateTime<Utc>) -> String {
    let random: [u8; 4] = rand::random();
    format!("o{:x}{}", now.timestamp_millis(), hex::encode(random))
}

/// Whether the identity provider deprovisioned `email` (SCIM: inactive or deleted).
pub async fn deprovisioned(control: &Client, email: &str) -> Result<bool, GrantError> {
    Ok(control
        .query_opt(
            "SELECT NOT active FROM scim_users WHERE user_name = $1",
            &[&normalize_email(email)],
        )
        .await?
        .is_some_and(|r| r.get::<_, bool>(0)))
}

/// The email as grants store it, or why it is not one.
pub fn check_email(email: &str) -> Result<String, GrantError> {
    let normal = normalize_email(email);
    if !normal.contains('@') || normal.starts_with('@') || normal.len() > 320 {
        return Err(GrantError::BadEmail(email.to_string()));
    }
    Ok(normal)
}

/// A role is one person's: never hand another person's role over, however the name came
/// to match.
pub async fn check_owner(control: &Client, db_user: &str, email: &str) -> Result<(), GrantError> {
    let owner: Option<String> = control
        .query_opt(
            "SELECT email FROM grants WHERE db_user = $1 AND email <> $2 LIMIT 1",
            &[&db_user, &email],
        )
        .await?
        .map(|row| row.get(0));
    if owner.is_some() {
        return Err(GrantError::RoleTaken(db_user.to_string()));
    }
    Ok(())
}

/// Whether the connected database has the provisioning functions (db/provisioner.sql).
pub async fn has_interface(target: &Client) -> Result<bool, GrantError> {
    Ok(target
        .query_one(
            "SELECT to_regprocedure('dbgw_provision.ensure_role(text)') IS NOT NULL",
            &[],
        )
        .await?
        .get(0))
}

/// Creates the person's role without LOGIN if it does not exist. Returns whether it did.
pub async fn ensure_role(target: &Client, db_user: &str) -> Result<bool, GrantError> {
    if has_interface(target).await? {
        return Ok(target
            .query_one("SELECT dbgw_provision.ensure_role($1)", &[&db_user])
            .await?
            .get(0));
    }
    let exists = target
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&db_user])
        .await?
        .is_some();
    if !exists {
        target
            .batch_execute(&format!(
                "CREATE ROLE {} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS",
                escape_identifier(db_user)
            ))
            .await?;
        grantor::after_create(target, db_user).await?;
    }
    mark_person(target, db_user).await?;
    Ok(!exists)
}

/// Makes `db_user` a member of `dbgw_people` when the server has that marker
/// (db/control/0011_people.sql): pg_hba admits its members only with the proxy's client
/// certificate. The functions do the same on their path (`dbgw_provision.mark_person`).
async fn mark_person(target: &Client, db_user: &str) -> Result<(), GrantError> {
    let missing: bool = target
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dbgw_people') \
             AND NOT EXISTS (SELECT FROM pg_auth_members m \
             JOIN pg_roles u ON u.oid = m.member JOIN pg_roles g ON g.oid = m.roleid \
             WHERE u.rolname = $1 AND g.rolname = 'dbgw_people')",
            &[&db_user],
        )
        .await?
        .get(0);
    if missing {
        target
            .batch_execute(&format!(
                "GRANT dbgw_people TO {}",
                escape_identifier(db_user)
            ))
            .await?;
    }
    Ok(())
}

/// Gives the role a new random password: stored in the secret store first, then set on the
/// role as a SCRAM verifier computed here, so the password never reaches the server or its
/// logs. A crash in between leaves a secret that does not match (no access); doing it
/// again repairs it.
pub async fn set_password(
    target: &Client,
    secrets: &SecretStore,
    layout: &SecretLayout,
    db_user: &str,
    database: &str,
) -> Result<(), GrantError> {
    let password = secret_store::generate_password();
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    secrets
        .put_db_credentials(
            &person_secret(db_user),
            &layout.credentials(db_user, database, password),
        )
        .await?;
    if has_interface(target).await? {
        target
            .execute(
                "SELECT dbgw_provision.set_password($1, $2)",
                &[&db_user, &verifier],
            )
            .await?;
        return Ok(());
    }
    target
        .batch_execute(&format!(
            "ALTER ROLE {} PASSWORD '{verifier}'",
            escape_identifier(db_user)
        ))
        .await?;
    Ok(())
}

/// How people's roles log in to the database server: with a password that only the secret
/// store and the proxy see, or (RDS) with IAM auth tokens that only the proxy's task role
/// may sign, so the role has no password at all. The proxy's `upstream.auth` and the
/// approvals app's `people.login` must agree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeopleLogin {
    #[default]
    Password,
    RdsIam,
}

/// Makes the person's role an RDS IAM login: a member of `rds_iam`, with no password
/// (`dbgw_provision.use_iam`; a server without `rds_iam` is refused). Returns whether the
/// membership was new. Idempotent.
pub async fn use_iam(target: &Client, db_user: &str) -> Result<bool, GrantError> {
    if has_interface(target).await? {
        return Ok(target
            .query_one("SELECT dbgw_provision.use_iam($1)", &[&db_user])
            .await?
            .get(0));
    }
    let member: bool = target
        .query_one("SELECT pg_has_role($1, 'rds_iam', 'MEMBER')", &[&db_user])
        .await?
        .get(0);
    let user = escape_identifier(db_user);
    if !member {
        target
            .batch_execute(&format!("GRANT rds_iam TO {user}"))
            .await?;
    }
    target
        .batch_execute(&format!("ALTER ROLE {user} PASSWORD NULL"))
        .await?;
    Ok(!member)
}

/// Gives a new grant's role its way to log in: a password ([`set_password`]) or RDS IAM
/// ([`use_iam`]).
pub async fn set_credential(
    target: &Client,
    secrets: &SecretStore,
    layout: &SecretLayout,
    login: PeopleLogin,
    db_user: &str,
    database: &str,
) -> Result<(), GrantError> {
    match login {
        PeopleLogin::Password => set_password(target, secrets, layout, db_user, database).await,
        PeopleLogin::RdsIam => use_iam(target, db_user).await.map(|_| ()),
    }
}

/// The group roles `db_user` is a direct member of; not the marker `dbgw_people`, which
/// every person's role holds and no grant gives (db/control/0011_people.sql), nor
/// `rds_iam`, which is how it logs in on RDS ([`use_iam`]).
pub async fn memberships(target: &Client, db_user: &str) -> Result<Vec<String>, GrantError> {
    Ok(target
        .query(
            "SELECT g.rolname::text FROM pg_auth_members m \
             JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member \
             WHERE u.rolname = $1 AND g.rolname NOT IN ('dbgw_people', 'rds_iam') ORDER BY 1",
            &[&db_user],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Makes `db_user` a member of the group role `role`. Returns whether it was not one yet.
pub async fn grant_membership(
    target: &Client,
    db_user: &str,
    role: &str,
) -> Result<bool, GrantError> {
    check_group_role(target, role).await?;
    if has_interface(target).await? {
        return Ok(target
            .query_one(
                "SELECT dbgw_provision.grant_role($1, $2)",
                &[&db_user, &role],
            )
            .await?
            .get(0));
    }
    if memberships(target, db_user)
        .await?
        .iter()
        .any(|r| r == role)
    {
        return Ok(false);
    }
    grantor::grant(target, db_user, role).await?;
    Ok(true)
}

/// Whether the role may log in.
pub async fn can_login(target: &Client, db_user: &str) -> Result<bool, GrantError> {
    Ok(target
        .query_opt(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1",
            &[&db_user],
        )
        .await?
        .map(|r| r.get(0))
        .unwrap_or(false))
}

/// Lets the role log in. Returns whether it could not before.
pub async fn enable_login(target: &Client, db_user: &str) -> Result<bool, GrantError> {
    set_login(target, db_user, true).await
}

/// LOGIN or NOLOGIN. Returns whether it changed.
async fn set_login(target: &Client, db_user: &str, login: bool) -> Result<bool, GrantError> {
    if has_interface(target).await? {
        return Ok(target
            .query_one(
                "SELECT dbgw_provision.set_login($1, $2)",
                &[&db_user, &login],
            )
            .await?
            .get(0));
    }
    if login {
        mark_person(target, db_user).await?;
    }
    if can_login(target, db_user).await? == login {
        return Ok(false);
    }
    let attribute = if login { "LOGIN" } else { "NOLOGIN" };
    target
        .batch_execute(&format!(
            "ALTER ROLE {} {attribute}",
            escape_identifier(db_user)
        ))
        .await?;
    Ok(true)
}

/// Takes the group role `role` away from `db_user`. Returns whether it was a member.
async fn revoke_membership(target: &Client, db_user: &str, role: &str) -> Result<bool, GrantError> {
    if has_interface(target).await? {
        return Ok(target
            .query_one(
                "SELECT dbgw_provision.revoke_role($1, $2)",
                &[&db_user, &role],
            )
            .await?
            .get(0));
    }
    grantor::revoke(target, db_user, role).await?;
    Ok(true)
}

/// The approval behind a grant, for the record (and the proxy's audit).
#[derive(Debug, Clone)]
pub struct Approval {
    pub request_id: i64,
    pub approved_by: Vec<String>,
    /// The requester as the identity provider named them.
    pub issuer: String,
    pub subject: String,
}

/// The person as the identity provider pushed them (SCIM, `scim_users`), locked for share
/// whatever their state: a deactivation (which updates the row) waits for the statement
/// that reads it, and its sweep then finds the grant; a statement that waited reads the
/// row as the deactivation left it. Someone the provider never pushed has no row.
const PERSON_LOCKED: &str =
    "WITH person AS (SELECT active FROM scim_users WHERE user_name = $1 FOR SHARE)";

/// Writes the grant row with its login role `db_user` (see [`grant_role`]): from here on
/// the proxy lets the person in (once the role can log in). With an approval, recording
/// the same request again returns the existing grant.
///
/// Refuses a person the identity provider deprovisioned ([`GrantError::Deprovisioned`]):
/// every way of making a grant (the approvals app, `proxy grant add`) writes it here.
pub async fn record(
    control: &Client,
    new: &NewGrant,
    db_user: &str,
    approval: Option<&Approval>,
) -> Result<Grant, GrantError> {
    let email = check_email(&new.email)?;
    let (request_id, approved_by, issuer, subject) = match approval {
        Some(a) => (
            Some(a.request_id),
            a.approved_by.clone(),
            Some(a.issuer.as_str()),
            Some(a.subject.as_str()),
        ),
        None => (None, Vec::new(), None, None),
    };
    let inserted = control
        .query_opt(
            &format!(
                "{PERSON_LOCKED} INSERT INTO grants (email, database, role, db_user, \
                 valid_from, expires_at, created_by, request_id, approved_by, issuer, subject, \
                 idle_timeout_secs, idle_in_transaction_timeout_secs, max_session_secs, \
                 read_only, require_amr, max_auth_age_secs) \
                 SELECT $1::text, $2::text, $3::text, $4::text, now(), $5::timestamptz, \
                 $6::text, $7::bigint, $8::text[], $9::text, $10::text, $11::int, $12::int, \
                 $13::int, $14::boolean, $15::text[], $16::int \
                 WHERE NOT EXISTS (SELECT FROM person WHERE NOT active) \
                 ON CONFLICT (request_id) DO NOTHING RETURNING {COLUMNS}"
            ),
            &[
                &email,
                &new.database,
                &new.role,
                &db_user,
                &new.expires_at,
                &new.created_by,
                &request_id,
                &approved_by,
                &issuer,
                &subject,
                &policy::column(new.policy.idle_timeout_secs),
                &policy::column(new.policy.idle_in_transaction_timeout_secs),
                &policy::column(new.policy.max_session_secs),
                &new.policy.read_only,
                &new.policy.require_amr,
                &policy::column(new.policy.max_auth_age_secs),
            ],
        )
        .await?;
    if let Some(row) = inserted {
        return Ok(Grant::from_row(&row));
    }
    // Not inserted: the request's grant exists already, or the person is deprovisioned.
    let existing = match request_id {
        Some(_) => {
            control
                .query_opt(
                    &format!("SELECT {COLUMNS} FROM grants WHERE request_id = $1"),
                    &[&request_id],
                )
                .await?
        }
        None => None,
    };
    existing
        .map(|row| Grant::from_row(&row))
        .ok_or(GrantError::Deprovisioned(email))
}

/// Only group roles (no login, no special attributes) may be handed out.
pub async fn check_group_role(target: &Client, role: &str) -> Result<(), GrantError> {
    let row = target
        .query_opt(
            "SELECT rolcanlogin, rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls \
             FROM pg_roles WHERE rolname = $1",
            &[&role],
        )
        .await?;
    match row {
        None => Err(GrantError::BadRole(role.into(), "it does not exist")),
        Some(r) if r.get::<_, bool>(0) => Err(GrantError::BadRole(
            role.into(),
            "it is a login role, not a group role",
        )),
        Some(r) if r.get::<_, bool>(1) => Err(GrantError::BadRole(
            role.into(),
            "it has administrative attributes",
        )),
        Some(_) => Ok(()),
    }
}

/// One grant by id.
pub async fn get(control: &Client, id: i64) -> Result<Grant, GrantError> {
    let row = control
        .query_opt(
            &format!("SELECT {COLUMNS} FROM grants WHERE id = $1"),
            &[&id],
        )
        .await?
        .ok_or(GrantError::NotFound(id))?;
    Ok(Grant::from_row(&row))
}

/// Moves a live grant's end (an approved extension, or a shortening). The proxies' grant
/// watchers pass the new end to the grant's open sessions, which stay on their backends.
/// Returns whether a grant still live was changed.
pub async fn set_end(
    control: &impl tokio_postgres::GenericClient,
    id: i64,
    end: chrono::DateTime<chrono::Utc>,
) -> Result<bool, tokio_postgres::Error> {
    let changed = control
        .execute(
            "UPDATE grants SET expires_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            &[&id, &end],
        )
        .await?;
    Ok(changed == 1)
}

/// Marks a grant revoked: the proxy closes its sessions within its poll interval and lets
/// nobody in with it any more. What the grant gave on the server is taken away by
/// [`reconcile`].
pub async fn mark_revoked(
    control: &Client,
    id: i64,
    by: &str,
    reason: &str,
) -> Result<Grant, GrantError> {
    let row = control
        .query_opt(
            &format!(
                "UPDATE grants SET revoked_at = now(), revoked_by = $2, revoke_reason = $3 \
                 WHERE id = $1 AND revoked_at IS NULL RETURNING {COLUMNS}"
            ),
            &[&id, &by, &reason],
        )
        .await?;
    match row {
        Some(row) => Ok(Grant::from_row(&row)),
        None => {
            get(control, id).await?;
            Err(GrantError::AlreadyRevoked(id))
        }
    }
}

/// Revokes a grant and takes away what it gave (see [`reconcile`], which also ends every
/// server session of the role). The proxy closes the sessions bound to the grant within
/// its poll interval, with the reason.
pub async fn revoke(
    control: &Client,
    target: &Client,
    id: i64,
    by: &str,
    reason: &str,
) -> Result<Grant, GrantError> {
    let grant = mark_revoked(control, id, by, reason).await?;
    reconcile(control, target, &grant.db_user).await?;
    Ok(grant)
}

/// Takes away what an ended grant gave; kept for callers of the one-step API.
pub async fn retire_role(
    control: &Client,
    target: &Client,
    ended: &Grant,
) -> Result<Reconciled, GrantError> {
    reconcile(control, target, &ended.db_user).await
}

/// What [`reconcile`] changed on the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Group roles the person was a member of without an active grant that gives them.
    pub revoked: Vec<String>,
    /// The role could log in and no active grant is left.
    pub login_removed: bool,
    /// Active grants left.
    pub active_left: usize,
    /// Server sessions of the role ended because its memberships shrank.
    pub terminated: i64,
}

/// The group roles of `db_user`'s grants that are active now.
pub async fn active_roles(control: &Client, db_user: &str) -> Result<Vec<String>, GrantError> {
    Ok(control
        .query(
            "SELECT DISTINCT role FROM grants WHERE db_user = $1 AND revoked_at IS NULL \
             AND expires_at > now() AND valid_from <= now()",
            &[&db_user],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Makes the person's role hold exactly what their active grants give: every group
/// membership that no active grant gives is revoked (an ended grant's role goes even while
/// another grant, for another role, is active), and the role loses LOGIN when no active
/// grant is left. Idempotent; safe to run at any time.
///
/// When the memberships shrink while other grants stay active, every server session of
/// the role is ended, whichever grant it was opened under: PostgreSQL does not undo an earlier `SET ROLE` (nor a
/// `SECURITY DEFINER` context) when a membership is revoked, so a session opened under
/// another grant could otherwise keep the ended grant's privileges until it closes. The
/// person reconnects at once and gets exactly what is left.
///
/// Fails closed (issue 17): the login goes first, before anything that can fail. When a
/// membership cannot be revoked (on PostgreSQL 16+ one granted by another role; a role
/// only a superuser may take away), the role is left unable to log in, even with grants
/// still active, and its sessions are ended; then the error is returned. The login stays
/// off until an admin takes the membership away: a grant made later has a role of its own.
pub async fn reconcile(
    control: &Client,
    target: &Client,
    db_user: &str,
) -> Result<Reconciled, GrantError> {
    let active = active_roles(control, db_user).await?;
    let mut done = Reconciled {
        active_left: active.len(),
        ..Reconciled::default()
    };
    if active.is_empty() && can_login(target, db_user).await? {
        done.login_removed = set_login(target, db_user, false).await?;
    }
    let mut failed = None;
    for role in memberships(target, db_user).await? {
        if active.contains(&role) {
            continue;
        }
        match revoke_membership(target, db_user, &role).await {
            Ok(_) => done.revoked.push(role),
            // Go on with the others: each one taken away is one less to leak.
            Err(e) => {
                failed.get_or_insert((role, e));
            }
        }
    }
    if let Some((role, source)) = failed {
        set_login(target, db_user, false).await?;
        terminate_sessions(target, db_user).await?;
        return Err(GrantError::NotRevoked {
            db_user: db_user.to_string(),
            role,
            cause: Box::new(source),
        });
    }
    // With no grant left, every session is bound to an ended grant: the proxy closes each
    // with its reason, and the caller ends what is left (see `terminate_sessions`).
    if !done.revoked.is_empty() && done.active_left > 0 {
        done.terminated = terminate_sessions(target, db_user).await?;
    }
    Ok(done)
}

/// How many server sessions the role has open now.
pub async fn backends(target: &Client, db_user: &str) -> Result<i64, GrantError> {
    Ok(target
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()",
            &[&db_user],
        )
        .await?
        .get(0))
}

/// Ends the role's sessions still open on the server (the proxy closes the ones it carries;
/// this catches anything else). Through the interface, only a person's role; else the login
/// needs `pg_signal_backend`. Returns how many.
pub async fn terminate_sessions(target: &Client, db_user: &str) -> Result<i64, GrantError> {
    if has_interface(target).await? {
        return Ok(target
            .query_one("SELECT dbgw_provision.terminate_sessions($1)", &[&db_user])
            .await?
            .get(0));
    }
    Ok(target
        .query_one(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE usename = $1 AND pid <> pg_backend_pid()",
            &[&db_user],
        )
        .await?
        .get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn person_roles_are_safe_deterministic_and_distinct() {
        let a = person_role("Alice@Example.com");
        assert_eq!(a, person_role("alice@example.com"));
        assert!(a.starts_with("p_alice_example_com_"), "{a}");
        assert_ne!(
            person_role("alice@example.com"),
            person_role("alice_example.com@x")
        );
        let long = format!("{}@example.com", "a".repeat(300));
        assert!(person_role(&long).len() <= MAX_IDENTIFIER);
        assert_ne!(
            person_role(&long),
            person_role(&format!("{}b@example.com", "a".repeat(299)))
        );
        let odd = person_role("o'brien+\"x\"@ex-ample.com");
        assert!(
            odd.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{odd}"
        );
        let unicode = person_role("jürgen@bücher.de");
        assert!(
            unicode.is_ascii() && unicode.len() <= MAX_IDENTIFIER,
            "{unicode}"
        );
    }

    #[test]
    fn each_grant_has_a_role_of_its_own_in_the_person_role_shape() {
        let first = request_role("Alice@Example.com", 7);
        assert_eq!(first, request_role("alice@example.com", 7));
        assert!(first.starts_with("p_alice_example_com_r7_"), "{first}");
        // scripts/e2e.sh computes the name of alice's role the same way.
        assert_eq!(
            request_role("alice@example.com", 1),
            "p_alice_example_com_r1_3babea958cb05833"
        );
        assert_ne!(first, request_role("alice@example.com", 8));
        assert_ne!(first, person_role("alice@example.com"));
        assert_ne!(
            grant_role("alice@example.com", "r7"),
            grant_role("alice@example.com_r7", "x")
        );
        let long = format!("{}@example.com", "a".repeat(300));
        let shape = |r: &str| {
            r.len() <= MAX_IDENTIFIER
                && r.starts_with("p_")
                && r.rsplit_once('_').is_some_and(|(head, hash)| {
                    hash.len() == 16
                        && hash
                            .bytes()
                            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                        && head
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                })
        };
        for role in [
            first,
            request_role(&long, i64::MAX),
            grant_role("o'brien+\"x\"@ex-ample.com", "o18c5f3a2b4d"),
        ] {
            assert!(shape(&role), "{role}");
        }
    }

    #[test]
    fn two_operator_grants_in_one_millisecond_get_two_roles() {
        let now = Utc::now();
        let (a, b) = (operator_key(now), operator_key(now));
        assert_ne!(a, b, "two operator grants made at {now} share a role key");
        let millis = format!("o{:x}", now.timestamp_millis());
        assert!(a.starts_with(&millis) && a.len() == millis.len() + 8, "{a}");
        let long = format!("{}@example.com", "a".repeat(300));
        for email in ["alice@example.com", long.as_str()] {
            let (ra, rb) = (grant_role(email, &a), grant_role(email, &b));
            assert_ne!(ra, rb);
            assert!(ra.len() <= MAX_IDENTIFIER, "{ra}");
        }
    }
}
