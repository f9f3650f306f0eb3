//! The messaging OpenAPI: actions, request bodies, their validation, the response envelope, and the
//! single table that maps every error to its wire `Code`, `CodeN` and HTTP status.
//!
//! Validation here is everything that can be decided from the request alone (shapes, id rules,
//! sizes, recipient counts). What needs state (does the AppId exist, is `From` a user who is online,
//! the rate limit) is decided by `herald-core`, which reports it with the same [`ErrorCode`].

use std::borrow::Cow;
use std::collections::HashSet;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::ids::{is_valid_id, AppId, RoomId, UserId};

/// The `Service` every response names and every credential scope must carry.
pub const SERVICE: &str = "rtc";

/// At most this many recipients in one `BatchSendRoomUnicast` (spec §1.4).
pub const MAX_BATCH_RECIPIENTS: usize = 600;

/// 64 KiB: the message limit of `SendUnicast`, `SendRoomUnicast` and `SendBroadcast`.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// 20 KiB: the message limit of `BatchSendRoomUnicast`.
pub const MAX_BATCH_MESSAGE_BYTES: usize = 20 * 1024;

/// The largest request body any messaging action can legally need: a 64 KiB binary message is
/// 87,384 base64 characters, 600 recipients of 128 characters with JSON punctuation are about
/// 79 KB next to a 27 KiB base64 message, and the remaining fields are a few hundred bytes. The edge
/// refuses bodies above this before buffering them whole.
pub const MAX_BODY_BYTES: usize = 128 * 1024;

/// The four messaging actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// To one logged-in user, outside any room.
    SendUnicast,
    /// To one user in a room.
    SendRoomUnicast,
    /// To up to 600 users of a room.
    BatchSendRoomUnicast,
    /// To everyone in a room.
    SendBroadcast,
}

impl Action {
    /// All actions, in a fixed order (metrics, docs, tests).
    pub const ALL: [Action; 4] = [
        Action::SendUnicast,
        Action::SendRoomUnicast,
        Action::BatchSendRoomUnicast,
        Action::SendBroadcast,
    ];

    /// The action's name as it appears in `?Action=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::SendUnicast => "SendUnicast",
            Action::SendRoomUnicast => "SendRoomUnicast",
            Action::BatchSendRoomUnicast => "BatchSendRoomUnicast",
            Action::SendBroadcast => "SendBroadcast",
        }
    }

    /// Parses an `Action` query value.
    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The largest message this action accepts, in bytes (UTF-8 for text, decoded for binary).
    pub fn max_message_bytes(self) -> usize {
        match self {
            Action::BatchSendRoomUnicast => MAX_BATCH_MESSAGE_BYTES,
            _ => MAX_MESSAGE_BYTES,
        }
    }
}

/// The API versions under which the messaging actions exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiVersion {
    /// `2020-12-01`
    V20201201,
    /// `2023-07-20`
    V20230720,
}

impl ApiVersion {
    /// The version as it appears in `?Version=`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V20201201 => "2020-12-01",
            ApiVersion::V20230720 => "2023-07-20",
        }
    }

    /// Parses a `Version` query value.
    pub fn parse(s: &str) -> Option<ApiVersion> {
        match s {
            "2020-12-01" => Some(ApiVersion::V20201201),
            "2023-07-20" => Some(ApiVersion::V20230720),
            _ => None,
        }
    }
}

/// Resolves the `Action` and `Version` query values of a messaging action.
pub fn resolve(action: &str, version: &str) -> Result<(Action, ApiVersion), ApiError> {
    match (Action::parse(action), ApiVersion::parse(version)) {
        (Some(a), Some(v)) => Ok((a, v)),
        _ => Err(unknown_operation(action, version)),
    }
}

fn unknown_operation(action: &str, version: &str) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidActionOrVersion,
        format!("Could not find operation {action} for version {version}."),
    )
}

/// Every operation Herald serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// One of the four messaging actions (POST, rate-limited per app).
    Send(Action),
    /// `GetRoomOnlineUsers` (GET; versions `2023-08-01`, `2023-11-01`).
    GetRoomOnlineUsers,
    /// `KickUser` (POST; version `2020-12-01`).
    KickUser,
}

impl Operation {
    /// The action's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Send(a) => a.as_str(),
            Operation::GetRoomOnlineUsers => "GetRoomOnlineUsers",
            Operation::KickUser => "KickUser",
        }
    }

    /// The HTTP method the operation is called with.
    pub fn method(self) -> &'static str {
        match self {
            Operation::GetRoomOnlineUsers => "GET",
            _ => "POST",
        }
    }
}

