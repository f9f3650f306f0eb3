//! The operator's side: the console and demo pages, the browser SDK, and the small admin API
//! they use (`/admin/api/*`, bearer token from `admin_token`).
//!
//! The pages and the SDK are compiled into the binary, so `herald serve` needs no files on disk
//! and the browser fetches nothing from outside.

use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use herald_core::hub::SendError;
use herald_proto::ids::{AppId, RoomId, UserId};
use herald_proto::openapi::{ApiError, SendRequest, Target};
use herald_proto::token::{AccessToken, Privilege};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::cluster::RouteError;
use crate::Shared;

const CONSOLE_HTML: &str = include_str!("../../../web/console.html");
const DEMO_HTML: &str = include_str!("../../../web/demo.html");
const SDK_JS: &str = include_str!("../../../sdk/js/herald.js");
const SDK_TYPES: &str = include_str!("../../../sdk/js/herald.d.ts");

/// The sender id of messages sent from the console.
pub const CONSOLE_SENDER: &str = "console";

/// Lists in the overview stop at this many entries.
const OVERVIEW_LIMIT: usize = 1000;

/// Admin request bodies are small.
const MAX_ADMIN_BODY: usize = 80 * 1024;

/// Tokens issued by the admin API are valid this long.
const ADMIN_TOKEN_TTL_SECS: u32 = 24 * 3600;

/// Serves the static pages and the SDK; `None` if `path` is not one of them.
pub(crate) fn page(method: &Method, path: &str) -> Option<Response<Full<Bytes>>> {
    if method != Method::GET {
        return None;
    }
    let (body, content_type) = match path {
        "/" => (CONSOLE_HTML, "text/html; charset=utf-8"),
        "/demo" => (DEMO_HTML, "text/html; charset=utf-8"),
        "/sdk/herald.js" => (SDK_JS, "text/javascript; charset=utf-8"),
        "/sdk/herald.d.ts" => (SDK_TYPES, "text/plain; charset=utf-8"),
        _ => return None,
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .ok()
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_default()
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    reply(status, json!({ "error": message }))
}

/// Serves `/admin/api/*`.
pub(crate) async fn api(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(expected) = shared.config.admin_token.as_deref() else {
        return error(
            StatusCode::FORBIDDEN,
            "the admin API is disabled: set admin_token in the configuration",
        );
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        return error(StatusCode::UNAUTHORIZED, "a valid admin token is required");
    }
    let (parts, body) = req.into_parts();
    match (&parts.method, parts.uri.path()) {
        (&Method::GET, "/admin/api/overview") => overview(shared),
        (&Method::POST, "/admin/api/token") => {
            match read_json::<TokenRequest>(shared, body).await {
                Ok(r) => issue_token(shared, r),
                Err(resp) => resp,
            }
        }
        (&Method::POST, "/admin/api/send") => match read_json::<SendBody>(shared, body).await {
            Ok(r) => send(shared, r).await,
            Err(resp) => resp,
        },
        _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    }
}

/// Reads a small JSON body, bounded in size and, like the OpenAPI's, in time
/// (`limits.body_read_timeout_ms`).
async fn read_json<T: for<'de> Deserialize<'de>>(
    shared: &Shared,
    body: Incoming,
) -> Result<T, Response<Full<Bytes>>> {
    let timeout = shared.config.limits.body_read_timeout();
    let bytes = tokio::time::timeout(timeout, Limited::new(body, MAX_ADMIN_BODY).collect())
        .await
        .map_err(|_| {
            error(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time",
            )
        })?
        .map_err(|_| error(StatusCode::PAYLOAD_TOO_LARGE, "the body is too large"))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("not the expected JSON: {e}"),
        )
    })
}

