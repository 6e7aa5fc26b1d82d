//! The server end of wss://, driven by hand through rustls's unbuffered API so that an idle
//! connection keeps no buffer at all.
//!
//! rustls's ordinary connection keeps a 4 KiB read buffer for a connection's whole life, which made
//! an idle TLS device cost three times a clear one (BENCHMARKS.md, "TLS"). Here the ciphertext is
//! read into a buffer the thread's connections share, as `Socket` does for tungstenite, and
//! decrypted from there; a connection keeps bytes of its own only while they wait: the start of a
//! record not yet whole, decrypted data not yet read, records the socket has not yet taken.
//!
//! Writes: plaintext is encrypted only once the records before it are all taken by the socket,
//! and at most one record's worth ([`MAX_PLAIN_PER_WRITE`]) at a time, so what waits encrypted is
//! bounded by one record; the connection's own queue holds the rest, where it is counted.

use std::io;
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_lite::{future, AsyncRead, AsyncWrite};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, ReadTraffic, UnbufferedStatus};
use rustls::ServerConfig;
use smol::Async;

/// Most plaintext encrypted by one write: TLS's largest record.
pub const MAX_PLAIN_PER_WRITE: usize = 16 * 1024;
/// One socket read at most: a whole record of the largest size and more.
const READ_SIZE: usize = 18 * 1024;
/// Most ciphertext a connection may hold while it is not yet whole records: rustls refuses
/// records over 18 KiB, but joins a handshake message of up to 64 KiB across records.
const MAX_INCOMING: usize = 80 * 1024;

thread_local! {
    /// Where ciphertext is read and decrypted, shared by the thread's connections.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

pub struct ServerStream {
    tcp: Async<TcpStream>,
    conn: UnbufferedServerConnection,
    /// Ciphertext read that rustls is not done with (the start of a record); empty, and
    /// unallocated, between records.
    incoming: Vec<u8>,
    held: Held,
}

/// What a connection holds for its peer or its reader, each empty and unallocated when idle.
#[derive(Default)]
struct Held {
    /// Decrypted, `plain[plain_at..]` not yet read.
    plain: Vec<u8>,
    plain_at: usize,
    /// Encrypted records, `outgoing[out_at..]` not yet taken by the socket.
    outgoing: Vec<u8>,
    out_at: usize,
    /// The peer said close_notify, or closed its socket: nothing more will come.
    peer_closed: bool,
}

/// The TLS handshake on `tcp`, as the server. The client's flight is read as any ciphertext is,
/// so a connection waiting for it keeps only the part of a record that has come.
pub async fn accept(config: Arc<ServerConfig>, tcp: Async<TcpStream>) -> io::Result<ServerStream> {
    let conn = UnbufferedServerConnection::new(config).map_err(invalid)?;
    let mut tls = ServerStream { tcp, conn, incoming: Vec::new(), held: Held::default() };
    loop {
        future::poll_fn(|cx| tls.poll_send_held(cx)).await?;
        if !tls.conn.is_handshaking() {
            return Ok(tls);
        }
        if tls.held.peer_closed {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        future::poll_fn(|cx| tls.poll_fill(cx)).await?;
    }
}

impl ServerStream {
    pub fn tcp(&self) -> &TcpStream {
        self.tcp.get_ref()
    }

    /// Whether encrypted records wait for the socket.
    pub fn holds_output(&self) -> bool {
        self.held.out_at < self.held.outgoing.len()
    }

    /// Writes the records held until none is left or the socket is full.
    fn poll_send_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let held = &mut self.held;
        while held.out_at < held.outgoing.len() {
            match ready!(Pin::new(&mut self.tcp).poll_write(cx, &held.outgoing[held.out_at..]))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => held.out_at += n,
            }
        }
        held.outgoing = Vec::new();
        held.out_at = 0;
        Poll::Ready(Ok(()))
    }

    /// Reads the socket once and decrypts what came.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let kept = self.incoming.len();
            let size = scratch.len().max(kept + READ_SIZE);
            scratch.resize(size, 0);
            scratch[..kept].copy_from_slice(&self.incoming);
            let n = ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut scratch[kept..kept + READ_SIZE]))?;
            if n == 0 {
                // Closed without close_notify: for a WebSocket, whose own close says whether the
                // stream was whole, the same as a clear socket closed.
                self.held.peer_closed = true;
                return Poll::Ready(Ok(()));
            }
            let len = kept + n;
            let done = drive(&mut self.conn, &mut scratch[..len], &mut self.held, &[])?.done;
            self.incoming.clear();
            self.incoming.extend_from_slice(&scratch[done..len]);
            if self.incoming.len() > MAX_INCOMING {
                // A handshake message dribbled in tiny records, all of which rustls keeps.
                return Poll::Ready(Err(io::ErrorKind::InvalidData.into()));
            }
            if self.incoming.is_empty() {
                self.incoming = Vec::new();
            }
            Poll::Ready(Ok(()))
        })
    }
}

