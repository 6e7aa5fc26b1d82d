//! `iot-ws-server actuate`: one actuation from the command line, sent as the dashboard sends
//! it, with `"ack": true`; the ack is printed on stdout.
//!
//! Exit status: 0 when the server delivered, held or forwarded it; 1 when it did not (device
//! not connected, credentials refused, no server, no ack in time); 2 for bad usage, including an
//! actuation the server would refuse as malformed (checked with the core's own parser).

use std::io::Write;
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use futures_lite::{future, StreamExt};
use iot_ws_core::{parse, ClientMessage};
use serde_json::Value;

use crate::commands::actuation_sink::one_line;
use crate::commands::ws_client::{connect, ServerUrl};
use crate::config::{ConfigError, Env, Flags};

struct ActuateOptions {
    url: ServerUrl,
    /// The whole message, credentials included: never printed.
    message: String,
    timeout: Duration,
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let env = |name: &str| std::env::var(name).ok();
    let options = ActuateOptions::load(Flags::parse(args, &[])?, &env)?;
    smol::block_on(send(options))
}

fn usage(what: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("actuate: {what} (see --help)"))
}

impl ActuateOptions {
    fn load(mut flags: Flags, env: &Env) -> Result<ActuateOptions, ConfigError> {
        let url = flags.take("url").ok_or_else(|| usage("--url ws://HOST:PORT/ is required"))?;
        let ca = flags.take("ca");
        let device = flags.take("device-id");
        let body = match (flags.take("content"), flags.take("body")) {
            (Some(_), Some(_)) => return Err(usage("give --content or --body, not both")),
            (Some(content), None) => {
                let device = device.as_deref().ok_or_else(|| usage("--content needs --device-id ID"))?;
                body_for(device, &content)?
            }
            (None, Some(body)) => body,
            (None, None) => return Err(usage("--content JSON or --body JSON is required")),
        };
        let username = flags
            .take("username")
            .or_else(|| env("IOT_WS_ACTUATOR_USERNAME").filter(|u| !u.is_empty()))
            .ok_or_else(|| usage("--username U or IOT_WS_ACTUATOR_USERNAME is required"))?;
        let password = flags
            .take_secret("password", env, "IOT_WS_ACTUATOR_PASSWORD")?
            .map(|secret| secret.text)
            .ok_or_else(|| usage("--password P, --password-file F or IOT_WS_ACTUATOR_PASSWORD is required"))?;
        let timeout = match flags.take("timeout-secs") {
            None => 10,
            Some(t) => t.parse::<u64>().ok().filter(|t| (1..=3600).contains(t)).ok_or_else(|| {
                usage(format!("--timeout-secs {t:?} is not a whole number of seconds from 1 to 3600"))
            })?,
        };
        flags.finish()?;
        // Two JSON strings spliced in by hand: serde_json's Value serialiser costs the gateway
        // binaries more than this whole message.
        let (username, password) = (json_string(&username), json_string(&password));
        let message = format!(
            r#"{{"type":"actuation","credentials":{{"username":{username},"password":{password}}},"body":{body},"ack":true}}"#
        );
        // The server's own rules decide what a well-formed actuation is; usage errors name the
        // rule but never the credentials.
        match parse(&message) {
            Ok(ClientMessage::Actuation { device: target, .. }) => {
                if let Some(device) = device.filter(|d| *d != target.as_str()) {
                    return Err(usage(format!("--device-id {device:?} differs from the body's {:?}", target.as_str())));
                }
            }
            Ok(_) => return Err(usage("not an actuation")),
            Err(e) => return Err(usage(format!("the server would refuse this actuation: {e}"))),
        }
        Ok(ActuateOptions {
            url: ServerUrl::parse(&url, ca.as_deref().map(std::path::Path::new))?,
            message,
            timeout: Duration::from_secs(timeout),
        })
    }
}

/// The dashboard's body for `content`: `{"type":"command","content":CONTENT}` with the device id
/// put first in CONTENT unless it is there already. CONTENT's own text is kept as written.
fn body_for(device: &str, content: &str) -> Result<String, ConfigError> {
    let parsed: Value = serde_json::from_str(content).map_err(|_| usage("--content is not JSON"))?;
    let Some(object) = parsed.as_object() else { return Err(usage("--content must be a JSON object")) };
    let content = match object.get("deviceId") {
        Some(Value::String(id)) if id == device => content.trim().to_string(),
        Some(_) => return Err(usage("--content has a deviceId other than --device-id")),
        None => {
            let id = json_string(device);
            // A JSON object's text starts with '{' (after whitespace).
            let rest = content.trim().strip_prefix('{').expect("an object").trim_start();
            let sep = if rest.starts_with('}') { "" } else { "," };
            format!(r#"{{"deviceId":{id}{sep}{rest}"#)
        }
    };
    Ok(format!(r#"{{"type":"command","content":{content}}}"#))
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

async fn send(options: ActuateOptions) -> anyhow::Result<()> {
    let deadline = smol::Timer::after(options.timeout);
    let exchange = async {
        let mut ws = connect(&options.url).await.map_err(|e| anyhow::anyhow!("cannot connect: {e}"))?;
        ws.send(Message::text(options.message)).await.map_err(|e| anyhow::anyhow!("cannot send: {e}"))?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let outcome = outcome(text.as_str());
                    let _ = future::or(async { ws.close(None).await.ok() }, async {
                        smol::Timer::after(Duration::from_secs(2)).await;
                        None
                    })
                    .await;
                    return outcome;
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(String::from("none"), |f| u16::from(f.code).to_string());
                    anyhow::bail!("the server closed the connection (code {code}) without an ack")
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => anyhow::bail!("connection lost: {e}"),
                None => anyhow::bail!("the server closed the connection without an ack"),
            }
        }
    };
    let timeout = async {
        deadline.await;
        Err(anyhow::anyhow!("no ack within {} s", options.timeout.as_secs()))
    };
    future::or(exchange, timeout).await
}

/// Prints the server's answer and says whether it took the actuation (200 delivered; 202 held
/// or forwarded).
fn outcome(reply: &str) -> anyhow::Result<()> {
    let Ok(value) = serde_json::from_str::<Value>(reply) else {
        anyhow::bail!("the server answered something that is not JSON")
    };
    // As the server wrote it, on one line; a closed stdout does not change the outcome.
    let _ = writeln!(std::io::stdout(), "{}", one_line(reply));
    match value["code"].as_i64() {
        Some(200 | 202) => Ok(()),
        // The server's words, but the peer's text: escaped and cut like any network input.
        _ => {
            let reason = value["content"].as_str().unwrap_or("(no reason given)");
            anyhow::bail!("not taken: {}", reason.chars().flat_map(char::escape_debug).take(100).collect::<String>())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::body_for;

    #[test]
    fn content_gets_the_device_id_first_and_keeps_its_spelling() {
        assert_eq!(
            body_for("d1", r#" {"v": 1.50, "s":"\u00e9"}"#).unwrap(),
            r#"{"type":"command","content":{"deviceId":"d1","v": 1.50, "s":"\u00e9"}}"#
        );
        assert_eq!(body_for("d1", "{}").unwrap(), r#"{"type":"command","content":{"deviceId":"d1"}}"#);
        assert_eq!(
            body_for("d1", r#"{"deviceId":"d1","x":1}"#).unwrap(),
            r#"{"type":"command","content":{"deviceId":"d1","x":1}}"#
        );
        for bad in [r#"{"deviceId":"other"}"#, "[1]", "nope", r#""s""#] {
            assert!(body_for("d1", bad).is_err(), "{bad}");
        }
    }
}
