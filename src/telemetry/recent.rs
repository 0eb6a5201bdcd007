//! What the status page shows about recent traffic, kept in memory and bounded: the last
//! diagnoses of Azure's refusals, the last of the proxy's own refusals (each in a list of its
//! own, so a flood of one cannot push out the other), and each caller's requests in the current
//! one-minute window. Outlives reloads.

use crate::fast_hash::FastMap;
use crate::inbound::{Caller, CallerLabel};
use arc_swap::ArcSwap;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// How many diagnoses are kept.
pub(crate) const DIAGNOSES_KEPT: usize = 50;
/// How many of the proxy's own refusals are kept.
pub(crate) const REFUSALS_KEPT: usize = 50;
/// The longest path kept with a refusal (a client chooses it; the rest is cut).
const REFUSAL_PATH_KEPT: usize = 256;
/// The length of the per-caller request window.
pub(crate) const WINDOW_SECS: u64 = 60;
/// Callers counted at most per window (Entra and app callers are not bounded by the config).
const CALLERS_KEPT: usize = 1024;

/// One diagnosed Azure answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiagnosisRecord {
    /// Unix seconds.
    pub at: i64,
    pub request_id: String,
    /// The caller's label (`key:team-a`, `entra:<app id>`, …): never a credential.
    pub caller: String,
    pub path: String,
    pub backend: String,
    pub status: u16,
    /// The classification code, e.g. `audience-mismatch`.
    pub code: String,
    /// The fix, in one sentence.
    pub fix: String,
}

/// One request the proxy answered itself with an error (it never reached Azure, or Azure could
/// not be reached).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RefusalRecord {
    /// Unix seconds.
    pub at: i64,
    pub request_id: String,
    /// The caller's label when the credential was accepted (`key:team-a`, …); `None` when the
    /// credential itself was refused or none was read. Never a credential.
    pub caller: Option<String>,
    pub method: String,
    /// The path (never the query, which may hold a key), cut at 256 characters.
    pub path: String,
    pub status: u16,
    /// The answer body's `error.code`, e.g. `invalid_api_key`.
    pub code: String,
    /// The fix, in one sentence.
    pub fix: String,
}

impl RefusalRecord {
    /// A refusal now.
    pub fn new(
        request_id: &str,
        caller: Option<String>,
        method: &str,
        path: &str,
        status: u16,
        code: &str,
        fix: &str,
    ) -> RefusalRecord {
        let path = match path.char_indices().nth(REFUSAL_PATH_KEPT) {
            Some((cut, _)) => format!("{}…", &path[..cut]),
            None => path.to_string(),
        };
        RefusalRecord {
            at: now() as i64,
            request_id: request_id.to_string(),
            caller,
            method: method.to_string(),
            path,
            status,
            code: code.to_string(),
            fix: fix.to_string(),
        }
    }
}

/// One caller's requests in the current window.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CallerWindow {
    pub caller: String,
    pub requests: u64,
    /// Of those, answered with a status of 400 or more.
    pub errors: u64,
}

/// The other callers' window (Entra and app callers, by their caller label).
#[derive(Debug, Default)]
struct Window {
    /// Unix seconds / WINDOW_SECS of the window counted in `callers`.
    index: u64,
    callers: HashMap<String, (u64, u64)>,
}

/// One configured key's requests in the current window, counted without a lock.
#[derive(Debug)]
struct KeyWindow {
    /// Tells this key's per-thread counter handles apart from every other's in the process.
    id: u64,
    /// The key's metric label ([`crate::config::CallerLabel`]).
    label: String,
    /// Unix seconds / WINDOW_SECS of the window counted.
    index: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
}

