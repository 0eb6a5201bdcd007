//! The Azure AI services beside OpenAI — Speech, Translator, Azure AI Search, Document
//! Intelligence, Language, Content Safety, Vision — each on the kind of host Azure serves it
//! from, with the credentials and error bodies that service really uses.
//!
//! A listener of one of these kinds answers through [`handle`]: it records the request, applies
//! the configured latency, lets the service's module answer, and adds Azure's request-id headers.
//! Per-resource facts (ARM resource id, region, key, page size, switches) live in
//! [`ServiceOptions`]; per-resource state (search indexes, long-running operations) in
//! [`Service`].

pub(crate) mod cognitive;
pub(crate) mod credential;
pub(crate) mod docintel;
pub(crate) mod search;
pub(crate) mod speech;
pub(crate) mod sts;
pub(crate) mod translator;

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, Method, Uri};
use serde::{Deserialize, Serialize};

use super::state::{SeenRequest, lock};
use super::{Ctx, ResourceKind};
use crate::respond;

/// The ARM resource id a resource has unless told otherwise (with the account name after it).
const DEFAULT_RESOURCE_ID_PREFIX: &str = "/subscriptions/00000000-0000-4000-8000-0000000000e1/resourceGroups/emulator-rg/providers/Microsoft.CognitiveServices/accounts/";
/// The Azure region a resource is in unless told otherwise.
pub const DEFAULT_REGION: &str = "westeurope";
/// How many items a page holds by default (Search results, Document Intelligence models).
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Where an answer points when [`ServiceOptions::foreign_links`] is on: another resource's host
/// (never contacted by the emulator; a test only compares the text).
pub const FOREIGN_HOST: &str = "other-resource.cognitiveservices.azure.com";
/// The storage account of the blob SAS URLs the emulator writes into answers.
pub const FOREIGN_BLOB_HOST: &str = "emulatorstore.blob.core.windows.net";

/// How Azure AI Search answers a request it cannot authenticate. Source: "Enable or disable
/// role-based access control in Azure AI Search" (Microsoft Learn): `aadAuthFailureMode`,
/// default `http401WithBearerChallenge`, alternatively `http403`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SearchAuthFailure {
    /// 401 with a `WWW-Authenticate: Bearer …` challenge.
    #[default]
    Http401WithBearerChallenge,
    /// 403 with an empty body.
    Http403,
}

/// The facts of one emulated Azure AI resource. `ServiceOptions::default()` is a resource in
/// `westeurope` with keys disabled (`disableLocalAuth`), the default page size, and answers
/// that point only at the emulator's own host.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceOptions {
    /// The ARM resource id Speech's `aad#{id}#{token}` form and Translator's
    /// `Ocp-Apim-ResourceId` must name (compared ignoring case and a trailing `/`).
    /// Empty means `/subscriptions/…/providers/Microsoft.CognitiveServices/accounts/emulator-{kind}`.
    pub resource_id: String,
    /// The resource's region: what Translator's `Ocp-Apim-Subscription-Region` must say, and
    /// what issued Speech tokens carry. `global` makes the region header optional (Translator).
    pub region: String,
    /// The resource key (Search: the admin key); `None` means key auth is off
    /// (`disableLocalAuth`, or a Search service with API keys disabled).
    pub key: Option<String>,
    /// Search only: a query key, accepted for reads (search, get, count) and refused for writes.
    pub query_key: Option<String>,
    /// Items per page where Azure pages (Search results, Document Intelligence model lists);
    /// at least 1.
    pub page_size: usize,
    /// How many polls of a long-running operation answer `running` before it succeeds.
    pub polls_before_done: u32,
    /// Answers also point elsewhere: a blob SAS URL inside JSON results, and
    /// Document Intelligence's `Operation-Location` on [`FOREIGN_HOST`] (the result is still
    /// served on the emulator's own path).
    pub foreign_links: bool,
    /// Lifetime of tokens from `issueToken` (Azure: 10 minutes).
    #[serde(with = "secs")]
    pub issued_token_lifetime: Duration,
    /// Azure AI Search's `aadAuthFailureMode`.
    pub search_auth_failure: SearchAuthFailure,
}

/// One emulated resource: its options and what it stores.
pub(crate) struct Service {
    pub(crate) options: ServiceOptions,
    /// Search indexes by name (case-sensitive, as Azure AI Search names are lower-case).
    pub(crate) indexes: Mutex<search::Indexes>,
    /// Long-running operations by id: Document Intelligence results, Language jobs, batch
    /// transcriptions.
    pub(crate) operations: Mutex<HashMap<String, Operation>>,
}

/// A long-running operation: how many more polls answer `running`, and the finished answer.
#[derive(Debug, Clone)]
pub(crate) struct Operation {
    pub(crate) polls_left: u32,
    pub(crate) running: serde_json::Value,
    pub(crate) done: serde_json::Value,
}

