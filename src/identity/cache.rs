//! The token cache: one slot per scope, a valid token always ready, refreshed in the background
//! ahead of expiry, one acquisition at a time, and a failed refresh never discards a valid token.

use super::{AccessToken, IdentityError, TokenSource};
use crate::claims;
use crate::config::Scope;
use arc_swap::ArcSwapOption;
use axum::http::HeaderValue;
use secrecy::ExposeSecret as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Refresh no later than this long before expiry.
pub(crate) const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);
/// A token this close to expiry is not handed out: it could expire in flight. Short-lived
/// tokens use a tenth of their lifetime instead (see [`expiry_margin`]).
pub(crate) const EXPIRY_SAFETY: Duration = Duration::from_secs(10);
/// First retry delay after a failed acquisition; doubles up to [`BACKOFF_CAP`].
pub(crate) const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest wait between acquisition attempts while the identity endpoint is failing.
pub(crate) const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// A token ready to use, with its `Authorization` header value built once.
pub struct CachedToken {
    pub token: AccessToken,
    pub header: HeaderValue,
    pub refresh_at: SystemTime,
    pub claims: Option<claims::Claims>,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedToken")
            .field("expires_at", &self.token.expires_at)
            .field("refresh_at", &self.refresh_at)
            .finish_non_exhaustive()
    }
}

impl CachedToken {
    fn usable(&self, now: SystemTime) -> bool {
        now + expiry_margin(self.token.acquired_at, self.token.expires_at) < self.token.expires_at
    }
}

/// How a token lookup was answered (for its trace span).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A valid token was cached.
    Cached,
    /// The request waited for a token from the identity provider.
    Acquired,
    /// The caller's own token goes upstream (no lookup).
    Passthrough,
}

impl Lookup {
    pub fn name(self) -> &'static str {
        match self {
            Lookup::Cached => "cache",
            Lookup::Acquired => "acquired",
            Lookup::Passthrough => "passthrough",
        }
    }
}

/// What `/readyz` and `/debug/identity` show about a scope. No secrets.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SlotStatus {
    pub scope: String,
    pub credential: String,
    pub has_valid_token: bool,
    pub expires_at: Option<i64>,
    pub refresh_at: Option<i64>,
    pub last_refresh: Option<i64>,
    pub failing_since: Option<i64>,
    pub last_error: Option<String>,
    pub acquisitions: u64,
    pub claims: Option<claims::Claims>,
}

#[derive(Debug, Default)]
struct Health {
    last_refresh: Option<SystemTime>,
    last_error: Option<IdentityError>,
    last_error_at: Option<Instant>,
    failing_since: Option<SystemTime>,
    failures: u32,
    next_attempt: Option<Instant>,
}

#[derive(Debug)]
struct Slot {
    scope: Scope,
    current: ArcSwapOption<CachedToken>,
    refreshing: AtomicBool,
    acquire_lock: tokio::sync::Mutex<()>,
    health: Mutex<Health>,
    acquisitions: AtomicU64,
}

/// Caches tokens of one [`TokenSource`] per scope.
#[derive(Debug, Clone)]
pub struct TokenCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    source: Arc<dyn TokenSource>,
    /// One slot per scope, read without a lock. Scopes come from the config (one per backend
    /// audience), so the map stays small; a new scope copies it once.
    slots: arc_swap::ArcSwap<crate::fast_hash::FastMap<Scope, Arc<Slot>>>,
    /// Serializes the (rare) insertion of a new scope.
    adding: Mutex<()>,
    timeout: Duration,
}

/// When to refresh a token: the earlier of half its lifetime and `REFRESH_BEFORE_EXPIRY`
/// before expiry, but never sooner than a quarter of its lifetime (short-lived tokens would
/// otherwise be refreshed continuously).
pub fn refresh_at(acquired: SystemTime, expires: SystemTime) -> SystemTime {
    let lifetime = expires.duration_since(acquired).unwrap_or_default();
    let half = lifetime / 2;
    let early = lifetime.saturating_sub(REFRESH_BEFORE_EXPIRY);
    let delay = half.min(early).max(lifetime / 4);
    acquired + delay
}

