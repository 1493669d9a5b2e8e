//! Keys that exist outside the TPM only as TPM-wrapped blobs (the KeyManager plugins' keys): created inside the
//! TPM under the ECC storage key (TCG H-2, rebuilt from its template whenever needed), never exportable, loaded to
//! sign and flushed afterwards.
//!
//! Keys carry no scheme, so each request names its own: an EC key signs ECDSA over a SHA-256, -384 or -512 digest
//! (Go's signers allow any hash with any curve, and TLS 1.2 lets the peer choose; the TPM truncates a digest longer
//! than the curve's order, as ECDSA does), an RSA key PKCS#1 v1.5 or PSS with any of the three. EC keys made before
//! this, with their curve's ECDSA scheme fixed in their public area, sign that hash alone. A PSS signature's salt is what the TPM chooses (the digest's length on swtpm and on most
//! TPMs; some use the largest possible): callers that need a given salt check it.

use std::convert::TryFrom;

use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::handles::{KeyHandle, ObjectHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Digest, EccPoint, EccScheme, HashScheme, KeyDerivationFunctionScheme, Private, Public, PublicBuilder,
    PublicEccParametersBuilder, PublicKeyRsa, PublicRsaParametersBuilder, RsaExponent, RsaScheme, Signature,
    SignatureScheme,
};
use tss_esapi::traits::{Marshall, UnMarshall};

use crate::error::TpmError;
use crate::esapi::{load_error, null_ticket, spki_der, step_error, OpError, Tpm};
use crate::key::KeyType;
use crate::objects::{with_srk, with_transient};
use crate::secret::Password;

/// The key types SPIRE's KeyManager asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WrappedKind {
    /// NIST P-256 (ECDSA).
    EcP256,
    /// NIST P-384 (ECDSA).
    EcP384,
    /// RSA-2048.
    Rsa2048,
    /// RSA-4096 (many TPMs, swtpm 0.7 among them, cannot make one).
    Rsa4096,
}

impl std::fmt::Display for WrappedKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WrappedKind::EcP256 => "EC P-256",
            WrappedKind::EcP384 => "EC P-384",
            WrappedKind::Rsa2048 => "RSA-2048",
            WrappedKind::Rsa4096 => "RSA-4096",
        })
    }
}

/// A digest's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Hash {
    /// The digest's length in bytes.
    pub fn size(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    fn tss(self) -> HashingAlgorithm {
        match self {
            Hash::Sha256 => HashingAlgorithm::Sha256,
            Hash::Sha384 => HashingAlgorithm::Sha384,
            Hash::Sha512 => HashingAlgorithm::Sha512,
        }
    }
}

/// How to sign a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// ECDSA (EC keys).
    Ecdsa(Hash),
    /// RSASSA-PKCS1-v1_5.
    RsaPkcs1(Hash),
    /// RSASSA-PSS, MGF1 with the same hash; the TPM chooses the salt length.
    RsaPss(Hash),
}

/// A key as it is kept outside the TPM: its public area, its TPM-wrapped private part, and the public key.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// Its type.
    pub kind: WrappedKind,
    /// The marshalled TPMT_PUBLIC.
    pub public: Vec<u8>,
    /// The TPM2B_PRIVATE contents: encrypted under the storage key, useless off this TPM.
    pub private: Vec<u8>,
    /// The DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// The hash a scheme in its public area fixes (EC keys made by earlier releases), if any.
    pub fixed_hash: Option<Hash>,
}

impl std::fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedKey").field("kind", &self.kind).finish_non_exhaustive()
    }
}

/// A loaded key's saved TPM context (TPM2_ContextSave): loading it again is one TPM2_ContextLoad instead of
/// rebuilding the storage key and loading the blob. The TPM encrypts and binds it; it is valid until the TPM is
/// reset or cleared, after which the full load runs again.
#[derive(Clone)]
pub struct SavedKey(tss_esapi::utils::TpmsContext);

impl std::fmt::Debug for SavedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SavedKey")
    }
}

