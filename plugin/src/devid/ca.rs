//! `sign-csr`: a file-based DevID CA for labs and tests (production CAs sign the CSR themselves). It checks the
//! request's self-signature (proof of possession of the DevID key) and issues a leaf certificate for the
//! DevID key, followed by the intermediates, as SPIRE's agent expects in `devid_cert_path`.
//!
//! The CA key is used in software here (P-256 with `p256`, RSA with `rsa`, whose private-key operations are not
//! constant-time: RUSTSEC-2023-0071). That is acceptable for a one-shot local command, not for a network
//! service; this is why it is a lab tool.

use std::time::Duration;

use der::asn1::ObjectIdentifier;
use der::{DecodePem, Encode, EncodePem};
use spki::EncodePublicKey;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::request::CertReq;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Validity;
use x509_cert::Certificate;

const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");

/// Why a certificate was not issued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The CSR is not a PEM certificate request.
    #[error("CSR: not a PEM CERTIFICATE REQUEST: {0}")]
    CsrPem(der::Error),
    /// The CSR's key is not one a DevID may have.
    #[error("CSR: {0}")]
    CsrKey(crypto::KeyError),
    /// The CSR's signature algorithm is not the one of its key.
    #[error("CSR: signature algorithm {oid} does not match the {alg} key")]
    CsrAlgorithm {
        /// The algorithm the CSR names.
        oid: ObjectIdentifier,
        /// The key's.
        alg: crypto::Alg,
    },
    /// The CSR's self-signature does not verify.
    #[error("CSR: self-signature does not verify: no proof the requester holds the DevID key")]
    CsrSignature,
    /// The CA certificate is not a PEM certificate.
    #[error("CA: certificate: {0}")]
    CaCert(der::Error),
    /// The CA key is of no kind this CA signs with.
    #[error("CA: the key is neither a P-256 nor an RSA private key in PEM (PKCS#8 or SEC1)")]
    CaKey,
    /// The CA key is not the CA certificate's.
    #[error("CA: the key does not belong to the CA certificate")]
    CaMismatch,
    /// A public key could not be encoded.
    #[error("encoding a public key: {0}")]
    Spki(spki::Error),
    /// A structure could not be encoded.
    #[error("encoding: {0}")]
    Der(der::Error),
    /// Building or signing the certificate failed.
    #[error("issuing: {0}")]
    Issue(x509_cert::builder::Error),
}

enum CaKey {
    Ec(p256::ecdsa::SigningKey),
    Rsa(Box<rsa::pkcs1v15::SigningKey<sha2::Sha256>>),
}

fn ca_key(pem: &str) -> Result<(CaKey, Vec<u8>), CaError> {
    use p256::pkcs8::DecodePrivateKey;
    if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
        let spki = k.verifying_key().to_public_key_der()?.into_vec();
        return Ok((CaKey::Ec(k), spki));
    }
    if let Ok(k) = p256::SecretKey::from_sec1_pem(pem) {
        let k = p256::ecdsa::SigningKey::from(k);
        let spki = k.verifying_key().to_public_key_der()?.into_vec();
        return Ok((CaKey::Ec(k), spki));
    }
    if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_pem(pem) {
        let spki = k.to_public_key().to_public_key_der()?.into_vec();
        return Ok((CaKey::Rsa(Box::new(rsa::pkcs1v15::SigningKey::new(k))), spki));
    }
    Err(CaError::CaKey)
}

/// Checks the CSR's self-signature and returns it.
pub fn verified_csr(csr_pem: &str) -> Result<CertReq, CaError> {
    let req = CertReq::from_pem(csr_pem.as_bytes()).map_err(CaError::CsrPem)?;
    let spki = req.info.public_key.to_der()?;
    let key = crypto::keys::VerifyingKey::from_spki_der("DevID", &spki).map_err(CaError::CsrKey)?;
    let expected = match key.alg() {
        crypto::Alg::Rs256 => SHA256_WITH_RSA,
        crypto::Alg::Es256 => ECDSA_WITH_SHA256,
    };
    if req.algorithm.oid != expected {
        return Err(CaError::CsrAlgorithm { oid: req.algorithm.oid, alg: key.alg() });
    }
    let info = req.info.to_der()?;
    let sig = req.signature.as_bytes().ok_or(CaError::CsrSignature)?;
    if !key.verify_x509(&info, sig) {
        return Err(CaError::CsrSignature);
    }
    Ok(req)
}

/// Issues a leaf certificate for the CSR, valid for `days`, signed by the CA; returns the leaf followed by
/// `chain_pem` (the intermediates, if any) as PEM.
pub fn sign_csr(
    csr_pem: &str,
    ca_cert_pem: &str,
    ca_key_pem: &str,
    chain_pem: &str,
    days: u32,
) -> Result<String, CaError> {
    let req = verified_csr(csr_pem)?;
    let ca = Certificate::from_pem(ca_cert_pem.as_bytes()).map_err(CaError::CaCert)?;
    let (key, key_spki) = ca_key(ca_key_pem)?;
    let ca_spki = ca.tbs_certificate.subject_public_key_info.to_der()?;
    if ca_spki != key_spki {
        return Err(CaError::CaMismatch);
    }
    let mut serial = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut serial);
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    let serial = SerialNumber::new(&serial)?;
    let validity = Validity::from_now(Duration::from_secs(u64::from(days) * 86_400))?;
    let profile = Profile::Leaf {
        issuer: ca.tbs_certificate.subject.clone(),
        enable_key_agreement: false,
        enable_key_encipherment: false,
    };
    let subject = req.info.subject.clone();
    let spki = req.info.public_key.clone();
    let cert = match &key {
        CaKey::Ec(k) => CertificateBuilder::new(profile, serial, validity, subject, spki, k)
            .and_then(|b| b.build::<p256::ecdsa::DerSignature>()),
        CaKey::Rsa(k) => CertificateBuilder::new(profile, serial, validity, subject, spki, k.as_ref())
            .and_then(|b| b.build::<rsa::pkcs1v15::Signature>()),
    }?;
    let mut out = cert.to_pem(der::pem::LineEnding::LF)?;
    out.push_str(chain_pem);
    Ok(out)
}

impl From<spki::Error> for CaError {
    fn from(e: spki::Error) -> Self {
        CaError::Spki(e)
    }
}

impl From<der::Error> for CaError {
    fn from(e: der::Error) -> Self {
        CaError::Der(e)
    }
}

impl From<x509_cert::builder::Error> for CaError {
    fn from(e: x509_cert::builder::Error) -> Self {
        CaError::Issue(e)
    }
}
