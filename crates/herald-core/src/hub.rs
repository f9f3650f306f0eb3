//! The hub: who is logged in, who is in which room, and fan-out to them.
//!
//! One hub serves every app of a node. Each app's state sits behind its own short, synchronous
//! lock; nothing in here awaits, spawns or touches a socket. Connections are represented by an
//! [`Outbox`], the port through which the hub hands frames to the edge. The hub pushes every event
//! for a connection itself, under the app lock, so a client always sees its `onLoginResult` before
//! any message that the login made possible, and events in the order the state changed.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use herald_proto::client::{
    login_error, logout_reason, online_status, room_send_result, room_state, send_result,
    user_leave_reason, Delivery, Event, MessageKind, SendFrame, SendOp, StreamPos, StreamState,
    MAX_CLIENT_MESSAGE_BYTES,
};
use herald_proto::ids::{is_valid_id, AppId, RoomId, UserId};
use herald_proto::openapi::{ApiError, ErrorCode, SendRequest, Target};
use herald_proto::token::AccessToken;
use parking_lot::Mutex;

use crate::apps::{AppSpec, Registry};
use crate::rate::{Gcra, RetryAfter, SlidingWindow};
use crate::relay::{Addressees, NodeMessage};
use crate::stream::{Held, Resumed, Stream, Window};
use crate::time::Timestamp;

/// Identifies one client connection within a hub.
pub type SessionId = u64;

/// What happened to a frame offered to an [`Outbox`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued for writing: a message frame with this connection's msgid for it (events: 0).
    Queued(u64),
    /// The connection's queue is full: it is being cut off as a slow consumer and the frame dropped.
    Overflow,
    /// The connection is already closing; the frame was dropped.
    Closed,
}

/// The port to one client connection. Implementations queue without blocking and never call back
/// into the hub (the hub holds an app lock while it offers).
pub trait Outbox: Send + Sync {
    /// Queues a message frame. The outbox assigns the connection's next msgid, in queue order.
    /// `pos` is the message's place in the recipient's stream (`None`: recovery is off), written
    /// in the frame's prefix. `accepted` is when the API call that sent it was accepted (for
    /// latency accounting).
    fn message(&self, delivery: &Delivery, pos: Option<StreamPos>, accepted: Timestamp) -> Offer;
    /// Queues a control event.
    fn event(&self, event: &Event) -> Offer;
    /// The highest msgid whose frame has been written to the connection (0: none, or not
    /// tracked): what a delivery report calls written rather than queued.
    fn written(&self) -> u64 {
        0
    }
    /// The highest msgid the client has acknowledged processing (cumulative; 0: none, or not
    /// tracked): what a call that waits for acks calls acked.
    fn acked(&self) -> u64 {
        0
    }
}

/// Where a recipient's copy of a message went: its connection's outbox and the msgid it got there.
/// Given to a delivery's observer with every queued outcome, for per-recipient reports.
#[derive(Clone, Copy)]
pub struct Receipt<'a> {
    /// The recipient's connection.
    pub outbox: &'a Arc<dyn Outbox>,
    /// The connection's msgid for the message.
    pub msgid: u64,
}

impl Receipt<'_> {
    /// Whether the connection has written the message to its socket by now.
    pub fn written(&self) -> bool {
        self.outbox.written() >= self.msgid
    }

    /// Whether the client has acknowledged processing the message by now.
    pub fn acked(&self) -> bool {
        self.outbox.acked() >= self.msgid
    }
}

impl Outcome {
    /// The outcome as a report states it now: `Queued` becomes `Written` once the connection has
    /// written the message.
    pub fn now(self, receipt: Option<Receipt<'_>>) -> Outcome {
        match (self, receipt) {
            (Outcome::Queued, Some(r)) if r.written() => Outcome::Written,
            (o, _) => o,
        }
    }
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

/// The port to the rest of a cluster: told, under the app lock, whenever a login or membership
/// registered in the cluster ends here, so the cluster can forget it (if `version` is still the
/// registration it knows) and tell the room's other nodes. Not called when another connection or
/// node took the login or membership over. Implementations only queue. `held`: recovery is on
/// and the connection was lost, so the cluster keeps the stream for the window; otherwise the
/// stream is forgotten with the registration.
pub trait Directory: Send + Sync {
    /// `uid`'s login here, registered as `version`, ended.
    fn login_ended(&self, app: &AppId, uid: &UserId, version: u64, held: bool);
    /// `uid`'s membership of `room` here, registered as `version`, ended; the room's members see
    /// `reason` (a `user_leave_reason`).
    fn membership_ended(&self, app: &AppId, room: &RoomId, uid: &UserId, ended: Ended);
}

/// How a registered membership ended, for [`Directory::membership_ended`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// The registration's version.
    pub version: u64,
    /// The `user_leave_reason` the room's members see.
    pub reason: i32,
    /// The stream is held for recovery (see [`Directory`]).
    pub held: bool,
}

/// No cluster: a single node.
pub struct NoDirectory;

impl Directory for NoDirectory {
    fn login_ended(&self, _: &AppId, _: &UserId, _: u64, _: bool) {}
    fn membership_ended(&self, _: &AppId, _: &RoomId, _: &UserId, _: Ended) {}
}

/// What the cluster said when this node registered a login or membership, before the hub commits
/// it. The default is a single node's (or a cluster that cannot be reached): nothing known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claim {
    /// The cluster's version of the registration (0: not registered).
    pub version: u64,
    /// A connection on another node held it: the user stays present, so no hook fires and nobody
    /// is told of a join or login.
    pub took_over: bool,
    /// With recovery on in a cluster: the stream as Redis keeps it (`None`: the hub's own).
    pub stream: Option<Box<ClaimedStream>>,
}

/// A login's or membership's stream as a cluster's claim found it: with recovery on, a cluster
/// keeps every stream's window in Redis, takes positions there, and answers a resume there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedStream {
    /// The stream's epoch and last position when it was claimed.
    pub head: StreamPos,
    /// What the client's resume found (`None`: it asked for none).
    pub resumed: Option<Resumed>,
}

/// A join that passed its checks, waiting for [`Hub::commit_join`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTicket {
    /// The room.
    pub room: RoomId,
    /// The user.
    pub uid: UserId,
    /// When the room token expires (unix seconds; 0: never).
    expires_at: u32,
    /// Where the client asked to resume the membership's stream.
    resume: Option<StreamPos>,
}

/// A login that passed its checks, waiting for [`Hub::commit_login`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginTicket {
    /// The user.
    pub uid: UserId,
    /// Where the client asked to resume the login's stream.
    resume: Option<StreamPos>,
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
    /// Queued, and written to the connection's socket by the time a report was made (the hub
    /// reports `Queued`; a report upgrades it from the [`Receipt`]).
    Written,
    /// `SendUnicast`: the user is not logged in (or the connection is closing).
    NotOnline,
    /// A room action: the user is not in the room.
    NotInRoom,
    /// The recipient's queue was full; it is being disconnected.
    SlowConsumer,
    /// Handed to the cluster node that holds the recipient.
    Forwarded,
    /// The recipient has no connection, but its stream is held for recovery: the message is
    /// kept and replayed if the user resumes within the window.
    Held,
    /// Queued, and acknowledged by the recipient's client within the wait of a call that asked
    /// for acks (the hub never reports it; the edge does, from the [`Receipt`]).
    Acked,
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
    /// Recipients on other nodes of a cluster, to which the message was forwarded.
    pub forwarded: u32,
    /// Recipients between connections whose streams keep the message for recovery.
    pub held: u32,
}

