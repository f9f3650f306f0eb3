//! The hub through its public API, with a recording outbox in place of a socket.

use std::sync::Arc;

use bytes::BytesMut;
use herald_core::apps::{AppSpec, Registry};
use herald_core::hub::{ClientSent, Hub, Offer, Outbox, Outcome, SendError, SessionId, Summary};
use herald_core::time::Timestamp;
use herald_proto::client::{
    room_state, Delivery, Event, MessageKind, ReceivedMessage, SendFrame, SendOp, StreamPos,
};
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
    fn message(&self, d: &Delivery, pos: Option<StreamPos>, _accepted: Timestamp) -> Offer {
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
        d.put_prefix(msgid, pos, &mut buf);
        buf.extend_from_slice(d.body());
        frames.push(Frame::Message(
            ReceivedMessage::decode(buf.freeze()).unwrap(),
        ));
        Offer::Queued(msgid)
    }
    fn event(&self, e: &Event) -> Offer {
        self.frames.lock().push(Frame::Event(e.clone()));
        Offer::Queued(0)
    }
}

impl Recorder {
    fn take(&self) -> Vec<Frame> {
        std::mem::take(&mut *self.frames.lock())
    }
}

fn spec(id: &str, qps: u32, presence: bool) -> AppSpec {
    let mut spec = AppSpec::new(AppId::new(id).unwrap(), KEY);
    spec.qps_limit = qps;
    spec.presence_events = presence;
    spec.client_send_rate = 5;
    spec.server_message_urls = vec!["http://127.0.0.1:9/biz/".into()];
    spec
}

/// A hub whose apps send no presence events, so tests of routing see only what they route.
fn hub(qps: u32) -> Hub {
    Hub::new(&Registry::new(vec![spec(APP, qps, false), spec(OTHER_APP, qps, false)]).unwrap())
}

fn presence_hub(hooks: Arc<dyn herald_core::hub::Hooks>) -> Hub {
    Hub::with_hooks(&Registry::new(vec![spec(APP, 500, true)]).unwrap(), hooks)
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
            error_code: 0,
            stream: None
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
        .send(&req(Target::User(uid("u1")), "hi"), now(), |_, _, _| {})
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
            |_, _, _| {},
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
        .send(&req(Target::User(uid("nobody")), "x"), now(), |_, _, _| {})
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
            |u, o, receipt| seen.push((u.to_string(), o, receipt.map(|r| r.msgid))),
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
    // Each outcome, with the msgid the recipient's connection gave a queued message.
    assert_eq!(
        seen,
        [
            ("a".into(), Outcome::Queued, Some(1)),
            ("c".into(), Outcome::NotInRoom, None),
            ("d".into(), Outcome::NotInRoom, None)
        ]
    );
    let m = &messages(&a)[0];
    assert_eq!(
        (m.kind, m.room_id.as_deref()),
        (MessageKind::RoomUser, Some("r1"))
    );
    assert!(b.take().is_empty() && c.take().is_empty() && d.take().is_empty());

    let s = hub
        .send(&req(Target::Room(room("r1")), "all"), now(), |_, _, _| {})
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
    let err = hub.send(&req(Target::User(uid("x")), "m"), now(), |_, _, _| {});
    assert_eq!(err, Err(SendError::FromIsOnlineUser));
    // Outside the room, "bot" being logged in does not matter to room actions...
    assert!(hub
        .send(&req(Target::Room(room("r1")), "m"), now(), |_, _, _| {})
        .is_ok());
    // ...but a member of the room named "bot" does.
    join(&hub, "r1", "bot");
    let err = hub.send(&req(Target::Room(room("r1")), "m"), now(), |_, _, _| {});
    assert_eq!(err, Err(SendError::FromIsOnlineUser));
    let err = hub.send(
        &req(Target::RoomUsers(room("r1"), vec![uid("y")]), "m"),
        now(),
        |_, _, _| {},
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
            state: -1004,
            stream: None
        })]
    );
    hub.send(&req(Target::Room(room("r1")), "m"), now(), |_, _, _| {})
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
    hub.leave_room(APP, id, "r1", now());
    hub.logout(APP, id, now());
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
    hub.disconnect(APP, id, now());
    assert_eq!(hub.stats(), Default::default());
    // A disconnected session's old login entry does not remove a newer login of the same user.
    let (old, _) = login(&hub, "u2");
    let (_new, _) = login(&hub, "u2");
    hub.disconnect(APP, old, now());
    assert_eq!(hub.stats().logins, 1);
}