/// How long before expiry a token stops being handed out: `EXPIRY_SAFETY`, or a tenth of the
/// lifetime for tokens so short that the fixed margin would leave them never usable.
pub fn expiry_margin(acquired: SystemTime, expires: SystemTime) -> Duration {
    let lifetime = expires.duration_since(acquired).unwrap_or_default();
    EXPIRY_SAFETY.min(lifetime / 10)
}

fn backoff(failures: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let capped = exp.min(BACKOFF_CAP);
    // Jitter between 50% and 100%, so replicas that failed together do not retry together.
    let mut b = [0u8; 2];
    let r = match aws_lc_rs::rand::fill(&mut b) {
        Ok(()) => u16::from_le_bytes(b),
        Err(_) => u16::MAX,
    };
    capped.mul_f64(0.5 + 0.5 * f64::from(r) / f64::from(u16::MAX))
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl TokenCache {
    pub fn new(source: Arc<dyn TokenSource>, timeout: Duration) -> TokenCache {
        TokenCache {
            inner: Arc::new(Inner {
                source,
                slots: Default::default(),
                adding: Mutex::new(()),
                timeout,
            }),
        }
    }

    pub fn describe(&self) -> String {
        self.inner.source.describe()
    }

    fn slot(&self, scope: &Scope) -> Arc<Slot> {
        if let Some(slot) = self.inner.slots.load().get(scope) {
            return slot.clone();
        }
        let _adding = self
            .inner
            .adding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.inner.slots.load_full();
        if let Some(slot) = current.get(scope) {
            return slot.clone();
        }
        let slot = Arc::new(Slot {
            scope: scope.clone(),
            current: ArcSwapOption::empty(),
            refreshing: AtomicBool::new(false),
            acquire_lock: tokio::sync::Mutex::new(()),
            health: Mutex::new(Health::default()),
            acquisitions: AtomicU64::new(0),
        });
        let mut next = (*current).clone();
        next.insert(scope.clone(), slot.clone());
        self.inner.slots.store(Arc::new(next));
        slot
    }

    /// A valid token for `scope`. Waits on the identity provider only when there is no valid
    /// token at all; otherwise returns at once and refreshes in the background when due.
    pub async fn get(&self, scope: &Scope) -> Result<Arc<CachedToken>, IdentityError> {
        self.lookup(scope).await.map(|(t, _)| t)
    }

    /// [`TokenCache::get`], saying how the token was had: [`Lookup::Acquired`] when the call
    /// waited on the identity provider (its own acquisition or another's).
    pub async fn lookup(&self, scope: &Scope) -> Result<(Arc<CachedToken>, Lookup), IdentityError> {
        let slot = self.slot(scope);
        let now = SystemTime::now();
        if let Some(t) = slot.current.load_full()
            && t.usable(now)
        {
            if now >= t.refresh_at {
                self.spawn_refresh(&slot);
            }
            return Ok((t, Lookup::Cached));
        }
        // Boxed: an acquisition's state is large, and a cached token needs none of it.
        Box::pin(self.acquire_now(&slot))
            .await
            .map(|t| (t, Lookup::Acquired))
    }

    /// Forgets `token` for `scope` if it is still the cached one (Azure rejected it).
    pub async fn invalidate(&self, scope: &Scope, token: &Arc<CachedToken>) {
        let slot = self.slot(scope);
        let current = slot.current.load();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, token)) {
            slot.current.store(None);
        }
    }

    /// Keeps a token for each scope fresh without traffic: acquires at start, then refreshes at
    /// each token's refresh time. Runs until the returned task is aborted.
    pub fn spawn_keeper(
        &self,
        mut scopes: tokio::sync::watch::Receiver<Vec<Scope>>,
    ) -> tokio::task::JoinHandle<()> {
        let cache = self.clone();
        tokio::spawn(async move {
            loop {
                let mut next_wake = Duration::from_secs(60);
                let current = scopes.borrow_and_update().clone();
                for scope in &current {
                    next_wake = next_wake.min(cache.keep(scope).await);
                }
                // Sleep until the next refresh is due, or until a reload changes the scopes.
                let sleep = tokio::time::sleep(next_wake.max(Duration::from_millis(50)));
                tokio::select! {
                    () = sleep => {}
                    changed = scopes.changed() => {
                        if changed.is_err() {
                            // The state is gone: nothing left to keep.
                            return;
                        }
                    }
                }
            }
        })
    }

    /// Refreshes one scope's token if it is due (or missing); returns how long until it is
    /// due next.
    async fn keep(&self, scope: &Scope) -> Duration {
        let slot = self.slot(scope);
        let now = SystemTime::now();
        match slot.current.load_full() {
            Some(t) if t.usable(now) && now < t.refresh_at => {
                t.refresh_at.duration_since(now).unwrap_or_default()
            }
            _ => {
                // Due, expired or missing: refresh (respects backoff, one at a time).
                let _ = self.refresh(&slot).await;
                match slot.current.load_full() {
                    Some(t) if t.usable(SystemTime::now()) => t
                        .refresh_at
                        .duration_since(SystemTime::now())
                        .unwrap_or(Duration::from_secs(1)),
                    _ => self.retry_wait(&slot),
                }
            }
        }
    }

    fn retry_wait(&self, slot: &Slot) -> Duration {
        let health = slot.health.lock().unwrap_or_else(|p| p.into_inner());
        health
            .next_attempt
            .map(|n| n.saturating_duration_since(Instant::now()))
            .unwrap_or(BACKOFF_BASE)
    }

    fn spawn_refresh(&self, slot: &Arc<Slot>) {
        if slot
            .refreshing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let cache = self.clone();
        let slot = slot.clone();
        tokio::spawn(async move {
            let _ = cache.refresh(&slot).await;
            slot.refreshing.store(false, Ordering::Release);
        });
    }

    /// One refresh attempt, unless another is running or the backoff has not elapsed.
    async fn refresh(&self, slot: &Arc<Slot>) -> Result<(), IdentityError> {
        let _guard = slot.acquire_lock.lock().await;
        if let Some(t) = slot.current.load_full()
            && t.usable(SystemTime::now())
            && SystemTime::now() < t.refresh_at
        {
            return Ok(());
        }
        if let Some(err) = self.in_backoff(slot, None) {
            return Err(err);
        }
        self.acquire_locked(slot).await.map(|_| ())
    }

    async fn acquire_now(&self, slot: &Arc<Slot>) -> Result<Arc<CachedToken>, IdentityError> {
        let waiting_since = Instant::now();
        let _guard = slot.acquire_lock.lock().await;
        if let Some(t) = slot.current.load_full()
            && t.usable(SystemTime::now())
        {
            return Ok(t);
        }
        if let Some(err) = self.in_backoff(slot, Some(waiting_since)) {
            return Err(err);
        }
        self.acquire_locked(slot).await
    }

    /// The last error, if a new attempt should not be made yet: during backoff, or when an
    /// attempt failed while this caller was waiting for the lock.
    fn in_backoff(&self, slot: &Slot, waiting_since: Option<Instant>) -> Option<IdentityError> {
        let health = slot.health.lock().unwrap_or_else(|p| p.into_inner());
        let err = health.last_error.clone()?;
        let now = Instant::now();
        let backing_off = health.next_attempt.is_some_and(|n| now < n);
        let failed_while_waiting = matches!(
            (waiting_since, health.last_error_at),
            (Some(w), Some(at)) if at >= w
        );
        (backing_off || failed_while_waiting).then_some(err)
    }

    async fn acquire_locked(&self, slot: &Arc<Slot>) -> Result<Arc<CachedToken>, IdentityError> {
        slot.acquisitions.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result =
            match tokio::time::timeout(self.inner.timeout, self.inner.source.acquire(&slot.scope))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(IdentityError::Timeout {
                    credential: self.inner.source.describe(),
                    secs: self.inner.timeout.as_secs(),
                }),
            };
        let mut health = slot.health.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(token) => {
                let header = bearer_header(&token)?;
                let claims = claims::decode_unverified(token.secret.expose_secret())
                    .ok()
                    .map(|u| u.claims);
                let cached = Arc::new(CachedToken {
                    refresh_at: refresh_at(token.acquired_at, token.expires_at),
                    token,
                    header,
                    claims,
                });
                let refresh = slot.current.load().is_some();
                slot.current.store(Some(cached.clone()));
                metrics::counter!(
                    "entra_proxy_token_acquisitions_total",
                    "scope" => slot.scope.to_string(),
                    "kind" => if refresh { "refresh" } else { "initial" },
                    "result" => "ok"
                )
                .increment(1);
                if health.failing_since.is_some() {
                    tracing::info!(scope = %slot.scope, "token acquisition recovered");
                }
                *health = Health {
                    last_refresh: Some(SystemTime::now()),
                    ..Health::default()
                };
                tracing::info!(
                    scope = %slot.scope,
                    credential = %self.inner.source.describe(),
                    expires_in_secs = cached.token.expires_at.duration_since(SystemTime::now()).map(|d| d.as_secs()).unwrap_or(0),
                    took_ms = started.elapsed().as_millis() as u64,
                    "acquired token"
                );
                Ok(cached)
            }
            Err(err) => {
                metrics::counter!(
                    "entra_proxy_token_acquisitions_total",
                    "scope" => slot.scope.to_string(),
                    "kind" => "any",
                    "result" => "error"
                )
                .increment(1);
                health.failures = health.failures.saturating_add(1);
                health.failing_since.get_or_insert_with(SystemTime::now);
                health.last_error_at = Some(Instant::now());
                let wait = backoff(health.failures);
                health.next_attempt = Some(Instant::now() + wait);
                health.last_error = Some(err.clone());
                let still_valid = slot
                    .current
                    .load()
                    .as_ref()
                    .is_some_and(|t| t.usable(SystemTime::now()));
                tracing::warn!(
                    scope = %slot.scope,
                    error = %err,
                    failures = health.failures,
                    retry_in_ms = wait.as_millis() as u64,
                    serving_cached_token = still_valid,
                    "token acquisition failed"
                );
                Err(err)
            }
        }
    }

    /// When the scope's identity has been failing, if it has.
    pub async fn failing_since(&self, scope: &Scope) -> Option<SystemTime> {
        let slot = self.slot(scope);
        let health = slot.health.lock().unwrap_or_else(|p| p.into_inner());
        health.failing_since
    }

    pub async fn status(&self, scope: &Scope) -> SlotStatus {
        let slot = self.slot(scope);
        let current = slot.current.load_full();
        let now = SystemTime::now();
        let health = slot.health.lock().unwrap_or_else(|p| p.into_inner());
        SlotStatus {
            scope: scope.to_string(),
            credential: self.inner.source.describe(),
            has_valid_token: current.as_ref().is_some_and(|t| t.usable(now)),
            expires_at: current.as_ref().map(|t| unix(t.token.expires_at)),
            refresh_at: current.as_ref().map(|t| unix(t.refresh_at)),
            last_refresh: health.last_refresh.map(unix),
            failing_since: health.failing_since.map(unix),
            last_error: health.last_error.as_ref().map(ToString::to_string),
            acquisitions: slot.acquisitions.load(Ordering::Relaxed),
            claims: current.as_ref().and_then(|t| t.claims.clone()),
        }
    }
}

