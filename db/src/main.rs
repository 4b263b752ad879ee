//! `dbgw-db`: sets up the rates database on a server and runs the local dev cluster.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use dbgw_db::{schema, Cluster};
use secrecy::ExposeSecret;
use secret_store::{DbCredentials, SecretStore, SecretsSettings};
use startup::telemetry::{LogFormat, LogSettings};

/// The local stack's admin login (the master of its rotated secrets).
const ADMIN_SECRET: &str = "dbgw/postgres-admin";

/// Database tooling for dbgw: create roles, load the rates dump, apply migrations, and run
/// the local PostgreSQL cluster of `make up`.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Directory of the file secret store (local stack).
    #[arg(
        long,
        env = "DBGW_SECRETS_DIR",
        default_value = ".dev/secrets",
        global = true
    )]
    secrets_dir: PathBuf,
    /// Secret store: `file` (the directory above) or `aws` (Secrets Manager; region and
    /// credentials from the AWS SDK's chain, `AWS_ENDPOINT_URL` for an emulator).
    #[arg(long, env = "DBGW_SECRETS_BACKEND", default_value = "file", value_parser = ["file", "aws"], global = true)]
    secrets_backend: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the local dev cluster (created on first use) and make sure its roles have
    /// passwords in the secret store. pgaudit is on (its log in DIR/pgaudit-log).
    Up {
        #[arg(long, default_value = ".dev/pg")]
        dir: PathBuf,
        #[arg(long, default_value_t = 5433)]
        port: u16,
        /// Start without pgaudit (a server whose image has no pgaudit, e.g. the compose
        /// stack's set-up run, which restarts PostgreSQL itself afterwards).
        #[arg(long)]
        no_pgaudit: bool,
    },
    /// Issue a TLS server certificate from the dev cluster's CA (for the local proxy), or
    /// with `--client` a client certificate from its client CA.
    Cert {
        #[arg(long, default_value = ".dev/pg")]
        ca_dir: PathBuf,
        /// Directory that receives <name>.crt and <name>.key.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "server")]
        name: String,
        /// DNS names and IP addresses the certificate is for.
        #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
        hosts: Vec<String>,
        /// A client certificate from the cluster's client CA instead (for the proxy and the
        /// rotation function: the cluster admits people's roles only with one).
        #[arg(long)]
        client: bool,
    },
    /// Stop the local dev cluster.
    Down {
        #[arg(long, default_value = ".dev/pg")]
        dir: PathBuf,
    },
    /// Create roles and the database, load the dump if the database is empty, apply
    /// migrations. Safe to run again.
    Setup {
        #[command(flatten)]
        target: Target,
        /// A secret whose current login this server adopts (repeatable): its user's
        /// password becomes the secret's, so the rotation function, which proves the current
        /// password logs in before it changes anything, can rotate it (the first passwords
        /// Terraform writes are never set on the database otherwise).
        #[arg(long = "adopt", value_name = "SECRET")]
        adopt: Vec<String>,
    },
    /// Apply pending migrations only.
    Migrate(Target),
    /// Copy secrets between the secret store and a directory of JSON files (the local
    /// stack keeps moto's secrets in .dev/secrets while it is down).
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Give a role a new random password and store it in the secret store.
    SetPassword {
        #[command(flatten)]
        target: Target,
        /// The role whose password changes.
        #[arg(long)]
        role: String,
        /// The secret that receives {"username", "password"}.
        #[arg(long)]
        secret: String,
    },
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Create each secret of DIR (`a/b.json` is secret `a/b`) that the store does not hold;
    /// the store's own versions win.
    Import { dir: PathBuf },
    /// Write the current version of every secret in the store to DIR.
    Export { dir: PathBuf },
}

