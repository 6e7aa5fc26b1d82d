//! Pending connections are short-lived (rule 2); caps and refusals (rule 3).

use super::*;

// ---------------------------------------------------------------------------------------------
// Rule 2: pending connections are short-lived
// ---------------------------------------------------------------------------------------------

#[test]
fn rule2_pending_connection_pinging_every_300ms_is_closed_at_the_register_timeout() {
    let server = start(&[("--register-timeout-secs", "2")]);
    let t0 = Instant::now();
    let mut c = Client::connect(server.addr);
    let (at, how) = ping_until_closed(&mut c, t0, Duration::from_secs(6)).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        at >= Duration::from_millis(1_500) && at <= Duration::from_millis(3_500),
        "closed ({how}) {at:?} after connect; the register timeout is 2 s"
    );
}

#[test]
fn rule2_register_timeout_counts_from_the_tcp_accept_not_the_upgrade() {
    // The head arrives 2.2 s after the connect; with a 3 s timeout counted from the accept the
    // connection ends near 3 s, counted from the upgrade it would last until 5.2 s.
    let server = start(&[("--register-timeout-secs", "3")]);
    let t0 = Instant::now();
    let stream = TcpStream::connect_timeout(&server.addr, WAIT).unwrap();
    std::thread::sleep(Duration::from_millis(2_200));
    let mut c = Client::handshake_offering(server.addr, stream, Some("echo-protocol"))
        .unwrap_or_else(|e| panic!("handshake after 2.2 s: {e}"));
    let (at, how) = ping_until_closed(&mut c, t0, Duration::from_secs(8)).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        at >= Duration::from_millis(2_500) && at <= Duration::from_millis(4_500),
        "closed ({how}) {at:?} after connect; expected about 3 s (timeout 3 s from the accept)"
    );
}

