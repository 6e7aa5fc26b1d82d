//! Logs: escaped, cut, never blocking, rate-limited (rule 6).

use super::*;

// ---------------------------------------------------------------------------------------------
// Rule 6: logs
// ---------------------------------------------------------------------------------------------

/// Registers `device` with a token signed by a key the server does not trust; the refusal is
/// answered 401 "Invalid device token" and closed 1008. Returns the peer address the server saw.
fn refused_registration(server: &Server, device: &str) -> SocketAddr {
    // Minted before connecting: the first use of the other key pair generates it, which can
    // take longer than a pending connection may live on a loaded machine.
    let token = Keys::other().token(device);
    let mut c = Client::connect(server.addr);
    let peer = c.local_addr();
    assert_eq!(c.register(device, &token), json!({"code": 401, "content": "Invalid device token"}));
    c.expect_close(1008);
    peer
}

#[test]
fn rule6_device_id_in_a_log_line_is_escaped_and_the_line_names_the_peer() {
    let server = Server::start(ServerOpts::default().release());
    let peer = refused_registration(&server, "x\nstopped\n\u{1b}[2J");
    let logged = server.wait_for_log("stopped", WAIT);
    assert!(logged.is_some(), "the refused registration is not logged:\n{}", server.log());
    std::thread::sleep(Duration::from_millis(200));
    for l in server.log_lines() {
        assert!(!l.starts_with("stopped"), "a device id started a log line of its own: {l:?}");
        assert!(!l.chars().any(|c| c.is_control() && c != '\t'), "raw control character in a log line: {l:?}");
    }
    let line = server
        .wait_for_log(&peer.to_string(), WAIT)
        .unwrap_or_else(|| panic!("no log line names the peer {peer}:\n{}", server.log()));
    assert!(line.contains("stopped"), "the line naming the peer does not show the (escaped) device id: {line:?}");
}

#[test]
fn rule6_device_ids_in_log_lines_are_cut_to_128_characters() {
    let server = Server::start(ServerOpts::default().release());
    let peer = refused_registration(&server, &"q".repeat(200));
    let logged = server.wait_for_log(&"q".repeat(16), WAIT);
    assert!(logged.is_some(), "the refused registration is not logged:\n{}", server.log());
    std::thread::sleep(Duration::from_millis(200));
    for l in server.log_lines() {
        assert!(!l.contains(&"q".repeat(129)), "a device id of 200 characters logged uncut: {} chars", l.len());
    }
    // A 64 kB id is not even a device id (rule 7); it is not logged whole either.
    let mut c = Client::connect(server.addr);
    let long = "L".repeat(64_000);
    assert_eq!(c.register(&long, "x.y.z"), json!({"code": 401, "content": "Wrong message format"}));
    c.expect_close(1003);
    std::thread::sleep(Duration::from_millis(300));
    for l in server.log_lines() {
        assert!(!l.contains(&"q".repeat(129)), "a device id of 200 characters logged uncut: {} chars", l.len());
        assert!(!l.contains(&"L".repeat(129)), "client text of 64 kB logged uncut: {} chars", l.len());
    }
    let line =
        server.wait_for_log(&peer.to_string(), WAIT).unwrap_or_else(|| panic!("no log line names the peer {peer}"));
    assert!(line.contains(&"q".repeat(16)), "the line naming the peer does not show the device id: {line:?}");
}

