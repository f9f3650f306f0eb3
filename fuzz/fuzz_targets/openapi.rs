//! OpenAPI bodies and queries (herald-proto `openapi.rs`).
//!
//! Input: one selector byte, then a request body (selector % 8 in 0..=3: the four messaging
//! actions; 4: `KickUser`) or a query string (5..=7: `Action`/`Version` resolution and the
//! `GetRoomOnlineUsers` query).
//!
//! Checked: nothing panics; an accepted request satisfies the documented limits (ids match the id
//! rule, the target has the action's shape, 1–600 unique recipients, the message within the
//! action's size after decoding, text is UTF-8) and says what the JSON said (read again as a
//! plain `serde_json::Value`); a canonical re-encoding of an accepted request parses to the same
//! request; a refusal carries one of the body error codes, HTTP 400, and renders as an envelope
//! that round-trips.
#![no_main]

use std::collections::HashSet;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use herald_fuzz::parse_query;
use herald_proto::ids::is_valid_id;
use herald_proto::openapi::{
    parse_kick_request, parse_room_query, parse_send_request, resolve, resolve_operation, Action,
    ApiError, ApiVersion, Envelope, ErrorCode, Operation, ResponseMetadata, Target,
    MAX_BATCH_RECIPIENTS,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fn check_error(err: &ApiError, allowed: &[ErrorCode], status: u16) {
    assert!(allowed.contains(&err.code), "unexpected code {err:?}");
    assert_eq!(err.code.http_status(), status, "{err:?}");
    let meta = ResponseMetadata {
        request_id: "r".into(),
        action: "a".into(),
        version: "v".into(),
        service: "rtc".into(),
        region: "cn-north-1".into(),
        error: None,
    };
    let env: Envelope<Value> = Envelope::failure(meta, err);
    let text = serde_json::to_string(&env).unwrap();
    let back: Envelope<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(back, env);
}

fn check_send(action: Action, body: &[u8]) {
    use ErrorCode::*;
    let req = match parse_send_request(action, body) {
        Ok(req) => req,
        Err(e) => {
            return check_error(
                &e,
                &[
                    BodyIsEmpty,
                    Unmarshal,
                    MissingParameter,
                    IllegalAppId,
                    IllegalFrom,
                    IllegalRoomId,
                    IllegalTo,
                    UserCountOverLimit,
                    InvalidParameter,
                    SizeOverLimit,
                ],
                400,
            )
        }
    };
    assert!(is_valid_id(req.app_id.as_str()));
    assert!(is_valid_id(req.from.as_str()));
    let (room, to): (Option<&str>, Vec<&str>) = match (action, &req.target) {
        (Action::SendUnicast, Target::User(u)) => (None, vec![u.as_str()]),
        (Action::SendRoomUnicast, Target::RoomUsers(r, us)) if us.len() == 1 => {
            (Some(r.as_str()), vec![us[0].as_str()])
        }
        (Action::BatchSendRoomUnicast, Target::RoomUsers(r, us)) => {
            assert!(
                !us.is_empty() && us.len() <= MAX_BATCH_RECIPIENTS,
                "{}",
                us.len()
            );
            let unique: HashSet<&str> = us.iter().map(|u| u.as_str()).collect();
            assert_eq!(unique.len(), us.len(), "duplicate recipients");
            (Some(r.as_str()), us.iter().map(|u| u.as_str()).collect())
        }
        (Action::SendBroadcast, Target::Room(r)) => (Some(r.as_str()), vec![]),
        (a, t) => panic!("{a:?} accepted with target {t:?}"),
    };
    for id in room.iter().chain(&to) {
        assert!(is_valid_id(id), "{id:?}");
    }
    assert!(req.payload.len() <= action.max_message_bytes());
    if !req.binary {
        assert!(std::str::from_utf8(&req.payload).is_ok());
    }

    // What the JSON said. (serde_json::Value refuses a few bodies the typed parse accepts, such
    // as an ignored field holding 1e400; those are skipped.)
    if let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) {
        assert_eq!(obj["AppId"], req.app_id.as_str());
        assert_eq!(obj["From"], req.from.as_str());
        assert_eq!(obj["Binary"], req.binary);
        if let Some(room) = room {
            assert_eq!(obj["RoomId"], room);
        }
        let message = obj["Message"].as_str().expect("Message is a string");
        if req.binary {
            assert_eq!(STANDARD.decode(message).unwrap(), &req.payload[..]);
        } else {
            assert_eq!(message.as_bytes(), &req.payload[..]);
        }
        match action {
            Action::SendUnicast | Action::SendRoomUnicast => assert_eq!(obj["To"], to[0]),
            Action::BatchSendRoomUnicast => {
                let mut seen = HashSet::new();
                let listed: Vec<&str> = obj["To"]
                    .as_array()
                    .expect("To is an array")
                    .iter()
                    .map(|v| v.as_str().expect("To holds strings"))
                    .filter(|u| seen.insert(*u))
                    .collect();
                assert_eq!(
                    listed, to,
                    "recipients differ from To, deduplicated in order"
                );
            }
            Action::SendBroadcast => {}
        }
    }

    // A canonical body for the same request parses to the same request.
    let message = if req.binary {
        STANDARD.encode(&req.payload)
    } else {
        String::from_utf8(req.payload.to_vec()).unwrap()
    };
    let mut canonical = json!({
        "AppId": req.app_id.as_str(),
        "From": req.from.as_str(),
        "Binary": req.binary,
        "Message": message,
    });
    if let Some(room) = room {
        canonical["RoomId"] = json!(room);
    }
    match action {
        Action::SendUnicast | Action::SendRoomUnicast => canonical["To"] = json!(to[0]),
        Action::BatchSendRoomUnicast => canonical["To"] = json!(to),
        Action::SendBroadcast => {}
    }
    let again = parse_send_request(action, canonical.to_string().as_bytes());
    assert_eq!(again.as_ref(), Ok(&req), "{canonical}");
}

