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
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadHalf, WriteHalf};
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

// Generic over the transport below TLS so that tests can put a bounded in-memory pipe there.
impl<IO> Transport for tokio_rustls::server::TlsStream<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Read = ReadHalf<Self>;
    type Write = WriteHalf<Self>;

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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, DuplexStream};
    use tokio_rustls::rustls::pki_types::ServerName;

    /// A server and a client TLS stream over an in-memory pipe that holds `capacity` bytes.
    async fn pipe(
        capacity: usize,
    ) -> (
        tokio_rustls::server::TlsStream<DuplexStream>,
        tokio_rustls::client::TlsStream<DuplexStream>,
    ) {
        let rcgen::CertifiedKey { cert, key_pair } =
            rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::from_pem_slice(key_pair.serialize_pem().as_bytes()).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (server_io, client_io) = tokio::io::duplex(capacity);
        let name = ServerName::try_from("localhost").unwrap();
        let (server, client) = tokio::join!(
            tokio_rustls::TlsAcceptor::from(Arc::new(server)).accept(server_io),
            tokio_rustls::TlsConnector::from(Arc::new(client)).connect(name, client_io),
        );
        (server.unwrap(), client.unwrap())
    }

    #[tokio::test]
    async fn a_batch_that_meets_a_full_socket_is_flushed_whole() {
        // The pipe is far smaller than what rustls takes at once, so the batch's last bytes are
        // taken by rustls while the pipe is full: unless flushed, they would wait for the next
        // write, and the client below would never see them.
        let (server, mut client) = pipe(4096).await;
        let (_rd, mut wr) = Transport::split(server);
        let payload: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut chunks = vec![
            Bytes::from(payload[..1000].to_vec()),
            Bytes::from(payload[1000..].to_vec()),
        ];
        let write = async {
            <tokio_rustls::server::TlsStream<DuplexStream> as Transport>::write_chunks(
                &mut wr,
                &mut chunks,
            )
            .await
            .unwrap();
        };
        let read = async {
            let mut got = vec![0; payload.len()];
            client.read_exact(&mut got).await.unwrap();
            got
        };
        let both = async { tokio::join!(write, read).1 };
        let got = tokio::time::timeout(Duration::from_secs(10), both)
            .await
            .expect("every byte arrives");
        assert!(got == payload);
        assert!(chunks.is_empty());
    }
}
