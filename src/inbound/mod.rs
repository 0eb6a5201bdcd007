//! Turns a request's credential into a [`Caller`]: its label (the one name metrics, logs,
//! traces and `/status` use), the policy that applies, and what it holds for the upstream step.
//! One file per kind of credential, each with its own `authenticate`; `presented` finds which
//! credential a request carries. Adding a kind: its file here, and in `identity` the bearer it
//! gets upstream.

mod client_credentials;
mod entra;
mod error;
mod identities;
pub mod issued;
mod keys;
mod policy;
mod presented;
pub mod query;
pub mod subprotocol;

pub use crate::config::CallerLabel;
pub use client_credentials::{AppCredential, TENANT_HEADER, parse_basic};
pub use entra::{
    EntraError, EntraUse, EntraValidator, KeysUnavailable, TokenRejection, audience_use,
    check_lifetime, human_duration,
};
pub use error::{AuthError, CredentialSource};
pub use identities::{Identities, Identity, NoIdentity, Principal};
pub use keys::{KeyHolder, KeyStore, generate_key};
pub use policy::{PerUser, Policy, PolicyDenial};

use crate::claims::Claims;
use crate::config::{Config, InboundConfig, InboundMode};
use axum::http::{HeaderMap, HeaderName};
use presented::Presented;
use secrecy::SecretString;
use std::sync::Arc;

/// The `api-key` header Azure SDKs send.
pub const API_KEY: HeaderName = HeaderName::from_static("api-key");
/// The key header Cognitive Services clients (Speech, Language, …) send.
pub const SUBSCRIPTION_KEY: HeaderName = HeaderName::from_static("ocp-apim-subscription-key");

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Its name in metrics, logs, traces and `/status`: never a credential.
    pub label: CallerLabel,
    /// The models, expiry and budgets that apply; `None` for callers without a policy.
    pub policy: Option<Arc<Policy>>,
    /// What the caller holds, as far as the upstream step needs it.
    pub held: Held,
    /// The caller's own budget inside a shared identity (its `oid`'s), when the identity has
    /// per-user budgets.
    pub user: Option<crate::limits::Account>,
}

/// What a caller presented, as far as choosing its upstream bearer needs it.
#[derive(Debug, Clone)]
pub enum Held {
    /// A proxy key or an old Azure resource key: never forwarded; the proxy's token goes up.
    Key,
    /// A validated Entra token: forwarded as it is, or swapped for the proxy's token.
    Entra {
        claims: Arc<Claims>,
        use_: EntraUse,
        token: SecretString,
    },
    /// A service principal's client credentials, exchanged for that app's own token.
    App(Arc<AppCredential>),
    /// No credential, allowed because the proxy is a loopback sidecar (or so configured).
    Nothing,
    /// A token the proxy issued (`issueToken`) for a key or an Entra caller it speaks for: never
    /// forwarded; the proxy's token goes up. The Entra caller's ids, for logs.
    Issued {
        oid: Option<Arc<str>>,
        azp: Option<Arc<str>>,
    },
}

impl Caller {
    /// The caller without a credential.
    pub fn anonymous() -> Caller {
        Caller {
            label: CallerLabel::Anonymous,
            policy: None,
            held: Held::Nothing,
            user: None,
        }
    }

    /// The caller's name, safe to log and to return in headers.
    pub fn label(&self) -> &CallerLabel {
        &self.label
    }

    /// The policy that applies, if any.
    pub fn policy(&self) -> Option<&Policy> {
        self.policy.as_deref()
    }
}

impl Caller {
    /// An Entra or app caller: named by the identity `principal` matches, with its policy and
    /// (for a user of an identity with per-user budgets) the user's own account; unnamed
    /// (`entra`, `app`) when none does and unmatched callers are let through.
    fn identified(
        identities: &Identities,
        principal: &Principal<'_>,
        unnamed: CallerLabel,
        held: Held,
    ) -> Result<Caller, AuthError> {
        let found = identities
            .find(principal)
            .map_err(|e| AuthError::NoIdentity(Box::new(e)))?;
        let upstream = found.map_or(identities.default_upstream(), |i| i.upstream);
        let held = match held {
            Held::Entra {
                claims,
                use_,
                token,
            } => Held::Entra {
                claims,
                use_: use_.under(upstream),
                token,
            },
            other => other,
        };
        Ok(match found {
            Some(identity) => Caller {
                label: identity.label.clone(),
                user: principal
                    .object_id
                    .and_then(|oid| identity.policy.user_account(oid)),
                policy: Some(identity.policy.clone()),
                held,
            },
            None => Caller {
                label: unnamed,
                policy: None,
                held,
                user: None,
            },
        })
    }

    /// An Entra caller's object id and app id (`oid`, `azp`/`appid`); a client-credentials
    /// caller's client id as its app id. Ids, not secrets: for access lines and spans.
    pub fn ids(&self) -> (Option<&str>, Option<&str>) {
        match &self.held {
            Held::Entra { claims, .. } => (claims.oid.as_deref(), claims.app_id()),
            Held::App(app) => (None, Some(&app.client_id)),
            Held::Issued { oid, azp } => (oid.as_deref(), azp.as_deref()),
            Held::Key | Held::Nothing => (None, None),
        }
    }

