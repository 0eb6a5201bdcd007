//! The Prometheus recorder behind `GET /metrics` (no HTTP listener of its own, every metric
//! described: [`recorder`]), the bounded memory of recent traffic behind `GET /status`
//! ([`recent`], and the charts' last minutes: [`history`]), and OpenTelemetry traces
//! ([`trace`]).

pub(crate) mod histogram;
pub(crate) mod history;
pub(crate) mod recent;
mod recorder;
pub(crate) mod trace;

pub(crate) use recorder::help_of;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Renders the process's metrics. One recorder per process, shared by every proxy in it.
#[derive(Clone)]
pub struct Metrics {
    handle: Option<PrometheusHandle>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Installs the recorder once per process (later calls share it), with its upkeep on a
    /// timer: whatever the recorder keeps between scrapes is folded away every
    /// [`UPKEEP_EVERY`], so a proxy nobody scrapes holds no more than a scraped one.
    pub fn install() -> Metrics {
        let handle = HANDLE.get_or_init(|| {
            let inner = PrometheusBuilder::new().build_recorder();
            let handle = inner.handle();
            if let Err(e) = metrics::set_global_recorder(recorder::Counting { inner }) {
                tracing::warn!(error = %e, "metrics recorder not installed");
                return None;
            }
            recorder::describe();
            // Every refusal code from the start, at 0, so a rate over it has a beginning.
            let _ = rejected_counters();
            let upkeep = handle.clone();
            let started = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = started {
                tracing::warn!(error = %e, "metrics upkeep thread not started");
            }
            Some(handle)
        });
        Metrics {
            handle: handle.clone(),
        }
    }

    /// The Prometheus text: the recorder's counters and gauges, then the histograms.
    pub fn render(&self) -> String {
        let mut out = self
            .handle
            .as_ref()
            .map(PrometheusHandle::render)
            .unwrap_or_default();
        histogram::render(&mut out);
        out
    }
}

/// `entra_proxy_rejected_requests_total{code}`, one handle per code of [`crate::error::CODES`]
/// (registered once the recorder is installed).
fn rejected_counters() -> &'static [(&'static str, metrics::Counter)] {
    static COUNTERS: OnceLock<Vec<(&'static str, metrics::Counter)>> = OnceLock::new();
    COUNTERS.get_or_init(|| {
        crate::error::CODES
            .iter()
            .map(|code| {
                let counter =
                    metrics::counter!("entra_proxy_rejected_requests_total", "code" => *code);
                (*code, counter)
            })
            .collect()
    })
}

/// Counts one request the proxy answered itself with the error `code`.
pub(crate) fn count_rejected(code: &str) {
    if let Some((_, counter)) = rejected_counters().iter().find(|(c, _)| *c == code) {
        counter.increment(1);
    }
}

/// The one spelling of "the request named no model" (and no deployment) in metric labels and
/// access lines.
pub(crate) const NO_MODEL: &str = "none";

/// How often the recorder's upkeep runs.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// One backend's metric handles, registered up front so the hot path neither builds label sets
/// nor looks up the registry.
#[derive(Debug)]
pub struct BackendMetrics {
    upstream_seconds: std::sync::Arc<histogram::Histogram>,
    /// `entra_proxy_retries_total{backend, reason}`, by [`RetryReason`].
    retries: [metrics::Counter; RetryReason::ALL.len()],
    /// `entra_proxy_failovers_total{to}`.
    failovers: metrics::Counter,
}

/// Why an attempt was followed by another: the `reason` of `entra_proxy_retries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// No answer head in time, with `upstream.replay_after_timeout`.
    Timeout,
    /// No connection could be made.
    ConnectFailed,
    /// Azure closed a kept-alive connection as the request was sent on it.
    StaleConnection,
    /// A new connection was reset before any answer; the request is safe to repeat.
    Reset,
    /// Azure refused the cached token; sent again with a fresh one.
    TokenRefused,
    /// A 429 or 5xx.
    Overloaded,
}

