//! The HTTP transport every `azure_identity` credential uses: `reqwest` with rustls, and, only
//! when `[azure] emulator` is set, a rewrite of scheme, host and port to the local emulator.

use async_trait::async_trait;
use azure_core::http::headers::{HeaderName, HeaderValue, Headers};
use azure_core::http::{AsyncRawResponse, Body, HttpClient, Request, StatusCode};
use futures_util::StreamExt as _;
use std::collections::HashMap;
use std::time::Duration;
use url::Url;

/// Largest token-endpoint answer read; real ones are a few kilobytes.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// An `azure_core` HTTP client over `reqwest`, optionally redirecting every request to one base.
#[derive(Debug, Clone)]
pub struct RewritingTransport {
    client: reqwest::Client,
    target: Option<Url>,
}

impl RewritingTransport {
    pub fn new(
        target: Option<Url>,
        timeout: Duration,
    ) -> Result<RewritingTransport, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(RewritingTransport { client, target })
    }

    /// Where a request for `url` is actually sent.
    pub fn destination(&self, url: &Url) -> Url {
        crate::config::redirect(url, self.target.as_ref())
    }
}

fn core_error(kind: azure_core::error::ErrorKind, message: String) -> azure_core::Error {
    azure_core::Error::with_message(kind, message)
}

#[async_trait]
impl HttpClient for RewritingTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        use azure_core::error::ErrorKind;
        let url = self.destination(request.url());
        let method = reqwest::Method::from_bytes(request.method().as_str().as_bytes())
            .map_err(|e| core_error(ErrorKind::Other, format!("bad method: {e}")))?;
        let mut req = self.client.request(method, url.clone());
        for (name, value) in request.headers().iter() {
            req = req.header(name.as_str(), value.as_str());
        }
        req = match request.body() {
            Body::Bytes(bytes) => req.body(bytes.clone()),
            #[allow(unreachable_patterns, reason = "the body enum differs by feature")]
            _ => {
                return Err(core_error(
                    ErrorKind::Other,
                    "streamed request bodies are not supported by the identity transport".into(),
                ));
            }
        };
        let host = url.host_str().unwrap_or_default().to_string();
        let response = req.send().await.map_err(|e| {
            let kind = if e.is_connect() {
                ErrorKind::Connection
            } else {
                ErrorKind::Io
            };
            let what = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            core_error(kind, format!("{what} talking to {host}{}: {e}", url.path()))
        })?;
        let status = StatusCode::from(response.status().as_u16());
        let mut headers = HashMap::new();
        for (k, v) in response.headers() {
            if let Ok(v) = v.to_str() {
                headers.insert(
                    HeaderName::from(k.as_str().to_owned()),
                    HeaderValue::from(v.to_owned()),
                );
            }
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| core_error(ErrorKind::Io, format!("reading {host}: {e}")))?;
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(core_error(
                    ErrorKind::Io,
                    format!("{host} answered with more than {MAX_RESPONSE_BYTES} bytes"),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(AsyncRawResponse::from_bytes(
            status,
            Headers::from(headers),
            body,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_scheme_host_and_port() {
        let t = RewritingTransport::new(
            Some(Url::parse("http://127.0.0.1:9999").unwrap()),
            Duration::from_secs(1),
        )
        .unwrap();
        let d = t.destination(
            &Url::parse("http://169.254.169.254/metadata/identity/oauth2/token?api-version=2019-08-01&resource=x").unwrap(),
        );
        assert_eq!(
            d.as_str(),
            "http://127.0.0.1:9999/metadata/identity/oauth2/token?api-version=2019-08-01&resource=x"
        );
        let d = t.destination(
            &Url::parse("https://login.microsoftonline.com/t/oauth2/v2.0/token").unwrap(),
        );
        assert_eq!(d.as_str(), "http://127.0.0.1:9999/t/oauth2/v2.0/token");
        let plain = RewritingTransport::new(None, Duration::from_secs(1)).unwrap();
        let u = Url::parse("https://login.microsoftonline.com/t").unwrap();
        assert_eq!(plain.destination(&u), u);
    }
}
