//! The `[azure] emulator` redirect: every Entra, managed-identity (IMDS) and JWKS request goes to
//! a local stand-in for Azure instead. The proxy trusts the signing keys it finds there, so the
//! target must be this machine's loopback.

use url::Url;

/// Parses `azure.emulator`: an http(s) URL whose host is loopback (`127.0.0.0/8`, `[::1]`,
/// `localhost`).
pub(super) fn parse_emulator(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{raw:?} must be an http:// or https:// URL"));
    }
    if url.host_str().is_none() {
        return Err(format!("{raw:?} has no host"));
    }
    if !is_loopback(&url) {
        return Err(format!(
            "{raw:?} is not a loopback address; the emulator receives every Entra, IMDS and JWKS request, so any other host would be trusted to sign tokens; use http://127.0.0.1:PORT, http://[::1]:PORT or http://localhost:PORT"
        ));
    }
    Ok(url)
}

/// Whether `url`'s host is this machine: `localhost`, `127.0.0.0/8` or `::1`.
pub(super) fn is_loopback(url: &Url) -> bool {
    url.host().is_some_and(|h| match h {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    })
}

/// Keeps a URL's path and query but sends it to `target`'s scheme, host, port (and base path).
pub fn redirect(url: &Url, target: Option<&Url>) -> Url {
    let Some(target) = target else {
        return url.clone();
    };
    let mut out = target.clone();
    let base = target.path().trim_end_matches('/');
    out.set_path(&format!("{base}{}", url.path()));
    out.set_query(url.query());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulator_on_loopback_is_accepted() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://[::1]:9",
            "http://localhost:1",
        ] {
            assert!(parse_emulator(ok).is_ok(), "{ok}");
        }
        assert!(parse_emulator("http://127.8.9.10:1").is_ok());
    }

    #[test]
    fn emulator_elsewhere_is_refused_saying_why() {
        for bad in ["http://10.0.0.1:80", "https://example.com"] {
            let e = parse_emulator(bad).unwrap_err();
            assert!(e.contains("is not a loopback address"), "{e}");
            assert!(e.contains("trusted to sign tokens"), "{e}");
        }
        assert!(parse_emulator("ftp://127.0.0.1").is_err());
        assert!(parse_emulator("not a url").is_err());
    }

    #[test]
    fn redirect_keeps_path_and_query_on_the_target() {
        let url = Url::parse("https://login.microsoftonline.com/t/oauth2/v2.0/token?x=1").unwrap();
        let target = Url::parse("http://127.0.0.1:9/base/").unwrap();
        assert_eq!(
            redirect(&url, Some(&target)).as_str(),
            "http://127.0.0.1:9/base/t/oauth2/v2.0/token?x=1"
        );
        assert_eq!(redirect(&url, None), url);
    }

    #[test]
    fn config_with_a_remote_emulator_is_refused_naming_the_key() {
        let backend = "[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'";
        let e = crate::config::testing::err(&format!(
            "[azure]\nemulator = 'https://example.com'\n{backend}"
        ));
        assert!(
            e.starts_with(
                "test.toml: azure.emulator: \"https://example.com\" is not a loopback address"
            ),
            "{e}"
        );
        let c = crate::config::testing::parse(&format!(
            "[azure]\nemulator = 'http://localhost:1'\n{backend}"
        ))
        .unwrap();
        assert_eq!(c.emulator.unwrap().as_str(), "http://localhost:1/");
    }
}
