//! The refusals of the services beside OpenAI, each read by its own rule: Azure AI Search's
//! bearer challenge naming its audience, Speech's empty 401 to an Entra token it takes only on a
//! custom domain and (on its regional hosts) only as `aad#{resource id}#{token}`, Translator's
//! `401000` to a token without the resource's region and id beside it.
//!
//! Sources (Microsoft Learn): "Connect to Azure AI Search using roles" and "Enable or disable
//! role-based access control" (audience `https://search.azure.com`, 401 with
//! `WWW-Authenticate: Bearer … resource_id="https://search.azure.com"`, 403 without a data
//! role); "Microsoft Entra authentication with the Speech SDK" and the Speech REST APIs'
//! Authentication (custom domain required, `aad#` form); "Translator authentication" (global
//! endpoint: `Ocp-Apim-ResourceId` and `Ocp-Apim-Subscription-Region` beside the token).

use super::azure_error::{diagnosis, token_problem};
use super::{Context, Diagnosis, DiagnosisCode};
use crate::cloud;
use crate::services::{Service, TokenForm, search_audience};

/// What a refused request to a service backend carried, besides the token's claims.
#[derive(Debug, Clone, Copy)]
pub struct ServiceFacts<'a> {
    pub service: Service,
    /// The form the token went in.
    pub form: TokenForm,
    /// Whether Translator's resource id and region headers went beside it.
    pub translator_headers: bool,
    pub resource_id: Option<&'a str>,
    pub region: Option<&'a str>,
    /// The answer's `WWW-Authenticate` header.
    pub challenge: Option<&'a str>,
}

/// Search's role ids (Azure built-in roles).
const SEARCH_READER: (&str, &str) = (
    "Search Index Data Reader",
    "1407120a-92aa-4202-b7e9-c0e197c71c8f",
);
const SEARCH_CONTRIBUTOR: (&str, &str) = (
    "Search Index Data Contributor",
    "8ebe5a00-799e-43f5-93ac-243d3dce84a7",
);

/// A service's own explanation of a 401 or 403, when its rule says what is wrong; `None` to
/// leave the answer to the general classification.
pub(super) fn classify(
    status: u16,
    body: &[u8],
    facts: &ServiceFacts<'_>,
    ctx: &Context<'_>,
) -> Option<Diagnosis> {
    if !matches!(status, 401 | 403) {
        return None;
    }
    let search_challenge = facts
        .challenge
        .and_then(challenge_audience)
        .filter(|aud| is_search_audience(aud));
    if facts.service == Service::Search || search_challenge.is_some() {
        return search(status, search_challenge, facts, ctx);
    }
    match facts.service {
        Service::Speech if status == 401 => speech(facts, ctx),
        Service::Translator if status == 401 && translator_refusal(body) => translator(facts, ctx),
        _ => None,
    }
}

/// `resource_id="…"` of a bearer challenge.
fn challenge_audience(challenge: &str) -> Option<&str> {
    let at = challenge.find("resource_id=\"")? + "resource_id=\"".len();
    let rest = challenge.get(at..)?;
    rest.get(..rest.find('"')?)
}

fn is_search_audience(aud: &str) -> bool {
    cloud::Cloud::ALL
        .into_iter()
        .any(|c| cloud::same_audience(aud, search_audience(c)))
}

/// Search: a token for another audience (the classic: a Cognitive Services token), or a valid
/// token without a data role (403).
fn search(
    status: u16,
    challenged: Option<&str>,
    facts: &ServiceFacts<'_>,
    ctx: &Context<'_>,
) -> Option<Diagnosis> {
    let needed = challenged.unwrap_or_else(|| search_audience(ctx.cloud));
    let has = ctx.token.and_then(|c| c.audience());
    let wrong_audience = has.is_some_and(|aud| !cloud::same_audience(aud, needed));
    if wrong_audience || (status == 401 && facts.service != Service::Search) {
        let fix = if facts.service == Service::Search {
            format!(
                "remove scope from backend {} (a search backend's scope is {}) or set it to that",
                ctx.backend,
                cloud::scope_for_audience(needed)
            )
        } else {
            format!(
                "set service = \"search\" on backend {} (its token then is for scope {})",
                ctx.backend,
                cloud::scope_for_audience(needed)
            )
        };
        return Some(diagnosis(
            ctx,
            DiagnosisCode::SearchAudience,
            format!(
                "Azure AI Search refused a token for {}: Search takes tokens for {needed} only",
                has.unwrap_or("no audience")
            ),
            fix,
        ));
    }
    if status == 403 {
        return Some(diagnosis(
            ctx,
            DiagnosisCode::MissingRole,
            format!(
                "Azure AI Search at {} refused the proxy's token with 403: the identity has no Search data role there, or the service takes API keys only",
                ctx.host
            ),
            format!(
                "assign {} (role id {}; {} ({}) for queries only) to the identity on the search service, and set its API access control to role-based or both: az search service update --name {} --resource-group <group> --auth-options aadOrApiKey",
                SEARCH_CONTRIBUTOR.0,
                SEARCH_CONTRIBUTOR.1,
                SEARCH_READER.0,
                SEARCH_READER.1,
                ctx.host.split('.').next().unwrap_or("<service>")
            ),
        ));
    }
    None
}

