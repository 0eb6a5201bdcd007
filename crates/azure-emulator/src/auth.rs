//! Data-plane authentication as Azure does it: a bearer token for the resource's audience, or its key.

use http::HeaderMap;

use super::ResourceKind;
use super::keys::{self, CheckedClaims};
use super::samples::AzureSample;
use super::state::{BearerFacts, Shared, bearer_token, key_matches};
use crate::cloud::same_audience;

/// A caller the data plane let in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Accepted {
    /// The bearer token's audience; `None` for key callers.
    pub(crate) audience: Option<String>,
}

/// Checks the caller's credential against the emulator's resource key; the error is the sample
/// Azure would answer with. A bearer token whose signature and lifetime verify has its caller
/// noted on logged request `seq` (whatever its audience).
#[cfg(test)]
pub(crate) fn authenticate(
    shared: &Shared,
    kind: ResourceKind,
    headers: &HeaderMap,
    seq: u64,
) -> Result<Accepted, AzureSample> {
    authenticate_with_key(
        shared,
        kind,
        shared.config.resource_key.as_deref(),
        headers,
        seq,
    )
}

/// Checks the caller's credential against `key` (`None`: key auth is off); the error is the
/// sample Azure would answer with. A bearer token whose signature and lifetime verify has its
/// caller noted on logged request `seq` (whatever its audience).
pub(crate) fn authenticate_with_key(
    shared: &Shared,
    kind: ResourceKind,
    key: Option<&str>,
    headers: &HeaderMap,
    seq: u64,
) -> Result<Accepted, AzureSample> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(token) = header("authorization").and_then(bearer_token) {
        if kind == ResourceKind::Regional {
            return Err(AzureSample::RegionalEndpoint400);
        }
        return check_token(shared, kind, token, seq);
    }
    if let Some(given) = header("api-key").or(header("ocp-apim-subscription-key")) {
        return match key {
            None => Err(AzureSample::KeyAuthDisabled401),
            Some(key) if key_matches(key, given.trim()) => Ok(Accepted::default()),
            Some(_) => Err(AzureSample::InvalidKey401),
        };
    }
    Err(AzureSample::AudienceIncorrect401)
}

/// Notes on logged request `seq` whose token it carried: `oid`, `azp` (v2) or `appid` (v1),
/// and `scp`, each when it is a string. For tokens whose signature and lifetime verified.
pub(crate) fn note_bearer(shared: &Shared, seq: u64, claims: &CheckedClaims) {
    let text =
        |v: &Option<serde_json::Value>| v.as_ref().and_then(|v| v.as_str()).map(str::to_owned);
    shared.set_bearer(
        seq,
        BearerFacts {
            oid: text(&claims.oid),
            app_id: text(&claims.azp).or_else(|| text(&claims.appid)),
            scp: text(&claims.scp),
        },
    );
}

fn check_token(
    shared: &Shared,
    kind: ResourceKind,
    token: &str,
    seq: u64,
) -> Result<Accepted, AzureSample> {
    let rejected = AzureSample::AudienceIncorrect401;
    let claims = shared.signing_key().verify(token).map_err(|_| rejected)?;
    note_bearer(shared, seq, &claims);
    let epoch = claims.uti.as_deref().and_then(keys::uti_epoch).unwrap_or(0);
    if epoch < shared.revocation_epoch() {
        return Err(rejected);
    }
    let expected = kind.audience(shared.config.cloud);
    let audience = claims.aud.first().map(str::to_owned).ok_or(rejected)?;
    if !same_audience(&audience, expected) {
        return Err(rejected);
    }
    Ok(Accepted {
        audience: Some(audience),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EmulatorConfig;
    use crate::keys::{MintSpec, first_key};

    fn shared(key: Option<&str>) -> Shared {
        let config = EmulatorConfig {
            resource_key: key.map(str::to_owned),
            ..EmulatorConfig::default()
        };
        Shared::new(config, first_key().unwrap())
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", format!("Bearer {token}").parse().unwrap());
        h
    }

    #[test]
    fn tokens_are_checked_for_the_resource_kinds_audience() {
        let s = shared(None);
        let cog = s.mint(&MintSpec::new("https://cognitiveservices.azure.com"));
        let ai = s.mint(&MintSpec::new("https://ai.azure.com/"));
        let ok = authenticate(&s, ResourceKind::OpenAi, &bearer(&cog), 0).unwrap();
        assert_eq!(
            ok.audience.as_deref(),
            Some("https://cognitiveservices.azure.com")
        );
        assert_eq!(
            authenticate(&s, ResourceKind::OpenAi, &bearer(&ai), 0),
            Err(AzureSample::AudienceIncorrect401)
        );
        assert!(authenticate(&s, ResourceKind::Foundry, &bearer(&ai), 0).is_ok());
        assert_eq!(
            authenticate(&s, ResourceKind::Regional, &bearer(&cog), 0),
            Err(AzureSample::RegionalEndpoint400)
        );
        s.revoke_issued_tokens();
        assert_eq!(
            authenticate(&s, ResourceKind::OpenAi, &bearer(&cog), 0),
            Err(AzureSample::AudienceIncorrect401)
        );
        let fresh = s.mint(&MintSpec::new("https://cognitiveservices.azure.com"));
        assert!(authenticate(&s, ResourceKind::OpenAi, &bearer(&fresh), 0).is_ok());
    }

    #[test]
    fn keys_follow_disable_local_auth() {
        let mut h = HeaderMap::new();
        h.insert("api-key", "k1".parse().unwrap());
        assert_eq!(
            authenticate(&shared(None), ResourceKind::OpenAi, &h, 0),
            Err(AzureSample::KeyAuthDisabled401)
        );
        assert_eq!(
            authenticate(&shared(Some("k2")), ResourceKind::OpenAi, &h, 0),
            Err(AzureSample::InvalidKey401)
        );
        assert!(authenticate(&shared(Some("k1")), ResourceKind::Regional, &h, 0).is_ok());
        assert_eq!(
            authenticate(
                &shared(Some("k1")),
                ResourceKind::OpenAi,
                &HeaderMap::new(),
                0
            ),
            Err(AzureSample::AudienceIncorrect401)
        );
    }

    #[test]
    fn audiences_follow_the_cloud() {
        let s = Shared::new(
            EmulatorConfig {
                cloud: crate::Cloud::Usgov,
                ..EmulatorConfig::default()
            },
            first_key().unwrap(),
        );
        let us = s.mint(&MintSpec::new("https://cognitiveservices.azure.us"));
        let public = s.mint(&MintSpec::new("https://cognitiveservices.azure.com"));
        assert!(authenticate(&s, ResourceKind::OpenAi, &bearer(&us), 0).is_ok());
        assert_eq!(
            authenticate(&s, ResourceKind::OpenAi, &bearer(&public), 0),
            Err(AzureSample::AudienceIncorrect401)
        );
    }
}
