//! `entra-proxy explain`: reads a pasted token and says who it is, what it is for, and whether a target accepts it.

use super::azure_error::DiagnosisCode;
use super::{when, words};
use crate::claims::{self, Claims, DecodeError, JwtHeader};
use crate::cloud::{self, AudienceKind, Cloud, HostKind};
use serde::Serialize;
use std::fmt::Write as _;

/// The family of Azure AI endpoint a token is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// `*.openai.azure.com` and `*.cognitiveservices.azure.com` (and the regional endpoints).
    CognitiveServices,
    /// `*.services.ai.azure.com`.
    Foundry,
}

/// What the token should work for.
#[derive(Debug, Clone)]
pub struct Target {
    pub kind: TargetKind,
    pub cloud: Cloud,
    /// The resource's tenant id, when known.
    pub tenant: Option<String>,
}

/// Everything `explain` read off a token, and its verdict. Holds claims, never the token or its
/// signature.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub header: JwtHeader,
    pub claims: Claims,
    /// Who the token speaks for, in plain words.
    pub who: String,
    pub audience: Option<String>,
    pub tenant: Option<String>,
    pub issued_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    /// Whether the target accepts the token, as far as its claims tell. Azure still checks the
    /// signature and the principal's role on the resource.
    pub accepted: bool,
    pub problems: Vec<Problem>,
    /// The exact way to get a token the target accepts; `None` when it already does.
    pub fix: Option<String>,
}

/// One reason the target would refuse the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub code: DiagnosisCode,
    pub message: String,
}

/// Input `explain` cannot read. Messages describe the input's shape, never its content: it may
/// be a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    #[error(
        "no token given: paste a JWT, `Bearer <jwt>`, an `Authorization: Bearer <jwt>` line, or a \
         token-endpoint JSON response"
    )]
    Empty,
    #[error("not a JWT (given {given}): {source}")]
    NotJwt {
        given: String,
        #[source]
        source: DecodeError,
    },
    #[error(
        "this looks like {}, not an access token: {}",
        .0.what(),
        .0.advice()
    )]
    NotAToken(Credential),
    #[error(
        "this is an encrypted token (JWE, five parts): only the service it was issued for can \
         read its claims"
    )]
    Encrypted,
    #[error(
        "the JSON has no access_token or accessToken string (found {keys}); expected a \
         token-endpoint response such as {{\"access_token\":\"eyJ...\",\"expires_in\":3599}} or \
         the output of az account get-access-token"
    )]
    NoAccessToken { keys: String },
    #[error("the JSON is a token-endpoint error, not a token: {error}: {description}")]
    TokenEndpointError { error: String, description: String },
    #[error(
        "the input starts with '{{' but is not valid JSON ({0}); expected a token-endpoint \
         response such as {{\"access_token\":\"eyJ...\"}}"
    )]
    Json(String),
}

/// A credential that is not an access token, told by its shape alone (never by what it holds
/// beyond that), with what to do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// `ep-…`: a key `entra-proxy keys new` made.
    ProxyKey,
    /// An Azure AI resource key of the older form: 32 hexadecimal characters.
    AzureKey,
    /// An Azure AI resource key of the newer form: 84 characters with Azure's `JQQJ9` mark at
    /// position 52.
    AzureKeyLong,
    /// An Entra ID client secret: `xxx8Q~…` (or `7Q~` before 2023), 37 to 40 characters.
    ClientSecret,
    /// `sk-…`: OpenAI's own.
    OpenAiKey,
    /// Some other API key (20 or more letters and digits).
    ApiKey,
}

impl Credential {
    /// A stable name (`explain --json`'s `credential`).
    pub fn name(self) -> &'static str {
        match self {
            Credential::ProxyKey => "proxy-key",
            Credential::AzureKey | Credential::AzureKeyLong => "azure-resource-key",
            Credential::ClientSecret => "client-secret",
            Credential::OpenAiKey => "openai-key",
            Credential::ApiKey => "api-key",
        }
    }

    /// What it is.
    pub fn what(self) -> &'static str {
        match self {
            Credential::ProxyKey => {
                "a key this proxy issued (ep-…, made by `entra-proxy keys new`)"
            }
            Credential::AzureKey => "an Azure resource key (32 hexadecimal characters)",
            Credential::AzureKeyLong => "an Azure resource key (84 characters, the newer form)",
            Credential::ClientSecret => {
                "an Entra ID client secret (the Value of an app registration's secret)"
            }
            Credential::OpenAiKey => "an OpenAI API key",
            Credential::ApiKey => "an API key",
        }
    }

    /// What to do with it.
    pub fn advice(self) -> &'static str {
        match self {
            Credential::ProxyKey => {
                "send it to the proxy as `api-key: KEY` or `Authorization: Bearer KEY`; the proxy checks it against the sha256 of its [[keys]] (`entra-proxy keys hash --name NAME < key` prints the block a key matches) and never sends it to Azure"
            }
            Credential::AzureKey | Credential::AzureKeyLong => {
                "Azure takes it only as `api-key` and only while the resource allows key auth; to keep clients on it while the resource turns key auth off, give it to the proxy as a legacy key (`entra-proxy keys hash --legacy --name NAME < key`); if it leaked, regenerate it (`az cognitiveservices account keys regenerate`)"
            }
            Credential::ClientSecret => {
                "it is the app's password for Entra ID: set it as [identity] client_secret (or send it as a client-credentials caller), or get a token with it (`az login --service-principal -u CLIENT_ID -p SECRET --tenant TENANT`, then `az account get-access-token --scope https://cognitiveservices.azure.com/.default`); if it leaked, rotate it (`az ad app credential reset --id CLIENT_ID`)"
            }
            Credential::OpenAiKey => {
                "it works with api.openai.com only; Azure OpenAI takes an Entra ID token or the resource's own key"
            }
            Credential::ApiKey => {
                "explain reads Entra ID access tokens (JWTs, which start with eyJ)"
            }
        }
    }

    /// The credential `token` is shaped like, if any.
    fn recognise(token: &str) -> Option<Credential> {
        let b = token.as_bytes();
        let url_unreserved =
            |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~');
        if let Some(rest) = token.strip_prefix("ep-")
            && rest.len() >= 20
            && rest
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return Some(Credential::ProxyKey);
        }
        if (37..=40).contains(&b.len())
            && matches!(&b[3..6], b"8Q~" | b"7Q~")
            && b.iter().all(url_unreserved)
        {
            return Some(Credential::ClientSecret);
        }
        if b.len() == 32 && b.iter().all(u8::is_ascii_hexdigit) {
            return Some(Credential::AzureKey);
        }
        if b.len() == 84 && &b[52..57] == b"JQQJ9" && b.iter().all(u8::is_ascii_alphanumeric) {
            return Some(Credential::AzureKeyLong);
        }
        if token.starts_with("sk-") && !token.contains('.') {
            return Some(Credential::OpenAiKey);
        }
        if b.len() >= 20 && b.iter().all(u8::is_ascii_alphanumeric) {
            return Some(Credential::ApiKey);
        }
        None
    }
}

