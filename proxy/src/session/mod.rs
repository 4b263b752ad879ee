//! One client connection, start to end: TLS negotiation ([`negotiate`]), start-up checks,
//! authentication and the upstream login ([`login`]), the relay, and the connection records
//! of the audit log.

mod login;
mod negotiate;
pub mod timers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::either::Either;
use tracing::Instrument;

use crate::audit::record::{self, Totals};
use crate::audit::{Identity, SessionInfo};
use crate::context::Context;
use crate::halt::Halt;
use crate::metrics::{ConnectionResult, ErrorKind};
use crate::protocol::backend;
use crate::protocol::sqlstate;
use crate::protocol::startup::Request;
use crate::relay;
use crate::relay::quiet::Quiet;
use crate::stream::ClientStream;
use crate::wire::ReadError;

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
    let resolved = crate::clock::timeout(
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

    let opened = crate::clock::timeout(timeout, open(&ctx, tcp, peer, &mut info)).await;
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
        .canceller
        .keys()
        .register(upstream.backend_pid, upstream.backend_secret.clone());
    let halt = Arc::new(Halt::default());
    // A person's session ends when the grant does, whether or not the control plane can be
    // reached to say so; the grant watcher moves that end when the grant is extended. The
    // policy's (or services') idle and age limits run beside it.
    let (limits, grant_end) = match &identity {
        Identity::Person {
            grant_expires_at,
            policy,
            ..
        } => (
            timers::Limits::of_grant(policy),
            Some(tokio::sync::watch::Sender::new(*grant_expires_at)),
        ),
        Identity::Service { .. } => (
            timers::Limits::of_services(&ctx.settings.sessions.services),
            None,
        ),
    };
    let timers = timers::Timers::new(
        &ctx.settings.sessions,
        limits,
        grant_end.as_ref().map(|tx| tx.subscribe()),
    );
    let quiet = timers
        .any()
        .then(|| Arc::new(Quiet::new(limits.tracks_idle(), upstream.status)));
    let timer_task = quiet.clone().map(|quiet| {
        tokio::spawn(
            timers::run(
                timers,
                started.into(),
                quiet,
                halt.clone(),
                ctx.metrics.clone(),
            )
            .in_current_span(),
        )
    });
    let registration = ctx
        .sessions
        .add(&info.session, identity.clone(), halt.clone(), grant_end);
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
        let (caller, read_only) = match &identity {
            Identity::Person { policy, .. } => (crate::sql::Caller::Person, policy.read_only),
            Identity::Service { .. } => (crate::sql::Caller::Service, false),
        };
        let result = relay::run(
            &deps,
            &info,
            caller,
            read_only,
            client,
            upstream.stream,
            upstream.status,
            &halt,
            quiet,
        )
        .await;
        ctx.metrics.active_sessions.dec();
        result
    };
    if let Some(task) = timer_task {
        task.abort();
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
    let (mut client, request) = match negotiate::negotiate(ctx.tls.as_ref(), tcp).await {
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
            crate::cancel::route(&ctx.canceller, &ctx.fleet, pid, &secret).await;
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

    match login::login(
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
            let method = login::method_for(&user);
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
