//! `rediss://`: limits shared through a Redis that speaks TLS only (as Azure Cache for Redis and
//! Azure Managed Redis do), trusting a private CA from `limits.redis_ca_file`, with the password
//! from the environment; a certificate from another CA is refused; a bad CA file stops start-up.

use crate::common::redis::{Redis, fixture};
use crate::common::*;
use entra_proxy::config::KeyDigest;

const PASSWORD: &str = "tls-redis-password-9f2c";

/// The base config with key `tls-key` (3 requests a minute) and limits kept in `redis`'s TLS
/// port, trusting `ca`.
fn config(emu: &url::Url, redis: &Redis, ca: &std::path::Path) -> String {
    let limits = format!(
        "[limits]\nredis_url = \"rediss://:${{REDIS_PASSWORD}}@127.0.0.1:{}/0\"\nredis_ca_file = \"{}\"\non_redis_error = \"deny\"\nredis_timeout_ms = 2000\n",
        redis.tls().port,
        ca.display()
    );
    format!(
        "{}\n[[keys]]\nname = \"tls\"\nsha256 = \"{}\"\nrequests_per_minute = 2\n",
        base_config(emu),
        KeyDigest::of("tls-key").to_hex()
    )
    .replace("[azure]", &format!("{limits}\n[azure]"))
}

async fn chat(addr: std::net::SocketAddr) -> reqwest::Response {
    client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("api-key", "tls-key")
        .json(&serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn limits_count_in_a_tls_redis_trusting_the_configured_ca() {
    let redis = Redis::start_tls(PASSWORD);
    let emu = emulator().await;
    let text = config(&emu.url(), &redis, &fixture("ca.pem"));
    let (p, _path) = spawn_binary(&text, &[("REDIS_PASSWORD", PASSWORD)]).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(chat(p.addr).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429], "two a minute, counted over TLS");
    assert_eq!(
        redis.hash_sum("entra-proxy:{tls}:requests"),
        2,
        "kept in Redis"
    );
    let (_, log) = stop_and_collect(p).await;
    assert!(!log.contains(PASSWORD), "{log}");
    assert!(!log.contains("unavailable"), "{log}");
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused() {
    let redis = Redis::start_tls(PASSWORD);
    let emu = emulator().await;
    let text = config(&emu.url(), &redis, &fixture("other-ca.pem"));
    let (p, _path) = spawn_binary(&text, &[("REDIS_PASSWORD", PASSWORD)]).await;
    let (status, code, _) = error_of(chat(p.addr).await).await;
    assert_eq!((status, code.as_str()), (503, "limits_unavailable"));
    assert_eq!(emu.stats().data_requests, 0, "refused before Azure");
    assert_eq!(redis.hash_sum("entra-proxy:{tls}:requests"), 0);
    let (_, log) = stop_and_collect(p).await;
    assert!(log.contains("rediss://:***@127.0.0.1"), "{log}");
    assert!(!log.contains(PASSWORD), "{log}");
    assert!(
        log.contains("invalid peer certificate: UnknownIssuer"),
        "the log says the certificate is the problem: {log}"
    );
}

#[tokio::test]
async fn an_unreadable_or_empty_ca_file_stops_start_up_naming_the_setting() {
    let redis = Redis::start_tls(PASSWORD);
    let emu = emulator().await;
    let dir = tempfile_path::TempPath::new("pem");
    std::fs::write(&dir.0, "not a certificate\n").unwrap();
    for (ca, says) in [
        (
            std::path::PathBuf::from("/nonexistent/ca.pem"),
            "cannot read",
        ),
        (dir.0.clone(), "holds no PEM certificate"),
    ] {
        let config = tempfile_path::TempPath::new("toml");
        std::fs::write(&config.0, config_text(&emu.url(), &redis, &ca)).unwrap();
        let out = std::process::Command::new(binary())
            .args(["serve", "--config"])
            .arg(&config.0)
            .env_clear()
            .env("REDIS_PASSWORD", PASSWORD)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{stderr}");
        assert!(
            stderr.contains(&format!("limits.redis_ca_file ({})", ca.display()))
                && stderr.contains(says),
            "{stderr}"
        );
        assert!(!stderr.contains(PASSWORD), "{stderr}");
    }
}

fn config_text(emu: &url::Url, redis: &Redis, ca: &std::path::Path) -> String {
    config(emu, redis, ca).replace("127.0.0.1:0", &format!("127.0.0.1:{}", free_port()))
}
