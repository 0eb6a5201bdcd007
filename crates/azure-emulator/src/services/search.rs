//! Azure AI Search's data plane (`{service}.search.windows.net`): indexes and their documents
//! in memory, searched by plain term matching, paged like the service pages.
//!
//! Sources (Microsoft Learn): "Search Service REST API" (`/indexes/{name}` and the OData
//! forms `/indexes('{name}')`, `docs/index` and `docs/search.index`, `docs/search` and
//! `docs/search.post.search`, `GET docs?search=…`, `docs/$count`, `docs/{key}` and
//! `docs('{key}')`, `api-version` on every request, errors `{"error":{"code":"","message":…}}`);
//! "Search Documents (REST)": when results are cut the answer carries `@odata.nextLink` and
//! `@search.nextPageParameters` (the request to post for the next page), otherwise 50 per
//! page; "Connect to Azure AI Search using roles" / "Enable or disable role-based access
//! control": Entra tokens for `https://search.azure.com` (per cloud), `api-key` with an admin
//! key (everything) or a query key (queries only); an unauthenticated request gets 401 with a
//! bearer challenge (`aadAuthFailureMode` `http401WithBearerChallenge`, the default) or 403;
//! a wrong key gets 403.

use std::collections::BTreeMap;

use axum::response::{IntoResponse as _, Response};
use serde_json::{Map, Value, json};

use super::credential::{self, Accepts, Denied, Granted, Presented};
use super::{Req, SearchAuthFailure, blob_sas_url, empty, segments};
use crate::state::lock;
use crate::{Ctx, respond};

/// Indexes by name.
pub(crate) type Indexes = BTreeMap<String, Index>;

/// One index: its definition, key field and documents in upload order.
#[derive(Debug, Clone)]
pub(crate) struct Index {
    definition: Value,
    key_field: String,
    docs: Vec<(String, Map<String, Value>)>,
}

/// A Search request, by method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    ListIndexes,
    CreateIndex,
    GetIndex(String),
    PutIndex(String),
    DeleteIndex(String),
    IndexDocs(String),
    SearchPost(String),
    SearchGet(String),
    Count(String),
    GetDoc(String, String),
    NotFound,
}

impl Route {
    fn parse(method: &http::Method, path: &str) -> Route {
        let segs = segments(path);
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        let m = method.as_str();
        let Some((first, rest)) = s.split_first() else {
            return Route::NotFound;
        };
        let index = match odata(first, "indexes") {
            Some(Some(name)) => name,
            Some(None) => {
                return match (m, rest) {
                    ("GET", []) => Route::ListIndexes,
                    ("POST", []) => Route::CreateIndex,
                    (_, [name]) => Route::by_method(m, (*name).to_owned()),
                    (_, [name, more @ ..]) => Route::docs(m, (*name).to_owned(), more),
                    _ => Route::NotFound,
                };
            }
            None => return Route::NotFound,
        };
        match rest {
            [] => Route::by_method(m, index),
            more => Route::docs(m, index, more),
        }
    }

    fn by_method(method: &str, name: String) -> Route {
        match method {
            "GET" => Route::GetIndex(name),
            "PUT" => Route::PutIndex(name),
            "DELETE" => Route::DeleteIndex(name),
            _ => Route::NotFound,
        }
    }

    /// Routes under `…/docs`.
    fn docs(method: &str, index: String, rest: &[&str]) -> Route {
        let Some((docs, tail)) = rest.split_first() else {
            return Route::NotFound;
        };
        if let Some(Some(key)) = odata(docs, "docs") {
            return match (method, tail) {
                ("GET", []) => Route::GetDoc(index, key),
                _ => Route::NotFound,
            };
        }
        if *docs != "docs" {
            return Route::NotFound;
        }
        match (method, tail) {
            ("GET", []) => Route::SearchGet(index),
            ("GET", ["$count"]) => Route::Count(index),
            ("POST", ["index" | "search.index"]) => Route::IndexDocs(index),
            ("POST", ["search" | "search.post.search"]) => Route::SearchPost(index),
            ("GET", [key]) => Route::GetDoc(index, (*key).to_owned()),
            _ => Route::NotFound,
        }
    }

    /// Whether the operation changes something (needs an admin key).
    fn writes(&self) -> bool {
        matches!(
            self,
            Route::CreateIndex | Route::PutIndex(_) | Route::DeleteIndex(_) | Route::IndexDocs(_)
        )
    }
}

