//! Session controls a grant carries: idle and age limits, read-only at the gateway, fresh
//! MFA at login. The approvals app copies them from the catalogue level into the grant; the
//! proxy enforces them on every replica. Every field is off by default, so operators'
//! grants (`proxy grant add`) and services behave as before unless configured.

use serde::{Deserialize, Serialize};

/// The session policy of one grant (or catalogue level).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionPolicy {
    /// Close a session with no statement in flight, no COPY and no result being sent for
    /// this long (PCI DSS 4.0 8.2.8: 15 minutes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u32>,
    /// The same inside an open transaction (locks held): usually shorter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_in_transaction_timeout_secs: Option<u32>,
    /// Close any session this long after login, busy or not (NIST SP 800-63B-4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_session_secs: Option<u32>,
    /// Pin `default_transaction_read_only` for the session and refuse every way to turn
    /// it off, whatever the role's grants allow.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Authentication methods the ID token's `amr` must all name (e.g. `["mfa"]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub require_amr: Vec<String>,
    /// The ID token's `auth_time` may be at most this old at login.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_auth_age_secs: Option<u32>,
}

impl SessionPolicy {
    /// Whether any control is on.
    pub fn is_empty(&self) -> bool {
        *self == SessionPolicy::default()
    }

    /// Why this policy cannot be used, if it cannot (a zero limit would close every
    /// session at once; an empty method name matches nothing a provider sends).
    pub fn check(&self) -> Result<(), String> {
        for (name, value) in [
            ("idle_timeout_secs", self.idle_timeout_secs),
            (
                "idle_in_transaction_timeout_secs",
                self.idle_in_transaction_timeout_secs,
            ),
            ("max_session_secs", self.max_session_secs),
            ("max_auth_age_secs", self.max_auth_age_secs),
        ] {
            if value == Some(0) {
                return Err(format!("{name} must be at least 1 (leave it out for none)"));
            }
        }
        if self.require_amr.iter().any(|m| m.trim().is_empty()) {
            return Err("require_amr names an empty method".into());
        }
        Ok(())
    }
}

/// Database columns <-> policy. Limits are `integer` there (positive, or NULL for none).
pub(crate) fn from_columns(
    idle: Option<i32>,
    idle_in_transaction: Option<i32>,
    max_session: Option<i32>,
    read_only: bool,
    require_amr: Vec<String>,
    max_auth_age: Option<i32>,
) -> SessionPolicy {
    let secs = |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok());
    SessionPolicy {
        idle_timeout_secs: secs(idle),
        idle_in_transaction_timeout_secs: secs(idle_in_transaction),
        max_session_secs: secs(max_session),
        read_only,
        require_amr,
        max_auth_age_secs: secs(max_auth_age),
    }
}

pub(crate) fn column(v: Option<u32>) -> Option<i32> {
    v.map(|v| i32::try_from(v).unwrap_or(i32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_limits_and_empty_methods_are_refused() {
        assert!(SessionPolicy::default().check().is_ok());
        let zero = SessionPolicy {
            idle_timeout_secs: Some(0),
            ..Default::default()
        };
        assert!(zero.check().unwrap_err().contains("idle_timeout_secs"));
        let empty = SessionPolicy {
            require_amr: vec![" ".into()],
            ..Default::default()
        };
        assert!(empty.check().is_err());
    }

    #[test]
    fn columns_round_trip() {
        let p = SessionPolicy {
            idle_timeout_secs: Some(900),
            idle_in_transaction_timeout_secs: Some(60),
            max_session_secs: Some(28800),
            read_only: true,
            require_amr: vec!["mfa".into()],
            max_auth_age_secs: Some(3600),
        };
        let back = from_columns(
            column(p.idle_timeout_secs),
            column(p.idle_in_transaction_timeout_secs),
            column(p.max_session_secs),
            p.read_only,
            p.require_amr.clone(),
            column(p.max_auth_age_secs),
        );
        assert_eq!(back, p);
    }
}
