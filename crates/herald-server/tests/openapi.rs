//! The OpenAPI over real HTTP: every error code DECISIONS.md lists for the messaging actions, with
//! its status and CodeN, and the rate limit under a stopped clock.

mod common;

use common::*;
use serde_json::json;

fn unicast(to: &str) -> serde_json::Value {
    json!({"AppId": APP, "From": "server_bot", "To": to, "Binary": false, "Message": "hi"})
}

#[tokio::test]
async fn every_error_code_is_reachable_with_its_status() {
    let server = start(config("")).await;
    let addr = server.local_addr();
    let now = system_now();
    let mut bystander = login(addr, "online_user", now).await;

    // (what, request bytes, status, code, CodeN)
    type Case = (&'static str, Vec<u8>, u16, &'static str, Option<u64>);
    let mut cases: Vec<Case> = Vec::new();
    let signed = |c: Call<'_>| c.to_bytes(addr);

    let mut c = Call::new("SendUnicast", unicast("u1"), now);
    c.query = vec![("Version", "2023-07-20")];
    cases.push((
        "no Action",
        signed(c),
        400,
        "MissingParameter",
        Some(100002),
    ));
    let mut c = Call::new("SendUnicast", unicast("u1"), now);
    c.query = vec![
        ("Action", "SendUnicast"),
        ("Action", "SendUnicast"),
        ("Version", "2023-07-20"),
    ];
    cases.push(("Action twice", signed(c), 400, "InvalidParameter", None));
    let mut c = Call::new("SendUnicast", unicast("u1"), now);
    c.query = vec![("Action", "SendUnicast"), ("Version", "2022-06-01")];
    cases.push((
        "bad version",
        signed(c),
        404,
        "InvalidActionOrVersion",
        Some(100008),
    ));
    let mut c = Call::new("StartRecord", unicast("u1"), now);
    c.query = vec![("Action", "StartRecord"), ("Version", "2023-07-20")];
    cases.push((
        "unknown action",
        signed(c),
        404,
        "InvalidActionOrVersion",
        Some(100008),
    ));
    let mut c = Call::new("SendUnicast", unicast("u1"), now);
    c.method = "PUT";
    cases.push(("PUT", signed(c), 405, "MethodNotAllowed", Some(100020)));
    cases.push((
        "no Authorization",
        b"POST /?Action=SendUnicast&Version=2023-07-20 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}".to_vec(),
        401,
        "MissingAuthenticationToken",
        Some(100003),
    ));
    cases.push((
        "garbage Authorization",
        b"POST /?Action=SendUnicast&Version=2023-07-20 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer abc\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}".to_vec(),
        400,
        "InvalidAuthorization",
        None,
    ));
    let mut c = Call::new("SendUnicast", unicast("u1"), now);
    c.service = "iam";
    cases.push((
        "service iam",
        signed(c),
        400,
        "InvalidCredential",
        Some(100025),
    ));
    let mut c = Call::new("SendUnicast", unicast("u1"), now);
    c.ak = "AKLTnobody";
    cases.push((
        "unknown AK",
        signed(c),
        401,
        "InvalidAccessKey",
        Some(100009),
    ));
    let mut c = Call::new("SendUnicast", unicast("u1"), now);
    c.sk = "wrong";
    cases.push((
        "wrong SK",
        signed(c),
        401,
        "SignatureDoesNotMatch",
        Some(100010),
    ));
    let tampered = {
        let c = Call::new("SendUnicast", unicast("u1"), now);
        let mut b = c.to_bytes(addr);
        let at = b.len() - 3; // inside "hi"
        b[at] = b'X';
        b
    };
    cases.push((
        "tampered body",
        tampered,
        401,
        "SignatureDoesNotMatch",
        Some(100010),
    ));
    let c = Call::new("SendUnicast", unicast("u1"), now - 3600);
    cases.push((
        "an hour old",
        signed(c),
        403,
        "InvalidTimestamp",
        Some(100006),
    ));
    let no_date = {
        let c = Call::new("SendUnicast", unicast("u1"), now);
        let s = String::from_utf8(c.to_bytes(addr)).unwrap();
        let without: Vec<&str> = s
            .split("\r\n")
            .filter(|l| !l.starts_with("X-Date:"))
            .collect();
        without.join("\r\n").into_bytes()
    };
    cases.push((
        "no X-Date",
        no_date,
        400,
        "MissingRequestInfo",
        Some(100004),
    ));
    let mut c = Call::new("SendUnicast", unicast("u1"), now);
    c.body = Vec::new();
    cases.push((
        "empty body",
        signed(c),
        400,
        "InvalidParameter.BodyIsEmpty",
        None,
    ));
    let mut c = Call::new("SendUnicast", unicast("u1"), now);
    c.body = b"{\"AppId\":".to_vec();
    cases.push((
        "truncated JSON",
        signed(c),
        400,
        "InvalidParameter.Unmarshal",
        None,
    ));
    let c = Call::new(
        "SendUnicast",
        json!({"AppId": APP, "From": "b", "To": 7, "Binary": false, "Message": "m"}),
        now,
    );
    cases.push((
        "number for To",
        signed(c),
        400,
        "InvalidParameter.Unmarshal",
        None,
    ));
    let c = Call::new(
        "SendUnicast",
        json!({"AppId": APP, "From": "b", "To": "u", "Binary": "false", "Message": "m"}),
        now,
    );
    cases.push((
        "string for Binary",
        signed(c),
        400,
        "InvalidParameter.Unmarshal",
        None,
    ));
    let c = Call::new(
        "SendUnicast",
        json!({"AppId": APP, "From": "b", "To": "u", "Binary": false}),
        now,
    );
    cases.push((
        "no Message",
        signed(c),
        400,
        "MissingParameter",
        Some(100002),
    ));
    let c = Call::new(
        "SendUnicast",
        json!({"AppId": "bad app", "From": "b", "To": "u", "Binary": false, "Message": "m"}),
        now,
    );
    cases.push((
        "bad AppId",
        signed(c),
        400,
        "InvalidParameter.IllegalAppId",
        None,
    ));
    let c = Call::new(
        "SendUnicast",
        json!({"AppId": "cccccccccccccccccccccccc", "From": "b", "To": "u", "Binary": false, "Message": "m"}),
        now,
    );
    cases.push((
        "unknown AppId",
        signed(c),
        400,
        "InvalidParameter.NotExistAppId",
        None,
    ));
    let c = Call::new(
        "SendUnicast",
        json!({"AppId": APP2, "From": "b", "To": "u", "Binary": false, "Message": "m"}),
        now,
    );
    cases.push((
        "another app's AppId",
        signed(c),
        403,
        "AccessDenied.NoPermissionForApp",
        Some(100013),
    ));
    let mut c = Call::new(
        "SendRoomUnicast",
        json!({"AppId": APP, "RoomId": "r/1", "From": "b", "To": "u", "Binary": false, "Message": "m"}),
        now,
    );
    c.query[0].1 = "SendRoomUnicast";
    cases.push((
        "bad RoomId",
        signed(c),
        400,
        "InvalidParameter.IllegalRoomID",
        None,
    ));
    let c = Call::new(
        "SendUnicast",
        json!({"AppId": APP, "From": "b", "To": "u 1", "Binary": false, "Message": "m"}),
        now,
    );
    cases.push(("bad To", signed(c), 400, "InvalidParameter.IllegalTo", None));
    let c = Call::new(
        "SendUnicast",
        json!({"AppId": APP, "From": "b c", "To": "u", "Binary": false, "Message": "m"}),
        now,
    );
    cases.push((
        "bad From",
        signed(c),
        400,
        "InvalidParameter.IllegalFrom",
        None,
    ));
    let c = Call::new(
        "SendUnicast",
        json!({"AppId": APP, "From": "online_user", "To": "u", "Binary": false, "Message": "m"}),
        now,
    );
    cases.push((
        "From is online",
        signed(c),
        400,
        "InvalidParameter.IllegalFrom",
        None,
    ));
    let c = Call::new(
        "SendUnicast",
        json!({"AppId": APP, "From": "b", "To": "u", "Binary": false, "Message": "x".repeat(65537)}),
        now,
    );
    cases.push((
        "64 KiB + 1",
        signed(c),
        400,
        "InvalidParameter.SizeOverLimit",
        None,
    ));
    let c = Call::new(
        "SendUnicast",
        json!({"AppId": APP, "From": "b", "To": "u", "Binary": true, "Message": "not base64!"}),
        now,
    );
    cases.push(("bad base64", signed(c), 400, "InvalidParameter", None));
    let to: Vec<String> = (0..601).map(|i| format!("u{i}")).collect();
    let mut c = Call::new(
        "BatchSendRoomUnicast",
        json!({"AppId": APP, "RoomId": "r", "From": "b", "To": to, "Binary": false, "Message": "m"}),
        now,
    );
    c.query[0].1 = "BatchSendRoomUnicast";
    cases.push((
        "601 recipients",
        signed(c),
        400,
        "InvalidParameter.UserCountOverLimit",
        None,
    ));
    let mut c = Call::new(
        "BatchSendRoomUnicast",
        json!({"AppId": APP, "RoomId": "r", "From": "b", "To": ["u"], "Binary": false, "Message": "x".repeat(20 * 1024 + 1)}),
        now,
    );
    c.query[0].1 = "BatchSendRoomUnicast";
    cases.push((
        "batch 20 KiB + 1",
        signed(c),
        400,
        "InvalidParameter.SizeOverLimit",
        None,
    ));
    cases.push((
        "body over the limit, refused by Content-Length",
        b"POST /?Action=SendUnicast&Version=2023-07-20 HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n".to_vec(),
        413,
        "InvalidParameter.SizeOverLimit",
        None,
    ));

    for (what, bytes, status, code, code_n) in cases {
        let r = raw_http(addr, &bytes).await;
        assert_eq!(
            (r.status, r.code().as_str(), r.code_n()),
            (status, code, code_n),
            "{what}: {:?}",
            r.body
        );
        let meta = &r.body["ResponseMetadata"];
        assert!(
            r.body.get("Result").is_none(),
            "{what}: no Result on failure"
        );
        assert!(!meta["RequestId"].as_str().unwrap().is_empty(), "{what}");
        assert_eq!(meta["Service"], "rtc", "{what}");
        assert_eq!(meta["Region"], "cn-north-1", "{what}");
        assert!(
            !meta["Error"]["Message"].as_str().unwrap().is_empty(),
            "{what}"
        );
    }

    // Nothing above delivered anything: the next frame the bystander sees is this message.
    let r = Call::new("SendUnicast", unicast("online_user"), now)
        .send(addr)
        .await;
    assert_eq!((r.status, r.code()), (200, "Success".to_owned()));
    let m = message(&mut bystander).await;
    assert_eq!((m.msgid, &m.payload[..]), (1, &b"hi"[..]));
}