#[test]
fn the_rate_limit_is_per_app_and_exact() {
    let hub = hub(5);
    let r = req(Target::User(uid("x")), "m");
    for _ in 0..5 {
        assert!(hub.send(&r, now(), |_, _, _| {}).is_ok());
    }
    assert!(matches!(
        hub.send(&r, now(), |_, _, _| {}),
        Err(SendError::RateLimited(_))
    ));
    let mut other = r.clone();
    other.app_id = AppId::new(OTHER_APP).unwrap();
    assert!(hub.send(&other, now(), |_, _, _| {}).is_ok());
    assert!(hub
        .send(&r, now().add_micros(1_000_000), |_, _, _| {})
        .is_ok());
    let mut unknown = r;
    unknown.app_id = AppId::new("nope").unwrap();
    assert_eq!(
        hub.send(&unknown, now(), |_, _, _| {}),
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
        .send(&req(Target::User(uid("s")), "m"), now(), |_, _, _| {})
        .unwrap();
    assert_eq!(s.slow_consumer, 1);
    let s = hub
        .send(&req(Target::User(uid("f")), "m"), now(), |_, _, _| {})
        .unwrap();
    assert_eq!(s.queued, 1);
    assert_eq!(messages(&fast).len(), 1);
}

fn events(rec: &Recorder) -> Vec<Event> {
    rec.take()
        .into_iter()
        .map(|f| match f {
            Frame::Event(e) => e,
            other => panic!("expected an event, got {other:?}"),
        })
        .collect()
}

fn frame(
    op: SendOp,
    msgid: u64,
    to: &str,
    room: &str,
    binary: bool,
    payload: &bytes::Bytes,
) -> SendFrame {
    SendFrame {
        op,
        msgid,
        to: to.into(),
        room_id: room.into(),
        binary,
        payload: payload.clone(),
    }
}

fn answered(sent: ClientSent) -> i32 {
    match sent {
        ClientSent::Answered(code) => code,
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn server_send(hub: &Hub, s: SessionId, msgid: u64, len: usize) -> ClientSent {
    let payload = bytes::Bytes::from(vec![b'x'; len]);
    hub.client_send(
        APP,
        s,
        &frame(SendOp::Server, msgid, "", "", false, &payload),
        now(),
    )
}

fn bytes(s: &str) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(s.as_bytes())
}

#[test]
fn client_sends_outside_room_carry_every_result_code() {
    use herald_proto::client::send_result::*;
    let hub = hub(500);
    let (anon, anon_rec) = connect(&hub);
    let (a, a_rec) = login(&hub, "a");
    let (_b, b_rec) = login(&hub, "b");
    let msg = bytes("hi");
    let send = |s, to: &str, p: &bytes::Bytes, t: Timestamp| {
        answered(hub.client_send(
            APP,
            s,
            &frame(SendOp::UserOutsideRoom, 9, to, "", false, p),
            t,
        ))
    };

    assert_eq!(send(anon, "b", &msg, now()), NOT_LOGIN);
    assert_eq!(
        events(&anon_rec),
        vec![Event::UserMessageSendResultOutsideRoom {
            msgid: 9,
            error: NOT_LOGIN
        }]
    );
    assert_eq!(send(a, "", &msg, now()), EMPTY_USER);
    assert_eq!(send(a, "b c", &msg, now()), EMPTY_USER);
    assert_eq!(send(a, "nobody", &msg, now()), NO_RECEIVER);
    let big = bytes::Bytes::from(vec![b'x'; 64 * 1024 + 1]);
    assert_eq!(send(a, "b", &big, now()), EXCEED_MAX_LENGTH);
    // The rate (5/s in these tests) counts sends that got as far as the recipient lookup.
    assert_eq!(send(a, "b", &msg, now()), SUCCESS);
    for _ in 0..3 {
        assert_eq!(send(a, "b", &msg, now()), SUCCESS);
    }
    assert_eq!(send(a, "b", &msg, now()), EXCEED_QPS);
    assert_eq!(send(a, "b", &msg, now().add_micros(1_000_000)), SUCCESS);
    let got = messages(&b_rec);
    assert_eq!(got.len(), 5);
    assert_eq!(
        (got[0].kind, got[0].uid.as_str(), &got[0].payload[..]),
        (MessageKind::OutsideRoom, "a", &b"hi"[..])
    );
    assert_eq!(events(&a_rec).len(), 10);
}

#[test]
fn client_sends_in_rooms_reach_members_only() {
    use herald_proto::client::{room_send_result, send_result};
    let hub = hub(500);
    let (a, a_rec) = join(&hub, "r1", "a");
    let (_b, b_rec) = join(&hub, "r1", "b");
    let (_c, c_rec) = join(&hub, "r2", "c");
    let msg = bytes("yo");
    assert_eq!(
        answered(hub.client_send(
            APP,
            a,
            &frame(SendOp::UserInRoom, 1, "b", "r1", true, &msg),
            now()
        )),
        send_result::SUCCESS
    );
    assert_eq!(
        answered(hub.client_send(
            APP,
            a,
            &frame(SendOp::UserInRoom, 2, "c", "r1", true, &msg),
            now()
        )),
        send_result::NO_RECEIVER
    );
    assert_eq!(
        answered(hub.client_send(
            APP,
            a,
            &frame(SendOp::UserInRoom, 3, "c", "r2", true, &msg),
            now()
        )),
        send_result::NOT_JOIN
    );
    assert_eq!(
        answered(hub.client_send(
            APP,
            a,
            &frame(SendOp::Room, 4, "", "r1", false, &msg),
            now()
        )),
        room_send_result::SUCCESS
    );
    assert_eq!(
        answered(hub.client_send(
            APP,
            a,
            &frame(SendOp::Room, 5, "", "r2", false, &msg),
            now()
        )),
        room_send_result::NOT_JOIN
    );
    let got = messages(&b_rec);
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].kind, got[0].binary, got[0].room_id.as_deref()),
        (MessageKind::RoomUser, true, Some("r1"))
    );
    assert_eq!(
        (got[1].kind, got[1].uid.as_str()),
        (MessageKind::RoomBroadcast, "a")
    );
    assert!(c_rec.take().is_empty());
    // The sender does not receive its own room message; it gets the five results.
    assert_eq!(
        events(&a_rec)[3],
        Event::RoomMessageSendResult {
            room_id: "r1".into(),
            msgid: 4,
            error: 200
        }
    );
}