impl KeyWindow {
    /// Counts one request in window `index`. At the turn of a minute a request racing the
    /// reset may land in the old window: the counts are for people, not for limits.
    fn count(&self, index: u64, error: bool) {
        let seen = self.index.load(Ordering::Relaxed);
        if seen != index
            && self
                .index
                .compare_exchange(seen, index, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.requests.store(0, Ordering::Relaxed);
            self.errors.store(0, Ordering::Relaxed);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn read(&self, index: u64) -> (u64, u64) {
        if self.index.load(Ordering::Acquire) != index {
            return (0, 0);
        }
        (
            self.requests.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}

/// The bounded memory behind the status page.
#[derive(Debug, Default)]
pub struct Recent {
    diagnoses: Mutex<VecDeque<DiagnosisRecord>>,
    refusals: Mutex<VecDeque<RefusalRecord>>,
    /// Configured keys by name, resolved when a config is installed: a key's request takes no
    /// lock and builds no string. Only grows (bounded by the keys ever configured).
    keys: ArcSwap<FastMap<CallerLabel, Arc<KeyWindow>>>,
    adding: Mutex<()>,
    window: Mutex<Window>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Who a per-thread counter handle is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Counted {
    /// A configured key, by its [`KeyWindow`]'s id.
    Key(u64),
    /// A kind of caller without a key.
    Kind(&'static str),
}

impl Recent {
    /// Resolves the counters of the configured keys and identities (at start and on every
    /// reload): by their labels (`key:a`, `legacy-key:b`, `identity:c`).
    pub fn register(&self, labels: impl IntoIterator<Item = CallerLabel>) {
        let _adding = self.adding.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.keys.load_full();
        let missing: Vec<CallerLabel> = labels
            .into_iter()
            .filter(|label| !current.contains_key(label))
            .collect();
        if missing.is_empty() {
            return;
        }
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let mut next = (*current).clone();
        for label in missing {
            let shown = label.to_string();
            next.insert(
                label,
                Arc::new(KeyWindow {
                    id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                    label: shown,
                    index: AtomicU64::new(0),
                    requests: AtomicU64::new(0),
                    errors: AtomicU64::new(0),
                }),
            );
        }
        self.keys.store(Arc::new(next));
    }

    /// One answered request of `caller` with `status`: `entra_proxy_key_requests_total` and the
    /// status page's window.
    pub fn request(&self, caller: &Caller, status: u16) {
        let error = status >= 400;
        let index = now() / WINDOW_SECS;
        let keys = self.keys.load();
        let key = keys.get(&caller.label);
        match key {
            Some(w) => {
                w.count(index, error);
                let id = Counted::Key(w.id);
                count_metric(id, status, || w.label.clone());
            }
            None => {
                // A key this state does not know (a test's hand-built caller): counted by kind.
                let kind = caller.label.kind().unwrap_or("unregistered-key");
                count_metric(Counted::Kind(kind), status, || kind.to_string());
                self.count_other(caller, index, error);
            }
        }
    }

    /// An Entra or app caller's request in the window, by caller label and principal
    /// (`entra:<app id>`, written into a reused per-thread buffer: a caller already seen this
    /// minute costs no allocation).
    fn count_other(&self, caller: &Caller, index: u64, error: bool) {
        use std::cell::RefCell;
        use std::fmt::Write as _;
        thread_local! {
            static LABEL: RefCell<String> = const { RefCell::new(String::new()) };
        }
        LABEL.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            let _ = write!(buf, "{}", caller.label);
            if let Some(principal) = caller.principal() {
                let _ = write!(buf, ":{principal}");
            }
            let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
            if w.index != index {
                w.index = index;
                w.callers.clear();
            }
            let full = w.callers.len() >= CALLERS_KEPT;
            match w.callers.get_mut(buf.as_str()) {
                Some(c) => {
                    c.0 += 1;
                    c.1 += u64::from(error);
                }
                None if !full => {
                    w.callers.insert(buf.clone(), (1, u64::from(error)));
                }
                None => {}
            }
        });
    }

    /// Records a diagnosis given as its header line (`code: summary; fix: fix`); `None` (an
    /// answer the proxy could not explain) records nothing.
    pub fn diagnosis(
        &self,
        request_id: &str,
        caller: &str,
        path: &str,
        backend: &str,
        status: u16,
        line: Option<&str>,
    ) {
        let Some(line) = line else {
            return;
        };
        let (code, rest) = line.split_once(": ").unwrap_or(("unknown", line));
        let fix = rest
            .rsplit_once("; fix: ")
            .map_or(rest, |(_, fix)| fix)
            .to_string();
        let record = DiagnosisRecord {
            at: now() as i64,
            request_id: request_id.to_string(),
            caller: caller.to_string(),
            path: path.to_string(),
            backend: backend.to_string(),
            status,
            code: code.to_string(),
            fix,
        };
        let mut d = self.diagnoses.lock().unwrap_or_else(|p| p.into_inner());
        if d.len() == DIAGNOSES_KEPT {
            d.pop_front();
        }
        d.push_back(record);
    }

    /// Records one of the proxy's own refusals.
    pub fn refusal(&self, record: RefusalRecord) {
        let mut r = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() == REFUSALS_KEPT {
            r.pop_front();
        }
        r.push_back(record);
    }

    /// The kept refusals, newest first.
    pub fn refusals(&self) -> Vec<RefusalRecord> {
        let r = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        r.iter().rev().cloned().collect()
    }

    /// The kept diagnoses, newest first.
    pub fn diagnoses(&self) -> Vec<DiagnosisRecord> {
        let d = self.diagnoses.lock().unwrap_or_else(|p| p.into_inner());
        d.iter().rev().cloned().collect()
    }

    /// Requests in the current window: every configured key's and identity's (by label, zero
    /// included), and every other caller seen (by caller label and principal).
    pub fn callers(&self) -> (HashMap<String, CallerWindow>, Vec<CallerWindow>) {
        let index = now() / WINDOW_SECS;
        let keys = self
            .keys
            .load()
            .values()
            .map(|w| {
                let (requests, errors) = w.read(index);
                let window = CallerWindow {
                    caller: w.label.clone(),
                    requests,
                    errors,
                };
                (w.label.clone(), window)
            })
            .collect();
        let w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let mut others: Vec<CallerWindow> = if w.index != index {
            Vec::new()
        } else {
            w.callers
                .iter()
                .map(|(caller, (requests, errors))| CallerWindow {
                    caller: caller.clone(),
                    requests: *requests,
                    errors: *errors,
                })
                .collect()
        };
        others.sort_by(|a, b| a.caller.cmp(&b.caller));
        (keys, others)
    }
}

/// Counts `entra_proxy_key_requests_total{key, status}` through a handle registered once per
/// thread: the hot path neither builds label sets nor looks up the registry.
fn count_metric(id: Counted, status: u16, label: impl FnOnce() -> String) {
    use std::cell::RefCell;
    thread_local! {
        static COUNTERS: RefCell<FastMap<(Counted, u16), metrics::Counter>> =
            RefCell::new(FastMap::default());
    }
    COUNTERS.with(|c| {
        c.borrow_mut()
            .entry((id, status))
            .or_insert_with(|| {
                metrics::counter!(
                    "entra_proxy_key_requests_total",
                    "key" => label(),
                    "status" => status.to_string()
                )
            })
            .increment(1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_fifty_diagnoses_newest_first() {
        let r = Recent::default();
        for i in 0..60 {
            let id = i.to_string();
            r.diagnosis(&id, "key:a", "/p", "b", 401, Some("code-x: s; fix: do it."));
        }
        let d = r.diagnoses();
        assert_eq!(d.len(), DIAGNOSES_KEPT);
        assert_eq!(d[0].request_id, "59");
        assert_eq!(d[49].request_id, "10");
        assert_eq!(d[0].code, "code-x");
        assert_eq!(d[0].fix, "do it.");
    }

    #[test]
    fn refusals_keep_a_list_of_their_own() {
        let r = Recent::default();
        r.diagnosis("d", "key:a", "/p", "b", 401, Some("code-x: s; fix: do it."));
        for i in 0..REFUSALS_KEPT + 10 {
            let record = RefusalRecord::new(
                &i.to_string(),
                None,
                "POST",
                "/p",
                401,
                "invalid_api_key",
                "f.",
            );
            r.refusal(record);
        }
        let refused = r.refusals();
        assert_eq!(refused.len(), REFUSALS_KEPT);
        assert_eq!(refused[0].request_id, (REFUSALS_KEPT + 9).to_string());
        // The flood of refusals left the diagnosis alone.
        assert_eq!(r.diagnoses().len(), 1);
        let long = RefusalRecord::new("x", None, "GET", &"é".repeat(1000), 404, "no_route", "f.");
        assert_eq!(long.path.chars().count(), REFUSAL_PATH_KEPT + 1);
    }

    #[test]
    fn no_diagnosis_records_nothing() {
        let r = Recent::default();
        r.diagnosis("1", "key:a", "/p", "b", 401, None);
        assert!(r.diagnoses().is_empty());
    }

    fn key(name: &str, legacy: bool) -> crate::config::KeyEntry {
        crate::config::KeyEntry {
            name: name.into(),
            digest: crate::config::KeyDigest::of("k"),
            legacy,
            models: vec![],
            expires: None,
            requests_per_minute: None,
            tokens_per_minute: None,
            token_quota: None,
            token_quota_period: Default::default(),
            budget_micros: None,
            budget_period: Default::default(),
        }
    }

    fn labels(keys: &[crate::config::KeyEntry]) -> Vec<CallerLabel> {
        keys.iter()
            .map(|k| CallerLabel::key(&k.name, k.legacy))
            .collect()
    }

    fn virtual_key(name: &str) -> Caller {
        Caller {
            label: crate::inbound::CallerLabel::Key(name.into()),
            user: None,
            policy: Some(Arc::new(crate::inbound::Policy {
                per_user: None,
                models: vec![],
                expires: None,
                account: crate::limits::Limits::in_memory()
                    .account(crate::limits::BudgetKey::key(name), Default::default()),
            })),
            held: crate::inbound::Held::Key,
        }
    }

    #[test]
    fn counts_requests_and_errors_per_caller() {
        let r = Recent::default();
        r.register(labels(&[key("a", false), key("old", true)]));
        let before = now() / WINDOW_SECS;
        r.request(&virtual_key("a"), 200);
        r.request(&virtual_key("a"), 401);
        r.request(&Caller::anonymous(), 200);
        let (keys, others) = r.callers();
        // Unless the minute turned between the calls.
        if now() / WINDOW_SECS == before {
            let a = &keys["key:a"];
            assert_eq!((a.caller.as_str(), a.requests, a.errors), ("key:a", 2, 1));
            let old = &keys["legacy-key:old"];
            assert_eq!((old.caller.as_str(), old.requests), ("legacy-key:old", 0));
            assert_eq!(others.len(), 1);
            assert_eq!(
                (others[0].caller.as_str(), others[0].requests),
                ("anonymous", 1)
            );
        }
    }

    #[test]
    fn a_reload_keeps_the_counts_of_keys_that_stay() {
        let r = Recent::default();
        r.register(labels(&[key("a", false)]));
        r.request(&virtual_key("a"), 200);
        r.register(labels(&[key("a", false), key("b", false)]));
        let (keys, _) = r.callers();
        assert!(keys["key:a"].requests <= 1 && keys.contains_key("key:b"));
    }

    #[test]
    fn a_key_the_state_does_not_know_is_counted_as_one_kind() {
        let r = Recent::default();
        r.request(&virtual_key("never-configured"), 200);
        let (keys, others) = r.callers();
        assert!(keys.is_empty());
        assert_eq!(others.len(), 1);
    }
}