impl RetryReason {
    pub const ALL: [RetryReason; 6] = [
        RetryReason::Timeout,
        RetryReason::ConnectFailed,
        RetryReason::StaleConnection,
        RetryReason::Reset,
        RetryReason::TokenRefused,
        RetryReason::Overloaded,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RetryReason::Timeout => "timeout",
            RetryReason::ConnectFailed => "connect_failed",
            RetryReason::StaleConnection => "stale_connection",
            RetryReason::Reset => "reset",
            RetryReason::TokenRefused => "token_refused",
            RetryReason::Overloaded => "overloaded",
        }
    }
}

impl BackendMetrics {
    /// Call after [`Metrics::install`], so the handles reach the recorder.
    pub fn new(backend: &str) -> BackendMetrics {
        BackendMetrics {
            upstream_seconds: histogram::Histogram::register(
                "entra_proxy_upstream_seconds",
                &[("backend", backend)],
            ),
            retries: RetryReason::ALL.map(|r| {
                metrics::counter!("entra_proxy_retries_total", "backend" => backend.to_string(), "reason" => r.name())
            }),
            failovers: metrics::counter!("entra_proxy_failovers_total", "to" => backend.to_string()),
        }
    }

    /// Seconds from sending to Azure's answer head.
    pub fn upstream_seconds(&self, seconds: f64) {
        self.upstream_seconds.record(seconds);
    }

    /// An attempt on this backend that follows an earlier one of the same request, for
    /// `reason`; a failover too when the earlier one went to another backend.
    pub fn retry(&self, reason: RetryReason, failover: bool) {
        let i = RetryReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.retries[i].increment(1);
        if failover {
            self.failovers.increment(1);
        }
    }
}

/// The per-request metrics that are not one backend's: requests by (backend, model, status)
/// (registered on first use, remembered per thread) and in-flight response streams.
#[derive(Debug)]
pub struct RequestMetrics {
    /// Tells apart the states of several proxies in one process (tests) in the per-thread memo.
    id: u64,
    /// Configured model names: the only model labels, so clients cannot grow the label set.
    models: Vec<String>,
    inflight_streams: metrics::Gauge,
}

/// The model label of a request: bounded by the config, whatever clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ModelLabel {
    /// The request named no model.
    None,
    /// A model the config does not know.
    Unconfigured,
    /// Configured model number `n`.
    Configured(usize),
}

impl RequestMetrics {
    /// Call after [`Metrics::install`], so the handles reach the recorder.
    pub fn new(models: Vec<String>) -> RequestMetrics {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        RequestMetrics {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            models,
            inflight_streams: metrics::gauge!("entra_proxy_inflight_streams"),
        }
    }

    /// The gauge of response bodies on their way to clients.
    pub fn inflight_streams(&self) -> metrics::Gauge {
        self.inflight_streams.clone()
    }

    /// One answered request, from the backend at position `backend` named `backend_name`.
    pub fn request(&self, backend: usize, backend_name: &str, model: Option<&str>, status: u16) {
        use crate::fast_hash::FastMap;
        use std::cell::RefCell;
        thread_local! {
            static COUNTERS: RefCell<FastMap<(u64, usize, ModelLabel, u16), metrics::Counter>> =
                RefCell::new(FastMap::default());
        }
        let model = match model {
            None => ModelLabel::None,
            Some(m) => self
                .models
                .iter()
                .position(|n| n == m)
                .map_or(ModelLabel::Unconfigured, ModelLabel::Configured),
        };
        COUNTERS.with(|c| {
            c.borrow_mut()
                .entry((self.id, backend, model, status))
                .or_insert_with(|| self.register(backend_name, model, status))
                .increment(1);
        });
    }

    fn register(&self, backend: &str, model: ModelLabel, status: u16) -> metrics::Counter {
        let model = match model {
            ModelLabel::None => NO_MODEL.to_string(),
            ModelLabel::Unconfigured => "unconfigured".to_string(),
            ModelLabel::Configured(i) => self.models.get(i).cloned().unwrap_or_default(),
        };
        metrics::counter!(
            "entra_proxy_requests_total",
            "backend" => backend.to_string(),
            "model" => model,
            "status" => status.to_string()
        )
    }
}
