//! Request → [`Route`]: which backend, which upstream URL, and whether the body changes.
//! Azure-style paths pass through (the body is never parsed); OpenAI-style `/v1/...` paths map
//! `model` through `[[models]]` to a deployment.

use crate::backends::{BackendId, Backends};
use crate::config::{ApiShape, Backend, Config};
use crate::error::ProxyError;
use bytes::Bytes;
use http::Uri;
use std::collections::HashMap;

/// Header a client may send to pick a backend for paths that do not name a deployment.
pub const BACKEND_HEADER: http::HeaderName = http::HeaderName::from_static("x-entra-proxy-backend");

/// What the path says about the request, before the body is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// `/openai/deployments/{deployment}/{rest…}`: Azure's deployment API.
    Deployment {
        deployment: String,
        rest: Vec<String>,
    },
    /// `/openai/v1/{rest…}`: Azure's v1 API; `model` in the body names the deployment.
    AzureV1 { rest: Vec<String> },
    /// `/v1/{rest…}`: OpenAI-style; `model` in the body names a configured model.
    OpenAi { rest: Vec<String> },
    /// `GET /v1/models`: answered by the proxy from `[[models]]`.
    ListModels,
    /// Any other path (other Azure AI services, Foundry's `/models/...`): passed through.
    Other { segments: Vec<String> },
}

impl Plan {
    /// Whether [`resolve`] needs the JSON body (to read `model`).
    pub fn needs_body(&self) -> bool {
        matches!(self, Plan::OpenAi { .. } | Plan::AzureV1 { .. })
    }
}

/// Where one request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The backend, in [`RoutingTable::backends`].
    pub backend: BackendId,
    /// The full upstream URL: backend base, re-encoded path, the client's query as sent.
    pub uri: Uri,
    pub deployment: Option<String>,
    /// The body to send instead of the client's, when it had to change.
    pub body: Option<Bytes>,
    /// The model the client asked for, when it named one.
    pub model: Option<String>,
}

/// One place a request may go, before its URL is built.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    backend: BackendId,
    deployment: String,
    priority: u32,
    weight: u32,
}

/// Everything routing needs, precomputed from the config.
#[derive(Debug)]
pub struct RoutingTable {
    backends: Backends,
    models: HashMap<String, Vec<Candidate>>,
    /// deployment name → backends that have it.
    deployments: HashMap<String, Vec<BackendId>>,
    model_names: Vec<String>,
}

impl RoutingTable {
    /// Builds the table and its backends' state. Call after
    /// [`crate::telemetry::Metrics::install`], so the backends' metric handles reach the recorder.
    pub fn new(config: &Config) -> RoutingTable {
        let backends = Backends::new(&config.backends);
        let mut deployments: HashMap<String, Vec<BackendId>> = HashMap::new();
        for id in backends.ids() {
            for d in &backends[id].config.deployments {
                let v = deployments.entry(d.clone()).or_default();
                if !v.contains(&id) {
                    v.push(id);
                }
            }
        }
        RoutingTable {
            models: config
                .models
                .iter()
                .map(|m| {
                    // The config checked every target's backend index.
                    let targets = m
                        .targets
                        .iter()
                        .filter_map(|t| {
                            Some(Candidate {
                                backend: backends.id(t.backend)?,
                                deployment: t.deployment.clone(),
                                priority: t.priority,
                                weight: t.weight,
                            })
                        })
                        .collect();
                    (m.name.clone(), targets)
                })
                .collect(),
            deployments,
            model_names: config.models.iter().map(|m| m.name.clone()).collect(),
            backends,
        }
    }

    /// Every backend with its health and metric handles.
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    pub fn model_names(&self) -> &[String] {
        &self.model_names
    }

    fn known_deployments(&self) -> Vec<String> {
        let mut v: Vec<String> = self.deployments.keys().cloned().collect();
        v.sort();
        v
    }

