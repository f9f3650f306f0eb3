//! Hostile input over the real endpoints: a real server on 127.0.0.1:0, real sockets, raw TCP
//! wherever a normal client would refuse to send the bad input. Every case asserts the exact
//! documented answer (HTTP status and envelope `Code`/`CodeN`, or WebSocket close code or event)
//! and that nothing else changed: a client logged in on the same app received nothing, and a
//! valid call afterwards still works. docs/security.md lists each case with its test.
//!
//! Cases already covered elsewhere are not repeated here (see the table in docs/security.md):
//! truncated JSON, a number for `To`, a string for `Binary`, plain bad base64, 601 recipients,
//! a body refused by `Content-Length`, `Action` twice or missing, a stale `X-Date`, another app's
//! `AppId` for `SendUnicast` (tests/openapi.rs); expired, forged and other-app login tokens,
//! a token for another room, an oversized frame sent whole (tests/gateway.rs).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use herald_proto::token::AccessToken;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// How long any single wait in these tests may last before the test fails.
const BOUND: Duration = Duration::from_secs(10);

fn unicast(to: &str) -> Value {
    json!({"AppId": APP, "From": "server_bot", "To": to, "Binary": false, "Message": "hi"})
}

/// A signed call of `action` whose body is exactly `body` (not necessarily JSON).
fn raw_body_call(action: &'static str, body: &[u8], now: i64) -> Call<'static> {
    let mut c = Call::new(action, json!(null), now);
    c.query[0].1 = action;
    c.body = body.to_vec();
    c
}

/// Asserts an OpenAPI error: status, `Code`, `CodeN`, the envelope's shape, no `Result`.
fn assert_error(what: &str, r: &Reply, status: u16, code: &str, code_n: Option<u64>) {
    assert_eq!(
        (r.status, r.code().as_str(), r.code_n()),
        (status, code, code_n),
        "{what}: {:?}",
        r.body
    );
    let meta = &r.body["ResponseMetadata"];
    assert!(r.body.get("Result").is_none(), "{what}: no Result");
    assert_eq!(meta["Service"], "rtc", "{what}");
    assert!(
        !meta["Error"]["Message"].as_str().unwrap_or("").is_empty(),
        "{what}"
    );
}

/// The bystander's next frame is this call's message: nothing before it reached the bystander,
/// and the server still delivers.
async fn still_delivers(addr: SocketAddr, bystander: &mut Ws, uid: &str, msgid: u64) {
    let r = Call::new("SendUnicast", unicast(uid), system_now())
        .send(addr)
        .await;
    assert_eq!((r.status, r.code()), (200, "Success".to_owned()));
    let m = message(bystander).await;
    assert_eq!((m.msgid, &m.payload[..]), (msgid, &b"hi"[..]));
}

/// Inserts a header line into a raw request: right after the request line (`first`), so it
/// precedes every other header, or right before the blank line.
fn with_header(request: &[u8], line: &str, first: bool) -> Vec<u8> {
    let at = if first {
        find(request, b"\r\n").unwrap() + 2
    } else {
        find(request, b"\r\n\r\n").unwrap() + 2
    };
    let mut out = request[..at].to_vec();
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&request[at..]);
    out
}

/// The request with every header line starting with `prefix` removed.
fn without_header(request: &[u8], prefix: &str) -> Vec<u8> {
    let end = find(request, b"\r\n\r\n").unwrap();
    let head = std::str::from_utf8(&request[..end]).unwrap();
    let kept: Vec<&str> = head
        .split("\r\n")
        .filter(|l| !l.starts_with(prefix))
        .collect();
    let mut out = kept.join("\r\n").into_bytes();
    out.extend_from_slice(&request[end..]);
    out
}

/// The value of the header line starting with `prefix`.
fn header_value(request: &[u8], prefix: &str) -> String {
    let end = find(request, b"\r\n\r\n").unwrap();
    let head = std::str::from_utf8(&request[..end]).unwrap();
    head.split("\r\n")
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap()
        .trim()
        .to_owned()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads until the server closes the connection (EOF or reset), within [`BOUND`].
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 8192];
    tokio::time::timeout(BOUND, async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("the server closes the connection in time");
    got
}

// ---------------------------------------------------------------------------------------------
// OpenAPI bodies

