//! Actuation throughput and latency (full speed, then paced), and the ping round trip.

use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use futures_lite::StreamExt;
use serde_json::{json, Value};

use crate::bench::{cpu_per, Bench};
use crate::device::{Recorder, Spec};
use crate::floor::{self, actuation_frame, round2, Floor};
use crate::sender::Dashboard;
use crate::stats::Samples;

/// How long to wait for the last actuations to arrive.
const DRAIN: Duration = Duration::from_secs(20);

pub struct Plan {
    pub devices: usize,
    pub actuations: u64,
    pub senders: usize,
    pub window: u64,
    pub paced_rate: u64,
    pub paced_secs: u64,
    /// Writes of each loopback floor measurement (one before and one after full speed).
    pub floor_writes: u64,
}

pub async fn run(b: &Bench, plan: &Plan) -> Result<Value, String> {
    println!("actuations: {} devices", plan.devices);
    let specs = b.specs("act", plan.devices)?;
    let started = b.fleet(&specs).await;
    if !started.failures.is_empty() {
        return Err(format!("{} devices did not register: {}", started.failures.len(), started.failures[0]));
    }
    let fleet = started.fleet;
    let full = full_speed(b, &specs, &fleet.recorder, plan).await?;
    let paced = paced(b, &specs, &fleet.recorder, plan).await?;
    b.dismiss(fleet).await;
    Ok(json!({ "devices": plan.devices, "full_speed": full, "paced": paced }))
}

