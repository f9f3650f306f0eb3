//! The results: one [`Report`] serialised as JSON, and rendered as Markdown: side-by-side tables
//! per scenario, the targets, and every step of every system.

use std::fmt::Write as _;

use serde::Serialize;

use crate::progress::Sample;
use crate::scenario::{Churn, Idle, Outcome, Profile, Soak, StepResult, Stepped};
use crate::system::System;

/// One scenario run against one system.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// The system.
    pub system: System,
    /// What it measured.
    pub outcome: Outcome,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// CPU, cores, kernel.
    pub machine: String,
    /// The command line.
    pub command: String,
    /// When it started (unix seconds).
    pub started_unix: u64,
    /// Whether the servers were started by the benchmark (a fresh one per scenario and system).
    pub fresh_server_per_scenario: bool,
    /// Sizes and durations.
    pub profile: Profile,
    /// The systems compared, Herald first.
    pub systems: Vec<System>,
    /// Per scenario and system, in the order they ran.
    pub runs: Vec<Run>,
    /// Functional problems: lost or unexpected messages (Herald), failed clients or calls, servers
    /// that did not start.
    pub problems: Vec<String>,
    /// Messages the peers and the raw writer dropped, and connections they cut off, under load.
    pub peer_losses: Vec<String>,
    /// Charts drawn: (what they show, link).
    pub charts: Vec<(String, String)>,
    /// One sample per second.
    pub timeline: Vec<Sample>,
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

/// A rate: "1.5" below 10 (the first steps of large payloads are that slow), "850", "46k".
pub fn rate(r: f64) -> String {
    if r >= 10_000.0 {
        format!("{:.0}k", r / 1000.0)
    } else if r < 10.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.0}")
    }
}

fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    }
}

fn opt_us(v: Option<f64>) -> String {
    match v {
        None => "–".to_owned(),
        Some(v) if v < 10.0 => format!("{v:.2}"),
        Some(v) if v < 100.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.0}"),
    }
}

/// "missed by 2.5x" or "met", for a value that must be at most `limit`.
fn at_most(value: f64, limit: f64) -> String {
    if value <= limit {
        "met".to_owned()
    } else {
        format!("missed by {:.2}x", value / limit)
    }
}

/// `a / b` as a percentage, "–" when `b` is zero.
fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.0}%", a / b * 100.0)
    } else {
        "–".to_owned()
    }
}

/// "met" or "missed: 62% of it", for a value that must be at least `floor`.
fn at_least(value: f64, floor: f64) -> String {
    if value >= floor {
        "met".to_owned()
    } else {
        format!("missed: {:.0}% of it", value / floor * 100.0)
    }
}

const STEP_HEADER: &str = "| offered calls/s | accepted calls/s | deliveries/s | p50 ms | p99 ms | p99.9 ms | max ms | server CPU µs/delivery | server CPU µs/call | server CPU | server RSS | bench CPU | lost | sustained |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:--|\n";

fn step_row(out: &mut String, label: Option<&str>, s: &StepResult) {
    let offered = match (label, s.offered) {
        (Some(l), Some(r)) => format!("{} ({l})", rate(r)),
        (Some(l), None) => l.to_owned(),
        (None, Some(r)) => rate(r),
        (None, None) => "max".to_owned(),
    };
    let sustained = match &s.missed {
        None => "yes".to_owned(),
        Some(m) => format!("no: {m}"),
    };
    let _ = writeln!(
        out,
        "| {offered} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0}% | {} | {:.0}% | {} | {sustained} |",
        rate(s.achieved),
        rate(s.deliveries_per_sec),
        ms(s.latency.p50_ms),
        ms(s.latency.p99_ms),
        ms(s.latency.p999_ms),
        ms(s.latency.max_ms),
        opt_us(s.server_cpu_us_per_delivery),
        opt_us(s.server_cpu_us_per_call),
        s.server_cpu_percent,
        mib(s.server_rss_bytes),
        s.bench_cpu_percent,
        s.counts.lost,
    );
}

