//! Disconnect storm: every device drops at once. Measured: the time until the database says
//! every one of them is disconnected, and how new devices fare meanwhile (one registers every
//! 100 ms, with a fresh token).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_lite::future;
use serde_json::{json, Value};

use crate::bench::Bench;
use crate::bindings::Db;
use crate::stats::Samples;

const LIMIT: Duration = Duration::from_secs(120);
const PROBES: usize = 200;

pub async fn run(b: &Bench, n: usize, database_url: &str) -> Result<Value, String> {
    println!("disconnect storm: {n} devices");
    let db = Db::connect(database_url)?;
    let specs = b.specs("storm", n)?;
    let probes = b.specs("probe", PROBES)?;
    let started = b.fleet(&specs).await;
    if !started.failures.is_empty() {
        return Err(format!("{} devices did not register: {}", started.failures.len(), started.failures[0]));
    }
    let pattern = format!("bench-{}-storm-%", b.run);
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.connected(&pattern).await? < n as i64 {
        if Instant::now() > deadline {
            return Err("the bindings never showed every device connected".into());
        }
        smol::Timer::after(Duration::from_millis(50)).await;
    }
    let t0 = Instant::now();
    started.fleet.drop_all();
    let done = AtomicBool::new(false);
    let watch = async {
        let mut polls = 0u64;
        let result = loop {
            let left = db.connected(&pattern).await;
            polls += 1;
            match left {
                Ok(0) => break Ok(t0.elapsed()),
                Ok(_) if t0.elapsed() > LIMIT => break Err(format!("bindings still true after {LIMIT:?}")),
                Ok(_) => {
                    smol::Timer::after(Duration::from_millis(20)).await;
                }
                Err(e) => break Err(e),
            }
        };
        done.store(true, Relaxed);
        (result, polls)
    };
    let probe_latency = Mutex::new(Samples::default());
    let probe_failures = Mutex::new(Vec::new());
    let probe = async {
        for spec in probes.chunks(1) {
            let s = b.fleet(spec).await;
            probe_latency.lock().unwrap_or_else(|e| e.into_inner()).extend(s.latency);
            probe_failures.lock().unwrap_or_else(|e| e.into_inner()).extend(s.failures);
            s.fleet.drop_all();
            if done.load(Relaxed) {
                break;
            }
            smol::Timer::after(Duration::from_millis(100)).await;
        }
    };
    let ((result, polls), ()) = future::zip(watch, probe).await;
    let all_false = result?;
    let mut latency = probe_latency.into_inner().unwrap_or_else(|e| e.into_inner());
    let failures = probe_failures.into_inner().unwrap_or_else(|e| e.into_inner());
    println!(
        "  every binding false after {} ({polls} polls); new devices meanwhile: {} served, {} failed, latency {} (max {})",
        crate::stats::ms(all_false.as_micros() as u64),
        latency.0.len(),
        failures.len(),
        latency.describe(),
        crate::stats::ms(latency.quantile(1.0)),
    );
    b.target.wait_connections_at_most(0, Duration::from_secs(30)).await;
    Ok(json!({
        "devices": n, "all_false_ms": all_false.as_millis() as u64,
        "probes_served": latency.0.len(), "probes_failed": failures.len(), "probe_latency": latency.summary(),
    }))
}
