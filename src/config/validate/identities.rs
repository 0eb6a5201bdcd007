//! `[[identities]]`: Entra principals (and client-credentials apps) matched by their token's
//! claims, each with a policy like a key's. Every match field is checked for its shape, and two
//! identities that are equally specific and could match the same token are an error naming
//! both: which one applies must never depend on the order of the file.

use super::backends::Backends;
use super::keys::{budget, positive, quota_period};
use super::models::Models;
use crate::config::errors::Errors;
use crate::config::raw::RawIdentityEntry;
use crate::config::{IdentityEntry, IdentityMatch, KeyBudget};
use std::collections::HashMap;

pub(super) fn validate_identities(
    raw: Vec<RawIdentityEntry>,
    models: &Models,
    backends: &Backends,
    errors: &mut Errors,
) -> Option<Vec<IdentityEntry>> {
    let before = errors.len();
    let mut identities: Vec<(String, IdentityEntry)> = Vec::with_capacity(raw.len());
    let mut names: HashMap<String, String> = HashMap::new();
    let (mut in_main, mut in_file) = (0, 0);
    for entry in raw {
        // Identities from a keys file are numbered within that file and named with it.
        let at = match &entry.file {
            None => {
                in_main += 1;
                format!("identities[{}]", in_main - 1)
            }
            Some(file) => {
                in_file += 1;
                format!("{file}: identities[{}]", in_file - 1)
            }
        };
        if entry.name.trim().is_empty() {
            errors.add(format!("{at}.name"), "is empty");
        } else if let Some(first) = names.get(&entry.name) {
            errors.add(
                format!("{at}.name"),
                format!(
                    "duplicate identity name {:?} (also defined at {first})",
                    entry.name
                ),
            );
        } else {
            names.insert(entry.name.clone(), at.clone());
        }
        if let Some(identity) = validate_identity(entry, &at, models, backends, errors) {
            identities.push((at, identity));
        }
    }
    no_ambiguity(&identities, errors);
    (errors.len() == before).then(|| identities.into_iter().map(|(_, i)| i).collect())
}

