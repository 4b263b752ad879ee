//! Roles, the dump and migrations: everything that makes an empty PostgreSQL server (13 or
//! later, local or RDS) hold the rates database. Every step is idempotent, so running it on a
//! server that is already set up changes nothing.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{bail, Context};
use postgres_protocol::escape::escape_identifier;
use secrecy::ExposeSecret;
use secret_store::DbCredentials;
use tokio::io::AsyncWriteExt;

use tokio_postgres::Client;

/// Cluster-wide roles (`db/roles.sql`).
pub const ROLES_SQL: &str = include_str!("../roles.sql");
/// The dump the task ships (`db/rates.sql`), loaded once into an empty database.
pub const DUMP_SQL: &str = include_str!("../rates.sql");
/// Schema changes on top of the dump, applied in order, each once.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_prices_lookup_index",
        include_str!("../migrations/0001_prices_lookup_index.sql"),
    ),
    (
        "0002_privileges",
        include_str!("../migrations/0002_privileges.sql"),
    ),
    (
        "0003_rates_changed_notify",
        include_str!("../migrations/0003_rates_changed_notify.sql"),
    ),
];

/// The control-plane database (access grants), and its schema changes.
pub const CONTROL_DATABASE: &str = "dbgw";
pub const CONTROL_MIGRATIONS: &[(&str, &str)] = &[
    ("0001_grants", include_str!("../control/0001_grants.sql")),
    (
        "0002_approvals",
        include_str!("../control/0002_approvals.sql"),
    ),
    (
        "0003_person_identity",
        include_str!("../control/0003_person_identity.sql"),
    ),
    (
        "0004_grants_changed_notify",
        include_str!("../control/0004_grants_changed_notify.sql"),
    ),
    (
        "0005_approvals_history_sealed",
        include_str!("../control/0005_approvals_history_sealed.sql"),
    ),
    (
        "0006_approvals_provisioner",
        include_str!("../control/0006_approvals_provisioner.sql"),
    ),
    (
        "0007_grant_session_policy",
        include_str!("../control/0007_grant_session_policy.sql"),
    ),
    (
        "0008_request_policy_and_extensions",
        include_str!("../control/0008_request_policy_and_extensions.sql"),
    ),
    (
        "0009_scim_users",
        include_str!("../control/0009_scim_users.sql"),
    ),
    (
        "0010_extension_withdrawn",
        include_str!("../control/0010_extension_withdrawn.sql"),
    ),
    ("0011_people", include_str!("../control/0011_people.sql")),
    ("0012_rds_iam", include_str!("../control/0012_rds_iam.sql")),
];

/// The approvals app's provisioning functions (`dbgw_provision`, owned by
/// `dbgw_provisioner`): per database, installed after the control migrations.
pub const PROVISIONER_SQL: &str = include_str!("../provisioner.sql");
/// Where [`PROVISIONER_SQL`] is installed: the approvals app's target database and the
/// control plane's (where the rotation function logs in as the app's login).
pub const PROVISIONER_DATABASES: &[&str] = &["postgres", CONTROL_DATABASE];

/// Where a server is and how the admin logs in (always TLS, certificate verified).
#[derive(Debug, Clone)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub admin: DbCredentials,
    /// CA bundle that signed the server certificate; `None` uses the public web roots.
    pub ca: Option<PathBuf>,
    /// The certificate to present when the server asks for one (people's roles need it on
    /// the local clusters; the admin does not).
    pub client_cert: Option<pg_connect::ClientCert>,
}

impl Server {
    /// The server as the workspace's connect helper sees it: always verified TLS.
    pub fn target(&self) -> pg_connect::Target {
        pg_connect::Target {
            host: self.host.clone(),
            port: self.port,
            tls: pg_connect::TlsMode::VerifyFull,
            ca_file: self.ca.clone(),
            connect_timeout: std::time::Duration::from_secs(10),
            client_cert: self.client_cert.clone(),
        }
    }

    /// Connects as `creds` to `db`; the connection is driven by a spawned task.
    pub async fn connect_as(&self, db: &str, creds: &DbCredentials) -> anyhow::Result<Client> {
        Ok(self.target().connect(db, creds, "dbgw-db").await?)
    }

    /// Connects as the admin.
    pub async fn connect(&self, db: &str) -> anyhow::Result<Client> {
        self.connect_as(db, &self.admin).await
    }
}

