//! X.509 certificates as app credentials: reading a registered certificate's RSA key and
//! thumbprints, and making self-signed test certificates and the client assertions they sign.
//!
//! Why hand-written DER: the workspace has `aws-lc-rs` (RSA keys, PKCS#8, SubjectPublicKeyInfo,
//! PKCS#1 and PSS signatures) but no X.509 crate. An app credential needs only three things of a
//! certificate — its DER bytes (for the thumbprints), its SubjectPublicKeyInfo (for the key) and
//! a valid self-signed shape for tests — which a small TLV reader and writer cover. Only RSA keys
//! are accepted, as Entra's `AsymmetricX509Cert` key credentials for client assertions are.
//! Validity dates and the issuer chain are not checked (Entra checks the key credential's
//! `startDateTime`/`endDateTime`, which registration here does not model).

use std::fmt;
use std::io;

use aws_lc_rs::encoding::{AsDer as _, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKey};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256, RSA_PSS_SHA256, RsaEncoding};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::DecodingKey;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use time::macros::format_description;
use time::{Duration, OffsetDateTime};

/// DER tags used here.
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const NULL: u8 = 0x05;
const OID: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
const UTC_TIME: u8 = 0x17;
/// `[0] EXPLICIT`: the certificate's version.
const CONTEXT_0: u8 = 0xa0;
/// sha256WithRSAEncryption, 1.2.840.113549.1.1.11.
const SHA256_WITH_RSA: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
/// id-at-commonName, 2.5.4.3.
const COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];

/// The signature algorithm of a JWT a [`TestCertificate`] signs. Source: Microsoft Learn,
/// "Microsoft identity platform application authentication certificate credentials": `alg`
/// "should be PS256"; RS256 assertions (what older MSAL versions send) are accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum AssertionAlg {
    #[default]
    #[serde(rename = "PS256")]
    Ps256,
    #[serde(rename = "RS256")]
    Rs256,
}

/// A self-signed RSA-2048 certificate and its private key, for tests: register
/// [`TestCertificate::pem`] on an app, give the proxy [`TestCertificate::pem`] and
/// [`TestCertificate::private_key_pem`]. `Debug` shows the thumbprint only.
pub struct TestCertificate {
    pair: KeyPair,
    der: Vec<u8>,
    pkcs8: Vec<u8>,
}

/// A registered certificate as the token endpoint uses it.
#[derive(Clone)]
pub(crate) struct ParsedCertificate {
    pub(crate) sha1: [u8; 20],
    pub(crate) sha256: [u8; 32],
    pub(crate) key: DecodingKey,
}

/// One DER element: its tag, its content and what follows it.
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
    whole: &'a [u8],
    rest: &'a [u8],
}

impl fmt::Debug for TestCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCertificate")
            .field("thumbprint", &self.thumbprint_sha1_hex())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ParsedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedCertificate")
            .field("thumbprint", &hex_upper(&self.sha1))
            .finish_non_exhaustive()
    }
}

impl TestCertificate {
    /// A fresh key and a certificate for it, `CN={common_name}`, valid from a day ago for a year.
    /// Blocks for the key generation (tens of milliseconds).
    pub fn generate(common_name: &str) -> io::Result<TestCertificate> {
        let pair = KeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| io::Error::other("RSA-2048 key generation failed"))?;
        let spki: PublicKeyX509Der<'static> = pair
            .public_key()
            .as_der()
            .map_err(|_| io::Error::other("cannot encode the public key"))?;
        let pkcs8: Pkcs8V1Der<'static> = pair
            .as_der()
            .map_err(|_| io::Error::other("cannot encode the private key"))?;
        let now = OffsetDateTime::now_utc();
        let tbs = tbs_certificate(
            common_name,
            now - Duration::days(1),
            now + Duration::days(365),
            spki.as_ref(),
        )?;
        let signature = rsa_sign(&pair, &RSA_PKCS1_SHA256, &tbs)?;
        let mut bits = vec![0u8];
        bits.extend_from_slice(&signature);
        let der = der(
            SEQUENCE,
            &[tbs, sha256_with_rsa(), der(BIT_STRING, &bits)].concat(),
        );
        Ok(TestCertificate {
            pair,
            der,
            pkcs8: pkcs8.as_ref().to_vec(),
        })
    }

    /// The certificate's DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The certificate as PEM (`-----BEGIN CERTIFICATE-----`).
    pub fn pem(&self) -> String {
        pem("CERTIFICATE", &self.der)
    }

    /// The private key as PKCS#8 DER.
    pub fn private_key_pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn private_key_pem(&self) -> String {
        pem("PRIVATE KEY", &self.pkcs8)
    }

    /// The SHA-1 thumbprint in upper-case hex, as the portal and Entra's errors show it.
    pub fn thumbprint_sha1_hex(&self) -> String {
        hex_upper(&sha1(&self.der))
    }

    /// The `x5t` header: base64url SHA-1 of the DER.
    pub fn x5t(&self) -> String {
        URL_SAFE_NO_PAD.encode(sha1(&self.der))
    }

    /// The `x5t#S256` header: base64url SHA-256 of the DER.
    pub fn x5t_s256(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(&self.der))
    }

    /// A client assertion as Entra documents it: PS256, header `x5t#S256`, claims `aud` (the
    /// token endpoint URL), `iss` = `sub` = `client_id`, a fresh `jti`, `nbf`/`iat` now and `exp`
    /// in ten minutes. Source: Microsoft Learn, "Microsoft identity platform application
    /// authentication certificate credentials".
    pub fn client_assertion(&self, client_id: &str, token_endpoint: &str) -> String {
        let now = crate::keys::now_unix();
        self.sign_jwt(
            &json!({ "alg": "PS256", "typ": "JWT", "x5t#S256": self.x5t_s256() }),
            &json!({
                "aud": token_endpoint,
                "exp": now + 600,
                "iss": client_id,
                "jti": uuid::Uuid::new_v4().to_string(),
                "nbf": now,
                "iat": now,
                "sub": client_id,
            }),
            AssertionAlg::Ps256,
        )
    }

    /// Signs any header and claims with this certificate's key: for assertions Entra refuses.
    /// The header is written as given (its `alg` is not checked against `alg`). Never fails in
    /// practice; if the signer does, the token has an empty signature.
    pub fn sign_jwt(&self, header: &Value, claims: &Value, alg: AssertionAlg) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let encoding: &'static dyn RsaEncoding = match alg {
            AssertionAlg::Ps256 => &RSA_PSS_SHA256,
            AssertionAlg::Rs256 => &RSA_PKCS1_SHA256,
        };
        match rsa_sign(&self.pair, encoding, input.as_bytes()) {
            Ok(signature) => format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)),
            Err(_) => format!("{input}."),
        }
    }
}

