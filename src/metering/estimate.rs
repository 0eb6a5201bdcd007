//! Before sending: the prompt estimate (what a request's text will cost, for budgets and for
//! answers whose usage cannot be read) and asking a stream for its usage.

use bytes::Bytes;
use serde_json::Value;

pub use super::request::CEILINGS;
use super::request::{self, UsageAsk};

/// Tokens added per chat message (role and framing) by the prompt estimate.
pub const PER_MESSAGE_TOKENS: u64 = 4;
/// Tokens added per chat request (the reply's priming) by the prompt estimate.
pub const PER_REQUEST_TOKENS: u64 = 3;

/// The prompt estimate, made before sending: the bytes of the request's text (chat
/// `messages[].content`, `prompt`, `input`, as strings or text parts) divided by 4, rounded up,
/// plus [`PER_MESSAGE_TOKENS`] per chat message and [`PER_REQUEST_TOKENS`] per chat request.
/// `None` when the body is not a JSON object.
pub fn estimate_prompt(body: &[u8]) -> Option<u64> {
    request::read(body).map(|r| prompt_of(&r))
}

/// What a request may use, read before sending: its prompt estimate, and the ceiling it sets on
/// its answer (the largest of [`CEILINGS`] it names, with that parameter's name), and whether it
/// must be asked for its stream's usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sizing {
    pub prompt: u64,
    pub ceiling: Option<(u64, &'static str)>,
    pub(crate) usage: UsageAsk,
}

/// The [`Sizing`] of a request body (nothing when it is not a JSON object), from one pass that
/// builds nothing.
pub fn sizing(body: &[u8]) -> Sizing {
    let Some(read) = request::read(body) else {
        return Sizing::default();
    };
    Sizing {
        prompt: prompt_of(&read),
        ceiling: read.ceiling,
        usage: read.usage,
    }
}

/// The prompt estimate of what a request body reads as.
fn prompt_of(read: &request::Read) -> u64 {
    let overhead = read
        .messages
        .map_or(0, |n| PER_REQUEST_TOKENS + PER_MESSAGE_TOKENS * n);
    (read.text_bytes as u64).div_ceil(4) + overhead
}

/// `body` asking for its stream's usage, when its [`Sizing`] says it must: the option put in
/// front of its members when it has no `stream_options` (its own bytes otherwise unchanged),
/// else rewritten whole ([`inject_include_usage`]). `None` when nothing needs changing.
pub(crate) fn ask_usage(body: &[u8], sizing: &Sizing) -> Option<Bytes> {
    const OPTION: &[u8] = br#""stream_options":{"include_usage":true},"#;
    match sizing.usage {
        UsageAsk::No => None,
        UsageAsk::Rewrite => inject_include_usage(body),
        UsageAsk::Insert => {
            // One JSON object with members: its first non-space byte is its `{`.
            let open = body.iter().position(|b| !b.is_ascii_whitespace())?;
            let mut out = Vec::with_capacity(body.len() + OPTION.len());
            out.extend_from_slice(&body[..=open]);
            out.extend_from_slice(OPTION);
            out.extend_from_slice(&body[open + 1..]);
            Some(Bytes::from(out))
        }
    }
}

/// The prompt estimate of a request ([`estimate_prompt`]; 0 without a body read whole): made
/// before sending when a key's tokens are limited, else only if the answer's usage cannot be
/// read — most answers carry theirs, and the estimate parses the whole request body.
#[derive(Debug, Clone)]
pub(crate) enum Estimate {
    Made(u64),
    Later(Option<Bytes>),
}

impl Estimate {
    pub(crate) fn now(body: Option<&Bytes>) -> Estimate {
        Estimate::Made(body.and_then(|b| estimate_prompt(b)).unwrap_or(0))
    }

    /// The estimate made now with the request's ceiling, from one parse.
    pub(crate) fn sized(body: Option<&Bytes>) -> (Estimate, Sizing) {
        let sizing = body.map(|b| sizing(b)).unwrap_or_default();
        (Estimate::Made(sizing.prompt), sizing)
    }

    pub(crate) fn later(body: Option<&Bytes>) -> Estimate {
        Estimate::Later(body.cloned())
    }

    /// This estimate, to keep while an answer streams: a small body waiting for it as a copy
    /// of its own, so that the connection's read buffer it was read into is free for the next
    /// request.
    pub(crate) fn kept(&self) -> Estimate {
        const COPIED_UP_TO: usize = 16 * 1024;
        match self {
            Estimate::Later(Some(b)) if b.len() <= COPIED_UP_TO => {
                Estimate::Later(Some(Bytes::copy_from_slice(b)))
            }
            other => other.clone(),
        }
    }

    /// The estimate if it was made (0 when it waits).
    pub(crate) fn made(&self) -> u64 {
        match self {
            Estimate::Made(n) => *n,
            Estimate::Later(_) => 0,
        }
    }

