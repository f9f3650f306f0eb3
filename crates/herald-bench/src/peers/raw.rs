//! The limit: `herald-bench raw-writer`, a minimal server that writes pre-encoded WebSocket frames
//! to the benchmark's sockets with no routing at all.
//!
//! One port serves both sides:
//! - `GET /?c=<n>` with a WebSocket upgrade: client number `n` connects; its socket is kept in
//!   slot `n` of a table (a connection without `?c=` is accepted and never written to). What the
//!   client sends is read and thrown away; the connection ends when the client closes it.
//! - `POST /send` with `{"to":[n, …],"message":"…"}` (keep-alive, pipelined): the message is
//!   encoded once as an unmasked binary frame, and the same bytes are queued on each listed slot;
//!   the answer is `200` with `{"queued":k}`.
//!
//! Each connection is one task that sleeps until its queue is non-empty, then writes everything
//! queued in as few vectored writes as the socket takes. Nothing else happens between the
//! trigger and the socket: no lookup by name, no per-recipient encoding, no accounting, no
//! limits. That is the ceiling Herald is measured against (issue 3).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::{Buf as _, Bytes};
use parking_lot::{Mutex, RwLock};
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::ws::accept_key;

/// Largest request head accepted.
const MAX_HEAD: usize = 8 * 1024;

/// Largest trigger body accepted.
const MAX_BODY: usize = 4 << 20;

/// Frames handed to one vectored write.
const MAX_SLICES: usize = 64;

/// One client connection's queue of frames to write.
#[derive(Debug, Default)]
struct Slot {
    queue: Mutex<VecDeque<Bytes>>,
    wake: Notify,
}

impl Slot {
    fn push(&self, frame: Bytes) {
        let mut q = self.queue.lock();
        q.push_back(frame);
        if q.len() == 1 {
            // The writer sleeps only when the queue is empty; a stored permit covers a push
            // that lands while it is writing.
            self.wake.notify_one();
        }
    }
}

/// Client number → connection.
#[derive(Debug, Default)]
struct Table {
    slots: RwLock<Vec<Option<Arc<Slot>>>>,
}

/// Runs the raw writer on `listen` until killed. Prints `raw-writer listening on http://ADDR`.
pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!("raw-writer listening on http://{}", listener.local_addr()?);
    let table = Arc::new(Table::default());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, typically: wait for some to close.
                eprintln!("raw-writer: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let table = table.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, &table).await {
                if e.kind() != io::ErrorKind::UnexpectedEof {
                    eprintln!("raw-writer: connection ended: {e}");
                }
            }
        });
    }
}

/// The request line, and the `Sec-WebSocket-Key` and `Content-Length` headers.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    method: String,
    target: String,
    ws_key: Option<String>,
    content_length: usize,
    len: usize,
}

