//! The hub: who is logged in, who is in which room, and fan-out to them.
//!
//! One hub serves every app of a node. Each app's state sits behind its own short, synchronous
//! lock; nothing in here awaits, spawns or touches a socket. Connections are represented by an
//! [`Outbox`], the port through which the hub hands frames to the edge. The hub pushes every event
//! for a connection itself, under the app lock, so a client always sees its `onLoginResult` before
//! any message that the login made possible, and events in the order the state changed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use herald_proto::client::{login_error, logout_reason, room_state, Delivery, Event, MessageKind};
use herald_proto::ids::{AppId, RoomId, UserId};
use herald_proto::openapi::{ApiError, ErrorCode, SendRequest, Target};
use herald_proto::token::AccessToken;
use parking_lot::Mutex;

use crate::apps::{AppSpec, Registry};
use crate::rate::{RetryAfter, SlidingWindow};
use crate::time::Timestamp;

/// Identifies one client connection within a hub.
pub type SessionId = u64;

/// What happened to a frame offered to an [`Outbox`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued for writing.
    Queued,
    /// The connection's queue is full: it is being cut off as a slow consumer and the frame dropped.
    Overflow,
    /// The connection is already closing; the frame was dropped.
    Closed,
}

/// The port to one client connection. Implementations queue without blocking and never call back
/// into the hub (the hub holds an app lock while it offers).
pub trait Outbox: Send + Sync {
    /// Queues a message frame. The outbox assigns the connection's next msgid, in queue order.
    /// `accepted` is when the API call that sent it was accepted (for latency accounting).
    fn message(&self, delivery: &Delivery, accepted: Timestamp) -> Offer;
    /// Queues a control event.
    fn event(&self, event: &Event) -> Offer;
}

/// What a send did for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Queued on the recipient's connection.
    Queued,
    /// `SendUnicast`: the user is not logged in (or the connection is closing).
    NotOnline,
    /// A room action: the user is not in the room.
    NotInRoom,
    /// The recipient's queue was full; it is being disconnected.
    SlowConsumer,
}

/// Counts of a send's outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Recipients queued.
    pub queued: u32,
    /// Recipients not logged in.
    pub not_online: u32,
    /// Recipients not in the room.
    pub not_in_room: u32,
    /// Recipients cut off as slow consumers.
    pub slow_consumer: u32,
}

impl Summary {
    fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Queued => self.queued += 1,
            Outcome::NotOnline => self.not_online += 1,
            Outcome::NotInRoom => self.not_in_room += 1,
            Outcome::SlowConsumer => self.slow_consumer += 1,
        }
    }
}

/// Why a send was refused before anything was delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The AppId is not served here.
    #[error("unknown app")]
    UnknownApp,
    /// The app is over its calls-per-second limit.
    #[error("rate limited")]
    RateLimited(RetryAfter),
    /// `From` is the id of a user who is logged in (unicast) or in the room (room actions).
    #[error("From is the id of an online user")]
    FromIsOnlineUser,
}

impl From<SendError> for ApiError {
    fn from(e: SendError) -> ApiError {
        match e {
            SendError::UnknownApp => ApiError::new(
                ErrorCode::NotExistAppId,
                "The AppId does not exist on this server.",
            ),
            SendError::RateLimited(_) => ApiError::new(
                ErrorCode::QpsOverLimit,
                "Too many messaging calls per second for this AppId.",
            ),
            SendError::FromIsOnlineUser => ApiError::new(
                ErrorCode::IllegalFrom,
                "From must not be the id of a user who is online in this app or room.",
            ),
        }
    }
}

/// Sizes of the hub's state, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Open connections.
    pub sessions: u64,
    /// Logged-in users.
    pub logins: u64,
    /// Rooms with at least one member.
    pub rooms: u64,
    /// Room memberships.
    pub room_members: u64,
}

#[derive(Clone)]
struct Member {
    session: SessionId,
    outbox: Arc<dyn Outbox>,
}

