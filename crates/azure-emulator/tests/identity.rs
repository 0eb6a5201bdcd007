//! Black-box checks over real HTTP on 127.0.0.1 of what identities are matched by (claims,
//! app roles, the caller noted per request) and of the on-behalf-of grant with each kind of
//! client credential and each refusal.
// Test helpers outside `#[test]` functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use azure_emulator::{
    AppRegistration, AssertionAlg, ClientAuthKind, Cloud, Emulator, EmulatorConfig,
    ExternalTokenSpec, FederatedCredential, MintSpec, OboExchangeCount, OboFault, OboFaultRule,
    TestCertificate, TokenVersion,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

const COG: &str = "https://cognitiveservices.azure.com";
const COG_SCOPE: &str = "https://cognitiveservices.azure.com/.default";
const CHAT: &str = "openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21";
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The proxy's app (the middle tier) and the user who called it.
const APP: &str = "0a1b2c3d-0000-4000-8000-0000000000a9";
const SECRET: &str = "proxy-secret-value-1";
const USER: &str = "11111111-2222-4333-8444-555555555555";
const SPA: &str = "99999999-0000-4000-8000-000000000001";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn start() -> Emulator {
    Emulator::start(EmulatorConfig::default()).await.unwrap()
}

fn tenant(emu: &Emulator) -> String {
    emu.config().tenant_id.clone()
}

/// A token's claims, read without checking the signature.
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn post_form(emu: &Emulator, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let resp = client()
        .post(emu.url().join(path).unwrap())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
    )
}

async fn token(emu: &Emulator, form: &[(&str, &str)]) -> (u16, Value) {
    post_form(emu, &format!("{}/oauth2/v2.0/token", tenant(emu)), form).await
}

async fn control(emu: &Emulator, path: &str, body: Value) -> (u16, Value) {
    let resp = client()
        .post(emu.url().join(path).unwrap())
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A user's v2 token for the proxy's app, as a SPA would have got it.
fn user_token(emu: &Emulator) -> String {
    emu.mint(&MintSpec {
        oid: Some(USER.into()),
        appid: Some(SPA.into()),
        scp: Some("access_as_user".into()),
        version: TokenVersion::V2,
        ..MintSpec::new(format!("api://{APP}"))
    })
}

fn register_secret_app(emu: &Emulator) {
    emu.register(AppRegistration::new(tenant(emu), APP).with_secret(SECRET))
        .unwrap();
}

/// An on-behalf-of form with the proxy's secret.
fn obo_secret<'a>(assertion: &'a str, secret: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", JWT_BEARER_GRANT),
        ("client_id", APP),
        ("client_secret", secret),
        ("assertion", assertion),
        ("scope", COG_SCOPE),
        ("requested_token_use", "on_behalf_of"),
    ]
}

/// An on-behalf-of form with a client assertion.
fn obo_assertion<'a>(assertion: &'a str, client_assertion: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", JWT_BEARER_GRANT),
        ("client_id", APP),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", client_assertion),
        ("assertion", assertion),
        ("scope", COG_SCOPE),
        ("requested_token_use", "on_behalf_of"),
    ]
}

/// Asserts Entra's error body: status, `error`, the code in `error_codes`, the start of the
/// description, and the fields every Entra error has.
fn assert_entra_error(got: &(u16, Value), status: u16, error: &str, code: u64, text: &str) {
    let (got_status, body) = got;
    assert_eq!(*got_status, status, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], json!([code]), "{body}");
    let description = body["error_description"].as_str().unwrap();
    let expected = format!("AADSTS{code}: {text}");
    assert!(
        description.starts_with(&expected),
        "{description}\n  expected it to start with\n{expected}"
    );
    assert!(description.contains(" Trace ID: "), "{description}");
    assert_eq!(
        body["error_uri"],
        format!("https://login.microsoftonline.com/error?code={code}")
    );
    for field in ["timestamp", "trace_id", "correlation_id"] {
        assert!(body[field].is_string(), "{field}: {body}");
    }
}

fn chat_body() -> String {
    json!({"messages":[{"role":"user","content":"hello"}]}).to_string()
}

