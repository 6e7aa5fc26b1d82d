//! A blocking WebSocket client (tungstenite over `std::net::TcpStream`) that always offers the
//! `echo-protocol` subprotocol, plus raw-frame and raw-HTTP helpers for hostile input.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use socket2::{Domain, Socket, Type};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::Response;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use crate::actuation::delivery;
use crate::server::{Server, ACTUATOR_PASSWORD, ACTUATOR_USER};
use crate::tokens::Keys;
use crate::WAIT;

/// The configured actuator credentials of every test server: (username, password).
pub const ACTUATOR: (&str, &str) = (ACTUATOR_USER, ACTUATOR_PASSWORD);

/// What the server did next, as seen by the client.
#[derive(Debug, PartialEq)]
pub enum Event {
    Text(String),
    Binary(Vec<u8>),
    /// A close frame, with its code if it had one.
    Close(Option<u16>),
    /// The TCP connection ended (or failed) without a close frame.
    Gone(String),
    /// Nothing within the timeout.
    Timeout,
}

/// One WebSocket connection, over TCP (`ws://`) or TLS over TCP (`wss://`, see tls.rs).
pub struct Client<S = TcpStream> {
    pub(crate) ws: WebSocket<S>,
    pub response: Response,
}

/// What a client's connection runs over: a byte stream with a TCP socket under it.
pub trait Wire: Read + Write {
    fn tcp(&self) -> &TcpStream;
}

impl Wire for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Client {
    /// Connects and completes the handshake, offering `echo-protocol`; panics on failure.
    pub fn connect(addr: SocketAddr) -> Client {
        Client::connect_offering(addr, Some("echo-protocol")).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    /// Connects offering `protocol` (or no `Sec-WebSocket-Protocol` at all).
    pub fn connect_offering(addr: SocketAddr, protocol: Option<&str>) -> Result<Client, tungstenite::Error> {
        let stream = TcpStream::connect_timeout(&addr, WAIT)?;
        Client::handshake_offering(addr, stream, protocol)
    }

    /// Completes the WebSocket handshake on an already connected `stream`, offering `protocol`.
    pub fn handshake_offering(
        addr: SocketAddr,
        stream: TcpStream,
        protocol: Option<&str>,
    ) -> Result<Client, tungstenite::Error> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(WAIT))?;
        stream.set_write_timeout(Some(WAIT))?;
        let mut request = format!("ws://{addr}/").into_client_request()?;
        if let Some(protocol) = protocol {
            request.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse().expect("header value"));
        }
        let config = WebSocketConfig::default().max_message_size(None).max_frame_size(None);
        let (ws, response) =
            tungstenite::client::client_with_config(request, stream, Some(config)).map_err(|e| match e {
                tungstenite::HandshakeError::Failure(e) => e,
                tungstenite::HandshakeError::Interrupted(_) => tungstenite::Error::Io(ErrorKind::TimedOut.into()),
            })?;
        Ok(Client { ws, response })
    }

    /// Connects to `server` and registers `device` with a valid token of the shared keys.
    pub fn registered_on(server: &Server, device: &str) -> Client {
        Client::registered(server.addr, device, &Keys::shared().token(device))
    }

    /// Connects and registers `device` with `token`; panics unless the answer is 200.
    pub fn registered(addr: SocketAddr, device: &str, token: &str) -> Client {
        let mut client = Client::connect(addr);
        let reply = client.register(device, token);
        assert_eq!(reply, json!({"code": 200, "content": "Subscribed"}), "registration of {device}");
        client
    }

    /// The underlying socket, to write raw bytes past tungstenite.
    pub fn stream(&mut self) -> &mut TcpStream {
        self.ws.get_mut()
    }

    /// Writes one raw frame (masked as a client must, unless `masked` is false).
    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8], masked: bool) {
        let bytes = frame(fin, opcode, payload, masked);
        self.stream().write_all(&bytes).expect("write raw frame");
    }

    /// Drops the TCP connection without a close frame.
    pub fn drop_tcp(self) {
        let _ = self.ws.get_ref().shutdown(std::net::Shutdown::Both);
    }

    /// Aborts the TCP connection: no close frame, no FIN, a RST (SO_LINGER with a zero timeout,
    /// then close), as when a device's network goes away under it.
    pub fn abort_tcp(self) {
        use std::os::fd::AsRawFd;
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        // SAFETY: setsockopt on a socket this client owns, with a correctly sized `linger`.
        let rc = unsafe {
            libc::setsockopt(
                self.ws.get_ref().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "setsockopt(SO_LINGER)");
        drop(self);
    }
}

