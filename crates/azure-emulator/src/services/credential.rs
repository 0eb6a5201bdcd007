//! Reading and checking the credentials Azure AI services take: a resource key, an Entra
//! bearer token for the service's audience, a token from `issueToken`, and Speech's
//! `aad#{resource id}#{Entra token}` form. Which forms an endpoint accepts is the caller's
//! [`Accepts`]; how a refusal looks is each service's business.

use http::HeaderMap;

use super::sts;
use crate::auth;
use crate::cloud::same_audience;
use crate::keys;
use crate::state::{Shared, bearer_token, key_matches};

/// The credential a request presents, in the order Azure looks: `Authorization` first, then a
/// key header, then (where a service reads one) a key in the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presented<'a> {
    None,
    Key(&'a str),
    /// `Bearer <JWT>` that this emulator's `issueToken` signed.
    Issued(&'a str),
    /// `Bearer <JWT>` of any other issuer (Entra).
    Entra(&'a str),
    /// `Bearer aad#{resource id}#{token}`.
    Aad {
        resource_id: &'a str,
        token: &'a str,
    },
    /// An `Authorization` value that is none of the above.
    Unreadable,
}

/// Which credential forms an endpoint takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Accepts<'a> {
    /// The resource key (when the resource has one).
    pub(crate) key: bool,
    /// A token from `issueToken`.
    pub(crate) issued: bool,
    /// A plain Entra bearer token for this audience.
    pub(crate) entra: Option<&'a str>,
    /// Speech's `aad#…#token` form, the token for this audience.
    pub(crate) aad: Option<&'a str>,
}

/// A credential the endpoint let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Granted {
    Key,
    Issued,
    Entra { audience: String },
    Aad { audience: String },
}

/// Why a credential was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No credential at all.
    Missing,
    /// A key that is not the resource's.
    BadKey,
    /// A key, but the resource has key auth off.
    KeysDisabled,
    /// A token that does not verify, has expired, was revoked, or is for another audience.
    BadToken,
    /// An `aad#` form or issued token that names another resource.
    OtherResource,
    /// A credential form this endpoint does not take.
    FormRefused,
}

impl Granted {
    /// The short name answers carry in `x-emulator-auth`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Granted::Key => "key",
            Granted::Issued => "issued-token",
            Granted::Entra { .. } => "entra",
            Granted::Aad { .. } => "aad",
        }
    }
}

/// The credential of a request. `key_headers` are the header names that carry a key here;
/// `query_key` a key the service reads from the query string.
pub(crate) fn presented<'a>(
    headers: &'a HeaderMap,
    key_headers: &[&str],
    query_key: Option<&'a str>,
) -> Presented<'a> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(value) = header("authorization") {
        let Some(token) = bearer_token(value) else {
            return Presented::Unreadable;
        };
        if let Some(rest) = token.strip_prefix("aad#") {
            return match rest.rsplit_once('#') {
                Some((resource_id, token)) if !token.is_empty() => {
                    Presented::Aad { resource_id, token }
                }
                _ => Presented::Unreadable,
            };
        }
        return match crate::jwt::claims_unverified(token) {
            Ok(claims) if claims.iss.as_deref() == Some(sts::ISSUER) => Presented::Issued(token),
            Ok(_) => Presented::Entra(token),
            Err(_) => Presented::Unreadable,
        };
    }
    if let Some(key) = key_headers.iter().find_map(|name| header(name)) {
        return Presented::Key(key.trim());
    }
    match query_key {
        Some(key) => Presented::Key(key.trim()),
        None => Presented::None,
    }
}

/// Checks `presented` against what the endpoint `accepts` on a resource with `key` and
/// `resource_id`. An Entra token (plain or inside the `aad#` form) whose signature and lifetime
/// verify has its caller noted on logged request `seq`, as the OpenAI data plane does.
pub(crate) fn check(
    shared: &Shared,
    presented: Presented<'_>,
    accepts: Accepts<'_>,
    key: Option<&str>,
    resource_id: &str,
    seq: u64,
) -> Result<Granted, Denied> {
    match presented {
        Presented::None => Err(Denied::Missing),
        Presented::Unreadable => Err(Denied::BadToken),
        Presented::Key(given) => {
            if !accepts.key {
                return Err(Denied::FormRefused);
            }
            match key {
                None => Err(Denied::KeysDisabled),
                Some(expected) if key_matches(expected, given) => Ok(Granted::Key),
                Some(_) => Err(Denied::BadKey),
            }
        }
        Presented::Issued(token) => {
            if !accepts.issued {
                return Err(Denied::FormRefused);
            }
            match sts::verify(shared, token, resource_id) {
                Ok(()) => Ok(Granted::Issued),
                Err(sts::Refused::Invalid) => Err(Denied::BadToken),
                Err(sts::Refused::OtherResource) => Err(Denied::OtherResource),
            }
        }
        Presented::Entra(token) => {
            let audience = accepts.entra.ok_or(Denied::FormRefused)?;
            entra_token(shared, token, audience, seq).map(|audience| Granted::Entra { audience })
        }
        Presented::Aad {
            resource_id: named,
            token,
        } => {
            let audience = accepts.aad.ok_or(Denied::FormRefused)?;
            let audience = entra_token(shared, token, audience, seq)?;
            if sts::same_resource(named, resource_id) {
                Ok(Granted::Aad { audience })
            } else {
                Err(Denied::OtherResource)
            }
        }
    }
}

