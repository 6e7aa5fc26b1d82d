//! The client end of TLS, for `device` and `actuate` with a `wss://` URL: the server's
//! certificate is checked against `--ca` (a PEM bundle) when given, else the system's CAs.

use std::path::Path;
use std::sync::Arc;

use futures_rustls::TlsConnector;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// A connector trusting `ca` (with `flag`, its option's name, for errors), else the system's CAs.
pub fn connector(flag: &str, ca: Option<&Path>) -> Result<TlsConnector, String> {
    let roots = match ca {
        Some(path) => roots_from_file(flag, path)?,
        None => system_roots()?,
    };
    let config = ClientConfig::builder_with_provider(Arc::new(super::provider()))
        .with_safe_default_protocol_versions()
        .expect("ring provides every safe default protocol version")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

fn roots_from_file(flag: &str, path: &Path) -> Result<RootCertStore, String> {
    let pem = super::read_pem(flag, path)?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{flag} {}: not a PEM certificate bundle ({e})", path.display()))?;
        roots.add(cert).map_err(|e| format!("{flag} {}: not a CA certificate rustls can use ({e})", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{flag} {}: no CERTIFICATE in it", path.display()));
    }
    Ok(roots)
}

/// The system's CA certificates (read at run time: /etc/ssl/certs on Debian), those rustls can use.
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err("no system CA certificates found (install ca-certificates, or give --ca PATH)".into());
    }
    Ok(roots)
}
