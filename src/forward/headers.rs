//! Which headers cross the proxy: the client's minus credentials (and the region a key goes
//! with), hop-by-hop headers and proxy controls on the way in; Azure's minus hop-by-hop headers on the way out; the request id.

use super::REQUEST_ID;
use crate::inbound::{API_KEY, SUBSCRIPTION_KEY};
use crate::routing::BACKEND_HEADER;
use crate::services::REGION_HEADER;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Azure's request id header, which its logs and support tickets quote.
const CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-client-request-id");

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus `host`.
const HOP_BY_HOP: [HeaderName; 10] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
];

/// The client's request id when it sent a sane one, else a new one.
pub(crate) fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(new_request_id)
}

/// A process-unique id: a random per-process prefix and a counter (no system call per request).
fn new_request_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_string());
    let mut id = String::with_capacity(prefix.len() + 17);
    id.push_str(prefix);
    id.push('-');
    push_hex(&mut id, COUNTER.fetch_add(1, Ordering::Relaxed));
    id
}

/// Appends `n` in lower-case hex without leading zeros, as `{:x}` would, without the
/// formatting machinery (this runs for every request without an id).
fn push_hex(out: &mut String, n: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (u64::BITS - (n | 1).leading_zeros()).div_ceil(4);
    for i in (0..digits).rev() {
        out.push(char::from(HEX[((n >> (4 * i)) & 0xf) as usize]));
    }
}

/// Copies the client's headers minus credentials, hop-by-hop headers and proxy controls.
pub fn upstream_headers(incoming: &HeaderMap, request_id: &str) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(incoming.len() + 2);
    let connection_listed = connection_listed(incoming);
    for (name, value) in incoming {
        if HOP_BY_HOP.contains(name)
            || name == API_KEY
            || name == SUBSCRIPTION_KEY
            || name == header::AUTHORIZATION
            || name == header::CONTENT_LENGTH
            || name == BACKEND_HEADER
            || name == REGION_HEADER
            || connection_listed.contains(name)
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    if !out.contains_key(CLIENT_REQUEST_ID)
        && let Ok(v) = HeaderValue::from_str(request_id)
    {
        out.insert(CLIENT_REQUEST_ID, v);
    }
    out
}

/// The header names a `Connection` header lists: they too describe only that connection.
/// Names already hop-by-hop (`keep-alive`, the usual one) are left out: they go anyway, and a
/// name not among the standard ones costs an allocation to make.
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| {
            !HOP_BY_HOP
                .iter()
                .any(|h| h.as_str().eq_ignore_ascii_case(s))
        })
        .filter_map(|s| HeaderName::from_bytes(s.as_bytes()).ok())
        .collect()
}

/// Azure's headers minus hop-by-hop ones (and those its `Connection` header lists), edited in
/// place. Azure seldom sends any, so the map is only edited when one is there.
pub(super) fn downstream_headers(mut headers: HeaderMap) -> HeaderMap {
    if headers.keys().any(|n| HOP_BY_HOP.contains(n)) {
        for name in connection_listed(&headers) {
            headers.remove(name);
        }
        for name in &HOP_BY_HOP {
            headers.remove(name);
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|&(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
            .collect()
    }

    fn sorted_names(h: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn credentials_and_hop_by_hop_headers_are_stripped() {
        let h = headers(&[
            ("api-key", "secret"),
            ("ocp-apim-subscription-key", "secret"),
            ("authorization", "Bearer secret"),
            ("connection", "keep-alive, x-custom-hop"),
            ("x-custom-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("host", "proxy"),
            ("x-entra-proxy-backend", "a"),
            ("ocp-apim-subscription-region", "eastus"),
            ("content-type", "application/json"),
            ("accept", "text/event-stream"),
        ]);
        let out = upstream_headers(&h, "rid-1");
        assert_eq!(
            sorted_names(&out),
            ["accept", "content-type", "x-ms-client-request-id"]
        );
        assert_eq!(out["x-ms-client-request-id"], "rid-1");
    }

    #[test]
    fn hop_by_hop_headers_from_azure_are_dropped_and_the_rest_kept() {
        let kept = headers(&[
            ("content-type", "application/json"),
            ("apim-request-id", "a1"),
        ]);
        assert_eq!(downstream_headers(kept.clone()), kept);

        let mut h = kept;
        h.extend(headers(&[
            ("connection", "keep-alive, X-Azure-Hop"),
            ("x-azure-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
        ]));
        let out = downstream_headers(h);
        assert_eq!(sorted_names(&out), ["apim-request-id", "content-type"]);
    }

    #[test]
    fn a_connection_header_lists_only_names_not_already_hop_by_hop() {
        let h = headers(&[("connection", "Keep-Alive, close,X-Hop , te")]);
        let listed = connection_listed(&h);
        let names: Vec<&str> = listed.iter().map(HeaderName::as_str).collect();
        assert_eq!(names, ["close", "x-hop"]);
    }

    #[test]
    fn request_ids_are_kept_when_sane() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&h), "has space");
    }

    #[test]
    fn new_request_ids_count_in_hex() {
        for n in [
            0,
            1,
            9,
            10,
            15,
            16,
            255,
            256,
            0xdead_beef,
            u64::MAX >> 4,
            u64::MAX,
        ] {
            let mut out = String::new();
            push_hex(&mut out, n);
            assert_eq!(out, format!("{n:x}"));
        }
        let (a, b) = (new_request_id(), new_request_id());
        let (prefix, count) = a.split_once('-').expect("prefix-counter");
        assert_eq!(prefix.len(), 12);
        let (same_prefix, later) = b.split_once('-').expect("prefix-counter");
        assert_eq!(same_prefix, prefix);
        assert!(u64::from_str_radix(later, 16).unwrap() > u64::from_str_radix(count, 16).unwrap());
    }
}
