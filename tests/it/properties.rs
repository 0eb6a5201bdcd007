//! Properties of the pure pieces of the request path, over generated inputs: when a cached token
//! is refreshed, how a pasted endpoint is normalized, how request paths are decoded, and the
//! arithmetic of key limits (the 60 s window, Retry-After, calendar quota periods).

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
                deployment: deployment.clone().into(),
                rest: vec!["chat".into(), "completions".into()],
            }
        );
    }
}

// --- Limits: the 60 s sliding window, Retry-After and calendar quota periods (UTC), and
// reservations: what a window admits never exceeds the budget by more than what reservations
// under-estimated. ---

mod limits {
    use entra_proxy::config::{KeyBudget, QuotaPeriod};
    use entra_proxy::limits::memory::MemoryStore;
    use entra_proxy::limits::window::{WINDOW_SECS, period_bounds};
    use entra_proxy::limits::{Admitted, Refusal, Verdict};
    use proptest::prelude::*;

    /// 2026-03-19T06:00:00Z.
    const T0: i64 = 1_773_900_000;

    /// Steps between calls: mostly within a window, sometimes past one.
    fn step() -> impl Strategy<Value = i64> {
        prop_oneof![4 => 0i64..3, 2 => 0i64..30, 1 => 55i64..66, 1 => 0i64..200]
    }

    /// Token counts an answer may report: around the limits generated, or absurd.
    fn tokens() -> impl Strategy<Value = Option<u64>> {
        prop_oneof![
            2 => Just(None),
            4 => (0u64..10_000).prop_map(Some),
            1 => Just(Some(u64::MAX)),
            1 => ((u64::MAX / 2)..=u64::MAX).prop_map(Some),
        ]
    }

    /// What the reference counts in the window ending at `now`: events after `now - 60`.
    fn in_window(events: &[(i64, u64)], now: i64) -> u64 {
        events
            .iter()
            .filter(|(t, _)| *t > now - WINDOW_SECS && *t <= now)
            .fold(0u64, |sum, (_, n)| sum.saturating_add(*n))
    }

    /// The first second from `now` on at which `events` (none added meanwhile) use less than
    /// `limit` in the window.
    fn frees_at(events: &[(i64, u64)], now: i64, limit: u64) -> i64 {
        (now..=now + WINDOW_SECS)
            .find(|t| in_window(events, *t) < limit)
            .unwrap_or(now + WINDOW_SECS)
    }

    fn period() -> impl Strategy<Value = QuotaPeriod> {
        prop_oneof![
            Just(QuotaPeriod::Hour),
            Just(QuotaPeriod::Day),
            Just(QuotaPeriod::Week),
            Just(QuotaPeriod::Month),
        ]
    }

    /// 1970 .. 2100, in seconds.
    fn unix() -> impl Strategy<Value = i64> {
        0i64..4_102_444_800
    }

