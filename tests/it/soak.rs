//! Soak: 200 concurrent streams through injected faults against the real binary. Ignored by
//! default; CI runs it briefly: `SOAK_SECS=10 cargo test --test it soak -- --ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use azure_emulator::{EmulatorConfig, Fault};
use futures_util::StreamExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const STREAMS: usize = 200;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[derive(Default)]
struct Tally {
    complete: AtomicU64,
    clear_errors: AtomicU64,
    broken_streams: AtomicU64,
    unclear: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak test: run with --ignored (SOAK_SECS sets the duration)"]
async fn two_hundred_streams_through_faults_end_cleanly() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let emu = emulator_with(EmulatorConfig {
        stream_events: 10,
        stream_interval: Duration::from_millis(50),
        ..EmulatorConfig::default()
    })
    .await;
    let config = base_config(&emu.url()).replace(
        "[azure]",
        "[upstream]\nfirst_byte_timeout_secs = 2\nidle_timeout_secs = 2\n\n[azure]",
    );
    let (child, _cfg) = spawn_binary(&config, &[]).await;
    let pid = child.child.id().unwrap();
    let base = format!("http://{}", child.addr);

    // Warm up, then take the baseline.
    let warm = client()
        .post(format!("{base}/v1/chat/completions"))
        .header("api-key", KEY)
        .json(&chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(warm.status(), 200);
    let rss_before = rss_kib(pid);

    let tally = Arc::new(Tally::default());
    let stop_at = Instant::now() + Duration::from_secs(secs);
    let emu = Arc::new(emu);
    // A fault feeder: keeps a mix of faults queued on the deployment.
    let feeder = {
        let emu = emu.clone();
        tokio::spawn(async move {
            while Instant::now() < stop_at {
                emu.script(
                    "gpt-4o",
                    vec![
                        Fault::Status(503),
                        Fault::RateLimited {
                            retry_after_ms: 200,
                        },
                        Fault::ResetMidStream { after_events: 3 },
                        Fault::Delay(Duration::from_millis(300)),
                        Fault::Status(500),
                    ],
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let mut workers = Vec::new();
    for w in 0..STREAMS {
        let tally = tally.clone();
        let base = base.clone();
        workers.push(tokio::spawn(async move {
            let c = client();
            let mut n = 0u64;
            while Instant::now() < stop_at {
                n += 1;
                let mut body = chat_body("gpt-4o");
                body["stream"] = serde_json::json!(true);
                let r = c
                    .post(format!("{base}/v1/chat/completions"))
                    .header("api-key", KEY)
                    .json(&body)
                    .send()
                    .await;
                let r = match r {
                    Ok(r) => r,
                    Err(_) => {
                        tally.unclear.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                let status = r.status().as_u16();
                // Every tenth stream is abandoned by its client half-way.
                let abandon = (n + w as u64).is_multiple_of(10);
                if status == 200 {
                    let mut s = r.bytes_stream();
                    let mut all = String::new();
                    let mut broken = false;
                    while let Some(c) = s.next().await {
                        match c {
                            Ok(c) => all.push_str(&String::from_utf8_lossy(&c)),
                            Err(_) => {
                                broken = true;
                                break;
                            }
                        }
                        if abandon {
                            break;
                        }
                    }
                    if abandon {
                        continue;
                    }
                    if broken {
                        tally.broken_streams.fetch_add(1, Ordering::Relaxed);
                    } else if all.contains("data: [DONE]") {
                        tally.complete.fetch_add(1, Ordering::Relaxed);
                    } else {
                        tally.unclear.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    let body: serde_json::Value = r.json().await.unwrap_or_default();
                    if body["error"]["message"]
                        .as_str()
                        .is_some_and(|m| !m.is_empty())
                    {
                        tally.clear_errors.fetch_add(1, Ordering::Relaxed);
                    } else {
                        tally.unclear.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    feeder.await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = emu.stats();
    let rss_after = rss_kib(pid);
    let complete = tally.complete.load(Ordering::Relaxed);
    eprintln!(
        "soak {secs}s: complete {complete}, clear errors {}, broken by injected resets {}, unclear {}, token requests {}, upstream requests {}, rss {rss_before} -> {rss_after} KiB",
        tally.clear_errors.load(Ordering::Relaxed),
        tally.broken_streams.load(Ordering::Relaxed),
        tally.unclear.load(Ordering::Relaxed),
        stats.token_requests,
        stats.data_requests,
    );
    assert!(complete > 0);
    assert_eq!(
        tally.unclear.load(Ordering::Relaxed),
        0,
        "some requests ended without a clear outcome"
    );
    assert_eq!(
        stats.open_streams, 0,
        "upstream streams outlived their clients"
    );
    assert!(
        stats.token_requests <= 2,
        "token requests: {}",
        stats.token_requests
    );
    assert!(
        rss_after <= rss_before + 32 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    let (code, _) = stop_and_collect(child).await;
    assert_eq!(code, Some(0));
}
