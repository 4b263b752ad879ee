//! Local PostgreSQL clusters: throwaway ones for tests, and the persistent dev cluster.
//!
//! Building a cluster from nothing (initdb, certificates, roles, the 56k-row dump, migrations)
//! takes a few seconds, so it is done once into a *template* directory keyed by a hash of the
//! schema files and the server version. Each cluster is then a copy of the template started
//! on a free port: TLS on (certificates from the cluster's own CA), SCRAM for every login,
//! TCP on 127.0.0.1 only, no Unix socket.
//!
//! pgaudit (the `postgresql-15-pgaudit` package) is opt-in for test clusters
//! ([`Cluster::start_with`] with [`Options::pgaudit`]) and always on for the dev cluster: it
//! logs every statement the server runs, with its parameters, to the server's JSON log in
//! [`Cluster::pgaudit_log_dir`], the independent witness `proxy audit crosscheck` compares
//! the proxy's audit log with. The settings are given on the server's command line
//! ([`pgaudit_settings`]), so the template is the same with and without it.
//!
//! A test owns its cluster: dropping [`Cluster`] stops the server and deletes its directory.
//! If the test process dies instead, the kernel stops the server (parent-death signal) and the
//! next run sweeps the directory.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use secrecy::ExposeSecret;
use secret_store::DbCredentials;
use sha2::{Digest, Sha256};

use crate::schema::{self, Server};

/// Bump to rebuild templates after changing how they are made.
const TEMPLATE_FORMAT: &str = "5";
const ADMIN_USER: &str = "postgres";

/// A running local cluster.
pub struct Cluster {
    root: PathBuf,
    port: u16,
    admin: DbCredentials,
    /// The postmaster, when this process started it as a child (tests).
    postmaster: Mutex<Option<Child>>,
    /// Throwaway clusters delete their directory on drop; the dev cluster does not.
    throwaway: bool,
    options: Options,
}

/// How a cluster runs, beyond what every cluster has.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// pgaudit on ([`pgaudit_settings`]): every statement, with its parameters, in the
    /// server's JSON log under [`Cluster::pgaudit_log_dir`]. Off by default: most tests do
    /// not want the log volume.
    pub pgaudit: bool,
}

/// The directory of a cluster's pgaudit (server) log, inside its root.
const PGAUDIT_LOG_DIR: &str = "pgaudit-log";

/// The server settings that turn pgaudit on, logging to `log_dir`:
/// - `pgaudit.log = 'all'`: every class (READ, WRITE, FUNCTION, ROLE, DDL, MISC, MISC_SET),
///   because the crosscheck pairs *every* statement the proxy let through, `BEGIN`, `SET`
///   and `SHOW` included; a subset would leave statements the proxy recorded unwitnessed;
/// - `pgaudit.log_parameter = on`: bound parameters, as the proxy records them;
/// - `pgaudit.log_statement_once = off`: the statement text on every entry;
/// - `pgaudit.log_catalog = on`, `log_relation = off`, `log_client = off`, `log_level = log`;
/// - the PostgreSQL 15 `jsonlog` destination through the logging collector, files readable
///   by the server's user only (they hold statement text and parameters unredacted).
pub fn pgaudit_settings(log_dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("shared_preload_libraries", "pgaudit".into()),
        ("pgaudit.log", "all".into()),
        ("pgaudit.log_parameter", "on".into()),
        ("pgaudit.log_statement_once", "off".into()),
        ("pgaudit.log_catalog", "on".into()),
        ("pgaudit.log_relation", "off".into()),
        ("pgaudit.log_client", "off".into()),
        ("pgaudit.log_level", "log".into()),
        ("log_destination", "jsonlog".into()),
        ("logging_collector", "on".into()),
        ("log_directory", log_dir.display().to_string()),
        ("log_filename", "postgresql-%Y-%m-%d_%H%M%S.log".into()),
        ("log_file_mode", "0600".into()),
        ("log_min_error_statement", "error".into()),
    ]
}

