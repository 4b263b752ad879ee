//! Whom the function acts for. A secret's writer may be less trusted than the function (the
//! approvals app's role writes every `dbgw/person/*` secret), so nothing that decides whose
//! password changes, how, or with which master is taken from the secret alone:
//!
//! - the scheme comes from the configuration: alternating users only for the secrets listed
//!   in `policy.alternating`; people's secrets always keep their one user (`<role>_clone` is
//!   never made for them);
//! - the master must be one the configuration allows for that kind of secret
//!   (`policy.person_masters` for people's, `policy.masters` for the rest), and it connects to
//!   its own server (the master secret's host and port, or for a master secret that names
//!   none, the function's `database.default_host` and port 5432); the rotated secret must
//!   name that same server;
//! - a person's secret names the role its name says (`dbgw/person/<role>`), and that role has
//!   the form of a person's role (`p_<email>_<16 hex>`, as `grants::person_role` makes them);
//! - before the master changes anything, the secret's current (or previous) credentials must
//!   log in to that server as that user (AWS's rotation functions do the same "to protect
//!   against a confused deputy attack"): only the one who already holds the password gets a
//!   new one.
//!
//! See docs/rotation.md, "Whom the function acts for".

use secret_store::DbCredentials;
use serde::{Deserialize, Serialize};

use crate::strategy::other_user;
use crate::Error;

/// The configuration of who may be rotated how (`[policy]`, `ROTATION_POLICY__<KEY>`; lists
/// are written `["a", "b"]`). The defaults are the local stack's secret names.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// People's secrets are the ones whose name starts with this; the rest of the name is
    /// their user.
    pub person_prefix: String,
    /// The master secrets (name or full ARN) a person's secret may name: the approvals app's
    /// login (its `target.secret`), and the admin secret `proxy grant add` uses if operators
    /// add grants that way.
    pub person_masters: Vec<String>,
    /// The master secrets (name or full ARN) every other secret may name (the RDS-managed
    /// master secret in AWS).
    pub masters: Vec<String>,
    /// The secrets (name or full ARN) rotated with alternating users (`NAME`/`NAME_clone`).
    /// Every other secret keeps its one user, whatever it says.
    pub alternating: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            person_prefix: "dbgw/person/".into(),
            person_masters: vec!["dbgw/approvals-db".into(), "dbgw/postgres-admin".into()],
            masters: vec!["dbgw/postgres-admin".into()],
            alternating: vec!["dbgw/rates-api".into()],
        }
    }
}

/// A secret as Secrets Manager names it (`DescribeSecret`, `GetSecretValue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub name: String,
    pub arn: String,
}

impl Named {
    /// Whether `list` names this secret (by name or by full ARN).
    pub fn listed_in(&self, list: &[String]) -> bool {
        list.iter().any(|e| *e == self.name || *e == self.arn)
    }
}

/// How a secret rotates, decided by the configuration and the secret's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// No master: the user logs in with its current (or previous) password and changes it.
    SelfChange,
    /// The master sets the user's password; the user is kept.
    ByMaster,
    /// The master sets the password of the other user of the pair (creating it like the
    /// original on first use).
    Alternating,
}

/// What the function will do for one secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub scheme: Scheme,
    /// Whether it is a person's secret.
    pub person: bool,
}

impl Policy {
    /// The plan for `secret` whose current version is `current`, or why the function will not
    /// act for it. Only the name and the configuration choose; the value is checked against
    /// them.
    pub fn plan(&self, secret: &Named, current: &DbCredentials) -> Result<Plan, Error> {
        let refuse = |why: String| Err(Error::Refused(format!("secret {}: {why}", secret.name)));
        if let Some(role) = secret.name.strip_prefix(self.person_prefix.as_str()) {
            if current.username != role {
                return refuse(format!(
                    "a person's secret must name its own role {role}, not {}",
                    current.username
                ));
            }
            if !person_role_like(role) {
                return refuse(format!(
                    "{role} is not a person's role (p_<email>_<16 hex digits>)"
                ));
            }
            // Never alternating users; a master only from `person_masters` (checked when it is
            // read); without one the role changes its own password, which needs it anyway.
            let scheme = match current.masterarn {
                Some(_) => Scheme::ByMaster,
                None => Scheme::SelfChange,
            };
            return Ok(Plan {
                scheme,
                person: true,
            });
        }
        let scheme = if secret.listed_in(&self.alternating) {
            if current.masterarn.is_none() {
                return refuse("alternating users need a master (masterarn)".into());
            }
            Scheme::Alternating
        } else if current.masterarn.is_some() {
            Scheme::ByMaster
        } else {
            Scheme::SelfChange
        };
        Ok(Plan {
            scheme,
            person: false,
        })
    }

    /// Whether `master` may change the passwords of the secret `plan` is for.
    /// A master listed by name must also be in the rotated secret's account and region (a
    /// `masterarn` can name another account's secret of the same name).
    pub fn master_allowed(&self, plan: &Plan, secret: &Named, master: &Named) -> bool {
        let list = if plan.person {
            &self.person_masters
        } else {
            &self.masters
        };
        list.contains(&master.arn)
            || (list.contains(&master.name) && account(&master.arn) == account(&secret.arn))
    }
}

