//! The client connection: [`connect`], the [`Engine`] that makes calls, and the [`EventStream`]
//! that reports what happened.
//!
//! One background task owns the socket's read half. It decodes every frame into an [`Event`] and
//! pushes it onto an unbounded channel, so reading never waits for the application: a slow
//! consumer costs memory here instead of stalling the socket, which the server would otherwise
//! cut off as a slow consumer (close 4001). Pings are answered by tungstenite as frames are read.
//!
//! Calls go out through the write half, shared by every clone of the [`Engine`] behind an async
//! mutex (a send can wait on the socket, so a synchronous lock would not do). Calls are text
//! frames; messages the client sends (`sendUserMessage…`, `sendRoomMessage…`,
//! `sendServerMessage…`) are binary [`SendFrame`]s numbered from one per-engine msgid sequence,
//! kept under the same mutex so that the server sees the msgids in increasing order.
//!
//! Acknowledgements: by default ([`ConnectOptions::auto_ack`]) the [`EventStream`] notes the
//! msgid of each message the application takes from it, and a small task sends one cumulative
//! `ack` for whatever was taken since its last one: a burst read in one go costs one ack, not one
//! per message. With auto-ack off, [`Engine::ack`] acknowledges by hand.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, Stream, StreamExt};
use herald_proto::client::{
    Call, ReceivedMessage, SendFrame, SendOp, StreamPos, StreamState, GATEWAY_PATH,
};
use herald_proto::sign::encode_query;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::event::Event;
use crate::tls::Tls;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long [`Engine::close`] waits for the server to answer the close frame before dropping the
/// connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why [`connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server address is not `http://HOST[:PORT]` (or `https`, `ws`, `wss`).
    #[error("invalid server address {0:?}: expected http://HOST:PORT")]
    InvalidServer(String),
    /// The server answered the upgrade with an HTTP error; 404 means an unknown `appId`.
    #[error("the server refused the connection with HTTP {status}: {body}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The response body, as text.
        body: String,
    },
    /// The TCP connection, the TLS handshake (an untrusted certificate, say) or the WebSocket
    /// handshake failed.
    #[error("cannot connect to {url}")]
    Transport {
        /// The WebSocket URL.
        url: String,
        /// Why (boxed: tungstenite's error is large, and this path is cold).
        #[source]
        source: Box<tungstenite::Error>,
    },
}

/// Why a call could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The connection has ended (see [`Event::ConnectionClosed`]) or [`Engine::close`] was called.
    #[error("the connection is closed")]
    Closed,
    /// Writing the frame failed; the connection is ending and the event stream will say how.
    #[error("sending the call failed")]
    Transport(#[source] Box<tungstenite::Error>),
}

/// Connects to a Herald server's client gateway for the app `app_id`, like the vendor's
/// `createEngine(appId)`.
///
/// `server` is the server's base address as a business server knows it, `http://HOST:PORT`; the
/// connection goes to `ws://HOST:PORT/ws?appId=…`. `https://` (or `wss://`) connects over TLS,
/// trusting Mozilla's roots; to trust a self-signed or private certificate as well, use
/// [`connect_with_tls`]. Returns the [`Engine`] for calls and the [`EventStream`] of their results
/// and of received messages.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use herald_client::{connect, Event};
///
/// let (engine, mut events) = connect("http://127.0.0.1:8080", "herald-dev-app-000000001").await?;
/// engine.login("001…token…", "u1").await?;
/// while let Some(event) = events.recv().await {
///     match event {
///         Event::LoginResult { error_code, .. } => println!("login: {error_code}"),
///         Event::UserMessageReceivedOutsideRoom { uid, message, .. } => println!("{uid}: {message}"),
///         other => println!("{}", other.to_json_line()),
///     }
/// }
/// # Ok(())
/// # }
/// ```
pub async fn connect(server: &str, app_id: &str) -> Result<(Engine, EventStream), ConnectError> {
    connect_with(server, app_id, &ConnectOptions::default()).await
}

/// How [`connect_with`] connects: which certificates it trusts, and whether it acknowledges the
/// messages the application takes from the [`EventStream`] by itself.
///
/// ```
/// use herald_client::{ConnectOptions, Tls};
///
/// // Acknowledge by hand, with `Engine::ack`, once each message is processed.
/// let options = ConnectOptions::default().tls(Tls::default()).auto_ack(false);
/// # let _ = options;
/// ```
#[derive(Clone)]
pub struct ConnectOptions {
    tls: Tls,
    auto_ack: bool,
    recovery: Recovery,
}

impl Default for ConnectOptions {
    /// Mozilla's roots; auto-ack on; a new [`Recovery`].
    fn default() -> Self {
        ConnectOptions {
            tls: Tls::default(),
            auto_ack: true,
            recovery: Recovery::default(),
        }
    }
}

