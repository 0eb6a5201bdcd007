//! `server.max_header_bytes`, enforced by the proxy itself so that a client whose request line
//! and headers are too large gets a JSON answer naming the setting, a log line, a count and a
//! place on `/status` — not the empty 431 the HTTP layer sends on its own.
//!
//! The HTTP layer (hyper) gets a larger buffer than the limit ([`buffer_limit`]): a head up to
//! that size is read and measured here ([`size`]), and refused when over the limit. A head
//! beyond even that buffer (or with more than 100 header fields, hyper's own bound) is still
//! refused by hyper with an empty 431; the connection's error then says so, and the server
//! records it (see [`crate::refusal::refused_by_http_layer`]).

use axum::http::Request;

/// What the HTTP layer may buffer beyond `server.max_header_bytes` so that the proxy, not
/// hyper, answers an oversized head.
const SLACK: usize = 256 * 1024;

/// The HTTP/1.1 read buffer and HTTP/2 header-list limit for `max_header_bytes`.
pub(super) fn buffer_limit(max_header_bytes: usize) -> usize {
    max_header_bytes.saturating_add(SLACK)
}

/// The size of a request's head as HTTP/1.1 sends it: the request line, each header line and
/// the blank line. An HTTP/2 request is measured the same way, its authority as a `host`
/// header when it has none.
pub(super) fn size<B>(request: &Request<B>) -> usize {
    const LINE_END: usize = 2;
    let uri = request.uri();
    let target = uri.path_and_query().map_or(1, |p| p.as_str().len());
    // `GET /path HTTP/1.1`
    let mut size = request.method().as_str().len() + 1 + target + 1 + 8 + LINE_END;
    for (name, value) in request.headers() {
        // `name: value`
        size += name.as_str().len() + 2 + value.len() + LINE_END;
    }
    if let Some(authority) = uri.authority()
        && !request.headers().contains_key(axum::http::header::HOST)
    {
        size += "host: ".len() + authority.as_str().len() + LINE_END;
    }
    size + LINE_END
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_measured_as_http_1_1_writes_it() {
        let request = Request::post("/v1/chat/completions?x=1")
            .header("api-key", "k")
            .header("x-padding", "a".repeat(100))
            .body(())
            .unwrap();
        let wire = format!(
            "POST /v1/chat/completions?x=1 HTTP/1.1\r\napi-key: k\r\nx-padding: {}\r\n\r\n",
            "a".repeat(100)
        );
        assert_eq!(size(&request), wire.len());
        let h2 = Request::get("https://proxy.example:8443/status")
            .body(())
            .unwrap();
        assert_eq!(
            size(&h2),
            "GET /status HTTP/1.1\r\nhost: proxy.example:8443\r\n\r\n".len()
        );
    }

    #[test]
    fn the_buffer_leaves_room_to_answer_an_oversized_head() {
        assert_eq!(buffer_limit(8192), 8192 + SLACK);
        assert_eq!(buffer_limit(usize::MAX), usize::MAX);
    }
}
