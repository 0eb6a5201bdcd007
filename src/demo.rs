//! `entra-proxy demo`: the emulator and the proxy on loopback, a generated key, one request
//! that shows the key going in and a bearer token coming out, where the emulator and the
//! config are, and commands to try next.

use crate::claims;
use crate::config::{Config, KeyDigest};
use crate::identity::IdentityEnv;
use crate::server;
use crate::state::{AppState, Origin};
use azure_emulator::{Emulator, EmulatorConfig};
use std::net::SocketAddr;
use std::sync::Arc;

/// Why the demo stopped. The CLI turns it into one line and an exit code.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The demo only ever listens on loopback.
    #[error("the demo listens on loopback only; got {0}")]
    NotLoopback(SocketAddr),
    /// The address given with `--listen` cannot be bound.
    #[error("cannot listen on {addr}: {source} (pick another port with --listen 127.0.0.1:PORT)")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the emulator: {0}")]
    Emulator(std::io::Error),
    #[error("the system random number generator failed")]
    Random,
    /// The demo's own config or state did not build (a bug, not the user's doing).
    #[error("{0}")]
    Setup(String),
    #[error("the demo request failed: {0}")]
    Request(String),
    #[error("the proxy stopped with an error: {0}")]
    Server(String),
}

/// The demo's config: the emulator stands in for Entra, IMDS and the Azure OpenAI resource.
pub fn demo_config(listen: SocketAddr, emulator: &url::Url, digest: &KeyDigest) -> String {
    format!(
        r#"[server]
listen = "{listen}"

[azure]
cloud = "public"
emulator = "{emulator}"

[identity]
kind = "managed-identity"

[[backends]]
name = "demo"
endpoint = "{emulator}"
api_version = "2024-10-21"

[[models]]
name = "gpt-4o"
backend = "demo"
deployment = "gpt-4o"

[[models]]
name = "text-embedding-3-small"
backend = "demo"
deployment = "text-embedding-3-small"

[[keys]]
name = "demo"
sha256 = "{digest}"
"#,
        digest = digest.to_hex()
    )
}

/// Runs the demo: prints the swap and what to try, then serves until Ctrl-C (or returns at
/// once with `once`).
pub async fn run(listen: SocketAddr, once: bool) -> Result<(), DemoError> {
    if !listen.ip().is_loopback() {
        return Err(DemoError::NotLoopback(listen));
    }
    let emulator = Emulator::start(EmulatorConfig::default())
        .await
        .map_err(DemoError::Emulator)?;
    let key = crate::inbound::generate_key().map_err(|_| DemoError::Random)?;
    let text = demo_config(listen, &emulator.url(), &KeyDigest::of(&key));
    let config = Config::parse(&text, "demo config", &|_| None)
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    let state = AppState::build_from(config, &IdentityEnv::default(), Origin::of_text(&text))
        .map(Arc::new)
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    // On disk while the demo runs, to read or to start `serve` with; removed when it ends.
    let written = ConfigFile::write(&text).map_err(DemoError::Setup)?;
    let listener = crate::server::bind(listen).map_err(|source| DemoError::Listen {
        addr: listen,
        source,
    })?;
    let addr = listener.local_addr().map_or(listen, |a| a);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // Installed now, not when the server first polls it: a SIGTERM as soon as the demo answers
    // is a graceful stop, not the default action.
    let signal = server::shutdown_signal();
    let server = tokio::spawn(server::serve(listener, state, async move {
        tokio::select! {
            _ = stop_rx => {},
            () = signal => {},
        }
    }));

    let base = format!("http://{addr}");
    let shown = match demo_request(&base, &key, &emulator).await {
        Ok(s) => s,
        Err(e) => {
            let _ = stop_tx.send(());
            return Err(DemoError::Request(e));
        }
    };
    println!("{shown}");
    println!(
        "Azure emulator (Entra ID, managed identity, Azure OpenAI): {}",
        emulator.url().as_str().trim_end_matches('/')
    );
    println!(
        "Config the proxy runs (removed when the demo exits): {}\n",
        written.path.display()
    );
    println!("{}", try_it(&base, &key));
    println!(
        "Status page (identity, backends, refusals, diagnoses, the last 15 minutes): {base}/status\n"
    );
    if once {
        let _ = stop_tx.send(());
        let _ = server.await;
        return Ok(());
    }
    println!("Serving until Ctrl-C.");
    match server.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(DemoError::Server(e.to_string())),
        Err(e) => Err(DemoError::Server(e.to_string())),
    }
}

