//! Entra callers as first-class: `[[identities]]` matched by their tokens' claims over real HTTP
//! and WebSocket — precedence, models, the identity's own budgets, each user's budget inside a
//! shared identity, unmatched callers refused or let through, client credentials matched by
//! client id, hostile claims, and an identity's counters shared by two proxies through Redis.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::redis::Redis;
use crate::common::*;
use azure_emulator::{Emulator, MintSpec};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

const PROXY_AUD: &str = "api://entra-proxy";
const APP: &str = "5e5c3f1a-1111-4000-8000-0000000000a1";
const OTHER_APP: &str = "5e5c3f1a-2222-4000-8000-0000000000a2";
const USER_1: &str = "0c000000-0000-4000-8000-000000000001";
const USER_2: &str = "0c000000-0000-4000-8000-000000000002";
const USER_3: &str = "0c000000-0000-4000-8000-000000000003";
const GROUP: &str = "0a000000-0000-4000-8000-0000000000a1";

/// The base config with Entra callers for the proxy's audience, and `identities`.
fn config(emu: &Emulator, identities: &str) -> String {
    format!(
        "{}\n[inbound.entra]\ntenants = [\"{}\"]\naudiences = [\"{PROXY_AUD}\"]\n{identities}",
        base_config(&emu.url()),
        emu.config().tenant_id
    )
}

async fn harness(identities: &str) -> Harness {
    let emu = emulator().await;
    let text = config(&emu, identities);
    proxy(emu, &text).await
}

/// A user token for the proxy: `oid` of `user`, from app `app`, in `groups` with `roles`.
fn user_token(h: &Harness, user: &str, app: &str, groups: &[&str], roles: &[&str]) -> String {
    let mut spec = MintSpec::new(PROXY_AUD);
    spec.oid = Some(user.into());
    spec.appid = Some(app.into());
    spec.scp = Some("user_impersonation".into());
    spec.groups = groups.iter().map(|g| (*g).to_string()).collect();
    spec.roles = roles.iter().map(|r| (*r).to_string()).collect();
    h.emulator.mint(&spec)
}

/// The `max_tokens` of [`chat_as`]'s requests.
const ANSWER: u64 = 20;

/// What one request of [`chat_as`] reserves: its prompt estimate (10 bytes of text: 3 tokens,
/// + 4 for its message + 3) and its `max_tokens`.
const RESERVED: u64 = 3 + 4 + 3 + ANSWER;

async fn chat_as(h: &Harness, token: &str, model: &str) -> reqwest::Response {
    let path = if model == "embed" {
        "/v1/embeddings"
    } else {
        "/v1/chat/completions"
    };
    client()
        .post(h.url(path))
        .bearer_auth(token)
        .json(&json!({"model": model, "input": "hello", "messages": [{"role": "user", "content": "hello"}], "max_tokens": ANSWER}))
        .send()
        .await
        .unwrap()
}

/// The identity a gpt-4o request was refused as, when every identity allows only `embed`.
async fn refused_as(h: &Harness, token: &str) -> String {
    let (status, code, message) = error_of(chat_as(h, token, "gpt-4o").await).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "model_not_allowed"),
        "{message}"
    );
    message
        .split_once(" may not use")
        .map(|(who, _)| who.to_string())
        .unwrap_or(message)
}

