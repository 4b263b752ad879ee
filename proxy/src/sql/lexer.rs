//! Token boundaries of SQL text, as PostgreSQL's scanner (`src/backend/parser/scan.l`) draws
//! them. The audit needs boundaries, not values: where a string literal, a comment or a
//! quoted identifier starts and ends decides where a statement ends, which literal follows
//! `PASSWORD`, and what the first keyword of a statement is.
//!
//! Followed exactly: every kind of string (`'..'`, `E'..'`, `B'..'`, `X'..'`, `N'..'`,
//! `U&'..'`, `$tag$..$tag$`) with quote doubling, backslash escapes where they apply (`E''`,
//! and plain `''` when `standard_conforming_strings` is off) and the continuation of a
//! literal across whitespace that holds a newline (`'a'\n'b'` is one literal); quoted
//! identifiers; `--` comments ending at `\n` or `\r`; nested `/* */` comments; operators cut
//! where a comment starts inside them (`*--x`); parameters `$1`; identifiers with `$`.
//!
//! Whitespace is `[ \t\n\r\f\v]`: PostgreSQL 16 added `\v`; in 15 a `\v` outside a literal or
//! comment is a syntax error, so the whole query string fails and how it would have split
//! does not matter. Text is lexed as UTF-8 (the proxy pins `client_encoding`): every token
//! boundary falls on an ASCII byte, so slicing the text at them is always valid.

/// The session settings that change how text is lexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// With `off`, backslashes escape in plain `'...'` literals too.
    pub standard_conforming_strings: bool,
}

impl Mode {
    /// What the proxy pins every session to.
    pub const PINNED: Mode = Mode {
        standard_conforming_strings: true,
    };
    pub const BACKSLASH_ESCAPES: Mode = Mode {
        standard_conforming_strings: false,
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Space,
    Comment,
    /// A string literal of any kind, including its continuations.
    String,
    QuotedIdent,
    /// An identifier or keyword.
    Word,
    /// `$1`
    Param,
    Number,
    Semicolon,
    /// `(` or `[`
    Open,
    /// `)` or `]`
    Close,
    /// Operators and other punctuation.
    Op,
    /// A byte the scanner does not accept here (a syntax error).
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

impl Token {
    pub fn text<'a>(&self, sql: &'a str) -> &'a str {
        &sql[self.start..self.end]
    }

    /// Neither whitespace nor a comment.
    pub fn is_code(&self) -> bool {
        !matches!(self.kind, Kind::Space | Kind::Comment)
    }
}

pub fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn is_newline(b: u8) -> bool {
    b == b'\n' || b == b'\r'
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

fn is_op_char(b: u8) -> bool {
    matches!(
        b,
        b'~' | b'!'
            | b'@'
            | b'#'
            | b'^'
            | b'&'
            | b'|'
            | b'`'
            | b'?'
            | b'+'
            | b'-'
            | b'*'
            | b'/'
            | b'%'
            | b'<'
            | b'>'
            | b'='
    )
}

/// How the inside of a quoted string is read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quoting {
    /// Only a doubled quote continues the string.
    Doubling,
    /// Also `\` escapes the next byte.
    Backslash,
}

/// The tokens of `sql`, in order, covering every byte.
pub struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
    mode: Mode,
}

impl<'a> Lexer<'a> {
    pub fn new(sql: &'a str, mode: Mode) -> Self {
        Lexer {
            s: sql.as_bytes(),
            i: 0,
            mode,
        }
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.s.get(i).copied()
    }

    /// End of a `--` comment starting at `i`: the next newline (not included).
    fn line_comment_end(&self, i: usize) -> usize {
        self.s[i..]
            .iter()
            .position(|&b| is_newline(b))
            .map_or(self.s.len(), |p| i + p)
    }

