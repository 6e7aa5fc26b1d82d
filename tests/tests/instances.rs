//! Several instances on one PostgreSQL (issue 6): `dashboard."connectionBindings"` is the
//! routing table of the whole deployment. Every instance listens on its own loopback port and
//! stores exactly that as `server`; the dashboard reads a device's row, splits `server` on ':',
//! connects there and sends.
//!
//! - routing: dashboard-style, read the row, connect to the instance it names, send;
//! - a device moving A -> B while A still holds its old connection, which then ends with a close
//!   frame or a TCP abort: the row still names B and is true, routing reaches the device;
//!   simultaneous registrations on two instances leaving one connection, the one the row names;
//! - SIGKILL of an instance with devices connected, its devices reconnecting elsewhere, and the
//!   restarted instance repairing only its own leftovers; SIGTERM clearing only its own rows;
//! - ambiguous external addresses refused (unspecified host, port 0, one a live instance uses);
//! - any instance accepts an actuation: forwarded through PostgreSQL to the device's instance,
//!   delivered exactly once, in order per sender and device, the ack saying where it went; a
//!   registration elsewhere closing the stale connection (1000) and taking what was held there;
//!   actuations queued for an instance that then died reaching the device where it reconnected,
//!   or dropped and counted once the hold time passed; devices really gone reported 500; a row
//!   the database refuses failing only itself, the rest of its batch forwarded in order;
//! - load: 1,000 devices over three instances, 10,000 actuations sent to random instances, each
//!   delivered exactly once.
//!
//! No timing assertions: every wait is bounded (`WAIT`), and "nothing more arrives" checks are
//! short bounded silences.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use futures_lite::future;
use iot_ws_tests::{
    actuation, actuation_ack, connect_async, eventually, loopback_port, next_text, register_async, run_to_exit,
    AsyncWs, Client, Cluster, Db, Event, Keys, Server, ServerOpts, ACTUATOR, WAIT,
};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// One instance on its own loopback port, `server` = `127.0.0.1:<that port>`.
fn instance(db: &Db) -> Server {
    Server::start_routable(ServerOpts::default().with_db(&db.url()))
}

/// Three instances on one database.
fn three(db: &Db) -> [Server; 3] {
    [instance(db), instance(db), instance(db)]
}

/// Starts `opts` again (same port, same external address), e.g. after a crash. The old process's
/// port may be briefly unavailable; a refusal for any other reason fails the test.
fn restart(opts: &ServerOpts) -> Server {
    let mut last = String::new();
    let started = eventually(WAIT, || match Server::try_start(opts.clone()) {
        Ok(server) => Some(server),
        Err(stderr) if stderr.contains("in use") => {
            last = stderr;
            std::thread::sleep(Duration::from_millis(100));
            None
        }
        Err(stderr) => panic!("restart on {} refused:\n{stderr}", opts.external_address),
    });
    started.unwrap_or_else(|| panic!("restart on {}: port stayed in use:\n{last}", opts.external_address))
}

fn token(device: &str) -> String {
    Keys::shared().token(device)
}

fn registered_on(server: &Server, device: &str) -> Client {
    Client::registered(server.addr, device, &token(device))
}

/// What a device receives for an actuation whose body is `body`.
fn delivery(body: &str) -> String {
    format!(r#"{{"code":1024,"content":{body}}}"#)
}

/// The dashboard's routing: the device's row must say connected; `server` split on ':' gives the
/// host and port to connect to.
fn dashboard_route(db: &Db, device: &str) -> SocketAddr {
    let (connected, server) =
        db.binding(device).unwrap_or_else(|| panic!("no binding row for {device}; rows: {:?}", db.bindings()));
    assert!(connected, "the row of {device} says not connected (server {server}); rows: {:?}", db.bindings());
    let (host, port) = server.split_once(':').unwrap_or_else(|| panic!("server {server:?} has no ':'"));
    let port: u16 = port.parse().unwrap_or_else(|_| panic!("server {server:?}: port is not a number"));
    (host, port).to_socket_addrs().expect("resolve the row's host").next().expect("an address")
}

/// Sends an actuation the way the dashboard does: route by the row, connect, send (no ack).
/// Returns the body the device must receive and the dashboard's connection (kept open until
/// the caller has checked the delivery).
fn dashboard_send(db: &Db, device: &str, extra: &str) -> (String, Client, SocketAddr) {
    let addr = dashboard_route(db, device);
    let (message, body) = actuation(ACTUATOR, device, extra);
    let mut dashboard = Client::connect(addr);
    dashboard.send(&message);
    (body, dashboard, addr)
}

/// The device's next message is exactly this delivery.
fn expect_delivery(device: &mut Client, who: &str, body: &str) {
    match device.recv(WAIT) {
        Event::Text(text) => assert_eq!(text, delivery(body), "{who} got something else"),
        other => panic!("{who} expected the delivery of {body}, got {other:?}"),
    }
}

/// Nothing more arrives for a short while (a duplicate would).
fn expect_nothing_more(device: &mut Client, who: &str) {
    match device.recv(Duration::from_millis(300)) {
        Event::Timeout => {}
        other => panic!("{who}: expected nothing more, got {other:?}"),
    }
}

/// Every column of every 'ws' row that an instance could touch, as text, by deviceId.
fn full_rows(db: &Db) -> BTreeMap<String, (bool, String, String, String)> {
    let mut client = db.client();
    client
        .query(
            r#"SELECT "deviceId"::text, "connectingStatus", server::text, "lastConnectedAt"::text, updated::text
               FROM dashboard."connectionBindings" WHERE type::text = 'ws'"#,
            &[],
        )
        .expect("query rows")
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4))))
        .collect()
}

fn subset(rows: &BTreeMap<String, (bool, String, String, String)>, devices: &[&str]) -> Vec<String> {
    devices.iter().map(|d| format!("{d}: {:?}", rows.get(*d))).collect()
}

