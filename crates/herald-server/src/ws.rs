//! Herald's own server-side WebSocket codec (RFC 6455, no extensions).
//!
//! # Why not tungstenite
//!
//! Herald holds many mostly idle connections and fans one message out to many of them, so two
//! costs dominate: the memory each connection keeps while idle, and the work per recipient.
//! tungstenite reads into a 128 KiB buffer per connection and owns each outgoing frame as one
//! contiguous allocation. This codec instead:
//!
//! - reads into a small buffer ([`ReadConfig::initial_buffer`], 4 KiB by default) that grows only
//!   for a frame that needs it and shrinks back once that frame has been consumed, so an idle
//!   connection costs a few KiB;
//! - writes nothing itself: [`encode_header`] appends a frame header (2 to 10 bytes) to a
//!   per-recipient buffer, and the caller writes that header followed by the shared `Bytes`
//!   payload with vectored I/O. Server frames are unmasked, so the payload bytes are identical for
//!   every recipient and are never copied per recipient.
//!
//! # Shape
//!
//! - [`accept_key`] is the only part of the HTTP upgrade handled here; hyper does the rest.
//! - [`FrameReader`] is a pure incremental decoder over its own buffer: bytes go in with
//!   [`FrameReader::feed`] or [`FrameReader::read`], complete messages and control frames come out
//!   of [`FrameReader::decode`] as [`Incoming`]. It enforces RFC 6455 §5 and the size limit and
//!   reports violations as a [`WsError`], which maps to the close code to send.
//! - [`encode_header`], [`close_frame`], [`ping_frame`] and [`pong_frame`] build server frames.
//!
//! The codec does not negotiate extensions (so permessage-deflate is refused by omission), does not
//! track the closing handshake and does not answer pings: the connection task decides what to send.

use std::io;

use base64::Engine as _;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::FutureExt as _;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::tcp::OwnedReadHalf;

/// The GUID RFC 6455 §1.3 appends to the client's key.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The largest header a client frame can have: 2 bytes, an 8-byte length and a 4-byte mask.
const MAX_CLIENT_HEADER: usize = 14;

/// The largest payload of a control frame (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Computes the `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key`: the base64 of the SHA-1
/// of the key followed by the RFC 6455 GUID. The key is used as given (header parsers already
/// strip surrounding whitespace).
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(ACCEPT_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Frame opcode: continuation of a fragmented message.
pub const OP_CONTINUATION: u8 = 0x0;
/// Frame opcode: text message (UTF-8).
pub const OP_TEXT: u8 = 0x1;
/// Frame opcode: binary message.
pub const OP_BINARY: u8 = 0x2;
/// Frame opcode: close.
pub const OP_CLOSE: u8 = 0x8;
/// Frame opcode: ping.
pub const OP_PING: u8 = 0x9;
/// Frame opcode: pong.
pub const OP_PONG: u8 = 0xA;

/// Close code: normal closure.
pub const NORMAL: u16 = 1000;
/// Close code: the server is going away (shutdown); the client should reconnect elsewhere.
pub const GOING_AWAY: u16 = 1001;
/// Close code: the peer broke the WebSocket protocol ([`WsError::Protocol`]).
pub const PROTOCOL_ERROR: u16 = 1002;
/// Close code: a kind of data the endpoint cannot accept.
pub const UNSUPPORTED: u16 = 1003;
/// Close code: a payload inconsistent with its type, such as non-UTF-8 text
/// ([`WsError::InvalidUtf8`]).
pub const INVALID_PAYLOAD: u16 = 1007;
/// Close code: a message that violates the server's policy.
pub const POLICY: u16 = 1008;
/// Close code: a message larger than the server accepts ([`WsError::TooBig`]).
pub const TOO_BIG: u16 = 1009;
/// Close code: the server hit an unexpected condition.
pub const INTERNAL: u16 = 1011;

/// A complete message or control frame from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A text message; the payload is valid UTF-8.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping, to be answered with a [`pong_frame`] carrying the same payload.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close frame: the code and reason if it carried any. The code is one a peer may send.
    Close(Option<(u16, String)>),
}

/// Why reading from a client failed. The connection cannot continue after any of these.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// Reading from the socket failed.
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    /// The client broke RFC 6455; close with [`PROTOCOL_ERROR`].
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// A text message is not valid UTF-8; close with [`INVALID_PAYLOAD`].
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    /// A frame or message is larger than [`ReadConfig::max_message`]; close with [`TOO_BIG`].
    #[error("message too big")]
    TooBig,
    /// The client closed the TCP connection without a close frame.
    #[error("connection closed without a close frame")]
    Closed,
}

impl WsError {
    /// The close code to send the client, or `None` when no close frame can or need be sent
    /// (the socket failed or is already closed).
    pub fn close_code(&self) -> Option<u16> {
        match self {
            WsError::Io(_) | WsError::Closed => None,
            WsError::Protocol(_) => Some(PROTOCOL_ERROR),
            WsError::InvalidUtf8 => Some(INVALID_PAYLOAD),
            WsError::TooBig => Some(TOO_BIG),
        }
    }
}

