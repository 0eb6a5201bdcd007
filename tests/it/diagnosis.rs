//! Every Azure auth and routing failure explained over real HTTP: Azure's status and body come
//! back unchanged, with one `x-entra-proxy-diagnosis` line naming the cause and the fix, and
//! never the token. Also the `/debug/identity` view.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use azure_emulator::{
    AzureSample, DEFAULT_MI_CLIENT_ID, DEFAULT_MI_OBJECT_ID, Emulator, Fault, IdentityFault,
    ResourceKind, SampleContext,
};

const DIAGNOSIS: &str = "x-entra-proxy-diagnosis";
const CHAT_PATH: &str = "/openai/deployments/gpt-4o/chat/completions";

/// What came back for one request, plus the bearer the proxy sent Azure for it.
struct Answer {
    status: u16,
    diagnosis: String,
    body: String,
    retry_after: Option<String>,
    upstream_token: String,
}

impl Answer {
    /// The diagnosis header and the body hold no part of the upstream token.
    fn assert_no_token(&self) {
        let sig = self.upstream_token.rsplit('.').next().unwrap();
        for (what, text) in [("header", &self.diagnosis), ("body", &self.body)] {
            assert!(
                !text.contains(&self.upstream_token),
                "{what} leaked the token"
            );
            assert!(!text.contains(sig), "{what} leaked the token's signature");
        }
    }

    fn code(&self) -> &str {
        self.diagnosis.split(':').next().unwrap()
    }
}

