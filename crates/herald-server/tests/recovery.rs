//! Issue 8's recovery on one node, through real sockets: connections cut mid-stream (by a TCP
//! proxy that drops both sides, as a network switch does) resume through the Rust SDK with every
//! message counted; beyond the window the SDK is told plainly; the wire shape of positions and
//! resumes; recovery off. (Across nodes: `tests/cluster.rs`.)

mod common;
#[path = "common/proxy.rs"]
mod proxy;
#[path = "common/sdk.rs"]
mod sdk;

use common::*;
use herald_client::{Event, Recovery};
use herald_server::config::Config;
use herald_server::Server;
use proxy::Proxy;
use sdk::{cut_three_times_while_sending, login_sdk, next_event};
use serde_json::json;

fn fast_config(extra: &str) -> Config {
    let mut c = quiet(config(extra));
    // The test sends as fast as it can; the per-app limit is not what is tested here.
    c.apps[0].qps_limit = 100_000;
    c
}

fn unicast(to: &str, text: &str, now: i64) -> Call<'static> {
    let body = json!({"AppId": APP, "From": "srv", "To": to, "Binary": false, "Message": text});
    Call::new("SendUnicast", body, now)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_mid_stream_resume_with_nothing_lost_or_repeated() {
    let server = start(fast_config("")).await;
    let proxy = Proxy::start(server.local_addr()).await;
    cut_three_times_while_sending(&[proxy], vec![server.local_addr()], system_now()).await;
}