/// Waits until the instance has no registered device but `left` (its gauge), bounded.
fn wait_registered(server: &Server, left: usize) {
    let ok = eventually(WAIT, || (server.metric("iot_ws_registered_devices") == Some(left as f64)).then_some(()));
    assert!(
        ok.is_some(),
        "{} still counts {:?} registered devices, expected {left}",
        server.external_address(),
        server.metric("iot_ws_registered_devices")
    );
}

/// Ends a witness device's connection on `server` with a close frame and waits for its row to
/// say false. The instance writes disconnects in the order it sees them, so once the witness's
/// row is false, every disconnect it saw before (e.g. a moved device's old connection) has
/// been written too, or was never going to be.
fn witness_leaves(db: &Db, mut witness: Client, id: &str) {
    witness.close(1000);
    witness.finish_close();
    assert!(db.wait_binding(id, false), "witness {id} never went false: {:?}", db.binding(id));
}

fn ack_delivered(device: &str) -> Value {
    json!({"code": 200, "content": "Delivered", "deviceId": device})
}

fn ack_forwarded(device: &str, to: &Server) -> Value {
    json!({"code": 202, "content": "Forwarded", "deviceId": device, "server": to.external_address()})
}

fn ack_not_connected(device: &str) -> Value {
    json!({"code": 500, "content": "Device not connected", "deviceId": device})
}

/// Sends an actuation with `"ack": true` on `sender` and returns (ack, body).
fn send_ack(sender: &mut Client, device: &str, extra: &str) -> (Value, String) {
    let (message, body) = actuation_ack(device, extra);
    sender.send(&message);
    (sender.recv_json(WAIT), body)
}

// ---------------------------------------------------------------------------------------------
// Routing, moves, crashes, stops, configuration (no forwarding needed)
// ---------------------------------------------------------------------------------------------

