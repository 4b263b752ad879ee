//! The life of an access request, typed: its states ([`Status`]), what moves it from one to
//! the next ([`Action`], allowed or refused by [`Status::transition`], the one table of
//! moves), and an approver's [`Decision`].
//!
//! ```text
//! pending --approve (the final approval)--> approved --activate--> active --end--> ending --finish--> ended
//! pending --deny--> denied
//! pending --withdraw--> withdrawn
//! approved --end--> ending    (withdrawn, revoked, given up or expired before it started)
//! ```
//!
//! Both are stored as text (`access_requests.status`, `decisions.decision`), and the CHECK
//! constraints of `db/control/0002_approvals.sql` list the same names (a test below reads the
//! migrations and compares). Rust binds [`Status::as_str`] as a query parameter and reads a
//! column back with `FromSql`; no status is spelled out as a string anywhere else.
//! [`crate::model::transition`] runs a move as a guarded `UPDATE`.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use tokio_postgres::types::{FromSql, Type};

/// Where a request is in its life (`access_requests.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for approvers.
    Pending,
    /// An approver denied it (final).
    Denied,
    /// Its requester withdrew it while pending (final).
    Withdrawn,
    /// Approved by enough approvers; access is being made, or waits for a later start.
    Approved,
    /// The person has the access.
    Active,
    /// Access is being taken away (expiry, revocation, giving up, withdrawal after approval).
    Ending,
    /// Access was taken away (final).
    Ended,
}

/// What happens to a request; [`Status::transition`] says from which states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// The approval that completes the approvers needed (an earlier approval moves nothing).
    Approve,
    /// An approver denies.
    Deny,
    /// The requester withdraws a pending request (an approved one is ended instead).
    Withdraw,
    /// Provisioning has made the access.
    Activate,
    /// Taking the access away begins (expiry, revocation, giving up, withdrawal).
    End,
    /// Taking the access away is done.
    Finish,
}

/// A move the table does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a request that is {from} cannot {action}")]
pub struct Refused {
    pub from: Status,
    pub action: Action,
}

impl Status {
    /// Every state, in the order of the CHECK constraint.
    pub const ALL: [Status; 7] = [
        Status::Pending,
        Status::Denied,
        Status::Withdrawn,
        Status::Approved,
        Status::Active,
        Status::Ending,
        Status::Ended,
    ];

    /// A new request's state (the column's default).
    pub const INITIAL: Status = Status::Pending;

    /// The name stored in the database and shown to people.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Denied => "denied",
            Status::Withdrawn => "withdrawn",
            Status::Approved => "approved",
            Status::Active => "active",
            Status::Ending => "ending",
            Status::Ended => "ended",
        }
    }

    /// The state `action` leads to from this one, or why it may not happen: the only
    /// table of moves.
    pub fn transition(self, action: Action) -> Result<Status, Refused> {
        use Action as A;
        use Status as S;
        match (self, action) {
            (S::Pending, A::Approve) => Ok(S::Approved),
            (S::Pending, A::Deny) => Ok(S::Denied),
            (S::Pending, A::Withdraw) => Ok(S::Withdrawn),
            (S::Approved, A::Activate) => Ok(S::Active),
            (S::Approved | S::Active, A::End) => Ok(S::Ending),
            (S::Ending, A::Finish) => Ok(S::Ended),
            (from, action) => Err(Refused { from, action }),
        }
    }

    /// Whether `action` may happen now.
    pub fn allows(self, action: Action) -> bool {
        self.transition(action).is_ok()
    }

    /// Whether approvers may still decide: any approval may be the final one, any decision
    /// a denial.
    pub fn decidable(self) -> bool {
        self.allows(Action::Approve) && self.allows(Action::Deny)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Approve => "be approved",
            Action::Deny => "be denied",
            Action::Withdraw => "be withdrawn",
            Action::Activate => "become active",
            Action::End => "be ended",
            Action::Finish => "finish ending",
        })
    }
}

/// A name that is not a state or decision of this app.
#[derive(Debug, thiserror::Error)]
#[error("unknown {what} `{name}`")]
pub struct Unknown {
    what: &'static str,
    name: String,
}

impl FromStr for Status {
    type Err = Unknown;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| Unknown {
                what: "request status",
                name: s.into(),
            })
    }
}

impl<'a> FromSql<'a> for Status {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(<&str as FromSql>::from_sql(ty, raw)?.parse()?)
    }

    fn accepts(ty: &Type) -> bool {
        <&str as FromSql>::accepts(ty)
    }
}

/// An approver's decision (`decisions.decision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Deny,
}

impl Decision {
    /// Both, in the order of the CHECK constraint.
    pub const ALL: [Decision; 2] = [Decision::Approve, Decision::Deny];

    /// The name stored in the database, in forms and in the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Decision {
    type Err = Unknown;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Decision::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| Unknown {
                what: "decision",
                name: s.into(),
            })
    }
}

