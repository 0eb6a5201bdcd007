//! The status page `/status` and its JSON twin `/status.json` over real HTTP: the identity,
//! each backend, the last diagnoses and the callers; the admin access rule; and the page as
//! headless Chromium renders it, with hostile names shown as text, never as markup.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use azure_emulator::{
    DEFAULT_MI_CLIENT_ID, DEFAULT_MI_OBJECT_ID, DEFAULT_TENANT_ID, Emulator, ResourceKind,
};
use entra_proxy::config::KeyDigest;

const HOSTILE_NAME: &str = "<script>alert(1)</script>";
const HOSTILE_KEY: &str = "hostile-key-0123456789";
const ADMIN_KEY: &str = "admin-key-for-the-status-test";
/// A deployment name that is markup (the client percent-encodes it on the wire; HTTP allows no
/// raw `<` in a request target).
const HOSTILE_DEPLOYMENT: &str = "<b onmouseover=alert(2)>";
const HOSTILE_PATH: &str = "/openai/deployments/%3Cb%20onmouseover=alert(2)%3E/chat/completions";

/// Two backends on one emulator: `openai` and `foundry` (a Foundry resource left on the
/// cognitiveservices scope, so Azure answers 401 and the proxy diagnoses the audience), the
/// test key and a key whose name is markup, and an admin key.
fn config(emu: &Emulator, foundry: &url::Url) -> String {
    config_tagged(emu, foundry, "")
}

/// [`config`] with `tag` after the names of the test key and the backends: the charts count per
/// process (as `/metrics` does), so a test that counts bars gives its series names of its own.
fn config_tagged(emu: &Emulator, foundry: &url::Url, tag: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_key_sha256 = "{admin}"

[azure]
emulator = "{emu}"

[identity]
kind = "managed-identity"

[[backends]]
name = "openai{tag}"
endpoint = "{emu}"

[[backends]]
name = "foundry{tag}"
endpoint = "{foundry}"

[[models]]
name = "gpt-4o"
backend = "openai{tag}"
deployment = "gpt-4o"

[[models]]
name = "foundry-chat"
backend = "foundry{tag}"
deployment = "gpt-4o"

[[keys]]
name = "team-a{tag}"
sha256 = "{team_a}"

[[keys]]
name = "{hostile}"
sha256 = "{hostile_digest}"
"#,
        emu = emu.url(),
        admin = KeyDigest::of(ADMIN_KEY).to_hex(),
        team_a = KeyDigest::of(KEY).to_hex(),
        hostile = HOSTILE_NAME,
        hostile_digest = KeyDigest::of(HOSTILE_KEY).to_hex(),
    )
}

/// The proxy, after: one good request (team-a), one wrong-audience request (the hostile key),
/// and one request to a deployment named with markup, sent as raw bytes (the hostile key).
async fn with_traffic() -> Harness {
    with_traffic_tagged("").await.0
}