    /// A model name or deployment name → every place that serves it, in the order to try
    /// them for this request: lowest priority first, weighted-random among equals.
    fn lookup(&self, name: &str) -> Option<Vec<Candidate>> {
        let mut found = match self.models.get(name) {
            Some(targets) => targets.clone(),
            None => self
                .deployments
                .get(name)?
                .iter()
                .map(|b| Candidate {
                    backend: *b,
                    deployment: name.to_string(),
                    priority: 0,
                    weight: 1,
                })
                .collect(),
        };
        order_candidates(&mut found);
        Some(found)
    }

    /// The backend for a path that names no deployment: the only one, or the one the client
    /// chose with [`BACKEND_HEADER`].
    fn pick_backend(&self, chosen: Option<&str>, path: &str) -> Result<BackendId, ProxyError> {
        if let Some(name) = chosen {
            return self
                .backends
                .by_name(name)
                .ok_or_else(|| ProxyError::NoRoute {
                    path: path.to_string(),
                    hint: format!(
                        "{BACKEND_HEADER}: no backend named {name:?} (backends: {})",
                        self.backend_names()
                    ),
                });
        }
        match (self.backends.len(), self.backends.ids().next()) {
            (1, Some(only)) => Ok(only),
            _ => Err(ProxyError::NoRoute {
                path: path.to_string(),
                hint: format!(
                    "several backends are configured; choose one with the {BACKEND_HEADER} header ({})",
                    self.backend_names()
                ),
            }),
        }
    }

    fn backend_names(&self) -> String {
        self.backends
            .iter()
            .map(|b| b.config.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Splits a request path into decoded segments and classifies it.
pub fn plan(path: &str) -> Result<Plan, ProxyError> {
    let mut segments = split_path(path)?;
    let is = |segments: &[String], i: usize, want: &str| segments.get(i).is_some_and(|s| s == want);
    Ok(
        if is(&segments, 0, "openai") && is(&segments, 1, "deployments") && segments.len() > 3 {
            let rest = segments.split_off(3);
            let deployment = segments.swap_remove(2);
            Plan::Deployment { deployment, rest }
        } else if is(&segments, 0, "openai") && is(&segments, 1, "v1") && segments.len() > 2 {
            Plan::AzureV1 {
                rest: segments.split_off(2),
            }
        } else if is(&segments, 0, "v1") && is(&segments, 1, "models") && segments.len() == 2 {
            Plan::ListModels
        } else if is(&segments, 0, "v1") && segments.len() > 1 {
            Plan::OpenAi {
                rest: segments.split_off(1),
            }
        } else {
            Plan::Other { segments }
        },
    )
}

fn split_path(path: &str) -> Result<Vec<String>, ProxyError> {
    let mut out = Vec::new();
    for raw in path.split('/').filter(|s| !s.is_empty()) {
        let decoded = percent_encoding_decode(raw);
        if decoded == "." || decoded == ".." || decoded.contains('/') || decoded.contains('\\') {
            return Err(ProxyError::NoRoute {
                path: path.to_string(),
                hint: "path segments may not be '.', '..' or contain encoded slashes".into(),
            });
        }
        out.push(decoded);
    }
    Ok(out)
}

fn percent_encoding_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied(),
            bytes.get(i + 2).copied(),
        ) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                let v = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(v as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The body's `model` field, for OpenAI-style and v1 paths.
fn body_model(path: &str, body: Option<&Bytes>) -> Result<Option<String>, ProxyError> {
    let Some(body) = body else {
        return Ok(None);
    };
    if body.is_empty() {
        return Ok(None);
    }
    // serde reads a struct from a JSON array too (`["gpt-4o"]`), which could not be rewritten.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(ProxyError::BodyNotJson {
            path: path.to_string(),
            reason: "not an object".into(),
        });
    }
    #[derive(serde::Deserialize)]
    struct ModelOnly {
        model: Option<serde_json::Value>,
    }
    let parsed: ModelOnly = serde_json::from_slice(body).map_err(|e| ProxyError::BodyNotJson {
        path: path.to_string(),
        reason: e.to_string(),
    })?;
    match parsed.model {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ProxyError::BodyNotJson {
            path: path.to_string(),
            reason: format!("\"model\" must be a string, got {other}"),
        }),
    }
}

