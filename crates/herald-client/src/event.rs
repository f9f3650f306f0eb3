//! [`Event`]: everything a connection reports, named as the vendor's callbacks are.

use base64::Engine as _;
use bytes::Bytes;
use herald_proto::client::{MessageKind, ReceivedMessage};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{json, Value};

/// One callback of the connection, with the vendor's name (see [`Event::name`]) and arguments.
///
/// Events arrive on the [`EventStream`](crate::EventStream) in the order the server produced them;
/// [`Event::ConnectionClosed`] is always the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `onLoginResult`: the answer to [`Engine::login`](crate::Engine::login).
    LoginResult {
        /// The user id of the login.
        uid: String,
        /// A `LoginErrorCode` (`herald_proto::client::login_error`): 0 on success.
        error_code: i32,
        /// Milliseconds from the `login` call to this result, measured by the SDK (0 when no
        /// `login` call of this connection is waiting for an answer).
        elapsed: u64,
    },
    /// `onLogout`: the login ended.
    Logout {
        /// A `LogoutReason` (`herald_proto::client::logout_reason`): 0 after
        /// [`Engine::logout`](crate::Engine::logout), 1 when another login of the same uid
        /// replaced this one.
        reason: i32,
    },
    /// `onRoomStateChanged`: the answer to [`Engine::join_room`](crate::Engine::join_room), or a
    /// later change (-1004 when another connection joined the room with the same uid).
    RoomStateChanged {
        /// The room.
        room_id: String,
        /// The user id in the room.
        uid: String,
        /// 0 when joined, otherwise the vendor's `ErrorCode` (`herald_proto::client::room_state`).
        state: i32,
        /// JSON built by the SDK as the vendor's is: `{"elapsed":ms,"join_type":0}`, where
        /// `elapsed` runs from the `joinRoom` call to this event (0 for a change nobody asked for).
        extra_info: String,
    },
    /// `onRecovery` (Herald's): the answer to a login or join that resumed a stream (the SDK
    /// resumes by itself when the connection was made with
    /// [`ConnectOptions::recovery`](crate::ConnectOptions::recovery) and it knows where the
    /// stream was). Comes
    /// right after the `LoginResult` / `RoomStateChanged`, before the replayed messages.
    Recovery {
        /// The room of a membership's stream; empty for the login's.
        room_id: String,
        /// The user id of the login or membership.
        uid: String,
        /// `true`: every message missed is being replayed (`replayed` of them follow, as the
        /// usual message events). `false`: some could not be recovered (the server forgot the
        /// stream, or they are older than its window); fetch the app's state afresh.
        recovered: bool,
        /// How many messages are replayed.
        replayed: u64,
    },
    /// `onLeaveRoom`: the answer to [`Engine::leave_room`](crate::Engine::leave_room).
    LeaveRoom {
        /// The room.
        room_id: String,
    },
    /// `onUserMessageReceivedOutsideRoom`: a text message sent with `SendUnicast`.
    UserMessageReceivedOutsideRoom {
        /// This connection's message number: 1 for the first message, then +1 each.
        msgid: u64,
        /// The sender (the OpenAPI's `From`).
        uid: String,
        /// The text.
        message: String,
    },
    /// `onUserBinaryMessageReceivedOutsideRoom`: a binary message sent with `SendUnicast`.
    UserBinaryMessageReceivedOutsideRoom {
        /// This connection's message number.
        msgid: u64,
        /// The sender.
        uid: String,
        /// The bytes.
        message: Bytes,
    },
    /// `onUserMessageReceived`: a text message to this user in a room (`SendRoomUnicast`,
    /// `BatchSendRoomUnicast`).
    UserMessageReceived {
        /// The room.
        room_id: String,
        /// This connection's message number.
        msgid: u64,
        /// The sender.
        uid: String,
        /// The text.
        message: String,
    },
    /// `onUserBinaryMessageReceived`: the binary form of [`Event::UserMessageReceived`].
    UserBinaryMessageReceived {
        /// The room.
        room_id: String,
        /// This connection's message number.
        msgid: u64,
        /// The sender.
        uid: String,
        /// The bytes.
        message: Bytes,
    },
    /// `onRoomMessageReceived`: a text message to the whole room (`SendBroadcast`).
    RoomMessageReceived {
        /// The room.
        room_id: String,
        /// This connection's message number.
        msgid: u64,
        /// The sender.
        uid: String,
        /// The text.
        message: String,
    },
    /// `onRoomBinaryMessageReceived`: the binary form of [`Event::RoomMessageReceived`].
    RoomBinaryMessageReceived {
        /// The room.
        room_id: String,
        /// This connection's message number.
        msgid: u64,
        /// The sender.
        uid: String,
        /// The bytes.
        message: Bytes,
    },
    /// `onUserJoined`: another user joined a room this connection is in. Also reported once for
    /// each member already there, right after this connection's own `onRoomStateChanged(0)`.
    /// Sent only when the app's `presence_events` is on (the default).
    UserJoined {
        /// The room.
        room_id: String,
        /// Who joined (their user id in the room).
        uid: String,
    },
    /// `onUserLeave`: another user left a room this connection is in.
    UserLeave {
        /// The room.
        room_id: String,
        /// Who left.
        uid: String,
        /// Why (`herald_proto::client::user_leave_reason`): 0 `leaveRoom`, 1 connection lost,
        /// 3 removed by the business server (`KickUser`).
        reason: i32,
    },
    /// `onUserMessageSendResultOutsideRoom`: the result of
    /// [`Engine::send_user_message_outside_room`](crate::Engine::send_user_message_outside_room)
    /// or its binary form.
    UserMessageSendResultOutsideRoom {
        /// The msgid the send returned.
        msgid: u64,
        /// A `UserMessageSendResult` (`herald_proto::client::send_result`): 0 when delivered.
        error: i32,
    },
    /// `onUserMessageSendResult`: the result of
    /// [`Engine::send_user_message`](crate::Engine::send_user_message) or its binary form.
    UserMessageSendResult {
        /// The room the message was sent in.
        room_id: String,
        /// The msgid the send returned.
        msgid: u64,
        /// A `UserMessageSendResult` (`herald_proto::client::send_result`): 0 when delivered.
        error: i32,
    },
    /// `onRoomMessageSendResult`: the result of
    /// [`Engine::send_room_message`](crate::Engine::send_room_message) or its binary form.
    RoomMessageSendResult {
        /// The room.
        room_id: String,
        /// The msgid the send returned.
        msgid: u64,
        /// A `RoomMessageSendResult` (`herald_proto::client::room_send_result`): **200** when
        /// delivered, as the vendor has it.
        error: i32,
    },
    /// `onServerMessageSendResult`: the result of
    /// [`Engine::send_server_message`](crate::Engine::send_server_message) or its binary form.
    ServerMessageSendResult {
        /// The msgid the send returned.
        msgid: u64,
        /// A `UserMessageSendResult` (`herald_proto::client::send_result`): 0 when the business
        /// server answered 200.
        error: i32,
        /// The business server's response body, as it sent it (empty unless it answered 200).
        message: Bytes,
    },
    /// `onGetPeerOnlineStatus`: the answer to
    /// [`Engine::get_peer_online_status`](crate::Engine::get_peer_online_status).
    GetPeerOnlineStatus {
        /// The user asked about.
        peer_user_id: String,
        /// A `UserOnlineStatus` (`herald_proto::client::online_status`): 1 logged in, 0 not.
        status: i32,
    },
    /// `onTokenWillExpire`: the token of a joined room expires in 30 seconds or less; renew it
    /// with [`Engine::update_token`](crate::Engine::update_token).
    TokenWillExpire {
        /// The room.
        room_id: String,
    },
    /// `onServerParamsSetResult`: the answer to
    /// [`Engine::set_server_params`](crate::Engine::set_server_params).
    ServerParamsSetResult {
        /// 200 when set; otherwise a `UserMessageSendResult` (`herald_proto::client::send_result`):
        /// 105 not logged in, 106 empty signature or a URL the app does not allow.
        error: i32,
    },
    /// `onError`: the server could not act on a call (`herald_proto::client::error_code`). The
    /// connection stays open.
    Error {
        /// The code.
        error_code: i32,
        /// What was wrong.
        message: String,
    },
    /// `onConnectionClosed`: the connection has ended. Always the last event.
    ConnectionClosed {
        /// The close code the server sent (`herald_proto::client::close_code` and RFC 6455), or
        /// `None` when the connection ended without one.
        code: Option<u16>,
        /// The close reason, or what ended the connection.
        reason: String,
    },
}

