//! Memory stays flat per request: the proxy, in this process, serves a batch of every kind of
//! request (JSON and SSE, `/v1` and deployment paths, keys with and without limits, traces on
//! and off, Realtime WebSocket sessions), then the same batch again; the live heap after the
//! second batch may not exceed the one after the first by more than a small constant. A proxy
//! that kept anything per request (a histogram sample, a log line, a map entry) grows by at
//! least a few bytes per request and fails here.
//!
//! Its own test binary: it counts every allocation of the process with a global allocator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "it/common/mod.rs"]
mod common;

use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

/// Requests of each HTTP kind per batch (`HEAP_N` overrides, for a longer run).
const N: usize = 150;
/// Realtime sessions per batch.
const SESSIONS: usize = 40;
/// Live-heap growth allowed over one batch. A leak of 8 bytes per request (about 1,600
/// requests a batch) exceeds it; what varies between quiet readings is a few KiB, and a one-off
/// step (one more pooled connection when two requests happened to overlap) shows in one batch
/// only, where a leak shows in every one.
const ALLOWED_GROWTH: usize = 12 * 1024;

/// Requests in flight at once: few, so the proxies' connection pools hold the same number of
/// connections after every batch.
const CONCURRENCY: usize = 1;

const LIMITED_KEY: &str = "test-key-limited";

fn config(emulator: &url::Url, otlp: Option<&str>) -> String {
    let telemetry = otlp.map_or(String::new(), |e| {
        format!("[telemetry]\notlp_endpoint = \"{e}\"\nsample_ratio = 1.0\n\n")
    });
    let limited = entra_proxy::config::KeyDigest::of(LIMITED_KEY).to_hex();
    format!(
        "{telemetry}{}\n[[keys]]\nname = \"limited\"\nsha256 = \"{limited}\"\nrequests_per_minute = 1000000\ntokens_per_minute = 1000000000\ntoken_quota = 1000000000000\n",
        base_config(emulator)
    )
}

/// An OTLP/HTTP receiver on loopback that accepts and drops every export.
async fn otlp_sink() -> String {
    let app = axum::Router::new().route("/v1/traces", axum::routing::post(|| async { "" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// One HTTP request of a kind, checked for success and read to its end.
async fn one(client: &reqwest::Client, h: &Harness, kind: usize) {
    let (path, key, stream) = match kind {
        0 => ("/v1/chat/completions", KEY, false),
        1 => ("/v1/chat/completions", LIMITED_KEY, true),
        2 => (
            "/openai/deployments/gpt-4o/chat/completions",
            LIMITED_KEY,
            false,
        ),
        3 => ("/openai/deployments/gpt-4o/chat/completions", KEY, true),
        _ => ("/v1/embeddings", LIMITED_KEY, false),
    };
    let body = if path.ends_with("embeddings") {
        serde_json::json!({"model": "embed", "input": "hello"})
    } else {
        serde_json::json!({"model": "gpt-4o", "stream": stream,
            "messages": [{"role": "user", "content": "hello"}]})
    };
    let r = client
        .post(h.url(path))
        .header("api-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.bytes().await.unwrap();
}

/// One Realtime session: opened, one response, closed.
async fn session(h: &Harness) {
    let mut req = format!("ws://{}/v1/realtime?model=gpt-4o", h.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("api-key", KEY.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(req).await.unwrap();
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
}

/// Every kind of request, `n` of each, eight at a time, through both proxies.
async fn batch(proxies: &[Harness], n: usize) {
    let client = reqwest::Client::new();
    for h in proxies {
        futures_util::stream::iter((0..n * 5).map(|i| one(&client, h, i % 5)))
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<()>>()
            .await;
        futures_util::stream::iter((0..SESSIONS).map(|_| session(h)))
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<()>>()
            .await;
    }
}

/// The live heap once the proxies have finished what the batch left (closing sockets, charges,
/// span exports, which leave every second): read until two readings [`SETTLE`] apart agree.
async fn settled_heap() -> usize {
    const SETTLE: Duration = Duration::from_millis(1300);
    let mut last = ALLOCATOR.allocated();
    for _ in 0..10 {
        tokio::time::sleep(SETTLE).await;
        let now = ALLOCATOR.allocated();
        if now.abs_diff(last) < 4096 {
            return now;
        }
        last = now;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_heap_does_not_grow_with_the_requests_served() {
    let n = std::env::var("HEAP_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(N);
    let quick = || {
        emulator_with(azure_emulator::EmulatorConfig {
            stream_interval: Duration::ZERO,
            ..azure_emulator::EmulatorConfig::default()
        })
    };
    let plain = quick().await;
    let text = config(&plain.url(), None);
    let plain = proxy(plain, &text).await;
    let traced = quick().await;
    let text = config(&traced.url(), Some(&otlp_sink().await));
    let traced = proxy(traced, &text).await;
    let proxies = [plain, traced];

    // The first batches fill every cache, pool and per-thread table; the next may add nothing.
    batch(&proxies, n).await;
    batch(&proxies, n).await;
    let mut readings = vec![settled_heap().await];
    for _ in 0..2 {
        batch(&proxies, n).await;
        readings.push(settled_heap().await);
    }
    let steps: Vec<usize> = readings
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .collect();
    let requests = proxies.len() * (n * 5 + SESSIONS);
    eprintln!("live heap after each batch of {requests} requests: {readings:?} B");
    let least = steps.iter().copied().min().unwrap_or(0);
    assert!(
        least <= ALLOWED_GROWTH,
        "the live heap grew in every batch, by at least {least} B over {requests} requests ({:.1} B per request): {readings:?}",
        least as f64 / requests as f64
    );
}
