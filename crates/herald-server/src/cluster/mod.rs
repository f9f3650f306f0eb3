//! Cluster mode: many nodes, one system, on Redis.
//!
//! Every node keeps its own connections in its own [`Hub`]; Redis holds the directory (which node
//! holds each login and each room member, versioned), the apps' cluster-wide rate windows, the
//! nodes' heartbeats, and one pub/sub channel per node. An OpenAPI call is admitted and routed by
//! one Lua script (`lua/route.lua`): the rate limit, the `From` rule, and one `PUBLISH` per node
//! that holds recipients, with the body encoded once. Directory changes go through one FIFO queue
//! per node (the [`Directory`] port and the claims of logins and joins), so Redis sees them in the
//! order they happened here.
//!
//! Failure model: a node that stops heartbeating is given up for dead after `node_ttl_ms` and its
//! entries are swept by the others. While Redis is unreachable, calls that need it fail at once
//! ([`Unavailable`]); local clients stay, logins and joins are taken locally (version 0); when
//! Redis is back the node re-registers everything it holds and purges what it no longer holds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use herald_core::hub::{
    Claim, ClaimedStream, Directory, Ended, Forward, Hub, Outcome, Recipients, Registration,
    SendError, Summary,
};
use herald_core::rate::RetryAfter;
use herald_core::relay::{self, NodeMessage, ReportTo};
use herald_core::stream::{Resumed, Window};
use herald_core::time::Timestamp;
use herald_proto::client::{user_leave_reason, Delivery, StreamPos};
use herald_proto::ids::{AppId, RoomId, UserId};
use herald_proto::openapi::{DeliveryReport, SendRequest, Target};
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::acks::{self, AckSignal, Awaited};
use crate::clock::Clock;
use crate::config::ClusterConfig;
use crate::report::{self, Report};

/// Redis cannot be reached (or did not answer in time): the call fails fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the cluster's Redis is unreachable")]
pub struct Unavailable;

/// Why the cluster refused an OpenAPI message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// Refused by the cluster-wide rules (rate limit, `From`).
    Refused(SendError),
    /// Redis is unreachable.
    Unavailable,
}

/// A cluster script: its source (with the shared prelude) and its SHA1.
struct Script {
    name: &'static str,
    script: redis::Script,
}

impl Script {
    fn new(name: &'static str, body: &str) -> Self {
        let source = format!("{}\n{}", include_str!("lua/prelude.lua"), body);
        Script {
            name,
            script: redis::Script::new(&source),
        }
    }
}

struct Scripts {
    route: Script,
    forward: Script,
    claim: Script,
    release: Script,
    restore: Script,
    heartbeat: Script,
    lookup: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            route: Script::new("route", include_str!("lua/route.lua")),
            forward: Script::new("forward", include_str!("lua/forward.lua")),
            claim: Script::new("claim", include_str!("lua/claim.lua")),
            release: Script::new("release", include_str!("lua/release.lua")),
            restore: Script::new("restore", include_str!("lua/restore.lua")),
            heartbeat: Script::new("heartbeat", include_str!("lua/heartbeat.lua")),
            lookup: Script::new("lookup", include_str!("lua/lookup.lua")),
        }
    }

    fn all(&self) -> [&Script; 7] {
        [
            &self.route,
            &self.forward,
            &self.claim,
            &self.release,
            &self.restore,
            &self.heartbeat,
            &self.lookup,
        ]
    }
}

/// Counters of the cluster layer, for `/metrics`.
#[derive(Default)]
pub struct ClusterStats {
    /// Script calls sent to Redis.
    pub commands: AtomicU64,
    /// Calls that failed (connection lost, timeout, script error).
    pub errors: AtomicU64,
    /// Messages (deliveries and notices) published to other nodes by this node's calls.
    pub published: AtomicU64,
    /// Messages received from other nodes.
    pub received: AtomicU64,
    /// Times this node (re)connected to Redis and re-registered what it holds.
    pub resyncs: AtomicU64,
    /// Directory changes dropped because Redis was unreachable (repaired by the next resync).
    pub directory_dropped: AtomicU64,
    /// Entries of dead nodes this node swept.
    pub swept: AtomicU64,
}

/// What a login or membership is, in the scripts' terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Login,
    Member,
}

impl Kind {
    fn arg(self) -> &'static str {
        match self {
            Kind::Login => "L",
            Kind::Member => "M",
        }
    }
}

/// A directory change, in the order it happened on this node.
enum Op {
    Claim {
        app: AppId,
        kind: Kind,
        room: String,
        uid: UserId,
        want_members: bool,
        resume: Option<StreamPos>,
        reply: oneshot::Sender<Result<(Claim, Vec<UserId>), Unavailable>>,
    },
    Release {
        app: AppId,
        kind: Kind,
        room: String,
        uid: UserId,
        version: u64,
        reason: i32,
        /// The connection was lost: the stream is held for the window (recovery).
        held: bool,
    },
}

/// How a login or join was registered.
enum Registered<'a> {
    /// In Redis, with what the claim found.
    Claimed(Claim, Vec<UserId>),
    /// Not in Redis: committed locally while holding the gate (if there is anything to register).
    Local(Option<parking_lot::RwLockReadGuard<'a, ()>>),
}

/// A node's link to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Redis is unreachable: logins and joins are committed locally (version 0).
    Down,
    /// Connected, re-registering what this node holds: calls are refused as while down, logins
    /// and joins are still committed locally, releases wait.
    Syncing,
    /// In sync: everything goes through Redis.
    Up,
}

/// The hub's [`Directory`] port: queues releases in order with the claims.
pub struct DirectoryQueue {
    tx: mpsc::Sender<Op>,
    stats: Arc<ClusterStats>,
}

impl DirectoryQueue {
    fn push(&self, op: Op) {
        if self.tx.try_send(op).is_err() {
            // Full (Redis far behind) or stopped: the next resync purges what is left over.
            self.stats.directory_dropped.fetch_add(1, Relaxed);
        }
    }
}

impl Directory for DirectoryQueue {
    fn login_ended(&self, app: &AppId, uid: &UserId, version: u64, held: bool) {
        if version != 0 {
            self.push(Op::Release {
                app: app.clone(),
                kind: Kind::Login,
                room: String::new(),
                uid: uid.clone(),
                version,
                reason: 0,
                held,
            });
        }
    }

    fn membership_ended(&self, app: &AppId, room: &RoomId, uid: &UserId, ended: Ended) {
        if ended.version != 0 {
            self.push(Op::Release {
                app: app.clone(),
                kind: Kind::Member,
                room: room.to_string(),
                uid: uid.clone(),
                version: ended.version,
                reason: ended.reason,
                held: ended.held,
            });
        }
    }
}

