//! `[limits]`: where per-key counters live — in memory, or in a Redis shared by replicas — and
//! what a request gets when Redis does not answer.

use crate::config::errors::Errors;
use crate::config::raw::RawLimits;
use crate::config::{
    DEFAULT_COMPLETION_RESERVATION, DEFAULT_MAX_USERS, DEFAULT_REDIS_TIMEOUT, LimitsConfig,
    OnRedisError, RedisConfig,
};
use secrecy::{ExposeSecret as _, SecretString};
use std::time::Duration;

pub(super) fn validate_limits(raw: RawLimits, errors: &mut Errors) -> Option<LimitsConfig> {
    let before = errors.len();
    let on_error = match raw.on_redis_error.as_deref() {
        None | Some("allow") => OnRedisError::Allow,
        Some("deny") => OnRedisError::Deny,
        Some(other) => {
            errors.add(
                "limits.on_redis_error",
                format!("{other:?} is not a choice; use \"allow\" (count in memory until Redis is back) or \"deny\" (answer 503)"),
            );
            OnRedisError::Allow
        }
    };
    let timeout = match raw.redis_timeout_ms {
        None => DEFAULT_REDIS_TIMEOUT,
        Some(ms) if (1..=10_000).contains(&ms) => Duration::from_millis(ms as u64),
        Some(ms) => {
            errors.add(
                "limits.redis_timeout_ms",
                format!("{ms} is out of range: use 1 to 10000 (milliseconds)"),
            );
            DEFAULT_REDIS_TIMEOUT
        }
    };
    let redis = match raw.redis_url {
        None => {
            if raw.on_redis_error.is_some()
                || raw.redis_timeout_ms.is_some()
                || raw.redis_ca_file.is_some()
            {
                errors.add(
                    "limits",
                    "on_redis_error, redis_timeout_ms and redis_ca_file need limits.redis_url",
                );
            }
            None
        }
        Some(url) => errors
            .check("limits.redis_url", redis_url(&url))
            .and_then(|shown| {
                if raw.redis_ca_file.is_some() && !shown.starts_with("rediss://") {
                    errors.add(
                        "limits.redis_ca_file",
                        "applies to TLS only: use a rediss:// limits.redis_url, or remove it",
                    );
                    return None;
                }
                Some(RedisConfig {
                    url,
                    shown,
                    timeout,
                    on_error,
                    ca_file: raw.redis_ca_file.map(std::path::PathBuf::from),
                })
            }),
    };
    let max_users = match raw.max_users {
        None => DEFAULT_MAX_USERS,
        Some(n) if (1..=100_000_000).contains(&n) => n as u64,
        Some(n) => {
            errors.add(
                "limits.max_users",
                format!("{n} is out of range: use 1 to 100000000 (users kept in memory)"),
            );
            DEFAULT_MAX_USERS
        }
    };
    let default_completion_reservation = completion_reservation(
        raw.default_completion_reservation,
        "limits.default_completion_reservation",
        errors,
    )
    .unwrap_or(DEFAULT_COMPLETION_RESERVATION);
    (errors.len() == before).then_some(LimitsConfig {
        redis,
        max_users,
        default_completion_reservation,
    })
}

/// The most tokens a completion reservation may name: far above any model's output.
const MAX_COMPLETION_RESERVATION: i64 = 10_000_000;

/// A completion reservation at `key`: 0 (reserve the prompt only) up to
/// [`MAX_COMPLETION_RESERVATION`] tokens.
pub(super) fn completion_reservation(
    v: Option<i64>,
    key: &str,
    errors: &mut Errors,
) -> Option<u64> {
    match v {
        Some(n) if (0..=MAX_COMPLETION_RESERVATION).contains(&n) => Some(n as u64),
        Some(n) => {
            errors.add(
                key,
                format!("{n} is out of range: use 0 to {MAX_COMPLETION_RESERVATION} (tokens reserved for an answer)"),
            );
            None
        }
        None => None,
    }
}