#[test]
fn rule2_http_head_trickled_a_line_every_300ms_is_cut_off_at_the_register_timeout() {
    let server = start(&[("--register-timeout-secs", "2")]);
    let t0 = Instant::now();
    let mut s = idle(server.addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n").unwrap();
    let mut closed = None;
    for i in 0.. {
        if t0.elapsed() > Duration::from_secs(6) {
            break;
        }
        if s.write_all(format!("X-Slow-{i}: y\r\n").as_bytes()).is_err() {
            closed = Some(t0.elapsed());
            break;
        }
        if let Some(at) = wait_closed(&mut s, Instant::now() + Duration::from_millis(300)) {
            closed = Some(at - t0);
            break;
        }
    }
    let at = closed.expect("a head still incomplete after 6 s is not closed (register timeout 2 s)");
    assert!(
        at >= Duration::from_millis(1_500) && at <= Duration::from_millis(3_500),
        "incomplete head closed {at:?} after connect; the register timeout is 2 s"
    );
}

#[test]
fn rule2_dashboard_that_sent_an_accepted_actuation_stays_while_it_pings_then_idles_out() {
    let server = start(&[("--register-timeout-secs", "2")]);
    let mut device = Client::registered(server.addr, "watched", &Keys::shared().token("watched"));
    let mut dashboard = Client::connect(server.addr);
    let (message, body) = actuation_ack("watched", r#""n":1"#);
    dashboard.send(&message);
    assert_eq!(dashboard.recv_json(WAIT), ack_delivered("watched"));
    device.expect_delivery("watched", &body);
    // Not pending any more: pings keep it open well past the 2 s timeout.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert_eq!(dashboard.ping(), json!({"code": 202, "content": "PONG"}), "dashboard closed while pinging");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Silent, it is closed by the idle rule: 1000 after 2 s.
    let quiet = Instant::now();
    match dashboard.recv(Duration::from_secs(5)) {
        Event::Close(code) => assert_eq!(code, Some(1000)),
        other => panic!("a silent dashboard: expected close 1000, got {other:?}"),
    }
    let after = quiet.elapsed();
    assert!(
        after >= Duration::from_millis(1_500) && after <= Duration::from_millis(3_500),
        "silent dashboard closed {after:?} after its last message; timeout 2 s"
    );
    // The registered device, silent all along, is not pending either.
    assert_eq!(device.ping(), json!({"code": 202, "content": "PONG"}));
}

// ---------------------------------------------------------------------------------------------
// Rule 3: caps and refusals
// ---------------------------------------------------------------------------------------------

#[test]
fn rule3_max_pending_refuses_with_503_counts_it_and_accepts_again_once_pending_ones_time_out() {
    let server = start(&[("--max-pending", "5"), ("--register-timeout-secs", "2")]);
    let t0 = Instant::now();
    let mut pending: Vec<TcpStream> = (0..5).map(|_| idle(server.addr)).collect();
    std::thread::sleep(Duration::from_millis(300));
    assert_refused_503(server.addr, "6th pending connection");
    for (i, s) in pending.iter_mut().enumerate() {
        let closed = wait_closed(s, t0 + Duration::from_millis(3_500));
        assert!(closed.is_some(), "pending connection {i} still open 3.5 s after connect (timeout 2 s)");
    }
    assert_live(&server);
    assert_eq!(metric(server.addr, REFUSED_PENDING), Some(1.0), "refusals for the pending cap");
    assert_eq!(metric(server.addr, REFUSED_LIMIT).unwrap_or(0.0), 0.0, "refusals for the connection cap");
}

#[test]
fn rule3_registered_devices_and_accepted_senders_are_not_pending() {
    let server = start(&[("--max-pending", "5"), ("--register-timeout-secs", "3")]);
    // Ten devices, one after another: each leaves the pending count when it registers.
    let mut devices = register_each(server.addr, &device_ids("settled", 10));
    // Five dashboards each send an accepted actuation: not pending either.
    let _dashboards: Vec<Client> = (0..5)
        .map(|i| {
            let mut dashboard = Client::connect(server.addr);
            let (message, body) = actuation_ack("settled-0", &format!(r#""n":{i}"#));
            dashboard.send(&message);
            assert_eq!(dashboard.recv_json(WAIT)["content"], "Delivered");
            devices[0].expect_delivery("settled-0", &body);
            dashboard
        })
        .collect();
    // Fifteen connections open, none pending: five idle ones fit, the sixth does not.
    let _pending: Vec<TcpStream> = (0..5).map(|_| idle(server.addr)).collect();
    std::thread::sleep(Duration::from_millis(300));
    assert_refused_503(server.addr, "6th pending connection beside 15 settled ones");
    for (i, d) in devices.iter_mut().enumerate() {
        assert_eq!(d.ping(), json!({"code": 202, "content": "PONG"}), "device {i}");
    }
}

#[test]
fn rule3_max_connections_counts_every_phase_refuses_with_503_and_counts_it() {
    let server = start(&[("--max-connections", "8")]);
    let mut devices = register_each(server.addr, &device_ids("capped", 6));
    // Six registered and two still in their HTTP head: eight, the cap.
    let idle_two: Vec<TcpStream> = (0..2).map(|_| idle(server.addr)).collect();
    std::thread::sleep(Duration::from_millis(300));
    assert_refused_503(server.addr, "9th connection");
    // The ones inside the cap are served as before.
    for (i, d) in devices.iter_mut().enumerate() {
        assert_eq!(d.ping(), json!({"code": 202, "content": "PONG"}), "device {i}");
    }
    drop(idle_two);
    std::thread::sleep(Duration::from_millis(500));
    assert_live(&server);
    assert!(
        metric_reaches(server.addr, REFUSED_LIMIT, 1.0).is_some_and(|v| v >= 1.0),
        "{REFUSED_LIMIT} did not count the refusal"
    );
}

/// Connects and registers; `Err` with what happened instead of a 200.
fn try_register(addr: SocketAddr, device: &str, token: &str) -> Result<Client, String> {
    let mut c = Client::connect_offering(addr, Some("echo-protocol")).map_err(|e| format!("connect: {e}"))?;
    c.try_send(&registration(device, token)).map_err(|e| format!("send: {e}"))?;
    match c.recv(WAIT) {
        Event::Text(t) if t == SUBSCRIBED => Ok(c),
        other => Err(format!("registration answered {other:?}")),
    }
}

#[test]
fn rule3_default_cap_under_a_low_fd_limit_refuses_the_excess_and_keeps_fds_for_devices_and_the_database() {
    let _heavy = heavy();
    // A cluster of its own, restarted below.
    let cluster = Cluster::new();
    let db = cluster.create_db();
    // 128 descriptors: the default cap is 64 connections, the rest is the server's own. Idle
    // connections stay for the whole test (no register timeout frees them).
    let opts = ServerOpts::default().release().with_db(&db.url()).arg("--register-timeout-secs", "60");
    let server = Server::start_with_nofile(opts, 128);
    let mut resident = Client::registered(server.addr, "resident", &Keys::shared().token("resident"));
    let mut dashboard = Client::connect(server.addr);
    let (message, body) = actuation_ack("resident", r#""n":0"#);
    dashboard.send(&message);
    assert_eq!(dashboard.recv_json(WAIT)["content"], "Delivered");
    resident.expect_delivery("resident", &body);

    // 150 idle connections: no more than the cap stay open, the others get 503 at once, none
    // is left hanging unaccepted.
    let idle_ones: Vec<TcpStream> = (0..150).map(|_| idle(server.addr)).collect();
    std::thread::sleep(Duration::from_millis(1_500));
    let (mut open, mut refused) = (Vec::new(), 0);
    for mut s in idle_ones {
        s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        let mut answer = Vec::new();
        match s.read_to_end(&mut answer) {
            Ok(_) if answer.starts_with(b"HTTP/1.1 503") => refused += 1,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) && answer.is_empty() => {
                open.push(s)
            }
            other => panic!("an idle connection under the cap got {:?} ({other:?})", String::from_utf8_lossy(&answer)),
        }
    }
    eprintln!("low fd limit: {} idle connections open, {refused} refused", open.len());
    assert!(open.len() <= 62, "{} idle connections open beside 2 settled ones: over the default cap of 64", open.len());
    assert_eq!(open.len() + refused, 150, "{} open + {refused} refused", open.len());

    // Meanwhile the settled connections are served.
    let (message, body) = actuation_ack("resident", r#""n":1"#);
    let started = Instant::now();
    dashboard.send(&message);
    resident.expect_delivery("resident", &body);
    assert!(started.elapsed() <= LIVE, "an actuation at the cap took {:?}", started.elapsed());
    assert_eq!(dashboard.recv_json(WAIT)["content"], "Delivered");

    // PostgreSQL restarts while the cap is full: the server needs new descriptors for it. One
    // idle connection leaves, room for one device (and nothing else): it registers, and its
    // binding is written over the new database connection.
    cluster.stop();
    cluster.start();
    drop(open.pop());
    let token = Keys::shared().token("fresh");
    let mut last = String::new();
    let fresh = eventually(Duration::from_secs(15), || match try_register(server.addr, "fresh", &token) {
        Ok(c) => Some(c),
        Err(e) => {
            last = e; // 500 while the database is away; 503 while the slot is not yet free
            std::thread::sleep(Duration::from_millis(300));
            None
        }
    });
    assert!(fresh.is_some(), "no registration at the cap after a database restart within 15 s: {last}");
    assert!(db.wait_binding("fresh", true), "binding of a fresh device: {:?}", db.binding("fresh"));

    // Once the idle ones leave, fresh devices are live again.
    drop(open);
    std::thread::sleep(Duration::from_millis(500));
    assert_live(&server);
    assert!(
        metric_reaches(server.addr, REFUSED_LIMIT, refused as f64).is_some_and(|v| v >= refused as f64),
        "{REFUSED_LIMIT} below the {refused} refusals seen"
    );
}

#[test]
fn rule3_a_flood_from_many_addresses_shares_the_pending_slots_and_a_device_still_gets_in() {
    let server =
        start(&[("--max-pending", "32"), ("--max-pending-per-address", "8"), ("--register-timeout-secs", "30")]);
    // Sixteen hosts (127.0.0.2 to 127.0.0.17) open 8 idle connections each, twice the slots.
    let mut flood: Vec<TcpStream> = Vec::new();
    for host in 2..18u8 {
        for _ in 0..8 {
            let tcp = iot_ws_tests::client::tcp_from(std::net::IpAddr::from([127, 0, 0, host]), server.addr);
            flood.push(tcp.expect("connect from another loopback address"));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    // The slots are full of the flood's connections, each host holding a share; a device from
    // an address with none still gets in, three times running, for as long as the flood stays.
    for _ in 0..3 {
        assert_live(&server);
    }
    // Room was made by closing the oldest connections of the busiest hosts (counted); the
    // rest of the flood was refused. At most 32 of its connections are still open.
    let evicted = metric(server.addr, r#"iot_ws_connections_closed_total{reason="pending_evicted"}"#).unwrap_or(0.0);
    assert!(evicted >= 3.0, "evicted {evicted}: at least one per device");
    std::thread::sleep(Duration::from_millis(500));
    let closed = flood.iter_mut().filter_map(|s| wait_closed(s, Instant::now() + Duration::from_millis(50))).count();
    assert!(closed >= 96, "{closed} of 128 flood connections closed, for 32 slots");
    assert!(metric(server.addr, "iot_ws_pending_connections").unwrap_or(99.0) <= 32.0);
}
