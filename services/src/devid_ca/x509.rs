//! What the enrollment CA signs with its TPM key: DevID certificates, its own self-signed certificate or its
//! certificate request, and CRLs. Every signature is one `KeySigner::sign_digest` over the SHA-256 of the DER to be
//! signed (TPM2_Sign with the CA key: `reference devid-enrollment.md` §5.2); RSA keys sign sha256WithRSAEncryption
//! (PKCS#1 v1.5), P-256 keys ecdsa-with-SHA256 (DER `SEQUENCE{r, s}` from the TPM's `r || s`).
//!
//! Invariants: the algorithm follows the key's type; a serial is random, positive and at least 64 bits (127);
//! a DevID certificate names the approved name only, never one the node chose; a CRL is v2 with nextUpdate, the
//! CA's key identifier and a CRL number (RFC 5280 §5), and lists no entry field when nothing is revoked.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use der::asn1::{BitString, ObjectIdentifier, OctetString};
use der::{Decode, Encode};
use spki::{AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, EncodePublicKey, SubjectPublicKeyInfoOwned};
use x509_cert::builder::{Builder, CertificateBuilder, Profile, RequestBuilder};
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, SubjectKeyIdentifier};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::Certificate;

const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const AUTHORITY_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.35");
const SUBJECT_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
const CRL_NUMBER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.20");

/// Why something could not be signed or built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum X509Error {
    /// The TPM did not sign.
    #[error("TPM signature")]
    Tpm(#[source] tpm::TpmError),
    /// The TPM's signature is not of the key's form.
    #[error("the TPM returned an unusable signature")]
    Signature,
    /// A structure could not be encoded or decoded.
    #[error("encoding")]
    Der(#[from] der::Error),
    /// A public key could not be encoded.
    #[error("public key")]
    Spki(#[from] spki::Error),
    /// The builder refused.
    #[error("building the certificate")]
    Build(#[from] x509_cert::builder::Error),
    /// A name that is not a distinguished name.
    #[error("subject {0:?}")]
    Name(String),
    /// A time outside what X.509 can say.
    #[error("time {0}")]
    Time(u64),
}

/// The CA's key, in the TPM: signs DER with SHA-256 through `KeySigner`.
#[derive(Clone)]
pub struct CaKey {
    key: Arc<dyn tpm::KeySigner>,
}

impl std::fmt::Debug for CaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaKey").field("type", &self.key.key_type()).finish()
    }
}

/// The CA key's public half, as the builder wants it.
#[derive(Debug, Clone)]
pub struct CaPublicKey(Vec<u8>);

impl EncodePublicKey for CaPublicKey {
    fn to_public_key_der(&self) -> spki::Result<spki::Document> {
        Ok(spki::Document::try_from(self.0.as_slice())?)
    }
}

impl signature::Keypair for CaKey {
    type VerifyingKey = CaPublicKey;
    fn verifying_key(&self) -> CaPublicKey {
        CaPublicKey(self.key.public_key().spki_der().to_vec())
    }
}

impl DynSignatureAlgorithmIdentifier for CaKey {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        Ok(self.algorithm())
    }
}

impl CaKey {
    /// The CA key behind `key` (the TPM's, or a test's software key).
    pub fn new(key: Arc<dyn tpm::KeySigner>) -> CaKey {
        CaKey { key }
    }

    /// The key's SubjectPublicKeyInfo, DER.
    pub fn spki_der(&self) -> &[u8] {
        self.key.public_key().spki_der()
    }

    fn algorithm(&self) -> AlgorithmIdentifierOwned {
        match self.key.key_type() {
            tpm::KeyType::Rsa2048 => {
                AlgorithmIdentifierOwned { oid: SHA256_WITH_RSA, parameters: Some(der::asn1::Null.into()) }
            }
            tpm::KeyType::EccP256 => AlgorithmIdentifierOwned { oid: ECDSA_WITH_SHA256, parameters: None },
        }
    }

