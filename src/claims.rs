//! Reading a JWT's header and claims without trusting it: for routing decisions before
//! verification, for explaining tokens and for diagnosing Azure's answers. Never for authorization.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// The JOSE header fields the proxy looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtHeader {
    #[serde(default)]
    pub alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
}

/// `aud` may be a string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn values(&self) -> Vec<&str> {
        match self {
            Audience::One(a) => vec![a.as_str()],
            Audience::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// The Entra claims the proxy reads. Everything is optional: a token is data from outside.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idtyp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scp: Option<String>,
    /// App roles (`roles`): what identities match by `role`.
    #[serde(default, skip_serializing_if = "ClaimList::is_absent")]
    pub roles: ClaimList,
    /// Group object ids (`groups`): what identities match by `group`.
    #[serde(default, skip_serializing_if = "ClaimList::is_absent")]
    pub groups: ClaimList,
    /// Where Entra says the groups are when there are too many for the token (groups
    /// overage): `{"groups": "src1"}`.
    #[serde(
        default,
        rename = "_claim_names",
        skip_serializing_if = "Option::is_none"
    )]
    pub claim_names: Option<serde_json::Value>,
    /// `hasgroups: true`: the implicit flow's form of groups overage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hasgroups: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xms_mirid: Option<String>,
}

impl Claims {
    /// The first audience, which is what Azure compares.
    pub fn audience(&self) -> Option<&str> {
        self.aud.as_ref().and_then(|a| a.values().first().copied())
    }

    /// The calling application: `appid` (v1) or `azp` (v2).
    pub fn app_id(&self) -> Option<&str> {
        self.appid.as_deref().or(self.azp.as_deref())
    }

    /// Whether the token carries no `groups` because the user is in too many (Entra's groups
    /// overage: `_claim_names.groups` or `hasgroups: true`); the groups are then only in
    /// Microsoft Graph, which the proxy never calls.
    pub fn groups_overage(&self) -> bool {
        let named = self
            .claim_names
            .as_ref()
            .is_some_and(|n| n.get("groups").is_some());
        named || self.hasgroups == Some(serde_json::Value::Bool(true))
    }
}

/// A claim that should be a list of strings (`roles`, `groups`), as a token carried it: a token
/// is data from outside, and one of the wrong shape must not stop the rest from being read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ClaimList {
    #[default]
    Absent,
    Strings(Vec<String>),
    /// There, but not an array of strings: what it was instead (`a string`, `an object`, …).
    Malformed(&'static str),
}

impl ClaimList {
    pub fn is_absent(&self) -> bool {
        matches!(self, ClaimList::Absent)
    }

    /// The strings, when the claim is a list of them (else none).
    pub fn strings(&self) -> &[String] {
        match self {
            ClaimList::Strings(v) => v,
            ClaimList::Absent | ClaimList::Malformed(_) => &[],
        }
    }
}

impl<'de> Deserialize<'de> for ClaimList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ClaimList, D::Error> {
        use serde_json::Value;
        Ok(match Value::deserialize(d)? {
            Value::Null => ClaimList::Absent,
            Value::Array(items) => {
                let mut strings = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::String(s) => strings.push(s),
                        _ => return Ok(ClaimList::Malformed("an array with other than strings")),
                    }
                }
                ClaimList::Strings(strings)
            }
            Value::String(_) => ClaimList::Malformed("a string"),
            Value::Object(_) => ClaimList::Malformed("an object"),
            Value::Number(_) => ClaimList::Malformed("a number"),
            Value::Bool(_) => ClaimList::Malformed("a boolean"),
        })
    }
}

impl Serialize for ClaimList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.strings().serialize(s)
    }
}

