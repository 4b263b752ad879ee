//! The one configuration scheme of the workspace.
//!
//! Every setting has a built-in default that works in the local stack. A TOML file (given with
//! `--config` or `<PREFIX>CONFIG`) overrides the defaults, and environment variables override
//! the file: `<PREFIX><SECTION>__<KEY>`, e.g. `RATES_API_DATABASE__HOST=db.internal`.
//!
//! Secrets never come from here. Keys that look like they hold one (`password`, `token`, ...)
//! are refused wherever they appear, so a password pasted into a file fails loudly instead of
//! being used. Secrets come from the secret store (see the `secret-store` crate).

use std::path::Path;

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Value};
use figment::Figment;
use serde::{de::DeserializeOwned, Serialize};

/// Key names that would carry a secret. Matched case-insensitively against every key.
const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "token",
    "secret_key",
    "client_secret",
    "private_key",
];

/// Loads `T` from its defaults, the optional file, then environment variables starting with
/// `env_prefix` (which includes the trailing underscore, e.g. `"PROXY_"`).
pub fn load<T>(file: Option<&Path>, env_prefix: &str) -> anyhow::Result<T>
where
    T: DeserializeOwned + Serialize + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !path.is_file() {
            bail!("config file {} does not exist", path.display());
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(Env::prefixed(env_prefix).split("__").ignore(&["config"]));

    let data: Dict = figment
        .extract()
        .context("reading configuration (file and environment)")?;
    refuse_secrets(&data, "")?;
    figment.extract().map_err(|e| {
        anyhow::anyhow!(
            "invalid configuration: {e} (env: {env_prefix}<SECTION>__<KEY>, file: --config)"
        )
    })
}

fn refuse_secrets(dict: &Dict, path: &str) -> anyhow::Result<()> {
    for (key, value) in dict {
        let full = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        if SECRET_KEYS.iter().any(|s| key.eq_ignore_ascii_case(s)) {
            bail!(
                "configuration key `{full}` would hold a secret; secrets are read from the \
                 secret store, never from config files or plain environment variables"
            );
        }
        if let Value::Dict(_, inner) = value {
            refuse_secrets(inner, &full)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Db {
        host: String,
        port: u16,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Settings {
        listen: String,
        database: Db,
    }

    impl Default for Settings {
        fn default() -> Self {
            Settings {
                listen: "127.0.0.1:1".into(),
                database: Db {
                    host: "localhost".into(),
                    port: 5432,
                },
            }
        }
    }

    // Environment variables are process-wide, so every test uses its own prefix.
    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen = \"0.0.0.0:9\"\n[database]\nport = 6000\n").unwrap();
        std::env::set_var("STARTUP_T1_DATABASE__PORT", "7000");
        let s: Settings = load(Some(&path), "STARTUP_T1_").unwrap();
        assert_eq!(s.listen, "0.0.0.0:9");
        assert_eq!(s.database.port, 7000);
        assert_eq!(s.database.host, "localhost");
    }

    #[test]
    fn refuses_a_password_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[database]\npassword = \"hunter2\"\n").unwrap();
        let err = load::<Settings>(Some(&path), "STARTUP_T2_").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("database.password"), "{msg}");
        assert!(
            !msg.contains("hunter2"),
            "the secret leaked into the error: {msg}"
        );
    }

    #[test]
    fn refuses_a_password_in_the_environment() {
        std::env::set_var("STARTUP_T3_DATABASE__PASSWORD", "hunter2");
        let err = load::<Settings>(None, "STARTUP_T3_").unwrap_err();
        assert!(format!("{err:#}").contains("database.password"));
    }

    #[test]
    fn missing_file_and_unknown_keys_are_errors() {
        let missing = load::<Settings>(Some(Path::new("/nonexistent/x.toml")), "STARTUP_T4_");
        assert!(format!("{:#}", missing.unwrap_err()).contains("does not exist"));
        std::env::set_var("STARTUP_T5_LISTN", "x");
        let typo = load::<Settings>(None, "STARTUP_T5_").unwrap_err();
        assert!(format!("{typo:#}").contains("listn"), "{typo:#}");
    }
}
