use super::*;
use ct_codecs::{Base64UrlSafeNoPadding, Encoder};
use jwt_simple::prelude::*;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use std::sync::OnceLock;
use std::time::Duration as StdDuration;

use crate::commands::keys::{mint_token, KeyPair};

fn pair() -> &'static KeyPair {
    static PAIR: OnceLock<KeyPair> = OnceLock::new();
    PAIR.get_or_init(|| KeyPair::generate().unwrap())
}

fn verifier() -> TokenVerifier {
    TokenVerifier::from_pem(&pair().public_pem).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    Base64UrlSafeNoPadding::encode_to_string(bytes).unwrap()
}

/// Signs arbitrary header and claims text with the test key, as the platform's own minting did.
fn sign_raw(header: &str, claims: &str) -> String {
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(&pair().private_pem).unwrap();
    let signing = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let signature = SigningKey::<Sha256>::new(key).sign(signing.as_bytes());
    format!("{signing}.{}", b64(&signature.to_bytes()))
}

fn dev() -> DeviceId {
    DeviceId("dev-1".into())
}

fn now() -> SystemTime {
    SystemTime::now()
}

const RS256: &str = r#"{"alg":"RS256","typ":"JWT"}"#;

#[test]
fn token_minted_by_token_subcommand_is_valid() {
    let token = mint_token(&pair().private_pem, "dev-1", 3600).unwrap();
    assert_eq!(verifier().verify(&dev(), &token, now()), Ok(()));
}

