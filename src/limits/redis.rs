//! The limits store in Redis, shared by every replica: per-second buckets of the 60 s windows
//! in hashes, and one counter per quota period, each updated by one Lua script (atomic: no
//! read-modify-write races between replicas) and each expiring by itself. A call that does not
//! answer within `limits.redis_timeout_ms` fails; the caller then applies
//! `limits.on_redis_error`. After a failure Redis is left alone for [`PAUSE_AFTER_FAILURE_MS`],
//! so an outage costs requests nothing; the outage is logged once and counted.

use super::account::Account;
use super::answer::{Answer, StoreDown};
use super::store::Store;
use super::window::period_bounds;
use super::{BudgetKey, Refusal, Standing, Verdict};
use crate::config::{KeyBudget, RedisConfig};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

/// After a failed call, calls fail at once for this long, then Redis is tried again.
pub const PAUSE_AFTER_FAILURE_MS: i64 = 500;
/// Quota counters outlive their period by this much (seconds), then expire.
const QUOTA_MARGIN_SECS: i64 = 3600;

/// Atomic admission. Window hashes map second → amount; buckets older than the window are
/// deleted. Refuses (1 requests, 2 tokens, 3 quota) before counting; counts the request when
/// admitted. Returns {verdict, retry_after, requests, tokens, quota}.
const ADMIT: &str = r"
local now = tonumber(ARGV[1])
local function window(key)
  local flat = redis.call('HGETALL', key)
  local buckets, used = {}, 0
  for i = 1, #flat, 2 do
    local sec, n = tonumber(flat[i]), tonumber(flat[i + 1])
    if sec <= now - 60 then redis.call('HDEL', key, flat[i])
    else buckets[#buckets + 1] = {sec, n}; used = used + n end
  end
  table.sort(buckets, function(a, b) return a[1] < b[1] end)
  return used, buckets
end
local function retry_after(used, buckets, limit)
  for _, b in ipairs(buckets) do
    used = used - b[2]
    if used < limit then return math.max(1, b[1] + 60 - now) end
  end
  return 1
end
local rpm, tpm, quota = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local r, rb = window(KEYS[1])
local t, tb = window(KEYS[2])
local q = tonumber(redis.call('GET', KEYS[3]) or '0')
if ARGV[5] == 'peek' then return {0, 0, r, t, q} end
if rpm > 0 and r >= rpm then return {1, retry_after(r, rb, rpm), r, t, q} end
if tpm > 0 and t >= tpm then return {2, retry_after(t, tb, tpm), r, t, q} end
if quota > 0 and q >= quota then return {3, 0, r, t, q} end
redis.call('HINCRBY', KEYS[1], now, 1)
redis.call('EXPIRE', KEYS[1], 61)
return {0, 0, r + 1, t, q}
";

/// Atomic charge of tokens to the window and the quota period. Returns the quota used.
const CHARGE: &str = r"
redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], 61)
local q = redis.call('INCRBY', KEYS[2], ARGV[2])
redis.call('EXPIREAT', KEYS[2], ARGV[3])
return q
";

/// Counters in Redis (cheap to clone: a call on its way holds one).
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Connection>,
}

/// The connection and what every call shares.
struct Connection {
    conn: ConnectionManager,
    timeout: Duration,
    /// The URL without its password.
    shown: String,
    /// The URL's password, only to scrub it from error texts.
    password: Option<SecretString>,
    admit: redis::Script,
    charge: redis::Script,
    down: AtomicBool,
    /// Unix milliseconds before which calls fail without trying.
    paused_until: AtomicI64,
    failures: metrics::Counter,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.shown)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// The Redis keys of one budget key; the `{…}` hash tag keeps them in one cluster slot.
fn keys(key: &BudgetKey, budget: &KeyBudget, now: i64) -> ([String; 3], i64) {
    let (start, end) = period_bounds(budget.token_quota_period, now);
    let period = budget.token_quota_period.name();
    let base = key.redis_base();
    (
        [
            format!("{base}:requests"),
            format!("{base}:tokens"),
            format!("{base}:quota:{period}:{start}"),
        ],
        end + QUOTA_MARGIN_SECS,
    )
}

impl RedisStore {
    /// A store that connects on first use (and reconnects by itself): an unreachable Redis at
    /// start-up is no reason not to start.
    pub fn new(config: &RedisConfig) -> Result<RedisStore, String> {
        let client = client(config)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|e| format!("limits.redis_url ({}): {}", config.shown, redis_kind(&e)))?;
        Ok(RedisStore {
            inner: Arc::new(Connection {
                conn,
                timeout: config.timeout,
                shown: config.shown.clone(),
                password: url::Url::parse(config.url.expose_secret())
                    .ok()
                    .and_then(|u| u.password().map(|p| SecretString::from(p.to_string()))),
                admit: redis::Script::new(ADMIT),
                charge: redis::Script::new(CHARGE),
                down: AtomicBool::new(false),
                paused_until: AtomicI64::new(0),
                failures: metrics::counter!("entra_proxy_limits_store_errors_total"),
            }),
        })
    }

    /// The URL without its password.
    pub fn shown(&self) -> &str {
        &self.inner.shown
    }
}

