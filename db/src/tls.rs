//! A small certificate authority for local clusters and tests. Its key lives beside the
//! cluster it belongs to and never leaves the machine; production uses real certificates.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// The stem of the client CA's files (`client-ca.crt`, `client-ca.key`) in a cluster's
/// directory: a CA of its own, which signs only the certificates that let people's roles
/// log in (the proxy's, the rotation function's). Were it the server CA, every server
/// certificate it signed (the proxy's listening one, for one) would open that door too.
pub const CLIENT_CA: &str = "client-ca";

fn ca_params() -> CertificateParams {
    named_ca_params("dbgw local CA")
}

fn client_ca_params() -> CertificateParams {
    named_ca_params("dbgw local client CA (people's logins)")
}

fn named_ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// Creates `ca.crt` and `ca.key` in `dir`.
pub fn create_ca(dir: &Path) -> anyhow::Result<()> {
    let key = KeyPair::generate()?;
    let cert = ca_params().self_signed(&key)?;
    std::fs::write(dir.join("ca.crt"), cert.pem())?;
    write_private(&dir.join("ca.key"), &key.serialize_pem())
}

/// Creates the client CA (`client-ca.crt`, `client-ca.key`) in `dir` unless it is there.
pub fn ensure_client_ca(dir: &Path) -> anyhow::Result<()> {
    if dir.join(format!("{CLIENT_CA}.crt")).exists() {
        return Ok(());
    }
    let key = KeyPair::generate()?;
    let cert = client_ca_params().self_signed(&key)?;
    write_private(&dir.join(format!("{CLIENT_CA}.key")), &key.serialize_pem())?;
    std::fs::write(dir.join(format!("{CLIENT_CA}.crt")), cert.pem())?;
    Ok(())
}

/// Issues a client certificate named `name` from the client CA in `ca_dir` (see
/// [`ensure_client_ca`]), written as `<stem>.crt` and `<stem>.key` in `out_dir`.
pub fn issue_client(
    ca_dir: &Path,
    name: &str,
    out_dir: &Path,
    stem: &str,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let ca_key_pem = std::fs::read_to_string(ca_dir.join(format!("{CLIENT_CA}.key")))
        .context("reading the client CA's key")?;
    let issuer = Issuer::new(client_ca_params(), KeyPair::from_pem(&ca_key_pem)?);
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    sign_and_write(params, &issuer, out_dir, stem)
}

/// Issues a server certificate for `names` (DNS names or IP addresses), signed by the CA in
/// `ca_dir`, written as `<stem>.crt` and `<stem>.key` in `out_dir`. Returns (cert, key) paths.
pub fn issue(
    ca_dir: &Path,
    names: &[&str],
    out_dir: &Path,
    stem: &str,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let ca_key_pem = std::fs::read_to_string(ca_dir.join("ca.key")).context("reading CA key")?;
    let ca_key = KeyPair::from_pem(&ca_key_pem)?;
    let issuer = Issuer::new(ca_params(), ca_key);

    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("localhost"),
    );
    sign_and_write(params, &issuer, out_dir, stem)
}

/// Signs `params` with a new key by `issuer` and writes `<stem>.crt` and `<stem>.key` (0600)
/// in `out_dir`. Returns (cert, key) paths.
fn sign_and_write(
    params: CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
    out_dir: &Path,
    stem: &str,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    let (crt, pem_key) = (
        out_dir.join(format!("{stem}.crt")),
        out_dir.join(format!("{stem}.key")),
    );
    std::fs::write(&crt, cert.pem())?;
    write_private(&pem_key, &key.serialize_pem())?;
    Ok((crt, pem_key))
}

pub(crate) fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    secret_store::write_private(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
