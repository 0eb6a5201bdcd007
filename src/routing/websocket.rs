//! Realtime WebSocket handshakes: the model named in the query mapped to its deployment.

use super::plan::Plan;
use super::route::{Incoming, Route};
use super::uri::{named_once, query_param, upstream_uri, with_param, with_realtime_version};
use crate::backends::BackendId;
use crate::config::ApiShape;
use crate::error::ProxyError;

/// The three shapes of a realtime handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Realtime {
    /// OpenAI's `/v1/realtime?model=`: the model must be one the proxy maps.
    OpenAi,
    /// Azure's GA `/openai/v1/realtime?model=`.
    AzureV1,
    /// Azure's `/openai/realtime?deployment=` on the deployment API.
    Deployment,
}

/// Azure's realtime endpoint on its v1 API.
const V1_PATH: &[&str] = &["openai", "v1", "realtime"];

/// Azure's realtime endpoint on its deployment API.
const DEPLOYMENT_PATH: &[&str] = &["openai", "realtime"];

impl Realtime {
    /// The realtime shape a plan has, if any.
    pub(super) fn of(plan: &Plan<'_>) -> Option<Realtime> {
        let realtime =
            |segs: &[std::borrow::Cow<'_, str>]| segs.len() == 1 && segs[0] == "realtime";
        match plan {
            Plan::OpenAi { rest } if realtime(rest) => Some(Realtime::OpenAi),
            Plan::AzureV1 { rest } if realtime(rest) => Some(Realtime::AzureV1),
            Plan::Other { segments }
                if segments.len() == 2 && segments[0] == "openai" && segments[1] == "realtime" =>
            {
                Some(Realtime::Deployment)
            }
            _ => None,
        }
    }

    /// The query parameter that names the model or deployment.
    fn param(self) -> &'static str {
        match self {
            Realtime::OpenAi | Realtime::AzureV1 => "model",
            Realtime::Deployment => "deployment",
        }
    }

    fn openai_style(self) -> bool {
        self == Realtime::OpenAi
    }

    /// Whether the handshake goes to the v1 realtime endpoint on a backend of this API shape.
    fn v1(self, api: ApiShape) -> bool {
        match self {
            Realtime::OpenAi => api == ApiShape::V1,
            Realtime::AzureV1 => true,
            Realtime::Deployment => false,
        }
    }
}

/// A realtime handshake: to the first place that serves the model, with the query's model
/// parameter set to its deployment.
pub(super) fn realtime(req: &Incoming<'_>, shape: Realtime) -> Result<Route, ProxyError> {
    named_once(req.query, &["model", "deployment"])?;
    let model = query_param(req.query, shape.param());
    let (backend, deployment) = target(req, shape, model.as_ref())?;
    let b = req.backend(backend);
    let v1 = shape.v1(b.api);
    let path = if v1 { V1_PATH } else { DEPLOYMENT_PATH };
    let query = upstream_query(req.query, shape, v1, deployment.as_deref());
    Ok(Route {
        backend,
        uri: upstream_uri(b, path, Some(&query), false)?,
        deployment,
        body: None,
        model,
    })
}

/// The backend and deployment: the first place that serves the model. A model the table does
/// not know is refused on OpenAI's shape and passes through on Azure's.
fn target(
    req: &Incoming<'_>,
    shape: Realtime,
    model: Option<&String>,
) -> Result<(BackendId, Option<String>), ProxyError> {
    let found = model.and_then(|m| req.table.lookup(m));
    match (found.and_then(|f| f.into_iter().next()), model) {
        (Some(c), _) => Ok((c.backend, Some(c.deployment))),
        (None, Some(m)) if shape.openai_style() => Err(ProxyError::UnknownModel {
            model: m.clone(),
            known: req.table.model_names().to_vec(),
        }),
        (None, None) if shape.openai_style() => Err(ProxyError::MissingQueryModel {
            param: shape.param(),
            known: req.table.model_names().to_vec(),
        }),
        // Not configured: pass it through and let Azure (and the diagnosis) speak.
        (None, m) => Ok((req.pick_backend()?, m.cloned())),
    }
}

/// The client's query with the model's parameter set to the deployment (on the deployment API
/// `deployment`, OpenAI's `model` dropped) and, on the deployment API, the realtime
/// api-version unless the client named one.
fn upstream_query(
    query: Option<&str>,
    shape: Realtime,
    v1: bool,
    deployment: Option<&str>,
) -> String {
    let query = match (deployment, v1) {
        (Some(d), true) => with_param(query, "model", None, d),
        (Some(d), false) => with_param(
            query,
            "deployment",
            shape.openai_style().then_some("model"),
            d,
        ),
        (None, _) => query.unwrap_or_default().to_string(),
    };
    if v1 {
        query
    } else {
        with_realtime_version(Some(&query))
    }
}

#[cfg(test)]
mod tests {
    use crate::error::ProxyError;
    use crate::routing::testing::table;
    use crate::routing::{REALTIME_API_VERSION, RoutingTable, plan, resolve_websocket};

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
        // A model named twice, in any case, could reach Azure unmapped: refused.
        for query in [
            "model=gpt-4o&Model=gpt-4o-mini",
            "model=gpt-4o&MODEL=gpt-4o",
            "deployment=a&model=gpt-4o&Deployment=b",
            "model=gpt-4o&mod%65l=x",
        ] {
            assert!(
                matches!(
                    ws(&t, "/openai/v1/realtime", query),
                    Err(ProxyError::DuplicateParameter { place: "query", .. })
                ),
                "{query}"
            );
        }
        // Named once in another case, it is mapped like `model`.
        assert_eq!(
            ws(&t, "/openai/v1/realtime", "Model=gpt-4o").unwrap(),
            "https://res.openai.azure.com/openai/v1/realtime?model=gpt-4o-2024-08-06"
        );
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
}
