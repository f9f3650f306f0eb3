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

use herald_proto::client::{
    login_error, logout_reason, online_status, room_send_result, room_state, send_result,
    user_leave_reason, Delivery, Event, MessageKind, SendFrame, SendOp, MAX_CLIENT_MESSAGE_BYTES,
};
use herald_proto::ids::{is_valid_id, AppId, RoomId, UserId};
use herald_proto::openapi::{ApiError, ErrorCode, SendRequest, Target};
use herald_proto::token::AccessToken;
use parking_lot::Mutex;

use crate::apps::{AppSpec, Registry};
use crate::rate::{Gcra, RetryAfter, SlidingWindow};
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

/// Why a user left a room or ended a login, as the hooks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// The user called `leaveRoom` / `logout`.
    Left,
    /// The connection ended (closed, heartbeat timeout, slow consumer).
    ConnectionLost,
    /// The business server removed the user (`KickUser`).
    Kicked,
    /// The room token expired without being renewed (`updateToken`).
    TokenExpired,
}

/// Presence facts, for webhooks. Called under the app lock: implementations only queue. A login
/// or membership taken over by another connection with the same user id is no change of presence
/// and calls nothing.
pub trait Hooks: Send + Sync {
    /// `uid` joined `room`.
    fn user_joined(&self, app: &AppId, room: &RoomId, uid: &UserId, at: Timestamp);
    /// `uid` left `room`, which it had joined at `joined_at`.
    fn user_left(
        &self,
        app: &AppId,
        room: &RoomId,
        uid: &UserId,
        why: Departure,
        joined_at: Timestamp,
        at: Timestamp,
    );
    /// `uid` logged in.
    fn user_login(&self, app: &AppId, uid: &UserId, at: Timestamp);
    /// `uid`'s login ended; it had logged in at `since`.
    fn user_logout(
        &self,
        app: &AppId,
        uid: &UserId,
        why: Departure,
        since: Timestamp,
        at: Timestamp,
    );
}

/// Hooks that do nothing.
pub struct NoHooks;

impl Hooks for NoHooks {
    fn user_joined(&self, _: &AppId, _: &RoomId, _: &UserId, _: Timestamp) {}
    fn user_left(
        &self,
        _: &AppId,
        _: &RoomId,
        _: &UserId,
        _: Departure,
        _: Timestamp,
        _: Timestamp,
    ) {
    }
    fn user_login(&self, _: &AppId, _: &UserId, _: Timestamp) {}
    fn user_logout(&self, _: &AppId, _: &UserId, _: Departure, _: Timestamp, _: Timestamp) {}
}

/// Where `sendServerMessage` goes: what `setServerParams` stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerParams {
    /// The opaque signature string, sent with every message.
    pub signature: String,
    /// The business server's URL (allowed by the app's allow-list).
    pub url: String,
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

/// What an operator sees of one app (the console): lists are sorted and cut at `limit` entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppOverview {
    /// The app.
    pub app_id: AppId,
    /// Open connections.
    pub connections: usize,
    /// Logged-in users (at most `limit`).
    pub logins: Vec<UserId>,
    /// Logged-in users in all.
    pub total_logins: usize,
    /// Rooms with their members (at most `limit` rooms of at most `limit` members).
    pub rooms: Vec<(RoomId, Vec<UserId>)>,
    /// Rooms in all.
    pub total_rooms: usize,
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
    since: Timestamp,
}

/// One room this connection has joined.
struct Joined {
    uid: UserId,
    /// When the room token expires (unix seconds; 0: never).
    expires_at: u32,
    /// Whether `onTokenWillExpire` has been sent for the current token.
    warned: bool,
}

struct Session {
    outbox: Arc<dyn Outbox>,
    login: Option<UserId>,
    rooms: HashMap<RoomId, Joined>,
    sends: Gcra,
    server_params: Option<ServerParams>,
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
    hooks: Arc<dyn Hooks>,
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
    /// A hub serving every app of `registry`, without hooks.
    pub fn new(registry: &Registry) -> Self {
        Hub::with_hooks(registry, Arc::new(NoHooks))
    }