    /// Which app or principal an Entra or app caller is (its `azp`/`appid`, else its `oid`; the
    /// client id of client credentials): ids, not secrets, for logs and `/status`.
    pub fn principal(&self) -> Option<&str> {
        match &self.held {
            Held::Entra { claims, .. } => claims.app_id().or(claims.oid.as_deref()),
            Held::App(app) => Some(&app.client_id),
            Held::Issued { oid, azp } => azp.as_deref().or(oid.as_deref()),
            Held::Key | Held::Nothing => None,
        }
    }
}

/// Authenticates requests against the configured client credentials, and names Entra and app
/// callers by the identity they match.
#[derive(Debug)]
pub struct Authenticator {
    keys: KeyStore,
    identities: Identities,
    allow_unauthenticated: bool,
    inbound: InboundConfig,
    entra: Option<EntraValidator>,
    /// Signs and checks the tokens of `issueToken`.
    issuer: Arc<issued::Issuer>,
}

impl Authenticator {
    /// Checks callers against `config`; keys count against their accounts in `limits`.
    /// Issued tokens are signed with `[server] issued_token_secret`, else with a key of this
    /// authenticator's own (see [`Authenticator::with_issuer`] for one that outlives reloads).
    pub fn new(config: &Config, limits: &crate::limits::Limits) -> Result<Authenticator, String> {
        let entra = match &config.inbound.entra {
            Some(e) => Some(EntraValidator::new(config, e)?),
            None => None,
        };
        let issuer = match &config.server.issued_token_secret {
            Some(secret) => issued::Issuer::from_secret(secret),
            None => issued::Issuer::random()?,
        };
        Ok(Authenticator {
            keys: KeyStore::new(&config.keys, limits),
            identities: Identities::new(
                &config.identities,
                config.inbound.unmatched,
                config.inbound.upstream,
                limits,
            ),
            allow_unauthenticated: config.allow_unauthenticated,
            inbound: config.inbound.clone(),
            entra,
            issuer: Arc::new(issuer),
        })
    }

    /// Signs issued tokens with `process_issuer` (this process's own key, kept across reloads)
    /// unless the config names a shared secret.
    pub fn with_issuer(mut self, process_issuer: &Arc<issued::Issuer>) -> Authenticator {
        if !self.issuer.is_shared() {
            self.issuer = process_issuer.clone();
        }
        self
    }

