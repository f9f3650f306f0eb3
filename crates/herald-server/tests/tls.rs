//! `[tls]` over real sockets and a real handshake: a self-signed certificate made by rcgen at test
//! time, the SDK trusting it (or not), raw TCP for what a TLS port must refuse.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use herald_client::{connect, connect_with_tls, Event, Message, OpenApiClient, Tls};
use herald_server::config::{Config, ConfigError};
use herald_server::metrics::TlsFailure;
use herald_server::{Server, StartError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

/// A self-signed certificate for `127.0.0.1` and `localhost`, written to a fresh directory that is
/// removed on drop.
struct TestCert {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    pem: String,
}

impl TestCert {
    fn new() -> TestCert {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "herald-tls-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let rcgen::CertifiedKey { cert, key_pair } =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
                .unwrap();
        let pem = cert.pem();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &pem).unwrap();
        std::fs::write(&key, key_pair.serialize_pem()).unwrap();
        TestCert {
            dir,
            cert,
            key,
            pem,
        }
    }

    /// The SDK's trust: public roots and this certificate.
    fn trust(&self) -> Tls {
        Tls::with_root_pem(self.pem.as_bytes()).unwrap()
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tls_config(cert: &Path, key: &Path, extra: &str) -> Config {
    config(&format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n{extra}",
        cert.to_str().unwrap(),
        key.to_str().unwrap()
    ))
}

async fn start_tls(cert: &TestCert, extra: &str) -> Server {
    let server = start(tls_config(&cert.cert, &cert.key, extra)).await;
    assert_eq!(server.scheme(), "https");
    server
}

/// Logs `uid` in over WSS through the SDK and returns its engine and events.
async fn login_wss(
    server: &str,
    tls: &Tls,
    uid: &str,
) -> (herald_client::Engine, herald_client::EventStream) {
    let (engine, mut events) = connect_with_tls(server, APP, tls).await.unwrap();
    engine
        .login(&token("", uid, system_now()), uid)
        .await
        .unwrap();
    match next_event(&mut events).await {
        Event::LoginResult { error_code: 0, .. } => {}
        other => panic!("expected a successful login, got {other:?}"),
    }
    (engine, events)
}

async fn next_event(events: &mut herald_client::EventStream) -> Event {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an event in time")
        .expect("the stream is open")
}

async fn send_unicast(api: &OpenApiClient, to: &str, message: &str) {
    let r = api
        .send_unicast(APP, "bot", to, Message::Text(message.to_owned()))
        .await
        .unwrap();
    assert!(r.is_success(), "{}", r.body);
}

#[tokio::test]
async fn a_signed_call_over_https_reaches_a_client_over_wss() {
    let cert = TestCert::new();
    let server = start_tls(&cert, "").await;
    let base = format!("https://{}", server.local_addr());
    let tls = cert.trust();
    let (engine, mut events) = login_wss(&base, &tls, "u1").await;

    let api = OpenApiClient::new(&base, AK, SK).unwrap().with_tls(&tls);
    // A short message is copied into the write buffer; one over 1 KiB is written by reference,
    // as a chunk of its own: both go through rustls and the flush after each batch.
    let long = "x".repeat(40 * 1024);
    for (msgid, text) in [(1, "over tls"), (2, long.as_str())] {
        send_unicast(&api, "u1", text).await;
        match next_event(&mut events).await {
            Event::UserMessageReceivedOutsideRoom {
                msgid: got,
                uid,
                message,
            } => assert_eq!((got, uid.as_str(), message.as_str()), (msgid, "bot", text)),
            other => panic!("expected the message, got {other:?}"),
        }
    }
    // And the other way: a client's own send, read by the server through rustls.
    let (_peer, mut peer_events) = login_wss(&base, &tls, "u2").await;
    let msgid = engine
        .send_user_message_outside_room("u2", "hello u2")
        .await
        .unwrap();
    match next_event(&mut peer_events).await {
        Event::UserMessageReceivedOutsideRoom { uid, message, .. } => {
            assert_eq!((uid.as_str(), message.as_str()), ("u1", "hello u2"));
        }
        other => panic!("expected the message, got {other:?}"),
    }
    match next_event(&mut events).await {
        Event::UserMessageSendResultOutsideRoom { msgid: m, error } => {
            assert_eq!(
                (m, error),
                (msgid, herald_proto::client::send_result::SUCCESS)
            );
        }
        other => panic!("expected the send result, got {other:?}"),
    }
    assert_eq!(
        server.metrics().tls_handshake_failures(TlsFailure::Error),
        0
    );
    server.shutdown().await;
}

/// A rustls client trusting `cert_pem` only, offering `versions` and ALPN `h2` and `http/1.1`.
fn client_config(
    cert_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap())
        .unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(client)
}

