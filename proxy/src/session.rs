//! One client connection, start to end: TLS negotiation, start-up, authentication, the
//! upstream login, the relay, and the connection records of the audit log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::either::Either;
use tracing::Instrument;

use crate::audit::record::{self, Totals};
use crate::audit::{Identity, SessionInfo};
use crate::auth::{self, Refused};
use crate::metrics::{CancelRoute, ConnectionResult, ErrorKind};
use crate::protocol::backend;
use crate::protocol::sqlstate;
use crate::protocol::startup::{Request, Startup};
use crate::relay::{self, Halt};
use crate::server::Context;
use crate::settings::Plaintext;
use crate::stream::ClientStream;
use crate::upstream::UpstreamError;
use crate::wire::{self, ReadError};

/// A TLS ClientHello starts with this byte: a client using direct TLS (`sslnegotiation=direct`).
const TLS_HANDSHAKE: u8 = 0x16;

fn session_id() -> String {
    hex::encode(rand::random::<[u8; 12]>())
}

/// Who a logged-in session is, and the secret version it logged in with.
struct LoggedIn {
    identity: Identity,
    secret: String,
    version: String,
}

/// Serves one accepted connection until it ends, inside a `session` span that gives every
/// log line of the session its id, the client's address and, once logged in, the identity.
pub async fn serve(ctx: Arc<Context>, mut tcp: TcpStream, peer: SocketAddr) {
    // Behind a load balancer speaking PROXY protocol, the session is from the address it
    // names: the start-up limit and the audit use that one.
    let timeout = Duration::from_secs(ctx.settings.limits.startup_timeout_secs);
    let resolved = tokio::time::timeout(
        timeout,
        crate::client_address::resolve(&mut tcp, peer, &ctx.settings.proxy_protocol),
    )
    .await;
    let peer = match resolved {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => {
            ctx.metrics.connection(ConnectionResult::Refused);
            ctx.metrics.error(ErrorKind::Protocol);
            tracing::warn!(%peer, error = %e, "connection refused");
            return;
        }
        Err(_) => {
            ctx.metrics.connection(ConnectionResult::Timeout);
            tracing::info!(%peer, "start-up timed out before the PROXY protocol header");
            return;
        }
    };
    let info = SessionInfo::new(session_id(), peer.to_string());
    let span = tracing::info_span!(
        "session",
        session = %info.session,
        %peer,
        user = tracing::field::Empty
    );
    serve_in_span(ctx, tcp, peer, info).instrument(span).await
}

async fn serve_in_span(ctx: Arc<Context>, tcp: TcpStream, peer: SocketAddr, mut info: SessionInfo) {
    let started = Instant::now();
    let _ = tcp.set_nodelay(true);
    let timeout = Duration::from_secs(ctx.settings.limits.startup_timeout_secs);
    let Some(handshake) = ctx
        .handshakes
        .enter(peer.ip(), ctx.settings.limits.max_handshakes_per_address)
    else {
        ctx.metrics.connection(ConnectionResult::OverLimit);
        tracing::info!("too many start-ups from one address");
        let mut tcp = tcp;
        let _ = refuse(
            &mut tcp,
            sqlstate::TOO_MANY_CONNECTIONS,
            "too many connections from this address are starting up",
        )
        .await;
        return;
    };

    let opened = tokio::time::timeout(timeout, open(&ctx, tcp, peer, &mut info)).await;
    drop(handshake);
    let Ok(Some((client, upstream, login))) = opened else {
        if opened.is_err() {
            ctx.metrics.connection(ConnectionResult::Timeout);
            tracing::info!("start-up timed out");
        }
        return;
    };

    // Logged in: relay until the end.
    let LoggedIn {
        identity,
        secret,
        version,
    } = login;
    let _on_version = ctx.metrics.session_on_version(&secret, &version);
    tracing::Span::current().record("user", identity.name());
    let key = ctx
        .cancels
        .register(upstream.backend_pid, upstream.backend_secret.clone());
    let halt = Arc::new(Halt::default());
    // A person's session ends when the grant does, whether or not the control plane can be
    // reached to say so.
    let expiry = match &identity {
        Identity::Person {
            grant_expires_at, ..
        } => {
            let left = (*grant_expires_at - chrono::Utc::now())
                .to_std()
                .unwrap_or_default();
            let halt = halt.clone();
            Some(tokio::spawn(async move {
                tokio::time::sleep(left).await;
                halt.fire(
                    sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                    "access revoked: the grant has expired",
                );
            }))
        }
        Identity::Service { .. } => None,
    };
    let registration = ctx
        .sessions
        .add(&info.session, identity.clone(), halt.clone());
    let mut greeting = BytesMut::new();
    backend::auth_ok(&mut greeting);
    greeting.extend_from_slice(&upstream.parameters);
    backend::backend_key_data(&mut greeting, key.pid, i32::from_be_bytes(key.secret));
    backend::ready_for_query(&mut greeting, upstream.status);
    let mut client = client;
    let (totals, end) = if client.write_all(&greeting).await.is_err() {
        (Totals::default(), relay::End::ClientLeft)
    } else {
        ctx.metrics.active_sessions.inc();
        let deps = relay::Deps {
            audit: &ctx.audit,
            metrics: &ctx.metrics,
            limits: &ctx.settings.limits,
        };
        let caller = match identity {
            Identity::Person { .. } => crate::sql::Caller::Person,
            Identity::Service { .. } => crate::sql::Caller::Service,
        };
        let result = relay::run(
            &deps,
            &info,
            caller,
            client,
            upstream.stream,
            upstream.status,
            &halt,
        )
        .await;
        ctx.metrics.active_sessions.dec();
        result
    };
    if let Some(expiry) = expiry {
        expiry.abort();
    }
    if matches!(end, relay::End::Halted(_) | relay::End::DrainTimeout) {
        // Whatever still runs for this session must stop: cancel it upstream.
        let _ = ctx
            .upstream
            .cancel(upstream.backend_pid, &upstream.backend_secret)
            .await;
    }
    drop(key);
    let reason = end.describe();
    tracing::info!(user = identity.name(), statements = totals.statements, %reason, "session ended");
    ctx.audit.record(record::disconnect(
        &info,
        &totals,
        started.elapsed().as_millis() as u64,
        &reason,
    ));
    // Last: whoever waits for the session to be gone finds its records written.
    drop(registration);
}

