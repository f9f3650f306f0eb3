//! Sequences of operations on the core engine (herald-core `Hub`), through its public API only,
//! with a recording `Outbox` per session.
//!
//! Input: a program, one operation after another (an opcode byte and its argument bytes; see
//! `step`). Two apps: one with presence events and generous limits, one without presence and
//! with tight rate limits. Small pools of user ids and room ids (each with one invalid id), token
//! variants (valid, `*`, expired, short-lived, wrong user, wrong room, wrong key, wrong app,
//! garbage), outboxes that queue, overflow or are closed, and a clock moved by the program.
//!
//! A model follows what each session was told (events) and is compared with the hub after every
//! step:
//! - a user's login belongs to exactly one live session, the one last told it logged in;
//! - every room member is a live session that was told it joined that room (and not told since
//!   that it left); rooms without members are forgotten; `overview`, `stats` and `room_users`
//!   agree with the sessions;
//! - nothing (event or message) reaches a session after `disconnect`; presence events go only
//!   to members of the room, and only in an app that reports presence;
//! - login / join / kick / client-send results are the ones the protocol documents for the state;
//! - every send's `Summary` counts each recipient once with its outcome, and the messages
//!   offered are exactly those to the recipients' sessions, carrying the message;
//! - after `expire_tokens`, no membership outlives its room token.
//!
//! Kept small on purpose: it uses the hub's public single-node API, so it adapts easily as the
//! hub grows (cluster support).
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use herald_core::apps::{AppSpec, Registry};
use herald_core::hub::{ClientSent, Hub, Offer, Outbox, Outcome, SendError, SessionId, Summary};
use herald_core::time::Timestamp;
use herald_fuzz::Cursor;
use herald_proto::client::{
    login_error, online_status, room_send_result, room_state, send_result, Delivery, Event,
    ReceivedMessage, SendFrame, SendOp, StreamPos,
};
use herald_proto::ids::{is_valid_id, AppId, RoomId, UserId};
use herald_proto::openapi::{SendRequest, Target};
use herald_proto::token::AccessToken;
use libfuzzer_sys::fuzz_target;

const APPS: [&str; 2] = ["65a1b2c3d4e5f60718293a4b", "000000000000000000000000"];
const KEYS: [&str; 2] = [
    "0123456789abcdef0123456789abcdef",
    "fedcba9876543210fedcba9876543210",
];
const UIDS: [&str; 5] = ["u0", "u1", "u2", "u3", "bad uid"];
const ROOMS: [&str; 4] = ["r0", "r1", "r2", "bad/room"];
const URLS: [&str; 2] = ["http://biz.example/rtc/send", "http://evil.example/rtc/"];
const MAX_SESSIONS: usize = 12;

// ---- the recording outbox ----

#[derive(Debug)]
enum Rec {
    Event(usize, Event),
    Message(usize, Delivery),
}

struct Recorder {
    index: usize,
    log: Arc<Mutex<Vec<Rec>>>,
    /// (alive, what offers return)
    state: Mutex<(bool, Offer)>,
}

impl Recorder {
    fn offer(&self, rec: Rec) -> Offer {
        let (alive, offer) = *self.state.lock().unwrap();
        assert!(
            alive,
            "sent to session {} after disconnect: {rec:?}",
            self.index
        );
        self.log.lock().unwrap().push(rec);
        offer
    }
}

impl Outbox for Recorder {
    fn message(&self, d: &Delivery, _pos: Option<StreamPos>, _accepted: Timestamp) -> Offer {
        self.offer(Rec::Message(self.index, d.clone()))
    }
    fn event(&self, e: &Event) -> Offer {
        self.offer(Rec::Event(self.index, e.clone()))
    }
}

// ---- the model ----

#[derive(Debug, Clone, PartialEq)]
struct Membership {
    uid: String,
    /// Room token expiry, unix seconds; 0 never.
    expires: u32,
}

struct Session {
    app: usize,
    id: SessionId,
    alive: bool,
    outbox: Arc<Recorder>,
    login: Option<String>,
    rooms: BTreeMap<String, Membership>,
    params: Option<(String, String)>,
}

impl Session {
    fn offer(&self) -> Offer {
        self.outbox.state.lock().unwrap().1
    }
}

/// What the operation being checked is, for reading its answer.
enum Doing {
    Other,
    /// A join by this session of this room, expiring then if it succeeds.
    Join(usize, String, u32),
    /// `setServerParams` with these parameters.
    Params(usize, (String, String)),
}

