//! The NATS client protocol, as much of it as the benchmark speaks (`CONNECT`, `SUB`, `UNSUB`,
//! `PUB`, `PING`/`PONG` out; `INFO`, `MSG`, `PING`/`PONG`, `+OK`, `-ERR` in).
//!
//! The protocol is text lines ending in CRLF; `MSG` and `PUB` lines are followed by a payload of
//! the length they state and a CRLF. Over WebSocket the same bytes travel in binary messages that
//! cut the stream anywhere ([`super::stream::Reassembly`]).
//!
//! Subjects: user `u7` receives on `u.u7`, room `r0` on `r.r0`.

use std::io;

use super::stream::invalid;

/// Longest control line accepted (an `INFO` line lists the server's options; 4 KiB is plenty).
const MAX_CONTROL_LINE: usize = 4096;

/// `CONNECT` with the options the benchmark needs: no `+OK` per command, no headers.
pub const CONNECT: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"lang\":\"herald-bench\",\"version\":\"0.1\",\"protocol\":1,\"headers\":false,\"no_responders\":false}\r\n";

/// A `PING`: the server answers `PONG` once it has processed everything sent before it.
pub const PING: &[u8] = b"PING\r\n";

/// The answer to the server's `PING`.
pub const PONG: &[u8] = b"PONG\r\n";

/// The subject user `uid` receives on.
pub fn user_subject(uid: &str) -> String {
    format!("u.{uid}")
}

/// The subject of room `room`.
pub fn room_subject(room: &str) -> String {
    format!("r.{room}")
}

/// Appends `SUB <subject> <sid>`.
pub fn sub(out: &mut Vec<u8>, subject: &str, sid: u32) {
    out.extend_from_slice(format!("SUB {subject} {sid}\r\n").as_bytes());
}

/// Appends `UNSUB <sid>`.
pub fn unsub(out: &mut Vec<u8>, sid: u32) {
    out.extend_from_slice(format!("UNSUB {sid}\r\n").as_bytes());
}

/// Appends `PUB <subject> <len>` and the payload.
pub fn publish(out: &mut Vec<u8>, subject: &str, payload: &[u8]) {
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject.as_bytes());
    out.extend_from_slice(format!(" {}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// One operation from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerOp<'a> {
    /// `INFO {…}`: the server's description (ignored).
    Info,
    /// A message on a subscription.
    Msg {
        /// The subject it was published to.
        subject: &'a [u8],
        /// Its payload.
        payload: &'a [u8],
    },
    /// The server pings: answer [`PONG`].
    Ping,
    /// The answer to our [`PING`].
    Pong,
    /// `+OK` (only in verbose mode).
    Ok,
    /// `-ERR '…'`, with the text.
    Err(&'a [u8]),
}

/// Parses the operation `buf` starts with: the operation and the bytes it took, or `None` when
/// it has not fully arrived.
pub fn parse(buf: &[u8]) -> io::Result<Option<(ServerOp<'_>, usize)>> {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > MAX_CONTROL_LINE {
            return Err(invalid("NATS control line too long"));
        }
        return Ok(None);
    };
    let line = &buf[..eol];
    let after = eol + 2;
    let op_end = line
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .unwrap_or(line.len());
    let (op, args) = (&line[..op_end], &line[op_end..]);
    let simple = |op| Ok(Some((op, after)));
    if op.eq_ignore_ascii_case(b"MSG") {
        // MSG <subject> <sid> [reply-to] <#bytes>
        let fields: Vec<&[u8]> = args
            .split(|b| b.is_ascii_whitespace())
            .filter(|f| !f.is_empty())
            .collect();
        if !(3..=4).contains(&fields.len()) {
            return Err(invalid("malformed NATS MSG line"));
        }
        let len: usize = std::str::from_utf8(fields[fields.len() - 1])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid("malformed NATS MSG length"))?;
        let end = after + len;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(invalid("NATS MSG payload not followed by CRLF"));
        }
        Ok(Some((
            ServerOp::Msg {
                subject: fields[0],
                payload: &buf[after..end],
            },
            end + 2,
        )))
    } else if op.eq_ignore_ascii_case(b"PING") {
        simple(ServerOp::Ping)
    } else if op.eq_ignore_ascii_case(b"PONG") {
        simple(ServerOp::Pong)
    } else if op.eq_ignore_ascii_case(b"INFO") {
        simple(ServerOp::Info)
    } else if op.eq_ignore_ascii_case(b"+OK") {
        simple(ServerOp::Ok)
    } else if op.eq_ignore_ascii_case(b"-ERR") {
        Ok(Some((ServerOp::Err(args.trim_ascii()), after)))
    } else {
        Err(invalid(format!(
            "unknown NATS operation {:?}",
            String::from_utf8_lossy(op)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_client_operations() {
        let mut out = Vec::new();
        sub(&mut out, &user_subject("u7"), 1);
        sub(&mut out, &room_subject("r0"), 2);
        unsub(&mut out, 2);
        publish(&mut out, "u.u7", b"hello");
        out.extend_from_slice(PING);
        assert_eq!(
            out,
            b"SUB u.u7 1\r\nSUB r.r0 2\r\nUNSUB 2\r\nPUB u.u7 5\r\nhello\r\nPING\r\n"
        );
        assert!(CONNECT.starts_with(b"CONNECT {") && CONNECT.ends_with(b"}\r\n"));
        let json = &CONNECT[8..CONNECT.len() - 2];
        let v: serde_json::Value = serde_json::from_slice(json).unwrap();
        assert_eq!(v["verbose"], false);
    }

    #[test]
    fn parses_server_operations() {
        let stream = b"INFO {\"server_id\":\"x\"}\r\nMSG u.u7 1 5\r\nhello\r\nMSG r.r0 2 reply.to 0\r\n\r\nPING\r\nPONG\r\n+OK\r\n-ERR 'Unknown Protocol Operation'\r\n";
        let mut at = 0;
        let mut ops = Vec::new();
        while at < stream.len() {
            let (op, n) = parse(&stream[at..]).unwrap().unwrap();
            ops.push(format!("{op:?}"));
            at += n;
        }
        assert_eq!(ops.len(), 7);
        let (op, _) = parse(b"MSG u.u7 1 5\r\nhello\r\n").unwrap().unwrap();
        assert_eq!(
            op,
            ServerOp::Msg {
                subject: b"u.u7",
                payload: b"hello"
            }
        );
        let (op, _) = parse(b"-ERR 'Slow Consumer'\r\n").unwrap().unwrap();
        assert_eq!(op, ServerOp::Err(b"'Slow Consumer'"));
    }

    #[test]
    fn waits_for_whole_operations_and_refuses_garbage() {
        let msg = b"MSG u.u7 1 5\r\nhello\r\n";
        for cut in 0..msg.len() {
            assert!(parse(&msg[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        assert!(parse(b"MSG u.u7 1 5\r\nhelloXX").is_err());
        assert!(parse(b"MSG u.u7\r\n").is_err());
        assert!(parse(b"BOGUS\r\n").is_err());
        assert!(parse(&[b'x'; MAX_CONTROL_LINE + 1]).is_err());
    }
}
