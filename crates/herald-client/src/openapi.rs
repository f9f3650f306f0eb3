//! [`OpenApiClient`]: the messaging OpenAPI as a business server calls it, signed with the vendor's
//! V4 signature (`herald_proto::sign`, the same code the server verifies with).
//!
//! Every HTTP answer is returned as an [`ApiResponse`], errors included: the envelope is what a
//! business server logs and acts on (`Code`, `RequestId`, `Retry-After`). Only a request that got
//! no envelope back is an [`OpenApiError`].

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use herald_proto::openapi::{Action, ApiVersion, DeliveryReport, SERVICE};
use herald_proto::sign::{encode_query, sign_request, Credentials};
use serde_json::{json, Map, Value};

use crate::tls::Tls;

/// The region the vendor's SDKs default to, and Herald's default `region`.
pub const DEFAULT_REGION: &str = "cn-north-1";

/// A message to send.
///
/// ```
/// use herald_client::Message;
/// assert_eq!(Message::from("hi"), Message::Text("hi".into()));
/// assert_eq!(Message::from(vec![0u8, 1]), Message::Binary(vec![0, 1]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// UTF-8 text, sent with `"Binary": false`.
    Text(String),
    /// Bytes, sent base64-encoded with `"Binary": true`; receivers get the bytes.
    Binary(Vec<u8>),
    /// Bytes already base64-encoded by the caller, sent as is with `"Binary": true` (the server
    /// checks the encoding and answers `InvalidParameter` when it is not standard base64).
    Base64(String),
}

impl Message {
    /// The `Binary` and `Message` fields of the body.
    fn wire(&self) -> (bool, String) {
        match self {
            Message::Text(t) => (false, t.clone()),
            Message::Binary(b) => (true, base64::engine::general_purpose::STANDARD.encode(b)),
            Message::Base64(s) => (true, s.clone()),
        }
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Self {
        Message::Text(s.to_owned())
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Message::Text(s)
    }
}

impl From<Vec<u8>> for Message {
    fn from(b: Vec<u8>) -> Self {
        Message::Binary(b)
    }
}

impl From<&[u8]> for Message {
    fn from(b: &[u8]) -> Self {
        Message::Binary(b.to_vec())
    }
}

/// An HTTP answer from the OpenAPI, whatever its status.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    /// The HTTP status: 200 on success.
    pub status: u16,
    /// The envelope as returned: `{"ResponseMetadata":{…},"Result":{"Message":"Success"}}`, or
    /// `ResponseMetadata.Error` on failure.
    pub body: Value,
    /// The `Retry-After` header (seconds), sent with `FlowLimitExceeded.QPSOverLimit`.
    pub retry_after: Option<String>,
}

impl ApiResponse {
    /// True for HTTP 200.
    pub fn is_success(&self) -> bool {
        self.status == 200
    }

    /// `Result.DeliveryReport`, when the call asked for one
    /// ([`OpenApiClient::with_delivery_report`], or [`OpenApiClient::with_ack_timeout_ms`]: then
    /// its `acked` is `Some`) and succeeded.
    pub fn delivery_report(&self) -> Option<DeliveryReport> {
        let r = self.body.pointer("/Result/DeliveryReport")?;
        serde_json::from_value(r.clone()).ok()
    }

    /// `ResponseMetadata.Error.Code`, such as `"InvalidParameter.IllegalFrom"`; `None` on success.
    pub fn error_code(&self) -> Option<&str> {
        self.body
            .pointer("/ResponseMetadata/Error/Code")
            .and_then(Value::as_str)
    }
}

/// Why [`OpenApiClient::new`] refused an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid OpenAPI endpoint {0:?}: expected http://HOST[:PORT]")]
pub struct InvalidEndpoint(pub String);