impl ConnectOptions {
    /// Verifies a `https://` or `wss://` server's certificate with `tls`.
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = tls;
        self
    }

    /// Whether to acknowledge each message (the protocol's cumulative `ack` call) once the
    /// application has taken it from the [`EventStream`] (default: on). Off: nothing is
    /// acknowledged unless the application calls [`Engine::ack`], for example after storing the
    /// message. A business server that waits for acks (`X-Herald-Ack-Timeout-Ms`) learns from
    /// them which recipients processed its message.
    pub fn auto_ack(mut self, on: bool) -> Self {
        self.auto_ack = on;
        self
    }

    /// Keeps where this app's streams are in `recovery`, which outlives the connection: after a
    /// connection is lost, connect again with the same `recovery` and log in and join as
    /// before, and each login and join resumes its stream by itself. The server replays what
    /// was missed (within its window, `docs/delivery.md`) before anything new, with no
    /// duplicates, and says so with [`Event::Recovery`]; `recovered: false` there means some
    /// messages could not be recovered.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use herald_client::{connect_with, ConnectOptions, Recovery};
    ///
    /// let recovery = Recovery::default();
    /// let options = ConnectOptions::default().recovery(&recovery);
    /// let (engine, events) =
    ///     connect_with("http://127.0.0.1:8080", "herald-dev-app-000000001", &options).await?;
    /// engine.login("001…", "u1").await?;
    /// // … the connection drops; later, the same options:
    /// let (engine, events) =
    ///     connect_with("http://127.0.0.1:8080", "herald-dev-app-000000001", &options).await?;
    /// engine.login("001…", "u1").await?; // resumes u1's stream: missed messages arrive first
    /// # let _ = (engine, events);
    /// # Ok(())
    /// # }
    /// ```
    pub fn recovery(mut self, recovery: &Recovery) -> Self {
        self.recovery = recovery.clone();
        self
    }
}

/// As [`connect`], verifying a `https://` or `wss://` server's certificate with `tls` (which
/// plain `http://` ignores).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use herald_client::{connect_with_tls, Tls};
///
/// let tls = Tls::with_root_pem(&std::fs::read("herald-cert.pem")?)?;
/// let (engine, events) =
///     connect_with_tls("https://herald.test:8443", "herald-dev-app-000000001", &tls).await?;
/// # let _ = (engine, events);
/// # Ok(())
/// # }
/// ```
pub async fn connect_with_tls(
    server: &str,
    app_id: &str,
    tls: &Tls,
) -> Result<(Engine, EventStream), ConnectError> {
    connect_with(server, app_id, &ConnectOptions::default().tls(tls.clone())).await
}

/// As [`connect`], with [`ConnectOptions`]: the TLS trust, and auto-ack on or off.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use herald_client::{connect_with, ConnectOptions, Event};
///
/// let options = ConnectOptions::default().auto_ack(false);
/// let (engine, mut events) =
///     connect_with("http://127.0.0.1:8080", "herald-dev-app-000000001", &options).await?;
/// while let Some(event) = events.recv().await {
///     if let Some(msgid) = event.received_msgid() {
///         // … process the message, then:
///         engine.ack(msgid).await?;
///     }
/// }
/// # Ok(())
/// # }
/// ```
pub async fn connect_with(
    server: &str,
    app_id: &str,
    options: &ConnectOptions,
) -> Result<(Engine, EventStream), ConnectError> {
    let url = gateway_url(server, app_id)?;
    let connector = tokio_tungstenite::Connector::Rustls(options.tls.rustls());
    let connecting = tokio_tungstenite::connect_async_tls_with_config(
        url.as_str(),
        None,
        false,
        Some(connector),
    );
    let (socket, _response) = match connecting.await {
        Ok(ok) => ok,
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .map(|b| String::from_utf8_lossy(&b).trim_end().to_owned())
                .unwrap_or_default();
            return Err(ConnectError::Rejected { status, body });
        }
        Err(source) => {
            return Err(ConnectError::Transport {
                url,
                source: Box::new(source),
            })
        }
    };
    let (sink, stream) = socket.split();
    let (ended_tx, ended) = watch::channel(false);
    let shared = Arc::new(Shared {
        writer: tokio::sync::Mutex::new(Writer {
            sink,
            next_msgid: 1,
        }),
        waiting: std::sync::Mutex::new(Waiting::default()),
        recovery: options.recovery.clone(),
        ended,
        abort: Notify::new(),
        abandoned: Notify::new(),
    });
    let (events_tx, events) = mpsc::unbounded_channel();
    let taken = options.auto_ack.then(|| {
        let taken = Arc::new(Taken::default());
        tokio::spawn(ack_loop(shared.clone(), taken.clone()));
        taken
    });
    tokio::spawn(read_loop(stream, shared.clone(), events_tx, ended_tx));
    let engine = Engine {
        owner: Arc::new(Owner(shared)),
    };
    Ok((engine, EventStream { events, taken }))
}

