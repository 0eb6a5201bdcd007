//! Black-box checks of `entra_proxy::diagnose` against Azure's own error texts and minted tokens.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use entra_proxy::claims::decode_unverified;
use entra_proxy::cloud::{Cloud, HostKind};
use entra_proxy::diagnose::{
    Context, DiagnosisCode, Target, TargetKind, classify, explain, render_text,
};

const NOW: i64 = 1_735_812_000;
const SIG: &str = "dGhpcy1pcy10aGUtc2lnbmF0dXJl";

fn jwt(claims: &str) -> String {
    format!(
        "{}.{}.{SIG}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims)
    )
}

fn context<'a>(token: Option<&'a entra_proxy::claims::Claims>) -> Context<'a> {
    Context {
        backend: "primary",
        host: "myres.openai.azure.com",
        cloud: Cloud::Public,
        host_kind: Some(HostKind::OpenAi),
        expected_audience: "https://cognitiveservices.azure.com",
        token,
        expected_tenant: None,
        deployment: Some("chat"),
        known_deployments: &[],
        request_path: None,
        endpoint_path: "/",
        api_version: Some("2024-10-21"),
        now: NOW,
    }
}

#[test]
fn arm_token_upstream_401_is_explained_without_leaking_the_token() {
    let token = jwt(&format!(
        r#"{{"aud":"https://management.azure.com/","tid":"t1","oid":"o1","appid":"a1","exp":{}}}"#,
        NOW + 3_000
    ));
    let claims = decode_unverified(&token).unwrap().claims;
    let body = br#"{"error":{"code":"401","message":"Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), or have expired."}}"#;
    let d = classify(401, None, body, &context(Some(&claims))).unwrap();
    assert_eq!(d.code, DiagnosisCode::AudienceMismatch);
    let header = d.header_value();
    assert!(header.starts_with(
        "audience-mismatch: token aud https://management.azure.com/, backend needs https://cognitiveservices.azure.com"
    ));
    assert!(http::HeaderValue::from_str(&header).is_ok());
    let json = serde_json::to_string(&d).unwrap();
    assert!(json.contains(r#""code":"audience-mismatch""#));
    assert!(json.contains(r#""oid":"o1""#));
    for out in [&header, &json, &format!("{d:?}")] {
        assert!(!out.contains(&token));
        assert!(!out.contains(SIG));
    }
}

#[test]
fn permission_denied_403_tells_which_role_to_grant() {
    let body = br#"{"error":{"code":"PermissionDenied","message":"The principal `aaaaaaaa-1111-2222-3333-444444444444` lacks the required data action `Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action` to perform `POST /openai/deployments/{deployment-id}/chat/completions` operation."}}"#;
    let d = classify(403, None, body, &context(None)).unwrap();
    assert_eq!(d.code, DiagnosisCode::MissingRole);
    assert!(d.fix.contains(
        "az role assignment create --assignee aaaaaaaa-1111-2222-3333-444444444444 --role \"Cognitive Services OpenAI User\""
    ));
}

#[test]
fn throttling_and_unknown_answers() {
    let body =
        br#"{"error":{"code":"429","message":"Rate limit is exceeded. Try again in 20 seconds."}}"#;
    let d = classify(429, None, body, &context(None)).unwrap();
    assert_eq!(d.code, DiagnosisCode::Throttled);
    assert!(d.summary.contains("retry after 20 s"));
    assert!(classify(500, None, b"<html>oops</html>", &context(None)).is_none());
}

#[test]
fn explain_reads_an_az_cli_response_and_renders_a_verdict() {
    let token = jwt(&format!(
        r#"{{"aud":"https://management.azure.com","iss":"https://sts.windows.net/t1/","tid":"t1","oid":"o1","upn":"alice@contoso.com","appid":"04b07795-8ddb-461a-bbee-02f9e1bf7b46","scp":"user_impersonation","iat":{},"exp":{}}}"#,
        NOW - 600,
        NOW + 3_000
    ));
    let pasted = format!(
        r#"{{"accessToken":"{token}","expiresOn":"2025-01-02 10:50:00.000000","tenant":"t1","tokenType":"Bearer"}}"#
    );
    let target = Target {
        kind: TargetKind::CognitiveServices,
        cloud: Cloud::Public,
        tenant: None,
    };
    let e = explain(&pasted, &target, NOW).unwrap();
    assert!(!e.accepted);
    assert_eq!(e.who, "user alice@contoso.com (object o1) via Azure CLI");
    let text = render_text(&e, &target, NOW, time::UtcOffset::UTC);
    assert!(text.contains("Verdict: rejected — this is an Azure Resource Manager token"));
    assert!(text.contains(
        "Fix: request a token for scope https://cognitiveservices.azure.com/.default: az account get-access-token --scope https://cognitiveservices.azure.com/.default"
    ));
    assert!(text.contains("(expires in 50 min)"));
    assert!(!text.contains(&token));
    assert!(!text.contains(SIG));
}
