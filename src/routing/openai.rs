//! OpenAI-style `/v1/…` paths: the model mapped, the operation placed on the backend's API shape.

use super::model::{ModelField, body_model_at, with_model_at};
use super::plan::{V1Op, near_v1_path, v1_op};
use super::route::{Incoming, Payload, Route};
use super::table::Candidate;
use super::uri::{upstream_uri, with_realtime_version};
use crate::config::{ApiShape, Backend};
use crate::error::ProxyError;
use bytes::Bytes;
use std::borrow::Cow;

/// Resource operations whose `model`, when the proxy cannot map it, is an error (as on the
/// deployment operations) rather than something to pass through (fine-tuning base models).
const MAPPED_ROOTS: &[&str] = &["responses"];

/// One OpenAI-style request: its operation and the model it names.
struct OpenAiRequest<'a> {
    req: &'a Incoming<'a>,
    /// The path after `/v1`.
    rest: Vec<&'a str>,
    op: V1Op,
    /// Where a JSON body names the model.
    field: ModelField,
    model: Option<String>,
}

/// Where the operation goes on one backend.
struct Upstream<'a> {
    segments: Vec<&'a str>,
    query: Option<Cow<'a, str>>,
    /// Whether the backend's default `api-version` is added (unless the query names one).
    api_version: bool,
    /// Whether the body's model is rewritten to the deployment.
    rewrite: bool,
}

