//! # herald-core: the routing engine
//!
//! Herald's brain, with no sockets and no clock:
//!
//! - [`apps`]: the configured apps and access keys ([`apps::Registry`]).
//! - [`hub`]: logins, rooms and fan-out ([`hub::Hub`]); connections are reached only through the
//!   [`hub::Outbox`] port, which the edge implements with a bounded queue per socket.
//! - [`rate`]: the exact per-app calls-per-second limit.
//! - [`time`]: [`time::Timestamp`], the time every operation takes as an argument.
//!
//! What it deliberately does not do: parse HTTP or WebSocket frames, verify request signatures
//! (that needs the raw request; see `herald-proto::sign` and the server), spawn tasks, or block.
//! Messages are encoded once (`herald_proto::client::Delivery`) and shared by reference with every
//! recipient's outbox.

pub mod apps;
pub mod hub;
pub mod rate;
pub mod time;
