//! Each access used in the period: the grant (who, which request, who approved it), what
//! the approvals history says of its request (who asked, why, each decision), and every
//! session opened under it with its verified transcript (what was run).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Serialize;

use super::super::filter::Filter;
use super::super::head::Head;
use super::super::read::Identity;
use super::super::transcript;
use super::super::verify::Trust;
use super::approvals::{History, Request};

#[derive(Debug, Serialize)]
pub struct Access {
    pub grant_id: i64,
    pub email: String,
    pub request_id: Option<i64>,
    pub approved_by: Vec<String>,
    pub databases: BTreeSet<String>,
    /// The request behind the grant, from the approvals history (when it was given).
    pub request: Option<Request>,
    pub first_session: String,
    pub last_session: String,
    pub sessions: Vec<Session>,
}

#[derive(Debug, Serialize)]
pub struct Session {
    pub session: String,
    pub replica: String,
    pub start: String,
    pub end: String,
    pub statements: u64,
    pub errors: u64,
    pub refused: u64,
    pub ended: Option<String>,
    /// The chain vouches for every record of the session.
    pub verified: bool,
    /// Its transcript in the bundle (`proxy audit session`'s).
    pub transcript_file: String,
    #[serde(skip)]
    pub transcript: String,
}

pub fn collect(
    paths: &[PathBuf],
    heads: &[Head],
    filter: &Filter,
    approvals: Option<&History>,
) -> anyhow::Result<Vec<Access>> {
    let mut by_grant: BTreeMap<i64, Access> = BTreeMap::new();
    super::super::sessions::each(paths, heads, filter, |s| {
        let Some(login) = &s.login else { return Ok(()) };
        let Identity::Person {
            email,
            grant_id,
            request_id,
            approved_by,
            ..
        } = &login.identity
        else {
            return Ok(());
        };
        let access = by_grant.entry(*grant_id).or_insert_with(|| Access {
            grant_id: *grant_id,
            email: email.clone(),
            request_id: *request_id,
            approved_by: approved_by.clone(),
            databases: BTreeSet::new(),
            request: request_id
                .and_then(|r| approvals.and_then(|a| a.requests.get(&r)))
                .cloned(),
            first_session: s.start.clone(),
            last_session: s.end.clone(),
            sessions: Vec::new(),
        });
        access.databases.insert(login.database.clone());
        access.first_session = access.first_session.clone().min(s.start.clone());
        access.last_session = access.last_session.clone().max(s.end.clone());
        access.sessions.push(Session {
            transcript_file: format!("sessions/{}.txt", file_safe(&s.session)),
            session: s.session,
            replica: s.replica,
            start: s.start,
            end: s.end,
            statements: s.statements,
            errors: s.errors,
            refused: s.refused,
            ended: s.ended,
            verified: s.trust == Trust::Chained,
            transcript: String::new(),
        });
        Ok(())
    })?;
    let ids: BTreeSet<String> = by_grant
        .values()
        .flat_map(|a| a.sessions.iter().map(|s| s.session.clone()))
        .collect();
    let mut found = transcript::find_many(paths, heads, &ids)?;
    for access in by_grant.values_mut() {
        access
            .sessions
            .sort_by(|a, b| (&a.start, &a.session).cmp(&(&b.start, &b.session)));
        for s in &mut access.sessions {
            let f = found.remove(&s.session).unwrap_or_default();
            let verdict = transcript::verdict(&f);
            let mut text = transcript::render(&f);
            for line in &verdict.lines {
                text.push_str(line);
                text.push('\n');
            }
            s.verified &= !verdict.tampered;
            s.transcript = text;
        }
    }
    Ok(by_grant.into_values().collect())
}

/// A session id as a file name.
fn file_safe(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
