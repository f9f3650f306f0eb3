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
    /// The token has expired.
    pub const TOKEN_EXPIRED: i32 = -1009;
    /// This connection has already joined the room.
    pub const ROOM_ALREADY_JOINED: i32 = -1013;
}

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
    /// Clients send calls as text frames; binary frames are reserved.
    pub const BINARY_NOT_SUPPORTED: i32 = 4004;
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
    },
    /// Leave a room. Answered by `onLeaveRoom`.
    #[serde(rename = "leaveRoom")]
    LeaveRoom {
        /// The room.
        #[serde(rename = "roomId")]
        room_id: String,
    },
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
}

/// Length of the per-connection prefix of a message frame: type, flags, msgid (u64 LE).
pub const PREFIX_LEN: usize = 10;

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

    /// The flags byte.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// The shared body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Length of the whole frame payload for one recipient.
    pub fn frame_len(&self) -> usize {
        PREFIX_LEN + self.body.len()
    }

    /// Writes the per-connection prefix for `msgid`.
    pub fn put_prefix(&self, msgid: u64, out: &mut BytesMut) {
        out.put_u8(FRAME_MESSAGE);
        out.put_u8(self.flags);
        out.put_u64_le(msgid);
    }
}

/// A message frame as a client decodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// Which callback it is for.
    pub kind: MessageKind,
    /// Increases by one per message on this connection, from 1.
    pub msgid: u64,
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
        if f & !(flags::BINARY | flags::ROOM | flags::BROADCAST) != 0
            || (f & flags::BROADCAST != 0 && f & flags::ROOM == 0)
        {
            return Err(FrameError::BadFlags(f));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&frame[2..10]);
        let msgid = u64::from_le_bytes(id);
        let mut at = PREFIX_LEN;
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
            uid,
            room_id: (f & flags::ROOM != 0).then_some(room),
            binary,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_use_the_vendor_names() {
        let c: Call = serde_json::from_str(r#"{"call":"login","token":"t","uid":"u1"}"#).unwrap();
        assert_eq!(
            c,
            Call::Login {
                token: "t".into(),
                uid: "u1".into()
            }
        );
        let c: Call =
            serde_json::from_str(r#"{"call":"joinRoom","roomId":"r1","uid":"u1","token":"t"}"#)
                .unwrap();
        assert_eq!(
            c,
            Call::JoinRoom {
                room_id: "r1".into(),
                uid: "u1".into(),
                token: "t".into()
            }
        );
        assert_eq!(
            serde_json::from_str::<Call>(r#"{"call":"logout"}"#).unwrap(),
            Call::Logout
        );
        assert!(serde_json::from_str::<Call>(r#"{"call":"fly"}"#).is_err());
        let e = Event::LoginResult {
            uid: "u1".into(),
            error_code: -1000,
        };
        assert_eq!(
            e.to_json(),
            r#"{"event":"onLoginResult","uid":"u1","errorCode":-1000}"#
        );
    }

    #[test]
    fn message_frames_round_trip() {
        for (kind, room) in [
            (MessageKind::OutsideRoom, None),
            (MessageKind::RoomUser, Some("r1")),
            (MessageKind::RoomBroadcast, Some("r1")),
        ] {
            for binary in [false, true] {
                let d = Delivery::encode(kind, "bot", room, binary, b"hello");
                let mut frame = BytesMut::new();
                d.put_prefix(42, &mut frame);
                frame.extend_from_slice(d.body());
                assert_eq!(frame.len(), d.frame_len());
                let m = ReceivedMessage::decode(frame.freeze()).unwrap();
                assert_eq!(m.kind, kind);
                assert_eq!(m.msgid, 42);
                assert_eq!(m.uid, "bot");
                assert_eq!(m.room_id.as_deref(), room);
                assert_eq!(m.binary, binary);
                assert_eq!(&m.payload[..], b"hello");
            }
        }
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let d = Delivery::encode(MessageKind::RoomUser, "bot", Some("room"), false, b"x");
        let mut frame = BytesMut::new();
        d.put_prefix(1, &mut frame);
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