#[tokio::test]
async fn request_ids_are_unique_and_echo_action_and_version() {
    let server = start(config("")).await;
    let addr = server.local_addr();
    let mut ids = std::collections::HashSet::new();
    for version in ["2020-12-01", "2023-07-20"] {
        for _ in 0..5 {
            let mut c = Call::new("SendUnicast", unicast("nobody"), system_now());
            c.query[1].1 = version;
            let r = c.send(addr).await;
            assert_eq!(r.status, 200);
            let meta = &r.body["ResponseMetadata"];
            assert_eq!(
                (meta["Action"].as_str(), meta["Version"].as_str()),
                (Some("SendUnicast"), Some(version))
            );
            assert!(ids.insert(meta["RequestId"].as_str().unwrap().to_owned()));
            assert_eq!(r.body["Result"], json!({"Message": "Success"}));
        }
    }
}

#[tokio::test]
async fn the_rate_limit_holds_per_app_under_virtual_time() {
    let clock = manual_clock();
    let server = start_with_clock(config("").with_qps(APP, 5), clock.clone()).await;
    let addr = server.local_addr();
    let now = || clock_secs(&clock);
    for _ in 0..5 {
        assert_eq!(
            Call::new("SendUnicast", unicast("u"), now())
                .send(addr)
                .await
                .status,
            200
        );
    }
    let r = Call::new("SendUnicast", unicast("u"), now())
        .send(addr)
        .await;
    assert_eq!(
        (r.status, r.code().as_str(), r.code_n()),
        (429, "FlowLimitExceeded.QPSOverLimit", Some(100018))
    );
    assert_eq!(r.header("Retry-After"), Some("1"));
    // Calls refused before the limit (bad signature) neither count nor are limited differently.
    clock.advance_micros(999_999);
    assert_eq!(
        Call::new("SendUnicast", unicast("u"), now())
            .send(addr)
            .await
            .status,
        429
    );
    clock.advance_micros(1);
    assert_eq!(
        Call::new("SendUnicast", unicast("u"), now())
            .send(addr)
            .await
            .status,
        200
    );
    // Another app has its own budget.
    let mut c = Call::new(
        "SendUnicast",
        json!({"AppId": APP2, "From": "b", "To": "u", "Binary": false, "Message": "m"}),
        now(),
    );
    c.ak = AK2;
    c.sk = SK2;
    assert_eq!(c.send(addr).await.status, 200);
}

fn clock_secs(clock: &herald_server::clock::ManualClock) -> i64 {
    use herald_server::clock::Clock;
    clock.now().secs() as i64
}

trait WithQps {
    fn with_qps(self, app: &str, qps: u32) -> Self;
}

impl WithQps for herald_server::config::Config {
    fn with_qps(mut self, app: &str, qps: u32) -> Self {
        for a in &mut self.apps {
            if a.app_id == app {
                a.qps_limit = qps;
            }
        }
        self
    }
}
