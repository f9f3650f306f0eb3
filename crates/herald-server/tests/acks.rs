//! Issue 8's acknowledged delivery on one node, over real HTTP and WebSockets: a call with
//! `X-Herald-Ack-Timeout-Ms: N` waits (at most N ms) for its recipients' `ack` calls and reports
//! them `Acked`. (Across nodes: `tests/cluster.rs`; through the SDK and under load:
//! `crates/herald-client/tests/e2e.rs`.)

mod common;

use common::*;
use serde_json::{json, Value};

fn call<'a>(action: &'a str, body: Value, now: i64, ack_ms: &'a str) -> Call<'a> {
    messaging_call(action, body, now, Some(("X-Herald-Ack-Timeout-Ms", ack_ms)))
}

/// The list `uid` is in; panics unless it is in exactly one.
fn list_of(report: &Value, uid: &str) -> String {
    let lists: Vec<&str> = [
        "Acked",
        "Written",
        "Queued",
        "NotOnline",
        "NotInRoom",
        "SlowConsumer",
        "Unknown",
    ]
    .into_iter()
    .filter(|k| report[k].as_array().unwrap().contains(&json!(uid)))
    .collect();
    assert_eq!(lists.len(), 1, "{uid} in {lists:?}: {report}");
    lists[0].to_owned()
}

#[tokio::test]
async fn a_client_that_acks_is_reported_acked() {
    let server = start(quiet(config(""))).await;
    let addr = server.local_addr();
    let now = system_now();
    let alice = acker(login(addr, "alice", now).await);
    for i in 0..3 {
        let r = call(
            "SendUnicast",
            json!({"To": "alice", "Message": format!("m{i}")}),
            now,
            "5000",
        )
        .send(addr)
        .await;
        let rep = report(&r);
        assert_eq!(rep["Acked"], json!(["alice"]), "{rep}");
        assert_eq!(rep["Written"], json!([]));
        assert_eq!(rep["Queued"], json!([]));
    }
    alice.abort();
}

/// In one batch: a member that acks is `Acked`, a member that never acks stays `Written` or
/// `Queued` when the wait ends, and the others are where the report always put them.
#[tokio::test]
async fn a_client_that_never_acks_stays_written_or_queued() {
    let server = start(quiet(config(""))).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut a = ws(addr, APP).await;
    join(&mut a, "r", "a", now).await;
    let a = acker(a);
    let mut silent = ws(addr, APP).await;
    join(&mut silent, "r", "silent", now).await;
    let _elsewhere = login(addr, "c", now).await;
    let r = call(
        "BatchSendRoomUnicast",
        json!({"RoomId": "r", "To": ["silent", "a", "c", "nobody"], "Message": "batch"}),
        now,
        "1500",
    )
    .send(addr)
    .await;
    let rep = report(&r);
    assert_eq!(list_of(rep, "a"), "Acked");
    assert!(
        ["Written", "Queued"].contains(&list_of(rep, "silent").as_str()),
        "{rep}"
    );
    assert_eq!(rep["NotInRoom"], json!(["c", "nobody"]));
    assert_eq!(rep["NodesNotReporting"], 0);
    // It was delivered all the same.
    assert_eq!(message(&mut silent).await.payload.as_ref(), b"batch");

    let r = call(
        "SendBroadcast",
        json!({"RoomId": "r", "Message": "all"}),
        now,
        "300",
    )
    .send(addr)
    .await;
    let rep = report(&r);
    assert_eq!(list_of(rep, "a"), "Acked");
    assert_ne!(list_of(rep, "silent"), "Acked");
    a.abort();
}