impl ExplainError {
    /// The kind of credential the input was instead of a token, if it was one.
    pub fn credential(&self) -> Option<Credential> {
        match self {
            ExplainError::NotAToken(c) => Some(*c),
            _ => None,
        }
    }
}

/// Client ids of Microsoft's own tools, to say "via Azure CLI" rather than a bare GUID.
const KNOWN_CLIENTS: [(&str, &str); 2] = [
    ("04b07795-8ddb-461a-bbee-02f9e1bf7b46", "Azure CLI"),
    ("1950a258-227b-4e31-a9cf-717495945fc2", "Azure PowerShell"),
];
/// Microsoft Graph's resource: a common wrong audience.
const GRAPH_AUDIENCES: [&str; 2] = [
    "https://graph.microsoft.com",
    "00000003-0000-0000-c000-000000000000",
];
/// Longest quoted piece of a token-endpoint error description.
const MAX_DESCRIPTION_LEN: usize = 300;

impl TargetKind {
    fn audience_kind(self) -> AudienceKind {
        match self {
            TargetKind::CognitiveServices => AudienceKind::CognitiveServices,
            TargetKind::Foundry => AudienceKind::Foundry,
        }
    }
}

impl From<HostKind> for TargetKind {
    fn from(kind: HostKind) -> Self {
        match kind {
            HostKind::OpenAi | HostKind::CognitiveServices | HostKind::Regional => {
                TargetKind::CognitiveServices
            }
            HostKind::Foundry => TargetKind::Foundry,
        }
    }
}

impl Target {
    /// The target an Azure AI host stands for, e.g. `myres.openai.azure.com` → Cognitive
    /// Services in the public cloud. `None` for hosts of no known cloud.
    pub fn for_host(host: &str) -> Option<Target> {
        Cloud::of_host(host).map(|(cloud, kind)| Target {
            kind: kind.into(),
            cloud,
            tenant: None,
        })
    }

    /// The audience the target accepts, e.g. `https://cognitiveservices.azure.com`.
    pub fn audience(&self) -> &'static str {
        match self.kind {
            TargetKind::CognitiveServices => self.cloud.cognitive_audience(),
            TargetKind::Foundry => self.cloud.foundry_audience(),
        }
    }

    fn hosts(&self) -> String {
        words::family_hosts(self.kind.audience_kind(), self.cloud)
    }
}

/// Finds the token in what a user pasted: a bare JWT; `Bearer <jwt>`; `Authorization: Bearer
/// <jwt>` (any case, surrounding whitespace and line breaks, a token wrapped over lines); or a
/// token-endpoint JSON response with `access_token` (or `accessToken`, as `az account
/// get-access-token` prints it). The result is checked to decode as a JWT.
pub fn extract_token(input: &str) -> Result<String, ExplainError> {
    let text = input.trim_start_matches('\u{feff}').trim();
    if text.is_empty() {
        return Err(ExplainError::Empty);
    }
    if text.starts_with('{') {
        return from_token_response(text);
    }
    let mut value = text;
    if let Some(rest) = strip_prefix_ci(value, "authorization:") {
        value = rest.trim_start();
    }
    if let Some(rest) = strip_prefix_ci(value, "bearer")
        && (rest.is_empty() || rest.starts_with(char::is_whitespace))
    {
        value = rest.trim_start();
    }
    let value = value.trim_matches(|c| c == '"' || c == '\'');
    let token: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    checked(token)
}

/// Reads a pasted token and judges it against `target` at unix time `now`.
pub fn explain(input: &str, target: &Target, now: i64) -> Result<Explanation, ExplainError> {
    let token = extract_token(input)?;
    let decoded = claims::decode_unverified(&token).map_err(|source| ExplainError::NotJwt {
        given: shape(&token),
        source,
    })?;
    let c = decoded.claims;
    let problems = problems(&c, target, now);
    let fix = fix_for(&problems, &c, target);
    Ok(Explanation {
        header: decoded.header,
        who: who(&c),
        audience: c.audience().map(str::to_string),
        tenant: c.tid.clone(),
        issued_at: c.iat,
        expires_at: c.exp,
        roles: c.roles.strings().to_vec(),
        scopes: c
            .scp
            .as_deref()
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
        accepted: problems.is_empty(),
        problems,
        fix,
        claims: c,
    })
}

