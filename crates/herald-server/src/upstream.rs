//! The way out to the business server for `sendServerMessage` (spec §5.4, DECISIONS.md).
//!
//! One POST per message, no retry: the client asked for an answer and gets the business server's
//! own, or the vendor's code for why there is none. The URL was chosen by a client, so the request
//! is kept on a short leash: plain `http://` only, redirects never followed, the whole exchange
//! bounded by one timeout and the answer by [`MAX_ANSWER_BYTES`]. Whether the URL is allowed at all
//! is the gateway's check (the app's allow-list), made when `setServerParams` stored it.

use std::borrow::Cow;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use herald_proto::client::send_result;
use http::uri::Scheme;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// The largest business-server answer handed back to the client (the vendor's 64 KB).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// How long an idle pooled connection to a business server is kept.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// The HTTP/1 client of the edge's outgoing calls: plain TCP, pooled, no redirects (hyper's client
/// never follows them). Also used by the webhooks.
pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A new [`HttpClient`]. Needs a tokio runtime when used.
pub(crate) fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE)
        .build(connector)
}

/// The body the business server receives. Field order is the vendor documentation's.
#[derive(serde::Serialize)]
struct ServerMessage<'a> {
    message: Cow<'a, str>,
    binary: bool,
    signature: &'a str,
}

/// Posts client messages to business servers.
pub struct Upstream {
    client: HttpClient,
    timeout: Duration,
}

impl Upstream {
    /// A client whose every exchange (connect, request, whole answer) must finish within
    /// `timeout`; 5 s in production (DECISIONS.md).
    pub fn new(timeout: Duration) -> Self {
        Upstream {
            client: http_client(),
            timeout,
        }
    }

    /// POSTs `{"message", "binary", "signature"}` to `url`: `message` is the text, or the base64 of
    /// the bytes when `binary`. Like the vendor, sends no `Content-Type`; sends `User-Agent: herald`.
    ///
    /// `Ok(answer)` when the business server answers 200 with at most [`MAX_ANSWER_BYTES`];
    /// `Err(E2BS_RETURN_FAILED)` for any other status (redirects included: they are not followed)
    /// or a longer answer; `Err(E2BS_SEND_FAILED)` when there is no answer: not an `http://` URL,
    /// connection failure, or `timeout` passed.
    pub async fn post(
        &self,
        url: &str,
        signature: &str,
        message: &[u8],
        binary: bool,
    ) -> Result<Bytes, i32> {
        let uri: Uri = url.parse().map_err(|_| send_result::E2BS_SEND_FAILED)?;
        if uri.scheme() != Some(&Scheme::HTTP) || uri.host().is_none() {
            return Err(send_result::E2BS_SEND_FAILED);
        }
        let message = if binary {
            Cow::Owned(BASE64.encode(message))
        } else {
            String::from_utf8_lossy(message)
        };
        let body = serde_json::to_vec(&ServerMessage {
            message,
            binary,
            signature,
        })
        .map_err(|_| send_result::E2BS_SEND_FAILED)?;
        let request = Request::post(uri)
            .header(header::USER_AGENT, "herald")
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| send_result::E2BS_SEND_FAILED)?;
        tokio::time::timeout(self.timeout, self.exchange(request))
            .await
            .unwrap_or_else(|_elapsed| {
                tracing::debug!(url, "business server did not answer in time");
                Err(send_result::E2BS_SEND_FAILED)
            })
    }

    async fn exchange(&self, request: Request<Full<Bytes>>) -> Result<Bytes, i32> {
        let response = self.client.request(request).await.map_err(|e| {
            tracing::debug!(error = %e, "business server unreachable");
            send_result::E2BS_SEND_FAILED
        })?;
        if response.status() != StatusCode::OK {
            return Err(send_result::E2BS_RETURN_FAILED);
        }
        match Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
        {
            Ok(answer) => Ok(answer.to_bytes()),
            Err(e) if e.is::<LengthLimitError>() => Err(send_result::E2BS_RETURN_FAILED),
            // The answer was cut off: the business server's answer never fully arrived.
            Err(_) => Err(send_result::E2BS_SEND_FAILED),
        }
    }
}
