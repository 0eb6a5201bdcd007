//! On behalf of the signed-in user: a user's token for the proxy's app is exchanged at Entra
//! (the emulator) for the user's own token for Azure, over HTTP, SSE and WebSocket — with the
//! proxy proving it is the app by its managed identity (no secret), a client secret or a
//! certificate; one exchange per user while the token lasts, one at a time; each failure with
//! the status and words the user or the operator can act on; and no token or secret anywhere
//! but on the wire to Entra and Azure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use azure_emulator::{
    AppRegistration, AzureSample, ClientAuthKind, Cloud, Emulator, Fault, FederatedCredential,
    MintSpec, OboFault, OboFaultRule, TestCertificate,
};
use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// The proxy's app registration (the API users sign in to).
const OBO_APP: &str = "0b0a0000-0000-4000-8000-0000000000a1";
/// The client app the user signed in with (a SPA, a CLI).
const CLIENT_APP: &str = "c1c10000-0000-4000-8000-0000000000c1";
const USER_1: &str = "0c000000-0000-4000-8000-0000000000b1";
const USER_2: &str = "0c000000-0000-4000-8000-0000000000b2";
const SECRET: &str = "obo-app-secret-Zq8~never-logged";

fn app_audience() -> String {
    format!("api://{OBO_APP}")
}

/// The base config taking users' tokens for the app, exchanging them on their behalf, and
/// `on_behalf_of` as the proof section's body (after `[on_behalf_of]`'s ids).
fn config(emu: &Emulator, proof: &str, extra: &str) -> String {
    let tenant = &emu.config().tenant_id;
    format!(
        "{base}\n[inbound.entra]\ntenants = [\"{tenant}\"]\naudiences = [\"{aud}\", \"api://entra-proxy\"]\nupstream = \"on-behalf-of\"\n\n[on_behalf_of]\nclient_id = \"{OBO_APP}\"\ntenant_id = \"{tenant}\"\n{proof}\n{extra}",
        base = base_config(&emu.url()),
        aud = app_audience(),
    )
}

const BY_MANAGED_IDENTITY: &str = "credential = \"managed-identity\"\n";

/// The app, trusting the proxy's managed identity as a federated credential (no secret).
fn register_federated(emu: &Emulator) {
    let tenant = emu.config().tenant_id.clone();
    let mi = emu.config().managed_identity_object_id.clone();
    emu.register(
        AppRegistration::new(&tenant, OBO_APP).with_federated_credential(
            FederatedCredential::managed_identity(Cloud::Public, &tenant, &mi),
        ),
    )
    .unwrap();
}

async fn obo_proxy(extra: &str) -> Harness {
    let emu = emulator().await;
    register_federated(&emu);
    let text = config(&emu, BY_MANAGED_IDENTITY, extra);
    proxy(emu, &text).await
}

/// The proxy in-process with a config read from a file (so the files it names are read).
async fn proxy_from_file(emu: Emulator, text: &str) -> Harness {
    let path = tempfile_path::TempPath::new("toml");
    std::fs::write(&path.0, text).unwrap();
    let config = entra_proxy::config::Config::load(&path.0).expect("config is valid");
    let state =
        entra_proxy::state::AppState::build(config, &entra_proxy::identity::IdentityEnv::default())
            .expect("state builds");
    serve_state(emu, std::sync::Arc::new(state)).await
}

/// A signed-in user's token for the proxy's app.
fn user_token(emu: &Emulator, user: &str) -> String {
    let mut spec = MintSpec::new(app_audience());
    spec.oid = Some(user.into());
    spec.appid = Some(CLIENT_APP.into());
    spec.scp = Some("access_as_user".into());
    emu.mint(&spec)
}

async fn chat(h: &Harness, token: &str) -> reqwest::Response {
    client()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(token)
        .json(&chat_body("gpt-4o"))
        .send()
        .await
        .unwrap()
}

/// The data-plane requests the emulator saw, without the token endpoints'.
fn data_plane(emu: &Emulator) -> Vec<azure_emulator::SeenRequest> {
    emu.requests()
        .into_iter()
        .filter(|r| r.path_and_query.starts_with("/openai"))
        .collect()
}

async fn status_json(h: &Harness) -> Value {
    status_json_at(h.addr).await
}

