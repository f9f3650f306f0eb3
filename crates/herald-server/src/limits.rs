//! Connection limits: how many TCP connections the listen port holds at once, in total and per
//! peer address, enforced in the accept loop before a byte of any request is read.
//!
//! [`ConnectionLimits::try_acquire`] hands out a [`ConnectionSlot`], an RAII guard that holds one
//! place until the connection ends, whichever task ends it (the HTTP connection, or the WebSocket
//! it was upgraded to, which carries the slot along), or says which limit refused it. A refused
//! connection is given to [`ConnectionLimits::refuse`]: a fixed `503` is written before any HTTP
//! parsing, then the connection is closed. That response is the one error body not rendered by
//! `api::respond`, because no request exists yet; it still takes its `Code` and `CodeN` from the
//! one error table.
//!
//! # Cost on the accept path
//!
//! The total is one atomic counter (`fetch_update`), no lock. The per-address count, when it is on,
//! is a map split into [`SHARDS`] shards, each behind its own `parking_lot::Mutex` and chosen by a
//! keyed hash of the address: an accept takes one short, almost always uncontended lock, and so
//! does the release when a connection ends. One global mutex would do at accept rates too, but
//! sharding keeps the releases of many connections ending at once (a benchmark's clients
//! disconnecting) from queueing on a single lock. When `max_connections_per_ip` is 0 the map is not
//! touched at all. Entries are removed when their count reaches zero, so the map never holds more
//! entries than there are open connections.
//!
//! # Addresses
//!
//! IPv4-mapped IPv6 addresses count as their IPv4 address. Other IPv6 addresses count per /64
//! prefix: a single host usually holds a whole /64, and counting each of its addresses apart would
//! make the per-address limit void.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_proto::openapi::{ApiError, Envelope, ErrorCode, ResponseMetadata, SendResult, SERVICE};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Shards of the per-address map.
pub const SHARDS: usize = 64;

/// Refusals being written at once, at most. Beyond it a refused connection is closed without an
/// answer, so a flood of refused connections cannot make the server hold a task for each.
const MAX_REFUSALS_IN_FLIGHT: usize = 1024;

/// How long writing a refusal (and waiting for the client to close) may take.
const REFUSAL_TIME: Duration = Duration::from_secs(2);

/// At most this many bytes the refused client sent are read and discarded before closing.
const REFUSAL_DRAIN_BYTES: usize = 64 * 1024;

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.max_connections`.
    Total,
    /// `limits.max_connections_per_ip`.
    PerIp,
}

impl Refusal {
    /// The `reason` label of `herald_connections_refused_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Total => "total",
            Refusal::PerIp => "per_ip",
        }
    }

    /// The configuration key of the limit.
    pub fn config_key(self) -> &'static str {
        match self {
            Refusal::Total => "limits.max_connections",
            Refusal::PerIp => "limits.max_connections_per_ip",
        }
    }
}

/// The counters of both limits, shared by the accept loop and every open connection.
pub struct ConnectionLimits {
    max_total: usize,
    /// 0: no per-address limit (and `per_ip` is never touched).
    max_per_ip: usize,
    open: AtomicUsize,
    per_ip: Box<[Mutex<HashMap<IpAddr, usize>>]>,
    hasher: std::collections::hash_map::RandomState,
    refused: [AtomicU64; 2],
    refusing: AtomicUsize,
    /// The whole 503 response for each refusal, built once.
    responses: [Bytes; 2],
}

impl ConnectionLimits {
    /// Limits of `max_total` connections, and `max_per_ip` per address (0: unlimited). `region`
    /// goes into the refusal's envelope like every other response's.
    pub fn new(max_total: usize, max_per_ip: usize, region: &str) -> Arc<Self> {
        let shards = if max_per_ip == 0 { 0 } else { SHARDS };
        Arc::new(ConnectionLimits {
            max_total,
            max_per_ip,
            open: AtomicUsize::new(0),
            per_ip: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            refused: Default::default(),
            refusing: AtomicUsize::new(0),
            responses: [
                refusal_response(Refusal::Total, region),
                refusal_response(Refusal::PerIp, region),
            ],
        })
    }

