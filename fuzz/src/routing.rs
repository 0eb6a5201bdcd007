//! Request → routes, as the request path calls it: `plan(uri.path())`, then `resolve` with the
//! client's query, the backend header and the body. Checks the upstream URL and the `model`
//! rewrite of every route.

use bytes::Bytes;
use entra_proxy::config::{ApiShape, Config};
use entra_proxy::error::ProxyError;
use entra_proxy::routing::{self, Plan, Route, RoutingTable};
use std::sync::OnceLock;

/// Three backends: deployment API, v1 API under a base path, and a loopback emulator; models
/// spread over them.
const SEVERAL: &str = r#"
[[backends]]
name = "east"
endpoint = "https://east.openai.azure.com"
api_version = "2024-10-21"
deployments = ["gpt-4o-2024-08-06", "dep two", "caf%C3%A9"]

[[backends]]
name = "west"
endpoint = "https://west.services.ai.azure.com/base/"
api = "v1"

[[backends]]
name = "local"
endpoint = "http://127.0.0.1:8081/"
api = "v1"
deployments = ["gpt-4o"]

[[models]]
name = "gpt-4o"
targets = [
  { backend = "east", deployment = "gpt-4o-2024-08-06" },
  { backend = "west", deployment = "gpt-4o-west", priority = 1 },
]

[[models]]
name = "emb"
backend = "west"
deployment = "text-embedding-3-small"

[[models]]
name = "same"
backend = "local"
deployment = "same"
"#;

/// One v1 backend: every OpenAI-style request has its `model` rewritten.
const ONE_V1: &str = r#"
[[backends]]
name = "only"
endpoint = "https://only.openai.azure.com"
api = "v1"

[[models]]
name = "gpt-4o"
backend = "only"
deployment = "gpt-4o-2024-08-06"

[[models]]
name = "mini"
backend = "only"
deployment = "mini"
"#;

fn tables() -> &'static [RoutingTable; 2] {
    static TABLES: OnceLock<[RoutingTable; 2]> = OnceLock::new();
    TABLES.get_or_init(|| {
        [SEVERAL, ONE_V1].map(|text| {
            let c = Config::parse(text, "fuzz.toml", &|_| None)
                .unwrap_or_else(|e| panic!("fuzz config: {e}"));
            RoutingTable::new(&c)
        })
    })
}

/// Percent-decodes every `%XX`; other bytes as they are.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|c| hex(*c)),
                b.get(i + 2).and_then(|c| hex(*c)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// The checks every route passes, whatever the request.
fn check_route(
    table: &RoutingTable,
    plan: &Plan,
    query: Option<&str>,
    body: Option<&Bytes>,
    r: &Route,
) {
    let backend = &table.backends()[r.backend].config;
    let base = &backend.endpoint;
    // The authority is always the backend's.
    assert_eq!(r.uri.scheme_str(), Some(base.scheme()), "{}", r.uri);
    let want = match base.port() {
        Some(p) => format!("{}:{p}", base.host_str().unwrap()),
        None => base.host_str().unwrap().to_string(),
    };
    assert_eq!(
        r.uri.authority().map(|a| a.as_str()),
        Some(want.as_str()),
        "{}",
        r.uri
    );
    // Under the backend's base path; no dot segments and no encoded slash or backslash.
    let path = r.uri.path();
    assert!(
        path.starts_with(base.path().trim_end_matches('/')),
        "{path} not under {base}"
    );
    let lower = path.to_ascii_lowercase();
    assert!(
        !lower.contains("%2f") && !lower.contains("%5c"),
        "encoded separator in {path}"
    );
    for seg in path.split('/') {
        let decoded = percent_decode(seg);
        assert!(
            decoded != b"."
                && decoded != b".."
                && !decoded.contains(&b'/')
                && !decoded.contains(&b'\\'),
            "dot or separator segment {seg:?} in {path}"
        );
    }
    // The client's query passes as sent, before anything the proxy adds.
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        let up = r.uri.query().unwrap_or_default();
        assert!(
            up == q || up.starts_with(&format!("{q}&")),
            "query {q:?} became {up:?}"
        );
    }
    check_body(plan, backend.api, body, r);
}