/// A plain-words report: who, for what audience, which tenant, roles and scopes, issued and
/// expiry times at `utc_offset` and relative to `now`, then the verdict and the fix.
pub fn render_text(
    e: &Explanation,
    target: &Target,
    now: i64,
    utc_offset: time::UtcOffset,
) -> String {
    let none = || "(none)".to_string();
    let list = |v: &[String]| if v.is_empty() { none() } else { v.join(", ") };
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, "  {:<10} {}", format!("{label}:"), value);
    };
    line("Who", e.who.clone());
    line(
        "Audience",
        e.audience
            .clone()
            .unwrap_or_else(|| "(no aud claim)".to_string()),
    );
    line("Tenant", e.tenant.clone().unwrap_or_else(none));
    line("Issuer", e.claims.iss.clone().unwrap_or_else(none));
    line("Roles", list(&e.roles));
    line("Scopes", list(&e.scopes));
    line(
        "Issued",
        e.issued_at
            .map(|t| {
                let rel = when::relative(t, now);
                format!("{} ({rel})", when::local(t, utc_offset))
            })
            .unwrap_or_else(|| "(no iat claim)".to_string()),
    );
    line(
        "Expires",
        e.expires_at
            .map(|t| {
                let rel = if t > now {
                    format!("expires {}", when::relative(t, now))
                } else {
                    format!("expired {}", when::relative(t, now))
                };
                format!("{} ({rel})", when::local(t, utc_offset))
            })
            .unwrap_or_else(|| "(no exp claim)".to_string()),
    );
    line(
        "Signature",
        "not checked: explain reads the token without verifying it".to_string(),
    );
    let mut report = String::from("Token\n");
    report.push_str(&out);
    let _ = writeln!(
        report,
        "\nTarget:  {} in the {} cloud ({}), audience {}",
        words::family_label(target.kind.audience_kind()),
        words::cloud_label(target.cloud),
        target.hosts(),
        target.audience()
    );
    if let Some(t) = &target.tenant {
        let _ = writeln!(report, "         tenant {t}");
    }
    match e.problems.as_slice() {
        [] => {
            let _ = writeln!(
                report,
                "Verdict: accepted by {} (on its claims; Azure still checks the signature and \
                 that the principal holds a data-plane role on the resource)",
                target.audience()
            );
        }
        [only] => {
            let _ = writeln!(report, "Verdict: rejected — {}", only.message);
        }
        [first, rest @ ..] => {
            let _ = writeln!(report, "Verdict: rejected — {}", first.message);
            for p in rest {
                let _ = writeln!(report, "  also ({}): {}", p.code, p.message);
            }
        }
    }
    if let Some(fix) = &e.fix {
        let _ = writeln!(report, "Fix: {fix}");
    }
    report
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

fn from_token_response(text: &str) -> Result<String, ExplainError> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ExplainError::Json(e.to_string()))?;
    let Some(obj) = v.as_object() else {
        return Err(ExplainError::NoAccessToken {
            keys: "no JSON object".to_string(),
        });
    };
    let token = ["access_token", "accessToken"]
        .iter()
        .find_map(|k| obj.get(*k).and_then(serde_json::Value::as_str));
    if let Some(token) = token {
        let token: String = token.chars().filter(|c| !c.is_whitespace()).collect();
        return checked(token);
    }
    if let Some(error) = obj.get("error").and_then(serde_json::Value::as_str) {
        let description = obj
            .get("error_description")
            .and_then(serde_json::Value::as_str)
            .map(|d| words::one_line(d, MAX_DESCRIPTION_LEN))
            .unwrap_or_else(|| "(no error_description)".to_string());
        return Err(ExplainError::TokenEndpointError {
            error: words::one_line(error, 80),
            description,
        });
    }
    let mut keys: Vec<String> = obj
        .keys()
        .take(10)
        .map(|k| words::one_line(k, 40))
        .collect();
    if obj.len() > keys.len() {
        keys.push("...".to_string());
    }
    let keys = if keys.is_empty() {
        "an empty object".to_string()
    } else {
        format!("keys {}", keys.join(", "))
    };
    Err(ExplainError::NoAccessToken { keys })
}

/// The token, if it decodes as a JWT; otherwise why not, in words about its shape only.
fn checked(token: String) -> Result<String, ExplainError> {
    if token.is_empty() {
        return Err(ExplainError::Empty);
    }
    let dots = token.bytes().filter(|b| *b == b'.').count();
    if dots == 4 {
        return Err(ExplainError::Encrypted);
    }
    // Before the JWT check: a client secret may hold dots.
    if let Some(credential) = Credential::recognise(&token) {
        return Err(ExplainError::NotAToken(credential));
    }
    match claims::decode_unverified(&token) {
        Ok(_) => Ok(token),
        Err(source) => Err(ExplainError::NotJwt {
            given: shape(&token),
            source,
        }),
    }
}

/// What the input looked like, without any of its content.
fn shape(token: &str) -> String {
    let parts = token.split('.').count();
    format!(
        "{} characters in {parts} part{}",
        token.chars().count(),
        if parts == 1 { "" } else { "s" }
    )
}

