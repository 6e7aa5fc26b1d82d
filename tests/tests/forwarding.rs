//! Forwarding through PostgreSQL between several instances on one database (issue 6): any
//! instance accepts an actuation; one for a device on another instance is queued in
//! `dashboard."iotWsForwarded"` for that instance, which writes it to the device.
//!
//! - delivered exactly once wherever it was sent, in order per sender and device, the ack
//!   saying where it went (200 "Delivered" on the device's own instance, 202 "Forwarded" with
//!   the instance's address elsewhere);
//! - a registration elsewhere closing the stale connection (1000), the old instance forwarding
//!   to the new one, and what it held following the device there;
//! - actuations queued for an instance that then died reaching the device where it reconnected,
//!   or dropped and counted once the hold time passed; devices really gone reported 500;
//! - a row the database refuses failing only itself, the rest of its batch forwarded in order.
//!
//! No timing assertions: every wait is bounded (`WAIT`), and "nothing more arrives" checks are
//! short bounded silences.

use iot_ws_tests::{
    ack_delivered, ack_forwarded, ack_not_connected, actuation, actuation_ack, delivery, eventually, instances,
    instances_on, Client, Cluster, Db, Event, Server, ServerOpts, ACTUATOR, WAIT,
};
use serde_json::{json, Value};

/// Sends an actuation with `"ack": true` on `sender` and returns (ack, body).
fn send_ack(sender: &mut Client, device: &str, extra: &str) -> (Value, String) {
    let (message, body) = actuation_ack(device, extra);
    sender.send(&message);
    (sender.recv_json(WAIT), body)
}

// ---------------------------------------------------------------------------------------------
// Delivery, order and acks; moves; instances that died
// ---------------------------------------------------------------------------------------------

