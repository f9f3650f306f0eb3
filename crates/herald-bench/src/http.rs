//! The OpenAPI side: signed `POST /?Action=…` requests over keep-alive HTTP/1.1 connections.
//!
//! A raw writer rather than the SDK's `reqwest` client, for the same reason as [`crate::ws`]: one
//! request is one `write`, one answer is parsed from one buffer, and nothing else runs. Each
//! connection carries one request at a time; the load driver runs several connections.

use std::io;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use herald_proto::openapi::SERVICE;
use herald_proto::sign::{sign_request, Credentials};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// The version of the messaging actions the benchmark calls.
pub const VERSION: &str = "2023-07-20";

/// The region the benchmark signs for (Herald accepts any).
const REGION: &str = "cn-north-1";

/// Largest response accepted.
const MAX_RESPONSE: usize = 1 << 20;

/// An access key pair.
#[derive(Debug, Clone)]
pub struct AccessKey {
    /// The access key id.
    pub ak: String,
    /// The secret key.
    pub sk: String,
}

/// The whole request, signed now: `POST /?Action={action}&Version=2023-07-20` with `body`.
pub fn signed_request(host: &str, key: &AccessKey, action: &str, body: &[u8]) -> Vec<u8> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let creds = Credentials {
        access_key: &key.ak,
        secret_key: &key.sk,
        region: REGION,
        service: SERVICE,
        session_token: None,
    };
    let query = [("Action", action), ("Version", VERSION)];
    let base = [("Host", host), ("Content-Type", "application/json")];
    let signed = sign_request(&creds, "POST", "/", &query, &base, body, now);
    let mut req = Vec::with_capacity(body.len() + 512);
    req.extend_from_slice(
        format!("POST /?Action={action}&Version={VERSION} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n")
            .as_bytes(),
    );
    for (name, value) in &signed {
        req.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    req.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    req.extend_from_slice(body);
    req
}

/// An answer: the status and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

/// Reads answers from a connection, one after the other; bytes of the next answer that arrive
/// with the current one stay buffered (requests may be pipelined).
#[derive(Debug, Default)]
pub struct AnswerReader {
    buf: Vec<u8>,
}

impl AnswerReader {
    /// Reads the next answer.
    pub async fn read<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> io::Result<Answer> {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some((status, head_len, body_len)) = parse_head(&self.buf)? {
                let total = head_len + body_len;
                while self.buf.len() < total {
                    let n = r.read(&mut chunk).await?;
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                let body = self.buf[head_len..total].to_vec();
                self.buf.drain(..total);
                return Ok(Answer { status, body });
            }
            if self.buf.len() > MAX_RESPONSE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "response head too large",
                ));
            }
            let n = r.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// One keep-alive connection to the OpenAPI.
#[derive(Debug)]
pub struct HttpConn {
    stream: TcpStream,
    answers: AnswerReader,
}

impl HttpConn {
    /// Connects.
    pub async fn connect(addr: SocketAddr) -> io::Result<HttpConn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(HttpConn {
            stream,
            answers: AnswerReader::default(),
        })
    }

    /// Sends one whole request (from [`signed_request`]) and reads its answer.
    pub async fn call(&mut self, request: &[u8]) -> io::Result<Answer> {
        self.stream.write_all(request).await?;
        self.answers.read(&mut self.stream).await
    }

    /// The two directions, for pipelining: requests are written on one side while their answers
    /// are read, in order, on the other.
    pub fn into_split(self) -> (OwnedReadHalf, AnswerReader, OwnedWriteHalf) {
        let (rd, wr) = self.stream.into_split();
        (rd, self.answers, wr)
    }
}

/// Status, head length and `Content-Length` of a response whose head has fully arrived.
fn parse_head(buf: &[u8]) -> io::Result<Option<(u16, usize, usize)>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let bad = |m: &'static str| io::Error::new(io::ErrorKind::InvalidData, m);
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| bad("response head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("malformed status line"))?;
    let mut length = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(bad("chunked responses are not expected from the OpenAPI"));
            }
        }
    }
    let length = length.ok_or_else(|| bad("response without Content-Length"))?;
    if length > MAX_RESPONSE {
        return Err(bad("response too large"));
    }
    Ok(Some((status, end + 4, length)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_proto::sign::{
        parse_authorization, parse_x_date, signing_key, verify_request, ReceivedRequest,
    };

    #[test]
    fn heads_parse() {
        let r =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(parse_head(r).unwrap(), Some((200, r.len() - 5, 5)));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\n").unwrap(), None);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn pipelined_answers_are_read_in_order() {
        let two = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhiHTTP/1.1 429 Too Many\r\ncontent-length: 0\r\n\r\n";
        let mut r = &two[..];
        let mut answers = AnswerReader::default();
        let a = answers.read(&mut r).await.unwrap();
        assert_eq!((a.status, &a.body[..]), (200, &b"hi"[..]));
        assert_eq!(answers.read(&mut r).await.unwrap().status, 429);
        assert!(answers.read(&mut r).await.is_err());
    }

    #[test]
    fn requests_are_signed_as_the_server_verifies() {
        let key = AccessKey {
            ak: "AKLTbench".into(),
            sk: "secret".into(),
        };
        let body = br#"{"AppId":"a","From":"bench","To":"u1","Binary":false,"Message":"x"}"#;
        let req = signed_request("127.0.0.1:8080", &key, "SendUnicast", body);
        let text = String::from_utf8(req.clone()).unwrap();
        assert!(text.starts_with("POST /?Action=SendUnicast&Version=2023-07-20 HTTP/1.1\r\n"));
        assert!(text.ends_with(std::str::from_utf8(body).unwrap()));
        let header = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .unwrap()
                .to_owned()
        };
        let headers: Vec<(String, String)> = [
            "Host",
            "Content-Type",
            "X-Date",
            "X-Content-Sha256",
            "Authorization",
        ]
        .iter()
        .map(|n| (n.to_string(), header(n)))
        .collect();
        let query = [
            ("Action".to_owned(), "SendUnicast".to_owned()),
            ("Version".to_owned(), VERSION.to_owned()),
        ];
        let auth = parse_authorization(&header("Authorization")).unwrap();
        let x_date = header("X-Date");
        let signing = signing_key("secret", &x_date[..8], &auth.region, &auth.service);
        let received = ReceivedRequest {
            method: "POST",
            path: "/",
            query: &query,
            headers: &headers,
            body,
        };
        let now = parse_x_date(&x_date).unwrap();
        verify_request(&received, &auth, &signing, "rtc", now, 900).unwrap();
    }
}
