//! The one list of backends: each one's config, health (cooldowns set by Azure's
//! `retry-after`, the concurrency limit) and metric handles, reached by a typed [`BackendId`].
//! Lock-free on the hot path (atomics and a semaphore).

use crate::config::Backend;
use crate::telemetry::BackendMetrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Longest cooldown honored from a `retry-after` header; Azure asks for seconds, not hours.
pub(crate) const MAX_COOLDOWN: Duration = Duration::from_secs(300);

/// A backend of one [`Backends`] list. Only the list makes them, so an id always names one of
/// its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(u32);

/// Every configured backend, in config order.
#[derive(Debug)]
pub struct Backends {
    entries: Vec<BackendEntry>,
}

/// One backend: what the config says, how it is doing, and its metric handles.
#[derive(Debug)]
pub struct BackendEntry {
    pub config: Backend,
    /// Shared with the entry of the same backend in the snapshot before a reload (see
    /// [`Backends::following`]).
    pub health: Arc<Health>,
    pub metrics: BackendMetrics,
}

/// A backend's cooldown and concurrency limit.
#[derive(Debug)]
pub struct Health {
    epoch: Instant,
    /// Milliseconds since `epoch` until which the backend is skipped; 0 = not cooling.
    cooling_until_ms: AtomicU64,
    limit: Option<Limit>,
}

/// At most `max` requests in flight; more wait up to `queue` for a slot.
#[derive(Debug)]
struct Limit {
    slots: Arc<Semaphore>,
    max: usize,
    queue: Duration,
}

/// No free slot on a backend within its queue time.
#[derive(Debug, Clone)]
pub struct Busy {
    pub backend: String,
    pub max_concurrent: usize,
    pub waited: Duration,
}

impl BackendId {
    /// The position in the config's `backends`.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl Backends {
    /// Call after [`crate::telemetry::Metrics::install`], so the handles reach the recorder.
    pub fn new(backends: &[Backend]) -> Backends {
        Backends::following(backends, None)
    }

    /// [`Backends::new`] for a reload: a backend `before` had under the same name and endpoint
    /// keeps its health, so a reload (a key added, say) neither ends a cooldown Azure asked
    /// for nor frees the slots of requests in flight. With its concurrency settings changed it
    /// gets a new limit, and keeps the cooldown.
    pub fn following(backends: &[Backend], before: Option<&Backends>) -> Backends {
        let epoch = Instant::now();
        Backends {
            entries: backends
                .iter()
                .map(|b| {
                    let kept = before.and_then(|old| {
                        old.entries
                            .iter()
                            .find(|o| o.config.name == b.name && o.config.endpoint == b.endpoint)
                    });
                    let health = match kept {
                        Some(old) if old.health.limits_like(b) => old.health.clone(),
                        Some(old) => {
                            let health = Health::new(b, epoch);
                            if let Some(wait) = old.health.cooling() {
                                health.cool_down(wait);
                            }
                            Arc::new(health)
                        }
                        None => Arc::new(Health::new(b, epoch)),
                    };
                    BackendEntry {
                        config: b.clone(),
                        health,
                        metrics: BackendMetrics::new(&b.name),
                    }
                })
                .collect(),
        }
    }

    /// The id of backend number `index` in the config, if there is one.
    pub fn id(&self, index: usize) -> Option<BackendId> {
        (index < self.entries.len())
            .then(|| u32::try_from(index).ok())
            .flatten()
            .map(BackendId)
    }

    /// The backend with this name.
    pub fn by_name(&self, name: &str) -> Option<BackendId> {
        self.ids().find(|&id| self[id].config.name == name)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every id, in config order.
    pub fn ids(&self) -> impl Iterator<Item = BackendId> + '_ {
        (0..self.entries.len()).filter_map(|i| self.id(i))
    }

    /// Every backend, in config order.
    pub fn iter(&self) -> impl Iterator<Item = &BackendEntry> {
        self.entries.iter()
    }

    /// Number of backends cooling down now.
    pub fn cooling_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|b| b.health.cooling().is_some())
            .count()
    }
}

impl std::ops::Index<BackendId> for Backends {
    type Output = BackendEntry;

    fn index(&self, id: BackendId) -> &BackendEntry {
        &self.entries[id.index()]
    }
}

impl BackendEntry {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Skips the backend for `wait` (extends, never shortens, a running cooldown).
    pub fn cool_down(&self, wait: Duration) {
        self.health.cool_down(wait);
        metrics::counter!("entra_proxy_cooldowns_total", "backend" => self.config.name.clone())
            .increment(1);
    }

    /// A slot on the backend, waiting up to its queue time. `None` when unlimited.
    pub async fn admit(&self) -> Result<Option<OwnedSemaphorePermit>, Busy> {
        self.health.admit().await.map_err(|(max, waited)| Busy {
            backend: self.config.name.clone(),
            max_concurrent: max,
            waited,
        })
    }
}

impl Health {
    fn new(b: &Backend, epoch: Instant) -> Health {
        Health {
            epoch,
            cooling_until_ms: AtomicU64::new(0),
            limit: b.max_concurrent.map(|max| Limit {
                slots: Arc::new(Semaphore::new(max)),
                max,
                queue: b.queue_timeout,
            }),
        }
    }

