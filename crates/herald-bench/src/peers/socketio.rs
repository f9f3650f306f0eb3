//! Engine.IO 4 and Socket.IO 5 over a raw WebSocket, as much as the benchmark speaks.
//!
//! The client connects to `/socket.io/?EIO=4&transport=websocket`. Each WebSocket text message is
//! one Engine.IO packet: a type digit and data. The server opens with `0{"sid":…,"pingInterval":…}`
//! and pings with `2`, which the client must answer `3` or be dropped. Type `4` carries a
//! Socket.IO packet, itself a type digit and data: `0` connect (`40{"uid":"u7"}` from the client,
//! with its `auth`; `40{"sid":…}` back), `4` connect error, `2` event (`42["msg","…"]`), `3` the
//! acknowledgement of an event that asked for one (`42<id>["join","r0"]` is answered `43<id>[…]`).
//!
//! Messages arrive as `42["msg","<payload>"]`; the benchmark's payloads are ASCII letters and
//! digits, so the string is read between its quotes without JSON unescaping.

/// The WebSocket path and query of an Engine.IO 4 connection without long-polling.
pub const PATH: &str = "/socket.io/?EIO=4&transport=websocket";

/// The answer to the server's ping.
pub const PONG: &str = "3";

/// The event messages arrive in (`server.js` emits it).
pub const MESSAGE_EVENT: &str = "msg";

/// The Socket.IO connect packet to the default namespace, with `{"uid":…}` as `auth` when given.
pub fn connect(uid: Option<&str>) -> String {
    match uid {
        Some(uid) => format!("40{}", serde_json::json!({ "uid": uid })),
        None => "40".to_owned(),
    }
}

/// An event with one string argument that asks for an acknowledgement numbered `ack`.
pub fn event_with_ack(ack: u64, name: &str, arg: &str) -> String {
    format!("42{ack}{}", serde_json::json!([name, arg]))
}

/// One Engine.IO packet from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerPacket<'a> {
    /// `0{…}`: the handshake.
    Open,
    /// `1`: the server closes.
    Close,
    /// `2`: answer [`PONG`].
    Ping,
    /// `40{…}`: connected to the namespace.
    Connected,
    /// `44{…}`: the connection to the namespace was refused, with the reason.
    ConnectError(&'a [u8]),
    /// `42["msg","…"]`: a message, with its payload.
    Message(&'a [u8]),
    /// `43<id>[…]`: the acknowledgement of our event `id`.
    Ack(u64),
    /// `41`: disconnected from the namespace.
    Disconnected,
    /// Anything else (another event, a noop): ignored.
    Other,
}

/// Reads one text message from the server.
pub fn parse(text: &[u8]) -> ServerPacket<'_> {
    match text {
        [b'0', ..] => ServerPacket::Open,
        [b'1', ..] => ServerPacket::Close,
        [b'2', ..] => ServerPacket::Ping,
        [b'4', b'0', ..] => ServerPacket::Connected,
        [b'4', b'1', ..] => ServerPacket::Disconnected,
        [b'4', b'4', rest @ ..] => ServerPacket::ConnectError(rest),
        [b'4', b'2', rest @ ..] => message(rest).map_or(ServerPacket::Other, ServerPacket::Message),
        [b'4', b'3', rest @ ..] => {
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            std::str::from_utf8(&rest[..digits])
                .ok()
                .and_then(|d| d.parse().ok())
                .map_or(ServerPacket::Other, ServerPacket::Ack)
        }
        _ => ServerPacket::Other,
    }
}

/// The string argument of a `["msg","…"]` event array.
fn message(array: &[u8]) -> Option<&[u8]> {
    let prefix = format!("[\"{MESSAGE_EVENT}\",\"");
    let rest = array.strip_prefix(prefix.as_bytes())?;
    let end = rest.iter().position(|&b| b == b'"')?;
    (rest.get(end + 1) == Some(&b']')).then(|| &rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_client_packets() {
        assert_eq!(connect(Some("u7")), r#"40{"uid":"u7"}"#);
        assert_eq!(connect(None), "40");
        assert_eq!(event_with_ack(3, "join", "r0"), r#"423["join","r0"]"#);
    }

    #[test]
    fn parses_server_packets() {
        let open = br#"0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        assert_eq!(parse(open), ServerPacket::Open);
        assert_eq!(parse(b"2"), ServerPacket::Ping);
        assert_eq!(parse(b"1"), ServerPacket::Close);
        assert_eq!(parse(br#"40{"sid":"xyz"}"#), ServerPacket::Connected);
        assert_eq!(parse(b"41"), ServerPacket::Disconnected);
        assert_eq!(
            parse(br#"44{"message":"nope"}"#),
            ServerPacket::ConnectError(br#"{"message":"nope"}"#)
        );
        assert_eq!(
            parse(br#"42["msg","HB00ffxxxx"]"#),
            ServerPacket::Message(b"HB00ffxxxx")
        );
        assert_eq!(parse(br#"42["other","x"]"#), ServerPacket::Other);
        assert_eq!(parse(br#"42["msg","x""#), ServerPacket::Other);
        assert_eq!(parse(br#"4312["ok"]"#), ServerPacket::Ack(12));
        assert_eq!(parse(b"6"), ServerPacket::Other);
    }
}
