//! `iot-ws-server device`: a device on the command line, driven by the core's `DeviceClient`
//! like the JavaScript package is. The core decides when to register, ping and reconnect; this
//! file only moves frames, timers and signals, and prints.
//!
//! Exit status: 0 after SIGINT or SIGTERM, 1 when the server refuses the registration (a token
//! that will not get better by retrying), 2 for bad usage.

use std::time::{Duration, Instant};

use async_channel::Receiver;
use async_tungstenite::tungstenite::Message;
use futures_lite::{future, StreamExt};
use iot_ws_core::{ClientConfig, ClientEvent, ClientOutput, DeviceClient, DeviceId, Millis};

use crate::actuation_sink::ActuationSink;
use crate::cli_ws::{connect, ClientWs, ServerUrl};
use crate::config::{ConfigError, Env, Flags};

/// A signal's close: the server's answer needs no more than this.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

struct DeviceOptions {
    url: ServerUrl,
    device: String,
    token: String,
    exec: Option<String>,
}

/// Runs the device until a signal (Ok) or a refusal (Err).
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let env = |name: &str| std::env::var(name).ok();
    let options = DeviceOptions::load(Flags::parse(args, &[])?, &env)?;
    let sink = ActuationSink::new(options.exec.clone())?;
    let signals = crate::signals::watch()?;
    smol::block_on(drive(options, sink, signals))
}

impl DeviceOptions {
    fn load(mut flags: Flags, env: &Env) -> Result<DeviceOptions, ConfigError> {
        let usage = |what: &str| ConfigError(format!("device: {what} (see --help)"));
        let url = flags.take("url").ok_or_else(|| usage("--url ws://HOST:PORT/ is required"))?;
        let device = flags.take("device-id").ok_or_else(|| usage("--device-id ID is required"))?;
        let token = match (flags.take("token"), flags.take("token-file")) {
            (Some(_), Some(_)) => return Err(usage("give --token or --token-file, not both")),
            (Some(token), None) => token,
            (None, Some(path)) => read_secret(&path, "--token-file")?,
            (None, None) => env("IOT_WS_DEVICE_TOKEN")
                .filter(|t| !t.is_empty())
                .ok_or_else(|| usage("--token T, --token-file F or IOT_WS_DEVICE_TOKEN is required"))?,
        };
        let exec = flags.take("exec");
        flags.finish()?;
        Ok(DeviceOptions { url: ServerUrl::parse(&url)?, device, token, exec })
    }
}

/// A secret read from a file, without its surrounding whitespace (a trailing newline).
pub fn read_secret(path: &str, flag: &str) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError(format!("{flag} {path}: {e}")))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(ConfigError(format!("{flag} {path} is empty")));
    }
    Ok(secret.to_string())
}

/// What woke the loop.
enum Wake {
    Signal,
    Frame(Option<Result<Message, async_tungstenite::tungstenite::Error>>),
    Tick,
}

async fn drive(options: DeviceOptions, sink: ActuationSink, signals: Receiver<i32>) -> anyhow::Result<()> {
    let start = Instant::now();
    let now = || Millis(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX));
    let device = DeviceId(options.device.clone());
    let mut client = DeviceClient::new(now(), device, options.token, ClientConfig::default());
    let mut ws: Option<ClientWs> = None;
    // The last reply, to say why a registration was refused.
    let mut last_reply = String::new();
    loop {
        while let Some(output) = client.poll_output() {
            match output {
                ClientOutput::Connect => {
                    status(&format!("connecting to {}", options.url.as_str()));
                    // A signal must not wait for a connect that may take its whole timeout.
                    let attempt = async { Some(connect(&options.url).await) };
                    let stop = async {
                        let _ = signals.recv().await;
                        None
                    };
                    let Some(attempt) = future::or(stop, attempt).await else {
                        status("stopped");
                        return Ok(());
                    };
                    match attempt {
                        Ok(opened) => {
                            ws = Some(opened);
                            client.handle_connected(now());
                        }
                        Err(why) => {
                            status(&format!("cannot connect: {why}"));
                            client.handle_disconnected(now());
                        }
                    }
                }
                ClientOutput::Send(text) => {
                    let sent = match ws.as_mut() {
                        Some(socket) => socket.send(Message::text(text)).await.is_ok(),
                        None => false,
                    };
                    if !sent {
                        lost(&mut ws, &mut client, now());
                    }
                }
                ClientOutput::Close => {
                    if let Some(mut socket) = ws.take() {
                        let _ = future::or(async { socket.close(None).await.ok() }, expire(CLOSE_GRACE)).await;
                    }
                    client.handle_disconnected(now());
                }
                ClientOutput::Event(event) => match event {
                    ClientEvent::Registered => status(&format!("registered as {:?}", options.device)),
                    ClientEvent::Rejected => {
                        anyhow::bail!("the server refused the registration: {}", shorten(&last_reply))
                    }
                    ClientEvent::ServerError => status("the server could not record the registration (500)"),
                    ClientEvent::Actuation(body) => {
                        sink.deliver(&body).map_err(|e| anyhow::anyhow!("cannot write to stdout: {e}"))?
                    }
                    ClientEvent::Pong => {}
                    ClientEvent::PongMissed => status("no answer to a ping: reconnecting"),
                    ClientEvent::BackingOff { delay_ms } => status(&format!("reconnecting in {} s", seconds(delay_ms))),
                },
            }
        }
        let timer = match client.poll_timeout() {
            Some(at) => smol::Timer::at(start + Duration::from_millis(at.0)),
            None => smol::Timer::never(),
        };
        let signal = async {
            let _ = signals.recv().await;
            Wake::Signal
        };
        let frame = async {
            match ws.as_mut() {
                Some(socket) => Wake::Frame(socket.next().await),
                None => future::pending().await,
            }
        };
        let tick = async {
            timer.await;
            Wake::Tick
        };
        let wake = future::or(signal, future::or(frame, tick)).await;
        match wake {
            Wake::Signal => {
                if let Some(mut socket) = ws.take() {
                    let _ = future::or(async { socket.close(None).await.ok() }, expire(CLOSE_GRACE)).await;
                }
                status("stopped");
                return Ok(());
            }
            Wake::Frame(Some(Ok(Message::Text(text)))) => {
                last_reply = text.as_str().to_string();
                client.handle_text(now(), text.as_str());
            }
            // Pings are answered by the WebSocket layer; the server sends nothing else we need.
            Wake::Frame(Some(Ok(_))) => {}
            Wake::Frame(Some(Err(_)) | None) => lost(&mut ws, &mut client, now()),
            Wake::Tick => client.handle_timeout(now()),
        }
    }
}

fn lost(ws: &mut Option<ClientWs>, client: &mut DeviceClient, now: Millis) {
    if ws.take().is_some() {
        status("connection lost");
    }
    client.handle_disconnected(now);
}

async fn expire(after: Duration) -> Option<()> {
    smol::Timer::after(after).await;
    None
}

/// Milliseconds as seconds with one decimal (2500 -> "2.5"), without float formatting.
fn seconds(ms: u64) -> String {
    format!("{}.{}", ms / 1000, ms % 1000 / 100)
}

/// Status goes to stderr, so that stdout carries actuations only.
fn status(line: &str) {
    eprintln!("device: {line}");
}

/// A server's reply for a one-line message: its control characters escaped, at most 200 chars.
fn shorten(reply: &str) -> String {
    let escaped: String = reply.chars().flat_map(char::escape_debug).take(200).collect();
    escaped
}