/// The decimal numbers in `line` that are not parts of an address, a time or a version.
fn counts_in(line: &str) -> Vec<u64> {
    let bytes = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let joined = |b: Option<&u8>| matches!(b, Some(b':' | b'.'));
            if !joined(start.checked_sub(1).and_then(|p| bytes.get(p))) && !joined(bytes.get(i)) {
                out.extend(line[start..i].parse::<u64>().ok());
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn rule6_refused_actuator_credentials_are_logged_rate_limited_with_a_summary_count() {
    let server = Server::start(ServerOpts::default().release());
    let before = server.log_messages().len();
    let attempt = |n: usize| {
        let mut c = Client::connect(server.addr);
        let (message, _) = actuation(("dashboard", &format!("guess-{n}")), "some-device", "");
        c.send(&message);
        assert_eq!(c.recv_json(WAIT), json!({"code": 401, "content": "Invalid credentials"}), "attempt {n}");
        c.expect_close(1008);
    };
    for n in 0..50 {
        attempt(n);
    }
    std::thread::sleep(Duration::from_millis(300));
    let during: Vec<String> = server.log_messages()[before..].to_vec();
    eprintln!("lines during 50 refusals:\n{}", during.join("\n"));
    assert!(!during.is_empty(), "refused actuator credentials are not logged");
    assert!(during.len() <= 12, "{} log lines for 50 refused credentials: not rate-limited", during.len());
    // The repeats are summarised with their count (those not shown): periodically, or at the
    // next refusal.
    let fewest = 50 - during.len() as u64 - 2;
    let is_summary = |l: &str| counts_in(l).iter().any(|n| (fewest..=51).contains(n));
    let mut summary =
        eventually(Duration::from_secs(12), || server.log_messages()[before..].iter().find(|l| is_summary(l)).cloned());
    if summary.is_none() {
        attempt(50);
        summary = eventually(Duration::from_secs(10), || {
            server.log_messages()[before..].iter().find(|l| is_summary(l)).cloned()
        });
    }
    let all: Vec<String> = server.log_messages()[before..].to_vec();
    assert!(summary.is_some(), "no summary line counting the repeats ({fewest}-51) within 22 s:\n{}", all.join("\n"));
    assert!(all.len() <= 15, "{} log lines for 51 refused credentials:\n{}", all.len(), all.join("\n"));
}

/// One refused registration over a raw socket: the upgrade and the registration in one write,
/// then the close handshake answered; `Err` if the server did not finish within 3 s.
fn raw_refused_registration(addr: SocketAddr, request: &[u8]) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(request).map_err(|e| e.to_string())?;
    let close_1008 = [0x88, 0x02, 0x03, 0xF0];
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Err(format!("EOF before the close frame: {:?}", String::from_utf8_lossy(&got))),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(format!("no close frame within 3 s ({} bytes before)", got.len()))
            }
            Err(e) => return Err(format!("{e} after {} bytes", got.len())),
        }
        if got.windows(4).any(|w| w == close_1008) {
            break;
        }
    }
    let _ = s.write_all(&frame(true, 0x8, &1008u16.to_be_bytes(), true));
    match s.read_to_end(&mut got) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(()),
        Err(e) => Err(format!("no EOF after the close: {e}")),
    }
}

/// An upgrade request offering `echo-protocol`, as one write.
const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Protocol: echo-protocol\r\n\r\n";

/// Fills the server's stdout pipe (its info lines, the refusals among them) to the brim through
/// `/proc/PID/fd/1` (a second writer on the same pipe): from then on every write the server makes
/// to stdout would block. Returns the
/// bytes it took.
fn fill_stdout_pipe(server: &Server) -> usize {
    use std::os::unix::fs::OpenOptionsExt;
    let path = format!("/proc/{}/fd/1", server.pid());
    let mut pipe = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {path}: {e}"));
    let filler = [b'#'; 4096];
    let mut total = 0;
    loop {
        match pipe.write(&filler) {
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return total,
            Err(e) => panic!("fill {path}: {e}"),
        }
        assert!(total < 64 * MIB as usize, "{path} takes everything: not a pipe?");
    }
}

#[test]
fn rule6_server_whose_log_pipe_is_full_keeps_serving_through_20000_loggable_refusals() {
    let _heavy = heavy();
    let server = Server::start_stdout_unread(ServerOpts::default().release());
    let addr = server.addr;
    let filled = fill_stdout_pipe(&server);
    eprintln!("stdout pipe full after {filled} bytes");
    const TOTAL: u64 = 20_000;
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let end = started + Duration::from_secs(40);
    let workers: Vec<JoinHandle<Result<(), String>>> = (0..4)
        .map(|w| {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while done.load(Relaxed) < TOTAL && Instant::now() < end {
                    let mut request = UPGRADE.to_vec();
                    let register = registration(&format!("noisy-{w}-{n}"), "x.y.z");
                    request.extend(frame(true, 1, register.as_bytes(), true));
                    raw_refused_registration(addr, &request)
                        .map_err(|e| format!("registration {n} of worker {w}: {e}"))?;
                    done.fetch_add(1, Relaxed);
                    n += 1;
                }
                Ok(())
            })
        })
        .collect();
    let outcomes: Vec<Result<(), String>> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let refused = done.load(Relaxed);
    eprintln!("{refused} refused registrations in {:?} with stdout full", started.elapsed());
    for outcome in outcomes {
        outcome.unwrap_or_else(|e| panic!("after {refused} refused registrations, the server stalled: {e}"));
    }
    assert!(refused >= TOTAL, "only {refused} refused registrations in 40 s");
    // Refused credentials log too; the server answers them as before.
    for n in 0..50 {
        let mut c = Client::connect(addr);
        c.send(&actuation(("dashboard", &format!("guess-{n}")), "noisy-0-0", "").0);
        assert_eq!(c.recv_json(WAIT), json!({"code": 401, "content": "Invalid credentials"}), "attempt {n}");
        c.expect_close(1008);
    }
    assert_live(&server);
    // Lines that do not fit are dropped and counted; a rate-limited log may not have had to
    // drop any yet, but the counter is there.
    let dropped = metric(addr, "iot_ws_log_lines_dropped_total");
    eprintln!("iot_ws_log_lines_dropped_total = {dropped:?}");
    assert!(dropped.is_some(), "/metrics has no iot_ws_log_lines_dropped_total");
}
