//! Headers, query string and WebSocket subprotocols → `Caller` through the real `Authenticator`,
//! against three small configs: keys with client credentials, a loopback sidecar without keys,
//! and Entra tokens; and what the request path forwards and logs of the query and subprotocols.

use entra_proxy::claims;
use entra_proxy::config::{Config, KeyDigest};
use entra_proxy::inbound::{AuthError, Authenticator, Caller, CallerLabel, CredentialSource, Held};
use http::{HeaderMap, HeaderValue};
use std::sync::OnceLock;

/// The configured proxy key.
pub const VIRTUAL_KEY: &str = "ep-virtual-Key-0123456789";
/// The configured legacy Azure resource key.
pub const LEGACY_KEY: &str = "0123456789abcdef0123456789ABCDEF";
/// A configured key that expired in 2020: never accepted.
pub const EXPIRED_KEY: &str = "ep-expired-Key-9876543210";
/// The tenant the Entra config accepts. Tokens naming it are not sent to the authenticator:
/// checking them would fetch signing keys, and fuzzing touches no network.
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// The tenant client credentials default to.
pub const CC_TENANT: &str = "11111111-2222-3333-4444-555555555555";

/// One config the target runs against, with what it allows.
pub struct Setup {
    pub auth: Authenticator,
    pub anonymous_allowed: bool,
    pub client_credentials: bool,
    pub entra: bool,
}

struct World {
    runtime: tokio::runtime::Runtime,
    setups: Vec<Setup>,
}

fn key(name: &str, key: &str, extra: &str) -> String {
    format!(
        "[[keys]]\nname = '{name}'\nsha256 = '{}'\n{extra}\n",
        KeyDigest::of(key).to_hex()
    )
}

fn setup(text: &str, anonymous_allowed: bool, client_credentials: bool, entra: bool) -> Setup {
    let backend = "[[backends]]\nname = 'a'\nendpoint = 'https://res.openai.azure.com'\n";
    let config = Config::parse(&format!("{backend}{text}"), "fuzz.toml", &|_| None)
        .unwrap_or_else(|e| panic!("fuzz config: {e}"));
    assert_eq!(config.allow_unauthenticated, anonymous_allowed);
    Setup {
        auth: Authenticator::new(&config, &entra_proxy::limits::Limits::in_memory()).unwrap(),
        anonymous_allowed,
        client_credentials,
        entra,
    }
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let keys = key("team-a", VIRTUAL_KEY, "")
            + &key("old-resource-key", LEGACY_KEY, "legacy = true")
            + &key("gone", EXPIRED_KEY, "expires = '2020-01-01T00:00:00Z'");
        let setups = vec![
            setup(
                &format!(
                    "{keys}[inbound]\nmodes = ['key', 'client-credentials']\n\
                     [inbound.client_credentials]\ntenant_id = '{CC_TENANT}'\nallow_tenant_header = true\n"
                ),
                false,
                true,
                false,
            ),
            // A loopback listener without keys: a sidecar that lets anyone in.
            setup("", true, false, false),
            setup(
                &format!(
                    "{keys}[inbound]\nmodes = ['key', 'entra']\n[inbound.entra]\n\
                     tenants = ['{TENANT}']\naudiences = ['api://entra-proxy']\n\
                     jwks_url = 'http://127.0.0.1:9/keys'\n"
                ),
                false,
                false,
                true,
            ),
        ];
        World {
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap(),
            setups,
        }
    })
}

/// Whether `authorization` is exactly `Bearer <key>` (scheme in any case, spaces around).
fn bearer_is(authorization: Option<&str>, key: &str) -> bool {
    let Some(a) = authorization else { return false };
    let a = a.trim();
    a.len() > 6
        && a.get(..6).is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
        && a.get(6..).is_some_and(|rest| {
            rest.starts_with(|c: char| c.is_ascii_whitespace()) && rest.trim() == key
        })
}

/// Whether the request presents `key` in either header the proxy reads keys from.
fn presents(api_key: Option<&str>, authorization: Option<&str>, key: &str) -> bool {
    api_key.is_some_and(|v| v.trim() == key) || bearer_is(authorization, key)
}