/// With auto-ack: the highest msgid of a message the application has taken from the
/// [`EventStream`], and the wake-up of the task that acknowledges it.
#[derive(Default)]
struct Taken {
    msgid: AtomicU64,
    wake: Notify,
}

/// Acknowledges what the application has taken, one cumulative `ack` per wake-up (a burst taken
/// while an ack is being written is covered by the next one), until the connection ends.
async fn ack_loop(shared: Arc<Shared>, taken: Arc<Taken>) {
    let mut ended = shared.ended.clone();
    let mut acked = 0;
    loop {
        tokio::select! {
            () = taken.wake.notified() => {}
            _ = ended.wait_for(|e| *e) => return,
        }
        let msgid = taken.msgid.load(Ordering::Acquire);
        if msgid > acked {
            let text = serde_json::to_string(&Call::Ack { msgid }).unwrap_or_default();
            let mut writer = shared.writer.lock().await;
            if writer
                .write(&shared.ended, WsMessage::text(text))
                .await
                .is_err()
            {
                return;
            }
            acked = msgid;
        }
    }
}

/// `http://HOST:PORT[/prefix]` → `ws://HOST:PORT[/prefix]/ws?appId=…`.
fn gateway_url(server: &str, app_id: &str) -> Result<String, ConnectError> {
    let invalid = || ConnectError::InvalidServer(server.to_owned());
    let uri: http::Uri = server.parse().map_err(|_| invalid())?;
    let scheme = match uri.scheme_str() {
        Some("http" | "ws") => "ws",
        Some("https" | "wss") => "wss",
        _ => return Err(invalid()),
    };
    let authority = uri.authority().ok_or_else(invalid)?;
    if uri.query().is_some() {
        return Err(invalid());
    }
    let prefix = uri.path().trim_end_matches('/');
    let query = encode_query(&[("appId", app_id)]);
    Ok(format!(
        "{scheme}://{authority}{prefix}{GATEWAY_PATH}?{query}"
    ))
}

/// State shared by the engine's clones and the reader task.
struct Shared {
    writer: tokio::sync::Mutex<Writer>,
    waiting: std::sync::Mutex<Waiting>,
    /// Where this connection's streams are (shared with the connections before and after it).
    recovery: Recovery,
    /// Becomes true when the reader has ended (before it reports `onConnectionClosed`).
    ended: watch::Receiver<bool>,
    /// Tells the reader to stop waiting for the server's close answer.
    abort: Notify,
    /// Tells the reader that the last engine is gone, so nobody can use the connection any more.
    abandoned: Notify,
}

/// The write half of the socket and what must change in step with it.
struct Writer {
    sink: SplitSink<Socket, WsMessage>,
    /// The msgid of the next send. One sequence for every kind of send, from 1, as the vendor's
    /// SDK numbers them ("all P2P and P2Server messages share a single msgid sequence").
    next_msgid: u64,
}

impl Writer {
    /// Writes one frame, unless the connection has already ended.
    async fn write(
        &mut self,
        ended: &watch::Receiver<bool>,
        frame: WsMessage,
    ) -> Result<(), CallError> {
        if *ended.borrow() {
            return Err(CallError::Closed);
        }
        self.sink.send(frame).await.map_err(|e| match e {
            tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
                CallError::Closed
            }
            e => CallError::Transport(Box::new(e)),
        })
    }
}

/// Held by every clone of an [`Engine`]; when the last clone drops, the connection is closed
/// rather than kept open (and answering pings) with nobody able to use it.
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        // notify_one keeps the wake-up if the reader is busy with a frame right now.
        self.0.abandoned.notify_one();
    }
}

/// When the calls that are still waiting for their result were made, so the SDK can report the
/// `elapsed` the vendor's callbacks carry.
#[derive(Default)]
struct Waiting {
    login: Option<Instant>,
    joins: HashMap<String, Instant>,
    /// The uid of the last `login`, and whether it was refused for its token: what
    /// `update_login_token` needs to log in again by itself.
    last_login: Option<(String, bool)>,
    /// The uid this connection is logged in with, and the uid of each room it is in: whose
    /// stream a message belongs to.
    login_uid: Option<String>,
    room_uids: HashMap<String, String>,
}

impl Waiting {
    fn login_elapsed(&mut self) -> u64 {
        self.login.take().map_or(0, elapsed_ms)
    }

