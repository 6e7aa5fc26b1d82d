//! Stalled readers (rule 4); bounded memory under the default limits (rule 5).

use super::*;
use crate::floods::{drain, write_loop};

// ---------------------------------------------------------------------------------------------
// Rule 4: stalled readers
// ---------------------------------------------------------------------------------------------

/// A device whose receive buffer is a few KiB and that never reads it.
fn stalled_device(server: &Server, device: &str) -> Client {
    let mut d = Client::connect_with_recv_buffer(server.addr, 4096);
    assert_eq!(d.register(device, &Keys::shared().token(device)), json!({"code": 200, "content": "Subscribed"}));
    d
}

#[test]
fn rule4_reader_that_stops_is_closed_on_send_queue_overflow_and_gets_the_unwritten_actuations_later_in_order() {
    let _heavy = heavy();
    let server = start(&[("--send-queue-bytes", "65536")]);
    let device = "stalled";
    let mut d = stalled_device(&server, device);
    // ~7.5 MB: more than the kernel buffers of both ends (about 3-4 MB on loopback) plus the
    // 64 KiB queue.
    const N: usize = 250;
    let pad = "p".repeat(30_000);
    let sent: Vec<(String, String)> =
        (0..N).map(|i| actuation_ack(device, &format!(r#""seq":{i},"pad":"{pad}""#))).collect();
    let expected: Vec<String> = sent.iter().map(|(_, body)| delivery(body)).collect();
    let mut dashboard = Client::connect(server.addr);
    for (message, _) in &sent {
        dashboard.send(message);
    }
    // One ack each, in order: "Delivered" while frames were written, "Held" once the connection
    // was closed and the rest went back to the hold queue.
    let acks: Vec<Value> = (0..N).map(|_| dashboard.recv_json(Duration::from_secs(20))).collect();
    for ack in &acks {
        assert_eq!(ack["deviceId"], device, "{ack}");
    }
    let delivered = acks.iter().take_while(|a| **a == ack_delivered(device)).count();
    for (i, ack) in acks.iter().enumerate().skip(delivered) {
        assert_eq!(
            *ack,
            json!({"code": 202, "content": "Held", "deviceId": device}),
            "ack {i} (after {delivered} Delivered)"
        );
    }

    // The device reads what reached its socket; then its connection ends.
    let mut first = Vec::new();
    let ended = loop {
        match d.recv(Duration::from_secs(5)) {
            Event::Text(t) => first.push(t),
            Event::Close(code) => break format!("close {code:?}"),
            Event::Gone(e) => break format!("gone: {e}"),
            other => panic!("stalled device, after {} actuations read: {other:?} (never closed)", first.len()),
        }
    };
    eprintln!("stalled reader: {delivered} acked Delivered, {} read before the end ({ended})", first.len());
    assert!(!ended.starts_with("close Some") || ended == "close Some(1008)", "stalled reader closed with {ended}");
    assert!(first.len() < N, "all {N} reached the stalled reader: its queue never overflowed");
    assert!(delivered <= first.len(), "{delivered} acked Delivered but only {} were written", first.len());
    for (i, (got, want)) in first.iter().zip(&expected).enumerate() {
        assert!(got == want, "first connection, actuation {i}: got {}", &got[..got.len().min(120)]);
    }

    // Back again: the rest, in order, once each.
    let mut again = Client::registered(server.addr, device, &Keys::shared().token(device));
    for (i, want) in expected.iter().enumerate().skip(first.len()) {
        match again.recv(WAIT) {
            Event::Text(t) => assert!(t == *want, "held actuation {i}: got {}", &t[..t.len().min(120)]),
            other => panic!("held actuation {i} of {N} missing: {other:?}\nserver log:\n{}", log_tail(&server)),
        }
    }
    again.expect_silence(Duration::from_millis(500));
}

/// The next ack on `dashboard` within `limit`, sending a ping every 2 s (and skipping its PONG)
/// so that the dashboard is not idle.
fn await_ack(dashboard: &mut Client, limit: Duration) -> Result<Value, String> {
    let end = Instant::now() + limit;
    let mut pinged = Instant::now();
    while Instant::now() < end {
        match dashboard.recv(Duration::from_millis(500)) {
            Event::Text(t) if t == r#"{"code":202,"content":"PONG"}"# => {}
            Event::Text(t) => return serde_json::from_str(&t).map_err(|e| format!("{e}: {t}")),
            Event::Timeout => {}
            other => return Err(format!("dashboard got {other:?}")),
        }
        if pinged.elapsed() >= Duration::from_secs(2) {
            dashboard.try_send(r#"{"type":"ping"}"#).map_err(|e| format!("ping: {e}"))?;
            pinged = Instant::now();
        }
    }
    Err(format!("no ack within {limit:?}"))
}

#[test]
fn rule4_reader_that_takes_no_byte_for_30s_is_closed_and_its_unwritten_actuation_held() {
    // No --send-queue-bytes: the default 1 MiB queue is never reached; only the time rule closes.
    let server = Server::start(ServerOpts::default().release());
    let device = "frozen";
    let mut d = stalled_device(&server, device);
    // The device keeps talking (unsolicited pongs every second), so the keepalive has no reason
    // to drop it; it just never reads.
    let stop = Arc::new(AtomicBool::new(false));
    let talker = {
        let mut stream = d.stream().try_clone().unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                let _ = stream.write_all(&frame(true, 0xA, b"", true));
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let mut dashboard = Client::connect(server.addr);
    let pad = "f".repeat(16_000);
    // Actuations one by one until one is not written within 500 ms: the socket is full.
    let mut stalled_at = None;
    for i in 0..1_000 {
        let (message, _) = actuation_ack(device, &format!(r#""seq":{i},"pad":"{pad}""#));
        dashboard.send(&message);
        match dashboard.recv(Duration::from_millis(500)) {
            Event::Text(t) => {
                assert_eq!(serde_json::from_str::<Value>(&t).unwrap()["content"], "Delivered", "ack {i}: {t}");
            }
            Event::Timeout => {
                let at = Instant::now();
                // The ack comes once the connection is closed and the actuation held. The
                // dashboard pings meanwhile, or the idle rule would close it first.
                let ack = await_ack(&mut dashboard, Duration::from_secs(45))
                    .unwrap_or_else(|e| panic!("stalled at actuation {i}: {e}\n{}", log_tail(&server)));
                if ack["content"] == "Delivered" && at.elapsed() < Duration::from_secs(2) {
                    continue; // only slow, not stalled
                }
                assert_eq!(ack, json!({"code": 202, "content": "Held", "deviceId": device}));
                stalled_at = Some((i, at, at.elapsed()));
                break;
            }
            other => panic!("dashboard got {other:?}"),
        }
    }
    stop.store(true, Relaxed);
    let _ = talker.join();
    let (i, _, closed_after) = stalled_at.unwrap_or_else(|| {
        panic!(
            "1,000 actuations of 16 kB (16 MB) were acked Delivered to a device that reads nothing: \
             its socket takes about 4 MB, so Delivered was sent for frames never written"
        )
    });
    eprintln!("stalled after {i} actuations of 16 kB; closed {closed_after:?} later");
    assert!(
        closed_after >= Duration::from_secs(27) && closed_after <= Duration::from_secs(40),
        "a reader that took nothing was closed {closed_after:?} after its socket filled (rule: 30 s)"
    );
    // The held actuation reaches it when it comes back.
    drop(d);
    let mut again = Client::registered(server.addr, device, &Keys::shared().token(device));
    let text = again.recv_text(WAIT);
    assert!(text.contains(&format!(r#""seq":{i},"#)), "held actuation {i}: {}", &text[..text.len().min(120)]);
}

#[test]
fn rule4_pending_connection_flooding_json_pings_without_reading_is_closed_at_the_register_timeout() {
    // A queue too large to overflow in time: only the register timeout, running while the
    // server's writes to this peer are blocked, can end it.
    let _heavy = heavy();
    let server = start(&[("--register-timeout-secs", "2"), ("--send-queue-bytes", "67108864")]);
    let t0 = Instant::now();
    let mut c = Client::connect(server.addr);
    let mut stream = c.stream().try_clone().unwrap();
    let block = frame(true, 1, br#"{"type":"ping"}"#, true).repeat(3_000);
    let stop = AtomicBool::new(false);
    let (bytes, ended) = write_loop(&mut stream, &block, &stop, t0 + Duration::from_secs(10));
    let at = t0.elapsed();
    eprintln!("pinging non-reader: {bytes} bytes written, ended {ended} at {at:?}");
    assert!(ended, "a pending connection flooding pings without reading was still open 10 s after its connect");
    // 2 s, plus the close handshake's grace when the close frame cannot be written.
    assert!(at <= Duration::from_secs(5), "closed {at:?} after its connect; register timeout 2 s");
    assert_live(&server);
}

// ---------------------------------------------------------------------------------------------
// Rule 5: bounded memory (default limits)
// ---------------------------------------------------------------------------------------------

#[test]
fn rule5_two_thousand_pinging_pending_connections_from_eight_hosts_fit_in_64_mib_and_devices_still_get_in() {
    let _heavy = heavy();
    raise_nofile(8_192);
    // A long register timeout, so that none of them leaves while the others are opened.
    let server = start(&[("--register-timeout-secs", "60"), ("--max-pending-per-address", "64")]);
    let mut resident = Client::registered(server.addr, "resident", &Keys::shared().token("resident"));
    let mut dashboard = Client::connect(server.addr);
    let (message, _) = actuation_ack("resident", r#""n":0"#);
    dashboard.send(&message);
    assert_eq!(dashboard.recv_json(WAIT)["content"], "Delivered");
    let _ = resident.recv_text(WAIT);

    // 250 connections from each of 127.0.0.2 to 127.0.0.9, each upgraded and pinging.
    let started = Instant::now();
    let (mut pending, mut refused, mut failed) = (Vec::new(), 0, 0);
    for host in 2..10u8 {
        let source = std::net::IpAddr::from([127, 0, 0, host]);
        for _ in 0..250 {
            let upgraded = iot_ws_tests::client::tcp_from(source, server.addr)
                .map_err(tungstenite::Error::Io)
                .and_then(|tcp| Client::handshake_offering(server.addr, tcp, Some("echo-protocol")));
            match upgraded {
                Ok(mut c) => {
                    c.send(r#"{"type":"ping"}"#);
                    pending.push(c);
                }
                Err(tungstenite::Error::Http(response)) if response.status() == 503 => refused += 1,
                Err(_) => failed += 1,
            }
        }
    }
    for (i, c) in pending.iter_mut().enumerate() {
        assert_eq!(c.recv_json(WAIT), json!({"code": 202, "content": "PONG"}), "pending {i}");
    }
    eprintln!(
        "2,000 connections in {:?}: {} pending, {refused} refused 503, {failed} failed",
        started.elapsed(),
        pending.len()
    );
    // Each host gets its share (64 here), below the cap of 1024 in all.
    assert_eq!(pending.len(), 8 * 64, "pending connections accepted from 8 hosts");
    assert_eq!(refused + failed, 2_000 - 8 * 64, "{refused} refused with 503, {failed} failed otherwise");

    // Meanwhile the settled connections are served, and a fresh device gets in.
    let (message, body) = actuation(ACTUATOR, "resident", r#""n":1"#);
    let sent = Instant::now();
    dashboard.send(&message);
    resident.expect_delivery("resident", &body);
    assert!(sent.elapsed() <= LIVE, "an actuation during the pending flood took {:?}", sent.elapsed());
    for _ in 0..3 {
        assert_live(&server);
    }
    assert_peak_rss(&server, "2,000 pinging pending connections");
    let counted = metric(server.addr, REFUSED_PENDING_PER_ADDRESS).unwrap_or(0.0);
    assert!(counted >= refused as f64, "{REFUSED_PENDING_PER_ADDRESS} = {counted}, {refused} refusals seen");
    drop(pending);
}

#[test]
fn rule5_stalled_reader_sent_1100_actuations_of_60kb_stays_within_64_mib_and_live() {
    let _heavy = heavy();
    let server = Server::start(ServerOpts::default().release());
    let _d = stalled_device(&server, "sink-stalled");
    let (message, _) = actuation(ACTUATOR, "sink-stalled", &format!(r#""pad":"{}""#, "s".repeat(60_000)));
    let one = frame(true, 1, message.as_bytes(), true);
    let mut dashboard = Client::connect(server.addr);
    let mut stream = dashboard.stream().try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let started = Instant::now();
        let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
        let sent = (0..1_100).take_while(|_| stream.write_all(&one).is_ok()).count();
        (sent, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..3 {
        assert_live(&server);
        std::thread::sleep(Duration::from_millis(200));
    }
    let (sent, took) = sender.join().unwrap();
    assert_eq!(sent, 1_100, "the sender was stuck after {sent} actuations ({took:?})");
    // Everything sent has been taken when this ping is answered (one connection, in order).
    assert_eq!(dashboard.ping(), json!({"code": 202, "content": "PONG"}));
    eprintln!("1,100 x 60 kB to a stalled reader sent in {took:?}");
    assert_peak_rss(&server, "1,100 actuations of 60 kB to a stalled reader");
    assert_live(&server);
}

#[test]
fn rule5_actuation_flood_from_four_senders_stays_within_64_mib_and_live() {
    let _heavy = heavy();
    let server = Server::start(ServerOpts::default().release());
    let sink = Client::registered(server.addr, "sink", &Keys::shared().token("sink"));
    let stop = Arc::new(AtomicBool::new(false));
    let sink_reader = {
        let mut sink = sink;
        drain(sink.stream().try_clone().unwrap(), stop.clone())
    };
    let block: Vec<u8> = (0..64)
        .flat_map(|i| {
            let device = if i % 2 == 0 { "sink".to_string() } else { format!("nobody-{i}") };
            let (message, _) = actuation(ACTUATOR, &device, &format!(r#""i":{i},"pad":"{}""#, "a".repeat(100)));
            frame(true, 1, message.as_bytes(), true)
        })
        .collect();
    let end = Instant::now() + Duration::from_secs(15);
    let senders: Vec<JoinHandle<u64>> = (0..4)
        .map(|_| {
            let (addr, block, stop) = (server.addr, block.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut total = 0;
                while !stop.load(Relaxed) && Instant::now() < end {
                    let Ok(mut c) = Client::connect_offering(addr, Some("echo-protocol")) else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    let mut stream = c.stream().try_clone().unwrap();
                    let drained = drain(stream.try_clone().unwrap(), stop.clone());
                    total += write_loop(&mut stream, &block, &stop, end).0;
                    let _ = stream.shutdown(Shutdown::Both);
                    let _ = drained.join();
                }
                total
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let times: Vec<Duration> = (0..3)
        .map(|_| {
            let took = assert_live(&server).1;
            std::thread::sleep(Duration::from_millis(200));
            took
        })
        .collect();
    stop.store(true, Relaxed);
    let written: u64 = senders.into_iter().map(|s| s.join().unwrap()).sum();
    let sink_read = sink_reader.join().unwrap();
    eprintln!("actuation flood: {written} bytes sent, sink read {sink_read}; liveness {times:?}");
    assert!(written > 0);
    assert_peak_rss(&server, "actuation flood from 4 senders");
    assert_live(&server);
}

#[test]
fn rule5_held_actuations_for_departed_devices_are_capped_in_bytes_and_the_excess_acked_500() {
    let _heavy = heavy();
    let server = Server::start(ServerOpts::default().release());
    let devices: Vec<String> = (0..4).map(|i| format!("departed-{i}")).collect();
    for device in &devices {
        let mut d = Client::registered(server.addr, device, &Keys::shared().token(device));
        d.close(1000);
        d.finish_close();
    }
    std::thread::sleep(Duration::from_millis(300));

    // 1,200 actuations of 60 kB (300 per device, 72 MB) against 16 MiB of hold.
    const N: usize = 1_200;
    let pad = "h".repeat(60_000);
    let sent: Vec<(String, String)> =
        (0..N).map(|i| actuation_ack(&devices[i % 4], &format!(r#""seq":{i},"pad":"{pad}""#))).collect();
    let body_len = sent[0].1.len() as u64;
    let frames: Vec<Vec<u8>> = sent.iter().map(|(m, _)| frame(true, 1, m.as_bytes(), true)).collect();
    let mut dashboard = Client::connect(server.addr);
    let mut stream = dashboard.stream().try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
        frames.iter().take_while(|f| stream.write_all(f).is_ok()).count()
    });
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut acks: Vec<Value> = Vec::with_capacity(N);
    while acks.len() < N {
        let left = deadline.saturating_duration_since(Instant::now());
        match dashboard.recv(left) {
            Event::Text(t) => acks.push(serde_json::from_str(&t).unwrap()),
            other => panic!("after {} acks of {N}: {other:?}", acks.len()),
        }
    }
    assert_eq!(writer.join().unwrap(), N);

    // Per device: held while the total allows, then 500 for the rest, never held again.
    let mut held_total = 0u64;
    for device in &devices {
        let mine: Vec<&Value> = acks.iter().filter(|a| a["deviceId"] == device.as_str()).collect();
        assert_eq!(mine.len(), N / 4, "acks for {device}");
        let held = mine.iter().take_while(|a| a["content"] == "Held").count();
        for (i, ack) in mine.iter().enumerate().skip(held) {
            assert_eq!(**ack, ack_not_connected(device), "{device} ack {i} (after {held} held)");
        }
        held_total += held as u64;
    }
    let fits = 16 * MIB / body_len;
    eprintln!("held {held_total} of {N} actuations of {body_len} bytes; 16 MiB holds {fits}");
    assert!(held_total <= fits + 1, "{held_total} held: over 16 MiB");
    assert!(held_total + 8 >= fits, "{held_total} held: far below the 16 MiB allowed");
    assert_peak_rss(&server, "1,200 held actuations of 60 kB");

    // What was held is delivered in order when its device returns; what was refused is not.
    let want: Vec<String> = acks
        .iter()
        .zip(&sent)
        .filter(|(a, _)| a["deviceId"] == "departed-0" && a["content"] == "Held")
        .map(|(_, (_, body))| delivery(body))
        .collect();
    let mut back = Client::registered(server.addr, "departed-0", &Keys::shared().token("departed-0"));
    for (i, w) in want.iter().enumerate() {
        let got = match back.recv(WAIT) {
            Event::Text(t) => t,
            other => panic!("held actuation {i} of {} for departed-0: {other:?}\n{}", want.len(), log_tail(&server)),
        };
        assert!(got == *w, "held actuation {i} of departed-0: {}", &got[..got.len().min(120)]);
    }
    back.expect_silence(Duration::from_millis(500));
    assert_live(&server);
}