/// Fails with the package to install when pgaudit's library is missing.
fn check_pgaudit() -> anyhow::Result<()> {
    let bin = pg_bin("postgres")?;
    let lib = bin
        .parent()
        .and_then(Path::parent)
        .map(|v| v.join("lib/pgaudit.so"));
    if !lib.as_deref().is_some_and(Path::is_file) {
        // PostgreSQL 18 for `make test-pg18` comes from a wheel without pgaudit (there is no
        // package of it for 18 here): tests that need pgaudit run on Debian's 15 only.
        if let Some(dir) = std::env::var_os("PG_BINDIR") {
            bail!(
                "pgaudit is not available for the PostgreSQL in PG_BINDIR ({}): tests that need \
                 pgaudit run on Debian's PostgreSQL 15 only (unset PG_BINDIR); `make test-pg18` \
                 does not select them",
                Path::new(&dir).display()
            );
        }
        bail!(
            "pgaudit is not installed for {}: `sudo apt-get install -y postgresql-15-pgaudit` \
             (`scripts/install.sh runtime` installs it)",
            bin.display()
        );
    }
    Ok(())
}

impl Cluster {
    /// Starts a throwaway cluster holding the rates database.
    pub fn start() -> anyhow::Result<Cluster> {
        Self::start_with(Options::default())
    }