    fn join_elapsed(&mut self, room: &str) -> u64 {
        self.joins.remove(room).map_or(0, elapsed_ms)
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    since.elapsed().as_millis().try_into().unwrap_or(u64::MAX)
}

/// Makes calls on one connection, with the vendor's method names. Cloning is cheap (a reference
/// count); every clone drives the same connection.
///
/// Each call returns once its frame is written. Its result arrives later on the
/// [`EventStream`], as with the vendor's SDK: `login` → [`Event::LoginResult`], `logout` →
/// [`Event::Logout`], `join_room` → [`Event::RoomStateChanged`], `leave_room` →
/// [`Event::LeaveRoom`], `get_peer_online_status` → [`Event::GetPeerOnlineStatus`],
/// `set_server_params` → [`Event::ServerParamsSetResult`].
///
/// The `send_*` methods return the msgid they gave the message; the result event carries the
/// same msgid. Every send of an engine (and of its clones) draws from one sequence, 1, 2, 3, …,
/// whatever its kind, as the vendor's SDK does. A message over 64 KiB
/// (`herald_proto::client::MAX_CLIENT_MESSAGE_BYTES`) is answered with `EXCEED_MAX_LENGTH` (103);
/// one larger than the server's frame limit (`gateway.max_client_message_bytes`, 128 KiB by
/// default) makes the server close the connection with 1009, so check sizes you do not control.
///
/// Dropping the last clone closes the connection (code 1000) and ends the [`EventStream`].
#[derive(Clone)]
pub struct Engine {
    owner: Arc<Owner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("ended", &*self.shared().ended.borrow())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Logs in as `uid` to receive out-of-room messages (`SendUnicast`). `token` is a `001` token
    /// for this app and `uid`, with an empty room id.
    ///
    /// ```no_run
    /// # async fn run(engine: herald_client::Engine) -> Result<(), herald_client::CallError> {
    /// engine.login("001…", "u1").await?; // then wait for Event::LoginResult
    /// # Ok(())
    /// # }
    /// ```
    pub async fn login(&self, token: &str, uid: &str) -> Result<(), CallError> {
        {
            let mut waiting = self.waiting();
            waiting.login = Some(Instant::now());
            waiting.last_login = Some((uid.to_owned(), false));
        }
        self.send(&Call::Login {
            token: token.to_owned(),
            uid: uid.to_owned(),
            resume: self.shared().recovery.get("", uid),
        })
        .await
    }

    /// Gives the engine a new login token, as the vendor's `updateLoginToken`: if the last login
    /// was refused for its token (`-1000`), logs in again with the new one (answered by
    /// [`Event::LoginResult`]); otherwise there is nothing to send (a login stays valid once
    /// made) and this returns at once.
    pub async fn update_login_token(&self, token: &str) -> Result<(), CallError> {
        let retry = match &self.waiting().last_login {
            Some((uid, true)) => Some(uid.clone()),
            _ => None,
        };
        match retry {
            Some(uid) => self.login(token, &uid).await,
            None => Ok(()),
        }
    }

    /// Renews the token of a joined room (the vendor's `RTCRoom.updateToken`), typically after
    /// [`Event::TokenWillExpire`]. Silent on success; a token that is not valid for the room and
    /// uid is answered by [`Event::RoomStateChanged`] with state -1010. Without a renewal, the
    /// room is left when the token expires (state -1009).
    pub async fn update_token(&self, room_id: &str, token: &str) -> Result<(), CallError> {
        self.send(&Call::UpdateToken {
            room_id: room_id.to_owned(),
            token: token.to_owned(),
        })
        .await
    }

    /// Logs out; answered by [`Event::Logout`] with reason 0.
    pub async fn logout(&self) -> Result<(), CallError> {
        self.send(&Call::Logout).await
    }

    /// Joins `room_id` as `uid`, with a `001` token for that room (or `*`) and user. Answered by
    /// [`Event::RoomStateChanged`] (state 0 when joined).
    ///
    /// ```no_run
    /// # async fn run(engine: herald_client::Engine) -> Result<(), herald_client::CallError> {
    /// engine.join_room("r1", "u1", "001…").await?; // then wait for Event::RoomStateChanged
    /// # Ok(())
    /// # }
    /// ```
    pub async fn join_room(&self, room_id: &str, uid: &str, token: &str) -> Result<(), CallError> {
        self.waiting()
            .joins
            .insert(room_id.to_owned(), Instant::now());
        self.send(&Call::JoinRoom {
            room_id: room_id.to_owned(),
            uid: uid.to_owned(),
            token: token.to_owned(),
            resume: self.shared().recovery.get(room_id, uid),
        })
        .await
    }

    /// Leaves `room_id`; answered by [`Event::LeaveRoom`].
    pub async fn leave_room(&self, room_id: &str) -> Result<(), CallError> {
        self.send(&Call::LeaveRoom {
            room_id: room_id.to_owned(),
        })
        .await
    }

    /// Asks whether `peer_user_id` is logged in; answered by [`Event::GetPeerOnlineStatus`]
    /// (status 1 online, 0 offline).
    pub async fn get_peer_online_status(&self, peer_user_id: &str) -> Result<(), CallError> {
        self.send(&Call::GetPeerOnlineStatus {
            peer_user_id: peer_user_id.to_owned(),
        })
        .await
    }

