//! OpenTelemetry traces over OTLP/HTTP: one server span per proxied request, continuing the
//! caller's W3C `traceparent`, with a child span for the token lookup and one per upstream
//! attempt, whose `traceparent` goes on to Azure. Attributes follow the GenAI semantic
//! conventions; a span never holds a key, a token, a prompt or a completion.
//!
//! Off unless an endpoint is configured ([`Settings::resolve`]): then [`Tracing`] holds nothing
//! and every span is an empty `Option`. Finished spans go through a bounded queue to one
//! export thread ([`export`]).

mod export;
mod settings;

use export::EXPORT_TIMEOUT;
pub use settings::TelemetryEnv;
use settings::{Root, Sampling, Settings};

use axum::http::{HeaderMap, HeaderValue, Method};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, propagation::TextMapPropagator as _};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use std::sync::Arc;
use std::time::Duration;

/// The value of `gen_ai.provider.name` for every Azure backend.
pub(crate) const PROVIDER_NAME: &str = "azure.ai.openai";

/// The tracer, or nothing when traces are off. Cheap to clone; outlives reloads.
#[derive(Clone, Default)]
pub struct Tracing {
    live: Option<Arc<Live>>,
}

struct Live {
    tracer: SdkTracer,
    // Kept so the tracer keeps its processor.
    _provider: SdkTracerProvider,
    exporting: export::Exporting,
    endpoint: String,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.live {
            None => f.write_str("Tracing(off)"),
            Some(l) => write!(f, "Tracing(to {})", l.endpoint),
        }
    }
}

impl Tracing {
    /// Traces off: nothing is built, nothing is recorded.
    pub fn off() -> Tracing {
        Tracing::default()
    }

    /// Traces as `[telemetry]` and the `OTEL_*` variables say; off when neither names an
    /// endpoint. Errors name the key or variable at fault.
    pub fn from_config(
        config: &crate::config::TelemetryConfig,
        env: &TelemetryEnv,
    ) -> Result<Tracing, String> {
        match Settings::resolve(config, env)? {
            None => Ok(Tracing::off()),
            Some(settings) => Tracing::start(&settings),
        }
    }

    /// Builds the exporter, its thread and the tracer.
    fn start(settings: &Settings) -> Result<Tracing, String> {
        let mut resource = opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(settings.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
        for (k, v) in &settings.resource {
            resource = resource.with_attribute(KeyValue::new(k.clone(), v.clone()));
        }
        let resource = resource.build();
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(export::Client::new()?)
            .with_endpoint(settings.endpoint.as_str())
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_timeout(EXPORT_TIMEOUT)
            .with_retry_policy(opentelemetry_otlp::RetryPolicy::disabled())
            .build()
            .map_err(|e| format!("telemetry: cannot build the OTLP exporter: {e}"))?;
        opentelemetry_sdk::trace::SpanExporter::set_resource(&mut exporter, &resource);
        let (queue, exporting) = export::start(exporter)?;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(queue)
            .with_sampler(sampler(settings.sampling))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("entra-proxy");
        // Without a query: it could carry a collector's token.
        let shown = format!(
            "{}{}",
            settings.endpoint.origin().ascii_serialization(),
            settings.endpoint.path()
        );
        tracing::info!(endpoint = %shown, service = %settings.service_name, "traces: exporting over OTLP/HTTP");
        Ok(Tracing {
            live: Some(Arc::new(Live {
                tracer,
                _provider: provider,
                exporting,
                endpoint: shown,
            })),
        })
    }

    pub fn is_on(&self) -> bool {
        self.live.is_some()
    }

    /// The server span of one proxied request, continuing the caller's `traceparent`.
    pub fn request(&self, headers: &HeaderMap, method: &Method, path: &str) -> RequestSpan {
        let Some(live) = &self.live else {
            return RequestSpan(None);
        };
        let parent = opentelemetry_sdk::propagation::TraceContextPropagator::new()
            .extract(&opentelemetry_http::HeaderExtractor(headers));
        let span = live
            .tracer
            .span_builder(method.as_str().to_string())
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", method.as_str().to_string()),
                KeyValue::new("url.path", path.to_string()),
                KeyValue::new("gen_ai.provider.name", PROVIDER_NAME),
            ])
            .start_with_context(&live.tracer, &parent);
        let tracestate = headers
            .get("tracestate")
            .filter(|_| parent.has_active_span())
            .cloned();
        RequestSpan(Some(Arc::new(Request {
            cx: parent.with_span(span),
            tracer: live.tracer.clone(),
            tracestate,
        })))
    }

    /// Sends the spans queued so far, waiting at most `timeout` (at shutdown).
    pub async fn flush(&self, timeout: Duration) {
        if let Some(live) = &self.live {
            live.exporting.flush(timeout).await;
        }
    }
}

