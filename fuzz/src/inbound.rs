//! Headers → `Caller` through the real `Authenticator`, against three small configs: keys with
//! client credentials, a loopback sidecar without keys, and Entra tokens.

use entra_proxy::claims;
use entra_proxy::config::{Config, KeyDigest};
use entra_proxy::inbound::{AuthError, Authenticator, Caller};
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
        auth: Authenticator::new(&config).unwrap(),
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

/// Selector (1 byte: config, which headers), then fields `api-key`, `Authorization`,
/// `x-ms-tenant-id`.
pub fn check(data: &[u8]) {
    let (sel, f) = crate::split(data, 1, 3);
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

    let api_key = headers.get("api-key").and_then(|v| v.to_str().ok());
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok());
    // Never hand the authenticator a token for the accepted tenant: it would fetch JWKS.
    if setup.entra
        && let Some(a) = authorization
        && let Some((_, token)) = a.trim().split_once(' ')
        && let Ok(u) = claims::decode_unverified(token.trim())
        && u.claims
            .tid
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(TENANT))
    {
        return;
    }

    let result = world.runtime.block_on(setup.auth.authenticate(&headers));
    match &result {
        Ok(Caller::VirtualKey { name, .. }) => {
            assert!(
                presents(api_key, authorization, VIRTUAL_KEY),
                "accepted an unknown key as {name}"
            );
            assert_eq!(&**name, "team-a");
        }
        Ok(Caller::LegacyKey { name, .. }) => {
            assert!(
                presents(api_key, authorization, LEGACY_KEY),
                "accepted an unknown legacy key as {name}"
            );
            assert_eq!(&**name, "old-resource-key");
        }
        Ok(Caller::Anonymous) => assert!(
            setup.anonymous_allowed,
            "anonymous caller without the sidecar rule"
        ),
        Ok(Caller::App(app)) => {
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
        Ok(Caller::Entra { .. }) => panic!("an Entra token was accepted without its signing keys"),
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
            if matches!(e, AuthError::KeyExpired { .. }) {
                assert!(presents(api_key, authorization, EXPIRED_KEY));
            }
        }
    }
    if presents(api_key, authorization, EXPIRED_KEY) && !setup.anonymous_allowed {
        assert!(result.is_err(), "an expired key was accepted");
    }
}
