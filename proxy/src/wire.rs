//! Whole-message reads for the start-up phases (TLS negotiation, authentication, the
//! proxy's upstream login). The relay has its own streaming loops.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::protocol::{frame, startup, ProtocolError};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed")]
    Closed,
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one typed message of at most `max` bytes. `buf` keeps what was read beyond it.
pub async fn read_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max: usize,
) -> Result<(u8, BytesMut), ReadError> {
    loop {
        if let Some((h, _)) = frame::complete(buf, max).map_err(ProtocolError::from)? {
            let mut msg = buf.split_to(h.total);
            msg.advance(frame::HEADER_LEN);
            return Ok((h.tag, msg));
        }
        buf.reserve(4096);
        if stream.read_buf(buf).await? == 0 {
            return Err(ReadError::Closed);
        }
    }
}

/// Reads one untyped start-up packet (length word, then body) and decodes it.
pub async fn read_startup<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<startup::Request, ReadError> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(ReadError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if !(8..=startup::MAX_STARTUP_LEN).contains(&len) {
        return Err(ProtocolError::new(format!("invalid length of startup packet: {len}")).into());
    }
    let mut body = vec![0u8; len - 4];
    stream.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ReadError::Closed
        } else {
            e.into()
        }
    })?;
    Ok(startup::decode(&body)?)
}
