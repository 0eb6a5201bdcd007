//! How an answer's body is read for its usage: a JSON answer teed (bounded) and read at its
//! end, an SSE stream read as it passes.

use super::json::{JSON_TEE_LIMIT, json_usage};
use super::sse::SseMeter;
use super::usage::{Fallback, Usage};
use bytes::Bytes;
use serde::Deserialize;

/// How an answer's body is read.
#[derive(Debug)]
#[doc(hidden)] // public for the fuzz targets
pub enum Meter {
    /// Teed up to [`JSON_TEE_LIMIT`] bytes.
    Json {
        buf: Vec<u8>,
        too_large: bool,
    },
    Sse(SseMeter),
}

impl Meter {
    /// The meter for an answer of `content_type`, if it is JSON or SSE.
    pub fn for_content_type(content_type: &str, hide_usage_chunk: bool) -> Option<Meter> {
        let ct = content_type.trim().to_ascii_lowercase();
        if ct.starts_with("text/event-stream") {
            Some(Meter::Sse(SseMeter::new(hide_usage_chunk)))
        } else if ct.starts_with("application/json") {
            Some(Meter::Json {
                buf: Vec::new(),
                too_large: false,
            })
        } else {
            None
        }
    }

    /// Whether the meter changes the body (so its length is not Azure's).
    pub fn rewrites(&self) -> bool {
        matches!(self, Meter::Sse(s) if s.hides_usage_chunk())
    }

    pub fn feed(&mut self, data: &[u8]) -> Option<Bytes> {
        match self {
            Meter::Json { buf, too_large } => {
                if !*too_large && buf.len() + data.len() <= JSON_TEE_LIMIT {
                    buf.extend_from_slice(data);
                } else {
                    *too_large = true;
                    buf.clear();
                }
                None
            }
            Meter::Sse(s) => s.feed(data),
        }
    }

    /// The `model` Azure named: read from a JSON answer at its end (only for a recorded
    /// trace), from a stream's first chunks as they passed.
    pub(super) fn response_model(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct Named {
            model: Option<String>,
        }
        match self {
            Meter::Json {
                buf,
                too_large: false,
            } => serde_json::from_slice::<Named>(buf).ok()?.model,
            Meter::Json { .. } => None,
            Meter::Sse(s) => s.model().map(str::to_string),
        }
    }

    /// The usage (or the fallback and the completion tokens seen).
    pub fn result(&self, ended: bool) -> (Result<Usage, Fallback>, u64) {
        match self {
            Meter::Json {
                too_large: true, ..
            } => (Err(Fallback::TooLarge), 0),
            Meter::Json { .. } if !ended => (Err(Fallback::EndedEarly), 0),
            Meter::Json { buf, .. } => (json_usage(buf), 0),
            Meter::Sse(s) => (s.result(ended), s.seen_completion()),
        }
    }
}
