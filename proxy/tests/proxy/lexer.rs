//! The proxy's SQL lexer against PostgreSQL's own, on thousands of generated query strings:
//! quotes of every kind, comments, dollar tags, every whitespace character, semicolons,
//! backslashes and multi-byte characters, with `standard_conforming_strings` on and off and
//! with a client encoding (SJIS) whose characters can end in a `\` byte.
//!
//! Each statement carries a marker (a column alias or a function name). The server's
//! answers to the Query (RowDescription names, CommandComplete, EmptyQueryResponse) say how
//! many statements it ran and which marker each had; the proxy's split of the same string
//! must say the same. A string the server rejects says nothing and is skipped, but most
//! generated strings are valid, and the test requires thousands that were compared.

use bytes::BytesMut;
use dbgw_db::Cluster;
use proxy::sql::split::statements;
use proxy::sql::Mode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How PostgreSQL answered one Query.
#[derive(Debug, Default)]
struct Answer {
    /// Per statement: the first column's name, or the command tag when it returned no rows
    /// description.
    statements: Vec<String>,
    error: Option<String>,
}

struct Server {
    stream: proxy::upstream::Stream,
    buf: BytesMut,
}

impl Server {
    async fn connect(cluster: &Cluster) -> Server {
        let settings = proxy::upstream::UpstreamSettings {
            port: cluster.port(),
            ca_file: Some(cluster.ca_cert()),
            ..Default::default()
        };
        let connector = proxy::upstream::Connector::new(&settings).unwrap();
        let admin = cluster.admin();
        let session = connector
            .login(&admin.username, "postgres", &admin.password, false, &[])
            .await
            .unwrap();
        Server {
            stream: session.stream,
            buf: BytesMut::new(),
        }
    }

    async fn query(&mut self, sql: &[u8]) -> Answer {
        let mut m = vec![b'Q'];
        m.extend(((sql.len() + 5) as u32).to_be_bytes());
        m.extend(sql);
        m.push(0);
        self.stream.write_all(&m).await.unwrap();
        let mut answer = Answer::default();
        let mut named: Option<String> = None;
        loop {
            let (tag, body) = self.recv().await;
            match tag {
                b'T' => {
                    // The first field's name: a NUL-terminated string after the count.
                    let end = body[2..].iter().position(|&b| b == 0).unwrap_or(0);
                    named = Some(String::from_utf8_lossy(&body[2..2 + end]).into_owned());
                }
                b'C' => {
                    let tag = String::from_utf8_lossy(&body[..body.len() - 1]).into_owned();
                    answer.statements.push(named.take().unwrap_or(tag));
                }
                // (In the client's encoding, which may not be UTF-8.)
                b'E' => answer.error = Some(String::from_utf8_lossy(&body).into_owned()),
                b'Z' => return answer,
                _ => {}
            }
        }
    }

    async fn recv(&mut self) -> (u8, Vec<u8>) {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() > len {
                    let msg = self.buf.split_to(len + 1);
                    return (msg[0], msg[5..].to_vec());
                }
            }
            assert!(
                self.stream.read_buf(&mut self.buf).await.unwrap() > 0,
                "server closed"
            );
        }
    }

    /// The temporary functions query `q` made, in the order it made them.
    async fn functions(&mut self, q: usize) -> Vec<String> {
        let sql = format!(
            "SELECT proname FROM pg_proc WHERE pronamespace = pg_my_temp_schema() \
             AND proname LIKE 'zq{q}x%' ORDER BY oid"
        );
        let mut names = Vec::new();
        let m = {
            let mut m = vec![b'Q'];
            m.extend(((sql.len() + 5) as u32).to_be_bytes());
            m.extend(sql.as_bytes());
            m.push(0);
            m
        };
        self.stream.write_all(&m).await.unwrap();
        loop {
            let (tag, body) = self.recv().await;
            match tag {
                b'D' => {
                    let len = i32::from_be_bytes(body[2..6].try_into().unwrap()) as usize;
                    names.push(String::from_utf8_lossy(&body[6..6 + len]).into_owned());
                }
                b'Z' => return names,
                _ => {}
            }
        }
    }

    async fn set(&mut self, sql: &str) {
        let a = self.query(sql.as_bytes()).await;
        assert!(a.error.is_none(), "{sql}: {:?}", a.error);
    }
}

/// Random query strings built from the pieces that trip lexers.
struct Generator {
    rng: StdRng,
    backslash_escapes: bool,
    sjis: bool,
}

