//! Where traces go and which are kept: the `[telemetry]` settings merged with the standard
//! `OTEL_*` environment variables, as a pure function with unit tests. A malformed variable is
//! an error naming it, never a silent default.

use crate::config::TelemetryConfig;
use std::collections::BTreeMap;

/// The service name when neither the config nor the environment names one.
pub(super) const DEFAULT_SERVICE_NAME: &str = "entra-proxy";
/// The path a base OTLP/HTTP endpoint gets for traces.
const TRACES_PATH: &str = "v1/traces";

/// The `OTEL_*` variables that shape traces, read once at start-up (tests build one by hand).
#[derive(Debug, Clone, Default)]
pub struct TelemetryEnv {
    pub sdk_disabled: Option<String>,
    pub endpoint: Option<String>,
    pub traces_endpoint: Option<String>,
    pub service_name: Option<String>,
    pub resource_attributes: Option<String>,
    pub sampler: Option<String>,
    pub sampler_arg: Option<String>,
}

impl TelemetryEnv {
    /// The variables as this process has them; empty values count as unset.
    pub fn from_process() -> TelemetryEnv {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        TelemetryEnv {
            sdk_disabled: var("OTEL_SDK_DISABLED"),
            endpoint: var("OTEL_EXPORTER_OTLP_ENDPOINT"),
            traces_endpoint: var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            service_name: var("OTEL_SERVICE_NAME"),
            resource_attributes: var("OTEL_RESOURCE_ATTRIBUTES"),
            sampler: var("OTEL_TRACES_SAMPLER"),
            sampler_arg: var("OTEL_TRACES_SAMPLER_ARG"),
        }
    }
}

/// Which traces are recorded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Sampling {
    /// Every trace (or none), whatever the caller's `traceparent` says.
    Always(bool),
    /// This fraction of trace ids.
    Ratio(f64),
    /// The caller's sampled flag when it sent a `traceparent`; otherwise `root` decides.
    ParentBased(Root),
}

/// The decision for a trace that starts here.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Root {
    Always(bool),
    Ratio(f64),
}

