//! Device token verification: RS256 signature with the configured key, claims by the core.
//!
//! jwt-simple cannot be used for the check itself: its claims parser wants a numeric `exp`, and
//! the platform minted tokens whose `exp` is a serialised JavaScript `Date`. So the signature is
//! checked here and the claims go to `iot_ws_core::check_claims`. Only `alg: RS256` is accepted,
//! which shuts out `none` and HS256-keyed-with-the-public-key forgeries.
//!
//! The signature check is `ring`'s (about 20 µs for RSA-2048, against about 200 µs for the
//! pure-Rust `rsa` crate: a reconnecting fleet with fresh tokens is bound by it). ring accepts
//! moduli of 2048 to 8192 bits; a smaller or larger key is checked with the `rsa` crate instead,
//! which also parses the PEM.
//!
//! Several keys may be trusted at once (`--public-key` naming a directory of `*.pem` files), so
//! that keys rotate with an overlap: a token is accepted if one of them verifies it. A token whose
//! header has a `kid` naming one of the keys (its file name without `.pem`) is checked with that
//! key only; any other token is tried against each key. [`TokenVerifier::reload`] (SIGHUP) reads
//! the keys again; keys that do not load leave the ones in use.
//!
//! Accepted tokens are remembered by hash ([`TokenCache`]): a device reconnecting with the same
//! token skips the RSA check, never the expiry check. The cache belongs to one set of keys: a
//! reload starts an empty one, so a token of a key taken out is refused at once.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use iot_ws_core::claims::{parse_iso8601, LEEWAY_SECS};
use iot_ws_core::{check_claims, DeviceId, TokenRejected, UnixSeconds};
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use rsa::traits::PublicKeyParts;
use rsa::RsaPublicKey;
use sha2::Sha256;

// A submodule of auth (not of main): the cache is an implementation detail of the verifier.
mod token_cache;
use token_cache::{TokenCache, Window, DEFAULT_CAPACITY};

/// Longest token accepted; real device tokens are well under 2 KiB.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Most key files read from a directory: rotation needs two or three.
const MAX_KEYS: usize = 64;

/// Verifies device tokens against the public keys in use.
pub struct TokenVerifier {
    /// The file or directory the keys are read from; `None` for a key given in memory (`--demo`).
    source: Option<PathBuf>,
    current: RwLock<Arc<Trusted>>,
}

/// The keys in use and the tokens they accepted.
struct Trusted {
    keys: Vec<NamedKey>,
    cache: TokenCache,
}

/// A key and its id: its file's name without `.pem`, which a token's `kid` may name.
struct NamedKey {
    id: String,
    key: Key,
}

enum Key {
    Ring(ring::signature::RsaPublicKeyComponents<Vec<u8>>),
    RustCrypto(VerifyingKey<Sha256>),
}

impl Key {
    fn new(key: RsaPublicKey) -> Key {
        if (2048..=8192).contains(&(key.size() * 8)) {
            Key::Ring(ring::signature::RsaPublicKeyComponents { n: key.n().to_bytes_be(), e: key.e().to_bytes_be() })
        } else {
            Key::RustCrypto(VerifyingKey::new(key))
        }
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256.
    fn verify(&self, signed: &[u8], signature: &[u8]) -> Result<(), TokenRejected> {
        let valid = match self {
            Key::Ring(key) => key.verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, signed, signature).is_ok(),
            Key::RustCrypto(key) => {
                Signature::try_from(signature).is_ok_and(|signature| key.verify(signed, &signature).is_ok())
            }
        };
        valid.then_some(()).ok_or(TokenRejected::Signature)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read public key {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("public key {path} is not an RSA public key in PEM (BEGIN PUBLIC KEY or BEGIN RSA PUBLIC KEY)")]
    Parse { path: String },
    #[error("public key directory {path} has no *.pem file, or more than {MAX_KEYS}")]
    Count { path: String },
}

impl TokenVerifier {
    /// Loads the PEM public key at `path`, or each `*.pem` file in it if it is a directory.
    pub fn from_file(path: &Path) -> Result<TokenVerifier, KeyError> {
        let keys = read_keys(path)?;
        Ok(TokenVerifier { source: Some(path.to_path_buf()), current: RwLock::new(Arc::new(Trusted::new(keys))) })
    }

    /// Reads "BEGIN PUBLIC KEY" (SPKI) or "BEGIN RSA PUBLIC KEY" (PKCS#1) text (`--demo`'s key).
    #[cfg(feature = "keys")]
    pub fn from_pem(pem: &str) -> Option<TokenVerifier> {
        let keys = vec![NamedKey { id: String::new(), key: parse_pem(pem)? }];
        Some(TokenVerifier { source: None, current: RwLock::new(Arc::new(Trusted::new(keys))) })
    }

    /// Reads the keys again, from where they were first read; on any error the keys in use stay.
    /// Returns how many keys are in use now.
    pub fn reload(&self) -> Result<usize, String> {
        let Some(source) = &self.source else { return Err("a demo key is not reloaded".into()) };
        let keys = read_keys(source).map_err(|e| e.to_string())?;
        let count = keys.len();
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(Trusted::new(keys));
        Ok(count)
    }

