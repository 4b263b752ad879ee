//! The one way dbgw components reach PostgreSQL. A [`Target`] says where the server is and
//! how to trust it ([`TlsMode`]); [`Target::connector`] checks the policy once (plain TCP
//! only to a loopback address) and builds the TLS set-up once; [`Connector::connect`] opens
//! tokio-postgres connections with it. The proxy's own wire-level upstream uses the same
//! policy through [`Target::check`]. [`set_password`] sets a role's password as a verifier.

mod password;

pub use password::{set_password, SetPasswordError};

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::ExposeSecret;
use secret_store::{DbCredentials, SecretStore};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config};

/// How a connection to the database is protected.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// TLS required, the certificate chain and host name verified (libpq's `verify-full`).
    VerifyFull,
    /// Plain TCP: allowed only to a loopback address (the local stack, benchmarks).
    Disable,
}

/// Where a PostgreSQL server is and how it is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// CA bundle that signed the server's certificate; `None` trusts the public web roots.
    pub ca_file: Option<PathBuf>,
    /// Limit on TCP connect plus TLS handshake plus login.
    pub connect_timeout: Duration,
    /// The certificate this client presents when the server asks for one (with
    /// `verify-full`): where `pg_hba` admits people's roles only with the proxy's
    /// certificate, the proxy and the rotation function hold it.
    pub client_cert: Option<ClientCert>,
}

/// A client certificate and its key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCert {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl ClientCert {
    /// From a configuration's pair of optional paths: both or neither.
    pub fn from_paths(
        cert_file: Option<&PathBuf>,
        key_file: Option<&PathBuf>,
    ) -> Result<Option<ClientCert>, ConnectError> {
        match (cert_file, key_file) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some(ClientCert {
                cert_file: cert.clone(),
                key_file: key.clone(),
            })),
            _ => Err(ConnectError::Policy(
                "a client certificate needs both its certificate file and its key file".into(),
            )),
        }
    }

    pub fn identity(&self) -> tls_config::Identity<'_> {
        tls_config::Identity {
            cert: &self.cert_file,
            key: &self.key_file,
        }
    }
}

