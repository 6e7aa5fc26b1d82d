//! Key pairs and device tokens for operators without the platform's dashboard: the `keygen`
//! and `token` subcommands, and the throw-away pair of `--demo`.

use std::fs;
use std::path::{Path, PathBuf};

use jwt_simple::prelude::*;

use crate::config::{ConfigError, Flags};

/// A freshly generated RSA-2048 pair, as PEM text.
pub struct KeyPair {
    pub private_pem: String,
    pub public_pem: String,
}

impl KeyPair {
    pub fn generate() -> anyhow::Result<KeyPair> {
        let pair = RS256KeyPair::generate(2048)?;
        Ok(KeyPair { private_pem: pair.to_pem()?, public_pem: pair.public_key().to_pem()? })
    }
}

/// Signs a device token: RS256, `sub` = the device id, `exp` after `ttl_secs`.
pub fn mint_token(private_pem: &str, device_id: &str, ttl_secs: u64) -> anyhow::Result<String> {
    let key = RS256KeyPair::from_pem(private_pem)?;
    let claims = Claims::create(Duration::from_secs(ttl_secs)).with_subject(device_id);
    key.sign(claims)
}

/// `iot-ws-server keygen [--dir DIR]`: writes DIR/private.pem (mode 0600) and DIR/public.pem.
pub fn keygen(mut flags: Flags) -> anyhow::Result<()> {
    let dir = PathBuf::from(flags.take("dir").unwrap_or_else(|| "keys".into()));
    flags.finish()?;
    let private = dir.join("private.pem");
    if private.exists() {
        return Err(ConfigError(format!("{} exists; refusing to overwrite a private key", private.display())).into());
    }
    fs::create_dir_all(&dir)?;
    let pair = KeyPair::generate()?;
    write_private(&private, &pair.private_pem)?;
    fs::write(dir.join("public.pem"), &pair.public_pem)?;
    eprintln!("wrote {} and {}", private.display(), dir.join("public.pem").display());
    Ok(())
}

fn write_private(path: &Path, pem: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(pem.as_bytes())
}

/// `iot-ws-server token --private-key PATH --device-id ID [--ttl SECS]`: prints a token.
pub fn token(mut flags: Flags) -> anyhow::Result<()> {
    let path = flags.take("private-key").ok_or_else(|| ConfigError("token: --private-key PATH is required".into()))?;
    let device = flags.take("device-id").ok_or_else(|| ConfigError("token: --device-id ID is required".into()))?;
    let ttl = match flags.take("ttl") {
        None => 365 * 24 * 3600,
        Some(t) => t.parse().map_err(|_| ConfigError(format!("token: --ttl {t:?} is not a number of seconds")))?,
    };
    flags.finish()?;
    let pem = fs::read_to_string(&path).map_err(|e| ConfigError(format!("cannot read private key {path}: {e}")))?;
    let token =
        mint_token(&pem, &device, ttl).map_err(|_| ConfigError(format!("{path} is not an RSA private key in PEM")))?;
    println!("{token}");
    Ok(())
}
