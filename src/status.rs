//! The status page (`GET /status`, HTML) and its JSON twin (`GET /status.json`): the identity in
//! use, each backend's health, the proxy's own last refusals, the last diagnoses of Azure's,
//! the last 15 minutes per caller and per backend as small charts, and each caller's requests
//! this minute with each key's tokens and remaining quota.
//! Never a token. The page is self-contained (inline CSS and SVG, no script) and escapes every
//! value.

use crate::config::KeyEntry;
use crate::state::AppState;
use crate::telemetry::history::{self, Bucket, Kind, MINUTES};
use crate::telemetry::recent::{CallerWindow, DiagnosisRecord, RefusalRecord, WINDOW_SECS};
use serde::Serialize;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Everything the status page shows.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StatusView {
    /// Unix seconds when the view was taken.
    pub now: i64,
    pub config_hash: String,
    pub identity: IdentityView,
    /// The on-behalf-of exchange, while `[on_behalf_of]` is configured.
    pub on_behalf_of: Option<crate::identity::OboStatus>,
    pub backends: Vec<BackendView>,
    /// The proxy's own refusals, newest first, at most
    /// [`crate::telemetry::recent::REFUSALS_KEPT`].
    pub refusals: Vec<RefusalRecord>,
    /// Azure's refusals the proxy diagnosed, newest first, at most
    /// [`crate::telemetry::recent::DIAGNOSES_KEPT`].
    pub diagnoses: Vec<DiagnosisRecord>,
    /// The last minutes per caller and per backend.
    pub history: HistoryView,
    pub keys: KeysView,
}

/// Requests, errors and tokens per minute, oldest first, the current minute last.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HistoryView {
    pub minutes: usize,
    /// Each configured key (by its caller label), then the other callers seen (by kind).
    pub callers: Vec<SeriesView>,
    /// Each configured backend.
    pub backends: Vec<SeriesView>,
}

/// One caller's or backend's minutes.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SeriesView {
    pub name: String,
    /// [`MINUTES`] buckets: `start` (unix seconds), `requests`, `errors`, `tokens`.
    pub minutes: Vec<Bucket>,
}

/// The proxy's own identity, from its credential and its cached tokens' claims.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct IdentityView {
    pub credential: String,
    pub client_id: Option<String>,
    pub object_id: Option<String>,
    pub tenant_id: Option<String>,
    pub scopes: Vec<ScopeView>,
}

/// One scope's token: when it expires and was refreshed, never the token.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ScopeView {
    pub scope: String,
    /// The cached token's `aud` (the scope's audience until a token is held).
    pub audience: String,
    pub has_token: bool,
    pub expires_at: Option<i64>,
    pub expires_in_secs: Option<i64>,
    pub last_refresh: Option<i64>,
    pub last_error: Option<String>,
}

/// One backend and how it is doing.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BackendView {
    pub name: String,
    pub endpoint: String,
    pub scope: String,
    /// `ok` or `cooling down`.
    pub health: &'static str,
    /// Unix seconds when the cooldown ends.
    pub cooling_until: Option<i64>,
    /// The newest diagnosis of an answer from this backend (`401 audience-mismatch`).
    pub last_error: Option<String>,
}

/// Requests per caller in the current window.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct KeysView {
    pub window_secs: u64,
    pub callers: Vec<CallerView>,
}

/// One caller (a configured key, or an Entra or app caller seen this window).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CallerView {
    /// The caller's `key` label: `key:<name>`, or the caller label of others.
    pub caller: String,
    /// Answered requests in the current window.
    pub requests: u64,
    /// Of those, answered with a status of 400 or more.
    pub errors: u64,
    /// A configured key's counts from the limits store; `null` for other callers.
    pub usage: Option<KeyUsage>,
}