/// Resolves `Action` and `Version` into an operation, or `InvalidActionOrVersion`.
pub fn resolve_operation(action: &str, version: &str) -> Result<Operation, ApiError> {
    match (action, version) {
        ("GetRoomOnlineUsers", "2023-08-01" | "2023-11-01") => Ok(Operation::GetRoomOnlineUsers),
        ("KickUser", "2020-12-01") => Ok(Operation::KickUser),
        _ => resolve(action, version).map(|(a, _)| Operation::Send(a)),
    }
}

/// A validated `GetRoomOnlineUsers` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomQuery {
    /// The app.
    pub app_id: AppId,
    /// The room.
    pub room_id: RoomId,
}

/// Validates the `AppId` and `RoomId` query parameters of `GetRoomOnlineUsers`.
pub fn parse_room_query(
    app_id: Option<&str>,
    room_id: Option<&str>,
) -> Result<RoomQuery, ApiError> {
    let app_id = app_id.ok_or_else(|| ApiError::missing("AppId"))?;
    let room_id = room_id.ok_or_else(|| ApiError::missing("RoomId"))?;
    Ok(RoomQuery {
        app_id: AppId::new(app_id).map_err(|_| illegal_app_id())?,
        room_id: RoomId::new(room_id).map_err(|_| illegal_room_id())?,
    })
}

/// `Result` of `GetRoomOnlineUsers` (spec §1.6). When the room does not exist only `RoomExists`
/// is present. Herald has no invisible users, so the invisible count is always 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RoomOnlineUsers {
    /// Whether the room has any member.
    pub room_exists: bool,
    /// Members.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub total_user: Option<u32>,
    /// Member ids.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub visible_user_list: Option<Vec<String>>,
    /// Always 0.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub total_invisible_user: Option<u32>,
    /// Always empty.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub invisible_user_list: Option<Vec<String>>,
}

impl RoomOnlineUsers {
    /// The result for a room with these members (`None`: no such room).
    pub fn new(users: Option<Vec<String>>) -> Self {
        match users {
            None => RoomOnlineUsers {
                room_exists: false,
                total_user: None,
                visible_user_list: None,
                total_invisible_user: None,
                invisible_user_list: None,
            },
            Some(users) => RoomOnlineUsers {
                room_exists: true,
                total_user: Some(users.len() as u32),
                visible_user_list: Some(users),
                total_invisible_user: Some(0),
                invisible_user_list: Some(Vec::new()),
            },
        }
    }
}

/// A validated `KickUser` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KickRequest {
    /// The app.
    pub app_id: AppId,
    /// The room.
    pub room_id: RoomId,
    /// The user to remove.
    pub user_id: UserId,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireKick<'a> {
    #[serde(borrow)]
    app_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    room_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    user_id: Option<Cow<'a, str>>,
}

/// Decodes and validates a `KickUser` body.
pub fn parse_kick_request(body: &[u8]) -> Result<KickRequest, ApiError> {
    let wire: WireKick<'_> = decode_body(body)?;
    let app_id = wire.app_id.ok_or_else(|| ApiError::missing("AppId"))?;
    let room_id = wire.room_id.ok_or_else(|| ApiError::missing("RoomId"))?;
    let user_id = wire.user_id.ok_or_else(|| ApiError::missing("UserId"))?;
    Ok(KickRequest {
        app_id: AppId::new(&app_id).map_err(|_| illegal_app_id())?,
        room_id: RoomId::new(&room_id).map_err(|_| illegal_room_id())?,
        user_id: UserId::new(&user_id).map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidParameter,
                "UserId must match [a-zA-Z0-9_@\\-\\.]{1,128}.",
            )
        })?,
    })
}

/// The empty-body and JSON checks every POST body goes through.
///
/// The body must be a JSON object. serde's derived structs also accept a JSON array of the field
/// values in declaration order, which would make the order of a private struct's fields part of
/// the wire format; that form is refused here before serde sees it.
fn decode_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(ApiError::new(
                ErrorCode::BodyIsEmpty,
                "The request body is empty.",
            ))
        }
        Some(b'{') => {}
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::Unmarshal,
                "The request body must be a JSON object.",
            ))
        }
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::Unmarshal,
            format!("The request body is not a JSON object of the expected shape: {e}."),
        )
    })
}

fn illegal_app_id() -> ApiError {
    ApiError::new(
        ErrorCode::IllegalAppId,
        "AppId must match [a-zA-Z0-9_@\\-\\.]{1,128}.",
    )
}