async fn send(h: &Harness, path: &str, body: serde_json::Value, backend: Option<&str>) -> Answer {
    let mut req = client()
        .post(h.url(path))
        .header("api-key", KEY)
        .json(&body);
    if let Some(b) = backend {
        req = req.header("x-entra-proxy-backend", b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let diagnosis = r
        .headers()
        .get(DIAGNOSIS)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body = r.text().await.unwrap();
    let upstream_token = h
        .emulator
        .requests()
        .last()
        .and_then(|s| s.header("authorization").map(str::to_string))
        .map(|v| v.trim_start_matches("Bearer ").to_string())
        .unwrap_or_default();
    Answer {
        status,
        diagnosis,
        body,
        retry_after,
        upstream_token,
    }
}

/// Scripts an Azure sample on `gpt-4o` and sends a chat request through the proxy. A 401 is
/// scripted twice: the proxy may refresh its token and replay a 401 once, so Azure's answer
/// has to hold for the replay too.
async fn scripted(h: &Harness, sample: AzureSample) -> Answer {
    let times = if sample.status() == 401 { 2 } else { 1 };
    h.emulator
        .script("gpt-4o", vec![Fault::Sample(sample); times]);
    let a = send(h, CHAT_PATH, chat_body("x"), None).await;
    assert!(h.emulator.requests().len() <= times, "{sample:?}");
    a
}

/// The body Azure writes for `sample` on a chat completion by the emulator's managed identity.
fn azure_body(sample: AzureSample, audience: &str) -> String {
    let ctx = SampleContext {
        audience: audience.to_string(),
        principal_id: DEFAULT_MI_OBJECT_ID.to_string(),
        ..SampleContext::default()
    };
    sample.body(&ctx)
}

/// Two backends on one emulator: `openai` (the main listener, cognitiveservices audience) and
/// `foundry` (a Foundry listener, ai.azure.com audience), with a model on each.
async fn two_backends(foundry_scope: Option<&str>) -> Harness {
    let emu = emulator().await;
    let foundry = emu.add_resource(ResourceKind::Foundry).await.unwrap();
    let text = two_backends_config(&emu, &foundry, foundry_scope);
    proxy(emu, &text).await
}

fn two_backends_config(emu: &Emulator, foundry: &url::Url, foundry_scope: Option<&str>) -> String {
    let scope = foundry_scope
        .map(|s| format!("scope = \"{s}\"\n"))
        .unwrap_or_default();
    format!(
        r#"[server]
listen = "127.0.0.1:0"

[azure]
emulator = "{emu}"

[identity]
kind = "managed-identity"

[[backends]]
name = "openai"
endpoint = "{emu}"

[[backends]]
name = "foundry"
endpoint = "{foundry}"
{scope}
[[models]]
name = "gpt-4o"
backend = "openai"
deployment = "gpt-4o"

[[models]]
name = "foundry-chat"
backend = "foundry"
deployment = "gpt-4o"

[[keys]]
name = "team-a"
sha256 = "{digest}"
"#,
        emu = emu.url(),
        digest = entra_proxy::config::KeyDigest::of(KEY).to_hex()
    )
}

#[tokio::test]
async fn permission_denied_403_is_missing_role_naming_the_openai_user_role_and_principal() {
    let h = start().await;
    let a = scripted(&h, AzureSample::PermissionDenied403).await;
    assert_eq!(a.status, 403);
    assert_eq!(
        a.body,
        azure_body(AzureSample::PermissionDenied403, COGNITIVE_AUD),
        "Azure's body must come back unchanged"
    );
    assert_eq!(a.code(), "missing-role", "{}", a.diagnosis);
    assert!(
        a.diagnosis.contains("Cognitive Services OpenAI User"),
        "{}",
        a.diagnosis
    );
    assert!(
        a.diagnosis
            .contains(&format!("--assignee {DEFAULT_MI_OBJECT_ID}")),
        "the fix names the principal: {}",
        a.diagnosis
    );
    assert!(
        a.diagnosis.contains(
            "Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action"
        ),
        "the summary names the missing data action: {}",
        a.diagnosis
    );
    a.assert_no_token();
    h.stop().await;
}

#[tokio::test]
async fn missing_role_fix_has_the_role_id_and_says_contributor_is_not_enough_and_it_takes_minutes()
{
    let h = start().await;
    let a = scripted(&h, AzureSample::PermissionDenied403).await;
    assert_eq!(a.code(), "missing-role", "{}", a.diagnosis);
    for words in [
        "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd",
        "Cognitive Services Contributor",
        "Owner",
        "minutes",
    ] {
        assert!(a.diagnosis.contains(words), "{words:?} in {}", a.diagnosis);
    }
    assert!(a.diagnosis.len() <= 1024, "{}", a.diagnosis.len());
    h.stop().await;
}

#[tokio::test]
async fn permission_denied_sent_as_401_is_still_missing_role_by_body() {
    let h = start().await;
    let a = scripted(&h, AzureSample::PermissionDenied401).await;
    assert_eq!(a.status, 401);
    assert_eq!(
        a.body,
        azure_body(AzureSample::PermissionDenied401, COGNITIVE_AUD)
    );
    assert_eq!(a.code(), "missing-role", "{}", a.diagnosis);
    assert!(a.diagnosis.contains("Cognitive Services OpenAI User"));
    // Azure's 401 text names no principal: the token's own oid is the one to grant.
    assert!(
        a.diagnosis.contains(DEFAULT_MI_OBJECT_ID),
        "{}",
        a.diagnosis
    );
    assert!(
        a.diagnosis.contains(DEFAULT_MI_CLIENT_ID),
        "names the app too: {}",
        a.diagnosis
    );
    a.assert_no_token();
    h.stop().await;
}

#[tokio::test]
async fn permission_denied_on_a_foundry_backend_names_azure_ai_user() {
    let h = two_backends(Some("https://ai.azure.com/.default")).await;
    h.emulator.script(
        "gpt-4o",
        vec![Fault::Sample(AzureSample::PermissionDenied403)],
    );
    let a = send(&h, "/v1/chat/completions", chat_body("foundry-chat"), None).await;
    assert_eq!(a.status, 403);
    assert_eq!(
        h.emulator.requests()[0].bearer_audience.as_deref(),
        Some("https://ai.azure.com")
    );
    assert_eq!(a.code(), "missing-role", "{}", a.diagnosis);
    assert!(a.diagnosis.contains("Azure AI User"), "{}", a.diagnosis);
    assert!(
        !a.diagnosis.contains("Cognitive Services OpenAI User"),
        "{}",
        a.diagnosis
    );
    a.assert_no_token();
    h.stop().await;
}

#[tokio::test]
async fn foundry_resource_answering_a_cognitiveservices_token_is_audience_mismatch_naming_the_scope()
 {
    // The classic Foundry mistake: no scope override, so the proxy asks for cognitiveservices.
    let h = two_backends(None).await;
    let a = send(&h, "/v1/chat/completions", chat_body("foundry-chat"), None).await;
    assert_eq!(a.status, 401);
    assert!(
        a.body
            .contains("audience is incorrect (https://ai.azure.com)"),
        "{}",
        a.body
    );
    assert_eq!(a.code(), "audience-mismatch", "{}", a.diagnosis);
    assert!(
        a.diagnosis
            .contains("token aud https://cognitiveservices.azure.com"),
        "{}",
        a.diagnosis
    );
    assert!(
        a.diagnosis
            .contains("set backend foundry's scope to https://ai.azure.com/.default"),
        "{}",
        a.diagnosis
    );
    a.assert_no_token();
    h.stop().await;
}

#[tokio::test]
async fn token_refused_though_its_audience_is_right_is_token_rejected_not_blamed_on_the_audience() {
    let h = start().await;
    let a = scripted(&h, AzureSample::AudienceIncorrect401).await;
    assert_eq!(a.status, 401);
    assert_eq!(
        a.body,
        azure_body(AzureSample::AudienceIncorrect401, COGNITIVE_AUD)
    );
    assert_eq!(a.code(), "token-rejected", "{}", a.diagnosis);
    assert!(
        a.diagnosis
            .contains("aud https://cognitiveservices.azure.com"),
        "{}",
        a.diagnosis
    );
    assert!(a.diagnosis.contains("tenant"), "{}", a.diagnosis);
    a.assert_no_token();
    h.stop().await;
}

#[tokio::test]
async fn revoked_token_is_refreshed_once_and_the_replay_succeeds_without_a_diagnosis() {
    let h = start().await;
    wait_ready(&h).await;
    h.emulator.revoke_issued_tokens();
    let a = send(&h, CHAT_PATH, chat_body("x"), None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.diagnosis.is_empty(), "{}", a.diagnosis);
    let seen = h.emulator.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].status, 401);
    assert_ne!(
        seen[0].header("authorization"),
        seen[1].header("authorization")
    );
    h.stop().await;
}

