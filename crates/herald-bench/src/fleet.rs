//! The receiving side: many client connections of one system (Herald or a peer, see
//! [`crate::clients`]), each logged in and/or in rooms, counting what they receive.
//!
//! Every client has an index. The load driver adds to `expected[index]` for each recipient of a
//! call the server accepted; the client adds to `received[index]` for each message frame. After a
//! run drains, a client that received less than expected lost messages, and one that received more
//! got something it was not sent. Comparing per client (not only totals) means one client's loss
//! cannot hide behind another's duplicate.
//!
//! A message's latency is the time from just before its API call was signed to the moment the
//! `read` that brought its frame returned (one clock reading per `read`, not per frame, to keep the
//! receiving side cheap).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context as _};
use herald_proto::client::{Call, GATEWAY_PATH};
use herald_proto::token::{AccessToken, Privilege};
use parking_lot::Mutex;
use rand::Rng as _;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::clients::{self, Decoder, Received, Reply};
use crate::server::{App, Target};
use crate::stats::Latencies;
use crate::system::System;
use crate::ws::{Frame, WsClient};

/// How long one client may take to connect, log in and join.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Connections being set up at once (the server's accept backlog is finite).
const SETUP_CONCURRENCY: usize = 128;

/// Initial read buffer per client; it grows to the largest frame received.
const READ_BUFFER: usize = 4096;

/// One client to start.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    /// Index into the apps.
    pub app: usize,
    /// Its user id (for the login and in its rooms).
    pub uid: String,
    /// Whether it logs in (to receive `SendUnicast`).
    pub login: bool,
    /// Rooms it joins.
    pub rooms: Vec<String>,
    /// Once set up, it reads nothing until [`Shared::resume_stalled`]: a slow consumer. Its
    /// messages are not counted (the server is expected to cut it off).
    pub stall: bool,
}

/// Expected and received message counts of one client.
#[derive(Debug, Default)]
pub struct Tally {
    /// Messages the server accepted for this client.
    pub expected: AtomicU64,
    /// Message frames this client received.
    pub received: AtomicU64,
    /// A stalled client (see [`ClientSpec::stall`]): left out of [`Shared::counts`].
    pub stalled: bool,
}

/// Totals over all clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Messages the server accepted for the clients.
    pub expected: u64,
    /// Messages the clients received.
    pub received: u64,
    /// Sum over clients of what each received less than expected.
    pub lost: u64,
    /// Sum over clients of what each received more than expected.
    pub unexpected: u64,
}

/// State shared by the clients, the load driver and the reports.
#[derive(Debug)]
pub struct Shared {
    /// The instant payload stamps count from.
    pub epoch: Instant,
    /// Per client, by index.
    pub tallies: Vec<Tally>,
    /// Latency from API call to receipt.
    pub latency: Latencies,
    ready: AtomicUsize,
    failed: AtomicUsize,
    errors: Mutex<BTreeMap<String, u64>>,
    closed: Mutex<BTreeMap<String, u64>>,
    /// Messages whose msgid was not the previous one plus one.
    pub msgid_gaps: AtomicU64,
    /// Binary frames that were not valid message frames, or carried no stamp.
    pub bad_frames: AtomicU64,
    /// Text frames (events) received after set-up.
    pub events: AtomicU64,
    /// Messages that arrived before an earlier message of the same sender.
    pub out_of_order: AtomicU64,
    /// Messages that arrived twice (the same stamp of the same sender in a row).
    pub duplicates: AtomicU64,
    /// Set to let stalled clients read again.
    resume: tokio::sync::watch::Sender<bool>,
    stopping: AtomicBool,
}

impl Shared {
    /// Nanoseconds since `epoch`: the clock of payload stamps.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Totals and per-client differences.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for t in self.tallies.iter().filter(|t| !t.stalled) {
            let (e, r) = (t.expected.load(Relaxed), t.received.load(Relaxed));
            c.expected += e;
            c.received += r;
            c.lost += e.saturating_sub(r);
            c.unexpected += r.saturating_sub(e);
        }
        c
    }

    /// Lets the stalled clients read what the server sent them, up to its close frame.
    pub fn resume_stalled(&self) {
        self.resume.send_replace(true);
    }

    /// Connections the server closed (or that failed) after set-up, by reason.
    pub fn closed(&self) -> BTreeMap<String, u64> {
        self.closed.lock().clone()
    }

    /// Set-up failures by reason.
    pub fn setup_errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().clone()
    }

    fn note_closed(&self, reason: String) {
        if !self.stopping.load(Relaxed) {
            *self.closed.lock().entry(reason).or_default() += 1;
        }
    }
}