#[tokio::test]
async fn a_signed_in_user_reaches_azure_as_themselves_with_no_secret_in_the_proxy() {
    let h = obo_proxy("").await;
    let token = user_token(&h.emulator, USER_1);
    for _ in 0..10 {
        let r = chat(&h, &token).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    // Streaming too, with the same exchanged token.
    let mut body = chat_body("gpt-4o");
    body["stream"] = json!(true);
    let r = client()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (text, broken) = read_stream(r).await;
    assert!(!broken && text.contains("data: [DONE]"), "{text}");

    // Eleven requests, one exchange: the user's token is cached.
    assert_eq!(h.emulator.obo_exchanges(OBO_APP, USER_1), 1);
    let exchanges = h.emulator.obo_requests();
    assert_eq!(exchanges.len(), 1);
    assert_eq!(
        exchanges[0].client_auth,
        Some(ClientAuthKind::FederatedCredential)
    );
    assert_eq!(
        exchanges[0].requested_token_use.as_deref(),
        Some("on_behalf_of")
    );
    assert_eq!(
        exchanges[0].scope.as_deref(),
        Some("https://cognitiveservices.azure.com/.default")
    );
    // Azure saw the user, through the proxy's app, with delegated scopes.
    let seen = data_plane(&h.emulator);
    assert_eq!(seen.len(), 11);
    for r in &seen {
        assert_eq!(r.bearer_oid.as_deref(), Some(USER_1));
        assert_eq!(r.bearer_app_id.as_deref(), Some(OBO_APP));
        assert!(
            r.bearer_scp
                .as_deref()
                .is_some_and(|s| s.contains("user_impersonation")),
            "{:?}",
            r.bearer_scp
        );
        assert_eq!(r.bearer_audience.as_deref(), Some(COGNITIVE_AUD));
    }

    // The process's metrics are shared by every test here: at least this one's exchange.
    assert!(
        metric(
            h.addr,
            "entra_proxy_obo_exchanges_total",
            &[("result", "ok")]
        )
        .await
        .is_some_and(|n| n >= 1.0)
    );
    assert!(
        metric(h.addr, "entra_proxy_obo_cached_users", &[])
            .await
            .is_some()
    );
    let status = status_json(&h).await;
    let obo = &status["on_behalf_of"];
    assert_eq!(obo["client_id"], OBO_APP);
    assert_eq!(obo["credential"], "managed-identity");
    assert_eq!(obo["cached_users"], 1);
    assert_eq!(obo["exchanges"][0], json!(["ok", 1]));
    h.stop().await;
}

#[tokio::test]
async fn ten_concurrent_first_requests_of_a_user_share_one_exchange() {
    let h = obo_proxy("").await;
    let t1 = user_token(&h.emulator, USER_1);
    let t2 = user_token(&h.emulator, USER_2);
    let mut tasks = Vec::new();
    for i in 0..10 {
        let url = h.url("/v1/chat/completions");
        let token = if i < 8 { t1.clone() } else { t2.clone() };
        tasks.push(tokio::spawn(async move {
            client()
                .post(url)
                .bearer_auth(token)
                .json(&chat_body("gpt-4o"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(h.emulator.obo_exchanges(OBO_APP, USER_1), 1);
    assert_eq!(h.emulator.obo_exchanges(OBO_APP, USER_2), 1);
    let users: Vec<Option<String>> = data_plane(&h.emulator)
        .into_iter()
        .map(|r| r.bearer_oid)
        .collect();
    assert_eq!(
        users
            .iter()
            .filter(|u| u.as_deref() == Some(USER_2))
            .count(),
        2,
        "each user's requests carry their own token"
    );
    h.stop().await;
}

#[tokio::test]
async fn the_app_proves_itself_with_a_client_secret_or_a_certificate() {
    // A client secret.
    let emu = emulator().await;
    emu.register(AppRegistration::new(&emu.config().tenant_id, OBO_APP).with_secret(SECRET))
        .unwrap();
    let text = config(
        &emu,
        &format!("credential = \"client-secret\"\nclient_secret = \"{SECRET}\"\n"),
        "",
    );
    let h = proxy(emu, &text).await;
    let r = chat(&h, &user_token(&h.emulator, USER_1)).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(
        h.emulator.obo_requests()[0].client_auth,
        Some(ClientAuthKind::Secret)
    );
    h.stop().await;

    // A certificate: its key signs the client assertion, the certificate and key in two files.
    let cert = TestCertificate::generate("entra-proxy obo").unwrap();
    let cert_file = tempfile_path::TempPath::new("crt");
    let key_file = tempfile_path::TempPath::new("key");
    std::fs::write(&cert_file.0, cert.pem()).unwrap();
    std::fs::write(&key_file.0, cert.private_key_pem()).unwrap();
    let emu = emulator().await;
    emu.register(
        AppRegistration::new(&emu.config().tenant_id, OBO_APP).with_certificate(cert.pem()),
    )
    .unwrap();
    let text = config(
        &emu,
        &format!(
            "credential = \"certificate\"\ncertificate_file = \"{}\"\nprivate_key_file = \"{}\"\n",
            cert_file.0.display(),
            key_file.0.display()
        ),
        "",
    );
    let h = proxy_from_file(emu, &text).await;
    let r = chat(&h, &user_token(&h.emulator, USER_1)).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(
        h.emulator.obo_requests()[0].client_auth,
        Some(ClientAuthKind::Certificate)
    );
    assert_eq!(
        data_plane(&h.emulator)[0].bearer_oid.as_deref(),
        Some(USER_1)
    );
    h.stop().await;
}

#[tokio::test]
async fn each_refused_exchange_says_whose_move_it_is_and_what_to_do() {
    let h = obo_proxy("").await;
    let emu = &h.emulator;
    let token = user_token(emu, USER_1);

    // No consent: 403, the permission to grant and the admin-consent URL.
    emu.add_obo_fault(OboFaultRule::everyone(OboFault::ConsentRequired));
    let (status, code, message) = error_of(chat(&h, &token).await).await;
    assert_eq!((status, code.as_str()), (403, "obo_consent_required"));
    assert!(message.contains("user_impersonation"), "{message}");
    assert!(
        message.contains("Microsoft Cognitive Services"),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "/{}/adminconsent?client_id={OBO_APP}",
            emu.config().tenant_id
        )),
        "{message}"
    );

    // MFA required: 401 with Entra's claims challenge for the client to sign in again with.
    emu.clear_obo_faults();
    emu.add_obo_fault(OboFaultRule::for_user(
        USER_1,
        OboFault::MfaRequired {
            capolids: vec!["cap-policy-mfa".into()],
        },
    ));
    let r = chat(&h, &token).await;
    assert_eq!(r.status(), 401);
    let challenge = r
        .headers()
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.contains("error=\"insufficient_claims\""),
        "{challenge}"
    );
    let claims = challenge
        .split("claims=\"")
        .nth(1)
        .and_then(|c| c.split('"').next())
        .unwrap();
    let claims = base64::engine::general_purpose::STANDARD
        .decode(claims)
        .unwrap();
    let claims: Value = serde_json::from_slice(&claims).unwrap();
    assert!(claims.to_string().contains("cap-policy-mfa"), "{claims}");
    let (_, code, message) = error_of(r).await;
    assert_eq!(code, "obo_interaction_required");
    assert!(message.contains("AADSTS50076"), "{message}");
    // The other user is not affected.
    assert_eq!(chat(&h, &user_token(emu, USER_2)).await.status(), 200);

    // The app's own credential refused: the operator's error, 502, naming the setting.
    emu.clear_obo_faults();
    emu.add_obo_fault(OboFaultRule::for_app(OBO_APP, OboFault::InvalidClient));
    let (status, code, message) = error_of(chat(&h, &token).await).await;
    assert_eq!(
        (status, code.as_str()),
        (502, "obo_app_rejected"),
        "{message}"
    );
    assert!(message.contains("on_behalf_of"), "{message}");
    assert!(message.contains("federated"), "{message}");
    emu.clear_obo_faults();

    // A user token for another of the proxy's audiences: Entra will not exchange it for this
    // app, and the proxy says so.
    let mut spec = MintSpec::new("api://entra-proxy");
    spec.oid = Some(USER_1.into());
    spec.scp = Some("access_as_user".into());
    let (status, code, message) = error_of(chat(&h, &emu.mint(&spec)).await).await;
    assert_eq!(
        (status, code.as_str()),
        (401, "obo_token_rejected"),
        "{message}"
    );
    assert!(message.contains("AADSTS"), "{message}");

    // An app's own token has no user to act for: refused before Entra is asked.
    let before = emu.obo_requests().len();
    let mut spec = MintSpec::new(app_audience());
    spec.appid = Some(CLIENT_APP.into());
    let (status, code, message) = error_of(chat(&h, &emu.mint(&spec)).await).await;
    assert_eq!((status, code.as_str()), (401, "obo_no_user"), "{message}");
    assert_eq!(emu.obo_requests().len(), before);

    // The status page lists the failures by code, newest first.
    let status = status_json(&h).await;
    let codes: Vec<&str> = status["on_behalf_of"]["last_failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "obo_token_rejected",
            "obo_app_rejected",
            "obo_interaction_required",
            "obo_consent_required"
        ]
    );
    h.stop().await;
}

#[tokio::test]
async fn azure_refusing_the_users_own_token_names_the_user_and_the_role_to_assign() {
    let h = obo_proxy("").await;
    h.emulator.script(
        "gpt-4o",
        vec![Fault::Sample(AzureSample::PermissionDenied403)],
    );
    let r = chat(&h, &user_token(&h.emulator, USER_1)).await;
    assert_eq!(r.status(), 403);
    let diagnosis = r
        .headers()
        .get("x-entra-proxy-diagnosis")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        diagnosis.contains(&format!("--assignee {USER_1}")),
        "{diagnosis}"
    );
    assert!(
        diagnosis.contains("Cognitive Services OpenAI User"),
        "{diagnosis}"
    );
    assert!(diagnosis.contains(&format!("user {USER_1}")), "{diagnosis}");
    let status = status_json(&h).await;
    let fix = status["diagnoses"][0]["fix"].as_str().unwrap_or_default();
    assert!(fix.contains("a group the user is in"), "{fix}");
    assert!(fix.contains(&format!("--assignee {USER_1}")), "{fix}");
    h.stop().await;
}

async fn realtime_as(h: &Harness, token: &str) -> Result<(), u16> {
    let mut req = format!("ws://{}/v1/realtime?model=gpt-4o", h.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut socket, _) = match tokio_tungstenite::connect_async(req).await {
        Ok(ok) => ok,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => return Err(r.status().as_u16()),
        Err(e) => panic!("{e}"),
    };
    socket
        .send(Message::text(r#"{"type":"response.create"}"#))
        .await
        .unwrap();
    while let Some(Ok(m)) = socket.next().await {
        if let Message::Text(t) = m
            && t.contains("response.done")
        {
            break;
        }
    }
    socket.close(None).await.unwrap();
    while let Some(Ok(_)) = socket.next().await {}
    Ok(())
}

#[tokio::test]
async fn realtime_reaches_azure_as_the_user_and_each_users_budget_holds() {
    let h = obo_proxy(&format!(
        "[[identities]]\nname = \"voice\"\napp_id = \"{CLIENT_APP}\"\nper_user_token_quota = 2\n\
         [limits]\ndefault_completion_reservation = 1\n"
    ))
    .await;
    let t1 = user_token(&h.emulator, USER_1);
    realtime_as(&h, &t1).await.unwrap();
    let socket = h
        .emulator
        .requests()
        .into_iter()
        .find(|r| r.path_and_query.contains("realtime"))
        .expect("the emulator saw the realtime handshake");
    assert_eq!(socket.bearer_oid.as_deref(), Some(USER_1));
    assert_eq!(socket.bearer_app_id.as_deref(), Some(OBO_APP));
    // A session reserves 1 token of the user's 2 and is settled to what it used, more than
    // both: the user's next session is refused...
    let mut refused = None;
    for _ in 0..50 {
        match realtime_as(&h, &t1).await {
            Err(status) => {
                refused = Some(status);
                break;
            }
            Ok(()) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    assert_eq!(refused, Some(429));
    // ...and over HTTP too, while another user of the identity still gets in.
    assert_eq!(chat(&h, &t1).await.status(), 429);
    realtime_as(&h, &user_token(&h.emulator, USER_2))
        .await
        .unwrap();
    h.stop().await;
}

/// `alg: none`, with the user's claims.
fn unsigned(emu: &Emulator) -> String {
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let tenant = &emu.config().tenant_id;
    let claims = json!({
        "aud": app_audience(), "tid": tenant, "oid": USER_1, "scp": "access_as_user",
        "iss": format!("https://login.microsoftonline.com/{tenant}/v2.0"),
        "exp": 4_102_444_800i64, "nbf": 1_700_000_000i64
    });
    format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims)
    )
}

#[tokio::test]
async fn forged_foreign_and_expired_tokens_never_reach_entra() {
    let h = obo_proxy("").await;
    let emu = &h.emulator;
    let mut other_tenant = MintSpec::new(app_audience());
    other_tenant.tenant_id = Some("0f000000-0000-4000-8000-00000000000f".into());
    other_tenant.scp = Some("access_as_user".into());
    let mut other_audience = MintSpec::new("api://someone-else");
    other_audience.scp = Some("access_as_user".into());
    let mut expired = MintSpec::new(app_audience());
    expired.scp = Some("access_as_user".into());
    expired.lifetime_secs = -600;
    let mut bad_signature = MintSpec::new(app_audience());
    bad_signature.scp = Some("access_as_user".into());
    bad_signature.bad_signature = true;
    let tokens = [
        (emu.mint(&other_tenant), "token_wrong_tenant"),
        (emu.mint(&other_audience), "token_wrong_audience"),
        (emu.mint(&expired), "token_expired"),
        (emu.mint(&bad_signature), "token_bad_signature"),
        (unsigned(emu), "token_bad_algorithm"),
    ];
    for (token, want) in &tokens {
        for _ in 0..20 {
            let (status, code, _) = error_of(chat(&h, token).await).await;
            assert_eq!((status, code.as_str()), (401, *want));
        }
    }
    assert!(emu.obo_requests().is_empty(), "{:?}", emu.obo_requests());
    assert!(data_plane(emu).is_empty());
    h.stop().await;
}

#[tokio::test]
async fn no_token_or_secret_reaches_logs_status_or_metrics() {
    let emu = emulator().await;
    emu.register(AppRegistration::new(&emu.config().tenant_id, OBO_APP).with_secret(SECRET))
        .unwrap();
    let text = config(
        &emu,
        "credential = \"client-secret\"\nclient_secret = \"${OBO_CLIENT_SECRET}\"\n",
        "",
    );
    let (child, _path) = spawn_binary(&text, &[("OBO_CLIENT_SECRET", SECRET)]).await;
    let url = |p: &str| format!("http://{}{p}", child.addr);
    let token = user_token(&emu, USER_1);
    let ok = client()
        .post(url("/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // A failed exchange too: its error body carries no token.
    emu.add_obo_fault(OboFaultRule::everyone(OboFault::MfaRequired {
        capolids: vec![],
    }));
    let token_2 = user_token(&emu, USER_2);
    let refused = client()
        .post(url("/v1/chat/completions"))
        .bearer_auth(&token_2)
        .json(&chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let body = refused.text().await.unwrap();
    let status = reqwest::get(url("/status.json"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let metrics = reqwest::get(url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (_, logs) = stop_and_collect(child).await;
    assert!(logs.contains(USER_1), "the user's oid is logged, as an id");
    for (name, text) in [
        ("logs", &logs),
        ("error body", &body),
        ("status", &status),
        ("metrics", &metrics),
    ] {
        assert!(!text.contains(SECRET), "the client secret is in the {name}");
        for t in [&token, &token_2] {
            let signature = t.rsplit('.').next().unwrap();
            assert!(!text.contains(signature), "a user's token is in the {name}");
        }
        // Every token the proxy handles is a JWT: none appears, whole or in part.
        assert!(!text.contains("eyJ"), "a JWT is in the {name}:\n{text}");
    }
}

#[tokio::test]
async fn explain_with_the_config_says_the_token_will_be_exchanged_and_how() {
    let emu = emulator().await;
    let text = config(&emu, BY_MANAGED_IDENTITY, "");
    let path = tempfile_path::TempPath::new("toml");
    std::fs::write(&path.0, &text).unwrap();
    let out = std::process::Command::new(binary())
        .args(["explain", "--config"])
        .arg(&path.0)
        .arg(user_token(&emu, USER_1))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("user {USER_1}'s own token, exchanged at Entra")),
        "{stdout}"
    );
    assert!(
        stdout.contains("https://cognitiveservices.azure.com/.default"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("app {OBO_APP}")) && stdout.contains("managed identity"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_certificate_that_cannot_be_used_stops_start_up_naming_the_setting() {
    let emu = emulator().await;
    let cert = TestCertificate::generate("one").unwrap();
    let other = TestCertificate::generate("two").unwrap();
    let cert_file = tempfile_path::TempPath::new("crt");
    let key_file = tempfile_path::TempPath::new("key");
    std::fs::write(&cert_file.0, cert.pem()).unwrap();
    std::fs::write(&key_file.0, other.private_key_pem()).unwrap();
    let missing = std::env::temp_dir().join("entra-proxy-tests/no-such-cert.pem");
    for (cert_path, key_path, want) in [
        (&missing, &key_file.0, "on_behalf_of.certificate_file"),
        (&cert_file.0, &key_file.0, "on_behalf_of.private_key_file"),
    ] {
        let text = config(
            &emu,
            &format!(
                "credential = \"certificate\"\ncertificate_file = \"{}\"\nprivate_key_file = \"{}\"\n",
                cert_path.display(),
                key_path.display()
            ),
            "",
        );
        let path = tempfile_path::TempPath::new("toml");
        std::fs::write(&path.0, &text).unwrap();
        let out = std::process::Command::new(binary())
            .args(["serve", "--config"])
            .arg(&path.0)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{stderr}");
        assert!(stderr.contains(want), "{stderr}");
        assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
    }
}
