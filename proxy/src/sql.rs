//! Just enough SQL lexing for the audit: split a simple-query string into the statements the
//! server will run one by one, and redact password literals before a record is written.
//!
//! The lexer knows the token kinds that can hide a semicolon or a quote: string literals in
//! every form (`'..'`, `E'..'`, `$tag$..$tag$`), quoted identifiers, and both comment styles.
//! Semicolons inside parentheses or inside a `BEGIN ATOMIC ... END` function body (detected
//! as psql does) do not end a statement.

use std::borrow::Cow;
use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Space,
    Comment,
    /// A string literal; `escapes` when backslash escapes apply (`E'..'`).
    Literal,
    Word,
    QuotedIdent,
    Semicolon,
    Open,
    Close,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    kind: Kind,
    span: Range<usize>,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_char(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// End of a quoted run starting after the opening quote at `i`; `''` (or the quote doubled)
/// continues it, and with `backslash` so does `\<any>`.
fn quoted_end(s: &[u8], mut i: usize, quote: u8, backslash: bool) -> usize {
    while i < s.len() {
        let b = s[i];
        if backslash && b == b'\\' {
            i += 2;
        } else if b == quote {
            if s.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    s.len()
}

/// `$tag$` at `i`, if one starts there: the tag's length including both dollars.
fn dollar_tag(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if j < s.len() && s[j] != b'$' {
        if !is_ident_start(s[j]) {
            return None;
        }
        while j < s.len() && is_ident_char(s[j]) && s[j] != b'$' {
            j += 1;
        }
    }
    (s.get(j) == Some(&b'$')).then_some(j + 1 - i)
}

fn tokens(sql: &str) -> Vec<Token> {
    let s = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let start = i;
        let b = s[i];
        let kind = if b.is_ascii_whitespace() {
            while i < s.len() && s[i].is_ascii_whitespace() {
                i += 1;
            }
            Kind::Space
        } else if b == b'-' && s.get(i + 1) == Some(&b'-') {
            while i < s.len() && s[i] != b'\n' {
                i += 1;
            }
            Kind::Comment
        } else if b == b'/' && s.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < s.len() {
                if s[i] == b'/' && s.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if s[i] == b'*' && s.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            Kind::Comment
        } else if b == b'\'' {
            i = quoted_end(s, i + 1, b'\'', false);
            Kind::Literal
        } else if (b == b'E' || b == b'e') && s.get(i + 1) == Some(&b'\'') {
            i = quoted_end(s, i + 2, b'\'', true);
            Kind::Literal
        } else if matches!(b, b'B' | b'b' | b'X' | b'x' | b'N' | b'n')
            && s.get(i + 1) == Some(&b'\'')
        {
            i = quoted_end(s, i + 2, b'\'', false);
            Kind::Literal
        } else if (b == b'U' || b == b'u')
            && s.get(i + 1) == Some(&b'&')
            && s.get(i + 2) == Some(&b'\'')
        {
            i = quoted_end(s, i + 3, b'\'', false);
            Kind::Literal
        } else if (b == b'U' || b == b'u')
            && s.get(i + 1) == Some(&b'&')
            && s.get(i + 2) == Some(&b'"')
        {
            i = quoted_end(s, i + 3, b'"', false);
            Kind::QuotedIdent
        } else if b == b'"' {
            i = quoted_end(s, i + 1, b'"', false);
            Kind::QuotedIdent
        } else if b == b'$' {
            match dollar_tag(s, i) {
                Some(len) => {
                    let tag = &s[i..i + len];
                    let body = i + len;
                    i = s[body..]
                        .windows(len)
                        .position(|w| w == tag)
                        .map(|p| body + p + len)
                        .unwrap_or(s.len());
                    Kind::Literal
                }
                None => {
                    i += 1;
                    while i < s.len() && s[i].is_ascii_digit() {
                        i += 1;
                    }
                    Kind::Other
                }
            }
        } else if is_ident_start(b) {
            while i < s.len() && is_ident_char(s[i]) {
                i += 1;
            }
            Kind::Word
        } else {
            i += 1;
            match b {
                b';' => Kind::Semicolon,
                b'(' | b'[' => Kind::Open,
                b')' | b']' => Kind::Close,
                _ => Kind::Other,
            }
        };
        // Never split a multi-byte character: token ends always land on ASCII or the end.
        out.push(Token {
            kind,
            span: start..i.min(s.len()),
        });
    }
    out
}

/// Tracks psql's heuristic for `CREATE [OR REPLACE] FUNCTION|PROCEDURE ... BEGIN ATOMIC`.
#[derive(Default)]
struct Atomic {
    words: usize,
    leading: [u8; 4],
    depth: u32,
}

impl Atomic {
    fn word(&mut self, word: &str, paren_depth: i32) {
        let lower = word.to_ascii_lowercase();
        if self.words < 4 {
            self.leading[self.words] = match lower.as_str() {
                "create" | "function" | "procedure" | "or" | "replace" => lower.as_bytes()[0],
                _ => 0,
            };
        }
        self.words += 1;
        let l = &self.leading;
        let creates_routine = l[0] == b'c'
            && (l[1] == b'f'
                || l[1] == b'p'
                || (l[1] == b'o' && l[2] == b'r' && (l[3] == b'f' || l[3] == b'p')));
        if creates_routine && paren_depth == 0 {
            match lower.as_str() {
                "begin" => self.depth += 1,
                "case" if self.depth > 0 => self.depth += 1,
                "end" if self.depth > 0 => self.depth -= 1,
                _ => {}
            }
        }
    }
}

/// The statements of a simple-query string, in order, each trimmed. Pieces holding only
/// whitespace and comments are not statements (the server skips them too).
pub fn split(sql: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut has_code = false;
    let mut parens = 0i32;
    let mut atomic = Atomic::default();
    for t in tokens(sql) {
        match t.kind {
            Kind::Semicolon if parens <= 0 && atomic.depth == 0 => {
                if has_code {
                    out.push(sql[start..t.span.start].trim());
                }
                start = t.span.end;
                has_code = false;
                parens = 0;
                atomic = Atomic::default();
            }
            Kind::Space | Kind::Comment => {}
            kind => {
                has_code = true;
                match kind {
                    Kind::Open => parens += 1,
                    Kind::Close => parens -= 1,
                    Kind::Word => atomic.word(&sql[t.span.clone()], parens),
                    _ => {}
                }
            }
        }
    }
    if has_code {
        out.push(sql[start..].trim());
    }
    out
}

/// What replaces a redacted literal.
pub const REDACTED: &str = "'[REDACTED]'";

/// Replaces password literals in role statements (`CREATE|ALTER ROLE|USER|GROUP ...
/// PASSWORD '...'`, as psql's `\password` sends) and in user mappings (`OPTIONS (password
/// '...')`). Returns the text unchanged, borrowed, when there is nothing to hide.
pub fn redact(statement: &str) -> Cow<'_, str> {
    // Fast exit for the common case: only statements starting with CREATE or ALTER (after
    // optional comments) can hold a role password.
    match statement.trim_start().as_bytes().first() {
        Some(b'c' | b'C' | b'a' | b'A' | b'-' | b'/') => {}
        _ => return Cow::Borrowed(statement),
    }
    let toks: Vec<Token> = tokens(statement)
        .into_iter()
        .filter(|t| !matches!(t.kind, Kind::Space | Kind::Comment))
        .collect();
    let word = |i: usize| -> Option<String> {
        let t = toks.get(i)?;
        (t.kind == Kind::Word).then(|| statement[t.span.clone()].to_ascii_lowercase())
    };
    let verb = word(0);
    let object = word(1);
    let sensitive = matches!(verb.as_deref(), Some("create" | "alter"))
        && matches!(object.as_deref(), Some("role" | "user" | "group"));
    if !sensitive {
        return Cow::Borrowed(statement);
    }
    let mut hide: Vec<Range<usize>> = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        if t.kind == Kind::Word && statement[t.span.clone()].eq_ignore_ascii_case("password") {
            if let Some(next) = toks.get(i + 1) {
                if next.kind == Kind::Literal {
                    hide.push(next.span.start..literal_end_any_mode(statement, next));
                }
            }
        }
    }
    if hide.is_empty() {
        return Cow::Borrowed(statement);
    }
    let mut out = String::with_capacity(statement.len());
    let mut at = 0;
    for r in hide {
        if r.start < at {
            continue;
        }
        out.push_str(&statement[at..r.start]);
        out.push_str(REDACTED);
        at = r.end;
    }
    out.push_str(&statement[at..]);
    Cow::Owned(out)
}

