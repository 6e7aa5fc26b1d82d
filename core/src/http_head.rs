//! The HTTP request head that opens every connection, and what it asks of the server.
//!
//! The head is decided before any WebSocket exists so that plain requests can be answered
//! (`/health`, `/ready`, `/metrics`, 404) and an upgrade without `echo-protocol` refused with a 400. Its
//! bytes come from anyone who can reach the port, so this hand-written reading has its own fuzz
//! target (`fuzz/fuzz_targets/http_head.rs`): no input makes it panic.
//!
//! Sans-IO: the host reads until [`head_complete`] finds the blank line (or more than
//! [`MAX_HEAD_BYTES`] are buffered), then asks [`classify`]. The `Sec-WebSocket-Accept` of the
//! 101 is a SHA-1, and crypto stays with the host: an upgrade carries the client's key instead.
//!
//! ```
//! use iot_ws_core::http_head::{classify, head_complete, Answer, Request};
//!
//! let buf = b"GET /health?verbose HTTP/1.1\r\nHost: gw\r\n\r\n";
//! assert_eq!(head_complete(buf), Some(buf.len()));
//! assert_eq!(classify(buf), Request::Plain(Answer::Health));
//! assert_eq!(classify(&buf[..20]), Request::Plain(Answer::BadRequest));
//! ```

use alloc::string::String;
use alloc::vec::Vec;

/// Longest request head accepted, blank line included. A client that has sent more without
/// ending its head is refused (400) rather than buffered without bound.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Most header lines a head may have; one more is a 400. Browsers and device libraries send
/// about ten, and a fixed array keeps the parse free of allocation.
pub const MAX_HEADERS: usize = 32;

/// The one subprotocol of this server. Matched case-sensitively: RFC 6455 section 4.1 makes
/// subprotocol tokens case-sensitive, and the platform's clients send it in lower case.
pub const SUBPROTOCOL: &str = "echo-protocol";

/// What a request head asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// A WebSocket upgrade offering [`SUBPROTOCOL`]. The host answers 101 with the accept key it
    /// derives from `key` (RFC 6455 section 4.2.2), then reads `leftover` as the first bytes of
    /// the WebSocket.
    Upgrade {
        /// The client's `Sec-WebSocket-Key`, trimmed; never empty.
        key: String,
        /// The bytes after the head: frames a client sent without waiting for the 101.
        leftover: Vec<u8>,
    },
    /// Anything else: answered, then the connection is closed.
    Plain(Answer),
}

/// A plain HTTP answer; the host writes the status and body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `GET /health`, query ignored: 200, the process serves (liveness).
    Health,
    /// `GET /ready`, query ignored: 200 if the host can do its work (its bindings store is
    /// reachable), else 503 with the reason; the host decides which.
    Ready,
    /// `GET /metrics`, query ignored: 200 with the metrics text.
    Metrics,
    /// Any other request that is not a WebSocket upgrade: 404.
    NotFound,
    /// An upgrade that cannot be accepted: 400 with this reason as the body, so that whoever
    /// writes the client sees which header is wrong.
    BadUpgrade(&'static str),
    /// Not HTTP/1.x, more than [`MAX_HEADERS`] headers, or no head end within
    /// [`MAX_HEAD_BYTES`]: 400.
    BadRequest,
}