/// A key's standing in the limits store: the last 60 s and its quota period.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct KeyUsage {
    /// Requests admitted in the last 60 s.
    pub requests: u64,
    /// Tokens (prompt + completion) in the last 60 s.
    pub tokens: u64,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
    pub token_quota: Option<u64>,
    /// `hour`, `day`, `week` or `month`, when the key has a quota.
    pub quota_period: Option<&'static str>,
    /// Tokens used in the current quota period.
    pub quota_used: u64,
    /// What is left of the quota, when the key has one.
    pub quota_remaining: Option<u64>,
    /// Money spent this budget period (running requests count what they reserved), in
    /// `currency`; 0 when no model has a price.
    pub spend: f64,
    /// The money budget per `budget_period`, when the key has one.
    pub budget: Option<f64>,
    /// `day`, `week` or `month`: the period `spend` is counted over.
    pub budget_period: &'static str,
    /// What is left of the budget, when the key has one.
    pub budget_remaining: Option<f64>,
    pub currency: String,
    /// Why the counts could not be read (the limits store did not answer).
    pub error: Option<String>,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Takes the view from the current snapshot and what outlives reloads.
pub(crate) async fn gather(app: &AppState) -> StatusView {
    let state = app.snapshot();
    let now = unix_now();
    let mut identity = IdentityView {
        credential: state.tokens.describe(),
        client_id: None,
        object_id: None,
        tenant_id: None,
        scopes: Vec::new(),
    };
    for scope in state.config.scopes() {
        let s = state.tokens.status(&scope).await;
        if let Some(c) = &s.claims {
            identity.client_id = identity
                .client_id
                .or_else(|| c.app_id().map(str::to_string));
            identity.object_id = identity.object_id.or_else(|| c.oid.clone());
            identity.tenant_id = identity.tenant_id.or_else(|| c.tid.clone());
        }
        identity.scopes.push(ScopeView {
            audience: s
                .claims
                .as_ref()
                .and_then(|c| c.audience())
                .unwrap_or(scope.audience())
                .to_string(),
            scope: s.scope,
            has_token: s.has_valid_token,
            expires_at: s.expires_at,
            expires_in_secs: s.expires_at.map(|e| (e - now).max(0)),
            last_refresh: s.last_refresh,
            last_error: s.last_error,
        });
    }
    let diagnoses = app.recent.diagnoses();
    let backends = state
        .routes
        .backends()
        .iter()
        .map(|b| {
            let cooling = b.health.cooling();
            BackendView {
                name: b.config.name.clone(),
                endpoint: b.config.endpoint.as_str().to_string(),
                scope: b.config.scope.as_str().to_string(),
                health: if cooling.is_some() {
                    "cooling down"
                } else {
                    "ok"
                },
                cooling_until: cooling.map(|d| now + d.as_secs_f64().ceil() as i64),
                last_error: diagnoses
                    .iter()
                    .find(|d| d.backend == b.config.name)
                    .map(|d| format!("{} {}", d.status, d.code)),
            }
        })
        .collect();
    // Configured keys always show (with zero), then everyone else seen this window.
    let (keys, others) = app.recent.callers();
    let mut callers = Vec::with_capacity(state.config.keys.len() + others.len());
    // Read a few at a time: with Redis, their round trips overlap instead of adding up.
    let currency = &state.config.currency;
    let key_usages = peek_all(&state.config.keys, |k| {
        key_usage(&state.limits, k, currency)
    })
    .await;
    for (k, usage) in state.config.keys.iter().zip(key_usages) {
        let caller = crate::inbound::CallerLabel::key(&k.name, k.legacy).to_string();
        let w = keys.get(&caller);
        let mut view = caller_view(caller, w);
        view.usage = Some(usage);
        callers.push(view);
    }
    let identities = state.auth.identities().all();
    let identity_usages =
        peek_all(identities, |i| account_usage(&i.policy.account, currency)).await;
    for (i, usage) in identities.iter().zip(identity_usages) {
        let caller = i.label.to_string();
        let w = keys.get(&caller);
        let mut view = caller_view(caller, w);
        view.usage = Some(usage);
        callers.push(view);
    }
    for w in &others {
        callers.push(caller_view(w.caller.clone(), Some(w)));
    }
    StatusView {
        now,
        config_hash: state.origin.hash.clone(),
        identity,
        on_behalf_of: state.obo.as_ref().map(crate::identity::OboTokens::status),
        backends,
        refusals: app.recent.refusals(),
        diagnoses,
        history: history_view(&state.config),
        keys: KeysView {
            window_secs: WINDOW_SECS,
            callers,
        },
    }
}

