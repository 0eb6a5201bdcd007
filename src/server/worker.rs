//! One serving thread: its own event loop accepting from the shared listening socket, its own
//! upstream connection pool and request deadlines, connections spread evenly over the threads
//! (see `balance`), and its drain at shutdown.

use super::admin;
use super::balance;
use super::head;
use super::idle;
use super::sniff::{self, Protocol};
use crate::forward;
use crate::state::AppState;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

/// What one serving thread's requests see: the shared state, and the thread's own upstream
/// client. A connection pool per thread keeps a request and the upstream connection carrying it
/// on the same thread: no hand-off between threads on the hot path.
#[derive(Debug, Clone)]
pub struct Worker {
    pub state: Arc<AppState>,
    pub client: crate::upstream::Client,
}

/// A serving thread's place among the others: its index, the shared balance, and its inbox of
/// connections other threads accepted for it.
pub(super) struct Seat {
    pub(super) index: usize,
    pub(super) balance: Arc<balance::Balance>,
    pub(super) inbox: tokio::sync::mpsc::UnboundedReceiver<balance::Handoff>,
}

/// One worker: accepts connections (keeping each unless another thread serves fewer) and
/// serves its own until `stopped` turns true (or its sender is gone), then drains for the
/// grace period.
pub(super) async fn work(
    socket: std::net::TcpListener,
    worker: Worker,
    mut seat: Seat,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listener = TcpListener::from_std(socket)?;
    // This thread's request timeouts (hyper's header read, the first byte from Azure) and
    // their ticker (crate::deadline), which ends with the thread's runtime.
    let deadlines = crate::deadline::Deadlines::default();
    tokio::spawn(deadlines.clone().run());
    let worker = Worker {
        client: worker.client.with_deadlines(deadlines.clone()),
        ..worker
    };
    let builders = Arc::new(Builders::new(&worker.state, deadlines));
    // Read once: the setting needs a restart to change (see `crate::reload`).
    let max_header_bytes = worker.state.snapshot().config.server.max_header_bytes;
    let app = admin::router(worker.state.clone());
    let connections = TaskTracker::new();
    loop {
        let (stream, peer, counted) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match keep_or_hand_off(&seat, stream, peer) {
                    Some(kept) => kept,
                    None => continue,
                },
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(handed) = seat.inbox.recv() => match tokio::net::TcpStream::from_std(handed.stream) {
                Ok(stream) => (stream, handed.peer, handed.counted),
                Err(e) => {
                    tracing::warn!(error = %e, "could not take over a connection from another serving thread");
                    continue;
                }
            },
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let service = connection_service(&worker, &app, peer, max_header_bytes);
        let (builders, stop) = (builders.clone(), stopped.clone());
        let recent = worker.state.recent.clone();
        connections.spawn(async move {
            if let Err(e) = serve_connection(stream, service, &builders, stop).await
                && head_too_large(&e)
            {
                // hyper answered a head beyond even its buffer with its own empty 431.
                let request_id = forward::request_id(&axum::http::HeaderMap::new());
                crate::refusal::refused_by_http_layer(&recent, &request_id, max_header_bytes);
            }
            drop(counted);
        });
    }
    drop(listener);
    // Connections still on their way here are closed; new ones stay with their acceptor.
    drop(seat.inbox);
    drain(&worker, connections).await;
    Ok(())
}

/// How this thread serves a connection: HTTP/1.1 with the thread's deadlines for the header
/// read, or HTTP/2 with prior knowledge; both buffer a little more than the configured header
/// limit, so that the proxy measures an oversized head and answers it itself ([`head`]).
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// The thread's deadlines, for the wait for a connection's first bytes.
    deadlines: crate::deadline::Deadlines,
    /// `server.header_read_timeout`: the longest wait for a request head (and for the first
    /// bytes that name the protocol).
    header_read_timeout: Duration,
}

