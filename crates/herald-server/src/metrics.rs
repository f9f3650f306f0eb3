//! Prometheus metrics, kept in atomics on the hot path and rendered as text on `GET /metrics`.
//!
//! A small hand-written registry: the set of series is fixed and known, and an atomic add is all a
//! delivery should cost.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use herald_core::hub::{Stats, Summary};

use crate::webhook::WebhookStats;
use parking_lot::Mutex;

/// Upper bounds (microseconds) of the delivery latency histogram buckets; rendered in seconds.
const LATENCY_BOUNDS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000,
];

/// Why a message did not reach a recipient.
#[derive(Debug, Clone, Copy)]
pub enum DropReason {
    /// `SendUnicast` to a user who is not logged in.
    NotOnline = 0,
    /// A room action to a user not in the room.
    NotInRoom = 1,
    /// The recipient's outbound queue overflowed.
    SlowConsumer = 2,
    /// The connection closed with the message still queued.
    ConnectionClosed = 3,
}

const DROP_NAMES: [&str; 4] = [
    "not_online",
    "not_in_room",
    "slow_consumer",
    "connection_closed",
];

/// Why a TLS handshake did not complete.
#[derive(Debug, Clone, Copy)]
pub enum TlsFailure {
    /// The client did not finish the handshake within `tls.handshake_timeout_ms`.
    Timeout = 0,
    /// The handshake failed: not TLS, no common version or cipher suite, the client refused the
    /// certificate, or the connection broke.
    Error = 1,
}

const TLS_FAILURE_NAMES: [&str; 2] = ["timeout", "error"];

/// All counters of one server.
#[derive(Default)]
pub struct Metrics {
    connections_opened: AtomicU64,
    connections_closed: AtomicU64,
    logins: AtomicU64,
    api_calls: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    accepted: AtomicU64,
    delivered: AtomicU64,
    held: AtomicU64,
    dropped: [AtomicU64; 4],
    latency_buckets: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    latency_sum_us: AtomicU64,
    tls_handshake_failures: [AtomicU64; 2],
}

impl Metrics {
    /// A connection was upgraded.
    pub fn connection_opened(&self) {
        self.connections_opened.fetch_add(1, Relaxed);
    }
    /// A connection ended.
    pub fn connection_closed(&self) {
        self.connections_closed.fetch_add(1, Relaxed);
    }
    /// A login succeeded.
    pub fn login(&self) {
        self.logins.fetch_add(1, Relaxed);
    }
    /// An OpenAPI call finished with `code` (`Success` or an error code).
    pub fn api_call(&self, action: &'static str, code: &'static str) {
        *self.api_calls.lock().entry((action, code)).or_default() += 1;
    }
    /// A messaging call was accepted; its per-recipient outcomes.
    pub fn accepted(&self, s: &Summary) {
        self.accepted.fetch_add(1, Relaxed);
        self.dropped(DropReason::NotOnline, s.not_online);
        self.dropped(DropReason::NotInRoom, s.not_in_room);
        self.dropped(DropReason::SlowConsumer, s.slow_consumer);
        if s.held > 0 {
            self.held.fetch_add(u64::from(s.held), Relaxed);
        }
    }
    /// `n` messages were dropped for `reason`.
    pub fn dropped(&self, reason: DropReason, n: u32) {
        if n > 0 {
            self.dropped[reason as usize].fetch_add(u64::from(n), Relaxed);
        }
    }
    /// A message was written to a client socket `latency_us` after its API call was accepted.
    pub fn delivered(&self, latency_us: u64) {
        self.delivered.fetch_add(1, Relaxed);
        let i = LATENCY_BOUNDS_US.partition_point(|&b| b < latency_us);
        self.latency_buckets[i].fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(latency_us, Relaxed);
    }

    /// A TLS handshake did not complete.
    pub fn tls_handshake_failed(&self, reason: TlsFailure) {
        self.tls_handshake_failures[reason as usize].fetch_add(1, Relaxed);
    }

    /// TLS handshakes that did not complete so far, for `reason`.
    pub fn tls_handshake_failures(&self, reason: TlsFailure) -> u64 {
        self.tls_handshake_failures[reason as usize].load(Relaxed)
    }

    /// Messaging calls accepted so far.
    pub fn accepted_total(&self) -> u64 {
        self.accepted.load(Relaxed)
    }

    /// Drops so far, all reasons together.
    pub fn dropped_all(&self) -> u64 {
        self.dropped.iter().map(|d| d.load(Relaxed)).sum()
    }