/// Where a `'...'` literal ends if backslashes escape quotes (`standard_conforming_strings
/// = off`) or if they do not, whichever is later, so that no part of a secret survives
/// whatever the session's setting.
fn literal_end_any_mode(sql: &str, t: &Token) -> usize {
    let s = sql.as_bytes();
    let quote_at = s[t.span.start..t.span.end].iter().position(|&b| b == b'\'');
    match quote_at {
        Some(q) if s[t.span.start] != b'$' => {
            let open = t.span.start + q + 1;
            t.span.end.max(quoted_end(s, open, b'\'', true))
        }
        _ => t.span.end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_top_level_semicolons_only() {
        assert_eq!(split("select 1; select 2"), vec!["select 1", "select 2"]);
        assert_eq!(
            split("select 1;;  ;select 2;"),
            vec!["select 1", "select 2"]
        );
        assert_eq!(
            split("select ';'; select 2"),
            vec!["select ';'", "select 2"]
        );
        assert_eq!(split("select e'\\';'; x"), vec!["select e'\\';'", "x"]);
        assert_eq!(
            split("select $$a;b$$, $t$;$$;$t$; x"),
            vec!["select $$a;b$$, $t$;$$;$t$", "x"]
        );
        assert_eq!(split("select \"a;b\"; x"), vec!["select \"a;b\"", "x"]);
        assert_eq!(
            split("select 1 -- ; no\n; x"),
            vec!["select 1 -- ; no", "x"]
        );
        assert_eq!(
            split("select /* ; /* ; */ ; */ 1; x"),
            vec!["select /* ; /* ; */ ; */ 1", "x"]
        );
        assert_eq!(split("select $1; x"), vec!["select $1", "x"]);
        assert_eq!(split("select a$b; x"), vec!["select a$b", "x"]);
        assert_eq!(split("  -- only a comment\n"), Vec::<&str>::new());
        assert_eq!(split(""), Vec::<&str>::new());
        assert_eq!(
            split("select 'unterminated; x"),
            vec!["select 'unterminated; x"]
        );
        assert_eq!(
            split("select 'ünï;cödé'; x"),
            vec!["select 'ünï;cödé'", "x"]
        );
    }

    #[test]
    fn keeps_begin_atomic_bodies_whole() {
        let f = "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC \
                 SELECT 1; SELECT CASE WHEN true THEN 2 END; END";
        assert_eq!(split(&format!("{f}; select 3")), vec![f, "select 3"]);
        let p = "create procedure p() begin atomic insert into t values (1); end";
        assert_eq!(split(&format!("{p};select 1")), vec![p, "select 1"]);
        // BEGIN as a transaction command is not a routine body.
        assert_eq!(
            split("begin; select 1; end;"),
            vec!["begin", "select 1", "end"]
        );
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
            ("ALTER ROLE bob PASSWORD 'a\\' b'", "b'"),
            (
                "create user mapping for bob server s options (user 'bob', password 'pw1')",
                "pw1",
            ),
        ] {
            let out = redact(input);
            assert!(!out.contains(hidden), "{input} -> {out}");
            assert!(out.contains(REDACTED), "{input} -> {out}");
        }
        assert_eq!(
            redact("ALTER ROLE bob PASSWORD 'x' VALID UNTIL '2030-01-01'"),
            "ALTER ROLE bob PASSWORD '[REDACTED]' VALID UNTIL '2030-01-01'"
        );
        assert!(matches!(redact("select 'password'"), Cow::Borrowed(_)));
        assert!(matches!(
            redact("ALTER ROLE bob PASSWORD NULL"),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            redact("update users set password = 'x'"),
            Cow::Borrowed(_)
        ));
    }
}
