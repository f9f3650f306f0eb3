//! The OpenAPI edge: `POST /?Action=…&Version=…`.
//!
//! Order of work, cheapest refusal first: query → method → declared length → body (bounded) →
//! signature → body validation → app and key ownership → rate limit → `From` rule → fan-out. Every
//! failure is an [`ApiError`]; `respond` is the one place that turns it into a status, headers and
//! the vendor's envelope.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use herald_core::hub::SendError;
use herald_proto::ids::AppId;
use herald_proto::openapi::{
    self, parse_kick_request, parse_room_query, parse_send_request, ApiError, DeliveryReport,
    Envelope, ErrorCode, Operation, ResponseMetadata, RoomOnlineUsers, SendResult, MAX_BODY_BYTES,
    SERVICE,
};
use herald_proto::sign::{self, Authorization, ReceivedRequest, SignError};
use http::{header, HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use parking_lot::Mutex;

use crate::cluster::{RouteError, Unavailable};
use crate::report::{self, Report};
use crate::Shared;

/// A refused call: the error, and for rate limits when to come back.
struct Failure {
    error: ApiError,
    retry_after_secs: Option<u64>,
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Failure {
            error,
            retry_after_secs: None,
        }
    }
}

impl From<RouteError> for Failure {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::Refused(e) => e.into(),
            RouteError::Unavailable => Unavailable.into(),
        }
    }
}

impl From<Unavailable> for Failure {
    fn from(_: Unavailable) -> Self {
        err(
            ErrorCode::ServiceUnavailableTemp,
            "The service is temporarily unavailable; retry later.",
        )
    }
}

impl From<SendError> for Failure {
    fn from(e: SendError) -> Self {
        let retry_after_secs = match &e {
            SendError::RateLimited(r) => Some(r.secs_ceil()),
            _ => None,
        };
        Failure {
            error: e.into(),
            retry_after_secs,
        }
    }
}

/// `Result` of a successful call.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Answer {
    /// `{"Message": "Success"}`: the messaging actions and `KickUser`.
    Success(SendResult),
    /// `GetRoomOnlineUsers`.
    RoomUsers(RoomOnlineUsers),
    /// A messaging call that asked for a delivery report: `{"Message": "Success",
    /// "DeliveryReport": {…}}`.
    Reported {
        #[serde(rename = "Message")]
        message: &'static str,
        #[serde(rename = "DeliveryReport")]
        report: DeliveryReport,
    },
}

fn success() -> Answer {
    Answer::Success(SendResult {
        message: "Success".to_owned(),
    })
}

fn err(code: ErrorCode, message: &'static str) -> Failure {
    ApiError::new(code, message).into()
}

/// Unique request ids: the second, a per-process random tag, and a counter.
pub(crate) struct RequestIds {
    tag: u32,
    counter: AtomicU64,
}

impl RequestIds {
    pub(crate) fn new() -> Self {
        RequestIds {
            tag: rand::random(),
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self, unix_secs: u64) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let t = sign::UtcTime::from_unix(unix_secs as i64);
        format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}{:08X}{n:010}",
            t.year, t.month, t.day, t.hour, t.minute, t.second, self.tag
        )
    }
}

/// Signing keys derived per (AK, date, region, service): four HMACs saved per call.
///
/// Only keys that have verified a signature are kept. The scope's region is whatever the client
/// wrote (up to a whole request head long), so caching before verification would let anyone who
/// knows an access key id (it travels in every request) fill the cache with thousands of entries
/// of their choosing, and keep flushing it.
#[derive(Default)]
pub(crate) struct SigningKeys(Mutex<HashMap<String, [u8; 32]>>);

impl SigningKeys {
    /// Runs `verify` with the signing key of `auth` (cached, or derived from `secret`) and keeps
    /// the key if it verified.
    fn verify<E>(
        &self,
        secret: &str,
        auth: &Authorization,
        verify: impl FnOnce(&[u8; 32]) -> Result<(), E>,
    ) -> Result<(), E> {
        let id = format!(
            "{}/{}/{}/{}",
            auth.access_key, auth.date, auth.region, auth.service
        );
        if let Some(k) = self.0.lock().get(&id).copied() {
            return verify(&k);
        }
        let k = sign::signing_key(secret, &auth.date, &auth.region, &auth.service);
        verify(&k)?;
        let mut map = self.0.lock();
        if map.len() >= 4096 {
            map.clear();
        }
        map.insert(id, k);
        Ok(())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().len()
    }
}