/// `name` → `Some(None)`; `name('x')` → `Some(Some("x"))` (with `''` unescaped); else `None`.
fn odata(segment: &str, name: &str) -> Option<Option<String>> {
    if segment == name {
        return Some(None);
    }
    let inner = segment
        .strip_prefix(name)?
        .strip_prefix("('")?
        .strip_suffix("')")?;
    Some(Some(inner.replace("''", "'")))
}

/// The listener of [`crate::ResourceKind::Search`].
pub(crate) fn answer(ctx: &Ctx, req: &Req<'_>) -> Response {
    let route = Route::parse(req.method, req.uri.path());
    let granted = match authenticate(ctx, req, route.writes()) {
        Ok(granted) => granted,
        Err(denied) => return refusal(ctx, denied),
    };
    let Some(api_version) = req.query("api-version") else {
        return error(
            400,
            "The api-version query parameter (?api-version=) is required for all requests.",
        );
    };
    let mut response = serve(ctx, req, route, &api_version);
    respond::set_header(&mut response, "x-emulator-auth", granted.name());
    response
}

fn authenticate(ctx: &Ctx, req: &Req<'_>, writes: bool) -> Result<Granted, Denied> {
    let options = &ctx.service.options;
    let audience = ctx.shared.config.cloud.search_audience();
    let presented = credential::presented(req.headers, &["api-key"], None);
    let accepts = Accepts {
        key: true,
        issued: false,
        entra: Some(audience),
        aad: None,
    };
    // A query key is a second key that only reads.
    if let (Presented::Key(given), Some(query_key), false) =
        (presented, options.query_key.as_deref(), writes)
        && crate::state::key_matches(query_key, given)
    {
        return Ok(Granted::Key);
    }
    credential::check(
        &ctx.shared,
        presented,
        accepts,
        options.key.as_deref(),
        &options.resource_id,
        req.seq,
    )
}

/// Search's answer to a refused credential.
fn refusal(ctx: &Ctx, denied: Denied) -> Response {
    let audience = ctx.shared.config.cloud.search_audience();
    match denied {
        Denied::BadKey | Denied::KeysDisabled => empty(403),
        Denied::Missing | Denied::BadToken | Denied::OtherResource | Denied::FormRefused => {
            match ctx.service.options.search_auth_failure {
                SearchAuthFailure::Http403 => empty(403),
                SearchAuthFailure::Http401WithBearerChallenge => {
                    let cloud = ctx.shared.config.cloud;
                    let mut response = empty(401);
                    respond::set_header(
                        &mut response,
                        "www-authenticate",
                        &format!(
                            "Bearer authorization_uri=\"{}/{}/oauth2/authorize\", resource_id=\"{audience}\"",
                            cloud.authority_host(),
                            ctx.shared.config.tenant_id
                        ),
                    );
                    response
                }
            }
        }
    }
}

