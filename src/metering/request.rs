//! A request body read in one pass for its budget, without building it: the bytes of its text,
//! its message count, the ceilings it sets on its answer, and whether it is a stream that must
//! be asked for its usage. Nothing is allocated for what is read: keys are matched as they pass
//! and every other value is skipped. What is read is what `serde_json::Value` would give the
//! same fields (the tests hold the two side by side), at a fraction of the cost.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// The parameters that cap an answer's tokens, by API: chat and completions, o-series chat,
/// the Responses API.
pub const CEILINGS: [&str; 3] = ["max_tokens", "max_completion_tokens", "max_output_tokens"];

/// What a request body tells its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Read {
    /// Bytes of text in `messages[].content`, `prompt` and `input`.
    pub(crate) text_bytes: usize,
    /// How many chat messages, when `messages` is an array.
    pub(crate) messages: Option<u64>,
    /// The largest ceiling named (any letter case), with the parameter's name.
    pub(crate) ceiling: Option<(u64, &'static str)>,
    /// Whether the body must be asked for its stream's usage, and how.
    pub(crate) usage: UsageAsk,
}

/// Whether a streamed chat or completions request must be asked for its usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum UsageAsk {
    /// Not a stream, not chat or completions, or it already asks (or sets `stream_options` to
    /// something that is not an object, which is Azure's to refuse).
    #[default]
    No,
    /// A stream without `stream_options`: the option can be put in front of its members.
    Insert,
    /// A stream whose `stream_options` lacks `include_usage: true`: the body is rewritten.
    Rewrite,
}

/// Reads a request body; `None` when it is not one JSON object.
pub(crate) fn read(body: &[u8]) -> Option<Read> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let top = de.deserialize_map(TopLevel).ok()?;
    de.end().ok()?;
    Some(top.into_read())
}

/// The top-level object's members, as they are met.
#[derive(Default)]
struct Members {
    text_bytes: usize,
    messages: Option<u64>,
    ceiling: Option<(u64, &'static str)>,
    /// `messages` or `prompt` is present (whatever its value).
    chat_or_completion: bool,
    stream: bool,
    options: Options,
}

/// `stream_options`, as far as usage goes.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Options {
    #[default]
    Absent,
    NotAnObject,
    Object {
        include_usage: bool,
    },
}

impl Members {
    fn into_read(self) -> Read {
        let usage = match (self.stream && self.chat_or_completion, self.options) {
            (false, _) => UsageAsk::No,
            (true, Options::Absent) => UsageAsk::Insert,
            (
                true,
                Options::Object {
                    include_usage: false,
                },
            ) => UsageAsk::Rewrite,
            (true, _) => UsageAsk::No,
        };
        Read {
            text_bytes: self.text_bytes,
            messages: self.messages,
            ceiling: self.ceiling,
            usage,
        }
    }
}

