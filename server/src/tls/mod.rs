//! wss://: the listener's TLS settings and its certificate, which a reload swaps in place; the
//! transport both ends share; the client end's trust (client.rs).
//!
//! The certificate chain and key are read at start (a bad pair is a configuration error, exit 2)
//! and again on each reload (SIGHUP); a reload that fails keeps the pair in use and says why.
//! rustls asks [`Certificate`] for the pair at every handshake, so new connections get the new
//! pair while open ones keep the session they have.

use std::fmt;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use smol::Async;

pub use client::{connector, roots};
pub use transport::Transport;

mod client;
mod server_stream;
mod transport;

/// Most bytes read from a certificate or key file: a chain of a few certificates is well under.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// The listener's certificate chain and key, as last loaded.
pub struct Certificate {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificate {
    /// Reads the pair; the error is one line naming the file at fault.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Certificate>, String> {
        let pair = read_pair(cert_path, key_path)?;
        Ok(Arc::new(Certificate {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new(Arc::new(pair)),
        }))
    }

    /// Reads the files again; on any error the pair in use stays.
    pub fn reload(&self) -> Result<(), String> {
        let pair = read_pair(&self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(pair);
        Ok(())
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(PoisonError::into_inner).clone())
    }
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Certificate({})", self.cert_path.display())
    }
}

/// rustls's defaults (TLS 1.2 and 1.3, its safe cipher suites) on ring, serving `certificate`.
pub fn acceptor(certificate: Arc<Certificate>) -> Arc<ServerConfig> {
    let config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .expect("ring provides every safe default protocol version")
        .with_no_client_auth()
        .with_cert_resolver(certificate);
    Arc::new(config)
}

/// The server end of a TLS handshake on `stream`.
pub async fn accept(config: &Arc<ServerConfig>, stream: Async<TcpStream>) -> std::io::Result<Transport> {
    Ok(Transport::Tls(Box::new(server_stream::accept(config.clone(), stream).await?)))
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn read_pair(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, String> {
    let chain = read_pem("--tls-cert", cert_path)?;
    let chain = CertificateDer::pem_slice_iter(&chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--tls-cert {}: not a PEM certificate chain ({e})", cert_path.display()))?;
    if chain.is_empty() {
        return Err(format!("--tls-cert {}: no CERTIFICATE in it", cert_path.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(&read_pem("--tls-key", key_path)?)
        .map_err(|e| format!("--tls-key {}: no PEM private key in it ({e})", key_path.display()))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        format!("--tls-cert {} and --tls-key {}: not a usable pair ({e})", cert_path.display(), key_path.display())
    })
}

fn read_pem(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut pem = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_PEM_BYTES).read_to_end(&mut pem))
        .map_err(|e| format!("{flag} {}: cannot read it ({e})", path.display()))?;
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/tls/testdata").join(name)
    }

    /// The leaf certificate in use.
    fn leaf(certificate: &Certificate) -> Vec<u8> {
        certificate.current.read().unwrap().cert[0].to_vec()
    }

    fn first_der(pem_file: &str) -> Vec<u8> {
        CertificateDer::from_pem_file(testdata(pem_file)).unwrap().to_vec()
    }

    /// A directory of this test's own, with `localhost`'s pair in it as server.crt/server.key.
    fn pair_in_temp_dir(test: &str) -> (PathBuf, PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("iot-ws-tls-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
        std::fs::copy(testdata("localhost.crt"), &cert).unwrap();
        std::fs::copy(testdata("localhost.key"), &key).unwrap();
        (dir, cert, key)
    }

    #[test]
    fn a_reload_reads_the_files_again_and_a_bad_pair_keeps_the_one_in_use() {
        let (dir, cert, key) = pair_in_temp_dir("reload");
        let certificate = Certificate::load(&cert, &key).unwrap();
        assert_eq!(leaf(&certificate), first_der("localhost.crt"));
        assert!(format!("{certificate:?}").contains("server.crt"));

        std::fs::copy(testdata("other.crt"), &cert).unwrap();
        std::fs::copy(testdata("other.key"), &key).unwrap();
        certificate.reload().unwrap();
        assert_eq!(leaf(&certificate), first_der("other.crt"));

        std::fs::write(&key, "not a key").unwrap();
        let why = certificate.reload().unwrap_err();
        assert!(why.starts_with("--tls-key ") && why.contains("server.key"), "{why}");
        assert_eq!(leaf(&certificate), first_der("other.crt"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn each_bad_file_is_named_with_its_flag() {
        let (crt, key) = (testdata("localhost.crt"), testdata("localhost.key"));
        let missing = testdata("missing.pem");
        let error = |cert: &Path, key: &Path| Certificate::load(cert, key).unwrap_err();
        assert!(error(&missing, &key).starts_with(&format!("--tls-cert {}: cannot read it", missing.display())));
        assert!(error(&crt, &missing).starts_with(&format!("--tls-key {}: cannot read it", missing.display())));
        assert!(error(&key, &key).starts_with(&format!("--tls-cert {}: no CERTIFICATE", key.display())));
        assert!(error(&crt, &crt).starts_with(&format!("--tls-key {}: no PEM private key", crt.display())));
        let mismatched = error(&crt, &testdata("other.key"));
        assert!(mismatched.contains("not a usable pair"), "{mismatched}");
    }

    #[test]
    fn a_pem_file_is_read_up_to_its_bound() {
        let (dir, cert, _) = pair_in_temp_dir("bound");
        let big = dir.join("big.pem");
        std::fs::write(&big, vec![b'a'; MAX_PEM_BYTES as usize + 10]).unwrap();
        assert_eq!(read_pem("--tls-cert", &big).unwrap().len(), MAX_PEM_BYTES as usize);
        assert_eq!(read_pem("--tls-cert", &cert).unwrap(), std::fs::read(&cert).unwrap());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
