//! A key's or an identity's policy: which models it may use, when it expires, and its budgets
//! ([`Policy::account`], and each user's inside an identity) resolved here and enforced by
//! `limits`.

use crate::config::{IdentityEntry, KeyBudget, KeyEntry};
use crate::limits::{Account, Limits};
use std::sync::Arc;

/// What applies to one key or identity.
#[derive(Debug)]
pub struct Policy {
    pub models: Vec<String>,
    pub expires: Option<time::OffsetDateTime>,
    /// Requests and tokens the key or identity may use, and its counters in the limits store.
    pub account: Account,
    /// Each user's own budget inside an identity.
    pub per_user: Option<PerUser>,
}

/// The budget every user of an identity gets besides the identity's total.
#[derive(Debug)]
pub struct PerUser {
    identity: Arc<str>,
    budget: KeyBudget,
    limits: Limits,
}

/// Why a key's policy refused a request.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyDenial {
    Expired { at: String },
}

impl Policy {
    pub fn from_entry(k: &KeyEntry, limits: &Limits) -> Policy {
        Policy {
            models: k.models.clone(),
            expires: k.expires,
            account: limits.account_for(k),
            per_user: None,
        }
    }

    /// The policy of identity `i`: its models, its budget, each user's.
    pub fn for_identity(i: &IdentityEntry, limits: &Limits) -> Policy {
        Policy {
            models: i.models.clone(),
            expires: None,
            account: limits.account_for_identity(i),
            per_user: i.per_user.map(|budget| PerUser {
                identity: Arc::from(i.name.as_str()),
                budget,
                limits: limits.clone(),
            }),
        }
    }

    /// The account of user `oid` under this policy's per-user budget, if it has one.
    pub fn user_account(&self, oid: &str) -> Option<Account> {
        let p = self.per_user.as_ref()?;
        Some(p.limits.user_account(&p.identity, oid, p.budget))
    }

    /// Checks expiry.
    pub fn admit(&self, now: time::OffsetDateTime) -> Result<(), PolicyDenial> {
        if let Some(exp) = self.expires
            && now >= exp
        {
            return Err(PolicyDenial::Expired {
                at: exp
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
            });
        }
        Ok(())
    }

    /// Whether the key may use this model / deployment.
    pub fn permits(&self, model: Option<&str>, deployment: Option<&str>) -> bool {
        self.models.is_empty()
            || [model, deployment]
                .into_iter()
                .flatten()
                .any(|m| self.models.iter().any(|a| a == m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_and_expiry() {
        let p = Policy {
            per_user: None,
            models: vec!["gpt-4o".into()],
            expires: Some(time::macros::datetime!(2027-01-01 0:00 UTC)),
            account: Limits::in_memory().account(
                crate::limits::BudgetKey::key("k"),
                crate::config::KeyBudget::default(),
            ),
        };
        assert!(p.permits(Some("gpt-4o"), None));
        assert!(p.permits(None, Some("gpt-4o")));
        assert!(!p.permits(Some("embed"), Some("text-embedding-3-small")));
        assert!(
            p.admit(time::macros::datetime!(2026-12-31 23:59 UTC))
                .is_ok()
        );
        assert_eq!(
            p.admit(time::macros::datetime!(2027-01-01 0:00 UTC)),
            Err(PolicyDenial::Expired {
                at: "2027-01-01T00:00:00Z".into()
            })
        );
    }
}