#[tokio::test]
async fn deployment_not_found_lists_the_backends_deployments() {
    let h = start().await;
    let a = send(
        &h,
        "/openai/deployments/gpt-4o-mini/chat/completions",
        chat_body("x"),
        None,
    )
    .await;
    assert_eq!(a.status, 404);
    assert_eq!(
        a.body,
        azure_body(AzureSample::DeploymentNotFound404, COGNITIVE_AUD)
    );
    assert_eq!(a.code(), "deployment-not-found", "{}", a.diagnosis);
    assert!(a.diagnosis.contains("`gpt-4o-mini`"), "{}", a.diagnosis);
    assert!(
        a.diagnosis
            .contains("case-sensitive; this backend has: gpt-4o, text-embedding-3-small"),
        "{}",
        a.diagnosis
    );
    a.assert_no_token();
    h.stop().await;
}

#[tokio::test]
async fn deployment_name_in_the_wrong_case_gets_did_you_mean() {
    let h = start().await;
    let a = send(
        &h,
        "/openai/deployments/GPT-4o/chat/completions",
        chat_body("x"),
        None,
    )
    .await;
    assert_eq!(a.status, 404);
    assert_eq!(a.code(), "deployment-not-found", "{}", a.diagnosis);
    assert!(
        a.diagnosis.contains("did you mean `gpt-4o`?"),
        "{}",
        a.diagnosis
    );
    h.stop().await;
}

#[tokio::test]
async fn litellm_azure_prefix_in_a_v1_model_is_named_as_the_mistake() {
    let h = start().await;
    let a = send(
        &h,
        "/openai/v1/chat/completions",
        chat_body("azure/gpt-4o"),
        None,
    )
    .await;
    assert_eq!(a.status, 404);
    assert_eq!(a.code(), "deployment-not-found", "{}", a.diagnosis);
    assert!(
        a.diagnosis.contains("drop the `azure/` prefix"),
        "{}",
        a.diagnosis
    );
    assert!(a.diagnosis.contains("use `gpt-4o`"), "{}", a.diagnosis);
    h.stop().await;
}

