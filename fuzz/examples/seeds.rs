//! Writes the seed inputs of every fuzz target: valid requests, tokens, bodies, frames and
//! programs, most of them the spec's test vectors. Run from `fuzz/`:
//!
//! ```sh
//! cargo run --example seeds -- seeds     # writes seeds/<target>/<name>
//! ```
//!
//! The kept corpora (`corpus/<target>/`) started from these and were minimized with
//! `cargo fuzz cmin`; re-running this is only needed to start a corpus afresh.

use std::fs;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use herald_fuzz::Request;
use herald_proto::client::{Delivery, Event, MessageKind, SendFrame, SendOp};
use herald_proto::sign::{encode_query, parse_x_date, sign_query, sign_request, Credentials};

// The spec's signing vectors (herald-proto sign.rs tests).
const QUERY: [(&str, &str); 2] = [("Action", "SendUnicast"), ("Version", "2023-07-20")];
const BODY_A: &[u8] = br#"{"AppId":"661e0000543cf","From":"server_bot","To":"user_1","Binary":false,"Message":"hello"}"#;
const BODY_B: &[u8] = br#"{"AppId":"661e0000543cf","From":"server_bot","To":"user_2","Binary":true,"Message":"aGVsbG8gd29ybGQ="}"#;
const AK1: &str = "AKLTEXAMPLEAK0000000000000001";
const SK1: &str = "EXAMPLESK/abc+def==";
const DATE1: &str = "20240101T000000Z";
const AK2: &str = "AKLTEXAMPLEAK0000000000000002";
const SK2: &str = "secretKeyForTests==";
const TOKEN2: &str = "STSTOKENEXAMPLE123";
const DATE2: &str = "20231115T083000Z";
const HOST: &str = "rtc.volcengineapi.com";
const V1_AUTH: &str = "HMAC-SHA256 Credential=AKLTEXAMPLEAK0000000000000001/20240101/cn-north-1/rtc/request, SignedHeaders=content-type;host;x-content-sha256;x-date, Signature=a3ae6ca55866a9cd1c6324a5748c4c56da566be4b574fa1f38afe48f8dcd68fc";
const V2_AUTH: &str = "HMAC-SHA256 Credential=AKLTEXAMPLEAK0000000000000002/20231115/cn-north-1/rtc/request, SignedHeaders=content-type;host;x-content-sha256;x-date;x-security-token, Signature=4584e4accc95a65cd50457ea9b31fbc33fd56d2c96d68da02174171f8991b175";
const V3_AUTH: &str = "HMAC-SHA256 Credential=AKLTEXAMPLEAK0000000000000001/20240101/cn-north-1/rtc/request, SignedHeaders=content-type;host;x-content-sha256;x-date, Signature=fd236a51a52a4f6a7835cf6d6819571696f081b4baffe0ae8407a02c935f8280";
const N1_AUTH: &str = "HMAC-SHA256 Credential=AKLTEXAMPLEAK0000000000000001/20240101/cn-north-1/rtc/request, SignedHeaders=x-content-sha256;x-date, Signature=eace064f09b97965592e249bfff0cc439011955d59ed5c06cb6a796ba0bd0891";
const N2_AUTH: &str = "HMAC-SHA256 Credential=AKLTEXAMPLEAK0000000000000002/20231115/cn-north-1/rtc/request, SignedHeaders=x-content-sha256;x-date;x-security-token, Signature=90f2c7d56f612e749ad15c1ea2864def8eac8afc6e0f84a0bdced8c798b8eb3f";
const P1_SIGNATURE: &str = "63247cdada4897a68b9fede3c6728efaf72d494508e1bf232bdba0525b46f5f2";

