//! Floods of every frame kind (rule 1: fairness).

use super::*;

// ---------------------------------------------------------------------------------------------
// Floods
// ---------------------------------------------------------------------------------------------

/// What a flooder writes, over and over, as fast as the socket takes it.
#[derive(Clone, Copy, Debug)]
enum Kind {
    EmptyPongs,
    /// One text frame without FIN opens a message that then never ends.
    EmptyContinuations,
    PingFrames,
    JsonPings,
}

impl Kind {
    /// (what opens the flood on a fresh connection, a block of whole frames written in a loop)
    fn frames(self) -> (Vec<u8>, Vec<u8>) {
        let one = match self {
            Kind::EmptyPongs => frame(true, 0xA, b"", true),
            Kind::EmptyContinuations => frame(false, 0x0, b"", true),
            Kind::PingFrames => frame(true, 0x9, b"flood", true),
            Kind::JsonPings => frame(true, 0x1, br#"{"type":"ping"}"#, true),
        };
        let opening = match self {
            Kind::EmptyContinuations => frame(false, 0x1, br#"{"type":"#, true),
            _ => Vec::new(),
        };
        let block = one.repeat(64 * 1024 / one.len());
        (opening, block)
    }
}

#[derive(Debug, Default)]
struct FloodStats {
    connections: u64,
    bytes: u64,
    refused: u64,
}

/// A flooding thread; stopped (and joined) by [`Flood::stop`], or by itself after its limit.
struct Flood {
    flag: Arc<AtomicBool>,
    thread: Option<JoinHandle<FloodStats>>,
}

impl Flood {
    fn stop(mut self) -> FloodStats {
        self.flag.store(true, Relaxed);
        self.thread.take().unwrap().join().expect("flood thread")
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.flag.store(true, Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads and discards everything `stream` receives until EOF, an error or `stop`.
pub(crate) fn drain(mut stream: TcpStream, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        while !stop.load(Relaxed) {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n as u64,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        total
    })
}

/// Writes `block` (whole frames) over and over until an error, `stop` or `end`; never leaves a
/// frame half written between two passes. Returns the bytes written and whether it ended on an
/// error (the connection is over).
pub(crate) fn write_loop(stream: &mut TcpStream, block: &[u8], stop: &AtomicBool, end: Instant) -> (u64, bool) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let mut offset = 0;
    let mut bytes = 0;
    while !stop.load(Relaxed) && Instant::now() < end {
        match stream.write(&block[offset..]) {
            Ok(0) => return (bytes, true),
            Ok(n) => {
                bytes += n as u64;
                offset = (offset + n) % block.len();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (bytes, true),
        }
    }
    (bytes, false)
}

/// One connection at a time (a new one when the server closes the last), registered as a
/// device, floods `kind` frames at full speed for at most `limit`; what the server sends back
/// is read and discarded.
fn flood(addr: SocketAddr, kind: Kind, limit: Duration) -> Flood {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let device = format!("flooder-{kind:?}-{}", addr.port());
    let token = Keys::shared().token(&device);
    let thread = std::thread::spawn(move || {
        let end = Instant::now() + limit;
        let (opening, block) = kind.frames();
        let mut stats = FloodStats::default();
        while !flag.load(Relaxed) && Instant::now() < end {
            let Ok(mut c) = Client::connect_offering(addr, Some("echo-protocol")) else {
                stats.refused += 1;
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            stats.connections += 1;
            if c.try_send(&registration(&device, &token)).is_err() {
                continue;
            }
            let mut stream = c.stream().try_clone().expect("clone");
            let drained = drain(stream.try_clone().expect("clone"), flag.clone());
            if stream.write_all(&opening).is_ok() {
                let (bytes, _) = write_loop(&mut stream, &block, &flag, end);
                stats.bytes += bytes;
            }
            let _ = stream.shutdown(Shutdown::Both);
            let _ = drained.join();
        }
        stats
    });
    Flood { flag: stop, thread: Some(thread) }
}

/// Rule 1 for one frame kind: while one connection floods, a fresh device registers and
/// receives an actuation within 2 s, three times running; the peak RSS stays within 64 MiB.
fn flood_keeps_the_server_live(kind: Kind) {
    let _heavy = heavy();
    let server = Server::start(ServerOpts::default().release());
    let flooder = flood(server.addr, kind, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(500));
    let times: Vec<Duration> = (0..3)
        .map(|_| {
            let (_, took) = assert_live(&server);
            std::thread::sleep(Duration::from_millis(200));
            took
        })
        .collect();
    let stats = flooder.stop();
    eprintln!("{kind:?} flood: {stats:?}; liveness {times:?}");
    assert!(stats.bytes > 0, "the {kind:?} flooder never got to write: {stats:?}");
    assert_peak_rss(&server, &format!("{kind:?} flood"));
}

// ---------------------------------------------------------------------------------------------
// Rule 1: fairness
// ---------------------------------------------------------------------------------------------

#[test]
fn rule1_flood_of_empty_pong_frames_leaves_the_server_live() {
    flood_keeps_the_server_live(Kind::EmptyPongs);
}

#[test]
fn rule1_flood_of_empty_continuation_frames_leaves_the_server_live() {
    flood_keeps_the_server_live(Kind::EmptyContinuations);
}

#[test]
fn rule1_flood_of_ping_frames_leaves_the_server_live() {
    flood_keeps_the_server_live(Kind::PingFrames);
}

#[test]
fn rule1_flood_of_json_pings_leaves_the_server_live() {
    flood_keeps_the_server_live(Kind::JsonPings);
}

#[test]
fn rule1_peers_that_reset_with_our_replies_unsent_do_not_hold_the_server() {
    let _heavy = heavy();
    let server = Server::start(ServerOpts::default().release());
    // Four connections send JSON pings, never reading the answers, until the server stops
    // reading them (the writes block); then all reset at once, with the server's replies still
    // queued, most likely mid-frame: nothing more can be written to them.
    let flooders: Vec<_> = (0..4)
        .map(|_| {
            let addr = server.addr;
            std::thread::spawn(move || {
                let mut c = Client::connect_with_recv_buffer(addr, 4096);
                let block = frame(true, 1, br#"{"type":"ping"}"#, true).repeat(1_000);
                let mut stream = c.stream().try_clone().unwrap();
                stream.set_write_timeout(Some(Duration::from_millis(300))).unwrap();
                let end = Instant::now() + Duration::from_secs(5);
                while Instant::now() < end && stream.write_all(&block).is_ok() {}
                socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)).unwrap();
                (stream, c)
            })
        })
        .collect();
    let connections: Vec<_> = flooders.into_iter().map(|t| t.join().unwrap()).collect();
    drop(connections);
    // The server notices at once; ending those connections must not keep it from others.
    for _ in 0..3 {
        assert_live(&server);
    }
}
