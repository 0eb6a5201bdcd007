//! The WebSocket relay: a client's upgrade (realtime, or any Azure AI WebSocket) goes to Azure
//! on its own HTTP/1.1 connection with the proxy's bearer token instead of the client's
//! credential, and frames are relayed both ways as they come — text, binary, ping/pong and
//! close codes with their reasons — until either side closes, the socket idles past
//! `server.websocket_idle_timeout_secs`, or the proxy shuts down (1001).
//!
//! Pings are answered where they arrive (by the protocol layer) and passed on, so each side
//! still learns the other is alive; the pong to a passed-on ping is not relayed again, so a
//! ping gets exactly one pong.
//!
//! Azure refusing the handshake reaches the client as the HTTP answer it is, with the proxy's
//! diagnosis. Messages are relayed whole as tungstenite reassembles them (fragments are joined);
//! nothing else is held.
//!
//! The key's budgets apply at the handshake. A realtime session's usage is read from each
//! `response.done` Azure sends as the frame passes ([`SocketMeter`]), counted in
//! the token metrics and charged to the key, so it counts against the key's next handshakes and
//! requests; frames are never held or changed for it.
//!
//! Traced as an HTTP request is: the handshake to Azure is the one attempt (with its token
//! lookup) under the request's server span, and carries that attempt's `traceparent`; the
//! server span lasts as long as the socket and gets the usage of its responses when it closes.

use super::exchange::{self, Asking, Exchange, Surface};
use super::headers::{downstream_headers, upstream_headers};
use super::http::{Attempted, root_cause};
use crate::error::ProxyError;
use crate::inbound::{Caller, query, subprotocol};
use crate::logging::access;
use crate::metering::realtime::SocketMeter;
use crate::routing::Route;
use crate::state::Snapshot;
use crate::telemetry::NO_MODEL;
use crate::telemetry::trace::RequestSpan;
use crate::upstream::{self, SocketSlot};
use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{
    self, HeaderMap, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS,
    SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION,
};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use futures_util::{SinkExt as _, StreamExt as _};
use hyper_util::rt::TokioIo;
use std::time::{Duration, Instant};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

/// RFC 6455 §1.3: appended to the client's key before hashing.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// How long each side gets to finish a close handshake once the relay ends.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
// At shutdown the server waits `CLOSE_GRACE` for relays to end: it must outlast `CLOSE_WAIT`.
const _: () = assert!(CLOSE_WAIT.as_millis() < upstream::CLOSE_GRACE.as_millis());

/// Why a relay ended.
#[derive(Debug, Clone, Copy)]
enum End {
    ClientClosed,
    AzureClosed,
    ClientGone,
    AzureGone,
    Idle,
    Shutdown,
}

/// What a relay task needs after the handshake.
struct Relay {
    slot: SocketSlot,
    meter: SocketMeter,
    idle: Duration,
    closing: tokio::sync::watch::Receiver<bool>,
    request_id: String,
    /// The request's server span: lasts as long as the socket, and gets its usage.
    trace: RequestSpan,
}

