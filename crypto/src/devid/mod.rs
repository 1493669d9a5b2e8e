//! The server side of SPIRE's `tpm_devid` node attestation, pure (no TPM needed): SPIRE's checks in SPIRE's order
//! (`pkg/server/plugin/nodeattestor/tpmdevid`; reference `tpm-devid.md` §5), MakeCredential (§6), and the agent's
//! SPIFFE ID path and selectors (§7).
//!
//! Three checks SPIRE omits are on by default ([`ExtraChecks`]); a SPIRE agent passes them all:
//! - `DevIDPub` must be the key the DevID certificate certifies, or the residency proof would not be about the
//!   certified key;
//! - the AK must be restricted, sign-only, fixedTPM, fixedParent and sensitiveDataOrigin, so a key that can
//!   sign arbitrary data cannot forge the TPMS_ATTEST;
//! - the attestation's `qualifiedSigner` must be a qualified name in the AK's name algorithm. (The TPM reports
//!   the AK's *qualified* name, a hash over its parents' names; SPIRE's payload does not carry the SRK the AK
//!   lives under, so equality with the AK's Name cannot hold for a genuine TPM and is not required.)
//!
//! Invariant: the challenge is issued only after every check on the payload passed, and an agent is accepted
//! only with a valid proof of possession (DevID signature over the nonce) and of residency (the activated
//! secret), compared in constant time.

pub mod chain;
mod credential;
pub mod crl;
pub mod ek;
pub mod enroll;
mod error;
pub mod quote;
pub mod tpm2;
pub mod wire;

use zeroize::Zeroizing;

pub use chain::Cert;
pub use credential::{kdfa_sha256, make_credential};
use ek::{EkMode, EkPolicy, EkProof};
pub use error::{CertError, ChainError, DevIdError, Tpm2Error};
use tpm2::{alg, attr, Attest, KeyParams, RsaSignature, TpmPublic};
use wire::{AttestationRequest, ChallengeRequest, ChallengeResponse, CredActivation};

/// Largest accepted attestation payload (SPIRE's agent sends ~5 KB with a two-certificate chain).
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Largest accepted challenge response (~400 bytes from SPIRE's agent).
pub const MAX_RESPONSE: usize = 8 * 1024;
/// Largest DevID chain accepted (leaf + intermediates).
pub const MAX_CHAIN: usize = 8;

/// The checks this server makes beyond SPIRE's. All on by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtraChecks {
    /// `DevIDPub` is the key in the DevID certificate.
    pub devid_pub_matches_certificate: bool,
    /// The AK is restricted, sign-only, fixedTPM, fixedParent, sensitiveDataOrigin.
    pub ak_attributes: bool,
    /// `qualifiedSigner` in the attestation is a qualified name in the AK's name algorithm.
    pub qualified_signer: bool,
    /// `DevIDPub` is a fixedTPM, fixedParent, sensitiveDataOrigin signing key: one the TPM made and cannot
    /// export. Without it, a software key the DevID CA certified, loaded into any genuine TPM from outside
    /// (TPM2_LoadExternal) and certified there, passes as resident.
    pub devid_attributes: bool,
}

impl Default for ExtraChecks {
    fn default() -> Self {
        ExtraChecks {
            devid_pub_matches_certificate: true,
            ak_attributes: true,
            qualified_signer: true,
            devid_attributes: true,
        }
    }
}

impl ExtraChecks {
    /// Exactly SPIRE's checks, nothing more (tests use it to show what SPIRE accepts).
    pub const SPIRE_ONLY: ExtraChecks = ExtraChecks {
        devid_pub_matches_certificate: false,
        ak_attributes: false,
        qualified_signer: false,
        devid_attributes: false,
    };
}

/// The configured trust: DevID CAs (every certificate an anchor, as in SPIRE) and the EK policy (endorsement CAs,
/// an inventory of EK hashes, or both).
#[derive(Debug, Clone)]
pub struct DevIdVerifier {
    devid_anchors: Vec<Cert>,
    ek: EkPolicy,
    extra: ExtraChecks,
    quote: Option<QuotePolicy>,
}

