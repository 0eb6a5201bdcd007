//! Request → [`Route`]: which backend, which upstream URL, and whether the body changes.
//! Azure-style paths pass through (the body is never parsed); OpenAI-style `/v1/...` paths map
//! `model` through `[[models]]` to a deployment.

use crate::backends::BackendId;
use crate::config::ApiShape;
use crate::error::ProxyError;
use bytes::Bytes;
use http::Uri;
use model::{ModelField, body_model, body_model_at, with_model, with_model_at};
use plan::{V1Op, v1_op};
use table::Candidate;
use uri::{query_param, upstream_uri, with_param, with_realtime_version};

mod model;
mod plan;
mod table;
#[cfg(test)]
mod testing;
mod uri;

pub use plan::{Plan, plan};
pub use table::{BACKEND_HEADER, RoutingTable};
pub use uri::REALTIME_API_VERSION;

/// Resource operations whose `model`, when the proxy cannot map it, is an error (as on the
/// deployment operations) rather than something to pass through (fine-tuning base models).
const MAPPED_ROOTS: &[&str] = &["responses"];

/// What routing may read of the request body.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// Not read (streamed) or empty.
    Absent,
    /// Read whole; JSON when it has a `model`.
    Json(&'a Bytes),
    /// A multipart form, with its `model` field's value when it has one.
    Form(Option<&'a str>),
}

impl<'a> From<Option<&'a Bytes>> for Payload<'a> {
    fn from(body: Option<&'a Bytes>) -> Payload<'a> {
        body.map_or(Payload::Absent, Payload::Json)
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
    resolve_payload(table, plan, path, query, chosen_backend, body.into())
}

/// [`resolve`], with a multipart form's `model` as well as a JSON one.
pub fn resolve_payload(
    table: &RoutingTable,
    plan: &Plan,
    path: &str,
    query: Option<&str>,
    chosen_backend: Option<&str>,
    payload: Payload<'_>,
) -> Result<Vec<Route>, ProxyError> {
    let body = match payload {
        Payload::Json(b) => Some(b),
        Payload::Absent | Payload::Form(_) => None,
    };
    let single = |backend: BackendId, deployment: &str| vec![Candidate::plain(backend, deployment)];
    match plan {
        Plan::Deployment { deployment, rest } => {
            let candidates = match table.lookup(deployment) {
                Some(found) => found,
                None if chosen_backend.is_some() || table.backends().len() == 1 => {
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
                    let b = &table.backends()[c.backend].config;
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
                    let b = &table.backends()[c.backend].config;
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
            let rest_refs: Vec<&str> = rest.iter().map(String::as_str).collect();
            let op = v1_op(&rest_refs);
            let field = if op == V1Op::RealtimeClientSecrets {
                ModelField::InSession
            } else {
                ModelField::TopLevel
            };
            let model = match payload {
                Payload::Form(m) => m.map(str::to_string),
                _ => body_model_at(path, body, field)?,
            };
            // These operations name a deployment: without a model there is nowhere to send them.
            let needs_model = matches!(
                op,
                V1Op::Deployment | V1Op::RealtimeClientSecrets | V1Op::RealtimeSessions
            );
            let must_map =
                needs_model || rest_refs.first().is_some_and(|r| MAPPED_ROOTS.contains(r));
            let candidates = match &model {
                Some(m) => match table.lookup(m) {
                    Some(found) => found,
                    None if must_map => {
                        return Err(ProxyError::UnknownModel {
                            model: m.clone(),
                            known: table.model_names().to_vec(),
                        });
                    }
                    None => single(table.pick_backend(chosen_backend, path)?, ""),
                },
                None if needs_model => {
                    return Err(ProxyError::MissingModel {
                        known: table.model_names().to_vec(),
                    });
                }
                None => single(table.pick_backend(chosen_backend, path)?, ""),
            };
            candidates
                .into_iter()
                .map(|c| {
                    let b = &table.backends()[c.backend].config;
                    let deployment = (!c.deployment.is_empty()).then(|| c.deployment.clone());
                    let rewritten = || match (&model, body, &deployment) {
                        (Some(m), Some(body), Some(d)) if m != d => {
                            with_model_at(body, d, path, field).map(Some)
                        }
                        _ => Ok(None),
                    };
                    let mut query = query.map(str::to_string);
                    let (segs, api_version, new_body) = match (b.api, op) {
                        (ApiShape::V1, _) | (ApiShape::Deployments, V1Op::RealtimeClientSecrets) => {
                            let mut segs = vec!["openai", "v1"];
                            segs.extend(rest_refs.iter().copied());
                            (segs, false, rewritten()?)
                        }
                        (ApiShape::Deployments, V1Op::RealtimeSessions) => {
                            query = Some(with_realtime_version(query.as_deref()));
                            (vec!["openai", "realtimeapi", "sessions"], false, rewritten()?)
                        }
                        (ApiShape::Deployments, V1Op::Deployment) => {
                            let mut segs = vec!["openai", "deployments", c.deployment.as_str()];
                            segs.extend(rest_refs.iter().copied());
                            (segs, true, None)
                        }
                        (ApiShape::Deployments, V1Op::Resource) => {
                            let mut segs = vec!["openai"];
                            segs.extend(rest_refs.iter().copied());
                            (segs, true, rewritten()?)
                        }
                        (ApiShape::Deployments, V1Op::Unsupported) => {
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
                    };
                    Ok(Route {
                        backend: c.backend,
                        uri: upstream_uri(b, &segs, query.as_deref(), api_version)?,
                        deployment,
                        body: new_body,
                        model: model.clone(),
                    })
                })
                .collect()
        }
        Plan::Other { segments } => {
            let backend = table.pick_backend(chosen_backend, path)?;
            let b = &table.backends()[backend].config;
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

/// Where a WebSocket handshake goes. Realtime in its three shapes — Azure's
/// `/openai/realtime?deployment=`, the GA `/openai/v1/realtime?model=` and OpenAI's
/// `/v1/realtime?model=` — maps the model through `[[models]]` (the query parameter is rewritten
/// to the deployment); any other path passes through like an HTTP request. `query` comes
/// without credentials.
pub fn resolve_websocket(
    table: &RoutingTable,
    plan: &Plan,
    path: &str,
    query: Option<&str>,
    chosen_backend: Option<&str>,
) -> Result<Route, ProxyError> {
    let realtime = |segs: &[String]| segs.len() == 1 && segs[0] == "realtime";
    let (param, openai_style) = match plan {
        Plan::OpenAi { rest } if realtime(rest) => ("model", true),
        Plan::AzureV1 { rest } if realtime(rest) => ("model", false),
        Plan::Other { segments }
            if segments.len() == 2 && segments[0] == "openai" && segments[1] == "realtime" =>
        {
            ("deployment", false)
        }
        _ => {
            let mut routes = resolve(table, plan, path, query, chosen_backend, None)?;
            return if routes.is_empty() {
                Err(ProxyError::NoRoute {
                    path: path.to_string(),
                    hint: "no backend serves this request".into(),
                })
            } else {
                Ok(routes.swap_remove(0))
            };
        }
    };
    let model = query_param(query, param);
    let found = model.as_deref().and_then(|m| table.lookup(m));
    let (backend, deployment) = match (found.and_then(|f| f.into_iter().next()), &model) {
        (Some(c), _) => (c.backend, Some(c.deployment)),
        (None, Some(m)) if openai_style => {
            return Err(ProxyError::UnknownModel {
                model: m.clone(),
                known: table.model_names().to_vec(),
            });
        }
        (None, None) if openai_style => {
            return Err(ProxyError::MissingQueryModel {
                param,
                known: table.model_names().to_vec(),
            });
        }
        // Not configured: pass it through and let Azure (and the diagnosis) speak.
        (None, m) => (table.pick_backend(chosen_backend, path)?, m.clone()),
    };
    let b = &table.backends()[backend].config;
    let v1 = !openai_style && param == "model" || openai_style && b.api == ApiShape::V1;
    let (segs, query): (&[&str], String) = match (&deployment, v1) {
        (Some(d), true) => (
            &["openai", "v1", "realtime"],
            with_param(query, "model", None, d),
        ),
        (Some(d), false) => (
            &["openai", "realtime"],
            with_param(query, "deployment", openai_style.then_some("model"), d),
        ),
        (None, true) => (
            &["openai", "v1", "realtime"],
            query.unwrap_or_default().to_string(),
        ),
        (None, false) => (
            &["openai", "realtime"],
            query.unwrap_or_default().to_string(),
        ),
    };
    let query = if v1 {
        query
    } else {
        with_realtime_version(Some(&query))
    };
    Ok(Route {
        backend,
        uri: upstream_uri(b, segs, Some(&query), false)?,
        deployment,
        body: None,
        model,
    })
}

#[cfg(test)]
mod tests {
    use super::testing::{route, table};
    use super::*;

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
        let r = route(
            &table(""),
            "/v1/responses",
            None,
            Some(r#"{"model":"gpt-4o","input":"hi"}"#),
        )
        .unwrap();
        assert_eq!(
            r.uri.to_string(),
            "https://res.openai.azure.com/openai/responses?api-version=2024-10-21"
        );
        let body: serde_json::Value = serde_json::from_slice(r.body.as_ref().unwrap()).unwrap();
        assert_eq!(body["model"], "gpt-4o-2024-08-06");
        let e = route(
            &table(""),
            "/v1/moderations",
            None,
            Some(r#"{"model":"gpt-4o"}"#),
        )
        .unwrap_err();
        assert!(e.to_string().contains("api = \"v1\""), "{e}");
    }

    #[test]
    fn every_v1_surface_reaches_the_deployment_api() {
        let t = table("");
        let base = "https://res.openai.azure.com/openai";
        let cases = [
            (
                "/v1/responses/resp_1",
                None,
                "/responses/resp_1?api-version=2024-10-21",
            ),
            ("/v1/files", None, "/files?api-version=2024-10-21"),
            (
                "/v1/files/file-1/content",
                None,
                "/files/file-1/content?api-version=2024-10-21",
            ),
            (
                "/v1/batches",
                Some(r#"{"input_file_id":"f"}"#),
                "/batches?api-version=2024-10-21",
            ),
            (
                "/v1/fine_tuning/jobs",
                Some(r#"{"model":"gpt-4o-mini-2024-07-18"}"#),
                "/fine_tuning/jobs?api-version=2024-10-21",
            ),
            (
                "/v1/vector_stores/vs_1/files",
                None,
                "/vector_stores/vs_1/files?api-version=2024-10-21",
            ),
            (
                "/v1/assistants",
                Some(r#"{"model":"gpt-4o"}"#),
                "/assistants?api-version=2024-10-21",
            ),
            (
                "/v1/threads/t_1/runs",
                None,
                "/threads/t_1/runs?api-version=2024-10-21",
            ),
            (
                "/v1/audio/speech",
                Some(r#"{"model":"gpt-4o"}"#),
                "/deployments/gpt-4o-2024-08-06/audio/speech?api-version=2024-10-21",
            ),
            (
                "/v1/images/generations",
                Some(r#"{"model":"gpt-4o"}"#),
                "/deployments/gpt-4o-2024-08-06/images/generations?api-version=2024-10-21",
            ),
        ];
        for (path, body, want) in cases {
            let r = route(&t, path, None, body).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(r.uri.to_string(), format!("{base}{want}"), "{path}");
        }
        // A form's model names the deployment; files are never read for one.
        let p = plan("/v1/audio/transcriptions").unwrap();
        assert!(p.needs_form_model());
        let r = resolve_payload(
            &t,
            &p,
            "/v1/audio/transcriptions",
            None,
            None,
            Payload::Form(Some("gpt-4o")),
        )
        .unwrap()
        .remove(0);
        assert_eq!(
            r.uri.to_string(),
            format!(
                "{base}/deployments/gpt-4o-2024-08-06/audio/transcriptions?api-version=2024-10-21"
            )
        );
        let e = resolve_payload(
            &t,
            &p,
            "/v1/audio/transcriptions",
            None,
            None,
            Payload::Form(Some("whisper-9")),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown model \"whisper-9\"; this proxy serves: gpt-4o, emb"
        );
        assert!(!plan("/v1/files").unwrap().needs_body());
        assert!(!plan("/v1/files").unwrap().needs_form_model());
        assert!(plan("/v1/responses").unwrap().needs_body());
        let e = route(&t, "/v1/responses", None, Some(r#"{"model":"gpt-5"}"#)).unwrap_err();
        assert!(matches!(e, ProxyError::UnknownModel { .. }), "{e}");
    }

    #[test]
    fn realtime_websockets_map_the_model_in_each_shape() {
        let ws = |t: &RoutingTable, path: &str, query: &str| {
            let p = plan(path).unwrap();
            resolve_websocket(t, &p, path, Some(query), None).map(|r| r.uri.to_string())
        };
        let t = table("");
        assert_eq!(
            ws(&t, "/v1/realtime", "model=gpt-4o").unwrap(),
            format!(
                "https://res.openai.azure.com/openai/realtime?deployment=gpt-4o-2024-08-06&api-version={REALTIME_API_VERSION}"
            )
        );
        assert_eq!(
            ws(
                &t,
                "/openai/realtime",
                "api-version=2024-10-01-preview&deployment=gpt-4o"
            )
            .unwrap(),
            "https://res.openai.azure.com/openai/realtime?api-version=2024-10-01-preview&deployment=gpt-4o-2024-08-06"
        );
        assert_eq!(
            ws(&t, "/openai/v1/realtime", "model=gpt-4o&x=1").unwrap(),
            "https://res.openai.azure.com/openai/v1/realtime?model=gpt-4o-2024-08-06&x=1"
        );
        assert_eq!(
            ws(&table("api='v1'"), "/v1/realtime", "model=gpt-4o").unwrap(),
            "https://res.openai.azure.com/openai/v1/realtime?model=gpt-4o-2024-08-06"
        );
        assert!(matches!(
            ws(&t, "/v1/realtime", "model=nope"),
            Err(ProxyError::UnknownModel { .. })
        ));
        assert!(matches!(
            ws(&t, "/v1/realtime", "x=1"),
            Err(ProxyError::MissingQueryModel { param: "model", .. })
        ));
        // Other Azure AI WebSockets pass through.
        assert_eq!(
            ws(
                &t,
                "/speech/recognition/conversation/cognitiveservices/v1",
                "language=en-US"
            )
            .unwrap(),
            "https://res.openai.azure.com/speech/recognition/conversation/cognitiveservices/v1?language=en-US"
        );
    }

    #[test]
    fn realtime_ephemeral_keys_map_the_model_on_both_backend_shapes() {
        let t = table("");
        let body = |r: &Route| -> serde_json::Value {
            serde_json::from_slice(r.body.as_ref().expect("body rewritten")).unwrap()
        };
        // GA: session.model is rewritten; every other field keeps its value, floats exactly.
        let ga = r#"{"expires_after":{"anchor":"created_at","seconds":600},"session":{"type":"realtime","model":"gpt-4o","instructions":"be brief","audio":{"output":{"voice":"alloy","speed":0.30000000000000004}}},"model":"top-level stays"}"#;
        let r = route(&t, "/v1/realtime/client_secrets", None, Some(ga)).unwrap();
        assert_eq!(
            r.uri.to_string(),
            "https://res.openai.azure.com/openai/v1/realtime/client_secrets"
        );
        assert_eq!(r.deployment.as_deref(), Some("gpt-4o-2024-08-06"));
        assert_eq!(r.model.as_deref(), Some("gpt-4o"));
        let mut want: serde_json::Value = serde_json::from_str(ga).unwrap();
        want["session"]["model"] = "gpt-4o-2024-08-06".into();
        assert_eq!(body(&r), want);
        assert_eq!(
            body(&r)["session"]["audio"]["output"]["speed"],
            0.30000000000000004
        );
        // Preview: top-level model, the realtime api-version unless the client named one.
        let beta = r#"{"model":"gpt-4o","voice":"verse"}"#;
        let r = route(&t, "/v1/realtime/sessions", None, Some(beta)).unwrap();
        assert_eq!(
            r.uri.to_string(),
            format!(
                "https://res.openai.azure.com/openai/realtimeapi/sessions?api-version={REALTIME_API_VERSION}"
            )
        );
        assert_eq!(
            body(&r),
            serde_json::json!({"model": "gpt-4o-2024-08-06", "voice": "verse"})
        );
        let r = route(
            &t,
            "/v1/realtime/sessions",
            Some("api-version=2024-10-01-preview"),
            Some(beta),
        )
        .unwrap();
        assert_eq!(r.uri.query(), Some("api-version=2024-10-01-preview"));
        // A deployment name needs no rewrite.
        let r = route(
            &t,
            "/v1/realtime/sessions",
            None,
            Some(r#"{"model":"gpt-4o-2024-08-06"}"#),
        )
        .unwrap();
        assert!(r.body.is_none());
        // A v1 backend takes both on its v1 surface.
        let v1 = table("api='v1'");
        let r = route(&v1, "/v1/realtime/client_secrets", None, Some(ga)).unwrap();
        assert_eq!(
            r.uri.to_string(),
            "https://res.openai.azure.com/openai/v1/realtime/client_secrets"
        );
        assert_eq!(body(&r)["session"]["model"], "gpt-4o-2024-08-06");
        assert_eq!(body(&r)["model"], "top-level stays");
        let r = route(&v1, "/v1/realtime/sessions", None, Some(beta)).unwrap();
        assert_eq!(
            r.uri.to_string(),
            "https://res.openai.azure.com/openai/v1/realtime/sessions"
        );
        assert_eq!(body(&r)["model"], "gpt-4o-2024-08-06");
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
}
