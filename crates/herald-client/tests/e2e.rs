//! The SDK against the real server: a `herald_server::Server` on 127.0.0.1:0, real WebSocket
//! connections through [`connect`], real signed HTTP calls through [`OpenApiClient`]. The tests
//! after the OpenAPI ones cover client-side messaging: sends, their results, presence, peer
//! status and server parameters.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use herald_client::{
    connect, connect_with, CallError, ConnectError, ConnectOptions, DeliveryReport, Engine, Event,
    EventStream, Message, OpenApiClient, OpenApiError,
};
use herald_proto::client::{
    online_status, room_send_result, room_state, send_result, user_leave_reason,
    MAX_CLIENT_MESSAGE_BYTES,
};
use herald_proto::openapi::ApiVersion;
use herald_proto::token::{AccessToken, Privilege};
use herald_server::config::Config;
use herald_server::Server;
use serde_json::json;

const APP_ID: &str = "65a1b2c3d4e5f60718293a4b";
const APP_KEY: &str = "0123456789abcdef0123456789abcdef";
const AK: &str = "AKLTe2etest";
const SK: &str = "e2e-secret/with+odd=chars";
const FROM: &str = "server_bot";

/// Starts a server on a free port and returns it with its base address.
async fn start() -> (Server, String) {
    start_with("").await
}

/// [`start`], with `app` added to the app's TOML table (`presence_events = false`, …).
async fn start_with(app: &str) -> (Server, String) {
    let config = Config::from_toml(&format!(
        r#"
listen = "127.0.0.1:0"
[[apps]]
app_id = "{APP_ID}"
app_key = "{APP_KEY}"
access_keys = [{{ ak = "{AK}", sk = "{SK}" }}]
{app}
"#
    ))
    .unwrap();
    let server = Server::start(config).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    (server, base)
}

fn now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

/// A token for `uid` in `room` ("" for login), valid for an hour.
fn token(uid: &str, room: &str) -> String {
    let now = now();
    let mut t = AccessToken::new(APP_ID, room, uid, 42, now);
    t.expire_time(now + 3600);
    t.add_privilege(Privilege::PublishStream, now + 3600);
    t.add_privilege(Privilege::SubscribeStream, now + 3600);
    t.serialize(APP_KEY)
}

/// The next event; a missing event fails the test instead of hanging it.
async fn next(events: &mut EventStream) -> Event {
    tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("an event within 5 s")
        .expect("the stream has not ended")
}

/// A connection logged in as `uid` and joined to `rooms`, each result checked.
async fn user(base: &str, uid: &str, rooms: &[&str]) -> (Engine, EventStream) {
    let (engine, mut events) = connect(base, APP_ID).await.unwrap();
    engine.login(&token(uid, ""), uid).await.unwrap();
    match next(&mut events).await {
        Event::LoginResult {
            uid: u, error_code, ..
        } => assert_eq!((u.as_str(), error_code), (uid, 0)),
        other => panic!("expected onLoginResult, got {other:?}"),
    }
    for room in rooms {
        join(&engine, &mut events, room, uid).await;
    }
    (engine, events)
}

/// Joins `room` as `uid` and checks the answer.
async fn join(engine: &Engine, events: &mut EventStream, room: &str, uid: &str) {
    engine
        .join_room(room, uid, &token(uid, room))
        .await
        .unwrap();
    match next(events).await {
        Event::RoomStateChanged {
            room_id,
            uid: u,
            state,
            extra_info,
        } => {
            assert_eq!((room_id.as_str(), u.as_str(), state), (room, uid, 0));
            let info: serde_json::Value = serde_json::from_str(&extra_info).unwrap();
            assert!(info["elapsed"].is_u64(), "{extra_info}");
            assert_eq!(info["join_type"], 0, "{extra_info}");
        }
        other => panic!("expected onRoomStateChanged, got {other:?}"),
    }
}

/// Reads as many events as `expected` holds and checks they are exactly those, in order.
async fn expect(events: &mut EventStream, expected: &[Event]) {
    let mut got = Vec::new();
    while got.len() < expected.len() {
        got.push(next(events).await);
    }
    assert_eq!(got, expected);
}

/// What one engine expects to receive, in order, with its own msgid count.
#[derive(Default)]
struct Expected {
    events: Vec<Event>,
}

impl Expected {
    fn push(&mut self, kind: Kind, room: &str, message: &Message) {
        let msgid = self.events.len() as u64 + 1;
        let (room_id, uid) = (room.to_owned(), FROM.to_owned());
        let e = match (kind, message) {
            (Kind::Outside, Message::Text(t)) => Event::UserMessageReceivedOutsideRoom {
                msgid,
                uid,
                message: t.clone(),
            },
            (Kind::Outside, Message::Binary(b)) => Event::UserBinaryMessageReceivedOutsideRoom {
                msgid,
                uid,
                message: b.clone().into(),
            },
            (Kind::User, Message::Text(t)) => Event::UserMessageReceived {
                room_id,
                msgid,
                uid,
                message: t.clone(),
            },
            (Kind::User, Message::Binary(b)) => Event::UserBinaryMessageReceived {
                room_id,
                msgid,
                uid,
                message: b.clone().into(),
            },
            (Kind::Room, Message::Text(t)) => Event::RoomMessageReceived {
                room_id,
                msgid,
                uid,
                message: t.clone(),
            },
            (Kind::Room, Message::Binary(b)) => Event::RoomBinaryMessageReceived {
                room_id,
                msgid,
                uid,
                message: b.clone().into(),
            },
            (_, Message::Base64(_)) => unreachable!("the test sends text and bytes"),
        };
        self.events.push(e);
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Outside,
    User,
    Room,
}

fn ok(r: Result<herald_client::ApiResponse, OpenApiError>) {
    let r = r.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["Result"]["Message"], "Success", "{}", r.body);
}