/// Whether the request asks to become a WebSocket (`GET` with `Upgrade: websocket`).
pub(super) fn is_upgrade(request: &Request) -> bool {
    request.method() == Method::GET
        && request
            .headers()
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// A client's WebSocket: its handshake checked, admitted by the same sequence as HTTP (route,
/// policy, budgets), then one attempt — the handshake to Azure with the proxy's bearer — and,
/// on Azure's 101, a 101 to the client and the relay.
pub(super) async fn serve(
    state: &Snapshot,
    client: &upstream::Client,
    request: Request,
    caller: &Caller,
    request_id: &str,
    trace: &RequestSpan,
) -> Result<Response, ProxyError> {
    let started = Instant::now();
    let client_key = client_handshake(request.headers())?;
    let (parts, body) = request.into_parts();
    let asking = Asking {
        state,
        caller,
        parts: &parts,
        trace,
    };
    let mut admitted = exchange::admit(asking, Surface::WebSocket).await?;
    let route = admitted.routes.swap_remove(0);
    let slot = client
        .websockets()
        .try_open(state.config.server.max_websockets)
        .ok_or(ProxyError::TooManyWebSockets {
            max: state.config.server.max_websockets,
        })?;
    let meter = SocketMeter::new(
        std::mem::take(&mut admitted.metering.admissions),
        super::answer::token_counters(state, caller, &route),
        super::answer::pricing(state, caller, &route),
    );
    let mut exchange = asking.exchange(client, request_id, started, admitted.metering);
    let request = Request::from_parts(parts.clone(), body);
    let opening = Opening {
        route: &route,
        client_key,
        slot,
        meter,
    };
    exchange.open(request, opening).await
}

/// What a WebSocket admitted by the sequence brings to its one attempt.
struct Opening<'r> {
    route: &'r Route,
    client_key: String,
    slot: SocketSlot,
    meter: SocketMeter,
}

impl Exchange<'_> {
    /// The handshake to Azure with the bearer, traced as an HTTP attempt is; on Azure's 101, the
    /// client's 101 and the relay; otherwise Azure's answer (with its diagnosis).
    async fn open(
        &mut self,
        mut request: Request,
        opening: Opening<'_>,
    ) -> Result<Response, ProxyError> {
        let route = opening.route;
        let backend = self.backend(route);
        let token = self.token(backend).await?;
        let mut span = self.trace.attempt(
            1,
            backend.name(),
            backend.config.host(),
            route.deployment.as_deref(),
        );
        let offered = subprotocol::without_key(request.headers());
        let our_key = new_key()?;
        let handshake =
            upstream_handshake(&request, &route.uri, &offered, &our_key, self.request_id).map(
                |mut r| {
                    let presenter = &backend.config.presenter;
                    presenter.apply(route.uri.path(), token.header(), r.headers_mut());
                    span.propagate(r.headers_mut());
                    r
                },
            )?;
        let answer = self
            .handshake(route, handshake)
            .await
            .inspect_err(|e| span.failed(e.code()))?;
        span.status(answer.status().as_u16());
        drop(span);
        if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
            // Azure refused: its answer (with the diagnosis on 401/403/404) is the client's.
            let attempted = Attempted {
                response: answer.map(http_body_util::Either::Left),
                route,
                token,
                permit: None,
            };
            return Ok(self.finish(attempted).await);
        }
        let headers = accepted_headers(
            &answer,
            &opening.client_key,
            &our_key,
            &offered,
            backend.name(),
        )?;
        self.log_opened(route);
        let from_client = hyper::upgrade::on(&mut request);
        let from_azure = hyper::upgrade::on(answer);
        let relay = Relay {
            slot: opening.slot,
            meter: opening.meter,
            idle: self.state.config.server.websocket_idle_timeout,
            closing: self.client.websockets().closing(),
            request_id: self.request_id.to_string(),
            trace: self.trace.clone(),
        };
        tokio::spawn(async move {
            match tokio::try_join!(from_client, from_azure) {
                Ok((c, a)) => relay.run(c, a).await,
                Err(e) => {
                    tracing::warn!(request_id = %relay.request_id, error = %e, "websocket upgrade failed")
                }
            }
        });
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *response.headers_mut() = headers;
        Ok(response)
    }

    /// Sends the handshake on a connection of its own; Azure's answer head, or why none came.
    async fn handshake(
        &self,
        route: &Route,
        handshake: http::Request<http_body_util::Empty<bytes::Bytes>>,
    ) -> Result<http::Response<upstream::PooledBody>, ProxyError> {
        let upstream_cfg = &self.state.config.upstream;
        let backend = self.backend(route).name();
        let wait = upstream_cfg.connect_timeout + upstream_cfg.first_byte_timeout;
        match tokio::time::timeout(wait, self.client.upgrade(route.uri.clone(), handshake)).await {
            Err(_) => Err(ProxyError::UpstreamTimeout {
                backend: backend.to_string(),
                limit: "the WebSocket handshake",
                limit_secs: wait.as_secs_f64(),
            }),
            Ok(Err(e)) => Err(ProxyError::UpstreamUnreachable {
                backend: backend.to_string(),
                reason: format!("WebSocket handshake failed ({})", root_cause(&*e)),
            }),
            Ok(Ok(answer)) => Ok(answer),
        }
    }

    /// The access line of an opened socket.
    fn log_opened(&self, route: &Route) {
        if let Some(mut line) = access::Fields::start() {
            line.text("request_id", self.request_id)
                .text("path", self.path);
            if let Some(query) = self.query {
                line.display("query", query::Masked(query));
            }
            line.display("caller", self.caller.label());
            super::answer::principal_fields(&mut line, self.caller);
            line.text("backend", self.backend(route).name())
                .quoted("model", route.model.as_deref().unwrap_or(NO_MODEL))
                .quoted(
                    "deployment",
                    route.deployment.as_deref().unwrap_or(NO_MODEL),
                )
                .number("took_ms", self.started.elapsed().as_millis() as u64)
                .write("websocket opened");
        }
    }
}

