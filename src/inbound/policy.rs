//! Per-key policy: which models a key may use and when it expires. Its request and token
//! budget ([`KeyPolicy::account`]) is resolved here and enforced by `limits`.

use crate::config::KeyEntry;
use crate::limits::{Account, Limits};

/// What applies to one key.
#[derive(Debug)]
pub struct KeyPolicy {
    pub models: Vec<String>,
    pub expires: Option<time::OffsetDateTime>,
    /// Requests and tokens the key may use, and the key's counters in the limits store.
    pub account: Account,
}

/// Why a key's policy refused a request.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyDenial {
    Expired { at: String },
}

impl KeyPolicy {
    pub fn from_entry(k: &KeyEntry, limits: &Limits) -> KeyPolicy {
        KeyPolicy {
            models: k.models.clone(),
            expires: k.expires,
            account: limits.account_for(k),
        }
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
        let p = KeyPolicy {
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