/// What the server asks of the boot state: a quote over `selection`; `policy`'s names as `boot:` selectors; with
/// `require`, no attestation without a quote matching one of them.
#[derive(Debug, Clone)]
pub struct QuotePolicy {
    /// The PCRs quoted.
    pub selection: quote::PcrSelection,
    /// Named allowed value sets.
    pub policy: quote::PcrPolicy,
    /// Refuse an agent whose quote matches no set (or that sends none).
    pub require: bool,
}

/// A payload that passed every check, waiting for the agent's challenge response.
pub struct Challenged {
    nonce: [u8; 32],
    secret: Zeroizing<[u8; 32]>,
    leaf: Cert,
    selectors: Vec<String>,
    ak_pub: TpmPublic,
    quote: Option<QuotePolicy>,
}

impl std::fmt::Debug for Challenged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenged").field("leaf", &self.leaf.subject()).finish_non_exhaustive()
    }
}

/// An attested agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attested {
    /// Lowercase hex SHA-1 of the DevID leaf certificate's DER.
    pub fingerprint: String,
    /// Selector values without the `tpm_devid:` type (SPIRE's order).
    pub selectors: Vec<String>,
}

impl Attested {
    /// The agent ID path, `/spire/agent/tpm_devid/<fingerprint>`.
    pub fn agent_path(&self) -> String {
        format!("/spire/agent/tpm_devid/{}", self.fingerprint)
    }
}

