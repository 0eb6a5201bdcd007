//! entra-proxy: a reverse proxy in front of Azure OpenAI and the other Azure AI services that
//! swaps whatever its callers hold — proxy keys, legacy resource keys — for cached Entra ID
//! bearer tokens obtained with the proxy's own identity, and explains Azure's auth failures.
//!
//! The path of one request, each step one module, data flowing forward only:
//!
//! ```text
//! server                     own accept loop (one event loop per core), own endpoints, drain
//!   → inbound::Authenticator   headers → Caller (virtual key | legacy key | Entra JWT |
//!                              client credentials | anonymous sidecar), or inbound::AuthError
//!   → routing::resolve         request → Route(s) (backend id, upstream URI, body rewrite)
//!   → forward::bearer          (caller, backend) → bearer from a cache refreshed in the background
//!   → forward::handle          phases: request_filter → upstream_peers → attempts (pure retry
//!                              / failover policy) → upstream_request → response_filter
//!   → diagnose::annotate       on Azure 401/403/404: a one-line diagnosis header and log line
//!   (or refusal::answer)       the proxy's own error: JSON body, log line, metric, /status
//! ```
//!
//! A request reads one [`state::Snapshot`] (config, keys, routes, backends) from start to end;
//! [`state::AppState`] holds what outlives a config reload (token caches, metrics).
//! `.ci/check-cycles` keeps the modules free of import cycles.
//!
//! [`server::serve`] serves an [`state::AppState`] on a listener, so tests can drive the whole
//! proxy in-process. The local stand-in for Azure that tests, `demo` and benchmarks use is its
//! own crate, `azure-emulator`; `demo` (feature `demo`, on by default) is the only part of the
//! proxy that links it.

mod backends;
pub mod claims;
pub mod cli;
pub mod cloud;
pub mod config;
mod deadline;
#[cfg(feature = "demo")]
pub mod demo;
pub mod diagnose;
pub mod error;
mod fast_hash;
pub mod forward;
pub mod identity;
pub mod inbound;
pub mod limits;
mod logging;
pub mod metering;
mod refusal;
mod reload;
pub mod routing;
pub mod server;
pub mod services;
pub mod state;
mod status;
mod telemetry;
mod upstream;

/// The per-thread upstream client (its hot-path benchmark drives it directly).
pub use upstream::Client as UpstreamClient;

/// One access line rendered, for its hot-path benchmark.
#[doc(hidden)]
pub use logging::access::render_typical as render_access_line;
