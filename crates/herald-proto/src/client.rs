//! Herald's client protocol: what travels over the WebSocket between an app and the gateway.
//!
//! The vendor's client protocol is not public, so this one is Herald's own; `docs/protocol.md` is
//! its contract. Its shape keeps the vendor's names so that porting an app is mechanical:
//!
//! - **Calls** (client → server) are text frames holding one JSON object, tagged by `"call"` with the
//!   vendor's method name: `{"call":"login","token":"…","uid":"u1"}`.
//! - **Events** (server → client) that are not messages are text frames holding one JSON object,
//!   tagged by `"event"` with the vendor's callback name: `{"event":"onLoginResult",…}`.
//! - **Messages** (server → client) are binary frames in the compact layout of [`Delivery`]: the
//!   payload travels as raw bytes (never base64, never JSON-escaped), and everything but a 10-byte
//!   per-connection prefix is encoded once per message and shared by every recipient.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// The path of the WebSocket gateway. The app is chosen with the `appId` query parameter:
/// `ws://HOST:PORT/ws?appId=…`.
pub const GATEWAY_PATH: &str = "/ws";

/// `LoginErrorCode` (spec §5.3).
pub mod login_error {
    /// Logged in.
    pub const SUCCESS: i32 = 0;
    /// The token is malformed, forged, expired, for another app, or for another user.
    pub const INVALID_TOKEN: i32 = -1000;
    /// The login failed for another reason (already logged in on this connection).
    pub const LOGIN_FAILED: i32 = -1001;
    /// The user id breaks the id rule.
    pub const INVALID_USER_ID: i32 = -1002;
    /// The server failed internally.
    pub const SERVER_ERROR: i32 = -1003;
}

/// `LogoutReason` (spec §5.3).
pub mod logout_reason {
    /// The client called `logout`.
    pub const LOGOUT: i32 = 0;
    /// Another login with the same user id replaced this one.
    pub const DUPLICATE_LOGIN: i32 = 1;
}

/// Room states reported by `onRoomStateChanged`: 0 on success, otherwise the vendor's `ErrorCode`.
pub mod room_state {
    /// Joined.
    pub const JOINED: i32 = 0;
    /// The token is malformed, forged, for another app, room or user.
    pub const INVALID_TOKEN: i32 = -1000;
    /// The join failed for another reason (the user id breaks the id rule).
    pub const JOIN_ROOM_FAILED: i32 = -1001;
    /// Another connection joined the same room with the same user id; this one was removed.
    pub const DUPLICATE_LOGIN: i32 = -1004;
    /// The room id breaks the id rule.
    pub const ROOM_ID_ILLEGAL: i32 = -1007;
    /// The token has expired (at `joinRoom`, or later while in the room without `updateToken`).
    pub const TOKEN_EXPIRED: i32 = -1009;
    /// `updateToken` was given a token that is not valid for this room and user.
    pub const UPDATE_TOKEN_WITH_INVALID_TOKEN: i32 = -1010;
    /// The business server removed this user from the room (`KickUser`).
    pub const KICKED_OUT: i32 = -1006;
    /// This connection has already joined the room.
    pub const ROOM_ALREADY_JOINED: i32 = -1013;
}

/// `UserMessageSendResult` (spec §5.3): results of `sendUserMessageOutsideRoom`,
/// `sendUserMessage` and `sendServerMessage`, and the error values of `onServerParamsSetResult`.
pub mod send_result {
    /// Delivered to the recipient's connection (or answered 200 by the business server).
    pub const SUCCESS: i32 = 0;
    /// The recipient's connection is being cut off (slow consumer).
    pub const BROKEN: i32 = 2;
    /// The recipient is not logged in (out of room) or not in the room.
    pub const NO_RECEIVER: i32 = 3;
    /// Over this connection's messages-per-second limit.
    pub const EXCEED_QPS: i32 = 5;
    /// The business server did not answer (connection failed or 5 s passed).
    pub const E2BS_SEND_FAILED: i32 = 17;
    /// The business server answered with a status other than 200.
    pub const E2BS_RETURN_FAILED: i32 = 18;
    /// The sender has not joined the room.
    pub const NOT_JOIN: i32 = 100;
    /// The message is larger than 64 KiB.
    pub const EXCEED_MAX_LENGTH: i32 = 103;
    /// The recipient id is empty or breaks the id rule.
    pub const EMPTY_USER: i32 = 104;
    /// The sender is not logged in.
    pub const NOT_LOGIN: i32 = 105;
    /// `setServerParams` has not been called successfully (or its URL was refused).
    pub const SERVER_PARAMS_NOT_SET: i32 = 106;
    /// `onServerParamsSetResult` success value.
    pub const SERVER_PARAMS_SET: i32 = 200;
}

