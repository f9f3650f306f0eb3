//! The sending side: workloads (what each API call is) and the driver that issues them at a fixed
//! rate, or as fast as the server answers, over several keep-alive connections.
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

use crate::fleet::Shared;
use crate::http::{signed_request, Answer, HttpConn};
use crate::payload::stamped;
use crate::server::App;
use crate::stats::histogram;

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
    fn as_slice(&self) -> &[u32] {
        match self {
            Recipients::Listed(v) => v,
            Recipients::Shared(s) => s,
        }
    }
}

/// One API call to make.
#[derive(Debug, Clone)]
pub struct ApiCall {
    /// Index of the app (and so of the key that signs it).
    pub app: usize,
    /// The action.
    pub action: &'static str,
    /// The JSON body.
    pub body: Vec<u8>,
    /// The clients that must receive it if the server accepts it.
    pub recipients: Recipients,
}

/// What each call of a scenario is.
pub trait Workload: Send + Sync {
    /// Size of each message's payload in bytes.
    fn payload_bytes(&self) -> usize;
    /// The next call, carrying `message`.
    fn call(&self, rng: &mut SmallRng, message: &str) -> ApiCall;
}

/// Starts a JSON body: `{"AppId":…,["RoomId":…,]"From":…,"Binary":false,"Message":…` without
/// the closing brace. Every string the benchmark puts in a body is an id or a stamped payload,
/// neither of which needs JSON escaping.
fn body_start(app_id: &str, room: Option<&str>, message: &str, extra: usize) -> Vec<u8> {
    debug_assert!(message.bytes().all(|b| b.is_ascii_alphanumeric()));
    let mut b = Vec::with_capacity(message.len() + extra + 128);
    b.extend_from_slice(b"{\"AppId\":\"");
    b.extend_from_slice(app_id.as_bytes());
    if let Some(room) = room {
        b.extend_from_slice(b"\",\"RoomId\":\"");
        b.extend_from_slice(room.as_bytes());
    }
    b.extend_from_slice(b"\",\"From\":\"");
    b.extend_from_slice(FROM.as_bytes());
    b.extend_from_slice(b"\",\"Binary\":false,\"Message\":\"");
    b.extend_from_slice(message.as_bytes());
    b.push(b'"');
    b
}

/// `BatchSendRoomUnicast` to `per_call` distinct members of one room, chosen at random.
#[derive(Debug)]
pub struct Fanout {
    /// The app (index) and its AppId.
    pub app: (usize, String),
    /// The room.
    pub room: String,
    /// Member `i` is client `i`; its uid.
    pub members: Vec<String>,
    /// Recipients per call (at most 600).
    pub per_call: usize,
    /// Payload size.
    pub payload: usize,
}

impl Workload for Fanout {
    fn payload_bytes(&self) -> usize {
        self.payload
    }

    fn call(&self, rng: &mut SmallRng, message: &str) -> ApiCall {
        let chosen = index::sample(
            rng,
            self.members.len(),
            self.per_call.min(self.members.len()),
        );
        let mut body = body_start(&self.app.1, Some(&self.room), message, self.per_call * 12);
        body.extend_from_slice(b",\"To\":[");
        let mut recipients = Vec::with_capacity(chosen.len());
        for (n, i) in chosen.iter().enumerate() {
            if n > 0 {
                body.push(b',');
            }
            body.push(b'"');
            body.extend_from_slice(self.members[i].as_bytes());
            body.push(b'"');
            recipients.push(i as u32);
        }
        body.extend_from_slice(b"]}");
        ApiCall {
            app: self.app.0,
            action: "BatchSendRoomUnicast",
            body,
            recipients: Recipients::Listed(recipients),
        }
    }
}

/// `SendBroadcast` to one of several rooms, chosen at random.
#[derive(Debug)]
pub struct Broadcast {
    /// The app (index) and its AppId.
    pub app: (usize, String),
    /// Each room and the clients in it.
    pub rooms: Vec<(String, Arc<[u32]>)>,
    /// Payload size.
    pub payload: usize,
}

impl Workload for Broadcast {
    fn payload_bytes(&self) -> usize {
        self.payload
    }

    fn call(&self, rng: &mut SmallRng, message: &str) -> ApiCall {
        let (room, members) = &self.rooms[rng.gen_range(0..self.rooms.len())];
        let mut body = body_start(&self.app.1, Some(room), message, 0);
        body.push(b'}');
        ApiCall {
            app: self.app.0,
            action: "SendBroadcast",
            body,
            recipients: Recipients::Shared(members.clone()),
        }
    }
}

