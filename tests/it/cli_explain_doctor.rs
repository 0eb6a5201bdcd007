//! The command line before and after deploying: `explain` on pasted tokens, `doctor` against
//! the emulator, and `config check`, each catching the classic mistakes by name.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use azure_emulator::{EmulatorConfig, IdentityFault, MintSpec, ResourceKind};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::process::Stdio;

const TID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const OID: &str = "aaaaaaaa-1111-2222-3333-444444444444";
const SIG: &str = "c2lnbmF0dXJlLW5ldmVyLXNob3du";

/// What a finished command left behind.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs the binary with an empty environment (no Azure variables leak in) and optional stdin.
async fn run(args: &[&str], stdin: Option<&str>) -> Run {
    run_with(args, stdin, &[("RUST_LOG", "error")]).await
}

/// [`run`] with these environment variables.
async fn run_with(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(binary())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An unsigned-looking Entra v1 app token with `claims` merged over sensible defaults.
fn jwt(aud: &str, overrides: serde_json::Value) -> String {
    let now = now();
    let mut claims = serde_json::json!({
        "aud": aud,
        "iss": format!("https://sts.windows.net/{TID}/"),
        "iat": now - 600,
        "nbf": now - 600,
        "exp": now + 3000,
        "appid": "bbbbbbbb-0000-0000-0000-000000000001",
        "idtyp": "app",
        "oid": OID,
        "tid": TID,
        "ver": "1.0",
    });
    for (k, v) in overrides.as_object().unwrap() {
        claims[k] = v.clone();
    }
    format!(
        "{}.{}.{SIG}",
        URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"RS256","kid":"k1"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

async fn explain(token: &str, extra: &[&str]) -> Run {
    let mut args = vec!["explain", token];
    args.extend_from_slice(extra);
    let r = run(&args, None).await;
    assert!(!r.all().contains(SIG), "explain printed the signature");
    r
}

fn write_config(text: &str) -> tempfile_path::TempPath {
    let path = tempfile_path::TempPath::new("toml");
    std::fs::write(&path.0, text).unwrap();
    path
}

async fn doctor(config: &str, json: bool) -> Run {
    let path = write_config(config);
    let mut args = vec!["doctor", "--config", path.0.to_str().unwrap()];
    if json {
        args.push("--json");
    }
    run(&args, None).await
}

/// `doctor` on `config` with these environment variables, and how long it took.
async fn doctor_with(config: &str, env: &[(&str, &str)]) -> (Run, std::time::Duration) {
    let path = write_config(config);
    let started = std::time::Instant::now();
    let r = run_with(&["doctor", "--config", path.0.to_str().unwrap()], None, env).await;
    (r, started.elapsed())
}

/// The one failed line of a report that stops at the token, after passing everything before.
fn failed_at_the_token(r: &Run) -> String {
    assert_eq!(r.code, 1, "{}", r.all());
    let lines = marked(&r.stdout);
    let failed: Vec<&&str> = lines.iter().filter(|l| l.starts_with('✗')).collect();
    assert_eq!(failed.len(), 1, "{}", r.stdout);
    assert!(failed[0].contains("primary: token"), "{}", r.stdout);
    assert_eq!(lines.last(), Some(*failed.first().unwrap()), "{}", r.stdout);
    failed[0].to_string()
}

async fn config_check(config: &str) -> Run {
    let path = write_config(config);
    let r = run(
        &["config", "check", "--config", path.0.to_str().unwrap()],
        None,
    )
    .await;
    drop(path);
    r
}

/// The report lines that carry a mark (✓, ✗, ! or -).
fn marked(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| ["✓", "✗", "!", "-"].iter().any(|m| l.starts_with(m)))
        .collect()
}

// ---- explain ----

#[tokio::test]
async fn explain_accepts_a_cognitiveservices_token_with_exit_0_and_plain_words() {
    let r = explain(&jwt(COGNITIVE_AUD, serde_json::json!({})), &[]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    for words in [
        "Who:",
        "bbbbbbbb-0000-0000-0000-000000000001",
        &format!("Tenant:    {TID}"),
        "Audience:  https://cognitiveservices.azure.com",
        "(expires in ",
        "Verdict: accepted",
    ] {
        assert!(r.stdout.contains(words), "{words:?} in\n{}", r.stdout);
    }
    assert!(!r.stdout.contains("Fix:"), "{}", r.stdout);
}

#[tokio::test]
async fn explain_management_token_is_rejected_with_the_scope_to_request() {
    let r = explain(
        &jwt("https://management.azure.com/", serde_json::json!({})),
        &[],
    )
    .await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout
            .contains("Verdict: rejected — this is an Azure Resource Manager token"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(
            "Fix: request a token for scope https://cognitiveservices.azure.com/.default: az account get-access-token --scope https://cognitiveservices.azure.com/.default"
        ),
        "{}",
        r.stdout
    );
}

#[tokio::test]
async fn explain_spots_a_token_for_another_cloud() {
    let gov = jwt("https://cognitiveservices.azure.us", serde_json::json!({}));
    let r = explain(&gov, &[]).await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout
            .contains("token is for the US Government cloud, target is public"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("AzureCloud"), "{}", r.stdout);
    // The same token is right for US Government.
    let r = explain(&gov, &["--cloud", "usgov"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("audience https://cognitiveservices.azure.us"),
        "{}",
        r.stdout
    );
    // And a public token is wrong there, with the sign-in to that cloud in the fix.
    let r = explain(
        &jwt(COGNITIVE_AUD, serde_json::json!({})),
        &["--cloud", "usgov"],
    )
    .await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("az cloud set --name AzureUSGovernment"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("--scope https://cognitiveservices.azure.us/.default"),
        "{}",
        r.stdout
    );
}

#[tokio::test]
async fn explain_tells_the_foundry_audience_from_the_cognitiveservices_one() {
    let foundry = jwt("https://ai.azure.com", serde_json::json!({}));
    let r = explain(&foundry, &[]).await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout
            .contains("this token is for Azure AI Foundry (https://ai.azure.com)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("*.openai.azure.com and *.cognitiveservices.azure.com need https://cognitiveservices.azure.com"),
        "{}",
        r.stdout
    );
    let r = explain(&foundry, &["--for", "foundry"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("*.services.ai.azure.com"), "{}", r.stdout);
    // A cognitiveservices token is the wrong one for Foundry, and the fix says which to get.
    let r = explain(
        &jwt(COGNITIVE_AUD, serde_json::json!({})),
        &["--for", "foundry"],
    )
    .await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("--scope https://ai.azure.com/.default"),
        "{}",
        r.stdout
    );
}

#[tokio::test]
async fn explain_expired_token_says_when_and_how_to_get_a_fresh_one() {
    let t = jwt(
        COGNITIVE_AUD,
        serde_json::json!({"iat": now() - 3 * 3600, "nbf": now() - 3 * 3600, "exp": now() - 2 * 3600}),
    );
    let r = explain(&t, &[]).await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout
            .contains("Verdict: rejected — token expired 2 h ago"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("Fix: get a fresh token"), "{}", r.stdout);
}

#[tokio::test]
async fn explain_refuses_what_is_not_a_jwt_without_echoing_it() {
    for (input, words) in [
        ("not-a-jwt.at-all", "not a JWT"),
        ("0123456789abcdef0123456789abcdef", "Azure resource key"),
        ("sk-proj-abcdefghijklmnop", "OpenAI API key"),
    ] {
        let r = explain(input, &[]).await;
        assert_eq!(r.code, 1, "{input}: {}", r.all());
        assert!(r.stderr.contains(words), "{input}: {}", r.stderr);
        assert!(!r.all().contains(input), "{input} was echoed: {}", r.all());
    }
}

#[tokio::test]
async fn explain_says_what_a_proxy_key_a_resource_key_and_a_client_secret_are_and_what_to_do() {
    let proxy_key = "ep-s_yfH85xSDxxYDIgEqmNLIupO0ur7MeuobUkfDE7nDQ";
    let old_key = "0123456789abcdef0123456789abcdef";
    let new_key =
        "0a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6q7r8s9t0u1v2w3x4y5zJQQJ99BDACYeBjFXJ3w3AAAAACOGabcd";
    let secret = "abc8Q~Zx.y_z-0123456789abcdefghijklmnopq";
    for (input, credential, what, todo) in [
        (
            proxy_key,
            "proxy-key",
            "a key this proxy issued",
            "api-key: KEY",
        ),
        (
            old_key,
            "azure-resource-key",
            "an Azure resource key (32 hexadecimal characters)",
            "keys hash --legacy",
        ),
        (
            new_key,
            "azure-resource-key",
            "an Azure resource key (84 characters, the newer form)",
            "keys regenerate",
        ),
        (
            secret,
            "client-secret",
            "an Entra ID client secret",
            "az ad app credential reset",
        ),
    ] {
        let r = explain(input, &[]).await;
        assert_eq!(r.code, 1, "{}", r.all());
        assert!(r.stderr.contains(what), "{}", r.stderr);
        assert!(r.stderr.contains(todo), "{}", r.stderr);
        assert!(
            !r.all().contains(input),
            "the secret was echoed: {}",
            r.all()
        );
        // From stdin, pasted with a Bearer prefix, the same.
        let r = run(&["explain", "--json"], Some(&format!("Bearer {input}\n"))).await;
        assert_eq!(r.code, 1);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(v["credential"], credential, "{v}");
        assert_eq!(v["accepted"], false);
        assert!(
            !r.all().contains(input),
            "the secret was echoed: {}",
            r.all()
        );
    }
    let r = explain("not-a-jwt.at-all", &["--json"]).await;
    assert_eq!(r.code, 1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["accepted"], false);
    assert!(v["error"].as_str().unwrap().contains("not a JWT"), "{v}");
}

#[tokio::test]
async fn explain_reads_a_pasted_authorization_line_and_token_endpoint_json() {
    let t = jwt(COGNITIVE_AUD, serde_json::json!({}));
    let inputs = [
        format!("Authorization: Bearer {t}\n"),
        format!("Bearer {t}"),
        format!(
            r#"{{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"{t}"}}"#
        ),
        format!(
            r#"{{"accessToken":"{t}","expiresOn":"2030-01-01 10:00:00.000000","tenant":"{TID}","tokenType":"Bearer"}}"#
        ),
    ];
    for input in &inputs {
        // From standard input, as `-` ...
        let r = run(&["explain", "-"], Some(input)).await;
        assert_eq!(r.code, 0, "{input}: {}", r.all());
        assert!(r.stdout.contains("Verdict: accepted"), "{}", r.stdout);
        // ... and as the argument.
        let r = explain(input, &[]).await;
        assert_eq!(r.code, 0, "{input}: {}", r.all());
    }
    // A token-endpoint error is explained, not mistaken for a token.
    let err = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#;
    let r = run(&["explain"], Some(err)).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("AADSTS7000215"), "{}", r.stderr);
}

#[tokio::test]
async fn explain_json_has_a_stable_shape_and_no_token() {
    let t = jwt("https://management.azure.com", serde_json::json!({}));
    let r = explain(&t, &["--json"]).await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(!r.stdout.contains(&t));
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["accepted"], false);
    assert_eq!(v["audience"], "https://management.azure.com");
    assert_eq!(v["tenant"], TID);
    assert_eq!(v["header"]["alg"], "RS256");
    assert_eq!(v["claims"]["oid"], OID);
    assert!(v["who"].as_str().unwrap().contains(OID), "{v}");
    assert!(v["expires_at"].is_i64());
    assert!(v["issued_at"].is_i64());
    assert!(v["roles"].is_array() && v["scopes"].is_array(), "{v}");
    assert_eq!(v["problems"][0]["code"], "audience-mismatch", "{v}");
    assert!(v["problems"][0]["message"].is_string());
    assert!(
        v["fix"]
            .as_str()
            .unwrap()
            .contains("https://cognitiveservices.azure.com/.default"),
        "{v}"
    );
    let ok = explain(&jwt(COGNITIVE_AUD, serde_json::json!({})), &["--json"]).await;
    assert_eq!(ok.code, 0);
    let v: serde_json::Value = serde_json::from_str(&ok.stdout).unwrap();
    assert_eq!(v["accepted"], true);
    assert_eq!(v["problems"], serde_json::json!([]));
    assert!(v["fix"].is_null(), "{v}");
}

#[tokio::test]
async fn explain_with_a_tenant_spots_a_token_from_another_tenant() {
    let other = "11111111-2222-3333-4444-555555555555";
    let r = explain(
        &jwt(COGNITIVE_AUD, serde_json::json!({})),
        &["--tenant", other],
    )
    .await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains(&format!(
            "token is from tenant {TID}, target tenant is {other}"
        )),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!("--tenant {other}")),
        "{}",
        r.stdout
    );
}

