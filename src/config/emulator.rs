//! The `[azure] emulator` redirect: every Entra, managed-identity (IMDS) and JWKS request goes to
//! a local stand-in for Azure instead.

use url::Url;

/// Parses `azure.emulator`: an http(s) URL with a host.
pub(super) fn parse_emulator(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{raw:?} must be an http:// or https:// URL"));
    }
    if url.host_str().is_none() {
        return Err(format!("{raw:?} has no host"));
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
    fn redirect_keeps_path_and_query_on_the_target() {
        let url = Url::parse("https://login.microsoftonline.com/t/oauth2/v2.0/token?x=1").unwrap();
        let target = Url::parse("http://127.0.0.1:9/base/").unwrap();
        assert_eq!(
            redirect(&url, Some(&target)).as_str(),
            "http://127.0.0.1:9/base/t/oauth2/v2.0/token?x=1"
        );
        assert_eq!(redirect(&url, None), url);
    }
}
