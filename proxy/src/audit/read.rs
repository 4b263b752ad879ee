//! The typed read side of the audit record: what [`super::record`] and the writer write, as
//! Rust types. `proxy audit session` and `proxy audit sessions` read the log through it.
//!
//! Reading is lenient (a field this reader does not know is ignored, a record kind it does not
//! know is [`Body::Other`]), so an older binary can still read a newer log. The tests are
//! strict instead: every record kind the writer produces is read and written back, and must
//! come out as the same JSON, so a field or kind added to the writer without this module
//! fails a test.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One audit line: the chain fields, the time and the body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub prev: String,
    /// RFC 3339 in UTC with microseconds (text order is time order).
    pub ts: String,
    #[serde(flatten)]
    pub body: Body,
    pub hash: String,
}

/// A record by its `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    /// The writer started (a new process), continuing the chain in a new file.
    LogOpened {
        replica: String,
        previous_file: String,
        pid: u32,
    },
    /// The first record of a file after a rotation.
    FileOpened {
        replica: String,
        previous_file: String,
    },
    /// The last record of a file: the chain continues in `next_file`.
    Rotate { file: String, next_file: String },
    /// A client connected and sent its start-up parameters.
    Connect {
        #[serde(flatten)]
        who: Who,
        tls: bool,
        startup: BTreeMap<String, String>,
    },
    /// A login succeeded (`who.login` is set) or was refused (`reason`).
    Auth {
        #[serde(flatten)]
        who: Who,
        method: String,
        user: String,
        requested_database: String,
        result: AuthResult,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// How and when a person signed in (their ID token's `amr`, `auth_time`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        amr: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth_time: Option<String>,
    },
    /// The proxy's own session with the database is open.
    Upstream {
        #[serde(flatten)]
        who: Who,
        backend_pid: i32,
        application_name: String,
    },
    /// A statement, written before it was forwarded (or refused).
    Statement(Box<Statement>),
    /// How the statement record `of` ended.
    Outcome(Outcome),
    /// The session ended.
    Disconnect {
        #[serde(flatten)]
        who: Who,
        bytes_from_client: u64,
        bytes_to_client: u64,
        statements: u64,
        duration_ms: u64,
        reason: String,
    },
    /// A kind this reader does not know (a newer writer's).
    #[serde(other)]
    Other,
}

impl Body {
    /// The session a record belongs to (none for the writer's own records).
    pub fn session(&self) -> Option<&str> {
        match self {
            Body::Connect { who, .. }
            | Body::Auth { who, .. }
            | Body::Upstream { who, .. }
            | Body::Disconnect { who, .. } => Some(&who.session),
            Body::Statement(s) => Some(&s.who.session),
            Body::Outcome(o) => Some(&o.session),
            Body::LogOpened { .. }
            | Body::FileOpened { .. }
            | Body::Rotate { .. }
            | Body::Other => None,
        }
    }

    /// Who the session is, on the records that repeat it (all but outcomes).
    pub fn who(&self) -> Option<&Who> {
        match self {
            Body::Connect { who, .. }
            | Body::Auth { who, .. }
            | Body::Upstream { who, .. }
            | Body::Disconnect { who, .. } => Some(who),
            Body::Statement(s) => Some(&s.who),
            _ => None,
        }
    }
}

/// The facts every record of a session repeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Who {
    pub session: String,
    /// The client's address (`ip:port`; behind a load balancer, the one it names).
    pub client: String,
    /// Set once logged in.
    #[serde(flatten)]
    pub login: Option<Login>,
}

/// Who logged in, where and as which database user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Login {
    pub identity: Identity,
    pub database: String,
    /// The database user the proxy logged in as.
    pub db_user: String,
    /// The version of the credentials used (docs/rotation.md).
    pub secret_version: String,
    /// The client's `application_name`.
    pub application: String,
}

/// Who is behind a session: the read side of [`super::record::Identity`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Identity {
    Service {
        name: String,
    },
    Person {
        email: String,
        subject: String,
        issuer: String,
        grant_id: i64,
        /// The approvals app's request behind the grant (absent for operators' grants).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<i64>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        approved_by: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthResult {
    Ok,
    Refused,
}

