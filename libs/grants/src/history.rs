//! The approvals history's hash chain, as data: an event's encoding and hash
//! (`db/control/0005_approvals_history_sealed.sql`), the head (`ID:HASH`), and the
//! verification of an exported history (`approvals events export`), so that whoever holds
//! the export (an auditor, `proxy audit evidence`) checks it without the database.

use std::fmt;
use std::io::Write;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_postgres::GenericClient;

/// The last event of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub id: i64,
    pub hash: [u8; 32],
}

impl fmt::Display for Head {
    /// `ID:HASH` (hex), the form `--head` takes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.id, hex::encode(self.hash))
    }
}

impl std::str::FromStr for Head {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Head> {
        let (id, hash) = s
            .split_once(':')
            .context("a head is ID:HASH (as `approvals events head` prints it)")?;
        let id = id.parse().context("the head's id is not a number")?;
        let hash = hex::decode(hash)
            .ok()
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
            .context("the head's hash is not 64 hex digits")?;
        Ok(Head { id, hash })
    }
}

/// What a verification found: how many events, and the head.
#[derive(Debug)]
pub struct Verified {
    pub events: u64,
    pub head: Option<Head>,
}

/// One event as the chain encodes it.
pub struct Sealed<'a> {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub request_id: Option<i64>,
    pub grant_id: Option<i64>,
    pub actor: &'a str,
    pub kind: &'a str,
    /// `data::text`: PostgreSQL's canonical text of the jsonb value.
    pub data: &'a str,
}

/// The hash of an event after `prev` (see the migration for the encoding).
pub fn hash(prev: &[u8; 32], e: &Sealed<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(e.id.to_be_bytes());
    h.update(e.at.timestamp_micros().to_be_bytes());
    for v in [e.request_id, e.grant_id] {
        match v {
            None => h.update([0u8]),
            Some(v) => {
                h.update([1u8]);
                h.update(v.to_be_bytes());
            }
        }
    }
    for s in [e.actor, e.kind, e.data] {
        let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
        h.update(len.to_be_bytes());
        h.update(s.as_bytes());
    }
    h.finalize().into()
}

/// One event as `approvals events export` writes it: one JSON line, `data` as PostgreSQL's
/// canonical text of the jsonb value (what the hash covers), hashes in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exported {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub request_id: Option<i64>,
    pub grant_id: Option<i64>,
    pub actor: String,
    pub kind: String,
    pub data: String,
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
}

impl Exported {
    pub fn sealed(&self) -> Sealed<'_> {
        Sealed {
            id: self.id,
            at: self.at,
            request_id: self.request_id,
            grant_id: self.grant_id,
            actor: &self.actor,
            kind: &self.kind,
            data: &self.data,
        }
    }
}

/// Checks exported events one by one from the first of the chain, as `approvals events
/// verify` checks the table.
#[derive(Debug, Default)]
pub struct Chain {
    prev: Option<[u8; 32]>,
    events: u64,
    last_id: Option<i64>,
    seen_expected: bool,
}

impl Chain {
    /// The next event; an error names the first event that breaks the chain.
    pub fn push(&mut self, e: &Exported, expect: Option<&Head>) -> anyhow::Result<()> {
        let id = e.id;
        let prev = self.prev.unwrap_or([0; 32]);
        let stored_prev = e.prev_hash.as_deref().and_then(|h| hex::decode(h).ok());
        if stored_prev.as_deref() != Some(&prev[..]) {
            bail!(
                "event {id}: its link to the event before it is broken (an event before it \
                 was removed, changed or slipped in, or it was never sealed)"
            );
        }
        let expected = hash(&prev, &e.sealed());
        let stored = e.hash.as_deref().and_then(|h| hex::decode(h).ok());
        if stored.as_deref() != Some(&expected[..]) {
            bail!("event {id}: its content does not match its hash (it was changed)");
        }
        if let Some(head) = expect.filter(|h| h.id == id) {
            if head.hash != expected {
                bail!("event {id} is not the exported head {head}: the history was rewritten");
            }
            self.seen_expected = true;
        }
        self.prev = Some(expected);
        self.last_id = Some(id);
        self.events += 1;
        Ok(())
    }

