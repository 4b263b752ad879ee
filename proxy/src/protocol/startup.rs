//! The messages that open a connection. They have no type byte: a length, then a 32-bit
//! code that says what they are. Also the encoders for the proxy's own start-up towards the
//! database.

use bytes::{BufMut, BytesMut};

use super::{ProtocolError, Reader};

/// PostgreSQL refuses longer start-up packets; so do we.
pub const MAX_STARTUP_LEN: usize = 10_000;

const SSL_REQUEST: i32 = 80877103;
const GSSENC_REQUEST: i32 = 80877104;
const CANCEL_REQUEST: i32 = 80877102;
/// Protocol 3.0; the low 16 bits are the minor version.
pub const PROTOCOL_3: i32 = 3 << 16;

#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    Ssl,
    GssEnc,
    Cancel { pid: i32, secret: Vec<u8> },
    Startup(Startup),
}

/// A StartupMessage: protocol version and the parameters (user, database, options, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Startup {
    pub minor: u16,
    pub params: Vec<(String, String)>,
}

impl Startup {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Decodes a start-up packet body (everything after the length word).
pub fn decode(body: &[u8]) -> Result<Request, ProtocolError> {
    let mut r = Reader::new(body, "startup");
    let code = r.i32()?;
    match code {
        SSL_REQUEST => {
            r.finish()?;
            Ok(Request::Ssl)
        }
        GSSENC_REQUEST => {
            r.finish()?;
            Ok(Request::GssEnc)
        }
        CANCEL_REQUEST => {
            let pid = r.i32()?;
            let secret = r.bytes(body.len() - 8)?.to_vec();
            if secret.is_empty() || secret.len() > 256 {
                return Err(ProtocolError::new(
                    "CancelRequest with an invalid key length",
                ));
            }
            Ok(Request::Cancel { pid, secret })
        }
        v if v >> 16 == 3 => {
            let mut params = Vec::new();
            loop {
                let name = r.cstr()?;
                if name.is_empty() {
                    break;
                }
                let value = r.cstr()?;
                params.push((name.to_string(), value.to_string()));
            }
            r.finish()?;
            Ok(Request::Startup(Startup {
                minor: (v & 0xffff) as u16,
                params,
            }))
        }
        v => Err(ProtocolError::new(format!(
            "unsupported frontend protocol {}.{}: server supports 3.0",
            v >> 16,
            v & 0xffff
        ))),
    }
}

fn untyped(out: &mut BytesMut, body: impl FnOnce(&mut BytesMut)) {
    let at = out.len();
    out.put_i32(0);
    body(out);
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn ssl_request(out: &mut BytesMut) {
    untyped(out, |b| b.put_i32(SSL_REQUEST));
}

pub fn cancel_request(out: &mut BytesMut, pid: i32, secret: &[u8]) {
    untyped(out, |b| {
        b.put_i32(CANCEL_REQUEST);
        b.put_i32(pid);
        b.put_slice(secret);
    });
}

pub fn startup_message(out: &mut BytesMut, params: &[(&str, &str)]) {
    untyped(out, |b| {
        b.put_i32(PROTOCOL_3);
        for (k, v) in params {
            b.put_slice(k.as_bytes());
            b.put_u8(0);
            b.put_slice(v.as_bytes());
            b.put_u8(0);
        }
        b.put_u8(0);
    });
}

fn password_message(out: &mut BytesMut, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(b'p');
    untyped(out, body);
}

/// A cleartext PasswordMessage (used for RDS IAM tokens, always inside TLS).
pub fn password(out: &mut BytesMut, password: &str) {
    password_message(out, |b| {
        b.put_slice(password.as_bytes());
        b.put_u8(0);
    });
}

pub fn sasl_initial_response(out: &mut BytesMut, mechanism: &str, data: &[u8]) {
    password_message(out, |b| {
        b.put_slice(mechanism.as_bytes());
        b.put_u8(0);
        b.put_i32(data.len() as i32);
        b.put_slice(data);
    });
}

pub fn sasl_response(out: &mut BytesMut, data: &[u8]) {
    password_message(out, |b| b.put_slice(data));
}

/// Decodes the body of a client's PasswordMessage carrying a cleartext password.
pub fn password_body(body: &[u8]) -> Result<&str, ProtocolError> {
    let mut r = Reader::new(body, "PasswordMessage");
    let p = r.cstr()?;
    r.finish()?;
    Ok(p)
}

/// Decodes a SASLInitialResponse: mechanism name and initial data.
pub fn sasl_initial_body(body: &[u8]) -> Result<(&str, &[u8]), ProtocolError> {
    let mut r = Reader::new(body, "SASLInitialResponse");
    let mechanism = r.cstr()?;
    let len = r.i32()?;
    if len < 0 {
        return Err(ProtocolError::new("SASLInitialResponse without data"));
    }
    let data = r.bytes(len as usize)?;
    r.finish()?;
    Ok((mechanism, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_request_kind() {
        let mut out = BytesMut::new();
        startup_message(&mut out, &[("user", "alice"), ("database", "rates")]);
        match decode(&out[4..]).unwrap() {
            Request::Startup(s) => {
                assert_eq!(s.minor, 0);
                assert_eq!(s.get("user"), Some("alice"));
                assert_eq!(s.get("database"), Some("rates"));
            }
            other => panic!("{other:?}"),
        }
        let mut out = BytesMut::new();
        ssl_request(&mut out);
        assert_eq!(decode(&out[4..]).unwrap(), Request::Ssl);
        let mut out = BytesMut::new();
        cancel_request(&mut out, 42, &[1, 2, 3, 4]);
        assert_eq!(
            decode(&out[4..]).unwrap(),
            Request::Cancel {
                pid: 42,
                secret: vec![1, 2, 3, 4]
            }
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[0, 2, 0, 0]).is_err(), "protocol 2");
        assert!(decode(&[0, 3, 0, 0, b'u', b's']).is_err(), "unterminated");
        assert!(
            decode(&[0, 3, 0, 0, b'u', 0, b'x', 0]).is_err(),
            "missing final NUL"
        );
        assert!(
            decode(&[0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1]).is_err(),
            "empty cancel key"
        );
        assert!(decode(&[0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
