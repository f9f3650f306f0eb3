//! Issue 4: three nodes on a real `redis-server`, clients on different nodes.
//!
//! Each test starts its own Redis on a free port. Without `redis-server` on the PATH the tests
//! say so and pass, unless `HERALD_REQUIRE_REDIS=1` (CI), which makes that a failure.

mod common;
#[path = "common/proxy.rs"]
mod proxy;
#[path = "common/redis.rs"]
mod redis;
#[path = "common/sdk.rs"]
mod sdk;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt;
use herald_proto::client::{user_leave_reason, SendFrame, SendOp};
use herald_server::config::Config;
use herald_server::Server;
use proxy::Proxy;
use redis::Redis;
use sdk::cut_three_times_while_sending;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// A node's config with `extra` TOML sections (e.g. `[recovery]`).
fn node_config_with(redis: &Redis, node: &str, presence: bool, extra: &str) -> Config {
    let c = config(&format!(
        "[cluster]\nredis = \"{}\"\nnode_id = \"{node}\"\nnode_ttl_ms = 2000\ncommand_timeout_ms = 500\n{extra}",
        redis.url()
    ));
    if presence {
        c
    } else {
        quiet(c)
    }
}

/// Waits until `/readyz` says the node is in sync with Redis.
async fn wait_up(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = raw_http(
            addr,
            b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        if r.status == 200 {
            assert_eq!(metric(addr, "herald_cluster_redis_up").await, 1.0);
            return;
        }
        assert_eq!(r.status, 503, "{:?}", r.body);
        assert!(Instant::now() < deadline, "node {addr} never got in sync");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn nodes(
    redis: &Redis,
    presence: bool,
    clock: Option<&std::sync::Arc<herald_server::clock::ManualClock>>,
) -> Vec<Server> {
    nodes_with(redis, presence, clock, "").await
}

/// Three nodes whose configs add `extra`.
async fn nodes_with(
    redis: &Redis,
    presence: bool,
    clock: Option<&std::sync::Arc<herald_server::clock::ManualClock>>,
    extra: &str,
) -> Vec<Server> {
    let mut out = Vec::new();
    for n in ["n1", "n2", "n3"] {
        let cfg = node_config_with(redis, n, presence, extra);
        let s = match clock {
            Some(c) => start_with_clock(cfg, c.clone()).await,
            None => start(cfg).await,
        };
        wait_up(s.local_addr()).await;
        out.push(s);
    }
    out
}

/// A signed OpenAPI call; messaging bodies get `"Binary": false`.
async fn api(addr: SocketAddr, action: &str, mut body: serde_json::Value, now: i64) -> Reply {
    let mut c = Call::new(action, json!(null), now);
    if action == "KickUser" {
        c.query = vec![("Action", "KickUser"), ("Version", "2020-12-01")];
    } else {
        body["Binary"] = json!(false);
    }
    c.body = serde_json::to_vec(&body).unwrap();
    c.send(addr).await
}

async fn ok(addr: SocketAddr, action: &str, body: serde_json::Value, now: i64) {
    let r = api(addr, action, body, now).await;
    assert_eq!(r.status, 200, "{action}: {:?}", r.body);
}

async fn text_message(ws: &mut Ws) -> String {
    String::from_utf8(message(ws).await.payload.to_vec()).unwrap()
}

/// A login or join registers before it is answered, so by the time a client has its answer every
/// node can route to it.
#[tokio::test]
async fn every_action_reaches_recipients_on_other_nodes() {
    every_action_reaches_recipients(true).await;
}

/// With recovery off a node delivers to its own recipients directly, and publishes only to the
/// others: the same actions must reach the same recipients.
#[tokio::test]
async fn every_action_reaches_recipients_on_other_nodes_without_recovery() {
    every_action_reaches_recipients(false).await;
}

async fn every_action_reaches_recipients(recovery: bool) {
    let Some(redis) = Redis::start() else { return };
    let extra = if recovery {
        ""
    } else {
        "[recovery]\nwindow_messages = 0\n"
    };
    let n = nodes_with(&redis, false, None, extra).await;
    let (a1, a2, a3) = (n[0].local_addr(), n[1].local_addr(), n[2].local_addr());
    let now = system_now();
    let mut alice = login(a1, "alice", now).await;
    let mut bob = ws(a2, APP).await;
    join(&mut bob, "r", "bob", now).await;
    let mut carol = ws(a3, APP).await;
    join(&mut carol, "r", "carol", now).await;
    let mut dave = ws(a1, APP).await;
    join(&mut dave, "r", "dave", now).await;

    // SendUnicast on n2 to a login on n1.
    ok(
        a2,
        "SendUnicast",
        json!({"AppId":APP,"From":"srv","To":"alice","Message":"hi alice"}),
        now,
    )
    .await;
    assert_eq!(text_message(&mut alice).await, "hi alice");

    // SendRoomUnicast on n1 to a member on n3.
    ok(
        a1,
        "SendRoomUnicast",
        json!({"AppId":APP,"From":"srv","RoomId":"r","To":"carol","Message":"hi carol"}),
        now,
    )
    .await;
    assert_eq!(text_message(&mut carol).await, "hi carol");

    // BatchSendRoomUnicast on n3: carol is local, bob on n2, dave on n1, zed nowhere. One
    // message per other node that holds recipients: two; with recovery, n3's own recipients
    // come through its channel too (in stream order): three.
    let before = metric(a3, "herald_cluster_published_total").await;
    ok(a3, "BatchSendRoomUnicast", json!({"AppId":APP,"From":"srv","RoomId":"r","To":["bob","carol","dave","zed"],"Message":"batch"}), now).await;
    for ws in [&mut bob, &mut carol, &mut dave] {
        assert_eq!(text_message(ws).await, "batch");
    }
    assert_eq!(
        metric(a3, "herald_cluster_published_total").await - before,
        if recovery { 3.0 } else { 2.0 }
    );
    // With recovery every message carries its recipient's stream position, taken in Redis.
    ok(
        a3,
        "SendRoomUnicast",
        json!({"AppId":APP,"From":"srv","RoomId":"r","To":"dave","Message":"again"}),
        now,
    )
    .await;
    let m = message(&mut dave).await;
    assert_eq!(m.payload.as_ref(), b"again");
    assert_eq!(m.pos.map(|p| p.position), recovery.then_some(2));

    // SendBroadcast on n2 reaches the room on every node.
    ok(
        a2,
        "SendBroadcast",
        json!({"AppId":APP,"From":"srv","RoomId":"r","Message":"all"}),
        now,
    )
    .await;
    for ws in [&mut bob, &mut carol, &mut dave] {
        assert_eq!(text_message(ws).await, "all");
    }

    // GetRoomOnlineUsers on any node sees every node's members.
    let r = Call::room_users(APP, "r", now).send(a1).await;
    assert_eq!(
        r.body["Result"]["VisibleUserList"],
        json!(["bob", "carol", "dave"])
    );

    // getPeerOnlineStatus from n2 about a login on n1.
    send_call(
        &mut bob,
        json!({"call":"getPeerOnlineStatus","peerUserId":"alice"}),
    )
    .await;
    assert_eq!(
        event(&mut bob).await,
        json!({"event":"onGetPeerOnlineStatus","peerUserId":"alice","status":1})
    );

    // Client sends: bob (n2) to alice's login (n1), and to carol in the room (n3).
    send_call(
        &mut bob,
        json!({"call":"login","token":token("", "bob", now),"uid":"bob"}),
    )
    .await;
    assert_eq!(event(&mut bob).await["errorCode"], 0);
    let frame = |op, msgid, to: &str, room: &str, text: &str| SendFrame {
        op,
        msgid,
        to: to.into(),
        room_id: room.into(),
        binary: false,
        payload: bytes::Bytes::copy_from_slice(text.as_bytes()),
    };
    let f = frame(SendOp::UserOutsideRoom, 1, "alice", "", "from bob");
    bob.send(Message::Binary(f.encode())).await.unwrap();
    assert_eq!(event(&mut bob).await["error"], 0);
    let m = message(&mut alice).await;
    assert_eq!((m.uid.as_str(), &m.payload[..]), ("bob", &b"from bob"[..]));
    let f = frame(SendOp::UserInRoom, 2, "carol", "r", "psst");
    bob.send(Message::Binary(f.encode())).await.unwrap();
    assert_eq!(event(&mut bob).await["error"], 0);
    assert_eq!(text_message(&mut carol).await, "psst");
    let f = frame(SendOp::UserOutsideRoom, 3, "nobody", "", "x");
    bob.send(Message::Binary(f.encode())).await.unwrap();
    assert_eq!(event(&mut bob).await["error"], 3, "NO_RECEIVER");
    // A client's room broadcast reaches the other nodes' members, not the sender.
    let f = frame(SendOp::Room, 4, "", "r", "to the room");
    bob.send(Message::Binary(f.encode())).await.unwrap();
    assert_eq!(event(&mut bob).await["error"], 200);
    assert_eq!(text_message(&mut carol).await, "to the room");
    assert_eq!(text_message(&mut dave).await, "to the room");

    // KickUser on n1 for a member on n3.
    ok(
        a1,
        "KickUser",
        json!({"AppId":APP,"RoomId":"r","UserId":"carol"}),
        now,
    )
    .await;
    let e = event(&mut carol).await;
    assert_eq!(
        (e["event"].as_str(), e["state"].as_i64()),
        (Some("onRoomStateChanged"), Some(-1006)),
        "{e}"
    );
}

#[tokio::test]
async fn presence_crosses_nodes() {
    let Some(redis) = Redis::start() else { return };
    let n = nodes(&redis, true, None).await;
    let now = system_now();
    let mut bob = ws(n[1].local_addr(), APP).await;
    join(&mut bob, "r", "bob", now).await;
    let mut carol = ws(n[2].local_addr(), APP).await;
    join(&mut carol, "r", "carol", now).await;
    // The joiner hears of the member on another node; that member hears of the joiner.
    assert_eq!(
        event(&mut carol).await,
        json!({"event":"onUserJoined","roomId":"r","uid":"bob"})
    );
    assert_eq!(
        event(&mut bob).await,
        json!({"event":"onUserJoined","roomId":"r","uid":"carol"})
    );
    send_call(&mut carol, json!({"call":"leaveRoom","roomId":"r"})).await;
    assert_eq!(event(&mut carol).await["event"], "onLeaveRoom");
    assert_eq!(
        event(&mut bob).await,
        json!({"event":"onUserLeave","roomId":"r","uid":"carol","reason":user_leave_reason::QUIT})
    );
    // A kick on another node: the others see KICKED_BY_ADMIN.
    let mut dave = ws(n[0].local_addr(), APP).await;
    join(&mut dave, "r", "dave", now).await;
    assert_eq!(event(&mut dave).await["uid"], "bob");
    assert_eq!(event(&mut bob).await["uid"], "dave");
    ok(
        n[2].local_addr(),
        "KickUser",
        json!({"AppId":APP,"RoomId":"r","UserId":"dave"}),
        now,
    )
    .await;
    assert_eq!(event(&mut dave).await["state"], -1006);
    assert_eq!(
        event(&mut bob).await,
        json!({"event":"onUserLeave","roomId":"r","uid":"dave","reason":user_leave_reason::KICKED_BY_ADMIN})
    );
}

/// 500 calls per second for the app, counted over every node: with time stopped, exactly 500
/// calls spread over three nodes pass and the rest are refused with Retry-After.
#[tokio::test]
async fn the_rate_limit_holds_for_the_cluster() {
    let Some(redis) = Redis::start() else { return };
    let clock = manual_clock();
    let n = nodes(&redis, false, Some(&clock)).await;
    let now = clock_now(&clock);
    let mut passed = 0;
    let mut refused = 0;
    for i in 0..600 {
        let addr = n[i % 3].local_addr();
        let r = api(
            addr,
            "SendUnicast",
            json!({"AppId":APP,"From":"srv","To":"nobody","Message":"m"}),
            now,
        )
        .await;
        match r.status {
            200 => passed += 1,
            429 => {
                assert_eq!(r.code(), "FlowLimitExceeded.QPSOverLimit");
                assert!(r.header("retry-after").is_some());
                refused += 1;
            }
            s => panic!("unexpected {s}: {:?}", r.body),
        }
    }
    assert_eq!((passed, refused), (500, 100));
    clock.advance_micros(1_000_000);
    let r = api(
        n[1].local_addr(),
        "SendUnicast",
        json!({"AppId":APP,"From":"srv","To":"nobody","Message":"m"}),
        now + 1,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

fn clock_now(clock: &herald_server::clock::ManualClock) -> i64 {
    use herald_server::clock::Clock;
    clock.now().secs() as i64
}

#[tokio::test]
async fn a_duplicate_login_on_another_node_ends_the_older_session() {
    let Some(redis) = Redis::start() else { return };
    let n = nodes(&redis, true, None).await;
    let now = system_now();
    let mut old = login(n[0].local_addr(), "alice", now).await;
    let mut new = login(n[1].local_addr(), "alice", now).await;
    assert_eq!(
        event(&mut old).await,
        json!({"event":"onLogout","reason":1})
    );
    ok(
        n[2].local_addr(),
        "SendUnicast",
        json!({"AppId":APP,"From":"srv","To":"alice","Message":"where"}),
        now,
    )
    .await;
    assert_eq!(text_message(&mut new).await, "where");

    // The same in a room: the older membership is told DUPLICATE_LOGIN; nobody sees a leave.
    let mut watcher = ws(n[2].local_addr(), APP).await;
    join(&mut watcher, "r", "w", now).await;
    let mut m1 = ws(n[0].local_addr(), APP).await;
    join(&mut m1, "r", "m", now).await;
    assert_eq!(event(&mut m1).await["uid"], "w");
    assert_eq!(event(&mut watcher).await["uid"], "m");
    let mut m2 = ws(n[1].local_addr(), APP).await;
    join(&mut m2, "r", "m", now).await;
    assert_eq!(
        event(&mut m1).await,
        json!({"event":"onRoomStateChanged","roomId":"r","uid":"m","state":-1004})
    );
    assert_eq!(event(&mut m2).await["uid"], "w");
    ok(
        n[2].local_addr(),
        "SendRoomUnicast",
        json!({"AppId":APP,"From":"srv","RoomId":"r","To":"m","Message":"to m"}),
        now,
    )
    .await;
    assert_eq!(text_message(&mut m2).await, "to m");
    // The watcher saw no leave and no second join: the next thing it gets is this message.
    ok(
        n[0].local_addr(),
        "SendRoomUnicast",
        json!({"AppId":APP,"From":"srv","RoomId":"r","To":"w","Message":"next"}),
        now,
    )
    .await;
    assert_eq!(text_message(&mut watcher).await, "next");
}

#[tokio::test]
async fn the_from_check_sees_every_node() {
    let Some(redis) = Redis::start() else { return };
    let n = nodes(&redis, false, None).await;
    let now = system_now();
    let _srv = login(n[1].local_addr(), "srv", now).await;
    let r = api(
        n[0].local_addr(),
        "SendUnicast",
        json!({"AppId":APP,"From":"srv","To":"x","Message":"m"}),
        now,
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (400, "InvalidParameter.IllegalFrom".to_owned()),
        "{:?}",
        r.body
    );
    let mut m = ws(n[2].local_addr(), APP).await;
    join(&mut m, "r", "member", now).await;
    let r = api(
        n[0].local_addr(),
        "SendBroadcast",
        json!({"AppId":APP,"From":"member","RoomId":"r","Message":"m"}),
        now,
    )
    .await;
    assert_eq!(r.code(), "InvalidParameter.IllegalFrom", "{:?}", r.body);
}

/// Redis goes away: API calls fail fast with 503, clients stay connected and local traffic
/// flows; Redis comes back empty: the nodes re-register everything and cross-node traffic works.
#[tokio::test]
async fn redis_stopped_and_restarted() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let n = nodes(&redis, false, None).await;
    let (a1, a2) = (n[0].local_addr(), n[1].local_addr());
    let now = system_now();
    let mut alice = login(a1, "alice", now).await;
    let mut bob = ws(a2, APP).await;
    join(&mut bob, "r", "bob", now).await;

    redis.stop();
    let started = Instant::now();
    let r = api(
        a2,
        "SendUnicast",
        json!({"AppId":APP,"From":"srv","To":"alice","Message":"m"}),
        now,
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (503, "ServiceUnavailableTemp".to_owned())
    );
    assert_eq!(r.code_n(), Some(100019));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "503 took {:?}",
        started.elapsed()
    );
    assert_eq!(metric(a1, "herald_cluster_redis_up").await, 0.0);
    let r = raw_http(
        a1,
        b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((r.status, r.body), (503, json!({"status": "syncing"})));
    // Local clients are still connected and served: a login on n1 sends to a local user.
    let mut alice2 = login(a1, "alice2", now).await;
    let f = SendFrame {
        op: SendOp::UserOutsideRoom,
        msgid: 1,
        to: "alice".into(),
        room_id: String::new(),
        binary: false,
        payload: bytes::Bytes::from_static(b"local"),
    };
    alice2.send(Message::Binary(f.encode())).await.unwrap();
    assert_eq!(event(&mut alice2).await["error"], 0);
    // Recovery is on, but no position can be taken without Redis: it comes without one.
    let m = message(&mut alice).await;
    assert_eq!((m.payload.as_ref(), m.pos), (&b"local"[..], None));
    // A resume of a stream Redis keeps cannot be answered meanwhile: said plainly.
    let (_alice_again, answer) = alice_resumes(a1, json!({"epoch":7,"position":1}), now).await;
    assert_eq!(answer["errorCode"], 0, "{answer}");
    assert_eq!(resumed(&answer), (json!(false), json!(0)), "{answer}");

    redis.restart();
    for s in &n {
        wait_up(s.local_addr()).await;
    }
    // Everything was re-registered in the new, empty Redis, including what happened meanwhile.
    ok(
        a2,
        "SendUnicast",
        json!({"AppId":APP,"From":"srv","To":"alice2","Message":"back"}),
        now,
    )
    .await;
    assert_eq!(text_message(&mut alice2).await, "back");
    ok(
        a1,
        "SendRoomUnicast",
        json!({"AppId":APP,"From":"srv","RoomId":"r","To":"bob","Message":"back too"}),
        now,
    )
    .await;
    assert_eq!(text_message(&mut bob).await, "back too");
    assert!(metric(a1, "herald_cluster_resyncs_total").await >= 2.0);
}

/// Logins and joins taken while Redis is away, and those taken while the node re-registers after
/// it returns, are all reachable from every node as soon as the node says it is ready.
#[tokio::test]
async fn what_a_node_took_while_redis_was_away_is_reachable_once_ready() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let n = nodes(&redis, false, None).await;
    let (a1, a2) = (n[0].local_addr(), n[1].local_addr());
    let now = system_now();
    redis.stop();
    let mut members = Vec::new();
    for i in 0..300 {
        let mut c = ws(a1, APP).await;
        join(&mut c, "big", &format!("early{i}"), now).await;
        members.push(c);
    }
    // More keep joining while Redis comes back and the node re-registers the first 300, until
    // the node says it is ready (and a little after).
    let (ready_tx, ready) = tokio::sync::watch::channel(false);
    let late = tokio::spawn(async move {
        let mut out = Vec::new();
        while out.len() < 300 && !*ready.borrow() {
            let mut c = ws(a1, APP).await;
            join(&mut c, "big", &format!("late{}", out.len()), now).await;
            out.push(c);
        }
        out
    });
    redis.restart();
    for s in &n {
        wait_up(s.local_addr()).await;
    }
    let _ = ready_tx.send(true);
    let late = late.await.unwrap();
    let to: Vec<String> = (0..300)
        .map(|i| format!("early{i}"))
        .chain((0..late.len()).map(|i| format!("late{i}")))
        .collect();
    members.extend(late);
    ok(
        a2,
        "BatchSendRoomUnicast",
        json!({"AppId":APP,"From":"srv","RoomId":"big","To":to,"Message":"all of you"}),
        now,
    )
    .await;
    let mut missing = Vec::new();
    for (uid, c) in to.iter().zip(&mut members) {
        let got = tokio::time::timeout(Duration::from_secs(5), text_message(c)).await;
        if got.as_deref() != Ok("all of you") {
            missing.push(uid.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} missed it: {missing:?}",
        missing.len(),
        to.len()
    );
}

/// A messaging call of `APP` from `srv` to the node at `addr`, with a delivery report: the report.
async fn reported(
    addr: SocketAddr,
    action: &str,
    body: serde_json::Value,
    now: i64,
) -> serde_json::Value {
    let header = Some(("X-Herald-Delivery-Report", "true"));
    let r = messaging_call(action, body, now, header).send(addr).await;
    report(&r).clone()
}

/// A delivery report names every recipient's outcome wherever it is connected: the nodes that
/// hold recipients report back to the node that took the call.
#[tokio::test]
async fn delivery_reports_cross_nodes() {
    delivery_reports_cross_nodes_with("").await;
}

/// The same with recovery off, where the node that takes a call delivers to its own recipients
/// directly and reports them itself.
#[tokio::test]
async fn delivery_reports_cross_nodes_without_recovery() {
    delivery_reports_cross_nodes_with("[recovery]\nwindow_messages = 0\n").await;
}

async fn delivery_reports_cross_nodes_with(extra: &str) {
    let Some(redis) = Redis::start() else { return };
    let n = nodes_with(&redis, false, None, extra).await;
    let (a1, a2, a3) = (n[0].local_addr(), n[1].local_addr(), n[2].local_addr());
    let now = system_now();
    let mut alice = login(a1, "alice", now).await;
    let mut members = Vec::new();
    for (addr, uid) in [(a2, "bob"), (a3, "carol"), (a1, "dave")] {
        let mut c = ws(addr, APP).await;
        join(&mut c, "r", uid, now).await;
        members.push(c);
    }
    let reached = |rep: &serde_json::Value| -> Vec<String> {
        let mut v: Vec<String> = ["Written", "Queued"]
            .iter()
            .flat_map(|k| rep[k].as_array().unwrap().clone())
            .map(|u| u.as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };

    // On n3: carol is local, bob on n2, dave on n1, zed nowhere.
    let rep = reported(
        a3,
        "BatchSendRoomUnicast",
        json!({"RoomId":"r","To":["zed","dave","carol","bob"],"Message":"batch"}),
        now,
    )
    .await;
    assert_eq!(reached(&rep), ["bob", "carol", "dave"], "{rep}");
    assert_eq!(rep["NotInRoom"], json!(["zed"]));
    assert_eq!(
        (rep["Unknown"].clone(), rep["NodesNotReporting"].clone()),
        (json!([]), json!(0))
    );
    for m in &mut members {
        assert_eq!(text_message(m).await, "batch");
    }

    // On n2, to a login on n1 and to nobody.
    let rep = reported(a2, "SendUnicast", json!({"To":"alice","Message":"hi"}), now).await;
    assert_eq!(reached(&rep), ["alice"], "{rep}");
    assert_eq!(text_message(&mut alice).await, "hi");
    let rep = reported(
        a2,
        "SendUnicast",
        json!({"To":"nobody","Message":"hi"}),
        now,
    )
    .await;
    assert_eq!(rep["NotOnline"], json!(["nobody"]));

    // A broadcast on n2 names the members of every node.
    let rep = reported(
        a2,
        "SendBroadcast",
        json!({"RoomId":"r","Message":"all"}),
        now,
    )
    .await;
    assert_eq!(reached(&rep), ["bob", "carol", "dave"], "{rep}");
    for m in &mut members {
        assert_eq!(text_message(m).await, "all");
    }
}

/// Acks cross nodes: each node waits for its own recipients' acks before it reports, so a call
/// on one node lists as `Acked` the members of every node that acknowledged, and a member that
/// never acks stays `Written` or `Queued`.
#[tokio::test]
async fn acks_cross_nodes() {
    let Some(redis) = Redis::start() else { return };
    let n = nodes(&redis, false, None).await;
    let (a1, a2, a3) = (n[0].local_addr(), n[1].local_addr(), n[2].local_addr());
    let now = system_now();
    let mut ackers = vec![acker(login(a1, "alice", now).await)];
    for (addr, uid) in [(a2, "bob"), (a3, "carol"), (a1, "dave")] {
        let mut c = ws(addr, APP).await;
        join(&mut c, "r", uid, now).await;
        ackers.push(acker(c));
    }
    let mut erin = ws(a2, APP).await;
    join(&mut erin, "r", "erin", now).await;
    let waited = |addr, action, mut body: serde_json::Value| async move {
        body["AppId"] = json!(APP);
        body["From"] = json!("srv");
        body["Binary"] = json!(false);
        let mut c = Call::new(action, body, now);
        c.unsigned.push(("X-Herald-Ack-Timeout-Ms", "1500"));
        let r = c.send(addr).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body["Result"]["DeliveryReport"].clone()
    };
    let silent = |rep: &serde_json::Value| {
        ["Written", "Queued"]
            .iter()
            .any(|k| rep[k].as_array().unwrap().contains(&json!("erin")))
    };

    // On n3: carol is local, bob and erin on n2, dave on n1, zed nowhere.
    let rep = waited(
        a3,
        "BatchSendRoomUnicast",
        json!({"RoomId":"r","To":["zed","erin","dave","carol","bob"],"Message":"batch"}),
    )
    .await;
    assert_eq!(rep["Acked"], json!(["bob", "carol", "dave"]), "{rep}");
    assert!(silent(&rep), "{rep}");
    assert_eq!(rep["NotInRoom"], json!(["zed"]));
    assert_eq!(
        (rep["Unknown"].clone(), rep["NodesNotReporting"].clone()),
        (json!([]), json!(0))
    );
    assert_eq!(text_message(&mut erin).await, "batch");

    // On n2, to a login on n1.
    let rep = waited(a2, "SendUnicast", json!({"To":"alice","Message":"hi"})).await;
    assert_eq!(rep["Acked"], json!(["alice"]), "{rep}");

    // A broadcast on n1 names the members of every node.
    let rep = waited(a1, "SendBroadcast", json!({"RoomId":"r","Message":"all"})).await;
    assert_eq!(rep["Acked"], json!(["bob", "carol", "dave"]), "{rep}");
    assert!(silent(&rep), "{rep}");
    assert_eq!(text_message(&mut erin).await, "all");
    for a in ackers {
        a.abort();
    }
}

/// Waits until the node at `addr` holds no connection.
async fn until_no_connections(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(addr, "herald_connections").await > 0.0 {
        assert!(Instant::now() < deadline, "{addr} still holds a connection");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// alice logs in on a new connection to `addr`, resuming her login's stream from `resume`
/// (`{"epoch":E,"position":P}`): the connection and the answer.
async fn alice_resumes(
    addr: SocketAddr,
    resume: serde_json::Value,
    now: i64,
) -> (Ws, serde_json::Value) {
    let mut c = ws(addr, APP).await;
    let login =
        json!({"call":"login","token":token("", "alice", now),"uid":"alice","resume":resume});
    send_call(&mut c, login).await;
    let answer = event(&mut c).await;
    (c, answer)
}

/// An answer's `recovered` and `replayed`.
fn resumed(answer: &serde_json::Value) -> (serde_json::Value, serde_json::Value) {
    let s = &answer["stream"];
    (s["recovered"].clone(), s["replayed"].clone())
}

/// The payloads and positions of the next `n` messages.
async fn messages(ws: &mut Ws, n: usize) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let m = message(ws).await;
        let text = String::from_utf8(m.payload.to_vec()).unwrap();
        out.push((m.pos.expect("a stream position").position, text));
    }
    out
}

/// Recovery across nodes (docs/delivery.md): streams live in Redis, so a resume on any node
/// recovers what the stream got after the client's position; a connection that ends leaves its
/// streams held, and what is sent meanwhile — from any node, by the OpenAPI or by a client, to
/// the login or the membership — is reported `Held` and replayed, in order and once, on the node
/// the user comes back to.
#[tokio::test]
async fn recovery_crosses_nodes() {
    let Some(redis) = Redis::start() else { return };
    let n = nodes(&redis, false, None).await;
    let now = system_now();
    let (a, b, c) = (n[0].local_addr(), n[1].local_addr(), n[2].local_addr());
    let unicast =
        |text: &'static str| json!({"AppId":APP,"From":"srv","To":"alice","Message":text});
    let mut first = ws(a, APP).await;
    send_call(
        &mut first,
        json!({"call":"login","token":token("", "alice", now),"uid":"alice"}),
    )
    .await;
    let answer = event(&mut first).await;
    let epoch = answer["stream"]["epoch"].clone();
    assert_eq!(answer["stream"]["position"], 0, "{answer}");
    ok(b, "SendUnicast", unicast("one"), now).await;
    ok(c, "SendUnicast", unicast("two"), now).await;
    assert_eq!(
        messages(&mut first, 2).await,
        [(1, "one".into()), (2, "two".into())]
    );

    // Another node takes the login over while the first connection is still there, resuming
    // after 1: "two" comes back from Redis, then what is new.
    let (mut second, answer) = alice_resumes(b, json!({"epoch":epoch,"position":1}), now).await;
    assert_eq!(
        (
            &answer["stream"]["recovered"],
            &answer["stream"]["replayed"],
            &answer["stream"]["epoch"]
        ),
        (&json!(true), &json!(1), &epoch),
        "{answer}"
    );
    assert_eq!(event(&mut first).await["event"], "onLogout");
    ok(c, "SendUnicast", unicast("three"), now).await;
    assert_eq!(
        messages(&mut second, 2).await,
        [(2, "two".into()), (3, "three".into())]
    );

    // Alice is also in room r (on node b); bob, on node c, sends to her from the client side.
    join(&mut second, "r", "alice", now).await;
    let mut bob = login(c, "bob", now).await;
    join(&mut bob, "r", "bob", now).await;
    let frame = |op, msgid, to: &str, room: &str, text: &str| SendFrame {
        op,
        msgid,
        to: to.into(),
        room_id: room.into(),
        binary: false,
        payload: bytes::Bytes::copy_from_slice(text.as_bytes()),
    };
    bob.send(Message::Binary(
        frame(SendOp::Room, 1, "", "r", "room one").encode(),
    ))
    .await
    .unwrap();
    assert_eq!(event(&mut bob).await["error"], 200);
    let m = message(&mut second).await;
    let room_epoch = m.pos.unwrap().epoch;
    assert_eq!(
        (m.pos.unwrap().position, m.payload.as_ref()),
        (1, &b"room one"[..])
    );

    // The connection is lost. Meanwhile: unicasts from two nodes (reported Held), a client's
    // message to the login, a room unicast, a room broadcast and a client's room message.
    drop(second);
    until_no_connections(b).await;
    let rep = reported(
        a,
        "SendUnicast",
        json!({"To":"alice","Message":"four"}),
        now,
    )
    .await;
    assert_eq!(rep["Held"], json!(["alice"]), "{rep}");
    ok(c, "SendUnicast", unicast("five"), now).await;
    bob.send(Message::Binary(
        frame(SendOp::UserOutsideRoom, 2, "alice", "", "six").encode(),
    ))
    .await
    .unwrap();
    assert_eq!(
        event(&mut bob).await["error"],
        0,
        "a held user is reachable"
    );
    ok(
        a,
        "SendRoomUnicast",
        json!({"AppId":APP,"From":"srv","RoomId":"r","To":"alice","Message":"room two"}),
        now,
    )
    .await;
    ok(
        b,
        "SendBroadcast",
        json!({"AppId":APP,"From":"srv","RoomId":"r","Message":"room three"}),
        now,
    )
    .await;
    assert_eq!(text_message(&mut bob).await, "room three");
    bob.send(Message::Binary(
        frame(SendOp::Room, 3, "", "r", "room four").encode(),
    ))
    .await
    .unwrap();
    assert_eq!(event(&mut bob).await["error"], 200);

    // Back on a third node: the login and the membership resume, each gets what it missed, in
    // order, once, right after its answer; then live messages go on from there.
    let (mut back, answer) = alice_resumes(c, json!({"epoch":epoch,"position":3}), now).await;
    assert_eq!(resumed(&answer), (json!(true), json!(3)), "{answer}");
    assert_eq!(
        messages(&mut back, 3).await,
        [(4, "four".into()), (5, "five".into()), (6, "six".into())]
    );
    send_call(
        &mut back,
        json!({"call":"joinRoom","roomId":"r","uid":"alice","token":token("r", "alice", now),
               "resume":{"epoch":room_epoch,"position":1}}),
    )
    .await;
    let answer = event(&mut back).await;
    assert_eq!(
        (
            &answer["state"],
            &answer["stream"]["recovered"],
            &answer["stream"]["replayed"]
        ),
        (&json!(0), &json!(true), &json!(3)),
        "{answer}"
    );
    assert_eq!(
        messages(&mut back, 3).await,
        [
            (2, "room two".into()),
            (3, "room three".into()),
            (4, "room four".into())
        ]
    );
    ok(a, "SendUnicast", unicast("seven"), now).await;
    assert_eq!(messages(&mut back, 1).await, [(7, "seven".into())]);

    // What the stream cannot fill is said plainly: another epoch, or a position it never had.
    for resume in [
        json!({"epoch":1,"position":7}),
        json!({"epoch":epoch,"position":8}),
    ] {
        let (_other, answer) = alice_resumes(a, resume, now).await;
        assert_eq!(resumed(&answer), (json!(false), json!(0)), "{answer}");
    }
}

/// The window bounds what Redis keeps: messages beyond `window_messages` of a held stream are
/// not recoverable (`recovered: false`, nothing replayed), and a user who logged out has no
/// stream to come back to (its messages are `NotOnline`, and a resume starts a new epoch).
#[tokio::test]
async fn recovery_across_nodes_is_bounded_by_the_window() {
    let Some(redis) = Redis::start() else { return };
    let n = nodes_with(&redis, false, None, "[recovery]\nwindow_messages = 2\n").await;
    let now = system_now();
    let (a, b) = (n[0].local_addr(), n[1].local_addr());
    let unicast =
        |text: &'static str| json!({"AppId":APP,"From":"srv","To":"alice","Message":text});
    let mut first = ws(a, APP).await;
    send_call(
        &mut first,
        json!({"call":"login","token":token("", "alice", now),"uid":"alice"}),
    )
    .await;
    let epoch = event(&mut first).await["stream"]["epoch"].clone();
    drop(first);
    until_no_connections(a).await;
    for text in ["one", "two", "three"] {
        ok(b, "SendUnicast", unicast(text), now).await;
    }
    // Positions 1..3 were sent, 2..3 are kept: resuming after 0 cannot be filled...
    let (_back, answer) = alice_resumes(b, json!({"epoch":epoch,"position":0}), now).await;
    assert_eq!(
        (
            &answer["stream"]["recovered"],
            &answer["stream"]["replayed"],
            &answer["stream"]["position"]
        ),
        (&json!(false), &json!(0), &json!(3)),
        "{answer}"
    );
    // ... while resuming after 1 can, on yet another connection.
    let (mut again, answer) = alice_resumes(a, json!({"epoch":epoch,"position":1}), now).await;
    assert_eq!(answer["stream"]["recovered"], true, "{answer}");
    assert_eq!(
        messages(&mut again, 2).await,
        [(2, "two".into()), (3, "three".into())]
    );

    // While registered, the window is trimmed as messages come (here at every one past two):
    // positions go on one by one, and a resume after the last two kept still recovers.
    let texts: Vec<String> = (4..=20).map(|i| format!("m{i}")).collect();
    for t in &texts {
        let body = json!({"AppId":APP,"From":"srv","To":"alice","Message":t});
        ok(
            if t.len() % 2 == 0 { a } else { b },
            "SendUnicast",
            body,
            now,
        )
        .await;
    }
    let got = messages(&mut again, texts.len()).await;
    let want: Vec<(u64, String)> = (4..=20u64).zip(texts.iter().cloned()).collect();
    assert_eq!(got, want);
    drop(again);
    until_no_connections(a).await;
    let (mut again, answer) = alice_resumes(b, json!({"epoch":epoch,"position":18}), now).await;
    assert_eq!(resumed(&answer), (json!(true), json!(2)), "{answer}");
    assert_eq!(
        messages(&mut again, 2).await,
        [(19, "m19".into()), (20, "m20".into())]
    );

    // A logout forgets the stream: nothing is held, and the next login starts a new epoch.
    send_call(&mut again, json!({"call":"logout"})).await;
    assert_eq!(event(&mut again).await["event"], "onLogout");
    let rep = reported(
        b,
        "SendUnicast",
        json!({"To":"alice","Message":"gone"}),
        now,
    )
    .await;
    assert_eq!(rep["NotOnline"], json!(["alice"]), "{rep}");
    let (_fresh, answer) = alice_resumes(b, json!({"epoch":epoch,"position":3}), now).await;
    assert_eq!(answer["stream"]["recovered"], false, "{answer}");
    assert_ne!(answer["stream"]["epoch"], epoch, "{answer}");
    assert_eq!(answer["stream"]["position"], 0, "{answer}");
}

/// A broadcast with recovery names every member in Redis: a room larger than what Lua can pass
/// to one command (about 8,000 arguments) still takes a position in every member's stream.
#[tokio::test]
async fn a_broadcast_to_a_very_large_room_takes_every_members_position() {
    let Some(redis) = Redis::start() else { return };
    let node = start(node_config_with(&redis, "n1", false, "")).await;
    wait_up(node.local_addr()).await;
    let now = system_now();
    let mut alice = ws(node.local_addr(), APP).await;
    join(&mut alice, "big", "alice", now).await;
    // 9,000 more members, registered on n1 as far as Redis knows (held by no connection here).
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let room_key = format!("herald:{{{APP}}}:room:big");
    let mut fake = ::redis::cmd("HSET");
    fake.arg(&room_key);
    for i in 0..9000 {
        fake.arg(format!("u{i}")).arg("n1|1");
    }
    let _: i64 = fake.query_async(&mut conn).await.unwrap();

    ok(
        node.local_addr(),
        "SendBroadcast",
        json!({"AppId":APP,"From":"srv","RoomId":"big","Message":"hello"}),
        now,
    )
    .await;
    let m = message(&mut alice).await;
    assert_eq!(
        (m.pos.map(|p| p.position), m.payload.as_ref()),
        (Some(1), &b"hello"[..])
    );
    for uid in ["u0", "u8999"] {
        // Its window: the one message (its position is the list's length).
        let window = format!("herald:{{{APP}}}:w:M:big:{uid}");
        let kept: u64 = ::redis::cmd("LLEN")
            .arg(&window)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(kept, 1, "{uid}");
    }
}

/// A resume replays as much as the window holds, even more than Lua can pass to one command.
#[tokio::test]
async fn a_resume_replays_a_window_larger_than_one_redis_command() {
    let Some(redis) = Redis::start() else { return };
    let extra = "[recovery]\nwindow_messages = 10000\n";
    let node = start(node_config_with(&redis, "n1", false, extra)).await;
    wait_up(node.local_addr()).await;
    let now = system_now();
    // alice's login stream as Redis keeps it: 9,000 messages in epoch 5, held for a minute.
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let stream = format!("herald:{{{APP}}}:s:L::alice");
    let window = format!("herald:{{{APP}}}:w:L::alice");
    let mut pipe = ::redis::pipe();
    pipe.cmd("HSET")
        .arg(&stream)
        .arg("e")
        .arg(5)
        .arg("b")
        .arg(0);
    pipe.cmd("PEXPIRE").arg(&stream).arg(60_000);
    let mut ids = ::redis::cmd("RPUSH");
    ids.arg(&window);
    let accepted = now as u64 * 1_000_000;
    for i in 1..=9000 {
        ids.arg(i);
        let body = herald_proto::client::Delivery::encode(
            herald_proto::client::MessageKind::OutsideRoom,
            "srv",
            None,
            false,
            format!("m{i}").as_bytes(),
        );
        let mut stored = format!("{}\n{accepted}\n", body.flags()).into_bytes();
        stored.extend_from_slice(body.body());
        pipe.cmd("SET")
            .arg(format!("herald:{{{APP}}}:m:{i}"))
            .arg(stored)
            .arg("PX")
            .arg(60_000);
    }
    pipe.add_command(ids);
    pipe.cmd("PEXPIRE").arg(&window).arg(60_000);
    let _: () = pipe.query_async(&mut conn).await.unwrap();

    let mut alice = ws(node.local_addr(), APP).await;
    send_call(
        &mut alice,
        json!({"call":"login","token":token("", "alice", now),"uid":"alice",
               "resume":{"epoch":5,"position":0}}),
    )
    .await;
    let answer = event(&mut alice).await;
    assert_eq!(resumed(&answer), (json!(true), json!(9000)), "{answer}");
    for i in 1..=9000u64 {
        let m = message(&mut alice).await;
        assert_eq!(m.pos.map(|p| (p.epoch, p.position)), Some((5, i)));
        assert_eq!(m.payload.as_ref(), format!("m{i}").as_bytes());
    }
}

/// Issue 8's test across nodes: 1,500 unicasts sent to the three nodes in turn while a TCP proxy
/// cuts the client's connection three times; each time the Rust SDK reconnects to the next node
/// and resumes. Every message arrives exactly once, in the order sent (`common/sdk.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_mid_stream_resume_on_another_node_with_nothing_lost_or_repeated() {
    let Some(redis) = Redis::start() else { return };
    let mut n = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let mut c = node_config_with(&redis, name, false, "");
        // The test sends as fast as it can; the per-app limit is not what is tested here.
        c.apps[0].qps_limit = 100_000;
        let s = start(c).await;
        wait_up(s.local_addr()).await;
        n.push(s);
    }
    let addrs: Vec<SocketAddr> = n.iter().map(Server::local_addr).collect();
    let mut proxies = Vec::new();
    for a in &addrs {
        proxies.push(Proxy::start(*a).await);
    }
    cut_three_times_while_sending(&proxies, addrs, system_now()).await;
}