/// A `statement` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    #[serde(flatten)]
    pub who: Who,
    #[serde(flatten)]
    pub via: Via,
    /// The text (`None`: the proxy does not know it, e.g. a statement prepared with SQL).
    pub statement: Option<String>,
    /// The parts of a query string with several statements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statements: Option<Vec<String>>,
    /// Password literals were replaced by `'[REDACTED]'`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redacted: bool,
    /// Bound parameters (extended protocol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Vec<Option<Param>>>,
}

/// How a statement reached the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "protocol", rename_all = "lowercase")]
pub enum Via {
    /// A Query message of `of` statements (0: refused before it was split).
    Simple { of: usize },
    /// Parse, Bind and/or Execute; names as the client gave them ("" is unnamed).
    Extended {
        steps: Vec<String>,
        prepared: String,
        portal: String,
    },
}

/// A bound parameter other than NULL, as [`super::params`] records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Param {
    /// The value's text form.
    Text(String),
    /// A value over the cap: its first bytes, its length and the SHA-256 of all of it.
    Cut {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base64: Option<String>,
        bytes: u64,
        sha256: String,
        #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
        oid: Option<u32>,
    },
    /// A binary value of a type the proxy cannot render.
    Binary {
        base64: String,
        #[serde(rename = "type")]
        oid: u32,
    },
}

/// An `outcome` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub session: String,
    /// The `seq` of its statement record.
    #[serde(rename = "ref")]
    pub of: u64,
    /// Which statement of a query string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    #[serde(flatten)]
    pub status: Status,
    pub duration_us: u64,
}

/// How a statement ended: the read side of [`super::record::Outcome`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    Ok {
        tag: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rows: Option<u64>,
    },
    Error {
        sqlstate: String,
        message: String,
        /// `parse`, `bind`, `execute`, or `commit`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
    },
    NotExecuted {
        reason: String,
    },
    Unknown {
        reason: String,
    },
    /// Never forwarded: the proxy refused it.
    Refused {
        sqlstate: String,
        message: String,
    },
}

/// Reads one line (without its newline).
pub fn parse(line: &[u8]) -> Result<Record, String> {
    serde_json::from_slice(line).map_err(|e| format!("not a record this reader knows: {e}"))
}

#[cfg(test)]
mod tests {
    use super::super::record::{
        self, Identity as WrittenIdentity, Outcome as O, SessionInfo, Via as V,
    };
    use super::super::source::audit_files;
    use super::super::writer::{AuditLog, AuditMetrics};
    use super::super::AuditSettings;
    use super::*;

    /// One of every record body `record.rs` builds, with every optional member present in
    /// at least one of them.
    fn every_session_body() -> Vec<String> {
        let mut s = SessionInfo::new("s1".into(), "10.0.0.1:5000".into());
        let startup = [("user".to_string(), "alice@example.com".to_string())];
        let mut out = vec![
            record::connect(&s, true, &startup),
            record::auth(&s, "oidc", "mallory@example.com", "rates", Err("bad token")),
        ];
        s.logged_in(
            &WrittenIdentity::Person {
                email: "alice@example.com".into(),
                subject: "sub-1".into(),
                issuer: "https://sso.example.com".into(),
                grant_id: 7,
                request_id: Some(12),
                approved_by: vec!["dana@example.com".into(), "sam@example.com".into()],
                grant_expires_at: chrono::Utc::now(),
                policy: Default::default(),
            },
            "rates",
            "p_alice",
            "v1",
            "psql",
        );
        let parts = [0..8, 9..17];
        let params = super::super::params::to_json(
            &[
                crate::protocol::frontend::Param::Null,
                crate::protocol::frontend::Param::Text(b"7"),
                crate::protocol::frontend::Param::Binary(&[1, 2, 3]),
                crate::protocol::frontend::Param::Text(b"a long value"),
                crate::protocol::frontend::Param::Binary(b"a long binary"),
            ],
            &[0, 0, 0, 0, 0],
            6,
        );
        out.extend([
            record::auth(&s, "oidc", "alice@example.com", "rates", Ok(())),
            record::upstream(&s, 4242, "dbgw:s1"),
            record::statement(
                &s,
                V::Simple { statements: &parts },
                Some("SELECT 1;SELECT 2"),
                false,
                None,
            ),
            record::statement(
                &s,
                V::Extended {
                    steps: r#"["parse","bind","execute"]"#,
                    statement: "",
                    portal: "",
                },
                Some("SELECT $1"),
                true,
                Some(&params),
            ),
            record::statement(
                &s,
                V::Extended {
                    steps: r#"["execute"]"#,
                    statement: "",
                    portal: "p",
                },
                None,
                false,
                None,
            ),
        ]);
        for (index, outcome) in [
            (
                Some(0),
                O::Ok {
                    tag: "SELECT 1",
                    rows: Some(1),
                },
            ),
            (
                None,
                O::Ok {
                    tag: "BEGIN",
                    rows: None,
                },
            ),
            (
                Some(1),
                O::Error {
                    code: "22012",
                    message: "division by zero",
                    step: Some("execute"),
                },
            ),
            (
                None,
                O::Error {
                    code: "22012",
                    message: "x",
                    step: None,
                },
            ),
            (
                None,
                O::NotExecuted {
                    reason: "an earlier statement failed",
                },
            ),
            (
                None,
                O::Unknown {
                    reason: "session ended",
                },
            ),
            (
                None,
                O::Refused {
                    code: "42501",
                    message: "refused",
                },
            ),
        ] {
            out.push(record::outcome(&s, 5, index, &outcome, 12));
        }
        out.push(record::disconnect(
            &s,
            &record::Totals {
                bytes_from_client: 1,
                bytes_to_client: 2,
                statements: 3,
            },
            4,
            "client closed the connection",
        ));
        out
    }