struct World {
    hub: Hub,
    log: Arc<Mutex<Vec<Rec>>>,
    sessions: Vec<Session>,
    now_us: u64,
}

fn app_spec(i: usize) -> AppSpec {
    let mut spec = AppSpec::new(AppId::new(APPS[i]).unwrap(), KEYS[i]);
    if i == 0 {
        spec.qps_limit = 10_000;
        spec.client_send_rate = 1_000_000;
        spec.presence_events = true;
    } else {
        spec.qps_limit = 3;
        spec.client_send_rate = 2;
        spec.presence_events = false;
    }
    spec.server_message_urls = vec!["http://biz.example/rtc/".into()];
    spec
}

/// Token variants: what they are valid for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tok {
    Valid,
    Star,
    Expired,
    Short(u32),
    WrongUser,
    WrongRoom,
    WrongKey,
    WrongApp,
    Garbage,
}

fn tok(b: u8) -> Tok {
    match b % 9 {
        0 => Tok::Valid,
        1 => Tok::Star,
        2 => Tok::Expired,
        3 => Tok::Short(u32::from(b / 9) % 64),
        4 => Tok::WrongUser,
        5 => Tok::WrongRoom,
        6 => Tok::WrongKey,
        7 => Tok::WrongApp,
        _ => Tok::Garbage,
    }
}