    /// A hub serving every app of `registry` that reports presence to `hooks`.
    pub fn with_hooks(registry: &Registry, hooks: Arc<dyn Hooks>) -> Self {
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
            hooks,
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
                sends: Gcra::default(),
                server_params: None,
            },
        );
        Some(id)
    }

    /// Removes a connection and everything it held (its login and its room memberships). Nothing
    /// is sent to it: it is gone. The other members of its rooms see it leave (`DROPPED`).
    pub fn disconnect(&self, app: &str, session: SessionId, now: Timestamp) {
        let Some(hub) = self.apps.get(app) else {
            return;
        };
        let mut st = hub.state.lock();
        let Some(s) = st.sessions.remove(&session) else {
            return;
        };
        if let Some(uid) = s.login {
            self.end_login(hub, &mut st, &uid, session, Departure::ConnectionLost, now);
        }
        for (room, Joined { uid, .. }) in s.rooms {
            self.end_membership(
                hub,
                &mut st,
                &room,
                &uid,
                session,
                Departure::ConnectionLost,
                now,
            );
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
                let member = Member {
                    session,
                    outbox,
                    since: now,
                };
                match st.logins.insert(user.clone(), member) {
                    // The user stays logged in, on this connection now: no hook fires.
                    Some(old) => {
                        if let Some(s) = st.sessions.get_mut(&old.session) {
                            s.login = None;
                            s.server_params = None;
                        }
                        old.outbox.event(&Event::Logout {
                            reason: logout_reason::DUPLICATE_LOGIN,
                        });
                    }
                    None => self.hooks.user_login(&hub.spec.app_id, &user, now),
                }
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
    pub fn logout(&self, app: &str, session: SessionId, now: Timestamp) {
        let Some(hub) = self.apps.get(app) else {
            return;
        };
        let mut st = hub.state.lock();
        let Some(me) = st.sessions.get_mut(&session) else {
            return;
        };
        let uid = me.login.take();
        me.server_params = None;
        let outbox = me.outbox.clone();
        if let Some(uid) = uid {
            self.end_login(hub, &mut st, &uid, session, Departure::Left, now);
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
                Some(t) => Ok((r, u, t.expire_at)),
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
            Ok((r, _, _)) if me.rooms.contains_key(&r) => room_state::ROOM_ALREADY_JOINED,
            Ok((r, u, expires_at)) => {
                let members = st.rooms.entry(r.clone()).or_default();
                let member = Member {
                    session,
                    outbox: outbox.clone(),
                    since: now,
                };
                let replaced = members.insert(u.clone(), member);
                if let Some(old) = &replaced {
                    old.outbox.event(&Event::RoomStateChanged {
                        room_id: r.to_string(),
                        uid: u.to_string(),
                        state: room_state::DUPLICATE_LOGIN,
                    });
                }
                // Answer first, then the presence: the joiner learns it is in before who is.
                outbox.event(&Event::RoomStateChanged {
                    room_id: room.to_owned(),
                    uid: uid.to_owned(),
                    state: room_state::JOINED,
                });
                // A replaced membership keeps the user id in the room: nobody else sees a change.
                if replaced.is_none() {
                    self.hooks.user_joined(&hub.spec.app_id, &r, &u, now);
                }
                if hub.spec.presence_events {
                    for (other, m) in members.iter().filter(|(other, _)| **other != u) {
                        if replaced.is_none() {
                            m.outbox.event(&Event::UserJoined {
                                room_id: r.to_string(),
                                uid: u.to_string(),
                            });
                        }
                        outbox.event(&Event::UserJoined {
                            room_id: r.to_string(),
                            uid: other.to_string(),
                        });
                    }
                }
                if let Some(old) = replaced {
                    if let Some(s) = st.sessions.get_mut(&old.session) {
                        s.rooms.remove(&r);
                    }
                }
                if let Some(me) = st.sessions.get_mut(&session) {
                    let joined = Joined {
                        uid: u,
                        expires_at,
                        warned: false,
                    };
                    me.rooms.insert(r, joined);
                }
                return room_state::JOINED;
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
    pub fn leave_room(&self, app: &str, session: SessionId, room: &str, now: Timestamp) {
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
        if let Some((r, joined)) = left {
            self.end_membership(hub, &mut st, &r, &joined.uid, session, Departure::Left, now);
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

    /// Who is where, per app, for the console. Costs a scan of each app's state under its lock:
    /// an operator's view, not a hot path.
    pub fn overview(&self, limit: usize) -> Vec<AppOverview> {
        let mut apps: Vec<AppOverview> = self
            .apps
            .values()
            .map(|hub| {
                let st = hub.state.lock();
                let mut logins: Vec<UserId> = st.logins.keys().cloned().collect();
                logins.sort();
                logins.truncate(limit);
                let mut rooms: Vec<(RoomId, Vec<UserId>)> = st
                    .rooms
                    .iter()
                    .map(|(r, m)| {
                        let mut members: Vec<UserId> = m.keys().cloned().collect();
                        members.sort();
                        members.truncate(limit);
                        (r.clone(), members)
                    })
                    .collect();
                rooms.sort_by(|a, b| a.0.cmp(&b.0));
                rooms.truncate(limit);
                AppOverview {
                    app_id: hub.spec.app_id.clone(),
                    connections: st.sessions.len(),
                    total_logins: st.logins.len(),
                    logins,
                    total_rooms: st.rooms.len(),
                    rooms,
                }
            })
            .collect();
        apps.sort_by(|a, b| a.app_id.cmp(&b.app_id));
        apps
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

impl Hub {
    /// Ends `uid`'s login if it belongs to `session` (a newer login of the same user stays).
    fn end_login(
        &self,
        hub: &AppHub,
        st: &mut AppState,
        uid: &UserId,
        session: SessionId,
        why: Departure,
        now: Timestamp,
    ) {
        if st.logins.get(uid).is_some_and(|m| m.session == session) {
            if let Some(m) = st.logins.remove(uid) {
                self.hooks
                    .user_logout(&hub.spec.app_id, uid, why, m.since, now);
            }
        }
    }

    /// Ends `uid`'s membership of `room` if it belongs to `session`, tells the other members, and
    /// forgets the room when it is empty.
    #[allow(clippy::too_many_arguments)]
    fn end_membership(
        &self,
        hub: &AppHub,
        st: &mut AppState,
        room: &RoomId,
        uid: &UserId,
        session: SessionId,
        why: Departure,
        now: Timestamp,
    ) {
        let Some(members) = st.rooms.get_mut(room) else {
            return;
        };
        if members.get(uid).is_none_or(|m| m.session != session) {
            return;
        }
        let Some(gone) = members.remove(uid) else {
            return;
        };
        let reason = match why {
            Departure::Left => user_leave_reason::QUIT,
            Departure::ConnectionLost => user_leave_reason::DROPPED,
            Departure::Kicked => user_leave_reason::KICKED_BY_ADMIN,
            Departure::TokenExpired => user_leave_reason::DROPPED,
        };
        if hub.spec.presence_events {
            for m in members.values() {
                m.outbox.event(&Event::UserLeave {
                    room_id: room.to_string(),
                    uid: uid.to_string(),
                    reason,
                });
            }
        }
        self.hooks
            .user_left(&hub.spec.app_id, room, uid, why, gone.since, now);
        if members.is_empty() {
            st.rooms.remove(room);
        }
    }

    /// `KickUser`: removes `uid` from `room`. The kicked connection gets
    /// `onRoomStateChanged(KICKED_OUT)`, the others `onUserLeave(KICKED_BY_ADMIN)`. Returns whether
    /// the user was in the room.
    pub fn kick(&self, app: &str, room: &RoomId, uid: &UserId, now: Timestamp) -> bool {
        let Some(hub) = self.apps.get(app) else {
            return false;
        };
        let mut st = hub.state.lock();
        let Some(member) = st.rooms.get(room).and_then(|m| m.get(uid)).cloned() else {
            return false;
        };
        if let Some(s) = st.sessions.get_mut(&member.session) {
            s.rooms.remove(room);
        }
        member.outbox.event(&Event::RoomStateChanged {
            room_id: room.to_string(),
            uid: uid.to_string(),
            state: room_state::KICKED_OUT,
        });
        self.end_membership(
            hub,
            &mut st,
            room,
            uid,
            member.session,
            Departure::Kicked,
            now,
        );
        true
    }

    /// The user ids in `room`, sorted; `None` when the room does not exist (has no members).
    pub fn room_users(&self, app: &str, room: &RoomId) -> Option<Vec<UserId>> {
        let hub = self.apps.get(app)?;
        let st = hub.state.lock();
        let mut users: Vec<UserId> = st.rooms.get(room)?.keys().cloned().collect();
        users.sort();
        Some(users)
    }

    /// `getPeerOnlineStatus(peerUserId)`: answers `onGetPeerOnlineStatus`.
    pub fn get_peer_online_status(&self, app: &str, session: SessionId, peer: &str) {
        let Some(hub) = self.apps.get(app) else {
            return;
        };
        let st = hub.state.lock();
        let Some(me) = st.sessions.get(&session) else {
            return;
        };
        let status = if st.logins.contains_key(peer) {
            online_status::ONLINE
        } else {
            online_status::OFFLINE
        };
        me.outbox.event(&Event::GetPeerOnlineStatus {
            peer_user_id: peer.to_owned(),
            status,
        });
    }

    /// `setServerParams(signature, url)`: stores them if the connection is logged in and the URL
    /// is on the app's allow-list; answers `onServerParamsSetResult` (200, `NOT_LOGIN`, or
    /// `SERVER_PARAMS_NOT_SET` for an empty signature or a URL not allowed).
    pub fn set_server_params(
        &self,
        app: &str,
        session: SessionId,
        signature: &str,
        url: &str,
    ) -> i32 {
        let Some(hub) = self.apps.get(app) else {
            return send_result::SERVER_PARAMS_NOT_SET;
        };
        let mut st = hub.state.lock();
        let Some(me) = st.sessions.get_mut(&session) else {
            return send_result::SERVER_PARAMS_NOT_SET;
        };
        let result = if me.login.is_none() {
            send_result::NOT_LOGIN
        } else if signature.is_empty() || !hub.spec.server_url_allowed(url) {
            me.server_params = None;
            send_result::SERVER_PARAMS_NOT_SET
        } else {
            me.server_params = Some(ServerParams {
                signature: signature.to_owned(),
                url: url.to_owned(),
            });
            send_result::SERVER_PARAMS_SET
        };
        me.outbox
            .event(&Event::ServerParamsSetResult { error: result });
        result
    }

    /// A message a client sends (any [`SendOp`]): checks it in the vendor's order — the sender
    /// (logged in, or joined to the room), the recipient id, the size, the connection's rate —
    /// then routes it like an OpenAPI message, from the sender's uid, and answers the sender with
    /// the op's result event. A server message that passes is returned for the edge to post; the
    /// edge answers it.
    pub fn client_send(
        &self,
        app: &str,
        session: SessionId,
        send: &SendFrame,
        now: Timestamp,
    ) -> ClientSent {
        let Some(hub) = self.apps.get(app) else {
            return ClientSent::Answered(send_result::NOT_LOGIN);
        };
        let mut st = hub.state.lock();
        let st = &mut *st;
        let Some(me) = st.sessions.get_mut(&session) else {
            return ClientSent::Answered(send_result::NOT_LOGIN);
        };
        let op = send.op;
        let checked = (|| {
            let (from, room) = match op {
                SendOp::UserOutsideRoom | SendOp::Server => {
                    (me.login.clone().ok_or(send_result::NOT_LOGIN)?, None)
                }
                SendOp::UserInRoom | SendOp::Room => {
                    let (r, joined) = RoomId::new(&send.room_id)
                        .ok()
                        .and_then(|r| me.rooms.get_key_value(&r))
                        .ok_or(send_result::NOT_JOIN)?;
                    (joined.uid.clone(), Some(r.clone()))
                }
            };
            if matches!(op, SendOp::UserOutsideRoom | SendOp::UserInRoom) && !is_valid_id(&send.to)
            {
                return Err(send_result::EMPTY_USER);
            }
            if op == SendOp::Server && me.server_params.is_none() {
                return Err(send_result::SERVER_PARAMS_NOT_SET);
            }
            if send.payload.len() > MAX_CLIENT_MESSAGE_BYTES {
                return Err(send_result::EXCEED_MAX_LENGTH);
            }
            me.sends
                .check(hub.spec.client_send_rate, now)
                .map_err(|_| send_result::EXCEED_QPS)?;
            Ok((from, room))
        })();
        let outcome = checked.and_then(|(from, room)| {
            let delivery = |kind| {
                let room = room.as_ref().map(RoomId::as_str);
                Delivery::encode(kind, from.as_str(), room, send.binary, &send.payload)
            };
            match (op, &room) {
                (SendOp::Server, _) => Ok(None),
                (SendOp::UserOutsideRoom, _) => {
                    let to = st
                        .logins
                        .get(send.to.as_str())
                        .ok_or(send_result::NO_RECEIVER)?;
                    offer_result(to.outbox.message(&delivery(MessageKind::OutsideRoom), now))
                }
                (SendOp::UserInRoom, Some(r)) => {
                    let to = st
                        .rooms
                        .get(r)
                        .and_then(|m| m.get(send.to.as_str()))
                        .ok_or(send_result::NO_RECEIVER)?;
                    offer_result(to.outbox.message(&delivery(MessageKind::RoomUser), now))
                }
                (SendOp::Room, Some(r)) => {
                    let d = delivery(MessageKind::RoomBroadcast);
                    let members = st.rooms.get(r).into_iter().flatten();
                    for (_, m) in members.filter(|(uid, _)| **uid != from) {
                        m.outbox.message(&d, now);
                    }
                    Ok(None)
                }
                // Room ops always have their room.
                (SendOp::UserInRoom | SendOp::Room, None) => Err(send_result::NOT_JOIN),
            }
        });
        let error = match outcome {
            Ok(_) if op == SendOp::Server => {
                let params = me.server_params.clone();
                return params.map_or(
                    ClientSent::Answered(send_result::SERVER_PARAMS_NOT_SET),
                    ClientSent::Upstream,
                );
            }
            Ok(_) if op == SendOp::Room => room_send_result::SUCCESS,
            Ok(_) => send_result::SUCCESS,
            Err(e) => e,
        };
        let msgid = send.msgid;
        let room_id = send.room_id.clone();
        me.outbox.event(&match op {
            SendOp::UserOutsideRoom => Event::UserMessageSendResultOutsideRoom { msgid, error },
            SendOp::UserInRoom => Event::UserMessageSendResult {
                room_id,
                msgid,
                error,
            },
            SendOp::Room => Event::RoomMessageSendResult {
                room_id,
                msgid,
                error,
            },
            SendOp::Server => Event::ServerMessageSendResult {
                msgid,
                error,
                message: String::new(),
            },
        });
        ClientSent::Answered(error)
    }
}

/// What [`Hub::client_send`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientSent {
    /// The sender was answered with this result code.
    Answered(i32),
    /// A server message passed the checks: the edge posts it to these parameters and answers.
    Upstream(ServerParams),
}

/// How long before a room token expires its connection is warned (`onTokenWillExpire`).
pub const TOKEN_WARNING_SECS: u32 = 30;

impl Hub {
    /// `updateToken(roomId, token)`: renews the token of a joined room. A token that is not valid
    /// for the room and the uid joined with (or already expired) is answered
    /// `onRoomStateChanged(-1010)` and changes nothing.
    pub fn update_room_token(
        &self,
        app: &str,
        session: SessionId,
        room: &str,
        token: &str,
        now: Timestamp,
    ) {
        let Some(hub) = self.apps.get(app) else {
            return;
        };
        let mut st = hub.state.lock();
        let Some(me) = st.sessions.get_mut(&session) else {
            return;
        };
        let outbox = me.outbox.clone();
        let joined = RoomId::new(room).ok().and_then(|r| me.rooms.get_mut(&r));
        let Some(joined) = joined else {
            outbox.event(&Event::RoomStateChanged {
                room_id: room.to_owned(),
                uid: String::new(),
                state: room_state::UPDATE_TOKEN_WITH_INVALID_TOKEN,
            });
            return;
        };
        let uid = joined.uid.as_str();
        match check_token(&hub.spec, token, uid, |t| t == room || t == "*") {
            Some(t) if !t.is_expired(now.secs() as i64) => {
                joined.expires_at = t.expire_at;
                joined.warned = false;
            }
            _ => {
                outbox.event(&Event::RoomStateChanged {
                    room_id: room.to_owned(),
                    uid: uid.to_owned(),
                    state: room_state::UPDATE_TOKEN_WITH_INVALID_TOKEN,
                });
            }
        }
    }

    /// When [`Hub::expire_tokens`] next has something to do for this connection (unix seconds):
    /// a warning 30 s before a room token expires, or its expiry.
    pub fn token_deadline(&self, app: &str, session: SessionId) -> Option<u64> {
        let hub = self.apps.get(app)?;
        let st = hub.state.lock();
        let me = st.sessions.get(&session)?;
        me.rooms
            .values()
            .filter(|j| j.expires_at != 0)
            .map(|j| {
                let at = if j.warned {
                    // Expired once `now > expires_at`, in whole seconds.
                    j.expires_at.saturating_add(1)
                } else {
                    j.expires_at.saturating_sub(TOKEN_WARNING_SECS)
                };
                u64::from(at)
            })
            .min()
    }

    /// Warns of room tokens about to expire (`onTokenWillExpire`) and removes memberships whose
    /// token has expired (`onRoomStateChanged(-1009)`; the other members see the user drop).
    pub fn expire_tokens(&self, app: &str, session: SessionId, now: Timestamp) {
        let Some(hub) = self.apps.get(app) else {
            return;
        };
        let mut st = hub.state.lock();
        let st = &mut *st;
        let Some(me) = st.sessions.get_mut(&session) else {
            return;
        };
        let secs = now.secs();
        let mut expired = Vec::new();
        for (room, j) in me.rooms.iter_mut().filter(|(_, j)| j.expires_at != 0) {
            if secs > u64::from(j.expires_at) {
                expired.push(room.clone());
            } else if !j.warned && secs + u64::from(TOKEN_WARNING_SECS) >= u64::from(j.expires_at) {
                j.warned = true;
                me.outbox.event(&Event::TokenWillExpire {
                    room_id: room.to_string(),
                });
            }
        }
        let outbox = me.outbox.clone();
        for room in expired {
            let Some(j) = me_rooms_remove(st, session, &room) else {
                continue;
            };
            outbox.event(&Event::RoomStateChanged {
                room_id: room.to_string(),
                uid: j.uid.to_string(),
                state: room_state::TOKEN_EXPIRED,
            });
            self.end_membership(
                hub,
                st,
                &room,
                &j.uid,
                session,
                Departure::TokenExpired,
                now,
            );
        }
    }
}

fn me_rooms_remove(st: &mut AppState, session: SessionId, room: &RoomId) -> Option<Joined> {
    st.sessions.get_mut(&session)?.rooms.remove(room)
}

/// A user send's result from what the recipient's outbox did with it.
fn offer_result(offer: Offer) -> Result<Option<()>, i32> {
    match offer {
        Offer::Queued => Ok(None),
        Offer::Overflow => Err(send_result::BROKEN),
        Offer::Closed => Err(send_result::NO_RECEIVER),
    }
}