    /// Starts a throwaway cluster holding the rates database, with `options`.
    pub fn start_with(options: Options) -> anyhow::Result<Cluster> {
        if options.pgaudit {
            check_pgaudit()?;
        }
        let template = template()?;
        let base = runtime_dir();
        sweep_stale(&base);
        static N: AtomicU32 = AtomicU32::new(0);
        let root = base.join(format!(
            "run-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        copy_dir(&template, &root)?;
        let admin = read_admin(&root)?;
        let cluster = Cluster {
            root,
            port: 0,
            admin,
            postmaster: Mutex::new(None),
            throwaway: true,
            options,
        };
        cluster.boot_on_free_port()
    }

    /// Opens the persistent cluster in `root` (creating it from the template the first time)
    /// and starts it in the background on `port` if it is not running, with pgaudit on.
    /// Used by `make up`. (A dev cluster already running keeps the settings it started with.)
    pub fn dev(root: &Path, port: u16) -> anyhow::Result<Cluster> {
        Self::dev_with(root, port, Options { pgaudit: true })
    }

    /// [`Cluster::dev`] with `options` (the compose stack's set-up run goes without pgaudit).
    pub fn dev_with(root: &Path, port: u16, options: Options) -> anyhow::Result<Cluster> {
        if options.pgaudit {
            check_pgaudit()?;
        }
        if !root.join("data").is_dir() {
            let template = template()?;
            copy_dir(&template, root)?;
        }
        let cluster = Cluster {
            root: root.to_path_buf(),
            port,
            admin: read_admin(root)?,
            postmaster: Mutex::new(None),
            throwaway: false,
            options,
        };
        // A cluster made before people's logins needed the client certificate gets that
        // rule now (a running one rereads its configuration).
        if client_auth(root)? && cluster.is_running() {
            let status = as_postgres(Command::new(pg_bin("pg_ctl")?))
                .args(["reload", "-s", "-D"])
                .arg(cluster.data())
                .status()
                .context("running pg_ctl reload")?;
            anyhow::ensure!(status.success(), "pg_ctl reload failed");
        }
        if !cluster.is_running() {
            let log = cluster.root.join("postgres.log");
            // pg_ctl runs the server through the shell: each value is single-quoted.
            let mut server_options = format!("-p {port}");
            for (name, value) in cluster.server_settings() {
                server_options.push_str(&format!(" -c {name}='{}'", value.replace('\'', "")));
            }
            let status = as_postgres(Command::new(pg_bin("pg_ctl")?))
                .arg("start")
                .args(["-w", "-t", "60", "-s"])
                .arg("-D")
                .arg(cluster.data())
                .arg("-l")
                .arg(&log)
                .args(["-o", &server_options])
                .stdin(Stdio::null())
                .status()
                .context("running pg_ctl start")?;
            if !status.success() {
                bail!(
                    "the dev cluster did not start (port {port} in use?); see {}",
                    log.display()
                );
            }
        }
        Ok(cluster)
    }

    /// Stops the dev cluster in `root` if it runs.
    pub fn stop_dev(root: &Path) -> anyhow::Result<()> {
        if !root.join("data/postmaster.pid").exists() {
            return Ok(());
        }
        let status = as_postgres(Command::new(pg_bin("pg_ctl")?))
            .args(["stop", "-m", "fast", "-s", "-w", "-D"])
            .arg(root.join("data"))
            .status()?;
        anyhow::ensure!(status.success(), "pg_ctl stop failed");
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// The CA certificate that signed the server's certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.crt")
    }

    /// The certificate that people's roles must present ([`client_auth`]): the tests'
    /// stand-in for the proxy's and the rotation function's. Issued by the cluster's client
    /// CA, which is not the server CA.
    pub fn client_cert(&self) -> pg_connect::ClientCert {
        pg_connect::ClientCert {
            cert_file: self.root.join(format!("{CLIENT_CERT}.crt")),
            key_file: self.root.join(format!("{CLIENT_CERT}.key")),
        }
    }

    /// The cluster's directory (its CA key is there, for [`Cluster::issue_cert`]).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of the server's JSON log holding pgaudit's entries (`*.json`, one file
    /// per start and rotation), when pgaudit is on. Absolute: the server reads a relative
    /// `log_directory` from its data directory (the dev cluster's root is `.dev/pg`).
    pub fn pgaudit_log_dir(&self) -> Option<PathBuf> {
        self.options.pgaudit.then(|| {
            let dir = self.root.join(PGAUDIT_LOG_DIR);
            std::path::absolute(&dir).unwrap_or(dir)
        })
    }

    /// Settings given on the server's command line.
    fn server_settings(&self) -> Vec<(&'static str, String)> {
        match self.pgaudit_log_dir() {
            Some(dir) => pgaudit_settings(&dir),
            None => Vec::new(),
        }
    }

    /// The superuser's credentials.
    pub fn admin(&self) -> &DbCredentials {
        &self.admin
    }

    /// Connection facts for [`schema`] functions.
    pub fn server(&self) -> Server {
        Server {
            host: self.host().into(),
            port: self.port,
            admin: self.admin.clone(),
            ca: Some(self.ca_cert()),
            client_cert: Some(self.client_cert()),
        }
    }

    /// A connection as the superuser to database `db`.
    pub async fn connect(&self, db: &str) -> anyhow::Result<tokio_postgres::Client> {
        self.server().connect(db).await
    }

    /// Gives `role` a fresh random password and returns its credentials.
    pub async fn login_for(&self, role: &str) -> anyhow::Result<DbCredentials> {
        let password = secret_store::generate_password();
        pg_connect::set_password(&self.connect("postgres").await?, role, &password).await?;
        Ok(DbCredentials::new(role, password))
    }

    /// Issues a TLS server certificate for `names` from this cluster's CA into `out_dir`.
    pub fn issue_cert(
        &self,
        names: &[&str],
        out_dir: &Path,
        stem: &str,
    ) -> anyhow::Result<(PathBuf, PathBuf)> {
        crate::tls::issue(&self.root, names, out_dir, stem)
    }

    /// Environment for `psql`, `pgbench` and other libpq clients, logging in as `creds`
    /// over verified TLS. The password travels in the environment, never in arguments.
    pub fn libpq_env(&self, creds: &DbCredentials) -> Vec<(String, String)> {
        vec![
            ("PGHOST".into(), self.host().into()),
            ("PGPORT".into(), self.port.to_string()),
            ("PGUSER".into(), creds.username.clone()),
            (
                "PGPASSWORD".into(),
                creds.password.expose_secret().to_string(),
            ),
            ("PGSSLMODE".into(), "verify-full".into()),
            ("PGSSLROOTCERT".into(), self.ca_cert().display().to_string()),
        ]
    }

    /// Stops the server (fast shutdown), keeping its files: [`Cluster::restart`] brings it back.
    pub fn stop(&self) -> anyhow::Result<()> {
        let mut guard = startup::sync::lock(&self.postmaster);
        if let Some(mut child) = guard.take() {
            signal(&child, libc::SIGINT);
            wait_or_kill(&mut child, Duration::from_secs(20));
        }
        Ok(())
    }

    /// Starts a stopped throwaway cluster again on the same port.
    pub fn restart(&self) -> anyhow::Result<()> {
        self.stop()?;
        let child = self.spawn_postmaster(self.port)?;
        *startup::sync::lock(&self.postmaster) = Some(child);
        self.wait_ready()
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn is_running(&self) -> bool {
        Command::new(pg_bin("pg_isready").unwrap_or_else(|_| "pg_isready".into()))
            .args(["-q", "-h", self.host(), "-p", &self.port.to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn boot_on_free_port(mut self) -> anyhow::Result<Cluster> {
        // A free port can be taken between probing and binding; try another then.
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            self.port = port;
            let child = self.spawn_postmaster(port)?;
            *startup::sync::lock(&self.postmaster) = Some(child);
            match self.wait_ready() {
                Ok(()) => return Ok(self),
                Err(e) => {
                    self.stop()?;
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no free port found for the cluster")))
    }

    fn spawn_postmaster(&self, port: u16) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("postgres.log"))?;
        let mut cmd = as_postgres(Command::new(pg_bin("postgres")?));
        cmd.arg("-D")
            .arg(self.data())
            .args(["-p", &port.to_string()]);
        for (name, value) in self.server_settings() {
            cmd.arg("-c").arg(format!("{name}={value}"));
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        unsafe {
            // Runs in the child after setuid: SIGQUIT (immediate shutdown) if we die.
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        spawn_from_lasting_thread(cmd).context("starting postgres")
    }

    fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = startup::sync::lock(&self.postmaster).as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "postgres exited ({status}) while starting: {}",
                        log_tail(&self.root.join("postgres.log"))
                    );
                }
            }
            if self.is_running() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("postgres did not become ready within 60 s");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut child) = startup::sync::lock(&self.postmaster).take() {
            signal(&child, libc::SIGQUIT);
            wait_or_kill(&mut child, Duration::from_secs(10));
        }
        if self.throwaway {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// Where a PostgreSQL program is: `$PG_BINDIR`, else the newest `/usr/lib/postgresql/*/bin`.
pub fn pg_bin(name: &str) -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("PG_BINDIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect();
            versions.sort_unstable();
            match versions.last() {
                Some(v) => PathBuf::from(format!("/usr/lib/postgresql/{v}/bin")),
                None => PathBuf::from("/nonexistent"),
            }
        }
    };
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "PostgreSQL program `{name}` not found in {}: install the server with \
             `sudo apt-get install -y postgresql-15` (or set PG_BINDIR)",
            dir.display()
        );
    }
    Ok(path)
}

fn runtime_dir() -> PathBuf {
    std::env::temp_dir().join("dbgw-pgcluster")
}

/// The template for the current schema files, built on first use. Concurrent test processes
/// serialize on a lock file; the loser finds the template ready.
fn template() -> anyhow::Result<PathBuf> {
    let base = runtime_dir();
    std::fs::create_dir_all(&base)?;
    make_traversable(&base)?;
    let mut hash = Sha256::new();
    hash.update(TEMPLATE_FORMAT);
    hash.update(schema::ROLES_SQL);
    hash.update(schema::DUMP_SQL);
    hash.update(schema::PROVISIONER_SQL);
    hash.update(PG_HBA);
    for (name, sql) in schema::MIGRATIONS.iter().chain(schema::CONTROL_MIGRATIONS) {
        hash.update(name);
        hash.update(sql);
    }
    hash.update(pg_bin("postgres")?.to_string_lossy().as_bytes());
    let key = &hex::encode(hash.finalize())[..16];
    let dir = base.join(format!("template-{key}"));

    let lock = std::fs::File::create(base.join(format!("template-{key}.lock")))?;
    let _guard = FileLock::exclusive(&lock)?;
    if dir.join("ready").exists() {
        return Ok(dir);
    }
    let building = base.join(format!("template-{key}.building"));
    let _ = std::fs::remove_dir_all(&building);
    build_template(&building).context("building the cluster template")?;
    std::fs::write(building.join("ready"), "")?;
    std::fs::rename(&building, &dir)?;
    Ok(dir)
}

fn build_template(root: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(root)?;
    let password = secret_store::generate_password();
    crate::tls::write_private(&root.join("admin-password"), &password)?;
    crate::tls::create_ca(root)?;
    let data = root.join("data");
    chown_to_postgres(root)?;

    let out = as_postgres(Command::new(pg_bin("initdb")?))
        .args([
            "-N",
            "-A",
            "scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "-U",
            ADMIN_USER,
        ])
        .arg("--pwfile")
        .arg(root.join("admin-password"))
        .arg("-D")
        .arg(&data)
        .output()?;
    if !out.status.success() {
        bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    crate::tls::issue(root, &["localhost", "127.0.0.1", "::1"], &data, "server")?;
    chown_to_postgres(root)?;
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))?;
    // Local clusters trade crash safety for speed: they hold test and dev data only.
    conf.write_all(
        b"\n# dbgw local cluster\n\
          listen_addresses = '127.0.0.1'\n\
          unix_socket_directories = ''\n\
          ssl = on\n\
          ssl_cert_file = 'server.crt'\n\
          ssl_key_file = 'server.key'\n\
          password_encryption = 'scram-sha-256'\n\
          max_connections = 200\n\
          fsync = off\n\
          synchronous_commit = off\n\
          full_page_writes = off\n\
          log_min_messages = warning\n",
    )?;
    client_auth(root)?;

    let mut cluster = Cluster {
        root: root.to_path_buf(),
        port: 0,
        admin: DbCredentials::new(ADMIN_USER, password),
        postmaster: Mutex::new(None),
        throwaway: false,
        options: Options::default(),
    };
    cluster = cluster.boot_on_free_port()?;
    let server = cluster.server();
    // Callers may be inside a runtime already (async tests): run ours on its own thread.
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(async {
                    schema::setup(&server, "rates").await?;
                    schema::setup_control(&server).await
                })
        })
        .join()
        .expect("schema setup thread")
    })?;
    cluster.stop()?;
    let _ = std::fs::remove_file(root.join("postgres.log"));
    Ok(())
}