    /// The estimate, made now if it waited.
    pub(crate) fn tokens(&self) -> u64 {
        match self {
            Estimate::Made(n) => *n,
            Estimate::Later(body) => Estimate::now(body.as_ref()).made(),
        }
    }
}

/// The request body with `stream_options.include_usage = true`, when it is a streamed chat or
/// completions request that does not ask for usage; `None` when nothing needs changing.
pub fn inject_include_usage(body: &[u8]) -> Option<Bytes> {
    let mut value: Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object_mut()?;
    if object.get("stream") != Some(&Value::Bool(true))
        || !(object.contains_key("messages") || object.contains_key("prompt"))
    {
        return None;
    }
    let options = object
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Default::default()));
    let options = options.as_object_mut()?;
    if options.get("include_usage") == Some(&Value::Bool(true)) {
        return None;
    }
    options.insert("include_usage".into(), Value::Bool(true));
    serde_json::to_vec(&value).ok().map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_estimate_is_a_quarter_of_the_text_bytes_plus_message_overhead() {
        let chat = br#"{"messages":[{"role":"system","content":"abcd"},{"role":"user","content":[{"type":"text","text":"abcdefghi"}]}]}"#;
        // 13 bytes → 4 tokens, + 2 messages × 4 + 3.
        assert_eq!(estimate_prompt(chat), Some(4 + 8 + 3));
        assert_eq!(estimate_prompt(br#"{"input":["abcd","abcd"]}"#), Some(2));
        assert_eq!(estimate_prompt(br#"{"prompt":"a"}"#), Some(1));
        assert_eq!(estimate_prompt(b"not json"), None);
    }

    #[test]
    fn a_request_is_sized_by_its_prompt_and_the_largest_ceiling_it_names() {
        let s = sizing(br#"{"messages":[{"role":"user","content":"abcd"}],"max_tokens":100}"#);
        assert_eq!(
            s,
            Sizing {
                prompt: 1 + 4 + 3,
                ceiling: Some((100, "max_tokens")),
                usage: UsageAsk::No,
            }
        );
        let s = sizing(br#"{"input":"x","max_output_tokens":50,"max_tokens":7}"#);
        assert_eq!(s.ceiling, Some((50, "max_output_tokens")));
        let s = sizing(br#"{"input":"x","max_tokens":7,"Max_Tokens":900}"#);
        assert_eq!(s.ceiling, Some((900, "max_tokens")), "in any letter case");
        let s = sizing(br#"{"messages":[],"max_completion_tokens":-1,"max_tokens":"9"}"#);
        assert_eq!(s.ceiling, None, "not a count: no ceiling");
        assert_eq!(sizing(b"[1]"), Sizing::default());
    }

    #[test]
    fn include_usage_is_injected_only_into_streams_that_lack_it() {
        let out = inject_include_usage(br#"{"model":"m","stream":true,"messages":[]}"#).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["model"], "m");
        let out = inject_include_usage(
            br#"{"stream":true,"prompt":"x","stream_options":{"include_usage":false}}"#,
        )
        .unwrap();
        assert!(String::from_utf8_lossy(&out).contains(r#""include_usage":true"#));
        assert!(
            inject_include_usage(
                br#"{"stream":true,"messages":[],"stream_options":{"include_usage":true}}"#
            )
            .is_none()
        );
        assert!(inject_include_usage(br#"{"messages":[]}"#).is_none());
        assert!(inject_include_usage(br#"{"stream":true,"input":"x"}"#).is_none());
    }

    #[test]
    fn a_stream_is_asked_for_its_usage_from_its_sizing_with_its_own_bytes_kept() {
        let ask = |body: &str| ask_usage(body.as_bytes(), &sizing(body.as_bytes()));
        let body = " \n{\"model\":\"m\",\"stream\":true,\"messages\":[{\"content\":\"\\u00e9\"}]}";
        let out = ask(body).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            " \n{\"stream_options\":{\"include_usage\":true},\"model\":\"m\",\"stream\":true,\"messages\":[{\"content\":\"\\u00e9\"}]}",
            "the option in front, every byte of the client's kept"
        );
        let out = ask(r#"{"stream":true,"prompt":"x","stream_options":{"include_usage":false}}"#);
        let v: Value = serde_json::from_slice(&out.unwrap()).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(
            v.as_object().unwrap().len(),
            3,
            "rewritten, nothing added twice"
        );
        for unchanged in [
            r#"{"stream":true,"messages":[],"stream_options":{"include_usage":true}}"#,
            r#"{"stream":true,"messages":[],"stream_options":"odd"}"#,
            r#"{"stream":false,"messages":[]}"#,
            r#"{"stream":true,"input":"x"}"#,
            "not json",
        ] {
            assert!(ask(unchanged).is_none(), "{unchanged}");
        }
    }
}