struct Session {
    outbox: Arc<dyn Outbox>,
    login: Option<UserId>,
    rooms: HashMap<RoomId, UserId>,
}

#[derive(Default)]
struct AppState {
    sessions: HashMap<SessionId, Session>,
    logins: HashMap<UserId, Member>,
    rooms: HashMap<RoomId, HashMap<UserId, Member>>,
}

struct AppHub {
    spec: AppSpec,
    state: Mutex<AppState>,
    limiter: Mutex<SlidingWindow>,
}

/// The routing engine of one node. See the module docs.
pub struct Hub {
    apps: HashMap<AppId, AppHub>,
    next_session: AtomicU64,
}

/// The token checks shared by login and join: signature, app, user, room binding. Returns the
/// parsed token so the caller can apply its own expiry code.
fn check_token(
    spec: &AppSpec,
    token: &str,
    uid: &str,
    room_ok: impl Fn(&str) -> bool,
) -> Option<AccessToken> {
    let parsed = AccessToken::parse(token).ok()?;
    if !parsed.verify(&spec.app_key) {
        return None;
    }
    let t = &parsed.token;
    (t.app_id == spec.app_id.as_str() && t.user_id == uid && room_ok(&t.room_id))
        .then(|| parsed.token.clone())
}

impl Hub {
    /// A hub serving every app of `registry`.
    pub fn new(registry: &Registry) -> Self {
        let apps = registry
            .apps()
            .map(|spec| {
                let hub = AppHub {
                    spec: spec.clone(),
                    state: Mutex::new(AppState::default()),
                    limiter: Mutex::new(SlidingWindow::new(spec.qps_limit)),
                };
                (spec.app_id.clone(), hub)
            })
            .collect();
        Hub {
            apps,
            next_session: AtomicU64::new(1),
        }
    }

    /// Registers a new connection for `app`. `None` if the app is not served.
    pub fn connect(&self, app: &str, outbox: Arc<dyn Outbox>) -> Option<SessionId> {
        let hub = self.apps.get(app)?;
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        hub.state.lock().sessions.insert(
            id,
            Session {
                outbox,
                login: None,
                rooms: HashMap::new(),
            },
        );
        Some(id)
    }

    /// Removes a connection and everything it held (its login and its room memberships). Nothing
    /// is sent to it: it is gone.
    pub fn disconnect(&self, app: &str, session: SessionId) {
        let Some(hub) = self.apps.get(app) else {
            return;
        };
        let mut st = hub.state.lock();
        let Some(s) = st.sessions.remove(&session) else {
            return;
        };
        if let Some(uid) = s.login {
            remove_login(&mut st, &uid, session);
        }
        for (room, uid) in s.rooms {
            remove_member(&mut st, &room, &uid, session);
        }
    }

    /// `login(token, uid)`: answers the connection with `onLoginResult`; a login of the same user
    /// elsewhere is ended with `onLogout(DUPLICATE_LOGIN)`. Returns the `LoginErrorCode`.
    pub fn login(
        &self,
        app: &str,
        session: SessionId,
        uid: &str,
        token: &str,
        now: Timestamp,
    ) -> i32 {
        let Some(hub) = self.apps.get(app) else {
            return login_error::SERVER_ERROR;
        };
        // Verify outside the lock: an HMAC is the most expensive step and needs no state.
        let code = match UserId::new(uid) {
            Err(_) => Err(login_error::INVALID_USER_ID),
            Ok(user) => match check_token(&hub.spec, token, uid, str::is_empty) {
                Some(t) if !t.is_expired(now.secs() as i64) => Ok(user),
                _ => Err(login_error::INVALID_TOKEN),
            },
        };
        let mut st = hub.state.lock();
        let st = &mut *st;
        let Some(me) = st.sessions.get(&session) else {
            return login_error::SERVER_ERROR;
        };
        let result = match code {
            Err(code) => code,
            Ok(_) if me.login.is_some() => login_error::LOGIN_FAILED,
            Ok(user) => {
                let outbox = me.outbox.clone();
                if let Some(old) = st.logins.get(&user).cloned() {
                    if let Some(s) = st.sessions.get_mut(&old.session) {
                        s.login = None;
                    }
                    old.outbox.event(&Event::Logout {
                        reason: logout_reason::DUPLICATE_LOGIN,
                    });
                }
                st.logins.insert(user.clone(), Member { session, outbox });
                if let Some(me) = st.sessions.get_mut(&session) {
                    me.login = Some(user);
                }
                login_error::SUCCESS
            }
        };
        if let Some(me) = st.sessions.get(&session) {
            me.outbox.event(&Event::LoginResult {
                uid: uid.to_owned(),
                error_code: result,
            });
        }
        result
    }