impl<'a> FromSql<'a> for Decision {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(<&str as FromSql>::from_sql(ty, raw)?.parse()?)
    }

    fn accepts(ty: &Type) -> bool {
        <&str as FromSql>::accepts(ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACTIONS: [Action; 6] = [
        Action::Approve,
        Action::Deny,
        Action::Withdraw,
        Action::Activate,
        Action::End,
        Action::Finish,
    ];

    /// Every control-plane migration, in the order they run.
    fn migrations() -> Vec<(String, String)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../db/control");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "sql"))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|p| {
                (
                    p.display().to_string(),
                    std::fs::read_to_string(&p).unwrap(),
                )
            })
            .collect()
    }

    /// The names of the last `CHECK (<column> IN ('a', 'b', ...))` over all migrations.
    fn check_list(column: &str) -> Vec<String> {
        let opening = format!("CHECK ({column} IN (");
        let mut found = None;
        for (file, sql) in migrations() {
            let sql: String = sql
                .lines()
                .map(|l| l.split("--").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            for (at, _) in sql.match_indices(&opening) {
                let rest = &sql[at + opening.len()..];
                let list = &rest[..rest.find(')').unwrap_or_else(|| panic!("{file}: unclosed"))];
                let names: Vec<String> = list
                    .split(',')
                    .map(|n| {
                        let n = n.trim();
                        assert!(
                            n.len() >= 2 && n.starts_with('\'') && n.ends_with('\''),
                            "{file}: `{n}` is not a quoted name"
                        );
                        n[1..n.len() - 1].to_string()
                    })
                    .collect();
                found = Some(names);
            }
        }
        found.unwrap_or_else(|| panic!("no `{opening}` in db/control"))
    }

    #[test]
    fn states_are_the_check_constraints() {
        let statuses: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(check_list("status"), statuses);
        let decisions: Vec<&str> = Decision::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(check_list("decision"), decisions);
        // The column's default is the initial state.
        let defaults: Vec<String> = migrations()
            .iter()
            .flat_map(|(_, sql)| {
                sql.lines()
                    .map(str::trim)
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .filter(|l| l.starts_with("status ") && l.contains("DEFAULT '"))
            .map(|l| l.split('\'').nth(1).unwrap_or_default().to_string())
            .collect();
        assert_eq!(defaults, [Status::INITIAL.as_str()]);
    }

    #[test]
    fn names_round_trip() {
        for s in Status::ALL {
            assert_eq!(s.as_str().parse::<Status>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for d in Decision::ALL {
            assert_eq!(d.as_str().parse::<Decision>().unwrap(), d);
            assert_eq!(serde_json::to_value(d).unwrap(), d.as_str());
        }
        assert!("Pending".parse::<Status>().is_err());
        assert!("approved".parse::<Decision>().is_err());
    }

    /// The moves of the life described in the module's documentation, and no other.
    #[test]
    fn only_the_documented_moves_are_allowed() {
        use Action as A;
        use Status as S;
        let allowed = [
            (S::Pending, A::Approve, S::Approved),
            (S::Pending, A::Deny, S::Denied),
            (S::Pending, A::Withdraw, S::Withdrawn),
            (S::Approved, A::Activate, S::Active),
            (S::Approved, A::End, S::Ending),
            (S::Active, A::End, S::Ending),
            (S::Ending, A::Finish, S::Ended),
        ];
        let mut refused = 0;
        for from in Status::ALL {
            for action in ACTIONS {
                let expected = allowed
                    .iter()
                    .find(|(f, a, _)| *f == from && *a == action)
                    .map(|(_, _, to)| *to);
                match (from.transition(action), expected) {
                    (Ok(to), Some(want)) => assert_eq!(to, want, "{from} by {action:?}"),
                    (Err(e), None) => {
                        assert_eq!(e, Refused { from, action });
                        assert!(!from.allows(action));
                        refused += 1;
                    }
                    (got, want) => panic!("{from} by {action:?}: {got:?}, expected {want:?}"),
                }
            }
        }
        assert_eq!(refused, Status::ALL.len() * ACTIONS.len() - allowed.len());
    }

    #[test]
    fn final_states_allow_nothing_and_only_pending_is_decidable() {
        for s in [Status::Denied, Status::Withdrawn, Status::Ended] {
            assert!(ACTIONS.iter().all(|a| !s.allows(*a)), "{s}");
        }
        for s in Status::ALL {
            assert_eq!(s.decidable(), s == Status::Pending, "{s}");
        }
        // Every state is reachable from the initial one.
        let mut reached = vec![Status::INITIAL];
        let mut i = 0;
        while i < reached.len() {
            for a in ACTIONS {
                if let Ok(to) = reached[i].transition(a) {
                    if !reached.contains(&to) {
                        reached.push(to);
                    }
                }
            }
            i += 1;
        }
        assert_eq!(reached.len(), Status::ALL.len());
    }
}