fn overview(shared: &Shared) -> Response<Full<Bytes>> {
    let apps: Vec<Value> = shared
        .hub
        .overview(OVERVIEW_LIMIT)
        .into_iter()
        .map(|a| {
            json!({
                "appId": a.app_id.as_str(),
                "connections": a.connections,
                "totalLogins": a.total_logins,
                "logins": a.logins.iter().map(UserId::as_str).collect::<Vec<_>>(),
                "totalRooms": a.total_rooms,
                "rooms": a.rooms.iter().map(|(r, m)| json!({
                    "roomId": r.as_str(),
                    "members": m.iter().map(UserId::as_str).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let m = &shared.metrics;
    reply(
        StatusCode::OK,
        json!({
            "apps": apps,
            "counters": {
                "accepted": m.accepted_total(),
                "delivered": m.delivered_total(),
                "dropped": m.dropped_all(),
                "apiCalls": m.api_calls_total(),
            },
        }),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenRequest {
    app_id: String,
    uid: String,
    #[serde(default)]
    room_id: Option<String>,
}

fn issue_token(shared: &Shared, r: TokenRequest) -> Response<Full<Bytes>> {
    let Some(app) = shared.registry.app(&r.app_id) else {
        return error(StatusCode::NOT_FOUND, "no such app");
    };
    let room = r.room_id.unwrap_or_default();
    if UserId::new(&r.uid).is_err() || (!room.is_empty() && RoomId::new(&room).is_err()) {
        return error(
            StatusCode::BAD_REQUEST,
            "uid and roomId must match [a-zA-Z0-9_@-.]{1,128}",
        );
    }
    static NONCE: AtomicU32 = AtomicU32::new(1);
    let now = shared.clock.now().secs() as u32;
    let expire = now.saturating_add(ADMIN_TOKEN_TTL_SECS);
    let nonce = NONCE.fetch_add(1, Ordering::Relaxed) ^ rand::random::<u32>();
    let mut token = AccessToken::new(app.app_id.as_str(), room, r.uid, nonce, now);
    token.expire_time(expire);
    token.add_privilege(Privilege::PublishStream, expire);
    token.add_privilege(Privilege::SubscribeStream, expire);
    reply(
        StatusCode::OK,
        json!({ "token": token.serialize(&app.app_key) }),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SendBody {
    app_id: String,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    room_id: Option<String>,
    message: String,
}

async fn send(shared: &Shared, r: SendBody) -> Response<Full<Bytes>> {
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, m);
    let Ok(app_id) = AppId::new(&r.app_id) else {
        return bad("bad appId");
    };
    let target = match (r.to, r.room_id) {
        (Some(to), None) => match UserId::new(&to) {
            Ok(u) => Target::User(u),
            Err(_) => return bad("bad to"),
        },
        (None, Some(room)) => match RoomId::new(&room) {
            Ok(r) => Target::Room(r),
            Err(_) => return bad("bad roomId"),
        },
        _ => return bad("give exactly one of to and roomId"),
    };
    if r.message.len() > herald_proto::openapi::MAX_MESSAGE_BYTES {
        return bad("the message is larger than 64 KiB");
    }
    let req = SendRequest {
        app_id,
        from: UserId::new(CONSOLE_SENDER).unwrap_or_else(|_| unreachable!("a valid literal id")),
        target,
        binary: false,
        payload: Bytes::from(r.message),
    };
    match shared.send(&req, shared.clock.now(), None).await {
        Ok(summary) => {
            shared.metrics.accepted(&summary);
            reply(
                StatusCode::OK,
                json!({ "result": "Success", "queued": summary.queued }),
            )
        }
        Err(RouteError::Unavailable) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "error": "ServiceUnavailableTemp", "message": "the cluster's Redis is unreachable" }),
        ),
        Err(RouteError::Refused(e)) => {
            let status = match e {
                SendError::UnknownApp => StatusCode::NOT_FOUND,
                SendError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
                SendError::FromIsOnlineUser => StatusCode::CONFLICT,
            };
            let api: ApiError = e.into();
            reply(
                status,
                json!({ "error": api.code.as_str(), "message": api.message }),
            )
        }
    }
}
