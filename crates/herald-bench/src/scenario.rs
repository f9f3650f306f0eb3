//! The scenarios of issue 3: idle, fan-out, broadcast, unicast, churn.
//!
//! Each runs against one server of one system (a fresh one when the benchmark starts it) and
//! returns a report; the same scenario gives every system the same shape of work.
//! The rate-driven ones step the offered load up until a step is not sustained (see
//! [`StepResult::sustained`]), then run one more step at half the highest sustained rate, where the
//! issue's latency target is set.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::api;
use crate::clients;
use crate::fleet::{self, ClientSpec, Counts, Fleet, Setup};
use crate::load::{self, Broadcast, Drive, Fanout, Sent, Unicast, Workload};
use crate::procfs::{self, Usage};
use crate::progress::{say, Progress};
use crate::redis;
use crate::server::{App, Target};
use crate::stats::{histogram, Percentiles};
use crate::system::System;

/// The scenarios, in the order `all` runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Logged-in connections doing nothing: resident memory per connection.
    Idle,
    /// `BatchSendRoomUnicast` to 600 random members of one big room.
    Fanout,
    /// `SendBroadcast` into rooms of 1,000.
    Broadcast,
    /// `SendUnicast` to random logged-in users across many apps.
    Unicast,
    /// Connect, log in, join, leave, disconnect in a loop while fan-out runs.
    Churn,
    /// Fan-out at one fixed rate for a long time (`--soak-secs`, `--soak-rate`) with slow
    /// consumers present: every message counted, per-sender order and duplicates checked, memory
    /// sampled. Not part of a run of every scenario: name it.
    Soak,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 5] = [
        Scenario::Idle,
        Scenario::Fanout,
        Scenario::Broadcast,
        Scenario::Unicast,
        Scenario::Churn,
    ];

    /// Client connections the scenario holds open at once (for the open-files check).
    pub fn connections(self, p: &Profile) -> usize {
        match self {
            Scenario::Idle => p.idle_clients,
            Scenario::Fanout => p.fanout_clients,
            Scenario::Broadcast => p.broadcast_rooms * p.room_size,
            Scenario::Unicast => p.unicast_clients,
            Scenario::Churn => p.churn_members + p.churn_workers,
            Scenario::Soak => p.soak_clients + p.soak_stalled,
        }
    }
}

/// Sizes and durations.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    /// idle: logged-in connections.
    pub idle_clients: usize,
    /// fanout: members of the one room.
    pub fanout_clients: usize,
    /// fanout (and churn): recipients per `BatchSendRoomUnicast` (the API allows 600).
    pub fanout_per_call: usize,
    /// fanout: payload sizes, each stepped separately.
    pub fanout_payloads: Vec<usize>,
    /// fanout: first offered rate (calls/s) for a 100-byte payload; scaled down for larger ones.
    pub fanout_start_rate: f64,
    /// broadcast: rooms.
    pub broadcast_rooms: usize,
    /// broadcast: members per room.
    pub room_size: usize,
    /// broadcast: first offered rate (calls/s).
    pub broadcast_start_rate: f64,
    /// unicast: apps the users are spread over.
    pub unicast_apps: usize,
    /// unicast: logged-in users.
    pub unicast_clients: usize,
    /// unicast: first offered rate (calls/s).
    pub unicast_start_rate: f64,
    /// Payload size of broadcast, unicast and the churn fan-out.
    pub payload: usize,
    /// churn: stable members receiving the fan-out.
    pub churn_members: usize,
    /// churn: concurrent connect/login/join/leave/disconnect loops.
    pub churn_workers: usize,
    /// churn: connect/login/join/leave/disconnect cycles per second offered, over all loops.
    pub churn_cycles_per_sec: f64,
    /// churn: fan-out calls/s while churning.
    pub churn_rate: f64,
    /// churn: seconds.
    pub churn_secs: f64,
    /// soak: members of the room that read everything.
    pub soak_clients: usize,
    /// soak: members that stop reading once set up (slow consumers), in every call.
    pub soak_stalled: usize,
    /// soak: fan-out calls/s (600 recipients each).
    pub soak_rate: f64,
    /// soak: seconds.
    pub soak_secs: f64,
    /// soak: seconds per reported window.
    pub soak_window_secs: f64,
    /// Seconds per load step.
    pub step_secs: f64,
    /// Most steps per stepped run.
    pub max_steps: usize,
    /// Each step offers this times the previous one.
    pub step_factor: f64,
    /// Longest wait for late messages after a step.
    pub drain_secs: f64,
    /// A step whose p99 latency exceeds this is not sustained.
    pub p99_limit_ms: f64,
}

