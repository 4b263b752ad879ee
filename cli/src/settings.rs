//! `dbgw`'s settings: where the identity provider, the proxy and the approvals app are.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The identity provider (OIDC issuer URL).
    pub issuer: String,
    /// This tool's client id at the provider (a public client: no secret).
    pub client_id: String,
    pub proxy_host: String,
    pub proxy_port: u16,
    /// CA bundle for the proxy's certificate; unset means the system's.
    pub ca_file: Option<PathBuf>,
    /// Database when none is given.
    pub database: String,
    /// Where the token is cached; default $XDG_CONFIG_HOME/dbgw or ~/.config/dbgw.
    pub cache_dir: Option<PathBuf>,
    /// Open the browser for sign-in (else print the URL).
    pub open_browser: bool,
    /// How long to wait for the sign-in to finish.
    pub login_timeout_secs: u64,
    pub psql: String,
    /// The approvals app (`dbgw request`, `extend`, `status`): its address as people's
    /// browsers reach it.
    pub approvals_url: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            issuer: "http://127.0.0.1:9000".into(),
            client_id: "dbgw-cli".into(),
            proxy_host: "127.0.0.1".into(),
            proxy_port: 6432,
            ca_file: Some(PathBuf::from(".dev/pg/ca.crt")),
            database: "rates".into(),
            cache_dir: None,
            open_browser: true,
            login_timeout_secs: 300,
            psql: "psql".into(),
            approvals_url: "http://127.0.0.1:8080".into(),
        }
    }
}

impl Settings {
    pub fn cache_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(d) = &self.cache_dir {
            return Ok(d.clone());
        }
        if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
            return Ok(PathBuf::from(x).join("dbgw"));
        }
        let home = std::env::var_os("HOME")
            .ok_or_else(|| anyhow::anyhow!("HOME is not set; set cache_dir"))?;
        Ok(PathBuf::from(home).join(".config/dbgw"))
    }
}