    /// Sets where [`Engine::send_server_message`] goes: the business server's `url`, and a
    /// `signature` it can check (any non-empty string; it is sent with every message). Call it
    /// after logging in. Answered by [`Event::ServerParamsSetResult`]: 200 when set, 105 when not
    /// logged in, 106 when the signature is empty or the app does not allow the URL.
    ///
    /// ```no_run
    /// # async fn run(engine: herald_client::Engine) -> Result<(), herald_client::CallError> {
    /// engine.set_server_params("my-signature", "https://biz.example/rtc/messages").await?;
    /// // then wait for Event::ServerParamsSetResult { error: 200 }
    /// let msgid = engine.send_server_message(r#"{"op":"ping"}"#).await?;
    /// // Event::ServerMessageSendResult { msgid, error: 0, message } carries the answer.
    /// # let _ = msgid;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn set_server_params(&self, signature: &str, url: &str) -> Result<(), CallError> {
        self.send(&Call::SetServerParams {
            signature: signature.to_owned(),
            url: url.to_owned(),
        })
        .await
    }

    /// Sends a text message to the logged-in user `uid`, from this connection's login; returns
    /// its msgid. Answered by [`Event::UserMessageSendResultOutsideRoom`]; `uid` receives
    /// [`Event::UserMessageReceivedOutsideRoom`].
    ///
    /// ```no_run
    /// # async fn run(engine: herald_client::Engine) -> Result<(), herald_client::CallError> {
    /// let msgid = engine.send_user_message_outside_room("u2", "hello").await?;
    /// // then wait for Event::UserMessageSendResultOutsideRoom { msgid, error: 0 }
    /// # let _ = msgid;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn send_user_message_outside_room(
        &self,
        uid: &str,
        message: &str,
    ) -> Result<u64, CallError> {
        self.send_frame(SendOp::UserOutsideRoom, uid, "", Payload::Text(message))
            .await
    }

    /// The binary form of [`Engine::send_user_message_outside_room`]; `uid` receives
    /// [`Event::UserBinaryMessageReceivedOutsideRoom`].
    pub async fn send_user_binary_message_outside_room(
        &self,
        uid: &str,
        message: &[u8],
    ) -> Result<u64, CallError> {
        self.send_frame(SendOp::UserOutsideRoom, uid, "", Payload::Binary(message))
            .await
    }

    /// Sends a text message to `uid` in `room_id`, a room this connection has joined, from its
    /// user id in that room; returns its msgid. Answered by [`Event::UserMessageSendResult`];
    /// `uid` receives [`Event::UserMessageReceived`].
    pub async fn send_user_message(
        &self,
        room_id: &str,
        uid: &str,
        message: &str,
    ) -> Result<u64, CallError> {
        self.send_frame(SendOp::UserInRoom, uid, room_id, Payload::Text(message))
            .await
    }

    /// The binary form of [`Engine::send_user_message`]; `uid` receives
    /// [`Event::UserBinaryMessageReceived`].
    pub async fn send_user_binary_message(
        &self,
        room_id: &str,
        uid: &str,
        message: &[u8],
    ) -> Result<u64, CallError> {
        self.send_frame(SendOp::UserInRoom, uid, room_id, Payload::Binary(message))
            .await
    }

    /// Sends a text message to every other member of `room_id`, a room this connection has
    /// joined; returns its msgid. Answered by [`Event::RoomMessageSendResult`] (200 on success);
    /// the members receive [`Event::RoomMessageReceived`], the sender does not.
    pub async fn send_room_message(&self, room_id: &str, message: &str) -> Result<u64, CallError> {
        self.send_frame(SendOp::Room, "", room_id, Payload::Text(message))
            .await
    }

    /// The binary form of [`Engine::send_room_message`]; the members receive
    /// [`Event::RoomBinaryMessageReceived`].
    pub async fn send_room_binary_message(
        &self,
        room_id: &str,
        message: &[u8],
    ) -> Result<u64, CallError> {
        self.send_frame(SendOp::Room, "", room_id, Payload::Binary(message))
            .await
    }

    /// Sends a text message to the business server set with [`Engine::set_server_params`];
    /// returns its msgid. Herald POSTs it there and answers with
    /// [`Event::ServerMessageSendResult`], which carries the business server's response body.
    pub async fn send_server_message(&self, message: &str) -> Result<u64, CallError> {
        self.send_frame(SendOp::Server, "", "", Payload::Text(message))
            .await
    }

    /// The binary form of [`Engine::send_server_message`] (Herald posts it base64-encoded, with
    /// `"binary": true`).
    pub async fn send_server_binary_message(&self, message: &[u8]) -> Result<u64, CallError> {
        self.send_frame(SendOp::Server, "", "", Payload::Binary(message))
            .await
    }

    /// Acknowledges every message up to and including `msgid` (the protocol's cumulative `ack`
    /// call): the application has processed them. Needed only with auto-ack off
    /// ([`ConnectOptions::auto_ack`]); an ack never moves back, and the server counts one beyond
    /// the last message it sent as that message. Silent.
    pub async fn ack(&self, msgid: u64) -> Result<(), CallError> {
        self.send(&Call::Ack { msgid }).await
    }

    /// Sends any call of the protocol, as a text frame. The call methods above are this plus the
    /// SDK's timing; the `send_*` methods write numbered send frames instead.
    pub async fn send(&self, call: &Call) -> Result<(), CallError> {
        // Serialising a plain enum of strings cannot fail.
        let text = serde_json::to_string(call).unwrap_or_default();
        let shared = self.shared();
        shared
            .writer
            .lock()
            .await
            .write(&shared.ended, WsMessage::text(text))
            .await
    }

    /// Numbers a message with the next msgid and writes it as a send frame.
    async fn send_frame(
        &self,
        op: SendOp,
        to: &str,
        room_id: &str,
        payload: Payload<'_>,
    ) -> Result<u64, CallError> {
        let (binary, payload) = match payload {
            Payload::Text(t) => (false, t.as_bytes()),
            Payload::Binary(b) => (true, b),
        };
        let shared = self.shared();
        let mut writer = shared.writer.lock().await;
        let msgid = writer.next_msgid;
        let frame = SendFrame {
            op,
            msgid,
            to: to.to_owned(),
            room_id: room_id.to_owned(),
            binary,
            payload: Bytes::copy_from_slice(payload),
        };
        writer
            .write(&shared.ended, WsMessage::Binary(frame.encode()))
            .await?;
        writer.next_msgid += 1;
        Ok(msgid)
    }

    /// Closes the connection (code 1000) and waits until it has ended: the [`EventStream`] then
    /// ends with [`Event::ConnectionClosed`]. If the server does not answer the close within five
    /// seconds, the connection is dropped. Calling it again, or after the server closed, only waits.
    pub async fn close(&self) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let shared = self.shared();
        // A failure here means the connection is already ending; the reader reports it.
        let _ = shared
            .writer
            .lock()
            .await
            .write(&shared.ended, WsMessage::Close(Some(frame)))
            .await;
        let mut ended = self.shared().ended.clone();
        if tokio::time::timeout(CLOSE_TIMEOUT, ended.wait_for(|e| *e))
            .await
            .is_err()
        {
            self.shared().abort.notify_one();
            let _ = ended.wait_for(|e| *e).await;
        }
    }

    /// True once the connection has ended.
    pub fn is_closed(&self) -> bool {
        *self.shared().ended.borrow()
    }

    fn shared(&self) -> &Shared {
        &self.owner.0
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        // The lock guards two timestamps and is never held across an await; a panic while holding
        // it cannot leave them inconsistent, so poisoning is ignored.
        self.shared()
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// The message of a send, with its kind: the protocol's `BINARY` flag.
enum Payload<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

/// The events of one connection, in order; ends after [`Event::ConnectionClosed`].
///
/// Also a [`Stream`] of [`Event`]s. The queue behind it is unbounded so that the connection never
/// waits for the application; read it steadily. With auto-ack (the default), taking a message
/// from here is what acknowledges it.
pub struct EventStream {
    events: mpsc::UnboundedReceiver<Event>,
    taken: Option<Arc<Taken>>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("auto_ack", &self.taken.is_some())
            .finish_non_exhaustive()
    }
}

