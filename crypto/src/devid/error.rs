//! Errors of the `tpm_devid` server checks. Each check has its own variant; where SPIRE has a message for the
//! same check, the text starts with SPIRE's words so operators can match logs across implementations.

/// A TPM structure that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Tpm2Error {
    /// Input ends early.
    #[error("{what} is truncated")]
    Short {
        /// The structure.
        what: &'static str,
    },
    /// Bytes left after the structure.
    #[error("{what} has {count} trailing bytes")]
    Trailing {
        /// The structure.
        what: &'static str,
        /// How many.
        count: usize,
    },
    /// An algorithm or type this server does not accept.
    #[error("unsupported {what} 0x{value:04x}")]
    Unsupported {
        /// Which field.
        what: &'static str,
        /// Its value.
        value: u16,
    },
}

/// Why an X.509 chain did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// A certificate is outside its validity period.
    #[error("certificate {subject:?} is not valid now (valid {not_before}..{not_after} unix seconds)")]
    Validity {
        /// Its subject.
        subject: String,
        /// notBefore.
        not_before: u64,
        /// notAfter.
        not_after: u64,
    },
    /// No configured anchor issued (a chain to) the certificate.
    #[error("certificate signed by unknown authority (issuer {issuer:?})")]
    UnknownAuthority {
        /// The issuer it names.
        issuer: String,
    },
    /// A certificate that signs others is not a CA.
    #[error("certificate {subject:?} is not a CA (basicConstraints) or may not sign certificates (keyUsage)")]
    NotCa {
        /// Its subject.
        subject: String,
    },
    /// More intermediates than a CA's pathLenConstraint allows, or a chain deeper than the limit.
    #[error("chain too long at {subject:?}")]
    TooLong {
        /// The CA whose constraint was exceeded.
        subject: String,
    },
    /// A critical extension this verifier does not process.
    #[error("certificate {subject:?} has an unhandled critical extension {oid}")]
    UnhandledCritical {
        /// Its subject.
        subject: String,
        /// The extension.
        oid: String,
    },
    /// A signature algorithm or key this verifier does not accept.
    #[error("certificate {subject:?}: unsupported signature algorithm or key ({detail})")]
    Unsupported {
        /// Its subject.
        subject: String,
        /// What.
        detail: String,
    },
    /// A signature that does not verify.
    #[error("certificate {subject:?}: signature does not verify with {issuer:?}'s key")]
    BadSignature {
        /// The signed certificate.
        subject: String,
        /// The issuer tried.
        issuer: String,
    },
    /// Path building spent its signature-check budget without finding a chain (Go's x509 has the same limit).
    #[error("chain building gave up after {checks} signature checks without reaching a trusted root")]
    TooMuchWork {
        /// Checks spent.
        checks: usize,
    },
}

/// Why certificate bytes are not a certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// Not an X.509 certificate.
    #[error("{0}")]
    Der(der::Error),
    /// A BER encoding, or trailing bytes: SPIRE's Go parser would read something else.
    #[error("not DER (re-encoding differs)")]
    NotDer,
    /// The signature algorithm outside the signed part differs from the one inside it.
    #[error("the outer signature algorithm differs from the signed one")]
    AlgorithmMismatch,
    /// A PEM file that is not UTF-8.
    #[error("not UTF-8 PEM")]
    NotUtf8,
    /// PEM framing or base64 is broken.
    #[error("malformed PEM ({0:?})")]
    Pem(crate::pem::PemError),
    /// A PEM file without a `CERTIFICATE` block.
    #[error("no certificates found")]
    Empty,
}