impl Profile {
    /// The sizes.
    pub fn full() -> Profile {
        Profile {
            idle_clients: 10_000,
            fanout_clients: 10_000,
            fanout_per_call: 600,
            fanout_payloads: vec![100, 16 * 1024],
            // Low enough that the slowest peer sustains the first step, so that every system
            // has a highest sustained rate.
            fanout_start_rate: 10.0,
            broadcast_rooms: 10,
            room_size: 1_000,
            broadcast_start_rate: 5.0,
            unicast_apps: 200,
            unicast_clients: 10_000,
            unicast_start_rate: 500.0,
            payload: 100,
            churn_members: 5_000,
            churn_workers: 32,
            churn_cycles_per_sec: 500.0,
            // A fan-out every system sustains (12,000 deliveries/s), so that churn is compared
            // beside the same background work.
            churn_rate: 20.0,
            churn_secs: 30.0,
            soak_clients: 10_000,
            soak_stalled: 10,
            soak_rate: 100.0,
            soak_secs: 600.0,
            soak_window_secs: 30.0,
            step_secs: 5.0,
            max_steps: 16,
            step_factor: 1.5,
            drain_secs: 10.0,
            p99_limit_ms: 50.0,
        }
    }

    /// Small sizes and one-second steps: every scenario of one system in about 20 seconds, so
    /// that a run of Herald and every peer stays within a few minutes.
    pub fn quick() -> Profile {
        Profile {
            idle_clients: 1_000,
            fanout_clients: 1_000,
            broadcast_rooms: 2,
            unicast_apps: 100,
            unicast_clients: 1_000,
            churn_members: 1_000,
            churn_workers: 8,
            churn_secs: 2.0,
            soak_clients: 1_000,
            soak_stalled: 2,
            soak_rate: 20.0,
            soak_secs: 4.0,
            soak_window_secs: 1.0,
            step_secs: 1.0,
            max_steps: 4,
            step_factor: 4.0,
            drain_secs: 3.0,
            ..Profile::full()
        }
    }
}

/// One step of offered load.
#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    /// Offered calls/s; `None` for as fast as the server answers.
    pub offered: Option<f64>,
    /// Calls/s the server accepted.
    pub achieved: f64,
    /// The calls and their answers.
    pub sent: Sent,
    /// Messages in this step: expected, received, lost, unexpected.
    pub counts: Counts,
    /// Messages received per second while calls were being made.
    pub deliveries_per_sec: f64,
    /// API call to receipt (for the bare axum handler, which delivers nothing: the round trip).
    pub latency: Percentiles,
    /// HTTP round trip of the calls.
    pub round_trip: Percentiles,
    /// Whether every expected message arrived within the drain time.
    pub drained: bool,
    /// Client connections that ended during the step.
    pub closed: u64,
    /// Server CPU seconds over the step and its drain.
    pub server_cpu_secs: f64,
    /// Server CPU, percent of one core, over the step and its drain.
    pub server_cpu_percent: f64,
    /// Server CPU time per delivered message, microseconds.
    pub server_cpu_us_per_delivery: Option<f64>,
    /// Server CPU time per accepted call, microseconds.
    pub server_cpu_us_per_call: Option<f64>,
    /// Server resident memory at the end of the step.
    pub server_rss_bytes: u64,
    /// The benchmark's own CPU, percent of one core (when it nears 100% per core, the load
    /// generator shares the bottleneck).
    pub bench_cpu_percent: f64,
    /// What the cluster's Redis did over the step and its drain (clusters only).
    pub redis: Option<RedisStep>,
    /// True when the step met every condition: nothing lost, no error, no connection closed,
    /// drained in time, at least 95% of the offered rate achieved, p99 within the limit.
    pub sustained: bool,
    /// The first condition it missed.
    pub missed: Option<String>,
}

/// A cluster's Redis over one step.
#[derive(Debug, Clone, Serialize)]
pub struct RedisStep {
    /// Commands Redis ran per accepted API call (the nodes' heartbeats included), counting the
    /// commands scripts run beside the `evalsha` that ran them.
    pub commands_per_call: f64,
    /// The same by command.
    pub per_call: BTreeMap<String, f64>,
    /// Redis CPU time per accepted API call, microseconds.
    pub cpu_us_per_call: f64,
}

impl StepResult {
    /// True when the step missed only on timing (latency, pace, drain), with nothing lost or
    /// failed.
    pub fn missed_on_timing_only(&self) -> bool {
        !self.sustained
            && self.counts.lost == 0
            && self.counts.unexpected == 0
            && self.sent.errors() == 0
            && self.closed == 0
    }
}

/// A stepped run of one workload.
#[derive(Debug, Clone, Serialize)]
pub struct Stepped {
    /// What ran ("fanout 100 B", …).
    pub title: String,
    /// Client connections.
    pub clients: usize,
    /// Recipients per call.
    pub recipients_per_call: usize,
    /// Payload bytes.
    pub payload_bytes: usize,
    /// Each step, in order (a step that missed on timing alone is run twice; both are here).
    pub steps: Vec<StepResult>,
    /// Index in `steps` of the highest sustained step.
    pub best: Option<usize>,
    /// True when every step was sustained: the server's maximum is higher than the best step.
    pub capped: bool,
    /// A step at half the highest sustained rate.
    pub at_half: Option<StepResult>,
    /// One step as fast as the server answers (unicast only).
    pub unbounded: Option<StepResult>,
}

