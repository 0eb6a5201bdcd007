//! The process's metrics recorder: Prometheus's, wrapped so that the counters the status page
//! charts ([`super::history`]) add to their per-minute series as they count; and the `# HELP`
//! text of every metric the proxy emits.

use super::history::{self, Field, Kind, Series};
use metrics::{Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};
use metrics_exporter_prometheus::PrometheusRecorder;
use std::sync::Arc;

/// Every metric the proxy emits and its `# HELP` text. A test holds this list to every metric
/// name in the source.
pub(crate) const DESCRIPTIONS: &[(&str, &str)] = &[
    (
        "entra_proxy_requests_total",
        "Proxied requests answered, by backend, model (none when the request named no model, unconfigured for a model the config does not know) and status.",
    ),
    (
        "entra_proxy_key_requests_total",
        "Requests by caller (key:NAME, legacy-key:NAME, entra, app, anonymous) and status, the proxy's own refusals of a known caller included.",
    ),
    (
        "entra_proxy_rejected_requests_total",
        "Requests the proxy answered itself with an error, by the error code of the answer's body.",
    ),
    (
        "entra_proxy_upstream_seconds",
        "Seconds from sending a request to Azure to Azure's answer head, by backend.",
    ),
    (
        "entra_proxy_retries_total",
        "Attempts that followed an earlier attempt of the same request, by the backend tried and why.",
    ),
    (
        "entra_proxy_failovers_total",
        "Retries that moved to another backend than the attempt before, by the backend moved to.",
    ),
    (
        "entra_proxy_cooldowns_total",
        "Times a backend was skipped because Azure asked to wait, by backend.",
    ),
    (
        "entra_proxy_backends_cooling_down",
        "Backends cooling down now after Azure asked to wait.",
    ),
    (
        "entra_proxy_token_acquisitions_total",
        "Token requests to Entra or the managed-identity endpoint, by scope, kind and result.",
    ),
    (
        "entra_proxy_obo_exchanges_total",
        "On-behalf-of exchanges at Entra of a user's token for the user's own token, by result (ok, consent_required, interaction_required, assertion_rejected, client_rejected, unavailable).",
    ),
    (
        "entra_proxy_obo_cached_users",
        "Users' delegated tokens cached now (bounded by [on_behalf_of] max_users).",
    ),
    (
        "entra_proxy_token_expiry_seconds",
        "Seconds until the proxy's cached token for a scope expires.",
    ),
    (
        "entra_proxy_token_valid",
        "1 while the proxy holds a valid token for the scope, else 0.",
    ),
    (
        "entra_proxy_inflight_streams",
        "Answers on their way to clients now.",
    ),
    (
        "entra_proxy_open_connections",
        "Open client connections, by serving thread.",
    ),
    ("entra_proxy_open_websockets", "WebSockets open now."),
    (
        "entra_proxy_tokens_total",
        "Tokens used, by caller, model, deployment, backend and kind (prompt, completion, total).",
    ),
    (
        "entra_proxy_token_quota_remaining",
        "What is left of each key's token_quota this period.",
    ),
    (
        "entra_proxy_usage_estimated_total",
        "Answers whose token usage had to be estimated, by why.",
    ),
    (
        "entra_proxy_limits_store_errors_total",
        "Failed calls to the Redis limits store.",
    ),
    (
        "entra_proxy_limits_settlements_dropped_total",
        "Settlements of reservations never sent to the Redis limits store (queue full, or Redis away longer than the retry window).",
    ),
    (
        "entra_proxy_spend_total",
        "Money spent at the configured prices, in micro-units (millionths) of the prices' currency, by caller and model (models with a price).",
    ),
    (
        "entra_proxy_config_reloads_total",
        "Config reloads applied.",
    ),
    (
        "entra_proxy_config_reload_failures_total",
        "Config reloads refused (the old config kept serving).",
    ),
    (
        "entra_proxy_config_info",
        "1 for the config serving now, labelled with its hash.",
    ),
    (
        "entra_proxy_config_loaded_timestamp_seconds",
        "Unix time the serving config was loaded.",
    ),
    (
        "entra_proxy_trace_spans_exported_total",
        "Spans sent to the trace collector.",
    ),
    (
        "entra_proxy_trace_spans_dropped_total",
        "Spans lost, by why (queue_full, export_failed).",
    ),
];

