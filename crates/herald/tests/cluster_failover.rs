//! Issue 4, a node killed: two `herald serve` processes on one real `redis-server`; one is
//! killed with SIGKILL. Within the node TTL its users stop counting (the other node's members
//! see them drop, the room no longer lists them), the other node keeps working, and the
//! killed node's clients reconnect to it.

#[path = "../../herald-server/tests/common/redis.rs"]
mod redis;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_client::{connect, Event, EventStream, OpenApiClient};
use herald_proto::token::AccessToken;
use redis::Redis;
use serde_json::json;

const HERALD: &str = env!("CARGO_BIN_EXE_herald");
const APP_ID: &str = "65a1b2c3d4e5f60718293a4b";
const APP_KEY: &str = "0123456789abcdef0123456789abcdef";
const AK: &str = "AKLTclustertest";
const SK: &str = "cluster-secret";

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_node(redis: &Redis, name: &str, port: u16) -> Node {
    let path: PathBuf = std::env::temp_dir().join(format!(
        "herald-failover-{}-{name}-{port}.toml",
        std::process::id()
    ));
    std::fs::write(
        &path,
        format!(
            r#"listen = "127.0.0.1:{port}"
[cluster]
redis = "{}"
node_id = "{name}"
node_ttl_ms = 2000
[[apps]]
app_id = "{APP_ID}"
app_key = "{APP_KEY}"
access_keys = [{{ ak = "{AK}", sk = "{SK}" }}]
"#,
            redis.url()
        ),
    )
    .unwrap();
    let child = Command::new(HERALD)
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let node = Node(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Ready, not only connected: a node still syncing with Redis takes joins locally, and
        // the other node would not see them (docs/cluster.md, "/readyz").
        if get(port, "/readyz").starts_with("HTTP/1.1 200") {
            return node;
        }
        assert!(
            Instant::now() < deadline,
            "node {name} did not join the cluster"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET path` over a plain socket: the whole response ("" if the node does not answer yet).
fn get(port: u16, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let _ = s.write_all(request.as_bytes());
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

fn token(room: &str, uid: &str) -> String {
    let mut t = AccessToken::new(APP_ID, room, uid, 1, now());
    t.expire_time(now() + 3600);
    t.serialize(APP_KEY)
}

/// Skips events until one matches (answers to the client's own calls come first), within 15 s.
async fn wait_for(events: &mut EventStream, want: impl Fn(&Event) -> bool) -> Event {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let e = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("the event in time")
            .expect("the connection is open");
        if want(&e) {
            return e;
        }
    }
}

/// Two nodes on `redis`; bob in room `r` on n1, carol in `r` on n2, and bob has seen her join.
struct Pair {
    nodes: (Node, Node),
    s1: String,
    s2: String,
    bob: (herald_client::Engine, EventStream),
    carol: (herald_client::Engine, EventStream),
}

async fn pair(redis: &Redis) -> Pair {
    let (p1, p2) = (free_port(), free_port());
    let nodes = (start_node(redis, "n1", p1), start_node(redis, "n2", p2));
    let s1 = format!("http://127.0.0.1:{p1}");
    let s2 = format!("http://127.0.0.1:{p2}");
    let (bob, mut bob_events) = connect(&s1, APP_ID).await.unwrap();
    bob.join_room("r", "bob", &token("r", "bob")).await.unwrap();
    // carol may join on n2 while bob's join is still being registered on n1: bob hears of her
    // either from his registration's list of members or from the notice n1 keeps for him.
    let (carol, carol_events) = connect(&s2, APP_ID).await.unwrap();
    carol
        .join_room("r", "carol", &token("r", "carol"))
        .await
        .unwrap();
    wait_for(
        &mut bob_events,
        |e| matches!(e, Event::UserJoined { uid, .. } if uid == "carol"),
    )
    .await;
    Pair {
        nodes,
        s1,
        s2,
        bob: (bob, bob_events),
        carol: (carol, carol_events),
    }
}

#[tokio::test]
async fn a_killed_node_stops_holding_its_users_and_its_clients_move() {
    let Some(redis) = Redis::start() else { return };
    let Pair {
        nodes: (_n1, mut n2),
        s1,
        bob: (_bob, mut bob_events),
        carol: (carol, mut carol_events),
        ..
    } = pair(&redis).await;

    // SIGKILL: no goodbye, no cleanup. Within the TTL (2 s, plus a heartbeat) n1 sweeps it.
    n2.0.kill().unwrap();
    n2.0.wait().unwrap();
    let killed = Instant::now();
    let left = wait_for(&mut bob_events, |e| matches!(e, Event::UserLeave { .. })).await;
    assert!(
        matches!(&left, Event::UserLeave { uid, reason: 1, .. } if uid == "carol"),
        "{left:?}"
    );
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "{:?}",
        killed.elapsed()
    );
    let api = OpenApiClient::new(&s1, AK, SK).unwrap();
    // The room still works from the surviving node: a broadcast reaches bob.
    let r = api
        .call("SendBroadcast", "2023-07-20", &json!({"AppId":APP_ID,"From":"srv","RoomId":"r","Binary":false,"Message":"still here"}))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    wait_for(
        &mut bob_events,
        |e| matches!(e, Event::RoomMessageReceived { message, .. } if message == "still here"),
    )
    .await;

    // carol's app reconnects to the surviving node and is back in the room.
    drop(carol);
    let _ = carol_events.recv().await;
    let (carol, mut carol_events) = connect(&s1, APP_ID).await.unwrap();
    carol
        .join_room("r", "carol", &token("r", "carol"))
        .await
        .unwrap();
    wait_for(
        &mut bob_events,
        |e| matches!(e, Event::UserJoined { uid, .. } if uid == "carol"),
    )
    .await;
    let r = api
        .call("SendRoomUnicast", "2023-07-20", &json!({"AppId":APP_ID,"From":"srv","RoomId":"r","To":"carol","Binary":false,"Message":"welcome back"}))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    wait_for(
        &mut carol_events,
        |e| matches!(e, Event::UserMessageReceived { message, .. } if message == "welcome back"),
    )
    .await;
}

/// A node that holds recipients and does not answer (stopped with SIGSTOP, still alive for the
/// cluster until its heartbeat expires) makes a delivery report incomplete, and says so: its
/// recipients are `Unknown` and `NodesNotReporting` counts it, after `command_timeout_ms`; so it
/// does for a call that waits for acks, whose live recipients are `Acked`.
#[tokio::test]
async fn a_node_that_does_not_report_leaves_its_recipients_unknown() {
    let Some(redis) = Redis::start() else { return };
    let Pair {
        nodes: (_n1, n2),
        s1,
        bob: (_bob, mut bob_events),
        carol: _carol,
        ..
    } = pair(&redis).await;
    // Bob's SDK acknowledges what is taken from his stream.
    let bob_reader = tokio::spawn(async move { while bob_events.recv().await.is_some() {} });
    let api = OpenApiClient::new(&s1, AK, SK)
        .unwrap()
        .with_delivery_report(true);
    let batch = json!({"AppId":APP_ID,"From":"srv","RoomId":"r","To":["bob","carol"],"Binary":false,"Message":"m"});
    let report = api
        .call("BatchSendRoomUnicast", "2023-07-20", &batch)
        .await
        .unwrap()
        .delivery_report()
        .expect("a report");
    assert_eq!(report.reached().collect::<Vec<_>>(), ["bob", "carol"]);
    assert_eq!(report.nodes_not_reporting, 0);

    let pid = n2.0.id().to_string();
    let signal = |sig: &str| {
        let ok = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(ok.success(), "kill {sig}");
    };
    signal("-STOP");
    let started = Instant::now();
    let r = api
        .call("BatchSendRoomUnicast", "2023-07-20", &batch)
        .await
        .unwrap();
    let waited = started.elapsed();
    let acked = api
        .clone()
        .with_ack_timeout_ms(Some(300))
        .call("BatchSendRoomUnicast", "2023-07-20", &batch)
        .await
        .unwrap()
        .delivery_report()
        .expect("a report");
    signal("-CONT");
    bob_reader.abort();
    assert_eq!(acked.acked, Some(vec!["bob".to_owned()]), "{acked:?}");
    assert_eq!(
        (acked.unknown.as_slice(), acked.nodes_not_reporting),
        (&["carol".to_owned()][..], 1)
    );
    let report = r.delivery_report().expect("a report");
    assert_eq!(report.reached().collect::<Vec<_>>(), ["bob"], "{report:?}");
    assert_eq!(
        (report.unknown.as_slice(), report.nodes_not_reporting),
        (&["carol".to_owned()][..], 1)
    );
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
}

/// Issue 8, the node killed: carol's streams (her login's and her membership's) are in Redis,
/// so when the node she was on is killed, what was sent to her before, during and after the
/// sweep — unicasts, room unicasts, broadcasts — is replayed when her app reconnects to the
/// surviving node and resumes: every message exactly once, in order, and `onRecovery` says so.
#[tokio::test]
async fn a_killed_nodes_users_resume_on_another_node_and_lose_nothing() {
    use herald_client::{connect_with, ConnectOptions, Recovery};
    let Some(redis) = Redis::start() else { return };
    let Pair {
        nodes: (_n1, mut n2),
        s1,
        s2,
        bob: (_bob, mut bob_events),
        carol: (carol, carol_events),
    } = pair(&redis).await;
    drop((carol, carol_events));
    let _ = wait_for(&mut bob_events, |e| matches!(e, Event::UserLeave { .. })).await;

    // carol's app, with recovery, on n2: logged in and in room r.
    let recovery = Recovery::default();
    let options = ConnectOptions::default().recovery(&recovery);
    let (carol, mut events) = connect_with(&s2, APP_ID, &options).await.unwrap();
    carol.login(&token("", "carol"), "carol").await.unwrap();
    carol
        .join_room("r", "carol", &token("r", "carol"))
        .await
        .unwrap();
    let api = OpenApiClient::new(&s1, AK, SK).unwrap();
    let send = |n: u32| {
        let api = api.clone();
        async move {
            let (action, body) = match n % 3 {
                0 => (
                    "SendUnicast",
                    json!({"AppId":APP_ID,"From":"srv","To":"carol","Binary":false,"Message":format!("m{n}")}),
                ),
                1 => (
                    "SendRoomUnicast",
                    json!({"AppId":APP_ID,"From":"srv","RoomId":"r","To":"carol","Binary":false,"Message":format!("m{n}")}),
                ),
                _ => (
                    "SendBroadcast",
                    json!({"AppId":APP_ID,"From":"srv","RoomId":"r","Binary":false,"Message":format!("m{n}")}),
                ),
            };
            let r = api.call(action, "2023-07-20", &body).await.unwrap();
            assert_eq!(r.status, 200, "{action}");
        }
    };
    let mut got: Vec<String> = Vec::new();
    let text = |e: &Event| match e {
        Event::UserMessageReceivedOutsideRoom { message, .. }
        | Event::RoomMessageReceived { message, .. }
        | Event::UserMessageReceived { message, .. } => Some(message.clone()),
        _ => None,
    };
    for n in 0..6 {
        send(n).await;
    }
    while got.len() < 6 {
        let e = wait_for(&mut events, |e| text(e).is_some()).await;
        got.extend(text(&e));
    }

    // SIGKILL n2 while messages go on; some are sent before n1 sweeps it, some after.
    n2.0.kill().unwrap();
    n2.0.wait().unwrap();
    for n in 6..12 {
        send(n).await;
    }
    let left = wait_for(&mut bob_events, |e| matches!(e, Event::UserLeave { .. })).await;
    assert!(
        matches!(&left, Event::UserLeave { uid, .. } if uid == "carol"),
        "{left:?}"
    );
    for n in 12..18 {
        send(n).await;
    }

    // The app reconnects to n1 with the same Recovery: the login and the join resume.
    while events.recv().await.is_some() {}
    drop(carol);
    let (carol, mut events) = connect_with(&s1, APP_ID, &options).await.unwrap();
    carol.login(&token("", "carol"), "carol").await.unwrap();
    carol
        .join_room("r", "carol", &token("r", "carol"))
        .await
        .unwrap();
    let mut recovered = Vec::new();
    while recovered.len() < 2 || got.len() < 18 {
        let e = wait_for(&mut events, |e| {
            text(e).is_some() || matches!(e, Event::Recovery { .. })
        })
        .await;
        match e {
            Event::Recovery {
                room_id,
                recovered: r,
                ..
            } => recovered.push((room_id, r)),
            e => got.extend(text(&e)),
        }
    }
    recovered.sort();
    assert_eq!(
        recovered,
        [(String::new(), true), ("r".to_owned(), true)],
        "both streams recovered"
    );
    // Each stream in order; both together: every message exactly once.
    let number = |m: &String| m[1..].parse::<u32>().unwrap();
    let mut all: Vec<u32> = got.iter().map(number).collect();
    let (logins, rooms): (Vec<u32>, Vec<u32>) = all.iter().partition(|n| *n % 3 == 0);
    assert!(logins.is_sorted() && rooms.is_sorted(), "{got:?}");
    all.sort();
    assert_eq!(all, (0..18).collect::<Vec<_>>(), "{got:?}");
    send(18).await;
    let e = wait_for(&mut events, |e| text(e).is_some()).await;
    assert_eq!(text(&e).as_deref(), Some("m18"));
}
