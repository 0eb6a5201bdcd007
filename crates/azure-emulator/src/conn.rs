//! The emulator's accept loop. Each connection knows how many requests it has carried, and a
//! handler can cut it — closing the socket with a TCP reset and no answer — which is how Azure's
//! front ends fail when a connection is reset after a request arrived, or when a kept-alive
//! connection was closed just as a request was sent on it. `axum::serve` allows neither.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tower::ServiceExt as _;

/// How long connections get to finish when the emulator stops.
const DRAIN: Duration = Duration::from_secs(3);

/// What a request knows of its connection (a request extension).
#[derive(Clone)]
pub(crate) struct Connection {
    /// This request's number on its connection, from 0.
    nth: u64,
    cut: Arc<Notify>,
}

impl Connection {
    /// Whether the connection carried a request before this one (it was kept alive).
    pub(crate) fn reused(&self) -> bool {
        self.nth > 0
    }

    /// Resets the connection: the socket closes with a TCP reset, and nothing more is sent or
    /// read on it (the handler that asked is dropped with it).
    pub(crate) fn cut(&self) {
        self.cut.notify_one();
    }
}

/// Serves `router` on `listener` until `stop` resolves; then lets open connections finish for a
/// while.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = one(stream, router.clone(), &graceful);
                    tokio::spawn(conn);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "emulator accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            () = &mut stop => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}

/// One connection, served until it ends or a handler cuts it.
fn one(
    stream: TcpStream,
    router: Router,
    graceful: &GracefulShutdown,
) -> impl Future<Output = ()> + Send + 'static {
    let stream = Arc::new(stream);
    let cut = Arc::new(Notify::new());
    let served = Arc::new(AtomicU64::new(0));
    let service = {
        let cut = cut.clone();
        hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
            let nth = served.fetch_add(1, Ordering::Relaxed);
            request.extensions_mut().insert(Connection {
                nth,
                cut: cut.clone(),
            });
            router.clone().oneshot(request.map(axum::body::Body::new))
        })
    };
    let io = TokioIo::new(Shared(stream.clone()));
    let conn = auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(io, service)
        .into_owned();
    let conn = graceful.watch(conn);
    async move {
        tokio::select! {
            _ = conn => {}
            () = cut.notified() => {
                // The connection (and the handler waiting in it) is dropped here; with a zero
                // linger the last close of the socket sends a reset.
                let _ = stream.set_zero_linger();
            }
        }
    }
}

/// The connection's socket, shared with the task that may cut it.
struct Shared(Arc<TcpStream>);

impl AsyncRead for Shared {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Shared {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The socket closes (FIN) when the connection drops it.
        Poll::Ready(Ok(()))
    }
}
