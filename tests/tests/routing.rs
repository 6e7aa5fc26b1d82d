//! Routing across several instances on one PostgreSQL (issue 6): `dashboard."connectionBindings"`
//! is the routing table of the whole deployment. Every instance listens on its own loopback port
//! and stores exactly that as `server`; the dashboard reads a device's row, splits `server` on
//! ':', connects there and sends. No forwarding is needed here: every actuation is sent to the
//! instance the row names (forwarding through PostgreSQL is `forwarding.rs`).
//!
//! - routing: dashboard-style, read the row, connect to the instance it names, send;
//! - a device moving A -> B while A still holds its old connection, which then ends with a close
//!   frame or a TCP abort: the row still names B and is true, routing reaches the device;
//!   simultaneous registrations on two instances leaving one connection, the one the row names;
//! - SIGKILL of an instance with devices connected, its devices reconnecting elsewhere, and the
//!   restarted instance repairing only its own leftovers; SIGTERM clearing only its own rows;
//! - ambiguous external addresses refused (unspecified host, port 0, one a live instance uses).
//!
//! No timing assertions: every wait is bounded (`WAIT`), and "nothing more arrives" checks are
//! short bounded silences.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use iot_ws_tests::{
    actuation, eventually, instances_on, loopback_port, run_to_exit, Client, Cluster, Db, Event, Keys, Server,
    ACTUATOR, WAIT,
};
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// The dashboard's side and the rows (helpers)
// ---------------------------------------------------------------------------------------------

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

/// Ends a witness device's connection on `server` with a close frame and waits for its row to
/// say false. The instance writes disconnects in the order it sees them, so once the witness's
/// row is false, every disconnect it saw before (e.g. a moved device's old connection) has
/// been written too, or was never going to be.
fn witness_leaves(db: &Db, mut witness: Client, id: &str) {
    witness.close(1000);
    witness.finish_close();
    assert!(db.wait_binding(id, false), "witness {id} never went false: {:?}", db.binding(id));
}

// ---------------------------------------------------------------------------------------------
// Routing, moves, crashes, stops, configuration
// ---------------------------------------------------------------------------------------------