/// Limits of one connection's [`FrameReader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadConfig {
    /// Size of the read buffer an idle connection holds. Default 4096. Values below 14 (the
    /// largest client frame header) are raised to 14.
    pub initial_buffer: usize,
    /// Largest data frame, and largest message assembled from fragments, accepted; anything larger
    /// is [`WsError::TooBig`]. Control frames are bounded by the protocol instead (125 bytes).
    /// Default 128 KiB.
    pub max_message: usize,
}

impl Default for ReadConfig {
    fn default() -> Self {
        ReadConfig {
            initial_buffer: 4096,
            max_message: 128 << 10,
        }
    }
}

/// Incremental decoder of client frames.
///
/// Bytes are buffered until a whole frame is present, then the frame is unmasked in place. A data
/// frame that is a whole message is handed out as a slice of the read buffer, without a copy;
/// fragments are copied into a separate assembly buffer. Control frame payloads (at most 125 bytes)
/// are copied out so that a queued pong does not pin the read buffer.
///
/// Memory: the buffer starts at [`ReadConfig::initial_buffer`], grows to hold a larger frame only
/// once that frame's header has passed the size check, and is replaced by a small one as soon as
/// such a frame has been consumed.
///
/// After an error the connection must be closed; the reader's state is then unspecified.
#[derive(Debug)]
pub struct FrameReader {
    cfg: ReadConfig,
    /// Received bytes not yet decoded; the frame being received starts at index 0.
    buf: BytesMut,
    /// Size of the allocation behind `buf`. `BytesMut::capacity` only counts the part after the
    /// consumed bytes, which would under-report.
    allocated: usize,
    /// The fragmented data message in progress, if any.
    fragments: Option<Fragments>,
}

/// A data message arriving in fragments.
#[derive(Debug)]
struct Fragments {
    kind: DataKind,
    data: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataKind {
    Text,
    Binary,
}

/// A parsed client frame header.
#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    header_len: usize,
    payload_len: u64,
}

/// The outcome of parsing the start of the buffer.
enum Parsed {
    /// At least this many bytes are needed to parse the header.
    Need(usize),
    Frame(Header),
}

impl FrameReader {
    /// A reader with an empty buffer of `cfg.initial_buffer` bytes.
    pub fn new(cfg: ReadConfig) -> Self {
        let cfg = ReadConfig {
            initial_buffer: cfg.initial_buffer.max(MAX_CLIENT_HEADER),
            ..cfg
        };
        let buf = BytesMut::with_capacity(cfg.initial_buffer);
        FrameReader {
            cfg,
            allocated: buf.capacity(),
            buf,
            fragments: None,
        }
    }

    /// Appends bytes already received from the client, such as those the HTTP server read past
    /// the upgrade request. Decode them with [`FrameReader::decode`] or [`FrameReader::read`].
    pub fn feed(&mut self, bytes: &[u8]) {
        self.make_room(self.buf.len() + bytes.len());
        self.buf.extend_from_slice(bytes);
    }

    /// Decodes as much as the buffer allows: the next complete message or control frame, or
    /// `Ok(None)` if more bytes are needed. Does no I/O.
    ///
    /// Every check that the header allows (protocol rules, size limit) is made before the payload
    /// has arrived, so an oversized frame is refused without buffering it.
    pub fn decode(&mut self) -> Result<Option<Incoming>, WsError> {
        loop {
            let h = match parse_header(&self.buf)? {
                Parsed::Need(n) => {
                    self.make_room(n);
                    return Ok(None);
                }
                Parsed::Frame(h) => h,
            };
            self.check_header(&h)?;
            // `check_header` bounded the payload by `max_message`, so these cannot fail in practice.
            let payload_len = usize::try_from(h.payload_len).map_err(|_| WsError::TooBig)?;
            let frame_len = h
                .header_len
                .checked_add(payload_len)
                .ok_or(WsError::TooBig)?;
            if self.buf.len() < frame_len {
                self.make_room(frame_len);
                return Ok(None);
            }
            unmask(&mut self.buf[h.header_len..frame_len], h.mask);

            match h.opcode {
                OP_CLOSE | OP_PING | OP_PONG => {
                    let payload = Bytes::copy_from_slice(&self.buf[h.header_len..frame_len]);
                    self.buf.advance(frame_len);
                    self.shrink();
                    let incoming = match h.opcode {
                        OP_PING => Incoming::Ping(payload),
                        OP_PONG => Incoming::Pong(payload),
                        _ => Incoming::Close(parse_close(&payload)?),
                    };
                    return Ok(Some(incoming));
                }
                OP_TEXT | OP_BINARY if h.fin => {
                    self.buf.advance(h.header_len);
                    let payload = self.buf.split_to(payload_len).freeze();
                    self.shrink();
                    return message(data_kind(h.opcode), payload).map(Some);
                }
                OP_TEXT | OP_BINARY => {
                    let mut data = Vec::with_capacity(payload_len);
                    data.extend_from_slice(&self.buf[h.header_len..frame_len]);
                    self.buf.advance(frame_len);
                    self.shrink();
                    self.fragments = Some(Fragments {
                        kind: data_kind(h.opcode),
                        data,
                    });
                }
                _ => {
                    // OP_CONTINUATION: `check_header` made sure a message is in progress.
                    if let Some(f) = self.fragments.as_mut() {
                        let payload = &self.buf[h.header_len..frame_len];
                        append_bounded(&mut f.data, payload, self.cfg.max_message);
                    }
                    self.buf.advance(frame_len);
                    self.shrink();
                    if h.fin {
                        if let Some(f) = self.fragments.take() {
                            return message(f.kind, Bytes::from(f.data)).map(Some);
                        }
                    }
                }
            }
        }
    }

