//! An SSE answer's usage, read line by line as the stream passes whatever the chunk boundaries,
//! from the chunk that carries it (and the `model` from the first chunk naming one); when the
//! proxy asked for the usage chunk the client did not, what that added is taken out again.

use super::json::usage_of;
use super::usage::{Fallback, Usage};
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::Value;

/// Longest SSE line read; a longer one is passed on unread.
const SSE_LINE_LIMIT: usize = 1024 * 1024;
/// `data:` lines of a stream read for the `model` Azure names, until one names it: Azure names
/// it in its first chunks, and a stream that does not costs no more than this many reads.
const MODEL_LOOKS: u8 = 8;

/// The parts of one SSE `data:` payload the meter reads. Text is measured, not kept: a content
/// delta costs its length, not an allocation.
#[derive(Deserialize)]
struct Chunk<'a> {
    choices: Option<Vec<Choice>>,
    /// `Some(Value::Null)` for `"usage":null`, `None` when there is no `usage`.
    #[serde(default, deserialize_with = "present")]
    usage: Option<Value>,
    #[serde(rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    delta: Option<TextLen>,
    response: Option<ResponseObject>,
}

#[derive(Deserialize)]
struct Choice {
    delta: Option<Delta>,
    text: Option<TextLen>,
}

#[derive(Deserialize)]
struct Delta {
    content: Option<TextLen>,
}

/// The length in bytes of a JSON string; 0 for any other value, which is read past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TextLen(usize);

impl<'de> Deserialize<'de> for TextLen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TextLen, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct Measure;
        impl<'de> Visitor<'de> for Measure {
            type Value = TextLen;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, v: &str) -> Result<TextLen, E> {
                Ok(TextLen(v.len()))
            }
            fn visit_bool<E>(self, _: bool) -> Result<TextLen, E> {
                Ok(TextLen(0))
            }
            fn visit_i64<E>(self, _: i64) -> Result<TextLen, E> {
                Ok(TextLen(0))
            }
            fn visit_u64<E>(self, _: u64) -> Result<TextLen, E> {
                Ok(TextLen(0))
            }
            fn visit_f64<E>(self, _: f64) -> Result<TextLen, E> {
                Ok(TextLen(0))
            }
            fn visit_unit<E>(self) -> Result<TextLen, E> {
                Ok(TextLen(0))
            }
            fn visit_none<E>(self) -> Result<TextLen, E> {
                Ok(TextLen(0))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TextLen, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(TextLen(0))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TextLen, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(TextLen(0))
            }
        }
        d.deserialize_any(Measure)
    }
}

#[derive(Deserialize)]
struct ResponseObject {
    usage: Option<Value>,
}

/// The `model` a chunk names: at its top level (chat, completions), else in its `response`
/// (the Responses API's `response.created`, …). Read apart from [`Chunk`], so that a `model` of
/// another type, or named twice, changes nothing of how the chunk itself is read.
fn model_of(data: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Named {
        model: Option<String>,
        response: Option<Response>,
    }
    #[derive(Deserialize)]
    struct Response {
        model: Option<String>,
    }
    let named: Named = serde_json::from_slice(data).ok()?;
    named
        .model
        .filter(|m| !m.is_empty())
        .or_else(|| named.response?.model.filter(|m| !m.is_empty()))
}

/// A field that is there, even as `null`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// What one SSE line means for the events the client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineEffect {
    /// The line passes as it is.
    Pass,
    /// The line is the data of the usage-only chunk the proxy asked for: its event is hidden.
    HideEvent,
    /// The line carries the `"usage":null` that asking for usage adds to every chunk: it is
    /// taken out.
    DropNullUsage,
}

