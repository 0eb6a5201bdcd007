//! Budgets that hold under concurrency, over real HTTP: a request reserves its prompt estimate
//! and the room for its answer before it is sent, in memory and in a real Redis alike; the
//! answer's end settles the reservation to what it used, and a request that gets no answer
//! gives it back — on success, on an Azure error, when the client leaves, through retries and
//! failover, for Realtime sessions, and while Redis is away.

use crate::common::redis::Redis;
use crate::common::*;
use azure_emulator::{EmulatorConfig, Fault, ResourceKind};
use entra_proxy::config::KeyDigest;
use serde_json::{Value, json};
use std::time::Duration;

/// The base config with one more key `name` (its key is `<name>-key`) carrying `limits`, and
/// `section` (e.g. a `[limits]` table) before `[azure]`.
fn with_key(emu: &url::Url, name: &str, limits: &str, section: &str) -> String {
    format!(
        "{}\n[[keys]]\nname = \"{name}\"\nsha256 = \"{}\"\n{limits}\n",
        base_config(emu).replace("[azure]", &format!("{section}\n[azure]")),
        KeyDigest::of(&format!("{name}-key")).to_hex()
    )
}

/// A chat request saying `text` with its answer capped at `max_tokens`.
fn capped(text: &str, max_tokens: u64) -> Value {
    json!({"model": "gpt-4o", "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": text}]})
}

/// What [`capped`] reserves: its prompt estimate (ceil(bytes / 4) + 4 + 3) and `max_tokens`.
fn reservation(text: &str, max_tokens: u64) -> u64 {
    (text.len() as u64).div_ceil(4) + 7 + max_tokens
}

