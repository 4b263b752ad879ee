//! From the start-up message to a logged-in upstream session: the checks PostgreSQL would
//! make, the client's authentication (a person's token or a service's SCRAM), the audit
//! record of the login, and the proxy's own login to the database.

use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use super::upstream_application;
use crate::audit::record;
use crate::audit::{Identity, SessionInfo};
use crate::auth::{self, Refused};
use crate::context::Context;
use crate::metrics::ErrorKind;
use crate::protocol::backend;
use crate::protocol::sqlstate;
use crate::protocol::startup::Startup;
use crate::settings::Plaintext;
use crate::upstream::UpstreamError;

/// How the client proves who it is, by the shape of its user name.
pub(super) fn method_for(user: &str) -> &'static str {
    if user.contains('@') {
        "oidc"
    } else {
        "scram-sha-256"
    }
}

/// Checks the start-up message, authenticates the client and logs in upstream.
#[allow(clippy::too_many_arguments)]
pub(super) async fn login<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &Context,
    client: &mut S,
    startup: &Startup,
    tls: bool,
    peer: SocketAddr,
    info: &mut SessionInfo,
    user: &str,
    database: &str,
) -> Result<(crate::upstream::Session, Identity, String, String), Refused> {
    let plaintext_ok = ctx.settings.tls.plaintext == Plaintext::Loopback && peer.ip().is_loopback();
    if !tls && !plaintext_ok {
        return Err(Refused::new(
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            "this proxy requires TLS: connect with sslmode=require (or verify-full)",
            "plaintext connection refused",
        ));
    }
    // We speak 3.0: tell a client asking for more, and list options we do not know.
    let unsupported: Vec<String> = startup
        .params
        .iter()
        .filter(|(k, _)| k.starts_with("_pq_."))
        .map(|(k, _)| k.clone())
        .collect();
    if startup.minor > 0 || !unsupported.is_empty() {
        let mut out = BytesMut::new();
        backend::negotiate_protocol_version(&mut out, 0, &unsupported);
        auth::send(client, &out).await?;
    }
    if user.is_empty() {
        return Err(Refused::new(
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            "no PostgreSQL user name specified in startup packet",
            "no user name",
        ));
    }
    if startup
        .get("replication")
        .is_some_and(|r| r != "false" && r != "0" && r != "off")
    {
        return Err(Refused::new(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            "replication connections are not allowed through dbgw",
            "replication requested",
        ));
    }

    // Parameters for the upstream session: what the client asked for, minus what the proxy
    // decides (user, database) or refuses, with the settings the audit lexes by pinned.
    let asked: Vec<(String, String)> = startup
        .params
        .iter()
        .filter(|(k, _)| {
            !matches!(k.as_str(), "user" | "database" | "replication") && !k.starts_with("_pq_.")
        })
        .cloned()
        .collect();
    let mut extra = crate::sql::pinned_startup(&asked)
        .map_err(|why| Refused::new(sqlstate::FEATURE_NOT_SUPPORTED, why.clone(), why))?;
    // The database sees the proxy session's id as the application name, so its own logs
    // (pgaudit's) name the session; the client's name stays in the audit's `application`.
    extra.retain(|(k, _)| k != "application_name");
    extra.push((
        "application_name".into(),
        upstream_application(&info.session),
    ));

    let mut buf = BytesMut::new();
    // The secret behind the login, for a re-read when the database refuses it.
    // How and when a person signed in, for the `auth` record.
    let mut sign_in: (Vec<String>, Option<i64>) = (Vec::new(), None);
    let (creds, version, secret_id, identity) = if user.contains('@') {
        let person =
            auth::person::authenticate(ctx.people.as_ref(), client, &mut buf, user, database, tls)
                .await?;
        crate::sql::run_as_role(&mut extra, &person.role)
            .map_err(|why| Refused::new(sqlstate::INSUFFICIENT_PRIVILEGE, why.clone(), why))?;
        if read_only(&person.identity) {
            crate::sql::read_only::pin_startup(&mut extra).map_err(|why| {
                Refused::new(sqlstate::READ_ONLY_SQL_TRANSACTION, why.clone(), why)
            })?;
        }
        sign_in = (person.amr, person.auth_time);
        (
            person.creds,
            person.version,
            person.secret_id,
            person.identity,
        )
    } else {
        let service = auth::service::lookup(&ctx.settings.services, user);
        let login = auth::service::authenticate(
            client,
            &mut buf,
            user,
            service.map(|(_, secret)| secret),
            &ctx.secrets,
            &ctx.verifiers,
        )
        .await?;
        let (name, secret) = service.expect("authenticated services are configured");
        (
            login.creds,
            login.version,
            secret.to_string(),
            Identity::Service {
                name: name.to_string(),
            },
        )
    };
    if !buf.is_empty() {
        return Err(Refused::new(
            sqlstate::PROTOCOL_VIOLATION,
            "unexpected data after authentication",
            "client sent data before login completed",
        ));
    }

    // The login is audited before anything reaches the database under it.
    audit_login(
        ctx, info, &identity, user, database, &creds, &version, startup, &sign_in,
    )
    .await?;
    let read_only_session = read_only(&identity);
    let person = matches!(identity, Identity::Person { .. });
    let upstream = match upstream_login(ctx, database, &creds, person, &extra, read_only_session)
        .await
    {
        Ok(upstream) => upstream,
        // A person's password may have rotated since we read it: read it again, once. (A
        // service's is the one its client proved; the client rereads its secret and retries.)
        // The record keeps the version first read; the log has the one used.
        Err(r)
            if r.code == sqlstate::INVALID_AUTHORIZATION_SPECIFICATION
                && matches!(identity, Identity::Person { .. }) =>
        {
            ctx.secrets.refresh(&secret_id);
            let (version, creds) = crate::clock::with_timers(
                ctx.secrets
                    .db_credentials_at(&secret_id, secret_store::Stage::Current),
            )
            .await
            .map_err(|e| {
                Refused::new(
                    sqlstate::CONNECTION_FAILURE,
                    "the database is unavailable; try again later",
                    format!("person credentials unavailable: {e}"),
                )
            })?;
            tracing::info!(%version, "logging in again with a rotated password");
            let upstream =
                upstream_login(ctx, database, &creds, person, &extra, read_only_session).await?;
            return Ok((upstream, identity, secret_id, version));
        }
        Err(r) => {
            if r.code == sqlstate::INVALID_AUTHORIZATION_SPECIFICATION {
                ctx.secrets.refresh(&secret_id);
            }
            return Err(r);
        }
    };
    Ok((upstream, identity, secret_id, version))
}

