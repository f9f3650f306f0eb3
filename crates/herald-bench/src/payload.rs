//! What the benchmark sends and how it reads it back.
//!
//! Every message's payload starts with a stamp, `HB`, the send time as 16 hex digits
//! (nanoseconds since the benchmark's start, from one monotonic clock shared by the sending and the
//! receiving side of the same process) and the sender (the API connection that made the call) as
//! 2 hex digits, padded with `x` to the chosen size. The payload is plain text, so the OpenAPI body
//! needs no base64 and no JSON escaping. A sender stamps its calls in the order it makes them, so
//! a recipient that sees one sender's stamps go backwards got them out of order, and one that
//! sees the same stamp twice got a duplicate.
//!
//! Received frames are read in place ([`parse_message`]) rather than with
//! `herald_proto::client::ReceivedMessage::decode`, which allocates the sender and room ids and
//! validates the payload as UTF-8: at hundreds of thousands of messages a second on a machine shared
//! with the server, that work would be measured instead of the server. A test checks both readings
//! agree on frames made by `herald_proto`'s own encoder.

use herald_proto::client::{flags, FRAME_MESSAGE, PREFIX_LEN, STREAM_PREFIX_LEN};

/// The stamp's marker.
const MAGIC: &[u8; 2] = b"HB";

/// Length of the stamp: marker, 16 hex digits of time and 2 of sender.
pub const STAMP_LEN: usize = 20;

/// What a payload's stamp says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// When its call was made (nanoseconds since the benchmark's start).
    pub sent_ns: u64,
    /// Which API connection made it.
    pub sender: u8,
}

/// A payload of `size` bytes (at least [`STAMP_LEN`]) stamped with `sent_ns` and `sender`.
pub fn stamped(size: usize, sent_ns: u64, sender: u8) -> String {
    let mut s = String::with_capacity(size.max(STAMP_LEN));
    s.push_str("HB");
    s.push_str(&format!("{sent_ns:016x}{sender:02x}"));
    while s.len() < size {
        s.push('x');
    }
    s
}

fn hex(digits: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &c in digits {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = v << 4 | u64::from(d);
    }
    Some(v)
}

/// The stamp of a payload, if it carries one.
pub fn stamp_of(payload: &[u8]) -> Option<Stamp> {
    if payload.len() < STAMP_LEN || &payload[..2] != MAGIC {
        return None;
    }
    Some(Stamp {
        sent_ns: hex(&payload[2..18])?,
        sender: u8::try_from(hex(&payload[18..STAMP_LEN])?).ok()?,
    })
}

/// The fields of a message frame the benchmark checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// The per-connection number, from 1.
    pub msgid: u64,
    /// The flags byte.
    pub flags: u8,
    /// The payload.
    pub payload: &'a [u8],
}

/// Reads a message frame (`docs/protocol.md`, "Messages") without copying. `None` when the frame
/// is not a well-formed message frame.
pub fn parse_message(frame: &[u8]) -> Option<Message<'_>> {
    if frame.len() < PREFIX_LEN + 2 || frame[0] != FRAME_MESSAGE {
        return None;
    }
    let f = frame[1];
    if f & !(flags::BINARY | flags::ROOM | flags::BROADCAST | flags::STREAM) != 0 {
        return None;
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&frame[2..PREFIX_LEN]);
    // A stream position (recovery on) sits between the msgid and the sender.
    let at = if f & flags::STREAM != 0 {
        STREAM_PREFIX_LEN
    } else {
        PREFIX_LEN
    };
    let uid_len = usize::from(*frame.get(at)?);
    let room_at = at + 1 + uid_len;
    let room_len = usize::from(*frame.get(room_at)?);
    let payload = frame.get(room_at + 1 + room_len..)?;
    Some(Message {
        msgid: u64::from_le_bytes(id),
        flags: f,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use herald_proto::client::{Delivery, MessageKind, ReceivedMessage, StreamPos};

    #[test]
    fn stamps_round_trip() {
        let p = stamped(100, 0x0123_4567_89ab_cdef, 0xa7);
        assert_eq!(p.len(), 100);
        let s = stamp_of(p.as_bytes()).unwrap();
        assert_eq!((s.sent_ns, s.sender), (0x0123_4567_89ab_cdef, 0xa7));
        assert_eq!(stamped(1, 5, 0).len(), STAMP_LEN);
        assert_eq!(stamp_of(b"HBxyz"), None);
        assert_eq!(stamp_of(b"hello world, not stamped"), None);
    }

    #[test]
    fn reads_frames_as_herald_proto_does() {
        let payload = stamped(64, 42, 3);
        for (kind, room) in [
            (MessageKind::OutsideRoom, None),
            (MessageKind::RoomUser, Some("r1")),
            (MessageKind::RoomBroadcast, Some("room-7")),
        ] {
            let d = Delivery::encode(kind, "bench", room, false, payload.as_bytes());
            let pos = StreamPos {
                epoch: 3,
                position: 4,
            };
            for pos in [None, Some(pos)] {
                let mut frame = BytesMut::new();
                d.put_prefix(9, pos, &mut frame);
                frame.extend_from_slice(d.body());
                let frame = frame.freeze();
                let theirs = ReceivedMessage::decode(frame.clone()).unwrap();
                let ours = parse_message(&frame).unwrap();
                assert_eq!(ours.msgid, theirs.msgid);
                assert_eq!(ours.payload, &theirs.payload[..]);
                assert_eq!(ours.flags & !flags::STREAM, d.flags());
                assert_eq!(stamp_of(ours.payload).map(|s| s.sent_ns), Some(42));
                for cut in 0..frame.len() - payload.len() {
                    assert!(parse_message(&frame[..cut]).is_none(), "cut at {cut}");
                }
            }
        }
    }
}
