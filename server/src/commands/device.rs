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
use iot_ws_core::{ClientConfig, ClientEvent, ClientInput, ClientOutput, DeviceClient, DeviceId, Millis};

use crate::commands::actuation_sink::ActuationSink;
use crate::commands::ws_client::{connect, ClientWs, ServerUrl};
use crate::config::{ConfigError, Env, Flags};

/// A signal's close: the server's answer needs no more than this.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Longest a registration or a ping may wait for the socket to take it.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

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
    let signals = crate::ops::signals::watch()?;
    smol::block_on(drive(options, sink, signals))
}

impl DeviceOptions {
    fn load(mut flags: Flags, env: &Env) -> Result<DeviceOptions, ConfigError> {
        let usage = |what: &str| ConfigError(format!("device: {what} (see --help)"));
        let url = flags.take("url").ok_or_else(|| usage("--url ws://HOST:PORT/ is required"))?;
        let ca = flags.take("ca");
        let device = flags.take("device-id").ok_or_else(|| usage("--device-id ID is required"))?;
        let token = flags
            .take_secret("token", env, "IOT_WS_DEVICE_TOKEN")?
            .map(|secret| secret.text)
            .ok_or_else(|| usage("--token T, --token-file F or IOT_WS_DEVICE_TOKEN is required"))?;
        let exec = flags.take("exec");
        flags.finish()?;
        Ok(DeviceOptions { url: ServerUrl::parse(&url, ca.as_deref().map(std::path::Path::new))?, device, token, exec })
    }
}

/// What woke the loop.
enum Wake {
    Signal,
    Frame(Option<Result<Message, async_tungstenite::tungstenite::Error>>),
    Tick,
}

/// Whether the device goes on after a step, or stops (exit status 0).
enum Flow {
    Running,
    Stopped,
}

/// The host of one `DeviceClient`: its socket, clock, signals and output.
struct Device {
    url: ServerUrl,
    name: String,
    client: DeviceClient,
    ws: Option<ClientWs>,
    start: Instant,
    sink: ActuationSink,
    signals: Receiver<i32>,
    /// The last short reply, to say why a registration was refused.
    last_reply: String,
}

async fn drive(options: DeviceOptions, sink: ActuationSink, signals: Receiver<i32>) -> anyhow::Result<()> {
    let start = Instant::now();
    let client =
        DeviceClient::new(Millis(0), DeviceId(options.device.as_str().into()), options.token, ClientConfig::default());
    let mut device = Device {
        url: options.url,
        name: options.device,
        client,
        ws: None,
        start,
        sink,
        signals,
        last_reply: String::new(),
    };
    // The core's contract: drain its outputs after every input, then wait for the next one.
    loop {
        while let Some(output) = device.client.poll_output() {
            if let Flow::Stopped = device.perform(output).await? {
                return Ok(());
            }
        }
        if let Flow::Stopped = device.wait().await {
            return Ok(());
        }
    }
}

impl Device {
    fn now(&self) -> Millis {
        Millis(u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    async fn perform(&mut self, output: ClientOutput) -> anyhow::Result<Flow> {
        match output {
            ClientOutput::Connect => return Ok(self.open().await),
            ClientOutput::Send(text) => {
                let sent = match self.ws.as_mut() {
                    // A server that stops reading must not hold the device (and its signals)
                    // in a blocked write: past the deadline the connection counts as lost.
                    Some(socket) => {
                        let send = async { socket.send(Message::text(text)).await.is_ok() };
                        future::or(send, async { expire(SEND_TIMEOUT).await.is_some() }).await
                    }
                    None => false,
                };
                if !sent {
                    self.lost();
                }
            }
            ClientOutput::Close => {
                self.close_socket().await;
                self.client.handle_input(self.now(), ClientInput::Disconnected);
            }
            ClientOutput::Event(event) => self.tell(event)?,
        }
        Ok(Flow::Running)
    }

    async fn open(&mut self) -> Flow {
        status(&format!("connecting to {}", self.url.as_str()));
        // A signal must not wait for a connect that may take its whole timeout.
        let attempt = async { Some(connect(&self.url).await) };
        let stop = async {
            let _ = self.signals.recv().await;
            None
        };
        let Some(attempt) = future::or(stop, attempt).await else {
            status("stopped");
            return Flow::Stopped;
        };
        match attempt {
            Ok(opened) => {
                self.ws = Some(opened);
                self.client.handle_input(self.now(), ClientInput::Connected);
            }
            Err(why) => {
                status(&format!("cannot connect: {why}"));
                self.client.handle_input(self.now(), ClientInput::Disconnected);
            }
        }
        Flow::Running
    }

    fn tell(&mut self, event: ClientEvent) -> anyhow::Result<()> {
        match event {
            ClientEvent::Registered => status(&format!("registered as {:?}", self.name)),
            // A token the server refuses will not get better by retrying: stop, status 1.
            ClientEvent::Rejected => {
                anyhow::bail!("the server refused the registration: {}", shorten(&self.last_reply))
            }
            ClientEvent::ServerError => status("the server could not record the registration (500)"),
            ClientEvent::Actuation(body) => {
                self.sink.deliver(&body).map_err(|e| anyhow::anyhow!("cannot write to stdout: {e}"))?
            }
            ClientEvent::Pong => {}
            ClientEvent::PongMissed => status("no answer to a ping: reconnecting"),
            ClientEvent::BackingOff { delay_ms } => status(&format!("reconnecting in {} s", seconds(delay_ms))),
        }
        Ok(())
    }

    /// Waits for a frame, the core's timer or a signal, and hands it to the core.
    async fn wait(&mut self) -> Flow {
        let timer = match self.client.poll_timeout() {
            Some(at) => smol::Timer::at(self.start + Duration::from_millis(at.0)),
            None => smol::Timer::never(),
        };
        let signal = async {
            let _ = self.signals.recv().await;
            Wake::Signal
        };
        let frame = async {
            match self.ws.as_mut() {
                Some(socket) => Wake::Frame(socket.next().await),
                None => future::pending().await,
            }
        };
        let tick = async {
            timer.await;
            Wake::Tick
        };
        let wake = future::or(signal, future::or(frame, tick)).await;
        let now = self.now();
        match wake {
            Wake::Signal => {
                self.close_socket().await;
                status("stopped");
                return Flow::Stopped;
            }
            Wake::Frame(Some(Ok(Message::Text(text)))) => {
                // Replies worth quoting are short; actuations may be large and are not kept.
                self.last_reply.clear();
                if text.len() <= 256 {
                    self.last_reply.push_str(text.as_str());
                }
                self.client.handle_input(now, ClientInput::Text(text.as_str()));
            }
            // Pings are answered by the WebSocket layer; the server sends nothing else we need.
            Wake::Frame(Some(Ok(_))) => {}
            Wake::Frame(Some(Err(_)) | None) => self.lost(),
            Wake::Tick => self.client.handle_timeout(now),
        }
        Flow::Running
    }

    /// Closes the socket, if any, waiting a little for the server's answer.
    async fn close_socket(&mut self) {
        if let Some(mut socket) = self.ws.take() {
            let _ = future::or(async { socket.close(None).await.ok() }, expire(CLOSE_GRACE)).await;
        }
    }

    fn lost(&mut self) {
        if self.ws.take().is_some() {
            status("connection lost");
        }
        self.client.handle_input(self.now(), ClientInput::Disconnected);
    }
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
