//! The SDK against a scripted WebSocket peer instead of a Herald server: exactly which frames the
//! engine writes, and how it reads events that a correct server would never send.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use herald_client::{connect, CallError, Engine, Event, EventStream};
use herald_proto::client::{Call, SendFrame, SendOp};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

const APP_ID: &str = "65a1b2c3d4e5f60718293a4b";

/// An engine connected to a peer the test drives by hand.
async fn scripted() -> (Engine, EventStream, WebSocketStream<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let peer = async {
        let (tcp, _) = listener.accept().await.unwrap();
        tokio_tungstenite::accept_async(tcp).await.unwrap()
    };
    let (client, peer) = tokio::join!(connect(&base, APP_ID), peer);
    let (engine, events) = client.unwrap();
    (engine, events, peer)
}

/// What the peer read: a call (text frame) or a send (binary frame).
#[derive(Debug, PartialEq)]
enum Frame {
    Call(Call),
    Send(SendFrame),
}

async fn read_frame(peer: &mut WebSocketStream<TcpStream>) -> Frame {
    let frame = tokio::time::timeout(Duration::from_secs(5), peer.next())
        .await
        .expect("a frame within 5 s")
        .expect("the connection is open")
        .unwrap();
    match frame {
        WsMessage::Text(text) => Frame::Call(serde_json::from_str(&text).unwrap()),
        WsMessage::Binary(bytes) => Frame::Send(SendFrame::decode(bytes).unwrap()),
        other => panic!("unexpected frame {other:?}"),
    }
}

fn send(op: SendOp, msgid: u64, to: &str, room: &str, binary: bool, payload: &[u8]) -> Frame {
    Frame::Send(SendFrame {
        op,
        msgid,
        to: to.into(),
        room_id: room.into(),
        binary,
        payload: Bytes::copy_from_slice(payload),
    })
}

async fn next(events: &mut EventStream) -> Event {
    tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("an event within 5 s")
        .expect("the stream has not ended")
}

#[tokio::test]
async fn sends_are_send_frames_numbered_from_one_sequence() {
    let (engine, _events, mut peer) = scripted().await;
    let clone = engine.clone();

    let msgids = [
        engine.send_user_message_outside_room("u2", "a").await,
        engine
            .send_user_binary_message_outside_room("u2", &[0, 0xff])
            .await,
        engine.send_user_message("r1", "u2", "b").await,
        // Clones share the engine's sequence.
        clone.send_user_binary_message("r1", "u3", &[1]).await,
        engine.send_room_message("r1", "c").await,
        engine.send_room_binary_message("r1", &[]).await,
        engine.send_server_message("{\"d\":1}").await,
        engine.send_server_binary_message(&[2, 3]).await,
    ];
    let msgids: Vec<u64> = msgids.into_iter().map(Result::unwrap).collect();
    assert_eq!(msgids, (1..=8).collect::<Vec<_>>());
    // Calls are text frames and take no msgid.
    engine.get_peer_online_status("u2").await.unwrap();
    engine
        .set_server_params("sig", "http://biz.example/rtc")
        .await
        .unwrap();
    assert_eq!(engine.send_room_message("r2", "e").await.unwrap(), 9);

    let expected = [
        send(SendOp::UserOutsideRoom, 1, "u2", "", false, b"a"),
        send(SendOp::UserOutsideRoom, 2, "u2", "", true, &[0, 0xff]),
        send(SendOp::UserInRoom, 3, "u2", "r1", false, b"b"),
        send(SendOp::UserInRoom, 4, "u3", "r1", true, &[1]),
        send(SendOp::Room, 5, "", "r1", false, b"c"),
        send(SendOp::Room, 6, "", "r1", true, b""),
        send(SendOp::Server, 7, "", "", false, b"{\"d\":1}"),
        send(SendOp::Server, 8, "", "", true, &[2, 3]),
        Frame::Call(Call::GetPeerOnlineStatus {
            peer_user_id: "u2".into(),
        }),
        Frame::Call(Call::SetServerParams {
            signature: "sig".into(),
            url: "http://biz.example/rtc".into(),
        }),
        send(SendOp::Room, 9, "", "r2", false, b"e"),
    ];
    for want in expected {
        assert_eq!(read_frame(&mut peer).await, want);
    }
}

#[tokio::test]
async fn server_answers_are_decoded_and_a_malformed_one_ends_the_connection() {
    let (engine, mut events, mut peer) = scripted().await;
    for event in [
        r#"{"event":"onServerMessageSendResult","msgid":1,"error":0,"message":"AP8="}"#,
        r#"{"event":"onServerMessageSendResult","msgid":2,"error":17,"message":""}"#,
        // An event this SDK does not know is skipped.
        r#"{"event":"onSomethingNewer","x":1}"#,
        r#"{"event":"onUserLeave","roomId":"r1","uid":"u2","reason":3}"#,
        r#"{"event":"onServerMessageSendResult","msgid":3,"error":0,"message":"%%%"}"#,
    ] {
        peer.send(WsMessage::text(event)).await.unwrap();
    }
    assert_eq!(
        next(&mut events).await,
        Event::ServerMessageSendResult {
            msgid: 1,
            error: 0,
            message: Bytes::from_static(&[0, 0xff]),
        }
    );
    assert_eq!(
        next(&mut events).await,
        Event::ServerMessageSendResult {
            msgid: 2,
            error: 17,
            message: Bytes::new(),
        }
    );
    assert_eq!(
        next(&mut events).await,
        Event::UserLeave {
            room_id: "r1".into(),
            uid: "u2".into(),
            reason: 3,
        }
    );
    // A body that is not base64 breaks the protocol: the SDK closes with 1002 and says why.
    match next(&mut events).await {
        Event::ConnectionClosed {
            code: Some(1002),
            reason,
        } => assert!(reason.contains("base64"), "{reason}"),
        other => panic!("expected onConnectionClosed 1002, got {other:?}"),
    }
    match peer.next().await {
        Some(Ok(WsMessage::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1002),
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(matches!(
        engine.send_room_message("r1", "x").await,
        Err(CallError::Closed)
    ));
}
