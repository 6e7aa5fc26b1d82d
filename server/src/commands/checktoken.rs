//! `iot-ws-server checktoken`: a device token checked offline by the server's own verifier, so
//! that "why is my device refused?" has an answer without a server or its logs.
//!
//! Exit status: 0 valid, 1 rejected (the core's reason on the verdict line), 2 bad usage or a
//! key that cannot be read.

use std::io::Read;
use std::process::ExitCode;
use std::time::SystemTime;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use iot_ws_core::DeviceId;

use crate::auth::TokenVerifier;
use crate::config::{ConfigError, Env, Flags};

fn usage(what: &str) -> ConfigError {
    ConfigError(format!("checktoken: {what} (see checktoken --help)"))
}

/// Prints the token's claims (one JSON line, whether or not the signature holds) and the verdict.
pub fn run(args: &[String]) -> anyhow::Result<ExitCode> {
    let env = |name: &str| std::env::var(name).ok();
    let (key, device, token) = options(Flags::parse(args, &[])?, &env)?;
    let verifier = TokenVerifier::from_file(key.as_ref()).map_err(|e| ConfigError(e.to_string()))?;
    let token = match token.as_str() {
        "-" => read_stdin()?,
        _ => token,
    };
    let claims = claims_text(&token);
    println!("{}", claims.as_deref().unwrap_or("(no readable claims)"));
    // Without --device-id the token is checked for the device it names.
    let device = device.or_else(|| claims.as_deref().and_then(subject)).unwrap_or_default();
    match verifier.verify(&DeviceId(device.as_str().into()), &token, SystemTime::now()) {
        Ok(()) => {
            println!("valid for device {device:?}");
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => {
            println!("rejected: {reason}");
            Ok(ExitCode::from(1))
        }
    }
}

/// The key's path, the device id if given, and the token argument.
fn options(mut flags: Flags, env: &Env) -> Result<(String, Option<String>, String), ConfigError> {
    let key = flags
        .take("public-key")
        .or_else(|| env("IOT_WS_PUBLIC_KEY").filter(|k| !k.is_empty()))
        .unwrap_or_else(|| "keys/public.pem".into());
    let device = flags.take("device-id");
    let token = flags.take_positional().ok_or_else(|| usage("TOKEN is required"))?;
    flags.finish()?;
    Ok((key, device, token))
}

fn read_stdin() -> Result<String, ConfigError> {
    let mut text = String::new();
    std::io::stdin().take(64 * 1024).read_to_string(&mut text).map_err(|e| usage(&format!("stdin: {e}")))?;
    Ok(text.trim().to_string())
}

/// The token's payload as text, unverified: what it claims, to be read beside the verdict.
fn claims_text(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    String::from_utf8(bytes).ok()
}

fn subject(claims: &str) -> Option<String> {
    let claims: serde_json::Value = serde_json::from_str(claims).ok()?;
    claims["sub"].as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claims_are_the_payload_read_whatever_the_signature() {
        // {"alg":"RS256"} . {"sub":"dev-1","exp":4102444800} . no signature at all
        let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJkZXYtMSIsImV4cCI6NDEwMjQ0NDgwMH0.AAAA";
        let claims = claims_text(token).unwrap();
        assert_eq!(claims, r#"{"sub":"dev-1","exp":4102444800}"#);
        assert_eq!(subject(&claims).as_deref(), Some("dev-1"));
        assert_eq!(subject(r#"{"iss":"someone"}"#), None);
    }

    #[test]
    fn a_token_without_a_readable_payload_has_no_claims() {
        for token in ["", "no-dots", "eyJhbGciOiJSUzI1NiJ9.!!!.AAAA", "eyJhbGciOiJSUzI1NiJ9.eyJ=.AAAA"] {
            assert_eq!(claims_text(token), None, "{token:?}");
        }
        // Base64 of bytes that are not UTF-8 (0xff 0xfe).
        assert_eq!(claims_text("a.__4.c"), None);
    }
}
