//! Load smoke: 2,000 devices, 20,000 actuations spread over them, each delivered exactly once
//! and unchanged. No timing assertions: only generous bounds so that nothing hangs.

use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use iot_ws_tests::{actuation, connect_async, delivery, next_text, run_bounded, Fleet, Server, ACTUATOR};

const DEVICES: usize = 2_000;
const ACTUATIONS: usize = 20_000;
/// Bound on the whole run; far above what it takes.
const LIMIT: Duration = Duration::from_secs(150);

fn body_extra(seq: usize) -> String {
    format!(r#""seq":{seq},"v":1.50,"s":"\u00e9""#)
}

#[test]
fn two_thousand_devices_get_twenty_thousand_actuations_each_exactly_once_and_unchanged() {
    let fleet = Fleet::new("load", DEVICES);
    let ids = &fleet.ids;
    let server = Server::start(fleet.opts());
    let addr = server.addr;
    let started = Instant::now();

    let ex = smol::Executor::new();
    let run = async {
        // Every device on the one server, a batch of registrations at a time.
        let devices = fleet.register(&ex, |_| addr).await;

        // Each device reads until its end marker and returns what it got.
        let readers: Vec<_> = devices
            .into_iter()
            .enumerate()
            .map(|(i, mut ws)| {
                let id = ids[i].clone();
                ex.spawn(async move {
                    let mut got = Vec::new();
                    loop {
                        let text = next_text(&mut ws).await.unwrap_or_else(|e| panic!("{id}: {e}"));
                        if text.contains(r#""end":true"#) {
                            return (i, got, ws);
                        }
                        got.push(text);
                    }
                })
            })
            .collect();

        // One dashboard connection: per device, actuations then the end marker, in order.
        let mut dashboard = connect_async(addr).await;
        for seq in 0..ACTUATIONS {
            let (message, _) = actuation(ACTUATOR, &ids[seq % DEVICES], &body_extra(seq));
            dashboard.send(Message::text(message)).await.unwrap();
        }
        for id in ids {
            let (message, _) = actuation(ACTUATOR, id, r#""end":true"#);
            dashboard.send(Message::text(message)).await.unwrap();
        }

        let mut received = 0;
        let mut connections = Vec::with_capacity(DEVICES);
        for reader in readers {
            let (i, got, ws) = reader.await;
            let expected: Vec<String> = (0..ACTUATIONS)
                .filter(|seq| seq % DEVICES == i)
                .map(|seq| delivery(&actuation(ACTUATOR, &ids[i], &body_extra(seq)).1))
                .collect();
            // Exactly once each, unchanged, in the order sent.
            assert_eq!(got, expected, "{}", ids[i]);
            received += got.len();
            connections.push(ws);
        }
        assert_eq!(received, ACTUATIONS);
        connections
    };
    let outcome = run_bounded(&ex, 0, LIMIT, run);
    let connections = outcome.unwrap_or_else(|| panic!("load smoke did not finish within {LIMIT:?}"));
    assert_eq!(connections.len(), DEVICES);
    let delivered = server.metric(r#"iot_ws_actuations_total{outcome="delivered"}"#).unwrap();
    assert_eq!(delivered, (ACTUATIONS + DEVICES) as f64);
    eprintln!("load smoke: {DEVICES} devices, {ACTUATIONS} actuations in {:?} (informational)", started.elapsed());
}