    /// OpenAPI calls so far, whatever their result.
    pub fn api_calls_total(&self) -> u64 {
        self.api_calls.lock().values().sum()
    }

    /// Messages written to sockets so far.
    pub fn delivered_total(&self) -> u64 {
        self.delivered.load(Relaxed)
    }

    /// Drops so far for `reason`.
    pub fn dropped_total(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].load(Relaxed)
    }

    /// The Prometheus text exposition, with the hub's current sizes as gauges and the webhook
    /// counters.
    pub fn render(&self, stats: Stats, hooks: WebhookStats) -> String {
        let mut o = String::with_capacity(4096);
        let mut gauge = |name: &str, help: &str, v: u64| {
            let _ = write!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n");
        };
        gauge(
            "herald_connections",
            "Open client connections.",
            stats.sessions,
        );
        gauge(
            "herald_logged_in_users",
            "Users logged in (out-of-room).",
            stats.logins,
        );
        gauge(
            "herald_rooms",
            "Rooms with at least one member.",
            stats.rooms,
        );
        gauge(
            "herald_room_members",
            "Room memberships.",
            stats.room_members,
        );
        gauge(
            "herald_held_streams",
            "Streams of logins and memberships whose connection was lost, kept for recovery here (a cluster keeps them in Redis).",
            stats.held_streams,
        );
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = write!(
                o,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            );
        };
        counter(
            "herald_connections_opened_total",
            "Client connections opened.",
            self.connections_opened.load(Relaxed),
        );
        counter(
            "herald_connections_closed_total",
            "Client connections closed.",
            self.connections_closed.load(Relaxed),
        );
        counter(
            "herald_logins_total",
            "Successful logins.",
            self.logins.load(Relaxed),
        );
        counter(
            "herald_webhooks_delivered_total",
            "Webhook events the receiver answered 200.",
            hooks.delivered,
        );
        counter(
            "herald_webhooks_retried_total",
            "Webhook delivery attempts after a failed one.",
            hooks.retried,
        );
        counter(
            "herald_webhooks_failed_total",
            "Webhook events given up after the last attempt.",
            hooks.failed,
        );
        counter(
            "herald_webhooks_dropped_total",
            "Webhook events dropped because the app's queue was full.",
            hooks.dropped,
        );
        counter(
            "herald_messages_accepted_total",
            "Messaging API calls accepted.",
            self.accepted.load(Relaxed),
        );
        counter(
            "herald_messages_delivered_total",
            "Messages written to client sockets.",
            self.delivered.load(Relaxed),
        );
        counter(
            "herald_messages_held_total",
            "Messages kept for recipients between connections, whose streams are held for recovery.",
            self.held.load(Relaxed),
        );
        o.push_str("# HELP herald_messages_dropped_total Recipients a message did not reach, by reason.\n# TYPE herald_messages_dropped_total counter\n");
        for (name, v) in DROP_NAMES.iter().zip(&self.dropped) {
            let _ = writeln!(
                o,
                "herald_messages_dropped_total{{reason=\"{name}\"}} {}",
                v.load(Relaxed)
            );
        }
        o.push_str("# HELP herald_tls_handshake_failures_total TLS handshakes that did not complete, by reason.\n# TYPE herald_tls_handshake_failures_total counter\n");
        for (name, v) in TLS_FAILURE_NAMES.iter().zip(&self.tls_handshake_failures) {
            let _ = writeln!(
                o,
                "herald_tls_handshake_failures_total{{reason=\"{name}\"}} {}",
                v.load(Relaxed)
            );
        }
        o.push_str("# HELP herald_api_calls_total OpenAPI calls by action and result code.\n# TYPE herald_api_calls_total counter\n");
        for ((action, code), v) in self.api_calls.lock().iter() {
            let _ = writeln!(
                o,
                "herald_api_calls_total{{action=\"{action}\",code=\"{code}\"}} {v}"
            );
        }
        o.push_str("# HELP herald_delivery_latency_seconds From API call accepted to message written to the client socket.\n# TYPE herald_delivery_latency_seconds histogram\n");
        let mut cumulative = 0;
        for (i, b) in self.latency_buckets.iter().enumerate() {
            cumulative += b.load(Relaxed);
            let le = LATENCY_BOUNDS_US
                .get(i)
                .map_or("+Inf".to_owned(), |us| format!("{}", *us as f64 / 1e6));
            let _ = writeln!(
                o,
                "herald_delivery_latency_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            o,
            "herald_delivery_latency_seconds_sum {}\nherald_delivery_latency_seconds_count {cumulative}",
            self.latency_sum_us.load(Relaxed) as f64 / 1e6
        );
        o
    }
}
