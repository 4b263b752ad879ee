//! `proxy audit sessions`: one line per session, filtered, streaming over any size of log.
//!
//! The chains are read record by record through [`super::verify::Walk`] (verify's logic) and
//! merged in time order, like `proxy audit merge`. Memory holds one record per chain and a
//! small summary per session still open at that point of the log: a session is printed and
//! forgotten when its `disconnect` (or refused login) is read. Sessions with no end in the
//! files are printed last.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use super::filter::{Facts, Filter};
use super::head::Head;
use super::read::{self, AuthResult, Body, Identity, Status};
use super::verify::{self, Trust, Walk};

/// `proxy audit sessions`.
#[derive(Debug, clap::Args)]
pub struct SessionsArgs {
    /// Audit files or directories (every replica's, for the whole fleet), or the shipped
    /// copy (`s3://bucket/prefix`).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub filter: Filter,
    /// A published head (`head.json`) per replica, as for `proxy audit session`.
    #[arg(long)]
    pub head_file: Vec<PathBuf>,
}

/// What is kept of a session while it is open.
#[derive(Debug, Clone)]
pub struct Summary {
    pub session: String,
    pub replica: String,
    pub start: String,
    pub end: String,
    pub client: String,
    /// The start-up's user and database (before any login).
    pub user: Option<String>,
    pub requested_database: Option<String>,
    pub login: Option<read::Login>,
    pub statements: u64,
    pub errors: u64,
    pub refused: u64,
    /// How it ended (None: no end in the files).
    pub ended: Option<String>,
    /// A statement matched `--statement-like`.
    pub statement_matched: bool,
    /// The least the chain vouches for any of its records.
    pub trust: Trust,
}

impl Summary {
    fn new(session: &str, replica: &str, ts: &str) -> Summary {
        Summary {
            session: session.to_string(),
            replica: replica.to_string(),
            start: ts.to_string(),
            end: ts.to_string(),
            client: String::new(),
            user: None,
            requested_database: None,
            login: None,
            statements: 0,
            errors: 0,
            refused: 0,
            ended: None,
            statement_matched: false,
            trust: Trust::Chained,
        }
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            identity: self.login.as_ref().map(|l| &l.identity),
            user: self.user.as_deref(),
            database: self
                .login
                .as_ref()
                .map(|l| l.database.as_str())
                .or(self.requested_database.as_deref()),
            start: &self.start,
            end: &self.end,
        }
    }

    /// One line: when, which session, who, where, what, how it ended.
    pub fn line(&self) -> String {
        let who = match self.login.as_ref().map(|l| &l.identity) {
            Some(Identity::Person {
                email,
                grant_id,
                request_id,
                ..
            }) => match request_id {
                Some(r) => format!("person {email} grant {grant_id} request {r}"),
                None => format!("person {email} grant {grant_id}"),
            },
            Some(Identity::Service { name }) => format!("service {name}"),
            None => format!("user {}", self.user.as_deref().unwrap_or("?")),
        };
        let database = self.facts().database.unwrap_or("?").to_string();
        let mut counts = format!("{} statement(s)", self.statements);
        if self.errors > 0 {
            counts.push_str(&format!(", {} error(s)", self.errors));
        }
        if self.refused > 0 {
            counts.push_str(&format!(", {} refused", self.refused));
        }
        let replica = if self.replica.is_empty() {
            String::new()
        } else {
            format!(" [{}]", self.replica)
        };
        format!(
            "{}{} .. {}  {}{replica}  {who}  db {database}  from {}  {counts}  {}",
            if self.trust == Trust::Chained {
                ""
            } else {
                "TAMPERED "
            },
            self.start,
            self.end,
            self.session,
            self.client,
            self.ended.as_deref().unwrap_or("(no end in the files)"),
        )
    }
}

/// The sessions being read, by id, and what to do with each once it ends.
pub struct Sessions<'f> {
    filter: &'f Filter,
    open: HashMap<String, Summary>,
    /// Sessions listed, and how many of them the chain does not vouch for.
    pub listed: u64,
    pub tampered: u64,
}

