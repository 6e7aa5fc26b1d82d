//! Raw WebSocket for the attack threads: std sockets, a hand-made handshake, masked frames written
//! from a pre-built buffer, unmasked frames read back. It costs the bench little and runs apart
//! from the executor the probes use.
//!
//! Every loop and every wait is bounded by the attack's deadline; attack sockets close with a
//! reset, so thousands of them leave no TIME_WAIT behind. What the connections did is counted in
//! [`Counters`] (the `load` of the attack's row).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use serde_json::Value;
use smol::Async;
use socket2::Socket;

use crate::net::{bound_socket, connect_async, Target};

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;
/// Any mask will do; clients must mask, servers must not care which.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// Any 16 bytes in base64 (RFC 6455's example).
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// Longest a blocking socket call waits before its loop looks at the deadline again.
const IO_WAIT: Duration = Duration::from_millis(100);
/// Client numbers of attack sockets start here: source addresses apart from the probes'.
static NEXT_INDEX: AtomicUsize = AtomicUsize::new(100_000);

/// What attack threads share with the phase that started them.
#[derive(Clone)]
pub struct Ctx {
    pub target: Target,
    pub deadline: Instant,
    pub count: Arc<Counters>,
}

impl Ctx {
    pub fn running(&self) -> bool {
        Instant::now() < self.deadline
    }

    pub fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Sleeps `d`, or until the deadline if that comes first.
    pub fn nap(&self, d: Duration) {
        std::thread::sleep(d.min(self.left()));
    }

    /// An upgraded connection, counted; after a refusal or failure, a short nap and `None`.
    pub fn open_ws(&self, receive_buffer: Option<usize>) -> Option<(TcpStream, Vec<u8>)> {
        let upgraded = connect_sync(&self.target, self.deadline, receive_buffer)
            .and_then(|s| handshake_sync(s, &self.target, self.deadline));
        let counter = match upgraded {
            Ok(Opened::Upgraded(s, leftover)) => {
                bump(&self.count.connections);
                return Some((s, leftover));
            }
            Ok(Opened::Refused(503)) => &self.count.refused_503,
            Ok(Opened::Refused(_)) => &self.count.refused_other,
            Err(_) => &self.count.failed,
        };
        bump(counter);
        self.nap(Duration::from_millis(50));
        None
    }
}

/// What an attack did, as its threads count it.
#[derive(Default)]
pub struct Counters {
    /// Connections the server upgraded (for `half-heads`: opened).
    pub connections: AtomicU64,
    pub refused_503: AtomicU64,
    /// Upgrades answered with another status.
    pub refused_other: AtomicU64,
    /// Connects or handshakes that failed or did not finish in time.
    pub failed: AtomicU64,
    /// Connections the server ended while the attack used them.
    pub closed: AtomicU64,
    /// Attack devices registered (`stalled-reader`, `held-flood`).
    pub registered: AtomicU64,
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
    /// Replies read: acks for `stalled-reader`, 401s for `log-flood`.
    pub replies: AtomicU64,
    /// Of `replies`, those other than a 200 (an ack's 500 "not connected": the server shedding).
    pub refusals: AtomicU64,
}

impl Counters {
    fn fields(&self) -> [(&'static str, u64); 10] {
        [
            ("connections", &self.connections),
            ("refused_503", &self.refused_503),
            ("refused_other", &self.refused_other),
            ("failed", &self.failed),
            ("closed_by_server", &self.closed),
            ("registered", &self.registered),
            ("messages", &self.messages),
            ("bytes", &self.bytes),
            ("replies", &self.replies),
            ("refusals", &self.refusals),
        ]
        .map(|(name, c)| (name, c.load(Relaxed)))
    }

    pub fn json(&self) -> Value {
        Value::Object(self.fields().into_iter().map(|(k, v)| (k.to_string(), v.into())).collect())
    }

    pub fn describe(&self) -> String {
        let parts: Vec<String> = self.fields().iter().filter(|f| f.1 > 0).map(|(k, v)| format!("{k} {v}")).collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }
}

pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

/// A client frame (masked).
pub fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&MASK);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    f
}

/// A flood's buffer: frames of `each` bytes back to back, written round and round.
pub struct Frames {
    bytes: Vec<u8>,
    pub each: usize,
}