fn serve(ctx: &Ctx, req: &Req<'_>, route: Route, api_version: &str) -> Response {
    let service = &ctx.service;
    let base = req.base();
    let service_name = service
        .options
        .resource_id
        .rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or("emulator-search")
        .to_owned();
    let mut indexes = lock(&service.indexes);
    let missing = |name: &str| {
        error(
            404,
            &format!("No index with the name '{name}' was found in the service '{service_name}'."),
        )
    };
    match route {
        Route::NotFound => error(404, "Resource not found."),
        Route::ListIndexes => {
            let value: Vec<Value> = indexes.values().map(|i| i.definition.clone()).collect();
            respond::json_value(
                200,
                &json!({"@odata.context": format!("{base}/$metadata#indexes"), "value": value}),
            )
        }
        Route::CreateIndex => {
            let Some(body) = req.json() else {
                return error(
                    400,
                    "The request is invalid. Details: index : The index definition is missing or not valid JSON.",
                );
            };
            let Some(name) = body["name"].as_str().map(str::to_owned) else {
                return error(
                    400,
                    "The request is invalid. Details: index : The name field is required.",
                );
            };
            if indexes.contains_key(&name) {
                return error(
                    409,
                    &format!("Cannot create index '{name}' because it already exists."),
                );
            }
            put_index(&mut indexes, &base, &name, body)
        }
        Route::PutIndex(name) => {
            let Some(body) = req.json() else {
                return error(
                    400,
                    "The request is invalid. Details: index : The index definition is missing or not valid JSON.",
                );
            };
            if body["name"].as_str().is_some_and(|n| n != name) {
                return error(
                    400,
                    "The index name in the request body does not match the index name in the URL.",
                );
            }
            put_index(&mut indexes, &base, &name, body)
        }
        Route::GetIndex(name) => match indexes.get(&name) {
            Some(index) => respond::json_value(200, &index.definition),
            None => missing(&name),
        },
        Route::DeleteIndex(name) => match indexes.remove(&name) {
            Some(_) => empty(204),
            None => missing(&name),
        },
        Route::IndexDocs(name) => match indexes.get_mut(&name) {
            Some(index) => index_docs(index, req),
            None => missing(&name),
        },
        Route::Count(name) => match indexes.get(&name) {
            Some(index) => (
                [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                index.docs.len().to_string(),
            )
                .into_response(),
            None => missing(&name),
        },
        Route::GetDoc(name, key) => match indexes.get(&name) {
            Some(index) => match index.docs.iter().find(|(k, _)| *k == key) {
                Some((_, doc)) => {
                    let mut doc = select(doc, req.query("$select").as_deref());
                    doc.insert(
                        "@odata.context".into(),
                        json!(format!(
                            "{base}/indexes('{name}')/$metadata#docs(*)/$entity"
                        )),
                    );
                    respond::json_value(200, &Value::Object(doc))
                }
                None => empty(404),
            },
            None => missing(&name),
        },
        Route::SearchPost(name) => {
            let Some(index) = indexes.get(&name) else {
                return missing(&name);
            };
            let Some(body) = req.json().filter(Value::is_object) else {
                return error(
                    400,
                    "The request is invalid. Details: parameters : The search request is missing or not valid JSON.",
                );
            };
            let query = Query::from_body(&body);
            let next_link = format!(
                "{base}/indexes('{name}')/docs/search.post.search?api-version={api_version}"
            );
            let page = search(
                index,
                &query,
                service.options.page_size,
                ctx.service.options.foreign_links,
            );
            let mut out = page.answer(&base, &name);
            if let Some(next_skip) = page.next_skip {
                let mut next = body.clone();
                next["skip"] = json!(next_skip);
                if let Some(top) = query.top {
                    next["top"] = json!(top.saturating_sub(page.returned));
                }
                out["@odata.nextLink"] = json!(next_link);
                out["@search.nextPageParameters"] = next;
            }
            respond::json_value(200, &out)
        }
        Route::SearchGet(name) => {
            let Some(index) = indexes.get(&name) else {
                return missing(&name);
            };
            let query = Query::from_params(req);
            let page = search(
                index,
                &query,
                service.options.page_size,
                ctx.service.options.foreign_links,
            );
            let mut out = page.answer(&base, &name);
            if let Some(next_skip) = page.next_skip {
                let mut params: Vec<(String, String)> = req
                    .uri
                    .query()
                    .map(|q| {
                        url::form_urlencoded::parse(q.as_bytes())
                            .into_owned()
                            .filter(|(n, _)| n != "$skip" && n != "$top")
                            .collect()
                    })
                    .unwrap_or_default();
                params.push(("$skip".into(), next_skip.to_string()));
                if let Some(top) = query.top {
                    params.push(("$top".into(), top.saturating_sub(page.returned).to_string()));
                }
                let query_string = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(params)
                    .finish();
                out["@odata.nextLink"] = json!(format!("{base}{}?{query_string}", req.uri.path()));
            }
            respond::json_value(200, &out)
        }
    }
}

fn put_index(indexes: &mut Indexes, base: &str, name: &str, mut body: Value) -> Response {
    let key_field = body["fields"].as_array().and_then(|fields| {
        fields
            .iter()
            .find(|f| f["key"] == true)
            .and_then(|f| f["name"].as_str())
            .map(str::to_owned)
    });
    let Some(key_field) = key_field else {
        return error(
            400,
            "The request is invalid. Details: definition : The index must contain exactly one key field of type 'Edm.String'.",
        );
    };
    body["name"] = json!(name);
    body["@odata.context"] = json!(format!("{base}/$metadata#indexes/$entity"));
    body["@odata.etag"] = json!(format!("\"0x{:X}\"", body.to_string().len()));
    match indexes.get_mut(name) {
        Some(index) => {
            index.definition = body.clone();
            index.key_field = key_field;
            respond::json_value(200, &body)
        }
        None => {
            indexes.insert(
                name.to_owned(),
                Index {
                    definition: body.clone(),
                    key_field,
                    docs: Vec::new(),
                },
            );
            respond::json_value(201, &body)
        }
    }
}

/// `{"value":[{"@search.action":…, …}]}` → one result per action; 207 when any failed.
fn index_docs(index: &mut Index, req: &Req<'_>) -> Response {
    let Some(actions) = req.json().and_then(|b| b["value"].as_array().cloned()) else {
        return error(
            400,
            "The request is invalid. Details: actions : No indexing actions found in the request.",
        );
    };
    let mut results = Vec::new();
    let mut failed = false;
    for action in actions {
        let Value::Object(mut doc) = action else {
            failed = true;
            results.push(json!({"key": null, "status": false, "errorMessage": "The document is not a JSON object.", "statusCode": 400}));
            continue;
        };
        let kind = doc
            .remove("@search.action")
            .and_then(|a| a.as_str().map(str::to_owned))
            .unwrap_or_else(|| "upload".to_owned());
        let Some(key) = doc
            .get(&index.key_field)
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            failed = true;
            results.push(json!({"key": null, "status": false, "errorMessage": format!("The key field '{}' is missing.", index.key_field), "statusCode": 400}));
            continue;
        };
        let at = index.docs.iter().position(|(k, _)| *k == key);
        let (ok, code, message) = match (kind.as_str(), at) {
            ("upload", Some(i)) => {
                index.docs[i].1 = doc;
                (true, 200, None)
            }
            ("upload" | "mergeOrUpload", None) => {
                index.docs.push((key.clone(), doc));
                (true, 201, None)
            }
            ("merge" | "mergeOrUpload", Some(i)) => {
                index.docs[i].1.extend(doc);
                (true, 200, None)
            }
            ("merge", None) => (false, 404, Some("Document not found.")),
            ("delete", Some(i)) => {
                index.docs.remove(i);
                (true, 200, None)
            }
            ("delete", None) => (true, 200, None),
            _ => (false, 400, Some("The @search.action value is not valid.")),
        };
        failed |= !ok;
        results
            .push(json!({"key": key, "status": ok, "errorMessage": message, "statusCode": code}));
    }
    respond::json_value(if failed { 207 } else { 200 }, &json!({ "value": results }))
}

