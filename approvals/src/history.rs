//! The event history's hash chain (`db/control/0005_approvals_history_sealed.sql`): the
//! database sets each event's id and time and seals it with
//! `hash = SHA-256(prev_hash || encoding of the row)`, so that a row changed, removed or
//! slipped in afterwards breaks the chain. [`verify`] recomputes the chain from the rows,
//! here, without trusting the database's own function; [`head`] is the last event's id
//! and hash, to keep somewhere the database's users cannot write (a ticket, an S3 Object
//! Lock bucket) and to pass back to [`verify`] later: a history rewritten from the start,
//! hashes included, then no longer holds that head.
//!
//! `approvals events head` and `approvals events verify [--head ID:HASH]` run these.

use std::fmt;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
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

/// A connection to the control plane as the app's login (reading the history is all the
/// `events` commands do).
pub async fn connect(settings: &crate::Settings) -> anyhow::Result<tokio_postgres::Client> {
    tls_config::install_provider();
    let store = secret_store::SecretStore::from_settings(&settings.secrets);
    crate::db::connect(&settings.control, &store, "dbgw-approvals-events")
        .await
        .context("connecting to the control plane")
}

/// The chain's head as the rows say (the last event's id and stored hash), not verified.
pub async fn head(db: &impl GenericClient) -> anyhow::Result<Option<Head>> {
    let row = db
        .query_opt("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1", &[])
        .await
        .context("reading the last event")?;
    let Some(row) = row else { return Ok(None) };
    let hash: Option<Vec<u8>> = row.get(1);
    let hash = hash
        .and_then(|h| <[u8; 32]>::try_from(h).ok())
        .context("the last event is not sealed (run the control-plane migrations)")?;
    Ok(Some(Head {
        id: row.get(0),
        hash,
    }))
}

/// Recomputes the whole chain, oldest first. Fails at the first event whose link or hash
/// is wrong, naming it; with `expect`, also when that exported head is not in the chain.
pub async fn verify(db: &impl GenericClient, expect: Option<&Head>) -> anyhow::Result<Verified> {
    const PAGE: i64 = 5000;
    let mut prev = [0u8; 32];
    let mut last_id = i64::MIN;
    let mut events = 0u64;
    let mut seen_expected = false;
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
            break;
        }
        for row in &rows {
            let id: i64 = row.get(0);
            let data: String = row.get(6);
            let event = Sealed {
                id,
                at: row.get(1),
                request_id: row.get(2),
                grant_id: row.get(3),
                actor: row.get(4),
                kind: row.get(5),
                data: &data,
            };
            let stored_prev: Option<Vec<u8>> = row.get(7);
            let stored: Option<Vec<u8>> = row.get(8);
            if stored_prev.as_deref() != Some(&prev[..]) {
                bail!(
                    "event {id}: its link to the event before it is broken (an event before \
                     it was removed, changed or slipped in, or it was never sealed)"
                );
            }
            let expected = hash(&prev, &event);
            if stored.as_deref() != Some(&expected[..]) {
                bail!("event {id}: its content does not match its hash (it was changed)");
            }
            if let Some(head) = expect {
                if head.id == id {
                    if head.hash != expected {
                        bail!(
                            "event {id} is not the exported head {head}: the history was \
                             rewritten"
                        );
                    }
                    seen_expected = true;
                }
            }
            prev = expected;
            last_id = id;
            events += 1;
        }
    }
    if let Some(head) = expect {
        if !seen_expected {
            bail!("the exported head {head} is not in the history: it was cut or rewritten");
        }
    }
    Ok(Verified {
        events,
        head: (events > 0).then_some(Head {
            id: last_id,
            hash: prev,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_reads_back() {
        let head = Head {
            id: 42,
            hash: [7; 32],
        };
        assert_eq!(head.to_string().parse::<Head>().unwrap(), head);
        assert!("42".parse::<Head>().is_err());
        assert!("42:abcd".parse::<Head>().is_err());
    }
}
