//! The PostgreSQL v3 wire protocol, as much of it as the proxy needs.
//!
//! The relay never re-encodes what it forwards: [`frame`] only finds message boundaries,
//! [`frontend`] decodes the few client messages the audit needs, [`backend`] decodes the few
//! server messages that carry outcomes and encodes the messages the proxy itself sends.
//! [`startup`] covers the untyped messages that open a connection; [`sqlstate`] names the
//! error codes the proxy sends.

pub mod backend;
pub mod frame;
pub mod frontend;
pub mod sqlstate;
pub mod startup;

/// A message that does not follow the protocol. The text is safe to show the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ProtocolError(pub String);

impl ProtocolError {
    pub fn new(msg: impl Into<String>) -> Self {
        ProtocolError(msg.into())
    }
}

/// A little cursor over a message body: every read is bounds-checked, so a truncated or
/// lying message is an error, never a panic.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    fn short(&self) -> ProtocolError {
        ProtocolError(format!("{} message is truncated", self.what))
    }

    pub fn u8(&mut self) -> Result<u8, ProtocolError> {
        let (&b, rest) = self.buf.split_first().ok_or_else(|| self.short())?;
        self.buf = rest;
        Ok(b)
    }

    pub fn i16(&mut self) -> Result<i16, ProtocolError> {
        let b = self.bytes(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub fn i32(&mut self) -> Result<i32, ProtocolError> {
        let b = self.bytes(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.buf.len() < n {
            return Err(self.short());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// A NUL-terminated string; must be UTF-8 (the proxy only accepts UTF-8 clients).
    pub fn cstr(&mut self) -> Result<&'a str, ProtocolError> {
        let end = self.buf.iter().position(|&b| b == 0).ok_or_else(|| {
            ProtocolError(format!("{} message: string not terminated", self.what))
        })?;
        if end == 0 {
            // The unnamed statement or portal, in most messages of most drivers.
            self.buf = &self.buf[1..];
            return Ok("");
        }
        let s = std::str::from_utf8(&self.buf[..end])
            .map_err(|_| ProtocolError(format!("{} message: string is not UTF-8", self.what)))?;
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    pub fn finish(&self) -> Result<(), ProtocolError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError(format!(
                "{} message has trailing bytes",
                self.what
            )))
        }
    }
}