async fn chat_with(emu: &Emulator, bearer: &str) -> u16 {
    client()
        .post(emu.url().join(CHAT).unwrap())
        .header("authorization", format!("Bearer {bearer}"))
        .header("content-type", "application/json")
        .body(chat_body())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn token_endpoint(emu: &Emulator) -> String {
    format!(
        "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
        tenant(emu)
    )
}

// --- claims ---

#[tokio::test]
async fn minted_tokens_carry_each_claim_identities_are_matched_by() {
    let emu = start().await;
    let tid = tenant(&emu);
    let groups = vec!["g-1".to_owned(), "g-2".to_owned()];
    let v2 = claims_of(&emu.mint(&MintSpec {
        oid: Some(USER.into()),
        appid: Some(SPA.into()),
        roles: vec!["Chat.User".into()],
        groups: groups.clone(),
        scp: Some("access_as_user".into()),
        version: TokenVersion::V2,
        ..MintSpec::new(format!("api://{APP}"))
    }));
    assert_eq!(v2["azp"], SPA);
    assert!(v2.get("appid").is_none());
    assert_eq!(v2["oid"], USER);
    assert_eq!(v2["tid"], tid.as_str());
    assert_eq!(v2["roles"], json!(["Chat.User"]));
    assert_eq!(v2["groups"], json!(groups));
    assert_eq!(v2["scp"], "access_as_user");
    assert!(v2.get("idtyp").is_none(), "a user token: {v2}");
    assert!(v2.get("_claim_names").is_none());

    let v1 = claims_of(&emu.mint(&MintSpec {
        appid: Some(SPA.into()),
        tenant_id: Some("other-tenant".into()),
        ..MintSpec::new(COG)
    }));
    assert_eq!(v1["appid"], SPA);
    assert!(v1.get("azp").is_none());
    assert_eq!(v1["tid"], "other-tenant");
    assert_eq!(v1["iss"], "https://sts.windows.net/other-tenant/");
    assert_eq!(v1["idtyp"], "app");
    assert!(v1.get("groups").is_none() && v1.get("roles").is_none());

    let overage = claims_of(&emu.mint(&MintSpec {
        oid: Some(USER.into()),
        groups: groups.clone(),
        groups_overage: true,
        ..MintSpec::new(COG)
    }));
    assert!(overage.get("groups").is_none(), "{overage}");
    assert_eq!(overage["_claim_names"], json!({"groups": "src1"}));
    assert_eq!(
        overage["_claim_sources"],
        json!({"src1": {"endpoint": format!("https://graph.microsoft.com/v1.0/users/{USER}/getMemberObjects")}})
    );

    let many: Vec<String> = (0..10_000).map(|i| format!("group-{i}")).collect();
    let mut extra = Map::new();
    extra.insert("oid".into(), json!("not-a-guid"));
    extra.insert("roles".into(), json!({"role": "object"}));
    extra.insert("groups".into(), json!(many));
    extra.insert("hasgroups".into(), json!(true));
    let odd = claims_of(&emu.mint(&MintSpec {
        groups: groups.clone(),
        extra_claims: extra,
        ..MintSpec::new(COG)
    }));
    assert_eq!(odd["oid"], "not-a-guid");
    assert_eq!(odd["roles"], json!({"role": "object"}));
    assert_eq!(odd["groups"].as_array().unwrap().len(), 10_000);
    assert_eq!(odd["groups"][9_999], "group-9999");
    assert_eq!(odd["hasgroups"], true);
    assert_eq!(odd["sub"], emu.config().managed_identity_object_id.as_str());

    let mut extra = Map::new();
    extra.insert("groups".into(), json!("g-1"));
    let (status, body) = control(
        &emu,
        "emulator/mint",
        json!({"aud": COG, "version": "v2", "azp": SPA, "oid": USER, "groups_overage": true, "extra_claims": extra}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let from_control = claims_of(body["access_token"].as_str().unwrap());
    assert_eq!(from_control["azp"], SPA);
    assert_eq!(from_control["groups"], "g-1");
    assert_eq!(from_control["_claim_names"], json!({"groups": "src1"}));
}

#[tokio::test]
async fn client_credentials_tokens_carry_the_roles_assigned_to_the_app() {
    let emu = start().await;
    let tid = tenant(&emu);
    emu.register(
        AppRegistration::new(&tid, APP)
            .with_secret(SECRET)
            .with_roles(["Chat.Completions", "Admin"]),
    )
    .unwrap();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", APP),
        ("client_secret", SECRET),
        ("scope", COG_SCOPE),
    ];
    let (status, body) = token(&emu, &form).await;
    assert_eq!(status, 200, "{body}");
    let claims = claims_of(body["access_token"].as_str().unwrap());
    assert_eq!(claims["roles"], json!(["Chat.Completions", "Admin"]));
    assert_eq!(claims["appid"], APP);
    assert_eq!(claims["idtyp"], "app");

    let (status, _) = control(
        &emu,
        &format!("emulator/apps/{APP}/roles"),
        json!({"roles": ["Reader"]}),
    )
    .await;
    assert_eq!(status, 204);
    let (_, body) = token(&emu, &form).await;
    assert_eq!(
        claims_of(body["access_token"].as_str().unwrap())["roles"],
        json!(["Reader"])
    );
    assert!(emu.set_app_roles(APP, vec![]));
    let (_, body) = token(&emu, &form).await;
    assert!(
        claims_of(body["access_token"].as_str().unwrap())
            .get("roles")
            .is_none()
    );
    assert!(!emu.set_app_roles("no-such-app", vec![]));
    let (status, _) = control(
        &emu,
        "emulator/apps/no-such-app/roles",
        json!({"roles": []}),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_data_plane_notes_whose_verified_token_reached_it() {
    let emu = start().await;
    let user = emu.mint(&MintSpec {
        oid: Some(USER.into()),
        appid: Some(SPA.into()),
        scp: Some("user_impersonation".into()),
        version: TokenVersion::V2,
        ..MintSpec::new(COG)
    });
    let app = emu.mint(&MintSpec::new(COG));
    let wrong_audience = emu.mint(&MintSpec {
        oid: Some(USER.into()),
        ..MintSpec::new("https://management.azure.com")
    });
    let forged = emu.mint(&MintSpec {
        oid: Some("forged".into()),
        bad_signature: true,
        ..MintSpec::new(COG)
    });
    assert_eq!(chat_with(&emu, &user).await, 200);
    assert_eq!(chat_with(&emu, &app).await, 200);
    assert_eq!(chat_with(&emu, &wrong_audience).await, 401);
    assert_eq!(chat_with(&emu, &forged).await, 401);
    let seen = emu.requests();
    let facts: Vec<_> = seen
        .iter()
        .map(|r| {
            (
                r.bearer_oid.as_deref(),
                r.bearer_app_id.as_deref(),
                r.bearer_scp.as_deref(),
            )
        })
        .collect();
    let mi_oid = emu.config().managed_identity_object_id.as_str();
    let mi_app = emu.config().managed_identity_client_id.as_str();
    assert_eq!(
        facts,
        vec![
            (Some(USER), Some(SPA), Some("user_impersonation")),
            (Some(mi_oid), Some(mi_app), None),
            (Some(USER), Some(mi_app), None),
            (None, None, None),
        ]
    );
    assert_eq!(
        seen[3].bearer_audience.as_deref(),
        Some(COG),
        "unverified audience"
    );
}

// --- on-behalf-of: the three client credentials ---

#[tokio::test]
async fn obo_with_a_secret_issues_a_delegated_token_the_data_plane_accepts() {
    let emu = start().await;
    let tid = tenant(&emu);
    register_secret_app(&emu);
    let assertion = user_token(&emu);
    let (status, body) = token(&emu, &obo_secret(&assertion, SECRET)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], format!("{COG}/user_impersonation"));
    assert_eq!(body["expires_in"], 3599);
    assert!(body.get("refresh_token").is_none());
    let delegated = body["access_token"].as_str().unwrap();
    let claims = claims_of(delegated);
    assert_eq!(claims["aud"], COG);
    assert_eq!(claims["iss"], format!("https://sts.windows.net/{tid}/"));
    assert_eq!(claims["ver"], "1.0");
    assert_eq!(claims["oid"], USER);
    assert_eq!(claims["tid"], tid.as_str());
    assert_eq!(claims["scp"], "user_impersonation");
    assert_eq!(claims["appid"], APP);
    assert_eq!(claims["appidacr"], "1");
    assert!(claims.get("idtyp").is_none(), "{claims}");
    assert!(claims.get("roles").is_none());
    assert_ne!(claims["sub"], USER, "sub is pairwise, not the oid");
    let exp = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(exp, 3600);

    emu.clear_requests();
    assert_eq!(chat_with(&emu, delegated).await, 200);
    let seen = &emu.requests()[0];
    assert_eq!(seen.bearer_oid.as_deref(), Some(USER));
    assert_eq!(seen.bearer_app_id.as_deref(), Some(APP));
    assert_eq!(seen.bearer_scp.as_deref(), Some("user_impersonation"));

    let stats = emu.stats();
    assert_eq!((stats.obo_requests, stats.obo_exchanges), (1, 1));
    assert_eq!(emu.obo_exchanges(APP, USER), 1);
    let log = emu.obo_requests();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].client_id.as_deref(), Some(APP));
    assert_eq!(log[0].client_auth, Some(ClientAuthKind::Secret));
    assert_eq!(log[0].grant_type, JWT_BEARER_GRANT);
    assert_eq!(log[0].requested_token_use.as_deref(), Some("on_behalf_of"));
    assert_eq!(log[0].scope.as_deref(), Some(COG_SCOPE));
    assert_eq!(log[0].user_oid.as_deref(), Some(USER));
    assert_eq!((log[0].status, log[0].error_code), (200, None));
    let shown = format!("{log:?}{:?}", emu.obo_exchange_counts());
    for secret in [SECRET, assertion.as_str(), delegated] {
        assert!(!shown.contains(secret));
    }

    // HTTP Basic carries the secret too; a named permission is granted as named.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{APP}:{SECRET}"))
    );
    let form = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", JWT_BEARER_GRANT),
            ("assertion", assertion.as_str()),
            (
                "scope",
                "https://ai.azure.com/user_impersonation offline_access",
            ),
            ("requested_token_use", "on_behalf_of"),
        ])
        .finish();
    let resp = client()
        .post(
            token_endpoint(&emu).replace("https://login.microsoftonline.com/", emu.url().as_str()),
        )
        .header("authorization", basic)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["scope"], "https://ai.azure.com/user_impersonation");
    let claims = claims_of(body["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], "https://ai.azure.com");
    assert_eq!(emu.obo_exchanges(APP, USER), 2);
}

#[tokio::test]
async fn obo_with_a_certificate_assertion_ps256_or_rs256() {
    let emu = start().await;
    let tid = tenant(&emu);
    let cert = TestCertificate::generate("proxy-app").unwrap();
    emu.register(AppRegistration::new(&tid, APP).with_certificate(cert.pem()))
        .unwrap();
    let assertion = user_token(&emu);

    let client_assertion = cert.client_assertion(APP, &token_endpoint(&emu));
    let (status, body) = token(&emu, &obo_assertion(&assertion, &client_assertion)).await;
    assert_eq!(status, 200, "{body}");
    let claims = claims_of(body["access_token"].as_str().unwrap());
    assert_eq!(
        (&claims["appid"], &claims["appidacr"]),
        (&json!(APP), &json!("2"))
    );
    assert_eq!(claims["oid"], USER);

    // RS256 with the older SHA-1 `x5t`, and `aud` naming the emulator's own URL.
    let now = now();
    let own_url = format!("{}{tid}/oauth2/v2.0/token", emu.url());
    let rs256 = cert.sign_jwt(
        &json!({"alg": "RS256", "typ": "JWT", "x5t": cert.x5t()}),
        &json!({"aud": own_url, "iss": APP, "sub": APP, "jti": "j-1", "nbf": now, "exp": now + 300}),
        AssertionAlg::Rs256,
    );
    let (status, body) = token(&emu, &obo_assertion(&assertion, &rs256)).await;
    assert_eq!(status, 200, "{body}");
    let log = emu.obo_requests();
    assert_eq!(log.len(), 2);
    assert!(
        log.iter()
            .all(|r| r.client_auth == Some(ClientAuthKind::Certificate))
    );
}

#[tokio::test]
async fn obo_with_a_managed_identity_token_as_federated_credential() {
    let emu = start().await;
    let tid = tenant(&emu);
    let mi_oid = emu.config().managed_identity_object_id.clone();
    emu.register(AppRegistration::new(&tid, APP).with_federated_credential(
        FederatedCredential::managed_identity(Cloud::Public, &tid, &mi_oid),
    ))
    .unwrap();
    let resp = client()
        .get(
            emu.url()
                .join("msi/token?api-version=2019-08-01&resource=api://AzureADTokenExchange")
                .unwrap(),
        )
        .header("x-identity-header", &emu.config().identity_header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["resource"], "api://AzureADTokenExchange");
    let mi_token = body["access_token"].as_str().unwrap().to_owned();
    let mi_claims = claims_of(&mi_token);
    assert_eq!(mi_claims["aud"], "api://AzureADTokenExchange");
    assert_eq!(
        mi_claims["iss"],
        format!("https://login.microsoftonline.com/{tid}/v2.0")
    );
    assert_eq!(mi_claims["sub"], mi_oid.as_str());
    assert_eq!(mi_claims["ver"], "2.0");
    assert_eq!(
        mi_claims["azp"],
        emu.config().managed_identity_client_id.as_str()
    );

    // IMDS gives the same kind of token.
    let resp = client()
        .get(
            emu.url()
                .join("metadata/identity/oauth2/token?api-version=2018-02-01&resource=api://AzureADTokenExchange")
                .unwrap(),
        )
        .header("metadata", "true")
        .send()
        .await
        .unwrap();
    let imds: Value = resp.json().await.unwrap();
    assert_eq!(
        claims_of(imds["access_token"].as_str().unwrap())["sub"],
        mi_oid.as_str()
    );

    let assertion = user_token(&emu);
    let (status, body) = token(&emu, &obo_assertion(&assertion, &mi_token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims_of(body["access_token"].as_str().unwrap())["oid"],
        USER
    );
    assert_eq!(
        emu.obo_requests()[0].client_auth,
        Some(ClientAuthKind::FederatedCredential)
    );

    // A managed identity token for Cognitive Services is no federated credential of this app.
    let resp = client()
        .get(
            emu.url()
                .join(&format!("msi/token?api-version=2019-08-01&resource={COG}"))
                .unwrap(),
        )
        .header("x-identity-header", &emu.config().identity_header)
        .send()
        .await
        .unwrap();
    let cog_token = resp.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_entra_error(
        &token(&emu, &obo_assertion(&assertion, &cog_token)).await,
        401,
        "invalid_client",
        700211,
        &format!(
            "No matching federated identity record found for presented assertion issuer 'https://sts.windows.net/{tid}/'."
        ),
    );
}

#[tokio::test]
async fn workload_identity_tokens_are_matched_to_federated_credentials() {
    let emu = start().await;
    let tid = tenant(&emu);
    let issuer = "https://oidc.prod-aks.example/11111111-aaaa/";
    emu.register(
        AppRegistration::new(&tid, APP)
            .with_federated_credential(FederatedCredential::kubernetes(issuer, "ai", "proxy")),
    )
    .unwrap();
    let k8s = emu.mint_external(&ExternalTokenSpec::kubernetes(issuer, "ai", "proxy"));
    let k8s_claims = claims_of(&k8s);
    assert_eq!(k8s_claims["sub"], "system:serviceaccount:ai:proxy");
    assert_eq!(k8s_claims["aud"], json!(["api://AzureADTokenExchange"]));
    assert_eq!(k8s_claims["iss"], issuer);
    assert_eq!(k8s_claims["kubernetes.io"]["namespace"], "ai");

    let assertion = user_token(&emu);
    let (status, body) = token(&emu, &obo_assertion(&assertion, &k8s)).await;
    assert_eq!(status, 200, "{body}");

    // The client-credentials grant checks a registered app's federated credential too.
    let emu_ref = &emu;
    let cc = |client_assertion: String| async move {
        let emu = emu_ref;
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", client_assertion.as_str()),
            ("scope", COG_SCOPE),
        ];
        token(emu, &form).await
    };
    let (status, body) = cc(k8s.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims_of(body["access_token"].as_str().unwrap())["appid"],
        APP
    );
    let fic_docs = "https://learn.microsoft.com/entra/workload-id/workload-identity-federation";
    assert_entra_error(
        &cc(emu.mint_external(&ExternalTokenSpec::kubernetes(issuer, "ai", "other"))).await,
        401,
        "invalid_client",
        700213,
        &format!(
            "No matching federated identity record found for presented assertion subject 'system:serviceaccount:ai:other'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. {fic_docs}"
        ),
    );
    assert_entra_error(
        &cc(emu.mint_external(&ExternalTokenSpec {
            audience: "api://something-else".into(),
            ..ExternalTokenSpec::kubernetes(issuer, "ai", "proxy")
        }))
        .await,
        401,
        "invalid_client",
        700212,
        "No matching federated identity record found for presented assertion audience 'api://something-else'.",
    );
    assert_entra_error(
        &cc(emu.mint_external(&ExternalTokenSpec::kubernetes(
            "https://oidc.other.example/",
            "ai",
            "proxy",
        )))
        .await,
        401,
        "invalid_client",
        700211,
        "No matching federated identity record found for presented assertion issuer 'https://oidc.other.example/'.",
    );
    assert_entra_error(
        &cc(emu.mint_external(&ExternalTokenSpec {
            lifetime_secs: -60,
            ..ExternalTokenSpec::kubernetes(issuer, "ai", "proxy")
        }))
        .await,
        401,
        "invalid_client",
        700024,
        "Client assertion is not within its valid time range. Current time: ",
    );
    assert_entra_error(
        &cc(emu.mint_external(&ExternalTokenSpec {
            kid: Some("rotated-away".into()),
            ..ExternalTokenSpec::kubernetes(issuer, "ai", "proxy")
        }))
        .await,
        401,
        "invalid_client",
        7000272,
        &format!(
            "The certificate with identifier rotated-away used to sign the federated credential could not be found in the metadata of identity provider {issuer}."
        ),
    );
    assert_entra_error(
        &cc(emu.mint_external(&ExternalTokenSpec {
            bad_signature: true,
            ..ExternalTokenSpec::kubernetes(issuer, "ai", "proxy")
        }))
        .await,
        401,
        "invalid_client",
        700027,
        "Client assertion failed signature validation.",
    );
    // A user's token from Entra is no federated credential.
    let user_as_fic = emu.mint(&MintSpec {
        scp: Some("x".into()),
        version: TokenVersion::V2,
        ..MintSpec::new("api://AzureADTokenExchange")
    });
    assert_entra_error(
        &cc(user_as_fic).await,
        401,
        "invalid_client",
        700229,
        "Only app-only tokens can be used as Federated Identity Credentials for Microsoft Entra issuer.",
    );
    // An unregistered workload identity is still let in for client credentials.
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "unregistered-wi-app"),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", k8s.as_str()),
        ("scope", COG_SCOPE),
    ];
    assert_eq!(token(&emu, &form).await.0, 200);
}