/// Directory changes that may wait for Redis, at most.
const QUEUE: usize = 65_536;
/// Directory changes sent to Redis in one pipeline, at most.
const BATCH: usize = 256;
/// Entries of a dead node swept per heartbeat, at most.
const SWEEP_BATCH: usize = 1000;

/// Outcomes one node reported for a call.
type Outcomes = Vec<(String, Outcome)>;

/// The calls of this node waiting for delivery reports from other nodes, by call id.
#[derive(Default)]
struct Reports {
    seq: AtomicU64,
    waiting: Mutex<HashMap<u64, mpsc::UnboundedSender<Outcomes>>>,
}

impl Reports {
    fn register(&self) -> Pending<'_> {
        let call = self.seq.fetch_add(1, Relaxed) + 1;
        let (tx, rx) = mpsc::unbounded_channel();
        self.waiting.lock().insert(call, tx);
        Pending {
            reports: self,
            call,
            rx,
        }
    }

    /// Hands a node's report to its call; a call that stopped waiting drops it.
    fn answer(&self, call: u64, outcomes: Outcomes) {
        if let Some(tx) = self.waiting.lock().get(&call) {
            let _ = tx.send(outcomes);
        }
    }
}

/// One call's wait for reports; unregistered when dropped (answered, timed out or cancelled).
struct Pending<'a> {
    reports: &'a Reports,
    call: u64,
    rx: mpsc::UnboundedReceiver<Outcomes>,
}

impl Pending<'_> {
    /// Adds up to `nodes` reports to `report`, waiting at most `wait`. Returns how many came.
    async fn collect(
        &mut self,
        nodes: usize,
        wait: Duration,
        report: &mut DeliveryReport,
    ) -> usize {
        let deadline = tokio::time::Instant::now() + wait;
        let mut answered = 0;
        while answered < nodes {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(outcomes)) => {
                    for (uid, o) in outcomes {
                        report::add(report, uid, o);
                    }
                    answered += 1;
                }
                _ => break,
            }
        }
        answered
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.reports.waiting.lock().remove(&self.call);
    }
}

/// One node's membership of the cluster. See the module docs.
pub struct Cluster {
    node: String,
    config: ClusterConfig,
    client: redis::Client,
    /// The command connection while Redis is reachable.
    conn: Mutex<Option<MultiplexedConnection>>,
    /// In sync: Redis is reachable and holds every login and membership this node holds, so calls
    /// may be routed. False while Redis is unreachable and while the node re-registers.
    up: AtomicBool,
    /// Where the node is: see [`Phase`]. The directory writer waits on it while re-registering.
    phase: tokio::sync::watch::Sender<Phase>,
    /// Orders local commits against going up: a login or join committed without Redis (version
    /// 0) commits under a read guard, and the node goes up under the write guard only once no
    /// such registration is left, so none is missed by the calls routed after.
    gate: parking_lot::RwLock<()>,
    /// Wakes the supervisor when a call saw the connection fail.
    fault: Notify,
    scripts: Scripts,
    stats: Arc<ClusterStats>,
    rate_seq: AtomicU64,
    /// Calls waiting for other nodes' delivery reports.
    reports: Reports,
    ops: Mutex<Option<mpsc::Receiver<Op>>>,
    queue: mpsc::Sender<Op>,
    /// Recovery's window: when on, every stream's window is kept in Redis (see `lua/prelude.lua`).
    window: Window,
    /// The window as the scripts take it, formatted once.
    window_args: WindowArgs,
}

/// The scripts' recovery arguments (`lua/prelude.lua`), formatted once at start.
struct WindowArgs {
    /// `window_messages` (0: recovery off).
    messages: String,
    /// `window_ms`.
    ms: String,
    /// `keep_ms` for a registration whose connection was lost: how long its stream is held.
    keep_held: String,
    /// `keep_ms` for one that ended on purpose: 0, its stream is forgotten.
    keep_ended: String,
}

impl WindowArgs {
    fn new(w: &Window) -> Self {
        let ms = (w.max_age_us / 1000).max(1).to_string();
        // -1: recovery off, the scripts touch no stream.
        let (keep_held, keep_ended) = match w.enabled() {
            true => (ms.clone(), "0".to_owned()),
            false => ("-1".to_owned(), "-1".to_owned()),
        };
        WindowArgs {
            messages: w.messages.to_string(),
            ms,
            keep_held,
            keep_ended,
        }
    }

    /// `keep_ms` for a registration that ends (`held`: its connection was lost).
    fn keep(&self, held: bool) -> &str {
        if held {
            &self.keep_held
        } else {
            &self.keep_ended
        }
    }
}

/// The meta a message's stored body starts with in Redis (`<flags>\n<accepted µs>\n`).
fn stored_meta(delivery: &Delivery, accepted: Timestamp) -> String {
    format!("{}\n{}\n", delivery.flags(), accepted.micros())
}

/// A login or membership to register.
struct Wanted<'a> {
    app: AppId,
    kind: Kind,
    room: &'a str,
    uid: UserId,
    /// Return the room's members on other nodes (presence).
    want_members: bool,
    /// Where the client asked to resume its stream.
    resume: Option<StreamPos>,
}

impl Cluster {
    /// A cluster member for `config` and the [`Directory`] its hub reports to, keeping streams
    /// in Redis within `window` (recovery; [`Window::OFF`]: none). Nothing connects until
    /// [`Cluster::run`].
    pub fn new(
        config: &ClusterConfig,
        window: Window,
    ) -> Result<(Arc<Cluster>, Arc<DirectoryQueue>), String> {
        let client = redis::Client::open(config.redis.as_str()).map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(ClusterStats::default());
        let node = config.node_id.clone().unwrap_or_else(|| {
            let tag: u64 = rand::random();
            format!("node-{tag:016x}")
        });
        let cluster = Arc::new(Cluster {
            node,
            config: config.clone(),
            client,
            conn: Mutex::new(None),
            up: AtomicBool::new(false),
            phase: tokio::sync::watch::channel(Phase::Down).0,
            gate: parking_lot::RwLock::new(()),
            fault: Notify::new(),
            scripts: Scripts::new(),
            stats: stats.clone(),
            rate_seq: AtomicU64::new(0),
            reports: Reports::default(),
            ops: Mutex::new(Some(rx)),
            queue: tx.clone(),
            window,
            window_args: WindowArgs::new(&window),
        });
        Ok((cluster, Arc::new(DirectoryQueue { tx, stats })))
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node
    }

    /// Whether Redis is reachable now and holds everything this node holds (calls are routed).
    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// The counters.
    pub fn stats(&self) -> &ClusterStats {
        &self.stats
    }