/// Why a call got no envelope back. The underlying error is the [`std::error::Error::source`],
/// not repeated in the message.
#[derive(Debug, thiserror::Error)]
pub enum OpenApiError {
    /// The request could not be sent or its answer not read (connection refused, reset, …).
    #[error("the OpenAPI request failed")]
    Transport(#[source] reqwest::Error),
    /// Something answered, but not with a JSON envelope (a proxy's error page, say).
    #[error("the OpenAPI answered HTTP {status} without a JSON envelope: {body}")]
    InvalidResponse {
        /// The HTTP status.
        status: u16,
        /// The body, as text.
        body: String,
    },
}

/// A signed client of the messaging OpenAPI, for business servers.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use herald_client::{Message, OpenApiClient};
///
/// let api = OpenApiClient::new("http://127.0.0.1:8080", "AKLTheralddev", "herald-dev-secret-not-for-production")?;
/// let r = api
///     .send_unicast("herald-dev-app-000000001", "server_bot", "u1", Message::Text("hello".into()))
///     .await?;
/// if !r.is_success() {
///     eprintln!("{:?}: {}", r.error_code(), r.body);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct OpenApiClient {
    http: reqwest::Client,
    /// `scheme://authority`, where requests go.
    base: String,
    /// The authority, sent (and signed) as the `Host` header.
    host: String,
    access_key: String,
    secret_key: String,
    region: String,
    session_token: Option<String>,
    version: ApiVersion,
    delivery_report: bool,
    /// Milliseconds each messaging call waits for its recipients' acks, if set.
    ack_timeout_ms: Option<u32>,
}

impl OpenApiClient {
    /// A client of the OpenAPI at `endpoint` (`http://HOST:PORT`, or `https://` trusting Mozilla's
    /// roots: see [`OpenApiClient::with_tls`]), signing with the access key `access_key` and
    /// secret `secret_key`, in region `cn-north-1`, calling version `2023-07-20`.
    pub fn new(
        endpoint: &str,
        access_key: &str,
        secret_key: &str,
    ) -> Result<Self, InvalidEndpoint> {
        let invalid = || InvalidEndpoint(endpoint.to_owned());
        let uri: http::Uri = endpoint.parse().map_err(|_| invalid())?;
        let scheme = match uri.scheme_str() {
            Some(s @ ("http" | "https")) => s,
            _ => return Err(invalid()),
        };
        let authority = uri.authority().ok_or_else(invalid)?;
        // The server verifies the signature over the path `/`; userinfo has no place in `Host`.
        if authority.as_str().contains('@')
            || !matches!(uri.path(), "" | "/")
            || uri.query().is_some()
        {
            return Err(invalid());
        }
        Ok(OpenApiClient {
            http: http_client(&Tls::default()),
            base: format!("{scheme}://{authority}"),
            host: authority.as_str().to_owned(),
            access_key: access_key.to_owned(),
            secret_key: secret_key.to_owned(),
            region: DEFAULT_REGION.to_owned(),
            session_token: None,
            version: ApiVersion::V20230720,
            delivery_report: false,
            ack_timeout_ms: None,
        })
    }

    /// Verifies a `https://` endpoint's certificate with `tls` instead of Mozilla's roots alone,
    /// to trust a self-signed or private certificate ([`Tls::with_root_pem`]).
    pub fn with_tls(mut self, tls: &Tls) -> Self {
        self.http = http_client(tls);
        self
    }

    /// Signs for `region` instead of `cn-north-1`.
    pub fn with_region(mut self, region: &str) -> Self {
        self.region = region.to_owned();
        self
    }

    /// Calls `version` of the messaging actions instead of `2023-07-20`.
    ///
    /// ```
    /// use herald_client::OpenApiClient;
    /// use herald_proto::openapi::ApiVersion;
    /// let api = OpenApiClient::new("http://127.0.0.1:8080", "ak", "sk")
    ///     .unwrap()
    ///     .with_version(ApiVersion::V20201201);
    /// # let _ = api;
    /// ```
    pub fn with_version(mut self, version: ApiVersion) -> Self {
        self.version = version;
        self
    }

    /// Asks Herald for a delivery report with every messaging call (the header
    /// `X-Herald-Delivery-Report: true`): the answer's `Result.DeliveryReport` then names each
    /// recipient's outcome ([`ApiResponse::delivery_report`]). A Herald extension; the vendor's
    /// cloud does not know it.
    pub fn with_delivery_report(mut self, on: bool) -> Self {
        self.delivery_report = on;
        self
    }

