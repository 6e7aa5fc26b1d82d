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
    let config = ClientConfig::builder_with_provider(Arc::new(super::provider()))
        .with_safe_default_protocol_versions()
        .expect("ring provides every safe default protocol version")
        .with_root_certificates(roots(flag, ca)?)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The CA certificates a server's certificate must chain to: those in the PEM file `file`
/// (`flag` names the setting in errors), else the system's (read at run time: /etc/ssl/certs on
/// Debian, or `SSL_CERT_FILE`). Certificates rustls cannot use are skipped; none left is an error.
pub fn roots(flag: &str, file: Option<&Path>) -> Result<RootCertStore, String> {
    let (certs, what) = match file {
        Some(path) => {
            let what = format!("{flag} {}", path.display());
            let pem = super::read_pem(flag, path)?;
            let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
            (certs.map_err(|e| format!("{what}: not PEM certificates ({e})"))?, what)
        }
        // Errors about single files or directories are not fatal: what loads is used.
        None => {
            (rustls_native_certs::load_native_certs().certs, format!("the system's CA certificates ({flag} not given)"))
        }
    };
    let mut store = RootCertStore::empty();
    let (added, _unusable) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{what}: no CA certificate found"));
    }
    Ok(store)
}