/// The stem of the client certificate every local cluster issues itself ([`Cluster::client_cert`]).
const CLIENT_CERT: &str = "client";

/// Who may log in, and how (`pg_hba.conf`). People's roles (members of `dbgw_people`,
/// db/control/0011_people.sql) only over TLS with a certificate from the client CA, which
/// only the proxy and the rotation function hold, and their password; from anywhere else,
/// never. A person's password taken from the secret store is then useless outside the
/// proxy, although every process of the local stack is on 127.0.0.1. The first line that
/// matches decides: a missing certificate is a refusal, not a fall-through.
pub const PG_HBA: &str = "\
# TYPE  DATABASE USER          ADDRESS       METHOD
hostssl all      +dbgw_people  127.0.0.1/32  scram-sha-256 clientcert=verify-ca
host    all      +dbgw_people  all           reject
hostssl all      all           127.0.0.1/32  scram-sha-256
host    all      all           127.0.0.1/32  scram-sha-256
";

/// Makes the cluster in `root` ask people's roles for the client certificate: the client
/// CA and a certificate from it ([`Cluster::client_cert`]), the server trusting that CA
/// only for client certificates (`ssl_ca_file`), and [`PG_HBA`]. Idempotent; returns
/// whether anything changed.
fn client_auth(root: &Path) -> anyhow::Result<bool> {
    let data = root.join("data");
    let hba = data.join("pg_hba.conf");
    if std::fs::read_to_string(&hba).is_ok_and(|text| text == PG_HBA) {
        return Ok(false);
    }
    crate::tls::ensure_client_ca(root)?;
    let ca = format!("{}.crt", crate::tls::CLIENT_CA);
    std::fs::copy(root.join(&ca), data.join(&ca))?;
    if !root.join(format!("{CLIENT_CERT}.crt")).exists() {
        crate::tls::issue_client(root, "dbgw local cluster client", root, CLIENT_CERT)?;
    }
    let conf = data.join("postgresql.conf");
    let setting = format!("ssl_ca_file = '{ca}'");
    if !std::fs::read_to_string(&conf)?.contains(&setting) {
        let mut file = std::fs::OpenOptions::new().append(true).open(&conf)?;
        writeln!(file, "{setting}")?;
    }
    std::fs::write(&hba, PG_HBA)?;
    chown_to_postgres(root)?;
    Ok(true)
}