/// One script call per step, each owning what it needs (the answer may be spawned).
impl Store for RedisStore {
    fn admit(&self, account: &Account, now: i64) -> Answer<Verdict> {
        let (this, key, budget) = (self.inner.clone(), account.key().clone(), *account.budget());
        Answer::later(async move { this.admit(&key, &budget, now).await })
    }

    fn charge(&self, account: &Account, now: i64, tokens: u64) -> Answer<u64> {
        let (this, key, budget) = (self.inner.clone(), account.key().clone(), *account.budget());
        Answer::later(async move { this.charge(&key, &budget, now, tokens).await })
    }

    fn peek(&self, account: &Account, now: i64) -> Answer<Standing> {
        let (this, key, budget) = (self.inner.clone(), account.key().clone(), *account.budget());
        Answer::later(async move { this.peek(&key, &budget, now).await })
    }

    fn users(&self, identity: &str) -> Answer<Vec<String>> {
        let (this, identity) = (self.inner.clone(), identity.to_string());
        Answer::later(async move { this.users(&identity).await })
    }

    /// Reads the counters of a key no one has (`-`).
    fn probe(&self) -> Answer<()> {
        let this = self.inner.clone();
        Answer::later(async move {
            let nobody = BudgetKey::key("-");
            this.peek(&nobody, &KeyBudget::default(), super::now())
                .await
                .map(|_| ())
        })
    }
}

impl Connection {
    /// Takes one request from `key`'s budget in Redis.
    async fn admit(
        &self,
        key: &BudgetKey,
        budget: &KeyBudget,
        now: i64,
    ) -> Result<Verdict, StoreDown> {
        let (k, _) = keys(key, budget, now);
        let args = [
            now,
            budget.requests_per_minute.map_or(0, i64::from),
            budget.tokens_per_minute.map_or(0, |n| n as i64),
            budget.token_quota.map_or(0, |n| n as i64),
        ];
        let mut call = self.admit.key(&k[..]);
        call.arg(&args[..]).arg("admit");
        let r: Vec<i64> = self.run(call).await?;
        Ok(verdict(&r, budget, now))
    }

    /// What `key` used, without counting anything.
    async fn peek(
        &self,
        key: &BudgetKey,
        budget: &KeyBudget,
        now: i64,
    ) -> Result<Standing, StoreDown> {
        let (k, _) = keys(key, budget, now);
        let mut call = self.admit.key(&k[..]);
        call.arg(&[now, 0, 0, 0][..]).arg("peek");
        let r: Vec<i64> = self.run(call).await?;
        Ok(standing(&r))
    }

    /// Adds `tokens` to `key`'s window and quota period; returns the quota used.
    async fn charge(
        &self,
        key: &BudgetKey,
        budget: &KeyBudget,
        now: i64,
        tokens: u64,
    ) -> Result<u64, StoreDown> {
        let (k, expire_at) = keys(key, budget, now);
        let mut call = self.charge.key(&k[1]);
        call.key(&k[2]).arg(now).arg(tokens).arg(expire_at);
        let q: i64 = self.run(call).await?;
        Ok(q.max(0) as u64)
    }