/// A request as the services read it.
pub(crate) struct Req<'a> {
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: &'a [u8],
    /// The request's entry in the request log (for what verifying its credential learns).
    pub(crate) seq: u64,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            resource_id: String::new(),
            region: DEFAULT_REGION.to_owned(),
            key: None,
            query_key: None,
            page_size: DEFAULT_PAGE_SIZE,
            polls_before_done: 1,
            foreign_links: false,
            issued_token_lifetime: Duration::from_secs(600),
            search_auth_failure: SearchAuthFailure::default(),
        }
    }
}

impl fmt::Debug for ServiceOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceOptions")
            .field("resource_id", &self.resource_id)
            .field("region", &self.region)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("query_key", &self.query_key.as_ref().map(|_| "<redacted>"))
            .field("page_size", &self.page_size)
            .field("polls_before_done", &self.polls_before_done)
            .field("foreign_links", &self.foreign_links)
            .field("issued_token_lifetime", &self.issued_token_lifetime)
            .field("search_auth_failure", &self.search_auth_failure)
            .finish()
    }
}

impl ServiceOptions {
    /// The ARM resource id a resource of `kind` has when `resource_id` is left empty:
    /// `/subscriptions/00000000-0000-4000-8000-0000000000e1/resourceGroups/emulator-rg/providers/Microsoft.CognitiveServices/accounts/emulator-{kind}`.
    pub fn default_resource_id(kind: ResourceKind) -> String {
        format!("{DEFAULT_RESOURCE_ID_PREFIX}emulator-{}", kind.slug())
    }

    /// The options with the defaults a kind of resource needs filled in.
    pub(crate) fn resolved(mut self, kind: ResourceKind) -> ServiceOptions {
        if self.resource_id.trim().is_empty() {
            self.resource_id = ServiceOptions::default_resource_id(kind);
        }
        self.page_size = self.page_size.max(1);
        self
    }
}

impl Service {
    pub(crate) fn new(options: ServiceOptions) -> Service {
        Service {
            options,
            indexes: Mutex::default(),
            operations: Mutex::default(),
        }
    }

    /// Stores a long-running operation under `id`.
    pub(crate) fn start_operation(
        &self,
        id: &str,
        running: serde_json::Value,
        done: serde_json::Value,
    ) {
        lock(&self.operations).insert(
            id.to_owned(),
            Operation {
                polls_left: self.options.polls_before_done,
                running,
                done,
            },
        );
    }

    /// One poll of an operation: its running answer while polls are left, then the done one.
    pub(crate) fn poll_operation(&self, id: &str) -> Option<serde_json::Value> {
        let mut ops = lock(&self.operations);
        let op = ops.get_mut(id)?;
        if op.polls_left > 0 {
            op.polls_left -= 1;
            return Some(op.running.clone());
        }
        Some(op.done.clone())
    }

    /// The finished answers of every operation whose id starts with `prefix`.
    pub(crate) fn operations_with_prefix(&self, prefix: &str) -> Vec<serde_json::Value> {
        let ops = lock(&self.operations);
        let mut found: Vec<(&String, &Operation)> = ops
            .iter()
            .filter(|(id, _)| id.starts_with(prefix))
            .collect();
        found.sort_by(|a, b| a.0.cmp(b.0));
        found.into_iter().map(|(_, op)| op.done.clone()).collect()
    }
}

impl Req<'_> {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The first value of a query parameter, decoded; `name` is matched exactly.
    pub(crate) fn query(&self, name: &str) -> Option<String> {
        self.query_all(name).into_iter().next()
    }

    /// Every value of a query parameter, decoded, in order.
    pub(crate) fn query_all(&self, name: &str) -> Vec<String> {
        self.uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .filter(|(n, _)| n == name)
                    .map(|(_, v)| v.into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first value of a query parameter whose name matches case-insensitively.
    pub(crate) fn query_ci(&self, name: &str) -> Option<String> {
        self.uri.query().and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.into_owned())
        })
    }

    /// `http://{Host}` as the client addressed it: the base of every URL the emulator writes
    /// into an answer, so behind a proxy it names the host the proxy called.
    pub(crate) fn base(&self) -> String {
        let host = self
            .header("host")
            .map(str::to_owned)
            .or_else(|| self.uri.authority().map(|a| a.as_str().to_owned()))
            .unwrap_or_else(|| "127.0.0.1".to_owned());
        format!("http://{host}")
    }

    pub(crate) fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(self.body).ok()
    }
}