#[tokio::test]
async fn the_most_specific_identity_names_the_caller_and_its_models_apply() {
    let emu = emulator().await;
    let tenant = emu.config().tenant_id.clone();
    let blocks = format!(
        "[[identities]]\nname = \"everyone\"\ntenant = \"{tenant}\"\nmodels = [\"embed\"]\n\
         [[identities]]\nname = \"analysts\"\ngroup = \"{GROUP}\"\nmodels = [\"embed\"]\n\
         [[identities]]\nname = \"readers\"\nrole = \"Reader\"\nmodels = [\"embed\"]\n\
         [[identities]]\nname = \"search-app\"\napp_id = \"{APP}\"\nmodels = [\"embed\"]\n\
         [[identities]]\nname = \"alice\"\nobject_id = \"{USER_1}\"\nmodels = [\"embed\"]\n"
    );
    let text = config(&emu, &blocks);
    let h = proxy(emu, &text).await;
    let all = user_token(&h, USER_1, APP, &[GROUP], &["Reader"]);
    assert_eq!(refused_as(&h, &all).await, "identity:alice");
    let t = user_token(&h, USER_2, APP, &[GROUP], &["Reader"]);
    assert_eq!(refused_as(&h, &t).await, "identity:search-app");
    let t = user_token(&h, USER_2, OTHER_APP, &[GROUP], &["Reader"]);
    assert_eq!(refused_as(&h, &t).await, "identity:readers");
    let t = user_token(&h, USER_2, OTHER_APP, &[GROUP], &[]);
    assert_eq!(refused_as(&h, &t).await, "identity:analysts");
    let t = user_token(&h, USER_2, OTHER_APP, &[], &[]);
    assert_eq!(refused_as(&h, &t).await, "identity:everyone");
    // Its allowed model goes through, counted under the identity's label, with its ids logged.
    let r = chat_as(&h, &all, "embed").await;
    assert_eq!(r.status(), 200);
    let text = metrics_text(h.addr).await;
    assert!(
        metric_in(
            &text,
            "entra_proxy_tokens_total",
            &[("key", "identity:alice")]
        )
        .is_some(),
        "{text}"
    );
    assert!(
        !text.contains(USER_1),
        "metrics are never labelled by oid: {text}"
    );
    h.stop().await;
}

#[tokio::test]
async fn an_identity_has_its_own_tokens_per_minute_and_quota() {
    // Room for one request's reservation each; what the first uses leaves too little.
    let h = harness(&format!(
        "[[identities]]\nname = \"search-app\"\napp_id = \"{APP}\"\ntoken_quota = {RESERVED}\ntoken_quota_period = \"day\"\n\
         [[identities]]\nname = \"batch-app\"\napp_id = \"{OTHER_APP}\"\ntokens_per_minute = {RESERVED}\n"
    ))
    .await;
    let quota = user_token(&h, USER_1, APP, &[], &[]);
    assert_eq!(chat_as(&h, &quota, "gpt-4o").await.status(), 200);
    let (status, code, message) = error_of(chat_as(&h, &quota, "gpt-4o").await).await;
    assert_eq!((status, code.as_str()), (429, "insufficient_quota"));
    assert!(
        message.starts_with(&format!(
            "identity \"search-app\" has used its token_quota of {RESERVED} tokens for this day"
        )),
        "{message}"
    );
    let tpm = user_token(&h, USER_1, OTHER_APP, &[], &[]);
    assert_eq!(chat_as(&h, &tpm, "gpt-4o").await.status(), 200);
    let (status, code, message) = error_of(chat_as(&h, &tpm, "gpt-4o").await).await;
    assert_eq!((status, code.as_str()), (429, "tokens_rate_limited"));
    assert!(
        message.starts_with(&format!(
            "identity \"batch-app\" is over its tokens_per_minute limit of {RESERVED}"
        )),
        "{message}"
    );
    h.stop().await;
}

/// Tokens one chat completion of "hello" costs against a budget (as the emulator answers it).
async fn tokens_of_one_chat(h: &Harness, token: &str) -> u64 {
    let r = chat_as(h, token, "gpt-4o").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["usage"]["total_tokens"].as_u64().unwrap()
}

#[tokio::test]
async fn two_users_of_one_group_are_each_stopped_by_their_own_budget_and_the_group_total_holds() {
    // How much one answer costs, measured by an identity without limits.
    let probe = harness(&format!(
        "[[identities]]\nname = \"g\"\ngroup = \"{GROUP}\"\n"
    ))
    .await;
    let t = user_token(&probe, USER_1, APP, &[GROUP], &[]);
    let one = tokens_of_one_chat(&probe, &t).await;
    probe.stop().await;
    assert!(
        one < RESERVED,
        "an answer uses less than its request reserves"
    );
    // Each user has room for one request; the group for two: after the first user's answer
    // (`one`), one more reservation fits, and after the second's, none.
    let h = harness(&format!(
        "[[identities]]\nname = \"analysts\"\ngroup = \"{GROUP}\"\ntoken_quota = {}\nper_user_token_quota = {RESERVED}\n",
        one + RESERVED
    ))
    .await;
    let user = |oid| user_token(&h, oid, APP, &[GROUP], &[]);
    let (u1, u2, u3) = (user(USER_1), user(USER_2), user(USER_3));
    assert_eq!(tokens_of_one_chat(&h, &u1).await, one);
    let (status, code, message) = error_of(chat_as(&h, &u1, "gpt-4o").await).await;
    assert_eq!((status, code.as_str()), (429, "insufficient_quota"));
    assert!(
        message.starts_with(&format!(
            "user {USER_1} of identity \"analysts\" has used its token_quota"
        )),
        "{message}"
    );
    // The second user has a budget of their own.
    assert_eq!(tokens_of_one_chat(&h, &u2).await, one);
    // The group's total is now spent: a third user is refused by it.
    let (status, _, message) = error_of(chat_as(&h, &u3, "gpt-4o").await).await;
    assert_eq!(status, 429);
    assert!(
        message.starts_with("identity \"analysts\" has used its token_quota"),
        "{message}"
    );
    h.stop().await;
}