    /// `logout()`: ends the connection's login, if any, and answers `onLogout(LOGOUT)`.
    pub fn logout(&self, app: &str, session: SessionId) {
        let Some(hub) = self.apps.get(app) else {
            return;
        };
        let mut st = hub.state.lock();
        let Some(me) = st.sessions.get_mut(&session) else {
            return;
        };
        let uid = me.login.take();
        let outbox = me.outbox.clone();
        if let Some(uid) = uid {
            remove_login(&mut st, &uid, session);
        }
        outbox.event(&Event::Logout {
            reason: logout_reason::LOGOUT,
        });
    }

    /// `joinRoom(roomId, uid, token)`: answers `onRoomStateChanged`; the same user in the same room
    /// on another connection is removed and told with `DUPLICATE_LOGIN`. Returns the state code.
    pub fn join_room(
        &self,
        app: &str,
        session: SessionId,
        room: &str,
        uid: &str,
        token: &str,
        now: Timestamp,
    ) -> i32 {
        let Some(hub) = self.apps.get(app) else {
            return room_state::JOIN_ROOM_FAILED;
        };
        let checked = match (RoomId::new(room), UserId::new(uid)) {
            (Err(_), _) => Err(room_state::ROOM_ID_ILLEGAL),
            (_, Err(_)) => Err(room_state::JOIN_ROOM_FAILED),
            (Ok(r), Ok(u)) => match check_token(&hub.spec, token, uid, |t| t == room || t == "*") {
                None => Err(room_state::INVALID_TOKEN),
                Some(t) if t.is_expired(now.secs() as i64) => Err(room_state::TOKEN_EXPIRED),
                Some(_) => Ok((r, u)),
            },
        };
        let mut st = hub.state.lock();
        let st = &mut *st;
        let Some(me) = st.sessions.get(&session) else {
            return room_state::JOIN_ROOM_FAILED;
        };
        let outbox = me.outbox.clone();
        let result = match checked {
            Err(code) => code,
            Ok((r, _)) if me.rooms.contains_key(&r) => room_state::ROOM_ALREADY_JOINED,
            Ok((r, u)) => {
                let members = st.rooms.entry(r.clone()).or_default();
                if let Some(old) = members.insert(
                    u.clone(),
                    Member {
                        session,
                        outbox: outbox.clone(),
                    },
                ) {
                    if let Some(s) = st.sessions.get_mut(&old.session) {
                        s.rooms.remove(&r);
                    }
                    old.outbox.event(&Event::RoomStateChanged {
                        room_id: r.to_string(),
                        uid: u.to_string(),
                        state: room_state::DUPLICATE_LOGIN,
                    });
                }
                if let Some(me) = st.sessions.get_mut(&session) {
                    me.rooms.insert(r, u);
                }
                room_state::JOINED
            }
        };
        outbox.event(&Event::RoomStateChanged {
            room_id: room.to_owned(),
            uid: uid.to_owned(),
            state: result,
        });
        result
    }