/// Traces on: where to send them and what to call this service.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Settings {
    /// The full OTLP/HTTP traces URL (`…/v1/traces`).
    pub(super) endpoint: url::Url,
    pub(super) service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES` other than `service.name`, in order of key.
    pub(super) resource: BTreeMap<String, String>,
    pub(super) sampling: Sampling,
}

impl Settings {
    /// `None` (traces off, nothing built) unless an endpoint is configured; config keys win
    /// over the environment.
    pub(super) fn resolve(
        config: &TelemetryConfig,
        env: &TelemetryEnv,
    ) -> Result<Option<Settings>, String> {
        if let Some(v) = &env.sdk_disabled {
            match v.trim().to_ascii_lowercase().as_str() {
                "true" => return Ok(None),
                "false" => {}
                _ => {
                    return Err(format!(
                        "OTEL_SDK_DISABLED: {v:?} is neither \"true\" nor \"false\""
                    ));
                }
            }
        }
        let endpoint = match (&config.otlp_endpoint, &env.traces_endpoint, &env.endpoint) {
            (Some(base), _, _) => traces_url(base.as_str(), "telemetry.otlp_endpoint")?,
            (None, Some(full), _) => exact_url(full, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")?,
            (None, None, Some(base)) => traces_url(base, "OTEL_EXPORTER_OTLP_ENDPOINT")?,
            (None, None, None) => return Ok(None),
        };
        let mut resource = match &env.resource_attributes {
            Some(text) => resource_attributes(text)?,
            None => BTreeMap::new(),
        };
        let from_resource = resource.remove("service.name");
        let service_name = config
            .service_name
            .clone()
            .or_else(|| env.service_name.clone())
            .or(from_resource)
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string());
        let sampling = match config.sample_ratio {
            Some(ratio) => Sampling::ParentBased(Root::Ratio(ratio)),
            None => sampling(env.sampler.as_deref(), env.sampler_arg.as_deref())?,
        };
        Ok(Some(Settings {
            endpoint,
            service_name,
            resource,
            sampling,
        }))
    }
}

/// A base endpoint with `v1/traces` appended to its path.
fn traces_url(base: &str, name: &str) -> Result<url::Url, String> {
    let mut url = exact_url(base, name)?;
    let path = url.path().trim_end_matches('/').to_string();
    url.set_path(&format!("{path}/{TRACES_PATH}"));
    Ok(url)
}

/// An `http` or `https` URL with a host, as written.
fn exact_url(text: &str, name: &str) -> Result<url::Url, String> {
    let url =
        url::Url::parse(text.trim()).map_err(|e| format!("{name}: {text:?} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "{name}: {text:?} is not an http(s) URL with a host (OTLP over HTTP, e.g. http://otel-collector:4318)"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{name}: credentials in the URL are not supported; use OTEL_EXPORTER_OTLP_HEADERS"
        ));
    }
    Ok(url)
}

/// `key=value,key=value` with percent-encoded values (W3C Baggage octets).
fn resource_attributes(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(format!(
                "OTEL_RESOURCE_ATTRIBUTES: {pair:?} is not key=value"
            ));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(format!(
                "OTEL_RESOURCE_ATTRIBUTES: {pair:?} has an empty key"
            ));
        }
        let v =
            url::form_urlencoded::parse(format!("v={}", v.trim().replace('+', "%2B")).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
        out.insert(k.to_string(), v);
    }
    Ok(out)
}

/// `OTEL_TRACES_SAMPLER` with its argument; parent-based, every trace, by default.
fn sampling(sampler: Option<&str>, arg: Option<&str>) -> Result<Sampling, String> {
    let ratio = || -> Result<f64, String> {
        let Some(arg) = arg else {
            return Ok(1.0);
        };
        match arg.trim().parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
            _ => Err(format!(
                "OTEL_TRACES_SAMPLER_ARG: {arg:?} is not a ratio between 0 and 1"
            )),
        }
    };
    let Some(name) = sampler else {
        if arg.is_some() {
            // The argument alone tunes the default sampler's ratio.
            return Ok(Sampling::ParentBased(Root::Ratio(ratio()?)));
        }
        return Ok(Sampling::ParentBased(Root::Always(true)));
    };
    Ok(match name.trim() {
        "always_on" => Sampling::Always(true),
        "always_off" => Sampling::Always(false),
        "traceidratio" => Sampling::Ratio(ratio()?),
        "parentbased_always_on" => Sampling::ParentBased(Root::Always(true)),
        "parentbased_always_off" => Sampling::ParentBased(Root::Always(false)),
        "parentbased_traceidratio" => Sampling::ParentBased(Root::Ratio(ratio()?)),
        other => {
            return Err(format!(
                "OTEL_TRACES_SAMPLER: {other:?} is not one of always_on, always_off, traceidratio, \
                 parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoint: Option<&str>) -> TelemetryConfig {
        TelemetryConfig {
            otlp_endpoint: endpoint.map(|e| url::Url::parse(e).unwrap()),
            service_name: None,
            sample_ratio: None,
        }
    }

    #[test]
    fn off_without_an_endpoint() {
        let env = TelemetryEnv {
            service_name: Some("x".into()),
            sampler: Some("always_on".into()),
            ..TelemetryEnv::default()
        };
        assert_eq!(Settings::resolve(&config(None), &env), Ok(None));
    }

    #[test]
    fn a_base_endpoint_gets_the_traces_path_and_a_signal_endpoint_is_used_as_is() {
        let env = TelemetryEnv {
            endpoint: Some("http://127.0.0.1:4318".into()),
            ..TelemetryEnv::default()
        };
        let s = Settings::resolve(&config(None), &env).unwrap().unwrap();
        assert_eq!(s.endpoint.as_str(), "http://127.0.0.1:4318/v1/traces");
        let env = TelemetryEnv {
            endpoint: Some("http://127.0.0.1:4318/base/".into()),
            traces_endpoint: Some("http://127.0.0.1:9/custom".into()),
            ..TelemetryEnv::default()
        };
        let s = Settings::resolve(&config(None), &env).unwrap().unwrap();
        assert_eq!(s.endpoint.as_str(), "http://127.0.0.1:9/custom");
        let s = Settings::resolve(&config(Some("http://127.0.0.1:1/otlp/")), &env)
            .unwrap()
            .unwrap();
        assert_eq!(s.endpoint.as_str(), "http://127.0.0.1:1/otlp/v1/traces");
    }

    #[test]
    fn config_keys_win_over_the_environment() {
        let mut c = config(Some("http://127.0.0.1:4318"));
        c.service_name = Some("from-config".into());
        c.sample_ratio = Some(0.25);
        let env = TelemetryEnv {
            service_name: Some("from-env".into()),
            sampler: Some("always_off".into()),
            resource_attributes: Some(
                "service.name=from-resource,deployment.environment.name=prod%20east".into(),
            ),
            ..TelemetryEnv::default()
        };
        let s = Settings::resolve(&c, &env).unwrap().unwrap();
        assert_eq!(s.service_name, "from-config");
        assert_eq!(s.sampling, Sampling::ParentBased(Root::Ratio(0.25)));
        assert_eq!(
            s.resource
                .get("deployment.environment.name")
                .map(String::as_str),
            Some("prod east")
        );
        assert!(!s.resource.contains_key("service.name"));
        let s = Settings::resolve(&config(Some("http://127.0.0.1:4318")), &env)
            .unwrap()
            .unwrap();
        assert_eq!(s.service_name, "from-env");
        assert_eq!(s.sampling, Sampling::Always(false));
    }

    #[test]
    fn samplers_by_name() {
        assert_eq!(
            sampling(None, None),
            Ok(Sampling::ParentBased(Root::Always(true)))
        );
        assert_eq!(
            sampling(Some("parentbased_traceidratio"), Some("0.1")),
            Ok(Sampling::ParentBased(Root::Ratio(0.1)))
        );
        assert_eq!(
            sampling(Some("traceidratio"), None),
            Ok(Sampling::Ratio(1.0))
        );
        assert_eq!(
            sampling(Some("parentbased_always_off"), None),
            Ok(Sampling::ParentBased(Root::Always(false)))
        );
    }

    #[test]
    fn malformed_variables_are_errors_naming_them() {
        let env = |f: fn(&mut TelemetryEnv)| {
            let mut e = TelemetryEnv {
                endpoint: Some("http://127.0.0.1:4318".into()),
                ..TelemetryEnv::default()
            };
            f(&mut e);
            Settings::resolve(&config(None), &e).unwrap_err()
        };
        let e = env(|e| e.sampler_arg = Some("half".into()));
        assert!(e.starts_with("OTEL_TRACES_SAMPLER_ARG: \"half\""), "{e}");
        let e = env(|e| {
            e.sampler = Some("traceidratio".into());
            e.sampler_arg = Some("1.5".into());
        });
        assert!(e.starts_with("OTEL_TRACES_SAMPLER_ARG:"), "{e}");
        let e = env(|e| e.sampler = Some("sometimes".into()));
        assert!(e.starts_with("OTEL_TRACES_SAMPLER: \"sometimes\""), "{e}");
        let e = env(|e| e.resource_attributes = Some("a=1,b".into()));
        assert!(e.starts_with("OTEL_RESOURCE_ATTRIBUTES: \"b\""), "{e}");
        let e = env(|e| e.endpoint = Some("collector:4318".into()));
        assert!(e.starts_with("OTEL_EXPORTER_OTLP_ENDPOINT:"), "{e}");
        let e = env(|e| e.traces_endpoint = Some("grpc://x".into()));
        assert!(e.starts_with("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT:"), "{e}");
        let e = env(|e| e.sdk_disabled = Some("yes".into()));
        assert!(e.starts_with("OTEL_SDK_DISABLED:"), "{e}");
        let disabled = TelemetryEnv {
            endpoint: Some("http://127.0.0.1:4318".into()),
            sdk_disabled: Some("true".into()),
            ..TelemetryEnv::default()
        };
        assert_eq!(Settings::resolve(&config(None), &disabled), Ok(None));
    }
}
