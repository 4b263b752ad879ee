//! The proxy's own connection to the database: TCP, TLS with full verification, start-up,
//! and login (SCRAM-SHA-256, or a cleartext password such as an RDS IAM token, only inside
//! TLS). What the server reports during start-up (parameters, its cancel key) is collected
//! for the session to pass on.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rustls::pki_types::ServerName;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::either::Either;

use crate::auth::scram;
use crate::protocol::backend::{self, ErrorFields};
use crate::protocol::{frame, startup};
use crate::wire;
use pg_connect::TlsMode;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub use crate::stream::UpstreamStream as Stream;

/// The database behind the proxy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamSettings {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// CA bundle for the database's certificate (e.g. the RDS global bundle); unset means
    /// the public web roots.
    pub ca_file: Option<PathBuf>,
    /// Name checked against the certificate; defaults to `host`.
    pub server_name: Option<String>,
    pub connect_timeout_secs: u64,
    /// How the proxy proves itself to the database: `password` (from the secret store) or
    /// `rds-iam` (an IAM auth token signed with the task's AWS credentials, sent as the
    /// password; needs `tls = "verify-full"`). People's roles then need no password at all.
    pub auth: UpstreamAuth,
    /// `rds-iam`: the database's region; unset, the AWS SDK's chain decides.
    pub region: Option<String>,
    /// The proxy's client certificate (PEM) and its key, presented when the database asks
    /// for one: outside AWS, `pg_hba` admits people's roles only with it
    /// (`clientcert=verify-ca`), so a person's password is useless without the proxy.
    /// Both or neither.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

/// `password` or `rds-iam`: how people's roles log in upstream, the same choice the approvals
/// app's `people.login` makes when it provisions them (one type for both).
pub type UpstreamAuth = grants::PeopleLogin;

impl UpstreamSettings {
    /// The server as the workspace's connect helper sees it (its TLS policy included).
    pub fn target(&self) -> pg_connect::Target {
        pg_connect::Target {
            host: self.host.clone(),
            port: self.port,
            tls: self.tls,
            ca_file: self.ca_file.clone(),
            connect_timeout: std::time::Duration::from_secs(self.connect_timeout_secs),
            // Half a pair is refused by `Settings::validate` and `Connector::new`.
            client_cert: self.client_cert().ok().flatten(),
        }
    }

    /// The configured client certificate; an error when only one of its files is set.
    pub fn client_cert(&self) -> Result<Option<pg_connect::ClientCert>, pg_connect::ConnectError> {
        pg_connect::ClientCert::from_paths(
            self.client_cert_file.as_ref(),
            self.client_key_file.as_ref(),
        )
    }
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            host: "127.0.0.1".into(),
            port: 5433,
            tls: TlsMode::VerifyFull,
            ca_file: Some(PathBuf::from(".dev/pg/ca.crt")),
            server_name: None,
            connect_timeout_secs: 10,
            auth: UpstreamAuth::Password,
            region: None,
            client_cert_file: None,
            client_key_file: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The database could not be reached or spoke nonsense.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database answered with an error (bad login, unknown database, too many
    /// connections...): passed on to the client.
    #[error("database refused the session: {} ({})", .0.message, .0.code)]
    Refused(ErrorFields),
}

fn unavailable(e: impl std::fmt::Display) -> UpstreamError {
    UpstreamError::Unavailable(e.to_string())
}

/// A logged-in upstream session, ready for queries.
pub struct Session {
    pub stream: Stream,
    /// The server's ParameterStatus messages, raw, to replay to the client.
    pub parameters: BytesMut,
    /// The server's cancel key.
    pub backend_pid: i32,
    pub backend_secret: Vec<u8>,
    /// ReadyForQuery's status byte.
    pub status: u8,
}

/// Everything needed to reach the database.
pub struct Connector {
    settings: UpstreamSettings,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// `auth = "rds-iam"`: signs a token per login instead of using the stored password.
    iam: Option<crate::rds_iam::IamSigner>,
}

impl Connector {
    pub fn new(settings: &UpstreamSettings) -> anyhow::Result<Self> {
        let client_cert = settings.client_cert()?;
        settings.target().check()?;
        let tls = match settings.tls {
            TlsMode::Disable => None,
            TlsMode::VerifyFull => {
                let config = tls_config::client_config_with_identity(
                    settings.ca_file.as_deref(),
                    client_cert.as_ref().map(pg_connect::ClientCert::identity),
                )?;
                let name = settings
                    .server_name
                    .clone()
                    .unwrap_or_else(|| settings.host.clone());
                let name = ServerName::try_from(name)
                    .map_err(|e| anyhow::anyhow!("upstream server name: {e}"))?;
                Some((TlsConnector::from(Arc::clone(&config)), name))
            }
        };
        let iam = (settings.auth == UpstreamAuth::RdsIam)
            .then(|| crate::rds_iam::IamSigner::new(settings.region.clone()));
        Ok(Connector {
            settings: settings.clone(),
            tls,
            iam,
        })
    }

