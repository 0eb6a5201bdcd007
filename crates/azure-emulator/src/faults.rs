//! Scripted faults: per-deployment data-plane failures and failures of the identity endpoints.

use std::time::Duration;

use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::conn::Connection;
use super::entra::{self, EntraError};
use super::respond;
use super::samples::{AzureSample, SampleContext};
use super::state::{Shared, TokenEndpoint};

/// One scripted answer for one data-plane request to a deployment. In JSON (control API),
/// externally tagged in kebab-case, durations in milliseconds: `{"status":503}`,
/// `{"rate-limited":{"retry_after_ms":1500}}`, `{"delay":250}`,
/// `{"reset-mid-stream":{"after_events":2}}`, `"hang"`, `{"sample":"permission-denied403"}`,
/// `{"garbled":"truncated-json"}`, `"reset-after-request"`, `"stale-connection"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// That status with an Azure-shaped body `{"error":{"code":"<status>","message":…}}`.
    Status(u16),
    /// 429 with Azure's text and `retry-after` (seconds, rounded up) and `retry-after-ms`.
    RateLimited { retry_after_ms: u64 },
    /// Wait, then answer normally.
    Delay(#[serde(with = "millis")] Duration),
    /// Send this many SSE events, then break the connection. A non-streamed request gets its
    /// headers and then a broken body.
    ResetMidStream { after_events: usize },
    /// Never answer (until the client gives up or the emulator shuts down).
    Hang,
    /// Answer with that Azure error.
    Sample(AzureSample),
    /// Answer 200 as usual, with the part that carries the usage garbled.
    Garbled(Garble),
    /// Read the whole request, then reset the connection (TCP RST) without a byte of an
    /// answer: a front end that failed after the request arrived. Azure may have processed it.
    ResetAfterRequest,
    /// The keep-alive race: Azure closed an idle connection just as a request was sent on it,
    /// so the request is not processed and the connection is reset. Applies to the first
    /// request to the deployment that arrives on a kept-alive connection (one that carried a
    /// request before); requests on new connections pass meanwhile.
    StaleConnection,
}

/// How a [`Fault::Garbled`] answer is broken. A JSON answer is garbled whole; in a stream,
/// the usage chunk is (the other events are as usual).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Garble {
    /// Not JSON at all (an HTML page), still labelled `application/json`.
    NotJson,
    /// The JSON cut off halfway.
    TruncatedJson,
    /// A usage count of the wrong type: `"prompt_tokens":"12"`.
    UsageWrongType,
    /// No usage: a JSON answer without `usage`; a stream without its usage chunk though
    /// `stream_options.include_usage` asked for one.
    NoUsage,
}

/// A failure of every token endpoint (Entra, App Service MSI, IMDS) until cleared. In JSON:
/// `"down"`, `{"slow":2000}` (ms), `{"error":{"status":400,"aadsts":7000222}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentityFault {
    /// 503 from every token endpoint.
    Down,
    /// Wait this long, then answer normally.
    Slow(#[serde(with = "millis")] Duration),
    /// That status with an Entra-shaped `AADSTS<aadsts>` error.
    Error { status: u16, aadsts: u32 },
}

/// An on-behalf-of refusal Entra makes for reasons the emulator does not model (consent,
/// Conditional Access), switched on per app, per user or for everyone by an [`OboFaultRule`].
/// It applies once the client and the user assertion are valid. In JSON: `"consent-required"`,
/// `{"mfa-required":{"capolids":["…"]}}`, `{"mfa-enrollment-required":{}}`, `"invalid-client"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OboFault {
    /// 400 `invalid_grant`, AADSTS65001, `suberror: consent_required`.
    ConsentRequired,
    /// 400 `interaction_required`, AADSTS50076, with a `claims` challenge naming these
    /// Conditional Access policy ids (one made-up id when empty).
    MfaRequired {
        #[serde(default)]
        capolids: Vec<String>,
    },
    /// 400 `interaction_required`, AADSTS50079 (enroll in MFA), with a `claims` challenge.
    MfaEnrollmentRequired {
        #[serde(default)]
        capolids: Vec<String>,
    },
    /// The app's own credential is refused though it is right (a rotated secret, a removed
    /// certificate): 401 `invalid_client`, AADSTS7000215 for a secret, AADSTS700027 for an
    /// assertion.
    InvalidClient,
}

/// Where an [`OboFault`] applies: to requests of this app (`client_id`) for this user
/// (`user_oid`, the assertion's `oid`); an absent field matches any. The most specific rule
/// wins. In JSON: `{"client_id":"…","user_oid":"…","fault":"consent-required"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OboFaultRule {
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub user_oid: Option<String>,
    pub fault: OboFault,
}