impl Generator {
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.rng.random_range(0..items.len())]
    }

    /// Characters for the inside of literals, comments and quoted names.
    fn text(&mut self) -> String {
        let mut s = String::new();
        for _ in 0..self.rng.random_range(0..6) {
            let piece = if self.sjis {
                // Each of these ends in the byte 0x5c ('\') in SJIS.
                self.pick(&[
                    "a", ";", "--", "/*", "*/", "\"", "$", "ソ", "表", "能", "予", " ", "\n",
                ])
            } else {
                self.pick(&[
                    "a",
                    ";",
                    "--",
                    "/*",
                    "*/",
                    "\"",
                    "$",
                    "é",
                    "日本",
                    "\u{1F600}",
                    " ",
                    "\r",
                    "\n",
                    "\t",
                ])
            };
            s.push_str(piece);
        }
        s
    }

    fn space(&mut self) -> String {
        let mut s = String::new();
        for _ in 0..self.rng.random_range(1..3) {
            let piece = match self.rng.random_range(0..12) {
                0 => "-- c;'x\n".to_string(),
                1 => "-- c\r".to_string(),
                2 => format!("/* {} /* {} */ */", self.text(), self.text()),
                3 => "\x0c".to_string(),
                4 => "\r\n".to_string(),
                5 => "\t".to_string(),
                6 => "\n".to_string(),
                // \v: a space from PostgreSQL 16, a syntax error before (both must agree).
                7 if self.rng.random_range(0..8) == 0 => "\x0b".to_string(),
                _ => " ".to_string(),
            };
            s.push_str(&piece);
        }
        s
    }

    fn quoted(&mut self, quote: char, backslashes: bool) -> String {
        let mut s = String::new();
        for _ in 0..self.rng.random_range(0..5) {
            match self.rng.random_range(0..8) {
                0 => {
                    s.push(quote);
                    s.push(quote);
                }
                1 if backslashes => s.push_str(self.pick(&["\\\\", "\\'", "\\n", "\\x41"])),
                // A lone backslash: an escape or a character, depending on the mode.
                2 => s.push('\\'),
                _ => s.push_str(&self.text().replace(quote, "")),
            }
        }
        s
    }

    fn literal(&mut self) -> String {
        let plain_escapes = self.backslash_escapes;
        match self.rng.random_range(0..10) {
            0 => format!("E'{}'", self.quoted('\'', true)),
            1 => {
                let tag = if self.sjis {
                    self.pick(&["", "q", "tag_1", "ソ"])
                } else {
                    self.pick(&["", "q", "tag_1", "é"])
                };
                let body = self.text().replace(&format!("${tag}$"), "");
                format!("${tag}${body}$x${tag}$")
            }
            2 => format!(
                "'{}'{}'{}'",
                self.quoted('\'', plain_escapes),
                self.continuation(),
                self.quoted('\'', plain_escapes)
            ),
            3 => "B'0101'".into(),
            4 => "X'AF'".into(),
            5 if !self.backslash_escapes => "U&'\\0041b'".into(),
            6 => format!("N'{}'", self.quoted('\'', plain_escapes)),
            _ => format!("'{}'", self.quoted('\'', plain_escapes)),
        }
    }

    /// Between two literals: sometimes a continuation (a newline in it), sometimes not (a
    /// concatenation operator then, so the statement stays valid).
    fn continuation(&mut self) -> String {
        self.pick(&[
            "\n",
            " -- c\n ",
            "\r\n\t",
            " || ",
            "\n-- c\n",
            " || /*\n*/ ",
        ])
        .to_string()
    }

    fn expression(&mut self) -> String {
        match self.rng.random_range(0..6) {
            0 => self.pick(&["1", "2.5", ".5e3", "1e-2"]).into(),
            1 => format!(
                "2 {}1",
                self.pick(&["+", "-", "*/*c*/", "+--c\n", "-/*c*/-"])
            ),
            2 => format!("({})", self.literal()),
            3 => format!("{}::text", self.literal()),
            _ => self.literal(),
        }
    }

    fn statement(&mut self, marker: &str) -> String {
        if self.rng.random_range(0..15) == 0 {
            return format!(
                "CREATE FUNCTION pg_temp.{marker}() RETURNS int LANGUAGE sql BEGIN ATOMIC \
                 SELECT 1;{}SELECT CASE WHEN true THEN 2 END; END",
                self.space()
            );
        }
        let alias = if self.rng.random_bool(0.3) {
            format!("\"{marker}\"")
        } else {
            marker.to_string()
        };
        format!(
            "SELECT{}{}{}AS {alias}",
            self.space(),
            self.expression(),
            self.space()
        )
    }

    fn query(&mut self, q: usize) -> String {
        let n = self.rng.random_range(0..5);
        let mut s = if self.rng.random_bool(0.2) {
            self.space()
        } else {
            String::new()
        };
        for k in 0..n {
            if k > 0 {
                s.push_str(self.pick(&[";", ";;", "; ;", ";\n/*;*/;"]));
                s.push_str(&self.space());
            }
            s.push_str(&self.statement(&format!("zq{q}x{k}")));
        }
        if self.rng.random_bool(0.3) {
            s.push(';');
        }
        if self.rng.random_bool(0.2) {
            s.push_str(&self.space());
        }
        s
    }
}

