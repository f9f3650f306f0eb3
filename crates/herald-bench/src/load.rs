//! The sending side: workloads (what each API call is) and the driver that issues them at a fixed
//! rate, or as fast as the server answers, over several keep-alive connections to a system's API
//! side ([`crate::api`]).
//!
//! Open loop at a fixed rate: worker `i` of `W` issues its `j`-th call at `start + (j·W + i) / rate`
//! whatever happened before, so a slow answer delays later calls of that worker only until it
//! catches up, and an overloaded server shows up as an achieved rate below the offered one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::seq::index;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use std::sync::atomic::Ordering::Relaxed;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{mpsc, Semaphore};

use crate::api::{self, ApiConn};
use crate::fleet::Shared;
use crate::http::Answer;
use crate::payload::stamped;
use crate::server::{App, Target};
use crate::stats::histogram;
use crate::system::System;

/// The `From` of every call: a business-server sender id, never an online user.
pub const FROM: &str = "bench_bot";

/// Who a call is for: client indices.
#[derive(Debug, Clone)]
pub enum Recipients {
    /// Chosen for this call.
    Listed(Vec<u32>),
    /// A fixed set (a room's members).
    Shared(Arc<[u32]>),
}

impl Recipients {
    /// The client indices.
    pub fn as_slice(&self) -> &[u32] {
        match self {
            Recipients::Listed(v) => v,
            Recipients::Shared(s) => s,
        }
    }
}

/// How a call addresses its recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum To {
    /// The recipients by user id, members of this room (Herald's `BatchSendRoomUnicast`; the
    /// peers address each user).
    RoomUsers(Arc<str>),
    /// Everyone in this room (`SendBroadcast`; the peers publish once to the room).
    Room(Arc<str>),
    /// The one recipient by user id (`SendUnicast`).
    User,
}

/// One call to make: what [`crate::api::encode`] turns into each system's request.
#[derive(Debug, Clone)]
pub struct ApiCall {
    /// Index of the app (for Herald: the AppId, and the key that signs the call).
    pub app: usize,
    /// How it addresses the recipients.
    pub to: To,
    /// The clients that must receive it if the server accepts it.
    pub recipients: Recipients,
}

/// What each call of a scenario is.
pub trait Workload: Send + Sync {
    /// Size of each message's payload in bytes.
    fn payload_bytes(&self) -> usize;
    /// The next call.
    fn call(&self, rng: &mut SmallRng) -> ApiCall;
    /// The user id of client `client`.
    fn uid(&self, client: u32) -> &str;
}

/// `BatchSendRoomUnicast` to `per_call` distinct members of one room, chosen at random.
#[derive(Debug)]
pub struct Fanout {
    /// The app (index).
    pub app: usize,
    /// The room.
    pub room: Arc<str>,
    /// Member `i` is client `i`; its uid.
    pub members: Vec<String>,
    /// Recipients per call (at most 600).
    pub per_call: usize,
    /// Payload size.
    pub payload: usize,
    /// Clients in every call (the last members: the soak's slow consumers); the rest of each
    /// call's recipients are chosen at random among the other members.
    pub always: usize,
}

impl Workload for Fanout {
    fn payload_bytes(&self) -> usize {
        self.payload
    }

    fn call(&self, rng: &mut SmallRng) -> ApiCall {
        let pool = self.members.len().saturating_sub(self.always);
        let always = self.members.len() - pool;
        let chosen = index::sample(rng, pool, self.per_call.saturating_sub(always).min(pool));
        let recipients = chosen
            .iter()
            .chain(pool..self.members.len())
            .map(|i| i as u32)
            .collect();
        ApiCall {
            app: self.app,
            to: To::RoomUsers(self.room.clone()),
            recipients: Recipients::Listed(recipients),
        }
    }

    fn uid(&self, client: u32) -> &str {
        &self.members[client as usize]
    }
}

/// `SendBroadcast` to one of several rooms, chosen at random.
#[derive(Debug)]
pub struct Broadcast {
    /// The app (index).
    pub app: usize,
    /// Each room and the clients in it.
    pub rooms: Vec<(Arc<str>, Arc<[u32]>)>,
    /// Payload size.
    pub payload: usize,
}

impl Workload for Broadcast {
    fn payload_bytes(&self) -> usize {
        self.payload
    }

    fn call(&self, rng: &mut SmallRng) -> ApiCall {
        let (room, members) = &self.rooms[rng.gen_range(0..self.rooms.len())];
        ApiCall {
            app: self.app,
            to: To::Room(room.clone()),
            recipients: Recipients::Shared(members.clone()),
        }
    }