    /// End of a (nested) block comment starting at `i`.
    fn block_comment_end(&self, mut i: usize) -> usize {
        let mut depth = 0usize;
        while i < self.s.len() {
            match (self.s[i], self.at(i + 1)) {
                (b'/', Some(b'*')) => {
                    depth += 1;
                    i += 2;
                }
                (b'*', Some(b'/')) => {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        return i;
                    }
                }
                _ => i += 1,
            }
        }
        self.s.len()
    }

    /// End of a quoted run whose opening quote is just before `i`.
    fn quoted_end(&self, mut i: usize, quote: u8, quoting: Quoting) -> usize {
        while i < self.s.len() {
            let b = self.s[i];
            if quoting == Quoting::Backslash && b == b'\\' {
                i += 2;
            } else if b == quote {
                if self.at(i + 1) == Some(quote) {
                    i += 2;
                } else {
                    return i + 1;
                }
            } else {
                i += 1;
            }
        }
        self.s.len()
    }

    /// Where the next part of a continued literal starts, if one follows `i` (just after a
    /// closing quote): whitespace and `--` comments holding at least one newline, then a
    /// quote (`{whitespace_with_newline}{quote}` in scan.l). Block comments do not count.
    fn continuation(&self, mut i: usize) -> Option<usize> {
        let mut newline = false;
        loop {
            match self.at(i)? {
                b'\'' if newline => return Some(i + 1),
                b if is_newline(b) => {
                    newline = true;
                    i += 1;
                }
                b if is_space(b) => i += 1,
                b'-' if self.at(i + 1) == Some(b'-') => {
                    i = self.line_comment_end(i);
                    // After the newline, a comment must itself end in a newline.
                    if newline && i >= self.s.len() {
                        return None;
                    }
                }
                _ => return None,
            }
        }
    }

    /// A string whose opening quote is just before `i`, with its continuations.
    fn string_end(&self, mut i: usize, quoting: Quoting) -> usize {
        loop {
            i = self.quoted_end(i, b'\'', quoting);
            if i >= self.s.len() {
                return self.s.len();
            }
            match self.continuation(i) {
                Some(next) => i = next,
                None => return i,
            }
        }
    }

    /// `$tag$` at `i`: the delimiter's length.
    fn dollar_tag(&self, i: usize) -> Option<usize> {
        let mut j = i + 1;
        if let Some(b) = self.at(j) {
            if b != b'$' {
                if !is_ident_start(b) {
                    return None;
                }
                while self.at(j).is_some_and(|b| is_ident_cont(b) && b != b'$') {
                    j += 1;
                }
            }
        }
        (self.at(j) == Some(b'$')).then_some(j + 1 - i)
    }

    /// An operator run starting at `i`, cut where a comment starts inside it.
    fn operator_end(&self, i: usize) -> usize {
        let mut j = i;
        while j < self.s.len() && is_op_char(self.s[j]) {
            let next = self.at(j + 1);
            if j > i
                && ((self.s[j] == b'-' && next == Some(b'-'))
                    || (self.s[j] == b'/' && next == Some(b'*')))
            {
                break;
            }
            j += 1;
        }
        j
    }

    fn number_end(&self, mut i: usize) -> usize {
        // Digits, a fraction, an exponent, and (an error in the server, but one token
        // here) trailing identifier characters: none of it can hide a quote or semicolon.
        while let Some(b) = self.at(i) {
            let part = b.is_ascii_alphanumeric()
                || b == b'_'
                || b >= 0x80
                || (b == b'.' && self.at(i + 1) != Some(b'.'))
                || ((b == b'+' || b == b'-')
                    && matches!(self.s[i - 1], b'e' | b'E')
                    && self.at(i + 1).is_some_and(|d| d.is_ascii_digit()));
            if !part {
                break;
            }
            i += 1;
        }
        i
    }
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        let s = self.s;
        let start = self.i;
        let b = *s.get(start)?;
        let next = self.at(start + 1);
        let escapes = if self.mode.standard_conforming_strings {
            Quoting::Doubling
        } else {
            Quoting::Backslash
        };
        let (kind, end) = if is_space(b) {
            let n = s[start..].iter().take_while(|&&b| is_space(b)).count();
            (Kind::Space, start + n)
        } else if b == b'-' && next == Some(b'-') {
            (Kind::Comment, self.line_comment_end(start))
        } else if b == b'/' && next == Some(b'*') {
            (Kind::Comment, self.block_comment_end(start))
        } else if b == b'\'' {
            (Kind::String, self.string_end(start + 1, escapes))
        } else if matches!(b, b'e' | b'E') && next == Some(b'\'') {
            (Kind::String, self.string_end(start + 2, Quoting::Backslash))
        } else if matches!(b, b'b' | b'B' | b'x' | b'X') && next == Some(b'\'') {
            (Kind::String, self.string_end(start + 2, Quoting::Doubling))
        } else if matches!(b, b'n' | b'N') && next == Some(b'\'') {
            (Kind::String, self.string_end(start + 2, escapes))
        } else if matches!(b, b'u' | b'U')
            && next == Some(b'&')
            && self.at(start + 2) == Some(b'\'')
        {
            (Kind::String, self.string_end(start + 3, Quoting::Doubling))
        } else if matches!(b, b'u' | b'U') && next == Some(b'&') && self.at(start + 2) == Some(b'"')
        {
            (
                Kind::QuotedIdent,
                self.quoted_end(start + 3, b'"', Quoting::Doubling),
            )
        } else if b == b'"' {
            (
                Kind::QuotedIdent,
                self.quoted_end(start + 1, b'"', Quoting::Doubling),
            )
        } else if b == b'$' {
            if next.is_some_and(|d| d.is_ascii_digit()) {
                let n = s[start + 1..]
                    .iter()
                    .take_while(|d| d.is_ascii_digit())
                    .count();
                (Kind::Param, start + 1 + n)
            } else if let Some(len) = self.dollar_tag(start) {
                let tag = &s[start..start + len];
                let body = start + len;
                let end = s[body..]
                    .windows(len)
                    .position(|w| w == tag)
                    .map_or(s.len(), |p| body + p + len);
                (Kind::String, end)
            } else {
                (Kind::Other, start + 1)
            }
        } else if is_ident_start(b) {
            let n = s[start..].iter().take_while(|&&b| is_ident_cont(b)).count();
            (Kind::Word, start + n)
        } else if b.is_ascii_digit() || (b == b'.' && next.is_some_and(|d| d.is_ascii_digit())) {
            (Kind::Number, self.number_end(start))
        } else if b == b';' {
            (Kind::Semicolon, start + 1)
        } else if b == b'(' || b == b'[' {
            (Kind::Open, start + 1)
        } else if b == b')' || b == b']' {
            (Kind::Close, start + 1)
        } else if is_op_char(b) {
            (Kind::Op, self.operator_end(start))
        } else if matches!(b, b',' | b'.' | b':') {
            (Kind::Op, start + 1)
        } else {
            (Kind::Other, start + 1)
        };
        let end = end.min(s.len());
        self.i = end;
        Some(Token { kind, start, end })
    }
}

