//! The running proxy: binding the ports and building the [`Context`] sessions share (the
//! only place that does), the accept loop and session threads, the admin endpoint, and
//! graceful shutdown (stop accepting, let sessions finish up to a deadline, close the rest,
//! flush the audit log).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use secret_store::SecretStore;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::access::Access;
use crate::audit::AuditLog;
use crate::auth::person::People;
use crate::auth::service::Verifiers;
use crate::auth::token::TokenVerifier;
use crate::cancel::keys::CancelMap;
use crate::cancel::local::Canceller;
use crate::context::Context;
use crate::fleet::Fleet;
use crate::metrics::ConnectionResult;
use crate::metrics::{self, Metrics};
use crate::protocol::sqlstate;
use crate::sessions::{Handshakes, Sessions};
use crate::settings::Settings;
use crate::upstream::Connector;

/// A proxy bound to its ports, ready to run.
pub struct Server {
    ctx: Arc<Context>,
    listener: TcpListener,
    admin: TcpListener,
    /// Forwarded cancel requests from peers (`fleet.listen`).
    peers: Option<TcpListener>,
}

impl Server {
    /// Opens the audit log, loads TLS material and binds both ports.
    pub async fn bind(settings: Settings) -> anyhow::Result<Server> {
        let secrets = SecretStore::from_settings(&settings.secrets);
        Self::bind_with_secrets(settings, secrets).await
    }

    /// [`Server::bind`] with a secret store made by the caller (tests: an emulator client
    /// with static credentials).
    pub async fn bind_with_secrets(
        settings: Settings,
        secrets: SecretStore,
    ) -> anyhow::Result<Server> {
        settings.validate()?;
        let metrics = Metrics::new();
        let replica = settings.fleet.replica_name();
        let audit = AuditLog::open(settings.audit.clone(), &replica, metrics.audit.clone())?;
        let fleet = Arc::new(Fleet::new(settings.fleet.clone(), &secrets).await?);
        let tls = match (&settings.tls.cert_file, &settings.tls.key_file) {
            (Some(cert), Some(key)) => {
                let mut config = Arc::unwrap_or_clone(tls_config::server_config(cert, key)?);
                // PostgreSQL 17 clients using direct TLS require this ALPN protocol.
                config.alpn_protocols = vec![b"postgresql".to_vec()];
                Some(TlsAcceptor::from(Arc::new(config)))
            }
            _ => None,
        };
        let upstream = Arc::new(Connector::new(&settings.upstream)?);
        let people = if settings.oidc.issuer.is_empty() {
            None
        } else {
            let tokens = TokenVerifier::new(settings.oidc.clone())?;
            // Start with the keys in hand; if the provider is down, the refresher retries.
            if let Err(e) = tokens.refresh().await {
                tracing::warn!(error = %e, "identity provider keys unavailable at start-up");
            }
            let access = Access::new(
                settings.grants.clone(),
                settings.upstream.clone(),
                secrets.clone(),
                metrics.grants_listening.clone(),
                metrics
                    .sessions_closed
                    .get_or_create(&[("reason", crate::metrics::Closed::Revoked.label())])
                    .clone(),
            );
            Some(People {
                tokens,
                access,
                secrets: secrets.clone(),
                upstream_auth: settings.upstream.auth,
            })
        };
        let canceller = Arc::new(Canceller::new(
            CancelMap::new(settings.fleet.effective_index()),
            upstream.clone(),
            metrics.clone(),
        ));
        let ctx = Arc::new(Context {
            upstream,
            secrets,
            people,
            audit,
            tls,
            canceller,
            fleet,
            verifiers: Verifiers::default(),
            metrics,
            sessions: Arc::new(Sessions::default()),
            handshakes: Handshakes::default(),
            settings,
        });
        let listener = TcpListener::bind(&ctx.settings.listen)
            .await
            .with_context(|| format!("binding {}", ctx.settings.listen))?;
        let admin = TcpListener::bind(&ctx.settings.admin_listen)
            .await
            .with_context(|| format!("binding {}", ctx.settings.admin_listen))?;
        let peers = match ctx.settings.fleet.listen.as_str() {
            "" => None,
            addr => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding fleet.listen {addr}"))?,
            ),
        };
        Ok(Server {
            ctx,
            listener,
            admin,
            peers,
        })
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.listener.local_addr().expect("bound")
    }

    pub fn admin_addr(&self) -> std::net::SocketAddr {
        self.admin.local_addr().expect("bound")
    }

    /// Where peers forward cancel requests, when `fleet.listen` is set.
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.peers.as_ref().map(|l| l.local_addr().expect("bound"))
    }

    pub fn context(&self) -> Arc<Context> {
        self.ctx.clone()
    }

    /// Serves until `stop` resolves, then shuts down gracefully.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        let Server {
            ctx,
            listener,
            admin,
            peers,
        } = self;
        let background = CancellationToken::new();
        let draining = Arc::new(AtomicBool::new(false));
        if let Some(people) = &ctx.people {
            tokio::spawn(people.tokens.clone().run_refresher(background.clone()));
            tokio::spawn(
                people
                    .access
                    .clone()
                    .watch(ctx.sessions.clone(), background.clone()),
            );
        }
        if let Some(peers) = peers {
            tokio::spawn(
                ctx.fleet
                    .clone()
                    .serve(peers, ctx.canceller.clone(), background.clone()),
            );
        }
        let health = metrics::Health {
            metrics: ctx.metrics.clone(),
            audit: ctx.audit.clone(),
            draining: draining.clone(),
        };
        let admin_stop = background.clone();
        tokio::spawn(async move {
            let app = metrics::router(health);
            let _ = axum::serve(admin, app)
                .with_graceful_shutdown(async move { admin_stop.cancelled().await })
                .await;
        });
        tracing::info!(listen = %ctx.settings.listen, admin = %ctx.settings.admin_listen, upstream = %ctx.upstream.address(), "proxy listening");

        let tracker = tokio_util::task::TaskTracker::new();
        crate::clock::start();
        let workers = Workers::start(&ctx, &tracker)?;
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        if tracker.len() >= ctx.settings.limits.max_connections {
                            ctx.metrics.connection(ConnectionResult::OverLimit);
                            drop(tcp);
                            continue;
                        }
                        workers.dispatch(tcp, peer);
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        crate::clock::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }

        // Graceful shutdown: no new sessions; running ones get the grace period.
        drop(listener);
        drop(workers);
        draining.store(true, Ordering::Relaxed);
        tracker.close();
        let grace = Duration::from_secs(ctx.settings.shutdown_grace_secs);
        tracing::info!(
            sessions = ctx.sessions.count(),
            grace_secs = grace.as_secs(),
            "draining sessions"
        );
        if crate::clock::timeout(grace, tracker.wait()).await.is_err() {
            let n = ctx.sessions.halt_where(
                |_| true,
                sqlstate::ADMIN_SHUTDOWN,
                "terminating connection: the proxy is shutting down",
            );
            tracing::warn!(sessions = n, "grace period over: closing sessions");
            let _ = crate::clock::timeout(Duration::from_secs(10), tracker.wait()).await;
        }
        background.cancel();
        ctx.audit.close().map_err(|e| anyhow::anyhow!("{e}"))?;
        tracing::info!("proxy stopped");
        Ok(())
    }
}

