//! Password literals are replaced before a record is written: `CREATE|ALTER ROLE|USER|GROUP
//! ... PASSWORD '...'` (psql's `\password` sends a SCRAM verifier there), `password` options
//! of user mappings (quoted or not), and the connection string of `CREATE|ALTER
//! SUBSCRIPTION ... CONNECTION '...'`.
//!
//! Redaction must never hide code. The literal is found with the same lexer that splits
//! statements, under the pinned settings; if the text would lex differently with
//! backslash escapes on (`standard_conforming_strings = off`), or holds a multi-byte
//! character right before a byte that a client-only encoding (SJIS, BIG5, GBK...) could
//! take as part of it, the statement is [`Redaction::Ambiguous`]: the proxy refuses it
//! rather than guess which bytes the server reads as the literal.
//!
//! What cannot be redacted: a password built at run time (string concatenation, `format()`,
//! dynamic SQL in a `DO` block or function) is not a literal after `PASSWORD`.

use std::ops::Range;

use super::lexer::{Kind, Lexer, Mode};

/// What replaces a redacted literal.
pub const REDACTED: &str = "'[REDACTED]'";

#[derive(Debug, PartialEq, Eq)]
pub enum Redaction {
    /// Nothing to hide.
    Clean,
    /// The text with its secrets replaced.
    Redacted(String),
    /// Secrets whose extent depends on settings: the text with every candidate span
    /// replaced, for a record of a statement that is refused.
    Ambiguous(String),
}

/// Redacts `text` (a whole Query string or a Parse text).
pub fn redact(text: &str) -> Redaction {
    if !might_hold_secret(text) {
        return Redaction::Clean;
    }
    let on = spans(text, Mode::PINNED);
    let off = spans(text, Mode::BACKSLASH_ESCAPES);
    if on.is_empty() && off.is_empty() {
        return Redaction::Clean;
    }
    if on != off || encoding_ambiguous(text) {
        let mut all = on;
        all.extend(off);
        return Redaction::Ambiguous(replace(text, all));
    }
    Redaction::Redacted(replace(text, on))
}

/// A cheap test before lexing: the words that introduce a secret.
fn might_hold_secret(text: &str) -> bool {
    let b = text.as_bytes();
    b.windows(8)
        .any(|w| w.eq_ignore_ascii_case(b"password") || w.eq_ignore_ascii_case(b"connecti"))
}

/// True when a multi-byte character is followed by a byte that a client-only multi-byte
/// encoding could read as its second byte and that matters to the lexer (`\`, or a string
/// prefix letter before a quote).
fn encoding_ambiguous(text: &str) -> bool {
    let b = text.as_bytes();
    b.windows(3).any(|w| {
        w[0] >= 0x80
            && (w[1] == b'\\'
                || (matches!(
                    w[1],
                    b'e' | b'E' | b'n' | b'N' | b'b' | b'B' | b'x' | b'X' | b'u' | b'U'
                ) && matches!(w[2], b'\'' | b'&')))
    }) || b.len() >= 2 && b[b.len() - 2] >= 0x80 && b[b.len() - 1] == b'\\'
}

/// Byte ranges of the secret literals of `text` lexed with `mode`.
fn spans(text: &str, mode: Mode) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut words = 0usize;
    let mut create_or_alter = false;
    let mut subscription = false;
    let mut prev: Option<(Kind, &str)> = None;
    for t in Lexer::new(text, mode).filter(|t| t.is_code()) {
        let s = t.text(text);
        if t.kind == Kind::Semicolon {
            words = 0;
            create_or_alter = false;
            subscription = false;
            prev = None;
            continue;
        }
        if t.kind == Kind::Word {
            match words {
                0 => {
                    create_or_alter =
                        s.eq_ignore_ascii_case("create") || s.eq_ignore_ascii_case("alter")
                }
                1 => subscription = s.eq_ignore_ascii_case("subscription"),
                _ => {}
            }
            words += 1;
        }
        if t.kind == Kind::String && create_or_alter {
            let secret = match prev {
                Some((Kind::Word, w)) => {
                    w.eq_ignore_ascii_case("password")
                        || (subscription && w.eq_ignore_ascii_case("connection"))
                }
                Some((Kind::QuotedIdent, q)) => q == "\"password\"",
                _ => false,
            };
            if secret {
                out.push(t.start..t.end);
            }
        }
        prev = Some((t.kind, s));
    }
    out
}