/// The client's 101 headers from Azure's: Azure's own accept checked against our key, the
/// client's accept computed from its key, the subprotocol Azure chose if the client offered it.
fn accepted_headers(
    answer: &http::Response<upstream::PooledBody>,
    client_key: &str,
    our_key: &str,
    offered: &[&str],
    backend: &str,
) -> Result<HeaderMap, ProxyError> {
    if answer
        .headers()
        .get(SEC_WEBSOCKET_ACCEPT)
        .map(HeaderValue::as_bytes)
        != Some(accept_for(our_key.as_bytes()).as_bytes())
    {
        return Err(ProxyError::UpstreamUnreachable {
            backend: backend.to_string(),
            reason: "Azure's WebSocket handshake answer has a wrong Sec-WebSocket-Accept".into(),
        });
    }
    let chosen = answer
        .headers()
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|p| offered.contains(p))
        .and_then(|p| HeaderValue::from_str(p).ok());
    let mut headers = downstream_headers(answer.headers().clone());
    for name in [
        SEC_WEBSOCKET_ACCEPT,
        SEC_WEBSOCKET_PROTOCOL,
        SEC_WEBSOCKET_EXTENSIONS,
        header::CONTENT_LENGTH,
    ] {
        headers.remove(name);
    }
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    let accept = HeaderValue::from_str(&accept_for(client_key.as_bytes())).map_err(|_| {
        ProxyError::WebSocketHandshake {
            reason: "Sec-WebSocket-Key is not a valid key",
        }
    })?;
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(p) = chosen {
        headers.insert(SEC_WEBSOCKET_PROTOCOL, p);
    }
    Ok(headers)
}