/// Where the head in `buf` ends: the index just past its first blank line (CRLF CRLF), or
/// `None` while it is incomplete. The host reads until this is `Some` or its buffer holds more
/// than [`MAX_HEAD_BYTES`]; the bytes from this index on are not part of the head.
pub fn head_complete(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Decides what the head at the start of `buf` asks for; the bytes after the head become an
/// upgrade's `leftover`.
///
/// The head must end at its first CRLF CRLF within [`MAX_HEAD_BYTES`] and parse as HTTP/1.x with
/// at most [`MAX_HEADERS`] headers, or the answer is [`Answer::BadRequest`]. Header names match
/// case-insensitively; a header value that is not UTF-8 counts as absent. Never panics.
pub fn classify(buf: &[u8]) -> Request {
    // Only the first MAX_HEAD_BYTES are searched: a head that ends later is too long, whatever
    // the host's reader happened to buffer past the limit.
    let Some(end) = head_complete(&buf[..buf.len().min(MAX_HEAD_BYTES)]) else {
        return Request::Plain(Answer::BadRequest);
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    // httparse also ends a head at a blank line of bare LFs. One that ends before the first
    // CRLF CRLF would leave bytes that are neither head nor leftover: refused, not guessed at.
    if req.parse(&buf[..end]) != Ok(httparse::Status::Complete(end)) {
        return Request::Plain(Answer::BadRequest);
    }
    let headers = Headers(req.headers);
    if !headers.items("upgrade").any(|t| t.eq_ignore_ascii_case("websocket")) {
        return Request::Plain(route(req.method, req.path));
    }
    match upgrade_key(req.method, &headers) {
        Ok(key) => Request::Upgrade { key: key.into(), leftover: buf[end..].to_vec() },
        Err(why) => Request::Plain(Answer::BadUpgrade(why)),
    }
}

/// The answer to a request that is not an upgrade.
fn route(method: Option<&str>, path: Option<&str>) -> Answer {
    // The query is ignored: probes and scrapers add their own parameters.
    let path = path.map(|p| p.split_once('?').map_or(p, |(p, _)| p));
    match (method, path) {
        (Some("GET"), Some("/health")) => Answer::Health,
        (Some("GET"), Some("/ready")) => Answer::Ready,
        (Some("GET"), Some("/metrics")) => Answer::Metrics,
        _ => Answer::NotFound,
    }
}

/// The key of an upgrade request, or why the upgrade is refused (RFC 6455 section 4.2.1).
fn upgrade_key<'b>(method: Option<&str>, headers: &Headers<'_, 'b>) -> Result<&'b str, &'static str> {
    if method != Some("GET") || !headers.items("connection").any(|t| t.eq_ignore_ascii_case("upgrade")) {
        return Err("not a WebSocket upgrade request");
    }
    if !headers.values("sec-websocket-version").any(|v| v.trim() == "13") {
        return Err("Sec-WebSocket-Version must be 13");
    }
    // The first key decides: a later one does not stand in for an empty first.
    let key = headers.values("sec-websocket-key").next().map(str::trim).filter(|k| !k.is_empty());
    let Some(key) = key else { return Err("Sec-WebSocket-Key is missing") };
    if !headers.items("sec-websocket-protocol").any(|t| t == SUBPROTOCOL) {
        return Err("the subprotocol echo-protocol is required");
    }
    Ok(key)
}

/// The headers of a parsed head, looked up by name as HTTP wants: case-insensitively.
struct Headers<'h, 'b>(&'h [httparse::Header<'b>]);

