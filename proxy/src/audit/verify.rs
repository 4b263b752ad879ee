//! `proxy audit verify`: walks the chain and reports the first record that was altered,
//! removed, inserted or reordered; with an anchored head (a sequence number and hash kept
//! elsewhere), also a chain whose tail was cut. A last file that ends by naming a next file
//! that is missing is reported too.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use super::head::Head;
use super::line;

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
    /// The anchored head was found in the chain (false: none was given, or it lies before
    /// the first file given).
    pub anchored: bool,
}

/// The first problem found.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}:{line}: {problem}")]
pub struct Broken {
    pub file: String,
    pub line: u64,
    pub problem: String,
    /// Records are missing at the end (the chain itself is intact).
    pub truncated: bool,
}

/// One replica's chain: the files that hold it, in chain order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// The replica named by its files' first records ("" in logs from before fleets).
    pub replica: String,
    pub files: Vec<PathBuf>,
}

/// Expands directories into their audit files and groups the files into chains by the
/// replica their first record names (a file that names none continues the chain of the
/// file before it). Chains keep the order in which they were first seen; files keep the
/// order given.
pub fn chains(paths: &[PathBuf]) -> anyhow::Result<Vec<Chain>> {
    let mut out: Vec<Chain> = Vec::new();
    let mut current = String::new();
    for file in collect(paths)? {
        if let Some(replica) = replica_of(&file)? {
            current = replica;
        }
        match out.iter_mut().find(|c| c.replica == current) {
            Some(chain) => chain.files.push(file),
            None => out.push(Chain {
                replica: current.clone(),
                files: vec![file],
            }),
        }
    }
    Ok(out)
}

/// The replica named by the first `log_opened`/`file_opened` record among a file's first
/// lines. (Unreadable lines are left to `verify` to report.)
fn replica_of(path: &Path) -> anyhow::Result<Option<String>> {
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
    let reader = std::io::BufReader::new(file);
    for text in reader.split(b'\n').take(16) {
        let Ok(l) = line::parse(&text?) else {
            continue;
        };
        if matches!(l.kind.as_str(), "log_opened" | "file_opened") {
            return Ok(l.replica);
        }
    }
    Ok(None)
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

/// Verifies `files` as one chain, in the order given, against `anchor` if there is one.
pub fn verify(files: &[PathBuf], anchor: Option<&Head>) -> anyhow::Result<Result<Report, Broken>> {
    let mut expect: Option<(u64, String)> = None;
    let mut report = Report {
        records: 0,
        first_seq: 0,
        last_seq: 0,
        head: String::new(),
        from_genesis: false,
        anchored: false,
    };
    let mut last: Option<(String, u64, line::Line)> = None;
    for path in files {
        let file = std::fs::File::open(path)
            .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
        let mut reader = std::io::BufReader::new(file);
        let mut line_no = 0u64;
        let mut text = Vec::new();
        loop {
            text.clear();
            if reader.read_until(b'\n', &mut text)? == 0 {
                break;
            }
            line_no += 1;
            let broken = |problem: String| Broken {
                file: display(path),
                line: line_no,
                problem,
                truncated: false,
            };
            if text.last() != Some(&b'\n') {
                return Ok(Err(broken("last line is incomplete (no newline)".into())));
            }
            let l = match line::parse(&text[..text.len() - 1]) {
                Ok(l) => l,
                Err(problem) => return Ok(Err(broken(problem))),
            };
            let seq = l.seq;
            if !l.intact {
                return Ok(Err(broken(format!(
                    "record seq {seq} was altered: its content does not match its hash"
                ))));
            }
            match &expect {
                None => {
                    report.first_seq = seq;
                    report.from_genesis = seq == 1 && l.prev == "0".repeat(64);
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
                    if &l.prev != want_prev {
                        return Ok(Err(broken(format!(
                            "record seq {seq} does not chain to the record before it: \
                             a record was replaced, inserted or removed"
                        ))));
                    }
                }
            }
            if let Some(a) = anchor.filter(|a| a.seq == seq) {
                if a.hash != l.hash {
                    return Ok(Err(broken(format!(
                        "record seq {seq} is not the anchored head: it was replaced"
                    ))));
                }
                report.anchored = true;
            }
            report.records += 1;
            report.last_seq = seq;
            expect = Some((seq + 1, l.hash.clone()));
            report.head = l.hash.clone();
            last = Some((display(path), line_no, l));
        }
    }
    anyhow::ensure!(report.records > 0, "the audit files hold no records");
    let (file, line_no, l) = last.expect("records were read");
    let truncated = |problem: String| {
        Ok(Err(Broken {
            file: file.clone(),
            line: line_no,
            problem,
            truncated: true,
        }))
    };
    // A file that ends by naming its successor promises more records: unless that file
    // exists beside it (not given here), records are missing.
    if let Some(next) = l.next_file.as_deref().filter(|_| l.kind == "rotate") {
        let last_file = files.last().expect("files were read");
        let given = files
            .iter()
            .any(|f| f.file_name().is_some_and(|n| n.to_string_lossy() == next));
        let beside = last_file.with_file_name(next).exists();
        if !given && !beside {
            return truncated(format!(
                "the chain ends with a rotation to {next}, which is missing"
            ));
        }
    }
    if let Some(a) = anchor {
        if report.last_seq < a.seq {
            return truncated(format!(
                "the chain ends at seq {}, before the anchored head at seq {}: records were \
                 removed from its end",
                report.last_seq, a.seq
            ));
        }
    }
    Ok(Ok(report))
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
