//! A WebSocket's transport, server or client end: clear TCP, or TLS over it (wss://).

use std::io;
use std::net::TcpStream;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use futures_rustls::client::TlsStream;
use smol::Async;

use super::server_stream::ServerStream;

/// Boxed TLS: rustls's state is large, and clear connections should not carry room for it.
pub enum Transport {
    Plain(Async<TcpStream>),
    /// The server's end of wss://.
    Tls(Box<ServerStream>),
    /// The client's end (`device`, `actuate`), where a connection's bytes matter less.
    TlsClient(Box<TlsStream<Async<TcpStream>>>),
}

impl Transport {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(io) => io.get_ref(),
            Transport::Tls(tls) => tls.tcp(),
            Transport::TlsClient(tls) => tls.get_ref().0.get_ref(),
        }
    }

    /// Whether a read may find something: for clear TCP, whether the reactor has seen the
    /// socket readable since the last time this said `Pending` (async-io's readiness); TLS may
    /// hold decrypted data already read, so it is always worth a read.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Transport::Plain(io) => io.poll_readable(cx),
            Transport::Tls(_) | Transport::TlsClient(_) => Poll::Ready(Ok(())),
        }
    }

    /// Whether TLS holds records that the socket has not taken yet. A write reports its bytes
    /// taken once they are encrypted, as the kernel does once they are in its buffer; but unlike
    /// the kernel, TLS sends what it holds only when written to or flushed again.
    pub fn holds_output(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(tls) => tls.holds_output(),
            Transport::TlsClient(tls) => tls.get_ref().1.wants_write(),
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
            Transport::TlsClient(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
            Transport::TlsClient(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(io) => Pin::new(io).poll_flush(cx),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
            Transport::TlsClient(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(io) => Pin::new(io).poll_close(cx),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_close(cx),
            Transport::TlsClient(tls) => Pin::new(tls.as_mut()).poll_close(cx),
        }
    }
}