    /// Makes every messaging call wait up to `ms` milliseconds (1 to 5000; Herald refuses
    /// anything else with `InvalidParameter`) for its recipients' clients to acknowledge the
    /// message (the header `X-Herald-Ack-Timeout-Ms`), and report them in the delivery report's
    /// `Acked` list ([`ApiResponse::delivery_report`], field `acked`). Implies a delivery report.
    /// `None` (the default) does not wait. A Herald extension.
    ///
    /// ```
    /// use herald_client::OpenApiClient;
    ///
    /// let api = OpenApiClient::new("http://127.0.0.1:8080", "AK…", "SK…")?
    ///     .with_ack_timeout_ms(Some(2000));
    /// # let _ = api;
    /// # Ok::<(), herald_client::InvalidEndpoint>(())
    /// ```
    pub fn with_ack_timeout_ms(mut self, ms: Option<u32>) -> Self {
        self.ack_timeout_ms = ms;
        self
    }

    /// Sends an STS session token (`X-Security-Token`) with every request.
    pub fn with_session_token(mut self, token: &str) -> Self {
        self.session_token = Some(token.to_owned());
        self
    }

    /// `SendUnicast`: to user `to`, logged in anywhere in the app, outside any room.
    pub async fn send_unicast(
        &self,
        app_id: &str,
        from: &str,
        to: &str,
        message: Message,
    ) -> Result<ApiResponse, OpenApiError> {
        let body = send_body(app_id, None, from, Some(json!(to)), &message);
        self.send(Action::SendUnicast, &body).await
    }

    /// `SendRoomUnicast`: to user `to` in room `room_id`.
    pub async fn send_room_unicast(
        &self,
        app_id: &str,
        room_id: &str,
        from: &str,
        to: &str,
        message: Message,
    ) -> Result<ApiResponse, OpenApiError> {
        let body = send_body(app_id, Some(room_id), from, Some(json!(to)), &message);
        self.send(Action::SendRoomUnicast, &body).await
    }

    /// `BatchSendRoomUnicast`: to up to 600 users of room `room_id` (message ≤ 20 KiB).
    pub async fn batch_send_room_unicast<S: AsRef<str>>(
        &self,
        app_id: &str,
        room_id: &str,
        from: &str,
        to: &[S],
        message: Message,
    ) -> Result<ApiResponse, OpenApiError> {
        let to: Vec<&str> = to.iter().map(AsRef::as_ref).collect();
        let body = send_body(app_id, Some(room_id), from, Some(json!(to)), &message);
        self.send(Action::BatchSendRoomUnicast, &body).await
    }

    /// `SendBroadcast`: to everyone in room `room_id`.
    pub async fn send_broadcast(
        &self,
        app_id: &str,
        room_id: &str,
        from: &str,
        message: Message,
    ) -> Result<ApiResponse, OpenApiError> {
        let body = send_body(app_id, Some(room_id), from, None, &message);
        self.send(Action::SendBroadcast, &body).await
    }

    async fn send(&self, action: Action, body: &Value) -> Result<ApiResponse, OpenApiError> {
        self.call(action.as_str(), self.version.as_str(), body)
            .await
    }

    /// Calls any action: `POST /?Action={action}&Version={version}` with `body` as JSON, signed now.
    ///
    /// ```no_run
    /// # async fn run(api: herald_client::OpenApiClient) -> Result<(), herald_client::OpenApiError> {
    /// let r = api.call("SendUnicast", "2020-12-01", &serde_json::json!({
    ///     "AppId": "herald-dev-app-000000001", "From": "server_bot", "To": "u1",
    ///     "Binary": false, "Message": "hello",
    /// })).await?;
    /// assert_eq!(r.status, 200);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn call(
        &self,
        action: &str,
        version: &str,
        body: &Value,
    ) -> Result<ApiResponse, OpenApiError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.call_at(action, version, body, now).await
    }

    /// As [`OpenApiClient::call`], signed as of `now_unix` (seconds since the epoch), for servers
    /// whose clock is not the local one (tests stop the server's clock).
    pub async fn call_at(
        &self,
        action: &str,
        version: &str,
        body: &Value,
        now_unix: i64,
    ) -> Result<ApiResponse, OpenApiError> {
        // Serialising a Value cannot fail.
        let body = serde_json::to_vec(body).unwrap_or_default();
        let content_type = "application/json";
        let creds = Credentials {
            access_key: &self.access_key,
            secret_key: &self.secret_key,
            region: &self.region,
            service: SERVICE,
            session_token: self.session_token.as_deref(),
        };
        let query = [("Action", action), ("Version", version)];
        let base_headers = [("Host", self.host.as_str()), ("Content-Type", content_type)];
        let signed = sign_request(&creds, "POST", "/", &query, &base_headers, &body, now_unix);

        let url = format!("{}/?{}", self.base, encode_query(&query));
        let mut request = self.http.post(url).body(body);
        // Exactly the headers that were signed: reqwest adds no Host of its own when one is set.
        for (name, value) in base_headers {
            request = request.header(name, value);
        }
        for (name, value) in &signed {
            request = request.header(name.as_str(), value.as_str());
        }
        if self.delivery_report {
            // Not signed, as the vendor's SDKs leave extra headers.
            request = request.header("X-Herald-Delivery-Report", "true");
        }
        if let Some(ms) = self.ack_timeout_ms {
            request = request.header("X-Herald-Ack-Timeout-Ms", ms);
        }
        let response = request.send().await.map_err(OpenApiError::Transport)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response.bytes().await.map_err(OpenApiError::Transport)?;
        match serde_json::from_slice(&bytes) {
            Ok(body) => Ok(ApiResponse {
                status,
                body,
                retry_after,
            }),
            Err(_) => Err(OpenApiError::InvalidResponse {
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            }),
        }
    }
}