/// Everything up to a logged-in upstream session. `None` when the connection ended here
/// (a cancel request, a refusal); the client has been told why and the audit log has it.
async fn open(
    ctx: &Context,
    tcp: TcpStream,
    peer: SocketAddr,
    info: &mut SessionInfo,
) -> Option<(ClientStream, crate::upstream::Session, LoggedIn)> {
    let (mut client, request) = match negotiate(ctx, tcp).await {
        Ok(x) => x,
        Err(e) => {
            ctx.metrics.connection(ConnectionResult::Refused);
            if !matches!(e, ReadError::Closed) {
                ctx.metrics.error(ErrorKind::Protocol);
                tracing::info!(error = %e, "bad start-up");
            }
            return None;
        }
    };
    let startup = match request {
        Request::Startup(s) => s,
        Request::Cancel { pid, secret } => {
            ctx.metrics.connection(ConnectionResult::Cancel);
            forward_cancel(ctx, pid, &secret).await;
            return None;
        }
        Request::Ssl | Request::GssEnc => {
            let _ = refuse(
                &mut client,
                sqlstate::PROTOCOL_VIOLATION,
                "unexpected encryption request",
            )
            .await;
            return None;
        }
    };
    let tls = matches!(client, Either::Left(_));
    ctx.audit
        .record(record::connect(info, tls, &startup.params));
    let user = startup.get("user").unwrap_or("").to_string();
    let database = startup
        .get("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(&user)
        .to_string();

    match login(
        ctx,
        &mut client,
        &startup,
        tls,
        peer,
        info,
        &user,
        &database,
    )
    .await
    {
        Ok((upstream, identity, secret, version)) => {
            ctx.metrics.connection(ConnectionResult::Accepted);
            // The server's process for this session: what links the server's own logs
            // (pgaudit) to this session, whatever the client sets application_name to.
            ctx.audit.record(record::upstream(
                info,
                upstream.backend_pid,
                &upstream_application(&info.session),
            ));
            Some((
                client,
                upstream,
                LoggedIn {
                    identity,
                    secret,
                    version,
                },
            ))
        }
        Err(refused) => {
            ctx.metrics.connection(ConnectionResult::Refused);
            ctx.metrics.error(ErrorKind::Auth);
            tracing::info!(user, reason = %refused.audit, "login refused");
            let method = method_for(&user);
            ctx.audit.record(record::auth(
                info,
                method,
                &user,
                &database,
                Err(&refused.audit),
            ));
            let _ = refuse(&mut client, refused.code, &refused.client).await;
            None
        }
    }
}

/// The application name of the proxy's upstream session: `dbgw:<session id>`.
pub fn upstream_application(session: &str) -> String {
    format!("dbgw:{session}")
}

fn method_for(user: &str) -> &'static str {
    if user.contains('@') {
        "oidc"
    } else {
        "scram-sha-256"
    }
}