impl Builders {
    fn new(state: &AppState, deadlines: crate::deadline::Deadlines) -> Builders {
        let snapshot = state.snapshot();
        let server = &snapshot.config.server;
        let mut h1 = http1::Builder::new();
        h1.max_buf_size(head::buffer_limit(server.max_header_bytes))
            .timer(crate::deadline::HyperTimer(deadlines.clone()))
            .header_read_timeout(server.header_read_timeout);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.max_header_list_size(
            head::buffer_limit(server.max_header_bytes).min(u32::MAX as usize) as u32,
        )
        .timer(TokioTimer::new())
        // A client that has said nothing for the header-read limit is pinged, and one that
        // does not answer within it again has gone: its connection is closed, streams and all.
        .keep_alive_interval(server.header_read_timeout)
        .keep_alive_timeout(server.header_read_timeout);
        Builders {
            http1: h1,
            http2: h2,
            deadlines,
            header_read_timeout: server.header_read_timeout,
        }
    }
}

/// One connection, in the protocol its first bytes name ([`sniff`]), until it ends; once
/// `stop` turns true it finishes what is in flight and takes no more requests. A client that
/// says nothing within `server.header_read_timeout` (or before `stop`) is closed; so is an
/// HTTP/1.1 connection that sends no whole request head within it, after opening or after its
/// last answer, and an HTTP/2 one with no stream open for that long ([`idle`]).
async fn serve_connection<S>(
    stream: tokio::net::TcpStream,
    service: S,
    builders: &Builders,
    mut stop: watch::Receiver<bool>,
) -> hyper::Result<()>
where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let protocol = tokio::select! {
        protocol = sniff::sniff(&stream, builders.deadlines.sleep_until(
            std::time::Instant::now() + builders.header_read_timeout,
        )) => protocol,
        _ = stop.wait_for(|stop| *stop) => None,
    };
    let io = TokioIo::new(stream);
    match protocol {
        None => Ok(()),
        Some(Protocol::Http1) => {
            let conn = builders.http1.serve_connection(io, service).with_upgrades();
            until_stopped(conn, stop, http1::UpgradeableConnection::graceful_shutdown).await
        }
        // Boxed: few clients speak HTTP/2 in the clear, and its state would size every
        // connection's task.
        Some(Protocol::Http2) => {
            let activity = idle::Activity::new();
            let tracked = activity.clone();
            let service = hyper::service::service_fn(move |request| {
                let open = tracked.opened();
                let answer = service.call(request);
                async move { answer.await.map(|r| idle::held_open(r, open)) }
            });
            let conn = builders.http2.serve_connection(io, service);
            Box::pin(until_stopped_or_idle(
                conn,
                stop,
                http2::Connection::graceful_shutdown,
                (activity, builders.header_read_timeout),
            ))
            .await
        }
    }
}

/// `conn` until it ends; when `stop` turns true (or its sender is gone), `drain` tells it to
/// finish what is in flight and close.
async fn until_stopped<C: Future>(
    conn: C,
    mut stop: watch::Receiver<bool>,
    drain: fn(Pin<&mut C>),
) -> C::Output {
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        done = conn.as_mut() => return done,
        _ = stop.wait_for(|stop| *stop) => {}
    }
    drain(conn.as_mut());
    conn.await
}

/// An HTTP/2 connection until it ends, as [`until_stopped`], or until no stream has been open
/// on it for `after`: then it is told to go away, and closed if the client has not answered
/// within `after` again (a client that has gone never does).
async fn until_stopped_or_idle<C: Future<Output = hyper::Result<()>>>(
    conn: C,
    mut stop: watch::Receiver<bool>,
    drain: fn(Pin<&mut C>),
    (activity, after): (Arc<idle::Activity>, Duration),
) -> hyper::Result<()> {
    let mut conn = std::pin::pin!(conn);
    let idled = tokio::select! {
        done = conn.as_mut() => return done,
        _ = stop.wait_for(|stop| *stop) => false,
        () = idle::idle(activity, after) => true,
    };
    drain(conn.as_mut());
    if idled {
        return tokio::time::timeout(after, conn).await.unwrap_or(Ok(()));
    }
    conn.await
}

