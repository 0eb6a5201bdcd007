//! Why an endpoint cannot be reached — its name does not resolve, the connection is refused or
//! never made, TLS fails — found by trying (`doctor`), or read from an error's text, and the fix
//! for each, said for the kind of endpoint it is.

use std::time::Duration;
use url::Url;

/// What kind of endpoint was tried: the fixes differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// The instance metadata service (`169.254.169.254`) of a VM or AKS node.
    Imds,
    /// The managed-identity endpoint App Service and Container Apps name in `IDENTITY_ENDPOINT`.
    IdentityEndpoint,
    /// Entra ID's token endpoint (`login.microsoftonline.com` and the other clouds').
    Entra,
    /// The local emulator `[azure] emulator` sends identity calls to.
    Emulator,
    /// A backend (the Azure resource).
    Backend,
}

/// The root cause of a failed attempt to reach an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Unreachable {
    /// The name does not resolve.
    Dns { host: String, reason: String },
    /// Something answered the connection with a reset: nothing listens there.
    Refused { at: String },
    /// No connection, or no answer on it, within the time allowed.
    Timeout { at: String, secs: f64 },
    /// The TLS handshake failed (a certificate that is not trusted, an inspecting proxy).
    Tls { at: String, reason: String },
    /// Anything else, as the error said it.
    Other { at: String, reason: String },
}

impl Unreachable {
    /// The cause in a few words: `connection refused by 127.0.0.1:9`.
    pub fn cause(&self) -> String {
        match self {
            Unreachable::Dns { host, reason } => format!("DNS: {host} does not resolve ({reason})"),
            Unreachable::Refused { at } => format!("connection refused by {at}"),
            Unreachable::Timeout { at, secs } => {
                format!("timeout: no answer from {at} within {secs}s")
            }
            Unreachable::Tls { at, reason } => format!("TLS with {at} failed: {reason}"),
            Unreachable::Other { at, reason } => format!("{at}: {reason}"),
        }
    }

    /// What to do about it, for `endpoint`.
    pub fn fix(&self, endpoint: Endpoint) -> &'static str {
        use Endpoint as E;
        use Unreachable as U;
        match (self, endpoint) {
            (_, E::Emulator) => {
                "start the emulator at the [azure] emulator address, or correct that address"
            }
            (U::Refused { .. } | U::Timeout { .. }, E::Imds) => {
                "nothing serves managed identity here (169.254.169.254 is only there on an Azure VM, AKS node or VM scale set with an identity assigned); on AKS use kind = \"workload-identity\", elsewhere kind = \"azure-cli\" or \"client-secret\""
            }
            (U::Refused { .. } | U::Timeout { .. }, E::IdentityEndpoint) => {
                "IDENTITY_ENDPOINT is set but nothing answers there: turn on the app's managed identity (App Service / Container Apps > Identity), or unset IDENTITY_ENDPOINT and IDENTITY_HEADER"
            }
            (U::Dns { .. }, E::Entra) => {
                "let this machine resolve the Entra ID host (login.microsoftonline.com in the public cloud): check its DNS servers"
            }
            (U::Refused { .. } | U::Timeout { .. } | U::Other { .. }, E::Entra) => {
                "allow outbound HTTPS to the Entra ID host (service tag AzureActiveDirectory) through the firewall or proxy"
            }
            (U::Tls { .. }, E::Entra | E::Backend) => {
                "a TLS-inspecting proxy or firewall is in the way: exempt the host from inspection, or trust its CA on this machine"
            }
            (U::Dns { .. }, E::Backend) => {
                "check the backend's endpoint name; with a private endpoint, link the privatelink DNS zone to this VNet"
            }
            (U::Refused { .. } | U::Timeout { .. } | U::Other { .. }, E::Backend) => {
                "check the backend's endpoint and port, and that the network (NSG, firewall, private endpoint) lets this machine reach it"
            }
            (U::Dns { .. } | U::Tls { .. } | U::Other { .. }, E::Imds | E::IdentityEndpoint) => {
                "the managed-identity endpoint cannot be used from here: run where a managed identity is assigned, or choose another [identity] kind"
            }
        }
    }
}

