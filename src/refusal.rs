//! The proxy's own refusals, answered and recorded where people look: the client gets the
//! OpenAI/Azure-shaped JSON body of [`ProxyError`], the access log a `rejected` line, `/metrics`
//! one more in `entra_proxy_rejected_requests_total{code}`, and `/status` the refusal with its
//! fix, in a list of its own beside Azure's diagnoses. Every path that answers with a
//! `ProxyError` — the proxying handler, the admin endpoints, the server's header-size check —
//! answers through [`answer`].

use crate::error::ProxyError;
use crate::inbound::Caller;
use crate::inbound::query::Masked;
use crate::logging::access;
use crate::telemetry::recent::{Recent, RefusalRecord};
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};

/// The request being refused, as far as it is known.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refused<'a> {
    pub(crate) request_id: &'a str,
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a Uri,
    /// The caller, when its credential was accepted before the refusal.
    pub(crate) caller: Option<&'a Caller>,
}

/// Logs, counts and records `e`, and returns the client's answer to it.
pub(crate) fn answer(recent: &Recent, e: ProxyError, refused: Refused<'_>) -> Response {
    let status = e.status().as_u16();
    let code = e.code();
    let caller = refused.caller.map(|c| c.label().to_string());
    log(&e, &refused, caller.as_deref());
    crate::telemetry::count_rejected(code);
    if let Some(c) = refused.caller {
        // A known caller's refusals count in its requests and errors like Azure's answers do.
        recent.request(c, status);
    }
    recent.refusal(RefusalRecord::new(
        refused.request_id,
        caller,
        refused.method.as_str(),
        refused.uri.path(),
        status,
        code,
        e.fix(),
    ));
    e.into_response()
}

/// A request head the HTTP layer refused with its own, empty 431 before the proxy could read
/// it (over even the buffer [`crate::server`] gives it, or more than 100 header fields): hyper
/// has answered; this logs, counts and records it.
pub(crate) fn refused_by_http_layer(recent: &Recent, request_id: &str, limit: usize) {
    const CODE: &str = "headers_too_large";
    if let Some(mut line) = access::Fields::start() {
        line.text("request_id", request_id)
            .quoted("caller", "-")
            .number("status", 431)
            .text("code", CODE)
            .display(
                "error",
                format_args!(
                    "the HTTP layer refused a request head far over the limit of {limit} bytes (server.max_header_bytes), or with more than 100 header fields"
                ),
            )
            .write("rejected");
    }
    crate::telemetry::count_rejected(CODE);
    recent.refusal(RefusalRecord::new(
        request_id,
        None,
        "-",
        "-",
        431,
        CODE,
        crate::error::fix_for(CODE),
    ));
}

/// The access log's `rejected` line: the request (its query masked), the caller when known,
/// the status, the error code and the message.
fn log(e: &ProxyError, refused: &Refused<'_>, caller: Option<&str>) {
    let Some(mut line) = access::Fields::start() else {
        return;
    };
    line.text("request_id", refused.request_id)
        .text("method", refused.method.as_str())
        .text("path", refused.uri.path());
    if let Some(query) = refused.uri.query() {
        line.display("query", Masked(query));
    }
    line.quoted("caller", caller.unwrap_or("-"))
        .number("status", e.status().as_u16().into())
        .text("code", e.code())
        .display("error", e)
        .write("rejected");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_recorded_with_its_code_and_fix_and_answered_as_json() {
        let recent = Recent::default();
        let uri: Uri = "/v1/chat/completions?api-key=secret-in-query"
            .parse()
            .unwrap();
        let response = answer(
            &recent,
            ProxyError::BodyTooLarge { limit: 10 },
            Refused {
                request_id: "rid-1",
                method: &Method::POST,
                uri: &uri,
                caller: None,
            },
        );
        assert_eq!(response.status().as_u16(), 413);
        let r = &recent.refusals()[0];
        assert_eq!(
            (r.request_id.as_str(), r.code.as_str(), r.status),
            ("rid-1", "body_too_large", 413)
        );
        assert_eq!(r.path, "/v1/chat/completions");
        assert_eq!(r.caller, None);
        assert!(r.fix.contains("max_body_bytes"), "{r:?}");
        assert!(!format!("{r:?}").contains("secret-in-query"));
    }
}