#[tokio::test]
async fn resource_not_found_for_a_well_formed_path_points_at_the_endpoint() {
    let h = start().await;
    let a = scripted(&h, AzureSample::ResourceNotFound404).await;
    assert_eq!(a.status, 404);
    assert_eq!(
        a.body,
        azure_body(AzureSample::ResourceNotFound404, COGNITIVE_AUD)
    );
    assert_eq!(a.code(), "resource-not-found", "{}", a.diagnosis);
    assert!(
        a.diagnosis.contains("set backend primary's endpoint"),
        "{}",
        a.diagnosis
    );
    assert!(
        a.diagnosis.contains("resource's own base URL"),
        "{}",
        a.diagnosis
    );
    a.assert_no_token();
    h.stop().await;
}

#[tokio::test]
async fn resource_not_found_without_api_version_is_diagnosed_as_api_version() {
    let h = start().await;
    // A path the proxy passes through as is: no api-version is added.
    let r = client()
        .get(h.url("/openai/deployments"))
        .header("api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        h.emulator.requests()[0].path_and_query,
        "/openai/deployments"
    );
    let d = r.headers()[DIAGNOSIS].to_str().unwrap().to_string();
    assert!(d.starts_with("api-version: "), "{d}");
    assert!(d.contains("api-version=2024-10-21"), "{d}");
    h.stop().await;
}

#[tokio::test]
async fn unsupported_api_version_is_api_version() {
    let h = start().await;
    let a = scripted(&h, AzureSample::ApiVersionUnsupported400).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.code(), "api-version", "{}", a.diagnosis);
    assert!(a.diagnosis.contains("2024-10-21"), "{}", a.diagnosis);
    h.stop().await;
}

#[tokio::test]
async fn public_access_disabled_says_run_in_the_vnet_and_check_private_dns() {
    let h = start().await;
    let a = scripted(&h, AzureSample::PublicAccessDisabled403).await;
    assert_eq!(a.status, 403);
    assert_eq!(
        a.body,
        azure_body(AzureSample::PublicAccessDisabled403, COGNITIVE_AUD)
    );
    assert_eq!(a.code(), "public-access-disabled", "{}", a.diagnosis);
    assert!(a.diagnosis.contains("VNet"), "{}", a.diagnosis);
    assert!(a.diagnosis.contains("privatelink."), "{}", a.diagnosis);
    a.assert_no_token();
    h.stop().await;
}

#[tokio::test]
async fn traffic_not_from_an_approved_private_endpoint_is_not_private_endpoint() {
    let h = start().await;
    let a = scripted(&h, AzureSample::NotPrivateEndpoint403).await;
    assert_eq!(a.status, 403);
    assert_eq!(
        a.body,
        azure_body(AzureSample::NotPrivateEndpoint403, COGNITIVE_AUD)
    );
    assert_eq!(a.code(), "not-private-endpoint", "{}", a.diagnosis);
    assert!(
        a.diagnosis
            .contains("approve a pending private endpoint connection"),
        "{}",
        a.diagnosis
    );
    a.assert_no_token();
    h.stop().await;
}

#[tokio::test]
async fn throttled_answer_keeps_retry_after_and_says_how_long_to_wait() {
    let h = start().await;
    let a = scripted(&h, AzureSample::Throttled429).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.body, azure_body(AzureSample::Throttled429, COGNITIVE_AUD));
    assert_eq!(a.retry_after.as_deref(), Some("1"));
    assert_eq!(a.code(), "throttled", "{}", a.diagnosis);
    assert!(a.diagnosis.contains("retry after 1 s"), "{}", a.diagnosis);
    assert!(a.diagnosis.contains("`gpt-4o`"), "{}", a.diagnosis);
    a.assert_no_token();
    h.stop().await;
}

#[tokio::test]
async fn throttled_answer_with_retry_after_ms_names_the_wait_from_the_header() {
    let h = start().await;
    h.emulator.script(
        "gpt-4o",
        vec![Fault::RateLimited {
            retry_after_ms: 20_000,
        }],
    );
    let a = send(&h, CHAT_PATH, chat_body("x"), None).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.retry_after.as_deref(), Some("20"));
    assert!(a.diagnosis.starts_with("throttled: "), "{}", a.diagnosis);
    assert!(a.diagnosis.contains("wait 20 s"), "{}", a.diagnosis);
    a.assert_no_token();
    h.stop().await;
}