/// `RoomMessageSendResult` (spec §5.3): results of `sendRoomMessage`. Note success is 200.
pub mod room_send_result {
    /// Delivered to the room.
    pub const SUCCESS: i32 = 200;
    /// Over this connection's messages-per-second limit.
    pub const EXCEED_QPS: i32 = 5;
    /// The sender has not joined the room.
    pub const NOT_JOIN: i32 = 100;
    /// The message is larger than 64 KiB.
    pub const EXCEED_MAX_LENGTH: i32 = 103;
}

/// Reasons of `onUserLeave` (the vendor's values).
pub mod user_leave_reason {
    /// The user called `leaveRoom`.
    pub const QUIT: i32 = 0;
    /// The user's connection was lost (closed, heartbeat timeout, slow consumer).
    pub const DROPPED: i32 = 1;
    /// The business server removed the user (`KickUser`).
    pub const KICKED_BY_ADMIN: i32 = 3;
}

/// `UserOnlineStatus` (spec §5.3).
pub mod online_status {
    /// Not logged in.
    pub const OFFLINE: i32 = 0;
    /// Logged in.
    pub const ONLINE: i32 = 1;
}

/// The largest message a client may send (64 KiB), text in UTF-8 bytes or binary.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 64 * 1024;

/// WebSocket close codes Herald sends, beyond the RFC 6455 ones (1000 normal, 1001 going away,
/// 1002 protocol error, 1007 invalid payload, 1008 policy, 1009 too big, 1011 internal).
pub mod close_code {
    /// The connection fell too far behind on its outbound queue and was cut off so that it could not
    /// slow anyone else. Reconnect, and read faster.
    pub const SLOW_CONSUMER: u16 = 4001;
    /// Nothing arrived from the client within the heartbeat timeout.
    pub const HEARTBEAT_TIMEOUT: u16 = 4002;
}

/// Codes of `onError`: a call the server could not act on. The connection stays open.
pub mod error_code {
    /// The text frame is not JSON, or not a known call with its arguments.
    pub const BAD_CALL: i32 = 4003;
    /// A binary frame that is not a valid send frame.
    pub const BAD_FRAME: i32 = 4004;
}

/// A call from the client, with the vendor's method name and argument names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "call")]
pub enum Call {
    /// Log in to receive out-of-room messages. Answered by `onLoginResult`.
    #[serde(rename = "login")]
    Login {
        /// A `001` token with an empty room id, for `uid`.
        token: String,
        /// The user id.
        uid: String,
        /// Resume the login's stream after this position: the messages missed since are
        /// replayed before anything new (Herald's extension; see `docs/delivery.md`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<StreamPos>,
    },
    /// Log out. Answered by `onLogout` with reason 0.
    #[serde(rename = "logout")]
    Logout,
    /// Join a room. Answered by `onRoomStateChanged`.
    #[serde(rename = "joinRoom")]
    JoinRoom {
        /// The room.
        #[serde(rename = "roomId")]
        room_id: String,
        /// The user id in that room.
        uid: String,
        /// A `001` token for that room (or `*`) and user.
        token: String,
        /// Resume the membership's stream after this position (Herald's extension).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<StreamPos>,
    },
    /// Leave a room. Answered by `onLeaveRoom`.
    #[serde(rename = "leaveRoom")]
    LeaveRoom {
        /// The room.
        #[serde(rename = "roomId")]
        room_id: String,
    },
    /// Renew the token of a joined room before it expires (the vendor's `RTCRoom.updateToken`).
    /// Silent on success; `onRoomStateChanged(-1010)` if the token is not valid.
    #[serde(rename = "updateToken")]
    UpdateToken {
        /// The room.
        #[serde(rename = "roomId")]
        room_id: String,
        /// A new `001` token for the room and the uid joined with.
        token: String,
    },
    /// Ask whether a user is logged in. Answered by `onGetPeerOnlineStatus`.
    #[serde(rename = "getPeerOnlineStatus")]
    GetPeerOnlineStatus {
        /// The user asked about.
        #[serde(rename = "peerUserId")]
        peer_user_id: String,
    },
    /// Set where `sendServerMessage` posts to. Answered by `onServerParamsSetResult`.
    #[serde(rename = "setServerParams")]
    SetServerParams {
        /// An opaque string for the business server to check; sent with every message.
        signature: String,
        /// The business server's URL; must match the app's allow-list.
        url: String,
    },
    /// Acknowledge processing: the client has processed every message frame up to and including
    /// `msgid` on this connection (cumulative). Silent. A `msgid` beyond the highest one the
    /// connection was given counts as that one, and acks never move backwards.
    #[serde(rename = "ack")]
    Ack {
        /// The connection's msgid of the last message processed.
        msgid: u64,
    },
}

