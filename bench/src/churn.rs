//! Churn: every device closes and registers again while acknowledged actuations flow to it.
//! Each actuation carries a per-run sequence number, so the devices' records show exactly which
//! were lost, duplicated or reordered.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::actuate::wait_for;
use crate::bench::Bench;
use crate::sender::Dashboard;

pub async fn run(b: &Bench, devices: usize, secs: u64, rate: u64) -> Result<Value, String> {
    println!("churn: {devices} devices each reconnect once during {secs} s of {rate} actuations/s");
    let specs = b.specs("churn", devices)?;
    let started = b.fleet(&specs).await;
    if !started.failures.is_empty() {
        return Err(format!("{} devices did not register: {}", started.failures.len(), started.failures[0]));
    }
    let fleet = started.fleet;
    let rec = fleet.recorder.clone();
    let mut d = Dashboard::connect(&b.ex, &b.target, b.next_index(), &b.actuator, true)
        .await
        .map_err(|e| format!("sender: {e}"))?;
    let total = rate * secs;
    let n = devices.max(1) as u64;
    let run_for = Duration::from_secs(secs);
    let t0 = Instant::now();
    // Device i reconnects at 10% + 80% * i / n of the run: every one of them, spread out.
    let mut next_reconnect = 0usize;
    let mut sent_to: Vec<Vec<u64>> = vec![Vec::new(); devices];
    for k in 0..total {
        let at = t0 + Duration::from_nanos(k * 1_000_000_000 / rate.max(1));
        while next_reconnect < devices && t0 + run_for.mul_f64(0.1 + 0.8 * next_reconnect as f64 / n as f64) <= at {
            fleet.reconnect(next_reconnect);
            next_reconnect += 1;
        }
        smol::Timer::at(at).await;
        let i = (k % n) as usize;
        if !d.send(&specs[i].id, k, rec.now_us()).await {
            return Err("the sender's connection closed".into());
        }
        sent_to[i].push(k);
    }
    while next_reconnect < devices {
        fleet.reconnect(next_reconnect);
        next_reconnect += 1;
    }
    let mut reconnected = 0;
    let mut reconnect_failures = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while reconnected + reconnect_failures.len() < devices && Instant::now() < deadline {
        match futures_lite::future::or(async { fleet.reconnects.recv().await.ok() }, async {
            smol::Timer::after(Duration::from_secs(1)).await;
            None
        })
        .await
        {
            Some(Ok(_)) => reconnected += 1,
            Some(Err(e)) => reconnect_failures.push(e),
            None => {}
        }
    }
    wait_for(&rec, total).await;
    // Acks may trail the last delivery a little.
    let ack_deadline = Instant::now() + Duration::from_secs(5);
    while d.acks.total() < total && Instant::now() < ack_deadline {
        smol::Timer::after(Duration::from_millis(10)).await;
    }
    let acks = d.acks.clone();
    d.close().await;
    let counts = count(&sent_to, |i| rec.sequence(i));
    println!(
        "  {total} sent, {} reconnects ({} failed), lost {}, duplicated {}, out of order {}; acks {}",
        reconnected,
        reconnect_failures.len(),
        counts.lost,
        counts.duplicated,
        counts.out_of_order,
        acks.json()
    );
    b.dismiss(fleet).await;
    Ok(json!({
        "devices": devices, "secs": secs, "sent": total, "reconnects": reconnected,
        "reconnect_failures": reconnect_failures.len(),
        "lost": counts.lost, "duplicated": counts.duplicated, "out_of_order": counts.out_of_order,
        "acks": acks.json(),
    }))
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
}

/// Compares what each device was sent with what it received.
pub fn count(sent_to: &[Vec<u64>], received: impl Fn(usize) -> Vec<u64>) -> Counts {
    let mut c = Counts::default();
    for (i, sent) in sent_to.iter().enumerate() {
        let got = received(i);
        let unique: HashSet<u64> = got.iter().copied().collect();
        c.duplicated += (got.len() - unique.len()) as u64;
        c.lost += sent.iter().filter(|s| !unique.contains(s)).count() as u64;
        c.out_of_order += got.windows(2).filter(|w| w[1] < w[0]).count() as u64;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_duplicated_and_reordered_are_counted_per_device() {
        let sent = vec![vec![0, 2, 4], vec![1, 3]];
        let got = [vec![0, 4, 2, 2], vec![1]];
        let c = count(&sent, |i| got[i].clone());
        assert_eq!(c, Counts { lost: 1, duplicated: 1, out_of_order: 1 });
    }
}