fn random<const N: usize>() -> Result<[u8; N], DevIdError> {
    use ring::rand::SecureRandom;
    let mut out = [0u8; N];
    ring::rand::SystemRandom::new().fill(&mut out).map_err(|_| DevIdError::Random)?;
    Ok(out)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Big-endian bytes without leading zeros (as DER INTEGER contents and TPM buffers are compared).
pub(crate) fn strip(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// A PEM bundle of at least one certificate, named `what` in errors.
fn load_anchors(what: &'static str, pem: &[u8]) -> Result<Vec<Cert>, DevIdError> {
    let certs = chain::parse_pem_bundle(pem).map_err(|reason| DevIdError::BadCertificate { what, reason })?;
    if certs.is_empty() {
        return Err(DevIdError::BadCertificate { what, reason: CertError::Empty });
    }
    Ok(certs)
}

impl DevIdVerifier {
    /// Builds a verifier from the PEM bundles of `devid_ca_path` and `endorsement_ca_path`: SPIRE's trust, an EK
    /// must have a certificate that chains to an endorsement CA.
    pub fn new(devid_ca_pem: &[u8], endorsement_ca_pem: &[u8], extra: ExtraChecks) -> Result<Self, DevIdError> {
        let anchors = load_anchors("endorsement_ca_path", endorsement_ca_pem)?;
        // `ca` fails only without anchors, which load_anchors refused already.
        let ek = EkPolicy::new(anchors, None, Some(EkMode::Ca))
            .map_err(|_| DevIdError::BadCertificate { what: "endorsement_ca_path", reason: CertError::Empty })?;
        Self::with_ek_policy(devid_ca_pem, ek, extra)
    }

    /// Builds a verifier from the PEM bundle of `devid_ca_path` and an EK policy.
    pub fn with_ek_policy(devid_ca_pem: &[u8], ek: EkPolicy, extra: ExtraChecks) -> Result<Self, DevIdError> {
        Ok(DevIdVerifier { devid_anchors: load_anchors("devid_ca_path", devid_ca_pem)?, ek, extra, quote: None })
    }

    /// The same verifier asking for a PCR quote.
    pub fn with_quote(self, quote: QuotePolicy) -> DevIdVerifier {
        DevIdVerifier { quote: Some(quote), ..self }
    }

    /// The same verifier under another EK policy (an inventory read again).
    pub fn with_policy(&self, ek: EkPolicy) -> DevIdVerifier {
        DevIdVerifier { ek, ..self.clone() }
    }

    /// The DevID CAs (`devid_ca_path`).
    pub fn devid_anchors(&self) -> &[Cert] {
        &self.devid_anchors
    }

    /// The EK policy in force.
    pub fn ek_policy(&self) -> &EkPolicy {
        &self.ek
    }

    /// The PCR quote asked for, if any.
    pub fn quote(&self) -> Option<&QuotePolicy> {
        self.quote.as_ref()
    }

    /// Checks an attestation payload at `now` (unix seconds) and returns the challenge to send (JSON) with the
    /// state to check the response against. SPIRE's steps in SPIRE's order; the EK under the EK policy.
    pub fn challenge(&self, payload: &[u8], now: u64) -> Result<(Vec<u8>, Challenged), DevIdError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(DevIdError::TooLarge { what: "attestation payload", len: payload.len(), max: MAX_PAYLOAD });
        }
        let req: AttestationRequest = serde_json::from_slice(payload)
            .map_err(|source| DevIdError::Json { what: "attestation data", cause: source })?;
        let (leaf, chains) = self.check_devid_chain(&req, now)?;

        // Presence, in SPIRE's order (step 6); the EK certificate only where the policy needs one.
        let ek_cert_required = self.ek.mode() == EkMode::Ca;
        for (field, what, required) in [
            (&req.ak_pub, "attestation key public blob", true),
            (&req.devid_pub, "DevID key public blob", true),
            (&req.ek_cert, "endorsement certificate", ek_cert_required),
            (&req.ek_pub, "endorsement key public blob", true),
        ] {
            if required && field.is_empty() {
                return Err(DevIdError::Missing(what));
            }
        }
        let tpm2 = |field: &'static str, bytes: &[u8]| {
            TpmPublic::parse(bytes, field).map_err(|source| DevIdError::Tpm2 { field, cause: source })
        };
        let devid_pub = tpm2("DevIDPub", &req.devid_pub)?;
        let resident = attr::SIGN | attr::FIXED_TPM | attr::FIXED_PARENT | attr::SENSITIVE_DATA_ORIGIN;
        if self.extra.devid_attributes && !devid_pub.has(resident) {
            return Err(DevIdError::DevIdNotResident { attributes: devid_pub.attributes });
        }
        let ak_pub = tpm2("AKPub", &req.ak_pub)?;
        let ek_pub = tpm2("EKPub", &req.ek_pub)?;
        let ek = self.check_ek(&req.ek_cert, &ek_pub, now)?;

        // Certification of the DevID by the AK (step 10).
        self.check_certification(&req, &ak_pub, &devid_pub)?;
        if self.extra.devid_pub_matches_certificate && !same_key(&devid_pub, &leaf) {
            return Err(DevIdError::DevIdPubMismatch);
        }

        // Credential for the AK under the EK (step 11).
        let (mut challenge, nonce, secret) = credential_challenge(&req.ak_pub, &ak_pub, &ek_pub)?;
        challenge.pcr_quote = self.quote.as_ref().map(|q| quote::QuoteRequest { selection: q.selection.to_string() });
        let json =
            serde_json::to_vec(&challenge).map_err(|source| DevIdError::Json { what: "challenge", cause: source })?;
        let mut selectors = selectors(&leaf, &chains);
        selectors.extend(ek.selectors());
        Ok((json, Challenged { nonce, secret, selectors, leaf, ak_pub, quote: self.quote.clone() }))
    }

    /// The DevID certificate chain (SPIRE steps 2-4): the leaf and every verified chain.
    fn check_devid_chain(&self, req: &AttestationRequest, now: u64) -> Result<(Cert, Vec<Vec<Cert>>), DevIdError> {
        if req.devid_cert.is_empty() {
            return Err(DevIdError::NoDevIdCert);
        }
        if req.devid_cert.len() > MAX_CHAIN {
            return Err(DevIdError::TooLarge { what: "DevIDCert chain", len: req.devid_cert.len(), max: MAX_CHAIN });
        }
        let parse = |what: &'static str, der: &[u8]| {
            Cert::from_der(der).map_err(|reason| DevIdError::BadCertificate { what, reason })
        };
        let leaf = parse("DevID certificate", &req.devid_cert[0])?;
        let intermediates = req.devid_cert[1..]
            .iter()
            .map(|d| parse("DevID intermediate certificate", d))
            .collect::<Result<Vec<_>, _>>()?;
        let chains = chain::verify(&leaf, &intermediates, &self.devid_anchors, now).map_err(DevIdError::DevIdChain)?;
        Ok((leaf, chains))
    }

    /// The EK under the policy: its certificate checked as SPIRE checks it (its key is EKPub, step 8; it chains to
    /// an endorsement CA, step 9), and its hash against the inventory.
    fn check_ek(&self, ek_cert: &[u8], ek_pub: &TpmPublic, now: u64) -> Result<EkProof, DevIdError> {
        let certified = if ek_cert.is_empty() {
            Err(DevIdError::Missing("endorsement certificate"))
        } else {
            self.check_ek_certificate(ek_cert, ek_pub, now)
        };
        self.ek.decide(ek_pub, certified)
    }

    fn check_ek_certificate(&self, der: &[u8], ek_pub: &TpmPublic, now: u64) -> Result<ek::TpmInfo, DevIdError> {
        let ek_cert = Cert::from_der(der)
            .map_err(|reason| DevIdError::BadCertificate { what: "endorsement certificate", reason })?;
        let (cert_n, cert_e) = ek_cert.rsa_key().ok_or(DevIdError::EkCertNotRsa)?;
        let KeyParams::Rsa { modulus: ek_n, exponent: ek_e, .. } = &ek_pub.params else {
            return Err(DevIdError::EkPubNotRsa);
        };
        let ek_e_bytes = TpmPublic::rsa_exponent(*ek_e).to_be_bytes();
        if strip(ek_n) != cert_n.as_slice() || strip(&ek_e_bytes) != cert_e.as_slice() {
            return Err(DevIdError::EkMismatch);
        }
        chain::verify(&ek_cert, &[], self.ek.anchors(), now).map_err(DevIdError::EkChain)?;
        Ok(ek_cert.tpm_info())
    }

    fn check_certification(
        &self,
        req: &AttestationRequest,
        ak_pub: &TpmPublic,
        devid_pub: &TpmPublic,
    ) -> Result<(), DevIdError> {
        let certify = Certification {
            ak_pub,
            info: &req.certified_devid,
            signature: &req.certification_signature,
            devid_pub,
            devid_pub_raw: &req.devid_pub,
        };
        certify.check(self.extra, None)
    }
}