/// Rewrites the body's `model` to the deployment name (v1 API shape).
fn with_model(body: &Bytes, deployment: &str, path: &str) -> Result<Bytes, ProxyError> {
    let mut v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ProxyError::BodyNotJson {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("model".into(), serde_json::Value::String(deployment.into()));
    }
    serde_json::to_vec(&v)
        .map(Bytes::from)
        .map_err(|e| ProxyError::BodyNotJson {
            path: path.to_string(),
            reason: e.to_string(),
        })
}

/// OpenAI operations that live under `/openai/deployments/{d}/` in Azure's deployment API.
const DEPLOYMENT_OPERATIONS: &[&[&str]] = &[
    &["chat", "completions"],
    &["completions"],
    &["embeddings"],
    &["images", "generations"],
    &["audio", "speech"],
];

/// Resolves a request to the routes to try, in order (never empty). `body` is given only when
/// [`Plan::needs_body`].
pub fn resolve(
    table: &RoutingTable,
    plan: &Plan,
    path: &str,
    query: Option<&str>,
    chosen_backend: Option<&str>,
    body: Option<&Bytes>,
) -> Result<Vec<Route>, ProxyError> {
    let single = |backend: BackendId, deployment: &str| {
        vec![Candidate {
            backend,
            deployment: deployment.to_string(),
            priority: 0,
            weight: 1,
        }]
    };
    match plan {
        Plan::Deployment { deployment, rest } => {
            let candidates = match table.lookup(deployment) {
                Some(found) => found,
                None if chosen_backend.is_some() || table.backends.len() == 1 => {
                    // Not configured: pass it through and let Azure (and the diagnosis) speak.
                    single(table.pick_backend(chosen_backend, path)?, deployment)
                }
                None => {
                    return Err(ProxyError::AmbiguousDeployment {
                        deployment: deployment.clone(),
                        known: table.known_deployments(),
                    });
                }
            };
            candidates
                .into_iter()
                .map(|c| {
                    let b = &table.backends[c.backend].config;
                    let mut segs = vec!["openai", "deployments", c.deployment.as_str()];
                    segs.extend(rest.iter().map(String::as_str));
                    Ok(Route {
                        backend: c.backend,
                        uri: upstream_uri(b, &segs, query, true)?,
                        deployment: Some(c.deployment.clone()),
                        body: None,
                        model: None,
                    })
                })
                .collect()
        }
        Plan::AzureV1 { rest } => {
            let model = body_model(path, body)?;
            let candidates = match model.as_deref().and_then(|m| table.lookup(m)) {
                Some(found) => found,
                None => single(
                    table.pick_backend(chosen_backend, path)?,
                    model.as_deref().unwrap_or_default(),
                ),
            };
            let mut segs = vec!["openai", "v1"];
            segs.extend(rest.iter().map(String::as_str));
            candidates
                .into_iter()
                .map(|c| {
                    let b = &table.backends[c.backend].config;
                    let new_body = match (&model, body) {
                        (Some(m), Some(body)) if *m != c.deployment && !c.deployment.is_empty() => {
                            Some(with_model(body, &c.deployment, path)?)
                        }
                        _ => None,
                    };
                    Ok(Route {
                        backend: c.backend,
                        uri: upstream_uri(b, &segs, query, false)?,
                        deployment: (!c.deployment.is_empty()).then_some(c.deployment),
                        body: new_body,
                        model: model.clone(),
                    })
                })
                .collect()
        }
        Plan::OpenAi { rest } => {
            let model = body_model(path, body)?.ok_or_else(|| ProxyError::MissingModel {
                known: table.model_names.clone(),
            })?;
            let candidates = table
                .lookup(&model)
                .ok_or_else(|| ProxyError::UnknownModel {
                    model: model.clone(),
                    known: table.model_names.clone(),
                })?;
            let rest_refs: Vec<&str> = rest.iter().map(String::as_str).collect();
            candidates
                .into_iter()
                .map(|c| {
                    let b = &table.backends[c.backend].config;
                    match b.api {
                        ApiShape::V1 => {
                            let mut segs = vec!["openai", "v1"];
                            segs.extend(rest_refs.iter().copied());
                            let new_body = match body {
                                Some(body) if model != c.deployment => {
                                    Some(with_model(body, &c.deployment, path)?)
                                }
                                _ => None,
                            };
                            Ok(Route {
                                backend: c.backend,
                                uri: upstream_uri(b, &segs, query, false)?,
                                deployment: Some(c.deployment),
                                body: new_body,
                                model: Some(model.clone()),
                            })
                        }
                        ApiShape::Deployments => {
                            if !DEPLOYMENT_OPERATIONS.contains(&rest_refs.as_slice()) {
                                return Err(ProxyError::NoRoute {
                                    path: path.to_string(),
                                    hint: format!(
                                        "backend {} uses Azure's deployment API, which has no /v1/{}; set api = \"v1\" on the backend to forward it to /openai/v1/{}",
                                        b.name,
                                        rest.join("/"),
                                        rest.join("/")
                                    ),
                                });
                            }
                            let mut segs = vec!["openai", "deployments", c.deployment.as_str()];
                            segs.extend(rest_refs.iter().copied());
                            Ok(Route {
                                backend: c.backend,
                                uri: upstream_uri(b, &segs, query, true)?,
                                deployment: Some(c.deployment.clone()),
                                body: None,
                                model: Some(model.clone()),
                            })
                        }
                    }
                })
                .collect()
        }
        Plan::Other { segments } => {
            let backend = table.pick_backend(chosen_backend, path)?;
            let b = &table.backends[backend].config;
            let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
            Ok(vec![Route {
                backend,
                uri: upstream_uri(b, &segs, query, false)?,
                deployment: None,
                body: None,
                model: None,
            }])
        }
        Plan::ListModels => Err(ProxyError::NoRoute {
            path: path.to_string(),
            hint: "/v1/models is answered by the proxy itself".into(),
        }),
    }
}