/// [`without_null_usage`] for the shape OpenAI and Azure write, read without walking the line:
/// `"usage":null` as the object's last member and the only `"usage"` anywhere in it. In a line
/// that is one JSON object (the meter has parsed it before asking) the closing brace at its end
/// is the top level's, so the member before it is a top-level one. `None` for any other shape.
fn without_trailing_null_usage(line: &[u8]) -> Option<Vec<u8>> {
    const TAIL: &[u8] = b",\"usage\":null}";
    let last = line.iter().rposition(|b| !b.is_ascii_whitespace())?;
    let at = (last + 1).checked_sub(TAIL.len())?;
    if &line[at..=last] != TAIL || memchr::memmem::find(line, b"\"usage\"") != Some(at + 1) {
        return None;
    }
    let mut kept = Vec::with_capacity(line.len() - (TAIL.len() - 1));
    kept.extend_from_slice(&line[..at]);
    kept.extend_from_slice(&line[last..]);
    Some(kept)
}

/// `line` without its top-level `"usage":null` member (and the comma that joined it), when it
/// has exactly one; `None` otherwise. The shape Azure writes is cut at once, any other walked.
fn without_null_usage(line: &[u8]) -> Option<Vec<u8>> {
    without_trailing_null_usage(line).or_else(|| walked_without_null_usage(line))
}

/// [`without_null_usage`] by walking the line, strings and nested objects skipped as JSON reads
/// them.
fn walked_without_null_usage(line: &[u8]) -> Option<Vec<u8>> {
    const KEY: &[u8] = b"\"usage\"";
    let skip_ws = |mut i: usize| {
        while line.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        i
    };
    let mut found = None;
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut i = 0;
    while let Some(&b) = line.get(i) {
        if in_string {
            if escaped {
                escaped = false;
                i += 1;
                continue;
            }
            // Straight to the string's next quote or backslash.
            let at = i + memchr::memchr2(b'"', b'\\', &line[i..])?;
            match line[at] {
                b'"' => in_string = false,
                _ => escaped = true,
            }
            i = at + 1;
            continue;
        }
        match b {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.checked_sub(1)?,
            b'"' if depth == 1 && line[i..].starts_with(KEY) => {
                let colon = skip_ws(i + KEY.len());
                if line.get(colon) == Some(&b':') {
                    let value = skip_ws(colon + 1);
                    if line[value..].starts_with(b"null") {
                        if found.is_some() {
                            return None;
                        }
                        found = Some((i, value + 4));
                        i = value + 4;
                        continue;
                    }
                }
                in_string = true;
            }
            b'"' => in_string = true,
            _ => {}
        }
        i += 1;
    }
    let (start, end) = found?;
    let before = line[..start]
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())?;
    let (start, end) = if line[before] == b',' {
        (before, end)
    } else {
        let after = skip_ws(end);
        match line.get(after) {
            Some(b',') => (start, skip_ws(after + 1)),
            _ => (start, end),
        }
    };
    let mut out = Vec::with_capacity(line.len() - (end - start));
    out.extend_from_slice(&line[..start]);
    out.extend_from_slice(&line[end..]);
    Some(out)
}

/// Tokens a content delta of `len` bytes counts for when a stream has no usage: at least 1.
fn delta_tokens(len: usize) -> u64 {
    (len as u64).div_ceil(4).max(1)
}

/// Reads an SSE stream as it passes. With `hide_usage_chunk`, it also removes what asking for
/// usage added — the usage-only chunk (`"choices": []` with `usage`) and the `"usage":null`
/// every other chunk then carries — and gives back whole events only, so what the client sees
/// is byte for byte the stream it would get without asking.
#[derive(Debug, Default)]
pub struct SseMeter {
    line: Vec<u8>,
    line_too_long: bool,
    usage: Option<Result<Usage, Fallback>>,
    /// Completion tokens estimated from the content deltas seen.
    seen_completion: u64,
    /// The first `model` a chunk named (Azure's model version, e.g. `gpt-4o-2024-08-06`).
    model: Option<String>,
    /// `data:` lines read for the model so far (at most [`MODEL_LOOKS`]).
    model_looks: u8,
    done: bool,
    hide_usage_chunk: bool,
    event: BytesMut,
    event_hidden: bool,
}

