//! The tokens `POST /sts/v1.0/issueToken` hands out for a resource key: a JWT, as plain text,
//! valid for 10 minutes, naming the resource it was issued for.
//!
//! Source: "Authenticate requests to Azure AI services" and the Speech REST APIs'
//! "Authentication" section (Microsoft Learn): the endpoint exchanges a resource key for an
//! access token in JWT format, valid for 10 minutes, sent back as `Authorization: Bearer
//! <token>` to Speech and Translator. The claims written here follow what such tokens carry
//! (`region`, `subscription-id`, `product-id`, `azure-resource-id`, `scope`, `aud`
//! `urn:ms.speech`, `iss` `urn:ms.cognitiveservices`); they are signed with the emulator's own
//! HS256 secret, so only this emulator accepts them.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::keys::now_unix;
use crate::state::Shared;

/// The `iss` of every issued token.
pub(crate) const ISSUER: &str = "urn:ms.cognitiveservices";
/// The `aud` of every issued token.
const AUDIENCE: &str = "urn:ms.speech";

/// Why an issued token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Not signed by this emulator, malformed, or expired.
    Invalid,
    /// Issued for another resource.
    OtherResource,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    region: String,
    #[serde(rename = "subscription-id")]
    subscription_id: String,
    #[serde(rename = "product-id")]
    product_id: String,
    #[serde(rename = "cognitive-services-endpoint")]
    cognitive_services_endpoint: String,
    #[serde(rename = "azure-resource-id")]
    azure_resource_id: String,
    scope: String,
    aud: String,
    exp: i64,
    iss: String,
}

/// A token for `resource_id` in `region`, living `lifetime`.
pub(crate) fn issue(
    shared: &Shared,
    resource_id: &str,
    region: &str,
    lifetime: Duration,
) -> String {
    let lifetime = i64::try_from(lifetime.as_secs()).unwrap_or(600);
    let claims = Claims {
        region: region.to_owned(),
        subscription_id: crate::keys::derived_uuid(resource_id).replace('-', ""),
        product_id: "CognitiveServices.S0".to_owned(),
        cognitive_services_endpoint: "https://api.cognitive.microsoft.com/internal/v1.0/"
            .to_owned(),
        azure_resource_id: resource_id.to_owned(),
        scope: "speechservices".to_owned(),
        aud: AUDIENCE.to_owned(),
        exp: now_unix().saturating_add(lifetime),
        iss: ISSUER.to_owned(),
    };
    let key = EncodingKey::from_secret(shared.sts_secret());
    // HS256 over serializable claims cannot fail; an empty token is refused everywhere.
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap_or_default()
}

/// Checks signature, expiry (no leeway) and that the token names `resource_id`.
pub(crate) fn verify(shared: &Shared, token: &str, resource_id: &str) -> Result<(), Refused> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[ISSUER]);
    let key = DecodingKey::from_secret(shared.sts_secret());
    let data =
        jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|_| Refused::Invalid)?;
    if same_resource(&data.claims.azure_resource_id, resource_id) {
        Ok(())
    } else {
        Err(Refused::OtherResource)
    }
}

/// ARM resource ids compare ignoring letter case and a trailing `/` (Azure Resource Manager
/// treats resource ids case-insensitively; Translator's docs show the id with a trailing `/`).
pub(crate) fn same_resource(a: &str, b: &str) -> bool {
    fn bare(s: &str) -> &str {
        s.trim().trim_end_matches('/')
    }
    bare(a).eq_ignore_ascii_case(bare(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EmulatorConfig;

    fn shared() -> Shared {
        Shared::new(EmulatorConfig::default(), crate::keys::first_key().unwrap())
    }

    #[test]
    fn issued_tokens_verify_for_their_resource_only_and_expire() {
        let s = shared();
        let token = issue(
            &s,
            "/subscriptions/s/x/accounts/A",
            "westeurope",
            Duration::from_secs(600),
        );
        assert_eq!(token.split('.').count(), 3);
        assert_eq!(verify(&s, &token, "/SUBSCRIPTIONS/s/x/accounts/a/"), Ok(()));
        assert_eq!(
            verify(&s, &token, "/subscriptions/s/x/accounts/b"),
            Err(Refused::OtherResource)
        );
        let other = shared();
        assert_eq!(
            verify(&other, &token, "/subscriptions/s/x/accounts/A"),
            Err(Refused::Invalid)
        );
        let expired = issue(&s, "r", "westeurope", Duration::ZERO);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(verify(&s, &expired, "r"), Err(Refused::Invalid));
        let claims = crate::jwt::claims_unverified(&token).unwrap();
        assert_eq!(claims.iss.as_deref(), Some(ISSUER));
    }
}
