//! Helpers shared by the end-to-end tests: a server on port 0, raw signed HTTP, raw WebSocket
//! clients. Deliberately low-level: these tests check the wire itself.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use herald_core::time::Timestamp;
use herald_proto::client::ReceivedMessage;
use herald_proto::sign::{self, Credentials};
use herald_proto::token::{AccessToken, Privilege};
use herald_server::clock::{Clock, ManualClock, SystemClock};
use herald_server::config::Config;
use herald_server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

pub const APP: &str = "65a1b2c3d4e5f60718293a4b";
pub const KEY: &str = "0123456789abcdef0123456789abcdef";
pub const AK: &str = "AKLTtestkey0001";
pub const SK: &str = "test/secret+key==";
pub const APP2: &str = "bbbbbbbbbbbbbbbbbbbbbbbb";
pub const AK2: &str = "AKLTtestkey0002";
pub const SK2: &str = "second-secret";

pub fn config(extra: &str) -> Config {
    Config::from_toml(&format!(
        r#"
listen = "127.0.0.1:0"
{extra}
[[apps]]
app_id = "{APP}"
app_key = "{KEY}"
qps_limit = 500
access_keys = [{{ ak = "{AK}", sk = "{SK}" }}]
[[apps]]
app_id = "{APP2}"
app_key = "{KEY}"
access_keys = [{{ ak = "{AK2}", sk = "{SK2}" }}]
"#
    ))
    .unwrap()
}

/// The same configuration with presence events off, for tests that count exactly what they route.
pub fn quiet(mut config: Config) -> Config {
    for app in &mut config.apps {
        app.presence_events = false;
    }
    config
}

pub async fn start(config: Config) -> Server {
    Server::start(config).await.unwrap()
}

pub async fn start_with_clock(config: Config, clock: Arc<ManualClock>) -> Server {
    Server::start_with_clock(config, clock).await.unwrap()
}

pub fn system_now() -> i64 {
    SystemClock.now().secs() as i64
}

pub fn manual_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Timestamp::from_secs(1_700_000_000)))
}

/// A raw HTTP/1.1 response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// `ResponseMetadata.Error.Code`, or "Success".
    pub fn code(&self) -> String {
        match self.body["ResponseMetadata"]["Error"]["Code"].as_str() {
            Some(c) => c.to_owned(),
            None => self.body["Result"]["Message"]
                .as_str()
                .unwrap_or("?")
                .to_owned(),
        }
    }
    pub fn code_n(&self) -> Option<u64> {
        self.body["ResponseMetadata"]["Error"]["CodeN"].as_u64()
    }
}

/// Sends raw bytes as one HTTP request on a fresh connection and reads the response.
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    read_reply(&mut s).await
}

/// Reads one HTTP/1.1 response (head, and a body of its `Content-Length`) from `s`.
pub async fn read_reply(s: &mut TcpStream) -> Reply {
    let mut buf = Vec::new();
    // Read until the full body (Content-Length) is in.
    let mut chunk = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("response in time")
            .unwrap();
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len || n == 0 {
                let mut lines = head.lines();
                let status = lines
                    .next()
                    .unwrap()
                    .split(' ')
                    .nth(1)
                    .unwrap()
                    .parse()
                    .unwrap();
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .collect();
                let body = &buf[end + 4..(end + 4 + len).min(buf.len())];
                let body = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
                return Reply {
                    status,
                    headers,
                    body,
                };
            }
        }
        if n == 0 {
            panic!("connection closed early: {}", String::from_utf8_lossy(&buf));
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A request to sign: everything a test may want to vary.
pub struct Call<'a> {
    pub method: &'a str,
    pub query: Vec<(&'a str, &'a str)>,
    pub body: Vec<u8>,
    pub ak: &'a str,
    pub sk: &'a str,
    pub service: &'a str,
    pub now: i64,
    /// Headers sent besides the signed ones, not signed (as a caller adds them).
    pub unsigned: Vec<(&'a str, &'a str)>,
}

impl<'a> Call<'a> {
    pub fn new(action: &'a str, body: serde_json::Value, now: i64) -> Self {
        Call {
            method: "POST",
            query: vec![("Action", action), ("Version", "2023-07-20")],
            body: serde_json::to_vec(&body).unwrap(),
            ak: AK,
            sk: SK,
            service: "rtc",
            now,
            unsigned: Vec::new(),
        }
    }

    /// The signed request as raw bytes, Python-SDK style.
    pub fn to_bytes(&self, addr: SocketAddr) -> Vec<u8> {
        let host = addr.to_string();
        let headers = [
            ("Host", host.as_str()),
            ("Content-Type", "application/json"),
        ];
        let creds = Credentials {
            access_key: self.ak,
            secret_key: self.sk,
            region: "cn-north-1",
            service: self.service,
            session_token: None,
        };
        let added = sign::sign_request(
            &creds,
            self.method,
            "/",
            &self.query,
            &headers,
            &self.body,
            self.now,
        );
        let qs: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut req = format!("{} /?{} HTTP/1.1\r\n", self.method, qs.join("&"));
        for (k, v) in headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain(added)
            .chain(
                self.unsigned
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string())),
            )
        {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        ));
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// The query of `GetRoomOnlineUsers` for `room` of `app`.
    pub fn room_users_query(app: &'a str, room: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("Action", "GetRoomOnlineUsers"),
            ("Version", "2023-11-01"),
            ("AppId", app),
            ("RoomId", room),
        ]
    }

    /// A signed `GET` of `GetRoomOnlineUsers` for `room` of `app`, with `AK`.
    pub fn room_users(app: &'a str, room: &'a str, now: i64) -> Self {
        let mut c = Call::new("GetRoomOnlineUsers", serde_json::Value::Null, now);
        c.method = "GET";
        c.body = Vec::new();
        c.query = Call::room_users_query(app, room);
        c
    }

    pub async fn send(&self, addr: SocketAddr) -> Reply {
        raw_http(addr, &self.to_bytes(addr)).await
    }
}

