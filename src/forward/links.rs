//! Links in Azure's answers that point back at the backend — `Operation-Location`, `Location`
//! and `Azure-AsyncOperation` headers of long-running operations, `nextLink` /
//! `@odata.nextLink` (and `self`) URLs in JSON pages — rewritten to the proxy's external URL, so
//! a client polls and pages through the proxy with the credential it has, not at Azure, where
//! it holds none.
//!
//! A link is rewritten only when it is an absolute URL on the backend's own origin — the same
//! scheme, host and port, compared as parsed URLs, never as a prefix of text — and under the
//! backend's base path. Anything else (another resource, a blob SAS URL, a host that merely
//! starts with the backend's name) is left as it is, byte for byte.
//!
//! JSON bodies are read only when they are small enough (a declared `Content-Length` up to
//! [`MAX_LINKED_BODY`]), on services whose answers carry such links, and they are changed only
//! when the backend's host occurs in them at all (one substring search first): then each JSON
//! string that is such a URL is replaced, and every other byte stays as Azure sent it.
//! Everything else streams through untouched.

use super::exchange::Exchange;
use super::http::Attempted;
use crate::routing::Route;
use crate::services::Service;
use crate::upstream;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use url::Url;

/// Largest JSON answer read to rewrite its links.
const MAX_LINKED_BODY: u64 = 2 * 1024 * 1024;

/// The headers of long-running operations and created resources that can point at the backend.
const LINK_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("operation-location"),
    header::LOCATION,
    HeaderName::from_static("azure-asyncoperation"),
];

/// Where links to a backend go instead: the proxy's external base URL.
pub(super) struct Rewrite<'a> {
    /// The backend's endpoint (origin and base path).
    backend: &'a Url,
    /// The proxy's external base, without a trailing `/` (`https://ai.contoso.com`).
    public: String,
}

impl<'a> Rewrite<'a> {
    /// Links to `backend` rewritten to `public_url`, else to `http://{authority}` — the
    /// request's own `Host`, over the listener's scheme (plain HTTP; behind a TLS-terminating
    /// ingress set `[server] public_url`). `None` when there is no usable authority.
    pub(super) fn new(
        backend: &'a Url,
        public_url: Option<&Url>,
        authority: Option<&str>,
    ) -> Option<Rewrite<'a>> {
        let public = match public_url {
            Some(url) => url.as_str().trim_end_matches('/').to_string(),
            None => {
                let authority = authority?;
                // A Host header that is not an authority (a path, spaces) is not written into
                // anyone's links.
                let parsed = authority.parse::<http::uri::Authority>().ok()?;
                if parsed.as_str().contains('@') {
                    return None;
                }
                format!("http://{parsed}")
            }
        };
        Some(Rewrite { backend, public })
    }

    /// `link` on the proxy, when it is an absolute URL on the backend's origin under its base
    /// path; `None` for anything else.
    pub(super) fn url(&self, link: &str) -> Option<String> {
        let parsed = Url::parse(link).ok()?;
        let same_origin = parsed.scheme() == self.backend.scheme()
            && parsed.host_str().is_some()
            && parsed.host_str() == self.backend.host_str()
            && parsed.port_or_known_default() == self.backend.port_or_known_default()
            && parsed.username().is_empty()
            && parsed.password().is_none();
        if !same_origin {
            return None;
        }
        // The text after the authority, as written: path, query and fragment keep their bytes.
        let after_scheme = link.split_once("://")?.1;
        let tail = after_scheme
            .find(['/', '?', '#'])
            .map_or("", |at| &after_scheme[at..]);
        let base = self.backend.path().trim_end_matches('/');
        let rest = match tail.strip_prefix(base) {
            Some(rest)
                if base.is_empty() || rest.is_empty() || rest.starts_with(['/', '?', '#']) =>
            {
                rest
            }
            _ => return None,
        };
        Some(format!("{}{rest}", self.public))
    }

    /// Rewrites the link headers of an answer in place.
    pub(super) fn headers(&self, headers: &mut HeaderMap) {
        for name in &LINK_HEADERS {
            let Some(new) = headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| self.url(v.trim()))
                .and_then(|v| HeaderValue::from_str(&v).ok())
            else {
                continue;
            };
            headers.insert(name.clone(), new);
        }
    }

    /// A JSON body with every string that is a link to the backend rewritten; `None` when
    /// nothing changed (or the body is not JSON text).
    pub(super) fn json(&self, body: &[u8]) -> Option<Vec<u8>> {
        let text = std::str::from_utf8(body).ok()?;
        let host = self.backend.host_str()?;
        if !text.contains(host) {
            return None;
        }
        let mut out = String::with_capacity(text.len() + 64);
        let mut copied = 0;
        let mut changed = false;
        for (start, end) in strings(text.as_bytes())? {
            let raw = &text[start..end];
            let inner = &raw[1..raw.len() - 1];
            if !(inner.starts_with("http") && is_value(text.as_bytes(), end)) {
                continue;
            }
            let Some(new) = serde_json::from_str::<String>(raw)
                .ok()
                .filter(|s| !s.contains(char::is_whitespace))
                .and_then(|s| self.url(&s))
                .and_then(|s| serde_json::to_string(&s).ok())
            else {
                continue;
            };
            out.push_str(&text[copied..start]);
            out.push_str(&new);
            copied = end;
            changed = true;
        }
        if !changed {
            return None;
        }
        out.push_str(&text[copied..]);
        Some(out.into_bytes())
    }
}

