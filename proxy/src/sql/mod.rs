//! What the audit needs to know about SQL text before it is forwarded, from PostgreSQL's
//! own lexical rules ([`lexer`]): the statements of a query string ([`split`]), the text
//! with password literals replaced ([`redact`]), and a few facts about the statements that
//! decide how the relay treats them ([`inspect`]).
//!
//! The proxy pins `client_encoding = UTF8` and `standard_conforming_strings = on` for every
//! session, so all text is lexed with [`Mode::PINNED`]; statements that would change either
//! are refused, and a change the server reports anyway ends the session.

pub mod lexer;
pub mod read_only;
pub mod redact;
pub mod split;

use crate::protocol::sqlstate;
use std::borrow::Cow;
use std::ops::Range;

pub use lexer::Mode;
use lexer::{Kind, Lexer};
pub use redact::{Redaction, REDACTED};

/// Who sent the text: people may not do everything services may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Service,
    Person,
}

/// Why the proxy refuses to forward a text. Each maps to an SQLSTATE and a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A password literal whose extent depends on settings (see [`redact`]).
    AmbiguousSecret,
    /// A statement that would change `client_encoding` or `standard_conforming_strings`.
    ChangesLexing,
    /// A person changing a role's password: their role's password belongs to dbgw.
    PasswordChange,
    /// A person switching roles: their session runs as the role of the grant it was opened
    /// under, so it holds exactly what that grant gives.
    RoleChange,
    /// In a read-only session: a statement that would turn read-only off.
    ReadOnly,
    /// In a read-only session: `DO` or `CALL`, which may commit and go on in a new
    /// transaction whose mode the proxy cannot see in time.
    ReadOnlyCode,
    /// In a read-only session: a statement after one that ends the transaction, in the same
    /// message or before the next Sync.
    ReadOnlyAfterTransactionEnd,
}

impl Refusal {
    pub fn sqlstate(self) -> &'static str {
        match self {
            Refusal::AmbiguousSecret => sqlstate::FEATURE_NOT_SUPPORTED,
            Refusal::ChangesLexing => sqlstate::FEATURE_NOT_SUPPORTED,
            Refusal::PasswordChange | Refusal::RoleChange => sqlstate::INSUFFICIENT_PRIVILEGE,
            Refusal::ReadOnly | Refusal::ReadOnlyCode | Refusal::ReadOnlyAfterTransactionEnd => {
                sqlstate::READ_ONLY_SQL_TRANSACTION
            }
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::AmbiguousSecret => {
                "dbgw refuses a password literal that PostgreSQL could read in two ways \
                 (a backslash, or a multi-byte character next to it): write it without \
                 backslashes, or use psql's \\password"
            }
            Refusal::ChangesLexing => {
                "dbgw pins client_encoding = UTF8 and standard_conforming_strings = on: \
                 statements that change them are refused"
            }
            Refusal::PasswordChange => {
                "a person's database password is managed by dbgw and cannot be changed \
                 through it"
            }
            Refusal::RoleChange => {
                "a person's session runs as the role of its grant and holds exactly what the \
                 grant gives: dbgw refuses switching roles"
            }
            Refusal::ReadOnly => {
                "this session is read-only (its grant's policy): dbgw refuses statements that \
                 turn read-only off (READ WRITE, SET or RESET of default_transaction_read_only \
                 or transaction_read_only, RESET ALL, set_config of them)"
            }
            Refusal::ReadOnlyCode => {
                "this session is read-only (its grant's policy): dbgw refuses DO and CALL, \
                 which can commit and go on in a new transaction"
            }
            Refusal::ReadOnlyAfterTransactionEnd => {
                "this session is read-only (its grant's policy): dbgw refuses statements after \
                 COMMIT or ROLLBACK in the same message (or before the next Sync): send them \
                 separately"
            }
        }
    }
}

/// SQL-level commands that change the server's prepared statements or portals behind the
/// protocol's back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Touches {
    /// PREPARE, DEALLOCATE, DISCARD.
    pub statements: bool,
    /// DECLARE, CLOSE, DISCARD.
    pub portals: bool,
}