    /// The users of `identity` with counters in Redis: their keys found by `SCAN` (in steps, so
    /// Redis is never blocked), their `oid`s read off the names.
    async fn users(&self, identity: &str) -> Result<Vec<String>, StoreDown> {
        let base = BudgetKey::identity(identity).redis_base();
        let prefix = format!("{base}:user:");
        let pattern = format!("{}*", glob_escape(&prefix));
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut users = std::collections::BTreeSet::new();
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let step = scan.query_async::<(u64, Vec<String>)>(&mut conn);
            let (next, keys) = match tokio::time::timeout(self.timeout, step).await {
                Err(_) => return Err(StoreDown::Timeout(self.timeout.as_millis())),
                Ok(Err(e)) => return Err(StoreDown::Redis(describe(&e, self.password.as_ref()))),
                Ok(Ok(v)) => v,
            };
            for key in keys {
                if let Some((oid, _)) = key.strip_prefix(&prefix).and_then(|r| r.split_once(':')) {
                    users.insert(oid.to_string());
                }
            }
            if next == 0 {
                return Ok(users.into_iter().collect());
            }
            cursor = next;
        }
    }

    /// Runs one script call within the timeout, pausing after failures.
    async fn run<T: redis::FromRedisValue>(
        &self,
        call: redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreDown> {
        let now_ms = unix_ms();
        if now_ms < self.paused_until.load(Ordering::Relaxed) {
            return Err(StoreDown::Paused);
        }
        let mut conn = self.conn.clone();
        let result = match tokio::time::timeout(self.timeout, call.invoke_async(&mut conn)).await {
            Err(_) => Err(StoreDown::Timeout(self.timeout.as_millis())),
            Ok(Err(e)) => Err(StoreDown::Redis(describe(&e, self.password.as_ref()))),
            Ok(Ok(v)) => Ok(v),
        };
        match &result {
            Ok(_) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(redis = %self.shown, "limits store is back: counting in Redis again");
                }
            }
            Err(e) => {
                self.failures.increment(1);
                self.paused_until
                    .store(unix_ms() + PAUSE_AFTER_FAILURE_MS, Ordering::Relaxed);
                if !self.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(redis = %self.shown, error = %e, "limits store (limits.redis_url) unavailable: applying limits.on_redis_error until it answers again");
                }
            }
        }
        result
    }
}

/// `s` with Redis' glob characters escaped, for `SCAN MATCH`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A Redis error in words: what went wrong and the client's own reason (a refused certificate,
/// a wrong password), never the URL's password.
fn describe(e: &redis::RedisError, password: Option<&SecretString>) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connection_refusal() {
        "connection refused"
    } else if e.is_io_error() || e.is_connection_dropped() {
        "connection failed"
    } else {
        ""
    };
    let mut reason = e.to_string();
    if let Some(p) = password
        .map(ExposeSecret::expose_secret)
        .filter(|p| !p.is_empty())
    {
        reason = reason.replace(p, "***");
    }
    if what.is_empty() {
        reason
    } else {
        format!("{what}: {reason}")
    }
}

/// The client for `config`: over TLS for `rediss://`, trusting `redis_ca_file` when set and the
/// system's roots otherwise. Errors name the setting, never the password.
fn client(config: &RedisConfig) -> Result<redis::Client, String> {
    let url = config.url.expose_secret();
    let bad_url = |e: redis::RedisError| {
        format!(
            "limits.redis_url ({}): {} ({})",
            config.shown,
            redis_kind(&e),
            e.detail().unwrap_or("no detail")
        )
    };
    let Some(ca_file) = &config.ca_file else {
        return redis::Client::open(url).map_err(bad_url);
    };
    let shown = ca_file.display();
    let pem = std::fs::read(ca_file)
        .map_err(|e| format!("limits.redis_ca_file ({shown}): cannot read: {e}"))?;
    if !pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(format!(
            "limits.redis_ca_file ({shown}): holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)"
        ));
    }
    redis::Client::build_with_tls(
        url,
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        },
    )
    // The URL was checked by validation: what is left to fail here is the certificate file.
    .map_err(|e| format!("limits.redis_ca_file ({shown}): {e}"))
}

fn redis_kind(e: &redis::RedisError) -> String {
    format!("{:?}", e.kind())
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn standing(r: &[i64]) -> Standing {
    let at = |i: usize| r.get(i).copied().unwrap_or(0).max(0) as u64;
    Standing {
        requests: at(2),
        tokens: at(3),
        quota: at(4),
    }
}

fn verdict(r: &[i64], budget: &KeyBudget, now: i64) -> Verdict {
    let retry_after = r.get(1).copied().unwrap_or(1).max(1) as u64;
    match r.first().copied().unwrap_or(0) {
        1 => Verdict::Refused(Refusal::Requests { retry_after }),
        2 => Verdict::Refused(Refusal::Tokens { retry_after }),
        3 => Verdict::Refused(Refusal::Quota {
            resets_at: period_bounds(budget.token_quota_period, now).1,
        }),
        _ => Verdict::Admitted(standing(r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::window::WINDOW_SECS;

    #[test]
    fn keys_share_a_hash_tag_and_quota_keys_name_their_period() {
        let budget = KeyBudget::default();
        let ([r, t, q], expire) = keys(&BudgetKey::key("team-a"), &budget, 1_773_900_000);
        assert_eq!(r, "entra-proxy:{team-a}:requests");
        assert_eq!(t, "entra-proxy:{team-a}:tokens");
        assert_eq!(q, "entra-proxy:{team-a}:quota:month:1772323200");
        assert_eq!(expire, 1_775_001_600 + QUOTA_MARGIN_SECS);
        assert_eq!(WINDOW_SECS, 60, "the scripts assume a 60 s window");
    }
}
