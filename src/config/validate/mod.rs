//! Raw → validated: every section is checked by its own function, and every problem is
//! recorded with its exact key (`backends[1].endpoint: …`) instead of stopping at the first, so
//! one run of `config check` lists everything wrong with a file.

mod backends;
mod budgets;
mod identities;
mod identity;
mod inbound;
mod keys;
mod limits;
mod models;
mod obo;
mod server;
mod services;
mod telemetry;

use super::emulator::parse_emulator;
use super::errors::Errors;
use super::raw::{RawConfig, RawInbound};
use super::{Config, Note, NoteLevel, ServerConfig};
use std::time::Duration;

/// Checks every section of `raw`; on failure, every problem found, each `key: message`.
pub(super) fn validate(raw: RawConfig) -> Result<Config, Vec<String>> {
    let mut errors = Errors::default();
    let mut notes = Vec::new();
    let server = server::validate_server(raw.server, &mut errors);
    if let Some(server) = &server {
        services::weak_secret(server.issued_token_secret.as_ref(), &mut notes);
    }
    let upstream = server::validate_upstream(raw.upstream, &mut errors);
    let cloud = raw.azure.cloud;
    let emulator = match raw.azure.emulator {
        None => Some(None),
        Some(e) => errors.check("azure.emulator", parse_emulator(&e)).map(Some),
    };
    let identity = identity::validate_identity(raw.identity, &mut errors);
    let local = emulator.as_ref().is_some_and(Option::is_some);
    let mut backends =
        backends::validate_backends(raw.backends, cloud, local, &mut notes, &mut errors);
    let models = models::validate_models(raw.models, &mut backends, &mut errors);
    let has_keys = !raw.keys.is_empty();
    let keys = keys::validate_keys(raw.keys, &models, &backends, &mut errors);
    let has_identities = !raw.identities.is_empty();
    let identities =
        identities::validate_identities(raw.identities, &models, &backends, &mut errors);
    let RawInbound {
        allow_unauthenticated,
        modes,
        entra,
        client_credentials,
    } = raw.inbound;
    let has_client_auth = has_keys || entra.is_some() || client_credentials.is_some();
    let inbound = inbound::validate_inbound(
        modes,
        entra,
        client_credentials,
        has_identities,
        &mut errors,
    );
    let on_behalf_of = match raw.on_behalf_of {
        None => Some(None),
        Some(o) => obo::validate_obo(o, identity.as_ref(), &mut errors).map(Some),
    };
    needs_obo(
        inbound.as_ref(),
        identities.as_deref(),
        on_behalf_of.as_ref(),
        &mut errors,
    );
    let limits = limits::validate_limits(raw.limits, &mut errors);
    let currency = models.currency();
    if let (Some(keys), Some(identities), Some(limits)) = (&keys, &identities, &limits) {
        budgets::notes(keys, identities, &models, limits, &mut notes);
    }
    let telemetry = telemetry::validate_telemetry(raw.telemetry, &mut errors);
    let allow_unauthenticated = server.as_ref().and_then(|server| {
        unauthenticated(
            allow_unauthenticated,
            has_client_auth,
            server,
            &mut notes,
            &mut errors,
        )
    });

    let (
        Some(server),
        Some(upstream),
        Some(emulator),
        Some(identity),
        Some(backends),
        Some(models),
        Some(keys),
        Some(identities),
        Some(on_behalf_of),
        Some(allow_unauthenticated),
        Some(inbound),
        Some(limits),
        Some(telemetry),
    ) = (
        server,
        upstream,
        emulator,
        identity,
        backends.into_valid(),
        models.into_valid(),
        keys,
        identities,
        on_behalf_of,
        allow_unauthenticated,
        inbound,
        limits,
        telemetry,
    )
    else {
        return errors.finish(None);
    };
    errors.finish(Some(Config {
        server,
        upstream,
        cloud,
        emulator,
        identity,
        backends,
        models,
        keys,
        identities,
        on_behalf_of,
        allow_unauthenticated,
        inbound,
        limits,
        telemetry,
        currency,
        notes,
    }))
}

