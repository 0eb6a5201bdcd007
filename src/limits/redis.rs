//! The limits store in Redis, shared by every replica: per-second buckets of the 60 s windows
//! in hashes, and one counter per quota and budget period, each expiring by itself.
//!
//! One round trip before the answer: a request is admitted by one Lua script over every budget
//! it is counted against (its caller's, and its user's inside an identity: one hash slot), which
//! checks that the reservation fits each and then counts it in each, atomically across
//! replicas. Settlement is off the request's path: queued in this process (`redis/queue.rs`)
//! and sent in batches, one pipelined round trip every [`FLUSH_EVERY`] and at shutdown.
//! Admission goes over the serving thread's own connection, batches over one shared one
//! (`redis/link.rs`).
//!
//! A call that does not answer within `limits.redis_timeout_ms` fails; the caller then applies
//! `limits.on_redis_error`. After a failure Redis is left alone for
//! [`PAUSE_AFTER_FAILURE_MS`], so an outage costs requests nothing; the outage is logged once
//! however many connections notice it, and every failed call is counted.

mod link;
mod queue;

use super::account::Account;
use super::answer::{Answer, StoreDown};
use super::reservation::Amounts;
use super::store::Store;
use super::window::period_bounds;
use super::{Admit, BudgetKey, Limit, Refusal, Settlement, Standing};
use crate::config::{KeyBudget, RedisConfig};
pub use link::PAUSE_AFTER_FAILURE_MS;
pub use queue::{FLUSH_EVERY, MARKER_SECS, MAX_QUEUED, RETRY_FOR};
use redis::aio::ConnectionManagerConfig;
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::time::Duration;

/// Quota and budget counters outlive their period by this much (seconds), then expire.
const PERIOD_MARGIN_SECS: i64 = 3600;

/// Atomic admission of one request against every account in KEYS (four keys each: requests
/// and tokens windows, quota and spend counters), the last KEY marking the admission. Window
/// hashes map second → amount, with two fields of their own: `t`, the sum of the buckets from
/// second `o` on, and `o`, the oldest second that may still have a bucket. A window is read in
/// O(1): the buckets that left it since the last call are taken off `t` and deleted (at most
/// one a second under steady traffic); a hash without `t` and `o` (idle past a whole window, or
/// written by an older proxy) is summed once. ARGV: now, reserved
/// tokens, reserved micro-units, mode (`admit` or `peek`), then six per account: rpm, tpm,
/// quota, budget (0: none), and when the quota and spend counters expire. Checks every account
/// first (the reservation never fits: 5 tpm, 6 quota, 7 budget; used up: 1 requests, 2 tokens,
/// 3 quota, 4 spend), then marks the admission (8, counting nothing, when it was given up
/// already: see VOID) and counts the request and its reservation in each. Returns {verdict,
/// retry_after, account refused (or -1), then requests, tokens, quota, spend of each account
/// after counting} (refused: of the one refused).
#[doc(hidden)] // public for the tests that run it against a real Redis
pub const ADMIT: &str = r"
local now = tonumber(ARGV[1])
local rt, rm = tonumber(ARGV[2]), tonumber(ARGV[3])
local oldest = now - 59
local function summed(key)
  local flat, used = redis.call('HGETALL', key), 0
  if #flat == 0 then return 0 end
  for i = 1, #flat, 2 do
    local sec = tonumber(flat[i])
    if sec and sec < oldest then redis.call('HDEL', key, flat[i])
    elseif sec then used = used + tonumber(flat[i + 1]) end
  end
  redis.call('HSET', key, 't', used, 'o', oldest)
  return used
end
local function window(key)
  local v = redis.call('HMGET', key, 't', 'o')
  local used, from = tonumber(v[1]), tonumber(v[2])
  if not used or not from or from < oldest - 60 then return summed(key) end
  if from < oldest then
    for sec = from, oldest - 1 do
      local b = redis.call('HGET', key, sec)
      if b then used = used - tonumber(b); redis.call('HDEL', key, sec) end
    end
    if used < 0 then used = 0 end
    redis.call('HSET', key, 't', used, 'o', oldest)
  end
  return used
end
local function count(key, n)
  redis.call('HINCRBY', key, ARGV[1], n)
  redis.call('HINCRBY', key, 't', n)
  redis.call('HSETNX', key, 'o', oldest)
  redis.call('EXPIRE', key, 61)