#[derive(Default)]
struct HookLog(Mutex<Vec<String>>);

impl herald_core::hub::Hooks for HookLog {
    fn user_joined(&self, _: &AppId, room: &RoomId, uid: &UserId, _: Timestamp) {
        self.0.lock().push(format!("join {room} {uid}"));
    }
    fn user_left(
        &self,
        _: &AppId,
        room: &RoomId,
        uid: &UserId,
        why: herald_core::hub::Departure,
        _: Timestamp,
        _: Timestamp,
    ) {
        self.0.lock().push(format!("leave {room} {uid} {why:?}"));
    }
    fn user_login(&self, _: &AppId, uid: &UserId, _: Timestamp) {
        self.0.lock().push(format!("login {uid}"));
    }
    fn user_logout(
        &self,
        _: &AppId,
        uid: &UserId,
        why: herald_core::hub::Departure,
        _: Timestamp,
        _: Timestamp,
    ) {
        self.0.lock().push(format!("logout {uid} {why:?}"));
    }
}

#[test]
fn members_see_each_other_come_and_go_and_hooks_hear_it() {
    let log = Arc::new(HookLog::default());
    let hub = presence_hub(log.clone());
    let (a, a_rec) = connect(&hub);
    assert_eq!(
        hub.join_room(APP, a, "r", "a", &token(APP, "r", "a", 0), now()),
        0
    );
    let (b, b_rec) = connect(&hub);
    assert_eq!(
        hub.join_room(APP, b, "r", "b", &token(APP, "r", "b", 0), now()),
        0
    );
    let joined = |uid: &str| Event::UserJoined {
        room_id: "r".into(),
        uid: uid.into(),
    };
    let state = |uid: &str, state| Event::RoomStateChanged {
        room_id: "r".into(),
        uid: uid.into(),
        state,
        stream: None,
    };
    assert_eq!(events(&a_rec), vec![state("a", 0), joined("b")]);
    assert_eq!(events(&b_rec), vec![state("b", 0), joined("a")]);

    // A duplicate join of "b" elsewhere: "a" sees nothing, the old "b" is told.
    let (b2, b2_rec) = connect(&hub);
    assert_eq!(
        hub.join_room(APP, b2, "r", "b", &token(APP, "r", "b", 0), now()),
        0
    );
    assert_eq!(events(&b_rec), vec![state("b", -1004)]);
    assert_eq!(events(&b2_rec), vec![state("b", 0), joined("a")]);
    assert!(a_rec.take().is_empty());
    hub.disconnect(APP, b, now()); // the replaced connection's end changes nothing
    assert!(a_rec.take().is_empty());

    let leave = |uid: &str, reason| Event::UserLeave {
        room_id: "r".into(),
        uid: uid.into(),
        reason,
    };
    assert!(hub.kick(APP, &room("r"), &uid("b"), now()));
    assert_eq!(events(&b2_rec), vec![state("b", -1006)]);
    assert_eq!(events(&a_rec), vec![leave("b", 3)]);
    assert!(!hub.kick(APP, &room("r"), &uid("b"), now()));
    assert_eq!(hub.room_users(APP, &room("r")), Some(vec![uid("a")]));

    let (c, c_rec) = connect(&hub);
    assert_eq!(
        hub.join_room(APP, c, "r", "c", &token(APP, "r", "c", 0), now()),
        0
    );
    c_rec.take();
    a_rec.take();
    hub.leave_room(APP, a, "r", now());
    assert_eq!(events(&c_rec), vec![leave("a", 0)]);
    hub.disconnect(APP, c, now());
    assert_eq!(hub.room_users(APP, &room("r")), None);

    assert_eq!(hub.login(APP, a, "a", &token(APP, "", "a", 0), now()), 0);
    let (a2, _) = connect(&hub);
    assert_eq!(hub.login(APP, a2, "a", &token(APP, "", "a", 0), now()), 0);
    hub.logout(APP, a2, now());
    assert_eq!(
        *log.0.lock(),
        [
            "join r a",
            "join r b",
            "leave r b Kicked",
            "join r c",
            "leave r a Left",
            "leave r c ConnectionLost",
            "login a",
            "logout a Left",
        ]
    );
}

