//! Tokens the proxy issues at `POST /sts/v1.0/issueToken`, as Speech and Translator issue
//! theirs: a caller holding a key (or an Entra token the proxy swaps) trades it for a token
//! that lasts 10 minutes, which browsers and Speech SDKs then send instead of the key. The
//! token is bound to the caller — its key's name and digest, or its identity's name and object
//! id — so it carries that caller's policy and budgets and no one else's; it is checked and
//! dropped here like a key and never reaches Azure.
//!
//! Shape: a compact JWS signed with HMAC-SHA256 (`HS256`), whose header is always the same
//! (`kid` `entra-proxy-issued`), so it is told from an Entra token by its first bytes without
//! decoding anything. The key is the configured `[server] issued_token_secret`, else a random
//! one made when the process starts: tokens survive a config reload, not a restart, and another
//! replica accepts them only when every replica has the same secret.

use super::{AuthError, Caller, EntraUse, Held, Identities, KeyStore};
use crate::config::CallerLabel;
use crate::config::KeyDigest;
use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// How long an issued token lasts: 10 minutes, as Speech's and Translator's own.
pub const ISSUED_TOKEN_SECS: i64 = 600;
/// The base64url of `{"alg":"HS256","typ":"JWT","kid":"entra-proxy-issued"}`: every issued
/// token starts with it and a `.`.
const HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImVudHJhLXByb3h5LWlzc3VlZCJ9";
/// The `iss` and `aud` of issued tokens.
const ISSUER: &str = "entra-proxy";
const AUDIENCE: &str = "urn:entra-proxy:issued-token";
/// What a key's fingerprint is derived with, so it is never the stored digest itself.
const FINGERPRINT_CONTEXT: &[u8] = b"entra-proxy issued token key fingerprint\0";
/// Longest issued token read (a real one is about 400 bytes).
const MAX_TOKEN_LEN: usize = 4096;

/// Signs and checks issued tokens.
pub struct Issuer {
    key: hmac::Key,
    /// Made from `[server] issued_token_secret` (so other replicas with it accept the tokens).
    shared: bool,
}

/// A token handed to a caller, and how long it lasts.
pub struct Issued {
    pub token: SecretString,
    pub expires_in: i64,
}

/// What an issued token says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct IssuedClaims {
    iss: String,
    aud: String,
    /// The caller's label: `key:NAME`, `legacy-key:NAME`, `identity:NAME`, `entra`, `anonymous`.
    sub: String,
    /// A key's fingerprint: a rotated key (same name, new digest) no longer matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    oid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    azp: Option<String>,
    iat: i64,
    exp: i64,
}

/// Why an issued token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssuedRejection {
    #[error(
        "the token from issueToken expired at {at}; fetch a new one (POST /sts/v1.0/issueToken with the key), they last 10 minutes"
    )]
    Expired { at: String },
    #[error(
        "the bearer token is not one this proxy issued: it was altered or forged, or issued before the proxy restarted or by another replica (replicas share tokens only with the same [server] issued_token_secret)"
    )]
    Invalid,
    #[error(
        "the token was issued for {caller}, which this proxy no longer has or whose key has changed since; fetch a new one with the current key"
    )]
    Revoked { caller: String },
}

impl IssuedRejection {
    pub fn code(&self) -> &'static str {
        match self {
            IssuedRejection::Expired { .. } => "issued_token_expired",
            IssuedRejection::Invalid => "issued_token_invalid",
            IssuedRejection::Revoked { .. } => "issued_token_revoked",
        }
    }
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issuer")
            .field("key", &"****")
            .field("shared", &self.shared)
            .finish()
    }
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("token", &"****")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Whether a bearer value is a token this proxy issues (by its fixed header).
pub fn is_issued(value: &str) -> bool {
    value
        .strip_prefix(HEADER)
        .is_some_and(|rest| rest.starts_with('.'))
}