pub fn token(room: &str, uid: &str, now: i64) -> String {
    let mut t = AccessToken::new(APP, room, uid, 42, now as u32);
    t.expire_time(now as u32 + 3600);
    t.add_privilege(Privilege::SubscribeStream, 0);
    t.serialize(KEY)
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

pub async fn ws(addr: SocketAddr, app: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?appId={app}"))
        .await
        .unwrap();
    ws
}

pub async fn send_call(ws: &mut Ws, call: serde_json::Value) {
    ws.send(Message::Text(call.to_string().into()))
        .await
        .unwrap();
}

/// The next frame from the server, as JSON for events or decoded for messages.
pub enum Got {
    Event(serde_json::Value),
    Msg(ReceivedMessage),
    Closed(Option<u16>),
}

pub async fn next(ws: &mut Ws) -> Got {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame in time");
        match m {
            Some(Ok(Message::Text(t))) => return Got::Event(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Binary(b))) => return Got::Msg(ReceivedMessage::decode(b).unwrap()),
            Some(Ok(Message::Close(c))) => return Got::Closed(c.map(|c| c.code.into())),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Got::Closed(None),
        }
    }
}

pub async fn event(ws: &mut Ws) -> serde_json::Value {
    match next(ws).await {
        Got::Event(e) => e,
        Got::Msg(m) => panic!("expected an event, got message {m:?}"),
        Got::Closed(c) => panic!("expected an event, got close {c:?}"),
    }
}

pub async fn message(ws: &mut Ws) -> ReceivedMessage {
    match next(ws).await {
        Got::Msg(m) => m,
        Got::Event(e) => panic!("expected a message, got event {e}"),
        Got::Closed(c) => panic!("expected a message, got close {c:?}"),
    }
}

/// A raw client that acknowledges every message as soon as it has read it (the `ack` call), for
/// as long as it is open.
pub fn acker(mut ws: Ws) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(Ok(frame)) = ws.next().await {
            if let Message::Binary(b) = frame {
                let m = ReceivedMessage::decode(b).unwrap();
                send_call(
                    &mut ws,
                    serde_json::json!({"call": "ack", "msgid": m.msgid}),
                )
                .await;
            }
        }
    })
}

pub async fn login(addr: SocketAddr, uid: &str, now: i64) -> Ws {
    let mut ws = ws(addr, APP).await;
    send_call(
        &mut ws,
        serde_json::json!({"call":"login","token":token("", uid, now),"uid":uid}),
    )
    .await;
    let e = event(&mut ws).await;
    assert_eq!(e["errorCode"], 0, "{e}");
    ws
}

pub async fn join(ws: &mut Ws, room: &str, uid: &str, now: i64) {
    send_call(ws, serde_json::json!({"call":"joinRoom","roomId":room,"uid":uid,"token":token(room, uid, now)})).await;
    let e = event(ws).await;
    assert_eq!(e["state"], 0, "{e}");
}

/// Scrapes `/metrics` and returns the value of one series.
pub async fn metric(addr: SocketAddr, series: &str) -> f64 {
    let req = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no series {series} in\n{out}"))
}

/// A request a test HTTP receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub head: String,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// A plain HTTP/1.1 server standing in for a business server: answers every request with
/// `status` and `body`, and hands each request it got to the returned channel.
pub async fn http_receiver(
    status: u16,
    body: &'static str,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Received>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body_start) = loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = find(&buf, b"\r\n\r\n") {
                        break (String::from_utf8_lossy(&buf[..end]).to_string(), end + 4);
                    }
                };
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim()
                            .eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while buf.len() < body_start + len {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let got = Received {
                    head,
                    body: buf[body_start..].to_vec(),
                };
                let _ = tx.send(got);
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, rx)
}

/// A messaging call of `APP` from `srv` (text), with `header` added unsigned when given, as a
/// caller adds the delivery-report and ack headers.
pub fn messaging_call<'a>(
    action: &'a str,
    mut body: serde_json::Value,
    now: i64,
    header: Option<(&'a str, &'a str)>,
) -> Call<'a> {
    body["AppId"] = serde_json::json!(APP);
    body["From"] = serde_json::json!("srv");
    body["Binary"] = serde_json::json!(false);
    let mut c = Call::new(action, body, now);
    c.unsigned.extend(header);
    c
}

/// The delivery report of a successful messaging call.
pub fn report(r: &Reply) -> &serde_json::Value {
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["Result"]["Message"], "Success");
    &r.body["Result"]["DeliveryReport"]
}
