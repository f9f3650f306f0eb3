//! The client gateway: `GET /ws?appId=…` upgraded to a WebSocket, then one reader and one writer
//! per connection.
//!
//! The reader turns frames into calls on the hub and keeps the heartbeat; the writer drains the
//! connection's [`ConnOutbox`] and writes everything queued in one vectored write per wake-up, with
//! each message's shared body written by reference. Whichever side ends first ends the other.
//!
//! The connection loop is generic over its [`Transport`]: plain TCP (here) keeps its
//! readiness-based read that holds no buffer while idle and its direct vectored writes; TLS
//! (`crate::tls`) brings its own implementation.

use std::future::Future;
use std::io::{self, IoSlice};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use herald_core::hub::SessionId;
use herald_core::hub::{Claim, ClientSent, ServerParams};
use herald_core::time::Timestamp;
use herald_proto::client::{
    close_code, error_code, room_send_result, send_result, Call, Event, SendFrame, SendOp,
};
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::metrics::DropReason;
use crate::outbox::{Closing, ConnOutbox, Item};
use crate::tls::TlsConn;
use crate::ws::{self, FrameReader, Incoming as WsIncoming, ReadConfig};
use crate::Shared;

/// How long a closed connection keeps reading, so its close frame is not lost to a reset.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Bodies up to this size are copied into the write buffer; larger ones are written by reference.
const INLINE_BODY_MAX: usize = 1024;

/// Answers an upgrade request: 101 and a spawned connection, or a plain error response.
pub(crate) fn upgrade(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let plain = |status: StatusCode, msg: &'static str| {
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Full::new(Bytes::from_static(msg.as_bytes())))
            .unwrap_or_default()
    };
    let h = req.headers();
    let has = |name: header::HeaderName, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if req.method() != http::Method::GET
        || !has(header::CONNECTION, "upgrade")
        || !has(header::UPGRADE, "websocket")
    {
        return plain(
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade is expected here\n",
        );
    }
    if h.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return Response::builder()
            .status(StatusCode::UPGRADE_REQUIRED)
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .body(Full::new(Bytes::from_static(
                b"WebSocket version 13 is required\n",
            )))
            .unwrap_or_default();
    }
    let Some(key) = h
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
    else {
        return plain(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing\n");
    };
    let accept = ws::accept_key(key);
    let query = crate::api::parse_query(req.uri().query().unwrap_or(""));
    let app = query
        .iter()
        .find(|(k, _)| k == "appId")
        .map(|(_, v)| v.clone());
    let Some(app) = app.filter(|a| shared.registry.app(a).is_some()) else {
        return plain(StatusCode::NOT_FOUND, "unknown or missing appId\n");
    };

    // The connection's place under the connection limits lives as long as the WebSocket does.
    let slot = req
        .extensions()
        .get::<Arc<crate::limits::ConnectionSlot>>()
        .cloned();
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let _slot = slot;
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => return run(shared, app, parts.io.into_inner(), parts.read_buf).await,
            Err(upgraded) => upgraded,
        };
        match upgraded.downcast::<TokioIo<TlsConn>>() {
            // A task of its own: awaited here, the TLS connection's larger future would enlarge
            // this task, and so every plain connection, to its size.
            Ok(parts) => {
                tokio::spawn(run(shared, app, parts.io.into_inner(), parts.read_buf));
            }
            Err(_) => tracing::error!("upgraded connection is neither TCP nor TLS"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Full::new(Bytes::new()))
        .unwrap_or_default()
}

/// What a client connection runs on, as the connection loop uses it: split into a read half that
/// decodes frames and a write half that writes batches of chunks.
pub(crate) trait Transport: Send + 'static {
    /// The read half.
    type Read: AsyncRead + Unpin + Send;
    /// The write half.
    type Write: AsyncWrite + Unpin + Send;

    /// Splits the stream, so the reader and the writer each own their half.
    fn split(self) -> (Self::Read, Self::Write);

    /// Reads until a message or control frame is complete. Cancel-safe: a heartbeat timeout drops
    /// it and the next call goes on where it stopped.
    fn read_frame<'a>(
        rd: &'a mut Self::Read,
        reader: &'a mut FrameReader,
    ) -> impl Future<Output = Result<WsIncoming, ws::WsError>> + Send + 'a;

    /// Writes every chunk, all the way to the socket.
    fn write_chunks<'a>(
        wr: &'a mut Self::Write,
        chunks: &'a mut Vec<Bytes>,
    ) -> impl Future<Output = io::Result<()>> + Send + 'a;
}

