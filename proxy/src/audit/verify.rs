//! `proxy audit verify`: walks the chain and reports the first record that was altered,
//! removed, inserted or reordered; with an anchored head (a sequence number and hash kept
//! elsewhere), also a chain whose tail was cut. A last file that ends by naming a next file
//! that is missing is reported too.

use std::io::BufRead;
use std::path::PathBuf;

use super::head::Head;
use super::line;
use super::source::{self, AuditFile};

/// What a successful verification saw.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq, serde::Serialize)]
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
    pub files: Vec<AuditFile>,
}

/// Expands directories and S3 prefixes into their audit files and groups the files into chains by the
/// replica their first record names (a file that names none continues the chain of the
/// file before it). Chains keep the order in which they were first seen; files keep the
/// order given.
pub fn chains(paths: &[PathBuf]) -> anyhow::Result<Vec<Chain>> {
    let mut out: Vec<Chain> = Vec::new();
    let mut current = String::new();
    for file in source::collect(paths)? {
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
fn replica_of(file: &AuditFile) -> anyhow::Result<Option<String>> {
    // The writer's own records come first; a record may be long (a statement's text).
    let reader = file.open_start(1 << 20)?;
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

/// Verifies `files` as one chain, in the order given, against `anchor` if there is one.
pub fn verify(
    files: &[AuditFile],
    anchor: Option<&Head>,
) -> anyhow::Result<Result<Report, Broken>> {
    let mut walk = Walk::new(files, anchor);
    while walk.next_record()?.is_some() {
        if walk.broken.is_some() {
            break;
        }
    }
    walk.finish()
}

/// How far the chain vouches for a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Trust {
    /// Intact and chained to every record before it (and to the anchored head, if any, when
    /// it lies before it).
    Chained,
    /// After the anchored head: chained, but nothing kept elsewhere vouches for it.
    PastHead,
    /// At or after the first problem in the chain: it proves nothing about this record.
    Broken,
}

/// One record read by [`Walk::next_record`].
pub struct Step<'a> {
    pub file: &'a AuditFile,
    /// 1-based line number in `file`.
    pub line: u64,
    /// The line, without its newline.
    pub text: &'a [u8],
    pub chain: line::Line,
    pub trust: Trust,
}

/// Reads one chain's files record by record, checking the chain as it goes (verify's
/// logic, for `verify` and for readers that must say how far the chain vouches for what
/// they show). After the first problem it goes on returning the records it can read,
/// marked [`Trust::Broken`].
pub struct Walk<'f> {
    files: &'f [AuditFile],
    anchor: Option<&'f Head>,
    next_file: usize,
    reader: Option<Box<dyn BufRead + Send>>,
    line_no: u64,
    text: Vec<u8>,
    /// The seq and `prev` the next record must have.
    expect: Option<(u64, String)>,
    report: Report,
    last: Option<(String, u64, line::Line)>,
    /// The first problem, once found.
    pub broken: Option<Broken>,
}

