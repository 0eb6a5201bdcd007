//! [`KeyDigest`]: the SHA-256 digest a client key is stored and compared as.

use std::fmt;

/// A SHA-256 digest of a client key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    pub fn of(key: &str) -> KeyDigest {
        use sha2::Digest as _;
        KeyDigest(sha2::Sha256::digest(key.as_bytes()).into())
    }

    /// Parses a hex digest as written in `sha256 = "…"`.
    pub(super) fn parse(hex_digest: &str) -> Result<KeyDigest, String> {
        let s = hex_digest.trim();
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "must be 64 hex characters (a SHA-256 digest), got {} characters; create one with `entra-proxy keys new --name NAME`",
                s.len()
            ));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| e.to_string())?;
        Ok(KeyDigest(out))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A digest is not a secret, but there is no reason to print it whole either.
        write!(f, "KeyDigest({}…)", &self.to_hex()[..8])
    }
}
