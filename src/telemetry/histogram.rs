//! Latency histograms that count into fixed buckets as samples arrive: recording is a few
//! atomic adds, allocates nothing and keeps nothing per sample, so memory stays flat however
//! many requests pass and however rarely `/metrics` is scraped. Rendered in the Prometheus text
//! format after the recorder's counters and gauges.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Upper bounds (seconds) of the buckets of every `_seconds` histogram; `+Inf` is implied.
pub(crate) const BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// One labelled histogram: a count per bucket (not cumulative; summed when rendered), the
/// number of samples and their sum in nanoseconds.
#[derive(Debug)]
pub(crate) struct Histogram {
    name: &'static str,
    /// `(label, value)` pairs, rendered in this order.
    labels: Vec<(&'static str, String)>,
    buckets: [AtomicU64; BUCKETS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// Every histogram of the process, registered once per name and label set.
static REGISTRY: Mutex<Vec<Arc<Histogram>>> = Mutex::new(Vec::new());

impl Histogram {
    /// The histogram `name` with `labels`: the one already registered with the same name and
    /// labels (a reload keeps its counts), or a new one.
    pub(crate) fn register(name: &'static str, labels: &[(&'static str, &str)]) -> Arc<Histogram> {
        let mut all = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        let same = |h: &&Arc<Histogram>| {
            h.name == name
                && h.labels.len() == labels.len()
                && h.labels
                    .iter()
                    .zip(labels)
                    .all(|((k, v), (k2, v2))| k == k2 && v == v2)
        };
        if let Some(h) = all.iter().find(same) {
            return h.clone();
        }
        let h = Arc::new(Histogram {
            name,
            labels: labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect(),
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        });
        all.push(h.clone());
        h
    }

    /// Counts one sample of `seconds` (negative and NaN samples count as 0).
    pub(crate) fn record(&self, seconds: f64) {
        let seconds = if seconds.is_nan() {
            0.0
        } else {
            seconds.max(0.0)
        };
        let slot = bucket_of(seconds);
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        // Saturating: `as` clamps an absurd sample to u64::MAX nanoseconds.
        self.sum_nanos
            .fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
    }
}

/// The bucket a sample falls in: the first bound it does not exceed, else `+Inf`.
fn bucket_of(seconds: f64) -> usize {
    BUCKETS
        .iter()
        .position(|le| seconds <= *le)
        .unwrap_or(BUCKETS.len())
}

/// Appends every registered histogram to `out` in the Prometheus text format.
pub(crate) fn render(out: &mut String) {
    let all: Vec<Arc<Histogram>> = REGISTRY
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let mut names: Vec<&'static str> = all.iter().map(|h| h.name).collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        if let Some(help) = super::help_of(name) {
            let _ = writeln!(out, "# HELP {name} {help}");
        }
        let _ = writeln!(out, "# TYPE {name} histogram");
        for h in all.iter().filter(|h| h.name == name) {
            h.render(out);
        }
        out.push('\n');
    }
}

impl Histogram {
    fn render(&self, out: &mut String) {
        let mut labels = String::new();
        for (k, v) in &self.labels {
            let _ = write!(labels, "{k}=\"{}\",", escape(v));
        }
        let mut cumulative = 0u64;
        for (i, le) in BUCKETS.iter().map(Some).chain([None]).enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            match le {
                Some(le) => {
                    let _ = writeln!(
                        out,
                        "{}_bucket{{{labels}le=\"{le}\"}} {cumulative}",
                        self.name
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "{}_bucket{{{labels}le=\"+Inf\"}} {cumulative}",
                        self.name
                    );
                }
            }
        }
        let plain = labels.trim_end_matches(',');
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{}_sum{{{plain}}} {sum}", self.name);
        let _ = writeln!(
            out,
            "{}_count{{{plain}}} {}",
            self.name,
            self.count.load(Ordering::Relaxed)
        );
    }
}

/// A label value as the text format wants it: backslash, quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_land_in_the_first_bucket_they_do_not_exceed() {
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(0.005), 0);
        assert_eq!(bucket_of(0.0051), 1);
        assert_eq!(bucket_of(60.0), BUCKETS.len() - 1);
        assert_eq!(bucket_of(61.0), BUCKETS.len());
        assert_eq!(bucket_of(f64::INFINITY), BUCKETS.len());
    }

    #[test]
    fn renders_cumulative_buckets_sum_and_count_and_registers_once() {
        let h = Histogram::register("test_render_seconds", &[("backend", "a\"b")]);
        let again = Histogram::register("test_render_seconds", &[("backend", "a\"b")]);
        assert!(Arc::ptr_eq(&h, &again));
        h.record(0.003);
        h.record(0.2);
        h.record(100.0);
        h.record(f64::NAN);
        let mut out = String::new();
        render(&mut out);
        let ours: Vec<&str> = out
            .lines()
            .filter(|l| l.contains("test_render_seconds"))
            .collect();
        assert_eq!(ours[0], "# TYPE test_render_seconds histogram");
        assert!(ours.contains(&"test_render_seconds_bucket{backend=\"a\\\"b\",le=\"0.005\"} 2"));
        assert!(ours.contains(&"test_render_seconds_bucket{backend=\"a\\\"b\",le=\"0.25\"} 3"));
        assert!(ours.contains(&"test_render_seconds_bucket{backend=\"a\\\"b\",le=\"60\"} 3"));
        assert!(ours.contains(&"test_render_seconds_bucket{backend=\"a\\\"b\",le=\"+Inf\"} 4"));
        assert!(ours.contains(&"test_render_seconds_count{backend=\"a\\\"b\"} 4"));
        assert!(
            ours.iter()
                .any(|l| l.starts_with("test_render_seconds_sum{backend=\"a\\\"b\"} 100.203")),
            "{ours:?}"
        );
    }
}