end
local function retry_after(used, key, limit)
  local flat, buckets = redis.call('HGETALL', key), {}
  for i = 1, #flat, 2 do
    local sec = tonumber(flat[i])
    if sec and sec >= oldest then buckets[#buckets + 1] = {sec, tonumber(flat[i + 1])} end
  end
  table.sort(buckets, function(a, b) return a[1] < b[1] end)
  for _, b in ipairs(buckets) do
    used = used - b[2]
    if used < limit then return math.max(1, b[1] + 60 - now) end
  end
  return 1
end
local function need(n) if n < 1 then return 1 end return n end
local accounts = (#KEYS - 1) / 4
local seen = {}
for i = 0, accounts - 1 do
  local k, a = i * 4, 4 + i * 6
  local rpm, tpm = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local quota, budget = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local r = window(KEYS[k + 1])
  local t = window(KEYS[k + 2])
  local q = tonumber(redis.call('GET', KEYS[k + 3]) or '0')
  local s = tonumber(redis.call('GET', KEYS[k + 4]) or '0')
  if ARGV[4] == 'peek' then return {0, 0, -1, r, t, q, s} end
  local function refuse(v, retry) return {v, retry, i, r, t, q, s} end
  if tpm > 0 and rt > tpm then return refuse(5, 0) end
  if quota > 0 and rt > quota then return refuse(6, 0) end
  if budget > 0 and rm > budget then return refuse(7, 0) end
  if rpm > 0 and r >= rpm then return refuse(1, retry_after(r, KEYS[k + 1], rpm)) end
  if tpm > 0 and t + need(rt) > tpm then
    return refuse(2, retry_after(t, KEYS[k + 2], tpm - need(rt) + 1))
  end
  if quota > 0 and q + need(rt) > quota then return refuse(3, 0) end
  if budget > 0 and rm > 0 and s + rm > budget then return refuse(4, 0) end
  seen[i + 1] = {r, t, q, s}
end
if not redis.call('SET', KEYS[#KEYS], 'held', 'NX', 'EX', 60) then return {8, 0, -1} end
local out = {0, 0, -1}
for i = 0, accounts - 1 do
  local k, a = i * 4, 4 + i * 6
  count(KEYS[k + 1], 1)
  if rt > 0 then
    count(KEYS[k + 2], rt)
    redis.call('INCRBY', KEYS[k + 3], ARGV[2])
    redis.call('EXPIREAT', KEYS[k + 3], ARGV[a + 5])
  end
  if rm > 0 then
    redis.call('INCRBY', KEYS[k + 4], ARGV[3])
    redis.call('EXPIREAT', KEYS[k + 4], ARGV[a + 6])
  end
  local c = seen[i + 1]
  out[#out + 1] = c[1] + 1
  out[#out + 1] = c[2] + rt
  out[#out + 1] = c[3] + rt
  out[#out + 1] = c[4] + rm
end
return out
";

/// One settlement of one account (settlements of one second merged): tokens and micro-units
/// added (ARGV[2] = '1') or given back (else) at second ARGV[1], in the window (KEYS[1], with
/// its running total `t` when the second is still in it: see ADMIT) and in
/// the quota (KEYS[2]) and spend (KEYS[3]) counters of the periods holding that second. Given
/// back never below zero, and never into a counter that is gone (expired, or a Redis that came
/// back empty). KEYS[4] marks the settlement applied (for a minute), so a batch sent again after
/// a timeout is never counted twice. ARGV: second, add, tokens, micro-units, when the
/// quota and spend counters expire. Returns {quota used, spend used}, or {-1, -1} when applied
/// already.
#[doc(hidden)] // public for the tests that run it against a real Redis
pub const SETTLE: &str = r"
if not redis.call('SET', KEYS[4], '1', 'NX', 'EX', 60) then return {-1, -1} end
local tokens, micros = tonumber(ARGV[3]), tonumber(ARGV[4])
local from = tonumber(redis.call('HGET', KEYS[1], 'o') or '0')
local in_window = tonumber(ARGV[1]) >= from
if ARGV[2] == '1' then
  if tokens > 0 then
    if in_window then
      redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[3])
      if from > 0 then redis.call('HINCRBY', KEYS[1], 't', ARGV[3]) end
      redis.call('EXPIRE', KEYS[1], 61)
    end
    redis.call('INCRBY', KEYS[2], ARGV[3])
    redis.call('EXPIREAT', KEYS[2], ARGV[5])
  end
  if micros > 0 then
    redis.call('INCRBY', KEYS[3], ARGV[4])
    redis.call('EXPIREAT', KEYS[3], ARGV[6])
  end
else
  if tokens > 0 then
    local v = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
    local back = math.min(v, tokens)
    if v > tokens then redis.call('HINCRBY', KEYS[1], ARGV[1], -tokens)
    elseif v > 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
    if back > 0 and from > 0 then redis.call('HINCRBY', KEYS[1], 't', -back) end
    local q = tonumber(redis.call('GET', KEYS[2]) or '0')
    if q > tokens then redis.call('DECRBY', KEYS[2], ARGV[3])
    elseif q > 0 then redis.call('DEL', KEYS[2]) end
  end
  if micros > 0 then
    local s = tonumber(redis.call('GET', KEYS[3]) or '0')
    if s > micros then redis.call('DECRBY', KEYS[3], ARGV[4])
    elseif s > 0 then redis.call('DEL', KEYS[3]) end
  end
end
return {tonumber(redis.call('GET', KEYS[2]) or '0'), tonumber(redis.call('GET', KEYS[3]) or '0')}
";

/// An admission given up by the proxy (no answer within the timeout): if Redis counted it after
/// all (its marker KEYS[1] says `held`), its request and reservation are given back at second
/// ARGV[1] in every account (KEYS from 2 on, four each: requests and tokens windows (and their
/// running totals), quota and spend counters of the periods holding that second); then the
/// marker says `void`, so an
/// admission arriving after this counts nothing. ARGV: second, tokens, micro-units. Returns
/// {-1, -1}.
#[doc(hidden)] // public for the tests that run it against a real Redis
pub const VOID: &str = r"
local held = redis.call('GET', KEYS[1]) == 'held'
redis.call('SET', KEYS[1], 'void', 'EX', 60)
if not held then return {-1, -1} end
local tokens, micros = tonumber(ARGV[2]), tonumber(ARGV[3])
local function take_field(key, n)
  local v = tonumber(redis.call('HGET', key, ARGV[1]) or '0')
  if v > n then redis.call('HINCRBY', key, ARGV[1], -n)
  elseif v > 0 then redis.call('HDEL', key, ARGV[1]) end
  local back = math.min(v, n)
  if back > 0 and redis.call('HEXISTS', key, 'o') == 1 then
    redis.call('HINCRBY', key, 't', -back)
  end
end
local function take(key, n)
  local v = tonumber(redis.call('GET', key) or '0')
  if v > n then redis.call('DECRBY', key, n)
  elseif v > 0 then redis.call('DEL', key) end
end
for i = 0, (#KEYS - 1) / 4 - 1 do
  local k = 1 + i * 4
  take_field(KEYS[k + 1], 1)
  if tokens > 0 then take_field(KEYS[k + 2], tokens); take(KEYS[k + 3], tokens) end
  if micros > 0 then take(KEYS[k + 4], micros) end
end
return {-1, -1}
";

/// Counters in Redis (cheap to clone: a call on its way holds one).
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Connection>,
}

/// The connections and what every call shares.
struct Connection {
    links: link::Links,
    timeout: Duration,
    /// The URL without its password.
    shown: String,
    /// The URL's password, only to scrub it from error texts.
    password: Option<SecretString>,
    admit: redis::Script,
    settle: redis::Script,
    void: redis::Script,
    /// Settlements on their way to Redis.
    queue: queue::Queue,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.shown)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// The Redis keys of one budget key at second `at`: its requests and tokens windows, its quota
/// and spend counters of the periods holding `at`, and when those two expire. The `{…}` hash
/// tag keeps them in one cluster slot.
struct Keys {
    requests: String,
    tokens: String,
    quota: String,
    spend: String,
    quota_expires: i64,
    spend_expires: i64,
}

fn keys(key: &BudgetKey, budget: &KeyBudget, at: i64) -> Keys {
    let (quota_start, quota_end) = period_bounds(budget.token_quota_period, at);
    let (spend_start, spend_end) = period_bounds(budget.budget_period, at);
    let base = key.redis_base();
    Keys {
        requests: format!("{base}:requests"),
        tokens: format!("{base}:tokens"),
        quota: format!(
            "{base}:quota:{}:{quota_start}",
            budget.token_quota_period.name()
        ),
        spend: format!("{base}:spend:{}:{spend_start}", budget.budget_period.name()),
        quota_expires: quota_end + PERIOD_MARGIN_SECS,
        spend_expires: spend_end + PERIOD_MARGIN_SECS,
    }
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
        let links = link::Links::new(client, manager_config, config.shown.clone())
            .map_err(|e| format!("limits.redis_url ({}): {}", config.shown, redis_kind(&e)))?;
        Ok(RedisStore {
            inner: Arc::new(Connection {
                links,
                timeout: config.timeout,
                shown: config.shown.clone(),
                password: url::Url::parse(config.url.expose_secret())
                    .ok()
                    .and_then(|u| u.password().map(|p| SecretString::from(p.to_string()))),
                admit: redis::Script::new(ADMIT),
                settle: redis::Script::new(SETTLE),
                void: redis::Script::new(VOID),
                queue: queue::Queue::default(),
            }),
        })
    }

    /// The URL without its password.
    pub fn shown(&self) -> &str {
        &self.inner.shown
    }

    /// Sends queued settlements every [`FLUSH_EVERY`] on the current runtime, from now on;
    /// `None` when started already.
    pub(super) fn start_settling(&self) -> Option<tokio::task::JoinHandle<()>> {
        if !self.inner.queue.start() {
            return None;
        }
        let this = self.inner.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.flush().await;
            }
        }))
    }
}

/// Admission and peeks are one script call each, owning what they need (the answer may be
/// spawned); settlements are queued.
impl Store for RedisStore {
    fn admit(&self, accounts: &[&Account], reserve: Amounts, now: i64) -> Answer<Admit> {
        let this = self.inner.clone();
        let mut asked = [None, None];
        for (slot, a) in asked.iter_mut().zip(accounts) {
            *slot = Some((a.key().clone(), *a.budget()));
        }
        Answer::later(async move { this.admit(asked, reserve, now).await })
    }

    fn settle(&self, account: &Account, settlement: Settlement) {
        self.inner.queue.push(account, settlement);
    }

    fn flush(&self) -> Answer<()> {
        let this = self.inner.clone();
        Answer::later(async move {
            this.flush().await;
            Ok(())
        })
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
    /// Takes one request and its reservation from every budget `asked`, in one script call.
    /// When no answer comes (a timeout, a connection lost on the way), the admission may still
    /// reach Redis later: it is queued to be voided.
    async fn admit(
        &self,
        asked: [Option<(BudgetKey, KeyBudget)>; 2],
        reserve: Amounts,
        now: i64,
    ) -> Result<Admit, StoreDown> {
        let Some((first, _)) = &asked[0] else {
            return Ok(Admit::Admitted([Standing::default(); 2]));
        };
        let marker = self.queue.admission_marker(&first.redis_base());
        let result = self.admit_marked(&asked, reserve, now, &marker).await;
        if matches!(result, Err(StoreDown::Timeout(_) | StoreDown::Redis(_))) {
            self.queue.void(queue::Void {
                asked,
                at: now,
                reserve,
                marker,
            });
        }
        result
    }

    /// [`Connection::admit`]'s script call, marking the admission with `marker`.
    async fn admit_marked(
        &self,
        asked: &[Option<(BudgetKey, KeyBudget)>; 2],
        reserve: Amounts,
        now: i64,
        marker: &str,
    ) -> Result<Admit, StoreDown> {
        let mut call = self.admit.prepare_invoke();
        call.arg(now)
            .arg(reserve.tokens)
            .arg(reserve.micros)
            .arg("admit");
        let mut budgets = [KeyBudget::default(); 2];
        for (i, (key, budget)) in asked.iter().flatten().enumerate() {
            let k = keys(key, budget, now);
            call.key(&k.requests)
                .key(&k.tokens)
                .key(&k.quota)
                .key(&k.spend);
            call.arg(budget.requests_per_minute.map_or(0, u64::from))
                .arg(budget.tokens_per_minute.unwrap_or(0))
                .arg(budget.token_quota.unwrap_or(0))
                .arg(budget.budget_micros.unwrap_or(0))
                .arg(k.quota_expires)
                .arg(k.spend_expires);
            budgets[i] = *budget;
        }
        call.key(marker);
        let r: Vec<i64> = self.run(call).await?;
        if r.first() == Some(&8) {
            return Err(StoreDown::Redis(
                "the admission was given up already".into(),
            ));
        }
        Ok(admit_answer(&r, &budgets, now))
    }

    /// What `key` used, without counting anything.
    async fn peek(
        &self,
        key: &BudgetKey,
        budget: &KeyBudget,
        now: i64,
    ) -> Result<Standing, StoreDown> {
        let k = keys(key, budget, now);
        let mut call = self.admit.prepare_invoke();
        call.key(&k.requests)
            .key(&k.tokens)
            .key(&k.quota)
            .key(&k.spend)
            .key(format!("{}:peek", key.redis_base()));
        call.arg(&[now, 0, 0][..])
            .arg("peek")
            .arg(&[0, 0, 0, 0, k.quota_expires, k.spend_expires][..]);
        let r: Vec<i64> = self.run(call).await?;
        Ok(standing(r.get(3..).unwrap_or_default()))
    }

    /// The users of `identity` with counters in Redis: their keys found by `SCAN` (in steps, so
    /// Redis is never blocked), their `oid`s read off the names.
    async fn users(&self, identity: &str) -> Result<Vec<String>, StoreDown> {
        let base = BudgetKey::identity(identity).redis_base();
        let prefix = format!("{base}:user:");
        let pattern = format!("{}*", glob_escape(&prefix));
        let mut conn = self.links.shared.conn.clone();
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

    /// Sends the queued settlements in one pipelined round trip (loading the script first if
    /// Redis lost it); a batch that fails is kept to send again as it was.
    async fn flush(&self) {
        let batch = self.queue.batch();
        if batch.is_empty() {
            return;
        }
        if self.links.open().is_err() {
            self.queue.again(batch);
            return;
        }
        let calls: Vec<_> = batch.iter().map(|sent| self.call_of(sent)).collect();
        let mut pipe = redis::pipe();
        for call in &calls {
            pipe.invoke_script(call);
        }
        let result = self.send(&pipe).await;
        self.links.record(&self.links.shared, result.as_ref().err());
        match result {
            Ok(answers) => {
                for (sent, (quota, _)) in batch.iter().zip(answers) {
                    if let queue::Call::Settle { item, .. } = &sent.call
                        && quota >= 0
                    {
                        item.account.publish(quota as u64);
                    }
                }
            }
            Err(_) => self.queue.again(batch),
        }
    }

    /// The script call of one batch item.
    fn call_of<'a>(&'a self, sent: &queue::Sent) -> redis::ScriptInvocation<'a> {
        match &sent.call {
            queue::Call::Settle { item, marker } => {
                let (key, budget) = (item.account.key(), item.account.budget());
                let k = keys(key, budget, item.at);
                let mut call = self.settle.prepare_invoke();
                call.key(&k.tokens)
                    .key(&k.quota)
                    .key(&k.spend)
                    .key(self.queue.marker(&key.redis_base(), *marker));
                call.arg(item.at)
                    .arg(if item.add { "1" } else { "0" })
                    .arg(item.amounts.tokens)
                    .arg(item.amounts.micros)
                    .arg(k.quota_expires)
                    .arg(k.spend_expires);
                call
            }
            queue::Call::Void(void) => {
                let mut call = self.void.prepare_invoke();
                call.key(&void.marker);
                for (key, budget) in void.asked.iter().flatten() {
                    let k = keys(key, budget, void.at);
                    call.key(&k.requests)
                        .key(&k.tokens)
                        .key(&k.quota)
                        .key(&k.spend);
                }
                call.arg(void.at)
                    .arg(void.reserve.tokens)
                    .arg(void.reserve.micros);
                call
            }
        }
    }

    /// Sends a pipeline of settlement scripts within the timeout; loads the scripts and sends
    /// again once when Redis does not know one (a restart, a failover).
    async fn send(&self, pipe: &redis::Pipeline) -> Result<Vec<(i64, i64)>, StoreDown> {
        let mut conn = self.links.shared.conn.clone();
        let call = async {
            match pipe.query_async(&mut conn).await {
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    self.settle.prepare_invoke().load_async(&mut conn).await?;
                    self.void.prepare_invoke().load_async(&mut conn).await?;
                    pipe.query_async(&mut conn).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Err(StoreDown::Timeout(self.timeout.as_millis())),
            Ok(Err(e)) => Err(StoreDown::Redis(describe(&e, self.password.as_ref()))),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// Runs one script call over this thread's connection within the timeout, pausing after
    /// failures.
    async fn run<T: redis::FromRedisValue>(
        &self,
        call: redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreDown> {
        self.links.open()?;
        let link = self.links.local();
        let mut conn = link.conn.clone();
        let result = match tokio::time::timeout(self.timeout, call.invoke_async(&mut conn)).await {
            Err(_) => Err(StoreDown::Timeout(self.timeout.as_millis())),
            Ok(Err(e)) => Err(StoreDown::Redis(describe(&e, self.password.as_ref()))),
            Ok(Ok(v)) => Ok(v),
        };
        self.links.record(&link, result.as_ref().err());
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

/// Requests, tokens, quota and spend, from four numbers of a script's answer.
fn standing(r: &[i64]) -> Standing {
    let at = |i: usize| r.get(i).copied().unwrap_or(0).max(0) as u64;
    Standing {
        requests: at(0),
        tokens: at(1),
        quota: at(2),
        spend: at(3),
    }
}

/// The admission script's answer: every account's standing, or which refused and why.
fn admit_answer(r: &[i64], budgets: &[KeyBudget; 2], now: i64) -> Admit {
    let at = |i: usize| r.get(i).copied().unwrap_or(0);
    let which = at(2).clamp(0, 1) as usize;
    let budget = &budgets[which];
    let retry_after = at(1).max(1) as u64;
    let refusal = match at(0) {
        0 => {
            let rest = r.get(3..).unwrap_or_default();
            let mut both = [Standing::default(); 2];
            for (slot, chunk) in both.iter_mut().zip(rest.chunks(4)) {
                *slot = standing(chunk);
            }
            return Admit::Admitted(both);
        }
        1 => Refusal::Requests { retry_after },
        2 => Refusal::Tokens { retry_after },
        3 => Refusal::Quota {
            resets_at: period_bounds(budget.token_quota_period, now).1,
        },
        4 => Refusal::Spend {
            spent: at(6).max(0) as u64,
            resets_at: period_bounds(budget.budget_period, now).1,
        },
        5 => Refusal::TooLarge(Limit::TokensPerMinute),
        6 => Refusal::TooLarge(Limit::TokenQuota),
        _ => Refusal::TooLarge(Limit::Budget),
    };
    Admit::Refused { which, refusal }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::window::WINDOW_SECS;

    #[test]
    fn keys_share_a_hash_tag_and_period_keys_name_their_period() {
        let budget = KeyBudget {
            budget_period: crate::config::QuotaPeriod::Day,
            ..KeyBudget::default()
        };
        let k = keys(&BudgetKey::key("team-a"), &budget, 1_773_900_000);
        assert_eq!(k.requests, "entra-proxy:{team-a}:requests");
        assert_eq!(k.tokens, "entra-proxy:{team-a}:tokens");
        assert_eq!(k.quota, "entra-proxy:{team-a}:quota:month:1772323200");
        assert_eq!(k.spend, "entra-proxy:{team-a}:spend:day:1773878400");
        assert_eq!(k.quota_expires, 1_775_001_600 + PERIOD_MARGIN_SECS);
        assert_eq!(k.spend_expires, 1_773_964_800 + PERIOD_MARGIN_SECS);
        assert_eq!(WINDOW_SECS, 60, "the scripts assume a 60 s window");
        let user = BudgetKey::User {
            identity: Arc::from("analysts"),
            oid: Arc::from("o"),
        };
        let identity = keys(&BudgetKey::identity("analysts"), &budget, 0);
        assert!(keys(&user, &budget, 0).requests.contains("{analysts}"));
        assert!(
            identity.requests.contains("{analysts}"),
            "one slot: one script admits both"
        );
    }

    #[test]
    fn the_scripts_keep_their_markers_as_long_as_the_queue_says() {
        let ex = format!("'EX', {MARKER_SECS}");
        for script in [ADMIT, SETTLE, VOID] {
            assert!(script.contains(&ex), "{script}");
        }
        assert!(RETRY_FOR.as_secs() < MARKER_SECS);
    }

    #[test]
    fn the_admission_answer_names_who_refused_and_why() {
        let budgets = [KeyBudget::default(); 2];
        assert_eq!(
            admit_answer(&[0, 0, -1, 1, 10, 10, 0, 2, 10, 30, 5], &budgets, 0),
            Admit::Admitted([
                Standing {
                    requests: 1,
                    tokens: 10,
                    quota: 10,
                    spend: 0
                },
                Standing {
                    requests: 2,
                    tokens: 10,
                    quota: 30,
                    spend: 5
                }
            ])
        );
        assert_eq!(
            admit_answer(&[4, 0, 1, 3, 0, 0, 77], &budgets, 0),
            Admit::Refused {
                which: 1,
                refusal: Refusal::Spend {
                    spent: 77,
                    resets_at: 2_678_400
                }
            }
        );
        assert_eq!(
            admit_answer(&[5, 0, 0, 0, 0, 0, 0], &budgets, 0),
            Admit::Refused {
                which: 0,
                refusal: Refusal::TooLarge(Limit::TokensPerMinute)
            }
        );
    }
}
