//! The actuation vocabulary: the message a dashboard sends, the frame a device receives for it,
//! and the acks the sender gets back. Written once here so that every test file expects the
//! same bytes, and a change of the protocol is a change in one place.

use serde_json::{json, Value};

use crate::client::ACTUATOR;
use crate::server::Server;

/// An actuation message for `device` whose `body.content` carries `extra` (raw JSON members,
/// may be empty) after the deviceId. Returns (message text, body text).
pub fn actuation(credentials: (&str, &str), device: &str, extra: &str) -> (String, String) {
    let id = serde_json::to_string(device).expect("id");
    let sep = if extra.is_empty() { "" } else { "," };
    let body = format!(r#"{{"type":"command","content":{{"deviceId":{id}{sep}{extra}}}}}"#);
    let creds = json!({"username": credentials.0, "password": credentials.1});
    (format!(r#"{{"type":"actuation","credentials":{creds},"body":{body}}}"#), body)
}

/// Like [`actuation`], asking for an ack.
pub fn actuation_ack(device: &str, extra: &str) -> (String, String) {
    let (text, body) = actuation(ACTUATOR, device, extra);
    (format!("{},\"ack\":true}}", &text[..text.len() - 1]), body)
}

/// The frame a device receives for an actuation whose body is `body`: the body's text as sent,
/// byte for byte, inside the `1024` envelope.
pub fn delivery(body: &str) -> String {
    format!(r#"{{"code":1024,"content":{body}}}"#)
}

/// The ack of an actuation written to the device's connection on the instance that took it.
pub fn ack_delivered(device: &str) -> Value {
    json!({"code": 200, "content": "Delivered", "deviceId": device})
}

/// The ack of an actuation queued through PostgreSQL for the device's instance `to`.
pub fn ack_forwarded(device: &str, to: &Server) -> Value {
    json!({"code": 202, "content": "Forwarded", "deviceId": device, "server": to.external_address()})
}

/// The ack of an actuation for a device no instance has.
pub fn ack_not_connected(device: &str) -> Value {
    json!({"code": 500, "content": "Device not connected", "deviceId": device})
}