/// The template of an unrestricted, non-exportable signing key of `kind`.
fn template(kind: WrappedKind) -> Result<Public, tss_esapi::Error> {
    let attrs = crate::templates::signing_attributes()?;
    let builder =
        PublicBuilder::new().with_name_hashing_algorithm(HashingAlgorithm::Sha256).with_object_attributes(attrs);
    let ecc = |curve| {
        builder
            .clone()
            .with_public_algorithm(PublicAlgorithm::Ecc)
            // A key whose scheme is TPM_ALG_NULL signs with the scheme each TPM2_Sign names (TPM 2.0 Part 3,
            // TPM2_Sign), as the RSA keys below do. tss-esapi's builder refuses NULL when told the key signs; that
            // flag only feeds the builder's checks (the object attributes make it a signing key), so it is unset.
            .with_ecc_parameters(
                PublicEccParametersBuilder::new()
                    .with_ecc_scheme(EccScheme::Null)
                    .with_curve(curve)
                    .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
                    .build()?,
            )
            .with_ecc_unique_identifier(EccPoint::default())
            .build()
    };
    let rsa = |bits| {
        builder
            .clone()
            .with_public_algorithm(PublicAlgorithm::Rsa)
            .with_rsa_parameters(
                PublicRsaParametersBuilder::new_unrestricted_signing_key(RsaScheme::Null, bits, RsaExponent::default())
                    .build()?,
            )
            .with_rsa_unique_identifier(PublicKeyRsa::default())
            .build()
    };
    match kind {
        WrappedKind::EcP256 => ecc(EccCurve::NistP256),
        WrappedKind::EcP384 => ecc(EccCurve::NistP384),
        WrappedKind::Rsa2048 => rsa(RsaKeyBits::Rsa2048),
        WrappedKind::Rsa4096 => rsa(RsaKeyBits::Rsa4096),
    }
}

/// The scheme `key` may sign with, checked before the TPM sees the request.
fn check_scheme(key: &WrappedKey, scheme: Scheme, digest: &[u8]) -> Result<SignatureScheme, TpmError> {
    let bad = |reason: String| TpmError::BadBlob { what: "signing request", reason };
    let hash = match scheme {
        Scheme::Ecdsa(h) | Scheme::RsaPkcs1(h) | Scheme::RsaPss(h) => h,
    };
    if digest.len() != hash.size() {
        return Err(bad(format!("a {}-byte digest for a {}-byte hash", digest.len(), hash.size())));
    }
    let hash_scheme = HashScheme::new(hash.tss());
    match (key.kind, scheme) {
        (WrappedKind::EcP256 | WrappedKind::EcP384, Scheme::Ecdsa(h)) => match key.fixed_hash {
            Some(fixed) if fixed != h => Err(bad(format!(
                "this {} key was made with ECDSA-{fixed:?} fixed in it (by an earlier release); it signs {fixed:?} digests only, not {h:?}",
                key.kind
            ))),
            _ => Ok(SignatureScheme::EcDsa { hash_scheme }),
        },
        (WrappedKind::Rsa2048 | WrappedKind::Rsa4096, Scheme::RsaPkcs1(_)) => {
            Ok(SignatureScheme::RsaSsa { hash_scheme })
        }
        (WrappedKind::Rsa2048 | WrappedKind::Rsa4096, Scheme::RsaPss(_)) => Ok(SignatureScheme::RsaPss { hash_scheme }),
        (kind, scheme) => Err(bad(format!("a {kind} key cannot sign {scheme:?}"))),
    }
}

/// The hash an ECDSA scheme in `public` fixes, if it has one.
fn fixed_hash(public: &Public) -> Option<Hash> {
    let Public::Ecc { parameters, .. } = public else { return None };
    match parameters.ecc_scheme() {
        EccScheme::EcDsa(h) => match h.hashing_algorithm() {
            HashingAlgorithm::Sha256 => Some(Hash::Sha256),
            HashingAlgorithm::Sha384 => Some(Hash::Sha384),
            HashingAlgorithm::Sha512 => Some(Hash::Sha512),
            _ => None,
        },
        _ => None,
    }
}