impl ParsedCertificate {
    /// Reads a certificate given as PEM, or as base64 of its DER (the app manifest's
    /// `keyCredentials[].key` form). Only RSA keys are accepted.
    pub(crate) fn parse(text: &str) -> Result<ParsedCertificate, String> {
        let der = decode_pem_or_base64(text)?;
        let spki = subject_public_key_info(&der)
            .ok_or_else(|| "not a DER X.509 certificate".to_owned())?;
        let public = PublicKey::from_der(spki)
            .map_err(|_| "the certificate's key is not an RSA key".to_owned())?;
        Ok(ParsedCertificate {
            sha1: sha1(&der),
            sha256: Sha256::digest(&der).into(),
            key: DecodingKey::from_rsa_der(public.as_ref()),
        })
    }
}

/// The TBSCertificate of a v3 self-signed certificate without extensions.
fn tbs_certificate(
    common_name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    spki: &[u8],
) -> io::Result<Vec<u8>> {
    let mut serial = *uuid::Uuid::new_v4().as_bytes();
    // Positive and without a leading zero byte: DER's INTEGER rules.
    serial[0] = (serial[0] & 0x7f) | 0x40;
    let name = der(
        SEQUENCE,
        &der(
            SET,
            &der(
                SEQUENCE,
                &[
                    der(OID, &COMMON_NAME),
                    der(UTF8_STRING, common_name.as_bytes()),
                ]
                .concat(),
            ),
        ),
    );
    let validity = der(
        SEQUENCE,
        &[utc_time(not_before)?, utc_time(not_after)?].concat(),
    );
    Ok(der(
        SEQUENCE,
        &[
            der(CONTEXT_0, &der(INTEGER, &[2])),
            der(INTEGER, &serial),
            sha256_with_rsa(),
            name.clone(),
            validity,
            name,
            spki.to_vec(),
        ]
        .concat(),
    ))
}

fn sha256_with_rsa() -> Vec<u8> {
    der(
        SEQUENCE,
        &[der(OID, &SHA256_WITH_RSA), der(NULL, &[])].concat(),
    )
}

/// `YYMMDDHHMMSSZ` (certificates valid before 2050 use UTCTime).
fn utc_time(at: OffsetDateTime) -> io::Result<Vec<u8>> {
    let text = at
        .format(format_description!(
            "[year repr:last_two][month][day][hour][minute][second]Z"
        ))
        .map_err(io::Error::other)?;
    Ok(der(UTC_TIME, text.as_bytes()))
}

/// One DER element.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap_or(0));
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let significant = &bytes[skip..];
        out.push(0x80 | u8::try_from(significant.len()).unwrap_or(0));
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

/// Reads one DER element; `None` for anything malformed.
fn read(input: &[u8]) -> Option<Tlv<'_>> {
    let (&tag, after_tag) = input.split_first()?;
    let (&first, after_len) = after_tag.split_first()?;
    let (len, body) = if first < 0x80 {
        (usize::from(first), after_len)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || after_len.len() < count {
            return None;
        }
        let len = after_len[..count]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &after_len[count..])
    };
    if body.len() < len {
        return None;
    }
    let header_len = input.len() - body.len();
    Some(Tlv {
        tag,
        content: &body[..len],
        whole: &input[..header_len + len],
        rest: &body[len..],
    })
}

