//! Webhook delivery against real HTTP receivers on 127.0.0.1:0: the vendor's envelope and
//! signature, order, retries, timeouts, the bounded queue and the event filter.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_core::hub::{Departure, Hooks};
use herald_core::time::Timestamp;
use herald_proto::ids::{AppId, RoomId, UserId};
use herald_server::webhook::{
    signature, RetryPolicy, WebhookConfig, WebhookStats, Webhooks, VERSION,
};
use http::{header, HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};

const APP: &str = "65a1b2c3d4e5f60718293a4b";
const APP2: &str = "bbbbbbbbbbbbbbbbbbbbbbbb";
const SECRET: &str = "callback-secret";
/// 2024-01-01T00:00:00Z.
const T0: u64 = 1_704_067_200;

/// One request as the receiver saw it.
#[derive(Debug)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

type Answer = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;

/// A webhook receiver on port 0 that reports every request and answers request `n` (from 0, in
/// arrival order) with `answer(n)`.
async fn receiver(
    answer: impl Fn(usize) -> Answer + Send + Sync + 'static,
) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, requests) = mpsc::unbounded_channel();
    let answer = Arc::new(answer);
    let count = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (seen, answer, count) = (seen.clone(), answer.clone(), count.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (seen, answer, count) = (seen.clone(), answer.clone(), count.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        let n = count.fetch_add(1, Ordering::SeqCst);
                        let _ = seen.send(Seen {
                            method: parts.method,
                            path: parts.uri.to_string(),
                            headers: parts.headers,
                            body,
                        });
                        Ok::<_, std::convert::Infallible>(answer(n).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, requests)
}

fn status(code: u16) -> Answer {
    let response = Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    Box::pin(async move { response })
}

fn hang() -> Answer {
    Box::pin(std::future::pending())
}

fn config(addr: SocketAddr, events: &[&str], queue: usize) -> WebhookConfig {
    WebhookConfig {
        url: format!("http://{addr}/hook"),
        secret: SECRET.to_owned(),
        events: events.iter().map(|e| (*e).to_owned()).collect(),
        queue,
    }
}

const ALL: &[&str] = &["UserJoinRoom", "UserLeaveRoom", "UserLogin", "UserLogout"];

/// Fast enough for tests: 300 ms per attempt, 10 ms and 20 ms between attempts.
fn fast() -> RetryPolicy {
    RetryPolicy {
        timeout: Duration::from_millis(300),
        backoff: [Duration::from_millis(10), Duration::from_millis(20)],
    }
}

fn app() -> AppId {
    AppId::new(APP).unwrap()
}
fn room(s: &str) -> RoomId {
    RoomId::new(s).unwrap()
}
fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}
fn at(ms: u64) -> Timestamp {
    Timestamp::from_micros(T0 * 1_000_000 + ms * 1000)
}

/// Waits until the counters satisfy `done`, for at most 5 s.
async fn stats_until(hooks: &Webhooks, done: impl Fn(&WebhookStats) -> bool) -> WebhookStats {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = hooks.stats();
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "stats stuck at {stats:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn next(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .expect("no request within 5 s")
        .unwrap()
}