/// What a search asks for, from a POST body or GET parameters.
#[derive(Debug, Clone, Default, PartialEq)]
struct Query {
    search: String,
    top: Option<usize>,
    skip: usize,
    count: bool,
    select: Option<String>,
}

impl Query {
    fn from_body(body: &Value) -> Query {
        let number = |v: &Value| v.as_u64().and_then(|n| usize::try_from(n).ok());
        Query {
            search: body["search"].as_str().unwrap_or("*").to_owned(),
            top: number(&body["top"]),
            skip: number(&body["skip"]).unwrap_or(0),
            count: body["count"] == true,
            select: body["select"].as_str().map(str::to_owned),
        }
    }

    fn from_params(req: &Req<'_>) -> Query {
        let number = |name: &str| req.query(name).and_then(|v| v.parse::<usize>().ok());
        Query {
            search: req.query("search").unwrap_or_else(|| "*".to_owned()),
            top: number("$top"),
            skip: number("$skip").unwrap_or(0),
            count: req.query("$count").as_deref() == Some("true"),
            select: req.query("$select"),
        }
    }
}

/// One page of results.
struct Page {
    results: Vec<Value>,
    total: usize,
    count: bool,
    returned: usize,
    /// `skip` of the next page when the results were cut.
    next_skip: Option<usize>,
}

impl Page {
    fn answer(&self, base: &str, index: &str) -> Value {
        let mut out = json!({
            "@odata.context": format!("{base}/indexes('{index}')/$metadata#docs(*)"),
        });
        if self.count {
            out["@odata.count"] = json!(self.total);
        }
        out["value"] = Value::Array(self.results.clone());
        out
    }
}

fn search(index: &Index, query: &Query, page_size: usize, foreign_links: bool) -> Page {
    let terms: Vec<String> = query
        .search
        .split_whitespace()
        .filter(|t| *t != "*")
        .map(str::to_lowercase)
        .collect();
    let mut hits: Vec<(f64, &Map<String, Value>)> = index
        .docs
        .iter()
        .filter_map(|(_, doc)| {
            if terms.is_empty() {
                return Some((1.0, doc));
            }
            let text = Value::Object(doc.clone()).to_string().to_lowercase();
            let matched = terms.iter().filter(|t| text.contains(t.as_str())).count();
            (matched > 0).then(|| (f64::from(u32::try_from(matched).unwrap_or(u32::MAX)), doc))
        })
        .collect();
    hits.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
    let total = hits.len();
    let window: Vec<_> = hits
        .into_iter()
        .skip(query.skip)
        .take(query.top.unwrap_or(usize::MAX))
        .collect();
    let returned = window.len().min(page_size);
    let cut = window.len() > returned;
    let results = window
        .into_iter()
        .take(returned)
        .map(|(score, doc)| {
            let mut doc = select(doc, query.select.as_deref());
            if foreign_links {
                doc.insert(
                    "@emulator.source".into(),
                    json!(blob_sas_url("documents", "source.pdf")),
                );
            }
            doc.insert("@search.score".into(), json!(score));
            Value::Object(doc)
        })
        .collect();
    Page {
        results,
        total,
        count: query.count,
        returned,
        next_skip: cut.then_some(query.skip + returned),
    }
}

