//! The path → [`Plan`]: decoded segments, classified; `/v1` operations by where Azure has them.

use crate::error::ProxyError;
use std::borrow::Cow;

/// What the path says about the request, before the body is looked at. Its segments are
/// decoded, and borrow the path where it had nothing to decode (most paths, every request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan<'a> {
    /// `/openai/deployments/{deployment}/{rest…}`: Azure's deployment API.
    Deployment {
        deployment: Cow<'a, str>,
        rest: Vec<Cow<'a, str>>,
    },
    /// `/openai/v1/{rest…}`: Azure's v1 API; `model` in the body names the deployment.
    AzureV1 { rest: Vec<Cow<'a, str>> },
    /// `/v1/{rest…}`: OpenAI-style; `model` in the body names a configured model.
    OpenAi { rest: Vec<Cow<'a, str>> },
    /// `GET /v1/models`: answered by the proxy from `[[models]]`.
    ListModels,
    /// Any other path (other Azure AI services, Foundry's `/models/...`): passed through.
    Other { segments: Vec<Cow<'a, str>> },
}

/// What an OpenAI-style `/v1/{rest…}` operation is on Azure's deployment API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum V1Op {
    /// Lives under `/openai/deployments/{d}/…`: the model names the deployment (required).
    Deployment,
    /// Lives under `/openai/{rest…}` (responses, files, batches, …): a `model`, where the
    /// operation has one, is mapped to its deployment in the body.
    Resource,
    /// `realtime/client_secrets` (GA ephemeral keys): Azure's `/openai/v1/realtime/client_secrets`
    /// on every backend; `session.model` names the deployment (required).
    RealtimeClientSecrets,
    /// `realtime/sessions` (preview ephemeral keys): `/openai/realtimeapi/sessions` with the
    /// realtime api-version on the deployment API; `model` names the deployment (required).
    RealtimeSessions,
    /// Not on the deployment API.
    Unsupported,
}

/// OpenAI operations that live under `/openai/deployments/{d}/` in Azure's deployment API.
const DEPLOYMENT_OPERATIONS: &[&[&str]] = &[
    &["chat", "completions"],
    &["completions"],
    &["embeddings"],
    &["images", "generations"],
    &["images", "edits"],
    &["audio", "speech"],
    &["audio", "transcriptions"],
    &["audio", "translations"],
];

/// `/v1/{root}/…` operations that live under `/openai/{root}/…` on Azure's deployment API.
const RESOURCE_ROOTS: &[&str] = &[
    "responses",
    "files",
    "uploads",
    "batches",
    "fine_tuning",
    "vector_stores",
    "assistants",
    "threads",
];

/// Resource operations whose bodies are uploads (multipart or raw bytes), never read whole.
const UPLOAD_ROOTS: &[&str] = &["files", "uploads"];

impl Plan<'_> {
    /// Whether [`resolve`](super::resolve) needs the JSON body (to read `model`). Uploads
    /// stream through.
    pub fn needs_body(&self) -> bool {
        match self {
            Plan::AzureV1 { .. } => true,
            Plan::OpenAi { rest } => !rest.first().is_some_and(|r| UPLOAD_ROOTS.contains(&&**r)),
            _ => false,
        }
    }

    /// Whether a multipart body's `model` field names the deployment (audio transcriptions and
    /// translations): the form's head is read up to that field, the rest streams.
    pub fn needs_form_model(&self) -> bool {
        match self {
            Plan::OpenAi { rest } => v1_op(rest) == V1Op::Deployment,
            _ => false,
        }
    }
}

/// Where a `/v1/{rest…}` operation lives on Azure's deployment API.
pub(super) fn v1_op<S: AsRef<str>>(rest: &[S]) -> V1Op {
    let is =
        |op: &[&str]| rest.len() == op.len() && rest.iter().zip(op).all(|(r, o)| r.as_ref() == *o);
    if DEPLOYMENT_OPERATIONS.iter().any(|op| is(op)) {
        V1Op::Deployment
    } else if is(&["realtime", "client_secrets"]) {
        V1Op::RealtimeClientSecrets
    } else if is(&["realtime", "sessions"]) {
        V1Op::RealtimeSessions
    } else if rest
        .first()
        .is_some_and(|r| RESOURCE_ROOTS.contains(&r.as_ref()))
    {
        V1Op::Resource
    } else {
        V1Op::Unsupported
    }
}

