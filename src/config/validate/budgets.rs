//! Notes on budgets that hold but may not do what was meant: money budgets beside models with no
//! price (spend-free), and token budgets a request without `max_tokens` can never fit.

use super::models::Models;
use crate::config::{IdentityEntry, KeyBudget, KeyEntry, LimitsConfig, Note, NoteLevel};

/// Adds the notes for the budgets of `keys` and `identities`.
pub(super) fn notes(
    keys: &[KeyEntry],
    identities: &[IdentityEntry],
    models: &Models,
    limits: &LimitsConfig,
    notes: &mut Vec<Note>,
) {
    let callers: Vec<(String, &[String], KeyBudget)> = keys
        .iter()
        .map(|k| (format!("key {:?}", k.name), k.models.as_slice(), k.budget()))
        .chain(identities.iter().map(|i| {
            (
                format!("identity {:?}", i.name),
                i.models.as_slice(),
                i.budget,
            )
        }))
        .collect();
    for model in models.unpriced() {
        let spending: Vec<&str> = callers
            .iter()
            .filter(|(_, allowed, b)| {
                b.limits_spend() && (allowed.is_empty() || allowed.iter().any(|m| m == model))
            })
            .map(|(who, _, _)| who.as_str())
            .collect();
        if !spending.is_empty() {
            notes.push(Note {
                level: NoteLevel::Warning,
                message: format!(
                    "models: {model:?} has no price, so requests to it spend nothing against the budget of {}; give it a price = {{ input_per_1m = …, output_per_1m = … }}",
                    spending.join(", ")
                ),
            });
        }
    }
    for (who, _, budget) in &callers {
        let smallest = [budget.tokens_per_minute, budget.token_quota]
            .into_iter()
            .flatten()
            .min();
        let reserved = models
            .valid()
            .iter()
            .filter_map(|m| m.completion_reservation)
            .chain([limits.default_completion_reservation])
            .min()
            .unwrap_or(0);
        if let Some(limit) = smallest
            && reserved >= limit
        {
            notes.push(Note {
                level: NoteLevel::Warning,
                message: format!(
                    "{who}: its token limit of {limit} is no more than the {reserved} tokens reserved for an answer when a request sets no max_tokens (limits.default_completion_reservation), so such requests are refused with request_exceeds_budget; lower the reservation or have clients send max_tokens"
                ),
            });
        }
    }
}