/// Only the fields `select` names (comma-separated); all for `None` or `*`.
fn select(doc: &Map<String, Value>, select: Option<&str>) -> Map<String, Value> {
    match select.map(str::trim) {
        None | Some("*" | "") => doc.clone(),
        Some(list) => {
            let wanted: Vec<&str> = list.split(',').map(str::trim).collect();
            doc.iter()
                .filter(|(k, _)| wanted.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }
    }
}

/// Azure AI Search's error body: an empty code and a message.
fn error(status: u16, message: &str) -> Response {
    respond::json_value(status, &json!({"error": {"code": "", "message": message}}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn both_path_forms_route_alike() {
        let p = |m: &Method, path: &str| Route::parse(m, path);
        assert_eq!(p(&Method::GET, "/indexes"), Route::ListIndexes);
        assert_eq!(
            p(&Method::PUT, "/indexes/hotels"),
            Route::PutIndex("hotels".into())
        );
        assert_eq!(
            p(&Method::PUT, "/indexes('hotels')"),
            Route::PutIndex("hotels".into())
        );
        assert_eq!(
            p(&Method::POST, "/indexes/h/docs/index"),
            Route::IndexDocs("h".into())
        );
        assert_eq!(
            p(&Method::POST, "/indexes('h')/docs/search.index"),
            Route::IndexDocs("h".into())
        );
        assert_eq!(
            p(&Method::POST, "/indexes/h/docs/search"),
            Route::SearchPost("h".into())
        );
        assert_eq!(
            p(&Method::POST, "/indexes('h')/docs/search.post.search"),
            Route::SearchPost("h".into())
        );
        assert_eq!(
            p(&Method::GET, "/indexes/h/docs"),
            Route::SearchGet("h".into())
        );
        assert_eq!(
            p(&Method::GET, "/indexes('h')/docs/$count"),
            Route::Count("h".into())
        );
        assert_eq!(
            p(&Method::GET, "/indexes('h')/docs('k''1')"),
            Route::GetDoc("h".into(), "k'1".into())
        );
        assert_eq!(
            p(&Method::GET, "/indexes/h/docs/k1"),
            Route::GetDoc("h".into(), "k1".into())
        );
        assert_eq!(p(&Method::GET, "/other"), Route::NotFound);
        assert!(Route::IndexDocs("h".into()).writes());
        assert!(!Route::SearchPost("h".into()).writes());
    }

    #[test]
    fn searches_match_terms_and_page_by_the_page_size() {
        let mut index = Index {
            definition: json!({}),
            key_field: "id".into(),
            docs: Vec::new(),
        };
        for i in 0..7 {
            let mut doc = Map::new();
            doc.insert("id".into(), json!(i.to_string()));
            doc.insert(
                "text".into(),
                json!(if i % 2 == 0 { "blue sea" } else { "red sky" }),
            );
            index.docs.push((i.to_string(), doc));
        }
        let all = Query {
            search: "*".into(),
            count: true,
            ..Query::default()
        };
        let page = search(&index, &all, 3, false);
        assert_eq!((page.total, page.returned, page.next_skip), (7, 3, Some(3)));
        let last = search(
            &index,
            &Query {
                skip: 6,
                ..all.clone()
            },
            3,
            false,
        );
        assert_eq!((last.returned, last.next_skip), (1, None));
        let blue = search(
            &index,
            &Query {
                search: "BLUE".into(),
                ..Query::default()
            },
            10,
            false,
        );
        assert_eq!(blue.total, 4);
        let top = search(
            &index,
            &Query {
                top: Some(3),
                ..all
            },
            3,
            false,
        );
        assert_eq!(top.next_skip, None);
        let picked = select(&index.docs[0].1, Some("id"));
        assert_eq!(Value::Object(picked), json!({"id": "0"}));
    }
}