/// Every `/v1/…` operation the proxy knows, for "did you mean".
fn known_v1_paths() -> impl Iterator<Item = String> {
    DEPLOYMENT_OPERATIONS
        .iter()
        .map(|op| op.join("/"))
        .chain(RESOURCE_ROOTS.iter().map(|r| (*r).to_string()))
        .chain(
            [
                "models",
                "realtime",
                "realtime/client_secrets",
                "realtime/sessions",
            ]
            .into_iter()
            .map(str::to_string),
        )
}

/// The known `/v1/…` path an unknown one is a slip of: within two edits of a known operation
/// (`chat/completion`, `embedding`), or of a resource root with the rest kept
/// (`respones/resp_1` → `responses/resp_1`). `None` for a known path or nothing close.
pub(super) fn near_v1_path(rest: &[&str]) -> Option<String> {
    if v1_op(rest) != V1Op::Unsupported || rest.first() == Some(&"models") {
        return None;
    }
    let whole = rest.join("/");
    let closest = |wanted: &str| {
        known_v1_paths()
            .map(|known| (edit_distance(wanted, &known), known))
            .filter(|(d, _)| (1..=2).contains(d))
            .min_by_key(|(d, _)| *d)
            .map(|(_, known)| known)
    };
    if let Some(known) = closest(&whole) {
        return Some(format!("/v1/{known}"));
    }
    let (root, tail) = rest.split_first()?;
    RESOURCE_ROOTS
        .iter()
        .find(|r| (1..=2).contains(&edit_distance(root, r)))
        .map(|r| match tail {
            [] => format!("/v1/{r}"),
            _ => format!("/v1/{r}/{}", tail.join("/")),
        })
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(above + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// A whole URL where the path goes (`/https://res.openai.azure.com/openai/…`, or the host alone
/// as the first segment): an SDK given the resource's URL after the proxy's. Refused, naming
/// the path to send and the base URL the SDK wants, before anything reaches Azure.
fn url_as_path(segments: &[Cow<'_, str>], path: &str) -> Option<ProxyError> {
    let first = segments.first()?.to_ascii_lowercase();
    let scheme = first == "http:" || first == "https:";
    let host_at = usize::from(scheme);
    let host = segments.get(host_at)?;
    let lower = host.to_ascii_lowercase();
    let looks_like_host = lower.contains('.')
        && [
            ".azure.com",
            ".azure.us",
            ".azure.cn",
            ".azure-api.net",
            ".microsoft.com",
        ]
        .iter()
        .any(|suffix| lower.split(':').next().unwrap_or(&lower).ends_with(suffix));
    if !scheme && !looks_like_host {
        return None;
    }
    let rest = segments[host_at + 1..].join("/");
    Some(ProxyError::NoRoute {
        path: path.to_string(),
        hint: format!(
            "the path holds a whole URL (of {host}); send only the path after the host, /{rest}, to the proxy: give the SDK the proxy's own address as its endpoint (AzureOpenAI(azure_endpoint=\"http://PROXY:PORT\"), or OpenAI(base_url=\"http://PROXY:PORT/v1\")), and the proxy sends the request to the backend it is configured with"
        ),
    })
}

/// Splits a request path into decoded segments and classifies it.
pub fn plan(path: &str) -> Result<Plan<'_>, ProxyError> {
    let mut segments = split_path(path)?;
    if let Some(refusal) = url_as_path(&segments, path) {
        return Err(refusal);
    }
    let is = |segments: &[Cow<'_, str>], i: usize, want: &str| {
        segments.get(i).is_some_and(|s| s == want)
    };
    Ok(
        if is(&segments, 0, "openai") && is(&segments, 1, "deployments") && segments.len() > 3 {
            let rest = segments.split_off(3);
            let deployment = segments.swap_remove(2);
            Plan::Deployment { deployment, rest }
        } else if is(&segments, 0, "openai") && is(&segments, 1, "v1") && segments.len() > 2 {
            Plan::AzureV1 {
                rest: segments.split_off(2),
            }
        } else if is(&segments, 0, "v1") && is(&segments, 1, "models") && segments.len() == 2 {
            Plan::ListModels
        } else if is(&segments, 0, "v1") && segments.len() > 1 {
            Plan::OpenAi {
                rest: segments.split_off(1),
            }
        } else {
            Plan::Other { segments }
        },
    )
}

fn split_path(path: &str) -> Result<Vec<Cow<'_, str>>, ProxyError> {
    let mut out = Vec::new();
    for raw in path.split('/').filter(|s| !s.is_empty()) {
        let decoded = percent_encoding_decode(raw);
        if decoded == "." || decoded == ".." || decoded.contains('/') || decoded.contains('\\') {
            return Err(ProxyError::NoRoute {
                path: path.to_string(),
                hint: "path segments may not be '.', '..' or contain encoded slashes".into(),
            });
        }
        out.push(decoded);
    }
    Ok(out)
}

fn percent_encoding_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied(),
            bytes.get(i + 2).copied(),
        ) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                let v = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(v as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slip_in_a_v1_path_gets_the_path_it_was_meant_to_be() {
        let near = |p: &str| near_v1_path(&p.split('/').collect::<Vec<_>>());
        assert_eq!(
            near("chat/completion").as_deref(),
            Some("/v1/chat/completions")
        );
        assert_eq!(
            near("chat/compleitons").as_deref(),
            Some("/v1/chat/completions")
        );
        assert_eq!(near("embedding").as_deref(), Some("/v1/embeddings"));
        assert_eq!(near("model").as_deref(), Some("/v1/models"));
        assert_eq!(
            near("respones/resp_1").as_deref(),
            Some("/v1/responses/resp_1")
        );
        // Known operations, and paths not close to any, are left alone.
        for p in [
            "chat/completions",
            "files/file-1/content",
            "models/gpt-4o",
            "realtime",
            "moderations",
            "containers",
            "chat/completions/chatcmpl-1",
        ] {
            assert_eq!(near(p), None, "{p}");
        }
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "ab"), 2);
        assert_eq!(edit_distance("é", "e"), 1);
    }

    #[test]
    fn a_whole_url_as_the_path_is_refused_naming_the_path_to_send() {
        for path in [
            "/https://myres.openai.azure.com/openai/deployments/gpt-4o/chat/completions",
            "/https:/myres.openai.azure.com/openai/deployments/gpt-4o/chat/completions",
            "/myres.openai.azure.com/openai/deployments/gpt-4o/chat/completions",
            "/HTTP://myres.cognitiveservices.azure.com:443/openai/deployments/gpt-4o/chat/completions",
        ] {
            let Err(ProxyError::NoRoute { hint, .. }) = plan(path) else {
                panic!("{path} was not refused");
            };
            assert!(
                hint.contains("send only the path after the host, /openai/deployments/gpt-4o/chat/completions,"),
                "{hint}"
            );
            assert!(hint.contains("azure_endpoint"), "{hint}");
        }
        // A service path that merely has a dot in it is not a host.
        assert!(plan("/speechtotext/v3.2/transcriptions").is_ok());
        assert!(plan("/docintelligence/documentModels/prebuilt-read:analyze").is_ok());
    }

    #[test]
    fn paths_are_classified_by_their_leading_segments() {
        let owned = |v: &[&'static str]| v.iter().map(|s| Cow::Borrowed(*s)).collect::<Vec<_>>();
        let cases = [
            (
                "/openai/deployments/d/chat/completions",
                Plan::Deployment {
                    deployment: "d".into(),
                    rest: owned(&["chat", "completions"]),
                },
            ),
            (
                "/openai/deployments/d",
                Plan::Other {
                    segments: owned(&["openai", "deployments", "d"]),
                },
            ),
            (
                "/openai/v1/responses",
                Plan::AzureV1 {
                    rest: owned(&["responses"]),
                },
            ),
            (
                "/openai/v1",
                Plan::Other {
                    segments: owned(&["openai", "v1"]),
                },
            ),
            ("/v1/models", Plan::ListModels),
            ("//v1//models/", Plan::ListModels),
            (
                "/v1/models/gpt-4o",
                Plan::OpenAi {
                    rest: owned(&["models", "gpt-4o"]),
                },
            ),
            (
                "/v1/chat/completions",
                Plan::OpenAi {
                    rest: owned(&["chat", "completions"]),
                },
            ),
            (
                "/v1",
                Plan::Other {
                    segments: owned(&["v1"]),
                },
            ),
            (
                "/models/chat/completions",
                Plan::Other {
                    segments: owned(&["models", "chat", "completions"]),
                },
            ),
        ];
        for (path, want) in cases {
            assert_eq!(plan(path).unwrap(), want, "{path}");
        }
    }

    #[test]
    fn traversal_is_refused() {
        assert!(plan("/openai/../admin").is_err());
        assert!(plan("/openai/deployments/a%2Fb/chat").is_err());
        assert_eq!(
            plan("/openai/deployments/my%20dep/chat/completions").unwrap(),
            Plan::Deployment {
                deployment: "my dep".into(),
                rest: vec!["chat".into(), "completions".into()]
            }
        );
    }
}
