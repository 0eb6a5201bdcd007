//! Usage metering of Azure's answers (`sse_usage`, `json_usage`): the bytes go through
//! `metering::Meter` in arbitrary chunks, as the answer body does, and what the client
//! gets and the usage read are compared with a reference written here from the documented rules.
//!
//! The rules, for a stream metered with the usage-only chunk hidden (the proxy asked Azure for
//! `stream_options.include_usage`; the client did not):
//! - the stream is cut into lines after each LF; a line's text is the line without its LF and
//!   one CR before it;
//! - an event is a run of lines ending with an empty one, or the lines left when the stream ends;
//! - a line is read when it ends with an LF, is at most 1 MiB, starts with `data:` and the rest
//!   (without one leading space) is not `[DONE]` and is a *chunk*: a JSON object in which the
//!   fields the meter reads (`choices`, `usage`, `type`, `delta`, `response`) each appear at most
//!   once and have the types a chunk has (`choices` an array of objects, each with at most one
//!   `delta` (an object with at most one `content`) and one `text`; `type` a string;
//!   `response` an object with at most one `usage`; any of them may be null), other fields
//!   being ignored;
//! - a read line's usage is its `usage`, else its `response.usage`, whichever is not null;
//! - an event is hidden when one of its read lines has usage and `"choices": []`;
//! - the client gets every event that is not hidden, byte for byte and in order, each as soon
//!   as its empty line has arrived; the rest of an unfinished event when the stream ends.
//!
//! Without hiding, the client gets every byte as it arrives, untouched. Either way the usage is
//! that of the last read line with usage, read as [`reference_usage`] says; with none, there is
//! no usage (`NoUsage`, or `EndedEarly` when the stream broke off).

use entra_proxy::metering::{Fallback, JSON_TEE_LIMIT, Meter, Usage};
use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use std::fmt;

/// Longest SSE line the meter reads (its `SSE_LINE_LIMIT`).
const SSE_LINE_LIMIT: usize = 1024 * 1024;

/// What a `usage` object says, read independently of the product: `prompt_tokens` (else
/// `input_tokens`), `completion_tokens` (else `output_tokens`), `total_tokens` (else prompt +
/// completion, saturating), each the first that is not null and then a non-negative integer;
/// `cached_tokens` / `reasoning_tokens` under `prompt_tokens_details` / `input_tokens_details`
/// and `completion_tokens_details` / `output_tokens_details`. Malformed when `usage` is not an
/// object, a count is not a u64, or there is neither a prompt nor a total.
pub fn reference_usage(usage: &Value) -> Result<Usage, Fallback> {
    let bad = Fallback::MalformedUsage;
    let map = usage.as_object().ok_or(bad)?;
    let count = |v: &Value| v.as_u64().ok_or(bad);
    let first = |names: [&str; 2]| -> Result<Option<u64>, Fallback> {
        match names
            .iter()
            .find_map(|n| map.get(*n).filter(|v| !v.is_null()))
        {
            Some(v) => count(v).map(Some),
            None => Ok(None),
        }
    };
    let detail = |outer: [&str; 2], inner: &str| -> Result<Option<u64>, Fallback> {
        let found = outer.iter().find_map(|o| {
            map.get(*o)
                .and_then(|d| d.as_object())
                .and_then(|d| d.get(inner))
                .filter(|v| !v.is_null())
        });
        match found {
            Some(v) => count(v).map(Some),
            None => Ok(None),
        }
    };
    let prompt = first(["prompt_tokens", "input_tokens"])?;
    let completion = first(["completion_tokens", "output_tokens"])?;
    let total = match map.get("total_tokens").filter(|v| !v.is_null()) {
        Some(v) => Some(count(v)?),
        None => None,
    };
    if prompt.is_none() && total.is_none() {
        return Err(bad);
    }
    let (p, c) = (prompt.unwrap_or(0), completion.unwrap_or(0));
    Ok(Usage {
        prompt: p,
        completion: c,
        total: total.unwrap_or(p.saturating_add(c)),
        cached: detail(
            ["prompt_tokens_details", "input_tokens_details"],
            "cached_tokens",
        )?,
        reasoning: detail(
            ["completion_tokens_details", "output_tokens_details"],
            "reasoning_tokens",
        )?,
    })
}

// --- The chunk shape, as the rules above state it: objects only, no field read twice. ---