/// Records the login; nothing reaches the client under it before the record is accepted.
#[allow(clippy::too_many_arguments)]
async fn audit_login(
    ctx: &Context,
    info: &mut SessionInfo,
    identity: &Identity,
    user: &str,
    database: &str,
    creds: &secret_store::DbCredentials,
    version: &str,
    startup: &Startup,
    sign_in: &(Vec<String>, Option<i64>),
) -> Result<(), Refused> {
    let application = startup.get("application_name").unwrap_or("");
    info.logged_in(identity, database, &creds.username, version, application);
    let auth_record = record::with_sign_in(
        record::auth(info, method_for(user), user, database, Ok(())),
        &sign_in.0,
        sign_in.1,
    );
    ctx.audit.accept(&[auth_record]).await.map_err(|e| {
        Refused::new(
            sqlstate::IO_ERROR,
            format!("{e}; login refused"),
            format!("audit unavailable: {e}"),
        )
    })?;
    Ok(())
}

/// The proxy's login to the database with `creds`.
async fn upstream_login(
    ctx: &Context,
    database: &str,
    creds: &secret_store::DbCredentials,
    person: bool,
    extra: &[(String, String)],
    read_only: bool,
) -> Result<crate::upstream::Session, Refused> {
    let session = ctx
        .upstream
        .login(&creds.username, database, &creds.password, person, extra)
        .await
        .map_err(|e| match e {
            UpstreamError::Refused(f) => {
                ctx.metrics.error(ErrorKind::Upstream);
                Refused::new(
                    leak_safe_code(&f.code),
                    f.message.clone(),
                    format!("database refused: {} ({})", f.message, f.code),
                )
            }
            UpstreamError::Unavailable(why) => {
                ctx.metrics.error(ErrorKind::Upstream);
                tracing::warn!(error = %why, "upstream unavailable");
                Refused::new(
                    sqlstate::CONNECTION_FAILURE,
                    "the database is unavailable; try again later",
                    format!("database unavailable: {why}"),
                )
            }
        })?;
    // The relay sees a change of the setting only if the server reports it (PostgreSQL 14
    // and later do): a session whose server did not confirm it is not opened.
    if read_only && !reports_read_only(&session.parameters) {
        return Err(Refused::new(
            sqlstate::READ_ONLY_SQL_TRANSACTION,
            "this session is read-only (its grant's policy) and the database did not confirm \
             default_transaction_read_only = on",
            "database did not report default_transaction_read_only = on",
        ));
    }
    Ok(session)
}

/// The person's grant makes the session read-only.
fn read_only(identity: &Identity) -> bool {
    matches!(identity, Identity::Person { policy, .. } if policy.read_only)
}

/// The start-up ParameterStatus messages hold `default_transaction_read_only = on`.
fn reports_read_only(parameters: &[u8]) -> bool {
    let mut rest = parameters;
    while let Ok(Some((h, body))) = crate::protocol::frame::complete(rest, usize::MAX) {
        if h.tag == crate::protocol::backend::PARAMETER_STATUS
            && crate::protocol::backend::parameter_status(body)
                .is_ok_and(|(n, v)| n == "default_transaction_read_only" && v == "on")
        {
            return true;
        }
        rest = &rest[h.total..];
    }
    false
}

/// The database's SQLSTATE, as a static string for our ErrorResponse.
fn leak_safe_code(code: &str) -> &'static str {
    match code {
        sqlstate::INVALID_CATALOG_NAME => sqlstate::INVALID_CATALOG_NAME,
        sqlstate::TOO_MANY_CONNECTIONS => sqlstate::TOO_MANY_CONNECTIONS,
        sqlstate::CANNOT_CONNECT_NOW => sqlstate::CANNOT_CONNECT_NOW,
        sqlstate::INVALID_PASSWORD | sqlstate::INVALID_AUTHORIZATION_SPECIFICATION => {
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION
        }
        sqlstate::INSUFFICIENT_PRIVILEGE => sqlstate::INSUFFICIENT_PRIVILEGE,
        _ => sqlstate::CONNECTION_FAILURE,
    }
}
