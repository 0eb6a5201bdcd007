//! Inputs the fuzz targets and property tests (fuzz/, tests/it/properties.rs) found mishandled,
//! or that were spotted while writing their reference checks, each kept as a test of the fixed
//! behaviour.

use entra_proxy::config::normalize_endpoint;

#[test]
fn an_ampersand_in_an_endpoint_base_path_is_kept() {
    // Was decoded as a form value, which ends at `&`: the base became https://apim.example.com/a.
    let n = normalize_endpoint("https://apim.example.com/a&b/openai/deployments/gpt-4o").unwrap();
    assert_eq!(n.base.as_str(), "https://apim.example.com/a&b");
    assert_eq!(n.deployment_from_url.as_deref(), Some("gpt-4o"));
}

#[test]
fn normalizing_an_endpoint_twice_gives_the_same_base() {
    // `%6Fpenai` was kept in the base (not recognised encoded), written back as `openai`, and
    // cut off by the next normalization.
    let once = normalize_endpoint("https://a.openai.azure.com/%6Fpenai/deployments/x").unwrap();
    assert_eq!(once.base.as_str(), "https://a.openai.azure.com/");
    assert_eq!(once.deployment_from_url.as_deref(), Some("x"));
    let twice = normalize_endpoint(once.base.as_str()).unwrap();
    assert_eq!(twice.base, once.base);
    assert!(!twice.changed);
}

#[test]
fn a_deployment_named_in_a_pasted_url_is_decoded() {
    // Routing decodes path segments, so the deployment it learns from the URL must be decoded too.
    let n = normalize_endpoint(
        "https://a.openai.azure.com/openai/deployments/my%20dep/chat/completions",
    )
    .unwrap();
    assert_eq!(n.deployment_from_url.as_deref(), Some("my dep"));
}

/// One v1-shaped backend whose model `gpt-4o` is deployed as `gpt-4o-2024-08-06`.
fn v1_table() -> entra_proxy::routing::RoutingTable {
    let c = entra_proxy::config::Config::parse(
        "[[backends]]\nname='only'\nendpoint='https://only.openai.azure.com'\napi='v1'\n\
         [[models]]\nname='gpt-4o'\nbackend='only'\ndeployment='gpt-4o-2024-08-06'\n",
        "t.toml",
        &|_| None,
    )
    .unwrap();
    entra_proxy::routing::RoutingTable::new(&c)
}

#[test]
fn a_json_array_body_is_refused_rather_than_forwarded_unrewritten() {
    // serde reads a struct from an array, so `["gpt-4o"]` named model gpt-4o; the rewrite only
    // touches objects, and the body went to the v1 backend with the model name unmapped.
    use entra_proxy::routing::{plan, resolve};
    let t = v1_table();
    for path in ["/v1/chat/completions", "/openai/v1/chat/completions"] {
        let body = bytes::Bytes::from_static(br#" ["gpt-4o"]"#);
        let e = resolve(&t, &plan(path).unwrap(), path, None, None, Some(&body)).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("the request body is not JSON"),
            "{path}: {text}"
        );
        assert!(text.contains("JSON object"), "{text}");
    }
}

