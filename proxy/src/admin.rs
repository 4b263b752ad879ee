//! Operator commands: `proxy grant add|revoke|list`. They use the proxy's configuration to
//! find the control plane and the database server, and an admin login from the secret store
//! to create and retire people's roles. The approvals app does the same through the same
//! `grants` library.

use chrono::{DateTime, Duration, Utc};
use clap::Subcommand;
use secret_store::SecretStore;

use crate::settings::Settings;

/// How long `grant revoke` lets the proxies close the grant's sessions (with the reason)
/// before it ends on the server whatever of the role is left.
const PROXY_CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

#[derive(Subcommand)]
pub enum GrantCommand {
    /// Let a person connect to a database with a group role's privileges, until a time.
    Add {
        /// The person's email, as the identity provider knows it.
        #[arg(long)]
        email: String,
        /// A group role of the database, e.g. rates_reader or rates_writer.
        #[arg(long)]
        role: String,
        #[arg(long, default_value = "rates")]
        database: String,
        /// How long the grant lasts.
        #[arg(long, default_value_t = 7, conflicts_with = "until")]
        days: i64,
        /// Or until when (RFC 3339, e.g. 2026-12-31T18:00:00Z).
        #[arg(long)]
        until: Option<DateTime<Utc>>,
        /// Who approved it, for the record.
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
    },
    /// Revoke a grant; the person's open sessions are closed within seconds.
    Revoke {
        id: i64,
        #[arg(long)]
        reason: String,
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
    },
    /// List all grants.
    List,
}

/// Runs a grant command; `admin_secret` holds a login allowed to create roles.
pub async fn grant(
    settings: &Settings,
    admin_secret: &str,
    command: GrantCommand,
) -> anyhow::Result<()> {
    let secrets = SecretStore::from_settings(&settings.secrets);
    let control = settings
        .grants
        .server(&settings.upstream)
        .connect_with_secret(
            &secrets,
            admin_secret,
            &settings.grants.database,
            "dbgw-proxy-admin",
        )
        .await?;
    let target = settings.upstream.target();
    match command {
        GrantCommand::Add {
            email,
            role,
            database,
            days,
            until,
            by,
        } => {
            let target = target
                .connect_with_secret(&secrets, admin_secret, &database, "dbgw-proxy-admin")
                .await?;
            let expires_at = until.unwrap_or_else(|| Utc::now() + Duration::days(days));
            // The admin login is the master that rotates the person's secret.
            let layout = grants::SecretLayout {
                host: settings.upstream.host.clone(),
                port: settings.upstream.port,
                master: admin_secret.to_string(),
            };
            let g = grants::add(
                &control,
                &target,
                &secrets,
                &layout,
                settings.upstream.auth,
                grants::NewGrant {
                    email,
                    database,
                    role,
                    expires_at,
                    created_by: by,
                    policy: Default::default(),
                },
            )
            .await?;
            println!(
                "grant {}: {} may connect to {} as {} (role {}) until {}",
                g.id, g.email, g.database, g.db_user, g.role, g.expires_at
            );
        }
        GrantCommand::Revoke { id, reason, by } => {
            let target = target
                .connect_with_secret(&secrets, admin_secret, "postgres", "dbgw-proxy-admin")
                .await?;
            let g = grants::revoke(&control, &target, id, &by, &reason).await?;
            // The proxies close the grant's sessions with the reason within a round trip;
            // whatever of the role is still on the server after that (no grant left) ends.
            let active_left = grants::active_roles(&control, &g.db_user).await?.len();
            let mut ended = 0;
            if active_left == 0 {
                let deadline = std::time::Instant::now() + PROXY_CLOSE_GRACE;
                while grants::backends(&target, &g.db_user).await? > 0
                    && std::time::Instant::now() < deadline
                {
                    crate::clock::sleep(std::time::Duration::from_millis(100)).await;
                }
                ended = grants::terminate_sessions(&target, &g.db_user).await?;
            }
            println!(
                "grant {} revoked; {}'s sessions close within seconds ({} server session(s) \
                 ended by the revocation itself)",
                g.id, g.email, ended
            );
        }
        GrantCommand::List => {
            println!(
                "{:>5}  {:<28} {:<10} {:<14} {:<22} status",
                "id", "email", "database", "role", "expires"
            );
            let now = Utc::now();
            for g in grants::list(&control).await? {
                let status = g.inactive_reason(now).unwrap_or_else(|| "active".into());
                println!(
                    "{:>5}  {:<28} {:<10} {:<14} {:<22} {}",
                    g.id,
                    g.email,
                    g.database,
                    g.role,
                    g.expires_at.format("%Y-%m-%d %H:%M UTC"),
                    status
                );
            }
        }
    }
    Ok(())
}
