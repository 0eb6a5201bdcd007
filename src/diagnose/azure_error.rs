//! Classifying Azure's error answers (401/403/404/400/429) into what is wrong and the exact fix.

use super::{when, words};
use crate::claims::Claims;
use crate::cloud::{self, AudienceKind, Cloud, HostKind};
use serde::Serialize;

/// What went wrong, as a stable kebab-case code for headers, logs and scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiagnosisCode {
    AudienceMismatch,
    TokenExpired,
    /// The token's `nbf` is in the future (clock skew).
    TokenNotYetValid,
    WrongTenant,
    /// The token was not issued by Entra ID of the expected cloud.
    WrongIssuer,
    /// Azure refused a token whose claims look right, or there was no readable token to check:
    /// the cause cannot be read off the claims.
    TokenRejected,
    MissingRole,
    InvalidKey,
    KeyAuthDisabled,
    DeploymentNotFound,
    ResourceNotFound,
    ApiVersion,
    PublicAccessDisabled,
    NotPrivateEndpoint,
    Throttled,
    RegionalEndpoint,
    /// Azure AI Search refused a token for another audience.
    SearchAudience,
    /// Speech refused an Entra token: no custom domain, or not in the `aad#` form it needs.
    SpeechCustomDomain,
    /// Translator refused an Entra token without the resource's region and id beside it.
    TranslatorRegion,
}

/// The claims of the token that was sent, as far as a diagnosis may show them: never the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenFacts {
    pub aud: Option<String>,
    pub tid: Option<String>,
    pub oid: Option<String>,
    pub appid: Option<String>,
    pub exp: Option<i64>,
}

/// One explained Azure error.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    pub code: DiagnosisCode,
    /// What is wrong, in plain words, with the facts that show it.
    pub summary: String,
    /// The exact change that fixes it.
    pub fix: String,
    /// The claims of the bearer sent upstream, when there was one.
    pub token: Option<TokenFacts>,
}

/// What the proxy knows about the request that Azure answered.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Backend name from the config.
    pub backend: &'a str,
    /// Upstream host.
    pub host: &'a str,
    pub cloud: Cloud,
    /// `None` for custom or loopback hosts.
    pub host_kind: Option<HostKind>,
    /// The audience this backend needs, e.g. `https://cognitiveservices.azure.com`.
    pub expected_audience: &'a str,
    /// Claims of the bearer that was sent upstream, if any.
    pub token: Option<&'a Claims>,
    pub expected_tenant: Option<&'a str>,
    /// The deployment the request targeted.
    pub deployment: Option<&'a str>,
    /// Deployments configured for this backend (may be empty).
    pub known_deployments: &'a [String],
    /// The path the request was sent to, when the request was a client's (not `doctor`'s own
    /// probe).
    pub request_path: Option<&'a str>,
    /// The path of the backend's configured endpoint: `/` for a resource base.
    pub endpoint_path: &'a str,
    pub api_version: Option<&'a str>,
    /// Unix seconds.
    pub now: i64,
}

/// Azure's error body reduced to what classification reads. Handles `{"error":{…}}`,
/// API Management's `{"statusCode":…,"message":…}`, bare `{"code","message"}` and plain text.
#[derive(Debug, Default)]
struct ErrorBody {
    code: String,
    message: String,
    /// Lowercase copy of `message` for matching; ASCII lowercasing keeps byte offsets.
    lower: String,
    /// The API Management error shape: the answer came from a gateway in front of the resource.
    apim: bool,
}

/// What the body (or, failing that, the status) says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// "Access token is missing, invalid, audience is incorrect (…), or have expired."
    TokenRefused,
    InvalidKey,
    KeyAuthDisabled,
    PermissionDenied,
    PublicAccessDisabled,
    NotPrivateEndpoint,
    DeploymentNotFound,
    ResourceNotFound,
    ApiVersion,
    /// "Please provide an authentication key." — the endpoint only takes keys.
    KeyRequired,
    Throttled,
    /// Nothing recognised in the body.
    Unknown,
}

/// Role names and ids for the data plane.
struct Role {
    name: &'static str,
    id: &'static str,
}

const OPENAI_USER: Role = Role {
    name: "Cognitive Services OpenAI User",
    id: "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd",
};
const COGNITIVE_SERVICES_USER: Role = Role {
    name: "Cognitive Services User",
    id: "a97b65f3-24c7-4388-baec-2e87135dc908",
};
const AZURE_AI_USER: Role = Role {
    name: "Azure AI User",
    id: "53ca6127-db72-4b80-b1b0-d745d6d5456d",
};

/// Longest header value `Diagnosis::header_value` returns: room for the longest fix (the role
/// assignment with its command, role id and caveats) well inside any proxy's header limits.
const MAX_HEADER_LEN: usize = 1024;
/// Longest piece of Azure's own text quoted in a diagnosis.
const MAX_QUOTED_LEN: usize = 160;
/// How many configured deployment names a diagnosis lists.
const MAX_LISTED_DEPLOYMENTS: usize = 20;
/// A GA Azure OpenAI data-plane API version to suggest.
const SUGGESTED_API_VERSION: &str = "2024-10-21";

/// Defines [`DiagnosisCode::ALL`] and an exhaustive match from one list, so a variant added to
/// the enum but not to the list stops the build (the match has no `_` arm).
macro_rules! every_diagnosis_code {
    ($($variant:ident),* $(,)?) => {
        impl DiagnosisCode {
            /// Every code a diagnosis can carry, in declaration order. The troubleshooting
            /// chapter of the user guide has an entry for each; a test keeps them in step.
            pub const ALL: &[DiagnosisCode] = &[$(DiagnosisCode::$variant),*];
        }

        const _: fn(DiagnosisCode) = |code| match code {
            $(DiagnosisCode::$variant)|* => {}
        };
    };
}

every_diagnosis_code!(
    AudienceMismatch,
    TokenExpired,
    TokenNotYetValid,
    WrongTenant,
    WrongIssuer,
    TokenRejected,
    MissingRole,
    InvalidKey,
    KeyAuthDisabled,
    DeploymentNotFound,
    ResourceNotFound,
    ApiVersion,
    PublicAccessDisabled,
    NotPrivateEndpoint,
    Throttled,
    RegionalEndpoint,
    SearchAudience,
    SpeechCustomDomain,
    TranslatorRegion,
);

impl DiagnosisCode {
    /// The kebab-case code, e.g. `audience-mismatch`.
    pub fn as_str(self) -> &'static str {
        match self {
            DiagnosisCode::AudienceMismatch => "audience-mismatch",
            DiagnosisCode::TokenExpired => "token-expired",
            DiagnosisCode::TokenNotYetValid => "token-not-yet-valid",
            DiagnosisCode::WrongTenant => "wrong-tenant",
            DiagnosisCode::WrongIssuer => "wrong-issuer",
            DiagnosisCode::TokenRejected => "token-rejected",
            DiagnosisCode::MissingRole => "missing-role",
            DiagnosisCode::InvalidKey => "invalid-key",
            DiagnosisCode::KeyAuthDisabled => "key-auth-disabled",
            DiagnosisCode::DeploymentNotFound => "deployment-not-found",
            DiagnosisCode::ResourceNotFound => "resource-not-found",
            DiagnosisCode::ApiVersion => "api-version",
            DiagnosisCode::PublicAccessDisabled => "public-access-disabled",
            DiagnosisCode::NotPrivateEndpoint => "not-private-endpoint",
            DiagnosisCode::Throttled => "throttled",
            DiagnosisCode::RegionalEndpoint => "regional-endpoint",
            DiagnosisCode::SearchAudience => "search-audience",
            DiagnosisCode::SpeechCustomDomain => "speech-custom-domain",
            DiagnosisCode::TranslatorRegion => "translator-region",
        }
    }
}

impl std::fmt::Display for DiagnosisCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&Claims> for TokenFacts {
    fn from(c: &Claims) -> Self {
        TokenFacts {
            aud: c.audience().map(str::to_string),
            tid: c.tid.clone(),
            oid: c.oid.clone(),
            appid: c.app_id().map(str::to_string),
            exp: c.exp,
        }
    }
}

impl Diagnosis {
    /// One line for an HTTP header: `code: summary; fix: fix`, visible ASCII only, at most
    /// 1024 bytes.
    pub fn header_value(&self) -> String {
        let raw = format!(
            "{}: {}; fix: {}",
            self.code.as_str(),
            self.summary,
            self.fix
        );
        words::one_line(&raw, MAX_HEADER_LEN)
    }
}

