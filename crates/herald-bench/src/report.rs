//! The results: one [`Report`] serialised as JSON, and rendered as Markdown tables.

use std::fmt::Write as _;

use serde::Serialize;

use crate::progress::Sample;
use crate::scenario::{Churn, Idle, Outcome, Profile, StepResult, Stepped};

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// CPU, cores, kernel.
    pub machine: String,
    /// The command line.
    pub command: String,
    /// When it started (unix seconds).
    pub started_unix: u64,
    /// Whether the server was started by the benchmark (a fresh one per scenario).
    pub fresh_server_per_scenario: bool,
    /// Sizes and durations.
    pub profile: Profile,
    /// Per scenario.
    pub scenarios: Vec<Outcome>,
    /// Functional problems: lost or unexpected messages, failed clients or calls.
    pub problems: Vec<String>,
    /// One sample per second.
    pub timeline: Vec<Sample>,
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

fn rate(r: f64) -> String {
    if r >= 10_000.0 {
        format!("{:.0}k", r / 1000.0)
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
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.2}"))
}

const STEP_HEADER: &str = "| offered calls/s | accepted calls/s | deliveries/s | p50 ms | p99 ms | p99.9 ms | max ms | server CPU µs/delivery | server CPU | server RSS | bench CPU | lost | sustained |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:--|\n";

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
        "| {offered} | {} | {} | {} | {} | {} | {} | {} | {:.0}% | {} | {:.0}% | {} | {sustained} |",
        rate(s.achieved),
        rate(s.deliveries_per_sec),
        ms(s.latency.p50_ms),
        ms(s.latency.p99_ms),
        ms(s.latency.p999_ms),
        ms(s.latency.max_ms),
        opt_us(s.server_cpu_us_per_delivery),
        s.server_cpu_percent,
        mib(s.server_rss_bytes),
        s.bench_cpu_percent,
        s.counts.lost,
    );
}

fn stepped(out: &mut String, run: &Stepped) {
    let _ = writeln!(
        out,
        "**{}** ({} clients, {} recipients per call):\n",
        run.title, run.clients, run.recipients_per_call
    );
    out.push_str(STEP_HEADER);
    for s in &run.steps {
        step_row(out, None, s);
    }
    if let Some(h) = &run.at_half {
        step_row(out, Some("half of best"), h);
    }
    if run.capped {
        out.push_str("\nEvery step was sustained: the highest rate is higher than the last step (raise `--max-steps`).\n");
    }
    if let Some(u) = &run.unbounded {
        step_row(out, Some("closed loop"), u);
    }
    out.push('\n');
}

/// The headline figures of a stepped run: best sustained rate and p99 at half of it.
fn best_line(run: &Stepped) -> String {
    match run.best.map(|b| &run.steps[b]) {
        Some(b) => format!(
            "{}{} calls/s = {} deliveries/s sustained, {} µs server CPU/delivery; p99 at half rate {} ms",
            if run.capped { "≥ " } else { "" },
            rate(b.achieved),
            rate(b.deliveries_per_sec),
            opt_us(b.server_cpu_us_per_delivery),
            run.at_half
                .as_ref()
                .map_or_else(|| "–".to_owned(), |h| ms(h.latency.p99_ms))
        ),
        None => "no step sustained".to_owned(),
    }
}