fn illegal_room_id() -> ApiError {
    ApiError::new(
        ErrorCode::IllegalRoomId,
        "RoomId must match [a-zA-Z0-9_@\\-\\.]{1,128}.",
    )
}

/// Every error the OpenAPI can answer with. The wire code, `CodeN` and HTTP status of each live in
/// the three methods below and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A required query parameter or body field is missing.
    MissingParameter,
    /// No `Authorization` header (nor query signature).
    MissingAuthenticationToken,
    /// A field the signature needs (`X-Date`) is missing.
    MissingRequestInfo,
    /// The `X-Date` is outside the allowed window.
    InvalidTimestamp,
    /// The `Action`/`Version` pair is not served.
    InvalidActionOrVersion,
    /// The access key is unknown.
    InvalidAccessKey,
    /// The signature does not verify.
    SignatureDoesNotMatch,
    /// The `Authorization` header is malformed.
    InvalidAuthorization,
    /// The credential in the `Authorization` header is malformed (scope, service).
    InvalidCredential,
    /// The HTTP method is not the one the action needs.
    MethodNotAllowed,
    /// Herald failed internally; the details are logged, never sent.
    InternalError,
    /// A dependency (the cluster engine) is unreachable; retry later.
    ServiceUnavailableTemp,
    /// Generic parameter error (for example, bad base64).
    InvalidParameter,
    /// The request body is empty.
    BodyIsEmpty,
    /// The request body is not JSON of the expected shape.
    Unmarshal,
    /// The `AppId` is not configured.
    NotExistAppId,
    /// The `AppId` is malformed.
    IllegalAppId,
    /// The `RoomId` is malformed.
    IllegalRoomId,
    /// A recipient id is malformed, or `To` is empty.
    IllegalTo,
    /// `From` is malformed or is the id of a user who is online.
    IllegalFrom,
    /// The message is larger than the action allows.
    SizeOverLimit,
    /// The HTTP body is larger than any legal request; refused before it is read whole.
    BodyTooLarge,
    /// More than 600 recipients.
    UserCountOverLimit,
    /// The app's calls per second are over its limit.
    QpsOverLimit,
    /// The access key does not own the `AppId`.
    NoPermissionForApp,
}

impl ErrorCode {
    /// The `Code` string of `ResponseMetadata.Error`.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            MissingParameter => "MissingParameter",
            MissingAuthenticationToken => "MissingAuthenticationToken",
            MissingRequestInfo => "MissingRequestInfo",
            InvalidTimestamp => "InvalidTimestamp",
            InvalidActionOrVersion => "InvalidActionOrVersion",
            InvalidAccessKey => "InvalidAccessKey",
            SignatureDoesNotMatch => "SignatureDoesNotMatch",
            InvalidAuthorization => "InvalidAuthorization",
            InvalidCredential => "InvalidCredential",
            MethodNotAllowed => "MethodNotAllowed",
            InternalError => "InternalError",
            ServiceUnavailableTemp => "ServiceUnavailableTemp",
            InvalidParameter => "InvalidParameter",
            BodyIsEmpty => "InvalidParameter.BodyIsEmpty",
            Unmarshal => "InvalidParameter.Unmarshal",
            NotExistAppId => "InvalidParameter.NotExistAppId",
            IllegalAppId => "InvalidParameter.IllegalAppId",
            IllegalRoomId => "InvalidParameter.IllegalRoomID",
            IllegalTo => "InvalidParameter.IllegalTo",
            IllegalFrom => "InvalidParameter.IllegalFrom",
            SizeOverLimit | BodyTooLarge => "InvalidParameter.SizeOverLimit",
            UserCountOverLimit => "InvalidParameter.UserCountOverLimit",
            QpsOverLimit => "FlowLimitExceeded.QPSOverLimit",
            NoPermissionForApp => "AccessDenied.NoPermissionForApp",
        }
    }

    /// The numeric gateway code. Codes of a gateway family carry that family's number (spec §2.3;
    /// `FlowLimitExceeded.*` 100018, `AccessDenied.*` 100013); the API-level `InvalidParameter.*`
    /// codes and the gateway codes whose number no source gives carry none.
    pub fn code_n(self) -> Option<u32> {
        use ErrorCode::*;
        match self {
            MissingParameter => Some(100002),
            MissingAuthenticationToken => Some(100003),
            MissingRequestInfo => Some(100004),
            InvalidTimestamp => Some(100006),
            InvalidActionOrVersion => Some(100008),
            InvalidAccessKey => Some(100009),
            SignatureDoesNotMatch => Some(100010),
            NoPermissionForApp => Some(100013),
            InternalError => Some(100014),
            QpsOverLimit => Some(100018),
            ServiceUnavailableTemp => Some(100019),
            MethodNotAllowed => Some(100020),
            InvalidCredential => Some(100025),
            InvalidAuthorization | InvalidParameter | BodyIsEmpty | Unmarshal | NotExistAppId
            | IllegalAppId | IllegalRoomId | IllegalTo | IllegalFrom | SizeOverLimit
            | BodyTooLarge | UserCountOverLimit => None,
        }
    }

    /// The HTTP status (DECISIONS.md: every error is non-200, in both versions).
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            MissingParameter | MissingRequestInfo | InvalidAuthorization | InvalidCredential
            | InvalidParameter | BodyIsEmpty | Unmarshal | NotExistAppId | IllegalAppId
            | IllegalRoomId | IllegalTo | IllegalFrom | SizeOverLimit | UserCountOverLimit => 400,
            MissingAuthenticationToken | InvalidAccessKey | SignatureDoesNotMatch => 401,
            InvalidTimestamp | NoPermissionForApp => 403,
            InvalidActionOrVersion => 404,
            MethodNotAllowed => 405,
            BodyTooLarge => 413,
            QpsOverLimit => 429,
            InternalError => 500,
            ServiceUnavailableTemp => 503,
        }
    }
}

