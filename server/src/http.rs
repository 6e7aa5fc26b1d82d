//! The HTTP part of a connection: the request head, plain answers, and the WebSocket upgrade.
//!
//! The head is read here rather than inside tungstenite so that plain requests can be answered
//! (`/health`, `/metrics`, 404) and an upgrade without `echo-protocol` refused with a 4xx before
//! any WebSocket exists.

use std::time::Duration;

use async_tungstenite::tungstenite::handshake::derive_accept_key;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};

/// Longest request head accepted.
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// How long a client may take to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The one subprotocol of this server.
pub const SUBPROTOCOL: &str = "echo-protocol";

/// What the request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// A WebSocket upgrade offering `echo-protocol`; `leftover` are bytes read past the head.
    Upgrade { accept_key: String, leftover: Vec<u8> },
    /// Anything else, answered and closed.
    Plain(Answer),
}

/// A plain HTTP answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Health,
    Metrics,
    NotFound,
    /// An upgrade that cannot be accepted (no `echo-protocol`, no key, wrong version).
    BadUpgrade(&'static str),
    /// Not HTTP, or a head too large.
    BadRequest,
}

/// Reads the request head (up to the blank line) within [`HEAD_TIMEOUT`]; `None` if the peer
/// closed or was too slow.
pub async fn read_head<S: futures_lite::AsyncRead + Unpin>(stream: &mut S) -> Option<Vec<u8>> {
    let read = async {
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        loop {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            if head_end(&buf).is_some() || buf.len() > MAX_HEAD_BYTES {
                return Some(buf);
            }
        }
    };
    future::or(read, async {
        smol::Timer::after(HEAD_TIMEOUT).await;
        None
    })
    .await
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Decides what a request head asks for.
pub fn classify(buf: &[u8]) -> Request {
    let Some(end) = head_end(buf) else { return Request::Plain(Answer::BadRequest) };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = req.parse(&buf[..end]) else {
        return Request::Plain(Answer::BadRequest);
    };
    let headers: &[httparse::Header<'_>] = req.headers;
    let header = |name: &'static str| {
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
    };
    let has_token = |name: &'static str, token: &str| {
        header(name).flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token("upgrade", "websocket") {
        let path = req.path.unwrap_or("/").split('?').next().unwrap_or("/");
        return Request::Plain(match (req.method, path) {
            (Some("GET"), "/health") => Answer::Health,
            (Some("GET"), "/metrics") => Answer::Metrics,
            _ => Answer::NotFound,
        });
    }
    if req.method != Some("GET") || !has_token("connection", "upgrade") {
        return Request::Plain(Answer::BadUpgrade("not a WebSocket upgrade request"));
    }
    if !header("sec-websocket-version").any(|v| v.trim() == "13") {
        return Request::Plain(Answer::BadUpgrade("Sec-WebSocket-Version must be 13"));
    }
    let Some(key) = header("sec-websocket-key").next().map(str::trim).filter(|k| !k.is_empty()) else {
        return Request::Plain(Answer::BadUpgrade("Sec-WebSocket-Key is missing"));
    };
    // Subprotocol tokens are case-sensitive (RFC 6455 section 4.1).
    if !header("sec-websocket-protocol").flat_map(|v| v.split(',')).any(|t| t.trim() == SUBPROTOCOL) {
        return Request::Plain(Answer::BadUpgrade("the subprotocol echo-protocol is required"));
    }
    Request::Upgrade { accept_key: derive_accept_key(key.as_bytes()), leftover: buf[end..].to_vec() }
}

/// The 101 response that completes an upgrade.
pub fn switching_protocols(accept_key: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept_key}\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
    )
}

/// Writes a plain answer and leaves the connection to be closed.
pub async fn respond<S: futures_lite::AsyncWrite + Unpin>(
    stream: &mut S,
    answer: &Answer,
    metrics: impl FnOnce() -> String,
) {
    let (status, content_type, body) = match answer {
        Answer::Health => ("200 OK", "text/plain", "ok\n".to_string()),
        Answer::Metrics => ("200 OK", "text/plain; version=0.0.4", metrics()),
        Answer::NotFound => ("404 Not Found", "text/plain", "not found\n".to_string()),
        Answer::BadUpgrade(why) => ("400 Bad Request", "text/plain", format!("{why}\n")),
        Answer::BadRequest => ("400 Bad Request", "text/plain", "bad request\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(extra: &str) -> Vec<u8> {
        format!("GET /x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n").into_bytes()
    }

    #[test]
    fn upgrade_offering_echo_protocol_is_accepted_with_the_rfc_accept_key() {
        let req = classify(&upgrade("Sec-WebSocket-Protocol: chat, echo-protocol\r\n"));
        assert_eq!(req, Request::Upgrade { accept_key: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into(), leftover: vec![] });
    }

    #[test]
    fn upgrade_without_echo_protocol_is_refused() {
        assert!(matches!(classify(&upgrade("")), Request::Plain(Answer::BadUpgrade(_))));
        assert!(matches!(
            classify(&upgrade("Sec-WebSocket-Protocol: Echo-Protocol\r\n")),
            Request::Plain(Answer::BadUpgrade(_))
        ));
    }

    #[test]
    fn bytes_after_the_head_are_kept() {
        let mut buf = upgrade("Sec-WebSocket-Protocol: echo-protocol\r\n");
        buf.extend_from_slice(&[0x81, 0x80]);
        assert!(matches!(classify(&buf), Request::Upgrade { leftover, .. } if leftover == [0x81, 0x80]));
    }

    #[test]
    fn plain_requests_are_routed() {
        let get = |path: &str| classify(format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        assert_eq!(get("/health"), Request::Plain(Answer::Health));
        assert_eq!(get("/metrics?x=1"), Request::Plain(Answer::Metrics));
        assert_eq!(get("/"), Request::Plain(Answer::NotFound));
        assert_eq!(classify(b"\x16\x03\x01garbage\r\n\r\n"), Request::Plain(Answer::BadRequest));
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Request::Plain(Answer::BadRequest));
    }
}
