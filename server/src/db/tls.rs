//! The rustls side of TLS to PostgreSQL: the client configuration each `sslmode` needs (what
//! the modes mean: `db/sslmode.rs`), and the trusted roots it checks against.
//!
//! rustls's `ring` provider, which the build already links for RS256; never aws-lc-rs (cmake
//! and a C toolchain per gateway target, and a larger binary). The system's roots are read at
//! run time by rustls-native-certs rather than embedded: the gateways' binary size matters and
//! their CA store is kept up to date by the OS.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::db::sslmode::{Roots, SslMode};
use crate::db::tls_connect::MakeRustlsConnect;

/// The TLS connector for `mode`; `Err` (a configuration error's text) when its roots cannot be
/// loaded. Built for every mode, `disable` included: tokio-postgres then never uses it.
pub fn connector(mode: &SslMode) -> Result<MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => Arc::new(NameUnchecked { roots: None, algorithms }),
        SslMode::VerifyCa(roots) => Arc::new(NameUnchecked { roots: Some(load(roots)?), algorithms }),
        SslMode::VerifyFull(roots) => WebPkiServerVerifier::builder_with_provider(load(roots)?, provider.clone())
            .build()
            .map_err(|e| format!("cannot check certificates: {e}"))?,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // As libpq 17 does: PostgreSQL 17 requires it for sslnegotiation=direct (not tested here:
    // the tests' PostgreSQL is 15), older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(MakeRustlsConnect::new(config))
}

/// The trusted CA certificates: a PEM file's, or the system's.
fn load(roots: &Roots) -> Result<Arc<RootCertStore>, String> {
    let file = match roots {
        Roots::File(path) => Some(path.as_path()),
        Roots::System => None,
    };
    crate::tls::roots("sslrootcert", file).map(Arc::new)
}

/// `prefer` and `require` (no roots): any certificate is accepted, as libpq does in these modes
/// (the connection is encrypted, not authenticated). `verify-ca` (roots): the chain must lead to
/// one of them, whatever name the certificate is for; rustls's own verifier always checks the
/// name too, so its chain check is called directly. Either way the handshake's signatures are
/// checked: the server must hold the key of the certificate it sends.
#[derive(Debug)]
struct NameUnchecked {
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NameUnchecked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