impl ErrorBody {
    fn parse(body: &[u8]) -> ErrorBody {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let mut parsed = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) if v.is_object() => Self::from_json(&v),
            _ => ErrorBody::default(),
        };
        if parsed.code.is_empty() && parsed.message.is_empty() {
            parsed.message = text.to_string();
        }
        // Diagnoses quote the message and are logged: never a bearer token it may carry.
        parsed.message = redact_tokens(&parsed.message);
        parsed.lower = parsed.message.to_ascii_lowercase();
        parsed
    }

    fn from_json(v: &serde_json::Value) -> ErrorBody {
        let inner = v.get("error");
        let obj = inner.filter(|e| e.is_object()).unwrap_or(v);
        let code = scalar(obj.get("code")).unwrap_or_default();
        let message = scalar(obj.get("message"))
            .or_else(|| scalar(inner))
            .or_else(|| scalar(v.get("error_description")))
            .unwrap_or_default();
        ErrorBody {
            code,
            message,
            lower: String::new(),
            apim: inner.is_none() && v.get("statusCode").is_some(),
        }
    }

    fn code_is(&self, code: &str) -> bool {
        self.code.eq_ignore_ascii_case(code)
    }

    fn says(&self, phrase: &str) -> bool {
        self.lower.contains(phrase)
    }

    /// What the body says, by code first and message second.
    fn signal(&self, status: u16) -> Signal {
        if self.code_is("AuthenticationTypeDisabled")
            || self.says("key based authentication is disabled")
            || self.says("key-based authentication is disabled")
        {
            Signal::KeyAuthDisabled
        } else if self.code_is("PermissionDenied") || self.says("lacks the required data action") {
            Signal::PermissionDenied
        } else if self.says("access token is missing") || self.says("audience is incorrect") {
            Signal::TokenRefused
        } else if self.says("invalid subscription key") || self.says("missing subscription key") {
            Signal::InvalidKey
        } else if self.says("public access is disabled") {
            Signal::PublicAccessDisabled
        } else if self.says("not from an approved private endpoint") {
            Signal::NotPrivateEndpoint
        } else if self.code_is("DeploymentNotFound")
            || self.says("api deployment for this resource does not exist")
        {
            Signal::DeploymentNotFound
        } else if self.code_is("429")
            || self.code_is("RateLimitReached")
            || self.code_is("TooManyRequests")
            || status == 429
        {
            // Azure's 429 texts name the API version; throttling wins.
            Signal::Throttled
        } else if matches!(status, 400 | 404)
            && (self.says("api version")
                || self.says("api-version")
                || self.code_is("InvalidApiVersion"))
        {
            Signal::ApiVersion
        } else if self.says("provide an authentication key") {
            Signal::KeyRequired
        } else if self.says("resource not found")
            || (status == 404 && (self.lower.is_empty() || self.says("not found")))
        {
            Signal::ResourceNotFound
        } else {
            Signal::Unknown
        }
    }

    /// The audience Azure names in "audience is incorrect (https://…)".
    fn named_audience(&self) -> Option<&str> {
        let start = self.lower.find("audience is incorrect (")? + "audience is incorrect (".len();
        let rest = self.message.get(start..)?;
        let end = rest.find(')')?;
        let aud = rest.get(..end)?.trim();
        (!aud.is_empty() && aud.len() <= MAX_QUOTED_LEN && !aud.contains(char::is_whitespace))
            .then_some(aud)
    }

    /// The first `quoted` value after a marker: Azure quotes the principal, the data action and
    /// the operation in backticks (older texts used single or double quotes).
    fn quoted_after(&self, marker: &str) -> Option<String> {
        let at = self.lower.find(marker)? + marker.len();
        let rest = self.message.get(at..)?.trim_start();
        let quote = rest
            .chars()
            .next()
            .filter(|c| matches!(c, '`' | '\'' | '"'))?;
        let inner = rest.get(quote.len_utf8()..)?;
        let end = inner.find(quote)?;
        let value = inner.get(..end)?.trim();
        (!value.is_empty()).then(|| words::one_line(value, MAX_QUOTED_LEN))
    }

    /// A wait Azure states in the body: "Please retry after 6 seconds", "Try again in 20 seconds".
    fn stated_wait_ms(&self) -> Option<u64> {
        ["retry after ", "try again in "].iter().find_map(|marker| {
            let at = self.lower.find(marker)? + marker.len();
            let rest = self.lower.get(at..)?;
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let n: f64 = rest.get(..num_len)?.parse().ok()?;
            let unit = rest.get(num_len..)?.trim_start();
            let ms = if unit.starts_with("ms") || unit.starts_with("millisecond") {
                n
            } else if unit.starts_with("min") {
                n * 60_000.0
            } else {
                n * 1_000.0
            };
            to_ms(ms)
        })
    }
}

