//! X.509 chain verification built explicitly, for DevID and EK certificates.
//!
//! General-purpose WebPKI validators refuse EK certificates as TPMs ship them (an empty subject, a critical
//! subjectAltName holding only a directoryName, the TCG EK EKU), so chains are built and checked here: every
//! signature (RSA PKCS#1 v1.5 SHA-256/384/512, ECDSA P-256/P-384 with SHA-256/384, verified by ring), every
//! validity period (anchors included), CA basicConstraints and keyCertSign for every issuer below an anchor,
//! pathLenConstraint, and no unhandled critical extension. Like Go's `x509.Verify` with `ExtKeyUsageAny`, leaf
//! EKUs are not restricted. Every certificate in the anchor set is a trust anchor.

use der::asn1::ObjectIdentifier as Oid;
use der::{Decode, Encode};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};
use x509_cert::Certificate;

use crate::devid::error::{CertError, ChainError};
use crate::devid::strip;

/// Maximum chain length (leaf + intermediates + anchor) explored.
const MAX_DEPTH: usize = 8;

/// Signature checks one verification may spend before giving up, as Go's `x509` does
/// (`maxChainSignatureChecks`). The intermediates come from the agent before it has proved anything: without a
/// bound, 7 self-issued CA certificates sharing one name and key cost 5,040 paths.
pub const MAX_SIGNATURE_CHECKS: usize = 100;

mod oid {
    use der::asn1::ObjectIdentifier as Oid;
    pub const BASIC_CONSTRAINTS: Oid = Oid::new_unwrap("2.5.29.19");
    pub const KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.15");
    pub const EXT_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.37");
    pub const SUBJECT_ALT_NAME: Oid = Oid::new_unwrap("2.5.29.17");
    pub const SUBJECT_KEY_ID: Oid = Oid::new_unwrap("2.5.29.14");
    pub const AUTHORITY_KEY_ID: Oid = Oid::new_unwrap("2.5.29.35");
    pub const CERT_POLICIES: Oid = Oid::new_unwrap("2.5.29.32");
    pub const SUBJECT_DIR_ATTRS: Oid = Oid::new_unwrap("2.5.29.9");
    pub const RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
    pub const EC: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
    pub const P256: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
    pub const P384: Oid = Oid::new_unwrap("1.3.132.0.34");
    pub const SHA256_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
    pub const SHA384_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
    pub const SHA512_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
    pub const ECDSA_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
    pub const ECDSA_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
    pub const CN: Oid = Oid::new_unwrap("2.5.4.3");
}

/// A parsed certificate with its DER and the exact bytes its signature covers.
#[derive(Debug, Clone)]
pub struct Cert {
    der: Vec<u8>,
    tbs: Vec<u8>,
    cert: Certificate,
    subject: String,
}

