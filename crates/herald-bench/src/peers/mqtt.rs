//! MQTT 3.1.1, as much as the benchmark speaks: `CONNECT`, `SUBSCRIBE`, `UNSUBSCRIBE`, `PUBLISH`
//! at QoS 0, `PINGREQ` and `DISCONNECT` out; `CONNACK`, `SUBACK`, `UNSUBACK`, `PUBLISH`,
//! `PINGRESP` in.
//!
//! A packet is a fixed header (type and flags in one byte, then the remaining length as a
//! variable-length integer of one to four bytes, seven bits each, low first) and the rest.
//! Strings are a big-endian `u16` length and the bytes. Over WebSocket (subprotocol `mqtt`)
//! packets travel in binary messages that may cut them anywhere
//! ([`super::stream::Reassembly`]).
//!
//! Topics: user `u7` receives on `u/u7`, room `r0` on `r/r0`.

use std::io;

use super::stream::invalid;

/// `CONNECT`.
pub const CONNECT: u8 = 1;
/// `CONNACK`.
pub const CONNACK: u8 = 2;
/// `PUBLISH`.
pub const PUBLISH: u8 = 3;
/// `SUBACK`.
pub const SUBACK: u8 = 9;
/// `UNSUBACK`.
pub const UNSUBACK: u8 = 11;
/// `PINGRESP`.
pub const PINGRESP: u8 = 13;

/// `PINGREQ`: the broker answers `PINGRESP` once it has processed what came before.
pub const PINGREQ: &[u8] = &[0xc0, 0];

/// `DISCONNECT`.
pub const DISCONNECT: &[u8] = &[0xe0, 0];

/// Largest remaining length the encoding can express (four bytes of seven bits).
const MAX_REMAINING: usize = 268_435_455;

/// The topic user `uid` receives on.
pub fn user_topic(uid: &str) -> String {
    format!("u/{uid}")
}

/// The topic of room `room`.
pub fn room_topic(room: &str) -> String {
    format!("r/{room}")
}

