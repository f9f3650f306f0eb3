//! Recovery through the hub's public API: streams, positions, held streams, resume.
//! Each test states one sentence of docs/delivery.md ("Recovery after a reconnect").

use std::sync::Arc;

use bytes::BytesMut;
use herald_core::apps::{AppSpec, Registry};
use herald_core::hub::{
    Claim, ClaimedStream, ClientSent, Directory, Ended, Hub, NoHooks, Offer, Outbox, Outcome,
    SessionId,
};
use herald_core::relay::{Addressees, NodeMessage};
use herald_core::stream::{Resumed, Window};
use herald_core::time::Timestamp;
use herald_proto::client::{
    Delivery, Event, MessageKind, ReceivedMessage, SendFrame, SendOp, StreamPos, StreamState,
};
use herald_proto::ids::{AppId, RoomId, UserId};
use herald_proto::openapi::{SendRequest, Target};
use herald_proto::token::{AccessToken, Privilege};
use parking_lot::Mutex;

const APP: &str = "65a1b2c3d4e5f60718293a4b";
const KEY: &str = "0123456789abcdef0123456789abcdef";
const T0: u64 = 1_700_000_000;
const WINDOW: Window = Window {
    messages: 5,
    max_age_us: 60_000_000,
};

fn at(secs: u64) -> Timestamp {
    Timestamp::from_secs(T0 + secs)
}

#[derive(Debug, Clone, PartialEq)]
enum Frame {
    Event(Event),
    /// (position, payload)
    Message(Option<StreamPos>, String),
}

/// An outbox that keeps what it was given; `full` makes it refuse messages like a slow consumer's.
#[derive(Default)]
struct Recorder {
    frames: Mutex<Vec<Frame>>,
    full: Mutex<bool>,
}