#[tokio::test]
async fn invalid_key_answer_to_a_bearer_says_the_endpoint_is_wrong() {
    let h = start().await;
    let a = scripted(&h, AzureSample::InvalidKey401).await;
    assert_eq!(a.status, 401);
    assert_eq!(
        a.body,
        azure_body(AzureSample::InvalidKey401, COGNITIVE_AUD)
    );
    assert_eq!(a.code(), "invalid-key", "{}", a.diagnosis);
    assert!(
        a.diagnosis.contains("does not take Entra ID tokens"),
        "{}",
        a.diagnosis
    );
    a.assert_no_token();
    h.stop().await;
}

#[tokio::test]
async fn key_auth_disabled_says_send_a_bearer_token() {
    let h = start().await;
    let a = scripted(&h, AzureSample::KeyAuthDisabled401).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.code(), "key-auth-disabled", "{}", a.diagnosis);
    assert!(a.diagnosis.contains("disableLocalAuth"), "{}", a.diagnosis);
    a.assert_no_token();
    h.stop().await;
}

#[tokio::test]
async fn regional_endpoint_answer_is_regional_endpoint_with_the_custom_subdomain_fix() {
    let emu = emulator().await;
    let regional = emu.add_resource(ResourceKind::Regional).await.unwrap();
    let text = base_config(&emu.url()).replace(
        &format!("endpoint = \"{}\"", emu.url()),
        &format!("endpoint = \"{regional}\""),
    );
    let h = proxy(emu, &text).await;
    let a = send(&h, CHAT_PATH, chat_body("x"), None).await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.body,
        r#"{"error":{"code":"BadRequest","message":"Please provide an authentication key."}}"#
    );
    assert_eq!(a.code(), "regional-endpoint", "{}", a.diagnosis);
    assert!(a.diagnosis.contains("custom-subdomain"), "{}", a.diagnosis);
    assert!(a.diagnosis.contains("--custom-domain"), "{}", a.diagnosis);
    a.assert_no_token();
    h.stop().await;
}