impl Summary {
    /// Counts one recipient's outcome.
    pub fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Queued | Outcome::Written | Outcome::Acked => self.queued += 1,
            Outcome::NotOnline => self.not_online += 1,
            Outcome::NotInRoom => self.not_in_room += 1,
            Outcome::SlowConsumer => self.slow_consumer += 1,
            Outcome::Forwarded => self.forwarded += 1,
            Outcome::Held => self.held += 1,
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
    /// Streams held for recovery after their connection was lost.
    pub held_streams: u64,
}

/// The connection a login or membership was taken from, to be told it lost it.
type Replaced = (SessionId, Arc<dyn Outbox>);

struct Member {
    session: SessionId,
    outbox: Arc<dyn Outbox>,
    since: Timestamp,
    /// The cluster's version of this registration (0: none).
    version: u64,
    /// The login's or membership's stream (unused while recovery is off).
    stream: Stream,
}

impl Member {
    /// Queues `delivery` on the connection, at the next position of the stream.
    fn offer(&mut self, delivery: &Delivery, accepted: Timestamp, w: &Window) -> Offer {
        let pos = w
            .enabled()
            .then(|| self.stream.append(delivery, accepted, w));
        self.outbox.message(delivery, pos, accepted)
    }
}

/// One room this connection has joined.
struct Joined {
    uid: UserId,
    /// When the room token expires (unix seconds; 0: never).
    expires_at: u32,
    /// Whether `onTokenWillExpire` has been sent for the current token.
    warned: bool,
}

/// One connection. Most connections never join a room or set server parameters, and every
/// byte here is paid per connection (and about 1.6 times, with the map's free buckets), so what
/// is rare lives behind a pointer.
struct Session {
    outbox: Arc<dyn Outbox>,
    login: Option<UserId>,
    rooms: Rooms,
    sends: Gcra,
    server_params: Option<Box<ServerParams>>,
}

/// The rooms one connection has joined: a map that costs one pointer until the first join.
/// (Boxed on purpose: an empty `HashMap` is 48 bytes inline, paid by every connection.)
#[derive(Default)]
#[allow(clippy::box_collection)]
struct Rooms(Option<Box<HashMap<RoomId, Joined>>>);

impl Rooms {
    fn get<Q: Hash + Eq + ?Sized>(&self, room: &Q) -> Option<&Joined>
    where
        RoomId: Borrow<Q>,
    {
        self.0.as_ref()?.get(room)
    }
    fn get_mut<Q: Hash + Eq + ?Sized>(&mut self, room: &Q) -> Option<&mut Joined>
    where
        RoomId: Borrow<Q>,
    {
        self.0.as_mut()?.get_mut(room)
    }
    fn get_key_value<Q: Hash + Eq + ?Sized>(&self, room: &Q) -> Option<(&RoomId, &Joined)>
    where
        RoomId: Borrow<Q>,
    {
        self.0.as_ref()?.get_key_value(room)
    }
    fn contains_key<Q: Hash + Eq + ?Sized>(&self, room: &Q) -> bool
    where
        RoomId: Borrow<Q>,
    {
        self.get(room).is_some()
    }
    fn insert(&mut self, room: RoomId, joined: Joined) {
        self.0
            .get_or_insert_with(Default::default)
            .insert(room, joined);
    }
    fn remove_entry<Q: Hash + Eq + ?Sized>(&mut self, room: &Q) -> Option<(RoomId, Joined)>
    where
        RoomId: Borrow<Q>,
    {
        let map = self.0.as_mut()?;
        let entry = map.remove_entry(room);
        if map.is_empty() {
            self.0 = None;
        }
        entry
    }
    fn remove<Q: Hash + Eq + ?Sized>(&mut self, room: &Q) -> Option<Joined>
    where
        RoomId: Borrow<Q>,
    {
        self.remove_entry(room).map(|(_, j)| j)
    }
    fn iter(&self) -> impl Iterator<Item = (&RoomId, &Joined)> {
        self.0.iter().flat_map(|m| m.iter())
    }
    fn iter_mut(&mut self) -> impl Iterator<Item = (&RoomId, &mut Joined)> {
        self.0.iter_mut().flat_map(|m| m.iter_mut())
    }
    fn values(&self) -> impl Iterator<Item = &Joined> {
        self.iter().map(|(_, j)| j)
    }
}

impl IntoIterator for Rooms {
    type Item = (RoomId, Joined);
    type IntoIter = std::iter::Flatten<std::option::IntoIter<HashMap<RoomId, Joined>>>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.map(|b| *b).into_iter().flatten()
    }
}

#[derive(Default)]
struct AppState {
    sessions: HashMap<SessionId, Session>,
    logins: HashMap<UserId, Member>,
    rooms: HashMap<RoomId, HashMap<UserId, Member>>,
    /// Streams of logins whose connection was lost, kept for the window (recovery).
    held_logins: HashMap<UserId, Held>,
    /// Streams of memberships whose connection was lost, kept for the window (recovery).
    held_members: HashMap<RoomId, HashMap<UserId, Held>>,
    /// Logins being claimed in a cluster that keeps streams in Redis, by user: what arrives for
    /// them before their commit (see [`Hub::reserve`]).
    pending_logins: HashMap<UserId, Vec<Pending>>,
    /// Memberships being claimed so, by room and user.
    pending_members: HashMap<RoomId, HashMap<UserId, Vec<Pending>>>,
}

/// A login or membership between its claim in a cluster and its commit here. Messages published
/// after the claim (streams in Redis) may reach this node first; they are kept here, in the order
/// they came (their positions' order), for the commit to queue after the claimed position. So are
/// the room's presence notices from other nodes, for the joiner to hear after the claim's list of
/// members.
struct Pending {
    session: SessionId,
    kept: Vec<(StreamPos, Delivery, Timestamp)>,
    /// More came than a window holds: none is queued, and a resume is answered `recovered: false`.
    overflowed: bool,
    /// Who joined (`None`) or left (the reason) the room on other nodes meanwhile, in order.
    presence: Vec<(String, Option<i32>)>,
}

/// Presence notices kept for one pending join, at most (a room's churn during one claim).
const MAX_PENDING_PRESENCE: usize = 65_536;

impl Pending {
    fn keep(&mut self, pos: StreamPos, delivery: &Delivery, accepted: Timestamp, w: &Window) {
        if self.overflowed {
            return;
        }
        if self.kept.len() >= w.messages {
            self.overflowed = true;
            self.kept = Vec::new();
            return;
        }
        self.kept.push((pos, delivery.clone(), accepted));
    }
}