    pub fn address(&self) -> String {
        format!("{}:{}", self.settings.host, self.settings.port)
    }

    /// TCP, then TLS if configured.
    async fn open(&self) -> Result<Stream, UpstreamError> {
        let timeout = Duration::from_secs(self.settings.connect_timeout_secs);
        let tcp = crate::clock::timeout(timeout, TcpStream::connect(self.address()))
            .await
            .map_err(|_| unavailable(format!("connecting to {} timed out", self.address())))?
            .map_err(|e| unavailable(format!("connecting to {}: {e}", self.address())))?;
        tcp.set_nodelay(true).map_err(unavailable)?;
        let Some((connector, name)) = &self.tls else {
            return Ok(Either::Right(tcp));
        };
        let mut tcp = tcp;
        let mut req = BytesMut::new();
        startup::ssl_request(&mut req);
        tcp.write_all(&req).await.map_err(unavailable)?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await.map_err(unavailable)?;
        if answer[0] != b'S' {
            return Err(unavailable("the database does not accept TLS"));
        }
        let tls = crate::clock::timeout(timeout, connector.connect(name.clone(), tcp))
            .await
            .map_err(|_| unavailable("TLS handshake with the database timed out"))?
            .map_err(|e| unavailable(format!("TLS handshake with the database: {e}")))?;
        Ok(Either::Left(tls))
    }

    /// How a login proves itself: `rds-iam` is for people's roles only (their roles have
    /// no password, and the task role may connect as `p_*` only); a service always logs in
    /// with the password its client proved.
    pub fn uses_iam(&self, person: bool) -> bool {
        person && self.iam.is_some()
    }