fn who(c: &Claims) -> String {
    let oid = c.oid.as_deref().map(|o| format!("object {o}"));
    let app = c.app_id();
    if let Some(upn) = c.upn.as_deref().or(c.name.as_deref()) {
        let mut s = format!("user {upn}");
        if let Some(oid) = &oid {
            let _ = write!(s, " ({oid})");
        }
        if let Some(app) = app {
            match KNOWN_CLIENTS
                .iter()
                .find(|(id, _)| id.eq_ignore_ascii_case(app))
            {
                Some((_, tool)) => {
                    let _ = write!(s, " via {tool}");
                }
                None => {
                    let _ = write!(s, " via app {app}");
                }
            }
        }
        return s;
    }
    let app_words = match (app, &oid) {
        (Some(a), Some(o)) => format!("app {a} ({o})"),
        (Some(a), None) => format!("app {a}"),
        (None, Some(o)) => o.clone(),
        (None, None) => {
            return "unknown principal (no upn, oid or appid claim)".to_string();
        }
    };
    match c.xms_mirid.as_deref() {
        Some(mirid) => {
            let name = mirid.rsplit('/').next().unwrap_or(mirid);
            format!("managed identity {name}: {app_words}")
        }
        None => format!("managed identity / {app_words}"),
    }
}

fn problems(c: &Claims, target: &Target, now: i64) -> Vec<Problem> {
    let mut out = Vec::new();
    out.extend(audience_problem(c.audience(), target));
    match c.exp {
        None => out.push(Problem {
            code: DiagnosisCode::TokenExpired,
            message: "token has no exp claim: Entra tokens always carry one, and Azure refuses \
                      tokens without it"
                .to_string(),
        }),
        Some(exp) if exp <= now => out.push(Problem {
            code: DiagnosisCode::TokenExpired,
            message: format!(
                "token expired {} ({})",
                when::relative(exp, now),
                when::utc(exp)
            ),
        }),
        Some(_) => {}
    }
    if let Some(nbf) = c.nbf.filter(|nbf| *nbf > now) {
        out.push(Problem {
            code: DiagnosisCode::TokenNotYetValid,
            message: format!(
                "token is not valid yet: nbf {} ({}); this machine's clock or the issuer's is off",
                when::utc(nbf),
                when::relative(nbf, now)
            ),
        });
    }
    if let Some(want) = target.tenant.as_deref().filter(|t| is_guid(t)) {
        match c.tid.as_deref() {
            Some(tid) if tid.eq_ignore_ascii_case(want) => {}
            Some(tid) => out.push(Problem {
                code: DiagnosisCode::WrongTenant,
                message: format!("token is from tenant {tid}, target tenant is {want}"),
            }),
            None => out.push(Problem {
                code: DiagnosisCode::WrongTenant,
                message: format!("token has no tid claim, target tenant is {want}"),
            }),
        }
    }
    out.extend(issuer_problem(c, target));
    out
}

fn audience_problem(aud: Option<&str>, target: &Target) -> Option<Problem> {
    let want = target.audience();
    let hosts = target.hosts();
    let Some(aud) = aud else {
        return Some(Problem {
            code: DiagnosisCode::AudienceMismatch,
            message: format!("token has no aud claim; {hosts} need {want}"),
        });
    };
    if cloud::same_audience(aud, want) {
        return None;
    }
    let message = match Cloud::of_audience(aud) {
        Some((c, AudienceKind::Management)) => {
            let other_cloud = if c == target.cloud {
                String::new()
            } else {
                format!(" of the {} cloud", words::cloud_label(c))
            };
            format!(
                "this is an Azure Resource Manager token{other_cloud} (aud {aud}; az account \
                 get-access-token without --scope/--resource); {hosts} need {want}"
            )
        }
        Some((c, _)) if c != target.cloud => format!(
            "token is for the {} cloud, target is {}: aud {aud}, {hosts} need {want}",
            words::cloud_label(c),
            words::cloud_label(target.cloud)
        ),
        Some((_, kind)) => format!(
            "this token is for {} ({aud}); {hosts} need {want}",
            words::family_label(kind)
        ),
        None if GRAPH_AUDIENCES.iter().any(|g| cloud::same_audience(aud, g)) => {
            format!("this is a Microsoft Graph token (aud {aud}); {hosts} need {want}")
        }
        None => format!("token aud {aud} is not {want}, which {hosts} need"),
    };
    Some(Problem {
        code: DiagnosisCode::AudienceMismatch,
        message,
    })
}

/// The tenant an issuer of `cloud`'s Entra ID names: `{v1 host}/{tenant}/` or
/// `{authority}/{tenant}/v2.0`.
fn issuer_tenant(iss: &str, cloud: Cloud) -> Option<&str> {
    let forms = [
        (cloud.v1_issuer_host(), ""),
        (cloud.authority_host(), "v2.0"),
    ];
    forms.iter().find_map(|(host, tail)| {
        let rest = strip_prefix_ci(iss, host)?.strip_prefix('/')?;
        let (tenant, after) = rest.split_once('/').unwrap_or((rest, ""));
        (!tenant.is_empty() && after.trim_end_matches('/') == *tail).then_some(tenant)
    })
}

