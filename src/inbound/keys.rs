//! Proxy-issued virtual keys and legacy Azure resource keys, stored only as SHA-256 digests.

use super::policy::{Policy, PolicyDenial};
use super::{AuthError, Caller, CallerLabel, CredentialSource, Held};
use crate::config::{KeyDigest, KeyEntry};
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq as _;

/// What a matching key says about its holder.
#[derive(Debug, Clone)]
pub struct KeyHolder {
    pub name: Arc<str>,
    pub legacy: bool,
    pub policy: Arc<Policy>,
}

/// Looks keys up by digest. The presented key is hashed first, the table is keyed by a random
/// SipHash of the digest, and the final comparison is constant-time, so timing reveals nothing
/// about stored digests.
#[derive(Debug, Default)]
pub struct KeyStore {
    by_digest: HashMap<KeyDigest, KeyHolder>,
    /// Each key's digest by its name (to find the key an issued token was bound to).
    by_name: HashMap<Arc<str>, KeyDigest>,
}

impl KeyStore {
    /// The keys of `entries`, each with its account in `limits`.
    pub fn new(entries: &[KeyEntry], limits: &crate::limits::Limits) -> KeyStore {
        KeyStore {
            by_name: entries
                .iter()
                .map(|k| (Arc::from(k.name.as_str()), k.digest))
                .collect(),
            by_digest: entries
                .iter()
                .map(|k| {
                    (
                        k.digest,
                        KeyHolder {
                            name: Arc::from(k.name.as_str()),
                            legacy: k.legacy,
                            policy: Arc::new(Policy::from_entry(k, limits)),
                        },
                    )
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The key named `name`: its digest and holder.
    pub fn by_name(&self, name: &str) -> Option<(&KeyDigest, &KeyHolder)> {
        let digest = self.by_name.get(name)?;
        self.by_digest.get_key_value(digest)
    }

    pub fn lookup(&self, presented: &str) -> Option<&KeyHolder> {
        let digest = KeyDigest::of(presented);
        let (stored, holder) = self.by_digest.get_key_value(&digest)?;
        bool::from(stored.0.ct_eq(&digest.0)).then_some(holder)
    }
}

/// A proxy key or an old Azure resource key: the caller it belongs to, or why not. An expired
/// key is refused here, with the credential, whatever the request asks for.
pub(super) fn authenticate(
    store: &KeyStore,
    presented: &str,
    source: CredentialSource,
) -> Result<Caller, AuthError> {
    let holder = store
        .lookup(presented)
        .ok_or(AuthError::UnknownKey(source))?;
    holder
        .policy
        .admit(time::OffsetDateTime::now_utc())
        .map_err(|d| match d {
            PolicyDenial::Expired { at } => AuthError::KeyExpired {
                name: holder.name.to_string(),
                at,
            },
        })?;
    Ok(Caller {
        label: match holder.legacy {
            true => CallerLabel::LegacyKey(holder.name.clone()),
            false => CallerLabel::Key(holder.name.clone()),
        },
        policy: Some(holder.policy.clone()),
        held: Held::Key,
        user: None,
    })
}

/// A fresh random key: `ep-` and 43 base64url characters (256 bits).
pub fn generate_key() -> Result<String, aws_lc_rs::error::Unspecified> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes)?;
    Ok(format!(
        "ep-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_by_digest_only() {
        let entries = [KeyEntry {
            name: "team-a".into(),
            digest: KeyDigest::of("secret-key"),
            legacy: false,
            models: vec![],
            expires: None,
            requests_per_minute: None,
            tokens_per_minute: None,
            token_quota: None,
            token_quota_period: Default::default(),
            budget_micros: None,
            budget_period: Default::default(),
        }];
        let store = KeyStore::new(&entries, &crate::limits::Limits::in_memory());
        assert_eq!(&*store.lookup("secret-key").unwrap().name, "team-a");
        assert!(store.lookup("secret-kez").is_none());
        assert!(store.lookup("").is_none());
        assert!(!format!("{store:?}").contains("secret-key"));
    }

    #[test]
    fn generated_keys_are_unique_and_long() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 46);
        assert!(a.starts_with("ep-"));
    }
}
