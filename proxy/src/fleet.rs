//! The proxy as a fleet: cancel requests reach the replica that owns the session.
//!
//! A CancelRequest arrives on a new connection, which the load balancer may give to any
//! replica. Every cancel key carries its owner's `fleet.index` (see [`crate::cancel::keys`]); a
//! replica that does not hold a key forwards it to its peers over the peer channel; peers
//! of another index drop it unread, and only the replica holding the key acts on it. No
//! map is shared and nothing is written per login: a key is routable by itself.
//!
//! The peer channel is one fixed-size message per TCP connection, authenticated with
//! HMAC-SHA-256 under a key every replica reads from the secret store (`fleet.secret`):
//! `"dbc1" | pid | secret | unix time in ms | HMAC`, answered with one byte. Messages older
//! or newer than [`MAX_SKEW`] are dropped, and a message is acted on once (replays within
//! the window are dropped). The cancel key itself is no secret from the network (PostgreSQL
//! sends CancelRequest in clear text), so the channel needs authenticity, not secrecy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::cancel::local::Canceller;
use crate::metrics::CancelRoute;

/// The `[fleet]` section of the proxy's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetSettings {
    /// This replica's name, in the first record of each of its audit files and in its logs.
    /// Empty: the host name.
    pub replica: String,
    /// This replica's number in the fleet, 0 to 127, carried in the cancel keys it hands
    /// out. Unset: derived from the replica's name (replicas that share an index still
    /// cancel correctly; their peers just look a key up in more than one place).
    pub index: Option<u8>,
    /// Where forwarded cancel requests from peers arrive (`host:port`); empty: none (a
    /// single proxy).
    pub listen: String,
    /// The other replicas' `fleet.listen` addresses. A DNS name is resolved at each use and
    /// every address it has is tried.
    pub peers: Vec<String>,
    /// Secret holding the key that authenticates the peer channel (read when `listen` or
    /// `peers` is set).
    pub secret: String,
}

impl Default for FleetSettings {
    fn default() -> Self {
        FleetSettings {
            replica: String::new(),
            index: None,
            listen: String::new(),
            peers: Vec::new(),
            secret: "dbgw/proxy-fleet".into(),
        }
    }
}

impl FleetSettings {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.index.unwrap_or(0) <= crate::cancel::keys::MAX_INDEX,
            "fleet.index must be 0 to {}",
            crate::cancel::keys::MAX_INDEX
        );
        Ok(())
    }

    /// This replica's name: `replica`, or the host name.
    pub fn replica_name(&self) -> String {
        if !self.replica.is_empty() {
            return self.replica.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "proxy".into())
    }

    /// `index`, or one derived from the replica's name.
    pub fn effective_index(&self) -> u8 {
        use sha2::Digest;
        self.index.unwrap_or_else(|| {
            sha2::Sha256::digest(self.replica_name().as_bytes())[0]
                % (crate::cancel::keys::MAX_INDEX + 1)
        })
    }

    fn enabled(&self) -> bool {
        !self.listen.is_empty() || !self.peers.is_empty()
    }
}

/// Peer messages this far from the receiver's clock are dropped.
pub const MAX_SKEW: Duration = Duration::from_secs(10);
/// How long a peer may take to connect and answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);
const MAGIC: &[u8; 4] = b"dbc1";
const SIGNED_LEN: usize = 4 + 4 + 4 + 8;
/// The size of a peer message.
pub const MESSAGE_LEN: usize = SIGNED_LEN + 32;

/// A peer's one-byte answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The session is this peer's: the cancel went to the database.
    Sent = b'S' as isize,
    /// Not this peer's key, or no live session has it.
    NotMine = b'N' as isize,
    /// The message failed authentication, was stale or replayed.
    Refused = b'R' as isize,
}

/// Why a peer message was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("not a peer message")]
    Malformed,
    #[error("bad signature")]
    Signature,
    #[error("stale: {0} ms from this replica's clock")]
    Stale(i64),
    #[error("replayed")]
    Replayed,
}

/// The peer channel's key, and what it has seen.
pub struct Fleet {
    settings: FleetSettings,
    key: Option<SecretString>,
    /// Signatures of messages acted on, until they are too old to be accepted anyway.
    seen: Mutex<HashMap<[u8; 32], Instant>>,
}

