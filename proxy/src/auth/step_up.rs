//! Step-up authentication per grant: a grant's policy may ask that the person signed in
//! with certain methods (`require_amr`, matched against the ID token's `amr`) and not too
//! long ago (`max_auth_age_secs`, against its `auth_time`). A token that falls short is
//! refused with what to do: sign in again, asking the provider for those methods.

use grants::SessionPolicy;

/// What the person runs to get a token that passes.
pub const SIGN_IN_AGAIN: &str = "sign in again with `dbgw login --mfa`";

/// Why a token does not meet a grant's policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepUp {
    #[error(
        "this access requires signing in with {} (your sign-in used {}): {SIGN_IN_AGAIN}",
        .missing.join(", "),
        if .used.is_empty() { "no method the token names".to_string() } else { .used.join(", ") }
    )]
    Methods {
        missing: Vec<String>,
        used: Vec<String>,
    },
    #[error(
        "this access requires a sign-in within the last {max} seconds (yours was {age} seconds \
         ago): {SIGN_IN_AGAIN}"
    )]
    TooOld { age: i64, max: u32 },
    #[error(
        "this access requires a recent sign-in and the token does not say when you signed in \
         (auth_time): {SIGN_IN_AGAIN}"
    )]
    NoAuthTime,
}

/// Checks a token's `amr` and `auth_time` against `policy` at `now` (seconds since the
/// epoch). Method names compare exactly, as RFC 8176 registers them.
pub fn check(
    policy: &SessionPolicy,
    amr: &[String],
    auth_time: Option<i64>,
    now: i64,
) -> Result<(), StepUp> {
    let missing: Vec<String> = policy
        .require_amr
        .iter()
        .filter(|m| !amr.contains(m))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(StepUp::Methods {
            missing,
            used: amr.to_vec(),
        });
    }
    if let Some(max) = policy.max_auth_age_secs {
        let at = auth_time.ok_or(StepUp::NoAuthTime)?;
        let age = now - at;
        if age > i64::from(max) {
            return Err(StepUp::TooOld { age, max });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(amr: &[&str], max: Option<u32>) -> SessionPolicy {
        SessionPolicy {
            require_amr: amr.iter().map(|s| s.to_string()).collect(),
            max_auth_age_secs: max,
            ..Default::default()
        }
    }

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn methods_and_age_are_checked() {
        let now = 1_000_000;
        assert_eq!(check(&policy(&[], None), &[], None, now), Ok(()));
        assert_eq!(
            check(&policy(&["mfa"], None), &v(&["pwd", "mfa"]), None, now),
            Ok(())
        );
        let err = check(&policy(&["mfa"], None), &v(&["pwd"]), Some(now), now).unwrap_err();
        assert!(err.to_string().contains("dbgw login --mfa"), "{err}");
        assert!(err.to_string().contains("used pwd"), "{err}");
        assert_eq!(
            check(
                &policy(&["mfa"], Some(600)),
                &v(&["mfa"]),
                Some(now - 601),
                now
            ),
            Err(StepUp::TooOld { age: 601, max: 600 })
        );
        assert_eq!(
            check(&policy(&[], Some(600)), &v(&["mfa"]), Some(now - 600), now),
            Ok(())
        );
        assert_eq!(
            check(&policy(&[], Some(600)), &v(&["mfa"]), None, now),
            Err(StepUp::NoAuthTime)
        );
        assert!(matches!(
            check(&policy(&["hwk", "mfa"], None), &v(&["MFA"]), None, now),
            Err(StepUp::Methods { missing, .. }) if missing == v(&["hwk", "mfa"])
        ));
    }
}