/// The client's `Sec-WebSocket-Key`, after checking the handshake is one this relay speaks.
fn client_handshake(headers: &HeaderMap) -> Result<String, ProxyError> {
    let version = headers
        .get(SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes);
    if version != Some(b"13") {
        return Err(ProxyError::WebSocketHandshake {
            reason: "Sec-WebSocket-Version must be 13",
        });
    }
    headers
        .get(SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .ok_or(ProxyError::WebSocketHandshake {
            reason: "no Sec-WebSocket-Key header",
        })
}

/// The handshake for Azure: the client's headers minus credentials, hop-by-hop and WebSocket
/// ones; the subprotocols it offered minus any carrying a key; a key of our own.
fn upstream_handshake(
    request: &Request,
    target: &http::Uri,
    offered: &[&str],
    key: &str,
    request_id: &str,
) -> Result<http::Request<http_body_util::Empty<bytes::Bytes>>, ProxyError> {
    let bad_target = |_| ProxyError::NoRoute {
        path: request.uri().path().to_string(),
        hint: "the upstream WebSocket URL is not valid".into(),
    };
    let mut headers = upstream_headers(request.headers(), request_id);
    for name in [
        SEC_WEBSOCKET_KEY,
        SEC_WEBSOCKET_PROTOCOL,
        SEC_WEBSOCKET_EXTENSIONS,
        SEC_WEBSOCKET_VERSION,
    ] {
        headers.remove(name);
    }
    let host = target.authority().map(|a| a.as_str()).unwrap_or_default();
    headers.insert(
        header::HOST,
        HeaderValue::from_str(host).map_err(bad_target)?,
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    headers.insert(
        SEC_WEBSOCKET_KEY,
        HeaderValue::from_str(key).map_err(bad_target)?,
    );
    if !offered.is_empty() {
        headers.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(&offered.join(", ")).map_err(bad_target)?,
        );
    }
    let origin_form = target
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .parse::<http::Uri>()
        .map_err(|_| ProxyError::NoRoute {
            path: request.uri().path().to_string(),
            hint: "the upstream WebSocket URL is not valid".into(),
        })?;
    let mut out = http::Request::new(http_body_util::Empty::new());
    *out.uri_mut() = origin_form;
    *out.headers_mut() = headers;
    Ok(out)
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64.
fn new_key() -> Result<String, ProxyError> {
    use base64::Engine as _;
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| ProxyError::UpstreamUnreachable {
        backend: "-".into(),
        reason: "the system random number generator failed".into(),
    })?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// `Sec-WebSocket-Accept` for a key (RFC 6455 §4.2.2).
fn accept_for(key: &[u8]) -> String {
    use base64::Engine as _;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(ACCEPT_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ctx.finish().as_ref())
}

fn close(code: CloseCode, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// A socket on either side of the relay.
type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Frames relayed each way.
#[derive(Debug, Clone, Copy, Default)]
struct Frames {
    up: u64,
    down: u64,
}

impl Relay {
    /// Relays frames until one side closes or goes, the socket idles, or the proxy shuts down;
    /// then lets both close handshakes finish (briefly).
    async fn run(mut self, client: hyper::upgrade::Upgraded, azure: hyper::upgrade::Upgraded) {
        let started = Instant::now();
        let mut client =
            WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, None).await;
        let mut azure =
            WebSocketStream::from_raw_socket(TokioIo::new(azure), Role::Client, None).await;
        let mut frames = Frames::default();
        let end = self.relay(&mut client, &mut azure, &mut frames).await;
        close_both(end, &mut client, &mut azure).await;
        self.log_closed(end, frames, started);
        drop(self.slot);
        // The server span ends here, with the socket.
        drop(self.trace);
    }

    /// Passes frames both ways, reading Azure's for usage, until the relay ends.
    async fn relay(&mut self, client: &mut Socket, azure: &mut Socket, frames: &mut Frames) -> End {
        loop {
            tokio::select! {
                m = client.next() => match m {
                    // This side's protocol layer already answered the ping the pong is for.
                    Some(Ok(Message::Pong(_))) => {}
                    Some(Ok(m)) => {
                        frames.up += 1;
                        let closing = m.is_close();
                        if azure.send(m).await.is_err() {
                            return End::AzureGone;
                        }
                        if closing {
                            return End::ClientClosed;
                        }
                    }
                    Some(Err(_)) | None => return End::ClientGone,
                },
                m = azure.next() => match m {
                    Some(Ok(Message::Pong(_))) => {}
                    Some(Ok(m)) => {
                        frames.down += 1;
                        if let Message::Text(text) = &m {
                            self.meter.observe(text.as_str());
                        }
                        let closing = m.is_close();
                        if client.send(m).await.is_err() {
                            return End::ClientGone;
                        }
                        if closing {
                            return End::AzureClosed;
                        }
                    }
                    Some(Err(_)) | None => return End::AzureGone,
                },
                () = tokio::time::sleep(self.idle) => return End::Idle,
                () = shutting_down(&mut self.closing) => return End::Shutdown,
            }
        }
    }

    /// The socket's usage on its span, and its access line.
    fn log_closed(&self, end: End, frames: Frames, started: Instant) {
        let (used, responses) = self.meter.used();
        if responses > 0 {
            self.trace.usage(used.prompt, used.completion, false);
        }
        if let Some(mut line) = access::Fields::start() {
            line.text("request_id", &self.request_id)
                .display("end", format_args!("{end:?}"))
                .number("frames_from_client", frames.up)
                .number("frames_from_azure", frames.down)
                .decimal("open_secs", started.elapsed().as_secs_f64())
                .number("responses", responses)
                .number("prompt_tokens", used.prompt)
                .number("completion_tokens", used.completion)
                .number("total_tokens", used.total);
            if let Some((micros, currency)) = self.meter.spent() {
                line.display("spend", crate::limits::Money(micros))
                    .text("currency", currency);
            }
            line.write("websocket closed");
        }
    }
}

/// Closes both sides as the end calls for — the side that closed already did — and lets both
/// close handshakes finish (briefly).
async fn close_both(end: End, client: &mut Socket, azure: &mut Socket) {
    let (to_client, to_azure) = match end {
        End::ClientClosed | End::AzureClosed => (None, None),
        End::ClientGone => (None, Some(close(CloseCode::Away, "the client went away"))),
        End::AzureGone => (
            Some(close(CloseCode::Error, "Azure closed the connection")),
            None,
        ),
        End::Idle => (
            Some(close(
                CloseCode::Away,
                "idle timeout (server.websocket_idle_timeout_secs)",
            )),
            Some(close(CloseCode::Normal, "client idle")),
        ),
        End::Shutdown => (
            Some(close(CloseCode::Away, "the proxy is shutting down")),
            Some(close(CloseCode::Away, "the proxy is shutting down")),
        ),
    };
    if let Some(m) = to_client {
        let _ = client.send(m).await;
    }
    if let Some(m) = to_azure {
        let _ = azure.send(m).await;
    }
    // Let both sides answer the close (or the peer's reply reach them), then drop.
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        tokio::join!(finish(client), finish(azure))
    })
    .await;
}

