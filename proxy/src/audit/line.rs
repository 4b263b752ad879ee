//! The one owner of the audit line format: every line is one JSON object that starts with
//! `{"seq":N,"prev":"<hex>",` and ends with `,"hash":"<hex>"}`, where
//! `hash = SHA-256(the line up to the comma before "hash")` and `prev` is the hash of the
//! line before. The writer encodes lines with [`append`]; the verifier, the writer's restart
//! and the checkpoint check read them with [`parse`].

use std::borrow::Cow;

use sha2::{Digest, Sha256};

/// A zero hash: the `prev` of the very first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// `n` in decimal, as `{n}` formats it, written into `buf` without `core::fmt` (which costs
/// a few hundred instructions per number on this path: several numbers per statement). Two
/// digits per division, from a table.
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut i = buf.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + n as u8;
    }
    &buf[i..]
}

/// A hash in lowercase hex, as `hex::encode` writes it. By hand, because every record
/// encodes one: this form compiles to vector code, about a third of `hex`'s instructions.
pub fn hash_hex(hash: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    for (pair, &b) in out.chunks_exact_mut(2).zip(hash) {
        let digit = |n: u8| n + if n > 9 { b'a' - 10 } else { b'0' };
        pair[0] = digit(b >> 4);
        pair[1] = digit(b & 0x0f);
    }
    out
}

/// Appends one line (with its newline) for `body` and returns its hash.
pub fn append(out: &mut Vec<u8>, seq: u64, prev: &[u8; 32], body: &str) -> [u8; 32] {
    append_after(out, seq, &hash_hex(prev), body).0
}

/// [`append`] given the previous hash already in hex; returns the line's hash and its hex
/// (the next line's `prev`), so a chain encodes each hash once.
pub fn append_after(
    out: &mut Vec<u8>,
    seq: u64,
    prev_hex: &[u8; 64],
    body: &str,
) -> ([u8; 32], [u8; 64]) {
    let start = out.len();
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(decimal(seq, &mut [0; 20]));
    out.extend_from_slice(b",\"prev\":\"");
    out.extend_from_slice(prev_hex);
    out.extend_from_slice(b"\",");
    out.extend_from_slice(body.as_bytes());
    let hash: [u8; 32] = Sha256::digest(&out[start..]).into();
    let hex = hash_hex(&hash);
    out.extend_from_slice(b",\"hash\":\"");
    out.extend_from_slice(&hex);
    out.extend_from_slice(b"\"}\n");
    (hash, hex)
}

/// The chain fields of one line (without its newline), and what a reader of the chain's
/// ends needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub seq: u64,
    pub prev: String,
    pub hash: String,
    /// The record's `type`.
    pub kind: String,
    /// A `rotate` record's next file.
    pub next_file: Option<String>,
    /// The replica a `log_opened` or `file_opened` record names.
    pub replica: Option<String>,
    pub ts: Option<String>,
    /// The hash recomputed from the line matches `hash`.
    pub intact: bool,
}

const HASH_FIELD: &[u8] = b",\"hash\":\"";

/// The members `parse` reads; the rest of the line is checked as JSON and skipped (no tree
/// of values is built: `verify` reads every line of the log through this).
#[derive(serde::Deserialize)]
struct Fields<'a> {
    seq: u64,
    #[serde(borrow)]
    prev: Cow<'a, str>,
    #[serde(borrow)]
    hash: Cow<'a, str>,
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    next_file: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    replica: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    ts: Option<Cow<'a, str>>,
}

/// Reads one line; an error says why it is not an audit record.
pub fn parse(text: &[u8]) -> Result<Line, String> {
    let cut = text
        .windows(HASH_FIELD.len())
        .rposition(|w| w == HASH_FIELD)
        .filter(|_| text.starts_with(b"{\"seq\":"))
        .ok_or("not an audit record (no seq/hash framing)")?;
    let f: Fields =
        serde_json::from_slice(text).map_err(|e| format!("not an audit record: {e}"))?;
    let owned = |c: Option<Cow<str>>| c.map(Cow::into_owned);
    Ok(Line {
        seq: f.seq,
        intact: hash_hex(&Sha256::digest(&text[..cut]).into()) == f.hash.as_bytes(),
        prev: f.prev.into_owned(),
        hash: f.hash.into_owned(),
        kind: owned(f.kind).unwrap_or_default(),
        next_file: owned(f.next_file),
        replica: owned(f.replica),
        ts: owned(f.ts),
    })
}

/// `hex` as a hash.
pub fn decode_hash(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex, &mut out).ok().map(|()| out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_is_what_format_writes() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            12_345,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ]
        .into_iter()
        .chain(0..=1_000)
        {
            assert_eq!(decimal(n, &mut [0; 20]), n.to_string().as_bytes());
        }
    }

    #[test]
    fn hash_hex_is_what_hex_writes() {
        // Every byte value, in eight hashes.
        for chunk in 0..8u8 {
            let hash: [u8; 32] = std::array::from_fn(|i| chunk * 32 + i as u8);
            assert_eq!(hash_hex(&hash).as_slice(), hex::encode(hash).as_bytes());
        }
    }

    #[test]
    fn lines_round_trip_and_detect_changes() {
        let mut out = Vec::new();
        let hash = append(
            &mut out,
            7,
            &GENESIS,
            "\"type\":\"rotate\",\"next_file\":\"b.jsonl\"",
        );
        let line = parse(&out[..out.len() - 1]).unwrap();
        assert_eq!(
            (line.seq, line.kind.as_str(), line.intact),
            (7, "rotate", true)
        );
        assert_eq!(line.next_file.as_deref(), Some("b.jsonl"));
        assert_eq!(decode_hash(&line.hash), Some(hash));
        let changed = String::from_utf8(out)
            .unwrap()
            .replace("b.jsonl", "c.jsonl");
        assert!(!parse(changed.trim_end().as_bytes()).unwrap().intact);
        assert!(parse(b"{\"x\":1}").is_err());
    }
}
