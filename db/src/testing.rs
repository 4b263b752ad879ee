//! What every crate's integration tests share, so that a test reads as what it checks: a
//! throwaway cluster started off the async runtime's threads (cloned from the template, see
//! [`Cluster`]), a temporary file secret store with logins in it, a served task that stops on
//! request, and logs behind an environment variable (`DBGW_TEST_LOG=debug`).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Once};

use secret_store::{DbCredentials, FileStore, SecretStore};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Cluster;

/// A throwaway cluster with the rates data and a temporary secret store beside it.
pub struct TestDb {
    pub cluster: Arc<Cluster>,
    /// Removed when the test ends; the secret store lives in `secrets/` inside it.
    pub dir: tempfile::TempDir,
    pub store: SecretStore,
}

impl TestDb {
    pub async fn start() -> TestDb {
        Self::start_with(crate::cluster::Options::default()).await
    }

    /// [`TestDb::start`] with a cluster started with `options` (pgaudit on, for one).
    pub async fn start_with(options: crate::cluster::Options) -> TestDb {
        init_logs();
        // Starting a cluster waits on processes: not on the runtime's threads.
        let cluster = tokio::task::spawn_blocking(move || Cluster::start_with(options))
            .await
            .expect("the cluster start-up thread")
            .expect("start a throwaway cluster (PostgreSQL's server packages: `make test` installs them)");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SecretStore::File(FileStore::new(dir.path().join("secrets")));
        TestDb {
            cluster: Arc::new(cluster),
            dir,
            store,
        }
    }

    pub fn secrets_dir(&self) -> PathBuf {
        self.dir.path().join("secrets")
    }

    /// Gives `role` a fresh password and stores the login as secret `secret_id`.
    pub async fn login(&self, role: &str, secret_id: &str) -> DbCredentials {
        let creds = self
            .cluster
            .login_for(role)
            .await
            .unwrap_or_else(|e| panic!("a login for {role}: {e:#}"));
        self.store
            .put_db_credentials(secret_id, &creds)
            .await
            .unwrap_or_else(|e| panic!("storing {secret_id}: {e}"));
        creds
    }
}

/// The future a served task gets: it resolves when the test asks the task to stop.
pub type StopSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A task serving for a test (an app, the proxy) that stops when asked, as on SIGTERM.
pub struct Served<T> {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<T>>,
}

impl<T: Send + 'static> Served<T> {
    /// Spawns `run(stop)`; `stop` resolves at [`Served::stop`] (or when this is dropped).
    pub fn spawn<Fut>(run: impl FnOnce(StopSignal) -> Fut) -> Served<T>
    where
        Fut: Future<Output = T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<()>();
        let stopped: StopSignal = Box::pin(async move {
            let _ = rx.await;
        });
        Served {
            stop: Some(tx),
            task: Some(tokio::spawn(run(stopped))),
        }
    }

    /// Signals the task to stop and waits for what it returns.
    pub async fn stop(mut self) -> T {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("stopped once");
        task.await.expect("the served task panicked")
    }
}

/// Logs of the code under test, for a failing test's reader: off unless `DBGW_TEST_LOG` is
/// set (to a `tracing` filter such as `debug` or `proxy=trace`).
pub fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Ok(level) = std::env::var("DBGW_TEST_LOG") {
            startup::telemetry::init(&startup::telemetry::LogSettings {
                level,
                format: startup::telemetry::LogFormat::Text,
            });
        }
    });
}

/// Every configuration key of `settings` (its defaults, serialised) as a dotted path, e.g.
/// `upstream.connect_timeout_secs`. A list, and each table named in `maps` (keys chosen by
/// the operator, like the proxy's `services`), is one key.
pub fn config_keys(settings: &impl serde::Serialize, maps: &[&str]) -> Vec<String> {
    fn walk(value: &serde_json::Value, path: &str, maps: &[&str], out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(fields) if !maps.contains(&path) => {
                for (key, inner) in fields {
                    let full = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(inner, &full, maps, out);
                }
            }
            _ => out.push(path.to_string()),
        }
    }
    let value = serde_json::to_value(settings).expect("settings serialise");
    let mut out = Vec::new();
    walk(&value, "", maps, &mut out);
    out
}

/// The metric names (from the `# TYPE` lines, so that families without samples count too;
/// a counter's name with its `_total`) and the label names of a Prometheus text exposition.
pub fn metric_names(exposition: &str) -> (Vec<String>, Vec<String>) {
    let (mut names, mut labels) = (Vec::new(), Vec::new());
    for line in exposition.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let mut parts = declared.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                names.push(match kind {
                    "counter" if !name.ends_with("_total") => format!("{name}_total"),
                    _ => name.to_string(),
                });
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if let Some(set) = line
            .split_once('{')
            .and_then(|(_, rest)| rest.split('}').next())
        {
            for pair in set.split(',') {
                if let Some((label, _)) = pair.split_once('=') {
                    // Histogram buckets' `le` is the format's, not ours.
                    if label != "le" {
                        labels.push(label.to_string());
                    }
                }
            }
        }
    }
    names.sort();
    names.dedup();
    labels.sort();
    labels.dedup();
    (names, labels)
}

/// Fails naming every `word` that `doc` (a path from the workspace root) does not contain in
/// backticks, so that a key or metric added to the code without its documentation fails.
pub fn assert_documented(doc: &str, what: &str, words: &[String]) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text =
        std::fs::read_to_string(root.join(doc)).unwrap_or_else(|e| panic!("reading {doc}: {e}"));
    let missing: Vec<&String> = words
        .iter()
        .filter(|w| !text.contains(&format!("`{w}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "{doc} does not document these {what} (write each in backticks): {missing:?}"
    );
}

/// Every environment variable named `<prefix><SECTION>__<KEY>` in the deployment (Terraform,
/// `deploy/`, `compose.yaml`) is one of `keys` (from [`config_keys`]) or an entry of one
/// of the `maps`: a misspelt name would stop the service at start-up, since configuration
/// refuses unknown keys, and only in AWS. `<prefix>CONFIG` (the file) is not a key.
pub fn assert_deployed_keys(prefix: &str, keys: &[String], maps: &[&str]) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![root.join("compose.yaml")];
    let mut dirs = vec![root.join("terraform"), root.join("deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() && !name.starts_with('.') {
                dirs.push(path);
            } else if path.is_file() {
                files.push(path);
            }
        }
    }
    let mut seen = 0;
    let mut unknown = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue; // binary files
        };
        for (at, _) in text.match_indices(prefix) {
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let rest = &name[prefix.len()..];
            if rest.is_empty() || rest == "CONFIG" {
                continue;
            }
            seen += 1;
            let key = rest.to_ascii_lowercase().replace("__", ".");
            let known = keys.contains(&key)
                || maps
                    .iter()
                    .any(|m| key.strip_prefix(m).is_some_and(|k| k.starts_with('.')));
            if !known {
                unknown.push(format!("{name} ({})", file.display()));
            }
        }
    }
    assert!(seen > 0, "no {prefix}* variable in the deployment");
    unknown.sort();
    unknown.dedup();
    assert!(
        unknown.is_empty(),
        "the deployment sets variables that are no configuration key: {unknown:?}"
    );
}
