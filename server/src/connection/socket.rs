//! A connection's socket, as tungstenite sees it: writes never wait, reads are rationed.
//!
//! **Writes** are queued here in user space and always accepted at once, so that sending a frame
//! never blocks the connection's task: its timers (register timeout, keepalive, the stall
//! deadline) keep running while a peer does not read. The task writes the queue out with
//! [`Socket::poll_send`] whenever the socket takes bytes, and bounds the queue itself (it knows
//! which frames are actuations, to be given back when the connection ends unwritten). A burst
//! of frames queued in one turn leaves in one `write` (on loopback the kernel charges the whole
//! receive path to the writer, so each syscall saved is several microseconds).
//!
//! The queue remembers where each `write` call from tungstenite ended: tungstenite writes whole
//! frames, so these are frame boundaries, and the queue can be cut back to one
//! ([`Socket::cut_unsent`]) without ever leaving half a frame on the wire.
//!
//! **Reads** are rationed: after [`READ_BUDGET`] bytes or [`READS_PER_TURN`] reads in one turn
//! the socket reports "not ready" once (and wakes its task at once), so that a peer streaming
//! tiny frames that tungstenite swallows (empty pongs, empty continuations) cannot keep the one
//! executor thread in its loop. tungstenite is given a small read buffer (it keeps it for the
//! connection's life), so each small read is served from one large read of the socket into a
//! scratch buffer shared by the thread's connections; what does not fit is kept by this
//! connection only until tungstenite asks for it.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use futures_lite::{AsyncRead, AsyncWrite};

use crate::ops::census::{self, Owner};
use crate::tls::Transport;

/// One socket read at most; smaller reads are served from a read this large.
const READ_AHEAD: usize = 16 * 1024;
/// Most bytes handed to tungstenite in one turn of the connection's task.
pub const READ_BUDGET: usize = 64 * 1024;
/// Most reads in one turn: tungstenite asks for 128 bytes at a time, so this and
/// [`READ_BUDGET`] bite together on a stream of tiny frames (64 KiB, ~11,000 empty frames).
pub const READS_PER_TURN: u16 = 512;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; READ_AHEAD]);
}

pub struct Socket {
    io: Transport,
    /// Queued output; `None` while there is none (most connections, most of the time).
    out: Option<Box<OutQueue>>,
    /// How far the socket has taken the connection's output stream, in bytes.
    written: u64,
    /// Read from the socket, not yet given to tungstenite (empty and unallocated when idle).
    read_ahead: Box<[u8]>,
    read_at: u32,
    /// This turn's reads so far, in bytes and calls.
    turn_bytes: u32,
    turn_reads: u16,
    /// The last read of the socket found nothing: the next waits until the reactor has seen it
    /// readable since (see [`Socket::read_socket`]).
    drained: bool,
    /// Bytes given to tungstenite so far, the head's leftover included (saturating): when it is
    /// exactly what the frames read add up to, tungstenite holds no byte unread.
    handed: u32,
}

/// Output waiting for the socket.
struct OutQueue {
    /// `buf[at..]` is unsent.
    buf: Vec<u8>,
    at: usize,
    /// Where queued writes ended (frame boundaries) past `written`, oldest first.
    boundaries: VecDeque<u64>,
    /// The last boundary the socket has reached: where the frame under way started.
    frame_start: u64,
    /// When the socket last took a byte, or the queue was started.
    progress_at: Instant,
}

impl Socket {
    /// `handed` bytes were read before (the head's leftover) and given to tungstenite directly.
    pub fn new(io: Transport, handed: usize) -> Socket {
        let handed = u32::try_from(handed).unwrap_or(u32::MAX);
        Socket {
            io,
            out: None,
            written: 0,
            read_ahead: Box::default(),
            read_at: 0,
            turn_bytes: 0,
            turn_reads: 0,
            drained: false,
            handed,
        }
    }

    /// Bytes given to tungstenite so far (at most `u32::MAX`).
    pub fn handed(&self) -> u32 {
        self.handed
    }

    /// Output queued and not yet taken by the socket.
    pub fn unsent(&self) -> usize {
        self.out.as_ref().map_or(0, |q| q.buf.len() - q.at)
    }

    /// Whether output waits: queued, or encrypted and not yet taken by the socket (TLS).
    pub fn has_output(&self) -> bool {
        self.out.is_some() || self.io.holds_output()
    }

