//! An app registration's certificate credential (`[on_behalf_of] credential = "certificate"`):
//! the PEM certificate and its RSA private key, parsed and checked against each other when the
//! config is read, so a wrong, encrypted or mismatched file stops start-up naming the setting.
//! Signs the client assertions Entra accepts for certificate credentials.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use std::fmt;

/// A certificate and its private key, ready to sign client assertions.
pub struct AppCertificate {
    /// The certificate, DER.
    der: Vec<u8>,
    key: aws_lc_rs::rsa::KeyPair,
}

impl fmt::Debug for AppCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppCertificate")
            .field("x5t#S256", &self.x5t_s256())
            .finish_non_exhaustive()
    }
}

/// One `-----BEGIN …-----` block of a PEM file.
struct Block {
    label: String,
    der: Vec<u8>,
}

impl AppCertificate {
    /// The certificate in `cert_pem` and the private key in `key_pem` (the same text when one
    /// file holds both). Errors say what is wrong, never what the key is.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<AppCertificate, String> {
        let certs = blocks(cert_pem)?;
        let cert = certs
            .iter()
            .find(|b| b.label == "CERTIFICATE")
            .ok_or("holds no -----BEGIN CERTIFICATE----- block")?;
        let keys = blocks(key_pem)?;
        if keys.iter().any(|b| b.label.contains("ENCRYPTED")) {
            return Err("the private key is encrypted; the proxy needs it unencrypted (keep the file in a secret volume readable only by the proxy)".into());
        }
        let key = match keys.iter().find(|b| b.label.ends_with("PRIVATE KEY")) {
            Some(b) if b.label == "PRIVATE KEY" => aws_lc_rs::rsa::KeyPair::from_pkcs8(&b.der),
            Some(b) if b.label == "RSA PRIVATE KEY" => aws_lc_rs::rsa::KeyPair::from_der(&b.der),
            Some(b) => {
                return Err(format!(
                    "a {} is not an RSA private key; Entra certificate credentials here need RSA",
                    b.label
                ));
            }
            None => return Err("holds no -----BEGIN PRIVATE KEY----- block".into()),
        }
        .map_err(|_| "the private key is not a readable RSA key".to_string())?;
        let public = subject_public_key(&cert.der)
            .ok_or("the certificate is not a readable X.509 certificate")?;
        use aws_lc_rs::signature::KeyPair as _;
        if key.public_key().as_ref() != public {
            return Err(
                "the private key does not belong to the certificate (their public keys differ)"
                    .into(),
            );
        }
        Ok(AppCertificate {
            der: cert.der.clone(),
            key,
        })
    }

    /// `x5t#S256`: base64url of the SHA-256 of the certificate, how Entra finds it.
    pub fn x5t_s256(&self) -> String {
        use sha2::Digest as _;
        URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&self.der))
    }

    /// A client assertion for `client_id` at `token_endpoint`: a JWT signed PS256, header
    /// `x5t#S256`, claims `aud` = the token endpoint, `iss` = `sub` = the client id, a fresh
    /// `jti`, valid for ten minutes from `now` (unix seconds). Microsoft Learn, "Microsoft
    /// identity platform application authentication certificate credentials".
    pub fn client_assertion(
        &self,
        client_id: &str,
        token_endpoint: &str,
        now: i64,
    ) -> Result<String, String> {
        let header = serde_json::json!({"alg": "PS256", "typ": "JWT", "x5t#S256": self.x5t_s256()});
        let claims = serde_json::json!({
            "aud": token_endpoint,
            "iss": client_id,
            "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now,
            "iat": now,
            "exp": now + 600,
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &aws_lc_rs::signature::RSA_PSS_SHA256,
                &rng,
                input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| "signing the client assertion failed".to_string())?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// The blocks of a PEM text.
fn blocks(pem: &str) -> Result<Vec<Block>, String> {
    let mut out = Vec::new();
    let mut lines = pem.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        let mut closed = false;
        for line in lines.by_ref() {
            if line == end {
                closed = true;
                break;
            }
            if !line.contains(':') {
                body.push_str(line);
            }
        }
        if !closed {
            return Err(format!("the {label} block has no END line"));
        }
        let der = STANDARD
            .decode(body)
            .map_err(|_| format!("the {label} block is not valid base64"))?;
        out.push(Block {
            label: label.to_string(),
            der,
        });
    }
    if out.is_empty() {
        return Err("is not a PEM file (no -----BEGIN … ----- line)".into());
    }
    Ok(out)
}

/// One DER element: its tag, and its contents and what follows it in `input`.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        n if n < 0x80 => (usize::from(n), rest),
        n => {
            let count = usize::from(n & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let len = rest[..count]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, &rest[count..])
        }
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The subject public key of an X.509 certificate (for RSA, the PKCS#1 `RSAPublicKey`).
fn subject_public_key(cert: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    let (tag, certificate, _) = element(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, mut tbs, _) = element(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    // [0] version (optional), serial, signature, issuer, validity, subject, then the key info.
    if tbs.first() == Some(&0xa0) {
        tbs = element(tbs)?.2;
    }
    for _ in 0..5 {
        tbs = element(tbs)?.2;
    }
    let (tag, info, _) = element(tbs)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_, _, after_algorithm) = element(info)?;
    let (tag, bits, _) = element(after_algorithm)?;
    match (tag, bits.split_first()) {
        (0x03, Some((0, key))) => Some(key),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_and_its_key_sign_assertions_and_mismatches_are_refused() {
        let one = azure_emulator::TestCertificate::generate("one").unwrap();
        let two = azure_emulator::TestCertificate::generate("two").unwrap();
        let cert = AppCertificate::from_pem(&one.pem(), &one.private_key_pem()).unwrap();
        assert_eq!(cert.x5t_s256(), one.x5t_s256());
        assert!(!format!("{cert:?}").contains("PRIVATE"));
        let jwt = cert
            .client_assertion("app", "https://login/t/oauth2/v2.0/token", 1_800_000_000)
            .unwrap();
        assert_eq!(jwt.split('.').count(), 3);
        // One file holding both.
        let both = format!("{}\n{}", one.pem(), one.private_key_pem());
        AppCertificate::from_pem(&both, &both).unwrap();
        let e = AppCertificate::from_pem(&one.pem(), &two.private_key_pem()).unwrap_err();
        assert!(e.contains("does not belong"), "{e}");
        let e = AppCertificate::from_pem("hello", &one.private_key_pem()).unwrap_err();
        assert!(e.contains("not a PEM file"), "{e}");
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let e = AppCertificate::from_pem(&one.pem(), encrypted).unwrap_err();
        assert!(e.contains("encrypted"), "{e}");
        let e =
            AppCertificate::from_pem(&one.private_key_pem(), &one.private_key_pem()).unwrap_err();
        assert!(e.contains("no -----BEGIN CERTIFICATE"), "{e}");
    }
}