impl SseMeter {
    pub fn new(hide_usage_chunk: bool) -> SseMeter {
        SseMeter {
            hide_usage_chunk,
            ..SseMeter::default()
        }
    }

    /// Reads `chunk`. When hiding the usage chunk, returns what the client gets now (whole
    /// events); otherwise `None`: the chunk passes unchanged.
    pub fn feed(&mut self, chunk: &[u8]) -> Option<Bytes> {
        let mut out = self.hide_usage_chunk.then(BytesMut::new);
        let mut rest = chunk;
        while !rest.is_empty() {
            let (piece, ends_line) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..=i], true),
                None => (rest, false),
            };
            rest = &rest[piece.len()..];
            if let Some(out) = out.as_mut() {
                self.event.extend_from_slice(piece);
                let _ = out;
            }
            if self.line.len() + piece.len() > SSE_LINE_LIMIT {
                self.line.clear();
                self.line_too_long = true;
            } else if !self.line_too_long {
                self.line.extend_from_slice(piece);
            }
            if !ends_line {
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let too_long = std::mem::replace(&mut self.line_too_long, false);
            let text = trim_eol(&line);
            let effect = match too_long {
                true => LineEffect::Pass,
                false => self.read_line(text),
            };
            match effect {
                LineEffect::Pass => {}
                LineEffect::HideEvent => self.event_hidden = true,
                LineEffect::DropNullUsage => {
                    // The whole line is the end of the event so far.
                    if let Some(kept) = without_null_usage(text)
                        && let Some(start) = self.event.len().checked_sub(line.len())
                    {
                        let eol = &line[text.len()..];
                        self.event.truncate(start);
                        self.event.extend_from_slice(&kept);
                        self.event.extend_from_slice(eol);
                    }
                }
            }
            if text.is_empty()
                && let Some(out) = out.as_mut()
            {
                let event = self.event.split();
                if !std::mem::replace(&mut self.event_hidden, false) {
                    out.extend_from_slice(&event);
                }
            }
            self.line = line;
            self.line.clear();
        }
        out.map(BytesMut::freeze)
    }

    /// What is left of an event the stream ended in (when hiding the usage chunk).
    pub fn flush(&mut self) -> Option<Bytes> {
        if self.event.is_empty() || self.event_hidden {
            return None;
        }
        Some(self.event.split().freeze())
    }

    /// Reads one line, and says what hiding the usage chunk does to it.
    fn read_line(&mut self, line: &[u8]) -> LineEffect {
        let Some(data) = line.strip_prefix(b"data:") else {
            return LineEffect::Pass;
        };
        let data = data.strip_prefix(b" ").unwrap_or(data);
        if data == b"[DONE]" {
            self.done = true;
            return LineEffect::Pass;
        }
        if self.model.is_none() && self.model_looks < MODEL_LOOKS {
            self.model_looks += 1;
            self.model = model_of(data);
        }
        let Ok(chunk) = serde_json::from_slice::<Chunk>(data) else {
            return LineEffect::Pass;
        };
        let null_usage = matches!(chunk.usage, Some(Value::Null));
        let usage = chunk
            .usage
            .as_ref()
            .filter(|u| !u.is_null())
            .or(chunk.response.as_ref().and_then(|r| r.usage.as_ref()))
            .filter(|u| !u.is_null());
        if let Some(u) = usage {
            self.usage = Some(usage_of(u));
        }
        for choice in chunk.choices.iter().flatten() {
            let content = choice.delta.as_ref().and_then(|d| d.content);
            if let Some(TextLen(len)) = content.or(choice.text)
                && len > 0
            {
                self.seen_completion += delta_tokens(len);
            }
        }
        if chunk.kind.as_deref() == Some("response.output_text.delta")
            && let Some(TextLen(len)) = chunk.delta
            && len > 0
        {
            self.seen_completion += delta_tokens(len);
        }
        if !self.hide_usage_chunk {
            LineEffect::Pass
        } else if usage.is_some() && chunk.choices.is_some_and(|c| c.is_empty()) {
            LineEffect::HideEvent
        } else if null_usage {
            LineEffect::DropNullUsage
        } else {
            LineEffect::Pass
        }
    }

    /// The usage of the stream, or why it falls back to the estimate (`ended` false: the
    /// stream broke off or the client went away).
    pub fn result(&self, ended: bool) -> Result<Usage, Fallback> {
        match self.usage {
            Some(r) => r,
            None if !ended => Err(Fallback::EndedEarly),
            None => Err(Fallback::NoUsage),
        }
    }

    /// Completion tokens counted from the content deltas seen.
    pub fn seen_completion(&self) -> u64 {
        self.seen_completion
    }

    /// Whether the meter takes out what asking for usage added (so the body is not Azure's).
    pub fn hides_usage_chunk(&self) -> bool {
        self.hide_usage_chunk
    }

    /// The model the stream's first chunks named, if one did.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(v: Value) -> String {
        format!("data: {v}\n\n")
    }

    fn stream(with_usage: bool) -> (String, String) {
        let chunk = |c: &str| {
            event(
                serde_json::json!({"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":c},"finish_reason":null}]}),
            )
        };
        let plain = format!("{}{}", chunk("Hello"), chunk(" world, how are you"));
        let usage = event(
            serde_json::json!({"id":"x","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14,"prompt_tokens_details":{"cached_tokens":2}}}),
        );
        let done = "data: [DONE]\n\n";
        let with = format!(
            "{plain}{}{done}",
            if with_usage { usage } else { String::new() }
        );
        (with, format!("{plain}{done}"))
    }

    #[test]
    fn sse_usage_is_read_across_any_chunk_boundaries() {
        let (with, _) = stream(true);
        for size in [1, 2, 3, 7, 64, with.len()] {
            let mut m = SseMeter::new(false);
            for piece in with.as_bytes().chunks(size) {
                assert!(m.feed(piece).is_none());
            }
            let u = m.result(true).unwrap();
            assert_eq!(
                (u.prompt, u.completion, u.total, u.cached),
                (9, 5, 14, Some(2)),
                "size {size}"
            );
        }
    }

    #[test]
    fn the_injected_usage_chunk_is_hidden_byte_for_byte() {
        let (with, without) = stream(true);
        for size in [1, 5, 13, with.len()] {
            let mut m = SseMeter::new(true);
            let mut seen = Vec::new();
            for piece in with.as_bytes().chunks(size) {
                seen.extend_from_slice(&m.feed(piece).unwrap());
            }
            if let Some(rest) = m.flush() {
                seen.extend_from_slice(&rest);
            }
            assert_eq!(String::from_utf8(seen).unwrap(), without, "size {size}");
            assert_eq!(m.result(true).unwrap().total, 14);
        }
    }

    #[test]
    fn asking_for_usage_adds_nothing_the_client_sees_byte_for_byte() {
        // With include_usage, Azure puts "usage":null in every chunk and adds the usage chunk.
        let chunk = |c: &str, usage: bool| {
            let mut v = serde_json::json!({"choices":[{"delta":{"content":c},"index":0}],"id":"x","object":"chat.completion.chunk"});
            if usage {
                v["usage"] = Value::Null;
            }
            event(v)
        };
        let filter = "data: {\"choices\":[],\"prompt_filter_results\":[],\"usage\":null}\r\n\r\n";
        let filter_plain = "data: {\"choices\":[],\"prompt_filter_results\":[]}\r\n\r\n";
        let usage = event(
            serde_json::json!({"choices":[],"id":"x","usage":{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14}}),
        );
        let asked = format!(
            "{filter}{}{}{usage}data: [DONE]\n\n",
            chunk("Hi \"usage\":null", true),
            chunk("there", true)
        );
        let plain = format!(
            "{filter_plain}{}{}data: [DONE]\n\n",
            chunk("Hi \"usage\":null", false),
            chunk("there", false)
        );
        for size in [1, 3, 17, asked.len()] {
            let mut m = SseMeter::new(true);
            let mut seen = Vec::new();
            for piece in asked.as_bytes().chunks(size) {
                seen.extend_from_slice(&m.feed(piece).unwrap());
            }
            if let Some(rest) = m.flush() {
                seen.extend_from_slice(&rest);
            }
            assert_eq!(String::from_utf8(seen).unwrap(), plain, "size {size}");
            assert_eq!(m.result(true).unwrap().total, 14);
        }
    }

    #[test]
    fn only_a_single_top_level_null_usage_is_taken_out() {
        let strip =
            |s: &str| without_null_usage(s.as_bytes()).map(|v| String::from_utf8(v).unwrap());
        assert_eq!(
            strip(r#"data: {"a":1,"usage":null}"#).unwrap(),
            r#"data: {"a":1}"#
        );
        assert_eq!(
            strip(r#"data: {"usage" : null, "a":1}"#).unwrap(),
            r#"data: {"a":1}"#
        );
        assert_eq!(strip(r#"data: {"usage":null}"#).unwrap(), "data: {}");
        assert_eq!(
            strip(r#"data: {"x":{"usage":null},"s":"\"usage\":null","usage":null}"#).unwrap(),
            r#"data: {"x":{"usage":null},"s":"\"usage\":null"}"#
        );
        assert_eq!(strip(r#"data: {"x":{"usage":null}}"#), None);
        assert_eq!(strip(r#"data: {"usage":{"total_tokens":1}}"#), None);
        assert_eq!(strip(r#"data: {"usage":null,"usage":null}"#), None);
        assert_eq!(strip(r#"data: }}"#), None);
    }

    #[test]
    fn the_trailing_shape_is_cut_without_a_walk_and_only_when_it_is_the_one_usage() {
        let fast = |s: &str| {
            without_trailing_null_usage(s.as_bytes()).map(|v| String::from_utf8(v).unwrap())
        };
        let line = r#"data: {"id":"c","choices":[{"delta":{"content":"hi"}}],"usage":null}"#;
        assert_eq!(
            fast(line).unwrap(),
            r#"data: {"id":"c","choices":[{"delta":{"content":"hi"}}]}"#
        );
        assert_eq!(
            fast(&format!("{line}  ")).unwrap().len(),
            line.len() + 2 - 13
        );
        // Another "usage" anywhere (a nested member, a string): the walk decides.
        for other in [
            r#"data: {"x":{"usage":null},"usage":null}"#,
            r#"data: {"s":""usage"","usage":null}"#,
            r#"data: {"usage":null,"usage":null}"#,
        ] {
            assert_eq!(fast(other), None, "{other}");
        }
        assert_eq!(fast(r#"data: {"usage":null}"#), None);
        assert_eq!(fast(r#"data: {"a":"usage":null}"}"#), None);
        // Whatever the shape, the result is the walk's.
        for line in [
            line,
            r#"data: {"a":1,"usage":null}"#,
            r#"data: {"x":{"usage":null},"s":""usage":null","usage":null}"#,
        ] {
            let walked = walked_without_null_usage(line.as_bytes());
            assert!(walked.is_some(), "{line}");
            assert_eq!(without_null_usage(line.as_bytes()), walked, "{line}");
        }
    }

    #[test]
    fn a_stream_without_usage_counts_its_content_deltas() {
        let (_, without) = stream(false);
        let mut m = SseMeter::new(false);
        m.feed(without.as_bytes());
        assert_eq!(m.result(true), Err(Fallback::NoUsage));
        assert_eq!(m.result(false), Err(Fallback::EndedEarly));
        // "Hello" → 2, " world, how are you" (19 bytes) → 5.
        assert_eq!(m.seen_completion(), 2 + 5);
        let mut m = SseMeter::new(false);
        m.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"\"}}]}\n\ndata: {\"choices\":[{\"text\":\"a\"}]}\n\n");
        assert_eq!(
            m.seen_completion(),
            1,
            "empty deltas count nothing, others at least 1"
        );
        // Content of other types (null, a list of parts, a number) counts nothing and does not
        // stop the chunk's usage being read; escapes count as the text they stand for.
        let mut m = SseMeter::new(false);
        m.feed(b"data: {\"choices\":[{\"delta\":{\"content\":null}},{\"delta\":{\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]}},{\"delta\":{\"content\":7}}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}\n\n");
        assert_eq!(m.seen_completion(), 0);
        assert_eq!(m.result(true).map(|u| u.total), Ok(7));
        let mut m = SseMeter::new(false);
        m.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"\\u00e9\\\"12345\"}}]}\n\n");
        assert_eq!(m.seen_completion(), 2, "\u{e9}\\\"12345 is 8 bytes");
    }

    #[test]
    fn a_streams_model_is_read_from_the_first_chunk_naming_one_without_changing_a_byte() {
        // Azure's first chunk (the prompt filter results) names no model.
        let filter = event(
            serde_json::json!({"choices":[],"model":"","prompt_filter_results":[],"usage":null}),
        );
        let chunk = |model: &str, c: &str| {
            event(
                serde_json::json!({"choices":[{"delta":{"content":c},"index":0}],"model":model,"usage":null}),
            )
        };
        let usage = event(
            serde_json::json!({"choices":[],"model":"gpt-4o-2024-08-06","usage":{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14}}),
        );
        let stream = format!(
            "{filter}{}{}{usage}data: [DONE]\n\n",
            chunk("gpt-4o-2024-08-06", "Hi"),
            chunk("another", "there")
        );
        for size in [1, 7, stream.len()] {
            let mut m = SseMeter::new(false);
            for piece in stream.as_bytes().chunks(size) {
                assert!(m.feed(piece).is_none(), "the bytes pass untouched");
            }
            assert_eq!(m.model(), Some("gpt-4o-2024-08-06"), "size {size}");
            assert_eq!(m.result(true).map(|u| u.total), Ok(14));
        }
        let mut m = SseMeter::new(true);
        let mut seen = m.feed(stream.as_bytes()).unwrap().to_vec();
        seen.extend(m.flush().unwrap_or_default());
        assert!(!String::from_utf8(seen).unwrap().contains("prompt_tokens"));
        assert_eq!(m.model(), Some("gpt-4o-2024-08-06"));

        // The Responses API names it in its `response`.
        let mut m = SseMeter::new(false);
        m.feed(b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"model\":\"gpt-4o-mini\"}}\n\n");
        assert_eq!(m.model(), Some("gpt-4o-mini"));

        // A `model` of another type, or named twice, is not read, and the chunk still is.
        let mut m = SseMeter::new(false);
        m.feed(b"data: {\"model\":1,\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"total_tokens\":2}}\n\ndata: {\"model\":\"a\",\"model\":\"b\",\"choices\":[{\"text\":\"x\"}]}\n\n");
        assert_eq!(m.model(), None);
        assert_eq!(m.result(true).map(|u| u.total), Ok(2));
        assert_eq!(m.seen_completion(), 1);

        // Only the first chunks are looked at.
        let mut m = SseMeter::new(false);
        for _ in 0..MODEL_LOOKS {
            m.feed(b"data: {\"choices\":[]}\n\n");
        }
        m.feed(b"data: {\"model\":\"late\"}\n\n");
        assert_eq!(m.model(), None);
    }

    #[test]
    fn responses_streams_carry_usage_in_the_completed_event() {
        let s = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\nevent: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":1,\"total_tokens\":4}}}\n\n";
        let mut m = SseMeter::new(false);
        m.feed(s.as_bytes());
        assert_eq!(m.result(true).map(|u| u.total), Ok(4));
        assert_eq!(m.seen_completion(), 1);
    }
}