impl<'f> Walk<'f> {
    pub fn new(files: &'f [AuditFile], anchor: Option<&'f Head>) -> Walk<'f> {
        Walk {
            files,
            anchor,
            next_file: 0,
            reader: None,
            line_no: 0,
            text: Vec::new(),
            expect: None,
            report: Report {
                records: 0,
                first_seq: 0,
                last_seq: 0,
                head: String::new(),
                from_genesis: false,
                anchored: false,
            },
            last: None,
            broken: None,
        }
    }

    /// The next record, or `None` after the last file. Lines that are not records are
    /// skipped once the chain is broken (the first one is the break).
    pub fn next_record(&mut self) -> anyhow::Result<Option<Step<'_>>> {
        loop {
            if self.reader.is_none() {
                let Some(path) = self.files.get(self.next_file) else {
                    return Ok(None);
                };
                self.reader = Some(path.open()?);
                self.next_file += 1;
                self.line_no = 0;
            }
            self.text.clear();
            let reader = self.reader.as_mut().expect("opened above");
            if reader.read_until(b'\n', &mut self.text)? == 0 {
                self.reader = None;
                continue;
            }
            self.line_no += 1;
            let path = &self.files[self.next_file - 1];
            if self.text.last() != Some(&b'\n') {
                self.break_at(path, "last line is incomplete (no newline)".into());
                continue;
            }
            let text = &self.text[..self.text.len() - 1];
            let l = match line::parse(text) {
                Ok(l) => l,
                Err(problem) => {
                    self.break_at(path, problem);
                    continue;
                }
            };
            if self.broken.is_none() {
                if let Some(problem) = self.check(&l) {
                    self.break_at(path, problem);
                } else {
                    self.report.records += 1;
                    self.report.last_seq = l.seq;
                    self.report.head = l.hash.clone();
                    self.expect = Some((l.seq + 1, l.hash.clone()));
                    self.last = Some((path.to_string(), self.line_no, l.clone()));
                }
            }
            let trust = if self.broken.is_some() {
                Trust::Broken
            } else if self.anchor.is_some_and(|a| l.seq > a.seq) {
                Trust::PastHead
            } else {
                Trust::Chained
            };
            return Ok(Some(Step {
                file: path,
                line: self.line_no,
                text: &self.text[..self.text.len() - 1],
                chain: l,
                trust,
            }));
        }
    }

    /// Records the first problem only.
    fn break_at(&mut self, path: &AuditFile, problem: String) {
        if self.broken.is_none() {
            self.broken = Some(Broken {
                file: path.to_string(),
                line: self.line_no,
                problem,
                truncated: false,
            });
        }
    }

    /// What is wrong with `l` as the next record of the chain, if anything.
    fn check(&mut self, l: &line::Line) -> Option<String> {
        let seq = l.seq;
        if !l.intact {
            return Some(format!(
                "record seq {seq} was altered: its content does not match its hash"
            ));
        }
        match &self.expect {
            None => {
                self.report.first_seq = seq;
                self.report.from_genesis = seq == 1 && l.prev == "0".repeat(64);
            }
            Some((want_seq, want_prev)) => {
                if seq > *want_seq {
                    return Some(format!(
                        "records removed or reordered: expected seq {want_seq}, found seq {seq}"
                    ));
                }
                if seq < *want_seq {
                    return Some(format!(
                        "record seq {seq} is out of place (expected seq {want_seq}): \
                         inserted or reordered"
                    ));
                }
                if &l.prev != want_prev {
                    return Some(format!(
                        "record seq {seq} does not chain to the record before it: \
                         a record was replaced, inserted or removed"
                    ));
                }
            }
        }
        if let Some(a) = self.anchor.filter(|a| a.seq == seq) {
            if a.hash != l.hash {
                return Some(format!(
                    "record seq {seq} is not the anchored head: it was replaced"
                ));
            }
            self.report.anchored = true;
        }
        None
    }

    /// The verification's result once every record was read: the first problem, or the
    /// report after the checks of the chain's end (a rotation to a missing file, a chain
    /// that stops before its anchored head).
    pub fn finish(self) -> anyhow::Result<Result<Report, Broken>> {
        if let Some(broken) = self.broken {
            return Ok(Err(broken));
        }
        let (report, files, anchor) = (self.report, self.files, self.anchor);
        anyhow::ensure!(report.records > 0, "the audit files hold no records");
        let (file, line_no, l) = self.last.expect("records were read");
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
            let given = files.iter().any(|f| f.name() == next);
            if !given && !last_file.sibling_exists(next)? {
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
}

/// Matches published heads to `chains`: each head applies to the chain that holds the file
/// it names. A head that names no file given is an error (it would silently anchor nothing).
pub fn anchors(chains: &[Chain], heads: &[Head]) -> anyhow::Result<Vec<Option<Head>>> {
    let mut out = vec![None; chains.len()];
    for head in heads {
        let chain = chains
            .iter()
            .position(|c| c.files.iter().any(|f| f.name() == head.file));
        let Some(i) = chain else {
            anyhow::bail!(
                "the head at seq {} names {}, which is in none of the audit files given",
                head.seq,
                head.file
            );
        };
        anyhow::ensure!(
            out[i].is_none(),
            "two heads given for the chain of {}",
            head.file
        );
        out[i] = Some(head.clone());
    }
    Ok(out)
}