/// An OpenAPI error: a code and a message safe to send (it never carries internal details).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// What went wrong, as a wire code.
    pub code: ErrorCode,
    /// A human message for the caller.
    pub message: Cow<'static, str>,
}

impl ApiError {
    /// An error with a message.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }

    fn missing(field: &'static str) -> Self {
        ApiError::new(
            ErrorCode::MissingParameter,
            format!("The request is missing {field} parameter."),
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ApiError {}

/// Who a message goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A logged-in user, outside any room (`SendUnicast`).
    User(UserId),
    /// Some members of a room (`SendRoomUnicast`, `BatchSendRoomUnicast`); unique ids.
    RoomUsers(RoomId, Vec<UserId>),
    /// Every member of a room (`SendBroadcast`).
    Room(RoomId),
}

/// A validated messaging request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRequest {
    /// The app the message belongs to.
    pub app_id: AppId,
    /// The business server's sender id, shown to receivers as the sender's uid.
    pub from: UserId,
    /// The recipients.
    pub target: Target,
    /// True when `payload` is binary (it arrived base64-encoded).
    pub binary: bool,
    /// The message: UTF-8 text, or the decoded binary bytes.
    pub payload: Bytes,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ToField<'a> {
    #[serde(borrow)]
    One(Cow<'a, str>),
    #[serde(borrow)]
    Many(Vec<Cow<'a, str>>),
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireBody<'a> {
    #[serde(borrow)]
    app_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    room_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    from: Option<Cow<'a, str>>,
    #[serde(borrow)]
    to: Option<ToField<'a>>,
    binary: Option<bool>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
}

/// Decodes and validates the JSON body of `action`. Checks run cheapest first, and the message is
/// measured (and, for binary, decoded) last, so a bad request costs little.
pub fn parse_send_request(action: Action, body: &[u8]) -> Result<SendRequest, ApiError> {
    let wire: WireBody<'_> = decode_body(body)?;

    let app_id = wire.app_id.ok_or_else(|| ApiError::missing("AppId"))?;
    let app_id = AppId::new(&app_id).map_err(|_| illegal_app_id())?;
    let from = wire.from.ok_or_else(|| ApiError::missing("From"))?;
    let from = UserId::new(&from).map_err(|_| {
        ApiError::new(
            ErrorCode::IllegalFrom,
            "From must match [a-zA-Z0-9_@\\-\\.]{1,128}.",
        )
    })?;
    let binary = wire.binary.ok_or_else(|| ApiError::missing("Binary"))?;
    let message = wire.message.ok_or_else(|| ApiError::missing("Message"))?;

    let room = match action {
        Action::SendUnicast => None,
        _ => {
            let room = wire.room_id.ok_or_else(|| ApiError::missing("RoomId"))?;
            Some(RoomId::new(&room).map_err(|_| illegal_room_id())?)
        }
    };

    let target = match (action, room) {
        (Action::SendBroadcast, Some(room)) => Target::Room(room),
        (Action::BatchSendRoomUnicast, Some(room)) => {
            let ids = match wire.to.ok_or_else(|| ApiError::missing("To"))? {
                ToField::Many(ids) => ids,
                ToField::One(_) => {
                    return Err(ApiError::new(
                        ErrorCode::IllegalTo,
                        "To must be an array of user ids.",
                    ))
                }
            };
            if ids.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::IllegalTo,
                    "To must name at least one user.",
                ));
            }
            if ids.len() > MAX_BATCH_RECIPIENTS {
                return Err(ApiError::new(
                    ErrorCode::UserCountOverLimit,
                    format!("To names {} users; at most 600 are allowed.", ids.len()),
                ));
            }
            let mut seen = HashSet::with_capacity(ids.len());
            let mut users = Vec::with_capacity(ids.len());
            for id in &ids {
                if !is_valid_id(id) {
                    return Err(illegal_to());
                }
                if seen.insert(id.as_ref()) {
                    users.push(UserId::new(id).map_err(|_| illegal_to())?);
                }
            }
            Target::RoomUsers(room, users)
        }
        (_, room) => {
            let to = match wire.to.ok_or_else(|| ApiError::missing("To"))? {
                ToField::One(to) => to,
                ToField::Many(_) => {
                    return Err(ApiError::new(
                        ErrorCode::IllegalTo,
                        "To must be a single user id.",
                    ))
                }
            };
            let to = UserId::new(&to).map_err(|_| illegal_to())?;
            match room {
                Some(room) => Target::RoomUsers(room, vec![to]),
                None => Target::User(to),
            }
        }
    };