// The spec's token vectors (herald-proto token.rs tests).
const T1: &str = "00165a1b2c3d4e5f60718293a4bOwBOYbwAAPFTZRD/U2UFAHJvb20xBgB1c2VyXzEFAAAAEP9TZQEAEP9TZQIAEP9TZQMAEP9TZQQAEP9TZSAALhzfyyw7dm+q0tmuG/U1Hj3tipp5O9xBRQQ57JcYc/Q=";
const T2: &str = "00165a1b2c3d4e5f60718293a4bGACxfzkFAPFTZYBCVWUAAAYAdXNlcl8xAAAgAMn7gqYD/kyQcDh31RE/6eT7F56WtLLrjqeppvNd+qSp";
const T3: &str = "00165a1b2c3d4e5f60718293a4bIwABAAAAAPFTZQAAAAAFAHJvb20xBgB1c2VyXzIBAAQAAAAAACAApHXGG7RugJHbTzT1WGBSonPZoTgYizLGpNCdh+W/3nQ=";

struct Out(PathBuf);

impl Out {
    fn put(&self, target: &str, name: &str, data: &[u8]) {
        let dir = self.0.join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), data).unwrap();
    }
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn creds(n: u8) -> Credentials<'static> {
    let (access_key, secret_key, session_token) = match n {
        1 => (AK1, SK1, None),
        _ => (AK2, SK2, Some(TOKEN2)),
    };
    Credentials {
        access_key,
        secret_key,
        region: "cn-north-1",
        service: "rtc",
        session_token,
    }
}

/// 8 control bytes (see fuzz_targets/sign.rs) and the request text.
fn sign_input(ctl: u8, offset: i16, pick: u32, request: &[u8]) -> Vec<u8> {
    let mut out = vec![ctl];
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&pick.to_le_bytes());
    out.push(0);
    out.extend_from_slice(request);
    out
}

fn sign_seeds(out: &Out) {
    let target = format!("/?{}", encode_query(&QUERY));
    // Python style (signs host and content-type): V1, V2, V3.
    let python = [
        ("v1", 1, HOST, DATE1, BODY_A, V1_AUTH),
        ("v2", 2, HOST, DATE2, BODY_B, V2_AUTH),
        ("v3", 1, "127.0.0.1:18080", DATE1, BODY_A, V3_AUTH),
    ];
    for (name, key, host, date, body, expected) in python {
        let caller = [
            ("User-Agent", "volc-sdk-python/v1.0.229"),
            ("Accept", "application/json"),
            ("Host", host),
            ("Content-Type", "application/json"),
        ];
        let added = sign_request(
            &creds(key),
            "POST",
            "/",
            &QUERY,
            &caller,
            body,
            parse_x_date(date).unwrap(),
        );
        let auth = &added.iter().find(|(k, _)| k == "Authorization").unwrap().1;
        assert_eq!(auth, expected, "{name}");
        let mut headers = owned(&caller);
        headers.extend(added);
        let request = Request::render("POST", &target, &headers, body);
        for (i, (ctl, offset, pick)) in [(0, 0, 0), (1, 900, 0x0102_0304), (2, -901, 77), (3, 5, 5)]
            .into_iter()
            .enumerate()
        {
            out.put(
                "sign",
                &format!("{name}-{i}"),
                &sign_input(ctl, offset, pick, &request),
            );
        }
    }
    // Node style (signs neither host nor content-type): N1, N2.
    for (name, key, date, body, expected) in [
        ("n1", 1, DATE1, BODY_A, N1_AUTH),
        ("n2", 2, DATE2, BODY_B, N2_AUTH),
    ] {
        let added = sign_request(
            &creds(key),
            "POST",
            "/",
            &QUERY,
            &[],
            body,
            parse_x_date(date).unwrap(),
        );
        let auth = &added.iter().find(|(k, _)| k == "Authorization").unwrap().1;
        assert_eq!(auth, expected, "{name}");
        let mut headers = owned(&[
            ("accept", "application/json, text/plain, */*"),
            ("content-type", "application/json; charset=utf-8"),
            ("user-agent", "volc-sdk-nodejs/v1.36.2"),
            ("content-length", &body.len().to_string()),
            ("host", HOST),
        ]);
        headers.extend(added);
        let request = Request::render("POST", &target, &headers, body);
        out.put("sign", &format!("{name}-0"), &sign_input(0, 0, 9, &request));
        out.put(
            "sign",
            &format!("{name}-1"),
            &sign_input(3, 1, 12, &request),
        );
    }
    // Presigned URLs: P1, one with X-Expires and a session token.
    let p1_query = [
        ("Action", "GetRoomOnlineUsers"),
        ("Version", "2023-11-01"),
        ("AppId", "661e0000543cf"),
        ("RoomId", "room1"),
    ];
    let signed = sign_query(&creds(1), "GET", &p1_query, parse_x_date(DATE1).unwrap());
    assert_eq!(signed.last().unwrap().1, P1_SIGNATURE);
    let request = Request::render("GET", &format!("/?{}", encode_query(&signed)), &[], b"");
    out.put("sign", "p1-0", &sign_input(2, 0, 0, &request));
    out.put("sign", "p1-1", &sign_input(3, 899, 3, &request));
    let mut q = p1_query.to_vec();
    q.push(("X-Expires", "60"));
    let signed = sign_query(&creds(2), "GET", &q, parse_x_date(DATE2).unwrap());
    let request = Request::render("GET", &format!("/?{}", encode_query(&signed)), &[], b"");
    out.put("sign", "p2-0", &sign_input(2, 60, 6, &request));
    // Refused shapes.
    out.put(
        "sign",
        "unsigned",
        &sign_input(
            0,
            0,
            0,
            b"POST /?Action=SendUnicast&Version=2023-07-20\nHost: h\n\n{}",
        ),
    );
    out.put(
        "sign",
        "garbage-auth",
        &sign_input(
            1,
            0,
            0,
            b"POST /\nAuthorization: HMAC-SHA256 Credential=a/b/c/d/request, SignedHeaders=x-date, Signature=00\nX-Date: 20240101T000000Z\n\n",
        ),
    );
}