impl AppState {
    /// Takes `session`'s pending claim of `uid`'s login (`room` `None`) or membership out,
    /// forgetting what it empties.
    fn take_pending(
        &mut self,
        room: Option<&RoomId>,
        uid: &UserId,
        session: SessionId,
    ) -> Option<Pending> {
        let lists = match room {
            None => &mut self.pending_logins,
            Some(r) => self.pending_members.get_mut(r)?,
        };
        let list = lists.get_mut(uid)?;
        let i = list.iter().position(|p| p.session == session)?;
        let p = list.swap_remove(i);
        if list.is_empty() {
            lists.remove(uid);
            if let Some(r) = room.filter(|_| lists.is_empty()) {
                self.pending_members.remove(r);
            }
        }
        Some(p)
    }
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
    directory: Arc<dyn Directory>,
    /// Part of a cluster: a recipient not found here may be on another node.
    clustered: bool,
    /// How much of each stream is kept (recovery; off unless [`Hub::with_recovery`]).
    window: Window,
    /// The epoch the next new stream gets.
    next_epoch: AtomicU64,
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
        Hub::build(registry, hooks, Arc::new(NoDirectory), false)
    }

    /// A hub that is one node of a cluster: it reports the end of every registered login and
    /// membership to `directory`, and leaves recipients it does not hold to the cluster.
    pub fn clustered(
        registry: &Registry,
        hooks: Arc<dyn Hooks>,
        directory: Arc<dyn Directory>,
    ) -> Self {
        Hub::build(registry, hooks, directory, true)
    }

    fn build(
        registry: &Registry,
        hooks: Arc<dyn Hooks>,
        directory: Arc<dyn Directory>,
        clustered: bool,
    ) -> Self {
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
            directory,
            clustered,
            window: Window::OFF,
            next_epoch: AtomicU64::new(1),
        }
    }

    /// Turns recovery on: every login and membership keeps a stream within `window`, and
    /// streams are numbered from `epoch_seed` (the edge picks it at random at start, below
    /// 2^52, so that epochs of different runs of a node differ and stay exact in JSON numbers).
    pub fn with_recovery(mut self, window: Window, epoch_seed: u64) -> Self {
        self.window = window;
        self.next_epoch = AtomicU64::new(epoch_seed.max(1));
        self
    }

    /// The stream a new login or membership goes on with: the one of the connection it takes
    /// over (returned with that connection, to be told), else the one held since its user's
    /// connection was lost, unless that has expired, else a new one.
    fn stream_for(
        &self,
        replaced: Option<Member>,
        held: Option<Held>,
        now: Timestamp,
    ) -> (Option<Replaced>, Stream) {
        if let Some(m) = replaced {
            return (Some((m.session, m.outbox)), m.stream);
        }
        let held = held.filter(|h| !h.expired(now, &self.window));
        let epoch = || self.next_epoch.fetch_add(1, Ordering::Relaxed);
        (
            None,
            held.map_or_else(|| Stream::new(epoch()), |h| h.stream),
        )
    }

    /// Called by a cluster before it claims a login (`room` `None`) or membership for
    /// `session`: from now on what arrives for it is kept until the commit ([`Hub::commit_login`],
    /// [`Hub::commit_join`]: they queue what follows the claimed position, and tell the joiner
    /// who joined or left the room meanwhile), or until the connection ends. Messages are kept
    /// only with streams in the cluster; for a login there is nothing else to keep, so a login
    /// reserves nothing without them. Does nothing on a single node.
    pub fn reserve(&self, app: &str, session: SessionId, room: Option<&RoomId>, uid: &UserId) {
        let wanted = match room {
            None => self.streams_in_cluster(),
            Some(_) => self.clustered,
        };
        let Some(hub) = self.apps.get(app).filter(|_| wanted) else {
            return;
        };
        let mut st = hub.state.lock();
        let lists = match room {
            None => &mut st.pending_logins,
            Some(r) => st.pending_members.entry(r.clone()).or_default(),
        };
        lists.entry(uid.clone()).or_default().push(Pending {
            session,
            kept: Vec::new(),
            overflowed: false,
            presence: Vec::new(),
        });
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
                rooms: Rooms::default(),
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
        if !st.pending_logins.is_empty() || !st.pending_members.is_empty() {
            let mine = |l: &mut Vec<Pending>| {
                l.retain(|p| p.session != session);
                !l.is_empty()
            };
            st.pending_logins.retain(|_, l| mine(l));
            st.pending_members.retain(|_, m| {
                m.retain(|_, l| mine(l));
                !m.is_empty()
            });
        }
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
    /// A single node's login: [`Hub::prepare_login`] and [`Hub::commit_login`] with nothing claimed.
    pub fn login(
        &self,
        app: &str,
        session: SessionId,
        uid: &str,
        token: &str,
        now: Timestamp,
    ) -> i32 {
        let checked = self.prepare_login(app, session, uid, token, None, now);
        self.commit_login(app, session, uid, checked, Claim::default(), now)
    }

    /// The checks of a login that need no cluster: the user id, the token (signature, app, user,
    /// expiry), and that the connection is not logged in already. Answers nothing; a cluster
    /// registers the login between this and [`Hub::commit_login`]. `resume`: the client asks for
    /// what its stream got after this position (recovery).
    pub fn prepare_login(
        &self,
        app: &str,
        session: SessionId,
        uid: &str,
        token: &str,
        resume: Option<StreamPos>,
        now: Timestamp,
    ) -> Result<LoginTicket, i32> {
        let hub = self.apps.get(app).ok_or(login_error::SERVER_ERROR)?;
        // Verify outside the lock: an HMAC is the most expensive step and needs no state.
        let user = UserId::new(uid).map_err(|_| login_error::INVALID_USER_ID)?;
        match check_token(&hub.spec, token, uid, str::is_empty) {
            Some(t) if !t.is_expired(now.secs() as i64) => {}
            _ => return Err(login_error::INVALID_TOKEN),
        }
        let st = hub.state.lock();
        match st.sessions.get(&session) {
            None => Err(login_error::SERVER_ERROR),
            Some(me) if me.login.is_some() => Err(login_error::LOGIN_FAILED),
            Some(_) => Ok(LoginTicket { uid: user, resume }),
        }
    }

    /// Completes a login [`Hub::prepare_login`] checked (or answers its error): takes the user
    /// over from another connection here, registers it as `claim.version`, and answers
    /// `onLoginResult`. `claim.took_over`: the user was logged in on another node, so it stays
    /// logged in and no hook fires. With recovery on, the login continues the user's stream (of
    /// the login it replaces, or held since its connection was lost) or starts one; a resume
    /// replays what the stream got after the client's position, right after the answer.
    /// Returns the `LoginErrorCode`.
    pub fn commit_login(
        &self,
        app: &str,
        session: SessionId,
        uid: &str,
        checked: Result<LoginTicket, i32>,
        claim: Claim,
        now: Timestamp,
    ) -> i32 {
        let Some(hub) = self.apps.get(app) else {
            return login_error::SERVER_ERROR;
        };
        let mut st = hub.state.lock();
        let st = &mut *st;
        let pending = match &checked {
            Ok(t) => st.take_pending(None, &t.uid, session),
            Err(_) => None,
        };
        let Some(me) = st.sessions.get(&session) else {
            return login_error::SERVER_ERROR;
        };
        let mut opened = Opened::default();
        let result = match checked {
            Err(code) => code,
            Ok(_) if me.login.is_some() => login_error::LOGIN_FAILED,
            Ok(LoginTicket { uid: user, resume }) => {
                let outbox = me.outbox.clone();
                let held = st.held_logins.remove(&user);
                let (old, mut stream) = self.stream_for(st.logins.remove(&user), held, now);
                opened = match claim.stream {
                    Some(c) => Opened::claimed(*c, pending),
                    None => self.open(&mut stream, resume, now),
                };
                let member = Member {
                    session,
                    outbox,
                    since: now,
                    version: claim.version,
                    stream,
                };
                st.logins.insert(user.clone(), member);
                match old {
                    // The user stays logged in, on this connection now: no hook fires.
                    Some((old_session, old_outbox)) => {
                        if let Some(s) = st.sessions.get_mut(&old_session) {
                            s.login = None;
                            s.server_params = None;
                        }
                        old_outbox.event(&Event::Logout {
                            reason: logout_reason::DUPLICATE_LOGIN,
                        });
                    }
                    None if claim.took_over => {}
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
                stream: opened.state,
            });
            opened.replay(&*me.outbox);
        }
        result
    }

    /// The stream of a login or membership being made, as its answer states it, and what a
    /// resume replays after the answer.
    fn open(&self, stream: &mut Stream, resume: Option<StreamPos>, now: Timestamp) -> Opened {
        if !self.window.enabled() {
            return Opened::default();
        }
        let resumed = resume.map(|from| stream.resume(from, now, &self.window));
        Opened::of(stream.head(), resumed)
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
    /// A single node's join: [`Hub::prepare_join`] and [`Hub::commit_join`] with nothing claimed.
    pub fn join_room(
        &self,
        app: &str,
        session: SessionId,
        room: &str,
        uid: &str,
        token: &str,
        now: Timestamp,
    ) -> i32 {
        let checked = self.prepare_join(app, session, room, uid, token, None, now);
        self.commit_join(app, session, room, uid, checked, Claim::default(), &[], now)
    }

    /// The checks of a join that need no cluster: the ids, the token (signature, app, user, room,
    /// expiry), and that the connection has not joined the room already. Answers nothing.
    /// `resume`: as for [`Hub::prepare_login`], for the membership's stream.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare_join(
        &self,
        app: &str,
        session: SessionId,
        room: &str,
        uid: &str,
        token: &str,
        resume: Option<StreamPos>,
        now: Timestamp,
    ) -> Result<JoinTicket, i32> {
        let hub = self.apps.get(app).ok_or(room_state::JOIN_ROOM_FAILED)?;
        let (r, u) = match (RoomId::new(room), UserId::new(uid)) {
            (Err(_), _) => return Err(room_state::ROOM_ID_ILLEGAL),
            (_, Err(_)) => return Err(room_state::JOIN_ROOM_FAILED),
            (Ok(r), Ok(u)) => (r, u),
        };
        let expires_at = match check_token(&hub.spec, token, uid, |t| t == room || t == "*") {
            None => return Err(room_state::INVALID_TOKEN),
            Some(t) if t.is_expired(now.secs() as i64) => return Err(room_state::TOKEN_EXPIRED),
            Some(t) => t.expire_at,
        };
        let st = hub.state.lock();
        match st.sessions.get(&session) {
            None => Err(room_state::JOIN_ROOM_FAILED),
            Some(me) if me.rooms.contains_key(&r) => Err(room_state::ROOM_ALREADY_JOINED),
            Some(_) => Ok(JoinTicket {
                room: r,
                uid: u,
                expires_at,
                resume,
            }),
        }
    }

    /// Completes a join [`Hub::prepare_join`] checked (or answers its error): takes the
    /// membership over from another connection here, registers it as `claim.version`, answers
    /// `onRoomStateChanged(JOINED)`, then tells the joiner who else is in the room — members here
    /// and `elsewhere` (members on other nodes) — and the members here that it joined.
    /// `claim.took_over`: the user was in the room on another node, so nobody sees a join and no
    /// hook fires. Returns the state code.
    #[allow(clippy::too_many_arguments)]
    pub fn commit_join(
        &self,
        app: &str,
        session: SessionId,
        room: &str,
        uid: &str,
        checked: Result<JoinTicket, i32>,
        claim: Claim,
        elsewhere: &[UserId],
        now: Timestamp,
    ) -> i32 {
        let Some(hub) = self.apps.get(app) else {
            return room_state::JOIN_ROOM_FAILED;
        };
        let mut st = hub.state.lock();
        let st = &mut *st;
        let mut pending = match &checked {
            Ok(t) => st.take_pending(Some(&t.room), &t.uid, session),
            Err(_) => None,
        };
        let news_meanwhile = pending
            .as_mut()
            .map(|p| std::mem::take(&mut p.presence))
            .unwrap_or_default();
        let Some(me) = st.sessions.get(&session) else {
            return room_state::JOIN_ROOM_FAILED;
        };
        let outbox = me.outbox.clone();
        let result = match checked {
            Err(code) => code,
            Ok(t) if me.rooms.contains_key(&t.room) => room_state::ROOM_ALREADY_JOINED,
            Ok(JoinTicket {
                room: r,
                uid: u,
                expires_at,
                resume,
            }) => {
                let held = match st.held_members.get_mut(&r) {
                    Some(held) => {
                        let h = held.remove(&u);
                        if held.is_empty() {
                            st.held_members.remove(&r);
                        }
                        h
                    }
                    None => None,
                };
                let members = st.rooms.entry(r.clone()).or_default();
                let (replaced, mut stream) = self.stream_for(members.remove(&u), held, now);
                let opened = match claim.stream {
                    Some(c) => Opened::claimed(*c, pending),
                    None => self.open(&mut stream, resume, now),
                };
                let member = Member {
                    session,
                    outbox: outbox.clone(),
                    since: now,
                    version: claim.version,
                    stream,
                };
                members.insert(u.clone(), member);
                if let Some((_, old_outbox)) = &replaced {
                    old_outbox.event(&Event::RoomStateChanged {
                        room_id: r.to_string(),
                        uid: u.to_string(),
                        state: room_state::DUPLICATE_LOGIN,
                        stream: None,
                    });
                }
                // Answer first, then what it missed, then the presence: the joiner learns it is
                // in before who is.
                outbox.event(&Event::RoomStateChanged {
                    room_id: room.to_owned(),
                    uid: uid.to_owned(),
                    state: room_state::JOINED,
                    stream: opened.state,
                });
                opened.replay(&*outbox);
                // A membership taken over keeps the user id in the room: nobody else sees a change.
                let news = replaced.is_none() && !claim.took_over;
                if news {
                    self.hooks.user_joined(&hub.spec.app_id, &r, &u, now);
                }
                if hub.spec.presence_events {
                    for (other, m) in members.iter().filter(|(other, _)| **other != u) {
                        if news {
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
                    let remote = elsewhere
                        .iter()
                        .filter(|o| **o != u && !members.contains_key(*o));
                    let mut told = std::collections::HashSet::new();
                    for other in remote {
                        told.insert(other.as_str());
                        outbox.event(&Event::UserJoined {
                            room_id: r.to_string(),
                            uid: other.to_string(),
                        });
                    }
                    // What other nodes said after the claim's list, in order: a member who
                    // joined elsewhere meanwhile is heard of once, one who left is heard leaving.
                    for (other, left) in &news_meanwhile {
                        if *other == u.as_str() || members.contains_key(other.as_str()) {
                            continue;
                        }
                        match left {
                            None if told.insert(other.as_str()) => {
                                outbox.event(&Event::UserJoined {
                                    room_id: r.to_string(),
                                    uid: other.clone(),
                                });
                            }
                            Some(reason) if told.remove(other.as_str()) => {
                                outbox.event(&Event::UserLeave {
                                    room_id: r.to_string(),
                                    uid: other.clone(),
                                    reason: *reason,
                                });
                            }
                            _ => {}
                        }
                    }
                }
                if let Some((old_session, _)) = replaced {
                    if let Some(s) = st.sessions.get_mut(&old_session) {
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
            stream: None,
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
    /// recipient's outcome (for per-recipient reports); the summary counts them. A single node's
    /// send; a cluster admits the call itself and calls [`Hub::deliver`].
    pub fn send(
        &self,
        req: &SendRequest,
        now: Timestamp,
        observe: impl FnMut(&UserId, Outcome, Option<Receipt<'_>>),
    ) -> Result<Summary, SendError> {
        let hub = self.apps.get(&req.app_id).ok_or(SendError::UnknownApp)?;
        hub.limiter
            .lock()
            .check(now)
            .map_err(SendError::RateLimited)?;
        let delivery = delivery_of(req);
        let mut st = hub.state.lock();
        let from_online = match &req.target {
            Target::User(_) => st.logins.contains_key(&req.from),
            Target::RoomUsers(room, _) | Target::Room(room) => st
                .rooms
                .get(room)
                .is_some_and(|m| m.contains_key(&req.from)),
        };
        if from_online {
            return Err(SendError::FromIsOnlineUser);
        }
        Ok(self.deliver_locked(&mut st, &delivery, recipients_of(req), now, observe))
    }

    /// Queues an admitted message on the connections of its recipients held here; recipients not
    /// here are reported `NotOnline` / `NotInRoom`.
    pub fn deliver(
        &self,
        app: &str,
        delivery: &Delivery,
        to: Recipients<'_>,
        accepted: Timestamp,
        observe: impl FnMut(&UserId, Outcome, Option<Receipt<'_>>),
    ) -> Summary {
        let Some(hub) = self.apps.get(app) else {
            return Summary::default();
        };
        let mut st = hub.state.lock();
        self.deliver_locked(&mut st, delivery, to, accepted, observe)
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
            s.held_streams += st.held_logins.len() as u64;
            s.held_streams += st
                .held_members
                .values()
                .map(|m| m.len() as u64)
                .sum::<u64>();
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
                let held = self.holds_streams(why);
                self.directory
                    .login_ended(&hub.spec.app_id, uid, m.version, held);
                if let Some(held) = self.hold(m.stream, why, now) {
                    st.held_logins.insert(uid.clone(), held);
                }
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
        let ended = Ended {
            version: gone.version,
            reason,
            held: self.holds_streams(why),
        };
        self.directory
            .membership_ended(&hub.spec.app_id, room, uid, ended);
        if members.is_empty() {
            st.rooms.remove(room);
        }
        if let Some(held) = self.hold(gone.stream, why, now) {
            let room = st.held_members.entry(room.clone()).or_default();
            room.insert(uid.clone(), held);
        }
    }

    /// The stream of a login or membership that ended, if it is to be held here for recovery:
    /// only when its connection was lost (a user who left, was kicked or whose token expired has
    /// nothing to come back to), and only on a single node: a cluster holds it in Redis (the
    /// directory is told), where any node can resume it.
    fn hold(&self, stream: Stream, why: Departure, now: Timestamp) -> Option<Held> {
        (self.holds_streams(why) && !self.clustered).then_some(Held { stream, since: now })
    }

    /// Whether a login or membership that ended so keeps its stream for the window: recovery is
    /// on and its connection was lost (a single node holds it here, a cluster in Redis).
    fn holds_streams(&self, why: Departure) -> bool {
        self.window.enabled() && why == Departure::ConnectionLost
    }

    /// Whether messages take their positions in the cluster's Redis: recovery on in a cluster.
    /// Then every message reaches its recipients here through the cluster (in position order),
    /// none is queued directly, and a claim states the stream.
    fn streams_in_cluster(&self) -> bool {
        self.clustered && self.window.enabled()
    }

    /// Forgets the streams held longer than the window (the edge calls this about once a
    /// second; a held stream past the window takes no message even before).
    pub fn expire_streams(&self, now: Timestamp) {
        let w = &self.window;
        for hub in self.apps.values() {
            let mut st = hub.state.lock();
            st.held_logins.retain(|_, h| !h.expired(now, w));
            st.held_members.retain(|_, m| {
                m.retain(|_, h| !h.expired(now, w));
                !m.is_empty()
            });
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
        let Some(member) = st.rooms.get(room).and_then(|m| m.get(uid)) else {
            return false;
        };
        let (session, outbox) = (member.session, member.outbox.clone());
        if let Some(s) = st.sessions.get_mut(&session) {
            s.rooms.remove(room);
        }
        outbox.event(&Event::RoomStateChanged {
            room_id: room.to_string(),
            uid: uid.to_string(),
            state: room_state::KICKED_OUT,
            stream: None,
        });
        self.end_membership(hub, &mut st, room, uid, session, Departure::Kicked, now);
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

    /// Whether `uid` is logged in here.
    pub fn is_logged_in(&self, app: &str, uid: &str) -> bool {
        self.apps
            .get(app)
            .is_some_and(|h| h.state.lock().logins.contains_key(uid))
    }

    /// `getPeerOnlineStatus(peerUserId)`: answers `onGetPeerOnlineStatus`: online if logged in
    /// here or, as the cluster says, `elsewhere`.
    pub fn get_peer_online_status(
        &self,
        app: &str,
        session: SessionId,
        peer: &str,
        elsewhere: bool,
    ) {
        let Some(hub) = self.apps.get(app) else {
            return;
        };
        let st = hub.state.lock();
        let Some(me) = st.sessions.get(&session) else {
            return;
        };
        let status = if elsewhere || st.logins.contains_key(peer) {
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
            me.server_params = Some(Box::new(ServerParams {
                signature: signature.to_owned(),
                url: url.to_owned(),
            }));
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
        let mut forward = None;
        let outcome = checked.and_then(|(from, room)| {
            let delivery = |kind| {
                let room = room.as_ref().map(RoomId::as_str);
                Delivery::encode(kind, from.as_str(), room, send.binary, &send.payload)
            };
            // In a cluster a recipient not held here may be on another node: the edge asks.
            let mut elsewhere = |d: Delivery, to: Option<UserId>| {
                if !self.clustered {
                    return Err(send_result::NO_RECEIVER);
                }
                forward = Some(Forward {
                    delivery: d,
                    from: from.clone(),
                    room: room.clone(),
                    to,
                });
                Ok(())
            };
            let via_cluster = self.streams_in_cluster();
            match (op, &room) {
                (SendOp::Server, _) => Ok(()),
                // Streams in Redis: every recipient, here too, takes its position there.
                (SendOp::UserOutsideRoom, _) if via_cluster => elsewhere(
                    delivery(MessageKind::OutsideRoom),
                    UserId::new(&send.to).ok(),
                ),
                (SendOp::UserInRoom, Some(_)) if via_cluster => {
                    elsewhere(delivery(MessageKind::RoomUser), UserId::new(&send.to).ok())
                }
                (SendOp::Room, Some(_)) if via_cluster => {
                    elsewhere(delivery(MessageKind::RoomBroadcast), None)
                }
                (SendOp::UserOutsideRoom, _) => match st.logins.get_mut(send.to.as_str()) {
                    Some(to) => offer_result(to.offer(
                        &delivery(MessageKind::OutsideRoom),
                        now,
                        &self.window,
                    )),
                    None if self.keep_held(&mut st.held_logins, &send.to, now, || {
                        delivery(MessageKind::OutsideRoom)
                    }) =>
                    {
                        Ok(())
                    }
                    None => elsewhere(
                        delivery(MessageKind::OutsideRoom),
                        UserId::new(&send.to).ok(),
                    ),
                },
                (SendOp::UserInRoom, Some(r)) => {
                    let held = st.held_members.get_mut(r);
                    match st
                        .rooms
                        .get_mut(r)
                        .and_then(|m| m.get_mut(send.to.as_str()))
                    {
                        Some(to) => offer_result(to.offer(
                            &delivery(MessageKind::RoomUser),
                            now,
                            &self.window,
                        )),
                        None if held.is_some_and(|held| {
                            self.keep_held(held, &send.to, now, || delivery(MessageKind::RoomUser))
                        }) =>
                        {
                            Ok(())
                        }
                        None => {
                            elsewhere(delivery(MessageKind::RoomUser), UserId::new(&send.to).ok())
                        }
                    }
                }
                (SendOp::Room, Some(r)) => {
                    let d = delivery(MessageKind::RoomBroadcast);
                    let members = st.rooms.get_mut(r).into_iter().flatten();
                    for (_, m) in members.filter(|(uid, _)| **uid != from) {
                        m.offer(&d, now, &self.window);
                    }
                    let held = st.held_members.get_mut(r).into_iter().flatten();
                    for (_, h) in held.filter(|(uid, _)| **uid != from) {
                        if !h.expired(now, &self.window) {
                            h.stream.append(&d, now, &self.window);
                        }
                    }
                    if self.clustered {
                        elsewhere(d, None)?;
                    }
                    Ok(())
                }
                // Room ops always have their room.
                (SendOp::UserInRoom | SendOp::Room, None) => Err(send_result::NOT_JOIN),
            }
        });
        let error = match outcome {
            Ok(()) if op == SendOp::Server => {
                let params = me.server_params.as_deref().cloned();
                return params.map_or(
                    ClientSent::Answered(send_result::SERVER_PARAMS_NOT_SET),
                    ClientSent::Upstream,
                );
            }
            Ok(()) => match forward {
                Some(f) => return ClientSent::Forward(f),
                None if op == SendOp::Room => room_send_result::SUCCESS,
                None => send_result::SUCCESS,
            },
            Err(e) => e,
        };
        answer_send(&*me.outbox, send, error);
        ClientSent::Answered(error)
    }

    /// Answers a client's send with `error` (its op's result event): the edge's answer to a
    /// [`ClientSent::Forward`] once the cluster has routed it.
    pub fn answer_send(&self, app: &str, session: SessionId, send: &SendFrame, error: i32) {
        let Some(hub) = self.apps.get(app) else {
            return;
        };
        let st = hub.state.lock();
        if let Some(me) = st.sessions.get(&session) {
            answer_send(&*me.outbox, send, error);
        }
    }
}

/// The result event of a client's send.
fn answer_send(outbox: &dyn Outbox, send: &SendFrame, error: i32) {
    let msgid = send.msgid;
    let room_id = send.room_id.clone();
    outbox.event(&match send.op {
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
}

/// A client's message for recipients this node does not hold (cluster only): checked and encoded;
/// the edge routes it and answers with [`Hub::answer_send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The message, encoded once.
    pub delivery: Delivery,
    /// The sender.
    pub from: UserId,
    /// The room of a room message.
    pub room: Option<RoomId>,
    /// The recipient; `None` for a room broadcast (delivered here already, to go to the room's
    /// other nodes; with streams in the cluster, to go to every node, this one too).
    pub to: Option<UserId>,
}

impl Hub {
    /// A client's message the cluster could not route because Redis is unreachable, with streams
    /// in the cluster (nothing was queued here, see [`Hub::client_send`]): queued for the
    /// recipients held here, without a stream position (such a message cannot be recovered).
    /// Returns whether a recipient got it. Does nothing otherwise: without streams in the
    /// cluster, the hub already queued it here.
    pub fn deliver_here(&self, app: &str, f: &Forward, now: Timestamp) -> bool {
        let Some(hub) = self.apps.get(app).filter(|_| self.streams_in_cluster()) else {
            return false;
        };
        let st = hub.state.lock();
        let here = match &f.room {
            None => Some(&st.logins),
            Some(r) => st.rooms.get(r),
        };
        let queue =
            |m: &Member| matches!(m.outbox.message(&f.delivery, None, now), Offer::Queued(_));
        match &f.to {
            Some(to) => here.and_then(|h| h.get(to)).is_some_and(queue),
            None => here
                .into_iter()
                .flatten()
                .filter(|(uid, _)| **uid != f.from)
                .fold(false, |reached, (_, m)| queue(m) | reached),
        }
    }
}

/// What [`Hub::client_send`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientSent {
    /// The sender was answered with this result code.
    Answered(i32),
    /// A server message passed the checks: the edge posts it to these parameters and answers.
    Upstream(ServerParams),
    /// Checked, not answered: the recipients are on other nodes (cluster only).
    Forward(Forward),
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
                stream: None,
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
                    stream: None,
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
                stream: None,
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
fn offer_result(offer: Offer) -> Result<(), i32> {
    match offer {
        Offer::Queued(_) => Ok(()),
        Offer::Overflow => Err(send_result::BROKEN),
        Offer::Closed => Err(send_result::NO_RECEIVER),
    }
}

/// Who a delivery is for, among the connections of one node.
#[derive(Debug, Clone, Copy)]
pub enum Recipients<'a> {
    /// These logged-in users (a message outside rooms).
    Logins(&'a [UserId]),
    /// These members of the room.
    Members(&'a RoomId, &'a [UserId]),
    /// Every member of the room but the one named (a client's own broadcast).
    Room(&'a RoomId, Option<&'a str>),
    /// These logins (no room) or members of the room, each at the position of its stream the
    /// cluster gave it (recovery on in a cluster: the streams are in Redis).
    Stamped(Option<&'a RoomId>, &'a [(UserId, StreamPos)]),
}

/// The recipients an OpenAPI request names.
pub fn recipients_of(req: &SendRequest) -> Recipients<'_> {
    match &req.target {
        Target::User(to) => Recipients::Logins(std::slice::from_ref(to)),
        Target::RoomUsers(room, to) => Recipients::Members(room, to),
        Target::Room(room) => Recipients::Room(room, None),
    }
}

/// An OpenAPI request's message, encoded once for all its recipients.
pub fn delivery_of(req: &SendRequest) -> Delivery {
    let (kind, room) = match &req.target {
        Target::User(_) => (MessageKind::OutsideRoom, None),
        Target::RoomUsers(r, _) => (MessageKind::RoomUser, Some(r)),
        Target::Room(r) => (MessageKind::RoomBroadcast, Some(r)),
    };
    Delivery::encode(
        kind,
        req.from.as_str(),
        room.map(RoomId::as_str),
        req.binary,
        &req.payload,
    )
}

impl Hub {
    /// Queues `delivery` on the connections of its recipients held here (each at the next
    /// position of its stream); a recipient between connections whose stream is held gets it in
    /// the stream (`Held`). Recipients not here are reported `NotOnline` / `NotInRoom`.
    fn deliver_locked(
        &self,
        st: &mut AppState,
        delivery: &Delivery,
        to: Recipients<'_>,
        accepted: Timestamp,
        mut observe: impl FnMut(&UserId, Outcome, Option<Receipt<'_>>),
    ) -> Summary {
        let w = &self.window;
        let mut summary = Summary::default();
        // `absent`: the outcome when the recipient is neither connected nor held here.
        // `at`: the position the cluster gave it (streams in Redis), else the next of the member's
        // stream. `kept`: kept for a login or membership being claimed here.
        let mut record = |uid: &UserId,
                          mut m: Option<&mut Member>,
                          at: Option<StreamPos>,
                          held: Option<&mut Held>,
                          kept: bool,
                          absent| {
            let offer = m.as_deref_mut().map(|m| match at {
                Some(pos) => m.outbox.message(delivery, Some(pos), accepted),
                None => m.offer(delivery, accepted, w),
            });
            let (o, msgid) = match offer {
                Some(Offer::Queued(msgid)) => (Outcome::Queued, Some(msgid)),
                Some(Offer::Overflow) => (Outcome::SlowConsumer, None),
                Some(Offer::Closed) => (Outcome::NotOnline, None),
                None => match held {
                    Some(h) if !h.expired(accepted, w) => {
                        h.stream.append(delivery, accepted, w);
                        (Outcome::Held, None)
                    }
                    _ if kept => (Outcome::Queued, None),
                    _ => (absent, None),
                },
            };
            summary.add(o);
            let receipt = m.zip(msgid).map(|(m, msgid)| Receipt {
                outbox: &m.outbox,
                msgid,
            });
            observe(uid, o, receipt);
        };
        let AppState {
            logins,
            rooms,
            held_logins,
            held_members,
            pending_logins,
            pending_members,
            ..
        } = st;
        match to {
            Recipients::Logins(uids) => {
                for uid in uids {
                    let m = logins.get_mut(uid);
                    let held = if m.is_none() {
                        held_logins.get_mut(uid)
                    } else {
                        None
                    };
                    record(uid, m, None, held, false, Outcome::NotOnline);
                }
            }
            Recipients::Members(room, uids) => {
                let mut members = rooms.get_mut(room);
                let mut held = held_members.get_mut(room);
                for uid in uids {
                    let m = members.as_mut().and_then(|m| m.get_mut(uid));
                    let h = match (&m, held.as_mut()) {
                        (None, Some(held)) => held.get_mut(uid),
                        _ => None,
                    };
                    record(uid, m, None, h, false, Outcome::NotInRoom);
                }
            }
            Recipients::Room(room, except) => {
                for (uid, m) in rooms.get_mut(room).into_iter().flatten() {
                    if except != Some(uid.as_str()) {
                        record(uid, Some(m), None, None, false, Outcome::NotInRoom);
                    }
                }
                // Only a single node holds streams (`Hub::hold`): in a cluster this finds none.
                for (uid, h) in held_members.get_mut(room).into_iter().flatten() {
                    if except != Some(uid.as_str()) && !h.expired(accepted, w) {
                        record(uid, None, None, Some(h), false, Outcome::NotInRoom);
                    }
                }
            }
            Recipients::Stamped(room, list) => {
                let (mut members, waiting, absent) = match room {
                    None => (Some(logins), Some(pending_logins), Outcome::NotOnline),
                    Some(r) => (
                        rooms.get_mut(r),
                        pending_members.get_mut(r),
                        Outcome::NotInRoom,
                    ),
                };
                let mut waiting = waiting.filter(|w| !w.is_empty());
                for (uid, pos) in list {
                    let kept = match waiting.as_mut().and_then(|w| w.get_mut(uid)) {
                        Some(claims) => {
                            for p in claims.iter_mut() {
                                p.keep(*pos, delivery, accepted, w);
                            }
                            true
                        }
                        None => false,
                    };
                    let m = members.as_mut().and_then(|m| m.get_mut(uid));
                    record(uid, m, Some(*pos), None, kept, absent);
                }
            }
        }
        summary
    }

    /// A client's message to a user between connections: kept in the user's held stream, if it
    /// is held (only ever on a single node, `Hub::hold`). Returns whether it was.
    fn keep_held(
        &self,
        held: &mut HashMap<UserId, Held>,
        uid: &str,
        now: Timestamp,
        delivery: impl FnOnce() -> Delivery,
    ) -> bool {
        match held.get_mut(uid) {
            Some(h) if !h.expired(now, &self.window) => {
                h.stream.append(&delivery(), now, &self.window);
                true
            }
            _ => false,
        }
    }
}

/// A stream being opened for a login or membership: what its answer says, and the messages a
/// resume replays right after the answer.
#[derive(Default)]
struct Opened {
    state: Option<StreamState>,
    replay: Vec<(StreamPos, Delivery, Timestamp)>,
}

impl Opened {
    /// A stream at `head`: what its answer says, and what `resumed` replays.
    fn of(head: StreamPos, resumed: Option<Resumed>) -> Opened {
        let (recovered, replay) = match resumed {
            None => (None, Vec::new()),
            Some(Resumed::Gap) => (Some(false), Vec::new()),
            Some(Resumed::Replay(v)) => (Some(true), v),
        };
        Opened {
            state: Some(StreamState {
                epoch: head.epoch,
                position: head.position,
                recovered,
                replayed: replay.len() as u64,
            }),
            replay,
        }
    }

    /// A stream the cluster claimed: the resume's messages, then those that reached this node
    /// between the claim and the commit (`pending`), after the claimed position. If more came
    /// than a window holds, none of them is queued, and a resume is answered `recovered: false`.
    fn claimed(c: ClaimedStream, pending: Option<Pending>) -> Opened {
        let head = c.head;
        let mut opened = Opened::of(head, c.resumed);
        match pending {
            Some(p) if p.overflowed => {
                opened.replay.clear();
                if let Some(s) = opened.state.as_mut() {
                    s.replayed = 0;
                    s.recovered = s.recovered.map(|_| false);
                }
            }
            Some(p) => opened.replay.extend(
                p.kept
                    .into_iter()
                    .filter(|(pos, ..)| pos.epoch == head.epoch && pos.position > head.position),
            ),
            None => {}
        }
        opened
    }

    /// Queues the replayed messages, at their positions, on the connection that resumed.
    fn replay(self, outbox: &dyn Outbox) {
        for (pos, delivery, accepted) in self.replay {
            outbox.message(&delivery, Some(pos), accepted);
        }
    }
}

/// A login or membership held here, as the cluster should know it (for re-registering after the
/// cluster was unreachable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// `uid` is logged in here.
    Login {
        /// The app.
        app: AppId,
        /// The user.
        uid: UserId,
        /// The cluster's version (0: never registered).
        version: u64,
    },
    /// `uid` is a member of `room` here.
    Member {
        /// The app.
        app: AppId,
        /// The room.
        room: RoomId,
        /// The user.
        uid: UserId,
        /// The cluster's version (0: never registered).
        version: u64,
    },
}

impl Registration {
    /// The cluster's version (0: never registered).
    pub fn version(&self) -> u64 {
        match self {
            Registration::Login { version, .. } | Registration::Member { version, .. } => *version,
        }
    }
}

impl Hub {
    /// Applies a message from another node of the cluster. Deliveries report their summary, and
    /// each recipient's outcome to `observe`.
    pub fn apply(
        &self,
        msg: &NodeMessage,
        now: Timestamp,
        observe: impl FnMut(&UserId, Outcome, Option<Receipt<'_>>),
    ) -> Summary {
        match msg {
            NodeMessage::Deliver {
                app,
                delivery,
                accepted,
                room,
                except,
                to,
                report: _,
            } => {
                let named_room = !room.is_empty();
                let room = RoomId::new(room).ok();
                let uids: Vec<UserId> = match to {
                    Addressees::Users(u) => u.iter().filter_map(|u| UserId::new(u).ok()).collect(),
                    Addressees::Room | Addressees::Streams(_) => Vec::new(),
                };
                let to = match (to, &room) {
                    (Addressees::Streams(list), r) if r.is_some() == named_room => {
                        Recipients::Stamped(r.as_ref(), list)
                    }
                    (Addressees::Streams(_), _) => return Summary::default(),
                    (Addressees::Room, Some(r)) => {
                        Recipients::Room(r, Some(except.as_str()).filter(|e| !e.is_empty()))
                    }
                    (Addressees::Users(_), Some(r)) => Recipients::Members(r, &uids),
                    (Addressees::Users(_), None) => Recipients::Logins(&uids),
                    (Addressees::Room, None) => return Summary::default(),
                };
                self.deliver(app, delivery, to, *accepted, observe)
            }
            NodeMessage::LoginTaken { app, uid, version } => {
                self.end_taken_login(app, uid, *version);
                Summary::default()
            }
            NodeMessage::MembershipTaken {
                app,
                room,
                uid,
                version,
            } => {
                self.end_taken_membership(app, room, uid, *version);
                Summary::default()
            }
            NodeMessage::Joined { app, room, uid } => {
                self.tell_members(app, room, uid, None);
                Summary::default()
            }
            NodeMessage::Left {
                app,
                room,
                uid,
                reason,
            } => {
                self.tell_members(app, room, uid, Some(*reason));
                Summary::default()
            }
            NodeMessage::Kick { app, room, uid } => {
                if let (Ok(r), Ok(u)) = (RoomId::new(room), UserId::new(uid)) {
                    self.kick(app, &r, &u, now);
                }
                Summary::default()
            }
            // For the node that asked: the edge routes them to the waiting call.
            NodeMessage::Outcomes { .. } => Summary::default(),
        }
    }

    /// Another node took `uid`'s login as `version`: ends the login here if it is older, with
    /// `onLogout(DUPLICATE_LOGIN)`. The user is still logged in (there): no hook fires.
    fn end_taken_login(&self, app: &str, uid: &str, version: u64) {
        let Some(hub) = self.apps.get(app) else {
            return;
        };
        let mut st = hub.state.lock();
        if st.logins.get(uid).is_none_or(|m| m.version >= version) {
            return;
        }
        let Some(old) = st.logins.remove(uid) else {
            return;
        };
        if let Some(s) = st.sessions.get_mut(&old.session) {
            s.login = None;
            s.server_params = None;
        }
        old.outbox.event(&Event::Logout {
            reason: logout_reason::DUPLICATE_LOGIN,
        });
    }

    /// Another node took `uid`'s membership of `room` as `version`: ends it here if it is older,
    /// with `onRoomStateChanged(DUPLICATE_LOGIN)`. The user is still in the room: nobody else is
    /// told and no hook fires.
    fn end_taken_membership(&self, app: &str, room: &str, uid: &str, version: u64) {
        let Some(hub) = self.apps.get(app) else {
            return;
        };
        let mut st = hub.state.lock();
        let Some(members) = st.rooms.get_mut(room) else {
            return;
        };
        if members.get(uid).is_none_or(|m| m.version >= version) {
            return;
        }
        let Some((u, old)) = members.remove_entry(uid) else {
            return;
        };
        if members.is_empty() {
            st.rooms.remove(room);
        }
        if let Some(s) = st.sessions.get_mut(&old.session) {
            s.rooms.remove(room);
        }
        old.outbox.event(&Event::RoomStateChanged {
            room_id: room.to_owned(),
            uid: u.to_string(),
            state: room_state::DUPLICATE_LOGIN,
            stream: None,
        });
    }

    /// Tells the members of `room` here that `uid` joined (`left: None`) or left it on another
    /// node, if the app reports presence and `uid` is not itself a member here.
    fn tell_members(&self, app: &str, room: &str, uid: &str, left: Option<i32>) {
        let Some(hub) = self.apps.get(app) else {
            return;
        };
        if !hub.spec.presence_events {
            return;
        }
        let mut st = hub.state.lock();
        // A join of this room between its claim and its commit hears of it after the claim's list.
        if let Some(waiting) = st.pending_members.get_mut(room) {
            for (joiner, claims) in waiting.iter_mut() {
                if joiner.as_str() == uid {
                    continue;
                }
                for p in claims.iter_mut() {
                    if p.presence.len() < MAX_PENDING_PRESENCE {
                        p.presence.push((uid.to_owned(), left));
                    }
                }
            }
        }
        let Some(members) = st.rooms.get(room) else {
            return;
        };
        if members.contains_key(uid) {
            return;
        }
        let event = match left {
            None => Event::UserJoined {
                room_id: room.to_owned(),
                uid: uid.to_owned(),
            },
            Some(reason) => Event::UserLeave {
                room_id: room.to_owned(),
                uid: uid.to_owned(),
                reason,
            },
        };
        for m in members.values() {
            m.outbox.event(&event);
        }
    }

    /// Every login and membership held here, for re-registering them with the cluster.
    pub fn registrations(&self) -> Vec<Registration> {
        let mut out = Vec::new();
        for hub in self.apps.values() {
            let st = hub.state.lock();
            let app = &hub.spec.app_id;
            for (uid, m) in &st.logins {
                out.push(Registration::Login {
                    app: app.clone(),
                    uid: uid.clone(),
                    version: m.version,
                });
            }
            for (room, members) in &st.rooms {
                for (uid, m) in members {
                    out.push(Registration::Member {
                        app: app.clone(),
                        room: room.clone(),
                        uid: uid.clone(),
                        version: m.version,
                    });
                }
            }
        }
        out
    }

    /// Whether the registration is still held here (with any version).
    pub fn holds(&self, reg: &Registration) -> bool {
        match reg {
            Registration::Login { app, uid, .. } => self
                .apps
                .get(app)
                .is_some_and(|h| h.state.lock().logins.contains_key(uid)),
            Registration::Member { app, room, uid, .. } => self.apps.get(app).is_some_and(|h| {
                h.state
                    .lock()
                    .rooms
                    .get(room)
                    .is_some_and(|m| m.contains_key(uid))
            }),
        }
    }

    /// The cluster registered `reg` (held here with `reg`'s version) as `version` now. Returns
    /// false if it is no longer held here as it was (ended or replaced meanwhile).
    pub fn reregistered(&self, reg: &Registration, version: u64) -> bool {
        let set = |m: Option<&mut Member>, old: u64| match m.filter(|m| m.version == old) {
            Some(m) => {
                m.version = version;
                true
            }
            None => false,
        };
        match reg {
            Registration::Login {
                app,
                uid,
                version: old,
            } => self
                .apps
                .get(app)
                .is_some_and(|h| set(h.state.lock().logins.get_mut(uid), *old)),
            Registration::Member {
                app,
                room,
                uid,
                version: old,
            } => self.apps.get(app).is_some_and(|h| {
                let mut st = h.state.lock();
                set(st.rooms.get_mut(room).and_then(|m| m.get_mut(uid)), *old)
            }),
        }
    }

    /// The cluster says another node holds `reg`: ends it here as taken over.
    pub fn lost(&self, reg: &Registration) {
        match reg {
            Registration::Login { app, uid, .. } => {
                self.end_taken_login(app.as_str(), uid.as_str(), u64::MAX);
            }
            Registration::Member { app, room, uid, .. } => {
                self.end_taken_membership(app.as_str(), room.as_str(), uid.as_str(), u64::MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection pays for a session entry and, logged in, a login entry (each about 1.6
    /// times over, with the maps' free buckets): the idle-memory target (docs/performance.md)
    /// rests on these staying small.
    #[test]
    fn per_connection_entries_stay_small() {
        let session = std::mem::size_of::<Session>();
        let member = std::mem::size_of::<Member>();
        assert!(session <= 64, "Session is {session} bytes");
        assert!(member <= 56, "Member is {member} bytes");
    }
}