impl Transport for TcpStream {
    type Read = OwnedReadHalf;
    type Write = OwnedWriteHalf;

    fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        let _ = self.set_nodelay(true);
        self.into_split()
    }

    fn read_frame<'a>(
        rd: &'a mut OwnedReadHalf,
        reader: &'a mut FrameReader,
    ) -> impl Future<Output = Result<WsIncoming, ws::WsError>> + Send + 'a {
        reader.read_tcp(rd)
    }

    fn write_chunks<'a>(
        wr: &'a mut OwnedWriteHalf,
        chunks: &'a mut Vec<Bytes>,
    ) -> impl Future<Output = io::Result<()>> + Send + 'a {
        write_all(wr, chunks)
    }
}

/// Runs one connection to its end.
async fn run<T: Transport>(shared: Arc<Shared>, app: String, stream: T, already_read: Bytes) {
    let (mut rd, wr) = stream.split();
    let g = &shared.config.gateway;
    let outbox = Arc::new(ConnOutbox::new(g.outbound_queue_bytes));
    let Some(session) = shared.hub.connect(&app, outbox.clone()) else {
        return;
    };
    let _live = Live::new(&shared.live_connections);
    shared.metrics.connection_opened();
    tracing::debug!(app, session, "connection opened");
    let mut reader = FrameReader::new(ReadConfig {
        initial_buffer: g.read_buffer_bytes,
        max_message: g.max_client_message_bytes,
    });
    reader.feed(&already_read);
    // It is a view of hyper's whole read buffer (8 KiB): holding it for the connection's life
    // would keep that buffer allocated while the connection is idle.
    drop(already_read);

    // The writer lives in this block only: an `async fn` reserves, for its whole life, room for
    // the largest set of locals alive across one await, and the writer beside the linger's
    // buffer below would be the largest (docs/performance.md).
    {
        let writer = write_loop::<T>(wr, outbox.clone(), shared.clone());
        tokio::pin!(writer);
        let mut shutdown = shared.shutdown.clone();
        tokio::select! {
            closing = read_loop::<T>(&shared, &app, session, &outbox, &mut reader, &mut rd) => {
                tracing::debug!(app, session, code = closing.code, reason = closing.reason, "closing");
                outbox.close(closing);
                let _ = tokio::time::timeout(g.write_timeout(), &mut writer).await;
            }
            () = &mut writer => {}
            () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {
                outbox.close(Closing { code: ws::GOING_AWAY, reason: "server shutting down", discard: false });
                let _ = tokio::time::timeout(g.write_timeout(), &mut writer).await;
            }
        }
    }
    drop(reader);
    // Messages accepted for this connection that it will never get: cut off as a slow consumer,
    // or still queued when the connection ended.
    let reason = match outbox.closing().map(|c| c.code) {
        Some(close_code::SLOW_CONSUMER) => DropReason::SlowConsumer,
        _ => DropReason::ConnectionClosed,
    };
    shared
        .metrics
        .dropped(reason, outbox.undelivered_messages());
    shared.hub.disconnect(&app, session, shared.clock.now());
    shared.metrics.connection_closed();
    tracing::debug!(app, session, "connection closed");
    // Closing a socket with unread input makes the kernel send a reset, which can destroy the
    // close frame before the peer reads it: read (and discard) until the peer closes, briefly.
    // On the heap, and only now: a buffer in the task would cost every idle connection.
    let mut sink = vec![0u8; 1024];
    let _ = tokio::time::timeout(LINGER, async {
        while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Counts a connection as live for as long as it exists, so shutdown can wait for it.
pub(crate) struct Live<'a>(&'a tokio::sync::watch::Sender<usize>);

impl<'a> Live<'a> {
    pub(crate) fn new(count: &'a tokio::sync::watch::Sender<usize>) -> Self {
        count.send_modify(|n| *n += 1);
        Live(count)
    }
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Reads calls until the connection must end, and says how.
async fn read_loop<T: Transport>(
    shared: &Shared,
    app: &str,
    session: SessionId,
    outbox: &Arc<ConnOutbox>,
    reader: &mut FrameReader,
    rd: &mut T::Read,
) -> Closing {
    let g = &shared.config.gateway;
    let mut last_heard = Instant::now();
    loop {
        // Room tokens that need a warning or have expired wake the connection up on time.
        let token_deadline = shared.hub.token_deadline(app, session).map(|secs| {
            let now = shared.clock.now().micros();
            Duration::from_micros((secs * 1_000_000).saturating_sub(now))
        });
        let read = tokio::time::timeout(g.heartbeat_interval(), T::read_frame(rd, reader));
        let next = tokio::select! {
            r = read => r,
            () = tokio::time::sleep(token_deadline.unwrap_or_default()), if token_deadline.is_some() => {
                shared.hub.expire_tokens(app, session, shared.clock.now());
                continue;
            }
        };
        let frame = match next {
            Err(_) => {
                if last_heard.elapsed() >= g.heartbeat_timeout() {
                    return Closing {
                        code: close_code::HEARTBEAT_TIMEOUT,
                        reason: "heartbeat timeout",
                        discard: true,
                    };
                }
                outbox.ping();
                continue;
            }
            Ok(Err(e)) => {
                let (code, discard) = match e.close_code() {
                    Some(code) => (code, false),
                    None => (ws::NORMAL, true),
                };
                return Closing {
                    code,
                    reason: "protocol error",
                    discard,
                };
            }
            Ok(Ok(frame)) => frame,
        };
        last_heard = Instant::now();
        // Boxed: a handler's state (up to a kilobyte, with the cluster's calls) would otherwise
        // be reserved in every connection's task while it idles.
        match frame {
            WsIncoming::Text(text) => {
                Box::pin(handle_call(shared, app, session, outbox, &text)).await;
            }
            WsIncoming::Binary(frame) => {
                Box::pin(handle_send(shared, app, session, outbox, frame)).await;
            }
            WsIncoming::Ping(p) => outbox.pong(p),
            WsIncoming::Pong(_) => {}
            WsIncoming::Close(_) => {
                return Closing {
                    code: ws::NORMAL,
                    reason: "",
                    discard: false,
                }
            }
        }
    }
}

/// Posts a `sendServerMessage` to the business server in the background and answers
/// `onServerMessageSendResult` when it replies. The number of posts in flight is bounded for the
/// whole server; beyond it the send fails at once with `E2BS_SEND_FAILED`.
fn server_message(
    shared: &Shared,
    outbox: &Arc<ConnOutbox>,
    msgid: u64,
    params: ServerParams,
    binary: bool,
    payload: Bytes,
) {
    use herald_core::hub::Outbox as _;
    let answer = move |outbox: &ConnOutbox, error, message| {
        outbox.event(&Event::ServerMessageSendResult {
            msgid,
            error,
            message,
        });
    };
    let Ok(permit) = shared.upstream_slots.clone().try_acquire_owned() else {
        answer(outbox, send_result::E2BS_SEND_FAILED, String::new());
        return;
    };
    let outbox = outbox.clone();
    let upstream = shared.upstream.clone();
    tokio::spawn(async move {
        let (error, body) = match upstream
            .post(&params.url, &params.signature, &payload, binary)
            .await
        {
            Ok(body) => (send_result::SUCCESS, BASE64.encode(body)),
            Err(code) => (code, String::new()),
        };
        drop(permit);
        answer(&outbox, error, body);
    });
}

fn outbox_error(outbox: &ConnOutbox, code: i32, message: &str) {
    use herald_core::hub::Outbox as _;
    outbox.event(&Event::Error {
        error_code: code,
        message: message.to_owned(),
    });
}

/// A text frame: a call. In cluster mode a login, a join or an online check waits for Redis
/// (bounded by `cluster.command_timeout_ms`); the connection's calls stay in order.
async fn handle_call(
    shared: &Shared,
    app: &str,
    session: SessionId,
    outbox: &ConnOutbox,
    text: &[u8],
) {
    let call = match Call::decode(text) {
        Ok(c) => c,
        Err(e) => {
            outbox_error(
                outbox,
                error_code::BAD_CALL,
                &format!("not a valid call: {e}"),
            );
            return;
        }
    };
    let now = shared.clock.now();
    let hub = &shared.hub;
    match call {
        Call::Login { token, uid, resume } => {
            let code = match &shared.cluster {
                None => {
                    let checked = hub.prepare_login(app, session, &uid, &token, resume, now);
                    hub.commit_login(app, session, &uid, checked, Claim::default(), now)
                }
                Some(c) => c.login(hub, app, session, &uid, &token, resume, now).await,
            };
            if code == 0 {
                shared.metrics.login();
            }
        }
        Call::Logout => hub.logout(app, session, now),
        Call::JoinRoom {
            room_id,
            uid,
            token,
            resume,
        } => match &shared.cluster {
            None => {
                let checked = hub.prepare_join(app, session, &room_id, &uid, &token, resume, now);
                hub.commit_join(
                    app,
                    session,
                    &room_id,
                    &uid,
                    checked,
                    Claim::default(),
                    &[],
                    now,
                );
            }
            Some(c) => {
                let presence = shared.registry.app(app).is_some_and(|a| a.presence_events);
                let (room, token) = (room_id.as_str(), token.as_str());
                c.join(hub, app, session, room, &uid, token, resume, presence, now)
                    .await;
            }
        },
        Call::LeaveRoom { room_id } => hub.leave_room(app, session, &room_id, now),
        Call::UpdateToken { room_id, token } => {
            hub.update_room_token(app, session, &room_id, &token, now);
        }
        Call::GetPeerOnlineStatus { peer_user_id } => {
            let elsewhere = match &shared.cluster {
                Some(c) if !hub.is_logged_in(app, &peer_user_id) => {
                    c.online(app, &peer_user_id).await.unwrap_or(false)
                }
                _ => false,
            };
            hub.get_peer_online_status(app, session, &peer_user_id, elsewhere);
        }
        Call::SetServerParams { signature, url } => {
            hub.set_server_params(app, session, &signature, &url);
        }
        Call::Ack { msgid } => {
            if outbox.ack(msgid) {
                shared.acks.advanced();
            }
        }
    }
}

/// A binary frame: a message the client sends (`SendFrame`).
async fn handle_send(
    shared: &Shared,
    app: &str,
    session: SessionId,
    outbox: &Arc<ConnOutbox>,
    frame: Bytes,
) {
    let send = match SendFrame::decode(frame) {
        Ok(s) => s,
        Err(e) => {
            outbox_error(
                outbox,
                error_code::BAD_FRAME,
                &format!("not a valid send frame: {e}"),
            );
            return;
        }
    };
    let now = shared.clock.now();
    match shared.hub.client_send(app, session, &send, now) {
        ClientSent::Answered(_) => {}
        ClientSent::Upstream(params) => server_message(
            shared,
            outbox,
            send.msgid,
            params,
            send.binary,
            send.payload,
        ),
        ClientSent::Forward(f) => {
            // Only a clustered hub forwards. Without recovery a room broadcast reached the
            // members here already; with it, every recipient takes its stream position in
            // Redis, and while Redis is away the recipients here get it without one. A message
            // for one user fails if no live node holds the user (nor, with recovery, its stream).
            let reached = match &shared.cluster {
                Some(c) => match c.forward(app, &f, now).await {
                    Ok(reached) => reached,
                    Err(_) => shared.hub.deliver_here(app, &f, now),
                },
                None => false,
            };
            let error = match (send.op, reached) {
                (SendOp::Room, _) => room_send_result::SUCCESS,
                (_, true) => send_result::SUCCESS,
                (_, false) => send_result::NO_RECEIVER,
            };
            shared.hub.answer_send(app, session, &send, error);
        }
    }
}

/// Writes whatever the outbox holds, batch by batch, until the connection ends.
async fn write_loop<T: Transport>(mut wr: T::Write, outbox: Arc<ConnOutbox>, shared: Arc<Shared>) {
    let timeout = shared.config.gateway.write_timeout();
    let mut items: Vec<Item> = Vec::new();
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut accepted: Vec<Timestamp> = Vec::new();
    let mut head = BytesMut::new();
    loop {
        outbox.wait().await;
        let closing = outbox.drain(&mut items);
        let mut last_msgid = 0;
        for item in items.drain(..) {
            if let Item::Message { msgid, .. } = &item {
                last_msgid = *msgid;
            }
            encode(item, &mut head, &mut chunks, &mut accepted);
        }
        if !head.is_empty() {
            chunks.push(head.split().freeze());
        }
        if !chunks.is_empty() {
            match tokio::time::timeout(timeout, T::write_chunks(&mut wr, &mut chunks)).await {
                Ok(Ok(())) => {}
                _ => {
                    let lost = accepted.len() as u32;
                    shared.metrics.dropped(DropReason::ConnectionClosed, lost);
                    return;
                }
            }
            outbox.wrote(last_msgid);
            let now = shared.clock.now();
            for a in accepted.drain(..) {
                shared.metrics.delivered(now.micros_since(a));
            }
        }
        if let Some(c) = closing {
            let frame = ws::close_frame(c.code, c.reason);
            let _ = tokio::time::timeout(timeout, async {
                let _ = wr.write_all(&frame).await;
                let _ = wr.shutdown().await;
            })
            .await;
            return;
        }
        // Do not keep a burst's buffers while idle.
        if head.capacity() > 64 * 1024 {
            head = BytesMut::new();
        }
        if items.capacity() > 256 {
            items = Vec::new();
            chunks = Vec::new();
            accepted = Vec::new();
        }
    }
}

fn encode(item: Item, head: &mut BytesMut, chunks: &mut Vec<Bytes>, accepted: &mut Vec<Timestamp>) {
    match item {
        Item::Message {
            delivery,
            msgid,
            pos,
            accepted: at,
        } => {
            ws::encode_header(ws::OP_BINARY, delivery.frame_len(pos), head);
            delivery.put_prefix(msgid, pos, head);
            let body = delivery.body();
            if body.len() <= INLINE_BODY_MAX {
                head.extend_from_slice(body);
            } else {
                chunks.push(head.split().freeze());
                chunks.push(body.clone());
            }
            accepted.push(at);
        }
        Item::Text(t) => {
            ws::encode_header(ws::OP_TEXT, t.len(), head);
            head.extend_from_slice(&t);
        }
        Item::Pong(p) => head.extend_from_slice(&ws::pong_frame(&p)),
        Item::Ping => head.extend_from_slice(&ws::ping_frame(b"")),
    }
}

/// Writes every chunk, as few syscalls as the kernel allows.
pub(crate) async fn write_all<W: AsyncWrite + Unpin>(
    wr: &mut W,
    chunks: &mut Vec<Bytes>,
) -> std::io::Result<()> {
    const MAX_SLICES: usize = 64;
    let mut first = 0;
    while first < chunks.len() {
        // The slices live only while the write is polled: kept across the await, their kilobyte
        // would be reserved in every connection's task while it idles.
        let mut written = std::future::poll_fn(|cx| {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let n = chunks.len().min(first + MAX_SLICES) - first;
            for (slot, chunk) in slices.iter_mut().zip(&chunks[first..first + n]) {
                *slot = IoSlice::new(chunk);
            }
            tokio::io::AsyncWrite::poll_write_vectored(
                std::pin::Pin::new(&mut *wr),
                cx,
                &slices[..n],
            )
        })
        .await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let len = chunks[first].len();
            if written >= len {
                written -= len;
                first += 1;
            } else {
                chunks[first].advance(written);
                written = 0;
            }
        }
    }
    chunks.clear();
    Ok(())
}