/// Speech: an Entra token it does not take — a plain bearer where only the `aad#` form works
/// (regional hosts), or any Entra token on a resource without a custom domain.
fn speech(facts: &ServiceFacts<'_>, ctx: &Context<'_>) -> Option<Diagnosis> {
    // A token whose own claims are wrong is explained by them.
    if token_problem(ctx, ctx.expected_audience).is_some() {
        return None;
    }
    let (summary, fix) = match (facts.form, facts.resource_id) {
        (TokenForm::SpeechAad, Some(id)) => (
            format!(
                "Speech at {} refused the token sent as aad#{id}#<token>: the resource id names another resource, or the resource has no custom domain",
                ctx.host
            ),
            format!(
                "check that resource_id of backend {} is the Speech resource's id (az cognitiveservices account show -g <group> -n <name> --query id -o tsv) and that the resource has a custom domain (az cognitiveservices account update -g <group> -n <name> --custom-domain <name>); the identity needs Cognitive Services Speech User",
                ctx.backend
            ),
        ),
        _ => (
            format!(
                "Speech at {} refused the Entra token sent as a plain bearer: Speech takes Entra tokens only from a resource with a custom domain, and on its regional hosts (and for batch transcription there) only in the form aad#<resource id>#<token> or not at all",
                ctx.host
            ),
            format!(
                "set resource_id = \"/subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.CognitiveServices/accounts/<name>\" on backend {} (text to speech and speech to text then get the aad# form), or point it at the resource's custom domain https://<name>.cognitiveservices.azure.com; the resource needs a custom domain either way (az cognitiveservices account update -g <group> -n <name> --custom-domain <name>)",
                ctx.backend
            ),
        ),
    };
    Some(diagnosis(
        ctx,
        DiagnosisCode::SpeechCustomDomain,
        summary,
        fix,
    ))
}

/// Translator's `401000` ("credentials are missing or invalid").
fn translator_refusal(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_u64())
        == Some(401_000)
}

