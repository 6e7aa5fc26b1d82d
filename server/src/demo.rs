//! `--demo`: a newcomer's first run. A throw-away key pair, the in-memory registry, and
//! everything needed to connect a device and send it an actuation, printed on stdout.

use crate::auth::TokenVerifier;
use crate::config::Config;
use crate::keys::{mint_token, KeyPair};
use iot_ws_core::Credentials;

pub const DEMO_DEVICE: &str = "demo-device";

/// Makes the demo key pair and credentials, prints how to use them, returns the verifier.
pub fn prepare(config: &mut Config) -> anyhow::Result<TokenVerifier> {
    let pair = KeyPair::generate()?;
    let verifier =
        TokenVerifier::from_pem(&pair.public_pem).ok_or_else(|| anyhow::anyhow!("generated key unreadable"))?;
    let token = mint_token(&pair.private_pem, DEMO_DEVICE, 24 * 3600)?;
    let actuator =
        config.actuator.get_or_insert_with(|| Credentials { username: "demo".into(), password: random_password() });
    let url = format!("ws://{}", config.listen).replace("0.0.0.0", "127.0.0.1");
    println!(
        "Demo mode: throw-away RSA key, in-memory registry.\n\n\
         Device token for {DEMO_DEVICE} (valid 24 h):\n{token}\n\n\
         Actuator credentials: username {} password {}\n\n\
         Connect a device (subprotocol echo-protocol), e.g. with websocat:\n  \
         websocat --protocol echo-protocol {url}\n  \
         {{\"type\":\"device\",\"deviceId\":\"{DEMO_DEVICE}\",\"deviceToken\":\"{token}\"}}\n\n\
         Then, from a second connection, send it an actuation:\n  \
         {{\"type\":\"actuation\",\"credentials\":{{\"username\":\"{}\",\"password\":\"{}\"}},\"body\":{{\"type\":\"command\",\"content\":{{\"deviceId\":\"{DEMO_DEVICE}\",\"actuation\":\"LED on\"}}}}}}\n",
        actuator.username, actuator.password, actuator.username, actuator.password
    );
    Ok(verifier)
}

fn random_password() -> String {
    let mut bytes = [0u8; 12];
    // Without an OS random source there is no safe demo password: fail loudly.
    getrandom::getrandom(&mut bytes).expect("no OS random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