    /// Writes `bodies` through the real writer with files small enough to rotate, so the
    /// writer's own records (`log_opened`, `rotate`, `file_opened`) are there too.
    async fn written(bodies: &[String]) -> Vec<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let settings = AuditSettings {
            dir: dir.path().to_path_buf(),
            max_file_bytes: 1,
            ..AuditSettings::default()
        };
        let log = AuditLog::open(settings, "replica-a", AuditMetrics::default()).unwrap();
        for body in bodies {
            log.accept(std::slice::from_ref(body)).await.unwrap();
            log.flush().unwrap();
        }
        log.close().unwrap();
        audit_files(dir.path())
            .unwrap()
            .iter()
            .flat_map(|f| {
                std::fs::read(f)
                    .unwrap()
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The record kinds the writer's source names (`head("kind"`, `head_into(b, "kind"` and
    /// `\"type\":\"kind\"` in record.rs and writer.rs): a kind added there must be covered
    /// below.
    fn kinds_in_source() -> std::collections::BTreeSet<String> {
        let mut kinds = std::collections::BTreeSet::new();
        for source in [include_str!("record.rs"), include_str!("writer.rs")] {
            // Not their tests' made-up kinds.
            let source = source.split("#[cfg(test)]").next().unwrap();
            for pattern in ["head(\"", "head_into(b, \"", r#"\"type\":\""#] {
                for part in source.split(pattern).skip(1) {
                    let kind: String = part
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if !kind.is_empty() {
                        kinds.insert(kind);
                    }
                }
            }
        }
        kinds
    }

    #[tokio::test]
    async fn every_record_the_writer_writes_reads_back_as_the_same_json() {
        let lines = written(&every_session_body()).await;
        let mut kinds = std::collections::BTreeSet::new();
        for line in &lines {
            let typed =
                parse(line).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(line)));
            assert!(
                !matches!(typed.body, Body::Other),
                "unknown kind: {}",
                String::from_utf8_lossy(line)
            );
            let original: serde_json::Value = serde_json::from_slice(line).unwrap();
            kinds.insert(original["type"].as_str().unwrap().to_string());
            assert_eq!(
                serde_json::to_value(&typed).unwrap(),
                original,
                "a member this reader does not know (or reads differently)"
            );
        }
        assert_eq!(
            kinds,
            kinds_in_source(),
            "record kinds without a round-trip case"
        );
    }

    #[test]
    fn a_member_the_reader_does_not_know_fails_the_round_trip() {
        let line = br#"{"seq":1,"prev":"0","ts":"t","type":"rotate","file":"a","next_file":"b","new":1,"hash":"h"}"#;
        let typed = parse(line).unwrap();
        let original: serde_json::Value = serde_json::from_slice(line).unwrap();
        assert_ne!(serde_json::to_value(&typed).unwrap(), original);
    }

    #[test]
    fn an_unknown_kind_is_read_as_other() {
        let line = br#"{"seq":1,"prev":"0","ts":"t","type":"future","x":1,"hash":"h"}"#;
        assert_eq!(parse(line).unwrap().body, Body::Other);
    }
}