    /// The end of everything queued so far, as a position in the output stream.
    pub fn queued(&self) -> u64 {
        self.written + self.unsent() as u64
    }

    /// How far the socket has taken the output stream.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Since when output has waited without the socket taking a byte of it, if any waits.
    pub fn waiting_since(&self) -> Option<Instant> {
        self.out.as_ref().map(|q| q.progress_at)
    }

    /// The peer's address, for a log line (asked of the socket: not worth keeping per
    /// connection).
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.io.tcp().peer_addr().ok()
    }

    /// Writes queued output until the queue is empty or the socket is full. `Ready(Ok(n))`:
    /// `n` bytes were taken (0 when nothing was queued: then TLS records that waited went out).
    pub fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(q) = self.out.as_mut() else {
            // Only TLS records may wait: sent by a flush.
            if self.io.holds_output() {
                ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            }
            return Poll::Ready(Ok(0));
        };
        let mut total = 0;
        while q.at < q.buf.len() {
            match Pin::new(&mut self.io).poll_write(cx, &q.buf[q.at..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    q.at += n;
                    self.written += n as u64;
                    total += n;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if total > 0 => break,
                Poll::Pending => return Poll::Pending,
            }
        }
        q.progress_at = Instant::now();
        while let Some(b) = q.boundaries.front().copied().filter(|b| *b <= self.written) {
            q.frame_start = b;
            q.boundaries.pop_front();
        }
        if q.at == q.buf.len() {
            // All taken: an idle connection keeps no buffer.
            self.out = None;
        }
        Poll::Ready(Ok(total))
    }

    /// Drops queued output after the frame being written now (or all of it, if no frame is
    /// half written): the connection is giving up on its peer. Returns where the output stream
    /// now ends; frames ending past it will never be written.
    pub fn cut_unsent(&mut self) -> u64 {
        let Some(q) = self.out.as_mut() else { return self.written };
        // Mid-frame: the socket has taken part of a frame but not all of it.
        let keep_to = match q.boundaries.front() {
            Some(end) if self.written != q.frame_start => *end,
            _ => self.written,
        };
        q.buf.truncate(q.at + (keep_to - self.written) as usize);
        q.boundaries.retain(|b| *b <= keep_to);
        if q.at == q.buf.len() {
            self.out = None;
        }
        keep_to
    }

    /// Gives out what was read ahead; frees the buffer once it is all given.
    fn take_read_ahead(&mut self, buf: &mut [u8]) -> usize {
        let at = self.read_at as usize;
        let n = buf.len().min(self.read_ahead.len() - at);
        buf[..n].copy_from_slice(&self.read_ahead[at..at + n]);
        self.read_at += n as u32;
        if at + n == self.read_ahead.len() {
            self.read_ahead = Box::default();
            self.read_at = 0;
        }
        n
    }

    /// Counts a read against this turn's ration; `true` when the ration is spent and the
    /// reader must yield first.
    fn ration_spent(&mut self, cx: &mut Context<'_>) -> bool {
        if self.turn_bytes as usize >= READ_BUDGET || self.turn_reads >= READS_PER_TURN {
            self.turn_bytes = 0;
            self.turn_reads = 0;
            // Not ready now, but at once: the task goes to the back of the executor's queue.
            cx.waker().wake_by_ref();
            return true;
        }
        self.turn_reads += 1;
        false
    }

    fn read_uncounted(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if (self.read_at as usize) < self.read_ahead.len() {
            return Poll::Ready(Ok(self.take_read_ahead(buf)));
        }
        if buf.len() >= READ_AHEAD {
            return self.read_socket(cx, buf);
        }
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let n = ready!(self.read_socket(cx, &mut scratch))?;
            let given = n.min(buf.len());
            buf[..given].copy_from_slice(&scratch[..given]);
            if n > given {
                self.read_ahead = scratch[given..n].into();
            }
            Poll::Ready(Ok(given))
        })
    }

    /// Reads the socket, but once a read has found nothing, not again until the reactor has
    /// seen the socket readable since: a device's task wakes for each actuation it is sent, and
    /// a read that finds nothing costs a syscall each time. (A TLS stream is always read: data
    /// may wait inside it.)
    fn read_socket(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if self.drained {
            ready!(self.io.poll_readable(cx))?;
        }
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        self.drained = read.is_pending();
        read
    }

    fn rationed_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if self.ration_spent(cx) {
            return Poll::Pending;
        }
        match self.read_uncounted(cx, buf) {
            Poll::Ready(Ok(n)) => {
                self.turn_bytes += n as u32;
                self.handed = self.handed.saturating_add(n as u32);
                Poll::Ready(Ok(n))
            }
            Poll::Pending => {
                // The peer has nothing more for now: the next burst starts a new ration.
                self.turn_bytes = 0;
                self.turn_reads = 0;
                Poll::Pending
            }
            other => other,
        }
    }

    /// Queues one write of tungstenite's (a whole frame), remembering where it ends.
    fn queue(&mut self, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.queue_parts(&[buf]);
        Poll::Ready(Ok(buf.len()))
    }

    /// Queues a text frame from the server (unmasked, final) holding `parts` one after the
    /// other, past tungstenite: an actuation is framed here straight into the queue, without a
    /// `String`, a `Message` and tungstenite's own output buffer (which would keep the largest
    /// frame's capacity for the connection's life). Only whole frames go to the queue, so
    /// tungstenite's frames and these never interleave.
    pub fn queue_text_frame(&mut self, parts: [&str; 3]) {
        let length: usize = parts.iter().map(|p| p.len()).sum();
        let extended = extended_length_bytes(length);
        let mut header = [0u8; 10];
        header[0] = 0x81; // FIN, text
        header[1] = match extended {
            0 => length as u8,
            2 => 126,
            _ => 127,
        };
        header[2..2 + extended].copy_from_slice(&(length as u64).to_be_bytes()[8 - extended..]);
        let header = &header[..2 + extended];
        let pieces = [header, parts[0].as_bytes(), parts[1].as_bytes(), parts[2].as_bytes()];
        census::scope(Owner::Buffers, || self.queue_parts(&pieces));
    }

    /// Queues `pieces` as one write: one frame, one boundary after it.
    fn queue_parts(&mut self, pieces: &[&[u8]]) {
        let written = self.written;
        let q = self.out.get_or_insert_with(|| {
            Box::new(OutQueue {
                buf: Vec::new(),
                at: 0,
                boundaries: VecDeque::new(),
                frame_start: written,
                progress_at: Instant::now(),
            })
        });
        for piece in pieces {
            q.buf.extend_from_slice(piece);
        }
        q.boundaries.push_back(written + (q.buf.len() - q.at) as u64);
    }
}