#[tokio::test]
async fn malformed_bodies_are_refused_and_deliver_nothing() {
    let server = start(config("")).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut bystander = login(addr, "online_user", now).await;
    join(&mut bystander, "r", "online_user", now).await;

    let deep_array = "[".repeat(100_000);
    let deep_in_to = format!(
        r#"{{"AppId":"{APP}","From":"b","Binary":false,"Message":"m","To":{}"#,
        "[".repeat(100_000)
    );
    let deep_object = format!(
        r#"{{"AppId":"{APP}","From":"b","To":"online_user","Binary":false,"Message":{}"#,
        r#"{"a":"#.repeat(20_000)
    );
    let mut utf8_in_string =
        format!(r#"{{"AppId":"{APP}","From":"b","To":"online_user","Binary":false,"Message":""#)
            .into_bytes();
    utf8_in_string.extend_from_slice(b"\xff\xfe\"}");
    let mut utf8_outside = b"{\"AppId\":".to_vec();
    utf8_outside.extend_from_slice(b"\xc3\x28}");
    let fields = |app: Value, from: Value, to: Value, binary: Value, message: Value| {
        json!({"AppId": app, "From": from, "To": to, "Binary": binary, "Message": message})
            .to_string()
            .into_bytes()
    };
    let cases: Vec<(&str, &'static str, Vec<u8>)> = vec![
        ("100k nested arrays", "SendUnicast", deep_array.into_bytes()),
        ("100k nested arrays in To", "BatchSendRoomUnicast", deep_in_to.into_bytes()),
        ("20k nested objects in Message", "SendUnicast", deep_object.into_bytes()),
        ("invalid UTF-8 in a string", "SendUnicast", utf8_in_string),
        ("invalid UTF-8 outside strings", "SendUnicast", utf8_outside),
        (
            "a lone surrogate escape",
            "SendUnicast",
            format!(
                r#"{{"AppId":"{APP}","From":"b","To":"online_user","Binary":false,"Message":"\ud800"}}"#
            )
            .into_bytes(),
        ),
        (
            "a number for AppId",
            "SendUnicast",
            fields(json!(65), json!("b"), json!("online_user"), json!(false), json!("m")),
        ),
        (
            "a number for From",
            "SendUnicast",
            fields(json!(APP), json!(7), json!("online_user"), json!(false), json!("m")),
        ),
        (
            "a number for Message",
            "SendUnicast",
            fields(json!(APP), json!("b"), json!("online_user"), json!(false), json!(12345)),
        ),
        (
            "1 for Binary",
            "SendUnicast",
            fields(json!(APP), json!("b"), json!("online_user"), json!(1), json!("m")),
        ),
        (
            "numbers in a batch's To",
            "BatchSendRoomUnicast",
            json!({"AppId": APP, "RoomId": "r", "From": "b", "To": [1, 2], "Binary": false, "Message": "m"})
                .to_string()
                .into_bytes(),
        ),
        (
            "an object for To",
            "SendUnicast",
            fields(json!(APP), json!("b"), json!({"id": "online_user"}), json!(false), json!("m")),
        ),
        (
            "AppId twice (another app's first)",
            "SendUnicast",
            format!(
                r#"{{"AppId":"{APP2}","AppId":"{APP}","From":"b","To":"online_user","Binary":false,"Message":"m"}}"#
            )
            .into_bytes(),
        ),
        (
            "the fields as a JSON array",
            "SendUnicast",
            json!([APP, null, "b", "online_user", false, "m"])
                .to_string()
                .into_bytes(),
        ),
        ("a JSON string", "SendUnicast", b"\"hello\"".to_vec()),
        ("null", "SendUnicast", b"null".to_vec()),
        (
            "trailing garbage",
            "SendUnicast",
            [&unicast("online_user").to_string().into_bytes()[..], &b" x"[..]].concat(),
        ),
        (
            "a byte-order mark",
            "SendUnicast",
            [&b"\xef\xbb\xbf"[..], &unicast("online_user").to_string().into_bytes()[..]].concat(),
        ),
    ];
    // `null` is no value: the field is missing.
    let c = Call::new(
        "SendUnicast",
        json!({"AppId": APP, "From": "b", "To": "online_user", "Binary": false, "Message": null}),
        now,
    );
    assert_error(
        "null for Message",
        &c.send(addr).await,
        400,
        "MissingParameter",
        Some(100002),
    );
    for (what, action, body) in cases {
        let mut c = raw_body_call(action, &body, now);
        c.query[0].1 = action;
        let r = c.send(addr).await;
        assert_error(what, &r, 400, "InvalidParameter.Unmarshal", None);
    }
    assert_eq!(server.metrics().accepted_total(), 0, "nothing was accepted");
    still_delivers(addr, &mut bystander, "online_user", 1).await;

    // An unknown field is skipped without recursion, however deep: no stack is at risk, and the
    // call is served.
    let deep_unknown = format!(
        r#"{{"AppId":"{APP}","From":"b","To":"online_user","Binary":false,"Message":"deep","X":{}{}}}"#,
        "[".repeat(60_000),
        "]".repeat(60_000)
    );
    let r = raw_body_call("SendUnicast", deep_unknown.as_bytes(), now)
        .send(addr)
        .await;
    assert_eq!((r.status, r.code()), (200, "Success".to_owned()));
    let m = message(&mut bystander).await;
    assert_eq!((m.msgid, &m.payload[..]), (2, &b"deep"[..]));
}

#[tokio::test]
async fn bad_base64_variants_are_invalid_parameter() {
    let server = start(config("")).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut bystander = login(addr, "online_user", now).await;
    for (what, message) in [
        ("URL-safe alphabet", "-_-_"),
        ("missing padding", "aGk"),
        ("a line break inside", "aGVs\nbG8="),
        ("padding in the middle", "aG==aGk="),
        ("a space", "aGVs bG8="),
        ("non-ASCII", "aGVsbG8é"),
    ] {
        let c = Call::new(
            "SendUnicast",
            json!({"AppId": APP, "From": "b", "To": "online_user", "Binary": true, "Message": message}),
            now,
        );
        assert_error(what, &c.send(addr).await, 400, "InvalidParameter", None);
    }
    // Standard base64 with padding works and arrives decoded.
    let c = Call::new(
        "SendUnicast",
        json!({"AppId": APP, "From": "b", "To": "online_user", "Binary": true, "Message": "/+8A"}),
        now,
    );
    assert_eq!(c.send(addr).await.status, 200);
    let m = message(&mut bystander).await;
    assert_eq!(
        (m.msgid, m.binary, &m.payload[..]),
        (1, true, &[0xff, 0xef, 0][..])
    );
}

/// A chunked body has no length to refuse it by: it is counted while it is read and refused as
/// soon as it passes the limit, without waiting for the rest (which is never sent here).
#[tokio::test]
async fn a_chunked_body_is_refused_as_it_grows_past_the_limit() {
    let server = start(config("")).await;
    let addr = server.local_addr();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /?Action=SendUnicast&Version=2023-07-20 HTTP/1.1\r\nHost: x\r\n\
          Transfer-Encoding: chunked\r\n\r\n",
    )
    .await
    .unwrap();
    let chunk = [&b"4000\r\n"[..], &[b'a'; 0x4000][..], &b"\r\n"[..]].concat();
    for _ in 0..8 {
        s.write_all(&chunk).await.unwrap(); // 8 × 16 KiB: exactly 128 KiB, still legal
    }
    s.write_all(b"1\r\nb").await.unwrap(); // one byte more, and the body is never finished
    let r = read_reply(&mut s).await;
    assert_error(
        "chunked body over 128 KiB",
        &r,
        413,
        "InvalidParameter.SizeOverLimit",
        None,
    );
    // A chunked body within the limit is read like any other.
    let c = Call::new("SendUnicast", unicast("nobody"), system_now());
    let signed = c.to_bytes(addr);
    let end = find(&signed, b"\r\n\r\n").unwrap();
    let head = String::from_utf8(signed[..end].to_vec()).unwrap();
    let head = head.replace(
        &format!("Content-Length: {}", c.body.len()),
        "Transfer-Encoding: chunked",
    );
    let mut chunked = format!("{head}\r\n\r\n{:x}\r\n", c.body.len()).into_bytes();
    chunked.extend_from_slice(&c.body);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let r = raw_http(addr, &chunked).await;
    assert_eq!((r.status, r.code()), (200, "Success".to_owned()));
}

