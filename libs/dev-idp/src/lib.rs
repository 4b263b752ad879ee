//! The development identity provider (`idp/server.js`, node `oidc-provider`) as tests and
//! benchmarks use it: on a free port, with its own key directory, stopped when dropped.
//!
//! Every crate that needs a real OpenID provider starts it through [`DevIdp`], so there is
//! one way to do it. Tokens come from `idp/token.js`, which signs in through the real
//! authorization-code + PKCE flow.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, ensure, Context};

/// How long the provider may take to start (node and `oidc-provider` load in about a second).
const START_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A running development identity provider.
pub struct DevIdp {
    issuer: String,
    child: Child,
    state: tempfile::TempDir,
}

/// The `idp/` folder of this repository.
pub fn idp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../idp")
}

impl DevIdp {
    /// Starts the provider with its defaults.
    pub fn start() -> anyhow::Result<DevIdp> {
        DevIdp::start_with(&[])
    }

    /// Starts the provider with extra `IDP_*` settings (e.g. `IDP_ID_TOKEN_TTL`).
    pub fn start_with(env: &[(&str, &str)]) -> anyhow::Result<DevIdp> {
        let state = tempfile::tempdir()?;
        let mut child = Command::new("node")
            .arg(idp_dir().join("server.js"))
            .env("IDP_PORT", "0")
            .env("IDP_STATE_DIR", state.path())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("node is needed for the identity provider (run `make test-deps`)")?;
        // Its first line says where it listens. Read on a thread of its own, so a provider
        // that neither says it nor exits fails the caller instead of holding it for ever.
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = tx.send(read);
        });
        let line = match rx.recv_timeout(START_LIMIT) {
            Ok(read) => read?,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the identity provider did not say where it listens within {START_LIMIT:?}");
            }
        };
        let Some(issuer) = line.trim().strip_prefix("idp listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the identity provider did not start (npm ci --prefix idp?): {line:?}");
        };
        Ok(DevIdp {
            issuer: issuer.to_string(),
            child,
            state,
        })
    }

    /// The issuer URL (`http://127.0.0.1:<port>`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Where the provider keeps its signing keys.
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// A real ID token for `email`, through the authorization-code + PKCE flow, signed in
    /// with the password only (`amr` `["pwd"]`).
    pub fn token(&self, email: &str) -> anyhow::Result<String> {
        self.token_with(email, &[])
    }

    /// A token for `email` signed in with the password and the dev one-time code (`amr`
    /// `["pwd","otp","mfa"]`, `acr` `mfa`).
    pub fn mfa_token(&self, email: &str) -> anyhow::Result<String> {
        self.token_with(email, &["--mfa"])
    }

    /// A token with more `idp/token.js` options, e.g. `["--mfa", "--auth-age", "3600"]` for
    /// a multi-factor sign-in an hour ago (its `auth_time`).
    pub fn token_with(&self, email: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("node")
            .arg(idp_dir().join("token.js"))
            .args(["--issuer", &self.issuer, "--email", email])
            .args(args)
            .output()?;
        ensure!(
            out.status.success(),
            "token.js: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }

    /// Makes the provider sign with a new key from now on (its dev-only endpoint).
    pub fn rotate_keys(&self) -> anyhow::Result<()> {
        let mut s = std::net::TcpStream::connect(self.issuer.trim_start_matches("http://"))?;
        s.write_all(
            b"POST /dev/rotate-keys HTTP/1.1\r\nHost: idp\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        ensure!(out.starts_with("HTTP/1.1 200"), "rotating keys: {out}");
        Ok(())
    }
}

impl Drop for DevIdp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