/// `/v1/{rest…}`: to every place that serves the model, in order.
pub(super) fn resolve(
    req: &Incoming<'_>,
    rest: &[std::borrow::Cow<'_, str>],
) -> Result<Vec<Route>, ProxyError> {
    let request = OpenAiRequest::new(req, rest)?;
    request
        .candidates()?
        .into_iter()
        .map(|c| request.route(c))
        .collect()
}

/// `/v1/models` is answered by the proxy itself, never sent on.
pub(super) fn list_models(req: &Incoming<'_>) -> Result<Vec<Route>, ProxyError> {
    Err(ProxyError::NoRoute {
        path: req.path.to_string(),
        hint: "/v1/models is answered by the proxy itself".into(),
    })
}

impl<'a> OpenAiRequest<'a> {
    /// Classifies the operation and reads its model: a form's field, else the JSON body's.
    fn new(
        req: &'a Incoming<'a>,
        rest: &'a [std::borrow::Cow<'_, str>],
    ) -> Result<OpenAiRequest<'a>, ProxyError> {
        let rest: Vec<&str> = rest.iter().map(|s| &**s).collect();
        if let Some(meant) = near_v1_path(&rest) {
            return Err(ProxyError::NoRoute {
                path: req.path.to_string(),
                hint: format!("no such OpenAI operation; did you mean {meant}?"),
            });
        }
        let op = v1_op(&rest);
        let field = if op == V1Op::RealtimeClientSecrets {
            ModelField::InSession
        } else {
            ModelField::TopLevel
        };
        let model = match req.payload {
            Payload::Form(m) => m.map(str::to_string),
            _ => body_model_at(req.path, req.json(), field)?,
        };
        Ok(OpenAiRequest {
            req,
            rest,
            op,
            field,
            model,
        })
    }

    /// These operations name a deployment: without a model there is nowhere to send them.
    fn needs_model(&self) -> bool {
        matches!(
            self.op,
            V1Op::Deployment | V1Op::RealtimeClientSecrets | V1Op::RealtimeSessions
        )
    }

    /// Whether a model the table does not know is refused rather than passed through.
    fn must_map(&self) -> bool {
        self.needs_model() || self.rest.first().is_some_and(|r| MAPPED_ROOTS.contains(r))
    }

    /// The places that serve the model; without a model to map, the only backend or the
    /// chosen one, with no deployment.
    fn candidates(&self) -> Result<Vec<Candidate>, ProxyError> {
        let table = self.req.table;
        match &self.model {
            Some(m) => match table.lookup(m) {
                Some(found) => Ok(found),
                None if self.must_map() => Err(ProxyError::UnknownModel {
                    model: m.clone(),
                    known: table.model_names().to_vec(),
                }),
                None => self.unmapped(),
            },
            None if self.needs_model() => Err(ProxyError::MissingModel {
                known: table.model_names().to_vec(),
            }),
            None => self.unmapped(),
        }
    }

    fn unmapped(&self) -> Result<Vec<Candidate>, ProxyError> {
        Ok(vec![Candidate::plain(self.req.pick_backend()?, "")])
    }

    /// The route to one place: its URL on the backend's API shape, and the body with the
    /// model rewritten where that shape reads it from the body.
    fn route(&self, c: Candidate) -> Result<Route, ProxyError> {
        let b = self.req.backend(c.backend);
        let deployment = (!c.deployment.is_empty()).then(|| c.deployment.clone());
        let upstream = self.upstream(b, &c)?;
        let body = if upstream.rewrite {
            self.rewritten(deployment.as_deref())?
        } else {
            None
        };
        Ok(Route {
            backend: c.backend,
            uri: upstream_uri(
                b,
                &upstream.segments,
                upstream.query.as_deref(),
                upstream.api_version,
            )?,
            deployment,
            body,
            model: self.model.clone(),
        })
    }

    /// Where the operation lives on the backend's API shape: everything on the v1 API; on the
    /// deployment API, under the deployment, under `/openai`, or at the realtime endpoints.
    fn upstream<'s>(&'s self, b: &Backend, c: &'s Candidate) -> Result<Upstream<'s>, ProxyError> {
        let query = self.req.query.map(Cow::Borrowed);
        let under = |prefix: &[&'s str]| -> Vec<&'s str> {
            prefix.iter().chain(&self.rest).copied().collect()
        };
        Ok(match (b.api, self.op) {
            (ApiShape::V1, _) | (ApiShape::Deployments, V1Op::RealtimeClientSecrets) => Upstream {
                segments: under(&["openai", "v1"]),
                query,
                api_version: false,
                rewrite: true,
            },
            (ApiShape::Deployments, V1Op::RealtimeSessions) => Upstream {
                segments: vec!["openai", "realtimeapi", "sessions"],
                query: Some(Cow::Owned(with_realtime_version(self.req.query))),
                api_version: false,
                rewrite: true,
            },
            (ApiShape::Deployments, V1Op::Deployment) => Upstream {
                segments: under(&["openai", "deployments", c.deployment.as_str()]),
                query,
                api_version: true,
                rewrite: false,
            },
            (ApiShape::Deployments, V1Op::Resource) => Upstream {
                segments: under(&["openai"]),
                query,
                api_version: true,
                rewrite: true,
            },
            (ApiShape::Deployments, V1Op::Unsupported) => return Err(self.unsupported(b)),
        })
    }

    /// The body with its model rewritten to the deployment, when the two differ.
    fn rewritten(&self, deployment: Option<&str>) -> Result<Option<Bytes>, ProxyError> {
        match (&self.model, self.req.json(), deployment) {
            (Some(m), Some(body), Some(d)) if m != d => {
                with_model_at(body, d, self.req.path, self.field).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// The refusal for an operation the deployment API does not have, saying how to reach it.
    fn unsupported(&self, b: &Backend) -> ProxyError {
        ProxyError::NoRoute {
            path: self.req.path.to_string(),
            hint: format!(
                "backend {} uses Azure's deployment API, which has no /v1/{}; set api = \"v1\" on the backend to forward it to /openai/v1/{}",
                b.name,
                self.rest.join("/"),
                self.rest.join("/")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::error::ProxyError;
    use crate::routing::testing::{route, table};
    use crate::routing::{Payload, REALTIME_API_VERSION, Route, plan, resolve_payload};

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

    /// Operations on the deployment API: path, body, and the URL after `/openai`.
    const V1_SURFACES: [(&str, Option<&str>, &str); 10] = [
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

    #[test]
    fn every_v1_surface_reaches_the_deployment_api() {
        let t = table("");
        let base = "https://res.openai.azure.com/openai";
        let cases = V1_SURFACES;
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
}
