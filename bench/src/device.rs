//! Simulated devices: each one a task that registers through the core's `DeviceClient`, then
//! reads actuations (answering the server's pings) until told to reconnect or drop.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use async_tungstenite::tungstenite::Message;
use futures_lite::{future, StreamExt};
use iot_ws_core::{ClientConfig, ClientEvent, ClientInput, ClientOutput, DeviceClient, DeviceId, Millis};
use smol::Executor;

use crate::net::{Target, Ws};
use crate::stats::Samples;

/// How long a device waits for the server's answer to its close frame when it reconnects.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// One device's id and token.
#[derive(Clone)]
pub struct Spec {
    pub id: String,
    pub token: String,
}

/// What every device of a fleet records: actuation sequence numbers and latencies.
pub struct Recorder {
    start: Instant,
    per_device: Vec<Mutex<Vec<u64>>>,
    latency: Mutex<Samples>,
    received: AtomicU64,
    /// Connections the server ended on its own.
    pub dropped_by_server: AtomicU64,
}

impl Recorder {
    pub fn new(devices: usize) -> Arc<Recorder> {
        Arc::new(Recorder {
            start: Instant::now(),
            per_device: (0..devices).map(|_| Mutex::new(Vec::new())).collect(),
            latency: Mutex::new(Samples::default()),
            received: AtomicU64::new(0),
            dropped_by_server: AtomicU64::new(0),
        })
    }

    /// Microseconds on the clock actuations are stamped with.
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    pub fn received(&self) -> u64 {
        self.received.load(Relaxed)
    }

    /// The latencies recorded so far, leaving none.
    pub fn take_latency(&self) -> Samples {
        std::mem::take(&mut *self.latency.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The sequence numbers device `i` received, in arrival order.
    pub fn sequence(&self, i: usize) -> Vec<u64> {
        self.per_device.get(i).map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).clone()).unwrap_or_default()
    }

    fn record(&self, device: usize, body: &str) {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(body) else { return };
        let content = &value["content"];
        if let (Some(seq), Some(sent)) = (content["seq"].as_u64(), content["t"].as_u64()) {
            if let Some(list) = self.per_device.get(device) {
                list.lock().unwrap_or_else(|e| e.into_inner()).push(seq);
            }
            self.latency.lock().unwrap_or_else(|e| e.into_inner()).push(self.now_us().saturating_sub(sent));
            self.received.fetch_add(1, Relaxed);
        }
    }
}

/// What a device task is told.
pub enum Control {
    /// Close the connection properly (reading what is still on its way), then register again.
    Reconnect,
    /// Drop the socket at once, as a device losing power or network does.
    Drop,
}

/// A registration's outcome: the time from connect to 200, or why it failed.
pub type Registered = Result<Duration, String>;

/// A connected device between two frames.
struct Device {
    index: usize,
    client: DeviceClient,
    ws: Ws,
}

impl Device {
    /// Connects and registers; any actuation arriving meanwhile is recorded.
    async fn register(
        target: &Target,
        index: usize,
        spec: &Spec,
        rec: &Recorder,
    ) -> Result<(Device, Duration), String> {
        let t0 = Instant::now();
        let ws = target.connect(index).await.map_err(|e| format!("connect: {e}"))?;
        let id = DeviceId(spec.id.as_str().into());
        let mut client = DeviceClient::new(Millis(0), id, spec.token.clone(), ClientConfig::default());
        client.handle_input(Millis(0), ClientInput::Connected);
        let mut device = Device { index, client, ws };
        device.flush_sends().await?;
        let wait = async {
            loop {
                match device.ws.next().await {
                    Some(Ok(Message::Text(text))) => match device.on_text(&text, rec) {
                        Some(ClientEvent::Registered) => return Ok(()),
                        Some(ClientEvent::Rejected) => return Err("401 (token refused)".to_string()),
                        Some(ClientEvent::ServerError) => return Err("500 (binding not recorded)".to_string()),
                        _ => {}
                    },
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(format!("read: {e}")),
                    None => return Err("closed before 200".to_string()),
                }
            }
        };
        future::or(wait, async {
            smol::Timer::after(crate::net::CONNECT_TIMEOUT).await;
            Err("no 200 in time".to_string())
        })
        .await?;
        Ok((device, t0.elapsed()))
    }

    /// Feeds a text frame to the client; records actuations; returns the last other event.
    fn on_text(&mut self, text: &str, rec: &Recorder) -> Option<ClientEvent> {
        self.client.handle_input(Millis(0), ClientInput::Text(text));
        let mut event = None;
        while let Some(out) = self.client.poll_output() {
            match out {
                ClientOutput::Event(ClientEvent::Actuation(body)) => rec.record(self.index, &body),
                ClientOutput::Event(e) => event = Some(e),
                ClientOutput::Send(_) | ClientOutput::Connect | ClientOutput::Close => {}
            }
        }
        event
    }

    async fn flush_sends(&mut self) -> Result<(), String> {
        while let Some(out) = self.client.poll_output() {
            if let ClientOutput::Send(text) = out {
                self.ws.send(Message::text(text)).await.map_err(|e| format!("send: {e}"))?;
            }
        }
        Ok(())
    }

    /// Close handshake, recording whatever arrives before the server's close frame.
    async fn close(mut self, rec: &Recorder) {
        let _ = self.ws.close(None).await;
        let drain = async {
            while let Some(Ok(message)) = self.ws.next().await {
                if let Message::Text(text) = message {
                    self.on_text(&text, rec);
                }
            }
        };
        future::or(drain, smol::Timer::after(CLOSE_WAIT).map_unit()).await;
    }
}