#[test]
fn dashboard_routing_reads_the_row_connects_to_the_server_it_names_and_reaches_the_device() {
    let db = Cluster::shared().create_db();
    let servers = three(&db);
    let mut devices: Vec<(String, Client)> = servers
        .iter()
        .enumerate()
        .flat_map(|(s, server)| {
            (0..2).map(move |k| {
                let id = format!("route-{s}-{k}");
                let client = registered_on(server, &id);
                (id, client)
            })
        })
        .collect();
    for (n, (id, device)) in devices.iter_mut().enumerate() {
        let home = &servers[n / 2];
        assert_eq!(db.binding(id), Some((true, home.external_address().to_string())), "{id}");
        let (body, _dashboard, addr) = dashboard_send(&db, id, &format!(r#""route":{n}"#));
        assert_eq!(addr, home.addr, "the row of {id} routes to its own instance");
        expect_delivery(device, id, &body);
    }
    for (id, device) in &mut devices {
        expect_nothing_more(device, id);
    }
}

#[derive(Clone, Copy, Debug)]
enum OldEnd {
    CloseFrame,
    TcpAbort,
}

/// A device registered on A registers again on B while A still holds its old connection; then
/// that old connection ends. The row names B, stays true, and routing reaches the device on B.
fn device_moves_from_a_to_b(end: OldEnd) {
    let db = Cluster::shared().create_db();
    let [a, b, c] = three(&db);
    let mover = format!("mover-{end:?}");
    let witness_id = format!("witness-{end:?}");
    let bystander_id = format!("bystander-{end:?}");
    let mut old = registered_on(&a, &mover);
    let witness = registered_on(&a, &witness_id);
    let _bystander = registered_on(&c, &bystander_id);
    assert_eq!(db.binding(&mover), Some((true, a.external_address().into())));

    let mut new = registered_on(&b, &mover);
    assert_eq!(db.binding(&mover), Some((true, b.external_address().into())), "registration on B takes the row");
    let after_move = full_rows(&db);

    match end {
        OldEnd::CloseFrame => {
            old.close(1000);
            old.finish_close();
        }
        OldEnd::TcpAbort => old.abort_tcp(),
    }
    // A has seen the old connection end...
    wait_registered(&a, 1);
    // ...and has written every disconnect it saw before the witness's.
    witness_leaves(&db, witness, &witness_id);

    let rows = full_rows(&db);
    assert_eq!(
        rows.get(&mover),
        after_move.get(&mover),
        "A's late disconnect ({end:?}) touched the row B wrote; A is {}, B is {}",
        a.external_address(),
        b.external_address()
    );
    assert_eq!(rows.get(&bystander_id), after_move.get(&bystander_id), "C's row was touched");
    assert_eq!(db.binding(&mover), Some((true, b.external_address().into())));

    let (body, _dashboard, addr) = dashboard_send(&db, &mover, r#""after":"move""#);
    assert_eq!(addr, b.addr);
    expect_delivery(&mut new, &mover, &body);
    expect_nothing_more(&mut new, &mover);
}

#[test]
fn device_moving_a_to_b_keeps_the_row_on_b_when_the_old_connection_ends_with_a_close_frame() {
    device_moves_from_a_to_b(OldEnd::CloseFrame);
}

#[test]
fn device_moving_a_to_b_keeps_the_row_on_b_when_the_old_connection_is_aborted() {
    device_moves_from_a_to_b(OldEnd::TcpAbort);
}

#[test]
fn device_moving_a_to_b_and_back_to_a_keeps_the_row_on_a_when_bs_connection_is_aborted() {
    let db = Cluster::shared().create_db();
    let [a, b, _c] = three(&db);
    let id = "ping-pong";
    let mut first = registered_on(&a, id);
    let on_b = registered_on(&b, id);
    let witness = registered_on(&b, "pp-witness");
    let mut back = registered_on(&a, id);
    // A replaces its own older connection of the device.
    first.expect_close(1000);
    assert_eq!(db.binding(id), Some((true, a.external_address().into())));
    let before = full_rows(&db);

    on_b.abort_tcp();
    wait_registered(&b, 1);
    witness_leaves(&db, witness, "pp-witness");
    assert_eq!(full_rows(&db).get(id), before.get(id), "B's late disconnect touched A's row");

    let (body, _dashboard, addr) = dashboard_send(&db, id, r#""back":"on A""#);
    assert_eq!(addr, a.addr);
    expect_delivery(&mut back, id, &body);
    expect_nothing_more(&mut back, id);
}

#[test]
fn simultaneous_registrations_on_two_instances_leave_one_connection_and_the_row_naming_it() {
    const ROUNDS: usize = 10;
    let db = Cluster::shared().create_db();
    let [a, b, _c] = three(&db);
    for round in 0..ROUNDS {
        let id = format!("race-{round}");
        let tok = token(&id);
        // Both connections open first, then both registrations at once.
        let mut on_a = Client::connect(a.addr);
        let mut on_b = Client::connect(b.addr);
        let barrier = std::sync::Barrier::new(2);
        let (reply_a, reply_b) = std::thread::scope(|s| {
            let ta = s.spawn(|| {
                barrier.wait();
                on_a.register(&id, &tok)
            });
            let tb = s.spawn(|| {
                barrier.wait();
                on_b.register(&id, &tok)
            });
            (ta.join().unwrap(), tb.join().unwrap())
        });
        assert_eq!(reply_a, json!({"code": 200, "content": "Subscribed"}), "{id} on A");
        assert_eq!(reply_b, json!({"code": 200, "content": "Subscribed"}), "{id} on B");
        // The row names one of them, true; that one stays, the other is closed as replaced.
        let (connected, server) = db.binding(&id).expect("a row");
        assert!(connected, "{id}: row false after two registrations");
        let (winner, loser, mut kept, mut replaced) = if server == a.external_address() {
            (&a, &b, on_a, on_b)
        } else {
            assert_eq!(server, b.external_address(), "{id}: row names neither instance");
            (&b, &a, on_b, on_a)
        };
        match replaced.recv(WAIT) {
            Event::Close(Some(1000)) => {}
            other => panic!(
                "{id}: the row names {} ({}); the connection on {} got {other:?} instead of close 1000",
                winner.external_address(),
                if winner.addr == a.addr { "A" } else { "B" },
                loser.external_address()
            ),
        }
        wait_registered(loser, 0);
        assert_eq!(db.binding(&id), Some((true, winner.external_address().into())), "{id} after the loser closed");
        let (body, _dashboard, addr) = dashboard_send(&db, &id, &format!(r#""round":{round}"#));
        assert_eq!(addr, winner.addr);
        expect_delivery(&mut kept, &id, &body);
        kept.close(1000);
        kept.finish_close();
        assert!(db.wait_binding(&id, false), "{id}: the winner's disconnect");
    }
}

#[test]
fn sigkilled_instance_devices_reconnect_elsewhere_and_the_restarted_instance_repairs_only_its_own_rows() {
    let db = Cluster::shared().create_db();
    let [mut a, b, c] = three(&db);
    let on_a: Vec<String> = (0..6).map(|i| format!("crash-{i}")).collect();
    let mut a_clients: Vec<Client> = on_a.iter().map(|id| registered_on(&a, id)).collect();
    let mut b_own = registered_on(&b, "b-own");
    let _c_own = registered_on(&c, "c-own");
    let locks_with_a = db.advisory_locks();

    a.kill();
    for (id, client) in on_a.iter().zip(&mut a_clients) {
        match client.recv(WAIT) {
            Event::Gone(_) | Event::Close(_) => {}
            other => panic!("{id} after SIGKILL of its instance: {other:?}"),
        }
    }
    drop(a_clients);
    // The crash left A's rows true.
    for id in &on_a {
        assert_eq!(db.binding(id), Some((true, a.external_address().into())), "{id} after the crash");
    }

    // crash-0..3 reconnect elsewhere; crash-4 and crash-5 are gone for good.
    let mut moved: Vec<(String, Client, &Server)> = on_a[..4]
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let to = if i % 2 == 0 { &b } else { &c };
            (id.clone(), registered_on(to, id), to)
        })
        .collect();
    for (id, _, to) in &moved {
        assert_eq!(db.binding(id), Some((true, to.external_address().into())), "{id} reconnected");
    }
    let before_restart = full_rows(&db);

    // The crashed process's advisory lock went with it.
    let released = eventually(WAIT, || (db.advisory_locks() < locks_with_a).then_some(()));
    assert!(released.is_some(), "advisory locks still {} after SIGKILL of A", db.advisory_locks());
    let a = restart(&a.opts);

    // A repairs its own leftovers...
    for id in &on_a[4..] {
        assert!(db.wait_binding(id, false), "{id}: the restarted A did not repair its stale row: {:?}", db.binding(id));
        assert_eq!(db.binding(id).map(|r| r.1), Some(a.external_address().to_string()), "{id}");
    }
    // ...and nothing else: rows of B and C are exactly as they were.
    let after_restart = full_rows(&db);
    let others: Vec<&str> = on_a[..4].iter().map(String::as_str).chain(["b-own", "c-own"]).collect();
    assert_eq!(
        subset(&after_restart, &others),
        subset(&before_restart, &others),
        "the restarted A touched rows of other instances"
    );

    // Routing reaches the moved devices, and the restarted A serves again.
    for (id, device, to) in &mut moved {
        let (body, _dashboard, addr) = dashboard_send(&db, id, r#""after":"crash""#);
        assert_eq!(addr, to.addr, "{id}");
        expect_delivery(device, id, &body);
    }
    let mut fresh = registered_on(&a, "after-restart");
    let (body, _dashboard, addr) = dashboard_send(&db, "after-restart", r#""on":"restarted A""#);
    assert_eq!(addr, a.addr);
    expect_delivery(&mut fresh, "after-restart", &body);
    let (body, _dashboard, _) = dashboard_send(&db, "b-own", r#""still":"here""#);
    expect_delivery(&mut b_own, "b-own", &body);
}

#[test]
fn sigterm_clears_only_the_instances_own_rows() {
    let db = Cluster::shared().create_db();
    let [mut a, b, c] = three(&db);
    let mut a1 = registered_on(&a, "stop-a1");
    let mut a2 = registered_on(&a, "stop-a2");
    let _b1 = registered_on(&b, "stop-b1");
    let _c1 = registered_on(&c, "stop-c1");
    // A device that moved to B while A still holds its old connection.
    let mut old = registered_on(&a, "stop-mover");
    let mut mover = registered_on(&b, "stop-mover");
    let before = full_rows(&db);

    a.sigterm();
    for (id, client) in [("stop-a1", &mut a1), ("stop-a2", &mut a2)] {
        match client.recv(WAIT) {
            Event::Close(code) => assert_eq!(code, Some(1001), "{id}"),
            other => panic!("{id}: expected close 1001, got {other:?}"),
        }
    }
    // The old connection: 1000 if A learnt of the move first (B tells A), else 1001.
    match old.recv(WAIT) {
        Event::Close(Some(1000 | 1001)) => {}
        other => panic!("stop-mover's old connection on A: expected close 1000 or 1001, got {other:?}"),
    }
    let status = a.wait_exit(Duration::from_secs(10)).expect("A exits within 10 s of SIGTERM");
    assert!(status.success(), "A's exit status {status:?}\n{}", a.stderr());

    let after = full_rows(&db);
    for id in ["stop-a1", "stop-a2"] {
        assert_eq!(db.binding(id), Some((false, a.external_address().into())), "{id}");
    }
    let others = ["stop-b1", "stop-c1", "stop-mover"];
    assert_eq!(subset(&after, &others), subset(&before, &others), "A's stop touched rows of other instances");
    let (body, _dashboard, addr) = dashboard_send(&db, "stop-mover", r#""after":"stop""#);
    assert_eq!(addr, b.addr);
    expect_delivery(&mut mover, "stop-mover", &body);
}

/// Runs a server with `external` on `db` to its end; it must refuse: status 2, one line.
fn refused(db: &Db, external: &str) -> String {
    let listen = format!("127.0.0.1:{}", loopback_port());
    let key = Keys::shared().public_path().display().to_string();
    let url = db.url();
    let args = [
        "--listen",
        &listen,
        "--public-key",
        &key,
        "--database-url",
        &url,
        "--external-address",
        external,
        "--actuator-username",
        ACTUATOR.0,
        "--actuator-password",
        ACTUATOR.1,
    ];
    let (status, _out, err) = run_to_exit(&args, &[], WAIT);
    let status = status.unwrap_or_else(|| panic!("--external-address {external:?}: still running after {WAIT:?}"));
    assert_eq!(status.code(), Some(2), "--external-address {external:?}: status {status:?}, stderr:\n{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "--external-address {external:?}: one line on stderr, got:\n{err}");
    lines[0].to_string()
}

#[test]
fn ambiguous_external_addresses_are_refused_and_a_live_instances_address_is_not_reused() {
    let db = Cluster::shared().create_db();
    let mut a = instance(&db);
    let mut device = registered_on(&a, "amb-dev");
    let port = loopback_port();
    for bad in [format!("0.0.0.0:{port}"), "127.0.0.1:0".to_string(), format!("[::]:{port}"), format!("::{port}")] {
        refused(&db, &bad);
    }
    // The address of a live instance on the same database.
    let line = refused(&db, a.external_address());
    assert!(
        line.contains("another instance") && line.contains("external address"),
        "refusal of a live instance's address: {line}"
    );
    assert!(line.contains(a.external_address()), "the refusal names the address: {line}");
    // The refused process touched nothing of A's, and A still serves.
    assert_eq!(db.binding("amb-dev"), Some((true, a.external_address().into())));
    let (body, _dashboard, addr) = dashboard_send(&db, "amb-dev", r#""still":"served""#);
    assert_eq!(addr, a.addr);
    expect_delivery(&mut device, "amb-dev", &body);
    assert!(a.wait_exit(Duration::from_millis(1)).is_none(), "A is still running");
}

// ---------------------------------------------------------------------------------------------
// Forwarding through PostgreSQL
// ---------------------------------------------------------------------------------------------

#[test]
fn any_instance_accepts_an_actuation_and_the_device_gets_it_exactly_once() {
    let db = Cluster::shared().create_db();
    let servers = three(&db);
    let home = &servers[1];
    let mut device = registered_on(home, "anywhere");
    let mut bodies = Vec::new();
    for (n, server) in servers.iter().enumerate() {
        let mut sender = Client::connect(server.addr);
        let (ack, body) = send_ack(&mut sender, "anywhere", &format!(r#""via":{n}"#));
        let expected =
            if server.addr == home.addr { ack_delivered("anywhere") } else { ack_forwarded("anywhere", home) };
        assert_eq!(ack, expected, "ack of the actuation sent to instance {n} ({})", server.external_address());
        expect_delivery(&mut device, "anywhere", &body);
        expect_nothing_more(&mut sender, "the sender after its one ack");
        bodies.push(body);
    }
    // Without "ack": no reply, the device still gets it once.
    let (message, body) = actuation(ACTUATOR, "anywhere", r#""via":"no ack""#);
    let mut sender = Client::connect(servers[2].addr);
    sender.send(&message);
    expect_delivery(&mut device, "anywhere", &body);
    expect_nothing_more(&mut device, "anywhere");
    expect_nothing_more(&mut sender, "a sender without ack");
}

#[test]
fn forwarded_actuations_keep_their_order_per_sender_and_device_and_the_acks_say_where_they_went() {
    const PER_SENDER: usize = 150;
    let db = Cluster::shared().create_db();
    let servers = three(&db);
    let ids = ["order-0", "order-1", "order-2"];
    let mut devices: Vec<Client> = ids.iter().zip(&servers).map(|(id, s)| registered_on(s, id)).collect();
    // Two senders, on instances 0 and 2, interleaving the three devices.
    let senders: Vec<(usize, Client)> = [0usize, 2].iter().map(|&s| (s, Client::connect(servers[s].addr))).collect();
    let mut expected: Vec<Vec<String>> = vec![Vec::new(); ids.len()];
    let mut acks_expected: Vec<Vec<String>> = Vec::new();
    let mut senders: Vec<(usize, Client, Vec<String>)> = senders
        .into_iter()
        .map(|(s, mut client)| {
            let mut acks = Vec::new();
            for seq in 0..PER_SENDER {
                let d = (seq + s) % ids.len();
                let (message, body) = actuation_ack(ids[d], &format!(r#""sender":{s},"seq":{seq}"#));
                client.send(&message);
                expected[d].push(delivery(&body));
                let ack = if d == s { ack_delivered(ids[d]) } else { ack_forwarded(ids[d], &servers[d]) };
                acks.push(ack.to_string());
            }
            acks.sort();
            acks_expected.push(acks);
            (s, client, Vec::new())
        })
        .collect();
    for (_, client, got) in &mut senders {
        for _ in 0..PER_SENDER {
            got.push(client.recv_json(WAIT).to_string());
        }
        got.sort();
    }
    for ((s, _, got), want) in senders.iter().zip(&acks_expected) {
        assert_eq!(got, want, "acks of the sender on instance {s}");
    }
    for (d, device) in devices.iter_mut().enumerate() {
        let mut got: Vec<String> = Vec::new();
        for _ in 0..expected[d].len() {
            match device.recv(WAIT) {
                Event::Text(text) => got.push(text),
                other => panic!("{}: after {} deliveries: {other:?}; got {got:#?}", ids[d], got.len()),
            }
        }
        // Per sender: every one, exactly once, in the order sent.
        for s in [0, 2] {
            let tag = format!(r#""sender":{s},"#);
            let got_s: Vec<&String> = got.iter().filter(|t| t.contains(&tag)).collect();
            let want_s: Vec<&String> = expected[d].iter().filter(|t| t.contains(&tag)).collect();
            assert_eq!(got_s, want_s, "{} from the sender on instance {s}", ids[d]);
        }
        let mut sorted_got = got.clone();
        sorted_got.sort();
        let mut sorted_want = expected[d].clone();
        sorted_want.sort();
        assert_eq!(sorted_got, sorted_want, "{}: exactly the actuations sent to it", ids[d]);
        expect_nothing_more(device, ids[d]);
    }
}

#[test]
fn after_a_move_the_old_instance_forwards_to_the_new_one_instead_of_holding() {
    let db = Cluster::shared().create_db();
    let [a, b, _c] = three(&db);
    let id = "moved-fwd";
    let mut old = registered_on(&a, id);
    let mut new = registered_on(&b, id);
    old.close(1000);
    old.finish_close();
    wait_registered(&a, 0);
    // A saw the device leave less than the hold time ago, but its row names B: forward there.
    let mut sender = Client::connect(a.addr);
    for n in 0..3 {
        let (ack, body) = send_ack(&mut sender, id, &format!(r#""n":{n}"#));
        assert_eq!(ack, ack_forwarded(id, &b), "actuation {n} sent to the old instance");
        expect_delivery(&mut new, id, &body);
    }
    expect_nothing_more(&mut new, id);
    assert_eq!(db.binding(id), Some((true, b.external_address().into())));
}

#[test]
fn a_registration_elsewhere_closes_the_stale_connection_on_the_previous_instance_with_1000() {
    let db = Cluster::shared().create_db();
    let [a, b, _c] = three(&db);
    let id = "stale-close";
    let mut old = registered_on(&a, id);
    let mut new = registered_on(&b, id);
    old.expect_close(1000);
    wait_registered(&a, 0);
    assert_eq!(db.binding(id), Some((true, b.external_address().into())));
    // The old instance now forwards to the new one.
    let mut sender = Client::connect(a.addr);
    let (ack, body) = send_ack(&mut sender, id, r#""after":"stale close""#);
    assert_eq!(ack, ack_forwarded(id, &b));
    expect_delivery(&mut new, id, &body);
    expect_nothing_more(&mut new, id);
}

#[test]
fn actuations_held_on_the_old_instance_follow_the_device_to_its_new_one() {
    let db = Cluster::shared().create_db();
    let [a, b, _c] = three(&db);
    let id = "held-follows";
    let mut left = registered_on(&a, id);
    left.close(1000);
    left.finish_close();
    assert!(db.wait_binding(id, false));
    let mut sender = Client::connect(a.addr);
    let mut bodies = Vec::new();
    for n in 0..4 {
        let (ack, body) = send_ack(&mut sender, id, &format!(r#""held":{n}"#));
        assert_eq!(ack, json!({"code": 202, "content": "Held", "deviceId": id}), "actuation {n} after it left A");
        bodies.push(body);
    }
    // It comes back on B, not A: what A held reaches it there, once, in order.
    let mut on_b = registered_on(&b, id);
    for body in &bodies {
        expect_delivery(&mut on_b, id, body);
    }
    expect_nothing_more(&mut on_b, id);
}

#[test]
fn actuations_for_devices_that_are_really_gone_are_reported_not_connected() {
    let db = Cluster::shared().create_db();
    let [a, b, mut c] = three(&db);
    // Left B cleanly: its row is false.
    let mut left = registered_on(&b, "gone-left");
    left.close(1000);
    left.finish_close();
    assert!(db.wait_binding("gone-left", false));
    // On C, which then crashes: its row still says true, naming a dead instance.
    let locks_with_c = db.advisory_locks();
    let orphan = registered_on(&c, "gone-orphan");
    c.kill();
    drop(orphan);
    assert_eq!(db.binding("gone-orphan"), Some((true, c.external_address().into())));
    let released = eventually(WAIT, || (db.advisory_locks() < locks_with_c).then_some(()));
    assert!(released.is_some(), "advisory locks still {} after SIGKILL of C", db.advisory_locks());

    let mut sender = Client::connect(a.addr);
    for id in ["gone-left", "gone-orphan", "gone-never-seen"] {
        let (ack, _) = send_ack(&mut sender, id, r#""to":"nowhere""#);
        assert_eq!(ack, ack_not_connected(id), "{id}; row {:?}", db.binding(id));
    }
    // The orphan comes back on B: nothing reported lost reaches it, new actuations do.
    let mut back = registered_on(&b, "gone-orphan");
    let (ack, body) = send_ack(&mut sender, "gone-orphan", r#""to":"B now""#);
    assert_eq!(ack, ack_forwarded("gone-orphan", &b));
    expect_delivery(&mut back, "gone-orphan", &body);
    expect_nothing_more(&mut back, "gone-orphan");
}

/// Queues actuations for C while C is frozen (SIGSTOP: alive for PostgreSQL, its advisory lock
/// held, but taking nothing), then kills C. Returns the instances, the sender's acks and bodies.
fn queue_for_frozen_instance_then_kill_it(
    db: &Db,
    opts: ServerOpts,
    device: &str,
    n: usize,
) -> (Server, Server, Vec<String>) {
    let a = Server::start_routable(opts.clone());
    let b = Server::start_routable(opts.clone());
    let mut c = Server::start_routable(opts);
    let mut on_c = registered_on(&c, device);
    c.signal(libc::SIGSTOP);
    let mut sender = Client::connect(a.addr);
    let mut bodies = Vec::new();
    for seq in 0..n {
        let (ack, body) = send_ack(&mut sender, device, &format!(r#""queued":{seq}"#));
        assert_eq!(ack, ack_forwarded(device, &c), "actuation {seq} for {device} on the frozen C");
        bodies.push(body);
    }
    let queued: i64 = db
        .client()
        .query_one(r#"SELECT count(*) FROM dashboard."iotWsForwarded""#, &[])
        .map(|r| r.get(0))
        .unwrap_or(-1);
    eprintln!("{device}: {queued} rows in dashboard.\"iotWsForwarded\" while C is frozen (informational)");
    c.kill();
    match on_c.recv(WAIT) {
        Event::Gone(_) | Event::Close(_) => {}
        other => panic!("{device} after SIGKILL of C: {other:?}"),
    }
    (a, b, bodies)
}

#[test]
fn actuations_queued_for_an_instance_that_died_reach_the_device_where_it_reconnected_exactly_once_in_order() {
    let db = Cluster::shared().create_db();
    let device = "in-flight";
    let opts = ServerOpts::default().with_db(&db.url());
    let (_a, b, bodies) = queue_for_frozen_instance_then_kill_it(&db, opts, device, 5);
    let mut back = registered_on(&b, device);
    for body in &bodies {
        expect_delivery(&mut back, device, body);
    }
    expect_nothing_more(&mut back, device);
}

#[test]
fn actuations_queued_for_an_instance_that_died_are_dropped_and_counted_once_the_hold_time_passed() {
    let db = Cluster::shared().create_db();
    let device = "never-back";
    let opts = ServerOpts::default().with_db(&db.url()).arg("--hold-actuations-secs", "1");
    let (a, b, _bodies) = queue_for_frozen_instance_then_kill_it(&db, opts, device, 2);
    let lost = |s: &Server| s.metric(r#"iot_ws_actuations_total{outcome="lost_in_transit"}"#).unwrap_or(0.0);
    let counted = eventually(WAIT, || (lost(&a) + lost(&b) == 2.0).then_some(()));
    assert!(counted.is_some(), "lost_in_transit: A {} B {}", lost(&a), lost(&b));
    // Dropped means dropped: the device coming back now gets nothing of them.
    let mut late = registered_on(&b, device);
    expect_nothing_more(&mut late, device);
}

// ---------------------------------------------------------------------------------------------
// Load: 1,000 devices over three instances, 10,000 actuations to random instances
// ---------------------------------------------------------------------------------------------

const LOAD_DEVICES: usize = 1_000;
const LOAD_ACTUATIONS: usize = 10_000;
const SENDERS_PER_INSTANCE: usize = 2;
/// Actuations a sender has in flight before it reads their acks.
const WINDOW: usize = 100;
const CONNECT_BATCH: usize = 100;
/// Bound on the whole run; far above what it takes.
const LOAD_LIMIT: Duration = Duration::from_secs(150);
/// How long a sender waits for one ack, and a device for the rest of its actuations once every
/// sender has all its acks: far above what it takes, well below `LOAD_LIMIT`.
const ACK_WAIT: Duration = Duration::from_secs(30);
const GRACE: Duration = Duration::from_secs(15);

/// xorshift64: reproducible with the seed printed by the test.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x % n as u64) as usize
    }
}

fn load_id(i: usize) -> String {
    format!("fleet-{i}")
}

fn load_extra(sender: usize, seq: usize) -> String {
    format!(r#""sender":{sender},"seq":{seq},"v":2.50,"s":"\u00e9""#)
}

fn load_tokens(keys: &Keys) -> Vec<String> {
    keys.tokens_for(&(0..LOAD_DEVICES).map(load_id).collect::<Vec<_>>())
}

/// What one device received: by then, at least as many messages as were sent to it.
struct DeviceGot {
    device: usize,
    got: Vec<String>,
    /// Anything that arrived after the expected count (a duplicate would), or the error.
    extra: Vec<String>,
}

#[test]
fn load_thousand_devices_over_three_instances_ten_thousand_actuations_to_random_instances_each_exactly_once() {
    // 1024-bit keys keep the signing of 1,000 tokens short; the key size is not under test here.
    let keys = Keys::generate(1024);
    let db = Cluster::shared().create_db();
    let opts = ServerOpts { public_key: keys.public_path(), ..ServerOpts::default() }.with_db(&db.url());
    let servers: Vec<Server> = (0..3).map(|_| Server::start_routable(opts.clone())).collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let tokens = load_tokens(&keys);

    // The plan: actuation k goes from a random sender (so a random instance) to a random device.
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("load: seed {seed}");
    let mut rng = Rng(seed);
    let senders = servers.len() * SENDERS_PER_INSTANCE;
    let home = |device: usize| device % servers.len();
    let sender_instance = |sender: usize| sender / SENDERS_PER_INSTANCE;
    let mut plan: Vec<Vec<String>> = vec![Vec::new(); senders];
    // Per device, per sender: the deliveries in the order sent.
    let mut expected: Vec<HashMap<usize, Vec<String>>> = vec![HashMap::new(); LOAD_DEVICES];
    // Per sender: the acks it must get (sorted; acks of different devices may come in any order).
    let mut acks_expected: Vec<Vec<String>> = vec![Vec::new(); senders];
    for _ in 0..LOAD_ACTUATIONS {
        let sender = rng.below(senders);
        let device = rng.below(LOAD_DEVICES);
        let seq = plan[sender].len();
        let (message, body) = actuation_ack(&load_id(device), &load_extra(sender, seq));
        plan[sender].push(message);
        expected[device].entry(sender).or_default().push(delivery(&body));
        let ack = if home(device) == sender_instance(sender) {
            ack_delivered(&load_id(device))
        } else {
            ack_forwarded(&load_id(device), &servers[home(device)])
        };
        acks_expected[sender].push(ack.to_string());
    }
    for acks in &mut acks_expected {
        acks.sort();
    }
    let counts: Vec<usize> = expected.iter().map(|m| m.values().map(Vec::len).sum()).collect();
    let started = Instant::now();

    let ex = smol::Executor::new();
    let run = async {
        // Register every device on its home instance, CONNECT_BATCH at a time.
        let mut devices: Vec<AsyncWs> = Vec::with_capacity(LOAD_DEVICES);
        for batch in (0..LOAD_DEVICES).collect::<Vec<_>>().chunks(CONNECT_BATCH) {
            let tasks: Vec<_> = batch
                .iter()
                .map(|&i| {
                    let token = tokens[i].clone();
                    let addr = addrs[home(i)];
                    ex.spawn(async move { register_async(addr, &load_id(i), &token).await })
                })
                .collect();
            for task in tasks {
                devices.push(task.await);
            }
        }

        // Each device reads as many messages as were sent to it, then whatever else comes
        // within a short while (a duplicate would).
        // Once every sender has all its acks, every actuation is delivered or on its way: a
        // device still waiting GRACE later reports what it has instead of hanging the run.
        let (senders_busy, senders_done) = smol::channel::bounded::<()>(1);
        let readers: Vec<_> = devices
            .into_iter()
            .enumerate()
            .map(|(i, mut ws)| {
                let count = counts[i];
                let senders_done = senders_done.clone();
                ex.spawn(async move {
                    let mut got = Vec::with_capacity(count);
                    let mut extra = Vec::new();
                    while got.len() < count {
                        let next = future::or(next_text(&mut ws), async {
                            while senders_done.recv().await.is_ok() {}
                            smol::Timer::after(GRACE).await;
                            Err(format!("nothing more {GRACE:?} after the senders had all their acks"))
                        });
                        match next.await {
                            Ok(text) => got.push(text),
                            Err(e) => {
                                extra.push(format!("error after {} messages: {e}", got.len()));
                                return (DeviceGot { device: i, got, extra }, ws);
                            }
                        }
                    }
                    (DeviceGot { device: i, got, extra }, ws)
                })
            })
            .collect();

        // The senders: a window of actuations, then their acks.
        let sender_tasks: Vec<_> = plan
            .iter()
            .enumerate()
            .map(|(s, list)| {
                let addr = addrs[sender_instance(s)];
                let messages = list.clone();
                ex.spawn(async move {
                    let mut ws = connect_async(addr).await;
                    let mut acks = Vec::with_capacity(messages.len());
                    for window in messages.chunks(WINDOW) {
                        for message in window {
                            ws.send(Message::text(message.clone())).await.expect("send actuation");
                        }
                        for _ in window {
                            let ack = future::or(next_text(&mut ws), async {
                                smol::Timer::after(ACK_WAIT).await;
                                Err(format!("no ack within {ACK_WAIT:?}"))
                            });
                            match ack.await {
                                Ok(ack) => acks.push(ack),
                                Err(e) => {
                                    acks.push(format!("error: {e}"));
                                    return (s, acks, ws);
                                }
                            }
                        }
                    }
                    (s, acks, ws)
                })
            })
            .collect();
        let mut sent = Vec::new();
        for task in sender_tasks {
            sent.push(task.await);
        }
        drop(senders_busy);
        let mut received = Vec::new();
        for reader in readers {
            received.push(reader.await);
        }
        // Anything more within a short while, on every device at once.
        let late: Vec<_> = received
            .into_iter()
            .map(|(mut got, mut ws)| {
                ex.spawn(async move {
                    let more = future::or(async { Some(next_text(&mut ws).await) }, async {
                        smol::Timer::after(Duration::from_millis(500)).await;
                        None
                    })
                    .await;
                    if let Some(more) = more {
                        got.extra.push(more.unwrap_or_else(|e| format!("error: {e}")));
                    }
                    got
                })
            })
            .collect();
        let mut got = Vec::new();
        for task in late {
            got.push(task.await);
        }
        (sent, got)
    };

    let (stop, stopped) = smol::channel::unbounded::<()>();
    let outcome = std::thread::scope(|scope| {
        for _ in 0..2 {
            let stopped = stopped.clone();
            let ex = &ex;
            scope.spawn(move || smol::block_on(ex.run(async move { while stopped.recv().await.is_ok() {} })));
        }
        let outcome = smol::block_on(ex.run(future::or(async { Some(run.await) }, async {
            smol::Timer::after(LOAD_LIMIT).await;
            None
        })));
        drop(stop);
        outcome
    });
    let (sent, got) = outcome.unwrap_or_else(|| panic!("load run did not finish within {LOAD_LIMIT:?}"));
    eprintln!(
        "load: {LOAD_DEVICES} devices on 3 instances, {LOAD_ACTUATIONS} actuations in {:?} (informational)",
        started.elapsed()
    );

    // Acks: one per actuation, each saying where it went.
    let mut ack_failures = Vec::new();
    for (s, mut acks, _ws) in sent {
        acks.sort();
        if acks != acks_expected[s] {
            let wrong: Vec<&String> = acks.iter().filter(|a| acks_expected[s].binary_search(a).is_err()).collect();
            ack_failures.push(format!(
                "sender {s} (instance {}): {} acks for {} actuations, {} unexpected (first 5): {:?}",
                sender_instance(s),
                acks.len(),
                acks_expected[s].len(),
                wrong.len(),
                &wrong[..wrong.len().min(5)]
            ));
        }
    }
    // Deliveries: exactly once each, unchanged, in order per sender.
    let mut total = 0;
    let mut failures = Vec::new();
    for device in got {
        let i = device.device;
        if !device.extra.is_empty() {
            failures.push(format!("{}: beyond the {} expected: {:?}", load_id(i), counts[i], device.extra));
        }
        for (sender, want) in &expected[i] {
            let tag = format!(r#""sender":{sender},"#);
            let got_s: Vec<&String> = device.got.iter().filter(|t| t.contains(&tag)).collect();
            let want_s: Vec<&String> = want.iter().collect();
            if got_s != want_s {
                failures.push(format!(
                    "{} (on instance {}) from sender {sender} (instance {}): got {} of {}: {:?}, expected {:?}",
                    load_id(i),
                    home(i),
                    sender_instance(*sender),
                    got_s.len(),
                    want_s.len(),
                    got_s,
                    want_s
                ));
            }
        }
        let foreign =
            device.got.iter().filter(|t| !expected[i].values().any(|want| want.contains(t))).collect::<Vec<_>>();
        if !foreign.is_empty() {
            failures.push(format!("{}: not sent to it: {foreign:?}", load_id(i)));
        }
        total += device.got.len();
    }
    assert!(
        failures.is_empty() && ack_failures.is_empty(),
        "acks wrong for {} senders:\n{}\n{} delivery problems (per device and sender; first 5):\n{}",
        ack_failures.len(),
        ack_failures.join("\n"),
        failures.len(),
        failures[..failures.len().min(5)].join("\n")
    );
    assert_eq!(total, LOAD_ACTUATIONS);
}

// ---------------------------------------------------------------------------------------------
// One refused row fails only itself
// ---------------------------------------------------------------------------------------------

/// Statements of the server's forwarding thread waiting for a table lock on the queue.
fn forwarding_writes_waiting(db: &Db) -> i64 {
    db.client()
        .query_one(
            r#"SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
               AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO dashboard."iotWsForwarded"%'"#,
            &[],
        )
        .expect("query pg_stat_activity")
        .get(0)
}

/// A row the database refuses (here through a CHECK constraint the test adds to the queue
/// table: a NUL in a device id was such a row before ids holding one were refused at parse)
/// fails only itself: the other actuations forwarded in the same batch reach the device, in
/// order, and the refused one is answered as not forwarded, with one log line that names the
/// SQLSTATE and never the body.
#[test]
fn a_row_the_database_refuses_fails_only_itself_and_the_rest_of_its_batch_is_forwarded_in_order() {
    let db = Cluster::shared().create_db();
    let (a, b) = (instance(&db), instance(&db));
    let (id, fence_id) = ("isolated", "isolated-fence");
    // B's registration has stored the binding, so the queue table exists.
    let mut device = registered_on(&b, id);
    let mut fence = registered_on(&a, fence_id);
    let mut sql = db.client();
    sql.batch_execute(
        r#"ALTER TABLE dashboard."iotWsForwarded" ADD CONSTRAINT marked CHECK (body NOT LIKE '%poison%')"#,
    )
    .expect("add the constraint");

    // A first actuation keeps A's forwarding thread inside its write while the table is locked:
    // the five that follow queue up behind it and are taken as one batch.
    let mut lock = db.client();
    let mut locked = lock.transaction().expect("begin");
    locked.batch_execute(r#"LOCK TABLE dashboard."iotWsForwarded" IN EXCLUSIVE MODE"#).expect("lock the queue");
    let mut sender = Client::connect(a.addr);
    let (message, plug) = actuation_ack(id, r#""n":"first""#);
    sender.send(&message);
    let blocked = eventually(WAIT, || (forwarding_writes_waiting(&db) == 1).then_some(()));
    assert!(blocked.is_some(), "A's forwarding write never waited for the lock:\n{}", a.stderr());
    let mut bodies = vec![plug];
    for n in 0..5 {
        let extra = if n == 2 { format!(r#""n":{n},"poison":true"#) } else { format!(r#""n":{n}"#) };
        let (message, body) = actuation_ack(id, &extra);
        sender.send(&message);
        bodies.push(body);
    }
    // The hub routes a connection's actuations in order: once the fence (a device on A) is
    // acknowledged, the five are in the forwarding queue.
    let (message, fence_body) = actuation_ack(fence_id, r#""fence":true"#);
    sender.send(&message);
    assert_eq!(sender.recv_json(WAIT), ack_delivered(fence_id), "the first ack: the others wait for the database");
    expect_delivery(&mut fence, fence_id, &fence_body);
    locked.commit().expect("unlock");

    // Acks for one device come in the order sent.
    let acks: Vec<Value> = (0..6).map(|_| sender.recv_json(WAIT)).collect();
    let mut expected = vec![ack_forwarded(id, &b); 6];
    expected[3] = ack_not_connected(id);
    assert_eq!(acks, expected, "acks of the first actuation, then of the five (the third refused)");
    bodies.remove(3);
    for body in &bodies {
        expect_delivery(&mut device, id, body);
    }
    expect_nothing_more(&mut device, id);
    let line = a.wait_for_log("the database refused 1 of 5 actuations", WAIT);
    let line = line.unwrap_or_else(|| panic!("no log line for the refused row (one batch of five?):\n{}", a.stderr()));
    assert!(line.contains("SQLSTATE 23514"), "the cause: {line}");
    a.assert_never_logged("poison");
    assert_eq!(
        db.client()
            .query_one(r#"SELECT count(*) FROM dashboard."iotWsForwarded""#, &[])
            .expect("count")
            .get::<_, i64>(0),
        0,
        "B took everything that was queued"
    );
}