impl Issuer {
    /// An issuer with a fresh random key: this process's own.
    pub fn random() -> Result<Issuer, String> {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| "no random bytes for the issued-token key")?;
        Ok(Issuer {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            shared: false,
        })
    }

    /// An issuer keyed by a configured secret, which replicas share.
    pub fn from_secret(secret: &SecretString) -> Issuer {
        Issuer {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.expose_secret().trim().as_bytes()),
            shared: true,
        }
    }

    /// Whether the key is a configured secret rather than this process's own.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Signs `claims` into a token.
    fn sign(&self, claims: &IssuedClaims) -> Result<String, serde_json::Error> {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?);
        let input = format!("{HEADER}.{payload}");
        let tag = hmac::sign(&self.key, input.as_bytes());
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref())))
    }

    /// The claims of a token this issuer signed, unexpired at `now` (Unix seconds).
    pub(super) fn verify(&self, token: &str, now: i64) -> Result<IssuedClaims, IssuedRejection> {
        if token.len() > MAX_TOKEN_LEN || !is_issued(token) {
            return Err(IssuedRejection::Invalid);
        }
        let (input, signature) = token.rsplit_once('.').ok_or(IssuedRejection::Invalid)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| IssuedRejection::Invalid)?;
        hmac::verify(&self.key, input.as_bytes(), &signature)
            .map_err(|_| IssuedRejection::Invalid)?;
        let payload = input
            .strip_prefix(HEADER)
            .and_then(|p| p.strip_prefix('.'))
            .ok_or(IssuedRejection::Invalid)?;
        let claims: IssuedClaims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(IssuedRejection::Invalid)?;
        if claims.iss != ISSUER || claims.aud != AUDIENCE {
            return Err(IssuedRejection::Invalid);
        }
        if now >= claims.exp {
            return Err(IssuedRejection::Expired {
                at: rfc3339(claims.exp),
            });
        }
        Ok(claims)
    }
}

/// A token for `caller`, at `now` (Unix seconds): refused to callers whose own identity reaches
/// Azure (a passthrough Entra token, client credentials), since the token would reach Azure as
/// the proxy.
pub(super) fn issue(
    issuer: &Issuer,
    caller: &Caller,
    keys: &KeyStore,
    now: i64,
) -> Result<Issued, AuthError> {
    let not_for = || AuthError::IssueNotForCaller {
        caller: caller.label().to_string(),
    };
    let (oid, azp) = match &caller.held {
        Held::Key | Held::Nothing => (None, None),
        Held::Issued { oid, azp } => (oid.clone(), azp.clone()),
        Held::Entra {
            claims,
            use_: EntraUse::Swap,
            ..
        } => (
            claims.oid.as_deref().map(Arc::from),
            claims.app_id().map(Arc::from),
        ),
        Held::Entra {
            use_: EntraUse::Passthrough | EntraUse::OnBehalfOf,
            ..
        }
        | Held::App(_) => return Err(not_for()),
    };
    let mut exp = now.saturating_add(ISSUED_TOKEN_SECS);
    let fp = match &caller.label {
        CallerLabel::Key(name) | CallerLabel::LegacyKey(name) => {
            let (digest, holder) = keys.by_name(name).ok_or_else(not_for)?;
            // Never past the key's own expiry.
            if let Some(expires) = holder.policy.expires {
                exp = exp.min(expires.unix_timestamp());
            }
            Some(fingerprint(digest))
        }
        _ => None,
    };
    let claims = IssuedClaims {
        iss: ISSUER.to_string(),
        aud: AUDIENCE.to_string(),
        sub: caller.label().to_string(),
        fp,
        oid: oid.map(|o| o.to_string()),
        azp: azp.map(|a| a.to_string()),
        iat: now,
        exp,
    };
    let token = issuer.sign(&claims).map_err(|_| not_for())?;
    Ok(Issued {
        token: SecretString::from(token),
        expires_in: exp.saturating_sub(now),
    })
}

