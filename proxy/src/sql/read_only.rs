//! Read-only sessions (a grant whose policy has `read_only`): the upstream session starts
//! with `default_transaction_read_only = on` (see [`pin_startup`]), so every transaction
//! is read-only and the server refuses writes itself, whatever the role may do. What the
//! proxy refuses here is every way a statement could make a *later* transaction read-write
//! before the proxy sees the server report the change (ParameterStatus, at the next
//! ReadyForQuery), or make the *current* one read-write before its first snapshot:
//!
//! - `SET`/`RESET` of `default_transaction_read_only` or `transaction_read_only` (other
//!   than to `on`), `RESET ALL`, `SET SESSION CHARACTERISTICS`/`SET TRANSACTION`/`BEGIN`/
//!   `START TRANSACTION` with `READ WRITE`, `set_config` naming either setting;
//! - `DO` and `CALL`: a DO block or a procedure can `COMMIT` and go on in a new
//!   transaction, whose read-only mode comes from a default it may have just changed
//!   out of the proxy's sight (a name built at run time);
//! - in one Query string, a statement after one that ends the transaction (`COMMIT`,
//!   `ROLLBACK`, ...): it would start a new transaction before the server reports a change.
//!
//! The relay adds the rest (docs/proxy.md, "Read-only sessions"): nothing the client
//! pipelined behind a Sync is forwarded before the Sync's ReadyForQuery, and nothing is
//! executed after a transaction-ending Execute before the next Sync.

use std::ops::Range;

use super::lexer::{Kind, Lexer, Token};
use super::{Mode, Refusal};

/// The settings that decide whether a transaction may write.
const SETTINGS: [&str; 2] = ["default_transaction_read_only", "transaction_read_only"];

/// Adds `-c default_transaction_read_only=on` to the upstream start-up `options`. A client
/// asking for either setting itself (on its own or in `options`) is refused.
pub fn pin_startup(extra: &mut Vec<(String, String)>) -> Result<(), String> {
    let names_it = |name: &str| SETTINGS.contains(&name.to_ascii_lowercase().as_str());
    for (k, v) in extra.iter() {
        if names_it(k) || (k == "options" && super::options_settings(v).any(|n| names_it(&n))) {
            return Err(format!(
                "this session is read-only (its grant's policy): the start-up parameter {k} may \
                 not set {}",
                SETTINGS[0]
            ));
        }
    }
    let set = "-c default_transaction_read_only=on";
    match extra.iter_mut().find(|(k, _)| k == "options") {
        Some((_, v)) => {
            v.push(' ');
            v.push_str(set);
        }
        None => extra.push(("options".into(), set.into())),
    }
    Ok(())
}

/// Whether the value the server reports for `name` keeps a read-only session read-only.
pub fn keeps_read_only(name: &str, value: &str) -> bool {
    name != SETTINGS[0] || value == "on"
}

/// Why a read-only session may not run `text` (its `statements`), if it may not.
pub fn refusal(text: &str, statements: &[Range<usize>]) -> Option<Refusal> {
    let mut ended = false;
    for r in statements {
        let stmt = &text[r.clone()];
        let tokens: Vec<Token> = Lexer::new(stmt, Mode::PINNED)
            .filter(|t| t.is_code() && t.kind != Kind::Semicolon)
            .collect();
        if tokens.is_empty() {
            continue;
        }
        if ended {
            return Some(Refusal::ReadOnlyAfterTransactionEnd);
        }
        if let Some(refusal) = statement_refusal(stmt, &tokens) {
            return Some(refusal);
        }
        ended = ends_transaction_tokens(stmt, &tokens);
    }
    None
}

/// Whether `stmt` (one statement) ends the transaction it runs in: `COMMIT`, `END`,
/// `ROLLBACK`, `ABORT`, `PREPARE TRANSACTION` (counted conservatively: `ROLLBACK TO
/// SAVEPOINT` too).
pub fn ends_transaction(stmt: &str) -> bool {
    let tokens: Vec<Token> = Lexer::new(stmt, Mode::PINNED)
        .filter(|t| t.is_code() && t.kind != Kind::Semicolon)
        .take(2)
        .collect();
    ends_transaction_tokens(stmt, &tokens)
}

fn ends_transaction_tokens(stmt: &str, tokens: &[Token]) -> bool {
    let word = |i: usize, k: &str| is_word(stmt, tokens.get(i), k);
    word(0, "commit")
        || word(0, "end")
        || word(0, "rollback")
        || word(0, "abort")
        || (word(0, "prepare") && word(1, "transaction"))
}

fn statement_refusal(stmt: &str, tokens: &[Token]) -> Option<Refusal> {
    let word = |i: usize, k: &str| is_word(stmt, tokens.get(i), k);
    let read_write = || (1..tokens.len()).any(|i| word(i - 1, "read") && word(i, "write"));
    if word(0, "do") || word(0, "call") {
        return Some(Refusal::ReadOnlyCode);
    }
    if word(0, "begin") || word(0, "start") {
        return read_write().then_some(Refusal::ReadOnly);
    }
    if word(0, "reset") {
        let named = word(1, "all") || tokens.get(1).is_some_and(|t| names_setting(stmt, t));
        return named.then_some(Refusal::ReadOnly);
    }
    if word(0, "set") {
        let at = if word(1, "session") || word(1, "local") {
            2
        } else {
            1
        };
        if word(at, "characteristics") || word(at, "transaction") {
            return read_write().then_some(Refusal::ReadOnly);
        }
        let name = tokens.get(at)?;
        if !names_setting(stmt, name) {
            return None;
        }
        // Only `on` (in any spelling PostgreSQL reads as true) may be set.
        let mut value = &tokens[at + 1..];
        if value.first().is_some_and(|t| {
            is_word(stmt, Some(t), "to") || (t.kind == Kind::Op && t.text(stmt) == "=")
        }) {
            value = &value[1..];
        }
        let on = matches!(value, [v] if is_true(stmt, v));
        return (!on).then_some(Refusal::ReadOnly);
    }
    let calls_set_config = tokens.iter().any(|t| is_word(stmt, Some(t), "set_config"));
    if calls_set_config
        && tokens
            .iter()
            .any(|t| t.kind == Kind::String && string_may_name_setting(t.text(stmt)))
    {
        return Some(Refusal::ReadOnly);
    }
    None
}