/// Checks a Redis URL and returns it without its password. Messages never repeat the URL
/// (it may carry a password).
fn redis_url(url: &SecretString) -> Result<String, String> {
    let mut parsed = url::Url::parse(url.expose_secret())
        .map_err(|e| format!("is not a URL ({e}); expected redis://[:PASSWORD@]HOST:PORT[/DB]"))?;
    match parsed.scheme() {
        "redis" | "rediss" => {}
        other => {
            return Err(format!(
                "scheme {other:?} is not Redis; expected redis://[:PASSWORD@]HOST:PORT[/DB] or rediss:// (TLS)"
            ));
        }
    }
    if parsed.fragment().is_some() {
        return Err(
            "has a #fragment (e.g. #insecure, which would skip the certificate check); remove it, and set limits.redis_ca_file to trust a private CA".into(),
        );
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("has no host; expected redis://[:PASSWORD@]HOST:PORT[/DB]".into());
    }
    let db = parsed.path().trim_start_matches('/');
    if !db.is_empty() && db.parse::<u32>().is_err() {
        return Err(format!(
            "the path {db:?} is not a database number; expected redis://HOST:PORT/0"
        ));
    }
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    Ok(parsed.to_string())
}

#[cfg(test)]
mod tests {
    use crate::config::OnRedisError;
    use crate::config::testing::{DIGEST, err, parse};

    const BASE: &str = "[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\n";