fn issuer_problem(c: &Claims, target: &Target) -> Option<Problem> {
    let problem = |message: String| {
        Some(Problem {
            code: DiagnosisCode::WrongIssuer,
            message,
        })
    };
    let Some(iss) = c.iss.as_deref() else {
        return problem("token has no iss claim".to_string());
    };
    if let Some(tenant) = issuer_tenant(iss, target.cloud) {
        return match c.tid.as_deref() {
            Some(tid) if !tid.eq_ignore_ascii_case(tenant) => problem(format!(
                "issuer {iss} names tenant {tenant}, but the tid claim is {tid}"
            )),
            _ => None,
        };
    }
    if let Some(other) = Cloud::ALL
        .into_iter()
        .find(|c| issuer_tenant(iss, *c).is_some())
    {
        return problem(format!(
            "token was issued by Entra ID of the {} cloud ({iss}), target is {}",
            words::cloud_label(other),
            words::cloud_label(target.cloud)
        ));
    }
    let tid = c.tid.as_deref().unwrap_or("<tenant>");
    problem(format!(
        "issuer {iss} is not Entra ID of the {} cloud (expected {}/{tid}/ or {}/{tid}/v2.0)",
        words::cloud_label(target.cloud),
        target.cloud.v1_issuer_host(),
        target.cloud.authority_host()
    ))
}

fn fix_for(problems: &[Problem], c: &Claims, target: &Target) -> Option<String> {
    if problems.is_empty() {
        return None;
    }
    let has = |code: DiagnosisCode| problems.iter().any(|p| p.code == code);
    let scope = cloud::scope_for_audience(target.audience());
    let mut parts = Vec::new();
    if has(DiagnosisCode::TokenNotYetValid) {
        parts.push("sync this machine's clock (NTP)".to_string());
    }
    let new_token = [
        DiagnosisCode::AudienceMismatch,
        DiagnosisCode::TokenExpired,
        DiagnosisCode::WrongTenant,
        DiagnosisCode::WrongIssuer,
    ]
    .into_iter()
    .any(has);
    if !new_token {
        return Some(parts.join("; then "));
    }
    let tenant = target
        .tenant
        .as_deref()
        .filter(|_| has(DiagnosisCode::WrongTenant));
    let mut s = String::new();
    if target.cloud != Cloud::Public || token_cloud(c).is_some_and(|tc| tc != target.cloud) {
        let cli_name = match target.cloud {
            Cloud::Public => "AzureCloud",
            Cloud::Usgov => "AzureUSGovernment",
            Cloud::China => "AzureChinaCloud",
        };
        let _ = write!(
            s,
            "sign in to the {} cloud (az cloud set --name {cli_name}; az login), then ",
            words::cloud_label(target.cloud)
        );
    }
    let only_lifetime = problems.iter().all(|p| {
        matches!(
            p.code,
            DiagnosisCode::TokenExpired | DiagnosisCode::TokenNotYetValid
        )
    });
    if only_lifetime && c.exp.is_some() {
        s.push_str(
            "get a fresh token (they live 60-90 minutes; keep the credential rather than the \
             token and let the SDK refresh it): ",
        );
    } else {
        let _ = write!(s, "request a token for scope {scope}");
        match tenant {
            Some(t) => {
                let _ = write!(s, " from tenant {t}: az login --tenant {t}, then ");
            }
            None => s.push_str(": "),
        }
    }
    let tenant_flag = tenant.map(|t| format!(" --tenant {t}")).unwrap_or_default();
    let _ = write!(
        s,
        "az account get-access-token{tenant_flag} --scope {scope}; in code, \
         DefaultAzureCredential().get_token(\"{scope}\") or \
         get_bearer_token_provider(credential, \"{scope}\")"
    );
    if let Some(t) = tenant {
        let _ = write!(s, " with AZURE_TENANT_ID={t}");
    }
    parts.push(s);
    Some(parts.join("; then "))
}

/// The cloud the token's audience or issuer belongs to, when either is well known.
fn token_cloud(c: &Claims) -> Option<Cloud> {
    c.audience()
        .and_then(Cloud::of_audience)
        .map(|(cloud, _)| cloud)
        .or_else(|| {
            let iss = c.iss.as_deref()?;
            Cloud::ALL
                .into_iter()
                .find(|cloud| issuer_tenant(iss, *cloud).is_some())
        })
}