/// Reads an object's fields: those named in `known` at most once each (by `read`, with their
/// index), any other ignored unparsed.
fn fields<'de, A: MapAccess<'de>>(
    mut map: A,
    known: &[&str],
    mut read: impl FnMut(usize, &mut A) -> Result<(), A::Error>,
) -> Result<(), A::Error> {
    let mut seen = vec![false; known.len()];
    while let Some(key) = map.next_key::<String>()? {
        match known.iter().position(|k| *k == key) {
            Some(i) if seen[i] => return Err(serde::de::Error::custom("a field read twice")),
            Some(i) => {
                seen[i] = true;
                read(i, &mut map)?;
            }
            None => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    Ok(())
}

/// `impl Deserialize` for a struct read from a JSON object only, through [`fields`].
macro_rules! object {
    ($ty:ident { $($name:literal => $field:ident),* $(,)? }) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("an object")
                    }
                    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<$ty, A::Error> {
                        let mut out = $ty::default();
                        let names = [$($name),*];
                        fields(map, &names, |i, map| {
                            let mut at = 0;
                            $(
                                if i == at {
                                    out.$field = map.next_value()?;
                                }
                                at += 1;
                            )*
                            let _ = at;
                            Ok(())
                        })?;
                        Ok(out)
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}

/// A `data:` payload the meter reads.
#[derive(Default)]
struct RefChunk {
    choices: Option<Vec<RefChoice>>,
    usage: Option<Value>,
    kind: Option<String>,
    delta: Option<Value>,
    response: Option<RefResponse>,
}
object!(RefChunk { "choices" => choices, "usage" => usage, "type" => kind, "delta" => delta, "response" => response });

#[derive(Default)]
struct RefChoice {
    delta: Option<RefDelta>,
    text: Option<Value>,
}
object!(RefChoice { "delta" => delta, "text" => text });

#[derive(Default)]
struct RefDelta {
    content: Option<Value>,
}
object!(RefDelta { "content" => content });

#[derive(Default)]
struct RefResponse {
    usage: Option<Value>,
}
object!(RefResponse { "usage" => usage });

// Serde's derived readers also take a struct written as an array of its fields in order, and
// so does the meter: `[[],{"total_tokens":1},null,null,null]` is read as a usage-only chunk,
// `"response":[{…}]` as a response with that usage, a choice `[{"content":"…"},null]` as a
// delta. Azure never writes chunks so, and the documented rule speaks of objects; this known
// difference is not fixed in the meter, so the reference accepts it, through the same derived
// shape, where the object-only reading fails.

#[derive(Deserialize)]
struct SeqChunk {
    choices: Option<Vec<SeqChoice>>,
    usage: Option<Value>,
    #[serde(rename = "type")]
    kind: Option<String>,
    delta: Option<Value>,
    response: Option<SeqResponse>,
}

#[derive(Deserialize)]
struct SeqChoice {
    delta: Option<SeqDelta>,
    text: Option<Value>,
}

#[derive(Deserialize)]
struct SeqDelta {
    content: Option<Value>,
}

#[derive(Deserialize)]
struct SeqResponse {
    usage: Option<Value>,
}

impl From<SeqChunk> for RefChunk {
    fn from(c: SeqChunk) -> RefChunk {
        RefChunk {
            choices: c.choices.map(|cs| {
                cs.into_iter()
                    .map(|c| RefChoice {
                        delta: c.delta.map(|d| RefDelta { content: d.content }),
                        text: c.text,
                    })
                    .collect()
            }),
            usage: c.usage,
            kind: c.kind,
            delta: c.delta,
            response: c.response.map(|r| RefResponse { usage: r.usage }),
        }
    }
}

/// Tokens a content delta counts for: a quarter of its bytes, rounded up, at least 1.
fn delta_tokens(s: &str) -> u64 {
    (s.len() as u64).div_ceil(4).max(1)
}

/// What the reference makes of one line's text.
#[derive(Default)]
struct LineRead {
    usage: Option<Result<Usage, Fallback>>,
    hide: bool,
    seen: u64,
}

fn read_line(text: &[u8]) -> LineRead {
    let mut out = LineRead::default();
    let Some(data) = text.strip_prefix(b"data:") else {
        return out;
    };
    let data = data.strip_prefix(b" ").unwrap_or(data);
    if data == b"[DONE]" {
        return out;
    }
    let chunk = match serde_json::from_slice::<RefChunk>(data) {
        Ok(chunk) => chunk,
        // The known difference above: read as the meter reads it.
        Err(_) => match serde_json::from_slice::<SeqChunk>(data) {
            Ok(chunk) => chunk.into(),
            Err(_) => return out,
        },
    };
    let usage = chunk
        .usage
        .as_ref()
        .or(chunk.response.as_ref().and_then(|r| r.usage.as_ref()));
    out.usage = usage.map(reference_usage);
    out.hide = usage.is_some() && chunk.choices.as_ref().is_some_and(Vec::is_empty);
    for c in chunk.choices.iter().flatten() {
        let content = c.delta.as_ref().and_then(|d| d.content.as_ref());
        if let Some(Value::String(s)) = content.or(c.text.as_ref())
            && !s.is_empty()
        {
            out.seen += delta_tokens(s);
        }
    }
    if chunk.kind.as_deref() == Some("response.output_text.delta")
        && let Some(Value::String(s)) = &chunk.delta
    {
        out.seen += delta_tokens(s);
    }
    out
}

/// One event of a stream: its bytes' end, whether it is complete and hidden.
struct Event {
    end: usize,
    complete: bool,
    hidden: bool,
}

/// The reference reading of a whole stream.
struct Reference {
    events: Vec<Event>,
    usage: Option<Result<Usage, Fallback>>,
    seen: u64,
}

fn reference(stream: &[u8]) -> Reference {
    let mut r = Reference {
        events: Vec::new(),
        usage: None,
        seen: 0,
    };
    let mut at = 0;
    let mut hidden = false;
    while at < stream.len() {
        let Some(lf) = stream[at..].iter().position(|b| *b == b'\n') else {
            r.events.push(Event {
                end: stream.len(),
                complete: false,
                hidden,
            });
            return r;
        };
        let line = &stream[at..=at + lf];
        at += lf + 1;
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if line.len() <= SSE_LINE_LIMIT {
            let read = read_line(text);
            if read.usage.is_some() {
                r.usage = read.usage;
            }
            r.seen += read.seen;
            hidden |= read.hide;
        }
        if text.is_empty() {
            r.events.push(Event {
                end: at,
                complete: true,
                hidden: std::mem::take(&mut hidden),
            });
        }
    }
    if r.events.last().map_or(0, |e| e.end) < stream.len() {
        r.events.push(Event {
            end: stream.len(),
            complete: false,
            hidden,
        });
    }
    r
}

/// What the client has been given once `fed` bytes of `stream` went through (`ended`: and the
/// stream ended).
fn expected(stream: &[u8], events: &[Event], fed: usize, ended: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = 0;
    for e in events {
        let whole = e.complete && e.end <= fed || ended && e.end <= fed;
        if !whole {
            break;
        }
        if !e.hidden {
            out.extend_from_slice(&stream[start..e.end]);
        }
        start = e.end;
    }
    out
}

/// Chunk lengths from the split field: each byte `b` is a chunk of `b - 1` bytes (NUL ends the
/// field), used in turn; what is left after a round that took nothing is one last chunk.
fn chunks<'a>(splits: &[u8], mut rest: &'a [u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    if splits.is_empty() {
        out.push(rest);
        return out;
    }
    'rounds: loop {
        let mut took = 0;
        for b in splits {
            if rest.is_empty() {
                break 'rounds;
            }
            let n = usize::from(b.saturating_sub(1)).min(rest.len());
            out.push(&rest[..n]);
            rest = &rest[n..];
            took += n;
            if out.len() > 4096 {
                break 'rounds;
            }
        }
        if took == 0 {
            break;
        }
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// What the answer body gives the client for one data frame (`Metered::poll_frame`): the frame
/// itself when the meter leaves it, else what the meter returns (nothing when empty).

/// When the proxy asked for usage it also removes the `"usage":null` member Azure then adds to
/// every chunk (README, "Token usage and limits"). Both sides are compared with every such
/// member taken out, so the rest of every byte is still checked.
fn without_null_usage(bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut rest: &str = &text;
    while let Some(i) = rest.find("\"usage\"") {
        let after = &rest[i + 7..];
        let trimmed = after.trim_start();
        if let Some(v) = trimmed.strip_prefix(':')
            && let Some(tail) = v.trim_start().strip_prefix("null")
        {
            let head = out.len();
            out.push_str(&rest[..i]);
            let t = out[head..].trim_end().len() + head;
            if out[..t].ends_with(',') {
                // After another member: the comma before it goes, with the blanks between.
                out.truncate(t - 1);
                rest = tail;
            } else {
                // The first member: blanks before it stay; a comma after it goes, with the
                // blanks that follow that comma (as the proxy removes it).
                rest = match tail.trim_start().strip_prefix(',') {
                    Some(after) => after.trim_start(),
                    None => tail,
                };
            }
        } else {
            out.push_str(&rest[..i + 7]);
            rest = after;
        }
    }
    out.push_str(rest);
    out.into_bytes()
}

fn pass(meter: &mut Meter, frame: &[u8], client: &mut Vec<u8>) {
    match meter.feed(frame) {
        None => client.extend_from_slice(frame),
        Some(out) => client.extend_from_slice(&out),
    }
}

const SSE_TYPES: [&str; 4] = [
    "text/event-stream",
    "text/event-stream; charset=utf-8",
    " Text/Event-Stream ",
    "text/event-stream;charset=UTF-8",
];

/// `sse_usage`: selector (bit 0: the proxy injected `include_usage`, so the usage-only chunk is
/// hidden; bits 1-2: the content type's spelling), then the split field, then the stream.
pub fn check_sse(data: &[u8]) {
    let (sel, f) = crate::split(data, 1, 2);
    let hide = sel[0] & 1 == 1;
    let content_type = SSE_TYPES[usize::from(sel[0] >> 1) % SSE_TYPES.len()];
    let stream = f[1];
    let mut meter = Meter::for_content_type(content_type, hide).expect("SSE is metered");
    assert!(matches!(meter, Meter::Sse(_)), "{content_type} read as SSE");
    assert_eq!(meter.rewrites(), hide);
    let r = reference(stream);
    let mut client = Vec::new();
    let mut fed = 0;
    for frame in chunks(f[0], stream) {
        let before = client.len();
        pass(&mut meter, frame, &mut client);
        fed += frame.len();
        if hide {
            assert_eq!(
                without_null_usage(&client),
                without_null_usage(&expected(stream, &r.events, fed, false)),
                "after {fed} bytes, the client has other bytes than the whole events not hidden"
            );
        } else {
            assert_eq!(&client[before..], frame, "a frame passed changed");
        }
    }
    if let Meter::Sse(s) = &mut meter
        && let Some(rest) = s.flush()
    {
        assert!(hide, "flush gave bytes while nothing is hidden");
        client.extend_from_slice(&rest);
    }
    if hide {
        assert_eq!(
            without_null_usage(&client),
            without_null_usage(&expected(stream, &r.events, stream.len(), true))
        );
    } else {
        assert_eq!(client, stream, "the client got other bytes than Azure sent");
    }
    let (usage, seen) = meter.result(true);
    assert_eq!(
        usage,
        r.usage.unwrap_or(Err(Fallback::NoUsage)),
        "usage at the end"
    );
    assert_eq!(seen, r.seen, "completion tokens counted from the deltas");
    let (broken, _) = meter.result(false);
    assert_eq!(
        broken,
        r.usage.unwrap_or(Err(Fallback::EndedEarly)),
        "usage of a broken stream"
    );
}

const JSON_TYPES: [&str; 4] = [
    "application/json",
    "application/json; charset=utf-8",
    " Application/JSON",
    "application/json;odata=minimalmetadata",
];

/// `json_usage`: selector (bit 0: include_usage was injected — it changes nothing for JSON;
/// bits 1-2: the content type's spelling; bits 3-7 all set: the body comes after 1 MiB of
/// whitespace, so it is too large to read), then the split field, then the body.
pub fn check_json(data: &[u8]) {
    let (sel, f) = crate::split(data, 1, 2);
    let hide = sel[0] & 1 == 1;
    let content_type = JSON_TYPES[usize::from(sel[0] >> 1) % JSON_TYPES.len()];
    let padded;
    let body = if sel[0] & 0xf8 == 0xf8 {
        padded = [&vec![b' '; JSON_TEE_LIMIT][..], f[1]].concat();
        &padded[..]
    } else {
        f[1]
    };
    let mut meter = Meter::for_content_type(content_type, hide).expect("JSON is metered");
    assert!(
        matches!(meter, Meter::Json { .. }),
        "{content_type} read as JSON"
    );
    assert!(!meter.rewrites());
    let mut client = Vec::new();
    for frame in chunks(f[0], body) {
        assert!(
            meter.feed(frame).is_none(),
            "a JSON answer is never rewritten"
        );
        client.extend_from_slice(frame);
    }
    assert_eq!(client, body);
    let expected = if body.len() > JSON_TEE_LIMIT {
        Err(Fallback::TooLarge)
    } else {
        match serde_json::from_slice::<Value>(body) {
            Err(_) => Err(Fallback::NotJson),
            Ok(v) => match v.as_object().and_then(|o| o.get("usage")) {
                None | Some(Value::Null) => Err(Fallback::NoUsage),
                Some(u) => reference_usage(u),
            },
        }
    };
    assert_eq!(meter.result(true), (expected, 0), "usage of the answer");
    let broken = match expected {
        Err(Fallback::TooLarge) => Err(Fallback::TooLarge),
        _ => Err(Fallback::EndedEarly),
    };
    assert_eq!(meter.result(false), (broken, 0), "usage of a broken answer");
}