/// A place in one user's stream: the stream's epoch and a message's position in it. Each login
/// and each room membership has its own stream; positions increase by one per message, from 1,
/// for as long as the epoch stays the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPos {
    /// Names one life of the stream: positions of different epochs are unrelated.
    pub epoch: u64,
    /// A message's position (0: before the first).
    pub position: u64,
}

/// A stream as a login or join answer describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamState {
    /// The stream's epoch.
    pub epoch: u64,
    /// The position of the last message in the stream (0: none yet). Once the replayed
    /// messages (if any) have arrived, the client has everything up to here.
    pub position: u64,
    /// Only when the call asked to resume: whether every message after the given position is
    /// being replayed. `false`: some could not be (another epoch, or older than the window); the
    /// app should fetch its state afresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    /// How many messages are replayed right after this answer.
    #[serde(default)]
    pub replayed: u64,
}

/// Why a text frame is not a call.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The frame is JSON but not an object.
    #[error("a call is a JSON object")]
    NotAnObject,
    /// The frame is not JSON, or not a known call with its fields.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

impl Call {
    /// Decodes the call in a text frame: one JSON object.
    ///
    /// serde's internally tagged enums also accept an array whose first element is the tag and
    /// whose others are the fields in declaration order (`["login","TOKEN","u1"]`); that would
    /// make the order of fields part of the protocol, which promises an object, so anything that
    /// does not start with `{` is refused first.
    ///
    /// ```
    /// use herald_proto::client::Call;
    /// assert!(Call::decode(br#"{"call":"logout"}"#).is_ok());
    /// assert!(Call::decode(br#"["logout"]"#).is_err());
    /// ```
    pub fn decode(text: &[u8]) -> Result<Call, CallError> {
        match text.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Ok(serde_json::from_slice(text)?),
            Some(_) => Err(CallError::NotAnObject),
            None => Ok(serde_json::from_slice(text)?),
        }
    }
}