#[tokio::test]
async fn unmatched_tokens_are_refused_naming_their_ids_or_let_through_when_allowed() {
    let blocks = format!("[[identities]]\nname = \"search-app\"\napp_id = \"{APP}\"\n");
    let h = harness(&blocks).await;
    let stranger = user_token(&h, USER_2, OTHER_APP, &[], &[]);
    let (status, code, message) = error_of(chat_as(&h, &stranger, "gpt-4o").await).await;
    assert_eq!((status, code.as_str()), (403, "no_matching_identity"));
    let tenant = h.emulator.config().tenant_id.clone();
    assert!(
        message.contains(&format!("tid {tenant}, oid {USER_2}, azp {OTHER_APP}")),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "add [[identities]] name = \"…\" app_id = \"{OTHER_APP}\""
        )),
        "{message}"
    );
    assert!(!message.contains(&stranger));
    assert_eq!(h.emulator.stats().data_requests, 0, "refused before Azure");
    h.stop().await;

    let h = harness(&format!("unmatched = \"allow\"\n{blocks}")).await;
    let stranger = user_token(&h, USER_2, OTHER_APP, &[], &[]);
    assert_eq!(chat_as(&h, &stranger, "gpt-4o").await.status(), 200);
    h.stop().await;

    // Without identities, every valid token passes as before.
    let h = harness("").await;
    let stranger = user_token(&h, USER_2, OTHER_APP, &[], &[]);
    assert_eq!(chat_as(&h, &stranger, "gpt-4o").await.status(), 200);
    h.stop().await;
}

#[tokio::test]
async fn hostile_claims_are_a_clear_refusal_or_no_match_never_a_failure() {
    let blocks = format!(
        "[[identities]]\nname = \"analysts\"\ngroup = \"{GROUP}\"\n\
         [[identities]]\nname = \"readers\"\nrole = \"Reader\"\n"
    );
    let emu = emulator().await;
    // Room for a token with 10,000 groups.
    let text =
        config(&emu, &blocks).replace("[server]\n", "[server]\nmax_header_bytes = 1048576\n");
    let h = proxy(emu, &text).await;
    let with = |extra: Value| {
        let mut spec = MintSpec::new(PROXY_AUD);
        spec.oid = Some(USER_1.into());
        spec.appid = Some(APP.into());
        if let Value::Object(m) = extra {
            spec.extra_claims = m;
        }
        h.emulator.mint(&spec)
    };
    for (claims, says) in [
        (json!({"groups": GROUP}), "its groups claim is a string"),
        (
            json!({"roles": {"Reader": true}}),
            "its roles claim is an object",
        ),
        (json!({"oid": "not-a-guid"}), "oid not-a-guid"),
        (
            json!({"groups": [GROUP], "_claim_names": {"groups": "src1"}}),
            "groups overage",
        ),
    ] {
        let (status, code, message) =
            error_of(chat_as(&h, &with(claims.clone()), "gpt-4o").await).await;
        assert_eq!(
            (status, code.as_str()),
            (403, "no_matching_identity"),
            "{claims}"
        );
        assert!(message.contains(says), "{claims}: {message}");
    }
    // Ten thousand groups, the matching one last: matched, and quickly enough to answer.
    let mut groups: Vec<String> = (0..10_000)
        .map(|i| format!("0b000000-0000-4000-8000-{i:012}"))
        .collect();
    groups.push(GROUP.into());
    let big = with(json!({"groups": groups}));
    assert_eq!(chat_as(&h, &big, "gpt-4o").await.status(), 200);
    h.stop().await;
}