/// A JWT with the given claims and a fixed signature, as `explain` reads it.
fn jwt(claims: serde_json::Value) -> String {
    use base64::Engine as _;
    let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    format!(
        "{}.{}.c2lnbmF0dXJlLW5ldmVyLXNob3du",
        b64(r#"{"alg":"RS256","typ":"JWT"}"#),
        b64(&claims.to_string())
    )
}

#[test]
fn explaining_a_token_that_expires_in_year_9999_east_of_utc_shows_the_number() {
    // 9999-12-31 23:59:59 UTC is year 10000 at +01:00: `to_offset` panicked.
    use entra_proxy::diagnose::{Target, explain, render_text};
    let target = Target::for_host("res.openai.azure.com").unwrap();
    let now = 1_735_812_000;
    let e = explain(
        &jwt(serde_json::json!({"exp": 253_402_300_799_i64, "iat": now})),
        &target,
        now,
    )
    .unwrap();
    let plus_one = time::UtcOffset::from_hms(1, 0, 0).unwrap();
    let text = render_text(&e, &target, now, plus_one);
    assert!(text.contains("unix time 253402300799"), "{text}");
}

#[test]
fn token_lifetimes_at_the_ends_of_the_clock_do_not_overflow() {
    // `exp + leeway` and `now - exp` overflowed for exp near i64::MAX / i64::MIN.
    use entra_proxy::claims::Claims;
    use entra_proxy::inbound::{TokenRejection, check_lifetime};
    let now = 1_735_812_000;
    let far = Claims {
        exp: Some(i64::MAX),
        nbf: Some(i64::MIN),
        ..Claims::default()
    };
    assert_eq!(check_lifetime(&far, now), Ok(()));
    let ancient = Claims {
        exp: Some(i64::MIN),
        ..Claims::default()
    };
    assert!(matches!(
        check_lifetime(&ancient, now),
        Err(TokenRejection::Expired { .. })
    ));
    let not_yet = Claims {
        exp: Some(i64::MAX),
        nbf: Some(i64::MAX),
        ..Claims::default()
    };
    assert!(matches!(
        check_lifetime(&not_yet, i64::MIN),
        Err(TokenRejection::NotYetValid { .. })
    ));
}

#[test]
fn a_bearer_token_in_an_azure_error_body_never_reaches_the_diagnosis() {
    // The messages diagnoses quote (principal, api-version text) echoed a token in the body.
    use entra_proxy::cloud::{Cloud, HostKind};
    use entra_proxy::diagnose::{Context, classify};
    let token = jwt(serde_json::json!({"aud": "https://cognitiveservices.azure.com"}));
    let ctx = Context {
        backend: "primary",
        host: "res.openai.azure.com",
        cloud: Cloud::Public,
        host_kind: Some(HostKind::OpenAi),
        expected_audience: "https://cognitiveservices.azure.com",
        token: None,
        expected_tenant: None,
        deployment: Some("gpt-4o"),
        known_deployments: &[],
        request_path: None,
        endpoint_path: "/",
        api_version: Some("2023-13-45-preview"),
        now: 1_735_812_000,
    };
    let bodies = [
        (
            403,
            format!(
                r#"{{"error":{{"code":"PermissionDenied","message":"The principal `{token}` lacks the required data action `x` to perform `POST` operation."}}}}"#
            ),
        ),
        (
            400,
            format!(
                r#"{{"error":{{"code":"InvalidApiVersion","message":"API version not supported for Bearer {token}"}}}}"#
            ),
        ),
    ];
    for (status, body) in bodies {
        let d = classify(status, None, body.as_bytes(), &ctx).unwrap();
        let shown = format!(
            "{} {}",
            d.header_value(),
            serde_json::to_string(&d).unwrap()
        );
        assert!(!shown.contains(&token[..24]), "{shown}");
        assert!(shown.contains("<token>"), "{shown}");
    }
}

#[test]
fn rewriting_model_keeps_every_number_the_client_sent() {
    // The body is parsed and written back to change `model`; a number whose decimal form the
    // default (approximate) parser rounds differently on the second reading came out changed.
    use entra_proxy::routing::{plan, resolve};
    let t = v1_table();
    let path = "/v1/chat/completions";
    for n in [
        "1844674407370957440737007370957",
        "0.30000000000000004",
        "1.7976931348623157e308",
    ] {
        let sent = format!(r#"{{"model":"gpt-4o","seed":{n}}}"#);
        let body = bytes::Bytes::from(sent.clone());
        let routes = resolve(&t, &plan(path).unwrap(), path, None, None, Some(&body)).unwrap();
        let rewritten = routes[0].body.as_ref().unwrap();
        let before: serde_json::Value = serde_json::from_str(&sent).unwrap();
        let after: serde_json::Value = serde_json::from_slice(rewritten).unwrap();
        assert_eq!(after["model"], "gpt-4o-2024-08-06");
        assert_eq!(after["seed"], before["seed"], "{n}");
    }
}

#[test]
fn an_encoded_newline_in_an_endpoint_base_path_survives_normalization() {
    // Kept segments were decoded and re-added; the URL parser drops a raw newline, so
    // `/deployments/%0a` became `/deployments/`, and `/deployments` on the next pass.
    let once = normalize_endpoint("https://a.openai.azure.com/deployments/%0a").unwrap();
    assert_eq!(
        once.base.as_str(),
        "https://a.openai.azure.com/deployments/%0a"
    );
    let twice = normalize_endpoint(once.base.as_str()).unwrap();
    assert_eq!(twice.base, once.base);
}

#[test]
fn a_query_key_is_read_whole_when_it_holds_an_equals_sign_and_an_escape() {
    // A value with `%` or `+` was decoded as a name, which ends at `=`: `k%2B1=x` was read as
    // the key `k+1`. Without an escape the same value was read whole, `=` included.
    use entra_proxy::inbound::query::credential;
    assert_eq!(
        credential(Some("api-key=k%2B1=x")).as_deref(),
        Some("k+1=x")
    );
    assert_eq!(credential(Some("api-key=k1=x")).as_deref(), Some("k1=x"));
    assert_eq!(
        credential(Some("subscription-key==abc+")).as_deref(),
        Some("=abc ")
    );
}

#[test]
fn usage_counts_too_large_to_add_give_the_largest_total() {
    // `total_tokens` missing is prompt + completion, which overflowed (a panic with overflow
    // checks, a wrapped, tiny charge without).
    use entra_proxy::metering::{SseMeter, json_usage};
    let body = br#"{"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":1}}"#;
    assert_eq!(json_usage(body).map(|u| u.total), Ok(u64::MAX));
    let mut m = SseMeter::new(true);
    m.feed(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":18446744073709551615,\"completion_tokens\":2}}\n\n");
    assert_eq!(m.result(true).map(|u| u.total), Ok(u64::MAX));
}

#[test]
fn a_limit_window_holding_more_tokens_than_a_u64_stays_full() {
    // Charging a key twice near u64::MAX tokens in one window overflowed its sums (a panic
    // with overflow checks; without them the window wrapped to nearly empty and admitted).
    use entra_proxy::config::KeyBudget;
    use entra_proxy::limits::memory::MemoryStore;
    use entra_proxy::limits::{Admitted, Refusal, Verdict};
    let store = MemoryStore::default();
    let budget = KeyBudget {
        tokens_per_minute: Some(1000),
        ..KeyBudget::default()
    };
    let t = 1_773_900_000;
    let Verdict::Admitted(standing) = store.admit("k", &budget, t) else {
        panic!("the first request is admitted")
    };
    store.charge("k", &budget, t, u64::MAX);
    store.charge("k", &budget, t, u64::MAX);
    store.charge("k", &budget, t + 1, 5);
    assert_eq!(store.peek("k", &budget, t + 1).tokens, u64::MAX);
    assert_eq!(
        store.admit("k", &budget, t + 2),
        Verdict::Refused(Refusal::Tokens { retry_after: 58 })
    );
    let full = Admitted {
        budget,
        standing: entra_proxy::limits::Standing {
            tokens: u64::MAX,
            ..standing
        },
    };
    assert_eq!(full.tokens(), Some((1000, 0)));
}
