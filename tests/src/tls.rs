//! Clients of a TLS listener: wss:// ([`Client::connect_tls`]) and https:// ([`https_raw`]),
//! trusting only the CA they are given, as a device provisioned with its CA would.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::json;
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::WebSocketConfig;

use crate::client::{Client, Wire};
use crate::WAIT;

pub type TlsWire = StreamOwned<ClientConnection, TcpStream>;

impl Wire for TlsWire {
    fn tcp(&self) -> &TcpStream {
        self.get_ref()
    }
}

/// A client configuration that trusts `ca_pem` only.
pub fn trusting(ca_pem: &str) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A TLS connection to `addr` checking the server's certificate for `name`; the handshake
/// happens on first use.
pub fn tls_wire(addr: SocketAddr, name: &str, ca_pem: &str) -> std::io::Result<TlsWire> {
    tls_over(TcpStream::connect_timeout(&addr, WAIT)?, name, ca_pem)
}

/// TLS over a TCP connection already made (e.g. with a small receive buffer).
pub fn tls_over(tcp: TcpStream, name: &str, ca_pem: &str) -> std::io::Result<TlsWire> {
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(WAIT))?;
    tcp.set_write_timeout(Some(WAIT))?;
    let name = ServerName::try_from(name.to_string()).map_err(std::io::Error::other)?;
    let connection = ClientConnection::new(trusting(ca_pem), name).map_err(std::io::Error::other)?;
    Ok(StreamOwned::new(connection, tcp))
}

impl Client<TlsWire> {
    /// Connects over wss:// to `addr`, expecting a certificate for `name` from `ca_pem`, and
    /// completes the WebSocket handshake offering `echo-protocol`.
    pub fn connect_tls(addr: SocketAddr, name: &str, ca_pem: &str) -> Result<Self, tungstenite::Error> {
        Client::handshake_tls(tls_wire(addr, name, ca_pem)?, name)
    }

    /// Completes the WebSocket handshake over `wire`, offering `echo-protocol`.
    pub fn handshake_tls(wire: TlsWire, name: &str) -> Result<Self, tungstenite::Error> {
        let addr = wire.get_ref().peer_addr()?;
        let mut request = format!("wss://{name}:{}/", addr.port()).into_client_request()?;
        request.headers_mut().insert("Sec-WebSocket-Protocol", "echo-protocol".parse().expect("header value"));
        let config = WebSocketConfig::default().max_message_size(None).max_frame_size(None);
        let (ws, response) =
            tungstenite::client::client_with_config(request, wire, Some(config)).map_err(|e| match e {
                tungstenite::HandshakeError::Failure(e) => e,
                tungstenite::HandshakeError::Interrupted(_) => {
                    tungstenite::Error::Io(std::io::ErrorKind::TimedOut.into())
                }
            })?;
        Ok(Client { ws, response })
    }

    /// Connects over wss:// and registers `device` with `token`; panics unless the answer is 200.
    pub fn registered_tls(addr: SocketAddr, name: &str, ca_pem: &str, device: &str, token: &str) -> Self {
        let mut client = Client::connect_tls(addr, name, ca_pem).unwrap_or_else(|e| panic!("wss to {addr}: {e}"));
        let reply = client.register(device, token);
        assert_eq!(reply, json!({"code": 200, "content": "Subscribed"}), "registration of {device} over TLS");
        client
    }
}

/// Writes `request` over TLS (certificate for `name` from `ca_pem`) and reads the whole answer:
/// (status, body). An error if the TLS handshake fails.
pub fn https_raw(addr: SocketAddr, name: &str, ca_pem: &str, request: &[u8]) -> std::io::Result<(u16, String)> {
    let mut wire = tls_wire(addr, name, ca_pem)?;
    wire.write_all(request)?;
    let mut answer = Vec::new();
    match wire.read_to_end(&mut answer) {
        Ok(_) => {}
        // A server that closes without close_notify after a complete answer is still an answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
        Err(e) => return Err(e),
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}