/// Set-up of a fleet, once every client is in or has failed.
#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    /// Clients connected, logged in and joined.
    pub ready: usize,
    /// Clients that failed (reasons in [`Shared::setup_errors`]).
    pub failed: usize,
    /// Seconds it took.
    pub secs: f64,
}

/// Running clients. Dropping it leaves them running; call [`Fleet::stop`].
#[derive(Debug)]
pub struct Fleet {
    /// What the clients share.
    pub shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
    started: Instant,
}

impl Fleet {
    /// Starts one task per client of `system`; they connect `SETUP_CONCURRENCY` at a time.
    pub fn start(
        system: System,
        target: &Target,
        apps: &Arc<[App]>,
        specs: Vec<ClientSpec>,
        epoch: Instant,
    ) -> Fleet {
        let shared = Arc::new(Shared {
            epoch,
            tallies: specs
                .iter()
                .map(|s| Tally {
                    stalled: s.stall,
                    ..Tally::default()
                })
                .collect(),
            latency: Latencies::new(16),
            ready: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            errors: Mutex::new(BTreeMap::new()),
            closed: Mutex::new(BTreeMap::new()),
            msgid_gaps: AtomicU64::new(0),
            bad_frames: AtomicU64::new(0),
            events: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            resume: tokio::sync::watch::channel(false).0,
            stopping: AtomicBool::new(false),
        });
        let gate = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
        let handles = specs
            .into_iter()
            .enumerate()
            .map(|(index, spec)| {
                let (shared, gate, apps, target) =
                    (shared.clone(), gate.clone(), apps.clone(), target.clone());
                tokio::spawn(async move {
                    let permit = gate.acquire_owned().await;
                    let setup = tokio::time::timeout(
                        SETUP_TIMEOUT,
                        clients::set_up(system, &target, &apps[spec.app], &spec, Some(index)),
                    )
                    .await
                    .unwrap_or_else(|_| Err(anyhow!("set-up timed out")));
                    drop(permit);
                    match setup {
                        Ok((ws, decoder)) => {
                            shared.ready.fetch_add(1, Relaxed);
                            if spec.stall {
                                let _ = shared.resume.subscribe().wait_for(|r| *r).await;
                            }
                            receive(ws, decoder, index, &shared).await;
                        }
                        Err(e) => {
                            *shared.errors.lock().entry(format!("{e:#}")).or_default() += 1;
                            shared.failed.fetch_add(1, Relaxed);
                        }
                    }
                })
            })
            .collect();
        Fleet {
            shared,
            handles,
            started: Instant::now(),
        }
    }

    /// Number of clients.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// True when there are no clients.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Clients ready so far.
    pub fn ready(&self) -> usize {
        self.shared.ready.load(Relaxed)
    }