impl<'b> Headers<'_, 'b> {
    /// The values of every `name` header, skipping those that are not UTF-8: no header this
    /// server reads may carry other bytes, so such a value is as good as absent.
    fn values(&self, name: &'static str) -> impl Iterator<Item = &'b str> + '_ {
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| core::str::from_utf8(h.value).ok())
    }

    /// The trimmed items of every `name` header read as a comma-separated list (RFC 9110
    /// section 5.6.1), across repeated headers.
    fn items(&self, name: &'static str) -> impl Iterator<Item = &'b str> + '_ {
        self.values(name).flat_map(|v| v.split(',')).map(str::trim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::ToString;
    use alloc::vec;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    /// A valid upgrade to /x, with `extra` header lines before the blank line.
    fn upgrade(extra: &str) -> Vec<u8> {
        format!(
            "GET /x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    fn accepted() -> Request {
        Request::Upgrade { key: KEY.to_string(), leftover: vec![] }
    }

    fn plain(answer: Answer) -> Request {
        Request::Plain(answer)
    }

    /// A head of exactly `len` bytes asking for /health, padded with one long header.
    fn health_head_of(len: usize) -> Vec<u8> {
        let start = "GET /health HTTP/1.1\r\nX-Pad: ";
        let pad = len - start.len() - "\r\n\r\n".len();
        format!("{start}{}\r\n\r\n", "a".repeat(pad)).into_bytes()
    }

    /// A GET /health with `n` header lines.
    fn with_headers(n: usize) -> Vec<u8> {
        let lines: String = (0..n).map(|i| format!("X-{i}: v\r\n")).collect();
        format!("GET /health HTTP/1.1\r\n{lines}\r\n").into_bytes()
    }

    #[test]
    fn each_head_gets_its_answer() {
        let bad_upgrade = |why| plain(Answer::BadUpgrade(why));
        let not_upgrade = bad_upgrade("not a WebSocket upgrade request");
        let version = bad_upgrade("Sec-WebSocket-Version must be 13");
        let no_key = bad_upgrade("Sec-WebSocket-Key is missing");
        let no_protocol = bad_upgrade("the subprotocol echo-protocol is required");
        let get = |line: &str| format!("{line}\r\nHost: h\r\n\r\n").into_bytes();
        let ws = |lines: &str| format!("GET /x HTTP/1.1\r\nHost: h\r\n{lines}\r\n").into_bytes();
        let any_case = format!(
            "upgrade: h2c, WebSocket\r\nCONNECTION: Upgrade\r\nsec-websocket-version: 13\r\n\
             sec-websocket-key: \t {KEY} \r\nsec-websocket-protocol:echo-protocol\r\n"
        );
        let cases: Vec<(&str, Vec<u8>, Request)> = vec![
            ("health", get("GET /health HTTP/1.1"), plain(Answer::Health)),
            ("health, query ignored", get("GET /health?probe=1 HTTP/1.1"), plain(Answer::Health)),
            ("health over HTTP/1.0, no headers", b"GET /health HTTP/1.0\r\n\r\n".to_vec(), plain(Answer::Health)),
            ("ready", get("GET /ready HTTP/1.1"), plain(Answer::Ready)),
            ("ready, query ignored", get("GET /ready?probe=1 HTTP/1.1"), plain(Answer::Ready)),
            ("ready with a slash", get("GET /ready/ HTTP/1.1"), plain(Answer::NotFound)),
            ("HEAD ready", get("HEAD /ready HTTP/1.1"), plain(Answer::NotFound)),
            ("metrics, query ignored", get("GET /metrics?x=1 HTTP/1.1"), plain(Answer::Metrics)),
            ("root", get("GET / HTTP/1.1"), plain(Answer::NotFound)),
            ("health with a slash", get("GET /health/ HTTP/1.1"), plain(Answer::NotFound)),
            ("health with a fragment", get("GET /health#x HTTP/1.1"), plain(Answer::NotFound)),
            ("absolute form", get("GET http://h/health HTTP/1.1"), plain(Answer::NotFound)),
            ("POST health", get("POST /health HTTP/1.1"), plain(Answer::NotFound)),
            ("methods are case-sensitive", get("get /health HTTP/1.1"), plain(Answer::NotFound)),
            ("upgrade to h2c is not ours", ws("Upgrade: h2c\r\nConnection: Upgrade\r\n"), plain(Answer::NotFound)),
            ("non-UTF-8 upgrade is absent", ff(ws("Upgrade: websocket@\r\n")), plain(Answer::NotFound)),
            ("upgrade by POST", b"POST /x HTTP/1.1\r\nUpgrade: websocket\r\n\r\n".to_vec(), not_upgrade.clone()),
            ("no Connection: upgrade", ws("Upgrade: websocket\r\nConnection: keep-alive\r\n"), not_upgrade),
            ("no version", ws("Upgrade: websocket\r\nConnection: Upgrade\r\n"), version.clone()),
            ("version 8", ws("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\n"), version),
            (
                "no key",
                ws("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"),
                no_key.clone(),
            ),
            ("blank key", upgrade_with_key(" \t"), no_key.clone()),
            ("non-UTF-8 key", ff(upgrade_with_key("k@ey")), no_key),
            ("no subprotocol", upgrade(""), no_protocol.clone()),
            ("subprotocol case", upgrade("Sec-WebSocket-Protocol: Echo-Protocol\r\n"), no_protocol.clone()),
            ("subprotocol prefix", upgrade("Sec-WebSocket-Protocol: echo-protocol-2\r\n"), no_protocol),
            ("offered among others", upgrade("Sec-WebSocket-Protocol: chat, echo-protocol\r\n"), accepted()),
            (
                "offered in a second header",
                upgrade("Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: echo-protocol\r\n"),
                accepted(),
            ),
            ("names and tokens in any case, lists, key trimmed", ws(&any_case), accepted()),
            ("empty", Vec::new(), plain(Answer::BadRequest)),
            ("TLS hello", b"\x16\x03\x01garbage\r\n\r\n".to_vec(), plain(Answer::BadRequest)),
            ("incomplete", b"GET / HTTP/1.1\r\n".to_vec(), plain(Answer::BadRequest)),
            ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), plain(Answer::BadRequest)),
            ("non-UTF-8 path", ff(get("GET /h@ealth HTTP/1.1")), plain(Answer::BadRequest)),
            (
                "bare LF head",
                b"GET /health HTTP/1.1\nHost: h\n\nGET / HTTP/1.1\r\n\r\n".to_vec(),
                plain(Answer::BadRequest),
            ),
            ("32 headers", with_headers(MAX_HEADERS), plain(Answer::Health)),
            ("33 headers", with_headers(MAX_HEADERS + 1), plain(Answer::BadRequest)),
            // What browsers send with a few large cookies fits; the limit is 8 KiB, as nginx's.
            ("a 6 KiB head", health_head_of(6 * 1024), plain(Answer::Health)),
            ("head of the longest length", health_head_of(MAX_HEAD_BYTES), plain(Answer::Health)),
            ("a 9 KiB head", health_head_of(9 * 1024), plain(Answer::BadRequest)),
            ("head one byte too long", health_head_of(MAX_HEAD_BYTES + 1), plain(Answer::BadRequest)),
        ];
        for (name, buf, expected) in cases {
            assert_eq!(classify(&buf), expected, "{name}");
        }
    }

    /// `buf` with every `@` made a byte that is not UTF-8.
    fn ff(mut buf: Vec<u8>) -> Vec<u8> {
        buf.iter_mut().filter(|b| **b == b'@').for_each(|b| *b = 0xff);
        buf
    }

    /// A valid upgrade whose key header's value is `key`.
    fn upgrade_with_key(key: &str) -> Vec<u8> {
        let mut buf = upgrade("Sec-WebSocket-Protocol: echo-protocol\r\n");
        let at = buf.windows(KEY.len()).position(|w| w == KEY.as_bytes()).expect("the key");
        buf.splice(at..at + KEY.len(), key.bytes());
        buf
    }

    #[test]
    fn bytes_after_the_head_are_the_leftover() {
        let mut buf = upgrade("Sec-WebSocket-Protocol: echo-protocol\r\n");
        // A masked text frame sent before the 101, then more than a head's worth of bytes.
        buf.extend_from_slice(&[0x81, 0x80, b'\r', b'\n', b'\r', b'\n']);
        buf.extend(core::iter::repeat_n(7, 2 * MAX_HEAD_BYTES));
        let head = head_complete(&buf).expect("a complete head");
        assert_eq!(classify(&buf), Request::Upgrade { key: KEY.into(), leftover: buf[head..].to_vec() });
    }

    #[test]
    fn the_first_key_decides() {
        let buf = upgrade("Sec-WebSocket-Key: other\r\nSec-WebSocket-Protocol: echo-protocol\r\n");
        assert_eq!(classify(&buf), accepted());
    }

    #[test]
    fn head_complete_is_just_past_the_first_blank_line() {
        assert_eq!(head_complete(b""), None);
        assert_eq!(head_complete(b"GET / HTTP/1.1\r\n\r"), None);
        assert_eq!(head_complete(b"\r\n\r\n"), Some(4));
        assert_eq!(head_complete(b"GET / HTTP/1.1\r\n\r\nxy\r\n\r\n"), Some(18));
        assert_eq!(head_complete(b"GET / HTTP/1.1\n\n"), None);
    }
}
