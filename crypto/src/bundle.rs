//! Trust bundles: a set of X.509 certificates, read from PEM (as SPIRE's agent reads `trust_bundle_format =
//! "pem"`) or SPIFFE bundle JSON (`"spiffe"`), and rendered back in either form.
//!
//! Invariants: every certificate parses as X.509; at least one is a CA (basicConstraints cA=true); the number
//! of certificates is bounded.

use base64::Engine;
use der::asn1::ObjectIdentifier;
use der::{Decode, Encode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, SubjectAltName};
use x509_cert::Certificate;

use crate::error::BundleError;
use crate::pem;

/// Most certificates a bundle may hold.
pub const MAX_CERTIFICATES: usize = 1000;

const BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const PRIME256V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const SECP521R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// A verified-to-parse trust bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    certs: Vec<Vec<u8>>,
    refresh_hint: Option<u64>,
    sequence: Option<u64>,
}

fn is_ca(cert: &Certificate) -> bool {
    cert.tbs_certificate.extensions.iter().flatten().any(|ext| {
        ext.extn_id == BASIC_CONSTRAINTS
            && BasicConstraints::from_der(ext.extn_value.as_bytes()).map(|bc| bc.ca).unwrap_or(false)
    })
}

impl Bundle {
    /// Parses PEM certificates or SPIFFE bundle JSON.
    pub fn parse(text: &str) -> Result<Bundle, BundleError> {
        if text.trim_start().starts_with('{') {
            return Self::parse_json(text);
        }
        let blocks = pem::blocks(text).map_err(|_| BundleError::BadPem)?;
        if blocks.len() > MAX_CERTIFICATES {
            return Err(BundleError::TooMany(MAX_CERTIFICATES));
        }
        let mut certs = Vec::with_capacity(blocks.len());
        for b in blocks {
            if b.label != "CERTIFICATE" {
                return Err(BundleError::NotCertificate(b.label));
            }
            certs.push(b.der);
        }
        Self::from_certs(certs, None, None)
    }

    fn parse_json(text: &str) -> Result<Bundle, BundleError> {
        let bad = |s: &str| BundleError::BadJson(s.to_owned());
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| BundleError::BadJson(e.to_string()))?;
        let keys = v.get("keys").and_then(|k| k.as_array()).ok_or_else(|| bad("no \"keys\" array"))?;
        if keys.len() > MAX_CERTIFICATES {
            return Err(BundleError::TooMany(MAX_CERTIFICATES));
        }
        let mut certs = Vec::new();
        for key in keys {
            match key.get("use").and_then(|u| u.as_str()) {
                Some("x509-svid") => {
                    let x5c =
                        key.get("x5c").and_then(|x| x.as_array()).ok_or_else(|| bad("x509-svid key without x5c"))?;
                    let [one] = x5c.as_slice() else {
                        return Err(bad("x509-svid key must have exactly one x5c certificate"));
                    };
                    let b64 = one.as_str().ok_or_else(|| bad("x5c entry is not a string"))?;
                    let der = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map_err(|_| bad("x5c entry is not base64"))?;
                    certs.push(der);
                }
                Some("jwt-svid" | "wit-svid") => {}
                Some(other) => return Err(BundleError::BadJson(format!("unknown key use {other:?}"))),
                None => return Err(bad("key without \"use\"")),
            }
        }
        let num = |name: &str| v.get(name).and_then(|n| n.as_u64());
        Self::from_certs(certs, num("spiffe_refresh_hint"), num("spiffe_sequence"))
    }

    fn from_certs(
        certs: Vec<Vec<u8>>,
        refresh_hint: Option<u64>,
        sequence: Option<u64>,
    ) -> Result<Bundle, BundleError> {
        if certs.is_empty() {
            return Err(BundleError::NoCertificates);
        }
        let mut any_ca = false;
        for (index, der) in certs.iter().enumerate() {
            let cert = Certificate::from_der(der).map_err(|_| BundleError::BadCertificate { index })?;
            // What cannot be served in every format is refused here, once (an Ed25519-only bundle used to be
            // accepted and then served as `{"keys":[]}` with 200).
            if jwk(der).is_none() {
                return Err(BundleError::UnsupportedKey { index });
            }
            any_ca |= is_ca(&cert);
        }
        if !any_ca {
            return Err(BundleError::NoCaCertificate);
        }
        Ok(Bundle { certs, refresh_hint, sequence })
    }

    /// The same certificates with the SPIFFE refresh hint (seconds) and sequence number set.
    pub fn with_spiffe_metadata(mut self, refresh_hint: Option<u64>, sequence: Option<u64>) -> Bundle {
        self.refresh_hint = refresh_hint;
        self.sequence = sequence;
        self
    }

    /// The trust domains of the SPIFFE IDs (`spiffe://TD/...` URI SANs) the certificates carry, in order, once
    /// each. SPIRE's CA certificates carry `spiffe://TD`. The scheme is compared without regard to case, as Go's
    /// URL parser (and so SPIRE) reads it; a `spiffe` URI whose trust domain is not a valid one (upper case,
    /// empty, other characters) is an error, never skipped: it could name another trust domain to a reader that
    /// parses it more loosely.
    pub fn spiffe_trust_domains(&self) -> Result<Vec<String>, BundleError> {
        let mut out: Vec<String> = Vec::new();
        for (index, der) in self.certs.iter().enumerate() {
            let Ok(cert) = Certificate::from_der(der) else { continue };
            let Ok(Some((_, san))) = cert.tbs_certificate.get::<SubjectAltName>() else { continue };
            for name in san.0 {
                let GeneralName::UniformResourceIdentifier(uri) = name else { continue };
                let uri = uri.as_str();
                let Some((scheme, rest)) = uri.split_once(':') else { continue };
                if !scheme.eq_ignore_ascii_case("spiffe") {
                    continue;
                }
                let td = rest.strip_prefix("//").map(|r| r.split(['/', '?', '#']).next().unwrap_or_default());
                match td {
                    Some(td) if crate::token::is_trust_domain(td) => {
                        if !out.iter().any(|t| t == td) {
                            out.push(td.to_owned());
                        }
                    }
                    _ => {
                        let uri: String = uri.chars().take(120).collect();
                        return Err(BundleError::BadSpiffeId { index, uri });
                    }
                }
            }
        }
        Ok(out)
    }

    /// The certificates, DER.
    pub fn certificates(&self) -> &[Vec<u8>] {
        &self.certs
    }

    /// `spiffe_sequence`, when the bundle came as SPIFFE JSON carrying it.
    pub fn sequence(&self) -> Option<u64> {
        self.sequence
    }

    /// Canonical PEM: one CERTIFICATE block per certificate.
    pub fn to_pem(&self) -> String {
        self.certs.iter().map(|c| pem::encode("CERTIFICATE", c)).collect()
    }

    /// SPIFFE bundle JSON: one `x509-svid` JWK per certificate with its public key and `x5c`.
    pub fn to_spiffe_json(&self) -> String {
        // Every certificate renders: checked when the bundle was built.
        let keys: Vec<serde_json::Value> = self.certs.iter().filter_map(|der| jwk(der)).collect();
        let mut doc = serde_json::Map::new();
        doc.insert("keys".into(), serde_json::Value::Array(keys));
        if let Some(h) = self.refresh_hint {
            doc.insert("spiffe_refresh_hint".into(), h.into());
        }
        if let Some(s) = self.sequence {
            doc.insert("spiffe_sequence".into(), s.into());
        }
        serde_json::Value::Object(doc).to_string()
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|x| *x != 0).unwrap_or(b.len().saturating_sub(1));
    &b[first..]
}

