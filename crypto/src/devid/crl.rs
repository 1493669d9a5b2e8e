//! Revocation of DevID certificates by an X.509 CRL (RFC 5280 §5), as the enrollment CA writes it: a complete
//! (not delta, not indirect) v2 CRL with a nextUpdate, signed by a configured DevID CA.
//!
//! A CRL is accepted only when its signature verifies with the key of a DevID CA whose subject is the CRL's
//! issuer; it then speaks for the certificates that CA issued, and only for them. A CRL past its nextUpdate
//! refuses every certificate of its issuer ([`DevIdError::CrlPastNextUpdate`]): a node revoked after the last CRL
//! reached this server could otherwise attest for as long as the CRL stayed stale.

use std::collections::BTreeSet;

use der::{Decode, Encode};
use x509_cert::crl::CertificateList;
use x509_cert::name::Name;

use crate::devid::chain::{Cert, SignatureError};
use crate::devid::error::DevIdError;
use crate::devid::strip;

/// Largest CRL file read (a CRL of 100 000 entries is about 4 MB).
pub const MAX_CRL: usize = 16 * 1024 * 1024;

/// `id-ce-cRLNumber`.
const CRL_NUMBER: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("2.5.29.20");
/// `id-ce-authorityKeyIdentifier`.
const AUTHORITY_KEY_ID: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("2.5.29.35");

/// Why a CRL is not used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CrlError {
    /// Larger than [`MAX_CRL`].
    #[error("{len} bytes, more than the {MAX_CRL} allowed")]
    TooLarge {
        /// Its size.
        len: usize,
    },
    /// Neither one PEM `X509 CRL` block nor DER.
    #[error("not a PEM X509 CRL or a DER CRL: {0}")]
    Format(String),
    /// The DER does not decode as a CRL.
    #[error("not a CRL: {0}")]
    Der(der::Error),
    /// BER, or bytes after the CRL.
    #[error("not DER (re-encoding differs)")]
    NotDer,
    /// A v1 CRL (no extensions, no CRL number).
    #[error("a v1 CRL; only v2 CRLs are used")]
    Version,
    /// The signed algorithm and the outer one differ.
    #[error("the signature algorithm inside the signed list differs from the outer one")]
    AlgorithmMismatch,
    /// No nextUpdate: the CRL would never go stale.
    #[error("no nextUpdate")]
    NoNextUpdate,
    /// A critical extension this verifier does not process (a delta CRL, an indirect CRL, a partitioned one).
    #[error("critical extension {0} is not processed here (only complete, direct CRLs are used)")]
    UnhandledCritical(String),
    /// No configured DevID CA has the CRL's issuer as its subject.
    #[error("issued by {0}, which is not a configured DevID CA")]
    UnknownIssuer(String),
    /// The signature does not verify with the issuer's key.
    #[error("its signature does not verify with the key of {0}")]
    BadSignature(String),
    /// The algorithm is not one accepted for the issuer's key.
    #[error("unsupported signature: {0}")]
    Unsupported(String),
}

/// A verified CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crl {
    issuer: Name,
    issuer_text: String,
    number: Vec<u8>,
    this_update: u64,
    next_update: u64,
    revoked: BTreeSet<Vec<u8>>,
}

