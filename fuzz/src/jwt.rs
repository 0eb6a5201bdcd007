//! Unverified JWT decoding and `explain`: the JOSE header, the claims, the lifetime check the
//! inbound Entra validator runs, and the text `entra-proxy explain` prints.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use entra_proxy::claims::{self, Claims, JwtHeader};
use entra_proxy::cloud::Cloud;
use entra_proxy::diagnose::{self, Target, TargetKind};
use entra_proxy::inbound::check_lifetime;

/// 2025-01-02 10:00:00 UTC.
pub const NOW: i64 = 1_735_812_000;

fn target(sel: u8) -> Target {
    Target {
        kind: if sel & 1 == 0 {
            TargetKind::CognitiveServices
        } else {
            TargetKind::Foundry
        },
        cloud: Cloud::ALL[usize::from((sel >> 1) % 3)],
        tenant: match (sel >> 3) % 3 {
            0 => None,
            1 => Some("72f988bf-86f1-41af-91ab-2d7cd011db47".into()),
            _ => Some("contoso.onmicrosoft.com".into()),
        },
    }
}

/// A whole-hour-and-minute offset from -23:59 to +23:59, as `explain` may run anywhere.
fn offset(b: u8, c: u8) -> time::UtcOffset {
    let hours = i8::try_from(i16::from(b % 47) - 23).unwrap_or(0);
    let minutes = i8::try_from(c % 60).unwrap_or(0) * if hours < 0 { -1 } else { 1 };
    time::UtcOffset::from_hms(hours, minutes, 0).unwrap_or(time::UtcOffset::UTC)
}

fn now(field: &[u8]) -> i64 {
    match field.len() {
        8.. => i64::from_le_bytes(field[..8].try_into().unwrap()),
        _ => NOW,
    }
}

/// Everything a user can be shown about one pasted input: the explanation as JSON and as
/// text, or the error.
fn report(input: &str, target: &Target, now: i64, off: time::UtcOffset) -> String {
    match diagnose::explain(input, target, now) {
        Ok(e) => {
            let json = serde_json::to_string(&e).unwrap();
            let text = diagnose::render_text(&e, target, now, off);
            format!("{json}\n{text}")
        }
        Err(e) => format!("error: {e}"),
    }
}

/// Keeps the base64url characters of a signature field; never empty.
fn signature(field: &[u8]) -> String {
    let s: String = field
        .iter()
        .map(|b| char::from(*b))
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    if s.is_empty() { "c2ln".into() } else { s }
}

/// The same length, none of the same characters.
fn other_signature(sig: &str) -> String {
    sig.chars()
        .map(|c| if c == 'A' { 'B' } else { 'A' })
        .collect()
}

fn wrap(how: u8, token: &str) -> String {
    match how % 6 {
        0 => token.to_string(),
        1 => format!("Bearer {token}"),
        2 => format!("Authorization: bearer\n  {token}\n"),
        3 => format!("{{\"access_token\":\"{token}\",\"expires_in\":3599}}"),
        4 => format!("{{\"accessToken\":\"{token}\",\"tokenType\":\"Bearer\"}}"),
        _ => format!("  \"{}\"  ", token.replace('.', ".\n")),
    }
}

/// Selector (4 bytes: wrapping, target, UTC offset hours and minutes), then fields JOSE header
/// JSON, claims JSON, signature, `now` (8 bytes, else a fixed time). With the selector's high
/// bit set, everything after the selector is pasted as it is instead.
pub fn check(data: &[u8]) {
    let (sel, f) = crate::split(data, 4, 4);
    let [s0, s1, s2, s3, ..] = sel;
    let target = target(s1);
    let off = offset(s2, s3);
    let now = now(f[3]);

    if s0 & 0x80 != 0 {
        // Raw paste: whatever a user may put in front of `explain`.
        let input = String::from_utf8_lossy(data.get(4..).unwrap_or_default());
        let _ = report(&input, &target, now, off);
        if let Ok(t) = diagnose::extract_token(&input) {
            assert!(
                claims::decode_unverified(&t).is_ok(),
                "extract_token returned a non-JWT"
            );
            assert!(!t.chars().any(char::is_whitespace));
        }
        return;
    }

    let (header_json, claims_json) = (f[0], f[1]);
    let sig = signature(f[2]);
    let token = |sig: &str| {
        format!(
            "{}.{}.{sig}",
            URL_SAFE_NO_PAD.encode(header_json),
            URL_SAFE_NO_PAD.encode(claims_json)
        )
    };
    let t1 = token(&sig);

    // Decoding agrees with decoding the parts directly, and never looks at the signature.
    let decoded = claims::decode_unverified(&t1);
    let direct_header = serde_json::from_slice::<JwtHeader>(header_json);
    let direct_claims = serde_json::from_slice::<Claims>(claims_json);
    match (&decoded, &direct_header, &direct_claims) {
        (Ok(u), Ok(h), Ok(c)) => {
            assert_eq!(&u.header, h);
            assert_eq!(&u.claims, c);
            // Inbound Entra validation checks the lifetime of every token it accepts.
            let _ = check_lifetime(&u.claims, now);
            assert!(claims::looks_like_jwt(&t1) == t1.starts_with("eyJ"));
        }
        (Ok(_), _, _) => panic!("decoded a token whose parts do not parse"),
        (Err(_), Ok(_), Ok(_)) => panic!("refused a token whose parts parse"),
        (Err(_), _, _) => {}
    }
    assert_eq!(
        decoded.map(|u| (u.header, u.claims)),
        claims::decode_unverified(&token(&other_signature(&sig))).map(|u| (u.header, u.claims))
    );

    // `explain` reads the token without its signature: the report is the same with any other
    // signature of the same length, so it cannot contain it.
    let how = s0 >> 1;
    let r1 = report(&wrap(how, &t1), &target, now, off);
    let r2 = report(
        &wrap(how, &token(&other_signature(&sig))),
        &target,
        now,
        off,
    );
    assert_eq!(r1, r2, "the explanation depends on the signature");
}