/// The handler of every listener of a service kind.
pub(crate) async fn handle(
    State(ctx): State<Ctx>,
    conn: Option<axum::Extension<crate::conn::Connection>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    body: Bytes,
) -> Response {
    if ctx.kind == ResourceKind::AiServices && !cognitive::is_own_path(uri.path()) {
        // A multi-service resource's custom domain serves the OpenAI data plane too.
        return crate::openai::handle(State(ctx), conn, method, uri, headers, body).await;
    }
    let shared = &ctx.shared;
    shared.count_data_request();
    let seq = shared.record(SeenRequest::from_parts(&method, &uri, &headers, &body));
    let response = if shared.sleep(shared.config.latency).await {
        let req = Req {
            method: &method,
            uri: &uri,
            headers: &headers,
            body: &body,
            seq,
        };
        match ctx.kind {
            ResourceKind::AiServices => cognitive::answer(&ctx, &req, upgrade),
            ResourceKind::SpeechRegional => speech::answer(&ctx, &req, upgrade),
            ResourceKind::TranslatorGlobal => translator::answer(&ctx, &req),
            ResourceKind::Search => search::answer(&ctx, &req),
            ResourceKind::OpenAi | ResourceKind::Foundry | ResourceKind::Regional => {
                respond::json(404, crate::samples::status_body(404))
            }
        }
    } else {
        respond::shutting_down()
    };
    let response = finish(response);
    shared.set_status(seq, response.status().as_u16());
    response
}

/// Azure's request-id headers, unless the service already set its own.
fn finish(mut response: Response) -> Response {
    if !response.headers().contains_key("apim-request-id") {
        let request_id = uuid::Uuid::new_v4().to_string();
        respond::set_header(&mut response, "apim-request-id", &request_id);
    }
    respond::set_header(&mut response, "x-ms-region", "Emulator");
    response
}

/// A response with that status and no body.
pub(crate) fn empty(status: u16) -> Response {
    let status =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    axum::response::IntoResponse::into_response(status)
}

/// Path segments after the leading `/`, percent-decoded; a trailing `/` is ignored.
pub(crate) fn segments(path: &str) -> Vec<String> {
    path.trim_end_matches('/')
        .split('/')
        .skip(1)
        .map(|s| {
            url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
                .next()
                .map_or_else(|| s.to_owned(), |(_, v)| v.into_owned())
        })
        .collect()
}

/// A blob SAS URL like the ones Azure services hand out for results.
pub(crate) fn blob_sas_url(container: &str, name: &str) -> String {
    format!(
        "https://{FOREIGN_BLOB_HOST}/{container}/{name}?sv=2024-11-04&st=2025-01-01T00%3A00%3A00Z&se=2099-01-01T00%3A00%3A00Z&sr=b&sp=r&sig=ZW11bGF0b3Itc2lnbmF0dXJl"
    )
}

/// `Duration` as whole seconds in JSON.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_fill_in_a_resource_id_per_kind_and_hide_keys() {
        let o = ServiceOptions {
            key: Some("sekret-key".into()),
            page_size: 0,
            ..ServiceOptions::default()
        }
        .resolved(ResourceKind::Search);
        assert!(o.resource_id.ends_with("/accounts/emulator-search"));
        assert_eq!(
            o.resource_id,
            ServiceOptions::default_resource_id(ResourceKind::Search)
        );
        assert!(o.resource_id.starts_with("/subscriptions/"));
        assert_eq!(o.page_size, 1);
        assert!(!format!("{o:?}").contains("sekret-key"));
        let named = ServiceOptions {
            resource_id:
                "/subscriptions/s/resourceGroups/g/providers/Microsoft.CognitiveServices/accounts/a"
                    .into(),
            ..ServiceOptions::default()
        }
        .resolved(ResourceKind::AiServices);
        assert!(named.resource_id.ends_with("/accounts/a"));
    }

    #[test]
    fn operations_run_for_the_configured_polls_then_finish() {
        let s = Service::new(ServiceOptions {
            polls_before_done: 2,
            ..ServiceOptions::default()
        });
        s.start_operation("a", serde_json::json!("running"), serde_json::json!("done"));
        assert_eq!(s.poll_operation("a"), Some(serde_json::json!("running")));
        assert_eq!(s.poll_operation("a"), Some(serde_json::json!("running")));
        assert_eq!(s.poll_operation("a"), Some(serde_json::json!("done")));
        assert_eq!(s.poll_operation("a"), Some(serde_json::json!("done")));
        assert_eq!(s.poll_operation("b"), None);
    }

    #[test]
    fn segments_are_decoded_and_trailing_slashes_ignored() {
        assert_eq!(segments("/a/b%20c/"), vec!["a", "b c"]);
        assert_eq!(segments("/indexes('x')/docs"), vec!["indexes('x')", "docs"]);
        assert_eq!(segments("/a+b"), vec!["a+b"]);
    }
}