impl World {
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.now_us)
    }

    fn now_s(&self) -> u32 {
        (self.now_us / 1_000_000) as u32
    }

    /// A token of variant `t` for `uid` in `room` ("" for a login); the expiry it grants.
    fn token(&self, app: usize, t: Tok, room: &str, uid: &str) -> (String, u32) {
        let now = self.now_s();
        let (mut app_id, mut key, mut room, mut uid) = (APPS[app], KEYS[app], room, uid);
        let mut expire = 0;
        let wrong_user = format!("{uid}x");
        match t {
            Tok::Valid => {}
            Tok::Star => room = "*",
            Tok::Expired => expire = now - 1,
            Tok::Short(s) => expire = now + s,
            Tok::WrongUser => uid = &wrong_user,
            Tok::WrongRoom => room = if room.is_empty() { "r0" } else { "elsewhere" },
            Tok::WrongKey => key = "not the key",
            Tok::WrongApp => app_id = APPS[1 - app],
            Tok::Garbage => return ("001garbage".into(), 0),
        }
        let mut token = AccessToken::new(app_id, room, uid, 7, now);
        token.expire_time(expire);
        (token.serialize(key), expire)
    }

    /// Live sessions of `app` holding `uid`'s login.
    fn login_holders(&self, app: usize, uid: &str) -> Vec<usize> {
        (0..self.sessions.len())
            .filter(|&i| {
                let s = &self.sessions[i];
                s.alive && s.app == app && s.login.as_deref() == Some(uid)
            })
            .collect()
    }

    /// Live sessions of `app` that are `uid` in `room`.
    fn member_holders(&self, app: usize, room: &str, uid: &str) -> Vec<usize> {
        (0..self.sessions.len())
            .filter(|&i| {
                let s = &self.sessions[i];
                s.alive && s.app == app && s.rooms.get(room).is_some_and(|m| m.uid == uid)
            })
            .collect()
    }

    /// (session, uid) of every member of `room` in `app`.
    fn members(&self, app: usize, room: &str) -> Vec<(usize, String)> {
        let mut out: Vec<(usize, String)> = (0..self.sessions.len())
            .filter_map(|i| {
                let s = &self.sessions[i];
                let m = s.rooms.get(room).filter(|_| s.alive && s.app == app)?;
                Some((i, m.uid.clone()))
            })
            .collect();
        out.sort_by(|a, b| a.1.cmp(&b.1));
        out
    }

    /// Applies what the sessions were told to the model; returns the records for the caller.
    fn drain(&mut self, doing: &Doing) -> Vec<Rec> {
        let recs = std::mem::take(&mut *self.log.lock().unwrap());
        for rec in &recs {
            match rec {
                Rec::Event(i, e) => self.told(*i, e, doing),
                Rec::Message(i, d) => {
                    let s = &self.sessions[*i];
                    let m = decode(d);
                    match &m.room_id {
                        None => assert!(
                            s.login.is_some(),
                            "message outside rooms to a session not logged in"
                        ),
                        Some(r) => assert!(
                            s.rooms.contains_key(r),
                            "room message to a non-member of {r}"
                        ),
                    }
                }
            }
        }
        recs
    }

    fn told(&mut self, i: usize, e: &Event, doing: &Doing) {
        let app = self.sessions[i].app;
        let s = &mut self.sessions[i];
        match e {
            Event::LoginResult {
                uid, error_code, ..
            } if *error_code == login_error::SUCCESS => {
                assert_eq!(s.login, None, "logged in twice");
                s.login = Some(uid.clone());
            }
            Event::Logout { .. } => {
                s.login = None;
                s.params = None;
            }
            Event::RoomStateChanged {
                room_id,
                uid,
                state,
                ..
            } => {
                let answer = matches!(doing, Doing::Join(j, r, _) if *j == i && r == room_id);
                match *state {
                    room_state::JOINED => {
                        let Doing::Join(_, _, expires) = doing else {
                            panic!("joined outside a join");
                        };
                        assert!(answer, "joined a room it did not ask for");
                        let m = Membership {
                            uid: uid.clone(),
                            expires: *expires,
                        };
                        assert!(s.rooms.insert(room_id.clone(), m).is_none());
                    }
                    room_state::DUPLICATE_LOGIN | room_state::KICKED_OUT => {
                        assert!(
                            s.rooms.remove(room_id).is_some(),
                            "{e:?} for a room not joined"
                        );
                    }
                    // As the answer to joinRoom it changes nothing, even for a room this session is
                    // in: the hub checks the token before whether the connection already joined, so
                    // joining a joined room with an expired token is answered -1009 and the
                    // membership stays (a known quirk, issue #7). Any other -1009 ends it.
                    room_state::TOKEN_EXPIRED if !answer => {
                        assert!(
                            s.rooms.remove(room_id).is_some(),
                            "{e:?} for a room not joined"
                        );
                    }
                    _ => {}
                }
            }
            Event::LeaveRoom { room_id } => {
                s.rooms.remove(room_id);
            }
            Event::UserJoined { room_id, .. } | Event::UserLeave { room_id, .. } => {
                assert_eq!(app, 0, "presence event in an app without presence");
                assert!(
                    s.rooms.contains_key(room_id),
                    "presence of {room_id} to a non-member"
                );
            }
            Event::ServerParamsSetResult { error } => match (*error, doing) {
                (send_result::SERVER_PARAMS_SET, Doing::Params(j, p)) if *j == i => {
                    s.params = Some(p.clone())
                }
                (send_result::SERVER_PARAMS_NOT_SET, _) => s.params = None,
                _ => {}
            },
            _ => {}
        }
    }

    /// The hub and the model agree.
    fn check(&self) {
        let mut expected_stats = (0u64, 0u64, 0u64, 0u64);
        let overview = self.hub.overview(usize::MAX);
        assert_eq!(overview.len(), APPS.len());
        for ov in &overview {
            let app = APPS.iter().position(|a| *a == ov.app_id.as_str()).unwrap();
            let live: Vec<&Session> = self
                .sessions
                .iter()
                .filter(|s| s.alive && s.app == app)
                .collect();
            assert_eq!(ov.connections, live.len(), "connections of app {app}");

            let mut logins: Vec<&str> = live.iter().filter_map(|s| s.login.as_deref()).collect();
            logins.sort();
            let unique: BTreeSet<&str> = logins.iter().copied().collect();
            assert_eq!(
                unique.len(),
                logins.len(),
                "a uid logged in on two sessions: {logins:?}"
            );
            let hub_logins: Vec<&str> = ov.logins.iter().map(UserId::as_str).collect();
            assert_eq!(hub_logins, logins, "logins of app {app}");
            assert_eq!(ov.total_logins, logins.len());

            let mut rooms: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for s in &live {
                for (r, m) in &s.rooms {
                    rooms.entry(r).or_default().push(&m.uid);
                }
            }
            for members in rooms.values_mut() {
                members.sort();
                let unique: BTreeSet<&str> = members.iter().copied().collect();
                assert_eq!(
                    unique.len(),
                    members.len(),
                    "a uid twice in a room: {members:?}"
                );
            }
            let hub_rooms: BTreeMap<&str, Vec<&str>> = ov
                .rooms
                .iter()
                .map(|(r, m)| {
                    assert!(!m.is_empty(), "empty room {r} kept");
                    (r.as_str(), m.iter().map(UserId::as_str).collect())
                })
                .collect();
            assert_eq!(hub_rooms, rooms, "rooms of app {app}");
            assert_eq!(ov.total_rooms, rooms.len());
            for room in ROOMS.iter().filter(|r| is_valid_id(r)) {
                let users = self.hub.room_users(APPS[app], &RoomId::new(room).unwrap());
                let users: Option<Vec<&str>> = users
                    .as_ref()
                    .map(|u| u.iter().map(UserId::as_str).collect());
                assert_eq!(users.as_ref(), rooms.get(room), "room_users of {room}");
            }
            for s in &live {
                let deadline = self.hub.token_deadline(APPS[app], s.id);
                assert_eq!(
                    deadline.is_some(),
                    s.rooms.values().any(|m| m.expires != 0),
                    "token_deadline {deadline:?} for {:?}",
                    s.rooms
                );
            }
            expected_stats.0 += live.len() as u64;
            expected_stats.1 += logins.len() as u64;
            expected_stats.2 += rooms.len() as u64;
            expected_stats.3 += rooms.values().map(|m| m.len() as u64).sum::<u64>();
        }
        let st = self.hub.stats();
        assert_eq!(
            (st.sessions, st.logins, st.rooms, st.room_members),
            expected_stats,
            "stats"
        );
    }
}