/// The idle scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Idle {
    /// Connections opened and logged in.
    pub setup: Setup,
    /// Server resident memory before the clients connected.
    pub server_rss_before: u64,
    /// … and with them connected.
    pub server_rss_after: u64,
    /// The difference per connection.
    pub server_rss_per_connection: f64,
    /// The benchmark's own memory per connection (for comparison: its client is minimal).
    pub bench_rss_per_connection: f64,
    /// A short `SendUnicast` run proving the connections are alive and logged in.
    pub check: StepResult,
}

/// The churn scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Churn {
    /// Stable members set up.
    pub setup: Setup,
    /// Concurrent churn loops.
    pub workers: usize,
    /// Cycles per second offered.
    pub offered_cycles_per_sec: f64,
    /// Completed connect/login/join/leave/disconnect cycles.
    pub cycles: u64,
    /// Per second.
    pub cycles_per_sec: f64,
    /// Duration of one cycle.
    pub cycle: Percentiles,
    /// Cycles that failed, by reason.
    pub failures: BTreeMap<String, u64>,
    /// The fan-out that ran meanwhile.
    pub fanout: StepResult,
    /// Server resident memory before churn…
    pub server_rss_before: u64,
    /// … and a second after it stopped.
    pub server_rss_after: u64,
}

/// A scenario's result.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "scenario", rename_all = "lowercase")]
pub enum Outcome {
    /// See [`Idle`].
    Idle(Idle),
    /// One [`Stepped`] per payload size.
    Fanout {
        /// Room members set up.
        setup: Setup,
        /// Per payload size.
        runs: Vec<Stepped>,
    },
    /// See [`Stepped`].
    Broadcast {
        /// Members set up.
        setup: Setup,
        /// The run.
        run: Stepped,
    },
    /// See [`Stepped`].
    Unicast {
        /// Users set up.
        setup: Setup,
        /// The run.
        run: Stepped,
    },
    /// See [`Churn`].
    Churn(Churn),
    /// See [`Soak`].
    Soak(Soak),
}

/// The soak scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Soak {
    /// Members set up (the readers and the stalled ones).
    pub setup: Setup,
    /// Members that read everything.
    pub readers: usize,
    /// Members that stopped reading (slow consumers), addressed by every call.
    pub stalled: usize,
    /// Offered fan-out calls/s.
    pub rate: f64,
    /// Recipients per call.
    pub per_call: usize,
    /// One result per window, in order (each window drains before the next starts).
    pub windows: Vec<StepResult>,
    /// Over the whole run, the readers' messages: expected, received, lost, unexpected.
    pub counts: Counts,
    /// Messages out of their sender's order, and received twice, over the whole run.
    pub out_of_order: u64,
    /// See `out_of_order`.
    pub duplicates: u64,
    /// How the stalled members' connections ended, once they read again (by reason).
    pub stalled_ended: BTreeMap<String, u64>,
    /// `herald_messages_dropped_total{reason="slow_consumer"}` over the nodes at the end.
    pub slow_consumer_drops: Option<u64>,
    /// Server RSS at the end of the first window and at the end of the run.
    pub server_rss_first: u64,
    /// See `server_rss_first`.
    pub server_rss_last: u64,
    /// The highest server RSS at the end of a window.
    pub server_rss_max: u64,
}

/// What every scenario runs with.
pub struct Ctx {
    /// The system under test.
    pub system: System,
    /// The server.
    pub target: Target,
    /// Its apps: app 0 for the room scenarios, the rest for unicast.
    pub apps: Arc<[App]>,
    /// Sizes.
    pub profile: Profile,
    /// The progress line.
    pub progress: Arc<Progress>,
    /// Clock of the payload stamps.
    pub epoch: Instant,
    /// Functional problems seen (lost messages, failed clients or calls), for `--check`.
    pub problems: Vec<String>,
    /// What the peers dropped or cut off under load. Their delivery is at most once (NATS core,
    /// MQTT QoS 0) or best effort, so a loss in a step that was not sustained is a result, not a
    /// failure of the benchmark; for Herald, the same is a problem.
    pub peer_losses: Vec<String>,
}

impl Ctx {
    /// CPU time and memory of every process of the server (a cluster's nodes and Redis).
    fn server_usage(&self) -> Usage {
        let mut total = Usage::default();
        for pid in &self.target.pids {
            let u = procfs::usage(&pid.to_string()).unwrap_or_default();
            total.cpu_secs += u.cpu_secs;
            total.rss_bytes += u.rss_bytes;
        }
        total
    }