/// The type of a parsed public area.
fn kind_of(public: &Public) -> Option<WrappedKind> {
    match public {
        Public::Ecc { parameters, .. } => match parameters.ecc_curve() {
            EccCurve::NistP256 => Some(WrappedKind::EcP256),
            EccCurve::NistP384 => Some(WrappedKind::EcP384),
            _ => None,
        },
        Public::Rsa { parameters, .. } => match parameters.key_bits() {
            RsaKeyBits::Rsa2048 => Some(WrappedKind::Rsa2048),
            RsaKeyBits::Rsa4096 => Some(WrappedKind::Rsa4096),
            _ => None,
        },
        _ => None,
    }
}

impl WrappedKey {
    /// A key from its stored blobs (the public area is parsed and its type checked against `kind`).
    pub fn from_blobs(kind: WrappedKind, public: Vec<u8>, private: Vec<u8>) -> Result<WrappedKey, TpmError> {
        let bad = |reason: &str| TpmError::BadBlob { what: "stored key", reason: reason.into() };
        let parsed = Public::unmarshall(&public).map_err(|_| bad("the public area is not a TPMT_PUBLIC"))?;
        if kind_of(&parsed) != Some(kind) {
            return Err(bad("the public area is not of the key's type"));
        }
        let spki_der = spki_der(&parsed).map_err(|_| bad("the public key cannot be exported"))?;
        let fixed_hash = fixed_hash(&parsed);
        Ok(WrappedKey { kind, public, private, spki_der, fixed_hash })
    }
}

/// Loads `key` (its parsed public area `public`) under the ECC storage key; the storage key is flushed.
fn load(
    conn: &mut crate::esapi::Conn,
    device: &str,
    key: &WrappedKey,
    public: &Public,
    owner: &Password,
) -> Result<tss_esapi::handles::KeyHandle, OpError> {
    let private = Private::try_from(key.private.clone()).map_err(|_| {
        OpError::Final(TpmError::BadBlob {
            what: "stored key",
            reason: "the private blob is longer than a TPM2B_PRIVATE".into(),
        })
    })?;
    with_srk(conn, device, KeyType::EccP256, owner, |conn, srk| {
        conn.ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| ctx.load(srk, private.clone(), public.clone()))
            .map_err(|e| load_error(device, "load a key", Some("owner hierarchy password"), e))
    })
}

impl Tpm {
    /// Creates a key of `kind` inside the TPM under the storage key, with password `auth`. A kind the TPM cannot
    /// make (RSA-4096 on many) is an error naming it.
    pub fn create_wrapped(&self, kind: WrappedKind, owner: &Password, auth: &Password) -> Result<WrappedKey, TpmError> {
        let device = self.device().to_string();
        self.with_context("create a key", |conn| {
            with_srk(conn, &device, KeyType::EccP256, owner, |conn, srk| {
                let template = template(kind)?;
                let created = conn
                    .ctx
                    .execute_with_session(Some(AuthSession::Password), |ctx| {
                        ctx.create(srk, template, Some(auth.auth()?), None, None, None)
                    })
                    .map_err(|e| match &e {
                        tss_esapi::Error::Tss2Error(rc)
                            if matches!(
                                rc.kind(),
                                Some(
                                    Tss2ResponseCodeKind::KeySize
                                        | Tss2ResponseCodeKind::Curve
                                        | Tss2ResponseCodeKind::Value
                                        | Tss2ResponseCodeKind::Scheme
                                )
                            ) =>
                        {
                            OpError::Final(TpmError::BadBlob {
                                what: "key type",
                                reason: format!("TPM {device} cannot create {kind} keys ({e})"),
                            })
                        }
                        _ => step_error(&device, "create a key", Some("owner hierarchy password"), e),
                    })?;
                let spki_der = spki_der(&created.out_public).map_err(|_| {
                    OpError::Final(TpmError::BadBlob {
                        what: "new key",
                        reason: "its public key cannot be exported".into(),
                    })
                })?;
                Ok(WrappedKey {
                    kind,
                    fixed_hash: fixed_hash(&created.out_public),
                    public: created.out_public.marshall()?,
                    private: created.out_private.value().to_vec(),
                    spki_der,
                })
            })
        })
    }