/// A connection's requests: a head over `server.max_header_bytes` refused at once, proxied
/// ones straight to the handler (the router, with its path matching and boxed services, is
/// only for the proxy's own endpoints).
fn connection_service(
    worker: &Worker,
    app: &axum::Router,
    peer: std::net::SocketAddr,
    max_header_bytes: usize,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>>
             + Send
             + 'static,
> + Clone
+ Send
+ 'static {
    use futures_util::FutureExt as _;
    use futures_util::future::Either;
    use tower::ServiceExt as _;
    let app = app.clone();
    let worker = worker.clone();
    hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let mut request = request.map(axum::body::Body::new);
        let size = head::size(&request);
        if size > max_header_bytes {
            let refused = too_large(&worker.state, &request, size, max_header_bytes);
            Either::Left(Either::Left(std::future::ready(Ok(refused))))
        } else if admin::is_own(&request, peer) {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            Either::Left(Either::Right(app.clone().oneshot(request)))
        } else {
            // Boxed: a connection keeps its in-flight slot for as long as it lives, and the
            // handler's state is kilobytes that only a request in flight needs.
            let handled = Box::pin(forward::handle(
                worker.state.snapshot(),
                worker.client.clone(),
                request,
            ));
            Either::Right(handled.map(Ok::<_, std::convert::Infallible>))
        }
    })
}

/// Whether hyper refused a request head as too large (its 431), not a URI as too long (414).
fn head_too_large(e: &hyper::Error) -> bool {
    e.is_parse_too_large() && !e.to_string().contains("URI too long")
}

/// The answer to a request whose head is over `server.max_header_bytes`: 431 with a JSON body
/// naming the setting, logged, counted and on `/status`.
fn too_large<B>(
    state: &AppState,
    request: &hyper::Request<B>,
    size: usize,
    limit: usize,
) -> axum::response::Response {
    let request_id = forward::request_id(request.headers());
    let refused = crate::refusal::Refused {
        request_id: &request_id,
        method: request.method(),
        uri: request.uri(),
        caller: None,
    };
    let e = crate::error::ProxyError::HeadersTooLarge { size, limit };
    let mut response = crate::refusal::answer(&state.recent, e, refused);
    if let Ok(v) = axum::http::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(forward::REQUEST_ID, v);
    }
    // The client's next request would likely be as large, and the body is left unread: no
    // keep-alive (HTTP/2 has no such header; its stream simply ends).
    if request.version() < axum::http::Version::HTTP_2 {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// At shutdown: lets open connections finish for the grace period as configured now (it
/// follows reloads), then closes WebSockets still open with 1001.
async fn drain(worker: &Worker, connections: TaskTracker) {
    let grace = worker.state.snapshot().config.server.shutdown_grace;
    let deadline = tokio::time::Instant::now() + grace;
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("drain time over; closing remaining connections");
    }
    // Upgraded connections are no longer hyper's.
    worker.client.websockets().drain(deadline).await;
}

/// A connection this thread accepted: kept (with its place in this thread's count) when no
/// other thread serves fewer, else handed to the one that does (`None`).
fn keep_or_hand_off(
    seat: &Seat,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
) -> Option<(
    tokio::net::TcpStream,
    std::net::SocketAddr,
    balance::Counted,
)> {
    let counted = seat.balance.place(seat.index);
    if counted.worker() == seat.index {
        return Some((stream, peer, counted));
    }
    // Out of this thread's event loop, into the other's (where `from_std` registers it).
    let stream = match stream.into_std() {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(error = %e, %peer, "could not hand a connection to another serving thread; closing it");
            return None;
        }
    };
    let handoff = balance::Handoff {
        stream,
        peer,
        counted,
    };
    // That thread has stopped serving: serve it here.
    let back = seat.balance.hand_off(handoff).err()?;
    drop(back.counted);
    let counted = seat.balance.count(seat.index);
    match tokio::net::TcpStream::from_std(back.stream) {
        Ok(stream) => Some((stream, back.peer, counted)),
        Err(e) => {
            tracing::warn!(error = %e, %peer, "could not take a connection back; closing it");
            None
        }
    }
}