    let limit = action.max_message_bytes();
    let payload = if binary {
        // base64 never decodes to more than 3/4 of its length: refuse on length before decoding.
        if message.len() / 4 * 3 > limit + 2 {
            return Err(size_over_limit(limit));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(message.as_bytes())
            .map_err(|_| {
                ApiError::new(
                    ErrorCode::InvalidParameter,
                    "Message must be valid standard base64 when Binary is true.",
                )
            })?;
        if bytes.len() > limit {
            return Err(size_over_limit(limit));
        }
        Bytes::from(bytes)
    } else {
        if message.len() > limit {
            return Err(size_over_limit(limit));
        }
        Bytes::copy_from_slice(message.as_bytes())
    };

    Ok(SendRequest {
        app_id,
        from,
        target,
        binary,
        payload,
    })
}

fn illegal_to() -> ApiError {
    ApiError::new(
        ErrorCode::IllegalTo,
        "Every user id in To must match [a-zA-Z0-9_@\\-\\.]{1,128}.",
    )
}

fn size_over_limit(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::SizeOverLimit,
        format!(
            "Message is larger than {} KB (UTF-8 bytes for text, decoded bytes for binary).",
            limit / 1024
        ),
    )
}

/// `ResponseMetadata` of every response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResponseMetadata {
    /// Unique per request.
    pub request_id: String,
    /// Echo of `?Action=`.
    pub action: String,
    /// Echo of `?Version=`.
    pub version: String,
    /// Always `rtc`.
    pub service: String,
    /// The configured region.
    pub region: String,
    /// Present only on failure.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<ErrorBody>,
}

/// `ResponseMetadata.Error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The gateway number, where the code has one.
    #[serde(rename = "CodeN", skip_serializing_if = "Option::is_none", default)]
    pub code_n: Option<u32>,
    /// The code string.
    #[serde(rename = "Code")]
    pub code: String,
    /// A human message.
    #[serde(rename = "Message")]
    pub message: String,
}

/// `Result` of a successful messaging call: `{"Message": "Success"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendResult {
    /// Always `Success`.
    #[serde(rename = "Message")]
    pub message: String,
}

/// `Result.DeliveryReport` of a messaging call made with `X-Herald-Delivery-Report: true` (a
/// Herald extension): each recipient's outcome, by outcome. Every list is present and sorted;
/// each recipient is in one of them. See `docs/delivery.md`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeliveryReport {
    /// Written to the recipient's connection (handed to its socket) by the time of the report.
    pub written: Vec<String>,
    /// In the recipient's connection's queue, not yet written.
    pub queued: Vec<String>,
    /// `SendUnicast`: not logged in anywhere.
    pub not_online: Vec<String>,
    /// Room actions: not in the room anywhere.
    pub not_in_room: Vec<String>,
    /// The recipient's queue was full: the message was dropped and the connection is being cut
    /// off (close 4001).
    pub slow_consumer: Vec<String>,
    /// Not connected, but between connections with its stream held for recovery: the message
    /// is kept and replayed if the user resumes within the window.
    #[serde(default)]
    pub held: Vec<String>,
    /// Held by another node of a cluster that did not report in time.
    pub unknown: Vec<String>,
    /// Nodes that held recipients and did not report in time (for a broadcast, their members
    /// cannot be named: a non-zero count means the report is incomplete).
    pub nodes_not_reporting: u32,
    /// Acknowledged by the recipient's client within the call's wait: present only when the call
    /// asked to wait for acks (`X-Herald-Ack-Timeout-Ms`); these recipients are in no other list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked: Option<Vec<String>>,
}