/// Why an attestation was refused. Every variant is a distinct check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevIdError {
    /// The message is larger than any honest one.
    #[error("{what} is {len} bytes, more than the {max} allowed")]
    TooLarge {
        /// Which message.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// JSON that does not decode into SPIRE's struct.
    #[error("unable to unmarshall {what}: {cause}")]
    Json {
        /// Which message.
        what: &'static str,
        /// The decoder's error.
        cause: serde_json::Error,
    },
    /// `DevIDCert` is empty.
    #[error("no DevID certificate to attest")]
    NoDevIdCert,
    /// A certificate that does not parse.
    #[error("unable to parse {what}: {reason}")]
    BadCertificate {
        /// Which one.
        what: &'static str,
        /// The parser's complaint.
        reason: CertError,
    },
    /// The DevID chain does not lead to a configured DevID CA.
    #[error("unable to verify DevID signature: {0}")]
    DevIdChain(ChainError),
    /// A required field is absent or empty (SPIRE's messages).
    #[error("missing {0}")]
    Missing(&'static str),
    /// A TPM structure that does not parse.
    #[error("unable to decode {field}: {cause}")]
    Tpm2 {
        /// The JSON field.
        field: &'static str,
        /// Why.
        cause: Tpm2Error,
    },
    /// The EK certificate does not carry an RSA key.
    #[error("key from certificate is not an RSA key")]
    EkCertNotRsa,
    /// EKPub is not RSA.
    #[error("endorsement key public blob is not an RSA key")]
    EkPubNotRsa,
    /// EKPub is not the key in the EK certificate.
    #[error("public key in EK certificate differs from EKPub")]
    EkMismatch,
    /// The EK certificate does not chain to a configured endorsement CA.
    #[error("cannot verify EK signature: {0}")]
    EkChain(ChainError),
    /// The EK cannot protect a credential.
    #[error("cannot make a credential for the EK: {0}")]
    EkKey(&'static str),
    /// The DevID key is not one the TPM made and cannot export.
    #[error("the DevID is not a fixedTPM, fixedParent, sensitiveDataOrigin, unrestricted signing key (attributes 0x{attributes:08x})")]
    DevIdAttributes {
        /// TPMA_OBJECT of the DevID.
        attributes: u32,
    },
    /// Stricter than SPIRE: DevIDPub is not a key the TPM made and cannot export.
    #[error("DevIDPub is not a fixedTPM, fixedParent, sensitiveDataOrigin signing key (attributes 0x{attributes:08x}): a key from outside the TPM proves no residency")]
    DevIdNotResident {
        /// TPMA_OBJECT of DevIDPub.
        attributes: u32,
    },
    /// A DevID key type this CA does not certify.
    #[error("the DevID key is neither RSA-2048 nor ECC P-256")]
    DevIdKeyType,
    /// The certification's qualifying data is not the verifier's nonce: replayed, or made for another exchange.
    #[error("the DevID certification was not made for this exchange (its qualifying data is not the nonce)")]
    StaleCertification,
    /// The EK policy needs the EK listed, and it is not.
    #[error("EK {hash} is not in the inventory of approved EKs")]
    EkNotListed {
        /// The EK's hash.
        hash: String,
    },
    /// Neither a certificate chaining to a configured CA nor the inventory approves the EK.
    #[error("EK {hash} is neither certified by a configured endorsement CA ({certificate}) nor in the inventory")]
    EkNeither {
        /// The EK's hash.
        hash: String,
        /// Why its certificate did not count.
        certificate: Box<DevIdError>,
    },
    /// The AK is not RSA.
    #[error("only RSA keys are supported (AK)")]
    AkNotRsa,
    /// The AK is not a signing key.
    #[error("AK is not a signing key")]
    AkNotSigning,
    /// The AK has no signing scheme (SPIRE's server would crash on it).
    #[error("AK signature scheme is NULL (needs RSASSA)")]
    AkNullScheme,
    /// Stricter than SPIRE: the AK lacks attributes a TPM attestation key has.
    #[error("AK is not a restricted, fixedTPM, fixedParent, sensitiveDataOrigin signing key (attributes 0x{attributes:08x})")]
    AkAttributes {
        /// TPMA_OBJECT of the AK.
        attributes: u32,
    },
    /// The certification signature's scheme is not the AK's.
    #[error("certification signature scheme 0x{scheme:04x}/hash 0x{hash:04x} is not the AK's RSASSA scheme")]
    CertifyScheme {
        /// Scheme found.
        scheme: u16,
        /// Hash found.
        hash: u16,
    },
    /// The certification signature does not verify with the AK.
    #[error("certification signature verification failed")]
    CertifySignature,
    /// TPMS_ATTEST without the TPM_GENERATED magic.
    #[error("attestation was not generated by a TPM (magic 0x{0:08x})")]
    AttestMagic(u32),
    /// TPMS_ATTEST of another type than certify.
    #[error("missing certify info (attestation type 0x{0:04x})")]
    AttestType(u16),
    /// Stricter than SPIRE: the attestation does not name a signer in the AK's name algorithm.
    #[error("attestation's qualifiedSigner is not a qualified name in the AK's name algorithm")]
    QualifiedSigner,
    /// The certified object is not DevIDPub.
    #[error("certify failed: the certified name is not DevIDPub's")]
    CertifyName,
    /// Stricter than SPIRE: DevIDPub is not the key the DevID certificate certifies.
    #[error("DevIDPub is not the key in the DevID certificate")]
    DevIdPubMismatch,
    /// The challenge response is incomplete.
    #[error("challenge response has no {0}")]
    ResponseMissing(&'static str),
    /// The nonce signature does not verify with the DevID certificate's key.
    #[error("devID challenge verification failed")]
    ProofOfPossession,
    /// The activated secret is not the one the credential carried.
    #[error("credential activation failed: nonces are different")]
    ProofOfResidency,
    /// The PCR quote failed a check.
    #[error("PCR quote refused: {0}")]
    Quote(String),
    /// `require_pcr_policy`, and the agent sent no quote.
    #[error("no PCR quote in the challenge response, and require_pcr_policy is set (SPIRE's agent plugin sends none)")]
    NoQuote,
    /// `require_pcr_policy`, and no set of the policy matches.
    #[error("no pcr_policy entry matches the quoted PCRs: {0}")]
    PcrPolicy(String),
    /// The DevID certificate's serial is on its issuer's CRL.
    #[error("the DevID certificate (serial {serial}) is revoked")]
    Revoked {
        /// The serial, lowercase hex.
        serial: String,
    },
    /// The CRL of the DevID certificate's issuer is past its nextUpdate: revocations since are unknown.
    #[error("the CRL of {issuer} is past its nextUpdate ({next_update}); refusing its certificates until a current CRL is in devid_crl_path")]
    CrlPastNextUpdate {
        /// The CRL's issuer.
        issuer: String,
        /// Its nextUpdate, unix seconds.
        next_update: u64,
    },
    /// The system random generator failed.
    #[error("random number generator failed")]
    Random,
}