#[tokio::test]
async fn events_arrive_in_order_in_the_vendors_signed_envelope() {
    let (addr, mut seen) = receiver(|_| status(200)).await;
    let hooks = Webhooks::start_with(vec![(app(), config(addr, ALL, 100))], fast());
    let (r1, u1) = (room("r1"), user("u1"));
    hooks.user_login(&app(), &u1, at(0));
    hooks.user_joined(&app(), &r1, &u1, at(1_500));
    hooks.user_left(&app(), &r1, &u1, Departure::Left, at(1_500), at(62_000));
    hooks.user_joined(&app(), &r1, &u1, at(63_000));
    hooks.user_left(
        &app(),
        &r1,
        &u1,
        Departure::ConnectionLost,
        at(63_000),
        at(64_000),
    );
    hooks.user_joined(&app(), &r1, &u1, at(65_000));
    hooks.user_left(&app(), &r1, &u1, Departure::Kicked, at(65_000), at(66_999));
    hooks.user_logout(&app(), &u1, Departure::ConnectionLost, at(0), at(3_600_000));
    hooks.user_login(&app(), &u1, at(3_601_000));
    hooks.user_logout(&app(), &u1, Departure::Left, at(3_601_000), at(3_602_000));

    let want = [
        (
            "UserLogin",
            r#"{"UserId":"u1","Timestamp":1704067200000}"#,
            "2024-01-01T00:00:00Z",
        ),
        (
            "UserJoinRoom",
            r#"{"RoomId":"r1","UserId":"u1","Timestamp":1704067201500}"#,
            "2024-01-01T00:00:01Z",
        ),
        (
            "UserLeaveRoom",
            r#"{"RoomId":"r1","UserId":"u1","Timestamp":1704067262000,"Reason":"leaveRoom","Duration":60}"#,
            "2024-01-01T00:01:02Z",
        ),
        (
            "UserJoinRoom",
            r#"{"RoomId":"r1","UserId":"u1","Timestamp":1704067263000}"#,
            "2024-01-01T00:01:03Z",
        ),
        (
            "UserLeaveRoom",
            r#"{"RoomId":"r1","UserId":"u1","Timestamp":1704067264000,"Reason":"connectionLost","Duration":1}"#,
            "2024-01-01T00:01:04Z",
        ),
        (
            "UserJoinRoom",
            r#"{"RoomId":"r1","UserId":"u1","Timestamp":1704067265000}"#,
            "2024-01-01T00:01:05Z",
        ),
        (
            "UserLeaveRoom",
            r#"{"RoomId":"r1","UserId":"u1","Timestamp":1704067266999,"Reason":"kickedByServer","Duration":1}"#,
            "2024-01-01T00:01:06Z",
        ),
        (
            "UserLogout",
            r#"{"UserId":"u1","Timestamp":1704070800000,"Reason":"connectionLost","Duration":3600}"#,
            "2024-01-01T01:00:00Z",
        ),
        (
            "UserLogin",
            r#"{"UserId":"u1","Timestamp":1704070801000}"#,
            "2024-01-01T01:00:01Z",
        ),
        (
            "UserLogout",
            r#"{"UserId":"u1","Timestamp":1704070802000,"Reason":"logout","Duration":1}"#,
            "2024-01-01T01:00:02Z",
        ),
    ];
    let mut ids = HashSet::new();
    for (event_type, event_data, event_time) in want {
        let req = next(&mut seen).await;
        assert_eq!(req.method, Method::POST);
        assert_eq!(req.path, "/hook");
        assert_eq!(req.headers[header::CONTENT_TYPE], "application/json");
        let body = req.json();
        let fields: HashSet<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            fields,
            HashSet::from([
                "EventType",
                "EventData",
                "EventTime",
                "EventId",
                "AppId",
                "Version",
                "Signature",
                "Nonce"
            ])
        );
        let field = |k: &str| {
            body[k]
                .as_str()
                .unwrap_or_else(|| panic!("{k} is not a string"))
        };
        assert_eq!(field("EventType"), event_type);
        assert_eq!(field("EventData"), event_data);
        assert_eq!(field("EventTime"), event_time);
        assert_eq!(field("AppId"), APP);
        assert_eq!(field("Version"), "2020-12-01");
        assert_eq!(VERSION, "2020-12-01");
        let nonce = field("Nonce");
        assert!(
            nonce.len() == 4 && nonce.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{nonce:?}"
        );
        let expected = signature(
            event_type,
            event_data,
            event_time,
            field("EventId"),
            APP,
            "2020-12-01",
            nonce,
            SECRET,
        );
        assert_eq!(field("Signature"), expected);
        assert!(ids.insert(field("EventId").to_owned()), "EventId repeated");
    }
    let stats = stats_until(&hooks, |s| s.delivered == 10).await;
    assert_eq!(
        stats,
        WebhookStats {
            delivered: 10,
            ..WebhookStats::default()
        }
    );
}