/// A JWT decoded without verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unverified {
    pub header: JwtHeader,
    pub claims: Claims,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a JWT: expected three base64url parts separated by '.', found {0}")]
    Shape(usize),
    #[error("not a JWT: the {0} is not valid base64url")]
    Base64(&'static str),
    #[error("not a JWT: the {0} is not a JSON object ({1})")]
    Json(&'static str, String),
}

/// Whether a credential looks like a JWT at all (three dot-separated parts, header starting
/// with `eyJ`). Cheap; used to tell tokens from keys.
pub fn looks_like_jwt(value: &str) -> bool {
    value.starts_with("eyJ") && value.bytes().filter(|b| *b == b'.').count() == 2
}

/// Decodes header and claims of a compact JWS without checking anything.
pub fn decode_unverified(token: &str) -> Result<Unverified, DecodeError> {
    let parts: Vec<&str> = token.trim().split('.').collect();
    let [header, claims, _signature] = parts.as_slice() else {
        return Err(DecodeError::Shape(parts.len()));
    };
    let header = decode_part::<JwtHeader>(header, "header")?;
    let claims = decode_part::<Claims>(claims, "payload")?;
    Ok(Unverified { header, claims })
}

fn decode_part<T: for<'de> Deserialize<'de>>(
    part: &str,
    what: &'static str,
) -> Result<T, DecodeError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| DecodeError::Base64(what))?;
    serde_json::from_slice(&bytes).map_err(|e| DecodeError::Json(what, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_groups_of_the_wrong_shape_are_read_as_malformed_not_refused() {
        let claims = |json: &str| serde_json::from_str::<Claims>(json).unwrap();
        let c = claims(r#"{"oid":"o","roles":["a","b"],"groups":["g"]}"#);
        assert_eq!(c.roles.strings(), ["a", "b"]);
        assert_eq!(c.groups.strings(), ["g"]);
        let c = claims(r#"{"oid":"o","roles":{"a":1},"groups":"g1"}"#);
        assert_eq!(c.roles, ClaimList::Malformed("an object"));
        assert_eq!(c.groups, ClaimList::Malformed("a string"));
        assert!(c.groups.strings().is_empty());
        assert_eq!(c.oid.as_deref(), Some("o"));
        let c = claims(r#"{"groups":["g", 3]}"#);
        assert!(matches!(c.groups, ClaimList::Malformed(_)));
        assert!(!claims("{}").groups_overage());
        assert!(claims(r#"{"_claim_names":{"groups":"src1"}}"#).groups_overage());
        assert!(claims(r#"{"hasgroups":true}"#).groups_overage());
    }

    fn jwt(header: &str, claims: &str) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        )
    }

    #[test]
    fn decodes_string_and_array_audiences() {
        let t = jwt(
            r#"{"alg":"RS256","kid":"k1"}"#,
            r#"{"aud":"https://cognitiveservices.azure.com","tid":"t","exp":10,"roles":["a"]}"#,
        );
        assert!(looks_like_jwt(&t));
        let u = decode_unverified(&t).unwrap();
        assert_eq!(u.header.kid.as_deref(), Some("k1"));
        assert_eq!(
            u.claims.audience(),
            Some("https://cognitiveservices.azure.com")
        );
        assert_eq!(u.claims.roles.strings(), ["a"]);
        let t = jwt(r#"{"alg":"RS256"}"#, r#"{"aud":["x","y"],"azp":"app"}"#);
        let u = decode_unverified(&t).unwrap();
        assert_eq!(u.claims.audience(), Some("x"));
        assert_eq!(u.claims.app_id(), Some("app"));
    }

    #[test]
    fn rejects_non_jwts_with_a_reason() {
        assert_eq!(decode_unverified("abc"), Err(DecodeError::Shape(1)));
        assert!(!looks_like_jwt("sk-proj-abc"));
        assert_eq!(
            decode_unverified("eyJ!.eyJ.x"),
            Err(DecodeError::Base64("header"))
        );
        let t = format!(
            "{}.{}.s",
            URL_SAFE_NO_PAD.encode("[1]"),
            URL_SAFE_NO_PAD.encode("{}")
        );
        assert!(matches!(
            decode_unverified(&t),
            Err(DecodeError::Json("header", _))
        ));
    }
}
