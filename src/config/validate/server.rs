//! `[server]` and `[upstream]`: the listener, request limits, worker count, and the timeouts and
//! retry budget of calls to backends.

use super::seconds;
use crate::config::errors::Errors;
use crate::config::raw::{RawServer, RawUpstream};
use crate::config::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_FIRST_BYTE_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_IDENTITY_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_LISTEN, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_WEBSOCKETS,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETRY_BUFFER_BYTES, DEFAULT_SHUTDOWN_GRACE,
    DEFAULT_WEBSOCKET_IDLE_TIMEOUT, KeyDigest, ServerConfig, UpstreamConfig,
};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

/// Upper bound of `server.workers`: far above any sensible core count, low enough to catch a
/// typo before it starts thousands of threads.
pub(super) const MAX_WORKERS: usize = 1024;

pub(super) fn validate_server(raw: RawServer, errors: &mut Errors) -> Option<ServerConfig> {
    let listen_raw = raw.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let listen = errors.check(
        "server.listen",
        listen_raw.parse::<SocketAddr>().map_err(|_| {
            format!("{listen_raw:?} is not an address such as 127.0.0.1:8080 or 0.0.0.0:8080")
        }),
    );
    let max_body_bytes = match raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES) {
        0 => errors.reject("server.max_body_bytes", "must be greater than 0"),
        n => Some(n),
    };
    let max_header_bytes = match raw.max_header_bytes {
        None => Some(DEFAULT_MAX_HEADER_BYTES),
        Some(n) if (8192..=16 * 1024 * 1024).contains(&n) => Some(n),
        Some(n) => errors.reject(
            "server.max_header_bytes",
            format!("{n} is not between 8192 and 16777216"),
        ),
    };
    let header_read_timeout = errors.check(
        "server.header_read_timeout_secs",
        seconds(raw.header_read_timeout_secs, DEFAULT_HEADER_READ_TIMEOUT),
    );
    let admin_key = match &raw.admin_key_sha256 {
        None => Some(None),
        Some(d) => errors
            .check("server.admin_key_sha256", KeyDigest::parse(d))
            .map(Some),
    };
    let workers = match raw.workers {
        None => Some(default_workers()),
        Some(n) => errors.check(
            "server.workers",
            NonZeroUsize::new(n)
                .filter(|n| n.get() <= MAX_WORKERS)
                .ok_or_else(|| format!("{n} is not between 1 and {MAX_WORKERS}")),
        ),
    };
    let max_websockets = match raw.max_websockets.unwrap_or(DEFAULT_MAX_WEBSOCKETS) {
        0 => errors.reject(
            "server.max_websockets",
            "must be greater than 0 (WebSockets cannot be turned off this way)",
        ),
        n => Some(n),
    };
    let websocket_idle_timeout = errors.check(
        "server.websocket_idle_timeout_secs",
        seconds(
            raw.websocket_idle_timeout_secs,
            DEFAULT_WEBSOCKET_IDLE_TIMEOUT,
        ),
    );
    let public_url = errors.check(
        "server.public_url",
        super::services::public_url(raw.public_url.as_deref()),
    );
    let issued_token_secret = errors.check(
        "server.issued_token_secret",
        super::services::token_secret(raw.issued_token_secret),
    );
    Some(ServerConfig {
        listen: listen?,
        max_body_bytes: max_body_bytes?,
        shutdown_grace: raw
            .shutdown_grace_secs
            .map_or(DEFAULT_SHUTDOWN_GRACE, Duration::from_secs),
        max_header_bytes: max_header_bytes?,
        header_read_timeout: header_read_timeout?,
        debug: raw.debug,
        admin_key: admin_key?,
        workers: workers?,
        max_websockets: max_websockets?,
        websocket_idle_timeout: websocket_idle_timeout?,
        public_url: public_url?,
        issued_token_secret: issued_token_secret?,
    })
}

/// One worker per CPU the process may use (honours CPU affinity and cgroup quotas).
pub(super) fn default_workers() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

