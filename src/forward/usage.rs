//! Token usage read from Azure's answers as they pass, never buffering a stream: JSON answers
//! are teed (at most [`JSON_TEE_LIMIT`] bytes) and read at their end; SSE streams are read line
//! by line, whatever the chunk boundaries, and their usage taken from the chunk that carries it
//! (and the `model` from the first chunk naming one).
//! When usage cannot be read, the charge falls back to an estimate: the prompt estimate made
//! before sending ([`estimate_prompt`]) plus, for streams, what the content deltas seen add up to.
//! `Metered` wraps an answer's body, and at its end (or when it is dropped) counts, logs and
//! charges the usage. A realtime WebSocket is metered by `SocketMeter`, which reads the usage
//! of each `response.done` event as the frame passes.

use crate::limits::Admission;
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Largest JSON answer read for its usage; longer ones are charged the estimate.
pub const JSON_TEE_LIMIT: usize = 1024 * 1024;
/// Longest SSE line read; a longer one is passed on unread.
const SSE_LINE_LIMIT: usize = 1024 * 1024;
/// `data:` lines of a stream read for the `model` Azure names, until one names it: Azure names
/// it in its first chunks, and a stream that does not costs no more than this many reads.
const MODEL_LOOKS: u8 = 8;
/// Tokens added per chat message (role and framing) by the prompt estimate.
pub const PER_MESSAGE_TOKENS: u64 = 4;
/// Tokens added per chat request (the reply's priming) by the prompt estimate.
pub const PER_REQUEST_TOKENS: u64 = 3;

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

/// Reads a `usage` object: chat, completions and embeddings (`prompt_tokens`, …) or the
/// Responses API (`input_tokens`, …).
pub fn usage_of(usage: &Value) -> Result<Usage, Fallback> {
    super::usage_scan::Counts::of_value(usage)?.usage()
}

/// The usage of a whole JSON answer: read in one pass without building the document
/// (`forward/usage_scan.rs`), or as a `Value` when that reader hands it back.
pub fn json_usage(body: &[u8]) -> Result<Usage, Fallback> {
    if let Some(usage) = super::usage_scan::json_usage(body) {
        return usage;
    }
    let value: Value = serde_json::from_slice(body).map_err(|_| Fallback::NotJson)?;
    match value.get("usage") {
        None | Some(Value::Null) => Err(Fallback::NoUsage),
        Some(u) => usage_of(u),
    }
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

/// The prompt estimate, made before sending: the bytes of the request's text (chat
/// `messages[].content`, `prompt`, `input`, as strings or text parts) divided by 4, rounded up,
/// plus [`PER_MESSAGE_TOKENS`] per chat message and [`PER_REQUEST_TOKENS`] per chat request.
/// `None` when the body is not a JSON object.
pub fn estimate_prompt(body: &[u8]) -> Option<u64> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    let mut bytes = 0usize;
    let mut overhead = 0u64;
    if let Some(messages) = object.get("messages").and_then(Value::as_array) {
        overhead = PER_REQUEST_TOKENS + PER_MESSAGE_TOKENS * messages.len() as u64;
        for m in messages {
            bytes += text_bytes(m.get("content").unwrap_or(&Value::Null));
        }
    }
    for field in ["prompt", "input"] {
        if let Some(v) = object.get(field) {
            bytes += text_bytes(v);
        }
    }
    Some((bytes as u64).div_ceil(4) + overhead)
}

/// The prompt estimate of a request ([`estimate_prompt`]; 0 without a body read whole): made
/// before sending when a key's tokens are limited, else only if the answer's usage cannot be
/// read — most answers carry theirs, and the estimate parses the whole request body.
#[derive(Debug, Clone)]
pub(super) enum Estimate {
    Made(u64),
    Later(Option<Bytes>),
}

impl Estimate {
    pub(super) fn now(body: Option<&Bytes>) -> Estimate {
        Estimate::Made(body.and_then(|b| estimate_prompt(b)).unwrap_or(0))
    }

    pub(super) fn later(body: Option<&Bytes>) -> Estimate {
        Estimate::Later(body.cloned())
    }

    /// This estimate, to keep while an answer streams: a small body waiting for it as a copy
    /// of its own, so that the connection's read buffer it was read into is free for the next
    /// request.
    pub(super) fn kept(&self) -> Estimate {
        const COPIED_UP_TO: usize = 16 * 1024;
        match self {
            Estimate::Later(Some(b)) if b.len() <= COPIED_UP_TO => {
                Estimate::Later(Some(Bytes::copy_from_slice(b)))
            }
            other => other.clone(),
        }
    }