impl<'f> Sessions<'f> {
    pub fn new(filter: &'f Filter) -> Sessions<'f> {
        Sessions {
            filter,
            open: HashMap::new(),
            listed: 0,
            tampered: 0,
        }
    }

    /// Takes one record; returns the session it ended, if it ended one that matches.
    pub fn take(&mut self, replica: &str, r: &read::Record, trust: Trust) -> Option<Summary> {
        let id = r.body.session()?;
        let s = self
            .open
            .entry(id.to_string())
            .or_insert_with(|| Summary::new(id, replica, &r.ts));
        s.end.clone_from(&r.ts);
        s.trust = s.trust.max(trust);
        if let Some(who) = r.body.who() {
            if s.client.is_empty() {
                s.client.clone_from(&who.client);
            }
            if s.login.is_none() {
                s.login.clone_from(&who.login);
            }
        }
        let mut ended = false;
        match &r.body {
            Body::Connect { startup, .. } => {
                s.user = startup.get("user").cloned();
                s.requested_database = startup.get("database").cloned().or(s.user.clone());
            }
            Body::Auth {
                result: AuthResult::Refused,
                reason,
                user,
                ..
            } => {
                s.user = Some(user.clone());
                s.ended = Some(format!(
                    "login refused: {}",
                    reason.as_deref().unwrap_or("no reason recorded")
                ));
                ended = true;
            }
            Body::Statement(st) => {
                s.statements += 1;
                if !s.statement_matched {
                    let texts = st.statements.iter().flatten().chain(&st.statement);
                    s.statement_matched =
                        texts.into_iter().any(|t| self.filter.statement_matches(t));
                }
            }
            Body::Outcome(o) => match o.status {
                Status::Error { .. } => s.errors += 1,
                Status::Refused { .. } => s.refused += 1,
                _ => {}
            },
            Body::Disconnect { reason, .. } => {
                s.ended = Some(reason.clone());
                ended = true;
            }
            _ => {}
        }
        if ended {
            let s = self.open.remove(id).expect("inserted above");
            return self.listed(s);
        }
        None
    }

    /// The sessions with no end in the files, oldest first, once everything was read.
    pub fn unfinished(&mut self) -> Vec<Summary> {
        let mut rest: Vec<Summary> = self.open.drain().map(|(_, s)| s).collect();
        rest.sort_by(|a, b| a.start.cmp(&b.start));
        rest.into_iter().filter_map(|s| self.listed(s)).collect()
    }

    fn listed(&mut self, s: Summary) -> Option<Summary> {
        let wanted = self.filter.matches(&s.facts())
            && (self.filter.statement_like.is_none() || s.statement_matched);
        if !wanted {
            return None;
        }
        self.listed += 1;
        if s.trust != Trust::Chained {
            self.tampered += 1;
        }
        Some(s)
    }
}

/// A chain's walk with its next record read ahead, for the merge.
struct Source<'f> {
    replica: &'f str,
    walk: Walk<'f>,
    next: Option<(read::Record, Trust)>,
}

impl Source<'_> {
    /// Reads ahead the next record this reader can read.
    fn advance(&mut self) -> anyhow::Result<()> {
        self.next = None;
        while let Some(step) = self.walk.next_record()? {
            match read::parse(step.text) {
                Ok(r) => {
                    self.next = Some((r, step.trust));
                    return Ok(());
                }
                // A broken part of the chain may hold anything; the break is reported.
                Err(_) if step.trust == Trust::Broken => continue,
                Err(e) => anyhow::bail!("{}:{}: {e}", step.file, step.line),
            }
        }
        Ok(())
    }
}

/// Lists the sessions of `paths` that `filter` keeps to `out`; the summary goes to the end.
pub fn list(
    paths: &[PathBuf],
    heads: &[Head],
    filter: &Filter,
    out: &mut impl Write,
) -> anyhow::Result<Report> {
    let report = each(paths, heads, filter, |s| {
        writeln!(out, "{}", s.line())?;
        Ok(())
    })?;
    out.flush()?;
    Ok(report)
}

/// Calls `f` with each session of `paths` that `filter` keeps, as it ends (sessions with no
/// end in the files last).
pub fn each(
    paths: &[PathBuf],
    heads: &[Head],
    filter: &Filter,
    mut f: impl FnMut(Summary) -> anyhow::Result<()>,
) -> anyhow::Result<Report> {
    let chains = verify::chains(paths)?;
    let anchors = verify::anchors(&chains, heads)?;
    let mut sources: Vec<Source> = chains
        .iter()
        .zip(&anchors)
        .map(|(c, a)| Source {
            replica: &c.replica,
            walk: Walk::new(&c.files, a.as_ref()),
            next: None,
        })
        .collect();
    for s in &mut sources {
        s.advance()?;
    }
    let mut sessions = Sessions::new(filter);
    // The earliest record among the chains' next ones (few chains: a scan is enough).
    while let Some(i) = sources
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.next.as_ref().map(|(r, _)| (&r.ts, i)))
        .min()
        .map(|(_, i)| i)
    {
        let source = &mut sources[i];
        let (record, trust) = source.next.take().expect("chosen for its record");
        if let Some(done) = sessions.take(source.replica, &record, trust) {
            f(done)?;
        }
        source.advance()?;
    }
    for s in sessions.unfinished() {
        f(s)?;
    }
    let mut broken = Vec::new();
    for (chain, source) in chains.iter().zip(sources) {
        if let Err(b) = source.walk.finish()? {
            broken.push(format!(
                "{}{b}",
                super::transcript::replica_label(&chain.replica)
            ));
        }
    }
    Ok(Report {
        listed: sessions.listed,
        tampered: sessions.tampered,
        broken,
    })
}

