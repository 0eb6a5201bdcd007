//! Properties of the pure pieces of the request path, over generated inputs: when a cached token
//! is refreshed, how a pasted endpoint is normalized, and how request paths are decoded.

use entra_proxy::config::normalize_endpoint;
use entra_proxy::identity::{expiry_margin, refresh_at};
use entra_proxy::routing::{Plan, plan};
use proptest::prelude::*;
use std::time::{Duration, SystemTime};

/// Five minutes: the refresh happens no later than this before expiry, unless the token is so
/// short-lived that the quarter-lifetime floor wins.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

fn instant() -> impl Strategy<Value = SystemTime> {
    // 1970 .. 2100, in milliseconds.
    (0u64..4_102_444_800_000).prop_map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

fn lifetime() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0u64..1_000_000_000).prop_map(Duration::from_nanos),
        (0u64..600).prop_map(Duration::from_secs),
        (0u64..7 * 86_400_000).prop_map(Duration::from_millis),
        Just(Duration::from_secs(3_600)),
        Just(Duration::from_secs(86_400)),
    ]
}

proptest! {
    #[test]
    fn refresh_is_after_issue_and_before_expiry(acquired in instant(), life in lifetime()) {
        let expires = acquired + life;
        let at = refresh_at(acquired, expires);
        prop_assert!(at >= acquired);
        if !life.is_zero() {
            prop_assert!(at < expires, "refresh at {at:?} is not before expiry {expires:?}");
        }
    }

    #[test]
    fn refresh_is_at_half_life_or_five_minutes_early_never_before_a_quarter(
        acquired in instant(),
        life in lifetime(),
    ) {
        let delay = refresh_at(acquired, acquired + life).duration_since(acquired).unwrap();
        prop_assert!(delay <= life / 2, "{delay:?} is past half of {life:?}");
        prop_assert!(delay >= life / 4, "{delay:?} is before a quarter of {life:?}");
        prop_assert!(
            life - delay >= REFRESH_BEFORE_EXPIRY || delay == life / 4,
            "{delay:?} of {life:?} is less than 5 min before expiry without the floor applying"
        );
        if life >= REFRESH_BEFORE_EXPIRY * 2 {
            prop_assert_eq!(delay, (life / 2).min(life - REFRESH_BEFORE_EXPIRY));
        }
    }

    #[test]
    fn a_token_is_still_handed_out_when_its_refresh_is_due(
        acquired in instant(),
        life in lifetime(),
    ) {
        prop_assume!(!life.is_zero());
        let expires = acquired + life;
        let at = refresh_at(acquired, expires);
        prop_assert!(at + expiry_margin(acquired, expires) < expires);
    }

    #[test]
    fn a_token_that_expired_before_it_was_issued_is_refreshed_at_once(
        acquired in instant(),
        back in 1u64..86_400_000,
    ) {
        let expires = acquired - Duration::from_millis(back);
        prop_assert_eq!(refresh_at(acquired, expires), acquired);
    }
}

/// A path segment as people paste it: plain, percent-encoded, or words the normalizer looks for.
fn url_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9._~!$&'()*+,;=:@-]{1,8}",
        "(%[0-9A-Fa-f]{2}|[a-z0-9&=+]){1,6}",
        Just("openai".to_string()),
        Just("OpenAI".to_string()),
        Just("%6Fpenai".to_string()),
        Just("deployments".to_string()),
        Just("gpt-4o".to_string()),
        Just("v1".to_string()),
        Just("..".to_string()),
        Just("%2e".to_string()),
    ]
}

fn endpoint() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("https"), Just("http"), Just("HTTPS")],
        prop_oneof![
            "[a-z][a-z0-9-]{0,12}\\.openai\\.azure\\.com",
            "[a-z][a-z0-9-]{0,12}\\.services\\.ai\\.azure\\.com",
            Just("127.0.0.1".to_string()),
            Just("[::1]".to_string()),
            Just("APIM.Example.COM".to_string()),
        ],
        prop::option::of(1u16..65535),
        prop::collection::vec(url_segment(), 0..6),
        prop::option::of("api-version=[0-9a-z-]{1,20}(&x=[a-z%0-9]{0,4})?"),
        prop::option::of("[a-z]{0,5}"),
        any::<bool>(),
    )
        .prop_map(|(scheme, host, port, segs, query, fragment, slash)| {
            let mut s = format!("{scheme}://{host}");
            if let Some(p) = port {
                s.push_str(&format!(":{p}"));
            }
            for seg in segs {
                s.push('/');
                s.push_str(&seg);
            }
            if slash {
                s.push('/');
            }
            if let Some(q) = query {
                s.push('?');
                s.push_str(&q);
            }
            if let Some(f) = fragment {
                s.push('#');
                s.push_str(&f);
            }
            s
        })
}

proptest! {
    #[test]
    fn normalizing_an_endpoint_twice_changes_nothing_more(raw in endpoint()) {
        if let Ok(once) = normalize_endpoint(&raw) {
            let twice = normalize_endpoint(once.base.as_str())
                .map_err(|e| TestCaseError::fail(format!("{raw} -> {} refused: {e}", once.base)))?;
            prop_assert_eq!(&twice.base, &once.base, "{}", raw);
            prop_assert!(!twice.changed, "{raw} -> {} -> {}", once.base, twice.base);
            prop_assert_eq!(twice.api_version_from_url, None);
            prop_assert_eq!(twice.deployment_from_url, None);
        }
    }
}

/// Percent-encodes every byte but ASCII letters, digits and `-`, in upper- or lowercase hex.
fn encode(s: &str, lower_hex: bool) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' => char::from(b).to_string(),
            _ if lower_hex => format!("%{b:02x}"),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

proptest! {
    #[test]
    fn deployment_names_survive_percent_encoding_in_the_path(
        deployment in "\\PC{1,12}",
        lower_hex in any::<bool>(),
    ) {
        prop_assume!(!deployment.contains('/') && !deployment.contains('\\'));
        prop_assume!(deployment != "." && deployment != "..");
        let encoded = encode(&deployment, lower_hex);
        let path = format!("/openai/deployments/{encoded}/chat/completions");
        prop_assert_eq!(
            plan(&path).map_err(|e| TestCaseError::fail(e.to_string()))?,
            Plan::Deployment {
                deployment: deployment.clone(),
                rest: vec!["chat".into(), "completions".into()],
            }
        );
    }
}
