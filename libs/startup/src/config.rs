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
    load_renamed(file, env_prefix, &[])
}

/// A key renamed in this release. The old name keeps working for one release, converted to
/// the new one, and a warning says what to write instead (logged by [`crate::telemetry::init`]).
pub struct Renamed {
    /// Dotted paths, e.g. `database.statement_timeout`.
    pub old: &'static str,
    pub new: &'static str,
    pub convert: Convert,
}

/// How an old value becomes a new one.
#[derive(Clone, Copy)]
pub enum Convert {
    /// A duration written with a unit (`250ms`, `5s`, `30m`, `1h`; a bare number is seconds)
    /// to whole milliseconds (`*_ms` keys).
    DurationToMs,
    /// The same to whole seconds (`*_secs` keys).
    DurationToSecs,
}

/// Durations in configuration are whole numbers in keys that name the unit (`*_secs`,
/// `*_ms`): values that environment variables, Terraform and TOML all write the same way.
impl Convert {
    fn apply(self, value: &Value) -> Result<u64, String> {
        let ms = match value {
            // TOML integers are signed: `to_u128` alone refused every bare number.
            Value::Num(_, n) => n
                .to_u128()
                .or_else(|| n.to_i128().and_then(|i| u128::try_from(i).ok()))
                .map(|secs| secs * 1000)
                .ok_or_else(|| "a duration cannot be negative".to_string())?,
            Value::String(_, text) => duration_ms(text)?,
            _ => return Err("a duration is a number of seconds or a text like 5s".into()),
        };
        let n = match self {
            Convert::DurationToMs => ms,
            Convert::DurationToSecs if ms % 1000 == 0 => ms / 1000,
            Convert::DurationToSecs => return Err(format!("{ms}ms is not whole seconds")),
        };
        u64::try_from(n).map_err(|_| "the duration is too long".to_string())
    }
}

fn duration_ms(text: &str) -> Result<u128, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u128 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 250ms, 5s, 30m or 1h"))?;
    Ok(match unit.trim() {
        "ms" => n,
        "" | "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        _ => return Err(format!("`{text}`: unit must be ms, s, m or h")),
    })
}

/// Warnings about deprecated keys, kept until logging is set up.
static NOTES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// The deprecation warnings of the loads so far (each once).
pub fn take_notes() -> Vec<String> {
    std::mem::take(&mut *crate::sync::lock(&NOTES))
}

/// [`load`], accepting the old names of `renamed` keys.
pub fn load_renamed<T>(
    file: Option<&Path>,
    env_prefix: &str,
    renamed: &[Renamed],
) -> anyhow::Result<T>
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
    if renamed.iter().any(|r| lookup(&data, r.old).is_some()) {
        let mut data = data;
        let defaults: Dict = Figment::from(Serialized::defaults(T::default())).extract()?;
        for r in renamed {
            let Some(old) = take(&mut data, r.old) else {
                continue;
            };
            if lookup(&data, r.new) != lookup(&defaults, r.new) {
                bail!(
                    "both `{}` and its new name `{}` are set: keep `{}`",
                    r.old,
                    r.new,
                    r.new
                );
            }
            let new = r
                .convert
                .apply(&old)
                .map_err(|e| anyhow::anyhow!("`{}`: {e}", r.old))?;
            crate::sync::lock(&NOTES).push(format!(
                "configuration key `{}` is deprecated and goes in the next release: write `{} = {}`",
                r.old,
                r.new,
                new
            ));
            put(&mut data, r.new, Value::from(new));
        }
        figment = Figment::from(Serialized::defaults(data));
    }
    figment.extract().map_err(|e| {
        anyhow::anyhow!(
            "invalid configuration: {e} (env: {env_prefix}<SECTION>__<KEY>, file: --config)"
        )
    })
}

fn lookup<'a>(dict: &'a Dict, path: &str) -> Option<&'a Value> {
    let (head, rest) = path.split_once('.').unwrap_or((path, ""));
    match (dict.get(head)?, rest) {
        (v, "") => Some(v),
        (Value::Dict(_, inner), rest) => lookup(inner, rest),
        _ => None,
    }
}

fn take(dict: &mut Dict, path: &str) -> Option<Value> {
    match path.split_once('.') {
        None => dict.remove(path),
        Some((head, rest)) => match dict.get_mut(head)? {
            Value::Dict(_, inner) => take(inner, rest),
            _ => None,
        },
    }
}

fn put(dict: &mut Dict, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            dict.insert(path.to_string(), value);
        }
        Some((head, rest)) => {
            let entry = dict
                .entry(head.to_string())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = entry {
                put(inner, rest, value);
            }
        }
    }
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

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Timeouts {
        connect_timeout_secs: u64,
        statement_timeout_ms: u64,
    }

    impl Default for Timeouts {
        fn default() -> Self {
            Timeouts {
                connect_timeout_secs: 5,
                statement_timeout_ms: 5000,
            }
        }
    }

    const RENAMED: &[Renamed] = &[
        Renamed {
            old: "connect_timeout",
            new: "connect_timeout_secs",
            convert: Convert::DurationToSecs,
        },
        Renamed {
            old: "statement_timeout",
            new: "statement_timeout_ms",
            convert: Convert::DurationToMs,
        },
    ];

    #[test]
    fn old_duration_keys_still_work_with_a_warning() {
        std::env::set_var("STARTUP_T6_STATEMENT_TIMEOUT", "750ms");
        std::env::set_var("STARTUP_T6_CONNECT_TIMEOUT", "2m");
        let t: Timeouts = load_renamed(None, "STARTUP_T6_", RENAMED).unwrap();
        assert_eq!(t.statement_timeout_ms, 750);
        assert_eq!(t.connect_timeout_secs, 120);
        let notes = take_notes();
        assert!(
            notes
                .iter()
                .any(|n| n.contains("`statement_timeout` is deprecated")
                    && n.contains("statement_timeout_ms = 750")),
            "{notes:?}"
        );

        // Both names at once is a mistake, not a precedence puzzle.
        std::env::set_var("STARTUP_T7_STATEMENT_TIMEOUT", "1s");
        std::env::set_var("STARTUP_T7_STATEMENT_TIMEOUT_MS", "250");
        let both = load_renamed::<Timeouts>(None, "STARTUP_T7_", RENAMED).unwrap_err();
        assert!(format!("{both:#}").contains("both"), "{both:#}");

        // A value that cannot be converted says which key.
        std::env::set_var("STARTUP_T8_CONNECT_TIMEOUT", "1500ms");
        let bad = load_renamed::<Timeouts>(None, "STARTUP_T8_", RENAMED).unwrap_err();
        assert!(format!("{bad:#}").contains("`connect_timeout`"), "{bad:#}");
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
