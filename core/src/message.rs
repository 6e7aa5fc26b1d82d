//! The wire format: what clients send ([`ClientMessage`]) and what the server answers ([`Reply`]).
//!
//! Every client message is one JSON object in a text frame. Anything else is a [`FormatError`],
//! and each format error carries its wire consequence: `{"code":401,"content":"Wrong message
//! format"}`, then close 1003. Extra fields are ignored, as the original server ignored them.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use core::fmt;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::credentials::Credentials;

/// A device's identifier, as the platform assigned it. Any string is just an id: `__proto__` and
/// `constructor` included.
///
/// Shared, not copied: a host keeps a registered device's id in several places (its session,
/// the route tables both ways, the bindings) and names it in every actuation, so a clone is a
/// count, not an allocation. `DeviceId("dev-1".into())` from a `&str` or a `String`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub Arc<str>);

impl DeviceId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An actuation body: the raw JSON text of the dashboard's `body` object.
///
/// It is kept as text and forwarded byte for byte (key order, number spelling, unicode escapes),
/// never re-serialised from a map.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Body(Box<str>);

impl Body {
    /// The raw JSON text, exactly as received.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps JSON object text that has already been validated, e.g. by [`parse`] on another
    /// instance. Returns `None` unless `raw` is a JSON object.
    pub fn from_json_object(raw: &str) -> Option<Body> {
        let value: &RawValue = serde_json::from_str(raw).ok()?;
        value.get().starts_with('{').then(|| Body(raw.into()))
    }

    /// The text a device receives for it (`{"code":1024,"content":BODY}`, what
    /// [`Reply::Actuation`]'s [`to_text`](Reply::to_text) gives), in three pieces, so that a
    /// host can write it out without building it first.
    pub fn delivery_text(&self) -> [&str; 3] {
        ["{\"code\":1024,\"content\":", &self.0, "}"]
    }
}

/// A WebSocket close code (RFC 6455 section 7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection is fulfilled (superseded, idle without registering).
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the server is going away (shutdown).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the WebSocket protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a message of a kind this protocol does not accept.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1007: a text message that is not valid UTF-8.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a policy violation (invalid token, wrong credentials).
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message over the size limit.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1011: the server could not do its part (the binding could not be recorded).
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1013: the server is at capacity; try again later (hosts use it when they shed a pending
    /// connection to admit another).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
}

/// A message from a client, parsed and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMessage {
    /// `{"type":"device","deviceId":…,"deviceToken":…}`: a device registers.
    Device {
        /// The id the device claims.
        device: DeviceId,
        /// Its JWT, to be verified by the host.
        token: String,
    },
    /// `{"type":"actuation","credentials":{…},"body":{…}}`: the dashboard commands a device.
    Actuation {
        /// The actuator credentials offered.
        credentials: Credentials,
        /// `body.content.deviceId`: where the actuation goes.
        device: DeviceId,
        /// The whole `body`, raw.
        body: Body,
        /// `"ack": true` asks for one reply saying what became of the actuation.
        ack: bool,
    },
    /// `{"type":"ping"}`.
    Ping,
}

/// Why a message is not a [`ClientMessage`]. Whatever the reason, the answer on the wire is the
/// same ([`FormatError::reply`]); the reason is for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatError {
    /// A binary frame: the protocol is text only.
    Binary,
    /// Not JSON at all.
    NotJson,
    /// JSON, but not an object.
    NotAnObject,
    /// An object that names the same field twice.
    DuplicateField,
    /// A field the message type requires is absent.
    MissingField(&'static str),
    /// A field is present with the wrong JSON type, or a device id that is empty, longer than
    /// [`MAX_DEVICE_ID_CHARS`] or holds U+0000.
    WrongType(&'static str),
    /// `type` is not one of `device`, `actuation`, `ping`.
    UnknownType,
}

impl FormatError {
    /// The wire consequence: the reply to send, then the close code.
    pub fn reply(&self) -> (Reply, CloseCode) {
        (Reply::WrongFormat, CloseCode::UNSUPPORTED_DATA)
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::Binary => f.write_str("binary frame"),
            FormatError::NotJson => f.write_str("not JSON"),
            FormatError::NotAnObject => f.write_str("not a JSON object"),
            FormatError::DuplicateField => f.write_str("duplicate field"),
            FormatError::MissingField(name) => write!(f, "missing field {name}"),
            FormatError::WrongType(name) => write!(f, "field {name} has the wrong type"),
            FormatError::UnknownType => f.write_str("unknown message type"),
        }
    }
}

