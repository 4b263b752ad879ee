//! The filters of `proxy audit sessions`: which sessions an auditor asked for.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use super::read::Identity;

/// Which sessions to list. Every filter given must match.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Filter {
    /// Sessions of this person (the email they signed in with; a refused login counts by
    /// the user it tried). Case-insensitive.
    #[arg(long)]
    pub email: Option<String>,
    /// Sessions opened under this access grant (its id).
    #[arg(long)]
    pub grant: Option<i64>,
    /// Sessions under the grant of this approvals request (its id).
    #[arg(long)]
    pub request: Option<i64>,
    /// Sessions still open at or after this time: RFC 3339 (2026-12-01T09:00:00Z), or a
    /// date (2026-12-01, midnight UTC), or a date and time in UTC (2026-12-01T09:00:00).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<String>,
    /// Sessions that started at or before this time (same forms as --since; a date means
    /// the end of that day).
    #[arg(long, value_parser = parse_until)]
    pub until: Option<String>,
    /// Sessions on this database.
    #[arg(long)]
    pub database: Option<String>,
    /// Sessions with at least one statement like this pattern, as SQL's ILIKE: `%` any
    /// text, `_` one character, `\` escapes; case-insensitive; the whole text must match
    /// (so `%notes%` finds any statement that mentions notes).
    #[arg(long)]
    pub statement_like: Option<String>,
}

/// What a session is, as far as the filters look at it.
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    pub identity: Option<&'a Identity>,
    /// The user a login tried (refused logins have no identity).
    pub user: Option<&'a str>,
    pub database: Option<&'a str>,
    /// Times of its first and last records (RFC 3339 UTC with microseconds).
    pub start: &'a str,
    pub end: &'a str,
}

impl Filter {
    /// Whether the session matches every filter but `--statement-like` (see
    /// [`Filter::statement_matches`], checked as statements stream by).
    pub fn matches(&self, s: &Facts) -> bool {
        let person = match s.identity {
            Some(Identity::Person {
                email,
                grant_id,
                request_id,
                ..
            }) => Some((email.as_str(), *grant_id, *request_id)),
            _ => None,
        };
        let email = person.map(|p| p.0).or(s.user);
        self.email
            .as_deref()
            .is_none_or(|want| email.is_some_and(|e| e.eq_ignore_ascii_case(want)))
            && self
                .grant
                .is_none_or(|want| person.is_some_and(|p| p.1 == want))
            && self
                .request
                .is_none_or(|want| person.is_some_and(|p| p.2 == Some(want)))
            && self
                .database
                .as_deref()
                .is_none_or(|want| s.database == Some(want))
            && self.since.as_deref().is_none_or(|since| s.end >= since)
            && self.until.as_deref().is_none_or(|until| s.start <= until)
    }

    /// Whether `text` (one statement's) matches `--statement-like` (true without it).
    pub fn statement_matches(&self, text: &str) -> bool {
        self.statement_like
            .as_deref()
            .is_none_or(|pattern| ilike(text, pattern))
    }
}

/// SQL `ILIKE`: `%` any run of characters, `_` one character, `\` takes the next one as is.
pub fn ilike(text: &str, pattern: &str) -> bool {
    let text: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
    let pattern: Vec<char> = pattern.chars().flat_map(char::to_lowercase).collect();
    // Iterative matching with one backtrack point (the last `%`), linear in practice.
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('%') => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some('_') => {
                t += 1;
                p += 1;
                continue;
            }
            Some(&c) => {
                let (literal, width) = match (c, pattern.get(p + 1)) {
                    ('\\', Some(&next)) => (next, 2),
                    _ => (c, 1),
                };
                if literal == text[t] {
                    t += 1;
                    p += width;
                    continue;
                }
            }
            None => {}
        }
        match star {
            // Let the last `%` take one more character and try again.
            Some((sp, st)) => {
                star = Some((sp, st + 1));
                p = sp + 1;
                t = st + 1;
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == '%')
}

/// `--since`: a time as the records write it.
pub fn parse_time(text: &str) -> Result<String, String> {
    parse(text, false)
}

/// `--until`: a date alone means the end of that day.
pub fn parse_until(text: &str) -> Result<String, String> {
    parse(text, true)
}

