//! Message boundaries. After start-up every message is a type byte and a big-endian length
//! that counts itself but not the type byte. The relay reads only these five bytes of most
//! messages and forwards the rest untouched.

use super::ProtocolError;

/// Bytes in a message header: type + length.
pub const HEADER_LEN: usize = 5;

/// One message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    /// Length of the whole message, type byte included.
    pub total: usize,
}

impl Header {
    /// Length of the body, after the header.
    pub fn body_len(&self) -> usize {
        self.total - HEADER_LEN
    }
}

/// A header that cannot start a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A length below 4 counts less than itself.
    #[error("invalid message length {len} for message type {:?}", printable(*.tag))]
    Length { tag: u8, len: usize },
    #[error("message of type {:?} is {total} bytes, over the limit of {max}", printable(*.tag))]
    TooLarge { tag: u8, total: usize, max: usize },
}

impl From<FrameError> for ProtocolError {
    fn from(e: FrameError) -> Self {
        ProtocolError(e.to_string())
    }
}

/// Reads the header at the start of `buf`. `Ok(None)` when fewer than five bytes are there.
/// A length below 4 (which would count less than itself) or above `max` is an error.
pub fn header(buf: &[u8], max: usize) -> Result<Option<Header>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let tag = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len < 4 {
        return Err(FrameError::Length { tag, len });
    }
    let total = len + 1;
    if total > max {
        return Err(FrameError::TooLarge { tag, total, max });
    }
    Ok(Some(Header { tag, total }))
}

/// A complete message at the start of `buf`: its header and body, if all of it is there.
pub fn complete(buf: &[u8], max: usize) -> Result<Option<(Header, &[u8])>, FrameError> {
    match header(buf, max)? {
        Some(h) if buf.len() >= h.total => Ok(Some((h, &buf[HEADER_LEN..h.total]))),
        _ => Ok(None),
    }
}

/// The type byte as a char when printable, for error messages.
pub fn printable(tag: u8) -> char {
    if tag.is_ascii_graphic() {
        tag as char
    } else {
        '?'
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_headers_and_refuses_bad_lengths() {
        let msg = [b'Q', 0, 0, 0, 9, b's', b'e', b'l', 0];
        assert_eq!(header(&msg[..4], 100), Ok(None));
        let h = header(&msg, 100).unwrap().unwrap();
        assert_eq!((h.tag, h.total, h.body_len()), (b'Q', 10, 5));
        assert_eq!(complete(&msg, 100), Ok(None), "one byte missing");
        assert!(header(&[b'Q', 0, 0, 0, 3], 100).is_err(), "length below 4");
        assert!(header(&[b'Q', 0, 0, 1, 0], 100).is_err(), "over the limit");
        let full = [b'S', 0, 0, 0, 4];
        assert_eq!(complete(&full, 100).unwrap().unwrap().1, &[] as &[u8]);
    }
}
