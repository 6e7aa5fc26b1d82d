//! SCRAM channel binding (`tls-server-end-point`, RFC 5929 section 4.1): the hash of the server's
//! certificate that the client proves it saw, so that a man in the middle who terminates TLS
//! cannot pass the password exchange on, even under `sslmode=require`, which checks no
//! certificate. PostgreSQL offers SCRAM-SHA-256-PLUS over TLS and tokio-postgres uses it when
//! the TLS stream gives this hash (`channel_binding=require` in the URL insists on it).
//!
//! The hash function is the one the certificate is signed with, SHA-256 in place of MD5 and
//! SHA-1. Reading that needs only the outer layers of the certificate's DER, walked here by hand:
//! `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm SEQUENCE { OID, .. }, .. }`.
//! (tokio-postgres-rustls does the same with x509-cert and RustCrypto's sha2, ~70 KiB on the
//! ARM gateways; ring, already linked for TLS, hashes.)

use ring::digest::{Algorithm, SHA256, SHA384, SHA512};

/// The `tls-server-end-point` data for a server certificate (DER); `None` when its signature
/// algorithm names no hash (Ed25519, RSASSA-PSS, unknown) or it does not parse: then no channel
/// binding is offered, as libpq does.
pub fn end_point(cert: &[u8]) -> Option<Vec<u8>> {
    let hash = hash_for(signature_algorithm(cert)?)?;
    Some(ring::digest::digest(hash, cert).as_ref().to_vec())
}

/// The hash for a signature algorithm's OID (its content bytes).
fn hash_for(oid: &[u8]) -> Option<&'static Algorithm> {
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01]; // 1.2.840.113549.1.1
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04]; // 1.2.840.10045.4
    match oid {
        // md5, sha1, sha256 WithRSAEncryption
        [rsa @ .., 4 | 5 | 11] if rsa == RSA => Some(&SHA256),
        [rsa @ .., 12] if rsa == RSA => Some(&SHA384),
        [rsa @ .., 13] if rsa == RSA => Some(&SHA512),
        // ecdsa-with-SHA1
        [ecdsa @ .., 1] if ecdsa == ECDSA => Some(&SHA256),
        // ecdsa-with-SHA256, -SHA384, -SHA512
        [ecdsa @ .., 3, 2] if ecdsa == ECDSA => Some(&SHA256),
        [ecdsa @ .., 3, 3] if ecdsa == ECDSA => Some(&SHA384),
        [ecdsa @ .., 3, 4] if ecdsa == ECDSA => Some(&SHA512),
        _ => None,
    }
}

/// The OID of the certificate's `signatureAlgorithm`.
fn signature_algorithm(cert: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (certificate, _) = element(cert, SEQUENCE)?;
    let (_tbs, rest) = element(certificate, SEQUENCE)?;
    let (algorithm, _) = element(rest, SEQUENCE)?;
    let (oid, _) = element(algorithm, OID)?;
    Some(oid)
}

/// The content of the DER element at the start of `der` if its tag is `tag`, and what follows
/// it. Lengths in short form or long form up to four bytes (a certificate is far below 4 GiB).
fn element(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, der) = der.split_first()?;
    let (&len, mut der) = der.split_first()?;
    if first != tag {
        return None;
    }
    let len = if len < 0x80 {
        usize::from(len)
    } else {
        let count = usize::from(len & 0x7f);
        if !(1..=4).contains(&count) || der.len() < count {
            return None;
        }
        let (bytes, rest) = der.split_at(count);
        der = rest;
        bytes.iter().fold(0usize, |n, &b| (n << 8) + usize::from(b))
    };
    (len <= der.len()).then(|| der.split_at(len))
}

#[cfg(test)]
mod tests;