impl Cert {
    /// Parses one DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Cert, CertError> {
        let cert = Certificate::from_der(der).map_err(CertError::Der)?;
        if cert.to_der().map_err(CertError::Der)? != der {
            return Err(CertError::NotDer);
        }
        // The outer algorithm is outside the signature: letting it differ from the signed one (as Go's x509 does
        // not) makes one certificate many DER encodings, and so many SHA-1 agent IDs.
        if cert.signature_algorithm != cert.tbs_certificate.signature {
            return Err(CertError::AlgorithmMismatch);
        }
        let tbs = cert.tbs_certificate.to_der().map_err(CertError::Der)?;
        let subject = cert.tbs_certificate.subject.to_string();
        Ok(Cert { der: der.to_vec(), tbs, cert, subject })
    }

    /// The DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The subject, RFC 4514.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The SubjectPublicKeyInfo's algorithm OID and key bits.
    fn spki(&self) -> (der::asn1::ObjectIdentifier, Option<der::asn1::ObjectIdentifier>, &[u8]) {
        let spki = &self.cert.tbs_certificate.subject_public_key_info;
        let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok());
        (spki.algorithm.oid, curve, spki.subject_public_key.raw_bytes())
    }

    /// The subject's SubjectPublicKeyInfo, DER.
    pub fn spki_der(&self) -> Vec<u8> {
        self.cert.tbs_certificate.subject_public_key_info.to_der().unwrap_or_default()
    }

    /// True when `spki_der` (a SubjectPublicKeyInfo) is this certificate's subject key (algorithm and key bits).
    pub fn has_key(&self, spki_der: &[u8]) -> bool {
        let Ok(other) = x509_cert::spki::SubjectPublicKeyInfoOwned::from_der(spki_der) else { return false };
        let (alg, curve, bits) = self.spki();
        let other_curve =
            other.algorithm.parameters.as_ref().and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok());
        other.algorithm.oid == alg && other_curve == curve && other.subject_public_key.raw_bytes() == bits
    }

    /// The RSA public key `(modulus, exponent)`, big-endian without leading zeros, if the key is RSA.
    pub fn rsa_key(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        let (alg, _, bits) = self.spki();
        if alg != oid::RSA {
            return None;
        }
        let key = RsaPublicKeyDer::from_der(bits).ok()?;
        Some((strip(key.modulus.as_bytes()).to_vec(), strip(key.public_exponent.as_bytes()).to_vec()))
    }

    /// The EC public point (uncompressed SEC1) and whether the curve is P-256, if the key is ECDSA.
    pub fn ec_point(&self) -> Option<(&[u8], bool)> {
        let (alg, curve, bits) = self.spki();
        (alg == oid::EC).then_some((bits, curve == Some(oid::P256)))
    }

    /// Verifies `sig` over `message` with this certificate's key, SHA-256 (RSA PKCS#1 v1.5 raw, or ECDSA DER):
    /// what SPIRE's `CheckSignature(SHA256WithRSA | ECDSAWithSHA256, ...)` accepts.
    pub fn verify_sha256(&self, message: &[u8], sig: &[u8]) -> bool {
        let (alg, curve, bits) = self.spki();
        let algorithm: &dyn ring::signature::VerificationAlgorithm = match (alg, curve) {
            (a, _) if a == oid::RSA => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            (a, Some(c)) if a == oid::EC && c == oid::P256 => &ring::signature::ECDSA_P256_SHA256_ASN1,
            (a, Some(c)) if a == oid::EC && c == oid::P384 => &ring::signature::ECDSA_P384_SHA256_ASN1,
            _ => return false,
        };
        ring::signature::UnparsedPublicKey::new(algorithm, bits).verify(message, sig).is_ok()
    }

    /// The last CN of the subject (or issuer), as Go's `pkix.Name.CommonName`.
    pub fn common_name(&self, issuer: bool) -> Option<String> {
        let name = if issuer { &self.cert.tbs_certificate.issuer } else { &self.cert.tbs_certificate.subject };
        name.0
            .iter()
            .flat_map(|rdn| rdn.0.iter())
            .filter(|atv| atv.oid == oid::CN)
            .filter_map(|atv| std::str::from_utf8(atv.value.value()).ok().map(str::to_string))
            .next_back()
    }

    /// The TPM manufacturer, model and firmware version an EK certificate's subjectAltName directoryName carries
    /// (`tcg-at-tpmManufacturer` 2.23.133.2.1, `tcg-at-tpmModel` .2, `tcg-at-tpmVersion` .3), as their UTF8String
    /// values. Only meaningful once the certificate verified.
    pub fn tpm_info(&self) -> super::ek::TpmInfo {
        let mut info = super::ek::TpmInfo::default();
        let Ok(Some((_, san))) = self.cert.tbs_certificate.get::<x509_cert::ext::pkix::SubjectAltName>() else {
            return info;
        };
        for name in san.0 {
            let x509_cert::ext::pkix::name::GeneralName::DirectoryName(dn) = name else { continue };
            for atv in dn.0.iter().flat_map(|rdn| rdn.0.iter()) {
                let value = std::str::from_utf8(atv.value.value()).ok().map(str::to_owned);
                match atv.oid.to_string().as_str() {
                    "2.23.133.2.1" => info.manufacturer = value,
                    "2.23.133.2.2" => info.model = value,
                    "2.23.133.2.3" => info.version = value,
                    _ => {}
                }
            }
        }
        info
    }

    /// notAfter, unix seconds.
    pub fn not_after(&self) -> u64 {
        self.cert.tbs_certificate.validity.not_after.to_unix_duration().as_secs()
    }

    /// The serial number's bytes.
    pub fn serial(&self) -> &[u8] {
        self.cert.tbs_certificate.serial_number.as_bytes()
    }

    /// SHA-1 of the DER, lowercase hex (SPIRE's fingerprints).
    pub fn sha1_hex(&self) -> String {
        hex(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &self.der).as_ref())
    }

    fn check_time(&self, now: u64) -> Result<(), ChainError> {
        let v = &self.cert.tbs_certificate.validity;
        let (nb, na) = (v.not_before.to_unix_duration().as_secs(), v.not_after.to_unix_duration().as_secs());
        if now < nb || now > na {
            return Err(ChainError::Validity { subject: self.subject.clone(), not_before: nb, not_after: na });
        }
        Ok(())
    }

    /// Rejects critical extensions this verifier does not process. The EK certificate's critical SAN (a
    /// directoryName only) is handled by not matching names at all, as SPIRE does.
    fn check_critical(&self) -> Result<(), ChainError> {
        let handled = [
            oid::BASIC_CONSTRAINTS,
            oid::KEY_USAGE,
            oid::EXT_KEY_USAGE,
            oid::SUBJECT_ALT_NAME,
            oid::SUBJECT_KEY_ID,
            oid::AUTHORITY_KEY_ID,
            oid::CERT_POLICIES,
            oid::SUBJECT_DIR_ATTRS,
        ];
        for ext in self.cert.tbs_certificate.extensions.iter().flatten() {
            if ext.critical && !handled.contains(&ext.extn_id) {
                return Err(ChainError::UnhandledCritical {
                    subject: self.subject.clone(),
                    oid: ext.extn_id.to_string(),
                });
            }
        }
        Ok(())
    }

    fn extension<T: for<'a> Decode<'a>>(&self, id: der::asn1::ObjectIdentifier) -> Option<Result<T, ()>> {
        let ext = self.cert.tbs_certificate.extensions.iter().flatten().find(|e| e.extn_id == id)?;
        Some(T::from_der(ext.extn_value.as_bytes()).map_err(|_| ()))
    }

    /// May this certificate issue others below it, with `below` CA certificates already under it?
    fn check_issuer(&self, below: usize) -> Result<(), ChainError> {
        let not_ca = || ChainError::NotCa { subject: self.subject.clone() };
        let bc = match self.extension::<BasicConstraints>(oid::BASIC_CONSTRAINTS) {
            Some(Ok(bc)) if bc.ca => bc,
            _ => return Err(not_ca()),
        };
        match self.extension::<KeyUsage>(oid::KEY_USAGE) {
            Some(Ok(ku)) if !ku.key_cert_sign() => return Err(not_ca()),
            Some(Err(())) => return Err(not_ca()),
            _ => {}
        }
        if let Some(max) = bc.path_len_constraint {
            if below > usize::from(max) {
                return Err(ChainError::TooLong { subject: self.subject.clone() });
            }
        }
        Ok(())
    }

    /// Verifies this certificate's signature with `issuer`'s key.
    fn signed_by(&self, issuer: &Cert) -> Result<(), ChainError> {
        let sig_alg = self.cert.signature_algorithm.oid;
        issuer.check_signature(sig_alg, &self.tbs, self.cert.signature.raw_bytes()).map_err(|e| match e {
            SignatureError::Unsupported(detail) => ChainError::Unsupported { subject: self.subject.clone(), detail },
            SignatureError::Bad => {
                ChainError::BadSignature { subject: self.subject.clone(), issuer: issuer.subject.clone() }
            }
        })
    }

    /// Verifies `sig`, made with algorithm `sig_alg` over `signed`, with this certificate's key: the signatures
    /// an X.509 issuer makes (certificates, CRLs).
    pub(crate) fn check_signature(&self, sig_alg: Oid, signed: &[u8], sig: &[u8]) -> Result<(), SignatureError> {
        let (key_alg, curve, key) = self.spki();
        let unsupported = || SignatureError::Unsupported(format!("signature {sig_alg}, issuer key {key_alg}"));
        let algorithm: &dyn ring::signature::VerificationAlgorithm = if key_alg == oid::RSA {
            match sig_alg {
                a if a == oid::SHA256_RSA => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                a if a == oid::SHA384_RSA => &ring::signature::RSA_PKCS1_2048_8192_SHA384,
                a if a == oid::SHA512_RSA => &ring::signature::RSA_PKCS1_2048_8192_SHA512,
                _ => return Err(unsupported()),
            }
        } else if key_alg == oid::EC {
            match (curve, sig_alg) {
                (Some(c), a) if c == oid::P256 && a == oid::ECDSA_SHA256 => &ring::signature::ECDSA_P256_SHA256_ASN1,
                (Some(c), a) if c == oid::P256 && a == oid::ECDSA_SHA384 => &ring::signature::ECDSA_P256_SHA384_ASN1,
                (Some(c), a) if c == oid::P384 && a == oid::ECDSA_SHA256 => &ring::signature::ECDSA_P384_SHA256_ASN1,
                (Some(c), a) if c == oid::P384 && a == oid::ECDSA_SHA384 => &ring::signature::ECDSA_P384_SHA384_ASN1,
                _ => return Err(unsupported()),
            }
        } else {
            return Err(unsupported());
        };
        ring::signature::UnparsedPublicKey::new(algorithm, key).verify(signed, sig).map_err(|_| SignatureError::Bad)
    }

    /// The subject name, as encoded.
    pub(crate) fn subject_name(&self) -> &x509_cert::name::Name {
        &self.cert.tbs_certificate.subject
    }

    /// The issuer name, as encoded.
    pub(crate) fn issuer_name(&self) -> &x509_cert::name::Name {
        &self.cert.tbs_certificate.issuer
    }

    fn issued_by_name(&self, issuer: &Cert) -> bool {
        self.cert.tbs_certificate.issuer == issuer.cert.tbs_certificate.subject
    }

    /// Go's `alreadyInChain`: the same subject, key and subjectAltName make the same CA for path building, so
    /// re-issued copies of one CA cannot multiply the paths.
    fn same_ca(&self, other: &Cert) -> bool {
        let san = |c: &Cert| {
            c.cert
                .tbs_certificate
                .extensions
                .iter()
                .flatten()
                .find(|e| e.extn_id == oid::SUBJECT_ALT_NAME)
                .map(|e| e.extn_value.as_bytes().to_vec())
        };
        self.cert.tbs_certificate.subject == other.cert.tbs_certificate.subject
            && self.cert.tbs_certificate.subject_public_key_info == other.cert.tbs_certificate.subject_public_key_info
            && san(self) == san(other)
    }
}

