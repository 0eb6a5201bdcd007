//! `entra-proxy doctor`: checks a config end to end — config, DNS, reachability, identity,
//! token claims, an authenticated call per deployment — stopping where later checks cannot run.

use super::{Context, DiagnosisCode, classify};
use crate::claims::Claims;
use crate::cloud::same_audience;
use crate::config::{Backend, Config, NoteLevel};
use crate::identity::{IdentityEnv, TokenCache, build_token_source};
use secrecy::ExposeSecret as _;
use serde::Serialize;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The data-plane API version that still lists a resource's deployments.
const LIST_DEPLOYMENTS_API_VERSION: &str = "2022-12-01";

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skipped,
}

impl Status {
    fn mark(self) -> &'static str {
        match self {
            Status::Pass => "✓",
            Status::Warn => "!",
            Status::Fail => "✗",
            Status::Skipped => "-",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    pub millis: u64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn ok(&self) -> bool {
        !self.checks.iter().any(|c| c.status == Status::Fail)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            out.push_str(&format!(
                "{} {:<44} {:>6} ms  {}\n",
                c.status.mark(),
                c.name,
                c.millis,
                c.detail
            ));
        }
        out.push_str(if self.ok() {
            "\nall checks passed\n"
        } else {
            "\nsome checks failed (✗)\n"
        });
        out
    }
}

struct Recorder {
    checks: Vec<Check>,
}

impl Recorder {
    fn push(
        &mut self,
        name: impl Into<String>,
        status: Status,
        detail: impl Into<String>,
        started: Instant,
    ) {
        self.checks.push(Check {
            name: name.into(),
            status,
            detail: detail.into(),
            millis: started.elapsed().as_millis() as u64,
        });
    }
}

/// Runs every check for a config file.
pub async fn run(path: &std::path::Path, env: &IdentityEnv) -> Report {
    let mut r = Recorder { checks: Vec::new() };
    let t = Instant::now();
    let config = match Config::load(path) {
        Ok(c) => {
            r.push("config valid", Status::Pass, path.display().to_string(), t);
            c
        }
        Err(e) => {
            r.push("config valid", Status::Fail, e.to_string(), t);
            return Report { checks: r.checks };
        }
    };
    for note in &config.notes {
        let status = match note.level {
            NoteLevel::Normalized | NoteLevel::Warning => Status::Warn,
        };
        r.push("config note", status, note.message.clone(), Instant::now());
    }
    check_config(&config, env, &mut r).await;
    Report { checks: r.checks }
}

async fn check_config(config: &Config, env: &IdentityEnv, r: &mut Recorder) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            r.push("http client", Status::Fail, e.to_string(), Instant::now());
            return;
        }
    };
    let t = Instant::now();
    let source = match build_token_source(config, env) {
        Ok(s) => s,
        Err(e) => {
            r.push("identity configured", Status::Fail, e, t);
            return;
        }
    };
    let tokens = TokenCache::new(source, config.upstream.identity_timeout);
    for backend in &config.backends {
        check_backend(config, backend, &tokens, &http, r).await;
    }
}