impl Event {
    /// The vendor's callback name.
    ///
    /// ```
    /// use herald_client::Event;
    /// let e = Event::Logout { reason: 0 };
    /// assert_eq!(e.name(), "onLogout");
    /// ```
    pub fn name(&self) -> &'static str {
        match self {
            Event::LoginResult { .. } => "onLoginResult",
            Event::Logout { .. } => "onLogout",
            Event::RoomStateChanged { .. } => "onRoomStateChanged",
            Event::LeaveRoom { .. } => "onLeaveRoom",
            Event::Recovery { .. } => "onRecovery",
            Event::UserMessageReceivedOutsideRoom { .. } => "onUserMessageReceivedOutsideRoom",
            Event::UserBinaryMessageReceivedOutsideRoom { .. } => {
                "onUserBinaryMessageReceivedOutsideRoom"
            }
            Event::UserMessageReceived { .. } => "onUserMessageReceived",
            Event::UserBinaryMessageReceived { .. } => "onUserBinaryMessageReceived",
            Event::RoomMessageReceived { .. } => "onRoomMessageReceived",
            Event::RoomBinaryMessageReceived { .. } => "onRoomBinaryMessageReceived",
            Event::UserJoined { .. } => "onUserJoined",
            Event::UserLeave { .. } => "onUserLeave",
            Event::UserMessageSendResultOutsideRoom { .. } => "onUserMessageSendResultOutsideRoom",
            Event::UserMessageSendResult { .. } => "onUserMessageSendResult",
            Event::RoomMessageSendResult { .. } => "onRoomMessageSendResult",
            Event::ServerMessageSendResult { .. } => "onServerMessageSendResult",
            Event::GetPeerOnlineStatus { .. } => "onGetPeerOnlineStatus",
            Event::ServerParamsSetResult { .. } => "onServerParamsSetResult",
            Event::TokenWillExpire { .. } => "onTokenWillExpire",
            Event::Error { .. } => "onError",
            Event::ConnectionClosed { .. } => "onConnectionClosed",
        }
    }

    /// The event as one JSON object: `"event"` holds [`Event::name`], the arguments follow with the
    /// vendor's camelCase names. Binary messages carry standard base64 in `"message"` and
    /// `"binary": true`.
    ///
    /// The business server's answer in `onServerMessageSendResult` is bytes whose kind nobody
    /// declared: it is printed as text when it is valid UTF-8 (the usual case, a JSON or text body),
    /// and otherwise as base64 with `"binary": true`, like a binary message.
    ///
    /// A [`Value`]'s keys come out in `serde_json`'s map order; [`Event::to_json_line`] writes the
    /// same object with the keys in the documented order.
    ///
    /// ```
    /// use herald_client::Event;
    /// let e = Event::LeaveRoom { room_id: "r1".into() };
    /// assert_eq!(e.to_json()["roomId"], "r1");
    /// ```
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.fields()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        )
    }

    /// [`Event::to_json`] as one line of text, keys in the documented order (`"event"` first, then
    /// the vendor's arguments in the callback's order). This is what `herald client` prints.
    ///
    /// ```
    /// use herald_client::Event;
    /// let e = Event::RoomMessageReceived {
    ///     room_id: "r1".into(),
    ///     msgid: 2,
    ///     uid: "server_bot".into(),
    ///     message: "hi".into(),
    /// };
    /// assert_eq!(
    ///     e.to_json_line(),
    ///     r#"{"event":"onRoomMessageReceived","roomId":"r1","msgid":2,"uid":"server_bot","message":"hi"}"#
    /// );
    /// ```
    pub fn to_json_line(&self) -> String {
        // Serialising strings and numbers into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The JSON fields, in order. The one place that names them.
    fn fields(&self) -> Vec<(&'static str, Value)> {
        let b64 = |b: &Bytes| Value::from(base64::engine::general_purpose::STANDARD.encode(b));
        let mut f = vec![("event", Value::from(self.name()))];
        match self {
            Event::LoginResult {
                uid,
                error_code,
                elapsed,
            } => f.extend([
                ("uid", json!(uid)),
                ("errorCode", json!(error_code)),
                ("elapsed", json!(elapsed)),
            ]),
            Event::Logout { reason } => f.push(("reason", json!(reason))),
            Event::RoomStateChanged {
                room_id,
                uid,
                state,
                extra_info,
            } => f.extend([
                ("roomId", json!(room_id)),
                ("uid", json!(uid)),
                ("state", json!(state)),
                ("extraInfo", json!(extra_info)),
            ]),
            Event::LeaveRoom { room_id } => f.push(("roomId", json!(room_id))),
            Event::Recovery {
                room_id,
                uid,
                recovered,
                replayed,
            } => f.extend([
                ("roomId", json!(room_id)),
                ("uid", json!(uid)),
                ("recovered", json!(recovered)),
                ("replayed", json!(replayed)),
            ]),
            Event::UserMessageReceivedOutsideRoom {
                msgid,
                uid,
                message,
            } => f.extend([
                ("msgid", json!(msgid)),
                ("uid", json!(uid)),
                ("message", json!(message)),
            ]),
            Event::UserBinaryMessageReceivedOutsideRoom {
                msgid,
                uid,
                message,
            } => f.extend([
                ("msgid", json!(msgid)),
                ("uid", json!(uid)),
                ("message", b64(message)),
                ("binary", json!(true)),
            ]),
            Event::UserMessageReceived {
                room_id,
                msgid,
                uid,
                message,
            }
            | Event::RoomMessageReceived {
                room_id,
                msgid,
                uid,
                message,
            } => f.extend([
                ("roomId", json!(room_id)),
                ("msgid", json!(msgid)),
                ("uid", json!(uid)),
                ("message", json!(message)),
            ]),
            Event::UserBinaryMessageReceived {
                room_id,
                msgid,
                uid,
                message,
            }
            | Event::RoomBinaryMessageReceived {
                room_id,
                msgid,
                uid,
                message,
            } => f.extend([
                ("roomId", json!(room_id)),
                ("msgid", json!(msgid)),
                ("uid", json!(uid)),
                ("message", b64(message)),
                ("binary", json!(true)),
            ]),
            Event::UserJoined { room_id, uid } => {
                f.extend([("roomId", json!(room_id)), ("uid", json!(uid))])
            }
            Event::UserLeave {
                room_id,
                uid,
                reason,
            } => f.extend([
                ("roomId", json!(room_id)),
                ("uid", json!(uid)),
                ("reason", json!(reason)),
            ]),
            Event::UserMessageSendResultOutsideRoom { msgid, error } => {
                f.extend([("msgid", json!(msgid)), ("error", json!(error))])
            }
            Event::UserMessageSendResult {
                room_id,
                msgid,
                error,
            }
            | Event::RoomMessageSendResult {
                room_id,
                msgid,
                error,
            } => f.extend([
                ("roomId", json!(room_id)),
                ("msgid", json!(msgid)),
                ("error", json!(error)),
            ]),
            Event::ServerMessageSendResult {
                msgid,
                error,
                message,
            } => {
                f.extend([("msgid", json!(msgid)), ("error", json!(error))]);
                match std::str::from_utf8(message) {
                    Ok(text) => f.push(("message", json!(text))),
                    Err(_) => f.extend([("message", b64(message)), ("binary", json!(true))]),
                }
            }
            Event::GetPeerOnlineStatus {
                peer_user_id,
                status,
            } => f.extend([
                ("peerUserId", json!(peer_user_id)),
                ("status", json!(status)),
            ]),
            Event::ServerParamsSetResult { error } => f.push(("error", json!(error))),
            Event::TokenWillExpire { room_id } => f.push(("roomId", json!(room_id))),
            Event::Error {
                error_code,
                message,
            } => f.extend([
                ("errorCode", json!(error_code)),
                ("message", json!(message)),
            ]),
            Event::ConnectionClosed { code, reason } => {
                f.extend([("code", json!(code)), ("reason", json!(reason))])
            }
        }
        f
    }

    /// The event of a decoded message frame.
    /// The connection's msgid of a received message (the `…Received…` events): what
    /// [`Engine::ack`](crate::Engine::ack) takes. `None` for every other event.
    pub fn received_msgid(&self) -> Option<u64> {
        match self {
            Event::UserMessageReceivedOutsideRoom { msgid, .. }
            | Event::UserBinaryMessageReceivedOutsideRoom { msgid, .. }
            | Event::UserMessageReceived { msgid, .. }
            | Event::UserBinaryMessageReceived { msgid, .. }
            | Event::RoomMessageReceived { msgid, .. }
            | Event::RoomBinaryMessageReceived { msgid, .. } => Some(*msgid),
            _ => None,
        }
    }

    pub(crate) fn from_message(m: ReceivedMessage) -> Event {
        let ReceivedMessage {
            kind,
            msgid,
            pos: _,
            uid,
            room_id,
            binary,
            payload,
        } = m;
        let room_id = room_id.unwrap_or_default();
        // `ReceivedMessage::decode` has checked that a text payload is UTF-8.
        let text = |p: Bytes| String::from_utf8_lossy(&p).into_owned();
        match (kind, binary) {
            (MessageKind::OutsideRoom, false) => Event::UserMessageReceivedOutsideRoom {
                msgid,
                uid,
                message: text(payload),
            },
            (MessageKind::OutsideRoom, true) => Event::UserBinaryMessageReceivedOutsideRoom {
                msgid,
                uid,
                message: payload,
            },
            (MessageKind::RoomUser, false) => Event::UserMessageReceived {
                room_id,
                msgid,
                uid,
                message: text(payload),
            },
            (MessageKind::RoomUser, true) => Event::UserBinaryMessageReceived {
                room_id,
                msgid,
                uid,
                message: payload,
            },
            (MessageKind::RoomBroadcast, false) => Event::RoomMessageReceived {
                room_id,
                msgid,
                uid,
                message: text(payload),
            },
            (MessageKind::RoomBroadcast, true) => Event::RoomBinaryMessageReceived {
                room_id,
                msgid,
                uid,
                message: payload,
            },
        }
    }
}