fn bearer_header(token: &AccessToken) -> Result<HeaderValue, IdentityError> {
    let mut v = HeaderValue::try_from(format!("Bearer {}", token.secret.expose_secret())).map_err(
        |_| IdentityError::Failed {
            credential: "token endpoint".into(),
            reason: "the access token contains characters not allowed in an HTTP header".into(),
            aadsts: None,
        },
    )?;
    v.set_sensitive(true);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use secrecy::SecretString;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn refresh_at_is_half_life_for_long_tokens() {
        let t0 = SystemTime::UNIX_EPOCH;
        let hour = Duration::from_secs(3600);
        assert_eq!(refresh_at(t0, t0 + hour), t0 + hour / 2);
        // 24 h token: half-life is earlier than 5 min before expiry.
        let day = Duration::from_secs(86_400);
        assert_eq!(refresh_at(t0, t0 + day), t0 + day / 2);
    }

    #[test]
    fn refresh_at_is_five_minutes_early_for_medium_tokens() {
        let t0 = SystemTime::UNIX_EPOCH;
        let l = Duration::from_secs(480);
        // half = 240, early = 180, floor = 120 -> 180
        assert_eq!(refresh_at(t0, t0 + l), t0 + Duration::from_secs(180));
    }

    #[test]
    fn refresh_at_never_storms_on_short_tokens() {
        let t0 = SystemTime::UNIX_EPOCH;
        assert_eq!(
            refresh_at(t0, t0 + Duration::from_secs(60)),
            t0 + Duration::from_secs(15)
        );
        assert_eq!(refresh_at(t0, t0), t0);
    }

    #[test]
    fn short_lived_tokens_stay_usable_for_most_of_their_life() {
        let t0 = SystemTime::UNIX_EPOCH;
        assert_eq!(
            expiry_margin(t0, t0 + Duration::from_secs(3600)),
            EXPIRY_SAFETY
        );
        assert_eq!(
            expiry_margin(t0, t0 + Duration::from_secs(8)),
            Duration::from_millis(800)
        );
        let refresh = refresh_at(t0, t0 + Duration::from_secs(8));
        assert!(refresh + Duration::from_millis(800) < t0 + Duration::from_secs(8));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= BACKOFF_BASE && backoff(1) >= BACKOFF_BASE / 2);
        assert!(backoff(3) >= BACKOFF_BASE * 2);
        assert!(backoff(30) <= BACKOFF_CAP);
    }

    #[derive(Debug)]
    struct Counting {
        calls: AtomicUsize,
        lifetime: Duration,
        fail: AtomicBool,
    }

    #[async_trait]
    impl TokenSource for Counting {
        async fn acquire(&self, _scope: &Scope) -> Result<AccessToken, IdentityError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            if self.fail.load(Ordering::SeqCst) {
                return Err(IdentityError::Failed {
                    credential: "test".into(),
                    reason: "down".into(),
                    aadsts: None,
                });
            }
            let now = SystemTime::now();
            Ok(AccessToken {
                secret: SecretString::from(format!("token-{n}")),
                expires_at: now + self.lifetime,
                acquired_at: now,
            })
        }
        fn describe(&self) -> String {
            "test".into()
        }
    }

    fn scope() -> Scope {
        crate::config::Config::parse(
            "[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'",
            "t",
            &|_| None,
        )
        .unwrap()
        .backends[0]
            .scope
            .clone()
    }

    #[tokio::test]
    async fn concurrent_cold_requests_acquire_once() {
        let src = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            lifetime: Duration::from_secs(3600),
            fail: AtomicBool::new(false),
        });
        let cache = TokenCache::new(src.clone(), Duration::from_secs(5));
        let s = scope();
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let c = cache.clone();
                let s = s.clone();
                tokio::spawn(async move { c.get(&s).await.map(|t| t.token.expires_at) })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(src.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn failed_refresh_keeps_serving_the_valid_token() {
        let src = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            lifetime: Duration::from_secs(40),
            fail: AtomicBool::new(false),
        });
        let cache = TokenCache::new(src.clone(), Duration::from_secs(5));
        let s = scope();
        let first = cache.get(&s).await.unwrap();
        src.fail.store(true, Ordering::SeqCst);
        // Force "refresh due" by pretending the refresh time passed.
        let slot = cache.slot(&s);
        slot.current.store(Some(Arc::new(CachedToken {
            token: first.token.clone(),
            header: first.header.clone(),
            refresh_at: SystemTime::now() - Duration::from_secs(1),
            claims: None,
        })));
        let again = cache.get(&s).await.unwrap();
        assert_eq!(again.header, first.header);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            src.calls.load(Ordering::SeqCst),
            2,
            "one background refresh"
        );
        let still = cache.get(&s).await.unwrap();
        assert_eq!(still.header, first.header, "failed refresh kept the token");
        let status = cache.status(&s).await;
        assert!(status.has_valid_token);
        assert!(status.failing_since.is_some());
        assert!(!format!("{status:?}").contains("token-0"));
    }

    #[tokio::test]
    async fn failures_back_off_instead_of_hammering() {
        let src = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            lifetime: Duration::from_secs(3600),
            fail: AtomicBool::new(true),
        });
        let cache = TokenCache::new(src.clone(), Duration::from_secs(5));
        let s = scope();
        for _ in 0..50 {
            assert!(cache.get(&s).await.is_err());
        }
        assert_eq!(src.calls.load(Ordering::SeqCst), 1);
    }
}