/// A value worth checking for in error texts: long and unlike any fixed wording.
fn distinctive(v: &str) -> bool {
    v.len() >= 12
        && v.bytes().any(|b| b.is_ascii_digit())
        && v.bytes().any(|b| b.is_ascii_uppercase())
}

/// Form-decodes `raw` as a query name or value: `+` is a space, `%XX` a byte (any other `%`
/// stays). Written here, apart from the product's decoding.
fn form_decode(raw: &str) -> Vec<u8> {
    let b = raw.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() && hex(b[i + 1]).is_some() && hex(b[i + 2]).is_some() => {
                out.push((hex(b[i + 1]).unwrap() * 16 + hex(b[i + 2]).unwrap()) as u8);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// Whether a raw query part (`name` or `name=value`) is a credential parameter: its name,
/// decoded, is `api-key` or `subscription-key` in any ASCII case.
fn credential_part(part: &str) -> bool {
    let name = form_decode(part.split_once('=').map_or(part, |(n, _)| n));
    [
        &b"api-key"[..],
        b"subscription-key",
        b"ocp-apim-subscription-key",
        b"authorization",
    ]
    .iter()
    .any(|c| name.eq_ignore_ascii_case(c))
}

/// Whether a raw query part is never forwarded: a credential parameter, or the region a key
/// goes with (`Subscription-Region`).
fn consumed_part(part: &str) -> bool {
    let name = form_decode(part.split_once('=').map_or(part, |(n, _)| n));
    credential_part(part) || name.eq_ignore_ascii_case(b"subscription-region")
}

/// Whether a raw query part is an `Authorization` parameter (`Bearer <key or token>`).
fn authorization_part(part: &str) -> bool {
    form_decode(part.split_once('=').map_or(part, |(n, _)| n))
        .eq_ignore_ascii_case(b"authorization")
}

/// The credential value a query carries: the value (everything after the first `=`, decoded)
/// of its first credential parameter, unless that is blank.
fn query_key(query: Option<&str>) -> Option<String> {
    let part = query?.split('&').find(|p| credential_part(p))?;
    let value = part.split_once('=').map_or("", |(_, v)| v);
    let value = String::from_utf8_lossy(&form_decode(value)).into_owned();
    (!value.trim().is_empty()).then_some(value)
}

/// The key a query presents: [`query_key`], or for an `Authorization` parameter what follows
/// its `Bearer ` scheme.
fn query_presented(query: Option<&str>) -> Option<String> {
    let value = query_key(query)?;
    let authorization = query?
        .split('&')
        .find(|p| credential_part(p))
        .is_some_and(authorization_part);
    if !authorization {
        return Some(value);
    }
    let (scheme, rest) = value.trim().split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !rest.trim().is_empty())
        .then(|| rest.trim().to_string())
}

/// Every subprotocol offered, trimmed, in order, from the header values that are visible ASCII.
fn offered(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim_matches([' ', '\t']).to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The key offered as a subprotocol: the rest of the first one with the key prefix, unless empty.
fn subprotocol_key(headers: &HeaderMap) -> Option<String> {
    offered(headers)
        .iter()
        .find_map(|p| p.strip_prefix(KEY_PREFIX).map(str::to_string))
        .filter(|k| !k.is_empty())
}

const KEY_PREFIX: &str = "openai-insecure-api-key.";

/// What the request path derives from the query and the subprotocols, whoever the caller is:
/// what goes upstream and what is logged.
fn check_query_and_subprotocols(query: Option<&str>, headers: &HeaderMap) {
    use entra_proxy::inbound::{query as q, subprotocol};
    // The query forwarded upstream: exactly the parts that are not credential parameters, in
    // order and as encoded (the query as sent when it has none; nothing when none is left).
    let forwarded = q::without_credentials(query);
    let expected = query.map(|query| {
        if !query.split('&').any(consumed_part) {
            return Some(query.to_string());
        }
        let kept: Vec<&str> = query
            .split('&')
            .filter(|p| !p.is_empty() && !consumed_part(p))
            .collect();
        (!kept.is_empty()).then(|| kept.join("&"))
    });
    assert_eq!(
        forwarded.as_deref(),
        expected.flatten().as_deref(),
        "forwarded query of {query:?}"
    );
    assert_eq!(
        q::has_credential(query),
        query.is_some_and(|q| q.split('&').any(consumed_part))
    );
    let masked = query.map(|query| q::Masked(query).to_string());
    if let Some(query) = query {
        let masked = masked.as_deref().unwrap();
        let expected: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((n, _)) if credential_part(p) => format!("{n}=***"),
                _ => p.to_string(),
            })
            .collect();
        assert_eq!(masked, expected.join("&"), "masked query of {query:?}");
        // Directly: a distinctive credential value, found nowhere else in the query, shows
        // neither upstream nor in the log line.
        for part in query.split('&').filter(|p| credential_part(p)) {
            let Some((_, value)) = part.split_once('=') else {
                continue;
            };
            if value.len() >= 8 && !value.contains(['*', '=']) && query.matches(value).count() == 1
            {
                assert!(
                    !masked.contains(value),
                    "the log line shows the key {value:?}: {masked}"
                );
                assert!(
                    !forwarded.as_deref().unwrap_or_default().contains(value),
                    "the key {value:?} is forwarded"
                );
            }
        }
    }
    assert_eq!(
        q::credential(query).map(|c| c.into_owned()),
        query_key(query),
        "key in {query:?}"
    );

    // The subprotocols offered upstream: the client's minus any carrying a key, in order, and
    // a valid header value once joined.
    let upstream = subprotocol::without_key(headers);
    let expected: Vec<String> = offered(headers)
        .into_iter()
        .filter(|p| !p.starts_with(KEY_PREFIX))
        .collect();
    assert_eq!(upstream, expected, "subprotocols offered upstream");
    assert!(upstream.iter().all(|p| !p.starts_with(KEY_PREFIX)));
    if !upstream.is_empty() {
        assert!(HeaderValue::from_str(&upstream.join(", ")).is_ok());
    }
    assert_eq!(
        subprotocol::key(headers).map(str::to_string),
        subprotocol_key(headers)
    );
    if let Some(k) = subprotocol_key(headers) {
        let joined = upstream.join(", ");
        if !offered(headers)
            .iter()
            .any(|p| !p.starts_with(KEY_PREFIX) && p.contains(&k))
        {
            // Per protocol: a key may also appear across the ", " that joins two others.
            assert!(
                !upstream.iter().any(|p| p.contains(&k)),
                "the subprotocol key goes upstream: {joined}"
            );
        }
    }
}