impl DeliveryReport {
    /// Every recipient named.
    pub fn named(&self) -> impl Iterator<Item = &String> {
        self.written
            .iter()
            .chain(&self.queued)
            .chain(&self.not_online)
            .chain(&self.not_in_room)
            .chain(&self.slow_consumer)
            .chain(&self.held)
            .chain(&self.unknown)
            .chain(self.acked.iter().flatten())
    }

    /// The recipients the message reached: written or queued on their connection, or acked.
    pub fn reached(&self) -> impl Iterator<Item = &String> {
        self.written
            .iter()
            .chain(&self.queued)
            .chain(self.acked.iter().flatten())
    }

    /// Sorts each list, so a report reads the same whatever order the nodes answered in.
    pub fn sort(&mut self) {
        for list in [
            &mut self.written,
            &mut self.queued,
            &mut self.not_online,
            &mut self.not_in_room,
            &mut self.slow_consumer,
            &mut self.held,
            &mut self.unknown,
        ] {
            list.sort_unstable();
        }
        if let Some(acked) = &mut self.acked {
            acked.sort_unstable();
        }
    }
}

/// The whole response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<R> {
    /// Metadata, with the error on failure.
    #[serde(rename = "ResponseMetadata")]
    pub response_metadata: ResponseMetadata,
    /// The result on success; absent on failure.
    #[serde(rename = "Result", skip_serializing_if = "Option::is_none", default)]
    pub result: Option<R>,
}