impl EventStream {
    /// The next event, or `None` after [`Event::ConnectionClosed`].
    pub async fn recv(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let polled = self.events.poll_recv(cx);
        if let (Poll::Ready(Some(e)), Some(taken)) = (&polled, &self.taken) {
            if let Some(msgid) = e.received_msgid() {
                taken.msgid.fetch_max(msgid, Ordering::Release);
                // One stored wake-up at most: the messages taken before the ack task runs
                // share its one ack.
                taken.wake.notify_one();
            }
        }
        polled
    }
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.poll_event(cx)
    }
}

/// How the connection ended.
struct Ending {
    code: Option<u16>,
    reason: String,
}

/// Reads frames until the connection ends, then reports [`Event::ConnectionClosed`].
async fn read_loop(
    mut stream: SplitStream<Socket>,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<Event>,
    ended: watch::Sender<bool>,
) {
    // The application may drop its EventStream; the connection still runs for its engine.
    let emit = |e: Event| {
        let _ = events.send(e);
    };
    // The server's close frame, once one has arrived; the stream ends right after.
    let mut closed_by_server: Option<Ending> = None;
    let ending = loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            () = shared.abort.notified() => break Ending {
                code: None,
                reason: "the server did not answer the close in time".to_owned(),
            },
            () = shared.abandoned.notified() => {
                let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
                let close = async { shared.writer.lock().await.sink.send(WsMessage::Close(Some(frame))).await };
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
                break Ending { code: Some(1000), reason: "every Engine was dropped".to_owned() };
            }
        };
        match frame {
            None => {
                break closed_by_server.unwrap_or_else(|| Ending {
                    code: None,
                    reason: "the connection ended without a close frame".to_owned(),
                })
            }
            Some(Err(e)) => {
                break closed_by_server.unwrap_or_else(|| Ending {
                    code: None,
                    reason: e.to_string(),
                })
            }
            Some(Ok(WsMessage::Text(text))) => {
                // An event this SDK does not know is skipped: newer servers may add events.
                if let Ok(e) = serde_json::from_str::<herald_proto::client::Event>(&text) {
                    match control_event(e, &shared) {
                        Ok((e, resumed)) => {
                            emit(e);
                            resumed.into_iter().for_each(emit);
                        }
                        Err(why) => break protocol_error(&shared, why).await,
                    }
                }
            }
            Some(Ok(WsMessage::Binary(frame))) => match ReceivedMessage::decode(frame) {
                Ok(m) => {
                    if let Some(pos) = m.pos {
                        shared.received(m.room_id.as_deref().unwrap_or(""), pos);
                    }
                    emit(Event::from_message(m))
                }
                // The protocol says to reject such a frame; msgids after it could not be
                // trusted, so the connection ends here.
                Err(e) => {
                    let why = format!("invalid message frame from the server: {e}");
                    break protocol_error(&shared, why).await;
                }
            },
            Some(Ok(WsMessage::Close(frame))) => {
                closed_by_server = Some(match frame {
                    Some(f) => Ending {
                        code: Some(f.code.into()),
                        reason: f.reason.to_string(),
                    },
                    None => Ending {
                        code: None,
                        reason: String::new(),
                    },
                });
            }
            // Pings are answered by tungstenite itself; pongs need nothing.
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {}
        }
    };
    // Calls fail from now on, before the application learns that the connection has closed.
    let _ = ended.send(true);
    emit(Event::ConnectionClosed {
        code: ending.code,
        reason: ending.reason,
    });
}