fn is_guid(s: &str) -> bool {
    uuid::Uuid::try_parse(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    const NOW: i64 = 1_735_812_000; // 2025-01-02 10:00:00 UTC
    const TID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const OTHER_TID: &str = "11111111-2222-3333-4444-555555555555";
    const SIG: &str = "c2lnbmF0dXJlLW5ldmVyLXNob3du";

    fn jwt(claims: serde_json::Value) -> String {
        format!(
            "{}.{}.{SIG}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    fn base(aud: &str) -> serde_json::Value {
        serde_json::json!({
            "aud": aud,
            "iss": format!("https://sts.windows.net/{TID}/"),
            "tid": TID,
            "oid": "aaaaaaaa-1111-2222-3333-444444444444",
            "appid": "bbbbbbbb-0000-0000-0000-000000000001",
            "idtyp": "app",
            "iat": NOW - 600,
            "nbf": NOW - 600,
            "exp": NOW + 42 * 60,
        })
    }

    fn with(mut v: serde_json::Value, key: &str, value: serde_json::Value) -> serde_json::Value {
        v[key] = value;
        v
    }

    fn cs() -> Target {
        Target {
            kind: TargetKind::CognitiveServices,
            cloud: Cloud::Public,
            tenant: None,
        }
    }

    fn codes(e: &Explanation) -> Vec<DiagnosisCode> {
        e.problems.iter().map(|p| p.code).collect()
    }

    #[test]
    fn extracts_the_token_from_every_pasted_form() {
        let t = jwt(base("https://cognitiveservices.azure.com"));
        let forms = [
            t.clone(),
            format!("Bearer {t}"),
            format!("bearer   {t}"),
            format!("Authorization: Bearer {t}"),
            format!("  AUTHORIZATION:bearer {t}\r\n"),
            format!("\n\nauthorization: Bearer {t}\n"),
            format!("\"{t}\""),
            format!("{}\n{}", &t[..20], &t[20..]),
            format!(r#"{{"token_type":"Bearer","expires_in":3599,"access_token":"{t}"}}"#),
            format!(
                r#"{{"accessToken":"{t}","expiresOn":"2025-01-02 11:00:00.000000","subscription":"s","tenant":"{TID}","tokenType":"Bearer"}}"#
            ),
        ];
        for form in forms {
            assert_eq!(extract_token(&form).as_deref(), Ok(t.as_str()), "{form}");
        }
    }

    #[test]
    fn extract_errors_say_what_was_given_and_expected_without_echoing_it() {
        let key = "0123456789abcdef0123456789abcdef";
        let cases = [
            ("", ExplainError::Empty),
            ("  \n ", ExplainError::Empty),
            ("Bearer ", ExplainError::Empty),
            (key, ExplainError::NotAToken(Credential::AzureKey)),
            (
                "sk-proj-abcdefghijklmnop",
                ExplainError::NotAToken(Credential::OpenAiKey),
            ),
            (
                "ep-s_yfH85xSDxxYDIgEqmNLIupO0ur7MeuobUkfDE7nDQ",
                ExplainError::NotAToken(Credential::ProxyKey),
            ),
            (
                // The shape of an Entra client secret: 3 characters, 8Q~, 34 more.
                "abc8Q~Zx.y_z-0123456789abcdefghijklmnopq",
                ExplainError::NotAToken(Credential::ClientSecret),
            ),
            (
                "Bearer abc8Q~Zx.y_z-0123456789abcdefghijklmnopq",
                ExplainError::NotAToken(Credential::ClientSecret),
            ),
            (
                // 52 characters, Azure's JQQJ9 mark, 27 more: the newer resource key.
                "0a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6q7r8s9t0u1v2w3x4y5zJQQJ99BDACYeBjFXJ3w3AAAAACOGabcd",
                ExplainError::NotAToken(Credential::AzureKeyLong),
            ),
            ("a.b.c.d.e", ExplainError::Encrypted),
        ];
        for (input, want) in cases {
            let err = extract_token(input).unwrap_err();
            let empty = want == ExplainError::Empty;
            assert_eq!(err, want, "{input}");
            if !empty {
                assert!(!err.to_string().contains(input.trim()), "{err}");
            }
        }
        let err = extract_token("not-a-jwt.at-all").unwrap_err();
        assert!(matches!(err, ExplainError::NotJwt { .. }));
        assert_eq!(
            err.to_string(),
            "not a JWT (given 16 characters in 2 parts): not a JWT: expected three base64url \
             parts separated by '.', found 2"
        );
        let err = extract_token(r#"{"token_type":"Bearer","expires_in":3599}"#).unwrap_err();
        assert_eq!(
            err,
            ExplainError::NoAccessToken {
                keys: "keys expires_in, token_type".to_string()
            }
        );
        assert!(err.to_string().contains("access_token"));
        let err = extract_token(
            r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("invalid_client: AADSTS7000215"));
        let err = extract_token(r#"{"access_token": "#).unwrap_err();
        assert!(matches!(err, ExplainError::Json(_)));
        let err = extract_token(r#"{"access_token": 42}"#).unwrap_err();
        assert!(matches!(err, ExplainError::NoAccessToken { .. }));
    }

    #[test]
    fn cognitive_services_token_is_accepted_with_trailing_slash_ignored() {
        let t = jwt(base("https://cognitiveservices.azure.com/"));
        let e = explain(&t, &cs(), NOW).unwrap();
        assert!(e.accepted, "{:?}", e.problems);
        assert!(e.fix.is_none());
        assert_eq!(
            e.who,
            "managed identity / app bbbbbbbb-0000-0000-0000-000000000001 (object aaaaaaaa-1111-2222-3333-444444444444)"
        );
        assert_eq!(e.tenant.as_deref(), Some(TID));
        assert_eq!(e.expires_at, Some(NOW + 42 * 60));
        assert_eq!(e.header.kid.as_deref(), Some("k1"));
    }

    #[test]
    fn foundry_token_for_openai_target_names_the_host_family() {
        let e = explain(&jwt(base("https://ai.azure.com")), &cs(), NOW).unwrap();
        assert!(!e.accepted);
        assert_eq!(codes(&e), vec![DiagnosisCode::AudienceMismatch]);
        assert!(e.problems[0].message.contains(
            "this token is for Azure AI Foundry (https://ai.azure.com); *.openai.azure.com"
        ));
        assert!(
            e.problems[0]
                .message
                .contains("need https://cognitiveservices.azure.com")
        );
        let fix = e.fix.unwrap();
        assert!(fix.contains(
            "az account get-access-token --scope https://cognitiveservices.azure.com/.default"
        ));
        assert!(fix.contains(
            "DefaultAzureCredential().get_token(\"https://cognitiveservices.azure.com/.default\")"
        ));
        assert!(fix.contains("get_bearer_token_provider(credential, \"https://cognitiveservices.azure.com/.default\")"));
    }

    #[test]
    fn foundry_target_accepts_ai_audience_and_rejects_cognitive() {
        let foundry = Target {
            kind: TargetKind::Foundry,
            cloud: Cloud::Public,
            tenant: None,
        };
        assert!(
            explain(&jwt(base("https://ai.azure.com")), &foundry, NOW)
                .unwrap()
                .accepted
        );
        let e = explain(
            &jwt(base("https://cognitiveservices.azure.com")),
            &foundry,
            NOW,
        )
        .unwrap();
        assert!(
            e.problems[0]
                .message
                .contains("Azure OpenAI / Cognitive Services")
        );
        assert!(
            e.problems[0]
                .message
                .contains("*.services.ai.azure.com need https://ai.azure.com")
        );
        assert!(
            e.fix
                .unwrap()
                .contains("--scope https://ai.azure.com/.default")
        );
    }

    #[test]
    fn token_of_another_cloud_says_which_cloud() {
        let e = explain(&jwt(base("https://cognitiveservices.azure.us")), &cs(), NOW).unwrap();
        assert_eq!(codes(&e), vec![DiagnosisCode::AudienceMismatch]);
        assert!(
            e.problems[0]
                .message
                .starts_with("token is for the US Government cloud, target is public")
        );
        assert!(e.fix.unwrap().starts_with(
            "sign in to the public cloud (az cloud set --name AzureCloud; az login), then"
        ));
    }

    #[test]
    fn arm_token_says_so_and_gives_the_scope_command() {
        let e = explain(&jwt(base("https://management.azure.com/")), &cs(), NOW).unwrap();
        assert_eq!(codes(&e), vec![DiagnosisCode::AudienceMismatch]);
        assert!(e.problems[0].message.contains(
            "this is an Azure Resource Manager token (aud https://management.azure.com/; az account get-access-token without --scope/--resource)"
        ));
        assert!(e.fix.unwrap().contains(
            "az account get-access-token --scope https://cognitiveservices.azure.com/.default"
        ));
    }

    #[test]
    fn graph_and_unknown_audiences_are_named() {
        let e = explain(&jwt(base("https://graph.microsoft.com")), &cs(), NOW).unwrap();
        assert!(e.problems[0].message.contains("Microsoft Graph token"));
        let e = explain(&jwt(base("api://my-app")), &cs(), NOW).unwrap();
        assert!(
            e.problems[0]
                .message
                .contains("token aud api://my-app is not https://cognitiveservices.azure.com")
        );
    }

    #[test]
    fn expired_token_says_when_and_how_to_refresh() {
        let e = explain(
            &jwt(with(
                base("https://cognitiveservices.azure.com"),
                "exp",
                (NOW - 3 * 3_600).into(),
            )),
            &cs(),
            NOW,
        )
        .unwrap();
        assert_eq!(codes(&e), vec![DiagnosisCode::TokenExpired]);
        assert!(
            e.problems[0]
                .message
                .contains("expired 3 h ago (2025-01-02 07:00:00 UTC)")
        );
        assert!(e.fix.unwrap().starts_with("get a fresh token"));
        // exp == now is already expired.
        let e = explain(
            &jwt(with(
                base("https://cognitiveservices.azure.com"),
                "exp",
                NOW.into(),
            )),
            &cs(),
            NOW,
        )
        .unwrap();
        assert_eq!(codes(&e), vec![DiagnosisCode::TokenExpired]);
    }

    #[test]
    fn future_nbf_is_not_yet_valid() {
        let e = explain(
            &jwt(with(
                base("https://cognitiveservices.azure.com"),
                "nbf",
                (NOW + 600).into(),
            )),
            &cs(),
            NOW,
        )
        .unwrap();
        assert_eq!(codes(&e), vec![DiagnosisCode::TokenNotYetValid]);
        assert!(e.problems[0].message.contains("not valid yet"));
        assert!(e.fix.unwrap().contains("clock"));
    }

    #[test]
    fn tenant_mismatch_is_wrong_tenant_when_a_tenant_is_given() {
        let target = Target {
            tenant: Some(OTHER_TID.to_string()),
            ..cs()
        };
        let e = explain(
            &jwt(base("https://cognitiveservices.azure.com")),
            &target,
            NOW,
        )
        .unwrap();
        assert_eq!(codes(&e), vec![DiagnosisCode::WrongTenant]);
        assert!(e.problems[0].message.contains(&format!(
            "token is from tenant {TID}, target tenant is {OTHER_TID}"
        )));
        let fix = e.fix.unwrap();
        assert!(fix.contains(&format!(
            "from tenant {OTHER_TID}: az login --tenant {OTHER_TID}, then az account \
             get-access-token --tenant {OTHER_TID} --scope https://cognitiveservices.azure.com/.default"
        )));
        assert!(fix.contains(&format!("AZURE_TENANT_ID={OTHER_TID}")));
        // A tenant given by name cannot be compared with tid: no false alarm.
        let target = Target {
            tenant: Some("contoso.onmicrosoft.com".to_string()),
            ..cs()
        };
        assert!(
            explain(
                &jwt(base("https://cognitiveservices.azure.com")),
                &target,
                NOW
            )
            .unwrap()
            .accepted
        );
    }

    #[test]
    fn issuers_are_checked_against_the_target_cloud() {
        let aud = "https://cognitiveservices.azure.com";
        let v2 = with(
            base(aud),
            "iss",
            format!("https://login.microsoftonline.com/{TID}/v2.0").into(),
        );
        assert!(explain(&jwt(v2), &cs(), NOW).unwrap().accepted);
        let fake = with(base(aud), "iss", "http://127.0.0.1:9999/tenant".into());
        let e = explain(&jwt(fake), &cs(), NOW).unwrap();
        assert_eq!(codes(&e), vec![DiagnosisCode::WrongIssuer]);
        assert!(
            e.problems[0]
                .message
                .contains("is not Entra ID of the public cloud")
        );
        let china = with(
            base(aud),
            "iss",
            format!("https://sts.chinacloudapi.cn/{TID}/").into(),
        );
        let e = explain(&jwt(china), &cs(), NOW).unwrap();
        assert!(
            e.problems[0]
                .message
                .contains("Entra ID of the China (21Vianet) cloud")
        );
        let other = with(
            base(aud),
            "iss",
            format!("https://sts.windows.net/{OTHER_TID}/").into(),
        );
        let e = explain(&jwt(other), &cs(), NOW).unwrap();
        assert!(e.problems[0].message.contains(&format!(
            "names tenant {OTHER_TID}, but the tid claim is {TID}"
        )));
    }

    #[test]
    fn who_reads_users_managed_identities_and_apps() {
        let user = serde_json::json!({"upn": "alice@contoso.com", "oid": "o1", "appid": "04b07795-8ddb-461a-bbee-02f9e1bf7b46", "scp": "user_impersonation"});
        let e = explain(&jwt(user), &cs(), NOW).unwrap();
        assert_eq!(e.who, "user alice@contoso.com (object o1) via Azure CLI");
        assert_eq!(e.scopes, vec!["user_impersonation".to_string()]);
        let mi = serde_json::json!({"appid": "a1", "oid": "o1", "xms_mirid": "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/proxy-id"});
        assert_eq!(
            explain(&jwt(mi), &cs(), NOW).unwrap().who,
            "managed identity proxy-id: app a1 (object o1)"
        );
        let none = serde_json::json!({});
        let e = explain(&jwt(none), &cs(), NOW).unwrap();
        assert_eq!(e.who, "unknown principal (no upn, oid or appid claim)");
        assert!(codes(&e).contains(&DiagnosisCode::AudienceMismatch));
        assert!(codes(&e).contains(&DiagnosisCode::TokenExpired));
        assert!(codes(&e).contains(&DiagnosisCode::WrongIssuer));
    }

    #[test]
    fn render_accepted_says_who_times_and_verdict() {
        let t = jwt(with(
            base("https://cognitiveservices.azure.com"),
            "roles",
            serde_json::json!(["Reader"]),
        ));
        let e = explain(&t, &cs(), NOW).unwrap();
        let cet = time::UtcOffset::from_hms(1, 0, 0).unwrap();
        let text = render_text(&e, &cs(), NOW, cet);
        assert!(text.contains("Who:"));
        assert!(text.contains("managed identity / app bbbbbbbb-0000-0000-0000-000000000001"));
        assert!(text.contains("Audience:  https://cognitiveservices.azure.com"));
        assert!(text.contains(&format!("Tenant:    {TID}")));
        assert!(text.contains("Roles:     Reader"));
        assert!(text.contains("Scopes:    (none)"));
        assert!(
            text.contains("Issued:    2025-01-02 10:50:00 +01:00 (10 min ago)"),
            "{text}"
        );
        assert!(
            text.contains("Expires:   2025-01-02 11:42:00 +01:00 (expires in 42 min)"),
            "{text}"
        );
        assert!(text.contains("Verdict: accepted by https://cognitiveservices.azure.com"));
        assert!(!text.contains("Fix:"));
    }

    #[test]
    fn render_rejected_gives_verdict_all_problems_and_fix() {
        let claims = with(
            base("https://management.azure.com"),
            "exp",
            (NOW - 3 * 3_600).into(),
        );
        let t = jwt(claims);
        let e = explain(&format!("Authorization: Bearer {t}"), &cs(), NOW).unwrap();
        let text = render_text(&e, &cs(), NOW, time::UtcOffset::UTC);
        assert!(text.contains("(expired 3 h ago)"), "{text}");
        assert!(text.contains("Verdict: rejected — this is an Azure Resource Manager token"));
        assert!(text.contains("also (token-expired): token expired 3 h ago"));
        assert!(text.contains(
            "Fix: request a token for scope https://cognitiveservices.azure.com/.default"
        ));
    }

    #[test]
    fn never_shows_the_raw_token_or_signature() {
        let t = jwt(base("https://management.azure.com"));
        let payload = t.split('.').nth(1).unwrap().to_string();
        let e = explain(&t, &cs(), NOW).unwrap();
        let text = render_text(&e, &cs(), NOW, time::UtcOffset::UTC);
        let json = serde_json::to_string(&e).unwrap();
        let debug = format!("{e:?}");
        for out in [&text, &json, &debug] {
            assert!(!out.contains(&t));
            assert!(!out.contains(SIG));
            assert!(!out.contains(&payload));
        }
    }

    #[test]
    fn targets_follow_hosts() {
        let t = Target::for_host("myres.openai.azure.us").unwrap();
        assert_eq!(
            (t.kind, t.cloud),
            (TargetKind::CognitiveServices, Cloud::Usgov)
        );
        assert_eq!(t.audience(), "https://cognitiveservices.azure.us");
        let t = Target::for_host("proj.services.ai.azure.com").unwrap();
        assert_eq!(t.audience(), "https://ai.azure.com");
        assert!(Target::for_host("127.0.0.1").is_none());
    }

    #[test]
    fn non_public_targets_tell_how_to_sign_in_to_that_cloud() {
        let gov = Target {
            kind: TargetKind::CognitiveServices,
            cloud: Cloud::Usgov,
            tenant: None,
        };
        let e = explain(&jwt(base("https://cognitiveservices.azure.com")), &gov, NOW).unwrap();
        assert!(
            e.problems[0]
                .message
                .starts_with("token is for the public cloud, target is US Government")
        );
        let fix = e.fix.unwrap();
        assert!(fix.contains("az cloud set --name AzureUSGovernment"));
        assert!(fix.contains("--scope https://cognitiveservices.azure.us/.default"));
    }
}