async fn full_speed(b: &Bench, specs: &[Spec], rec: &Recorder, plan: &Plan) -> Result<Value, String> {
    let floor_before = floor_now(specs, rec, plan).await?;
    let base = rec.received();
    let mut senders = Vec::new();
    for _ in 0..plan.senders.max(1) {
        let d = Dashboard::connect(&b.ex, &b.target, b.next_index(), &b.actuator, false).await;
        senders.push(d.map_err(|e| format!("sender: {e}"))?);
    }
    let per_sender = plan.actuations / senders.len() as u64;
    let total = per_sender * senders.len() as u64;
    let sent = std::sync::atomic::AtomicU64::new(0);
    let (cpu0, t0) = (b.cpu(), Instant::now());
    let tasks = senders.iter_mut().enumerate().map(|(s, d)| {
        let sent = &sent;
        async move {
            for k in 0..per_sender {
                // A window keeps the server's mailboxes from overflowing: full speed, no drops.
                let mut spins = 0;
                while sent.load(std::sync::atomic::Ordering::Relaxed) > rec.received() - base + plan.window {
                    smol::Timer::after(Duration::from_micros(200)).await;
                    spins += 1;
                    if spins > 50_000 {
                        return;
                    }
                }
                let seq = s as u64 * per_sender + k;
                let device = &specs[(seq % specs.len() as u64) as usize].id;
                if !d.send(device, seq, rec.now_us()).await {
                    return;
                }
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    join_all(tasks).await;
    let received = wait_for(rec, base + total).await - base;
    let (elapsed, cpu1) = (t0.elapsed(), b.cpu());
    for d in senders {
        d.close().await;
    }
    let floor_after = floor_now(specs, rec, plan).await?;
    let mut latency = rec.take_latency();
    let rate = received as f64 / elapsed.as_secs_f64();
    let cpu = cpu_per(cpu0, cpu1, received);
    let floor_us = (floor_before.cpu_us_per_write + floor_after.cpu_us_per_write) / 2.0;
    // No ratio when the server's CPU did not move a clock tick (10 ms): short runs.
    let ratio = cpu.map(|c| c / floor_us).filter(|r| r.is_finite() && *r > 0.0);
    println!(
        "  full speed: {received}/{total} delivered, {rate:.0}/s, latency {}, server CPU {} per actuation",
        latency.describe(),
        cpu.map_or("?".into(), |c| format!("{c:.1} µs"))
    );
    println!("  loopback floor before: {}", floor_before.describe());
    println!("  loopback floor after:  {}", floor_after.describe());
    println!(
        "  server CPU per actuation / floor ({floor_us:.2} µs, their mean): {}",
        ratio.map_or("? (needs --server-pid and a longer run)".into(), |r| format!("{r:.2}×"))
    );
    Ok(json!({
        "sent": total, "received": received, "per_s": rate.round(), "latency": latency.summary(),
        "server_cpu_us_per_actuation": cpu.map(round2),
        "floor_before": floor_before.json(), "floor_after": floor_after.json(),
        "floor_cpu_us_per_write": round2(floor_us), "ratio_to_floor": ratio.map(round2),
    }))
}

/// The loopback floor (floor.rs) with as many sockets as devices and the frame the last device
/// would receive, on a blocking thread.
async fn floor_now(specs: &[Spec], rec: &Recorder, plan: &Plan) -> Result<Floor, String> {
    let last = specs.last().map_or("", |s| s.id.as_str());
    let frame = actuation_frame(last, plan.actuations, rec.now_us());
    let (sockets, writes) = (plan.devices, plan.floor_writes);
    smol::unblock(move || floor::measure(sockets, &frame, writes)).await
}

async fn paced(b: &Bench, specs: &[Spec], rec: &Recorder, plan: &Plan) -> Result<Value, String> {
    let base = rec.received();
    let _ = rec.take_latency();
    let mut d = Dashboard::connect(&b.ex, &b.target, b.next_index(), &b.actuator, false)
        .await
        .map_err(|e| format!("sender: {e}"))?;
    let total = plan.paced_rate * plan.paced_secs;
    let (cpu0, t0) = (b.cpu(), Instant::now());
    for k in 0..total {
        smol::Timer::at(t0 + Duration::from_nanos(k * 1_000_000_000 / plan.paced_rate.max(1))).await;
        let device = &specs[(k % specs.len() as u64) as usize].id;
        if !d.send(device, k, rec.now_us()).await {
            break;
        }
    }
    let received = wait_for(rec, base + total).await - base;
    let cpu1 = b.cpu();
    d.close().await;
    let mut latency = rec.take_latency();
    let cpu = cpu_per(cpu0, cpu1, received);
    println!(
        "  paced at {}/s for {} s: {received}/{total} delivered, latency {}, server CPU {} per actuation",
        plan.paced_rate,
        plan.paced_secs,
        latency.describe(),
        cpu.map_or("?".into(), |c| format!("{c:.1} µs"))
    );
    Ok(json!({
        "rate": plan.paced_rate, "sent": total, "received": received, "latency": latency.summary(),
        "server_cpu_us_per_actuation": cpu.map(|c| (c * 100.0).round() / 100.0),
    }))
}

/// Waits until `target` actuations have arrived or nothing arrives for a while; returns the count.
pub async fn wait_for(rec: &Recorder, target: u64) -> u64 {
    let mut last = (rec.received(), Instant::now());
    loop {
        let now = rec.received();
        if now >= target {
            return now;
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > DRAIN {
            return now;
        }
        smol::Timer::after(Duration::from_millis(5)).await;
    }
}

async fn join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut all: Vec<_> = futures.map(Box::pin).collect();
    futures_lite::future::poll_fn(|cx| {
        all.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if all.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

/// Sequential pings on one connection that never registers.
pub async fn ping(b: &Bench, count: u64) -> Result<Value, String> {
    let mut ws = b.target.connect(b.next_index()).await.map_err(|e| format!("ping connection: {e}"))?;
    let mut rtt = Samples::default();
    for _ in 0..count {
        let t0 = Instant::now();
        ws.send(Message::text(r#"{"type":"ping"}"#)).await.map_err(|e| format!("ping: {e}"))?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.contains("PONG") => break,
                Some(Ok(_)) => {}
                _ => return Err("the ping connection closed".into()),
            }
        }
        rtt.push(t0.elapsed().as_micros() as u64);
    }
    let _ = ws.close(None).await;
    println!("ping: {count} round trips, {}", rtt.describe());
    Ok(rtt.summary())
}
