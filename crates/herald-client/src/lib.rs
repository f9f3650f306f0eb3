//! # herald-client: the Rust SDK for Herald
//!
//! Two halves, one per side of a Herald server:
//!
//! - **Apps** connect with [`connect`], which returns an [`Engine`] and an [`EventStream`]. The
//!   engine makes the vendor's calls: [`Engine::login`], [`Engine::logout`], [`Engine::join_room`],
//!   [`Engine::leave_room`], [`Engine::get_peer_online_status`], [`Engine::set_server_params`],
//!   and sends messages to other users, rooms and the business server
//!   ([`Engine::send_user_message_outside_room`], [`Engine::send_user_message`],
//!   [`Engine::send_room_message`], [`Engine::send_server_message`] and their binary forms), each
//!   numbered with a msgid from one sequence per engine. Results, presence and every received
//!   message arrive on the stream as [`Event`]s named after the vendor's callbacks
//!   (`onLoginResult`, `onUserMessageSendResultOutsideRoom`, `onUserJoined`,
//!   `onRoomMessageReceived`, …). A background task owns the socket, decodes frames and answers
//!   pings. Each message the application takes from the stream is acknowledged to the server
//!   (one cumulative `ack` per burst; [`ConnectOptions::auto_ack`] turns it off, and
//!   [`Engine::ack`] acknowledges by hand). ([`connection`], [`event`])
//! - **Business servers** send messages with [`OpenApiClient`]: `SendUnicast`, `SendRoomUnicast`,
//!   `BatchSendRoomUnicast` and `SendBroadcast`, signed with the vendor's V4 signature, in version
//!   `2023-07-20` or `2020-12-01`. Every HTTP answer comes back as an [`ApiResponse`] holding the
//!   vendor's envelope. ([`openapi`])
//!
//! The wire formats live in `herald_proto` (the client protocol in `herald_proto::client`, the
//! signature in `herald_proto::sign`); this crate adds sockets and HTTP, and depends on no other
//! Herald crate.
//!
//! What it deliberately does not do: reconnect (a closed connection ends the stream; log in and
//! rejoin on a new one), generate tokens (that is `herald_proto::token`, on your server), check
//! message sizes or send rates itself (the server answers with the vendor's codes), or read the
//! system's certificate store.
//!
//! Both halves speak TLS: `https://` (and `wss://`) addresses connect with rustls, trusting
//! Mozilla's roots; [`Tls::with_root_pem`] adds a self-signed or private certificate, passed to
//! [`connect_with_tls`] and [`OpenApiClient::with_tls`]. ([`tls`])

pub mod connection;
pub mod event;
pub mod openapi;
pub mod tls;

pub use connection::{
    connect, connect_with, connect_with_tls, CallError, ConnectError, ConnectOptions, Engine,
    EventStream, Recovery,
};
pub use event::Event;
pub use herald_proto::openapi::DeliveryReport;
pub use openapi::{
    ApiResponse, InvalidEndpoint, Message, OpenApiClient, OpenApiError, DEFAULT_REGION,
};
pub use tls::{Tls, TlsError};