    /// The cluster's Redis: commands it has run and its CPU seconds (`None` for other systems
    /// or when Redis cannot be read).
    async fn redis_usage(&self) -> Option<redis::Counters> {
        let addr = self.target.redis?;
        redis::counters(addr).await.ok()
    }

    /// Starts a fleet and waits for its set-up, noting failures as problems.
    async fn fleet(&mut self, name: &str, specs: Vec<ClientSpec>) -> (Fleet, Setup) {
        let n = specs.len();
        self.progress
            .set_label(format!("{name}: set-up of {n} clients"));
        let fleet = Fleet::start(self.system, &self.target, &self.apps, specs, self.epoch);
        self.progress.watch_fleet(Some(fleet.shared.clone()));
        let setup = fleet.wait_ready().await;
        say(format!(
            "{name}: {} of {n} clients ready in {:.1} s",
            setup.ready, setup.secs
        ));
        if setup.failed > 0 {
            self.problems.push(format!(
                "{name}: {} clients failed set-up: {:?}",
                setup.failed,
                fleet.shared.setup_errors()
            ));
        }
        (fleet, setup)
    }

    /// Notes message frames that broke the protocol (msgid gaps, undecodable or unstamped
    /// frames) and messages out of their sender's order or duplicated, then disconnects the
    /// fleet.
    async fn stop(&mut self, name: &str, fleet: Fleet) {
        let gaps = fleet.shared.msgid_gaps.load(Relaxed);
        let bad = fleet.shared.bad_frames.load(Relaxed);
        if gaps > 0 || bad > 0 {
            self.problems.push(format!(
                "{name}: {gaps} msgid gaps, {bad} message frames undecodable or without a stamp"
            ));
        }
        let (disorder, twice) = (
            fleet.shared.out_of_order.load(Relaxed),
            fleet.shared.duplicates.load(Relaxed),
        );
        if disorder > 0 || twice > 0 {
            let what = format!(
                "{name}: {disorder} messages out of their sender's order, {twice} received twice"
            );
            if self.system.is_herald() {
                self.problems.push(what);
            } else {
                self.peer_losses.push(what);
            }
        }
        fleet.stop().await;
    }