#[tokio::test]
async fn a_workload_identitys_exchange_token_is_a_federated_credential_of_another_app() {
    let emu = start().await;
    let tid = tenant(&emu);
    let issuer = "https://oidc.prod-aks.example/22222222-bbbb/";
    let workload_app = "0f0e0d0c-0000-4000-8000-00000000a0a0";
    let k8s = emu.mint_external(&ExternalTokenSpec::kubernetes(issuer, "ai", "proxy"));
    // The pod's workload identity (unregistered: let in as before) asks for a token to present
    // as a federated credential.
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", workload_app),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", k8s.as_str()),
        ("scope", "api://AzureADTokenExchange/.default"),
    ];
    let (status, body) = token(&emu, &form).await;
    assert_eq!(status, 200, "{body}");
    let exchange = body["access_token"].as_str().unwrap().to_owned();
    let claims = claims_of(&exchange);
    let sp_oid = emu.service_principal_oid(&tid, workload_app);
    assert_eq!(claims["aud"], "api://AzureADTokenExchange");
    assert_eq!(
        claims["iss"],
        format!("https://login.microsoftonline.com/{tid}/v2.0")
    );
    assert_eq!(claims["sub"], sp_oid.as_str());
    assert_eq!(claims["azp"], workload_app);
    assert_eq!(claims["idtyp"], "app");

    emu.register(AppRegistration::new(&tid, APP).with_federated_credential(
        FederatedCredential::managed_identity(Cloud::Public, &tid, &sp_oid),
    ))
    .unwrap();
    let assertion = user_token(&emu);
    let (status, body) = token(&emu, &obo_assertion(&assertion, &exchange)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        emu.obo_requests()[0].client_auth,
        Some(ClientAuthKind::FederatedCredential)
    );
}

