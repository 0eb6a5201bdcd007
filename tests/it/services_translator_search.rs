//! Translator and Azure AI Search through the swap: Translator's global endpoint gets the
//! resource id and region beside the bearer (never the client's own region), its custom domain
//! the bearer alone; Search gets a token for its own audience for the `api-key` its clients
//! send. Each service's refusal of a misconfigured backend is explained by its own rule.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use azure_emulator::{AuthForm, Emulator, ResourceKind, ServiceOptions};

async fn harness(kind: ResourceKind, options: ServiceOptions, backend: &str) -> Harness {
    let emu = emulator().await;
    let endpoint = add_service(&emu, kind, options).await;
    let rid = ServiceOptions::default_resource_id(kind);
    let text = service_config(&emu.url(), &endpoint, &backend.replace("{rid}", &rid), "");
    proxy(emu, &text).await
}

async fn translate(h: &Harness, path: &str) -> reqwest::Response {
    client()
        .post(h.url(path))
        .header("ocp-apim-subscription-key", KEY)
        .header("ocp-apim-subscription-region", "eastus")
        .json(&serde_json::json!([{"Text": "Hello"}]))
        .send()
        .await
        .unwrap()
}

fn only(emu: &Emulator) -> azure_emulator::SeenRequest {
    let seen = emu.requests();
    assert_eq!(seen.len(), 1, "one request upstream: {seen:?}");
    seen.into_iter().next().unwrap()
}

#[tokio::test]
async fn the_global_endpoint_gets_the_resource_id_and_region_beside_the_bearer() {
    let h = harness(
        ResourceKind::TranslatorGlobal,
        ServiceOptions::default(),
        "service = \"translator\"\nregion = \"westeurope\"\nresource_id = \"{rid}\"",
    )
    .await;
    let r = translate(
        &h,
        &format!(
            "/translate?api-version=3.0&to=de&Subscription-Key={KEY}&Subscription-Region=eastus"
        ),
    )
    .await;
    assert_eq!(r.status(), 200, "{:?}", r.headers());
    assert_eq!(r.headers()["x-emulator-auth"], "entra");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body[0]["translations"][0]["text"], "[de] Hello");
    let seen = only(&h.emulator);
    assert!(matches!(seen.auth, AuthForm::Bearer { .. }));
    assert_eq!(
        seen.resource_id_header.as_deref(),
        Some(ServiceOptions::default_resource_id(ResourceKind::TranslatorGlobal).as_str())
    );
    // The backend's region, not the one the client sent with its key.
    assert_eq!(seen.region_header.as_deref(), Some("westeurope"));
    assert!(seen.query_credentials.is_empty());
    assert_eq!(seen.path_and_query, "/translate?api-version=3.0&to=de");
    h.stop().await;
}

#[tokio::test]
async fn without_region_the_global_endpoint_refuses_and_the_diagnosis_says_set_region() {
    // On an Azure host name `config check` refuses this config; the emulator's loopback host
    // lets it run, to show what Translator answers.
    let h = harness(
        ResourceKind::TranslatorGlobal,
        ServiceOptions::default(),
        "service = \"translator\"",
    )
    .await;
    let r = translate(&h, "/translate?api-version=3.0&to=de").await;
    assert_eq!(r.status(), 401);
    let diagnosis = r.headers()["x-entra-proxy-diagnosis"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(diagnosis.starts_with("translator-region: "), "{diagnosis}");
    assert!(diagnosis.contains("set region = "), "{diagnosis}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], 401000);
    let seen = only(&h.emulator);
    assert_eq!(
        seen.region_header, None,
        "the client's region never goes on"
    );
    assert_eq!(seen.resource_id_header, None);
    h.stop().await;
}

#[tokio::test]
async fn a_custom_domain_translator_gets_the_bearer_alone() {
    let h = harness(
        ResourceKind::AiServices,
        ServiceOptions::default(),
        "service = \"translator\"",
    )
    .await;
    let r = translate(&h, "/translator/text/v3.0/translate?api-version=3.0&to=fr").await;
    assert_eq!(r.status(), 200);
    let seen = only(&h.emulator);
    assert!(matches!(seen.auth, AuthForm::Bearer { .. }));
    assert_eq!(seen.region_header, None);
    assert_eq!(seen.resource_id_header, None);
    h.stop().await;
}

#[tokio::test]
async fn search_gets_a_search_token_for_an_api_key_and_a_query_key_in_the_url() {
    // The service follows the host on Azure (`*.search.windows.net`); on loopback it is named.
    let h = harness(
        ResourceKind::Search,
        ServiceOptions::default(),
        "service = \"search\"",
    )
    .await;
    let r = client()
        .get(h.url(&format!("/indexes?api-version=2024-07-01&api-key={KEY}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = only(&h.emulator);
    assert_eq!(
        seen.auth,
        AuthForm::Bearer {
            audience: Some("https://search.azure.com".into())
        }
    );
    assert!(seen.query_credentials.is_empty());
    assert_eq!(seen.path_and_query, "/indexes?api-version=2024-07-01");
    h.stop().await;
}

#[tokio::test]
async fn search_refuses_a_cognitive_services_token_and_the_diagnosis_names_the_fix() {
    // A search service reached as `cognitive` (a private DNS name, the wrong `service`): its
    // token is for Cognitive Services, which Search refuses with a challenge naming its own.
    let h = harness(
        ResourceKind::Search,
        ServiceOptions::default(),
        "service = \"cognitive\"",
    )
    .await;
    let r = client()
        .get(h.url("/indexes?api-version=2024-07-01"))
        .header("api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("resource_id=\"https://search.azure.com\"")
    );
    let diagnosis = r.headers()["x-entra-proxy-diagnosis"].to_str().unwrap();
    assert!(diagnosis.starts_with("search-audience: "), "{diagnosis}");
    assert!(diagnosis.contains(COGNITIVE_AUD), "{diagnosis}");
    assert!(
        diagnosis.contains("set service = \"search\" on backend svc"),
        "{diagnosis}"
    );
    assert_eq!(
        h.emulator.requests().len(),
        1,
        "no refresh for a config error"
    );
    h.stop().await;
}

#[tokio::test]
async fn with_several_backends_a_services_paths_go_to_its_only_backend() {
    let emu = emulator().await;
    let search = add_service(&emu, ResourceKind::Search, ServiceOptions::default()).await;
    let ai = add_service(&emu, ResourceKind::AiServices, ServiceOptions::default()).await;
    // The OpenAI backend first, then a search and a multi-service backend: no header needed.
    let text = base_config(&emu.url()).replacen(
        "[[models]]",
        &format!(
            "[[backends]]\nname = \"search\"\nendpoint = \"{search}\"\nservice = \"search\"\n\n[[backends]]\nname = \"multi\"\nendpoint = \"{ai}\"\nservice = \"cognitive\"\n\n[[models]]"
        ),
        1,
    );
    let h = proxy(emu, &text).await;
    let r = client()
        .get(h.url("/indexes?api-version=2024-07-01"))
        .header("api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        h.emulator.requests().pop().unwrap().auth,
        AuthForm::Bearer {
            audience: Some("https://search.azure.com".into())
        }
    );
    let r = client()
        .get(h.url("/documentintelligence/documentModels?api-version=2024-11-30"))
        .header("api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Speech's paths go to the multi-service resource, the only one that serves them.
    let r = client()
        .get(h.url("/tts/cognitiveservices/voices/list"))
        .header("api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Anything else still needs the header.
    let r = client()
        .get(h.url("/somewhere/else"))
        .header("api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.1, "no_route");
    h.stop().await;
}