    #[test]
    fn redis_url_is_checked_and_its_password_never_shown() {
        let c = parse(&format!(
            "{BASE}[limits]\nredis_url = \"redis://:hunter2@127.0.0.1:6379/0\"\non_redis_error = \"deny\"\n"
        ))
        .unwrap();
        let r = c.limits.redis.unwrap();
        assert_eq!(r.shown, "redis://:***@127.0.0.1:6379/0");
        assert_eq!(r.on_error, OnRedisError::Deny);
        assert!(!format!("{r:?}").contains("hunter2"));
        let e = err(&format!(
            "{BASE}[limits]\nredis_url = \"http://:hunter2@h:1\"\n"
        ));
        assert!(
            e.contains("limits.redis_url: scheme \"http\" is not Redis"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        let c = parse(&format!(
            "{BASE}[limits]\nredis_url = \"rediss://:hunter2@cache.example:6380/0\"\nredis_ca_file = \"/etc/ca.pem\"\n"
        ))
        .unwrap();
        let r = c.limits.redis.unwrap();
        assert_eq!(r.shown, "rediss://:***@cache.example:6380/0");
        assert_eq!(
            r.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
        let e = err(&format!(
            "{BASE}[limits]\nredis_url = \"rediss://h:1/0#insecure\"\n"
        ));
        assert!(e.contains("limits.redis_url: has a #fragment"), "{e}");
        let e = err(&format!(
            "{BASE}[limits]\nredis_url = \"redis://h:1\"\nredis_ca_file = \"ca.pem\"\n"
        ));
        assert!(
            e.contains("limits.redis_ca_file: applies to TLS only"),
            "{e}"
        );
        let e = err(&format!("{BASE}[limits]\nredis_ca_file = \"ca.pem\"\n"));
        assert!(e.contains("need limits.redis_url"), "{e}");
        let e = err(&format!("{BASE}[limits]\nredis_url = \"redis://h:1/x\"\n"));
        assert!(
            e.contains("limits.redis_url: the path \"x\" is not a database number"),
            "{e}"
        );
        let e = err(&format!(
            "{BASE}[limits]\non_redis_error = \"maybe\"\nredis_url = \"redis://h:1\"\n"
        ));
        assert!(
            e.contains("limits.on_redis_error: \"maybe\" is not a choice"),
            "{e}"
        );
    }

    #[test]
    fn token_limits_must_be_positive_and_periods_real() {
        let key = |extra: &str| format!("{BASE}[[keys]]\nname='k'\nsha256='{DIGEST}'\n{extra}\n");
        let c = parse(&key(
            "tokens_per_minute = 20000\ntoken_quota = 5000000\ntoken_quota_period = \"week\"",
        ))
        .unwrap();
        let b = c.keys[0].budget();
        assert_eq!(b.tokens_per_minute, Some(20000));
        assert_eq!(b.token_quota, Some(5_000_000));
        assert_eq!(b.token_quota_period, crate::config::QuotaPeriod::Week);
        let e = err(&key("tokens_per_minute = 0"));
        assert!(
            e.contains("keys[0].tokens_per_minute: 0 is not a limit: it must be at least 1"),
            "{e}"
        );
        let e = err(&key("token_quota = -5"));
        assert!(e.contains("keys[0].token_quota: -5 is not a limit"), "{e}");
        let e = err(&key("token_quota = 5\ntoken_quota_period = \"fortnight\""));
        assert!(e.contains("keys[0].token_quota_period: \"fortnight\" is not a quota period; use one of hour, day, week, month"), "{e}");
        let e = err(&key("token_quota_period = \"day\""));
        assert!(
            e.contains("keys[0].token_quota_period: is set without token_quota"),
            "{e}"
        );
    }

    #[test]
    fn prices_budgets_and_reservations_are_checked_and_kept_in_micro_units() {
        let two = "[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\n\
            [[models]]\nname='big'\nbackend='a'\ndeployment='big'\n\
            price={input_per_1m=2.5,output_per_1m=10.0,cached_input_per_1m=1.25}\ncompletion_reservation=512\n\
            [[models]]\nname='small'\nbackend='a'\ndeployment='small'\n";
        let c = parse(&format!(
            "{two}[limits]\ndefault_completion_reservation = 2000\n\
             [[keys]]\nname='k'\nsha256='{DIGEST}'\nbudget=250\nbudget_period='week'\n"
        ))
        .unwrap();
        let big = &c.models[0];
        assert_eq!(
            big.price,
            Some(crate::config::Price {
                input_per_1m: 2_500_000,
                cached_input_per_1m: 1_250_000,
                output_per_1m: 10_000_000
            })
        );
        assert_eq!(big.completion_reservation, Some(512));
        assert_eq!(c.currency, "USD");
        assert_eq!(c.limits.default_completion_reservation, 2000);
        let b = c.keys[0].budget();
        assert_eq!(b.budget_micros, Some(250_000_000));
        assert_eq!(b.budget_period, crate::config::QuotaPeriod::Week);
        assert!(
            c.notes.iter().any(|n| n.message.contains(
                "\"small\" has no price, so requests to it spend nothing against the budget of key \"k\""
            )),
            "{:?}",
            c.notes
        );
        let key = |extra: &str| format!("{two}[[keys]]\nname='k'\nsha256='{DIGEST}'\n{extra}\n");
        let e = err(&key("budget = 0"));
        assert!(e.contains("keys[0].budget: 0 is not an amount"), "{e}");
        let e = err(&key("budget = 5\nbudget_period = 'hour'"));
        assert!(e.contains("keys[0].budget_period: \"hour\" is not a budget period; use one of day, week, month"), "{e}");
        let e = err(&key("budget_period = 'day'"));
        assert!(
            e.contains("keys[0].budget_period: is set without budget"),
            "{e}"
        );
        let e = err(&format!(
            "{two}[limits]\ndefault_completion_reservation = -1\n"
        ));
        assert!(
            e.contains("limits.default_completion_reservation: -1 is out of range"),
            "{e}"
        );
        let e = err(&two.replace("completion_reservation=512", "completion_reservation=-5"));
        assert!(
            e.contains("models[0].completion_reservation: -5 is out of range"),
            "{e}"
        );
        let e = err(&two.replace("output_per_1m=10.0", "output_per_1m=-1.0"));
        assert!(
            e.contains("models[0].price.output_per_1m: -1 is not an amount"),
            "{e}"
        );
        let euro = two.replace(
            "deployment='small'\n",
            "deployment='small'\nprice={input_per_1m=1.0,output_per_1m=1.0,currency='EUR'}\n",
        );
        let e = err(&euro);
        assert!(
            e.contains("models[1].price.currency: \"EUR\" differs from \"USD\" (models[0].price)"),
            "{e}"
        );
        // One deployment, two models, two prices: which one applies would depend on the path.
        let twice = format!(
            "{two}[[models]]\nname='alias'\nbackend='a'\ndeployment='big'\nprice={{input_per_1m=1.0,output_per_1m=1.0}}\n"
        );
        let e = err(&twice);
        // A model naming no price for a priced deployment takes its price: not spend-free.
        let alias = format!(
            "{two}[[models]]\nname='alias'\nbackend='a'\ndeployment='big'\n[[keys]]\nname='k'\nsha256='{DIGEST}'\nbudget=1\n"
        );
        let c = parse(&alias).unwrap();
        assert!(
            !c.notes
                .iter()
                .any(|n| n.message.contains("\"alias\" has no price")),
            "{:?}",
            c.notes
        );
        assert!(e.contains("models[2].price: model \"big\" and model \"alias\" both target deployment \"big\" with different prices"), "{e}");
        // A token limit no request without max_tokens can fit is noted.
        let c = parse(&key("tokens_per_minute = 100")).unwrap();
        assert!(
            c.notes
                .iter()
                .any(|n| n.message.contains("key \"k\": its token limit of 100")),
            "{:?}",
            c.notes
        );
    }
}