    /// The estimate if it was made (0 when it waits).
    pub(super) fn made(&self) -> u64 {
        match self {
            Estimate::Made(n) => *n,
            Estimate::Later(_) => 0,
        }
    }

    /// The estimate, made now if it waited.
    pub(super) fn tokens(&self) -> u64 {
        match self {
            Estimate::Made(n) => *n,
            Estimate::Later(body) => Estimate::now(body.as_ref()).made(),
        }
    }
}

/// Bytes of text in a string, an array of strings or text parts, or messages with `content`.
fn text_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Array(items) => items.iter().map(text_bytes).sum(),
        Value::Object(o) => ["text", "content"]
            .iter()
            .filter_map(|k| o.get(*k))
            .map(text_bytes)
            .sum(),
        _ => 0,
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

/// The parts of one SSE `data:` payload the meter reads.
#[derive(Deserialize)]
struct Chunk {
    choices: Option<Vec<Choice>>,
    /// `Some(Value::Null)` for `"usage":null`, `None` when there is no `usage`.
    #[serde(default, deserialize_with = "present")]
    usage: Option<Value>,
    #[serde(rename = "type")]
    kind: Option<String>,
    delta: Option<Value>,
    response: Option<ResponseObject>,
}

#[derive(Deserialize)]
struct Choice {
    delta: Option<Delta>,
    text: Option<Value>,
}

#[derive(Deserialize)]
struct Delta {
    content: Option<Value>,
}

#[derive(Deserialize)]
struct ResponseObject {
    usage: Option<Value>,
}

