//! Reload without a restart, against the real binary: keys revoked and added by rewriting the
//! keys file or swapping a Kubernetes `..data` symlink, models and backends added, broken files
//! refused, SIGHUP, no request lost across reloads, and `keys new`/`keys revoke --keys-file`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use azure_emulator::EmulatorConfig;
use entra_proxy::config::KeyDigest;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY_B: &str = "test-key-team-b";
const KEY_C: &str = "test-key-team-c";

/// A proxy binary serving a config in its own directory, killed (and the directory removed)
/// on drop.
struct Proxy {
    child: tokio::process::Child,
    addr: SocketAddr,
    dir: PathBuf,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Proxy {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn hangup(&self) {
        let pid = self.child.id().unwrap();
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn chat(&self, key: &str, model: &str) -> (u16, String, String) {
        let r = client()
            .post(self.url("/v1/chat/completions"))
            .header("api-key", key)
            .json(&chat_body(model))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            return (200, String::new(), String::new());
        }
        error_of(r).await
    }

    /// The value of the first metric line named `name` (any labels), if present.
    async fn metric(&self, name: &str) -> Option<f64> {
        metric(self.addr, name, &[]).await
    }

    async fn metrics_text(&self) -> String {
        metrics_text(self.addr).await
    }

    /// Waits (a few seconds at most) until `key` on `model` answers `status`.
    async fn wait_for(&self, key: &str, model: &str, status: u16) -> Duration {
        let start = Instant::now();
        loop {
            let (got, _, _) = self.chat(key, model).await;
            if got == status {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "still {got}, not {status}, for {model} after 5 s:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the log holds `needle` (lines reach stderr through a background writer).
    async fn wait_log(&self, needle: &str) {
        let start = Instant::now();
        while !self.logs().contains(needle) {
            if start.elapsed() > Duration::from_secs(5) {
                panic!(
                    "{needle:?} not logged:\n{}\n{}",
                    self.logs(),
                    self.metrics_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the counter `name` reaches `at_least`.
    async fn wait_metric(&self, name: &str, at_least: f64) {
        let start = Instant::now();
        loop {
            if self.metric(name).await.is_some_and(|v| v >= at_least) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{name} never reached {at_least}:\n{}\n{}",
                self.metrics_text().await,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn unique_dir() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "entra-proxy-reload-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The base config with its `[[keys]]` moved to `keys_file` (relative to the config).
fn config_with_keys_file(emulator: &url::Url, keys_file: &str, port: u16) -> String {
    let base = base_config(emulator);
    let main = &base[..base.find("[[keys]]").unwrap()];
    main.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        .replace(
            "[azure]",
            &format!("keys_file = \"{keys_file}\"\n\n[azure]"),
        )
}

fn key_block(name: &str, key: &str, extra: &str) -> String {
    format!(
        "[[keys]]\nname = \"{name}\"\nsha256 = \"{}\"\n{extra}\n",
        KeyDigest::of(key).to_hex()
    )
}

/// Replaces `path` whole: a temp file in the same directory renamed over it.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Starts `entra-proxy serve` on `dir/config.toml` and waits until it is ready.
async fn serve(dir: PathBuf, config: &str, port: u16) -> Proxy {
    std::fs::write(dir.join("config.toml"), config).unwrap();
    let mut cmd = tokio::process::Command::new(binary());
    cmd.arg("serve")
        .arg("--config")
        .arg(dir.join("config.toml"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut pipe = child.stderr.take().unwrap();
    let buf = stderr.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt as _;
        let mut chunk = vec![0u8; 8192];
        while let Ok(n) = pipe.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            buf.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    let proxy = Proxy {
        child,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        dir,
        stderr,
    };
    let start = Instant::now();
    loop {
        if let Ok(r) = client().get(proxy.url("/readyz")).send().await
            && r.status() == 200
        {
            return proxy;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "proxy not ready:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A proxy whose keys (team-a, team-b) live in `keys.toml` beside its config.
async fn serve_with_keys_file(emulator: &url::Url) -> Proxy {
    let dir = unique_dir();
    let port = free_port();
    std::fs::write(
        dir.join("keys.toml"),
        format!(
            "{}{}",
            key_block("team-a", KEY, ""),
            key_block("team-b", KEY_B, "")
        ),
    )
    .unwrap();
    serve(
        dir,
        &config_with_keys_file(emulator, "keys.toml", port),
        port,
    )
    .await
}

fn slow_streams() -> EmulatorConfig {
    EmulatorConfig {
        stream_events: 8,
        stream_interval: Duration::from_millis(400),
        ..EmulatorConfig::default()
    }
}

async fn open_stream(p: &Proxy, key: &str) -> reqwest::Response {
    let r = client()
        .post(p.url("/v1/chat/completions"))
        .header("api-key", key)
        .json(&serde_json::json!({
            "model": "gpt-4o", "stream": true,
            "messages": [{"role": "user", "content": "hi"}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r
}

async fn assert_unknown_key(p: &Proxy, key: &str) {
    let (status, code, message) = p.chat(key, "gpt-4o").await;
    assert_eq!(
        (status, code.as_str()),
        (401, "invalid_api_key"),
        "{message}"
    );
    assert!(!message.contains(key), "{message}");
}

#[tokio::test]
async fn a_key_revoked_by_rewriting_the_keys_file_gets_401_while_its_open_stream_finishes() {
    let emu = emulator_with(slow_streams()).await;
    let p = serve_with_keys_file(&emu.url()).await;
    assert_eq!(p.chat(KEY_B, "gpt-4o").await.0, 200);
    let tokens = emu.stats().token_requests;
    let stream = open_stream(&p, KEY_B).await;
    // In place, as an editor or `kubectl cp` would.
    std::fs::write(p.dir.join("keys.toml"), key_block("team-a", KEY, "")).unwrap();
    p.wait_for(KEY_B, "gpt-4o", 401).await;
    assert_unknown_key(&p, KEY_B).await;
    assert_eq!(
        p.chat(KEY, "gpt-4o").await.0,
        200,
        "the other key still works"
    );
    let (text, broken) = read_stream(stream).await;
    assert!(
        !broken,
        "the stream opened before the revocation broke off: {text}"
    );
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_eq!(
        emu.stats().token_requests,
        tokens,
        "a reload acquires no token"
    );
    let logs = p.logs();
    assert!(
        logs.contains("config reloaded: keys removed: team-b"),
        "{logs}"
    );
}

#[tokio::test]
async fn a_kubelet_style_symlink_swap_of_the_keys_file_is_noticed() {
    let emu = emulator().await;
    let dir = unique_dir();
    let port = free_port();
    let keys = dir.join("keys");
    let first = keys.join("..2026_01_01_00_00_00.000000001");
    std::fs::create_dir_all(&first).unwrap();
    std::fs::write(
        first.join("keys.toml"),
        format!(
            "{}{}",
            key_block("team-a", KEY, ""),
            key_block("team-b", KEY_B, "")
        ),
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_01_01_00_00_00.000000001", keys.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/keys.toml", keys.join("keys.toml")).unwrap();
    let config = config_with_keys_file(&emu.url(), "keys/keys.toml", port);
    let p = serve(dir, &config, port).await;
    assert_eq!(p.chat(KEY_B, "gpt-4o").await.0, 200);
    let stream = open_stream(&p, KEY_B).await;
    // The kubelet's update: a new timestamped dir, a new link, renamed over `..data`.
    let second = keys.join("..2026_01_01_00_01_00.000000002");
    std::fs::create_dir_all(&second).unwrap();
    std::fs::write(second.join("keys.toml"), key_block("team-a", KEY, "")).unwrap();
    std::os::unix::fs::symlink("..2026_01_01_00_01_00.000000002", keys.join("..data_tmp")).unwrap();
    std::fs::rename(keys.join("..data_tmp"), keys.join("..data")).unwrap();
    std::fs::remove_dir_all(&first).unwrap();
    p.wait_for(KEY_B, "gpt-4o", 401).await;
    assert_unknown_key(&p, KEY_B).await;
    assert_eq!(p.chat(KEY, "gpt-4o").await.0, 200);
    let (text, broken) = read_stream(stream).await;
    assert!(!broken && text.contains("[DONE]"), "{text}");
}

#[tokio::test]
async fn keys_models_and_backends_added_apply_without_restart_or_new_token() {
    let emu = emulator().await;
    let p = serve_with_keys_file(&emu.url()).await;
    assert_eq!(p.chat(KEY, "gpt-4o").await.0, 200);
    let tokens = emu.stats().token_requests;
    let hash_before = p.metrics_text().await;

    // A new key.
    assert_unknown_key(&p, KEY_C).await;
    let keys_path = p.dir.join("keys.toml");
    let mut keys = std::fs::read_to_string(&keys_path).unwrap();
    keys.push_str(&key_block("team-c", KEY_C, ""));
    replace_file(&keys_path, &keys);
    p.wait_for(KEY_C, "gpt-4o", 200).await;

    // A key's models narrowed.
    let narrowed = keys.replacen(
        &key_block("team-a", KEY, ""),
        &key_block("team-a", KEY, "models = [\"embed\"]"),
        1,
    );
    replace_file(&keys_path, &narrowed);
    p.wait_for(KEY, "gpt-4o", 403).await;
    let (status, code, message) = p.chat(KEY, "gpt-4o").await;
    assert_eq!(
        (status, code.as_str()),
        (403, "model_not_allowed"),
        "{message}"
    );

    // A backend and a model on it (the same emulator under another host name).
    let port = emu.url().port().unwrap();
    let mut config = std::fs::read_to_string(p.config_path()).unwrap();
    config.push_str(&format!(
        "\n[[backends]]\nname = \"second\"\nendpoint = \"http://localhost:{port}/\"\n\n[[models]]\nname = \"gpt-4o-second\"\nbackend = \"second\"\ndeployment = \"gpt-4o\"\n"
    ));
    replace_file(&p.config_path(), &config);
    p.wait_for(KEY_C, "gpt-4o-second", 200).await;
    let last = emu.requests().pop().unwrap();
    assert_eq!(last.header("host"), Some(&*format!("localhost:{port}")));

    assert_eq!(
        emu.stats().token_requests,
        tokens,
        "no new token for the same scope"
    );
    assert!(p.metric("entra_proxy_config_reloads_total").await.unwrap() >= 3.0);
    assert_eq!(
        p.metric("entra_proxy_config_reload_failures_total").await,
        Some(0.0)
    );
    let text = p.metrics_text().await;
    let current: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("entra_proxy_config_info{") && l.ends_with(" 1"))
        .collect();
    assert_eq!(current.len(), 1, "one current hash:\n{text}");
    assert!(
        !hash_before.contains(current[0]),
        "the hash changed:\n{text}"
    );
    assert!(
        p.metric("entra_proxy_config_loaded_timestamp_seconds")
            .await
            .unwrap()
            > 1.7e9
    );

    for line in [
        "config reloaded: keys added: team-c",
        "config reloaded: keys changed: team-a",
        "config reloaded: backends added: second; models added: gpt-4o-second",
    ] {
        p.wait_log(line).await;
    }
    let logs = p.logs();
    for secret in [KEY, KEY_B, KEY_C] {
        assert!(!logs.contains(secret), "log leaked a key:\n{logs}");
        let digest = KeyDigest::of(secret).to_hex();
        assert!(!logs.contains(&digest[..16]), "log shows a digest:\n{logs}");
    }
}

#[tokio::test]
async fn a_broken_file_keeps_the_old_config_serving_and_counts_a_failure() {
    let emu = emulator().await;
    let p = serve_with_keys_file(&emu.url()).await;
    let keys_path = p.dir.join("keys.toml");
    let good = std::fs::read_to_string(&keys_path).unwrap();
    let keys_shown = keys_path.display().to_string();
    let config_shown = p.config_path().display().to_string();
    let good_config = std::fs::read_to_string(p.config_path()).unwrap();

    let broken = [
        (
            keys_path.clone(),
            format!("{good}[[keys]\n"),
            format!("{keys_shown}: line 9, column 8: unclosed array table"),
        ),
        (
            p.config_path(),
            format!("{good_config}\n[upstream]\nconect_timeout_secs = 3\n"),
            format!(
                "{config_shown}: upstream.conect_timeout_secs: unknown field `conect_timeout_secs`"
            ),
        ),
        (
            keys_path.clone(),
            format!("{good}{}", key_block("team-a", KEY_C, "")),
            format!(
                "{keys_shown}: keys[2].name: duplicate key name \"team-a\" (also defined at {keys_shown}: keys[0])"
            ),
        ),
    ];
    for (i, (path, text, logged)) in broken.iter().enumerate() {
        replace_file(path, text);
        p.wait_metric("entra_proxy_config_reload_failures_total", (i + 1) as f64)
            .await;
        p.wait_log(logged).await;
        assert_eq!(p.chat(KEY, "gpt-4o").await.0, 200, "the old config serves");
        assert_eq!(p.chat(KEY_B, "gpt-4o").await.0, 200);
        let ready = client().get(p.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200);
        // Back to the good file: it loads again (nothing changed).
        let good_text = if path == &keys_path {
            &good
        } else {
            &good_config
        };
        replace_file(path, good_text);
        p.wait_metric("entra_proxy_config_reloads_total", (i + 1) as f64)
            .await;
    }
    let failures = p.logs().matches("config reload failed").count();
    assert_eq!(failures, 3, "one line per broken version:\n{}", p.logs());
    // Fixed: the new one applies.
    replace_file(&keys_path, &key_block("team-a", KEY, ""));
    p.wait_for(KEY_B, "gpt-4o", 401).await;
    assert_eq!(
        p.metric("entra_proxy_config_reload_failures_total").await,
        Some(3.0)
    );
}

#[tokio::test]
async fn sighup_reloads_at_once_and_reloads_under_load_lose_no_request() {
    let emu = emulator().await;
    let p = serve_with_keys_file(&emu.url()).await;
    // Nothing changed, so polling has nothing to do: the count moves by the signal alone.
    assert_eq!(
        p.metric("entra_proxy_config_reloads_total").await,
        Some(0.0)
    );
    p.hangup();
    p.wait_metric("entra_proxy_config_reloads_total", 1.0).await;
    p.wait_log("trigger=\"SIGHUP\"").await;

    // 200 requests in flight while the keys file changes and SIGHUP arrives 20 times.
    let keys_path = p.dir.join("keys.toml");
    let base = std::fs::read_to_string(&keys_path).unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let request = client()
            .post(p.url("/v1/chat/completions"))
            .header("api-key", if i % 2 == 0 { KEY } else { KEY_B })
            .json(&chat_body("gpt-4o"));
        tasks.push(tokio::spawn(async move {
            match request.send().await {
                Ok(r) => r.status().as_u16(),
                Err(e) => panic!("request failed: {e}"),
            }
        }));
        if i % 10 == 0 {
            let extra = if (i / 10) % 2 == 0 {
                key_block("team-c", KEY_C, "")
            } else {
                String::new()
            };
            replace_file(&keys_path, &format!("{base}{extra}"));
            p.hangup();
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    p.wait_metric("entra_proxy_config_reloads_total", 21.0)
        .await;
    assert_eq!(
        p.metric("entra_proxy_config_reload_failures_total").await,
        Some(0.0)
    );
}

fn run_keys(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(binary())
        .args(args)
        .env_clear()
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn keys_new_and_revoke_edit_the_keys_file_a_running_proxy_watches() {
    let emu = emulator().await;
    let p = serve_with_keys_file(&emu.url()).await;
    let keys_path = p.dir.join("keys.toml");
    let file = keys_path.to_str().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&keys_path, std::fs::Permissions::from_mode(0o640)).unwrap();
    }

    let (code, stdout, stderr) =
        run_keys(&["keys", "new", "--name", "team-new", "--keys-file", file]);
    assert_eq!(code, 0, "{stderr}");
    let key = stdout
        .lines()
        .find(|l| l.starts_with("ep-"))
        .unwrap()
        .to_string();
    assert!(!std::fs::read_to_string(&keys_path).unwrap().contains(&key));
    p.wait_for(&key, "gpt-4o", 200).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&keys_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "the file keeps its mode");
    }

    let (code, _, stderr) = run_keys(&["keys", "new", "--name", "team-new", "--keys-file", file]);
    assert_eq!(code, 64);
    assert_eq!(
        stderr.trim(),
        format!(
            "entra-proxy: {file}: a key named \"team-new\" already exists; revoke it first or pick another name"
        )
    );

    let (code, _, stderr) = run_keys(&["keys", "revoke", "--name", "nobody", "--keys-file", file]);
    assert_eq!(code, 64);
    assert_eq!(
        stderr.trim(),
        format!(
            "entra-proxy: {file}: no key named \"nobody\"; keys in the file: team-a, team-b, team-new"
        )
    );

    let (code, _, stderr) =
        run_keys(&["keys", "revoke", "--name", "team-new", "--keys-file", file]);
    assert_eq!(code, 0, "{stderr}");
    p.wait_for(&key, "gpt-4o", 401).await;
    assert_eq!(p.chat(KEY, "gpt-4o").await.0, 200);

    // A malformed file is refused and left byte for byte.
    let malformed = "[[keys]]\nname = \"team-a\"\nsha256 = \"00\"\nmodel = [\"typo\"]\n# keep me\n";
    std::fs::write(&keys_path, malformed).unwrap();
    for args in [
        vec!["keys", "new", "--name", "x", "--keys-file", file],
        vec!["keys", "revoke", "--name", "team-a", "--keys-file", file],
    ] {
        let (code, stdout, stderr) = run_keys(&args);
        assert_eq!(code, 64, "{args:?}: {stderr}");
        assert!(
            stdout.is_empty(),
            "no key printed for a refused edit: {stdout}"
        );
        assert!(
            stderr.contains("not a keys file, left unchanged")
                && stderr.contains("unknown field `model`"),
            "{stderr}"
        );
        assert_eq!(std::fs::read_to_string(&keys_path).unwrap(), malformed);
    }
}

/// Waits until a bearer `token` gets `status` on a chat completion.
async fn wait_for_token(p: &Proxy, token: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = client()
            .post(p.url("/v1/chat/completions"))
            .bearer_auth(token)
            .json(&chat_body("gpt-4o"))
            .send()
            .await
            .unwrap();
        if r.status().as_u16() == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {} instead of {status}:\n{}",
            r.status(),
            p.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_identity_added_and_revoked_in_the_keys_file_applies_without_restart() {
    const APP: &str = "5e5c3f1a-3333-4000-8000-0000000000a3";
    let emu = emulator().await;
    let dir = unique_dir();
    let port = free_port();
    let keys_path = dir.join("keys.toml");
    std::fs::write(&keys_path, key_block("team-a", KEY, "")).unwrap();
    let config = format!(
        "{}\n[inbound.entra]\ntenants = [\"{}\"]\naudiences = [\"api://entra-proxy\"]\nunmatched = \"deny\"\n",
        config_with_keys_file(&emu.url(), "keys.toml", port),
        emu.config().tenant_id
    );
    let p = serve(dir, &config, port).await;
    let mut spec = azure_emulator::MintSpec::new("api://entra-proxy");
    spec.appid = Some(APP.into());
    let token = emu.mint(&spec);
    wait_for_token(&p, &token, 403).await;

    // Added: the app is admitted under its name.
    let identity = format!("[[identities]]\nname = \"search-app\"\napp_id = \"{APP}\"\n");
    replace_file(
        &keys_path,
        &format!("{}{identity}", key_block("team-a", KEY, "")),
    );
    wait_for_token(&p, &token, 200).await;
    p.wait_log("config reloaded: identities added: search-app")
        .await;

    // A block that matches nothing is refused; the identity keeps serving.
    replace_file(
        &keys_path,
        &format!(
            "{}{identity}[[identities]]\nname = \"broken\"\nmodels = [\"gpt-4o\"]\n",
            key_block("team-a", KEY, "")
        ),
    );
    p.wait_metric("entra_proxy_config_reload_failures_total", 1.0)
        .await;
    p.wait_log("identities[1]: identity \"broken\" matches nothing")
        .await;
    wait_for_token(&p, &token, 200).await;

    // Revoked.
    replace_file(&keys_path, &key_block("team-a", KEY, ""));
    wait_for_token(&p, &token, 403).await;
    p.wait_log("config reloaded: identities removed: search-app")
        .await;
    assert_eq!(p.chat(KEY, "gpt-4o").await.0, 200, "the key still works");
}

#[tokio::test]
async fn a_keys_file_grown_past_the_bound_is_refused_on_reload_and_the_old_keys_keep_serving() {
    let emu = emulator().await;
    let p = serve_with_keys_file(&emu.url()).await;
    assert_eq!(p.chat(KEY_B, "gpt-4o").await.0, 200);
    // Sparse: the file is 16 MiB + 1 byte long without the bytes being written.
    let keys = p.dir.join("keys.toml");
    let f = std::fs::OpenOptions::new().write(true).open(&keys).unwrap();
    f.set_len(entra_proxy::config::MAX_FILE_BYTES + 1).unwrap();
    drop(f);
    p.wait_log("config reload failed").await;
    let logs = p.logs();
    assert!(
        logs.contains("over the limit of 16777216 bytes (16 MiB) for a config or keys file"),
        "{logs}"
    );
    assert_eq!(p.chat(KEY_B, "gpt-4o").await.0, 200, "the old keys serve");
    // The config file itself is bounded the same way at start-up.
    let big = p.dir.join("big.toml");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(entra_proxy::config::MAX_FILE_BYTES + 1)
        .unwrap();
    let out = std::process::Command::new(binary())
        .args(["config", "check", "--config"])
        .arg(&big)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("over the limit of 16777216 bytes"), "{err}");
}

#[tokio::test]
async fn a_keys_file_named_before_it_exists_is_loaded_once_it_appears() {
    let emu = emulator().await;
    let p = serve_with_keys_file(&emu.url()).await;
    let port = p.addr.port();
    // The config now names a keys file that is not there yet: refused, the old keys serve.
    replace_file(
        &p.config_path(),
        &config_with_keys_file(&emu.url(), "later.toml", port),
    );
    p.wait_metric("entra_proxy_config_reload_failures_total", 1.0)
        .await;
    p.wait_log("later.toml: cannot read").await;
    assert_eq!(p.chat(KEY, "gpt-4o").await.0, 200, "the old keys serve");
    // It appears: loaded without a SIGHUP or another edit of the config.
    replace_file(&p.dir.join("later.toml"), &key_block("team-c", KEY_C, ""));
    p.wait_for(KEY_C, "gpt-4o", 200).await;
    assert_eq!(p.chat(KEY, "gpt-4o").await.0, 401, "team-a is not in it");
    assert_eq!(
        p.metric("entra_proxy_config_reload_failures_total").await,
        Some(1.0),
        "the refusal was reported once, not at every look"
    );
    assert_eq!(p.logs().matches("config reload failed").count(), 1);
}