    proptest! {
        #[test]
        fn no_window_of_sixty_seconds_admits_more_requests_than_the_limit(
            limit in 1u32..12,
            steps in proptest::collection::vec(step(), 1..120),
        ) {
            let store = MemoryStore::default();
            let budget = KeyBudget { requests_per_minute: Some(limit), ..KeyBudget::default() };
            let limit = u64::from(limit);
            let mut admitted: Vec<(i64, u64)> = Vec::new();
            let mut now = T0;
            for step in steps {
                now += step;
                let before = in_window(&admitted, now);
                match store.admit("k", &budget, now) {
                    Verdict::Admitted(standing) => {
                        prop_assert!(before < limit, "admitted with {before} of {limit} used");
                        admitted.push((now, 1));
                        prop_assert_eq!(standing.requests, before + 1);
                        let a = Admitted { budget, standing };
                        let (l, remaining) = a.requests().unwrap();
                        prop_assert_eq!(l, limit);
                        prop_assert_eq!(remaining, limit - (before + 1));
                    }
                    Verdict::Refused(Refusal::Requests { retry_after }) => {
                        prop_assert!(before >= limit, "refused with {before} of {limit} used");
                        prop_assert!((1..=WINDOW_SECS as u64).contains(&retry_after));
                        // Exactly when the window next has room: not a second later or earlier.
                        let frees = frees_at(&admitted, now, limit);
                        prop_assert_eq!(now + retry_after as i64, frees.max(now + 1));
                    }
                    Verdict::Refused(other) => {
                        return Err(TestCaseError::fail(format!("refused for {other:?}")));
                    }
                }
                // Every window of 60 s holds at most `limit` admissions.
                for (t, _) in &admitted {
                    prop_assert!(in_window(&admitted, *t) <= limit);
                }
                prop_assert_eq!(store.peek("k", &budget, now).requests, in_window(&admitted, now));
            }
        }

        #[test]
        fn tokens_are_admitted_only_below_the_limit_and_retry_after_says_when(
            limit in 1u64..5_000,
            steps in proptest::collection::vec((step(), tokens()), 1..80),
        ) {
            let store = MemoryStore::default();
            let budget = KeyBudget { tokens_per_minute: Some(limit), ..KeyBudget::default() };
            let mut charged: Vec<(i64, u64)> = Vec::new();
            let mut now = T0;
            for (step, charge) in steps {
                now += step;
                let used = in_window(&charged, now);
                match store.admit("k", &budget, now) {
                    Verdict::Admitted(standing) => {
                        prop_assert!(used < limit, "admitted with {used} of {limit} tokens used");
                        prop_assert_eq!(standing.tokens, used);
                        let a = Admitted { budget, standing };
                        let (l, remaining) = a.tokens().unwrap();
                        prop_assert_eq!(l, limit);
                        prop_assert!(remaining <= limit);
                        prop_assert_eq!(remaining, limit.saturating_sub(used));
                    }
                    Verdict::Refused(Refusal::Tokens { retry_after }) => {
                        prop_assert!(used >= limit, "refused with {used} of {limit} tokens used");
                        prop_assert!((1..=WINDOW_SECS as u64).contains(&retry_after));
                        let frees = frees_at(&charged, now, limit);
                        prop_assert_eq!(now + retry_after as i64, frees.max(now + 1));
                    }
                    Verdict::Refused(other) => {
                        return Err(TestCaseError::fail(format!("refused for {other:?}")));
                    }
                }
                if let Some(n) = charge {
                    store.charge("k", &budget, now, n);
                    charged.push((now, n));
                }
                prop_assert_eq!(store.peek("k", &budget, now).tokens, in_window(&charged, now));
            }
        }

        #[test]
        fn a_quota_period_holds_now_starts_on_its_calendar_boundary_and_resets_after_now(
            p in period(),
            now in unix(),
        ) {
            let (start, end) = period_bounds(p, now);
            prop_assert!(start <= now && now < end, "{now} not in [{start}, {end})");
            let day = 86_400;
            let t = |s: i64| time::OffsetDateTime::from_unix_timestamp(s).unwrap();
            match p {
                QuotaPeriod::Hour => {
                    prop_assert_eq!(start % 3_600, 0);
                    prop_assert_eq!(end - start, 3_600);
                }
                QuotaPeriod::Day => {
                    prop_assert_eq!(start % day, 0);
                    prop_assert_eq!(end - start, day);
                }
                QuotaPeriod::Week => {
                    prop_assert_eq!(start % day, 0);
                    prop_assert_eq!(t(start).weekday(), time::Weekday::Monday);
                    prop_assert_eq!(end - start, 7 * day);
                }
                QuotaPeriod::Month => {
                    prop_assert_eq!(start % day, 0);
                    prop_assert_eq!(t(start).day(), 1);
                    prop_assert_eq!(t(end).day(), 1);
                    prop_assert_eq!(t(start).month().next(), t(end).month());
                    prop_assert!((28 * day..=31 * day).contains(&(end - start)));
                }
            }
            // The next period starts where this one ends; its last second is still this one.
            prop_assert_eq!(period_bounds(p, end - 1), (start, end));
            prop_assert_eq!(period_bounds(p, end).0, end);
            prop_assert_eq!(period_bounds(p, start), (start, end));
        }

        #[test]
        fn quota_periods_never_go_back_as_time_goes_on(
            p in period(),
            a in unix(),
            later in 0i64..100_000_000,
        ) {
            let (s1, e1) = period_bounds(p, a);
            let (s2, e2) = period_bounds(p, a + later);
            prop_assert!(s1 <= s2 && e1 <= e2);
            prop_assert_eq!(a + later < e1, (s1, e1) == (s2, e2));
        }

        #[test]
        fn a_used_quota_refuses_until_its_period_ends_then_admits(
            p in period(),
            now in unix(),
            quota in 1u64..1_000,
            over in 0u64..1_000,
        ) {
            let store = MemoryStore::default();
            let budget = KeyBudget { token_quota: Some(quota), token_quota_period: p, ..KeyBudget::default() };
            prop_assert!(matches!(store.admit("k", &budget, now), Verdict::Admitted(_)));
            store.charge("k", &budget, now, quota + over);
            let (_, end) = period_bounds(p, now);
            prop_assert_eq!(
                store.admit("k", &budget, now),
                Verdict::Refused(Refusal::Quota { resets_at: end })
            );
            prop_assert_eq!(
                store.admit("k", &budget, end - 1),
                Verdict::Refused(Refusal::Quota { resets_at: end })
            );
            prop_assert!(matches!(store.admit("k", &budget, end), Verdict::Admitted(_)));
        }

        #[test]
        fn tokens_admitted_in_any_window_exceed_the_budget_only_by_what_reservations_under_estimated(
            limit in 1u64..120,
            ops in proptest::collection::vec(reservation_op(), 1..160),
        ) {
            use entra_proxy::limits::{Amounts, Bucket, Limit};
            let bucket = Bucket::default();
            let budget = KeyBudget { tokens_per_minute: Some(limit), ..KeyBudget::default() };
            let tokens = |n| Amounts { tokens: n, micros: 0 };
            // The reference: each admitted request, and the pieces of the window it holds
            // (its reservation at its second, less what was given back; what it used beyond,
            // at the second it was settled).
            let mut admitted: Vec<Request> = Vec::new();
            let mut pieces: Vec<(i64, u64)> = Vec::new();
            let mut now = T0;
            for op in ops {
                match op {
                    ReservationOp::Wait(secs) => now += secs,
                    ReservationOp::Admit(share) => {
                        let reserve = limit * share / 100;
                        let used = in_window(&pieces, now);
                        let fits = reserve <= limit && used + reserve.max(1) <= limit;
                        match bucket.admit(&budget, tokens(reserve), now) {
                            Verdict::Admitted(standing) => {
                                prop_assert!(fits, "admitted {reserve} with {used} of {limit} used");
                                prop_assert_eq!(standing.tokens, used + reserve);
                                pieces.push((now, reserve));
                                admitted.push(Request { at: now, piece: pieces.len() - 1, reserved: reserve, used: None });
                            }
                            Verdict::Refused(Refusal::TooLarge(Limit::TokensPerMinute)) => {
                                prop_assert!(reserve > limit);
                            }
                            Verdict::Refused(Refusal::Tokens { .. }) => {
                                prop_assert!(!fits && reserve <= limit, "refused {reserve} with {used} of {limit} used");
                            }
                            Verdict::Refused(other) => {
                                return Err(TestCaseError::fail(format!("refused for {other:?}")));
                            }
                        }
                    }
                    ReservationOp::Settle(pick, used_share) => {
                        let open: Vec<usize> = (0..admitted.len()).filter(|i| admitted[*i].used.is_none()).collect();
                        if open.is_empty() {
                            continue;
                        }
                        let i = open[pick % open.len()];
                        let r = admitted[i].reserved;
                        let used = limit * used_share / 100;
                        let release = r.saturating_sub(used);
                        let charge = used.saturating_sub(r);
                        bucket.settle(&budget, admitted[i].at, tokens(release), tokens(charge), now);
                        admitted[i].used = Some(used);
                        if admitted[i].at > now - WINDOW_SECS {
                            pieces[admitted[i].piece].1 -= release;
                        }
                        if charge > 0 {
                            pieces.push((now, charge));
                        }
                    }
                }
                prop_assert_eq!(bucket.peek(&budget, now).tokens, in_window(&pieces, now));
                // The invariant, for the window ending now: what the requests admitted in it
                // used (a request still running: what it holds) is within the budget plus what
                // their reservations under-estimated.
                let window: Vec<&Request> = admitted.iter().filter(|r| r.at > now - WINDOW_SECS).collect();
                let spent: u64 = window.iter().map(|r| r.used.unwrap_or(r.reserved)).sum();
                let under: u64 = window.iter().map(|r| r.used.unwrap_or(0).saturating_sub(r.reserved)).sum();
                prop_assert!(spent <= limit + under, "{spent} used in a window of {limit}, {under} under-estimated");
            }
        }
    }

    /// A request the reservation property admitted: when, what it reserved, which piece of the
    /// window holds its reservation, and what it used once settled.
    struct Request {
        at: i64,
        piece: usize,
        reserved: u64,
        used: Option<u64>,
    }

    /// What happens next to a key's budget: time passes, a request reserving a share of the
    /// budget (in percent, sometimes more than all of it) asks, or a running request ends having
    /// used a share of the budget (sometimes none, sometimes more than it reserved).
    #[derive(Debug, Clone)]
    enum ReservationOp {
        Wait(i64),
        Admit(u64),
        Settle(usize, u64),
    }

    fn reservation_op() -> impl Strategy<Value = ReservationOp> {
        prop_oneof![
            2 => step().prop_map(ReservationOp::Wait),
            4 => prop_oneof![8 => 0u64..=100, 1 => 101u64..200].prop_map(ReservationOp::Admit),
            3 => (any::<usize>(), prop_oneof![4 => 0u64..=100, 1 => 100u64..300])
                .prop_map(|(i, u)| ReservationOp::Settle(i, u)),
        ]
    }
}