impl<R> Envelope<R> {
    /// A failure envelope for `err`.
    pub fn failure(mut meta: ResponseMetadata, err: &ApiError) -> Self {
        meta.error = Some(ErrorBody {
            code_n: err.code.code_n(),
            code: err.code.as_str().to_owned(),
            message: err.message.to_string(),
        });
        Envelope {
            response_metadata: meta,
            result: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(action: Action, body: &str) -> Result<SendRequest, ApiError> {
        parse_send_request(action, body.as_bytes())
    }

    fn code(r: Result<SendRequest, ApiError>) -> ErrorCode {
        r.unwrap_err().code
    }

    #[test]
    fn a_body_must_be_a_json_object() {
        // The fields of a valid call, as an array in the order of the wire struct's fields.
        let array = r#"["65a1b2c3d4e5f60718293a4b", null, "bot", "u1", false, "hi"]"#;
        assert_eq!(
            code(parse(Action::SendUnicast, array)),
            ErrorCode::Unmarshal
        );
        for body in ["\"hi\"", "null", "1", " [] "] {
            assert_eq!(
                code(parse(Action::SendUnicast, body)),
                ErrorCode::Unmarshal,
                "{body}"
            );
        }
        let kick = parse_kick_request(br#"["65a1b2c3d4e5f60718293a4b", "r", "u"]"#);
        assert_eq!(kick.unwrap_err().code, ErrorCode::Unmarshal);
        assert_eq!(
            code(parse(Action::SendUnicast, " \n ")),
            ErrorCode::BodyIsEmpty
        );
    }

    #[test]
    fn parses_each_action() {
        let r = parse(
            Action::SendUnicast,
            r#"{"AppId":"a1","From":"bot","To":"u1","Binary":false,"Message":"hi"}"#,
        )
        .unwrap();
        assert_eq!(r.target, Target::User(UserId::new("u1").unwrap()));
        assert_eq!(&r.payload[..], b"hi");

        let r = parse(
            Action::BatchSendRoomUnicast,
            r#"{"AppId":"a1","RoomId":"r","From":"bot","To":["u1","u2","u1"],"Binary":true,"Message":"aGk="}"#,
        )
        .unwrap();
        let users = vec![UserId::new("u1").unwrap(), UserId::new("u2").unwrap()];
        assert_eq!(
            r.target,
            Target::RoomUsers(RoomId::new("r").unwrap(), users)
        );
        assert_eq!(&r.payload[..], b"hi");
        assert!(r.binary);

        let r = parse(
            Action::SendBroadcast,
            r#"{"AppId":"a1","RoomId":"r","From":"bot","Binary":false,"Message":""}"#,
        )
        .unwrap();
        assert_eq!(r.target, Target::Room(RoomId::new("r").unwrap()));
    }

    #[test]
    fn every_body_error_has_its_code() {
        use ErrorCode::*;
        let u = Action::SendUnicast;
        let b = Action::BatchSendRoomUnicast;
        assert_eq!(code(parse(u, "")), BodyIsEmpty);
        assert_eq!(code(parse(u, "{")), Unmarshal);
        assert_eq!(code(parse(u, "[]")), Unmarshal);
        assert_eq!(
            code(parse(
                u,
                r#"{"AppId":1,"From":"b","To":"u","Binary":false,"Message":"m"}"#
            )),
            Unmarshal
        );
        assert_eq!(
            code(parse(
                u,
                r#"{"AppId":"a","From":"b","To":"u","Binary":"no","Message":"m"}"#
            )),
            Unmarshal
        );
        assert_eq!(
            code(parse(
                u,
                r#"{"From":"b","To":"u","Binary":false,"Message":"m"}"#
            )),
            MissingParameter
        );
        assert_eq!(
            code(parse(
                u,
                r#"{"AppId":"a b","From":"b","To":"u","Binary":false,"Message":"m"}"#
            )),
            IllegalAppId
        );
        assert_eq!(
            code(parse(
                u,
                r#"{"AppId":"a","From":"b/","To":"u","Binary":false,"Message":"m"}"#
            )),
            IllegalFrom
        );
        assert_eq!(
            code(parse(
                u,
                r#"{"AppId":"a","From":"b","To":"","Binary":false,"Message":"m"}"#
            )),
            IllegalTo
        );
        assert_eq!(
            code(parse(
                u,
                r#"{"AppId":"a","From":"b","To":["u"],"Binary":false,"Message":"m"}"#
            )),
            IllegalTo
        );
        assert_eq!(
            code(parse(
                Action::SendRoomUnicast,
                r#"{"AppId":"a","RoomId":"r!","From":"b","To":"u","Binary":false,"Message":"m"}"#
            )),
            IllegalRoomId
        );
        assert_eq!(
            code(parse(
                b,
                r#"{"AppId":"a","RoomId":"r","From":"b","To":[],"Binary":false,"Message":"m"}"#
            )),
            IllegalTo
        );
        let many: Vec<String> = (0..601).map(|i| format!("\"u{i}\"")).collect();
        let body = format!(
            r#"{{"AppId":"a","RoomId":"r","From":"b","To":[{}],"Binary":false,"Message":"m"}}"#,
            many.join(",")
        );
        assert_eq!(code(parse(b, &body)), UserCountOverLimit);
        assert_eq!(
            code(parse(
                u,
                r#"{"AppId":"a","From":"b","To":"u","Binary":true,"Message":"%%%"}"#
            )),
            InvalidParameter
        );
    }

    #[test]
    fn sizes_are_measured_after_decoding() {
        use base64::engine::general_purpose::STANDARD;
        let body = |action: Action, binary: bool, msg: String| {
            let room = if action == Action::SendUnicast {
                ""
            } else {
                r#""RoomId":"r","#
            };
            let to = if action == Action::BatchSendRoomUnicast {
                r#"["u"]"#
            } else {
                r#""u""#
            };
            format!(
                r#"{{"AppId":"a",{room}"From":"b","To":{to},"Binary":{binary},"Message":"{msg}"}}"#
            )
        };
        for (action, limit) in [
            (Action::SendUnicast, 65536),
            (Action::BatchSendRoomUnicast, 20480),
        ] {
            assert!(parse(action, &body(action, false, "x".repeat(limit))).is_ok());
            assert_eq!(
                code(parse(action, &body(action, false, "x".repeat(limit + 1)))),
                ErrorCode::SizeOverLimit
            );
            let ok = STANDARD.encode(vec![7u8; limit]);
            assert_eq!(
                parse(action, &body(action, true, ok))
                    .unwrap()
                    .payload
                    .len(),
                limit
            );
            let over = STANDARD.encode(vec![7u8; limit + 1]);
            assert_eq!(
                code(parse(action, &body(action, true, over))),
                ErrorCode::SizeOverLimit
            );
        }
        // A multi-byte character counts its UTF-8 bytes: 21,846 × 3 bytes > 64 KiB.
        let wide = "€".repeat(21_846);
        assert_eq!(
            code(parse(
                Action::SendUnicast,
                &body(Action::SendUnicast, false, wide)
            )),
            ErrorCode::SizeOverLimit
        );
    }

    #[test]
    fn a_legal_maximal_request_fits_the_body_limit() {
        use base64::engine::general_purpose::STANDARD;
        let msg = STANDARD.encode(vec![0u8; MAX_MESSAGE_BYTES]);
        let id = "x".repeat(128);
        let body = format!(
            r#"{{"AppId":"{id}","RoomId":"{id}","From":"{id}","To":"{id}","Binary":true,"Message":"{msg}"}}"#
        );
        assert!(body.len() < MAX_BODY_BYTES);
        let to: Vec<String> = (0..600)
            .map(|i| format!("\"{}{i:03}\"", "y".repeat(125)))
            .collect();
        let msg = STANDARD.encode(vec![0u8; MAX_BATCH_MESSAGE_BYTES]);
        let body = format!(
            r#"{{"AppId":"{id}","RoomId":"{id}","From":"{id}","To":[{}],"Binary":true,"Message":"{msg}"}}"#,
            to.join(",")
        );
        assert!(body.len() < MAX_BODY_BYTES, "{}", body.len());
        assert!(parse_send_request(Action::BatchSendRoomUnicast, body.as_bytes()).is_ok());
    }

    #[test]
    fn envelope_matches_the_vendor_shape() {
        let meta = ResponseMetadata {
            request_id: "r1".into(),
            action: "SendUnicast".into(),
            version: "2023-07-20".into(),
            service: "rtc".into(),
            region: "cn-north-1".into(),
            error: None,
        };
        let ok = Envelope {
            response_metadata: meta.clone(),
            result: Some(SendResult {
                message: "Success".into(),
            }),
        };
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"ResponseMetadata":{"RequestId":"r1","Action":"SendUnicast","Version":"2023-07-20","Service":"rtc","Region":"cn-north-1"},"Result":{"Message":"Success"}}"#
        );
        let err = ApiError::new(ErrorCode::QpsOverLimit, "slow down");
        let failed: Envelope<SendResult> = Envelope::failure(meta, &err);
        assert_eq!(
            serde_json::to_string(&failed).unwrap(),
            r#"{"ResponseMetadata":{"RequestId":"r1","Action":"SendUnicast","Version":"2023-07-20","Service":"rtc","Region":"cn-north-1","Error":{"CodeN":100018,"Code":"FlowLimitExceeded.QPSOverLimit","Message":"slow down"}}}"#
        );
    }

    #[test]
    fn other_operations_resolve_and_validate() {
        assert_eq!(
            resolve_operation("GetRoomOnlineUsers", "2023-11-01").unwrap(),
            Operation::GetRoomOnlineUsers
        );
        assert_eq!(
            resolve_operation("GetRoomOnlineUsers", "2023-08-01")
                .unwrap()
                .method(),
            "GET"
        );
        assert!(resolve_operation("GetRoomOnlineUsers", "2023-07-20").is_err());
        assert_eq!(
            resolve_operation("KickUser", "2020-12-01").unwrap(),
            Operation::KickUser
        );
        assert_eq!(
            resolve_operation("SendUnicast", "2020-12-01").unwrap(),
            Operation::Send(Action::SendUnicast)
        );
        let k = parse_kick_request(br#"{"AppId":"a","RoomId":"r","UserId":"u"}"#).unwrap();
        assert_eq!(k.user_id.as_str(), "u");
        assert_eq!(
            parse_kick_request(br#"{"AppId":"a","RoomId":"r","UserId":"u u"}"#)
                .unwrap_err()
                .code,
            ErrorCode::InvalidParameter
        );
        assert_eq!(
            parse_kick_request(br#"{"AppId":"a","RoomId":"r"}"#)
                .unwrap_err()
                .code,
            ErrorCode::MissingParameter
        );
        assert_eq!(
            parse_room_query(Some("a"), Some("r!")).unwrap_err().code,
            ErrorCode::IllegalRoomId
        );
        assert_eq!(
            parse_room_query(Some("a"), None).unwrap_err().code,
            ErrorCode::MissingParameter
        );
        assert_eq!(
            serde_json::to_string(&RoomOnlineUsers::new(None)).unwrap(),
            r#"{"RoomExists":false}"#
        );
        assert_eq!(
            serde_json::to_string(&RoomOnlineUsers::new(Some(vec!["u1".into()]))).unwrap(),
            r#"{"RoomExists":true,"TotalUser":1,"VisibleUserList":["u1"],"TotalInvisibleUser":0,"InvisibleUserList":[]}"#
        );
    }

    #[test]
    fn action_and_version_resolve() {
        assert_eq!(
            resolve("SendBroadcast", "2020-12-01").unwrap(),
            (Action::SendBroadcast, ApiVersion::V20201201)
        );
        assert_eq!(
            resolve("SendBroadcast", "2022-06-01").unwrap_err().code,
            ErrorCode::InvalidActionOrVersion
        );
        assert_eq!(
            resolve("StartRecord", "2023-07-20").unwrap_err().code,
            ErrorCode::InvalidActionOrVersion
        );
    }
}