/// What one frame from a client (masked) of a `payload`-byte message takes on the wire with the
/// shortest header: the least tungstenite consumed for it. A longer header, or the message in
/// several frames, takes more; so when [`Socket::handed`] equals this for the only message read,
/// tungstenite holds nothing unread.
pub fn masked_frame_bytes(payload: usize) -> u32 {
    u32::try_from(2 + extended_length_bytes(payload) + 4 + payload).unwrap_or(u32::MAX)
}

/// The bytes of the extended payload length a frame of `payload` bytes carries, with the
/// shortest encoding (RFC 6455, 5.2): none up to 125, 16 bits up to 65,535, else 64 bits.
fn extended_length_bytes(payload: usize) -> usize {
    match payload {
        0..=125 => 0,
        126..=65_535 => 2,
        _ => 8,
    }
}

impl AsyncRead for Socket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        census::scope(Owner::Buffers, || self.get_mut().rationed_read(cx, buf))
    }
}

impl AsyncWrite for Socket {
    /// Always takes everything: the connection bounds its queue itself.
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        census::scope(Owner::Buffers, || self.get_mut().queue(buf))
    }

    /// Nothing to do: the connection's task writes the queue out as the socket takes it.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
    use std::io::Read;
    use std::sync::Arc;

    /// A server-side `Socket` and the blocking client end of the same loopback connection.
    fn pair() -> (Socket, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (Socket::new(Transport::Plain(smol::Async::new(server).unwrap()), 0), client)
    }

    fn send_all(socket: &mut Socket) {
        smol::block_on(async {
            while socket.unsent() > 0 {
                future::poll_fn(|cx| socket.poll_send(cx)).await.unwrap();
            }
        });
    }

    #[test]
    fn a_masked_frame_takes_its_payload_a_mask_and_the_shortest_length() {
        for (payload, wire) in [(0, 6), (125, 131), (126, 134), (65_535, 65_543), (65_536, 65_550)] {
            assert_eq!(masked_frame_bytes(payload), wire, "{payload} bytes");
            // The same as a client's frame of that size, built the way the tests build them.
            assert_eq!(wire as usize, client_frame_len(payload));
        }
        assert_eq!(masked_frame_bytes(usize::MAX - 100), u32::MAX);
    }

    /// An independent count: the length of tungstenite's own masked frame of `payload` bytes.
    fn client_frame_len(payload: usize) -> usize {
        use async_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        use async_tungstenite::tungstenite::protocol::frame::Frame;
        let mut frame = Frame::message(vec![0u8; payload], OpCode::Data(Data::Text), true);
        frame.header_mut().mask = Some([1, 2, 3, 4]);
        frame.len()
    }

    #[test]
    fn a_text_frame_queued_here_is_the_one_tungstenite_would_write() {
        use async_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        use async_tungstenite::tungstenite::protocol::frame::Frame;
        for length in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let (mut socket, _client) = pair();
            let text = "x".repeat(length);
            let (a, b) = text.split_at(length / 3);
            socket.queue_text_frame(["", a, b]);
            let mut expected = Vec::new();
            Frame::message(text.clone(), OpCode::Data(Data::Text), true).format(&mut expected).unwrap();
            let q = socket.out.as_ref().unwrap();
            assert_eq!(q.buf, expected, "{length} bytes");
            assert_eq!(q.boundaries, [expected.len() as u64], "one frame, one boundary");
        }
    }

    #[test]
    fn writes_are_queued_at_once_and_leave_when_sent_in_order() {
        let (mut socket, mut client) = pair();
        smol::block_on(async {
            socket.write_all(b"one ").await.unwrap();
            socket.write_all(b"two").await.unwrap();
            socket.flush().await.unwrap();
        });
        assert_eq!((socket.unsent(), socket.queued(), socket.written()), (7, 7, 0));
        send_all(&mut socket);
        assert_eq!((socket.unsent(), socket.written()), (0, 7));
        assert!(socket.out.is_none(), "a drained queue keeps no buffer");
        drop(socket);
        let mut got = String::new();
        client.read_to_string(&mut got).unwrap();
        assert_eq!(got, "one two");
    }

    #[test]
    fn a_cut_keeps_the_frame_under_way_whole_and_drops_the_rest() {
        let (mut socket, _client) = pair();
        smol::block_on(async {
            for frame in [&b"aaaa"[..], b"bbbb", b"cccc"] {
                socket.write_all(frame).await.unwrap();
            }
        });
        // As if the socket had taken the first frame and half of the second.
        let q = socket.out.as_mut().unwrap();
        q.at = 6;
        q.frame_start = 4;
        q.boundaries.pop_front();
        socket.written = 6;
        assert_eq!(socket.cut_unsent(), 8);
        let q = socket.out.as_ref().unwrap();
        assert_eq!(&q.buf[q.at..], b"bb");
        assert_eq!(socket.queued(), 8);
        // Between two frames, everything unsent goes, and so does the queue.
        let (mut socket, _client) = pair();
        smol::block_on(async {
            for frame in [&b"aaaa"[..], b"bbbb"] {
                socket.write_all(frame).await.unwrap();
            }
        });
        let q = socket.out.as_mut().unwrap();
        q.at = 4;
        q.frame_start = 4;
        q.boundaries.pop_front();
        socket.written = 4;
        assert_eq!(socket.cut_unsent(), 4);
        assert_eq!(socket.unsent(), 0);
        assert!(socket.out.is_none() && socket.waiting_since().is_none());
    }

    #[test]
    fn a_cut_after_real_partial_writes_never_splits_a_frame() {
        let (mut socket, mut client) = pair();
        let frame = vec![7u8; 100_000];
        smol::block_on(async {
            for _ in 0..50 {
                socket.write_all(&frame).await.unwrap();
            }
        });
        // The client reads nothing: the socket takes what the kernel buffers hold.
        let _ = future::block_on(future::poll_once(future::poll_fn(|cx| socket.poll_send(cx))));
        let written = socket.written();
        assert!(written > 0 && written < 5_000_000, "{written}");
        let end = socket.cut_unsent();
        assert_eq!(end % 100_000, 0, "the stream ends on a frame boundary");
        assert!(end >= written);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            client.read_to_end(&mut got).unwrap();
            got.len() as u64
        });
        send_all(&mut socket);
        drop(socket);
        assert_eq!(reader.join().unwrap(), end);
    }

    /// Over TLS, a write that leaves records in rustls (the socket full) empties the queue, yet
    /// output waits: it must still count, and leave once the socket takes it.
    #[test]
    fn tls_records_held_back_count_as_output_and_leave_when_the_socket_takes_them() {
        use rustls::pki_types::pem::PemObject;
        let testdata = concat!(env!("CARGO_MANIFEST_DIR"), "/src/tls/testdata/localhost");
        let (cert, key) = (format!("{testdata}.crt"), format!("{testdata}.key"));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (go, wait_for_go) = std::sync::mpsc::channel::<()>();
        let ca = rustls::pki_types::CertificateDer::from_pem_file(&cert).unwrap();
        let client = std::thread::spawn(move || {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca).unwrap();
            let config =
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(roots)
                    .with_no_client_auth();
            let tcp = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            tcp.set_recv_buffer_size(4096).unwrap();
            tcp.connect(&addr.into()).unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
            let mut tls = rustls::StreamOwned::new(connection, std::net::TcpStream::from(tcp));
            while tls.conn.is_handshaking() {
                tls.conn.complete_io(&mut tls.sock).unwrap();
            }
            wait_for_go.recv().unwrap();
            let mut got = Vec::new();
            // The server drops the connection without close_notify: what came is what counts.
            let _ = tls.read_to_end(&mut got);
            got.len()
        });
        let (server, _) = listener.accept().unwrap();
        socket2::SockRef::from(&server).set_send_buffer_size(4096).unwrap();
        let acceptor = crate::tls::acceptor(crate::tls::Certificate::load(cert.as_ref(), key.as_ref()).unwrap());
        let sent = smol::block_on(async {
            let transport = crate::tls::accept(&acceptor, smol::Async::new(server).unwrap()).await.unwrap();
            let mut socket = Socket::new(transport, 0);
            let mut sent = 0;
            // Frames until one is taken whole by rustls but not by the full socket.
            loop {
                socket.write_all(&[7u8; 1000]).await.unwrap();
                sent += 1000;
                let _ = future::poll_once(future::poll_fn(|cx| socket.poll_send(cx))).await;
                if socket.unsent() == 0 && socket.io.holds_output() {
                    break;
                }
                assert!(sent < 64 << 20, "the socket never filled up");
            }
            assert!(socket.has_output(), "records held by TLS are output still to send");
            go.send(()).unwrap();
            let deadline = Instant::now() + std::time::Duration::from_secs(10);
            while socket.has_output() && Instant::now() < deadline {
                let sending = future::poll_fn(|cx| socket.poll_send(cx));
                let _ = future::or(async { Some(sending.await) }, async {
                    smol::Timer::at(deadline).await;
                    None
                })
                .await;
            }
            assert!(!socket.has_output(), "TLS records still held after the peer read");
            sent
        });
        assert_eq!(client.join().unwrap(), sent);
    }

    #[test]
    fn reads_are_rationed_per_turn_then_resume() {
        let (mut socket, mut client) = pair();
        std::io::Write::write_all(&mut client, &vec![1u8; 64 * 1024]).unwrap();
        let waker = futures_lite::future::block_on(future::poll_fn(|cx| Poll::Ready(cx.waker().clone())));
        let mut cx = Context::from_waker(&waker);
        let mut buf = [0u8; 16];
        let mut reads = 0;
        let mut total = 0;
        // Wait for the bytes to arrive, then count the reads of one turn.
        std::thread::sleep(std::time::Duration::from_millis(50));
        loop {
            match Pin::new(&mut socket).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(n)) => {
                    reads += 1;
                    total += n;
                }
                Poll::Ready(Err(e)) => panic!("{e}"),
                Poll::Pending => break,
            }
        }
        assert_eq!(reads, READS_PER_TURN);
        assert_eq!(total, usize::from(READS_PER_TURN) * 16);
        // The next turn reads again.
        let n = smol::block_on(socket.read(&mut buf)).unwrap();
        assert_eq!(n, 16);
    }
}
