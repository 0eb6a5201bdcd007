//! Reading a JWT without checking its signature: for what the emulator records and names in its
//! answers (audience, object id, a client assertion's subject). Accepting a token is
//! `keys::SigningKey::verify`'s job, never this module's.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// `aud` is a string or an array of strings; Azure compares the first.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub(crate) enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The claims the emulator reads from a token it has not verified.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct Claims {
    #[serde(default)]
    pub(crate) aud: Option<Audience>,
    #[serde(default)]
    pub(crate) sub: Option<String>,
    #[serde(default)]
    pub(crate) oid: Option<String>,
    #[serde(default)]
    pub(crate) iss: Option<String>,
}

/// Not a compact JWS with a JSON-object header and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// The two parts of a compact JWS that carry JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Header,
    Payload,
}

impl Audience {
    pub(crate) fn first(&self) -> Option<&str> {
        match self {
            Audience::One(aud) => Some(aud),
            Audience::Many(auds) => auds.first().map(String::as_str),
        }
    }
}

impl Claims {
    pub(crate) fn audience(&self) -> Option<&str> {
        self.aud.as_ref().and_then(Audience::first)
    }
}

/// The payload's claims, after checking that the token has three parts and a JSON-object header.
pub(crate) fn claims_unverified(token: &str) -> Result<Claims, Malformed> {
    part::<serde_json::Map<String, serde_json::Value>>(token, Part::Header)?;
    part(token, Part::Payload)
}

/// One JSON part of a compact JWS (`header.payload.signature`, each base64url).
pub(crate) fn part<T: DeserializeOwned>(token: &str, which: Part) -> Result<T, Malformed> {
    let mut parts = token.trim().split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Malformed);
    };
    let encoded = match which {
        Part::Header => header,
        Part::Payload => payload,
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .map_err(|_| Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(header: &str, payload: &str) -> String {
        let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b64(header), b64(payload))
    }

    #[test]
    fn reads_the_first_audience_subject_and_object_id() {
        let t = token(
            r#"{"alg":"RS256"}"#,
            r#"{"aud":"https://ai.azure.com","sub":"s","oid":"o","exp":1}"#,
        );
        let claims = claims_unverified(&t).unwrap();
        assert_eq!(claims.audience(), Some("https://ai.azure.com"));
        assert_eq!(claims.sub.as_deref(), Some("s"));
        assert_eq!(claims.oid.as_deref(), Some("o"));
        let t = token(r#"{"alg":"RS256"}"#, r#"{"aud":["a","b"]}"#);
        assert_eq!(claims_unverified(&t).unwrap().audience(), Some("a"));
    }

    #[test]
    fn anything_but_three_parts_of_json_objects_is_malformed() {
        assert_eq!(claims_unverified("abc"), Err(Malformed));
        assert_eq!(claims_unverified("a.b.c.d"), Err(Malformed));
        assert_eq!(claims_unverified("eyJ!.eyJ.x"), Err(Malformed));
        assert_eq!(claims_unverified(&token("[1]", "{}")), Err(Malformed));
        assert_eq!(claims_unverified(&token("{}", "7")), Err(Malformed));
    }
}