/// A TPM2_Certify of a DevID by an AK, as received: what both SPIRE's attestation and the enrollment CA check.
pub(crate) struct Certification<'a> {
    pub(crate) ak_pub: &'a TpmPublic,
    pub(crate) info: &'a [u8],
    pub(crate) signature: &'a [u8],
    pub(crate) devid_pub: &'a TpmPublic,
    pub(crate) devid_pub_raw: &'a [u8],
}

impl Certification<'_> {
    /// The AK is an RSASSA signing key (with `extra`, a restricted, fixed, TPM-made one); its signature over the
    /// TPMS_ATTEST verifies; the attest is a TPM-generated certify of exactly the DevID's Name; and, when given,
    /// its qualifying data is `extra_data` (the verifier's nonce: the certification is fresh).
    pub(crate) fn check(&self, extra: ExtraChecks, extra_data: Option<&[u8]>) -> Result<(), DevIdError> {
        let ak_pub = self.ak_pub;
        let KeyParams::Rsa { modulus, exponent, .. } = &ak_pub.params else {
            return Err(DevIdError::AkNotRsa);
        };
        if !ak_pub.has(attr::SIGN) {
            return Err(DevIdError::AkNotSigning);
        }
        if ak_pub.scheme.scheme == alg::NULL {
            return Err(DevIdError::AkNullScheme);
        }
        let required =
            attr::RESTRICTED | attr::SIGN | attr::FIXED_TPM | attr::FIXED_PARENT | attr::SENSITIVE_DATA_ORIGIN;
        if extra.ak_attributes && (!ak_pub.has(required) || ak_pub.has(attr::DECRYPT)) {
            return Err(DevIdError::AkAttributes { attributes: ak_pub.attributes });
        }
        let sig = RsaSignature::parse(self.signature)
            .map_err(|source| DevIdError::Tpm2 { field: "CertificationSignature", cause: source })?;
        if ak_pub.scheme.scheme != alg::RSASSA || sig.scheme != alg::RSASSA || sig.hash != ak_pub.scheme.hash {
            return Err(DevIdError::CertifyScheme { scheme: sig.scheme, hash: sig.hash });
        }
        let algorithm = match sig.hash {
            alg::SHA256 => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            alg::SHA384 => &ring::signature::RSA_PKCS1_2048_8192_SHA384,
            alg::SHA512 => &ring::signature::RSA_PKCS1_2048_8192_SHA512,
            _ => return Err(DevIdError::CertifyScheme { scheme: sig.scheme, hash: sig.hash }),
        };
        let e = TpmPublic::rsa_exponent(*exponent).to_be_bytes();
        let key = ring::signature::RsaPublicKeyComponents { n: strip(modulus), e: strip(&e) };
        key.verify(algorithm, self.info, &sig.signature).map_err(|_| DevIdError::CertifySignature)?;

        let attest =
            Attest::parse(self.info).map_err(|source| DevIdError::Tpm2 { field: "CertifiedDevID", cause: source })?;
        if attest.magic != tpm2::TPM_GENERATED {
            return Err(DevIdError::AttestMagic(attest.magic));
        }
        if attest.kind != tpm2::ST_ATTEST_CERTIFY {
            return Err(DevIdError::AttestType(attest.kind));
        }
        if extra.qualified_signer {
            let alg = attest.qualified_signer.get(..2).map(|a| u16::from_be_bytes([a[0], a[1]]));
            let want = tpm2::digest_len(ak_pub.name_alg).map(|n| n + 2);
            if alg != Some(ak_pub.name_alg) || Some(attest.qualified_signer.len()) != want {
                return Err(DevIdError::QualifiedSigner);
            }
        }
        if let Some(want) = extra_data {
            if !constant_time_eq(&attest.extra_data, want) {
                return Err(DevIdError::StaleCertification);
            }
        }
        let devid_name = tpm2::name(self.devid_pub_raw, self.devid_pub.name_alg)
            .map_err(|source| DevIdError::Tpm2 { field: "DevIDPub", cause: source })?;
        if attest.certified_name != devid_name {
            return Err(DevIdError::CertifyName);
        }
        Ok(())
    }
}