/// Translator: an Entra token on the global endpoint needs the resource's region and id beside
/// it.
fn translator(facts: &ServiceFacts<'_>, ctx: &Context<'_>) -> Option<Diagnosis> {
    if token_problem(ctx, ctx.expected_audience).is_some() {
        return None;
    }
    let (summary, fix) = match (facts.translator_headers, facts.region, facts.resource_id) {
        (true, Some(region), Some(id)) => (
            format!(
                "Translator at {} refused the token sent with Ocp-Apim-Subscription-Region {region} and Ocp-Apim-ResourceId {id}: one of them does not name this resource",
                ctx.host
            ),
            format!(
                "set region and resource_id of backend {} to the resource's own (az cognitiveservices account show -g <group> -n <name> --query \"{{location:location, id:id}}\"); the identity needs Cognitive Services User on it",
                ctx.backend
            ),
        ),
        _ => (
            format!(
                "Translator at {} refused the Entra token sent without the resource's region and id: its global endpoint takes an Entra token only with Ocp-Apim-Subscription-Region and Ocp-Apim-ResourceId beside it",
                ctx.host
            ),
            format!(
                "set region = \"<the resource's location>\" and resource_id = \"/subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.CognitiveServices/accounts/<name>\" on backend {}, or point it at the resource's custom domain https://<name>.cognitiveservices.azure.com",
                ctx.backend
            ),
        ),
    };
    Some(diagnosis(
        ctx,
        DiagnosisCode::TranslatorRegion,
        summary,
        fix,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::Claims;
    use crate::cloud::Cloud;

    fn claims(aud: &str) -> Claims {
        serde_json::from_value(serde_json::json!({"aud": aud, "tid": "t", "exp": 2_000_000_000}))
            .unwrap()
    }

    fn ctx<'a>(token: Option<&'a Claims>, audience: &'a str) -> Context<'a> {
        Context {
            backend: "b",
            host: "127.0.0.1",
            cloud: Cloud::Public,
            host_kind: None,
            expected_audience: audience,
            token,
            expected_tenant: None,
            deployment: None,
            known_deployments: &[],
            request_path: None,
            endpoint_path: "/",
            api_version: None,
            now: 1_900_000_000,
        }
    }

    fn facts(service: Service) -> ServiceFacts<'static> {
        ServiceFacts {
            service,
            form: TokenForm::Bearer,
            translator_headers: false,
            resource_id: None,
            region: None,
            challenge: None,
        }
    }

    const COG: &str = "https://cognitiveservices.azure.com";
    const CHALLENGE: &str = "Bearer authorization_uri=\"https://login.microsoftonline.com/t/oauth2/authorize\", resource_id=\"https://search.azure.com\"";

    #[test]
    fn search_names_its_audience_and_the_fix() {
        let c = claims(COG);
        let f = ServiceFacts {
            challenge: Some(CHALLENGE),
            ..facts(Service::Cognitive)
        };
        let d = classify(401, b"", &f, &ctx(Some(&c), COG)).unwrap();
        assert_eq!(d.code, DiagnosisCode::SearchAudience);
        assert!(d.summary.contains(COG) && d.summary.contains("https://search.azure.com"));
        assert!(
            d.fix.contains("set service = \"search\" on backend b"),
            "{}",
            d.fix
        );
        let s = claims("https://search.azure.com");
        let d = classify(
            403,
            b"",
            &facts(Service::Search),
            &ctx(Some(&s), "https://search.azure.com"),
        )
        .unwrap();
        assert_eq!(d.code, DiagnosisCode::MissingRole);
        assert!(d.fix.contains("Search Index Data Contributor"));
    }

    #[test]
    fn speech_says_custom_domain_and_resource_id() {
        let c = claims(COG);
        let d = classify(401, b"", &facts(Service::Speech), &ctx(Some(&c), COG)).unwrap();
        assert_eq!(d.code, DiagnosisCode::SpeechCustomDomain);
        assert!(d.summary.contains("plain bearer"));
        assert!(d.fix.contains("set resource_id = "));
        let aad = ServiceFacts {
            form: TokenForm::SpeechAad,
            resource_id: Some("/subscriptions/x/accounts/s"),
            ..facts(Service::Speech)
        };
        let d = classify(401, b"", &aad, &ctx(Some(&c), COG)).unwrap();
        assert!(
            d.summary
                .contains("aad#/subscriptions/x/accounts/s#<token>")
        );
        // A token for another audience is explained by its claims.
        let wrong = claims("https://management.azure.com");
        assert!(classify(401, b"", &facts(Service::Speech), &ctx(Some(&wrong), COG)).is_none());
    }

    #[test]
    fn translator_401000_asks_for_region_and_resource_id() {
        let c = claims(COG);
        let body = br#"{"error":{"code":401000,"message":"The request is not authorized because credentials are missing or invalid."}}"#;
        let d = classify(401, body, &facts(Service::Translator), &ctx(Some(&c), COG)).unwrap();
        assert_eq!(d.code, DiagnosisCode::TranslatorRegion);
        assert!(d.fix.contains("set region = "));
        let sent = ServiceFacts {
            translator_headers: true,
            region: Some("westeurope"),
            resource_id: Some("/subscriptions/x/accounts/t"),
            ..facts(Service::Translator)
        };
        let d = classify(401, body, &sent, &ctx(Some(&c), COG)).unwrap();
        assert!(d.summary.contains("westeurope"));
        assert!(classify(401, b"{}", &facts(Service::Translator), &ctx(Some(&c), COG)).is_none());
        assert!(classify(404, body, &facts(Service::Translator), &ctx(Some(&c), COG)).is_none());
        assert!(classify(401, body, &facts(Service::OpenAi), &ctx(Some(&c), COG)).is_none());
    }
}
