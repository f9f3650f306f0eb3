//! The Rust SDK in the recovery tests: log in resuming, read events, read to a connection's end.

use std::net::SocketAddr;

use herald_client::{connect_with, ConnectOptions, Engine, Event, EventStream, Recovery};

use crate::common::{token, Call, APP};
use crate::proxy::Proxy;

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

/// The `onRecovery` that follows a resumed login's answer first: (recovered, replayed).
pub async fn recovery_event(events: &mut EventStream) -> (bool, u64) {
    match next_event(events).await {
        Event::Recovery {
            room_id,
            recovered,
            replayed,
            ..
        } => {
            assert_eq!(room_id, "", "the login's stream");
            (recovered, replayed)
        }
        other => panic!("expected onRecovery first, got {other:?}"),
    }
}

/// Reads numbered unicasts into `got` until it holds `total`; any other event is a failure.
pub async fn read_until(events: &mut EventStream, got: &mut Vec<u32>, total: usize) {
    while got.len() < total {
        match next_event(events).await {
            Event::UserMessageReceivedOutsideRoom { message, .. } => {
                got.push(message.parse().unwrap())
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Issue 8's cut test, on one node or many: the business server sends 1,500 numbered unicasts
/// to alice, one call after another, to the nodes at `api` in turn, while her SDK (with a
/// `Recovery`) reads through `proxies[0]`. Three times (after 150, 500 and 900 messages) the
/// proxy her connection goes through cuts it, both sides at once; she reconnects through the
/// next proxy (after a pause the second time, so messages pile up in the held stream) and
/// resumes. Every message must arrive exactly once, in the order sent, and every resume recover.
pub async fn cut_three_times_while_sending(proxies: &[Proxy], api: Vec<SocketAddr>, now: i64) {
    const TOTAL: u32 = 1_500;
    let recovery = Recovery::default();
    let (engine, mut events) = login_sdk(proxies[0].addr, "alice", &recovery, now).await;
    // Engines are kept: dropping one would close its connection cleanly, which is not the test.
    let mut engines = vec![engine];
    let sender = tokio::spawn(async move {
        for n in 1..=TOTAL {
            let body = serde_json::json!({"AppId": APP, "From": "srv", "To": "alice",
                                          "Binary": false, "Message": n.to_string()});
            let r = Call::new("SendUnicast", body, now)
                .send(api[n as usize % api.len()])
                .await;
            assert_eq!(r.status, 200, "{:?}", r.body);
        }
    });
    let mut got = Vec::new();
    let mut recoveries = Vec::new();
    for (round, cut_at) in [150usize, 500, 900].into_iter().enumerate() {
        while got.len() < cut_at {
            if let Event::UserMessageReceivedOutsideRoom { message, .. } =
                next_event(&mut events).await
            {
                got.push(message.parse().unwrap());
            }
        }
        proxies[round % proxies.len()].cut();
        // What the SDK read before the cut is still on the stream, then the close.
        drain_until_closed(&mut events, &mut got).await;
        if round == 1 {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        let next = &proxies[(round + 1) % proxies.len()];
        let (engine, ev) = login_sdk(next.addr, "alice", &recovery, now).await;
        engines.push(engine);
        events = ev;
        recoveries.push(recovery_event(&mut events).await);
    }
    sender.await.unwrap();
    read_until(&mut events, &mut got, TOTAL as usize).await;
    assert!(recoveries.iter().all(|(ok, _)| *ok), "{recoveries:?}");
    // Every message once, in the order sent: nothing lost, nothing twice.
    assert_eq!(got, (1..=TOTAL).collect::<Vec<_>>());
    // The pause let messages pile up for the held stream: they came back by replay.
    assert!(recoveries[1].1 > 0, "{recoveries:?}");
}
