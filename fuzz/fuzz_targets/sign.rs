//! The V4 signature (herald-proto `sign.rs`).
//!
//! Input: 8 control bytes, then a request in the text form of `herald_fuzz::Request`
//! (`METHOD path?query\nName: value\n…\n\nbody`).
//!
//! Checked:
//! - parsing the `Authorization` header or the presigned query, rebuilding the canonical request
//!   and verifying never panic, whatever arrives (method, path, query, headers, body, clock);
//! - a request that verifies stops verifying after any one-character change to its method, path,
//!   query, a signed header, `X-Date`, `Authorization` or the body (a byte);
//! - what `sign_request` / `sign_query` make from the same parts verifies (after crossing the
//!   wire: the query encoded and decoded as the server decodes it), and stops verifying after a
//!   one-character change;
//! - `X-Date`: `parse_x_date` accepts one spelling per instant, and `format_x_date` round-trips
//!   every instant of years 0000–9999 (and never panics on any i64).
#![no_main]

use herald_fuzz::{change_one_char, is_http_token, is_http_value, parse_query, Request};
use herald_proto::sign::{
    encode_query, format_x_date, parse_authorization, parse_query_authorization, parse_x_date,
    sign_query, sign_request, signing_key, verify_query, verify_request, Credentials,
    ReceivedRequest, SignError, UtcTime, MAX_QUERY_EXPIRES_SECS,
};
use libfuzzer_sys::fuzz_target;

/// The access keys the "server" knows: the spec's two test keys (the second with an STS token).
const KEYS: [(&str, &str, Option<&str>); 2] = [
    ("AKLTEXAMPLEAK0000000000000001", "EXAMPLESK/abc+def==", None),
    (
        "AKLTEXAMPLEAK0000000000000002",
        "secretKeyForTests==",
        Some("STSTOKENEXAMPLE123"),
    ),
];
const SKEW: i64 = 900;
const SERVICE: &str = "rtc";
/// 20240101T000000Z
const BASE: i64 = 1_704_067_200;

#[derive(Debug)]
enum Refused {
    Sign(SignError),
    UnknownKey,
}

impl From<SignError> for Refused {
    fn from(e: SignError) -> Self {
        Refused::Sign(e)
    }
}

/// What the OpenAPI handler does with a request: the header signature, or the presigned query
/// when there is no `Authorization` header and the query has `X-Signature`.
fn server_verify(req: &Request, now: i64) -> Result<(), Refused> {
    let presigned =
        req.header("authorization").is_none() && req.query.iter().any(|(k, _)| k == "X-Signature");
    let auth = if presigned {
        parse_query_authorization(&req.query)?
    } else {
        parse_authorization(req.header("authorization").unwrap_or(""))?
    };
    let (_, sk, _) = KEYS
        .iter()
        .find(|(ak, _, _)| *ak == auth.access_key)
        .ok_or(Refused::UnknownKey)?;
    let key = signing_key(sk, &auth.date, &auth.region, &auth.service);
    let received = ReceivedRequest {
        method: &req.method,
        path: &req.path,
        query: &req.query,
        headers: &req.headers,
        body: &req.body,
    };
    if presigned {
        verify_query(&received, &auth, &key, SERVICE, now, SKEW)?;
    } else {
        verify_request(&received, &auth, &key, SERVICE, now, SKEW)?;
    }
    Ok(())
}

/// The SDKs' `host` rule (split on ':', drop a second piece of 80 or 443), to recognise a change
/// the signature does not cover by design: anything after a default port.
fn sdk_host(value: &str) -> &str {
    let value = value.trim();
    let mut pieces = value.split(':');
    let host = pieces.next().unwrap_or(value);
    match pieces.next() {
        Some("80" | "443") => host,
        _ => value,
    }
}

/// Changes one thing of `req`, chosen by `pick`; `None` when the choice hits nothing to change
/// or a change the signature does not cover by design.
fn tamper(req: &Request, pick: u32) -> Option<(&'static str, Request)> {
    let mut t = req.clone();
    let at = (pick >> 3) as usize;
    let presigned = req.header("authorization").is_none();
    let what = match pick % 7 {
        0 => change_one_char(&mut t.method, at).then_some("method")?,
        1 => change_one_char(&mut t.path, at).then_some("path")?,
        2 | 3 if !t.query.is_empty() => {
            let n = t.query.len();
            let pair = &mut t.query[at % n];
            let s = if pick % 7 == 2 {
                &mut pair.0
            } else {
                &mut pair.1
            };
            change_one_char(s, at / n).then_some("query")?
        }
        4 if !presigned => {
            // A signed header (or X-Date / Authorization, always covered), first occurrence:
            // the one the verifier reads.
            let auth = parse_authorization(req.header("authorization")?).ok()?;
            let mut names = auth.signed_headers.clone();
            names.push("x-date".into());
            names.push("authorization".into());
            let name = &names[at % names.len()];
            let i = t
                .headers
                .iter()
                .position(|(n, _)| n.eq_ignore_ascii_case(name))?;
            let old = t.headers[i].1.clone();
            change_one_char(&mut t.headers[i].1, at / names.len()).then_some(())?;
            if name.eq_ignore_ascii_case("host") && sdk_host(&old) == sdk_host(&t.headers[i].1) {
                return None;
            }
            "header"
        }
        5 if !t.body.is_empty() => {
            let i = at % t.body.len();
            t.body[i] ^= 1 << (pick % 8);
            if t.body[i] == req.body[i] {
                t.body[i] ^= 1;
            }
            "body"
        }
        6 if presigned => {
            // A presigned URL covers no body: adding one must be refused.
            t.body.push(b'x');
            "body"
        }
        _ => return None,
    };
    Some((what, t))
}