#[tokio::test]
async fn client_credentials_are_matched_by_their_client_id() {
    let emu = emulator().await;
    let tenant = emu.config().tenant_id.clone();
    emu.register_app(&tenant, APP, "secret-of-the-search-app");
    emu.register_app(&tenant, OTHER_APP, "secret-of-another-app");
    let text = format!(
        "{}\n[inbound.client_credentials]\ntenant_id = \"{tenant}\"\n\
         [[identities]]\nname = \"search-app\"\napp_id = \"{APP}\"\nmodels = [\"embed\"]\n",
        base_config(&emu.url())
    );
    let h = proxy(emu, &text).await;
    let basic = |id: &str, secret: &str| {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
        )
    };
    let call = |auth: String| {
        client()
            .post(h.url("/v1/chat/completions"))
            .header("authorization", auth)
            .json(&chat_body("gpt-4o"))
            .send()
    };
    let (status, code, message) =
        error_of(call(basic(APP, "secret-of-the-search-app")).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (403, "model_not_allowed"));
    assert!(
        message.starts_with("identity:search-app may not use"),
        "{message}"
    );
    let (status, code, message) = error_of(
        call(basic(OTHER_APP, "secret-of-another-app"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (403, "no_matching_identity"),
        "{message}"
    );
    assert!(!message.contains("secret-of-another-app"));
    h.stop().await;
}

/// Opens a Realtime session as `token`; `Err(status)` when the handshake is refused.
async fn realtime_as(h: &Harness, token: &str) -> Result<(), u16> {
    let mut req = format!("ws://{}/v1/realtime?model=gpt-4o", h.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut socket, _) = match tokio_tungstenite::connect_async(req).await {
        Ok(ok) => ok,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => return Err(r.status().as_u16()),
        Err(e) => panic!("{e}"),
    };
    socket
        .send(Message::text(r#"{"type":"response.create"}"#))
        .await
        .unwrap();
    while let Some(Ok(m)) = socket.next().await {
        if let Message::Text(t) = m
            && t.contains("response.done")
        {
            break;
        }
    }
    socket.close(None).await.unwrap();
    while let Some(Ok(_)) = socket.next().await {}
    Ok(())
}

#[tokio::test]
async fn realtime_sessions_are_admitted_and_charged_per_identity_and_per_user() {
    // A session reserves the default room for an answer at its handshake: the user's whole
    // quota, so what the first session uses leaves too little for a second.
    let h = harness(&format!(
        "[limits]\ndefault_completion_reservation = 20\n\n[[identities]]\nname = \"voice\"\ngroup = \"{GROUP}\"\nper_user_token_quota = 20\n"
    ))
    .await;
    let u1 = user_token(&h, USER_1, APP, &[GROUP], &[]);
    let u2 = user_token(&h, USER_2, APP, &[GROUP], &[]);
    realtime_as(&h, &u1).await.unwrap();
    // The session's usage was charged to the user: their next handshake is refused.
    let mut refused = None;
    for _ in 0..50 {
        match realtime_as(&h, &u1).await {
            Err(status) => {
                refused = Some(status);
                break;
            }
            Ok(()) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    assert_eq!(refused, Some(429));
    // Another user of the same identity still gets in.
    realtime_as(&h, &u2).await.unwrap();
    h.stop().await;
}

#[tokio::test]
async fn an_identitys_counters_are_shared_by_two_proxies_through_redis() {
    let redis = Redis::start();
    let emu = emulator().await;
    let text = config(
        &emu,
        &format!(
            "[[identities]]\nname = \"search-app\"\napp_id = \"{APP}\"\nrequests_per_minute = 3\n"
        ),
    )
    .replace(
        "[azure]",
        &format!("[limits]\nredis_url = \"{}\"\n\n[azure]", redis.url()),
    );
    let (a, _pa) = spawn_binary(&text, &[]).await;
    let (b, _pb) = spawn_binary(&text, &[]).await;
    let mut spec = MintSpec::new(PROXY_AUD);
    spec.appid = Some(APP.into());
    let token = emu.mint(&spec);
    let send = |addr: std::net::SocketAddr| {
        client()
            .post(format!("http://{addr}/v1/chat/completions"))
            .bearer_auth(&token)
            .json(&chat_body("gpt-4o"))
            .send()
    };
    let mut statuses = Vec::new();
    for addr in [a.addr, b.addr, a.addr, b.addr] {
        statuses.push(send(addr).await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429], "three a minute across both");
    // The identity's counters live apart from any key's.
    assert_eq!(
        redis.hash_sum("entra-proxy:identity:{search-app}:requests"),
        3
    );
    let _ = stop_and_collect(a).await;
    let _ = stop_and_collect(b).await;
}

fn run_cli(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write as _;
    let mut child = std::process::Command::new(binary())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn the_cli_adds_removes_and_explains_identities() {
    let emu = emulator().await;
    let dir = std::env::temp_dir().join(format!("ep-identities-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys.toml");
    std::fs::write(&keys, "# the team's keys and identities\n").unwrap();
    let keys_arg = keys.to_str().unwrap();
    let out = run_cli(
        &[
            "identities",
            "add",
            "--name",
            "search-app",
            "--app-id",
            APP,
            "--model",
            "gpt-4o",
            "--keys-file",
            keys_arg,
        ],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&keys).unwrap();
    assert!(
        text.starts_with("# the team's keys and identities\n"),
        "{text}"
    );
    assert!(text.contains(&format!("app_id = \"{APP}\"")), "{text}");
    // A block that matches nothing, or a name taken, is refused and the file left as it was.
    let out = run_cli(
        &[
            "identities",
            "add",
            "--name",
            "nothing",
            "--keys-file",
            keys_arg,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("matches nothing"));
    let out = run_cli(
        &[
            "identities",
            "add",
            "--name",
            "search-app",
            "--tenant",
            APP,
            "--keys-file",
            keys_arg,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("an identity named \"search-app\" already exists")
    );
    assert_eq!(std::fs::read_to_string(&keys).unwrap(), text);

    // `identities match` under a config that reads that keys file.
    let config_path = dir.join("config.toml");
    std::fs::write(
        &config_path,
        config(&emu, "").replace("[azure]", "keys_file = \"keys.toml\"\n\n[azure]"),
    )
    .unwrap();
    let mut spec = MintSpec::new(PROXY_AUD);
    spec.appid = Some(APP.into());
    spec.oid = Some(USER_1.into());
    let token = emu.mint(&spec);
    let out = run_cli(
        &[
            "identities",
            "match",
            "--config",
            config_path.to_str().unwrap(),
        ],
        Some(&format!("Bearer {token}")),
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(shown.contains("signature was NOT checked"), "{shown}");
    assert!(shown.contains("identity: identity:search-app"), "{shown}");
    assert!(
        shown.contains("identity:search-app: app_id holds"),
        "{shown}"
    );
    assert!(!shown.contains(&token), "{shown}");

    let out = run_cli(
        &[
            "identities",
            "remove",
            "--name",
            "search-app",
            "--keys-file",
            keys_arg,
        ],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&keys).unwrap().trim_end(),
        "# the team's keys and identities"
    );
    let out = run_cli(
        &[
            "identities",
            "match",
            "--config",
            config_path.to_str().unwrap(),
            &token,
        ],
        None,
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("none configured"), "{shown}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn usage_by_user_lists_each_users_counters_from_redis() {
    let redis = Redis::start();
    let emu = emulator().await;
    let text = config(
        &emu,
        &format!(
            "[[identities]]\nname = \"analysts\"\ngroup = \"{GROUP}\"\ntoken_quota = 1000000\nper_user_token_quota = 100000\n"
        ),
    )
    .replace(
        "[azure]",
        &format!("[limits]\nredis_url = \"{}\"\nredis_timeout_ms = 3000\n\n[azure]", redis.url()),
    );
    let (p, path) = spawn_binary(&text, &[]).await;
    for user in [USER_1, USER_2] {
        let mut spec = MintSpec::new(PROXY_AUD);
        spec.oid = Some(user.into());
        spec.groups = vec![GROUP.into()];
        let token = emu.mint(&spec);
        let r = client()
            .post(format!("http://{}/v1/chat/completions", p.addr))
            .bearer_auth(token)
            .json(&chat_body("gpt-4o"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let out = run_cli(
        &[
            "usage",
            "--by",
            "user",
            "--json",
            "--config",
            path.0.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let users: Vec<&str> = report["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["oid"].as_str().unwrap())
        .collect();
    assert_eq!(users, [USER_1, USER_2]);
    assert!(report["users"][0]["tokens_this_period"].as_u64().unwrap() > 0);
    assert_eq!(report["users"][0]["token_quota"], 100000);
    let out = run_cli(
        &["usage", "--json", "--config", path.0.to_str().unwrap()],
        None,
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["identities"][0]["identity"], "analysts");
    assert_eq!(report["identities"][0]["requests_last_minute"], 2);
    drop(p);
}
