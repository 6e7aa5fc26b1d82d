//! A connection's socket with a cork: while corked, writes are collected and a flush does
//! nothing; uncorking writes them all at once. A burst of actuations for one device then costs
//! one `write` (on loopback the kernel charges the whole receive path to the writer, so each
//! syscall saved is several microseconds).
//!
//! tungstenite writes every frame and flushes after each `send`; the cork sits below it, so
//! the frames themselves are exactly what it would have written one by one.

use std::io;
use std::net::TcpStream;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use smol::Async;

/// Most bytes held back; a larger burst is written as it goes.
const CORK_LIMIT: usize = 16 * 1024;

pub struct Corked {
    io: Async<TcpStream>,
    held: Vec<u8>,
    corked: bool,
}

impl Corked {
    pub fn new(io: Async<TcpStream>) -> Corked {
        Corked { io, held: Vec::new(), corked: false }
    }

    /// From now on writes are held until [`uncork`](Corked::uncork) and a flush.
    pub fn cork(&mut self) {
        self.corked = true;
    }

    /// Stops holding writes back; the next flush writes what was held.
    pub fn uncork(&mut self) {
        self.corked = false;
    }

    /// Writes out what is held, then frees the buffer: an idle connection keeps none.
    fn poll_release(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.held.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.held))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.held.drain(..n);
        }
        if self.held.capacity() > 0 {
            self.held = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Corked {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Corked {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.corked && this.held.len() + buf.len() <= CORK_LIMIT {
            this.held.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        ready!(this.poll_release(cx))?;
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.corked {
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_release(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_release(cx))?;
        Pin::new(&mut this.io).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn corked_writes_arrive_together_after_uncork_and_flush() {
        smol::block_on(async {
            let listener = Async::<std::net::TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
            let addr = listener.get_ref().local_addr().unwrap();
            let client = Async::<TcpStream>::connect(addr).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let mut corked = Corked::new(server);
            corked.cork();
            corked.write_all(b"one ").await.unwrap();
            corked.write_all(b"two").await.unwrap();
            corked.flush().await.unwrap();
            assert_eq!(corked.held, b"one two");
            corked.uncork();
            corked.flush().await.unwrap();
            assert_eq!(corked.held.capacity(), 0);
            drop(corked);
            let mut got = String::new();
            let mut client = client;
            client.read_to_string(&mut got).await.unwrap();
            assert_eq!(got, "one two");
        });
    }
}
