//! Restart storm with PostgreSQL (issue 14): the bench starts the server, registers N devices,
//! stops the server (SIGTERM by default, as a deployment does), starts it again on the same
//! address, and every device reconnects with the same token (`--concurrency` of them in flight).
//! Measured from the second launch: the time until every device's binding is true for this
//! server again (written after the launch), the reconnects' registration latency, and the CPU
//! of the database's processes and of the server meanwhile.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use futures_lite::future;
use serde_json::{json, Value};

use crate::bench::Bench;
use crate::bindings::Db;
use crate::launched::{Launch, Server, Stop};
use crate::stats::ms;

/// While devices reconnect, the bindings are polled every 5 ms × this (100 ms).
const SPARSE_POLL_STEPS: u32 = 20;
/// Longest the bench waits for the bindings to say what it expects.
const BINDINGS_LIMIT: Duration = Duration::from_secs(120);

pub struct Plan {
    pub devices: usize,
    pub server_bin: String,
    pub database_url: String,
    pub stop: Stop,
}

/// A free loopback address for `ws://127.0.0.1:0` (the server is started on it twice).
pub fn pick_address(url: &str) -> Result<String, String> {
    if !url.ends_with(":0") {
        return Ok(url.to_string());
    }
    let probe = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    let port = probe.local_addr().map_err(|e| e.to_string())?.port();
    Ok(format!("{}{port}", &url[..url.len() - 1]))
}