fn stepped(out: &mut String, system: System, run: &Stepped) {
    let _ = writeln!(
        out,
        "**{} — {}** ({} clients, {} recipients per call):\n",
        run.title,
        system.label(),
        run.clients,
        run.recipients_per_call
    );
    out.push_str(STEP_HEADER);
    for s in &run.steps {
        step_row(out, None, s);
    }
    if let Some(h) = &run.at_half {
        step_row(out, Some("half of best"), h);
    }
    if let Some(u) = &run.unbounded {
        step_row(out, Some("closed loop"), u);
    }
    if run.capped {
        out.push_str("\nEvery step was sustained: the highest rate is higher than the last step (raise `--max-steps`).\n");
    }
    out.push('\n');
}

fn idle(out: &mut String, system: System, i: &Idle) {
    let _ = writeln!(
        out,
        "**{}**\n\n| connections | set-up | server RSS before | server RSS after | server RSS per connection | bench RSS per connection | check: delivered / expected |\n|---:|---:|---:|---:|---:|---:|---:|\n| {} | {:.1} s | {} | {} | {:.0} B | {:.0} B | {} / {} |\n",
        system.label(),
        i.setup.ready,
        i.setup.secs,
        mib(i.server_rss_before),
        mib(i.server_rss_after),
        i.server_rss_per_connection,
        i.bench_rss_per_connection,
        i.check.counts.received,
        i.check.counts.expected,
    );
}

fn churn(out: &mut String, system: System, c: &Churn) {
    let _ = writeln!(
        out,
        "**{}**\n\n| stable members | churn loops | cycles/s offered | cycles/s done | cycle p50 ms | cycle p99 ms | failed cycles | server RSS before → after |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n| {} | {} | {:.0} | {:.0} | {} | {} | {} | {} → {} |\n",
        system.label(),
        c.setup.ready,
        c.workers,
        c.offered_cycles_per_sec,
        c.cycles_per_sec,
        ms(c.cycle.p50_ms),
        ms(c.cycle.p99_ms),
        c.failures.values().sum::<u64>(),
        mib(c.server_rss_before),
        mib(c.server_rss_after),
    );
    out.push_str("Fan-out meanwhile:\n\n");
    out.push_str(STEP_HEADER);
    step_row(out, None, &c.fanout);
    out.push('\n');
}

/// A soak: the summary, then one row per window.
pub fn soak(out: &mut String, system: System, s: &Soak) {
    let secs: f64 = s.windows.iter().map(|w| w.sent.secs).sum();
    let stalled_ended = if s.stalled_ended.is_empty() {
        "none".to_owned()
    } else {
        s.stalled_ended
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        "**{}**: {} readers and {} stalled members (addressed by every call) in one room; `BatchSendRoomUnicast` to {} of them at {} calls/s for {:.0} s.\n\n| readers' messages expected | received | lost | unexpected | out of sender order | received twice | stalled members cut off | messages the server dropped for slow consumers | server RSS after the first window → at the end (highest) |\n|---:|---:|---:|---:|---:|---:|---|---:|---|\n| {} | {} | {} | {} | {} | {} | {} of {}: {stalled_ended} | {} | {} → {} ({}) |\n",
        system.label(),
        s.readers,
        s.stalled,
        s.per_call,
        rate(s.rate),
        secs,
        s.counts.expected,
        s.counts.received,
        s.counts.lost,
        s.counts.unexpected,
        s.out_of_order,
        s.duplicates,
        s.stalled_ended.values().sum::<u64>(),
        s.stalled,
        s.slow_consumer_drops
            .map_or_else(|| "–".to_owned(), |n| n.to_string()),
        mib(s.server_rss_first),
        mib(s.server_rss_last),
        mib(s.server_rss_max),
    );
    out.push_str("Each window:\n\n");
    out.push_str(STEP_HEADER);
    for w in &s.windows {
        step_row(out, None, w);
    }
    out.push('\n');
}

