//! Small audit logs for the read side's tests, written by the real writer from the real
//! record builders, in files small enough to rotate after every record.

use std::path::Path;

use super::record::{self, Identity, Outcome, SessionInfo, Totals, Via};
use super::writer::{AuditLog, AuditMetrics};
use super::AuditSettings;

/// A person's identity under grant 7 of request 12.
pub fn alice() -> Identity {
    Identity::Person {
        email: "alice@example.com".into(),
        subject: "sub-alice".into(),
        issuer: "https://sso.example.com".into(),
        grant_id: 7,
        request_id: Some(12),
        approved_by: vec!["dana@example.com".into()],
        grant_expires_at: chrono::Utc::now(),
        policy: Default::default(),
    }
}

pub fn service() -> Identity {
    Identity::Service {
        name: "rates_api".into(),
    }
}

/// Appends to the chain in `dir` (replica `replica`) one whole session per `(id, who,
/// statement)`: connect, login, upstream, the statement and its outcome, disconnect.
pub async fn write_sessions(dir: &Path, replica: &str, sessions: &[(&str, Identity, &str)]) {
    let settings = AuditSettings {
        dir: dir.to_path_buf(),
        max_file_bytes: 1,
        ..AuditSettings::default()
    };
    let log = AuditLog::open(settings, replica, AuditMetrics::default()).unwrap();
    let put = |body: String| {
        log.record(body);
        log.flush().unwrap();
    };
    for (id, who, sql) in sessions {
        let mut s = SessionInfo::new(id.to_string(), "10.0.0.9:4000".into());
        put(record::connect(
            &s,
            true,
            &[
                ("user".into(), who.name().into()),
                ("database".into(), "rates".into()),
            ],
        ));
        s.logged_in(who, "rates", "db_user", "v1", "tests");
        put(record::auth(&s, "oidc", who.name(), "rates", Ok(())));
        put(record::upstream(&s, 99, "dbgw:x"));
        let whole = 0..sql.len();
        let parts = std::slice::from_ref(&whole);
        let seq = log
            .accept(&[record::statement(
                &s,
                Via::Simple { statements: parts },
                Some(sql),
                false,
                None,
            )])
            .await
            .unwrap();
        log.flush().unwrap();
        put(record::outcome(
            &s,
            seq,
            Some(0),
            &Outcome::Ok {
                tag: "SELECT 1",
                rows: Some(1),
            },
            10,
        ));
        put(record::disconnect(
            &s,
            &Totals::default(),
            5,
            "client closed the connection",
        ));
    }
    log.close().unwrap();
}

/// Changes `from` to `to` in the first line of `dir`'s files that holds `from`, leaving
/// its hash as it was (what an editor of the file would do).
pub fn alter(dir: &Path, from: &str, to: &str) {
    for f in super::source::audit_files(dir).unwrap() {
        let text = std::fs::read_to_string(&f).unwrap();
        if text.contains(from) {
            std::fs::write(&f, text.replacen(from, to, 1)).unwrap();
            return;
        }
    }
    panic!("{from:?} is in none of the files");
}
