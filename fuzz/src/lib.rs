//! What the fuzz targets share: splitting one input into fields, the small configs the targets
//! run against, and the checks each target asserts beyond "no panic". Each check calls the same
//! function the request path calls, with the same arguments it would pass.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod azure_error;
pub mod config;
pub mod inbound;
pub mod jwt;
pub mod routing;
pub mod usage;

/// Splits an input into a selector — its first `sel_len` bytes, zero-padded, which pick the
/// config, target or wrapping — and `n` fields: the rest split at NUL bytes (missing fields are
/// empty; the last keeps any further NULs). Seeds are written the same way, so they stay
/// readable.
pub fn split(data: &[u8], sel_len: usize, n: usize) -> ([u8; 8], Vec<&[u8]>) {
    let mut sel = [0u8; 8];
    let cut = sel_len.min(8).min(data.len());
    sel[..cut].copy_from_slice(&data[..cut]);
    let mut out = Vec::with_capacity(n);
    let mut rest = &data[cut..];
    while out.len() + 1 < n {
        match rest.iter().position(|b| *b == 0) {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + 1..];
            }
            None => {
                out.push(rest);
                rest = &[];
            }
        }
    }
    out.push(rest);
    (sel, out)
}

/// Every run in `text` that is shaped like a compact JWS (`eyJ…`, three base64url parts), as
/// byte ranges. Used to find bearer tokens a body carries.
pub fn jwt_spans(text: &str) -> Vec<std::ops::Range<usize>> {
    let bytes = text.as_bytes();
    let is_b64 = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = text.get(i..).and_then(|t| t.find("eyJ")) {
        let start = i + off;
        let mut end = start;
        let mut dots = 0;
        while end < bytes.len() && (is_b64(bytes[end]) || (bytes[end] == b'.' && dots < 2)) {
            if bytes[end] == b'.' {
                dots += 1;
            }
            end += 1;
        }
        if dots == 2 && !text[start..end].ends_with('.') {
            out.push(start..end);
        }
        i = end.max(start + 3);
    }
    out
}

/// `text` with every range replaced by as many `x` (same length, so shapes and counts match).
pub fn blank(text: &str, spans: &[std::ops::Range<usize>]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for r in spans {
        out.push_str(&text[at..r.start]);
        out.extend(std::iter::repeat_n('x', r.len()));
        at = r.end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_split_into_selector_and_fields() {
        let (sel, f) = split(b"\0\x01a\0b\0c\0d", 2, 3);
        assert_eq!(sel[..3], [0, 1, 0]);
        assert_eq!(f, vec![&b"a"[..], b"b", b"c\0d"]);
        assert_eq!(split(b"a", 2, 2).1, vec![&b""[..], b""]);
    }

    #[test]
    fn jwt_spans_find_tokens() {
        let t = "x Bearer eyJa.eyJb.c-_d, eyJ.only";
        let spans = jwt_spans(t);
        assert_eq!(spans.len(), 1);
        assert_eq!(&t[spans[0].clone()], "eyJa.eyJb.c-_d");
        assert_eq!(blank(t, &spans), "x Bearer xxxxxxxxxxxxxx, eyJ.only");
    }
}
