//! entra-proxy: a reverse proxy in front of Azure OpenAI and the other Azure AI services that
//! swaps whatever its callers hold — proxy keys, legacy resource keys — for cached Entra ID
//! bearer tokens obtained with the proxy's own identity, and explains Azure's auth failures.
//!
//! The path of one request, each step one module, data flowing forward only:
//!
//! ```text
//! server (axum)              listeners, health, readiness, graceful shutdown
//!   → inbound::Authenticator   headers → Caller (virtual key | legacy key | anonymous sidecar)
//!   → routing::resolve         request → Route (backend, upstream URL, body rewrite)
//!   → identity::TokenCache     scope → cached bearer token, refreshed in the background
//!   → forward::handle          strip credentials, set Authorization, stream both ways
//!   → diagnose::annotate       on Azure 4xx: a one-line diagnosis header and log line
//! ```
//!
//! [`server::serve`] serves an [`state::AppState`] on a listener, so tests can drive the whole
//! proxy in-process. The local stand-in for Azure that tests, `demo` and benchmarks use is its
//! own crate, `azure-emulator`; `demo` (feature `demo`, on by default) is the only part of the
//! proxy that links it.

pub mod backends;
pub mod claims;
pub mod cli;
pub mod cloud;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod diagnose;
pub mod error;
pub mod forward;
pub mod identity;
pub mod inbound;
pub mod limits;
pub mod log_format;
pub mod log_sink;
pub mod routing;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod upstream;