pub(super) fn validate_upstream(raw: RawUpstream, errors: &mut Errors) -> Option<UpstreamConfig> {
    let mut timeout = |key: &str, v: Option<f64>, default: Duration| {
        errors.check(format!("upstream.{key}"), seconds(v, default))
    };
    let connect_timeout = timeout(
        "connect_timeout_secs",
        raw.connect_timeout_secs,
        DEFAULT_CONNECT_TIMEOUT,
    );
    let first_byte_timeout = timeout(
        "first_byte_timeout_secs",
        raw.first_byte_timeout_secs,
        DEFAULT_FIRST_BYTE_TIMEOUT,
    );
    let identity_timeout = timeout(
        "identity_timeout_secs",
        raw.identity_timeout_secs,
        DEFAULT_IDENTITY_TIMEOUT,
    );
    let idle_timeout = timeout(
        "idle_timeout_secs",
        raw.idle_timeout_secs,
        DEFAULT_IDLE_TIMEOUT,
    );
    let request_timeout = timeout(
        "request_timeout_secs",
        raw.request_timeout_secs,
        DEFAULT_REQUEST_TIMEOUT,
    );
    let max_attempts = match raw.max_attempts {
        None => Some(DEFAULT_MAX_ATTEMPTS),
        Some(n @ 1..=10) => Some(n),
        Some(n) => errors.reject(
            "upstream.max_attempts",
            format!("{n} is not between 1 (no retries) and 10"),
        ),
    };
    Some(UpstreamConfig {
        connect_timeout: connect_timeout?,
        first_byte_timeout: first_byte_timeout?,
        identity_timeout: identity_timeout?,
        idle_timeout: idle_timeout?,
        request_timeout: request_timeout?,
        max_attempts: max_attempts?,
        retry_buffer_bytes: raw.retry_buffer_bytes.unwrap_or(DEFAULT_RETRY_BUFFER_BYTES),
        replay_after_timeout: raw.replay_after_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{err, parse};

    #[test]
    fn workers_default_to_the_cpus_and_reject_zero_and_absurd_counts() {
        let backend = "[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'";
        let c = parse(backend).unwrap();
        assert_eq!(c.server.workers, default_workers());
        let c = parse(&format!("[server]\nworkers = 3\n{backend}")).unwrap();
        assert_eq!(c.server.workers.get(), 3);
        for bad in [0, MAX_WORKERS + 1] {
            let e = err(&format!("[server]\nworkers = {bad}\n{backend}"));
            assert!(
                e.contains(&format!(
                    "server.workers: {bad} is not between 1 and {MAX_WORKERS}"
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn the_header_read_timeout_has_a_default_and_rejects_nonsense() {
        let backend = "[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'";
        let c = parse(backend).unwrap();
        assert_eq!(c.server.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT);
        let c = parse(&format!(
            "[server]\nheader_read_timeout_secs = 2.5\n{backend}"
        ))
        .unwrap();
        assert_eq!(c.server.header_read_timeout, Duration::from_millis(2500));
        for bad in ["0", "-3", "1e9"] {
            let e = err(&format!(
                "[server]\nheader_read_timeout_secs = {bad}\n{backend}"
            ));
            assert!(
                e.contains("server.header_read_timeout_secs:")
                    && e.contains("is not a number of seconds"),
                "{e}"
            );
        }
    }

    #[test]
    fn websocket_limits_have_defaults_and_reject_nonsense() {
        let backend = "[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'";
        let c = parse(backend).unwrap();
        assert_eq!(c.server.max_websockets, DEFAULT_MAX_WEBSOCKETS);
        assert_eq!(
            c.server.websocket_idle_timeout,
            DEFAULT_WEBSOCKET_IDLE_TIMEOUT
        );
        let c = parse(&format!(
            "[server]\nmax_websockets = 2\nwebsocket_idle_timeout_secs = 0.5\n{backend}"
        ))
        .unwrap();
        assert_eq!(c.server.max_websockets, 2);
        assert_eq!(c.server.websocket_idle_timeout, Duration::from_millis(500));
        let e = err(&format!("[server]\nmax_websockets = 0\n{backend}"));
        assert!(
            e.contains("server.max_websockets: must be greater than 0"),
            "{e}"
        );
        let e = err(&format!(
            "[server]\nwebsocket_idle_timeout_secs = -1\n{backend}"
        ));
        assert!(
            e.contains("server.websocket_idle_timeout_secs: -1 is not"),
            "{e}"
        );
    }
}
