//! Budgets in money, over real HTTP against a real Redis: a model's price applied to every
//! request routed to its deployment (by `/v1` or by the deployment path), a key's budget per
//! day reserved and settled like tokens, 429 `insufficient_quota` naming what was spent, the
//! budget and when it resets, `request_exceeds_budget` for a request that can never fit, and the
//! spend on `/metrics`, `/status.json`, in `entra-proxy usage` and on the access line; and a
//! budget that counts its own calendar period only.

use crate::common::redis::Redis;
use crate::common::*;
use entra_proxy::config::KeyDigest;
use serde_json::{Value, json};
use std::time::Duration;

/// gpt-4o at 1000 per million input tokens and 2000 per million output tokens (1000 and 2000
/// micro-units a token), embed without a price; key `spender` with 0.10 a day.
fn config(emu: &url::Url, redis: &str) -> String {
    format!(
        "{}\n[[keys]]\nname = \"spender\"\nsha256 = \"{}\"\nbudget = 0.1\nbudget_period = \"day\"\n",
        base_config(emu)
            .replace(
                "deployment = \"gpt-4o\"\n",
                "deployment = \"gpt-4o\"\nprice = { input_per_1m = 1000.0, output_per_1m = 2000.0 }\n"
            )
            .replace(
                "[azure]",
                &format!("[limits]\nredis_url = \"{redis}\"\nredis_timeout_ms = 3000\n\n[azure]")
            ),
        KeyDigest::of("spender-key").to_hex()
    )
}

/// What an answer's usage costs at gpt-4o's price, in micro-units.
fn cost(usage: &Value) -> u64 {
    usage["prompt_tokens"].as_u64().unwrap() * 1000
        + usage["completion_tokens"].as_u64().unwrap() * 2000
}

#[tokio::test]
async fn a_money_budget_is_reserved_settled_and_refuses_naming_spend_budget_and_reset() {
    let redis = Redis::start();
    let emu = emulator().await;
    let (p, path) = spawn_binary(&config(&emu.url(), &redis.url()), &[]).await;
    let send = |path: &'static str, body: Value| {
        client()
            .post(format!("http://{}{path}", p.addr))
            .header("api-key", "spender-key")
            .json(&body)
            .send()
    };
    let chat = json!({"model": "gpt-4o", "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}]});
    // Each request reserves 8 prompt tokens at 1000 and 10 answer tokens at 2000: 0.028.
    let mut spent = 0;
    let mut answers = 0;
    let refused = loop {
        // By the /v1 path and by the deployment's own: the deployment maps back to its model.
        let path = match answers % 2 {
            0 => "/v1/chat/completions",
            _ => "/openai/deployments/gpt-4o/chat/completions",
        };
        let r = send(path, chat.clone()).await.unwrap();
        if r.status() != 200 {
            break r;
        }
        let body: Value = r.json().await.unwrap();
        spent += cost(&body["usage"]);
        answers += 1;
        assert!(answers < 10, "the budget never refused");
        // The settlement reaches Redis in the next batch.
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    assert!(answers >= 2, "{answers}");
    assert!(
        spent + 28_000 > 100_000 && spent <= 100_000 + 10_000,
        "{spent}"
    );
    let tomorrow = (time::OffsetDateTime::now_utc().date() + time::Duration::days(1))
        .midnight()
        .assume_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {
            "code": "insufficient_quota",
            "type": "insufficient_quota",
            "message": format!(
                "key \"spender\" has spent {} USD of its budget of 0.10 USD for this day (requests still running count what they reserved); it resets at {tomorrow}",
                entra_proxy::limits::money(spent)
            ),
        }})
    );
    // A model without a price spends nothing: the budget does not stop it.
    let r = send("/v1/embeddings", json!({"model": "embed", "input": "free"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A request that could cost more than the whole budget can never fit.
    let mut huge = chat.clone();
    huge["max_tokens"] = json!(100_000);
    let (status, code, message) = error_of(send("/v1/chat/completions", huge).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (429, "request_exceeds_budget"));
    assert_eq!(
        message,
        "this request may cost up to 200.008 USD (100008 tokens: a prompt estimate of 8 + max_tokens 100000, at the model's price), more than key \"spender\"'s whole budget of 0.10 USD per day; lower max_tokens to at most 46"
    );
    // The spend, where it is watched.
    let labels = [("key", "key:spender"), ("model", "gpt-4o")];
    assert_eq!(
        metric(p.addr, "entra_proxy_spend_total", &labels).await,
        Some(spent as f64)
    );
    let status = status_json_at(p.addr).await;
    let row = status["keys"]["callers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["caller"] == "key:spender")
        .unwrap()
        .clone();
    let usage = &row["usage"];
    assert_eq!(usage["currency"], "USD");
    assert_eq!(usage["budget"], 0.1);
    assert_eq!(usage["budget_period"], "day");
    assert!(
        (usage["spend"].as_f64().unwrap() - spent as f64 / 1e6).abs() < 1e-9,
        "{usage}"
    );
    let out = std::process::Command::new(binary())
        .args(["usage", "--json", "--config"])
        .arg(&path.0)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = report["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key"] == "spender")
        .unwrap()
        .clone();
    assert_eq!(row["spend_micros"], spent);
    assert_eq!(row["spend_this_period"], entra_proxy::limits::money(spent));
    assert_eq!(row["budget"], "0.10");
    assert_eq!(row["budget_period"], "day");
    let (_, log) = stop_and_collect(p).await;
    let priced: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("proxied") && l.contains("caller=key:spender") && l.contains("path=/")
        })
        .filter(|l| l.contains("spend="))
        .collect();
    assert_eq!(priced.len(), answers, "{log}");
    assert!(priced.iter().all(|l| l.contains("currency=USD")), "{log}");
}

#[tokio::test]
async fn config_check_notes_a_model_without_a_price_beside_a_money_budget() {
    let emu = emulator().await;
    let path = tempfile_path::TempPath::new("toml");
    std::fs::write(&path.0, config(&emu.url(), "redis://127.0.0.1:1/0")).unwrap();
    let out = std::process::Command::new(binary())
        .args(["config", "check", "--config"])
        .arg(&path.0)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("\"embed\" has no price, so requests to it spend nothing against the budget of key \"spender\""),
        "{all}"
    );
}

#[tokio::test]
async fn a_money_budget_counts_its_own_day_what_was_spent_the_day_before_is_not_todays() {
    let redis = Redis::start();
    let today = time::OffsetDateTime::now_utc().date();
    let start = |d: time::Date| d.midnight().assume_utc().unix_timestamp();
    // The whole budget spent yesterday, in yesterday's counter.
    let spend = |d: time::Date| format!("entra-proxy:{{spender}}:spend:day:{}", start(d));
    redis.set_u64(&spend(today - time::Duration::days(1)), 100_000);
    let emu = emulator().await;
    let (p, _path) = spawn_binary(&config(&emu.url(), &redis.url()), &[]).await;
    let chat = json!({"model": "gpt-4o", "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}]});
    let send = || {
        client()
            .post(format!("http://{}/v1/chat/completions", p.addr))
            .header("api-key", "spender-key")
            .json(&chat)
            .send()
    };
    let r = send().await.unwrap();
    assert_eq!(r.status(), 200, "a new day starts at zero");
    // Today's counter at the budget: refused until tomorrow's midnight.
    redis.set_u64(&spend(today), 100_000);
    let r = send().await.unwrap();
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    let tomorrow = (today + time::Duration::days(1))
        .midnight()
        .assume_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("it resets at {tomorrow}")),
        "{message}"
    );
    assert_eq!(body["error"]["code"], "insufficient_quota");
}