    /// `leaveRoom(roomId)`: leaves the room if joined, and answers `onLeaveRoom` either way.
    pub fn leave_room(&self, app: &str, session: SessionId, room: &str) {
        let Some(hub) = self.apps.get(app) else {
            return;
        };
        let mut st = hub.state.lock();
        let Some(me) = st.sessions.get_mut(&session) else {
            return;
        };
        let outbox = me.outbox.clone();
        let left = RoomId::new(room)
            .ok()
            .and_then(|r| me.rooms.remove_entry(&r));
        if let Some((r, uid)) = left {
            remove_member(&mut st, &r, &uid, session);
        }
        outbox.event(&Event::LeaveRoom {
            room_id: room.to_owned(),
        });
    }

    /// Delivers a validated OpenAPI message: applies the app's rate limit and the `From` rule, then
    /// queues the message, encoded once, on every recipient's connection. `observe` sees each
    /// recipient's outcome (for per-recipient reports); the summary counts them.
    pub fn send(
        &self,
        req: &SendRequest,
        now: Timestamp,
        mut observe: impl FnMut(&UserId, Outcome),
    ) -> Result<Summary, SendError> {
        let hub = self.apps.get(&req.app_id).ok_or(SendError::UnknownApp)?;
        hub.limiter
            .lock()
            .check(now)
            .map_err(SendError::RateLimited)?;

        let (kind, room) = match &req.target {
            Target::User(_) => (MessageKind::OutsideRoom, None),
            Target::RoomUsers(r, _) => (MessageKind::RoomUser, Some(r)),
            Target::Room(r) => (MessageKind::RoomBroadcast, Some(r)),
        };
        let delivery = Delivery::encode(
            kind,
            req.from.as_str(),
            room.map(RoomId::as_str),
            req.binary,
            &req.payload,
        );

        let mut summary = Summary::default();
        let mut record = |uid: &UserId, o: Outcome| {
            summary.add(o);
            observe(uid, o);
        };
        let offer = |m: &Member| match m.outbox.message(&delivery, now) {
            Offer::Queued => Outcome::Queued,
            Offer::Overflow => Outcome::SlowConsumer,
            Offer::Closed => Outcome::NotOnline,
        };

        let st = hub.state.lock();
        match &req.target {
            Target::User(to) => {
                if st.logins.contains_key(&req.from) {
                    return Err(SendError::FromIsOnlineUser);
                }
                let o = st.logins.get(to).map_or(Outcome::NotOnline, offer);
                record(to, o);
            }
            Target::RoomUsers(room, to) => {
                let members = st.rooms.get(room);
                if members.is_some_and(|m| m.contains_key(&req.from)) {
                    return Err(SendError::FromIsOnlineUser);
                }
                for uid in to {
                    let o = members
                        .and_then(|m| m.get(uid))
                        .map_or(Outcome::NotInRoom, offer);
                    record(uid, o);
                }
            }
            Target::Room(room) => {
                if let Some(members) = st.rooms.get(room) {
                    if members.contains_key(&req.from) {
                        return Err(SendError::FromIsOnlineUser);
                    }
                    for (uid, m) in members {
                        record(uid, offer(m));
                    }
                }
            }
        }
        Ok(summary)
    }

    /// Current sizes, summed over apps.
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for hub in self.apps.values() {
            let st = hub.state.lock();
            s.sessions += st.sessions.len() as u64;
            s.logins += st.logins.len() as u64;
            s.rooms += st.rooms.len() as u64;
            s.room_members += st.rooms.values().map(|m| m.len() as u64).sum::<u64>();
        }
        s
    }
}

fn remove_login(st: &mut AppState, uid: &UserId, session: SessionId) {
    if st.logins.get(uid).is_some_and(|m| m.session == session) {
        st.logins.remove(uid);
    }
}

fn remove_member(st: &mut AppState, room: &RoomId, uid: &UserId, session: SessionId) {
    if let Some(members) = st.rooms.get_mut(room) {
        if members.get(uid).is_some_and(|m| m.session == session) {
            members.remove(uid);
        }
        if members.is_empty() {
            st.rooms.remove(room);
        }
    }
}
