//! [`Scope`]: a token scope, checked when built.

use crate::cloud::scope_for_audience;
use std::fmt;
use url::Url;

/// A token scope such as `https://cognitiveservices.azure.com/.default`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(String);

impl Scope {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The audience a token for this scope carries (the scope without `/.default`).
    pub fn audience(&self) -> &str {
        self.0.strip_suffix("/.default").unwrap_or(&self.0)
    }

    /// The scope of the token a managed or workload identity presents as an app's federated
    /// credential (`api://AzureADTokenExchange/.default` in the public cloud).
    pub fn token_exchange(cloud: crate::cloud::Cloud) -> Scope {
        Scope(format!("{}/.default", cloud.token_exchange_audience()))
    }

    /// The `/.default` scope of `audience`.
    pub(super) fn for_audience(audience: &str) -> Scope {
        Scope(scope_for_audience(audience))
    }

    /// Parses a scope as written in a backend's `scope = "…"`; a bare audience gets `/.default`.
    pub(super) fn parse(raw: &str) -> Result<Scope, String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err("is empty".into());
        }
        if raw.chars().any(|c| c.is_whitespace()) {
            return Err("must be a single scope without spaces".into());
        }
        let scope = if raw.ends_with("/.default") {
            raw.to_string()
        } else {
            scope_for_audience(raw)
        };
        Url::parse(&scope).map_err(|_| {
            format!("{raw:?} is not a URL such as https://cognitiveservices.azure.com/.default")
        })?;
        Ok(Scope(scope))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