impl Fleet {
    /// Reads the peer channel's key when the fleet is configured; a missing key stops the
    /// start (an unauthenticated peer channel is never opened).
    pub async fn new(
        settings: FleetSettings,
        secrets: &secret_store::SecretStore,
    ) -> anyhow::Result<Fleet> {
        let key = if settings.enabled() {
            let key = secrets
                .get(&settings.secret)
                .await
                .with_context(|| format!("fleet.secret {}", settings.secret))?;
            anyhow::ensure!(
                key.expose_secret().len() >= 16,
                "fleet.secret {} is shorter than 16 bytes",
                settings.secret
            );
            Some(key)
        } else {
            None
        };
        Ok(Fleet {
            settings,
            key,
            seen: Mutex::new(HashMap::new()),
        })
    }

    pub fn settings(&self) -> &FleetSettings {
        &self.settings
    }

    pub fn has_peers(&self) -> bool {
        self.key.is_some() && !self.settings.peers.is_empty()
    }

    /// Sends a cancel for another replica's key to every peer; true when one of them
    /// owned the session and sent it on.
    pub async fn forward(&self, pid: i32, secret: [u8; 4]) -> bool {
        let Some(key) = &self.key else { return false };
        let message = encode(key, pid, secret, now_ms());
        let mut tasks = tokio::task::JoinSet::new();
        for peer in &self.settings.peers {
            let addrs = match tokio::net::lookup_host(peer.as_str()).await {
                Ok(a) => a.collect::<Vec<_>>(),
                Err(e) => {
                    tracing::warn!(peer = %peer, error = %e, "cannot resolve a fleet peer");
                    continue;
                }
            };
            for addr in addrs {
                tasks.spawn(async move {
                    let ask = async {
                        let mut s = TcpStream::connect(addr).await?;
                        s.write_all(&message).await?;
                        let mut answer = [0u8; 1];
                        s.read_exact(&mut answer).await?;
                        Ok::<_, std::io::Error>(answer[0])
                    };
                    (addr, crate::clock::timeout(PEER_TIMEOUT, ask).await)
                });
            }
        }
        let mut sent = false;
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok((_, Ok(Ok(b)))) if b == Answer::Sent as u8 => sent = true,
                Ok((_, Ok(Ok(b)))) if b == Answer::NotMine as u8 => {}
                Ok((addr, Ok(Ok(_)))) => {
                    tracing::warn!(%addr, "a fleet peer refused a forwarded cancel (check fleet.secret and clocks)")
                }
                Ok((addr, Ok(Err(e)))) => {
                    tracing::warn!(%addr, error = %e, "forwarding a cancel to a peer failed")
                }
                Ok((addr, Err(_))) => tracing::warn!(%addr, "a fleet peer did not answer"),
                Err(e) => tracing::warn!(error = %e, "forwarding task failed"),
            }
        }
        sent
    }

    /// Checks a peer message: authentic, fresh and not seen before.
    pub fn accept(&self, message: &[u8]) -> Result<(i32, [u8; 4]), PeerError> {
        let key = self.key.as_ref().ok_or(PeerError::Signature)?;
        let (pid, secret, mac) = decode(key, message, now_ms())?;
        let mut seen = startup::sync::lock(&self.seen);
        seen.retain(|_, at| at.elapsed() < 2 * MAX_SKEW);
        if seen.insert(mac, Instant::now()).is_some() {
            return Err(PeerError::Replayed);
        }
        Ok((pid, secret))
    }

    /// Serves forwarded cancel requests until `stop`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        canceller: Arc<Canceller>,
        stop: CancellationToken,
    ) {
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a fleet peer failed");
                        crate::clock::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = stop.cancelled() => return,
            };
            let (fleet, canceller) = (self.clone(), canceller.clone());
            tokio::spawn(async move {
                let answered =
                    crate::clock::timeout(PEER_TIMEOUT, fleet.answer(stream, &canceller)).await;
                if !matches!(answered, Ok(Ok(()))) {
                    tracing::info!(%peer, "a fleet peer connection ended without a message");
                }
            });
        }
    }

    async fn answer(&self, mut stream: TcpStream, canceller: &Canceller) -> std::io::Result<()> {
        let mut message = [0u8; MESSAGE_LEN];
        stream.read_exact(&mut message).await?;
        let answer = match self.accept(&message) {
            Err(e) => {
                canceller.metrics().cancel(CancelRoute::PeerRefused);
                tracing::warn!(error = %e, "refused a forwarded cancel request");
                Answer::Refused
            }
            Ok((pid, _)) if crate::cancel::keys::owner(pid) != self.settings.effective_index() => {
                Answer::NotMine
            }
            Ok((pid, secret)) => {
                if canceller.cancel(pid, &secret, CancelRoute::FromPeer).await {
                    Answer::Sent
                } else {
                    Answer::NotMine
                }
            }
        };
        stream.write_all(&[answer as u8]).await
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn mac(key: &SecretString, signed: &[u8]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key.expose_secret().as_bytes()).expect("any key");
    m.update(signed);
    m.finalize().into_bytes().into()
}

