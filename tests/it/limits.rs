//! Per-key token usage and limits over real HTTP: usage read from JSON and SSE answers (metrics,
//! headers), `include_usage` asked for and its chunk hidden, TPM and quota refusals before
//! Azure is called, and counters shared through a real Redis by two proxy processes.

use crate::common::redis::Redis;
use crate::common::*;
use azure_emulator::Fault;
use entra_proxy::config::KeyDigest;
use serde_json::{Value, json};

/// The base config with one more key `name` (its key is `<name>-key`) carrying `limits`.
fn with_key(emu: &url::Url, name: &str, limits: &str) -> String {
    format!(
        "{}\n[[keys]]\nname = \"{name}\"\nsha256 = \"{}\"\n{limits}\n",
        base_config(emu),
        KeyDigest::of(&format!("{name}-key")).to_hex()
    )
}

async fn chat(addr: std::net::SocketAddr, key: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("api-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn prompt(text: &str) -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]})
}

/// The documented estimate of `prompt(text)`: ceil(bytes / 4) + 4 per message + 3.
fn estimate(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4) + 4 + 3
}

/// What `prompt(text)` reserves: its estimate and, naming no `max_tokens`, the documented
/// default room for a chat answer.
fn reserved(text: &str) -> u64 {
    estimate(text) + entra_proxy::config::DEFAULT_COMPLETION_RESERVATION
}

/// `prompt(text)` with its answer capped at `max_tokens`.
fn capped(text: &str, max_tokens: u64) -> Value {
    let mut body = prompt(text);
    body["max_tokens"] = json!(max_tokens);
    body
}

#[tokio::test]
async fn json_usage_is_counted_and_the_budget_shown_in_headers() {
    let emu = emulator().await;
    let text = with_key(
        &emu.url(),
        "json-usage",
        "tokens_per_minute = 100000\nrequests_per_minute = 50",
    );
    let h = proxy(emu, &text).await;
    let r = chat(h.addr, "json-usage-key", &prompt("count me")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ratelimit-limit-tokens"], "100000");
    // What the request reserved counts as used while it runs.
    let remaining = (100_000 - reserved("count me")).to_string();
    assert_eq!(
        r.headers()["x-ratelimit-remaining-tokens"],
        remaining.as_str()
    );
    assert_eq!(r.headers()["x-ratelimit-limit-requests"], "50");
    assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "49");
    let body: Value = r.json().await.unwrap();
    let usage = &body["usage"];
    let labels = |kind| {
        [
            ("key", "key:json-usage"),
            ("model", "gpt-4o"),
            ("deployment", "gpt-4o"),
            ("backend", "primary"),
            ("kind", kind),
        ]
    };
    for (kind, field) in [
        ("prompt", "prompt_tokens"),
        ("completion", "completion_tokens"),
        ("total", "total_tokens"),
    ] {
        assert_eq!(
            metric(h.addr, "entra_proxy_tokens_total", &labels(kind)).await,
            Some(usage[field].as_u64().unwrap() as f64),
            "{kind}"
        );
    }
    // The next answer shows the tokens the first one used (its reservation settled to them).
    let r = chat(h.addr, "json-usage-key", &prompt("count me")).await;
    let total = usage["total_tokens"].as_u64().unwrap();
    let remaining = (100_000 - total - reserved("count me")).to_string();
    assert_eq!(
        r.headers()["x-ratelimit-remaining-tokens"],
        remaining.as_str()
    );
    h.stop().await;
}

