//! A connection's socket with a cork: while corked, writes are collected and a flush does
//! nothing; uncorking writes them all at once. A burst of actuations for one device then costs
//! one `write` (on loopback the kernel charges the whole receive path to the writer, so each
//! syscall saved is several microseconds).
//!
//! tungstenite writes every frame and flushes after each `send`; the cork sits below it, so
//! the frames themselves are exactly what it would have written one by one.
//!
//! Reading goes the other way: tungstenite is given a small read buffer (it keeps it for the
//! connection's life, grown to the largest message read, and an idle device's connection
//! should cost little), so its reads are small. Each small read is served from one large
//! read of the socket into a scratch buffer shared by the thread's connections; what does not
//! fit is kept by this connection only until tungstenite asks for it. A burst of actuations
//! from the dashboard still costs one `read` per 16 KiB, and an idle connection holds nothing.

use std::io;
use std::net::TcpStream;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use smol::Async;

/// Most bytes held back; a larger burst is written as it goes.
const CORK_LIMIT: usize = 16 * 1024;
/// One socket read at most; smaller reads are served from a read this large.
const READ_AHEAD: usize = 16 * 1024;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; READ_AHEAD]);
}

pub struct Corked {
    io: Async<TcpStream>,
    held: Vec<u8>,
    corked: bool,
    /// Read from the socket, not yet given to tungstenite (empty and unallocated when idle).
    read_ahead: Vec<u8>,
    read_at: usize,
}

impl Corked {
    pub fn new(io: Async<TcpStream>) -> Corked {
        Corked { io, held: Vec::new(), corked: false, read_ahead: Vec::new(), read_at: 0 }
    }

    /// Gives out what was read ahead; frees the buffer once it is all given.
    fn take_read_ahead(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.read_ahead.len() - self.read_at);
        buf[..n].copy_from_slice(&self.read_ahead[self.read_at..self.read_at + n]);
        self.read_at += n;
        if self.read_at == self.read_ahead.len() {
            self.read_ahead = Vec::new();
            self.read_at = 0;
        }
        n
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
        let this = self.get_mut();
        if this.read_at < this.read_ahead.len() {
            return Poll::Ready(Ok(this.take_read_ahead(buf)));
        }
        if buf.len() >= READ_AHEAD {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let n = ready!(Pin::new(&mut this.io).poll_read(cx, &mut scratch))?;
            let given = n.min(buf.len());
            buf[..given].copy_from_slice(&scratch[..given]);
            if n > given {
                this.read_ahead = scratch[given..n].to_vec();
            }
            Poll::Ready(Ok(given))
        })
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
    fn small_reads_are_served_from_one_socket_read_in_order() {
        smol::block_on(async {
            let listener = Async::<std::net::TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
            let addr = listener.get_ref().local_addr().unwrap();
            let mut client = Async::<TcpStream>::connect(addr).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let mut corked = Corked::new(server);
            let sent: Vec<u8> = (0..5_000u32).map(|i| (i % 251) as u8).collect();
            client.write_all(&sent).await.unwrap();
            drop(client);
            let mut got = Vec::new();
            let mut small = [0u8; 7];
            loop {
                let n = corked.read(&mut small).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&small[..n]);
            }
            assert_eq!(got, sent);
            assert_eq!(corked.read_ahead.capacity(), 0, "nothing kept once all is read");
        });
    }

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