/// The tokens of `sql` that are code (no whitespace, no comments).
pub fn code(sql: &str, mode: Mode) -> impl Iterator<Item = Token> + '_ {
    Lexer::new(sql, mode).filter(Token::is_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str, mode: Mode) -> Vec<(Kind, &str)> {
        Lexer::new(sql, mode)
            .map(|t| (t.kind, t.text(sql)))
            .collect()
    }

    #[test]
    fn tokens_cover_every_byte_and_end_on_char_boundaries() {
        let sql = "SELECT 'ü;' AS \"ä\", $1, E'\\'' ; -- né\r/* ö /* ß */ */ x$y$ 1.5e-3";
        let mut at = 0;
        for t in Lexer::new(sql, Mode::PINNED) {
            assert_eq!(t.start, at);
            assert!(sql.is_char_boundary(t.end));
            at = t.end;
        }
        assert_eq!(at, sql.len());
    }

    #[test]
    fn comments_end_at_either_newline_and_nest() {
        let sql = "a -- x\rb /* 1 /* 2 */ 3 */ c";
        let words: Vec<&str> = code(sql, Mode::PINNED).map(|t| t.text(sql)).collect();
        assert_eq!(words, ["a", "b", "c"]);
    }

    #[test]
    fn literals_continue_across_newlines_only() {
        let on = Mode::PINNED;
        assert_eq!(kinds("'a'\n'b'", on), [(Kind::String, "'a'\n'b'")]);
        assert_eq!(
            kinds("'a' -- c\n 'b'", on),
            [(Kind::String, "'a' -- c\n 'b'")]
        );
        assert_eq!(
            kinds("'a'\r\n-- c\n'b'", on),
            [(Kind::String, "'a'\r\n-- c\n'b'")]
        );
        // No newline, or a block comment: two literals.
        assert_eq!(kinds("'a' 'b'", on)[0], (Kind::String, "'a'"));
        assert_eq!(kinds("'a' /*\n*/\n'b'", on)[0], (Kind::String, "'a'"));
        // A continued E'' literal keeps its escapes.
        assert_eq!(kinds("E'x'\n'\\''", on), [(Kind::String, "E'x'\n'\\''")]);
    }

    #[test]
    fn backslashes_follow_the_mode() {
        let text = "'a\\' ; b'";
        assert_eq!(kinds(text, Mode::BACKSLASH_ESCAPES), [(Kind::String, text)]);
        let on = kinds(text, Mode::PINNED);
        assert_eq!(on[0], (Kind::String, "'a\\'"));
        assert!(on.contains(&(Kind::Semicolon, ";")));
    }

    #[test]
    fn dollar_quotes_params_and_identifiers() {
        let on = Mode::PINNED;
        assert_eq!(kinds("$a$x$b$;$a$", on), [(Kind::String, "$a$x$b$;$a$")]);
        assert_eq!(kinds("a$b$c", on), [(Kind::Word, "a$b$c")]);
        assert_eq!(kinds("$12", on), [(Kind::Param, "$12")]);
        assert_eq!(kinds("$$;$$", on), [(Kind::String, "$$;$$")]);
        assert_eq!(kinds("$x", on)[0], (Kind::Other, "$"));
    }

    #[test]
    fn operators_stop_where_a_comment_starts() {
        let sql = "2 *--3\n; 4 */*x*/ 5";
        let k = kinds(sql, Mode::PINNED);
        assert!(k.contains(&(Kind::Op, "*")));
        assert!(k.contains(&(Kind::Comment, "--3")));
        assert!(k.contains(&(Kind::Comment, "/*x*/")));
        assert!(k.contains(&(Kind::Semicolon, ";")));
    }
}
