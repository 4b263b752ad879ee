//! `proxy audit verify`: walks the chain and reports the first record that was altered,
//! removed, inserted or reordered.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// What a successful verification saw.
#[derive(Debug, PartialEq, Eq)]
pub struct Report {
    pub records: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Hash of the last record: publish it elsewhere to anchor the chain.
    pub head: String,
    /// True when the first record is the very first of the chain (its `prev` is zero);
    /// false when the files given start mid-chain.
    pub from_genesis: bool,
}

/// The first problem found.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}:{line}: {problem}")]
pub struct Broken {
    pub file: String,
    pub line: u64,
    pub problem: String,
}

/// Expands directories into their audit files (in chain order); files are taken as given.
pub fn collect(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            out.extend(super::writer::audit_files(p)?);
        } else {
            out.push(p.clone());
        }
    }
    anyhow::ensure!(!out.is_empty(), "no audit files to verify");
    Ok(out)
}

/// Verifies `files` as one chain, in the order given.
pub fn verify(files: &[PathBuf]) -> anyhow::Result<Result<Report, Broken>> {
    let mut expect: Option<(u64, String)> = None;
    let mut report = Report {
        records: 0,
        first_seq: 0,
        last_seq: 0,
        head: String::new(),
        from_genesis: false,
    };
    for path in files {
        let file = std::fs::File::open(path)
            .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
        let mut reader = std::io::BufReader::new(file);
        let mut line_no = 0u64;
        let mut line = Vec::new();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            line_no += 1;
            let broken = |problem: String| Broken {
                file: display(path),
                line: line_no,
                problem,
            };
            if line.last() != Some(&b'\n') {
                return Ok(Err(broken("last line is incomplete (no newline)".into())));
            }
            let text = &line[..line.len() - 1];
            let (seq, prev, hash) = match chain_fields(text) {
                Ok(f) => f,
                Err(problem) => return Ok(Err(broken(problem))),
            };
            // The hash covers the line up to the comma before "hash".
            let cut = find_last(text, b",\"hash\":\"").expect("checked by chain_fields");
            let actual = hex::encode(Sha256::digest(&text[..cut]));
            if actual != hash {
                return Ok(Err(broken(format!(
                    "record seq {seq} was altered: its content does not match its hash"
                ))));
            }
            match &expect {
                None => {
                    report.first_seq = seq;
                    report.from_genesis = seq == 1 && prev == "0".repeat(64);
                }
                Some((want_seq, want_prev)) => {
                    if seq > *want_seq {
                        return Ok(Err(broken(format!(
                            "records removed or reordered: expected seq {want_seq}, found seq {seq}"
                        ))));
                    }
                    if seq < *want_seq {
                        return Ok(Err(broken(format!(
                            "record seq {seq} is out of place (expected seq {want_seq}): \
                             inserted or reordered"
                        ))));
                    }
                    if &prev != want_prev {
                        return Ok(Err(broken(format!(
                            "record seq {seq} does not chain to the record before it: \
                             a record was replaced, inserted or removed"
                        ))));
                    }
                }
            }
            report.records += 1;
            report.last_seq = seq;
            expect = Some((seq + 1, hash.clone()));
            report.head = hash;
        }
    }
    anyhow::ensure!(report.records > 0, "the audit files hold no records");
    Ok(Ok(report))
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// `seq`, `prev` and `hash` of one line, checking the line's shape.
fn chain_fields(text: &[u8]) -> Result<(u64, String, String), String> {
    if !text.starts_with(b"{\"seq\":") || find_last(text, b",\"hash\":\"").is_none() {
        return Err("not an audit record (no seq/hash framing)".into());
    }
    let v: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let seq = v["seq"].as_u64().ok_or("seq missing")?;
    let prev = v["prev"].as_str().ok_or("prev missing")?.to_string();
    let hash = v["hash"].as_str().ok_or("hash missing")?.to_string();
    Ok((seq, prev, hash))
}
