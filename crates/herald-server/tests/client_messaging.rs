//! Issue 5 over real sockets: room administration through the OpenAPI, sendServerMessage to a
//! real HTTP business server, and webhooks to a real receiver.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use futures_util::SinkExt;
use herald_proto::client::{SendFrame, SendOp};
use herald_proto::sign::{self, Credentials};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

fn room_query(room: &str) -> Vec<(&str, &str)> {
    Call::room_users_query(APP, room)
}

async fn online_users(addr: std::net::SocketAddr, room: &str, now: i64) -> serde_json::Value {
    let r = Call::room_users(APP, room, now).send(addr).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["ResponseMetadata"]["Action"], "GetRoomOnlineUsers");
    r.body["Result"].clone()
}

#[tokio::test]
async fn room_users_and_kick_through_the_openapi() {
    let server = start(config("")).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut a = ws(addr, APP).await;
    join(&mut a, "r1", "a", now).await;
    let mut b = ws(addr, APP).await;
    join(&mut b, "r1", "b", now).await;
    assert_eq!(
        event(&mut a).await,
        json!({"event":"onUserJoined","roomId":"r1","uid":"b"})
    );
    assert_eq!(
        event(&mut b).await,
        json!({"event":"onUserJoined","roomId":"r1","uid":"a"})
    );

    assert_eq!(
        online_users(addr, "r1", now).await,
        json!({"RoomExists":true,"TotalUser":2,"VisibleUserList":["a","b"],"TotalInvisibleUser":0,"InvisibleUserList":[]})
    );
    assert_eq!(
        online_users(addr, "nope", now).await,
        json!({"RoomExists": false})
    );

    // The presigned-URL form (what the Python SDK's sign_url produces) works too.
    let creds = Credentials {
        access_key: AK,
        secret_key: SK,
        region: "cn-north-1",
        service: "rtc",
        session_token: None,
    };
    let signed = sign::sign_query(&creds, "GET", &room_query("r1"), now);
    let qs = sign::encode_query(&signed);
    let r = raw_http(
        addr,
        format!("GET /?{qs} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(
        (r.status, r.body["Result"]["TotalUser"].clone()),
        (200, json!(2))
    );
    let tampered = qs.replace("RoomId=r1", "RoomId=r2");
    let r = raw_http(
        addr,
        format!("GET /?{tampered} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (401, "SignatureDoesNotMatch")
    );

    let mut c = Call::new("GetRoomOnlineUsers", json!(null), now);
    c.query = room_query("r1");
    assert_eq!(c.send(addr).await.code(), "MethodNotAllowed");

    let mut kick = Call::new(
        "KickUser",
        json!({"AppId": APP, "RoomId": "r1", "UserId": "b"}),
        now,
    );
    kick.query = vec![("Action", "KickUser"), ("Version", "2020-12-01")];
    let r = kick.send(addr).await;
    assert_eq!(
        (r.status, r.body["Result"].clone()),
        (200, json!({"Message": "Success"}))
    );
    assert_eq!(
        event(&mut b).await,
        json!({"event":"onRoomStateChanged","roomId":"r1","uid":"b","state":-1006})
    );
    assert_eq!(
        event(&mut a).await,
        json!({"event":"onUserLeave","roomId":"r1","uid":"b","reason":3})
    );
    assert_eq!(
        online_users(addr, "r1", now).await["VisibleUserList"],
        json!(["a"])
    );
}

async fn send_frame(ws: &mut Ws, frame: SendFrame) {
    ws.send(Message::Binary(frame.encode())).await.unwrap();
}

#[tokio::test]
async fn server_messages_reach_the_business_server_and_its_answer_comes_back() {
    let (ok_addr, mut ok_rx) = http_receiver(200, "thanks").await;
    let (bad_addr, _bad_rx) = http_receiver(500, "no").await;
    let mut cfg = config("");
    cfg.apps[0].server_message_urls = vec![
        format!("http://{ok_addr}/biz/"),
        format!("http://{bad_addr}/biz/"),
    ];
    let server = start(cfg).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut ws = login(addr, "u1", now).await;
    let frame = |msgid, binary, payload: &'static [u8]| SendFrame {
        op: SendOp::Server,
        msgid,
        to: String::new(),
        room_id: String::new(),
        binary,
        payload: bytes::Bytes::from_static(payload),
    };

    send_frame(&mut ws, frame(1, false, b"hello")).await;
    assert_eq!(
        event(&mut ws).await,
        json!({"event":"onServerMessageSendResult","msgid":1,"error":106,"message":""})
    );
    send_call(&mut ws, json!({"call":"setServerParams","signature":"sig-1","url":"http://169.254.169.254/latest/"})).await;
    assert_eq!(
        event(&mut ws).await,
        json!({"event":"onServerParamsSetResult","error":106})
    );
    send_call(&mut ws, json!({"call":"setServerParams","signature":"sig-1","url":format!("http://{ok_addr}/biz/in")})).await;
    assert_eq!(
        event(&mut ws).await,
        json!({"event":"onServerParamsSetResult","error":200})
    );

    send_frame(&mut ws, frame(2, false, b"hello")).await;
    let e = event(&mut ws).await;
    assert_eq!(
        (e["msgid"].clone(), e["error"].clone()),
        (json!(2), json!(0))
    );
    let body = base64::engine::general_purpose::STANDARD
        .decode(e["message"].as_str().unwrap())
        .unwrap();
    assert_eq!(body, b"thanks");
    let got = tokio::time::timeout(Duration::from_secs(5), ok_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        got.head.starts_with("POST /biz/in HTTP/1.1"),
        "{}",
        got.head
    );
    assert_eq!(
        got.header("content-type"),
        None,
        "the vendor sends no Content-Type"
    );
    let posted: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(
        posted,
        json!({"message":"hello","binary":false,"signature":"sig-1"})
    );

    send_frame(&mut ws, frame(3, true, &[0, 255])).await;
    assert_eq!(event(&mut ws).await["error"], 0);
    let got = ok_rx.recv().await.unwrap();
    let posted: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(
        posted,
        json!({"message":"AP8=","binary":true,"signature":"sig-1"})
    );

    send_call(
        &mut ws,
        json!({"call":"setServerParams","signature":"s","url":format!("http://{bad_addr}/biz/")}),
    )
    .await;
    assert_eq!(event(&mut ws).await["error"], 200);
    send_frame(&mut ws, frame(4, false, b"x")).await;
    assert_eq!(
        event(&mut ws).await,
        json!({"event":"onServerMessageSendResult","msgid":4,"error":18,"message":""})
    );
}

#[tokio::test]
async fn webhooks_report_joins_and_leaves() {
    let (hook_addr, mut hooks) = http_receiver(200, "").await;
    let server = start(config("").with_webhook(&format!("http://{hook_addr}/hook"))).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut ws = ws(addr, APP).await;
    join(&mut ws, "r1", "u1", now).await;
    send_call(&mut ws, json!({"call":"leaveRoom","roomId":"r1"})).await;
    event(&mut ws).await;
    for expected in ["UserJoinRoom", "UserLeaveRoom"] {
        let got = tokio::time::timeout(Duration::from_secs(10), hooks.recv())
            .await
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(v["EventType"], expected);
        assert_eq!(v["AppId"], APP);
        let data: serde_json::Value =
            serde_json::from_str(v["EventData"].as_str().unwrap()).unwrap();
        assert_eq!(
            (data["RoomId"].clone(), data["UserId"].clone()),
            (json!("r1"), json!("u1"))
        );
        let s = |k: &str| v[k].as_str().unwrap().to_owned();
        let sig = herald_server::webhook::signature(
            &s("EventType"),
            &s("EventData"),
            &s("EventTime"),
            &s("EventId"),
            &s("AppId"),
            &s("Version"),
            &s("Nonce"),
            "hook-secret",
        );
        assert_eq!(s("Signature"), sig);
    }
}

trait WithWebhook {
    fn with_webhook(self, url: &str) -> Self;
}

impl WithWebhook for herald_server::config::Config {
    fn with_webhook(mut self, url: &str) -> Self {
        let text = format!("url = \"{url}\"\nsecret = \"hook-secret\"\n");
        self.apps[0].webhook = Some(toml::from_str(&text).unwrap());
        self
    }
}

/// A room token that runs out is warned about, then ends the membership, on the server's own
/// timer: nothing but the clock has to happen.
#[tokio::test]
async fn an_expiring_room_token_is_warned_about_then_ends_the_membership() {
    let server = start(config("")).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut ws = ws(addr, APP).await;
    let mut t = herald_proto::token::AccessToken::new(APP, "r1", "u1", 5, now as u32);
    t.expire_time(now as u32 + 1);
    send_call(
        &mut ws,
        json!({"call":"joinRoom","roomId":"r1","uid":"u1","token":t.serialize(KEY)}),
    )
    .await;
    assert_eq!(event(&mut ws).await["state"], 0);
    assert_eq!(
        event(&mut ws).await,
        json!({"event":"onTokenWillExpire","roomId":"r1"})
    );
    assert_eq!(
        event(&mut ws).await,
        json!({"event":"onRoomStateChanged","roomId":"r1","uid":"u1","state":-1009})
    );
    assert_eq!(
        online_users(addr, "r1", system_now()).await,
        json!({"RoomExists": false})
    );
}
