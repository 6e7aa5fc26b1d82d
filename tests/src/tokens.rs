//! Fresh RSA key pairs and device tokens: real ones and hostile ones.
//!
//! Well-formed tokens are minted with jwt-simple; shapes it cannot make (an ISO-8601 string
//! `exp`, as the platform's own tokens carry, or arbitrary claims) are signed here RS256 with the
//! `rsa` crate from the same private key.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use ct_codecs::{Base64UrlSafeNoPadding, Encoder};
use jwt_simple::prelude::{Claims, Duration, HS256Key, MACLike, RS256KeyPair, RSAKeyPairLike};
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer};
use rsa::RsaPrivateKey;
use sha2::Sha256;

use crate::temp::TempDir;

/// An RSA key pair on disk (`public.pem`, `private.pem`) and in memory.
pub struct Keys {
    dir: PathBuf,
    pub private_pem: String,
    pub public_pem: String,
    signer: SigningKey<Sha256>,
}

impl Keys {
    /// A fresh pair of `bits` (2048 for anything jwt-simple signs; 1024 is only for the load
    /// smoke, where thousands of tokens are signed by an unoptimised test build).
    pub fn generate(bits: usize) -> Keys {
        let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits).expect("generate RSA key");
        let private_pem = key.to_pkcs8_pem(LineEnding::LF).expect("private pem").to_string();
        let public_pem = key.to_public_key().to_public_key_pem(LineEnding::LF).expect("public pem");
        let dir = TempDir::new("keys").remove_at_exit();
        std::fs::write(dir.join("private.pem"), &private_pem).expect("write private.pem");
        std::fs::write(dir.join("public.pem"), &public_pem).expect("write public.pem");
        Keys { dir, private_pem, public_pem, signer: SigningKey::new(key) }
    }

    /// The server's key pair, generated once per test process.
    pub fn shared() -> &'static Keys {
        static KEYS: OnceLock<Keys> = OnceLock::new();
        KEYS.get_or_init(|| Keys::generate(2048))
    }

    /// Another key pair, for tokens the server must not trust.
    pub fn other() -> &'static Keys {
        static KEYS: OnceLock<Keys> = OnceLock::new();
        KEYS.get_or_init(|| Keys::generate(2048))
    }

    pub fn public_path(&self) -> PathBuf {
        self.dir.join("public.pem")
    }

    pub fn private_path(&self) -> PathBuf {
        self.dir.join("private.pem")
    }

    /// A valid device token minted with jwt-simple: RS256, `sub`, numeric `exp` in one hour.
    pub fn token(&self, device: &str) -> String {
        let pair = RS256KeyPair::from_pem(&self.private_pem).expect("jwt-simple reads the key");
        let claims = Claims::create(Duration::from_hours(1)).with_subject(device);
        pair.sign(claims).expect("sign")
    }

    /// A jwt-simple token with `nbf` one hour ahead.
    pub fn token_not_yet_valid(&self, device: &str) -> String {
        let pair = RS256KeyPair::from_pem(&self.private_pem).expect("jwt-simple reads the key");
        let claims = Claims::create(Duration::from_hours(2))
            .with_subject(device)
            .invalid_before(jwt_simple::prelude::Clock::now_since_epoch() + Duration::from_hours(1));
        pair.sign(claims).expect("sign")
    }

    /// RS256 over any claims (JSON text), header `{"alg":"RS256","typ":"JWT"}`.
    pub fn sign_claims(&self, claims_json: &str) -> String {
        self.sign_raw(r#"{"alg":"RS256","typ":"JWT"}"#, claims_json)
    }

    /// Tokens for many devices (`sub` each id, `exp` one hour ahead), signed on every core: an
    /// unoptimised test build signs slowly.
    pub fn tokens_for(&self, devices: &[String]) -> Vec<String> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let per = devices.len().div_ceil(threads).max(1);
        let exp = now_secs() + 3_600;
        std::thread::scope(|s| {
            let handles: Vec<_> = devices
                .chunks(per)
                .map(|chunk| {
                    s.spawn(move || {
                        chunk
                            .iter()
                            .map(|id| self.sign_claims(&serde_json::json!({"sub": id, "exp": exp}).to_string()))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("signing thread")).collect()
        })
    }

    /// RS256 over any header and claims: the signing input is exactly base64url(header) "."
    /// base64url(claims).
    pub fn sign_raw(&self, header_json: &str, claims_json: &str) -> String {
        let input = format!("{}.{}", b64(header_json.as_bytes()), b64(claims_json.as_bytes()));
        let signature = self.signer.sign(input.as_bytes()).to_vec();
        format!("{input}.{}", b64(&signature))
    }

    /// Re-reads the private key (e.g. to hand it to another signer).
    pub fn private_key(&self) -> RsaPrivateKey {
        RsaPrivateKey::from_pkcs8_pem(&self.private_pem).expect("private pem")
    }
}

/// base64url without padding, as JWTs use.
pub fn b64(bytes: &[u8]) -> String {
    Base64UrlSafeNoPadding::encode_to_string(bytes).expect("base64")
}

/// Wall-clock seconds since the epoch.
pub fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// An unsigned token: `alg: none`, empty signature.
pub fn alg_none(device: &str) -> String {
    let claims = format!(r#"{{"sub":"{device}","exp":{}}}"#, now_secs() + 3600);
    format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), b64(claims.as_bytes()))
}

/// The classic forgery: HS256 keyed with the bytes of the server's public key PEM.
pub fn hs256_with_public_key(public_pem: &str, device: &str) -> String {
    let key = HS256Key::from_bytes(public_pem.as_bytes());
    key.authenticate(Claims::create(Duration::from_hours(1)).with_subject(device)).expect("hs256")
}