#[test]
fn peer_status_and_server_params() {
    use herald_proto::client::send_result::*;
    let hub = hub(500);
    let (a, a_rec) = connect(&hub);
    hub.get_peer_online_status(APP, a, "b", false);
    let (_b, _) = login(&hub, "b");
    hub.get_peer_online_status(APP, a, "b", false);
    assert_eq!(
        events(&a_rec),
        vec![
            Event::GetPeerOnlineStatus {
                peer_user_id: "b".into(),
                status: 0
            },
            Event::GetPeerOnlineStatus {
                peer_user_id: "b".into(),
                status: 1
            },
        ]
    );
    assert_eq!(
        hub.set_server_params(APP, a, "sig", "http://127.0.0.1:9/biz/x"),
        NOT_LOGIN
    );
    assert_eq!(server_send(&hub, a, 1, 2), ClientSent::Answered(NOT_LOGIN));
    assert_eq!(hub.login(APP, a, "a", &token(APP, "", "a", 0), now()), 0);
    assert_eq!(
        server_send(&hub, a, 2, 2),
        ClientSent::Answered(SERVER_PARAMS_NOT_SET)
    );
    assert_eq!(
        hub.set_server_params(APP, a, "sig", "http://127.0.0.1:9/other"),
        SERVER_PARAMS_NOT_SET
    );
    assert_eq!(
        hub.set_server_params(APP, a, "", "http://127.0.0.1:9/biz/x"),
        SERVER_PARAMS_NOT_SET
    );
    assert_eq!(
        hub.set_server_params(APP, a, "sig", "http://127.0.0.1:9/biz/x"),
        200
    );
    assert_eq!(
        server_send(&hub, a, 3, 64 * 1024 + 1),
        ClientSent::Answered(EXCEED_MAX_LENGTH)
    );
    let ClientSent::Upstream(params) = server_send(&hub, a, 4, 2) else {
        panic!("a valid server message is handed to the edge");
    };
    assert_eq!(
        (params.url.as_str(), params.signature.as_str()),
        ("http://127.0.0.1:9/biz/x", "sig")
    );
    let result = |msgid, error| Event::ServerMessageSendResult {
        msgid,
        error,
        message: String::new(),
    };
    let got = events(&a_rec);
    assert_eq!(got[0], Event::ServerParamsSetResult { error: NOT_LOGIN });
    assert_eq!(got[1], result(1, NOT_LOGIN));
    assert_eq!(got[3], result(2, SERVER_PARAMS_NOT_SET));
    assert_eq!(got[7], result(3, EXCEED_MAX_LENGTH));
    assert_eq!(
        got.len(),
        8,
        "a prepared message is answered by the edge, not the hub"
    );
    // Logging out forgets the parameters.
    hub.logout(APP, a, now());
    assert_eq!(hub.login(APP, a, "a", &token(APP, "", "a", 0), now()), 0);
    assert_eq!(
        server_send(&hub, a, 5, 2),
        ClientSent::Answered(SERVER_PARAMS_NOT_SET)
    );
}

