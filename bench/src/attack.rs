//! The `attack` mode (issue 9): a quiet baseline, then each attack (see [`crate::attacks`]) for a
//! few seconds while a legitimate device registers and is sent one actuation every 500 ms.
//! Reported per attack, beside the baseline: those probes' registration and delivery latencies
//! and the server's RSS.
//!
//! The probes run on the bench's executor; the attacks on threads of their own, apart from it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_lite::future;
use serde_json::{json, Value};
use smol::{Executor, Timer};

use crate::attack_raw::{Counters, Ctx};
use crate::attacks::{start, Gear};
use crate::bench::Bench;
use crate::device::{Fleet, Launch, Recorder, Spec};
use crate::net::Target;
use crate::sender::{Actuator, Dashboard};
use crate::stats::Samples;

/// Time between two probes.
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// A probe whose actuation has not arrived this long after it started has failed.
const PROBE_LIMIT: Duration = Duration::from_secs(2);
const RSS_EVERY: Duration = Duration::from_millis(100);
/// Between two attacks, for the server to shed the previous one.
const PAUSE: Duration = Duration::from_secs(1);
/// Attack threads still running this long after their deadline are left behind (and reported).
const STOP_GRACE: Duration = Duration::from_secs(2);

/// One attack of the menu.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    PongFlood,
    ContFlood,
    PingFrameFlood,
    JsonPingFlood,
    PendingPings,
    HalfHeads,
    StalledReader,
    ActuationFlood,
    HeldFlood,
    LogFlood,
}

impl Attack {
    pub const ALL: [Attack; 10] = [
        Attack::PongFlood,
        Attack::ContFlood,
        Attack::PingFrameFlood,
        Attack::JsonPingFlood,
        Attack::PendingPings,
        Attack::HalfHeads,
        Attack::StalledReader,
        Attack::ActuationFlood,
        Attack::HeldFlood,
        Attack::LogFlood,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Attack::PongFlood => "pong-flood",
            Attack::ContFlood => "cont-flood",
            Attack::PingFrameFlood => "ping-frame-flood",
            Attack::JsonPingFlood => "json-ping-flood",
            Attack::PendingPings => "pending-pings",
            Attack::HalfHeads => "half-heads",
            Attack::StalledReader => "stalled-reader",
            Attack::ActuationFlood => "actuation-flood",
            Attack::HeldFlood => "held-flood",
            Attack::LogFlood => "log-flood",
        }
    }

    /// `a,b,c` or `all`.
    pub fn parse_list(list: &str) -> Result<Vec<Attack>, String> {
        if list.trim() == "all" {
            return Ok(Attack::ALL.to_vec());
        }
        let known = || Attack::ALL.map(Attack::name).join(", ");
        list.split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| {
                let found = Attack::ALL.into_iter().find(|a| a.name() == n);
                found.ok_or_else(|| format!("--attacks: unknown attack {n:?} (known: {})", known()))
            })
            .collect()
    }
}

pub struct Plan {
    pub attacks: Vec<Attack>,
    pub secs: u64,
    /// The bench's file limit: `pending-pings` stays below it.
    pub file_limit: u64,
}

/// The quiet baseline, then every attack of the plan; one row each.
pub async fn run(b: &Bench, plan: &Plan) -> Result<Value, String> {
    let secs = plan.secs.max(1);
    let names: Vec<&str> = plan.attacks.iter().map(|a| a.name()).collect();
    println!("attacks, {secs} s each, a probe every 500 ms: quiet, {}", names.join(", "));
    let gear = Arc::new(Gear::new(b, &plan.attacks, plan.file_limit)?);
    let mut rows = Vec::new();
    let mut table = Vec::new();
    let mut next_start = Instant::now();
    for attack in std::iter::once(None).chain(plan.attacks.iter().copied().map(Some)) {
        let name = attack.map_or("quiet", Attack::name);
        let specs = b.specs(&format!("probe-{name}"), (secs * 2) as usize)?;
        Timer::at(next_start).await;
        let (row, text, line, ended) = phase(b, attack, secs, &specs, &gear).await;
        println!("  {name}: {text}");
        rows.push(row);
        table.push(line);
        next_start = ended + PAUSE;
    }
    print_table(&table);
    Ok(json!({ "seconds": secs, "probe_every_ms": 500, "probe_limit_ms": 2000, "runs": rows }))
}

/// A row of the final table.
struct Line {
    name: &'static str,
    ok: usize,
    /// Of `ok`, the probes that were served only after the attack had stopped.
    ok_late: usize,
    failed: usize,
    registration: Samples,
    delivery: Samples,
    rss: (Option<u64>, Option<u64>),
}

/// What a phase gives: its JSON row, its summary line, its table line, when its attack stopped.
type Phase = (Value, String, Line, Instant);

