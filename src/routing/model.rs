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

/// The field's name as the client wrote it, and its value when the body has one. A body that
/// names the model more than once, in any letter case, is refused: Azure's binders read member
/// names without regard to case, so the one the proxy did not read could be the one Azure uses.
fn model_value(
    path: &str,
    body: &Bytes,
    field: ModelField,
) -> Result<(&'static str, Option<serde_json::Value>), ProxyError> {
    let not_json = |e: serde_json::Error| ProxyError::BodyNotJson {
        path: path.to_string(),
        reason: e.to_string(),
    };
    let twice = |field: &'static str| ProxyError::DuplicateParameter {
        name: field,
        place: "JSON body",
    };
    let top: Members = serde_json::from_slice(body).map_err(not_json)?;
    match field {
        ModelField::TopLevel => match top.model {
            Named::Twice => Err(twice("model")),
            Named::Once(v) => Ok(("model", Some(v))),
            Named::Never => Ok(("model", None)),
        },
        ModelField::InSession if top.sessions > 1 => Err(twice("session")),
        ModelField::InSession => match top.session {
            None => Ok(("session.model", None)),
            Some(Session::Object(session)) => match session.model {
                Named::Twice => Err(twice("session.model")),
                Named::Once(v) => Ok(("session.model", Some(v))),
                Named::Never => Ok(("session.model", None)),
            },
            Some(Session::Other(other)) => Err(ProxyError::BodyNotJson {
                path: path.to_string(),
                reason: format!("\"session\" must be an object, got {other}"),
            }),
        },
    }
}

/// How often an object names a member, in any letter case.
#[derive(Default)]
enum Named {
    #[default]
    Never,
    Once(serde_json::Value),
    Twice,
}

/// The members of a JSON object routing reads: `model` and `session` (in any letter case);
/// every other member is skipped unread.
#[derive(Default)]
struct Members {
    model: Named,
    session: Option<Session>,
    /// How many members are named `session`, in any letter case.
    sessions: u8,
}

/// A `session` member: an object (its members read as [`Members`]) or anything else.
enum Session {
    Object(Box<Members>),
    Other(serde_json::Value),
}

/// A member name, as far as routing cares. Compared in ASCII: no other character folds to a
/// letter of `model` or `session` under simple case mapping.
enum Name {
    Model,
    Session,
    Other,
}

impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Name;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Name, E> {
                Ok(if v.eq_ignore_ascii_case("model") {
                    Name::Model
                } else if v.eq_ignore_ascii_case("session") {
                    Name::Session
                } else {
                    Name::Other
                })
            }
        }
        d.deserialize_str(Visitor)
    }
}

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Members, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Members, A::Error> {
                read_members(map)
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// An object's members as routing reads them; every member not named `model` or `session` is
/// skipped without being kept.
fn read_members<'de, A: serde::de::MapAccess<'de>>(mut map: A) -> Result<Members, A::Error> {
    let mut members = Members::default();
    while let Some(name) = map.next_key::<Name>()? {
        match name {
            Name::Model => {
                members.model = match members.model {
                    Named::Never => Named::Once(map.next_value()?),
                    Named::Once(_) | Named::Twice => {
                        map.next_value::<serde::de::IgnoredAny>()?;
                        Named::Twice
                    }
                };
            }
            Name::Session => {
                let session: Session = map.next_value()?;
                members.sessions = members.sessions.saturating_add(1);
                members.session = Some(session);
            }
            Name::Other => {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
    }
    Ok(members)
}

impl<'de> serde::Deserialize<'de> for Session {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Session, D::Error> {
        use serde::de::value::SeqAccessDeserializer;
        use serde_json::Value;
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Session;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Session, A::Error> {
                read_members(map).map(|m| Session::Object(Box::new(m)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Session, A::Error> {
                <Value as serde::Deserialize>::deserialize(SeqAccessDeserializer::new(seq))
                    .map(Session::Other)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Session, E> {
                Ok(Session::Other(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Session, E> {
                Ok(Session::Other(Value::from(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Session, E> {
                Ok(Session::Other(Value::from(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Session, E> {
                Ok(Session::Other(Value::from(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Session, E> {
                Ok(Session::Other(Value::from(v)))
            }
            fn visit_unit<E>(self) -> Result<Session, E> {
                Ok(Session::Other(Value::Null))
            }
        }
        d.deserialize_any(Visitor)
    }
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
        ModelField::InSession => v
            .as_object_mut()
            .and_then(|o| {
                o.iter_mut()
                    .find(|(k, _)| k.eq_ignore_ascii_case("session"))
            })
            .and_then(|(_, s)| s.as_object_mut()),
    };
    if let Some(obj) = target {
        // The name in the case the client wrote it goes: Azure must see only the deployment.
        obj.retain(|name, _| !name.eq_ignore_ascii_case("model"));
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

    #[test]
    fn a_model_named_twice_in_any_letter_case_is_refused_naming_the_field() {
        let t = table("");
        let err = |path: &str, body: &str| route(&t, path, None, Some(body)).unwrap_err();
        for body in [
            r#"{"model":"gpt-4o","Model":"emb"}"#,
            r#"{"MODEL":"emb","messages":[],"model":"gpt-4o"}"#,
            r#"{"model":"gpt-4o","model":"gpt-4o"}"#,
            // An escaped name is the same name once decoded.
            r#"{"model":"gpt-4o","mod\u0065L":"emb"}"#,
        ] {
            let e = err("/v1/chat/completions", body);
            assert!(
                matches!(
                    e,
                    ProxyError::DuplicateParameter {
                        name: "model",
                        place: "JSON body"
                    }
                ),
                "{body}: {e}"
            );
            assert_eq!(e.status(), 400);
        }
        let e = err(
            "/v1/realtime/client_secrets",
            r#"{"session":{"model":"gpt-4o","Model":"emb"}}"#,
        );
        assert!(
            e.to_string().contains("\"session.model\" more than once"),
            "{e}"
        );
        let e = err(
            "/v1/realtime/client_secrets",
            r#"{"session":{"model":"gpt-4o"},"Session":{"model":"emb"}}"#,
        );
        assert!(e.to_string().contains("\"session\" more than once"), "{e}");
        // Named once in another case, it is the model, and Azure gets only the deployment.
        let v1 = table("api='v1'");
        let body = r#"{"Model":"gpt-4o","x":{"model":1}}"#;
        let r = route(&v1, "/v1/chat/completions", None, Some(body)).unwrap();
        let sent: serde_json::Value = serde_json::from_slice(r.body.as_ref().unwrap()).unwrap();
        assert_eq!(
            sent,
            serde_json::json!({"model":"gpt-4o-2024-08-06","x":{"model":1}})
        );
    }
}