    /// A token for `caller` from `issueToken`, valid for 10 minutes (never past its key's
    /// expiry); refused to callers whose own identity reaches Azure.
    pub fn issue_token(&self, caller: &Caller) -> Result<issued::Issued, AuthError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        issued::issue(&self.issuer, caller, &self.keys, now)
    }

    /// The caller an issued token stands for, checked against the current keys and identities.
    fn authenticate_issued(&self, token: &str) -> Result<Caller, AuthError> {
        let now = time::OffsetDateTime::now_utc();
        let claims = self
            .issuer
            .verify(token, now.unix_timestamp())
            .map_err(AuthError::IssuedToken)?;
        let callers = issued::Callers {
            keys: &self.keys,
            identities: &self.identities,
            allow_unauthenticated: self.allow_unauthenticated,
        };
        issued::caller_of(claims, &callers, now)
    }

    /// Every configured identity (the status page's rows).
    pub fn identities(&self) -> &Identities {
        &self.identities
    }

    /// Refuses a credential kind the config does not enable.
    fn require(&self, mode: InboundMode) -> Result<(), AuthError> {
        match self.inbound.allows(mode) {
            true => Ok(()),
            false => Err(self.disabled(mode)),
        }
    }

    fn disabled(&self, mode: InboundMode) -> AuthError {
        AuthError::ModeDisabled {
            mode: mode.name(),
            enabled: self.inbound.modes.iter().map(|m| m.name()).collect(),
        }
    }

    /// [`Authenticator::authenticate_request`] for a request without a query string.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        self.authenticate_request(headers, None).await
    }

    /// Authenticates by the credential headers, else an `api-key`/`subscription-key` query
    /// parameter, else an `openai-insecure-api-key.<key>` WebSocket subprotocol. A key's models
    /// are the policy step's to check, once the request is routed.
    pub async fn authenticate_request(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Caller, AuthError> {
        let entra_enabled = self.entra.is_some();
        let Some(presented) = presented::presented_credential(headers, query, entra_enabled)?
        else {
            return match self.allow_unauthenticated {
                true => Ok(Caller::anonymous()),
                false => Err(AuthError::MissingCredential),
            };
        };
        match presented {
            // A sidecar without keys lets any key through: its clients need to send one.
            Presented::Key(..) if self.allow_unauthenticated && self.keys.is_empty() => {
                Ok(Caller::anonymous())
            }
            Presented::Key(value, source) => {
                self.require(InboundMode::Key)?;
                keys::authenticate(&self.keys, &value, source)
            }
            Presented::Jwt(token) => {
                self.require(InboundMode::Entra)?;
                let validator = self
                    .entra
                    .as_ref()
                    .ok_or_else(|| self.disabled(InboundMode::Entra))?;
                // Boxed: it may fetch signing keys, and key callers should not carry that state.
                Box::pin(entra::authenticate(validator, &self.identities, &token)).await
            }
            // Issued for a caller this proxy accepted, under whatever mode it came in.
            Presented::Issued(token) => self.authenticate_issued(&token),
            Presented::Basic(value) => {
                self.require(InboundMode::ClientCredentials)?;
                let settings = self
                    .inbound
                    .client_credentials
                    .as_ref()
                    .ok_or_else(|| self.disabled(InboundMode::ClientCredentials))?;
                client_credentials::authenticate(settings, &self.identities, headers, value)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn auth(extra: &str) -> Authenticator {
        let text = format!(
            "[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\n[[models]]\nname='m'\nbackend='a'\ndeployment='d'\n{extra}"
        );
        let c = Config::parse(&text, "t", &|_| None).unwrap();
        Authenticator::new(&c, &crate::limits::Limits::in_memory()).unwrap()
    }

    fn key_block(name: &str, key: &str, legacy: bool) -> String {
        format!(
            "[[keys]]\nname='{name}'\nsha256='{}'\nlegacy={legacy}\n",
            crate::config::KeyDigest::of(key).to_hex()
        )
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[tokio::test]
    async fn api_key_and_bearer_are_both_accepted() {
        let a = auth(&(key_block("a", "k1", false) + &key_block("old", "k2", true)));
        assert!(matches!(
            a.authenticate(&headers(&[("api-key", "k1")])).await,
            Ok(Caller {
                label: CallerLabel::Key(_),
                ..
            })
        ));
        assert!(matches!(
            a.authenticate(&headers(&[("authorization", "Bearer k1")]))
                .await,
            Ok(Caller {
                label: CallerLabel::Key(_),
                ..
            })
        ));
        assert!(matches!(
            a.authenticate(&headers(&[("api-key", "k2")])).await,
            Ok(Caller {
                label: CallerLabel::LegacyKey(_),
                ..
            })
        ));
    }

    #[tokio::test]
    async fn missing_wrong_and_malformed_are_rejected() {
        let a = auth(&key_block("a", "k1", false));
        assert!(matches!(
            a.authenticate(&headers(&[])).await,
            Err(AuthError::MissingCredential)
        ));
        assert!(matches!(
            a.authenticate(&headers(&[("api-key", "nope")])).await,
            Err(AuthError::UnknownKey(CredentialSource::ApiKeyHeader))
        ));
        assert!(matches!(
            a.authenticate(&headers(&[("authorization", "Digest abc")]))
                .await,
            Err(AuthError::MalformedAuthorization(_))
        ));
        assert!(matches!(
            a.authenticate(&headers(&[("authorization", "Bearer ")]))
                .await,
            Err(AuthError::MalformedAuthorization(_))
        ));
        // client credentials are off by default
        assert!(matches!(
            a.authenticate(&headers(&[("authorization", "Basic YTpi")]))
                .await,
            Err(AuthError::ModeDisabled {
                mode: "client-credentials",
                ..
            })
        ));
        assert!(matches!(
            a.authenticate(&headers(&[(
                "authorization",
                "Bearer eyJhbGciOiJSUzI1NiJ9.eyJ9.sig"
            )]))
            .await,
            Err(AuthError::ModeDisabled { mode: "entra", .. })
        ));
    }

    #[tokio::test]
    async fn sidecar_mode_lets_anyone_in() {
        let a = auth("");
        assert!(matches!(
            a.authenticate(&headers(&[])).await,
            Ok(Caller {
                label: CallerLabel::Anonymous,
                ..
            })
        ));
        assert!(matches!(
            a.authenticate(&headers(&[("api-key", "whatever")])).await,
            Ok(Caller {
                label: CallerLabel::Anonymous,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn client_credentials_take_the_tenant_from_config_or_header() {
        let a = auth(
            &(key_block("a", "k1", false)
                + "[inbound.client_credentials]\ntenant_id='t1'\nallow_tenant_header=true\n"),
        );
        let basic = "Basic YXBwLTE6c2VjcmV0"; // app-1:secret
        let Ok(Caller {
            held: Held::App(app),
            ..
        }) = a.authenticate(&headers(&[("authorization", basic)])).await
        else {
            panic!("expected an app caller")
        };
        assert_eq!(app.tenant, "t1");
        let Ok(Caller {
            held: Held::App(app),
            ..
        }) = a
            .authenticate(&headers(&[
                ("authorization", basic),
                ("x-ms-tenant-id", "T2"),
            ]))
            .await
        else {
            panic!("expected an app caller")
        };
        assert_eq!(app.tenant, "t2");
        assert_eq!(app.client_id, "app-1");
    }
}