/// What a data-plane fault leaves to do.
pub(crate) enum Applied {
    /// Answer this, skip everything else.
    Answer(Response),
    /// Go on normally; break the body after this many events if set; garble the answer if set.
    Proceed {
        reset_after: Option<usize>,
        garble: Option<Garble>,
    },
    /// Reset the connection without answering.
    Cut,
    /// Reset the connection without answering if it is a kept-alive one; otherwise go on
    /// normally and keep the fault for the next request.
    CutIfReused,
}

/// Applies a popped data-plane fault.
pub(crate) async fn apply(shared: &Shared, fault: Option<Fault>, ctx: &SampleContext) -> Applied {
    let proceed = Applied::Proceed {
        reset_after: None,
        garble: None,
    };
    let Some(fault) = fault else {
        return proceed;
    };
    match fault {
        Fault::Status(status) => {
            Applied::Answer(respond::json(status, super::samples::status_body(status)))
        }
        Fault::RateLimited { retry_after_ms } => {
            Applied::Answer(respond::rate_limited(retry_after_ms, ctx))
        }
        Fault::Delay(duration) => {
            if shared.sleep(duration).await {
                proceed
            } else {
                Applied::Answer(respond::shutting_down())
            }
        }
        Fault::ResetMidStream { after_events } => Applied::Proceed {
            reset_after: Some(after_events),
            garble: None,
        },
        Fault::Garbled(garble) => Applied::Proceed {
            reset_after: None,
            garble: Some(garble),
        },
        Fault::Hang => {
            shared.stopped().await;
            Applied::Answer(respond::shutting_down())
        }
        Fault::Sample(sample) => Applied::Answer(respond::sample(sample, ctx)),
        Fault::ResetAfterRequest => Applied::Cut,
        Fault::StaleConnection => Applied::CutIfReused,
    }
}

/// The fault scripted for `name` when the request came on `conn`: a [`Fault::StaleConnection`]
/// waits (stays queued) while requests arrive on new connections.
pub(crate) fn pop_for(shared: &Shared, name: &str, conn: Option<&Connection>) -> Option<Fault> {
    let fault = shared.pop_fault(name)?;
    if fault == Fault::StaleConnection && !conn.is_some_and(Connection::reused) {
        shared.unpop_fault(name, fault);
        return None;
    }
    Some(fault)
}

/// Resets the request's connection without answering; the handler is dropped with it (until
/// the emulator stops).
pub(crate) async fn cut(shared: &Shared, conn: Option<&Connection>) -> Response {
    match conn {
        Some(conn) => {
            conn.cut();
            shared.stopped().await;
            respond::shutting_down()
        }
        None => respond::json_value(
            500,
            &serde_json::json!({"error": {"code": "emulator", "message": "no connection to reset"}}),
        ),
    }
}

/// A popped fault applied to a request answered whole (an upload): its answer, or the
/// connection cut; `None` to answer normally.
pub(crate) async fn apply_whole(
    shared: &Shared,
    fault: Fault,
    conn: Option<&Connection>,
    ctx: &SampleContext,
) -> Option<Response> {
    match apply(shared, Some(fault), ctx).await {
        Applied::Answer(response) => Some(response),
        Applied::Cut | Applied::CutIfReused => Some(cut(shared, conn).await),
        Applied::Proceed { .. } => None,
    }
}

/// Applies the current identity fault to a token request, if any. `client_id` and `tenant`
/// fill in AADSTS texts.
pub(crate) async fn apply_identity(
    shared: &Shared,
    endpoint: TokenEndpoint,
    client_id: &str,
    tenant: &str,
    correlation_id: Option<&str>,
) -> Option<Response> {
    let error = match shared.identity_fault()? {
        IdentityFault::Slow(duration) => {
            return (!shared.sleep(duration).await).then(respond::shutting_down);
        }
        IdentityFault::Down => EntraError::Unavailable,
        IdentityFault::Error { status, aadsts } => EntraError::Scripted {
            status,
            code: aadsts,
            client_id: client_id.to_owned(),
            tenant: tenant.to_owned(),
        },
    };
    Some(match endpoint {
        TokenEndpoint::Entra => entra::error_response(&error, correlation_id),
        TokenEndpoint::Msi | TokenEndpoint::Imds => {
            let description = match &error {
                EntraError::Unavailable => {
                    "The managed identity endpoint is temporarily unavailable. Please try again later."
                        .to_owned()
                }
                other => other.message(),
            };
            let code = match &error {
                EntraError::Unavailable => "service_unavailable",
                other => other.error(),
            };
            respond::json_value(
                error.status(),
                &serde_json::json!({ "error": code, "error_description": description }),
            )
        }
    })
}