/// What `list` saw besides the lines.
#[derive(Debug)]
pub struct Report {
    pub listed: u64,
    /// Listed sessions with a record the chain does not vouch for (marked TAMPERED).
    pub tampered: u64,
    /// Each chain's first problem, if it has one.
    pub broken: Vec<String>,
}

pub fn run(args: &SessionsArgs) -> ExitCode {
    let report = super::transcript::read_heads(&args.head_file).and_then(|heads| {
        list(
            &args.paths,
            &heads,
            &args.filter,
            &mut std::io::stdout().lock(),
        )
    });
    match report {
        Ok(r) => {
            eprintln!(
                "{} session(s) listed, {} of them TAMPERED",
                r.listed, r.tampered
            );
            for b in &r.broken {
                eprintln!("chain problem: {b} (proxy audit verify says more)");
            }
            if r.tampered > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("proxy: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testlog::{alice, alter, service, write_sessions};
    use super::*;

    fn listed(paths: &[PathBuf], filter: &Filter) -> (Vec<String>, Report) {
        let mut out = Vec::new();
        let report = list(paths, &[], filter, &mut out).unwrap();
        let lines = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        (lines, report)
    }

    #[tokio::test]
    async fn sessions_of_every_replica_are_listed_in_time_order_and_filtered() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        write_sessions(&a, "proxy-a", &[("a1", alice(), "SELECT 1 FROM notes")]).await;
        write_sessions(&b, "proxy-b", &[("s1", service(), "SELECT 2")]).await;
        write_sessions(&a, "proxy-a", &[("a2", alice(), "SELECT 3")]).await;
        let dirs = vec![a.clone(), b];

        let (lines, report) = listed(&dirs, &Filter::default());
        let ids: Vec<&str> = lines
            .iter()
            .map(|l| l.split("  ").nth(1).unwrap())
            .collect();
        assert_eq!(
            ids,
            ["a1 [proxy-a]", "s1 [proxy-b]", "a2 [proxy-a]"],
            "{lines:#?}"
        );
        assert_eq!((report.listed, report.tampered), (3, 0));
        assert!(
            lines[0].contains("person alice@example.com grant 7 request 12  db rates")
                && lines[0].contains("1 statement(s)  client closed the connection"),
            "{}",
            lines[0]
        );

        let only = |f: Filter| listed(&dirs, &f).0.len();
        let email = Filter {
            email: Some("alice@example.com".into()),
            ..Filter::default()
        };
        assert_eq!(only(email), 2);
        let like = Filter {
            statement_like: Some("%from notes".into()),
            ..Filter::default()
        };
        assert_eq!(only(like), 1);
        let grant = Filter {
            grant: Some(7),
            database: Some("rates".into()),
            ..Filter::default()
        };
        assert_eq!(only(grant), 2);

        // A session in the broken part of its chain is marked, and counted.
        alter(&a, "SELECT 3", "SELECT 4");
        let (lines, report) = listed(&dirs, &Filter::default());
        assert_eq!((report.listed, report.tampered), (3, 1));
        assert!(lines[2].starts_with("TAMPERED "), "{lines:#?}");
        assert_eq!(report.broken.len(), 1);
    }

    #[test]
    fn memory_holds_only_open_sessions() {
        let filter = Filter::default();
        let mut sessions = Sessions::new(&filter);
        let record = |body: &str| read::parse(body.as_bytes()).unwrap();
        for i in 0..1000 {
            let who = format!(r#""session":"s{i}","client":"c""#);
            let connect = record(&format!(
                r#"{{"seq":1,"prev":"0","ts":"t","type":"connect",{who},"tls":true,"startup":{{}},"hash":"h"}}"#
            ));
            assert!(sessions.take("", &connect, Trust::Chained).is_none());
            let end = record(&format!(
                r#"{{"seq":2,"prev":"0","ts":"t","type":"disconnect",{who},"bytes_from_client":0,"bytes_to_client":0,"statements":0,"duration_ms":0,"reason":"r","hash":"h"}}"#
            ));
            assert!(sessions.take("", &end, Trust::Chained).is_some());
            assert!(sessions.open.is_empty());
        }
    }
}
