//! Keeps serving through faults, proven by fault injection: failover, retries that honor
//! retry-after, token refresh on 401, identity outages, limits, disconnects, SIGTERM, metrics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use azure_emulator::{AzureSample, EmulatorConfig, Fault, IdentityFault, ResourceKind};
use futures_util::StreamExt as _;
use std::time::Duration;

fn deployments_seen(h: &Harness) -> Vec<String> {
    h.emulator
        .requests()
        .iter()
        .map(|r| {
            r.path_and_query
                .split('/')
                .nth(3)
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// Two regions: "east" (the emulator's main listener, deployment gpt-4o) is preferred,
/// "west" (a second listener, deployment gpt-4o-west) is the fallback.
async fn two_regions(extra_upstream: &str) -> Harness {
    let emu = emulator_with(EmulatorConfig {
        deployments: vec!["gpt-4o".into(), "gpt-4o-west".into()],
        ..EmulatorConfig::default()
    })
    .await;
    let west = emu.add_resource(ResourceKind::OpenAi).await.unwrap();
    let text = format!(
        r#"[server]
listen = "127.0.0.1:0"
[upstream]
{extra_upstream}
[azure]
emulator = "{emu}"
[identity]
kind = "managed-identity"
[[backends]]
name = "east"
endpoint = "{emu}"
[[backends]]
name = "west"
endpoint = "{west}"
[[models]]
name = "gpt-4o"
targets = [
  {{ backend = "east", deployment = "gpt-4o", priority = 0 }},
  {{ backend = "west", deployment = "gpt-4o-west", priority = 1 }},
]
[[keys]]
name = "team-a"
sha256 = "{digest}"
"#,
        emu = emu.url(),
        digest = entra_proxy::config::KeyDigest::of(KEY).to_hex()
    );
    proxy(emu, &text).await
}

/// East answers 429 with a 30 s retry-after: the request fails over to west.
async fn east_rate_limited() -> Harness {
    let h = two_regions("").await;
    h.emulator.script(
        "gpt-4o",
        vec![Fault::RateLimited {
            retry_after_ms: 30_000,
        }],
    );
    let r = post(&h, "/v1/chat/completions", &chat_body("gpt-4o")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(deployments_seen(&h), vec!["gpt-4o", "gpt-4o-west"]);
    h
}

#[tokio::test]
async fn a_429_fails_over_and_the_backend_cools_down_for_its_retry_after() {
    let h = east_rate_limited().await;
    // East said "wait 30 s": the next request goes straight to west.
    let r = post(&h, "/v1/chat/completions", &chat_body("gpt-4o")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        deployments_seen(&h),
        vec!["gpt-4o", "gpt-4o-west", "gpt-4o-west"]
    );
    let metrics = metrics_text(h.addr).await;
    assert!(
        metrics.contains("entra_proxy_cooldowns_total{backend=\"east\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("entra_proxy_failovers_total{to=\"west\"}"),
        "{metrics}"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_reload_does_not_end_a_cooldown_azure_asked_for() {
    let h = east_rate_limited().await;
    // A reload, as when a key is added: east is still cooling down, so west answers.
    let config = h.state.snapshot().config.clone();
    let snapshot = h
        .state
        .prepare(config, entra_proxy::state::Origin::of_text("reloaded"))
        .unwrap();
    h.state.install(snapshot);
    let r = post(&h, "/v1/chat/completions", &chat_body("gpt-4o")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        deployments_seen(&h),
        vec!["gpt-4o", "gpt-4o-west", "gpt-4o-west"],
        "east was not asked again before its retry-after"
    );
    h.stop().await;
}

#[tokio::test]
async fn server_errors_are_retried_and_bounded_by_max_attempts() {
    let h = start().await;
    h.emulator.script("gpt-4o", vec![Fault::Status(503)]);
    let r = post(&h, "/v1/chat/completions", &chat_body("gpt-4o")).await;
    assert_eq!(r.status(), 200, "one 503 then success");
    assert_eq!(h.emulator.stats().data_requests, 2);

    h.emulator.clear_requests();
    h.emulator.script(
        "gpt-4o",
        vec![
            Fault::Status(500),
            Fault::Status(502),
            Fault::Status(500),
            Fault::Status(500),
        ],
    );
    let r = post(&h, "/v1/chat/completions", &chat_body("gpt-4o")).await;
    assert_eq!(r.status(), 500, "Azure's last answer comes back");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "500");
    assert_eq!(h.emulator.requests().len(), 3, "max_attempts = 3");
    h.stop().await;
}

#[tokio::test]
async fn retry_after_on_the_only_target_is_respected_not_hammered() {
    let h = start().await;
    h.emulator.script(
        "gpt-4o",
        vec![Fault::RateLimited {
            retry_after_ms: 20_000,
        }],
    );
    let r = post(&h, "/v1/chat/completions", &chat_body("gpt-4o")).await;
    assert_eq!(r.status(), 429, "Azure's own 429 is passed back");
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(h.emulator.stats().data_requests, 1);
    let r = post(&h, "/v1/chat/completions", &chat_body("gpt-4o")).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "backends_cooling_down");
    assert_eq!(
        h.emulator.stats().data_requests,
        1,
        "Azure was not called while cooling"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_response_already_streaming_is_never_retried() {
    let h = start().await;
    h.emulator
        .script("gpt-4o", vec![Fault::ResetMidStream { after_events: 2 }]);
    let mut body = chat_body("gpt-4o");
    body["stream"] = serde_json::json!(true);
    let r = post(&h, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    let (_, broke) = read_stream(r).await;
    assert!(broke, "the client sees the broken stream");
    assert_eq!(h.emulator.stats().data_requests, 1);
    h.stop().await;
}

#[tokio::test]
async fn bodies_larger_than_the_retry_buffer_are_not_replayed() {
    let emu = emulator().await;
    let text = base_config(&emu.url())
        .replace("[azure]", "[upstream]\nretry_buffer_bytes = 64\n\n[azure]");
    let h = proxy(emu, &text).await;
    h.emulator.script("gpt-4o", vec![Fault::Status(503)]);
    let mut body = chat_body("gpt-4o");
    body["padding"] = serde_json::json!("x".repeat(500));
    let r = post(&h, "/openai/deployments/gpt-4o/chat/completions", &body).await;
    assert_eq!(r.status(), 503);
    assert_eq!(h.emulator.stats().data_requests, 1);
    h.stop().await;
}

#[tokio::test]
async fn a_timeout_after_the_body_was_sent_is_504_and_not_replayed() {
    let h = start_with("[upstream]\nfirst_byte_timeout_secs = 0.5").await;
    h.emulator.script("gpt-4o", vec![Fault::Hang]);
    let r = post(&h, "/v1/chat/completions", &chat_body("gpt-4o")).await;
    assert_eq!(r.status(), 504);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_timeout");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upstream.first_byte_timeout_secs")
    );
    assert_eq!(h.emulator.stats().data_requests, 1);
    h.stop().await;
}

#[tokio::test]
async fn timeouts_are_replayed_only_when_configured() {
    let h =
        start_with("[upstream]\nfirst_byte_timeout_secs = 0.5\nreplay_after_timeout = true").await;
    h.emulator.script("gpt-4o", vec![Fault::Hang]);
    let r = post(&h, "/v1/chat/completions", &chat_body("gpt-4o")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(h.emulator.stats().data_requests, 2);
    h.stop().await;
}

#[tokio::test]
async fn a_revoked_token_is_replaced_once_and_the_request_replayed() {
    let h = start().await;
    assert_eq!(
        post(&h, "/v1/chat/completions", &chat_body("gpt-4o"))
            .await
            .status(),
        200
    );
    assert_eq!(h.emulator.stats().token_requests, 1);
    h.emulator.revoke_issued_tokens();
    let r = post(&h, "/v1/chat/completions", &chat_body("gpt-4o")).await;
    assert_eq!(r.status(), 200);
    let stats = h.emulator.stats();
    assert_eq!(stats.token_requests, 2, "one fresh token");
    assert_eq!(stats.data_requests, 3, "the refused attempt and its replay");
    h.stop().await;
}

#[tokio::test]
async fn a_second_401_goes_back_to_the_client_with_its_diagnosis() {
    let h = start().await;
    h.emulator.script(
        "gpt-4o",
        vec![
            Fault::Sample(AzureSample::AudienceIncorrect401),
            Fault::Sample(AzureSample::AudienceIncorrect401),
        ],
    );
    let r = post(&h, "/v1/chat/completions", &chat_body("gpt-4o")).await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("x-entra-proxy-diagnosis"));
    assert_eq!(h.emulator.stats().data_requests, 2);
    assert_eq!(h.emulator.stats().token_requests, 2);
    h.stop().await;
}

#[tokio::test]
async fn an_identity_outage_is_ridden_out_on_the_cached_token_then_reported() {
    // A 20 s token: refreshed after 5 s, not handed out in its last 2 s. Long enough that a
    // busy machine still sends the requests below while the cached token is good.
    let emu = emulator_with(EmulatorConfig {
        token_lifetime: Duration::from_secs(20),
        ..EmulatorConfig::default()
    })
    .await;
    let text = base_config(&emu.url()).replace(
        "[azure]",
        "[upstream]\nidentity_timeout_secs = 1\n\n[azure]",
    );
    let h = proxy(emu, &text).await;
    wait_ready(&h).await;
    h.emulator.set_identity_fault(Some(IdentityFault::Down));
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Refresh is due and failing; the cached token still serves, under load.
    for status in concurrent_chats(&h, 50, ("api-key", KEY)).await {
        assert_eq!(status, 200);
    }
    assert_eq!(
        client()
            .get(h.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_secs(13)).await;
    // No valid token left: 503 that says so and since when; /readyz follows.
    let r = post(&h, "/v1/chat/completions", &chat_body("gpt-4o")).await;
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "identity_unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("failing since")
    );
    assert_eq!(
        client()
            .get(h.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    let token_calls = h.emulator.stats().token_requests;
    assert!(
        token_calls <= 8,
        "{token_calls} token requests in ~19 s of outage"
    );
    h.emulator.set_identity_fault(None);
    // The keeper retries on its backoff, which has grown during the outage (at most 30 s).
    wait_ready_within(&h, Duration::from_secs(35)).await;
    assert_eq!(
        post(&h, "/v1/chat/completions", &chat_body("gpt-4o"))
            .await
            .status(),
        200
    );
    h.stop().await;
}

#[tokio::test]
async fn a_full_backend_queues_briefly_then_answers_503() {
    let emu = emulator().await;
    let text = base_config(&emu.url()).replace(
        "api_version = \"2024-10-21\"",
        "api_version = \"2024-10-21\"\nmax_concurrent = 1\nqueue_timeout_secs = 0.2",
    );
    let h = proxy(emu, &text).await;
    h.emulator
        .script("gpt-4o", vec![Fault::Delay(Duration::from_secs(3))]);
    let slow = tokio::spawn({
        let url = h.url("/v1/chat/completions");
        async move {
            client()
                .post(url)
                .header("api-key", KEY)
                .json(&chat_body("gpt-4o"))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    // The slow request holds the one slot once Azure has it (however busy this machine is).
    for _ in 0..400 {
        if h.emulator.stats().data_requests >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        h.emulator.stats().data_requests,
        1,
        "the slow request reached Azure"
    );
    let r = post(&h, "/v1/chat/completions", &chat_body("gpt-4o")).await;
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "backend_busy");
    assert_eq!(slow.await.unwrap(), 200);
    h.stop().await;
}

#[tokio::test]
async fn a_silent_stream_is_cut_after_the_idle_timeout() {
    let emu = emulator_with(EmulatorConfig {
        stream_events: 3,
        stream_interval: Duration::from_secs(2),
        ..EmulatorConfig::default()
    })
    .await;
    let text = base_config(&emu.url())
        .replace("[azure]", "[upstream]\nidle_timeout_secs = 0.5\n\n[azure]");
    let h = proxy(emu, &text).await;
    let mut body = chat_body("gpt-4o");
    body["stream"] = serde_json::json!(true);
    let r = post(&h, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    let (_, failed) = read_stream(r).await;
    assert!(failed, "the stream was ended by the idle timeout");
    h.stop().await;
}

#[tokio::test]
async fn a_client_hanging_up_cancels_the_upstream_stream() {
    let emu = emulator_with(EmulatorConfig {
        stream_events: 50,
        stream_interval: Duration::from_millis(100),
        ..EmulatorConfig::default()
    })
    .await;
    let text = base_config(&emu.url());
    let h = proxy(emu, &text).await;
    let mut body = chat_body("gpt-4o");
    body["stream"] = serde_json::json!(true);
    let r = post(&h, "/v1/chat/completions", &body).await;
    let mut stream = r.bytes_stream();
    assert!(stream.next().await.unwrap().is_ok());
    assert_eq!(h.emulator.stats().open_streams, 1);
    drop(stream);
    let mut cancelled = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let s = h.emulator.stats();
        cancelled = s.cancelled_streams;
        if s.open_streams == 0 && cancelled == 1 {
            break;
        }
    }
    assert_eq!(cancelled, 1, "the upstream stream outlived its client");
    assert_eq!(h.emulator.stats().open_streams, 0);
    h.stop().await;
}

#[tokio::test]
async fn sigterm_drains_in_flight_streams_then_exits_zero() {
    let emu = emulator_with(EmulatorConfig {
        stream_events: 8,
        stream_interval: Duration::from_millis(150),
        ..EmulatorConfig::default()
    })
    .await;
    let (child, _cfg) = spawn_binary(&base_config(&emu.url()), &[]).await;
    let addr = child.addr;
    let mut body = chat_body("gpt-4o");
    body["stream"] = serde_json::json!(true);
    let r = client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("api-key", KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let reader = tokio::spawn(async move {
        let mut all = String::new();
        let mut s = r.bytes_stream();
        while let Some(c) = s.next().await {
            all.push_str(&String::from_utf8_lossy(&c.unwrap()));
        }
        all
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = child.child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // No new connections once draining.
    let refused = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(refused.is_err(), "accepted a new connection while draining");
    let all = reader.await.unwrap();
    assert!(
        all.trim_end().ends_with("data: [DONE]"),
        "stream was cut: {all}"
    );
    let (code, _) = stop_and_collect(child).await;
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn metrics_cover_requests_tokens_and_streams() {
    let h = start().await;
    assert_eq!(
        post(&h, "/v1/chat/completions", &chat_body("gpt-4o"))
            .await
            .status(),
        200
    );
    // A model the config does not name reaches Azure (v1 path) but not the label set.
    let r = post(
        &h,
        "/openai/v1/chat/completions",
        &chat_body("mystery-model"),
    )
    .await;
    assert!(r.status().is_client_error(), "{}", r.status());
    let text = metrics_text(h.addr).await;
    for name in [
        "entra_proxy_requests_total",
        "entra_proxy_upstream_seconds_bucket",
        "entra_proxy_token_acquisitions_total",
        "entra_proxy_token_expiry_seconds",
        "entra_proxy_inflight_streams",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    let requests: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("entra_proxy_requests_total{"))
        .collect();
    assert!(
        requests
            .iter()
            .any(|l| l.contains("model=\"gpt-4o\"") && l.contains("status=\"200\"")),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|l| l.contains("model=\"unconfigured\"")),
        "{requests:?}"
    );
    assert!(!text.contains("mystery-model"), "{text}");
    assert!(!text.contains(KEY));
    h.stop().await;
}

#[tokio::test]
async fn oversized_request_headers_get_431() {
    let emu = emulator().await;
    let text = base_config(&emu.url()).replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nmax_header_bytes = 8192",
    );
    let h = proxy(emu, &text).await;
    let r = client()
        .post(h.url("/v1/chat/completions"))
        .header("api-key", KEY)
        .header("x-padding", "a".repeat(20_000))
        .json(&chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    assert_eq!(h.emulator.stats().data_requests, 0);
    h.stop().await;
}

#[tokio::test]
async fn token_acquisitions_follow_token_lifetimes_not_load() {
    // 8 s tokens are refreshed every 2 s: acquisitions follow the clock, not the request count.
    // The load runs until the third acquisition (or 15 s, on a very busy machine), so the bound
    // is stated against the time that passed rather than a fixed window.
    let emu = emulator_with(EmulatorConfig {
        token_lifetime: Duration::from_secs(8),
        ..EmulatorConfig::default()
    })
    .await;
    let text = base_config(&emu.url());
    let h = proxy(emu, &text).await;
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_secs(15);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let url = h.url("/v1/chat/completions");
        let done = done.clone();
        workers.push(tokio::spawn(async move {
            let c = client();
            let mut n = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < deadline
            {
                let r = c
                    .post(&url)
                    .header("api-key", KEY)
                    .json(&chat_body("gpt-4o"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                n += 1;
            }
            n
        }));
    }
    while h.emulator.stats().token_requests < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut requests = 0;
    for w in workers {
        requests += w.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs();
    let tokens = h.emulator.stats().token_requests;
    assert!(requests > 100, "{requests}");
    assert!(
        tokens >= 3,
        "refreshed under load: {tokens} token requests in {elapsed} s"
    );
    assert!(
        tokens <= elapsed / 2 + 3,
        "{tokens} token requests for {requests} requests in {elapsed} s"
    );
    h.stop().await;
}

/// `entra_proxy_retries_total` for a backend and reason, now (0 when never counted).
async fn retries(h: &Harness, backend: &str, reason: &str) -> f64 {
    metric(
        h.addr,
        "entra_proxy_retries_total",
        &[("backend", backend), ("reason", reason)],
    )
    .await
    .unwrap_or(0.0)
}

#[tokio::test]
async fn a_chat_completion_reset_before_any_answer_fails_over_to_the_next_target() {
    let h = two_regions("").await;
    let before = retries(&h, "west", "reset").await;
    // East resets every connection once the request has arrived.
    h.emulator
        .script("gpt-4o", vec![Fault::ResetAfterRequest; 5]);
    for _ in 0..2 {
        let r = post(&h, "/v1/chat/completions", &chat_body("gpt-4o")).await;
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            body["choices"][0]["message"]["content"].is_string(),
            "{body}"
        );
    }
    assert_eq!(
        deployments_seen(&h),
        vec!["gpt-4o", "gpt-4o-west", "gpt-4o", "gpt-4o-west"]
    );
    assert_eq!(retries(&h, "west", "reset").await - before, 2.0);
    h.stop().await;
}

#[tokio::test]
async fn a_file_upload_reset_before_any_answer_is_not_sent_again_and_says_it_may_have_been_processed()
 {
    let h = start().await;
    h.emulator.script("files", vec![Fault::ResetAfterRequest]);
    let form = "--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\n\r\n{}\r\n--b--\r\n";
    let r = client()
        .post(h.url("/v1/files"))
        .header("api-key", KEY)
        .header("content-type", "multipart/form-data; boundary=b")
        .body(form)
        .send()
        .await
        .unwrap();
    let (status, code, message) = error_of(r).await;
    assert_eq!((status, code.as_str()), (502, "upstream_reset"));
    assert_eq!(
        message,
        "backend primary closed the connection after the request was sent, before any answer: Azure may have processed the request. It was not sent again, because it creates or changes state (files, uploads, batches, fine-tuning, assistants, threads, vector stores, stored responses) and sending it twice could do that twice: check whether it took effect before retrying"
    );
    // Sent once, never replayed.
    assert_eq!(h.emulator.requests().len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn a_request_on_a_kept_alive_connection_azure_closed_is_sent_again() {
    // One serving thread, so the second request takes the connection the first left idle;
    // no retries at all.
    let emu = emulator().await;
    let text = base_config(&emu.url())
        .replace("[server]\n", "[server]\nworkers = 1\n")
        .replace("[azure]", "[upstream]\nmax_attempts = 1\n\n[azure]");
    let h = proxy(emu, &text).await;
    let before = retries(&h, "primary", "stale_connection").await;
    let r = post(&h, "/v1/chat/completions", &chat_body("gpt-4o")).await;
    assert_eq!(r.status(), 200);
    h.emulator.script("gpt-4o", vec![Fault::StaleConnection]);
    // Nothing was processed: it goes again, though retries are off.
    let r = post(
        &h,
        "/openai/deployments/gpt-4o/chat/completions",
        &chat_body("gpt-4o"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(h.emulator.requests().len(), 3);
    assert_eq!(
        retries(&h, "primary", "stale_connection").await - before,
        1.0
    );
    h.stop().await;
}