/// One attack (or none) for `secs` seconds with its probes and RSS samples.
async fn phase(b: &Bench, attack: Option<Attack>, secs: u64, specs: &[Spec], gear: &Arc<Gear>) -> Phase {
    let rss = || b.server.and_then(|s| s.rss_kib());
    let rss_start = rss();
    let t0 = Instant::now();
    let ctx = Ctx { target: b.target.clone(), deadline: t0 + Duration::from_secs(secs), count: Arc::default() };
    let threads = attack.map_or_else(Vec::new, |a| start(a, &ctx, gear));
    let done = AtomicBool::new(false);
    let sampler = async {
        let mut max = rss_start;
        while !done.load(Relaxed) {
            max = max.max(rss());
            Timer::after(RSS_EVERY).await;
        }
        max
    };
    let work = async {
        let probes = probes(b, t0, ctx.deadline, specs).await;
        let stopped = wait_threads(threads, ctx.deadline + STOP_GRACE).await;
        done.store(true, Relaxed);
        (probes, stopped)
    };
    let (rss_max, (probes, stopped)) = future::zip(sampler, work).await;
    let name = attack.map_or("quiet", Attack::name);
    let line = Line { name, rss: (rss_start, rss_max), ..tally(&probes, ctx.deadline) };
    let (value, text) = describe(&line, &probes, &ctx.count, stopped);
    (value, text, line, ctx.deadline)
}