    /// Signs `tbs` (DER) as X.509 wants it: PKCS#1 v1.5, or ECDSA DER.
    pub fn sign(&self, tbs: &[u8]) -> Result<BitString, X509Error> {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(tbs).into();
        let raw = self.key.sign_digest(&digest).map_err(X509Error::Tpm)?;
        let bytes = match self.key.key_type() {
            tpm::KeyType::Rsa2048 => raw,
            tpm::KeyType::EccP256 => {
                p256::ecdsa::Signature::from_slice(&raw).map_err(|_| X509Error::Signature)?.to_der().as_bytes().to_vec()
            }
        };
        Ok(BitString::from_bytes(&bytes)?)
    }
}

/// A random serial: 16 bytes, positive, its first byte non-zero (127 bits of entropy at least 120).
pub fn random_serial() -> Result<SerialNumber, X509Error> {
    let mut serial = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut serial);
    serial[0] = (serial[0] & 0x7f) | 0x01;
    Ok(SerialNumber::new(&serial)?)
}

/// A serial in the hex form the database and `revoke --serial` use.
pub fn serial_hex(serial: &SerialNumber) -> String {
    serial.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// The serial of hex `text`, as written by [`serial_hex`].
pub fn parse_serial(text: &str) -> Option<SerialNumber> {
    if text.is_empty() || !text.len().is_multiple_of(2) || text.len() > 40 {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect();
    SerialNumber::new(&bytes?).ok()
}

/// X.509 time for unix seconds.
pub fn time(unix: u64) -> Result<Time, X509Error> {
    Time::try_from(UNIX_EPOCH + Duration::from_secs(unix)).map_err(|_| X509Error::Time(unix))
}

fn cn(name: &str) -> Result<Name, X509Error> {
    // The name is a node name (letters, digits, '.', '-', '_') or an operator's CN: no RFC 4514 escaping needed
    // for the former; the latter is refused here if it does not parse.
    format!("CN={name}").parse().map_err(|_| X509Error::Name(name.to_owned()))
}

/// The DevID certificate for `spki` (the node's DevID key), named `name`, serial `serial`, valid from `not_before`
/// to `not_after`, issued by the CA whose certificate is `ca`.
pub fn issue_devid(
    key: &CaKey,
    ca: &Certificate,
    serial: SerialNumber,
    name: &str,
    spki: &[u8],
    not_before: u64,
    not_after: u64,
) -> Result<Certificate, X509Error> {
    let profile = Profile::Leaf {
        issuer: ca.tbs_certificate.subject.clone(),
        enable_key_agreement: false,
        enable_key_encipherment: false,
    };
    let validity = Validity { not_before: time(not_before)?, not_after: time(not_after)? };
    let spki = SubjectPublicKeyInfoOwned::from_der(spki)?;
    let mut builder = CertificateBuilder::new(profile, serial, validity, cn(name)?, spki, key)?;
    let tbs = builder.finalize()?;
    let signature = key.sign(&tbs)?;
    Ok(builder.assemble(signature)?)
}

/// The CA's self-signed certificate, `CN=subject_cn`, valid from `now` for `days`.
pub fn self_signed(key: &CaKey, subject_cn: &str, now: u64, days: u64) -> Result<Certificate, X509Error> {
    let validity = Validity { not_before: time(now.saturating_sub(60))?, not_after: time(now + days * 86_400)? };
    let spki = SubjectPublicKeyInfoOwned::from_der(key.spki_der())?;
    let mut builder = CertificateBuilder::new(Profile::Root, random_serial()?, validity, cn(subject_cn)?, spki, key)?;
    let tbs = builder.finalize()?;
    let signature = key.sign(&tbs)?;
    Ok(builder.assemble(signature)?)
}

/// A PKCS#10 request for the CA key, `CN=subject_cn`, for an offline root to sign.
pub fn request(key: &CaKey, subject_cn: &str) -> Result<x509_cert::request::CertReq, X509Error> {
    let mut builder = RequestBuilder::new(cn(subject_cn)?, key)?;
    let info = builder.finalize()?;
    let signature = key.sign(&info)?;
    Ok(builder.assemble(signature)?)
}

/// The CA certificate's subject key identifier: its extension's, or (as RFC 5280 §4.2.1.2's first method, which
/// the builder uses) SHA-1 of its public key bits.
pub fn key_identifier(ca: &Certificate) -> Result<Vec<u8>, X509Error> {
    if let Some(ext) = ca.tbs_certificate.extensions.iter().flatten().find(|e| e.extn_id == SUBJECT_KEY_ID) {
        return Ok(SubjectKeyIdentifier::from_der(ext.extn_value.as_bytes())?.0.as_bytes().to_vec());
    }
    let spki = ca.tbs_certificate.subject_public_key_info.to_der()?;
    let spki = spki::SubjectPublicKeyInfoRef::from_der(&spki)?;
    Ok(SubjectKeyIdentifier::try_from(spki)?.0.as_bytes().to_vec())
}

/// One revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// Its serial.
    pub serial: SerialNumber,
    /// When it was revoked (unix seconds).
    pub at: u64,
}

/// A CRL of `revoked`, number `number`, from `this_update` to `next_update`, signed by the CA key.
pub fn crl(
    key: &CaKey,
    ca: &Certificate,
    revoked: &[Revoked],
    number: u64,
    this_update: u64,
    next_update: u64,
) -> Result<CertificateList, X509Error> {
    let aki = AuthorityKeyIdentifier {
        key_identifier: Some(OctetString::new(key_identifier(ca)?)?),
        authority_cert_issuer: None,
        authority_cert_serial_number: None,
    };
    let extensions = vec![
        Extension { extn_id: AUTHORITY_KEY_ID, critical: false, extn_value: OctetString::new(aki.to_der()?)? },
        Extension { extn_id: CRL_NUMBER, critical: false, extn_value: OctetString::new(number.to_der()?)? },
    ];
    let entries = revoked
        .iter()
        .map(|r| {
            Ok(RevokedCert {
                serial_number: r.serial.clone(),
                revocation_date: time(r.at)?,
                crl_entry_extensions: None,
            })
        })
        .collect::<Result<Vec<_>, X509Error>>()?;
    let tbs = TbsCertList {
        version: x509_cert::Version::V2,
        signature: key.algorithm(),
        issuer: ca.tbs_certificate.subject.clone(),
        this_update: time(this_update)?,
        next_update: Some(time(next_update)?),
        revoked_certificates: (!entries.is_empty()).then_some(entries),
        crl_extensions: Some(extensions),
    };
    let signature = key.sign(&tbs.to_der()?)?;
    Ok(CertificateList { tbs_cert_list: tbs, signature_algorithm: key.algorithm(), signature })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crypto::devid::chain::{self, Cert};

    fn ca(kind: tpm::KeyType) -> (CaKey, Certificate) {
        let key = CaKey::new(Arc::new(tpm::mock::SoftwareKey::generate(kind)));
        let cert = self_signed(&key, "Fleet DevID CA", 1_800_000_000, 3650).unwrap();
        (key, cert)
    }

    #[test]
    fn issued_certificates_and_crls_verify_with_the_ca_key_for_both_key_types() {
        for kind in [tpm::KeyType::Rsa2048, tpm::KeyType::EccP256] {
            let (key, ca_cert) = ca(kind);
            let anchor = Cert::from_der(&ca_cert.to_der().unwrap()).unwrap();
            let node = tpm::mock::SoftwareKey::generate(tpm::KeyType::EccP256);
            let serial = random_serial().unwrap();
            let hex = serial_hex(&serial);
            assert_eq!(parse_serial(&hex).unwrap(), serial);
            assert!(serial.as_bytes().len() >= 8 && serial.as_bytes()[0] & 0x80 == 0, "positive, >= 64 bits");
            let leaf = issue_devid(
                &key,
                &ca_cert,
                serial.clone(),
                "node-1",
                tpm::KeySigner::public_key(&node).spki_der(),
                1_800_000_000,
                1_800_086_400,
            )
            .unwrap();
            let leaf = Cert::from_der(&leaf.to_der().unwrap()).unwrap();
            assert_eq!(leaf.common_name(false).as_deref(), Some("node-1"));
            assert!(leaf.has_key(tpm::KeySigner::public_key(&node).spki_der()));
            chain::verify(&leaf, &[], std::slice::from_ref(&anchor), 1_800_000_100).unwrap();
            assert!(chain::verify(&leaf, &[], std::slice::from_ref(&anchor), 1_800_086_401).is_err(), "past notAfter");
            // The CRL: signed by the CA key over its TBS, v2, with its serials.
            let list =
                crl(&key, &ca_cert, &[Revoked { serial, at: 1_800_000_200 }], 7, 1_800_000_200, 1_800_604_800).unwrap();
            let tbs = list.tbs_cert_list.to_der().unwrap();
            let vk = crypto::keys::VerifyingKey::from_spki_der("ca", key.spki_der()).unwrap();
            assert!(vk.verify_x509(&tbs, list.signature.as_bytes().unwrap()), "{kind:?}: the CRL's signature");
            assert_eq!(list.tbs_cert_list.version, x509_cert::Version::V2);
            assert_eq!(list.tbs_cert_list.revoked_certificates.as_ref().map(Vec::len), Some(1));
            let empty = crl(&key, &ca_cert, &[], 8, 1_800_000_200, 1_800_604_800).unwrap();
            assert!(empty.tbs_cert_list.revoked_certificates.is_none(), "no entry field when nothing is revoked");
        }
    }

    /// A DevID leaf for `serial` from this CA.
    fn leaf_of(key: &CaKey, ca_cert: &Certificate, serial: &SerialNumber) -> Cert {
        let node = tpm::mock::SoftwareKey::generate(tpm::KeyType::EccP256);
        let spki = tpm::KeySigner::public_key(&node).spki_der().to_vec();
        let leaf = issue_devid(key, ca_cert, serial.clone(), "node", &spki, 1_800_000_000, 1_900_000_000).unwrap();
        Cert::from_der(&leaf.to_der().unwrap()).unwrap()
    }

    fn pem(list: &CertificateList) -> Vec<u8> {
        crypto::pem::encode("X509 CRL", &list.to_der().unwrap()).into_bytes()
    }

    /// What the CA writes is what the server plugin's `devid_crl_path` reads: the revoked serial is refused, the
    /// others pass, a certificate of another CA is not this CRL's to judge, and past nextUpdate nothing of this
    /// CA passes.
    #[test]
    fn the_cas_crl_revokes_its_serials_for_the_plugin_and_fails_closed_past_next_update() {
        use crypto::devid::crl::Crl;
        use crypto::devid::DevIdError;
        for kind in [tpm::KeyType::Rsa2048, tpm::KeyType::EccP256] {
            let (key, ca_cert) = ca(kind);
            let anchor = Cert::from_der(&ca_cert.to_der().unwrap()).unwrap();
            let (revoked, kept) = (random_serial().unwrap(), random_serial().unwrap());
            let list = crl(
                &key,
                &ca_cert,
                &[Revoked { serial: revoked.clone(), at: 1_800_000_200 }],
                3,
                1_800_000_200,
                1_800_604_800,
            )
            .unwrap();
            for bytes in [pem(&list), list.to_der().unwrap()] {
                let parsed = Crl::parse(&bytes, std::slice::from_ref(&anchor)).unwrap();
                assert_eq!((parsed.len(), parsed.next_update()), (1, 1_800_604_800));
                let now = 1_800_000_300;
                let refused = parsed.check(&leaf_of(&key, &ca_cert, &revoked), now).unwrap_err();
                assert!(
                    matches!(refused, DevIdError::Revoked { ref serial } if *serial == serial_hex(&revoked)),
                    "{refused}"
                );
                parsed.check(&leaf_of(&key, &ca_cert, &kept), now).unwrap();
                let stale = parsed.check(&leaf_of(&key, &ca_cert, &kept), 1_800_604_800).unwrap_err();
                assert!(matches!(stale, DevIdError::CrlPastNextUpdate { .. }), "{stale}");
                let (other_key, other_cert) = {
                    let k = CaKey::new(Arc::new(tpm::mock::SoftwareKey::generate(kind)));
                    let c = self_signed(&k, "Another CA", 1_800_000_000, 3650).unwrap();
                    (k, c)
                };
                parsed.check(&leaf_of(&other_key, &other_cert, &revoked), 1_900_000_000).unwrap();
            }
        }
    }

    /// Every CRL the plugin must not take, each with its reason.
    #[test]
    fn crls_that_are_not_the_cas_are_refused_with_their_reason() {
        use crypto::devid::crl::{Crl, CrlError, MAX_CRL};
        let (key, ca_cert) = ca(tpm::KeyType::EccP256);
        let anchor = Cert::from_der(&ca_cert.to_der().unwrap()).unwrap();
        let anchors = std::slice::from_ref(&anchor);
        let good = crl(&key, &ca_cert, &[], 5, 1_800_000_200, 1_800_604_800).unwrap();
        // Same subject, another key: the signature does not verify.
        let impostor = CaKey::new(Arc::new(tpm::mock::SoftwareKey::generate(tpm::KeyType::EccP256)));
        let forged = crl(&impostor, &ca_cert, &[], 6, 1_800_000_200, 1_800_604_800).unwrap();
        let other = self_signed(&impostor, "Another CA", 1_800_000_000, 3650).unwrap();
        let foreign = crl(&impostor, &other, &[], 6, 1_800_000_200, 1_800_604_800).unwrap();
        let mut no_next = good.clone();
        no_next.tbs_cert_list.next_update = None;
        let mut delta = good.clone();
        delta.tbs_cert_list.crl_extensions.as_mut().unwrap().push(Extension {
            extn_id: ObjectIdentifier::new_unwrap("2.5.29.27"),
            critical: true,
            extn_value: OctetString::new(5u64.to_der().unwrap()).unwrap(),
        });
        let mut v1 = good.clone();
        v1.tbs_cert_list.version = x509_cert::Version::V1;
        let mut two = pem(&good);
        two.extend(pem(&good));
        type Want = fn(&CrlError) -> bool;
        let rows: Vec<(&str, Vec<u8>, Want)> = vec![
            ("another key under the CA's name", pem(&forged), |e| matches!(e, CrlError::BadSignature(_))),
            ("another CA", pem(&foreign), |e| matches!(e, CrlError::UnknownIssuer(_))),
            ("no nextUpdate", pem(&no_next), |e| matches!(e, CrlError::NoNextUpdate)),
            ("a delta CRL", pem(&delta), |e| matches!(e, CrlError::UnhandledCritical(o) if o == "2.5.29.27")),
            ("v1", pem(&v1), |e| matches!(e, CrlError::Version | CrlError::Der(_))),
            ("two CRLs in one file", two, |e| matches!(e, CrlError::Format(_))),
            ("a certificate", crypto::pem::encode("CERTIFICATE", &ca_cert.to_der().unwrap()).into_bytes(), |e| {
                matches!(e, CrlError::Format(_))
            }),
            ("DER with a byte after it", [good.to_der().unwrap(), vec![0]].concat(), |e| {
                matches!(e, CrlError::Der(_) | CrlError::NotDer)
            }),
            ("larger than the limit", vec![b' '; MAX_CRL + 1], |e| matches!(e, CrlError::TooLarge { .. })),
        ];
        for (what, bytes, want) in rows {
            let err = Crl::parse(&bytes, anchors).unwrap_err();
            assert!(want(&err), "{what}: {err}");
        }
        // A lower CRL number may not replace a higher one (an old file put back); equal or higher may.
        let newer =
            Crl::parse(&pem(&crl(&key, &ca_cert, &[], 300, 1_800_000_300, 1_800_604_900).unwrap()), anchors).unwrap();
        let older = Crl::parse(&pem(&good), anchors).unwrap();
        assert!(newer.may_replace(&older) && newer.may_replace(&newer) && !older.may_replace(&newer));
        // Another CA of devid_ca_path, whatever its number: it would drop this CA's revocations, and put back
        // after, roll the number back.
        let both = [anchor.clone(), Cert::from_der(&other.to_der().unwrap()).unwrap()];
        let theirs =
            Crl::parse(&pem(&crl(&impostor, &other, &[], 900, 1_800_000_300, 1_800_604_900).unwrap()), &both).unwrap();
        let ours = Crl::parse(&pem(&good), &both).unwrap();
        assert!(!theirs.may_replace(&ours) && !ours.may_replace(&theirs), "a CRL of another CA replaced this one's");
    }

    #[test]
    fn serials_and_names_refuse_what_they_cannot_hold() {
        for bad in ["", "0", "zz", &"00".repeat(21)] {
            assert!(parse_serial(bad).is_none(), "{bad:?}");
        }
        let (key, _) = ca(tpm::KeyType::EccP256);
        assert!(request(&key, "Fleet DevID CA").is_ok());
    }
}