/// Closes the connection with 1002 because the server broke the protocol; `why` becomes the
/// reason of [`Event::ConnectionClosed`].
async fn protocol_error(shared: &Shared, why: String) -> Ending {
    let frame = CloseFrame {
        code: CloseCode::Protocol,
        reason: "protocol error".into(),
    };
    let close = async {
        let mut writer = shared.writer.lock().await;
        writer.sink.send(WsMessage::Close(Some(frame))).await
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
    Ending {
        code: Some(CloseCode::Protocol.into()),
        reason: why,
    }
}

impl Shared {
    /// A message arrived at `pos` of the stream of `room` (empty: the login's).
    fn received(&self, room: &str, pos: StreamPos) {
        let waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let uid = match room {
            "" => waiting.login_uid.as_deref(),
            room => waiting.room_uids.get(room).map(String::as_str),
        };
        if let Some(uid) = uid {
            self.recovery.set(room, uid, Some(pos));
        }
    }

    /// A login or join was answered with its stream: the starting point of what this
    /// connection will receive. After a recovered resume the replayed messages move it on
    /// themselves; otherwise nothing before the stream's last position will come.
    fn opened(&self, room: &str, uid: &str, stream: StreamState) -> Option<Event> {
        if stream.recovered != Some(true) {
            let head = StreamPos {
                epoch: stream.epoch,
                position: stream.position,
            };
            self.recovery.set(room, uid, Some(head));
        }
        stream.recovered.map(|recovered| Event::Recovery {
            room_id: room.to_owned(),
            uid: uid.to_owned(),
            recovered,
            replayed: stream.replayed,
        })
    }
}

/// Turns a control event of the wire into the SDK's: adds what only the SDK can measure, and
/// decodes what the wire carries as text; with it, the [`Event::Recovery`] that follows a
/// resumed login or join. `Err` says how the event breaks the protocol.
fn control_event(
    e: herald_proto::client::Event,
    shared: &Shared,
) -> Result<(Event, Option<Event>), String> {
    use herald_proto::client::{login_error, logout_reason, room_state, Event as Wire};
    let mut waiting = shared.waiting.lock().unwrap_or_else(|p| p.into_inner());
    let mut resumed = None;
    let event = match e {
        Wire::LoginResult {
            uid,
            error_code,
            stream,
        } => {
            if let Some((last, refused)) = &mut waiting.last_login {
                if *last == uid {
                    *refused = error_code == login_error::INVALID_TOKEN;
                }
            }
            if error_code == login_error::SUCCESS {
                waiting.login_uid = Some(uid.clone());
                resumed = stream.and_then(|s| shared.opened("", &uid, s));
            }
            Event::LoginResult {
                uid,
                error_code,
                elapsed: waiting.login_elapsed(),
            }
        }
        Wire::Logout { reason } => {
            if let Some(uid) = waiting.login_uid.take() {
                // A login ended on purpose has no stream left to resume.
                if reason == logout_reason::LOGOUT {
                    shared.recovery.set("", &uid, None);
                }
            }
            Event::Logout { reason }
        }
        Wire::RoomStateChanged {
            room_id,
            uid,
            state,
            stream,
        } => {
            let elapsed = waiting.join_elapsed(&room_id);
            if state == room_state::JOINED {
                waiting.room_uids.insert(room_id.clone(), uid.clone());
                resumed = stream.and_then(|s| shared.opened(&room_id, &uid, s));
            } else if waiting.room_uids.get(&room_id) == Some(&uid) {
                // Out of the room: kicked or expired ends the stream; a membership taken over
                // by another connection goes on there.
                waiting.room_uids.remove(&room_id);
                if state != room_state::DUPLICATE_LOGIN {
                    shared.recovery.set(&room_id, &uid, None);
                }
            }
            Event::RoomStateChanged {
                extra_info: serde_json::json!({"elapsed": elapsed, "join_type": 0}).to_string(),
                room_id,
                uid,
                state,
            }
        }
        Wire::LeaveRoom { room_id } => {
            if let Some(uid) = waiting.room_uids.remove(&room_id) {
                shared.recovery.set(&room_id, &uid, None);
            }
            Event::LeaveRoom { room_id }
        }
        Wire::Error {
            error_code,
            message,
        } => Event::Error {
            error_code,
            message,
        },
        Wire::UserJoined { room_id, uid } => Event::UserJoined { room_id, uid },
        Wire::UserLeave {
            room_id,
            uid,
            reason,
        } => Event::UserLeave {
            room_id,
            uid,
            reason,
        },
        Wire::UserMessageSendResultOutsideRoom { msgid, error } => {
            Event::UserMessageSendResultOutsideRoom { msgid, error }
        }
        Wire::UserMessageSendResult {
            room_id,
            msgid,
            error,
        } => Event::UserMessageSendResult {
            room_id,
            msgid,
            error,
        },
        Wire::RoomMessageSendResult {
            room_id,
            msgid,
            error,
        } => Event::RoomMessageSendResult {
            room_id,
            msgid,
            error,
        },
        Wire::ServerMessageSendResult {
            msgid,
            error,
            message,
        } => Event::ServerMessageSendResult {
            msgid,
            error,
            message: base64::engine::general_purpose::STANDARD
                .decode(&message)
                .map_err(|e| format!("onServerMessageSendResult: message is not base64: {e}"))?
                .into(),
        },
        Wire::GetPeerOnlineStatus {
            peer_user_id,
            status,
        } => Event::GetPeerOnlineStatus {
            peer_user_id,
            status,
        },
        Wire::ServerParamsSetResult { error } => Event::ServerParamsSetResult { error },
        Wire::TokenWillExpire { room_id } => Event::TokenWillExpire { room_id },
    };
    Ok((event, resumed))
}

/// Where an app's streams are, kept across connections so that a new connection resumes them
/// (see [`ConnectOptions::recovery`]): for each login and room membership, the epoch and position of
/// the last message received. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    positions: Arc<std::sync::Mutex<HashMap<(String, String), StreamPos>>>,
}

