//! The progress line on stderr (once a second) and the timeline it samples for the JSON report.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use crate::fleet::Shared;
use crate::procfs::{self, Usage};

/// One second of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the benchmark started.
    pub t: f64,
    /// What was running.
    pub label: String,
    /// Messages received per second by the clients.
    pub deliveries_per_sec: f64,
    /// Server CPU, percent of one core.
    pub server_cpu_percent: f64,
    /// Server resident memory, MiB.
    pub server_rss_mib: f64,
    /// The benchmark's own CPU, percent of one core.
    pub bench_cpu_percent: f64,
}

#[derive(Debug, Default)]
struct Watched {
    label: String,
    fleet: Option<Arc<Shared>>,
    server_pid: Option<u32>,
}

/// What the progress line watches; the scenarios update it as they go.
#[derive(Debug)]
pub struct Progress {
    start: Instant,
    watched: Mutex<Watched>,
    samples: Mutex<Vec<Sample>>,
}

impl Progress {
    /// Starts the once-a-second sampler.
    pub fn start() -> Arc<Progress> {
        let p = Arc::new(Progress {
            start: Instant::now(),
            watched: Mutex::new(Watched::default()),
            samples: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&p);
        tokio::spawn(async move {
            let tty = std::io::stderr().is_terminal();
            let mut last: Option<(Instant, u64, Usage, Usage)> = None;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let Some(p) = weak.upgrade() else { return };
                last = p.sample(last, tty);
            }
        });
        p
    }

    /// Names what runs now.
    pub fn set_label(&self, label: impl Into<String>) {
        self.watched.lock().label = label.into();
    }

    /// Watches a fleet (its received count).
    pub fn watch_fleet(&self, fleet: Option<Arc<Shared>>) {
        self.watched.lock().fleet = fleet;
    }

    /// Watches a server process.
    pub fn watch_server(&self, pid: Option<u32>) {
        self.watched.lock().server_pid = pid;
    }

    /// The samples so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().clone()
    }

    /// Ends the progress line (on a terminal, it is rewritten in place).
    pub fn finish(&self) {
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
    }

    fn sample(
        &self,
        last: Option<(Instant, u64, Usage, Usage)>,
        tty: bool,
    ) -> Option<(Instant, u64, Usage, Usage)> {
        let (label, fleet, pid) = {
            let w = self.watched.lock();
            (w.label.clone(), w.fleet.clone(), w.server_pid)
        };
        let now = Instant::now();
        let received = fleet.map_or(0, |f| f.counts().received);
        let server = pid
            .and_then(|p| procfs::usage(&p.to_string()).ok())
            .unwrap_or_default();
        let bench = procfs::usage("self").unwrap_or_default();
        if let Some((t, r, s, b)) = last {
            let secs = (now - t).as_secs_f64().max(1e-3);
            let sample = Sample {
                t: (now - self.start).as_secs_f64(),
                label: label.clone(),
                deliveries_per_sec: received.saturating_sub(r) as f64 / secs,
                server_cpu_percent: (server.cpu_secs - s.cpu_secs).max(0.0) / secs * 100.0,
                server_rss_mib: server.rss_bytes as f64 / (1 << 20) as f64,
                bench_cpu_percent: (bench.cpu_secs - b.cpu_secs).max(0.0) / secs * 100.0,
            };
            let line = format!(
                "[{:6.1}s] {:<38} recv {:>9.0}/s | server cpu {:>4.0}% rss {:>7.1} MiB | bench cpu {:>4.0}%",
                sample.t,
                label,
                sample.deliveries_per_sec,
                sample.server_cpu_percent,
                sample.server_rss_mib,
                sample.bench_cpu_percent
            );
            let mut err = std::io::stderr().lock();
            let _ = if tty {
                write!(err, "\r{line}\x1b[K")
            } else {
                writeln!(err, "{line}")
            };
            let _ = err.flush();
            self.samples.lock().push(sample);
        }
        Some((now, received, server, bench))
    }
}

/// Prints a line on stderr, clearing a progress line a terminal may be showing.
pub fn say(msg: impl std::fmt::Display) {
    if std::io::stderr().is_terminal() {
        eprintln!("\r\x1b[K{msg}");
    } else {
        eprintln!("{msg}");
    }
}
