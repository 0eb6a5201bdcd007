//! What the routing tests share: a one-backend table, and a request's first route.

use super::{Route, RoutingTable, plan, resolve};
use crate::config::Config;
use crate::error::ProxyError;
use bytes::Bytes;

/// One backend, `primary` (`extra` is added to its table), serving `gpt-4o` and `emb`.
pub(super) fn table(extra: &str) -> RoutingTable {
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

/// The first route of a request, as the request path resolves it.
pub(super) fn route(
    t: &RoutingTable,
    path: &str,
    query: Option<&str>,
    body: Option<&str>,
) -> Result<Route, ProxyError> {
    let p = plan(path)?;
    let body = body.map(|b| Bytes::from(b.to_string()));
    resolve(t, &p, path, query, None, body.as_ref()).map(|mut r| r.remove(0))
}