pub async fn run(b: &Bench, plan: &Plan) -> Result<Value, String> {
    let n = plan.devices;
    println!("restart storm: {n} devices, stop by {:?}", plan.stop);
    let db = Db::connect(&plan.database_url)?;
    let cluster = crate::pg_cpu::Cluster::of_backend(db.backend_pid().await?)?;
    let dir = std::env::temp_dir().join(format!("iot-ws-bench-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let launch = launch_settings(b, plan, &dir)?;
    let result = storm(b, plan, &db, &cluster, &launch).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn launch_settings(b: &Bench, plan: &Plan, dir: &std::path::Path) -> Result<Launch, String> {
    let minter = b.minter.as_ref().ok_or("restart needs --private-key (its public half is the server's key)")?;
    let public_key = dir.join("public.pem");
    std::fs::write(&public_key, minter.public_pem()).map_err(|e| format!("{}: {e}", public_key.display()))?;
    let listen: SocketAddr = b.target.addr;
    Ok(Launch {
        bin: plan.server_bin.clone(),
        listen,
        public_key,
        database_url: plan.database_url.clone(),
        log: dir.join("server.log"),
    })
}

async fn storm(
    b: &Bench,
    plan: &Plan,
    db: &Db,
    cluster: &crate::pg_cpu::Cluster,
    launch: &Launch,
) -> Result<Value, String> {
    let n = plan.devices;
    let specs = b.specs("restart", n)?;
    let pattern = format!("bench-{}-restart-%", b.run);

    // The first instance, and every device registered and recorded on it.
    let files_before = open_files();
    let mut first = Server::start(launch)?;
    first.listening().await?;
    let started = b.fleet(&specs).await;
    if !started.failures.is_empty() {
        return Err(format!("{} devices did not register: {}", started.failures.len(), started.failures[0]));
    }
    wait_all_connected(db, &pattern, n as i64).await?;
    let servers = db.servers(&pattern).await?;
    let [server_name] = servers.as_slice() else {
        return Err(format!("the bindings name {} servers, want one: {servers:?}", servers.len()));
    };
    println!("  {n} registered on {server_name:?}; stopping it ({:?})", plan.stop);

    let stop_took = first.stop(plan.stop).await;
    started.fleet.drop_all();
    wait_own_sockets_closed(files_before).await;
    let true_after_stop = db.connected(&pattern).await?;

    // The restart: from the launch until every binding is true again.
    let since = db.clock().await?;
    let cpu0 = cluster.read();
    let t0 = Instant::now();
    let mut second = Server::start(launch)?;
    second.listening().await?;
    let listening = t0.elapsed();
    let all_answered = AtomicBool::new(false);
    let reconnect = async {
        let s = b.fleet(&specs).await;
        all_answered.store(true, Relaxed);
        (s, t0.elapsed())
    };
    let watch = async {
        let mut polls = 0u64;
        loop {
            polls += 1;
            match db.connected_since(&pattern, server_name, &since).await {
                Ok(c) if c >= n as i64 => break Ok((t0.elapsed(), polls)),
                Ok(_) if t0.elapsed() > BINDINGS_LIMIT => {
                    break Err(format!("not every binding true after {BINDINGS_LIMIT:?}"))
                }
                Ok(_) => pause(&all_answered).await,
                Err(e) => break Err(e),
            }
        }
    };
    let ((mut again, registered), watched) = future::zip(reconnect, watch).await;
    let db_cpu = cpu0.until(&cluster.read());
    let server_cpu = second.proc().cpu();
    let server_threads = crate::proc::threads_cpu(second.proc().pid);
    let (all_true, polls) = watched?;

    let ok = again.latency.0.len();
    let per_device = |d: Duration| d.as_secs_f64() * 1e6 / ok.max(1) as f64;
    println!("  stop took {}; bindings still true after it: {true_after_stop}", ms(stop_took.as_micros() as u64));
    println!(
        "  restart: listening after {}, {ok} of {n} reconnected after {} ({} failed), latency {} (max {})",
        ms(listening.as_micros() as u64),
        ms(registered.as_micros() as u64),
        again.failures.len(),
        again.latency.describe(),
        ms(again.latency.quantile(1.0)),
    );
    println!(
        "  every binding true after {} ({polls} polls); database CPU {} ({:.0} µs per device; the bench's polling another {}), server CPU {}",
        ms(all_true.as_micros() as u64),
        ms(db_cpu.others.as_micros() as u64),
        per_device(db_cpu.others),
        ms(db_cpu.own_backend.as_micros() as u64),
        server_cpu.map_or("?".into(), |c| ms(c.as_micros() as u64)),
    );
    let threads: Vec<String> =
        server_threads.iter().map(|(name, cpu)| format!("{name} {}", ms(cpu.as_micros() as u64))).collect();
    println!("  server CPU by thread since the launch: {}", threads.join(", "));
    let by_thread: serde_json::Map<String, Value> =
        server_threads.iter().map(|(name, cpu)| (name.clone(), json!(cpu.as_millis() as u64))).collect();
    let report = json!({
        "devices": n, "stop": format!("{:?}", plan.stop).to_lowercase(), "stop_ms": stop_took.as_millis() as u64,
        "true_after_stop": true_after_stop, "listening_us": listening.as_micros() as u64,
        "reconnected": ok, "failed": again.failures.len(), "all_registered_ms": registered.as_millis() as u64,
        "latency": again.latency.summary(), "all_true_ms": all_true.as_millis() as u64,
        "db_cpu_ms": db_cpu.others.as_millis() as u64, "db_cpu_us_per_device": per_device(db_cpu.others).round(),
        "bench_poll_db_cpu_ms": db_cpu.own_backend.as_millis() as u64,
        "server_cpu_ms": server_cpu.map(|c| c.as_millis() as u64),
        "server_threads_cpu_ms": by_thread,
    });
    b.dismiss(again.fleet).await;
    second.stop(Stop::Term).await;
    Ok(report)
}

/// The pause between two polls of the bindings. One poll scans the run's rows (~10 ms of the
/// database's CPU at 19,500 on a busy machine), so they are sparse while the devices reconnect
/// (that CPU would be taken from the server and the database under test) and dense once every
/// device has had its answer: a device gets its 200 only after its binding is written, so the
/// end is near then.
async fn pause(all_answered: &AtomicBool) {
    for _ in 0..SPARSE_POLL_STEPS {
        if all_answered.load(Relaxed) {
            break;
        }
        smol::Timer::after(Duration::from_millis(5)).await;
    }
}

/// Polls until every one of the run's `want` bindings says connected (bounded).
async fn wait_all_connected(db: &Db, pattern: &str, want: i64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.connected(pattern).await? < want {
        if Instant::now() > deadline {
            return Err("the bindings never showed every device connected".into());
        }
        smol::Timer::after(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Waits (bounded) until the dropped fleet's sockets are closed: both fleets at once would need
/// twice the file limit.
async fn wait_own_sockets_closed(before_fleet: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if open_files() <= before_fleet + 100 {
            return;
        }
        smol::Timer::after(Duration::from_millis(20)).await;
    }
}

fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}