/// The byte ranges (quotes included) of every JSON string in `json`; `None` when a string is
/// left open.
fn strings(json: &[u8]) -> Option<Vec<(usize, usize)>> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < json.len() {
        if json[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        loop {
            match json.get(i)? {
                b'\\' => i += 2,
                b'"' => break,
                _ => i += 1,
            }
        }
        i += 1;
        found.push((start, i));
    }
    Some(found)
}

/// Whether the string ending at `end` is a value (not followed by `:`, which makes it a key).
fn is_value(json: &[u8], end: usize) -> bool {
    json[end..]
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_none_or(|b| *b != b':')
}

/// Whether an answer on `route` may carry links to its backend in a JSON body: every service
/// but OpenAI, and OpenAI's batch and file endpoints.
pub(super) fn body_may_link(service: Service, path: &str) -> bool {
    match service {
        // Split as bytes: every chat completion passes here.
        Service::OpenAi => path
            .as_bytes()
            .split(|b| *b == b'/')
            .any(|s| s.eq_ignore_ascii_case(b"batches") || s.eq_ignore_ascii_case(b"files")),
        Service::Speech | Service::Translator | Service::Search | Service::Cognitive => true,
    }
}

/// Whether a content type is JSON (`application/json`, `…+json`).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let mime = v.split(';').next().unwrap_or_default().trim();
            mime.eq_ignore_ascii_case("application/json")
                || mime.to_ascii_lowercase().ends_with("+json")
        })
        .unwrap_or(false)
}

