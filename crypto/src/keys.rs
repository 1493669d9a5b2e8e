//! Verification keys: parsed from PEM (SubjectPublicKeyInfo, or PKCS#1 for RSA as golang-jwt accepts), with
//! the JWS algorithm fixed by the key type. Verification runs on `ring` (about 10x faster than the pure-Rust
//! `rsa` crate for RSA-2048, see the README's performance section).

use std::fmt;
use std::sync::Arc;

use der::asn1::{BitString, ObjectIdentifier, UintRef};
use der::{Decode, Encode, Reader};
use sha2::Digest;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef};

use crate::error::KeyError;
use crate::pem;
use crate::Alg;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const PRIME256V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

#[derive(Clone)]
struct Inner {
    name: String,
    alg: Alg,
    /// What ring verifies against: PKCS#1 RSAPublicKey DER, or the uncompressed P-256 point.
    ring_key: Vec<u8>,
    /// The SubjectPublicKeyInfo, DER.
    spki_der: Vec<u8>,
    fingerprint: String,
}

/// A public key trusted to sign one layer of a token. Cheap to clone.
#[derive(Clone)]
pub struct VerifyingKey(Arc<Inner>);

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey").field("name", &self.0.name).field("alg", &self.0.alg).finish()
    }
}

/// Splits a PKCS#1 RSAPublicKey into (modulus bits, exponent).
fn rsa_params(pkcs1: &[u8]) -> Option<(usize, Vec<u8>)> {
    let mut reader = der::SliceReader::new(pkcs1).ok()?;
    let (n, e) = reader
        .sequence(|r| {
            let n = UintRef::decode(r)?;
            let e = UintRef::decode(r)?;
            Ok((n.as_bytes().to_vec(), e.as_bytes().to_vec()))
        })
        .ok()?;
    reader.finish(()).ok()?;
    let lead = n.first().copied().unwrap_or(0);
    let bits = n.len() * 8 - lead.leading_zeros() as usize;
    Some((bits, e))
}

/// The DER SubjectPublicKeyInfo of a key in its one canonical form: RSA with the NULL parameter (RFC 3279
/// 2.3.1) around the PKCS#1 key as given (DER, so its integers are already minimal), P-256 with the named
/// curve and the uncompressed point.
fn canonical_spki(alg: Alg, key: &[u8]) -> Option<Vec<u8>> {
    let algorithm = match alg {
        Alg::Rs256 => AlgorithmIdentifierOwned { oid: RSA_ENCRYPTION, parameters: Some(der::asn1::Null.into()) },
        Alg::Es256 => AlgorithmIdentifierOwned { oid: EC_PUBLIC_KEY, parameters: Some(PRIME256V1.into()) },
    };
    let spki = SubjectPublicKeyInfoOwned { algorithm, subject_public_key: BitString::from_bytes(key).ok()? };
    spki.to_der().ok()
}

impl VerifyingKey {
    /// Parses a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) or `RSA PUBLIC KEY` (PKCS#1). `name` labels the key in
    /// errors and logs (upstream uses the file name).
    pub fn from_pem(name: &str, pem_text: &[u8]) -> Result<VerifyingKey, KeyError> {
        let not_pem = |reason: &str| KeyError::NotPem { name: name.to_owned(), reason: reason.to_owned() };
        let text = std::str::from_utf8(pem_text).map_err(|_| not_pem("not text"))?;
        let blocks = pem::blocks(text).map_err(|_| not_pem("broken PEM framing or base64"))?;
        let block = blocks.first().ok_or_else(|| not_pem("no PEM block"))?;
        match block.label.as_str() {
            "PUBLIC KEY" => Self::from_spki_der(name, &block.der),
            "RSA PUBLIC KEY" => {
                let spki = SubjectPublicKeyInfoOwned {
                    algorithm: AlgorithmIdentifierOwned {
                        oid: RSA_ENCRYPTION,
                        parameters: Some(der::asn1::Null.into()),
                    },
                    subject_public_key: BitString::from_bytes(&block.der)
                        .map_err(|_| KeyError::Malformed { name: name.to_owned() })?,
                };
                let der = spki.to_der().map_err(|_| KeyError::Malformed { name: name.to_owned() })?;
                Self::from_spki_der(name, &der)
            }
            other => Err(not_pem(&format!("found a {other:?} block"))),
        }
    }