    /// Loads `key` under the storage key and flushes it: `Err(ForeignBlob)` when this TPM no longer has the
    /// storage key it was made under (cleared or replaced).
    pub fn check_wrapped(&self, key: &WrappedKey, owner: &Password) -> Result<(), TpmError> {
        let public = Public::unmarshall(&key.public).map_err(|_| TpmError::BadBlob {
            what: "stored key",
            reason: "the public area is not a TPMT_PUBLIC".into(),
        })?;
        let device = self.device().to_string();
        self.with_context("load a key", |conn| {
            let loaded = load(conn, &device, key, &public, owner)?;
            with_transient(conn, loaded, |_| Ok(()))
        })
    }

    /// Loads `key` under the storage key, signs `digest` with `scheme`, and flushes it. Returns the RSA signature
    /// (the modulus' length), or ECDSA's `r || s`, each left-padded to the curve's size.
    pub fn sign_wrapped(
        &self,
        key: &WrappedKey,
        owner: &Password,
        auth: &Password,
        digest: &[u8],
        scheme: Scheme,
    ) -> Result<Vec<u8>, TpmError> {
        let (mut signatures, _) = self.sign_wrapped_batch(key, owner, auth, &[digest], scheme, None)?;
        signatures.pop().ok_or_else(|| TpmError::BadBlob { what: "stored key", reason: "no signature".into() })
    }

