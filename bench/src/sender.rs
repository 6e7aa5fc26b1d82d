//! The dashboard's side: a connection that sends actuations, and counts acks if it asks for them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use async_tungstenite::tungstenite::Message;
use async_tungstenite::{WebSocketReceiver, WebSocketSender};
use futures_lite::StreamExt;
use smol::Executor;

use crate::net::Target;
use crate::tls::Stream;

/// Ack replies by content.
#[derive(Default)]
pub struct Acks {
    pub delivered: AtomicU64,
    pub held: AtomicU64,
    pub forwarded: AtomicU64,
    pub not_connected: AtomicU64,
    pub other: AtomicU64,
    /// The server closed the sender's connection.
    pub closed: AtomicU64,
}

impl Acks {
    pub fn total(&self) -> u64 {
        [&self.delivered, &self.held, &self.forwarded, &self.not_connected, &self.other]
            .iter()
            .map(|c| c.load(Relaxed))
            .sum()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "delivered": self.delivered.load(Relaxed),
            "held": self.held.load(Relaxed),
            "forwarded": self.forwarded.load(Relaxed),
            "not_connected": self.not_connected.load(Relaxed),
            "other": self.other.load(Relaxed),
        })
    }

    fn count(&self, text: &str) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else { return };
        let counter = match (v["code"].as_i64(), v["content"].as_str()) {
            (Some(200), Some("Delivered")) => &self.delivered,
            (Some(202), Some("Held")) => &self.held,
            (Some(202), Some("Forwarded")) => &self.forwarded,
            (Some(500), _) => &self.not_connected,
            _ => &self.other,
        };
        counter.fetch_add(1, Relaxed);
    }
}

/// Who may actuate.
#[derive(Clone)]
pub struct Actuator {
    pub username: String,
    pub password: String,
}

impl Actuator {
    /// An actuation message up to its body: `{"type":"actuation","ack":…,"credentials":{…},"body":`.
    pub fn message_head(&self, ack: bool) -> String {
        let credentials = serde_json::json!({ "username": self.username, "password": self.password });
        format!(r#"{{"type":"actuation","ack":{ack},"credentials":{credentials},"body":"#)
    }
}

/// One actuation connection.
pub struct Dashboard {
    tx: WebSocketSender<Stream>,
    prefix: String,
    pub acks: Arc<Acks>,
}

impl Dashboard {
    /// Connects as client number `index`; a task reads (acks, pings) until the connection ends.
    pub async fn connect(
        ex: &Executor<'static>,
        target: &Target,
        index: usize,
        actuator: &Actuator,
        ack: bool,
    ) -> std::io::Result<Dashboard> {
        let ws = target.connect(index).await?;
        let (tx, rx) = ws.split();
        let acks = Arc::new(Acks::default());
        ex.spawn(read_acks(rx, acks.clone())).detach();
        Ok(Dashboard { tx, prefix: actuator.message_head(ack), acks })
    }

    /// Sends actuation number `seq` for `device`, stamped with `t` (the recorder's clock).
    pub async fn send(&mut self, device: &str, seq: u64, t: u64) -> bool {
        let text = format!("{}{}}}", self.prefix, command_body(device, seq, t));
        self.tx.send(Message::text(text)).await.is_ok()
    }

    pub async fn close(mut self) {
        let _ = self.tx.close(None).await;
    }
}

/// The body of actuation number `seq` for `device`: what the server forwards to the device.
pub fn command_body(device: &str, seq: u64, t: u64) -> String {
    format!(r#"{{"type":"command","content":{{"deviceId":"{device}","actuation":"LED on","seq":{seq},"t":{t}}}}}"#)
}

async fn read_acks(mut rx: WebSocketReceiver<Stream>, acks: Arc<Acks>) {
    while let Some(Ok(message)) = rx.next().await {
        if let Message::Text(text) = message {
            acks.count(&text);
        }
    }
    acks.closed.fetch_add(1, Relaxed);
}