impl Outbox for Recorder {
    fn message(&self, d: &Delivery, pos: Option<StreamPos>, _: Timestamp) -> Offer {
        if *self.full.lock() {
            return Offer::Overflow;
        }
        let mut buf = BytesMut::new();
        d.put_prefix(1, pos, &mut buf);
        buf.extend_from_slice(d.body());
        let m = ReceivedMessage::decode(buf.freeze()).unwrap();
        assert_eq!(m.pos, pos);
        let text = String::from_utf8(m.payload.to_vec()).unwrap();
        let mut frames = self.frames.lock();
        frames.push(Frame::Message(pos, text));
        Offer::Queued(frames.len() as u64)
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
    /// The messages taken, as (position, payload).
    fn messages(&self) -> Vec<(u64, String)> {
        self.take()
            .into_iter()
            .filter_map(|f| match f {
                Frame::Message(p, t) => Some((p.expect("a position").position, t)),
                Frame::Event(_) => None,
            })
            .collect()
    }
}

fn hub(window: Window) -> Hub {
    let mut spec = AppSpec::new(AppId::new(APP).unwrap(), KEY);
    spec.presence_events = false;
    Hub::new(&Registry::new(vec![spec]).unwrap()).with_recovery(window, 1000)
}

fn token(room: &str, uid: &str) -> String {
    let mut t = AccessToken::new(APP, room, uid, 7, T0 as u32);
    t.add_privilege(Privilege::SubscribeStream, 0);
    t.serialize(KEY)
}

fn connect(hub: &Hub) -> (SessionId, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    (hub.connect(APP, rec.clone()).unwrap(), rec)
}

/// Logs `uid` in on a new connection (resuming from `resume`); returns its answer's stream.
fn login(
    hub: &Hub,
    uid: &str,
    resume: Option<StreamPos>,
    now: Timestamp,
) -> (SessionId, Arc<Recorder>, StreamState) {
    let (id, rec) = connect(hub);
    let t = hub.prepare_login(APP, id, uid, &token("", uid), resume, now);
    assert_eq!(
        hub.commit_login(APP, id, uid, t, Default::default(), now),
        0
    );
    let stream = match rec.frames.lock().remove(0) {
        Frame::Event(Event::LoginResult {
            stream: Some(s), ..
        }) => s,
        other => panic!("not a login answer with a stream: {other:?}"),
    };
    (id, rec, stream)
}

fn join(
    hub: &Hub,
    room: &str,
    uid: &str,
    resume: Option<StreamPos>,
    now: Timestamp,
) -> (SessionId, Arc<Recorder>, StreamState) {
    let (id, rec) = connect(hub);
    let t = hub.prepare_join(APP, id, room, uid, &token(room, uid), resume, now);
    let code = hub.commit_join(APP, id, room, uid, t, Default::default(), &[], now);
    assert_eq!(code, 0);
    let stream = match rec.frames.lock().remove(0) {
        Frame::Event(Event::RoomStateChanged {
            stream: Some(s), ..
        }) => s,
        other => panic!("not a join answer with a stream: {other:?}"),
    };
    (id, rec, stream)
}

/// `SendUnicast` of `text` to `uid`; returns the recipient's outcome.
fn unicast(hub: &Hub, uid: &str, text: &str, now: Timestamp) -> Outcome {
    send(hub, Target::User(UserId::new(uid).unwrap()), text, now)[0]
}

fn broadcast(hub: &Hub, room: &str, text: &str, now: Timestamp) -> Vec<Outcome> {
    send(hub, Target::Room(RoomId::new(room).unwrap()), text, now)
}

fn send(hub: &Hub, target: Target, text: &str, now: Timestamp) -> Vec<Outcome> {
    let req = SendRequest {
        app_id: AppId::new(APP).unwrap(),
        from: UserId::new("server").unwrap(),
        target,
        binary: false,
        payload: bytes::Bytes::copy_from_slice(text.as_bytes()),
    };
    let mut outcomes = Vec::new();
    hub.send(&req, now, |_, o, _| outcomes.push(o)).unwrap();
    outcomes
}

fn pos(s: &StreamState, position: u64) -> StreamPos {
    StreamPos {
        epoch: s.epoch,
        position,
    }
}

fn texts(v: &[(u64, &str)]) -> Vec<(u64, String)> {
    v.iter().map(|(p, t)| (*p, t.to_string())).collect()
}

#[test]
fn a_reconnect_that_resumes_gets_what_it_missed_in_order_then_what_is_new() {
    let hub = hub(WINDOW);
    let (id, rec, s) = login(&hub, "u1", None, at(0));
    assert_eq!((s.position, s.recovered, s.replayed), (0, None, 0));
    assert_eq!(unicast(&hub, "u1", "a", at(1)), Outcome::Queued);
    assert_eq!(unicast(&hub, "u1", "b", at(1)), Outcome::Queued);
    assert_eq!(rec.messages(), texts(&[(1, "a"), (2, "b")]));

    // The connection is lost having processed only "a"; two more are sent while it is away.
    hub.disconnect(APP, id, at(2));
    assert_eq!(unicast(&hub, "u1", "c", at(3)), Outcome::Held);
    assert_eq!(unicast(&hub, "u1", "d", at(3)), Outcome::Held);
    assert_eq!(hub.stats().held_streams, 1);

    let (_, rec, s2) = login(&hub, "u1", Some(pos(&s, 1)), at(4));
    assert_eq!(s2.epoch, s.epoch);
    assert_eq!((s2.position, s2.recovered, s2.replayed), (4, Some(true), 3));
    assert_eq!(hub.stats().held_streams, 0);
    unicast(&hub, "u1", "e", at(5));
    assert_eq!(
        rec.messages(),
        texts(&[(2, "b"), (3, "c"), (4, "d"), (5, "e")])
    );
}

#[test]
fn a_resume_that_cannot_be_filled_says_so_and_replays_nothing() {
    let hub = hub(WINDOW);
    let (id, _, s) = login(&hub, "u1", None, at(0));
    hub.disconnect(APP, id, at(0));
    // 7 messages while away, the window keeps 5: resuming from 0 or 1 leaves a gap.
    for n in 1..=7 {
        assert_eq!(unicast(&hub, "u1", &n.to_string(), at(1)), Outcome::Held);
    }
    let (id, rec, s2) = login(&hub, "u1", Some(pos(&s, 1)), at(2));
    assert_eq!(
        (s2.recovered, s2.replayed, s2.position),
        (Some(false), 0, 7)
    );
    assert!(rec.take().is_empty());
    // The stream goes on from where it is.
    unicast(&hub, "u1", "8", at(2));
    assert_eq!(rec.messages(), texts(&[(8, "8")]));

    // Another epoch (a server restart, say) is never resumed.
    hub.disconnect(APP, id, at(3));
    let other = StreamPos {
        epoch: s.epoch + 1,
        position: 8,
    };
    let (_, rec, s3) = login(&hub, "u1", Some(other), at(3));
    assert_eq!((s3.recovered, s3.replayed), (Some(false), 0));
    assert!(rec.take().is_empty());

    // Nor is a position the stream never reached.
    let ahead = pos(&s, 99);
    let (_, _, s4) = login(&hub, "u2", Some(ahead), at(3));
    assert_eq!(s4.recovered, Some(false));
}

#[test]
fn a_stream_is_held_for_the_window_and_then_forgotten() {
    let hub = hub(WINDOW);
    let (id, _, s) = login(&hub, "u1", None, at(0));
    unicast(&hub, "u1", "a", at(0));
    hub.disconnect(APP, id, at(10));
    // Held until 60 s after the connection was lost.
    assert_eq!(unicast(&hub, "u1", "b", at(70)), Outcome::Held);
    assert_eq!(
        unicast(&hub, "u1", "c", at(70).add_micros(1)),
        Outcome::NotOnline
    );
    hub.expire_streams(at(71));
    assert_eq!(hub.stats().held_streams, 0);
    // A login after that starts a new stream: another epoch, nothing recovered.
    let (_, rec, s2) = login(&hub, "u1", Some(pos(&s, 1)), at(72));
    assert_ne!(s2.epoch, s.epoch);
    assert_eq!((s2.position, s2.recovered), (0, Some(false)));
    assert!(rec.take().is_empty());
}

#[test]
fn messages_older_than_the_window_are_not_replayed() {
    let hub = hub(WINDOW);
    let (id, _, s) = login(&hub, "u1", None, at(0));
    unicast(&hub, "u1", "old", at(0));
    hub.disconnect(APP, id, at(30));
    unicast(&hub, "u1", "new", at(30));
    // At 61 s "old" (sent at 0) has left the window; "new" has not.
    let (_, rec, s2) = login(&hub, "u1", Some(pos(&s, 0)), at(61));
    assert_eq!(s2.recovered, Some(false));
    assert!(rec.take().is_empty());
    let (id, _, _) = login(&hub, "u2", None, at(61));
    unicast(&hub, "u2", "x", at(61));
    hub.disconnect(APP, id, at(61));
    let (_, rec, s3) = login(&hub, "u2", Some(pos(&s, 0)), at(62));
    // u2's stream is another stream: another epoch than u1's.
    assert_eq!(s3.recovered, Some(false));
    assert!(rec.take().is_empty());
}

#[test]
fn leaving_on_purpose_ends_the_stream() {
    let hub = hub(WINDOW);
    let (id, _, _) = login(&hub, "u1", None, at(0));
    hub.logout(APP, id, at(1));
    assert_eq!(unicast(&hub, "u1", "a", at(1)), Outcome::NotOnline);
    let (id, _, _) = join(&hub, "r", "u1", None, at(1));
    hub.leave_room(APP, id, "r", at(2));
    assert_eq!(broadcast(&hub, "r", "a", at(2)), vec![]);
    let (_, _, _) = join(&hub, "r", "u2", None, at(2));
    hub.kick(
        APP,
        &RoomId::new("r").unwrap(),
        &UserId::new("u2").unwrap(),
        at(3),
    );
    assert_eq!(broadcast(&hub, "r", "a", at(3)), vec![]);
    assert_eq!(hub.stats().held_streams, 0);
}

#[test]
fn each_room_membership_has_its_own_stream_apart_from_the_login() {
    let hub = hub(WINDOW);
    let (id, rec, login_stream) = login(&hub, "u1", None, at(0));
    let t = hub.prepare_join(APP, id, "r", "u1", &token("r", "u1"), None, at(0));
    hub.commit_join(APP, id, "r", "u1", t, Default::default(), &[], at(0));
    let room_stream = match rec.take().remove(0) {
        Frame::Event(Event::RoomStateChanged {
            stream: Some(s), ..
        }) => s,
        other => panic!("{other:?}"),
    };
    assert_ne!(room_stream.epoch, login_stream.epoch);
    let (_, other, _) = join(&hub, "r", "u2", None, at(0));
    broadcast(&hub, "r", "r1", at(1));
    unicast(&hub, "u1", "u1", at(1));
    broadcast(&hub, "r", "r2", at(1));
    let got = rec.take();
    let positions: Vec<(u64, u64, String)> = got
        .into_iter()
        .filter_map(|f| match f {
            Frame::Message(Some(p), t) => Some((p.epoch, p.position, t)),
            _ => None,
        })
        .collect();
    assert_eq!(
        positions,
        vec![
            (room_stream.epoch, 1, "r1".into()),
            (login_stream.epoch, 1, "u1".into()),
            (room_stream.epoch, 2, "r2".into()),
        ]
    );
    assert_eq!(other.messages(), texts(&[(1, "r1"), (2, "r2")]));

    // Away from the room: a broadcast is held for u1 and reaches u2.
    hub.disconnect(APP, id, at(2));
    assert_eq!(
        broadcast(&hub, "r", "r3", at(2)),
        vec![Outcome::Queued, Outcome::Held]
    );
    let (_, rec, s) = join(&hub, "r", "u1", Some(pos(&room_stream, 2)), at(3));
    assert_eq!((s.recovered, s.replayed), (Some(true), 1));
    assert_eq!(rec.messages(), texts(&[(3, "r3")]));
}

#[test]
fn a_login_taken_over_goes_on_with_the_same_stream() {
    let hub = hub(WINDOW);
    let (_, old, s) = login(&hub, "u1", None, at(0));
    unicast(&hub, "u1", "a", at(0));
    unicast(&hub, "u1", "b", at(0));
    assert_eq!(old.messages(), texts(&[(1, "a"), (2, "b")]));
    // A new connection of the same user (the phone's new network) resumes after "a".
    let (_, new, s2) = login(&hub, "u1", Some(pos(&s, 1)), at(1));
    assert_eq!(
        (s2.epoch, s2.recovered, s2.replayed),
        (s.epoch, Some(true), 1)
    );
    unicast(&hub, "u1", "c", at(1));
    assert_eq!(new.messages(), texts(&[(2, "b"), (3, "c")]));
    assert!(old.messages().is_empty());
}

#[test]
fn what_a_slow_consumer_dropped_is_recovered() {
    let hub = hub(WINDOW);
    let (id, rec, s) = login(&hub, "u1", None, at(0));
    unicast(&hub, "u1", "a", at(0));
    *rec.full.lock() = true;
    assert_eq!(unicast(&hub, "u1", "b", at(0)), Outcome::SlowConsumer);
    // The edge cuts the connection off; the client comes back and resumes after "a".
    hub.disconnect(APP, id, at(1));
    let (_, rec, s2) = login(&hub, "u1", Some(pos(&s, 1)), at(2));
    assert_eq!(s2.recovered, Some(true));
    assert_eq!(rec.messages(), texts(&[(2, "b")]));
}

#[test]
fn with_recovery_off_nothing_carries_a_position_or_is_held() {
    let hub = hub(Window::OFF);
    let (id, rec) = connect(&hub);
    let resume = Some(StreamPos {
        epoch: 1,
        position: 1,
    });
    let t = hub.prepare_login(APP, id, "u1", &token("", "u1"), resume, at(0));
    hub.commit_login(APP, id, "u1", t, Default::default(), at(0));
    unicast(&hub, "u1", "a", at(0));
    assert_eq!(
        rec.take(),
        vec![
            Frame::Event(Event::LoginResult {
                uid: "u1".into(),
                error_code: 0,
                stream: None
            }),
            Frame::Message(None, "a".into())
        ]
    );
    hub.disconnect(APP, id, at(1));
    assert_eq!(unicast(&hub, "u1", "b", at(1)), Outcome::NotOnline);
    assert_eq!(hub.stats().held_streams, 0);
}

/// What a cluster node's hub tells its directory when a registration ends.
#[derive(Default)]
struct Ends(Mutex<Vec<(String, bool)>>);

impl Directory for Ends {
    fn login_ended(&self, _: &AppId, uid: &UserId, _: u64, held: bool) {
        self.0.lock().push((uid.to_string(), held));
    }
    fn membership_ended(&self, _: &AppId, room: &RoomId, uid: &UserId, e: Ended) {
        self.0.lock().push((format!("{room}/{uid}"), e.held));
    }
}

/// A cluster node's hub with recovery on: streams are the cluster's (in Redis).
fn clustered(window: Window) -> (Hub, Arc<Ends>) {
    let mut spec = AppSpec::new(AppId::new(APP).unwrap(), KEY);
    spec.presence_events = false;
    let registry = Registry::new(vec![spec]).unwrap();
    let ends = Arc::new(Ends::default());
    let hub =
        Hub::clustered(&registry, Arc::new(NoHooks), ends.clone()).with_recovery(window, 1000);
    (hub, ends)
}

/// A message from the cluster for `uid`'s login at position `p` of epoch 77.
fn stamped(hub: &Hub, uid: &str, p: u64, text: &str) -> Outcome {
    let msg = NodeMessage::Deliver {
        app: APP.into(),
        delivery: Delivery::encode(
            MessageKind::OutsideRoom,
            "srv",
            None,
            false,
            text.as_bytes(),
        ),
        accepted: at(0),
        room: String::new(),
        except: String::new(),
        to: Addressees::Streams(vec![(
            UserId::new(uid).unwrap(),
            StreamPos {
                epoch: 77,
                position: p,
            },
        )]),
        report: None,
    };
    let mut outcomes = Vec::new();
    hub.apply(&msg, at(0), |_, o, _| outcomes.push(o));
    outcomes[0]
}

/// A claim that found the stream at `head` of epoch 77, and for a resume `replay`.
fn claim_at(head: u64, replay: Option<Vec<(u64, &str)>>) -> Claim {
    let resumed = replay.map(|v| {
        Resumed::Replay(
            v.into_iter()
                .map(|(position, text)| {
                    let d = Delivery::encode(
                        MessageKind::OutsideRoom,
                        "srv",
                        None,
                        false,
                        text.as_bytes(),
                    );
                    (
                        StreamPos {
                            epoch: 77,
                            position,
                        },
                        d,
                        at(0),
                    )
                })
                .collect(),
        )
    });
    Claim {
        version: 9,
        took_over: false,
        stream: Some(Box::new(ClaimedStream {
            head: StreamPos {
                epoch: 77,
                position: head,
            },
            resumed,
        })),
    }
}

#[test]
fn in_a_cluster_the_claim_states_the_stream_and_what_came_during_it_follows_in_order() {
    let (hub, ends) = clustered(WINDOW);
    let (id, rec) = connect(&hub);
    let from = StreamPos {
        epoch: 77,
        position: 2,
    };
    let t = hub.prepare_login(APP, id, "u1", &token("", "u1"), Some(from), at(0));
    let uid = UserId::new("u1").unwrap();
    hub.reserve(APP, id, None, &uid);
    // Published after the claim, arriving before the commit: kept (and reported queued); one
    // from before the claim (position 3, which the claim's replay has) is dropped at the commit.
    assert_eq!(stamped(&hub, "u1", 3, "three"), Outcome::Queued);
    assert_eq!(stamped(&hub, "u1", 5, "five"), Outcome::Queued);
    assert_eq!(stamped(&hub, "u1", 6, "six"), Outcome::Queued);
    assert!(rec.take().is_empty());
    let claim = claim_at(4, Some(vec![(3, "three"), (4, "four")]));
    assert_eq!(hub.commit_login(APP, id, "u1", t, claim, at(0)), 0);
    let answer = rec.frames.lock().remove(0);
    let Frame::Event(Event::LoginResult {
        stream: Some(s), ..
    }) = answer
    else {
        panic!("{answer:?}");
    };
    assert_eq!(
        (s.epoch, s.position, s.recovered, s.replayed),
        (77, 4, Some(true), 2)
    );
    assert_eq!(
        rec.messages(),
        texts(&[(3, "three"), (4, "four"), (5, "five"), (6, "six")])
    );
    // Then straight through, at the cluster's positions; nothing is kept in the hub.
    assert_eq!(stamped(&hub, "u1", 7, "seven"), Outcome::Queued);
    assert_eq!(rec.messages(), texts(&[(7, "seven")]));
    // A lost connection tells the directory to hold the stream; a logout, not to.
    hub.disconnect(APP, id, at(1));
    assert_eq!(hub.stats().held_streams, 0);
    let (id2, _, _) = login(&hub, "u2", None, at(1));
    hub.logout(APP, id2, at(1));
    assert_eq!(
        *ends.0.lock(),
        [("u1".to_owned(), true), ("u2".to_owned(), false)]
    );
    assert_eq!(stamped(&hub, "u1", 8, "eight"), Outcome::NotOnline);
}

#[test]
fn in_a_cluster_a_claim_flooded_past_the_window_recovers_nothing_and_an_abandoned_one_keeps_nothing(
) {
    let (hub, _) = clustered(WINDOW);
    let uid = UserId::new("u1").unwrap();
    let (id, rec) = connect(&hub);
    let from = StreamPos {
        epoch: 77,
        position: 0,
    };
    let t = hub.prepare_login(APP, id, "u1", &token("", "u1"), Some(from), at(0));
    hub.reserve(APP, id, None, &uid);
    for p in 1..=6 {
        stamped(&hub, "u1", p, "x");
    }
    assert_eq!(
        hub.commit_login(APP, id, "u1", t, claim_at(0, Some(vec![])), at(0)),
        0
    );
    let Frame::Event(Event::LoginResult {
        stream: Some(s), ..
    }) = rec.frames.lock().remove(0)
    else {
        panic!("no answer");
    };
    assert_eq!((s.recovered, s.replayed), (Some(false), 0));
    assert!(rec.take().is_empty());

    // A connection that ends before its commit leaves nothing waiting.
    let (id, rec) = connect(&hub);
    let uid2 = UserId::new("u2").unwrap();
    hub.reserve(APP, id, None, &uid2);
    hub.disconnect(APP, id, at(0));
    assert_eq!(stamped(&hub, "u2", 1, "y"), Outcome::NotOnline);
    assert!(rec.take().is_empty());
}

#[test]
fn in_a_cluster_a_clients_message_goes_through_the_cluster_even_to_a_user_here() {
    let (hub, _) = clustered(WINDOW);
    let (_, alice, _) = login(&hub, "alice", None, at(0));
    let (bob, _, _) = login(&hub, "bob", None, at(0));
    let frame = SendFrame {
        op: SendOp::UserOutsideRoom,
        msgid: 1,
        to: "alice".into(),
        room_id: String::new(),
        binary: false,
        payload: bytes::Bytes::from_static(b"hi"),
    };
    let ClientSent::Forward(f) = hub.client_send(APP, bob, &frame, at(0)) else {
        panic!("not forwarded");
    };
    assert!(
        alice.take().is_empty(),
        "nothing queued before its position is taken"
    );
    // Redis unreachable: the recipients here get it, without a position.
    assert!(hub.deliver_here(APP, &f, at(0)));
    assert_eq!(alice.take(), [Frame::Message(None, "hi".into())]);
}