    /// Runs the node's cluster tasks until `stop`: the supervisor (connect, subscribe,
    /// re-register, heartbeat, apply what other nodes send; reconnect with backoff) and the
    /// directory writer.
    pub async fn run(
        self: Arc<Self>,
        hub: Arc<Hub>,
        clock: Arc<dyn Clock>,
        acks: Arc<AckSignal>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let rx = self.ops.lock().take();
        let writer = rx.map(|rx| tokio::spawn(self.clone().write_loop(rx)));
        let mut backoff = Duration::from_millis(100);
        loop {
            let session = self
                .clone()
                .session(hub.clone(), clock.clone(), acks.clone());
            tokio::select! {
                r = session => {
                    if let Err(e) = r {
                        tracing::warn!(node = %self.node, error = %e, "cluster: Redis connection lost");
                    }
                }
                () = async { let _ = stop.wait_for(|s| *s).await; } => break,
            }
            self.set_down();
            let jitter = Duration::from_millis(rand::random::<u64>() % 100);
            tokio::select! {
                () = tokio::time::sleep(backoff + jitter) => {}
                () = async { let _ = stop.wait_for(|s| *s).await; } => break,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        self.set_down();
        if let Some(w) = writer {
            w.abort();
        }
    }

    fn set_down(&self) {
        self.up.store(false, Relaxed);
        *self.conn.lock() = None;
        self.phase.send_replace(Phase::Down);
    }

    /// The command connection, if Redis is up.
    fn connection(&self) -> Result<MultiplexedConnection, Unavailable> {
        if !self.is_up() {
            return Err(Unavailable);
        }
        self.conn.lock().clone().ok_or(Unavailable)
    }

    /// Runs a script; a failure marks the connection faulty (the supervisor reconnects).
    async fn call(
        &self,
        conn: &mut MultiplexedConnection,
        script: &Script,
        args: &[&[u8]],
    ) -> Result<Value, Unavailable> {
        let mut inv = script.script.prepare_invoke();
        for a in args {
            inv.arg(*a);
        }
        self.stats.commands.fetch_add(1, Relaxed);
        match inv.invoke_async::<Value>(conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                self.stats.errors.fetch_add(1, Relaxed);
                tracing::warn!(node = %self.node, script = script.name, error = %e, "cluster: script failed");
                self.fault.notify_one();
                Err(Unavailable)
            }
        }
    }

    /// One connection's life: returns when it fails.
    async fn session(
        self: Arc<Self>,
        hub: Arc<Hub>,
        clock: Arc<dyn Clock>,
        acks: Arc<AckSignal>,
    ) -> Result<(), String> {
        let timeout = Duration::from_millis(self.config.command_timeout_ms);
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(|e| e.to_string())?;
        for s in self.scripts.all() {
            s.script
                .prepare_invoke()
                .load_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
        }
        let mut pubsub = tokio::time::timeout(timeout, self.client.get_async_pubsub())
            .await
            .map_err(|_| "pubsub connection timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        pubsub
            .subscribe(channel(&self.node))
            .await
            .map_err(|e| e.to_string())?;
        *self.conn.lock() = Some(conn.clone());
        self.heartbeat(&mut conn).await?;
        self.sync(&mut conn, &hub).await?;
        tracing::info!(node = %self.node, "cluster: connected to Redis, registrations in sync");
        let mut messages = pubsub.on_message();
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.node_ttl_ms / 3));
        tick.tick().await;
        loop {
            tokio::select! {
                m = messages.next() => {
                    let Some(m) = m else {
                        return Err("pubsub connection closed".into());
                    };
                    self.stats.received.fetch_add(1, Relaxed);
                    let data = Bytes::copy_from_slice(m.get_payload_bytes());
                    match relay::decode(&data) {
                        Ok(NodeMessage::Outcomes { call, outcomes, .. }) => {
                            self.reports.answer(call, outcomes);
                        }
                        Ok(msg @ NodeMessage::Deliver { report: Some(_), .. }) => {
                            self.deliver_and_report(&hub, &acks, &msg, &conn, clock.now());
                        }
                        Ok(msg) => {
                            hub.apply(&msg, clock.now(), |_, _, _| {});
                        }
                        Err(e) => tracing::warn!(node = %self.node, error = %e, "cluster: dropped a message"),
                    }
                }
                _ = tick.tick() => {
                    if self.heartbeat(&mut conn).await? {
                        tracing::warn!(node = %self.node, "cluster: this node had been given up for dead; re-registering");
                        self.sync(&mut conn, &hub).await?;
                    }
                }
                () = self.fault.notified() => return Err("a call failed".into()),
            }
        }
    }

    /// Delivers another node's reported message here and publishes the outcomes back to it;
    /// when the call waits for acks, after waiting (bounded) for its recipients' acks here.
    fn deliver_and_report(
        &self,
        hub: &Hub,
        acks: &Arc<AckSignal>,
        msg: &NodeMessage,
        conn: &MultiplexedConnection,
        now: Timestamp,
    ) {
        let NodeMessage::Deliver {
            report: Some(to), ..
        } = msg
        else {
            return;
        };
        let mut outcomes = Vec::new();
        let mut awaited = Vec::new();
        hub.apply(msg, now, |u, o, receipt| {
            match (to.ack_wait_ms, o, receipt) {
                (Some(_), Outcome::Queued, Some(r)) => awaited.push(Awaited::new(u.to_string(), r)),
                _ => outcomes.push((u.to_string(), o.now(receipt))),
            }
        });
        let (call, node) = (to.call, self.node.clone());
        let wait = to.ack_wait_ms.map(|ms| Duration::from_millis(ms.into()));
        let channel = channel(&to.node);
        let mut conn = conn.clone();
        let acks = acks.clone();
        self.stats.published.fetch_add(1, Relaxed);
        // One task per reported delivery (none per recipient); the wait holds no lock.
        tokio::spawn(async move {
            if let Some(wait) = wait {
                acks::wait(&acks, &awaited, tokio::time::Instant::now() + wait).await;
                outcomes.extend(awaited.into_iter().map(|a| {
                    let o = a.outcome();
                    (a.uid, o)
                }));
            }
            let answer = relay::encode(&NodeMessage::Outcomes {
                call,
                node,
                outcomes,
            });
            let _ = redis::cmd("PUBLISH")
                .arg(channel)
                .arg(answer)
                .query_async::<i64>(&mut conn)
                .await;
        });
    }

