//! Before the start-up message: SSLRequest, GSSENCRequest or direct TLS.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;

use crate::protocol::startup::Request;
use crate::stream::ClientStream;
use crate::wire::{self, ReadError};

/// A TLS ClientHello starts with this byte: a client using direct TLS (`sslnegotiation=direct`).
const TLS_HANDSHAKE: u8 = 0x16;

/// SSLRequest / GSSENCRequest / direct TLS, until the client sends its StartupMessage (or a
/// CancelRequest).
pub(super) async fn negotiate(
    tls: Option<&TlsAcceptor>,
    mut tcp: TcpStream,
) -> Result<(ClientStream, Request), ReadError> {
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 1 && first[0] == TLS_HANDSHAKE {
        let Some(acceptor) = tls else {
            return Err(crate::protocol::ProtocolError::new(
                "direct TLS without a server certificate",
            )
            .into());
        };
        let mut tls = acceptor.accept(tcp).await?;
        let request = wire::read_startup(&mut tls).await?;
        return Ok((Either::Left(tls), request));
    }
    // A client may try GSSAPI encryption first, then TLS: allow a few rounds.
    for _ in 0..3 {
        match wire::read_startup(&mut tcp).await? {
            Request::Ssl => match tls {
                Some(acceptor) => {
                    tcp.write_all(b"S").await?;
                    let mut tls = acceptor.accept(tcp).await?;
                    let request = wire::read_startup(&mut tls).await?;
                    if matches!(request, Request::Ssl | Request::GssEnc) {
                        return Err(crate::protocol::ProtocolError::new(
                            "encryption requested twice",
                        )
                        .into());
                    }
                    return Ok((Either::Left(tls), request));
                }
                None => tcp.write_all(b"N").await?,
            },
            Request::GssEnc => tcp.write_all(b"N").await?,
            other => return Ok((Either::Right(tcp), other)),
        }
    }
    Err(crate::protocol::ProtocolError::new("too many encryption requests").into())
}
