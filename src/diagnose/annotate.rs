//! Reads an Azure error answer (bounded), classifies it, and hands back the body unchanged with
//! a one-line diagnosis for the `x-entra-proxy-diagnosis` header and the log.

use super::Upstream;
use crate::claims::Claims;
use axum::body::Body;
use axum::http::StatusCode;
use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::BodyExt as _;

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
    upstream: crate::upstream::Response,
    facts: &Upstream<'_>,
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
    if crate::upstream::content_length(&upstream).is_some_and(|l| l > MAX_DIAGNOSED_BODY as u64) {
        return (Body::new(upstream.into_body()), None);
    }
    let mut body = upstream.into_body();
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                let Ok(chunk) = frame.into_data() else {
                    continue;
                };
                buf.extend_from_slice(&chunk);
                if buf.len() > MAX_DIAGNOSED_BODY {
                    // Too big to explain: send what we have and the rest as it comes.
                    let head = futures_util::stream::once(async move {
                        Ok::<_, crate::upstream::BoxError>(Bytes::from(buf))
                    });
                    let rest = http_body_util::BodyDataStream::new(body);
                    return (Body::from_stream(head.chain(rest)), None);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "upstream error body ended early");
                break;
            }
        }
    }
    let diagnosis = super::classify_for_route(facts, status, retry_after.as_deref(), &buf, claims);
    (Body::from(buf), diagnosis)
}
