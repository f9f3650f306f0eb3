//! A minimal WebSocket client, just enough to be many clients of Herald and its peers at once.
//!
//! Why not `tokio-tungstenite`: a load generator that shares two cores with the server must spend
//! as little as it can per received message. This client parses frames in place in one growable
//! buffer per connection (no allocation per message, no copy of the payload), and knows only what
//! Herald and the peers send: unfragmented, unmasked frames, no extensions. Anything else is an
//! error, which the benchmark counts rather than tolerates.

use std::io;
use std::net::SocketAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::Rng as _;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// RFC 6455's fixed GUID for `Sec-WebSocket-Accept`.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;
const OP_CLOSE: u8 = 8;
const OP_PING: u8 = 9;
const OP_PONG: u8 = 10;

/// Largest handshake response accepted.
const MAX_HANDSHAKE: usize = 16 * 1024;

/// Smallest free space offered to one `read`.
const MIN_READ: usize = 4096;

/// One frame from the server, borrowed from the connection's buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// An event (JSON).
    Text(&'a [u8]),
    /// A message frame (`docs/protocol.md`, "Messages").
    Binary(&'a [u8]),
    /// A ping, to be answered with a pong carrying the same payload.
    Ping(&'a [u8]),
    /// A pong.
    Pong,
    /// A close frame and its code, if it carried one.
    Close(Option<u16>),
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Received bytes, parsed into frames in place. `start..end` holds unparsed bytes.
#[derive(Debug)]
pub struct FrameBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes the frame at `start` needs in all, once its header has been seen.
    need: usize,
}

impl FrameBuf {
    /// An empty buffer of `capacity` bytes; it grows to the largest frame seen.
    pub fn new(capacity: usize) -> Self {
        FrameBuf {
            buf: vec![0; capacity.max(64)],
            start: 0,
            end: 0,
            need: 0,
        }
    }

    /// Appends bytes (tests; the rest of the crate reads from a socket with [`FrameBuf::read_from`]).
    pub fn feed(&mut self, data: &[u8]) {
        self.spare(data.len())[..data.len()].copy_from_slice(data);
        self.end += data.len();
    }

    /// Unparsed bytes.
    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// At least `min` bytes of free space after `end`, moving unparsed bytes to the front or
    /// growing the buffer when needed.
    fn spare(&mut self, min: usize) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.buf.len() - self.end < min {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.end < min {
                let len = (self.end + min).next_power_of_two();
                self.buf.resize(len, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Reads once from `stream`: the number of bytes read, 0 at end of stream.
    pub async fn read_from(&mut self, stream: &mut TcpStream) -> io::Result<usize> {
        let want = MIN_READ.max(self.need.saturating_sub(self.end - self.start));
        let n = stream.read(self.spare(want)).await?;
        self.end += n;
        Ok(n)
    }

    /// The next complete frame, if one has fully arrived.
    pub fn next_frame(&mut self) -> io::Result<Option<Frame<'_>>> {
        let b = self.pending();
        if b.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (b[0], b[1]);
        if b0 & 0x70 != 0 {
            return Err(invalid("RSV bits set: no extension was negotiated"));
        }
        if b1 & 0x80 != 0 {
            return Err(invalid("masked frame from the server"));
        }
        let (header, len) = match b1 & 0x7f {
            126 if b.len() >= 4 => (4usize, usize::from(u16::from_be_bytes([b[2], b[3]]))),
            127 if b.len() >= 10 => {
                let mut l = [0u8; 8];
                l.copy_from_slice(&b[2..10]);
                let len = usize::try_from(u64::from_be_bytes(l))
                    .map_err(|_| invalid("frame length overflows"))?;
                (10, len)
            }
            126 | 127 => return Ok(None),
            n => (2, usize::from(n)),
        };
        let total = header
            .checked_add(len)
            .ok_or_else(|| invalid("frame length overflows"))?;
        if b.len() < total {
            self.need = total;
            return Ok(None);
        }
        if b0 & 0x80 == 0 || b0 & 0x0f == 0 {
            return Err(invalid("fragmented frame: Herald sends whole messages"));
        }
        self.need = 0;
        let at = self.start + header;
        self.start += total;
        let payload = &self.buf[at..at + len];
        Ok(Some(match b0 & 0x0f {
            OP_TEXT => Frame::Text(payload),
            OP_BINARY => Frame::Binary(payload),
            OP_PING => Frame::Ping(payload),
            OP_PONG => Frame::Pong,
            OP_CLOSE => Frame::Close(
                (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
            ),
            _ => return Err(invalid("unknown opcode")),
        }))
    }
}

/// Appends a masked client frame (clients must mask, RFC 6455 §5.3).
pub fn encode_client_frame(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask: [u8; 4] = rand::thread_rng().gen();
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// `Sec-WebSocket-Accept` for a key.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(ACCEPT_GUID.as_bytes());
    STANDARD.encode(h.finalize())
}

/// One client connection.
#[derive(Debug)]
pub struct WsClient {
    stream: TcpStream,
    /// Received, unparsed bytes.
    pub frames: FrameBuf,
    out: Vec<u8>,
}

impl WsClient {
    /// Connects to `addr` and upgrades `GET {path}` (path and query). `host` is sent as `Host`.
    pub async fn connect(
        addr: SocketAddr,
        host: &str,
        path: &str,
        read_buffer: usize,
    ) -> io::Result<WsClient> {
        Self::connect_with_protocol(addr, host, path, None, read_buffer).await
    }

    /// Like [`WsClient::connect`], asking for a subprotocol (`mqtt` for MQTT over WebSocket).
    pub async fn connect_with_protocol(
        addr: SocketAddr,
        host: &str,
        path: &str,
        protocol: Option<&str>,
        read_buffer: usize,
    ) -> io::Result<WsClient> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let key = STANDARD.encode(rand::thread_rng().gen::<[u8; 16]>());
        let protocol =
            protocol.map_or_else(String::new, |p| format!("Sec-WebSocket-Protocol: {p}\r\n"));
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n{protocol}\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut frames = FrameBuf::new(read_buffer);
        let head_len = loop {
            if let Some(i) = find(frames.pending(), b"\r\n\r\n") {
                break i + 4;
            }
            if frames.end - frames.start > MAX_HANDSHAKE {
                return Err(invalid("handshake response too large"));
            }
            if frames.read_from(&mut stream).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed during the handshake",
                ));
            }
        };
        let head = String::from_utf8_lossy(&frames.pending()[..head_len]).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            let status = head.lines().next().unwrap_or("").to_owned();
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("upgrade refused: {status}"),
            ));
        }
        let expected = accept_key(&key);
        let accepted = head.lines().any(|l| {
            l.split_once(':').is_some_and(|(name, value)| {
                name.eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == expected
            })
        });
        if !accepted {
            return Err(invalid("wrong or missing Sec-WebSocket-Accept"));
        }
        frames.start += head_len;
        Ok(WsClient {
            stream,
            frames,
            out: Vec::with_capacity(256),
        })
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        self.out.clear();
        encode_client_frame(opcode, payload, &mut self.out);
        self.stream.write_all(&self.out).await
    }

    /// Sends a text frame (a call).
    pub async fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.send(OP_TEXT, text.as_bytes()).await
    }

    /// Sends a binary frame (NATS and MQTT over WebSocket).
    pub async fn send_binary(&mut self, payload: &[u8]) -> io::Result<()> {
        self.send(OP_BINARY, payload).await
    }

    /// Answers a ping.
    pub async fn send_pong(&mut self, payload: &[u8]) -> io::Result<()> {
        self.send(OP_PONG, payload).await
    }

    /// Sends a close frame with `code`.
    pub async fn send_close(&mut self, code: u16) -> io::Result<()> {
        self.send(OP_CLOSE, &code.to_be_bytes()).await
    }

    /// Reads once: bytes read, 0 at end of stream.
    pub async fn fill(&mut self) -> io::Result<usize> {
        self.frames.read_from(&mut self.stream).await
    }

    /// Waits for the next text frame, answering pings on the way. A binary or close frame is an
    /// error: this is for the call/answer exchanges of set-up, before any message can arrive.
    pub async fn next_text(&mut self) -> io::Result<String> {
        match self.next_data().await? {
            (true, t) => Ok(String::from_utf8_lossy(&t).into_owned()),
            (false, _) => Err(invalid("message before set-up finished")),
        }
    }
}