/// The charts' data: every configured key and backend (zeros included), and the callers
/// without a key (`entra`, `app`, `anonymous`) that were counted in the window.
fn history_view(config: &crate::config::Config) -> HistoryView {
    let h = history::history();
    let now = history::minute_now();
    let series = |kind: Kind, name: String| SeriesView {
        minutes: h.read(kind, &name, now).to_vec(),
        name,
    };
    let mut callers: Vec<SeriesView> = config
        .keys
        .iter()
        .map(|k| series(Kind::Caller, k.label().to_string()))
        .collect();
    for label in h.active(Kind::Caller, now) {
        // Keys are charted above when configured; labels of keys this config does not have
        // (removed by a reload, or another proxy's in the same process) are left out.
        if !label.contains(':') {
            callers.push(series(Kind::Caller, label));
        }
    }
    let backends = config
        .backends
        .iter()
        .map(|b| series(Kind::Backend, b.name.clone()))
        .collect();
    HistoryView {
        minutes: MINUTES,
        callers,
        backends,
    }
}

fn caller_view(caller: String, w: Option<&CallerWindow>) -> CallerView {
    CallerView {
        caller,
        requests: w.map_or(0, |w| w.requests),
        errors: w.map_or(0, |w| w.errors),
        usage: None,
    }
}

/// Standings read from the limits store at once for the status page.
const PEEKS_AT_ONCE: usize = 32;