    fn trusted(&self) -> Arc<Trusted> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Whether `token` admits `device` at `now`: from the cache when this exact token was
    /// accepted before (expiry and subject checked again), else by signature and claims.
    pub fn verify(&self, device: &DeviceId, token: &str, now: SystemTime) -> Result<(), TokenRejected> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenRejected::Malformed);
        }
        let now = UnixSeconds(now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64));
        let trusted = self.trusted();
        let key = TokenCache::key(device, token);
        if let Some(window) = trusted.cache.get(&key) {
            let verdict = window.check(now);
            if verdict == Err(TokenRejected::Expired) {
                trusted.cache.remove(&key);
            }
            return verdict;
        }
        trusted.verify_uncached(device, token, now).map(|claims| {
            if let Some(window) = window(&claims) {
                trusted.cache.insert(key, window);
            }
        })
    }

    #[cfg(all(test, feature = "keys"))]
    fn cached(&self) -> usize {
        self.trusted().cache.len()
    }
}

impl Trusted {
    fn new(keys: Vec<NamedKey>) -> Trusted {
        Trusted { keys, cache: TokenCache::new(DEFAULT_CAPACITY) }
    }

    /// Signature and claims; the claims text of an accepted token.
    fn verify_uncached(&self, device: &DeviceId, token: &str, now: UnixSeconds) -> Result<String, TokenRejected> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenRejected::Malformed);
        };
        let kid = check_header(&decode(header)?)?;
        let signed = &token.as_bytes()[..header.len() + 1 + payload.len()];
        let signature = decode(signature)?;
        // The key the token names, if it is one of ours; else each key in turn.
        let named = self.keys.iter().find(|k| kid.as_deref() == Some(k.id.as_str()));
        let mut candidates = named.into_iter().chain(self.keys.iter().filter(|_| named.is_none()));
        if !candidates.any(|k| k.key.verify(signed, &signature).is_ok()) {
            return Err(TokenRejected::Signature);
        }
        let claims = String::from_utf8(decode(payload)?).map_err(|_| TokenRejected::Malformed)?;
        check_claims(&claims, device, now)?;
        Ok(claims)
    }
}

/// The key in the file `path`, or those of the `*.pem` files in it, by name, if a directory.
fn read_keys(path: &Path) -> Result<Vec<NamedKey>, KeyError> {
    let shown = || path.display().to_string();
    if !path.is_dir() {
        return Ok(vec![read_key(path)?]);
    }
    let entries = std::fs::read_dir(path).map_err(|source| KeyError::Read { path: shown(), source })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|file| file.extension().is_some_and(|ext| ext == "pem"))
        .take(MAX_KEYS + 1)
        .collect();
    if files.is_empty() || files.len() > MAX_KEYS {
        return Err(KeyError::Count { path: shown() });
    }
    files.sort();
    files.iter().map(|file| read_key(file)).collect()
}

fn read_key(path: &Path) -> Result<NamedKey, KeyError> {
    let shown = path.display().to_string();
    let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Read { path: shown.clone(), source })?;
    let key = parse_pem(&pem).ok_or(KeyError::Parse { path: shown })?;
    let id = path.file_stem().map_or_else(String::new, |stem| stem.to_string_lossy().into_owned());
    Ok(NamedKey { id, key })
}

fn parse_pem(pem: &str) -> Option<Key> {
    let key = RsaPublicKey::from_public_key_pem(pem.trim()).or_else(|_| RsaPublicKey::from_pkcs1_pem(pem.trim()));
    key.ok().map(Key::new)
}

/// The validity window of claims that `check_claims` accepted, with its leeway applied, so that
/// [`Window::check`] decides exactly as `check_claims` would. `None` (not cached) if a time claim
/// has a shape this cannot read the same way.
fn window(claims: &str) -> Option<Window> {
    #[derive(serde::Deserialize)]
    struct Times {
        #[serde(default)]
        exp: Option<serde_json::Value>,
        #[serde(default)]
        nbf: Option<serde_json::Value>,
    }
    let times: Times = serde_json::from_str(claims).ok()?;
    let seconds = |v: &serde_json::Value| match v {
        // As `check_claims`: any JSON number, fractions cut, huge values saturated.
        serde_json::Value::Number(n) => n.as_f64().map(|f| f as i64),
        serde_json::Value::String(s) => parse_iso8601(s),
        _ => None,
    };
    let until = match &times.exp {
        None => i64::MAX,
        Some(v) => seconds(v)?.saturating_add(LEEWAY_SECS),
    };
    let from = match &times.nbf {
        None => i64::MIN,
        Some(v) => seconds(v)?.saturating_sub(LEEWAY_SECS),
    };
    Some(Window { from, until })
}

/// Base64url without padding, strictly (no `=`, no stray bits). The `base64` crate, already
/// linked for PostgreSQL's SCRAM, decodes a token's parts in 0.2 µs; ct-codecs' constant-time
/// decoder took 2.1 µs, a twentieth of a fresh registration, to hide nothing secret.
fn decode(part: &str) -> Result<Vec<u8>, TokenRejected> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenRejected::Malformed)
}

#[derive(serde::Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    crit: Option<serde_json::Value>,
    #[serde(default)]
    kid: Option<String>,
}

/// RS256 and nothing else; no critical extensions we would not understand. The key id, if any.
fn check_header(header: &[u8]) -> Result<Option<String>, TokenRejected> {
    let header: Header = serde_json::from_slice(header).map_err(|_| TokenRejected::Malformed)?;
    if header.alg != "RS256" {
        return Err(TokenRejected::Algorithm);
    }
    if header.crit.is_some() {
        return Err(TokenRejected::Malformed);
    }
    Ok(header.kid)
}

/// The tests sign their tokens with the `keys` feature's minting.
#[cfg(all(test, feature = "keys"))]
mod tests;