    /// Renews this node's heartbeat and sweeps a dead node's entries. Returns whether this node
    /// had been given up for dead.
    async fn heartbeat(&self, conn: &mut MultiplexedConnection) -> Result<bool, String> {
        let ttl = self.config.node_ttl_ms.to_string();
        let batch = SWEEP_BATCH.to_string();
        let dropped = user_leave_reason::DROPPED.to_string();
        let v = self
            .call(
                conn,
                &self.scripts.heartbeat,
                &[
                    self.node.as_bytes(),
                    ttl.as_bytes(),
                    batch.as_bytes(),
                    dropped.as_bytes(),
                    // A dead node's users lost their connections: their streams are held.
                    self.window_args.keep(true).as_bytes(),
                ],
            )
            .await
            .map_err(|e| e.to_string())?;
        let items = array(v);
        let was_dead = items.first().and_then(int).unwrap_or(0) == 1;
        let swept = items.len().saturating_sub(1) as u64;
        if swept > 0 {
            self.stats.swept.fetch_add(swept, Relaxed);
            tracing::info!(node = %self.node, swept, "cluster: swept a dead node's registrations");
        }
        Ok(was_dead)
    }

    /// Re-registers everything and goes up. While it runs, calls are refused (routing now could
    /// miss recipients not yet re-registered) and logins and joins commit locally (version 0);
    /// those are registered by further passes, and the node goes up only when a look under the
    /// gate finds none left.
    async fn sync(&self, conn: &mut MultiplexedConnection, hub: &Hub) -> Result<(), String> {
        self.up.store(false, Relaxed);
        self.phase.send_replace(Phase::Syncing);
        // Heartbeats go on while it runs, so the other nodes do not give this node up for dead
        // (and sweep what it has re-registered so far) however long it takes; if they did
        // anyway, it starts over.
        let swept = AtomicBool::new(false);
        let beat = async {
            let mut conn = conn.clone();
            let mut tick =
                tokio::time::interval(Duration::from_millis(self.config.node_ttl_ms / 3));
            tick.tick().await;
            loop {
                tick.tick().await;
                if self.heartbeat(&mut conn).await? {
                    swept.store(true, Relaxed);
                }
            }
        };
        let work = async {
            let mut conn = conn.clone();
            loop {
                swept.store(false, Relaxed);
                self.resync(&mut conn, hub).await?;
                loop {
                    let pending = {
                        let _gate = self.gate.write();
                        let pending: Vec<Registration> = hub
                            .registrations()
                            .into_iter()
                            .filter(|r| r.version() == 0)
                            .collect();
                        if pending.is_empty() {
                            if swept.load(Relaxed) {
                                break;
                            }
                            self.up.store(true, Relaxed);
                            self.phase.send_replace(Phase::Up);
                            return Ok(());
                        }
                        pending
                    };
                    self.restore(&mut conn, hub, pending).await?;
                }
                tracing::warn!(node = %self.node, "cluster: given up for dead while re-registering; again");
            }
        };
        tokio::select! {
            r = work => r,
            r = beat => r,
        }
    }

