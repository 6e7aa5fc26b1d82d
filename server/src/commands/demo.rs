//! `--demo`: a newcomer's first run. A throw-away key pair, the in-memory registry, and
//! everything needed to connect a device and send it an actuation, printed on stdout as
//! commands of this very binary (and a JavaScript snippet) that work as printed.

use crate::auth::TokenVerifier;
use crate::commands::keys::{mint_token, KeyPair};
use crate::config::Config;
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
    // Printed before the port is bound: with port 0 only `listening on` will know it.
    let url = match config.listen.port() {
        0 => "ws://127.0.0.1:PORT/".to_string(),
        _ => format!("ws://{}/", config.listen).replace("0.0.0.0", "127.0.0.1"),
    };
    let program = std::env::args().next().map_or_else(|| "iot-ws-server".into(), |p| shell_word(&p));
    println!("{}", instructions(&program, &url, &token, actuator));
    if config.listen.port() == 0 {
        println!("PORT above: the port in the `listening on` line of the log.\n");
    }
    Ok(verifier)
}

fn instructions(program: &str, url: &str, token: &str, actuator: &Credentials) -> String {
    let (user, password) = (shell_word(&actuator.username), shell_word(&actuator.password));
    format!(
        "Demo mode: throw-away RSA key, in-memory registry.\n\n\
         Device token for {DEMO_DEVICE} (valid 24 h):\n{token}\n\n\
         Actuator credentials: username {} password {}\n\n\
         Be the device (in a second terminal; each actuation is printed as one JSON line):\n  \
         {program} device --url {url} --device-id {DEMO_DEVICE} --token {token}\n\n\
         Send it an actuation (in a third terminal; prints the ack, exit status 0 once delivered):\n  \
         {program} actuate --url {url} --device-id {DEMO_DEVICE} --username {user} --password {password} \
         --content '{{\"actuation\":\"LED on\"}}'\n\n\
         Or be the device in JavaScript (the package in js/, with the ws package in Node.js 20; in a browser, leave out the ws import):\n  \
         import {{ connect }} from 'iot-ws-client';\n  \
         import {{ WebSocket }} from 'ws';\n  \
         connect({{ url: '{url}', deviceId: '{DEMO_DEVICE}', token: '{token}', WebSocket,\n  \
         \x20 onActuation: (body, text) => console.log('actuation', text), onStatus: (s) => console.log(s.status) }});\n\n\
         Any WebSocket client works too: offer the subprotocol echo-protocol and send\n  \
         {{\"type\":\"device\",\"deviceId\":\"{DEMO_DEVICE}\",\"deviceToken\":\"{token}\"}}\n",
        actuator.username, actuator.password
    )
}

/// `word` as one POSIX shell word: as is when it is plain, else single-quoted.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:=@,+%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn random_password() -> String {
    let mut bytes = [0u8; 12];
    // Without an OS random source there is no safe demo password: fail loudly.
    getrandom::getrandom(&mut bytes).expect("no OS random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("/work/target/release/iot-ws-server"), "/work/target/release/iot-ws-server");
        assert_eq!(shell_word("my dir/it's"), r"'my dir/it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