async fn chat(addr: std::net::SocketAddr, key: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("api-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// What is left of key `name`'s token quota, as `/metrics` shows it.
async fn quota_left(addr: std::net::SocketAddr, name: &str) -> Option<f64> {
    let key = format!("key:{name}");
    metric(
        addr,
        "entra_proxy_token_quota_remaining",
        &[("key", key.as_str())],
    )
    .await
}

/// Waits (5 s at most) until `f` holds.
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    for _ in 0..250 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never: {what}");
}

/// Fifty streamed requests at once, each reserving exactly the key's whole minute: their
/// statuses.
async fn fifty_at_once(addr: std::net::SocketAddr, key: &str) -> Vec<u16> {
    let mut body = capped("hi", 2);
    body["stream"] = json!(true);
    assert_eq!(reservation("hi", 2), 10);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let request = client()
                .post(format!("http://{addr}/v1/chat/completions"))
                .header("api-key", key)
                .json(&body);
            tokio::spawn(async move {
                let r = request.send().await.unwrap();
                let status = r.status().as_u16();
                let _ = r.bytes().await;
                status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses
}

/// Azure takes its time, so every request is in flight before any answer ends.
fn slow() -> EmulatorConfig {
    EmulatorConfig {
        latency: Duration::from_millis(400),
        ..EmulatorConfig::default()
    }
}

#[tokio::test]
async fn fifty_concurrent_requests_against_a_ten_token_budget_admit_one_in_memory() {
    let emu = emulator_with(slow()).await;
    let text = with_key(&emu.url(), "ten", "tokens_per_minute = 10", "");
    let h = proxy(emu, &text).await;
    let statuses = fifty_at_once(h.addr, "ten-key").await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        49,
        "{statuses:?}"
    );
    assert_eq!(h.emulator.stats().data_requests, 1, "one reached Azure");
    h.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_requests_against_a_ten_token_budget_admit_one_in_redis() {
    let redis = Redis::start();
    let emu = emulator_with(slow()).await;
    let limits = format!(
        "[limits]\nredis_url = \"{}\"\nredis_timeout_ms = 3000\n",
        redis.url()
    );
    let text = with_key(&emu.url(), "ten-shared", "tokens_per_minute = 10", &limits);
    // Two replicas on the one Redis, the requests spread over both.
    let (a, _pa) = spawn_binary(&text, &[]).await;
    let (b, _pb) = spawn_binary(&text, &[]).await;
    let (from_a, from_b) = tokio::join!(
        fifty_at_once(a.addr, "ten-shared-key"),
        fifty_at_once(b.addr, "ten-shared-key")
    );
    let statuses: Vec<u16> = from_a.into_iter().chain(from_b).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        99,
        "{statuses:?}"
    );
    assert_eq!(emu.stats().data_requests, 1, "one reached Azure");
    let _ = stop_and_collect(a).await;
    let _ = stop_and_collect(b).await;
}

#[tokio::test]
async fn a_reservation_is_settled_to_the_answers_usage_and_given_back_on_an_azure_error() {
    let emu = emulator().await;
    let text = with_key(
        &emu.url(),
        "settled",
        "tokens_per_minute = 30\ntoken_quota = 1000\ntoken_quota_period = \"day\"",
        "",
    );
    let h = proxy(emu, &text).await;
    let r = chat(h.addr, "settled-key", &capped("hello", 20)).await;
    assert_eq!(r.status(), 200);
    // While it ran, its reservation counted as used.
    assert_eq!(
        r.headers()["x-ratelimit-remaining-tokens"],
        (30 - reservation("hello", 20)).to_string().as_str()
    );
    let body: Value = r.json().await.unwrap();
    let used = body["usage"]["total_tokens"].as_u64().unwrap();
    assert!(used < reservation("hello", 20), "{used}");
    assert_eq!(
        quota_left(h.addr, "settled").await,
        Some((1000 - used) as f64)
    );
    // Azure refuses the next one: it used nothing, and its whole reservation comes back, so
    // the one after it fits the minute again.
    h.emulator.script("gpt-4o", vec![Fault::Status(400)]);
    let r = chat(h.addr, "settled-key", &capped("hello", 1)).await;
    assert_eq!(r.status(), 400);
    let _ = r.bytes().await;
    assert_eq!(
        quota_left(h.addr, "settled").await,
        Some((1000 - used) as f64)
    );
    let room = 30 - used - (reservation("hello", 0));
    let r = chat(h.addr, "settled-key", &capped("hello", room)).await;
    assert_eq!(
        r.status(),
        200,
        "the refused request's reservation came back"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_client_that_leaves_gives_back_what_it_did_not_use() {
    let emu = emulator_with(EmulatorConfig {
        stream_events: 20,
        stream_interval: Duration::from_millis(50),
        ..EmulatorConfig::default()
    })
    .await;
    let text = with_key(
        &emu.url(),
        "leaves",
        "token_quota = 100000\ntoken_quota_period = \"day\"",
        "[upstream]\nfirst_byte_timeout_secs = 1\n",
    );
    let h = proxy(emu, &text).await;
    // Before any answer: Azure hangs, the client gives up; the reservation comes back whole.
    h.emulator.script("gpt-4o", vec![Fault::Hang]);
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let sending = impatient
        .post(h.url("/v1/chat/completions"))
        .header("api-key", "leaves-key")
        .json(&capped("wait for me", 500))
        .send();
    let sending = tokio::spawn(sending);
    let held = Some((100_000 - reservation("wait for me", 500)) as f64);
    eventually("held while the request is in flight", async || {
        quota_left(h.addr, "leaves").await == held
    })
    .await;
    assert!(sending.await.unwrap().is_err(), "the client gave up");
    eventually("the reservation comes back", async || {
        quota_left(h.addr, "leaves").await == Some(100_000.0)
    })
    .await;
    // Halfway through a stream: what was seen is charged, the rest comes back.
    let mut body = capped("stream to me", 500);
    body["stream"] = json!(true);
    let r = chat(h.addr, "leaves-key", &body).await;
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    use futures_util::StreamExt as _;
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(stream);
    eventually(
        "what the stream used is charged, the rest given back",
        async || {
            quota_left(h.addr, "leaves").await.is_some_and(|left| {
                left > (100_000 - reservation("stream to me", 500)) as f64 && left < 100_000.0
            })
        },
    )
    .await;
    h.stop().await;
}

#[tokio::test]
async fn retries_and_failover_hold_one_reservation_settled_by_the_answer() {
    let emu = emulator_with(EmulatorConfig {
        deployments: vec!["gpt-4o".into(), "gpt-4o-west".into()],
        ..EmulatorConfig::default()
    })
    .await;
    let west = emu.add_resource(ResourceKind::OpenAi).await.unwrap();
    let text = format!(
        r#"[server]
listen = "127.0.0.1:0"
[azure]
emulator = "{emu}"
[identity]
kind = "managed-identity"
[[backends]]
name = "east"
endpoint = "{emu}"
[[backends]]
name = "west"
endpoint = "{west}"
[[models]]
name = "gpt-4o"
targets = [
  {{ backend = "east", deployment = "gpt-4o", priority = 0 }},
  {{ backend = "west", deployment = "gpt-4o-west", priority = 1 }},
]
[[keys]]
name = "fails-over"
sha256 = "{digest}"
token_quota = 100000
token_quota_period = "day"
"#,
        emu = emu.url(),
        digest = KeyDigest::of("fails-over-key").to_hex()
    );
    let h = proxy(emu, &text).await;
    // East is overloaded twice (a retry there is not possible: it fails over to west).
    h.emulator
        .script("gpt-4o", vec![Fault::Status(503), Fault::Status(503)]);
    let r = chat(h.addr, "fails-over-key", &capped("go west", 100)).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let used = body["usage"]["total_tokens"].as_u64().unwrap();
    assert!(h.emulator.stats().data_requests >= 2, "retried");
    // One reservation, settled once, to the answer that came.
    assert_eq!(
        quota_left(h.addr, "fails-over").await,
        Some((100_000 - used) as f64)
    );
    h.stop().await;
}

#[tokio::test]
async fn a_realtime_session_reserves_at_its_handshake_and_gives_back_the_rest_at_close() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let emu = emulator().await;
    let text = with_key(
        &emu.url(),
        "session",
        "token_quota = 1000\ntoken_quota_period = \"day\"",
        "[limits]\ndefault_completion_reservation = 300\n",
    );
    let h = proxy(emu, &text).await;
    let mut req = format!("ws://{}/v1/realtime?model=gpt-4o", h.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("api-key", "session-key".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(quota_left(h.addr, "session").await, Some(700.0), "300 held");
    ws.send(Message::text(r#"{"type":"response.create"}"#))
        .await
        .unwrap();
    let mut used = 0;
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = m {
            let event: Value = serde_json::from_str(&t).unwrap();
            if event["type"] == "response.done" {
                used = event["response"]["usage"]["total_tokens"].as_u64().unwrap();
                break;
            }
        }
    }
    assert!(used > 0 && used < 300, "{used}");
    // Taken from what the session holds: nothing more is counted yet.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(quota_left(h.addr, "session").await, Some(700.0));
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    eventually("the unused rest comes back at close", async || {
        quota_left(h.addr, "session").await == Some((1000 - used) as f64)
    })
    .await;
    h.stop().await;
}

/// The quota counter of key `name` in Redis, for today (`token_quota_period = "day"`).
fn redis_quota_key(name: &str) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (start, _) =
        entra_proxy::limits::window::period_bounds(entra_proxy::config::QuotaPeriod::Day, now);
    format!("entra-proxy:{{{name}}}:quota:day:{start}")
}

/// Three streams whose reservations are in Redis; Redis stops answering (SIGSTOP: it keeps its
/// data and answers later) while they finish; `during` is what a request gets meanwhile. When
/// Redis answers again, the quota holds exactly what the three used: every settlement applied,
/// none twice (the batches that timed out reach Redis too, and are sent again).
async fn outage_while_reservations_are_held(on_error: &str, name: &str) -> u16 {
    let redis = Redis::start();
    let emu = emulator_with(EmulatorConfig {
        stream_events: 10,
        stream_interval: Duration::from_millis(100),
        ..EmulatorConfig::default()
    })
    .await;
    let limits = format!(
        "[limits]\nredis_url = \"{}\"\non_redis_error = \"{on_error}\"\nredis_timeout_ms = 1000\n",
        redis.url()
    );
    let text = with_key(
        &emu.url(),
        name,
        "token_quota = 100000\ntoken_quota_period = \"day\"",
        &limits,
    );
    let h = proxy(emu, &text).await;
    let key = format!("{name}-key");
    let mut body = capped("held across an outage", 200);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let mut open = Vec::new();
    for _ in 0..3 {
        let r = chat(h.addr, &key, &body).await;
        assert_eq!(r.status(), 200);
        open.push(r);
    }
    let held = 3 * reservation("held across an outage", 200);
    assert_eq!(redis.get_u64(&redis_quota_key(name)), held);
    redis.pause();
    let mut used = 0;
    for r in open {
        let (text, broke) = read_stream(r).await;
        assert!(!broke, "{text}");
        let usage = text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .find_map(|v| v["usage"]["total_tokens"].as_u64())
            .unwrap();
        used += usage;
    }
    let during = chat(h.addr, &key, &capped("meanwhile", 5))
        .await
        .status()
        .as_u16();
    // Settlement batches time out while Redis is stopped; some reach it all the same.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.resume();
    let quota = redis_quota_key(name);
    eventually("the settlements reach Redis", async || {
        let seen = redis.get_u64(&quota);
        eprintln!("seen {seen} used {used} held {held}");
        seen == used
    })
    .await;
    // Batches sent again after their timeouts found their markers: nothing counted twice.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(redis.get_u64(&quota), used, "held {held}, used {used}");
    h.stop().await;
    during
}

#[tokio::test]
async fn under_allow_a_redis_outage_with_reservations_held_counts_each_settlement_once() {
    let during = outage_while_reservations_are_held("allow", "outage-allow").await;
    assert_eq!(during, 200, "counted in memory meanwhile");
}

#[tokio::test]
async fn under_deny_a_redis_outage_with_reservations_held_counts_each_settlement_once() {
    let during = outage_while_reservations_are_held("deny", "outage-deny").await;
    assert_eq!(during, 503, "refused meanwhile");
}

#[test]
fn each_settlement_and_admission_counts_once_whatever_order_redis_sees_them_in() {
    use entra_proxy::limits::redis::{SETTLE, VOID};
    let redis = Redis::start();
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut con = client.get_connection().unwrap();
    let base = "entra-proxy:{once}";
    let (requests, tokens, quota, spend) = (
        format!("{base}:requests"),
        format!("{base}:tokens"),
        format!("{base}:quota:day:0"),
        format!("{base}:spend:month:0"),
    );
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let far = now + 3600;
    let admit = |con: &mut ::redis::Connection, marker: &str| -> Vec<i64> {
        admit_script(con, base, marker, now, (100, 7), [0; 4])
    };
    let void = |con: &mut ::redis::Connection, marker: &str| {
        let _: Vec<i64> = ::redis::Script::new(VOID)
            .key(marker)
            .key(&requests)
            .key(&tokens)
            .key(&quota)
            .key(&spend)
            .arg(now)
            .arg(100)
            .arg(7)
            .invoke(con)
            .unwrap();
    };
    let settle = |con: &mut ::redis::Connection, marker: &str, add: &str, n: u64| {
        let _: Vec<i64> = ::redis::Script::new(SETTLE)
            .key(&tokens)
            .key(&quota)
            .key(&spend)
            .key(marker)
            .arg(now)
            .arg(add)
            .arg(n)
            .arg(0)
            .arg(far)
            .arg(far)
            .invoke(con)
            .unwrap();
    };
    let counts = |con: &mut ::redis::Connection| -> (u64, u64, u64, u64) {
        // The buckets, which the window's running total `t` must always add up to.
        let sum = |con: &mut ::redis::Connection, key: &str| -> u64 {
            let v: Vec<(String, u64)> = ::redis::cmd("HGETALL").arg(key).query(con).unwrap();
            let buckets = v
                .iter()
                .filter(|(field, _)| field.parse::<i64>().is_ok())
                .map(|(_, n)| n)
                .sum();
            if let Some((_, total)) = v.iter().find(|(field, _)| field == "t") {
                assert_eq!(
                    *total, buckets,
                    "{key}: the running total is its buckets' sum"
                );
            }
            buckets
        };
        let get = |con: &mut ::redis::Connection, key: &str| -> u64 {
            let v: Option<u64> = ::redis::cmd("GET").arg(key).query(con).unwrap();
            v.unwrap_or(0)
        };
        (
            sum(con, &requests),
            sum(con, &tokens),
            get(con, &quota),
            get(con, &spend),
        )
    };
    // Admitted, then given up by the proxy (its answer came too late): undone whole.
    assert_eq!(admit(&mut con, &format!("{base}:admitted:a"))[0], 0);
    assert_eq!(counts(&mut con), (1, 100, 100, 7));
    void(&mut con, &format!("{base}:admitted:a"));
    assert_eq!(counts(&mut con), (0, 0, 0, 0));
    // Given up before Redis saw it: when it comes, it counts nothing.
    void(&mut con, &format!("{base}:admitted:b"));
    assert_eq!(admit(&mut con, &format!("{base}:admitted:b"))[0], 8);
    assert_eq!(counts(&mut con), (0, 0, 0, 0));
    // A settlement sent twice (its first batch timed out, then arrived) counts once.
    assert_eq!(admit(&mut con, &format!("{base}:admitted:c"))[0], 0);
    settle(&mut con, &format!("{base}:settled:1"), "0", 60);
    settle(&mut con, &format!("{base}:settled:1"), "0", 60);
    assert_eq!(counts(&mut con), (1, 40, 40, 7));
    settle(&mut con, &format!("{base}:settled:2"), "1", 5);
    settle(&mut con, &format!("{base}:settled:2"), "1", 5);
    assert_eq!(counts(&mut con), (1, 45, 45, 7));
    // Given back never below zero, and never into a counter that is gone.
    settle(&mut con, &format!("{base}:settled:3"), "0", 1000);
    assert_eq!(counts(&mut con), (1, 0, 0, 7));
}

#[test]
fn the_admission_script_counts_only_the_last_minute_and_retries_when_its_oldest_second_leaves() {
    let redis = Redis::start();
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut con = client.get_connection().unwrap();
    let base = "entra-proxy:{window}";
    let requests = format!("{base}:requests");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // Written newest first, so Redis need not hand them back in time order; one is past the
    // window.
    for (second, n) in [(now - 10, 1), (now - 50, 2), (now - 70, 5)] {
        let _: i64 = ::redis::cmd("HSET")
            .arg(&requests)
            .arg(second)
            .arg(n)
            .query(&mut con)
            .unwrap();
    }
    let marker = format!("{base}:admitted:a");
    let out = admit_script(&mut con, base, &marker, now, (0, 0), [3, 0, 0, 0]);
    // 3 requests in the last minute against requests_per_minute = 3: refused (1) until the
    // second 50 s ago leaves the window, 10 s from now; the one 70 s ago was dropped.
    assert_eq!(&out[..4], &[1, 10, 0, 3], "{out:?}");
    let old: bool = ::redis::cmd("HEXISTS")
        .arg(&requests)
        .arg(now - 70)
        .query(&mut con)
        .unwrap();
    assert!(!old, "a second past the window is deleted");
}

#[test]
fn the_windows_running_total_follows_its_buckets_as_seconds_pass_and_after_idle() {
    let redis = Redis::start();
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut con = client.get_connection().unwrap();
    let base = "entra-proxy:{running}";
    let tokens = format!("{base}:tokens");
    let start = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut marker = 0;
    let mut admit = |con: &mut ::redis::Connection, now: i64| -> Vec<i64> {
        marker += 1;
        let marker = format!("{base}:admitted:{marker}");
        admit_script(con, base, &marker, now, (10, 0), [0, 1_000_000, 0, 0])
    };
    let buckets = |con: &mut ::redis::Connection| -> Vec<(String, i64)> {
        ::redis::cmd("HGETALL").arg(&tokens).query(con).unwrap()
    };
    // Two admissions a second for two minutes and more, one every 7 s after that.
    let mut admitted: Vec<i64> = Vec::new();
    let seconds = (0..130).chain((130..260).step_by(7));
    for now in seconds.map(|s| start + s) {
        for _ in 0..2 {
            let out = admit(&mut con, now);
            admitted.push(now);
            let in_window = admitted.iter().filter(|&&at| at > now - 60).count() as i64;
            assert_eq!(out[4], 10 * in_window, "tokens in the last minute at {now}");
        }
        let fields = buckets(&mut con);
        let seconds: Vec<i64> = fields.iter().filter_map(|(f, _)| f.parse().ok()).collect();
        assert!(
            seconds.iter().all(|&s| s > now - 60),
            "nothing older is kept"
        );
        let sum: i64 = fields
            .iter()
            .filter(|(f, _)| f.parse::<i64>().is_ok())
            .map(|(_, n)| n)
            .sum();
        let total = fields.iter().find(|(f, _)| f == "t").map(|(_, n)| *n);
        assert_eq!(total, Some(sum), "the running total is the buckets' sum");
    }
    // Idle for longer than a window: everything before is gone at once.
    let later = start + 1000;
    assert_eq!(admit(&mut con, later)[4], 10);
    let fields = buckets(&mut con);
    assert_eq!(
        fields
            .iter()
            .filter(|(f, _)| f.parse::<i64>().is_ok())
            .count(),
        1,
        "{fields:?}"
    );
}

/// One call of the admission script for the account at `base` (with its day quota and month
/// spend counters of period 0), marked `marker`: reserving `(tokens, micro-units)` at second
/// `now` against `limits` (requests and tokens per minute, quota, budget; 0: none).
fn admit_script(
    con: &mut ::redis::Connection,
    base: &str,
    marker: &str,
    now: i64,
    reserve: (u64, u64),
    limits: [i64; 4],
) -> Vec<i64> {
    let far = now + 3600;
    ::redis::Script::new(entra_proxy::limits::redis::ADMIT)
        .key(format!("{base}:requests"))
        .key(format!("{base}:tokens"))
        .key(format!("{base}:quota:day:0"))
        .key(format!("{base}:spend:month:0"))
        .key(marker)
        .arg(now)
        .arg(reserve.0)
        .arg(reserve.1)
        .arg("admit")
        .arg(&limits[..])
        .arg(&[far, far][..])
        .invoke(con)
        .unwrap()
}
