//! What the status page shows about recent traffic, kept in memory and bounded: the last
//! diagnoses and each caller's requests in the current one-minute window. Outlives reloads.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// How many diagnoses are kept.
pub(crate) const DIAGNOSES_KEPT: usize = 50;
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

/// One caller's requests in the current window.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CallerWindow {
    pub caller: String,
    pub requests: u64,
    /// Of those, answered with a status of 400 or more.
    pub errors: u64,
}

#[derive(Debug, Default)]
struct Window {
    /// Unix seconds / WINDOW_SECS of the window counted in `callers`.
    index: u64,
    callers: HashMap<String, (u64, u64)>,
}

/// The bounded memory behind the status page.
#[derive(Debug, Default)]
pub struct Recent {
    diagnoses: Mutex<VecDeque<DiagnosisRecord>>,
    window: Mutex<Window>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The `key` label of `entra_proxy_key_requests_total`: key names as they are (bounded by the
/// config); Entra and app callers by kind only, so clients cannot grow the label set.
pub(crate) fn key_label(caller: &str) -> &str {
    match caller.split_once(':') {
        Some(("key" | "legacy-key", _)) => caller,
        Some((kind, _)) => kind,
        None => caller,
    }
}

impl Recent {
    /// One answered request of `caller` with `status`.
    pub fn request(&self, caller: &str, status: u16) {
        use std::cell::RefCell;
        thread_local! {
            // Counter handles by (key label, status), registered once per thread: the hot path
            // neither builds label sets nor looks up the registry.
            static COUNTERS: RefCell<HashMap<String, HashMap<u16, metrics::Counter>>> =
                RefCell::new(HashMap::new());
        }
        let error = status >= 400;
        let key = key_label(caller);
        COUNTERS.with(|c| {
            let mut c = c.borrow_mut();
            if !c.contains_key(key) {
                c.insert(key.to_string(), HashMap::new());
            }
            if let Some(by_status) = c.get_mut(key) {
                by_status
                    .entry(status)
                    .or_insert_with(|| {
                        metrics::counter!(
                            "entra_proxy_key_requests_total",
                            "key" => key.to_string(),
                            "status" => status.to_string()
                        )
                    })
                    .increment(1);
            }
        });
        let index = now() / WINDOW_SECS;
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if w.index != index {
            w.index = index;
            w.callers.clear();
        }
        let full = w.callers.len() >= CALLERS_KEPT;
        match w.callers.get_mut(caller) {
            Some(c) => {
                c.0 += 1;
                c.1 += u64::from(error);
            }
            None if !full => {
                w.callers.insert(caller.to_string(), (1, u64::from(error)));
            }
            None => {}
        }
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

    /// The kept diagnoses, newest first.
    pub fn diagnoses(&self) -> Vec<DiagnosisRecord> {
        let d = self.diagnoses.lock().unwrap_or_else(|p| p.into_inner());
        d.iter().rev().cloned().collect()
    }

    /// Requests per caller in the current window, by caller label.
    pub fn callers(&self) -> Vec<CallerWindow> {
        let index = now() / WINDOW_SECS;
        let w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if w.index != index {
            return Vec::new();
        }
        let mut out: Vec<CallerWindow> = w
            .callers
            .iter()
            .map(|(caller, (requests, errors))| CallerWindow {
                caller: caller.clone(),
                requests: *requests,
                errors: *errors,
            })
            .collect();
        out.sort_by(|a, b| a.caller.cmp(&b.caller));
        out
    }
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
    fn no_diagnosis_records_nothing() {
        let r = Recent::default();
        r.diagnosis("1", "key:a", "/p", "b", 401, None);
        assert!(r.diagnoses().is_empty());
    }

    #[test]
    fn counts_requests_and_errors_per_caller() {
        let r = Recent::default();
        r.request("key:a", 200);
        r.request("key:a", 401);
        r.request("entra:x", 200);
        let c = r.callers();
        // Unless the minute turned between the calls.
        if c.len() == 2 {
            assert_eq!(c[1].caller, "key:a");
            assert_eq!((c[1].requests, c[1].errors), (2, 1));
        }
    }

    #[test]
    fn metric_key_labels_are_bounded_by_the_config() {
        assert_eq!(key_label("key:team-a"), "key:team-a");
        assert_eq!(key_label("legacy-key:old"), "legacy-key:old");
        assert_eq!(key_label("entra:1234"), "entra");
        assert_eq!(key_label("app:abcd"), "app");
        assert_eq!(key_label("anonymous"), "anonymous");
    }
}