    /// Broadcasts address rooms, never users by id.
    fn uid(&self, _client: u32) -> &str {
        ""
    }
}

/// `SendUnicast` to one logged-in client, chosen at random, in whichever app it belongs to.
#[derive(Debug)]
pub struct Unicast {
    /// Client `i`: its app index and uid.
    pub users: Vec<(usize, String)>,
    /// Payload size.
    pub payload: usize,
}

impl Workload for Unicast {
    fn payload_bytes(&self) -> usize {
        self.payload
    }

    fn call(&self, rng: &mut SmallRng) -> ApiCall {
        let i = rng.gen_range(0..self.users.len());
        ApiCall {
            app: self.users[i].0,
            to: To::User,
            recipients: Recipients::Listed(vec![i as u32]),
        }
    }

    fn uid(&self, client: u32) -> &str {
        &self.users[client as usize].1
    }
}

/// What the driver sent and how the server answered.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sent {
    /// Calls answered 200.
    pub ok: u64,
    /// Calls refused with 429 (the per-app rate limit).
    pub rate_limited: u64,
    /// Other answers, by status, with the first body seen for each.
    pub failed: BTreeMap<u16, (u64, String)>,
    /// Calls that got no answer (connection errors).
    pub io_errors: u64,
    /// Seconds from the first call to the last answer.
    pub secs: f64,
    /// HTTP round trip of each call (µs), not serialised.
    #[serde(skip)]
    pub round_trip: Option<Histogram<u64>>,
}

impl Sent {
    fn merge(&mut self, other: Sent) {
        self.ok += other.ok;
        self.rate_limited += other.rate_limited;
        for (status, (n, body)) in other.failed {
            let e = self.failed.entry(status).or_insert((0, body));
            e.0 += n;
        }
        self.io_errors += other.io_errors;
        match (&mut self.round_trip, other.round_trip) {
            (Some(a), Some(b)) => {
                let _ = a.add(&b);
            }
            (a @ None, b) => *a = b,
            (_, None) => {}
        }
    }

    /// Calls that failed for a reason other than the rate limit.
    pub fn errors(&self) -> u64 {
        self.io_errors + self.failed.values().map(|(n, _)| n).sum::<u64>()
    }
}

/// How to drive a workload.
#[derive(Debug, Clone, Copy)]
pub struct Drive {
    /// Calls per second over all connections, pipelined; `None` for as fast as the server
    /// answers, one call at a time per connection.
    pub rate: Option<f64>,
    /// How long to issue calls.
    pub duration: Duration,
    /// Connections.
    pub workers: usize,
}

/// Calls one paced connection may have waiting for their answers. Beyond it the connection stops
/// sending until answers come back, and the achieved rate falls below the offered one.
const MAX_IN_FLIGHT: usize = 512;

/// Issues calls of `load` to `system`'s API at `target` as `drive` says (a cluster's nodes in
/// turn, one per connection), counting each accepted call's recipients in `fleet` (when the
/// system delivers).
pub async fn drive(
    system: System,
    target: &Target,
    apps: &Arc<[App]>,
    fleet: &Arc<Shared>,
    load: &Arc<dyn Workload>,
    drive: Drive,
) -> Sent {
    let start = Instant::now();
    let workers = drive.workers.max(1);
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (apps, fleet, load) = (apps.clone(), fleet.clone(), load.clone());
            let worker = Worker {
                system,
                sender: u8::try_from(w).unwrap_or(u8::MAX),
                addr: target.api_for(w),
                apps,
                fleet,
                load,
                end: start + drive.duration,
            };
            tokio::spawn(async move {
                match drive.rate {
                    Some(rate) => worker.paced(start, rate, w as u64, workers as u64).await,
                    None => worker.closed_loop().await,
                }
            })
        })
        .collect();
    let mut sent = Sent::default();
    for t in tasks {
        if let Ok(s) = t.await {
            sent.merge(s);
        }
    }
    sent.secs = start.elapsed().as_secs_f64();
    sent
}

