//! The hub through its public API, with a recording outbox in place of a socket.

use std::sync::Arc;

use bytes::BytesMut;
use herald_core::apps::{AppSpec, Registry};
use herald_core::hub::{Hub, Offer, Outbox, Outcome, SendError, SessionId, Summary};
use herald_core::time::Timestamp;
use herald_proto::client::{room_state, Delivery, Event, MessageKind, ReceivedMessage};
use herald_proto::ids::{AppId, RoomId, UserId};
use herald_proto::openapi::{SendRequest, Target};
use herald_proto::token::{AccessToken, Privilege};
use parking_lot::Mutex;

const APP: &str = "65a1b2c3d4e5f60718293a4b";
const KEY: &str = "0123456789abcdef0123456789abcdef";
const OTHER_APP: &str = "000000000000000000000000";
const NOW: u64 = 1_700_000_000;

fn now() -> Timestamp {
    Timestamp::from_secs(NOW)
}

#[derive(Default)]
struct Recorder {
    frames: Mutex<Vec<Frame>>,
    capacity: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
enum Frame {
    Event(Event),
    Message(ReceivedMessage),
}

impl Outbox for Recorder {
    fn message(&self, d: &Delivery, _accepted: Timestamp) -> Offer {
        let mut frames = self.frames.lock();
        if self.capacity.is_some_and(|c| frames.len() >= c) {
            return Offer::Overflow;
        }
        let msgid = frames
            .iter()
            .filter(|f| matches!(f, Frame::Message(_)))
            .count() as u64
            + 1;
        let mut buf = BytesMut::new();
        d.put_prefix(msgid, &mut buf);
        buf.extend_from_slice(d.body());
        frames.push(Frame::Message(
            ReceivedMessage::decode(buf.freeze()).unwrap(),
        ));
        Offer::Queued
    }
    fn event(&self, e: &Event) -> Offer {
        self.frames.lock().push(Frame::Event(e.clone()));
        Offer::Queued
    }
}

impl Recorder {
    fn take(&self) -> Vec<Frame> {
        std::mem::take(&mut *self.frames.lock())
    }
}

fn hub(qps: u32) -> Hub {
    let spec = |id: &str| AppSpec {
        app_id: AppId::new(id).unwrap(),
        app_key: KEY.into(),
        qps_limit: qps,
        access_keys: vec![],
    };
    Hub::new(&Registry::new(vec![spec(APP), spec(OTHER_APP)]).unwrap())
}

fn token(app: &str, room: &str, uid: &str, expire_at: u32) -> String {
    let mut t = AccessToken::new(app, room, uid, 7, NOW as u32);
    t.expire_time(expire_at);
    t.add_privilege(Privilege::SubscribeStream, 0);
    t.serialize(KEY)
}

fn connect(hub: &Hub) -> (SessionId, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let id = hub.connect(APP, rec.clone()).unwrap();
    (id, rec)
}

fn login(hub: &Hub, uid: &str) -> (SessionId, Arc<Recorder>) {
    let (id, rec) = connect(hub);
    assert_eq!(hub.login(APP, id, uid, &token(APP, "", uid, 0), now()), 0);
    rec.take();
    (id, rec)
}

fn join(hub: &Hub, room: &str, uid: &str) -> (SessionId, Arc<Recorder>) {
    let (id, rec) = connect(hub);
    assert_eq!(
        hub.join_room(APP, id, room, uid, &token(APP, room, uid, 0), now()),
        0
    );
    rec.take();
    (id, rec)
}

fn req(target: Target, msg: &str) -> SendRequest {
    SendRequest {
        app_id: AppId::new(APP).unwrap(),
        from: UserId::new("bot").unwrap(),
        target,
        binary: false,
        payload: bytes::Bytes::copy_from_slice(msg.as_bytes()),
    }
}

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn room(s: &str) -> RoomId {
    RoomId::new(s).unwrap()
}

fn messages(rec: &Recorder) -> Vec<ReceivedMessage> {
    rec.take()
        .into_iter()
        .map(|f| match f {
            Frame::Message(m) => m,
            other => panic!("expected a message, got {other:?}"),
        })
        .collect()
}

#[test]
fn login_results_carry_the_vendor_codes() {
    let hub = hub(500);
    let (id, rec) = connect(&hub);
    let cases = [
        ("u 1", token(APP, "", "u 1", 0), -1002),
        ("u1", "garbage".to_owned(), -1000),
        ("u1", token(APP, "", "u2", 0), -1000), // another user's token
        ("u1", token(APP, "r1", "u1", 0), -1000), // a room token
        ("u1", token(OTHER_APP, "", "u1", 0), -1000), // another app's token
        ("u1", token(APP, "", "u1", NOW as u32 - 1), -1000), // expired
    ];
    for (uid, tok, code) in cases {
        assert_eq!(hub.login(APP, id, uid, &tok, now()), code, "{uid} {tok}");
    }
    // A forged token: right shape, signed with the wrong key.
    let mut t = AccessToken::new(APP, "", "u1", 1, NOW as u32);
    t.expire_time(0);
    assert_eq!(
        hub.login(APP, id, "u1", &t.serialize("wrong-key"), now()),
        -1000
    );
    assert_eq!(
        hub.login(APP, id, "u1", &token(APP, "", "u1", NOW as u32 + 10), now()),
        0
    );
    // Logging in twice on one connection is refused; the first login stands.
    assert_eq!(
        hub.login(APP, id, "u2", &token(APP, "", "u2", 0), now()),
        -1001
    );
    let events = rec.take();
    assert_eq!(events.len(), 9);
    assert_eq!(
        events[7],
        Frame::Event(Event::LoginResult {
            uid: "u1".into(),
            error_code: 0
        })
    );
    assert_eq!(hub.stats().logins, 1);
}

#[test]
fn duplicate_login_ends_the_older_session() {
    let hub = hub(500);
    let (_old, old_rec) = login(&hub, "u1");
    let (_new, new_rec) = login(&hub, "u1");
    assert_eq!(
        old_rec.take(),
        vec![Frame::Event(Event::Logout { reason: 1 })]
    );
    let s = hub
        .send(&req(Target::User(uid("u1")), "hi"), now(), |_, _| {})
        .unwrap();
    assert_eq!(s.queued, 1);
    assert!(old_rec.take().is_empty());
    assert_eq!(messages(&new_rec)[0].payload, "hi");
}

#[test]
fn unicast_reaches_only_its_user_with_increasing_msgids() {
    let hub = hub(500);
    let (_a, a) = login(&hub, "a");
    let (_b, b) = login(&hub, "b");
    for i in 0..3 {
        hub.send(
            &req(Target::User(uid("a")), &format!("m{i}")),
            now(),
            |_, _| {},
        )
        .unwrap();
    }
    let got = messages(&a);
    assert_eq!(got.iter().map(|m| m.msgid).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(got
        .iter()
        .all(|m| m.kind == MessageKind::OutsideRoom && m.uid == "bot"));
    assert!(b.take().is_empty());
    let s = hub
        .send(&req(Target::User(uid("nobody")), "x"), now(), |_, _| {})
        .unwrap();
    assert_eq!(
        s,
        Summary {
            not_online: 1,
            ..Summary::default()
        }
    );
}

#[test]
fn room_messages_reach_members_only() {
    let hub = hub(500);
    let (_a, a) = join(&hub, "r1", "a");
    let (_b, b) = join(&hub, "r1", "b");
    let (_c, c) = join(&hub, "r2", "c");
    let (_d, d) = login(&hub, "d");

    let mut seen = Vec::new();
    let s = hub
        .send(
            &req(
                Target::RoomUsers(room("r1"), vec![uid("a"), uid("c"), uid("d")]),
                "batch",
            ),
            now(),
            |u, o| seen.push((u.to_string(), o)),
        )
        .unwrap();
    assert_eq!(
        s,
        Summary {
            queued: 1,
            not_in_room: 2,
            ..Summary::default()
        }
    );
    assert_eq!(seen[0], ("a".into(), Outcome::Queued));
    let m = &messages(&a)[0];
    assert_eq!(
        (m.kind, m.room_id.as_deref()),
        (MessageKind::RoomUser, Some("r1"))
    );
    assert!(b.take().is_empty() && c.take().is_empty() && d.take().is_empty());

    let s = hub
        .send(&req(Target::Room(room("r1")), "all"), now(), |_, _| {})
        .unwrap();
    assert_eq!(s.queued, 2);
    assert_eq!(messages(&a)[0].kind, MessageKind::RoomBroadcast);
    assert_eq!(messages(&b)[0].payload, "all");
    assert!(c.take().is_empty() && d.take().is_empty());
}

#[test]
fn from_may_not_be_an_online_user() {
    let hub = hub(500);
    let (_bot, _) = login(&hub, "bot");
    let err = hub.send(&req(Target::User(uid("x")), "m"), now(), |_, _| {});
    assert_eq!(err, Err(SendError::FromIsOnlineUser));
    // Outside the room, "bot" being logged in does not matter to room actions...
    assert!(hub
        .send(&req(Target::Room(room("r1")), "m"), now(), |_, _| {})
        .is_ok());
    // ...but a member of the room named "bot" does.
    join(&hub, "r1", "bot");
    let err = hub.send(&req(Target::Room(room("r1")), "m"), now(), |_, _| {});
    assert_eq!(err, Err(SendError::FromIsOnlineUser));
    let err = hub.send(
        &req(Target::RoomUsers(room("r1"), vec![uid("y")]), "m"),
        now(),
        |_, _| {},
    );
    assert_eq!(err, Err(SendError::FromIsOnlineUser));
}

#[test]
fn join_failures_and_duplicate_joins() {
    let hub = hub(500);
    let (id, rec) = connect(&hub);
    assert_eq!(
        hub.join_room(APP, id, "r!", "u1", &token(APP, "r!", "u1", 0), now()),
        -1007
    );
    assert_eq!(
        hub.join_room(APP, id, "r1", "u1", &token(APP, "r2", "u1", 0), now()),
        -1000
    );
    assert_eq!(
        hub.join_room(APP, id, "r1", "u1", &token(APP, "", "u1", 0), now()),
        -1000
    );
    assert_eq!(
        hub.join_room(
            APP,
            id,
            "r1",
            "u1",
            &token(APP, "r1", "u1", NOW as u32 - 5),
            now()
        ),
        room_state::TOKEN_EXPIRED
    );
    assert_eq!(
        hub.join_room(APP, id, "r1", "u1", &token(APP, "*", "u1", 0), now()),
        0
    );
    assert_eq!(
        hub.join_room(APP, id, "r1", "u1", &token(APP, "r1", "u1", 0), now()),
        -1013
    );
    assert_eq!(rec.take().len(), 6);

    let (_other, other) = join(&hub, "r1", "u1");
    assert_eq!(
        rec.take(),
        vec![Frame::Event(Event::RoomStateChanged {
            room_id: "r1".into(),
            uid: "u1".into(),
            state: -1004
        })]
    );
    hub.send(&req(Target::Room(room("r1")), "m"), now(), |_, _| {})
        .unwrap();
    assert!(rec.take().is_empty());
    assert_eq!(messages(&other).len(), 1);
    assert_eq!(hub.stats().room_members, 1);
}

#[test]
fn leave_logout_and_disconnect_clean_up() {
    let hub = hub(500);
    let (id, rec) = login(&hub, "u1");
    assert_eq!(
        hub.join_room(APP, id, "r1", "u1", &token(APP, "r1", "u1", 0), now()),
        0
    );
    assert_eq!(
        hub.join_room(APP, id, "r2", "u9", &token(APP, "r2", "u9", 0), now()),
        0
    );
    hub.leave_room(APP, id, "r1");
    hub.logout(APP, id);
    let events = rec.take();
    assert_eq!(
        events[2],
        Frame::Event(Event::LeaveRoom {
            room_id: "r1".into()
        })
    );
    assert_eq!(events[3], Frame::Event(Event::Logout { reason: 0 }));
    let st = hub.stats();
    assert_eq!(
        (st.sessions, st.logins, st.rooms, st.room_members),
        (1, 0, 1, 1)
    );
    hub.disconnect(APP, id);
    assert_eq!(hub.stats(), Default::default());
    // A disconnected session's old login entry does not remove a newer login of the same user.
    let (old, _) = login(&hub, "u2");
    let (_new, _) = login(&hub, "u2");
    hub.disconnect(APP, old);
    assert_eq!(hub.stats().logins, 1);
}

#[test]
fn the_rate_limit_is_per_app_and_exact() {
    let hub = hub(5);
    let r = req(Target::User(uid("x")), "m");
    for _ in 0..5 {
        assert!(hub.send(&r, now(), |_, _| {}).is_ok());
    }
    assert!(matches!(
        hub.send(&r, now(), |_, _| {}),
        Err(SendError::RateLimited(_))
    ));
    let mut other = r.clone();
    other.app_id = AppId::new(OTHER_APP).unwrap();
    assert!(hub.send(&other, now(), |_, _| {}).is_ok());
    assert!(hub.send(&r, now().add_micros(1_000_000), |_, _| {}).is_ok());
    let mut unknown = r;
    unknown.app_id = AppId::new("nope").unwrap();
    assert_eq!(
        hub.send(&unknown, now(), |_, _| {}),
        Err(SendError::UnknownApp)
    );
}

#[test]
fn a_full_outbox_is_reported_as_a_slow_consumer() {
    let hub = hub(500);
    let slow = Arc::new(Recorder {
        capacity: Some(1),
        ..Recorder::default()
    });
    let id = hub.connect(APP, slow.clone()).unwrap();
    assert_eq!(hub.login(APP, id, "s", &token(APP, "", "s", 0), now()), 0);
    let (_f, fast) = login(&hub, "f");
    let s = hub
        .send(&req(Target::User(uid("s")), "m"), now(), |_, _| {})
        .unwrap();
    assert_eq!(s.slow_consumer, 1);
    let s = hub
        .send(&req(Target::User(uid("f")), "m"), now(), |_, _| {})
        .unwrap();
    assert_eq!(s.queued, 1);
    assert_eq!(messages(&fast).len(), 1);
}
