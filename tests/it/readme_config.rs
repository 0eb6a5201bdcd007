//! The configuration reference in README.md parses with the real config code, so the docs
//! cannot drift from it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use entra_proxy::config::Config;

fn reference_block() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("## Configuration reference")
        .nth(1)
        .expect("section exists");
    let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = start + section[start..].find("```").expect("block end");
    section[start..end].to_string()
}

#[test]
fn the_readme_configuration_reference_is_accepted_as_written() {
    let text = reference_block()
        .replace(
            "sha256 = \"…\"",
            &format!("sha256 = \"{}\"", "ab".repeat(32)),
        )
        .replace("<tenant-id>", "72f988bf-86f1-41af-91ab-2d7cd011db47");
    let config = Config::parse(&text, "README.md", &|_| Some("x".into()))
        .unwrap_or_else(|e| panic!("README config reference no longer parses: {e}"));
    assert_eq!(config.backends[0].name, "primary");
    assert!(config.inbound.entra.is_some() && config.inbound.client_credentials.is_some());
}

#[test]
fn every_commented_key_in_the_reference_is_a_real_key() {
    // Uncomment every `# key = value` line that sits inside a table and parse again.
    let block = reference_block();
    let mut uncommented = String::new();
    for line in block.lines() {
        let trimmed = line.trim_start();
        let candidate = trimmed.strip_prefix("# ").unwrap_or(trimmed);
        let is_key = candidate
            .split_once(" = ")
            .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        if trimmed.starts_with("# ") && is_key {
            uncommented.push_str(candidate);
        } else {
            uncommented.push_str(line);
        }
        uncommented.push('\n');
    }
    let text = uncommented
        .replace(
            "sha256 = \"…\"",
            &format!("sha256 = \"{}\"", "ab".repeat(32)),
        )
        .replace(
            "admin_key_sha256 = \"…\"",
            &format!("admin_key_sha256 = \"{}\"", "cd".repeat(32)),
        )
        .replace("<tenant-id>", "72f988bf-86f1-41af-91ab-2d7cd011db47")
        .replace(
            "client_id = \"…\"",
            "client_id = \"00000000-0000-0000-0000-000000000001\"",
        )
        .replace(
            "tenant_id = \"…\"",
            "tenant_id = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"",
        )
        .replace(
            "federated_token_file = \"…\"",
            "# federated_token_file: workload-identity only, shown beside client-secret keys",
        )
        .replace(
            "jwks_url = \"…\"",
            "jwks_url = \"https://login.microsoftonline.com/common/discovery/v2.0/keys\"",
        )
        .replace("kind = \"managed-identity\"", "kind = \"client-secret\"")
        .replace("# emulator = \"http://127.0.0.1:9999\"", "");
    // Unknown keys are rejected, so this only passes if every documented key exists.
    match Config::parse(&text, "README.md (uncommented)", &|_| Some("x".into())) {
        Ok(_) => {}
        Err(e) => panic!("a documented key is not accepted: {e}\n{text}"),
    }
}
