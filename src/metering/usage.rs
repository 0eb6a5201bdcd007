//! What an answer used: the token counts Azure reports, and why they could not be read when
//! the charge falls back to an estimate.

/// Tokens one answer used, as Azure reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
    pub total: u64,
    /// `prompt_tokens_details.cached_tokens` (`input_tokens_details` in the Responses API,
    /// `input_token_details` in realtime).
    pub cached: Option<u64>,
    /// `completion_tokens_details.reasoning_tokens` (`output_tokens_details`).
    pub reasoning: Option<u64>,
}

/// Why an answer's usage could not be read (the `reason` of `entra_proxy_usage_estimated_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    NotJson,
    NoUsage,
    MalformedUsage,
    TooLarge,
    EndedEarly,
}

impl Fallback {
    pub fn name(self) -> &'static str {
        match self {
            Fallback::NotJson => "not_json",
            Fallback::NoUsage => "no_usage",
            Fallback::MalformedUsage => "malformed_usage",
            Fallback::TooLarge => "too_large",
            Fallback::EndedEarly => "ended_early",
        }
    }
}