impl Recovery {
    /// Where the stream of `uid` in `room` (empty: `uid`'s login) is, if known.
    pub fn get(&self, room: &str, uid: &str) -> Option<StreamPos> {
        let positions = self.positions.lock().unwrap_or_else(|p| p.into_inner());
        positions.get(&(room.to_owned(), uid.to_owned())).copied()
    }

    fn set(&self, room: &str, uid: &str, pos: Option<StreamPos>) {
        let mut positions = self.positions.lock().unwrap_or_else(|p| p.into_inner());
        let key = (room.to_owned(), uid.to_owned());
        match pos {
            Some(p) => positions.insert(key, p),
            None => positions.remove(&key),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls() {
        let url = |s| gateway_url(s, "app@1").map_err(|e| e.to_string());
        assert_eq!(
            url("http://127.0.0.1:8080").unwrap(),
            "ws://127.0.0.1:8080/ws?appId=app%401"
        );
        assert_eq!(url("http://h:1/").unwrap(), "ws://h:1/ws?appId=app%401");
        assert_eq!(
            url("https://h/herald/").unwrap(),
            "wss://h/herald/ws?appId=app%401"
        );
        assert_eq!(url("ws://h:1").unwrap(), "ws://h:1/ws?appId=app%401");
        for bad in ["127.0.0.1:8080", "ftp://h", "http://h/?x=1", "", "http://"] {
            assert!(url(bad).is_err(), "{bad}");
        }
    }
}