impl Role {
    /// The data-plane role for a backend and the data action Azure said was missing. A backend
    /// is Foundry by its host or, for private DNS names and the emulator, by the audience it
    /// needs (`https://ai.azure.com`).
    fn for_request(ctx: &Context<'_>, data_action: Option<&str>) -> &'static Role {
        let action = data_action.unwrap_or_default().to_ascii_lowercase();
        let foundry = ctx.host_kind == Some(HostKind::Foundry)
            || (ctx.host_kind.is_none()
                && matches!(
                    Cloud::of_audience(ctx.expected_audience),
                    Some((_, AudienceKind::Foundry))
                ));
        if foundry || action.contains("/aiservices/") {
            &AZURE_AI_USER
        } else if action.starts_with("microsoft.cognitiveservices/") && !action.contains("/openai/")
        {
            // Speech, Language, Vision, ...: the general data-plane role.
            &COGNITIVE_SERVICES_USER
        } else {
            &OPENAI_USER
        }
    }
}

/// Explains an Azure error answer. The body decides first (Azure sends `PermissionDenied` as 401
/// as well as 403), the status second. `retry_after` is the `retry-after` header value in
/// seconds (or an HTTP date), or `retry-after-ms` written as `<n>ms`. `None` when the answer is
/// not an error or there is nothing to add. Never panics on any body.
pub fn classify(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    ctx: &Context<'_>,
) -> Option<Diagnosis> {
    if !(400..=599).contains(&status) {
        return None;
    }
    let err = ErrorBody::parse(body);
    let signal = err.signal(status);
    let auth_signal = matches!(
        signal,
        Signal::TokenRefused
            | Signal::InvalidKey
            | Signal::KeyAuthDisabled
            | Signal::PermissionDenied
            | Signal::KeyRequired
    ) || (signal == Signal::Unknown && matches!(status, 401 | 403));
    if ctx.host_kind == Some(HostKind::Regional) && auth_signal {
        return Some(regional_endpoint(ctx, &err));
    }
    let diagnosis = match signal {
        Signal::TokenRefused => token_refused(ctx, &err),
        Signal::InvalidKey => invalid_key(ctx, &err),
        Signal::KeyAuthDisabled => key_auth_disabled(ctx),
        Signal::PermissionDenied => missing_role(ctx, &err),
        Signal::PublicAccessDisabled => public_access_disabled(ctx),
        Signal::NotPrivateEndpoint => not_private_endpoint(ctx),
        Signal::DeploymentNotFound => deployment_not_found(ctx),
        Signal::ResourceNotFound => match ctx.api_version {
            None => api_version_missing(ctx),
            Some(_) => resource_not_found(ctx),
        },
        Signal::ApiVersion => api_version_rejected(ctx, &err),
        Signal::KeyRequired => regional_endpoint(ctx, &err),
        Signal::Throttled => throttled(ctx, &err, retry_after),
        // An unrecognised 401 is still explained when the token itself shows the cause.
        Signal::Unknown if status == 401 => token_problem(ctx, ctx.expected_audience)?,
        Signal::Unknown => return None,
    };
    Some(diagnosis)
}

/// Whether fetching a fresh token for the same scope and replaying could turn this answer into
/// a success: Azure refused the token itself (revoked, signing keys rotated, expired in flight),
/// and its claims do not already show a cause a new token would repeat (another audience).
/// `false` for `PermissionDenied` sent as 401, key and endpoint errors, and anything but 401:
/// there only a role or config change helps, and a new token per request would load Entra.
pub fn refresh_may_help(
    status: u16,
    body: &[u8],
    expected_audience: &str,
    token: Option<&Claims>,
) -> bool {
    if status != 401 {
        return false;
    }
    let err = ErrorBody::parse(body);
    match err.signal(status) {
        Signal::TokenRefused | Signal::Unknown => {
            let needed = err.named_audience().unwrap_or(expected_audience);
            token
                .and_then(Claims::audience)
                .is_none_or(|aud| cloud::same_audience(aud, needed))
        }
        Signal::InvalidKey
        | Signal::KeyAuthDisabled
        | Signal::PermissionDenied
        | Signal::PublicAccessDisabled
        | Signal::NotPrivateEndpoint
        | Signal::DeploymentNotFound
        | Signal::ResourceNotFound
        | Signal::ApiVersion
        | Signal::KeyRequired
        | Signal::Throttled => false,
    }
}

fn facts(ctx: &Context<'_>) -> Option<TokenFacts> {
    ctx.token.map(TokenFacts::from)
}

pub(super) fn diagnosis(
    ctx: &Context<'_>,
    code: DiagnosisCode,
    summary: String,
    fix: String,
) -> Diagnosis {
    Diagnosis {
        code,
        summary,
        fix,
        token: facts(ctx),
    }
}

/// The 401 "Access token is missing, invalid, audience is incorrect (…), or have expired.":
/// the token's own claims say which of these it was.
fn token_refused(ctx: &Context<'_>, err: &ErrorBody) -> Diagnosis {
    let needed = err.named_audience().unwrap_or(ctx.expected_audience);
    if let Some(d) = token_problem(ctx, needed) {
        return d;
    }
    let via = if err.apim {
        " (the answer has API Management's shape: a gateway in front of the resource refused it)"
    } else {
        ""
    };
    let Some(claims) = ctx.token else {
        return diagnosis(
            ctx,
            DiagnosisCode::TokenRejected,
            format!(
                "Azure refused the request to {} for lack of a valid access token{via}, and no \
                 readable bearer token was sent upstream (a key was forwarded, or the bearer is \
                 not a JWT)",
                ctx.host
            ),
            format!(
                "send an Entra ID bearer token for scope {} to backend {}",
                cloud::scope_for_audience(needed),
                ctx.backend
            ),
        );
    };
    let tid = claims.tid.as_deref().unwrap_or("(none)");
    let exp = claims
        .exp
        .map(|e| format!("expires {}", when::relative(e, ctx.now)))
        .unwrap_or_else(|| "no exp".to_string());
    diagnosis(
        ctx,
        DiagnosisCode::TokenRejected,
        format!(
            "Azure refused a token that looked valid{via} (aud {}, tid {tid}, {exp}): it may have \
             been revoked or signed for another tenant; the resource may not be in tenant {tid}",
            claims.audience().unwrap_or(needed)
        ),
        format!(
            "check that the resource {} is in tenant {tid} (az cognitiveservices account show \
             --name {} --resource-group <resource-group> --query id, run signed in to that \
             tenant) and that the identity's token comes from the same tenant; if a client sent \
             this token, have it fetch a new one",
            ctx.host,
            resource_name(ctx)
        ),
    )
}

/// The first thing the token's claims prove wrong for this backend: audience, then lifetime,
/// then tenant. `None` when there is no token or nothing is provably wrong.
pub(super) fn token_problem(ctx: &Context<'_>, needed: &str) -> Option<Diagnosis> {
    let claims = ctx.token?;
    let expired = claims.exp.filter(|exp| *exp < ctx.now);
    match claims.audience() {
        None => {
            return Some(diagnosis(
                ctx,
                DiagnosisCode::AudienceMismatch,
                format!("token has no aud claim, backend needs {needed}"),
                format!("request scope {}", cloud::scope_for_audience(needed)),
            ));
        }
        Some(aud) if !cloud::same_audience(aud, needed) => {
            return Some(audience_mismatch(ctx, aud, needed, expired));
        }
        Some(_) => {}
    }
    if let Some(exp) = expired {
        return Some(diagnosis(
            ctx,
            DiagnosisCode::TokenExpired,
            format!(
                "token expired {} (exp {})",
                when::relative(exp, ctx.now),
                when::utc(exp)
            ),
            format!(
                "send a fresh token for scope {}: tokens live 60-90 minutes, and SDK credentials \
                 refresh them when the credential is kept rather than the token string; if the \
                 proxy's own token was stale, check this machine's clock",
                cloud::scope_for_audience(needed)
            ),
        ));
    }
    if let Some(nbf) = claims.nbf.filter(|nbf| *nbf > ctx.now) {
        return Some(diagnosis(
            ctx,
            DiagnosisCode::TokenNotYetValid,
            format!(
                "token is not valid until {} ({}, nbf)",
                when::utc(nbf),
                when::relative(nbf, ctx.now)
            ),
            "sync this machine's clock (NTP): the token was issued for a time still ahead of it"
                .to_string(),
        ));
    }
    let expected_tid = ctx.expected_tenant?;
    match claims.tid.as_deref() {
        Some(tid) if tid.eq_ignore_ascii_case(expected_tid) => None,
        tid => Some(diagnosis(
            ctx,
            DiagnosisCode::WrongTenant,
            format!(
                "token is from tenant {}, backend {} expects tenant {expected_tid}",
                tid.unwrap_or("(no tid claim)"),
                ctx.backend
            ),
            format!(
                "get the token from tenant {expected_tid} (the resource's tenant): set the \
                 identity's tenant to {expected_tid}, e.g. az account get-access-token --tenant \
                 {expected_tid} --scope {}",
                cloud::scope_for_audience(needed)
            ),
        )),
    }
}

fn audience_mismatch(
    ctx: &Context<'_>,
    aud: &str,
    needed: &str,
    expired: Option<i64>,
) -> Diagnosis {
    let scope = cloud::scope_for_audience(needed);
    let mut summary = format!("token aud {aud}, backend needs {needed}");
    let mut fix = format!("request scope {scope}");
    match Cloud::of_audience(aud) {
        Some((c, AudienceKind::Management)) => {
            summary.push_str(" (an Azure Resource Manager token");
            if c != ctx.cloud {
                summary.push_str(&format!(" of the {} cloud", words::cloud_label(c)));
            }
            summary.push(')');
            fix.push_str(&format!(
                " (ARM tokens come from az account get-access-token without --scope): az account \
                 get-access-token --scope {scope}"
            ));
        }
        Some((c, kind)) if c != ctx.cloud => {
            summary.push_str(&format!(
                " (wrong cloud: the token is for {} in the {} cloud, the backend is in the {} \
                 cloud)",
                words::family_label(kind),
                words::cloud_label(c),
                words::cloud_label(ctx.cloud)
            ));
            fix.push_str(&format!(" from {}", ctx.cloud.authority_host()));
        }
        Some((_, kind)) => {
            let needed_kind = Cloud::of_audience(needed).map(|(_, k)| k);
            if needed_kind.is_some_and(|k| k != kind) {
                summary.push_str(&format!(
                    " (the token is for {} ({aud}), not {})",
                    words::family_label(kind),
                    ctx.host
                ));
            }
        }
        None => {}
    }
    if !cloud::same_audience(needed, ctx.expected_audience)
        && cloud::same_audience(aud, ctx.expected_audience)
    {
        summary.push_str(&format!(
            "; the proxy used backend {}'s configured audience {}, but Azure asks for {needed}",
            ctx.backend, ctx.expected_audience
        ));
        fix = format!("set backend {}'s scope to {scope}", ctx.backend);
    }
    if let Some(exp) = expired {
        summary.push_str(&format!(
            "; it also expired {}",
            when::relative(exp, ctx.now)
        ));
    }
    diagnosis(ctx, DiagnosisCode::AudienceMismatch, summary, fix)
}

fn invalid_key(ctx: &Context<'_>, err: &ErrorBody) -> Diagnosis {
    let base = custom_subdomain_example(ctx);
    let (summary, fix) = if ctx.token.is_some() {
        (
            format!(
                "Azure answered a bearer token with a key error: {} does not take Entra ID \
                 tokens on this path (wrong API endpoint)",
                ctx.host
            ),
            format!(
                "point backend {} at the resource's own endpoint {base}, with no path",
                ctx.backend
            ),
        )
    } else if err.apim {
        (
            format!(
                "API Management in front of {} rejected the subscription key: it is missing, \
                 wrong or for another product",
                ctx.host
            ),
            format!(
                "send the gateway's subscription key (Ocp-Apim-Subscription-Key), or point \
                 backend {} at the resource itself ({base}) and let the proxy use Entra ID",
                ctx.backend
            ),
        )
    } else {
        (
            format!(
                "Azure rejected the api-key sent to {}: the key is wrong, belongs to another \
                 resource, or the endpoint is wrong",
                ctx.host
            ),
            format!(
                "let the proxy authenticate backend {} with Entra ID instead of forwarding a \
                 key; if a key must be used, copy it from this resource's Keys and Endpoint \
                 page and check that the endpoint is {base}",
                ctx.backend
            ),
        )
    };
    diagnosis(ctx, DiagnosisCode::InvalidKey, summary, fix)
}

fn key_auth_disabled(ctx: &Context<'_>) -> Diagnosis {
    diagnosis(
        ctx,
        DiagnosisCode::KeyAuthDisabled,
        format!(
            "key-based authentication is disabled on {} (disableLocalAuth is on), and the \
             request carried an api-key",
            ctx.host
        ),
        format!(
            "send an Entra ID bearer token instead: have backend {} use the proxy's identity \
             with scope {} rather than forwarding the client's key",
            ctx.backend,
            cloud::scope_for_audience(ctx.expected_audience)
        ),
    )
}

fn missing_role(ctx: &Context<'_>, err: &ErrorBody) -> Diagnosis {
    let token_oid = ctx.token.and_then(|c| c.oid.clone());
    let principal = err
        .quoted_after("principal")
        .or_else(|| token_oid.clone())
        .unwrap_or_else(|| "<object id of the calling identity>".to_string());
    let action = err.quoted_after("data action");
    let role = Role::for_request(ctx, action.as_deref());
    // The token's own principal: name its app, and whether it is a signed-in user.
    let own = ctx
        .token
        .filter(|_| token_oid.as_deref() == Some(principal.as_str()));
    let user = own.is_some_and(|c| c.scp.is_some() && c.idtyp.as_deref() != Some("app"));
    let app = own
        .and_then(Claims::app_id)
        .map(|a| {
            if user {
                format!(", signed in through app {a} and sent on their behalf")
            } else {
                format!(" (app {a})")
            }
        })
        .unwrap_or_default();
    let who = if user { "user" } else { "principal" };
    let summary = match &action {
        Some(action) => format!(
            "{who} {principal}{app} lacks the data action {action} on {}: it has no \
             data-plane role there",
            ctx.host
        ),
        None => format!(
            "{who} {principal}{app} has no data-plane role on {}",
            ctx.host
        ),
    };
    let to_whom = if user {
        ", to the user or to a group the user is in (Azure checks the user's own roles on a \
         token sent on their behalf, not the proxy's)"
    } else {
        ""
    };
    // The command comes first so that it survives the header's length cap.
    let fix = format!(
        "az role assignment create --assignee {principal} --role \"{name}\" --scope $(az \
         cognitiveservices account show --name {account} --resource-group <resource-group> \
         --query id -o tsv), i.e. grant the role \"{name}\" (role definition id {id}) on the \
         resource {host}{to_whom}. Cognitive Services Contributor and subscription Owner are not \
         enough: they are control-plane roles without data actions. New role assignments can \
         take several minutes to apply.",
        name = role.name,
        id = role.id,
        account = resource_name(ctx),
        host = ctx.host,
    );
    diagnosis(ctx, DiagnosisCode::MissingRole, summary, fix)
}

fn public_access_disabled(ctx: &Context<'_>) -> Diagnosis {
    diagnosis(
        ctx,
        DiagnosisCode::PublicAccessDisabled,
        format!(
            "public network access is disabled on {0}, and the proxy reached {0} through its \
             public endpoint",
            ctx.host
        ),
        format!(
            "run the proxy inside the VNet that holds the resource's private endpoint (or one \
             peered to it), and check that {} resolves to the private endpoint's address through \
             the private DNS zone {}",
            ctx.host,
            private_dns_zones(ctx)
        ),
    )
}

fn not_private_endpoint(ctx: &Context<'_>) -> Diagnosis {
    diagnosis(
        ctx,
        DiagnosisCode::NotPrivateEndpoint,
        format!(
            "{} accepts traffic only from its approved private endpoints, and this request did \
             not come through one",
            ctx.host
        ),
        format!(
            "route the proxy through an approved private endpoint of the resource: approve a \
             pending private endpoint connection (resource > Networking > Private endpoint \
             connections) or create one in the proxy's VNet, and check that {} resolves to its \
             address through {}",
            ctx.host,
            private_dns_zones(ctx)
        ),
    )
}

fn deployment_not_found(ctx: &Context<'_>) -> Diagnosis {
    let name = ctx.deployment.map(|d| words::one_line(d, MAX_QUOTED_LEN));
    let summary = match &name {
        Some(d) => format!("deployment `{d}` does not exist on {}", ctx.host),
        None => format!(
            "the deployment the request named does not exist on {}",
            ctx.host
        ),
    };
    let mut hints = Vec::new();
    hints.extend(
        name.as_deref()
            .and_then(|d| near_miss(d, ctx.known_deployments)),
    );
    if !ctx.known_deployments.is_empty() {
        let listed: Vec<&str> = ctx
            .known_deployments
            .iter()
            .take(MAX_LISTED_DEPLOYMENTS)
            .map(String::as_str)
            .collect();
        let more = ctx
            .known_deployments
            .len()
            .saturating_sub(MAX_LISTED_DEPLOYMENTS);
        let more = if more > 0 {
            format!(" (and {more} more)")
        } else {
            String::new()
        };
        hints.push(format!(
            "deployment names are case-sensitive; this backend has: {}{more}",
            listed.join(", ")
        ));
    }
    hints.push(format!(
        "list the resource's deployments with az cognitiveservices account deployment list \
         --name {} --resource-group <resource-group> -o table; a deployment created in the last \
         few minutes may not be ready yet",
        resource_name(ctx)
    ));
    diagnosis(
        ctx,
        DiagnosisCode::DeploymentNotFound,
        summary,
        hints.join("; "),
    )
}

/// A configured deployment the requested name was probably meant to be.
fn near_miss(requested: &str, known: &[String]) -> Option<String> {
    if known.iter().any(|k| k == requested) {
        return Some(format!(
            "`{requested}` is configured for this backend but Azure does not have it: it was \
             deleted, lives on another resource, or is still being created"
        ));
    }
    if let Some(k) = known.iter().find(|k| k.eq_ignore_ascii_case(requested)) {
        return Some(format!(
            "did you mean `{k}`? `{requested}` differs only in letter case"
        ));
    }
    let lower = requested.to_ascii_lowercase();
    if let Some(stripped) = lower
        .strip_prefix("azure/")
        .and_then(|_| requested.get("azure/".len()..))
    {
        let found = known
            .iter()
            .find(|k| k.as_str() == stripped)
            .or_else(|| known.iter().find(|k| k.eq_ignore_ascii_case(stripped)));
        let target = found.map(String::as_str).unwrap_or(stripped);
        return Some(format!(
            "drop the `azure/` prefix (a LiteLLM provider prefix, not part of the name): use \
             `{target}`"
        ));
    }
    let squash = |s: &str| -> String {
        s.chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let wanted = squash(requested);
    if let Some(k) = known.iter().find(|k| squash(k) == wanted) {
        return Some(format!("did you mean `{k}`?"));
    }
    if looks_like_model_name(&lower) {
        let close = known
            .iter()
            .find(|k| {
                let k = squash(k);
                k.contains(&wanted) || wanted.contains(&k)
            })
            .map(|k| format!(" (perhaps `{k}`)"))
            .unwrap_or_default();
        return Some(format!(
            "`{requested}` looks like a model name: Azure wants the deployment name you gave the \
             model when deploying it{close}"
        ));
    }
    None
}

fn looks_like_model_name(lower: &str) -> bool {
    const MODEL_PREFIXES: [&str; 13] = [
        "gpt-",
        "gpt4",
        "gpt3",
        "o1",
        "o3",
        "o4",
        "text-embedding-",
        "dall-e",
        "whisper",
        "tts",
        "davinci",
        "babbage",
        "chatgpt",
    ];
    MODEL_PREFIXES.iter().any(|p| lower.starts_with(p))
}

fn api_version_missing(ctx: &Context<'_>) -> Diagnosis {
    diagnosis(
        ctx,
        DiagnosisCode::ApiVersion,
        format!(
            "the request to {} had no api-version query parameter, and Azure answers 404 \
             Resource not found without one",
            ctx.host
        ),
        format!(
            "add ?api-version={SUGGESTED_API_VERSION} (or another supported version) to the \
             request, or set the API version for backend {}",
            ctx.backend
        ),
    )
}

fn resource_not_found(ctx: &Context<'_>) -> Diagnosis {
    let endpoint_path = ctx.endpoint_path.trim_end_matches('/');
    // The endpoint is at fault when it has a path of its own (a resource serves at its root),
    // or when no client's path is known (`doctor`'s probes are paths Azure has).
    // A well-formed Azure OpenAI path on a resource base finds at least "deployment not
    // found" on an Azure OpenAI resource: a 404 for it says the host is not such a resource.
    let well_formed = |p: &str| {
        p.starts_with("/openai/v1/")
            || (p.starts_with("/openai/deployments/")
                && p.split('/').filter(|s| !s.is_empty()).count() >= 4)
    };
    let (summary, fix) = match ctx.request_path {
        Some(path) if endpoint_path.is_empty() && !well_formed(path) => (
            format!(
                "Azure has nothing at {} on {}: the backend endpoint is the resource base, so \
                 the request's path is wrong",
                words::one_line(path, MAX_QUOTED_LEN),
                ctx.host
            ),
            request_path_fix(path),
        ),
        _ if !endpoint_path.is_empty() => (
            format!(
                "Azure has nothing at the requested path on {}: backend {}'s endpoint has the \
                 path {endpoint_path}, and Azure AI resources serve at their root",
                ctx.host, ctx.backend
            ),
            format!(
                "set backend {}'s endpoint to the resource base {} with no path (unless an API \
                 gateway in front of the resource serves {endpoint_path})",
                ctx.backend,
                custom_subdomain_example(ctx)
            ),
        ),
        _ => (
            format!(
                "Azure has nothing at the requested path on {}: the backend endpoint is not the \
                 Azure OpenAI or AI Services resource it should be",
                ctx.host
            ),
            format!(
                "set backend {}'s endpoint to the resource's own base URL, {} (its Keys and \
                 Endpoint page), and check that a custom domain or DNS name points at that resource",
                ctx.backend,
                custom_subdomain_example(ctx)
            ),
        ),
    };
    diagnosis(ctx, DiagnosisCode::ResourceNotFound, summary, fix)
}

/// What the client should send instead of `path`, by its shape.
fn request_path_fix(path: &str) -> String {
    if path.contains("/openai/openai/") {
        "the path has /openai twice: the client's base URL already ends in /openai; give the \
         SDK the proxy's address alone (AzureOpenAI(azure_endpoint=\"http://PROXY:PORT\"))"
            .to_string()
    } else if path.starts_with("/openai/") {
        "send an Azure OpenAI path: /openai/deployments/<deployment>/chat/completions (or \
         embeddings, …) with ?api-version=, or /openai/v1/… with the deployment as the body's \
         model; or the OpenAI-style /v1/chat/completions, which the proxy maps"
            .to_string()
    } else {
        "send a path this service's API has (its REST reference), or an OpenAI-style \
         /v1/chat/completions, which the proxy maps to a deployment"
            .to_string()
    }
}

fn api_version_rejected(ctx: &Context<'_>, err: &ErrorBody) -> Diagnosis {
    let sent = ctx
        .api_version
        .map(|v| format!("api-version {}", words::one_line(v, MAX_QUOTED_LEN)))
        .unwrap_or_else(|| "the request's api-version".to_string());
    diagnosis(
        ctx,
        DiagnosisCode::ApiVersion,
        format!(
            "{} rejected {sent}: {}",
            ctx.host,
            words::one_line(&err.message, MAX_QUOTED_LEN)
        ),
        format!(
            "use an api-version this resource supports, e.g. {SUGGESTED_API_VERSION} (GA) or a \
             current preview; versions are retired over time, see the Azure OpenAI API version \
             lifecycle"
        ),
    )
}

fn regional_endpoint(ctx: &Context<'_>, err: &ErrorBody) -> Diagnosis {
    let s = words::azure_suffix(ctx.cloud);
    let what = if ctx.host_kind == Some(HostKind::Regional) {
        format!("{} is a shared regional endpoint", ctx.host)
    } else if err.says("provide an authentication key") {
        format!(
            "{} asked for an authentication key: it did not take the request's credential as an \
             Entra ID token",
            ctx.host
        )
    } else {
        format!("{} did not take the Entra ID token", ctx.host)
    };
    diagnosis(
        ctx,
        DiagnosisCode::RegionalEndpoint,
        format!(
            "{what}; Entra ID authentication works only on a resource's custom-subdomain \
             endpoint (https://<name>.openai.{s} or https://<name>.cognitiveservices.{s}), not on \
             https://<region>.api.cognitive.microsoft.com"
        ),
        format!(
            "set backend {}'s endpoint to the resource's custom subdomain; if it has none, create \
             one with az cognitiveservices account update --name <name> --resource-group \
             <resource-group> --custom-domain <name> (it cannot be undone)",
            ctx.backend
        ),
    )
}

fn throttled(ctx: &Context<'_>, err: &ErrorBody, retry_after: Option<&str>) -> Diagnosis {
    let wait = retry_after
        .and_then(|v| wait_ms(v, ctx.now))
        .or_else(|| err.stated_wait_ms());
    let target = match ctx.deployment {
        Some(d) => format!(
            "deployment `{}` on {}",
            words::one_line(d, MAX_QUOTED_LEN),
            ctx.host
        ),
        None => ctx.host.to_string(),
    };
    let (summary, first) = match wait {
        Some(ms) => (
            format!(
                "Azure is rate limiting {target} (429): retry after {}",
                wait_words(ms)
            ),
            format!("wait {} before retrying", wait_words(ms)),
        ),
        None => (
            format!("Azure is rate limiting {target} (429) and did not say how long to wait"),
            "retry with exponential backoff".to_string(),
        ),
    };
    diagnosis(
        ctx,
        DiagnosisCode::Throttled,
        summary,
        format!(
            "{first}; if it persists, raise the deployment's tokens-per-minute quota or spread \
             the load over more deployments or regions"
        ),
    )
}

/// Parses a `retry-after` value: seconds (`20`, `1.5`), milliseconds (`1500ms`, as the proxy
/// passes `retry-after-ms`), or an HTTP date.
fn wait_ms(value: &str, now: i64) -> Option<u64> {
    let v = value.trim();
    if let Some(ms) = v.strip_suffix("ms") {
        return ms.trim().parse::<f64>().ok().and_then(to_ms);
    }
    if let Ok(secs) = v.parse::<f64>() {
        return to_ms(secs * 1_000.0);
    }
    let at = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
    let secs = at.unix_timestamp().saturating_sub(now).max(0);
    Some(u64::try_from(secs).ok()?.saturating_mul(1_000))
}

fn to_ms(ms: f64) -> Option<u64> {
    // Saturating float-to-int conversion; NaN and negatives are not waits.
    (ms.is_finite() && ms >= 0.0).then(|| ms.ceil() as u64)
}

/// `500 ms`, `20 s`, `1 min`, ...
fn wait_words(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else {
        let secs = ms.div_ceil(1_000);
        when::span(i64::try_from(secs).unwrap_or(i64::MAX))
    }
}

/// The account name: the first label of a custom-subdomain host.
fn resource_name(ctx: &Context<'_>) -> String {
    match ctx.host_kind {
        Some(HostKind::OpenAi | HostKind::CognitiveServices | HostKind::Foundry) => ctx
            .host
            .split('.')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or("<resource-name>")
            .to_string(),
        _ => "<resource-name>".to_string(),
    }
}

/// The shape of a resource base endpoint, e.g. `https://<name>.openai.azure.com`.
fn custom_subdomain_example(ctx: &Context<'_>) -> String {
    let s = words::azure_suffix(ctx.cloud);
    match ctx.host_kind {
        Some(HostKind::OpenAi | HostKind::CognitiveServices | HostKind::Foundry) => {
            format!("https://{}", ctx.host)
        }
        _ => format!("https://<name>.openai.{s}"),
    }
}

/// The private DNS zone(s) that must resolve the host to the private endpoint.
fn private_dns_zones(ctx: &Context<'_>) -> String {
    let s = words::azure_suffix(ctx.cloud);
    match ctx.host_kind {
        Some(HostKind::OpenAi | HostKind::CognitiveServices | HostKind::Foundry) => {
            let parent = ctx.host.split_once('.').map(|(_, p)| p).unwrap_or(s);
            format!("privatelink.{}", parent.to_ascii_lowercase())
        }
        _ => format!("privatelink.openai.{s} / privatelink.cognitiveservices.{s}"),
    }
}

/// `text` with every run shaped like a compact JWS (`eyJ…`, three base64url parts) replaced by
/// `<token>`.
fn redact_tokens(text: &str) -> String {
    let is_b64 = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("eyJ") {
        let (before, candidate) = rest.split_at(at);
        out.push_str(before);
        let mut dots = 0;
        let mut end = 0;
        for (i, c) in candidate.char_indices() {
            if is_b64(c) || (c == '.' && dots < 2) {
                dots += usize::from(c == '.');
                end = i + c.len_utf8();
            } else {
                break;
            }
        }
        let run = &candidate[..end];
        if dots == 2 && !run.ends_with('.') {
            out.push_str("<token>");
        } else {
            out.push_str(run);
        }
        rest = &candidate[end..];
    }
    out.push_str(rest);
    out
}

fn scalar(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::Audience;

    const NOW: i64 = 1_735_812_000; // 2025-01-02 10:00:00 UTC
    const OID: &str = "aaaaaaaa-1111-2222-3333-444444444444";
    const TID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const OTHER_TID: &str = "11111111-2222-3333-4444-555555555555";
    const COG: &str = "https://cognitiveservices.azure.com";

    const TOKEN_401: &str = r#"{"error":{"code":"401","message":"Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), or have expired."}}"#;
    const TOKEN_401_NO_COMMA: &str = r#"{"error":{"code":"401","message":"Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com) or have expired."}}"#;
    const INVALID_KEY_401: &str = r#"{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}"#;
    const KEY_DISABLED_401: &str = r#"{"error":{"code":"AuthenticationTypeDisabled","message":"Key based authentication is disabled for this resource."}}"#;
    const PERMISSION_DENIED: &str = r#"{"error":{"code":"PermissionDenied","message":"The principal `aaaaaaaa-1111-2222-3333-444444444444` lacks the required data action `Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action` to perform `POST /openai/deployments/{deployment-id}/chat/completions` operation."}}"#;
    const PUBLIC_DISABLED_403: &str = r#"{"error":{"code":"403","message":"Public access is disabled. Please configure private endpoint."}}"#;
    const NOT_PE_403: &str =
        r#"{"error":{"code":"403","message":"Traffic is not from an approved private endpoint."}}"#;
    const DEPLOYMENT_404: &str = r#"{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again."}}"#;
    const RESOURCE_404: &str = r#"{"error":{"code":"404","message":"Resource not found"}}"#;
    const API_VERSION_400: &str =
        r#"{"error":{"code":"BadRequest","message":"API version not supported"}}"#;
    const KEY_REQUIRED_400: &str =
        r#"{"error":{"code":"BadRequest","message":"Please provide an authentication key."}}"#;
    const THROTTLED_429: &str = r#"{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 6 seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."}}"#;

    fn claims(aud: &str) -> Claims {
        Claims {
            aud: Some(Audience::One(aud.to_string())),
            iss: Some(format!("https://sts.windows.net/{TID}/")),
            tid: Some(TID.to_string()),
            oid: Some(OID.to_string()),
            appid: Some("bbbbbbbb-0000-0000-0000-000000000001".to_string()),
            exp: Some(NOW + 3_000),
            iat: Some(NOW - 600),
            nbf: Some(NOW - 600),
            ..Claims::default()
        }
    }

    fn ctx<'a>(host: &'a str, token: Option<&'a Claims>) -> Context<'a> {
        let (cloud, kind) = Cloud::of_host(host)
            .map(|(c, k)| (c, Some(k)))
            .unwrap_or((Cloud::Public, None));
        Context {
            backend: "primary",
            host,
            cloud,
            host_kind: kind,
            expected_audience: kind.map(|k| cloud.audience_for(k)).unwrap_or(COG),
            token,
            expected_tenant: None,
            deployment: Some("gpt-4o"),
            known_deployments: &[],
            request_path: Some("/openai/deployments/gpt-4o/chat/completions"),
            endpoint_path: "/",
            api_version: Some("2024-10-21"),
            now: NOW,
        }
    }

    fn run(status: u16, body: &str, ctx: &Context<'_>) -> Diagnosis {
        classify(status, None, body.as_bytes(), ctx).expect("a diagnosis")
    }

    #[test]
    fn codes_are_kebab_case_and_serialize_the_same_way() {
        for code in DiagnosisCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert!(
                code.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'-')
            );
        }
        assert_eq!(
            DiagnosisCode::AudienceMismatch.as_str(),
            "audience-mismatch"
        );
        assert_eq!(
            DiagnosisCode::RegionalEndpoint.as_str(),
            "regional-endpoint"
        );
    }

