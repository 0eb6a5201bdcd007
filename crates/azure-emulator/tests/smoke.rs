//! Black-box checks of the Azure emulator over real HTTP on 127.0.0.1.
// Test helpers outside `#[test]` functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use azure_emulator::{
    AzureSample, Emulator, EmulatorConfig, Fault, IdentityFault, MintSpec, ResourceKind,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

const COG: &str = "https://cognitiveservices.azure.com";
const AI: &str = "https://ai.azure.com";
const CHAT: &str = "openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// A token's claims, read without checking the signature.
fn unverified_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn start(config: EmulatorConfig) -> Emulator {
    Emulator::start(config).await.unwrap()
}

fn url(base: &url::Url, path: &str) -> String {
    base.join(path).unwrap().to_string()
}

async fn json_of(resp: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, headers, value)
}

async fn chat(
    base: &url::Url,
    auth: Option<(&str, String)>,
    path: &str,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = client()
        .post(url(base, path))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some((name, value)) = auth {
        req = req.header(name, value);
    }
    json_of(req.send().await.unwrap()).await
}

fn bearer(token: &str) -> Option<(&'static str, String)> {
    Some(("authorization", format!("Bearer {token}")))
}

fn hello() -> Value {
    json!({"messages":[{"role":"user","content":"hello"}]})
}

async fn msi_token(emu: &Emulator, resource: &str) -> String {
    let resp = client()
        .get(url(
            &emu.url(),
            &format!("msi/token?api-version=2019-08-01&resource={resource}"),
        ))
        .header("x-identity-header", &emu.config().identity_header)
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

async fn token_request(emu: &Emulator, tenant: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let resp = client()
        .post(url(&emu.url(), &format!("{tenant}/oauth2/v2.0/token")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(resp).await;
    (status, body)
}

async fn jwks(emu: &Emulator) -> JwkSet {
    let tid = &emu.config().tenant_id;
    let resp = client()
        .get(url(&emu.url(), &format!("{tid}/discovery/v2.0/keys")))
        .send()
        .await
        .unwrap();
    serde_json::from_value(json_of(resp).await.2).unwrap()
}

fn audience_401(aud: &str) -> Value {
    json!({"error":{"code":"401","message":format!("Unauthorized. Access token is missing, invalid, audience is incorrect ({aud}), or have expired.")}})
}

#[tokio::test]
async fn msi_token_has_azure_claims_and_verifies_against_the_jwks() {
    let emu = start(EmulatorConfig::default()).await;
    let cfg = emu.config().clone();
    let token = msi_token(&emu, "https://cognitiveservices.azure.com/").await;

    let header = jsonwebtoken::decode_header(&token).unwrap();
    let keys = jwks(&emu).await;
    let jwk = keys.find(header.kid.as_deref().unwrap()).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[COG]);
    validation.set_issuer(&[format!("https://sts.windows.net/{}/", cfg.tenant_id)]);
    let claims =
        jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .unwrap()
            .claims;
    assert_eq!(claims["aud"], COG);
    assert_eq!(claims["appid"], cfg.managed_identity_client_id.as_str());
    assert_eq!(claims["oid"], cfg.managed_identity_object_id.as_str());
    assert_eq!(claims["sub"], claims["oid"]);
    assert_eq!(claims["tid"], cfg.tenant_id.as_str());
    assert_eq!(claims["ver"], "1.0");
    assert_eq!(claims["idtyp"], "app");
    assert!(
        claims["xms_mirid"]
            .as_str()
            .unwrap()
            .contains("/providers/Microsoft.ManagedIdentity/userAssignedIdentities/")
    );

    // App Service answer shape, and the header check.
    let base = emu.url();
    let resp = client()
        .get(url(
            &base,
            "msi/token?api-version=2019-08-01&resource=https://ai.azure.com",
        ))
        .header("x-identity-header", &cfg.identity_header)
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 200);
    assert_eq!(body["resource"], AI);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["client_id"], cfg.managed_identity_client_id.as_str());
    assert!(body["expires_on"].as_str().unwrap().parse::<i64>().is_ok());
    let resp = client()
        .get(url(&base, "msi/token?api-version=2019-08-01&resource=x"))
        .header("x-identity-header", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = client()
        .get(url(
            &base,
            "msi/token?api-version=2019-08-01&resource=x&client_id=00000000-1111-2222-3333-444444444444",
        ))
        .header("x-identity-header", &cfg.identity_header)
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error":"invalid_request","error_description":"Identity not found"})
    );

    // IMDS: the Metadata header is required; the answer has expires_in.
    let imds = "metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://cognitiveservices.azure.com";
    let resp = client().get(url(&base, imds)).send().await.unwrap();
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error":"invalid_request","error_description":"Required metadata header not specified"})
    );
    let resp = client()
        .get(url(&base, imds))
        .header("metadata", "true")
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 200);
    assert!(body["expires_in"].as_str().unwrap().parse::<i64>().unwrap() > 3000);
    let stats = emu.stats();
    assert_eq!(
        (stats.msi_token_requests, stats.imds_token_requests),
        (4, 2)
    );
    assert_eq!(stats.token_requests, 6);

    // OIDC metadata points at the real authority host.
    let resp = client()
        .get(url(
            &base,
            &format!("{}/v2.0/.well-known/openid-configuration", cfg.tenant_id),
        ))
        .send()
        .await
        .unwrap();
    let (_, _, meta) = json_of(resp).await;
    assert_eq!(
        meta["issuer"],
        format!("https://login.microsoftonline.com/{}/v2.0", cfg.tenant_id)
    );
    assert_eq!(
        meta["jwks_uri"],
        format!(
            "https://login.microsoftonline.com/{}/discovery/v2.0/keys",
            cfg.tenant_id
        )
    );
}