// --- on-behalf-of: refusals ---

#[tokio::test]
async fn certificate_assertions_are_refused_by_entras_rules() {
    let emu = start().await;
    let tid = tenant(&emu);
    let cert = TestCertificate::generate("proxy-app").unwrap();
    let stranger = TestCertificate::generate("stranger").unwrap();
    emu.register(AppRegistration::new(&tid, APP).with_certificate(cert.pem()))
        .unwrap();
    let assertion = user_token(&emu);
    let endpoint = token_endpoint(&emu);
    let now = now();
    let claims = |aud: &str, iss: &str, sub: &str, exp: i64| json!({"aud": aud, "iss": iss, "sub": sub, "jti": "j", "nbf": now - 10, "exp": exp});
    let header = json!({"alg": "PS256", "typ": "JWT", "x5t#S256": cert.x5t_s256()});
    let signed = |claims: Value| cert.sign_jwt(&header, &claims, AssertionAlg::Ps256);
    let obo = |client_assertion: String| {
        let assertion = assertion.clone();
        let emu = &emu;
        async move { token(emu, &obo_assertion(&assertion, &client_assertion)).await }
    };

    assert_entra_error(
        &obo(stranger.client_assertion(APP, &endpoint)).await,
        401,
        "invalid_client",
        700027,
        &format!(
            "Client assertion contains an invalid signature. [Reason - The key was not found., Thumbprint of key used by client: '{}'",
            hex_of_b64(&stranger.x5t_s256())
        ),
    );
    // The right thumbprint, the wrong key.
    let forged = stranger.sign_jwt(
        &header,
        &claims(&endpoint, APP, APP, now + 300),
        AssertionAlg::Ps256,
    );
    assert_entra_error(
        &obo(forged).await,
        401,
        "invalid_client",
        700027,
        "Client assertion contains an invalid signature. [Reason - The provided signature value did not match the expected signature value.",
    );
    let none_alg = {
        let good = signed(claims(&endpoint, APP, APP, now + 300));
        let mut parts: Vec<&str> = good.split('.').collect();
        let none_header =
            URL_SAFE_NO_PAD.encode(json!({"alg": "none", "x5t#S256": cert.x5t_s256()}).to_string());
        parts[0] = &none_header;
        parts[2] = "";
        parts.join(".")
    };
    assert_eq!(obo(none_alg).await.1["error_codes"], json!([700027]));
    assert_entra_error(
        &obo(signed(claims(&endpoint, APP, APP, now - 30))).await,
        401,
        "invalid_client",
        700024,
        "Client assertion is not within its valid time range. Current time: ",
    );
    assert_entra_error(
        &obo(signed(claims(
            "https://login.microsoftonline.com/common/oauth2/v2.0/token",
            APP,
            APP,
            now + 300,
        )))
        .await,
        401,
        "invalid_client",
        50012,
        "Client assertion audience claim does not match Realm issuer.",
    );
    assert_entra_error(
        &obo(signed(claims(&endpoint, APP, "someone-else", now + 300))).await,
        401,
        "invalid_client",
        50048,
        "Subject mismatches Issuer claim in the client assertion.",
    );
    let no_jti = signed(json!({"aud": endpoint, "iss": APP, "sub": APP, "exp": now + 300}));
    assert_entra_error(
        &obo(no_jti).await,
        400,
        "invalid_request",
        90014,
        "The required field 'jti' is missing from the credential.",
    );
}