impl OboFaultRule {
    /// A rule for every on-behalf-of request.
    pub fn everyone(fault: OboFault) -> Self {
        OboFaultRule {
            client_id: None,
            user_oid: None,
            fault,
        }
    }

    /// A rule for one user's requests.
    pub fn for_user(user_oid: impl Into<String>, fault: OboFault) -> Self {
        OboFaultRule {
            client_id: None,
            user_oid: Some(user_oid.into()),
            fault,
        }
    }

    /// A rule for one app's requests.
    pub fn for_app(client_id: impl Into<String>, fault: OboFault) -> Self {
        OboFaultRule {
            client_id: Some(client_id.into()),
            user_oid: None,
            fault,
        }
    }

    pub(crate) fn matches(&self, client_id: &str, user_oid: Option<&str>) -> bool {
        self.client_id
            .as_deref()
            .is_none_or(|c| c.eq_ignore_ascii_case(client_id))
            && self
                .user_oid
                .as_deref()
                .is_none_or(|u| user_oid.is_some_and(|o| o.eq_ignore_ascii_case(u)))
    }

    /// Both fields beat the user alone, which beats the app alone, which beats neither.
    pub(crate) fn specificity(&self) -> u8 {
        u8::from(self.user_oid.is_some()) * 2 + u8::from(self.client_id.is_some())
    }
}

/// What a page that is not JSON looks like (a gateway's error page).
const NOT_JSON: &str = "<html><body><h1>502 Bad Gateway</h1></body></html>";

/// A JSON answer's body, garbled.
pub(crate) fn garble_json(mut value: serde_json::Value, garble: Garble) -> String {
    match garble {
        Garble::NotJson => NOT_JSON.to_owned(),
        Garble::TruncatedJson => truncated(&value.to_string()).to_owned(),
        Garble::UsageWrongType => {
            wrong_type(&mut value);
            value.to_string()
        }
        Garble::NoUsage => {
            if let Some(map) = value.as_object_mut() {
                map.remove("usage");
            }
            value.to_string()
        }
    }
}

/// A stream's events with its usage event garbled (dropped, for [`Garble::NoUsage`]).
pub(crate) fn garble_events(events: &mut Vec<bytes::Bytes>, garble: Garble) {
    let Some((i, head, data)) = events.iter().enumerate().rev().find_map(|(i, e)| {
        let text = std::str::from_utf8(e).ok()?;
        let start = text.find("data: ")?;
        let data = text[start + 6..].trim_end();
        let value: serde_json::Value = serde_json::from_str(data).ok()?;
        let usage = value.get("usage").or(value.pointer("/response/usage"));
        usage
            .is_some_and(|u| u.is_object())
            .then(|| (i, text[..start].to_owned(), value))
    }) else {
        return;
    };
    let payload = match garble {
        Garble::NotJson => NOT_JSON.to_owned(),
        Garble::TruncatedJson => truncated(&data.to_string()).to_owned(),
        Garble::UsageWrongType => {
            let mut data = data;
            wrong_type(&mut data);
            data.to_string()
        }
        Garble::NoUsage => {
            if data.get("usage").is_some() {
                events.remove(i);
                return;
            }
            let mut data = data;
            if let Some(r) = data.get_mut("response") {
                r["usage"] = serde_json::Value::Null;
            }
            data.to_string()
        }
    };
    events[i] = bytes::Bytes::from(format!("{head}data: {payload}\n\n"));
}