    /// Runs one step and notes its functional problems.
    async fn step(
        &mut self,
        name: &str,
        fleet: &Fleet,
        load: &Arc<dyn Workload>,
        drive: Drive,
    ) -> StepResult {
        let shared = &fleet.shared;
        let rate = drive
            .rate
            .map_or_else(|| "max".to_owned(), crate::report::rate);
        self.progress.set_label(format!("{name} @ {rate} calls/s"));
        shared.latency.reset();
        let closed_total = |s: &fleet::Shared| s.closed().values().sum::<u64>();
        let (c0, closed0) = (shared.counts(), closed_total(shared));
        let r0 = self.redis_usage().await;
        let (s0, b0, t0) = (
            self.server_usage(),
            procfs::usage("self").unwrap_or_default(),
            Instant::now(),
        );
        let mut sent =
            load::drive(self.system, &self.target, &self.apps, shared, load, drive).await;
        let window = t0.elapsed().as_secs_f64().max(1e-3);
        let in_window = shared.counts().received - c0.received;
        let drained = fleet
            .drain(Duration::from_secs_f64(self.profile.drain_secs))
            .await;
        let (s1, b1) = (
            self.server_usage(),
            procfs::usage("self").unwrap_or_default(),
        );
        let secs = t0.elapsed().as_secs_f64().max(1e-3);
        let r1 = self.redis_usage().await;
        let c1 = shared.counts();
        let counts = Counts {
            expected: c1.expected - c0.expected,
            received: c1.received - c0.received,
            lost: c1.lost.saturating_sub(c0.lost),
            unexpected: c1.unexpected.saturating_sub(c0.unexpected),
        };
        let closed = closed_total(shared) - closed0;
        let round_trip = Percentiles::of(&sent.round_trip.take().unwrap_or_else(histogram));
        let latency = if api::delivers(self.system) {
            Percentiles::of(&shared.latency.merged())
        } else {
            round_trip
        };
        let server_cpu_secs = s1.cpu_secs - s0.cpu_secs;
        let ok_calls = sent.ok;
        // A paced drive offers its rate over its whole duration; a closed loop runs until its
        // last answer.
        let achieved = sent.ok as f64
            / drive
                .rate
                .map_or(sent.secs, |_| drive.duration.as_secs_f64())
                .max(1e-3);
        let missed = if counts.lost > 0 {
            Some(format!("{} messages lost", counts.lost))
        } else if counts.unexpected > 0 {
            Some(format!("{} messages unexpected", counts.unexpected))
        } else if sent.errors() > 0 {
            Some(format!("{} calls failed", sent.errors()))
        } else if closed > 0 {
            Some(format!("{closed} connections closed"))
        } else if !drained {
            Some("not drained in time".to_owned())
        } else if drive.rate.is_some_and(|r| achieved < 0.95 * r) {
            Some(format!("achieved {achieved:.0} calls/s"))
        } else if latency.p99_ms > self.profile.p99_limit_ms {
            Some(format!("p99 {:.1} ms", latency.p99_ms))
        } else {
            None
        };
        let losses = if self.system.is_herald() {
            &mut self.problems
        } else {
            &mut self.peer_losses
        };
        if counts.lost > 0 || counts.unexpected > 0 {
            losses.push(format!(
                "{name} @ {rate}/s: {} of {} messages lost, {} unexpected; connections closed: {:?}",
                counts.lost,
                counts.expected,
                counts.unexpected,
                shared.closed()
            ));
        }
        if closed > 0 && counts.lost == 0 {
            losses.push(format!(
                "{name} @ {rate}/s: {closed} connections ended: {:?}",
                shared.closed()
            ));
        }
        if sent.errors() > 0 {
            self.problems.push(format!(
                "{name} @ {rate}/s: {} calls got no answer, other failures: {:?}",
                sent.io_errors, sent.failed
            ));
        }
        let result = StepResult {
            offered: drive.rate,
            achieved,
            sent,
            counts,
            deliveries_per_sec: in_window as f64 / window,
            latency,
            round_trip,
            drained,
            closed,
            server_cpu_secs,
            server_cpu_percent: server_cpu_secs / secs * 100.0,
            server_cpu_us_per_delivery: (counts.received > 0)
                .then(|| server_cpu_secs * 1e6 / counts.received as f64),
            server_cpu_us_per_call: (ok_calls > 0).then(|| server_cpu_secs * 1e6 / ok_calls as f64),
            server_rss_bytes: s1.rss_bytes,
            bench_cpu_percent: (b1.cpu_secs - b0.cpu_secs) / secs * 100.0,
            redis: r0.zip(r1).map(|(r0, r1)| {
                let d = r0.since(&r1);
                let per = |n: f64| n / (ok_calls.max(1) as f64);
                RedisStep {
                    commands_per_call: per(d.total() as f64),
                    per_call: d
                        .calls
                        .iter()
                        .map(|(k, v)| (k.clone(), per(*v as f64)))
                        .collect(),
                    cpu_us_per_call: per(d.cpu_secs * 1e6),
                }
            }),
            sustained: missed.is_none(),
            missed,
        };
        say(format!(
            "{name} @ {rate} calls/s: {:.0} calls/s, {:.0} deliveries/s, p50 {:.2} ms, p99 {:.2} ms, server {:.2} µs CPU/delivery{}",
            result.achieved,
            result.deliveries_per_sec,
            result.latency.p50_ms,
            result.latency.p99_ms,
            result.server_cpu_us_per_delivery.unwrap_or(0.0),
            result.missed.as_ref().map_or(String::new(), |m| format!(" — not sustained: {m}"))
        ));
        result
    }

    /// Steps the rate up from `start` until a step is not sustained, then runs half the best.
    async fn step_up(
        &mut self,
        title: String,
        fleet: &Fleet,
        load: Arc<dyn Workload>,
        start: f64,
        workers: usize,
        recipients_per_call: usize,
    ) -> Stepped {
        let duration = Duration::from_secs_f64(self.profile.step_secs);
        let mut steps = Vec::new();
        let mut best = None;
        let mut rate = start;
        for _ in 0..self.profile.max_steps {
            let drive = Drive {
                rate: Some(rate),
                duration,
                workers,
            };
            let mut r = self.step(&title, fleet, &load, drive).await;
            if !r.sustained && r.missed_on_timing_only() {
                // Other work on a shared machine can spoil one step's latency or pace; a maximum
                // is only called once the same step misses twice.
                say(format!("{title}: repeating the step once"));
                steps.push(r);
                r = self.step(&title, fleet, &load, drive).await;
            }
            let sustained = r.sustained;
            steps.push(r);
            if !sustained {
                break;
            }
            best = Some(steps.len() - 1);
            rate *= self.profile.step_factor;
        }
        let mut at_half = None;
        if let Some(b) = best {
            let half = steps[b].offered.unwrap_or(start) / 2.0;
            let drive = Drive {
                rate: Some(half),
                duration,
                workers,
            };
            at_half = Some(
                self.step(&format!("{title} (half of best)"), fleet, &load, drive)
                    .await,
            );
        }
        Stepped {
            title,
            clients: fleet.len(),
            recipients_per_call,
            payload_bytes: load.payload_bytes(),
            capped: best.is_some_and(|b| b + 1 == steps.len()),
            steps,
            best,
            at_half,
            unbounded: None,
        }
    }
}

