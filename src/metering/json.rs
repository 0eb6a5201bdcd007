//! The usage of a JSON answer: read by the byte-level walk of `super::scan`, or through a
//! `serde_json::Value` when the walk hands the document back; and of a `usage` object.

use super::usage::{Fallback, Usage};
use serde_json::Value;

/// Largest JSON answer read for its usage; longer ones are charged the estimate.
pub const JSON_TEE_LIMIT: usize = 1024 * 1024;

/// Reads a `usage` object: chat, completions and embeddings (`prompt_tokens`, …) or the
/// Responses API (`input_tokens`, …).
pub fn usage_of(usage: &Value) -> Result<Usage, Fallback> {
    super::scan::Counts::of_value(usage)?.usage()
}

/// The usage of a whole JSON answer: read in one pass without building the document
/// (`forward/usage_scan.rs`), or as a `Value` when that reader hands it back.
pub fn json_usage(body: &[u8]) -> Result<Usage, Fallback> {
    if let Some(usage) = super::scan::json_usage(body) {
        return usage;
    }
    let value: Value = serde_json::from_slice(body).map_err(|_| Fallback::NotJson)?;
    match value.get("usage") {
        None | Some(Value::Null) => Err(Fallback::NoUsage),
        Some(u) => usage_of(u),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_usage_of_chat_embeddings_and_responses() {
        let chat = br#"{"usage":{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13,"completion_tokens_details":{"reasoning_tokens":1}}}"#;
        assert_eq!(
            json_usage(chat),
            Ok(Usage {
                prompt: 10,
                completion: 3,
                total: 13,
                cached: None,
                reasoning: Some(1)
            })
        );
        let embeddings = br#"{"usage":{"prompt_tokens":4,"total_tokens":4}}"#;
        assert_eq!(
            json_usage(embeddings).map(|u| (u.prompt, u.completion, u.total)),
            Ok((4, 0, 4))
        );
        let responses = br#"{"usage":{"input_tokens":7,"output_tokens":2,"total_tokens":9,"input_tokens_details":{"cached_tokens":3}}}"#;
        assert_eq!(
            json_usage(responses).map(|u| (u.total, u.cached)),
            Ok((9, Some(3)))
        );
        assert_eq!(json_usage(b"<html>"), Err(Fallback::NotJson));
        assert_eq!(
            json_usage(br#"{"usage":{"prompt_tokens":"#),
            Err(Fallback::NotJson)
        );
        assert_eq!(json_usage(br#"{"id":1}"#), Err(Fallback::NoUsage));
        assert_eq!(
            json_usage(br#"{"usage":{"prompt_tokens":"ten"}}"#),
            Err(Fallback::MalformedUsage)
        );
        assert_eq!(
            json_usage(br#"{"usage":[1]}"#),
            Err(Fallback::MalformedUsage)
        );
        assert_eq!(
            json_usage(br#"{"usage":{"total_tokens":-1}}"#),
            Err(Fallback::MalformedUsage)
        );
    }
}