/// `upstream = "on-behalf-of"`, in `[inbound.entra]` or an identity, needs `[on_behalf_of]`.
fn needs_obo(
    inbound: Option<&crate::config::InboundConfig>,
    identities: Option<&[crate::config::IdentityEntry]>,
    on_behalf_of: Option<&Option<crate::config::OnBehalfOf>>,
    errors: &mut Errors,
) {
    use crate::config::Upstream;
    // Present (valid, or invalid and already reported): nothing more to say.
    if on_behalf_of.is_none_or(Option::is_some) {
        return;
    }
    let missing = "needs an [on_behalf_of] section (the proxy's app registration: client_id, tenant_id, credential)";
    if inbound.is_some_and(|i| i.upstream == Upstream::OnBehalfOf) {
        errors.add("inbound.entra.upstream", missing);
    }
    for (i, identity) in identities.into_iter().flatten().enumerate() {
        if identity.upstream == Some(Upstream::OnBehalfOf) {
            errors.add(format!("identities[{i}].upstream"), missing);
        }
    }
}

/// Whether callers without any credential are served: only when set, or implied by a loopback
/// listener with no client authentication configured at all.
fn unauthenticated(
    allow: Option<bool>,
    has_client_auth: bool,
    server: &ServerConfig,
    notes: &mut Vec<Note>,
    errors: &mut Errors,
) -> Option<bool> {
    match allow {
        Some(v) => Some(v),
        None if has_client_auth => Some(false),
        None if server.listen.ip().is_loopback() => {
            notes.push(Note {
                level: NoteLevel::Warning,
                message: format!(
                    "keys: no [[keys]] configured; serving without client authentication because server.listen ({}) is loopback (sidecar mode)",
                    server.listen
                ),
            });
            Some(true)
        }
        None => {
            errors.add(
                "keys",
                format!(
                    "no [[keys]] (and no [inbound.entra] or [inbound.client_credentials]) configured and server.listen ({}) is not loopback, so anyone who can reach the proxy would use its identity; add a key (`entra-proxy keys new --name NAME`) or set [inbound] allow_unauthenticated = true",
                    server.listen
                ),
            );
            None
        }
    }
}

/// A duration in seconds as written, or `default` when absent.
fn seconds(v: Option<f64>, default: Duration) -> Result<Duration, String> {
    match v {
        None => Ok(default),
        Some(s) if s.is_finite() && s > 0.0 && s < 86_400.0 => Ok(Duration::from_secs_f64(s)),
        Some(s) => Err(format!(
            "{s} is not a number of seconds between 0 and 86400"
        )),
    }
}

/// A trimmed optional string; present but blank is an error.
fn non_empty(v: Option<String>) -> Result<Option<String>, String> {
    match v {
        Some(s) if s.trim().is_empty() => Err("is empty".into()),
        other => Ok(other.map(|s| s.trim().to_string())),
    }
}

#[cfg(test)]
mod tests {
    use crate::cloud::HostKind;
    use crate::config::testing::{DIGEST, err, parse};

    const README_SHAPE: &str = r#"
[server]
listen = "127.0.0.1:8080"

[azure]                         # optional
cloud = "public"                # public | usgov | china -> authority + token scope
# emulator = "http://127.0.0.1:9999"   # send every Entra / IMDS call here (tests, demo)

[identity]                      # how the proxy itself gets tokens
kind = "managed-identity"       # auto | managed-identity | workload-identity | client-secret | azure-cli
# client_id = "…"               # user-assigned identity or service principal
# tenant_id = "…"  client_secret = "${AZURE_CLIENT_SECRET}"

[[backends]]
name = "primary"
endpoint = "https://myres.openai.azure.com"
api_version = "2024-10-21"

[[models]]                      # OpenAI-style model name -> Azure deployment
name = "gpt-4o"
backend = "primary"
deployment = "gpt-4o-2024-08-06"

[[keys]]                        # virtual keys, stored as SHA-256 hex digests
name = "team-a"
sha256 = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
"#;

    #[test]
    fn accepts_the_documented_shape() {
        let c = parse(README_SHAPE).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(
            c.backends[0].scope.as_str(),
            "https://cognitiveservices.azure.com/.default"
        );
        assert_eq!(c.backends[0].host_kind, Some(HostKind::OpenAi));
        assert_eq!(c.models[0].targets[0].deployment, "gpt-4o-2024-08-06");
        assert_eq!(c.keys[0].digest.to_hex(), DIGEST);
        assert!(c.notes.is_empty());
    }

