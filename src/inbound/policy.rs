//! Per-key policy: which models a key may use, when it expires, and its request rate.

use crate::config::KeyEntry;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The limits attached to one key.
#[derive(Debug)]
pub struct KeyPolicy {
    pub models: Vec<String>,
    pub expires: Option<time::OffsetDateTime>,
    limiter: Option<TokenBucket>,
}

/// Why a key's policy refused a request.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyDenial {
    Expired { at: String },
    RateLimited { retry_after: Duration },
}

impl KeyPolicy {
    pub fn from_entry(k: &KeyEntry) -> KeyPolicy {
        KeyPolicy {
            models: k.models.clone(),
            expires: k.expires,
            limiter: k.requests_per_minute.map(TokenBucket::per_minute),
        }
    }

    /// Checks expiry and takes one request from the rate limit.
    pub fn admit(&self, now: time::OffsetDateTime) -> Result<(), PolicyDenial> {
        if let Some(exp) = self.expires
            && now >= exp
        {
            return Err(PolicyDenial::Expired {
                at: exp
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
            });
        }
        if let Some(l) = &self.limiter {
            l.take(Instant::now())
                .map_err(|retry_after| PolicyDenial::RateLimited { retry_after })?;
        }
        Ok(())
    }

    /// Whether the key may use this model / deployment.
    pub fn permits(&self, model: Option<&str>, deployment: Option<&str>) -> bool {
        self.models.is_empty()
            || [model, deployment]
                .into_iter()
                .flatten()
                .any(|m| self.models.iter().any(|a| a == m))
    }
}

/// A token bucket refilled continuously; capacity is one minute's worth.
#[derive(Debug)]
struct TokenBucket {
    capacity: f64,
    per_sec: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    fn per_minute(n: u32) -> TokenBucket {
        let capacity = f64::from(n);
        TokenBucket {
            capacity,
            per_sec: capacity / 60.0,
            state: Mutex::new((capacity, Instant::now())),
        }
    }

    /// Takes one token, or says how long until one is available.
    fn take(&self, now: Instant) -> Result<(), Duration> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + elapsed * self.per_sec).min(self.capacity);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - s.0) / self.per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_minute_then_says_when() {
        let b = TokenBucket::per_minute(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            b.take(t0).unwrap();
        }
        let wait = b.take(t0).unwrap_err();
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        b.take(t0 + Duration::from_secs(20)).unwrap();
    }

    #[test]
    fn models_and_expiry() {
        let p = KeyPolicy {
            models: vec!["gpt-4o".into()],
            expires: Some(time::macros::datetime!(2027-01-01 0:00 UTC)),
            limiter: None,
        };
        assert!(p.permits(Some("gpt-4o"), None));
        assert!(p.permits(None, Some("gpt-4o")));
        assert!(!p.permits(Some("embed"), Some("text-embedding-3-small")));
        assert!(
            p.admit(time::macros::datetime!(2026-12-31 23:59 UTC))
                .is_ok()
        );
        assert_eq!(
            p.admit(time::macros::datetime!(2027-01-01 0:00 UTC)),
            Err(PolicyDenial::Expired {
                at: "2027-01-01T00:00:00Z".into()
            })
        );
    }
}
