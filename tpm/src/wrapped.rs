//! Keys that exist outside the TPM only as TPM-wrapped blobs (the KeyManager plugins' keys): created inside the
//! TPM under the ECC storage key (TCG H-2, rebuilt from its template whenever needed), never exportable, loaded to
//! sign and flushed afterwards.
//!
//! EC keys carry their curve's ECDSA scheme (P-256 with SHA-256, P-384 with SHA-384: what Go's X.509, TLS 1.3 and
//! JOSE ask of them). RSA keys carry no scheme, so one key signs PKCS#1 v1.5 and PSS with SHA-256, -384 or -512,
//! as each request says. A PSS signature's salt is what the TPM chooses (the digest's length on swtpm and on most
//! TPMs; some use the largest possible): callers that need a given salt check it.

use std::convert::TryFrom;

use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::handles::{KeyHandle, ObjectHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Digest, EccPoint, EccScheme, HashScheme, Private, Public, PublicBuilder, PublicEccParametersBuilder, PublicKeyRsa,
    PublicRsaParametersBuilder, RsaExponent, RsaScheme, Signature, SignatureScheme,
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
    /// NIST P-256, ECDSA with SHA-256.
    EcP256,
    /// NIST P-384, ECDSA with SHA-384.
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
    /// ECDSA (EC keys; the hash must be the curve's).
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
    let ecc = |curve, hash| {
        builder
            .clone()
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_ecc_parameters(
                PublicEccParametersBuilder::new_unrestricted_signing_key(
                    EccScheme::EcDsa(HashScheme::new(hash)),
                    curve,
                )
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
        WrappedKind::EcP256 => ecc(EccCurve::NistP256, HashingAlgorithm::Sha256),
        WrappedKind::EcP384 => ecc(EccCurve::NistP384, HashingAlgorithm::Sha384),
        WrappedKind::Rsa2048 => rsa(RsaKeyBits::Rsa2048),
        WrappedKind::Rsa4096 => rsa(RsaKeyBits::Rsa4096),
    }
}

/// The scheme a key of `kind` may sign with, checked before the TPM sees the request.
fn check_scheme(kind: WrappedKind, scheme: Scheme, digest: &[u8]) -> Result<SignatureScheme, TpmError> {
    let bad = |reason: String| TpmError::BadBlob { what: "signing request", reason };
    let hash = match scheme {
        Scheme::Ecdsa(h) | Scheme::RsaPkcs1(h) | Scheme::RsaPss(h) => h,
    };
    if digest.len() != hash.size() {
        return Err(bad(format!("a {}-byte digest for a {}-byte hash", digest.len(), hash.size())));
    }
    let hash_scheme = HashScheme::new(hash.tss());
    match (kind, scheme) {
        (WrappedKind::EcP256, Scheme::Ecdsa(Hash::Sha256)) | (WrappedKind::EcP384, Scheme::Ecdsa(Hash::Sha384)) => {
            Ok(SignatureScheme::EcDsa { hash_scheme })
        }
        (WrappedKind::EcP256 | WrappedKind::EcP384, Scheme::Ecdsa(h)) => {
            Err(bad(format!("this {kind} key signs with its curve's hash only, not {h:?}")))
        }
        (WrappedKind::Rsa2048 | WrappedKind::Rsa4096, Scheme::RsaPkcs1(_)) => {
            Ok(SignatureScheme::RsaSsa { hash_scheme })
        }
        (WrappedKind::Rsa2048 | WrappedKind::Rsa4096, Scheme::RsaPss(_)) => Ok(SignatureScheme::RsaPss { hash_scheme }),
        (kind, scheme) => Err(bad(format!("a {kind} key cannot sign {scheme:?}"))),
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
        Ok(WrappedKey { kind, public, private, spki_der })
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
            Some(first) => check_scheme(key.kind, scheme, first)?,
            None => return Ok((Vec::new(), None)),
        };
        for digest in &digests[1..] {
            check_scheme(key.kind, scheme, digest)?;
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
