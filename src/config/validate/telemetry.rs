//! `[telemetry]`: the OTLP/HTTP collector traces go to, the service name, the sample ratio.

use crate::config::TelemetryConfig;
use crate::config::errors::Errors;
use crate::config::raw::RawTelemetry;

pub(super) fn validate_telemetry(
    raw: RawTelemetry,
    errors: &mut Errors,
) -> Option<TelemetryConfig> {
    let before = errors.len();
    let otlp_endpoint = raw
        .otlp_endpoint
        .and_then(|e| errors.check("telemetry.otlp_endpoint", endpoint(&e)));
    let service_name = match raw.service_name {
        Some(n) if n.trim().is_empty() => {
            errors.add(
                "telemetry.service_name",
                "is empty; leave it out for \"entra-proxy\"",
            );
            None
        }
        other => other,
    };
    let sample_ratio = match raw.sample_ratio {
        Some(r) if !(0.0..=1.0).contains(&r) => {
            errors.add(
                "telemetry.sample_ratio",
                format!("{r} is out of range: use 0 to 1 (the fraction of traces kept)"),
            );
            None
        }
        other => other,
    };
    (errors.len() == before).then_some(TelemetryConfig {
        otlp_endpoint,
        service_name,
        sample_ratio,
    })
}

/// An `http(s)` URL with a host and no credentials.
fn endpoint(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text.trim()).map_err(|e| format!("{text:?} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "{text:?} is not an http(s) URL with a host: traces go over OTLP/HTTP (e.g. \"http://otel-collector:4318\")"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "credentials in the URL are not supported; use OTEL_EXPORTER_OTLP_HEADERS".into(),
        );
    }
    Ok(url)
}