/// A field that stays raw until its type is known. Unlike `Option<&RawValue>`, a present `null`
/// is `Some("null")`, not absent: `"deviceToken": null` is the wrong type, not a missing field.
#[derive(Default, Clone, Copy)]
pub(crate) struct Field<'a>(pub(crate) Option<&'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(deserializer).map(|raw| Field(Some(raw)))
    }
}

/// The top level of any message; each field stays raw until its type is known.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Field<'a>,
    #[serde(rename = "deviceId", default, borrow)]
    device_id: Field<'a>,
    #[serde(rename = "deviceToken", default, borrow)]
    device_token: Field<'a>,
    #[serde(default, borrow)]
    credentials: Field<'a>,
    #[serde(default, borrow)]
    body: Field<'a>,
    #[serde(default, borrow)]
    ack: Field<'a>,
}

#[derive(Deserialize)]
struct RawCredentials<'a> {
    #[serde(default, borrow)]
    username: Field<'a>,
    #[serde(default, borrow)]
    password: Field<'a>,
}

#[derive(Deserialize)]
struct RawBody<'a> {
    #[serde(default, borrow)]
    content: Field<'a>,
}

#[derive(Deserialize)]
struct RawContent<'a> {
    #[serde(rename = "deviceId", default, borrow)]
    device_id: Field<'a>,
}

/// Parses one text message.
pub fn parse(text: &str) -> Result<ClientMessage, FormatError> {
    let envelope: Envelope<'_> = object(text)?;
    let kind = string(envelope.kind, "type")?;
    match kind.as_str() {
        "device" => Ok(ClientMessage::Device {
            device: device_id(envelope.device_id, "deviceId")?,
            token: string(envelope.device_token, "deviceToken")?,
        }),
        "actuation" => parse_actuation(&envelope),
        "ping" => Ok(ClientMessage::Ping),
        _ => Err(FormatError::UnknownType),
    }
}

fn parse_actuation(envelope: &Envelope<'_>) -> Result<ClientMessage, FormatError> {
    let credentials = envelope.credentials.0.ok_or(FormatError::MissingField("credentials"))?;
    let credentials: RawCredentials<'_> = nested(credentials, "credentials")?;
    let body = envelope.body.0.ok_or(FormatError::MissingField("body"))?;
    let raw_body: RawBody<'_> = nested(body, "body")?;
    let content = raw_body.content.0.ok_or(FormatError::MissingField("body.content"))?;
    let content: RawContent<'_> = nested(content, "body.content")?;
    let ack = match envelope.ack.0 {
        None => false,
        Some(raw) => serde_json::from_str::<bool>(raw.get()).map_err(|_| FormatError::WrongType("ack"))?,
    };
    Ok(ClientMessage::Actuation {
        credentials: Credentials {
            username: string(credentials.username, "credentials.username")?,
            password: string(credentials.password, "credentials.password")?,
        },
        device: device_id(content.device_id, "body.content.deviceId")?,
        body: Body(body.get().into()),
        ack,
    })
}

/// Reads the whole text as a JSON object of shape `T`.
fn object<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, FormatError> {
    let value: &RawValue = serde_json::from_str(text).map_err(|_| FormatError::NotJson)?;
    if !value.get().starts_with('{') {
        return Err(FormatError::NotAnObject);
    }
    // Valid JSON and an object: the only way left to fail is a repeated field.
    serde_json::from_str(value.get()).map_err(|_| FormatError::DuplicateField)
}

/// Reads a nested field that must be an object of shape `T`.
fn nested<'a, T: Deserialize<'a>>(raw: &'a RawValue, name: &'static str) -> Result<T, FormatError> {
    if !raw.get().starts_with('{') {
        return Err(FormatError::WrongType(name));
    }
    serde_json::from_str(raw.get()).map_err(|_| FormatError::DuplicateField)
}

fn string(raw: Field<'_>, name: &'static str) -> Result<String, FormatError> {
    let raw = raw.0.ok_or(FormatError::MissingField(name))?;
    serde_json::from_str::<String>(raw.get()).map_err(|_| FormatError::WrongType(name))
}

/// Most characters in a device id: the platform stores ids in a `varchar(255)` column.
pub const MAX_DEVICE_ID_CHARS: usize = 255;