    /// Reads from `io` until a message or control frame is complete.
    ///
    /// Cancel-safe: everything read is kept in the reader, so dropping the future (for example on
    /// a heartbeat timeout) loses nothing and the next call continues where this one stopped.
    pub async fn read<R: AsyncRead + Unpin>(&mut self, io: &mut R) -> Result<Incoming, WsError> {
        loop {
            if let Some(incoming) = self.decode()? {
                return Ok(incoming);
            }
            // `decode` left room for at least one more byte of the current frame, so `read_buf`
            // reads into the buffer we sized and never grows it on its own.
            if io.read_buf(&mut self.buf).await? == 0 {
                return Err(WsError::Closed);
            }
        }
    }

    /// As [`FrameReader::read`], for the read half of a TCP stream, holding no buffer while the
    /// peer is silent: with nothing buffered, the allocation is dropped before waiting and taken
    /// again when bytes arrive. An idle connection then costs no read buffer at all, which is most
    /// of what a connection would otherwise cost. Cancel-safe, like `read`.
    pub async fn read_tcp(&mut self, io: &mut OwnedReadHalf) -> Result<Incoming, WsError> {
        loop {
            if let Some(incoming) = self.decode()? {
                return Ok(incoming);
            }
            self.release_if_idle();
            io.readable().await?;
            if self.allocated == 0 {
                self.replace_buffer(self.cfg.initial_buffer);
            }
            match io.try_read_buf(&mut self.buf) {
                Ok(0) => return Err(WsError::Closed),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// As [`FrameReader::read`], for a stream that keeps a buffer of its own (TLS: rustls
    /// decrypts whole records into its buffer), holding no read buffer of its own while the peer
    /// is silent: with nothing buffered, the allocation is dropped and the wait is for a single
    /// byte; once it arrives, the buffer is taken again and filled with whatever else the stream
    /// already holds, without waiting. Cancel-safe, like `read`.
    pub async fn read_lazily<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
    ) -> Result<Incoming, WsError> {
        loop {
            if let Some(incoming) = self.decode()? {
                return Ok(incoming);
            }
            self.release_if_idle();
            if self.allocated > 0 {
                if io.read_buf(&mut self.buf).await? == 0 {
                    return Err(WsError::Closed);
                }
                continue;
            }
            let mut first = [0u8; 1];
            if io.read(&mut first).await? == 0 {
                return Err(WsError::Closed);
            }
            self.replace_buffer(self.cfg.initial_buffer);
            self.buf.put_u8(first[0]);
            // What else is already there; an end of stream shows again on the next read, once
            // the bytes before it have been decoded.
            if let Some(Err(e)) = io.read_buf(&mut self.buf).now_or_never() {
                return Err(e.into());
            }
        }
    }

    /// Bytes currently allocated for buffering: the read buffer plus any message being assembled
    /// from fragments. Delivered messages are not counted; they belong to the caller.
    pub fn buffer_capacity(&self) -> usize {
        self.allocated + self.fragments.as_ref().map_or(0, |f| f.data.capacity())
    }

    /// Checks what the header says against the reader's state: fragmentation order and size.
    fn check_header(&self, h: &Header) -> Result<(), WsError> {
        let already = match (h.opcode, &self.fragments) {
            (OP_CLOSE | OP_PING | OP_PONG, _) => return Ok(()),
            (OP_CONTINUATION, None) => {
                return Err(WsError::Protocol("continuation frame without a message"))
            }
            (OP_CONTINUATION, Some(f)) => f.data.len() as u64,
            (_, Some(_)) => {
                return Err(WsError::Protocol(
                    "new data frame while a fragmented message is in progress",
                ))
            }
            (_, None) => 0,
        };
        if already + h.payload_len > self.cfg.max_message as u64 {
            return Err(WsError::TooBig);
        }
        Ok(())
    }

    /// Makes sure the buffer can hold `total` bytes from its start (the frame being received), so
    /// that the next read can complete it. Reuses the current allocation when nothing delivered
    /// still shares it; otherwise moves the undecoded bytes to a new one.
    fn make_room(&mut self, total: usize) {
        if self.buf.capacity() >= total {
            return;
        }
        let target = total.max(self.cfg.initial_buffer);
        if self.buf.try_reclaim(target - self.buf.len()) {
            return;
        }
        self.replace_buffer(target);
    }

    /// After a frame has been consumed: returns to a small buffer if that frame made it grow, so
    /// that neither an idle connection nor a message being assembled keeps a large read buffer.
    fn shrink(&mut self) {
        if self.allocated > self.cfg.initial_buffer {
            self.replace_buffer(self.cfg.initial_buffer.max(self.buf.len()));
        }
    }

    /// With nothing buffered and no message being assembled, drops the read buffer, so a silent
    /// peer costs none (`allocated` 0 says it must be taken again before reading).
    fn release_if_idle(&mut self) {
        if self.buf.is_empty() && self.fragments.is_none() && self.allocated > 0 {
            self.buf = BytesMut::new();
            self.allocated = 0;
        }
    }

    fn replace_buffer(&mut self, capacity: usize) {
        let mut fresh = BytesMut::with_capacity(capacity);
        fresh.extend_from_slice(&self.buf);
        self.allocated = fresh.capacity();
        self.buf = fresh;
    }
}

fn data_kind(opcode: u8) -> DataKind {
    if opcode == OP_TEXT {
        DataKind::Text
    } else {
        DataKind::Binary
    }
}

fn message(kind: DataKind, payload: Bytes) -> Result<Incoming, WsError> {
    match kind {
        DataKind::Binary => Ok(Incoming::Binary(payload)),
        DataKind::Text => match std::str::from_utf8(&payload) {
            Ok(_) => Ok(Incoming::Text(payload)),
            Err(_) => Err(WsError::InvalidUtf8),
        },
    }
}

/// Appends a fragment, growing geometrically for many small fragments but never past `limit`
/// (which the total is known not to exceed).
fn append_bounded(data: &mut Vec<u8>, chunk: &[u8], limit: usize) {
    let needed = data.len() + chunk.len();
    if needed > data.capacity() {
        let target = needed.max(data.capacity().saturating_mul(2).min(limit));
        data.reserve_exact(target - data.len());
    }
    data.extend_from_slice(chunk);
}

/// Parses and validates the header at the start of `buf`. Checks that need only the first two
/// bytes are made as soon as they are there.
fn parse_header(buf: &[u8]) -> Result<Parsed, WsError> {
    let [b0, b1, ..] = *buf else {
        return Ok(Parsed::Need(2));
    };
    if b0 & 0x70 != 0 {
        return Err(WsError::Protocol("reserved bits set without an extension"));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    let control = match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY => false,
        OP_CLOSE | OP_PING | OP_PONG => true,
        _ => return Err(WsError::Protocol("unknown opcode")),
    };
    if b1 & 0x80 == 0 {
        return Err(WsError::Protocol("client frame is not masked"));
    }
    let len7 = b1 & 0x7F;
    if control && !fin {
        return Err(WsError::Protocol("fragmented control frame"));
    }
    if control && usize::from(len7) > MAX_CONTROL_PAYLOAD {
        return Err(WsError::Protocol("control frame payload over 125 bytes"));
    }
    let length_bytes = match len7 {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let header_len = 2 + length_bytes + 4;
    if buf.len() < header_len {
        return Ok(Parsed::Need(header_len));
    }
    let payload_len = match len7 {
        126 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
        127 => {
            let mut be = [0; 8];
            be.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(be);
            if len >> 63 != 0 {
                return Err(WsError::Protocol("64-bit length with the high bit set"));
            }
            len
        }
        n => u64::from(n),
    };
    let mut mask = [0; 4];
    mask.copy_from_slice(&buf[header_len - 4..header_len]);
    Ok(Parsed::Frame(Header {
        fin,
        opcode,
        mask,
        header_len,
        payload_len,
    }))
}

/// XORs `data` with the repeating 4-byte `mask`, eight bytes at a time.
fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let [a, b, c, d] = mask;
    // Native byte order on both sides of the XOR, so the bytes line up whatever the platform.
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut words = data.chunks_exact_mut(8);
    for word in &mut words {
        let mut w = [0; 8];
        w.copy_from_slice(word);
        word.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    // The tail starts at a multiple of 8, hence of 4: the mask restarts at its first byte.
    for (byte, m) in words.into_remainder().iter_mut().zip(mask.iter().cycle()) {
        *byte ^= m;
    }
}

/// Parses a close frame's payload (RFC 6455 §5.5.1, §7.4).
fn parse_close(payload: &[u8]) -> Result<Option<(u16, String)>, WsError> {
    match payload {
        [] => Ok(None),
        [_] => Err(WsError::Protocol("close payload of one byte")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_close_code(code) {
                return Err(WsError::Protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(reason)
                .map_err(|_| WsError::Protocol("close reason is not UTF-8"))?;
            Ok(Some((code, reason.to_owned())))
        }
    }
}

/// Codes a peer may put in a close frame: the defined ones that are not reserved for local use
/// (1004-1006, 1015), and the ranges for libraries (3000-3999) and applications (4000-4999).
fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// Appends the header of one unmasked, final (FIN=1) server frame carrying `payload_len` bytes
/// to `out`: 2, 4 or 10 bytes. The payload is written after it by the caller, typically as a
/// separate shared `Bytes` in a vectored write.
pub fn encode_header(opcode: u8, payload_len: usize, out: &mut BytesMut) {
    let b0 = 0x80 | (opcode & 0x0F);
    if payload_len < 126 {
        out.put_slice(&[b0, payload_len as u8]);
    } else if let Ok(len) = u16::try_from(payload_len) {
        out.put_slice(&[b0, 126]);
        out.put_u16(len);
    } else {
        out.put_slice(&[b0, 127]);
        out.put_u64(payload_len as u64);
    }
}

/// A complete close frame with `code` and `reason`. The reason is cut, on a character boundary,
/// to the 123 bytes a control frame leaves for it. `code` must be one a close frame may carry
/// (not 1005, 1006 or 1015).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let reason = truncate_on_char_boundary(reason, MAX_CONTROL_PAYLOAD - 2);
    let mut out = BytesMut::with_capacity(4 + reason.len());
    encode_header(OP_CLOSE, 2 + reason.len(), &mut out);
    out.put_u16(code);
    out.put_slice(reason.as_bytes());
    out.freeze()
}

/// A complete pong frame echoing `payload`, which should be a ping's (at most 125 bytes; any
/// excess is cut, as a control frame cannot carry it).
pub fn pong_frame(payload: &[u8]) -> Bytes {
    control_frame(OP_PONG, payload)
}

/// A complete ping frame with `payload` (at most 125 bytes; any excess is cut).
pub fn ping_frame(payload: &[u8]) -> Bytes {
    control_frame(OP_PING, payload)
}

fn control_frame(opcode: u8, payload: &[u8]) -> Bytes {
    debug_assert!(
        payload.len() <= MAX_CONTROL_PAYLOAD,
        "control payload over 125 bytes"
    );
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
    let mut out = BytesMut::with_capacity(2 + payload.len());
    encode_header(opcode, payload.len(), &mut out);
    out.put_slice(payload);
    out.freeze()
}

fn truncate_on_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The masking key of the examples in RFC 6455 §5.7.
    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A masked client frame: `b0` is the first byte as sent (FIN, RSV and opcode).
    fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![b0];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 0xFFFF {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&KEY);
        out.extend(payload.iter().zip(KEY.iter().cycle()).map(|(p, k)| p ^ k));
        out
    }

    fn text(payload: &[u8]) -> Vec<u8> {
        client_frame(0x80 | OP_TEXT, payload)
    }

    /// A two-byte frame with the given first byte.
    fn text_with_b0(b0: u8) -> Vec<u8> {
        client_frame(b0, b"hi")
    }

    fn reader(max_message: usize) -> FrameReader {
        FrameReader::new(ReadConfig {
            initial_buffer: 4096,
            max_message,
        })
    }

    /// Feeds `bytes` to a fresh reader and decodes once.
    fn decode_one(bytes: &[u8]) -> Result<Option<Incoming>, WsError> {
        let mut r = reader(1 << 20);
        r.feed(bytes);
        r.decode()
    }

    fn protocol_error(bytes: &[u8]) -> &'static str {
        match decode_one(bytes) {
            Err(WsError::Protocol(why)) => why,
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn header_encoding_at_each_length_class() {
        let cases: [(usize, &[u8]); 5] = [
            (0, &[0x82, 0]),
            (125, &[0x82, 125]),
            (126, &[0x82, 126, 0, 126]),
            (65535, &[0x82, 126, 0xFF, 0xFF]),
            (65536, &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ];
        for (len, want) in cases {
            let mut out = BytesMut::new();
            encode_header(OP_BINARY, len, &mut out);
            assert_eq!(&out[..], want, "length {len}");
        }
        let mut out = BytesMut::from(&b"kept"[..]);
        encode_header(OP_TEXT, 5, &mut out);
        assert_eq!(&out[..], b"kept\x81\x05", "appends, and sets FIN");
    }

    #[test]
    fn control_frames_encode() {
        assert_eq!(&ping_frame(b"")[..], &[0x89, 0]);
        assert_eq!(&pong_frame(b"abc")[..], b"\x8A\x03abc");
        assert_eq!(&close_frame(NORMAL, "")[..], &[0x88, 2, 0x03, 0xE8]);
        assert_eq!(&close_frame(TOO_BIG, "big")[..], b"\x88\x05\x03\xF1big");
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let reason = "é".repeat(100); // 200 bytes, 2 per char
        let frame = close_frame(POLICY, &reason);
        assert_eq!(frame[1] as usize, frame.len() - 2);
        assert!(frame.len() - 2 <= 125);
        let cut = std::str::from_utf8(&frame[4..]).expect("reason stays UTF-8");
        assert_eq!(cut, "é".repeat(61));
    }

    #[test]
    fn decodes_the_rfc_masked_hello() {
        let frame = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(
            decode_one(&frame).unwrap(),
            Some(Incoming::Text(Bytes::from_static(b"Hello")))
        );
    }

    #[test]
    fn decodes_masked_frames_of_each_length_class() {
        for len in [
            0, 1, 7, 8, 9, 17, 125, 126, 127, 4096, 65535, 65536, 100_000,
        ] {
            let payload = pattern(len);
            let got = decode_one(&client_frame(0x80 | OP_BINARY, &payload)).unwrap();
            assert_eq!(got, Some(Incoming::Binary(payload.into())), "length {len}");
        }
    }

    #[test]
    fn decodes_consecutive_frames_from_one_buffer() {
        let mut r = reader(1 << 20);
        let mut bytes = text(b"one");
        bytes.extend(client_frame(0x80 | OP_BINARY, b"two"));
        bytes.extend(client_frame(0x80 | OP_PONG, b"three"));
        r.feed(&bytes);
        assert_eq!(r.decode().unwrap(), Some(Incoming::Text("one".into())));
        assert_eq!(r.decode().unwrap(), Some(Incoming::Binary("two".into())));
        assert_eq!(r.decode().unwrap(), Some(Incoming::Pong("three".into())));
        assert_eq!(r.decode().unwrap(), None);
    }

    #[test]
    fn single_frame_is_delivered_without_a_copy() {
        let mut r = reader(1 << 20);
        r.feed(&text(b"zero copy"));
        let start = r.buf.as_ptr() as usize;
        let Some(Incoming::Text(payload)) = r.decode().unwrap() else {
            panic!("expected text")
        };
        assert_eq!(&payload[..], b"zero copy");
        assert_eq!(
            payload.as_ptr() as usize,
            start + 6,
            "a slice of the read buffer"
        );
    }

    #[test]
    fn close_frames_decode() {
        assert_eq!(
            decode_one(&client_frame(0x88, b"")).unwrap(),
            Some(Incoming::Close(None))
        );
        for code in [1000u16, 1001, 1003, 1007, 1011, 3000, 4999] {
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend_from_slice("bye ✓".as_bytes());
            assert_eq!(
                decode_one(&client_frame(0x88, &payload)).unwrap(),
                Some(Incoming::Close(Some((code, "bye ✓".to_owned())))),
                "code {code}"
            );
        }
    }

    #[test]
    fn fragments_are_assembled_around_an_interleaved_ping() {
        let mut r = reader(1 << 20);
        let mut bytes = client_frame(OP_TEXT, b"Hel"); // FIN=0
        bytes.extend(client_frame(0x80 | OP_PING, b"are you there"));
        bytes.extend(client_frame(OP_CONTINUATION, b"lo, ")); // FIN=0
        bytes.extend(client_frame(0x80 | OP_CONTINUATION, "wörld".as_bytes()));
        bytes.extend(client_frame(OP_BINARY, &[1, 2]));
        bytes.extend(client_frame(0x80 | OP_CONTINUATION, &[3]));
        r.feed(&bytes);
        assert_eq!(
            r.decode().unwrap(),
            Some(Incoming::Ping("are you there".into()))
        );
        assert_eq!(
            r.decode().unwrap(),
            Some(Incoming::Text("Hello, wörld".into()))
        );
        assert_eq!(
            r.decode().unwrap(),
            Some(Incoming::Binary(vec![1, 2, 3].into()))
        );
        assert_eq!(r.decode().unwrap(), None);
        assert!(r.fragments.is_none());
    }

    #[test]
    fn a_utf8_char_may_span_fragments() {
        let mut r = reader(1 << 20);
        let euro = "€".as_bytes();
        r.feed(&client_frame(OP_TEXT, &euro[..1]));
        r.feed(&client_frame(0x80 | OP_CONTINUATION, &euro[1..]));
        assert_eq!(r.decode().unwrap(), Some(Incoming::Text("€".into())));
    }

    #[test]
    fn frames_split_across_many_reads() {
        let mut bytes = text(b"");
        bytes.extend(client_frame(0x80 | OP_PING, b"p"));
        bytes.extend(client_frame(OP_BINARY, &pattern(200)));
        bytes.extend(client_frame(0x80 | OP_CONTINUATION, &pattern(70_000)));
        bytes.extend(text(&[b'x'; 126]));
        let mut r = reader(1 << 20);
        let mut got = Vec::new();
        for byte in bytes {
            r.feed(&[byte]);
            if let Some(incoming) = r.decode().unwrap() {
                got.push(incoming);
            }
        }
        let mut message = pattern(200);
        message.extend(pattern(70_000));
        assert_eq!(
            got,
            [
                Incoming::Text(Bytes::new()),
                Incoming::Ping("p".into()),
                Incoming::Binary(message.into()),
                Incoming::Text(vec![b'x'; 126].into()),
            ]
        );
        assert_eq!(r.buffer_capacity(), 4096);
    }

    #[test]
    fn unmasked_frames_are_refused() {
        assert_eq!(
            protocol_error(&[0x81, 0x01, b'a']),
            "client frame is not masked"
        );
    }

    #[test]
    fn reserved_bits_are_refused() {
        for rsv in [0x40, 0x20, 0x10] {
            assert_eq!(
                protocol_error(&text_with_b0(0x80 | rsv | OP_TEXT)),
                "reserved bits set without an extension"
            );
        }
    }

    #[test]
    fn unknown_opcodes_are_refused() {
        for op in [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(protocol_error(&text_with_b0(0x80 | op)), "unknown opcode");
        }
    }

    #[test]
    fn control_frames_must_be_final_and_short() {
        for op in [OP_CLOSE, OP_PING, OP_PONG] {
            assert_eq!(
                protocol_error(&client_frame(op, b"")),
                "fragmented control frame"
            );
            assert_eq!(
                protocol_error(&client_frame(0x80 | op, &[0; 126])),
                "control frame payload over 125 bytes"
            );
        }
        // The check needs only the first two bytes.
        assert_eq!(
            protocol_error(&[0x89, 0x80 | 126]),
            "control frame payload over 125 bytes"
        );
        assert!(decode_one(&client_frame(0x89, &[0; 125]))
            .unwrap()
            .is_some());
    }

    #[test]
    fn continuation_needs_a_message_in_progress() {
        assert_eq!(
            protocol_error(&client_frame(0x80 | OP_CONTINUATION, b"x")),
            "continuation frame without a message"
        );
        let mut r = reader(1 << 20);
        r.feed(&text(b"done"));
        r.feed(&client_frame(0x80 | OP_CONTINUATION, b"x"));
        assert!(r.decode().unwrap().is_some());
        assert!(matches!(r.decode(), Err(WsError::Protocol(_))));
    }

    #[test]
    fn data_frame_may_not_interrupt_a_fragmented_message() {
        for op in [OP_TEXT, OP_BINARY] {
            let mut bytes = client_frame(OP_TEXT, b"start");
            bytes.extend(client_frame(0x80 | op, b"intruder"));
            assert_eq!(
                protocol_error(&bytes),
                "new data frame while a fragmented message is in progress"
            );
        }
    }

    #[test]
    fn length_with_high_bit_is_refused() {
        let mut frame = vec![0x82, 0x80 | 127];
        frame.extend_from_slice(&(1u64 << 63).to_be_bytes());
        frame.extend_from_slice(&KEY);
        assert_eq!(
            protocol_error(&frame),
            "64-bit length with the high bit set"
        );
    }

    #[test]
    fn bad_close_payloads_are_refused() {
        assert_eq!(
            protocol_error(&client_frame(0x88, &[0x03])),
            "close payload of one byte"
        );
        for code in [0u16, 999, 1004, 1005, 1006, 1012, 1015, 2999, 5000, 65535] {
            assert_eq!(
                protocol_error(&client_frame(0x88, &code.to_be_bytes())),
                "invalid close code",
                "code {code}"
            );
        }
        assert_eq!(
            protocol_error(&client_frame(0x88, &[0x03, 0xE8, 0xFF])),
            "close reason is not UTF-8"
        );
    }

    #[test]
    fn invalid_utf8_text_is_refused() {
        assert!(matches!(
            decode_one(&text(&[b'a', 0xC3])),
            Err(WsError::InvalidUtf8)
        ));
        let mut bytes = client_frame(OP_TEXT, b"ok");
        bytes.extend(client_frame(0x80 | OP_CONTINUATION, &[0xED, 0xA0, 0x80]));
        assert!(matches!(decode_one(&bytes), Err(WsError::InvalidUtf8)));
        // Binary messages are not checked.
        assert!(decode_one(&client_frame(0x82, &[0xFF])).is_ok());
    }

    #[test]
    fn too_big_is_refused_from_the_header_without_buffering() {
        let mut r = reader(64 << 10);
        // Only the header of a 1 TiB frame: refused at once, nothing allocated for it.
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 40).to_be_bytes());
        header.extend_from_slice(&KEY);
        r.feed(&header);
        assert!(matches!(r.decode(), Err(WsError::TooBig)));
        assert_eq!(r.buffer_capacity(), 4096);

        // One byte over the limit in a single frame.
        let frame = client_frame(0x82, &pattern((64 << 10) + 1));
        let mut r = reader(64 << 10);
        r.feed(&frame[..14]); // the header only
        assert!(matches!(r.decode(), Err(WsError::TooBig)));
        assert_eq!(r.buffer_capacity(), 4096);

        // Exactly at the limit is fine.
        let mut r = reader(64 << 10);
        r.feed(&client_frame(0x82, &pattern(64 << 10)));
        assert!(matches!(r.decode(), Ok(Some(Incoming::Binary(_)))));
    }

    #[test]
    fn too_big_counts_the_assembled_message() {
        let mut r = reader(1000);
        r.feed(&client_frame(OP_BINARY, &[0; 600]));
        assert_eq!(r.decode().unwrap(), None);
        let mut header = client_frame(0x80 | OP_CONTINUATION, &[0; 401]);
        header.truncate(8);
        r.feed(&header);
        assert!(matches!(r.decode(), Err(WsError::TooBig)));
        assert!(r.buffer_capacity() < 4096 + 1000);

        let mut r = reader(1000);
        r.feed(&client_frame(OP_BINARY, &[0; 600]));
        r.feed(&client_frame(0x80 | OP_CONTINUATION, &[0; 400]));
        assert!(matches!(r.decode(), Ok(Some(Incoming::Binary(b))) if b.len() == 1000));
    }

    #[test]
    fn buffer_grows_for_a_large_frame_and_shrinks_after() {
        let mut r = reader(1 << 20);
        assert_eq!(r.buffer_capacity(), 4096);
        let big = client_frame(0x82, &pattern(100_000));
        r.feed(&big[..4096]);
        assert_eq!(r.decode().unwrap(), None);
        assert_eq!(r.buffer_capacity(), big.len(), "grown exactly to the frame");
        r.feed(&big[4096..]);
        assert!(matches!(r.decode(), Ok(Some(Incoming::Binary(b))) if b.len() == 100_000));
        assert_eq!(r.buffer_capacity(), 4096, "back to the initial size");

        // Bytes of the next frame that arrived with the large one survive the shrink.
        let small = text(b"small");
        let mut bytes = big.clone();
        bytes.extend_from_slice(&small[..4]);
        r.feed(&bytes);
        assert!(matches!(r.decode(), Ok(Some(Incoming::Binary(b))) if b.len() == 100_000));
        assert_eq!(r.buffer_capacity(), 4096);
        assert_eq!(r.decode().unwrap(), None);
        r.feed(&small[4..]);
        assert_eq!(r.decode().unwrap(), Some(Incoming::Text("small".into())));
        assert_eq!(r.buffer_capacity(), 4096);
    }

    #[test]
    fn large_fragments_do_not_keep_a_large_read_buffer() {
        let mut r = reader(1 << 20);
        r.feed(&client_frame(OP_BINARY, &pattern(10_000)));
        assert_eq!(r.decode().unwrap(), None);
        assert_eq!(r.buffer_capacity(), 4096 + 10_000, "read buffer + assembly");
        r.feed(&client_frame(0x80 | OP_CONTINUATION, &pattern(10_000)));
        assert!(matches!(r.decode(), Ok(Some(Incoming::Binary(b))) if b.len() == 20_000));
        assert_eq!(
            r.buffer_capacity(),
            4096,
            "assembly handed over, read buffer small"
        );
    }

    #[test]
    fn read_buffer_is_reused_once_messages_are_dropped() {
        let mut r = reader(1 << 20);
        let frame = client_frame(0x82, &[7; 1000]);
        for _ in 0..100 {
            r.feed(&frame);
            assert!(r.decode().unwrap().is_some());
        }
        assert_eq!(r.buffer_capacity(), 4096);
    }

    #[tokio::test]
    async fn read_pulls_frames_from_io_and_reports_eof() {
        let mut bytes = text(b"hello");
        bytes.extend(client_frame(0x88, &NORMAL.to_be_bytes()));
        bytes.extend(&text(b"cut short")[..5]);
        let mut io = &bytes[..];
        let mut r = reader(1 << 20);
        assert_eq!(
            r.read(&mut io).await.unwrap(),
            Incoming::Text("hello".into())
        );
        assert_eq!(
            r.read(&mut io).await.unwrap(),
            Incoming::Close(Some((NORMAL, String::new())))
        );
        assert!(matches!(r.read(&mut io).await, Err(WsError::Closed)));
    }

    #[test]
    fn errors_map_to_close_codes() {
        assert_eq!(WsError::Protocol("x").close_code(), Some(1002));
        assert_eq!(WsError::InvalidUtf8.close_code(), Some(1007));
        assert_eq!(WsError::TooBig.close_code(), Some(1009));
        assert_eq!(WsError::Closed.close_code(), None);
        assert_eq!(
            WsError::Io(io::ErrorKind::ConnectionReset.into()).close_code(),
            None
        );
    }
}