impl Crl {
    /// Parses `bytes` (PEM `X509 CRL` or DER) and verifies it against `anchors` (the DevID CAs).
    pub fn parse(bytes: &[u8], anchors: &[Cert]) -> Result<Crl, CrlError> {
        if bytes.len() > MAX_CRL {
            return Err(CrlError::TooLarge { len: bytes.len() });
        }
        let der = der_of(bytes)?;
        let list = CertificateList::from_der(&der).map_err(CrlError::Der)?;
        if list.to_der().map_err(CrlError::Der)? != der {
            return Err(CrlError::NotDer);
        }
        let tbs = &list.tbs_cert_list;
        if tbs.version != x509_cert::Version::V2 {
            return Err(CrlError::Version);
        }
        if tbs.signature != list.signature_algorithm {
            return Err(CrlError::AlgorithmMismatch);
        }
        let next_update = tbs.next_update.ok_or(CrlError::NoNextUpdate)?;
        let handled = [CRL_NUMBER, AUTHORITY_KEY_ID];
        let entry_extensions =
            tbs.revoked_certificates.iter().flatten().flat_map(|r| r.crl_entry_extensions.iter().flatten());
        if let Some(ext) = tbs
            .crl_extensions
            .iter()
            .flatten()
            .filter(|e| !handled.contains(&e.extn_id))
            .chain(entry_extensions)
            .find(|e| e.critical)
        {
            return Err(CrlError::UnhandledCritical(ext.extn_id.to_string()));
        }
        let issuer_text = tbs.issuer.to_string();
        let signed = tbs.to_der().map_err(CrlError::Der)?;
        let signature = list.signature.raw_bytes();
        let mut last = CrlError::UnknownIssuer(issuer_text.clone());
        for anchor in anchors.iter().filter(|a| a.subject_name() == &tbs.issuer) {
            match anchor.check_signature(list.signature_algorithm.oid, &signed, signature) {
                Ok(()) => {
                    let number = tbs
                        .crl_extensions
                        .iter()
                        .flatten()
                        .find(|e| e.extn_id == CRL_NUMBER)
                        .and_then(|e| der::asn1::Uint::from_der(e.extn_value.as_bytes()).ok())
                        .map(|n| strip(n.as_bytes()).to_vec())
                        .unwrap_or_default();
                    let revoked = tbs
                        .revoked_certificates
                        .iter()
                        .flatten()
                        .map(|r| strip(r.serial_number.as_bytes()).to_vec())
                        .collect();
                    return Ok(Crl {
                        issuer: tbs.issuer.clone(),
                        issuer_text,
                        number,
                        this_update: tbs.this_update.to_unix_duration().as_secs(),
                        next_update: next_update.to_unix_duration().as_secs(),
                        revoked,
                    });
                }
                Err(SignatureError::Bad) => last = CrlError::BadSignature(anchor.subject().to_string()),
                Err(SignatureError::Unsupported(detail)) => last = CrlError::Unsupported(detail),
            }
        }
        Err(last)
    }

    /// The issuer, RFC 4514.
    pub fn issuer(&self) -> &str {
        &self.issuer_text
    }

    /// thisUpdate, unix seconds.
    pub fn this_update(&self) -> u64 {
        self.this_update
    }

    /// nextUpdate, unix seconds.
    pub fn next_update(&self) -> u64 {
        self.next_update
    }

    /// How many certificates it revokes.
    pub fn len(&self) -> usize {
        self.revoked.len()
    }

    /// True when it lists the certificate with serial `serial` (big-endian bytes).
    pub fn revokes(&self, serial: &[u8]) -> bool {
        self.revoked.contains(strip(serial))
    }

    /// True when it revokes nothing.
    pub fn is_empty(&self) -> bool {
        self.revoked.is_empty()
    }

    /// True when `self` may replace `current`: the same issuer with a CRL number at least as high (RFC 5280
    /// §5.2.3: numbers only grow). An older CRL put back in the file would undo revocations; another CA's CRL
    /// would drop this one's revocations (and its nextUpdate), and put back in turn, roll its number back. The
    /// file holds one CA's CRL; another CA's is taken only by a new configuration.
    pub fn may_replace(&self, current: &Crl) -> bool {
        self.issuer == current.issuer && (self.number.len(), &self.number) >= (current.number.len(), &current.number)
    }

    /// Refuses `leaf` if this CRL speaks for its issuer and revokes it, or is past its nextUpdate at `now`.
    pub fn check(&self, leaf: &Cert, now: u64) -> Result<(), DevIdError> {
        if leaf.issuer_name() != &self.issuer {
            return Ok(());
        }
        if now >= self.next_update {
            return Err(DevIdError::CrlPastNextUpdate {
                issuer: self.issuer_text.clone(),
                next_update: self.next_update,
            });
        }
        let serial = strip(leaf.serial());
        if self.revoked.contains(serial) {
            return Err(DevIdError::Revoked { serial: serial.iter().map(|b| format!("{b:02x}")).collect() });
        }
        Ok(())
    }
}

/// The DER of one CRL given as PEM (exactly one `X509 CRL` block) or DER.
fn der_of(bytes: &[u8]) -> Result<Vec<u8>, CrlError> {
    if bytes.first() == Some(&0x30) {
        return Ok(bytes.to_vec());
    }
    let text = std::str::from_utf8(bytes).map_err(|_| CrlError::Format("neither UTF-8 PEM nor DER".into()))?;
    let blocks = crate::pem::blocks(text).map_err(|e| CrlError::Format(format!("{e:?}")))?;
    let mut crls = blocks.into_iter().filter(|b| b.label == "X509 CRL");
    match (crls.next(), crls.next()) {
        (Some(block), None) => Ok(block.der),
        (None, _) => Err(CrlError::Format("no X509 CRL block".into())),
        (Some(_), Some(_)) => Err(CrlError::Format("more than one X509 CRL block".into())),
    }
}