/// What the relay learns from a text before forwarding it.
#[derive(Debug)]
pub struct Inspection<'a> {
    /// The text as the record holds it (secrets replaced).
    pub text: Cow<'a, str>,
    pub redacted: bool,
    /// The statements of `text`, as byte ranges of it.
    pub statements: Vec<Range<usize>>,
    /// A statement starts with COPY (it may read data from the client).
    pub copy: bool,
    pub touches: Touches,
    pub refuse: Option<Refusal>,
}

/// Inspects a Query string or a Parse text.
pub fn inspect(text: &str, caller: Caller) -> Inspection<'_> {
    let (text, redacted, mut refuse) = match redact::redact(text) {
        Redaction::Clean => (Cow::Borrowed(text), false, None),
        Redaction::Redacted(t) => (Cow::Owned(t), true, None),
        Redaction::Ambiguous(t) => (Cow::Owned(t), true, Some(Refusal::AmbiguousSecret)),
    };
    let statements = split::statements(&text, Mode::PINNED);
    let mut copy = false;
    let mut touches = Touches::default();
    for r in &statements {
        let stmt = &text[r.clone()];
        let mut words = Lexer::new(stmt, Mode::PINNED).filter(|t| t.is_code());
        let Some(first) = words.next() else { continue };
        let is = |t: &lexer::Token, k: &str| {
            t.kind == Kind::Word && t.text(stmt).eq_ignore_ascii_case(k)
        };
        if is(&first, "copy") {
            copy = true;
        } else if is(&first, "prepare") || is(&first, "deallocate") {
            touches.statements = true;
        } else if is(&first, "declare") || is(&first, "close") {
            touches.portals = true;
        } else if is(&first, "discard") {
            touches.statements = true;
            touches.portals = true;
        } else if refuse.is_none() {
            refuse = refusal(stmt, &first, caller);
        }
    }
    let (mut text, mut redacted) = (text, redacted);
    // A person's password change or role switch at a depth the top-level check cannot see:
    // SQL inside a string (a DO body, a function body, EXECUTE of a literal or a format()
    // template). Only persons pay for this, and only when the word is there at all.
    if caller == Caller::Person && refuse.is_none() {
        if contains_ignore_case(&text, b"password") {
            if let Some(hidden) = nested_password_change(&text) {
                text = Cow::Owned(hidden);
                redacted = true;
                refuse = Some(Refusal::PasswordChange);
            }
        }
        if refuse.is_none() && contains_ignore_case(&text, b"role") && nested_role_change(&text, 0)
        {
            refuse = Some(Refusal::RoleChange);
        }
    }
    Inspection {
        text,
        redacted,
        statements,
        copy,
        touches,
        refuse,
    }
}

/// Settings whose change would make the proxy lex text differently from the server.
const PINNED_SETTINGS: [&str; 3] = ["client_encoding", "names", "standard_conforming_strings"];

