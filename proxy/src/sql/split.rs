//! The statements of a simple-query string, as the server runs them one by one.
//!
//! PostgreSQL parses the whole string first (with the settings in force when the Query
//! arrives), then runs each statement: a `;` ends a statement, except inside the body of a
//! `CREATE FUNCTION|PROCEDURE ... BEGIN ATOMIC ... END`. Empty statements (`;;`, or only
//! comments) are dropped; a string with none is answered by EmptyQueryResponse. If any part
//! of the string does not parse, nothing runs, so how such a string splits does not matter.
//!
//! The split is an annotation of the audit record, which always holds the whole text.

use std::ops::Range;

use super::lexer::{Kind, Lexer, Mode};

/// Byte ranges of the statements of `sql`, each trimmed of surrounding whitespace and
/// comments.
pub fn statements(sql: &str, mode: Mode) -> Vec<Range<usize>> {
    // Fast path: no character that can start a literal, comment or quoted name, so every
    // `;` ends a statement unless a routine body is in play.
    if !sql
        .bytes()
        .any(|b| matches!(b, b'\'' | b'"' | b'$' | b'-' | b'/' | b';'))
    {
        let t = trim(sql, 0..sql.len());
        return if t.is_empty() { vec![] } else { vec![t] };
    }
    let mut out = Vec::new();
    let mut current: Option<Range<usize>> = None;
    let mut body = Body::default();
    for t in Lexer::new(sql, mode) {
        match t.kind {
            Kind::Space | Kind::Comment => {}
            Kind::Semicolon if body.depth == 0 => {
                out.extend(current.take());
                body = Body::default();
            }
            _ => {
                if t.kind == Kind::Word {
                    body.word(t.text(sql));
                }
                match &mut current {
                    Some(r) => r.end = t.end,
                    None => current = Some(t.start..t.end),
                }
            }
        }
    }
    out.extend(current);
    out
}

/// `r` without leading and trailing whitespace (comments are kept when inside).
fn trim(sql: &str, r: Range<usize>) -> Range<usize> {
    let s = &sql.as_bytes()[r.clone()];
    let lead = s.iter().take_while(|&&b| super::lexer::is_space(b)).count();
    let trail = s[lead..]
        .iter()
        .rev()
        .take_while(|&&b| super::lexer::is_space(b))
        .count();
    r.start + lead..r.end - trail
}

/// Tracks whether the statement is inside a `BEGIN ATOMIC` routine body, where `;` does
/// not end it: after `CREATE [OR REPLACE] FUNCTION|PROCEDURE`, `BEGIN ATOMIC` opens the
/// body, `CASE` opens a nested `... END`, `END` closes one level.
#[derive(Default)]
struct Body {
    /// Leading words seen (up to 4), to recognise CREATE [OR REPLACE] FUNCTION|PROCEDURE.
    words: usize,
    routine: bool,
    create: bool,
    or_replace: u8,
    /// The previous word was BEGIN.
    begin: bool,
    depth: u32,
}

impl Body {
    fn word(&mut self, w: &str) {
        let is = |k: &str| w.eq_ignore_ascii_case(k);
        if self.words < 4 {
            match (self.words, self.or_replace) {
                (0, _) => self.create = is("create"),
                (1, _) if self.create && is("or") => self.or_replace = 1,
                (2, 1) if is("replace") => self.or_replace = 2,
                (1, 0) | (3, 2) if self.create => self.routine = is("function") || is("procedure"),
                _ => {}
            }
            self.words += 1;
        }
        if !self.routine {
            return;
        }
        if (self.begin && is("atomic")) || (self.depth > 0 && is("case")) {
            self.depth += 1;
        } else if self.depth > 0 && is("end") {
            self.depth -= 1;
        }
        self.begin = self.depth == 0 && is("begin");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(sql: &str) -> Vec<&str> {
        statements(sql, Mode::PINNED)
            .into_iter()
            .map(|r| &sql[r])
            .collect()
    }

    #[test]
    fn splits_on_semicolons_outside_literals_and_comments() {
        assert_eq!(split("select 1; select 2"), ["select 1", "select 2"]);
        assert_eq!(split("select 1;;  ;select 2;"), ["select 1", "select 2"]);
        assert_eq!(split("select ';'; x"), ["select ';'", "x"]);
        assert_eq!(split("select e'\\';'; x"), ["select e'\\';'", "x"]);
        assert_eq!(split("select $t$;$$;$t$; x"), ["select $t$;$$;$t$", "x"]);
        assert_eq!(split("select \"a;b\"; x"), ["select \"a;b\"", "x"]);
        assert_eq!(split("select 1 -- ; no\n; x"), ["select 1", "x"]);
        assert_eq!(split("  -- only a comment\n"), Vec::<&str>::new());
        assert_eq!(split(""), Vec::<&str>::new());
        assert_eq!(split("select 'ünï;cödé'; x"), ["select 'ünï;cödé'", "x"]);
    }

    #[test]
    fn a_carriage_return_ends_a_comment() {
        // The case that let a statement slip past the old splitter.
        let sql = "SELECT 'x'; -- c\rCREATE TEMP TABLE evil (a int)";
        assert_eq!(split(sql), ["SELECT 'x'", "CREATE TEMP TABLE evil (a int)"]);
        assert_eq!(
            split("SELECT 1; /* c */\x0bSELECT 2"),
            ["SELECT 1", "SELECT 2"]
        );
    }

    #[test]
    fn keeps_begin_atomic_bodies_whole() {
        let f = "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC \
                 SELECT 1; SELECT CASE WHEN true THEN 2 END; END";
        assert_eq!(split(&format!("{f}; select 3")), [f, "select 3"]);
        let p = "create procedure p() begin atomic insert into t values (1); end";
        assert_eq!(split(&format!("{p};select 1")), [p, "select 1"]);
        assert_eq!(split("begin; select 1; end;"), ["begin", "select 1", "end"]);
    }
}