/// An ack names a msgid the connection was given, at most: acking the future acks nothing to
/// come, and acks never move back.
#[tokio::test]
async fn an_ack_of_the_future_is_clamped() {
    let server = start(quiet(config(""))).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut alice = login(addr, "alice", now).await;
    send_call(&mut alice, json!({"call": "ack", "msgid": 1_000_000})).await;
    let send = |text: &'static str, ms: &'static str| async move {
        call(
            "SendUnicast",
            json!({"To": "alice", "Message": text}),
            now,
            ms,
        )
        .send(addr)
        .await
    };
    let r = send("one", "300").await;
    assert_ne!(
        list_of(report(&r), "alice"),
        "Acked",
        "acked before it was sent"
    );
    let m = message(&mut alice).await;
    assert_eq!((m.msgid, m.payload.as_ref()), (1, &b"one"[..]));
    // Acks message 1 (clamped), not the next one.
    send_call(&mut alice, json!({"call": "ack", "msgid": u64::MAX})).await;
    let r = send("two", "300").await;
    assert_ne!(list_of(report(&r), "alice"), "Acked");
    assert_eq!(message(&mut alice).await.msgid, 2);
    // A real ack of the next message still counts; a lower one after it changes nothing.
    let pending = tokio::spawn(send("three", "5000"));
    let m = message(&mut alice).await;
    assert_eq!(m.msgid, 3);
    send_call(&mut alice, json!({"call": "ack", "msgid": 3})).await;
    send_call(&mut alice, json!({"call": "ack", "msgid": 0})).await;
    let r = pending.await.unwrap();
    assert_eq!(list_of(report(&r), "alice"), "Acked");
}

#[tokio::test]
async fn a_malformed_ack_is_answered_with_on_error() {
    let server = start(quiet(config(""))).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut alice = login(addr, "alice", now).await;
    for bad in [
        json!({"call": "ack"}),
        json!({"call": "ack", "msgid": -1}),
        json!({"call": "ack", "msgid": 1.5}),
        json!({"call": "ack", "msgid": "1"}),
    ] {
        send_call(&mut alice, bad.clone()).await;
        let e = event(&mut alice).await;
        assert_eq!(e["event"], "onError", "{bad}");
        assert_eq!(e["errorCode"], 4003, "{bad}");
    }
    // Still open and served.
    send_call(&mut alice, json!({"call": "ack", "msgid": 0})).await;
    call(
        "SendUnicast",
        json!({"To": "alice", "Message": "ok"}),
        now,
        "1",
    )
    .send(addr)
    .await;
    assert_eq!(message(&mut alice).await.payload.as_ref(), b"ok");
}

#[tokio::test]
async fn a_bad_ack_timeout_is_refused_and_sends_nothing() {
    let server = start(quiet(config(""))).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut alice = login(addr, "alice", now).await;
    for bad in [
        "0",
        "5001",
        "-1",
        "1.5",
        "abc",
        "",
        "100, 100",
        "99999999999",
    ] {
        let r = call(
            "SendUnicast",
            json!({"To": "alice", "Message": "refused"}),
            now,
            bad,
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
        "100",
    );
    twice.unsigned.push(("X-Herald-Ack-Timeout-Ms", "100"));
    let r = twice.send(addr).await;
    assert_eq!((r.status, r.code()), (400, "InvalidParameter".to_owned()));
    // Nothing was delivered: the next message is the first alice gets.
    let r = call(
        "SendUnicast",
        json!({"To": "alice", "Message": "ok"}),
        now,
        "1",
    )
    .send(addr)
    .await;
    assert_eq!(report(&r)["NotOnline"], json!([]));
    let m = message(&mut alice).await;
    assert_eq!((m.msgid, m.payload.as_ref()), (1, &b"ok"[..]));
}

/// Only a call that waits for acks has an `Acked` list; a plain report is as it was.
#[tokio::test]
async fn a_report_without_the_wait_has_no_acked_list() {
    let server = start(quiet(config(""))).await;
    let addr = server.local_addr();
    let now = system_now();
    let alice = acker(login(addr, "alice", now).await);
    let mut c = Call::new(
        "SendUnicast",
        json!({"AppId": APP, "From": "srv", "Binary": false, "To": "alice", "Message": "m"}),
        now,
    );
    c.unsigned.push(("X-Herald-Delivery-Report", "true"));
    let r = c.send(addr).await;
    let rep = report(&r).as_object().unwrap();
    assert!(!rep.contains_key("Acked"), "{rep:?}");
    assert_eq!(rep.len(), 8);
    // With both headers, and with the report header saying false: the wait implies a report.
    for with in ["true", "false"] {
        let mut c = call(
            "SendUnicast",
            json!({"To": "alice", "Message": "m"}),
            now,
            "5000",
        );
        c.unsigned.push(("X-Herald-Delivery-Report", with));
        let r = c.send(addr).await;
        assert_eq!(report(&r)["Acked"], json!(["alice"]), "{with}");
    }
    alice.abort();
}