fn check_kick(body: &[u8]) {
    use ErrorCode::*;
    let k = match parse_kick_request(body) {
        Ok(k) => k,
        Err(e) => {
            return check_error(
                &e,
                &[
                    BodyIsEmpty,
                    Unmarshal,
                    MissingParameter,
                    IllegalAppId,
                    IllegalRoomId,
                    InvalidParameter,
                ],
                400,
            )
        }
    };
    for id in [k.app_id.as_str(), k.room_id.as_str(), k.user_id.as_str()] {
        assert!(is_valid_id(id));
    }
    if let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) {
        assert_eq!(obj["AppId"], k.app_id.as_str());
        assert_eq!(obj["RoomId"], k.room_id.as_str());
        assert_eq!(obj["UserId"], k.user_id.as_str());
    }
    let canonical = json!({
        "AppId": k.app_id.as_str(),
        "RoomId": k.room_id.as_str(),
        "UserId": k.user_id.as_str(),
    });
    assert_eq!(
        parse_kick_request(canonical.to_string().as_bytes()).as_ref(),
        Ok(&k)
    );
}

fn check_query(query: &[u8]) {
    let pairs = parse_query(&String::from_utf8_lossy(query));
    let first = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let action = first("Action").unwrap_or("");
    let version = first("Version").unwrap_or("");

    match resolve_operation(action, version) {
        Ok(op) => {
            assert_eq!(op.as_str(), action);
            match op {
                Operation::GetRoomOnlineUsers => {
                    assert!(matches!(version, "2023-08-01" | "2023-11-01"));
                    assert_eq!(op.method(), "GET");
                }
                Operation::KickUser => {
                    assert_eq!(version, "2020-12-01");
                    assert_eq!(op.method(), "POST");
                }
                Operation::Send(a) => {
                    assert_eq!(Action::parse(action), Some(a));
                    assert!(ApiVersion::parse(version).is_some());
                    assert_eq!(op.method(), "POST");
                }
            }
        }
        Err(e) => check_error(&e, &[ErrorCode::InvalidActionOrVersion], 404),
    }
    match resolve(action, version) {
        Ok((a, v)) => {
            assert_eq!(a.as_str(), action);
            assert_eq!(v.as_str(), version);
        }
        Err(e) => assert_eq!(e.code, ErrorCode::InvalidActionOrVersion),
    }

    let app = first("AppId");
    let room = first("RoomId");
    match parse_room_query(app, room) {
        Ok(q) => {
            assert_eq!(Some(q.app_id.as_str()), app);
            assert_eq!(Some(q.room_id.as_str()), room);
        }
        Err(e) => {
            let expected = match (app, room) {
                (None, _) | (_, None) => ErrorCode::MissingParameter,
                (Some(a), _) if !is_valid_id(a) => ErrorCode::IllegalAppId,
                (_, Some(r)) if !is_valid_id(r) => ErrorCode::IllegalRoomId,
                _ => panic!("a valid room query was refused: {e:?}"),
            };
            assert_eq!(e.code, expected);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 8 {
        s @ 0..=3 => check_send(Action::ALL[usize::from(s)], rest),
        4 => check_kick(rest),
        _ => check_query(rest),
    }
});