/// The first half of `text` (on a character boundary).
fn truncated(text: &str) -> &str {
    let mut end = text.len() / 2;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `usage.prompt_tokens` (or `input_tokens`) as a string, as in `"prompt_tokens":"12"`.
fn wrong_type(value: &mut serde_json::Value) {
    let usage = if value.get("usage").is_some() {
        value.get_mut("usage")
    } else {
        value.pointer_mut("/response/usage")
    };
    let Some(serde_json::Value::Object(usage)) = usage else {
        return;
    };
    for name in ["prompt_tokens", "input_tokens"] {
        if let Some(v) = usage.get_mut(name) {
            *v = serde_json::Value::String(v.to_string());
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_have_a_readable_json_form() {
        let faults = vec![
            Fault::Status(503),
            Fault::RateLimited {
                retry_after_ms: 1500,
            },
            Fault::Delay(Duration::from_millis(250)),
            Fault::ResetMidStream { after_events: 2 },
            Fault::Hang,
            Fault::Sample(AzureSample::PermissionDenied403),
            Fault::Garbled(Garble::TruncatedJson),
            Fault::ResetAfterRequest,
            Fault::StaleConnection,
        ];
        let json = serde_json::to_string(&faults).unwrap();
        assert_eq!(
            json,
            r#"[{"status":503},{"rate-limited":{"retry_after_ms":1500}},{"delay":250},{"reset-mid-stream":{"after_events":2}},"hang",{"sample":"permission-denied403"},{"garbled":"truncated-json"},"reset-after-request","stale-connection"]"#
        );
        let back: Vec<Fault> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, faults);
        let f: IdentityFault =
            serde_json::from_str(r#"{"error":{"status":401,"aadsts":7000222}}"#).unwrap();
        assert_eq!(
            f,
            IdentityFault::Error {
                status: 401,
                aadsts: 7000222
            }
        );
        let f: IdentityFault = serde_json::from_str(r#"{"slow":20}"#).unwrap();
        assert_eq!(f, IdentityFault::Slow(Duration::from_millis(20)));
    }

    #[test]
    fn obo_faults_read_as_json_and_the_most_specific_rule_matches() {
        let rules: Vec<OboFaultRule> = serde_json::from_str(
            r#"[{"fault":"consent-required"},{"client_id":"app","fault":{"mfa-required":{}}},
                {"user_oid":"u1","fault":{"mfa-enrollment-required":{"capolids":["p"]}}},
                {"client_id":"APP","user_oid":"u2","fault":"invalid-client"}]"#,
        )
        .unwrap();
        assert_eq!(rules[0], OboFaultRule::everyone(OboFault::ConsentRequired));
        let pick = |client: &str, user: Option<&str>| {
            rules
                .iter()
                .rev()
                .filter(|r| r.matches(client, user))
                .max_by_key(|r| r.specificity())
                .map(|r| r.fault.clone())
        };
        assert_eq!(pick("other", None), Some(OboFault::ConsentRequired));
        assert_eq!(
            pick("app", Some("u9")),
            Some(OboFault::MfaRequired { capolids: vec![] })
        );
        assert_eq!(
            pick("app", Some("u1")),
            Some(OboFault::MfaEnrollmentRequired {
                capolids: vec!["p".into()]
            })
        );
        assert_eq!(pick("app", Some("u2")), Some(OboFault::InvalidClient));
        assert_eq!(pick("other", Some("u2")), Some(OboFault::ConsentRequired));
    }

    #[test]
    fn garbled_answers_break_only_what_they_name() {
        let answer = serde_json::json!({"id":"x","usage":{"prompt_tokens":12,"total_tokens":15}});
        assert_eq!(garble_json(answer.clone(), Garble::NotJson), NOT_JSON);
        let cut = garble_json(answer.clone(), Garble::TruncatedJson);
        assert!(answer.to_string().starts_with(&cut));
        assert!(serde_json::from_str::<serde_json::Value>(&cut).is_err());
        let wrong = garble_json(answer.clone(), Garble::UsageWrongType);
        assert!(wrong.contains(r#""prompt_tokens":"12""#), "{wrong}");
        assert!(!garble_json(answer, Garble::NoUsage).contains("usage"));

        let chunk = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n";
        let usage = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"total_tokens\":4}}\n\n";
        let events = || {
            vec![
                bytes::Bytes::from(chunk),
                bytes::Bytes::from(usage),
                bytes::Bytes::from_static(b"data: [DONE]\n\n"),
            ]
        };
        let mut e = events();
        garble_events(&mut e, Garble::NoUsage);
        assert_eq!(e, vec![events()[0].clone(), events()[2].clone()]);
        let mut e = events();
        garble_events(&mut e, Garble::UsageWrongType);
        assert!(
            std::str::from_utf8(&e[1])
                .unwrap()
                .contains(r#""prompt_tokens":"3""#)
        );
        assert_eq!(e[0], events()[0]);
        let mut e = events();
        garble_events(&mut e, Garble::NotJson);
        assert_eq!(e[1], format!("data: {NOT_JSON}\n\n"));
        let named =
            "event: response.completed\ndata: {\"response\":{\"usage\":{\"input_tokens\":1}}}\n\n";
        let mut e = vec![bytes::Bytes::from(named)];
        garble_events(&mut e, Garble::TruncatedJson);
        assert!(e[0].starts_with(b"event: response.completed\ndata: {\"response"));
        assert!(e[0].ends_with(b"\n\n"));
    }
}