#[tokio::test]
async fn user_assertions_are_refused_by_entras_rules() {
    let emu = start().await;
    let tid = tenant(&emu);
    emu.register(AppRegistration {
        display_name: Some("Entra Proxy".into()),
        ..AppRegistration::new(&tid, APP).with_secret(SECRET)
    })
    .unwrap();
    let user = |spec: MintSpec| {
        emu.mint(&MintSpec {
            oid: Some(USER.into()),
            scp: Some("access_as_user".into()),
            ..spec
        })
    };
    let for_app = || MintSpec::new(format!("api://{APP}"));
    let obo = |assertion: String| {
        let emu = &emu;
        async move { token(emu, &obo_secret(&assertion, SECRET)).await }
    };

    // The client id itself is an audience of the app too.
    assert_eq!(obo(user(MintSpec::new(APP))).await.0, 200);
    assert_entra_error(
        &obo(user(MintSpec::new(COG))).await,
        400,
        "invalid_grant",
        500131,
        &format!(
            "Assertion audience does not match the Client app presenting the assertion. The audience in the assertion was '{COG}' and the expected audience is '{APP}' or one of the Application Uris of this application with App ID '{APP}'(Entra Proxy). The downstream client must request a token for the expected audience (the application that made the OBO request) and this application should use that token as the assertion."
        ),
    );
    assert_entra_error(
        &obo(user(MintSpec {
            lifetime_secs: -60,
            ..for_app()
        }))
        .await,
        400,
        "invalid_grant",
        500133,
        "Assertion is not within its valid time range. Ensure that the access token is not expired before using it for user assertion, or request a new token. Current time: ",
    );
    assert_entra_error(
        &obo(user(MintSpec {
            not_before_secs: 600,
            ..for_app()
        }))
        .await,
        400,
        "invalid_grant",
        500133,
        "Assertion is not within its valid time range.",
    );
    assert_entra_error(
        &obo(user(MintSpec {
            tenant_id: Some("other-tenant".into()),
            ..for_app()
        }))
        .await,
        400,
        "invalid_grant",
        50013,
        "Assertion is invalid: the token issuer 'https://sts.windows.net/other-tenant/' is not an issuer of tenant",
    );
    let kid = emu.signing_kid();
    assert_entra_error(
        &obo(user(MintSpec {
            bad_signature: true,
            ..for_app()
        }))
        .await,
        400,
        "invalid_grant",
        50013,
        &format!(
            "Assertion failed signature validation. [Reason - The provided signature value did not match the expected signature value., Thumbprint of key used by client: '{kid}']"
        ),
    );
    assert_entra_error(
        &obo(user(MintSpec {
            kid: Some("old-key".into()),
            ..for_app()
        }))
        .await,
        400,
        "invalid_grant",
        50013,
        "Assertion failed signature validation. [Reason - The key was not found., Thumbprint of key used by client: 'old-key']",
    );
    let unsigned = {
        let good = user(for_app());
        let claims = good.split('.').nth(1).unwrap().to_owned();
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        format!("{header}.{claims}.")
    };
    assert_eq!(obo(unsigned).await.1["error_codes"], json!([50013]));
    assert_entra_error(
        &obo("not-a-jwt".into()).await,
        400,
        "invalid_grant",
        50027,
        "JWT token is invalid or malformed.",
    );
    let app_only = emu.mint(&for_app());
    assert_entra_error(
        &obo(app_only).await,
        400,
        "unauthorized_client",
        7000114,
        &format!("Application '{APP}' is not allowed to make application on-behalf-of calls."),
    );

    // The request and the client.
    let assertion = user(for_app());
    let mut form = obo_secret(&assertion, SECRET);
    form.retain(|(k, _)| *k != "requested_token_use");
    assert_entra_error(
        &token(&emu, &form).await,
        400,
        "invalid_request",
        900144,
        "The request body must contain the following parameter: 'requested_token_use'.",
    );
    let mut form = obo_secret(&assertion, SECRET);
    form.retain(|(k, _)| *k != "assertion");
    assert_eq!(token(&emu, &form).await.1["error_codes"], json!([900144]));
    let mut form = obo_secret(&assertion, SECRET);
    form[4] = (
        "scope",
        "https://cognitiveservices.azure.com/.default https://ai.azure.com/.default",
    );
    assert_entra_error(
        &token(&emu, &form).await,
        400,
        "invalid_scope",
        700022,
        "The provided value for the input parameter scope isn't valid because it contains more than one resource.",
    );
    assert_entra_error(
        &token(&emu, &obo_secret(&assertion, "wrong-secret")).await,
        401,
        "invalid_client",
        7000215,
        &format!(
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{APP}'."
        ),
    );
    let mut form = obo_secret(&assertion, SECRET);
    form.retain(|(k, _)| *k != "client_secret");
    assert_entra_error(
        &token(&emu, &form).await,
        401,
        "invalid_client",
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    );
    let mut form = obo_secret(&assertion, SECRET);
    form[1] = ("client_id", "unknown-app");
    assert_entra_error(
        &token(&emu, &form).await,
        400,
        "unauthorized_client",
        700016,
        "Application with identifier 'unknown-app' was not found in the directory",
    );

    let stats = emu.stats();
    assert_eq!(stats.obo_requests, 16);
    assert_eq!(stats.obo_exchanges, 1);
    let log = emu.obo_requests();
    assert_eq!(log.len(), 16);
    assert_eq!(log[1].error_code, Some(500131));
    assert_eq!(log[1].status, 400);
    assert_eq!(log[1].user_oid, None, "the assertion did not pass");
    assert_eq!(log[1].client_auth, Some(ClientAuthKind::Secret));
}

