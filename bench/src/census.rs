//! `census`: where a connection's bytes go, by owner (issue 14, item 1).
//!
//! Against a server built with `--features heap-census`, whose `/metrics` then counts the live
//! heap by the owner that allocated it (the task, the WebSocket state, the socket's buffers, the
//! hub's tables, the reactor's registration, ...). The census is read with no client connected,
//! then with N connections upgraded and never registered (pending), then, those gone, with N
//! registered devices at rest: each owner's difference over N is what one connection costs it.
//! Beside it: the server's RSS over N, which also pays malloc's headers, rounding and
//! fragmentation.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::bench::Bench;
use crate::net::Ws;

/// What one `/metrics` read says: (metric, owner) → value.
type Census = BTreeMap<(String, String), i64>;

/// The metrics the census build adds, in the order printed.
const METRICS: [&str; 3] = ["iot_ws_heap_bytes", "iot_ws_heap_malloc_bytes", "iot_ws_heap_allocations"];
/// Pending connections from one source address at most: the server's default per-address cap
/// is 512, and a connection over it would take an older one's place.
const PENDING_PER_ADDRESS: usize = 400;

pub async fn run(b: &Bench, pending: usize, registered: usize) -> Result<Value, String> {
    let server = b.server.ok_or("census needs --server-pid")?;
    println!("heap census: {pending} pending connections, then {registered} registered devices");
    let specs = b.specs("census", registered)?;
    settle().await;
    let base = read(b).await?;
    let base_rss = server.rss_kib().ok_or("cannot read the server's RSS")?;

    let mut report = Map::new();
    let mut held: Vec<Ws> = Vec::with_capacity(pending);
    for k in 0..pending {
        // Spread over source addresses, each under the per-address cap.
        let index = b.next_index() + (k / PENDING_PER_ADDRESS) * b.target.per_ip;
        match b.target.connect(index).await {
            Ok(ws) => held.push(ws),
            Err(e) => return Err(format!("pending connection {k}: {e}")),
        }
    }
    settle().await;
    let census = read(b).await?;
    let rss = server.rss_kib().unwrap_or(0);
    report.insert("pending".into(), phase("pending", &base, &census, base_rss, rss, held.len()));
    drop(held);
    if !b.target.wait_connections_at_most(0, Duration::from_secs(30)).await {
        return Err("the pending connections were still open 30 s after they closed".into());
    }

    let started = b.fleet(&specs).await;
    if !started.failures.is_empty() {
        return Err(format!("{} registrations failed (first: {})", started.failures.len(), started.failures[0]));
    }
    settle().await;
    let census = read(b).await?;
    let rss = server.rss_kib().unwrap_or(0);
    report.insert("registered".into(), phase("registered", &base, &census, base_rss, rss, registered));
    b.dismiss(started.fleet).await;
    Ok(Value::Object(report))
}

/// Prints one phase's table and returns it as JSON: per owner, bytes per connection.
fn phase(name: &str, base: &Census, now: &Census, base_rss: u64, rss: u64, n: usize) -> Value {
    let per = |metric: &str, owner: &str| {
        let key = (metric.to_string(), owner.to_string());
        let delta = now.get(&key).copied().unwrap_or(0) - base.get(&key).copied().unwrap_or(0);
        delta as f64 / n.max(1) as f64
    };
    let owners: Vec<&str> = now.keys().filter(|(m, _)| m == METRICS[0]).map(|(_, o)| o.as_str()).collect();
    println!("  {name}, {n} connections: per connection, by owner");
    println!("    {:<16} {:>9} {:>13} {:>12}", "owner", "bytes", "malloc bytes", "allocations");
    let mut rows = Map::new();
    let mut totals = [0.0; 3];
    for owner in owners {
        let values: Vec<f64> = METRICS.iter().map(|m| per(m, owner)).collect();
        if values.iter().all(|v| v.abs() < 0.05) {
            continue;
        }
        println!("    {owner:<16} {:>9.1} {:>13.1} {:>12.2}", values[0], values[1], values[2]);
        for (total, v) in totals.iter_mut().zip(&values) {
            *total += v;
        }
        rows.insert(
            owner.into(),
            json!({ "bytes": round1(values[0]), "malloc_bytes": round1(values[1]), "allocations": round1(values[2]) }),
        );
    }
    let rss_per = rss.saturating_sub(base_rss) as f64 * 1024.0 / n.max(1) as f64;
    println!("    {:<16} {:>9.1} {:>13.1} {:>12.2}", "total", totals[0], totals[1], totals[2]);
    println!("    server RSS: {rss_per:.0} bytes per connection ({base_rss} KiB before, {rss} KiB with them)");
    json!({
        "connections": n,
        "owners": rows,
        "heap_bytes": round1(totals[0]),
        "malloc_bytes": round1(totals[1]),
        "allocations": round1(totals[2]),
        "rss_bytes": rss_per.round(),
    })
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// The census lines of `/metrics`; an error if the server was built without them.
async fn read(b: &Bench) -> Result<Census, String> {
    let text = b.target.http_get("/metrics").await.map_err(|e| format!("GET /metrics: {e}"))?;
    let census: Census = text.lines().filter_map(parse_line).collect();
    if census.is_empty() {
        return Err("the server's /metrics has no heap census: build it with --features heap-census".into());
    }
    Ok(census)
}

/// `iot_ws_heap_bytes{owner="task"} 1234` → ((metric, owner), value).
fn parse_line(line: &str) -> Option<((String, String), i64)> {
    let (metric, rest) = line.split_once("{owner=\"")?;
    if !METRICS.contains(&metric) {
        return None;
    }
    let (owner, value) = rest.split_once("\"} ")?;
    Some(((metric.to_string(), owner.to_string()), value.trim().parse().ok()?))
}

/// Lets the server finish what the last burst started before the census is read.
async fn settle() {
    smol::Timer::after(Duration::from_millis(1500)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn census_lines_are_read_and_others_ignored() {
        assert_eq!(
            parse_line("iot_ws_heap_bytes{owner=\"task\"} 1234"),
            Some(((METRICS[0].into(), "task".into()), 1234))
        );
        assert_eq!(
            parse_line("iot_ws_heap_allocations{owner=\"other\"} -3"),
            Some(((METRICS[2].into(), "other".into()), -3))
        );
        assert_eq!(parse_line("iot_ws_database_up{role=\"bindings\"} 1"), None);
        assert_eq!(parse_line("iot_ws_connections 3"), None);
    }
}