#[test]
fn room_tokens_warn_renew_and_expire() {
    let log = Arc::new(HookLog::default());
    let hub = presence_hub(log.clone());
    let (a, a_rec) = connect(&hub);
    let soon = NOW as u32 + 20;
    assert_eq!(
        hub.join_room(APP, a, "r", "a", &token(APP, "r", "a", soon), now()),
        0
    );
    let (b, b_rec) = connect(&hub);
    assert_eq!(
        hub.join_room(APP, b, "r", "b", &token(APP, "r", "b", 0), now()),
        0
    );
    a_rec.take();
    b_rec.take();
    // 20 s left: within the 30 s warning, so the deadline is now and the warning comes once.
    assert_eq!(hub.token_deadline(APP, a), Some(u64::from(soon) - 30));
    assert_eq!(
        hub.token_deadline(APP, b),
        None,
        "a token that never expires needs no timer"
    );
    hub.expire_tokens(APP, a, now());
    hub.expire_tokens(APP, a, now());
    assert_eq!(
        events(&a_rec),
        vec![Event::TokenWillExpire {
            room_id: "r".into()
        }]
    );
    assert_eq!(hub.token_deadline(APP, a), Some(u64::from(soon) + 1));

    // A bad renewal changes nothing; a good one resets the clock and the warning.
    hub.update_room_token(
        APP,
        a,
        "r",
        &token(APP, "r", "someone", NOW as u32 + 3600),
        now(),
    );
    hub.update_room_token(APP, a, "elsewhere", &token(APP, "elsewhere", "a", 0), now());
    let bad = |uid: &str, room: &str| Event::RoomStateChanged {
        room_id: room.into(),
        uid: uid.into(),
        state: -1010,
        stream: None,
    };
    assert_eq!(events(&a_rec), vec![bad("a", "r"), bad("", "elsewhere")]);
    let later = NOW as u32 + 3600;
    hub.update_room_token(APP, a, "r", &token(APP, "r", "a", later), now());
    assert!(a_rec.take().is_empty());
    assert_eq!(hub.token_deadline(APP, a), Some(u64::from(later) - 30));

    // Unrenewed, the membership ends one second after the expiry.
    let at = |secs: u32| Timestamp::from_secs(u64::from(secs));
    hub.expire_tokens(APP, a, at(later - 30));
    assert_eq!(
        events(&a_rec),
        vec![Event::TokenWillExpire {
            room_id: "r".into()
        }]
    );
    hub.expire_tokens(APP, a, at(later));
    assert!(a_rec.take().is_empty());
    hub.expire_tokens(APP, a, at(later + 1));
    assert_eq!(
        events(&a_rec),
        vec![Event::RoomStateChanged {
            room_id: "r".into(),
            uid: "a".into(),
            state: -1009,
            stream: None
        }]
    );
    assert_eq!(
        events(&b_rec),
        vec![Event::UserLeave {
            room_id: "r".into(),
            uid: "a".into(),
            reason: 1
        }]
    );
    assert_eq!(hub.room_users(APP, &room("r")), Some(vec![uid("b")]));
    assert_eq!(hub.token_deadline(APP, a), None);
    assert!(log.0.lock().contains(&"leave r a TokenExpired".to_owned()));
}