#[tokio::test]
async fn beyond_the_window_the_sdk_is_told_and_the_stream_goes_on() {
    let server = start(fast_config("[recovery]\nwindow_messages = 10")).await;
    let addr = server.local_addr();
    let now = system_now();
    let recovery = Recovery::default();
    let (engine, mut events) = login_sdk(addr, "bob", &recovery, now).await;
    unicast("bob", "0", now).send(addr).await;
    let mut got = Vec::new();
    while got.is_empty() {
        if let Event::UserMessageReceivedOutsideRoom { message, .. } = next_event(&mut events).await
        {
            got.push(message);
        }
    }
    engine.close().await;
    // 20 while away; the window keeps the last 10.
    for n in 1..=20 {
        let r = unicast("bob", &n.to_string(), now).send(addr).await;
        assert_eq!(r.status, 200);
    }
    let (_engine, mut events) = login_sdk(addr, "bob", &recovery, now).await;
    match next_event(&mut events).await {
        Event::Recovery {
            recovered: false,
            replayed: 0,
            uid,
            ..
        } => assert_eq!(uid, "bob"),
        other => panic!("expected onRecovery(recovered: false), got {other:?}"),
    }
    // Nothing is replayed; what is sent now arrives as usual.
    unicast("bob", "fresh", now).send(addr).await;
    match next_event(&mut events).await {
        Event::UserMessageReceivedOutsideRoom { message, .. } => assert_eq!(message, "fresh"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn positions_and_resumes_on_the_wire() {
    let server = start(fast_config("")).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut ws = ws(addr, APP).await;
    send_call(
        &mut ws,
        json!({"call":"login","token":token("", "carol", now),"uid":"carol"}),
    )
    .await;
    let answer = event(&mut ws).await;
    let epoch = answer["stream"]["epoch"].as_u64().unwrap();
    assert!(epoch > 0 && epoch < 1 << 53, "{answer}");
    assert_eq!(answer["stream"]["position"], 0);
    assert_eq!(answer["stream"].get("recovered"), None);
    for text in ["a", "b", "c"] {
        unicast("carol", text, now).send(addr).await;
    }
    let mut positions = Vec::new();
    for _ in 0..3 {
        let m = message(&mut ws).await;
        let pos = m.pos.expect("a position");
        assert_eq!(pos.epoch, epoch);
        positions.push(pos.position);
    }
    assert_eq!(positions, [1, 2, 3]);
    drop(ws);

    // Resume after 1 on a new connection: the answer, then 2 and 3 as they were.
    let mut ws = common::ws(addr, APP).await;
    send_call(
        &mut ws,
        json!({"call":"login","token":token("", "carol", now),"uid":"carol",
               "resume":{"epoch":epoch,"position":1}}),
    )
    .await;
    let answer = event(&mut ws).await;
    assert_eq!(
        answer["stream"],
        json!({"epoch": epoch, "position": 3, "recovered": true, "replayed": 2})
    );
    for (want, text) in [(2, "b"), (3, "c")] {
        let m = message(&mut ws).await;
        assert_eq!(
            (m.pos.unwrap().position, m.payload.as_ref()),
            (want, text.as_bytes())
        );
    }

    // A resume that is not two numbers is a bad call, answered with 4003; nothing else changes.
    send_call(
        &mut ws,
        json!({"call":"login","token":"t","uid":"carol","resume":{"epoch":"x","position":1}}),
    )
    .await;
    assert_eq!(event(&mut ws).await["errorCode"], 4003);
    unicast("carol", "d", now).send(addr).await;
    assert_eq!(message(&mut ws).await.pos.unwrap().position, 4);
}

#[tokio::test]
async fn rooms_resume_their_own_streams() {
    let server = start(fast_config("")).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut dave = ws(addr, APP).await;
    join(&mut dave, "r", "dave", now).await;
    let broadcast = |text: &'static str| {
        let body =
            json!({"AppId": APP, "From": "srv", "RoomId": "r", "Binary": false, "Message": text});
        Call::new("SendBroadcast", body, now)
    };
    broadcast("one").send(addr).await;
    let first = message(&mut dave).await.pos.unwrap();
    drop(dave);
    // Wait until the server has seen dave go: the room is then empty, its stream held.
    for _ in 0..200 {
        if metric(addr, "herald_held_streams").await == 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(metric(addr, "herald_held_streams").await, 1.0);
    // A broadcast into the room with nobody connected is still kept for dave.
    broadcast("two").send(addr).await;
    let mut dave = ws(addr, APP).await;
    send_call(
        &mut dave,
        json!({"call":"joinRoom","roomId":"r","uid":"dave","token":token("r", "dave", now),
               "resume":{"epoch":first.epoch,"position":first.position}}),
    )
    .await;
    let answer = event(&mut dave).await;
    assert_eq!(answer["state"], 0);
    assert_eq!(answer["stream"]["recovered"], true);
    assert_eq!(answer["stream"]["replayed"], 1);
    let m = message(&mut dave).await;
    assert_eq!(m.payload.as_ref(), b"two");
    assert_eq!(m.pos.unwrap().position, first.position + 1);
}

#[tokio::test]
async fn with_recovery_off_frames_and_answers_are_as_before() {
    let server = start(fast_config("[recovery]\nwindow_messages = 0")).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut ws = ws(addr, APP).await;
    send_call(
        &mut ws,
        json!({"call":"login","token":token("", "erin", now),"uid":"erin",
               "resume":{"epoch":1,"position":1}}),
    )
    .await;
    let answer = event(&mut ws).await;
    assert_eq!(
        answer,
        json!({"event":"onLoginResult","uid":"erin","errorCode":0})
    );
    unicast("erin", "x", now).send(addr).await;
    let m = message(&mut ws).await;
    assert_eq!(m.pos, None);
    drop(ws);
    assert_eq!(metric(addr, "herald_held_streams").await, 0.0);
}

#[tokio::test]
async fn the_recovery_settings_are_checked_at_start() {
    for bad in [
        "[recovery]\nwindow_messages = 100001",
        "[recovery]\nwindow_ms = 999",
        "[recovery]\nwindow_ms = 3600001",
        "[recovery]\nwindow = 5",
    ] {
        let checked = Config::from_toml(&format!("{bad}\n[[apps]]\napp_id = \"{APP}\"\napp_key = \"{KEY}\"\naccess_keys = [{{ ak = \"{AK}\", sk = \"{SK}\" }}]\n"));
        let refused = match checked {
            Err(_) => true,
            Ok(c) => Server::start(c).await.is_err(),
        };
        assert!(refused, "{bad}");
    }
}
