//! # herald-proto: Herald's wire
//!
//! Everything that crosses a socket, as pure data and pure functions (no tokio, no I/O, no clock:
//! functions that need the time take it as an argument).
//!
//! - [`ids`]: typed, validated ids (`AppId`, `UserId`, `RoomId`).
//! - [`sign`]: the vendor's V4 request signature (HMAC-SHA256), shared by the server (verify) and the
//!   SDK (sign).
//! - [`token`]: the vendor's `001` AccessToken, generated and verified byte for byte.
//! - [`openapi`]: the OpenAPI actions, request bodies and their validation, the response envelope and
//!   the one table that maps every error to its wire code, `CodeN` and HTTP status.
//! - [`client`]: Herald's client protocol over WebSocket (documented in `docs/protocol.md`).
//!
//! It deliberately knows nothing of apps, sessions or routing: that is `herald-core`.

pub mod client;
pub mod ids;
pub mod openapi;
pub mod sign;
pub mod token;
