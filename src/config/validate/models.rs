//! `[[models]]`: OpenAI-style model names mapped to deployments on named backends, with
//! priority and weight per target.

use super::backends::{Backends, validate_deployment};
use crate::config::errors::Errors;
use crate::config::raw::{RawModel, RawPrice, RawTarget};
use crate::config::{DEFAULT_CURRENCY, Micros, Model, ModelTarget, Price};
use std::collections::HashSet;

/// Every `[[models]]` entry, valid or not, so that keys can name a model without repeating the
/// model's own problems.
pub(super) struct Models {
    valid: Vec<Model>,
    all_valid: bool,
    /// Every model name as written.
    names: Vec<String>,
    /// Every target deployment as written.
    deployments: HashSet<String>,
    /// The prices' one currency, and the model that named it first.
    currency: Option<(String, String)>,
}

impl Models {
    /// Whether `name` is a model, or a deployment one of them targets.
    pub(super) fn knows(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name) || self.deployments.contains(name)
    }

    pub(super) fn names(&self) -> Vec<&str> {
        self.names.iter().map(String::as_str).collect()
    }

    /// Every model, when all are valid.
    pub(super) fn into_valid(self) -> Option<Vec<Model>> {
        self.all_valid.then_some(self.valid)
    }

    /// The currency of the prices (the default when none names one).
    pub(super) fn currency(&self) -> String {
        self.currency
            .as_ref()
            .map_or(DEFAULT_CURRENCY.to_string(), |(c, _)| c.clone())
    }

    /// The names of the valid models none of whose deployments has a price: spend-free.
    pub(super) fn unpriced(&self) -> Vec<&str> {
        let priced = |t: &ModelTarget| {
            self.valid.iter().any(|m| {
                m.price.is_some()
                    && m.targets
                        .iter()
                        .any(|o| o.backend == t.backend && o.deployment == t.deployment)
            })
        };
        self.valid
            .iter()
            .filter(|m| !m.targets.iter().any(priced))
            .map(|m| m.name.as_str())
            .collect()
    }

    /// The names of the valid models, with the deployments each targets.
    pub(super) fn valid(&self) -> &[Model] {
        &self.valid
    }
}

pub(super) fn validate_models(
    raw: Vec<RawModel>,
    backends: &mut Backends,
    errors: &mut Errors,
) -> Models {
    let mut models = Models {
        valid: Vec::with_capacity(raw.len()),
        all_valid: true,
        names: raw.iter().map(|m| m.name.clone()).collect(),
        deployments: raw
            .iter()
            .flat_map(|m| {
                let single = m.deployment.iter();
                let targets = m.targets.iter().flatten().map(|t| &t.deployment);
                single.chain(targets).cloned()
            })
            .collect(),
        currency: None,
    };
    let mut seen = HashSet::new();
    for (i, m) in raw.into_iter().enumerate() {
        let at = format!("models[{i}]");
        let before = errors.len();
        if m.name.trim().is_empty() {
            errors.add(format!("{at}.name"), "is empty");
        } else if !seen.insert(m.name.clone()) {
            errors.add(
                format!("{at}.name"),
                format!("duplicate model name {:?}", m.name),
            );
        }
        let name = m.name.clone();
        let price = m
            .price
            .as_ref()
            .and_then(|p| price(p, &at, &mut models.currency, errors));
        let completion_reservation = super::limits::completion_reservation(
            m.completion_reservation,
            &format!("{at}.completion_reservation"),
            errors,
        );
        let targets = targets_as_written(m, &at, errors)
            .map(|targets| validate_targets(targets, backends, errors));
        match targets {
            Some(targets) if errors.len() == before => models.valid.push(Model {
                name,
                targets,
                price,
                completion_reservation,
            }),
            _ => models.all_valid = false,
        }
    }
    one_price_per_deployment(&models.valid, errors);
    models
}

/// A deployment targeted by two models has one price: a request routed to it is charged
/// whichever model it came by. Two models naming different prices for it are an error; one
/// naming none takes the other's.
fn one_price_per_deployment(models: &[Model], errors: &mut Errors) {
    let mut seen: std::collections::HashMap<(usize, &str), &Model> = Default::default();
    for (i, m) in models.iter().enumerate() {
        let Some(price) = m.price else {
            continue;
        };
        for t in &m.targets {
            match seen.get(&(t.backend, t.deployment.as_str())) {
                Some(other) if other.price != Some(price) => errors.add(
                    format!("models[{i}].price"),
                    format!(
                        "model {:?} and model {:?} both target deployment {:?} with different prices; a deployment has one price, so give both the same",
                        other.name, m.name, t.deployment
                    ),
                ),
                Some(_) => {}
                None => {
                    seen.insert((t.backend, t.deployment.as_str()), m);
                }
            }
        }
    }
}

