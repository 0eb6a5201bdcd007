//! The deployment assets under infra/: the config files that the Kustomize base and the Bicep
//! template ship pass the real binary's `config check`, and the Bicep template grants the
//! data-plane roles that the proxy's own diagnosis names.

use crate::common::*;
use entra_proxy::cloud::{Cloud, HostKind};
use entra_proxy::config::KeyDigest;
use entra_proxy::diagnose::{Context, DiagnosisCode, classify};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where both configs expect the keys file (mounted from a Secret, Key Vault or a Container
/// Apps secret); the test points it at a temp file.
const KEYS_PATH: &str = "/etc/entra-proxy/keys/keys.toml";

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The `${NAME}` references in a config file's values (comment lines left out).
fn env_refs(config: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in config.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            let after = &rest[start + 2..];
            let end = after.find('}').expect("closed ${");
            let name = after[..end].to_string();
            if !names.contains(&name) {
                names.push(name);
            }
            rest = &after[end..];
        }
    }
    names
}

/// A temp dir under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "entra-proxy-infra-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `config` (keys path rewritten into a temp dir) and a keys file of fake keys, runs
/// `entra-proxy config check` with only `env` set, and returns (exit code, stdout, stderr).
fn config_check(tag: &str, config: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    assert!(
        config.contains(&format!("keys_file = \"{KEYS_PATH}\"")),
        "the shipped config reads its keys from {KEYS_PATH}"
    );
    let dir = TempDir::new(tag);
    let keys = dir.0.join("keys.toml");
    std::fs::write(
        &keys,
        format!(
            "[[keys]]\nname = \"team-a\"\nsha256 = \"{}\"\n",
            KeyDigest::of("ep-infra-test-fake-key").to_hex()
        ),
    )
    .unwrap();
    let config_path = dir.0.join("config.toml");
    std::fs::write(
        &config_path,
        config.replace(KEYS_PATH, keys.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["config", "check", "--config", config_path.to_str().unwrap()])
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `- NAME=value` literals of the `entra-proxy-env` generator in a kustomization.yaml.
fn kustomize_env_literals(kustomization: &str) -> Vec<(String, String)> {
    let generator = kustomization
        .split("- name: entra-proxy-env")
        .nth(1)
        .expect("an entra-proxy-env configMapGenerator");
    generator
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("literals:"))
        .skip(1)
        .map_while(|l| l.trim_start().strip_prefix("- "))
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

#[test]
fn kustomize_base_config_passes_config_check() {
    let kustomization = repo_file("infra/kubernetes/base/kustomization.yaml");
    assert!(
        kustomization.contains("files:\n      - config.toml"),
        "the ConfigMap is generated from base/config.toml"
    );
    let deployment = repo_file("infra/kubernetes/base/deployment.yaml");
    assert!(deployment.contains("mountPath: /etc/entra-proxy\n"));
    assert!(deployment.contains("mountPath: /etc/entra-proxy/keys\n"));
    assert!(deployment.contains(r#"args: ["serve", "--config", "/etc/entra-proxy/config.toml"]"#));
    let config = repo_file("infra/kubernetes/base/config.toml");

    let literals = kustomize_env_literals(&kustomization);
    // What the workload-identity webhook injects into the pod (fake values).
    let mut env: Vec<(&str, &str)> = vec![
        ("AZURE_CLIENT_ID", "11111111-2222-3333-4444-555555555555"),
        ("AZURE_TENANT_ID", "66666666-7777-8888-9999-000000000000"),
        (
            "AZURE_FEDERATED_TOKEN_FILE",
            "/var/run/secrets/azure/tokens/azure-identity-token",
        ),
    ];
    env.extend(literals.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    for name in env_refs(&config) {
        assert!(
            env.iter().any(|(k, _)| *k == name),
            "config.toml reads ${{{name}}}, which neither the entra-proxy-env ConfigMap nor the webhook sets"
        );
    }

    let (code, stdout, stderr) = config_check("k8s", &config, &env);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("https://myres.openai.azure.com"),
        "{stdout}"
    );
}

/// The `{ name: 'X', value: … }` environment variables main.bicep sets on the container.
fn bicep_container_env(bicep: &str) -> Vec<String> {
    bicep
        .lines()
        .filter_map(|l| {
            let rest = l.trim_start().strip_prefix("{ name: '")?;
            let (name, rest) = rest.split_once('\'')?;
            rest.trim_start()
                .starts_with(", value:")
                .then(|| name.to_string())
        })
        .collect()
}

#[test]
fn bicep_config_passes_config_check_for_both_account_kinds() {
    let bicep = repo_file("infra/bicep/main.bicep");
    assert!(bicep.contains("value: loadTextContent('config.toml')"));
    assert!(bicep.contains("{ volumeName: 'config', mountPath: '/etc/entra-proxy' }"));
    assert!(bicep.contains("{ volumeName: 'keys', mountPath: '/etc/entra-proxy/keys' }"));
    let config = repo_file("infra/bicep/config.toml");
    let set = bicep_container_env(&bicep);
    for name in env_refs(&config) {
        assert!(
            set.contains(&name),
            "config.toml reads ${{{name}}}, which main.bicep does not set (it sets {set:?})"
        );
    }
    // The endpoints main.bicep derives for kind OpenAI and kind AIServices (Foundry).
    for endpoint in [
        "https://entra-proxy-abc123.openai.azure.com",
        "https://entra-proxy-abc123.services.ai.azure.com",
    ] {
        let env = [
            ("AZURE_CLIENT_ID", "11111111-2222-3333-4444-555555555555"),
            ("ENTRA_PROXY_ENDPOINT", endpoint),
            ("ENTRA_PROXY_DEPLOYMENT", "gpt-4o"),
            ("ENTRA_PROXY_MODEL", "gpt-4o"),
            // What Container Apps sets for managed identity (never called by `config check`).
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:42356/msi/token"),
            ("IDENTITY_HEADER", "fake-identity-header"),
        ];
        let (code, stdout, stderr) = config_check("bicep", &config, &env);
        assert_eq!(code, 0, "{endpoint}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(stdout.contains(endpoint), "{stdout}");
    }
}

/// `name:` and `id:` of one entry of main.bicep's `dataPlaneRoles`.
fn bicep_role(bicep: &str, kind: &str) -> (String, String) {
    let block = bicep
        .split("var dataPlaneRoles = {")
        .nth(1)
        .expect("var dataPlaneRoles in main.bicep")
        .split(&format!("{kind}: {{"))
        .nth(1)
        .unwrap_or_else(|| panic!("dataPlaneRoles.{kind}"));
    let field = |key: &str| {
        let after = block.split(&format!("{key}: '")).nth(1).unwrap();
        after[..after.find('\'').unwrap()].to_string()
    };
    (field("name"), field("id"))
}

/// The roles are private constants of the diagnosis; what users see is the fix it writes for
/// Azure's 403 PermissionDenied. So the test asks the public `classify` for that fix, for a
/// host of each account kind, and requires the Bicep role's name (quoted, as in the printed
/// `az role assignment create --role "…"`) and its role definition id in it.
#[test]
fn bicep_roles_match_the_roles_the_diagnosis_names() {
    let bicep = repo_file("infra/bicep/main.bicep");
    assert!(bicep.contains(
        "roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.id)"
    ));
    assert!(
        bicep.contains("scope: account\n"),
        "the role is assigned on the account"
    );
    let body = br#"{"error":{"code":"PermissionDenied","message":"The principal `aaaaaaaa-1111-2222-3333-444444444444` lacks the required data action `Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action` to perform `POST /openai/deployments/{deployment-id}/chat/completions` operation."}}"#;
    for (kind, host, host_kind, audience) in [
        (
            "OpenAI",
            "entra-proxy-abc123.openai.azure.com",
            HostKind::OpenAi,
            "https://cognitiveservices.azure.com",
        ),
        (
            "AIServices",
            "entra-proxy-abc123.services.ai.azure.com",
            HostKind::Foundry,
            "https://ai.azure.com",
        ),
    ] {
        let (name, id) = bicep_role(&bicep, kind);
        let context = Context {
            backend: "primary",
            host,
            cloud: Cloud::Public,
            host_kind: Some(host_kind),
            expected_audience: audience,
            token: None,
            expected_tenant: None,
            deployment: Some("gpt-4o"),
            known_deployments: &[],
            request_path: None,
            endpoint_path: "/",
            api_version: Some("2024-10-21"),
            now: 1_735_812_000,
        };
        let d = classify(403, None, body, &context).unwrap();
        assert_eq!(d.code, DiagnosisCode::MissingRole);
        assert!(
            d.fix.contains(&format!("\"{name}\"")) && d.fix.contains(&id),
            "main.bicep grants {name} ({id}) for kind {kind}; the diagnosis says: {}",
            d.fix
        );
    }
}