/// Why a signature did not verify with a certificate's key.
#[derive(Debug)]
pub(crate) enum SignatureError {
    /// The algorithm is not one this verifier accepts for that key.
    Unsupported(String),
    /// The signature does not verify.
    Bad,
}

/// `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }` (RFC 8017 A.1.1).
#[derive(der::Sequence)]
struct RsaPublicKeyDer<'a> {
    modulus: der::asn1::UintRef<'a>,
    public_exponent: der::asn1::UintRef<'a>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Verifies `leaf` against `anchors`, using `intermediates` to build paths, at `now` (unix seconds). Returns
/// every verified chain, leaf first and anchor last (as Go's `Verify` does; SPIRE's selectors use them all).
/// The work is bounded: duplicate intermediates are dropped, copies of one CA count once per path, and at most
/// [`MAX_SIGNATURE_CHECKS`] signatures are checked.
pub fn verify(leaf: &Cert, intermediates: &[Cert], anchors: &[Cert], now: u64) -> Result<Vec<Vec<Cert>>, ChainError> {
    verify_counted(leaf, intermediates, anchors, now).0
}

/// [`verify`], also returning the number of signature checks it spent.
pub fn verify_counted(
    leaf: &Cert,
    intermediates: &[Cert],
    anchors: &[Cert],
    now: u64,
) -> (Result<Vec<Vec<Cert>>, ChainError>, usize) {
    if let Err(e) = leaf.check_critical().and_then(|()| leaf.check_time(now)) {
        return (Err(e), 0);
    }
    let mut unique: Vec<&Cert> = Vec::new();
    for c in intermediates {
        if !unique.iter().any(|u| u.der == c.der) {
            unique.push(c);
        }
    }
    let mut search = Search { intermediates: unique, anchors, now, chains: Vec::new(), first_error: None, checks: 0 };
    search.extend(&mut vec![leaf.clone()]);
    let checks = search.checks;
    if !search.chains.is_empty() {
        return (Ok(search.chains), checks);
    }
    let err = match search.first_error {
        _ if checks > MAX_SIGNATURE_CHECKS => ChainError::TooMuchWork { checks: MAX_SIGNATURE_CHECKS },
        Some(e) => e,
        None => ChainError::UnknownAuthority { issuer: leaf.cert.tbs_certificate.issuer.to_string() },
    };
    (Err(err), checks.min(MAX_SIGNATURE_CHECKS))
}