#[tokio::test]
async fn client_credentials_succeed_and_fail_with_each_aadsts_error() {
    let emu = start(EmulatorConfig::default()).await;
    let tid = emu.config().tenant_id.clone();
    emu.register_app(&tid, "app-1", "right");
    let scope = "https://cognitiveservices.azure.com/.default";
    let form = |secret: &'static str, client: &'static str| {
        vec![
            ("grant_type", "client_credentials"),
            ("client_id", client),
            ("client_secret", secret),
            ("scope", scope),
        ]
    };

    let (status, body) = token_request(&emu, &tid, &form("right", "app-1")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    let claims = unverified_claims(body["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], COG);
    assert_eq!(claims["appid"], "app-1");
    assert_eq!(claims["tid"], tid.as_str());

    let expect = |body: &Value, code: u64, text: &str| {
        assert_eq!(body["error_codes"], json!([code]), "{body}");
        let description = body["error_description"].as_str().unwrap();
        assert!(description.starts_with(text), "{description}");
        assert!(description.contains(" Trace ID: "), "{description}");
        assert!(description.contains(" Correlation ID: "), "{description}");
        assert_eq!(
            body["error_uri"],
            format!("https://login.microsoftonline.com/error?code={code}")
        );
        assert!(body["trace_id"].is_string() && body["timestamp"].is_string());
    };

    let (status, body) = token_request(&emu, "no-such-tenant", &form("right", "app-1")).await;
    assert_eq!(status, 400);
    expect(
        &body,
        90002,
        "AADSTS90002: Tenant 'no-such-tenant' not found.",
    );

    let (status, body) = token_request(&emu, &tid, &form("right", "app-2")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
    expect(
        &body,
        700016,
        &format!(
            "AADSTS700016: Application with identifier 'app-2' was not found in the directory '{tid}'."
        ),
    );

    let (status, body) = token_request(&emu, &tid, &form("wrong", "app-1")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    expect(
        &body,
        7000215,
        "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app 'app-1'.",
    );

    emu.expire_app_secret("app-1");
    let (status, body) = token_request(&emu, &tid, &form("right", "app-1")).await;
    assert_eq!(status, 401);
    expect(
        &body,
        7000222,
        "AADSTS7000222: The provided client secret keys for app 'app-1' are expired.",
    );

    let jwt_bearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    let assertion = |a: &'static str| {
        vec![
            ("grant_type", "client_credentials"),
            ("client_id", "wi-app"),
            ("client_assertion_type", jwt_bearer),
            ("client_assertion", a),
            ("scope", "https://ai.azure.com/.default"),
        ]
    };
    let (status, body) = token_request(&emu, &tid, &assertion("not-a-jwt")).await;
    assert_eq!(status, 400);
    expect(
        &body,
        50027,
        "AADSTS50027: JWT token is invalid or malformed.",
    );

    let federated = emu.mint(&MintSpec::new("api://AzureADTokenExchange"));
    let federated: &'static str = Box::leak(federated.into_boxed_str());
    let (status, body) = token_request(&emu, &tid, &assertion(federated)).await;
    assert_eq!(status, 200, "{body}");
    let claims = unverified_claims(body["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], AI);
    assert_eq!(claims["appid"], "wi-app");
    assert_eq!(emu.stats().entra_token_requests, 7);
}

#[tokio::test]
async fn data_plane_checks_audience_api_version_and_deployment_like_azure() {
    let emu = start(EmulatorConfig::default()).await;
    let base = emu.url();
    let good = msi_token(&emu, COG).await;

    let (status, headers, body) = chat(&base, bearer(&good), CHAT, &hello()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(headers["x-emulator-audience"], COG);
    assert!(headers.contains_key("apim-request-id"));

    let wrong = emu.mint(&MintSpec::new("https://management.azure.com"));
    let (status, headers, body) = chat(&base, bearer(&wrong), CHAT, &hello()).await;
    assert_eq!(status, 401);
    assert_eq!(body, audience_401(COG));
    assert!(!headers.contains_key("x-emulator-audience"));
    assert!(headers.contains_key("apim-request-id"));

    let (status, _, body) = chat(&base, None, CHAT, &hello()).await;
    assert_eq!((status, body), (401, audience_401(COG)));

    let expired = emu.mint(&MintSpec {
        lifetime_secs: -60,
        ..MintSpec::new(COG)
    });
    let (status, _, body) = chat(&base, bearer(&expired), CHAT, &hello()).await;
    assert_eq!((status, body), (401, audience_401(COG)));

    let (status, _, body) = chat(
        &base,
        bearer(&good),
        "openai/deployments/gpt-4o/chat/completions",
        &hello(),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"error":{"code":"404","message":"Resource not found"}})
    );

    let (status, _, body) = chat(
        &base,
        bearer(&good),
        "openai/deployments/gpt-4o/chat/completions?api-version=latest",
        &hello(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error":{"code":"BadRequest","message":"API version not supported"}})
    );

    let not_found = json!({"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again."}});
    let (status, _, body) = chat(
        &base,
        bearer(&good),
        "openai/deployments/GPT-4o/chat/completions?api-version=2024-10-21",
        &hello(),
    )
    .await;
    assert_eq!((status, body), (404, not_found.clone()));
    let (status, _, body) = chat(
        &base,
        bearer(&good),
        "openai/v1/chat/completions",
        &json!({"model":"gpt-5","messages":[]}),
    )
    .await;
    assert_eq!((status, body), (404, not_found));

    let (status, _, body) = chat(
        &base,
        bearer(&good),
        "openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21",
        &json!({"input":"hi"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 8);

    let (status, _, body) = chat(&base, Some(("api-key", "anything".into())), CHAT, &hello()).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"error":{"code":"AuthenticationTypeDisabled","message":"Key based authentication is disabled for this resource."}})
    );

    let seen = emu.requests();
    assert_eq!(seen.len(), 10);
    assert_eq!(seen[0].status, 200);
    assert_eq!(seen[0].bearer_audience.as_deref(), Some(COG));
    assert_eq!(
        seen[0].header("Authorization"),
        Some(format!("Bearer {good}").as_str())
    );
    assert_eq!(seen[1].status, 401);
    assert_eq!(emu.stats().data_requests, 10);
}

#[tokio::test]
async fn keys_are_checked_when_the_resource_has_one() {
    let emu = start(EmulatorConfig {
        resource_key: Some("k-123".into()),
        ..EmulatorConfig::default()
    })
    .await;
    let (status, headers, _) = chat(
        &emu.url(),
        Some(("api-key", "k-123".into())),
        CHAT,
        &hello(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(!headers.contains_key("x-emulator-audience"));
    let (status, _, body) = chat(
        &emu.url(),
        Some(("api-key", "k-124".into())),
        CHAT,
        &hello(),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        body["error"]["message"],
        "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."
    );
}

#[tokio::test]
async fn streaming_arrives_as_separate_chunks_then_done() {
    let emu = start(EmulatorConfig {
        stream_events: 4,
        stream_interval: Duration::from_millis(40),
        ..EmulatorConfig::default()
    })
    .await;
    let token = emu.mint(&MintSpec::new(COG));
    let mut resp = client()
        .post(url(&emu.url(), CHAT))
        .header("authorization", format!("Bearer {token}"))
        .body(json!({"stream":true,"messages":[{"role":"user","content":"count"}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let started = Instant::now();
    let mut chunks = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        chunks.push((started.elapsed(), chunk));
    }
    assert!(chunks.len() >= 4, "{} chunks", chunks.len());
    assert!(chunks.last().unwrap().0 >= Duration::from_millis(100));
    let all: Vec<u8> = chunks.iter().flat_map(|(_, c)| c.to_vec()).collect();
    let text = String::from_utf8(all).unwrap();
    let events: Vec<&str> = text.split_terminator("\n\n").collect();
    assert_eq!(events.len(), 5);
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    let mut content = String::new();
    for e in &events[..4] {
        let v: Value = serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk");
        content.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap());
    }
    assert!(content.contains("You said: count"));
    let stats = emu.stats();
    assert_eq!((stats.open_streams, stats.cancelled_streams), (0, 0));
}

#[tokio::test]
async fn responses_api_streams_named_events() {
    let emu = start(EmulatorConfig {
        stream_interval: Duration::ZERO,
        ..EmulatorConfig::default()
    })
    .await;
    let token = emu.mint(&MintSpec::new(COG));
    let resp = client()
        .post(url(&emu.url(), "openai/v1/responses"))
        .header("authorization", format!("Bearer {token}"))
        .body(json!({"model":"gpt-4o","input":"hi","stream":true}).to_string())
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    assert!(text.starts_with("event: response.created\n"));
    assert_eq!(
        text.matches("event: response.output_text.delta\n").count(),
        5
    );
    assert!(text.contains("event: response.completed\n"));
}

#[tokio::test]
async fn client_going_away_mid_stream_is_counted_and_resets_break_the_body() {
    let emu = start(EmulatorConfig {
        stream_events: 100,
        stream_interval: Duration::from_millis(10),
        ..EmulatorConfig::default()
    })
    .await;
    let token = emu.mint(&MintSpec::new(COG));
    let streamed = json!({"stream":true,"messages":[{"role":"user","content":"x"}]}).to_string();
    let mut resp = client()
        .post(url(&emu.url(), CHAT))
        .header("authorization", format!("Bearer {token}"))
        .body(streamed.clone())
        .send()
        .await
        .unwrap();
    assert!(resp.chunk().await.unwrap().is_some());
    assert_eq!(emu.stats().open_streams, 1);
    drop(resp);
    let deadline = Instant::now() + Duration::from_secs(3);
    while emu.stats().cancelled_streams == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(emu.stats().cancelled_streams, 1);
    assert_eq!(emu.stats().open_streams, 0);

    emu.script("gpt-4o", vec![Fault::ResetMidStream { after_events: 2 }]);
    let resp = client()
        .post(url(&emu.url(), CHAT))
        .header("authorization", format!("Bearer {token}"))
        .body(streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.is_err());
}

#[tokio::test]
async fn foundry_takes_only_its_audience_and_regional_endpoints_refuse_tokens() {
    let emu = start(EmulatorConfig::default()).await;
    let foundry = emu.add_resource(ResourceKind::Foundry).await.unwrap();
    let regional = emu.add_resource(ResourceKind::Regional).await.unwrap();
    let cog = emu.mint(&MintSpec::new(COG));
    let ai = emu.mint(&MintSpec::new(AI));

    let (status, _, body) = chat(&foundry, bearer(&cog), CHAT, &hello()).await;
    assert_eq!((status, body), (401, audience_401(AI)));
    let (status, headers, _) = chat(&foundry, bearer(&ai), CHAT, &hello()).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-emulator-audience"], AI);
    let (status, _, _) = chat(&emu.url(), bearer(&ai), CHAT, &hello()).await;
    assert_eq!(status, 401);

    let (status, _, body) = chat(&regional, bearer(&cog), CHAT, &hello()).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error":{"code":"BadRequest","message":"Please provide an authentication key."}})
    );
    assert_eq!(emu.stats().data_requests, 4);
}

/// Sends a chat completion on `client` (its kept-alive connections reused): the status, or the
/// transport error's text.
async fn chat_on(client: &reqwest::Client, emu: &Emulator, token: &str) -> Result<u16, String> {
    client
        .post(url(&emu.url(), CHAT))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(hello().to_string())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn a_reset_after_the_request_reaches_the_client_as_a_reset_with_no_answer() {
    let emu = start(EmulatorConfig::default()).await;
    let token = emu.mint(&MintSpec::new(COG));
    emu.script("gpt-4o", vec![Fault::ResetAfterRequest]);
    let c = client();
    let err = chat_on(&c, &emu, &token).await.unwrap_err();
    assert!(
        err.contains("reset") || err.contains("IncompleteMessage") || err.contains("closed"),
        "{err}"
    );
    // The request arrived whole before the reset.
    assert_eq!(emu.stats().data_requests, 1);
    assert_eq!(chat_on(&c, &emu, &token).await, Ok(200));
}

#[tokio::test]
async fn a_stale_connection_fault_waits_for_a_request_on_a_kept_alive_connection() {
    let emu = start(EmulatorConfig::default()).await;
    let token = emu.mint(&MintSpec::new(COG));
    emu.script("gpt-4o", vec![Fault::StaleConnection]);
    // New connections pass (each client has its own), and the fault stays queued.
    for _ in 0..2 {
        assert_eq!(chat_on(&client(), &emu, &token).await, Ok(200));
    }
    let c = client();
    assert_eq!(chat_on(&c, &emu, &token).await, Ok(200));
    // The second request on that client's connection finds it closed under it.
    assert!(chat_on(&c, &emu, &token).await.is_err());
    assert_eq!(chat_on(&c, &emu, &token).await, Ok(200));
    assert_eq!(chat_on(&c, &emu, &token).await, Ok(200));
}

#[tokio::test]
async fn file_uploads_pop_the_faults_scripted_for_files() {
    let emu = start(EmulatorConfig::default()).await;
    let token = emu.mint(&MintSpec::new(COG));
    emu.script("files", vec![Fault::Status(503), Fault::ResetAfterRequest]);
    let form = "--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\n\r\n{}\r\n--b--\r\n";
    let upload = |c: reqwest::Client| {
        c.post(url(&emu.url(), "openai/files?api-version=2024-10-21"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "multipart/form-data; boundary=b")
            .body(form)
            .send()
    };
    assert_eq!(upload(client()).await.unwrap().status(), 503);
    assert!(upload(client()).await.is_err());
    assert_eq!(upload(client()).await.unwrap().status(), 200);
}

#[tokio::test]
async fn scripted_faults_pop_one_per_request() {
    let emu = start(EmulatorConfig::default()).await;
    let token = emu.mint(&MintSpec::new(COG));
    emu.script(
        "gpt-4o",
        vec![
            Fault::RateLimited {
                retry_after_ms: 1500,
            },
            Fault::Status(503),
            Fault::Sample(AzureSample::PermissionDenied403),
        ],
    );
    let (status, headers, body) = chat(&emu.url(), bearer(&token), CHAT, &hello()).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "2");
    assert_eq!(headers["retry-after-ms"], "1500");
    assert_eq!(body["error"]["code"], "429");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit")
    );
    let (status, _, body) = chat(&emu.url(), bearer(&token), CHAT, &hello()).await;
    assert_eq!((status, &body["error"]["code"]), (503, &json!("503")));
    let (status, _, body) = chat(&emu.url(), bearer(&token), CHAT, &hello()).await;
    assert_eq!(status, 403);
    let oid = &emu.config().managed_identity_object_id;
    assert_eq!(
        body["error"]["message"],
        format!(
            "The principal `{oid}` lacks the required data action `Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action` to perform `POST /openai/deployments/{{deployment-id}}/chat/completions` operation."
        )
    );
    let (status, _, _) = chat(&emu.url(), bearer(&token), CHAT, &hello()).await;
    assert_eq!(status, 200);

    emu.script("gpt-4o", vec![Fault::Hang]);
    let hung = client()
        .post(url(&emu.url(), CHAT))
        .header("authorization", format!("Bearer {token}"))
        .body(hello().to_string())
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(hung.unwrap_err().is_timeout());
}

#[tokio::test]
async fn revoked_tokens_are_rejected_and_new_ones_accepted() {
    let emu = start(EmulatorConfig::default()).await;
    let old = msi_token(&emu, COG).await;
    let (status, _, _) = chat(&emu.url(), bearer(&old), CHAT, &hello()).await;
    assert_eq!(status, 200);
    emu.revoke_issued_tokens();
    let (status, _, body) = chat(&emu.url(), bearer(&old), CHAT, &hello()).await;
    assert_eq!((status, body), (401, audience_401(COG)));
    let new = msi_token(&emu, COG).await;
    let (status, _, _) = chat(&emu.url(), bearer(&new), CHAT, &hello()).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn rotation_replaces_the_kid_and_old_tokens_fail() {
    let emu = start(EmulatorConfig::default()).await;
    let before = jwks(&emu).await;
    let old = emu.mint(&MintSpec::new(COG));
    let kid = emu.rotate_signing_key();
    let after = jwks(&emu).await;
    assert_eq!(after.keys.len(), 1);
    assert_eq!(after.keys[0].common.key_id.as_deref(), Some(kid.as_str()));
    assert_ne!(before.keys[0].common.key_id, after.keys[0].common.key_id);
    let (status, _, _) = chat(&emu.url(), bearer(&old), CHAT, &hello()).await;
    assert_eq!(status, 401);
    let new = emu.mint(&MintSpec::new(COG));
    assert_eq!(
        jsonwebtoken::decode_header(&new).unwrap().kid.as_deref(),
        Some(kid.as_str())
    );
    let (status, _, _) = chat(&emu.url(), bearer(&new), CHAT, &hello()).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn identity_faults_hit_every_token_endpoint() {
    let emu = start(EmulatorConfig::default()).await;
    let tid = emu.config().tenant_id.clone();
    emu.register_app(&tid, "app-1", "s");
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "app-1"),
        ("client_secret", "s"),
        ("scope", "https://cognitiveservices.azure.com/.default"),
    ];
    emu.set_identity_fault(Some(IdentityFault::Down));
    let (status, body) = token_request(&emu, &tid, &form).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("temporarily_unavailable"))
    );
    let resp = client()
        .get(url(
            &emu.url(),
            "msi/token?api-version=2019-08-01&resource=x",
        ))
        .header("x-identity-header", &emu.config().identity_header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);

    emu.set_identity_fault(Some(IdentityFault::Error {
        status: 400,
        aadsts: 700016,
    }));
    let (status, body) = token_request(&emu, &tid, &form).await;
    assert_eq!(status, 400);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS700016: Application with identifier 'app-1' was not found")
    );

    emu.set_identity_fault(None);
    let (status, _) = token_request(&emu, &tid, &form).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn control_api_drives_the_emulator_from_outside() {
    let emu = start(EmulatorConfig::default()).await;
    let base = emu.url();
    let resp = client()
        .post(url(&base, "emulator/mint"))
        .body(json!({"aud": AI, "version": "v2", "roles": ["r1"]}).to_string())
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 200);
    let claims = unverified_claims(body["access_token"].as_str().unwrap());
    assert_eq!(claims["ver"], "2.0");
    assert_eq!(claims["roles"], json!(["r1"]));

    let resp = client()
        .post(url(&base, "emulator/script"))
        .body(json!({"deployment":"gpt-4o","faults":[{"status":502}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let token = emu.mint(&MintSpec::new(COG));
    let (status, _, _) = chat(&base, bearer(&token), CHAT, &hello()).await;
    assert_eq!(status, 502);

    let resp = client()
        .post(url(&base, "emulator/identity-fault"))
        .body(r#"{"fault":"nope"}"#)
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid JSON body for /emulator/identity-fault")
    );

    let resp = client()
        .get(url(&base, "emulator/stats"))
        .send()
        .await
        .unwrap();
    let (_, _, stats) = json_of(resp).await;
    assert_eq!(stats["data_requests"], 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_hanging_requests_promptly() {
    let emu = start(EmulatorConfig::default()).await;
    let token = emu.mint(&MintSpec::new(COG));
    emu.script("gpt-4o", vec![Fault::Hang]);
    let request = tokio::spawn(
        client()
            .post(url(&emu.url(), CHAT))
            .header("authorization", format!("Bearer {token}"))
            .body(hello().to_string())
            .send(),
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while emu.requests().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(emu.requests()[0].status, 0, "no answer yet");
    let started = Instant::now();
    emu.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let answered = request.await.unwrap();
    assert!(answered.map_or(true, |r| r.status() == 503));
}