    /// Parses a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(name: &str, der_bytes: &[u8]) -> Result<VerifyingKey, KeyError> {
        let malformed = || KeyError::Malformed { name: name.to_owned() };
        let unsupported = |found: String| KeyError::Unsupported { name: name.to_owned(), found };
        let spki = SubjectPublicKeyInfoRef::from_der(der_bytes).map_err(|_| malformed())?;
        let key_bytes = spki.subject_public_key.as_bytes().ok_or_else(malformed)?;
        let (alg, ring_key) = match spki.algorithm.oid {
            RSA_ENCRYPTION => {
                let (bits, e) = rsa_params(key_bytes).ok_or_else(malformed)?;
                if !(2048..=8192).contains(&bits) {
                    return Err(unsupported(format!("RSA-{bits}")));
                }
                if e.len() > 4 || e.last().is_none_or(|b| b & 1 == 0) {
                    return Err(unsupported("RSA with an unusual exponent".into()));
                }
                (Alg::Rs256, key_bytes.to_vec())
            }
            EC_PUBLIC_KEY => {
                let curve: ObjectIdentifier = spki.algorithm.parameters_oid().map_err(|_| malformed())?;
                match curve {
                    PRIME256V1 if key_bytes.len() == 65 && key_bytes[0] == 4 => (Alg::Es256, key_bytes.to_vec()),
                    PRIME256V1 => return Err(malformed()),
                    SECP384R1 => return Err(unsupported("ECC P-384".into())),
                    other => return Err(unsupported(format!("ECC curve {other}"))),
                }
            }
            ED25519 => return Err(unsupported("Ed25519".into())),
            other => return Err(unsupported(format!("algorithm {other}"))),
        };
        // One key, one encoding: the same key written with or without the RSA NULL parameter (both seen in the
        // wild) must compare equal, or one key could count twice toward a threshold.
        let spki_der = canonical_spki(alg, &ring_key).ok_or_else(malformed)?;
        let fingerprint = sha2::Sha256::digest(&spki_der).iter().map(|b| format!("{b:02x}")).collect();
        Ok(VerifyingKey(Arc::new(Inner { name: name.to_owned(), alg, ring_key, spki_der, fingerprint })))
    }

    /// The key as a PEM `PUBLIC KEY` block (SubjectPublicKeyInfo).
    pub fn to_pem(&self) -> String {
        pem::encode("PUBLIC KEY", &self.0.spki_der)
    }

    /// The same key under another name.
    pub fn renamed(&self, name: &str) -> VerifyingKey {
        VerifyingKey(Arc::new(Inner { name: name.to_owned(), ..Inner::clone(&self.0) }))
    }

    /// The key's configured name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The only algorithm this key verifies.
    pub fn alg(&self) -> Alg {
        self.0.alg
    }

    /// Hex SHA-256 of the canonical SubjectPublicKeyInfo DER: equal for equal keys, however they were encoded.
    pub fn fingerprint(&self) -> &str {
        &self.0.fingerprint
    }

    /// True when `sig` is this key's signature over `message` with its algorithm.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        let alg: &dyn ring::signature::VerificationAlgorithm = match self.0.alg {
            Alg::Rs256 => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            Alg::Es256 => &ring::signature::ECDSA_P256_SHA256_FIXED,
        };
        ring::signature::UnparsedPublicKey::new(alg, &self.0.ring_key).verify(message, sig).is_ok()
    }

    /// True when `sig` is this key's signature over `message` in X.509 form: as [`VerifyingKey::verify`] for RSA,
    /// DER `SEQUENCE { r, s }` for ECDSA (certificates, CSRs).
    pub fn verify_x509(&self, message: &[u8], sig: &[u8]) -> bool {
        let alg: &dyn ring::signature::VerificationAlgorithm = match self.0.alg {
            Alg::Rs256 => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            Alg::Es256 => &ring::signature::ECDSA_P256_SHA256_ASN1,
        };
        ring::signature::UnparsedPublicKey::new(alg, &self.0.ring_key).verify(message, sig).is_ok()
    }

    /// True when both are the same public key.
    pub fn same_key(&self, other: &VerifyingKey) -> bool {
        self.0.fingerprint == other.0.fingerprint
    }
}