/// Where a token's caller is looked up again: the current keys and identities.
pub(super) struct Callers<'a> {
    pub(super) keys: &'a KeyStore,
    pub(super) identities: &'a Identities,
    pub(super) allow_unauthenticated: bool,
}

/// The caller a valid token was issued to, as the current config has it: the same key (by
/// name and digest) or identity (by name), with its policy; refused when it is gone.
pub(super) fn caller_of(
    claims: IssuedClaims,
    callers: &Callers<'_>,
    now: time::OffsetDateTime,
) -> Result<Caller, AuthError> {
    let revoked = || {
        AuthError::IssuedToken(IssuedRejection::Revoked {
            caller: claims.sub.clone(),
        })
    };
    let held = Held::Issued {
        oid: claims.oid.as_deref().map(Arc::from),
        azp: claims.azp.as_deref().map(Arc::from),
    };
    let (kind, name) = claims.sub.split_once(':').unwrap_or((&claims.sub, ""));
    match kind {
        "key" | "legacy-key" => {
            let (digest, holder) = callers.keys.by_name(name).ok_or_else(revoked)?;
            let same_kind = holder.legacy == (kind == "legacy-key");
            if !same_kind || claims.fp.as_deref() != Some(fingerprint(digest).as_str()) {
                return Err(revoked());
            }
            holder.policy.admit(now).map_err(|d| match d {
                super::PolicyDenial::Expired { at } => AuthError::KeyExpired {
                    name: name.to_string(),
                    at,
                },
            })?;
            Ok(Caller {
                label: CallerLabel::key(name, holder.legacy),
                policy: Some(holder.policy.clone()),
                held,
                user: None,
            })
        }
        "identity" => {
            let identity = callers.identities.by_name(name).ok_or_else(revoked)?;
            Ok(Caller {
                label: identity.label.clone(),
                user: claims
                    .oid
                    .as_deref()
                    .and_then(|oid| identity.policy.user_account(oid)),
                policy: Some(identity.policy.clone()),
                held,
            })
        }
        "entra" if callers.identities.admits_unmatched() => Ok(Caller {
            label: CallerLabel::Entra,
            policy: None,
            held,
            user: None,
        }),
        "anonymous" if callers.allow_unauthenticated => Ok(Caller::anonymous()),
        _ => Err(revoked()),
    }
}