type Handoff = (std::net::TcpStream, std::net::SocketAddr);

/// Session threads, each running its own single-threaded runtime. A session lives on one
/// thread from start to end: no work stealing and no cross-thread wake-ups in the relay,
/// which on a small machine cost more than they save. Connections are dealt round-robin.
struct Workers {
    senders: Vec<tokio::sync::mpsc::UnboundedSender<Handoff>>,
    next: std::sync::atomic::AtomicUsize,
}

impl Workers {
    fn start(
        ctx: &Arc<Context>,
        tracker: &tokio_util::task::TaskTracker,
    ) -> anyhow::Result<Workers> {
        let n = match ctx.settings.worker_threads {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        };
        let mut senders = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Handoff>();
            // No timer driver: it cost every park (two per statement) a lock, a scan of
            // the timer wheel and a clock read. Session timers are on the timer thread.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()?;
            let (ctx, tracker) = (ctx.clone(), tracker.clone());
            std::thread::Builder::new()
                .name(format!("session-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        while let Some((tcp, peer)) = rx.recv().await {
                            match tokio::net::TcpStream::from_std(tcp) {
                                Ok(tcp) => {
                                    tracker.spawn(crate::session::serve(ctx.clone(), tcp, peer));
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "registering a connection failed")
                                }
                            }
                        }
                        // No more connections: keep running until this thread's sessions end.
                        tracker.wait().await;
                    })
                })?;
            senders.push(tx);
        }
        Ok(Workers {
            senders,
            next: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    fn dispatch(&self, tcp: tokio::net::TcpStream, peer: std::net::SocketAddr) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.senders.len();
        match tcp.into_std() {
            Ok(std) => {
                let _ = self.senders[i].send((std, peer));
            }
            Err(e) => tracing::warn!(error = %e, "handing a connection over failed"),
        }
    }
}