/// Why a connection could not be opened. Never carries a password.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Policy(String),
    #[error("reading the database login from the secret store: {0}")]
    Secret(#[from] secret_store::Error),
    #[error("TLS set-up: {0}")]
    Tls(String),
    #[error("connecting to {what}: {source}")]
    Postgres {
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

impl ConnectError {
    /// The server's error, when the server answered (a refused login, a missing database).
    pub fn postgres(&self) -> Option<&tokio_postgres::Error> {
        match self {
            ConnectError::Postgres { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Whether `host` names this machine: an IP loopback address or `localhost`.
pub fn is_loopback(host: &str) -> bool {
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host == "localhost",
    }
}

impl Target {
    /// The policy: TLS may be off only when the server is on this machine, so that no
    /// password or query crosses a network in the clear.
    pub fn check(&self) -> Result<(), ConnectError> {
        if self.tls == TlsMode::Disable && !is_loopback(&self.host) {
            return Err(ConnectError::Policy(format!(
                "tls = \"disable\" is only allowed for a loopback database, not {}",
                self.host
            )));
        }
        // A certificate is presented only inside TLS: without it the server would see a
        // login without the certificate, and refuse it, for a reason hard to tell.
        if self.tls == TlsMode::Disable && self.client_cert.is_some() {
            return Err(ConnectError::Policy(
                "a client certificate needs tls = \"verify-full\"".into(),
            ));
        }
        Ok(())
    }

    /// Checks the policy and builds the TLS set-up, once for all connections to the target.
    pub fn connector(&self) -> Result<Connector, ConnectError> {
        self.check()?;
        let tls = match self.tls {
            TlsMode::Disable => None,
            TlsMode::VerifyFull => Some(
                tls_config::postgres_connector_with_identity(
                    self.ca_file.as_deref(),
                    self.client_cert.as_ref().map(ClientCert::identity),
                )
                .map_err(|e| ConnectError::Tls(format!("{e:#}")))?,
            ),
        };
        Ok(Connector {
            target: self.clone(),
            tls,
        })
    }

    /// One connection as `creds` to `dbname`; for connections opened now and then. Pools
    /// keep a [`Connector`] instead.
    pub async fn connect(
        &self,
        dbname: &str,
        creds: &DbCredentials,
        application: &str,
    ) -> Result<Client, ConnectError> {
        let connector = self.connector()?;
        let (client, _driver) = connector
            .connect(&connector.config(dbname, creds, application))
            .await?;
        Ok(client)
    }
}

impl Target {
    /// One connection as the login held in `secret`, read from `store` now (so a rotated
    /// password is used): "read the login, then connect", for connections opened now and
    /// then. A pool caches the login instead (`service::database::pool`).
    pub async fn connect_with_secret(
        &self,
        store: &SecretStore,
        secret: &str,
        dbname: &str,
        application: &str,
    ) -> Result<Client, ConnectError> {
        let creds = store.db_credentials(secret).await?;
        self.connect(dbname, &creds, application).await
    }
}

/// A checked [`Target`] with its TLS set-up built.
#[derive(Clone)]
pub struct Connector {
    target: Target,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl Connector {
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// tokio-postgres settings for `creds` on `dbname`; callers add their own (`options`).
    pub fn config(&self, dbname: &str, creds: &DbCredentials, application: &str) -> Config {
        let t = &self.target;
        let mut config = Config::new();
        config
            .host(&t.host)
            .port(t.port)
            .dbname(dbname)
            .user(&creds.username)
            .password(creds.password.expose_secret())
            .application_name(application)
            .connect_timeout(t.connect_timeout)
            .ssl_mode(match self.tls {
                Some(_) => SslMode::Require,
                None => SslMode::Disable,
            });
        config
    }

    /// [`Connector::config`] for the login held in `secret`, read from `store` now.
    pub async fn config_with_secret(
        &self,
        store: &SecretStore,
        secret: &str,
        dbname: &str,
        application: &str,
    ) -> Result<Config, ConnectError> {
        let creds = store.db_credentials(secret).await?;
        Ok(self.config(dbname, &creds, application))
    }

    /// Opens a connection with `config` (from [`Connector::config`]). A spawned task drives
    /// it; its handle is returned for callers that end it early (dropping it detaches).
    pub async fn connect(&self, config: &Config) -> Result<(Client, JoinHandle<()>), ConnectError> {
        let what = self.describe(config);
        let fail = |source| ConnectError::Postgres { what, source };
        match &self.tls {
            Some(tls) => {
                let (client, connection) = config.connect(tls.clone()).await.map_err(fail)?;
                Ok((client, tokio::spawn(drive(connection))))
            }
            None => {
                let (client, connection) =
                    config.connect(tokio_postgres::NoTls).await.map_err(fail)?;
                Ok((client, tokio::spawn(drive(connection))))
            }
        }
    }
}

/// Server messages that are not answers to queries (`NOTIFY` notifications, notices), as
/// they arrive; the stream ends when the connection does.
pub type Messages = tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::AsyncMessage>;

impl Connector {
    /// Like [`Connector::connect`], and hands over the connection's notifications (for
    /// `LISTEN`): the driving task forwards them instead of dropping them.
    pub async fn connect_listening(
        &self,
        config: &Config,
    ) -> Result<(Client, Messages, JoinHandle<()>), ConnectError> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let what = self.describe(config);
        let fail = |source| ConnectError::Postgres { what, source };
        let (client, task) = match &self.tls {
            Some(tls) => {
                let (client, connection) = config.connect(tls.clone()).await.map_err(fail)?;
                (client, tokio::spawn(forward(connection, tx)))
            }
            None => {
                let (client, connection) =
                    config.connect(tokio_postgres::NoTls).await.map_err(fail)?;
                (client, tokio::spawn(forward(connection, tx)))
            }
        };
        Ok((client, rx, task))
    }

    fn describe(&self, config: &Config) -> String {
        format!(
            "{}:{} (database {}, user {})",
            self.target.host,
            self.target.port,
            config.get_dbname().unwrap_or("?"),
            config.get_user().unwrap_or("?")
        )
    }
}

async fn forward<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    tx: tokio::sync::mpsc::UnboundedSender<tokio_postgres::AsyncMessage>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(message)) => {
                // A listener that went away still needs the connection driven until the
                // client is dropped.
                let _ = tx.send(message);
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "database connection ended");
                return;
            }
            None => return,
        }
    }
}

async fn drive<F>(connection: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>>,
{
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "database connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, tls: TlsMode) -> Target {
        Target {
            host: host.into(),
            port: 5432,
            tls,
            ca_file: None,
            connect_timeout: Duration::from_secs(1),
            client_cert: None,
        }
    }

    #[test]
    fn plain_tcp_only_to_this_machine() {
        for host in ["127.0.0.1", "::1", "localhost", "127.3.4.5"] {
            assert!(target(host, TlsMode::Disable).check().is_ok(), "{host}");
        }
        for host in [
            "10.0.0.5",
            "db.internal",
            "localhost.evil.example",
            "0.0.0.0",
        ] {
            let err = target(host, TlsMode::Disable).check().unwrap_err();
            assert!(err.to_string().contains("loopback"), "{host}: {err}");
            assert!(target(host, TlsMode::VerifyFull).check().is_ok(), "{host}");
        }
    }

    #[test]
    fn a_client_certificate_needs_both_files_and_tls() {
        let cert = PathBuf::from("c.crt");
        let key = PathBuf::from("c.key");
        assert_eq!(ClientCert::from_paths(None, None).unwrap(), None);
        assert!(ClientCert::from_paths(Some(&cert), Some(&key))
            .unwrap()
            .is_some());
        assert!(ClientCert::from_paths(Some(&cert), None).is_err());
        assert!(ClientCert::from_paths(None, Some(&key)).is_err());
        let mut plain = target("127.0.0.1", TlsMode::Disable);
        plain.client_cert = ClientCert::from_paths(Some(&cert), Some(&key)).unwrap();
        assert!(plain.check().is_err());
    }

    #[test]
    fn modes_are_spelled_as_libpq_spells_them() {
        let m: TlsMode = serde_json::from_str("\"verify-full\"").unwrap();
        assert_eq!(m, TlsMode::VerifyFull);
        assert!(serde_json::from_str::<TlsMode>("\"prefer\"").is_err());
    }
}