/// A non-message event from the server, with the vendor's callback name and argument names.
///
/// Arguments that only the client can measure (the vendor's `elapsed` of `onLoginResult`, the
/// `extraInfo` of `onRoomStateChanged`) are added by the SDK, not sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event")]
pub enum Event {
    /// The result of `login`.
    #[serde(rename = "onLoginResult")]
    LoginResult {
        /// The user id of the login.
        uid: String,
        /// A `LoginErrorCode`.
        #[serde(rename = "errorCode")]
        error_code: i32,
        /// On success with recovery on: the login's stream (Herald's extension).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream: Option<StreamState>,
    },
    /// The login ended.
    #[serde(rename = "onLogout")]
    Logout {
        /// A `LogoutReason`.
        reason: i32,
    },
    /// The result of `joinRoom`, or a later change of the room's state (a duplicate join elsewhere).
    #[serde(rename = "onRoomStateChanged")]
    RoomStateChanged {
        /// The room.
        #[serde(rename = "roomId")]
        room_id: String,
        /// The user id in the room.
        uid: String,
        /// 0, or a vendor `ErrorCode`.
        state: i32,
        /// On joining with recovery on: the membership's stream (Herald's extension).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream: Option<StreamState>,
    },
    /// A call could not be acted on (see [`error_code`]).
    #[serde(rename = "onError")]
    Error {
        /// An [`error_code`].
        #[serde(rename = "errorCode")]
        error_code: i32,
        /// What was wrong, for a person.
        message: String,
    },
    /// The result of `leaveRoom`.
    #[serde(rename = "onLeaveRoom")]
    LeaveRoom {
        /// The room.
        #[serde(rename = "roomId")]
        room_id: String,
    },
    /// The token of a joined room expires in 30 seconds or less: call `updateToken`.
    #[serde(rename = "onTokenWillExpire")]
    TokenWillExpire {
        /// The room.
        #[serde(rename = "roomId")]
        room_id: String,
    },
    /// Another user joined a room this connection is in (also sent once for each member already
    /// there, right after this connection joins).
    #[serde(rename = "onUserJoined")]
    UserJoined {
        /// The room.
        #[serde(rename = "roomId")]
        room_id: String,
        /// Who joined.
        uid: String,
    },
    /// Another user left a room this connection is in.
    #[serde(rename = "onUserLeave")]
    UserLeave {
        /// The room.
        #[serde(rename = "roomId")]
        room_id: String,
        /// Who left.
        uid: String,
        /// A [`user_leave_reason`].
        reason: i32,
    },
    /// The result of a `sendUserMessageOutsideRoom` / `sendUserBinaryMessageOutsideRoom`.
    #[serde(rename = "onUserMessageSendResultOutsideRoom")]
    UserMessageSendResultOutsideRoom {
        /// The msgid the client gave the send.
        msgid: u64,
        /// A [`send_result`].
        error: i32,
    },
    /// The result of a `sendUserMessage` / `sendUserBinaryMessage` in a room.
    #[serde(rename = "onUserMessageSendResult")]
    UserMessageSendResult {
        /// The room.
        #[serde(rename = "roomId")]
        room_id: String,
        /// The msgid the client gave the send.
        msgid: u64,
        /// A [`send_result`].
        error: i32,
    },
    /// The result of a `sendRoomMessage` / `sendRoomBinaryMessage`.
    #[serde(rename = "onRoomMessageSendResult")]
    RoomMessageSendResult {
        /// The room.
        #[serde(rename = "roomId")]
        room_id: String,
        /// The msgid the client gave the send.
        msgid: u64,
        /// A [`room_send_result`] (200 on success).
        error: i32,
    },
    /// The result of a `sendServerMessage` / `sendServerBinaryMessage`.
    #[serde(rename = "onServerMessageSendResult")]
    ServerMessageSendResult {
        /// The msgid the client gave the send.
        msgid: u64,
        /// A [`send_result`].
        error: i32,
        /// The business server's response body, base64 (empty unless it answered).
        message: String,
    },
    /// The answer to `getPeerOnlineStatus`.
    #[serde(rename = "onGetPeerOnlineStatus")]
    GetPeerOnlineStatus {
        /// The user asked about.
        #[serde(rename = "peerUserId")]
        peer_user_id: String,
        /// An [`online_status`].
        status: i32,
    },
    /// The answer to `setServerParams`: 200, or a [`send_result`].
    #[serde(rename = "onServerParamsSetResult")]
    ServerParamsSetResult {
        /// 200 on success.
        error: i32,
    },
}

impl Event {
    /// The event as the text of a WebSocket frame.
    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Frame type byte of a server → client message frame.
pub const FRAME_MESSAGE: u8 = 1;

/// Bits of the flags byte of a message frame.
pub mod flags {
    /// The payload is binary (otherwise UTF-8 text).
    pub const BINARY: u8 = 0b0000_0001;
    /// The message belongs to a room (the room id is present).
    pub const ROOM: u8 = 0b0000_0010;
    /// The message went to the whole room (`SendBroadcast`), not to chosen members.
    pub const BROADCAST: u8 = 0b0000_0100;
    /// The prefix carries the message's place in the recipient's stream (epoch and position,
    /// u64 LE each) after the msgid. Set per recipient, never in a [`super::Delivery`]'s own flags.
    pub const STREAM: u8 = 0b0000_1000;
}

/// Length of the per-connection prefix of a message frame: type, flags, msgid (u64 LE).
pub const PREFIX_LEN: usize = 10;

/// Length of the prefix of a message frame that carries a stream position ([`flags::STREAM`]).
pub const STREAM_PREFIX_LEN: usize = PREFIX_LEN + 16;

/// Which vendor callback a message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// `onUserMessageReceivedOutsideRoom` / `onUserBinaryMessageReceivedOutsideRoom`.
    OutsideRoom,
    /// `onUserMessageReceived` / `onUserBinaryMessageReceived`.
    RoomUser,
    /// `onRoomMessageReceived` / `onRoomBinaryMessageReceived`.
    RoomBroadcast,
}