/// A realtime server event, as far as the meter reads it.
#[derive(Deserialize)]
struct ServerEvent {
    #[serde(rename = "type")]
    kind: Option<String>,
    response: Option<ResponseObject>,
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

/// `line` without its top-level `"usage":null` member (and the comma that joined it), when it
/// has exactly one; `None` otherwise. Strings and nested objects are skipped as JSON reads them.
fn without_null_usage(line: &[u8]) -> Option<Vec<u8>> {
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
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
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

/// Tokens a content delta counts for when a stream has no usage: at least 1.
fn delta_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4).max(1)
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
            let (piece, ends_line) = match rest.iter().position(|b| *b == b'\n') {
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
            let content = choice.delta.as_ref().and_then(|d| d.content.as_ref());
            if let Some(Value::String(s)) = content.or(choice.text.as_ref())
                && !s.is_empty()
            {
                self.seen_completion += delta_tokens(s);
            }
        }
        if chunk.kind.as_deref() == Some("response.output_text.delta")
            && let Some(Value::String(s)) = &chunk.delta
        {
            self.seen_completion += delta_tokens(s);
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

    /// The model the stream's first chunks named, if one did.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

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
        matches!(self, Meter::Sse(s) if s.hide_usage_chunk)
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
    fn response_model(&self) -> Option<String> {
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
            Meter::Sse(s) => s.model.clone(),
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

/// What happens when an answer ends: the labels and log fields of the request, the admission
/// to settle.
pub(super) struct Settle {
    pub(super) admission: Option<Admission>,
    pub(super) estimate: Estimate,
    pub(super) labels: TokenLabels,
    /// The access line's fields from the answer's head (`None` when access lines are off).
    pub(super) log: Option<crate::logging::access::Fields>,
    pub(super) started: std::time::Instant,
    /// The request's server span: gets the usage, and ends with the answer.
    pub(super) trace: crate::telemetry::trace::RequestSpan,
}

/// The `entra_proxy_tokens_total` counters (prompt, completion, total) of one label set, bounded
/// by the config.
pub(super) struct TokenLabels {
    counters: Arc<[metrics::Counter; 3]>,
}

type Charging = Pin<Box<dyn Future<Output = ()> + Send>>;

impl TokenLabels {
    /// The counters of an answer on `route`: labelled with the key's name (or the kind of
    /// caller), and the model and deployment when the config names them (else
    /// `unconfigured`), so the label sets stay bounded by the config. Registered once per
    /// label set and thread, then looked up without allocating.
    pub(super) fn for_route(
        state: &crate::state::Snapshot,
        caller: &crate::inbound::Caller,
        route: &crate::routing::Route,
    ) -> TokenLabels {
        use crate::fast_hash::{FastMap, FastState};
        use crate::inbound::Caller;
        use std::cell::RefCell;
        use std::hash::BuildHasher as _;
        type Cached = (Box<[String; 4]>, Arc<[metrics::Counter; 3]>);
        thread_local! {
            static COUNTERS: RefCell<(FastState, FastMap<u64, Cached>)> =
                RefCell::new((FastState::default(), FastMap::default()));
        }
        let backend = &state.routes.backends()[route.backend];
        let model = match route.model.as_deref() {
            Some(m) if state.routes.model_names().iter().any(|n| n == m) => m,
            Some(_) => "unconfigured",
            None => "",
        };
        let deployment = match route.deployment.as_deref() {
            Some(d) if backend.config.deployments.iter().any(|k| k == d) => d,
            Some(_) => "unconfigured",
            None => "",
        };
        // The `key` label in two parts, so that a key's is not formatted to be looked up.
        let (prefix, name) = match caller {
            Caller::VirtualKey { name, .. } => ("key:", &**name),
            Caller::LegacyKey { name, .. } => ("legacy-key:", &**name),
            Caller::Entra { .. } => ("", "entra"),
            Caller::App(_) => ("", "app"),
            Caller::Anonymous => ("", "anonymous"),
        };
        let labels = [prefix, name, model, deployment, backend.name()];
        let same = |kept: &[String; 4]| {
            kept[0].strip_prefix(prefix) == Some(name)
                && kept[1] == model
                && kept[2] == deployment
                && kept[3] == backend.name()
        };
        let register = || {
            let kept = [
                format!("{prefix}{name}"),
                model.to_string(),
                deployment.to_string(),
                backend.name().to_string(),
            ];
            let counters = ["prompt", "completion", "total"].map(|kind| {
                metrics::counter!(
                    "entra_proxy_tokens_total",
                    "key" => kept[0].clone(),
                    "model" => kept[1].clone(),
                    "deployment" => kept[2].clone(),
                    "backend" => kept[3].clone(),
                    "kind" => kind
                )
            });
            (Box::new(kept), Arc::new(counters))
        };
        let counters = COUNTERS.with(|cell| {
            let (hasher, cache) = &mut *cell.borrow_mut();
            let hash = hasher.hash_one(labels);
            match cache.get(&hash) {
                Some((kept, counters)) if same(kept) => counters.clone(),
                // Another label set with the same hash: registered, not cached.
                Some(_) => register().1,
                None => cache.entry(hash).or_insert_with(register).1.clone(),
            }
        });
        TokenLabels { counters }
    }

    /// Adds `usage` to `entra_proxy_tokens_total`.
    fn count(&self, usage: &Usage) {
        let [prompt, completion, total] = &*self.counters;
        prompt.increment(usage.prompt);
        completion.increment(usage.completion);
        total.increment(usage.total);
    }
}

/// The usage of a realtime WebSocket: each `response.done` Azure sends is read as its frame
/// passes (the frame itself is relayed unchanged), counted in the token metrics and charged to
/// the key at once. A `response.done` whose usage cannot be read is counted in
/// `entra_proxy_usage_estimated_total` and charges nothing: a socket has no prompt estimate.
pub(super) struct SocketMeter {
    /// The socket's admission, charged as responses complete.
    admission: Option<Admission>,
    labels: TokenLabels,
    /// What the socket used so far.
    used: Usage,
    responses: u64,
}

impl SocketMeter {
    pub(super) fn new(admission: Option<Admission>, labels: TokenLabels) -> SocketMeter {
        SocketMeter {
            admission,
            labels,
            used: Usage::default(),
            responses: 0,
        }
    }

    /// Reads one text frame from Azure; counts and charges the usage of a `response.done`.
    pub(super) fn observe(&mut self, frame: &str) {
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
        if let Some(charge) = self
            .admission
            .as_ref()
            .and_then(|a| a.charge(usage.total).pending())
        {
            charge_now_or_later(Box::pin(charge));
        }
    }

    /// What the socket used so far, and in how many responses.
    pub(super) fn used(&self) -> (Usage, u64) {
        (self.used, self.responses)
    }
}

impl Settle {
    /// Counts, logs and returns the charge of an answer that ended (`ended`) or broke off.
    fn settle(self, meter: &Meter, ended: bool) -> Option<Charging> {
        let (result, seen_completion) = meter.result(ended);
        let usage = match result {
            Ok(u) => u,
            Err(reason) => {
                metrics::counter!("entra_proxy_usage_estimated_total", "reason" => reason.name())
                    .increment(1);
                let prompt = self.estimate.tokens();
                Usage {
                    prompt,
                    completion: seen_completion,
                    total: prompt.saturating_add(seen_completion),
                    cached: None,
                    reasoning: None,
                }
            }
        };
        let estimated = result.is_err();
        self.trace.usage(usage.prompt, usage.completion, estimated);
        if self.trace.is_recording()
            && let Some(model) = meter.response_model()
        {
            self.trace.response_model(&model);
        }
        self.labels.count(&usage);
        if let Some(mut line) = self.log {
            line.number("took_ms", self.started.elapsed().as_millis() as u64)
                .number("prompt_tokens", usage.prompt)
                .number("completion_tokens", usage.completion)
                .number("total_tokens", usage.total);
            if let Some(cached) = usage.cached {
                line.number("cached_tokens", cached);
            }
            if let Some(reasoning) = usage.reasoning {
                line.number("reasoning_tokens", reasoning);
            }
            line.flag("usage_estimated", estimated)
                .flag("ended", ended)
                .write("proxied");
        }
        let charge = self.admission?.settle(usage.total).pending()?;
        Some(Box::pin(charge))
    }
}

/// An answer's body, metered as it passes. At its end the usage is counted, logged and charged
/// (the client sees the end once the charge is recorded); when the stream breaks off or the
/// client goes away, what was seen is charged in the background.
pub(super) struct Metered<B: http_body::Body> {
    inner: B,
    meter: Meter,
    settle: Option<Settle>,
    charging: Option<Charging>,
    flushed: bool,
}

impl<B: http_body::Body> Metered<B> {
    pub(super) fn new(inner: B, meter: Meter, settle: Settle) -> Metered<B> {
        Metered {
            inner,
            meter,
            settle: Some(settle),
            charging: None,
            flushed: false,
        }
    }

    fn settle(&mut self, ended: bool) -> Option<Charging> {
        self.settle.take()?.settle(&self.meter, ended)
    }
}

/// Runs a charge that waits for the store (Redis) now when it completes at once, else in the
/// background. A charge in memory is recorded before it would get here.
fn charge_now_or_later(mut charge: Charging) {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    if charge.as_mut().poll(&mut cx).is_pending()
        && let Ok(rt) = tokio::runtime::Handle::try_current()
    {
        rt.spawn(charge);
    }
}

impl<B: http_body::Body> Drop for Metered<B> {
    fn drop(&mut self) {
        // A body whose length is known may be dropped once its last byte was sent.
        let ended = self.inner.is_end_stream();
        if let Some(charge) = self.settle(ended) {
            charge_now_or_later(charge);
        }
    }
}

impl<B> http_body::Body for Metered<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(charging) = this.charging.as_mut() {
                return match charging.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.charging = None;
                        Poll::Ready(None)
                    }
                    Poll::Pending => Poll::Pending,
                };
            }
            if this.settle.is_none() {
                return match Pin::new(&mut this.inner).poll_frame(cx) {
                    // Settled at the last frame: only trailers or the end remain.
                    Poll::Ready(Some(Ok(frame))) if !frame.is_data() => {
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Pending => Poll::Pending,
                    _ => Poll::Ready(None),
                };
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let last = this.inner.is_end_stream();
                    let frame = match frame.into_data() {
                        Ok(data) => match this.meter.feed(&data) {
                            None => http_body::Frame::data(data),
                            Some(out) if out.is_empty() => continue,
                            Some(out) => http_body::Frame::data(out),
                        },
                        Err(frame) => frame,
                    };
                    // The client may not ask again after the last frame of a known length.
                    if last
                        && !this.meter.rewrites()
                        && let Some(charge) = this.settle(true)
                    {
                        charge_now_or_later(charge);
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(Some(Err(e))) => {
                    if let Some(charge) = this.settle(false) {
                        charge_now_or_later(charge);
                    }
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    if !this.flushed {
                        this.flushed = true;
                        if let Meter::Sse(s) = &mut this.meter
                            && let Some(rest) = s.flush()
                        {
                            return Poll::Ready(Some(Ok(http_body::Frame::data(rest))));
                        }
                    }
                    match this.settle(true) {
                        Some(charge) => this.charging = Some(charge),
                        None => return Poll::Ready(None),
                    }
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.settle.is_none() && self.charging.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        if self.meter.rewrites() {
            http_body::SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
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