/// [`with_traffic`] with tagged names ([`config_tagged`]); also returns the good request's
/// tokens.
async fn with_traffic_tagged(tag: &str) -> (Harness, u64) {
    let emu = emulator().await;
    let foundry = emu.add_resource(ResourceKind::Foundry).await.unwrap();
    let text = config_tagged(&emu, &foundry, tag);
    let h = proxy(emu, &text).await;
    let r = post(&h, "/v1/chat/completions", &chat_body("gpt-4o")).await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    let tokens = body["usage"]["total_tokens"].as_u64().unwrap();
    let r = client()
        .post(h.url("/v1/chat/completions"))
        .header("api-key", HOSTILE_KEY)
        .json(&chat_body("foundry-chat"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["x-entra-proxy-diagnosis"]
            .to_str()
            .unwrap()
            .starts_with("audience-mismatch: "),
        "{:?}",
        r.headers()
    );
    let r = client()
        .post(h.url(&format!(
            "/openai/deployments/{HOSTILE_DEPLOYMENT}/chat/completions?api-version=2024-10-21"
        )))
        .header("api-key", HOSTILE_KEY)
        .header("x-entra-proxy-backend", format!("openai{tag}"))
        .json(&chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    (h, tokens)
}

async fn status_json(h: &Harness) -> serde_json::Value {
    let r = client().get(h.url("/status.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    r.json().await.unwrap()
}

#[tokio::test]
async fn status_json_shows_identity_backends_diagnoses_and_callers_but_no_token() {
    let h = with_traffic().await;
    let token = h.emulator.requests()[0]
        .header("authorization")
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_string();
    let r = client().get(h.url("/status.json")).send().await.unwrap();
    let text = r.text().await.unwrap();
    assert!(!text.contains(&token), "the status view leaked the token");
    assert!(!text.contains(token.rsplit('.').next().unwrap()));
    let html = client()
        .get(h.url("/status"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for secret in [token.as_str(), KEY, HOSTILE_KEY, ADMIN_KEY] {
        assert!(!text.contains(secret), "status.json shows a secret");
        assert!(!html.contains(secret), "the status page shows a secret");
    }
    let debug = format!("{:?}", h.state.recent);
    for secret in [token.as_str(), KEY, HOSTILE_KEY] {
        assert!(
            !debug.contains(secret),
            "Debug of the status memory shows a secret"
        );
    }
    let v = status_json(&h).await;
    let now = v["now"].as_i64().unwrap();

    let id = &v["identity"];
    assert!(
        id["credential"]
            .as_str()
            .unwrap()
            .contains("managed identity"),
        "{id}"
    );
    assert_eq!(id["client_id"], DEFAULT_MI_CLIENT_ID);
    assert_eq!(id["object_id"], DEFAULT_MI_OBJECT_ID);
    assert_eq!(id["tenant_id"], DEFAULT_TENANT_ID);
    let scopes = id["scopes"].as_array().unwrap();
    assert_eq!(scopes.len(), 1, "both backends share one scope: {id}");
    let s = &scopes[0];
    assert_eq!(s["scope"], "https://cognitiveservices.azure.com/.default");
    assert_eq!(s["audience"], COGNITIVE_AUD);
    assert_eq!(s["has_token"], true);
    assert!(s["last_error"].is_null(), "{s}");
    assert!(s["last_refresh"].as_i64().unwrap() <= now, "{s}");
    let expires_at = s["expires_at"].as_i64().unwrap();
    assert_eq!(s["expires_in_secs"].as_i64().unwrap(), expires_at - now);
    assert!(expires_at > now, "{s}");

    let backends = v["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2);
    let openai = &backends[0];
    assert_eq!(openai["name"], "openai");
    assert_eq!(openai["endpoint"], h.emulator.url().as_str());
    assert_eq!(
        openai["scope"],
        "https://cognitiveservices.azure.com/.default"
    );
    assert_eq!(openai["health"], "ok");
    assert!(openai["cooling_until"].is_null());
    assert_eq!(openai["last_error"], "404 deployment-not-found", "{openai}");
    let foundry = &backends[1];
    assert_eq!(foundry["name"], "foundry");
    assert_eq!(foundry["health"], "ok");
    assert_eq!(foundry["last_error"], "401 audience-mismatch", "{foundry}");

    let d = v["diagnoses"].as_array().unwrap();
    assert_eq!(d.len(), 2, "{v}");
    // Newest first: the hostile path, then the wrong audience.
    assert_eq!(d[0]["path"], HOSTILE_PATH);
    assert_eq!(d[0]["status"], 404);
    assert_eq!(d[0]["caller"], format!("key:{HOSTILE_NAME}"));
    let a = &d[1];
    assert_eq!(a["status"], 401);
    assert_eq!(a["code"], "audience-mismatch");
    assert_eq!(a["caller"], format!("key:{HOSTILE_NAME}"));
    assert_eq!(a["path"], "/v1/chat/completions");
    assert_eq!(a["backend"], "foundry");
    assert!(a["fix"].as_str().unwrap().contains("scope"), "{a}");
    assert!(!a["fix"].as_str().unwrap().contains("; fix:"), "{a}");
    assert!(!a["request_id"].as_str().unwrap().is_empty(), "{a}");
    assert!(a["at"].as_i64().unwrap() <= now);

    let keys = &v["keys"];
    assert_eq!(keys["window_secs"], 60);
    let callers = keys["callers"].as_array().unwrap();
    assert_eq!(callers.len(), 2, "{keys}");
    assert_eq!(callers[0]["caller"], "key:team-a");
    assert_eq!(callers[1]["caller"], format!("key:{HOSTILE_NAME}"));
    // Unless the minute turned between the requests and the view.
    if callers[0]["requests"] != 0 {
        assert_eq!(callers[0]["requests"], 1);
        assert_eq!(callers[0]["errors"], 0);
        assert_eq!(callers[1]["requests"], 2);
        assert_eq!(callers[1]["errors"], 2);
    }
    // Keys without limits still show what they used; the 401s used no tokens.
    let usage = &callers[1]["usage"];
    assert_eq!(usage["tokens"], 0, "{usage}");
    assert!(usage["token_quota"].is_null() && usage["quota_remaining"].is_null());
    assert!(usage["error"].is_null(), "{usage}");
    h.stop().await;
}

#[tokio::test]
async fn status_shows_each_keys_tokens_in_the_window_and_remaining_quota() {
    let emu = emulator().await;
    let foundry = emu.add_resource(ResourceKind::Foundry).await.unwrap();
    let text = config(&emu, &foundry).replace(
        &format!("sha256 = \"{}\"\n", KeyDigest::of(KEY).to_hex()),
        &format!(
            "sha256 = \"{}\"\nrequests_per_minute = 100\ntokens_per_minute = 50000\ntoken_quota = 900000\ntoken_quota_period = \"day\"\n",
            KeyDigest::of(KEY).to_hex()
        ),
    );
    let h = proxy(emu, &text).await;
    let mut used = 0;
    for _ in 0..2 {
        let r = post(&h, "/v1/chat/completions", &chat_body("gpt-4o")).await;
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        used += body["usage"]["total_tokens"].as_u64().unwrap();
    }
    assert!(used > 0);
    let v = status_json(&h).await;
    let callers = v["keys"]["callers"].as_array().unwrap();
    let team_a = callers
        .iter()
        .find(|c| c["caller"] == "key:team-a")
        .unwrap();
    let u = &team_a["usage"];
    assert_eq!(u["requests"], 2, "{u}");
    assert_eq!(u["tokens"], used, "{u}");
    assert_eq!(u["requests_per_minute"], 100);
    assert_eq!(u["tokens_per_minute"], 50000);
    assert_eq!(u["token_quota"], 900000);
    assert_eq!(u["quota_period"], "day");
    assert_eq!(u["quota_used"], used);
    assert_eq!(u["quota_remaining"], 900000 - used, "{u}");
    // Unless the minute turned between the requests and the view.
    if team_a["requests"] != 0 {
        assert_eq!(team_a["requests"], 2, "{team_a}");
    }
    let html = client()
        .get(h.url("/status"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for text in [
        format!("{used} / 50000 tokens per minute"),
        "2 / 100 requests per minute".to_string(),
        format!("{} of 900000 left</span> this day", 900000 - used),
    ] {
        assert!(html.contains(&text), "{text} in\n{html}");
    }
    h.stop().await;
}

#[tokio::test]
async fn status_html_escapes_hostile_names_and_refreshes_itself() {
    let h = with_traffic().await;
    let r = client().get(h.url("/status")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let html = r.text().await.unwrap();
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
    assert!(html.contains("name=\"viewport\""));
    assert!(!html.contains("<script"), "unescaped markup: {html}");
    assert!(!html.contains("<b onmouseover"), "unescaped markup: {html}");
    assert!(html.contains("key:&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains(HOSTILE_PATH));
    // No external assets: nothing is loaded from anywhere (not even a favicon: the page says
    // it has none, inline).
    assert!(!html.contains("src="), "{html}");
    let html_without_icon = html.replace("<link rel=\"icon\" href=\"data:,\">", "");
    for external in ["<link", "@import", "url(", "<iframe", "<object"] {
        assert!(!html_without_icon.contains(external), "{external}");
    }
    for text in ["openai", "foundry", "audience-mismatch", DEFAULT_TENANT_ID] {
        assert!(html.contains(text), "{text} missing");
    }
    h.stop().await;
}

/// The real router behind a listener that reports a non-loopback peer, as when the proxy is
/// reached over the network.
async fn serve_as_remote_peer(h: &Harness) -> std::net::SocketAddr {
    let remote: std::net::SocketAddr = "192.0.2.10:40000".parse().unwrap();
    let app = entra_proxy::server::router(h.state.clone()).layer(axum::middleware::map_request(
        move |mut r: axum::extract::Request| async move {
            r.extensions_mut()
                .insert(axum::extract::ConnectInfo(remote));
            r
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn a_remote_peer_needs_the_admin_key() {
    let emu = emulator().await;
    let foundry = emu.add_resource(ResourceKind::Foundry).await.unwrap();
    let text = config(&emu, &foundry);
    let h = proxy(emu, &text).await;
    let addr = serve_as_remote_peer(&h).await;
    for path in ["/status", "/status.json"] {
        let url = format!("http://{addr}{path}");
        let r = client().get(&url).send().await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": {
                "message": format!("{path} is served to loopback clients, or with the admin key in x-admin-key (server.admin_key_sha256)"),
                "type": "permission_error",
                "code": "forbidden",
            }}),
            "{path}"
        );
        let r = client()
            .get(&url)
            .header("x-admin-key", "not-the-admin-key")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
        let r = client()
            .get(&url)
            .header("x-admin-key", ADMIN_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    h.stop().await;
}

/// The installed Chromium, or a failure saying how to install it.
fn chromium() -> &'static str {
    for name in ["chromium", "chromium-browser"] {
        if std::process::Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return name;
        }
    }
    panic!(
        "chromium is not installed: `apt-get install -y chromium` (the status page test renders the page with it)"
    );
}

/// Runs headless Chromium, offline-minded, with a fresh profile.
fn run_chromium(args: &[&str]) -> std::process::Output {
    let profile = tempfile_dir();
    let out = std::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    out
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "entra-proxy-chromium-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn status_page_renders_in_headless_chromium_with_refusals_charts_and_hostile_names_as_text() {
    let (h, tokens) = with_traffic_tagged("-charts").await;
    // The proxy's own refusals: no credential, and headers over the limit.
    let r = client()
        .post(h.url("/v1/chat/completions"))
        .json(&chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .post(h.url("/v1/chat/completions"))
        .header("api-key", KEY)
        .header("x-padding", "a".repeat(70_000))
        .json(&chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let url = h.url("/status");
    let dom = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || run_chromium(&["--dump-dom", &url]))
            .await
            .unwrap()
    };
    let html = String::from_utf8_lossy(&dom.stdout).to_string();
    assert!(
        dom.status.success() && html.contains("</html>"),
        "chromium failed: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    // The page says it has no icon, so the browser asked for none (and no refusal was recorded).
    let v = status_json(&h).await;
    let refused: Vec<&str> = v["refusals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(refused, ["/v1/chat/completions"; 2], "{v}");
    for text in [
        "<td data-label=\"Name\">openai-charts</td>",
        "<td data-label=\"Name\">foundry-charts</td>",
        "audience-mismatch",
        "Token expires",
        "<td data-label=\"Code\"><code>missing_credential</code></td>",
        "<td data-label=\"Code\"><code>headers_too_large</code></td>",
    ] {
        assert!(html.contains(text), "{text} missing from the DOM:\n{html}");
    }
    assert!(
        html.contains("<span class=\"ok\">in "),
        "no token expiry countdown:\n{html}"
    );
    // The DOM holds the hostile names as text: serialised escaped, never as elements.
    assert!(
        html.contains("key:&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(html.contains(HOSTILE_PATH), "{html}");
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains("<b onmouseover"), "{html}");

    // The charts: fifteen bars each, whose titles add up to the traffic sent (whichever minute
    // each request fell in).
    let (requests, errors, _) = chart_totals(&html, "requests", "key:team-a-charts");
    assert_eq!((requests, errors), (1, 0));
    let (_, _, used) = chart_totals(&html, "tokens", "key:team-a-charts");
    assert_eq!(used, tokens);
    let (requests, errors, _) = chart_totals(&html, "requests", "openai-charts");
    assert_eq!(
        (requests, errors),
        (2, 1),
        "the good request and Azure's 404"
    );
    let (_, _, used) = chart_totals(&html, "tokens", "openai-charts");
    assert_eq!(used, tokens);
    let (requests, errors, _) = chart_totals(&html, "requests", "foundry-charts");
    assert_eq!((requests, errors), (1, 1), "Azure's 401");

    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/status.png");
    let arg = format!("--screenshot={}", shot.display());
    let out =
        tokio::task::spawn_blocking(move || run_chromium(&[&arg, "--window-size=1280,2000", &url]))
            .await
            .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    h.stop().await;
}

/// The `class` chart (`requests` or `tokens`) of `series` in the DOM: checks it has a bar with a
/// title per minute, and returns the requests, errors and tokens its titles add up to.
fn chart_totals(dom: &str, class: &str, series: &str) -> (u64, u64, u64) {
    let start = format!("<svg class=\"chart {class}\" role=\"img\" aria-label=\"{series}: ");
    let at = dom
        .find(&start)
        .unwrap_or_else(|| panic!("no {class} chart of {series} in\n{dom}"));
    let svg = &dom[at..at + dom[at..].find("</svg>").unwrap()];
    assert_eq!(svg.matches("<g class=\"bar\">").count(), 15, "{svg}");
    let titles: Vec<&str> = svg
        .split("<title>")
        .skip(1)
        .map(|t| &t[..t.find("</title>").unwrap()])
        .collect();
    assert_eq!(titles.len(), 15, "{svg}");
    // `07:51 UTC: 2 requests, 1 error`.
    let number_before = |title: &str, word: &str| -> u64 {
        title
            .split(", ")
            .map(|part| part.rsplit(": ").next().unwrap())
            .find_map(|part| {
                part.strip_suffix(&format!(" {word}s"))
                    .or_else(|| part.strip_suffix(&format!(" {word}")))
            })
            .map_or(0, |n| n.trim().parse().unwrap())
    };
    let mut totals = (0, 0, 0);
    for t in &titles {
        assert!(t.contains(" UTC: "), "{t}");
        totals.0 += number_before(t, "request");
        totals.1 += number_before(t, "error");
        totals.2 += number_before(t, "token");
    }
    totals
}

#[cfg(feature = "demo")]
#[test]
fn demo_prints_the_status_page_url() {
    let port = free_port();
    let out = std::process::Command::new(binary())
        .args(["demo", "--once", "--listen", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "Status page (identity, backends, refusals, diagnoses, the last 15 minutes): http://127.0.0.1:{port}/status\n"
        )),
        "{stdout}"
    );
}