/// A message encoded once for all its recipients: the flags byte and the shared body
/// (`u8 uid_len, uid, u8 room_len, room, payload`). Cloning is a reference-count bump.
///
/// On the wire each recipient gets `[FRAME_MESSAGE, flags, msgid u64 LE] ++ body`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    flags: u8,
    body: Bytes,
}

impl Delivery {
    /// Encodes a message. Ids are at most 128 bytes (the id rule), so their lengths fit a byte.
    pub fn encode(
        kind: MessageKind,
        from: &str,
        room: Option<&str>,
        binary: bool,
        payload: &[u8],
    ) -> Self {
        let mut f = if binary { flags::BINARY } else { 0 };
        f |= match kind {
            MessageKind::OutsideRoom => 0,
            MessageKind::RoomUser => flags::ROOM,
            MessageKind::RoomBroadcast => flags::ROOM | flags::BROADCAST,
        };
        let room = room.unwrap_or("");
        let mut body = BytesMut::with_capacity(2 + from.len() + room.len() + payload.len());
        body.put_u8(from.len() as u8);
        body.put_slice(from.as_bytes());
        body.put_u8(room.len() as u8);
        body.put_slice(room.as_bytes());
        body.put_slice(payload);
        Delivery {
            flags: f,
            body: body.freeze(),
        }
    }

    /// A message encoded elsewhere (another node of a cluster): its flags byte and body as
    /// [`Delivery::encode`] made them.
    pub fn from_parts(flags: u8, body: Bytes) -> Self {
        Delivery { flags, body }
    }

    /// The flags byte.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// The shared body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Length of the whole frame payload for one recipient, with or without a stream position.
    pub fn frame_len(&self, pos: Option<StreamPos>) -> usize {
        let prefix = if pos.is_some() {
            STREAM_PREFIX_LEN
        } else {
            PREFIX_LEN
        };
        prefix + self.body.len()
    }

    /// Writes the per-connection prefix for `msgid` and, if the recipient has a stream, the
    /// message's place in it.
    pub fn put_prefix(&self, msgid: u64, pos: Option<StreamPos>, out: &mut BytesMut) {
        out.put_u8(FRAME_MESSAGE);
        match pos {
            None => {
                out.put_u8(self.flags);
                out.put_u64_le(msgid);
            }
            Some(p) => {
                out.put_u8(self.flags | flags::STREAM);
                out.put_u64_le(msgid);
                out.put_u64_le(p.epoch);
                out.put_u64_le(p.position);
            }
        }
    }
}

/// A message frame as a client decodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// Which callback it is for.
    pub kind: MessageKind,
    /// Increases by one per message on this connection, from 1.
    pub msgid: u64,
    /// The message's place in the recipient's stream (when the server keeps one).
    pub pos: Option<StreamPos>,
    /// The sender's id.
    pub uid: String,
    /// The room, for room messages.
    pub room_id: Option<String>,
    /// True when `payload` is binary.
    pub binary: bool,
    /// The message bytes (UTF-8 when not binary).
    pub payload: Bytes,
}

/// Why a binary frame is not a valid message frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame ends before its fields do.
    #[error("message frame is truncated")]
    Truncated,
    /// Unknown frame type.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// Unknown flags.
    #[error("invalid flags {0:#x}")]
    BadFlags(u8),
    /// An id or a text payload is not UTF-8.
    #[error("invalid UTF-8 in message frame")]
    BadUtf8,
}

