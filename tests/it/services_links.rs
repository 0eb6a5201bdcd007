//! Long-running operations and paging through the proxy: Document Intelligence's
//! `Operation-Location` and `nextLink`, Search's `@odata.nextLink`, rewritten to the proxy (its
//! `Host`, or `[server] public_url`) so the client polls and pages with its key; links to
//! anything else — another resource, blob SAS URLs, a host with the backend's name as a prefix —
//! left byte for byte as Azure wrote them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use azure_emulator::{AuthForm, FOREIGN_BLOB_HOST, FOREIGN_HOST, ResourceKind, ServiceOptions};

const API: &str = "api-version=2024-11-30";

async fn docintel(options: ServiceOptions, backend: &str, extra: &str) -> (Harness, url::Url) {
    let emu = emulator().await;
    let endpoint = add_service(&emu, ResourceKind::AiServices, options).await;
    let text = service_config(&emu.url(), &endpoint, backend, extra);
    (proxy(emu, &text).await, endpoint)
}

async fn analyze(h: &Harness) -> reqwest::Response {
    client()
        .post(h.url(&format!(
            "/documentintelligence/documentModels/prebuilt-read:analyze?{API}"
        )))
        .header("ocp-apim-subscription-key", KEY)
        .header("content-type", "application/octet-stream")
        .body("%PDF-1.4 a document")
        .send()
        .await
        .unwrap()
}

async fn get(url: &str) -> reqwest::Response {
    client()
        .get(url)
        .header("ocp-apim-subscription-key", KEY)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn operation_location_points_at_the_proxy_and_the_client_polls_through_it() {
    let (h, _) = docintel(ServiceOptions::default(), "service = \"cognitive\"", "").await;
    let r = analyze(&h).await;
    assert_eq!(r.status(), 202);
    let location = r.headers()["operation-location"]
        .to_str()
        .unwrap()
        .to_string();
    let proxy_base = format!(
        "http://{}/documentintelligence/documentModels/prebuilt-read/analyzeResults/",
        h.addr
    );
    assert!(location.starts_with(&proxy_base), "{location}");
    assert!(location.ends_with(&format!("?{API}")), "{location}");
    let polled: serde_json::Value = get(&location).await.json().await.unwrap();
    assert_eq!(polled["status"], "running");
    let done: serde_json::Value = get(&location).await.json().await.unwrap();
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["analyzeResult"]["modelId"], "prebuilt-read");
    // Every call reached the resource with the proxy's token, none with the key.
    for seen in h.emulator.requests() {
        assert!(matches!(seen.auth, AuthForm::Bearer { .. }), "{seen:?}");
    }
    h.stop().await;
}