/// `GET /healthz` over TLS with rustls directly, trusting `cert_pem`, offering `versions`:
/// the negotiated version and ALPN protocol, and the answer.
async fn healthz(
    server: &Server,
    cert_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (rustls::ProtocolVersion, Option<Vec<u8>>, String) {
    let tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client_config(cert_pem, versions))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let session = tls.get_ref().1;
    let (version, alpn) = (
        session.protocol_version().unwrap(),
        session.alpn_protocol().map(<[u8]>::to_vec),
    );
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    // Whether or not the close ends with close_notify, what came before it counts.
    let _ = tls.read_to_string(&mut answer).await;
    (version, alpn, answer)
}

#[tokio::test]
async fn a_burst_to_a_slow_reader_arrives_whole() {
    // More than the socket buffers hold, to a client that reads slowly: the server's writes go
    // through rustls under back-pressure (partial writes, records held back and flushed) and
    // every message must arrive, whole and in order. (The flush itself is pinned down
    // deterministically by the unit test in tls.rs, over a bounded in-memory pipe.)
    use futures_util::{SinkExt as _, StreamExt as _};
    use herald_proto::client::ReceivedMessage;
    use tokio_tungstenite::tungstenite::Message as Ws;

    let cert = TestCert::new();
    // More than the kernel's largest send buffer (4 MiB by default) can hold, and room for it in
    // the outbound queue.
    const N: u64 = 200;
    let queue = "[gateway]\noutbound_queue_bytes = 33554432";
    let server = start_tls(&cert, queue).await;
    let base = format!("https://{}", server.local_addr());
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    // A small window, so the server's writes back up into rustls.
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(server.local_addr()).await.unwrap();
    let tls =
        tokio_rustls::TlsConnector::from(client_config(&cert.pem, &[&rustls::version::TLS13]))
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("wss://127.0.0.1/ws?appId={APP}"), tls)
            .await
            .unwrap();
    let login =
        serde_json::json!({"call": "login", "token": token("", "u1", system_now()), "uid": "u1"});
    ws.send(Ws::Text(login.to_string().into())).await.unwrap();
    let answer = ws.next().await.unwrap().unwrap();
    assert!(
        answer.to_text().unwrap().contains("onLoginResult"),
        "{answer:?}"
    );

    // Not reading now: the messages pile up in the socket buffers and behind them.
    let api = OpenApiClient::new(&base, AK, SK)
        .unwrap()
        .with_tls(&cert.trust());
    let body = "m".repeat(60 * 1024);
    for _ in 0..N {
        send_unicast(&api, "u1", &body).await;
    }
    for msgid in 1..=N {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap_or_else(|_| panic!("message {msgid} of {N} in time"))
            .unwrap()
            .unwrap();
        let Ws::Binary(frame) = frame else {
            panic!("expected a message, got {frame:?}")
        };
        let m = ReceivedMessage::decode(frame).unwrap();
        assert_eq!((m.msgid, m.payload.len()), (msgid, body.len()));
        // A slow reader: the server's socket stays full, so its last write meets a full socket.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn the_port_answers_http_1_1_over_tls_1_2_and_1_3() {
    let cert = TestCert::new();
    let server = start_tls(&cert, "").await;
    for (offered, expected) in [
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
    ] {
        let (version, alpn, answer) = healthz(&server, &cert.pem, &[offered]).await;
        assert_eq!(version, expected);
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("{\"status\":\"ok\"}"), "{answer}");
    }
}

