//! What an idle connection costs the server, plain and over TLS: the real `herald serve` in a
//! child process, N idle WebSocket connections, its resident memory before and after.
//!
//! A measurement, not a check (timings and allocator behaviour vary by machine), so it is ignored
//! by default; run it with
//!
//! ```sh
//! cargo test --release -p herald --test tls_memory -- --ignored --nocapture
//! ```
//!
//! It prints KiB of server RSS per connection for each transport (docs/tls.md quotes a run).

use std::net::TcpListener as StdListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

const HERALD: &str = env!("CARGO_BIN_EXE_herald");
const APP_ID: &str = "65a1b2c3d4e5f60718293a4b";
const CONNECTIONS: usize = 1000;

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn serve(dir: &Path, extra: &str) -> (Running, u16) {
    let port = StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join(format!("herald-{port}.toml"));
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\n{extra}\n[[apps]]\napp_id = \"{APP_ID}\"\napp_key = \"k\"\n"
        ),
    )
    .unwrap();
    let child = Command::new(HERALD)
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "herald serve did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Running(child), port)
}

/// Upgrades `io` to a WebSocket and leaves it open.
async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) -> S {
    let request = format!(
        "GET /ws?appId={APP_ID} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    io.write_all(request.as_bytes()).await.unwrap();
    io.flush().await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            io.read(&mut byte).await.unwrap(),
            1,
            "closed during upgrade"
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    io
}

/// Server RSS per idle connection, in KiB, after opening `CONNECTIONS` with `open`.
async fn per_connection<F, Fut, S>(server: &Running, open: F) -> (f64, Vec<S>)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(server.0.id());
    let mut held = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        held.push(open().await);
    }
    // Let every connection's task reach its idle wait.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(server.0.id());
    ((after as f64 - before as f64) / CONNECTIONS as f64, held)
}

#[tokio::test]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn idle_connection_memory_plain_and_tls() {
    let dir = std::env::temp_dir().join(format!("herald-tls-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();

    let (plain, port) = serve(&dir, "");
    let (plain_kib, held) = per_connection(&plain, || async move {
        upgrade(TcpStream::connect(("127.0.0.1", port)).await.unwrap()).await
    })
    .await;
    drop(held);
    drop(plain);

    let tls = format!("[tls]\ncert = {cert_path:?}\nkey = {key_path:?}\n");
    let (server, port) = serve(&dir, &tls);
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(cert.pem().as_bytes()).unwrap())
        .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let (tls_kib, held) = per_connection(&server, || {
        let connector = connector.clone();
        async move {
            let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let name = ServerName::try_from("127.0.0.1").unwrap();
            upgrade(connector.connect(name, tcp).await.unwrap()).await
        }
    })
    .await;
    drop(held);
    println!(
        "server RSS per idle WebSocket connection ({CONNECTIONS} connections): plain {plain_kib:.1} KiB, TLS {tls_kib:.1} KiB"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
