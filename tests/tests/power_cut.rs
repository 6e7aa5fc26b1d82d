//! Restart after a crash or a power cut: the dead instance's database sessions are not closed,
//! so its address's lock stays held until PostgreSQL notices the silence; the restarted instance
//! (same external address) waits for it, then serves. And an address still held after the wait
//! is refused as before: one line, status 2.
//!
//! The power cut: the server reaches PostgreSQL through [`Proxy`], a TCP relay standing in for the
//! gateway's network stack. At the cut it stops relaying and its sockets vanish without a FIN or
//! an RST (`TCP_REPAIR`, which needs CAP_NET_ADMIN: the tests run as root), then the server is
//! SIGKILLed. PostgreSQL's end of each session sees nothing until the server's keepalive settings
//! make it probe; the probe reaches a port with no socket behind it and is answered with an RST,
//! as a rebooted gateway answers. A probe nobody answers (a NAT that forgot the connection) ends
//! the session by the same settings 20 s later; that case needs a packet filter and is not run.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iot_ws_tests::{eventually, run_to_exit, Client, Cluster, Db, Keys, Server, ServerOpts, ACTUATOR, WAIT};

/// A login of the test's own that owns `db` and is not a superuser: what the server's session
/// settings need to work as.
fn plain_role(db: &Db) -> String {
    let role = format!("{}_plain", db.name);
    let sql = format!("CREATE ROLE {role} LOGIN NOSUPERUSER; ALTER DATABASE {} OWNER TO {role}", db.name);
    db.client().batch_execute(&sql).expect("create a plain role");
    role
}

fn url(role: &str, port: u16, db: &Db) -> String {
    format!("host=127.0.0.1 port={port} user={role} dbname={} connect_timeout=2", db.name)
}

#[derive(Default)]
struct Relay {
    cut: AtomicBool,
    /// Pumping threads still running.
    pumps: AtomicUsize,
    /// Sockets kept open, never written again, once the cut is made.
    kept: Mutex<Vec<TcpStream>>,
}

/// A TCP relay to PostgreSQL on loopback; see the file's header.
struct Proxy {
    port: u16,
    relay: Arc<Relay>,
}

impl Proxy {
    fn to(pg_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let relay = Arc::new(Relay::default());
        let accepting = relay.clone();
        std::thread::spawn(move || {
            for down in listener.incoming() {
                let Ok(down) = down else { continue };
                if accepting.cut.load(SeqCst) {
                    // After the cut a new connection gets no answer either.
                    accepting.kept.lock().unwrap().push(down);
                    continue;
                }
                let Ok(up) = TcpStream::connect(("127.0.0.1", pg_port)) else { continue };
                pump(&accepting, down.try_clone().unwrap(), up.try_clone().unwrap());
                pump(&accepting, up, down);
            }
        });
        Proxy { port, relay }
    }

    /// Stops relaying, then makes every socket vanish: closed in repair mode, the kernel forgets
    /// it without telling the peer.
    fn power_cut(&self) {
        self.relay.cut.store(true, SeqCst);
        let stopped = eventually(WAIT, || (self.relay.pumps.load(SeqCst) == 0).then_some(()));
        assert!(stopped.is_some(), "the proxy's threads did not stop");
        for socket in self.relay.kept.lock().unwrap().drain(..) {
            let on: libc::c_int = 1;
            // SAFETY: setsockopt(2) on a socket we own, reading one c_int.
            let rc = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_REPAIR,
                    (&on as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0, "TCP_REPAIR (needs CAP_NET_ADMIN): {}", std::io::Error::last_os_error());
        }
    }
}

/// Copies `from` to `to` until either ends or the cut, when both are kept as they are.
fn pump(relay: &Arc<Relay>, mut from: TcpStream, mut to: TcpStream) {
    relay.pumps.fetch_add(1, SeqCst);
    let relay = relay.clone();
    std::thread::spawn(move || {
        // Wakes up to see the cut even when nothing comes.
        from.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut buf = vec![0; 64 * 1024];
        loop {
            if relay.cut.load(SeqCst) {
                relay.kept.lock().unwrap().extend([from, to]);
                break;
            }
            match from.read(&mut buf) {
                Ok(0) => {
                    let _ = to.shutdown(Shutdown::Write);
                    break;
                }
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        relay.pumps.fetch_sub(1, SeqCst);
    });
}

#[test]
fn after_a_power_cut_the_restarted_instance_waits_for_the_dead_ones_lock_then_serves() {
    let db = Cluster::shared().create_db();
    let role = plain_role(&db);
    let proxy = Proxy::to(db.port);
    let mut dead = Server::start(ServerOpts::default().with_db(&url(&role, proxy.port, &db)));
    let _device = Client::registered_on(&dead, "cut-dev");
    assert!(db.wait_binding("cut-dev", true));

    proxy.power_cut();
    dead.kill();
    // PostgreSQL has not noticed: the dead instance's session still holds the address.
    assert_eq!(db.advisory_locks(), 1, "the dead instance's lock");

    let wait = 60;
    let opts =
        ServerOpts::default().with_db(&url(&role, db.port, &db)).env("IOT_WS_INSTANCE_LOCK_WAIT", &wait.to_string());
    assert_eq!(opts.external_address, dead.external_address());
    // The deadline is the wait itself: past it, the server gives up (status 2) and this fails.
    let restarted = Server::start_within(opts, Duration::from_secs(wait) + WAIT);
    let stderr = restarted.log();
    let waited = format!("external address \"10.1.2.3:5000\" is taken; waiting up to {wait} s");
    assert!(stderr.lines().any(|l| l.contains(&waited)), "no waiting line:\n{stderr}");
    assert_eq!(stderr.matches("waiting up to").count(), 1, "one waiting line:\n{stderr}");

    let mut device = Client::registered_on(&restarted, "cut-dev");
    assert_eq!(db.binding("cut-dev"), Some((true, "10.1.2.3:5000".into())));
    let (message, body) = iot_ws_tests::actuation(ACTUATOR, "cut-dev", r#""after":"power cut""#);
    Client::connect(restarted.addr).send(&message);
    device.expect_delivery("cut-dev", &body);
}

#[test]
fn an_address_still_taken_after_the_wait_is_refused_with_status_2() {
    let db = Cluster::shared().create_db();
    let live = Server::start(ServerOpts::default().with_db(&db.url()));
    let key = Keys::shared().public_path().display().to_string();
    let url = db.url();
    let args = ["--listen", "127.0.0.1:0", "--public-key", &key, "--database-url", &url];
    let args = [&args[..], &["--external-address", live.external_address()]].concat();
    let (status, _out, err) = run_to_exit(&args, &[("IOT_WS_INSTANCE_LOCK_WAIT", "1")], WAIT);
    let status = status.expect("gives up after its wait");
    assert_eq!(status.code(), Some(2), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "a waiting line and the refusal:\n{err}");
    assert!(lines[0].contains("waiting up to 1 s"), "{err}");
    assert!(lines[1].contains("another instance is running with external address"), "{err}");
    // The live instance was not disturbed.
    let _device = Client::registered_on(&live, "still-served");
}