    /// Takes a place for a connection from `peer`, or says which limit is reached (and counts the
    /// refusal).
    pub fn try_acquire(self: &Arc<Self>, peer: IpAddr) -> Result<ConnectionSlot, Refusal> {
        let max = self.max_total;
        if self
            .open
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .is_err()
        {
            self.refused[0].fetch_add(1, Relaxed);
            return Err(Refusal::Total);
        }
        let ip = if self.max_per_ip == 0 {
            None
        } else {
            let key = address_key(peer);
            let mut shard = self.shard(&key).lock();
            let count = shard.entry(key).or_insert(0);
            if *count >= self.max_per_ip {
                drop(shard);
                self.open.fetch_sub(1, Relaxed);
                self.refused[1].fetch_add(1, Relaxed);
                return Err(Refusal::PerIp);
            }
            *count += 1;
            Some(key)
        };
        Ok(ConnectionSlot {
            limits: self.clone(),
            ip,
        })
    }

    /// Answers a refused connection with its `503` and closes it, in a task of its own; or, when
    /// [`MAX_REFUSALS_IN_FLIGHT`] are already being answered, closes it at once. (On a TLS port
    /// refused connections are closed unanswered: see the accept loop.)
    pub fn refuse<S>(self: &Arc<Self>, stream: S, refusal: Refusal)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if self.refusing.fetch_add(1, Relaxed) >= MAX_REFUSALS_IN_FLIGHT {
            self.refusing.fetch_sub(1, Relaxed);
            return;
        }
        let in_flight = RefusalInFlight(self.clone());
        let response = self.responses[refusal as usize].clone();
        tokio::spawn(async move {
            let _in_flight = in_flight;
            let _ = tokio::time::timeout(REFUSAL_TIME, answer(stream, &response)).await;
        });
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Relaxed)
    }

    /// Connections refused so far by `limit`.
    pub fn refused(&self, limit: Refusal) -> u64 {
        self.refused[limit as usize].load(Relaxed)
    }

    /// Distinct addresses (IPv6: /64 prefixes) with an open connection, when the per-address limit
    /// is on; 0 otherwise.
    pub fn tracked_addresses(&self) -> usize {
        self.per_ip.iter().map(|s| s.lock().len()).sum()
    }

    /// Appends the gauge and the refusal counters in Prometheus text.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(
            out,
            "# HELP herald_tcp_connections TCP connections open on the listen port (HTTP and WebSocket), as the connection limits count them.\n\
             # TYPE herald_tcp_connections gauge\n\
             herald_tcp_connections {}\n\
             # HELP herald_connections_refused_total TCP connections refused at accept time, by the limit reached.\n\
             # TYPE herald_connections_refused_total counter\n\
             herald_connections_refused_total{{reason=\"total\"}} {}\n\
             herald_connections_refused_total{{reason=\"per_ip\"}} {}\n",
            self.open(),
            self.refused(Refusal::Total),
            self.refused(Refusal::PerIp),
        );
    }

    fn shard(&self, key: &IpAddr) -> &Mutex<HashMap<IpAddr, usize>> {
        let i = self.hasher.hash_one(key) as usize % self.per_ip.len();
        &self.per_ip[i]
    }

    fn release(&self, ip: Option<IpAddr>) {
        if let Some(key) = ip {
            let mut shard = self.shard(&key).lock();
            if let Some(count) = shard.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    shard.remove(&key);
                }
            }
        }
        self.open.fetch_sub(1, Relaxed);
    }
}

/// One open connection's place under the limits, released when dropped.
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    ip: Option<IpAddr>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limits.release(self.ip.take());
    }
}

impl std::fmt::Debug for ConnectionSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionSlot")
            .field("ip", &self.ip)
            .finish()
    }
}

/// Counts a refusal being answered, until its task ends (however it ends).
struct RefusalInFlight(Arc<ConnectionLimits>);

impl Drop for RefusalInFlight {
    fn drop(&mut self) {
        self.0.refusing.fetch_sub(1, Relaxed);
    }
}

/// The address a connection counts under: IPv4 (also when IPv4-mapped), or an IPv6 /64.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
    }
}

