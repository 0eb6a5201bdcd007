//! Properties of the percent-decoding that turns a pasted endpoint's base path back into
//! segments: it undoes percent-encoding, whichever bytes were encoded.

use super::percent_decode;
use proptest::prelude::*;

/// Percent-encodes the bytes `which` picks (cycling), in upper- or lowercase hex; every other
/// byte stays as it is unless a URL could not hold it so (`%`, spaces, non-ASCII).
fn encode(s: &str, which: &[bool], lower_hex: bool) -> String {
    s.bytes()
        .enumerate()
        .map(|(i, b)| {
            let pick = which.get(i % which.len().max(1)).copied().unwrap_or(true);
            if pick || b == b'%' || !b.is_ascii_graphic() {
                if lower_hex {
                    format!("%{b:02x}")
                } else {
                    format!("%{b:02X}")
                }
            } else {
                char::from(b).to_string()
            }
        })
        .collect()
}

proptest! {
    #[test]
    fn decoding_undoes_encoding_of_any_bytes(
        s in "\\PC{0,16}",
        which in prop::collection::vec(any::<bool>(), 1..8),
        lower_hex in any::<bool>(),
    ) {
        prop_assert_eq!(percent_decode(&encode(&s, &which, lower_hex)), s);
    }

    #[test]
    fn segment_characters_pass_through_undecoded(s in "[a-zA-Z0-9._~!$&'()*+,;=:@-]{0,16}") {
        prop_assert_eq!(percent_decode(&s), s);
    }
}