impl Frames {
    pub fn repeat(one: &[u8], n: usize) -> Frames {
        Frames { bytes: one.repeat(n), each: one.len() }
    }

    /// About 64 KiB of one empty frame.
    pub fn empty(opcode: u8, fin: bool) -> Frames {
        Frames::repeat(&frame(opcode, fin, b""), 10_000)
    }

    /// Text frames of equal length (the message count relies on it).
    pub fn concat(texts: impl IntoIterator<Item = String>) -> Frames {
        let frames: Vec<Vec<u8>> = texts.into_iter().map(|t| frame(OP_TEXT, true, t.as_bytes())).collect();
        let each = frames.first().map_or(1, Vec::len);
        debug_assert!(frames.iter().all(|f| f.len() == each));
        Frames { bytes: frames.concat(), each }
    }
}

/// Writes `frames` cyclically until the deadline or `left` bytes; `Err` once the server closed.
pub fn pump(s: &mut TcpStream, frames: &Frames, left: &mut u64, ctx: &Ctx) -> io::Result<()> {
    let (buf, mut at) = (&frames.bytes[..], 0usize);
    while *left > 0 && ctx.running() {
        let end = buf.len().min(at.saturating_add(usize::try_from(*left).unwrap_or(usize::MAX)));
        match s.write(&buf[at..end]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                ctx.count.messages.fetch_add(((at + n) / frames.each - at / frames.each) as u64, Relaxed);
                ctx.count.bytes.fetch_add(n as u64, Relaxed);
                *left -= n as u64;
                at = (at + n) % buf.len();
            }
            Err(e) if is_wait(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Frames from the server (unmasked), reassembled from reads; starts with the bytes read past
/// the upgrade's head.
pub struct Inbound(pub Vec<u8>);

impl Inbound {
    /// The next frame's opcode and payload; `None` at `limit`, `Err` once the connection ended.
    pub fn next(&mut self, s: &mut TcpStream, limit: Instant) -> io::Result<Option<(u8, Vec<u8>)>> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some((opcode, payload)) = frame_at(&self.0) {
                let taken = (opcode, self.0[payload.clone()].to_vec());
                self.0.drain(..payload.end);
                return Ok(Some(taken));
            }
            if Instant::now() >= limit {
                return Ok(None);
            }
            match s.read(&mut chunk) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.0.extend_from_slice(&chunk[..n]),
                Err(e) if is_wait(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// A whole unmasked frame at the start of `buf`: its opcode and where its payload lies.
fn frame_at(buf: &[u8]) -> Option<(u8, std::ops::Range<usize>)> {
    let (first, second) = (*buf.first()?, *buf.get(1)?);
    let (len, at): (usize, usize) = match second & 0x7f {
        126 => (u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize, 4),
        127 => (usize::try_from(u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?)).ok()?, 10),
        n => (n as usize, 2),
    };
    (buf.len() >= at.checked_add(len)?).then_some((first & 0x0f, at..at + len))
}

fn upgrade_head(target: &Target) -> String {
    let rest = target.url.strip_prefix("ws://").unwrap_or(&target.url);
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: echo-protocol\r\n\r\n",
        target.addr
    )
}

/// The first 4 KiB of an upgrade head padded to 8 KiB (the server's limit).
pub fn half_head(target: &Target) -> Vec<u8> {
    let mut head = upgrade_head(target).into_bytes();
    head.truncate(head.len() - 2);
    let pad = (8 * 1024usize).saturating_sub(head.len() + "X-Pad: \r\n\r\n".len());
    head.extend_from_slice(format!("X-Pad: {}\r\n\r\n", "a".repeat(pad)).as_bytes());
    head.truncate(head.len() / 2);
    head
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The status code of a response head.
fn status(head: &[u8]) -> Option<u16> {
    std::str::from_utf8(head).ok()?.split_whitespace().nth(1)?.parse().ok()
}

/// An upgrade's outcome: the socket and bytes read past the 101 head, or the refusal's status.
pub enum Opened<S> {
    Upgraded(S, Vec<u8>),
    Refused(u16),
}

/// A socket bound to the next attack source address, reset (not lingering) when closed.
fn socket(target: &Target, receive_buffer: Option<usize>) -> io::Result<Socket> {
    let s = bound_socket(target.source(NEXT_INDEX.fetch_add(1, Relaxed)), target.addr)?;
    s.set_linger(Some(Duration::ZERO))?;
    if let Some(n) = receive_buffer {
        s.set_recv_buffer_size(n)?;
    }
    Ok(s)
}

/// A blocking connection whose reads and writes give up after [`IO_WAIT`].
pub fn connect_sync(target: &Target, deadline: Instant, receive_buffer: Option<usize>) -> io::Result<TcpStream> {
    let wait = deadline.saturating_duration_since(Instant::now()).min(Duration::from_secs(1));
    if wait.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    let sock = socket(target, receive_buffer)?;
    sock.connect_timeout(&target.addr.into(), wait)?;
    let s = TcpStream::from(sock);
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_WAIT))?;
    s.set_write_timeout(Some(IO_WAIT))?;
    Ok(s)
}

fn handshake_sync(mut s: TcpStream, target: &Target, deadline: Instant) -> io::Result<Opened<TcpStream>> {
    if !write_until(&mut s, upgrade_head(target).as_bytes(), deadline)? {
        return Err(io::ErrorKind::TimedOut.into());
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = head_end(&buf) {
            return match status(&buf[..end]) {
                Some(101) => Ok(Opened::Upgraded(s, buf.split_off(end))),
                Some(code) => Ok(Opened::Refused(code)),
                None => Err(io::ErrorKind::InvalidData.into()),
            };
        }
        if Instant::now() >= deadline || buf.len() > 16 * 1024 {
            return Err(io::ErrorKind::TimedOut.into());
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_wait(&e) => {}
            Err(e) => return Err(e),
        }
    }
}

/// An async connection (for `pending-pings`, thousands of them) and its upgrade.
pub async fn open_async(target: &Target) -> io::Result<Opened<Async<TcpStream>>> {
    let mut s = connect_async(socket(target, None)?, target.addr).await?;
    s.write_all(upgrade_head(target).as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    while head_end(&buf).is_none() && buf.len() <= 16 * 1024 {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    match status(&buf) {
        Some(101) => Ok(Opened::Upgraded(s, Vec::new())),
        Some(code) => Ok(Opened::Refused(code)),
        None => Err(io::ErrorKind::InvalidData.into()),
    }
}

/// Writes all of `bytes` unless the deadline comes first (`Ok(false)`).
pub fn write_until(s: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<bool> {
    while !bytes.is_empty() {
        if Instant::now() >= deadline {
            return Ok(false);
        }
        match s.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if is_wait(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// A blocking call that gave up after its timeout (the socket is still good).
fn is_wait(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_are_masked_with_the_right_length_encoding() {
        assert_eq!(frame(OP_PONG, true, b""), [0x8A, 0x80, 0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(frame(OP_CONTINUATION, false, b"")[0], 0x00);
        let long = frame(OP_TEXT, true, &[b'a'; 300]);
        assert_eq!(&long[..4], [0x81, 0x80 | 126, 0x01, 0x2c]);
        assert_eq!(long.len(), 4 + 4 + 300);
        assert_eq!(long[8] ^ MASK[0], b'a');
        assert_eq!(frame(OP_TEXT, true, &vec![0; 70_000])[1], 0x80 | 127);
    }

    #[test]
    fn server_frames_are_found_only_when_whole() {
        assert_eq!(frame_at(b"\x81\x03abcXYZ"), Some((OP_TEXT, 2..5)));
        assert_eq!(frame_at(b"\x81\x03ab"), None);
        assert_eq!(frame_at(b"\x88\x00"), Some((OP_CLOSE, 2..2)));
        let mut long = vec![0x81, 126, 0x01, 0x00];
        long.extend(std::iter::repeat_n(b'x', 256));
        assert_eq!(frame_at(&long), Some((OP_TEXT, 4..260)));
    }

    #[test]
    fn heads_and_statuses() {
        let target = Target::parse("ws://127.0.0.1:5077", 5000, None).unwrap();
        let head = upgrade_head(&target);
        assert!(head.starts_with("GET / HTTP/1.1\r\n") && head.ends_with("echo-protocol\r\n\r\n"));
        let half = half_head(&target);
        assert_eq!(half.len(), 4 * 1024);
        assert_eq!(head_end(&half), None);
        assert_eq!(status(b"HTTP/1.1 503 Service Unavailable\r\n\r\n"), Some(503));
    }
}
