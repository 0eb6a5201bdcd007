//! WebSocket subprotocols as a credential: browsers cannot set headers on a WebSocket, so the
//! OpenAI JS SDK offers `openai-insecure-api-key.<key>` beside `realtime`. The key one is read
//! as the caller's key and never offered to Azure or echoed back.

use axum::http::HeaderMap;
use axum::http::header::SEC_WEBSOCKET_PROTOCOL;

/// The subprotocol prefix that carries a key.
pub const KEY_PREFIX: &str = "openai-insecure-api-key.";

/// Every subprotocol the client offers, trimmed, in order.
fn offered(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

/// The key offered as a subprotocol, if any.
pub fn key(headers: &HeaderMap) -> Option<&str> {
    offered(headers)
        .find_map(|p| p.strip_prefix(KEY_PREFIX))
        .filter(|k| !k.is_empty())
}

/// The subprotocols to offer Azure: the client's minus any carrying a key.
pub fn without_key(headers: &HeaderMap) -> Vec<&str> {
    offered(headers)
        .filter(|p| !p.starts_with(KEY_PREFIX))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn h(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn the_key_subprotocol_is_read_and_never_passed_on() {
        let headers = h("realtime, openai-insecure-api-key.ep-abc, openai-beta.realtime-v1");
        assert_eq!(key(&headers), Some("ep-abc"));
        assert_eq!(
            without_key(&headers),
            ["realtime", "openai-beta.realtime-v1"]
        );
        assert_eq!(key(&h("realtime")), None);
        assert_eq!(key(&h("openai-insecure-api-key.")), None);
        assert_eq!(
            without_key(&h("openai-insecure-api-key.k")),
            Vec::<&str>::new()
        );
        assert_eq!(key(&HeaderMap::new()), None);
    }
}
