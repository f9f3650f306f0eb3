//! Byte-stream protocols carried in WebSocket messages.
//!
//! NATS and MQTT over WebSocket treat the messages as pieces of one byte stream: a protocol item
//! (a `MSG`, a `PUBLISH`) may start in one WebSocket message and end in the next, and one message
//! may carry many items. [`Reassembly`] parses items straight from each received piece and keeps
//! only an incomplete tail, so a connection that receives whole items copies nothing and holds no
//! buffer while idle.

use std::io;

/// Largest incomplete tail kept between pieces before it is given back to the allocator once
/// consumed (an idle connection should not keep a burst's buffer).
const KEEP_CAPACITY: usize = 4096;

/// The incomplete tail of a byte stream, between pieces.
#[derive(Debug, Default)]
pub struct Reassembly {
    pending: Vec<u8>,
}

impl Reassembly {
    /// Parses every complete item of the stream so far, `data` being its next piece.
    ///
    /// `step` is given the unparsed bytes; it parses and handles the one item they start with and
    /// returns how many bytes it took, `None` if the item is not complete yet, or an error if the
    /// bytes break the protocol.
    pub fn feed(
        &mut self,
        data: &[u8],
        mut step: impl FnMut(&[u8]) -> io::Result<Option<usize>>,
    ) -> io::Result<()> {
        if self.pending.is_empty() {
            let used = run(data, &mut step)?;
            self.pending.extend_from_slice(&data[used..]);
        } else {
            self.pending.extend_from_slice(data);
            let used = run(&self.pending, &mut step)?;
            self.pending.drain(..used);
            if self.pending.is_empty() && self.pending.capacity() > KEEP_CAPACITY {
                self.pending = Vec::new();
            }
        }
        Ok(())
    }

    /// Bytes waiting for the rest of their item.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// Runs `step` over `buf` until it needs more bytes; returns the bytes consumed.
fn run(buf: &[u8], step: &mut impl FnMut(&[u8]) -> io::Result<Option<usize>>) -> io::Result<usize> {
    let mut at = 0;
    while at < buf.len() {
        match step(&buf[at..])? {
            Some(0) => return Err(invalid("a parser consumed nothing")),
            Some(n) => at += n,
            None => break,
        }
    }
    Ok(at)
}

/// An `InvalidData` error.
pub fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Items are "<digit n><n bytes>".
    fn step(out: &mut Vec<String>) -> impl FnMut(&[u8]) -> io::Result<Option<usize>> + '_ {
        |b: &[u8]| {
            let n = usize::from(b[0] - b'0');
            if b.len() < 1 + n {
                return Ok(None);
            }
            out.push(String::from_utf8_lossy(&b[1..1 + n]).into_owned());
            Ok(Some(1 + n))
        }
    }

    #[test]
    fn items_spanning_pieces_are_reassembled() {
        let stream = b"3abc0" as &[u8];
        let stream = [stream, b"5hello2hi"].concat();
        for chunk in 1..=stream.len() {
            let mut r = Reassembly::default();
            let mut out = Vec::new();
            for piece in stream.chunks(chunk) {
                r.feed(piece, step(&mut out)).unwrap();
            }
            assert_eq!(out, ["abc", "", "hello", "hi"], "chunk {chunk}");
            assert_eq!(r.pending(), 0);
        }
    }

    #[test]
    fn errors_pass_through() {
        let mut r = Reassembly::default();
        let e = r.feed(b"x", |_| Err(invalid("bad"))).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(r.feed(b"x", |_| Ok(Some(0))).is_err());
    }
}
