//! `iot-ws-bench`: load, latency and cost figures of a running iot-ws-server (issue 5).
//!
//! Clients are the core's `DeviceClient` over async-tungstenite on loopback; the server's costs
//! are read from /proc. Every run prints human text, then exactly one JSON line.

mod actuate;
mod args;
mod attack;
mod attack_raw;
mod attacks;
mod bench;
mod bindings;
mod census;
mod churn;
mod device;
mod floor;
mod launched;
mod net;
mod pg_cpu;
mod proc;
mod register;
mod restart;
mod sender;
mod startup;
mod stats;
mod storm;
mod tls;
mod tokens;

use std::process::ExitCode;

use serde_json::{Map, Value};

use crate::args::{Args, USAGE};
use crate::bench::Bench;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.is_empty() || matches!(argv[0].as_str(), "-h" | "--help" | "help") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match Args::parse(&argv).and_then(|a| a.check_known().map(|()| a)).and_then(|a| run(&a)) {
        Ok(report) => {
            println!("{}", Value::Object(report));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("iot-ws-bench: {e}");
            ExitCode::from(2)
        }
    }
}

const MODES: &[&str] = &[
    "all", "register", "idle", "actuate", "ping", "churn", "storm", "startup", "attack", "floor", "restart", "census",
];
/// Modes `all` leaves out: attack hurts the server, restart starts its own, floor is part of
/// actuate, census needs a server built for it.
const NOT_IN_ALL: &[&str] = &["attack", "restart", "floor", "census"];

fn run(a: &Args) -> Result<Map<String, Value>, String> {
    if !MODES.contains(&a.mode.as_str()) {
        return Err(format!("unknown mode {:?}; see --help", a.mode));
    }
    let limit = proc::raise_file_limit();
    let tls = a.string("ca").map(|ca| tls::Tls::new(&ca, &a.string_or("tls-name", "localhost"))).transpose()?;
    let url = match a.mode.as_str() {
        // It starts the server itself, on a free port unless told one.
        "restart" => restart::pick_address(&a.string_or("server", "ws://127.0.0.1:0"))?,
        _ => a.string_or("server", "ws://127.0.0.1:5000"),
    };
    let target = net::Target::parse(&url, a.number("per-ip", 5000)? as usize, tls)?;
    if a.mode == "attack" && target.tls.is_some() {
        // Its raw attackers write WebSocket frames straight to TCP.
        return Err("attack speaks ws:// only".into());
    }
    if a.mode == "restart" && target.tls.is_some() {
        return Err("restart starts its server without TLS: ws:// only".into());
    }
    let server = a
        .string("server-pid")
        .map(|p| p.parse().map(|pid| proc::ServerProc { pid }).map_err(|_| format!("--server-pid {p:?}")))
        .transpose()?;
    let minter = a.string("private-key").map(|p| tokens::Minter::from_file(&p)).transpose()?;
    let actuator = sender::Actuator {
        username: a.string_or("actuator-username", "bench"),
        password: a.string_or("actuator-password", "bench"),
    };
    let mut b = Bench::new(target, server, minter, actuator);
    b.concurrency = a.number("concurrency", 256)? as usize;
    b.start_threads(a.number("client-threads", 1)? as usize);

    let mut report = Map::new();
    report.insert("bench".into(), "iot-ws-bench".into());
    report.insert("mode".into(), a.mode.clone().into());
    report.insert("file_limit".into(), limit.into());
    report.insert("cores".into(), std::thread::available_parallelism().map_or(1, |n| n.get()).into());
    let want = |m: &str| a.mode == m || (a.mode == "all" && !NOT_IN_ALL.contains(&m));
    let devices = a.number("devices", 1000)? as usize;
    if a.mode == "floor" {
        let writes = a.number("floor-writes", a.number("actuations", 100_000)?)?;
        report.insert("floor".into(), floor::run(devices, writes, a.number("floor-runs", 3)?)?);
        return Ok(report);
    }

    if want("startup") && (a.mode == "startup" || a.string("server-bin").is_some()) {
        let bin = a.string("server-bin").ok_or("startup needs --server-bin PATH")?;
        let minter = b.minter.as_ref().ok_or("startup needs --private-key (its public half is the server's key)")?;
        report.insert("startup".into(), startup::run(&bin, minter, a.number("startup-runs", 5)?)?);
    }
    if a.mode == "startup" {
        return Ok(report);
    }
    let database_url = a.string("database-url");
    smol::block_on(b.ex.run(async {
        if want("attack") {
            let plan = attack::Plan {
                attacks: attack::Attack::parse_list(&a.string_or("attacks", "all"))?,
                secs: a.number("seconds", 5)?,
                file_limit: limit,
            };
            report.insert("attack".into(), attack::run(&b, &plan).await?);
            return Ok(());
        }
        if want("ping") || a.mode == "actuate" {
            report.insert("ping_rtt".into(), actuate::ping(&b, a.number("pings", 2000)?).await?);
        }
        if want("census") {
            let (pending, registered) = (a.number("census-pending", 1000)?, a.number("census-devices", 10_000)?);
            report.insert("census".into(), census::run(&b, pending as usize, registered as usize).await?);
        }
        if want("idle") && (a.mode == "idle" || b.server.is_some()) {
            report.insert("idle".into(), register::idle(&b, &a.list("idle-devices", &[1000, 10000])?).await?);
        }
        if want("register") {
            report.insert("registrations".into(), register::run(&b, devices).await?);
        }
        if want("actuate") {
            let plan = actuate::Plan {
                devices,
                actuations: a.number("actuations", 100_000)?,
                senders: a.number("senders", 2)? as usize,
                window: a.number("window", 2000)?,
                paced_rate: a.number("paced-rate", 2000)?,
                paced_secs: a.number("paced-secs", 5)?,
                floor_writes: a.number("floor-writes", a.number("actuations", 100_000)?)?,
            };
            report.insert("actuations".into(), actuate::run(&b, &plan).await?);
        }
        if want("churn") {
            let (secs, rate) = (a.number("churn-secs", 10)?, a.number("churn-rate", 2000)?);
            report.insert("churn".into(), churn::run(&b, devices, secs, rate).await?);
        }
        if want("storm") && (a.mode == "storm" || database_url.is_some()) {
            let url = database_url.as_deref().ok_or("storm needs --database-url")?;
            let n = a.number("storm-devices", devices as u64)? as usize;
            report.insert("storm".into(), storm::run(&b, n, url).await?);
        }
        if want("restart") {
            let plan = restart::Plan {
                devices: a.number("storm-devices", 19_500)? as usize,
                server_bin: a.string("server-bin").ok_or("restart needs --server-bin PATH")?,
                database_url: database_url.clone().ok_or("restart needs --database-url")?,
                stop: launched::Stop::parse(&a.string_or("restart-signal", "term"))?,
            };
            report.insert("restart".into(), restart::run(&b, &plan).await?);
        }
        Ok::<(), String>(())
    }))?;
    Ok(report)
}
