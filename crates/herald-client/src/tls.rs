//! [`Tls`]: which certificate authorities the SDK trusts on `https://` and `wss://`.
//!
//! rustls with the `ring` provider, TLS 1.2 and 1.3. By default the SDK trusts Mozilla's root
//! program as the `webpki-roots` crate compiles it in (no dependence on the system's store); a
//! server with a self-signed certificate, or one from a private authority, is trusted by adding
//! that certificate with [`Tls::with_root_pem`].

use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// How the SDK verifies a Herald server's certificate, for [`crate::connect_with_tls`] and
/// [`crate::OpenApiClient::with_tls`]. Cheap to clone.
///
/// ```no_run
/// # fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use herald_client::{OpenApiClient, Tls};
///
/// // Trust a self-signed test server as well as the usual public authorities.
/// let tls = Tls::with_root_pem(&std::fs::read("herald-cert.pem")?)?;
/// let api = OpenApiClient::new("https://herald.test:8443", "AK", "SK")?.with_tls(&tls);
/// # let _ = api;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Tls {
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

/// Why [`Tls::with_root_pem`] refused its certificates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// The text holds no `BEGIN CERTIFICATE` section.
    #[error("no certificate in the PEM text")]
    NoCertificate,
    /// A section is not valid PEM.
    #[error("invalid PEM: {0}")]
    Pem(String),
    /// A certificate cannot serve as a trust anchor (not a valid X.509 certificate).
    #[error("the certificate cannot be trusted as a root: {0}")]
    Certificate(String),
}

impl Default for Tls {
    /// Mozilla's roots ([`Tls::webpki_roots`]).
    fn default() -> Self {
        Tls::webpki_roots()
    }
}

impl Tls {
    /// Trusts the authorities of Mozilla's root program (the `webpki-roots` crate). Built once
    /// per process and shared.
    pub fn webpki_roots() -> Tls {
        static DEFAULT: OnceLock<Tls> = OnceLock::new();
        DEFAULT
            .get_or_init(|| Tls::from_roots(mozilla_roots()))
            .clone()
    }

    /// Trusts Mozilla's roots and every certificate in `pem` (PEM text with one or more
    /// `BEGIN CERTIFICATE` sections): a self-signed server certificate, or a private authority.
    pub fn with_root_pem(pem: &[u8]) -> Result<Tls, TlsError> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem(e.to_string()))?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let mut roots = mozilla_roots();
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| TlsError::Certificate(e.to_string()))?;
        }
        Ok(Tls::from_roots(roots))
    }

    fn from_roots(roots: RootCertStore) -> Tls {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("the ring provider has cipher suites for TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Herald serves HTTP/1.1 only, and a WebSocket upgrade is HTTP/1.1.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Tls {
            config: Arc::new(config),
        }
    }

    /// The rustls configuration, for the WebSocket connector.
    pub(crate) fn rustls(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }
}

fn mozilla_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_come_from_pem_or_not_at_all() {
        assert_eq!(
            Tls::with_root_pem(b"").unwrap_err(),
            TlsError::NoCertificate
        );
        assert_eq!(
            Tls::with_root_pem(b"just text\n").unwrap_err(),
            TlsError::NoCertificate
        );
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            Tls::with_root_pem(garbage),
            Err(TlsError::Certificate(_))
        ));
        let default = Tls::default();
        assert!(default.config.alpn_protocols == [b"http/1.1".to_vec()]);
    }
}
