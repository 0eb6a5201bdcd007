//! The Grafana dashboard (`infra/grafana/entra-proxy.json`) is a valid dashboard on a
//! Prometheus datasource variable, and every metric its queries use is one `/metrics` emits
//! after ordinary traffic: a retry, a failover with a cooldown, a diagnosed 401.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use azure_emulator::{AzureSample, EmulatorConfig, Fault, ResourceKind};
use std::collections::BTreeSet;

/// Metrics the dashboard shows that this build does not emit yet (their panels stay empty
/// until then). None now: keep the list for the next panel that comes before its metric.
const PENDING: &[&str] = &[];

fn dashboard() -> serde_json::Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/grafana/entra-proxy.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every panel's query expressions, rows' nested panels included.
fn exprs(panels: &[serde_json::Value], out: &mut Vec<String>) {
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().unwrap().to_string());
        }
        exprs(p["panels"].as_array().map_or(&[], |v| v), out);
    }
}

/// `entra_proxy_[a-z_]+` names in a query, histogram suffixes stripped.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const PREFIX: &str = "entra_proxy_";
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find(PREFIX) {
        let tail = &rest[at + PREFIX.len()..];
        let len = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        let name = format!("{PREFIX}{}", &tail[..len]);
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name)
            .to_string();
        names.insert(base);
        rest = &tail[len..];
    }
    names
}

/// Metric names in Prometheus text, histogram suffixes stripped.
fn emitted(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .flat_map(metric_names)
        .collect()
}

#[test]
fn the_dashboard_is_valid_on_a_prometheus_datasource_variable() {
    let d = dashboard();
    assert_eq!(d["uid"], "entra-proxy");
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars.iter().find(|v| v["type"] == "datasource").unwrap();
    assert_eq!(ds["query"], "prometheus");
    let var = format!("${{{}}}", ds["name"].as_str().unwrap());
    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate id: {p}");
        let g = &p["gridPos"];
        assert!(
            g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
            "{p}"
        );
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], var.as_str(), "{}", p["title"]);
            assert!(
                !p["targets"].as_array().unwrap().is_empty(),
                "{}",
                p["title"]
            );
        }
    }
    let mut all = Vec::new();
    exprs(panels, &mut all);
    assert!(
        all.iter().any(|e| e.contains("histogram_quantile(0.99")
            && e.contains("entra_proxy_upstream_seconds_bucket")),
        "latency percentiles"
    );
    let used: BTreeSet<String> = all.iter().flat_map(|e| metric_names(e)).collect();
    for p in PENDING {
        assert!(used.contains(*p), "the dashboard has a panel for {p}");
    }
}

#[test]
fn metric_names_are_read_from_queries() {
    let names = metric_names(
        "histogram_quantile(0.5, sum by (le) (rate(entra_proxy_upstream_seconds_bucket[5m]))) / entra_proxy_x_total",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["entra_proxy_upstream_seconds", "entra_proxy_x_total"]
    );
}

/// Two regions: "east" preferred, "west" the fallback (as in the fault tests).
async fn two_regions() -> Harness {
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
name = "team-a"
sha256 = "{digest}"
token_quota = 1000000
token_quota_period = "day"
"#,
        emu = emu.url(),
        digest = entra_proxy::config::KeyDigest::of(KEY).to_hex()
    );
    proxy(emu, &text).await
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_emitted() {
    let h = two_regions().await;
    // A retry: one 503, then an answer.
    h.emulator.script("gpt-4o", vec![Fault::Status(503)]);
    let r = post(&h, "/v1/chat/completions", &chat_body("gpt-4o")).await;
    assert_eq!(r.status(), 200);
    // A 429 with a long retry-after: east cools down, the request fails over to west.
    h.emulator.script(
        "gpt-4o",
        vec![Fault::RateLimited {
            retry_after_ms: 30_000,
        }],
    );
    let r = post(&h, "/v1/chat/completions", &chat_body("gpt-4o")).await;
    assert_eq!(r.status(), 200);
    // A diagnosed 401 from west (east is cooling down).
    h.emulator.script(
        "gpt-4o-west",
        vec![
            Fault::Sample(AzureSample::AudienceIncorrect401),
            Fault::Sample(AzureSample::AudienceIncorrect401),
        ],
    );
    let r = post(&h, "/v1/chat/completions", &chat_body("gpt-4o")).await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("x-entra-proxy-diagnosis"));

    let r = client().get(h.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let metrics = r.text().await.unwrap();
    let have = emitted(&metrics);
    let mut used = Vec::new();
    exprs(dashboard()["panels"].as_array().unwrap(), &mut used);
    let used: BTreeSet<String> = used.iter().flat_map(|e| metric_names(e)).collect();
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| !have.contains(*n) && !PENDING.contains(&n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "not in /metrics: {missing:?}\n{metrics}"
    );
    for p in PENDING {
        assert!(
            !have.contains(*p),
            "{p} is emitted now: take it off the PENDING list in tests/it/dashboard.rs"
        );
    }
    // The recorder is the process's: other tests count too, so only the series is checked.
    // Every per-caller metric labels the same caller the same way.
    for series in [
        "entra_proxy_key_requests_total{key=\"key:team-a\",status=\"401\"} ",
        "entra_proxy_token_quota_remaining{key=\"key:team-a\"} ",
    ] {
        assert!(metrics.contains(series), "{series}\n{metrics}");
    }
    assert!(
        metrics.lines().any(|l| l.starts_with("entra_proxy_tokens_total{")
            && l.contains("key=\"key:team-a\"")),
        "{metrics}"
    );
    h.stop().await;
}
