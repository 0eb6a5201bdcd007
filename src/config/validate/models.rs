//! `[[models]]`: OpenAI-style model names mapped to deployments on named backends, with
//! priority and weight per target.

use super::backends::{Backends, validate_deployment};
use crate::config::errors::Errors;
use crate::config::raw::{RawModel, RawTarget};
use crate::config::{Model, ModelTarget};
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
        let targets = targets_as_written(m, &at, errors)
            .map(|targets| validate_targets(targets, backends, errors));
        match targets {
            Some(targets) if errors.len() == before => models.valid.push(Model { name, targets }),
            _ => models.all_valid = false,
        }
    }
    models
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
