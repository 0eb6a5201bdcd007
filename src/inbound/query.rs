//! Credentials in a query string (`api-key`, `subscription-key`, `Ocp-Apim-Subscription-Key`,
//! any case; `Authorization=Bearer …`, as the Speech SDK sends its headers from a browser):
//! read as the caller's credential, masked in logs, and always removed before a request is
//! forwarded, with the region a key goes with (`Subscription-Region`).

use std::borrow::Cow;
use std::fmt;

/// Query parameter names that carry a credential, matched ignoring ASCII case (so
/// `Subscription-Key` too), after percent-decoding.
const CREDENTIAL_PARAMS: [&str; 4] = [
    "api-key",
    "subscription-key",
    "ocp-apim-subscription-key",
    "authorization",
];
/// The name whose value is an `Authorization` header's (`Bearer <token or key>`).
const AUTHORIZATION_PARAM: &str = "authorization";
/// Not a credential, but never forwarded either: the region a key caller names (Translator's
/// `Subscription-Region`); the proxy sends the backend's own.
const REGION_PARAM: &str = "subscription-region";

/// A credential found in a query string: its value, decoded, and whether it is an
/// `Authorization` value (`Bearer …`) rather than a bare key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryCredential<'a> {
    pub value: Cow<'a, str>,
    pub authorization: bool,
}

/// What a masked credential value is shown as.
const MASK: &str = "***";

/// A query string for logs: every credential parameter's value is `***`. Formats lazily, so a
/// log line that is filtered out costs nothing.
#[derive(Debug, Clone, Copy)]
pub struct Masked<'a>(pub &'a str);

/// A raw `name` (as in the query, maybe percent-encoded), decoded.
fn decoded_name(raw_name: &str) -> Cow<'_, str> {
    // Nothing to decode in the usual case: no allocation.
    if raw_name.contains(['%', '+']) {
        url::form_urlencoded::parse(raw_name.as_bytes())
            .next()
            .map_or(Cow::Borrowed(raw_name), |(k, _)| Cow::Owned(k.into_owned()))
    } else {
        Cow::Borrowed(raw_name)
    }
}

/// Whether a raw `name` names a credential.
fn is_credential(raw_name: &str) -> bool {
    let decoded = decoded_name(raw_name);
    CREDENTIAL_PARAMS
        .iter()
        .any(|c| decoded.eq_ignore_ascii_case(c))
}

/// Whether a raw `name` is removed before forwarding: a credential, or the region of a key.
fn is_consumed(raw_name: &str) -> bool {
    is_credential(raw_name) || decoded_name(raw_name).eq_ignore_ascii_case(REGION_PARAM)
}

/// The query's `name=value` pairs, raw.
fn pairs(query: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (p, None),
        })
}

/// The first credential parameter's value, decoded; `None` when there is none (or it is empty).
pub fn credential(query: Option<&str>) -> Option<Cow<'_, str>> {
    credential_param(query).map(|c| c.value)
}

/// The first credential parameter, its value decoded; `None` when there is none (or it is
/// empty).
pub fn credential_param(query: Option<&str>) -> Option<QueryCredential<'_>> {
    let query = query?;
    let (name, raw) = pairs(query).find(|(n, _)| is_credential(n))?;
    let authorization = decoded_name(name).eq_ignore_ascii_case(AUTHORIZATION_PARAM);
    let raw = raw.unwrap_or_default();
    let value = if raw.contains(['%', '+']) {
        // Decoded as the value of a pair, so an `=` in it is kept (a name would end there).
        let pair = format!("={raw}");
        Cow::Owned(
            url::form_urlencoded::parse(pair.as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default(),
        )
    } else {
        Cow::Borrowed(raw)
    };
    let trimmed_empty = value.trim().is_empty();
    (!trimmed_empty).then_some(QueryCredential {
        value,
        authorization,
    })
}

/// Whether the query carries a parameter that is never forwarded (a credential, even an empty
/// one, or a key's region).
pub fn has_credential(query: Option<&str>) -> bool {
    query.is_some_and(|q| pairs(q).any(|(n, _)| is_consumed(n)))
}

/// The query without its credential parameters (and a key's region), the others kept in
/// order and as encoded. Borrowed (no allocation) when there was none to remove; `None` when
/// nothing is left.
pub fn without_credentials(query: Option<&str>) -> Option<Cow<'_, str>> {
    let query = query?;
    if !has_credential(Some(query)) {
        return Some(Cow::Borrowed(query));
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| !is_consumed(p.split_once('=').map_or(*p, |(n, _)| n)))
        .collect();
    (!kept.is_empty()).then(|| Cow::Owned(kept.join("&")))
}

impl fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for part in self.0.split('&') {
            if !first {
                f.write_str("&")?;
            }
            first = false;
            match part.split_once('=') {
                Some((name, _)) if is_credential(name) => write!(f, "{name}={MASK}")?,
                _ => f.write_str(part)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(query: &str) -> Option<(String, bool)> {
        credential_param(Some(query)).map(|c| (c.value.into_owned(), c.authorization))
    }

    #[test]
    fn credentials_are_found_under_every_name_and_decoded() {
        let key = |k: &str| Some((k.to_string(), false));
        assert_eq!(value("api-key=k1"), key("k1"));
        assert_eq!(value("a=1&subscription-key=k%2B2"), key("k+2"));
        assert_eq!(value("Subscription-Key=k3&x=y"), key("k3"));
        assert_eq!(value("api%2Dkey=k4"), key("k4"));
        assert_eq!(value("Ocp-Apim-Subscription-Key=k5"), key("k5"));
        assert_eq!(
            value("language=en-US&Authorization=Bearer%20tok&X-ConnectionId=1"),
            Some(("Bearer tok".to_string(), true))
        );
        assert_eq!(value("api-key="), None);
        assert_eq!(value("api-keys=k"), None);
        assert_eq!(credential(None), None);
    }

    #[test]
    fn credentials_are_removed_and_the_rest_kept_in_order_and_encoding() {
        let q = |s| without_credentials(Some(s)).map(Cow::into_owned);
        assert_eq!(
            q("api-version=2024-10-21&api-key=k&b=%20x&Subscription-Key=s&c"),
            Some("api-version=2024-10-21&b=%20x&c".to_string())
        );
        assert_eq!(q("api-key=k"), None);
        assert_eq!(q("API-KEY=k&subscription-key"), None);
        assert_eq!(
            q(
                "language=de-DE&Authorization=Bearer%20t&Ocp-Apim-Subscription-Key=k&Subscription-Region=westeurope&X-ConnectionId=c1"
            ),
            Some("language=de-DE&X-ConnectionId=c1".to_string())
        );
        assert!(matches!(
            without_credentials(Some("a=1&b=2")),
            Some(Cow::Borrowed("a=1&b=2"))
        ));
        assert_eq!(without_credentials(None), None);
    }

    #[test]
    fn masked_queries_never_show_a_key() {
        let shown =
            Masked("deployment=gpt-4o&api-key=secret1&Subscription-Key=secret2&a=1").to_string();
        assert_eq!(
            shown,
            "deployment=gpt-4o&api-key=***&Subscription-Key=***&a=1"
        );
        assert_eq!(
            Masked("Authorization=Bearer%20tok&ocp-apim-subscription-key=k").to_string(),
            "Authorization=***&ocp-apim-subscription-key=***"
        );
        assert_eq!(Masked("a=1&b").to_string(), "a=1&b");
    }
}
