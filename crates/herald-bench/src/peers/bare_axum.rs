//! The local limit of the HTTP path: `herald-bench bare-axum`, an axum server whose handler takes
//! the same `SendUnicast` request as Herald (`POST /?Action=SendUnicast&Version=…` with the
//! vendor's JSON body) and answers the vendor's success envelope, with no signature check, no
//! validation and no delivery. Herald's signed calls per second are measured against its calls
//! per second (issue 3: at least 80%).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use anyhow::Context as _;
use axum::extract::Query;
use axum::routing::post;
use axum::{Json, Router};
use herald_proto::openapi::{Envelope, ResponseMetadata, SendResult, SERVICE};
use serde::Deserialize;

/// `?Action=…&Version=…`, echoed in the answer as Herald does.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ActionQuery {
    action: String,
    version: String,
}

/// The `SendUnicast` body, parsed and otherwise ignored (no validation is the point).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(dead_code)] // Parsed to do the same JSON work as Herald; deliberately not used.
struct SendUnicast {
    app_id: String,
    from: String,
    to: String,
    binary: bool,
    message: String,
}

static REQUESTS: AtomicU64 = AtomicU64::new(0);

async fn send_unicast(
    Query(q): Query<ActionQuery>,
    Json(_body): Json<SendUnicast>,
) -> Json<Envelope<SendResult>> {
    let n = REQUESTS.fetch_add(1, Relaxed);
    Json(Envelope {
        response_metadata: ResponseMetadata {
            request_id: format!("bare{n:020}"),
            action: q.action,
            version: q.version,
            service: SERVICE.to_owned(),
            region: "cn-north-1".to_owned(),
            error: None,
        },
        result: Some(SendResult {
            message: "Success".to_owned(),
        }),
    })
}

/// The router: `POST /` only.
pub fn router() -> Router {
    Router::new().route("/", post(send_unicast))
}

/// Serves on `listen` until killed. Prints `bare-axum listening on http://ADDR`.
pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!("bare-axum listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{signed_request, AccessKey, HttpConn};

    #[tokio::test]
    async fn answers_a_signed_send_unicast_with_the_vendor_envelope() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router()).await });
        let key = AccessKey {
            ak: "AK".into(),
            sk: "SK".into(),
        };
        let body = br#"{"AppId":"a","From":"bench_bot","To":"u1","Binary":false,"Message":"HBx"}"#;
        let mut conn = HttpConn::connect(addr).await.unwrap();
        for _ in 0..2 {
            let req = signed_request(&addr.to_string(), &key, "SendUnicast", body);
            let answer = conn.call(&req).await.unwrap();
            assert_eq!(answer.status, 200);
            let v: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
            assert_eq!(v["ResponseMetadata"]["Action"], "SendUnicast");
            assert_eq!(v["Result"]["Message"], "Success");
        }
    }
}
