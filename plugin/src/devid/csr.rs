//! PKCS#10 certificate requests (RFC 2986) whose signature is made by a key that never leaves the TPM: the
//! request info is encoded here, its SHA-256 digest is signed by the caller's signer, and the result is
//! wrapped with the algorithm pinned to the key type.

use std::str::FromStr;

use der::asn1::{BitString, ObjectIdentifier};
use der::{Decode, Encode};
use sha2::Digest;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo, Version};

/// sha256WithRSAEncryption (RFC 4055).
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
/// ecdsa-with-SHA256 (RFC 5758).
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");

/// Why a request could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// The subject common name is not usable.
    #[error("subject CN {0:?} is not usable")]
    Subject(String),
    /// Encoding failed.
    #[error("encoding the request: {0}")]
    Der(der::Error),
    /// The TPM did not sign.
    #[error("signing the request: {0}")]
    Sign(tpm::TpmError),
    /// The TPM's ECDSA signature is not `r || s` of 32 bytes each.
    #[error("signing the request: {0}")]
    Signature(super::signature::NotRawEcdsa),
}

/// Builds a PEM CSR for `spki_der` with subject `CN=<cn>`, signed by `sign` (SHA-256 digest in, raw RSA
/// signature or `r || s` out).
pub fn build(
    spki_der: &[u8],
    key_type: tpm::KeyType,
    cn: &str,
    sign: impl FnOnce(&[u8; 32]) -> Result<Vec<u8>, tpm::TpmError>,
) -> Result<String, CsrError> {
    if cn.is_empty() || cn.len() > 64 || cn.contains(['=', ',', '+', '"', '\\', '<', '>', ';']) {
        return Err(CsrError::Subject(cn.to_owned()));
    }
    let subject = Name::from_str(&format!("CN={cn}")).map_err(|_| CsrError::Subject(cn.to_owned()))?;
    let info = CertReqInfo {
        version: Version::V1,
        subject,
        public_key: SubjectPublicKeyInfoOwned::from_der(spki_der)?,
        attributes: Default::default(),
    };
    let digest: [u8; 32] = sha2::Sha256::digest(info.to_der()?).into();
    let raw = sign(&digest)?;
    let (oid, params, signature) = match key_type {
        tpm::KeyType::Rsa2048 => (SHA256_WITH_RSA, Some(der::asn1::Null.into()), raw),
        tpm::KeyType::EccP256 => (ECDSA_WITH_SHA256, None, super::signature::der(key_type, raw)?),
    };
    let req = CertReq {
        info,
        algorithm: AlgorithmIdentifierOwned { oid, parameters: params },
        signature: BitString::from_bytes(&signature)?,
    };
    Ok(der::pem::encode_string("CERTIFICATE REQUEST", der::pem::LineEnding::LF, &req.to_der()?)
        .map_err(der::Error::from)?)
}

impl From<der::Error> for CsrError {
    fn from(e: der::Error) -> Self {
        CsrError::Der(e)
    }
}

impl From<tpm::TpmError> for CsrError {
    fn from(e: tpm::TpmError) -> Self {
        CsrError::Sign(e)
    }
}

impl From<super::signature::NotRawEcdsa> for CsrError {
    fn from(e: super::signature::NotRawEcdsa) -> Self {
        CsrError::Signature(e)
    }
}