/// Resolves when the proxy tells its WebSockets to close.
async fn shutting_down(closing: &mut tokio::sync::watch::Receiver<bool>) {
    if closing.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Reads a closing socket to its end, so its close handshake completes.
async fn finish<S>(socket: &mut WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = socket.flush().await;
    while let Some(Ok(_)) = socket.next().await {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_follows_rfc_6455() {
        // The example in RFC 6455 §1.3.
        assert_eq!(
            accept_for(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn only_websocket_gets_are_upgrades() {
        let req = |m: Method, up: Option<&'static str>| {
            let mut r = Request::new(Body::empty());
            *r.method_mut() = m;
            if let Some(v) = up {
                r.headers_mut()
                    .insert(header::UPGRADE, HeaderValue::from_static(v));
            }
            r
        };
        assert!(is_upgrade(&req(Method::GET, Some("websocket"))));
        assert!(is_upgrade(&req(Method::GET, Some("WebSocket"))));
        assert!(!is_upgrade(&req(Method::GET, None)));
        assert!(!is_upgrade(&req(Method::POST, Some("websocket"))));
        assert!(!is_upgrade(&req(Method::GET, Some("h2c"))));
    }

    #[test]
    fn handshakes_need_version_13_and_a_key() {
        let mut h = HeaderMap::new();
        assert!(client_handshake(&h).is_err());
        h.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        assert!(matches!(
            client_handshake(&h),
            Err(ProxyError::WebSocketHandshake {
                reason: "no Sec-WebSocket-Key header"
            })
        ));
        h.insert(SEC_WEBSOCKET_KEY, HeaderValue::from_static("abc=="));
        assert_eq!(client_handshake(&h).unwrap(), "abc==");
    }
}