fn decode(d: &Delivery) -> ReceivedMessage {
    let mut frame = BytesMut::new();
    d.put_prefix(1, None, &mut frame);
    frame.extend_from_slice(d.body());
    ReceivedMessage::decode(frame.freeze()).expect("the hub encoded a bad message")
}

fn events_to(recs: &[Rec], i: usize) -> Vec<&Event> {
    recs.iter()
        .filter_map(|r| match r {
            Rec::Event(j, e) if *j == i => Some(e),
            _ => None,
        })
        .collect()
}

fn messages(recs: &[Rec]) -> Vec<(usize, ReceivedMessage)> {
    let mut out: Vec<(usize, ReceivedMessage)> = recs
        .iter()
        .filter_map(|r| match r {
            Rec::Message(i, d) => Some((*i, decode(d))),
            _ => None,
        })
        .collect();
    out.sort_by_key(|(i, _)| *i);
    out
}

fn outcome_of(offer: Offer) -> Outcome {
    match offer {
        Offer::Queued(_) => Outcome::Queued,
        Offer::Overflow => Outcome::SlowConsumer,
        Offer::Closed => Outcome::NotOnline,
    }
}

/// One operation. Returns false when the program is over.
fn step(w: &mut World, c: &mut Cursor<'_>) -> bool {
    if c.is_empty() {
        return false;
    }
    let op = c.u8() % 15;
    // Every operation but connect and the clock names a session (dead ones too).
    let pick = c.u8();
    let n = w.sessions.len();
    if n == 0 && !matches!(op, 0 | 6 | 8 | 10) {
        return true;
    }
    let si = if n == 0 { 0 } else { usize::from(pick) % n };
    let now = w.now();
    let mut doing = Doing::Other;
    match op {
        0 => {
            // connect
            if n < MAX_SESSIONS {
                let app = usize::from(pick % 2);
                let outbox = Arc::new(Recorder {
                    index: n,
                    log: w.log.clone(),
                    state: Mutex::new((true, Offer::Queued(0))),
                });
                let id = w
                    .hub
                    .connect(APPS[app], outbox.clone())
                    .expect("app served");
                w.sessions.push(Session {
                    app,
                    id,
                    alive: true,
                    outbox,
                    login: None,
                    rooms: BTreeMap::new(),
                    params: None,
                });
            }
            w.drain(&doing);
        }
        1 => {
            // disconnect: from here on, nothing may reach it
            let s = &mut w.sessions[si];
            s.outbox.state.lock().unwrap().0 = false;
            s.alive = false;
            s.login = None;
            s.rooms.clear();
            s.params = None;
            let (app, id) = (s.app, s.id);
            w.hub.disconnect(APPS[app], id, now);
            w.drain(&doing);
        }
        2 => {
            // login
            let uid = UIDS[usize::from(c.u8()) % UIDS.len()];
            let t = tok(c.u8());
            let s = &w.sessions[si];
            let (app, id, alive, logged_in) = (s.app, s.id, s.alive, s.login.is_some());
            let (token, _) = w.token(app, t, "", uid);
            let expected = if !alive {
                login_error::SERVER_ERROR
            } else if !is_valid_id(uid) {
                login_error::INVALID_USER_ID
            } else if !matches!(t, Tok::Valid | Tok::Short(_)) {
                login_error::INVALID_TOKEN
            } else if logged_in {
                login_error::LOGIN_FAILED
            } else {
                login_error::SUCCESS
            };
            let code = w.hub.login(APPS[app], id, uid, &token, now);
            assert_eq!(code, expected, "login {uid} with {t:?}");
            let recs = w.drain(&doing);
            if alive {
                let answer = Event::LoginResult {
                    uid: uid.into(),
                    error_code: code,
                    stream: None,
                };
                assert!(events_to(&recs, si).contains(&&answer), "no {answer:?}");
            }
        }
        3 => {
            // logout
            let s = &w.sessions[si];
            let (app, id, alive) = (s.app, s.id, s.alive);
            w.hub.logout(APPS[app], id, now);
            let recs = w.drain(&doing);
            if alive {
                assert_eq!(w.sessions[si].login, None);
                assert!(events_to(&recs, si).contains(&&Event::Logout { reason: 0 }));
            }
        }
        4 => {
            // joinRoom
            let room = ROOMS[usize::from(c.u8()) % ROOMS.len()];
            let uid = UIDS[usize::from(c.u8()) % UIDS.len()];
            let t = tok(c.u8());
            let s = &w.sessions[si];
            let (app, id, alive, joined) = (s.app, s.id, s.alive, s.rooms.contains_key(room));
            let (token, expires) = w.token(app, t, room, uid);
            let expected = if !alive {
                room_state::JOIN_ROOM_FAILED
            } else if !is_valid_id(room) {
                room_state::ROOM_ID_ILLEGAL
            } else if !is_valid_id(uid) {
                room_state::JOIN_ROOM_FAILED
            } else if t == Tok::Expired {
                // The hub checks the token before whether this connection already joined.
                room_state::TOKEN_EXPIRED
            } else if !matches!(t, Tok::Valid | Tok::Star | Tok::Short(_)) {
                room_state::INVALID_TOKEN
            } else if joined {
                room_state::ROOM_ALREADY_JOINED
            } else {
                room_state::JOINED
            };
            let code = w.hub.join_room(APPS[app], id, room, uid, &token, now);
            assert_eq!(code, expected, "join {room} as {uid} with {t:?}");
            doing = Doing::Join(si, room.into(), expires);
            let recs = w.drain(&doing);
            if alive {
                let answer = Event::RoomStateChanged {
                    room_id: room.into(),
                    uid: uid.into(),
                    state: code,
                    stream: None,
                };
                assert!(events_to(&recs, si).contains(&&answer), "no {answer:?}");
            }
        }
        5 => {
            // leaveRoom
            let room = ROOMS[usize::from(c.u8()) % ROOMS.len()];
            let s = &w.sessions[si];
            let (app, id, alive) = (s.app, s.id, s.alive);
            w.hub.leave_room(APPS[app], id, room, now);
            w.drain(&doing);
            assert!(!w.sessions[si].rooms.contains_key(room) || !alive);
        }
        6 => api_send(w, c, pick),
        7 => client_send(w, c, si),
        8 => {
            // KickUser
            let app = usize::from(pick % 2);
            let room = ROOMS[usize::from(c.u8()) % 3];
            let uid = UIDS[usize::from(c.u8()) % 4];
            let holders = w.member_holders(app, room, uid);
            let kicked = w.hub.kick(
                APPS[app],
                &RoomId::new(room).unwrap(),
                &UserId::new(uid).unwrap(),
                now,
            );
            assert_eq!(kicked, !holders.is_empty(), "kick {uid} from {room}");
            let recs = w.drain(&doing);
            for h in holders {
                let told = Event::RoomStateChanged {
                    room_id: room.into(),
                    uid: uid.into(),
                    state: room_state::KICKED_OUT,
                    stream: None,
                };
                assert!(events_to(&recs, h).contains(&&told));
            }
        }
        9 => {
            // what this session's outbox answers from now on
            let offer = [Offer::Queued(0), Offer::Overflow, Offer::Closed][usize::from(c.u8() % 3)];
            w.sessions[si].outbox.state.lock().unwrap().1 = offer;
        }
        10 => {
            // the clock: microseconds or seconds
            let d = u64::from(c.u8());
            w.now_us += if pick & 1 == 0 {
                d * 1000
            } else {
                d * 1_000_000
            };
        }
        11 => {
            // expire_tokens
            let s = &w.sessions[si];
            let (app, id, alive) = (s.app, s.id, s.alive);
            w.hub.expire_tokens(APPS[app], id, now);
            w.drain(&doing);
            if alive {
                let secs = w.now_s();
                for (r, m) in &w.sessions[si].rooms {
                    assert!(
                        m.expires == 0 || secs <= m.expires,
                        "{r}: token expired at {} but still a member at {secs}",
                        m.expires
                    );
                }
            }
        }
        12 => {
            // updateToken
            let room = ROOMS[usize::from(c.u8()) % ROOMS.len()];
            let t = tok(c.u8());
            let s = &w.sessions[si];
            let (app, id, alive) = (s.app, s.id, s.alive);
            let uid = s.rooms.get(room).map(|m| m.uid.clone());
            let (token, expires) = w.token(app, t, room, uid.as_deref().unwrap_or("u0"));
            w.hub.update_room_token(APPS[app], id, room, &token, now);
            let recs = w.drain(&doing);
            let refused = events_to(&recs, si).iter().any(|e| {
                matches!(e, Event::RoomStateChanged { state, room_id, .. }
                    if *state == room_state::UPDATE_TOKEN_WITH_INVALID_TOKEN && room_id == room)
            });
            if alive {
                let ok = uid.is_some() && matches!(t, Tok::Valid | Tok::Star | Tok::Short(_));
                assert_eq!(refused, !ok, "updateToken {room} with {t:?}");
                if ok {
                    w.sessions[si].rooms.get_mut(room).unwrap().expires = expires;
                }
            }
        }
        13 => {
            // getPeerOnlineStatus
            let uid = UIDS[usize::from(c.u8()) % UIDS.len()];
            let s = &w.sessions[si];
            let (app, id, alive) = (s.app, s.id, s.alive);
            let status = if w.login_holders(app, uid).is_empty() {
                online_status::OFFLINE
            } else {
                online_status::ONLINE
            };
            // Single node: nobody is online elsewhere.
            w.hub.get_peer_online_status(APPS[app], id, uid, false);
            let recs = w.drain(&doing);
            if alive {
                let answer = Event::GetPeerOnlineStatus {
                    peer_user_id: uid.into(),
                    status,
                };
                assert_eq!(events_to(&recs, si), [&answer]);
            }
        }
        _ => {
            // setServerParams
            let b = c.u8();
            let url = URLS[usize::from(b % 2)];
            let signature = if b & 2 == 0 { "sig" } else { "" };
            let s = &w.sessions[si];
            let (app, id, alive, logged_in) = (s.app, s.id, s.alive, s.login.is_some());
            let expected = if !alive {
                send_result::SERVER_PARAMS_NOT_SET
            } else if !logged_in {
                send_result::NOT_LOGIN
            } else if signature.is_empty() || url != URLS[0] {
                send_result::SERVER_PARAMS_NOT_SET
            } else {
                send_result::SERVER_PARAMS_SET
            };
            let code = w.hub.set_server_params(APPS[app], id, signature, url);
            assert_eq!(code, expected);
            doing = Doing::Params(si, (signature.into(), url.into()));
            let recs = w.drain(&doing);
            if alive {
                assert_eq!(
                    events_to(&recs, si),
                    [&Event::ServerParamsSetResult { error: code }]
                );
            }
        }
    }
    w.check();
    true
}

