//! Azure-shaped paths: the deployment API, the v1 API, and any other service's path as it came.

use super::model::{ModelField, body_model_at, with_model_at};
use super::route::{Incoming, Route};
use super::table::Candidate;
use super::uri::upstream_uri;
use crate::error::ProxyError;
use std::borrow::Cow;

/// `/openai/deployments/{deployment}/{rest…}`: to every place that serves the deployment (or
/// the model of that name), with the backend's default `api-version` unless the client named one.
pub(super) fn deployment(
    req: &Incoming<'_>,
    deployment: &str,
    rest: &[Cow<'_, str>],
) -> Result<Vec<Route>, ProxyError> {
    deployment_candidates(req, deployment)?
        .into_iter()
        .map(|c| {
            let b = req.backend(c.backend);
            let mut segs = vec!["openai", "deployments", c.deployment.as_str()];
            segs.extend(rest.iter().map(|s| &**s));
            Ok(Route {
                backend: c.backend,
                uri: upstream_uri(b, &segs, req.query, true)?,
                deployment: Some(c.deployment.clone()),
                body: None,
                model: None,
            })
        })
        .collect()
}

/// The places a deployment path may go. One the table does not know passes through to the only
/// backend or the chosen one; with several backends and no choice, the refusal lists the known.
fn deployment_candidates(
    req: &Incoming<'_>,
    deployment: &str,
) -> Result<Vec<Candidate>, ProxyError> {
    match req.table.lookup(deployment) {
        Some(found) => Ok(found),
        None if req.chosen_backend.is_some() || req.table.backends().len() == 1 => {
            // Not configured: pass it through and let Azure (and the diagnosis) speak.
            Ok(vec![Candidate::plain(req.pick_backend()?, deployment)])
        }
        None => Err(ProxyError::AmbiguousDeployment {
            deployment: deployment.to_string(),
            known: req.table.known_deployments(),
        }),
    }
}

/// `/openai/v1/{rest…}`: the body's `model` picks the places, and is rewritten to each one's
/// deployment; a model the table does not know goes as it is to the only backend or the chosen
/// one. No `api-version` is added.
pub(super) fn v1(req: &Incoming<'_>, rest: &[Cow<'_, str>]) -> Result<Vec<Route>, ProxyError> {
    let body = req.json();
    // GA realtime ephemeral keys name their model in `session`, as on `/v1`.
    let field = match rest {
        [realtime, client_secrets]
            if realtime == "realtime" && client_secrets == "client_secrets" =>
        {
            ModelField::InSession
        }
        _ => ModelField::TopLevel,
    };
    let model = body_model_at(req.path, body, field)?;
    let candidates = match model.as_deref().and_then(|m| req.table.lookup(m)) {
        Some(found) => found,
        None => vec![Candidate::plain(
            req.pick_backend()?,
            model.as_deref().unwrap_or_default(),
        )],
    };
    let mut segs = vec!["openai", "v1"];
    segs.extend(rest.iter().map(|s| &**s));
    candidates
        .into_iter()
        .map(|c| {
            let b = req.backend(c.backend);
            let new_body = match (&model, body) {
                (Some(m), Some(body)) if *m != c.deployment && !c.deployment.is_empty() => {
                    Some(with_model_at(body, &c.deployment, req.path, field)?)
                }
                _ => None,
            };
            Ok(Route {
                backend: c.backend,
                uri: upstream_uri(b, &segs, req.query, false)?,
                deployment: (!c.deployment.is_empty()).then_some(c.deployment),
                body: new_body,
                model: model.clone(),
            })
        })
        .collect()
}

/// Any other path (other Azure AI services, Foundry's `/models/...`): as it came, to the only
/// backend or the chosen one.
pub(super) fn pass_through(
    req: &Incoming<'_>,
    segments: &[Cow<'_, str>],
) -> Result<Vec<Route>, ProxyError> {
    let backend = req.pick_backend()?;
    let segs: Vec<&str> = segments.iter().map(|s| &**s).collect();
    Ok(vec![Route {
        backend,
        uri: upstream_uri(req.backend(backend), &segs, req.query, false)?,
        deployment: None,
        body: None,
        model: None,
    }])
}

#[cfg(test)]
mod tests {
    use crate::routing::testing::{route, table};

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
