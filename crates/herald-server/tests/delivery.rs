//! Issue 8's delivery report on one node, over real HTTP and WebSockets: asked for with
//! `X-Herald-Delivery-Report: true`, it names each recipient's outcome inside `Result`; without
//! the header the answer is the vendor's. (Across nodes: `tests/cluster.rs`.)

mod common;

use common::*;
use serde_json::{json, Value};

fn call<'a>(action: &'a str, body: Value, now: i64, report: Option<&'a str>) -> Call<'a> {
    let header = report.map(|v| ("X-Herald-Delivery-Report", v));
    messaging_call(action, body, now, header)
}

/// Whether `uid` is reported as reached: written to its connection, or queued on it.
fn reached(report: &Value, uid: &str) -> bool {
    ["Written", "Queued"]
        .iter()
        .any(|k| report[k].as_array().unwrap().contains(&json!(uid)))
}

#[tokio::test]
async fn without_the_header_the_answer_is_the_vendors() {
    let server = start(quiet(config(""))).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut alice = login(addr, "alice", now).await;
    for header in [None, Some("false"), Some("0")] {
        let r = call(
            "SendUnicast",
            json!({"To": "alice", "Message": "m"}),
            now,
            header,
        )
        .send(addr)
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body["Result"],
            json!({"Message": "Success"}),
            "{header:?}"
        );
        assert_eq!(message(&mut alice).await.payload.as_ref(), b"m");
    }
}

#[tokio::test]
async fn each_recipient_of_a_batch_is_reported() {
    let server = start(quiet(config(""))).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut a = ws(addr, APP).await;
    join(&mut a, "r", "a", now).await;
    let mut b = ws(addr, APP).await;
    join(&mut b, "r", "b", now).await;
    let _elsewhere = login(addr, "c", now).await; // logged in, not in the room
    let r = call(
        "BatchSendRoomUnicast",
        json!({"RoomId": "r", "To": ["b", "a", "c", "nobody"], "Message": "batch"}),
        now,
        Some("true"),
    )
    .send(addr)
    .await;
    let rep = report(&r);
    assert!(reached(rep, "a") && reached(rep, "b"), "{rep}");
    assert_eq!(rep["NotInRoom"], json!(["c", "nobody"]));
    for k in ["NotOnline", "SlowConsumer", "Unknown"] {
        assert_eq!(rep[k], json!([]), "{k}");
    }
    assert_eq!(rep["NodesNotReporting"], 0);
    for c in [&mut a, &mut b] {
        assert_eq!(message(c).await.payload.as_ref(), b"batch");
    }
}

#[tokio::test]
async fn unicast_and_broadcast_are_reported() {
    let server = start(quiet(config(""))).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut alice = login(addr, "alice", now).await;
    let r = call(
        "SendUnicast",
        json!({"To": "alice", "Message": "hi"}),
        now,
        Some("TRUE"),
    )
    .send(addr)
    .await;
    assert!(reached(report(&r), "alice"));
    let r = call(
        "SendUnicast",
        json!({"To": "bob", "Message": "hi"}),
        now,
        Some("1"),
    )
    .send(addr)
    .await;
    assert_eq!(report(&r)["NotOnline"], json!(["bob"]));
    assert_eq!(message(&mut alice).await.payload.as_ref(), b"hi");

    let mut members = Vec::new();
    for uid in ["m1", "m2", "m3"] {
        let mut c = ws(addr, APP).await;
        join(&mut c, "room", uid, now).await;
        members.push(c);
    }
    let r = call(
        "SendBroadcast",
        json!({"RoomId": "room", "Message": "all"}),
        now,
        Some("true"),
    )
    .send(addr)
    .await;
    let rep = report(&r);
    for uid in ["m1", "m2", "m3"] {
        assert!(reached(rep, uid), "{uid}: {rep}");
    }
    let count: usize = ["Written", "Queued"]
        .iter()
        .map(|k| rep[k].as_array().unwrap().len())
        .sum();
    assert_eq!(count, 3);
    for m in &mut members {
        assert_eq!(message(m).await.payload.as_ref(), b"all");
    }
}

/// A member that stops reading is reported `SlowConsumer` by the call whose message overflowed
/// its queue; the reader beside it is reported reached by every call.
#[tokio::test]
async fn a_slow_consumer_is_reported_as_such() {
    let server = start(quiet(config(
        "[gateway]\noutbound_queue_bytes = 65536\nwrite_timeout_ms = 120000",
    )))
    .await;
    let addr = server.local_addr();
    let now = system_now();
    let mut fast = ws(addr, APP).await;
    join(&mut fast, "r", "fast", now).await;
    let mut slow = ws(addr, APP).await;
    join(&mut slow, "r", "slow", now).await;
    // Room messages may be 20 KB at most; the kernel buffers a few MB before the queue fills.
    let payload = "x".repeat(16 * 1024);
    let mut sent = 0;
    loop {
        assert!(sent < 5000, "the slow consumer was never reported");
        let r = call(
            "BatchSendRoomUnicast",
            json!({"RoomId": "r", "To": ["fast", "slow"], "Message": payload}),
            now,
            Some("true"),
        )
        .send(addr)
        .await;
        sent += 1;
        let rep = report(&r).clone();
        assert!(reached(&rep, "fast"), "{rep}");
        assert_eq!(message(&mut fast).await.payload.len(), payload.len());
        if rep["SlowConsumer"] == json!(["slow"]) {
            break;
        }
        assert!(reached(&rep, "slow"), "{rep}");
    }
    drop(slow);
}

#[tokio::test]
async fn a_bad_header_is_refused_and_sends_nothing() {
    let server = start(quiet(config(""))).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut alice = login(addr, "alice", now).await;
    for bad in ["yes", "", "true, true"] {
        let r = call(
            "SendUnicast",
            json!({"To": "alice", "Message": "refused"}),
            now,
            Some(bad),
        )
        .send(addr)
        .await;
        assert_eq!(
            (r.status, r.code()),
            (400, "InvalidParameter".to_owned()),
            "{bad:?}"
        );
    }
    let mut twice = call(
        "SendUnicast",
        json!({"To": "alice", "Message": "refused"}),
        now,
        Some("true"),
    );
    twice.unsigned.push(("X-Herald-Delivery-Report", "true"));
    let r = twice.send(addr).await;
    assert_eq!((r.status, r.code()), (400, "InvalidParameter".to_owned()));
    // Nothing was delivered: the next message is the first alice gets.
    call(
        "SendUnicast",
        json!({"To": "alice", "Message": "ok"}),
        now,
        None,
    )
    .send(addr)
    .await;
    let m = message(&mut alice).await;
    assert_eq!((m.msgid, m.payload.as_ref()), (1, &b"ok"[..]));
}