// ---------------------------------------------------------------------------------------------
// Query parameters and headers

#[tokio::test]
async fn query_parameter_tricks() {
    let server = start(config("")).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut bystander = login(addr, "online_user", now).await;
    type Case = (
        &'static str,
        Vec<(&'static str, &'static str)>,
        u16,
        &'static str,
        Option<u64>,
    );
    let cases: Vec<Case> = vec![
        (
            "Version twice",
            vec![
                ("Action", "SendUnicast"),
                ("Version", "2023-07-20"),
                ("Version", "2020-12-01"),
            ],
            400,
            "InvalidParameter",
            None,
        ),
        (
            "Version twice, the same value",
            vec![
                ("Action", "SendUnicast"),
                ("Version", "2023-07-20"),
                ("Version", "2023-07-20"),
            ],
            400,
            "InvalidParameter",
            None,
        ),
        (
            "Action a second time, percent-encoded",
            vec![
                ("Action", "SendUnicast"),
                ("%41ction", "SendUnicast"),
                ("Version", "2023-07-20"),
            ],
            400,
            "InvalidParameter",
            None,
        ),
        (
            "no Version",
            vec![("Action", "SendUnicast")],
            400,
            "MissingParameter",
            Some(100002),
        ),
        (
            "no query parameters",
            vec![("x", "1")],
            400,
            "MissingParameter",
            Some(100002),
        ),
        (
            "an empty Action",
            vec![("Action", ""), ("Version", "2023-07-20")],
            404,
            "InvalidActionOrVersion",
            Some(100008),
        ),
        (
            "Action in another case",
            vec![("Action", "sendunicast"), ("Version", "2023-07-20")],
            404,
            "InvalidActionOrVersion",
            Some(100008),
        ),
        (
            "Action with a trailing NUL",
            vec![("Action", "SendUnicast%00"), ("Version", "2023-07-20")],
            404,
            "InvalidActionOrVersion",
            Some(100008),
        ),
    ];
    for (what, query, status, code, code_n) in cases {
        let mut c = Call::new("SendUnicast", unicast("online_user"), now);
        c.query = query;
        assert_error(what, &c.send(addr).await, status, code, code_n);
    }
    still_delivers(addr, &mut bystander, "online_user", 1).await;
}