    #[test]
    fn arm_token_gets_audience_mismatch_naming_both_audiences_and_the_scope() {
        let c = claims("https://management.azure.com");
        let d = run(401, TOKEN_401, &ctx("myres.openai.azure.com", Some(&c)));
        assert_eq!(d.code, DiagnosisCode::AudienceMismatch);
        assert!(d.summary.contains("token aud https://management.azure.com"));
        assert!(
            d.summary
                .contains("backend needs https://cognitiveservices.azure.com")
        );
        assert!(d.summary.contains("Azure Resource Manager token"));
        assert!(
            d.fix
                .starts_with("request scope https://cognitiveservices.azure.com/.default")
        );
        assert!(d.fix.contains("az account get-access-token --scope"));
        let h = d.header_value();
        assert!(h.starts_with(
            "audience-mismatch: token aud https://management.azure.com, backend needs \
             https://cognitiveservices.azure.com"
        ));
        assert!(h.contains("; fix: request scope https://cognitiveservices.azure.com/.default"));
        assert_eq!(
            d.token.unwrap().aud.as_deref(),
            Some("https://management.azure.com")
        );
    }

    #[test]
    fn variant_without_comma_is_recognised_too() {
        let c = claims("https://ai.azure.com");
        let d = run(
            401,
            TOKEN_401_NO_COMMA,
            &ctx("myres.openai.azure.com", Some(&c)),
        );
        assert_eq!(d.code, DiagnosisCode::AudienceMismatch);
        assert!(d.summary.contains("Azure AI Foundry"), "{}", d.summary);
        assert!(d.summary.contains("https://ai.azure.com"));
    }