#[test]
fn any_instance_accepts_an_actuation_and_the_device_gets_it_exactly_once() {
    let db = Cluster::shared().create_db();
    let servers: [Server; 3] = instances_on(&db);
    let home = &servers[1];
    let mut device = Client::registered_on(home, "anywhere");
    let mut bodies = Vec::new();
    for (n, server) in servers.iter().enumerate() {
        let mut sender = Client::connect(server.addr);
        let (ack, body) = send_ack(&mut sender, "anywhere", &format!(r#""via":{n}"#));
        let expected =
            if server.addr == home.addr { ack_delivered("anywhere") } else { ack_forwarded("anywhere", home) };
        assert_eq!(ack, expected, "ack of the actuation sent to instance {n} ({})", server.external_address());
        device.expect_delivery("anywhere", &body);
        sender.expect_nothing_more("the sender after its one ack");
        bodies.push(body);
    }
    // Without "ack": no reply, the device still gets it once.
    let (message, body) = actuation(ACTUATOR, "anywhere", r#""via":"no ack""#);
    let mut sender = Client::connect(servers[2].addr);
    sender.send(&message);
    device.expect_delivery("anywhere", &body);
    device.expect_nothing_more("anywhere");
    sender.expect_nothing_more("a sender without ack");
}

#[test]
fn forwarded_actuations_keep_their_order_per_sender_and_device_and_the_acks_say_where_they_went() {
    const PER_SENDER: usize = 150;
    let db = Cluster::shared().create_db();
    let servers: [Server; 3] = instances_on(&db);
    let ids = ["order-0", "order-1", "order-2"];
    let mut devices: Vec<Client> = ids.iter().zip(&servers).map(|(id, s)| Client::registered_on(s, id)).collect();
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
        device.expect_nothing_more(ids[d]);
    }
}

#[test]
fn after_a_move_the_old_instance_forwards_to_the_new_one_instead_of_holding() {
    let db = Cluster::shared().create_db();
    let [a, b, _c] = instances_on(&db);
    let id = "moved-fwd";
    let mut old = Client::registered_on(&a, id);
    let mut new = Client::registered_on(&b, id);
    old.close(1000);
    old.finish_close();
    a.wait_registered(0);
    // A saw the device leave less than the hold time ago, but its row names B: forward there.
    let mut sender = Client::connect(a.addr);
    for n in 0..3 {
        let (ack, body) = send_ack(&mut sender, id, &format!(r#""n":{n}"#));
        assert_eq!(ack, ack_forwarded(id, &b), "actuation {n} sent to the old instance");
        new.expect_delivery(id, &body);
    }
    new.expect_nothing_more(id);
    assert_eq!(db.binding(id), Some((true, b.external_address().into())));
}

#[test]
fn a_registration_elsewhere_closes_the_stale_connection_on_the_previous_instance_with_1000() {
    let db = Cluster::shared().create_db();
    let [a, b, _c] = instances_on(&db);
    let id = "stale-close";
    let mut old = Client::registered_on(&a, id);
    let mut new = Client::registered_on(&b, id);
    old.expect_close(1000);
    a.wait_registered(0);
    assert_eq!(db.binding(id), Some((true, b.external_address().into())));
    // The old instance now forwards to the new one.
    let mut sender = Client::connect(a.addr);
    let (ack, body) = send_ack(&mut sender, id, r#""after":"stale close""#);
    assert_eq!(ack, ack_forwarded(id, &b));
    new.expect_delivery(id, &body);
    new.expect_nothing_more(id);
}

#[test]
fn actuations_held_on_the_old_instance_follow_the_device_to_its_new_one() {
    let db = Cluster::shared().create_db();
    let [a, b, _c] = instances_on(&db);
    let id = "held-follows";
    let mut left = Client::registered_on(&a, id);
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
    let mut on_b = Client::registered_on(&b, id);
    for body in &bodies {
        on_b.expect_delivery(id, body);
    }
    on_b.expect_nothing_more(id);
}

#[test]
fn actuations_for_devices_that_are_really_gone_are_reported_not_connected() {
    let db = Cluster::shared().create_db();
    let [a, b, mut c] = instances_on(&db);
    // Left B cleanly: its row is false.
    let mut left = Client::registered_on(&b, "gone-left");
    left.close(1000);
    left.finish_close();
    assert!(db.wait_binding("gone-left", false));
    // On C, which then crashes: its row still says true, naming a dead instance.
    let locks_with_c = db.advisory_locks();
    let orphan = Client::registered_on(&c, "gone-orphan");
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
    let mut back = Client::registered_on(&b, "gone-orphan");
    let (ack, body) = send_ack(&mut sender, "gone-orphan", r#""to":"B now""#);
    assert_eq!(ack, ack_forwarded("gone-orphan", &b));
    back.expect_delivery("gone-orphan", &body);
    back.expect_nothing_more("gone-orphan");
}

/// Queues actuations for C while C is frozen (SIGSTOP: alive for PostgreSQL, its advisory lock
/// held, but taking nothing), then kills C. Returns the instances, the sender's acks and bodies.
fn queue_for_frozen_instance_then_kill_it(
    db: &Db,
    opts: ServerOpts,
    device: &str,
    n: usize,
) -> (Server, Server, Vec<String>) {
    let [a, b, mut c] = instances(&opts);
    let mut on_c = Client::registered_on(&c, device);
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
    let mut back = Client::registered_on(&b, device);
    for body in &bodies {
        back.expect_delivery(device, body);
    }
    back.expect_nothing_more(device);
}

#[test]
fn actuations_queued_for_an_instance_that_died_are_dropped_and_counted_once_the_hold_time_passed() {
    let db = Cluster::shared().create_db();
    let device = "never-back";
    let opts = ServerOpts::default().with_db(&db.url()).arg("--hold-actuations-secs", "1");
    let (a, b, _bodies) = queue_for_frozen_instance_then_kill_it(&db, opts, device, 2);
    let lost = |s: &Server| s.metric("iot_ws_actuations_lost_in_transit_total").unwrap_or(0.0);
    let counted = eventually(WAIT, || (lost(&a) + lost(&b) == 2.0).then_some(()));
    assert!(counted.is_some(), "lost_in_transit: A {} B {}", lost(&a), lost(&b));
    // Dropped means dropped: the device coming back now gets nothing of them.
    let mut late = Client::registered_on(&b, device);
    late.expect_nothing_more(device);
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
    let [a, b] = instances_on(&db);
    let (id, fence_id) = ("isolated", "isolated-fence");
    // B's registration has stored the binding, so the queue table exists.
    let mut device = Client::registered_on(&b, id);
    let mut fence = Client::registered_on(&a, fence_id);
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
    assert!(blocked.is_some(), "A's forwarding write never waited for the lock:\n{}", a.log());
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
    fence.expect_delivery(fence_id, &fence_body);
    locked.commit().expect("unlock");

    // Acks for one device come in the order sent.
    let acks: Vec<Value> = (0..6).map(|_| sender.recv_json(WAIT)).collect();
    let mut expected = vec![ack_forwarded(id, &b); 6];
    expected[3] = ack_not_connected(id);
    assert_eq!(acks, expected, "acks of the first actuation, then of the five (the third refused)");
    bodies.remove(3);
    for body in &bodies {
        device.expect_delivery(id, body);
    }
    device.expect_nothing_more(id);
    let line = a.wait_for_log("the database refused 1 of 5 actuations", WAIT);
    let line = line.unwrap_or_else(|| panic!("no log line for the refused row (one batch of five?):\n{}", a.log()));
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