/// `SendUnicast` to one logged-in client, chosen at random, in whichever app it belongs to.
#[derive(Debug)]
pub struct Unicast {
    /// AppIds by app index.
    pub app_ids: Vec<String>,
    /// Client `i`: its app index and uid.
    pub users: Vec<(usize, String)>,
    /// Payload size.
    pub payload: usize,
}

impl Workload for Unicast {
    fn payload_bytes(&self) -> usize {
        self.payload
    }

    fn call(&self, rng: &mut SmallRng, message: &str) -> ApiCall {
        let i = rng.gen_range(0..self.users.len());
        let (app, uid) = &self.users[i];
        let mut body = body_start(&self.app_ids[*app], None, message, uid.len());
        body.extend_from_slice(b",\"To\":\"");
        body.extend_from_slice(uid.as_bytes());
        body.extend_from_slice(b"\"}");
        ApiCall {
            app: *app,
            action: "SendUnicast",
            body,
            recipients: Recipients::Listed(vec![i as u32]),
        }
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

/// Issues calls of `load` as `drive` says, signed with each app's key, counting each accepted
/// call's recipients in `fleet`.
pub async fn drive(
    addr: SocketAddr,
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
                addr,
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

/// Counts one answer.
fn account(sent: &mut Sent, fleet: &Shared, answer: std::io::Result<Answer>, to: &Recipients) {
    match answer {
        Ok(a) if a.status == 200 => {
            sent.ok += 1;
            for &r in to.as_slice() {
                fleet.tallies[r as usize].expected.fetch_add(1, Relaxed);
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
    addr: SocketAddr,
    apps: Arc<[App]>,
    fleet: Arc<Shared>,
    load: Arc<dyn Workload>,
    end: Instant,
}

impl Worker {
    /// The next call, stamped now, and its signed request.
    fn next(&self, rng: &mut SmallRng, host: &str) -> (ApiCall, Vec<u8>) {
        let message = stamped(self.load.payload_bytes(), self.fleet.now_ns());
        let call = self.load.call(rng, &message);
        let request = signed_request(host, &self.apps[call.app].key, call.action, &call.body);
        (call, request)
    }

    /// Open loop: call `j` of worker `w` of `of` goes out at `start + (j·of + w) / rate`, whether
    /// or not earlier answers came back (requests are pipelined, answers read in order by a
    /// second task).
    async fn paced(self, start: Instant, rate: f64, w: u64, of: u64) -> Sent {
        let conn = match HttpConn::connect(self.addr).await {
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
                    account(&mut sent, &fleet, answer, &to);
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
        let mut conn: Option<HttpConn> = None;
        while Instant::now() < self.end {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match HttpConn::connect(self.addr).await {
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
            account(&mut sent, &self.fleet, answer, &call.recipients);
            if let Some(h) = sent.round_trip.as_mut() {
                h.saturating_record(t.elapsed().as_micros() as u64);
            }
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(call: &ApiCall) -> serde_json::Value {
        serde_json::from_slice(&call.body).unwrap()
    }

    #[test]
    fn bodies_are_the_vendor_json() {
        let mut rng = SmallRng::seed_from_u64(1);
        let msg = stamped(40, 7);
        let f = Fanout {
            app: (0, "benchapp0000000000000000".into()),
            room: "r0".into(),
            members: (0..1000).map(|i| format!("u{i}")).collect(),
            per_call: 600,
            payload: 40,
        };
        let c = f.call(&mut rng, &msg);
        let v = json(&c);
        let to = v["To"].as_array().unwrap();
        assert_eq!(to.len(), 600);
        let mut ids: Vec<&str> = to.iter().map(|t| t.as_str().unwrap()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 600, "recipients are distinct");
        assert_eq!(c.recipients.as_slice().len(), 600);
        let first = c.recipients.as_slice()[0] as usize;
        assert_eq!(to[0], format!("u{first}").as_str());
        assert_eq!(v["Message"], msg.as_str());
        assert_eq!(v["RoomId"], "r0");
        assert_eq!(v["From"], FROM);
        assert_eq!(v["Binary"], false);

        let b = Broadcast {
            app: (0, "a".into()),
            rooms: vec![("r1".into(), Arc::from(vec![3u32, 4]))],
            payload: 40,
        };
        let c = b.call(&mut rng, &msg);
        assert_eq!(json(&c)["RoomId"], "r1");
        assert!(json(&c).get("To").is_none());
        assert_eq!(c.recipients.as_slice(), &[3, 4]);

        let u = Unicast {
            app_ids: vec!["a0".into(), "a1".into()],
            users: vec![(1, "u0".into())],
            payload: 40,
        };
        let c = u.call(&mut rng, &msg);
        assert_eq!(c.app, 1);
        assert_eq!(json(&c)["AppId"], "a1");
        assert_eq!(json(&c)["To"], "u0");
    }
}
