//! Endpoint normalization: a pasted deployment or `/openai/...` URL is reduced to the resource
//! base, keeping the `api-version` and deployment it named.

use url::Url;

/// What was changed while normalizing an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedEndpoint {
    pub base: Url,
    pub api_version_from_url: Option<String>,
    pub deployment_from_url: Option<String>,
    /// Whether anything was removed.
    pub changed: bool,
}

/// Reduces a pasted URL to the resource base: drops `/openai/...`, the query and trailing `/`,
/// keeping the `api-version` and deployment it named. This is the classic LiteLLM 404 trap:
/// a full deployment URL used where the resource endpoint belongs.
pub fn normalize_endpoint(raw: &str) -> Result<NormalizedEndpoint, String> {
    let trimmed = raw.trim();
    let url = Url::parse(trimmed).map_err(|e| {
        format!("{trimmed:?} is not a URL ({e}); expected e.g. https://myres.openai.azure.com")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{trimmed:?} must start with https:// (or http:// for a local emulator)"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{trimmed:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "must not contain a user name or password; credentials never go in the endpoint URL"
                .into(),
        );
    }
    let mut api_version = None;
    for (k, v) in url.query_pairs() {
        if k == "api-version" {
            api_version = Some(v.into_owned());
        }
    }
    let segments: Vec<String> = url
        .path_segments()
        .map(|s| s.filter(|p| !p.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    // Segments are compared decoded: `%6Fpenai` is `openai`.
    let openai_at = segments
        .iter()
        .position(|s| percent_decode(s).eq_ignore_ascii_case("openai"));
    let deployment = openai_at.and_then(|i| match (segments.get(i + 1), segments.get(i + 2)) {
        (Some(d), Some(name)) if percent_decode(d) == "deployments" => Some(percent_decode(name)),
        _ => None,
    });
    let keep: &[String] = match openai_at {
        Some(i) => &segments[..i],
        None => &segments,
    };
    let mut base = url.clone();
    base.set_query(None);
    base.set_fragment(None);
    // The kept segments as they were written (already percent-encoded): decoding and encoding
    // them again would drop what the URL parser strips (tabs, newlines) and change the base.
    base.set_path(&format!("/{}", keep.join("/")));
    let changed = base.as_str().trim_end_matches('/') != trimmed.trim_end_matches('/');
    Ok(NormalizedEndpoint {
        base,
        api_version_from_url: api_version,
        deployment_from_url: deployment,
        changed,
    })
}

/// Decodes the `%XX` escapes of one path segment; every other byte (`+`, `&`, `=`, a lone `%`)
/// stays as written, as in a URL path.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |i: usize| bytes.get(i).and_then(|b| char::from(*b).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NoteLevel;
    use crate::config::testing::parse;

    #[test]
    fn pasted_deployment_url_is_normalized_keeping_api_version() {
        let c = parse("[[backends]]\nname='a'\nendpoint='https://res.openai.azure.com/openai/deployments/gpt-4.1/chat/completions?api-version=2025-01-01-preview'").unwrap();
        let b = &c.backends[0];
        assert_eq!(b.endpoint.as_str(), "https://res.openai.azure.com/");
        assert_eq!(b.api_version, "2025-01-01-preview");
        assert_eq!(b.deployments, vec!["gpt-4.1".to_string()]);
        let normalized: Vec<_> = c
            .notes
            .iter()
            .filter(|n| n.level == NoteLevel::Normalized)
            .collect();
        assert_eq!(normalized.len(), 1);
        assert!(normalized[0].message.contains("gpt-4.1"));
        assert!(normalized[0].message.contains("2025-01-01-preview"));
        let n = normalize_endpoint("https://res.openai.azure.com/").unwrap();
        assert!(!n.changed);
        let n = normalize_endpoint("https://res.openai.azure.com/openai/v1/").unwrap();
        assert!(n.changed);
        assert_eq!(n.base.as_str(), "https://res.openai.azure.com/");
        assert!(normalize_endpoint("https://u:p@res.openai.azure.com").is_err());
        assert!(normalize_endpoint("ftp://res").is_err());
    }
}
