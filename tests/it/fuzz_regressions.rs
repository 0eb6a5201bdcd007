//! Inputs the fuzz targets and property tests (fuzz/, tests/it/properties.rs) found mishandled,
//! each kept as a test of the fixed behaviour.

use entra_proxy::config::normalize_endpoint;

#[test]
fn an_ampersand_in_an_endpoint_base_path_is_kept() {
    // Was decoded as a form value, which ends at `&`: the base became https://apim.example.com/a.
    let n = normalize_endpoint("https://apim.example.com/a&b/openai/deployments/gpt-4o").unwrap();
    assert_eq!(n.base.as_str(), "https://apim.example.com/a&b");
    assert_eq!(n.deployment_from_url.as_deref(), Some("gpt-4o"));
}

#[test]
fn normalizing_an_endpoint_twice_gives_the_same_base() {
    // `%6Fpenai` was kept in the base (not recognised encoded), written back as `openai`, and
    // cut off by the next normalization.
    let once = normalize_endpoint("https://a.openai.azure.com/%6Fpenai/deployments/x").unwrap();
    assert_eq!(once.base.as_str(), "https://a.openai.azure.com/");
    assert_eq!(once.deployment_from_url.as_deref(), Some("x"));
    let twice = normalize_endpoint(once.base.as_str()).unwrap();
    assert_eq!(twice.base, once.base);
    assert!(!twice.changed);
}

#[test]
fn a_deployment_named_in_a_pasted_url_is_decoded() {
    // Routing decodes path segments, so the deployment it learns from the URL must be decoded too.
    let n = normalize_endpoint(
        "https://a.openai.azure.com/openai/deployments/my%20dep/chat/completions",
    )
    .unwrap();
    assert_eq!(n.deployment_from_url.as_deref(), Some("my dep"));
}
