//! `proxy audit evidence`: the evidence of a period, as one directory an auditor can read in
//! a browser (`index.html`, no scripts) and check by machine (JSON files and a `MANIFEST` of
//! SHA-256 hashes; `--verify DIR` checks it).
//!
//! It is a subcommand of `proxy` because most of it is the audit's own readers (verify,
//! crosscheck, sessions, transcripts); what comes from elsewhere comes as inputs: the
//! approvals history as exported by `approvals events export` (verified here, without the
//! database) and the rotation dates read from Secrets Manager.
//!
//! Reproducible: the same inputs give a byte-identical bundle. Nothing in it depends on
//! the clock, the host or the order of directory listings; `--generated-at` names the time
//! when the bundle should say it.
//!
//! - [`bundle`]: writing the files and the manifest, and checking a manifest.
//! - [`chains`]: every replica's chain verified, with its head.
//! - [`accesses`]: each access used in the period, with its sessions and their transcripts.
//! - [`approvals`]: the exported approvals history, verified, and the period's events.
//! - [`secrets`]: rotation dates and version history of every secret.
//! - [`controls`]: which file evidences which control.
//! - [`html`]: the readable summary.

mod accesses;
mod approvals;
mod bundle;
mod chains;
mod controls;
mod html;
mod secrets;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::filter::Filter;
use bundle::Bundle;

/// `proxy audit evidence`.
#[derive(Debug, clap::Args)]
pub struct EvidenceArgs {
    /// Audit files or directories, every replica's (local, or `s3://bucket/prefix`).
    #[arg(required_unless_present = "verify")]
    pub paths: Vec<PathBuf>,
    /// The directory to write the bundle to (created; it must be empty or absent).
    #[arg(long, required_unless_present = "verify")]
    pub out: Option<PathBuf>,
    /// The period's start (the forms of `proxy audit sessions --since`).
    #[arg(long, value_parser = super::filter::parse_time, required_unless_present = "verify")]
    pub since: Option<String>,
    /// The period's end (the forms of `proxy audit sessions --until`).
    #[arg(long, value_parser = super::filter::parse_until, required_unless_present = "verify")]
    pub until: Option<String>,
    /// A published head (`head.json`) per replica, as for `proxy audit verify`.
    #[arg(long)]
    pub head_file: Vec<PathBuf>,
    /// The database server's pgaudit log (local JSON log files or their directory): the
    /// crosscheck goes in the bundle.
    #[arg(long)]
    pub pgaudit: Vec<PathBuf>,
    /// Allowed difference between the proxy's clock and the server's, in seconds.
    #[arg(long, default_value_t = 5)]
    pub max_clock_skew_secs: i64,
    #[command(flatten)]
    pub rotation: super::crosscheck::RotationWitness,
    /// The approvals history, as `approvals events export` wrote it.
    #[arg(long)]
    pub approvals_events: Option<PathBuf>,
    /// The approvals history's head kept elsewhere (`approvals events head`), `ID:HASH`.
    #[arg(
        long,
        requires = "approvals_events",
        conflicts_with = "approvals_head_file"
    )]
    pub approvals_head: Option<grants::history::Head>,
    /// The same head as a file `approvals events head` wrote (`{"head":"ID:HASH"}`), e.g.
    /// the copy the shipper put in the audit bucket
    /// (`s3://bucket/prefix/approvals/head.json`).
    #[arg(long, requires = "approvals_events")]
    pub approvals_head_file: Option<PathBuf>,
    /// Read rotation dates from Secrets Manager ([secrets] of the configuration: region,
    /// endpoint), for the secrets whose names start with this prefix.
    #[arg(long)]
    pub secrets_prefix: Option<String>,
    /// The time the bundle says it was made (any text; none by default, so that the same
    /// inputs give the same bundle).
    #[arg(long)]
    pub generated_at: Option<String>,
    /// Check a bundle's MANIFEST instead: every file's SHA-256, no file missing or added.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["paths", "out"])]
    pub verify: Option<PathBuf>,
}

/// What the period's bundle holds, for the summary.
pub struct Contents {
    pub since: String,
    pub until: String,
    pub generated_at: Option<String>,
    pub chains: chains::Chains,
    pub crosscheck: Option<super::crosscheck::Report>,
    pub accesses: Vec<accesses::Access>,
    pub approvals: Option<approvals::History>,
    pub secrets: Option<secrets::Secrets>,
}

