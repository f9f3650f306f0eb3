//! # herald-bench: Herald under load
//!
//! A load generator that measures what issue 3 asks, for Herald and side by side for its peers
//! (NATS, Mosquitto, a Socket.IO server) and the limits (a raw frame writer, a bare axum
//! handler): deliveries per second actually received, latency from the API call to receipt (HDR
//! histograms), server CPU time per delivery and resident memory per connection (from `/proc`),
//! with every message counted per client so that a loss cannot hide.
//!
//! - [`ws`]: a minimal WebSocket client, cheap enough to be ten thousand clients.
//! - [`http`]: signed OpenAPI requests over raw keep-alive HTTP/1.1.
//! - [`payload`]: the timestamp each message carries, and reading Herald's message frames in place.
//! - [`system`]: the systems compared, and how each is started.
//! - [`clients`]: what a client of each system does (subscribe, decode, churn).
//! - [`api`]: what a call is in each system's API, and its answer.
//! - [`peers`]: the peers' protocol codecs (NATS, MQTT, Engine.IO/Socket.IO) and the two limits
//!   (`herald-bench raw-writer`, `herald-bench bare-axum`).
//! - [`fleet`]: the receiving clients (set up, count, record latency).
//! - [`load`]: the workloads (`BatchSendRoomUnicast`, `SendBroadcast`, `SendUnicast` and their
//!   equivalents) and the fixed-rate or closed-loop driver.
//! - [`scenario`]: idle, fanout, broadcast, unicast and churn, with stepped offered load.
//! - [`server`]: Herald's apps and configuration, and the server processes.
//! - [`procfs`], [`stats`], [`progress`], [`report`], [`charts`]: measuring, summarising, showing.
//!
//! Herald is spoken to only through its public protocols (`docs/protocol.md`, `docs/openapi.md`),
//! with `herald-proto` for the wire types, tokens and signing; the benchmark never links the
//! server. It does not spread clients over several processes yet.

pub mod api;
pub mod charts;
pub mod clients;
pub mod fleet;
pub mod http;
pub mod load;
pub mod payload;
pub mod peers;
pub mod procfs;
pub mod progress;
pub mod redis;
pub mod report;
pub mod scenario;
pub mod server;
pub mod stats;
pub mod system;
pub mod ws;