#[tokio::test]
async fn streamed_usage_is_asked_for_counted_and_its_chunk_hidden_from_the_client() {
    // Answers to the same prompt are the same bytes, so streams compare byte for byte.
    let emu = emulator_with(azure_emulator::EmulatorConfig {
        stable_ids: true,
        ..azure_emulator::EmulatorConfig::default()
    })
    .await;
    let text = format!(
        "{}\n[[keys]]\nname = \"sse-plain\"\nsha256 = \"{}\"\n",
        with_key(&emu.url(), "sse-usage", "tokens_per_minute = 100000"),
        KeyDigest::of("sse-plain-key").to_hex()
    );
    let h = proxy(emu, &text).await;
    let mut body = prompt("stream me");
    body["stream"] = json!(true);
    let limited = chat(h.addr, "sse-usage-key", &body).await;
    assert_eq!(limited.status(), 200);
    assert!(
        limited
            .headers()
            .get("x-ratelimit-remaining-tokens")
            .is_some()
    );
    let (limited, broke) = read_stream(limited).await;
    assert!(!broke);
    // sse-plain has no limits: nothing is injected, Azure's stream passes as it is.
    let plain = chat(h.addr, "sse-plain-key", &body).await;
    let (plain, _) = read_stream(plain).await;
    assert!(!plain.contains("\"usage\""), "{plain}");
    assert!(!limited.contains("\"usage\""), "{limited}");
    assert_eq!(limited, plain);
    // Byte for byte what the client gets from Azure without the proxy.
    let token = h
        .emulator
        .mint(&azure_emulator::MintSpec::new(COGNITIVE_AUD));
    let direct = client()
        .post(
            h.emulator
                .url()
                .join("openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21")
                .unwrap(),
        )
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let (direct, _) = read_stream(direct).await;
    assert_eq!(limited, direct);
    let seen = h.emulator.requests();
    let injected = r#","stream_options":{"include_usage":true}"#.len();
    assert_eq!(
        seen[0].body_len,
        seen[1].body_len + injected,
        "only the limited key's request asked for usage"
    );
    // Azure answered the limited key's request with what asking adds: "usage":null in every
    // chunk and a usage-only chunk, all of it kept from the client.
    let mut asked = body.clone();
    asked["stream_options"] = json!({"include_usage": true});
    let token = h
        .emulator
        .mint(&azure_emulator::MintSpec::new(COGNITIVE_AUD));
    let azure_asked = client()
        .post(
            h.emulator
                .url()
                .join("openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21")
                .unwrap(),
        )
        .bearer_auth(token)
        .json(&asked)
        .send()
        .await
        .unwrap();
    let (azure_asked, _) = read_stream(azure_asked).await;
    assert!(azure_asked.contains(r#""usage":null"#), "{azure_asked}");
    assert!(azure_asked.contains(r#""choices":[],"#), "{azure_asked}");
    assert_ne!(azure_asked, limited);
    // The usage the hidden chunk carried is what the same prompt costs without streaming.
    let r = chat(h.addr, "sse-plain-key", &prompt("stream me")).await;
    let usage: Value = r.json().await.unwrap();
    let labels = [("key", "key:sse-usage"), ("kind", "total")];
    assert_eq!(
        metric(h.addr, "entra_proxy_tokens_total", &labels).await,
        Some(usage["usage"]["total_tokens"].as_u64().unwrap() as f64)
    );
    // sse-plain's stream had no usage: charged the estimate and what its deltas add up to.
    let deltas: u64 = plain
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .filter(|c| !c.is_empty())
        .map(|c| (c.len() as u64).div_ceil(4).max(1))
        .sum();
    let team_a = [("key", "key:sse-plain"), ("kind", "total")];
    let total = metric(h.addr, "entra_proxy_tokens_total", &team_a)
        .await
        .unwrap();
    // sse-plain also made the non-streamed request above.
    let expected =
        (estimate("stream me") + deltas + usage["usage"]["total_tokens"].as_u64().unwrap()) as f64;
    assert_eq!(total, expected);
    assert!(
        metric(
            h.addr,
            "entra_proxy_usage_estimated_total",
            &[("reason", "no_usage")]
        )
        .await
        .unwrap()
            >= 1.0
    );
    h.stop().await;
}

#[tokio::test]
async fn a_stream_cut_short_is_charged_the_estimate_and_the_deltas_seen() {
    let emu = emulator().await;
    emu.script("gpt-4o", vec![Fault::ResetMidStream { after_events: 2 }]);
    let text = with_key(&emu.url(), "cut-short", "token_quota = 1000000");
    let h = proxy(emu, &text).await;
    let mut body = prompt("cut me");
    body["stream"] = json!(true);
    let r = chat(h.addr, "cut-short-key", &body).await;
    assert_eq!(r.status(), 200);
    let (seen, broke) = read_stream(r).await;
    assert!(broke, "{seen}");
    let deltas: u64 = seen
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .filter(|c| !c.is_empty())
        .map(|c| (c.len() as u64).div_ceil(4).max(1))
        .sum();
    let labels = [("key", "key:cut-short"), ("kind", "total")];
    let expected = (estimate("cut me") + deltas) as f64;
    // The charge of a broken stream is recorded when the proxy sees it break.
    let mut total = None;
    for _ in 0..100 {
        total = metric(h.addr, "entra_proxy_tokens_total", &labels).await;
        if total.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(total, Some(expected));
    assert!(
        metric(
            h.addr,
            "entra_proxy_usage_estimated_total",
            &[("reason", "ended_early")]
        )
        .await
        .unwrap()
            >= 1.0
    );
    h.stop().await;
}

#[tokio::test]
async fn over_tokens_per_minute_is_refused_with_retry_after_before_azure_is_called() {
    let emu = emulator().await;
    let text = with_key(&emu.url(), "tpm", "tokens_per_minute = 30");
    let h = proxy(emu, &text).await;
    // 10 estimated + 20 for the answer: the whole minute.
    assert_eq!(estimate("spend it all") + 20, 30);
    assert_eq!(
        chat(h.addr, "tpm-key", &capped("spend it all", 20))
            .await
            .status(),
        200
    );
    let r = chat(h.addr, "tpm-key", &capped("and more", 20)).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {
            "code": "tokens_rate_limited",
            "message": format!("key \"tpm\" is over its tokens_per_minute limit of 30; retry in {retry}s"),
            "type": "rate_limit_error",
        }})
    );
    assert_eq!(
        h.emulator.stats().data_requests,
        1,
        "the refused request never reached Azure"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_used_quota_is_insufficient_quota_naming_when_it_resets() {
    let emu = emulator().await;
    let text = with_key(
        &emu.url(),
        "quota",
        "token_quota = 30\ntoken_quota_period = \"day\"",
    );
    let h = proxy(emu, &text).await;
    let r = chat(h.addr, "quota-key", &capped("hello", 21)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ratelimit-limit-tokens"], "30");
    let used: Value = r.json().await.unwrap();
    let used = used["usage"]["total_tokens"].as_u64().unwrap();
    let r = chat(h.addr, "quota-key", &capped("hello", 21)).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let tomorrow = (time::OffsetDateTime::now_utc().date() + time::Duration::days(1))
        .midnight()
        .assume_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {
            "code": "insufficient_quota",
            "message": format!("key \"quota\" has used its token_quota of 30 tokens for this day; it resets at {tomorrow}"),
            "type": "insufficient_quota",
        }})
    );
    assert_eq!(h.emulator.stats().data_requests, 1);
    // The quota shows what the answer used: its reservation was settled to it.
    let remaining = metric(
        h.addr,
        "entra_proxy_token_quota_remaining",
        &[("key", "key:quota")],
    )
    .await;
    assert_eq!(remaining, Some(30.0 - used as f64));
    h.stop().await;
}

/// Two proxy processes on one Redis: one key, one `requests_per_minute`, counted together.
#[tokio::test]
async fn two_proxies_sharing_redis_enforce_one_limit_and_ride_out_an_outage() {
    let mut redis = Redis::start();
    let emu = emulator().await;
    let limits = format!(
        // A generous timeout: an outage below is a refused connection, never a slow one.
        "[limits]\nredis_url = \"{}\"\non_redis_error = \"allow\"\nredis_timeout_ms = 2000\n",
        redis.url()
    );
    let text = with_key(
        &emu.url(),
        "shared",
        "requests_per_minute = 3\ntokens_per_minute = 100000",
    )
    .replace("[azure]", &format!("{limits}\n[azure]"));
    let (a, _pa) = spawn_binary(&text, &[]).await;
    let (b, _pb) = spawn_binary(&text, &[]).await;
    let body = prompt("shared");
    let statuses = [
        chat(a.addr, "shared-key", &body).await.status().as_u16(),
        chat(b.addr, "shared-key", &body).await.status().as_u16(),
        chat(a.addr, "shared-key", &body).await.status().as_u16(),
        chat(b.addr, "shared-key", &body).await.status().as_u16(),
        chat(a.addr, "shared-key", &body).await.status().as_u16(),
    ];
    assert_eq!(
        statuses,
        [200, 200, 200, 429, 429],
        "three per minute across both"
    );
    // Redis goes away: requests are still served (counted in each process's memory).
    redis.kill();
    let r = chat(a.addr, "shared-key", &body).await;
    assert_eq!(r.status(), 200, "allow: served while Redis is away");
    // Redis comes back, empty: counting resumes there. A counted one request in its memory
    // during the outage, so only Redis can show A two requests left.
    redis.restart();
    let mut resumed = false;
    for _ in 0..100 {
        let r = chat(a.addr, "shared-key", &body).await;
        if r.status() == 200 && r.headers()["x-ratelimit-remaining-requests"] == "2" {
            resumed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(resumed, "counting resumed in Redis");
    // B's first call after the restart may find its connection gone (counted in its memory);
    // once B reaches Redis, it sees A's request.
    let requests = "entra-proxy:{shared}:requests";
    assert_eq!(redis.hash_sum(requests), 1);
    let mut seen = false;
    for _ in 0..100 {
        let r = chat(b.addr, "shared-key", &body).await;
        if redis.hash_sum(requests) == 2 {
            assert_eq!(
                r.headers()["x-ratelimit-remaining-requests"],
                "1",
                "B sees A's request"
            );
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(seen, "B counts in Redis again");
    let (_, a_log) = stop_and_collect(a).await;
    let _ = stop_and_collect(b).await;
    assert_eq!(
        a_log
            .matches("limits store (limits.redis_url) unavailable")
            .count(),
        1,
        "logged once per outage: {a_log}"
    );
    assert!(a_log.contains("prompt_tokens="), "{a_log}");
    assert!(a_log.contains("limits store is back"), "{a_log}");
}

#[tokio::test]
async fn under_deny_a_redis_outage_is_503_and_the_password_never_shows() {
    let mut redis = Redis::start();
    let emu = emulator().await;
    let url = format!("redis://:hunter2@127.0.0.1:{}/0", redis.port);
    let limits = format!(
        "[limits]\nredis_url = \"{url}\"\non_redis_error = \"deny\"\nredis_timeout_ms = 100\n"
    );
    let text = with_key(&emu.url(), "denied", "requests_per_minute = 100")
        .replace("[azure]", &format!("{limits}\n[azure]"));
    redis.kill();
    let (p, _path) = spawn_binary(&text, &[]).await;
    let r = chat(p.addr, "denied-key", &prompt("x")).await;
    let (status, code, message) = error_of(r).await;
    assert_eq!((status, code.as_str()), (503, "limits_unavailable"));
    assert_eq!(
        message,
        "the limits store (limits.redis_url) did not answer and limits.on_redis_error is \"deny\"; retry shortly"
    );
    assert_eq!(emu.stats().data_requests, 0);
    let (_, log) = stop_and_collect(p).await;
    assert!(log.contains("redis://:***@127.0.0.1"), "{log}");
    assert!(!log.contains("hunter2"), "{log}");
}

#[tokio::test]
async fn usage_command_reads_redis_and_says_where_memory_usage_lives() {
    let redis = Redis::start();
    let emu = emulator().await;
    let memory = with_key(
        &emu.url(),
        "cli",
        "requests_per_minute = 5\ntoken_quota = 100000",
    );
    let shared = memory.replace(
        "[azure]",
        &format!(
            // A generous timeout: on a busy machine the first call may take longer than 100 ms.
            "[limits]\nredis_url = \"{}\"\nredis_timeout_ms = 3000\n\n[azure]",
            redis.url()
        ),
    );
    let (p, path) = spawn_binary(&shared, &[]).await;
    let r = chat(p.addr, "cli-key", &prompt("hello")).await;
    let usage: Value = r.json().await.unwrap();
    let total = usage["usage"]["total_tokens"].as_u64().unwrap();
    // The settlement reaches Redis in the next batch, within 50 ms of the answer's end.
    let mut cli = Value::Null;
    for _ in 0..100 {
        let out = std::process::Command::new(binary())
            .args(["usage", "--json", "--config"])
            .arg(&path.0)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        cli = report["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["key"] == "cli")
            .unwrap()
            .clone();
        if cli["tokens_this_period"] == total {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        cli,
        json!({
            "requests_last_minute": 1,
            "requests_per_minute": 5,
            "tokens_last_minute": total,
            "tokens_per_minute": null,
            "tokens_this_period": total,
            "token_quota": 100000,
            "token_quota_period": "month",
            "spend_this_period": "0.00",
            "spend_micros": 0,
            "budget": null,
            "budget_period": "month",
            "currency": "USD",
            "key": "cli",
        })
    );
    drop(p);
    let file = tempfile_path::TempPath::new("toml");
    std::fs::write(&file.0, &memory).unwrap();
    let out = std::process::Command::new(binary())
        .args(["usage", "--config"])
        .arg(&file.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("usage lives in the running proxy's memory") && err.contains("/metrics"),
        "{err}"
    );
}

#[tokio::test]
async fn a_request_refused_by_policy_is_never_counted_against_the_budget() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let emu = emulator().await;
    let text = with_key(
        &emu.url(),
        "embed-only",
        "models = [\"embed\"]\nrequests_per_minute = 1",
    );
    let h = proxy(emu, &text).await;
    // Over HTTP: refused by the key's models, twice.
    for _ in 0..2 {
        let r = chat(h.addr, "embed-only-key", &prompt("not mine")).await;
        let (status, code, _) = error_of(r).await;
        assert_eq!((status, code.as_str()), (403, "model_not_allowed"));
    }
    // Over a WebSocket handshake: refused by the key's models, twice.
    for _ in 0..2 {
        let mut req = format!("ws://{}/v1/realtime?model=gpt-4o", h.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("api-key", "embed-only-key".parse().unwrap());
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 403);
                let body: Value = serde_json::from_slice(r.body().as_deref().unwrap()).unwrap();
                assert_eq!(body["error"]["code"], "model_not_allowed");
            }
            other => panic!("expected a 403 handshake, got {other:?}"),
        }
    }
    // None of them used the one request a minute: it is still there, then used.
    let embed = json!({"model": "embed", "input": "hello"});
    let send = || {
        client()
            .post(h.url("/v1/embeddings"))
            .header("api-key", "embed-only-key")
            .json(&embed)
            .send()
    };
    let r = send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "0");
    let (status, code, _) = error_of(send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"));
    h.stop().await;
}

#[tokio::test]
async fn the_status_page_shows_every_keys_standing_from_redis_in_config_order() {
    let redis = Redis::start();
    let emu = emulator().await;
    // More keys than the page reads at once, each with its own request count.
    let mut text = base_config(&emu.url()).replace(
        "[azure]",
        &format!(
            "[limits]\nredis_url = \"{}\"\nredis_timeout_ms = 3000\n\n[azure]",
            redis.url()
        ),
    );
    let names: Vec<String> = (0..70).map(|i| format!("tenant-{i:02}")).collect();
    for name in &names {
        text.push_str(&format!(
            "\n[[keys]]\nname = \"{name}\"\nsha256 = \"{}\"\nrequests_per_minute = 1000\n",
            KeyDigest::of(&format!("{name}-key")).to_hex()
        ));
    }
    let (p, _path) = spawn_binary(&text, &[]).await;
    let used = [(3, 1), (40, 2), (69, 3)];
    for (i, times) in used {
        for _ in 0..times {
            let r = chat(p.addr, &format!("{}-key", names[i]), &prompt("hi")).await;
            assert_eq!(r.status(), 200);
        }
    }
    let status = status_json_at(p.addr).await;
    let rows: Vec<(String, u64)> = status["keys"]["callers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["caller"].as_str().unwrap().starts_with("key:tenant-"))
        .map(|c| {
            let requests = c["usage"]["requests"]
                .as_u64()
                .unwrap_or_else(|| panic!("no usage read for {c}"));
            (c["caller"].as_str().unwrap().to_string(), requests)
        })
        .collect();
    let want: Vec<(String, u64)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let times = used.iter().find(|(u, _)| *u == i).map_or(0, |(_, t)| *t);
            (format!("key:{n}"), times)
        })
        .collect();
    assert_eq!(rows, want);
}