/// `text` with each span replaced by [`REDACTED`]; overlapping spans merge.
pub(super) fn replace(text: &str, mut spans: Vec<Range<usize>>) -> String {
    spans.sort_by_key(|r| r.start);
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for r in spans {
        if r.end <= at {
            continue;
        }
        let start = r.start.max(at);
        out.push_str(&text[at..start]);
        if start == r.start {
            out.push_str(REDACTED);
        }
        at = r.end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redacted(text: &str) -> String {
        match redact(text) {
            Redaction::Redacted(s) => s,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn redacts_role_passwords_in_every_literal_form() {
        for (input, hidden) in [
            ("ALTER USER bob PASSWORD 'hunter2'", "hunter2"),
            (
                "alter role bob with encrypted password 'SCRAM-SHA-256$4096:abc'",
                "SCRAM",
            ),
            ("CREATE ROLE bob LOGIN PASSWORD E'it\\'s me'", "it"),
            (
                "CREATE ROLE bob PASSWORD $p$se'cret$p$ VALID UNTIL 'infinity'",
                "se'cret",
            ),
            ("ALTER\x0bROLE bob\x0bPASSWORD\x0b'vt'", "vt"),
            ("ALTER ROLE bob PASSWORD 'ab'\n'cd'", "cd"),
            ("ALTER ROLE bob PASSWORD /* c */ 'x1'", "x1"),
            (
                "create user mapping for bob server s options (user 'bob', password 'pw1')",
                "pw1",
            ),
            (
                "ALTER USER MAPPING FOR bob SERVER s OPTIONS (SET \"password\" 'pw2')",
                "pw2",
            ),
            (
                "CREATE SUBSCRIPTION s CONNECTION 'host=h password=pw3' PUBLICATION p",
                "pw3",
            ),
            ("select 1; ALTER ROLE bob PASSWORD 'pw4'", "pw4"),
        ] {
            let out = redacted(input);
            assert!(!out.contains(hidden), "{input} -> {out}");
            assert!(out.contains(REDACTED), "{input} -> {out}");
        }
        assert_eq!(
            redacted("ALTER ROLE bob PASSWORD 'x' VALID UNTIL '2030-01-01'"),
            "ALTER ROLE bob PASSWORD '[REDACTED]' VALID UNTIL '2030-01-01'"
        );
    }

    #[test]
    fn leaves_other_text_alone() {
        for text in [
            "select 'password'",
            "ALTER ROLE bob PASSWORD NULL",
            "update users set password = 'x'",
            "select 1",
            "SELECT \"password\" FROM t WHERE c = 'x'",
        ] {
            assert_eq!(redact(text), Redaction::Clean, "{text}");
        }
    }

    #[test]
    fn never_hides_code_that_another_setting_would_run() {
        // With backslash escapes the literal is '\'' and the DROP runs; without them, the
        // literal swallows the DROP. The proxy cannot tell which one the server will see.
        let text = "ALTER ROLE bob PASSWORD '\\'' ; DROP TABLE t; --'";
        assert!(matches!(redact(text), Redaction::Ambiguous(_)));
        let text = "ALTER ROLE bob PASSWORD 'a\\' ; DROP TABLE t; --'";
        match redact(text) {
            Redaction::Ambiguous(record) => assert!(!record.contains("a\\")),
            other => panic!("{other:?}"),
        }
        // A multi-byte character before a backslash: SJIS would read them as one.
        assert!(matches!(
            redact("ALTER ROLE bob PASSWORD E'\u{c1}\\' ; DROP TABLE t; --'"),
            Redaction::Ambiguous(_)
        ));
        // Backslashes that both settings read the same way are fine.
        assert!(matches!(
            redact("ALTER ROLE bob PASSWORD 'a\\b'"),
            Redaction::Redacted(_)
        ));
    }
}
