//! The byte streams of both legs, with or without TLS, and how the relay splits each into a
//! read half and a write half. Plain TCP splits for free; TLS needs tokio's shared split.

use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::either::Either;

/// The client's connection.
pub type ClientStream = Either<tokio_rustls::server::TlsStream<TcpStream>, TcpStream>;
/// The proxy's connection to the database.
pub type UpstreamStream = Either<tokio_rustls::client::TlsStream<TcpStream>, TcpStream>;

/// A stream the relay can read and write from two places at once.
pub trait Split {
    type Read: AsyncRead + Unpin + Send;
    type Write: AsyncWrite + Unpin + Send;
    fn split(self) -> (Self::Read, Self::Write);
}

impl Split for TcpStream {
    type Read = OwnedReadHalf;
    type Write = OwnedWriteHalf;
    fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send> Split for tokio_rustls::server::TlsStream<IO> {
    type Read = ReadHalf<Self>;
    type Write = WriteHalf<Self>;
    fn split(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send> Split for tokio_rustls::client::TlsStream<IO> {
    type Read = ReadHalf<Self>;
    type Write = WriteHalf<Self>;
    fn split(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

impl<A: Split, B: Split> Split for Either<A, B> {
    type Read = Either<A::Read, B::Read>;
    type Write = Either<A::Write, B::Write>;
    fn split(self) -> (Self::Read, Self::Write) {
        match self {
            Either::Left(a) => {
                let (r, w) = a.split();
                (Either::Left(r), Either::Left(w))
            }
            Either::Right(b) => {
                let (r, w) = b.split();
                (Either::Right(r), Either::Right(w))
            }
        }
    }
}