fn refusal(stmt: &str, first: &lexer::Token, caller: Caller) -> Option<Refusal> {
    let word =
        |t: &lexer::Token, k: &str| t.kind == Kind::Word && t.text(stmt).eq_ignore_ascii_case(k);
    // Most statements need no more than their first word: lex the rest only when it could
    // matter.
    let person_alter = caller == Caller::Person && word(first, "alter");
    if !word(first, "set") && !person_alter && !contains_ignore_case(stmt, b"set_config") {
        return None;
    }
    let mut rest = Lexer::new(&stmt[first.end..], Mode::PINNED)
        .filter(|t| t.is_code())
        .map(|t| lexer::Token {
            start: t.start + first.end,
            end: t.end + first.end,
            ..t
        });
    if word(first, "set") {
        let mut next = rest.next()?;
        if word(&next, "session") || word(&next, "local") {
            next = rest.next()?;
        }
        let name = unquote(next.text(stmt));
        if caller == Caller::Person
            && (name.eq_ignore_ascii_case("role") || name.eq_ignore_ascii_case("authorization"))
        {
            return Some(Refusal::RoleChange);
        }
        return PINNED_SETTINGS
            .iter()
            .any(|s| name.eq_ignore_ascii_case(s))
            .then_some(Refusal::ChangesLexing);
    }
    let tokens: Vec<lexer::Token> = rest.collect();
    if tokens.iter().any(|t| word(t, "set_config"))
        && tokens.iter().any(|t| {
            t.kind == Kind::String
                && PINNED_SETTINGS[..]
                    .iter()
                    .any(|s| t.text(stmt).trim_matches('\'').eq_ignore_ascii_case(s))
        })
    {
        return Some(Refusal::ChangesLexing);
    }
    if caller == Caller::Person
        && tokens.iter().any(|t| word(t, "set_config"))
        && tokens.iter().any(|t| {
            t.kind == Kind::String && t.text(stmt).trim_matches('\'').eq_ignore_ascii_case("role")
        })
    {
        return Some(Refusal::RoleChange);
    }
    if caller == Caller::Person
        && word(first, "alter")
        && tokens
            .first()
            .is_some_and(|t| word(t, "role") || word(t, "user"))
        && tokens.iter().any(|t| word(t, "password"))
    {
        return Some(Refusal::PasswordChange);
    }
    None
}

/// The start-up parameters sent upstream for a client's: `client_encoding` and
/// `standard_conforming_strings` pinned, whatever the client asked. A client asking for
/// another encoding or for backslash escapes in plain literals is refused (the error
/// names what it asked for); `SQL_ASCII` (psql in the C locale) is read as UTF-8, which
/// it is byte for byte on a UTF-8 database.
pub fn pinned_startup(params: &[(String, String)]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::with_capacity(params.len() + 2);
    for (k, v) in params {
        match k.as_str() {
            "client_encoding" => {
                let name: String = v
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .collect::<String>()
                    .to_ascii_lowercase();
                if !matches!(name.as_str(), "utf8" | "unicode" | "sqlascii") {
                    return Err(format!(
                        "dbgw requires client_encoding UTF8 (the client asked for {v}): set PGCLIENTENCODING=UTF8"
                    ));
                }
            }
            "standard_conforming_strings" => {
                if !matches!(v.to_ascii_lowercase().as_str(), "on" | "true" | "yes" | "1") {
                    return Err("dbgw requires standard_conforming_strings = on".into());
                }
            }
            "options" => {
                if let Some(name) =
                    options_settings(v).find(|n| PINNED_STARTUP.contains(&n.as_str()))
                {
                    return Err(format!("dbgw pins {name}: it cannot be set in options"));
                }
                out.push((k.clone(), v.clone()));
            }
            _ => out.push((k.clone(), v.clone())),
        }
    }
    out.push(("client_encoding".into(), "UTF8".into()));
    out.push(("standard_conforming_strings".into(), "on".into()));
    Ok(out)
}

const PINNED_STARTUP: [&str; 2] = ["client_encoding", "standard_conforming_strings"];

/// Whether a setting the server reports (ParameterStatus) keeps the value the proxy lexes
/// by.
pub fn keeps_pinned_value(name: &str, value: &str) -> bool {
    match name {
        "client_encoding" => value.eq_ignore_ascii_case("UTF8"),
        "standard_conforming_strings" => value == "on",
        _ => true,
    }
}

/// The setting names in a start-up `options` string (`-c name=value`, `-cname=value`,
/// `--name=value`; words split on unescaped whitespace, `\` escaping), normalised as the
/// server does (lower case, `-` read as `_`).
fn options_settings(options: &str) -> impl Iterator<Item = String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            c if c.is_ascii_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut names = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        let setting = if w == "-c" {
            i += 1;
            words.get(i).map(String::as_str)
        } else {
            w.strip_prefix("--").or_else(|| w.strip_prefix("-c"))
        };
        if let Some(s) = setting {
            let name = s.split('=').next().unwrap_or("");
            names.push(name.replace('-', "_").to_ascii_lowercase());
        }
        i += 1;
    }
    names.into_iter()
}

