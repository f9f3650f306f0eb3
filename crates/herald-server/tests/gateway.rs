//! The client gateway over real sockets: delivery, duplicate login, heartbeat, slow consumers,
//! protocol abuse, metrics.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use herald_proto::client::MessageKind;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn each_action_reaches_its_recipients_only() {
    let server = start(quiet(config(""))).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut a = login(addr, "a", now).await;
    let mut b = login(addr, "b", now).await;
    join(&mut a, "r1", "a", now).await;
    join(&mut b, "r1", "b", now).await;
    let mut c = login(addr, "c", now).await; // logged in, not in r1

    let body = |to: serde_json::Value| json!({"AppId": APP, "RoomId": "r1", "From": "bot", "To": to, "Binary": true, "Message": "AAEC/w=="});
    let mut call = Call::new("SendRoomUnicast", body(json!("b")), now);
    call.query[0].1 = "SendRoomUnicast";
    assert_eq!(call.send(addr).await.status, 200);
    let mut call = Call::new("BatchSendRoomUnicast", body(json!(["a", "c", "a"])), now);
    call.query[0].1 = "BatchSendRoomUnicast";
    assert_eq!(call.send(addr).await.status, 200);
    let mut call = Call::new("SendBroadcast", body(json!(null)), now);
    call.query[0].1 = "SendBroadcast";
    assert_eq!(call.send(addr).await.status, 200);
    let call = Call::new(
        "SendUnicast",
        json!({"AppId": APP, "From": "bot", "To": "c", "Binary": false, "Message": "only c"}),
        now,
    );
    assert_eq!(call.send(addr).await.status, 200);

    let m = message(&mut b).await;
    assert_eq!(
        (m.kind, m.msgid, m.binary, &m.payload[..]),
        (MessageKind::RoomUser, 1, true, &[0u8, 1, 2, 255][..])
    );
    assert_eq!((m.uid.as_str(), m.room_id.as_deref()), ("bot", Some("r1")));
    let m = message(&mut b).await;
    assert_eq!((m.kind, m.msgid), (MessageKind::RoomBroadcast, 2));

    let m = message(&mut a).await;
    assert_eq!(
        (m.kind, m.msgid),
        (MessageKind::RoomUser, 1),
        "a duplicate id in To is delivered once"
    );
    let m = message(&mut a).await;
    assert_eq!((m.kind, m.msgid), (MessageKind::RoomBroadcast, 2));

    let m = message(&mut c).await;
    assert_eq!(
        (m.kind, m.msgid, &m.payload[..]),
        (MessageKind::OutsideRoom, 1, &b"only c"[..])
    );
    assert!(!m.binary && m.room_id.is_none());
}

#[tokio::test]
async fn a_duplicate_login_ends_the_older_session() {
    let server = start(config("")).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut first = login(addr, "u1", now).await;
    let mut second = login(addr, "u1", now).await;
    assert_eq!(
        event(&mut first).await,
        json!({"event": "onLogout", "reason": 1})
    );
    let r = Call::new(
        "SendUnicast",
        json!({"AppId": APP, "From": "bot", "To": "u1", "Binary": false, "Message": "m"}),
        now,
    )
    .send(addr)
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(message(&mut second).await.payload, "m");
    // The older connection is still open and usable: it can log in again (as someone else).
    send_call(
        &mut first,
        json!({"call":"login","token":token("", "u2", now),"uid":"u2"}),
    )
    .await;
    assert_eq!(event(&mut first).await["errorCode"], 0);
}