#[tokio::test]
async fn a_receiver_failing_twice_gets_a_third_attempt() {
    let (addr, mut seen) = receiver(|n| status(if n < 2 { 500 } else { 200 })).await;
    let hooks = Webhooks::start_with(vec![(app(), config(addr, ALL, 100))], fast());
    hooks.user_joined(&app(), &room("r1"), &user("u1"), at(0));

    let first = next(&mut seen).await;
    for _ in 0..2 {
        // A retry is the same event: same body, same EventId.
        assert_eq!(next(&mut seen).await.body, first.body);
    }
    let stats = stats_until(&hooks, |s| s.delivered == 1).await;
    assert_eq!(
        stats,
        WebhookStats {
            delivered: 1,
            retried: 2,
            failed: 0,
            dropped: 0
        }
    );
    assert!(seen.try_recv().is_err(), "no fourth attempt");
}

#[tokio::test]
async fn a_receiver_that_always_fails_gets_three_attempts() {
    let (addr, mut seen) = receiver(|_| status(503)).await;
    let hooks = Webhooks::start_with(vec![(app(), config(addr, ALL, 100))], fast());
    hooks.user_login(&app(), &user("u1"), at(0));

    for _ in 0..3 {
        assert_eq!(next(&mut seen).await.json()["EventType"], "UserLogin");
    }
    let stats = stats_until(&hooks, |s| s.failed == 1).await;
    assert_eq!(
        stats,
        WebhookStats {
            failed: 1,
            retried: 2,
            delivered: 0,
            dropped: 0
        }
    );
    assert!(seen.try_recv().is_err(), "no fourth attempt");

    // The queue moves on to the next event.
    hooks.user_login(&app(), &user("u2"), at(1));
    let req = next(&mut seen).await;
    assert!(req.json()["EventData"].as_str().unwrap().contains("\"u2\""));
}