/// The `model` rewrite: a changed body is a JSON object whose `model` is the deployment, with
/// every other field as the client sent it; a v1 backend never gets a `model` it does not know.
fn check_body(plan: &Plan, api: ApiShape, body: Option<&Bytes>, r: &Route) {
    let original = body.and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok());
    if let Some(new) = &r.body {
        let new: serde_json::Value =
            serde_json::from_slice(new).expect("the rewritten body is JSON");
        let new = new
            .as_object()
            .expect("the rewritten body is a JSON object");
        let deployment = r
            .deployment
            .as_deref()
            .expect("a rewritten body names a deployment");
        assert_eq!(model_of(new).and_then(|m| m.as_str()), Some(deployment));
        let original = original
            .as_ref()
            .and_then(|o| o.as_object())
            .expect("only JSON objects are rewritten");
        assert_eq!(
            model_of(original).and_then(|m| m.as_str()),
            r.model.as_deref()
        );
        assert_eq!(new.len(), original.len(), "fields were added or dropped");
        for (k, v) in original {
            if !k.eq_ignore_ascii_case("model") {
                assert_eq!(new.get(k), Some(v), "field {k:?} changed");
            }
        }
        return;
    }
    // Forwarded as sent: to a v1 backend only when `model` already names the deployment (or
    // names nothing this proxy knows, on Azure's own v1 path).
    let v1_shaped = matches!(plan, Plan::AzureV1 { .. })
        || (matches!(plan, Plan::OpenAi { .. }) && api == ApiShape::V1);
    if v1_shaped && let Some(deployment) = r.deployment.as_deref() {
        // Read `model` as Azure does, in any letter case, skipping the other fields: a body
        // with invalid UTF-8 or an out-of-range number elsewhere still names its model.
        let sent = body.and_then(|b| model_in(b));
        assert_eq!(
            sent.as_deref(),
            Some(deployment),
            "a v1 backend got a model that is not its deployment"
        );
    }
}

/// The object's `model`, named in any letter case (Azure binds it so; the proxy refuses a body
/// that names it twice).
fn model_of(o: &serde_json::Map<String, serde_json::Value>) -> Option<&serde_json::Value> {
    o.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("model"))
        .map(|(_, v)| v)
}

/// The string `model` of a JSON object body, in any letter case, the other members skipped.
fn model_in(body: &[u8]) -> Option<String> {
    struct Model(Option<String>);
    impl<'de> serde::Deserialize<'de> for Model {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Model, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Model;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Model, A::Error> {
                    let mut model = None;
                    while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                        if k.eq_ignore_ascii_case("model") {
                            model = map
                                .next_value::<serde_json::Value>()?
                                .as_str()
                                .map(String::from);
                        } else {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                    Ok(Model(model))
                }
            }
            d.deserialize_map(Visit)
        }
    }
    serde_json::from_slice::<Model>(body).ok().and_then(|m| m.0)
}

/// Errors routing may answer with: each a client error that says what to change.
fn check_error(e: &ProxyError) {
    assert!(
        matches!(
            e,
            ProxyError::BodyNotJson { .. }
                | ProxyError::MissingModel { .. }
                | ProxyError::UnknownModel { .. }
                | ProxyError::NoRoute { .. }
                | ProxyError::AmbiguousDeployment { .. }
                | ProxyError::DuplicateParameter { .. }
        ),
        "unexpected routing error {e:?}"
    );
    assert!(e.status().is_client_error(), "{e:?} is {}", e.status());
}

/// Routes one request and checks every route. `target` is an origin-form request target.
pub fn route_and_check(
    table_index: usize,
    target: &[u8],
    chosen: Option<&str>,
    body: Option<Bytes>,
) {
    let table = &tables()[table_index % 2];
    let Ok(uri) = http::Uri::try_from(target) else {
        return;
    };
    let path = uri.path();
    let plan = match routing::plan(path) {
        Ok(p) => p,
        Err(e) => return check_error(&e),
    };
    if let Plan::Deployment { deployment, rest } = &plan {
        for s in std::iter::once(deployment).chain(rest) {
            assert!(
                s != "." && s != ".." && !s.contains('/') && !s.contains('\\'),
                "{s:?}"
            );
        }
    }
    if plan == Plan::ListModels {
        return;
    }
    match routing::resolve(table, &plan, path, uri.query(), chosen, body.as_ref()) {
        Ok(routes) => {
            assert!(!routes.is_empty(), "resolve returned no route");
            for r in &routes {
                check_route(table, &plan, uri.query(), body.as_ref(), r);
            }
        }
        Err(e) => check_error(&e),
    }
}

/// Selector (1 byte: table, backend header, whether there is a body), then fields request
/// target (path and query), body, backend header.
pub fn check(data: &[u8]) {
    let (sel, f) = crate::split(data, 1, 3);
    let sel = sel[0];
    let chosen = match (sel >> 1) % 4 {
        0 => None,
        1 => Some("east"),
        2 => Some("west"),
        _ => std::str::from_utf8(f[2]).ok(),
    };
    let body = (sel & 0x08 == 0).then(|| Bytes::copy_from_slice(f[1]));
    route_and_check(usize::from(sel & 1), f[0], chosen, body);
}

/// The request paths that carry a `model` to rewrite.
const MODEL_PATHS: [&str; 4] = [
    "/v1/chat/completions",
    "/v1/responses",
    "/openai/v1/chat/completions",
    "/v1/embeddings",
];

/// Selector (1 byte: table, path), then the body. The path is one that reads `model`.
pub fn check_model_rewrite(data: &[u8]) {
    let (sel, f) = crate::split(data, 1, 1);
    let sel = sel[0];
    let path = MODEL_PATHS[usize::from((sel >> 1) % 4)];
    route_and_check(
        usize::from(sel & 1),
        path.as_bytes(),
        None,
        Some(Bytes::copy_from_slice(f[0])),
    );
}