/// The marker of each of the proxy's statements: the identifier starting with `zq` among
/// its code tokens (`None` if a statement has none, or several).
fn proxy_view(sql: &str, mode: Mode) -> Vec<Option<String>> {
    statements(sql, mode)
        .into_iter()
        .map(|r| {
            let part = &sql[r];
            let markers: Vec<String> = proxy::sql::lexer::code(part, mode)
                .map(|t| t.text(part).trim_matches('"').to_string())
                .filter(|t| t.starts_with("zq"))
                .collect();
            match markers.as_slice() {
                [one] => Some(one.clone()),
                _ => None,
            }
        })
        .collect()
}

/// What the server's answer says each statement's marker was; a CREATE FUNCTION's is the
/// name of the function it made (`created`, in order).
fn server_view(answer: &Answer, created: &[String]) -> Vec<Option<String>> {
    let mut functions = created.iter();
    answer
        .statements
        .iter()
        .map(|s| match s.as_str() {
            "CREATE FUNCTION" => functions.next().cloned(),
            // A statement whose marker was commented out is another statement (no
            // columns, `case`, `END`...): it has no marker on either side.
            name if !name.starts_with("zq") => None,
            name => Some(name.to_string()),
        })
        .collect()
}

async fn differential(server: &mut Server, mut generator: Generator, cases: usize) -> usize {
    let mode = if generator.backslash_escapes {
        Mode::BACKSLASH_ESCAPES
    } else {
        Mode::PINNED
    };
    let mut compared = 0;
    for q in 0..cases {
        let sql = generator.query(q);
        let bytes = if generator.sjis {
            let (b, _, unmappable) = encoding_rs::SHIFT_JIS.encode(&sql);
            assert!(!unmappable, "{sql:?}");
            b.into_owned()
        } else {
            sql.clone().into_bytes()
        };
        let answer = server.query(&bytes).await;
        if answer.error.is_some() {
            continue;
        }
        compared += 1;
        let created = if answer.statements.iter().any(|s| s == "CREATE FUNCTION") {
            server.functions(q).await
        } else {
            Vec::new()
        };
        let theirs = server_view(&answer, &created);
        let ours = proxy_view(&sql, mode);
        assert_eq!(
            ours, theirs,
            "\nquery {q}: {sql:?}\nserver answered {:?}",
            answer.statements
        );
    }
    compared
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_splits_query_strings_as_postgresql_does() {
    let db = testkit::TestDb::start().await;
    let cluster = &db.cluster;
    let mut server = Server::connect(cluster).await;
    let cases = 3000;
    for (name, backslash_escapes, sjis, setup) in [
        (
            "standard_conforming_strings = on",
            false,
            false,
            "SET standard_conforming_strings = on",
        ),
        (
            "standard_conforming_strings = off",
            true,
            false,
            "SET standard_conforming_strings = off",
        ),
        (
            "client_encoding = SJIS",
            false,
            true,
            "SET client_encoding = 'SJIS'",
        ),
    ] {
        server.set(setup).await;
        let generator = Generator {
            rng: StdRng::seed_from_u64(0x5eed_0001 + backslash_escapes as u64 * 2 + sjis as u64),
            backslash_escapes,
            sjis,
        };
        let compared = differential(&mut server, generator, cases).await;
        eprintln!("{name}: {compared} of {cases} query strings compared");
        assert!(
            compared >= cases / 2,
            "{name}: too few valid query strings ({compared})"
        );
        server.set("RESET ALL").await;
        server.set("DISCARD TEMP").await;
    }
    cluster.stop().unwrap();
}