/// Appends the remaining-length encoding of `len`.
pub fn put_remaining_length(out: &mut Vec<u8>, mut len: usize) {
    debug_assert!(len <= MAX_REMAINING);
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

/// Reads a remaining length: the value and the bytes it took, `None` if incomplete.
pub fn remaining_length(buf: &[u8]) -> io::Result<Option<(usize, usize)>> {
    let mut value = 0usize;
    for (i, &b) in buf.iter().enumerate().take(4) {
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        Err(invalid("MQTT remaining length longer than four bytes"))
    } else {
        Ok(None)
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// Appends a packet: fixed header byte, remaining length, body.
fn packet(out: &mut Vec<u8>, first: u8, body: &[u8]) {
    out.push(first);
    put_remaining_length(out, body.len());
    out.extend_from_slice(body);
}

/// Appends `CONNECT` with a clean session, `client_id` and a keep-alive in seconds.
pub fn connect(out: &mut Vec<u8>, client_id: &str, keep_alive_secs: u16) {
    let mut body = Vec::with_capacity(12 + client_id.len());
    put_str(&mut body, b"MQTT");
    body.push(4); // protocol level: 3.1.1
    body.push(0x02); // connect flags: clean session
    body.extend_from_slice(&keep_alive_secs.to_be_bytes());
    put_str(&mut body, client_id.as_bytes());
    packet(out, CONNECT << 4, &body);
}

/// Appends `SUBSCRIBE` to `topics` at QoS 0.
pub fn subscribe(out: &mut Vec<u8>, packet_id: u16, topics: &[String]) {
    let mut body = packet_id.to_be_bytes().to_vec();
    for t in topics {
        put_str(&mut body, t.as_bytes());
        body.push(0); // requested QoS
    }
    packet(out, 0x82, &body);
}

/// Appends `UNSUBSCRIBE` from `topics`.
pub fn unsubscribe(out: &mut Vec<u8>, packet_id: u16, topics: &[String]) {
    let mut body = packet_id.to_be_bytes().to_vec();
    for t in topics {
        put_str(&mut body, t.as_bytes());
    }
    packet(out, 0xa2, &body);
}

/// Appends `PUBLISH` at QoS 0 (no packet id).
pub fn publish(out: &mut Vec<u8>, topic: &str, payload: &[u8]) {
    out.push(PUBLISH << 4);
    put_remaining_length(out, 2 + topic.len() + payload.len());
    put_str(out, topic.as_bytes());
    out.extend_from_slice(payload);
}

/// One packet from the broker, borrowed from the stream.
#[derive(Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The packet type (`PUBLISH`, `CONNACK`, …).
    pub kind: u8,
    /// The low four bits of the first byte.
    pub flags: u8,
    /// Everything after the fixed header.
    pub body: &'a [u8],
}

impl<'a> Packet<'a> {
    /// A `PUBLISH`'s topic and payload.
    pub fn publish(&self) -> io::Result<(&'a [u8], &'a [u8])> {
        let b = self.body;
        if b.len() < 2 {
            return Err(invalid("short MQTT PUBLISH"));
        }
        let topic_end = 2 + usize::from(u16::from_be_bytes([b[0], b[1]]));
        // QoS 1 and 2 carry a packet id after the topic.
        let qos = (self.flags >> 1) & 3;
        let payload_at = topic_end + if qos > 0 { 2 } else { 0 };
        if b.len() < payload_at {
            return Err(invalid("short MQTT PUBLISH"));
        }
        Ok((&b[2..topic_end], &b[payload_at..]))
    }

    /// A `CONNACK`'s return code (0: accepted).
    pub fn connack_code(&self) -> io::Result<u8> {
        self.body
            .get(1)
            .copied()
            .ok_or_else(|| invalid("short MQTT CONNACK"))
    }

    /// A `SUBACK`'s return codes, one per topic (0x80: refused).
    pub fn suback_codes(&self) -> io::Result<&'a [u8]> {
        self.body
            .get(2..)
            .ok_or_else(|| invalid("short MQTT SUBACK"))
    }
}

/// Parses the packet `buf` starts with: the packet and the bytes it took, `None` when it has not
/// fully arrived.
pub fn parse(buf: &[u8]) -> io::Result<Option<(Packet<'_>, usize)>> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let Some((len, len_bytes)) = remaining_length(&buf[1..])? else {
        return Ok(None);
    };
    let start = 1 + len_bytes;
    if buf.len() < start + len {
        return Ok(None);
    }
    Ok(Some((
        Packet {
            kind: first >> 4,
            flags: first & 0x0f,
            body: &buf[start..start + len],
        },
        start + len,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_lengths_round_trip() {
        for len in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            MAX_REMAINING,
        ] {
            let mut out = Vec::new();
            put_remaining_length(&mut out, len);
            let expected_bytes = match len {
                0..=127 => 1,
                128..=16_383 => 2,
                16_384..=2_097_151 => 3,
                _ => 4,
            };
            assert_eq!(out.len(), expected_bytes, "{len}");
            assert_eq!(remaining_length(&out).unwrap(), Some((len, out.len())));
            assert_eq!(remaining_length(&out[..out.len() - 1]).unwrap(), None);
        }
        // The specification's examples: 321 is 0xC1 0x02.
        let mut out = Vec::new();
        put_remaining_length(&mut out, 321);
        assert_eq!(out, [0xc1, 0x02]);
        assert!(remaining_length(&[0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
    }

    #[test]
    fn encodes_client_packets() {
        let mut out = Vec::new();
        connect(&mut out, "u7", 60);
        assert_eq!(
            out,
            [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 2, b'u', b'7']
        );
        out.clear();
        subscribe(&mut out, 1, &[user_topic("u7")]);
        assert_eq!(out, [0x82, 9, 0, 1, 0, 4, b'u', b'/', b'u', b'7', 0]);
        out.clear();
        unsubscribe(&mut out, 2, &[room_topic("r0")]);
        assert_eq!(out, [0xa2, 8, 0, 2, 0, 4, b'r', b'/', b'r', b'0']);
        out.clear();
        publish(&mut out, "u/u7", b"hi");
        assert_eq!(out, [0x30, 8, 0, 4, b'u', b'/', b'u', b'7', b'h', b'i']);
    }

    #[test]
    fn parses_broker_packets() {
        let mut stream = vec![0x20, 2, 0, 0]; // CONNACK, accepted
        stream.extend_from_slice(&[0x90, 3, 0, 1, 0]); // SUBACK id 1, QoS 0
        publish(&mut stream, "u/u7", &[b'x'; 300]); // two-byte remaining length
        stream.extend_from_slice(&[0x32, 9, 0, 3, b'a', b'/', b'b', 0, 5, b'h', b'i']); // QoS 1
        stream.extend_from_slice(&[0xd0, 0]); // PINGRESP
        let mut at = 0;
        let mut seen = Vec::new();
        while let Some((p, n)) = parse(&stream[at..]).unwrap() {
            seen.push(p.kind);
            match p.kind {
                CONNACK => assert_eq!(p.connack_code().unwrap(), 0),
                SUBACK => assert_eq!(p.suback_codes().unwrap(), [0]),
                PUBLISH => {
                    let (topic, payload) = p.publish().unwrap();
                    if p.flags == 0 {
                        assert_eq!((topic, payload.len()), (&b"u/u7"[..], 300));
                    } else {
                        assert_eq!((topic, payload), (&b"a/b"[..], &b"hi"[..]));
                    }
                }
                _ => {}
            }
            at += n;
        }
        assert_eq!(at, stream.len());
        assert_eq!(seen, [CONNACK, SUBACK, PUBLISH, PUBLISH, PINGRESP]);
        for cut in 0..4 {
            assert!(parse(&stream[..cut]).unwrap().is_none());
        }
    }
}
