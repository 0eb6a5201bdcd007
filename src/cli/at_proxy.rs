//! `explain --config`: what this proxy would do with a caller's Entra token — whether
//! `[inbound.entra]` takes it, which identity it gets, and what reaches Azure (the token itself,
//! the proxy's own token, or the user's own token exchanged on their behalf, with which
//! credential). Reads claims only: the signature is Azure's and the proxy's to check.

use crate::claims::Claims;
use crate::config::{Config, Upstream};
use crate::inbound::{EntraUse, Identities, Principal, audience_use};
use crate::limits::Limits;

/// What `explain --config` adds to the token's explanation.
#[derive(Debug, serde::Serialize)]
pub(super) struct AtProxy {
    /// Whether the proxy would take the token (as far as its claims tell).
    pub(super) accepted: bool,
    pub(super) lines: Vec<String>,
}

impl AtProxy {
    pub(super) fn text(&self) -> String {
        let mut out =
            String::from("\nAt this proxy (claims only; the signature is not checked):\n");
        for line in &self.lines {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

/// What this proxy would do with a token of these claims.
pub(super) fn report(config: &Config, claims: &Claims) -> AtProxy {
    match verdict(config, claims) {
        Ok(lines) => AtProxy {
            accepted: true,
            lines,
        },
        Err(reason) => AtProxy {
            accepted: false,
            lines: vec![format!("refused: {reason}")],
        },
    }
}

/// The lines of an accepted token, or why it is refused.
fn verdict(config: &Config, claims: &Claims) -> Result<Vec<String>, String> {
    let Some(entra) = &config.inbound.entra else {
        return Err("this proxy takes no Entra tokens ([inbound.entra] is not configured)".into());
    };
    let tid = claims
        .tid
        .as_deref()
        .map(str::to_ascii_lowercase)
        .ok_or("the token has no tid claim (token_no_tenant)")?;
    if !entra.tenants.contains(&tid) {
        return Err(format!(
            "tenant {tid} is not in [inbound.entra] tenants ({}) (token_wrong_tenant)",
            entra.tenants.join(", ")
        ));
    }
    let by_audience =
        audience_use(entra, config.cloud, claims).map_err(|e| format!("{e} ({})", e.code()))?;
    let identities = Identities::new(
        &config.identities,
        config.inbound.unmatched,
        config.inbound.upstream,
        &Limits::in_memory(),
    );
    let principal = Principal::of_claims(claims);
    let found = identities
        .find(&principal)
        .map_err(|e| format!("{e} (no_matching_identity, 403)"))?;
    let (who, upstream, whose) = match found {
        Some(i) => (format!("identity {}", i.name), i.upstream, "the identity's"),
        None => (
            "`entra` (no identity)".to_string(),
            identities.default_upstream(),
            "[inbound.entra]",
        ),
    };
    let mut lines = vec![
        format!("tenant {tid}: in [inbound.entra] tenants"),
        match upstream {
            Upstream::ByAudience => {
                format!("caller: {who}; upstream not set: chosen by the token's audience")
            }
            _ => format!("caller: {who}; upstream = {:?} ({whose})", upstream.name()),
        },
    ];
    lines.extend(upstream_lines(
        config,
        claims,
        by_audience.under(upstream),
        upstream,
    )?);
    Ok(lines)
}

/// What reaches Azure, per backend scope.
fn upstream_lines(
    config: &Config,
    claims: &Claims,
    use_: EntraUse,
    upstream: Upstream,
) -> Result<Vec<String>, String> {
    let scopes: Vec<String> = config.scopes().iter().map(ToString::to_string).collect();
    let scopes = scopes.join(", ");
    match use_ {
        EntraUse::Passthrough => Ok(vec![format!(
            "Azure gets: this token as it is (its audience is Azure's{})",
            if upstream == Upstream::Caller {
                ", and upstream = caller"
            } else {
                ""
            }
        )]),
        EntraUse::Swap => Ok(vec![format!(
            "Azure gets: the proxy's own token ([identity] kind = {}) for {scopes}; Azure sees the proxy",
            config.identity.kind_name()
        )]),
        EntraUse::OnBehalfOf => {
            let Some(obo) = &config.on_behalf_of else {
                return Err("upstream = on-behalf-of, but [on_behalf_of] is not configured".into());
            };
            let user = claims
                .oid
                .as_deref()
                .ok_or("the token has no oid claim: there is no user to act for (obo_no_user)")?;
            if claims.scp.is_none() {
                return Err(
                    "the token has no scp claim: it is an app's own token, not a signed-in user's, so there is nothing to exchange (obo_no_user)".into(),
                );
            }
            let name = claims
                .upn
                .as_deref()
                .or(claims.name.as_deref())
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            Ok(vec![
                format!(
                    "Azure gets: user {user}{name}'s own token, exchanged at Entra on their behalf for {scopes}"
                ),
                format!("the proxy proves it is {}", obo.describe()),
                "Azure checks the user's own role on the resource (Cognitive Services OpenAI User or the service's User role, to the user or a group they are in)".into(),
            ])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const APP: &str = "11111111-2222-4333-8444-555555555555";
    const USER: &str = "0c000000-0000-4000-8000-000000000001";

    fn config(extra: &str) -> Config {
        let text = format!(
            r#"[identity]
kind = "managed-identity"
[[backends]]
name = "primary"
endpoint = "https://myres.openai.azure.com"
[[models]]
name = "gpt-4o"
backend = "primary"
deployment = "gpt-4o"
[inbound.entra]
tenants = ["{TENANT}"]
audiences = ["api://{APP}"]
{extra}"#
        );
        Config::parse(&text, "test", &|_| None).unwrap()
    }

    fn claims(v: serde_json::Value) -> Claims {
        serde_json::from_value(v).unwrap()
    }

    fn user() -> Claims {
        claims(serde_json::json!({
            "aud": format!("api://{APP}"), "tid": TENANT, "oid": USER,
            "scp": "user_impersonation", "upn": "ada@contoso.com"
        }))
    }

    const OBO: &str = r#"upstream = "on-behalf-of"
[on_behalf_of]
client_id = "11111111-2222-4333-8444-555555555555"
tenant_id = "72f988bf-86f1-41af-91ab-2d7cd011db47"
credential = "managed-identity"
"#;

    #[test]
    fn a_user_token_under_on_behalf_of_names_the_user_scope_and_credential() {
        let r = report(&config(OBO), &user());
        let text = r.text();
        assert!(r.accepted, "{text}");
        assert!(
            text.contains(&format!("user {USER} (ada@contoso.com)'s own token")),
            "{text}"
        );
        assert!(
            text.contains("https://cognitiveservices.azure.com/.default"),
            "{text}"
        );
        assert!(text.contains(&format!("app {APP}")), "{text}");
        assert!(
            text.contains("managed identity, a federated credential"),
            "{text}"
        );
    }

    #[test]
    fn an_app_token_under_on_behalf_of_is_refused_naming_the_missing_user() {
        let mut c = user();
        c.scp = None;
        let r = report(&config(OBO), &c);
        let text = r.text();
        assert!(!r.accepted);
        assert!(text.contains("no scp claim"), "{text}");
    }

    #[test]
    fn a_token_for_the_proxy_is_swapped_by_default_and_other_tenants_are_refused() {
        let r = report(&config(""), &user());
        let text = r.text();
        assert!(r.accepted, "{text}");
        assert!(text.contains("the proxy's own token"), "{text}");
        let mut c = user();
        c.tid = Some("00000000-0000-4000-8000-000000000000".into());
        let r = report(&config(""), &c);
        let text = r.text();
        assert!(!r.accepted);
        assert!(text.contains("token_wrong_tenant"), "{text}");
    }

    #[test]
    fn no_entra_section_says_so() {
        let text = r#"[identity]
kind = "managed-identity"
[[backends]]
name = "primary"
endpoint = "https://myres.openai.azure.com"
"#;
        let c = Config::parse(text, "test", &|_| None).unwrap();
        let r = report(&c, &user());
        let out = r.text();
        assert!(!r.accepted);
        assert!(out.contains("[inbound.entra] is not configured"), "{out}");
    }
}
