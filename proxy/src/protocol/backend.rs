//! Server messages: decoding the ones that carry a statement's outcome, and encoding the
//! ones the proxy sends itself (authentication, errors, its own cancel key).

use bytes::{BufMut, BytesMut};

use super::{ProtocolError, Reader};

pub const AUTHENTICATION: u8 = b'R';
pub const BACKEND_KEY_DATA: u8 = b'K';
pub const PARAMETER_STATUS: u8 = b'S';
pub const READY_FOR_QUERY: u8 = b'Z';
pub const COMMAND_COMPLETE: u8 = b'C';
pub const EMPTY_QUERY: u8 = b'I';
pub const ERROR_RESPONSE: u8 = b'E';
pub const NOTICE_RESPONSE: u8 = b'N';
pub const PORTAL_SUSPENDED: u8 = b's';
pub const DATA_ROW: u8 = b'D';
pub const COPY_IN_RESPONSE: u8 = b'G';
pub const PARSE_COMPLETE: u8 = b'1';
pub const CLOSE_COMPLETE: u8 = b'3';
pub const COPY_OUT_RESPONSE: u8 = b'H';
pub const COPY_BOTH_RESPONSE: u8 = b'W';
pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
pub const ROW_DESCRIPTION: u8 = b'T';
pub const NO_DATA: u8 = b'n';
pub const PARAMETER_DESCRIPTION: u8 = b't';
pub const BIND_COMPLETE: u8 = b'2';
pub const NOTIFICATION_RESPONSE: u8 = b'A';
pub const COPY_DATA: u8 = b'd';
pub const COPY_DONE: u8 = b'c';

/// CommandComplete's tag, e.g. `INSERT 0 3`.
pub fn command_tag(body: &[u8]) -> Result<&str, ProtocolError> {
    Reader::new(body, "CommandComplete").cstr()
}

/// Rows a command tag reports (`SELECT 5`, `INSERT 0 5`, `COPY 5` → 5), if any. Read byte
/// by byte: it runs for every statement, and `split` with `parse` cost ten times more.
pub fn tag_rows(tag: &str) -> Option<u64> {
    let tag = tag.as_bytes();
    let verb_end = tag.iter().position(|&b| b == b' ')?;
    if !matches!(
        &tag[..verb_end],
        b"SELECT" | b"INSERT" | b"UPDATE" | b"DELETE" | b"MERGE" | b"COPY" | b"FETCH" | b"MOVE"
    ) {
        return None;
    }
    let digits = &tag[tag.iter().rposition(|&b| b == b' ')? + 1..];
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
            .flatten()
    })
}

/// The fields of an ErrorResponse the audit keeps.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
}

impl ErrorFields {
    /// The server ends the session with this error.
    pub fn is_fatal(&self) -> bool {
        self.severity == "FATAL" || self.severity == "PANIC"
    }
}

pub fn error_fields(body: &[u8]) -> Result<ErrorFields, ProtocolError> {
    let mut r = Reader::new(body, "ErrorResponse");
    let mut out = ErrorFields::default();
    loop {
        let field = r.u8()?;
        if field == 0 {
            break;
        }
        let value = r.cstr()?;
        match field {
            // 'V' is the untranslated severity; prefer it over 'S'.
            b'V' => out.severity = value.to_string(),
            b'S' if out.severity.is_empty() => out.severity = value.to_string(),
            b'C' => out.code = value.to_string(),
            b'M' => out.message = value.to_string(),
            _ => {}
        }
    }
    Ok(out)
}

/// ParameterDescription: the type OIDs of a prepared statement's parameters.
pub fn parameter_types(body: &[u8]) -> Result<Vec<u32>, ProtocolError> {
    let mut r = Reader::new(body, "ParameterDescription");
    let n = r.i16()?;
    if n < 0 {
        return Err(ProtocolError::new("ParameterDescription: negative count"));
    }
    let types = (0..n)
        .map(|_| r.i32().map(|t| t as u32))
        .collect::<Result<_, _>>()?;
    r.finish()?;
    Ok(types)
}

/// ParameterStatus: a setting's name and value.
pub fn parameter_status(body: &[u8]) -> Result<(&str, &str), ProtocolError> {
    let mut r = Reader::new(body, "ParameterStatus");
    let name = r.cstr()?;
    let value = r.cstr()?;
    r.finish()?;
    Ok((name, value))
}

/// ReadyForQuery's transaction status: `I` idle, `T` in a transaction, `E` failed transaction.
pub fn ready_status(body: &[u8]) -> Result<u8, ProtocolError> {
    let mut r = Reader::new(body, "ReadyForQuery");
    let s = r.u8()?;
    r.finish()?;
    Ok(s)
}

