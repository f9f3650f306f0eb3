//! The client connection: [`connect`], the [`Engine`] that makes calls, and the [`EventStream`]
//! that reports what happened.
//!
//! One background task owns the socket's read half. It decodes every frame into an [`Event`] and
//! pushes it onto an unbounded channel, so reading never waits for the application: a slow
//! consumer costs memory here instead of stalling the socket, which the server would otherwise
//! cut off as a slow consumer (close 4001). Pings are answered by tungstenite as frames are read.
//!
//! Calls go out through the write half, shared by every clone of the [`Engine`] behind an async
//! mutex (a send can wait on the socket, so a synchronous lock would not do).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, Stream, StreamExt};
use herald_proto::client::{Call, ReceivedMessage, GATEWAY_PATH};
use herald_proto::sign::encode_query;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::event::Event;

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
    /// The TCP connection or the WebSocket handshake failed.
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
/// connection goes to `ws://HOST:PORT/ws?appId=…` (`https` becomes `wss`, which needs a TLS-enabled
/// build of tokio-tungstenite; this crate enables none). Returns the [`Engine`] for calls and the
/// [`EventStream`] of their results and of received messages.
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
    let url = gateway_url(server, app_id)?;
    let (socket, _response) = match tokio_tungstenite::connect_async(url.as_str()).await {
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
        sink: tokio::sync::Mutex::new(sink),
        waiting: std::sync::Mutex::new(Waiting::default()),
        ended,
        abort: Notify::new(),
        abandoned: Notify::new(),
    });
    let (events_tx, events) = mpsc::unbounded_channel();
    tokio::spawn(read_loop(stream, shared.clone(), events_tx, ended_tx));
    let engine = Engine {
        owner: Arc::new(Owner(shared)),
    };
    Ok((engine, EventStream { events }))
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
    sink: tokio::sync::Mutex<SplitSink<Socket, WsMessage>>,
    waiting: std::sync::Mutex<Waiting>,
    /// Becomes true when the reader has ended (before it reports `onConnectionClosed`).
    ended: watch::Receiver<bool>,
    /// Tells the reader to stop waiting for the server's close answer.
    abort: Notify,
    /// Tells the reader that the last engine is gone, so nobody can use the connection any more.
    abandoned: Notify,
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
/// [`Event::LeaveRoom`].
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
        self.waiting().login = Some(Instant::now());
        self.send(&Call::Login {
            token: token.to_owned(),
            uid: uid.to_owned(),
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

    /// Sends any call of the protocol. The named methods above are this plus the SDK's timing.
    pub async fn send(&self, call: &Call) -> Result<(), CallError> {
        // Serialising a plain enum of strings cannot fail.
        let text = serde_json::to_string(call).unwrap_or_default();
        let mut sink = self.shared().sink.lock().await;
        if *self.shared().ended.borrow() {
            return Err(CallError::Closed);
        }
        sink.send(WsMessage::text(text)).await.map_err(|e| match e {
            tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
                CallError::Closed
            }
            e => CallError::Transport(Box::new(e)),
        })
    }

    /// Closes the connection (code 1000) and waits until it has ended: the [`EventStream`] then
    /// ends with [`Event::ConnectionClosed`]. If the server does not answer the close within five
    /// seconds, the connection is dropped. Calling it again, or after the server closed, only waits.
    pub async fn close(&self) {
        {
            let mut sink = self.shared().sink.lock().await;
            if !*self.shared().ended.borrow() {
                let frame = CloseFrame {
                    code: CloseCode::Normal,
                    reason: "".into(),
                };
                // A failure here means the connection is already ending; the reader reports it.
                let _ = sink.send(WsMessage::Close(Some(frame))).await;
            }
        }
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

/// The events of one connection, in order; ends after [`Event::ConnectionClosed`].
///
/// Also a [`Stream`] of [`Event`]s. The queue behind it is unbounded so that the connection never
/// waits for the application; read it steadily.
#[derive(Debug)]
pub struct EventStream {
    events: mpsc::UnboundedReceiver<Event>,
}

impl EventStream {
    /// The next event, or `None` after [`Event::ConnectionClosed`].
    pub async fn recv(&mut self) -> Option<Event> {
        self.events.recv().await
    }
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.events.poll_recv(cx)
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
                let close = async { shared.sink.lock().await.send(WsMessage::Close(Some(frame))).await };
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
                    emit(control_event(e, &shared));
                }
            }
            Some(Ok(WsMessage::Binary(frame))) => match ReceivedMessage::decode(frame) {
                Ok(m) => emit(Event::from_message(m)),
                Err(e) => {
                    // The protocol says to reject such a frame; msgids after it could not be
                    // trusted, so the connection ends here.
                    let frame = CloseFrame {
                        code: CloseCode::Protocol,
                        reason: "invalid message frame".into(),
                    };
                    let _ = shared
                        .sink
                        .lock()
                        .await
                        .send(WsMessage::Close(Some(frame)))
                        .await;
                    break Ending {
                        code: Some(CloseCode::Protocol.into()),
                        reason: format!("invalid message frame from the server: {e}"),
                    };
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

/// Adds what only the SDK can measure to a control event.
fn control_event(e: herald_proto::client::Event, shared: &Shared) -> Event {
    use herald_proto::client::Event as Wire;
    let mut waiting = shared.waiting.lock().unwrap_or_else(|p| p.into_inner());
    match e {
        Wire::LoginResult { uid, error_code } => Event::LoginResult {
            uid,
            error_code,
            elapsed: waiting.login_elapsed(),
        },
        Wire::Logout { reason } => Event::Logout { reason },
        Wire::RoomStateChanged {
            room_id,
            uid,
            state,
        } => {
            let elapsed = waiting.join_elapsed(&room_id);
            Event::RoomStateChanged {
                extra_info: serde_json::json!({"elapsed": elapsed, "join_type": 0}).to_string(),
                room_id,
                uid,
                state,
            }
        }
        Wire::LeaveRoom { room_id } => Event::LeaveRoom { room_id },
        Wire::Error {
            error_code,
            message,
        } => Event::Error {
            error_code,
            message,
        },
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