/// One identity: its match, models and budgets.
fn validate_identity(
    raw: RawIdentityEntry,
    at: &str,
    models: &Models,
    backends: &Backends,
    errors: &mut Errors,
) -> Option<IdentityEntry> {
    let before = errors.len();
    let guid = |field: &str, v: Option<String>, errors: &mut Errors| {
        v.and_then(|v| errors.check(format!("{at}.{field}"), lower_guid(&v)))
    };
    let matcher = IdentityMatch {
        app_id: guid("app_id", raw.app_id, errors),
        object_id: guid("object_id", raw.object_id, errors),
        group: guid("group", raw.group, errors),
        role: raw
            .role
            .and_then(|r| errors.check(format!("{at}.role"), role(&r))),
        tenant: guid("tenant", raw.tenant, errors),
    };
    if matcher.fields().is_empty() && errors.len() == before {
        errors.add(
            at.to_string(),
            format!(
                "identity {:?} matches nothing: set at least one of app_id, object_id, group, role, tenant",
                raw.name
            ),
        );
    }
    for (j, m) in raw.models.iter().enumerate() {
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
    if raw.requests_per_minute == Some(0) {
        errors.add(
            format!("{at}.requests_per_minute"),
            "must be at least 1 (remove the identity to block it)",
        );
    }
    let tokens_per_minute = positive(
        raw.tokens_per_minute,
        &format!("{at}.tokens_per_minute"),
        errors,
    );
    let token_quota = positive(raw.token_quota, &format!("{at}.token_quota"), errors);
    let period = quota_period(
        raw.token_quota_period.as_deref(),
        raw.token_quota.is_some(),
        at,
        errors,
    );
    let user_tpm = positive(
        raw.per_user_tokens_per_minute,
        &format!("{at}.per_user_tokens_per_minute"),
        errors,
    );
    let user_quota = positive(
        raw.per_user_token_quota,
        &format!("{at}.per_user_token_quota"),
        errors,
    );
    let upstream = match raw.upstream.as_deref() {
        None => Some(None),
        Some(u) => errors
            .check(format!("{at}.upstream"), super::inbound::upstream(u))
            .map(Some),
    };
    let money = budget(raw.budget, raw.budget_period.as_deref(), at, errors);
    let per_user_set =
        raw.per_user_tokens_per_minute.is_some() || raw.per_user_token_quota.is_some();
    if per_user_set && matcher.object_id.is_some() {
        errors.add(
            format!("{at}.per_user_tokens_per_minute"),
            "an identity matched by object_id is one principal, so per-user budgets add nothing: set tokens_per_minute / token_quota instead",
        );
    }
    if errors.len() != before {
        return None;
    }
    let token_quota_period = period?;
    let (budget_micros, budget_period) = money?;
    let per_user = per_user_set.then(|| KeyBudget {
        requests_per_minute: None,
        tokens_per_minute: user_tpm.flatten(),
        token_quota: user_quota.flatten(),
        token_quota_period,
        budget_micros: None,
        budget_period,
    });
    Some(IdentityEntry {
        name: raw.name,
        matcher,
        models: raw.models,
        budget: KeyBudget {
            requests_per_minute: raw.requests_per_minute,
            tokens_per_minute: tokens_per_minute?,
            token_quota: token_quota?,
            token_quota_period,
            budget_micros,
            budget_period,
        },
        per_user,
        upstream: upstream?,
    })
}

/// Two identities equally specific that one token could match: an error naming both.
fn no_ambiguity(identities: &[(String, IdentityEntry)], errors: &mut Errors) {
    for (i, (at_a, a)) in identities.iter().enumerate() {
        for (at_b, b) in &identities[i + 1..] {
            if a.matcher.specificity() == b.matcher.specificity()
                && a.matcher.can_overlap(&b.matcher)
                && a.matcher != b.matcher
            {
                errors.add(
                    at_b.clone(),
                    format!(
                        "identities {:?} ({at_a}) and {:?} are equally specific ({}) and one token could match both (a token can carry several groups and roles); make one more specific (add app_id, role or object_id) so it is clear which applies",
                        a.name,
                        b.name,
                        fields_named(&a.matcher)
                    ),
                );
            } else if a.matcher == b.matcher {
                errors.add(
                    at_b.clone(),
                    format!(
                        "identity {:?} matches exactly what {:?} ({at_a}) matches; merge them or make one more specific",
                        b.name, a.name
                    ),
                );
            }
        }
    }
}

fn fields_named(m: &IdentityMatch) -> String {
    m.fields()
        .iter()
        .map(|(k, _)| *k)
        .collect::<Vec<_>>()
        .join(" + ")
}

/// A GUID as Entra writes ids: 8-4-4-4-12 hex digits, compared in lower case.
fn lower_guid(v: &str) -> Result<String, String> {
    let v = v.trim();
    let groups: Vec<&str> = v.split('-').collect();
    let shape = [8, 4, 4, 4, 12];
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip(shape)
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
    match ok {
        true => Ok(v.to_ascii_lowercase()),
        false => Err(format!(
            "{v:?} is not an object id; Entra ids are GUIDs like 72f988bf-86f1-41af-91ab-2d7cd011db47"
        )),
    }
}

/// An app role's value as it appears in `roles`.
fn role(v: &str) -> Result<String, String> {
    let v = v.trim();
    match v.is_empty() || v.chars().any(char::is_whitespace) {
        true => Err(format!(
            "{v:?} is not an app role value (the role's Value in the app registration, without spaces)"
        )),
        false => Ok(v.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{err, parse};

    const BASE: &str = "[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\ndeployments=['d']\n[[models]]\nname='m'\nbackend='a'\ndeployment='d'\n[inbound.entra]\ntenants=['72f988bf-86f1-41af-91ab-2d7cd011db47']\n";
    const APP: &str = "5e5c3f1a-0000-4000-8000-0000000000a1";
    const GROUP1: &str = "0a000000-0000-4000-8000-000000000001";
    const GROUP2: &str = "0a000000-0000-4000-8000-000000000002";

    #[test]
    fn identities_parse_with_their_match_models_and_budgets() {
        let c = parse(&format!(
            "{BASE}[[identities]]\nname='search'\napp_id='{}'\nmodels=['m']\ntokens_per_minute=100\n[[identities]]\nname='analysts'\ngroup='{GROUP1}'\nper_user_tokens_per_minute=10\nper_user_token_quota=1000\ntoken_quota=5000\ntoken_quota_period='day'\n",
            APP.to_uppercase()
        ))
        .unwrap();
        assert_eq!(c.identities.len(), 2);
        assert_eq!(c.identities[0].matcher.app_id.as_deref(), Some(APP));
        assert_eq!(c.identities[0].budget.tokens_per_minute, Some(100));
        let analysts = &c.identities[1];
        let per_user = analysts.per_user.unwrap();
        assert_eq!(per_user.tokens_per_minute, Some(10));
        assert_eq!(per_user.token_quota, Some(1000));
        assert_eq!(
            per_user.token_quota_period,
            analysts.budget.token_quota_period
        );
        assert_eq!(c.inbound.unmatched, crate::config::Unmatched::Deny);
    }

    #[test]
    fn without_identities_unmatched_callers_are_allowed_and_it_can_be_set() {
        let c = parse(BASE).unwrap();
        assert_eq!(c.inbound.unmatched, crate::config::Unmatched::Allow);
        let c = parse(&format!(
            "{}unmatched='allow'\n[[identities]]\nname='x'\napp_id='{APP}'\n",
            BASE
        ))
        .unwrap();
        assert_eq!(c.inbound.unmatched, crate::config::Unmatched::Allow);
        let e = err(&format!("{BASE}unmatched='maybe'\n"));
        assert!(e.contains("inbound.entra.unmatched"), "{e}");
    }

    #[test]
    fn bad_identities_are_refused_naming_the_key() {
        let e = err(&format!("{BASE}[[identities]]\nname='empty'\n"));
        assert!(
            e.contains("identities[0]") && e.contains("matches nothing"),
            "{e}"
        );
        let e = err(&format!(
            "{BASE}[[identities]]\nname='x'\nobject_id='not-a-guid'\n"
        ));
        assert!(
            e.contains("identities[0].object_id") && e.contains("GUID"),
            "{e}"
        );
        let e = err(&format!(
            "{BASE}[[identities]]\nname='x'\nrole='two words'\n"
        ));
        assert!(e.contains("identities[0].role"), "{e}");
        let e = err(&format!(
            "{BASE}[[identities]]\nname='x'\napp_id='{APP}'\nmodels=['nope']\n"
        ));
        assert!(e.contains("identities[0].models[0]"), "{e}");
        let e = err(&format!(
            "{BASE}[[identities]]\nname='x'\nobject_id='{APP}'\nper_user_token_quota=5\n"
        ));
        assert!(e.contains("one principal"), "{e}");
        let e = err(&format!(
            "{BASE}[[identities]]\nname='x'\napp_id='{APP}'\n[[identities]]\nname='x'\ntenant='{APP}'\n"
        ));
        assert!(e.contains("duplicate identity name"), "{e}");
    }

    #[test]
    fn equally_specific_identities_that_can_meet_are_an_error_naming_both() {
        // Two group identities: a user can be in both groups.
        let e = err(&format!(
            "{BASE}[[identities]]\nname='g1'\ngroup='{GROUP1}'\n[[identities]]\nname='g2'\ngroup='{GROUP2}'\n"
        ));
        assert!(
            e.contains("\"g1\"") && e.contains("\"g2\"") && e.contains("equally specific"),
            "{e}"
        );
        // Two app ids can never meet; an app id and a group are of different specificity.
        parse(&format!(
            "{BASE}[[identities]]\nname='a1'\napp_id='{APP}'\n[[identities]]\nname='a2'\napp_id='{GROUP1}'\n[[identities]]\nname='g'\ngroup='{GROUP1}'\n"
        ))
        .unwrap();
        // The same group, once with a tenant: more specific, so allowed.
        parse(&format!(
            "{BASE}[[identities]]\nname='g'\ngroup='{GROUP1}'\n[[identities]]\nname='gt'\ngroup='{GROUP1}'\ntenant='{APP}'\n"
        ))
        .unwrap();
    }
}
