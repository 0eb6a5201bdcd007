//! Per-backend state shared by requests: cooldowns set by Azure's `retry-after`, and the
//! concurrency limit. Lock-free on the hot path (atomics and a semaphore).

use crate::config::Backend;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Longest cooldown honored from a `retry-after` header; Azure asks for seconds, not hours.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(300);

#[derive(Debug)]
struct One {
    name: String,
    /// Milliseconds since `epoch` until which the backend is skipped; 0 = not cooling.
    cooling_until_ms: AtomicU64,
    limit: Option<(Arc<Semaphore>, usize, Duration)>,
}

/// Health of every backend, indexed like [`crate::config::Config::backends`].
#[derive(Debug)]
pub struct BackendHealth {
    epoch: Instant,
    backends: Vec<One>,
}

/// No free slot on a backend within its queue time.
#[derive(Debug, Clone)]
pub struct Busy {
    pub backend: String,
    pub max_concurrent: usize,
    pub waited: Duration,
}

impl BackendHealth {
    pub fn new(backends: &[Backend]) -> BackendHealth {
        BackendHealth {
            epoch: Instant::now(),
            backends: backends
                .iter()
                .map(|b| One {
                    name: b.name.clone(),
                    cooling_until_ms: AtomicU64::new(0),
                    limit: b
                        .max_concurrent
                        .map(|n| (Arc::new(Semaphore::new(n)), n, b.queue_timeout)),
                })
                .collect(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// How much longer the backend is cooling down, if it is.
    pub fn cooling(&self, backend: usize) -> Option<Duration> {
        let until = self
            .backends
            .get(backend)?
            .cooling_until_ms
            .load(Ordering::Relaxed);
        let now = self.now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }

    /// Skips the backend for `wait` (extends, never shortens, a running cooldown).
    pub fn cool_down(&self, backend: usize, wait: Duration) {
        if let Some(b) = self.backends.get(backend) {
            let until = self.now_ms() + wait.min(MAX_COOLDOWN).as_millis() as u64;
            b.cooling_until_ms.fetch_max(until, Ordering::Relaxed);
            metrics::counter!("entra_proxy_cooldowns_total", "backend" => b.name.clone())
                .increment(1);
        }
    }

    /// Number of backends cooling down now.
    pub fn cooling_count(&self) -> usize {
        (0..self.backends.len())
            .filter(|i| self.cooling(*i).is_some())
            .count()
    }

    /// A slot on the backend, waiting up to its queue time. `None` when unlimited.
    pub async fn admit(&self, backend: usize) -> Result<Option<OwnedSemaphorePermit>, Busy> {
        let Some(b) = self.backends.get(backend) else {
            return Ok(None);
        };
        let Some((sem, max, queue)) = &b.limit else {
            return Ok(None);
        };
        let started = Instant::now();
        match tokio::time::timeout(*queue, sem.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => Err(Busy {
                backend: b.name.clone(),
                max_concurrent: *max,
                waited: started.elapsed(),
            }),
        }
    }
}

/// The wait Azure asked for: `retry-after-ms`, else `retry-after` in seconds.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let read = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = read("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    read("retry-after")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> BackendHealth {
        let c = crate::config::Config::parse(
            "[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\nmax_concurrent=1\nqueue_timeout_secs=0.05",
            "t",
            &|_| None,
        )
        .unwrap();
        BackendHealth::new(&c.backends)
    }

    #[test]
    fn cooldowns_expire_and_only_grow() {
        let h = health();
        assert!(h.cooling(0).is_none());
        h.cool_down(0, Duration::from_secs(10));
        h.cool_down(0, Duration::from_secs(1));
        assert!(h.cooling(0).unwrap() > Duration::from_secs(5));
        h.cool_down(0, Duration::from_secs(100_000));
        assert!(h.cooling(0).unwrap() <= MAX_COOLDOWN);
    }

    #[tokio::test]
    async fn a_full_backend_answers_busy_after_its_queue_time() {
        let h = health();
        let first = h.admit(0).await.unwrap();
        assert!(first.is_some());
        let busy = h.admit(0).await.unwrap_err();
        assert_eq!(busy.max_concurrent, 1);
        drop(first);
        assert!(h.admit(0).await.unwrap().is_some());
    }

    #[test]
    fn retry_after_prefers_milliseconds() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "6".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(6)));
        h.insert("retry-after-ms", "1500".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        h.insert("retry-after-ms", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(6)));
    }
}