fn token_seeds(out: &Out) {
    for (name, token) in [("t1", T1), ("t2", T2), ("t3", T3)] {
        let mut data = vec![0u8];
        data.extend_from_slice(&1_700_000_000u64.to_le_bytes());
        data.extend_from_slice(token.as_bytes());
        out.put("token", name, &data);
    }
    // Structured: selector odd, now, AppId, room, user, numbers, privileges, key, pick.
    let mut data = vec![1u8];
    data.extend_from_slice(&1_700_000_000u64.to_le_bytes());
    data.extend_from_slice(b"65a1b2c3d4e5f60718293a4b");
    data.push(5);
    data.extend_from_slice(b"room1");
    data.push(6);
    data.extend_from_slice(b"user_1");
    for n in [12_345_678u32, 1_700_000_000, 1_700_003_600] {
        data.extend_from_slice(&n.to_le_bytes());
    }
    data.push(2);
    for (k, e) in [(0u16, 1_700_003_600u32), (4, 0)] {
        data.extend_from_slice(&k.to_le_bytes());
        data.extend_from_slice(&e.to_le_bytes());
    }
    data.push(32);
    data.extend_from_slice(b"0123456789abcdef0123456789abcdef");
    data.extend_from_slice(&40u16.to_le_bytes());
    out.put("token", "built", &data);
}