/// The SubjectPublicKeyInfo (whole element) of a DER certificate.
fn subject_public_key_info(cert: &[u8]) -> Option<&[u8]> {
    let certificate = read(cert).filter(|t| t.tag == SEQUENCE)?;
    let tbs = read(certificate.content).filter(|t| t.tag == SEQUENCE)?;
    let mut fields = tbs.content;
    let first = read(fields)?;
    if first.tag == CONTEXT_0 {
        fields = first.rest;
    }
    // serialNumber, signature, issuer, validity, subject; then subjectPublicKeyInfo.
    for expected in [INTEGER, SEQUENCE, SEQUENCE, SEQUENCE, SEQUENCE] {
        let field = read(fields).filter(|t| t.tag == expected)?;
        fields = field.rest;
    }
    read(fields)
        .filter(|t| t.tag == SEQUENCE)
        .map(|spki| spki.whole)
}

fn decode_pem_or_base64(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    let body: String = if text.starts_with("-----BEGIN") {
        let begin = "-----BEGIN CERTIFICATE-----";
        let end = "-----END CERTIFICATE-----";
        let start = text
            .find(begin)
            .ok_or_else(|| "a PEM block that is not a CERTIFICATE".to_owned())?;
        let inner = &text[start + begin.len()..];
        let stop = inner
            .find(end)
            .ok_or_else(|| "a PEM certificate without its END line".to_owned())?;
        inner[..stop].to_owned()
    } else {
        text.to_owned()
    };
    let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD
        .decode(compact)
        .map_err(|_| "neither PEM nor base64 DER".to_owned())
}

fn pem(label: &str, der: &[u8]) -> String {
    let encoded = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn rsa_sign(
    pair: &KeyPair,
    encoding: &'static dyn RsaEncoding,
    message: &[u8],
) -> io::Result<Vec<u8>> {
    let mut signature = vec![0; pair.public_modulus_len()];
    pair.sign(encoding, &SystemRandom::new(), message, &mut signature)
        .map_err(|_| io::Error::other("RSA signing failed"))?;
    Ok(signature)
}

pub(crate) fn sha1(bytes: &[u8]) -> [u8; 20] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes);
    let mut out = [0u8; 20];
    out.copy_from_slice(digest.as_ref());
    out
}

pub(crate) fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, Validation};

    #[test]
    fn a_generated_certificate_parses_back_to_its_key_and_thumbprints() {
        let cert = TestCertificate::generate("emulator-test").unwrap();
        let parsed = ParsedCertificate::parse(&cert.pem()).unwrap();
        assert_eq!(hex_upper(&parsed.sha1), cert.thumbprint_sha1_hex());
        assert_eq!(URL_SAFE_NO_PAD.encode(parsed.sha256), cert.x5t_s256());
        assert_eq!(URL_SAFE_NO_PAD.encode(parsed.sha1), cert.x5t());
        let from_base64 = ParsedCertificate::parse(&STANDARD.encode(cert.der())).unwrap();
        assert_eq!(from_base64.sha256, parsed.sha256);

        for (alg, jwt_alg) in [
            (AssertionAlg::Ps256, Algorithm::PS256),
            (AssertionAlg::Rs256, Algorithm::RS256),
        ] {
            let token = cert.sign_jwt(
                &json!({"alg": jwt_alg, "typ": "JWT"}),
                &json!({"exp": crate::keys::now_unix() + 60}),
                alg,
            );
            let v = Validation::new(jwt_alg);
            assert!(jsonwebtoken::decode::<Value>(&token, &parsed.key, &v).is_ok());
        }
        let other = TestCertificate::generate("other").unwrap();
        let token = other.client_assertion("c", "https://x/token");
        let mut v = Validation::new(Algorithm::PS256);
        v.validate_aud = false;
        assert!(jsonwebtoken::decode::<Value>(&token, &parsed.key, &v).is_err());
        assert!(
            jsonwebtoken::decode::<Value>(
                &token,
                &ParsedCertificate::parse(&other.pem()).unwrap().key,
                &v
            )
            .is_ok()
        );
        assert!(!format!("{cert:?}").contains(&cert.private_key_pem()[30..60]));
        assert!(
            cert.private_key_pem()
                .starts_with("-----BEGIN PRIVATE KEY-----\n")
        );
    }

    #[test]
    fn der_lengths_and_malformed_input() {
        assert_eq!(der(OID, &[1, 2]), vec![OID, 2, 1, 2]);
        let long = der(SEQUENCE, &[0u8; 300]);
        assert_eq!(&long[..4], &[SEQUENCE, 0x82, 0x01, 0x2c]);
        let t = read(&long).unwrap();
        assert_eq!(t.content.len(), 300);
        assert!(t.rest.is_empty());
        assert!(read(&[SEQUENCE, 0x82, 0x01]).is_none());
        assert!(read(&[SEQUENCE, 5, 1]).is_none());
        assert!(ParsedCertificate::parse("not base64!").is_err());
        assert!(ParsedCertificate::parse(&STANDARD.encode([SEQUENCE, 0])).is_err());
        assert!(
            ParsedCertificate::parse(
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"
            )
            .is_err()
        );
    }
}
