//! Many WebSocket clients at once, for the load runs: async-tungstenite over smol, offering
//! `echo-protocol`, one task per device instead of one thread.

use std::net::{SocketAddr, TcpStream};

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures_lite::StreamExt;
use serde_json::json;
use smol::Async;

/// One device's connection.
pub type AsyncWs = WebSocketStream<Async<TcpStream>>;

/// Connects and completes the handshake; panics on failure.
pub async fn connect_async(addr: SocketAddr) -> AsyncWs {
    let stream = Async::<TcpStream>::connect(addr).await.expect("connect");
    let mut request = format!("ws://{addr}/").into_client_request().expect("request");
    request.headers_mut().insert("Sec-WebSocket-Protocol", "echo-protocol".parse().expect("header value"));
    let (ws, _) = async_tungstenite::client_async(request, stream).await.expect("handshake");
    ws
}

/// The next text message, skipping control frames; what went wrong otherwise.
pub async fn next_text(ws: &mut AsyncWs) -> Result<String, String> {
    loop {
        match ws.next().await {
            None => return Err("connection ended".into()),
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_string()),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(other)) => return Err(format!("unexpected {other:?}")),
            Some(Err(e)) => return Err(e.to_string()),
        }
    }
}

/// Connects and registers `device`; panics unless the answer is 200.
pub async fn register_async(addr: SocketAddr, device: &str, token: &str) -> AsyncWs {
    let mut ws = connect_async(addr).await;
    let register = json!({"type": "device", "deviceId": device, "deviceToken": token});
    ws.send(Message::text(register.to_string())).await.expect("send the registration");
    let reply = next_text(&mut ws).await;
    assert_eq!(reply.as_deref(), Ok(r#"{"code":200,"content":"Subscribed"}"#), "{device}");
    ws
}