/// The stepped runs of an outcome (fan-out has one per payload size).
fn stepped_runs(o: &Outcome) -> Vec<&Stepped> {
    match o {
        Outcome::Fanout { runs, .. } => runs.iter().collect(),
        Outcome::Broadcast { run, .. } | Outcome::Unicast { run, .. } => vec![run],
        Outcome::Idle(_) | Outcome::Churn(_) | Outcome::Soak(_) => Vec::new(),
    }
}

/// The best sustained step of a run.
fn best(run: &Stepped) -> Option<&StepResult> {
    run.best.map(|b| &run.steps[b])
}

/// The highest offered rate at which both runs had a sustained step, and those steps. Both step
/// up from the same start by the same factor, so their offered rates match.
fn same_rate<'a>(a: &'a Stepped, b: &'a Stepped) -> Option<(f64, &'a StepResult, &'a StepResult)> {
    let sustained = |r: &'a Stepped| r.steps.iter().filter(|s| s.sustained);
    sustained(a)
        .filter_map(|x| {
            let rx = x.offered?;
            sustained(b)
                .find(|y| y.offered.is_some_and(|ry| (ry - rx).abs() <= 1e-9 * rx))
                .map(|y| (rx, x, y))
        })
        .max_by(|p, q| p.0.total_cmp(&q.0))
}

impl Report {
    /// Every stepped run titled `title`, with its system, in system order.
    pub fn stepped_by_title(&self, title: &str) -> Vec<(System, &Stepped)> {
        let mut v: Vec<(System, &Stepped)> = self
            .runs
            .iter()
            .flat_map(|r| {
                stepped_runs(&r.outcome)
                    .into_iter()
                    .map(move |s| (r.system, s))
            })
            .filter(|(_, s)| s.title == title)
            .collect();
        v.sort_by_key(|(system, _)| *system);
        v
    }

    /// The titles of the stepped runs, in the order they first ran.
    pub fn stepped_titles(&self) -> Vec<String> {
        let mut titles: Vec<String> = Vec::new();
        for r in &self.runs {
            for s in stepped_runs(&r.outcome) {
                if !titles.contains(&s.title) {
                    titles.push(s.title.clone());
                }
            }
        }
        titles
    }

    /// The idle runs, with their systems.
    pub fn idle_runs(&self) -> Vec<(System, &Idle)> {
        let mut v: Vec<(System, &Idle)> = self
            .runs
            .iter()
            .filter_map(|r| match &r.outcome {
                Outcome::Idle(i) => Some((r.system, i)),
                _ => None,
            })
            .collect();
        v.sort_by_key(|(system, _)| *system);
        v
    }

    /// The churn runs, with their systems.
    pub fn churn_runs(&self) -> Vec<(System, &Churn)> {
        let mut v: Vec<(System, &Churn)> = self
            .runs
            .iter()
            .filter_map(|r| match &r.outcome {
                Outcome::Churn(c) => Some((r.system, c)),
                _ => None,
            })
            .collect();
        v.sort_by_key(|(system, _)| *system);
        v
    }

