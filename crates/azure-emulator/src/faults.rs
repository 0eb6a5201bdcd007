//! Scripted faults: per-deployment data-plane failures and failures of the identity endpoints.

use std::time::Duration;

use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::entra::{self, EntraError};
use super::respond;
use super::samples::{AzureSample, SampleContext};
use super::state::{Shared, TokenEndpoint};

/// One scripted answer for one data-plane request to a deployment. In JSON (control API),
/// externally tagged in kebab-case, durations in milliseconds: `{"status":503}`,
/// `{"rate-limited":{"retry_after_ms":1500}}`, `{"delay":250}`,
/// `{"reset-mid-stream":{"after_events":2}}`, `"hang"`, `{"sample":"permission-denied403"}`.
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

/// What a data-plane fault leaves to do.
pub(crate) enum Applied {
    /// Answer this, skip everything else.
    Answer(Response),
    /// Go on normally; break the body after this many events if set.
    Proceed { reset_after: Option<usize> },
}

/// Applies a popped data-plane fault.
pub(crate) async fn apply(shared: &Shared, fault: Option<Fault>, ctx: &SampleContext) -> Applied {
    let Some(fault) = fault else {
        return Applied::Proceed { reset_after: None };
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
                Applied::Proceed { reset_after: None }
            } else {
                Applied::Answer(respond::shutting_down())
            }
        }
        Fault::ResetMidStream { after_events } => Applied::Proceed {
            reset_after: Some(after_events),
        },
        Fault::Hang => {
            shared.stopped().await;
            Applied::Answer(respond::shutting_down())
        }
        Fault::Sample(sample) => Applied::Answer(respond::sample(sample, ctx)),
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
        ];
        let json = serde_json::to_string(&faults).unwrap();
        assert_eq!(
            json,
            r#"[{"status":503},{"rate-limited":{"retry_after_ms":1500}},{"delay":250},{"reset-mid-stream":{"after_events":2}},"hang",{"sample":"permission-denied403"}]"#
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
}