/// An OpenAPI send (SendUnicast, SendRoomUnicast, BatchSendRoomUnicast, SendBroadcast).
fn api_send(w: &mut World, c: &mut Cursor<'_>, pick: u8) {
    let app = usize::from(pick % 2);
    let kind = (pick >> 1) % 4;
    let from = UIDS[usize::from(c.u8()) % 4];
    let room = ROOMS[usize::from(c.u8()) % 3];
    let mask = c.u8();
    let binary = mask & 0x80 != 0;
    let payload = Bytes::copy_from_slice(c.chunk());
    if !binary && std::str::from_utf8(&payload).is_err() {
        return;
    }
    let users: Vec<&str> = (0..4)
        .filter(|b| mask & (1 << b) != 0)
        .map(|b| UIDS[b])
        .collect();
    let r = RoomId::new(room).unwrap();
    let target = match kind {
        0 => Target::User(UserId::new(UIDS[usize::from(mask % 4)]).unwrap()),
        1 => Target::RoomUsers(r, vec![UserId::new(UIDS[usize::from(mask % 4)]).unwrap()]),
        2 if !users.is_empty() => {
            Target::RoomUsers(r, users.iter().map(|u| UserId::new(u).unwrap()).collect())
        }
        _ => Target::Room(r),
    };
    // Expected: who holds each recipient, and whether From is online.
    let (from_online, recipients): (bool, Vec<(String, Option<usize>)>) = match &target {
        Target::User(u) => (
            !w.login_holders(app, from).is_empty(),
            vec![(
                u.to_string(),
                w.login_holders(app, u.as_str()).first().copied(),
            )],
        ),
        Target::RoomUsers(_, us) => (
            !w.member_holders(app, room, from).is_empty(),
            us.iter()
                .map(|u| {
                    (
                        u.to_string(),
                        w.member_holders(app, room, u.as_str()).first().copied(),
                    )
                })
                .collect(),
        ),
        Target::Room(_) => (
            !w.member_holders(app, room, from).is_empty(),
            w.members(app, room)
                .into_iter()
                .map(|(i, u)| (u, Some(i)))
                .collect(),
        ),
    };
    let req = SendRequest {
        app_id: AppId::new(APPS[app]).unwrap(),
        from: UserId::new(from).unwrap(),
        target,
        binary,
        payload,
    };
    let mut observed: Vec<(String, Outcome)> = Vec::new();
    let result = w.hub.send(&req, w.now(), |u, o, receipt| {
        // A receipt comes with every queued outcome, and only with those.
        assert_eq!(receipt.is_some(), o == Outcome::Queued, "{u}: {o:?}");
        observed.push((u.to_string(), o));
    });
    let recs = w.drain(&Doing::Other);
    let msgs = messages(&recs);
    match result {
        Err(SendError::RateLimited(_)) if app == 1 => assert!(msgs.is_empty()),
        Err(SendError::FromIsOnlineUser) if from_online => assert!(msgs.is_empty()),
        Ok(summary) if !from_online => {
            let mut expected = Summary::default();
            let mut expected_outcomes = Vec::new();
            let mut expected_to = Vec::new();
            for (uid, holder) in &recipients {
                let o = match (holder, &req.target) {
                    (Some(i), _) => {
                        expected_to.push(*i);
                        outcome_of(w.sessions[*i].offer())
                    }
                    (None, Target::User(_)) => Outcome::NotOnline,
                    (None, _) => Outcome::NotInRoom,
                };
                expected.add(o);
                expected_outcomes.push((uid.clone(), o));
            }
            assert_eq!(summary, expected, "summary of {req:?}");
            let total = summary.queued
                + summary.not_online
                + summary.not_in_room
                + summary.slow_consumer
                + summary.forwarded;
            assert_eq!(total as usize, recipients.len());
            observed.sort_by(|a, b| a.0.cmp(&b.0));
            expected_outcomes.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(observed, expected_outcomes, "outcomes of {req:?}");
            expected_to.sort();
            let to: Vec<usize> = msgs.iter().map(|(i, _)| *i).collect();
            assert_eq!(to, expected_to, "messages of {req:?}");
            for (_, m) in &msgs {
                assert_eq!(m.uid, from);
                assert_eq!(m.binary, binary);
                assert_eq!(m.payload, req.payload);
                let room_expected = match &req.target {
                    Target::User(_) => None,
                    Target::RoomUsers(r, _) | Target::Room(r) => Some(r.to_string()),
                };
                assert_eq!(m.room_id, room_expected);
            }
        }
        other => panic!("send {req:?}: {other:?}, From online: {from_online}"),
    }
}

