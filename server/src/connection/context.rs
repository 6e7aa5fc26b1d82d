//! What every connection task shares: settings, the verifier, the hub's queue, the clock, and
//! the stop signal.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use async_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::live_config::LiveSessionConfig;
use super::stop::Stop;
use crate::auth::TokenVerifier;
use crate::clock::Clock;
use crate::hub::queue::HubSender;
use crate::hub::HubRequest;
use crate::ops::metrics::Metrics;

/// What every connection task shares.
pub struct Ctx {
    /// The sessions' settings; SIGHUP replaces the actuator's credentials in them.
    pub session_config: LiveSessionConfig,
    /// A connection's unsent output at most (`--send-queue-bytes`).
    pub send_queue_bytes: usize,
    pub verifier: TokenVerifier,
    pub hub: HubSender<HubRequest>,
    pub metrics: Arc<Metrics>,
    /// Whether this port answers `GET /metrics` (not when `--metrics-listen` is set).
    pub metrics_here: bool,
    pub ws_config: WebSocketConfig,
    pub next_session: AtomicU64,
    /// Set when the server stops: every connection wakes up and closes.
    pub stop: Stop,
    pub clock: Clock,
    /// The listener's TLS (wss://), when it has a certificate.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

/// Buffers sized for the protocol's small messages, not tungstenite's 128 KiB default: an idle
/// connection should cost a few KiB.
pub fn ws_config(max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        // tungstenite keeps its read buffer for the connection's life (grown to the longest
        // message read): small, since the socket itself is read 16 KiB at a time (cork.rs).
        .read_buffer_size(128)
        .write_buffer_size(0)
        .max_write_buffer_size(max_message_bytes.saturating_mul(4).max(64 * 1024))
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
}
