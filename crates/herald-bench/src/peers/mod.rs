//! The peers' protocols and the two limits.
//!
//! - [`nats`], [`mqtt`], [`socketio`]: the client side of each peer's protocol, encoders and
//!   decoders only (no I/O), with [`stream`] for protocols whose items may span WebSocket
//!   messages.
//! - [`raw`]: `herald-bench raw-writer`, the limit for delivery.
//! - [`bare_axum`]: `herald-bench bare-axum`, the limit for the HTTP path.
//!
//! The peers themselves are the Debian packages `nats-server` and `mosquitto`, and the Socket.IO
//! server in `bench/peers/socketio` (see [`crate::system`]).

pub mod bare_axum;
pub mod mqtt;
pub mod nats;
pub mod raw;
pub mod socketio;
pub mod stream;