/// A join claimed in a cluster hears, after the claim's list of members elsewhere, of who joined
/// or left on other nodes between its claim and its commit: the notices reached this node before
/// the joiner was a member, and would otherwise be lost.
#[test]
fn a_join_hears_of_presence_that_arrived_between_its_claim_and_its_commit() {
    use herald_core::hub::{Claim, NoDirectory, NoHooks};
    use herald_core::relay::NodeMessage;
    let registry = Registry::new(vec![spec(APP, 500, true)]).unwrap();
    let hub = Hub::clustered(&registry, Arc::new(NoHooks), Arc::new(NoDirectory));
    let (id, rec) = connect(&hub);
    let t = hub.prepare_join(APP, id, "r", "bob", &token(APP, "r", "bob", 0), None, now());
    hub.reserve(APP, id, Some(&room("r")), &uid("bob"));
    let notice = |who: &str, left: Option<i32>| match left {
        None => NodeMessage::Joined {
            app: APP.into(),
            room: "r".into(),
            uid: who.into(),
        },
        Some(reason) => NodeMessage::Left {
            app: APP.into(),
            room: "r".into(),
            uid: who.into(),
            reason,
        },
    };
    // carol joined elsewhere after bob's claim; dave, whom the claim listed, left; erin joined
    // and left; a notice about bob himself is not his to hear.
    for (who, left) in [
        ("carol", None),
        ("dave", Some(1)),
        ("erin", None),
        ("erin", Some(0)),
        ("bob", None),
    ] {
        hub.apply(&notice(who, left), now(), |_, _, _| {});
    }
    assert!(rec.take().is_empty(), "nothing before the answer");
    let claim = Claim {
        version: 3,
        ..Claim::default()
    };
    let code = hub.commit_join(APP, id, "r", "bob", t, claim, &[uid("dave")], now());
    assert_eq!(code, 0);
    let joined = |u: &str| Event::UserJoined {
        room_id: "r".into(),
        uid: u.into(),
    };
    let left = |u: &str, reason| Event::UserLeave {
        room_id: "r".into(),
        uid: u.into(),
        reason,
    };
    let got = events(&rec);
    assert!(
        matches!(&got[0], Event::RoomStateChanged { state: 0, .. }),
        "{got:?}"
    );
    assert_eq!(
        got[1..],
        [
            joined("dave"),
            joined("carol"),
            left("dave", 1),
            joined("erin"),
            left("erin", 0)
        ]
    );
    // Once a member, notices reach bob directly; nothing is kept for him any more.
    hub.apply(&notice("frank", None), now(), |_, _, _| {});
    assert_eq!(events(&rec), [joined("frank")]);
}