/// A setting name token (a word or a quoted identifier) that is one of [`SETTINGS`], or
/// that the proxy cannot read without decoding escapes (`U&"..."`).
fn names_setting(stmt: &str, t: &Token) -> bool {
    let text = t.text(stmt);
    match t.kind {
        Kind::Word => SETTINGS.iter().any(|s| text.eq_ignore_ascii_case(s)),
        Kind::QuotedIdent => {
            if text.starts_with(['u', 'U']) {
                return true;
            }
            let name = text.trim_matches('"');
            SETTINGS.iter().any(|s| name.eq_ignore_ascii_case(s))
        }
        _ => false,
    }
}

/// A string constant that names either setting, or one with escapes (`E'...'`, `U&'...'`)
/// that could spell it.
fn string_may_name_setting(token: &str) -> bool {
    let escaped = token.starts_with(['e', 'E', 'u', 'U']) && token.contains('\\');
    escaped || token.to_ascii_lowercase().contains("transaction_read_only")
}

/// `on`, `true`, `yes`, `1`, bare or quoted.
fn is_true(stmt: &str, t: &Token) -> bool {
    let text = t.text(stmt);
    let value = match t.kind {
        Kind::Word | Kind::Number => text,
        Kind::String if text.starts_with('\'') => text.trim_matches('\''),
        _ => return false,
    };
    ["on", "true", "yes", "1"]
        .iter()
        .any(|v| value.eq_ignore_ascii_case(v))
}

fn is_word(stmt: &str, t: Option<&Token>, k: &str) -> bool {
    t.is_some_and(|t| t.kind == Kind::Word && t.text(stmt).eq_ignore_ascii_case(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{split, Mode};

    fn check(text: &str) -> Option<Refusal> {
        refusal(text, &split::statements(text, Mode::PINNED))
    }

    #[test]
    fn ways_to_turn_read_only_off_are_refused() {
        for text in [
            "SET default_transaction_read_only = off",
            "set SESSION \"Default_Transaction_Read_Only\" TO 'off'",
            "SET LOCAL transaction_read_only TO false",
            "SET transaction_read_only = DEFAULT",
            "SET default_transaction_read_only TO 0",
            "SET U&\"transaction\\005fread_only\" = off",
            "RESET default_transaction_read_only",
            "reset TRANSACTION_READ_ONLY",
            "RESET ALL",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ /* x */ WRITE",
            "BEGIN READ WRITE",
            "begin transaction isolation level read committed read write",
            "START TRANSACTION READ WRITE",
            "SELECT set_config('default_transaction_read_only', 'off', false)",
            "select SET_CONFIG('Transaction_Read_Only', 'off', true)",
            "SELECT set_config(E'default\\x5ftransaction_read_only', 'off', false)",
            "SELECT 1; SET default_transaction_read_only = off",
        ] {
            assert_eq!(check(text), Some(Refusal::ReadOnly), "{text}");
        }
        for text in ["DO $$ BEGIN DELETE FROM notes; END $$", "CALL p()"] {
            assert_eq!(check(text), Some(Refusal::ReadOnlyCode), "{text}");
        }
        for text in [
            "COMMIT; DELETE FROM notes",
            "select 1; rollback; select 2",
            "END; SELECT 1",
        ] {
            assert_eq!(
                check(text),
                Some(Refusal::ReadOnlyAfterTransactionEnd),
                "{text}"
            );
        }
    }

    #[test]
    fn reading_and_keeping_read_only_pass() {
        for text in [
            "SELECT * FROM notes",
            "BEGIN",
            "BEGIN READ ONLY",
            "START TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            "SET default_transaction_read_only = on",
            "SET transaction_read_only TO 'true'",
            "SET search_path = public",
            "RESET search_path",
            "SHOW default_transaction_read_only",
            "SELECT current_setting('default_transaction_read_only')",
            "SELECT set_config('search_path', 'public', false)",
            "SELECT 1; COMMIT",
            "COMMIT;",
            "SELECT 'read write'",
        ] {
            assert_eq!(check(text), None, "{text}");
        }
        assert!(ends_transaction("commit"));
        assert!(ends_transaction("PREPARE TRANSACTION 'x'"));
        assert!(!ends_transaction("PREPARE p AS SELECT 1"));
    }

    #[test]
    fn start_up_pins_read_only() {
        let p = |k: &str, v: &str| (k.to_string(), v.to_string());
        let mut extra = vec![p("options", "-c role=r")];
        pin_startup(&mut extra).unwrap();
        assert_eq!(
            extra,
            [p(
                "options",
                "-c role=r -c default_transaction_read_only=on"
            )]
        );
        for asked in [
            p("default_transaction_read_only", "off"),
            p("options", "-c default-transaction-read-only=off"),
            p("options", "--transaction_read_only=off"),
        ] {
            assert!(pin_startup(&mut vec![asked.clone()]).is_err(), "{asked:?}");
        }
        assert!(keeps_read_only("default_transaction_read_only", "on"));
        assert!(!keeps_read_only("default_transaction_read_only", "off"));
        assert!(keeps_read_only("client_encoding", "UTF8"));
    }
}