/// The demo's config on disk (owner-only), removed when dropped: when the demo ends, by
/// Ctrl-C, SIGTERM or `--once`.
struct ConfigFile {
    path: std::path::PathBuf,
}

impl ConfigFile {
    fn write(text: &str) -> Result<ConfigFile, String> {
        use std::io::Write as _;
        let path =
            std::env::temp_dir().join(format!("entra-proxy-demo-{}.toml", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let written = options
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        match written {
            Ok(()) => Ok(ConfigFile { path }),
            Err(e) => Err(format!("cannot write {}: {e}", path.display())),
        }
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends one chat completion with the key and reports what the emulated Azure received.
async fn demo_request(base: &str, key: &str, emulator: &Emulator) -> Result<String, String> {
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{base}/v1/chat/completions"))
        .header("api-key", key)
        .json(&serde_json::json!({
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "Say hello"}]
        }))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
    let seen = emulator
        .requests()
        .into_iter()
        .last()
        .ok_or("the emulator saw no request")?;
    let bearer = seen
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or("Azure received no bearer token")?;
    let c = claims::decode_unverified(bearer)
        .map_err(|e| e.to_string())?
        .claims;
    let answer = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("(no content)");
    Ok(format!(
        "\nentra-proxy demo: an API key in, an Entra bearer token out\n\n\
         client  → proxy : POST /v1/chat/completions  api-key: {masked}\n\
         proxy   → Azure : {method} {path}\n\
         \x20                 Authorization: Bearer {head}…  (api-key header: {api_key})\n\
         \x20                 token aud={aud}  appid={appid}  tid={tid}\n\
         Azure   → client: {status} \"{answer}\"\n",
        masked = mask(key),
        method = seen.method,
        path = seen.path_and_query,
        head = &bearer[..bearer.len().min(16)],
        api_key = if seen.header("api-key").is_some() {
            "FORWARDED (bug!)"
        } else {
            "absent"
        },
        aud = c.audience().unwrap_or("?"),
        appid = c.app_id().unwrap_or("?"),
        tid = c.tid.as_deref().unwrap_or("?"),
    ))
}

fn mask(key: &str) -> String {
    format!("{}…", &key[..key.len().min(6)])
}

fn try_it(base: &str, key: &str) -> String {
    format!(
        r#"Try it (the key below only works with this demo):

  curl -s {base}/v1/chat/completions \
    -H "api-key: {key}" -H "content-type: application/json" \
    -d '{{"model":"gpt-4o","messages":[{{"role":"user","content":"hi"}}]}}'

  curl -sN "{base}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21" \
    -H "Authorization: Bearer {key}" -H "content-type: application/json" \
    -d '{{"messages":[{{"role":"user","content":"hi"}}],"stream":true}}'

  pip install openai   # for the two Python lines below

  python3 -c 'from openai import OpenAI; c = OpenAI(base_url="{base}/v1", api_key="{key}"); print(c.chat.completions.create(model="gpt-4o", messages=[{{"role":"user","content":"hi"}}]).choices[0].message.content)'

  python3 -c 'from openai import AzureOpenAI; c = AzureOpenAI(azure_endpoint="{base}", api_key="{key}", api_version="2024-10-21"); print(c.chat.completions.create(model="gpt-4o", messages=[{{"role":"user","content":"hi"}}]).choices[0].message.content)'
"#
    )
}