#[tokio::test]
async fn next_links_page_through_the_proxy_and_nothing_else_in_the_page_changes() {
    let options = ServiceOptions {
        page_size: 3,
        ..ServiceOptions::default()
    };
    let (h, endpoint) = docintel(options, "service = \"cognitive\"", "").await;
    let first = format!("/documentintelligence/documentModels?{API}");
    let r = get(&h.url(&first)).await;
    assert_eq!(r.status(), 200);
    let declared: usize = r.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let text = r.text().await.unwrap();
    assert_eq!(declared, text.len());
    let page: serde_json::Value = serde_json::from_str(&text).unwrap();
    let next = page["nextLink"].as_str().unwrap().to_string();
    assert_eq!(
        next,
        format!(
            "http://{}/documentintelligence/documentModels?{API}&skip=3",
            h.addr
        )
    );
    // The same page straight from the resource differs only in the link's origin.
    let direct = reqwest::Client::new()
        .get(format!(
            "{}documentintelligence/documentModels?{API}",
            endpoint
        ))
        .bearer_auth(
            h.emulator
                .mint(&azure_emulator::MintSpec::new(COGNITIVE_AUD)),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let emulator_origin = endpoint.as_str().trim_end_matches('/');
    assert_eq!(
        direct.replace(emulator_origin, &format!("http://{}", h.addr)),
        text
    );
    let mut ids: Vec<String> = Vec::new();
    let mut url = Some(h.url(&first));
    while let Some(u) = url {
        let page: serde_json::Value = get(&u).await.json().await.unwrap();
        ids.extend(
            page["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["modelId"].as_str().unwrap().to_string()),
        );
        url = page["nextLink"].as_str().map(str::to_string);
        if let Some(u) = &url {
            assert!(u.starts_with(&format!("http://{}/", h.addr)), "{u}");
        }
    }
    assert_eq!(ids.len(), 8);
    h.stop().await;
}

#[tokio::test]
async fn links_to_other_hosts_and_blob_sas_urls_are_left_as_they_are() {
    let options = ServiceOptions {
        foreign_links: true,
        page_size: 3,
        ..ServiceOptions::default()
    };
    let (h, _) = docintel(options, "service = \"cognitive\"", "").await;
    let r = analyze(&h).await;
    assert_eq!(r.status(), 202);
    let location = r.headers()["operation-location"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        location.starts_with(&format!("https://{FOREIGN_HOST}/documentintelligence/")),
        "{location}"
    );
    // The result is served on the resource's own path; its blob SAS URL stays.
    let path = location.split_once(FOREIGN_HOST).unwrap().1;
    get(&h.url(path)).await;
    let done: serde_json::Value = get(&h.url(path)).await.json().await.unwrap();
    let sas = done["analyzeResult"]["documents"][0]["fields"]["SourceUrl"]["valueString"]
        .as_str()
        .unwrap();
    assert!(
        sas.starts_with(&format!("https://{FOREIGN_BLOB_HOST}/")),
        "{sas}"
    );
    assert!(sas.contains("&sig="), "{sas}");
    let page: serde_json::Value =
        get(&h.url(&format!("/documentintelligence/documentModels?{API}")))
            .await
            .json()
            .await
            .unwrap();
    let container = page["value"][0]["azureBlobSource"]["containerUrl"]
        .as_str()
        .unwrap();
    assert!(container.starts_with(&format!("https://{FOREIGN_BLOB_HOST}/")));
    // The page's own nextLink is the resource's, and so the proxy's.
    assert!(
        page["nextLink"]
            .as_str()
            .unwrap()
            .starts_with(&format!("http://{}/", h.addr))
    );
    h.stop().await;
}

#[tokio::test]
async fn public_url_is_where_links_point_when_it_is_set() {
    let emu = emulator().await;
    let endpoint = add_service(&emu, ResourceKind::AiServices, ServiceOptions::default()).await;
    let text = service_config(&emu.url(), &endpoint, "service = \"cognitive\"", "").replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\npublic_url = \"https://ai-proxy.contoso.example\"",
    );
    let h = proxy(emu, &text).await;
    let r = analyze(&h).await;
    let location = r.headers()["operation-location"].to_str().unwrap();
    assert!(
        location.starts_with(
            "https://ai-proxy.contoso.example/documentintelligence/documentModels/prebuilt-read/analyzeResults/"
        ),
        "{location}"
    );
    h.stop().await;
}

#[tokio::test]
async fn search_pages_come_back_through_the_proxy() {
    let emu = emulator().await;
    let endpoint = add_service(
        &emu,
        ResourceKind::Search,
        ServiceOptions {
            page_size: 2,
            ..ServiceOptions::default()
        },
    )
    .await;
    let text = service_config(&emu.url(), &endpoint, "service = \"search\"", "");
    let h = proxy(emu, &text).await;
    let api = "api-version=2024-07-01";
    let index = serde_json::json!({"name": "hotels", "fields": [
        {"name": "id", "type": "Edm.String", "key": true},
        {"name": "description", "type": "Edm.String", "searchable": true}
    ]});
    let r = client()
        .put(h.url(&format!("/indexes('hotels')?{api}")))
        .header("api-key", KEY)
        .json(&index)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let docs: Vec<serde_json::Value> = (0..5)
        .map(|i| serde_json::json!({"@search.action": "upload", "id": i.to_string(), "description": "sea view"}))
        .collect();
    let r = client()
        .post(h.url(&format!(
            "/indexes('hotels')/docs/search.index?{api}&api-key={KEY}"
        )))
        .json(&serde_json::json!({ "value": docs }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .post(h.url(&format!("/indexes('hotels')/docs/search.post.search?{api}")))
        .header("api-key", KEY)
        .json(&serde_json::json!({"search": "sea"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page: serde_json::Value = r.json().await.unwrap();
    assert_eq!(page["value"].as_array().unwrap().len(), 2);
    assert_eq!(
        page["@odata.nextLink"],
        format!(
            "http://{}/indexes('hotels')/docs/search.post.search?{api}",
            h.addr
        )
        .as_str()
    );
    // The next page, posted to the link with the parameters Search handed back.
    let next = page["@odata.nextLink"].as_str().unwrap();
    let r = client()
        .post(next)
        .header("api-key", KEY)
        .json(&page["@search.nextPageParameters"])
        .send()
        .await
        .unwrap();
    let second: serde_json::Value = r.json().await.unwrap();
    assert_eq!(second["value"].as_array().unwrap().len(), 2);
    // The GET form pages by a GET link.
    let r = get_with_api_key(&h.url(&format!("/indexes('hotels')/docs?{api}&search=sea"))).await;
    let page: serde_json::Value = r.json().await.unwrap();
    let next = page["@odata.nextLink"].as_str().unwrap();
    assert!(
        next.starts_with(&format!("http://{}/indexes", h.addr)),
        "{next}"
    );
    let page: serde_json::Value = get_with_api_key(next).await.json().await.unwrap();
    assert_eq!(page["value"].as_array().unwrap().len(), 2);
    for seen in h.emulator.requests() {
        assert_eq!(
            seen.auth,
            AuthForm::Bearer {
                audience: Some("https://search.azure.com".into())
            },
            "{}",
            seen.path_and_query
        );
        assert!(seen.query_credentials.is_empty());
    }
    h.stop().await;
}

async fn get_with_api_key(url: &str) -> reqwest::Response {
    client()
        .get(url)
        .header("api-key", KEY)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_openai_backend_gets_its_operation_headers_rewritten_but_not_its_other_bodies() {
    // The multi-service resource as an `openai` backend: headers are rewritten on every
    // backend; bodies only on services and OpenAI's batch and file endpoints.
    let options = ServiceOptions {
        page_size: 3,
        ..ServiceOptions::default()
    };
    let (h, endpoint) = docintel(options, "", "").await;
    let r = analyze(&h).await;
    assert_eq!(r.status(), 202);
    let location = r.headers()["operation-location"].to_str().unwrap();
    assert!(
        location.starts_with(&format!("http://{}/", h.addr)),
        "{location}"
    );
    let page: serde_json::Value =
        get(&h.url(&format!("/documentintelligence/documentModels?{API}")))
            .await
            .json()
            .await
            .unwrap();
    assert!(
        page["nextLink"]
            .as_str()
            .unwrap()
            .starts_with(endpoint.as_str().trim_end_matches('/'))
    );
    h.stop().await;
}

/// A stand-in upstream that answers every request with links on hosts that only look like
/// the backend's: `127.0.0.1.evil.example` has the backend's host name as a prefix. (The
/// emulator writes its links on the host it was called by, so it cannot play this.)
async fn lookalike_upstream() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use axum::response::IntoResponse as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let port = addr.port();
    let app = axum::Router::new().fallback(move || async move {
        let evil = format!("http://127.0.0.1.evil.example:{port}/documentintelligence/op/1");
        let own = format!("http://127.0.0.1:{port}/documentintelligence/op/1");
        let body = serde_json::json!({
            "nextLink": format!("http://127.0.0.1.evil.example:{port}/next"),
            "ownLink": own.clone(),
            "userinfo": format!("http://127.0.0.1:{port}@evil.example/x"),
        });
        (
            axum::http::StatusCode::ACCEPTED,
            [
                ("operation-location", evil),
                ("location", own),
                (
                    "azure-asyncoperation",
                    format!("http://127.0.0.1:{port}.evil.example/x"),
                ),
            ],
            axum::Json(body),
        )
            .into_response()
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

#[tokio::test]
async fn a_host_with_the_backends_name_as_a_prefix_is_never_rewritten() {
    let emu = emulator().await;
    let (addr, task) = lookalike_upstream().await;
    let endpoint = url::Url::parse(&format!("http://127.0.0.1:{}/", addr.port())).unwrap();
    let text = service_config(&emu.url(), &endpoint, "service = \"cognitive\"", "");
    let h = proxy(emu, &text).await;
    let r = client()
        .post(h.url("/documentintelligence/anything"))
        .header("api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let port = addr.port();
    assert_eq!(
        r.headers()["operation-location"],
        format!("http://127.0.0.1.evil.example:{port}/documentintelligence/op/1").as_str()
    );
    assert_eq!(
        r.headers()["azure-asyncoperation"],
        format!("http://127.0.0.1:{port}.evil.example/x").as_str()
    );
    // The backend's own link, for contrast, is the proxy's.
    assert_eq!(
        r.headers()["location"],
        format!("http://{}/documentintelligence/op/1", h.addr).as_str()
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["nextLink"],
        format!("http://127.0.0.1.evil.example:{port}/next").as_str()
    );
    assert_eq!(
        body["userinfo"],
        format!("http://127.0.0.1:{port}@evil.example/x").as_str()
    );
    assert_eq!(
        body["ownLink"],
        format!("http://{}/documentintelligence/op/1", h.addr).as_str()
    );
    task.abort();
    h.stop().await;
}
