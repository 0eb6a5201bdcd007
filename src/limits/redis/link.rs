//! The store's connections to Redis and the outages they share.
//!
//! Admission goes over a connection of the serving thread's own: a connection's driver runs on
//! the thread that first used it, and a request from another thread would cross threads twice
//! per round trip (to the driver, and its answer back). Settlement batches and scans, which
//! one task sends, share one more connection.
//!
//! However many connections notice an outage, it is logged once, and once more when Redis
//! answers again. A connection that had no call during the outage learns it is over with its
//! first call after it (a connection lost with the old server): that failure is counted, but
//! is no new outage.

use super::super::answer::StoreDown;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

/// After a failed call, calls fail at once for this long, then Redis is tried again.
pub const PAUSE_AFTER_FAILURE_MS: i64 = 500;
/// For this long after Redis is back, a connection's first failure since the outage is taken
/// for the outage's tail on that connection, not a new one.
const TAIL_MS: i64 = 5_000;

/// One connection, and the outage count when a call over it last succeeded.
pub(super) struct Link {
    pub(super) conn: ConnectionManager,
    ok_since: AtomicU64,
}

impl Link {
    fn new(client: &redis::Client, config: &ConnectionManagerConfig) -> redis::RedisResult<Link> {
        Ok(Link {
            conn: ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?,
            ok_since: AtomicU64::new(0),
        })
    }
}

/// Every connection of one store, and its outage state.
pub(super) struct Links {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// Settlement batches and scans.
    pub(super) shared: Arc<Link>,
    /// Alive as long as the store: a thread's connections to a store that is gone are dropped.
    alive: Arc<()>,
    /// Outages noticed so far.
    outages: AtomicU64,
    down: AtomicBool,
    back_at_ms: AtomicI64,
    /// Unix milliseconds before which calls fail without trying.
    paused_until: AtomicI64,
    failures: metrics::Counter,
    /// The URL without its password, for the log.
    shown: String,
}

thread_local! {
    /// This thread's connections, one per store.
    static LOCAL: RefCell<Vec<(Weak<()>, Arc<Link>)>> = const { RefCell::new(Vec::new()) };
}

impl Links {
    pub(super) fn new(
        client: redis::Client,
        config: ConnectionManagerConfig,
        shown: String,
    ) -> redis::RedisResult<Links> {
        Ok(Links {
            shared: Arc::new(Link::new(&client, &config)?),
            client,
            config,
            alive: Arc::new(()),
            outages: AtomicU64::new(0),
            down: AtomicBool::new(false),
            back_at_ms: AtomicI64::new(0),
            paused_until: AtomicI64::new(0),
            failures: metrics::counter!("entra_proxy_limits_store_errors_total"),
            shown,
        })
    }

    /// This thread's connection (made on first use, connecting when first called).
    pub(super) fn local(&self) -> Arc<Link> {
        LOCAL.with(|links| {
            let mut links = links.borrow_mut();
            if let Some((_, link)) = links
                .iter()
                .find(|(alive, _)| std::ptr::eq(alive.as_ptr(), Arc::as_ptr(&self.alive)))
            {
                return link.clone();
            }
            links.retain(|(alive, _)| alive.strong_count() > 0);
            match Link::new(&self.client, &self.config) {
                Ok(link) => {
                    let link = Arc::new(link);
                    links.push((Arc::downgrade(&self.alive), link.clone()));
                    link
                }
                // Not expected (the same client made the shared one): share that one.
                Err(_) => self.shared.clone(),
            }
        })
    }

    /// `Err` while calls are paused after a failure.
    pub(super) fn open(&self) -> Result<(), StoreDown> {
        match unix_ms() < self.paused_until.load(Ordering::Relaxed) {
            true => Err(StoreDown::Paused),
            false => Ok(()),
        }
    }

