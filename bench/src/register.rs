//! Registrations: fresh tokens (one RSA verification each), then the same devices reconnecting
//! with the same tokens (a server's token cache answers those), and idle RSS per connection.

use std::time::Duration;

use serde_json::{json, Value};

use crate::bench::{cpu_per, Bench};
use crate::device::Started;

/// Fresh registrations, then the same devices all reconnecting at once.
pub async fn run(b: &Bench, n: usize) -> Result<Value, String> {
    println!("registrations: {n} devices, {} in flight", b.concurrency);
    let specs = b.specs("reg", n)?;
    let fresh = measure(b, "fresh tokens", &specs).await;
    b.dismiss(fresh.0).await;
    let again = measure(b, "same tokens again (reconnect storm)", &specs).await;
    b.dismiss(again.0).await;
    Ok(json!({ "devices": n, "fresh": fresh.1, "reconnect": again.1 }))
}

async fn measure(b: &Bench, what: &str, specs: &[crate::device::Spec]) -> (crate::device::Fleet, Value) {
    let cpu0 = b.cpu();
    let Started { fleet, mut latency, failures, elapsed } = b.fleet(specs).await;
    let cpu1 = b.cpu();
    let ok = latency.0.len() as u64;
    let rate = ok as f64 / elapsed.as_secs_f64().max(1e-9);
    let cpu = cpu_per(cpu0, cpu1, ok);
    println!(
        "  {what}: {rate:.0}/s, latency {}, server CPU {} per registration, {} failed{}",
        latency.describe(),
        cpu.map_or("?".into(), |c| format!("{c:.0} µs")),
        failures.len(),
        failures.first().map_or(String::new(), |f| format!(" (first: {f})")),
    );
    let value = json!({
        "ok": ok,
        "failed": failures.len(),
        "per_s": rate.round(),
        "latency": latency.summary(),
        "server_cpu_us_per_registration": cpu.map(|c| (c * 10.0).round() / 10.0),
    });
    (fleet, value)
}

/// Server RSS per registered idle connection at each fleet size (cumulative, from none).
pub async fn idle(b: &Bench, sizes: &[u64]) -> Result<Value, String> {
    let server = b.server.ok_or("idle needs --server-pid")?;
    let largest = sizes.iter().copied().max().unwrap_or(0) as usize;
    println!("idle connections: {sizes:?} devices");
    let specs = b.specs("idle", largest)?;
    settle().await;
    let base = server.rss_kib().ok_or("cannot read the server's RSS")?;
    let mut fleets = Vec::new();
    let mut connected = 0usize;
    let mut rows = Vec::new();
    for &size in sizes {
        let size = size as usize;
        if size > connected {
            let started = b.fleet(&specs[connected..size]).await;
            if !started.failures.is_empty() {
                println!("  {} registrations failed (first: {})", started.failures.len(), started.failures[0]);
            }
            connected = size;
            fleets.push(started.fleet);
        }
        settle().await;
        let rss = server.rss_kib().unwrap_or(0);
        let per = (rss.saturating_sub(base) as f64 * 1024.0) / size.max(1) as f64;
        println!("  {size} devices: server RSS {rss} KiB (idle before: {base} KiB), {per:.0} bytes per connection");
        rows.push(
            json!({ "devices": size, "rss_kib": rss, "base_rss_kib": base, "bytes_per_connection": per.round() }),
        );
    }
    for fleet in fleets {
        fleet.drop_all();
    }
    b.target.wait_connections_at_most(0, Duration::from_secs(30)).await;
    Ok(Value::Array(rows))
}

/// Lets the server finish what the last burst started before RSS is read.
async fn settle() {
    smol::Timer::after(Duration::from_millis(1500)).await;
}