#[tokio::test]
async fn bad_tokens_get_the_vendor_codes() {
    let server = start(config("")).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut ws = ws(addr, APP).await;
    let expired = {
        let mut t = herald_proto::token::AccessToken::new(APP, "", "u1", 1, (now - 100) as u32);
        t.expire_time((now - 10) as u32);
        t.serialize(KEY)
    };
    let forged = {
        let mut t = herald_proto::token::AccessToken::new(APP, "", "u1", 1, now as u32);
        t.expire_time(0);
        t.serialize("not the app key")
    };
    let other_app = {
        let mut t = herald_proto::token::AccessToken::new(APP2, "", "u1", 1, now as u32);
        t.expire_time(0);
        t.serialize(KEY)
    };
    for (tok, uid, code) in [
        (expired, "u1", -1000),
        (forged, "u1", -1000),
        (other_app, "u1", -1000),
        (token("", "u1", now), "u 1", -1002),
    ] {
        send_call(&mut ws, json!({"call":"login","token":tok,"uid":uid})).await;
        assert_eq!(
            event(&mut ws).await,
            json!({"event":"onLoginResult","uid":uid,"errorCode":code})
        );
    }
    let room_expired = {
        let mut t = herald_proto::token::AccessToken::new(APP, "r1", "u1", 1, (now - 100) as u32);
        t.expire_time((now - 10) as u32);
        t.serialize(KEY)
    };
    for (room, tok, state) in [
        ("r1", room_expired, -1009),
        ("r1", token("r2", "u1", now), -1000),
        ("r 1", token("r 1", "u1", now), -1007),
    ] {
        send_call(
            &mut ws,
            json!({"call":"joinRoom","roomId":room,"uid":"u1","token":tok}),
        )
        .await;
        assert_eq!(
            event(&mut ws).await,
            json!({"event":"onRoomStateChanged","roomId":room,"uid":"u1","state":state})
        );
    }
}

#[tokio::test]
async fn bad_calls_get_on_error_and_the_connection_stays() {
    let server = start(config("")).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut ws = login(addr, "u1", now).await;
    ws.send(Message::Text("not json".into())).await.unwrap();
    assert_eq!(event(&mut ws).await["errorCode"], 4003);
    send_call(&mut ws, json!({"call":"fly"})).await;
    assert_eq!(event(&mut ws).await["errorCode"], 4003);
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(event(&mut ws).await["errorCode"], 4004);
    send_call(&mut ws, json!({"call":"leaveRoom","roomId":"r9"})).await;
    assert_eq!(
        event(&mut ws).await,
        json!({"event":"onLeaveRoom","roomId":"r9"})
    );
}

#[tokio::test]
async fn unknown_apps_are_refused_before_upgrading() {
    let server = start(config("")).await;
    let addr = server.local_addr();
    let err = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?appId=nope")).await;
    assert!(err.is_err());
    let err = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await;
    assert!(err.is_err());
}

#[tokio::test]
async fn an_oversized_frame_is_closed_with_1009() {
    let server = start(config("[gateway]\nmax_client_message_bytes = 4096")).await;
    let mut ws = ws(server.local_addr(), APP).await;
    ws.send(Message::Text("x".repeat(5000).into()))
        .await
        .unwrap();
    assert!(matches!(next(&mut ws).await, Got::Closed(Some(1009))));
}

/// A client that completed the handshake and then went silent: it never reads, never answers a
/// ping. The heartbeat must notice and clean up its login.
#[tokio::test]
async fn dead_connections_are_detected_by_the_heartbeat() {
    let server = start(config(
        "[gateway]\nheartbeat_interval_ms = 50\nheartbeat_timeout_ms = 200",
    ))
    .await;
    let addr = server.local_addr();
    let now = system_now();
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(
        format!(
            "GET /ws?appId={APP} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // One masked text frame with the login call.
    let call = json!({"call":"login","token":token("", "ghost", now),"uid":"ghost"}).to_string();
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 126, (call.len() >> 8) as u8, call.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(call.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    raw.write_all(&frame).await.unwrap();
    // Read until the server closes: pings, then a close frame with 4002, then EOF.
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut got))
        .await
        .expect("closed in time");
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("onLoginResult"), "{text}");
    let close = [0x88u8, 2 + "heartbeat timeout".len() as u8, 0x0f, 0xa2]; // 4002 = 0x0fa2
    assert!(
        got.windows(4).any(|w| w == close),
        "close frame 4002 expected"
    );
    assert!(
        got.windows(2).any(|w| w == [0x89, 0x00]),
        "pings were sent first"
    );
    // The login is gone; its stream is held for recovery, so a message to it is kept there.
    let before = metric(addr, "herald_messages_held_total").await;
    let r = Call::new(
        "SendUnicast",
        json!({"AppId": APP, "From": "bot", "To": "ghost", "Binary": false, "Message": "m"}),
        now,
    )
    .send(addr)
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        metric(addr, "herald_messages_held_total").await,
        before + 1.0
    );
    assert_eq!(metric(addr, "herald_held_streams").await, 1.0);
    assert_eq!(metric(addr, "herald_connections").await, 0.0);
}

