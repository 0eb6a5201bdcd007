//! Which requests may be sent twice: the rule for a connection that Azure reset after the
//! request was sent and before any answer, when Azure may have processed it.
//!
//! Inference calls are safe to repeat: a second send costs at most a second answer, and only
//! the answer the client gets is metered. Calls that create or change state (files, uploads,
//! batches, fine-tuning, assistants, threads, vector stores, a `responses` call that asks to be
//! stored) are not: sending one twice could do it twice. `GET` and `HEAD` change nothing.

use http::Method;

/// Whether a request with this method, upstream path and body may be sent again after Azure
/// may have processed it.
pub(super) fn safe_to_repeat(method: &Method, upstream_path: &str, body: Option<&[u8]>) -> bool {
    if method == Method::GET || method == Method::HEAD {
        return true;
    }
    if method != Method::POST {
        return false;
    }
    let mut segments = upstream_path.rsplit('/').filter(|s| !s.is_empty());
    let (last, before) = (segments.next(), segments.next());
    match (before, last) {
        (_, Some("completions" | "embeddings")) => true,
        (Some("audio"), Some("transcriptions" | "translations" | "speech")) => true,
        (Some("images"), Some("generations" | "edits" | "variations")) => true,
        (_, Some("responses")) => body.is_some_and(|b| !asks_to_store(b)),
        _ => false,
    }
}

/// Whether a Responses API body says `"store": true` (or cannot be read to know).
fn asks_to_store(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Store {
        store: Option<serde_json::Value>,
    }
    !matches!(
        serde_json::from_slice::<Store>(body),
        Ok(Store {
            store: None | Some(serde_json::Value::Bool(false))
        })
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inference_calls_are_safe_to_repeat_and_state_changes_are_not() {
        let post = |path: &str| safe_to_repeat(&Method::POST, path, None);
        for path in [
            "/openai/deployments/gpt-4o/chat/completions",
            "/openai/deployments/gpt-35/completions",
            "/openai/deployments/emb/embeddings",
            "/openai/v1/chat/completions",
            "/openai/deployments/whisper/audio/transcriptions",
            "/openai/deployments/whisper/audio/translations",
            "/openai/deployments/tts/audio/speech",
            "/openai/deployments/dalle/images/generations",
            "/models/chat/completions",
        ] {
            assert!(post(path), "{path}");
        }
        for path in [
            "/openai/files",
            "/openai/uploads",
            "/openai/uploads/u_1/parts",
            "/openai/batches",
            "/openai/fine_tuning/jobs",
            "/openai/assistants",
            "/openai/threads/t_1/runs",
            "/openai/threads/t_1/messages",
            "/openai/vector_stores",
            "/openai/responses/resp_1/cancel",
            "/cognitiveservices/v1",
            "/",
        ] {
            assert!(!post(path), "{path}");
        }
        assert!(safe_to_repeat(&Method::GET, "/openai/files/f_1", None));
        assert!(safe_to_repeat(&Method::HEAD, "/openai/files", None));
        assert!(!safe_to_repeat(&Method::DELETE, "/openai/files/f_1", None));
        assert!(!safe_to_repeat(
            &Method::PUT,
            "/openai/deployments/d/chat/completions",
            None
        ));
    }

    #[test]
    fn a_responses_call_is_safe_unless_it_asks_to_be_stored() {
        let responses = |body: Option<&str>| {
            safe_to_repeat(
                &Method::POST,
                "/openai/v1/responses",
                body.map(str::as_bytes),
            )
        };
        assert!(responses(Some(r#"{"model":"m","input":"hi"}"#)));
        assert!(responses(Some(r#"{"model":"m","store":false}"#)));
        assert!(!responses(Some(r#"{"model":"m","store":true}"#)));
        assert!(!responses(Some(r#"{"store":"yes"}"#)));
        assert!(!responses(Some("not json")));
        // A body not in hand cannot be read, so it is not known to be safe.
        assert!(!responses(None));
    }
}