#[tokio::test]
async fn explain_reads_an_emulator_issued_token_like_a_real_one() {
    let emu = emulator().await;
    let token = emu.mint(&MintSpec::new(COGNITIVE_AUD));
    let r = explain(&token, &[]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let expired = emu.mint(&MintSpec {
        lifetime_secs: -600,
        ..MintSpec::new(COGNITIVE_AUD)
    });
    let r = explain(&expired, &[]).await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("token expired 10 min ago"),
        "{}",
        r.stdout
    );
    assert!(!r.all().contains(&expired));
}

// ---- doctor ----

#[tokio::test]
async fn doctor_on_a_healthy_emulator_passes_every_check_with_exit_0() {
    let emu = emulator().await;
    let r = doctor(&base_config(&emu.url()), false).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let lines = marked(&r.stdout);
    assert!(lines.iter().all(|l| l.starts_with('✓')), "{}", r.stdout);
    let names: Vec<&str> = [
        "config valid",
        "primary: DNS",
        "primary: reachable",
        "primary: token",
        "primary: token claims",
        "primary: call gpt-4o",
        "primary: call text-embedding-3-small",
    ]
    .into();
    assert_eq!(lines.len(), names.len(), "{}", r.stdout);
    for (line, name) in lines.iter().zip(names) {
        assert!(line.contains(name), "{name:?} in {line:?}");
        assert!(line.contains(" ms "), "timing on {line:?}");
    }
    assert!(r.stdout.contains("(private)"), "{}", r.stdout);
    assert!(
        r.stdout.contains("managed identity (IMDS"),
        "the token line names the credential: {}",
        r.stdout
    );
    assert!(
        r.stdout.contains("aud https://cognitiveservices.azure.com"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("all checks passed"), "{}", r.stdout);
    let stats = emu.stats();
    assert_eq!(stats.imds_token_requests, 1, "{stats:?}");
}

#[tokio::test]
async fn doctor_json_lists_each_check_with_status_detail_and_timing() {
    let emu = emulator().await;
    let r = doctor(&base_config(&emu.url()), true).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let checks = v["checks"].as_array().unwrap();
    assert!(checks.len() >= 7, "{v}");
    for c in checks {
        assert_eq!(c["status"], "pass", "{c}");
        assert!(c["name"].is_string() && c["detail"].is_string(), "{c}");
        assert!(c["millis"].is_u64(), "{c}");
    }
    // The token itself is never printed.
    assert!(!r.stdout.contains("eyJ"), "{}", r.stdout);
}

#[tokio::test]
async fn doctor_with_the_identity_endpoint_down_fails_at_the_token_line() {
    let emu = emulator().await;
    emu.set_identity_fault(Some(IdentityFault::Down));
    // IMDS credentials retry 5xx on their own; the proxy bounds each acquisition.
    let config = base_config(&emu.url()).replace(
        "[azure]",
        "[upstream]\nidentity_timeout_secs = 1\n\n[azure]",
    );
    let r = doctor(&config, false).await;
    assert_ne!(r.code, 0, "{}", r.all());
    let lines = marked(&r.stdout);
    let failed: Vec<&&str> = lines.iter().filter(|l| l.starts_with('✗')).collect();
    assert_eq!(failed.len(), 1, "{}", r.stdout);
    assert!(failed[0].contains("primary: token"), "{}", r.stdout);
    assert!(
        failed[0].contains("https://cognitiveservices.azure.com/.default"),
        "names the scope: {}",
        failed[0]
    );
    let at = lines.iter().position(|l| l.starts_with('✗')).unwrap();
    assert!(
        lines[..at].iter().all(|l| l.starts_with('✓')),
        "{}",
        r.stdout
    );
    assert_eq!(at, lines.len() - 1, "the chain stops there: {}", r.stdout);
    assert!(r.stdout.contains("some checks failed"), "{}", r.stdout);
}

#[tokio::test]
async fn doctor_with_an_identity_endpoint_refusing_connections_says_so_at_once_with_the_fix() {
    let emu = emulator().await;
    let closed = free_port();
    // Every identity call goes to [azure] emulator: here a port nothing listens on.
    let config = base_config(&emu.url()).replace(
        &format!("emulator = \"{}\"", emu.url()),
        &format!("emulator = \"http://127.0.0.1:{closed}\""),
    );
    let (r, took) = doctor_with(&config, &[]).await;
    let line = failed_at_the_token(&r);
    assert!(
        line.contains(&format!("connection refused by 127.0.0.1:{closed}; fix: ")),
        "{line}"
    );
    assert!(line.contains("[azure] emulator"), "{line}");
    // Not the 15 s of upstream.identity_timeout_secs.
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");

    // App Service / Container Apps style: IDENTITY_ENDPOINT names a port nothing listens on.
    let config = base_config(&emu.url()).replace(&format!("emulator = \"{}\"\n", emu.url()), "");
    let endpoint = format!("http://127.0.0.1:{closed}/msi/token");
    let (r, took) = doctor_with(
        &config,
        &[
            ("IDENTITY_ENDPOINT", endpoint.as_str()),
            ("IDENTITY_HEADER", "h"),
        ],
    )
    .await;
    let line = failed_at_the_token(&r);
    assert!(line.contains("connection refused by 127.0.0.1"), "{line}");
    assert!(
        line.contains("IDENTITY_ENDPOINT is set but nothing answers"),
        "{line}"
    );
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn doctor_with_an_identity_endpoint_that_never_answers_names_the_timeout_and_its_setting() {
    let emu = emulator().await;
    // Takes connections (the kernel completes them) and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let config = base_config(&emu.url())
        .replace(
            &format!("emulator = \"{}\"", emu.url()),
            &format!("emulator = \"http://127.0.0.1:{port}\""),
        )
        .replace(
            "[azure]",
            "[upstream]\nidentity_timeout_secs = 1\n\n[azure]",
        );
    let (r, took) = doctor_with(&config, &[]).await;
    let line = failed_at_the_token(&r);
    assert!(line.contains("timeout: "), "{line}");
    assert!(
        line.contains("within 1s (upstream.identity_timeout_secs); fix: "),
        "{line}"
    );
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    drop(silent);
}

#[tokio::test]
async fn doctor_names_an_aadsts_refusal_of_the_proxys_identity_with_its_fix() {
    let emu = emulator().await;
    let tenant = emu.config().tenant_id.clone();
    let app = "11111111-2222-3333-4444-555555555555";
    emu.register_app(&tenant, app, "Sup3r~Secret.Value_123");
    let config = base_config(&emu.url()).replace(
        "[identity]\nkind = \"managed-identity\"\n",
        &format!(
            "[identity]\nkind = \"client-secret\"\ntenant_id = \"{tenant}\"\nclient_id = \"{app}\"\nclient_secret = \"Sup3r~Secret.Value_123\"\n"
        ),
    );
    for (aadsts, fix) in [
        (7000215, "send the secret's Value, not its Secret ID"),
        (7000222, "has expired"),
        (700016, "was not found in tenant"),
    ] {
        emu.set_identity_fault(Some(IdentityFault::Error {
            status: 401,
            aadsts,
        }));
        let (r, _) = doctor_with(&config, &[]).await;
        let line = failed_at_the_token(&r);
        assert!(
            line.contains(&format!("Entra refused with AADSTS{aadsts}; fix: ")),
            "{line}"
        );
        assert!(line.contains(fix), "{line}");
        assert!(!r.all().contains("Sup3r~Secret"), "{}", r.all());
    }
}

#[tokio::test]
async fn doctor_keeps_library_logs_out_of_its_report_unless_verbose() {
    let emu = emulator().await;
    let config = base_config(&emu.url());
    let (r, _) = doctor_with(&config, &[("RUST_LOG", "trace")]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.stderr, "", "nothing but the report");
    for line in r.stdout.lines().filter(|l| !l.is_empty()) {
        assert!(
            ["✓", "✗", "!", "-"].iter().any(|m| line.starts_with(m)) || line == "all checks passed",
            "not a report line: {line}"
        );
    }
    // What the probe answer means, not only that it came.
    assert!(
        r.stdout.contains("deployment gpt-4o exists and accepted the token (HTTP 400 is Azure refusing the empty test body"),
        "{}",
        r.stdout
    );
    let path = write_config(&config);
    let r = run_with(
        &["doctor", "--verbose", "--config", path.0.to_str().unwrap()],
        None,
        &[("RUST_LOG", "debug")],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("DEBUG"), "--verbose logs: {}", r.stderr);
    assert!(!r.stdout.contains("DEBUG"), "but never into the report");
}

#[tokio::test]
async fn doctor_with_a_wrong_deployment_fails_at_the_call_line_naming_the_real_deployments() {
    let emu = emulator().await;
    let config = base_config(&emu.url()).replace(
        "name = \"gpt-4o\"\nbackend = \"primary\"\ndeployment = \"gpt-4o\"",
        "name = \"gpt-4o\"\nbackend = \"primary\"\ndeployment = \"gpt4o\"",
    );
    assert!(config.contains("deployment = \"gpt4o\""));
    let r = doctor(&config, false).await;
    assert_eq!(r.code, 1, "{}", r.all());
    let lines = marked(&r.stdout);
    let failed: Vec<&&str> = lines.iter().filter(|l| l.starts_with('✗')).collect();
    assert_eq!(failed.len(), 1, "{}", r.stdout);
    let line = failed[0];
    assert!(line.contains("primary: call gpt4o"), "{line}");
    assert!(line.contains("deployment-not-found"), "{line}");
    assert!(
        line.contains("this backend has: gpt-4o, text-embedding-3-small"),
        "{line}"
    );
    assert!(line.contains("did you mean `gpt-4o`?"), "{line}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with('✓') && l.contains("call text-embedding-3-small")),
        "{}",
        r.stdout
    );
}

#[tokio::test]
async fn doctor_names_a_model_name_used_as_the_deployment_name() {
    let emu = emulator_with(EmulatorConfig {
        deployments: vec!["chat-prod".to_string()],
        ..EmulatorConfig::default()
    })
    .await;
    let config = base_config(&emu.url()).replace(
        "[[models]]\nname = \"embed\"\nbackend = \"primary\"\ndeployment = \"text-embedding-3-small\"\n",
        "",
    );
    let r = doctor(&config, false).await;
    assert_eq!(r.code, 1, "{}", r.all());
    let line = marked(&r.stdout)
        .into_iter()
        .find(|l| l.starts_with('✗'))
        .unwrap()
        .to_string();
    assert!(line.contains("call gpt-4o"), "{line}");
    assert!(line.contains("`gpt-4o` looks like a model name"), "{line}");
    assert!(line.contains("this backend has: chat-prod"), "{line}");
}

#[tokio::test]
async fn doctor_names_a_token_for_the_wrong_audience_at_the_call_line() {
    // A Foundry resource behind a backend without scope = "https://ai.azure.com/.default".
    let emu = emulator().await;
    let foundry = emu.add_resource(ResourceKind::Foundry).await.unwrap();
    let config = base_config(&emu.url()).replace(
        &format!("endpoint = \"{}\"", emu.url()),
        &format!("endpoint = \"{foundry}\""),
    );
    let r = doctor(&config, false).await;
    assert_eq!(r.code, 1, "{}", r.all());
    let line = marked(&r.stdout)
        .into_iter()
        .find(|l| l.starts_with('✗'))
        .unwrap()
        .to_string();
    assert!(line.contains("primary: call gpt-4o"), "{line}");
    assert!(line.contains("audience-mismatch"), "{line}");
    assert!(
        line.contains("set backend primary's scope to https://ai.azure.com/.default"),
        "{line}"
    );
}

#[tokio::test]
async fn doctor_and_config_check_name_a_pasted_full_deployment_url() {
    let emu = emulator().await;
    let pasted = format!(
        "{}openai/deployments/gpt-4o/chat/completions?api-version=2025-01-01-preview",
        emu.url()
    );
    let config = base_config(&emu.url())
        .replace(
            &format!("endpoint = \"{}\"", emu.url()),
            &format!("endpoint = \"{pasted}\""),
        )
        .replace("api_version = \"2024-10-21\"\n", "");
    let r = doctor(&config, false).await;
    assert_eq!(r.code, 0, "a normalized endpoint works: {}", r.all());
    let note = marked(&r.stdout)
        .into_iter()
        .find(|l| l.contains("config note"))
        .unwrap_or_else(|| panic!("no note: {}", r.stdout))
        .to_string();
    assert!(note.starts_with('!'), "{note}");
    assert!(note.contains("classic 404 trap"), "{note}");
    assert!(
        note.contains("api_version 2025-01-01-preview taken from the URL"),
        "{note}"
    );

    let r = config_check(&config).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let base = emu.url().as_str().trim_end_matches('/').to_string();
    assert!(
        r.stdout.contains(&format!(
            "backend primary: endpoint {base} api_version 2025-01-01-preview"
        )),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("normalized: backends[0].endpoint"),
        "{}",
        r.stdout
    );
}

#[tokio::test]
async fn azure_prefix_in_a_deployment_is_a_config_error_in_check_and_doctor() {
    let emu = emulator().await;
    let config =
        base_config(&emu.url()).replace("deployment = \"gpt-4o\"", "deployment = \"azure/gpt-4o\"");
    let r = config_check(&config).await;
    assert_eq!(r.code, 64, "{}", r.all());
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("models[0].deployment"), "{}", r.stderr);
    assert!(
        r.stderr.contains("LiteLLM's provider prefix"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("use \"gpt-4o\""), "{}", r.stderr);

    let r = doctor(&config, false).await;
    assert_eq!(r.code, 1, "{}", r.all());
    let lines = marked(&r.stdout);
    assert_eq!(
        lines.len(),
        1,
        "the chain stops at the config: {}",
        r.stdout
    );
    assert!(lines[0].starts_with('✗') && lines[0].contains("config valid"));
    assert!(
        lines[0].contains("LiteLLM's provider prefix"),
        "{}",
        lines[0]
    );
    assert_eq!(emu.stats().token_requests, 0);
}

#[tokio::test]
async fn config_check_shows_endpoints_as_used_masks_secrets_and_lists_warnings() {
    let secret = "Sup3r~Secret.Value_123";
    let config = format!(
        r#"[identity]
kind = "client-secret"
tenant_id = "{TID}"
client_id = "11111111-2222-3333-4444-555555555555"
client_secret = "{secret}"

[[backends]]
name = "east"
endpoint = "https://eastus.api.cognitive.microsoft.com/"

[[backends]]
name = "foundry"
endpoint = "https://proj.services.ai.azure.com"

[[backends]]
name = "private"
endpoint = "https://aoai.internal.contoso.com"

[[backends]]
name = "multi"
endpoint = "https://myres.cognitiveservices.azure.com"
"#
    );
    let r = config_check(&config).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!r.all().contains(secret), "{}", r.all());
    assert!(
        r.stdout.contains("identity.client_secret = ****"),
        "{}",
        r.stdout
    );
    for words in [
        "backend east: endpoint https://eastus.api.cognitive.microsoft.com api_version 2024-10-21 scope https://cognitiveservices.azure.com/.default",
        "backend foundry: endpoint https://proj.services.ai.azure.com api_version 2024-10-21 scope https://ai.azure.com/.default",
        "warning: backends[0].endpoint: eastus.api.cognitive.microsoft.com is a shared regional endpoint",
        "custom subdomain",
        "warning: backends[2].endpoint: aoai.internal.contoso.com is not an Azure AI host name",
        "warning: keys: no [[keys]] configured",
        "backend multi: endpoint https://myres.cognitiveservices.azure.com api_version 2024-10-21 scope https://cognitiveservices.azure.com/.default",
    ] {
        assert!(r.stdout.contains(words), "{words:?} in\n{}", r.stdout);
    }
}

#[tokio::test]
async fn plain_http_to_an_azure_host_is_a_config_error_and_elsewhere_a_warning() {
    let config = "[identity]\nkind = \"azure-cli\"\n\n[[backends]]\nname = \"primary\"\nendpoint = \"http://myres.openai.azure.com\"\n";
    let r = config_check(config).await;
    assert_eq!(r.code, 64, "{}", r.all());
    assert!(
        r.stderr.contains(
            "backends[0].endpoint: http://myres.openai.azure.com is plain HTTP to an Azure host: the proxy would send its bearer token in clear text; use https://myres.openai.azure.com"
        ),
        "{}",
        r.stderr
    );
    let config = config.replace(
        "http://myres.openai.azure.com\"",
        "http://aoai-gateway.internal:8080\"\nscope = \"https://cognitiveservices.azure.com\"",
    );
    let r = config_check(&config).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains(
            "warning: backends[0].endpoint: http://aoai-gateway.internal:8080 is plain HTTP"
        ),
        "{}",
        r.stdout
    );
}

#[tokio::test]
async fn usgov_cloud_with_a_public_host_is_a_config_error_naming_both_clouds() {
    let config = "[azure]\ncloud = \"usgov\"\n\n[[backends]]\nname = \"a\"\nendpoint = \"https://myres.openai.azure.com\"\n";
    let r = config_check(config).await;
    assert_eq!(r.code, 64, "{}", r.all());
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    for words in [
        "backends[0].endpoint",
        "myres.openai.azure.com belongs to the public cloud",
        "azure.cloud is \"usgov\"",
    ] {
        assert!(r.stderr.contains(words), "{words:?} in {}", r.stderr);
    }
    // The matching host of that cloud is fine, and gets that cloud's scope.
    let config = config.replace("openai.azure.com", "openai.azure.us");
    let r = config_check(&config).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("scope https://cognitiveservices.azure.us/.default"),
        "{}",
        r.stdout
    );
}
