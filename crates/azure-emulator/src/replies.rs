//! The bodies of successful data-plane answers: chat, completions, embeddings, responses, lists.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::keys::now_unix;

/// Floats per embedding vector.
const EMBEDDING_DIMENSIONS: usize = 8;
/// How much of the caller's text the reply echoes.
const ECHO_CHARS: usize = 80;
const FINGERPRINT: &str = "fp_emulator";

/// `created` of every answer when ids are stable ([`crate::EmulatorConfig::stable_ids`]).
pub(crate) const STABLE_CREATED: i64 = 1_700_000_000;

/// What the emulator answers to one request: the text and its token counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) text: String,
    pub(crate) prompt_tokens: u64,
    pub(crate) completion_tokens: u64,
    /// Ids and `created` follow from the text instead of being fresh, so two answers to the
    /// same prompt are the same bytes.
    pub(crate) stable: bool,
}

impl Reply {
    /// The reply to `prompt` (the caller's text, if any) from `deployment`.
    pub(crate) fn new(deployment: &str, prompt: &str) -> Reply {
        let prompt = prompt.trim();
        let text = if prompt.is_empty() {
            format!("Hello! This is the Azure emulator answering on deployment {deployment}.")
        } else {
            let echo: String = prompt.chars().take(ECHO_CHARS).collect();
            let more = if prompt.chars().count() > ECHO_CHARS {
                "…"
            } else {
                ""
            };
            format!(
                "Hello! This is the Azure emulator answering on deployment {deployment}. You said: {echo}{more}"
            )
        };
        Reply {
            completion_tokens: count_u64(text.split_whitespace().count()),
            prompt_tokens: estimate_tokens(prompt),
            text,
            stable: false,
        }
    }

    /// The same reply with stable ids (or fresh ones).
    pub(crate) fn with_stable_ids(mut self, stable: bool) -> Reply {
        self.stable = stable;
        self
    }

    /// An id with `prefix`: fresh, or derived from the text when stable.
    fn id(&self, prefix: &str) -> String {
        if self.stable {
            let digest = Sha256::digest(self.text.as_bytes());
            let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
            format!("{prefix}{hex}")
        } else {
            format!("{prefix}{}", short_id())
        }
    }

    /// Unix seconds: now, or [`STABLE_CREATED`] when stable.
    fn created(&self) -> i64 {
        if self.stable {
            STABLE_CREATED
        } else {
            now_unix()
        }
    }

