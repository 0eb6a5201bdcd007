//! `entra_proxy_tokens_total`: the counters of one label set (caller, model, deployment,
//! backend), registered once per label set and thread, then found without allocating; and
//! `entra_proxy_spend_total` of a caller and a priced model, the same way.

use super::usage::Usage;
use crate::inbound::CallerLabel;
use std::sync::Arc;

/// The `entra_proxy_tokens_total` counters (prompt, completion, total) of one label set.
pub(crate) struct TokenCounters {
    counters: Arc<[metrics::Counter; 3]>,
}

/// The labels of one answer's tokens, each bounded by the config: the caller's label, the model
/// and deployment as configured (else `unconfigured`, or empty when the request named none),
/// the backend's name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenLabels<'a> {
    pub(crate) caller: &'a CallerLabel,
    pub(crate) model: &'a str,
    pub(crate) deployment: &'a str,
    pub(crate) backend: &'a str,
}

impl TokenCounters {
    /// The counters of `labels`: registered on first use on this thread, then looked up by a
    /// hash of the label parts without formatting the caller's label.
    pub(crate) fn of(labels: TokenLabels<'_>) -> TokenCounters {
        use crate::fast_hash::{FastMap, FastState};
        use std::cell::RefCell;
        use std::hash::BuildHasher as _;
        type Cached = (Box<[String; 4]>, Arc<[metrics::Counter; 3]>);
        thread_local! {
            static COUNTERS: RefCell<(FastState, FastMap<u64, Cached>)> =
                RefCell::new((FastState::default(), FastMap::default()));
        }
        let TokenLabels {
            caller,
            model,
            deployment,
            backend,
        } = labels;
        let (prefix, name) = caller.parts();
        let parts = [prefix, name, model, deployment, backend];
        let same = |kept: &[String; 4]| {
            kept[0].strip_prefix(prefix) == Some(name)
                && kept[1] == model
                && kept[2] == deployment
                && kept[3] == backend
        };
        let register = || {
            let kept = [
                format!("{prefix}{name}"),
                model.to_string(),
                deployment.to_string(),
                backend.to_string(),
            ];
            let counters = ["prompt", "completion", "total"].map(|kind| {
                metrics::counter!(
                    "entra_proxy_tokens_total",
                    "key" => kept[0].clone(),
                    "model" => kept[1].clone(),
                    "deployment" => kept[2].clone(),
                    "backend" => kept[3].clone(),
                    "kind" => kind
                )
            });
            (Box::new(kept), Arc::new(counters))
        };
        let counters = COUNTERS.with(|cell| {
            let (hasher, cache) = &mut *cell.borrow_mut();
            let hash = hasher.hash_one(parts);
            match cache.get(&hash) {
                Some((kept, counters)) if same(kept) => counters.clone(),
                // Another label set with the same hash: registered, not cached.
                Some(_) => register().1,
                None => cache.entry(hash).or_insert_with(register).1.clone(),
            }
        });
        TokenCounters { counters }
    }

    /// Adds `usage` to `entra_proxy_tokens_total`.
    pub(crate) fn count(&self, usage: &Usage) {
        let [prompt, completion, total] = &*self.counters;
        prompt.increment(usage.prompt);
        completion.increment(usage.completion);
        total.increment(usage.total);
    }
}

/// `entra_proxy_spend_total` of `caller` on `model` (a configured model with a price): registered
/// on first use on this thread, then looked up by a hash of the labels without formatting.
pub(crate) fn spend_counter(caller: &CallerLabel, model: &str) -> metrics::Counter {
    use crate::fast_hash::{FastMap, FastState};
    use std::cell::RefCell;
    use std::hash::BuildHasher as _;
    type Cached = (Box<[String; 2]>, metrics::Counter);
    thread_local! {
        static SPEND: RefCell<(FastState, FastMap<u64, Cached>)> =
            RefCell::new((FastState::default(), FastMap::default()));
    }
    let (prefix, name) = caller.parts();
    let same = |kept: &[String; 2]| kept[0].strip_prefix(prefix) == Some(name) && kept[1] == model;
    let register = || {
        let kept = [format!("{prefix}{name}"), model.to_string()];
        let counter = metrics::counter!(
            "entra_proxy_spend_total",
            "key" => kept[0].clone(),
            "model" => kept[1].clone()
        );
        (Box::new(kept), counter)
    };
    SPEND.with(|cell| {
        let (hasher, cache) = &mut *cell.borrow_mut();
        let hash = hasher.hash_one((prefix, name, model));
        match cache.get(&hash) {
            Some((kept, counter)) if same(kept) => counter.clone(),
            Some(_) => register().1,
            None => cache.entry(hash).or_insert_with(register).1.clone(),
        }
    })
}
