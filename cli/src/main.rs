//! `dbgw`: how people reach the database. `dbgw login` signs in with the company's identity
//! provider (authorization code + PKCE, in the browser, answered on a loopback port) and
//! caches the ID token; `dbgw psql` runs psql through the audit proxy with it; `dbgw env`
//! prints the same settings for any other PostgreSQL client. `dbgw request` and `dbgw
//! extend` ask the approvals app for access and for more time; `dbgw status` says what is
//! pending and when each access ends.

mod approvals;
mod cache;
mod login;
mod requests;
mod settings;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cache::Cached;
use crate::settings::Settings;

/// Sign in with SSO and use psql (or any client) through the dbgw proxy.
///
/// Configuration: defaults for the local stack, then the TOML file given with --config (or
/// DBGW_CONFIG), then environment variables DBGW_<KEY> (e.g. DBGW_ISSUER, DBGW_PROXY_HOST).
/// The token is cached in $XDG_CONFIG_HOME/dbgw (or ~/.config/dbgw), readable by you only.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[arg(long, env = "DBGW_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sign in (opens the browser) and cache the ID token.
    Login {
        /// Print the sign-in URL instead of opening a browser.
        #[arg(long)]
        no_browser: bool,
        /// Sign in again with multi-factor (acr_values=mfa, prompt=login), for access whose
        /// policy asks for MFA or a recent sign-in.
        #[arg(long)]
        mfa: bool,
    },
    /// Run psql through the proxy as yourself, signing in first if needed.
    Psql {
        /// Database to connect to.
        database: Option<String>,
        /// Arguments for psql, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Print the environment (PGHOST, PGUSER, PGPASSWORD...) for other clients:
    /// `eval "$(dbgw env)"`.
    Env { database: Option<String> },
    /// Print the cached ID token.
    Token,
    /// Who you are signed in as, and until when; your pending requests and extensions, and
    /// when each of your accesses ends (from the approvals app).
    Status,
    /// Ask the approvals app for access: `dbgw request read-only --for 2h --why "INC-42"`.
    Request {
        /// The access level (see the approvals app's catalogue), e.g. `read-only`.
        level: String,
        /// Database (default: the `database` setting).
        #[arg(long)]
        database: Option<String>,
        /// How long: 90m, 2h, 1d.
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Why you need it (the approvers read this).
        #[arg(long)]
        why: String,
    },
    /// Ask for more time on active access, keeping open sessions:
    /// `dbgw extend --by 2h --why "migration overruns"`; `dbgw extend --withdraw` takes
    /// back a pending one (the access then ends at the time it had).
    Extend {
        /// The request whose access to extend (default: your only active one).
        request: Option<i64>,
        /// Extra time after the current end: 30m, 2h, 1d.
        #[arg(long, conflicts_with = "until", required_unless_present_any = ["until", "withdraw"])]
        by: Option<String>,
        /// A new end (RFC 3339, e.g. 2026-12-06T18:00:00Z).
        #[arg(long)]
        until: Option<String>,
        /// Why you need longer.
        #[arg(long, required_unless_present = "withdraw")]
        why: Option<String>,
        /// Withdraw the request's pending extension instead.
        #[arg(long, conflicts_with_all = ["by", "until", "why"])]
        withdraw: bool,
    },
    /// Forget the cached token.
    Logout,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = (|| -> anyhow::Result<()> {
        let settings: Settings = startup::config::load(cli.config.as_deref(), "DBGW_")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(run(settings, cli.command))
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dbgw: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings, command: Command) -> anyhow::Result<()> {
    let cache = cache::Cache::new(settings.cache_dir()?);
    match command {
        Command::Login { no_browser, mfa } => {
            let t = login::login(&settings, !no_browser, mfa).await?;
            cache.store(&t)?;
            eprintln!(
                "Signed in as {} until {}.",
                t.email,
                t.expires_at.format("%H:%M %Z")
            );
        }
        Command::Psql { database, args } => {
            let t = fresh_token(&settings, &cache).await?;
            let mut cmd = std::process::Command::new(&settings.psql);
            cmd.envs(env(&settings, &t, database.as_deref()))
                .args(&args);
            use std::os::unix::process::CommandExt;
            // Replace ourselves: psql gets the terminal, signals and exit code.
            let e = cmd.exec();
            anyhow::bail!("running {}: {e}", settings.psql);
        }
        Command::Env { database } => {
            let t = fresh_token(&settings, &cache).await?;
            for (k, v) in env(&settings, &t, database.as_deref()) {
                println!("export {k}='{}'", v.replace('\'', "'\\''"));
            }
        }
        Command::Token => println!("{}", fresh_token(&settings, &cache).await?.id_token),
        Command::Status => {
            let signed_in = match cache.load(&settings.issuer)? {
                Some(t) if t.valid_for_secs() > 0 => {
                    println!(
                        "signed in as {} until {}",
                        t.email,
                        t.expires_at.to_rfc3339()
                    );
                    true
                }
                Some(t) => {
                    println!(
                        "token of {} expired at {}: run `dbgw login`",
                        t.email,
                        t.expires_at.to_rfc3339()
                    );
                    false
                }
                None => {
                    println!("not signed in: run `dbgw login`");
                    false
                }
            };
            // Requests and ends, when the person is signed in somewhere (else this would
            // open a browser for a mere status).
            let mut api = approvals::Approvals::new(&settings)?;
            if signed_in || api.has_token() {
                requests::status(&mut api).await?;
            } else if let Some((email, at)) = api.expired() {
                println!(
                    "approvals sign-in of {email} expired at {}: requests are shown after \
                     you sign in again (`dbgw login`, then `dbgw status`)",
                    at.to_rfc3339()
                );
            }
        }
        Command::Request {
            level,
            database,
            duration,
            why,
        } => {
            let mut api = approvals::Approvals::new(&settings)?;
            let database = database.unwrap_or_else(|| settings.database.clone());
            requests::request(&mut api, &database, &level, &duration, &why).await?;
        }
        Command::Extend {
            request,
            by,
            until,
            why,
            withdraw,
        } => {
            let mut api = approvals::Approvals::new(&settings)?;
            match why {
                Some(why) if !withdraw => {
                    let (by, until) = (by.as_deref(), until.as_deref());
                    requests::extend(&mut api, request, by, until, &why).await?
                }
                _ => requests::withdraw_extension(&mut api, request).await?,
            }
        }
        Command::Logout => {
            cache.clear()?;
            approvals::Approvals::new(&settings)?.clear()?;
            eprintln!("signed out");
        }
    }
    Ok(())
}

/// The cached token if it is good for another minute; otherwise a new sign-in.
async fn fresh_token(settings: &Settings, cache: &cache::Cache) -> anyhow::Result<Cached> {
    match cache.load(&settings.issuer)? {
        Some(t) if t.valid_for_secs() > 60 => return Ok(t),
        Some(t) => eprintln!("Your token ({}) has expired; signing in again.", t.email),
        None => eprintln!("Not signed in yet; signing in."),
    }
    let t = login::login(settings, settings.open_browser, false).await?;
    cache.store(&t)?;
    Ok(t)
}

/// libpq's environment for a session through the proxy as the signed-in person.
fn env(settings: &Settings, t: &Cached, database: Option<&str>) -> Vec<(String, String)> {
    let mut vars = vec![
        ("PGHOST".into(), settings.proxy_host.clone()),
        ("PGPORT".into(), settings.proxy_port.to_string()),
        ("PGUSER".into(), t.email.clone()),
        ("PGPASSWORD".into(), t.id_token.clone()),
        (
            "PGDATABASE".into(),
            database.unwrap_or(&settings.database).to_string(),
        ),
        // Tokens only ever travel inside verified TLS.
        ("PGSSLMODE".into(), "verify-full".into()),
    ];
    if let Some(ca) = &settings.ca_file {
        vars.push(("PGSSLROOTCERT".into(), ca.display().to_string()));
    }
    vars
}
