//! What diagnosis is told about a request to a backend: plain data from the snapshot and the
//! route, read by the relay (to decide on a token refresh) and by the answer (to explain it).

use crate::diagnose;
use crate::routing::Route;
use crate::state::Snapshot;

/// What diagnosis needs to know about where the request went, and the answer's
/// `WWW-Authenticate` challenge.
pub(super) fn upstream_facts<'a>(
    state: &'a Snapshot,
    route: &'a Route,
    challenge: Option<&'a str>,
) -> diagnose::Upstream<'a> {
    let backend = &state.routes.backends()[route.backend].config;
    let presenter = &backend.presenter;
    let service = diagnose::ServiceFacts {
        service: backend.service,
        form: presenter.form(route.uri.path()),
        translator_headers: presenter.sends_translator_headers(),
        resource_id: backend.resource_id.as_ref().map(|id| id.as_str()),
        region: backend.region.as_deref(),
        challenge,
    };
    diagnose::Upstream {
        backend: &backend.name,
        host: backend.host(),
        host_kind: backend.host_kind,
        audience: backend.scope.audience(),
        known_deployments: &backend.deployments,
        cloud: state.config.cloud,
        uri: &route.uri,
        endpoint_path: backend.endpoint.path(),
        deployment: route.deployment.as_deref(),
        service,
    }
}
