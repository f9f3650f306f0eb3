//! The Rust SDK in the recovery tests: log in resuming, read events, read to a connection's end.

use std::net::SocketAddr;

use herald_client::{connect_with, ConnectOptions, Engine, Event, EventStream, Recovery};

use crate::common::{token, APP};

/// Connects through `server` (an address) and logs in as `uid`, resuming from `recovery`.
pub async fn login_sdk(
    server: SocketAddr,
    uid: &str,
    recovery: &Recovery,
    now: i64,
) -> (Engine, EventStream) {
    let base = format!("http://{server}");
    let (engine, mut events) =
        connect_with(&base, APP, &ConnectOptions::default().recovery(recovery))
            .await
            .unwrap();
    engine.login(&token("", uid, now), uid).await.unwrap();
    match next_event(&mut events).await {
        Event::LoginResult { error_code: 0, .. } => {}
        other => panic!("not logged in: {other:?}"),
    }
    (engine, events)
}

pub async fn next_event(events: &mut EventStream) -> Event {
    tokio::time::timeout(std::time::Duration::from_secs(10), events.recv())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
}

/// Reads events until the connection ends, collecting the numbered messages.
pub async fn drain_until_closed(events: &mut EventStream, got: &mut Vec<u32>) {
    loop {
        match next_event(events).await {
            Event::UserMessageReceivedOutsideRoom { message, .. } => {
                got.push(message.parse().unwrap())
            }
            Event::ConnectionClosed { .. } => return,
            _ => {}
        }
    }
}
