//! # herald-core: the routing engine
//!
//! Herald's brain, with no sockets and no clock:
//!
//! - [`apps`]: the configured apps and access keys ([`apps::Registry`]).
//! - [`hub`]: logins, rooms and fan-out ([`hub::Hub`]) of OpenAPI messages and of the messages
//!   clients send ([`hub::Hub::client_send`]), presence, room token lifetimes; connections are
//!   reached only through the [`hub::Outbox`] port, which the edge implements with a bounded queue
//!   per socket, and presence leaves through the [`hub::Hooks`] port (webhooks).
//! - [`rate`]: the exact per-app calls-per-second limit, and the small per-connection one.
//! - [`time`]: [`time::Timestamp`], the time every operation takes as an argument.
//!
//! What it deliberately does not do: parse HTTP or WebSocket frames, verify request signatures
//! (that needs the raw request; see `herald-proto::sign` and the server), spawn tasks, or block.
//! Messages are encoded once (`herald_proto::client::Delivery`) and shared by reference with every
//! recipient's outbox.

pub mod apps;
pub mod hub;
pub mod rate;
pub mod relay;
pub mod stream;
pub mod time;