/// Runs one scenario.
pub async fn run(ctx: &mut Ctx, scenario: Scenario) -> Outcome {
    match scenario {
        Scenario::Idle => Outcome::Idle(idle(ctx).await),
        Scenario::Fanout => fanout(ctx).await,
        Scenario::Broadcast => broadcast(ctx).await,
        Scenario::Unicast => unicast(ctx).await,
        Scenario::Churn => Outcome::Churn(churn(ctx).await),
        Scenario::Soak => Outcome::Soak(soak(ctx).await),
    }
}

/// The messages Herald's nodes dropped for slow consumers (`/metrics`), summed; `None` if a node
/// did not answer.
async fn slow_consumer_drops(target: &Target) -> Option<u64> {
    const SERIES: &str = "herald_messages_dropped_total{reason=\"slow_consumer\"} ";
    let mut total = 0;
    for node in &target.nodes {
        let mut conn = crate::http::HttpConn::connect(*node).await.ok()?;
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {node}\r\n\r\n");
        let answer = tokio::time::timeout(Duration::from_secs(5), conn.call(request.as_bytes()))
            .await
            .ok()?
            .ok()?;
        let text = String::from_utf8_lossy(&answer.body);
        total += text
            .lines()
            .find_map(|l| l.strip_prefix(SERIES))
            .and_then(|v| v.trim().parse::<u64>().ok())?;
    }
    Some(total)
}

async fn soak(ctx: &mut Ctx) -> Soak {
    let (readers, stalled) = (ctx.profile.soak_clients, ctx.profile.soak_stalled);
    let total = readers + stalled;
    let mut specs = room_members(total, "s", "soak");
    for s in &mut specs[readers..] {
        s.stall = true;
    }
    let (fleet, setup) = ctx.fleet("soak", specs).await;
    let per_call = ctx.profile.fanout_per_call.min(total);
    let load: Arc<dyn Workload> = Arc::new(Fanout {
        app: 0,
        room: "soak".into(),
        members: (0..total).map(|i| format!("s{i}")).collect(),
        per_call,
        payload: ctx.profile.payload,
        always: stalled,
    });
    let rate = ctx.profile.soak_rate;
    let window = ctx.profile.soak_window_secs.max(1.0);
    let windows_n = (ctx.profile.soak_secs / window).ceil().max(1.0) as usize;
    let c0 = fleet.shared.counts();
    let mut windows = Vec::with_capacity(windows_n);
    for w in 0..windows_n {
        let drive = Drive {
            rate: Some(rate),
            duration: Duration::from_secs_f64(window),
            workers: 4,
        };
        let name = format!("soak {}/{windows_n}", w + 1);
        windows.push(ctx.step(&name, &fleet, &load, drive).await);
    }
    let c1 = fleet.shared.counts();
    let counts = Counts {
        expected: c1.expected - c0.expected,
        received: c1.received - c0.received,
        lost: c1.lost.saturating_sub(c0.lost),
        unexpected: c1.unexpected.saturating_sub(c0.unexpected),
    };
    // The stalled members read what was sent to them, up to the server's close frame.
    let closed_before = fleet.shared.closed();
    fleet.shared.resume_stalled();
    ctx.progress.set_label("soak: stalled members read");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut stalled_ended = fleet.shared.closed();
    for (reason, n) in &closed_before {
        if let Some(v) = stalled_ended.get_mut(reason) {
            *v -= (*n).min(*v);
        }
    }
    stalled_ended.retain(|_, n| *n > 0);
    // A member that reads nothing cannot be sent a close frame (its socket is full): what it
    // sees, once it reads again, is the data up to the cut, then a reset or an end. The server
    // says why it cut them off in its counters.
    let cut_off: u64 = stalled_ended.values().sum();
    let slow_consumer_drops = slow_consumer_drops(&ctx.target).await;
    let out_of_order = fleet.shared.out_of_order.load(Relaxed);
    let duplicates = fleet.shared.duplicates.load(Relaxed);
    let rss: Vec<u64> = windows.iter().map(|s| s.server_rss_bytes).collect();
    say(format!(
        "soak: {} of {} messages received by the readers, {} lost, {} unexpected, {out_of_order} out of order, {duplicates} twice; {cut_off} of {stalled} stalled members cut off ({stalled_ended:?}), server counted {slow_consumer_drops:?} messages dropped for slow consumers; server RSS {:.1} → {:.1} MiB",
        counts.received,
        counts.expected,
        counts.lost,
        counts.unexpected,
        rss.first().copied().unwrap_or(0) as f64 / 1048576.0,
        rss.last().copied().unwrap_or(0) as f64 / 1048576.0,
    ));
    ctx.stop("soak", fleet).await;
    Soak {
        setup,
        readers,
        stalled,
        rate,
        per_call,
        counts,
        out_of_order,
        duplicates,
        stalled_ended,
        slow_consumer_drops,
        server_rss_first: rss.first().copied().unwrap_or(0),
        server_rss_last: rss.last().copied().unwrap_or(0),
        server_rss_max: rss.iter().copied().max().unwrap_or(0),
        windows,
    }
}

