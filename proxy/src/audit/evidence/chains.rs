//! Every replica's chain verified (verify's logic), with its head and the anchor it was
//! checked against.

use std::path::PathBuf;

use serde::Serialize;

use super::super::head::Head;
use super::super::verify::{self, Broken, Report};

#[derive(Debug, Serialize)]
pub struct Chains {
    pub chains: Vec<Chain>,
}

#[derive(Debug, Serialize)]
pub struct Chain {
    /// The replica its files name ("" in logs from before fleets).
    pub replica: String,
    /// Its files, in chain order (where they were read: a path or `s3://` address).
    pub files: Vec<String>,
    /// The published head it was checked against, if one was given.
    pub anchor: Option<Head>,
    /// `ok`, `tampered` (a record altered, removed, inserted or reordered) or `truncated`
    /// (records missing at the end).
    pub status: &'static str,
    /// What verified (records, seq range, head).
    pub verified: Option<Report>,
    /// The first problem.
    pub problem: Option<Broken>,
}

impl Chains {
    pub fn all_ok(&self) -> bool {
        self.chains.iter().all(|c| c.status == "ok")
    }
}

pub fn verify(paths: &[PathBuf], heads: &[Head]) -> anyhow::Result<Chains> {
    let chains = verify::chains(paths)?;
    let anchors = verify::anchors(&chains, heads)?;
    let mut out = Vec::new();
    for (chain, anchor) in chains.iter().zip(anchors) {
        let result = verify::verify(&chain.files, anchor.as_ref())?;
        let (status, verified, problem) = match result {
            Ok(report) => ("ok", Some(report), None),
            Err(b) if b.truncated => ("truncated", None, Some(b)),
            Err(b) => ("tampered", None, Some(b)),
        };
        out.push(Chain {
            replica: chain.replica.clone(),
            files: chain.files.iter().map(ToString::to_string).collect(),
            anchor,
            status,
            verified,
            problem,
        });
    }
    Ok(Chains { chains: out })
}