#[test]
fn platform_token_with_iso_exp_is_valid_until_it_expires() {
    let token = sign_raw(RS256, r#"{"sub":"dev-1","exp":"2035-11-24T10:00:00.000Z","iat":1700000000}"#);
    assert_eq!(verifier().verify(&dev(), &token, now()), Ok(()));
    let expired = sign_raw(RS256, r#"{"sub":"dev-1","exp":"2020-01-01T00:00:00.000Z"}"#);
    assert_eq!(verifier().verify(&dev(), &expired, now()), Err(TokenRejected::Expired));
}

#[test]
fn token_without_exp_is_valid() {
    let token = sign_raw(RS256, r#"{"sub":"dev-1"}"#);
    assert_eq!(verifier().verify(&dev(), &token, now()), Ok(()));
}

#[test]
fn token_for_another_device_is_refused() {
    let token = mint_token(&pair().private_pem, "dev-2", 3600).unwrap();
    assert_eq!(verifier().verify(&dev(), &token, now()), Err(TokenRejected::Subject));
}

#[test]
fn token_signed_by_another_key_is_refused() {
    let other = KeyPair::generate().unwrap();
    let token = mint_token(&other.private_pem, "dev-1", 3600).unwrap();
    assert_eq!(verifier().verify(&dev(), &token, now()), Err(TokenRejected::Signature));
}

#[test]
fn expired_numeric_token_is_refused() {
    let token = mint_token(&pair().private_pem, "dev-1", 1).unwrap();
    let later = now() + StdDuration::from_secs(3600);
    assert_eq!(verifier().verify(&dev(), &token, later), Err(TokenRejected::Expired));
}

#[test]
fn hs256_keyed_with_the_public_key_is_refused() {
    let key = HS256Key::from_bytes(pair().public_pem.as_bytes());
    let token = key.authenticate(Claims::create(Duration::from_hours(1)).with_subject("dev-1")).unwrap();
    assert_eq!(verifier().verify(&dev(), &token, now()), Err(TokenRejected::Algorithm));
}

#[test]
fn alg_none_is_refused() {
    let token = format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), b64(br#"{"sub":"dev-1"}"#));
    assert_eq!(verifier().verify(&dev(), &token, now()), Err(TokenRejected::Algorithm));
}

#[test]
fn tampered_claims_are_refused() {
    let token = mint_token(&pair().private_pem, "dev-1", 3600).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], b64(br#"{"sub":"dev-1"}"#), parts[2]);
    assert_eq!(verifier().verify(&dev(), &forged, now()), Err(TokenRejected::Signature));
}

#[test]
fn garbage_is_malformed() {
    for token in ["", "a", "a.b", "a.b.c", "a.b.c.d", "....", "\u{0}.\u{0}.\u{0}"] {
        assert_eq!(verifier().verify(&dev(), token, now()), Err(TokenRejected::Malformed), "{token:?}");
    }
    let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert_eq!(verifier().verify(&dev(), &huge, now()), Err(TokenRejected::Malformed));
}

#[test]
fn parts_in_base64_other_than_unpadded_base64url_are_malformed() {
    let token = mint_token(&pair().private_pem, "dev-1", 3600).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let signature = parts[2];
    // 256 bytes: 342 characters, padded to 344 by standard base64.
    let padded = format!("{signature}==");
    // `+` and `/` are standard base64's, not base64url's.
    let standard = format!("+/{}", &signature[2..]);
    for signature in [padded, standard] {
        let token = format!("{}.{}.{signature}", parts[0], parts[1]);
        assert_eq!(verifier().verify(&dev(), &token, now()), Err(TokenRejected::Malformed), "{signature}");
    }
    assert_eq!(verifier().verify(&dev(), &token, now()), Ok(()));
}

#[test]
fn critical_header_extensions_are_refused() {
    let token = sign_raw(r#"{"alg":"RS256","crit":["exp"]}"#, r#"{"sub":"dev-1"}"#);
    assert_eq!(verifier().verify(&dev(), &token, now()), Err(TokenRejected::Malformed));
}

#[test]
fn pkcs1_public_keys_are_read_too() {
    use rsa::pkcs1::EncodeRsaPublicKey;
    let key = RsaPublicKey::from_public_key_pem(&pair().public_pem).unwrap();
    let pkcs1 = key.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap();
    assert!(pkcs1.starts_with("-----BEGIN RSA PUBLIC KEY-----"));
    assert!(TokenVerifier::from_pem(&pkcs1).is_some());
    assert!(TokenVerifier::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").is_none());
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + StdDuration::from_secs(secs)
}

#[test]
fn a_cached_token_still_expires_on_time() {
    let v = verifier();
    let token = sign_raw(RS256, r#"{"sub":"dev-1","exp":2000000000}"#);
    assert_eq!(v.verify(&dev(), &token, at(1_900_000_000)), Ok(()));
    assert_eq!(v.cached(), 1);
    // Same verdicts as check_claims, leeway included, from the cache.
    assert_eq!(v.verify(&dev(), &token, at(2_000_000_059)), Ok(()));
    assert_eq!(v.verify(&DeviceId("dev-2".into()), &token, at(2_000_000_059)), Err(TokenRejected::Subject));
    assert_eq!(v.cached(), 1, "a token that still passes, or was offered by another device, stays");
    assert_eq!(v.verify(&dev(), &token, at(2_000_000_060)), Err(TokenRejected::Expired));
    assert_eq!(v.cached(), 0, "an expired token leaves the cache");
    assert_eq!(v.verify(&dev(), &token, at(2_000_000_060)), Err(TokenRejected::Expired));
}

#[test]
fn a_cached_iso_exp_and_nbf_are_rechecked() {
    let v = verifier();
    let token = sign_raw(RS256, r#"{"sub":"dev-1","nbf":1900000000,"exp":"2035-11-24T10:00:00.000Z"}"#);
    assert_eq!(v.verify(&dev(), &token, at(1_950_000_000)), Ok(()));
    assert_eq!(v.cached(), 1, "an ISO exp is read for the cache too");
    assert_eq!(v.verify(&dev(), &token, at(1_899_999_000)), Err(TokenRejected::NotYetValid));
    assert_eq!(v.verify(&dev(), &token, at(2_100_000_000)), Err(TokenRejected::Expired));
}

#[test]
fn a_cached_token_admits_only_its_own_device() {
    let v = verifier();
    let token = mint_token(&pair().private_pem, "dev-1", 3600).unwrap();
    assert_eq!(v.verify(&dev(), &token, now()), Ok(()));
    assert_eq!(v.verify(&DeviceId("dev-2".into()), &token, now()), Err(TokenRejected::Subject));
}

#[test]
fn refused_tokens_are_not_cached() {
    let v = verifier();
    let tampered = {
        let token = mint_token(&pair().private_pem, "dev-1", 3600).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        format!("{}.{}.{}", parts[0], b64(br#"{"sub":"dev-1"}"#), parts[2])
    };
    assert_eq!(v.verify(&dev(), &tampered, now()), Err(TokenRejected::Signature));
    let other_sub = sign_raw(RS256, r#"{"sub":"dev-2"}"#);
    assert_eq!(v.verify(&dev(), &other_sub, now()), Err(TokenRejected::Subject));
    assert_eq!(v.cached(), 0);
}

#[test]
fn a_verifier_with_another_key_starts_with_an_empty_cache() {
    let v = verifier();
    let token = mint_token(&pair().private_pem, "dev-1", 3600).unwrap();
    assert_eq!(v.verify(&dev(), &token, now()), Ok(()));
    let other = KeyPair::generate().unwrap();
    let rekeyed = TokenVerifier::from_pem(&other.public_pem).unwrap();
    assert_eq!(rekeyed.cached(), 0);
    assert_eq!(rekeyed.verify(&dev(), &token, now()), Err(TokenRejected::Signature));
}

/// Keys ring does not take (under 2048 bits) are still checked, by the `rsa` crate.
#[test]
fn a_1024_bit_key_is_checked_by_the_fallback() {
    use rsa::pkcs8::EncodePublicKey;
    let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
    let public_pem = private.to_public_key().to_public_key_pem(rsa::pkcs8::LineEnding::LF).unwrap();
    let verifier = TokenVerifier::from_pem(&public_pem).unwrap();
    assert!(matches!(verifier.trusted().keys[0].key, Key::RustCrypto(_)));
    let signing = format!("{}.{}", b64(br#"{"alg":"RS256","typ":"JWT"}"#), b64(br#"{"sub":"dev-1"}"#));
    let signature = SigningKey::<Sha256>::new(private).sign(signing.as_bytes()).to_bytes();
    assert_eq!(verifier.verify(&dev(), &format!("{signing}.{}", b64(&signature)), now()), Ok(()));
    let mut forged = signature.to_vec();
    forged[10] ^= 1;
    assert_eq!(verifier.verify(&dev(), &format!("{signing}.{}", b64(&forged)), now()), Err(TokenRejected::Signature));
}

#[test]
fn a_2048_bit_key_is_checked_by_ring() {
    assert!(matches!(verifier().trusted().keys[0].key, Key::Ring(_)));
}

/// A validly signed token exactly `len` bytes long: the header's trailing spaces and a padding
/// claim make up the length.
fn signed_token_of_length(len: usize) -> String {
    let b64_len = |n: usize| (4 * n).div_ceil(3);
    // RS256 with a 2048-bit key: 256 signature bytes.
    let signature = b64_len(256);
    for spaces in 0..3 {
        let header = format!("{}{}", RS256, " ".repeat(spaces));
        let claims_of = |pad: usize| format!(r#"{{"sub":"dev-1","pad":"{}"}}"#, "x".repeat(pad));
        let fixed = b64_len(header.len()) + 2 + signature;
        if let Some(pad) = (0..len).find(|&pad| fixed + b64_len(claims_of(pad).len()) >= len) {
            if fixed + b64_len(claims_of(pad).len()) == len {
                let token = sign_raw(&header, &claims_of(pad));
                assert_eq!(token.len(), len);
                return token;
            }
        }
    }
    unreachable!("some header length reaches every token length")
}

#[test]
fn tokens_up_to_8_kib_are_read_and_longer_ones_refused_unread() {
    let v = verifier();
    assert_eq!(v.verify(&dev(), &signed_token_of_length(4 * 1024), now()), Ok(()));
    assert_eq!(v.verify(&dev(), &signed_token_of_length(8 * 1024), now()), Ok(()));
    assert_eq!(v.verify(&dev(), &signed_token_of_length(8 * 1024 + 1), now()), Err(TokenRejected::Malformed));
}

fn other_pair() -> &'static KeyPair {
    static PAIR: OnceLock<KeyPair> = OnceLock::new();
    PAIR.get_or_init(|| KeyPair::generate().unwrap())
}

/// Signs with `pair`'s private key, as [`sign_raw`] does with the test key.
fn sign_with(pair: &KeyPair, header: &str, claims: &str) -> String {
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(&pair.private_pem).unwrap();
    let signing = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let signature = SigningKey::<Sha256>::new(key).sign(signing.as_bytes());
    format!("{signing}.{}", b64(&signature.to_bytes()))
}

/// A directory of this test's own holding `keys` as NAME.pem files.
fn key_dir(test: &str, keys: &[(&str, &KeyPair)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("iot-ws-keys-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, pair) in keys {
        std::fs::write(dir.join(format!("{name}.pem")), &pair.public_pem).unwrap();
    }
    dir
}

const CLAIMS: &str = r#"{"sub":"dev-1"}"#;

#[test]
fn a_directory_of_keys_accepts_a_token_of_any_of_them_and_a_kid_picks_one() {
    let dir = key_dir("several", &[("old", pair()), ("new", other_pair())]);
    std::fs::write(dir.join("README.txt"), "not a key: only *.pem files are read").unwrap();
    let verifier = TokenVerifier::from_file(&dir).unwrap();
    let by_old = sign_with(pair(), RS256, CLAIMS);
    let by_new = sign_with(other_pair(), RS256, CLAIMS);
    assert_eq!(verifier.verify(&dev(), &by_old, now()), Ok(()));
    assert_eq!(verifier.verify(&dev(), &by_new, now()), Ok(()));
    // A kid naming a listed key: that key only.
    let named_new = r#"{"alg":"RS256","kid":"new"}"#;
    assert_eq!(verifier.verify(&dev(), &sign_with(other_pair(), named_new, CLAIMS), now()), Ok(()));
    let wrong_kid = sign_with(pair(), named_new, CLAIMS);
    assert_eq!(verifier.verify(&dev(), &wrong_kid, now()), Err(TokenRejected::Signature));
    // A kid naming no listed key: every key is tried.
    let unknown_kid = sign_with(other_pair(), r#"{"alg":"RS256","kid":"elsewhere"}"#, CLAIMS);
    assert_eq!(verifier.verify(&dev(), &unknown_kid, now()), Ok(()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_key_directory_without_keys_or_with_a_bad_one_is_refused_by_name() {
    let dir = key_dir("empty", &[]);
    let err = TokenVerifier::from_file(&dir).err().unwrap().to_string();
    assert!(err.contains("no *.pem file") && err.contains("iot-ws-keys-empty"), "{err}");
    std::fs::write(dir.join("bad.pem"), "not a key").unwrap();
    let err = TokenVerifier::from_file(&dir).err().unwrap().to_string();
    assert!(err.contains("bad.pem") && err.contains("not an RSA public key"), "{err}");
    for i in 0..=MAX_KEYS {
        std::fs::write(dir.join(format!("k{i}.pem")), &pair().public_pem).unwrap();
    }
    std::fs::remove_file(dir.join("bad.pem")).unwrap();
    let err = TokenVerifier::from_file(&dir).err().unwrap().to_string();
    assert!(err.contains(&format!("more than {MAX_KEYS}")), "{err}");
    std::fs::remove_file(dir.join("k0.pem")).unwrap();
    assert!(TokenVerifier::from_file(&dir).is_ok(), "{MAX_KEYS} keys are allowed");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_reload_reads_the_keys_again_drops_the_cache_and_keeps_the_keys_if_they_do_not_load() {
    let dir = key_dir("reload", &[("old", pair())]);
    let verifier = TokenVerifier::from_file(&dir).unwrap();
    let (by_old, by_new) = (sign_with(pair(), RS256, CLAIMS), sign_with(other_pair(), RS256, CLAIMS));
    assert_eq!(verifier.verify(&dev(), &by_old, now()), Ok(()));
    assert_eq!(verifier.cached(), 1);
    assert_eq!(verifier.verify(&dev(), &by_new, now()), Err(TokenRejected::Signature));

    // The new key beside the old one: both accepted.
    std::fs::write(dir.join("new.pem"), &other_pair().public_pem).unwrap();
    assert_eq!(verifier.reload(), Ok(2));
    assert_eq!(verifier.cached(), 0, "a reload starts an empty cache");
    assert_eq!(verifier.verify(&dev(), &by_new, now()), Ok(()));
    assert_eq!(verifier.verify(&dev(), &by_old, now()), Ok(()));

    // The old key out: its token is refused at once, though it was cached.
    std::fs::remove_file(dir.join("old.pem")).unwrap();
    assert_eq!(verifier.reload(), Ok(1));
    assert_eq!(verifier.verify(&dev(), &by_old, now()), Err(TokenRejected::Signature));

    // A file that does not load: the keys in use stay.
    std::fs::write(dir.join("broken.pem"), "not a key").unwrap();
    let why = verifier.reload().unwrap_err();
    assert!(why.contains("broken.pem"), "{why}");
    assert_eq!(verifier.verify(&dev(), &by_new, now()), Ok(()));
    assert!(verifier.reload().is_err());
    std::fs::remove_dir_all(&dir).unwrap();

    assert!(TokenVerifier::from_pem(&pair().public_pem).unwrap().reload().is_err(), "a demo key has no file");
}