    #[test]
    fn token_for_another_cloud_is_called_wrong_cloud() {
        let c = claims("https://cognitiveservices.azure.us");
        let d = run(401, TOKEN_401, &ctx("myres.openai.azure.com", Some(&c)));
        assert_eq!(d.code, DiagnosisCode::AudienceMismatch);
        assert!(d.summary.contains("wrong cloud"), "{}", d.summary);
        assert!(d.summary.contains("US Government cloud"));
        assert!(d.summary.contains("backend is in the public cloud"));
        assert!(d.fix.contains("from https://login.microsoftonline.com"));
    }

    #[test]
    fn audience_named_by_azure_wins_over_the_configured_one() {
        // The backend was configured for ai.azure.com, Azure says it wants cognitiveservices.
        let c = claims("https://ai.azure.com");
        let mut x = ctx("myres.services.ai.azure.com", Some(&c));
        x.expected_audience = "https://ai.azure.com";
        let d = run(401, TOKEN_401, &x);
        assert_eq!(d.code, DiagnosisCode::AudienceMismatch);
        assert!(
            d.summary
                .contains("backend needs https://cognitiveservices.azure.com")
        );
        assert!(
            d.summary
                .contains("configured audience https://ai.azure.com")
        );
        assert!(d.fix.contains(
            "set backend primary's scope to https://cognitiveservices.azure.com/.default"
        ));
    }

