//! Micro-benchmarks of the per-request work: key lookup, token cache hit, Entra token
//! validation with cached JWKS, route resolution, header rewrite, limits admit+charge in memory
//! (alone, and from two threads at once),
//! the SSE usage parser per chunk, and one upstream round trip on a kept-alive loopback
//! connection through the proxy's per-thread pool (and, for comparison, through hyper-util's
//! legacy client, which the proxy used before).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use azure_emulator::{Emulator, EmulatorConfig, MintSpec};
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use entra_proxy::config::{Config, KeyDigest, KeyEntry};
use entra_proxy::forward::upstream_headers;
use entra_proxy::identity::{IdentityEnv, TokenCache, build_token_source};
use entra_proxy::inbound::{EntraValidator, KeyStore};
use entra_proxy::routing::{RoutingTable, plan, resolve};
use futures_util::FutureExt as _;
use std::hint::black_box;
use std::time::Duration;

fn config(emulator: &str, tenant: &str) -> Config {
    Config::parse(
        &format!(
            r#"[azure]
emulator = "{emulator}"
[identity]
kind = "managed-identity"
[[backends]]
name = "primary"
endpoint = "{emulator}"
[[models]]
name = "gpt-4o"
backend = "primary"
deployment = "gpt-4o-2024-08-06"
[[keys]]
name = "team-a"
sha256 = "{}"
[inbound.entra]
tenants = ["{tenant}"]
"#,
            KeyDigest::of("bench-key").to_hex()
        ),
        "bench",
        &|_| None,
    )
    .unwrap()
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let emu = rt
        .block_on(Emulator::start(EmulatorConfig::default()))
        .unwrap();
    let cfg = config(emu.url().as_str(), &emu.config().tenant_id);

    // Key lookup among 1,000 keys.
    let mut entries: Vec<KeyEntry> = cfg.keys.clone();
    for i in 0..1000 {
        entries.push(KeyEntry {
            name: format!("k{i}"),
            digest: KeyDigest::of(&format!("key-{i}")),
            legacy: false,
            models: vec![],
            expires: None,
            requests_per_minute: None,
            tokens_per_minute: None,
            token_quota: None,
            token_quota_period: Default::default(),
            budget_micros: None,
            budget_period: Default::default(),
        });
    }
    let store = KeyStore::new(&entries, &entra_proxy::limits::Limits::in_memory());
    c.bench_function("key_lookup_hit_1000_keys", |b| {
        b.iter(|| black_box(store.lookup(black_box("bench-key")).is_some()))
    });
    c.bench_function("key_lookup_miss_1000_keys", |b| {
        b.iter(|| black_box(store.lookup(black_box("nope")).is_none()))
    });

    // Identity matching among 1,000 identities (one per app, a hundred per group), for a token
    // in 40 groups with 3 roles.
    let mut text = String::from(
        "[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\n[inbound.entra]\ntenants=['72f988bf-86f1-41af-91ab-2d7cd011db47']\n",
    );
    for i in 0..1000 {
        text.push_str(&format!(
            "[[identities]]\nname='app{i}'\napp_id='5e5c3f1a-0000-4000-8000-{i:012}'\n"
        ));
    }
    let ids_config = Config::parse(&text, "bench", &|_| None).unwrap();
    let identities = entra_proxy::inbound::Identities::new(
        &ids_config.identities,
        ids_config.inbound.unmatched,
        ids_config.inbound.upstream,
        &entra_proxy::limits::Limits::in_memory(),
    );
    let claims: entra_proxy::claims::Claims = serde_json::from_value(serde_json::json!({
        "tid": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "oid": "b7f1c1d2-0000-4000-8000-0000000000b1",
        "azp": "5e5c3f1a-0000-4000-8000-000000000500",
        "roles": ["Reader", "Writer", "Admin"],
        "groups": (0..40).map(|i| format!("0a000000-0000-4000-8000-{i:012}")).collect::<Vec<_>>(),
    }))
    .unwrap();
    c.bench_function("identity_match_1000_identities", |b| {
        b.iter(|| {
            let p = entra_proxy::inbound::Principal::of_claims(black_box(&claims));
            black_box(identities.best(&p).is_some())
        })
    });

    // Token cache hit.
    let source = build_token_source(&cfg, &IdentityEnv::default()).unwrap();
    let tokens = TokenCache::new(source, Duration::from_secs(5));
    let scope = cfg.backends[0].scope.clone();
    rt.block_on(tokens.get(&scope)).unwrap();
    c.bench_function("token_cache_hit", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(tokens.get(&scope).await.unwrap()) })
    });

    // Entra token validation with JWKS cached.
    let entra = cfg.inbound.entra.clone().unwrap();
    let validator = EntraValidator::new(&cfg, &entra).unwrap();
    let token = emu.mint(&MintSpec::new("https://cognitiveservices.azure.com"));
    rt.block_on(validator.validate(&token)).unwrap();
    c.bench_function("entra_jwt_validate_cached_jwks", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(validator.validate(&token).await.unwrap()) })
    });

    // Route resolution, both shapes.
    let table = RoutingTable::new(&cfg);
    let body =
        Bytes::from_static(br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#);
    c.bench_function("route_azure_path", |b| {
        b.iter(|| {
            let path = "/openai/deployments/gpt-4o-2024-08-06/chat/completions";
            let p = plan(path).unwrap();
            black_box(
                resolve(&table, &p, path, Some("api-version=2024-10-21"), None, None).unwrap(),
            )
        })
    });
    c.bench_function("route_openai_path_reads_model", |b| {
        b.iter(|| {
            let path = "/v1/chat/completions";
            let p = plan(path).unwrap();
            black_box(resolve(&table, &p, path, None, None, Some(&body)).unwrap())
        })
    });

    // Header rewrite of a typical SDK request.
    let mut headers = http::HeaderMap::new();
    for (k, v) in [
        ("api-key", "bench-key"),
        ("content-type", "application/json"),
        ("accept", "application/json"),
        ("user-agent", "AzureOpenAI/Python 1.54.0"),
        ("x-stainless-lang", "python"),
        ("x-stainless-os", "Linux"),
        ("connection", "keep-alive"),
        ("host", "proxy:8080"),
        ("content-length", "64"),
    ] {
        headers.insert(k, http::HeaderValue::from_static(v));
    }
    c.bench_function("header_rewrite", |b| {
        b.iter(|| black_box(upstream_headers(black_box(&headers), "req-1")))
    });

    // Limits in memory: admit one request with its reservation and settle it to its usage, for
    // a key with every limit, through the account its policy holds.
    let limits = entra_proxy::limits::Limits::in_memory();
    let budget = entra_proxy::config::KeyBudget {
        requests_per_minute: Some(u32::MAX),
        tokens_per_minute: Some(u64::MAX),
        token_quota: Some(u64::MAX),
        budget_micros: Some(1_000_000_000_000_000),
        ..Default::default()
    };
    let account = limits.account(entra_proxy::limits::BudgetKey::key("team-a"), budget);
    let reservation = entra_proxy::limits::Reservation {
        prompt: 20,
        completion: 1024,
        ceiling: entra_proxy::limits::Ceiling::Request("max_tokens"),
        micros: 10_290,
        answer_micros: 10_240,
    };
    let used = entra_proxy::limits::Amounts {
        tokens: 42,
        micros: 270,
    };
    c.bench_function("limits_admit_and_charge_memory", |b| {
        b.to_async(&rt).iter(|| async {
            let admission = account.admit(&reservation).await.unwrap();
            admission.settle(black_box(used));
        })
    });

    // The same, from two threads at once (as two serving threads do), on two keys and on one
    // key: wall time per admission while the other thread admits too. Two keys share nothing;
    // one key shares its counters.
    let tpm = entra_proxy::config::KeyBudget {
        tokens_per_minute: Some(u64::MAX),
        ..Default::default()
    };
    let team_b = limits.account(entra_proxy::limits::BudgetKey::key("team-b"), tpm);
    let team_c = limits.account(entra_proxy::limits::BudgetKey::key("team-c"), tpm);
    let two_threads = |accounts: [&entra_proxy::limits::Account; 2], iters: u64| {
        let start = std::time::Instant::now();
        std::thread::scope(|s| {
            for account in accounts {
                s.spawn(|| {
                    for _ in 0..iters {
                        let admitted = account.admit(&reservation).now_or_never();
                        admitted.unwrap().unwrap().settle(black_box(used));
                    }
                });
            }
        });
        start.elapsed()
    };
    c.bench_function("limits_memory_two_threads_two_keys", |b| {
        b.iter_custom(|iters| two_threads([&team_b, &team_c], iters))
    });
    c.bench_function("limits_memory_two_threads_one_key", |b| {
        b.iter_custom(|iters| two_threads([&team_b, &team_b], iters))
    });

    // The SSE usage parser, per chunk of a chat stream (one content delta).
    let chunk = Bytes::from_static(
        b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" world\"},\"finish_reason\":null}]}\n\n",
    );
    let mut meter = entra_proxy::metering::SseMeter::new(false);
    c.bench_function("sse_usage_parser_per_chunk", |b| {
        b.iter(|| black_box(meter.feed(black_box(&chunk))))
    });
    // The same, when the proxy asked for the usage chunk the client did not: every chunk
    // carries `"usage":null`, which the meter takes out again. A 400-byte delta, as long
    // answers stream.
    let long = format!(
        "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}\"}},\"finish_reason\":null}}],\"usage\":null}}\n\n",
        "lorem ipsum \\\"dolor\\\" sit amet, ".repeat(12)
    );
    let long = Bytes::from(long);
    let mut hiding = entra_proxy::metering::SseMeter::new(true);
    c.bench_function("sse_usage_hiding_per_chunk", |b| {
        b.iter(|| black_box(hiding.feed(black_box(&long))))
    });

    // The usage of a whole JSON answer (a chat completion), read at its end.
    let answer = br#"{"id":"chatcmpl-static","object":"chat.completion","created":1733000000,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, nice to meet."},"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":7,"total_tokens":21}}"#;
    c.bench_function("json_usage_of_answer", |b| {
        b.iter(|| black_box(entra_proxy::metering::json_usage(black_box(answer))))
    });
    // The access line of a metered answer, rendered as text and as JSON (not written out).
    c.bench_function("access_line_text", |b| {
        b.iter(|| black_box(entra_proxy::render_access_line(black_box(false))))
    });
    c.bench_function("access_line_json", |b| {
        b.iter(|| black_box(entra_proxy::render_access_line(black_box(true))))
    });
    drop(emu);
    upstream_round_trip(c);
}

