//! Device token verification: RS256 signature with the configured key, claims by the core.
//!
//! jwt-simple cannot be used for the check itself: its claims parser wants a numeric `exp`, and
//! the platform minted tokens whose `exp` is a serialised JavaScript `Date`. So the signature is
//! checked here with the RustCrypto `rsa` crate (the one jwt-simple's pure-Rust backend builds
//! on) and the claims go to `iot_ws_core::check_claims`. Only `alg: RS256` is accepted, which
//! shuts out `none` and HS256-keyed-with-the-public-key forgeries.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use ct_codecs::{Base64UrlSafeNoPadding, Decoder};
use iot_ws_core::{check_claims, DeviceId, TokenRejected, UnixSeconds};
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use rsa::RsaPublicKey;
use sha2::Sha256;

/// Longest token accepted; real device tokens are well under 2 KiB.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Verifies device tokens against one public key.
pub struct TokenVerifier {
    key: VerifyingKey<Sha256>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read public key {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("public key {path} is not an RSA public key in PEM (BEGIN PUBLIC KEY or BEGIN RSA PUBLIC KEY)")]
    Parse { path: String },
}

impl TokenVerifier {
    /// Loads the PEM public key at `path`.
    pub fn from_file(path: &Path) -> Result<TokenVerifier, KeyError> {
        let shown = path.display().to_string();
        let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Read { path: shown.clone(), source })?;
        TokenVerifier::from_pem(&pem).ok_or(KeyError::Parse { path: shown })
    }

    /// Reads "BEGIN PUBLIC KEY" (SPKI) or "BEGIN RSA PUBLIC KEY" (PKCS#1) text.
    pub fn from_pem(pem: &str) -> Option<TokenVerifier> {
        let key =
            RsaPublicKey::from_public_key_pem(pem.trim()).or_else(|_| RsaPublicKey::from_pkcs1_pem(pem.trim())).ok()?;
        Some(TokenVerifier { key: VerifyingKey::new(key) })
    }

    /// Whether `token` admits `device` at `now`.
    pub fn verify(&self, device: &DeviceId, token: &str, now: SystemTime) -> Result<(), TokenRejected> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenRejected::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenRejected::Malformed);
        };
        check_header(&decode(header)?)?;
        let signature = Signature::try_from(decode(signature)?.as_slice()).map_err(|_| TokenRejected::Signature)?;
        let signed = &token[..header.len() + 1 + payload.len()];
        self.key.verify(signed.as_bytes(), &signature).map_err(|_| TokenRejected::Signature)?;
        let claims = String::from_utf8(decode(payload)?).map_err(|_| TokenRejected::Malformed)?;
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        check_claims(&claims, device, UnixSeconds(now))
    }
}

fn decode(part: &str) -> Result<Vec<u8>, TokenRejected> {
    Base64UrlSafeNoPadding::decode_to_vec(part, None).map_err(|_| TokenRejected::Malformed)
}

#[derive(serde::Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// RS256 and nothing else; no critical extensions we would not understand.
fn check_header(header: &[u8]) -> Result<(), TokenRejected> {
    let header: Header = serde_json::from_slice(header).map_err(|_| TokenRejected::Malformed)?;
    if header.alg != "RS256" {
        return Err(TokenRejected::Algorithm);
    }
    if header.crit.is_some() {
        return Err(TokenRejected::Malformed);
    }
    Ok(())
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