fn sampler(s: Sampling) -> Sampler {
    let root = |r: Root| match r {
        Root::Always(true) => Sampler::AlwaysOn,
        Root::Always(false) => Sampler::AlwaysOff,
        Root::Ratio(r) => Sampler::TraceIdRatioBased(r),
    };
    match s {
        Sampling::Always(on) => root(Root::Always(on)),
        Sampling::Ratio(r) => Sampler::TraceIdRatioBased(r),
        Sampling::ParentBased(r) => Sampler::ParentBased(Box::new(root(r))),
    }
}

/// One request's server span (nothing when traces are off). Clones share the span, which ends
/// when the last clone is dropped: when the answer's head is sent, or when a metered answer's
/// body ends.
#[derive(Clone, Default)]
pub struct RequestSpan(Option<Arc<Request>>);

struct Request {
    cx: Context,
    tracer: SdkTracer,
    tracestate: Option<HeaderValue>,
}

impl std::fmt::Debug for RequestSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestSpan")
    }
}

/// The GenAI operation of an API path (`gen_ai.operation.name`), when it is one.
pub(crate) fn operation_of(path: &str) -> Option<&'static str> {
    let path = path.trim_end_matches('/');
    [
        ("/chat/completions", "chat"),
        ("/completions", "text_completion"),
        ("/embeddings", "embeddings"),
        ("/responses", "responses"),
        ("/images/generations", "generate_content"),
        ("/audio/transcriptions", "transcriptions"),
        ("/audio/translations", "translations"),
        ("/audio/speech", "speech"),
    ]
    .into_iter()
    .find(|(suffix, _)| path.ends_with(suffix))
    .map(|(_, op)| op)
}

impl RequestSpan {
    /// No span (for paths that trace nothing of their own).
    pub fn none() -> &'static RequestSpan {
        static NONE: RequestSpan = RequestSpan(None);
        &NONE
    }

    fn with(&self, f: impl FnOnce(&opentelemetry::trace::SpanRef<'_>)) {
        if let Some(r) = &self.0 {
            let span = r.cx.span();
            if span.is_recording() {
                f(&span);
            }
        }
    }

    /// Whether the span records (traces on, and this trace sampled).
    pub fn is_recording(&self) -> bool {
        self.0.as_ref().is_some_and(|r| r.cx.span().is_recording())
    }

    /// Who is calling: the caller's label (never a credential), and an Entra caller's object
    /// and app ids.
    pub fn caller(&self, caller: &crate::inbound::Caller) {
        self.with(|s| {
            s.set_attribute(KeyValue::new("entra_proxy.key", caller.label.to_string()));
            let (oid, azp) = caller.ids();
            if let Some(oid) = oid {
                s.set_attribute(KeyValue::new("entra_proxy.oid", oid.to_string()));
            }
            if let Some(azp) = azp {
                s.set_attribute(KeyValue::new("entra_proxy.azp", azp.to_string()));
            }
        });
    }

    /// The operation and the model (or deployment) the client asked for; names the span
    /// `{operation} {model}` as the GenAI conventions do.
    pub fn route(&self, path: &str, model: Option<&str>) {
        self.with(|s| {
            let op = operation_of(path);
            if let Some(op) = op {
                s.set_attribute(KeyValue::new("gen_ai.operation.name", op));
            }
            if let Some(m) = model {
                s.set_attribute(KeyValue::new("gen_ai.request.model", m.to_string()));
            }
            if let (Some(op), Some(m)) = (op, model) {
                s.update_name(format!("{op} {m}"));
            }
        });
    }

    /// The request id the client and the logs see.
    pub fn request_id(&self, id: &str) {
        self.with(|s| s.set_attribute(KeyValue::new("entra_proxy.request_id", id.to_string())));
    }

    /// The status the client got; 5xx marks the span as failed.
    pub fn status(&self, status: u16) {
        self.with(|s| {
            s.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if status >= 500 {
                s.set_status(Status::error(status.to_string()));
            }
        });
    }

    /// The proxy's own failure: its error code (never its message).
    pub fn failed(&self, code: &'static str, status: u16) {
        self.with(|s| {
            s.set_attribute(KeyValue::new("error.type", code));
            s.set_attribute(KeyValue::new("entra_proxy.error", code));
            s.set_status(Status::error(format!("{status} {code}")));
        });
    }

    /// The diagnosis of an Azure error answer (e.g. `audience-mismatch`).
    pub fn diagnosis(&self, code: &str) {
        self.with(|s| {
            s.set_attribute(KeyValue::new("entra_proxy.diagnosis", code.to_string()));
            s.set_attribute(KeyValue::new("error.type", code.to_string()));
        });
    }

    /// The answer's token usage, as Azure reported it (or estimated, when it did not).
    pub fn usage(&self, input: u64, output: u64, estimated: bool) {
        self.with(|s| {
            s.set_attribute(KeyValue::new("gen_ai.usage.input_tokens", input as i64));
            s.set_attribute(KeyValue::new("gen_ai.usage.output_tokens", output as i64));
            s.set_attribute(KeyValue::new("entra_proxy.usage.estimated", estimated));
        });
    }

    /// The model Azure says answered.
    pub fn response_model(&self, model: &str) {
        self.with(|s| s.set_attribute(KeyValue::new("gen_ai.response.model", model.to_string())));
    }

    fn child(&self, name: String, kind: SpanKind, attributes: Vec<KeyValue>) -> ChildSpan {
        let Some(r) = &self.0 else {
            return ChildSpan(None);
        };
        let span = r
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(&r.tracer, &r.cx);
        ChildSpan(Some(Box::new(Child {
            span,
            tracestate: r.tracestate.clone(),
        })))
    }

    /// The span of the token lookup for `scope`.
    pub fn token_lookup(&self, scope: &str) -> ChildSpan {
        if self.0.is_none() {
            return ChildSpan(None);
        }
        self.child(
            "token lookup".into(),
            SpanKind::Internal,
            vec![KeyValue::new("entra_proxy.token.scope", scope.to_string())],
        )
    }

    /// The span of upstream attempt number `attempt` (1-based) to `backend`.
    pub fn attempt(
        &self,
        attempt: u32,
        backend: &str,
        host: &str,
        deployment: Option<&str>,
    ) -> ChildSpan {
        if self.0.is_none() {
            return ChildSpan(None);
        }
        let mut attributes = vec![
            KeyValue::new("entra_proxy.backend", backend.to_string()),
            KeyValue::new("entra_proxy.attempt", i64::from(attempt)),
            KeyValue::new("server.address", host.to_string()),
            KeyValue::new("gen_ai.provider.name", PROVIDER_NAME),
        ];
        if let Some(d) = deployment {
            attributes.push(KeyValue::new("entra_proxy.deployment", d.to_string()));
        }
        self.child(format!("attempt {backend}"), SpanKind::Client, attributes)
    }
}