impl ReceivedMessage {
    /// Decodes one binary frame. Never panics, whatever the input.
    pub fn decode(frame: Bytes) -> Result<Self, FrameError> {
        if frame.len() < PREFIX_LEN + 2 {
            return Err(FrameError::Truncated);
        }
        if frame[0] != FRAME_MESSAGE {
            return Err(FrameError::UnknownType(frame[0]));
        }
        let f = frame[1];
        if f & !(flags::BINARY | flags::ROOM | flags::BROADCAST | flags::STREAM) != 0
            || (f & flags::BROADCAST != 0 && f & flags::ROOM == 0)
        {
            return Err(FrameError::BadFlags(f));
        }
        let u64_at = |at: usize| -> Result<u64, FrameError> {
            let b = frame.get(at..at + 8).ok_or(FrameError::Truncated)?;
            let mut v = [0u8; 8];
            v.copy_from_slice(b);
            Ok(u64::from_le_bytes(v))
        };
        let msgid = u64_at(2)?;
        let (pos, mut at) = if f & flags::STREAM != 0 {
            let pos = StreamPos {
                epoch: u64_at(PREFIX_LEN)?,
                position: u64_at(PREFIX_LEN + 8)?,
            };
            (Some(pos), STREAM_PREFIX_LEN)
        } else {
            (None, PREFIX_LEN)
        };
        let mut take_str = |frame: &Bytes| -> Result<String, FrameError> {
            let len = *frame.get(at).ok_or(FrameError::Truncated)? as usize;
            let s = frame
                .get(at + 1..at + 1 + len)
                .ok_or(FrameError::Truncated)?;
            at += 1 + len;
            String::from_utf8(s.to_vec()).map_err(|_| FrameError::BadUtf8)
        };
        let uid = take_str(&frame)?;
        let room = take_str(&frame)?;
        let payload = frame.slice(at..);
        let binary = f & flags::BINARY != 0;
        if !binary && std::str::from_utf8(&payload).is_err() {
            return Err(FrameError::BadUtf8);
        }
        let kind = match (f & flags::ROOM != 0, f & flags::BROADCAST != 0) {
            (false, _) => MessageKind::OutsideRoom,
            (true, false) => MessageKind::RoomUser,
            (true, true) => MessageKind::RoomBroadcast,
        };
        Ok(ReceivedMessage {
            kind,
            msgid,
            pos,
            uid,
            room_id: (f & flags::ROOM != 0).then_some(room),
            binary,
            payload,
        })
    }
}

/// Frame type byte of a client → server send frame.
pub const FRAME_SEND: u8 = 2;

/// Length of the fixed part of a send frame: type, flags, op, msgid.
pub const SEND_PREFIX_LEN: usize = 11;

/// What a client send is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOp {
    /// `sendUserMessageOutsideRoom`: to a logged-in user.
    UserOutsideRoom = 1,
    /// `sendUserMessage`: to one member of a room the sender has joined.
    UserInRoom = 2,
    /// `sendRoomMessage`: to every other member of a room the sender has joined.
    Room = 3,
    /// `sendServerMessage`: to the business server set with `setServerParams`.
    Server = 4,
}

/// A message a client sends: one binary frame,
/// `[FRAME_SEND, flags (bit 0 BINARY), op, msgid u64 LE, u8 n, to uid, u8 m, room id, payload]`.
/// `to` is empty except for the two user ops; `room` is empty except for the two room ops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFrame {
    /// What the send is for.
    pub op: SendOp,
    /// The client's id for this send, echoed in its result.
    pub msgid: u64,
    /// The recipient user, for the user ops.
    pub to: String,
    /// The room, for the room ops.
    pub room_id: String,
    /// True when `payload` is binary.
    pub binary: bool,
    /// The message.
    pub payload: Bytes,
}

impl SendFrame {
    /// Encodes the frame (the SDK side). Ids longer than 255 bytes are cut: the server refuses
    /// anything over 128 anyway.
    pub fn encode(&self) -> Bytes {
        let to = &self.to.as_bytes()[..self.to.len().min(255)];
        let room = &self.room_id.as_bytes()[..self.room_id.len().min(255)];
        let mut b = BytesMut::with_capacity(
            SEND_PREFIX_LEN + 2 + to.len() + room.len() + self.payload.len(),
        );
        b.put_u8(FRAME_SEND);
        b.put_u8(if self.binary { flags::BINARY } else { 0 });
        b.put_u8(self.op as u8);
        b.put_u64_le(self.msgid);
        b.put_u8(to.len() as u8);
        b.put_slice(to);
        b.put_u8(room.len() as u8);
        b.put_slice(room);
        b.put_slice(&self.payload);
        b.freeze()
    }