    /// Events checked so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// After the last event: the count and head, or an error when `expect` was not met.
    pub fn finish(self, expect: Option<&Head>) -> anyhow::Result<Verified> {
        if let Some(head) = expect {
            if !self.seen_expected {
                bail!("the exported head {head} is not in the history: it was cut or rewritten");
            }
        }
        Ok(Verified {
            events: self.events,
            head: self
                .last_id
                .zip(self.prev)
                .map(|(id, hash)| Head { id, hash }),
        })
    }
}

/// Writes every event, oldest first, as `grants::history::Exported` JSON lines: what an
/// auditor verifies without the database (`proxy audit evidence --approvals-events`).
pub async fn export(db: &impl GenericClient, out: &mut impl Write) -> anyhow::Result<u64> {
    let mut n = 0;
    for_each(db, |e| {
        serde_json::to_writer(&mut *out, &e)?;
        out.write_all(b"\n")?;
        n += 1;
        Ok(())
    })
    .await?;
    out.flush()?;
    Ok(n)
}

/// Every event of the control plane's history, oldest first, a page at a time.
pub async fn for_each(
    db: &impl GenericClient,
    mut f: impl FnMut(Exported) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    const PAGE: i64 = 5000;
    let mut last_id = i64::MIN;
    loop {
        let rows = db
            .query(
                "SELECT id, at, request_id, grant_id, actor, kind, data::text, prev_hash, hash \
                 FROM events WHERE id > $1 ORDER BY id LIMIT $2",
                &[&last_id, &PAGE],
            )
            .await
            .context("reading events")?;
        if rows.is_empty() {
            return Ok(());
        }
        for row in &rows {
            last_id = row.get(0);
            let hex = |i: usize| row.get::<_, Option<Vec<u8>>>(i).map(hex::encode);
            f(Exported {
                id: last_id,
                at: row.get(1),
                request_id: row.get(2),
                grant_id: row.get(3),
                actor: row.get(4),
                kind: row.get(5),
                data: row.get(6),
                prev_hash: hex(7),
                hash: hex(8),
            })?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sealed export of `n` events, as the database would seal them.
    fn sealed(n: i64) -> Vec<Exported> {
        let mut prev = [0u8; 32];
        (1..=n)
            .map(|id| {
                let mut e = Exported {
                    id,
                    at: DateTime::from_timestamp(1_765_000_000 + id, 0).unwrap(),
                    request_id: Some(7),
                    grant_id: None,
                    actor: "dana@example.com".into(),
                    kind: "decision.approve".into(),
                    data: "{}".into(),
                    prev_hash: Some(hex::encode(prev)),
                    hash: None,
                };
                prev = hash(&prev, &e.sealed());
                e.hash = Some(hex::encode(prev));
                e
            })
            .collect()
    }

    fn check(events: &[Exported], expect: Option<&Head>) -> anyhow::Result<Verified> {
        let mut chain = Chain::default();
        for e in events {
            chain.push(e, expect)?;
        }
        chain.finish(expect)
    }

    #[test]
    fn an_export_verifies_and_a_changed_removed_or_cut_event_does_not() {
        let events = sealed(3);
        let line = serde_json::to_string(&events[1]).unwrap();
        assert_eq!(serde_json::from_str::<Exported>(&line).unwrap(), events[1]);
        let head = check(&events, None).unwrap().head.unwrap();
        assert_eq!(head.id, 3);
        assert_eq!(check(&events, Some(&head)).unwrap().events, 3);

        let mut changed = events.clone();
        changed[1].actor = "mallory@example.com".into();
        let e = check(&changed, None).unwrap_err().to_string();
        assert!(e.starts_with("event 2: its content"), "{e}");

        let removed = [events[0].clone(), events[2].clone()];
        let e = check(&removed, None).unwrap_err().to_string();
        assert!(e.starts_with("event 3: its link"), "{e}");

        let e = check(&events[..2], Some(&head)).unwrap_err().to_string();
        assert!(e.contains("is not in the history"), "{e}");
    }
}