/// The member names the body is read for, matched as they pass (nothing is allocated).
enum Key {
    Messages,
    Prompt,
    Input,
    Stream,
    StreamOptions,
    Ceiling(&'static str),
    Text,
    Content,
    IncludeUsage,
    Other,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: de::Error>(self, k: &str) -> Result<Key, E> {
                Ok(match k {
                    "messages" => Key::Messages,
                    "prompt" => Key::Prompt,
                    "input" => Key::Input,
                    "stream" => Key::Stream,
                    "stream_options" => Key::StreamOptions,
                    "text" => Key::Text,
                    "content" => Key::Content,
                    "include_usage" => Key::IncludeUsage,
                    // In any letter case, as Azure reads them: a ceiling the proxy missed
                    // would go unreserved.
                    _ => match CEILINGS.iter().find(|c| c.eq_ignore_ascii_case(k)) {
                        Some(c) => Key::Ceiling(c),
                        None => Key::Other,
                    },
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// The top-level object.
struct TopLevel;

impl<'de> Visitor<'de> for TopLevel {
    type Value = Members;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
        let mut m = Members::default();
        // A member named twice counts as its last, as a parsed object keeps it.
        let (mut messages, mut prompt, mut input) = (0, 0, 0);
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Messages => {
                    m.chat_or_completion = true;
                    (m.messages, messages) = match map.next_value_seed(Want::Messages)? {
                        Got::Messages { count, text_bytes } => (Some(count), text_bytes),
                        _ => (None, 0),
                    };
                }
                Key::Prompt => {
                    m.chat_or_completion = true;
                    prompt = map.next_value_seed(Want::Text)?.text_bytes();
                }
                Key::Input => input = map.next_value_seed(Want::Text)?.text_bytes(),
                Key::Stream => m.stream = map.next_value_seed(Want::Bool)? == Got::Bool(true),
                Key::StreamOptions => {
                    m.options = match map.next_value_seed(Want::StreamOptions)? {
                        Got::Options { include_usage } => Options::Object { include_usage },
                        _ => Options::NotAnObject,
                    };
                }
                Key::Ceiling(name) => {
                    if let Got::Count(n) = map.next_value_seed(Want::Count)?
                        && m.ceiling.is_none_or(|(max, _)| n > max)
                    {
                        m.ceiling = Some((n, name));
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        m.text_bytes = messages + prompt + input;
        Ok(m)
    }
}

/// What a value is read for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Bytes of text: a string, an array of texts, an object's `text` and `content`.
    Text,
    /// Chat messages: how many, and the text of their `content`.
    Messages,
    /// One message: the text of its `content`.
    Message,
    /// `stream_options`: whether `include_usage` is `true`.
    StreamOptions,
    /// A boolean.
    Bool,
    /// A count: an integer from 0 up.
    Count,
}

/// What a value turned out to be, as far as it was wanted ([`Got::Nothing`] for the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Got {
    Nothing,
    Bool(bool),
    Count(u64),
    Text(usize),
    Messages { count: u64, text_bytes: usize },
    Options { include_usage: bool },
}

impl Got {
    fn text_bytes(self) -> usize {
        match self {
            Got::Text(n) => n,
            _ => 0,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Want {
    type Value = Got;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Got, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Want {
    type Value = Got;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Got, E> {
        Ok(match self {
            Want::Bool => Got::Bool(v),
            _ => Got::Nothing,
        })
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Got, E> {
        Ok(match self {
            Want::Count => Got::Count(v),
            _ => Got::Nothing,
        })
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Got, E> {
        Ok(Got::Nothing)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Got, E> {
        Ok(Got::Nothing)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Got, E> {
        Ok(Got::Nothing)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Got, E> {
        Ok(match self {
            Want::Text => Got::Text(v.len()),
            _ => Got::Nothing,
        })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Got, A::Error> {
        match self {
            Want::Text => {
                let mut n = 0;
                while let Some(item) = seq.next_element_seed(Want::Text)? {
                    n += item.text_bytes();
                }
                Ok(Got::Text(n))
            }
            Want::Messages => {
                let (mut count, mut text_bytes) = (0, 0);
                while let Some(m) = seq.next_element_seed(Want::Message)? {
                    count += 1;
                    text_bytes += m.text_bytes();
                }
                Ok(Got::Messages { count, text_bytes })
            }
            _ => {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Got::Nothing)
            }
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Got, A::Error> {
        // A member named twice counts as its last.
        let (mut text, mut content, mut include_usage) = (0, 0, false);
        while let Some(key) = map.next_key::<Key>()? {
            match (self, key) {
                (Want::Text, Key::Text) => text = map.next_value_seed(Want::Text)?.text_bytes(),
                (Want::Text | Want::Message, Key::Content) => {
                    content = map.next_value_seed(Want::Text)?.text_bytes();
                }
                (Want::StreamOptions, Key::IncludeUsage) => {
                    include_usage = map.next_value_seed(Want::Bool)? == Got::Bool(true);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(match self {
            Want::Text => Got::Text(text + content),
            Want::Message => Got::Text(content),
            Want::StreamOptions => Got::Options { include_usage },
            _ => Got::Nothing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// What the same fields of a parsed `Value` say: the reading this module replaces.
    fn parsed(body: &[u8]) -> Option<Read> {
        let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(body) else {
            return None;
        };
        fn text(v: &Value) -> usize {
            match v {
                Value::String(s) => s.len(),
                Value::Array(items) => items.iter().map(text).sum(),
                Value::Object(o) => ["text", "content"]
                    .iter()
                    .filter_map(|k| o.get(*k))
                    .map(text)
                    .sum(),
                _ => 0,
            }
        }
        let array = o.get("messages").and_then(Value::as_array);
        let mut text_bytes: usize = array
            .into_iter()
            .flatten()
            .map(|m| text(m.get("content").unwrap_or(&Value::Null)))
            .sum();
        text_bytes += ["prompt", "input"]
            .iter()
            .filter_map(|k| o.get(*k))
            .map(text)
            .sum::<usize>();
        let ceiling = o
            .iter()
            .filter_map(|(k, v)| {
                let name = CEILINGS.iter().find(|c| c.eq_ignore_ascii_case(k))?;
                Some((v.as_u64()?, *name))
            })
            .max_by_key(|(n, _)| *n);
        let stream = o.get("stream") == Some(&Value::Bool(true))
            && (o.contains_key("messages") || o.contains_key("prompt"));
        let usage = match (stream, o.get("stream_options")) {
            (false, _) => UsageAsk::No,
            (true, None) => UsageAsk::Insert,
            (true, Some(Value::Object(opts)))
                if opts.get("include_usage") != Some(&Value::Bool(true)) =>
            {
                UsageAsk::Rewrite
            }
            (true, Some(_)) => UsageAsk::No,
        };
        Some(Read {
            text_bytes,
            messages: array.map(|a| a.len() as u64),
            ceiling,
            usage,
        })
    }

    const BODIES: &[&str] = &[
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
        r#"{"messages":[{"role":"system","content":"abcd"},{"role":"user","content":[{"type":"text","text":"abcdefghi"},{"type":"image_url","image_url":{"url":"x"}}]}],"max_tokens":100}"#,
        r#"{"input":["abcd","abcd"],"max_output_tokens":50,"max_tokens":7}"#,
        r#"{"input":"x","max_tokens":7,"Max_Tokens":900,"MAX_COMPLETION_TOKENS":5}"#,
        r#"{"messages":[],"max_completion_tokens":-1,"max_tokens":"9"}"#,
        r#"{"messages":"not an array","prompt":["a","bb",{"text":"ccc"},[["dddd"]]]}"#,
        r#"{"prompt":"a\u00e9\n\"x\"","stream":true}"#,
        r#"{"messages":[1,null,{"content":null},{"content":{"content":"ab","text":"c"}}],"stream":true,"stream_options":{"include_usage":false}}"#,
        r#"{"stream":true,"messages":[],"stream_options":{"include_usage":true}}"#,
        r#"{"stream":true,"messages":[],"stream_options":null}"#,
        r#"{"stream":"true","messages":[]}"#,
        r#"{"stream":true,"input":"x"}"#,
        r#"{"max_tokens":1.5,"max_output_tokens":18446744073709551615}"#,
        r#"{"messages":[{"content":"a"}],"messages":[{"content":"bbbb"},{"content":"c"}]}"#,
        r#"{"stream_options":{"include_usage":true,"include_usage":false},"stream":true,"prompt":""}"#,
        r#" { "prompt" : "spaced" } "#,
        r#"{}"#,
    ];

    #[test]
    fn one_pass_reads_what_a_parsed_value_says() {
        for body in BODIES {
            assert_eq!(read(body.as_bytes()), parsed(body.as_bytes()), "{body}");
        }
    }

    #[test]
    fn what_is_not_one_json_object_reads_as_nothing() {
        for body in [
            "",
            "[1]",
            "\"s\"",
            "{",
            "{\"a\":1} x",
            "{\"a\":1}{}",
            "not json",
            "{\"a\":}",
        ] {
            assert_eq!(read(body.as_bytes()), None, "{body}");
        }
    }

    #[test]
    fn nesting_past_the_parser_limit_is_refused_not_overflowed() {
        let deep = format!(
            "{{\"prompt\":{}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(read(deep.as_bytes()), None);
    }

    mod proptests {
        use super::*;
        use proptest::prelude::*;

        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                "[a-z\u{e9}\"]{0,6}".prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 32, 5, |inner| {
                let names = prop_oneof![
                    Just("messages".to_string()),
                    Just("content".to_string()),
                    Just("text".to_string()),
                    Just("prompt".to_string()),
                    Just("input".to_string()),
                    Just("stream".to_string()),
                    Just("stream_options".to_string()),
                    Just("include_usage".to_string()),
                    Just("Max_Tokens".to_string()),
                    Just("max_output_tokens".to_string()),
                    "[a-z]{1,3}",
                ];
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                    prop::collection::vec((names, inner), 0..6)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #[test]
            fn any_object_reads_as_its_parsed_value(v in json()) {
                let body = serde_json::to_vec(&v).unwrap();
                prop_assert_eq!(read(&body), parsed(&body));
            }
        }
    }
}
