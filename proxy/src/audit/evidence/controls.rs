//! Which file of the bundle evidences which control (PCI DSS 4.0 and SOC 2), and whether
//! the bundle holds it: a control whose input was not given says so rather than vanish.

use serde::Serialize;

use super::Contents;

#[derive(Debug, Serialize)]
pub struct Control {
    pub control: &'static str,
    /// What the control asks, in short.
    pub asks: &'static str,
    /// The bundle's files that evidence it.
    pub files: Vec<&'static str>,
    /// What is missing from the bundle for it (an input not given), if anything.
    pub missing: Vec<&'static str>,
}

/// One control's row: `(file, present)` pairs; absent files become `missing` notes.
fn row(
    control: &'static str,
    asks: &'static str,
    files: &[(&'static str, bool, &'static str)],
) -> Control {
    Control {
        control,
        asks,
        files: files.iter().filter(|f| f.1).map(|f| f.0).collect(),
        missing: files.iter().filter(|f| !f.1).map(|f| f.2).collect(),
    }
}

pub fn table(c: &Contents) -> Vec<Control> {
    let crosscheck = (
        "crosscheck.json",
        c.crosscheck.is_some(),
        "crosscheck.json: no --pgaudit given",
    );
    let events = (
        "approvals-events.jsonl",
        c.approvals.is_some(),
        "approvals-events.jsonl: no --approvals-events given",
    );
    let events_verified = (
        "approvals-verification.json",
        c.approvals.is_some(),
        "approvals-verification.json: no --approvals-events given",
    );
    let secrets = (
        "secrets.json",
        c.secrets.is_some(),
        "secrets.json: no --secrets-prefix given",
    );
    let accesses = ("accesses.json", true, "");
    let sessions = (
        "sessions/",
        !c.accesses.is_empty(),
        "sessions/: no person's session in the period",
    );
    let chains = ("chains.json", true, "");
    vec![
        row(
            "PCI DSS 7.2",
            "access is assigned by need, approved, and reviewed",
            &[accesses, events, events_verified],
        ),
        row(
            "PCI DSS 8.3",
            "every user is strongly authenticated, as themselves",
            &[accesses, sessions],
        ),
        row(
            "PCI DSS 8.6",
            "system and application accounts' credentials are managed and changed",
            &[secrets],
        ),
        row(
            "PCI DSS 10.2",
            "audit logs record each person's access and actions",
            &[accesses, sessions, crosscheck],
        ),
        row(
            "PCI DSS 10.3",
            "audit logs are protected from change and destruction",
            &[chains, events_verified],
        ),
        row(
            "PCI DSS 10.5",
            "audit log history is retained and available",
            &[chains],
        ),
        row(
            "PCI DSS 10.7",
            "failures of critical security controls are detected",
            &[crosscheck, chains],
        ),
        row(
            "SOC 2 CC6",
            "logical access is restricted, approved and removed",
            &[accesses, events, events_verified, secrets],
        ),
        row(
            "SOC 2 CC7",
            "system activity is monitored and anomalies are detected",
            &[chains, crosscheck, sessions],
        ),
    ]
}
