//! Device tokens signed with the platform's private key, minted on all cores.
//!
//! Each run mints its own tokens (fresh `iat` and `jti`), so a server that caches verified
//! tokens has never seen them: the first registration of each is a real RSA verification.

use std::time::{SystemTime, UNIX_EPOCH};

use ct_codecs::{Base64UrlSafeNoPadding, Encoder};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer};
use rsa::RsaPrivateKey;
use sha2::Sha256;

/// The private key tokens are signed with.
pub struct Minter {
    key: RsaPrivateKey,
}

impl Minter {
    /// Reads a PKCS#8 ("BEGIN PRIVATE KEY") or PKCS#1 ("BEGIN RSA PRIVATE KEY") PEM file.
    pub fn from_file(path: &str) -> Result<Minter, String> {
        let pem = std::fs::read_to_string(path).map_err(|e| format!("cannot read private key {path}: {e}"))?;
        let key = RsaPrivateKey::from_pkcs8_pem(pem.trim())
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem.trim()))
            .map_err(|_| format!("{path} is not an RSA private key in PEM"))?;
        Ok(Minter { key })
    }

    /// The matching public key, as the server's `--public-key` file wants it.
    pub fn public_pem(&self) -> String {
        self.key.to_public_key().to_public_key_pem(LineEnding::LF).unwrap_or_default()
    }

    /// One token per device id, valid for a day; signed on every core.
    pub fn mint_all(&self, ids: &[String], run: &str) -> Vec<String> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).max(1);
        let chunk = ids.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            let handles: Vec<_> = ids
                .chunks(chunk)
                .map(|part| {
                    let signer = SigningKey::<Sha256>::new(self.key.clone());
                    scope.spawn(move || part.iter().map(|id| mint(&signer, id, run)).collect::<Vec<_>>())
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
        })
    }
}

fn mint(signer: &SigningKey<Sha256>, id: &str, run: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let claims = serde_json::json!({ "sub": id, "iat": now, "exp": now + 86_400, "jti": format!("{run}-{id}") });
    let header = b64(br#"{"alg":"RS256","typ":"JWT"}"#);
    let input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
    let signature = signer.sign(input.as_bytes()).to_vec();
    format!("{input}.{}", b64(&signature))
}

fn b64(bytes: &[u8]) -> String {
    Base64UrlSafeNoPadding::encode_to_string(bytes).unwrap_or_default()
}
