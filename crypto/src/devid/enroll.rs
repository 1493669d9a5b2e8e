//! The enrollment CA's checks, pure: what a node proves before its DevID certificate is issued
//! (`reference devid-enrollment.md` §1.4, the TCG's EK-rooted owner flow), in one session of two exchanges.
//!
//! 1. The node sends its EK (public area, and certificate when the TPM has one), a fresh AK and its DevID's public
//!    area ([`EnrollRequest`]). The CA checks the EK against its [`EkPolicy`], the AK's and the DevID's attributes,
//!    and answers a nonce and a credential for the AK under the EK ([`EnrollChallenge`], from [`begin`]).
//! 2. The node has the AK certify the DevID with the nonce as qualifying data, signs the nonce with the DevID, and
//!    activates the credential ([`EnrollAnswer`]). The CA checks all three ([`Begun::finish`]): the AK is in the
//!    EK's TPM (only that TPM can recover the secret), the DevID is fixedTPM, fixedParent and sensitiveDataOrigin in
//!    that TPM (certified by that AK, for this exchange), and the node holds it.
//!
//! Who may enroll (an inventory name, a token, a certificate being renewed) and what is issued are the CA's
//! business; nothing here reads a clock or a file.
//!
//! Invariants: nothing the node sends is trusted before it verifies; the AK's Name bound into the credential is
//! computed from the very bytes whose attributes were checked; secrets are compared in constant time.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::ek::{spki_der, EkPolicy, EkProof};
use super::tpm2::{alg, attr, KeyParams, TpmPublic};
use super::wire::{b64, b64_list};
use super::{constant_time_eq, make_credential, random, strip, tpm2, Certification, DevIdError, ExtraChecks};

/// Largest accepted request or answer.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Exchange 1, node to CA.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The EK's TPMT_PUBLIC.
    #[serde(with = "b64")]
    pub ek_pub: Vec<u8>,
    /// The EK certificate (DER), empty when the TPM has none.
    #[serde(with = "b64", default)]
    pub ek_cert: Vec<u8>,
    /// A fresh AK's TPMT_PUBLIC.
    #[serde(with = "b64")]
    pub ak_pub: Vec<u8>,
    /// The DevID's TPMT_PUBLIC.
    #[serde(with = "b64")]
    pub devid_pub: Vec<u8>,
    /// A one-time enrollment token, when the EK is not approved by the inventory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The DevID certificate chain being renewed (leaf first, DER), when this is a renewal.
    #[serde(with = "b64_list", default, skip_serializing_if = "Vec::is_empty")]
    pub renew: Vec<Vec<u8>>,
}

/// Exchange 1, CA to node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollChallenge {
    /// The session to answer in.
    pub session: String,
    /// The nonce: the certification's qualifying data and the message the DevID signs.
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    /// TPM2B_ID_OBJECT contents, for the AK under the EK.
    #[serde(with = "b64")]
    pub credential: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET contents.
    #[serde(with = "b64")]
    pub secret: Vec<u8>,
}

/// Exchange 2, node to CA.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollAnswer {
    /// The session it answers.
    pub session: String,
    /// TPMS_ATTEST of TPM2_Certify(DevID, AK, qualifyingData = nonce).
    #[serde(with = "b64")]
    pub certify_info: Vec<u8>,
    /// The AK's TPMT_SIGNATURE over it.
    #[serde(with = "b64")]
    pub certify_signature: Vec<u8>,
    /// The DevID's signature over the nonce (SHA-256; PKCS#1 v1.5 for RSA, DER for ECDSA).
    #[serde(with = "b64")]
    pub devid_signature: Vec<u8>,
    /// The secret the AK recovered from the credential.
    #[serde(with = "b64")]
    pub activated_secret: Vec<u8>,
}

/// Exchange 2, CA to node: the issued certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrolled {
    /// The DevID certificate, then the CA's chain (PEM).
    pub chain_pem: String,
    /// The approved name (the certificate's subject CN).
    pub name: String,
    /// The certificate's serial, hex.
    pub serial: String,
    /// Its notAfter, unix seconds.
    pub not_after: u64,
}

/// A request that passed every check of exchange 1, waiting for the node's answer.
pub struct Begun {
    /// What was proved about the EK.
    pub ek: EkProof,
    /// The DevID key's SubjectPublicKeyInfo (DER): the key the certificate will carry.
    pub devid_spki: Vec<u8>,
    /// The DevID's TPMT_PUBLIC as sent.
    pub devid_pub: Vec<u8>,
    devid: TpmPublic,
    ak: TpmPublic,
    nonce: [u8; 32],
    secret: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Begun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Begun").field("ek", &self.ek.hash).finish_non_exhaustive()
    }
}