#[tokio::test]
async fn switched_on_faults_refuse_like_entra_per_app_user_or_everyone() {
    let emu = start().await;
    let tid = tenant(&emu);
    emu.register(AppRegistration {
        display_name: Some("Entra Proxy".into()),
        ..AppRegistration::new(&tid, APP).with_secret(SECRET)
    })
    .unwrap();
    let assertion = user_token(&emu);
    let other_user = emu.mint(&MintSpec {
        oid: Some("22222222-0000-4000-8000-000000000002".into()),
        scp: Some("access_as_user".into()),
        ..MintSpec::new(format!("api://{APP}"))
    });
    let obo = |assertion: &str| {
        let form: Vec<(String, String)> = obo_secret(assertion, SECRET)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let emu = &emu;
        async move {
            let form: Vec<(&str, &str)> =
                form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            token(emu, &form).await
        }
    };

    emu.add_obo_fault(OboFaultRule::for_user(USER, OboFault::ConsentRequired));
    let refused = obo(&assertion).await;
    assert_entra_error(
        &refused,
        400,
        "invalid_grant",
        65001,
        &format!(
            "The user or administrator has not consented to use the application with ID '{APP}' named 'Entra Proxy'. Send an interactive authorization request for this user and resource."
        ),
    );
    assert_eq!(refused.1["suberror"], "consent_required");
    assert!(refused.1.get("claims").is_none());
    assert_eq!(obo(&other_user).await.0, 200, "only that user");

    emu.clear_obo_faults();
    emu.add_obo_fault(OboFaultRule::for_app(
        APP,
        OboFault::MfaRequired {
            capolids: vec!["cap-policy-1".into()],
        },
    ));
    let refused = obo(&assertion).await;
    assert_entra_error(
        &refused,
        400,
        "interaction_required",
        50076,
        &format!(
            "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access '{COG}'."
        ),
    );
    let claims = refused.1["claims"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(claims).unwrap(),
        json!({"access_token":{"capolids":{"essential":true,"values":["cap-policy-1"]}}})
    );
    assert_eq!(
        obo(&other_user).await.1["error_codes"],
        json!([50076]),
        "the whole app"
    );

    emu.clear_obo_faults();
    emu.add_obo_fault(OboFaultRule::everyone(OboFault::MfaEnrollmentRequired {
        capolids: vec![],
    }));
    let refused = obo(&assertion).await;
    assert_entra_error(
        &refused,
        400,
        "interaction_required",
        50079,
        &format!(
            "Due to a configuration change made by your administrator, or because you moved to a new location, you must enroll in multifactor authentication to access '{COG}'."
        ),
    );
    assert!(
        refused.1["claims"]
            .as_str()
            .unwrap()
            .contains("\"capolids\"")
    );

    emu.clear_obo_faults();
    emu.add_obo_fault(OboFaultRule::everyone(OboFault::InvalidClient));
    assert_entra_error(
        &obo(&assertion).await,
        401,
        "invalid_client",
        7000215,
        "Invalid client secret provided.",
    );

    emu.clear_obo_faults();
    assert_eq!(obo(&assertion).await.0, 200);

    // Named permissions the app has no consent for.
    let form: Vec<(&str, &str)> = obo_secret(&assertion, SECRET)
        .into_iter()
        .map(|(k, v)| {
            if k == "scope" {
                (k, "https://cognitiveservices.azure.com/Files.ReadWrite")
            } else {
                (k, v)
            }
        })
        .collect();
    assert_eq!(token(&emu, &form).await.1["error_codes"], json!([65001]));

    // Through the control API.
    let (status, _) = control(
        &emu,
        "emulator/obo-faults",
        json!({"user_oid": USER, "fault": {"mfa-required": {"capolids": ["p-9"]}}}),
    )
    .await;
    assert_eq!(status, 204);
    let refused = obo(&assertion).await;
    assert_eq!(refused.1["error_codes"], json!([50076]));
    assert!(refused.1["claims"].as_str().unwrap().contains("p-9"));
    let resp = client()
        .delete(emu.url().join("emulator/obo-faults").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(obo(&assertion).await.0, 200);
}

#[tokio::test]
async fn exchanges_are_counted_per_app_and_user() {
    let emu = start().await;
    register_secret_app(&emu);
    let first = user_token(&emu);
    let second = emu.mint(&MintSpec {
        oid: Some("33333333-0000-4000-8000-000000000003".into()),
        scp: Some("access_as_user".into()),
        ..MintSpec::new(format!("api://{APP}"))
    });
    for _ in 0..3 {
        assert_eq!(token(&emu, &obo_secret(&first, SECRET)).await.0, 200);
    }
    assert_eq!(token(&emu, &obo_secret(&second, SECRET)).await.0, 200);
    assert_eq!(token(&emu, &obo_secret(&second, "wrong")).await.0, 401);
    assert_eq!(emu.obo_exchanges(APP, USER), 3);
    assert_eq!(
        emu.obo_exchange_counts(),
        vec![
            OboExchangeCount {
                client_id: APP.into(),
                user_oid: USER.into(),
                count: 3
            },
            OboExchangeCount {
                client_id: APP.into(),
                user_oid: "33333333-0000-4000-8000-000000000003".into(),
                count: 1
            },
        ]
    );
    let stats = emu.stats();
    assert_eq!((stats.obo_requests, stats.obo_exchanges), (5, 4));
    assert_eq!(stats.entra_token_requests, 5);

    let resp = client()
        .get(emu.url().join("emulator/obo").unwrap())
        .send()
        .await
        .unwrap();
    let log: Value = resp.json().await.unwrap();
    assert_eq!(log["requests"].as_array().unwrap().len(), 5);
    assert_eq!(log["requests"][4]["status"], 401);
    assert_eq!(log["requests"][4]["error_code"], 7000215);
    assert_eq!(log["requests"][4]["client_auth"], Value::Null);
    assert_eq!(log["requests"][0]["client_auth"], "secret");
    assert_eq!(
        log["exchanges"][0],
        json!({"client_id": APP, "user_oid": USER, "count": 3})
    );
    let resp = client()
        .get(emu.url().join("emulator/stats").unwrap())
        .send()
        .await
        .unwrap();
    let stats: Value = resp.json().await.unwrap();
    assert_eq!(
        (&stats["obo_requests"], &stats["obo_exchanges"]),
        (&json!(5), &json!(4))
    );
    emu.clear_obo_log();
    assert!(emu.obo_requests().is_empty());
    assert_eq!(emu.obo_exchanges(APP, USER), 0);
}

#[tokio::test]
async fn apps_certificates_and_external_tokens_through_the_control_api() {
    let emu = start().await;
    let tid = tenant(&emu);
    let (status, cert) = control(&emu, "emulator/test-certificate", json!({})).await;
    assert_eq!(status, 200, "{cert}");
    for field in [
        "certificate_pem",
        "private_key_pem",
        "thumbprint",
        "x5t",
        "x5t_s256",
    ] {
        assert!(cert[field].is_string(), "{field}");
    }
    assert!(
        cert["private_key_pem"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    let issuer = "https://token.actions.example";
    let (status, body) = control(
        &emu,
        "emulator/apps",
        json!({
            "tenant_id": tid, "client_id": APP, "display_name": "Entra Proxy",
            "secrets": ["s-1"], "certificates": [cert["certificate_pem"]],
            "federated_credentials": [{"issuer": issuer, "subject": "repo:x:ref:main"}],
            "identifier_uris": ["api://entra-proxy"], "roles": ["Reader"],
            "delegated_scopes": ["user_impersonation", "read"]
        }),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = control(
        &emu,
        "emulator/apps",
        json!({"tenant_id": tid, "client_id": "x", "certificates": ["not a certificate"]}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["message"],
        "/emulator/apps: certificates[0]: neither PEM nor base64 DER"
    );
    let (status, body) = control(
        &emu,
        "emulator/mint-external",
        json!({"issuer": issuer, "subject": "repo:x:ref:main"}),
    )
    .await;
    assert_eq!(status, 200);
    let external = body["access_token"].as_str().unwrap().to_owned();
    let assertion = emu.mint(&MintSpec {
        oid: Some(USER.into()),
        scp: Some("access_as_user".into()),
        ..MintSpec::new("api://entra-proxy")
    });
    let (status, body) = token(&emu, &obo_assertion(&assertion, &external)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["scope"],
        format!("{COG}/user_impersonation {COG}/read")
    );
    assert_eq!(
        claims_of(body["access_token"].as_str().unwrap())["scp"],
        "user_impersonation read"
    );
    assert_eq!(token(&emu, &obo_secret(&assertion, "s-1")).await.0, 200);
}

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// Upper-case hex of a base64url value (a thumbprint as Entra prints it).
fn hex_of_b64(b64: &str) -> String {
    URL_SAFE_NO_PAD
        .decode(b64)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}
