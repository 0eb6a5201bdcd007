//! Multipart uploads: `POST /openai/files?api-version=…` (and `/openai/v1/files`), and
//! `POST /openai/deployments/{d}/audio/transcriptions|translations?api-version=…`. Each checks
//! the caller like the data plane and reports what it received — the body's size, the
//! boundary, the `purpose` or `model` field — so tests see that the form arrived intact.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, Method, Uri};
use serde_json::json;

use super::Ctx;
use super::auth;
use super::conn::Connection;
use super::respond;
use super::samples::{AzureSample, Operation, SampleContext};
use super::state::SeenRequest;

/// A multipart form's fields: (name, filename, value).
type Fields = Vec<(String, Option<String>, Bytes)>;

/// Faults for file uploads are scripted under this name (`Emulator::script`).
pub(crate) const UPLOAD_FAULTS: &str = "files";

/// `POST /openai/files`: the file is kept nowhere; its size comes back. Pops a fault scripted
/// for [`UPLOAD_FAULTS`] first.
pub(crate) async fn upload(
    State(ctx): State<Ctx>,
    conn: Option<Extension<Connection>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let conn = conn.map(|Extension(c)| c);
    let shared = &ctx.shared;
    if let Some(fault) = super::faults::pop_for(shared, UPLOAD_FAULTS, conn.as_ref()) {
        shared.count_data_request();
        shared.record(SeenRequest::from_parts(
            &Method::POST,
            &uri,
            &headers,
            &body,
        ));
        let sc = SampleContext::for_operation(
            ctx.kind.audience(shared.config.cloud),
            Operation::Responses,
        );
        if let Some(response) = super::faults::apply_whole(shared, fault, conn.as_ref(), &sc).await
        {
            return response;
        }
    }
    checked(&ctx, &uri, &headers, &body, None, |boundary, fields| {
        let field = |n: &str| fields.iter().find(|(name, _, _)| name == n);
        let Some((_, filename, file)) = field("file") else {
            return respond::json_value(
                400,
                &json!({"error": {"code": "invalidPayload", "message": "The file is missing."}}),
            );
        };
        let purpose = field("purpose")
            .map(|(_, _, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        respond::json_value(
            200,
            &json!({
                "object": "file",
                "id": format!("file-{}", uuid::Uuid::new_v4().simple()),
                "bytes": file.len(),
                "created_at": 0,
                "filename": filename.clone().unwrap_or_default(),
                "purpose": purpose,
                "status": "processed",
                "emulator": {"content_length": body.len(), "boundary": boundary},
            }),
        )
    })
}

/// `POST /openai/deployments/{d}/audio/{transcriptions|translations}`.
pub(crate) async fn transcribe(
    State(ctx): State<Ctx>,
    Path((deployment, _op)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let known = ctx.shared.config.deployments.contains(&deployment);
    checked(
        &ctx,
        &uri,
        &headers,
        &body,
        Some(known),
        |boundary, fields| {
            let field = |n: &str| fields.iter().find(|(name, _, _)| name == n);
            let audio = field("file").map_or(0, |(_, _, v)| v.len());
            let model = field("model").map(|(_, _, v)| String::from_utf8_lossy(v).into_owned());
            respond::json_value(
                200,
                &json!({
                    "text": format!("{audio} bytes of audio transcribed by {deployment}"),
                    "emulator": {"content_length": body.len(), "boundary": boundary, "model": model},
                }),
            )
        },
    )
}

/// Records, checks the api-version, the caller, the deployment and the form; then answers.
fn checked(
    ctx: &Ctx,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    deployment_known: Option<bool>,
    serve: impl FnOnce(&str, &Fields) -> Response,
) -> Response {
    let shared = &ctx.shared;
    shared.count_data_request();
    let seq = shared.record(SeenRequest::from_parts(&Method::POST, uri, headers, body));
    let sc =
        SampleContext::for_operation(ctx.kind.audience(shared.config.cloud), Operation::Responses);
    let v1 = uri.path().starts_with("/openai/v1/");
    let has_version = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .any(|(k, _)| k == "api-version");
    let response = if !v1 && !has_version {
        respond::sample(AzureSample::ResourceNotFound404, &sc)
    } else if let Err(sample) = auth::authenticate_with_key(
        shared,
        ctx.kind,
        ctx.service.options.key.as_deref(),
        headers,
        seq,
    ) {
        respond::sample(sample, &sc)
    } else if deployment_known == Some(false) {
        respond::sample(AzureSample::DeploymentNotFound404, &sc)
    } else {
        match boundary(headers).and_then(|b| parse(body, &b).map(|f| (b, f))) {
            Some((b, fields)) => serve(&b, &fields),
            None => respond::json_value(
                400,
                &json!({"error": {"code": "invalidPayload", "message": "Expected a multipart/form-data body."}}),
            ),
        }
    };
    shared.set_status(seq, response.status().as_u16());
    response
}

fn boundary(headers: &HeaderMap) -> Option<String> {
    let ct = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let (mime, params) = ct.split_once(';')?;
    if !mime.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// The form's fields; `None` when it is not a well-formed form with this boundary.
fn parse(body: &Bytes, boundary: &str) -> Option<Fields> {
    let delimiter = format!("--{boundary}");
    let next = format!("\r\n--{boundary}");
    let mut at = find(body, delimiter.as_bytes(), 0)?;
    let mut fields = Vec::new();
    loop {
        let after = at + delimiter.len();
        if body.get(after..after + 2)? == b"--" {
            return Some(fields);
        }
        let head_end = find(body, b"\r\n\r\n", after)?;
        let head = String::from_utf8_lossy(&body[after..head_end]).into_owned();
        let value_end = find(body, next.as_bytes(), head_end + 4)?;
        let attr = |name: &str| {
            let key = format!("{name}=\"");
            let start = head.find(&key)? + key.len();
            let len = head[start..].find('"')?;
            Some(head[start..start + len].to_owned())
        };
        fields.push((
            attr("name")?,
            attr("filename"),
            body.slice(head_end + 4..value_end),
        ));
        at = value_end + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_parsed_into_fields() {
        let body = Bytes::from_static(
            b"--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\n\r\n{}\n{}\r\n--b--\r\n",
        );
        let fields = parse(&body, "b").unwrap();
        assert_eq!(fields.len(), 2);
        assert_eq!(fields[0].0, "purpose");
        assert_eq!(&fields[0].2[..], b"assistants");
        assert_eq!(fields[1].1.as_deref(), Some("a.jsonl"));
        assert_eq!(&fields[1].2[..], b"{}\n{}");
        assert!(parse(&body, "other").is_none());
    }
}