/// The whole `503` of a refusal: status line, headers and the vendor's envelope with
/// `ServiceUnavailableTemp`. `RequestId`, `Action` and `Version` are empty because no request was
/// read.
fn refusal_response(refusal: Refusal, region: &str) -> Bytes {
    let meta = ResponseMetadata {
        request_id: String::new(),
        action: String::new(),
        version: String::new(),
        service: SERVICE.to_owned(),
        region: region.to_owned(),
        error: None,
    };
    let error = ApiError::new(
        ErrorCode::ServiceUnavailableTemp,
        format!(
            "Too many connections: {} is reached; retry later.",
            refusal.config_key()
        ),
    );
    let envelope: Envelope<SendResult> = Envelope::failure(meta, &error);
    let body = serde_json::to_string(&envelope).unwrap_or_default();
    let status = error.code.http_status();
    Bytes::from(format!(
        "HTTP/1.1 {status} Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ))
}

/// Writes the refusal, ends the write side, then reads and discards what the client sent until it
/// closes: closing a socket with unread input makes the kernel send a reset, which can destroy the
/// response before the client has read it.
async fn answer<S>(mut stream: S, response: &[u8])
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if stream.write_all(response).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 1024];
    let mut drained = 0;
    while drained < REFUSAL_DRAIN_BYTES {
        match stream.read(&mut sink).await {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn the_total_is_enforced_and_released_on_drop() {
        let limits = ConnectionLimits::new(2, 0, "r");
        let a = limits.try_acquire(v4(1)).unwrap();
        let _b = limits.try_acquire(v4(2)).unwrap();
        assert_eq!(limits.try_acquire(v4(3)).unwrap_err(), Refusal::Total);
        assert_eq!(limits.open(), 2);
        drop(a);
        assert_eq!(limits.open(), 1);
        let _c = limits.try_acquire(v4(3)).unwrap();
        assert_eq!(limits.refused(Refusal::Total), 1);
        assert_eq!(
            limits.tracked_addresses(),
            0,
            "no map without a per-address limit"
        );
    }

    #[test]
    fn the_per_address_limit_counts_each_address_and_forgets_it_at_zero() {
        let limits = ConnectionLimits::new(100, 2, "r");
        let a1 = limits.try_acquire(v4(1)).unwrap();
        let a2 = limits.try_acquire(v4(1)).unwrap();
        assert_eq!(limits.try_acquire(v4(1)).unwrap_err(), Refusal::PerIp);
        let b = limits.try_acquire(v4(2)).unwrap();
        assert_eq!(limits.open(), 3, "the refused one gave its place back");
        assert_eq!(limits.tracked_addresses(), 2);
        drop(a1);
        let a3 = limits.try_acquire(v4(1)).unwrap();
        drop((a2, a3, b));
        assert_eq!((limits.open(), limits.tracked_addresses()), (0, 0));
        assert_eq!(limits.refused(Refusal::PerIp), 1);
        assert_eq!(limits.refused(Refusal::Total), 0);
    }

    #[test]
    fn mapped_v4_counts_as_v4_and_v6_counts_per_64() {
        let limits = ConnectionLimits::new(100, 1, "r");
        let _a = limits.try_acquire(v4(1)).unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(limits.try_acquire(mapped).unwrap_err(), Refusal::PerIp);
        let _h = limits.try_acquire("2001:db8::1".parse().unwrap()).unwrap();
        let same_64: IpAddr = "2001:db8::ffff:1234".parse().unwrap();
        assert_eq!(limits.try_acquire(same_64).unwrap_err(), Refusal::PerIp);
        let _other = limits
            .try_acquire("2001:db8:0:1::1".parse().unwrap())
            .unwrap();
    }

    #[test]
    fn the_refusal_is_a_complete_response_with_the_envelope() {
        let raw = refusal_response(Refusal::PerIp, "cn-north-1");
        let text = std::str::from_utf8(&raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(head.contains("connection: close"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        let e = &v["ResponseMetadata"]["Error"];
        assert_eq!(e["Code"], "ServiceUnavailableTemp");
        assert_eq!(e["CodeN"], 100019);
        assert!(e["Message"]
            .as_str()
            .unwrap()
            .contains("limits.max_connections_per_ip"));
        assert!(v.get("Result").is_none());
    }
}