/// SSLRequest / GSSENCRequest / direct TLS, until the client sends its StartupMessage (or a
/// CancelRequest).
async fn negotiate(
    ctx: &Context,
    mut tcp: TcpStream,
) -> Result<(ClientStream, Request), ReadError> {
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 1 && first[0] == TLS_HANDSHAKE {
        let Some(acceptor) = &ctx.tls else {
            return Err(crate::protocol::ProtocolError::new(
                "direct TLS without a server certificate",
            )
            .into());
        };
        let mut tls = acceptor.accept(tcp).await?;
        let request = wire::read_startup(&mut tls).await?;
        return Ok((Either::Left(tls), request));
    }
    // A client may try GSSAPI encryption first, then TLS: allow a few rounds.
    for _ in 0..3 {
        match wire::read_startup(&mut tcp).await? {
            Request::Ssl => match &ctx.tls {
                Some(acceptor) => {
                    tcp.write_all(b"S").await?;
                    let mut tls = acceptor.accept(tcp).await?;
                    let request = wire::read_startup(&mut tls).await?;
                    if matches!(request, Request::Ssl | Request::GssEnc) {
                        return Err(crate::protocol::ProtocolError::new(
                            "encryption requested twice",
                        )
                        .into());
                    }
                    return Ok((Either::Left(tls), request));
                }
                None => tcp.write_all(b"N").await?,
            },
            Request::GssEnc => tcp.write_all(b"N").await?,
            other => return Ok((Either::Right(tcp), other)),
        }
    }
    Err(crate::protocol::ProtocolError::new("too many encryption requests").into())
}

/// Checks the start-up message, authenticates the client and logs in upstream.
#[allow(clippy::too_many_arguments)]
async fn login<S: AsyncRead + AsyncWrite + Unpin>(
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
    let (creds, version, secret_id, identity) = if user.contains('@') {
        let person = auth::person::authenticate(ctx, client, &mut buf, user, database, tls).await?;
        crate::sql::run_as_role(&mut extra, &person.role)
            .map_err(|why| Refused::new(sqlstate::INSUFFICIENT_PRIVILEGE, why.clone(), why))?;
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
        ctx, info, &identity, user, database, &creds, &version, startup,
    )
    .await?;
    let upstream = match upstream_login(ctx, database, &creds, &extra).await {
        Ok(upstream) => upstream,
        // A person's password may have rotated since we read it: read it again, once. (A
        // service's is the one its client proved; the client rereads its secret and retries.)
        // The record keeps the version first read; the log has the one used.
        Err(r)
            if r.code == sqlstate::INVALID_AUTHORIZATION_SPECIFICATION
                && matches!(identity, Identity::Person { .. }) =>
        {
            ctx.secrets.refresh(&secret_id);
            let (version, creds) = ctx
                .secrets
                .db_credentials_at(&secret_id, secret_store::Stage::Current)
                .await
                .map_err(|e| {
                    Refused::new(
                        sqlstate::CONNECTION_FAILURE,
                        "the database is unavailable; try again later",
                        format!("person credentials unavailable: {e}"),
                    )
                })?;
            tracing::info!(%version, "logging in again with a rotated password");
            let upstream = upstream_login(ctx, database, &creds, &extra).await?;
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
) -> Result<(), Refused> {
    let application = startup.get("application_name").unwrap_or("");
    info.logged_in(identity, database, &creds.username, version, application);
    let auth_record = record::auth(info, method_for(user), user, database, Ok(()));
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
    extra: &[(String, String)],
) -> Result<crate::upstream::Session, Refused> {
    ctx.upstream
        .login(&creds.username, database, &creds.password, extra)
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
        })
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

/// Routes a CancelRequest: a key this replica holds goes to the database; any other key
/// goes to the peers, and only the replica holding it acts on it.
async fn forward_cancel(ctx: &Context, pid: i32, secret: &[u8]) {
    if cancel_here(ctx, pid, secret, CancelRoute::Local).await {
        return;
    }
    if let (Ok(secret), true) = (<[u8; 4]>::try_from(secret), ctx.fleet.has_peers()) {
        ctx.metrics.cancel(CancelRoute::Forwarded);
        if ctx.fleet.forward(pid, secret).await {
            return;
        }
    }
    // As PostgreSQL does: say nothing to the sender of a wrong key.
    ctx.metrics.cancel(CancelRoute::Unknown);
    let owner = crate::cancel::owner(pid);
    tracing::info!(pid, owner, "cancel request with an unknown key");
}

/// Cancels what this replica's session with key (`pid`, `secret`) runs, counted under
/// `route`; false when no live session here has that key.
pub async fn cancel_here(ctx: &Context, pid: i32, secret: &[u8], route: CancelRoute) -> bool {
    let Some((backend_pid, backend_secret)) = ctx.cancels.lookup(pid, secret) else {
        return false;
    };
    ctx.metrics.cancel(route);
    if let Err(e) = ctx.upstream.cancel(backend_pid, &backend_secret).await {
        tracing::warn!(error = %e, "forwarding a cancel request failed");
    }
    true
}

/// Sends a FATAL error and closes.
async fn refuse<S: AsyncWrite + Unpin>(
    stream: &mut S,
    code: &str,
    message: &str,
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    backend::error(&mut out, "FATAL", code, message);
    stream.write_all(&out).await?;
    stream.flush().await?;
    stream.shutdown().await
}