trait MapUnit: std::future::Future + Sized {
    async fn map_unit(self) {
        self.await;
    }
}
impl<F: std::future::Future> MapUnit for F {}

/// Devices running as tasks on the bench's executor.
pub struct Fleet {
    controls: Vec<Sender<Control>>,
    pub recorder: Arc<Recorder>,
    /// Results of reconnects asked with [`Control::Reconnect`].
    pub reconnects: Receiver<Registered>,
}

/// Settings of a fleet's start.
pub struct Launch<'a> {
    pub ex: &'a Arc<Executor<'static>>,
    pub target: &'a Target,
    /// Devices registering at the same time.
    pub concurrency: usize,
    /// Client numbers start here (they choose source addresses).
    pub first_index: usize,
}

/// A started fleet: what each device's first registration gave.
pub struct Started {
    pub fleet: Fleet,
    pub latency: Samples,
    pub failures: Vec<String>,
    pub elapsed: Duration,
}

impl Fleet {
    /// Starts one task per spec, `concurrency` registering at a time; returns once every
    /// device has registered or failed.
    pub async fn start(launch: &Launch<'_>, specs: &[Spec], recorder: Arc<Recorder>) -> Started {
        let (permits, permit_rx) = async_channel::bounded::<()>(launch.concurrency.max(1));
        let (results_tx, results) = async_channel::unbounded::<Registered>();
        let (reconnect_tx, reconnects) = async_channel::unbounded::<Registered>();
        let t0 = Instant::now();
        let mut controls = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let (control_tx, control_rx) = async_channel::bounded(4);
            controls.push(control_tx);
            let task = DeviceTask {
                target: launch.target.clone(),
                index: launch.first_index + i,
                slot: i,
                spec: spec.clone(),
                recorder: recorder.clone(),
                control: control_rx,
                reconnects: reconnect_tx.clone(),
            };
            let (permits, permit_rx, results_tx) = (permits.clone(), permit_rx.clone(), results_tx.clone());
            launch
                .ex
                .spawn(async move {
                    let _ = permits.send(()).await;
                    let first = task.register().await;
                    let _ = permit_rx.try_recv();
                    match first {
                        Ok((device, took)) => {
                            let _ = results_tx.send(Ok(took)).await;
                            task.serve(device).await;
                        }
                        Err(e) => {
                            let _ = results_tx.send(Err(e)).await;
                        }
                    }
                })
                .detach();
        }
        let mut latency = Samples::default();
        let mut failures = Vec::new();
        for _ in 0..specs.len() {
            match results.recv().await {
                Ok(Ok(took)) => latency.push(took.as_micros() as u64),
                Ok(Err(e)) => failures.push(e),
                Err(_) => break,
            }
        }
        let elapsed = t0.elapsed();
        Started { fleet: Fleet { controls, recorder, reconnects }, latency, failures, elapsed }
    }

    /// Asks device `i` to close properly and register again.
    pub fn reconnect(&self, i: usize) {
        if let Some(c) = self.controls.get(i) {
            let _ = c.try_send(Control::Reconnect);
        }
    }

    /// Every device drops its socket at once.
    pub fn drop_all(self) {
        for c in &self.controls {
            let _ = c.try_send(Control::Drop);
        }
    }
}

struct DeviceTask {
    target: Target,
    index: usize,
    /// Position in the fleet (the recorder's index).
    slot: usize,
    spec: Spec,
    recorder: Arc<Recorder>,
    control: Receiver<Control>,
    reconnects: Sender<Registered>,
}

enum Wake {
    Frame(Option<Result<Message, async_tungstenite::tungstenite::Error>>),
    Control(Option<Control>),
}

impl DeviceTask {
    async fn register(&self) -> Result<(Device, Duration), String> {
        let mut device = Device::register(&self.target, self.index, &self.spec, &self.recorder).await?;
        device.0.index = self.slot;
        Ok(device)
    }

    /// Reads until told to drop; reconnects when told to.
    async fn serve(&self, mut device: Device) {
        loop {
            let control = async { Wake::Control(self.control.recv().await.ok()) };
            let frame = async { Wake::Frame(device.ws.next().await) };
            match future::or(control, frame).await {
                Wake::Frame(Some(Ok(Message::Text(text)))) => {
                    device.on_text(&text, &self.recorder);
                }
                Wake::Frame(Some(Ok(_))) => {}
                Wake::Frame(_) => {
                    self.recorder.dropped_by_server.fetch_add(1, Relaxed);
                    // Gone: wait for the bench to say what next.
                    match self.control.recv().await {
                        Ok(Control::Reconnect) => match self.reconnect(None).await {
                            Some(d) => device = d,
                            None => return,
                        },
                        _ => return,
                    }
                }
                Wake::Control(Some(Control::Reconnect)) => match self.reconnect(Some(device)).await {
                    Some(d) => device = d,
                    None => return,
                },
                Wake::Control(_) => return,
            }
        }
    }

    async fn reconnect(&self, old: Option<Device>) -> Option<Device> {
        if let Some(old) = old {
            old.close(&self.recorder).await;
        }
        match self.register().await {
            Ok((device, took)) => {
                let _ = self.reconnects.send(Ok(took)).await;
                Some(device)
            }
            Err(e) => {
                let _ = self.reconnects.send(Err(e)).await;
                None
            }
        }
    }
}