    /// Decodes a send frame. Never panics. A frame whose msgid could be read but whose rest is
    /// bad still fails: the server then answers `onError`.
    pub fn decode(frame: Bytes) -> Result<Self, FrameError> {
        if frame.len() < SEND_PREFIX_LEN + 2 {
            return Err(FrameError::Truncated);
        }
        if frame[0] != FRAME_SEND {
            return Err(FrameError::UnknownType(frame[0]));
        }
        if frame[1] & !flags::BINARY != 0 {
            return Err(FrameError::BadFlags(frame[1]));
        }
        let op = match frame[2] {
            1 => SendOp::UserOutsideRoom,
            2 => SendOp::UserInRoom,
            3 => SendOp::Room,
            4 => SendOp::Server,
            other => return Err(FrameError::UnknownType(other)),
        };
        let mut id = [0u8; 8];
        id.copy_from_slice(&frame[3..11]);
        let mut at = SEND_PREFIX_LEN;
        let mut take_str = |frame: &Bytes| -> Result<String, FrameError> {
            let len = *frame.get(at).ok_or(FrameError::Truncated)? as usize;
            let s = frame
                .get(at + 1..at + 1 + len)
                .ok_or(FrameError::Truncated)?;
            at += 1 + len;
            String::from_utf8(s.to_vec()).map_err(|_| FrameError::BadUtf8)
        };
        let to = take_str(&frame)?;
        let room_id = take_str(&frame)?;
        let binary = frame[1] & flags::BINARY != 0;
        let payload = frame.slice(at..);
        if !binary && std::str::from_utf8(&payload).is_err() {
            return Err(FrameError::BadUtf8);
        }
        Ok(SendFrame {
            op,
            msgid: u64::from_le_bytes(id),
            to,
            room_id,
            binary,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_is_a_non_negative_integer_msgid() {
        assert_eq!(
            Call::decode(br#"{"call":"ack","msgid":7}"#).unwrap(),
            Call::Ack { msgid: 7 }
        );
        assert_eq!(
            serde_json::to_string(&Call::Ack { msgid: 0 }).unwrap(),
            r#"{"call":"ack","msgid":0}"#
        );
        for bad in [
            &br#"{"call":"ack"}"#[..],
            br#"{"call":"ack","msgid":-1}"#,
            br#"{"call":"ack","msgid":1.5}"#,
            br#"{"call":"ack","msgid":"3"}"#,
            br#"{"call":"ack","msgid":18446744073709551616}"#,
            br#"{"call":"ack","msgid":1,"msgid":2}"#,
        ] {
            assert!(
                Call::decode(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn calls_use_the_vendor_names() {
        let c: Call = serde_json::from_str(r#"{"call":"login","token":"t","uid":"u1"}"#).unwrap();
        assert_eq!(
            c,
            Call::Login {
                token: "t".into(),
                uid: "u1".into(),
                resume: None,
            }
        );
        let c: Call = serde_json::from_str(
            r#"{"call":"login","token":"t","uid":"u1","resume":{"epoch":7,"position":12}}"#,
        )
        .unwrap();
        assert_eq!(
            c,
            Call::Login {
                token: "t".into(),
                uid: "u1".into(),
                resume: Some(StreamPos {
                    epoch: 7,
                    position: 12
                }),
            }
        );
        for bad in [
            r#"{"call":"login","token":"t","uid":"u1","resume":{"epoch":7}}"#,
            r#"{"call":"login","token":"t","uid":"u1","resume":{"epoch":-1,"position":1}}"#,
            r#"{"call":"login","token":"t","uid":"u1","resume":7}"#,
        ] {
            assert!(Call::decode(bad.as_bytes()).is_err(), "{bad}");
        }
        let c: Call =
            serde_json::from_str(r#"{"call":"joinRoom","roomId":"r1","uid":"u1","token":"t"}"#)
                .unwrap();
        assert_eq!(
            c,
            Call::JoinRoom {
                room_id: "r1".into(),
                uid: "u1".into(),
                token: "t".into(),
                resume: None,
            }
        );
        assert_eq!(
            serde_json::from_str::<Call>(r#"{"call":"logout"}"#).unwrap(),
            Call::Logout
        );
        assert!(serde_json::from_str::<Call>(r#"{"call":"fly"}"#).is_err());
        // Only the object form is a call.
        assert!(matches!(
            Call::decode(br#" ["login","t","u1"]"#),
            Err(CallError::NotAnObject)
        ));
        assert!(matches!(
            Call::decode(b"\"x\""),
            Err(CallError::NotAnObject)
        ));
        assert!(matches!(Call::decode(b""), Err(CallError::Json(_))));
        assert_eq!(
            Call::decode(br#" {"call":"login","token":"t","uid":"u1"}"#).unwrap(),
            Call::Login {
                token: "t".into(),
                uid: "u1".into(),
                resume: None,
            }
        );
        let e = Event::LoginResult {
            uid: "u1".into(),
            error_code: -1000,
            stream: None,
        };
        assert_eq!(
            e.to_json(),
            r#"{"event":"onLoginResult","uid":"u1","errorCode":-1000}"#
        );
        let e = Event::LoginResult {
            uid: "u1".into(),
            error_code: 0,
            stream: Some(StreamState {
                epoch: 5,
                position: 9,
                recovered: Some(true),
                replayed: 2,
            }),
        };
        let json = e.to_json();
        assert_eq!(
            json,
            r#"{"event":"onLoginResult","uid":"u1","errorCode":0,"stream":{"epoch":5,"position":9,"recovered":true,"replayed":2}}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
    }

    #[test]
    fn message_frames_round_trip() {
        for (kind, room) in [
            (MessageKind::OutsideRoom, None),
            (MessageKind::RoomUser, Some("r1")),
            (MessageKind::RoomBroadcast, Some("r1")),
        ] {
            let stamps = [
                None,
                Some(StreamPos {
                    epoch: u64::MAX,
                    position: 3,
                }),
            ];
            for (binary, pos) in [false, true]
                .into_iter()
                .zip(stamps)
                .chain([(false, stamps[1])])
            {
                let d = Delivery::encode(kind, "bot", room, binary, b"hello");
                let mut frame = BytesMut::new();
                d.put_prefix(42, pos, &mut frame);
                frame.extend_from_slice(d.body());
                assert_eq!(frame.len(), d.frame_len(pos));
                let m = ReceivedMessage::decode(frame.freeze()).unwrap();
                assert_eq!(m.kind, kind);
                assert_eq!(m.msgid, 42);
                assert_eq!(m.pos, pos);
                assert_eq!(m.uid, "bot");
                assert_eq!(m.room_id.as_deref(), room);
                assert_eq!(m.binary, binary);
                assert_eq!(&m.payload[..], b"hello");
            }
        }
    }

    #[test]
    fn send_frames_round_trip_and_refuse_garbage() {
        for (op, to, room) in [
            (SendOp::UserOutsideRoom, "u2", ""),
            (SendOp::UserInRoom, "u2", "r1"),
            (SendOp::Room, "", "r1"),
            (SendOp::Server, "", ""),
        ] {
            for binary in [false, true] {
                let f = SendFrame {
                    op,
                    msgid: 7,
                    to: to.into(),
                    room_id: room.into(),
                    binary,
                    payload: Bytes::from_static(b"hello"),
                };
                let bytes = f.encode();
                assert_eq!(SendFrame::decode(bytes.clone()).unwrap(), f);
                for cut in 0..bytes.len() - 5 {
                    assert!(
                        SendFrame::decode(bytes.slice(..cut)).is_err(),
                        "cut at {cut}"
                    );
                }
            }
        }
        let mut bad = SendFrame {
            op: SendOp::Room,
            msgid: 1,
            to: String::new(),
            room_id: "r".into(),
            binary: false,
            payload: Bytes::from_static(&[0xff]),
        }
        .encode()
        .to_vec();
        assert_eq!(
            SendFrame::decode(bad.clone().into()),
            Err(FrameError::BadUtf8)
        );
        bad[2] = 9;
        assert!(SendFrame::decode(bad.into()).is_err());
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let d = Delivery::encode(MessageKind::RoomUser, "bot", Some("room"), false, b"x");
        let mut frame = BytesMut::new();
        let pos = StreamPos {
            epoch: 1,
            position: 2,
        };
        d.put_prefix(1, Some(pos), &mut frame);
        frame.extend_from_slice(d.body());
        let frame = frame.freeze();
        for cut in 0..frame.len() - 1 {
            assert!(
                ReceivedMessage::decode(frame.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
        let mut bad = frame.to_vec();
        bad[0] = 9;
        assert_eq!(
            ReceivedMessage::decode(bad.into()),
            Err(FrameError::UnknownType(9))
        );
        let mut bad = frame.to_vec();
        bad[1] = flags::BROADCAST;
        assert!(matches!(
            ReceivedMessage::decode(bad.into()),
            Err(FrameError::BadFlags(_))
        ));
        let mut bad = frame.to_vec();
        let last = bad.len() - 1;
        bad[last] = 0xff;
        assert_eq!(
            ReceivedMessage::decode(bad.into()),
            Err(FrameError::BadUtf8)
        );
    }
}