/// A client that stops reading must be cut off (4001) without slowing anyone else down.
#[tokio::test]
async fn a_slow_consumer_is_cut_off_and_others_keep_receiving() {
    let server = start(quiet(config(
        "[gateway]\noutbound_queue_bytes = 65536\nwrite_timeout_ms = 120000",
    )))
    .await;
    let addr = server.local_addr();
    let now = system_now();
    let mut slow = login(addr, "slow", now).await;
    join(&mut slow, "r", "slow", now).await;
    let mut fast = login(addr, "fast", now).await;
    join(&mut fast, "r", "fast", now).await;

    // Broadcast 60 KiB messages into the room. `slow` is never read until the end; `fast` reads
    // each message as it comes. The kernel buffers a few MB before the slow queue starts to fill.
    let payload = "x".repeat(60 * 1024);
    let mut sent = 0u64;
    while server
        .metrics()
        .dropped_total(herald_server::metrics::DropReason::SlowConsumer)
        == 0
    {
        assert!(sent < 2000, "the slow consumer was never cut off");
        let mut c = Call::new(
            "SendBroadcast",
            json!({"AppId": APP, "RoomId": "r", "From": "bot", "Binary": false, "Message": payload}),
            now,
        );
        c.query[0].1 = "SendBroadcast";
        assert_eq!(c.send(addr).await.status, 200);
        sent += 1;
        let m = message(&mut fast).await;
        assert_eq!(m.msgid, sent);
    }
    // The fast reader got every message, in order (asserted above, one by one).
    // The slow one, when it finally reads, finds what fitted in the socket buffers, then 4001.
    let mut received = 0u64;
    loop {
        match next(&mut slow).await {
            Got::Msg(m) => {
                received += 1;
                assert_eq!(m.msgid, received, "no gaps before the cut");
            }
            Got::Event(e) => panic!("unexpected event {e}"),
            Got::Closed(code) => {
                assert_eq!(code, Some(4001));
                break;
            }
        }
    }
    assert!(received < sent);
}

#[tokio::test]
async fn metrics_and_health() {
    let server = start(config("")).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut ws = login(addr, "u1", now).await;
    join(&mut ws, "r1", "u1", now).await;
    assert_eq!(metric(addr, "herald_connections").await, 1.0);
    assert_eq!(metric(addr, "herald_logged_in_users").await, 1.0);
    assert_eq!(metric(addr, "herald_room_members").await, 1.0);
    let r = Call::new(
        "SendUnicast",
        json!({"AppId": APP, "From": "bot", "To": "u1", "Binary": false, "Message": "m"}),
        now,
    )
    .send(addr)
    .await;
    assert_eq!(r.status, 200);
    message(&mut ws).await;
    assert_eq!(
        metric(
            addr,
            "herald_api_calls_total{action=\"SendUnicast\",code=\"Success\"}"
        )
        .await,
        1.0
    );
    assert_eq!(metric(addr, "herald_messages_accepted_total").await, 1.0);
    assert_eq!(metric(addr, "herald_messages_delivered_total").await, 1.0);
    assert_eq!(
        metric(addr, "herald_delivery_latency_seconds_count").await,
        1.0
    );
    let r = raw_http(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((r.status, r.body.clone()), (200, json!({"status": "ok"})));
    // A single node is always ready (a cluster node only once in sync: tests/cluster.rs).
    let r = raw_http(
        addr,
        b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        (r.status, r.body.clone()),
        (200, json!({"status": "ready"}))
    );
}
