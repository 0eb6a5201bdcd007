//! The real binary: config errors, App Service managed identity through the environment,
//! secrets kept out of logs, SIGTERM, `demo`, `keys` and `config check`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use entra_proxy::config::KeyDigest;
use std::process::Command;

fn run(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write as _;
    let mut child = Command::new(binary())
        .args(args)
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_config_exits_64_with_one_line_naming_file_and_key() {
    let path = tempfile_path::TempPath::new("toml");
    let cases = [
        (
            "[server]\nlisen = '1'\n",
            "server.lisen: unknown field `lisen`",
        ),
        (
            "[[backends]]\nname='a'\nendpoint='not a url'\n",
            "backends[0].endpoint",
        ),
        (
            "[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\n[[keys]]\nname='k'\nsha256='123'\n",
            "keys[0].sha256: must be 64 hex characters",
        ),
        (
            "[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\n[[models]]\nname='m'\nbackend='nope'\ndeployment='d'\n",
            "models[0].backend: no backend named \"nope\"",
        ),
        ("[server\n", "line 1"),
    ];
    for (text, expected) in cases {
        std::fs::write(&path.0, text).unwrap();
        let (code, _, stderr) = run(&["serve", "--config", path.0.to_str().unwrap()], None);
        assert_eq!(code, 64, "{text}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(path.0.to_str().unwrap()), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
    let (code, _, stderr) = run(&["serve", "--config", "/nonexistent/entra.toml"], None);
    assert_eq!(code, 64);
    assert!(
        stderr.contains("/nonexistent/entra.toml: cannot read"),
        "{stderr}"
    );
}

#[tokio::test]
async fn app_service_managed_identity_from_the_environment() {
    let emu = emulator().await;
    let msi = format!("{}msi/token", emu.url());
    // No [azure] emulator: the standard IDENTITY_ENDPOINT mechanism alone reaches the emulator.
    let config =
        base_config(&emu.url()).replace(&format!("[azure]\nemulator = \"{}\"\n", emu.url()), "");
    let (child, _cfg) = spawn_binary(
        &config,
        &[
            ("IDENTITY_ENDPOINT", msi.as_str()),
            ("IDENTITY_HEADER", "emulator-identity-header"),
        ],
    )
    .await;
    let r = client()
        .post(format!("http://{}/v1/chat/completions", child.addr))
        .header("api-key", KEY)
        .json(&chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let stats = emu.stats();
    assert_eq!(stats.msi_token_requests, 1, "{stats:?}");
    assert_eq!(stats.imds_token_requests, 0);
    assert_eq!(
        emu.requests()[0].bearer_audience.as_deref(),
        Some(COGNITIVE_AUD)
    );
    let (code, logs) = stop_and_collect(child).await;
    assert_eq!(code, Some(0), "SIGTERM is a clean exit: {logs}");
    assert!(
        logs.contains("IDENTITY_ENDPOINT"),
        "the log names the credential: {logs}"
    );
    // A plain-HTTP backend that is not the emulator is allowed, with a warning at start.
    assert!(
        logs.lines().any(|l| l.contains(" WARN ")
            && l.contains("config: backends[0].endpoint: http://127.0.0.1:")
            && l.contains("is plain HTTP")),
        "{logs}"
    );
}

#[tokio::test]
async fn secrets_keys_and_tokens_never_reach_the_logs() {
    let emu = emulator().await;
    let tenant = emu.config().tenant_id.clone();
    let secret = "Sup3r~Secret.Value_123";
    emu.register_app(&tenant, "11111111-2222-3333-4444-555555555555", secret);
    let config = base_config(&emu.url()).replace(
        "[identity]\nkind = \"managed-identity\"\n",
        &format!(
            "[identity]\nkind = \"client-secret\"\ntenant_id = \"{tenant}\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"\nclient_secret = \"${{AZURE_CLIENT_SECRET}}\"\n"
        ),
    );
    let (child, _cfg) = spawn_binary(&config, &[("AZURE_CLIENT_SECRET", secret)]).await;
    let addr = child.addr;
    for (name, value) in [("api-key", KEY), ("api-key", "a-wrong-key-value")] {
        let r = client()
            .post(format!("http://{addr}/v1/chat/completions"))
            .header(name, value)
            .json(&chat_body("gpt-4o"))
            .send()
            .await
            .unwrap();
        let body = r.text().await.unwrap();
        assert!(!body.contains(secret));
    }
    let upstream_token = emu.requests()[0]
        .header("authorization")
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_string();
    let (_, logs) = stop_and_collect(child).await;
    assert!(logs.contains("acquired token"), "{logs}");
    for needle in [secret, KEY, "a-wrong-key-value", upstream_token.as_str()] {
        assert!(!logs.contains(needle), "log leaked {needle:?}:\n{logs}");
    }
    // The token's signature part alone must not appear either.
    let sig = upstream_token.rsplit('.').next().unwrap();
    assert!(!logs.contains(sig));
}

#[cfg(feature = "demo")]
#[test]
fn demo_once_shows_the_swap() {
    let port = free_port();
    let (code, stdout, stderr) = run(
        &["demo", "--once", "--listen", &format!("127.0.0.1:{port}")],
        None,
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("Authorization: Bearer"), "{stdout}");
    assert!(
        stdout.contains("aud=https://cognitiveservices.azure.com"),
        "{stdout}"
    );
    assert!(stdout.contains("api-key header: absent"), "{stdout}");
    assert!(stdout.contains("curl"), "{stdout}");
    assert!(
        stdout.contains("AzureOpenAI(") && stdout.contains("OpenAI(base_url="),
        "{stdout}"
    );
    assert!(stdout.contains("pip install openai"), "{stdout}");
    let config = demo_config_path(&stdout);
    assert!(!config.exists(), "removed at exit: {}", config.display());
}

/// The config path `demo` printed.
#[cfg(feature = "demo")]
fn demo_config_path(stdout: &str) -> std::path::PathBuf {
    const SAID: &str = "Config the proxy runs (removed when the demo exits): ";
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(SAID))
        .unwrap_or_else(|| panic!("no config path in {stdout}"));
    std::path::PathBuf::from(line)
}

#[cfg(feature = "demo")]
#[tokio::test]
async fn demo_says_where_its_emulator_and_config_are_and_keeps_the_config_only_while_it_runs() {
    use tokio::io::AsyncBufReadExt as _;
    let port = free_port();
    let mut child = tokio::process::Command::new(binary())
        .args(["demo", "--listen", &format!("127.0.0.1:{port}")])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = String::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            stdout.push_str(&line);
            stdout.push('\n');
            if line.starts_with("Serving until Ctrl-C") {
                break;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), read)
        .await
        .unwrap();
    let emulator = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Azure emulator (Entra ID, managed identity, Azure OpenAI): "))
        .unwrap_or_else(|| panic!("no emulator address in {stdout}"))
        .to_string();
    assert!(emulator.starts_with("http://127.0.0.1:"), "{emulator}");
    let config = demo_config_path(&stdout);
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains(&format!("emulator = \"{emulator}/\"")),
        "{text}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&config).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "owner only: {mode:o}");
    }
    // /status.json names the config it runs by the hash of that very text.
    let status = status_json_at(([127, 0, 0, 1], port).into()).await;
    assert_eq!(status["config_hash"], KeyDigest::of(&text).to_hex());
    // The emulator is where the demo said.
    assert!(reqwest::get(&emulator).await.is_ok());
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(std::time::Duration::from_secs(15), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!config.exists(), "removed at exit: {}", config.display());
}

#[test]
fn keys_new_prints_a_block_that_matches_the_key() {
    let (code, stdout, _) = run(&["keys", "new", "--name", "team-b"], None);
    assert_eq!(code, 0);
    let key = stdout.lines().find(|l| l.starts_with("ep-")).unwrap();
    let digest = KeyDigest::of(key).to_hex();
    assert!(
        stdout.contains(&format!("sha256 = \"{digest}\"")),
        "{stdout}"
    );
    assert!(stdout.contains("name = \"team-b\""));
    let (code, stdout, _) = run(
        &["keys", "hash", "--name", "old", "--legacy"],
        Some("0123456789abcdef\n"),
    );
    assert_eq!(code, 0);
    assert!(stdout.contains(&KeyDigest::of("0123456789abcdef").to_hex()));
    assert!(stdout.contains("legacy = true"));
    assert!(!stdout.contains("0123456789abcdef\n"));
}

#[test]
fn config_check_prints_the_normalized_endpoint() {
    let path = tempfile_path::TempPath::new("toml");
    std::fs::write(
        &path.0,
        "[identity]\nkind='client-secret'\ntenant_id='t'\nclient_id='c'\nclient_secret='do-not-print-me'\n[[backends]]\nname='a'\nendpoint='https://res.openai.azure.com/openai/deployments/gpt-4.1/chat/completions?api-version=2025-01-01-preview'\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run(
        &["config", "check", "--config", path.0.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("endpoint https://res.openai.azure.com api_version 2025-01-01-preview"),
        "{stdout}"
    );
    assert!(stdout.contains("normalized:"), "{stdout}");
    assert!(!stdout.contains("do-not-print-me"));
    assert!(stdout.contains("client_secret = ****"));
}