#[tokio::test]
async fn every_action_reaches_exactly_its_recipients_in_both_versions() {
    // Presence events would interleave with the messages this test counts.
    let (_server, base) = start_with("presence_events = false").await;
    let (_e1, mut ev1) = user(&base, "u1", &["r1"]).await;
    let (_e2, mut ev2) = user(&base, "u2", &["r1", "r2"]).await;
    let (mut x1, mut x2) = (Expected::default(), Expected::default());

    let mut n = 0;
    for version in [ApiVersion::V20230720, ApiVersion::V20201201] {
        let api = OpenApiClient::new(&base, AK, SK)
            .unwrap()
            .with_version(version);
        for binary in [false, true] {
            let mut message = || {
                n += 1;
                if binary {
                    // Not UTF-8, so it could not pass as text anywhere on the way.
                    Message::Binary(vec![0, 0xff, 0xfe, n])
                } else {
                    Message::Text(format!("héllo € {n}"))
                }
            };

            let m = message();
            ok(api.send_unicast(APP_ID, FROM, "u1", m.clone()).await);
            x1.push(Kind::Outside, "", &m);

            let m = message();
            ok(api
                .send_room_unicast(APP_ID, "r1", FROM, "u2", m.clone())
                .await);
            x2.push(Kind::User, "r1", &m);

            let m = message();
            ok(api
                .batch_send_room_unicast(APP_ID, "r1", FROM, &["u1"], m.clone())
                .await);
            x1.push(Kind::User, "r1", &m);

            let m = message();
            ok(api
                .batch_send_room_unicast(APP_ID, "r1", FROM, &["u1", "u2", "nobody"], m.clone())
                .await);
            x1.push(Kind::User, "r1", &m);
            x2.push(Kind::User, "r1", &m);

            let m = message();
            ok(api.send_broadcast(APP_ID, "r1", FROM, m.clone()).await);
            x1.push(Kind::Room, "r1", &m);
            x2.push(Kind::Room, "r1", &m);

            // u1 is not in r2: only u2 hears this broadcast.
            let m = message();
            ok(api.send_broadcast(APP_ID, "r2", FROM, m.clone()).await);
            x2.push(Kind::Room, "r2", &m);
        }
    }

    // A last broadcast to both marks the end: everything before it on each connection must be
    // exactly what that connection expects, so nothing reached the wrong engine.
    let end = Message::Text("end".into());
    ok(OpenApiClient::new(&base, AK, SK)
        .unwrap()
        .send_broadcast(APP_ID, "r1", FROM, end.clone())
        .await);
    x1.push(Kind::Room, "r1", &end);
    x2.push(Kind::Room, "r1", &end);
    for (events, expected) in [(&mut ev1, x1), (&mut ev2, x2)] {
        let mut got = Vec::new();
        while got.len() < expected.events.len() {
            got.push(next(events).await);
        }
        assert_eq!(got, expected.events);
    }
}

#[tokio::test]
async fn results_of_calls_arrive_as_the_vendor_callbacks() {
    let (_server, base) = start().await;
    let (engine, mut events) = connect(&base, APP_ID).await.unwrap();

    engine.login(&token("u2", ""), "u1").await.unwrap();
    assert!(matches!(
        next(&mut events).await,
        Event::LoginResult {
            error_code: -1000,
            ..
        }
    ));
    engine.login(&token("u1", ""), "u1").await.unwrap();
    let e = next(&mut events).await;
    assert!(
        matches!(&e, Event::LoginResult { uid, error_code: 0, .. } if uid == "u1"),
        "{e:?}"
    );
    assert!(e.to_json()["elapsed"].is_u64());

    engine
        .join_room("r1", "u1", &token("u1", "r2"))
        .await
        .unwrap();
    let e = next(&mut events).await;
    assert!(
        matches!(&e, Event::RoomStateChanged { state: -1000, .. }),
        "{e:?}"
    );
    engine
        .join_room("r1", "u1", &token("u1", "*"))
        .await
        .unwrap();
    let e = next(&mut events).await;
    assert!(
        matches!(&e, Event::RoomStateChanged { state: 0, .. }),
        "{e:?}"
    );

    // The same user joining the same room elsewhere replaces this membership; logging in elsewhere
    // replaces this login.
    let (_other, mut other_events) = user(&base, "u1", &["r1"]).await;
    assert_eq!(next(&mut events).await, Event::Logout { reason: 1 });
    let e = next(&mut events).await;
    assert!(
        matches!(&e, Event::RoomStateChanged { room_id, state: -1004, .. } if room_id == "r1"),
        "{e:?}"
    );

    engine.leave_room("r1").await.unwrap();
    assert_eq!(
        next(&mut events).await,
        Event::LeaveRoom {
            room_id: "r1".into()
        }
    );
    engine.logout().await.unwrap();
    assert_eq!(next(&mut events).await, Event::Logout { reason: 0 });

    engine.close().await;
    let e = next(&mut events).await;
    assert_eq!(
        e,
        Event::ConnectionClosed {
            code: Some(1000),
            reason: String::new()
        }
    );
    assert_eq!(e.name(), "onConnectionClosed");
    assert!(
        events.recv().await.is_none(),
        "onConnectionClosed is the last event"
    );
    assert!(engine.is_closed());
    assert!(matches!(engine.logout().await, Err(CallError::Closed)));
    engine.close().await; // closing twice only waits

    // The other connection saw none of this.
    engine_is_quiet(&base, &mut other_events).await;
}