    #[test]
    fn bad_values_name_the_key() {
        assert!(
            err("[[backends]]\nname='a'\nendpoint='nope'")
                .contains("backends[0].endpoint: \"nope\" is not a URL")
        );
        assert!(
            err("[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\n[[models]]\nname='m'\nbackend='b'\ndeployment='d'")
                .contains("models[0].backend: no backend named \"b\" (backends: a)")
        );
        assert!(
            err("[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\n[[keys]]\nname='k'\nsha256='abc'")
                .contains("keys[0].sha256: must be 64 hex characters")
        );
        assert!(
            err("[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\n[[models]]\nname='m'\nbackend='a'\ndeployment='azure/gpt-4o'")
                .contains("LiteLLM's provider prefix")
        );
        assert!(
            err("[server]\nlisten='nope'\n[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'")
                .contains("server.listen")
        );
        assert!(
            err("[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\napi_version='latest'")
                .contains("backends[0].api_version")
        );
        assert!(err("[identity]\nkind='client-secret'\n[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'").contains("identity.client_secret: required"));
        assert!(
            err("[identity]\nkind='magic'\n[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'")
                .contains("identity.kind")
        );
        assert!(err("").contains("at least one [[backends]]"));
    }

    #[test]
    fn no_keys_is_allowed_only_on_loopback() {
        let c = parse("[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'").unwrap();
        assert!(c.allow_unauthenticated);
        let e = err(
            "[server]\nlisten='0.0.0.0:8080'\n[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'",
        );
        assert!(e.contains("is not loopback"), "{e}");
        let c = parse("[server]\nlisten='0.0.0.0:8080'\n[inbound]\nallow_unauthenticated=true\n[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'").unwrap();
        assert!(c.allow_unauthenticated);
        let c = parse(README_SHAPE).unwrap();
        assert!(!c.allow_unauthenticated);
    }

    #[test]
    fn three_independent_mistakes_are_all_reported_each_with_its_key() {
        let e = parse(
            "[server]\nworkers = 0\n\
             [[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\n\
             [[backends]]\nname='b'\nendpoint='nope'\n\
             [[keys]]\nname='k'\nsha256='5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8'\nmodels=['gpt-5']",
        )
        .unwrap_err();
        let problems = e.problems();
        assert_eq!(problems.len(), 3, "{e}");
        assert!(
            problems[0].starts_with("server.workers: 0 is not between 1"),
            "{e}"
        );
        assert!(
            problems[1].starts_with("backends[1].endpoint: \"nope\" is not a URL"),
            "{e}"
        );
        assert!(
            problems[2].starts_with("keys[0].models[0]: \"gpt-5\" is not a configured model"),
            "{e}"
        );
        let shown = e.to_string();
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines[0], "test.toml: 3 problems:");
        assert_eq!(
            &lines[1..],
            problems
                .iter()
                .map(|p| format!("  {p}"))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn every_section_reports_alongside_the_others() {
        let e = err("[upstream]\nmax_attempts = 11\nidle_timeout_secs = -1\n\
             [azure]\nemulator = 'ftp://127.0.0.1'\n\
             [identity]\nkind = 'client-secret'\n\
             [inbound]\nmodes = ['entra']\n\
             [[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\napi_version='latest'\nmax_concurrent=0\n\
             [[models]]\nname='m'\nbackend='a'\ndeployment='azure/gpt-4o'\n\
             [[keys]]\nname='k'\nsha256='abc'\nexpires='soon'");
        for key in [
            "upstream.idle_timeout_secs:",
            "upstream.max_attempts:",
            "azure.emulator:",
            "identity.client_secret: required",
            "identity.tenant_id: required",
            "identity.client_id: required",
            "backends[0].api_version:",
            "backends[0].max_concurrent:",
            "models[0].deployment:",
            "keys[0].sha256:",
            "keys[0].expires:",
            "inbound.modes:",
        ] {
            assert!(
                e.contains(&format!("\n  {key}")),
                "{key} missing from:\n{e}"
            );
        }
        assert!(e.starts_with("test.toml: 12 problems:\n"), "{e}");
    }

    #[test]
    fn a_bad_backend_is_reported_once_not_again_by_what_names_it() {
        let e = err(
            "[[backends]]\nname='a'\nendpoint='nope'\ndeployments=['d']\n\
             [[models]]\nname='m'\nbackend='a'\ndeployment='x'\n\
             [[keys]]\nname='k'\nsha256='5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8'\nmodels=['m', 'd', 'x']",
        );
        assert!(
            e.starts_with("test.toml: backends[0].endpoint: \"nope\" is not a URL")
                && !e.contains('\n'),
            "{e}"
        );
        let e = err("[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\n\
             [[models]]\nname='m'\ntargets=[{backend='a', deployment='d', weight=0}]\n\
             [[keys]]\nname='k'\nsha256='5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8'\nmodels=['m']");
        assert!(
            e.starts_with("test.toml: models[0].targets[0].weight: must be at least 1")
                && !e.contains('\n'),
            "{e}"
        );
    }
}
