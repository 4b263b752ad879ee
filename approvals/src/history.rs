//! The event history's hash chain (`db/control/0005_approvals_history_sealed.sql`): the
//! database sets each event's id and time and seals it with
//! `hash = SHA-256(prev_hash || encoding of the row)`, so that a row changed, removed or
//! slipped in afterwards breaks the chain. [`verify`] recomputes the chain from the rows,
//! here, without trusting the database's own function; [`head`] is the last event's id
//! and hash, to keep somewhere the database's users cannot write (a ticket, an S3 Object
//! Lock bucket) and to pass back to [`verify`] later: a history rewritten from the start,
//! hashes included, then no longer holds that head.
//!
//! `approvals events head`, `approvals events verify [--head ID:HASH]` and `approvals events
//! export` run these; the chain's encoding and its check live in `grants::history`, shared
//! with whoever verifies an export (`proxy audit evidence`).

use anyhow::Context;
use tokio_postgres::GenericClient;

pub use grants::history::{export, hash, Exported, Head, Sealed, Verified};

/// A connection to the control plane as the app's login (reading the history is all the
/// `events` commands do).
pub async fn connect(settings: &crate::Settings) -> anyhow::Result<tokio_postgres::Client> {
    tls_config::install_provider();
    let store = secret_store::SecretStore::from_settings(&settings.secrets);
    crate::db::connect(&settings.control, store, "dbgw-approvals-events")
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
    let mut chain = grants::history::Chain::default();
    grants::history::for_each(db, |e| chain.push(&e, expect)).await?;
    chain.finish(expect)
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