/// Counts one answer; `delivers` says whether an accepted call is expected at its recipients.
fn account(
    sent: &mut Sent,
    fleet: &Shared,
    answer: std::io::Result<Answer>,
    to: &Recipients,
    delivers: bool,
) {
    match answer {
        Ok(a) if a.status == 200 => {
            sent.ok += 1;
            if delivers {
                for &r in to.as_slice() {
                    fleet.tallies[r as usize].expected.fetch_add(1, Relaxed);
                }
            }
        }
        Ok(a) if a.status == 429 => sent.rate_limited += 1,
        Ok(a) => {
            let e = sent
                .failed
                .entry(a.status)
                .or_insert_with(|| (0, String::from_utf8_lossy(&a.body).into_owned()));
            e.0 += 1;
        }
        Err(_) => sent.io_errors += 1,
    }
}

/// One connection's share of a drive.
struct Worker {
    system: System,
    /// Its number, in the stamps of its payloads.
    sender: u8,
    addr: SocketAddr,
    apps: Arc<[App]>,
    fleet: Arc<Shared>,
    load: Arc<dyn Workload>,
    end: Instant,
}

impl Worker {
    /// The next call, stamped now, and its request.
    fn next(&self, rng: &mut SmallRng, host: &str) -> (ApiCall, Vec<u8>) {
        let call = self.load.call(rng);
        let message = stamped(self.load.payload_bytes(), self.fleet.now_ns(), self.sender);
        let request = api::encode(
            self.system,
            &call,
            self.load.as_ref(),
            &message,
            host,
            &self.apps,
        );
        (call, request)
    }

    /// Open loop: call `j` of worker `w` of `of` goes out at `start + (j·of + w) / rate`, whether
    /// or not earlier answers came back (requests are pipelined, answers read in order by a
    /// second task).
    async fn paced(self, start: Instant, rate: f64, w: u64, of: u64) -> Sent {
        let conn = match ApiConn::connect(self.system, self.addr).await {
            Ok(c) => c,
            Err(_) => {
                return Sent {
                    io_errors: 1,
                    ..Sent::default()
                }
            }
        };
        let host = self.addr.to_string();
        let (mut rd, mut answers, mut wr) = conn.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<(Recipients, Instant)>();
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let reader = {
            let (fleet, in_flight) = (self.fleet.clone(), in_flight.clone());
            let delivers = api::delivers(self.system);
            tokio::spawn(async move {
                let mut sent = Sent {
                    round_trip: Some(histogram()),
                    ..Sent::default()
                };
                let mut broken = false;
                while let Some((to, t)) = rx.recv().await {
                    if broken {
                        sent.io_errors += 1;
                        continue;
                    }
                    let answer = answers.read(&mut rd).await;
                    broken = answer.is_err();
                    account(&mut sent, &fleet, answer, &to, delivers);
                    if let Some(h) = sent.round_trip.as_mut() {
                        h.saturating_record(t.elapsed().as_micros() as u64);
                    }
                    if broken {
                        // Stops the writer; what it already sent is counted as failed above.
                        in_flight.close();
                    } else {
                        in_flight.add_permits(1);
                    }
                }
                sent
            })
        };
        let mut rng = SmallRng::from_entropy();
        let mut write_errors = 0;
        for j in 0u64.. {
            let due = start + Duration::from_secs_f64((j * of + w) as f64 / rate);
            if due >= self.end {
                break;
            }
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
            match in_flight.acquire().await {
                Ok(permit) => permit.forget(),
                Err(_) => break,
            }
            let (call, request) = self.next(&mut rng, &host);
            let t = Instant::now();
            if wr.write_all(&request).await.is_err() {
                write_errors += 1;
                break;
            }
            if tx.send((call.recipients, t)).is_err() {
                break;
            }
        }
        drop(tx);
        let mut sent = reader.await.unwrap_or_default();
        sent.io_errors += write_errors;
        sent
    }

    /// Closed loop: the next call goes out when the previous one is answered.
    async fn closed_loop(self) -> Sent {
        let host = self.addr.to_string();
        let mut rng = SmallRng::from_entropy();
        let mut sent = Sent {
            round_trip: Some(histogram()),
            ..Sent::default()
        };
        let mut conn: Option<ApiConn> = None;
        while Instant::now() < self.end {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match ApiConn::connect(self.system, self.addr).await {
                    Ok(c) => conn.insert(c),
                    Err(_) => {
                        sent.io_errors += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let (call, request) = self.next(&mut rng, &host);
            let t = Instant::now();
            let answer = c.call(&request).await;
            if answer.is_err() {
                conn = None;
            }
            account(
                &mut sent,
                &self.fleet,
                answer,
                &call.recipients,
                api::delivers(self.system),
            );
            if let Some(h) = sent.round_trip.as_mut() {
                h.saturating_record(t.elapsed().as_micros() as u64);
            }
        }
        sent
    }
}
