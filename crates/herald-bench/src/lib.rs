//! # herald-bench: Herald under load
//!
//! A load generator that measures what issue 3 asks: deliveries per second actually received,
//! latency from the API call to receipt (HDR histograms), server CPU time per delivery and resident
//! memory per connection (from `/proc`), with every message counted per client so that a loss
//! cannot hide.
//!
//! - [`ws`]: a minimal WebSocket client, cheap enough to be ten thousand of Herald's clients.
//! - [`http`]: signed OpenAPI requests over raw keep-alive HTTP/1.1.
//! - [`payload`]: the timestamp each message carries, and reading message frames in place.
//! - [`fleet`]: the receiving clients (log in, join rooms, count, record latency).
//! - [`load`]: the workloads (`BatchSendRoomUnicast`, `SendBroadcast`, `SendUnicast`) and the
//!   fixed-rate or closed-loop driver.
//! - [`scenario`]: idle, fanout, broadcast, unicast and churn, with stepped offered load.
//! - [`server`]: the apps, the configuration written for them, and a `herald serve` to start.
//! - [`procfs`], [`stats`], [`progress`], [`report`]: measuring, summarising, showing.
//!
//! It speaks only the public protocols (`docs/protocol.md`, `docs/openapi.md`), through
//! `herald-proto` for the wire types, tokens and signing; it never links the server.
//! It does not yet run the peers of issue 3 (NATS, Mosquitto, Socket.IO, a raw frame writer),
//! draw charts, or spread clients over several processes.

pub mod fleet;
pub mod http;
pub mod load;
pub mod payload;
pub mod procfs;
pub mod progress;
pub mod report;
pub mod scenario;
pub mod server;
pub mod stats;
pub mod ws;
