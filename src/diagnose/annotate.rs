//! Reads an Azure error answer (bounded), classifies it, and hands back the body unchanged with
//! a one-line diagnosis for the `x-entra-proxy-diagnosis` header and the log.

use crate::claims::Claims;
use crate::routing::Route;
use crate::server::AppState;
use axum::body::Body;
use axum::http::StatusCode;
use bytes::Bytes;
use futures_util::StreamExt as _;

/// Response header carrying the one-line diagnosis.
pub const DIAGNOSIS_HEADER: &str = "x-entra-proxy-diagnosis";

/// Error bodies larger than this are passed through without a diagnosis.
const MAX_DIAGNOSED_BODY: usize = 64 * 1024;

/// Whether an upstream status is one the proxy explains.
pub fn wants(status: StatusCode) -> bool {
    matches!(status.as_u16(), 400 | 401 | 403 | 404 | 429)
}

/// Buffers the (small) error body, classifies it and returns it unchanged.
pub async fn annotate(
    state: &AppState,
    upstream: reqwest::Response,
    route: &Route,
    claims: Option<&Claims>,
) -> (Body, Option<String>) {
    let status = upstream.status().as_u16();
    let retry_after = upstream
        .headers()
        .get("retry-after-ms")
        .map(|v| (v, true))
        .or_else(|| upstream.headers().get("retry-after").map(|v| (v, false)))
        .and_then(|(v, ms)| {
            v.to_str()
                .ok()
                .map(|s| if ms { format!("{s}ms") } else { s.to_string() })
        });
    if upstream
        .content_length()
        .is_some_and(|l| l > MAX_DIAGNOSED_BODY as u64)
    {
        let stream = upstream
            .bytes_stream()
            .map(|r| r.map_err(std::io::Error::other));
        return (Body::from_stream(stream), None);
    }
    let mut buf = Vec::new();
    let mut stream = upstream.bytes_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                buf.extend_from_slice(&c);
                if buf.len() > MAX_DIAGNOSED_BODY {
                    // Too big to explain: send what we have and the rest as it comes.
                    let head = futures_util::stream::once(async move {
                        Ok::<_, std::io::Error>(Bytes::from(buf))
                    });
                    let rest = stream.map(|r| r.map_err(std::io::Error::other));
                    return (Body::from_stream(head.chain(rest)), None);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "upstream error body ended early");
                break;
            }
        }
    }
    let diagnosis =
        super::classify_for_route(state, status, retry_after.as_deref(), &buf, route, claims);
    (Body::from(buf), diagnosis)
}