    /// Waits until every client is ready or has failed.
    pub async fn wait_ready(&self) -> Setup {
        loop {
            let (ready, failed) = (
                self.shared.ready.load(Relaxed),
                self.shared.failed.load(Relaxed),
            );
            if ready + failed >= self.handles.len() {
                return Setup {
                    ready,
                    failed,
                    secs: self.started.elapsed().as_secs_f64(),
                };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the clients received what they were sent, or `limit` passed. True if drained.
    pub async fn drain(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let c = self.shared.counts();
            if c.received >= c.expected {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Disconnects every client.
    pub async fn stop(self) {
        self.shared.stopping.store(true, Relaxed);
        for h in &self.handles {
            h.abort();
        }
        for h in self.handles {
            let _ = h.await;
        }
    }
}

/// A `001` token for `uid` in `room` ("" for a login), valid for a day.
pub fn token(app: &App, room: &str, uid: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32);
    let expire = now + 86_400;
    let mut t = AccessToken::new(
        app.app_id.clone(),
        room,
        uid,
        rand::thread_rng().gen_range(1..=99_999_999),
        now,
    );
    t.expire_time(expire);
    t.add_privilege(Privilege::PublishStream, expire);
    t.add_privilege(Privilege::SubscribeStream, expire);
    t.serialize(&app.app_key)
}

/// Connects client `index` (to its node, for a cluster) and upgrades.
pub async fn connect(target: &Target, index: usize, app: &App) -> anyhow::Result<WsClient> {
    let path = format!("{GATEWAY_PATH}?appId={}", app.app_id);
    let addr = target.node(index);
    WsClient::connect(addr, &addr.to_string(), &path, READ_BUFFER)
        .await
        .context("connect")
}

/// Sends a call and waits for the event that answers it: `check` returns `Some(Ok)` for the
/// answer, `Some(Err)` for a refusal, `None` for an unrelated event (skipped).
async fn exchange(
    ws: &mut WsClient,
    call: &Call,
    check: impl Fn(&serde_json::Value) -> Option<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let text = serde_json::to_string(call)?;
    ws.send_text(&text).await?;
    loop {
        let event: serde_json::Value = serde_json::from_str(&ws.next_text().await?)?;
        if let Some(result) = check(&event) {
            return result;
        }
    }
}

/// Logs in as `uid`.
pub async fn login(ws: &mut WsClient, app: &App, uid: &str) -> anyhow::Result<()> {
    let call = Call::Login {
        token: token(app, "", uid),
        uid: uid.to_owned(),
        resume: None,
    };
    exchange(ws, &call, |e| {
        (e["event"] == "onLoginResult").then(|| match e["errorCode"].as_i64() {
            Some(0) => Ok(()),
            code => Err(anyhow!("login refused: errorCode {code:?}")),
        })
    })
    .await
}

/// Joins `room` as `uid`.
pub async fn join(ws: &mut WsClient, app: &App, room: &str, uid: &str) -> anyhow::Result<()> {
    let call = Call::JoinRoom {
        room_id: room.to_owned(),
        uid: uid.to_owned(),
        token: token(app, room, uid),
        resume: None,
    };
    exchange(ws, &call, |e| {
        (e["event"] == "onRoomStateChanged" && e["roomId"] == room).then(|| {
            match e["state"].as_i64() {
                Some(0) => Ok(()),
                state => Err(anyhow!("joinRoom refused: state {state:?}")),
            }
        })
    })
    .await
}

/// Leaves `room`.
pub async fn leave(ws: &mut WsClient, room: &str) -> anyhow::Result<()> {
    let call = Call::LeaveRoom {
        room_id: room.to_owned(),
    };
    exchange(ws, &call, |e| {
        (e["event"] == "onLeaveRoom" && e["roomId"] == room).then_some(Ok(()))
    })
    .await
}

/// Reads until the connection ends, counting messages and recording their latency.
async fn receive(mut ws: WsClient, mut decoder: Decoder, index: usize, shared: &Shared) {
    let tally = &shared.tallies[index];
    let mut got = Received::default();
    let mut pong: Option<Vec<u8>> = None;
    // Frames that arrived with the last set-up answer were read now, as far as latency goes.
    let mut now_ns = shared.now_ns();
    loop {
        loop {
            let frame = match ws.frames.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    shared.note_closed(format!("bad frame: {e}"));
                    return;
                }
            };
            let result = match frame {
                Frame::Binary(b) => decoder.data(false, b, now_ns, &mut got),
                Frame::Text(t) => decoder.data(true, t, now_ns, &mut got),
                Frame::Ping(p) => {
                    pong = Some(p.to_vec());
                    Ok(())
                }
                Frame::Pong => Ok(()),
                Frame::Close(code) => {
                    shared.note_closed(match code {
                        Some(c) => format!("closed by the server with {c}"),
                        None => "closed by the server".into(),
                    });
                    return;
                }
            };
            if let Err(e) = result {
                shared.note_closed(format!("{e}"));
                return;
            }
        }
        if got.messages > 0 {
            tally.received.fetch_add(got.messages, Relaxed);
            got.messages = 0;
        }
        if !got.latencies_us.is_empty() {
            shared.latency.record_all(index, &got.latencies_us);
            got.latencies_us.clear();
        }
        for (count, total) in [
            (&mut got.msgid_gaps, &shared.msgid_gaps),
            (&mut got.bad, &shared.bad_frames),
            (&mut got.events, &shared.events),
            (&mut got.out_of_order, &shared.out_of_order),
            (&mut got.duplicates, &shared.duplicates),
        ] {
            if *count > 0 {
                total.fetch_add(std::mem::take(count), Relaxed);
            }
        }
        let reply = match got.reply.take() {
            Some(Reply::Text(t)) => ws.send_text(t).await,
            Some(Reply::Binary(b)) => ws.send_binary(b).await,
            None => Ok(()),
        };
        let pong_sent = match pong.take() {
            Some(p) => ws.send_pong(&p).await,
            None => Ok(()),
        };
        if let Err(e) = reply.and(pong_sent) {
            shared.note_closed(format!("write failed: {}", e.kind()));
            return;
        }
        match ws.fill().await {
            Ok(0) => {
                shared.note_closed("closed by the server without a close frame".into());
                return;
            }
            Ok(_) => now_ns = shared.now_ns(),
            Err(e) => {
                shared.note_closed(format!("read failed: {}", e.kind()));
                return;
            }
        }
    }
}