    /// Notes a call's outcome over `link`: a failure is counted and pauses calls, and the
    /// first of an outage is logged; the first success after one says Redis is back.
    pub(super) fn record(&self, link: &Link, failure: Option<&StoreDown>) {
        let outages = self.outages.load(Ordering::Relaxed);
        let Some(e) = failure else {
            link.ok_since.store(outages, Ordering::Relaxed);
            if self.down.swap(false, Ordering::Relaxed) {
                self.back_at_ms.store(unix_ms(), Ordering::Relaxed);
                tracing::info!(redis = %self.shown, "limits store is back: counting in Redis again");
            }
            return;
        };
        self.failures.increment(1);
        let tail = !self.down.load(Ordering::Relaxed)
            && link.ok_since.load(Ordering::Relaxed) < outages
            && unix_ms() - self.back_at_ms.load(Ordering::Relaxed) < TAIL_MS;
        if tail {
            // This connection's end of the outage just over: it reconnects by itself.
            link.ok_since.store(outages, Ordering::Relaxed);
            return;
        }
        self.paused_until
            .store(unix_ms() + PAUSE_AFTER_FAILURE_MS, Ordering::Relaxed);
        if !self.down.swap(true, Ordering::Relaxed) {
            self.outages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(redis = %self.shown, error = %e, "limits store (limits.redis_url) unavailable: applying limits.on_redis_error until it answers again");
        }
    }
}

/// Unix time in milliseconds.
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_outage_is_one_however_many_connections_notice_it_and_its_tail_is_none() {
        // Nothing connects: lazy connections to a port nobody listens on.
        let client = redis::Client::open("redis://127.0.0.1:1").unwrap();
        let config = ConnectionManagerConfig::new();
        let links =
            Links::new(client.clone(), config.clone(), "redis://127.0.0.1:1".into()).unwrap();
        let (a, b) = (
            Link::new(&client, &config).unwrap(),
            Link::new(&client, &config).unwrap(),
        );
        let failed = StoreDown::Redis("connection refused".into());
        let outages = || links.outages.load(Ordering::Relaxed);
        let down = || links.down.load(Ordering::Relaxed);
        links.record(&a, None);
        links.record(&b, None);
        links.record(&a, Some(&failed));
        links.record(&b, Some(&failed));
        assert_eq!(
            (outages(), down()),
            (1, true),
            "two connections, one outage"
        );
        assert!(links.open().is_err(), "paused after a failure");
        links.paused_until.store(0, Ordering::Relaxed);
        links.record(&a, None);
        assert!(!down(), "back");
        // b had no call since the outage: its first failure is the outage's tail.
        links.record(&b, Some(&failed));
        assert_eq!((outages(), down()), (1, false));
        assert!(links.open().is_ok(), "a tail pauses nothing");
        // Its next failure is a new outage.
        links.record(&b, Some(&failed));
        assert_eq!((outages(), down()), (2, true));
        links.record(&b, None);
        links.record(&a, None);
        links.record(&a, Some(&failed));
        assert_eq!(
            (outages(), down()),
            (3, true),
            "a connection up to date starts one at once"
        );
    }

    #[tokio::test]
    async fn a_thread_keeps_one_connection_per_store_and_drops_those_of_stores_gone() {
        let client = redis::Client::open("redis://127.0.0.1:1").unwrap();
        let config = ConnectionManagerConfig::new();
        let one = Links::new(client.clone(), config.clone(), String::new()).unwrap();
        assert!(Arc::ptr_eq(&one.local(), &one.local()));
        let two = Links::new(client, config, String::new()).unwrap();
        assert!(!Arc::ptr_eq(&one.local(), &two.local()));
        drop(one);
        let _ = two.local();
        let _third = Links::new(
            redis::Client::open("redis://127.0.0.1:1").unwrap(),
            ConnectionManagerConfig::new(),
            String::new(),
        )
        .unwrap()
        .local();
        LOCAL.with(|l| {
            assert_eq!(
                l.borrow().len(),
                2,
                "the first store's connection went with it"
            )
        });
    }
}