/// A key's fingerprint in a token: derived from its digest, 96 bits, hex.
fn fingerprint(digest: &KeyDigest) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(FINGERPRINT_CONTEXT);
    h.update(digest.0);
    hex::encode(&h.finalize()[..12])
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::limits::Limits;

    const NOW: i64 = 1_800_000_000;

    fn keys(text: &str) -> KeyStore {
        let c = Config::parse(
            &format!("[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\n{text}"),
            "t",
            &|_| None,
        )
        .unwrap();
        KeyStore::new(&c.keys, &Limits::in_memory())
    }

    fn key_block(name: &str, key: &str) -> String {
        format!(
            "[[keys]]\nname='{name}'\nsha256='{}'\n",
            KeyDigest::of(key).to_hex()
        )
    }

    fn key_caller(store: &KeyStore, key: &str) -> Caller {
        super::super::keys::authenticate(store, key, super::super::CredentialSource::ApiKeyHeader)
            .unwrap()
    }

    fn resolve(store: &KeyStore, claims: IssuedClaims) -> Result<Caller, AuthError> {
        let ids = Identities::new(
            &[],
            crate::config::Unmatched::Allow,
            crate::config::Upstream::ByAudience,
            &Limits::in_memory(),
        );
        let callers = Callers {
            keys: store,
            identities: &ids,
            allow_unauthenticated: false,
        };
        caller_of(claims, &callers, time::OffsetDateTime::now_utc())
    }

    #[test]
    fn a_token_names_its_key_and_comes_back_as_that_caller() {
        let issuer = Issuer::random().unwrap();
        let store = keys(&(key_block("team-a", "ka") + &key_block("team-b", "kb")));
        let issued = issue(&issuer, &key_caller(&store, "ka"), &store, NOW).unwrap();
        assert_eq!(issued.expires_in, ISSUED_TOKEN_SECS);
        let token = issued.token.expose_secret();
        assert!(is_issued(token));
        assert_eq!(token.matches('.').count(), 2);
        assert!(!token.contains("ka") || !token.contains(&KeyDigest::of("ka").to_hex()));
        let claims = issuer.verify(token, NOW + 1).unwrap();
        assert_eq!(claims.sub, "key:team-a");
        let caller = resolve(&store, claims).unwrap();
        assert_eq!(caller.label().to_string(), "key:team-a");
        assert!(format!("{:?}", issued).contains("****"));
        assert!(!format!("{:?}", issued).contains(token));
        assert!(!format!("{issuer:?}").contains("key: ["));
    }

    #[test]
    fn expired_forged_and_foreign_tokens_are_refused() {
        let issuer = Issuer::random().unwrap();
        let store = keys(&(key_block("team-a", "ka") + &key_block("team-b", "kb")));
        let token = issue(&issuer, &key_caller(&store, "ka"), &store, NOW).unwrap();
        let token = token.token.expose_secret().to_string();
        assert!(matches!(
            issuer.verify(&token, NOW + ISSUED_TOKEN_SECS),
            Err(IssuedRejection::Expired { .. })
        ));
        // Another process's key (a restart, another replica without a shared secret).
        let other = Issuer::random().unwrap();
        assert_eq!(other.verify(&token, NOW), Err(IssuedRejection::Invalid));
        // The payload edited to name team-b: the signature no longer holds.
        let (header, rest) = token.split_once('.').unwrap();
        let (payload, sig) = rest.split_once('.').unwrap();
        let json = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        let forged = URL_SAFE_NO_PAD.encode(json.replace("team-a", "team-b"));
        assert_eq!(
            issuer.verify(&format!("{header}.{forged}.{sig}"), NOW),
            Err(IssuedRejection::Invalid)
        );
        for garbage in [
            "",
            "eyJ.x.y",
            &format!("{HEADER}.x"),
            &format!("{HEADER}.."),
        ] {
            assert_eq!(
                issuer.verify(garbage, NOW),
                Err(IssuedRejection::Invalid),
                "{garbage}"
            );
        }
        // A shared secret: any replica with it accepts the token.
        let secret = SecretString::from("s".repeat(40));
        let a = Issuer::from_secret(&secret);
        let b = Issuer::from_secret(&secret);
        let t = issue(&a, &key_caller(&store, "ka"), &store, NOW).unwrap();
        assert!(b.verify(t.token.expose_secret(), NOW).is_ok());
        assert!(a.is_shared());
    }

    #[test]
    fn a_rotated_or_removed_key_revokes_its_tokens() {
        let issuer = Issuer::random().unwrap();
        let store = keys(&key_block("team-a", "ka"));
        let token = issue(&issuer, &key_caller(&store, "ka"), &store, NOW).unwrap();
        let claims = issuer.verify(token.token.expose_secret(), NOW).unwrap();
        let rotated = keys(&key_block("team-a", "ka-new"));
        assert!(matches!(
            resolve(&rotated, claims.clone()),
            Err(AuthError::IssuedToken(IssuedRejection::Revoked { .. }))
        ));
        let gone = keys(&key_block("team-b", "kb"));
        assert!(matches!(
            resolve(&gone, claims),
            Err(AuthError::IssuedToken(IssuedRejection::Revoked { .. }))
        ));
    }

    #[test]
    fn a_token_never_outlives_its_key() {
        let issuer = Issuer::random().unwrap();
        let store = keys(&format!(
            "{}expires='2027-01-15T08:00:00Z'\n",
            key_block("team-a", "ka")
        ));
        let expires = time::macros::datetime!(2027-01-15 08:00 UTC).unix_timestamp();
        let t = issue(&issuer, &key_caller(&store, "ka"), &store, expires - 60).unwrap();
        assert_eq!(t.expires_in, 60);
    }
}