fn check_tampering(req: &Request, now: i64, pick: u32, origin: &str) {
    if let Some((what, t)) = tamper(req, pick) {
        if server_verify(&t, now).is_ok() {
            panic!("{origin}: a request with a changed {what} still verifies:\n{req:?}\n{t:?}");
        }
    }
}

/// `parse_x_date` accepts exactly one spelling per instant; `format_x_date` never panics and
/// round-trips years 0000–9999.
fn check_x_date(req: &Request, t: i64) {
    let _ = UtcTime::from_unix(t);
    let text = format_x_date(t);
    if (-62_167_219_200..=253_402_300_799).contains(&t) {
        assert_eq!(parse_x_date(&text), Some(t), "{t} -> {text}");
    }
    for s in req.header("x-date").into_iter().chain(
        req.query
            .iter()
            .filter(|(k, _)| k == "X-Date")
            .map(|(_, v)| v.as_str()),
    ) {
        if let Some(t) = parse_x_date(s) {
            assert_eq!(
                format_x_date(t),
                s,
                "X-Date {s:?} is not the spelling of {t}"
            );
        }
    }
}

fn round_trip(req: &Request, ctl: u8, pick: u32) {
    let (ak, sk, token) = KEYS[usize::from(ctl & 1)];
    let creds = Credentials {
        access_key: ak,
        secret_key: sk,
        region: "cn-north-1",
        service: SERVICE,
        session_token: token,
    };
    let now = BASE + i64::from(pick >> 8);
    let query: Vec<(&str, &str)> = req
        .query
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // The query crosses the wire encoded; the server decodes it back.
    let wire_query = parse_query(&encode_query(&query));
    assert_eq!(wire_query, req.query, "encode_query does not decode back");

    if ctl & 2 == 0 {
        // Header signature. The caller's headers as they can travel, less those the signer sets.
        let headers: Vec<(&str, &str)> = req
            .headers
            .iter()
            .filter(|(n, v)| {
                is_http_token(n)
                    && is_http_value(v)
                    && ![
                        "x-date",
                        "x-content-sha256",
                        "x-security-token",
                        "authorization",
                    ]
                    .iter()
                    .any(|s| n.eq_ignore_ascii_case(s))
            })
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let added = sign_request(
            &creds,
            &req.method,
            &req.path,
            &query,
            &headers,
            &req.body,
            now,
        );
        let mut sent_headers: Vec<(String, String)> = headers
            .iter()
            .map(|&(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        sent_headers.extend(added);
        let sent = Request {
            method: req.method.clone(),
            path: req.path.clone(),
            query: wire_query,
            headers: sent_headers,
            body: req.body.clone(),
        };
        if let Err(e) = server_verify(&sent, now) {
            panic!("a request signed by sign_request does not verify: {e:?}\n{sent:?}");
        }
        check_tampering(&sent, now, pick.rotate_left(13), "sign_request");
    } else {
        // Presigned URL (the server always verifies it against the path "/").
        let signed = sign_query(&creds, &req.method, &query, now);
        let sent = Request {
            method: req.method.clone(),
            path: "/".into(),
            query: parse_query(&encode_query(&signed)),
            headers: Vec::new(),
            body: Vec::new(),
        };
        let expires: Vec<&str> = req
            .query
            .iter()
            .filter(|(k, _)| k == "X-Expires")
            .map(|(_, v)| v.as_str())
            .collect();
        let expires_ok = match expires[..] {
            [] => true,
            [v] => {
                !v.is_empty()
                    && v.bytes().all(|b| b.is_ascii_digit())
                    && v.parse::<i64>()
                        .is_ok_and(|s| (1..=MAX_QUERY_EXPIRES_SECS).contains(&s))
            }
            _ => false,
        };
        match server_verify(&sent, now) {
            Ok(()) if expires_ok => check_tampering(&sent, now, pick.rotate_left(13), "sign_query"),
            Err(Refused::Sign(SignError::MalformedAuthorization(_))) if !expires_ok => {}
            other => panic!("sign_query: {other:?} (X-Expires {expires:?})\n{sent:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let ctl = data[0];
    let offset = i64::from(i16::from_le_bytes([data[1], data[2]]));
    let pick = u32::from_le_bytes([data[3], data[4], data[5], data[6]]);
    let req = Request::parse(&data[8..]);

    check_x_date(&req, i64::from_le_bytes(data[..8].try_into().unwrap()));

    // Whatever arrives: never a panic. The clock is X-Date moved by `offset` seconds.
    let x_date = req.header("x-date").or_else(|| {
        req.query
            .iter()
            .find(|(k, _)| k == "X-Date")
            .map(|(_, v)| v.as_str())
    });
    let now = x_date.and_then(|d| parse_x_date(d.trim())).unwrap_or(BASE) + offset;
    if server_verify(&req, now).is_ok() {
        check_tampering(&req, now, pick, "input");
    }

    round_trip(&req, ctl, pick);
});
