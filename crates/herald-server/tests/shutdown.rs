//! Graceful shutdown, through real sockets: an API call in flight when the server is told to stop
//! is still answered and delivered; then clients are told to reconnect elsewhere (1001); no new
//! connection is accepted.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_call_in_flight_is_answered_and_delivered_before_clients_are_told_to_leave() {
    let server = start(quiet(config(""))).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut ws = login(addr, "u1", now).await;

    // A SendUnicast whose body has not fully arrived when the shutdown starts.
    let call = Call::new(
        "SendUnicast",
        json!({"AppId": APP, "From": "bot", "To": "u1", "Binary": false, "Message": "last words"}),
        now,
    )
    .to_bytes(addr);
    let (head, tail) = call.split_at(call.len() - 5);
    let mut api = TcpStream::connect(addr).await.unwrap();
    api.write_all(head).await.unwrap();
    // Let the server parse the headers and start reading the body before it is told to stop.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let stopping = tokio::spawn(server.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !stopping.is_finished(),
        "the shutdown must wait for the call in flight"
    );
    // No new connection is served once the shutdown has begun.
    let refused = match TcpStream::connect(addr).await {
        Err(_) => true,
        Ok(mut s) => {
            let _ = s
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await;
            let mut buf = [0u8; 64];
            matches!(
                tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await,
                Ok(Ok(0) | Err(_))
            )
        }
    };
    assert!(refused, "a connection made during the shutdown was served");

    api.write_all(tail).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), api.read_to_end(&mut reply))
        .await
        .expect("the call is answered")
        .unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"Result\""), "{reply}");

    // The client gets the message the call carried, and only then the close: 1001, go elsewhere.
    let m = message(&mut ws).await;
    assert_eq!(&m.payload[..], b"last words");
    match next(&mut ws).await {
        Got::Closed(code) => assert_eq!(code, Some(1001)),
        Got::Event(e) => panic!("expected the close, got {e}"),
        Got::Msg(m) => panic!("expected the close, got {m:?}"),
    }
    tokio::time::timeout(Duration::from_secs(11), stopping)
        .await
        .expect("the shutdown ends in bounded time")
        .unwrap();
}

#[tokio::test]
async fn idle_keep_alive_connections_do_not_hold_the_shutdown() {
    let server = start(quiet(config(""))).await;
    let addr = server.local_addr();
    // An idle keep-alive API connection, after one answered request.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    tokio::time::timeout(Duration::from_secs(4), server.shutdown())
        .await
        .expect("an idle keep-alive connection is closed at once, not waited for");
    let closed = tokio::time::timeout(Duration::from_secs(2), idle.read(&mut buf))
        .await
        .expect("the idle connection is closed");
    assert!(matches!(closed, Ok(0) | Err(_)));
}