/// The JWK of a certificate's public key (RSA or EC), with `use` and `x5c`; `None` for other key types, which
/// [`Bundle`] refuses when it is built.
fn jwk(der: &[u8]) -> Option<serde_json::Value> {
    let cert = Certificate::from_der(der).ok()?;
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let key = spki.subject_public_key.as_bytes()?;
    let mut obj = serde_json::Map::new();
    obj.insert("use".into(), "x509-svid".into());
    match spki.algorithm.oid {
        RSA_ENCRYPTION => {
            let mut reader = der::SliceReader::new(key).ok()?;
            let (n, e) = der::Reader::sequence(&mut reader, |r| {
                let n = der::asn1::UintRef::decode(r)?;
                let e = der::asn1::UintRef::decode(r)?;
                Ok((n.as_bytes().to_vec(), e.as_bytes().to_vec()))
            })
            .ok()?;
            obj.insert("kty".into(), "RSA".into());
            obj.insert("n".into(), b64url(strip_zeros(&n)).into());
            obj.insert("e".into(), b64url(strip_zeros(&e)).into());
        }
        EC_PUBLIC_KEY => {
            let curve: ObjectIdentifier = spki.algorithm.parameters.as_ref()?.decode_as().ok()?;
            let (crv, len) = match curve {
                PRIME256V1 => ("P-256", 32),
                SECP384R1 => ("P-384", 48),
                SECP521R1 => ("P-521", 66),
                _ => return None,
            };
            if key.len() != 1 + 2 * len || key[0] != 4 {
                return None;
            }
            obj.insert("kty".into(), "EC".into());
            obj.insert("crv".into(), crv.into());
            obj.insert("x".into(), b64url(&key[1..1 + len]).into());
            obj.insert("y".into(), b64url(&key[1 + len..]).into());
        }
        _ => return None,
    }
    let reencoded = cert.to_der().ok()?;
    obj.insert(
        "x5c".into(),
        serde_json::Value::Array(vec![base64::engine::general_purpose::STANDARD.encode(reencoded).into()]),
    );
    Some(serde_json::Value::Object(obj))
}
