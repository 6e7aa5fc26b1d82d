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
        #[cfg(feature = "keys")]
        Some("keygen") => Flags::parse(&args[1..], &[]).map_err(Into::into).and_then(commands::keys::keygen),
        #[cfg(feature = "keys")]
        Some("token") => Flags::parse(&args[1..], &[]).map_err(Into::into).and_then(commands::keys::token),
        #[cfg(not(feature = "keys"))]
        Some(command @ ("keygen" | "token")) => Err(without_keys(command).into()),
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
        demo(&mut config)?
    } else {
        auth::TokenVerifier::from_file(&config.public_key).map_err(|e| ConfigError(e.to_string()))?
    };
    serve::serve(config, verifier)
}

#[cfg(feature = "keys")]
fn demo(config: &mut Config) -> anyhow::Result<auth::TokenVerifier> {
    commands::demo::prepare(config)
}

#[cfg(not(feature = "keys"))]
fn demo(_: &mut Config) -> anyhow::Result<auth::TokenVerifier> {
    Err(without_keys("--demo").into())
}

/// The gateway builds leave out making keys and tokens (the `keys` feature: RSA key generation
/// and JWT signing, 124 KB of the armv7 binary): a gateway verifies tokens, the platform mints them.
#[cfg(not(feature = "keys"))]
fn without_keys(what: &str) -> ConfigError {
    ConfigError(format!(
        "{what}: not in this build (no `keys` feature); make keys with openssl genpkey, tokens where they are minted"
    ))
}
