//! Forwarding under load: 1,000 devices over three instances on one PostgreSQL, 10,000
//! actuations with acks sent to random instances, each delivered exactly once and unchanged, in
//! order per sender and device, each ack saying where it went. Its own test process, so that it
//! shares the machine with no other test.
//!
//! No timing assertions: only generous bounds so that nothing hangs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use futures_lite::future;
use iot_ws_tests::{
    ack_delivered, ack_forwarded, actuation_ack, connect_async, delivery, instances, next_text, run_bounded, Cluster,
    Fleet, Server,
};

const LOAD_DEVICES: usize = 1_000;
const LOAD_ACTUATIONS: usize = 10_000;
const SENDERS_PER_INSTANCE: usize = 2;
/// Actuations a sender has in flight before it reads their acks.
const WINDOW: usize = 100;
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

fn load_extra(sender: usize, seq: usize) -> String {
    format!(r#""sender":{sender},"seq":{seq},"v":2.50,"s":"\u00e9""#)
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
    let fleet = Fleet::new("fleet", LOAD_DEVICES);
    let ids = &fleet.ids;
    let db = Cluster::shared().create_db();
    let servers: [Server; 3] = instances(&fleet.opts().with_db(&db.url()));
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();

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
        let (message, body) = actuation_ack(&ids[device], &load_extra(sender, seq));
        plan[sender].push(message);
        expected[device].entry(sender).or_default().push(delivery(&body));
        let ack = if home(device) == sender_instance(sender) {
            ack_delivered(&ids[device])
        } else {
            ack_forwarded(&ids[device], &servers[home(device)])
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
        // Every device on its home instance.
        let devices = fleet.register(&ex, |i| addrs[home(i)]).await;

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

    // This thread and two more run the executor's tasks: a thousand readers and six senders are
    // not left to one core.
    let outcome = run_bounded(&ex, 2, LOAD_LIMIT, run);
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
            failures.push(format!("{}: beyond the {} expected: {:?}", ids[i], counts[i], device.extra));
        }
        for (sender, want) in &expected[i] {
            let tag = format!(r#""sender":{sender},"#);
            let got_s: Vec<&String> = device.got.iter().filter(|t| t.contains(&tag)).collect();
            let want_s: Vec<&String> = want.iter().collect();
            if got_s != want_s {
                failures.push(format!(
                    "{} (on instance {}) from sender {sender} (instance {}): got {} of {}: {:?}, expected {:?}",
                    ids[i],
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
            failures.push(format!("{}: not sent to it: {foreign:?}", ids[i]));
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
