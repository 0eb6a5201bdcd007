//! Traces over OTLP/HTTP, received by a small collector on 127.0.0.1 that decodes the protobuf
//! requests: one server span per request continuing the caller's `traceparent`, a token-lookup
//! and an attempt span under it, the attempt's `traceparent` seen by Azure, the GenAI
//! attributes (the response model of a stream too), the diagnosis of a wrong-audience answer, a
//! realtime socket traced like a request with its usage, no secret anywhere in the bytes, and a
//! collector that is down costing dropped spans, never the requests' time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use azure_emulator::{Emulator, ResourceKind};
use entra_proxy::config::{Config, KeyDigest};
use entra_proxy::identity::IdentityEnv;
use entra_proxy::state::{AppState, Origin, TelemetryEnv};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";
const PROMPT: &str = "a prompt that must never be in a span 5e1f";
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

/// The OTLP/HTTP receiver: every request body to `/v1/traces`, as received.
#[derive(Clone)]
struct Collector {
    addr: std::net::SocketAddr,
    bodies: Arc<Mutex<Vec<bytes::Bytes>>>,
}

impl Collector {
    async fn start() -> Collector {
        use axum::routing::post;
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
                let kept = kept.clone();
                async move {
                    assert_eq!(headers["content-type"], "application/x-protobuf");
                    kept.lock().unwrap().push(body);
                    // An empty ExportTraceServiceResponse: all accepted.
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Collector { addr, bodies }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn raw(&self) -> Vec<u8> {
        self.bodies.lock().unwrap().concat()
    }

    fn spans(&self) -> Vec<Span> {
        let bodies = self.bodies.lock().unwrap().clone();
        let mut out = Vec::new();
        for b in bodies {
            let req = ExportTraceServiceRequest::decode(b).unwrap();
            for rs in req.resource_spans {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                    .and_then(|kv| kv.value.as_ref())
                    .and_then(|v| v.value.clone());
                assert!(
                    matches!(service, Some(Value::StringValue(_))),
                    "a service.name"
                );
                for ss in rs.scope_spans {
                    out.extend(ss.spans);
                }
            }
        }
        out
    }

    /// The spans of trace `trace_id`, once `n` of them arrived (flushing the proxy's queue
    /// meanwhile); panics after a generous wait.
    async fn trace(&self, h: &Harness, trace_id: &str, n: usize) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            h.state.tracing.flush(Duration::from_secs(5)).await;
            let spans: Vec<Span> = self
                .spans()
                .into_iter()
                .filter(|s| hex(&s.trace_id) == trace_id)
                .collect();
            if spans.len() >= n {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} spans of trace {trace_id} arrived: {spans:#?}",
                spans.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// A span's attribute as text (strings, integers and booleans).
fn attr(span: &Span, key: &str) -> Option<String> {
    let v = span.attributes.iter().find(|kv| kv.key == key)?;
    match v.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn one<'a>(spans: &'a [Span], what: &str, f: impl Fn(&Span) -> bool) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| f(s)).collect();
    assert_eq!(found.len(), 1, "one {what} span: {spans:#?}");
    found[0]
}

/// The base config plus `[telemetry]` toward `endpoint`, and a Foundry backend left on the
/// cognitiveservices scope (Azure answers it 401: the wrong audience).
async fn traced(endpoint: &str, otel: TelemetryEnv) -> Harness {
    let emu = emulator().await;
    let foundry = emu.add_resource(ResourceKind::Foundry).await.unwrap();
    let text = config_text(&emu, &foundry, endpoint);
    let config = Config::parse(&text, "test config", &|_| None).unwrap();
    let state = AppState::build_with(
        config,
        &IdentityEnv::default(),
        &otel,
        Origin::of_text(&text),
    )
    .unwrap();
    serve_state(emu, Arc::new(state)).await
}

fn config_text(emu: &Emulator, foundry: &url::Url, endpoint: &str) -> String {
    let telemetry = match endpoint {
        "" => String::new(),
        e => {
            format!("[telemetry]\notlp_endpoint = \"{e}\"\nservice_name = \"proxy-under-test\"\n\n")
        }
    };
    base_config(&emu.url()).replace("[azure]", &format!("{telemetry}[azure]"))
        + &format!(
            r#"
[[backends]]
name = "foundry"
endpoint = "{foundry}"

[[models]]
name = "foundry-chat"
backend = "foundry"
deployment = "gpt-4o"
"#
        )
}

fn traceparent(trace_id: &str, sampled: bool) -> String {
    format!(
        "00-{trace_id}-{PARENT_SPAN_ID}-{}",
        if sampled { "01" } else { "00" }
    )
}

async fn chat(h: &Harness, model: &str, traceparent: Option<&str>) -> reqwest::Response {
    let mut r = client()
        .post(h.url("/v1/chat/completions"))
        .header("api-key", KEY)
        .json(&serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": PROMPT}],
        }));
    if let Some(tp) = traceparent {
        r = r
            .header("traceparent", tp)
            .header("tracestate", "vendor=abc");
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn a_request_is_a_server_span_continuing_the_callers_trace_with_token_and_attempt_spans() {
    let collector = Collector::start().await;
    let h = traced(&collector.url(), TelemetryEnv::default()).await;
    let r = chat(&h, "gpt-4o", Some(&traceparent(TRACE_ID, true))).await;
    assert_eq!(r.status(), 200);
    let answer: serde_json::Value = r.json().await.unwrap();
    let completion = answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();

    let spans = collector.trace(&h, TRACE_ID, 3).await;
    let server = one(&spans, "server", |s| s.kind == SERVER);
    assert_eq!(
        hex(&server.parent_span_id),
        PARENT_SPAN_ID,
        "continues the caller's span"
    );
    assert_eq!(server.name, "chat gpt-4o");
    for (key, value) in [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.request.model", "gpt-4o"),
        ("gen_ai.provider.name", "azure.ai.openai"),
        ("entra_proxy.key", "key:team-a"),
        ("http.request.method", "POST"),
        ("http.response.status_code", "200"),
    ] {
        assert_eq!(
            attr(server, key).as_deref(),
            Some(value),
            "{key}: {server:#?}"
        );
    }
    let usage = &answer["usage"];
    assert_eq!(
        attr(server, "gen_ai.usage.input_tokens"),
        Some(usage["prompt_tokens"].to_string())
    );
    assert_eq!(
        attr(server, "gen_ai.usage.output_tokens"),
        Some(usage["completion_tokens"].to_string())
    );
    assert_eq!(
        attr(server, "gen_ai.response.model").as_deref(),
        answer["model"].as_str(),
        "{server:#?}"
    );
    let request_id = attr(server, "entra_proxy.request_id").unwrap();
    assert!(!request_id.is_empty());

    let lookup = one(&spans, "token lookup", |s| s.name == "token lookup");
    assert_eq!(lookup.parent_span_id, server.span_id);
    assert_eq!(
        attr(lookup, "entra_proxy.token.scope").as_deref(),
        Some("https://cognitiveservices.azure.com/.default")
    );
    let source = attr(lookup, "entra_proxy.token.source").unwrap();
    assert!(source == "cache" || source == "acquired", "{source}");
    assert!(
        attr(lookup, "entra_proxy.credential.kind")
            .unwrap()
            .contains("managed identity"),
        "{lookup:#?}"
    );

    let attempt = one(&spans, "attempt", |s| s.kind == CLIENT);
    assert_eq!(attempt.parent_span_id, server.span_id);
    for (key, value) in [
        ("entra_proxy.backend", "primary"),
        ("entra_proxy.deployment", "gpt-4o"),
        ("entra_proxy.attempt", "1"),
        ("http.response.status_code", "200"),
    ] {
        assert_eq!(
            attr(attempt, key).as_deref(),
            Some(value),
            "{key}: {attempt:#?}"
        );
    }

    // Azure got the attempt's traceparent (the caller's trace, the attempt's span) and the
    // caller's tracestate.
    let seen = h
        .emulator
        .requests()
        .into_iter()
        .find(|r| r.path_and_query.contains("/chat/completions"))
        .unwrap();
    assert_eq!(
        seen.header("traceparent"),
        Some(format!("00-{TRACE_ID}-{}-01", hex(&attempt.span_id)).as_str())
    );
    assert_eq!(seen.header("tracestate"), Some("vendor=abc"));

    // No key, token, prompt or completion anywhere in what was exported.
    let token = seen
        .header("authorization")
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_string();
    let raw = collector.raw();
    let signature = token.rsplit('.').next().unwrap().to_string();
    for secret in [
        KEY,
        token.as_str(),
        signature.as_str(),
        PROMPT,
        completion.as_str(),
    ] {
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "exported spans hold {secret:?}"
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn a_wrong_audience_answer_carries_its_diagnosis_code() {
    let collector = Collector::start().await;
    let h = traced(&collector.url(), TelemetryEnv::default()).await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let r = chat(&h, "foundry-chat", Some(&traceparent(trace_id, true))).await;
    assert_eq!(r.status(), 401);
    let diagnosis = r.headers()["x-entra-proxy-diagnosis"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(diagnosis.starts_with("audience-mismatch: "), "{diagnosis}");
    let spans = collector.trace(&h, trace_id, 3).await;
    let server = one(&spans, "server", |s| s.kind == SERVER);
    assert_eq!(
        attr(server, "entra_proxy.diagnosis").as_deref(),
        Some("audience-mismatch")
    );
    assert_eq!(
        attr(server, "http.response.status_code").as_deref(),
        Some("401")
    );
    assert_eq!(
        attr(server, "entra_proxy.key").as_deref(),
        Some("key:team-a")
    );
    let attempt = one(&spans, "attempt", |s| s.kind == CLIENT);
    assert_eq!(
        attr(attempt, "entra_proxy.backend").as_deref(),
        Some("foundry")
    );
    assert_eq!(
        attr(attempt, "http.response.status_code").as_deref(),
        Some("401")
    );
    h.stop().await;
}

#[tokio::test]
async fn the_callers_sampled_flag_decides_and_the_environment_configures() {
    let collector = Collector::start().await;
    // Endpoint and sampler from the OTEL_* variables only: keep no trace that starts here.
    let otel = TelemetryEnv {
        endpoint: Some(collector.url()),
        sampler: Some("parentbased_always_off".into()),
        service_name: Some("from-env".into()),
        ..TelemetryEnv::default()
    };
    let h = traced("", otel).await;
    let unsampled = "11111111111111111111111111111111";
    let sampled = "22222222222222222222222222222222";
    assert_eq!(chat(&h, "gpt-4o", None).await.status(), 200);
    assert_eq!(
        chat(&h, "gpt-4o", Some(&traceparent(unsampled, false)))
            .await
            .status(),
        200
    );
    assert_eq!(
        chat(&h, "gpt-4o", Some(&traceparent(sampled, true)))
            .await
            .status(),
        200
    );
    let spans = collector.trace(&h, sampled, 3).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    h.state.tracing.flush(Duration::from_secs(5)).await;
    let all = collector.spans();
    assert!(
        all.iter().all(|s| hex(&s.trace_id) == sampled),
        "only the caller's sampled trace is kept: {all:#?}"
    );
    // Not sampled, the attempt still tells Azure the caller's trace (flag off).
    let seen: Vec<String> = h
        .emulator
        .requests()
        .iter()
        .filter_map(|r| r.header("traceparent").map(str::to_string))
        .collect();
    assert!(
        seen.iter()
            .any(|tp| tp.starts_with(&format!("00-{unsampled}-")) && tp.ends_with("-00")),
        "{seen:?}"
    );
    let body = String::from_utf8_lossy(&collector.raw()).into_owned();
    assert!(
        body.contains("from-env"),
        "service.name from OTEL_SERVICE_NAME"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_streamed_answer_ends_its_span_with_the_stream_and_its_usage() {
    let collector = Collector::start().await;
    let h = traced(&collector.url(), TelemetryEnv::default()).await;
    let trace_id = "33333333333333333333333333333333";
    let r = client()
        .post(h.url("/v1/chat/completions"))
        .header("api-key", KEY)
        .header("traceparent", traceparent(trace_id, true))
        .json(&serde_json::json!({
            "model": "gpt-4o",
            "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": PROMPT}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (text, broke_off) = read_stream(r).await;
    assert!(!broke_off);
    let usage: serde_json::Value = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .find_map(|v| v.get("usage").filter(|u| !u.is_null()).cloned())
        .unwrap();
    // The model Azure named in the chunks the client got.
    let model = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .find_map(|v| {
            v["model"]
                .as_str()
                .filter(|m| !m.is_empty())
                .map(str::to_string)
        })
        .unwrap();
    let spans = collector.trace(&h, trace_id, 3).await;
    let server = one(&spans, "server", |s| s.kind == SERVER);
    let attempt = one(&spans, "attempt", |s| s.kind == CLIENT);
    assert_eq!(
        attr(server, "gen_ai.usage.input_tokens"),
        Some(usage["prompt_tokens"].to_string())
    );
    assert_eq!(
        attr(server, "gen_ai.usage.output_tokens"),
        Some(usage["completion_tokens"].to_string())
    );
    assert_eq!(
        attr(server, "entra_proxy.usage.estimated").as_deref(),
        Some("false")
    );
    assert_eq!(
        attr(server, "gen_ai.response.model"),
        Some(model),
        "{server:#?}"
    );
    assert!(
        server.end_time_unix_nano >= attempt.end_time_unix_nano,
        "the server span lasts until the stream's end"
    );
    let raw = collector.raw();
    assert!(!raw.windows(PROMPT.len()).any(|w| w == PROMPT.as_bytes()));
    h.stop().await;
}

#[tokio::test]
async fn each_attempt_is_a_span_with_its_status_and_why_it_was_retried() {
    let collector = Collector::start().await;
    let h = traced(&collector.url(), TelemetryEnv::default()).await;
    h.emulator
        .script("gpt-4o", vec![azure_emulator::Fault::Status(503)]);
    let trace_id = "44444444444444444444444444444444";
    let r = chat(&h, "gpt-4o", Some(&traceparent(trace_id, true))).await;
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    let spans = collector.trace(&h, trace_id, 5).await;
    let server = one(&spans, "server", |s| s.kind == SERVER);
    let mut attempts: Vec<&Span> = spans.iter().filter(|s| s.kind == CLIENT).collect();
    attempts.sort_by_key(|s| attr(s, "entra_proxy.attempt"));
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    assert_eq!(
        attr(attempts[0], "http.response.status_code").as_deref(),
        Some("503")
    );
    assert_eq!(
        attr(attempts[0], "entra_proxy.retry.reason").as_deref(),
        Some("overloaded")
    );
    assert_eq!(
        attr(attempts[1], "entra_proxy.attempt").as_deref(),
        Some("2")
    );
    assert_eq!(
        attr(attempts[1], "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(attempts[1], "entra_proxy.retry.reason"), None);
    for a in &attempts {
        assert_eq!(a.parent_span_id, server.span_id);
    }
    // Each attempt told Azure its own span.
    let seen: Vec<String> = h
        .emulator
        .requests()
        .iter()
        .filter(|r| r.path_and_query.contains("/chat/completions"))
        .filter_map(|r| r.header("traceparent").map(str::to_string))
        .collect();
    let sent: Vec<String> = attempts
        .iter()
        .map(|a| format!("00-{trace_id}-{}-01", hex(&a.span_id)))
        .collect();
    assert_eq!(seen, sent);
    h.stop().await;
}

/// The `entra_proxy_trace_spans_dropped_total` series in Prometheus text, summed.
fn dropped(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("entra_proxy_trace_spans_dropped_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_collector_that_is_down_costs_dropped_spans_not_request_time() {
    // A port nothing listens on.
    let port = free_port();
    let h = traced(&format!("http://127.0.0.1:{port}"), TelemetryEnv::default()).await;
    let metrics = || metrics_text(h.addr);
    let before = dropped(&metrics().await);
    for _ in 0..20 {
        let started = Instant::now();
        let r = chat(&h, "gpt-4o", Some(&traceparent(TRACE_ID, true))).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        // Generous: the emulator answers at once; a request that waited on the collector
        // would take the export timeout (10 s).
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        h.state.tracing.flush(Duration::from_secs(5)).await;
        let now = dropped(&metrics().await);
        if now >= before + 60.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dropped spans went from {before} to {now}, not by the 60 of 20 requests"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    h.stop().await;
}

#[test]
fn a_malformed_otel_variable_stops_start_up_naming_it() {
    let text = "[server]\nlisten = \"127.0.0.1:0\"\n[azure]\nemulator = \"http://127.0.0.1:9\"\n[identity]\nkind = \"managed-identity\"\n[[backends]]\nname = \"b\"\nendpoint = \"https://x.openai.azure.com\"\n";
    let config = || Config::parse(text, "t", &|_| None).unwrap();
    for (otel, names) in [
        (
            TelemetryEnv {
                endpoint: Some("http://127.0.0.1:4318".into()),
                sampler_arg: Some("half".into()),
                ..TelemetryEnv::default()
            },
            "OTEL_TRACES_SAMPLER_ARG",
        ),
        (
            TelemetryEnv {
                endpoint: Some("127.0.0.1:4318".into()),
                ..TelemetryEnv::default()
            },
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ),
    ] {
        let e = AppState::build_with(
            config(),
            &IdentityEnv::default(),
            &otel,
            Origin::of_text(text),
        )
        .unwrap_err();
        assert!(e.starts_with(names), "{e}");
    }
    let e = Config::parse(
        &format!("{text}[telemetry]\nsample_ratio = 2.0\notlp_endpoint = \"grpc://c\"\n"),
        "t",
        &|_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("telemetry.sample_ratio"), "{e}");
    assert!(e.contains("telemetry.otlp_endpoint"), "{e}");
}

#[tokio::test]
async fn the_binary_refuses_a_malformed_sampler_argument_with_exit_64() {
    let emu = emulator().await;
    let path = std::env::temp_dir().join(format!("otel-{}.toml", std::process::id()));
    std::fs::write(&path, base_config(&emu.url())).unwrap();
    let out = tokio::process::Command::new(binary())
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .env_clear()
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        .env("OTEL_TRACES_SAMPLER", "traceidratio")
        .env("OTEL_TRACES_SAMPLER_ARG", "1.5")
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("OTEL_TRACES_SAMPLER_ARG"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let _ = KeyDigest::of("");
}

#[tokio::test]
async fn a_realtime_socket_is_a_server_span_with_token_and_attempt_spans_and_its_usage() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let collector = Collector::start().await;
    let h = traced(&collector.url(), TelemetryEnv::default()).await;
    let trace_id = "55555555555555555555555555555555";
    let mut req = format!("ws://{}/v1/realtime?model=gpt-4o", h.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("api-key", KEY.parse().unwrap());
    req.headers_mut()
        .insert("traceparent", traceparent(trace_id, true).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let next = |m: Option<Result<Message, _>>| -> serde_json::Value {
        match m.unwrap().unwrap() {
            Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
            other => panic!("expected text, got {other:?}"),
        }
    };
    assert_eq!(next(ws.next().await)["type"], "session.created");
    let mut used = (0, 0);
    for _ in 0..2 {
        ws.send(Message::text(r#"{"type":"response.create"}"#))
            .await
            .unwrap();
        let done = next(ws.next().await);
        assert_eq!(done["type"], "response.done");
        let usage = &done["response"]["usage"];
        used.0 += usage["input_tokens"].as_u64().unwrap();
        used.1 += usage["output_tokens"].as_u64().unwrap();
    }
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}

    let spans = collector.trace(&h, trace_id, 3).await;
    let server = one(&spans, "server", |s| s.kind == SERVER);
    assert_eq!(hex(&server.parent_span_id), PARENT_SPAN_ID);
    for (key, value) in [
        ("gen_ai.request.model", "gpt-4o".to_string()),
        ("entra_proxy.key", "key:team-a".to_string()),
        ("http.response.status_code", "101".to_string()),
        ("gen_ai.usage.input_tokens", used.0.to_string()),
        ("gen_ai.usage.output_tokens", used.1.to_string()),
        ("entra_proxy.usage.estimated", "false".to_string()),
    ] {
        assert_eq!(attr(server, key), Some(value), "{key}: {server:#?}");
    }
    let lookup = one(&spans, "token lookup", |s| s.name == "token lookup");
    assert_eq!(lookup.parent_span_id, server.span_id);
    assert!(
        attr(lookup, "entra_proxy.token.source").is_some(),
        "{lookup:#?}"
    );
    let attempt = one(&spans, "attempt", |s| s.kind == CLIENT);
    assert_eq!(attempt.parent_span_id, server.span_id);
    for (key, value) in [
        ("entra_proxy.backend", "primary"),
        ("entra_proxy.attempt", "1"),
        ("http.response.status_code", "101"),
    ] {
        assert_eq!(
            attr(attempt, key).as_deref(),
            Some(value),
            "{key}: {attempt:#?}"
        );
    }
    assert!(
        server.end_time_unix_nano >= attempt.end_time_unix_nano,
        "the server span lasts as long as the socket"
    );

    // Azure's handshake carried the attempt's traceparent, in the caller's trace.
    let seen = h
        .emulator
        .requests()
        .into_iter()
        .find(|r| r.path_and_query.contains("realtime"))
        .unwrap();
    assert_eq!(
        seen.header("traceparent"),
        Some(format!("00-{trace_id}-{}-01", hex(&attempt.span_id)).as_str())
    );
    let token = seen
        .header("authorization")
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_string();
    let signature = token.rsplit('.').next().unwrap().to_string();
    let raw = collector.raw();
    for secret in [KEY, token.as_str(), signature.as_str()] {
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "exported spans hold {secret:?}"
        );
    }
    h.stop().await;
}