    /// Signs each of `digests` with `scheme` under one load of `key`, then flushes it: the key is loaded from
    /// `saved` when that still works (one command), else from its blobs, in which case the new saved context is
    /// returned for next time. The signatures come in the order of `digests`, each as [`Tpm::sign_wrapped`]'s.
    /// One digest the key cannot sign with `scheme` refuses the whole batch, before the TPM is asked anything.
    pub fn sign_wrapped_batch(
        &self,
        key: &WrappedKey,
        owner: &Password,
        auth: &Password,
        digests: &[&[u8]],
        scheme: Scheme,
        saved: Option<&SavedKey>,
    ) -> Result<(Vec<Vec<u8>>, Option<SavedKey>), TpmError> {
        let tss_scheme = match digests.first() {
            Some(first) => check_scheme(key, scheme, first)?,
            None => return Ok((Vec::new(), None)),
        };
        for digest in &digests[1..] {
            check_scheme(key, scheme, digest)?;
        }
        let bad = |reason: &str| TpmError::BadBlob { what: "stored key", reason: reason.into() };
        let public = Public::unmarshall(&key.public).map_err(|_| bad("the public area is not a TPMT_PUBLIC"))?;
        let device = self.device().to_string();
        let (signatures, fresh) = self.with_context("sign with a key", |conn| {
            let restored = saved.and_then(|s| conn.ctx.context_load(s.0.clone()).ok()).map(KeyHandle::from);
            let (loaded, fresh) = match restored {
                Some(handle) => (handle, None),
                None => {
                    let handle = load(conn, &device, key, &public, owner)?;
                    let fresh = conn.ctx.context_save(ObjectHandle::from(handle)).ok().map(SavedKey);
                    (handle, fresh)
                }
            };
            let signatures = with_transient(conn, loaded, |conn| {
                conn.ctx.tr_set_auth(ObjectHandle::from(loaded), auth.auth()?)?;
                let ticket = null_ticket()?;
                let mut signatures = Vec::with_capacity(digests.len());
                for digest in digests {
                    let digest = Digest::try_from(digest.to_vec())?;
                    let signature = conn
                        .ctx
                        .execute_with_session(Some(AuthSession::Password), |ctx| {
                            ctx.sign(loaded, digest.clone(), tss_scheme, ticket.clone())
                        })
                        .map_err(|e| step_error(&device, "sign with a key", Some("key password"), e))?;
                    signatures.push(signature);
                }
                Ok(signatures)
            })?;
            Ok((signatures, fresh))
        })?;
        let size = match key.kind {
            WrappedKind::EcP256 => 32,
            WrappedKind::EcP384 => 48,
            WrappedKind::Rsa2048 | WrappedKind::Rsa4096 => 0,
        };
        let raw = |signature: Signature| match signature {
            Signature::RsaSsa(s) | Signature::RsaPss(s) => Ok(s.signature().value().to_vec()),
            Signature::EcDsa(s) => {
                let (r, s) = (s.signature_r().value(), s.signature_s().value());
                if r.len() > size || s.len() > size {
                    return Err(bad("an ECDSA component longer than the curve"));
                }
                let mut out = vec![0u8; 2 * size];
                out[size - r.len()..size].copy_from_slice(r);
                out[2 * size - s.len()..].copy_from_slice(s);
                Ok(out)
            }
            _ => Err(bad("the TPM signed with another scheme than asked")),
        };
        Ok((signatures.into_iter().map(raw).collect::<Result<_, _>>()?, fresh))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(kind: WrappedKind, fixed_hash: Option<Hash>) -> WrappedKey {
        WrappedKey { kind, public: vec![], private: vec![], spki_der: vec![], fixed_hash }
    }

    /// What each key may sign, decided before the TPM is asked: any of the three hashes with ECDSA on an EC key
    /// made now, only its fixed hash on one an earlier release made, PKCS#1 v1.5 and PSS on RSA; the digest's
    /// length must be its hash's.
    #[test]
    fn schemes_each_key_may_sign() {
        let (d32, d48, d64) = ([1u8; 32], [1u8; 48], [1u8; 64]);
        let ok: Vec<(WrappedKey, Scheme, &[u8])> = vec![
            (key(WrappedKind::EcP256, None), Scheme::Ecdsa(Hash::Sha256), &d32),
            (key(WrappedKind::EcP256, None), Scheme::Ecdsa(Hash::Sha384), &d48),
            (key(WrappedKind::EcP256, None), Scheme::Ecdsa(Hash::Sha512), &d64),
            (key(WrappedKind::EcP384, None), Scheme::Ecdsa(Hash::Sha256), &d32),
            (key(WrappedKind::EcP256, Some(Hash::Sha256)), Scheme::Ecdsa(Hash::Sha256), &d32),
            (key(WrappedKind::Rsa2048, None), Scheme::RsaPkcs1(Hash::Sha512), &d64),
            (key(WrappedKind::Rsa2048, None), Scheme::RsaPss(Hash::Sha384), &d48),
        ];
        for (k, scheme, digest) in ok {
            check_scheme(&k, scheme, digest).unwrap_or_else(|e| panic!("{:?} {scheme:?}: {e}", k.kind));
        }
        let refused: Vec<(WrappedKey, Scheme, &[u8], &str)> = vec![
            (
                key(WrappedKind::EcP256, Some(Hash::Sha256)),
                Scheme::Ecdsa(Hash::Sha384),
                &d48,
                "signs Sha256 digests only",
            ),
            (
                key(WrappedKind::EcP384, Some(Hash::Sha384)),
                Scheme::Ecdsa(Hash::Sha256),
                &d32,
                "signs Sha384 digests only",
            ),
            (key(WrappedKind::EcP256, None), Scheme::RsaPss(Hash::Sha256), &d32, "cannot sign"),
            (key(WrappedKind::Rsa2048, None), Scheme::Ecdsa(Hash::Sha256), &d32, "cannot sign"),
            (key(WrappedKind::EcP256, None), Scheme::Ecdsa(Hash::Sha384), &d32, "a 32-byte digest for a 48-byte hash"),
        ];
        for (k, scheme, digest, says) in refused {
            let e = check_scheme(&k, scheme, digest).unwrap_err().to_string();
            assert!(e.contains(says), "{:?} {scheme:?}: {says:?} not in {e}", k.kind);
        }
    }
}