/// `peek` of each of `items`, in order, [`PEEKS_AT_ONCE`] at a time: with Redis, their round
/// trips overlap instead of adding up.
async fn peek_all<'a, T, F, Fut>(items: &'a [T], peek: F) -> Vec<Fut::Output>
where
    F: Fn(&'a T) -> Fut,
    Fut: Future,
{
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(PEEKS_AT_ONCE) {
        out.extend(futures_util::future::join_all(chunk.iter().map(&peek)).await);
    }
    out
}

/// A key's standing, read from the limits store without counting anything.
async fn key_usage(limits: &crate::limits::Limits, key: &KeyEntry, currency: &str) -> KeyUsage {
    let budget = key.budget();
    let peeked = limits
        .peek(&crate::limits::BudgetKey::key(&key.name), &budget)
        .await;
    usage_of(budget, peeked, currency)
}

/// The usage row of an account (an identity's).
async fn account_usage(account: &crate::limits::Account, currency: &str) -> KeyUsage {
    usage_of(*account.budget(), account.peek().await, currency)
}

/// Micro-units as currency units, for people and JSON.
fn units(micros: u64) -> f64 {
    micros as f64 / 1e6
}

fn usage_of(
    budget: crate::config::KeyBudget,
    peeked: Result<crate::limits::Standing, String>,
    currency: &str,
) -> KeyUsage {
    let (standing, error) = match peeked {
        Ok(s) => (s, None),
        Err(e) => (crate::limits::Standing::default(), Some(e)),
    };
    KeyUsage {
        requests: standing.requests,
        tokens: standing.tokens,
        requests_per_minute: budget.requests_per_minute,
        tokens_per_minute: budget.tokens_per_minute,
        token_quota: budget.token_quota,
        quota_period: budget.token_quota.map(|_| budget.token_quota_period.name()),
        quota_used: standing.quota,
        quota_remaining: budget.token_quota.map(|q| q.saturating_sub(standing.quota)),
        spend: units(standing.spend),
        budget: budget.budget_micros.map(units),
        budget_period: budget.budget_period.name(),
        budget_remaining: budget
            .budget_micros
            .map(|b| units(b.saturating_sub(standing.spend))),
        currency: currency.to_string(),
        error,
    }
}

/// The limits cell of a key: `120 / 600 tokens per minute · quota 9 880 of 10 000 left (day)`.
fn usage_cell(u: &KeyUsage) -> String {
    if let Some(e) = &u.error {
        return format!("<span class=\"bad\">{}</span>", escape(e));
    }
    let mut parts = Vec::new();
    match u.tokens_per_minute {
        Some(l) => parts.push(format!("{} / {l} tokens per minute", u.tokens)),
        None => parts.push(format!("{} tokens in the last 60 s", u.tokens)),
    }
    if let Some(l) = u.requests_per_minute {
        parts.push(format!("{} / {l} requests per minute", u.requests));
    }
    if let (Some(q), Some(left), Some(period)) = (u.token_quota, u.quota_remaining, u.quota_period)
    {
        let class = if left == 0 { "bad" } else { "ok" };
        parts.push(format!(
            "quota <span class=\"{class}\">{left} of {q} left</span> this {}",
            escape(period)
        ));
    }
    if let Some(b) = u.budget {
        let left = u.budget_remaining.unwrap_or(0.0);
        let class = if left <= 0.0 { "bad" } else { "ok" };
        parts.push(format!(
            "budget <span class=\"{class}\">{left:.2} of {b:.2} {} left</span> this {}",
            escape(&u.currency),
            u.budget_period
        ));
    } else if u.spend > 0.0 {
        parts.push(format!(
            "{:.2} {} spent this {}",
            u.spend,
            escape(&u.currency),
            u.budget_period
        ));
    }
    parts.join(" · ")
}

/// HTML-escapes text for element content and quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `2026-12-02 07:51:09 UTC`.
fn time_of(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// `59m 58s`.
fn countdown(secs: i64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h > 0 {
        format!("{h}h {m}m {s}s")
    } else {
        format!("{m}m {s}s")
    }
}

fn opt(v: Option<&str>) -> String {
    v.map_or_else(|| "—".to_string(), escape)
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;\
padding:1rem;color:#1b1f23;background:#f6f8fa}h1{font-size:1.3rem;margin:0 0 .3rem}\
h2{font-size:1.05rem;margin:1.4rem 0 .5rem}p.meta{color:#57606a;margin:0 0 1rem;font-size:.85rem}\
section{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:.8rem;margin-bottom:1rem;\
overflow-x:auto}table{border-collapse:collapse;width:100%;font-size:.9rem}\
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #eaeef2;vertical-align:top;\
overflow-wrap:break-word}th{background:#f6f8fa;font-weight:600;white-space:nowrap}dl{display:grid;\
grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:0}dt{font-weight:600}dd{margin:0;\
overflow-wrap:anywhere}.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}\
code{font-size:.85em}svg.chart{vertical-align:middle;max-width:100%;height:auto}\
.chart .req{fill:#8c959f}.chart .err{fill:#cf222e}.chart .tok{fill:#0969da}.chart .axis{fill:#d0d7de}\
.total{font-size:.8rem;color:#57606a;white-space:nowrap}.quiet{color:#57606a}@media (max-width:700px){body{padding:.5rem}table,thead,tbody,tr,th,td\
{display:block}thead{display:none}tr{border-bottom:2px solid #d0d7de;padding:.3rem 0}\
td{border:0;padding:.15rem .3rem}td::before{content:attr(data-label) \": \";font-weight:600}\
dl{grid-template-columns:1fr}}";

/// A table with a header row; cells are already escaped.
fn table(out: &mut String, class: &str, heads: &[&str], rows: &[Vec<String>]) {
    let _ = write!(out, "<table class=\"{class}\"><thead><tr>");
    for h in heads {
        let _ = write!(out, "<th>{h}</th>");
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for (h, cell) in heads.iter().zip(row) {
            let _ = write!(out, "<td data-label=\"{h}\">{cell}</td>");
        }
        out.push_str("</tr>");
    }
    if rows.is_empty() {
        let _ = write!(
            out,
            "<tr><td colspan=\"{}\">none</td></tr>",
            heads.len().max(1)
        );
    }
    out.push_str("</tbody></table>");
}

/// The proxy's own refusals: when, which request, who as far as known, what, and the fix.
fn refusals_section(out: &mut String, refusals: &[RefusalRecord]) {
    out.push_str("<section id=\"refusals\"><h2>Refused by the proxy</h2>");
    let rows: Vec<Vec<String>> = refusals
        .iter()
        .map(|r| {
            vec![
                escape(&time_of(r.at)),
                format!("<code>{}</code>", escape(&r.request_id)),
                opt(r.caller.as_deref()),
                format!("{} {}", escape(&r.method), escape(&r.path)),
                r.status.to_string(),
                format!("<code>{}</code>", escape(&r.code)),
                escape(&r.fix),
            ]
        })
        .collect();
    table(
        out,
        "refusals",
        &[
            "Time",
            "Request",
            "Caller",
            "Request line",
            "Status",
            "Code",
            "Fix",
        ],
        &rows,
    );
    out.push_str("</section>");
}

/// Chart geometry: one bar per minute, [`BAR_STEP`] apart, at most [`CHART_BARS_HEIGHT`] tall.
const BAR_WIDTH: usize = 8;
const BAR_STEP: usize = 10;
const CHART_BARS_HEIGHT: u64 = 32;
const CHART_HEIGHT: usize = 36;

/// `07:51 UTC`.
fn minute_of(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!("[hour]:[minute] UTC"))
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// `1 request`, `2 requests`.
fn count(n: u64, what: &str) -> String {
    if n == 1 {
        format!("{n} {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// A bar's height for `value` when the tallest is `max`: at least 1 for any count.
fn bar_height(value: u64, max: u64) -> u64 {
    if value == 0 || max == 0 {
        return 0;
    }
    (value * CHART_BARS_HEIGHT).div_ceil(max).max(1)
}

/// One small bar chart: a `<g class="bar">` per minute with its `<title>` and bars; `bars` gives
/// a minute's title and its stacked (class, value) parts.
fn chart(
    out: &mut String,
    class: &str,
    label: &str,
    buckets: &[Bucket],
    bars: impl Fn(&Bucket) -> (String, Vec<(&'static str, u64)>),
) {
    let max = buckets
        .iter()
        .map(|b| bars(b).1.iter().map(|(_, v)| v).sum::<u64>())
        .max()
        .unwrap_or(0);
    let width = buckets.len() * BAR_STEP;
    let _ = write!(
        out,
        "<svg class=\"chart {class}\" role=\"img\" aria-label=\"{}\" viewBox=\"0 0 {width} {CHART_HEIGHT}\" \
width=\"{width}\" height=\"{CHART_HEIGHT}\">",
        escape(label)
    );
    let base = CHART_HEIGHT as u64 - 2;
    for (i, b) in buckets.iter().enumerate() {
        let (title, parts) = bars(b);
        let x = i * BAR_STEP;
        let _ = write!(out, "<g class=\"bar\"><title>{}</title>", escape(&title));
        let _ = write!(
            out,
            "<rect class=\"axis\" x=\"{x}\" y=\"{base}\" width=\"{BAR_WIDTH}\" height=\"1\"/>"
        );
        let mut top = base;
        for (part, value) in parts {
            let h = bar_height(value, max);
            if h == 0 {
                continue;
            }
            top = top.saturating_sub(h);
            let _ = write!(
                out,
                "<rect class=\"{part}\" x=\"{x}\" y=\"{top}\" width=\"{BAR_WIDTH}\" height=\"{h}\"/>"
            );
        }
        out.push_str("</g>");
    }
    out.push_str("</svg>");
}

/// The charts: a row per caller and per backend, requests (errors in red) and tokens a minute.
fn history_section(out: &mut String, h: &HistoryView) {
    let _ = write!(
        out,
        "<section id=\"history\"><h2>Last {} minutes</h2><p class=\"meta\">One bar a minute, \
the current minute on the right; errors in red.</p>",
        h.minutes
    );
    for (id, what, series) in [
        ("history-callers", "Caller", &h.callers),
        ("history-backends", "Backend", &h.backends),
    ] {
        let rows: Vec<Vec<String>> = series.iter().map(history_row).collect();
        table(out, id, &[what, "Requests and errors", "Tokens"], &rows);
    }
    out.push_str("</section>");
}

/// One series' cells: its name, its requests chart with totals, its tokens chart with total.
fn history_row(s: &SeriesView) -> Vec<String> {
    let requests: u64 = s.minutes.iter().map(|b| b.requests).sum();
    let errors: u64 = s.minutes.iter().map(|b| b.errors).sum();
    let tokens: u64 = s.minutes.iter().map(|b| b.tokens).sum();
    let mut calls = String::new();
    chart(
        &mut calls,
        "requests",
        &format!(
            "{}: {}, {}",
            s.name,
            count(requests, "request"),
            count(errors, "error")
        ),
        &s.minutes,
        |b| {
            (
                format!(
                    "{}: {}, {}",
                    minute_of(b.start),
                    count(b.requests, "request"),
                    count(b.errors, "error")
                ),
                vec![
                    ("err", b.errors.min(b.requests)),
                    ("req", b.requests.saturating_sub(b.errors)),
                ],
            )
        },
    );
    let _ = write!(
        calls,
        " <span class=\"total\">{} · <span class=\"{}\">{}</span></span>",
        count(requests, "request"),
        if errors > 0 { "bad" } else { "quiet" },
        count(errors, "error")
    );
    let mut used = String::new();
    chart(
        &mut used,
        "tokens",
        &format!("{}: {}", s.name, count(tokens, "token")),
        &s.minutes,
        |b| {
            (
                format!("{}: {}", minute_of(b.start), count(b.tokens, "token")),
                vec![("tok", b.tokens)],
            )
        },
    );
    let _ = write!(
        used,
        " <span class=\"total\">{}</span>",
        count(tokens, "token")
    );
    vec![escape(&s.name), calls, used]
}

/// The on-behalf-of exchange: the app, exchanges by result, users cached, the last failures
/// by code (a user's object id is an id, not a secret).
fn obo_section(out: &mut String, obo: &crate::identity::OboStatus) {
    let results: Vec<String> = obo
        .exchanges
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| format!("{} {n}", escape(r)))
        .collect();
    let _ = write!(
        out,
        "<section id=\"on-behalf-of\"><h2>On behalf of users</h2><dl><dt>App</dt><dd>{}</dd>\
<dt>Proved by</dt><dd>{}</dd><dt>Exchanges</dt><dd>{}</dd><dt>Users cached</dt><dd>{}</dd></dl>",
        escape(&obo.client_id),
        escape(obo.credential),
        if results.is_empty() {
            "none yet".to_string()
        } else {
            results.join(", ")
        },
        obo.cached_users,
    );
    let rows: Vec<Vec<String>> = obo
        .last_failures
        .iter()
        .map(|f| {
            vec![
                escape(&time_of(f.at)),
                format!("<code>{}</code>", escape(f.code)),
                f.aadsts
                    .map_or_else(|| "—".to_string(), |c| format!("AADSTS{c}")),
                escape(&f.oid),
                escape(crate::error::fix_for(f.code)),
            ]
        })
        .collect();
    table(
        out,
        "obo-failures",
        &["At", "Code", "Entra", "User", "Fix"],
        &rows,
    );
    out.push_str("</section>");
}

/// The page's icon: none, said inline, so a browser does not ask for `/favicon.ico` every time
/// it refreshes (and collect a refusal for it).
pub(crate) const NO_ICON: &str = "data:,";

/// The page: refreshes itself every 5 s; every dynamic string escaped.
pub(crate) fn html(v: &StatusView) -> String {
    let mut out = String::with_capacity(8192);
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta http-equiv=\"refresh\" content=\"5\"><title>entra-proxy status</title>\
<link rel=\"icon\" href=\"{NO_ICON}\">\
<style>{STYLE}</style></head><body><h1>entra-proxy status</h1>\
<p class=\"meta\">{}{} · refreshes every 5 s · <a href=\"/status.json\">JSON</a></p>",
        escape(&time_of(v.now)),
        match v.config_hash.get(..12) {
            Some(h) => format!(" · config {}", escape(h)),
            None => String::new(),
        },
    );

    let id = &v.identity;
    let _ = write!(
        out,
        "<section id=\"identity\"><h2>Identity</h2><dl><dt>Credential</dt><dd>{}</dd>\
<dt>Client id</dt><dd>{}</dd><dt>Object id</dt><dd>{}</dd><dt>Tenant</dt><dd>{}</dd></dl>",
        escape(&id.credential),
        opt(id.client_id.as_deref()),
        opt(id.object_id.as_deref()),
        opt(id.tenant_id.as_deref()),
    );
    let rows: Vec<Vec<String>> = id
        .scopes
        .iter()
        .map(|s| {
            vec![
                format!("<code>{}</code>", escape(&s.scope)),
                escape(&s.audience),
                match (s.has_token, s.expires_at, s.expires_in_secs) {
                    (true, Some(at), Some(left)) => format!(
                        "<span class=\"ok\">in {}</span> ({})",
                        countdown(left),
                        escape(&time_of(at))
                    ),
                    _ => "<span class=\"bad\">no token</span>".to_string(),
                },
                s.last_refresh
                    .map_or_else(|| "—".to_string(), |t| escape(&time_of(t))),
                opt(s.last_error.as_deref()),
            ]
        })
        .collect();
    table(
        &mut out,
        "scopes",
        &[
            "Scope",
            "Audience",
            "Token expires",
            "Last refresh",
            "Last error",
        ],
        &rows,
    );
    out.push_str("</section>");

    if let Some(obo) = &v.on_behalf_of {
        obo_section(&mut out, obo);
    }

    out.push_str("<section id=\"backends\"><h2>Backends</h2>");
    let rows: Vec<Vec<String>> = v
        .backends
        .iter()
        .map(|b| {
            vec![
                escape(&b.name),
                escape(&b.endpoint),
                format!("<code>{}</code>", escape(&b.scope)),
                match b.cooling_until {
                    Some(until) => format!(
                        "<span class=\"bad\">cooling down until {}</span>",
                        escape(&time_of(until))
                    ),
                    None => "<span class=\"ok\">ok</span>".to_string(),
                },
                opt(b.last_error.as_deref()),
            ]
        })
        .collect();
    table(
        &mut out,
        "backends",
        &["Name", "Endpoint", "Scope", "Health", "Last error"],
        &rows,
    );
    out.push_str("</section>");

    history_section(&mut out, &v.history);
    refusals_section(&mut out, &v.refusals);

    out.push_str("<section id=\"diagnoses\"><h2>Azure's refusals, diagnosed</h2>");
    let rows: Vec<Vec<String>> = v
        .diagnoses
        .iter()
        .map(|d| {
            vec![
                escape(&time_of(d.at)),
                format!("<code>{}</code>", escape(&d.request_id)),
                escape(&d.caller),
                escape(&d.path),
                d.status.to_string(),
                format!("<code>{}</code>", escape(&d.code)),
                escape(&d.fix),
            ]
        })
        .collect();
    table(
        &mut out,
        "diagnoses",
        &["Time", "Request", "Caller", "Path", "Status", "Code", "Fix"],
        &rows,
    );
    out.push_str("</section>");

    let _ = write!(
        out,
        "<section id=\"keys\"><h2>Callers (requests in the current {} s window)</h2>",
        v.keys.window_secs
    );
    let rows: Vec<Vec<String>> = v
        .keys
        .callers
        .iter()
        .map(|c| {
            vec![
                escape(&c.caller),
                c.requests.to_string(),
                c.errors.to_string(),
                c.usage.as_ref().map_or_else(|| "—".to_string(), usage_cell),
            ]
        })
        .collect();
    table(
        &mut out,
        "keys",
        &["Caller", "Requests", "Errors", "Tokens and quota"],
        &rows,
    );
    out.push_str("</section></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
    }

    #[test]
    fn countdown_reads_as_hours_minutes_seconds() {
        assert_eq!(countdown(3599), "59m 59s");
        assert_eq!(countdown(3661), "1h 1m 1s");
    }
}
