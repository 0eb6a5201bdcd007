//! A Realtime WebSocket's usage: read from each `response.done` Azure sends as its frame passes
//! (the frame is relayed unchanged), counted, and taken from what the session reserved at its
//! handshake (charged as it comes once that is used up); the rest goes back at close.

use super::json::usage_of;
use super::settle::{Pricing, amounts};
use super::tokens::TokenCounters;
use super::usage::{Fallback, Usage};
use crate::limits::Admissions;
use serde::Deserialize;
use serde_json::Value;

/// A realtime server event, as far as the meter reads it.
#[derive(Deserialize)]
struct ServerEvent {
    #[serde(rename = "type")]
    kind: Option<String>,
    response: Option<RealtimeResponse>,
}

#[derive(Deserialize)]
struct RealtimeResponse {
    usage: Option<Value>,
}

/// The usage of a realtime server event: `None` unless it is a `response.done`, else its
/// `response.usage` (`input_tokens`, `output_tokens`, `total_tokens`) or why it is unreadable.
pub fn realtime_usage(event: &str) -> Option<Result<Usage, Fallback>> {
    // Most frames (audio, deltas) are not: a substring search skips them without parsing.
    if !event.contains("response.done") {
        return None;
    }
    let event: ServerEvent = match serde_json::from_str(event) {
        Ok(e) => e,
        Err(_) => return None,
    };
    if event.kind.as_deref() != Some("response.done") {
        return None;
    }
    Some(match event.response.and_then(|r| r.usage) {
        None | Some(Value::Null) => Err(Fallback::NoUsage),
        Some(u) => usage_of(&u),
    })
}

/// The usage of a realtime WebSocket: each `response.done` Azure sends is read as its frame
/// passes (the frame itself is relayed unchanged), counted in the token metrics and taken from
/// the session's reservation at once (what goes beyond it is charged at once). A
/// `response.done` whose usage cannot be read is counted in
/// `entra_proxy_usage_estimated_total` and charges nothing: a socket has no prompt estimate.
/// When the meter is dropped (the socket closed), the unused rest of the reservation goes back.
pub(crate) struct SocketMeter {
    /// The socket's admissions, holding its reservation until it closes.
    admissions: Admissions,
    labels: TokenCounters,
    pricing: Option<Pricing>,
    /// What the socket used so far.
    used: Usage,
    /// What that cost, in micro-units (0 unpriced).
    spent: u64,
    responses: u64,
}

impl SocketMeter {
    pub(crate) fn new(
        admissions: Admissions,
        labels: TokenCounters,
        pricing: Option<Pricing>,
    ) -> SocketMeter {
        SocketMeter {
            admissions,
            labels,
            pricing,
            used: Usage::default(),
            spent: 0,
            responses: 0,
        }
    }

    /// Reads one text frame from Azure; counts and charges the usage of a `response.done`.
    pub(crate) fn observe(&mut self, frame: &str) {
        let usage = match realtime_usage(frame) {
            None => return,
            Some(Ok(usage)) => usage,
            Some(Err(reason)) => {
                metrics::counter!("entra_proxy_usage_estimated_total", "reason" => reason.name())
                    .increment(1);
                return;
            }
        };
        self.responses += 1;
        self.used.prompt += usage.prompt;
        self.used.completion += usage.completion;
        self.used.total += usage.total;
        self.labels.count(&usage);
        let used = amounts(&usage, self.pricing.as_ref());
        self.spent = self.spent.saturating_add(used.micros);
        self.admissions.consume(used);
    }

    /// What the socket used so far, and in how many responses.
    pub(crate) fn used(&self) -> (Usage, u64) {
        (self.used, self.responses)
    }

    /// What the socket's responses cost so far, with the currency, when its model has a price.
    pub(crate) fn spent(&self) -> Option<(u64, &str)> {
        self.pricing.as_ref().map(|p| (self.spent, &*p.currency))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realtime_usage_is_read_from_response_done_only() {
        let done = r#"{"type":"response.done","event_id":"e","response":{"status":"completed","usage":{"total_tokens":30,"input_tokens":20,"output_tokens":10,"input_token_details":{"cached_tokens":4,"text_tokens":20,"audio_tokens":0},"output_token_details":{"text_tokens":10,"audio_tokens":0}}}}"#;
        assert_eq!(
            realtime_usage(done),
            Some(Ok(Usage {
                prompt: 20,
                completion: 10,
                total: 30,
                cached: Some(4),
                reasoning: None
            }))
        );
        assert_eq!(
            realtime_usage(r#"{"type":"response.text.delta","delta":"response.done"}"#),
            None
        );
        assert_eq!(realtime_usage(r#"{"type":"session.created"}"#), None);
        assert_eq!(realtime_usage("response.done, not json"), None);
        assert_eq!(
            realtime_usage(r#"{"type":"response.done","response":{"usage":null}}"#),
            Some(Err(Fallback::NoUsage))
        );
        assert_eq!(
            realtime_usage(r#"{"type":"response.done","response":{"usage":{"input_tokens":"2"}}}"#),
            Some(Err(Fallback::MalformedUsage))
        );
    }
}