/// A token-lookup or attempt span; ends when dropped.
#[derive(Default)]
pub struct ChildSpan(Option<Box<Child>>);

struct Child {
    span: opentelemetry_sdk::trace::Span,
    tracestate: Option<HeaderValue>,
}

impl std::fmt::Debug for ChildSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChildSpan")
    }
}

impl ChildSpan {
    fn set(&mut self, kv: impl FnOnce() -> KeyValue) {
        if let Some(c) = &mut self.0
            && c.span.is_recording()
        {
            c.span.set_attribute(kv());
        }
    }

    /// How the token was had: `cache` (a valid cached token), `acquired` (the request waited on
    /// the identity provider), `passthrough` (the caller's own token); and the credential kind.
    pub fn token(&mut self, source: &'static str, credential: impl FnOnce() -> String) {
        self.set(|| KeyValue::new("entra_proxy.token.source", source));
        self.set(|| KeyValue::new("entra_proxy.credential.kind", credential()));
    }

    /// The attempt's outcome: Azure's status.
    pub fn status(&mut self, status: u16) {
        self.set(|| KeyValue::new("http.response.status_code", i64::from(status)));
        if status >= 500
            && let Some(c) = &mut self.0
        {
            c.span.set_status(Status::error(status.to_string()));
        }
    }

    /// Why the next attempt follows this one (`overloaded`, `connect_failed`, …).
    pub fn retry(&mut self, reason: &'static str) {
        self.set(|| KeyValue::new("entra_proxy.retry.reason", reason));
    }

    /// The backend was put in cooldown for this long after this attempt.
    pub fn cooldown(&mut self, wait: Duration) {
        self.set(|| KeyValue::new("entra_proxy.cooldown_ms", wait.as_millis() as i64));
    }

    /// The attempt failed without an answer (or could not start): the error's code.
    pub fn failed(&mut self, code: &'static str) {
        self.set(|| KeyValue::new("error.type", code));
        if let Some(c) = &mut self.0 {
            c.span.set_status(Status::error(code));
        }
    }

    /// The `traceparent` (and the caller's `tracestate`) that make Azure's side of this
    /// attempt a child of its span.
    pub fn propagate(&self, headers: &mut HeaderMap) {
        let Some(c) = &self.0 else {
            return;
        };
        let sc = c.span.span_context();
        let value = format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        );
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert("traceparent", v);
        }
        match &c.tracestate {
            Some(state) => {
                headers.insert("tracestate", state.clone());
            }
            None => {
                headers.remove("tracestate");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_read_from_the_path() {
        assert_eq!(operation_of("/v1/chat/completions"), Some("chat"));
        assert_eq!(
            operation_of("/openai/deployments/gpt-4o/chat/completions"),
            Some("chat")
        );
        assert_eq!(
            operation_of("/openai/deployments/x/completions"),
            Some("text_completion")
        );
        assert_eq!(operation_of("/openai/v1/embeddings"), Some("embeddings"));
        assert_eq!(operation_of("/speech/recognize"), None);
    }

    #[test]
    fn off_records_nothing_and_builds_nothing() {
        let t = Tracing::off();
        assert!(!t.is_on());
        let span = t.request(&HeaderMap::new(), &Method::POST, "/v1/chat/completions");
        assert!(span.0.is_none());
        let attempt = span.attempt(1, "b", "h", None);
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static("x"));
        attempt.propagate(&mut headers);
        assert_eq!(headers["traceparent"], "x", "passes through untouched");
    }
}
