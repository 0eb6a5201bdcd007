//! `POST /sts/v1.0/issueToken`, answered by the proxy: Speech and Translator clients (the Speech
//! SDKs' token flow, browsers) trade the key they hold for a 10-minute token, as they would at
//! Azure's `{region}.api.cognitive.microsoft.com/sts/v1.0/issueToken` or a custom domain's
//! `/sts/v1.0/issuetoken`. The token is the proxy's own (see `inbound::issued`): Azure never
//! sees the request, nor the token when it comes back.

use super::answer::principal_fields;
use crate::error::ProxyError;
use crate::inbound::Caller;
use crate::logging::access;
use crate::state::Snapshot;
use axum::http::header::{self, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse as _, Response};
use secrecy::ExposeSecret as _;
use std::time::Instant;

/// The path Speech and Translator clients fetch tokens from, compared without regard to case
/// (regional hosts write `issueToken`, custom domains `issuetoken`).
const ISSUE_TOKEN_PATH: &str = "/sts/v1.0/issuetoken";

/// Whether a request asks for a token: `POST /sts/v1.0/issueToken` (any case, a trailing `/`).
pub(super) fn is_issue_token(method: &Method, path: &str) -> bool {
    method == Method::POST
        && path
            .trim_end_matches('/')
            .eq_ignore_ascii_case(ISSUE_TOKEN_PATH)
}

/// The token for `caller`, as Azure's issueToken answers: the JWT as the whole body.
pub(super) fn answer(
    state: &Snapshot,
    caller: &Caller,
    request_id: &str,
    path: &str,
    started: Instant,
) -> Result<Response, ProxyError> {
    let issued = state.auth.issue_token(caller)?;
    state.recent.request(caller, 200);
    if let Some(mut line) = access::Fields::start() {
        line.text("request_id", request_id)
            .text("path", path)
            .display("caller", caller.label());
        principal_fields(&mut line, caller);
        line.number("status", 200)
            .number("expires_in", u64::try_from(issued.expires_in).unwrap_or(0))
            .number("took_ms", started.elapsed().as_millis() as u64)
            .write("token issued");
    }
    let mut response = (StatusCode::OK, issued.token.expose_secret().to_owned()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwt; charset=us-ascii"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_path_is_matched_in_any_case_and_only_for_post() {
        assert!(is_issue_token(&Method::POST, "/sts/v1.0/issueToken"));
        assert!(is_issue_token(&Method::POST, "/sts/v1.0/issuetoken/"));
        assert!(is_issue_token(&Method::POST, "/STS/V1.0/ISSUETOKEN"));
        assert!(!is_issue_token(&Method::GET, "/sts/v1.0/issueToken"));
        assert!(!is_issue_token(&Method::POST, "/sts/v1.0/issueToken/x"));
        assert!(!is_issue_token(&Method::POST, "/tts/sts/v1.0/issueToken"));
    }
}
