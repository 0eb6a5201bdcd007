//! Serving: the listening socket shared by `server.workers` serving threads (`worker`), the
//! proxy's own endpoints (`admin`), the request-head limit (`head`), which protocol a
//! connection speaks (`sniff`), an HTTP/2 connection's idle close (`idle`), and graceful
//! shutdown.

use crate::state::AppState;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

mod admin;
mod balance;
mod head;
mod idle;
mod sniff;
mod worker;

pub use admin::router;

/// Connections the kernel queues for the proxy before it accepts them (capped by
/// `net.core.somaxconn`). The standard library's 128 drops SYNs under a burst of new
/// connections — thousands of streams opening at once — well before the proxy is busy.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds the proxy's listener: `SO_REUSEADDR` (a restart rebinds at once) and a backlog of
/// 4096 (`LISTEN_BACKLOG`).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
pub use worker::Worker;
use worker::{Seat, work};

/// Serves until `shutdown` resolves (or this future is dropped), then stops accepting and
/// drains in-flight requests and streams for up to the configured grace period. Starts the
/// background token keeper for every backend scope on the caller's runtime.
///
/// Requests are served by `server.workers` threads, each running its own single-threaded event
/// loop that accepts from the shared listening socket and owns an upstream connection pool;
/// connections are spread evenly over the threads (see `balance`).
/// Tokens, keys, routes and backend health are shared by all.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let keeper = state.tokens.spawn_keeper(state.watch_scopes());
    // Settlements queued for Redis go out from this runtime, in batches.
    let _settling = state.limits.start_settling().map(AbortOnDrop);
    // Settings read once here need a restart to change (see `crate::reload`).
    let server_config = state.snapshot().config.clone();
    let _stop_keeper = AbortOnDrop(keeper);
    let listener = listener.into_std()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // Every worker counts its WebSockets here, so `server.max_websockets` is per proxy.
    let websockets = crate::upstream::WebSockets::new();
    let mut finished = tokio::task::JoinSet::new();
    let (balance, inboxes) = balance::Balance::new(server_config.server.workers.get());
    for (index, inbox) in inboxes.into_iter().enumerate() {
        let socket = listener.try_clone()?;
        let client = crate::upstream::Client::new(server_config.upstream.connect_timeout)
            .map_err(std::io::Error::other)?
            .with_websockets(websockets.clone());
        let worker = Worker {
            state: state.clone(),
            client,
        };
        let (done, exited) = tokio::sync::oneshot::channel();
        let stopped = stopped.clone();
        let seat = Seat {
            index,
            balance: balance.clone(),
            inbox,
        };
        std::thread::Builder::new()
            .name(format!("entra-proxy-{index}"))
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|rt| rt.block_on(work(socket, worker, seat, stopped)));
                let _ = done.send(result);
            })?;
        finished.spawn(async move {
            exited.await.unwrap_or_else(|_| {
                Err(std::io::Error::other(
                    "a serving thread stopped unexpectedly",
                ))
            })
        });
    }
    drop(listener);
    // Serve until told to stop, unless a worker fails first (its error is the answer).
    let early = tokio::select! {
        () = shutdown => None,
        first = finished.join_next() => first,
    };
    tracing::info!(
        grace_secs = state.snapshot().config.server.shutdown_grace.as_secs(),
        "shutting down: no new connections, draining in-flight requests"
    );
    let _ = stop.send(true);
    let mut result = Ok(());
    if let Some(outcome) = early {
        record(&mut result, outcome);
    }
    while let Some(outcome) = finished.join_next().await {
        record(&mut result, outcome);
    }
    // The last answers' settlements reach Redis, and their spans the collector, before the
    // process ends.
    state.limits.flush().await;
    state.tracing.flush(TRACE_FLUSH).await;
    result
}

/// Longest wait at shutdown for the last spans to reach the collector.
const TRACE_FLUSH: Duration = Duration::from_secs(5);

/// Keeps the first error among the workers' outcomes.
fn record(
    result: &mut std::io::Result<()>,
    outcome: Result<std::io::Result<()>, tokio::task::JoinError>,
) {
    let outcome = outcome.unwrap_or_else(|e| Err(std::io::Error::other(e)));
    if result.is_ok() {
        *result = outcome;
    }
}

/// Aborts a background task when dropped (e.g. when `serve` is cancelled).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves on SIGTERM (Kubernetes) or Ctrl-C. The handlers are installed when this is
/// called, not when the future is first polled: a SIGTERM that arrives while the proxy is still
/// starting is then a graceful stop, not the default action (an abrupt exit).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (term, int) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            async fn recv(s: Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = recv(term) => {},
                () = recv(int) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_listener_queues_as_many_connections_as_the_kernel_allows() {
        let listener = super::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = listener.local_addr().unwrap().port();
        let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4096);
        // For a listening socket, `ss` shows the backlog as Send-Q.
        let out = std::process::Command::new("ss")
            .args(["-Hltn", &format!("sport = :{port}")])
            .output()
            .expect("ss (iproute2) runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let backlog: u32 = text
            .split_whitespace()
            .nth(2)
            .and_then(|q| q.parse().ok())
            .unwrap_or_else(|| panic!("no listening socket in {text:?}"));
        assert_eq!(backlog, super::LISTEN_BACKLOG.min(somaxconn));
    }
}
