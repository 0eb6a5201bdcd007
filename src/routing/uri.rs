//! The upstream URI: the backend's base, re-encoded segments, the client's query, `api-version`.

use crate::config::Backend;
use crate::error::ProxyError;
use http::Uri;

/// The api-version a realtime WebSocket on Azure's deployment API gets when the client named
/// none (the backend's default is usually a GA version without realtime).
pub const REALTIME_API_VERSION: &str = "2025-04-01-preview";

/// The backend base plus path segments (re-encoded), with the client's query as it came and,
/// where the deployment API needs it, the backend's default `api-version`. Built as one string
/// and parsed once: this runs for every proxied request.
pub(super) fn upstream_uri(
    b: &Backend,
    segments: &[&str],
    query: Option<&str>,
    needs_api_version: bool,
) -> Result<Uri, ProxyError> {
    let base = b.endpoint.as_str().trim_end_matches('/');
    let query = query.filter(|q| !q.is_empty());
    let mut out = String::with_capacity(
        base.len()
            + segments.iter().map(|s| s.len() + 1).sum::<usize>()
            + query.map_or(0, |q| q.len() + 1)
            + "&api-version=".len()
            + b.api_version.len(),
    );
    out.push_str(base);
    for segment in segments {
        out.push('/');
        push_encoded_segment(&mut out, segment);
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    let has_version = query.is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "api-version")
    });
    if needs_api_version && !has_version {
        out.push(if query.is_some() { '&' } else { '?' });
        out.push_str("api-version=");
        out.extend(url::form_urlencoded::byte_serialize(
            b.api_version.as_bytes(),
        ));
    }
    Uri::try_from(out).map_err(|e| ProxyError::NoRoute {
        path: segments.join("/"),
        hint: format!("the upstream URL is not a valid request target ({e})"),
    })
}

/// Appends one decoded path segment, percent-encoding what a segment may not hold as is (the
/// same set as the WHATWG URL path-segment encoder: controls, non-ASCII, space and
/// `"#%/<>?\`{}`).
fn push_encoded_segment(out: &mut String, segment: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let plain = |byte: u8| {
        byte.is_ascii_graphic()
            && !matches!(
                byte,
                b'"' | b'#' | b'%' | b'/' | b'<' | b'>' | b'?' | b'\\' | b'`' | b'{' | b'}'
            )
    };
    let mut rest = segment;
    // Runs of plain bytes are copied whole: most segments are one run.
    while let Some(at) = rest.bytes().position(|b| !plain(b)) {
        out.push_str(&rest[..at]);
        // Every byte of a non-ASCII character is encoded, so the cut below stays on a
        // character boundary.
        let end = at + rest[at..].chars().next().map_or(1, char::len_utf8);
        for &byte in &rest.as_bytes()[at..end] {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
}

/// A query parameter's decoded value; its name is matched in any letter case, as Azure reads
/// it.
pub(super) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.into_owned())
}

/// Refuses a query that names one of `names` more than once in any letter case (decoded):
/// Azure reads query names without regard to case, so the one the proxy did not rewrite could
/// be the one Azure uses.
pub(super) fn named_once(query: Option<&str>, names: &[&'static str]) -> Result<(), ProxyError> {
    let Some(query) = query else {
        return Ok(());
    };
    for name in names {
        let count = url::form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .count();
        if count > 1 {
            return Err(ProxyError::DuplicateParameter {
                name,
                place: "query",
            });
        }
    }
    Ok(())
}

/// The query with `name` set to `value` (replacing it where it was, else appended) and `drop`
/// removed; the other parameters are kept in order, as encoded.
pub(super) fn with_param(
    query: Option<&str>,
    name: &str,
    drop: Option<&str>,
    value: &str,
) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
    let is = |pair: &str, n: &str| {
        let raw = pair.split_once('=').map_or(pair, |(k, _)| k);
        url::form_urlencoded::parse(raw.as_bytes())
            .next()
            .is_some_and(|(k, _)| k.eq_ignore_ascii_case(n))
    };
    let mut out: Vec<String> = Vec::new();
    let mut set = false;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        if drop.is_some_and(|d| is(pair, d)) {
            continue;
        }
        if is(pair, name) {
            if !set {
                out.push(format!("{name}={encoded}"));
                set = true;
            }
            continue;
        }
        out.push(pair.to_string());
    }
    if !set {
        out.push(format!("{name}={encoded}"));
    }
    out.join("&")
}

/// The query as sent, with `api-version=`[`REALTIME_API_VERSION`] added after it unless it
/// names one: the realtime surfaces of the deployment API (the WebSocket and preview ephemeral
/// sessions) need a preview version the backend's default usually is not.
pub(super) fn with_realtime_version(query: Option<&str>) -> String {
    let query = query.unwrap_or_default();
    if query_param(Some(query), "api-version").is_some() {
        query.to_string()
    } else {
        let sep = if query.is_empty() { "" } else { "&" };
        format!("{query}{sep}api-version={REALTIME_API_VERSION}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::testing::{route, table};

    #[test]
    fn segments_are_encoded_like_the_url_standard_and_always_parse() {
        let t = table("");
        let b = &t.backends().iter().next().unwrap().config;
        let tricky = [
            "plain-name_1.2~x",
            "my dep",
            "caf\u{e9}",
            "100%",
            "a?b#c",
            "quote\"<x>`{y}`",
            "sub-delims!$&'()*+,;=:@",
            "odd[]|^",
            "control\u{1}del\u{7f}",
            "runs \u{1f600}of\u{e9}%plain",
        ];
        for segment in tricky {
            let ours = upstream_uri(b, &["openai", "deployments", segment], None, false)
                .unwrap_or_else(|e| panic!("{segment:?}: {e}"));
            let mut reference = b.endpoint.clone();
            reference
                .path_segments_mut()
                .unwrap()
                .pop_if_empty()
                .extend(["openai", "deployments", segment]);
            // Same bytes on the wire, except that we also encode what `http` may refuse.
            let decode = |p: &str| {
                url::form_urlencoded::parse(format!("x={}", p.replace('+', "%2B")).as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
            };
            assert_eq!(
                decode(ours.path()),
                decode(reference.path()),
                "{segment:?}: {ours} vs {reference}"
            );
        }
        // The URL parser drops tabs and newlines; a proxy must not change the name it was given.
        let tab = upstream_uri(b, &["a\tb\nc"], None, false).unwrap();
        assert_eq!(tab.path(), "/a%09b%0Ac");
        let mixed = upstream_uri(b, &["x \u{e9}\u{1f600}y%"], None, false).unwrap();
        assert_eq!(mixed.path(), "/x%20%C3%A9%F0%9F%98%80y%25");
    }

    #[test]
    fn the_client_query_passes_as_sent_and_api_version_is_added_after_it() {
        let t = table("");
        let r = route(
            &t,
            "/openai/deployments/gpt-4o/chat/completions",
            Some("a=1&b=%20x"),
            None,
        )
        .unwrap();
        assert_eq!(r.uri.query(), Some("a=1&b=%20x&api-version=2024-10-21"));
        let r = route(
            &t,
            "/openai/deployments/gpt-4o/chat/completions",
            Some("api%2Dversion=2025-01-01-preview"),
            None,
        )
        .unwrap();
        assert_eq!(
            r.uri.query(),
            Some("api%2Dversion=2025-01-01-preview"),
            "an encoded api-version counts as present"
        );
        let r = route(
            &t,
            "/openai/deployments/gpt-4o/chat/completions",
            Some(""),
            None,
        )
        .unwrap();
        assert_eq!(r.uri.query(), Some("api-version=2024-10-21"));
    }
}