    #[test]
    fn expired_token_gets_token_expired_saying_when() {
        let mut c = claims(COG);
        c.exp = Some(NOW - 3 * 3_600);
        let d = run(401, TOKEN_401, &ctx("myres.openai.azure.com", Some(&c)));
        assert_eq!(d.code, DiagnosisCode::TokenExpired);
        assert!(d.summary.contains("expired 3 h ago"), "{}", d.summary);
        assert!(d.summary.contains("2025-01-02 07:00:00 UTC"));
        assert!(d.fix.contains("fresh token"));
    }

    #[test]
    fn wrong_audience_and_expired_reports_the_audience_and_mentions_expiry() {
        let mut c = claims("https://management.azure.com/");
        c.exp = Some(NOW - 120);
        let d = run(401, TOKEN_401, &ctx("myres.openai.azure.com", Some(&c)));
        assert_eq!(d.code, DiagnosisCode::AudienceMismatch);
        assert!(d.summary.contains("also expired 2 min ago"));
    }

    #[test]
    fn token_from_another_tenant_gets_wrong_tenant() {
        let mut c = claims(COG);
        c.tid = Some(OTHER_TID.to_string());
        let mut x = ctx("myres.openai.azure.com", Some(&c));
        x.expected_tenant = Some(TID);
        let d = run(401, TOKEN_401, &x);
        assert_eq!(d.code, DiagnosisCode::WrongTenant);
        assert!(d.summary.contains(OTHER_TID));
        assert!(d.summary.contains(TID));
        assert!(d.fix.contains(&format!("--tenant {TID}")));
    }

    #[test]
    fn token_that_looks_fine_is_not_blamed_on_a_cause_the_claims_do_not_show() {
        let c = claims(COG);
        let mut x = ctx("myres.openai.azure.com", Some(&c));
        x.expected_tenant = Some(TID);
        let d = run(401, TOKEN_401, &x);
        assert_eq!(d.code, DiagnosisCode::TokenRejected);
        assert!(d.summary.contains("looked valid"));
        assert!(
            d.summary
                .contains("may have been revoked or signed for another tenant")
        );
        assert!(d.summary.contains(&format!("may not be in tenant {TID}")));
    }

    #[test]
    fn refused_token_without_claims_says_no_token_was_readable() {
        let d = run(401, TOKEN_401, &ctx("myres.openai.azure.com", None));
        assert_eq!(d.code, DiagnosisCode::TokenRejected);
        assert!(d.summary.contains("no readable bearer token"));
        assert!(
            d.fix
                .contains("https://cognitiveservices.azure.com/.default")
        );
        assert!(d.token.is_none());
    }

    #[test]
    fn future_nbf_gets_not_yet_valid() {
        let mut c = claims(COG);
        c.nbf = Some(NOW + 600);
        let d = run(401, TOKEN_401, &ctx("myres.openai.azure.com", Some(&c)));
        assert_eq!(d.code, DiagnosisCode::TokenNotYetValid);
        assert!(d.summary.contains("in 10 min"));
    }

    #[test]
    fn invalid_key_with_a_key_says_the_key_or_endpoint_is_wrong() {
        let d = run(401, INVALID_KEY_401, &ctx("myres.openai.azure.com", None));
        assert_eq!(d.code, DiagnosisCode::InvalidKey);
        assert!(d.summary.contains("key is wrong"));
        assert!(d.fix.contains("Entra ID"));
        assert!(d.fix.contains("https://myres.openai.azure.com"));
    }

    #[test]
    fn invalid_key_answer_to_a_bearer_points_at_the_endpoint() {
        let c = claims(COG);
        let d = run(401, INVALID_KEY_401, &ctx("proxy.contoso.com", Some(&c)));
        assert_eq!(d.code, DiagnosisCode::InvalidKey);
        assert!(d.summary.contains("wrong API endpoint"));
        assert!(d.fix.contains("https://<name>.openai.azure.com"));
    }

    #[test]
    fn key_auth_disabled_says_disable_local_auth_and_bearer() {
        let d = run(401, KEY_DISABLED_401, &ctx("myres.openai.azure.com", None));
        assert_eq!(d.code, DiagnosisCode::KeyAuthDisabled);
        assert!(d.summary.contains("disableLocalAuth"));
        assert!(d.fix.contains("bearer token"));
    }