/// Proves that nothing is queued on `events` by sending it a message and seeing that first.
async fn engine_is_quiet(base: &str, events: &mut EventStream) {
    let api = OpenApiClient::new(base, AK, SK).unwrap();
    ok(api.send_unicast(APP_ID, FROM, "u1", "marker".into()).await);
    let e = next(events).await;
    assert!(
        matches!(&e, Event::UserMessageReceivedOutsideRoom { message, .. } if message == "marker"),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_server_shutdown_is_reported_with_its_close_code() {
    let (server, base) = start().await;
    let (engine, mut events) = user(&base, "u1", &[]).await;
    server.shutdown().await;
    let e = next(&mut events).await;
    assert!(
        matches!(
            &e,
            Event::ConnectionClosed {
                code: Some(1001),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(events.recv().await.is_none());
    assert!(matches!(
        engine.login("t", "u1").await,
        Err(CallError::Closed)
    ));
}

#[tokio::test]
async fn connecting_to_an_unknown_app_is_refused() {
    let (_server, base) = start().await;
    match connect(&base, "000000000000000000000000").await {
        Err(ConnectError::Rejected { status: 404, .. }) => {}
        other => panic!("expected a 404 refusal, got {other:?}"),
    }
    assert!(matches!(
        connect("127.0.0.1:1", APP_ID).await,
        Err(ConnectError::InvalidServer(_))
    ));
}

#[tokio::test]
async fn openapi_errors_come_back_as_envelopes() {
    let (_server, base) = start().await;
    let (_engine, _events) = user(&base, "u1", &[]).await;
    let api = OpenApiClient::new(&base, AK, SK).unwrap();

    let r = OpenApiClient::new(&base, AK, "wrong")
        .unwrap()
        .send_unicast(APP_ID, FROM, "u1", "x".into())
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.error_code()),
        (401, Some("SignatureDoesNotMatch"))
    );
    assert_eq!(r.body["ResponseMetadata"]["Error"]["CodeN"], 100010);

    // From may not be a logged-in user's id.
    let r = api
        .send_unicast(APP_ID, "u1", "u1", "x".into())
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.error_code()),
        (400, Some("InvalidParameter.IllegalFrom"))
    );

    // Base64 is sent as given, so the server is the one to refuse it.
    let r = api
        .send_unicast(APP_ID, FROM, "u1", Message::Base64("%%%".into()))
        .await
        .unwrap();
    assert_eq!((r.status, r.error_code()), (400, Some("InvalidParameter")));

    let body = json!({"AppId": APP_ID, "From": FROM, "To": "u1", "Binary": false, "Message": "x"});
    let r = api.call("SendUnicast", "2022-06-01", &body).await.unwrap();
    assert_eq!(
        (r.status, r.error_code()),
        (404, Some("InvalidActionOrVersion"))
    );
    assert_eq!(r.body["ResponseMetadata"]["Version"], "2022-06-01");

    // call_at signs at the time it is given: a minute ago is inside the server's window, an hour
    // ago is not.
    let now = i64::from(now());
    let r = api
        .call_at("SendUnicast", "2023-07-20", &body, now - 60)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api
        .call_at("SendUnicast", "2023-07-20", &body, now - 3600)
        .await
        .unwrap();
    assert_eq!((r.status, r.error_code()), (403, Some("InvalidTimestamp")));
    assert!(r.retry_after.is_none());
}

#[tokio::test]
async fn an_unreachable_server_is_a_transport_error() {
    // Bind and drop to find a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api = OpenApiClient::new(&format!("http://127.0.0.1:{port}"), AK, SK).unwrap();
    assert!(matches!(
        api.send_unicast(APP_ID, FROM, "u1", "x".into()).await,
        Err(OpenApiError::Transport(_))
    ));
    assert!(matches!(
        connect(&format!("http://127.0.0.1:{port}"), APP_ID).await,
        Err(ConnectError::Transport { .. })
    ));
}

#[tokio::test]
async fn dropping_the_last_engine_closes_the_connection() {
    let (_server, base) = start().await;
    let (engine, mut events) = user(&base, "u1", &[]).await;
    let clone = engine.clone();
    drop(engine);
    // One clone is enough to keep the connection.
    engine_is_quiet(&base, &mut events).await;
    drop(clone);
    let e = next(&mut events).await;
    assert!(
        matches!(
            &e,
            Event::ConnectionClosed {
                code: Some(1000),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(events.recv().await.is_none());
}

fn outside_result(msgid: u64, error: i32) -> Event {
    Event::UserMessageSendResultOutsideRoom { msgid, error }
}

fn user_result(room: &str, msgid: u64, error: i32) -> Event {
    Event::UserMessageSendResult {
        room_id: room.into(),
        msgid,
        error,
    }
}

fn room_result(room: &str, msgid: u64, error: i32) -> Event {
    Event::RoomMessageSendResult {
        room_id: room.into(),
        msgid,
        error,
    }
}

fn server_result(msgid: u64, error: i32) -> Event {
    Event::ServerMessageSendResult {
        msgid,
        error,
        message: Bytes::new(),
    }
}

fn peer_status(peer: &str, status: i32) -> Event {
    Event::GetPeerOnlineStatus {
        peer_user_id: peer.into(),
        status,
    }
}

/// A broadcast from the business server to `room`: once it arrives, everything sent before it has.
async fn marker(base: &str, room: &str) {
    ok(OpenApiClient::new(base, AK, SK)
        .unwrap()
        .send_broadcast(APP_ID, room, FROM, "marker".into())
        .await);
}

fn marker_received(room: &str, msgid: u64) -> Event {
    Event::RoomMessageReceived {
        room_id: room.into(),
        msgid,
        uid: FROM.into(),
        message: "marker".into(),
    }
}

#[tokio::test]
async fn client_sends_reach_exactly_their_recipients_as_the_sender() {
    // Without presence events the streams hold only messages and results.
    let (_server, base) = start_with("presence_events = false").await;
    let (a, mut ev_a) = user(&base, "u1", &["r1"]).await;
    let (b, mut ev_b) = user(&base, "u2", &["r1", "r2"]).await;
    // c is u3 when logged in and u3r in the room: each send goes out under the matching id.
    let (c, mut ev_c) = user(&base, "u3", &[]).await;
    join(&c, &mut ev_c, "r1", "u3r").await;

    let text = |n: u8| format!("héllo € {n}");
    // Not UTF-8, so it could not pass as text anywhere on the way.
    let bin = |n: u8| vec![0, 0xff, 0xfe, n];

    // Every kind of send from a, numbered from one sequence, a server send included.
    let sent = [
        a.send_user_message_outside_room("u2", &text(1)).await,
        a.send_user_binary_message_outside_room("u3", &bin(2)).await,
        a.send_user_message("r1", "u2", &text(3)).await,
        a.send_user_binary_message("r1", "u3r", &bin(4)).await,
        a.send_room_message("r1", &text(5)).await,
        a.send_room_binary_message("r1", &bin(6)).await,
        a.send_server_message(&text(7)).await,
        a.send_user_message_outside_room("u2", &text(8)).await,
    ];
    let sent: Vec<u64> = sent.into_iter().map(Result::unwrap).collect();
    assert_eq!(sent, (1..=8).collect::<Vec<_>>());
    expect(
        &mut ev_a,
        &[
            outside_result(1, send_result::SUCCESS),
            outside_result(2, send_result::SUCCESS),
            user_result("r1", 3, send_result::SUCCESS),
            user_result("r1", 4, send_result::SUCCESS),
            room_result("r1", 5, room_send_result::SUCCESS),
            room_result("r1", 6, room_send_result::SUCCESS),
            // The server send reached the server: it is refused for want of setServerParams.
            server_result(7, send_result::SERVER_PARAMS_NOT_SET),
            outside_result(8, send_result::SUCCESS),
        ],
    )
    .await;
    expect(
        &mut ev_b,
        &[
            Event::UserMessageReceivedOutsideRoom {
                msgid: 1,
                uid: "u1".into(),
                message: text(1),
            },
            Event::UserMessageReceived {
                room_id: "r1".into(),
                msgid: 2,
                uid: "u1".into(),
                message: text(3),
            },
            Event::RoomMessageReceived {
                room_id: "r1".into(),
                msgid: 3,
                uid: "u1".into(),
                message: text(5),
            },
            Event::RoomBinaryMessageReceived {
                room_id: "r1".into(),
                msgid: 4,
                uid: "u1".into(),
                message: bin(6).into(),
            },
            Event::UserMessageReceivedOutsideRoom {
                msgid: 5,
                uid: "u1".into(),
                message: text(8),
            },
        ],
    )
    .await;
    expect(
        &mut ev_c,
        &[
            Event::UserBinaryMessageReceivedOutsideRoom {
                msgid: 1,
                uid: "u1".into(),
                message: bin(2).into(),
            },
            Event::UserBinaryMessageReceived {
                room_id: "r1".into(),
                msgid: 2,
                uid: "u1".into(),
                message: bin(4).into(),
            },
            Event::RoomMessageReceived {
                room_id: "r1".into(),
                msgid: 3,
                uid: "u1".into(),
                message: text(5),
            },
            Event::RoomBinaryMessageReceived {
                room_id: "r1".into(),
                msgid: 4,
                uid: "u1".into(),
                message: bin(6).into(),
            },
        ],
    )
    .await;

    // c sends as u3r in the room and as u3 outside it; each engine counts its own msgids.
    assert_eq!(c.send_user_message("r1", "u1", "in").await.unwrap(), 1);
    assert_eq!(
        c.send_user_message_outside_room("u1", "out").await.unwrap(),
        2
    );
    expect(
        &mut ev_c,
        &[
            user_result("r1", 1, send_result::SUCCESS),
            outside_result(2, send_result::SUCCESS),
        ],
    )
    .await;
    // b is alone in r2: the room send succeeds and reaches nobody.
    assert_eq!(b.send_room_message("r2", "anyone?").await.unwrap(), 1);
    expect(
        &mut ev_b,
        &[room_result("r2", 1, room_send_result::SUCCESS)],
    )
    .await;

    // Everything before the marker is exactly what each engine expects: nothing went astray,
    // and no sender heard its own room message.
    marker(&base, "r1").await;
    expect(
        &mut ev_a,
        &[
            Event::UserMessageReceived {
                room_id: "r1".into(),
                msgid: 1,
                uid: "u3r".into(),
                message: "in".into(),
            },
            Event::UserMessageReceivedOutsideRoom {
                msgid: 2,
                uid: "u3".into(),
                message: "out".into(),
            },
            marker_received("r1", 3),
        ],
    )
    .await;
    expect(&mut ev_b, &[marker_received("r1", 6)]).await;
    expect(&mut ev_c, &[marker_received("r1", 5)]).await;
}

#[tokio::test]
async fn send_results_carry_the_vendor_codes() {
    let (_server, base) = start_with("presence_events = false").await;
    let (peer, mut ev_peer) = user(&base, "u2", &["r1"]).await;
    let (e, mut ev) = connect(&base, APP_ID).await.unwrap();
    let too_long = "a".repeat(MAX_CLIENT_MESSAGE_BYTES + 1);
    let longest = vec![7u8; MAX_CLIENT_MESSAGE_BYTES];

    // Neither logged in nor joined.
    e.send_user_message_outside_room("u2", "x").await.unwrap();
    e.send_user_message("r1", "u2", "x").await.unwrap();
    e.send_room_message("r1", "x").await.unwrap();
    e.send_server_binary_message(b"x").await.unwrap();
    expect(
        &mut ev,
        &[
            outside_result(1, send_result::NOT_LOGIN),
            user_result("r1", 2, send_result::NOT_JOIN),
            room_result("r1", 3, room_send_result::NOT_JOIN),
            server_result(4, send_result::NOT_LOGIN),
        ],
    )
    .await;

    // Logged in, not joined.
    e.login(&token("u1", ""), "u1").await.unwrap();
    assert!(matches!(
        next(&mut ev).await,
        Event::LoginResult { error_code: 0, .. }
    ));
    e.send_user_message_outside_room("nobody", "x")
        .await
        .unwrap();
    e.send_user_message_outside_room("", "x").await.unwrap();
    e.send_user_message_outside_room("u2", &too_long)
        .await
        .unwrap();
    e.send_user_binary_message_outside_room("u2", &longest)
        .await
        .unwrap();
    e.send_user_message("r1", "u2", "x").await.unwrap();
    e.send_server_message("x").await.unwrap();
    expect(
        &mut ev,
        &[
            outside_result(5, send_result::NO_RECEIVER),
            outside_result(6, send_result::EMPTY_USER),
            outside_result(7, send_result::EXCEED_MAX_LENGTH),
            outside_result(8, send_result::SUCCESS),
            user_result("r1", 9, send_result::NOT_JOIN),
            server_result(10, send_result::SERVER_PARAMS_NOT_SET),
        ],
    )
    .await;

    // Joined to r1.
    join(&e, &mut ev, "r1", "u1").await;
    e.send_user_message("r1", "nobody", "x").await.unwrap();
    e.send_user_message("r1", "", "x").await.unwrap();
    e.send_user_binary_message("r1", "u2", too_long.as_bytes())
        .await
        .unwrap();
    e.send_room_message("r1", &too_long).await.unwrap();
    e.send_room_binary_message("r1", &longest).await.unwrap();
    e.send_room_message("r2", "x").await.unwrap();
    e.send_room_message("not a room id", "x").await.unwrap();
    expect(
        &mut ev,
        &[
            user_result("r1", 11, send_result::NO_RECEIVER),
            user_result("r1", 12, send_result::EMPTY_USER),
            user_result("r1", 13, send_result::EXCEED_MAX_LENGTH),
            room_result("r1", 14, room_send_result::EXCEED_MAX_LENGTH),
            room_result("r1", 15, room_send_result::SUCCESS),
            room_result("r2", 16, room_send_result::NOT_JOIN),
            room_result("not a room id", 17, room_send_result::NOT_JOIN),
        ],
    )
    .await;

    // The peer got exactly the two messages of 64 KiB, nothing longer.
    expect(
        &mut ev_peer,
        &[
            Event::UserBinaryMessageReceivedOutsideRoom {
                msgid: 1,
                uid: "u1".into(),
                message: longest.clone().into(),
            },
            Event::RoomBinaryMessageReceived {
                room_id: "r1".into(),
                msgid: 2,
                uid: "u1".into(),
                message: longest.into(),
            },
        ],
    )
    .await;

    // A recipient that has left is no receiver.
    peer.leave_room("r1").await.unwrap();
    expect(
        &mut ev_peer,
        &[Event::LeaveRoom {
            room_id: "r1".into(),
        }],
    )
    .await;
    e.send_user_message("r1", "u2", "x").await.unwrap();
    expect(&mut ev, &[user_result("r1", 18, send_result::NO_RECEIVER)]).await;
}

#[tokio::test]
async fn the_send_rate_counts_every_send_of_a_connection() {
    // Two sends per second, with a burst of two: a third at once is refused, whatever its kind.
    let (_server, base) = start_with("presence_events = false\nclient_send_rate = 2").await;
    let (a, mut ev_a) = user(&base, "u1", &["r1"]).await;
    let (b, mut ev_b) = user(&base, "u2", &["r1"]).await;

    a.send_room_message("r1", "1").await.unwrap();
    a.send_user_message("r1", "u2", "2").await.unwrap();
    a.send_user_message_outside_room("u2", "3").await.unwrap();
    a.send_room_message("r1", "4").await.unwrap();
    a.send_user_message("r1", "u2", "5").await.unwrap();
    expect(
        &mut ev_a,
        &[
            room_result("r1", 1, room_send_result::SUCCESS),
            user_result("r1", 2, send_result::SUCCESS),
            outside_result(3, send_result::EXCEED_QPS),
            room_result("r1", 4, room_send_result::EXCEED_QPS),
            user_result("r1", 5, send_result::EXCEED_QPS),
        ],
    )
    .await;
    // The limit is a's alone: b sends as usual.
    b.send_room_message("r1", "b").await.unwrap();
    expect(
        &mut ev_b,
        &[
            Event::RoomMessageReceived {
                room_id: "r1".into(),
                msgid: 1,
                uid: "u1".into(),
                message: "1".into(),
            },
            Event::UserMessageReceived {
                room_id: "r1".into(),
                msgid: 2,
                uid: "u1".into(),
                message: "2".into(),
            },
            room_result("r1", 1, room_send_result::SUCCESS),
        ],
    )
    .await;
    marker(&base, "r1").await;
    expect(
        &mut ev_a,
        &[
            Event::RoomMessageReceived {
                room_id: "r1".into(),
                msgid: 1,
                uid: "u2".into(),
                message: "b".into(),
            },
            marker_received("r1", 2),
        ],
    )
    .await;
}

#[tokio::test]
async fn members_see_each_other_join_and_leave_with_the_vendor_reasons() {
    let (_server, base) = start().await;
    let (_a, mut ev_a) = user(&base, "u1", &["r1"]).await;
    let (b, mut ev_b) = user(&base, "u2", &[]).await;
    let joined = |uid: &str| Event::UserJoined {
        room_id: "r1".into(),
        uid: uid.into(),
    };
    let left = |reason| Event::UserLeave {
        room_id: "r1".into(),
        uid: "u2".into(),
        reason,
    };

    // The joiner hears of those already there right after its own answer; they hear of it.
    join(&b, &mut ev_b, "r1", "u2").await;
    expect(&mut ev_b, &[joined("u1")]).await;
    expect(&mut ev_a, &[joined("u2")]).await;

    b.leave_room("r1").await.unwrap();
    expect(
        &mut ev_b,
        &[Event::LeaveRoom {
            room_id: "r1".into(),
        }],
    )
    .await;
    expect(&mut ev_a, &[left(user_leave_reason::QUIT)]).await;

    join(&b, &mut ev_b, "r1", "u2").await;
    expect(&mut ev_b, &[joined("u1")]).await;
    expect(&mut ev_a, &[joined("u2")]).await;
    let api = OpenApiClient::new(&base, AK, SK).unwrap();
    let kick = json!({"AppId": APP_ID, "RoomId": "r1", "UserId": "u2"});
    ok(api.call("KickUser", "2020-12-01", &kick).await);
    expect(
        &mut ev_b,
        &[Event::RoomStateChanged {
            room_id: "r1".into(),
            uid: "u2".into(),
            state: room_state::KICKED_OUT,
            extra_info: r#"{"elapsed":0,"join_type":0}"#.into(),
        }],
    )
    .await;
    expect(&mut ev_a, &[left(user_leave_reason::KICKED_BY_ADMIN)]).await;

    join(&b, &mut ev_b, "r1", "u2").await;
    expect(&mut ev_b, &[joined("u1")]).await;
    expect(&mut ev_a, &[joined("u2")]).await;
    b.close().await;
    expect(&mut ev_a, &[left(user_leave_reason::DROPPED)]).await;

    // Nothing else reached a.
    marker(&base, "r1").await;
    expect(&mut ev_a, &[marker_received("r1", 1)]).await;
}

#[tokio::test]
async fn get_peer_online_status_follows_logins() {
    let (_server, base) = start().await;
    let (a, mut ev_a) = user(&base, "u1", &[]).await;
    let (b, mut ev_b) = connect(&base, APP_ID).await.unwrap();

    // Asking needs no login of one's own.
    b.get_peer_online_status("u1").await.unwrap();
    expect(&mut ev_b, &[peer_status("u1", online_status::ONLINE)]).await;
    a.get_peer_online_status("u2").await.unwrap();
    expect(&mut ev_a, &[peer_status("u2", online_status::OFFLINE)]).await;

    b.login(&token("u2", ""), "u2").await.unwrap();
    assert!(matches!(
        next(&mut ev_b).await,
        Event::LoginResult { error_code: 0, .. }
    ));
    a.get_peer_online_status("u2").await.unwrap();
    expect(&mut ev_a, &[peer_status("u2", online_status::ONLINE)]).await;

    // A room membership is not a login.
    join(&b, &mut ev_b, "r1", "u9").await;
    a.get_peer_online_status("u9").await.unwrap();
    expect(&mut ev_a, &[peer_status("u9", online_status::OFFLINE)]).await;

    b.logout().await.unwrap();
    expect(&mut ev_b, &[Event::Logout { reason: 0 }]).await;
    a.get_peer_online_status("u2").await.unwrap();
    expect(&mut ev_a, &[peer_status("u2", online_status::OFFLINE)]).await;
    a.logout().await.unwrap();
    expect(&mut ev_a, &[Event::Logout { reason: 0 }]).await;
    b.get_peer_online_status("u1").await.unwrap();
    expect(&mut ev_b, &[peer_status("u1", online_status::OFFLINE)]).await;
}

#[tokio::test]
async fn set_server_params_accepts_only_urls_on_the_allow_list() {
    let (_server, base) = start_with(r#"server_message_urls = ["http://127.0.0.1:9/rtc/"]"#).await;
    let (e, mut ev) = connect(&base, APP_ID).await.unwrap();
    let set = |error| Event::ServerParamsSetResult { error };
    const ALLOWED: &str = "http://127.0.0.1:9/rtc/messages";

    e.set_server_params("sig", ALLOWED).await.unwrap();
    expect(&mut ev, &[set(send_result::NOT_LOGIN)]).await;

    e.login(&token("u1", ""), "u1").await.unwrap();
    assert!(matches!(
        next(&mut ev).await,
        Event::LoginResult { error_code: 0, .. }
    ));
    for refused in [
        "http://169.254.169.254/latest/meta-data",
        "http://127.0.0.1:9/rtcx",
        "https://127.0.0.1:9/rtc/messages",
        "http://127.0.0.1:10/rtc/messages",
        "http://127.0.0.1:9@evil.example/rtc/",
        "not a url",
    ] {
        e.set_server_params("sig", refused).await.unwrap();
        assert_eq!(
            next(&mut ev).await,
            set(send_result::SERVER_PARAMS_NOT_SET),
            "{refused}"
        );
    }
    e.set_server_params("", ALLOWED).await.unwrap();
    expect(&mut ev, &[set(send_result::SERVER_PARAMS_NOT_SET)]).await;
    e.set_server_params("sig", ALLOWED).await.unwrap();
    expect(&mut ev, &[set(send_result::SERVER_PARAMS_SET)]).await;

    // A refused URL afterwards unsets the parameters: server sends are refused again, with no
    // request made.
    e.set_server_params("sig", "http://169.254.169.254/")
        .await
        .unwrap();
    expect(&mut ev, &[set(send_result::SERVER_PARAMS_NOT_SET)]).await;
    assert_eq!(e.send_server_message("x").await.unwrap(), 1);
    expect(
        &mut ev,
        &[server_result(1, send_result::SERVER_PARAMS_NOT_SET)],
    )
    .await;
}

/// The vendor's `updateLoginToken`: after a login refused for its token, a new token logs in by
/// itself; a room token is renewed with `update_token`, and a bad one is answered -1010.
#[tokio::test]
async fn new_tokens_log_in_again_and_renew_rooms() {
    let (_server, base) = start().await;
    let (engine, mut events) = herald_client::connect(&base, APP_ID).await.unwrap();
    let mut expired = AccessToken::new(APP_ID, "", "u1", 1, now() - 100);
    expired.expire_time(now() - 10);
    engine
        .login(&expired.serialize(APP_KEY), "u1")
        .await
        .unwrap();
    assert!(matches!(
        next(&mut events).await,
        Event::LoginResult {
            error_code: -1000,
            ..
        }
    ));
    engine.update_login_token(&token("u1", "")).await.unwrap();
    assert!(matches!(
        next(&mut events).await,
        Event::LoginResult { error_code: 0, .. }
    ));
    // Logged in: a new token is kept for later and nothing is sent.
    engine.update_login_token(&token("u1", "")).await.unwrap();

    engine
        .join_room("r1", "u1", &token("u1", "r1"))
        .await
        .unwrap();
    assert!(matches!(
        next(&mut events).await,
        Event::RoomStateChanged { state: 0, .. }
    ));
    engine.update_token("r1", &token("u1", "r1")).await.unwrap();
    engine.update_token("r1", &token("u2", "r1")).await.unwrap();
    assert_eq!(
        next(&mut events).await,
        Event::RoomStateChanged {
            room_id: "r1".into(),
            uid: "u1".into(),
            state: -1010,
            extra_info: r#"{"elapsed":0,"join_type":0}"#.into(),
        }
    );
    engine.get_peer_online_status("u1").await.unwrap();
    assert_eq!(
        next(&mut events).await,
        Event::GetPeerOnlineStatus {
            peer_user_id: "u1".into(),
            status: 1
        },
        "nothing else came in between"
    );
}

/// `with_delivery_report` asks for the report and `delivery_report` reads it; without it the
/// answer is the vendor's.
#[tokio::test]
async fn the_delivery_report_names_each_recipient() {
    let (_server, base) = start_with("presence_events = false").await;
    let (_e1, mut ev1) = user(&base, "u1", &["r1"]).await;
    let plain = OpenApiClient::new(&base, AK, SK).unwrap();
    let api = plain.clone().with_delivery_report(true);
    let r = api
        .batch_send_room_unicast(
            APP_ID,
            "r1",
            "bot",
            &["u1", "u2"],
            Message::Text("m".into()),
        )
        .await
        .unwrap();
    let report = r.delivery_report().expect("a report");
    assert_eq!(report.reached().collect::<Vec<_>>(), ["u1"], "{report:?}");
    assert_eq!(report.not_in_room, ["u2"]);
    assert_eq!(report.named().count(), 2);
    assert!(matches!(
        next(&mut ev1).await,
        Event::UserMessageReceived { .. }
    ));
    let r = plain
        .send_unicast(APP_ID, "bot", "nobody", Message::Text("m".into()))
        .await
        .unwrap();
    assert_eq!(r.body["Result"], json!({"Message": "Success"}));
    assert_eq!(r.delivery_report(), None);
}

/// Where `uid` is in a report made with an ack timeout: each recipient is in exactly one list.
fn list_of(report: &DeliveryReport, uid: &str) -> &'static str {
    let acked = report.acked.as_ref().expect("an Acked list");
    let lists: Vec<&'static str> = [
        ("Acked", acked),
        ("Written", &report.written),
        ("Queued", &report.queued),
        ("NotOnline", &report.not_online),
        ("NotInRoom", &report.not_in_room),
        ("SlowConsumer", &report.slow_consumer),
        ("Unknown", &report.unknown),
    ]
    .into_iter()
    .filter(|(_, l)| l.iter().any(|u| u == uid))
    .map(|(k, _)| k)
    .collect();
    assert_eq!(lists.len(), 1, "{uid} in {lists:?}: {report:?}");
    lists[0]
}

/// The SDK acknowledges a message once the application has taken it from the event stream;
/// with auto-ack off, only `Engine::ack` does.
#[tokio::test]
async fn the_sdk_acknowledges_what_the_application_takes() {
    let (_server, base) = start_with("presence_events = false").await;
    let (_auto, mut auto_events) = user(&base, "auto", &["r1"]).await;
    let (manual, mut manual_events) =
        connect_with(&base, APP_ID, &ConnectOptions::default().auto_ack(false))
            .await
            .unwrap();
    manual.login(&token("manual", ""), "manual").await.unwrap();
    assert!(matches!(
        next(&mut manual_events).await,
        Event::LoginResult { .. }
    ));
    join(&manual, &mut manual_events, "r1", "manual").await;
    let api = OpenApiClient::new(&base, AK, SK).unwrap();
    let send = |ms: u32| {
        let api = api.clone().with_ack_timeout_ms(Some(ms));
        async move {
            let r = api
                .batch_send_room_unicast(
                    APP_ID,
                    "r1",
                    "bot",
                    &["auto", "manual"],
                    Message::Text("m".into()),
                )
                .await
                .unwrap();
            r.delivery_report().expect("a report")
        }
    };

    // Not taken from the stream yet: not acknowledged.
    let report = send(200).await;
    assert_ne!(list_of(&report, "auto"), "Acked");
    assert_ne!(list_of(&report, "manual"), "Acked");
    // Taking it acknowledges it (and the one before it). The manual engine keeps this call
    // waiting its whole timeout.
    let pending = tokio::spawn(send(2000));
    for _ in 0..2 {
        assert!(next(&mut auto_events).await.received_msgid().is_some());
    }
    let report = pending.await.unwrap();
    assert_eq!(list_of(&report, "auto"), "Acked");
    assert_ne!(list_of(&report, "manual"), "Acked", "auto-ack is off");
    // By hand: the manual engine acknowledges what it has processed.
    let pending = tokio::spawn(send(5000));
    let mut last = 0;
    for _ in 0..3 {
        last = next(&mut manual_events).await.received_msgid().unwrap();
    }
    assert_eq!(last, 3);
    manual.ack(last).await.unwrap();
    assert!(next(&mut auto_events).await.received_msgid().is_some());
    let report = pending.await.unwrap();
    assert_eq!(
        report.acked,
        Some(vec!["auto".to_owned(), "manual".to_owned()])
    );
}

/// Under load: 600 members, each an SDK connection reading its stream in its own task, get
/// rounds of concurrent batch sends and broadcasts that wait for acks. Every call reports every
/// member acked, and every member received every message, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_recipient_of_a_600_member_batch_acks() {
    const MEMBERS: usize = 600;
    const ROUNDS: usize = 25;
    const CALLS_PER_ROUND: usize = 4;
    let (_server, base) = start_with("presence_events = false\nqps_limit = 1000").await;
    let uids: Vec<String> = (0..MEMBERS).map(|i| format!("m{i:03}")).collect();
    let mut readers = Vec::new();
    for uid in &uids {
        let (engine, mut events) = connect(&base, APP_ID).await.unwrap();
        join(&engine, &mut events, "big", uid).await;
        // Counts the messages it takes, checking their msgids follow one another.
        readers.push(tokio::spawn(async move {
            let mut taken = 0;
            while let Some(e) = events.recv().await {
                if let Some(msgid) = e.received_msgid() {
                    taken += 1;
                    assert_eq!(msgid, taken);
                    if taken == (ROUNDS * CALLS_PER_ROUND) as u64 {
                        break;
                    }
                }
            }
            // Kept open until the end: a connection closed right after taking its last message
            // may close before that message's ack is written.
            (taken, engine)
        }));
    }
    let api = OpenApiClient::new(&base, AK, SK)
        .unwrap()
        .with_ack_timeout_ms(Some(5000));
    for round in 0..ROUNDS {
        let calls = (0..CALLS_PER_ROUND).map(|i| {
            let (api, uids) = (api.clone(), &uids);
            async move {
                let text = Message::Text(format!("round {round} call {i}"));
                let r = if i % 2 == 0 {
                    api.batch_send_room_unicast(APP_ID, "big", "bot", uids, text)
                        .await
                } else {
                    api.send_broadcast(APP_ID, "big", "bot", text).await
                };
                r.unwrap().delivery_report().expect("a report")
            }
        });
        for report in futures_util::future::join_all(calls).await {
            let acked = report.acked.as_ref().expect("an Acked list");
            assert_eq!(acked.len(), MEMBERS, "round {round}: {report:?}");
            assert_eq!(report.named().count(), MEMBERS);
            assert_eq!(acked, &uids);
        }
    }
    for r in readers {
        assert_eq!(r.await.unwrap().0, (ROUNDS * CALLS_PER_ROUND) as u64);
    }
}
