//! The body's model: `model` or `session.model` read, and rewritten to the deployment.

use crate::error::ProxyError;
use bytes::Bytes;

/// Where the JSON body names its model: top-level `model`, or `session.model` (GA realtime
/// ephemeral keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ModelField {
    TopLevel,
    InSession,
}

/// The body's top-level `model`, and nothing else of it.
#[derive(serde::Deserialize)]
struct ModelOnly {
    model: Option<serde_json::Value>,
}

/// The body's `session`, and nothing else of it.
#[derive(serde::Deserialize)]
struct SessionOnly {
    session: Option<serde_json::Value>,
}

/// The body's `model` field, for OpenAI-style and v1 paths.
pub(super) fn body_model(path: &str, body: Option<&Bytes>) -> Result<Option<String>, ProxyError> {
    body_model_at(path, body, ModelField::TopLevel)
}

/// The body's model, read from `field`. A `session` that is not an object, or a model that is
/// not a string, is refused naming the field.
pub(super) fn body_model_at(
    path: &str,
    body: Option<&Bytes>,
    field: ModelField,
) -> Result<Option<String>, ProxyError> {
    let Some(body) = body else {
        return Ok(None);
    };
    if body.is_empty() {
        return Ok(None);
    }
    // serde reads a struct from a JSON array too (`["gpt-4o"]`), which could not be rewritten.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(ProxyError::BodyNotJson {
            path: path.to_string(),
            reason: "not an object".into(),
        });
    }
    let (name, model) = model_value(path, body, field)?;
    match model {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ProxyError::BodyNotJson {
            path: path.to_string(),
            reason: format!("\"{name}\" must be a string, got {other}"),
        }),
    }
}

/// The field's name as the client wrote it, and its value when the body has one.
fn model_value(
    path: &str,
    body: &Bytes,
    field: ModelField,
) -> Result<(&'static str, Option<serde_json::Value>), ProxyError> {
    let not_json = |e: serde_json::Error| ProxyError::BodyNotJson {
        path: path.to_string(),
        reason: e.to_string(),
    };
    match field {
        ModelField::TopLevel => {
            let parsed: ModelOnly = serde_json::from_slice(body).map_err(not_json)?;
            Ok(("model", parsed.model))
        }
        ModelField::InSession => {
            let parsed: SessionOnly = serde_json::from_slice(body).map_err(not_json)?;
            match parsed.session {
                None => Ok(("session.model", None)),
                Some(serde_json::Value::Object(mut session)) => {
                    Ok(("session.model", session.remove("model")))
                }
                Some(other) => Err(ProxyError::BodyNotJson {
                    path: path.to_string(),
                    reason: format!("\"session\" must be an object, got {other}"),
                }),
            }
        }
    }
}

/// Rewrites the body's `model` to the deployment name (v1 API shape).
pub(super) fn with_model(body: &Bytes, deployment: &str, path: &str) -> Result<Bytes, ProxyError> {
    with_model_at(body, deployment, path, ModelField::TopLevel)
}

/// Rewrites the model at `field` to the deployment name; everything else keeps its value.
pub(super) fn with_model_at(
    body: &Bytes,
    deployment: &str,
    path: &str,
    field: ModelField,
) -> Result<Bytes, ProxyError> {
    let mut v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ProxyError::BodyNotJson {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
    let target = match field {
        ModelField::TopLevel => v.as_object_mut(),
        ModelField::InSession => v.get_mut("session").and_then(|s| s.as_object_mut()),
    };
    if let Some(obj) = target {
        obj.insert("model".into(), serde_json::Value::String(deployment.into()));
    }
    serde_json::to_vec(&v)
        .map(Bytes::from)
        .map_err(|e| ProxyError::BodyNotJson {
            path: path.to_string(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use crate::error::ProxyError;
    use crate::routing::testing::{route, table};

    #[test]
    fn realtime_ephemeral_keys_refuse_what_cannot_be_mapped_naming_the_field() {
        let t = table("");
        let err = |path: &str, body: &str| route(&t, path, None, Some(body)).unwrap_err();
        let e = err(
            "/v1/realtime/client_secrets",
            r#"{"session":{"type":"realtime","model":"gpt-9"}}"#,
        );
        assert_eq!(
            e.to_string(),
            "unknown model \"gpt-9\"; this proxy serves: gpt-4o, emb"
        );
        let e = err("/v1/realtime/sessions", r#"{"model":"gpt-9"}"#);
        assert!(matches!(e, ProxyError::UnknownModel { .. }), "{e}");
        let e = err("/v1/realtime/client_secrets", r#"{"session":"gpt-4o"}"#);
        assert_eq!(
            e.to_string(),
            "the request body is not JSON (\"session\" must be an object, got \"gpt-4o\"); /v1/realtime/client_secrets expects a JSON object"
        );
        let e = err(
            "/v1/realtime/client_secrets",
            r#"{"session":{"type":"realtime","model":4}}"#,
        );
        assert!(
            e.to_string()
                .contains("\"session.model\" must be a string, got 4"),
            "{e}"
        );
        let e = err("/v1/realtime/sessions", r#"{"model":["gpt-4o"]}"#);
        assert!(e.to_string().contains("\"model\" must be a string"), "{e}");
        for (path, body) in [
            (
                "/v1/realtime/client_secrets",
                r#"{"session":{"type":"realtime"}}"#,
            ),
            ("/v1/realtime/client_secrets", "{}"),
            ("/v1/realtime/sessions", r#"{"voice":"verse"}"#),
        ] {
            let e = err(path, body);
            assert!(
                matches!(e, ProxyError::MissingModel { .. }),
                "{path} {body}: {e}"
            );
        }
        // The session's model is read, not a top-level one.
        let e = err(
            "/v1/realtime/client_secrets",
            r#"{"model":"gpt-4o","session":{"model":"nope"}}"#,
        );
        assert!(matches!(e, ProxyError::UnknownModel { .. }), "{e}");
    }
}