/// A challenge, its nonce, and the secret only a TPM holding both the EK and the AK recovers.
type Credential = (ChallengeRequest, [u8; 32], Zeroizing<[u8; 32]>);

/// MakeCredential for the AK under the EK (SPIRE step 11): the challenge (nonce for the DevID to sign, and the
/// credential), the nonce, and the secret.
fn credential_challenge(ak_pub_raw: &[u8], ak_pub: &TpmPublic, ek_pub: &TpmPublic) -> Result<Credential, DevIdError> {
    let KeyParams::Rsa { modulus: ek_n, exponent: ek_e, .. } = &ek_pub.params else {
        return Err(DevIdError::EkPubNotRsa);
    };
    let ak_name =
        tpm2::name(ak_pub_raw, ak_pub.name_alg).map_err(|source| DevIdError::Tpm2 { field: "AKPub", cause: source })?;
    let (sym_alg, sym_bits, sym_mode) = ek_pub.symmetric;
    if sym_alg != alg::AES || sym_mode != alg::CFB {
        return Err(DevIdError::EkKey("EK symmetric algorithm is not AES-CFB"));
    }
    if ek_pub.name_alg != alg::SHA256 {
        return Err(DevIdError::EkKey("EK name algorithm is not SHA-256"));
    }
    let nonce = random::<32>()?;
    let secret = Zeroizing::new(random::<32>()?);
    let seed = Zeroizing::new(random::<32>()?);
    let (credential, enc_secret) =
        make_credential(ek_n, TpmPublic::rsa_exponent(*ek_e), sym_bits, &ak_name, &secret[..], &seed[..])?;
    let challenge = ChallengeRequest {
        devid: nonce.to_vec(),
        cred_activation: Some(CredActivation { credential, secret: enc_secret }),
        pcr_quote: None,
    };
    Ok((challenge, nonce, secret))
}