/// Tries `url`: resolves its host, connects to it, and for `https://` completes a TLS
/// handshake (a `GET` with `http`), each within `timeout`. `Ok` once the endpoint answers.
pub async fn probe(
    url: &Url,
    timeout: Duration,
    http: &reqwest::Client,
) -> Result<(), Unreachable> {
    let host = url.host_str().unwrap_or_default().to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let at = format!("{host}:{port}");
    let secs = timeout.as_secs_f64();
    let resolved = tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), port)))
        .await
        .map_err(|_| Unreachable::Dns {
            host: host.clone(),
            reason: format!("no answer within {secs}s"),
        })?
        .map_err(|e| Unreachable::Dns {
            host: host.clone(),
            reason: e.to_string(),
        })?;
    let addrs: Vec<std::net::SocketAddr> = resolved.collect();
    let Some(addr) = addrs.first() else {
        return Err(Unreachable::Dns {
            host,
            reason: "no addresses".into(),
        });
    };
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Err(_) => return Err(Unreachable::Timeout { at, secs }),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(Unreachable::Refused { at });
        }
        Ok(Err(e)) => {
            return Err(Unreachable::Other {
                at,
                reason: e.to_string(),
            });
        }
        Ok(Ok(_)) => {}
    }
    if url.scheme() != "https" {
        return Ok(());
    }
    match http.get(url.clone()).timeout(timeout).send().await {
        Ok(_) => Ok(()),
        Err(e) => Err(from_text(&at, secs, &error_chain(&e))),
    }
}

/// An error and its sources, in one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// The root cause an error's text names, when it names one of the causes this module knows.
pub fn cause_in_text(at: &str, secs: f64, text: &str) -> Option<Unreachable> {
    match from_text(at, secs, text) {
        Unreachable::Other { .. } => None,
        known => Some(known),
    }
}

fn from_text(at: &str, secs: f64, text: &str) -> Unreachable {
    let lower = text.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    let at = at.to_string();
    if has(&["connection refused", "os error 111", "os error 10061"]) {
        Unreachable::Refused { at }
    } else if has(&[
        "dns error",
        "failed to lookup address",
        "name or service not known",
        "no such host",
    ]) {
        Unreachable::Dns {
            host: at,
            reason: "the name does not resolve".into(),
        }
    } else if has(&["certificate", "tls", "handshake", "unknownissuer"]) {
        Unreachable::Tls {
            at,
            reason: one_line(text, 160),
        }
    } else if has(&["timed out", "timeout", "deadline"]) {
        Unreachable::Timeout { at, secs }
    } else {
        Unreachable::Other {
            at,
            reason: one_line(text, 200),
        }
    }
}

fn one_line(text: &str, max: usize) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_name_their_root_cause() {
        let at = "127.0.0.1:9";
        let cases = [
            (
                "connection failed talking to 127.0.0.1/metadata: error sending request: client error (Connect): tcp connect error: Connection refused (os error 111)",
                "connection refused by 127.0.0.1:9",
            ),
            (
                "error sending request: dns error: failed to lookup address information: Name or service not known",
                "DNS: 127.0.0.1:9 does not resolve (the name does not resolve)",
            ),
            (
                "invalid peer certificate: UnknownIssuer",
                "TLS with 127.0.0.1:9 failed: invalid peer certificate: UnknownIssuer",
            ),
            (
                "operation timed out",
                "timeout: no answer from 127.0.0.1:9 within 2s",
            ),
        ];
        for (text, cause) in cases {
            assert_eq!(cause_in_text(at, 2.0, text).unwrap().cause(), cause);
        }
        assert_eq!(cause_in_text(at, 2.0, "something else entirely"), None);
    }

    #[test]
    fn fixes_are_said_for_the_kind_of_endpoint() {
        let refused = Unreachable::Refused {
            at: "169.254.169.254:80".into(),
        };
        assert!(refused.fix(Endpoint::Imds).contains("workload-identity"));
        assert!(refused.fix(Endpoint::Emulator).contains("[azure] emulator"));
        assert!(
            refused
                .fix(Endpoint::IdentityEndpoint)
                .contains("IDENTITY_ENDPOINT")
        );
        assert!(
            refused
                .fix(Endpoint::Entra)
                .contains("AzureActiveDirectory")
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_refused_at_once() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = Url::parse(&format!("http://127.0.0.1:{port}/x")).unwrap();
        let started = std::time::Instant::now();
        let r = probe(&url, Duration::from_secs(5), &reqwest::Client::new()).await;
        assert_eq!(
            r,
            Err(Unreachable::Refused {
                at: format!("127.0.0.1:{port}")
            })
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
