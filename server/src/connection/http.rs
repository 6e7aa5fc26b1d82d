//! The HTTP part of a connection: the request head, plain answers, and the WebSocket upgrade.
//!
//! The head is read here rather than inside tungstenite so that plain requests can be answered
//! (`/health`, `/ready`, `/metrics`, 404) and an upgrade without `echo-protocol` refused with a 4xx before
//! any WebSocket exists. What a head asks for is decided by the core's
//! [`iot_ws_core::http_head`] (fuzzed there); this module does the I/O and the SHA-1 of the
//! accept key, which the core leaves to its host.

use std::time::Instant;

use async_tungstenite::tungstenite::handshake::derive_accept_key;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use iot_ws_core::http_head::{self, head_complete, MAX_HEAD_BYTES};
pub use iot_ws_core::http_head::{Answer, SUBPROTOCOL};

use crate::ops::metrics::Metrics;

/// What the request head asks for: the core's [`http_head::Request`] with the accept key derived.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// A WebSocket upgrade offering `echo-protocol`; `leftover` are bytes read past the head.
    Upgrade { accept_key: String, leftover: Vec<u8> },
    /// Anything else, answered and closed.
    Plain(Answer),
}

/// Reads the request head (up to the blank line) by `deadline` (the register timeout after the
/// accept: a head that trickles in counts against it); `None` if the peer closed or was too
/// slow.
pub async fn read_head<S: futures_lite::AsyncRead + Unpin>(stream: &mut S, deadline: Instant) -> Option<Vec<u8>> {
    let read = async {
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        loop {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            if head_complete(&buf).is_some() || buf.len() > MAX_HEAD_BYTES {
                return Some(buf);
            }
        }
    };
    future::or(read, async {
        smol::Timer::at(deadline).await;
        None
    })
    .await
}

/// Decides what a request head asks for (the core's [`http_head::classify`]), deriving the
/// `Sec-WebSocket-Accept` of an upgrade from its key (RFC 6455 section 4.2.2).
pub fn classify(buf: &[u8]) -> Request {
    match http_head::classify(buf) {
        http_head::Request::Upgrade { key, leftover } => {
            Request::Upgrade { accept_key: derive_accept_key(key.as_bytes()), leftover }
        }
        http_head::Request::Plain(answer) => Request::Plain(answer),
    }
}

/// The 101 response that completes an upgrade.
pub fn switching_protocols(accept_key: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept_key}\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
    )
}

/// Writes a plain answer and leaves the connection to be closed.
pub async fn respond<S: futures_lite::AsyncWrite + Unpin>(stream: &mut S, answer: &Answer, metrics: &Metrics) {
    let (status, content_type, body) = match answer {
        Answer::Health => ("200 OK", "text/plain", "ok\n".to_string()),
        Answer::Ready => match metrics.ready() {
            Ok(()) => ("200 OK", "text/plain", "ok\n".to_string()),
            // One line, whatever the database's message held.
            Err(why) => ("503 Service Unavailable", "text/plain", why.replace(char::is_control, " ") + "\n"),
        },
        Answer::Metrics => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
        Answer::NotFound => ("404 Not Found", "text/plain", "not found\n".to_string()),
        Answer::BadUpgrade(why) => ("400 Bad Request", "text/plain", format!("{why}\n")),
        Answer::BadRequest => ("400 Bad Request", "text/plain", "bad request\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    // Flushed and closed: over TLS that sends the last records and close_notify, so the client
    // knows the answer is whole.
    let _ = stream.flush().await;
    let _ = stream.close().await;
}

#[cfg(test)]
mod tests {
    //! What a head asks for is tested in the core; here only what this wrapper adds.
    use super::*;

    #[test]
    fn upgrade_gets_the_rfc_accept_key_and_keeps_the_leftover() {
        let head = "GET /x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                    Sec-WebSocket-Protocol: echo-protocol\r\n\r\n";
        let mut buf = head.as_bytes().to_vec();
        buf.extend_from_slice(&[0x81, 0x80]);
        // The accept key of RFC 6455 section 1.3's example.
        let accept_key = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_string();
        assert_eq!(classify(&buf), Request::Upgrade { accept_key, leftover: vec![0x81, 0x80] });
    }

    #[test]
    fn plain_answers_pass_through() {
        assert_eq!(classify(b"GET /health HTTP/1.1\r\n\r\n"), Request::Plain(Answer::Health));
        let no_protocol = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                            Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: k\r\n\r\n";
        assert!(matches!(classify(no_protocol), Request::Plain(Answer::BadUpgrade(_))));
        assert_eq!(classify(b"GET /health HTTP/1.1\r\n"), Request::Plain(Answer::BadRequest));
    }

    #[test]
    fn ready_is_200_or_503_with_the_reason_on_one_line() {
        let answer = |metrics: &Metrics| {
            let mut out = Vec::new();
            smol::block_on(respond(&mut out, &Answer::Ready, metrics));
            String::from_utf8(out).unwrap()
        };
        let metrics = Metrics::default();
        assert!(answer(&metrics).starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(answer(&metrics).ends_with("\r\n\r\nok\n"));
        metrics.database("bindings").set(Err("database (bindings): unavailable (no\nroute)".into()));
        let text = answer(&metrics);
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\ndatabase (bindings): unavailable (no route)\n"), "{text}");
    }

    #[test]
    fn switching_protocols_names_the_accept_key_and_the_subprotocol() {
        let response = switching_protocols("abc=");
        assert!(response.starts_with("HTTP/1.1 101 "));
        assert!(response.contains("\r\nSec-WebSocket-Accept: abc=\r\n"));
        assert!(response.ends_with("\r\nSec-WebSocket-Protocol: echo-protocol\r\n\r\n"));
    }
}