/// A server reached with the admin credentials held in the secret store.
#[derive(clap::Args)]
struct Target {
    #[arg(long, env = "PGHOST", default_value = "127.0.0.1")]
    host: String,
    #[arg(long, env = "PGPORT", default_value_t = 5433)]
    port: u16,
    #[arg(long, default_value = "rates")]
    database: String,
    /// Secret holding the admin login (the RDS master user in production).
    #[arg(long, default_value = "dbgw/postgres-admin")]
    admin_secret: String,
    /// CA bundle that signed the server certificate (e.g. the RDS global bundle).
    #[arg(long, default_value = ".dev/pg/ca.crt")]
    ca: PathBuf,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    startup::telemetry::init(&LogSettings {
        level: "warn".into(),
        format: LogFormat::Text,
    });
    let cli = Cli::parse();
    let store = SecretStore::from_settings(&SecretsSettings {
        backend: if cli.secrets_backend == "aws" {
            secret_store::Backend::Aws
        } else {
            secret_store::Backend::File
        },
        dir: cli.secrets_dir.clone(),
        ..Default::default()
    });
    match cli.command {
        Command::Up {
            dir,
            port,
            no_pgaudit,
        } => {
            let options = dbgw_db::cluster::Options {
                pgaudit: !no_pgaudit,
            };
            let cluster =
                tokio::task::spawn_blocking(move || Cluster::dev_with(&dir, port, options))
                    .await??;
            // Clusters made before the control plane existed get it now.
            schema::setup_control(&cluster.server()).await?;
            // Secrets in the layout of AWS's RDS rotation functions, so that the local
            // stack's rotation schedule can rotate them: rates-api's with alternating users,
            // the control-plane logins as single users changed by the admin (the master).
            let layout =
                |creds: &DbCredentials, dbname: &str, rotation: Option<&str>| DbCredentials {
                    host: Some("127.0.0.1".into()),
                    port: Some(port),
                    dbname: Some(dbname.into()),
                    masterarn: rotation.map(|_| ADMIN_SECRET.to_string()),
                    rotation: rotation.filter(|r| *r == "single-user").map(str::to_owned),
                    ..creds.clone()
                };
            // The admin login is the cluster's own (kept in its directory; never rotated).
            store
                .put_db_credentials(ADMIN_SECRET, &layout(cluster.admin(), "postgres", None))
                .await?;
            let admin = cluster.connect("postgres").await?;
            use secrecy::ExposeSecret;
            // Each login role of the local stack gets a password kept in the secret store.
            for (role, secret, dbname, rotation) in [
                ("rates_api", "dbgw/rates-api", "rates", "alternating"),
                ("dbgw_proxy", "dbgw/proxy-control", "dbgw", "single-user"),
                ("dbgw_approvals", "dbgw/approvals-db", "dbgw", "single-user"),
            ] {
                let stored = match store.db_credentials(secret).await {
                    Ok(creds) => Some(creds),
                    Err(secret_store::Error::NotFound(_)) => None,
                    Err(e) => return Err(e.into()),
                };
                // The stored user: the role, or after a rotation its clone, if the cluster has it.
                let usable = match stored {
                    Some(creds) if schema::role_exists(&admin, &creds.username).await? => {
                        Some(creds)
                    }
                    _ => None,
                };
                let creds = match usable {
                    Some(creds) => creds,
                    None => {
                        let fresh = DbCredentials::new(role, secret_store::generate_password());
                        let creds = layout(&fresh, dbname, Some(rotation));
                        store.put_db_credentials(secret, &creds).await?;
                        creds
                    }
                };
                pg_connect::set_password(&admin, &creds.username, creds.password.expose_secret())
                    .await?;
            }
            println!(
                "postgres  127.0.0.1:{port}  (TLS CA {})",
                cluster.ca_cert().display()
            );
        }
        Command::Down { dir } => Cluster::stop_dev(&dir)?,
        Command::Secrets { command } => {
            let files = SecretStore::File(secret_store::FileStore::new(match &command {
                SecretsCommand::Import { dir } | SecretsCommand::Export { dir } => dir.clone(),
            }));
            let (from, to, only_new) = match command {
                SecretsCommand::Import { .. } => (&files, &store, true),
                SecretsCommand::Export { .. } => (&store, &files, false),
            };
            let mut copied = 0;
            for id in from.list().await? {
                if only_new && !matches!(to.get(&id).await, Err(secret_store::Error::NotFound(_))) {
                    continue;
                }
                to.put(&id, &from.get(&id).await?).await?;
                copied += 1;
            }
            println!("{copied} secret(s) copied");
        }
        Command::Cert {
            ca_dir,
            out,
            name,
            hosts,
            client,
        } => {
            std::fs::create_dir_all(&out)?;
            let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
            let (crt, key) = if client {
                dbgw_db::tls::issue_client(&ca_dir, &name, &out, &name)?
            } else {
                dbgw_db::tls::issue(&ca_dir, &hosts, &out, &name)?
            };
            println!("{} {}", crt.display(), key.display());
        }
        Command::Setup { target, adopt } => {
            let server = target.server(&store).await?;
            schema::setup(&server, &target.database).await?;
            schema::setup_control(&server).await?;
            println!("database {} is set up", target.database);
            let admin = server.connect("postgres").await?;
            for secret in &adopt {
                let (_, creds) = store
                    .db_credentials_at(secret, secret_store::Stage::Current)
                    .await?;
                pg_connect::set_password(&admin, &creds.username, creds.password.expose_secret())
                    .await?;
                println!(
                    "{} now logs in with {secret}'s current password",
                    creds.username
                );
            }
        }
        Command::Migrate(target) => {
            let server = target.server(&store).await?;
            let applied = schema::migrate(&server.connect(&target.database).await?).await?;
            println!(
                "applied {} migration(s): {}",
                applied.len(),
                applied.join(", ")
            );
        }
        Command::SetPassword {
            target,
            role,
            secret,
        } => {
            let server = target.server(&store).await?;
            let password = secret_store::generate_password();
            pg_connect::set_password(&server.connect("postgres").await?, &role, &password).await?;
            store
                .put_db_credentials(&secret, &DbCredentials::new(&role, password))
                .await?;
            println!("role {role}: new password stored in secret {secret}");
        }
    }
    Ok(())
}

impl Target {
    async fn server(&self, store: &SecretStore) -> anyhow::Result<schema::Server> {
        let admin = store
            .db_credentials(&self.admin_secret)
            .await
            .context("reading the admin credentials")?;
        Ok(schema::Server {
            host: self.host.clone(),
            port: self.port,
            admin,
            ca: Some(self.ca.clone()),
            client_cert: None,
        })
    }
}
