//! `proxy audit merge`: the records of several replicas' chains as one stream, ordered by
//! time, for reading. Each output line is the record as written with the replica's name
//! put first (`{"replica":"proxy-a","seq":...}`), so a reader can always go back to the
//! chain it came from. Streams: memory holds one line per chain.
//!
//! Within a chain, records keep their chain order (the hash chain is the authority there;
//! timestamps taken on different threads can differ by microseconds).

use std::collections::BinaryHeap;
use std::io::{BufRead, Write};

use super::source::AuditFile;
use super::verify::Chain;

/// A chain's lines, across its files.
struct Reader {
    replica: String,
    files: std::vec::IntoIter<AuditFile>,
    current: Option<std::io::Lines<Box<dyn BufRead + Send>>>,
}

impl Reader {
    fn next_line(&mut self) -> anyhow::Result<Option<String>> {
        loop {
            if let Some(lines) = &mut self.current {
                match lines.next() {
                    Some(line) => return Ok(Some(line?)),
                    None => self.current = None,
                }
            }
            let Some(path) = self.files.next() else {
                return Ok(None);
            };
            self.current = Some(path.open()?.lines());
        }
    }
}

/// The next line of one chain, ordered for the heap: earliest time first, then the chain
/// seen first.
#[derive(PartialEq, Eq)]
struct Next {
    ts: String,
    chain: usize,
    line: String,
}

impl Ord for Next {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&other.ts, other.chain).cmp(&(&self.ts, self.chain))
    }
}

impl PartialOrd for Next {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The record's `ts`: RFC 3339 in UTC with microseconds, so text order is time order.
fn ts(line: &str) -> String {
    line.split_once("\"ts\":\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(ts, _)| ts.to_string())
        .unwrap_or_default()
}

/// Writes every record of `chains` to `out` in time order; returns how many.
pub fn merge(chains: Vec<Chain>, out: &mut impl Write) -> anyhow::Result<u64> {
    let mut readers: Vec<Reader> = chains
        .into_iter()
        .map(|c| Reader {
            replica: serde_json::to_string(&c.replica).expect("string serializes"),
            files: c.files.into_iter(),
            current: None,
        })
        .collect();
    let mut heap = BinaryHeap::new();
    for (chain, r) in readers.iter_mut().enumerate() {
        if let Some(line) = r.next_line()? {
            heap.push(Next {
                ts: ts(&line),
                chain,
                line,
            });
        }
    }
    let mut n = 0;
    while let Some(Next { chain, line, .. }) = heap.pop() {
        let body = line.strip_prefix('{').ok_or_else(|| {
            anyhow::anyhow!("not an audit record in {}'s chain", readers[chain].replica)
        })?;
        writeln!(out, "{{\"replica\":{},{body}", readers[chain].replica)?;
        n += 1;
        if let Some(line) = readers[chain].next_line()? {
            heap.push(Next {
                ts: ts(&line),
                chain,
                line,
            });
        }
    }
    out.flush()?;
    Ok(n)
}
