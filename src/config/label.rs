//! The one name a caller has in metrics, logs, traces, `/status`, `usage` and the
//! `x-entra-proxy-caller` header: keys by their configured name, other callers by their kind,
//! so clients cannot grow the label set; never a credential.

use std::fmt;
use std::sync::Arc;

/// A caller's name everywhere the proxy names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CallerLabel {
    /// `key:<name>`: a proxy-issued virtual key.
    Key(Arc<str>),
    /// `legacy-key:<name>`: an old Azure resource key, accepted so clients need not change.
    LegacyKey(Arc<str>),
    /// `identity:<name>`: an Entra or app caller an `[[identities]]` block names.
    Identity(Arc<str>),
    /// `entra`: an Entra token no identity names.
    Entra,
    /// `app`: client credentials no identity names.
    App,
    /// `anonymous`: no credential (a loopback sidecar).
    Anonymous,
}

impl CallerLabel {
    /// The label of a configured key.
    pub fn key(name: &str, legacy: bool) -> CallerLabel {
        match legacy {
            true => CallerLabel::LegacyKey(Arc::from(name)),
            false => CallerLabel::Key(Arc::from(name)),
        }
    }

    /// The label in two parts, prefix and name (`("key:", "team-a")`, `("", "entra")`), so it
    /// can be compared with a rendered one without formatting it.
    pub fn parts(&self) -> (&'static str, &str) {
        match self {
            CallerLabel::Key(name) => ("key:", name),
            CallerLabel::LegacyKey(name) => ("legacy-key:", name),
            CallerLabel::Identity(name) => ("identity:", name),
            CallerLabel::Entra => ("", "entra"),
            CallerLabel::App => ("", "app"),
            CallerLabel::Anonymous => ("", "anonymous"),
        }
    }

    /// The kind, for a label that names no configured caller (`entra`, `app`, `anonymous`).
    pub fn kind(&self) -> Option<&'static str> {
        match self {
            CallerLabel::Key(_) | CallerLabel::LegacyKey(_) | CallerLabel::Identity(_) => None,
            CallerLabel::Entra => Some("entra"),
            CallerLabel::App => Some("app"),
            CallerLabel::Anonymous => Some("anonymous"),
        }
    }

    /// The configured name, for a key's or an identity's label.
    pub fn name(&self) -> Option<&Arc<str>> {
        match self {
            CallerLabel::Key(name) | CallerLabel::LegacyKey(name) | CallerLabel::Identity(name) => {
                Some(name)
            }
            CallerLabel::Entra | CallerLabel::App | CallerLabel::Anonymous => None,
        }
    }
}

impl fmt::Display for CallerLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, name) = self.parts();
        f.write_str(prefix)?;
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_keys_by_name_and_the_rest_by_kind() {
        assert_eq!(CallerLabel::key("team-a", false).to_string(), "key:team-a");
        assert_eq!(CallerLabel::key("old", true).to_string(), "legacy-key:old");
        assert_eq!(
            CallerLabel::Identity("search".into()).to_string(),
            "identity:search"
        );
        assert_eq!(CallerLabel::Entra.to_string(), "entra");
        assert_eq!(CallerLabel::App.to_string(), "app");
        assert_eq!(CallerLabel::Anonymous.to_string(), "anonymous");
        assert_eq!(CallerLabel::key("a", false).parts(), ("key:", "a"));
        assert_ne!(CallerLabel::key("a", false), CallerLabel::key("a", true));
    }
}