fn openapi_seeds(out: &Out) {
    let bodies: [(u8, &str, String); 9] = [
        (0, "unicast", r#"{"AppId":"a1","From":"bot","To":"u1","Binary":false,"Message":"hi"}"#.into()),
        (0, "unicast-bin", String::from_utf8(BODY_B.to_vec()).unwrap()),
        (1, "room-unicast", r#"{"AppId":"a1","RoomId":"r","From":"bot","To":"u1","Binary":false,"Message":"h\u00e9 \"x\""}"#.into()),
        (2, "batch", r#"{"AppId":"a1","RoomId":"r","From":"bot","To":["u1","u2","u1"],"Binary":true,"Message":"aGk="}"#.into()),
        (3, "broadcast", r#"{"AppId":"a1","RoomId":"r","From":"bot","Binary":false,"Message":"","Extra":[1,{"a":null}]}"#.into()),
        (0, "dup-field", r#"{"AppId":"a1","AppId":"a2","From":"bot","To":"u1","Binary":false,"Message":"hi"}"#.into()),
        (2, "batch-600", format!(
            r#"{{"AppId":"a1","RoomId":"r","From":"bot","To":[{}],"Binary":false,"Message":"m"}}"#,
            (0..600).map(|i| format!("\"u{i}\"")).collect::<Vec<_>>().join(",")
        )),
        (2, "batch-601", format!(
            r#"{{"AppId":"a1","RoomId":"r","From":"bot","To":[{}],"Binary":false,"Message":"m"}}"#,
            (0..601).map(|i| format!("\"u{i}\"")).collect::<Vec<_>>().join(",")
        )),
        (2, "batch-max-binary", format!(
            r#"{{"AppId":"a1","RoomId":"r","From":"bot","To":["u"],"Binary":true,"Message":"{}"}}"#,
            STANDARD.encode(vec![7u8; 20 * 1024])
        )),
    ];
    for (sel, name, body) in bodies {
        let mut data = vec![sel];
        data.extend_from_slice(body.as_bytes());
        out.put("openapi", name, &data);
    }
    out.put(
        "openapi",
        "kick",
        b"\x04{\"AppId\":\"a\",\"RoomId\":\"r\",\"UserId\":\"u\"}",
    );
    for (i, q) in [
        "Action=SendUnicast&Version=2023-07-20",
        "Action=BatchSendRoomUnicast&Version=2020-12-01",
        "Action=GetRoomOnlineUsers&Version=2023-11-01&AppId=661e0000543cf&RoomId=room1",
        "Action=KickUser&Version=2020-12-01",
        "Action=GetRoomOnlineUsers&Version=2023-08-01&AppId=a%20b&RoomId=r",
    ]
    .into_iter()
    .enumerate()
    {
        let mut data = vec![5u8];
        data.extend_from_slice(q.as_bytes());
        out.put("openapi", &format!("query-{i}"), &data);
    }
}

fn client_seeds(out: &Out) {
    let calls = [
        r#"{"call":"login","token":"t","uid":"u1"}"#,
        r#"{"call":"logout"}"#,
        r#"{"call":"joinRoom","roomId":"r1","uid":"u1","token":"t"}"#,
        r#"{"call":"leaveRoom","roomId":"r1"}"#,
        r#"{"call":"updateToken","roomId":"r1","token":"t"}"#,
        r#"{"call":"getPeerOnlineStatus","peerUserId":"u2"}"#,
        r#"{"call":"login","token":"t","uid":"u1","resume":{"epoch":9,"position":4}}"#,
        r#"{"call":"setServerParams","signature":"s","url":"http://biz.example/rtc/"}"#,
    ];
    for (i, c) in calls.iter().enumerate() {
        let mut data = vec![0u8];
        data.extend_from_slice(c.as_bytes());
        out.put("client", &format!("call-{i}"), &data);
    }
    let events = [
        Event::LoginResult {
            uid: "u1".into(),
            error_code: 0,
            stream: Some(herald_proto::client::StreamState {
                epoch: 9,
                position: 4,
                recovered: Some(true),
                replayed: 2,
            }),
        },
        Event::Logout { reason: 1 },
        Event::RoomStateChanged {
            room_id: "r1".into(),
            uid: "u1".into(),
            state: -1009,
            stream: None,
        },
        Event::Error {
            error_code: 4003,
            message: "bad \"call\"\n".into(),
        },
        Event::LeaveRoom {
            room_id: "r1".into(),
        },
        Event::TokenWillExpire {
            room_id: "r1".into(),
        },
        Event::UserJoined {
            room_id: "r1".into(),
            uid: "u2".into(),
        },
        Event::UserLeave {
            room_id: "r1".into(),
            uid: "u2".into(),
            reason: 3,
        },
        Event::UserMessageSendResultOutsideRoom { msgid: 1, error: 0 },
        Event::UserMessageSendResult {
            room_id: "r1".into(),
            msgid: 2,
            error: 3,
        },
        Event::RoomMessageSendResult {
            room_id: "r1".into(),
            msgid: u64::MAX,
            error: 200,
        },
        Event::ServerMessageSendResult {
            msgid: 4,
            error: 18,
            message: "aGk=".into(),
        },
        Event::GetPeerOnlineStatus {
            peer_user_id: "u2".into(),
            status: 1,
        },
        Event::ServerParamsSetResult { error: 200 },
    ];
    for (i, e) in events.iter().enumerate() {
        let mut data = vec![1u8];
        data.extend_from_slice(e.to_json().as_bytes());
        out.put("client", &format!("event-{i}"), &data);
    }
    for (i, (op, to, room, binary)) in [
        (SendOp::UserOutsideRoom, "u2", "", false),
        (SendOp::UserInRoom, "u2", "r1", true),
        (SendOp::Room, "", "r1", false),
        (SendOp::Server, "", "", true),
    ]
    .into_iter()
    .enumerate()
    {
        let f = SendFrame {
            op,
            msgid: 7,
            to: to.into(),
            room_id: room.into(),
            binary,
            payload: bytes::Bytes::from_static("héllo".as_bytes()),
        };
        let mut data = vec![2u8];
        data.extend_from_slice(&f.encode());
        out.put("client", &format!("send-{i}"), &data);
    }
    for (i, (kind, room, binary)) in [
        (MessageKind::OutsideRoom, None, false),
        (MessageKind::RoomUser, Some("r1"), true),
        (MessageKind::RoomBroadcast, Some("r1"), false),
    ]
    .into_iter()
    .enumerate()
    {
        let d = Delivery::encode(kind, "server_bot", room, binary, "hello".as_bytes());
        let mut frame = bytes::BytesMut::new();
        let pos = herald_proto::client::StreamPos {
            epoch: 9,
            position: 5,
        };
        d.put_prefix(42, (i % 2 == 1).then_some(pos), &mut frame);
        frame.extend_from_slice(d.body());
        let mut data = vec![3u8];
        data.extend_from_slice(&frame);
        out.put("client", &format!("message-{i}"), &data);
    }
    out.put(
        "client",
        "build-send",
        b"\x04\x01\x01\x07\0\0\0\0\0\0\0\x02u2\x02r1\x05\0hello",
    );
    out.put(
        "client",
        "build-message",
        b"\x05\x02\x00\x2a\0\0\0\0\0\0\0\x03bot\x02r1\x02\0hi",
    );
}

/// Hub programs (see fuzz_targets/hub.rs `step`): opcode, session/app pick, arguments.
fn hub_seeds(out: &Out) {
    // connect=0 disconnect=1 login=2 logout=3 join=4 leave=5 api=6 client=7 kick=8 mode=9
    // clock=10 expire=11 update=12 peer=13 params=14
    let programs: [(&str, &[u8]); 6] = [
        (
            "login-send",
            &[
                0, 0, 0, 0, 0, 1, // three sessions: app 0, app 0, app 1
                2, 0, 0, 0, // s0 login u0 (valid)
                2, 1, 1, 0, // s1 login u1
                6, 0, 1, 0, 0, 2, b'h', b'i', // SendUnicast from u1 (online: refused) to u0
                6, 0, 2, 0, 1, 0, // SendUnicast from u2 to u1
                7, 0, 4, 0, 1, // s0 client send outside room to u1
                13, 1, 0, // s1 asks whether u0 is online
                14, 0, 0, // s0 setServerParams (allowed url, signature)
                7, 0, 3, 0, 2, // s0 server message
                3, 0, // s0 logout
                1, 1, // s1 disconnects
                7, 1, 0, 0, 3, // a send from the dead session
            ],
        ),
        (
            "rooms",
            &[
                0, 0, 0, 0, 0, 0, // three sessions in app 0
                4, 0, 0, 0, 0, // s0 joins r0 as u0
                4, 1, 0, 1, 1, // s1 joins r0 as u1 with a '*' token
                4, 2, 0, 2, 12, // s2 joins r0 as u2, short-lived token
                6, 6, 3, 0, 0x0f, 1, b'x', // SendBroadcast r0 from u3
                6, 4, 3, 0, 0x07, 0, // BatchSendRoomUnicast r0 from u3 to u0,u1,u2
                6, 2, 3, 0, 1, 0, // SendRoomUnicast to u1
                7, 0, 2, 0, 9, // s0 room message to r0
                7, 0, 5, 0, 9, // s0 user message in r0 to u1
                9, 1, 1, // s1 overflows
                6, 6, 3, 0, 0x0f, 0, // broadcast again
                8, 0, 0, 1, // kick u1 from r0
                10, 1, 40, // 40 s later
                11, 2, // expire s2's tokens
                12, 0, 0, 3, // s0 renews r0 with a short token
                5, 0, 0, // s0 leaves r0
                1, 2, // s2 disconnects
            ],
        ),
        (
            "duplicates",
            &[
                0, 0, 0, 0, 2, 0, 0, 0, 2, 1, 0, 0, // s0, s1 log in as u0
                4, 0, 1, 3, 0, 4, 1, 1, 3, 0, // both join r1 as u3
                4, 1, 1, 3, 2, // s1 joins r1 again with an expired token
                2, 1, 4, 0, // invalid uid
                4, 0, 3, 0, 0, // invalid room
                6, 0, 0, 0, 0, 0, // From u0 is online: refused
            ],
        ),
        (
            "tokens",
            &[
                0, 0, 2, 0, 0, 2, 2, 0, 0, 4, 2, 0, 0, 5, 2, 0, 0, 6, 2, 0, 0, 7, 2, 0, 0, 8, 4, 0,
                0, 0, 2, 4, 0, 0, 0, 4, 4, 0, 0, 0, 5, 4, 0, 0, 0, 6, 4, 0, 0, 0, 7, 4, 0, 0, 0, 8,
                4, 0, 0, 0, 3, 10, 1, 200, 11, 0, 12, 0, 0, 0,
            ],
        ),
        (
            "app1-limits",
            &[
                0, 1, 0, 1, 2, 0, 0, 0, 2, 1, 1, 0, 4, 0, 0, 0, 0, 4, 1, 0, 1, 0, // app 1
                7, 0, 4, 0, 1, 7, 0, 4, 0, 2, 7, 0, 4, 0, 3, 7, 0, 4, 0,
                4, // client sends over the rate
                6, 1, 2, 0, 1, 0, 6, 1, 2, 0, 1, 0, 6, 1, 2, 0, 1, 0, 6, 1, 2, 0, 1,
                0, // API over qps
                10, 1, 2, 7, 0, 4, 0, 5,
            ],
        ),
        (
            "closed-outboxes",
            &[
                0, 0, 0, 0, 2, 0, 0, 0, 2, 1, 1, 0, 9, 1, 2, 7, 0, 4, 0, 1, 9, 1, 1, 7, 0, 4, 0, 2,
                6, 0, 2, 0, 1, 0, 4, 1, 0, 1, 0, 4, 0, 0, 0, 0, 7, 0, 2, 0, 3, 1, 0, 1, 1,
            ],
        ),
    ];
    for (name, program) in programs {
        out.put("hub", name, program);
    }
}

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "seeds".into());
    let out = Out(Path::new(&dir).to_path_buf());
    sign_seeds(&out);
    token_seeds(&out);
    openapi_seeds(&out);
    client_seeds(&out);
    hub_seeds(&out);
    println!("seeds written to {dir}/<target>/");
}