pub fn run(args: &EvidenceArgs, secrets: Option<&secret_store::SecretsSettings>) -> ExitCode {
    if let Some(dir) = &args.verify {
        return match bundle::verify(dir) {
            Ok(problems) if problems.is_empty() => {
                println!("OK: every file of {} matches its MANIFEST", dir.display());
                ExitCode::SUCCESS
            }
            Ok(problems) => {
                for p in problems {
                    println!("ALTERED: {p}");
                }
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("proxy: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    match build(args, secrets) {
        Ok((out, clean)) => {
            println!("wrote {} (open index.html)", out.display());
            if clean {
                ExitCode::SUCCESS
            } else {
                println!("the bundle records problems: see index.html");
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("proxy: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Builds the bundle; true when every check in it passed.
fn build(
    args: &EvidenceArgs,
    secrets_settings: Option<&secret_store::SecretsSettings>,
) -> anyhow::Result<(PathBuf, bool)> {
    let out = args.out.clone().context("--out is required")?;
    let since = args.since.clone().context("--since is required")?;
    let until = args.until.clone().context("--until is required")?;
    let heads = super::transcript::read_heads(&args.head_file)?;
    let mut bundle = Bundle::create(&out)?;

    let chains = chains::verify(&args.paths, &heads)?;
    bundle.json("chains.json", &chains)?;

    let crosscheck = if args.pgaudit.is_empty() {
        None
    } else {
        let proxy_files = super::source::collect(&args.paths)?;
        let server_files = super::crosscheck::collect_pgaudit(&args.pgaudit)?;
        let report = super::crosscheck::crosscheck(
            &proxy_files,
            &server_files,
            &super::crosscheck::Options {
                max_clock_skew_secs: args.max_clock_skew_secs,
            },
            &args.rotation,
        )?;
        bundle.json("crosscheck.json", &report)?;
        Some(report)
    };

    let approvals = match &args.approvals_events {
        Some(file) => {
            let anchor = match (&args.approvals_head, &args.approvals_head_file) {
                (Some(head), _) => Some(head.clone()),
                (None, Some(path)) => approvals::read_head(path)?,
                (None, None) => None,
            };
            let history = approvals::read(file, anchor.as_ref(), &since, &until)?;
            bundle.json("approvals-verification.json", &history.verification)?;
            bundle.json_lines("approvals-events.jsonl", &history.events)?;
            Some(history)
        }
        None => None,
    };

    let filter = Filter {
        since: Some(since.clone()),
        until: Some(until.clone()),
        ..Filter::default()
    };
    let accesses = accesses::collect(&args.paths, &heads, &filter, approvals.as_ref())?;
    bundle.json("accesses.json", &accesses)?;
    for a in &accesses {
        for s in &a.sessions {
            bundle.text(&s.transcript_file, &s.transcript)?;
        }
    }

    let secrets = match (&args.secrets_prefix, secrets_settings) {
        (Some(prefix), Some(settings)) => {
            let s = secrets::read(settings, prefix)?;
            bundle.json("secrets.json", &s)?;
            Some(s)
        }
        (Some(_), None) => anyhow::bail!("--secrets-prefix needs the [secrets] configuration"),
        _ => None,
    };

    let contents = Contents {
        since,
        until,
        generated_at: args.generated_at.clone(),
        chains,
        crosscheck,
        accesses,
        approvals,
        secrets,
    };
    let controls = controls::table(&contents);
    bundle.json("controls.json", &controls)?;
    bundle.json("period.json", &period(&contents))?;
    bundle.text("index.html", &html::index(&contents, &controls))?;
    bundle.finish()?;
    Ok((out, clean(&contents)))
}

fn period(c: &Contents) -> serde_json::Value {
    serde_json::json!({
        "since": c.since,
        "until": c.until,
        "generated_at": c.generated_at,
    })
}

/// Every check in the bundle passed.
pub fn clean(c: &Contents) -> bool {
    c.chains.all_ok()
        && c.crosscheck.as_ref().is_none_or(|r| r.clean())
        && c.approvals.as_ref().is_none_or(|a| a.verification.ok)
        && c.accesses
            .iter()
            .all(|a| a.sessions.iter().all(|s| s.verified))
}