/// Parses a request head once it has fully arrived.
fn parse_head(buf: &[u8]) -> io::Result<Option<Head>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(invalid("request head too large"));
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| invalid("request head not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let mut head = Head {
        method: method.to_owned(),
        target: target.to_owned(),
        ws_key: None,
        content_length: 0,
        len: end + 4,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("sec-websocket-key") {
            head.ws_key = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("content-length") {
            head.content_length = value.parse().map_err(|_| invalid("bad Content-Length"))?;
        }
    }
    Ok(Some(head))
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Reads until `buf` holds a whole request head.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Head> {
    loop {
        if let Some(head) = parse_head(buf)? {
            return Ok(head);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

async fn connection(mut stream: TcpStream, table: &Table) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(1024);
    let head = read_head(&mut stream, &mut buf).await?;
    match (head.method.as_str(), &head.ws_key) {
        ("GET", Some(key)) => {
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                accept_key(key)
            );
            stream.write_all(response.as_bytes()).await?;
            let client = head
                .target
                .split_once("?c=")
                .and_then(|(_, n)| n.parse::<usize>().ok());
            drop(buf);
            websocket(stream, table, client).await
        }
        ("POST", _) if head.target == "/send" => triggers(stream, buf, table).await,
        _ => {
            stream
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .await
        }
    }
}

/// A client connection: registered in its slot, written to when its queue fills.
async fn websocket(mut stream: TcpStream, table: &Table, client: Option<usize>) -> io::Result<()> {
    let slot = Arc::new(Slot::default());
    if let Some(n) = client {
        let mut slots = table.slots.write();
        if slots.len() <= n {
            slots.resize(n + 1, None);
        }
        slots[n] = Some(slot.clone());
    }
    let result = async {
        loop {
            tokio::select! {
                ready = stream.readable() => {
                    ready?;
                    // Clients send nothing the writer needs; read to notice the close.
                    let mut scratch = [0u8; 256];
                    match stream.try_read(&mut scratch) {
                        Ok(0) => return Ok(()),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
                () = slot.wake.notified() => {
                    let mut frames = std::mem::take(&mut *slot.queue.lock());
                    write_frames(&mut stream, &mut frames).await?;
                }
            }
        }
    }
    .await;
    if let Some(n) = client {
        let mut slots = table.slots.write();
        if slots
            .get(n)
            .and_then(Option::as_ref)
            .is_some_and(|s| Arc::ptr_eq(s, &slot))
        {
            slots[n] = None;
        }
    }
    result
}

/// Writes every frame, up to [`MAX_SLICES`] per vectored write.
async fn write_frames(stream: &mut TcpStream, frames: &mut VecDeque<Bytes>) -> io::Result<()> {
    while !frames.is_empty() {
        let slices: Vec<IoSlice<'_>> = frames
            .iter()
            .take(MAX_SLICES)
            .map(|f| IoSlice::new(f))
            .collect();
        let mut n = stream.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let Some(front) = frames.front_mut() else {
                break;
            };
            if n >= front.len() {
                n -= front.len();
                frames.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
    Ok(())
}

/// The trigger's body.
#[derive(Debug, Deserialize)]
struct Send {
    to: Vec<usize>,
    message: String,
}

/// An unmasked, final binary frame carrying `payload`.
pub fn binary_frame(payload: &[u8]) -> Bytes {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x82);
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
    Bytes::from(f)
}

/// Serves `POST /send` requests on one keep-alive connection; `buf` holds what was read so far,
/// starting with the first request's head.
async fn triggers(mut stream: TcpStream, mut buf: Vec<u8>, table: &Table) -> io::Result<()> {
    let mut out = Vec::new();
    loop {
        // Answer every whole request in the buffer, then write the answers at once.
        while let Some(head) = parse_head(&buf)? {
            if head.content_length > MAX_BODY {
                return Err(invalid("trigger body too large"));
            }
            let total = head.len + head.content_length;
            if buf.len() < total {
                break;
            }
            let answer = match serde_json::from_slice::<Send>(&buf[head.len..total]) {
                Ok(send) => {
                    let frame = binary_frame(send.message.as_bytes());
                    let slots = table.slots.read();
                    let mut queued = 0;
                    for n in send.to {
                        if let Some(Some(slot)) = slots.get(n) {
                            slot.push(frame.clone());
                            queued += 1;
                        }
                    }
                    (200, format!("{{\"queued\":{queued}}}"))
                }
                Err(_) => (
                    400,
                    "{\"error\":\"expected {\\\"to\\\":[n],\\\"message\\\":s}\"}".to_owned(),
                ),
            };
            out.extend_from_slice(
                format!(
                    "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
                    answer.0,
                    if answer.0 == 200 { "OK" } else { "Bad Request" },
                    answer.1.len(),
                    answer.1
                )
                .as_bytes(),
            );
            buf.drain(..total);
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::{Frame, FrameBuf};

    #[test]
    fn frames_are_what_the_client_reads() {
        for len in [0, 125, 126, 70_000] {
            let payload = vec![b'x'; len];
            let mut fb = FrameBuf::new(64);
            fb.feed(&binary_frame(&payload));
            assert_eq!(fb.next_frame().unwrap(), Some(Frame::Binary(&payload)));
        }
    }

    #[test]
    fn heads_parse() {
        let req = b"GET /?c=7 HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Key: abc\r\n\r\nrest";
        let head = parse_head(req).unwrap().unwrap();
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/?c=7");
        assert_eq!(head.ws_key.as_deref(), Some("abc"));
        assert_eq!(head.len, req.len() - 4);
        let post = b"POST /send HTTP/1.1\r\ncontent-length: 12\r\n\r\n";
        assert_eq!(parse_head(post).unwrap().unwrap().content_length, 12);
        assert!(parse_head(b"GET / HTTP/1.1\r\n").unwrap().is_none());
    }

    #[tokio::test]
    async fn writes_triggered_frames_to_the_listed_clients() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let table = Arc::new(Table::default());
        let t = table.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                let t = t.clone();
                tokio::spawn(async move { connection(s, &t).await });
            }
        });
        let host = addr.to_string();
        let mut a = crate::ws::WsClient::connect(addr, &host, "/?c=0", 1024)
            .await
            .unwrap();
        let mut b = crate::ws::WsClient::connect(addr, &host, "/?c=2", 1024)
            .await
            .unwrap();
        while table.slots.read().iter().flatten().count() < 2 {
            tokio::task::yield_now().await;
        }
        let mut api = crate::http::HttpConn::connect(addr).await.unwrap();
        let body = br#"{"to":[0,1,2],"message":"hello"}"#;
        let mut req = format!(
            "POST /send HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        let answer = api.call(&req).await.unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, br#"{"queued":2}"#);
        for ws in [&mut a, &mut b] {
            assert_eq!(ws.next_data().await.unwrap(), (false, b"hello".to_vec()));
        }
    }
}
