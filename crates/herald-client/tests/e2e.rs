//! The SDK against the real server: a `herald_server::Server` on 127.0.0.1:0, real WebSocket
//! connections through [`connect`], real signed HTTP calls through [`OpenApiClient`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_client::{
    connect, CallError, ConnectError, Engine, Event, EventStream, Message, OpenApiClient,
    OpenApiError,
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
    let config = Config::from_toml(&format!(
        r#"
listen = "127.0.0.1:0"
[[apps]]
app_id = "{APP_ID}"
app_key = "{APP_KEY}"
access_keys = [{{ ak = "{AK}", sk = "{SK}" }}]
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
        engine
            .join_room(room, uid, &token(uid, room))
            .await
            .unwrap();
        match next(&mut events).await {
            Event::RoomStateChanged {
                room_id,
                uid: u,
                state,
                extra_info,
            } => {
                assert_eq!((room_id.as_str(), u.as_str(), state), (*room, uid, 0));
                let info: serde_json::Value = serde_json::from_str(&extra_info).unwrap();
                assert!(info["elapsed"].is_u64(), "{extra_info}");
                assert_eq!(info["join_type"], 0, "{extra_info}");
            }
            other => panic!("expected onRoomStateChanged, got {other:?}"),
        }
    }
    (engine, events)
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
    let (_server, base) = start().await;
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