async fn idle(ctx: &mut Ctx) -> Idle {
    let n = ctx.profile.idle_clients;
    let specs = (0..n)
        .map(|i| ClientSpec {
            app: 0,
            uid: format!("u{i}"),
            login: true,
            rooms: Vec::new(),
            stall: false,
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = ctx.server_usage();
    let bench_before = procfs::usage("self").unwrap_or_default();
    let (fleet, setup) = ctx.fleet("idle", specs).await;
    ctx.progress.set_label("idle: settling");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = ctx.server_usage();
    let bench_after = procfs::usage("self").unwrap_or_default();
    let ready = setup.ready.max(1) as f64;
    let per = |a: u64, b: u64| (a as f64 - b as f64) / ready;
    say(format!(
        "idle: server RSS {:.1} → {:.1} MiB, {:.0} bytes per connection",
        before.rss_bytes as f64 / 1048576.0,
        after.rss_bytes as f64 / 1048576.0,
        per(after.rss_bytes, before.rss_bytes)
    ));
    let load: Arc<dyn Workload> = Arc::new(Unicast {
        users: (0..n).map(|i| (0, format!("u{i}"))).collect(),
        payload: ctx.profile.payload,
    });
    let drive = Drive {
        rate: Some(200.0),
        duration: Duration::from_secs(1),
        workers: 2,
    };
    let check = ctx.step("idle: unicast check", &fleet, &load, drive).await;
    ctx.stop("idle", fleet).await;
    Idle {
        setup,
        server_rss_before: before.rss_bytes,
        server_rss_after: after.rss_bytes,
        server_rss_per_connection: per(after.rss_bytes, before.rss_bytes),
        bench_rss_per_connection: per(bench_after.rss_bytes, bench_before.rss_bytes),
        check,
    }
}

fn room_members(n: usize, prefix: &str, room: &str) -> Vec<ClientSpec> {
    (0..n)
        .map(|i| ClientSpec {
            app: 0,
            uid: format!("{prefix}{i}"),
            login: false,
            rooms: vec![room.to_owned()],
            stall: false,
        })
        .collect()
}

async fn fanout(ctx: &mut Ctx) -> Outcome {
    let n = ctx.profile.fanout_clients;
    let (fleet, setup) = ctx.fleet("fanout", room_members(n, "u", "r0")).await;
    let per_call = ctx.profile.fanout_per_call.min(n);
    let mut runs = Vec::new();
    for payload in ctx.profile.fanout_payloads.clone() {
        let load: Arc<dyn Workload> = Arc::new(Fanout {
            app: 0,
            room: "r0".into(),
            members: (0..n).map(|i| format!("u{i}")).collect(),
            per_call,
            payload,
            always: 0,
        });
        // Larger payloads start lower: the same bytes per second as 100-byte ones at most.
        let start = (ctx.profile.fanout_start_rate * 100.0 / payload.max(100) as f64).max(1.0);
        let title = format!("fanout {}", bytes(payload));
        runs.push(ctx.step_up(title, &fleet, load, start, 4, per_call).await);
    }
    ctx.stop("fanout", fleet).await;
    Outcome::Fanout { setup, runs }
}

async fn broadcast(ctx: &mut Ctx) -> Outcome {
    let (rooms, size) = (ctx.profile.broadcast_rooms, ctx.profile.room_size);
    let specs = (0..rooms * size)
        .map(|i| ClientSpec {
            app: 0,
            uid: format!("u{i}"),
            login: false,
            rooms: vec![format!("r{}", i / size)],
            stall: false,
        })
        .collect();
    let (fleet, setup) = ctx.fleet("broadcast", specs).await;
    let load: Arc<dyn Workload> = Arc::new(Broadcast {
        app: 0,
        rooms: (0..rooms)
            .map(|r| {
                let members: Vec<u32> = ((r * size) as u32..((r + 1) * size) as u32).collect();
                (Arc::from(format!("r{r}")), Arc::from(members))
            })
            .collect(),
        payload: ctx.profile.payload,
    });
    let title = format!("broadcast {} to {size}", bytes(ctx.profile.payload));
    let start = ctx.profile.broadcast_start_rate;
    let run = ctx.step_up(title, &fleet, load, start, 4, size).await;
    ctx.stop("broadcast", fleet).await;
    Outcome::Broadcast { setup, run }
}

async fn unicast(ctx: &mut Ctx) -> Outcome {
    let n = ctx.profile.unicast_clients;
    // App 0 has a raised limit for the room scenarios; unicast uses the others, at the default.
    let apps: Vec<usize> = if ctx.apps.len() > 1 {
        (1..ctx.apps.len()).take(ctx.profile.unicast_apps).collect()
    } else {
        vec![0]
    };
    let users: Vec<(usize, String)> = (0..n)
        .map(|i| (apps[i % apps.len()], format!("u{i}")))
        .collect();
    // The bare axum handler delivers nothing: it gets the calls without clients.
    let specs = if api::delivers(ctx.system) {
        users
            .iter()
            .map(|(app, uid)| ClientSpec {
                app: *app,
                uid: uid.clone(),
                login: true,
                rooms: Vec::new(),
                stall: false,
            })
            .collect()
    } else {
        Vec::new()
    };
    let (fleet, setup) = ctx.fleet("unicast", specs).await;
    let load: Arc<dyn Workload> = Arc::new(Unicast {
        users,
        payload: ctx.profile.payload,
    });
    let title = format!(
        "unicast {} over {} apps",
        bytes(ctx.profile.payload),
        apps.len()
    );
    let start = ctx.profile.unicast_start_rate;
    let mut run = ctx
        .step_up(title.clone(), &fleet, load.clone(), start, 4, 1)
        .await;
    let drive = Drive {
        rate: None,
        duration: Duration::from_secs_f64(ctx.profile.step_secs),
        workers: 16,
    };
    run.unbounded = Some(
        ctx.step(&format!("{title} (closed loop)"), &fleet, &load, drive)
            .await,
    );
    ctx.stop("unicast", fleet).await;
    Outcome::Unicast { setup, run }
}

async fn churn(ctx: &mut Ctx) -> Churn {
    let n = ctx.profile.churn_members;
    let (fleet, setup) = ctx.fleet("churn", room_members(n, "m", "r0")).await;
    let load: Arc<dyn Workload> = Arc::new(Fanout {
        app: 0,
        room: "r0".into(),
        members: (0..n).map(|i| format!("m{i}")).collect(),
        per_call: ctx.profile.fanout_per_call.min(n),
        payload: ctx.profile.payload,
        always: 0,
    });
    let rss_before = ctx.server_usage().rss_bytes;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let churners: Vec<_> = (0..ctx.profile.churn_workers)
        .map(|w| {
            let (system, target, app, stop) = (
                ctx.system,
                ctx.target.clone(),
                ctx.apps[0].clone(),
                stop.clone(),
            );
            let (of, rate) = (
                ctx.profile.churn_workers as u64,
                ctx.profile.churn_cycles_per_sec,
            );
            tokio::spawn(async move {
                let mut h = histogram();
                let mut failures: BTreeMap<String, u64> = BTreeMap::new();
                for c in 0u64.. {
                    // Paced like the load driver: cycle c of loop w starts at (c·of + w) / rate.
                    let due = started + Duration::from_secs_f64((c * of + w as u64) as f64 / rate);
                    if due > Instant::now() {
                        tokio::time::sleep_until(due.into()).await;
                    }
                    if stop.load(Relaxed) {
                        break;
                    }
                    let t = Instant::now();
                    let uid = format!("c{w}x{c}");
                    let cycle = clients::cycle(system, &target, &app, &uid, "r0");
                    match tokio::time::timeout(Duration::from_secs(10), cycle).await {
                        Ok(Ok(())) => {
                            h.saturating_record(t.elapsed().as_micros() as u64);
                        }
                        Ok(Err(e)) => *failures.entry(format!("{e:#}")).or_default() += 1,
                        Err(_) => *failures.entry("cycle timed out".into()).or_default() += 1,
                    }
                }
                (h, failures)
            })
        })
        .collect();
    let drive = Drive {
        rate: Some(ctx.profile.churn_rate),
        duration: Duration::from_secs_f64(ctx.profile.churn_secs),
        workers: 8,
    };
    let fanout = ctx
        .step("churn: fanout while churning", &fleet, &load, drive)
        .await;
    stop.store(true, Relaxed);
    let mut cycles = histogram();
    let mut failures = BTreeMap::new();
    for c in churners {
        if let Ok((h, f)) = c.await {
            let _ = cycles.add(&h);
            for (k, v) in f {
                *failures.entry(k).or_default() += v;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    ctx.progress.set_label("churn: settling");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = ctx.server_usage().rss_bytes;
    if !failures.is_empty() {
        ctx.problems
            .push(format!("churn: cycles failed: {failures:?}"));
    }
    say(format!(
        "churn: {} cycles ({:.0}/s), server RSS {:.1} → {:.1} MiB",
        cycles.len(),
        cycles.len() as f64 / secs,
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0
    ));
    ctx.stop("churn", fleet).await;
    Churn {
        setup,
        workers: ctx.profile.churn_workers,
        offered_cycles_per_sec: ctx.profile.churn_cycles_per_sec,
        cycles: cycles.len(),
        cycles_per_sec: cycles.len() as f64 / secs,
        cycle: Percentiles::of(&cycles),
        failures,
        fanout,
        server_rss_before: rss_before,
        server_rss_after: rss_after,
    }
}

/// "100 B", "16 KiB".
pub fn bytes(n: usize) -> String {
    if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} B")
    }
}