/// The `# HELP` text of `name`.
pub(crate) fn help_of(name: &str) -> Option<&'static str> {
    DESCRIPTIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, help)| *help)
}

/// Hands every description to the installed recorder.
pub(super) fn describe() {
    // The fixed-bucket histograms render their own `# HELP` (`super::histogram`); describing
    // them here too is harmless: the recorder renders only what it registered.
    for (name, help) in DESCRIPTIONS {
        if name.ends_with("_total") {
            metrics::describe_counter!(*name, *help);
        } else {
            metrics::describe_gauge!(*name, *help);
        }
    }
}

/// Prometheus's recorder, handing out counters that also add to the status page's history.
pub(super) struct Counting {
    pub(super) inner: PrometheusRecorder,
}

/// A counter that adds to Prometheus's and to history series.
struct Tee {
    counter: Counter,
    targets: Vec<(Arc<Series>, Field)>,
}

impl CounterFn for Tee {
    fn increment(&self, value: u64) {
        self.counter.increment(value);
        let minute = history::minute_now();
        for (series, field) in &self.targets {
            series.add(*field, value, minute);
        }
    }

    fn absolute(&self, value: u64) {
        self.counter.absolute(value);
    }
}

fn label<'a>(key: &'a Key, name: &str) -> Option<&'a str> {
    key.labels().find(|l| l.key() == name).map(|l| l.value())
}

/// The history series a counter adds to: requests (and errors) per caller and per backend,
/// tokens (`kind="total"`) per both.
fn targets(key: &Key) -> Vec<(Arc<Series>, Field)> {
    let h = history::history();
    let status_error = || label(key, "status").and_then(|s| s.parse::<u16>().ok()) >= Some(400);
    let requests = |kind: Kind, label: Option<&str>| {
        let Some(series) = label.and_then(|l| h.series(kind, l)) else {
            return Vec::new();
        };
        let mut out = vec![(series.clone(), Field::Requests)];
        if status_error() {
            out.push((series, Field::Errors));
        }
        out
    };
    match key.name() {
        "entra_proxy_key_requests_total" => requests(Kind::Caller, label(key, "key")),
        "entra_proxy_requests_total" => requests(Kind::Backend, label(key, "backend")),
        "entra_proxy_tokens_total" if label(key, "kind") == Some("total") => [
            label(key, "key").and_then(|l| h.series(Kind::Caller, l)),
            label(key, "backend").and_then(|l| h.series(Kind::Backend, l)),
        ]
        .into_iter()
        .flatten()
        .map(|s| (s, Field::Tokens))
        .collect(),
        _ => Vec::new(),
    }
}

impl metrics::Recorder for Counting {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        let counter = self.inner.register_counter(key, metadata);
        let targets = targets(key);
        if targets.is_empty() {
            return counter;
        }
        Counter::from_arc(Arc::new(Tee { counter, targets }))
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.inner.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.inner.register_histogram(key, metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric name the source emits has a description, and every description a metric.
    #[test]
    fn every_metric_in_the_source_is_described() {
        fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.ends_with("telemetry/recorder.rs")
                {
                    out.push(std::fs::read_to_string(&path).unwrap());
                }
            }
        }
        let mut sources = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut sources,
        );
        let mut used = std::collections::BTreeSet::new();
        for text in &sources {
            for (at, _) in text.match_indices("\"entra_proxy_") {
                let rest = &text[at + 1..];
                let end = rest.find('"').unwrap();
                let name = &rest[..end];
                if name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                    used.insert(name.to_string());
                }
            }
        }
        let described: std::collections::BTreeSet<String> =
            DESCRIPTIONS.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(used, described);
        for (name, help) in DESCRIPTIONS {
            assert!(help.ends_with('.') && !help.contains('\n'), "{name}");
        }
    }
}