#[test]
fn dashboard_routing_reads_the_row_connects_to_the_server_it_names_and_reaches_the_device() {
    let db = Cluster::shared().create_db();
    let servers: [Server; 3] = instances_on(&db);
    let mut devices: Vec<(String, Client)> = servers
        .iter()
        .enumerate()
        .flat_map(|(s, server)| {
            (0..2).map(move |k| {
                let id = format!("route-{s}-{k}");
                let client = Client::registered_on(server, &id);
                (id, client)
            })
        })
        .collect();
    for (n, (id, device)) in devices.iter_mut().enumerate() {
        let home = &servers[n / 2];
        assert_eq!(db.binding(id), Some((true, home.external_address().to_string())), "{id}");
        let (body, _dashboard, addr) = dashboard_send(&db, id, &format!(r#""route":{n}"#));
        assert_eq!(addr, home.addr, "the row of {id} routes to its own instance");
        device.expect_delivery(id, &body);
    }
    for (id, device) in &mut devices {
        device.expect_nothing_more(id);
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
    let [a, b, c] = instances_on(&db);
    let mover = format!("mover-{end:?}");
    let witness_id = format!("witness-{end:?}");
    let bystander_id = format!("bystander-{end:?}");
    let mut old = Client::registered_on(&a, &mover);
    let witness = Client::registered_on(&a, &witness_id);
    let _bystander = Client::registered_on(&c, &bystander_id);
    assert_eq!(db.binding(&mover), Some((true, a.external_address().into())));

    let mut new = Client::registered_on(&b, &mover);
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
    a.wait_registered(1);
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
    new.expect_delivery(&mover, &body);
    new.expect_nothing_more(&mover);
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
    let [a, b, _c] = instances_on(&db);
    let id = "ping-pong";
    let mut first = Client::registered_on(&a, id);
    let on_b = Client::registered_on(&b, id);
    let witness = Client::registered_on(&b, "pp-witness");
    let mut back = Client::registered_on(&a, id);
    // A replaces its own older connection of the device.
    first.expect_close(1000);
    assert_eq!(db.binding(id), Some((true, a.external_address().into())));
    let before = full_rows(&db);

    on_b.abort_tcp();
    b.wait_registered(1);
    witness_leaves(&db, witness, "pp-witness");
    assert_eq!(full_rows(&db).get(id), before.get(id), "B's late disconnect touched A's row");

    let (body, _dashboard, addr) = dashboard_send(&db, id, r#""back":"on A""#);
    assert_eq!(addr, a.addr);
    back.expect_delivery(id, &body);
    back.expect_nothing_more(id);
}

#[test]
fn simultaneous_registrations_on_two_instances_leave_one_connection_and_the_row_naming_it() {
    const ROUNDS: usize = 10;
    let db = Cluster::shared().create_db();
    let [a, b, _c] = instances_on(&db);
    for round in 0..ROUNDS {
        let id = format!("race-{round}");
        let tok = Keys::shared().token(&id);
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
        loser.wait_registered(0);
        assert_eq!(db.binding(&id), Some((true, winner.external_address().into())), "{id} after the loser closed");
        let (body, _dashboard, addr) = dashboard_send(&db, &id, &format!(r#""round":{round}"#));
        assert_eq!(addr, winner.addr);
        kept.expect_delivery(&id, &body);
        kept.close(1000);
        kept.finish_close();
        assert!(db.wait_binding(&id, false), "{id}: the winner's disconnect");
    }
}

#[test]
fn sigkilled_instance_devices_reconnect_elsewhere_and_the_restarted_instance_repairs_only_its_own_rows() {
    let db = Cluster::shared().create_db();
    let [mut a, b, c] = instances_on(&db);
    let on_a: Vec<String> = (0..6).map(|i| format!("crash-{i}")).collect();
    let mut a_clients: Vec<Client> = on_a.iter().map(|id| Client::registered_on(&a, id)).collect();
    let mut b_own = Client::registered_on(&b, "b-own");
    let _c_own = Client::registered_on(&c, "c-own");
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
            (id.clone(), Client::registered_on(to, id), to)
        })
        .collect();
    for (id, _, to) in &moved {
        assert_eq!(db.binding(id), Some((true, to.external_address().into())), "{id} reconnected");
    }
    let before_restart = full_rows(&db);

    // The crashed process's advisory lock went with it.
    let released = eventually(WAIT, || (db.advisory_locks() < locks_with_a).then_some(()));
    assert!(released.is_some(), "advisory locks still {} after SIGKILL of A", db.advisory_locks());
    let a = Server::start_again(&a.opts);

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
        device.expect_delivery(id, &body);
    }
    let mut fresh = Client::registered_on(&a, "after-restart");
    let (body, _dashboard, addr) = dashboard_send(&db, "after-restart", r#""on":"restarted A""#);
    assert_eq!(addr, a.addr);
    fresh.expect_delivery("after-restart", &body);
    let (body, _dashboard, _) = dashboard_send(&db, "b-own", r#""still":"here""#);
    b_own.expect_delivery("b-own", &body);
}

#[test]
fn sigterm_clears_only_the_instances_own_rows() {
    let db = Cluster::shared().create_db();
    let [mut a, b, c] = instances_on(&db);
    let mut a1 = Client::registered_on(&a, "stop-a1");
    let mut a2 = Client::registered_on(&a, "stop-a2");
    let _b1 = Client::registered_on(&b, "stop-b1");
    let _c1 = Client::registered_on(&c, "stop-c1");
    // A device that moved to B while A still holds its old connection.
    let mut old = Client::registered_on(&a, "stop-mover");
    let mut mover = Client::registered_on(&b, "stop-mover");
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
    assert!(status.success(), "A's exit status {status:?}\n{}", a.log());

    let after = full_rows(&db);
    for id in ["stop-a1", "stop-a2"] {
        assert_eq!(db.binding(id), Some((false, a.external_address().into())), "{id}");
    }
    let others = ["stop-b1", "stop-c1", "stop-mover"];
    assert_eq!(subset(&after, &others), subset(&before, &others), "A's stop touched rows of other instances");
    let (body, _dashboard, addr) = dashboard_send(&db, "stop-mover", r#""after":"stop""#);
    assert_eq!(addr, b.addr);
    mover.expect_delivery("stop-mover", &body);
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
        // At once: waiting for a held address is tests/power_cut.rs's.
        "--instance-lock-wait",
        "0",
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
    let [mut a] = instances_on(&db);
    let mut device = Client::registered_on(&a, "amb-dev");
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
    device.expect_delivery("amb-dev", &body);
    assert!(a.wait_exit(Duration::from_millis(1)).is_none(), "A is still running");
}