struct Search<'a> {
    intermediates: Vec<&'a Cert>,
    anchors: &'a [Cert],
    now: u64,
    chains: Vec<Vec<Cert>>,
    first_error: Option<ChainError>,
    /// Signature checks spent; past the budget, nothing more is tried.
    checks: usize,
}

impl Search<'_> {
    fn note(&mut self, e: ChainError) {
        self.first_error.get_or_insert(e);
    }

    /// Spends one signature check; false once the budget is gone.
    fn spend(&mut self) -> bool {
        self.checks += 1;
        self.checks <= MAX_SIGNATURE_CHECKS
    }

    fn extend(&mut self, path: &mut Vec<Cert>) {
        let Some(current) = path.last().cloned() else { return };
        // CA certificates below the next issuer (the leaf is not one).
        let below = path.len() - 1;
        if self.anchors.iter().any(|a| a.der == current.der) && path.len() > 1 {
            return;
        }
        let anchors = self.anchors;
        for anchor in anchors.iter().filter(|a| current.issued_by_name(a)) {
            if path.iter().skip(1).any(|p| p.same_ca(anchor)) {
                continue;
            }
            if !self.spend() {
                return;
            }
            let checked = current
                .signed_by(anchor)
                .and_then(|()| anchor.check_time(self.now))
                .and_then(|()| anchor.check_critical())
                .and_then(|()| match anchor.extension::<BasicConstraints>(oid::BASIC_CONSTRAINTS) {
                    // Anchors are trusted as configured (as in Go), but an explicit CA:FALSE or path length is
                    // obeyed.
                    Some(Ok(bc)) if !bc.ca => Err(ChainError::NotCa { subject: anchor.subject.clone() }),
                    Some(Ok(bc)) if bc.path_len_constraint.is_some_and(|m| below > usize::from(m)) => {
                        Err(ChainError::TooLong { subject: anchor.subject.clone() })
                    }
                    _ => Ok(()),
                });
            match checked {
                Ok(()) => {
                    let mut chain = path.clone();
                    chain.push(anchor.clone());
                    self.chains.push(chain);
                }
                Err(e) => self.note(e),
            }
        }
        if path.len() + 1 >= MAX_DEPTH {
            return;
        }
        let candidates: Vec<&Cert> = self.intermediates.iter().copied().filter(|c| current.issued_by_name(c)).collect();
        for next in candidates {
            if path.iter().any(|p| p.same_ca(next)) {
                continue;
            }
            if !self.spend() {
                return;
            }
            let checked = current
                .signed_by(next)
                .and_then(|()| next.check_time(self.now))
                .and_then(|()| next.check_critical())
                .and_then(|()| next.check_issuer(below));
            match checked {
                Ok(()) => {
                    path.push(next.clone());
                    self.extend(path);
                    path.pop();
                }
                Err(e) => self.note(e),
            }
        }
    }
}

/// Parses every `CERTIFICATE` block of a PEM bundle (other block types are skipped, as in SPIRE).
pub fn parse_pem_bundle(pem_text: &[u8]) -> Result<Vec<Cert>, CertError> {
    let text = std::str::from_utf8(pem_text).map_err(|_| CertError::NotUtf8)?;
    let mut certs = Vec::new();
    for block in crate::pem::blocks(text).map_err(CertError::Pem)? {
        if block.label == "CERTIFICATE" {
            certs.push(Cert::from_der(&block.der)?);
        }
    }
    Ok(certs)
}