impl WsClient {
    /// Waits for the next data frame, answering pings on the way: `(true, text)` or
    /// `(false, binary)`. A close frame is an error. For the set-up exchanges of the peers'
    /// protocols (it copies the payload).
    pub async fn next_data(&mut self) -> io::Result<(bool, Vec<u8>)> {
        loop {
            let mut pong = None;
            if let Some(frame) = self.frames.next_frame()? {
                match frame {
                    Frame::Text(t) => return Ok((true, t.to_vec())),
                    Frame::Binary(b) => return Ok((false, b.to_vec())),
                    Frame::Ping(p) => pong = Some(p.to_vec()),
                    Frame::Pong => {}
                    Frame::Close(code) => {
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            format!("closed by the server during set-up ({code:?})"),
                        ))
                    }
                }
            } else if self.fill().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed during set-up",
                ));
            }
            if let Some(p) = pong {
                self.send_pong(&p).await?;
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n @ 0..=125 => f.push(n as u8),
            n @ 126..=0xffff => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn frames_parse_whatever_the_split() {
        let big = vec![7u8; 70_000];
        let mut stream = Vec::new();
        stream.extend(server_frame(OP_TEXT, b"{\"event\":\"x\"}"));
        stream.extend(server_frame(OP_BINARY, &[1; 300]));
        stream.extend(server_frame(OP_BINARY, &big));
        stream.extend(server_frame(OP_PING, b"p"));
        stream.extend(server_frame(OP_CLOSE, &4001u16.to_be_bytes()));
        for chunk in [1, 3, 100, 5000, stream.len()] {
            let mut fb = FrameBuf::new(64);
            let mut seen = Vec::new();
            for piece in stream.chunks(chunk) {
                fb.feed(piece);
                while let Some(f) = fb.next_frame().unwrap() {
                    seen.push(match f {
                        Frame::Text(t) => format!("text {}", t.len()),
                        Frame::Binary(b) => format!("binary {}", b.len()),
                        Frame::Ping(p) => format!("ping {}", p.len()),
                        Frame::Pong => "pong".into(),
                        Frame::Close(c) => format!("close {c:?}"),
                    });
                }
            }
            assert_eq!(
                seen,
                [
                    "text 13",
                    "binary 300",
                    "binary 70000",
                    "ping 1",
                    "close Some(4001)"
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn refuses_what_herald_never_sends() {
        let mut fb = FrameBuf::new(64);
        fb.feed(&[0x01, 0x01, b'a']); // text, FIN clear
        assert!(fb.next_frame().is_err());
        let mut fb = FrameBuf::new(64);
        fb.feed(&[0x81, 0x81, 0, 0, 0, 0, b'a']); // masked
        assert!(fb.next_frame().is_err());
    }

    #[test]
    fn client_frames_are_masked() {
        let mut out = Vec::new();
        encode_client_frame(OP_TEXT, b"hello", &mut out);
        assert_eq!(out[0], 0x81);
        assert_eq!(out[1], 0x80 | 5);
        let mask = &out[2..6];
        let unmasked: Vec<u8> = out[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        assert_eq!(unmasked, b"hello");
    }

    #[test]
    fn accept_key_matches_rfc_6455() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
