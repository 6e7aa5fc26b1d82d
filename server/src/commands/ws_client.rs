//! The client end of a WebSocket, for the `device` and `actuate` subcommands: a `ws://` or
//! `wss://` URL checked once at startup (with the CAs a `wss://` one trusts), and a connection
//! that offers `echo-protocol`, bounded in time.
//!
//! The upgrade request is written and its answer read here, over the same `Async<TcpStream>`
//! the server uses, rather than with tungstenite's client handshake: that one brings `http`'s
//! URI and request types, which cost the ARM gateway binaries more than their 2 MiB allow.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use async_tungstenite::tungstenite::handshake::derive_accept_key;
use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use async_tungstenite::WebSocketStream;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use futures_rustls::TlsConnector;
use rustls_pki_types::ServerName;
use smol::Async;

use crate::config::ConfigError;
use crate::tls::Transport;

/// One client connection.
pub type ClientWs = WebSocketStream<Transport>;

/// How long a TCP connect plus the WebSocket handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest message a client accepts: the server's own default limit, so that anything the
/// server may forward fits, while a hostile server cannot make the client buffer without end.
const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// The longest response head read during the handshake.
const MAX_HEAD_BYTES: usize = 16 << 10;

/// A server address given as `ws://host[:port][/path]` or `wss://...`.
#[derive(Clone)]
pub struct ServerUrl {
    text: String,
    /// As written, for the `Host` header.
    authority: String,
    host: String,
    port: u16,
    path: String,
    /// For `wss://`: the CAs the server's certificate must chain to.
    tls: Option<TlsConnector>,
}

impl ServerUrl {
    /// Checks `text` once, so that a typo is a usage error (status 2) before anything connects;
    /// a `wss://` URL trusts the CAs in `ca` (PEM), else the system's.
    pub fn parse(text: &str, ca: Option<&Path>) -> Result<ServerUrl, ConfigError> {
        let bad = |why: &str| ConfigError(format!("--url {text:?}: {why}"));
        let (rest, default_port) = match (text.strip_prefix("ws://"), text.strip_prefix("wss://")) {
            (Some(rest), _) => (rest, 80),
            (_, Some(rest)) => (rest, 443),
            _ => return Err(bad("expected ws://HOST:PORT/ or wss://HOST:PORT/")),
        };
        // Whatever goes into the request line and headers must not be able to end them.
        if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("spaces and control characters are not allowed"));
        }
        let rest = rest.split('#').next().unwrap_or("");
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
        if authority.contains('@') {
            return Err(bad("user information in the URL is not supported"));
        }
        let (host, port) = match authority.strip_prefix('[') {
            // An IPv6 literal: [::1]:5000
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
                (host, after)
            }
            None => match authority.find(':') {
                Some(i) => authority.split_at(i),
                None => (authority, ""),
            },
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            "" => default_port,
            port => port.strip_prefix(':').and_then(|p| p.parse::<u16>().ok()).ok_or_else(|| bad("bad port"))?,
        };
        if port == 0 {
            return Err(bad("port 0 cannot be connected to"));
        }
        let tls = match (default_port, ca) {
            (443, ca) => Some(crate::tls::connector("--ca", ca).map_err(ConfigError)?),
            (_, Some(_)) => return Err(bad("--ca is for wss:// URLs")),
            (_, None) => None,
        };
        Ok(ServerUrl { text: text.to_string(), authority: authority.into(), host: host.into(), port, path, tls })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Opens a WebSocket to `url` offering `echo-protocol`; fails after [`CONNECT_TIMEOUT`].
pub async fn connect(url: &ServerUrl) -> Result<ClientWs, String> {
    let attempt = async {
        let mut stream = match &url.tls {
            None => Transport::Plain(tcp_connect(url).await?),
            Some(connector) => {
                let name = ServerName::try_from(url.host.clone()).map_err(|e| format!("{}: {e}", url.host))?;
                let tls = connector.connect(name, tcp_connect(url).await?).await;
                Transport::TlsClient(Box::new(tls.map_err(|e| format!("TLS with {}: {e}", url.host))?))
            }
        };
        let leftover = handshake(&mut stream, url).await?;
        let config = WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE_BYTES));
        Ok(WebSocketStream::from_partially_read(stream, leftover, Role::Client, Some(config)).await)
    };
    let timeout = async {
        smol::Timer::after(CONNECT_TIMEOUT).await;
        Err(format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()))
    };
    future::or(attempt, timeout).await
}