/// Verifies an Entra token against the emulator's JWKS, its revocation epoch and `audience`.
/// Once signature and lifetime verify, its caller is noted on logged request `seq` (whatever
/// its audience).
pub(crate) fn entra_token(
    shared: &Shared,
    token: &str,
    audience: &str,
    seq: u64,
) -> Result<String, Denied> {
    let claims = shared
        .signing_key()
        .verify(token)
        .map_err(|_| Denied::BadToken)?;
    auth::note_bearer(shared, seq, &claims);
    let epoch = claims.uti.as_deref().and_then(keys::uti_epoch).unwrap_or(0);
    if epoch < shared.revocation_epoch() {
        return Err(Denied::BadToken);
    }
    let aud = claims
        .aud
        .first()
        .map(str::to_owned)
        .ok_or(Denied::BadToken)?;
    if same_audience(&aud, audience) {
        Ok(aud)
    } else {
        Err(Denied::BadToken)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::EmulatorConfig;
    use crate::keys::MintSpec;

    const COG: &str = "https://cognitiveservices.azure.com";
    const RID: &str =
        "/subscriptions/s/resourceGroups/g/providers/Microsoft.CognitiveServices/accounts/a";

    fn shared() -> Shared {
        Shared::new(EmulatorConfig::default(), crate::keys::first_key().unwrap())
    }

    fn auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", value.parse().unwrap());
        h
    }

    const ALL: Accepts<'static> = Accepts {
        key: true,
        issued: true,
        entra: Some(COG),
        aad: Some(COG),
    };

    #[test]
    fn each_form_is_read_and_checked() {
        let s = shared();
        let entra = s.mint(&MintSpec::new(COG));
        let search = s.mint(&MintSpec::new("https://search.azure.com"));
        let issued = sts::issue(&s, RID, "westeurope", Duration::from_secs(60));
        let check_auth = |value: &str, accepts: Accepts<'_>| {
            check(
                &s,
                presented(&auth(value), &[], None),
                accepts,
                Some("k"),
                RID,
                0,
            )
        };
        assert_eq!(
            check_auth(&format!("Bearer {entra}"), ALL),
            Ok(Granted::Entra {
                audience: COG.into()
            })
        );
        assert_eq!(
            check_auth(&format!("Bearer {search}"), ALL),
            Err(Denied::BadToken)
        );
        assert_eq!(
            check_auth(&format!("Bearer aad#{RID}#{entra}"), ALL),
            Ok(Granted::Aad {
                audience: COG.into()
            })
        );
        assert_eq!(
            check_auth(&format!("Bearer aad#{RID}x#{entra}"), ALL),
            Err(Denied::OtherResource)
        );
        assert_eq!(
            check_auth(&format!("Bearer {issued}"), ALL),
            Ok(Granted::Issued)
        );
        assert_eq!(check_auth("Bearer aad#only", ALL), Err(Denied::BadToken));
        assert_eq!(check_auth("Basic abc", ALL), Err(Denied::BadToken));
        let no_aad = Accepts { aad: None, ..ALL };
        assert_eq!(
            check_auth(&format!("Bearer aad#{RID}#{entra}"), no_aad),
            Err(Denied::FormRefused)
        );
        let no_entra = Accepts { entra: None, ..ALL };
        assert_eq!(
            check_auth(&format!("Bearer {entra}"), no_entra),
            Err(Denied::FormRefused)
        );
        s.revoke_issued_tokens();
        assert_eq!(
            check_auth(&format!("Bearer {entra}"), ALL),
            Err(Denied::BadToken)
        );
    }

    #[test]
    fn keys_come_from_the_named_headers_or_the_query() {
        let s = shared();
        let mut h = HeaderMap::new();
        h.insert("ocp-apim-subscription-key", " k ".parse().unwrap());
        let p = presented(&h, &["ocp-apim-subscription-key"], None);
        assert_eq!(p, Presented::Key("k"));
        assert_eq!(check(&s, p, ALL, Some("k"), RID, 0), Ok(Granted::Key));
        assert_eq!(check(&s, p, ALL, Some("j"), RID, 0), Err(Denied::BadKey));
        assert_eq!(check(&s, p, ALL, None, RID, 0), Err(Denied::KeysDisabled));
        assert_eq!(presented(&h, &["api-key"], None), Presented::None);
        assert_eq!(
            presented(&HeaderMap::new(), &["api-key"], Some("q")),
            Presented::Key("q")
        );
        let no_keys = Accepts { key: false, ..ALL };
        assert_eq!(
            check(&s, p, no_keys, Some("k"), RID, 0),
            Err(Denied::FormRefused)
        );
        assert_eq!(
            check(&s, Presented::None, ALL, Some("k"), RID, 0),
            Err(Denied::Missing)
        );
    }
}