/// Is the TPM public key the certificate's subject key?
fn same_key(public: &TpmPublic, cert: &Cert) -> bool {
    match &public.params {
        KeyParams::Rsa { modulus, exponent, .. } => cert.rsa_key().is_some_and(|(n, e)| {
            n.as_slice() == strip(modulus) && e.as_slice() == strip(&TpmPublic::rsa_exponent(*exponent).to_be_bytes())
        }),
        KeyParams::Ecc { curve, x, y, .. } => {
            let width = match *curve {
                tpm2::ECC_NIST_P256 => 32,
                tpm2::ECC_NIST_P384 => 48,
                _ => return false,
            };
            if x.len() > width || y.len() > width {
                return false;
            }
            let mut point = vec![0x04];
            point.extend(std::iter::repeat_n(0, width - x.len()));
            point.extend_from_slice(x);
            point.extend(std::iter::repeat_n(0, width - y.len()));
            point.extend_from_slice(y);
            cert.ec_point().is_some_and(|(p, _)| p == point.as_slice())
        }
    }
}

/// SPIRE's selectors: `subject:cn:`, `issuer:cn:` (when non-empty), then `ca:fingerprint:` for every certificate
/// above the leaf in every verified chain, de-duplicated.
fn selectors(leaf: &Cert, chains: &[Vec<Cert>]) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(cn) = leaf.common_name(false).filter(|c| !c.is_empty()) {
        out.push(format!("subject:cn:{cn}"));
    }
    if let Some(cn) = leaf.common_name(true).filter(|c| !c.is_empty()) {
        out.push(format!("issuer:cn:{cn}"));
    }
    for cert in chains.iter().flat_map(|c| c.iter().skip(1)) {
        let s = format!("ca:fingerprint:{}", cert.sha1_hex());
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

impl Challenged {
    /// The DevID leaf certificate the payload presented (verified up to a DevID CA).
    pub fn leaf(&self) -> &Cert {
        &self.leaf
    }

    /// Checks the agent's challenge response: the DevID certificate's key signed the nonce, and the TPM recovered
    /// the secret.
    pub fn verify(self, response: &[u8]) -> Result<Attested, DevIdError> {
        if response.len() > MAX_RESPONSE {
            return Err(DevIdError::TooLarge { what: "challenge response", len: response.len(), max: MAX_RESPONSE });
        }
        let resp: ChallengeResponse = serde_json::from_slice(response)
            .map_err(|source| DevIdError::Json { what: "challenges response", cause: source })?;
        if resp.devid.is_empty() {
            return Err(DevIdError::ResponseMissing("DevID signature"));
        }
        if resp.cred_activation.is_empty() {
            return Err(DevIdError::ResponseMissing("activated credential"));
        }
        if !self.leaf.verify_sha256(&self.nonce, &resp.devid) {
            return Err(DevIdError::ProofOfPossession);
        }
        if !constant_time_eq(&resp.cred_activation, &self.secret[..]) {
            return Err(DevIdError::ProofOfResidency);
        }
        // The AK is now proven to be in the EK's TPM: what it quoted is that TPM's boot state.
        let mut selectors = self.selectors;
        if let Some(q) = &self.quote {
            match &resp.pcr_quote {
                Some(answer) => {
                    let values = quote::verify(&self.ak_pub, &self.nonce, &q.selection, answer)?;
                    let names = q.policy.matches(&values);
                    if q.require && names.is_empty() {
                        return Err(DevIdError::PcrPolicy(q.policy.explain(&q.selection, &values)));
                    }
                    selectors.extend(quote::selectors(&q.selection, &values));
                    selectors.extend(names.into_iter().map(|n| format!("boot:{n}")));
                }
                None if q.require => return Err(DevIdError::NoQuote),
                None => {}
            }
        }
        Ok(Attested { fingerprint: self.leaf.sha1_hex(), selectors })
    }
}