/// How far [`drive`] went.
struct Driven {
    /// Bytes at the start of the ciphertext that rustls is done with.
    done: usize,
    /// Whether the application data given was encrypted.
    encrypted: bool,
}

/// Feeds `incoming` to rustls until it needs more bytes: decrypted data goes to `held.plain`,
/// records to send to `held.outgoing`, and `app`, when not empty, is encrypted once rustls may
/// send application data.
fn drive(
    conn: &mut UnbufferedServerConnection,
    incoming: &mut [u8],
    held: &mut Held,
    app: &[u8],
) -> io::Result<Driven> {
    let mut driven = Driven { done: 0, encrypted: false };
    loop {
        let UnbufferedStatus { mut discard, state } = conn.process_tls_records(&mut incoming[driven.done..]);
        let more = match state.map_err(invalid)? {
            ConnectionState::ReadTraffic(mut traffic) => {
                decrypted(&mut traffic, &mut held.plain, &mut discard).map_err(invalid)?;
                true
            }
            ConnectionState::EncodeTlsData(mut encode) => {
                append(&mut held.outgoing, |out| match encode.encode(out) {
                    Err(EncodeError::InsufficientSize(e)) => Err(Some(e.required_size)),
                    other => other.map_err(|_| None),
                })?;
                true
            }
            // Sent from `held.outgoing` as the socket takes them.
            ConnectionState::TransmitTlsData(transmit) => {
                transmit.done();
                true
            }
            ConnectionState::WriteTraffic(mut traffic) if !app.is_empty() && !driven.encrypted => {
                append(&mut held.outgoing, |out| match traffic.encrypt(app, out) {
                    Err(EncryptError::InsufficientSize(e)) => Err(Some(e.required_size)),
                    other => other.map_err(|_| None),
                })?;
                driven.encrypted = true;
                true
            }
            ConnectionState::PeerClosed => {
                held.peer_closed = true;
                true
            }
            // Waits for bytes (or has nothing to encrypt). Never `Closed`: the server sends no
            // close_notify. Never early data: it is not accepted.
            _ => false,
        };
        driven.done += discard;
        if !more {
            return Ok(driven);
        }
    }
}

/// Appends the records decrypted to `plain`, and what they add to the ciphertext to discard.
fn decrypted(
    traffic: &mut ReadTraffic<'_, '_, ServerConnectionData>,
    plain: &mut Vec<u8>,
    discard: &mut usize,
) -> Result<(), rustls::Error> {
    while let Some(record) = traffic.next_record() {
        let record = record?;
        *discard += record.discard;
        plain.extend_from_slice(record.payload);
    }
    Ok(())
}