/// Appends a message with tag `tag` whose body is written by `body`.
fn message(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    body(out);
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn cstr(out: &mut BytesMut, s: &str) {
    out.put_slice(s.as_bytes());
    out.put_u8(0);
}

/// An ErrorResponse (severity `ERROR` or `FATAL`). The message goes to the client verbatim:
/// never put secrets in it.
pub fn error(out: &mut BytesMut, severity: &str, code: &str, text: &str) {
    message(out, ERROR_RESPONSE, |b| {
        b.put_u8(b'S');
        cstr(b, severity);
        b.put_u8(b'V');
        cstr(b, severity);
        b.put_u8(b'C');
        cstr(b, code);
        b.put_u8(b'M');
        cstr(b, text);
        b.put_u8(0);
    });
}

/// A NoticeResponse (severity `NOTICE`): psql prints it as `NOTICE:  <text>`.
pub fn notice(out: &mut BytesMut, code: &str, text: &str) {
    message(out, NOTICE_RESPONSE, |b| {
        b.put_u8(b'S');
        cstr(b, "NOTICE");
        b.put_u8(b'V');
        cstr(b, "NOTICE");
        b.put_u8(b'C');
        cstr(b, code);
        b.put_u8(b'M');
        cstr(b, text);
        b.put_u8(0);
    });
}

pub fn auth_ok(out: &mut BytesMut) {
    message(out, AUTHENTICATION, |b| b.put_i32(0));
}

pub fn auth_cleartext(out: &mut BytesMut) {
    message(out, AUTHENTICATION, |b| b.put_i32(3));
}

pub fn auth_sasl(out: &mut BytesMut, mechanisms: &[&str]) {
    message(out, AUTHENTICATION, |b| {
        b.put_i32(10);
        for m in mechanisms {
            cstr(b, m);
        }
        b.put_u8(0);
    });
}

pub fn auth_sasl_continue(out: &mut BytesMut, data: &[u8]) {
    message(out, AUTHENTICATION, |b| {
        b.put_i32(11);
        b.put_slice(data);
    });
}

pub fn auth_sasl_final(out: &mut BytesMut, data: &[u8]) {
    message(out, AUTHENTICATION, |b| {
        b.put_i32(12);
        b.put_slice(data);
    });
}

pub fn backend_key_data(out: &mut BytesMut, pid: i32, secret: i32) {
    message(out, BACKEND_KEY_DATA, |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

pub fn ready_for_query(out: &mut BytesMut, status: u8) {
    message(out, READY_FOR_QUERY, |b| b.put_u8(status));
}

/// Tells a client asking for a newer minor version or for `_pq_` options what we speak.
pub fn negotiate_protocol_version(out: &mut BytesMut, minor: i32, unsupported: &[String]) {
    message(out, NEGOTIATE_PROTOCOL_VERSION, |b| {
        b.put_i32(minor);
        b.put_i32(unsupported.len() as i32);
        for o in unsupported {
            cstr(b, o);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{frame, sqlstate};

    #[test]
    fn encoded_errors_decode_back() {
        let mut out = BytesMut::new();
        error(
            &mut out,
            "FATAL",
            sqlstate::INVALID_PASSWORD,
            "password authentication failed",
        );
        let (h, body) = frame::complete(&out, 1 << 20).unwrap().unwrap();
        assert_eq!(h.tag, ERROR_RESPONSE);
        assert_eq!(h.total, out.len());
        let f = error_fields(body).unwrap();
        assert_eq!(
            (f.severity.as_str(), f.code.as_str(), f.message.as_str()),
            (
                "FATAL",
                sqlstate::INVALID_PASSWORD,
                "password authentication failed"
            )
        );
    }

    #[test]
    fn rows_from_tags() {
        assert_eq!(tag_rows("SELECT 5"), Some(5));
        assert_eq!(tag_rows("INSERT 0 7"), Some(7));
        assert_eq!(tag_rows("COPY 3"), Some(3));
        assert_eq!(tag_rows("CREATE TABLE"), None);
        assert_eq!(tag_rows("BEGIN"), None);
        assert_eq!(tag_rows("SELECT"), None);
        assert_eq!(tag_rows("SELECT "), None);
        assert_eq!(tag_rows("SELECT 5x"), None);
        assert_eq!(tag_rows("FETCH 18446744073709551615"), Some(u64::MAX));
        assert_eq!(tag_rows("FETCH 18446744073709551616"), None);
    }
}
