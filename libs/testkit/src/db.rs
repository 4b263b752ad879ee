//! A throwaway cluster started off the async runtime's threads (cloned from the template, see
//! [`Cluster`]) with a temporary file secret store beside it and logins in that store.

use std::path::PathBuf;
use std::sync::Arc;

use dbgw_db::cluster::Options;
use dbgw_db::Cluster;
use secret_store::{DbCredentials, FileStore, SecretStore};

use crate::logs::init_logs;
use crate::watchdog::{test_limit, Watchdog};

/// A throwaway cluster with the rates data and a temporary secret store beside it.
pub struct TestDb {
    pub cluster: Arc<Cluster>,
    /// Removed when the test ends; the secret store lives in `secrets/` inside it.
    pub dir: tempfile::TempDir,
    pub store: SecretStore,
    /// Watches the test that started the cluster: a hang fails it within
    /// [`test_limit`], naming it (keep this as long as the test runs).
    pub watchdog: Watchdog,
}

impl TestDb {
    pub async fn start() -> TestDb {
        Self::start_with(Options::default()).await
    }

    /// [`TestDb::start`] with a cluster started with `options` (pgaudit on, for one).
    pub async fn start_with(options: Options) -> TestDb {
        init_logs();
        let watchdog = Watchdog::start(test_limit());
        watchdog.step("starting a throwaway cluster");
        // Starting a cluster waits on processes: not on the runtime's threads.
        let cluster = tokio::task::spawn_blocking(move || Cluster::start_with(options))
            .await
            .expect("the cluster start-up thread")
            .expect("start a throwaway cluster (PostgreSQL's server packages: `make test` installs them)");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SecretStore::File(FileStore::new(dir.path().join("secrets")));
        watchdog.step("running (the cluster started)");
        TestDb {
            cluster: Arc::new(cluster),
            dir,
            store,
            watchdog,
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
