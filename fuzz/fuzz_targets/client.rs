//! The client protocol (herald-proto `client.rs`).
//!
//! Input: one selector byte, then (selector % 6) 0: a JSON call; 1: a JSON event; 2: a binary
//! send frame (client → server); 3: a binary message frame (server → client); 4, 5: the fields
//! of a send frame / a message to encode.
//!
//! Checked: decoding never panics; whatever decodes re-encodes to the same value (JSON calls and
//! events) or the same bytes (send frames; message frames in their canonical form); anything
//! encoded decodes to what was encoded.
#![no_main]

use bytes::{Bytes, BytesMut};
use herald_fuzz::Cursor;
use herald_proto::client::{
    Call, Delivery, Event, MessageKind, ReceivedMessage, SendFrame, SendOp, StreamPos, PREFIX_LEN,
    STREAM_PREFIX_LEN,
};
use libfuzzer_sys::fuzz_target;

fn calls(json: &[u8]) {
    if let Ok(call) = serde_json::from_slice::<Call>(json) {
        let text = serde_json::to_string(&call).unwrap();
        assert_eq!(serde_json::from_str::<Call>(&text).unwrap(), call, "{text}");
    }
}

fn events(json: &[u8]) {
    if let Ok(event) = serde_json::from_slice::<Event>(json) {
        let text = event.to_json();
        assert_eq!(text, serde_json::to_string(&event).unwrap());
        assert_eq!(
            serde_json::from_str::<Event>(&text).unwrap(),
            event,
            "{text}"
        );
    }
}

fn send_frame(frame: &[u8]) {
    if let Ok(f) = SendFrame::decode(Bytes::copy_from_slice(frame)) {
        assert!(f.to.len() <= 255 && f.room_id.len() <= 255);
        assert!(f.binary || std::str::from_utf8(&f.payload).is_ok());
        assert_eq!(&f.encode()[..], frame, "{f:?}");
    }
}

fn frame_of(d: &Delivery, msgid: u64, pos: Option<StreamPos>) -> Bytes {
    let mut out = BytesMut::new();
    d.put_prefix(msgid, pos, &mut out);
    out.extend_from_slice(d.body());
    assert_eq!(out.len(), d.frame_len(pos));
    out.freeze()
}

fn message_frame(frame: &[u8]) {
    let Ok(m) = ReceivedMessage::decode(Bytes::copy_from_slice(frame)) else {
        return;
    };
    assert!(m.binary || std::str::from_utf8(&m.payload).is_ok());
    assert_eq!(m.room_id.is_some(), m.kind != MessageKind::OutsideRoom);
    let d = Delivery::encode(m.kind, &m.uid, m.room_id.as_deref(), m.binary, &m.payload);
    let again = frame_of(&d, m.msgid, m.pos);
    // The canonical form: a message outside rooms carries an empty room id. A non-empty one is
    // ignored by the decoder, so only the decoded value round-trips then.
    let at = if m.pos.is_some() {
        STREAM_PREFIX_LEN
    } else {
        PREFIX_LEN
    };
    let uid_len = usize::from(frame[at]);
    let room_len = frame[at + 1 + uid_len];
    if m.room_id.is_some() || room_len == 0 {
        assert_eq!(&again[..], frame, "{m:?}");
    }
    assert_eq!(ReceivedMessage::decode(again).unwrap(), m);
}

/// A string of at most 255 bytes (what the frames' length bytes can say).
fn short_string(c: &mut Cursor<'_>) -> String {
    let mut s = c.string();
    while s.len() > 255 {
        s.pop();
    }
    s
}

fn payload(c: &mut Cursor<'_>, binary: bool) -> Bytes {
    let bytes = c.long_chunk();
    if binary {
        Bytes::copy_from_slice(bytes)
    } else {
        Bytes::from(String::from_utf8_lossy(bytes).into_owned())
    }
}

fn build_send(c: &mut Cursor<'_>) {
    let op = [
        SendOp::UserOutsideRoom,
        SendOp::UserInRoom,
        SendOp::Room,
        SendOp::Server,
    ][usize::from(c.u8() % 4)];
    let binary = c.u8() & 1 == 1;
    let f = SendFrame {
        op,
        msgid: c.u64(),
        to: short_string(c),
        room_id: short_string(c),
        binary,
        payload: payload(c, binary),
    };
    assert_eq!(SendFrame::decode(f.encode()).as_ref(), Ok(&f));
}

fn build_delivery(c: &mut Cursor<'_>) {
    let kind = [
        MessageKind::OutsideRoom,
        MessageKind::RoomUser,
        MessageKind::RoomBroadcast,
    ][usize::from(c.u8() % 3)];
    let binary = c.u8() & 1 == 1;
    let msgid = c.u64();
    let pos = (c.u8() & 1 == 1).then(|| StreamPos {
        epoch: c.u64(),
        position: c.u64(),
    });
    let from = short_string(c);
    let room = short_string(c);
    let room = (kind != MessageKind::OutsideRoom).then_some(room);
    let payload = payload(c, binary);
    let d = Delivery::encode(kind, &from, room.as_deref(), binary, &payload);
    assert_eq!(Delivery::from_parts(d.flags(), d.body().clone()), d);
    let m = ReceivedMessage::decode(frame_of(&d, msgid, pos)).expect("an encoded message decodes");
    assert_eq!(
        m,
        ReceivedMessage {
            kind,
            msgid,
            pos,
            uid: from,
            room_id: room,
            binary,
            payload,
        }
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 6 {
        0 => calls(rest),
        1 => events(rest),
        2 => send_frame(rest),
        3 => message_frame(rest),
        4 => build_send(&mut Cursor::new(rest)),
        _ => build_delivery(&mut Cursor::new(rest)),
    }
});
