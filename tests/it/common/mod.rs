//! Shared test harness: the emulator as Azure, the proxy in-process or as a child process.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use azure_emulator::{Emulator, EmulatorConfig};
use entra_proxy::config::{Config, KeyDigest};
use entra_proxy::identity::IdentityEnv;
use entra_proxy::server;
use entra_proxy::state::AppState;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

pub const KEY: &str = "test-key-team-a";
pub const COGNITIVE_AUD: &str = "https://cognitiveservices.azure.com";

/// A running proxy in front of a running emulator.
pub struct Harness {
    pub emulator: Emulator,
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Harness {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// The base config: one backend on the emulator, models, and the test key.
pub fn base_config(emulator: &url::Url) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"

[azure]
emulator = "{emulator}"

[identity]
kind = "managed-identity"

[[backends]]
name = "primary"
endpoint = "{emulator}"
api_version = "2024-10-21"

[[models]]
name = "gpt-4o"
backend = "primary"
deployment = "gpt-4o"

[[models]]
name = "embed"
backend = "primary"
deployment = "text-embedding-3-small"

[[keys]]
name = "team-a"
sha256 = "{digest}"
"#,
        digest = KeyDigest::of(KEY).to_hex()
    )
}

/// A config whose one backend, `svc`, is an Azure AI service the emulator plays at
/// `endpoint`; `backend` adds keys to its table (`service`, `resource_id`, `region`), `extra`
/// adds tables after it. The test key is `team-a`'s.
pub fn service_config(
    emulator: &url::Url,
    endpoint: &url::Url,
    backend: &str,
    extra: &str,
) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"

[azure]
emulator = "{emulator}"

[identity]
kind = "managed-identity"

[[backends]]
name = "svc"
endpoint = "{endpoint}"
{backend}

[[keys]]
name = "team-a"
sha256 = "{digest}"

{extra}
"#,
        digest = KeyDigest::of(KEY).to_hex()
    )
}

/// Another listener of the emulator playing a resource of `kind` with `options`.
pub async fn add_service(
    emulator: &Emulator,
    kind: azure_emulator::ResourceKind,
    options: azure_emulator::ServiceOptions,
) -> url::Url {
    emulator
        .add_service(kind, options)
        .await
        .expect("service listener starts")
}

pub async fn emulator() -> Emulator {
    emulator_with(EmulatorConfig::default()).await
}

pub async fn emulator_with(config: EmulatorConfig) -> Emulator {
    Emulator::start(config).await.expect("emulator starts")
}

/// Starts the proxy in-process with the given config text.
pub async fn proxy(emulator: Emulator, config_text: &str) -> Harness {
    let config = Config::parse(config_text, "test config", &|_| None).expect("config is valid");
    let state = Arc::new(AppState::build(config, &IdentityEnv::default()).expect("state builds"));
    serve_state(emulator, state).await
}

/// Serves a state built by the test (e.g. with `AppState::build_with`).
pub async fn serve_state(emulator: Emulator, state: Arc<AppState>) -> Harness {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server::serve(listener, state.clone(), async move {
        let _ = rx.await;
    }));
    Harness {
        emulator,
        addr,
        state,
        stop: Some(tx),
        task: Some(task),
    }
}

/// Emulator with defaults and the base config.
pub async fn start() -> Harness {
    let emu = emulator().await;
    let text = base_config(&emu.url());
    proxy(emu, &text).await
}

/// The emulator with defaults, and the base config with `section` (e.g. an `[upstream]`
/// table) added.
pub async fn start_with(section: &str) -> Harness {
    let emu = emulator().await;
    let text = base_config(&emu.url()).replace("[azure]", &format!("{section}\n\n[azure]"));
    proxy(emu, &text).await
}