impl Exchange<'_> {
    /// Where links to `route`'s backend go, if anywhere.
    fn rewrite_for(&self, route: &Route) -> Option<Rewrite<'_>> {
        let backend = &self.backend(route).config;
        Rewrite::new(
            &backend.endpoint,
            self.state.config.server.public_url.as_ref(),
            self.authority,
        )
    }

    /// Rewrites the link headers of Azure's answer on `route`; says whether its body is worth
    /// reading for links too ([`Exchange::rewrite_body`]).
    pub(super) fn rewrite_links(&self, response: &mut upstream::Response, route: &Route) -> bool {
        // Most answers (every chat completion) have neither: nothing is built for them.
        let link_header = LINK_HEADERS
            .iter()
            .any(|name| response.headers().contains_key(name));
        let body = response.status().is_success()
            && body_may_link(self.backend(route).config.service, route.uri.path())
            && is_json(response.headers())
            && upstream::content_length(response).is_some_and(|n| n > 0 && n <= MAX_LINKED_BODY);
        if !link_header && !body {
            return false;
        }
        let Some(rewrite) = self.rewrite_for(route) else {
            return false;
        };
        rewrite.headers(response.headers_mut());
        body
    }

    /// Reads a small JSON answer and rewrites its links. A body that breaks off (or stalls
    /// past `upstream.idle_timeout_secs`) goes on as far as it came, under its announced
    /// length, so the client sees it cut as it would have.
    pub(super) async fn rewrite_body<'r>(&self, mut a: Attempted<'r>) -> Attempted<'r> {
        let Some(rewrite) = self.rewrite_for(a.route) else {
            return a;
        };
        let placeholder =
            upstream::with_read_body(http::Response::new(()).into_parts().0, Bytes::new());
        let (mut head, mut body) = std::mem::replace(&mut a.response, placeholder).into_parts();
        let mut read = Vec::new();
        let idle = self.state.config.upstream.idle_timeout;
        loop {
            match tokio::time::timeout(idle, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        read.extend_from_slice(&data);
                    }
                }
                Ok(None) => break,
                Ok(Some(Err(_))) | Err(_) => {
                    tracing::warn!("an answer whose links were to be rewritten broke off");
                    a.response = upstream::with_read_body(head, Bytes::from(read));
                    return a;
                }
            }
        }
        let body = match rewrite.json(&read) {
            Some(new) => {
                head.headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(new.len()));
                Bytes::from(new)
            }
            None => Bytes::from(read),
        };
        a.response = upstream::with_read_body(head, body);
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(backend: &str) -> (Url, Option<Url>) {
        (Url::parse(backend).unwrap(), None)
    }

    #[test]
    fn links_on_the_backends_origin_move_to_the_proxy() {
        let (b, _) = rewrite("https://myres.cognitiveservices.azure.com/");
        let r = Rewrite::new(&b, None, Some("proxy.local:8080")).unwrap();
        assert_eq!(
            r.url("https://myres.cognitiveservices.azure.com/documentintelligence/documentModels/m/analyzeResults/r?api-version=2024-11-30").as_deref(),
            Some("http://proxy.local:8080/documentintelligence/documentModels/m/analyzeResults/r?api-version=2024-11-30")
        );
        assert_eq!(
            r.url("https://MyRes.CognitiveServices.azure.com:443/x%2Fy?a=%20b#f")
                .as_deref(),
            Some("http://proxy.local:8080/x%2Fy?a=%20b#f")
        );
        assert_eq!(
            r.url("https://myres.cognitiveservices.azure.com")
                .as_deref(),
            Some("http://proxy.local:8080")
        );
        let public = Url::parse("https://ai.contoso.com/").unwrap();
        let r = Rewrite::new(&b, Some(&public), Some("ignored:1")).unwrap();
        assert_eq!(
            r.url("https://myres.cognitiveservices.azure.com/a?b")
                .as_deref(),
            Some("https://ai.contoso.com/a?b")
        );
    }

    #[test]
    fn links_anywhere_else_are_left_alone() {
        let (b, _) = rewrite("https://myres.cognitiveservices.azure.com/");
        let r = Rewrite::new(&b, None, Some("proxy:1")).unwrap();
        for other in [
            "https://myres.cognitiveservices.azure.com.evil.example/x",
            "https://myres.cognitiveservices.azure.com.evil.example",
            "https://other-resource.cognitiveservices.azure.com/x",
            "http://myres.cognitiveservices.azure.com/x",
            "https://myres.cognitiveservices.azure.com:8443/x",
            "https://user@myres.cognitiveservices.azure.com/x",
            "https://emulatorstore.blob.core.windows.net/c/r.json?sv=1&sig=abc",
            "/documentintelligence/relative",
            "not a url",
        ] {
            assert_eq!(r.url(other), None, "{other}");
        }
        // A backend with a base path: only links under it.
        let (b, _) = rewrite("https://gw.contoso.com/aoai");
        let r = Rewrite::new(&b, None, Some("proxy:1")).unwrap();
        assert_eq!(
            r.url("https://gw.contoso.com/aoai/openai/x").as_deref(),
            Some("http://proxy:1/openai/x")
        );
        assert_eq!(r.url("https://gw.contoso.com/aoaix/y"), None);
        assert_eq!(r.url("https://gw.contoso.com/other"), None);
        // No usable authority, no rewriting.
        assert!(Rewrite::new(&b, None, None).is_none());
        assert!(Rewrite::new(&b, None, Some("a b")).is_none());
        assert!(Rewrite::new(&b, None, Some("u@host")).is_none());
    }

    #[test]
    fn headers_of_long_running_operations_are_rewritten() {
        let b = Url::parse("http://127.0.0.1:9000/").unwrap();
        let r = Rewrite::new(&b, None, Some("127.0.0.1:8080")).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "operation-location",
            HeaderValue::from_static("http://127.0.0.1:9000/op/1?api-version=x"),
        );
        h.insert(
            "location",
            HeaderValue::from_static("https://elsewhere.example/x"),
        );
        h.insert(
            "azure-asyncoperation",
            HeaderValue::from_static("http://127.0.0.1:9000/async"),
        );
        h.insert("content-type", HeaderValue::from_static("application/json"));
        r.headers(&mut h);
        assert_eq!(
            h["operation-location"],
            "http://127.0.0.1:8080/op/1?api-version=x"
        );
        assert_eq!(h["location"], "https://elsewhere.example/x");
        assert_eq!(h["azure-asyncoperation"], "http://127.0.0.1:8080/async");
    }

    #[test]
    fn json_links_are_replaced_and_every_other_byte_kept() {
        let b = Url::parse("https://myres.cognitiveservices.azure.com/").unwrap();
        let r = Rewrite::new(&b, None, Some("proxy:8080")).unwrap();
        let body = br#"{"value": [1.50, {"k": "https://myres.cognitiveservices.azure.com"}],
 "nextLink":"https://myres.cognitiveservices.azure.com/documentintelligence/documentModels?skip=3&api-version=2024-11-30",
 "@odata.nextLink" : "https:\/\/myres.cognitiveservices.azure.com\/indexes('x')\/docs?$skip=50",
 "blob": "https://emulatorstore.blob.core.windows.net/c/x?sig=a",
 "evil": "https://myres.cognitiveservices.azure.com.evil.example/x",
 "text": "see https://myres.cognitiveservices.azure.com/ for more",
 "https://myres.cognitiveservices.azure.com/key": 1,
 "esc": "a \"quoted\" https://myres.cognitiveservices.azure.com/x"}"#;
        let out = String::from_utf8(r.json(body).unwrap()).unwrap();
        let expected = String::from_utf8(body.to_vec())
            .unwrap()
            .replace(
                r#""nextLink":"https://myres.cognitiveservices.azure.com/"#,
                r#""nextLink":"http://proxy:8080/"#,
            )
            .replace(
                r#""https:\/\/myres.cognitiveservices.azure.com\/indexes('x')\/docs?$skip=50""#,
                r#""http://proxy:8080/indexes('x')/docs?$skip=50""#,
            )
            .replace(
                r#"{"k": "https://myres.cognitiveservices.azure.com"}"#,
                r#"{"k": "http://proxy:8080"}"#,
            );
        assert_eq!(out, expected);
        serde_json::from_str::<serde_json::Value>(&out).unwrap();
        // Nothing of the backend's: untouched (and not even scanned).
        assert_eq!(r.json(br#"{"nextLink":"https://other.example/x"}"#), None);
        assert_eq!(
            r.json(b"not json https://myres.cognitiveservices.azure.com/x \""),
            None
        );
        assert_eq!(r.json(&[0xff, 0xfe]), None);
    }

    #[test]
    fn bodies_are_read_for_the_services_and_openai_batches_and_files() {
        assert!(body_may_link(
            Service::Cognitive,
            "/documentintelligence/documentModels"
        ));
        assert!(body_may_link(Service::Search, "/indexes"));
        assert!(body_may_link(Service::OpenAi, "/openai/batches"));
        assert!(body_may_link(Service::OpenAi, "/openai/v1/files/f1"));
        assert!(!body_may_link(
            Service::OpenAi,
            "/openai/deployments/d/chat/completions"
        ));
    }
}