#[tokio::test]
async fn header_tricks() {
    let server = start(config("")).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut bystander = login(addr, "online_user", now).await;
    let valid = Call::new("SendUnicast", unicast("online_user"), now).to_bytes(addr);
    let authorization = header_value(&valid, "Authorization:");
    let x_date = header_value(&valid, "X-Date:");
    let content_length = header_value(&valid, "Content-Length:");

    // Headers the signature depends on, given twice: which copy was meant is a guess, so the
    // request is refused whichever copy is the genuine one.
    for (what, request) in [
        (
            "Authorization twice, the genuine one second",
            with_header(&valid, "Authorization: HMAC-SHA256 garbage", true),
        ),
        (
            "Authorization twice, the genuine one first",
            with_header(&valid, "Authorization: HMAC-SHA256 garbage", false),
        ),
        (
            "Authorization twice, both genuine",
            with_header(&valid, &format!("Authorization: {authorization}"), false),
        ),
        (
            "X-Date twice",
            with_header(&valid, "X-Date: 20991231T000000Z", false),
        ),
        (
            "X-Date twice, the same value",
            with_header(&valid, &format!("X-Date: {x_date}"), true),
        ),
        (
            "X-Content-Sha256 twice",
            with_header(&valid, "X-Content-Sha256: 00", false),
        ),
        (
            "Host (a signed header) twice",
            with_header(&valid, "Host: evil.example", false),
        ),
    ] {
        assert_error(
            what,
            &raw_http(addr, &request).await,
            400,
            "InvalidAuthorization",
            None,
        );
    }

    // X-Date far from the server clock, either way, or not a date at all.
    for (what, at) in [
        ("a year ahead", now + 366 * 86_400),
        ("in 2099", 4_070_908_800),
    ] {
        let c = Call::new("SendUnicast", unicast("online_user"), at);
        assert_error(
            what,
            &c.send(addr).await,
            403,
            "InvalidTimestamp",
            Some(100006),
        );
    }
    let bad_date = with_header(
        &without_header(&valid, "X-Date:"),
        "X-Date: 99999999T999999Z",
        false,
    );
    assert_error(
        "X-Date not a date",
        &raw_http(addr, &bad_date).await,
        403,
        "InvalidTimestamp",
        Some(100006),
    );

    // Two different Content-Length values: the framing is ambiguous, and the HTTP layer refuses
    // the request before Herald sees it (a bare 400, no envelope).
    let two_lengths = with_header(&valid, "Content-Length: 2", true);
    let r = raw_http(addr, &two_lengths).await;
    assert_eq!((r.status, &r.body), (400, &Value::Null), "{:?}", r.headers);
    // The same value twice is one length (RFC 9110 §8.6 allows either); the request is served.
    let same_twice = with_header(&valid, &format!("Content-Length: {content_length}"), true);
    let r = raw_http(addr, &same_twice).await;
    assert_eq!((r.status, r.code()), (200, "Success".to_owned()));
    let m = message(&mut bystander).await;
    assert_eq!(m.msgid, 1);

    // Transfer-Encoding and Content-Length together (request smuggling): the chunked framing
    // wins, the connection is closed after the answer, and the request hidden behind it is never
    // served.
    let smuggled = b"POST /?Action=SendUnicast&Version=2023-07-20 HTTP/1.1\r\nHost: x\r\n\
        Content-Length: 60\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
        GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(smuggled).await.unwrap();
    let got = read_until_closed(&mut s).await;
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    assert!(text.starts_with("HTTP/1.1 401 "), "{text}");
    assert!(text.contains("MissingAuthenticationToken"), "{text}");

    // A request head over limits.max_header_bytes (32 KiB): 431 from the HTTP layer, closed.
    let huge = with_header(&valid, &format!("X-Padding: {}", "a".repeat(40_000)), true);
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(&huge).await;
    let got = read_until_closed(&mut s).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 431 "), "{text}");

    still_delivers(addr, &mut bystander, "online_user", 2).await;
}

// ---------------------------------------------------------------------------------------------
// Slow clients