/// The peer message for a cancel of key (`pid`, `secret`) sent at `at_ms`.
pub fn encode(key: &SecretString, pid: i32, secret: [u8; 4], at_ms: i64) -> [u8; MESSAGE_LEN] {
    let mut out = [0u8; MESSAGE_LEN];
    out[..4].copy_from_slice(MAGIC);
    out[4..8].copy_from_slice(&pid.to_be_bytes());
    out[8..12].copy_from_slice(&secret);
    out[12..20].copy_from_slice(&at_ms.to_be_bytes());
    let m = mac(key, &out[..SIGNED_LEN]);
    out[SIGNED_LEN..].copy_from_slice(&m);
    out
}

/// The cancel key of a peer message, and its signature, checked at `now_ms`.
pub fn decode(
    key: &SecretString,
    message: &[u8],
    now_ms: i64,
) -> Result<(i32, [u8; 4], [u8; 32]), PeerError> {
    if message.len() != MESSAGE_LEN || &message[..4] != MAGIC {
        return Err(PeerError::Malformed);
    }
    let want = mac(key, &message[..SIGNED_LEN]);
    if !bool::from(want.as_slice().ct_eq(&message[SIGNED_LEN..])) {
        return Err(PeerError::Signature);
    }
    let four = |at: usize| -> [u8; 4] { message[at..at + 4].try_into().expect("fixed size") };
    let at = i64::from_be_bytes(message[12..20].try_into().expect("fixed size"));
    let skew = now_ms.saturating_sub(at);
    if skew.unsigned_abs() > MAX_SKEW.as_millis() as u64 {
        return Err(PeerError::Stale(skew));
    }
    Ok((i32::from_be_bytes(four(4)), four(8), want))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    #[test]
    fn messages_are_authenticated_and_fresh() {
        let k = key("0123456789abcdef-fleet");
        let now = 1_800_000_000_000;
        let m = encode(&k, 0x0300_1234, [1, 2, 3, 4], now);
        let (pid, secret, _) = decode(&k, &m, now + 500).unwrap();
        assert_eq!((pid, secret), (0x0300_1234, [1, 2, 3, 4]));
        assert_eq!(
            decode(&key("another key of 16+ bytes"), &m, now).unwrap_err(),
            PeerError::Signature
        );
        // Any changed bit breaks the signature.
        for i in 4..MESSAGE_LEN {
            let mut bad = m;
            bad[i] ^= 0x01;
            assert!(decode(&k, &bad, now).is_err(), "byte {i}");
        }
        assert!(matches!(
            decode(&k, &m, now + 11_000),
            Err(PeerError::Stale(_))
        ));
        assert!(matches!(
            decode(&k, &m, now - 11_000),
            Err(PeerError::Stale(_))
        ));
        assert_eq!(decode(&k, &m[..40], now).unwrap_err(), PeerError::Malformed);
    }

    #[test]
    fn a_message_is_accepted_once() {
        let settings = FleetSettings {
            peers: vec!["127.0.0.1:1".into()],
            ..Default::default()
        };
        let fleet = Fleet {
            settings,
            key: Some(key("0123456789abcdef-fleet")),
            seen: Mutex::new(HashMap::new()),
        };
        let m = encode(fleet.key.as_ref().unwrap(), 7, [9; 4], now_ms());
        assert_eq!(fleet.accept(&m), Ok((7, [9; 4])));
        assert_eq!(fleet.accept(&m), Err(PeerError::Replayed));
    }
}
