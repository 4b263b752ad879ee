//! Frontend messages built by hand, and reading the answers: for tests that send what no
//! well-behaved driver would.

use serde_json::Value;

use super::{executions, RawClient, Stack};

pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend(((body.len() + 4) as u32).to_be_bytes());
    m.extend(body);
    m
}

pub fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend(s.as_bytes());
    out.push(0);
}

pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, name);
    cstr(&mut b, sql);
    b.extend(0i16.to_be_bytes());
    msg(b'P', &b)
}

/// Bind of the unnamed portal to `statement`, no parameters.
pub fn bind(statement: &str) -> Vec<u8> {
    bind_portal("", statement)
}

pub fn bind_portal(portal: &str, statement: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, portal);
    cstr(&mut b, statement);
    b.extend([0, 0, 0, 0, 0, 0]);
    msg(b'B', &b)
}

pub fn execute() -> Vec<u8> {
    execute_portal("", 0)
}

pub fn execute_portal(portal: &str, max_rows: i32) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, portal);
    b.extend(max_rows.to_be_bytes());
    msg(b'E', &b)
}

/// Parse with parameter type OIDs.
pub fn parse_typed(name: &str, sql: &str, types: &[u32]) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, name);
    cstr(&mut b, sql);
    b.extend((types.len() as i16).to_be_bytes());
    for t in types {
        b.extend(t.to_be_bytes());
    }
    msg(b'P', &b)
}

/// Bind with text parameters.
pub fn bind_text(portal: &str, statement: &str, params: &[&str]) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, portal);
    cstr(&mut b, statement);
    b.extend(0i16.to_be_bytes());
    b.extend((params.len() as i16).to_be_bytes());
    for p in params {
        b.extend((p.len() as i32).to_be_bytes());
        b.extend(p.as_bytes());
    }
    b.extend(0i16.to_be_bytes());
    msg(b'B', &b)
}

/// Close of a statement (`b'S'`) or portal (`b'P'`).
pub fn close(kind: u8, name: &str) -> Vec<u8> {
    let mut b = vec![kind];
    cstr(&mut b, name);
    msg(b'C', &b)
}

pub fn sync() -> Vec<u8> {
    msg(b'S', &[])
}

/// Reads up to the `n`-th ReadyForQuery, returning the SQLSTATEs of errors and the command
/// tags seen on the way.
pub async fn answers(c: &mut RawClient, n: usize) -> (Vec<String>, Vec<String>) {
    let (mut errors, mut tags) = (Vec::new(), Vec::new());
    let mut ready = 0;
    while ready < n {
        let Some((tag, body)) = c.recv().await else {
            panic!("the proxy closed the session; errors before: {errors:?}");
        };
        match tag {
            b'E' => {
                let fields = proxy::protocol::backend::error_fields(&body).unwrap();
                eprintln!("error {}: {}", fields.code, fields.message);
                errors.push(fields.code);
            }
            b'C' => tags.push(String::from_utf8_lossy(&body[..body.len() - 1]).into_owned()),
            b'Z' => ready += 1,
            _ => {}
        }
    }
    (errors, tags)
}

/// Sends `messages` in one write, reads up to the `ready`-th ReadyForQuery, and checks the
/// errors (SQLSTATEs) and command tags seen.
pub async fn exchange(
    c: &mut RawClient,
    messages: &[Vec<u8>],
    ready: usize,
    errors: &[&str],
    tags: &[&str],
) {
    c.send(&messages.concat()).await.unwrap();
    let (seen_errors, seen_tags) = answers(c, ready).await;
    assert_eq!(seen_errors, errors);
    assert_eq!(seen_tags, tags);
}

/// (statement text, outcome status, outcome tag) of every execution of `application`.
pub fn ran(stack: &Stack, application: &str) -> Vec<(String, String, String)> {
    stack.flush();
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    executions(&stack.records(), application)
        .into_iter()
        .map(|(s, o)| {
            let o = o.unwrap_or(Value::Null);
            (text(&s["statement"]), text(&o["status"]), text(&o["tag"]))
        })
        .collect()
}
