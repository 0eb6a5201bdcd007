//! Config text → `Config::parse`: every problem it reports names where it is — a key path under
//! a key the file has (`backends[0].endpoint: …`) or a TOML location (`line 3, column 7: …`) —
//! on one line; a config it accepts renders and builds the request path's tables.

use entra_proxy::config::{Config, ConfigError, render_normalized};
use entra_proxy::inbound::Authenticator;
use entra_proxy::routing::RoutingTable;

/// Top-level sections the config knows, whether or not the file has them.
const SECTIONS: [&str; 8] = [
    "server", "upstream", "azure", "identity", "backends", "models", "keys", "inbound",
];

/// `line L, column C: …`.
fn names_location(p: &str) -> bool {
    let Some(rest) = p.strip_prefix("line ") else {
        return false;
    };
    let Some((line, rest)) = rest.split_once(", column ") else {
        return false;
    };
    let Some((col, _)) = rest.split_once(": ") else {
        return false;
    };
    !line.is_empty()
        && line.bytes().all(|b| b.is_ascii_digit())
        && !col.is_empty()
        && col.bytes().all(|b| b.is_ascii_digit())
}

/// `key…: …` where `key` is a top-level key (of the file or the schema) followed by `.`, `[`
/// or `:`.
fn names_key(p: &str, keys: &[String]) -> bool {
    keys.iter().map(String::as_str).chain(SECTIONS).any(|k| {
        p.strip_prefix(k).is_some_and(|rest| {
            (rest.starts_with('.') || rest.starts_with('[') || rest.starts_with(':'))
                && rest.contains(": ")
        })
    })
}

/// Selector (1 byte: which variables are set), then the config text.
pub fn check(data: &[u8]) {
    let (sel, f) = crate::split(data, 1, 1);
    let sel = sel[0];
    let text = String::from_utf8_lossy(f[0]);
    let env = |name: &str| match name {
        "AZURE_CLIENT_SECRET" if sel & 1 == 1 => Some("s3cret-Value-123".to_string()),
        "RES" => Some(if sel & 2 == 2 { "myres" } else { "a b/../c" }.to_string()),
        _ => None,
    };
    match Config::parse(&text, "fuzz.toml", &env) {
        Ok(config) => {
            let _ = render_normalized(&config);
            let _ = RoutingTable::new(&config);
            let _ = Authenticator::new(&config, &entra_proxy::limits::Limits::in_memory());
            let _ = config.scopes();
        }
        Err(ConfigError::Read { .. }) => panic!("parse never reads a file"),
        Err(e @ ConfigError::Invalid { .. }) => {
            let problems = e.problems();
            assert!(!problems.is_empty(), "refused without a reason");
            let keys: Vec<String> = toml::from_str::<toml::Table>(&text)
                .map(|t| t.keys().cloned().collect())
                .unwrap_or_default();
            for p in problems {
                assert!(!p.contains('\n'), "a problem spans lines: {p:?}");
                assert!(
                    names_location(p) || names_key(p, &keys),
                    "a problem names no key or location: {p:?}"
                );
            }
            let _ = e.to_string();
        }
    }
}