impl Plan {
    /// The pending version is the current one's next under this plan: the same server,
    /// database and master, and the same user (or, alternating, the other one of the pair).
    pub fn check_pending(
        &self,
        current: &DbCredentials,
        pending: &DbCredentials,
    ) -> Result<(), Error> {
        if (
            &current.host,
            current.port,
            &current.dbname,
            &current.masterarn,
        ) != (
            &pending.host,
            pending.port,
            &pending.dbname,
            &pending.masterarn,
        ) {
            return Err(Error::Refused(
                "the pending version names another host, port, database or master than the \
                 current one"
                    .into(),
            ));
        }
        let expected = match self.scheme {
            Scheme::Alternating => other_user(&current.username),
            Scheme::SelfChange | Scheme::ByMaster => current.username.clone(),
        };
        if pending.username != expected {
            return Err(Error::Refused(format!(
                "the pending version's user {} is not {expected}",
                pending.username
            )));
        }
        Ok(())
    }

    /// The users whose login proves the secret's owner: the current user, and alternating,
    /// the other one of the pair (the previous version's).
    pub fn proves(&self, current: &DbCredentials, other: &DbCredentials) -> bool {
        other.username == current.username
            || (self.scheme == Scheme::Alternating
                && other.username == other_user(&current.username))
    }
}

/// `arn:aws:secretsmanager:REGION:ACCOUNT` of a secret's ARN.
fn account(arn: &str) -> Option<&str> {
    let end = arn.match_indices(':').nth(4)?.0;
    Some(&arn[..end])
}

/// Whether `user` has the form `grants::person_role` gives a person's role: `p_`, letters,
/// digits and `_`, then `_` and 16 lowercase hex digits, at most 63 characters.
pub fn person_role_like(user: &str) -> bool {
    let Some((readable, hash)) = user.strip_prefix("p_").and_then(|r| r.rsplit_once('_')) else {
        return false;
    };
    user.len() <= 63
        && hash.len() == 16
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && readable
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> Named {
        Named {
            name: name.into(),
            arn: format!("arn:aws:secretsmanager:eu-west-1:1:secret:{name}-AbCdEf"),
        }
    }

    fn creds(user: &str, master: Option<&str>) -> DbCredentials {
        DbCredentials {
            masterarn: master.map(str::to_string),
            ..DbCredentials::new(user, "pw")
        }
    }

    #[test]
    fn people_s_roles_have_the_approvals_app_s_form() {
        let role = grants::person_role("Erin.O'Neil+db@Example.com");
        assert!(person_role_like(&role), "{role}");
        assert!(person_role_like(&grants::person_role(&"x".repeat(200))));
        for not in [
            "rates_api",
            "postgres",
            "dbgw_approvals",
            "p_rates_api",
            "p_x_0123456789abcdeg",
            "p_X_0123456789abcdef",
            "p_x_0123456789abcde",
        ] {
            assert!(!person_role_like(not), "{not}");
        }
    }

    #[test]
    fn the_name_and_the_configuration_choose_never_the_value() {
        let p = Policy::default();
        let role = grants::person_role("erin@example.com");
        let person = named(&format!("dbgw/person/{role}"));
        let plan = p
            .plan(&person, &creds(&role, Some("dbgw/approvals-db")))
            .unwrap();
        assert_eq!(plan.scheme, Scheme::ByMaster);
        assert!(plan.person);
        // Another user, or a user of another form: refused, master or not.
        for (id, user) in [
            (&person, "rates_api"),
            (&named("dbgw/person/rates_api"), "rates_api"),
        ] {
            for master in [Some("dbgw/approvals-db"), None] {
                assert!(matches!(
                    p.plan(id, &creds(user, master)),
                    Err(Error::Refused(_))
                ));
            }
        }
        // Without a master the role changes its own password (single user, never alternating).
        assert_eq!(
            p.plan(&person, &creds(&role, None)).unwrap().scheme,
            Scheme::SelfChange
        );
        // Alternating only when listed (by name or ARN).
        let app = named("dbgw/rates-api");
        assert_eq!(
            p.plan(&app, &creds("rates_api", Some("m"))).unwrap().scheme,
            Scheme::Alternating
        );
        let other = named("dbgw/other");
        assert_eq!(
            p.plan(&other, &creds("other", Some("m"))).unwrap().scheme,
            Scheme::ByMaster
        );
        assert_eq!(
            p.plan(&other, &creds("other", None)).unwrap().scheme,
            Scheme::SelfChange
        );
        // Masters: people's from their own list.
        let approvals = named("dbgw/approvals-db");
        let admin = named("dbgw/postgres-admin");
        assert!(p.master_allowed(&plan, &person, &approvals));
        // The same name in another account is another secret.
        let foreign = Named {
            name: approvals.name.clone(),
            arn: approvals.arn.replace(":1:", ":2:"),
        };
        assert!(!p.master_allowed(&plan, &person, &foreign));
        assert!(!p.master_allowed(
            &p.plan(&other, &creds("other", Some("m"))).unwrap(),
            &other,
            &approvals
        ));
        let by_arn = Policy {
            masters: vec![admin.arn.clone()],
            ..Policy::default()
        };
        let plan = by_arn.plan(&other, &creds("other", Some("m"))).unwrap();
        assert!(by_arn.master_allowed(&plan, &other, &admin));
    }
}
