//! TLS on the one port. With `[tls]`, every accepted TCP connection goes through a rustls
//! handshake before hyper sees it, so the OpenAPI, the console and the gateway are served as
//! HTTPS and WSS; the port then speaks nothing else.
//!
//! rustls with the `ring` provider, TLS 1.2 and 1.3, ALPN `http/1.1` (hyper serves HTTP/1 only).
//! The certificate and key are read once, when the server starts ([`Acceptor::load`]): a new
//! certificate takes a restart. A handshake must finish within `tls.handshake_timeout_ms`, so a
//! client that connects and says nothing cannot hold a socket. Failed handshakes are counted
//! (`herald_tls_handshake_failures_total`) and logged at debug only: anyone who can reach the
//! port can cause them.
//!
//! The gateway runs over a [`TlsConn`] through the [`Transport`] implementation here. Reads go
//! through rustls's buffer and [`FrameReader::read_lazily`], which holds no read buffer of its own
//! while the client is silent; each batch of writes is flushed, because rustls may keep encrypted
//! records back until then.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncWriteExt as _, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject as _};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ConfigError, TlsConfig};
use crate::gateway::{write_all, Transport};
use crate::metrics::{Metrics, TlsFailure};
use crate::ws::{FrameReader, Incoming, WsError};

/// A TLS connection as the server serves it.
pub(crate) type TlsConn = tokio_rustls::server::TlsStream<TcpStream>;

/// Turns accepted TCP connections into TLS connections. Cheap to clone (the rustls configuration
/// is shared).
#[derive(Clone)]
pub(crate) struct Acceptor {
    inner: tokio_rustls::TlsAcceptor,
    handshake_timeout: Duration,
}

impl Acceptor {
    /// Reads the certificate chain and key of `config` and builds the server's TLS configuration.
    /// Every failure is a [`ConfigError::Tls`] naming the file.
    pub(crate) fn load(config: &TlsConfig) -> Result<Acceptor, ConfigError> {
        let certs = read_certs(&config.cert)?;
        let key = PrivateKeyDer::from_pem_file(&config.key)
            .map_err(|e| pem_error("key", &config.key, e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ConfigError::Invalid(format!("tls: {e}")))?
            .with_no_client_auth()
            // Also checks that the key is the certificate's.
            .with_single_cert(certs, key)
            .map_err(|e| ConfigError::Tls {
                key: "key",
                path: config.key.clone(),
                reason: format!(
                    "cannot be used with the certificate in {}: {e}",
                    config.cert.display()
                ),
            })?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Acceptor {
            inner: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            handshake_timeout: config.handshake_timeout(),
        })
    }

    /// Runs the server side of the handshake on `stream`: the TLS connection, or `None` when the
    /// handshake failed or did not finish in time (counted in `metrics` before the socket is
    /// closed).
    pub(crate) async fn handshake(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        metrics: &Metrics,
    ) -> Option<TlsConn> {
        // Fallible: on failure the socket comes back, so it is counted before it is closed.
        let accept = self.inner.accept(stream).into_fallible();
        tokio::pin!(accept);
        let outcome = tokio::select! {
            outcome = &mut accept => outcome,
            () = tokio::time::sleep(self.handshake_timeout) => {
                metrics.tls_handshake_failed(TlsFailure::Timeout);
                tracing::debug!(%peer, "TLS handshake timed out");
                return None;
            }
        };
        match outcome {
            Ok(conn) => Some(conn),
            Err((error, _stream)) => {
                metrics.tls_handshake_failed(TlsFailure::Error);
                tracing::debug!(%peer, %error, "TLS handshake failed");
                None
            }
        }
    }
}

/// Every certificate in the PEM file at `path`, in order; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error("cert", path, e))?;
    if certs.is_empty() {
        return Err(ConfigError::Tls {
            key: "cert",
            path: path.to_owned(),
            reason: "no CERTIFICATE in the file".into(),
        });
    }
    Ok(certs)
}

fn pem_error(key: &'static str, path: &Path, error: pem::Error) -> ConfigError {
    let reason = match error {
        pem::Error::Io(e) => format!("cannot read: {e}"),
        pem::Error::NoItemsFound => {
            "no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY in the file".into()
        }
        e => format!("not valid PEM: {e}"),
    };
    ConfigError::Tls {
        key,
        path: path.to_owned(),
        reason,
    }
}

impl Transport for TlsConn {
    type Read = ReadHalf<TlsConn>;
    type Write = WriteHalf<TlsConn>;

    fn split(self) -> (Self::Read, Self::Write) {
        // Both halves are driven by the one connection task, so the lock between them is never
        // contended.
        tokio::io::split(self)
    }

    fn read_frame<'a>(
        rd: &'a mut Self::Read,
        reader: &'a mut FrameReader,
    ) -> impl Future<Output = Result<Incoming, WsError>> + Send + 'a {
        reader.read_lazily(rd)
    }

    async fn write_chunks<'a>(
        wr: &'a mut Self::Write,
        chunks: &'a mut Vec<Bytes>,
    ) -> io::Result<()> {
        write_all(wr, chunks).await?;
        // rustls may have taken the last bytes while the socket was full, holding their records
        // back: send them now, not with the next write.
        wr.flush().await
    }
}