/// An HTTP/1.1 server on loopback answering every request with a small static chat completion,
/// on `rt`; returns its URL.
fn static_upstream(rt: &tokio::runtime::Runtime) -> http::Uri {
    const ANSWER: &[u8] = br#"{"id":"chatcmpl-static","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":7,"total_tokens":21}}"#;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: http::Request<hyper::body::Incoming>| async move {
                        use http_body_util::BodyExt as _;
                        let _ = request.into_body().collect().await;
                        let mut answer = http::Response::new(http_body_util::Full::new(
                            Bytes::from_static(ANSWER),
                        ));
                        answer.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, std::convert::Infallible>(answer)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21")
        .parse()
        .unwrap()
}

type Boxed =
    http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

fn request(uri: &http::Uri) -> http::Request<Boxed> {
    use http_body_util::BodyExt as _;
    const BODY: &[u8] =
        br#"{"messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":32}"#;
    let body = http_body_util::Full::new(Bytes::from_static(BODY))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut request = http::Request::new(body);
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = uri.clone();
    request.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    request
}

/// One request and its whole answer on a kept-alive connection, on one thread (as a serving
/// thread does): the proxy's pool, and hyper-util's legacy client for comparison.
fn upstream_round_trip(c: &mut Criterion) {
    use http_body_util::BodyExt as _;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let uri = static_upstream(&rt);
    let client = entra_proxy::UpstreamClient::new(Duration::from_secs(5)).unwrap();
    c.bench_function("upstream_round_trip_pool", |b| {
        b.to_async(&rt).iter(|| async {
            let answer = client.send(request(&uri)).await.unwrap();
            black_box(answer.into_body().collect().await.unwrap().to_bytes())
        })
    });
    let legacy = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Boxed>();
    c.bench_function("upstream_round_trip_legacy_client", |b| {
        b.to_async(&rt).iter(|| async {
            let answer = legacy.request(request(&uri)).await.unwrap();
            black_box(answer.into_body().collect().await.unwrap().to_bytes())
        })
    });
}

criterion_group! {
    name = hot_path;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = benches
}
criterion_main!(hot_path);