/// Launches a probe every 500 ms until the deadline; returns every probe's outcome.
async fn probes(b: &Bench, t0: Instant, deadline: Instant, specs: &[Spec]) -> Vec<Probe> {
    let mut tasks = Vec::new();
    for (k, spec) in specs.iter().enumerate() {
        let at = t0 + PROBE_EVERY * k as u32;
        if at >= deadline {
            break;
        }
        Timer::at(at).await;
        let (ex, target, actuator) = (b.ex.clone(), b.target.clone(), b.actuator.clone());
        let (spec, indices) = (spec.clone(), (b.next_index(), b.next_index()));
        tasks.push(b.ex.spawn(async move { probe(&ex, &target, &actuator, &spec, indices).await }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        let outcome = within(Instant::now() + PROBE_LIMIT + Duration::from_secs(1), task).await;
        outcomes.push(outcome.unwrap_or_else(|| Probe::failed("probe task did not end".into())));
    }
    outcomes
}

/// One legitimate device's registration and one actuation to it.
#[derive(Default)]
struct Probe {
    registered_us: Option<u64>,
    delivered_us: Option<u64>,
    /// When the actuation arrived.
    served_at: Option<Instant>,
    failure: Option<String>,
}

impl Probe {
    fn failed(why: String) -> Probe {
        Probe { failure: Some(why), ..Probe::default() }
    }
}

/// A fresh device registers (connect to 200), then a fresh sender connection actuates it (send to
/// arrival); all within [`PROBE_LIMIT`].
/// `indices`: the device's and the sender's client numbers.
async fn probe(
    ex: &Arc<Executor<'static>>,
    target: &Target,
    actuator: &Actuator,
    spec: &Spec,
    indices: (usize, usize),
) -> Probe {
    let deadline = Instant::now() + PROBE_LIMIT;
    let launch = Launch { ex, target, concurrency: 1, first_index: indices.0 };
    let Some(started) = within(deadline, Fleet::start(&launch, std::slice::from_ref(spec), Recorder::new(1))).await
    else {
        return Probe::failed("registration: no 200 within 2 s".into());
    };
    if let Some(e) = started.failures.first() {
        return Probe::failed(format!("registration: {e}"));
    }
    let fleet = started.fleet;
    let mut p = Probe { registered_us: started.latency.0.first().copied(), ..Probe::default() };
    match deliver(ex, target, actuator, &spec.id, &fleet.recorder, indices.1, deadline).await {
        Ok(us) => (p.delivered_us, p.served_at) = (Some(us), Some(Instant::now())),
        Err(e) => p.failure = Some(e),
    }
    fleet.drop_all();
    p
}

async fn deliver(
    ex: &Arc<Executor<'static>>,
    target: &Target,
    actuator: &Actuator,
    device: &str,
    rec: &Recorder,
    index: usize,
    deadline: Instant,
) -> Result<u64, String> {
    let connect = Dashboard::connect(ex, target, index, actuator, false);
    let d = within(deadline, connect).await.ok_or_else(|| "sender: not connected within 2 s".to_string())?;
    let mut d = d.map_err(|e| format!("sender: {e}"))?;
    let sent = within(deadline, d.send(device, 0, rec.now_us())).await;
    // Its close handshake may wait on a stuck server: in the background, bounded.
    ex.spawn(async move { within(Instant::now() + Duration::from_secs(1), d.close()).await }).detach();
    match sent {
        None => return Err("sender: not sent within 2 s".into()),
        Some(false) => return Err("sender: closed".into()),
        Some(true) => {}
    }
    while rec.received() == 0 {
        if Instant::now() >= deadline {
            return Err("delivery: nothing arrived within 2 s".into());
        }
        Timer::after(Duration::from_millis(1)).await;
    }
    rec.take_latency().0.first().copied().ok_or_else(|| "delivery: no latency recorded".into())
}

/// `f`, or `None` at `deadline`.
pub async fn within<T>(deadline: Instant, f: impl std::future::Future<Output = T>) -> Option<T> {
    future::or(async { Some(f.await) }, async {
        Timer::at(deadline).await;
        None
    })
    .await
}

/// Waits (polling, the executor keeps running) until every thread has ended or `limit`.
async fn wait_threads(threads: Vec<JoinHandle<()>>, limit: Instant) -> bool {
    while !threads.iter().all(|t| t.is_finished()) {
        if Instant::now() >= limit {
            return false;
        }
        Timer::after(Duration::from_millis(20)).await;
    }
    for t in threads {
        let _ = t.join();
    }
    true
}

fn tally(probes: &[Probe], stop: Instant) -> Line {
    let mut line = Line {
        name: "",
        ok: 0,
        ok_late: 0,
        failed: 0,
        registration: Samples::default(),
        delivery: Samples::default(),
        rss: (None, None),
    };
    for p in probes {
        if let Some(us) = p.registered_us {
            line.registration.push(us);
        }
        match p.delivered_us {
            Some(us) => {
                line.ok += 1;
                line.ok_late += usize::from(p.served_at.is_some_and(|t| t > stop));
                line.delivery.push(us);
            }
            None => line.failed += 1,
        }
    }
    line
}

/// The phase's JSON row and its one-line summary.
fn describe(line: &Line, probes: &[Probe], count: &Counters, stopped: bool) -> (Value, String) {
    let mut failures = BTreeMap::<&str, u64>::new();
    for why in probes.iter().filter_map(|p| p.failure.as_deref()) {
        *failures.entry(why).or_default() += 1;
    }
    let (mut reg, mut del) = (line.registration.clone(), line.delivery.clone());
    let text = format!(
        "probes {} ok{} / {} failed, register {}, deliver {}, RSS {} -> {} KiB; load: {}{}{}",
        line.ok,
        if line.ok_late > 0 { format!(" ({} only once the attack stopped)", line.ok_late) } else { String::new() },
        line.failed,
        reg.describe(),
        del.describe(),
        line.rss.0.map_or("?".into(), |k| k.to_string()),
        line.rss.1.map_or("?".into(), |k| k.to_string()),
        count.describe(),
        failures.iter().map(|(w, n)| format!("; {n}× {w}")).collect::<String>(),
        if stopped { "" } else { "; attack threads did not stop in time" },
    );
    let value = json!({
        "attack": line.name, "probes_ok": line.ok, "probes_ok_after_stop": line.ok_late,
        "probes_failed": line.failed, "failures": failures,
        "registration": reg.summary(), "delivery": del.summary(),
        "rss_start_kib": line.rss.0, "rss_max_kib": line.rss.1, "load": count.json(), "stopped": stopped,
    });
    (value, text)
}

fn print_table(lines: &[Line]) {
    println!(
        "  {:<17} {:>16}  {:>27}  {:>27}  {:>19}",
        "attack", "probes ok", "register p50/p99/max ms", "deliver p50/p99/max ms", "RSS start/max KiB"
    );
    let ms = |s: &mut Samples, q: f64| format!("{:.2}", s.quantile(q) as f64 / 1000.0);
    let kib = |k: Option<u64>| k.map_or("?".into(), |k| k.to_string());
    for l in lines {
        let (mut r, mut d) = (l.registration.clone(), l.delivery.clone());
        let late = if l.ok_late > 0 { format!(" ({} late)", l.ok_late) } else { String::new() };
        let probes = format!("{}/{}{late}", l.ok, l.ok + l.failed);
        let reg = format!("{} / {} / {}", ms(&mut r, 0.5), ms(&mut r, 0.99), ms(&mut r, 1.0));
        let del = format!("{} / {} / {}", ms(&mut d, 0.5), ms(&mut d, 0.99), ms(&mut d, 1.0));
        let rss = format!("{} / {}", kib(l.rss.0), kib(l.rss.1));
        println!("  {:<17} {probes:>16}  {reg:>27}  {del:>27}  {rss:>19}", l.name);
    }
    println!("  (late: served only once the attack had stopped; a probe has 2 s)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attack_lists_are_names_or_all() {
        assert_eq!(Attack::parse_list("all").unwrap().len(), 10);
        assert_eq!(Attack::parse_list("log-flood, half-heads").unwrap(), [Attack::LogFlood, Attack::HalfHeads]);
        assert!(Attack::parse_list("nope").is_err());
    }
}