    /// The side-by-side tables: one row per system and scenario.
    fn side_by_side(&self, out: &mut String) {
        let idle = self.idle_runs();
        if !idle.is_empty() {
            out.push_str("**idle** (subscribed connections doing nothing):\n\n| system | connections | server RSS per connection | server RSS after | check: delivered / expected |\n|---|---:|---:|---:|---:|\n");
            for (system, i) in idle {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.1} KiB | {} | {} / {} |",
                    system.label(),
                    i.setup.ready,
                    i.server_rss_per_connection / 1024.0,
                    mib(i.server_rss_after),
                    i.check.counts.received,
                    i.check.counts.expected
                );
            }
            out.push('\n');
        }
        for title in self.stepped_titles() {
            let runs = self.stepped_by_title(&title);
            let Some((_, first)) = runs.first() else {
                continue;
            };
            let _ = writeln!(
                out,
                "**{title}** ({} clients, {} recipients per call): the highest sustained step of each system, and p99 at half that rate.\n",
                first.clients, first.recipients_per_call
            );
            out.push_str("| system | calls/s | deliveries/s | server CPU µs/delivery | server CPU µs/call | p50 ms | p99 ms | p99 at half rate | server RSS | bench CPU | closed loop calls/s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            for (system, run) in runs {
                let closed = run
                    .unbounded
                    .as_ref()
                    .map_or_else(|| "–".to_owned(), |u| rate(u.achieved));
                let half = run
                    .at_half
                    .as_ref()
                    .map_or_else(|| "–".to_owned(), |h| ms(h.latency.p99_ms));
                match best(run) {
                    Some(b) => {
                        let deliveries = if crate::api::delivers(system) {
                            rate(b.deliveries_per_sec)
                        } else {
                            "– (delivers nothing)".to_owned()
                        };
                        let _ = writeln!(
                            out,
                            "| {} | {}{} | {deliveries} | {} | {} | {} | {} | {half} | {} | {:.0}% | {closed} |",
                            system.label(),
                            if run.capped { "≥ " } else { "" },
                            rate(b.achieved),
                            opt_us(b.server_cpu_us_per_delivery),
                            opt_us(b.server_cpu_us_per_call),
                            ms(b.latency.p50_ms),
                            ms(b.latency.p99_ms),
                            mib(b.server_rss_bytes),
                            b.bench_cpu_percent,
                        );
                    }
                    None => {
                        let why = run
                            .steps
                            .first()
                            .and_then(|s| s.missed.clone())
                            .unwrap_or_default();
                        let _ = writeln!(
                            out,
                            "| {} | no step sustained ({why}) | | | | | | | | | {closed} |",
                            system.label()
                        );
                    }
                }
            }
            out.push('\n');
        }
        let churn = self.churn_runs();
        if !churn.is_empty() {
            out.push_str("**churn** (connect, log in or subscribe, join, leave, close, in a loop, while fan-out runs):\n\n| system | cycles/s offered | cycles/s done | cycle p50 ms | cycle p99 ms | failed cycles | fan-out calls/s meanwhile | fan-out p99 ms | lost |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            for (system, c) in churn {
                let note = if system == System::RawWriter {
                    " (connect and close only: nothing to subscribe to)"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "| {}{note} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} |",
                    system.label(),
                    c.offered_cycles_per_sec,
                    c.cycles_per_sec,
                    ms(c.cycle.p50_ms),
                    ms(c.cycle.p99_ms),
                    c.failures.values().sum::<u64>(),
                    rate(c.fanout.achieved),
                    ms(c.fanout.latency.p99_ms),
                    c.fanout.counts.lost
                );
            }
            out.push('\n');
        }
    }

    /// Herald on one node against Herald in cluster mode on Redis (issue 4): the highest
    /// sustained step of each, p99 at half that rate, and what Redis did per API call.
    fn cross_node(&self, out: &mut String) {
        if !self.systems.iter().any(|s| s.is_cluster()) {
            return;
        }
        out.push_str("### Cluster mode\n\nHerald alone, and Herald in cluster mode on one `redis-server` with one node and with three nodes, all on this machine. The clients are spread over the nodes in turn, and so are the API connections, so two thirds of a call's recipients are on other nodes. Server CPU counts every node and Redis. Redis commands per call count the nodes' heartbeats too, and every command a script runs beside the `evalsha` that ran it.\n\n");
        for title in self.stepped_titles() {
            let runs: Vec<(System, &Stepped)> = self
                .stepped_by_title(&title)
                .into_iter()
                .filter(|(s, _)| *s == System::Herald || s.is_cluster())
                .collect();
            if runs.len() < 2 {
                continue;
            }
            let _ = writeln!(
                out,
                "**{title}**, Herald's modes: the highest sustained step of each.\n\n| system | nodes | calls/s | deliveries/s | server CPU µs/delivery | p50 ms | p99 ms | p99 at half rate | Redis commands per call | by command | Redis CPU µs/call |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"
            );
            for (system, run) in runs {
                let half = run
                    .at_half
                    .as_ref()
                    .map_or_else(|| "–".to_owned(), |h| ms(h.latency.p99_ms));
                let Some(b) = best(run) else {
                    let _ = writeln!(
                        out,
                        "| {} | {} | no step sustained | | | | | {half} | | | |",
                        system.label(),
                        system.herald_nodes()
                    );
                    continue;
                };
                let (commands, by, redis_cpu) = match &b.redis {
                    Some(r) => (
                        format!("{:.2}", r.commands_per_call),
                        r.per_call
                            .iter()
                            .filter(|(_, v)| **v >= 0.005)
                            .map(|(k, v)| format!("{k} {v:.2}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        format!("{:.1}", r.cpu_us_per_call),
                    ),
                    None => ("–".to_owned(), "–".to_owned(), "–".to_owned()),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {}{} | {} | {} | {} | {} | {half} | {commands} | {by} | {redis_cpu} |",
                    system.label(),
                    system.herald_nodes(),
                    if run.capped { "≥ " } else { "" },
                    rate(b.achieved),
                    rate(b.deliveries_per_sec),
                    opt_us(b.server_cpu_us_per_delivery),
                    ms(b.latency.p50_ms),
                    ms(b.latency.p99_ms),
                );
            }
            out.push('\n');
        }
    }

    /// Herald with recovery on (the default) and off (issue 8), alone and in cluster mode: each
    /// scenario's figures side by side, and their ratio on/off.
    fn recovery(&self, out: &mut String) {
        let offs: Vec<System> = self
            .systems
            .iter()
            .copied()
            .filter(|s| s.recovery_off())
            .collect();
        if offs.is_empty() {
            return;
        }
        out.push_str("### Recovery on and off\n\nHerald as configured by default (`[recovery] window_messages = 1000`: a stream of the last messages per login and room membership) and the same server with `window_messages = 0`, fresh servers in turn on each scenario. In cluster mode the streams are in Redis: every recipient's position is taken there, each message's body stored once, and a node receives its own recipients' messages through its channel too. Fan-out and broadcast: each one's highest sustained step, and both at the highest offered rate both sustained.\n\n");
        for off in offs {
            self.recovery_of(off.with_recovery(), off, out);
        }
    }

    /// One pair of [`Report::recovery`]: `on` and `off`.
    fn recovery_of(&self, on: System, off: System, out: &mut String) {
        let _ = writeln!(out, "#### {}\n", on.label());
        let idle = self.idle_runs();
        let idle_of = |s: System| idle.iter().find(|(x, _)| *x == s).map(|(_, i)| *i);
        if let (Some(a), Some(b)) = (idle_of(on), idle_of(off)) {
            let _ = writeln!(
                out,
                "| idle | recovery on | recovery off | on/off |\n|---|---:|---:|---:|\n| server RSS per connection | {:.0} B | {:.0} B | {} |\n",
                a.server_rss_per_connection,
                b.server_rss_per_connection,
                ratio(a.server_rss_per_connection, b.server_rss_per_connection)
            );
        }
        for title in self.stepped_titles() {
            let runs = self.stepped_by_title(&title);
            let run_of = |s: System| runs.iter().find(|(x, _)| *x == s).map(|(_, r)| *r);
            let (Some(a), Some(b)) = (run_of(on), run_of(off)) else {
                continue;
            };
            let _ = writeln!(
                out,
                "**{title}** ({} clients, {} recipients per call):\n\n| | recovery on | recovery off | on/off |\n|---|---:|---:|---:|",
                a.clients, a.recipients_per_call
            );
            let row = |out: &mut String,
                       what: &str,
                       x: Option<f64>,
                       y: Option<f64>,
                       f: fn(f64) -> String| {
                let show = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), f);
                let r = match (x, y) {
                    (Some(x), Some(y)) => ratio(x, y),
                    _ => "–".to_owned(),
                };
                let _ = writeln!(out, "| {what} | {} | {} | {r} |", show(x), show(y));
            };
            let (ba, bb) = (best(a), best(b));
            let capped = match (a.capped, b.capped) {
                (true, true) => " (both sustained every step: raise `--max-steps`)",
                (true, false) => " (on sustained every step)",
                (false, true) => " (off sustained every step)",
                (false, false) => "",
            };
            row(
                out,
                &format!("highest sustained calls/s{capped}"),
                ba.map(|s| s.achieved),
                bb.map(|s| s.achieved),
                rate,
            );
            row(
                out,
                "deliveries/s there",
                ba.map(|s| s.deliveries_per_sec),
                bb.map(|s| s.deliveries_per_sec),
                rate,
            );
            row(
                out,
                "server CPU µs/delivery there",
                ba.and_then(|s| s.server_cpu_us_per_delivery),
                bb.and_then(|s| s.server_cpu_us_per_delivery),
                |v| opt_us(Some(v)),
            );
            row(
                out,
                "p99 ms there",
                ba.map(|s| s.latency.p99_ms),
                bb.map(|s| s.latency.p99_ms),
                ms,
            );
            row(
                out,
                "p99 ms at half that rate",
                a.at_half.as_ref().map(|s| s.latency.p99_ms),
                b.at_half.as_ref().map(|s| s.latency.p99_ms),
                ms,
            );
            if let Some((r, x, y)) = same_rate(a, b) {
                row(
                    out,
                    &format!(
                        "server CPU µs/delivery at {} calls/s (both sustained)",
                        rate(r)
                    ),
                    x.server_cpu_us_per_delivery,
                    y.server_cpu_us_per_delivery,
                    |v| opt_us(Some(v)),
                );
                row(
                    out,
                    &format!("p99 ms at {} calls/s", rate(r)),
                    Some(x.latency.p99_ms),
                    Some(y.latency.p99_ms),
                    ms,
                );
            }
            out.push('\n');
        }
    }

    /// The targets, checked against this run.
    fn targets(&self, out: &mut String) {
        out.push_str("| target (issue 3) | Herald | compared with | |\n|---|---|---|---|\n");
        for (system, i) in self.idle_runs() {
            if system != System::Herald {
                continue;
            }
            let per = i.server_rss_per_connection;
            let _ = writeln!(
                out,
                "| idle: at most 4 KiB of server memory per logged-in connection | {:.1} KiB | 4 KiB | {} |",
                per / 1024.0,
                at_most(per, 4096.0)
            );
        }
        for title in self.stepped_titles() {
            let runs = self.stepped_by_title(&title);
            let Some((_, herald)) = runs.iter().find(|(s, _)| *s == System::Herald) else {
                continue;
            };
            if let Some(h) = runs
                .iter()
                .find(|(s, _)| *s == System::Cluster3)
                .and_then(|(_, r)| r.at_half.as_ref())
            {
                let p99 = h.latency.p99_ms;
                let _ = writeln!(
                    out,
                    "| {title}, three nodes on Redis (issue 4): p99 across nodes at most 10 ms at half the highest sustained rate | {} ms | 10 ms | {} |",
                    ms(p99),
                    at_most(p99, 10.0)
                );
            }
            if title.starts_with("fanout") {
                for (off, ob) in runs
                    .iter()
                    .filter(|(s, _)| s.recovery_off())
                    .filter_map(|(s, r)| Some((*s, best(r)?)))
                {
                    let on_runs = runs.iter().find(|(s, _)| *s == off.with_recovery());
                    let on = on_runs
                        .and_then(|(_, r)| best(r))
                        .map_or(0.0, |b| b.deliveries_per_sec);
                    let who = match off {
                        System::HeraldNoRecovery => String::new(),
                        s => format!(" ({})", s.with_recovery().label()),
                    };
                    let _ = writeln!(
                        out,
                        "| {title}, issue 8{who}: deliveries/s with recovery on at least 85% of recovery off (highest sustained step of each) | {} ({} of off) | recovery off: {} (85% = {}) | {} |",
                        rate(on),
                        ratio(on, ob.deliveries_per_sec),
                        rate(ob.deliveries_per_sec),
                        rate(0.85 * ob.deliveries_per_sec),
                        at_least(on, 0.85 * ob.deliveries_per_sec)
                    );
                }
                if let Some(h) = &herald.at_half {
                    let p99 = h.latency.p99_ms;
                    let _ = writeln!(
                        out,
                        "| {title}: p99 at most 5 ms at half the highest sustained rate | {} ms | 5 ms | {} |",
                        ms(p99),
                        at_most(p99, 5.0)
                    );
                }
                let Some(hb) = best(herald) else { continue };
                // The best peer: the most deliveries/s, and separately the least CPU per delivery.
                let peers: Vec<(System, &StepResult)> = runs
                    .iter()
                    .filter(|(s, _)| !s.is_herald() && !s.is_limit())
                    .filter_map(|(s, r)| best(r).map(|b| (*s, b)))
                    .collect();
                let cpu = |b: &StepResult| b.server_cpu_us_per_delivery.unwrap_or(f64::MAX);
                if let Some((ps, pb)) = peers.iter().min_by(|a, b| cpu(a.1).total_cmp(&cpu(b.1))) {
                    let limit = cpu(pb) / 1.5;
                    let _ = writeln!(
                        out,
                        "| {title}: server CPU per delivery at most 1/1.5 of the best peer's (each at its highest sustained step) | {} µs | {}: {} µs (÷1.5 = {:.2}) | {} |",
                        opt_us(hb.server_cpu_us_per_delivery),
                        ps.label(),
                        opt_us(pb.server_cpu_us_per_delivery),
                        limit,
                        at_most(cpu(hb), limit)
                    );
                    // CPU per delivery falls as load rises (more is written per wake-up): the
                    // same comparison at one rate both sustained.
                    let peer_run = runs.iter().find(|(s, _)| s == ps).map(|(_, r)| *r);
                    if let Some((r, h, p)) = peer_run.and_then(|p| same_rate(herald, p)) {
                        let limit = cpu(p) / 1.5;
                        let _ = writeln!(
                            out,
                            "| {title}: the same, at {} calls/s (the highest offered rate both sustained) | {} µs | {}: {} µs (÷1.5 = {:.2}) | {} |",
                            rate(r),
                            opt_us(h.server_cpu_us_per_delivery),
                            ps.label(),
                            opt_us(p.server_cpu_us_per_delivery),
                            limit,
                            at_most(cpu(h), limit)
                        );
                    }
                }
                if let Some((ps, pb)) = peers
                    .iter()
                    .max_by(|a, b| a.1.deliveries_per_sec.total_cmp(&b.1.deliveries_per_sec))
                {
                    let _ = writeln!(
                        out,
                        "| {title}: deliveries/s at least the best peer's | {} | {}: {} | {} |",
                        rate(hb.deliveries_per_sec),
                        ps.label(),
                        rate(pb.deliveries_per_sec),
                        at_least(hb.deliveries_per_sec, pb.deliveries_per_sec)
                    );
                }
                if let Some(rb) = runs
                    .iter()
                    .find(|(s, _)| *s == System::RawWriter)
                    .and_then(|(_, r)| best(r))
                {
                    let _ = writeln!(
                        out,
                        "| {title}: deliveries/s at least 70% of the raw-writer limit | {} | raw writer: {} (70% = {}) | {} |",
                        rate(hb.deliveries_per_sec),
                        rate(rb.deliveries_per_sec),
                        rate(0.7 * rb.deliveries_per_sec),
                        at_least(hb.deliveries_per_sec, 0.7 * rb.deliveries_per_sec)
                    );
                }
            }
            if title.starts_with("unicast") {
                let closed = |s: System| {
                    runs.iter()
                        .find(|(x, _)| *x == s)
                        .and_then(|(_, r)| r.unbounded.as_ref())
                        .map(|u| u.achieved)
                };
                if let (Some(h), Some(a)) = (closed(System::Herald), closed(System::BareAxum)) {
                    let _ = writeln!(
                        out,
                        "| signed `SendUnicast` calls/s at least 80% of the bare axum handler (closed loop, 16 connections) | {} | bare axum: {} (80% = {}) | {} |",
                        rate(h),
                        rate(a),
                        rate(0.8 * a),
                        at_least(h, 0.8 * a)
                    );
                }
                let open = |s: System| {
                    runs.iter()
                        .find(|(x, _)| *x == s)
                        .and_then(|(_, r)| best(r).map(|b| (b.achieved, r.capped)))
                };
                if let (Some((h, _)), Some((a, capped))) =
                    (open(System::Herald), open(System::BareAxum))
                {
                    let _ = writeln!(
                        out,
                        "| the same, open loop (4 pipelined connections, highest sustained step) | {} | bare axum: {}{} (80% = {}) | {} |",
                        rate(h),
                        if capped { "≥ " } else { "" },
                        rate(a),
                        rate(0.8 * a),
                        at_least(h, 0.8 * a)
                    );
                }
            }
        }
        if !self.systems.iter().any(|s| !s.is_herald()) {
            out.push_str("| fan-out CPU per delivery and deliveries/s against the peers and the raw-writer limit; signed `SendUnicast` against a bare axum handler | – | – | needs the peers: run without `--herald-only` |\n");
        }
        out.push('\n');
    }

    /// True when nothing was lost and nothing failed.
    pub fn clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// The side-by-side tables, the targets, the charts and every step of every system.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Machine: {}. Systems: {}.\n",
            self.machine,
            self.systems
                .iter()
                .map(|s| s.label())
                .collect::<Vec<_>>()
                .join(", ")
        );
        if !self.fresh_server_per_scenario {
            out.push_str("The server was started once, outside the benchmark, for every scenario: its memory figures include what earlier scenarios left behind.\n\n");
        }
        out.push_str("### Side by side\n\n");
        self.side_by_side(&mut out);
        self.cross_node(&mut out);
        self.recovery(&mut out);
        out.push_str("### Targets\n\n");
        self.targets(&mut out);
        if !self.peer_losses.is_empty() {
            out.push_str("What the other systems dropped or cut off, in steps beyond what they sustain (their delivery is at most once: not a failure of the run):\n\n");
            for p in &self.peer_losses {
                let _ = writeln!(out, "- {p}");
            }
            out.push('\n');
        }
        if self.problems.is_empty() {
            out.push_str(if self.peer_losses.is_empty() {
                "Every message a server accepted was received, once.\n\n"
            } else {
                "Every message Herald accepted was received, once.\n\n"
            });
        } else {
            out.push_str("Problems:\n\n");
            for p in &self.problems {
                let _ = writeln!(out, "- {p}");
            }
            out.push('\n');
        }
        if !self.charts.is_empty() {
            out.push_str("### Charts\n\n");
            for (what, link) in &self.charts {
                let _ = writeln!(out, "![{what}]({link})\n");
            }
        }
        out.push_str("### Every step\n\n");
        for r in &self.runs {
            match &r.outcome {
                Outcome::Idle(i) => {
                    out.push_str("#### idle\n\n");
                    idle(&mut out, r.system, i);
                }
                Outcome::Fanout { runs, .. } => {
                    out.push_str("#### fanout\n\n");
                    for run in runs {
                        stepped(&mut out, r.system, run);
                    }
                }
                Outcome::Broadcast { run, .. } => {
                    out.push_str("#### broadcast\n\n");
                    stepped(&mut out, r.system, run);
                }
                Outcome::Unicast { run, .. } => {
                    out.push_str("#### unicast\n\n");
                    stepped(&mut out, r.system, run);
                }
                Outcome::Churn(c) => {
                    out.push_str("#### churn\n\n");
                    churn(&mut out, r.system, c);
                }
                Outcome::Soak(s) => {
                    out.push_str("#### soak\n\n");
                    soak(&mut out, r.system, s);
                }
            }
        }
        out
    }
}
