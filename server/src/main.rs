//! `iot-ws-server`: the WebSocket actuation server for IoT devices.

mod auth;
mod clock;
mod cluster;
mod commands;
mod config;
mod connection;
mod db;
mod hub;
mod ops;
mod serve;
mod store;
mod tls;

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
        Some("keygen") => Flags::parse(&args[1..], &[]).map_err(Into::into).and_then(commands::keys::keygen),
        Some("token") => Flags::parse(&args[1..], &[]).map_err(Into::into).and_then(commands::keys::token),
        Some("device") => commands::device::run(&args[1..]),
        Some("actuate") => commands::actuate::run(&args[1..]),
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
        commands::demo::prepare(&mut config)?
    } else {
        auth::TokenVerifier::from_file(&config.public_key).map_err(|e| ConfigError(e.to_string()))?
    };
    serve::serve(config, verifier)
}