    #[test]
    fn permission_denied_as_403_names_principal_role_and_command() {
        let c = claims(COG);
        let d = run(
            403,
            PERMISSION_DENIED,
            &ctx("myres.openai.azure.com", Some(&c)),
        );
        assert_eq!(d.code, DiagnosisCode::MissingRole);
        assert!(d.summary.contains(&format!("principal {OID}")));
        assert!(d.summary.contains(
            "Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action"
        ));
        assert!(
            d.summary
                .contains("(app bbbbbbbb-0000-0000-0000-000000000001)")
        );
        assert!(d.fix.contains("\"Cognitive Services OpenAI User\""));
        assert!(d.header_value().contains("--query id -o tsv)"));
        assert!(d.fix.contains("5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"));
        assert!(d.fix.contains(&format!(
            "az role assignment create --assignee {OID} --role \"Cognitive Services OpenAI User\" --scope"
        )));
        assert!(d.fix.contains("--name myres"));
        assert!(
            d.fix
                .contains("Cognitive Services Contributor and subscription Owner are not enough")
        );
        assert!(d.fix.contains("several minutes"));
    }

    #[test]
    fn permission_denied_to_a_users_delegated_token_names_the_user_and_their_groups() {
        let mut c = claims(COG);
        c.scp = Some("user_impersonation".into());
        let d = run(
            403,
            PERMISSION_DENIED,
            &ctx("myres.openai.azure.com", Some(&c)),
        );
        assert_eq!(d.code, DiagnosisCode::MissingRole);
        assert!(
            d.summary.starts_with(&format!("user {OID}")),
            "{}",
            d.summary
        );
        assert!(d.summary.contains("on their behalf"), "{}", d.summary);
        assert!(d.fix.contains("to a group the user is in"), "{}", d.fix);
        assert!(d.fix.contains(&format!("--assignee {OID}")));
    }

    #[test]
    fn permission_denied_as_401_is_still_missing_role() {
        let d = run(
            401,
            PERMISSION_DENIED,
            &ctx("myres.cognitiveservices.azure.com", None),
        );
        assert_eq!(d.code, DiagnosisCode::MissingRole);
        assert!(d.fix.contains(&format!("--assignee {OID}")));
        assert!(d.fix.contains("Cognitive Services OpenAI User"));
    }

    #[test]
    fn permission_denied_on_foundry_names_azure_ai_user() {
        let body = r#"{"error":{"code":"PermissionDenied","message":"The principal `x` lacks the required data action `Microsoft.CognitiveServices/accounts/AIServices/agents/write` to perform `POST /api/projects/{projectName}/assistants` operation."}}"#;
        let d = run(403, body, &ctx("proj.services.ai.azure.com", None));
        assert_eq!(d.code, DiagnosisCode::MissingRole);
        assert!(d.fix.contains("\"Azure AI User\""));
        assert!(d.fix.contains("--assignee x"));
    }

    #[test]
    fn permission_denied_on_a_private_name_with_the_foundry_audience_names_azure_ai_user() {
        // A private DNS name (or the emulator): the backend's audience says it is Foundry.
        let mut x = ctx("ai-proxy.internal.contoso.com", None);
        x.expected_audience = "https://ai.azure.com";
        let d = run(403, PERMISSION_DENIED, &x);
        assert_eq!(d.code, DiagnosisCode::MissingRole);
        assert!(d.fix.contains("\"Azure AI User\""), "{}", d.fix);
        assert!(d.fix.contains("53ca6127-db72-4b80-b1b0-d745d6d5456d"));
        // The same host with the cognitiveservices audience stays Azure OpenAI.
        let d = run(
            403,
            PERMISSION_DENIED,
            &ctx("ai-proxy.internal.contoso.com", None),
        );
        assert!(d.fix.contains("\"Cognitive Services OpenAI User\""));
    }

    #[test]
    fn permission_denied_without_principal_falls_back_to_the_token_oid() {
        let c = claims(COG);
        let body = r#"{"error":{"code":"PermissionDenied","message":"Principal does not have access to API/Operation."}}"#;
        let d = run(401, body, &ctx("myres.openai.azure.com", Some(&c)));
        assert_eq!(d.code, DiagnosisCode::MissingRole);
        assert!(d.fix.contains(&format!("--assignee {OID}")));
    }

    #[test]
    fn speech_data_action_names_cognitive_services_user() {
        let body = r#"{"error":{"code":"PermissionDenied","message":"The principal `p` lacks the required data action `Microsoft.CognitiveServices/accounts/SpeechServices/speechrest/write` to perform `POST` operation."}}"#;
        let d = run(403, body, &ctx("myres.cognitiveservices.azure.com", None));
        assert!(d.fix.contains("\"Cognitive Services User\""));
    }

    #[test]
    fn public_access_disabled_names_the_private_dns_zone() {
        let d = run(
            403,
            PUBLIC_DISABLED_403,
            &ctx("myres.openai.azure.com", None),
        );
        assert_eq!(d.code, DiagnosisCode::PublicAccessDisabled);
        assert!(d.fix.contains("VNet"));
        assert!(d.fix.contains("myres.openai.azure.com resolves"));
        assert!(d.fix.contains("privatelink.openai.azure.com"));
        let d = run(
            403,
            PUBLIC_DISABLED_403,
            &ctx("myres.cognitiveservices.azure.com", None),
        );
        assert!(d.fix.contains("privatelink.cognitiveservices.azure.com"));
        let d = run(403, PUBLIC_DISABLED_403, &ctx("127.0.0.1", None));
        assert!(
            d.fix
                .contains("privatelink.openai.azure.com / privatelink.cognitiveservices.azure.com")
        );
    }

    #[test]
    fn unapproved_private_endpoint_gets_not_private_endpoint() {
        let d = run(403, NOT_PE_403, &ctx("myres.openai.azure.com", None));
        assert_eq!(d.code, DiagnosisCode::NotPrivateEndpoint);
        assert!(d.fix.contains("approved private endpoint"));
    }

    #[test]
    fn deployment_not_found_lists_the_backend_deployments() {
        let known = vec!["chat".to_string(), "embed".to_string()];
        let mut x = ctx("myres.openai.azure.com", None);
        x.deployment = Some("nope");
        x.known_deployments = &known;
        let d = run(404, DEPLOYMENT_404, &x);
        assert_eq!(d.code, DiagnosisCode::DeploymentNotFound);
        assert!(d.summary.contains("`nope`"));
        assert!(
            d.fix
                .contains("deployment names are case-sensitive; this backend has: chat, embed")
        );
    }

    #[test]
    fn deployment_near_misses_are_spotted() {
        let known = vec!["GPT-4o-Prod".to_string(), "gpt-35-turbo".to_string()];
        let mut x = ctx("myres.openai.azure.com", None);
        x.known_deployments = &known;
        for (asked, hint) in [
            (
                "gpt-4o-prod",
                "did you mean `GPT-4o-Prod`? `gpt-4o-prod` differs only in letter case",
            ),
            ("azure/gpt-35-turbo", "drop the `azure/` prefix"),
            ("gpt-3.5-turbo", "did you mean `gpt-35-turbo`?"),
            ("gpt-4o", "looks like a model name"),
        ] {
            x.deployment = Some(asked);
            let d = run(404, DEPLOYMENT_404, &x);
            assert!(d.fix.contains(hint), "{asked}: {}", d.fix);
        }
        x.deployment = Some("gpt-4o");
        let d = run(404, DEPLOYMENT_404, &x);
        assert!(d.fix.contains("(perhaps `GPT-4o-Prod`)"), "{}", d.fix);
    }

    #[test]
    fn resource_not_found_without_api_version_is_api_version() {
        let mut x = ctx("myres.openai.azure.com", None);
        x.api_version = None;
        let d = run(404, RESOURCE_404, &x);
        assert_eq!(d.code, DiagnosisCode::ApiVersion);
        assert!(d.summary.contains("no api-version"));
        assert!(d.fix.contains("api-version=2024-10-21"));
    }

