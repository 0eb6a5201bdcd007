//! Building HTTP answers: JSON bodies with the headers Azure sends alongside them.

use axum::body::Body;
use axum::response::{IntoResponse as _, Response};
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};

use super::samples::{self, AzureSample, SampleContext};

pub(crate) const JSON: &str = "application/json; charset=utf-8";

/// A JSON answer; an out-of-range status becomes 500.
pub(crate) fn json(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(CONTENT_TYPE, JSON)], body).into_response()
}

pub(crate) fn json_value(status: u16, body: &serde_json::Value) -> Response {
    json(status, body.to_string())
}

/// An Azure error sample; throttling also gets Azure's retry headers.
pub(crate) fn sample(sample: AzureSample, ctx: &SampleContext) -> Response {
    let mut response = json(sample.status(), sample.body(ctx));
    if sample == AzureSample::Throttled429 {
        set_retry_after(&mut response, ctx.retry_after_secs.saturating_mul(1000));
    }
    response
}

/// A 429 for a scripted rate limit of `retry_after_ms`.
pub(crate) fn rate_limited(retry_after_ms: u64, ctx: &SampleContext) -> Response {
    let ctx = SampleContext {
        retry_after_secs: retry_after_ms.div_ceil(1000),
        ..ctx.clone()
    };
    let mut response = json(429, AzureSample::Throttled429.body(&ctx));
    set_retry_after(&mut response, retry_after_ms);
    response
}

/// The answer to a request still open when the emulator shuts down.
pub(crate) fn shutting_down() -> Response {
    json(503, samples::status_body(503))
}

/// A body that fails at once: the connection drops before any byte of it.
pub(crate) fn broken_body() -> Body {
    Body::from_stream(futures_util::stream::once(async {
        Err::<bytes::Bytes, _>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "emulated connection reset",
        ))
    }))
}

/// Sets a header, skipping values that are not valid header text.
pub(crate) fn set_header(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(name), value);
    }
}

fn set_retry_after(response: &mut Response, retry_after_ms: u64) {
    set_header(
        response,
        "retry-after",
        &retry_after_ms.div_ceil(1000).to_string(),
    );
    set_header(response, "retry-after-ms", &retry_after_ms.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_round_seconds_up_and_keep_milliseconds() {
        let r = rate_limited(1500, &SampleContext::default());
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "2");
        assert_eq!(r.headers()["retry-after-ms"], "1500");
        assert_eq!(json(42, String::new()).status(), 500);
        let r = sample(AzureSample::Throttled429, &SampleContext::default());
        assert_eq!(r.headers()["retry-after"], "1");
    }
}
