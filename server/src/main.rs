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

use std::io::Write;
use std::process::ExitCode;

use config::{Command, Config, ConfigError, Flags, Invocation};

/// Bench builds only (`--features heap-census`): every allocation counted by owner (ops/census.rs).
#[cfg(feature = "heap-census")]
#[global_allocator]
static ALLOCATOR: ops::census::Counting = ops::census::Counting;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, args) = match config::invocation(&args) {
        Invocation::Help(command) => {
            print!("{}", command.usage());
            return ExitCode::SUCCESS;
        }
        Invocation::Version => {
            println!("iot-ws-server {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Invocation::Run(command, args) => (command, args),
    };
    match run(command, args) {
        Ok(status) => status,
        Err(e) => {
            // `{:#}`: the error with its causes ("cannot read keys/public.pem: No such file").
            // Not `eprintln!`, which panics (status 101, not 2) when nothing reads stderr.
            let _ = writeln!(std::io::stderr(), "iot-ws-server: {e:#}");
            // Anything wrong before serving is the operator's to fix: status 2.
            ExitCode::from(if e.is::<ConfigError>() { 2 } else { 1 })
        }
    }
}

fn run(command: Command, args: &[String]) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve => return run_server(args),
        #[cfg(feature = "keys")]
        Command::Keygen => commands::keys::keygen(Flags::parse(args, &[])?)?,
        #[cfg(feature = "keys")]
        Command::Token => commands::keys::token(Flags::parse(args, &[])?)?,
        #[cfg(not(feature = "keys"))]
        Command::Keygen => return Err(without_keys("keygen").into()),
        #[cfg(not(feature = "keys"))]
        Command::Token => return Err(without_keys("token").into()),
        Command::CheckToken => return commands::checktoken::run(args),
        Command::Device => commands::device::run(args)?,
        Command::Actuate => commands::actuate::run(args)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn run_server(args: &[String]) -> anyhow::Result<ExitCode> {
    let env = |name: &str| std::env::var(name).ok();
    let flags = Flags::parse(args, &["demo", "check"])?;
    let check = flags.has("check");
    let mut config = Config::load(flags, &env)?;
    ops::logging::init(config.log.clone());
    if check {
        check_files(&config)?;
        println!("configuration ok");
        return Ok(ExitCode::SUCCESS);
    }
    let verifier = if config.demo {
        demo(&mut config)?
    } else {
        auth::TokenVerifier::from_file(&config.public_key).map_err(|e| ConfigError(e.to_string()))?
    };
    serve::serve(config, verifier)?;
    Ok(ExitCode::SUCCESS)
}

/// `--check`: what serving would read before it binds, beyond what `Config::load` checked (the
/// settings, the database URL and its `sslrootcert`): the public key (not with `--demo`, which
/// makes its own) and the TLS pair. It neither binds the port nor connects to the database.
fn check_files(config: &Config) -> Result<(), ConfigError> {
    if !config.demo {
        auth::TokenVerifier::from_file(&config.public_key).map_err(|e| ConfigError(e.to_string()))?;
    }
    if let Some(files) = &config.tls {
        tls::Certificate::load(&files.cert, &files.key).map_err(ConfigError)?;
    }
    Ok(())
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
