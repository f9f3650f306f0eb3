//! The console's admin API and the served pages, over real HTTP.

mod common;

use common::*;
use serde_json::json;

const ADMIN: &str = "admin-token-for-tests-0001";

async fn admin(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: serde_json::Value,
) -> Reply {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    raw_http(
        addr,
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
}

#[tokio::test]
async fn the_console_sees_users_and_rooms_and_sends_test_messages() {
    let server = start(quiet(config(&format!("admin_token = \"{ADMIN}\"")))).await;
    let addr = server.local_addr();
    let now = system_now();

    // Tokens from the admin API log in and join.
    let r = admin(
        addr,
        "POST",
        "/admin/api/token",
        ADMIN,
        json!({"appId": APP, "uid": "u1"}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let mut u1 = ws(addr, APP).await;
    send_call(
        &mut u1,
        json!({"call":"login","token":r.body["token"],"uid":"u1"}),
    )
    .await;
    assert_eq!(event(&mut u1).await["errorCode"], 0);
    let r = admin(
        addr,
        "POST",
        "/admin/api/token",
        ADMIN,
        json!({"appId": APP, "uid": "u1", "roomId": "r1"}),
    )
    .await;
    send_call(
        &mut u1,
        json!({"call":"joinRoom","roomId":"r1","uid":"u1","token":r.body["token"]}),
    )
    .await;
    assert_eq!(event(&mut u1).await["state"], 0);
    let mut u2 = login(addr, "u2", now).await;

    let r = admin(addr, "GET", "/admin/api/overview", ADMIN, json!(null)).await;
    assert_eq!(r.status, 200);
    let app = r.body["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["appId"] == APP)
        .unwrap()
        .clone();
    assert_eq!(app["connections"], 2);
    assert_eq!(app["logins"], json!(["u1", "u2"]));
    assert_eq!(app["rooms"], json!([{"roomId": "r1", "members": ["u1"]}]));

    let r = admin(
        addr,
        "POST",
        "/admin/api/send",
        ADMIN,
        json!({"appId": APP, "to": "u2", "message": "ping"}),
    )
    .await;
    assert_eq!(
        (r.status, r.body["result"].clone()),
        (200, json!("Success"))
    );
    let m = message(&mut u2).await;
    assert_eq!((m.uid.as_str(), &m.payload[..]), ("console", &b"ping"[..]));
    let r = admin(
        addr,
        "POST",
        "/admin/api/send",
        ADMIN,
        json!({"appId": APP, "roomId": "r1", "message": "all"}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(message(&mut u1).await.room_id.as_deref(), Some("r1"));
    let r = admin(
        addr,
        "POST",
        "/admin/api/send",
        ADMIN,
        json!({"appId": APP, "message": "nowhere"}),
    )
    .await;
    assert_eq!(r.status, 400);

    let r = admin(addr, "GET", "/admin/api/overview", ADMIN, json!(null)).await;
    assert_eq!(r.body["counters"]["accepted"], 2);
    assert_eq!(r.body["counters"]["delivered"], 2);
}

#[tokio::test]
async fn the_admin_api_needs_its_token() {
    let server = start(config(&format!("admin_token = \"{ADMIN}\""))).await;
    let addr = server.local_addr();
    for token in ["", "admin-token-for-tests-0002", "admin"] {
        let r = admin(addr, "GET", "/admin/api/overview", token, json!(null)).await;
        assert_eq!(r.status, 401, "{token}");
    }
    let r = admin(
        addr,
        "POST",
        "/admin/api/token",
        "",
        json!({"appId": APP, "uid": "u1"}),
    )
    .await;
    assert_eq!(r.status, 401);

    let off = start(config("")).await;
    let r = admin(
        off.local_addr(),
        "GET",
        "/admin/api/overview",
        ADMIN,
        json!(null),
    )
    .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn pages_and_the_sdk_are_served_and_the_openapi_still_answers_at_the_root() {
    let server = start(config("")).await;
    let addr = server.local_addr();
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/demo", "text/html; charset=utf-8"),
        ("/sdk/herald.js", "text/javascript; charset=utf-8"),
        ("/sdk/herald.d.ts", "text/plain; charset=utf-8"),
    ] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(
            out.starts_with("HTTP/1.1 200"),
            "{path}: {}",
            &out[..out.len().min(200)]
        );
        assert!(
            out.to_ascii_lowercase()
                .contains(&format!("content-type: {content_type}")),
            "{path}"
        );
    }
    // The root with a query is the OpenAPI.
    let r = Call::new(
        "SendUnicast",
        json!({"AppId": APP, "From": "b", "To": "u", "Binary": false, "Message": "m"}),
        system_now(),
    )
    .send(addr)
    .await;
    assert_eq!((r.status, r.code()), (200, "Success".to_owned()));
    let r = raw_http(addr, b"GET /?Action=SendUnicast&Version=2023-07-20 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(r.code(), "MethodNotAllowed");
}