/// Percent-decodes a query string into pairs, in order (`+` is a space, as form encoding has it).
pub(crate) fn parse_query(q: &str) -> Vec<(String, String)> {
    herald_proto::sign::decode_query(q)
}

fn single<'a>(
    query: &'a [(String, String)],
    name: &'static str,
) -> Result<Option<&'a str>, Failure> {
    let mut found = query
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str());
    let first = found.next();
    if found.next().is_some() {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("The query parameter {name} must appear once."),
        )
        .into());
    }
    Ok(first)
}

/// Serves one OpenAPI request.
pub(crate) async fn serve(shared: &Shared, req: http::Request<Incoming>) -> Response<Full<Bytes>> {
    let now = shared.clock.now();
    let (parts, body) = req.into_parts();
    let query = parse_query(parts.uri.query().unwrap_or(""));
    let echo = |name| {
        single(&query, name)
            .ok()
            .flatten()
            .unwrap_or_default()
            .to_owned()
    };
    let meta = ResponseMetadata {
        request_id: shared.request_ids.next(now.secs()),
        action: echo("Action"),
        version: echo("Version"),
        service: SERVICE.to_owned(),
        region: shared.config.region.clone(),
        error: None,
    };
    let outcome = call(shared, &parts.method, &parts.headers, &query, body).await;
    let label = openapi::resolve_operation(&meta.action, &meta.version)
        .map_or("unknown", Operation::as_str);
    match outcome {
        Ok(answer) => {
            shared.metrics.api_call(label, "Success");
            let env = Envelope {
                response_metadata: meta,
                result: Some(answer),
            };
            json_response(StatusCode::OK, &env, None)
        }
        Err(f) => {
            shared.metrics.api_call(label, f.error.code.as_str());
            tracing::debug!(
                request_id = %meta.request_id,
                action = label,
                code = f.error.code.as_str(),
                message = %f.error.message,
                "OpenAPI call refused"
            );
            respond(meta, &f)
        }
    }
}

/// The one mapping from an error to the wire: status, `Retry-After`, envelope.
fn respond(meta: ResponseMetadata, f: &Failure) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(f.error.code.http_status())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let env: Envelope<SendResult> = Envelope::failure(meta, &f.error);
    json_response(status, &env, f.retry_after_secs)
}