#[tokio::test]
async fn diagnosis_is_logged_as_one_structured_line_with_the_claims_and_never_the_token() {
    let emu = emulator().await;
    emu.script(
        "gpt-4o",
        vec![Fault::Sample(AzureSample::PermissionDenied403)],
    );
    let (child, _cfg) = spawn_binary(
        &base_config(&emu.url()),
        &[("ENTRA_PROXY_LOG_FORMAT", "json")],
    )
    .await;
    let r = client()
        .post(format!("http://{}{CHAT_PATH}", child.addr))
        .header("api-key", KEY)
        .json(&chat_body("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let header = r.headers()[DIAGNOSIS].to_str().unwrap().to_string();
    let token = emu.requests()[0]
        .header("authorization")
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_string();
    let (_, logs) = stop_and_collect(child).await;
    assert!(!logs.contains(&token), "the log leaked the token");
    assert!(!logs.contains(token.rsplit('.').next().unwrap()));
    assert!(!logs.contains(KEY), "the log leaked the client key");
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter(|l| l.contains("Azure refused the request"))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{logs}");
    let line = &lines[0];
    assert_eq!(line["diagnosis"], "missing-role", "{line}");
    assert_eq!(line["backend"], "primary", "{line}");
    assert_eq!(line["status"], 403, "{line}");
    assert_eq!(line["token_aud"], COGNITIVE_AUD, "{line}");
    assert_eq!(line["token_oid"], DEFAULT_MI_OBJECT_ID, "{line}");
    assert_eq!(line["token_appid"], DEFAULT_MI_CLIENT_ID, "{line}");
    assert_eq!(line["token_tid"], emu.config().tenant_id.as_str(), "{line}");
    assert!(line["token_exp"].as_i64().unwrap() > 0, "{line}");
    let fix = line["fix"].as_str().unwrap();
    assert!(fix.contains("Cognitive Services OpenAI User"), "{line}");
    assert!(
        header.contains(fix.get(..60).unwrap()),
        "header and log agree"
    );
}

#[tokio::test]
async fn successful_answers_carry_no_diagnosis() {
    let h = start().await;
    let r = post(&h, "/v1/chat/completions", &chat_body("gpt-4o")).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get(DIAGNOSIS).is_none());
    h.stop().await;
}

#[tokio::test]
async fn debug_identity_is_off_by_default() {
    let h = start().await;
    wait_ready(&h).await;
    let r = client().get(h.url("/debug/identity")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("debug = true"),
        "{body}"
    );
    h.stop().await;
}

#[tokio::test]
async fn debug_identity_from_loopback_shows_claims_and_expiry_but_never_the_token() {
    let emu = emulator().await;
    let text = base_config(&emu.url()).replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\ndebug = true",
    );
    let h = proxy(emu, &text).await;
    // One request, so the token in the cache is the one Azure saw.
    let r = post(&h, "/v1/chat/completions", &chat_body("gpt-4o")).await;
    assert_eq!(r.status(), 200);
    let token = h.emulator.requests()[0]
        .header("authorization")
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_string();

    let r = client().get(h.url("/debug/identity")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(!text.contains(&token), "the debug view leaked the token");
    assert!(!text.contains(token.rsplit('.').next().unwrap()));
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        body["credential"]
            .as_str()
            .unwrap()
            .contains("managed identity"),
        "{body}"
    );
    let b = &body["backends"][0];
    assert_eq!(b["backend"], "primary");
    assert_eq!(b["scope"], "https://cognitiveservices.azure.com/.default");
    let t = &b["token"];
    assert_eq!(t["has_valid_token"], true, "{body}");
    assert!(t["expires_at"].as_i64().unwrap() > 0, "{body}");
    assert!(t["last_refresh"].is_number(), "{body}");
    assert!(t["last_error"].is_null(), "{body}");
    assert_eq!(t["claims"]["aud"], COGNITIVE_AUD, "{body}");
    assert_eq!(t["claims"]["oid"], DEFAULT_MI_OBJECT_ID, "{body}");
    assert_eq!(t["claims"]["appid"], DEFAULT_MI_CLIENT_ID, "{body}");
    h.stop().await;
}

#[tokio::test]
async fn debug_identity_shows_the_last_error_while_the_identity_fails() {
    let emu = emulator().await;
    emu.set_identity_fault(Some(IdentityFault::Down));
    // IMDS credentials retry 5xx on their own; the proxy bounds each acquisition.
    let text = base_config(&emu.url())
        .replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\ndebug = true",
        )
        .replace(
            "[azure]",
            "[upstream]\nidentity_timeout_secs = 1\n\n[azure]",
        );
    let h = proxy(emu, &text).await;
    let mut token = serde_json::Value::Null;
    for _ in 0..50 {
        let r = client().get(h.url("/debug/identity")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        token = body["backends"][0]["token"].clone();
        if token["last_error"].is_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(token["has_valid_token"], false, "{token}");
    assert!(token["last_error"].is_string(), "{token}");
    assert!(token["failing_since"].is_number(), "{token}");
    assert!(token["claims"].is_null(), "{token}");
    h.stop().await;
}

#[tokio::test]
async fn a_401_no_new_token_can_fix_does_not_refetch_the_token_on_every_request() {
    // Azure's PermissionDenied as 401 says the token was fine and the role is missing: a fresh
    // token changes nothing, and fetching one per request would hammer Entra / IMDS.
    let h = start().await;
    wait_ready(&h).await;
    h.emulator.script(
        "gpt-4o",
        vec![Fault::Sample(AzureSample::PermissionDenied401); 6],
    );
    for _ in 0..3 {
        let a = send(&h, CHAT_PATH, chat_body("x"), None).await;
        assert_eq!(a.status, 401);
        assert_eq!(a.code(), "missing-role", "{}", a.diagnosis);
    }
    let stats = h.emulator.stats();
    assert_eq!(stats.token_requests, 1, "{stats:?}");
    h.stop().await;
}
