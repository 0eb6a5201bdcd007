//! The `model` field of a multipart upload (audio transcriptions and translations): the form is
//! read only up to the end of that field's value — at most [`PREFIX_LIMIT`] bytes, which SDKs
//! meet by sending fields before files — and the rest streams through untouched, boundary and
//! all. Where the backend wants the deployment in the form (`api = "v1"`), the value is
//! rewritten in the prefix and the length adjusted.

use crate::error::ProxyError;
use axum::body::Body;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use std::ops::Range;

/// Most of a form read to find its `model` field.
pub(super) const PREFIX_LIMIT: usize = 64 * 1024;

/// A form whose head was read: the bytes read, where the model's value is in them, the rest.
pub(super) struct Peeked {
    pub(super) prefix: Bytes,
    pub(super) model: Option<(String, Range<usize>)>,
    pub(super) rest: Body,
}

/// What the bytes read so far say about the `model` field.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    Found(Range<usize>),
    /// The form ended (or its closing delimiter came) without one.
    Absent,
    NeedMore,
}

/// The boundary of a `multipart/form-data` body.
pub(super) fn boundary(headers: &HeaderMap) -> Option<String> {
    let ct = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let (mime, params) = ct.split_once(';')?;
    if !mime.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty())
    })
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// Looks for the `model` part in the head of a form.
fn scan(buf: &[u8], boundary: &str) -> Scan {
    let delimiter = format!("--{boundary}");
    let next_part = format!("\r\n--{boundary}");
    let Some(mut at) = find(buf, delimiter.as_bytes(), 0) else {
        return Scan::NeedMore;
    };
    loop {
        let after = at + delimiter.len();
        match buf.get(after..after + 2) {
            None => return Scan::NeedMore,
            Some(b"--") => return Scan::Absent,
            Some(_) => {}
        }
        let Some(head_end) = find(buf, b"\r\n\r\n", after) else {
            return Scan::NeedMore;
        };
        let head = String::from_utf8_lossy(&buf[after..head_end]).to_ascii_lowercase();
        let value_start = head_end + 4;
        let Some(value_end) = find(buf, next_part.as_bytes(), value_start) else {
            return Scan::NeedMore;
        };
        if head.contains("name=\"model\"") || head.contains("name=model") {
            return Scan::Found(value_start..value_end);
        }
        at = value_end + 2;
    }
}

/// Reads the form up to its `model` value (or its end, or [`PREFIX_LIMIT`]).
pub(super) async fn peek(mut body: Body, boundary: &str) -> Result<Peeked, ProxyError> {
    let mut buf = BytesMut::new();
    loop {
        match scan(&buf, boundary) {
            Scan::Found(range) => {
                let model = String::from_utf8_lossy(&buf[range.clone()])
                    .trim()
                    .to_string();
                return Ok(Peeked {
                    prefix: buf.freeze(),
                    model: Some((model, range)),
                    rest: body,
                });
            }
            Scan::Absent => break,
            Scan::NeedMore if buf.len() >= PREFIX_LIMIT => {
                return Err(ProxyError::BodyRead(format!(
                    "the form's \"model\" field must come within its first {PREFIX_LIMIT} bytes, before any file"
                )));
            }
            Scan::NeedMore => {}
        }
        match body.frame().await {
            None => break,
            Some(Err(e)) => return Err(ProxyError::BodyRead(e.to_string())),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
    Ok(Peeked {
        prefix: buf.freeze(),
        model: None,
        rest: body,
    })
}

/// The prefix with the model's value replaced by `deployment`.
pub(super) fn rewrite(prefix: &Bytes, range: &Range<usize>, deployment: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(prefix.len() + deployment.len());
    out.extend_from_slice(&prefix[..range.start]);
    out.extend_from_slice(deployment.as_bytes());
    out.extend_from_slice(&prefix[range.end..]);
    out.freeze()
}

/// The prefix, then the rest as it comes.
pub(super) fn rejoin(prefix: Bytes, rest: Body) -> Body {
    use futures_util::StreamExt as _;
    let head = futures_util::stream::once(async move { Ok::<_, axum::Error>(prefix) });
    Body::from_stream(head.chain(rest.into_data_stream()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const FORM: &str = "--XyZ\r\nContent-Disposition: form-data; name=\"language\"\r\n\r\nen\r\n--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF....\r\n--XyZ--\r\n";

    #[test]
    fn the_boundary_comes_from_the_content_type() {
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("multipart/form-data; boundary=\"XyZ\""),
        );
        assert_eq!(boundary(&h).as_deref(), Some("XyZ"));
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert_eq!(boundary(&h), None);
    }

    #[test]
    fn the_model_value_is_found_only_once_complete() {
        let Scan::Found(r) = scan(FORM.as_bytes(), "XyZ") else {
            panic!("model not found")
        };
        assert_eq!(&FORM[r], "whisper");
        let cut = FORM.find("whisper").unwrap() + 3;
        assert_eq!(scan(&FORM.as_bytes()[..cut], "XyZ"), Scan::NeedMore);
        let no_model = "--B\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nx\r\n--B--\r\n";
        assert_eq!(scan(no_model.as_bytes(), "B"), Scan::Absent);
    }

    #[tokio::test]
    async fn a_form_is_read_to_its_model_and_streams_the_rest_unchanged() {
        let chunks: Vec<Result<Bytes, std::io::Error>> = FORM
            .as_bytes()
            .chunks(7)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        let peeked = peek(body, "XyZ").await.unwrap();
        let (model, range) = peeked.model.clone().unwrap();
        assert_eq!(model, "whisper");
        assert!(peeked.prefix.len() < FORM.len());
        let rewritten = rewrite(&peeked.prefix, &range, "whisper-dep");
        let all = rejoin(rewritten, peeked.rest)
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(all, FORM.replace("\r\nwhisper\r\n", "\r\nwhisper-dep\r\n"));
    }
}
