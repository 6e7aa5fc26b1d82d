//! Throwaway certificate authorities and the certificates they issue, for TLS tests (PostgreSQL
//! over TLS, wss:// devices).
//!
//! Every [`Ca`] is new per call: a test that wants "the wrong CA" makes a second one. Keys are
//! ECDSA P-256 (fast to generate, verified by rustls's `ring` provider and by OpenSSL, which
//! PostgreSQL uses). Certificates are valid from 1975 to 4096, rcgen's default, so no test ever
//! meets an expiry.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// A self-signed certificate authority that exists only in this test process.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

/// A leaf certificate (the chain is the leaf alone: it is signed by the CA directly) and its
/// private key in PKCS#8 PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    /// A throwaway self-signed CA named `name` (its subject's common name).
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("generate the CA key");
        let cert_pem = params.self_signed(&key).expect("self-sign the CA").pem();
        Ca { issuer: Issuer::new(params, key), cert_pem }
    }

    /// The CA's own certificate, PEM: what a client trusts.
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// A certificate for `names` (subject alternative names: an IP address where the name
    /// parses as one, else a DNS name), signed by this CA. The first name is also its common
    /// name; it serves as a TLS server and as a client.
    pub fn issue(&self, names: &[&str]) -> Issued {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("names that fit a certificate");
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, first.as_str());
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("generate a key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign the certificate");
        Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    /// Issues a certificate for `names` and writes `dir/stem.crt` (the certificate),
    /// `dir/stem.key` (its key, mode 0600) and `dir/stem-ca.crt` (this CA's certificate).
    /// Returns their paths: (certificate, key, CA).
    ///
    /// Run as root with a `postgres` user on the machine, the files are given to that user:
    /// PostgreSQL refuses a key file that it does not own with mode 0600 (root, which runs the
    /// tests, reads them anyway).
    pub fn write(&self, dir: &Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
        let issued = self.issue(names);
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        let ca = dir.join(format!("{stem}-ca.crt"));
        write_file(&cert, &issued.cert_pem, 0o644);
        write_file(&key, &issued.key_pem, 0o600);
        write_file(&ca, &self.cert_pem, 0o644);
        if let Some((uid, gid)) = postgres_user_if_root() {
            for path in [&cert, &key, &ca] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("chown postgres {}: {e}", path.display()));
            }
        }
        (cert, key, ca)
    }
}

fn write_file(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    // Set after writing: a file that already existed keeps its old mode through `write`.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// The `postgres` user's uid and gid, when this process is root (only root may give files away)
/// and the user exists.
fn postgres_user_if_root() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = c"postgres";
    // SAFETY: getpwnam reads a NUL-terminated name and returns a pointer to static storage (or
    // null), read here at once, before any other call could overwrite it.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return None;
    }
    // SAFETY: non-null, so it points at a valid passwd record.
    let entry = unsafe { &*entry };
    Some((entry.pw_uid, entry.pw_gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_name_their_hosts_and_keys_are_pkcs8() {
        let ca = Ca::new("test CA");
        let issued = ca.issue(&["localhost", "127.0.0.1"]);
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(issued.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(issued.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8");
        assert_ne!(issued.cert_pem, ca.cert_pem());
    }

    #[test]
    fn write_puts_the_key_at_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::TempDir::new("certs");
        let (cert, key, ca_path) = Ca::new("write CA").write(dir.path(), "server", &["localhost"]);
        assert_eq!(cert, dir.path().join("server.crt"));
        assert_eq!(ca_path, dir.path().join("server-ca.crt"));
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(std::fs::read_to_string(&key).unwrap().contains("PRIVATE KEY"));
    }
}