/// Creates the roles and database `db`, loads the dump into it if it is empty, and applies
/// pending migrations.
pub async fn setup(server: &Server, db: &str) -> anyhow::Result<()> {
    let admin = server.connect("postgres").await?;
    admin
        .batch_execute(ROLES_SQL)
        .await
        .context("creating roles")?;
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
        .await?
        .is_some();
    if !exists {
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {} OWNER rates_owner ENCODING 'UTF8' TEMPLATE template0",
                escape_identifier(db)
            ))
            .await
            .context("creating the database")?;
    }
    drop(admin);

    let client = server.connect(db).await?;
    let loaded = client
        .query_one("SELECT to_regclass('public.prices') IS NOT NULL", &[])
        .await?
        .get::<_, bool>(0);
    if !loaded {
        load_dump(server, db).await?;
        client.batch_execute("ANALYZE").await?;
    }
    migrate(&client).await?;
    Ok(())
}

/// Creates the control-plane database if needed and applies its migrations (as the admin:
/// it creates the proxy's read-only role and the approvals app's login).
pub async fn setup_control(server: &Server) -> anyhow::Result<()> {
    let admin = server.connect("postgres").await?;
    let exists = admin
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[&CONTROL_DATABASE],
        )
        .await?
        .is_some();
    if !exists {
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {CONTROL_DATABASE} ENCODING 'UTF8' TEMPLATE template0"
            ))
            .await
            .context("creating the control-plane database")?;
    }
    drop(admin);
    let client = server.connect(CONTROL_DATABASE).await?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version text PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    for (version, sql) in CONTROL_MIGRATIONS {
        client
            .batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock(hashtext('dbgw-migrate'));\n{sql}\n\
                 INSERT INTO schema_migrations (version) VALUES ('{version}') ON CONFLICT DO NOTHING; COMMIT;"
            ))
            .await
            .with_context(|| format!("control-plane migration {version}"))?;
    }
    drop(client);
    for db in PROVISIONER_DATABASES {
        server
            .connect(db)
            .await?
            .batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock(hashtext('dbgw-migrate'));\n\
                 {PROVISIONER_SQL}\nCOMMIT;"
            ))
            .await
            .with_context(|| format!("the provisioning functions in database {db}"))?;
    }
    Ok(())
}

/// Loads the dump with `psql` (the dump uses `COPY ... FROM stdin`), as `rates_owner` and in
/// one transaction: a failed load leaves nothing behind.
async fn load_dump(server: &Server, db: &str) -> anyhow::Result<()> {
    let mut child = tokio::process::Command::new(crate::cluster::pg_bin("psql")?)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction"])
        .args(["-c", "SET ROLE rates_owner", "-f", "-"])
        .env("PGHOST", &server.host)
        .env("PGPORT", server.port.to_string())
        .env("PGUSER", &server.admin.username)
        .env("PGPASSWORD", server.admin.password.expose_secret())
        .env("PGDATABASE", db)
        .env(
            "PGSSLMODE",
            if server.ca.is_some() {
                "verify-full"
            } else {
                "require"
            },
        )
        .env(
            "PGSSLROOTCERT",
            server.ca.clone().unwrap_or_else(|| "system".into()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting psql to load the dump")?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(DUMP_SQL.as_bytes()).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        bail!(
            "loading the dump failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Applies the migrations not yet recorded in `schema_migrations`, each in its own
/// transaction as `rates_owner`. Returns the names it applied.
pub async fn migrate(client: &Client) -> anyhow::Result<Vec<&'static str>> {
    client
        .batch_execute(
            "SET ROLE rates_owner;
             CREATE TABLE IF NOT EXISTS public.schema_migrations (
                 version text PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now());
             RESET ROLE;",
        )
        .await
        .context("creating schema_migrations")?;
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS {
        let done = client
            .query_opt(
                "SELECT 1 FROM public.schema_migrations WHERE version = $1",
                &[version],
            )
            .await?
            .is_some();
        if done {
            continue;
        }
        client
            .batch_execute(&format!(
                "BEGIN; SET LOCAL ROLE rates_owner; \
                 SELECT pg_advisory_xact_lock(hashtext('dbgw-migrate'));\n{sql}\n\
                 INSERT INTO public.schema_migrations (version) VALUES ('{version}') \
                 ON CONFLICT DO NOTHING; COMMIT;"
            ))
            .await
            .with_context(|| format!("migration {version}"))?;
        applied.push(*version);
    }
    Ok(applied)
}

/// Whether the server has a role named `role`.
pub async fn role_exists(client: &Client, role: &str) -> anyhow::Result<bool> {
    Ok(client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .await?
        .is_some())
}
