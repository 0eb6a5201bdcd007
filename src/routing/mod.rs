//! Request → [`Route`]: which backend, which upstream URL, and whether the body changes.
//! Azure-style paths pass through (the body is never parsed); OpenAI-style `/v1/...` paths map
//! `model` through `[[models]]` to a deployment.

use crate::config::ApiShape;
use crate::error::ProxyError;
use bytes::Bytes;
use route::Incoming;
use uri::{query_param, upstream_uri, with_param, with_realtime_version};

mod azure;
mod model;
mod openai;
mod plan;
mod route;
mod table;
#[cfg(test)]
mod testing;
mod uri;

pub use plan::{Plan, plan};
pub use route::{Payload, Route};
pub use table::{BACKEND_HEADER, RoutingTable};
pub use uri::REALTIME_API_VERSION;

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
    let req = Incoming {
        table,
        path,
        query,
        chosen_backend,
        payload,
    };
    match plan {
        Plan::Deployment { deployment, rest } => azure::deployment(&req, deployment, rest),
        Plan::AzureV1 { rest } => azure::v1(&req, rest),
        Plan::OpenAi { rest } => openai::resolve(&req, rest),
        Plan::ListModels => openai::list_models(&req),
        Plan::Other { segments } => azure::pass_through(&req, segments),
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
    use super::testing::table;
    use super::*;

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
}
