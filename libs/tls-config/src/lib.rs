//! TLS configuration for every dbgw binary.
//!
//! The workspace uses exactly one rustls crypto provider (ring): with two compiled in, rustls
//! cannot pick a default and panics at run time. [`install_provider`] makes ring the process
//! default; the builders here call it, so callers rarely need to.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Makes ring the process-wide rustls provider. Idempotent.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A server configuration from a PEM certificate chain and a PEM private key.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    install_provider();
    let chain = load_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading TLS private key {}", key.display()))?;
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("TLS certificate and key do not match")?;
    Ok(Arc::new(config))
}

/// A client configuration that verifies the server's certificate and host name against
/// `ca_bundle` (e.g. the RDS global bundle), or against the public web roots when `None`.
pub fn client_config(ca_bundle: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    client_config_with_identity(ca_bundle, None)
}

/// A client's own certificate: PEM chain and PEM private key, e.g. the proxy's certificate
/// that a server's `pg_hba` asks of people's logins (`clientcert=verify-ca`).
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// [`client_config`] that also presents `identity` when the server asks for a client
/// certificate.
pub fn client_config_with_identity(
    ca_bundle: Option<&Path>,
    identity: Option<Identity<'_>>,
) -> anyhow::Result<Arc<ClientConfig>> {
    install_provider();
    let mut roots = RootCertStore::empty();
    match ca_bundle {
        Some(path) => {
            for cert in load_certs(path)? {
                roots
                    .add(cert)
                    .with_context(|| format!("bad CA certificate in {}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let chain = load_certs(id.cert)?;
            let key = PrivateKeyDer::from_pem_file(id.key).with_context(|| {
                format!("reading the client certificate's key {}", id.key.display())
            })?;
            builder.with_client_auth_cert(chain, key).with_context(|| {
                format!(
                    "client certificate {} and key {} do not match",
                    id.cert.display(),
                    id.key.display()
                )
            })?
        }
    };
    Ok(Arc::new(config))
}

/// Every certificate in a PEM file; an empty file is an error.
pub fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("opening certificate file {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificate file {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", path.display());
    Ok(certs)
}

/// A tokio-postgres TLS connector that verifies the server against `ca_bundle`: with
/// `sslmode=require` this behaves as libpq's `verify-full`.
pub fn postgres_connector(
    ca_bundle: Option<&Path>,
) -> anyhow::Result<tokio_postgres_rustls::MakeRustlsConnect> {
    postgres_connector_with_identity(ca_bundle, None)
}

/// [`postgres_connector`] that presents `identity` when the server asks for a client
/// certificate.
pub fn postgres_connector_with_identity(
    ca_bundle: Option<&Path>,
    identity: Option<Identity<'_>>,
) -> anyhow::Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let config = client_config_with_identity(ca_bundle, identity)?;
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(
        Arc::unwrap_or_clone(config),
    ))
}