/// Checks exchange 1 at `now`: the EK under `ek`, the AK (an RSA attestation key the TPM made: restricted, sign,
/// fixedTPM, fixedParent, sensitiveDataOrigin), the DevID (an RSA-2048 or P-256 signing key the TPM made and
/// cannot export: fixedTPM, fixedParent, sensitiveDataOrigin, not restricted, not a decryption key). Returns the
/// challenge's nonce, credential and secret (the session is the caller's) and the state to finish with.
pub fn begin(req: &EnrollRequest, ek: &EkPolicy, now: u64) -> Result<(EnrollChallenge, Begun), DevIdError> {
    let parse = |field: &'static str, bytes: &[u8]| {
        if bytes.is_empty() {
            return Err(DevIdError::Missing(field));
        }
        TpmPublic::parse(bytes, field).map_err(|source| DevIdError::Tpm2 { field, cause: source })
    };
    let ek_pub = parse("EK public area", &req.ek_pub)?;
    let ak = parse("AK public area", &req.ak_pub)?;
    let devid = parse("DevID public area", &req.devid_pub)?;
    let proof = ek.check(&ek_pub, Some(&req.ek_cert).filter(|c| !c.is_empty()).map(Vec::as_slice), now)?;
    check_ak(&ak)?;
    check_devid(&devid)?;
    let devid_spki = spki_der(&devid)?;

    let KeyParams::Rsa { modulus: ek_n, exponent: ek_e, .. } = &ek_pub.params else {
        return Err(DevIdError::EkPubNotRsa);
    };
    let (sym_alg, sym_bits, sym_mode) = ek_pub.symmetric;
    if sym_alg != alg::AES || sym_mode != alg::CFB || ek_pub.name_alg != alg::SHA256 {
        return Err(DevIdError::EkKey("the EK is not an RSA storage key with AES-CFB and SHA-256"));
    }
    let ak_name =
        tpm2::name(&req.ak_pub, ak.name_alg).map_err(|source| DevIdError::Tpm2 { field: "AKPub", cause: source })?;
    let nonce = random::<32>()?;
    let secret = Zeroizing::new(random::<32>()?);
    let seed = Zeroizing::new(random::<32>()?);
    let (credential, enc_secret) =
        make_credential(ek_n, TpmPublic::rsa_exponent(*ek_e), sym_bits, &ak_name, &secret[..], &seed[..])?;
    let challenge = EnrollChallenge { session: String::new(), nonce: nonce.to_vec(), credential, secret: enc_secret };
    let begun = Begun { ek: proof, devid_spki, devid_pub: req.devid_pub.clone(), devid, ak, nonce, secret };
    Ok((challenge, begun))
}

fn check_ak(ak: &TpmPublic) -> Result<(), DevIdError> {
    if !matches!(ak.params, KeyParams::Rsa { .. }) {
        return Err(DevIdError::AkNotRsa);
    }
    let required = attr::RESTRICTED | attr::SIGN | attr::FIXED_TPM | attr::FIXED_PARENT | attr::SENSITIVE_DATA_ORIGIN;
    if !ak.has(required) || ak.has(attr::DECRYPT) {
        return Err(DevIdError::AkAttributes { attributes: ak.attributes });
    }
    if ak.scheme.scheme != alg::RSASSA || ak.scheme.hash != alg::SHA256 {
        return Err(DevIdError::CertifyScheme { scheme: ak.scheme.scheme, hash: ak.scheme.hash });
    }
    Ok(())
}

fn check_devid(devid: &TpmPublic) -> Result<(), DevIdError> {
    let required = attr::SIGN | attr::FIXED_TPM | attr::FIXED_PARENT | attr::SENSITIVE_DATA_ORIGIN;
    if !devid.has(required) || devid.has(attr::RESTRICTED) || devid.has(attr::DECRYPT) {
        return Err(DevIdError::DevIdAttributes { attributes: devid.attributes });
    }
    match &devid.params {
        KeyParams::Rsa { bits: 2048, .. } => Ok(()),
        KeyParams::Ecc { curve: tpm2::ECC_NIST_P256, .. } => Ok(()),
        _ => Err(DevIdError::DevIdKeyType),
    }
}

impl Begun {
    /// Checks exchange 2: the secret the AK recovered (so the AK is in the EK's TPM), the AK's certification of
    /// the DevID for this nonce (so the DevID is fixed in that TPM), and the DevID's signature over the nonce (so
    /// the node holds it).
    pub fn finish(&self, answer: &EnrollAnswer) -> Result<(), DevIdError> {
        if !constant_time_eq(&answer.activated_secret, &self.secret[..]) {
            return Err(DevIdError::ProofOfResidency);
        }
        let certification = Certification {
            ak_pub: &self.ak,
            info: &answer.certify_info,
            signature: &answer.certify_signature,
            devid_pub: &self.devid,
            devid_pub_raw: &self.devid_pub,
        };
        certification.check(ExtraChecks::default(), Some(&self.nonce))?;
        if !pop_verifies(&self.devid, &self.nonce, &answer.devid_signature) {
            return Err(DevIdError::ProofOfPossession);
        }
        Ok(())
    }
}

/// Whether `signature` is the DevID key's SHA-256 signature over `message` (PKCS#1 v1.5, or ECDSA P-256 DER).
fn pop_verifies(devid: &TpmPublic, message: &[u8], signature: &[u8]) -> bool {
    match &devid.params {
        KeyParams::Rsa { modulus, exponent, .. } => {
            let e = TpmPublic::rsa_exponent(*exponent).to_be_bytes();
            ring::signature::RsaPublicKeyComponents { n: strip(modulus), e: strip(&e) }
                .verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok()
        }
        KeyParams::Ecc { .. } => match spki_der(devid) {
            Ok(spki) => {
                let Ok(info) = <spki::SubjectPublicKeyInfoRef as der::Decode>::from_der(&spki) else { return false };
                let Some(point) = info.subject_public_key.as_bytes() else { return false };
                ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, point)
                    .verify(message, signature)
                    .is_ok()
            }
            Err(_) => false,
        },
    }
}
