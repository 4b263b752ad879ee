//! People: they sign in to the company's identity provider and send the ID token as their
//! password (only inside TLS). The token must be valid for the user name they gave (their
//! email), and a grant must let them into the database they asked for. The proxy then logs
//! in upstream as the person's own role, with credentials only it can read, and the session
//! runs as the grant's group role (`role` set at start-up; switching is refused).

use std::sync::Arc;

use bytes::BytesMut;
use secret_store::{DbCredentials, SecretStore};
use tokio::io::{AsyncRead, AsyncWrite};

use super::token::TokenVerifier;
use super::{read_password_message, send, Refused};
use crate::access::Access;
use crate::audit::Identity;
use crate::clock::with_timers;
use crate::protocol::sqlstate;
use crate::protocol::{backend, startup};
use crate::upstream::UpstreamAuth;
use crate::wire::ReadError;

/// What a person's login needs of the proxy: their token checked, their grant found, their
/// role's credentials read (unless the proxy signs an IAM token for the role).
pub struct People {
    pub tokens: Arc<TokenVerifier>,
    pub access: Arc<Access>,
    pub secrets: SecretStore,
    pub upstream_auth: UpstreamAuth,
}

/// A person's login: who, and the credentials (with their secret and version) of their role.
pub struct Login {
    pub identity: Identity,
    /// The grant's group role: the session runs as it (`role` set at start-up), so it holds
    /// exactly what this grant gives, whatever other grants the person's role has.
    pub role: String,
    pub creds: DbCredentials,
    pub secret_id: String,
    pub version: String,
    /// How and when the person signed in, as the token says (for the `auth` record).
    pub amr: Vec<String>,
    pub auth_time: Option<i64>,
}

pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    people: Option<&People>,
    stream: &mut S,
    buf: &mut BytesMut,
    user: &str,
    database: &str,
    tls: bool,
) -> Result<Login, Refused> {
    let Some(People {
        tokens,
        access,
        secrets,
        upstream_auth,
    }) = people
    else {
        return Err(Refused::new(
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            "signing in with an identity token is not enabled on this proxy",
            "person login not enabled",
        ));
    };
    if !tls {
        return Err(Refused::new(
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            "identity tokens are accepted only over TLS: connect with sslmode=require or verify-full",
            "token offered over a connection without TLS",
        ));
    }
    let mut out = BytesMut::new();
    backend::auth_cleartext(&mut out);
    send(stream, &out).await?;
    let body = read_password_message(stream, buf).await?;
    let token = startup::password_body(&body).map_err(ReadError::from)?;

    // The identity provider's keys, the grants database and the secret are fetched by
    // libraries with timers of their own: on the timer thread's runtime (crate::clock).
    let person = with_timers(tokens.verify(token, user)).await.map_err(|e| {
        Refused::new(
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            format!("identity token refused: {e}"),
            format!("token refused: {e}"),
        )
    })?;
    let check = access.check((&person.issuer, &person.subject), &person.email, database);
    let grant = match with_timers(check).await {
        Ok(grants::Check::Active(g)) => g,
        Ok(grants::Check::Inactive(why)) => {
            return Err(Refused::new(
                sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                format!("no access to database \"{database}\": {why}"),
                format!("no active grant: {why}"),
            ))
        }
        Ok(grants::Check::None) => {
            return Err(Refused::new(
                sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                format!("no access to database \"{database}\": request it in the approvals app"),
                "no grant",
            ))
        }
        Err(e) => {
            tracing::error!(error = %e, "control plane unavailable");
            return Err(Refused::new(
                sqlstate::CONNECTION_FAILURE,
                "access grants cannot be checked right now; try again later",
                format!("control plane unavailable: {e}"),
            ));
        }
    };
    // The grant may ask for a stronger or fresher sign-in than this token shows.
    let now = chrono::Utc::now().timestamp();
    super::step_up::check(&grant.policy, &person.amr, person.auth_time, now).map_err(|e| {
        Refused::new(
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            e.to_string(),
            format!(
                "step-up required: {e} (amr {:?}, auth_time {:?})",
                person.amr, person.auth_time
            ),
        )
    })?;
    let (amr, auth_time) = (person.amr.clone(), person.auth_time);
    let secret_id = grants::person_secret(&grant.db_user);
    if *upstream_auth == UpstreamAuth::RdsIam {
        // The proxy signs an IAM token for the role: no password exists.
        return Ok(Login {
            creds: DbCredentials::new(grant.db_user.clone(), String::new()),
            role: grant.role.clone(),
            identity: identity(person, grant),
            secret_id,
            version: "rds-iam".into(),
            amr,
            auth_time,
        });
    }
    let (version, creds) =
        with_timers(secrets.db_credentials_at(&secret_id, secret_store::Stage::Current))
            .await
            .map_err(|e| {
                Refused::new(
                    sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                    "your database role is not provisioned yet; ask the data-security team",
                    format!("person credentials unavailable: {e}"),
                )
            })?;
    Ok(Login {
        role: grant.role.clone(),
        identity: identity(person, grant),
        creds,
        secret_id,
        version,
        amr,
        auth_time,
    })
}

fn identity(person: crate::auth::token::Person, grant: grants::Grant) -> Identity {
    Identity::Person {
        email: person.email,
        subject: person.subject,
        issuer: person.issuer,
        grant_id: grant.id,
        request_id: grant.request_id,
        approved_by: grant.approved_by,
        grant_expires_at: grant.expires_at,
        policy: grant.policy,
    }
}