    /// Makes Redis agree with what this node holds: re-registers every login and membership
    /// (keeping what is still this node's, yielding what another live node took meanwhile), then
    /// forgets what this node registered before and no longer holds.
    async fn resync(&self, conn: &mut MultiplexedConnection, hub: &Hub) -> Result<(), String> {
        self.stats.resyncs.fetch_add(1, Relaxed);
        let below: u64 = redis::cmd("GET")
            .arg("herald:seq")
            .query_async::<Option<u64>>(conn)
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or(0)
            + 1;
        self.restore(conn, hub, hub.registrations()).await?;
        let key = format!("herald:idx:{}", self.node);
        let mut cursor: u64 = 0;
        loop {
            let (next, entries): (u64, Vec<String>) = redis::cmd("SSCAN")
                .arg(&key)
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(conn)
                .await
                .map_err(|e| e.to_string())?;
            for e in entries {
                let Some(reg) = parse_entry(&e) else { continue };
                if !hub.holds(&reg) {
                    let (app, kind, room, uid) = reg_parts(&reg);
                    self.release(conn, app, kind, room, uid, "*", 0, below)
                        .await?;
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(())
    }

    /// Re-registers logins and memberships this node holds, a pipeline at a time.
    async fn restore(
        &self,
        conn: &mut MultiplexedConnection,
        hub: &Hub,
        regs: Vec<Registration>,
    ) -> Result<(), String> {
        for chunk in regs.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for reg in chunk {
                let (app, kind, room, uid) = reg_parts(reg);
                pipe.add_command(
                    evalsha(&self.scripts.restore)
                        .arg(app)
                        .arg(self.node.as_str())
                        .arg(kind.arg())
                        .arg(room)
                        .arg(uid)
                        .arg(reg.version())
                        .arg(&self.window_args.messages)
                        .to_owned(),
                );
            }
            self.stats.commands.fetch_add(chunk.len() as u64, Relaxed);
            let answers: Vec<Value> = pipe.query_async(conn).await.map_err(|e| {
                self.stats.errors.fetch_add(1, Relaxed);
                e.to_string()
            })?;
            if answers.len() != chunk.len() {
                return Err("unexpected answers to restore".into());
            }
            for (reg, v) in chunk.iter().zip(answers) {
                match int(&v) {
                    Some(-1) => hub.lost(reg),
                    Some(0) => {}
                    Some(v) if v > 0 => {
                        if !hub.reregistered(reg, v as u64) {
                            // Ended while we were registering it: forget it again (only that
                            // version, so a newer registration of the same user stays).
                            let (app, kind, room, uid) = reg_parts(reg);
                            self.release(conn, app, kind, room, uid, &v.to_string(), 0, 0)
                                .await?;
                        }
                    }
                    _ => return Err("unexpected answer to restore".into()),
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn release(
        &self,
        conn: &mut MultiplexedConnection,
        app: &str,
        kind: Kind,
        room: &str,
        uid: &str,
        version: &str,
        reason: i32,
        below: u64,
    ) -> Result<(), String> {
        let reason = reason.to_string();
        let below = below.to_string();
        self.call(
            conn,
            &self.scripts.release,
            &[
                app.as_bytes(),
                self.node.as_bytes(),
                kind.arg().as_bytes(),
                room.as_bytes(),
                uid.as_bytes(),
                version.as_bytes(),
                reason.as_bytes(),
                below.as_bytes(),
                // Ended while Redis was away, or while being re-registered: its stream is held
                // (the user may come back), as for a lost connection.
                self.window_args.keep(true).as_bytes(),
            ],
        )
        .await
        .map(drop)
        .map_err(|e| e.to_string())
    }

    /// Sends the directory changes in order, a pipeline at a time. While the node is not up,
    /// claims answer [`Unavailable`] at once (their login or join commits locally and the sync
    /// registers it); releases wait for the end of a sync, and are dropped while Redis is
    /// unreachable (the next sync purges what they would have).
    async fn write_loop(self: Arc<Self>, mut rx: mpsc::Receiver<Op>) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut phase = self.phase.subscribe();
        while rx.recv_many(&mut batch, BATCH).await > 0 {
            let conn = loop {
                if let Ok(conn) = self.connection() {
                    break Some(conn);
                }
                let (claims, releases) = batch
                    .drain(..)
                    .partition::<Vec<_>, _>(|op| matches!(op, Op::Claim { .. }));
                for op in claims {
                    if let Op::Claim { reply, .. } = op {
                        let _ = reply.send(Err(Unavailable));
                    }
                }
                batch = releases;
                if batch.is_empty() || *phase.borrow_and_update() != Phase::Syncing {
                    break None;
                }
                if phase.wait_for(|p| *p != Phase::Syncing).await.is_err() {
                    break None;
                }
            };
            let Some(mut conn) = conn else {
                let dropped = batch.drain(..).count() as u64;
                self.stats.directory_dropped.fetch_add(dropped, Relaxed);
                continue;
            };
            if batch.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for op in &batch {
                let cmd = match op {
                    Op::Claim {
                        app,
                        kind,
                        room,
                        uid,
                        want_members,
                        resume,
                        ..
                    } => evalsha(&self.scripts.claim)
                        .arg(app.as_str())
                        .arg(self.node.as_str())
                        .arg(kind.arg())
                        .arg(room.as_str())
                        .arg(uid.as_str())
                        .arg(if *want_members { "1" } else { "0" })
                        .arg(&self.window_args.messages)
                        .arg(resume.map(|r| r.epoch.to_string()).unwrap_or_default())
                        .arg(resume.map_or(0, |r| r.position))
                        .to_owned(),
                    Op::Release {
                        app,
                        kind,
                        room,
                        uid,
                        version,
                        reason,
                        held,
                    } => evalsha(&self.scripts.release)
                        .arg(app.as_str())
                        .arg(self.node.as_str())
                        .arg(kind.arg())
                        .arg(room.as_str())
                        .arg(uid.as_str())
                        .arg(version.to_string())
                        .arg(reason.to_string())
                        .arg("0")
                        .arg(self.window_args.keep(*held))
                        .to_owned(),
                };
                pipe.add_command(cmd);
            }
            self.stats.commands.fetch_add(batch.len() as u64, Relaxed);
            let answers: Result<Vec<Value>, _> = pipe.query_async(&mut conn).await;
            let answers = match answers {
                Ok(a) if a.len() == batch.len() => Some(a),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(node = %self.node, error = %e, "cluster: directory update failed");
                    None
                }
            };
            if answers.is_none() {
                self.stats.errors.fetch_add(1, Relaxed);
                self.fault.notify_one();
            }
            let mut answers = answers.map(Vec::into_iter);
            for op in batch.drain(..) {
                let answer = answers.as_mut().and_then(Iterator::next);
                if let Op::Claim { reply, resume, .. } = op {
                    let claim = answer.and_then(|a| parse_claim(a, resume));
                    let _ = reply.send(claim.ok_or(Unavailable));
                }
            }
        }
    }

    /// Registers a login or membership before the hub commits it. `None` if it could not be
    /// registered: the node is not up, Redis failed (which takes the node down), or the queue
    /// is full.
    async fn claim(&self, w: &Wanted<'_>) -> Option<(Claim, Vec<UserId>)> {
        if !self.is_up() {
            return None;
        }
        let (reply, answer) = oneshot::channel();
        let op = Op::Claim {
            app: w.app.clone(),
            kind: w.kind,
            room: w.room.to_owned(),
            uid: w.uid.clone(),
            want_members: w.want_members,
            resume: w.resume,
            reply,
        };
        // Full: Redis is far behind; the caller retries while the node is up. The writer's
        // pipeline has the command time-out, and its failure takes the node down.
        self.queue.try_send(op).ok()?;
        answer.await.ok()?.ok()
    }

    /// Registers a login or membership (`None`: refused, nothing to register) before the hub
    /// commits it. What cannot be registered is committed as a single node would (version 0),
    /// under the gate and only while the node is not up: the sync before the node goes up
    /// registers it.
    async fn register(&self, what: Option<Wanted<'_>>) -> Registered<'_> {
        let Some(wanted) = what else {
            return Registered::Local(None);
        };
        loop {
            if let Some((claim, elsewhere)) = self.claim(&wanted).await {
                return Registered::Claimed(claim, elsewhere);
            }
            {
                let gate = self.gate.read();
                if !self.is_up() {
                    return Registered::Local(Some(gate));
                }
            }
            // Still up: the failure is taking the node down, or the queue was briefly full.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A login, cluster-wide: see [`Hub::prepare_login`] and [`Hub::commit_login`].
    #[allow(clippy::too_many_arguments)]
    pub async fn login(
        &self,
        hub: &Hub,
        app: &str,
        session: u64,
        uid: &str,
        token: &str,
        resume: Option<StreamPos>,
        now: Timestamp,
    ) -> i32 {
        let checked = hub.prepare_login(app, session, uid, token, resume, now);
        let what = match (&checked, AppId::new(app)) {
            (Ok(t), Ok(app_id)) => {
                // What reaches this node for the login after its claim is kept for its commit.
                hub.reserve(app, session, None, &t.uid);
                Some(Wanted {
                    app: app_id,
                    kind: Kind::Login,
                    room: "",
                    uid: t.uid.clone(),
                    want_members: false,
                    resume,
                })
            }
            _ => None,
        };
        match self.register(what).await {
            Registered::Claimed(claim, _) => {
                hub.commit_login(app, session, uid, checked, claim, now)
            }
            Registered::Local(_gate) => {
                hub.commit_login(app, session, uid, checked, Claim::default(), now)
            }
        }
    }

    /// A join, cluster-wide: see [`Hub::prepare_join`] and [`Hub::commit_join`].
    #[allow(clippy::too_many_arguments)]
    pub async fn join(
        &self,
        hub: &Hub,
        app: &str,
        session: u64,
        room: &str,
        uid: &str,
        token: &str,
        resume: Option<StreamPos>,
        presence: bool,
        now: Timestamp,
    ) -> i32 {
        let checked = hub.prepare_join(app, session, room, uid, token, resume, now);
        let what = match (&checked, AppId::new(app)) {
            (Ok(t), Ok(app_id)) => {
                hub.reserve(app, session, Some(&t.room), &t.uid);
                Some(Wanted {
                    app: app_id,
                    kind: Kind::Member,
                    room: t.room.as_str(),
                    uid: t.uid.clone(),
                    want_members: presence,
                    resume,
                })
            }
            _ => None,
        };
        match self.register(what).await {
            Registered::Claimed(claim, elsewhere) => {
                hub.commit_join(app, session, room, uid, checked, claim, &elsewhere, now)
            }
            Registered::Local(_gate) => {
                hub.commit_join(app, session, room, uid, checked, Claim::default(), &[], now)
            }
        }
    }

    /// Admits an OpenAPI message cluster-wide (the app's rate limit over all nodes, the `From`
    /// rule over all nodes), forwards it to the other nodes that hold recipients (one message per
    /// node), and delivers to the recipients held here. With `report`, every node that received
    /// it answers with its recipients' outcomes, awaited for at most `command_timeout_ms`.
    pub async fn send(
        &self,
        hub: &Hub,
        acks: &AckSignal,
        req: &SendRequest,
        qps_limit: u32,
        now: Timestamp,
        mut report: Option<&mut Report>,
    ) -> Result<Summary, RouteError> {
        let mut conn = self.connection().map_err(|_| RouteError::Unavailable)?;
        let delivery = herald_core::hub::delivery_of(req);
        let (kind, room, uids): (&str, Option<&RoomId>, &[UserId]) = match &req.target {
            Target::User(u) => ("U", None, std::slice::from_ref(u)),
            Target::RoomUsers(r, u) => ("R", Some(r), u),
            Target::Room(r) => ("B", Some(r), &[]),
        };
        let room_s = room.map(RoomId::as_str).unwrap_or("");
        // Registered before the call, so no answer can arrive before it is awaited.
        let mut pending = report.is_some().then(|| self.reports.register());
        let ack_timeout = report.as_ref().and_then(|r| r.ack_timeout());
        let report_to = pending.as_ref().map(|p| ReportTo {
            node: self.node.clone(),
            call: p.call,
            ack_wait_ms: ack_timeout.map(|t| t.as_millis() as u32),
        });
        let prefix = relay::deliver_prefix(
            req.app_id.as_str(),
            &delivery,
            now,
            room_s,
            "",
            report_to.as_ref(),
        );
        let now_s = now.micros().to_string();
        let limit = qps_limit.to_string();
        let member = format!(
            "{}:{}:{}",
            now.micros(),
            self.node,
            self.rate_seq.fetch_add(1, Relaxed)
        );
        let meta = stored_meta(&delivery, now);
        let mut args: Vec<&[u8]> = vec![
            req.app_id.as_str().as_bytes(),
            self.node.as_bytes(),
            now_s.as_bytes(),
            limit.as_bytes(),
            member.as_bytes(),
            kind.as_bytes(),
            req.from.as_str().as_bytes(),
            room_s.as_bytes(),
            &prefix,
            delivery.body(),
            self.window_args.messages.as_bytes(),
            self.window_args.ms.as_bytes(),
            meta.as_bytes(),
        ];
        args.extend(uids.iter().map(|u| u.as_str().as_bytes()));
        let v = self
            .call(&mut conn, &self.scripts.route, &args)
            .await
            .map_err(|_| RouteError::Unavailable)?;
        let items = array(v);
        let (summary, nodes) = match items.first().and_then(text).as_deref() {
            Some("rate") => {
                let us = items
                    .get(1)
                    .and_then(text)
                    .and_then(|s| s.parse::<f64>().ok());
                let us = us.unwrap_or(1_000_000.0).max(1.0) as u64;
                return Err(RouteError::Refused(SendError::RateLimited(RetryAfter(us))));
            }
            Some("from") => return Err(RouteError::Refused(SendError::FromIsOnlineUser)),
            Some("ok") if kind == "B" => {
                let nodes = items.get(2).and_then(int).unwrap_or(0);
                let mut summary = Summary::default();
                // Streams in Redis: this node's members are reached through its channel.
                if self.window.enabled() {
                    self.count_held(items.get(3), &mut summary, report.as_deref_mut());
                } else if let Some(r) = room {
                    summary = hub.deliver(
                        req.app_id.as_str(),
                        &delivery,
                        Recipients::Room(r, None),
                        now,
                        |u, o, receipt| {
                            if let Some(rep) = report.as_deref_mut() {
                                report::record(rep, u.as_str(), o, receipt);
                            }
                        },
                    );
                }
                (summary, nodes)
            }
            Some("ok") => {
                let names = |v: Option<&Value>| -> Vec<UserId> {
                    v.cloned()
                        .map(array)
                        .unwrap_or_default()
                        .iter()
                        .filter_map(text)
                        .filter_map(|u| UserId::new(&u).ok())
                        .collect()
                };
                let here = names(items.get(1));
                let to = match room {
                    Some(r) => Recipients::Members(r, &here),
                    None => Recipients::Logins(&here),
                };
                let mut summary =
                    hub.deliver(req.app_id.as_str(), &delivery, to, now, |u, o, receipt| {
                        if let Some(rep) = report.as_deref_mut() {
                            report::record(rep, u.as_str(), o, receipt);
                        }
                    });
                // Recipients held nowhere: a count, or with a report their names.
                let gone = match room {
                    Some(_) => Outcome::NotInRoom,
                    None => Outcome::NotOnline,
                };
                let missing = match report.as_deref_mut() {
                    Some(rep) => {
                        let names = names(items.get(2));
                        for u in &names {
                            report::add(&mut rep.lists, u.to_string(), gone);
                        }
                        names.len() as i64
                    }
                    None => items.get(2).and_then(int).unwrap_or(0),
                };
                for _ in 0..missing {
                    summary.add(gone);
                }
                self.count_held(items.get(5), &mut summary, report.as_deref_mut());
                let forwarded = items.get(3).and_then(int).unwrap_or(0);
                for _ in 0..forwarded {
                    summary.add(Outcome::Forwarded);
                }
                (summary, items.get(4).and_then(int).unwrap_or(0))
            }
            _ => return Err(RouteError::Unavailable),
        };
        self.stats.published.fetch_add(nodes.max(0) as u64, Relaxed);
        if let (Some(rep), Some(p)) = (report, pending.as_mut()) {
            // Other nodes wait for their recipients' acks as long as this one does, then report.
            let wait = Duration::from_millis(self.config.command_timeout_ms)
                + ack_timeout.unwrap_or_default();
            let local = rep.take_ack_wait();
            let (answered, ()) = tokio::join!(
                p.collect(nodes.max(0) as usize, wait, &mut rep.lists),
                async {
                    if let Some(w) = &local {
                        w.wait(acks).await;
                    }
                }
            );
            let rep = &mut rep.lists;
            if let Some(w) = local {
                w.list(rep);
            }
            rep.nodes_not_reporting = (nodes.max(0) as usize - answered) as u32;
            // Recipients of a batch that no answer named: held by a node that did not report.
            let mut named: std::collections::HashSet<String> = rep.named().cloned().collect();
            for u in uids {
                if named.insert(u.to_string()) {
                    rep.unknown.push(u.to_string());
                }
            }
            rep.sort();
        }
        Ok(summary)
    }

    /// Routes a client's message whose recipient is not held here. Returns whether it reached a
    /// node that holds the recipient (a room broadcast: always, once handed to Redis).
    pub async fn forward(
        &self,
        app: &str,
        f: &Forward,
        now: Timestamp,
    ) -> Result<bool, Unavailable> {
        let mut conn = self.connection()?;
        let room = f.room.as_ref().map(RoomId::as_str).unwrap_or("");
        let (kind, except) = match (&f.to, &f.room) {
            (None, _) => ("B", f.from.as_str()),
            (Some(_), Some(_)) => ("R", ""),
            (Some(_), None) => ("U", ""),
        };
        let to = f.to.as_ref().map(UserId::as_str).unwrap_or("");
        let prefix = relay::deliver_prefix(app, &f.delivery, now, room, except, None);
        let meta = stored_meta(&f.delivery, now);
        let v = self
            .call(
                &mut conn,
                &self.scripts.forward,
                &[
                    app.as_bytes(),
                    self.node.as_bytes(),
                    kind.as_bytes(),
                    room.as_bytes(),
                    to.as_bytes(),
                    &prefix,
                    f.delivery.body(),
                    self.window_args.messages.as_bytes(),
                    self.window_args.ms.as_bytes(),
                    meta.as_bytes(),
                    except.as_bytes(),
                ],
            )
            .await?;
        let reached = int(&v) == Some(1);
        if reached {
            self.stats.published.fetch_add(1, Relaxed);
        }
        Ok(reached)
    }

    /// Adds the recipients a route found held (recovery: their streams kept the message), a
    /// count or, with a report, their names, to the summary and the report.
    fn count_held(&self, v: Option<&Value>, summary: &mut Summary, report: Option<&mut Report>) {
        let held = match (v, report) {
            (Some(Value::Array(names)), Some(rep)) => {
                for u in names.iter().filter_map(text) {
                    report::add(&mut rep.lists, u, Outcome::Held);
                }
                names.len() as i64
            }
            (v, _) => v.and_then(int).unwrap_or(0),
        };
        for _ in 0..held.max(0) {
            summary.add(Outcome::Held);
        }
    }

    /// Whether `uid` is logged in on any live node.
    pub async fn online(&self, app: &str, uid: &str) -> Result<bool, Unavailable> {
        let mut conn = self.connection()?;
        let v = self
            .call(
                &mut conn,
                &self.scripts.lookup,
                &[b"online", app.as_bytes(), uid.as_bytes()],
            )
            .await?;
        Ok(int(&v) == Some(1))
    }

    /// The members of `room` on live nodes, sorted; `None` if it has none.
    pub async fn room_users(
        &self,
        app: &str,
        room: &RoomId,
    ) -> Result<Option<Vec<UserId>>, Unavailable> {
        let mut conn = self.connection()?;
        let v = self
            .call(
                &mut conn,
                &self.scripts.lookup,
                &[b"room", app.as_bytes(), room.as_str().as_bytes()],
            )
            .await?;
        let mut users: Vec<UserId> = array(v)
            .iter()
            .filter_map(text)
            .filter_map(|u| UserId::new(&u).ok())
            .collect();
        users.sort();
        users.dedup();
        Ok((!users.is_empty()).then_some(users))
    }

    /// `KickUser`, wherever the member is: here it is kicked at once, on another node that node
    /// is told to.
    pub async fn kick(
        &self,
        hub: &Hub,
        app: &str,
        room: &RoomId,
        uid: &UserId,
        now: Timestamp,
    ) -> Result<(), Unavailable> {
        if hub.kick(app, room, uid, now) {
            return Ok(());
        }
        let mut conn = self.connection()?;
        let v = self
            .call(
                &mut conn,
                &self.scripts.lookup,
                &[
                    b"kick",
                    app.as_bytes(),
                    room.as_str().as_bytes(),
                    self.node.as_bytes(),
                    uid.as_str().as_bytes(),
                ],
            )
            .await?;
        if text(&v).is_some_and(|s| s != "here" && s != "gone") {
            self.stats.published.fetch_add(1, Relaxed);
        }
        Ok(())
    }

    /// Every node's liveness and this node's view, for `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let s = &self.stats;
        let _ = write!(
            out,
            "# HELP herald_cluster_redis_up Whether this node reaches the cluster's Redis.\n\
             # TYPE herald_cluster_redis_up gauge\n\
             herald_cluster_redis_up {}\n\
             # HELP herald_cluster_redis_commands_total Script calls sent to Redis.\n\
             # TYPE herald_cluster_redis_commands_total counter\n\
             herald_cluster_redis_commands_total {}\n\
             # HELP herald_cluster_redis_errors_total Redis calls that failed or timed out.\n\
             # TYPE herald_cluster_redis_errors_total counter\n\
             herald_cluster_redis_errors_total {}\n\
             # HELP herald_cluster_published_total Messages this node's calls sent to other nodes.\n\
             # TYPE herald_cluster_published_total counter\n\
             herald_cluster_published_total {}\n\
             # HELP herald_cluster_received_total Messages received from other nodes.\n\
             # TYPE herald_cluster_received_total counter\n\
             herald_cluster_received_total {}\n\
             # HELP herald_cluster_resyncs_total Times this node re-registered what it holds.\n\
             # TYPE herald_cluster_resyncs_total counter\n\
             herald_cluster_resyncs_total {}\n\
             # HELP herald_cluster_directory_dropped_total Directory changes dropped while Redis was unreachable.\n\
             # TYPE herald_cluster_directory_dropped_total counter\n\
             herald_cluster_directory_dropped_total {}\n\
             # HELP herald_cluster_swept_total Registrations of dead nodes this node swept.\n\
             # TYPE herald_cluster_swept_total counter\n\
             herald_cluster_swept_total {}\n",
            u8::from(self.is_up()),
            s.commands.load(Relaxed),
            s.errors.load(Relaxed),
            s.published.load(Relaxed),
            s.received.load(Relaxed),
            s.resyncs.load(Relaxed),
            s.directory_dropped.load(Relaxed),
            s.swept.load(Relaxed),
        );
    }
}

/// A node's pub/sub channel (`chan` in the scripts' prelude).
fn channel(node: &str) -> String {
    format!("herald:n:{node}")
}

/// `EVALSHA <sha> 0`, to which the script's arguments are added (the scripts are loaded at
/// every connect, so a pipeline can call them by hash).
fn evalsha(script: &Script) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.script.get_hash()).arg(0);
    cmd
}

fn reg_parts(reg: &Registration) -> (&str, Kind, &str, &str) {
    match reg {
        Registration::Login { app, uid, .. } => (app.as_str(), Kind::Login, "", uid.as_str()),
        Registration::Member { app, room, uid, .. } => {
            (app.as_str(), Kind::Member, room.as_str(), uid.as_str())
        }
    }
}

/// An index entry (`L\t<app>\t<uid>` or `M\t<app>\t<room>\t<uid>`) as a registration.
fn parse_entry(e: &str) -> Option<Registration> {
    let f: Vec<&str> = e.split('\t').collect();
    match f.as_slice() {
        ["L", app, uid] => Some(Registration::Login {
            app: AppId::new(app).ok()?,
            uid: UserId::new(uid).ok()?,
            version: 0,
        }),
        ["M", app, room, uid] => Some(Registration::Member {
            app: AppId::new(app).ok()?,
            room: RoomId::new(room).ok()?,
            uid: UserId::new(uid).ok()?,
            version: 0,
        }),
        _ => None,
    }
}

/// A claim's answer; `resume`: where the client asked to resume its stream.
fn parse_claim(v: Value, resume: Option<StreamPos>) -> Option<(Claim, Vec<UserId>)> {
    let items = array(v);
    let version = u64::try_from(int(items.first()?)?).ok()?;
    let took_over = int(items.get(1)?)? == 1;
    let members = items
        .get(2)
        .cloned()
        .map(array)
        .unwrap_or_default()
        .iter()
        .filter_map(text)
        .filter_map(|u| UserId::new(&u).ok())
        .collect();
    let stream = match (items.get(3).and_then(int), items.get(4).and_then(int)) {
        (Some(epoch), Some(position)) => {
            let head = StreamPos {
                epoch: u64::try_from(epoch).ok()?,
                position: u64::try_from(position).ok()?,
            };
            let resumed = resume.map(|from| parse_replay(&items[5..], head.epoch, from.position));
            Some(Box::new(ClaimedStream { head, resumed }))
        }
        _ => None,
    };
    let claim = Claim {
        version,
        took_over,
        stream,
    };
    Some((claim, members))
}

/// What a claim's resume found: `1` and the messages after position `from` of `epoch` (each
/// `<flags>\n<accepted µs>\n<body>`), or a gap (`0`, or anything that does not parse: never a
/// guess).
fn parse_replay(items: &[Value], epoch: u64, from: u64) -> Resumed {
    if items.first().and_then(int) != Some(1) {
        return Resumed::Gap;
    }
    let mut replay = Vec::with_capacity(items.len() - 1);
    for (item, position) in items[1..].iter().zip(from + 1..) {
        let Value::BulkString(b) = item else {
            return Resumed::Gap;
        };
        let mut parts = b.splitn(3, |c| *c == b'\n');
        let (Some(flags), Some(accepted), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Resumed::Gap;
        };
        let (Some(flags), Some(accepted)) = (field::<u8>(flags), field::<u64>(accepted)) else {
            return Resumed::Gap;
        };
        let delivery = Delivery::from_parts(flags, Bytes::copy_from_slice(body));
        let pos = StreamPos { epoch, position };
        replay.push((pos, delivery, Timestamp::from_micros(accepted)));
    }
    Resumed::Replay(replay)
}

/// A number in a script's answer, given as bytes.
fn field<T: std::str::FromStr>(s: &[u8]) -> Option<T> {
    std::str::from_utf8(s).ok()?.parse().ok()
}

fn array(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        _ => Vec::new(),
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_entries_parse_back_into_registrations() {
        let app = "a".repeat(24);
        assert_eq!(
            parse_entry(&format!("L\t{app}\tu1")),
            Some(Registration::Login {
                app: AppId::new(&app).unwrap(),
                uid: UserId::new("u1").unwrap(),
                version: 0
            })
        );
        assert!(matches!(
            parse_entry(&format!("M\t{app}\troom-1\tu.2")),
            Some(Registration::Member { .. })
        ));
        assert_eq!(parse_entry("X\ta\tb"), None);
        assert_eq!(parse_entry(&format!("L\t{app}\tbad uid")), None);
    }

    #[test]
    fn claims_parse_from_script_answers() {
        let v = Value::Array(vec![
            Value::Int(7),
            Value::Int(1),
            Value::Array(vec![Value::BulkString(b"u2".to_vec())]),
        ]);
        let (claim, members) = parse_claim(v, None).unwrap();
        assert_eq!(
            claim,
            Claim {
                version: 7,
                took_over: true,
                stream: None,
            }
        );
        assert_eq!(members, vec![UserId::new("u2").unwrap()]);
        assert_eq!(parse_claim(Value::Nil, None), None);
    }

    #[test]
    fn claimed_streams_and_replays_parse_and_a_bad_replay_is_a_gap() {
        let bulk = |s: &[u8]| Value::BulkString(s.to_vec());
        let claim = |tail: Vec<Value>, resume| {
            let mut v = vec![Value::Int(3), Value::Int(0), Value::Array(vec![])];
            v.extend(tail);
            parse_claim(Value::Array(v), resume)
                .unwrap()
                .0
                .stream
                .unwrap()
        };
        let from = |position| {
            Some(StreamPos {
                epoch: 1_843_000_000_000_007,
                position,
            })
        };
        let head = StreamPos {
            epoch: 1_843_000_000_000_007,
            position: 12,
        };
        // No resume asked: only the head.
        let s = claim(vec![bulk(b"1843000000000007"), Value::Int(12)], None);
        assert_eq!(
            *s,
            ClaimedStream {
                head,
                resumed: None
            }
        );
        // A replay of positions 11 and 12, bodies whole (newlines and all).
        let s = claim(
            vec![
                bulk(b"1843000000000007"),
                Value::Int(12),
                Value::Int(1),
                bulk(b"1\n1700000000000001\nfirst\nline"),
                bulk(b"0\n1700000000000002\n"),
            ],
            from(10),
        );
        let Some(Resumed::Replay(r)) = s.resumed else {
            panic!("not a replay: {s:?}");
        };
        let got: Vec<_> = r
            .iter()
            .map(|(p, d, t)| (p.position, d.flags(), d.body().to_vec(), t.micros()))
            .collect();
        assert_eq!(
            got,
            vec![
                (11, 1, b"first\nline".to_vec(), 1_700_000_000_000_001),
                (12, 0, Vec::new(), 1_700_000_000_000_002),
            ]
        );
        assert!(r.iter().all(|(p, ..)| p.epoch == head.epoch));
        // A gap, or a replay that does not parse, is a gap: never a guess.
        for tail in [
            vec![Value::Int(0)],
            vec![],
            vec![Value::Int(1), bulk(b"x\n1\nbody")],
            vec![Value::Int(1), bulk(b"1\n1")],
            vec![Value::Int(1), bulk(b"300\n1\nbody")],
            vec![Value::Int(1), Value::Int(5)],
        ] {
            let mut v = vec![bulk(b"1843000000000007"), Value::Int(12)];
            v.extend(tail);
            assert_eq!(claim(v, from(11)).resumed, Some(Resumed::Gap));
        }
    }
}