    #[test]
    fn resource_not_found_blames_the_endpoint_only_when_the_endpoint_is_at_fault() {
        // A resource base as the endpoint: the client's path is wrong, and the fix says so.
        let mut x = ctx("myres.openai.azure.com", None);
        let d = run(404, RESOURCE_404, &x);
        assert!(
            d.summary.contains("is not the Azure OpenAI"),
            "{}",
            d.summary
        );
        assert!(
            d.fix.contains("set backend primary's endpoint"),
            "{}",
            d.fix
        );
        x.request_path = Some("/openai/chat/completions");
        let d = run(404, RESOURCE_404, &x);
        assert_eq!(d.code, DiagnosisCode::ResourceNotFound);
        assert!(
            d.summary.contains("the request's path is wrong"),
            "{}",
            d.summary
        );
        assert!(
            d.fix.contains("/openai/deployments/<deployment>/"),
            "{}",
            d.fix
        );
        assert!(!d.fix.contains("endpoint"), "{}", d.fix);
        x.request_path = Some("/openai/openai/deployments/gpt-4o/chat/completions");
        assert!(run(404, RESOURCE_404, &x).fix.contains("/openai twice"));
        // An endpoint with a path of its own: the endpoint.
        x.endpoint_path = "/aoai";
        let d = run(404, RESOURCE_404, &x);
        assert!(d.summary.contains("has the path /aoai"), "{}", d.summary);
        assert!(
            d.fix
                .contains("resource base https://myres.openai.azure.com with no path")
        );
        // doctor's own probe (a path Azure has): the endpoint is not the resource.
        let mut x = ctx("127.0.0.1", None);
        x.request_path = None;
        let d = run(404, RESOURCE_404, &x);
        assert!(
            d.fix.contains("https://<name>.openai.azure.com"),
            "{}",
            d.fix
        );
    }

    #[test]
    fn unsupported_api_version_is_api_version() {
        let mut x = ctx("myres.openai.azure.com", None);
        x.api_version = Some("2023-03-15-preview");
        let d = run(400, API_VERSION_400, &x);
        assert_eq!(d.code, DiagnosisCode::ApiVersion);
        assert!(d.summary.contains("api-version 2023-03-15-preview"));
        assert!(d.summary.contains("API version not supported"));
        let other = r#"{"error":{"code":"BadRequest","message":"Unsupported API version"}}"#;
        assert_eq!(run(400, other, &x).code, DiagnosisCode::ApiVersion);
    }

    #[test]
    fn key_request_answer_gets_regional_endpoint() {
        let d = run(400, KEY_REQUIRED_400, &ctx("myres.openai.azure.com", None));
        assert_eq!(d.code, DiagnosisCode::RegionalEndpoint);
        assert!(d.summary.contains("custom-subdomain"));
        assert!(
            d.summary
                .contains("https://<region>.api.cognitive.microsoft.com")
        );
        assert!(d.fix.contains("--custom-domain"));
    }

    #[test]
    fn auth_failures_on_regional_hosts_get_regional_endpoint() {
        let c = claims(COG);
        let x = ctx("eastus.api.cognitive.microsoft.com", Some(&c));
        for (status, body) in [
            (401, INVALID_KEY_401),
            (401, TOKEN_401),
            (401, "Unauthorized"),
            (400, KEY_REQUIRED_400),
        ] {
            let d = run(status, body, &x);
            assert_eq!(d.code, DiagnosisCode::RegionalEndpoint, "{body}");
            assert!(
                d.summary
                    .contains("eastus.api.cognitive.microsoft.com is a shared regional endpoint")
            );
        }
        // Not an auth problem: not blamed on the endpoint.
        assert_eq!(
            run(404, RESOURCE_404, &x).code,
            DiagnosisCode::ResourceNotFound
        );
    }

    #[test]
    fn throttled_takes_the_wait_from_header_ms_or_body() {
        let x = ctx("myres.openai.azure.com", None);
        let d = classify(429, Some("20"), THROTTLED_429.as_bytes(), &x).unwrap();
        assert_eq!(d.code, DiagnosisCode::Throttled);
        assert!(d.summary.contains("retry after 20 s"), "{}", d.summary);
        assert!(d.fix.starts_with("wait 20 s"));
        let d = classify(429, Some("1500ms"), b"", &x).unwrap();
        assert!(d.summary.contains("retry after 2 s"), "{}", d.summary);
        let d = classify(429, Some("250ms"), b"", &x).unwrap();
        assert!(d.summary.contains("retry after 250 ms"));
        let d = classify(429, None, THROTTLED_429.as_bytes(), &x).unwrap();
        assert!(d.summary.contains("retry after 6 s"), "{}", d.summary);
        let d = classify(429, None, b"Too Many Requests", &x).unwrap();
        assert!(d.summary.contains("did not say how long"));
        let d = classify(429, Some("Thu, 02 Jan 2025 10:01:00 GMT"), b"", &x).unwrap();
        assert!(d.summary.contains("retry after 1 min"), "{}", d.summary);
    }

    #[test]
    fn apim_shape_and_plain_text_and_garbage_do_not_panic() {
        let x = ctx("myres.openai.azure.com", None);
        let apim = r#"{"statusCode":401,"message":"Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription."}"#;
        let d = run(401, apim, &x);
        assert_eq!(d.code, DiagnosisCode::InvalidKey);
        assert!(d.summary.contains("API Management"));
        let apim_jwt =
            r#"{"statusCode":401,"message":"Unauthorized. Access token is missing or invalid."}"#;
        assert_eq!(run(401, apim_jwt, &x).code, DiagnosisCode::TokenRejected);
        let plain = "Public access is disabled. Please configure private endpoint.";
        assert_eq!(
            run(403, plain, &x).code,
            DiagnosisCode::PublicAccessDisabled
        );
        for garbage in [
            &b"\xff\xfe\x00{"[..],
            b"",
            b"null",
            b"[1,2]",
            b"{\"error\":42}",
            b"{\"error\":{\"code\":[],\"message\":{}}}",
            b"audience is incorrect (",
            b"principal `unterminated",
            b"retry after 99999999999999999999999999 seconds",
        ] {
            for status in [400, 401, 403, 404, 429, 500] {
                let _ = classify(status, Some("nonsense"), garbage, &x);
            }
        }
    }

    #[test]
    fn unrecognised_answers_get_none() {
        let x = ctx("myres.openai.azure.com", None);
        assert!(classify(200, None, TOKEN_401.as_bytes(), &x).is_none());
        assert!(
            classify(
                500,
                None,
                b"{\"error\":{\"code\":\"InternalServerError\",\"message\":\"boom\"}}",
                &x
            )
            .is_none()
        );
        assert!(
            classify(
                400,
                None,
                b"{\"error\":{\"code\":\"content_filter\",\"message\":\"filtered\"}}",
                &x
            )
            .is_none()
        );
        assert!(classify(403, None, b"Forbidden", &x).is_none());
        // A bare 401 with a token that shows nothing wrong: no guess.
        let c = claims(COG);
        assert!(classify(401, None, b"", &ctx("myres.openai.azure.com", Some(&c))).is_none());
        // ...but one whose token is provably for the wrong audience is explained.
        let c = claims("https://management.azure.com");
        let d = classify(401, None, b"", &ctx("myres.openai.azure.com", Some(&c))).unwrap();
        assert_eq!(d.code, DiagnosisCode::AudienceMismatch);
    }

    #[test]
    fn header_value_is_one_ascii_line_capped_at_1024() {
        let body = "{\"error\":{\"code\":\"PermissionDenied\",\"message\":\"The principal `a\\r\\nb\u{2014}c` lacks the required data action `X` to perform `Y` operation.\"}}";
        let c = claims(COG);
        let d = run(403, body, &ctx("myres.openai.azure.com", Some(&c)));
        let h = d.header_value();
        assert!(h.len() <= 1024);
        assert!(h.bytes().all(|b| (0x20..0x7f).contains(&b)), "{h}");
        assert!(h.starts_with("missing-role: principal a b-c"));
        assert!(http::HeaderValue::from_str(&h).is_ok());
    }

    #[test]
    fn only_a_refused_token_with_the_right_audience_is_worth_refreshing() {
        let right = claims(COG);
        let arm = claims("https://management.azure.com");
        let yes = |status: u16, body: &str, c: Option<&Claims>| {
            refresh_may_help(status, body.as_bytes(), COG, c)
        };
        // Revoked or rotated: a new token may well be accepted.
        assert!(yes(401, TOKEN_401, Some(&right)));
        assert!(yes(401, TOKEN_401, None));
        assert!(yes(401, "Unauthorized", Some(&right)));
        // A new token for the same scope has the same wrong audience.
        assert!(!yes(401, TOKEN_401, Some(&arm)));
        let foundry_401 = TOKEN_401.replace(COG, "https://ai.azure.com");
        assert!(!yes(401, &foundry_401, Some(&right)));
        // The token was fine: roles, keys and endpoints are not fixed by a new one.
        for body in [PERMISSION_DENIED, INVALID_KEY_401, KEY_DISABLED_401] {
            assert!(!yes(401, body, Some(&right)), "{body}");
        }
        assert!(!yes(403, TOKEN_401, Some(&right)));
    }

    #[test]
    fn token_facts_carry_only_the_named_claims() {
        let mut c = claims(COG);
        c.upn = Some("alice@contoso.com".to_string());
        let f = TokenFacts::from(&c);
        assert_eq!(
            f,
            TokenFacts {
                aud: Some(COG.to_string()),
                tid: Some(TID.to_string()),
                oid: Some(OID.to_string()),
                appid: Some("bbbbbbbb-0000-0000-0000-000000000001".to_string()),
                exp: Some(NOW + 3_000),
            }
        );
        let json = serde_json::to_string(&f).unwrap();
        assert!(!json.contains("alice"));
    }
}