/// Serialises as [`Event::to_json_line`] shows: one object, keys in the documented order.
impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = self.fields();
        let mut map = serializer.serialize_map(Some(fields.len()))?;
        for (k, v) in &fields {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_proto::client::Delivery;

    fn decoded(kind: MessageKind, room: Option<&str>, binary: bool, payload: &[u8]) -> Event {
        let d = Delivery::encode(kind, "server_bot", room, binary, payload);
        let mut frame = bytes::BytesMut::new();
        d.put_prefix(7, None, &mut frame);
        frame.extend_from_slice(d.body());
        Event::from_message(ReceivedMessage::decode(frame.freeze()).unwrap())
    }

    #[test]
    fn message_lines_match_the_documented_format() {
        let e = decoded(MessageKind::OutsideRoom, None, false, b"hello");
        assert_eq!(
            e.to_json_line(),
            r#"{"event":"onUserMessageReceivedOutsideRoom","msgid":7,"uid":"server_bot","message":"hello"}"#
        );
        let e = decoded(MessageKind::RoomUser, Some("r1"), true, b"\x00\xff");
        assert_eq!(e.name(), "onUserBinaryMessageReceived");
        assert_eq!(
            e.to_json_line(),
            r#"{"event":"onUserBinaryMessageReceived","roomId":"r1","msgid":7,"uid":"server_bot","message":"AP8=","binary":true}"#
        );
        let e = decoded(MessageKind::RoomBroadcast, Some("r1"), true, b"x");
        assert_eq!(e.name(), "onRoomBinaryMessageReceived");
        let e = decoded(MessageKind::OutsideRoom, None, true, b"x");
        assert_eq!(e.name(), "onUserBinaryMessageReceivedOutsideRoom");
    }

    #[test]
    fn control_lines_use_the_vendor_argument_names() {
        let e = Event::LoginResult {
            uid: "u1".into(),
            error_code: 0,
            elapsed: 12,
        };
        assert_eq!(
            e.to_json_line(),
            r#"{"event":"onLoginResult","uid":"u1","errorCode":0,"elapsed":12}"#
        );
        let e = Event::RoomStateChanged {
            room_id: "r1".into(),
            uid: "u1".into(),
            state: 0,
            extra_info: r#"{"elapsed":3,"join_type":0}"#.into(),
        };
        assert_eq!(
            e.to_json_line(),
            r#"{"event":"onRoomStateChanged","roomId":"r1","uid":"u1","state":0,"extraInfo":"{\"elapsed\":3,\"join_type\":0}"}"#
        );
        let e = Event::ConnectionClosed {
            code: None,
            reason: "reset".into(),
        };
        assert_eq!(
            e.to_json_line(),
            r#"{"event":"onConnectionClosed","code":null,"reason":"reset"}"#
        );
        let e = Event::Error {
            error_code: 4003,
            message: "bad".into(),
        };
        assert_eq!(
            e.to_json_line(),
            r#"{"event":"onError","errorCode":4003,"message":"bad"}"#
        );
    }

    #[test]
    fn messaging_lines_use_the_vendor_argument_names() {
        let lines = [
            (
                Event::UserJoined {
                    room_id: "r1".into(),
                    uid: "u2".into(),
                },
                r#"{"event":"onUserJoined","roomId":"r1","uid":"u2"}"#,
            ),
            (
                Event::UserLeave {
                    room_id: "r1".into(),
                    uid: "u2".into(),
                    reason: 1,
                },
                r#"{"event":"onUserLeave","roomId":"r1","uid":"u2","reason":1}"#,
            ),
            (
                Event::UserMessageSendResultOutsideRoom { msgid: 1, error: 3 },
                r#"{"event":"onUserMessageSendResultOutsideRoom","msgid":1,"error":3}"#,
            ),
            (
                Event::UserMessageSendResult {
                    room_id: "r1".into(),
                    msgid: 2,
                    error: 0,
                },
                r#"{"event":"onUserMessageSendResult","roomId":"r1","msgid":2,"error":0}"#,
            ),
            (
                Event::RoomMessageSendResult {
                    room_id: "r1".into(),
                    msgid: 3,
                    error: 200,
                },
                r#"{"event":"onRoomMessageSendResult","roomId":"r1","msgid":3,"error":200}"#,
            ),
            (
                Event::ServerMessageSendResult {
                    msgid: 4,
                    error: 0,
                    message: Bytes::from_static(br#"{"ok":true}"#),
                },
                r#"{"event":"onServerMessageSendResult","msgid":4,"error":0,"message":"{\"ok\":true}"}"#,
            ),
            (
                Event::ServerMessageSendResult {
                    msgid: 5,
                    error: 0,
                    message: Bytes::from_static(b"\x00\xff"),
                },
                r#"{"event":"onServerMessageSendResult","msgid":5,"error":0,"message":"AP8=","binary":true}"#,
            ),
            (
                Event::ServerMessageSendResult {
                    msgid: 6,
                    error: 17,
                    message: Bytes::new(),
                },
                r#"{"event":"onServerMessageSendResult","msgid":6,"error":17,"message":""}"#,
            ),
            (
                Event::GetPeerOnlineStatus {
                    peer_user_id: "u2".into(),
                    status: 1,
                },
                r#"{"event":"onGetPeerOnlineStatus","peerUserId":"u2","status":1}"#,
            ),
            (
                Event::ServerParamsSetResult { error: 200 },
                r#"{"event":"onServerParamsSetResult","error":200}"#,
            ),
        ];
        for (event, line) in lines {
            assert_eq!(event.to_json_line(), line);
            assert_eq!(event.to_json()["event"], event.name());
        }
    }
}