/// Selector (1 byte: config, which headers, whether a query), then fields `api-key`,
/// `Authorization`, `x-ms-tenant-id`, the query string, `Sec-WebSocket-Protocol` values
/// (separated by LF).
pub fn check(data: &[u8]) {
    let (sel, f) = crate::split(data, 1, 5);
    let sel = sel[0];
    let world = world();
    let setup = &world.setups[usize::from(sel % 3)];
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, bit: u8, value: &[u8]| {
        if sel & bit != 0
            && let Ok(v) = HeaderValue::from_bytes(value)
        {
            headers.insert(name, v);
        }
    };
    put("api-key", 0x04, f[0]);
    put("authorization", 0x08, f[1]);
    put("x-ms-tenant-id", 0x10, f[2]);
    if sel & 0x40 != 0 {
        for value in f[4].split(|b| *b == b'\n') {
            if let Ok(v) = HeaderValue::from_bytes(value) {
                headers.append(http::header::SEC_WEBSOCKET_PROTOCOL, v);
            }
        }
    }
    // The query as the request path sees it: parsed as part of a request target.
    let uri = (sel & 0x20 != 0)
        .then(|| {
            let mut target = b"/openai/realtime?".to_vec();
            target.extend_from_slice(f[3]);
            http::Uri::try_from(target).ok()
        })
        .flatten();
    let query = uri.as_ref().and_then(|u| u.query());
    check_query_and_subprotocols(query, &headers);

    let api_key = headers.get("api-key").and_then(|v| v.to_str().ok());
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok());
    // The query and the subprotocols are read only without a credential header.
    let blank_api_key = match headers.get("api-key") {
        None => true,
        Some(_) => api_key.is_some_and(|k| k.trim().is_empty()),
    };
    let no_header = blank_api_key && headers.get("authorization").is_none();
    let from_query = no_header.then(|| query_presented(query)).flatten();
    let from_subprotocol = (no_header && from_query.is_none())
        .then(|| subprotocol_key(&headers))
        .flatten();
    let presents = |key: &str| {
        presents(api_key, authorization, key)
            || from_query.as_deref() == Some(key)
            || from_subprotocol.as_deref() == Some(key)
    };
    // Never hand the authenticator a token for the accepted tenant: it would fetch JWKS.
    let for_tenant = |token: &str| {
        claims::decode_unverified(token.trim()).is_ok_and(|u| {
            u.claims
                .tid
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case(TENANT))
        })
    };
    if setup.entra
        && let Some(a) = authorization
        && let Some((_, token)) = a.trim().split_once(' ')
        && for_tenant(token)
    {
        return;
    }
    if setup.entra && from_query.as_deref().is_some_and(for_tenant) {
        return;
    }

    let result = world
        .runtime
        .block_on(setup.auth.authenticate_request(&headers, query));
    match &result {
        Ok(Caller {
            label: CallerLabel::Key(name),
            ..
        }) => {
            assert!(presents(VIRTUAL_KEY), "accepted an unknown key as {name}");
            assert_eq!(&**name, "team-a");
        }
        Ok(Caller {
            label: CallerLabel::LegacyKey(name),
            ..
        }) => {
            assert!(
                presents(LEGACY_KEY),
                "accepted an unknown legacy key as {name}"
            );
            assert_eq!(&**name, "old-resource-key");
        }
        Ok(Caller {
            held: Held::Nothing,
            ..
        }) => assert!(
            setup.anonymous_allowed,
            "anonymous caller without the sidecar rule"
        ),
        Ok(Caller {
            held: Held::App(app),
            ..
        }) => {
            assert!(
                setup.client_credentials,
                "client credentials accepted while disabled"
            );
            let basic = authorization.expect("an app caller sent Authorization");
            let value = basic
                .trim()
                .split_once(' ')
                .map(|(_, v)| v)
                .unwrap_or_default();
            let (id, _) =
                entra_proxy::inbound::parse_basic(value).expect("an app caller sent valid Basic");
            assert_eq!(app.client_id, id);
            let header_tenant = headers
                .get("x-ms-tenant-id")
                .and_then(|v| v.to_str().ok())
                .map(|t| t.trim().to_ascii_lowercase());
            assert!(
                app.tenant == CC_TENANT || Some(&app.tenant) == header_tenant.as_ref(),
                "tenant {} came from nowhere",
                app.tenant
            );
        }
        Ok(Caller {
            held: Held::Entra { .. },
            ..
        }) => panic!("an Entra token was accepted without its signing keys"),
        Ok(other) => panic!("a caller of no known kind: {other:?}"),
        Err(e) => {
            let text = e.to_string();
            for secret in [VIRTUAL_KEY, LEGACY_KEY, EXPIRED_KEY] {
                assert!(
                    !text.contains(secret),
                    "error text holds a configured key: {text}"
                );
            }
            if let Some(k) = api_key.map(str::trim).filter(|k| distinctive(k)) {
                assert!(!text.contains(k), "error text echoes the api-key: {text}");
            }
            if let Some(a) = authorization
                && let Some((_, v)) = a.trim().split_once(' ')
                && distinctive(v.trim())
            {
                assert!(
                    !text.contains(v.trim()),
                    "error text echoes the credential: {text}"
                );
            }
            for k in [&from_query, &from_subprotocol].into_iter().flatten() {
                if distinctive(k) {
                    assert!(
                        !text.contains(k.as_str()),
                        "error text echoes the key: {text}"
                    );
                }
            }
            if let AuthError::UnknownKey(source) = e {
                let expected = match (blank_api_key, authorization.is_some()) {
                    (false, _) => CredentialSource::ApiKeyHeader,
                    (true, true) => CredentialSource::BearerHeader,
                    _ if from_query.is_some() => CredentialSource::QueryParameter,
                    _ => CredentialSource::Subprotocol,
                };
                assert_eq!(*source, expected, "the refused key came from elsewhere");
            }
            if matches!(e, AuthError::KeyExpired { .. }) {
                assert!(presents(EXPIRED_KEY));
            }
        }
    }
    if presents(EXPIRED_KEY) && !setup.anonymous_allowed {
        assert!(result.is_err(), "an expired key was accepted");
    }
}