/// What a client does, over either wire.
impl<S: Wire> Client<S> {
    pub fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send text");
    }

    /// Sends, tolerating a connection the server has already closed.
    pub fn try_send(&mut self, text: &str) -> Result<(), tungstenite::Error> {
        self.ws.send(Message::text(text))
    }

    pub fn send_binary(&mut self, bytes: &[u8]) {
        self.ws.send(Message::binary(bytes.to_vec())).expect("send binary");
    }

    /// Sends a registration and returns the reply.
    pub fn register(&mut self, device: &str, token: &str) -> Value {
        self.send(&json!({"type": "device", "deviceId": device, "deviceToken": token}).to_string());
        self.recv_json(WAIT)
    }

    /// `{"type":"ping"}` and its reply.
    pub fn ping(&mut self) -> Value {
        self.send(r#"{"type":"ping"}"#);
        self.recv_json(WAIT)
    }

    /// The next thing the server does, within `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Event {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            let _ = self.ws.get_ref().tcp().set_read_timeout(Some(left));
            match self.ws.read() {
                Ok(Message::Text(text)) => return Event::Text(text.as_str().to_string()),
                Ok(Message::Binary(bytes)) => return Event::Binary(bytes.to_vec()),
                Ok(Message::Close(frame)) => return Event::Close(frame.map(|f| u16::from(f.code))),
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Err(tungstenite::Error::Io(e)) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if Instant::now() >= deadline {
                        return Event::Timeout;
                    }
                }
                Err(e) => return Event::Gone(e.to_string()),
            }
        }
    }

    /// The next message, which must be JSON text.
    pub fn recv_json(&mut self, timeout: Duration) -> Value {
        let text = self.recv_text(timeout);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
    }

    /// The next message, which must be text.
    pub fn recv_text(&mut self, timeout: Duration) -> String {
        match self.recv(timeout) {
            Event::Text(text) => text,
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// The next event must be a close frame with `code`; then the close handshake is completed.
    pub fn expect_close(&mut self, code: u16) {
        match self.recv(WAIT) {
            Event::Close(got) => assert_eq!(got, Some(code), "close code"),
            other => panic!("expected close {code}, got {other:?}"),
        }
        self.finish_close();
    }

    /// Reads until the server ends the TCP connection (after a close), bounded.
    pub fn finish_close(&mut self) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            match self.recv(Duration::from_millis(200)) {
                Event::Gone(_) => return,
                Event::Text(t) => panic!("text after close: {t}"),
                _ => {}
            }
        }
        panic!("server did not end the connection after the close handshake");
    }

    /// The next message is exactly the frame of an actuation whose body is `body` (see
    /// [`delivery`]); `who` names the receiver in a failure.
    pub fn expect_delivery(&mut self, who: &str, body: &str) {
        match self.recv(WAIT) {
            Event::Text(text) => assert_eq!(text, delivery(body), "{who} got something else"),
            other => panic!("{who} expected the delivery of {body}, got {other:?}"),
        }
    }

    /// Nothing more arrives for a short while: a duplicate delivery or a second ack would.
    pub fn expect_nothing_more(&mut self, who: &str) {
        match self.recv(Duration::from_millis(300)) {
            Event::Timeout => {}
            other => panic!("{who}: expected nothing more, got {other:?}"),
        }
    }

    /// Nothing arrives within `timeout`.
    pub fn expect_silence(&mut self, timeout: Duration) {
        match self.recv(timeout) {
            Event::Timeout => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }

    /// Sends a close frame (client side of the handshake).
    pub fn close(&mut self, code: u16) {
        let frame = tungstenite::protocol::CloseFrame { code: code.into(), reason: "".into() };
        let _ = self.ws.close(Some(frame));
        let _ = self.ws.flush();
    }
}

/// Hostile-load helpers.
impl Client {
    /// Connects with the socket's receive buffer set to `bytes` before the connect (the kernel
    /// doubles it and stops tuning it), then completes the handshake: a device that stops
    /// reading backs the server's writes up after little data.
    pub fn connect_with_recv_buffer(addr: SocketAddr, bytes: usize) -> Client {
        let stream = tcp_with_recv_buffer(addr, bytes).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        Client::handshake_offering(addr, stream, Some("echo-protocol"))
            .unwrap_or_else(|e| panic!("handshake with {addr}: {e}"))
    }

    /// The local address of this connection, as the server sees its peer.
    pub fn local_addr(&self) -> SocketAddr {
        self.ws.get_ref().local_addr().expect("local_addr")
    }
}

/// A TCP connection to `addr` whose receive buffer was set to `bytes` before connecting (the
/// kernel doubles it and stops tuning it).
pub fn tcp_with_recv_buffer(addr: SocketAddr, bytes: usize) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_recv_buffer_size(bytes)?;
    socket.connect_timeout(&addr.into(), WAIT)?;
    Ok(socket.into())
}

/// A TCP connection to `addr` from the local address `source` (any port): on loopback, a
/// client that looks like another host (127.0.0.2, 127.0.0.3, ...).
pub fn tcp_from(source: std::net::IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect_timeout(&addr.into(), WAIT)?;
    Ok(socket.into())
}

/// One WebSocket frame's bytes (RFC 6455 section 5.2); `opcode` may be anything, even reserved.
pub fn frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | (opcode & 0x0f)];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A raw HTTP/1.1 GET; returns (status, body). The server closes after answering.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, _head, body) = http_raw(addr, format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
    (status, body)
}

/// Writes `request` as is and reads the whole answer: (status, head, body). Status 0 if the
/// server answered nothing parseable.
pub fn http_raw(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    stream.write_all(request).expect("write request");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}