#[tokio::test]
async fn slow_heads_and_bodies_are_timed_out() {
    let server = start(config(
        "[limits]\nheader_read_timeout_ms = 300\nbody_read_timeout_ms = 300",
    ))
    .await;
    let addr = server.local_addr();
    let now = system_now();
    let mut bystander = login(addr, "online_user", now).await;

    // A head trickled a byte at a time: closed without an answer once its time is up.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /?Action=SendUnicast&Version=2023-07-20 HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (mut rd, mut wr) = s.into_split();
    let trickle = tokio::spawn(async move {
        for b in b"X-Slow: ".iter().cycle() {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut got = Vec::new();
    let closed = tokio::time::timeout(BOUND, rd.read_to_end(&mut got)).await;
    assert!(closed.is_ok(), "the slow head was cut off in time");
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    trickle.abort();

    // A signed request whose body trickles in: refused once the body's time is up.
    let request = Call::new("SendUnicast", unicast("online_user"), now).to_bytes(addr);
    let end = find(&request, b"\r\n\r\n").unwrap() + 4;
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let body = request[end..].to_vec();
    wr.write_all(&request[..end]).await.unwrap();
    let trickle = tokio::spawn(async move {
        for b in body {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut got = Vec::new();
    let _ = tokio::time::timeout(BOUND, rd.read_to_end(&mut got))
        .await
        .expect("answered and closed in time");
    trickle.abort();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    let body: Value = serde_json::from_str(&text[text.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(
        body["ResponseMetadata"]["Error"]["Code"], "InvalidParameter",
        "{body}"
    );
    assert!(body["ResponseMetadata"]["Error"]["Message"]
        .as_str()
        .unwrap()
        .contains("in time"));

    still_delivers(addr, &mut bystander, "online_user", 1).await;
}

/// The admin API reads its (authenticated) bodies under the same time bound.
#[tokio::test]
async fn a_slow_admin_body_is_timed_out_too() {
    let admin = "admin-token-for-tests-0001";
    let server = start(config(&format!(
        "admin_token = \"{admin}\"\n[limits]\nbody_read_timeout_ms = 300"
    )))
    .await;
    let s = TcpStream::connect(server.local_addr()).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let body = json!({"appId": APP, "uid": "u1"}).to_string().into_bytes();
    wr.write_all(
        format!(
            "POST /admin/api/token HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let trickle = tokio::spawn(async move {
        for b in body {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut got = Vec::new();
    let _ = tokio::time::timeout(BOUND, rd.read_to_end(&mut got))
        .await
        .expect("answered and closed in time");
    trickle.abort();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(!text.contains("001"), "no token was issued: {text}");
}

// ---------------------------------------------------------------------------------------------
// Connection limits

/// `GET path` on a new connection: the status and the raw body.
async fn get(addr: SocketAddr, path: &str) -> (u16, Reply) {
    let r = raw_http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    (r.status, r)
}

/// The raw text of `/metrics`, once admitted.
async fn metrics_text(addr: SocketAddr) -> (String, u64) {
    let req = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut refused = 0;
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let out = String::from_utf8_lossy(&read_until_closed(&mut s).await).into_owned();
        if !out.starts_with("HTTP/1.1 503") {
            return (out, refused);
        }
        refused += 1;
        assert!(tokio::time::Instant::now() < deadline, "never admitted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn series(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {name} in\n{text}"))
}

fn assert_refusal(r: &Reply, key: &str) {
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.header("retry-after"), Some("1"));
    let e = &r.body["ResponseMetadata"]["Error"];
    assert_eq!(
        (e["Code"].as_str(), e["CodeN"].as_u64()),
        (Some("ServiceUnavailableTemp"), Some(100019))
    );
    assert!(e["Message"].as_str().unwrap().contains(key), "{e}");
}

/// A WebSocket upgrade is answered 503 instead of 101.
async fn assert_upgrade_refused(addr: SocketAddr) {
    use tokio_tungstenite::tungstenite::Error;
    match tokio_tungstenite::connect_async(format!("ws://{addr}/ws?appId={APP}")).await {
        Err(Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 503),
        Err(e) => panic!("expected a 503, got {e}"),
        Ok(_) => panic!("expected a 503, got an upgrade"),
    }
}

#[tokio::test]
async fn connections_over_the_per_ip_limit_get_503_before_anything_is_read() {
    let server = start(config("[limits]\nmax_connections_per_ip = 2")).await;
    let addr = server.local_addr();
    let now = system_now();
    // One logged-in client and one idle TCP connection fill this address's two places.
    let mut bystander = login(addr, "online_user", now).await;
    let idle = TcpStream::connect(addr).await.unwrap();

    // The third connection is answered at once, whatever it sends (here: a signed call that
    // would otherwise deliver a message) — nothing of it is read.
    let call = Call::new("SendUnicast", unicast("online_user"), now).to_bytes(addr);
    let r = raw_http(addr, &call).await;
    assert_refusal(&r, "limits.max_connections_per_ip");
    // A WebSocket upgrade is refused the same way.
    assert_upgrade_refused(addr).await;

    // The idle connection's end gives its place back (bounded wait: the server notices the end
    // a moment later): the same call is then served.
    drop(idle);
    let mut retried = 0;
    let deadline = tokio::time::Instant::now() + BOUND;
    let r = loop {
        let r = raw_http(addr, &call).await;
        if r.status != 503 {
            break r;
        }
        retried += 1;
        assert!(tokio::time::Instant::now() < deadline, "never admitted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!((r.status, r.code()), (200, "Success".to_owned()));
    let m = message(&mut bystander).await;
    assert_eq!((m.msgid, &m.payload[..]), (1, &b"hi"[..]));
    let (text, retried_more) = metrics_text(addr).await;
    assert_eq!(
        series(&text, "herald_connections_refused_total{reason=\"per_ip\"}"),
        (2 + retried + retried_more) as f64
    );
    assert_eq!(
        series(&text, "herald_connections_refused_total{reason=\"total\"}"),
        0.0
    );
    // The bystander and this scrape; nothing else is open.
    assert_eq!(series(&text, "herald_tcp_connections"), 2.0);
    assert_eq!(
        server.metrics().accepted_total(),
        1,
        "the refused calls were not read"
    );
}

#[tokio::test]
async fn websocket_connections_hold_their_place_until_they_end() {
    let server = start(config("[limits]\nmax_connections = 3")).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut bystander = login(addr, "online_user", now).await;
    let second = ws(addr, APP).await;
    let mut third = ws(addr, APP).await;
    // Three upgraded WebSockets hold all three places: their HTTP exchange has ended, their
    // places have not.
    let (status, r) = get(addr, "/healthz").await;
    assert_eq!(status, 503);
    assert_refusal(&r, "limits.max_connections");
    assert_upgrade_refused(addr).await;
    // One WebSocket ends: its place is free again.
    third.close(None).await.unwrap();
    assert!(matches!(next(&mut third).await, Got::Closed(_)));
    drop(second);
    let (text, retried) = metrics_text(addr).await;
    assert_eq!(
        series(&text, "herald_connections_refused_total{reason=\"total\"}"),
        (2 + retried) as f64
    );
    assert_eq!(
        series(&text, "herald_connections_refused_total{reason=\"per_ip\"}"),
        0.0
    );
    still_delivers(addr, &mut bystander, "online_user", 1).await;
}

// ---------------------------------------------------------------------------------------------
// WebSocket frames

/// A WebSocket client on a raw socket, so it can send what no library would.
struct RawWs {
    s: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    async fn open(addr: SocketAddr) -> RawWs {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!(
                "GET /ws?appId={APP} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let n = tokio::time::timeout(BOUND, s.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        assert!(
            buf.starts_with(b"HTTP/1.1 101 "),
            "{}",
            String::from_utf8_lossy(&buf)
        );
        RawWs {
            s,
            buf: buf.split_off(end),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        // The server may already have closed (that is what some cases expect); not an error.
        let _ = self.s.write_all(bytes).await;
    }

    async fn call(&mut self, call: Value) {
        self.send(&frame(0x81, call.to_string().as_bytes())).await;
    }

    /// The next server frame (opcode, payload), or `None` at the end of the stream.
    async fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                let len7 = (self.buf[1] & 0x7F) as usize;
                let (start, len) = match len7 {
                    126 if self.buf.len() >= 4 => {
                        (4, u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize)
                    }
                    127 if self.buf.len() >= 10 => {
                        let mut be = [0; 8];
                        be.copy_from_slice(&self.buf[2..10]);
                        (10, u64::from_be_bytes(be) as usize)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (2, n),
                };
                if start != usize::MAX && self.buf.len() >= start + len {
                    let opcode = self.buf[0] & 0x0F;
                    let payload = self.buf[start..start + len].to_vec();
                    self.buf.drain(..start + len);
                    return Some((opcode, payload));
                }
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout(BOUND, self.s.read(&mut chunk))
                .await
                .expect("a frame or the end in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next event, as JSON (skipping pings).
    async fn event(&mut self) -> Value {
        loop {
            match self.next_frame().await {
                Some((0x1, text)) => return serde_json::from_slice(&text).unwrap(),
                Some((0x9, _)) => continue,
                other => panic!("expected an event, got {other:?}"),
            }
        }
    }

    /// Reads until the server's close frame and returns its code; then the stream must end.
    async fn close_code(&mut self) -> u16 {
        loop {
            match self.next_frame().await {
                Some((0x8, payload)) => {
                    assert!(payload.len() >= 2, "a close frame with a code");
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    assert!(
                        self.next_frame().await.is_none(),
                        "the stream ends after close"
                    );
                    return code;
                }
                Some((0x1, text)) => panic!("unexpected event {}", String::from_utf8_lossy(&text)),
                Some(_) => continue,
                None => panic!("the connection ended without a close frame"),
            }
        }
    }
}

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A masked client frame with first byte `b0` (FIN, RSV, opcode) and `payload`.
fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = header(b0, payload.len() as u64);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    f
}

/// Only the header of a masked client frame announcing `len` payload bytes.
fn header(b0: u8, len: u64) -> Vec<u8> {
    let mut f = vec![b0];
    match len {
        0..=125 => f.push(0x80 | len as u8),
        126..=0xFFFF => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            f.push(0x80 | 127);
            f.extend_from_slice(&len.to_be_bytes());
        }
    }
    f.extend_from_slice(&MASK);
    f
}

/// Frames that break RFC 6455 or the size limit. Each is sent by a client that has logged in;
/// the connection must close with the documented code, the login must end with it, and nobody
/// else may notice anything.
#[tokio::test]
async fn broken_frames_close_with_the_documented_code_and_change_nothing() {
    let server = start(config("")).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut bystander = login(addr, "online_user", now).await;
    let limit = 128u64 << 10;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "a header announcing 1 GiB, no payload",
            header(0x82, 1 << 30),
            1009,
        ),
        (
            "a header announcing the limit + 1, no payload",
            header(0x81, limit + 1),
            1009,
        ),
        (
            "fragments adding up past the limit",
            [
                frame(0x02, &[0u8; 100_000]),
                header(0x80, limit - 100_000 + 1),
            ]
            .concat(),
            1009,
        ),
        ("an unmasked frame", vec![0x81, 0x02, b'h', b'i'], 1002),
        ("RSV1 without an extension", frame(0xC1, b"{}"), 1002),
        ("RSV3 on a binary frame", frame(0x92, b"x"), 1002),
        ("opcode 3", frame(0x83, b"x"), 1002),
        ("opcode 0xB", frame(0x8B, b""), 1002),
        ("a fragmented ping", frame(0x09, b"p"), 1002),
        (
            "a fragmented close",
            frame(0x08, &1000u16.to_be_bytes()),
            1002,
        ),
        ("a 126-byte ping", frame(0x89, &[0; 126]), 1002),
        ("a continuation with no message", frame(0x80, b"x"), 1002),
        (
            "a new message inside a fragmented one",
            [frame(0x01, b"{"), frame(0x81, b"{}")].concat(),
            1002,
        ),
        (
            "a 64-bit length with the high bit set",
            {
                let mut f = vec![0x82, 0x80 | 127];
                f.extend_from_slice(&(1u64 << 63).to_be_bytes());
                f.extend_from_slice(&MASK);
                f
            },
            1002,
        ),
        (
            "a close code that may not be sent",
            frame(0x88, &1005u16.to_be_bytes()),
            1002,
        ),
        (
            "invalid UTF-8 in a text frame",
            frame(0x81, b"{\"call\":\"\xff\"}"),
            1007,
        ),
        (
            "invalid UTF-8 split across fragments",
            [frame(0x01, b"ok \xe2\x82"), frame(0x80, b"(")].concat(),
            1007,
        ),
    ];
    for (i, (what, bytes, code)) in cases.into_iter().enumerate() {
        let uid = format!("h{i}");
        let mut c = RawWs::open(addr).await;
        c.call(json!({"call":"login","token":token("", &uid, now),"uid":uid}))
            .await;
        assert_eq!(c.event().await["errorCode"], 0, "{what}");
        c.send(&bytes).await;
        assert_eq!(c.close_code().await, code, "{what}");
        // The login ended with the connection (bounded wait: the server forgets it just after
        // its close frame is written).
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            send_call(
                &mut bystander,
                json!({"call":"getPeerOnlineStatus","peerUserId":uid}),
            )
            .await;
            let e = event(&mut bystander).await;
            assert_eq!(e["event"], "onGetPeerOnlineStatus", "{what}: {e}");
            if e["status"] == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: {uid} stays online"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    still_delivers(addr, &mut bystander, "online_user", 1).await;
}

/// A frame trickled in a byte at a time, each byte well inside the heartbeat interval: only
/// complete frames count as signs of life, so the connection is closed with 4002 once the
/// heartbeat timeout has passed, and the partial frame is dropped with it.
#[tokio::test]
async fn a_trickled_frame_is_cut_off_by_the_heartbeat() {
    let server = start(config(
        "[gateway]\nheartbeat_interval_ms = 100\nheartbeat_timeout_ms = 300",
    ))
    .await;
    let addr = server.local_addr();
    let now = system_now();
    let mut c = RawWs::open(addr).await;
    c.call(json!({"call":"login","token":token("", "slow", now),"uid":"slow"}))
        .await;
    assert_eq!(c.event().await["errorCode"], 0);
    let frame = frame(0x81, &[b' '; 1000]);
    let RawWs { s, mut buf } = c;
    let (mut rd, mut wr) = s.into_split();
    let trickle = tokio::spawn(async move {
        for b in frame {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut chunk = [0u8; 4096];
    let code = tokio::time::timeout(BOUND, async {
        loop {
            // Server frames here are pings (0x89 0x00) and the close frame.
            if let Some(i) = buf.iter().position(|&b| b == 0x88) {
                if buf.len() >= i + 4 {
                    return u16::from_be_bytes([buf[i + 2], buf[i + 3]]);
                }
            }
            let n = rd.read(&mut chunk).await.unwrap_or(0);
            assert!(n > 0, "closed without a close frame");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("closed in time");
    trickle.abort();
    assert_eq!(code, 4002);
}

/// Text frames that are valid WebSocket but not valid calls: answered with `onError` 4003, and
/// the connection goes on.
#[tokio::test]
async fn hostile_calls_get_on_error_and_the_connection_stays() {
    let server = start(config("")).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut c = RawWs::open(addr).await;
    for (what, text) in [
        ("100k nested arrays", "[".repeat(100_000)),
        (
            "100k nested arrays in a field",
            format!(
                r#"{{"call":"login","uid":"u","token":{}"#,
                "[".repeat(100_000)
            ),
        ),
        (
            "a number for uid",
            r#"{"call":"login","uid":5,"token":"t"}"#.to_owned(),
        ),
        (
            "the call tag twice",
            r#"{"call":"logout","call":"login","uid":"u","token":"t"}"#.to_owned(),
        ),
        ("a JSON array", r#"["login","t","u"]"#.to_owned()),
        (
            "a lone surrogate",
            r#"{"call":"login","uid":"\ud800","token":"t"}"#.to_owned(),
        ),
    ] {
        c.send(&frame(0x81, text.as_bytes())).await;
        let e = c.event().await;
        assert_eq!(
            (e["event"].as_str(), e["errorCode"].as_i64()),
            (Some("onError"), Some(4003)),
            "{what}: {e}"
        );
    }
    // A binary frame that is not a send: 4004.
    c.send(&frame(0x82, &[2, 0, 1])).await;
    assert_eq!(c.event().await["errorCode"], 4004);
    // The same connection still works.
    c.call(json!({"call":"login","token":token("", "u", now),"uid":"u"}))
        .await;
    assert_eq!(c.event().await["errorCode"], 0);
    let r = Call::new("SendUnicast", unicast("u"), now).send(addr).await;
    assert_eq!(r.status, 200);
    let (op, msg) = c.next_frame().await.unwrap();
    assert_eq!(op, 0x2);
    let m = herald_proto::client::ReceivedMessage::decode(msg.into()).unwrap();
    assert_eq!((m.msgid, &m.payload[..]), (1, &b"hi"[..]));
}

// ---------------------------------------------------------------------------------------------
// Tokens and keys

fn app_token(app: &str, key: &str, room: &str, uid: &str, now: i64) -> String {
    let mut t = AccessToken::new(app, room, uid, 7, now as u32);
    t.expire_time(now as u32 + 3600);
    t.serialize(key)
}

#[tokio::test]
async fn tokens_that_must_not_admit_anyone() {
    let server = start(config("")).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut member = ws(addr, APP).await;
    join(&mut member, "r1", "m1", now).await;
    let mut intruder = ws(addr, APP).await;

    for (what, tok, uid) in [
        (
            "a room token used to log in",
            app_token(APP, KEY, "r1", "x1", now),
            "x1",
        ),
        (
            "a token for another uid",
            app_token(APP, KEY, "", "someone", now),
            "x1",
        ),
        (
            "a wildcard room token",
            app_token(APP, KEY, "*", "x1", now),
            "x1",
        ),
        ("not a token", "001".to_owned() + &"A".repeat(300), "x1"),
        ("empty", String::new(), "x1"),
    ] {
        send_call(&mut intruder, json!({"call":"login","token":tok,"uid":uid})).await;
        let e = event(&mut intruder).await;
        assert_eq!(
            (e["event"].as_str(), e["errorCode"].as_i64()),
            (Some("onLoginResult"), Some(-1000)),
            "{what}: {e}"
        );
    }
    for (what, tok) in [
        (
            "a forged room token",
            app_token(APP, "not the app key", "r1", "x1", now),
        ),
        (
            "another app's room token",
            app_token(APP2, KEY, "r1", "x1", now),
        ),
        (
            "another app's wildcard token",
            app_token(APP2, KEY, "*", "x1", now),
        ),
        ("a login token", app_token(APP, KEY, "", "x1", now)),
        (
            "a token for another uid",
            app_token(APP, KEY, "r1", "m1", now),
        ),
    ] {
        send_call(
            &mut intruder,
            json!({"call":"joinRoom","roomId":"r1","uid":"x1","token":tok}),
        )
        .await;
        let e = event(&mut intruder).await;
        assert_eq!(
            (e["event"].as_str(), e["state"].as_i64()),
            (Some("onRoomStateChanged"), Some(-1000)),
            "{what}: {e}"
        );
    }
    // A forged renewal leaves the membership as it was.
    send_call(
        &mut member,
        json!({"call":"updateToken","roomId":"r1","token":app_token(APP, "forged", "r1", "m1", now)}),
    )
    .await;
    assert_eq!(
        event(&mut member).await,
        json!({"event":"onRoomStateChanged","roomId":"r1","uid":"m1","state":-1010})
    );

    // Nobody joined: the member saw no onUserJoined, and the room holds the member alone.
    let r = Call::room_users(APP, "r1", now).send(addr).await;
    assert_eq!(
        r.body["Result"]["VisibleUserList"],
        json!(["m1"]),
        "{:?}",
        r.body
    );
    let mut b = Call::new(
        "SendBroadcast",
        json!({"AppId": APP, "RoomId": "r1", "From": "bot", "Binary": false, "Message": "hi"}),
        now,
    );
    b.query[0].1 = "SendBroadcast";
    assert_eq!(b.send(addr).await.status, 200);
    let m = message(&mut member).await;
    assert_eq!((m.msgid, &m.payload[..]), (1, &b"hi"[..]));
}

/// App A's access key, correctly signed, aimed at app B: refused for every action, and B's room
/// neither changes nor leaks.
#[tokio::test]
async fn one_apps_key_cannot_reach_another_app() {
    let server = start(config("")).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut victim = ws(addr, APP2).await;
    send_call(
        &mut victim,
        json!({"call":"joinRoom","roomId":"r1","uid":"b","token":app_token(APP2, KEY, "r1", "b", now)}),
    )
    .await;
    assert_eq!(event(&mut victim).await["state"], 0);

    let mut calls = Vec::new();
    let mut kick = Call::new(
        "KickUser",
        json!({"AppId": APP2, "RoomId": "r1", "UserId": "b"}),
        now,
    );
    kick.query = vec![("Action", "KickUser"), ("Version", "2020-12-01")];
    calls.push(("KickUser", kick));
    calls.push(("GetRoomOnlineUsers", Call::room_users(APP2, "r1", now)));
    let mut broadcast = Call::new(
        "SendBroadcast",
        json!({"AppId": APP2, "RoomId": "r1", "From": "bot", "Binary": false, "Message": "x"}),
        now,
    );
    broadcast.query[0].1 = "SendBroadcast";
    calls.push(("SendBroadcast", broadcast));
    let mut batch = Call::new(
        "BatchSendRoomUnicast",
        json!({"AppId": APP2, "RoomId": "r1", "From": "bot", "To": ["b"], "Binary": false, "Message": "x"}),
        now,
    );
    batch.query[0].1 = "BatchSendRoomUnicast";
    calls.push(("BatchSendRoomUnicast", batch));
    for (what, call) in calls {
        assert_eq!(call.ak, AK, "signed with app A's key");
        let r = call.send(addr).await;
        assert_error(
            what,
            &r,
            403,
            "AccessDenied.NoPermissionForApp",
            Some(100013),
        );
    }

    // B's own key sees B's room unchanged, and B's member received nothing before this.
    let mut users = Call::room_users(APP2, "r1", now);
    users.ak = AK2;
    users.sk = SK2;
    assert_eq!(
        users.send(addr).await.body["Result"]["VisibleUserList"],
        json!(["b"])
    );
    let mut broadcast = Call::new(
        "SendBroadcast",
        json!({"AppId": APP2, "RoomId": "r1", "From": "bot", "Binary": false, "Message": "hi"}),
        now,
    );
    broadcast.query[0].1 = "SendBroadcast";
    broadcast.ak = AK2;
    broadcast.sk = SK2;
    assert_eq!(broadcast.send(addr).await.status, 200);
    let m = message(&mut victim).await;
    assert_eq!((m.msgid, &m.payload[..]), (1, &b"hi"[..]));
    victim.send(Message::Close(None)).await.unwrap();
}