/// A client's send (the four ops).
fn client_send(w: &mut World, c: &mut Cursor<'_>, si: usize) {
    let b = c.u8();
    let op = [
        SendOp::UserOutsideRoom,
        SendOp::UserInRoom,
        SendOp::Room,
        SendOp::Server,
    ][usize::from(b % 4)];
    let to = if b & 0x80 != 0 {
        ""
    } else {
        UIDS[usize::from(b >> 2) % UIDS.len()]
    };
    let room = ROOMS[usize::from(c.u8()) % ROOMS.len()];
    let send = SendFrame {
        op,
        msgid: u64::from(c.u8()),
        to: to.into(),
        room_id: room.into(),
        binary: false,
        payload: Bytes::from_static(b"hi"),
    };
    let s = &w.sessions[si];
    let (app, id, alive) = (s.app, s.id, s.alive);

    // The expected answer, and the sessions the message goes to.
    let mut to_sessions: Vec<usize> = Vec::new();
    let expected: Result<i32, ()> = (|| {
        if !alive {
            return Ok(send_result::NOT_LOGIN);
        }
        let from = match op {
            SendOp::UserOutsideRoom | SendOp::Server => match &s.login {
                Some(u) => u.clone(),
                None => return Ok(send_result::NOT_LOGIN),
            },
            _ => match s.rooms.get(room) {
                Some(m) => m.uid.clone(),
                None => return Ok(send_result::NOT_JOIN),
            },
        };
        if matches!(op, SendOp::UserOutsideRoom | SendOp::UserInRoom) && !is_valid_id(to) {
            return Ok(send_result::EMPTY_USER);
        }
        let holder = match op {
            SendOp::Server => {
                return if s.params.is_some() {
                    Err(())
                } else {
                    Ok(send_result::SERVER_PARAMS_NOT_SET)
                }
            }
            SendOp::UserOutsideRoom => w.login_holders(app, to).first().copied(),
            SendOp::UserInRoom => w.member_holders(app, room, to).first().copied(),
            SendOp::Room => {
                to_sessions = w
                    .members(app, room)
                    .into_iter()
                    .filter(|(_, u)| *u != from)
                    .map(|(i, _)| i)
                    .collect();
                return Ok(room_send_result::SUCCESS);
            }
        };
        match holder {
            None => Ok(send_result::NO_RECEIVER),
            Some(h) => {
                to_sessions.push(h);
                Ok(match w.sessions[h].offer() {
                    Offer::Queued(_) => send_result::SUCCESS,
                    Offer::Overflow => send_result::BROKEN,
                    Offer::Closed => send_result::NO_RECEIVER,
                })
            }
        }
    })();
    let params = s.params.clone();
    let sent = w.hub.client_send(APPS[app], id, &send, w.now());
    let recs = w.drain(&Doing::Other);
    let msgs = messages(&recs);
    let answered = |code: i32| {
        let msgid = send.msgid;
        let room_id = send.room_id.clone();
        let answer = match op {
            SendOp::UserOutsideRoom => {
                Event::UserMessageSendResultOutsideRoom { msgid, error: code }
            }
            SendOp::UserInRoom => Event::UserMessageSendResult {
                room_id,
                msgid,
                error: code,
            },
            SendOp::Room => Event::RoomMessageSendResult {
                room_id,
                msgid,
                error: code,
            },
            SendOp::Server => Event::ServerMessageSendResult {
                msgid,
                error: code,
                message: String::new(),
            },
        };
        !alive || events_to(&recs, si).contains(&&answer)
    };
    let rate_limited = app == 1
        && matches!(
            expected,
            Ok(send_result::SUCCESS
                | send_result::BROKEN
                | send_result::NO_RECEIVER
                | room_send_result::SUCCESS)
                | Err(())
        );
    match (sent, expected) {
        (ClientSent::Answered(send_result::EXCEED_QPS), _) if rate_limited => {
            assert!(msgs.is_empty());
            assert!(answered(send_result::EXCEED_QPS));
        }
        (ClientSent::Upstream(p), Err(())) => {
            assert_eq!(Some((p.signature, p.url)), params);
            assert!(msgs.is_empty());
        }
        (ClientSent::Answered(code), Ok(e)) if code == e => {
            assert!(answered(code), "no answer {code} to {send:?}");
            let mut to_sessions = to_sessions;
            to_sessions.sort();
            let to: Vec<usize> = msgs.iter().map(|(i, _)| *i).collect();
            assert_eq!(to, to_sessions, "messages of {send:?}");
        }
        (other, e) => panic!("client send {send:?} from {si}: {other:?}, expected {e:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let registry = Registry::new(vec![app_spec(0), app_spec(1)]).unwrap();
    let mut w = World {
        hub: Hub::new(&registry),
        log: Arc::new(Mutex::new(Vec::new())),
        sessions: Vec::new(),
        now_us: 1_700_000_000_000_000,
    };
    let mut c = Cursor::new(data);
    while step(&mut w, &mut c) {}
});
