//! `[[keys]]`: the client keys the proxy accepts, as SHA-256 digests, with their expiry, rate
//! limit and the models each may use.

use super::backends::Backends;
use super::models::Models;
use crate::config::errors::Errors;
use crate::config::raw::RawKey;
use crate::config::{KeyDigest, KeyEntry, Micros, QuotaPeriod};
use std::collections::{HashMap, HashSet};

pub(super) fn validate_keys(
    raw: Vec<RawKey>,
    models: &Models,
    backends: &Backends,
    errors: &mut Errors,
) -> Option<Vec<KeyEntry>> {
    let mut keys = Vec::with_capacity(raw.len());
    // Where each name was first defined, to name both places of a duplicate.
    let mut names: HashMap<String, String> = HashMap::new();
    let mut digests = HashSet::new();
    let before = errors.len();
    let (mut in_main, mut in_file) = (0, 0);
    for k in raw {
        // Keys from a keys file are numbered within that file and named with it.
        let (at, place) = match &k.file {
            None => {
                in_main += 1;
                let at = format!("keys[{}]", in_main - 1);
                (at.clone(), format!("{at} of the main config"))
            }
            Some(file) => {
                in_file += 1;
                let at = format!("{file}: keys[{}]", in_file - 1);
                (at.clone(), at)
            }
        };
        if k.name.trim().is_empty() {
            errors.add(format!("{at}.name"), "is empty");
        } else if let Some(first) = names.get(&k.name) {
            errors.add(
                format!("{at}.name"),
                format!("duplicate key name {:?} (also defined at {first})", k.name),
            );
        } else {
            names.insert(k.name.clone(), place);
        }
        let digest = errors.check(format!("{at}.sha256"), KeyDigest::parse(&k.sha256));
        if let Some(d) = digest
            && !digests.insert(d)
        {
            errors.add(
                format!("{at}.sha256"),
                "the same digest is already used by another key",
            );
        }
        if let Some(key) = validate_key(k, &at, digest, models, backends, errors) {
            keys.push(key);
        }
    }
    (errors.len() == before).then_some(keys)
}

/// The rest of one key: expiry, rate limit and the models it names.
fn validate_key(
    k: RawKey,
    at: &str,
    digest: Option<KeyDigest>,
    models: &Models,
    backends: &Backends,
    errors: &mut Errors,
) -> Option<KeyEntry> {
    let expires = match &k.expires {
        None => Some(None),
        Some(e) => errors
            .check(
                format!("{at}.expires"),
                time::OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| {
                        format!("{e:?} is not an RFC 3339 time such as 2027-01-01T00:00:00Z")
                    }),
            )
            .map(Some),
    };
    if k.requests_per_minute == Some(0) {
        errors.add(
            format!("{at}.requests_per_minute"),
            "must be at least 1 (remove the key to block it)",
        );
    }
    let tokens_per_minute = positive(
        k.tokens_per_minute,
        &format!("{at}.tokens_per_minute"),
        errors,
    );
    let token_quota = positive(k.token_quota, &format!("{at}.token_quota"), errors);
    let token_quota_period = quota_period(
        k.token_quota_period.as_deref(),
        k.token_quota.is_some(),
        at,
        errors,
    );
    let budget = budget(k.budget, k.budget_period.as_deref(), at, errors);
    for (j, m) in k.models.iter().enumerate() {
        if !models.knows(m) && !backends.has_deployment(m) {
            errors.add(
                format!("{at}.models[{j}]"),
                format!(
                    "{m:?} is not a configured model or deployment (models: {})",
                    models.names().join(", ")
                ),
            );
        }
    }
    Some(KeyEntry {
        name: k.name,
        digest: digest?,
        legacy: k.legacy,
        models: k.models,
        expires: expires?,
        requests_per_minute: k.requests_per_minute,
        tokens_per_minute: tokens_per_minute?,
        token_quota: token_quota?,
        token_quota_period: token_quota_period?,
        budget_micros: budget?.0,
        budget_period: budget?.1,
    })
}

/// `budget` and `budget_period` at `at`: money per calendar day, week or month (UTC); the
/// period only beside a budget.
pub(super) fn budget(
    amount: Option<f64>,
    period: Option<&str>,
    at: &str,
    errors: &mut Errors,
) -> Option<(Option<Micros>, QuotaPeriod)> {
    if period.is_some() && amount.is_none() {
        errors.add(
            format!("{at}.budget_period"),
            "is set without budget (set the budget too, or remove the period)",
        );
    }
    let period = match period {
        None => Some(QuotaPeriod::Month),
        Some(p) => errors.check(
            format!("{at}.budget_period"),
            QuotaPeriod::parse(p)
                .filter(|p| *p != QuotaPeriod::Hour)
                .ok_or_else(|| {
                    format!("{p:?} is not a budget period; use one of day, week, month (calendar periods in UTC)")
                }),
        ),
    };
    let micros = match amount {
        None => Some(None),
        Some(v) => super::models::money(v, &format!("{at}.budget"), false, errors).map(Some),
    };
    Some((micros?, period?))
}

/// `token_quota_period` at `at`: a calendar period, only beside a quota.
pub(super) fn quota_period(
    period: Option<&str>,
    has_quota: bool,
    at: &str,
    errors: &mut Errors,
) -> Option<crate::config::QuotaPeriod> {
    if period.is_some() && !has_quota {
        errors.add(
            format!("{at}.token_quota_period"),
            "is set without token_quota (set the quota too, or remove the period)",
        );
    }
    match period {
        None => Some(crate::config::QuotaPeriod::default()),
        Some(p) => errors.check(
            format!("{at}.token_quota_period"),
            crate::config::QuotaPeriod::parse(p).ok_or_else(|| {
                format!(
                    "{p:?} is not a quota period; use one of {} (calendar periods in UTC)",
                    crate::config::QuotaPeriod::NAMES.join(", ")
                )
            }),
        ),
    }
}

/// A token limit: absent, or at least 1.
pub(super) fn positive(v: Option<i64>, key: &str, errors: &mut Errors) -> Option<Option<u64>> {
    match v {
        None => Some(None),
        Some(n) if n >= 1 => Some(Some(n as u64)),
        Some(n) => {
            errors.add(
                key,
                format!("{n} is not a limit: it must be at least 1 (remove the key to block it)"),
            );
            None
        }
    }
}