fn idle(out: &mut String, i: &Idle) {
    let _ = writeln!(
        out,
        "| logged-in connections | set-up | server RSS before | server RSS after | server RSS per connection | bench RSS per connection | check: delivered / expected |\n|---:|---:|---:|---:|---:|---:|---:|\n| {} | {:.1} s | {} | {} | {:.0} B | {:.0} B | {} / {} |\n",
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

fn churn(out: &mut String, c: &Churn) {
    let _ = writeln!(
        out,
        "| stable members | churn loops | cycles/s offered | cycles/s done | cycle p50 ms | cycle p99 ms | failed cycles | server RSS before → after |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n| {} | {} | {:.0} | {:.0} | {} | {} | {} | {} → {} |\n",
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

impl Report {
    /// The targets that a run of Herald alone can check.
    fn targets(&self, out: &mut String) {
        out.push_str("| target (issue 3) | measured | |\n|---|---|---|\n");
        for s in &self.scenarios {
            match s {
                Outcome::Idle(i) => {
                    let per = i.server_rss_per_connection;
                    let _ = writeln!(
                        out,
                        "| idle: at most 4 KiB of server memory per logged-in connection | {:.1} KiB | {} |",
                        per / 1024.0,
                        if per <= 4096.0 {
                            "met".to_owned()
                        } else {
                            format!("missed by {:.1}x", per / 4096.0)
                        }
                    );
                }
                Outcome::Fanout { runs, .. } => {
                    for r in runs {
                        let Some(h) = &r.at_half else { continue };
                        let p99 = h.latency.p99_ms;
                        let _ = writeln!(
                            out,
                            "| {}: p99 at most 5 ms at half the highest sustained rate | {} ms | {} |",
                            r.title,
                            ms(p99),
                            if p99 <= 5.0 {
                                "met".to_owned()
                            } else {
                                format!("missed by {:.1}x", p99 / 5.0)
                            }
                        );
                    }
                }
                _ => {}
            }
        }
        out.push_str("| fan-out CPU per delivery and deliveries/s against the peers and the raw-writer limit; signed `SendUnicast` against a bare axum handler | – | needs the peers: not run yet |\n\n");
    }

    /// True when nothing was lost and nothing failed.
    pub fn clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// The summary table and one section per scenario.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Machine: {}.\n", self.machine);
        out.push_str("| scenario | result |\n|---|---|\n");
        for s in &self.scenarios {
            match s {
                Outcome::Idle(i) => {
                    let _ = writeln!(
                        out,
                        "| idle | {} logged-in connections: {:.0} bytes of server RSS each |",
                        i.setup.ready, i.server_rss_per_connection
                    );
                }
                Outcome::Fanout { runs, .. } => {
                    for r in runs {
                        let _ = writeln!(out, "| {} | {} |", r.title, best_line(r));
                    }
                }
                Outcome::Broadcast { run, .. } => {
                    let _ = writeln!(out, "| {} | {} |", run.title, best_line(run));
                }
                Outcome::Unicast { run, .. } => {
                    let closed = run.unbounded.as_ref().map_or_else(String::new, |u| {
                        format!(
                            "; closed loop {} calls/s, {} µs server CPU/call",
                            rate(u.achieved),
                            opt_us(u.server_cpu_us_per_delivery)
                        )
                    });
                    let _ = writeln!(out, "| {} | {}{closed} |", run.title, best_line(run));
                }
                Outcome::Churn(c) => {
                    let _ = writeln!(
                        out,
                        "| churn | {:.0} connect/login/join/leave/close cycles/s beside {} fan-out calls/s: p99 {} ms, {} lost |",
                        c.cycles_per_sec,
                        rate(c.fanout.achieved),
                        ms(c.fanout.latency.p99_ms),
                        c.fanout.counts.lost
                    );
                }
            }
        }
        out.push('\n');
        if !self.fresh_server_per_scenario {
            out.push_str("The server was started once, outside the benchmark, for every scenario: its memory figures include what earlier scenarios left behind.\n\n");
        }
        self.targets(&mut out);
        if self.problems.is_empty() {
            out.push_str("Every message the server accepted was received, once.\n\n");
        } else {
            out.push_str("Problems:\n\n");
            for p in &self.problems {
                let _ = writeln!(out, "- {p}");
            }
            out.push('\n');
        }
        for s in &self.scenarios {
            match s {
                Outcome::Idle(i) => {
                    out.push_str("### idle\n\n");
                    idle(&mut out, i);
                }
                Outcome::Fanout { runs, .. } => {
                    out.push_str("### fanout\n\n");
                    for r in runs {
                        stepped(&mut out, r);
                    }
                }
                Outcome::Broadcast { run, .. } => {
                    out.push_str("### broadcast\n\n");
                    stepped(&mut out, run);
                }
                Outcome::Unicast { run, .. } => {
                    out.push_str("### unicast\n\n");
                    stepped(&mut out, run);
                }
                Outcome::Churn(c) => {
                    out.push_str("### churn\n\n");
                    churn(&mut out, c);
                }
            }
        }
        out
    }
}
