//! `iot-ws-server`: the WebSocket actuation server for IoT devices.

mod actuation_sink;
mod auth;
mod cli_actuate;
mod cli_device;
mod cli_ws;
mod clock;
mod cluster;
mod config;
mod conn;
mod deliveries;
mod demo;
mod forward;
mod http;
mod hub_queue;
mod hub_task;
mod inbox;
mod keepalive;
mod keys;
mod limits;
mod log;
mod mailbox;
mod metrics;
mod pg;
mod pg_conn;
mod schema;
mod server;
mod signals;
mod socket;
mod store;

use std::process::ExitCode;

use config::{Config, ConfigError, Flags, USAGE};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("--help" | "-h" | "help") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        // `iot-ws-server device --help` is how people look a subcommand up.
        Some("device" | "actuate") if args[1..].iter().any(|a| a == "--help" || a == "-h") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some("keygen") => Flags::parse(&args[1..], &[]).map_err(Into::into).and_then(keys::keygen),
        Some("token") => Flags::parse(&args[1..], &[]).map_err(Into::into).and_then(keys::token),
        Some("device") => cli_device::run(&args[1..]),
        Some("actuate") => cli_actuate::run(&args[1..]),
        _ => run_server(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iot-ws-server: {e}");
            // Anything wrong before serving is the operator's to fix: status 2.
            ExitCode::from(if e.is::<ConfigError>() { 2 } else { 1 })
        }
    }
}

fn run_server(args: &[String]) -> anyhow::Result<()> {
    let env = |name: &str| std::env::var(name).ok();
    let mut config = Config::load(Flags::parse(args, &["demo"])?, &env)?;
    let verifier = if config.demo {
        demo::prepare(&mut config)?
    } else {
        auth::TokenVerifier::from_file(&config.public_key).map_err(|e| ConfigError(e.to_string()))?
    };
    server::serve(config, verifier)
}