fn read_admin(root: &Path) -> anyhow::Result<DbCredentials> {
    let password = std::fs::read_to_string(root.join("admin-password"))
        .with_context(|| format!("reading the admin password of {}", root.display()))?;
    Ok(DbCredentials::new(ADMIN_USER, password.trim()))
}

/// Removes directories of clusters whose test process is gone.
fn sweep_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("run-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .context("running cp")?;
    anyhow::ensure!(status.success(), "copying {} failed", from.display());
    Ok(())
}

/// initdb refuses to run as root: when we are root, servers run as the `postgres` user.
fn postgres_ids() -> Option<(u32, u32)> {
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = c"postgres";
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
}

fn as_postgres(mut cmd: Command) -> Command {
    if let Some((uid, gid)) = postgres_ids() {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn chown_to_postgres(root: &Path) -> anyhow::Result<()> {
    if let Some((uid, gid)) = postgres_ids() {
        let status = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(root)
            .status()?;
        anyhow::ensure!(status.success(), "chown failed");
    } else if unsafe { libc::geteuid() } == 0 {
        bail!("running as root needs a `postgres` user to run PostgreSQL as");
    }
    Ok(())
}

fn make_traversable(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777))?;
    Ok(())
}

/// A TCP port on 127.0.0.1 that nothing listens on now (bound and released: the caller
/// should bind it soon). For the tests' and benchmarks' services and helpers.
///
/// Taken below the kernel's ephemeral range (32768 and up), which outgoing connections and
/// `bind(0)` draw from: a port handed out here and bound a few seconds later (a fleet's peer
/// ports are known before any replica starts) cannot meanwhile become some connection's
/// source port. Each process walks its own sequence, so it never hands out a port twice.
pub fn free_port() -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    for _ in 0..SPAN {
        let port = (LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn signal(child: &Child, sig: i32) {
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

fn wait_or_kill(child: &mut Child, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// The parent-death signal fires when the *thread* that forked exits, so servers are forked
/// from one thread that lives as long as the process.
fn spawn_from_lasting_thread(mut cmd: Command) -> std::io::Result<Child> {
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("pgcluster-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn thread");
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    // Build the command here, spawn it there.
    let job_cmd = std::mem::replace(&mut cmd, Command::new("true"));
    startup::sync::lock(sender)
        .send((job_cmd, tx))
        .expect("spawner thread alive");
    rx.recv().expect("spawner replies")
}

struct FileLock<'a>(&'a std::fs::File);

impl<'a> FileLock<'a> {
    fn exclusive(file: &'a std::fs::File) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd;
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(FileLock(file))
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}