    /// Opens a session as `user` on `database`, passing the client's other start-up
    /// parameters along. `person`: the login is a person's (see [`Connector::uses_iam`]).
    pub async fn login(
        &self,
        user: &str,
        database: &str,
        password: &SecretString,
        person: bool,
        extra: &[(String, String)],
    ) -> Result<Session, UpstreamError> {
        let token;
        let password = match self.iam.as_ref().filter(|_| self.uses_iam(person)) {
            Some(signer) => {
                // The AWS SDK's timers need the timer thread's runtime (crate::clock).
                token = crate::clock::with_timers(signer.token(
                    &self.settings.host,
                    self.settings.port,
                    user,
                ))
                .await
                .map_err(|e| unavailable(format!("{e:#}")))?;
                &token
            }
            None => password,
        };
        let mut stream = self.open().await?;
        let mut out = BytesMut::new();
        let mut params: Vec<(&str, &str)> = vec![("user", user), ("database", database)];
        params.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        startup::startup_message(&mut out, &params);
        stream.write_all(&out).await.map_err(unavailable)?;

        let mut buf = BytesMut::with_capacity(4096);
        let mut scram: Option<scram::ClientExchange> = None;
        let mut scram_final: Option<scram::ClientFinal> = None;
        let mut parameters = BytesMut::new();
        let mut key: Option<(i32, Vec<u8>)> = None;
        loop {
            let (tag, body) = wire::read_message(&mut stream, &mut buf, 1 << 20)
                .await
                .map_err(|e| unavailable(format!("during login: {e}")))?;
            match tag {
                backend::AUTHENTICATION => {
                    let mut b = &body[..];
                    if b.len() < 4 {
                        return Err(unavailable("truncated authentication request"));
                    }
                    let code = b.get_i32();
                    out.clear();
                    match code {
                        0 => {}
                        3 => {
                            if self.tls.is_none() && !pg_connect::is_loopback(&self.settings.host) {
                                return Err(unavailable("refusing to send a cleartext password without TLS"));
                            }
                            startup::password(&mut out, password.expose_secret());
                        }
                        10 => {
                            let offered = b
                                .split(|&c| c == 0)
                                .any(|m| m == scram::MECHANISM.as_bytes());
                            if !offered {
                                return Err(unavailable("the database offers no SASL mechanism we support"));
                            }
                            let (exchange, first) = scram::ClientExchange::start();
                            scram = Some(exchange);
                            startup::sasl_initial_response(&mut out, scram::MECHANISM, first.as_bytes());
                        }
                        11 => {
                            let exchange = scram.take().ok_or_else(|| unavailable("unexpected SASLContinue"))?;
                            let (fin, msg) = exchange
                                .respond(password.expose_secret(), b)
                                .map_err(unavailable)?;
                            scram_final = Some(fin);
                            startup::sasl_response(&mut out, msg.as_bytes());
                        }
                        12 => {
                            let fin = scram_final.take().ok_or_else(|| unavailable("unexpected SASLFinal"))?;
                            fin.verify(b).map_err(unavailable)?;
                        }
                        other => {
                            return Err(unavailable(format!(
                                "the database asks for authentication method {other}, which dbgw does not use"
                            )))
                        }
                    }
                    if !out.is_empty() {
                        stream.write_all(&out).await.map_err(unavailable)?;
                    }
                }
                backend::PARAMETER_STATUS => {
                    let (name, value) = backend::parameter_status(&body).map_err(unavailable)?;
                    if !crate::sql::keeps_pinned_value(name, value) {
                        return Err(unavailable(format!(
                            "the database reports {name} = {value}; dbgw needs the pinned value"
                        )));
                    }
                    parameters.extend_from_slice(&[tag]);
                    parameters.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
                    parameters.extend_from_slice(&body);
                }
                backend::BACKEND_KEY_DATA => {
                    if body.len() < 8 {
                        return Err(unavailable("truncated BackendKeyData"));
                    }
                    let pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    key = Some((pid, body[4..].to_vec()));
                }
                backend::ERROR_RESPONSE => {
                    let fields = backend::error_fields(&body).map_err(unavailable)?;
                    return Err(UpstreamError::Refused(fields));
                }
                backend::NOTICE_RESPONSE | backend::NEGOTIATE_PROTOCOL_VERSION => {}
                backend::READY_FOR_QUERY => {
                    let status = backend::ready_status(&body).map_err(unavailable)?;
                    let (backend_pid, backend_secret) =
                        key.ok_or_else(|| unavailable("the database sent no cancel key"))?;
                    if !buf.is_empty() {
                        return Err(unavailable("the database sent data before the first query"));
                    }
                    return Ok(Session {
                        stream,
                        parameters,
                        backend_pid,
                        backend_secret,
                        status,
                    });
                }
                other => {
                    return Err(unavailable(format!(
                        "unexpected message {:?} during login",
                        frame::printable(other)
                    )))
                }
            }
        }
    }

    /// Sends a CancelRequest for the backend `pid`/`secret`, on a new connection.
    pub async fn cancel(&self, pid: i32, secret: &[u8]) -> Result<(), UpstreamError> {
        let mut stream = self.open().await?;
        let mut out = BytesMut::new();
        startup::cancel_request(&mut out, pid, secret);
        stream.write_all(&out).await.map_err(unavailable)?;
        stream.flush().await.map_err(unavailable)?;
        // The server closes the connection once it has read the request.
        let mut sink = [0u8; 64];
        let _ = crate::clock::timeout(Duration::from_secs(5), stream.read(&mut sink)).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(auth: UpstreamAuth) -> Connector {
        Connector::new(&UpstreamSettings {
            tls: TlsMode::Disable,
            auth,
            ..UpstreamSettings::default()
        })
        .expect("connector")
    }

    #[test]
    fn rds_iam_signs_for_people_only() {
        // With rds-iam, a service still logs in with the password its client proved: its
        // role is no member of rds_iam and the task role may connect as p_* only.
        let iam = connector(UpstreamAuth::RdsIam);
        assert!(iam.uses_iam(true));
        assert!(!iam.uses_iam(false));
        let password = connector(UpstreamAuth::Password);
        assert!(!password.uses_iam(true));
        assert!(!password.uses_iam(false));
    }
}