/// When a string constant of `text` (quoted or dollar-quoted) holds SQL that names a role's
/// password (the words `password` and `role` or `user`), the text with every string
/// constant replaced: the new password may be any of them (a `format()` argument), and
/// none is recorded. `None` when no string does.
fn nested_password_change(text: &str) -> Option<String> {
    let strings: Vec<Range<usize>> = Lexer::new(text, Mode::PINNED)
        .filter(|t| t.kind == Kind::String)
        .map(|t| t.start..t.end)
        .collect();
    let names_password =
        |s: &str| has_word(s, "password") && (has_word(s, "role") || has_word(s, "user"));
    if !strings.iter().any(|r| names_password(&text[r.clone()])) {
        return None;
    }
    Some(redact::replace(text, strings))
}

/// Whether SQL inside a string constant of `text` (at any depth: a DO body holding an
/// EXECUTE of a literal) switches roles: `SET [SESSION|LOCAL] ROLE`, `SET SESSION
/// AUTHORIZATION`, or `set_config('role', ...)`. A name built at run time from pieces is not
/// seen (docs/proxy.md says so).
fn nested_role_change(text: &str, depth: usize) -> bool {
    if depth > 4 {
        return false;
    }
    let tokens: Vec<lexer::Token> = Lexer::new(text, Mode::PINNED)
        .filter(|t| t.is_code())
        .collect();
    let word = |i: usize, k: &str| {
        tokens
            .get(i)
            .is_some_and(|t| t.kind == Kind::Word && t.text(text).eq_ignore_ascii_case(k))
    };
    for (i, t) in tokens.iter().enumerate() {
        if depth > 0 && word(i, "set") {
            let at = if word(i + 1, "session") || word(i + 1, "local") {
                i + 2
            } else {
                i + 1
            };
            if word(at, "role") || word(at, "authorization") {
                return true;
            }
        }
        if depth > 0
            && word(i, "set_config")
            && tokens[i + 1..].iter().take(3).any(|t| {
                t.kind == Kind::String && string_body(t.text(text)).eq_ignore_ascii_case("role")
            })
        {
            return true;
        }
        if t.kind == Kind::String && nested_role_change(&string_body(t.text(text)), depth + 1) {
            return true;
        }
    }
    false
}

/// The content of a string constant's token: quotes or dollar tags removed, doubled quotes
/// undone. (Escapes in `E'...'` are left as they are: enough to find words.)
fn string_body(token: &str) -> String {
    if let Some(after) = token.strip_prefix('$') {
        if let Some(end) = after.find('$') {
            let tag = &token[..end + 2];
            if let Some(body) = token[tag.len()..].strip_suffix(tag) {
                return body.to_string();
            }
        }
        return token.to_string();
    }
    match (token.find('\''), token.rfind('\'')) {
        (Some(a), Some(b)) if b > a => token[a + 1..b].replace("''", "'"),
        _ => token.to_string(),
    }
}

/// Makes the upstream session of a person run as `role`, the group role of their grant:
/// `-c role=...` added to the start-up `options`, so `RESET ROLE` and `DISCARD ALL` come
/// back to it. A client asking for a role itself (a `role` or `session_authorization`
/// parameter, in `options` or on its own) is refused.
pub fn run_as_role(extra: &mut Vec<(String, String)>, role: &str) -> Result<(), String> {
    if role.is_empty() || !role.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "the grant's role {role:?} cannot be set at start-up"
        ));
    }
    let sets_role = |name: &str| ROLE_SETTINGS.contains(&name.to_ascii_lowercase().as_str());
    for (k, v) in extra.iter() {
        if sets_role(k) || (k == "options" && options_settings(v).any(|n| sets_role(&n))) {
            return Err(format!(
                "dbgw sets a person's role from their grant: the start-up parameter {k} may not set it"
            ));
        }
    }
    let set = format!("-c role={role}");
    match extra.iter_mut().find(|(k, _)| k == "options") {
        Some((_, v)) => {
            v.push(' ');
            v.push_str(&set);
        }
        None => extra.push(("options".into(), set)),
    }
    Ok(())
}

