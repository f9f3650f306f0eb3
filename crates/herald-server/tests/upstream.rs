//! `sendServerMessage`'s POST to the business server, against real HTTP servers on 127.0.0.1:0:
//! the body on the wire, each result code, the bounds on time and answer size.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_proto::client::send_result::{E2BS_RETURN_FAILED, E2BS_SEND_FAILED};
use herald_server::upstream::Upstream;
use http::{header, HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// One request as the business server saw it.
#[derive(Debug)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

type Answer = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;

/// A business server on port 0 that reports every request and answers with `answer`.
async fn business_server(
    answer: impl Fn() -> Answer + Send + Sync + 'static,
) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, requests) = mpsc::unbounded_channel();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (seen, answer) = (seen.clone(), answer.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (seen, answer) = (seen.clone(), answer.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        let _ = seen.send(Seen {
                            method: parts.method,
                            path: parts.uri.to_string(),
                            headers: parts.headers,
                            body,
                        });
                        Ok::<_, std::convert::Infallible>(answer().await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, requests)
}

fn reply(status: u16, body: impl Into<Bytes>) -> Answer {
    let response = Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .body(Full::new(body.into()))
        .unwrap();
    Box::pin(async move { response })
}

fn upstream() -> Upstream {
    Upstream::new(Duration::from_secs(5))
}

#[tokio::test]
async fn text_message_is_posted_as_the_vendor_does_and_the_answer_returned() {
    let (addr, mut seen) = business_server(|| reply(200, "{\"ok\":true}")).await;
    let url = format!("http://{addr}/rtc/message?x=1");
    let answer = upstream()
        .post(&url, "001sig", "hello \"world\" ✓".as_bytes(), false)
        .await;
    assert_eq!(answer, Ok(Bytes::from_static(b"{\"ok\":true}")));

    let req = seen.recv().await.unwrap();
    assert_eq!(req.method, Method::POST);
    assert_eq!(req.path, "/rtc/message?x=1");
    assert_eq!(
        req.body,
        r#"{"message":"hello \"world\" ✓","binary":false,"signature":"001sig"}"#
    );
    assert!(
        !req.headers.contains_key(header::CONTENT_TYPE),
        "the vendor sends no Content-Type: {:?}",
        req.headers
    );
    assert_eq!(req.headers[header::USER_AGENT], "herald");
}

#[tokio::test]
async fn binary_message_is_base64() {
    let (addr, mut seen) = business_server(|| reply(200, "")).await;
    let answer = upstream()
        .post(&format!("http://{addr}/"), "s", &[0, 1, 2, 0xff], true)
        .await;
    assert_eq!(answer, Ok(Bytes::new()));
    let req = seen.recv().await.unwrap();
    assert_eq!(
        req.body,
        r#"{"message":"AAEC/w==","binary":true,"signature":"s"}"#
    );
}

#[tokio::test]
async fn non_200_is_return_failed() {
    for status in [404, 500, 201, 204] {
        let (addr, _seen) = business_server(move || reply(status, "nope")).await;
        let answer = upstream()
            .post(&format!("http://{addr}/"), "s", b"m", false)
            .await;
        assert_eq!(answer, Err(E2BS_RETURN_FAILED), "status {status}");
    }
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (target, mut target_seen) = business_server(|| reply(200, "followed")).await;
    let (addr, mut seen) = business_server(move || {
        Box::pin(async move {
            Response::builder()
                .status(StatusCode::FOUND)
                .header(header::LOCATION, format!("http://{target}/"))
                .body(Full::new(Bytes::new()))
                .unwrap()
        })
    })
    .await;
    let answer = upstream()
        .post(&format!("http://{addr}/"), "s", b"m", false)
        .await;
    assert_eq!(answer, Err(E2BS_RETURN_FAILED));
    assert!(seen.recv().await.is_some());
    assert!(target_seen.try_recv().is_err(), "the redirect was followed");
}

#[tokio::test]
async fn closed_port_is_send_failed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let answer = upstream()
        .post(&format!("http://{addr}/"), "s", b"m", false)
        .await;
    assert_eq!(answer, Err(E2BS_SEND_FAILED));
}

#[tokio::test]
async fn non_http_urls_are_send_failed() {
    let (addr, mut seen) = business_server(|| reply(200, "")).await;
    for url in [
        format!("https://{addr}/"),
        format!("ftp://{addr}/"),
        "/relative".to_owned(),
        "not a url".to_owned(),
        String::new(),
    ] {
        let answer = upstream().post(&url, "s", b"m", false).await;
        assert_eq!(answer, Err(E2BS_SEND_FAILED), "{url:?}");
    }
    assert!(seen.try_recv().is_err());
}

#[tokio::test]
async fn a_server_that_never_answers_is_send_failed_within_the_timeout() {
    let (addr, mut seen) = business_server(|| Box::pin(std::future::pending())).await;
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let answer = Upstream::new(timeout)
        .post(&format!("http://{addr}/"), "s", b"m", false)
        .await;
    let took = started.elapsed();
    assert_eq!(answer, Err(E2BS_SEND_FAILED));
    assert!(seen.recv().await.is_some(), "the request was sent");
    assert!(
        took >= timeout && took < timeout * 5,
        "took {took:?} with a {timeout:?} timeout"
    );
}

#[tokio::test]
async fn a_slow_answer_body_is_bounded_by_the_same_timeout() {
    // Status and headers at once, then a body that never finishes.
    let (addr, _seen) = business_server(|| {
        Box::pin(async {
            Response::builder()
                .status(200)
                .header(header::CONTENT_LENGTH, "10")
                .body(Full::new(Bytes::from_static(b"12345")))
                .unwrap()
        })
    })
    .await;
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let answer = Upstream::new(timeout)
        .post(&format!("http://{addr}/"), "s", b"m", false)
        .await;
    assert_eq!(answer, Err(E2BS_SEND_FAILED));
    assert!(started.elapsed() < timeout * 5);
}

#[tokio::test]
async fn answers_are_bounded_to_64_kib() {
    let (addr, _seen) = business_server(|| reply(200, vec![b'a'; 64 * 1024])).await;
    let answer = upstream()
        .post(&format!("http://{addr}/"), "s", b"m", false)
        .await;
    assert_eq!(answer.map(|b| b.len()), Ok(64 * 1024));

    let (addr, _seen) = business_server(|| reply(200, vec![b'a'; 70 * 1024])).await;
    let answer = upstream()
        .post(&format!("http://{addr}/"), "s", b"m", false)
        .await;
    assert_eq!(answer, Err(E2BS_RETURN_FAILED));
}

#[tokio::test]
async fn an_oversized_chunked_answer_is_return_failed() {
    // No Content-Length: the limit holds while streaming too.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await.unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        let chunk = vec![b'a'; 8192];
        for _ in 0..9 {
            let _ = s.write_all(b"2000\r\n").await;
            let _ = s.write_all(&chunk).await;
            let _ = s.write_all(b"\r\n").await;
        }
        let _ = s.write_all(b"0\r\n\r\n").await;
    });
    let answer = upstream()
        .post(&format!("http://{addr}/"), "s", b"m", false)
        .await;
    assert_eq!(answer, Err(E2BS_RETURN_FAILED));
}