#[tokio::test]
async fn rsa_and_sec1_keys_are_served() {
    // Made once with openssl (tests/data): an RSA key in PKCS#1 (`BEGIN RSA PRIVATE KEY`) and a
    // P-256 key in SEC1 (`BEGIN EC PRIVATE KEY`), each with its certificate for 127.0.0.1. The
    // PKCS#8 form is what rcgen writes, in the other tests.
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    for kind in ["rsa", "ec"] {
        let (cert, key) = (
            data.join(format!("{kind}-cert.pem")),
            data.join(format!("{kind}-key.pem")),
        );
        let server = start(tls_config(&cert, &key, "")).await;
        let pem = std::fs::read_to_string(&cert).unwrap();
        let (_, _, answer) = healthz(&server, &pem, &[&rustls::version::TLS13]).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{kind}: {answer}");
    }
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_no_http_answer_and_others_are_served() {
    let cert = TestCert::new();
    let server = start_tls(&cert, "").await;
    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // Counted before the socket was closed, so already visible.
    assert_eq!(
        server.metrics().tls_handshake_failures(TlsFailure::Error),
        1
    );

    let base = format!("https://{}", server.local_addr());
    let tls = cert.trust();
    let (_engine, mut events) = login_wss(&base, &tls, "u1").await;
    let api = OpenApiClient::new(&base, AK, SK).unwrap().with_tls(&tls);
    send_unicast(&api, "u1", "still here").await;
    assert!(matches!(
        next_event(&mut events).await,
        Event::UserMessageReceivedOutsideRoom { .. }
    ));
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_fails_the_handshake() {
    let cert = TestCert::new();
    let server = start_tls(&cert, "").await;
    let base = format!("https://{}", server.local_addr());
    // Mozilla's roots alone: the self-signed certificate is not among them.
    let e = connect(&base, APP).await.unwrap_err();
    assert!(
        matches!(e, herald_client::ConnectError::Transport { .. }),
        "{e:?}"
    );
    let api = OpenApiClient::new(&base, AK, SK).unwrap();
    let e = api
        .send_unicast(APP, "bot", "u1", Message::Text("x".into()))
        .await
        .unwrap_err();
    assert!(
        matches!(e, herald_client::OpenApiError::Transport(_)),
        "{e:?}"
    );
    // Trusting another self-signed certificate does not help either.
    let other = TestCert::new();
    assert!(connect_with_tls(&base, APP, &other.trust()).await.is_err());
    // Plain WebSocket to the TLS port fails too.
    assert!(connect(&format!("http://{}", server.local_addr()), APP)
        .await
        .is_err());
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_handshake_timeout() {
    let cert = TestCert::new();
    let server = start_tls(&cert, "handshake_timeout_ms = 200").await;
    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .expect("the server closes a silent connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert_eq!(
        server.metrics().tls_handshake_failures(TlsFailure::Timeout),
        1
    );
    assert_eq!(
        server.metrics().tls_handshake_failures(TlsFailure::Error),
        0
    );
}

/// The message of the error `Server::start` gives for `config`, which must be a `[tls]` one.
async fn tls_start_error(config: Config) -> String {
    match Server::start(config).await {
        Ok(_) => panic!("the server started"),
        Err(e @ StartError::Config(ConfigError::Tls { .. })) => e.to_string(),
        Err(e) => panic!("expected a tls config error, got {e}"),
    }
}

#[tokio::test]
async fn bad_certificate_or_key_files_fail_start_naming_the_file() {
    let cert = TestCert::new();
    let missing = cert.dir.join("missing.pem");
    let e = tls_start_error(tls_config(&missing, &cert.key, "")).await;
    assert!(e.contains("tls.cert") && e.contains("missing.pem"), "{e}");
    let e = tls_start_error(tls_config(&cert.cert, &missing, "")).await;
    assert!(e.contains("tls.key") && e.contains("missing.pem"), "{e}");

    // The files swapped: no certificate in the key file, no key in the certificate file.
    let e = tls_start_error(tls_config(&cert.key, &cert.key, "")).await;
    assert!(e.contains("tls.cert") && e.contains("key.pem"), "{e}");
    let e = tls_start_error(tls_config(&cert.cert, &cert.cert, "")).await;
    assert!(e.contains("tls.key") && e.contains("cert.pem"), "{e}");

    let garbage = cert.dir.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let e = tls_start_error(tls_config(&garbage, &cert.key, "")).await;
    assert!(e.contains("tls.cert") && e.contains("garbage.pem"), "{e}");

    // A key that is not the certificate's.
    let other = TestCert::new();
    let e = tls_start_error(tls_config(&cert.cert, &other.key, "")).await;
    assert!(
        e.contains("tls.key") && e.contains(other.key.to_str().unwrap()),
        "{e}"
    );
}

#[tokio::test]
async fn shutdown_closes_wss_clients_with_going_away() {
    // The close frame and TLS close_notify go out through the TLS writer's shutdown path.
    let cert = TestCert::new();
    let server = start_tls(&cert, "").await;
    let base = format!("https://{}", server.local_addr());
    let (_engine, mut events) = login_wss(&base, &cert.trust(), "u1").await;
    server.shutdown().await;
    match next_event(&mut events).await {
        Event::ConnectionClosed { code, .. } => assert_eq!(code, Some(1001)),
        other => panic!("expected the close, got {other:?}"),
    }
}

/// Over `[limits] max_connections` on a TLS port, a connection is closed without a byte: a plain
/// `503` would be garbage to a TLS client. The place frees when the holder leaves.
#[tokio::test]
async fn over_the_connection_limit_a_tls_port_closes_without_answering() {
    let cert = TestCert::new();
    let server = start_tls(&cert, "[limits]\nmax_connections = 1\n").await;
    // Holds the one place (its handshake never starts).
    let holder = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut refused = TcpStream::connect(server.local_addr()).await.unwrap();
    let _ = refused.write_all(b"\x16\x03\x01").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), refused.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    drop(holder);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let tcp = TcpStream::connect(server.local_addr()).await.unwrap();
        let tls =
            tokio_rustls::TlsConnector::from(client_config(&cert.pem, &[&rustls::version::TLS13]))
                .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
                .await;
        if tls.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