/// Sorts by priority and shuffles each priority group by weight (weighted random order).
fn order_candidates(c: &mut [Candidate]) {
    c.sort_by_key(|x| x.priority);
    let mut start = 0;
    while start < c.len() {
        let p = c[start].priority;
        let end = start + c[start..].iter().take_while(|x| x.priority == p).count();
        weighted_shuffle(&mut c[start..end]);
        start = end;
    }
}

fn weighted_shuffle(group: &mut [Candidate]) {
    for i in 0..group.len() {
        let total: u64 = group[i..].iter().map(|x| u64::from(x.weight)).sum();
        if total == 0 {
            return;
        }
        let mut pick = random_u64() % total;
        let mut chosen = i;
        for (j, x) in group[i..].iter().enumerate() {
            let w = u64::from(x.weight);
            if pick < w {
                chosen = i + j;
                break;
            }
            pick -= w;
        }
        group.swap(i, chosen);
    }
}

/// A cheap per-thread xorshift, seeded from the system RNG; good enough to spread load.
fn random_u64() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut b = [0u8; 8];
            let _ = aws_lc_rs::rand::fill(&mut b);
            u64::from_le_bytes(b) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

/// The backend base plus path segments (re-encoded), with the client's query as it came and,
/// where the deployment API needs it, the backend's default `api-version`. Built as one string
/// and parsed once: this runs for every proxied request.
fn upstream_uri(
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
    for &byte in segment.as_bytes() {
        let plain = byte.is_ascii_graphic()
            && !matches!(
                byte,
                b'"' | b'#' | b'%' | b'/' | b'<' | b'>' | b'?' | b'\\' | b'`' | b'{' | b'}'
            );
        if plain {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(extra: &str) -> RoutingTable {
        let c = Config::parse(
            &format!(
                "[[backends]]\nname='primary'\nendpoint='https://res.openai.azure.com'\napi_version='2024-10-21'\n{extra}\n[[models]]\nname='gpt-4o'\nbackend='primary'\ndeployment='gpt-4o-2024-08-06'\n[[models]]\nname='emb'\nbackend='primary'\ndeployment='text-embedding-3-small'"
            ),
            "t",
            &|_| None,
        )
        .unwrap();
        RoutingTable::new(&c)
    }

    fn route(
        t: &RoutingTable,
        path: &str,
        query: Option<&str>,
        body: Option<&str>,
    ) -> Result<Route, ProxyError> {
        let p = plan(path)?;
        let body = body.map(|b| Bytes::from(b.to_string()));
        resolve(t, &p, path, query, None, body.as_ref()).map(|mut r| r.remove(0))
    }

    #[test]
    fn targets_are_ordered_by_priority_then_weight() {
        let c = Config::parse(
            "[[backends]]\nname='east'\nendpoint='https://e.openai.azure.com'\n[[backends]]\nname='west'\nendpoint='https://w.openai.azure.com'\n[[backends]]\nname='north'\nendpoint='https://n.openai.azure.com'\n[[models]]\nname='gpt-4o'\ntargets=[{backend='north',deployment='d',priority=1},{backend='east',deployment='d',weight=3},{backend='west',deployment='d',weight=1}]",
            "t",
            &|_| None,
        )
        .unwrap();
        let t = RoutingTable::new(&c);
        let mut first_east = 0;
        for _ in 0..400 {
            let p = plan("/v1/chat/completions").unwrap();
            let body = Bytes::from_static(br#"{"model":"gpt-4o"}"#);
            let routes = resolve(&t, &p, "/v1/chat/completions", None, None, Some(&body)).unwrap();
            assert_eq!(routes.len(), 3);
            assert_eq!(
                t.backends()[routes[2].backend].name(),
                "north",
                "priority 1 is always last"
            );
            if t.backends()[routes[0].backend].name() == "east" {
                first_east += 1;
            }
        }
        // weight 3:1 -> about 300 of 400
        assert!((240..=360).contains(&first_east), "{first_east}");
    }

    #[test]
    fn azure_paths_pass_through_and_get_a_default_api_version() {
        let t = table("");
        let r = route(
            &t,
            "/openai/deployments/gpt-4o-2024-08-06/chat/completions",
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            r.uri.to_string(),
            "https://res.openai.azure.com/openai/deployments/gpt-4o-2024-08-06/chat/completions?api-version=2024-10-21"
        );
        let r = route(
            &t,
            "/openai/deployments/gpt-4o-2024-08-06/chat/completions",
            Some("api-version=2025-01-01-preview"),
            None,
        )
        .unwrap();
        assert!(
            r.uri
                .to_string()
                .ends_with("?api-version=2025-01-01-preview")
        );
        assert!(r.body.is_none());
    }

    #[test]
    fn a_model_name_in_a_deployment_path_maps_to_its_deployment() {
        let t = table("");
        let r = route(
            &t,
            "/openai/deployments/gpt-4o/chat/completions",
            Some("api-version=2024-10-21"),
            None,
        )
        .unwrap();
        assert_eq!(r.deployment.as_deref(), Some("gpt-4o-2024-08-06"));
    }

    #[test]
    fn openai_paths_map_model_to_deployment() {
        let t = table("");
        let r = route(
            &t,
            "/v1/chat/completions",
            None,
            Some(r#"{"model":"gpt-4o","messages":[]}"#),
        )
        .unwrap();
        assert_eq!(
            r.uri.to_string(),
            "https://res.openai.azure.com/openai/deployments/gpt-4o-2024-08-06/chat/completions?api-version=2024-10-21"
        );
        let r = route(
            &t,
            "/v1/embeddings",
            None,
            Some(r#"{"model":"emb","input":"x"}"#),
        )
        .unwrap();
        assert!(r.uri.path().ends_with("/text-embedding-3-small/embeddings"));
    }

    #[test]
    fn unknown_model_and_bad_bodies_are_named() {
        let t = table("");
        let e = route(
            &t,
            "/v1/chat/completions",
            None,
            Some(r#"{"model":"gpt-5"}"#),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown model \"gpt-5\"; this proxy serves: gpt-4o, emb"
        );
        let e = route(&t, "/v1/chat/completions", None, Some("not json")).unwrap_err();
        assert!(matches!(e, ProxyError::BodyNotJson { .. }), "{e}");
        let e = route(&t, "/v1/chat/completions", None, Some("{}")).unwrap_err();
        assert!(matches!(e, ProxyError::MissingModel { .. }));
        let e = route(&t, "/v1/chat/completions", None, Some(r#"{"model":3}"#)).unwrap_err();
        assert!(e.to_string().contains("must be a string"));
    }

    #[test]
    fn v1_backends_rewrite_model_in_the_body() {
        let t = table("api='v1'");
        let r = route(
            &t,
            "/v1/responses",
            None,
            Some(r#"{"model":"gpt-4o","input":"hi"}"#),
        )
        .unwrap();
        assert_eq!(
            r.uri.to_string(),
            "https://res.openai.azure.com/openai/v1/responses"
        );
        let body: serde_json::Value = serde_json::from_slice(r.body.as_ref().unwrap()).unwrap();
        assert_eq!(body["model"], "gpt-4o-2024-08-06");
        assert_eq!(body["input"], "hi");
        let e = route(
            &table(""),
            "/v1/responses",
            None,
            Some(r#"{"model":"gpt-4o"}"#),
        )
        .unwrap_err();
        assert!(e.to_string().contains("api = \"v1\""), "{e}");
    }

    #[test]
    fn azure_v1_paths_pass_through_without_api_version() {
        let t = table("");
        let r = route(
            &t,
            "/openai/v1/chat/completions",
            None,
            Some(r#"{"model":"gpt-4o-2024-08-06"}"#),
        )
        .unwrap();
        assert_eq!(
            r.uri.to_string(),
            "https://res.openai.azure.com/openai/v1/chat/completions"
        );
        assert!(r.body.is_none());
    }

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

    #[test]
    fn paths_are_classified_by_their_leading_segments() {
        let owned = |v: &[&str]| v.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
        let cases = [
            (
                "/openai/deployments/d/chat/completions",
                Plan::Deployment {
                    deployment: "d".into(),
                    rest: owned(&["chat", "completions"]),
                },
            ),
            (
                "/openai/deployments/d",
                Plan::Other {
                    segments: owned(&["openai", "deployments", "d"]),
                },
            ),
            (
                "/openai/v1/responses",
                Plan::AzureV1 {
                    rest: owned(&["responses"]),
                },
            ),
            (
                "/openai/v1",
                Plan::Other {
                    segments: owned(&["openai", "v1"]),
                },
            ),
            ("/v1/models", Plan::ListModels),
            ("//v1//models/", Plan::ListModels),
            (
                "/v1/models/gpt-4o",
                Plan::OpenAi {
                    rest: owned(&["models", "gpt-4o"]),
                },
            ),
            (
                "/v1/chat/completions",
                Plan::OpenAi {
                    rest: owned(&["chat", "completions"]),
                },
            ),
            (
                "/v1",
                Plan::Other {
                    segments: owned(&["v1"]),
                },
            ),
            (
                "/models/chat/completions",
                Plan::Other {
                    segments: owned(&["models", "chat", "completions"]),
                },
            ),
        ];
        for (path, want) in cases {
            assert_eq!(plan(path).unwrap(), want, "{path}");
        }
    }

    #[test]
    fn traversal_is_refused() {
        assert!(plan("/openai/../admin").is_err());
        assert!(plan("/openai/deployments/a%2Fb/chat").is_err());
        assert_eq!(
            plan("/openai/deployments/my%20dep/chat/completions").unwrap(),
            Plan::Deployment {
                deployment: "my dep".into(),
                rest: vec!["chat".into(), "completions".into()]
            }
        );
    }
}