    fn usage(&self) -> Value {
        json!({
            "completion_tokens": self.completion_tokens,
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }

    /// The text cut into `n` pieces (some may be empty) that concatenate back to it.
    pub(crate) fn pieces(&self, n: usize) -> Vec<String> {
        let n = n.max(1);
        let words: Vec<&str> = self.text.split_inclusive(' ').collect();
        (0..n)
            .map(|i| words[i * words.len() / n..(i + 1) * words.len() / n].concat())
            .collect()
    }
}

/// The caller's text in a chat request: the last user message.
pub(crate) fn chat_prompt(request: &Value) -> String {
    request["messages"]
        .as_array()
        .and_then(|messages| {
            messages
                .iter()
                .rev()
                .find(|m| m["role"] == "user")
                .map(|m| content_text(&m["content"]))
        })
        .unwrap_or_default()
}

/// The caller's text in a completions request.
pub(crate) fn completion_prompt(request: &Value) -> String {
    match &request["prompt"] {
        Value::Array(items) => items.first().map(content_text).unwrap_or_default(),
        other => content_text(other),
    }
}

/// The caller's text in a Responses request: `input` as text or as messages.
pub(crate) fn responses_prompt(request: &Value) -> String {
    match &request["input"] {
        Value::Array(items) => items
            .iter()
            .rev()
            .find(|m| m["role"] == "user" || m["type"] == "input_text")
            .map(|m| {
                if m["type"] == "input_text" {
                    content_text(&m["text"])
                } else {
                    content_text(&m["content"])
                }
            })
            .unwrap_or_default(),
        other => content_text(other),
    }
}

/// Text of a string or of an array of `{type, text}` parts.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str().or(p.as_str()))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

pub(crate) fn chat_completion(deployment: &str, reply: &Reply) -> Value {
    json!({
        "choices": [{
            "finish_reason": "stop",
            "index": 0,
            "logprobs": null,
            "message": { "content": reply.text, "refusal": null, "role": "assistant" },
        }],
        "created": reply.created(),
        "id": reply.id("chatcmpl-"),
        "model": deployment,
        "object": "chat.completion",
        "system_fingerprint": FINGERPRINT,
        "usage": reply.usage(),
    })
}

/// `n` `chat.completion.chunk` events, then `[DONE]`. With `include_usage`
/// (`stream_options.include_usage`), as Azure does: every chunk carries `"usage":null` and a
/// last chunk with `"choices":[]` carries the usage.
pub(crate) fn chat_events(
    deployment: &str,
    reply: &Reply,
    n: usize,
    include_usage: bool,
) -> Vec<Bytes> {
    let id = reply.id("chatcmpl-");
    let created = reply.created();
    let pieces = reply.pieces(n);
    let last = pieces.len().saturating_sub(1);
    let mut events: Vec<Bytes> = pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let mut delta = json!({ "content": piece });
            if i == 0 {
                delta["role"] = json!("assistant");
            }
            let mut chunk = json!({
                "choices": [{
                    "delta": delta,
                    "finish_reason": if i == last { json!("stop") } else { Value::Null },
                    "index": 0,
                    "logprobs": null,
                }],
                "created": created,
                "id": id,
                "model": deployment,
                "object": "chat.completion.chunk",
                "system_fingerprint": FINGERPRINT,
            });
            if include_usage {
                chunk["usage"] = Value::Null;
            }
            data_event(&chunk)
        })
        .collect();
    if include_usage {
        events.push(data_event(&json!({
            "choices": [],
            "created": created,
            "id": id,
            "model": deployment,
            "object": "chat.completion.chunk",
            "system_fingerprint": FINGERPRINT,
            "usage": reply.usage(),
        })));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

pub(crate) fn completion(deployment: &str, reply: &Reply) -> Value {
    json!({
        "choices": [{ "finish_reason": "stop", "index": 0, "logprobs": null, "text": reply.text }],
        "created": reply.created(),
        "id": reply.id("cmpl-"),
        "model": deployment,
        "object": "text_completion",
        "usage": reply.usage(),
    })
}

/// `n` `text_completion` events, then `[DONE]`; `include_usage` as in [`chat_events`].
pub(crate) fn completion_events(
    deployment: &str,
    reply: &Reply,
    n: usize,
    include_usage: bool,
) -> Vec<Bytes> {
    let id = reply.id("cmpl-");
    let created = reply.created();
    let pieces = reply.pieces(n);
    let last = pieces.len().saturating_sub(1);
    let mut events: Vec<Bytes> = pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let mut chunk = json!({
                "choices": [{
                    "finish_reason": if i == last { json!("stop") } else { Value::Null },
                    "index": 0,
                    "logprobs": null,
                    "text": piece,
                }],
                "created": created,
                "id": id,
                "model": deployment,
                "object": "text_completion",
            });
            if include_usage {
                chunk["usage"] = Value::Null;
            }
            data_event(&chunk)
        })
        .collect();
    if include_usage {
        events.push(data_event(&json!({
            "choices": [],
            "created": created,
            "id": id,
            "model": deployment,
            "object": "text_completion",
            "usage": reply.usage(),
        })));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

/// Embeddings for every input, or the reason the request is invalid.
pub(crate) fn embeddings(deployment: &str, request: &Value) -> Result<Value, String> {
    let inputs: Vec<String> = match &request["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if items.is_empty() => {
            return Err("'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.".to_owned());
        }
        Value::Array(items) if items.iter().all(Value::is_number) => {
            vec![Value::Array(items.clone()).to_string()]
        }
        Value::Array(items) => items.iter().map(Value::to_string).collect(),
        Value::Null => return Err("'input' is a required property".to_owned()),
        _ => {
            return Err("'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.".to_owned());
        }
    };
    let base64 = request["encoding_format"] == "base64";
    let prompt_tokens: u64 = inputs.iter().map(|i| estimate_tokens(i)).sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = embedding_vector(input);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    Ok(json!({
        "object": "list",
        "data": data,
        "model": deployment,
        "usage": { "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens },
    }))
}

/// A unit-length-ish vector, stable for an input.
fn embedding_vector(input: &str) -> Vec<f32> {
    Sha256::digest(input.as_bytes())
        .iter()
        .take(EMBEDDING_DIMENSIONS)
        .map(|b| (f32::from(*b) / 255.0 * 2.0 - 1.0) * 0.35)
        .collect()
}

/// A Responses API `response` object with the given status and text.
fn response_object(id: &str, msg_id: &str, deployment: &str, reply: &Reply, done: bool) -> Value {
    let output = if done {
        json!([{
            "type": "message",
            "id": msg_id,
            "status": "completed",
            "role": "assistant",
            "content": [{ "type": "output_text", "text": reply.text, "annotations": [] }],
        }])
    } else {
        json!([])
    };
    let usage = if done {
        json!({
            "input_tokens": reply.prompt_tokens,
            "output_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        })
    } else {
        Value::Null
    };
    json!({
        "id": id,
        "object": "response",
        "created_at": now_unix(),
        "status": if done { "completed" } else { "in_progress" },
        "model": deployment,
        "output": output,
        "usage": usage,
    })
}

pub(crate) fn response(deployment: &str, reply: &Reply) -> Value {
    response_object(
        &format!("resp_{}", short_id()),
        &format!("msg_{}", short_id()),
        deployment,
        reply,
        true,
    )
}

/// `response.created`, `n` `response.output_text.delta`, `response.completed`.
pub(crate) fn response_events(deployment: &str, reply: &Reply, n: usize) -> Vec<Bytes> {
    let id = format!("resp_{}", short_id());
    let msg_id = format!("msg_{}", short_id());
    let mut seq = 0u64;
    let mut next = || {
        seq += 1;
        seq - 1
    };
    let mut events = vec![named_event(
        "response.created",
        &json!({
            "type": "response.created",
            "sequence_number": next(),
            "response": response_object(&id, &msg_id, deployment, reply, false),
        }),
    )];
    for piece in reply.pieces(n) {
        events.push(named_event(
            "response.output_text.delta",
            &json!({
                "type": "response.output_text.delta",
                "sequence_number": next(),
                "item_id": msg_id,
                "output_index": 0,
                "content_index": 0,
                "delta": piece,
            }),
        ));
    }
    events.push(named_event(
        "response.completed",
        &json!({
            "type": "response.completed",
            "sequence_number": next(),
            "response": response_object(&id, &msg_id, deployment, reply, true),
        }),
    ));
    events
}

/// `GET /openai/deployments`.
pub(crate) fn deployments_list(deployments: &[String]) -> Value {
    let created = now_unix();
    let data: Vec<Value> = deployments
        .iter()
        .map(|d| {
            json!({
                "scale_settings": { "scale_type": "standard" },
                "model": d,
                "owner": "organization-owner",
                "id": d,
                "status": "succeeded",
                "created_at": created,
                "updated_at": created,
                "object": "deployment",
            })
        })
        .collect();
    json!({ "data": data, "object": "list" })
}

/// `GET /openai/v1/models`.
pub(crate) fn models_list(deployments: &[String]) -> Value {
    let created = now_unix();
    let data: Vec<Value> = deployments
        .iter()
        .map(|d| json!({ "id": d, "object": "model", "created": created, "owned_by": "system" }))
        .collect();
    json!({ "object": "list", "data": data })
}

fn data_event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

fn named_event(name: &str, value: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {value}\n\n"))
}

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// About four characters per token, at least one.
fn estimate_tokens(text: &str) -> u64 {
    count_u64(text.chars().count().div_ceil(4).max(1))
}

fn count_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_concatenate_to_the_text_for_any_count() {
        let r = Reply::new("gpt-4o", "hi there");
        for n in [0, 1, 2, 5, 50] {
            let p = r.pieces(n);
            assert_eq!(p.len(), n.max(1));
            assert_eq!(p.concat(), r.text);
        }
        assert!(r.text.contains("You said: hi there"));
    }

    #[test]
    fn chat_stream_has_n_chunks_then_done() {
        let r = Reply::new("d", "");
        let events = chat_events("d", &r, 3, false);
        assert_eq!(events.len(), 4);
        assert_eq!(&events[3][..], b"data: [DONE]\n\n");
        let first: Value = serde_json::from_str(
            std::str::from_utf8(&events[0])
                .unwrap()
                .trim_start_matches("data: "),
        )
        .unwrap();
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chat_events("d", &r, 3, true).len(), 5);
    }

    #[test]
    fn include_usage_adds_null_usage_to_every_chunk_and_a_usage_chunk() {
        let r = Reply::new("d", "count me");
        for events in [
            chat_events("d", &r, 3, true),
            completion_events("d", &r, 3, true),
        ] {
            let data: Vec<Value> = events[..events.len() - 1]
                .iter()
                .map(|e| {
                    serde_json::from_str(
                        std::str::from_utf8(e)
                            .unwrap()
                            .trim_start_matches("data: ")
                            .trim_end(),
                    )
                    .unwrap()
                })
                .collect();
            let (usage, chunks) = data.split_last().unwrap();
            assert!(
                chunks
                    .iter()
                    .all(|c| c["usage"].is_null() && c.get("usage").is_some())
            );
            assert_eq!(usage["choices"], json!([]));
            assert_eq!(
                usage["usage"]["total_tokens"],
                r.prompt_tokens + r.completion_tokens
            );
        }
        for events in [
            chat_events("d", &r, 3, false),
            completion_events("d", &r, 3, false),
        ] {
            assert_eq!(events.len(), 4);
            assert!(
                events
                    .iter()
                    .all(|e| !e.windows(7).any(|w| w == b"\"usage\""))
            );
        }
    }

    #[test]
    fn stable_replies_are_the_same_bytes_for_the_same_prompt() {
        let a = Reply::new("d", "same").with_stable_ids(true);
        let b = Reply::new("d", "same").with_stable_ids(true);
        assert_eq!(
            chat_events("d", &a, 3, false),
            chat_events("d", &b, 3, false)
        );
        assert_eq!(chat_completion("d", &a), chat_completion("d", &b));
        let other = Reply::new("d", "other").with_stable_ids(true);
        assert_ne!(
            chat_completion("d", &a)["id"],
            chat_completion("d", &other)["id"]
        );
        let fresh = Reply::new("d", "same");
        assert_ne!(
            chat_completion("d", &fresh)["id"],
            chat_completion("d", &fresh)["id"]
        );
    }

    #[test]
    fn prompts_are_found_in_each_request_shape() {
        let chat = json!({"messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"q1"}]}]});
        assert_eq!(chat_prompt(&chat), "q1");
        assert_eq!(completion_prompt(&json!({"prompt":["p"]})), "p");
        assert_eq!(responses_prompt(&json!({"input":"i"})), "i");
        assert_eq!(
            responses_prompt(&json!({"input":[{"role":"user","content":"m"}]})),
            "m"
        );
        assert_eq!(chat_prompt(&json!(42)), "");
    }

    #[test]
    fn embeddings_cover_inputs_and_formats() {
        let v = embeddings("e", &json!({"input":["a","b"]})).unwrap();
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        assert_eq!(v["data"][1]["embedding"].as_array().unwrap().len(), 8);
        let v = embeddings("e", &json!({"input":"a","encoding_format":"base64"})).unwrap();
        let raw = STANDARD
            .decode(v["data"][0]["embedding"].as_str().unwrap())
            .unwrap();
        assert_eq!(raw.len(), 8 * 4);
        assert!(embeddings("e", &json!({})).is_err());
        assert!(embeddings("e", &json!({"input": []})).is_err());
        assert!(embeddings("e", &json!({"input": {"x":1}})).is_err());
        assert_eq!(
            embeddings("e", &json!({"input":[1,2,3]})).unwrap()["data"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn response_stream_starts_created_and_ends_completed() {
        let r = Reply::new("d", "x");
        let events = response_events("d", &r, 2);
        assert_eq!(events.len(), 4);
        assert!(events[0].starts_with(b"event: response.created\n"));
        assert!(events[1].starts_with(b"event: response.output_text.delta\n"));
        assert!(events[3].starts_with(b"event: response.completed\n"));
    }
}