/// The HTTP client, with `tls` for `https://` endpoints.
fn http_client(tls: &Tls) -> reqwest::Client {
    let config = (*tls.rustls()).clone();
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .build()
        // reqwest refuses a preconfigured TLS only when it is not its own rustls version, which
        // the manifest pins; fall back to a client for plain `http://` rather than panic.
        .unwrap_or_default()
}

/// The JSON body of a messaging action, with the vendor's field names.
fn send_body(
    app_id: &str,
    room_id: Option<&str>,
    from: &str,
    to: Option<Value>,
    message: &Message,
) -> Value {
    let (binary, message) = message.wire();
    let mut body = Map::new();
    body.insert("AppId".into(), json!(app_id));
    if let Some(room) = room_id {
        body.insert("RoomId".into(), json!(room));
    }
    body.insert("From".into(), json!(from));
    if let Some(to) = to {
        body.insert("To".into(), to);
    }
    body.insert("Binary".into(), json!(binary));
    body.insert("Message".into(), json!(message));
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_the_vendor_fields() {
        let b = send_body(
            "a",
            None,
            "bot",
            Some(json!("u1")),
            &Message::Text("hi".into()),
        );
        assert_eq!(
            b,
            json!({"AppId":"a","From":"bot","To":"u1","Binary":false,"Message":"hi"})
        );
        let b = send_body(
            "a",
            Some("r"),
            "bot",
            Some(json!(["u1", "u2"])),
            &Message::Binary(b"hi".to_vec()),
        );
        assert_eq!(
            b,
            json!({"AppId":"a","RoomId":"r","From":"bot","To":["u1","u2"],"Binary":true,"Message":"aGk="})
        );
        let b = send_body("a", Some("r"), "bot", None, &Message::Base64("%%".into()));
        assert_eq!(
            b,
            json!({"AppId":"a","RoomId":"r","From":"bot","Binary":true,"Message":"%%"})
        );
    }

    #[test]
    fn endpoints() {
        let c = OpenApiClient::new("http://127.0.0.1:8080", "ak", "sk").unwrap();
        assert_eq!(
            (c.base.as_str(), c.host.as_str()),
            ("http://127.0.0.1:8080", "127.0.0.1:8080")
        );
        let c = OpenApiClient::new("http://example.com/", "ak", "sk").unwrap();
        assert_eq!(
            (c.base.as_str(), c.host.as_str()),
            ("http://example.com", "example.com")
        );
        for bad in [
            "127.0.0.1:8080",
            "ws://h",
            "http://h/api",
            "http://u@h",
            "http://h/?a=1",
            "",
        ] {
            assert!(OpenApiClient::new(bad, "ak", "sk").is_err(), "{bad}");
        }
    }

    #[test]
    fn response_helpers() {
        let r = ApiResponse {
            status: 400,
            body: json!({"ResponseMetadata":{"Error":{"Code":"InvalidParameter.IllegalFrom","Message":"x"}}}),
            retry_after: None,
        };
        assert!(!r.is_success());
        assert_eq!(r.error_code(), Some("InvalidParameter.IllegalFrom"));
    }
}
