//! Launch-to-listening: the bench starts the server itself (no database, a fresh public key),
//! times until it prints "listening on", then reads its idle RSS.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::proc::rss_kib;
use crate::stats::Samples;
use crate::tokens::Minter;

/// How long after "listening on" the idle RSS is read.
const SETTLE: Duration = Duration::from_millis(500);

pub fn run(server_bin: &str, minter: &Minter, runs: u64) -> Result<Value, String> {
    let dir = std::env::temp_dir().join(format!("iot-ws-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let key = dir.join("public.pem");
    std::fs::write(&key, minter.public_pem()).map_err(|e| format!("{}: {e}", key.display()))?;
    let mut launch = Samples::default();
    let mut rss = Samples::default();
    for _ in 0..runs.max(1) {
        let (took, kib) = once(server_bin, &key)?;
        launch.push(took.as_micros() as u64);
        rss.push(kib);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (median_launch, median_rss) = (launch.quantile(0.5), rss.quantile(0.5));
    println!(
        "startup: listening after {} (median of {runs}), idle RSS {median_rss} KiB",
        crate::stats::ms(median_launch)
    );
    Ok(json!({ "runs": runs, "listening_us": median_launch, "idle_rss_kib": median_rss,
               "listening_us_all": launch.0, "idle_rss_kib_all": rss.0 }))
}

fn once(server_bin: &str, key: &std::path::Path) -> Result<(Duration, u64), String> {
    let t0 = Instant::now();
    let mut child = Command::new(server_bin)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["--listen", "127.0.0.1:0", "--public-key"])
        .arg(key)
        .stdin(Stdio::null())
        // "listening on" is an info line: stdout.
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {server_bin}: {e}"))?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let listening = lines.by_ref().take(100).map_while(Result::ok).any(|l| l.contains("listening on"));
    let took = t0.elapsed();
    std::thread::sleep(SETTLE);
    let rss = rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    if !listening {
        return Err(format!("{server_bin} never said \"listening on\""));
    }
    Ok((took, rss.ok_or("cannot read the server's RSS")?))
}