/// POSTs JSON to the proxy with the test key in `api-key`.
pub async fn post(h: &Harness, path: &str, body: &serde_json::Value) -> reqwest::Response {
    client()
        .post(h.url(path))
        .header("api-key", KEY)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Sends `n` chat completions for gpt-4o at once, each with the header `credential`
/// (name, value), and returns their statuses.
pub async fn concurrent_chats(h: &Harness, n: usize, credential: (&str, &str)) -> Vec<u16> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let request = client()
            .post(h.url("/v1/chat/completions"))
            .header(credential.0, credential.1)
            .json(&chat_body("gpt-4o"));
        tasks.push(tokio::spawn(async move {
            request.send().await.unwrap().status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses
}

/// Status, error code and message of a proxy error answer.
pub async fn error_of(r: reqwest::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// Reads a streamed body to its end: the text, and whether it broke off with an error.
pub async fn read_stream(r: reqwest::Response) -> (String, bool) {
    use futures_util::StreamExt as _;
    let mut all = String::new();
    let mut stream = r.bytes_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => all.push_str(&String::from_utf8_lossy(&c)),
            Err(_) => return (all, true),
        }
    }
    (all, false)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

pub fn chat_body(model: &str) -> serde_json::Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

/// The `/metrics` text of the proxy listening on `addr`.
pub async fn metrics_text(addr: SocketAddr) -> String {
    client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The proxy's `/status.json` at `addr`.
pub async fn status_json_at(addr: SocketAddr) -> serde_json::Value {
    client()
        .get(format!("http://{addr}/status.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The value of the metric `name` whose labels include every `labels` pair (any labels when
/// `labels` is empty), in the `/metrics` text `text`.
pub fn metric_in(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The value of the metric `name` whose labels include every `labels` pair, read now from
/// the proxy listening on `addr`.
pub async fn metric(addr: SocketAddr, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metric_in(&metrics_text(addr).await, name, labels)
}

/// Waits until `/readyz` says ready (the token keeper has a token).
pub async fn wait_ready(h: &Harness) {
    wait_ready_within(h, Duration::from_secs(5)).await;
}

/// Waits up to `limit` until `/readyz` says ready.
pub async fn wait_ready_within(h: &Harness, limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Ok(r) = client().get(h.url("/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("proxy not ready within {limit:?}");
}

/// The proxy binary built by cargo for integration tests.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_entra-proxy"))
}

/// A child `entra-proxy` process with captured stderr, killed on drop.
pub struct Child {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    /// Everything the child wrote to stderr so far (drained continuously so it never blocks).
    pub stderr: Arc<std::sync::Mutex<String>>,
    drain: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes `config` to a temp file and starts `entra-proxy serve` with `env`; waits until it
/// answers `/healthz`.
pub async fn spawn_binary(config: &str, env: &[(&str, &str)]) -> (Child, tempfile_path::TempPath) {
    let port = free_port();
    let config = config.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let path = tempfile_path::TempPath::new("toml");
    std::fs::write(&path.0, config).unwrap();
    let mut cmd = tokio::process::Command::new(binary());
    cmd.arg("serve")
        .arg("--config")
        .arg(&path.0)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "RUST_LOG",
            "debug,hyper=info,h2=info,reqwest=info,rustls=info",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let stderr = Arc::new(std::sync::Mutex::new(String::new()));
    let drain = child.stderr.take().map(|mut e| {
        let buf = stderr.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt as _;
            let mut chunk = vec![0u8; 8192];
            while let Ok(n) = e.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                buf.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        })
    });
    let c = Child {
        child,
        addr,
        stderr,
        drain,
    };
    for _ in 0..200 {
        if reqwest::get(format!("http://{addr}/healthz")).await.is_ok() {
            return (c, path);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("entra-proxy did not start");
}

/// Stops a child with SIGTERM and returns its stderr.
pub async fn stop_and_collect(mut c: Child) -> (Option<i32>, String) {
    if let Some(pid) = c.child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let mut child = std::mem::replace(
        &mut c.child,
        tokio::process::Command::new("true").spawn().unwrap(),
    );
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    if let Some(d) = c.drain.take() {
        let _ = tokio::time::timeout(Duration::from_secs(5), d).await;
    }
    let stderr = c.stderr.lock().unwrap().clone();
    (status.code(), stderr)
}

pub mod redis;

pub mod tempfile_path {
    //! A file path under the target dir, removed on drop.
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};

    static N: AtomicU64 = AtomicU64::new(0);

    pub struct TempPath(pub PathBuf);

    impl TempPath {
        pub fn new(ext: &str) -> TempPath {
            let dir = std::env::temp_dir().join("entra-proxy-tests");
            std::fs::create_dir_all(&dir).unwrap();
            let n = N.fetch_add(1, Ordering::SeqCst);
            TempPath(dir.join(format!("{}-{n}.{ext}", std::process::id())))
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}