fn json_response<T: serde::Serialize>(
    status: StatusCode,
    body: &T,
    retry_after: Option<u64>,
) -> Response<Full<Bytes>> {
    let json = serde_json::to_vec(body).unwrap_or_default();
    let mut b = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(s) = retry_after {
        b = b.header(header::RETRY_AFTER, s);
    }
    b.body(Full::new(Bytes::from(json)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

async fn call(
    shared: &Shared,
    method: &Method,
    headers: &HeaderMap,
    query: &[(String, String)],
    body: Incoming,
) -> Result<Answer, Failure> {
    let action = single(query, "Action")?.ok_or_else(|| {
        err(
            ErrorCode::MissingParameter,
            "The request is missing Action parameter.",
        )
    })?;
    let version = single(query, "Version")?.ok_or_else(|| {
        err(
            ErrorCode::MissingParameter,
            "The request is missing Version parameter.",
        )
    })?;
    let op = openapi::resolve_operation(action, version)?;
    if method.as_str() != op.method() {
        return Err(ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("{} is called with {}.", op.as_str(), op.method()),
        )
        .into());
    }
    let body = read_body(headers, body, shared.config.limits.body_read_timeout()).await?;
    let access_key = authenticate(shared, method, headers, query, &body)?;
    let now = shared.clock.now();
    match op {
        Operation::Send(action) => {
            let wants_report =
                report::requested(headers).map_err(|m| err(ErrorCode::InvalidParameter, m))?;
            // Waiting for acks implies a report (the acks are reported in it).
            let ack_timeout =
                report::ack_timeout(headers).map_err(|m| err(ErrorCode::InvalidParameter, m))?;
            let req = parse_send_request(action, &body)?;
            authorize(shared, &access_key, &req.app_id)?;
            let mut report =
                (wants_report || ack_timeout.is_some()).then(|| Report::new(ack_timeout));
            let summary = shared.send(&req, now, report.as_mut()).await?;
            shared.metrics.accepted(&summary);
            Ok(match report {
                Some(report) => Answer::Reported {
                    message: "Success",
                    report: report.lists,
                },
                None => success(),
            })
        }
        Operation::KickUser => {
            let req = parse_kick_request(&body)?;
            authorize(shared, &access_key, &req.app_id)?;
            let app = req.app_id.as_str();
            match &shared.cluster {
                None => {
                    shared.hub.kick(app, &req.room_id, &req.user_id, now);
                }
                Some(c) => {
                    c.kick(&shared.hub, app, &req.room_id, &req.user_id, now)
                        .await?;
                }
            }
            Ok(success())
        }
        Operation::GetRoomOnlineUsers => {
            let req = parse_room_query(single(query, "AppId")?, single(query, "RoomId")?)?;
            authorize(shared, &access_key, &req.app_id)?;
            let app = req.app_id.as_str();
            let users = match &shared.cluster {
                None => shared.hub.room_users(app, &req.room_id),
                Some(c) => c.room_users(app, &req.room_id).await?,
            };
            let users = users.map(|u| u.iter().map(ToString::to_string).collect());
            Ok(Answer::RoomUsers(RoomOnlineUsers::new(users)))
        }
    }
}

/// Reads the body: refused by its declared length, or as soon as it grows past the largest
/// legal request, or if it has not arrived whole within `timeout` (`limits.body_read_timeout_ms`).
async fn read_body(
    headers: &HeaderMap,
    body: Incoming,
    timeout: Duration,
) -> Result<Bytes, Failure> {
    let too_large = || {
        err(
            ErrorCode::BodyTooLarge,
            "The request body is larger than any request can be.",
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(timeout, Limited::new(body, MAX_BODY_BYTES).collect()).await {
        Err(_) => Err(err(
            ErrorCode::InvalidParameter,
            "The request body did not arrive in time.",
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(err(
            ErrorCode::InvalidParameter,
            "The request body could not be read.",
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// The app must be served here and owned by the key that signed the request.
fn authorize(shared: &Shared, access_key: &str, app: &AppId) -> Result<(), Failure> {
    if shared.registry.app(app.as_str()).is_none() {
        return Err(SendError::UnknownApp.into());
    }
    let owns = shared
        .registry
        .access_key(access_key)
        .is_some_and(|k| k.apps.contains(app));
    if !owns {
        return Err(err(
            ErrorCode::NoPermissionForApp,
            "The access key does not own this AppId.",
        ));
    }
    Ok(())
}

/// Verifies the request signature and returns the access key that signed it.
fn authenticate(
    shared: &Shared,
    method: &Method,
    headers: &HeaderMap,
    query: &[(String, String)],
    body: &[u8],
) -> Result<String, Failure> {
    once(headers, header::AUTHORIZATION.as_str())?;
    // A header signature, or the presigned-URL form (`X-Signature` in the query).
    let presigned = headers.get(header::AUTHORIZATION).is_none()
        && query.iter().any(|(k, _)| k == "X-Signature");
    let auth = if presigned {
        sign::parse_query_authorization(query).map_err(sign_failure)?
    } else {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(err(
                ErrorCode::MissingAuthenticationToken,
                "Request is missing Authentication Token.",
            ));
        };
        let value = value.to_str().map_err(|_| {
            err(
                ErrorCode::InvalidAuthorization,
                "Invalid 'Authorization' header, Pls check authorization header.",
            )
        })?;
        sign::parse_authorization(value).map_err(sign_failure)?
    };
    if auth.service != SERVICE {
        return Err(err(
            ErrorCode::InvalidCredential,
            "The credential scope must name the service rtc.",
        ));
    }
    for name in ["x-date", "x-content-sha256", "x-security-token"]
        .into_iter()
        .chain(auth.signed_headers.iter().map(String::as_str))
    {
        once(headers, name)?;
    }
    let Some(key) = shared.registry.access_key(&auth.access_key) else {
        return Err(ApiError::new(
            ErrorCode::InvalidAccessKey,
            format!(
                "The accesskey [{}] included in the request is invalid.",
                auth.access_key
            ),
        )
        .into());
    };
    let header_pairs: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let received = ReceivedRequest {
        method: method.as_str(),
        path: "/",
        query,
        headers: &header_pairs,
        body,
    };
    let verify = if presigned {
        sign::verify_query
    } else {
        sign::verify_request
    };
    shared
        .signing_keys
        .verify(&key.secret, &auth, |signing_key| {
            verify(
                &received,
                &auth,
                signing_key,
                SERVICE,
                shared.clock.now().secs() as i64,
                shared.config.max_clock_skew_secs as i64,
            )
        })
        .map_err(sign_failure)?;
    Ok(auth.access_key)
}

/// A header the signature depends on may appear once. With two, which copy the client signed,
/// and which one a proxy in front of Herald acted on, would be a guess (the verifier reads the
/// first); the presigned form refuses repeated signing parameters for the same reason.
fn once(headers: &HeaderMap, name: &str) -> Result<(), Failure> {
    if headers.get_all(name).iter().nth(1).is_some() {
        return Err(err(
            ErrorCode::InvalidAuthorization,
            "A header the signature covers appears more than once; the request cannot be verified.",
        ));
    }
    Ok(())
}

/// Maps a signature failure to its wire code. Messages never reveal the expected signature.
fn sign_failure(e: SignError) -> Failure {
    match e {
        SignError::MissingAuthorization => err(
            ErrorCode::MissingAuthenticationToken,
            "Request is missing Authentication Token.",
        ),
        SignError::MalformedAuthorization(_) => err(
            ErrorCode::InvalidAuthorization,
            "Invalid 'Authorization' header, Pls check authorization header.",
        ),
        SignError::MalformedCredential(_) | SignError::WrongService => err(
            ErrorCode::InvalidCredential,
            "Invalid credential in 'Authorization', Pls check credential in authorization header.",
        ),
        SignError::MissingDate => err(
            ErrorCode::MissingRequestInfo,
            "The request is missing X-Date information.",
        ),
        SignError::InvalidTimestamp => err(
            ErrorCode::InvalidTimestamp,
            "The Signature of the request is expired.",
        ),
        SignError::BodyHashMismatch | SignError::SignatureMismatch => err(
            ErrorCode::SignatureDoesNotMatch,
            "The request signature we calculated does not match the signature you provided. Check your Secret Access Key and signing method.",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ResponseMetadata {
        ResponseMetadata {
            request_id: "r".into(),
            action: "SendUnicast".into(),
            version: "2023-07-20".into(),
            service: "rtc".into(),
            region: "cn-north-1".into(),
            error: None,
        }
    }

    /// The two codes a single node cannot produce on demand (an internal fault; the cluster
    /// engine being away) still render as DECISIONS.md says.
    #[test]
    fn internal_and_unavailable_render_with_their_status() {
        for (code, status, code_n) in [
            (ErrorCode::InternalError, 500, 100014),
            (ErrorCode::ServiceUnavailableTemp, 503, 100019),
        ] {
            let r = respond(meta(), &err(code, "m"));
            assert_eq!(r.status().as_u16(), status);
            let body = futures_body(r);
            assert_eq!(body["ResponseMetadata"]["Error"]["CodeN"], code_n);
            assert_eq!(body["ResponseMetadata"]["Error"]["Code"], code.as_str());
        }
    }

    fn futures_body(r: Response<Full<Bytes>>) -> serde_json::Value {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt.block_on(r.into_body().collect()).unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn only_signing_keys_that_verified_are_cached() {
        let keys = SigningKeys::default();
        let mut auth = sign::parse_authorization(
            "HMAC-SHA256 Credential=AK/20240101/cn-north-1/rtc/request, SignedHeaders=x-date, Signature=0000000000000000000000000000000000000000000000000000000000000000",
        )
        .unwrap();
        for i in 0..100 {
            auth.region = format!("{}{i}", "r".repeat(10_000));
            let refused = keys.verify("sk", &auth, |_| Err(SignError::SignatureMismatch));
            assert!(refused.is_err());
        }
        assert_eq!(
            keys.len(),
            0,
            "nothing kept for requests that did not verify"
        );
        auth.region = "cn-north-1".into();
        let mut derived = None;
        keys.verify("sk", &auth, |k| {
            derived = Some(*k);
            Ok::<_, SignError>(())
        })
        .unwrap();
        assert_eq!(keys.len(), 1);
        keys.verify("other", &auth, |k| {
            assert_eq!(Some(*k), derived, "the cached key is used");
            Ok::<_, SignError>(())
        })
        .unwrap();
    }

    #[test]
    fn query_decoding() {
        assert_eq!(
            parse_query("Action=SendUnicast&Version=2023-07-20&x=a%2Fb+c&y&%zz=1"),
            vec![
                ("Action".into(), "SendUnicast".into()),
                ("Version".into(), "2023-07-20".into()),
                ("x".into(), "a/b c".into()),
                ("y".into(), "".into()),
                ("%zz".into(), "1".into()),
            ]
        );
        use herald_proto::sign::percent_decode;
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("a%4"), "a%4");
        assert_eq!(percent_decode("%41%42"), "AB");
    }
}
