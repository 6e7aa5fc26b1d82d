//! Client sockets: spread over 127.0.0.x source addresses, WebSocket with small buffers, over
//! clear TCP (ws://) or TLS (wss://, see tls.rs).
//!
//! One source address has about 28k ephemeral ports towards one server address, and closed
//! sockets linger in TIME_WAIT; so device `i` connects from 127.0.0.(1 + i / per_ip).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::WebSocketStream;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use smol::Async;
use socket2::{Domain, Protocol, Socket, Type};

use crate::tls::{Stream, Tls};

pub type Ws = WebSocketStream<Stream>;

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub url: String,
    /// Devices per source address.
    pub per_ip: usize,
    /// Set for wss://.
    pub tls: Option<Tls>,
}

/// Longest a connect plus handshake may take before it counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

impl Target {
    /// `tls` is required for a wss:// URL and refused for ws://.
    pub fn parse(url: &str, per_ip: usize, tls: Option<Tls>) -> Result<Target, String> {
        let (rest, secure) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => return Err(format!("--server {url:?}: only ws:// and wss:// URLs")),
        };
        match (secure, tls.is_some()) {
            (true, false) => return Err(format!("--server {url:?}: wss:// needs --ca PATH")),
            (false, true) => return Err(format!("--server {url:?}: --ca is for wss:// only")),
            _ => {}
        }
        let hostport = rest.split('/').next().unwrap_or(rest);
        let addr: SocketAddr =
            hostport.parse().map_err(|_| format!("--server {url:?}: want ws://IP:PORT (loopback only)"))?;
        if !addr.ip().is_loopback() {
            return Err(format!("--server {url:?}: the bench only runs against loopback"));
        }
        Ok(Target { addr, url: url.to_string(), per_ip: per_ip.max(1), tls })
    }

    /// A connection to the server from client `i`'s source address: TCP, and the TLS handshake
    /// for wss://.
    async fn stream(&self, i: usize) -> io::Result<Stream> {
        let tcp = tcp_connect(self.source(i), self.addr).await?;
        match &self.tls {
            None => Ok(Stream::Plain(tcp)),
            Some(tls) => tls.connect(tcp).await,
        }
    }

    /// The source address for client number `i`.
    pub fn source(&self, i: usize) -> IpAddr {
        match self.addr.ip() {
            IpAddr::V4(_) => {
                let n = (i / self.per_ip).min(250) as u8;
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + n))
            }
            v6 => v6,
        }
    }

    /// A WebSocket offering `echo-protocol`, from client `i`'s source address.
    pub async fn connect(&self, i: usize) -> io::Result<Ws> {
        let attempt = async {
            let stream = self.stream(i).await?;
            let mut request = self.url.as_str().into_client_request().map_err(io::Error::other)?;
            request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("echo-protocol"));
            let (ws, _) = async_tungstenite::client_async_with_config(request, stream, Some(ws_config()))
                .await
                .map_err(io::Error::other)?;
            Ok(ws)
        };
        future::or(attempt, async {
            smol::Timer::after(CONNECT_TIMEOUT).await;
            Err(io::Error::new(io::ErrorKind::TimedOut, "connect and handshake took too long"))
        })
        .await
    }

    /// `GET path`, the whole response as text (for `/metrics`).
    pub async fn http_get(&self, path: &str) -> io::Result<String> {
        let tcp = Async::<TcpStream>::connect(self.addr).await?;
        let mut stream = match &self.tls {
            None => Stream::Plain(tcp),
            Some(tls) => tls.connect(tcp).await?,
        };
        stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes()).await?;
        stream.flush().await?;
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
                // A TLS peer closing without close_notify after a whole answer.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !answer.is_empty() => break,
                Err(e) => return Err(e),
            }
        }
        String::from_utf8(answer).map_err(io::Error::other)
    }

    /// The value of an unlabelled metric such as `iot_ws_connections`.
    pub async fn metric(&self, name: &str) -> Option<i64> {
        let text = self.http_get("/metrics").await.ok()?;
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Waits (bounded) until the server's open connections are at most `target`.
    pub async fn wait_connections_at_most(&self, target: i64, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if self.metric("iot_ws_connections").await.is_some_and(|n| n <= target) {
                return true;
            }
            smol::Timer::after(Duration::from_millis(50)).await;
        }
        false
    }
}

/// Small buffers on the client side too: 20k clients with tungstenite's 128 KiB default would
/// need 2.5 GiB.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4 * 1024).write_buffer_size(0)
}

/// A non-blocking connect bound to `source` (port chosen by the kernel).
async fn tcp_connect(source: IpAddr, to: SocketAddr) -> io::Result<Async<TcpStream>> {
    let stream = connect_async(bound_socket(source, to)?, to).await?;
    stream.get_ref().set_nodelay(true)?;
    Ok(stream)
}

/// A TCP socket for `to`, bound to `source` if that is an IPv4 address other than 127.0.0.1 (which
/// the kernel picks anyway).
pub fn bound_socket(source: IpAddr, to: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    if source != IpAddr::V4(Ipv4Addr::LOCALHOST) && to.is_ipv4() {
        defer_port_to_connect(&socket)?;
        socket.bind(&SocketAddr::new(source, 0).into())?;
    }
    Ok(socket)
}

/// `IP_BIND_ADDRESS_NO_PORT`: the bind takes the address only, and `connect` picks the port for
/// the whole four-tuple. Without it, `bind` must find a port no other socket on the address holds,
/// a search through every bound port under a lock: with tens of thousands of the bench's sockets
/// bound (a storm after a storm) it took most of both cores in the kernel, slowing the server it
/// measured (the restart storm took 3–10 s instead of 1.6 in 6 of 15 runs).
fn defer_port_to_connect(socket: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket, and an option value of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Connects `socket` to `to` without blocking the executor.
pub async fn connect_async(socket: Socket, to: SocketAddr) -> io::Result<Async<TcpStream>> {
    socket.set_nonblocking(true)?;
    match socket.connect(&to.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) || e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    let stream = Async::new(TcpStream::from(socket))?;
    stream.writable().await?;
    if let Some(e) = stream.get_ref().take_error()? {
        return Err(e);
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_needs_no_ca_and_wss_needs_one() {
        let plain = Target::parse("ws://127.0.0.1:5000", 5000, None).unwrap();
        assert!(plain.tls.is_none());
        let err = Target::parse("wss://127.0.0.1:5000", 5000, None).unwrap_err();
        assert!(err.contains("wss:// needs --ca"), "{err}");
        let err = Target::parse("http://127.0.0.1:5000", 5000, None).unwrap_err();
        assert!(err.contains("only ws:// and wss://"), "{err}");
    }
}