/// The most money a price or budget may name, in currency units: micro-units of it still fit
/// every sum of counters exactly (also in Redis' Lua, whose numbers are doubles).
pub(super) const MAX_MONEY: f64 = 1e9;

/// An amount of money at `key` in micro-units: finite, not negative (above zero unless
/// `zero_ok`), at most [`MAX_MONEY`].
pub(super) fn money(v: f64, key: &str, zero_ok: bool, errors: &mut Errors) -> Option<Micros> {
    let low = if zero_ok { v >= 0.0 } else { v > 0.0 };
    if !(v.is_finite() && low && v <= MAX_MONEY) {
        let least = if zero_ok { "0" } else { "more than 0" };
        errors.add(
            key,
            format!(
                "{v} is not an amount: use {least} up to {MAX_MONEY} (currency units, e.g. 2.50)"
            ),
        );
        return None;
    }
    Some((v * 1e6).round() as Micros)
}

/// `models[i].price`: per million tokens, every model in one currency.
fn price(
    raw: &RawPrice,
    at: &str,
    currency: &mut Option<(String, String)>,
    errors: &mut Errors,
) -> Option<Price> {
    let named = raw.currency.as_deref().unwrap_or(DEFAULT_CURRENCY).trim();
    if named.is_empty() || named.len() > 8 || !named.chars().all(|c| c.is_ascii_alphanumeric()) {
        errors.add(
            format!("{at}.price.currency"),
            format!("{named:?} is not a currency code; use one such as USD or EUR"),
        );
    } else {
        match currency {
            Some((first, by)) if first != named => errors.add(
                format!("{at}.price.currency"),
                format!(
                    "{named:?} differs from {first:?} ({by}): budgets are counted in one currency, so every price must name the same"
                ),
            ),
            Some(_) => {}
            None => *currency = Some((named.to_string(), format!("{at}.price"))),
        }
    }
    let input = money(
        raw.input_per_1m,
        &format!("{at}.price.input_per_1m"),
        true,
        errors,
    );
    let output = money(
        raw.output_per_1m,
        &format!("{at}.price.output_per_1m"),
        true,
        errors,
    );
    let cached = match raw.cached_input_per_1m {
        None => input,
        Some(v) => money(v, &format!("{at}.price.cached_input_per_1m"), true, errors),
    };
    Some(Price {
        input_per_1m: input?,
        cached_input_per_1m: cached?,
        output_per_1m: output?,
    })
}

/// The targets of a model, each with its key: `targets = [...]`, or one from
/// `backend` + `deployment`.
fn targets_as_written(
    m: RawModel,
    at: &str,
    errors: &mut Errors,
) -> Option<Vec<(String, RawTarget)>> {
    match (m.targets, m.backend, m.deployment) {
        (Some(targets), None, None) => {
            if targets.is_empty() {
                return errors.reject(
                    format!("{at}.targets"),
                    "list at least one { backend, deployment }",
                );
            }
            let keyed = targets
                .into_iter()
                .enumerate()
                .map(|(j, t)| (format!("{at}.targets[{j}]"), t));
            Some(keyed.collect())
        }
        (None, Some(backend), Some(deployment)) => Some(vec![(
            at.to_string(),
            RawTarget {
                backend,
                deployment,
                priority: 0,
                weight: None,
            },
        )]),
        (Some(_), _, _) => errors.reject(
            at,
            "use either targets = [...] or backend + deployment, not both",
        ),
        (None, None, _) => {
            errors.reject(format!("{at}.backend"), "missing (or use targets = [...])")
        }
        (None, Some(_), None) => errors.reject(format!("{at}.deployment"), "missing"),
    }
}

/// Resolves each target's backend and checks its deployment and weight; valid deployments are
/// noted as known on their backend.
fn validate_targets(
    raw: Vec<(String, RawTarget)>,
    backends: &mut Backends,
    errors: &mut Errors,
) -> Vec<ModelTarget> {
    let mut targets = Vec::with_capacity(raw.len());
    for (at, t) in raw {
        let backend = backends.position(&t.backend);
        if backend.is_none() {
            errors.add(
                format!("{at}.backend"),
                format!(
                    "no backend named {:?} (backends: {})",
                    t.backend,
                    backends.names().join(", ")
                ),
            );
        }
        let deployment = errors.check(
            format!("{at}.deployment"),
            validate_deployment(&t.deployment),
        );
        let weight = t.weight.unwrap_or(1);
        if weight == 0 {
            errors.add(
                format!("{at}.weight"),
                "must be at least 1 (remove the target to disable it)",
            );
        }
        if let (Some(backend), Some(()), 1..) = (backend, deployment, weight) {
            backends.add_deployment(backend, &t.deployment);
            targets.push(ModelTarget {
                backend,
                deployment: t.deployment,
                priority: t.priority,
                weight,
            });
        }
    }
    targets
}