async fn check_backend(
    config: &Config,
    b: &Backend,
    tokens: &TokenCache,
    http: &reqwest::Client,
    r: &mut Recorder,
) {
    let name = |what: &str| format!("{}: {what}", b.name);
    let host = b.host().to_string();
    let port = b.endpoint.port_or_known_default().unwrap_or(443);

    // DNS
    let t = Instant::now();
    let addrs: Vec<IpAddr> = match tokio::net::lookup_host((host.as_str(), port)).await {
        Ok(a) => a.map(|s| s.ip()).collect(),
        Err(e) => {
            r.push(
                name("DNS"),
                Status::Fail,
                format!("{host} does not resolve: {e}"),
                t,
            );
            return;
        }
    };
    let private: Vec<&IpAddr> = addrs.iter().filter(|a| is_private(a)).collect();
    let mut list = addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    // Loopback names (tests, the emulator) never leave the machine.
    let loopback_only = !addrs.is_empty() && addrs.iter().all(IpAddr::is_loopback);
    if host.parse::<IpAddr>().is_err() && !loopback_only {
        match super::dns::lookup(&host, Duration::from_secs(2)).await {
            Ok(res) if !res.cnames.is_empty() => {
                list = format!(
                    "{list} via {}{}",
                    res.cnames.join(" → "),
                    if res.via_privatelink() {
                        " (privatelink)"
                    } else {
                        ""
                    }
                );
            }
            Ok(_) => {}
            Err(e) => list = format!("{list} (CNAME chain unknown: {e})"),
        }
    }
    if private.len() == addrs.len() {
        r.push(
            name("DNS"),
            Status::Pass,
            format!("{host} → {list} (private)"),
            t,
        );
    } else {
        r.push(
            name("DNS"),
            Status::Warn,
            format!("{host} → {list} (public): with public network access disabled Azure answers 403; resolve it to the private endpoint (privatelink.openai.azure.com / privatelink.cognitiveservices.azure.com zone linked to this VNet)"),
            t,
        );
    }

    // TCP (+TLS): any HTTP answer proves reachability.
    let t = Instant::now();
    match http.get(b.endpoint.clone()).send().await {
        Ok(resp) => r.push(
            name("reachable"),
            Status::Pass,
            format!(
                "{} answered HTTP {}",
                b.endpoint.as_str().trim_end_matches('/'),
                resp.status().as_u16()
            ),
            t,
        ),
        Err(e) => {
            r.push(
                name("reachable"),
                Status::Fail,
                format!("{}: {e}", b.endpoint),
                t,
            );
            return;
        }
    }

    // Identity
    let t = Instant::now();
    let token = match tokens.get(&b.scope).await {
        Ok(tok) => {
            r.push(
                name("token"),
                Status::Pass,
                format!("{} gave a token for {}", tokens.describe(), b.scope),
                t,
            );
            tok
        }
        Err(e) => {
            r.push(name("token"), Status::Fail, format!("{}: {e}", b.scope), t);
            return;
        }
    };

    // Claims
    let t = Instant::now();
    let claims = token.claims.clone().unwrap_or_default();
    let aud = claims.audience().unwrap_or("(none)").to_string();
    if same_audience(&aud, b.scope.audience()) {
        r.push(
            name("token claims"),
            Status::Pass,
            format!(
                "aud {aud}, tid {}, app {}",
                claims.tid.as_deref().unwrap_or("?"),
                claims.app_id().unwrap_or("?")
            ),
            t,
        );
    } else {
        r.push(
            name("token claims"),
            Status::Fail,
            format!(
                "token aud is {aud}, but {host} needs {}",
                b.scope.audience()
            ),
            t,
        );
    }

    // One authenticated call per known deployment: an empty body is refused with 400 by a
    // deployment that exists (nothing is generated, nothing billed) and with 404 by one that
    // does not.
    let deployments: Vec<String> = if b.deployments.is_empty() {
        vec![]
    } else {
        b.deployments.clone()
    };
    if deployments.is_empty() {
        r.push(
            name("call"),
            Status::Skipped,
            "no deployments configured for this backend",
            Instant::now(),
        );
        return;
    }
    let bearer = format!("Bearer {}", token.token.secret.expose_secret());
    // Azure's own list of deployments, fetched once, when a call says one does not exist.
    let mut listed: Option<Option<Vec<String>>> = None;
    for d in deployments {
        let t = Instant::now();
        let mut url = b.endpoint.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty().extend([
                "openai",
                "deployments",
                d.as_str(),
                "chat",
                "completions",
            ]);
        }
        url.query_pairs_mut()
            .append_pair("api-version", &b.api_version);
        let resp = http
            .post(url)
            .header("authorization", &bearer)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await;
        let resp = match resp {
            Ok(x) => x,
            Err(e) => {
                r.push(name(&format!("call {d}")), Status::Fail, e.to_string(), t);
                continue;
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.bytes().await.unwrap_or_default();
        if (200..300).contains(&status) || (status == 400 && !mentions_auth(&body)) {
            r.push(
                name(&format!("call {d}")),
                Status::Pass,
                format!("deployment {d} answered (HTTP {status})"),
                t,
            );
            continue;
        }
        let ctx = Context {
            backend: &b.name,
            host: &host,
            cloud: config.cloud,
            host_kind: b.host_kind,
            expected_audience: b.scope.audience(),
            token: Some(&claims as &Claims),
            expected_tenant: None,
            deployment: Some(&d),
            known_deployments: &b.deployments,
            api_version: Some(&b.api_version),
            now: unix_now(),
        };
        let mut diagnosis = classify(status, retry_after.as_deref(), &body, &ctx);
        if diagnosis
            .as_ref()
            .is_some_and(|x| x.code == DiagnosisCode::DeploymentNotFound)
        {
            // Name what the resource really has (not what the config believes), so that a
            // model name or a near miss is spotted against Azure's own list.
            if listed.is_none() {
                listed = Some(azure_deployments(http, b, &bearer).await);
            }
            if let Some(Some(actual)) = &listed {
                let ctx = Context {
                    known_deployments: actual,
                    ..ctx
                };
                diagnosis = classify(status, retry_after.as_deref(), &body, &ctx);
                if actual.is_empty()
                    && let Some(x) = diagnosis.as_mut()
                {
                    x.fix = format!("the resource lists no deployments at all; {}", x.fix);
                }
            }
        }
        let detail = match diagnosis {
            Some(diag) => diag.header_value(),
            None => format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ),
        };
        r.push(name(&format!("call {d}")), Status::Fail, detail, t);
    }
}

/// The deployments the resource itself lists (`GET /openai/deployments`, answered by the data
/// plane for the API versions that still have it); `None` when it does not answer with a list.
async fn azure_deployments(
    http: &reqwest::Client,
    b: &Backend,
    bearer: &str,
) -> Option<Vec<String>> {
    let mut url = b.endpoint.clone();
    if let Ok(mut segs) = url.path_segments_mut() {
        segs.pop_if_empty().extend(["openai", "deployments"]);
    }
    url.query_pairs_mut()
        .append_pair("api-version", LIST_DEPLOYMENTS_API_VERSION);
    let resp = http
        .get(url)
        .header("authorization", bearer)
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let v: serde_json::Value = resp.json().await.ok()?;
    let names = v
        .get("data")?
        .as_array()?
        .iter()
        .filter_map(|d| d.get("id").and_then(serde_json::Value::as_str))
        .map(str::to_string)
        .collect();
    Some(names)
}

fn mentions_auth(body: &[u8]) -> bool {
    let s = String::from_utf8_lossy(body).to_ascii_lowercase();
    s.contains("authentication key") || s.contains("api-version") || s.contains("api version")
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Private (RFC 1918 / ULA) or loopback addresses: what a private endpoint resolves to.
pub fn is_private(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_loopback() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses() {
        assert!(is_private(&"10.1.2.3".parse().unwrap()));
        assert!(is_private(&"172.16.0.5".parse().unwrap()));
        assert!(is_private(&"192.168.1.1".parse().unwrap()));
        assert!(is_private(&"127.0.0.1".parse().unwrap()));
        assert!(is_private(&"fd00::1".parse().unwrap()));
        assert!(!is_private(&"20.42.0.1".parse().unwrap()));
        assert!(!is_private(&"2603:1030::1".parse().unwrap()));
    }
}
