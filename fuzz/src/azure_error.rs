//! Azure error answers → `diagnose::classify`: never a panic, a header value that is one line
//! of visible ASCII within its bound, and never a bearer token the body carried.

use entra_proxy::claims::Claims;
use entra_proxy::cloud::{Cloud, HostKind};
use entra_proxy::diagnose::{self, Context, Diagnosis};

/// Longest `x-entra-proxy-diagnosis` header value.
const MAX_HEADER_LEN: usize = 1024;

struct Host {
    host: &'static str,
    kind: Option<HostKind>,
    cloud: Cloud,
    audience: &'static str,
}

const HOSTS: [Host; 5] = [
    Host {
        host: "res.openai.azure.com",
        kind: Some(HostKind::OpenAi),
        cloud: Cloud::Public,
        audience: "https://cognitiveservices.azure.com",
    },
    Host {
        host: "res.services.ai.azure.com",
        kind: Some(HostKind::Foundry),
        cloud: Cloud::Public,
        audience: "https://ai.azure.com",
    },
    Host {
        host: "eastus.api.cognitive.microsoft.com",
        kind: Some(HostKind::Regional),
        cloud: Cloud::Public,
        audience: "https://cognitiveservices.azure.com",
    },
    Host {
        host: "res.cognitiveservices.azure.us",
        kind: Some(HostKind::CognitiveServices),
        cloud: Cloud::Usgov,
        audience: "https://cognitiveservices.azure.us",
    },
    Host {
        host: "127.0.0.1",
        kind: None,
        cloud: Cloud::Public,
        audience: "https://cognitiveservices.azure.com",
    },
];

/// Everything the diagnosis shows: the header value, and the JSON of the whole diagnosis.
fn shown(d: &Option<Diagnosis>) -> String {
    match d {
        Some(d) => format!(
            "{}\n{}",
            d.header_value(),
            serde_json::to_string(d).unwrap()
        ),
        None => String::new(),
    }
}

/// Selector (8 bytes: status, host, deployments, time, context), then fields `retry-after`,
/// body, claims JSON of the token sent.
pub fn check(data: &[u8]) {
    let (sel, f) = crate::split(data, 8, 3);
    let at = |i: usize| sel[i];
    let status = match at(0) % 8 {
        0 => 401,
        1 => 403,
        2 => 404,
        3 => 400,
        4 => 429,
        5 => 500,
        6 => 200,
        _ => u16::from_le_bytes([at(1), at(2)]),
    };
    let host = &HOSTS[usize::from(at(3) % 5)];
    let known: Vec<String> = match at(4) % 3 {
        0 => vec![],
        1 => vec![
            "gpt-4o".into(),
            "gpt-4o-mini".into(),
            "text-embedding-3-small".into(),
        ],
        _ => (0..40).map(|i| format!("dep-{i}")).collect(),
    };
    let claims: Option<Claims> = serde_json::from_slice(f[2]).ok();
    let now = crate::jwt::NOW + i64::from(at(5)) * 600 - 76_800;
    let ctx = Context {
        backend: "primary",
        host: host.host,
        cloud: host.cloud,
        host_kind: host.kind,
        expected_audience: host.audience,
        token: claims.as_ref().filter(|_| at(6) & 1 == 1),
        expected_tenant: (at(6) & 2 == 2).then_some("72f988bf-86f1-41af-91ab-2d7cd011db47"),
        deployment: match at(6) >> 2 & 3 {
            0 => None,
            1 => Some("gpt-4o"),
            2 => Some("gpt4o"),
            _ => std::str::from_utf8(f[0]).ok(),
        },
        known_deployments: &known,
        // The request's path: a client's (the `retry-after` field doubles as it), or none.
        request_path: (at(7) & 4 == 4)
            .then(|| std::str::from_utf8(f[0]).ok())
            .flatten(),
        endpoint_path: if at(7) & 8 == 8 { "/aoai" } else { "/" },
        api_version: match at(6) >> 4 & 3 {
            0 => None,
            1 => Some("2024-10-21"),
            2 => Some("v1"),
            _ => Some("2023-13-45-preview"),
        },
        now,
    };
    let retry_after = std::str::from_utf8(f[0]).ok().filter(|_| at(7) & 1 == 1);
    let body = f[1];

    let d = diagnose::classify(status, retry_after, body, &ctx);
    let _ = diagnose::refresh_may_help(status, body, host.audience, ctx.token);
    if !(400..=599).contains(&status) {
        assert!(d.is_none(), "a {status} is not an error to explain");
    }
    if let Some(d) = &d {
        let h = d.header_value();
        assert!(
            h.len() <= MAX_HEADER_LEN,
            "header value of {} bytes",
            h.len()
        );
        assert!(
            h.bytes().all(|b| (b' '..=b'~').contains(&b)),
            "header value not visible ASCII: {h:?}"
        );
        assert!(http::HeaderValue::from_str(&h).is_ok());
    }

    // Bearer tokens in the body never reach the diagnosis (it is logged and sent as a header):
    // a piece of a token it shows must come from elsewhere — the body outside the tokens, or
    // what the diagnosis shows with every token blanked out.
    let text = String::from_utf8_lossy(body);
    let spans = crate::jwt_spans(&text);
    if spans.is_empty() {
        return;
    }
    let out = shown(&d);
    let blanked = crate::blank(&text, &spans);
    let out_blanked = shown(&diagnose::classify(
        status,
        retry_after,
        blanked.as_bytes(),
        &ctx,
    ));
    for r in &spans {
        let token = &text[r.clone()];
        let sig = token.rsplit('.').next().unwrap_or_default();
        let head = &token[..token.len().min(24)];
        for piece in [token, head, sig] {
            if piece.len() >= 12 && out.contains(piece) {
                assert!(
                    out_blanked.contains(piece) || blanked.contains(piece),
                    "the diagnosis echoes a bearer token from the body ({piece}): {out}"
                );
            }
        }
    }
}