fn parse(text: &str, end_of_day: bool) -> Result<String, String> {
    let time: DateTime<Utc> = if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        t.with_timezone(&Utc)
    } else if let Ok(t) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S") {
        t.and_utc()
    } else if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let t = if end_of_day {
            d.and_hms_micro_opt(23, 59, 59, 999_999)
        } else {
            d.and_hms_opt(0, 0, 0)
        };
        t.expect("a valid time of day").and_utc()
    } else {
        return Err(format!(
            "{text:?} is not a time: use 2026-12-01T09:00:00Z, 2026-12-01T09:00:00 (UTC) or \
             2026-12-01"
        ));
    };
    // The records' own form, so that times compare as text.
    Ok(time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Identity {
        Identity::Person {
            email: "alice@example.com".into(),
            subject: "s".into(),
            issuer: "i".into(),
            grant_id: 7,
            request_id: Some(12),
            approved_by: vec!["dana@example.com".into()],
        }
    }

    fn facts<'a>(identity: Option<&'a Identity>) -> Facts<'a> {
        Facts {
            identity,
            user: None,
            database: Some("rates"),
            start: "2026-12-01T09:00:00.000000Z",
            end: "2026-12-01T10:00:00.000000Z",
        }
    }

    #[test]
    fn each_filter_keeps_only_its_sessions() {
        let alice = alice();
        let service = Identity::Service {
            name: "rates_api".into(),
        };
        let (a, s) = (facts(Some(&alice)), facts(Some(&service)));
        let all = Filter::default();
        assert!(all.matches(&a) && all.matches(&s));

        let f = |edit: fn(&mut Filter)| {
            let mut f = Filter::default();
            edit(&mut f);
            (f.matches(&a), f.matches(&s))
        };
        assert_eq!(
            f(|f| f.email = Some("ALICE@example.com".into())),
            (true, false)
        );
        assert_eq!(
            f(|f| f.email = Some("bob@example.com".into())),
            (false, false)
        );
        assert_eq!(f(|f| f.grant = Some(7)), (true, false));
        assert_eq!(f(|f| f.grant = Some(8)), (false, false));
        assert_eq!(f(|f| f.request = Some(12)), (true, false));
        assert_eq!(f(|f| f.request = Some(7)), (false, false));
        assert_eq!(f(|f| f.database = Some("rates".into())), (true, true));
        assert_eq!(f(|f| f.database = Some("dbgw".into())), (false, false));

        // A refused login has no identity: it is found by the user it tried.
        let refused = Facts {
            user: Some("alice@example.com"),
            ..facts(None)
        };
        let by_email = Filter {
            email: Some("alice@example.com".into()),
            ..Filter::default()
        };
        assert!(by_email.matches(&refused));
        let by_grant = Filter {
            grant: Some(7),
            ..Filter::default()
        };
        assert!(!by_grant.matches(&refused));
    }

    #[test]
    fn since_and_until_keep_sessions_that_overlap_the_period() {
        let alice = alice();
        let s = facts(Some(&alice)); // 09:00 to 10:00 on 2026-12-01
        let period = |since: &str, until: &str| Filter {
            since: Some(parse_time(since).unwrap()),
            until: Some(parse_until(until).unwrap()),
            ..Filter::default()
        };
        assert!(period("2026-12-01", "2026-12-01").matches(&s));
        assert!(period("2026-12-01T09:30:00Z", "2026-12-01T09:40:00Z").matches(&s));
        assert!(period("2026-12-01T10:00:00Z", "2026-12-02").matches(&s));
        assert!(!period("2026-12-01T10:00:01Z", "2026-12-02").matches(&s));
        assert!(!period("2026-11-30", "2026-11-30").matches(&s));
        assert!(!period("2026-11-30", "2026-12-01T08:59:59").matches(&s));
        // Another offset is the same instant.
        assert!(period("2026-12-01T11:00:00+02:00", "2026-12-02").matches(&s));
        assert!(parse_time("yesterday").is_err());
        assert_eq!(
            parse_until("2026-12-01").unwrap(),
            "2026-12-01T23:59:59.999999Z"
        );
    }

    #[test]
    fn statement_like_is_ilike() {
        let f = Filter {
            statement_like: Some("%from NOTES%".into()),
            ..Filter::default()
        };
        assert!(f.statement_matches("SELECT * FROM notes WHERE id = 1"));
        assert!(!f.statement_matches("SELECT 1"));
        assert!(Filter::default().statement_matches("anything"));
        assert!(ilike("COPY notes FROM STDIN", "copy%"));
        assert!(!ilike("xCOPY", "copy%"));
        assert!(ilike("abc", "a_c"));
        assert!(!ilike("abbc", "a_c"));
        assert!(ilike("100%", "100\\%"));
        assert!(!ilike("1000", "100\\%"));
        assert!(ilike("a%b%c", "a%c"));
        assert!(ilike("", "%"));
        assert!(!ilike("", "_"));
        assert!(ilike("mississippi", "%iss%ppi"));
    }
}
