//! The real `herald` binary, run as a user runs it: `token`, `serve --config`, `client` and `send`
//! talking to each other over real sockets.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_proto::token::AccessToken;

const HERALD: &str = env!("CARGO_BIN_EXE_herald");
const APP_ID: &str = "65a1b2c3d4e5f60718293a4b";
const APP_KEY: &str = "0123456789abcdef0123456789abcdef";
const AK: &str = "AKLTclitest";
const SK: &str = "cli-secret";

fn herald(args: &[&str]) -> Output {
    Command::new(HERALD).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A child process that is killed if the test ends early.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The lines of a child's stdout, read on a thread so a missing line fails instead of hanging.
struct Lines(mpsc::Receiver<String>);

impl Lines {
    fn of(child: &mut Child) -> Lines {
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines() {
                if tx.send(line.unwrap()).is_err() {
                    return;
                }
            }
        });
        Lines(rx)
    }

    fn next(&self) -> String {
        self.0
            .recv_timeout(Duration::from_secs(10))
            .expect("a line within 10 s")
    }
}

/// A config file for one app on `port`, with `extra` TOML appended to the top level.
fn config_file(name: &str, port: u16, extra: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("herald-cli-{}-{name}.toml", std::process::id()));
    let text = format!(
        r#"listen = "127.0.0.1:{port}"
{extra}
[[apps]]
app_id = "{APP_ID}"
app_key = "{APP_KEY}"
access_keys = [{{ ak = "{AK}", sk = "{SK}" }}]
"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `herald serve --config` on a free port, once it accepts connections.
fn serve() -> (Running, String) {
    serve_with("serve", "", "http")
}

/// As [`serve`], with `extra` configuration, named `name`, reached with `scheme`.
fn serve_with(name: &str, extra: &str, scheme: &str) -> (Running, String) {
    let port = free_port();
    let config = config_file(name, port, extra);
    let server = Running(
        Command::new(HERALD)
            .args(["serve", "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "herald serve did not start listening"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (server, format!("{scheme}://127.0.0.1:{port}"))
}

/// `herald client`, with its stdin to write calls to and its stdout lines.
fn client(server: &str) -> (Running, ChildStdin, Lines) {
    client_with(server, &[])
}

/// As [`client`], with more arguments.
fn client_with(server: &str, args: &[&str]) -> (Running, ChildStdin, Lines) {
    let mut child = Command::new(HERALD)
        .args(["client", "--server", server, "--app-id", APP_ID])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let lines = Lines::of(&mut child);
    (Running(child), stdin, lines)
}

fn token(args: &[&str]) -> String {
    let mut all = vec!["token", "--app-id", APP_ID, "--app-key", APP_KEY];
    all.extend_from_slice(args);
    let o = herald(&all);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).trim().to_owned()
}

fn send(server: &str, args: &[&str]) -> Output {
    let mut all = vec!["send", "--server", server, "--ak", AK, "--sk", SK];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--app-id", APP_ID]);
    herald(&all)
}

fn write_line(stdin: &mut ChildStdin, line: &str) {
    writeln!(stdin, "{line}").unwrap();
    stdin.flush().unwrap();
}

#[test]
fn token_prints_a_token_that_parses_and_verifies() {
    let before = now();
    let t = token(&["--uid", "u1", "--room", "r1", "--expire", "600"]);
    let parsed = AccessToken::parse(&t).unwrap();
    assert!(parsed.verify(APP_KEY));
    assert!(!parsed.verify("another key"));
    let t = &parsed.token;
    assert_eq!(
        (t.app_id.as_str(), t.room_id.as_str(), t.user_id.as_str()),
        (APP_ID, "r1", "u1")
    );
    let issued = i64::from(t.issued_at);
    assert!((before..=now()).contains(&issued), "issued_at {issued}");
    assert_eq!(i64::from(t.expire_at), issued + 600);
    // PublishStream (0, and 1–3 with it) and SubscribeStream (4), with the token's expiry.
    let keys: Vec<(u16, u32)> = t.privileges.iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(keys, (0..=4).map(|k| (k, t.expire_at)).collect::<Vec<_>>());
    assert!((1..=99_999_999).contains(&t.nonce));

    let login = AccessToken::parse(&token(&["--uid", "u1", "--expire", "0"])).unwrap();
    assert!(login.verify(APP_KEY));
    assert_eq!(login.token.room_id, "");
    assert_eq!(login.token.expire_at, 0);
    assert!(login.token.privileges.values().all(|&e| e == 0));
}

#[test]
fn token_refuses_what_no_server_could_accept() {
    for args in [
        &[
            "token",
            "--app-id",
            "short",
            "--app-key",
            APP_KEY,
            "--uid",
            "u1",
        ][..],
        &[
            "token",
            "--app-id",
            APP_ID,
            "--app-key",
            APP_KEY,
            "--uid",
            "u 1",
        ],
        &[
            "token",
            "--app-id",
            APP_ID,
            "--app-key",
            APP_KEY,
            "--uid",
            "u1",
            "--room",
            "r/1",
        ],
        &["token", "--app-id", APP_ID, "--app-key", APP_KEY],
    ] {
        let o = herald(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty());
    }
}

#[test]
fn a_client_receives_what_send_sends_in_the_documented_lines() {
    let (_server, base) = serve();
    let (mut c1, mut stdin1, out1) = client(&base);
    let (_c2, mut stdin2, out2) = client(&base);

    let t = token(&["--uid", "u1"]);
    write_line(
        &mut stdin1,
        &format!(r#"{{"call":"login","token":"{t}","uid":"u1"}}"#),
    );
    let line: serde_json::Value = serde_json::from_str(&out1.next()).unwrap();
    assert_eq!(line["event"], "onLoginResult");
    assert_eq!(line["uid"], "u1");
    assert_eq!(line["errorCode"], 0);
    assert!(line["elapsed"].is_u64());

    let t = token(&["--uid", "u2", "--room", "r1"]);
    write_line(
        &mut stdin2,
        &format!(r#"{{"call":"joinRoom","roomId":"r1","uid":"u2","token":"{t}"}}"#),
    );
    let line: serde_json::Value = serde_json::from_str(&out2.next()).unwrap();
    assert_eq!(line["event"], "onRoomStateChanged");
    assert_eq!(line["state"], 0);
    let extra: serde_json::Value =
        serde_json::from_str(line["extraInfo"].as_str().unwrap()).unwrap();
    assert_eq!(extra["join_type"], 0);

    let o = send(&base, &["SendUnicast", "--to", "u1", "--message", "hello"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let envelope: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(envelope["Result"]["Message"], "Success");
    assert_eq!(envelope["ResponseMetadata"]["Action"], "SendUnicast");
    assert_eq!(
        out1.next(),
        r#"{"event":"onUserMessageReceivedOutsideRoom","msgid":1,"uid":"server_bot","message":"hello"}"#
    );

    let o = send(
        &base,
        &[
            "SendBroadcast",
            "--room",
            "r1",
            "--binary",
            "--message",
            "AP8=",
            "--version",
            "2020-12-01",
        ],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        out2.next(),
        r#"{"event":"onRoomBinaryMessageReceived","roomId":"r1","msgid":1,"uid":"server_bot","message":"AP8=","binary":true}"#
    );
    let o = send(
        &base,
        &[
            "SendRoomUnicast",
            "--room",
            "r1",
            "--to",
            "u2",
            "--from",
            "bot2",
            "--message",
            "hi",
        ],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        out2.next(),
        r#"{"event":"onUserMessageReceived","roomId":"r1","msgid":2,"uid":"bot2","message":"hi"}"#
    );

    // --report asks for the delivery report: u2 is in r1, u9 is not.
    let o = send(
        &base,
        &[
            "BatchSendRoomUnicast",
            "--room",
            "r1",
            "--to",
            "u2",
            "--to",
            "u9",
            "--message",
            "both",
            "--report",
        ],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let envelope: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let report = &envelope["Result"]["DeliveryReport"];
    let reached: Vec<&serde_json::Value> = ["Written", "Queued"]
        .iter()
        .flat_map(|k| report[k].as_array().unwrap())
        .collect();
    assert_eq!(reached, [&serde_json::json!("u2")], "{report}");
    assert_eq!(report["NotInRoom"], serde_json::json!(["u9"]));
    assert_eq!(
        out2.next(),
        r#"{"event":"onUserMessageReceived","roomId":"r1","msgid":3,"uid":"server_bot","message":"both"}"#
    );

    // --ack-timeout-ms waits for acks; `herald client` acknowledges each message it prints.
    let o = send(
        &base,
        &[
            "SendRoomUnicast",
            "--room",
            "r1",
            "--to",
            "u2",
            "--message",
            "acked",
            "--ack-timeout-ms",
            "5000",
        ],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let envelope: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        envelope["Result"]["DeliveryReport"]["Acked"],
        serde_json::json!(["u2"]),
        "{envelope}"
    );
    assert_eq!(
        out2.next(),
        r#"{"event":"onUserMessageReceived","roomId":"r1","msgid":4,"uid":"server_bot","message":"acked"}"#
    );

    // An error envelope is printed too, with exit code 1.
    let o = herald(&[
        "send",
        "--server",
        &base,
        "--ak",
        AK,
        "--sk",
        "wrong",
        "SendUnicast",
        "--app-id",
        APP_ID,
        "--to",
        "u1",
        "--message",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let envelope: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        envelope["ResponseMetadata"]["Error"]["Code"],
        "SignatureDoesNotMatch"
    );

    // A bad line is reported and the session goes on.
    write_line(&mut stdin1, r#"{"call":"fly"}"#);
    let line: serde_json::Value = serde_json::from_str(&out1.next()).unwrap();
    assert_eq!(line["event"], "onCliError");
    assert!(line["message"].as_str().unwrap().contains("fly"), "{line}");
    write_line(&mut stdin1, r#"{"call":"logout"}"#);
    assert_eq!(out1.next(), r#"{"event":"onLogout","reason":0}"#);

    // Closing stdin closes the connection; the client exits after saying so.
    drop(stdin1);
    assert_eq!(
        out1.next(),
        r#"{"event":"onConnectionClosed","code":1000,"reason":""}"#
    );
    assert!(c1.0.wait().unwrap().success());
}

/// Writes a login line for `uid` and checks its answer.
fn login(stdin: &mut ChildStdin, out: &Lines, uid: &str) {
    let t = token(&["--uid", uid]);
    write_line(
        stdin,
        &format!(r#"{{"call":"login","token":"{t}","uid":"{uid}"}}"#),
    );
    let line: serde_json::Value = serde_json::from_str(&out.next()).unwrap();
    assert_eq!(line["event"], "onLoginResult", "{line}");
    assert_eq!(line["errorCode"], 0, "{line}");
}

#[test]
fn two_clients_exchange_messages_outside_room_in_the_documented_lines() {
    let (_server, base) = serve();
    let (_c1, mut stdin1, out1) = client(&base);
    let (_c2, mut stdin2, out2) = client(&base);
    login(&mut stdin1, &out1, "u1");
    login(&mut stdin2, &out2, "u2");

    write_line(
        &mut stdin1,
        r#"{"call":"sendUserMessageOutsideRoom","uid":"u2","message":"hi"}"#,
    );
    assert_eq!(
        out1.next(),
        r#"{"event":"onCliSent","call":"sendUserMessageOutsideRoom","msgid":1}"#
    );
    assert_eq!(
        out1.next(),
        r#"{"event":"onUserMessageSendResultOutsideRoom","msgid":1,"error":0}"#
    );
    assert_eq!(
        out2.next(),
        r#"{"event":"onUserMessageReceivedOutsideRoom","msgid":1,"uid":"u1","message":"hi"}"#
    );

    write_line(
        &mut stdin2,
        r#"{"call":"sendUserBinaryMessageOutsideRoom","uid":"u1","message":"AP8="}"#,
    );
    assert_eq!(
        out2.next(),
        r#"{"event":"onCliSent","call":"sendUserBinaryMessageOutsideRoom","msgid":1}"#
    );
    assert_eq!(
        out2.next(),
        r#"{"event":"onUserMessageSendResultOutsideRoom","msgid":1,"error":0}"#
    );
    assert_eq!(
        out1.next(),
        r#"{"event":"onUserBinaryMessageReceivedOutsideRoom","msgid":1,"uid":"u2","message":"AP8=","binary":true}"#
    );

    // A binary message that is not base64 is not sent, and takes no msgid.
    write_line(
        &mut stdin1,
        r#"{"call":"sendUserBinaryMessageOutsideRoom","uid":"u2","message":"%%%"}"#,
    );
    let line: serde_json::Value = serde_json::from_str(&out1.next()).unwrap();
    assert_eq!(line["event"], "onCliError");
    assert!(
        line["message"].as_str().unwrap().contains("base64"),
        "{line}"
    );
    write_line(
        &mut stdin1,
        r#"{"call":"sendUserMessageOutsideRoom","uid":"nobody","message":"hi"}"#,
    );
    assert_eq!(
        out1.next(),
        r#"{"event":"onCliSent","call":"sendUserMessageOutsideRoom","msgid":2}"#
    );
    assert_eq!(
        out1.next(),
        r#"{"event":"onUserMessageSendResultOutsideRoom","msgid":2,"error":3}"#
    );
    write_line(
        &mut stdin1,
        r#"{"call":"getPeerOnlineStatus","peerUserId":"u2"}"#,
    );
    assert_eq!(
        out1.next(),
        r#"{"event":"onGetPeerOnlineStatus","peerUserId":"u2","status":1}"#
    );
}

/// What a service manager does to stop Herald.
#[cfg(unix)]
#[test]
fn sigterm_stops_the_server_and_ends_sessions_with_1001() {
    let (mut server, base) = serve();
    let (mut c, mut stdin, out) = client(&base);
    let t = token(&["--uid", "u1"]);
    write_line(
        &mut stdin,
        &format!(r#"{{"call":"login","token":"{t}","uid":"u1"}}"#),
    );
    assert!(out.next().contains(r#""errorCode":0"#));

    let pid = server.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert!(server.0.wait().unwrap().success());
    assert_eq!(
        out.next(),
        r#"{"event":"onConnectionClosed","code":1001,"reason":"server shutting down"}"#
    );
    // The server closed the session, so the client exits 0 with its stdin still open.
    assert!(c.0.wait().unwrap().success());
}

#[test]
fn send_checks_recipients_before_calling() {
    // No server is needed: these are refused before any request.
    for args in [
        &["send", "SendBroadcast", "--to", "u1", "--message", "x"][..],
        &["send", "SendUnicast", "--message", "x"],
        &[
            "send",
            "SendUnicast",
            "--room",
            "r1",
            "--to",
            "u1",
            "--message",
            "x",
        ],
        &["send", "SendRoomUnicast", "--to", "u1", "--message", "x"],
        &[
            "send",
            "BatchSendRoomUnicast",
            "--room",
            "r1",
            "--message",
            "x",
        ],
        &["send", "SendUnicast", "--to", "u1"],
        &["send", "Fly", "--to", "u1", "--message", "x"],
        &[
            "send",
            "SendUnicast",
            "--to",
            "u1",
            "--message",
            "x",
            "--ack-timeout-ms",
            "5001",
        ],
        &[
            "send",
            "SendUnicast",
            "--to",
            "u1",
            "--message",
            "x",
            "--ack-timeout-ms",
            "0",
        ],
        &[
            "send",
            "SendUnicast",
            "--to",
            "u1",
            "--message",
            "x",
            "--server",
            "localhost:8080",
        ],
    ] {
        let o = herald(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    // A server that is not there is a runtime failure.
    let server = format!("http://127.0.0.1:{}", free_port());
    let o = herald(&[
        "send",
        "--server",
        &server,
        "SendUnicast",
        "--to",
        "u1",
        "--message",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

#[test]
fn an_unknown_config_key_exits_2_and_names_the_key() {
    let path = config_file("unknown-key", free_port(), "lisen_typo = 1");
    let mut child = Command::new(HERALD)
        .args(["serve", "--config", path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It must exit by itself; wait with a deadline so a server that started anyway fails the test.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("herald serve started despite an unknown key");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("lisen_typo"), "{err}");

    let o = herald(&["serve", "--config", "/nonexistent/herald.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("/nonexistent/herald.toml"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn new_tokens_through_the_client_lines() {
    let (_server, base) = serve();
    let (_c, mut stdin, out) = client(&base);
    let o = herald(&[
        "token",
        "--app-id",
        APP_ID,
        "--app-key",
        "not-the-app-key",
        "--uid",
        "u1",
    ]);
    let forged = stdout(&o).trim().to_owned();
    write_line(
        &mut stdin,
        &format!(r#"{{"call":"login","token":"{forged}","uid":"u1"}}"#),
    );
    let line: serde_json::Value = serde_json::from_str(&out.next()).unwrap();
    assert_eq!(
        (line["event"].as_str(), line["errorCode"].as_i64()),
        (Some("onLoginResult"), Some(-1000))
    );
    // updateLoginToken after a refused token logs in again by itself.
    let good = token(&["--uid", "u1"]);
    write_line(
        &mut stdin,
        &format!(r#"{{"call":"updateLoginToken","token":"{good}"}}"#),
    );
    let line: serde_json::Value = serde_json::from_str(&out.next()).unwrap();
    assert_eq!(
        (line["event"].as_str(), line["errorCode"].as_i64()),
        (Some("onLoginResult"), Some(0))
    );

    let room = token(&["--uid", "u1", "--room", "r1"]);
    write_line(
        &mut stdin,
        &format!(r#"{{"call":"joinRoom","roomId":"r1","uid":"u1","token":"{room}"}}"#),
    );
    let line: serde_json::Value = serde_json::from_str(&out.next()).unwrap();
    assert_eq!(
        (line["event"].as_str(), line["state"].as_i64()),
        (Some("onRoomStateChanged"), Some(0))
    );
    let other = token(&["--uid", "u2", "--room", "r1"]);
    write_line(
        &mut stdin,
        &format!(r#"{{"call":"updateToken","roomId":"r1","token":"{other}"}}"#),
    );
    let line: serde_json::Value = serde_json::from_str(&out.next()).unwrap();
    assert_eq!(
        (
            line["event"].as_str(),
            line["roomId"].as_str(),
            line["state"].as_i64()
        ),
        (Some("onRoomStateChanged"), Some("r1"), Some(-1010))
    );
}

#[test]
fn client_and_send_speak_tls_trusting_ca_cert() {
    let dir = std::env::temp_dir().join(format!("herald-cli-{}-tls", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
    let tls = format!("[tls]\ncert = {:?}\nkey = {:?}\n", cert_path, key_path);
    let (_server, base) = serve_with("tls", &tls, "https");
    let ca = cert_path.to_str().unwrap();

    let (_client, mut stdin, out) = client_with(&base, &["--ca-cert", ca]);
    login(&mut stdin, &out, "u1");
    let o = send(
        &base,
        &[
            "SendUnicast",
            "--ca-cert",
            ca,
            "--to",
            "u1",
            "--message",
            "hi",
        ],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        out.next(),
        r#"{"event":"onUserMessageReceivedOutsideRoom","msgid":1,"uid":"server_bot","message":"hi"}"#
    );

    // Without --ca-cert only public authorities are trusted: the call fails, exit 1.
    let o = send(&base, &["SendUnicast", "--to", "u1", "--message", "x"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    // A --ca-cert that cannot be read is the user's to fix: exit 2, naming the file.
    let missing = dir.join("missing.pem");
    let missing = missing.to_str().unwrap();
    let o = send(
        &base,
        &[
            "SendUnicast",
            "--ca-cert",
            missing,
            "--to",
            "u1",
            "--message",
            "x",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains(missing), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&dir);
}
