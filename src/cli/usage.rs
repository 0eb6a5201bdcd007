//! `entra-proxy usage`: what each key and identity used in the current minute and quota
//! period, read from the Redis the replicas share; with `--by user`, each user of the
//! identities with per-user budgets.

use super::{EXIT_RUNTIME, EXIT_USAGE, load};
use crate::config::{Config, KeyBudget};
use crate::limits::{BudgetKey, Limits, StoreKind, money};
use clap::Args;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// The TOML config file.
    #[arg(long, short, env = "ENTRA_PROXY_CONFIG")]
    pub config: PathBuf,
    /// One JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// `user`: one row per user of each identity with per-user budgets, instead of one per key
    /// and identity.
    #[arg(long, value_enum)]
    pub by: Option<By>,
}

/// What the rows are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    /// One row per user (`oid`) of each identity with per-user budgets.
    User,
}

pub(super) async fn usage(args: UsageArgs) -> ExitCode {
    let config = match load(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let limits = match Limits::new(&config.limits) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("entra-proxy: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if limits.kind() == StoreKind::Memory {
        eprintln!(
            "entra-proxy: no [limits] redis_url: usage lives in the running proxy's memory, which this command cannot read; see its /metrics (entra_proxy_tokens_total, entra_proxy_token_quota_remaining) and /status"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let report = match args.by {
        None => callers(&config, &limits).await,
        Some(By::User) => users(&config, &limits).await,
    };
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            eprintln!("entra-proxy: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match args.json {
        true => println!("{report}"),
        false => print!("{}", table(&report)),
    }
    ExitCode::SUCCESS
}

/// `{"keys": [...], "identities": [...]}`: one row per configured key and identity.
async fn callers(config: &Config, limits: &Limits) -> Result<Value, String> {
    let mut keys = Vec::new();
    for key in &config.keys {
        let mut r = row(
            limits,
            &BudgetKey::key(&key.name),
            key.budget(),
            &config.currency,
        )
        .await?;
        r["key"] = json!(key.name);
        keys.push(r);
    }
    let mut identities = Vec::new();
    for identity in &config.identities {
        let key = BudgetKey::identity(&identity.name);
        let mut r = row(limits, &key, identity.budget, &config.currency).await?;
        r["identity"] = json!(identity.name);
        identities.push(r);
    }
    Ok(json!({ "keys": keys, "identities": identities }))
}

/// `{"users": [...]}`: one row per user of each identity with per-user budgets.
async fn users(config: &Config, limits: &Limits) -> Result<Value, String> {
    let mut users = Vec::new();
    for identity in &config.identities {
        let Some(budget) = identity.per_user else {
            continue;
        };
        let name: std::sync::Arc<str> = std::sync::Arc::from(identity.name.as_str());
        for oid in limits.users(&identity.name).await? {
            let key = BudgetKey::User {
                identity: name.clone(),
                oid: std::sync::Arc::from(oid.as_str()),
            };
            let mut r = row(limits, &key, budget, &config.currency).await?;
            r["identity"] = json!(identity.name);
            r["oid"] = json!(oid);
            users.push(r);
        }
    }
    Ok(json!({ "users": users }))
}

/// One row: requests and tokens of the current minute, tokens of the quota period, money of
/// the budget period (in micro-units too, so a script adds exact integers); running requests
/// count what they reserved.
async fn row(
    limits: &Limits,
    key: &BudgetKey,
    budget: KeyBudget,
    currency: &str,
) -> Result<Value, String> {
    let s = limits.peek(key, &budget).await?;
    Ok(json!({
        "requests_last_minute": s.requests,
        "requests_per_minute": budget.requests_per_minute,
        "tokens_last_minute": s.tokens,
        "tokens_per_minute": budget.tokens_per_minute,
        "tokens_this_period": s.quota,
        "token_quota": budget.token_quota,
        "token_quota_period": budget.token_quota_period.name(),
        "spend_this_period": money(s.spend),
        "spend_micros": s.spend,
        "budget": budget.budget_micros.map(money),
        "budget_period": budget.budget_period.name(),
        "currency": currency,
    }))
}

/// The report as a table: a row per key (`key:…`), identity (`identity:…`) or user.
fn table(report: &Value) -> String {
    let mut rows: Vec<(String, &Value)> = Vec::new();
    for (list, name) in [("keys", "key"), ("identities", "identity")] {
        for r in report[list].as_array().into_iter().flatten() {
            rows.push((
                format!("{name}:{}", r[name].as_str().unwrap_or_default()),
                r,
            ));
        }
    }
    for r in report["users"].as_array().into_iter().flatten() {
        let who = format!(
            "identity:{} user {}",
            r["identity"].as_str().unwrap_or_default(),
            r["oid"].as_str().unwrap_or_default()
        );
        rows.push((who, r));
    }
    let show = |v: &Value| match v {
        Value::Null => "-".to_string(),
        v => v.to_string(),
    };
    let width = rows
        .iter()
        .map(|(who, _)| who.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let mut out = format!(
        "{:<width$} {:>14} {:>20} {:>26} {:>28}\n",
        "CALLER", "REQUESTS/MIN", "TOKENS/MIN", "TOKENS THIS PERIOD", "SPEND THIS PERIOD"
    );
    for (who, r) in rows {
        out.push_str(&format!(
            "{:<width$} {:>14} {:>20} {:>26} {:>28}\n",
            who,
            format!(
                "{}/{}",
                r["requests_last_minute"],
                show(&r["requests_per_minute"])
            ),
            format!(
                "{}/{}",
                r["tokens_last_minute"],
                show(&r["tokens_per_minute"])
            ),
            format!(
                "{}/{} per {}",
                r["tokens_this_period"],
                show(&r["token_quota"]),
                r["token_quota_period"].as_str().unwrap_or_default()
            ),
            format!(
                "{}/{} {} per {}",
                r["spend_this_period"].as_str().unwrap_or_default(),
                r["budget"].as_str().unwrap_or("-"),
                r["currency"].as_str().unwrap_or_default(),
                r["budget_period"].as_str().unwrap_or_default()
            ),
        ));
    }
    out
}
