//! The approvals history, as `approvals events export` wrote it: verified from its first
//! event (the chain's encoding is `grants::history`'s, the database's own), against the
//! head kept elsewhere when given; then the period's events, and what each request says
//! (who asked, why, who decided) for the accesses.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, Utc};
use grants::history::{Chain, Exported, Head};
use serde::Serialize;

pub struct History {
    pub verification: Verification,
    /// The events of the period, oldest first.
    pub events: Vec<Exported>,
    /// Every request's facts, by id, from the whole history.
    pub requests: BTreeMap<i64, Request>,
}

#[derive(Debug, Serialize)]
pub struct Verification {
    pub ok: bool,
    /// Events in the export.
    pub events: u64,
    /// The chain's last event, `ID:HASH`.
    pub head: Option<String>,
    /// The head it was checked against.
    pub anchor: Option<String>,
    pub error: Option<String>,
}

/// What the history says about one request.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Request {
    pub requested_by: Option<String>,
    pub requested_at: Option<String>,
    pub justification: Option<String>,
    pub level: Option<String>,
    /// Each event of the request: `time kind by actor`.
    pub history: Vec<String>,
}

pub fn read(
    file: &Path,
    anchor: Option<&Head>,
    since: &str,
    until: &str,
) -> anyhow::Result<History> {
    let since = time(since)?;
    let until = time(until)?;
    let reader = std::io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
    );
    let mut chain = Chain::default();
    let mut broken = None;
    let mut events = Vec::new();
    let mut requests: BTreeMap<i64, Request> = BTreeMap::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        let e: Exported = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not an exported event", file.display(), i + 1))?;
        if broken.is_none() {
            if let Err(problem) = chain.push(&e, anchor) {
                broken = Some(format!("{problem:#}"));
            }
        }
        if let Some(id) = e.request_id {
            note(requests.entry(id).or_default(), &e);
        }
        if e.at >= since && e.at <= until {
            events.push(e);
        }
    }
    let events_read = chain.events();
    let (ok, head, error) = match (broken, chain.finish(anchor)) {
        (Some(problem), _) => (false, None, Some(problem)),
        (None, Err(problem)) => (false, None, Some(format!("{problem:#}"))),
        (None, Ok(v)) => (true, v.head.map(|h| h.to_string()), None),
    };
    Ok(History {
        verification: Verification {
            ok,
            events: events_read,
            head,
            anchor: anchor.map(ToString::to_string),
            error,
        },
        events,
        requests,
    })
}

/// A head file as `approvals events head` prints it (`{"head":"ID:HASH"}`), local or in S3.
/// `None` when the file says `{"head":null}`: the history was empty when the head was
/// taken (a stack just set up), so it anchors nothing yet.
pub fn read_head(path: &Path) -> anyhow::Result<Option<Head>> {
    let bytes = super::super::source::read_small(path)?
        .with_context(|| format!("{} does not exist", path.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a head file", path.display()))?;
    match v.get("head") {
        Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(head)) => head.parse().map(Some),
        _ => anyhow::bail!(
            "{} is not a head file: \"head\" is neither null nor ID:HASH",
            path.display()
        ),
    }
}

fn note(r: &mut Request, e: &Exported) {
    let at = e.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    if e.kind == "request.created" {
        let data: serde_json::Value = serde_json::from_str(&e.data).unwrap_or_default();
        let text = |k: &str| data.get(k).and_then(|v| v.as_str()).map(str::to_string);
        r.requested_by = Some(e.actor.clone());
        r.requested_at = Some(at.clone());
        r.justification = text("justification");
        r.level = text("level");
    }
    r.history.push(format!("{at} {} by {}", e.kind, e.actor));
}

fn time(text: &str) -> anyhow::Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("{text}: not a time"))?
        .with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("head.json");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn a_head_file_of_an_empty_history_anchors_nothing() {
        let (_d, empty) = head_file(r#"{"head":null}"#);
        assert!(read_head(&empty).unwrap().is_none());
        let hash = "ab".repeat(32);
        let (_d, kept) = head_file(&format!(r#"{{"head":"4:{hash}"}}"#));
        assert_eq!(
            read_head(&kept).unwrap().unwrap().to_string(),
            format!("4:{hash}")
        );
        let (_d, odd) = head_file(r#"{"head":4}"#);
        assert!(read_head(&odd).is_err());
        let (_d, none) = head_file(r#"{}"#);
        assert!(read_head(&none).is_err());
    }
}