#[tokio::test]
async fn a_receiver_that_never_answers_is_bounded_by_the_timeout() {
    let (addr, mut seen) = receiver(|_| hang()).await;
    let policy = RetryPolicy {
        timeout: Duration::from_millis(200),
        backoff: [Duration::from_millis(10), Duration::from_millis(10)],
    };
    let hooks = Webhooks::start_with(vec![(app(), config(addr, ALL, 100))], policy);
    let started = Instant::now();
    hooks.user_login(&app(), &user("u1"), at(0));

    let stats = stats_until(&hooks, |s| s.failed == 1).await;
    let took = started.elapsed();
    assert_eq!(
        stats,
        WebhookStats {
            failed: 1,
            retried: 2,
            delivered: 0,
            dropped: 0
        }
    );
    for _ in 0..3 {
        next(&mut seen).await;
    }
    assert!(seen.try_recv().is_err(), "no fourth attempt");
    assert!(
        took >= Duration::from_millis(3 * 200) && took < Duration::from_secs(3),
        "three 200 ms attempts took {took:?}"
    );
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_without_blocking() {
    let release = Arc::new(Notify::new());
    let gate = release.clone();
    let (addr, mut seen) = receiver(move |n| {
        let gate = gate.clone();
        Box::pin(async move {
            if n == 0 {
                gate.notified().await;
            }
            status(200).await
        })
    })
    .await;
    let policy = RetryPolicy {
        timeout: Duration::from_secs(30),
        ..fast()
    };
    let hooks = Webhooks::start_with(vec![(app(), config(addr, ALL, 2))], policy);
    let r1 = room("r1");

    // The first event is taken off the queue and held by the receiver ...
    hooks.user_joined(&app(), &r1, &user("u0"), at(0));
    let first = next(&mut seen).await;
    // ... so the queue takes two more, and the rest are dropped at once.
    let started = Instant::now();
    for i in 1..=10 {
        hooks.user_joined(&app(), &r1, &user(&format!("u{i}")), at(i));
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(100),
        "10 hook calls took {took:?}"
    );
    assert_eq!(hooks.stats().dropped, 8);

    release.notify_one();
    let mut users = vec![first];
    users.push(next(&mut seen).await);
    users.push(next(&mut seen).await);
    let users: Vec<String> = users
        .iter()
        .map(|r| {
            let data: Value =
                serde_json::from_str(r.json()["EventData"].as_str().unwrap()).unwrap();
            data["UserId"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(users, ["u0", "u1", "u2"]);
    let stats = stats_until(&hooks, |s| s.delivered == 3).await;
    assert_eq!(
        stats,
        WebhookStats {
            delivered: 3,
            dropped: 8,
            failed: 0,
            retried: 0
        }
    );
}

#[tokio::test]
async fn only_the_configured_events_are_sent() {
    let (addr, mut seen) = receiver(|_| status(200)).await;
    let hooks = Webhooks::start_with(vec![(app(), config(addr, &["UserLeaveRoom"], 100))], fast());
    let (r1, u1) = (room("r1"), user("u1"));
    hooks.user_login(&app(), &u1, at(0));
    hooks.user_joined(&app(), &r1, &u1, at(1));
    hooks.user_left(&app(), &r1, &u1, Departure::Left, at(1), at(2));
    hooks.user_logout(&app(), &u1, Departure::Left, at(0), at(3));
    hooks.user_joined(&app(), &r1, &u1, at(4));
    hooks.user_left(&app(), &r1, &u1, Departure::Kicked, at(4), at(5));

    // In order, so the second leave arriving right after the first proves nothing came between.
    for reason in ["leaveRoom", "kickedByServer"] {
        let body = next(&mut seen).await.json();
        assert_eq!(body["EventType"], "UserLeaveRoom");
        assert!(body["EventData"].as_str().unwrap().contains(reason));
    }
    let stats = stats_until(&hooks, |s| s.delivered == 2).await;
    assert_eq!(
        stats,
        WebhookStats {
            delivered: 2,
            ..WebhookStats::default()
        }
    );
}

#[tokio::test]
async fn a_stuck_receiver_delays_only_its_own_app() {
    let (stuck, mut stuck_seen) = receiver(|_| hang()).await;
    let (fine, mut fine_seen) = receiver(|_| status(200)).await;
    let policy = RetryPolicy {
        timeout: Duration::from_secs(30),
        ..fast()
    };
    let app2 = AppId::new(APP2).unwrap();
    let hooks = Webhooks::start_with(
        vec![
            (app(), config(stuck, ALL, 100)),
            (app2.clone(), config(fine, ALL, 100)),
        ],
        policy,
    );
    hooks.user_login(&app(), &user("u1"), at(0));
    next(&mut stuck_seen).await;
    hooks.user_login(&app(), &user("u2"), at(1));
    for i in 0..3 {
        hooks.user_login(&app2, &user(&format!("v{i}")), at(i));
    }
    for _ in 0..3 {
        assert_eq!(next(&mut fine_seen).await.json()["AppId"], APP2);
    }
    let stats = stats_until(&hooks, |s| s.delivered == 3).await;
    assert_eq!(
        stats,
        WebhookStats {
            delivered: 3,
            ..WebhookStats::default()
        }
    );
    assert!(
        stuck_seen.try_recv().is_err(),
        "the stuck app's second event waits its turn"
    );
}

#[tokio::test]
async fn apps_without_a_webhook_are_ignored() {
    let (addr, mut seen) = receiver(|_| status(200)).await;
    let hooks = Webhooks::start_with(vec![(app(), config(addr, ALL, 1))], fast());
    let other = AppId::new(APP2).unwrap();
    for i in 0..5 {
        hooks.user_login(&other, &user("u1"), at(i));
    }
    hooks.user_login(&app(), &user("u1"), at(9));
    assert_eq!(next(&mut seen).await.json()["AppId"], APP);
    let stats = stats_until(&hooks, |s| s.delivered == 1).await;
    assert_eq!(
        stats,
        WebhookStats {
            delivered: 1,
            ..WebhookStats::default()
        }
    );
}
