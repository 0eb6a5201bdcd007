//! Token usage read from Azure's answers as they pass, never buffering a stream, and charged to
//! the caller's budget when the answer ends:
//!
//! - [`usage`]: what an answer used, and why it could not be read ([`Fallback`]);
//! - `estimate`: before sending, the prompt estimate and asking a stream for its usage;
//! - `scan` and [`json`]: a JSON answer's usage (teed, at most [`JSON_TEE_LIMIT`] bytes);
//! - [`sse`]: an SSE stream's, line by line whatever the chunk boundaries;
//! - [`meter`]: which of the two an answer gets;
//! - `realtime`: a Realtime WebSocket's, from each `response.done` as its frame passes;
//! - `tokens`: the `entra_proxy_tokens_total` counters of a label set;
//! - `settle`: at an answer's end (or when it breaks off), counted, priced, logged and settled
//!   against the request's reservation.
//!
//! When usage cannot be read, the charge falls back to an estimate: the prompt estimate plus,
//! for streams, what the content deltas seen add up to.

pub(crate) mod estimate;
pub mod json;
pub mod meter;
pub(crate) mod realtime;
mod request;
mod scan;
pub(crate) mod settle;
pub mod sse;
pub(crate) mod tokens;
pub mod usage;

pub use estimate::{
    CEILINGS, PER_MESSAGE_TOKENS, PER_REQUEST_TOKENS, Sizing, estimate_prompt,
    inject_include_usage, sizing,
};
pub use json::{JSON_TEE_LIMIT, json_usage, usage_of};
pub use meter::Meter;
pub use realtime::realtime_usage;
pub use sse::SseMeter;
pub use usage::{Fallback, Usage};
