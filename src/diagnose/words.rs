//! Shared phrasing for diagnoses: cloud and host-family names, and text made safe for one header line.

use crate::cloud::{AudienceKind, Cloud};

/// The cloud as people say it: "public", "US Government", "China (21Vianet)".
pub(crate) fn cloud_label(cloud: Cloud) -> &'static str {
    match cloud {
        Cloud::Public => "public",
        Cloud::Usgov => "US Government",
        Cloud::China => "China (21Vianet)",
    }
}

/// The DNS suffix of a cloud's Azure AI hosts (`azure.com`, `azure.us`, `azure.cn`), read off its
/// Cognitive Services audience so that `cloud.rs` stays the one place that knows the clouds.
pub(crate) fn azure_suffix(cloud: Cloud) -> &'static str {
    let aud = cloud.cognitive_audience();
    aud.strip_prefix("https://cognitiveservices.")
        .unwrap_or(aud)
}

/// The product a well-known audience belongs to, e.g. "Azure AI Foundry".
pub(crate) fn family_label(kind: AudienceKind) -> &'static str {
    match kind {
        AudienceKind::CognitiveServices => "Azure OpenAI / Cognitive Services",
        AudienceKind::Foundry => "Azure AI Foundry",
        AudienceKind::Management => "Azure Resource Manager",
    }
}

/// The host patterns that take a family's audience in a cloud, e.g.
/// `*.openai.azure.com and *.cognitiveservices.azure.com`.
pub(crate) fn family_hosts(kind: AudienceKind, cloud: Cloud) -> String {
    let s = azure_suffix(cloud);
    match kind {
        AudienceKind::CognitiveServices => {
            format!("*.openai.{s} and *.cognitiveservices.{s}")
        }
        AudienceKind::Foundry => format!("*.services.ai.{s}"),
        AudienceKind::Management => format!("management.{s}"),
    }
}

/// One line of visible ASCII, at most `max` bytes: control characters become spaces, runs of
/// spaces collapse, common typographic characters get ASCII stand-ins and anything else becomes
/// `?`. Safe for an HTTP header value and a single log line.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let piece: &str = match c {
            ' '..='~' => {
                let mut buf = [0u8; 4];
                push_collapsed(&mut out, c.encode_utf8(&mut buf));
                continue;
            }
            '\u{2014}' | '\u{2013}' | '\u{2212}' => "-",
            '\u{2026}' => "...",
            '\u{2018}' | '\u{2019}' => "'",
            '\u{201c}' | '\u{201d}' => "\"",
            '\u{2192}' => "->",
            '\u{2264}' => "<=",
            '\u{2265}' => ">=",
            c if c.is_whitespace() || c.is_control() => " ",
            _ => "?",
        };
        push_collapsed(&mut out, piece);
    }
    let trimmed = out.trim();
    if trimmed.len() <= max {
        return trimmed.to_string();
    }
    let cut = max.saturating_sub(3);
    // Everything is ASCII here, so any byte index is a char boundary.
    format!("{}...", trimmed.get(..cut).unwrap_or_default().trim_end())
}

fn push_collapsed(out: &mut String, piece: &str) {
    for c in piece.chars() {
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_strips_breaks_and_non_ascii() {
        assert_eq!(
            one_line("a\r\nb\tc \u{2014} d\u{2026} \u{1F600}\u{0}e", 100),
            "a b c - d... ? e"
        );
        assert_eq!(one_line("   spaced   out  ", 100), "spaced out");
    }

    #[test]
    fn one_line_caps_length_with_an_ellipsis() {
        let long = "x".repeat(1_000);
        let capped = one_line(&long, 512);
        assert_eq!(capped.len(), 512);
        assert!(capped.ends_with("..."));
        assert_eq!(one_line("short", 512), "short");
    }

    #[test]
    fn suffixes_and_host_families_follow_the_cloud() {
        assert_eq!(azure_suffix(Cloud::Public), "azure.com");
        assert_eq!(azure_suffix(Cloud::Usgov), "azure.us");
        assert_eq!(azure_suffix(Cloud::China), "azure.cn");
        assert_eq!(
            family_hosts(AudienceKind::CognitiveServices, Cloud::Usgov),
            "*.openai.azure.us and *.cognitiveservices.azure.us"
        );
        assert_eq!(
            family_hosts(AudienceKind::Foundry, Cloud::Public),
            "*.services.ai.azure.com"
        );
    }
}