    /// Whether this health's concurrency limit is the one `b` configures.
    fn limits_like(&self, b: &Backend) -> bool {
        match (&self.limit, b.max_concurrent) {
            (None, None) => true,
            (Some(l), Some(max)) => l.max == max && l.queue == b.queue_timeout,
            _ => false,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// How much longer the backend is cooling down, if it is.
    pub fn cooling(&self) -> Option<Duration> {
        let until = self.cooling_until_ms.load(Ordering::Relaxed);
        let now = self.now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }

    /// Skips the backend for `wait` (extends, never shortens, a running cooldown).
    fn cool_down(&self, wait: Duration) {
        let until = self.now_ms() + wait.min(MAX_COOLDOWN).as_millis() as u64;
        self.cooling_until_ms.fetch_max(until, Ordering::Relaxed);
    }

    /// A slot, or (the limit, how long it waited) when none came free in time.
    async fn admit(&self) -> Result<Option<OwnedSemaphorePermit>, (usize, Duration)> {
        let Some(limit) = &self.limit else {
            return Ok(None);
        };
        let started = Instant::now();
        match tokio::time::timeout(limit.queue, limit.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => Err((limit.max, started.elapsed())),
        }
    }
}

/// The wait Azure asked for: `retry-after-ms`, else `retry-after` in seconds.
pub(crate) fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
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

    fn backends() -> Backends {
        let c = crate::config::Config::parse(
            "[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\nmax_concurrent=1\nqueue_timeout_secs=0.05\n[[backends]]\nname='b'\nendpoint='http://127.0.0.1:2'",
            "t",
            &|_| None,
        )
        .unwrap();
        Backends::new(&c.backends)
    }

    #[test]
    fn cooldowns_expire_and_only_grow() {
        let b = backends();
        let a = &b[b.by_name("a").unwrap()];
        assert!(a.health.cooling().is_none());
        a.cool_down(Duration::from_secs(10));
        a.cool_down(Duration::from_secs(1));
        assert!(a.health.cooling().unwrap() > Duration::from_secs(5));
        a.cool_down(Duration::from_secs(100_000));
        assert!(a.health.cooling().unwrap() <= MAX_COOLDOWN);
        assert_eq!(b.cooling_count(), 1);
    }

    #[tokio::test]
    async fn a_full_backend_answers_busy_after_its_queue_time() {
        let b = backends();
        let a = &b[b.ids().next().unwrap()];
        let first = a.admit().await.unwrap();
        assert!(first.is_some());
        let busy = a.admit().await.unwrap_err();
        assert_eq!(busy.max_concurrent, 1);
        assert_eq!(busy.backend, "a");
        drop(first);
        assert!(a.admit().await.unwrap().is_some());
        let unlimited = &b[b.by_name("b").unwrap()];
        assert!(unlimited.admit().await.unwrap().is_none());
    }

    fn parse(text: &str) -> Vec<Backend> {
        crate::config::Config::parse(text, "t", &|_| None)
            .unwrap()
            .backends
    }

    #[tokio::test]
    async fn a_reload_keeps_a_backends_cooldown_and_slots_unless_it_moved() {
        let before = backends();
        before[before.by_name("a").unwrap()].cool_down(Duration::from_secs(30));
        before[before.by_name("b").unwrap()].cool_down(Duration::from_secs(30));
        let held = before[before.by_name("a").unwrap()].admit().await.unwrap();
        // `a` unchanged, `b` moved to another endpoint, `c` new.
        let after = Backends::following(
            &parse(
                "[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\nmax_concurrent=1\nqueue_timeout_secs=0.05\n[[backends]]\nname='b'\nendpoint='http://127.0.0.1:3'\n[[backends]]\nname='c'\nendpoint='http://127.0.0.1:4'",
            ),
            Some(&before),
        );
        let a = &after[after.by_name("a").unwrap()];
        assert!(a.health.cooling().unwrap() > Duration::from_secs(25));
        assert!(
            a.admit().await.is_err(),
            "the slot held before is still held"
        );
        drop(held);
        assert!(a.admit().await.unwrap().is_some());
        assert!(
            after[after.by_name("b").unwrap()]
                .health
                .cooling()
                .is_none()
        );
        assert!(
            after[after.by_name("c").unwrap()]
                .health
                .cooling()
                .is_none()
        );
        // A new limit for `a`: its own slots, the cooldown kept.
        let relimited = Backends::following(
            &parse("[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\nmax_concurrent=2"),
            Some(&after),
        );
        let a = &relimited[relimited.by_name("a").unwrap()];
        assert!(a.health.cooling().unwrap() > Duration::from_secs(25));
        let (one, two) = (a.admit().await.unwrap(), a.admit().await.unwrap());
        assert!(one.is_some() && two.is_some());
    }

    #[test]
    fn ids_exist_only_for_configured_backends() {
        let b = backends();
        assert_eq!(b.len(), 2);
        assert_eq!(b.id(1).map(BackendId::index), Some(1));
        assert!(b.id(2).is_none());
        assert!(b.by_name("c").is_none());
        let names: Vec<&str> = b.ids().map(|id| b[id].name()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn retry_after_prefers_milliseconds() {
        let mut h = http::HeaderMap::new();
        h.insert("retry-after", "6".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(6)));
        h.insert("retry-after-ms", "1500".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        h.insert("retry-after-ms", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(6)));
    }
}