/// Appends what `write` puts in `out`: asked with no room, it says how much it needs
/// (`Err(Some(size))`), and is given that.
fn append(out: &mut Vec<u8>, mut write: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>) -> io::Result<()> {
    let start = out.len();
    let mut room = 0;
    for _ in 0..2 {
        out.resize(start + room, 0);
        match write(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(Some(required)) => room = required,
            Err(None) => break,
        }
    }
    out.truncate(start);
    Err(io::ErrorKind::InvalidData.into())
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl AsyncRead for ServerStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // A few socket reads at most (64 KiB or more) before the task yields: a peer sending
        // records with nothing in them must not keep the thread.
        for _ in 0..4 {
            let held = &mut this.held;
            if held.plain_at < held.plain.len() {
                let n = buf.len().min(held.plain.len() - held.plain_at);
                buf[..n].copy_from_slice(&held.plain[held.plain_at..held.plain_at + n]);
                held.plain_at += n;
                if held.plain_at == held.plain.len() {
                    held.plain = Vec::new();
                    held.plain_at = 0;
                }
                return Poll::Ready(Ok(n));
            }
            if held.peer_closed || buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            ready!(this.poll_fill(cx))?;
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl AsyncWrite for ServerStream {
    /// Takes up to one record's worth once the records before it have all left.
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_send_held(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let app = &buf[..buf.len().min(MAX_PLAIN_PER_WRITE)];
        let driven = drive(&mut this.conn, &mut this.incoming, &mut this.held, app)?;
        this.incoming.drain(..driven.done);
        if this.incoming.is_empty() {
            this.incoming = Vec::new();
        }
        if !driven.encrypted {
            // Only before the handshake ends, which `accept` waits for.
            return Poll::Ready(Err(io::ErrorKind::InvalidData.into()));
        }
        // Sent now as far as the socket takes it; the rest by the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_send_held(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(app.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send_held(cx)
    }

    /// Sends what is held, as closing a clear socket does (its end comes when it is dropped).
    /// No close_notify: a WebSocket's own close frame says whether its stream ended whole.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send_held(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use rustls::{ClientConnection, StreamOwned};
    use std::io::{Read, Write};
    use std::net::TcpListener;

    type Client = StreamOwned<ClientConnection, TcpStream>;

    const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/tls/testdata/localhost");

    fn server_config() -> Arc<ServerConfig> {
        let (cert, key) = (format!("{TESTDATA}.crt"), format!("{TESTDATA}.key"));
        crate::tls::acceptor(crate::tls::Certificate::load(cert.as_ref(), key.as_ref()).unwrap())
    }

    fn client_connection() -> ClientConnection {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(format!("{TESTDATA}.crt")).unwrap()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap()).unwrap()
    }

    /// The server's end of a loopback connection, before its handshake, and the client's socket.
    fn tcp_pair() -> (Async<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (Async::new(server).unwrap(), client)
    }

    /// A server end after its handshake with a blocking rustls client.
    fn pair() -> (ServerStream, Client) {
        let (server, client) = tcp_pair();
        let client = std::thread::spawn(move || {
            let mut tls = StreamOwned::new(client_connection(), client);
            while tls.conn.is_handshaking() {
                tls.conn.complete_io(&mut tls.sock).unwrap();
            }
            tls
        });
        let server = smol::block_on(accept(server_config(), server)).unwrap();
        (server, client.join().unwrap())
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn assert_keeps_no_buffer(server: &ServerStream) {
        let held = &server.held;
        let kept = (server.incoming.capacity(), held.plain.capacity(), held.outgoing.capacity());
        assert_eq!(kept, (0, 0, 0), "incoming, plain and outgoing buffers of an idle connection");
        assert!(!server.holds_output());
    }

    #[test]
    fn data_crosses_both_ways_byte_for_byte_and_an_idle_connection_keeps_no_buffer() {
        let (mut server, mut client) = pair();
        assert_keeps_no_buffer(&server);
        // Records of every size the client makes: several full ones, then small ones.
        let sent = pattern(40_000);
        client.write_all(&sent).unwrap();
        for small in [&b"a"[..], b"bc", b"def"] {
            client.write_all(small).unwrap();
        }
        client.flush().unwrap();
        let mut got = vec![0; 40_006];
        smol::block_on(server.read_exact(&mut got)).unwrap();
        assert_eq!(&got[..40_000], &sent[..]);
        assert_eq!(&got[40_000..], b"abcdef");

        let reply = pattern(50_000);
        let reader = std::thread::spawn(move || {
            let mut got = vec![0; 50_000];
            client.read_exact(&mut got).unwrap();
            got
        });
        smol::block_on(async {
            server.write_all(&reply).await.unwrap();
            server.flush().await.unwrap();
        });
        assert_eq!(reader.join().unwrap(), reply);
        assert_keeps_no_buffer(&server);
    }

    #[test]
    fn a_record_that_comes_in_parts_is_kept_until_it_is_whole() {
        let (mut server, mut client) = pair();
        client.conn.writer().write_all(b"hello").unwrap();
        let mut record = Vec::new();
        client.conn.write_tls(&mut record).unwrap();
        let half = record.len() / 2;
        client.sock.write_all(&record[..half]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut buf = [0; 64];
        let read = future::block_on(future::poll_once(server.read(&mut buf)));
        assert!(read.is_none(), "half a record is nothing to read yet");
        assert_eq!(server.incoming, record[..half]);
        client.sock.write_all(&record[half..]).unwrap();
        let n = smol::block_on(server.read(&mut buf)).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_keeps_no_buffer(&server);
    }

    #[test]
    fn a_whole_record_of_the_largest_size_is_read_by_one_poll() {
        let (mut server, mut client) = pair();
        let sent = pattern(16_384);
        client.write_all(&sent).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut buf = vec![0; 32_768];
        let read = future::block_on(future::poll_once(server.read(&mut buf)));
        assert_eq!(read.map(Result::unwrap), Some(16_384));
        assert_eq!(buf[..16_384], sent);
    }

    #[test]
    fn a_read_smaller_than_a_record_gets_the_rest_next_time() {
        let (mut server, mut client) = pair();
        client.write_all(b"0123456789").unwrap();
        let mut buf = [0; 4];
        smol::block_on(server.read_exact(&mut buf)).unwrap();
        assert_eq!(&buf, b"0123");
        assert_eq!(server.held.plain.len() - server.held.plain_at, 6);
        let mut rest = [0; 16];
        let n = smol::block_on(server.read(&mut rest)).unwrap();
        assert_eq!(&rest[..n], b"456789");
        assert_keeps_no_buffer(&server);
    }

    #[test]
    fn a_write_takes_one_record_at_most_then_waits_for_the_socket() {
        let (mut server, client) = pair();
        socket2::SockRef::from(server.tcp()).set_send_buffer_size(4096).unwrap();
        let big = pattern(1 << 20);
        let waker = future::block_on(future::poll_fn(|cx| Poll::Ready(cx.waker().clone())));
        let mut cx = Context::from_waker(&waker);
        let first = Pin::new(&mut server).poll_write(&mut cx, &big);
        assert!(matches!(first, Poll::Ready(Ok(16_384))), "one whole record first: {first:?}");
        let mut taken = 16_384;
        // The client reads nothing yet: the socket fills up, and then writes wait.
        loop {
            match Pin::new(&mut server).poll_write(&mut cx, &big[taken..]) {
                Poll::Ready(Ok(n)) => {
                    assert!(n > 0 && n <= MAX_PLAIN_PER_WRITE, "{n}");
                    taken += n;
                }
                Poll::Ready(Err(e)) => panic!("{e}"),
                Poll::Pending => break,
            }
            assert!(taken < big.len(), "the socket never filled up");
        }
        assert!(server.holds_output());
        let waiting = server.held.outgoing.len() - server.held.out_at;
        assert!(waiting <= MAX_PLAIN_PER_WRITE + 64, "{waiting} bytes wait encrypted");
        let reader = std::thread::spawn(move || {
            let mut client = client;
            let mut got = vec![0; taken];
            client.read_exact(&mut got).unwrap();
            got
        });
        smol::block_on(server.flush()).unwrap();
        assert_eq!(reader.join().unwrap(), big[..taken]);
        assert_keeps_no_buffer(&server);
    }

    #[test]
    fn a_key_update_the_client_asks_for_is_answered_with_the_next_record() {
        let (mut server, mut client) = pair();
        client.conn.refresh_traffic_keys().unwrap();
        client.write_all(b"after").unwrap();
        let mut buf = [0; 5];
        smol::block_on(server.read_exact(&mut buf)).unwrap();
        assert_eq!(&buf, b"after");
        // rustls sends its own key update ahead of the next record it encrypts.
        smol::block_on(async {
            server.write_all(b"reply").await.unwrap();
            server.flush().await.unwrap();
        });
        let mut got = [0; 5];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"reply");
    }

    #[test]
    fn close_notify_or_a_closed_socket_ends_the_stream() {
        let (mut server, mut client) = pair();
        client.write_all(b"last").unwrap();
        client.conn.send_close_notify();
        client.flush().unwrap();
        let mut got = Vec::new();
        smol::block_on(server.read_to_end(&mut got)).unwrap();
        assert_eq!(got, b"last");
        assert_eq!(smol::block_on(server.read(&mut [0; 8])).unwrap(), 0, "still ended");

        let (mut server, client) = pair();
        client.sock.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(smol::block_on(server.read(&mut [0; 8])).unwrap(), 0);
    }

    #[test]
    fn a_close_sends_what_waits() {
        let (mut server, mut client) = pair();
        socket2::SockRef::from(server.tcp()).set_send_buffer_size(4096).unwrap();
        let waker = future::block_on(future::poll_fn(|cx| Poll::Ready(cx.waker().clone())));
        let mut cx = Context::from_waker(&waker);
        let big = pattern(1 << 20);
        let mut taken = 0;
        while let Poll::Ready(n) = Pin::new(&mut server).poll_write(&mut cx, &big[taken..]) {
            taken += n.unwrap();
        }
        assert!(server.holds_output());
        let reader = std::thread::spawn(move || {
            let mut got = vec![0; taken];
            client.read_exact(&mut got).unwrap();
            got
        });
        smol::block_on(server.close()).unwrap();
        assert!(!server.holds_output());
        assert_eq!(reader.join().unwrap(), big[..taken]);
    }

    #[test]
    fn clear_text_or_a_client_gone_fails_the_handshake() {
        let (server, mut client) = tcp_pair();
        client.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let error = smol::block_on(accept(server_config(), server)).err().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");

        let (server, client) = tcp_pair();
        drop(client);
        let error = smol::block_on(accept(server_config(), server)).err().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "{error}");
    }

    #[test]
    fn a_handshake_message_dribbled_in_tiny_records_is_refused_past_the_bound() {
        let (server, mut client) = tcp_pair();
        // A ClientHello of 65,280 bytes announced, then sent one byte per record: six bytes of
        // record for each byte of message, all of which rustls keeps until the message is whole.
        let mut flight = vec![0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0xff, 0x00];
        while flight.len() <= MAX_INCOMING {
            flight.extend_from_slice(&[0x16, 0x03, 0x01, 0x00, 0x01, 0xab]);
        }
        let mut handshake = Box::pin(accept(server_config(), server));
        client.write_all(&flight[..MAX_INCOMING]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(future::block_on(future::poll_once(&mut handshake)).is_none(), "up to the bound, it waits");
        client.write_all(&flight[MAX_INCOMING..MAX_INCOMING + 1]).unwrap();
        // Were the byte past the bound let in, the end of the flight would be the error.
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let error = smol::block_on(handshake).err().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
    }
}
