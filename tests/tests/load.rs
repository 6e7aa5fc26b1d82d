//! Load smoke: 2,000 devices, 20,000 actuations spread over them, each delivered exactly once
//! and unchanged. No timing assertions: only generous bounds so that nothing hangs.

use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use futures_lite::future;
use iot_ws_tests::{actuation, connect_async, next_text, register_async, AsyncWs, Keys, Server, ServerOpts, ACTUATOR};

const DEVICES: usize = 2_000;
const ACTUATIONS: usize = 20_000;
/// Connections opened at once.
const CONNECT_BATCH: usize = 100;
/// Bound on the whole run; far above what it takes.
const LIMIT: Duration = Duration::from_secs(150);

fn device_id(i: usize) -> String {
    format!("load-{i}")
}

fn body_extra(seq: usize) -> String {
    format!(r#""seq":{seq},"v":1.50,"s":"\u00e9""#)
}

fn tokens(keys: &Keys) -> Vec<String> {
    keys.tokens_for(&(0..DEVICES).map(device_id).collect::<Vec<_>>())
}

#[test]
fn two_thousand_devices_get_twenty_thousand_actuations_each_exactly_once_and_unchanged() {
    // 1024-bit keys keep the signing of 2,000 tokens short; the key size is not under test here.
    let keys = Keys::generate(1024);
    let server = Server::start(ServerOpts { public_key: keys.public_path(), ..ServerOpts::default() });
    let addr = server.addr;
    let tokens = tokens(&keys);
    let started = Instant::now();

    let ex = smol::Executor::new();
    let run = async {
        // Register every device, CONNECT_BATCH at a time.
        let mut devices: Vec<AsyncWs> = Vec::with_capacity(DEVICES);
        for batch in (0..DEVICES).collect::<Vec<_>>().chunks(CONNECT_BATCH) {
            let tasks: Vec<_> = batch
                .iter()
                .map(|&i| {
                    let token = tokens[i].clone();
                    ex.spawn(async move { register_async(addr, &device_id(i), &token).await })
                })
                .collect();
            for task in tasks {
                devices.push(task.await);
            }
        }

        // Each device reads until its end marker and returns what it got.
        let readers: Vec<_> = devices
            .into_iter()
            .enumerate()
            .map(|(i, mut ws)| {
                ex.spawn(async move {
                    let mut got = Vec::new();
                    loop {
                        let text = next_text(&mut ws).await.unwrap_or_else(|e| panic!("{}: {e}", device_id(i)));
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
            let (message, _) = actuation(ACTUATOR, &device_id(seq % DEVICES), &body_extra(seq));
            dashboard.send(Message::text(message)).await.unwrap();
        }
        for i in 0..DEVICES {
            let (message, _) = actuation(ACTUATOR, &device_id(i), r#""end":true"#);
            dashboard.send(Message::text(message)).await.unwrap();
        }

        let mut received = 0;
        let mut connections = Vec::with_capacity(DEVICES);
        for reader in readers {
            let (i, got, ws) = reader.await;
            let expected: Vec<String> = (0..ACTUATIONS)
                .filter(|seq| seq % DEVICES == i)
                .map(|seq| {
                    format!(r#"{{"code":1024,"content":{}}}"#, actuation(ACTUATOR, &device_id(i), &body_extra(seq)).1)
                })
                .collect();
            // Exactly once each, unchanged, in the order sent.
            assert_eq!(got, expected, "{}", device_id(i));
            received += got.len();
            connections.push(ws);
        }
        assert_eq!(received, ACTUATIONS);
        connections
    };
    let outcome = smol::block_on(ex.run(future::or(async { Some(run.await) }, async {
        smol::Timer::after(LIMIT).await;
        None
    })));
    let connections = outcome.unwrap_or_else(|| panic!("load smoke did not finish within {LIMIT:?}"));
    assert_eq!(connections.len(), DEVICES);
    let delivered = server.metric(r#"iot_ws_actuations_total{outcome="delivered"}"#).unwrap();
    assert_eq!(delivered, (ACTUATIONS + DEVICES) as f64);
    eprintln!("load smoke: {DEVICES} devices, {ACTUATIONS} actuations in {:?} (informational)", started.elapsed());
}