/// A device id is 1 to [`MAX_DEVICE_ID_CHARS`] characters without U+0000: what the platform's
/// column can hold (PostgreSQL text cannot hold NUL), so that one id never fails a database
/// write it shares with others.
fn device_id(raw: Field<'_>, name: &'static str) -> Result<DeviceId, FormatError> {
    let id = string(raw, name)?;
    let fits = !id.is_empty() && id.chars().nth(MAX_DEVICE_ID_CHARS).is_none() && !id.contains('\0');
    if !fits {
        return Err(FormatError::WrongType(name));
    }
    Ok(DeviceId(id.into()))
}

/// What became of an actuation, as told to a sender that asked for `"ack": true`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RouteOutcome {
    /// Handed to the device's connection.
    Delivered,
    /// The device is between two connections; held and delivered when it registers again.
    Held,
    /// No connection of the device is known and nothing was held.
    NotConnected,
    /// The device is connected to another instance: handed to that instance (named by its
    /// external address) to deliver.
    Forwarded {
        /// The other instance's external address, as its bindings name it.
        server: String,
    },
}

/// A message from the server to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// 200: the device is registered and its binding recorded.
    Subscribed,
    /// 202 `"PONG"`: the answer to `{"type":"ping"}`.
    Pong,
    /// 401: the device token is not valid for this device.
    InvalidToken,
    /// 401: the message is not one of the protocol's.
    WrongFormat,
    /// 401: the actuator credentials are wrong (or none are configured).
    InvalidCredentials,
    /// 500: the server could not record the device's binding.
    CannotStoreBinding,
    /// 1024: an actuation for the device, with the dashboard's body verbatim.
    Actuation(Body),
    /// The answer to an actuation sent with `"ack": true` (see [`RouteOutcome::code`]).
    Ack {
        /// The actuation's device.
        device: DeviceId,
        /// What became of it.
        status: RouteOutcome,
    },
}

impl RouteOutcome {
    /// The code on the wire: 200 delivered, 202 held or forwarded (accepted, not yet
    /// delivered), 500 not connected (the server could not do what was asked).
    pub fn code(&self) -> u16 {
        match self {
            RouteOutcome::Delivered => 200,
            RouteOutcome::Held | RouteOutcome::Forwarded { .. } => 202,
            RouteOutcome::NotConnected => 500,
        }
    }

    /// The word on the wire.
    pub fn word(&self) -> &'static str {
        match self {
            RouteOutcome::Delivered => "Delivered",
            RouteOutcome::Held => "Held",
            RouteOutcome::NotConnected => "Device not connected",
            RouteOutcome::Forwarded { .. } => "Forwarded",
        }
    }
}

impl Reply {
    /// The numeric `code` field of the reply.
    pub fn code(&self) -> u16 {
        match self {
            Reply::Subscribed => 200,
            Reply::Pong => 202,
            Reply::InvalidToken | Reply::WrongFormat | Reply::InvalidCredentials => 401,
            Reply::CannotStoreBinding => 500,
            Reply::Actuation(_) => 1024,
            Reply::Ack { status, .. } => status.code(),
        }
    }

    /// The JSON text sent in a text frame.
    pub fn to_text(&self) -> String {
        let content = match self {
            Reply::Actuation(body) => return body.delivery_text().concat(),
            Reply::Subscribed => "\"Subscribed\"",
            Reply::Pong => "\"PONG\"",
            Reply::InvalidToken => "\"Invalid device token\"",
            Reply::WrongFormat => "\"Wrong message format\"",
            Reply::InvalidCredentials => "\"Invalid credentials\"",
            Reply::CannotStoreBinding => "\"Cannot record the device binding\"",
            Reply::Ack { device, status } => {
                let id = serde_json::to_string(device.as_str()).unwrap_or_default();
                let (code, word) = (status.code(), status.word());
                return match status {
                    RouteOutcome::Forwarded { server } => {
                        let server = serde_json::to_string(server).unwrap_or_default();
                        alloc::format!(
                            "{{\"code\":{code},\"content\":\"{word}\",\"deviceId\":{id},\"server\":{server}}}"
                        )
                    }
                    _ => alloc::format!("{{\"code\":{code},\"content\":\"{word}\",\"deviceId\":{id}}}"),
                };
            }
        };
        alloc::format!("{{\"code\":{},\"content\":{}}}", self.code(), content)
    }
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