/// Settings that choose who a session acts as.
const ROLE_SETTINGS: [&str; 2] = ["role", "session_authorization"];

/// `word` (ASCII, lower case) appears in `s` as a whole word, in any case.
fn has_word(s: &str, word: &str) -> bool {
    let b = s.as_bytes();
    let is_word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    b.windows(word.len()).enumerate().any(|(i, w)| {
        w.eq_ignore_ascii_case(word.as_bytes())
            && (i == 0 || !is_word(b[i - 1]))
            && b.get(i + word.len()).is_none_or(|&c| !is_word(c))
    })
}

fn contains_ignore_case(text: &str, word: &[u8]) -> bool {
    text.as_bytes()
        .windows(word.len())
        .any(|w| w.eq_ignore_ascii_case(word))
}

fn unquote(name: &str) -> &str {
    name.strip_prefix('"')
        .and_then(|n| n.strip_suffix('"'))
        .unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_about_statements() {
        let i = inspect(
            "select 1; COPY t FROM STDIN; -- x\r DISCARD ALL",
            Caller::Service,
        );
        assert_eq!(i.statements.len(), 3);
        assert!(i.copy);
        assert_eq!(
            i.touches,
            Touches {
                statements: true,
                portals: true
            }
        );
        assert_eq!(i.refuse, None);
        let i = inspect("/* c */ copy t to stdout", Caller::Service);
        assert!(i.copy);
        assert!(!inspect("select 'copy'", Caller::Service).copy);
    }

    #[test]
    fn lexing_settings_cannot_be_changed() {
        for text in [
            "SET client_encoding = 'SJIS'",
            "set local \"standard_conforming_strings\" to off",
            "SET NAMES 'LATIN1'",
            "select 1; SELECT set_config('standard_conforming_strings', 'off', false)",
        ] {
            assert_eq!(
                inspect(text, Caller::Service).refuse,
                Some(Refusal::ChangesLexing),
                "{text}"
            );
        }
        for text in [
            "SET search_path = x",
            "SHOW client_encoding",
            "select current_setting('client_encoding')",
        ] {
            assert_eq!(inspect(text, Caller::Service).refuse, None, "{text}");
        }
    }

    #[test]
    fn start_up_pins_lexing_settings() {
        let p = |k: &str, v: &str| (k.to_string(), v.to_string());
        let out = pinned_startup(&[
            p("application_name", "x"),
            p("client_encoding", "SQL_ASCII"),
        ])
        .unwrap();
        assert!(out.contains(&p("client_encoding", "UTF8")));
        assert!(out.contains(&p("standard_conforming_strings", "on")));
        assert!(!out.contains(&p("client_encoding", "SQL_ASCII")));
        assert!(pinned_startup(&[p("client_encoding", "utf-8")]).is_ok());
        for bad in [
            p("client_encoding", "SJIS"),
            p("standard_conforming_strings", "off"),
            p("options", "-c standard_conforming_strings=off"),
            p("options", "-cclient-encoding=LATIN1"),
            p("options", "--client_encoding=LATIN1"),
            p("options", "-c search_path=x -c Client_Encoding=BIG5"),
        ] {
            assert!(
                pinned_startup(std::slice::from_ref(&bad)).is_err(),
                "{bad:?}"
            );
        }
        assert!(pinned_startup(&[p("options", "-c search_path=a\\ b")]).is_ok());
    }

    #[test]
    fn people_cannot_change_passwords() {
        let text = "ALTER\x0bROLE current_user\x0bPASSWORD\x0b'x'";
        let i = inspect(text, Caller::Person);
        assert_eq!(i.refuse, Some(Refusal::PasswordChange));
        assert!(!i.text.contains("'x'"));
        assert_eq!(inspect(text, Caller::Service).refuse, None);
        assert_eq!(
            inspect("ALTER ROLE me SET search_path = x", Caller::Person).refuse,
            None
        );
    }

    /// Dynamic SQL in a string: a DO body, EXECUTE of a literal, a format() template, a
    /// function body. Refused for people, with every string constant kept out of the record.
    #[test]
    fn people_cannot_change_passwords_through_dynamic_sql() {
        for text in [
            "DO $$ BEGIN EXECUTE format('ALTER ROLE %I PASSWORD %L', current_user, 'pw-1'); END $$",
            "DO $x$ BEGIN EXECUTE 'alter user ' || current_user || ' password ''pw-1'''; END $x$",
            "do 'begin execute ''ALTER\tROLE x PASSWORD ''''pw-1''''''; end'",
            "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $f$ BEGIN \
             EXECUTE format('ALTER ROLE %I WITH PASSWORD %L', session_user, 'pw-1'); END $f$",
            "SELECT 1; DO $$ BEGIN EXECUTE 'ALTER ROLE me PASSWORD NULL'; END $$; SELECT 'pw-1'",
        ] {
            let i = inspect(text, Caller::Person);
            assert_eq!(i.refuse, Some(Refusal::PasswordChange), "{text}");
            assert!(i.redacted && !i.text.contains("pw-1"), "{}", i.text);
            assert_eq!(inspect(text, Caller::Service).refuse, None, "{text}");
        }
        // Words elsewhere are not a password change.
        for text in [
            "SELECT password_hash FROM users WHERE role = 'x'",
            "SELECT 'forgot password?'",
            "DO $$ BEGIN RAISE NOTICE 'user names'; END $$",
        ] {
            assert_eq!(inspect(text, Caller::Person).refuse, None, "{text}");
        }
    }

    /// A person's session runs as its grant's role: switching is refused at the top level
    /// and inside strings (a DO body, EXECUTE), for services it is not.
    #[test]
    fn people_cannot_switch_roles() {
        for text in [
            "SET ROLE rates_writer",
            "set session role \"rates_writer\"",
            "SET LOCAL ROLE NONE",
            "SET SESSION AUTHORIZATION DEFAULT",
            "SELECT set_config('role', 'rates_writer', false)",
            "SELECT 1; SET ROLE rates_writer",
            "DO $$ BEGIN EXECUTE 'SET ROLE rates_writer'; END $$",
            "DO $$ BEGIN PERFORM set_config('role', 'rates_writer', false); END $$",
            "DO 'BEGIN EXECUTE ''set  /* x */ local role rates_writer''; END'",
            "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $f$ SET ROLE rates_writer $f$",
        ] {
            assert_eq!(
                inspect(text, Caller::Person).refuse,
                Some(Refusal::RoleChange),
                "{text}"
            );
            assert_eq!(inspect(text, Caller::Service).refuse, None, "{text}");
        }
        for text in [
            "RESET ROLE",
            "SELECT rolname FROM pg_roles WHERE rolname = 'role'",
            "SELECT 'set the role in the app'",
            "SET search_path = rates",
        ] {
            assert_eq!(inspect(text, Caller::Person).refuse, None, "{text}");
        }
    }

    #[test]
    fn a_persons_session_gets_the_grants_role_and_may_not_ask_for_one() {
        let p = |k: &str, v: &str| (k.to_string(), v.to_string());
        let mut extra = vec![p("options", "-c search_path=rates")];
        run_as_role(&mut extra, "rates_reader").unwrap();
        assert_eq!(
            extra,
            [p("options", "-c search_path=rates -c role=rates_reader")]
        );
        let mut extra = vec![];
        run_as_role(&mut extra, "rates_reader").unwrap();
        assert_eq!(extra, [p("options", "-c role=rates_reader")]);
        for asked in [
            p("role", "rates_writer"),
            p("ROLE", "rates_writer"),
            p("session_authorization", "postgres"),
            p("options", "-c role=rates_writer"),
            p("options", "--role=rates_writer"),
            p("options", "-csession-authorization=postgres"),
        ] {
            assert!(
                run_as_role(&mut vec![asked.clone()], "rates_reader").is_err(),
                "{asked:?}"
            );
        }
        assert!(run_as_role(&mut vec![], "x; -c role=postgres").is_err());
    }
}