/// The first address of the host that takes the connection. Name resolution blocks this
/// client's only thread for its while, when there is nothing else for it to do.
async fn tcp_connect(url: &ServerUrl) -> Result<Async<TcpStream>, String> {
    let addrs: Vec<SocketAddr> =
        (url.host.as_str(), url.port).to_socket_addrs().map_err(|e| format!("{}: {e}", url.host))?.collect();
    let mut last = format!("{}: no address", url.host);
    for addr in addrs {
        match Async::<TcpStream>::connect(addr).await {
            Ok(stream) => {
                let _ = stream.get_ref().set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(last)
}

/// Sends the upgrade request and reads the answer; returns the bytes read past its head.
async fn handshake(stream: &mut Transport, url: &ServerUrl) -> Result<Vec<u8>, String> {
    let mut nonce = [0u8; 16];
    getrandom::getrandom(&mut nonce).map_err(|e| format!("no random source: {e}"))?;
    let key = STANDARD.encode(nonce);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: echo-protocol\r\n\r\n",
        url.path, url.authority
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the server closed the connection during the handshake".into());
        }
        head.extend_from_slice(&buf[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&head) {
            Ok(httparse::Status::Complete(len)) => {
                check_upgrade(&response, &key)?;
                return Ok(head.split_off(len));
            }
            Ok(httparse::Status::Partial) if head.len() < MAX_HEAD_BYTES => {}
            Ok(httparse::Status::Partial) => return Err("the server's answer has an oversized head".into()),
            Err(e) => return Err(format!("the server's answer is not HTTP: {e}")),
        }
    }
}

/// A 101 that names this request's key and our subprotocol.
fn check_upgrade(response: &httparse::Response<'_, '_>, key: &str) -> Result<(), String> {
    let header = |name: &str| {
        response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| String::from_utf8_lossy(h.value))
    };
    let code = response.code.unwrap_or(0);
    if code != 101 {
        return Err(format!("the server answered HTTP {code}, not a WebSocket upgrade"));
    }
    if !header("Upgrade").is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket")) {
        return Err("the server's 101 is not an upgrade to WebSocket".into());
    }
    if header("Sec-WebSocket-Accept").as_deref().map(str::trim) != Some(derive_accept_key(key.as_bytes()).as_str()) {
        return Err("the server's Sec-WebSocket-Accept does not match the key".into());
    }
    if header("Sec-WebSocket-Protocol").as_deref().map(str::trim) != Some("echo-protocol") {
        return Err("the server did not accept the echo-protocol subprotocol".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_at_startup() {
        let url = ServerUrl::parse("ws://127.0.0.1:5000", None).unwrap();
        assert_eq!((url.host.as_str(), url.port, url.path.as_str()), ("127.0.0.1", 5000, "/"));
        assert!(url.tls.is_none());
        let url = ServerUrl::parse("ws://[::1]:7/x?y#z", None).unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str(), url.authority.as_str()),
            ("::1", 7, "/x?y", "[::1]:7")
        );
        let url = ServerUrl::parse("ws://gateway?a", None).unwrap();
        assert_eq!((url.port, url.path.as_str()), (80, "/?a"));
        let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/src/tls/testdata/localhost.crt");
        let url = ServerUrl::parse("wss://gateway/x", Some(Path::new(ca))).unwrap();
        assert_eq!((url.port, url.path.as_str(), url.tls.is_some()), (443, "/x", true));
        let url = ServerUrl::parse("wss://gateway:8443", Some(Path::new(ca))).unwrap();
        assert_eq!(url.port, 8443);
        assert!(ServerUrl::parse("ws://gateway", Some(Path::new(ca))).is_err(), "--ca without TLS");
        assert!(ServerUrl::parse("wss://gateway", Some(Path::new("/nonexistent"))).is_err());
        for bad in [
            "http://h:1/",
            "ws://",
            "ws://:5/",
            "127.0.0.1:5000",
            "ws://h:99999/",
            "ws://h:0/",
            "ws://u@h/",
            "ws://h/a b",
            "ws://h/\r\nX: y",
            "ws://[::1/",
        ] {
            assert!(ServerUrl::parse(bad, None).is_err(), "{bad}");
        }
    }
}
