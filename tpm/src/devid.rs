//! DevID keys as SPIRE's `tpm_devid` plugins use them: created under the TCG "H-1" (RSA) or "H-2" (ECC) storage
//! primary key, which is never persisted but re-derived from the owner seed, and kept outside the TPM as
//! blobs in SPIRE's format (`devid.priv.blob` = TPM2B_PRIVATE contents, `devid.pub.blob` = TPMT_PUBLIC, both
//! without the 2-byte size).
//!
//! Invariants: the SRK template is exactly H-1/H-2 (noDA set, unique empty), or blobs would not load where SPIRE
//! loads them; every transient object is flushed on every path; passwords never leave this module except into
//! the TPM.

use std::convert::TryFrom;

use tss_esapi::handles::{KeyHandle, ObjectHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Auth, Digest, HashScheme, Private, Public, Signature, SignatureScheme};
use tss_esapi::traits::{Marshall, UnMarshall};
use zeroize::Zeroizing;

use crate::attest::step_error;
use crate::error::TpmError;
use crate::esapi::{spki_der, Conn, OpError, Tpm};
use crate::key::{KeyType, PublicKey};
use crate::provision::{signing_template, storage_template, with_transient};

/// A password for a hierarchy or a key: zeroized on drop, never printed.
#[derive(Clone, Default)]
pub struct Password(Zeroizing<Vec<u8>>);

impl Password {
    /// Wraps raw password bytes (SPIRE uses the UTF-8 bytes of the configured string).
    pub fn new(bytes: Vec<u8>) -> Password {
        Password(Zeroizing::new(bytes))
    }

    pub(crate) fn auth(&self) -> Result<Auth, tss_esapi::Error> {
        Auth::try_from(self.0.to_vec())
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "Password(empty)" } else { "Password(<redacted>)" })
    }
}

/// A DevID key in SPIRE's blob format, with its public key.
#[derive(Debug, Clone)]
pub struct DevIdBlobs {
    /// TPM2B_PRIVATE contents (`devid.priv.blob`).
    pub private: Vec<u8>,
    /// TPMT_PUBLIC (`devid.pub.blob`).
    pub public: Vec<u8>,
    /// The key.
    pub key: PublicKey,
}

impl DevIdBlobs {
    /// Reads a DevID from SPIRE's blob files (`devid_priv_path`, `devid_pub_path`): the public area must be a
    /// signing key (RSA-2048 RSASSA-SHA256 or P-256 ECDSA-SHA256, the schemes SPIRE's server verifies), the
    /// private blob a TPM2B_PRIVATE's contents. Blobs written by `tpm2_create -u/-r` (with the 2-byte TPM2B size)
    /// are refused with a hint, not guessed at.
    pub fn parse(private: Vec<u8>, public: Vec<u8>) -> Result<DevIdBlobs, TpmError> {
        let bad = |what: &'static str, reason: String| TpmError::BadBlob { what, reason };
        let parsed = Public::unmarshall(&public).map_err(|_| {
            bad("devid.pub.blob", "not a TPMT_PUBLIC (a tpm2_create -u file has a 2-byte size first: strip it)".into())
        })?;
        if parsed.marshall().ok().as_deref() != Some(&public[..]) {
            return Err(bad("devid.pub.blob", "trailing bytes after the TPMT_PUBLIC".into()));
        }
        let key = crate::esapi::check_devid_key(&parsed).map_err(|reason| bad("devid.pub.blob", reason))?;
        Private::try_from(private.clone())
            .map_err(|_| bad("devid.priv.blob", format!("{} bytes is too long for a TPM2B_PRIVATE", private.len())))?;
        if private.len() < 2 {
            return Err(bad("devid.priv.blob", "empty".into()));
        }
        Ok(DevIdBlobs { private, public, key })
    }

    pub(crate) fn tpm_public(&self) -> Result<Public, OpError> {
        Public::unmarshall(&self.public).map_err(|_| {
            OpError::Final(TpmError::BadBlob { what: "devid.pub.blob", reason: "not a TPMT_PUBLIC".into() })
        })
    }
}

/// The TCG EK Credential Profile "H-1" (RSA) or "H-2" (ECC) storage primary template, as SPIRE's agent uses it.
pub fn srk_template(key_type: KeyType) -> Result<Public, tss_esapi::Error> {
    storage_template(key_type, true)
}

/// Creates the H-1/H-2 SRK (owner hierarchy, `owner` password) and runs `f` with it, flushing it afterwards.
pub(crate) fn with_srk<R>(
    conn: &mut Conn,
    device: &str,
    key_type: KeyType,
    owner: &Password,
    f: impl FnOnce(&mut Conn, KeyHandle) -> Result<R, OpError>,
) -> Result<R, OpError> {
    conn.ctx.tr_set_auth(ObjectHandle::Owner, owner.auth()?)?;
    let template = srk_template(key_type)?;
    let srk = conn
        .ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.create_primary(Hierarchy::Owner, template, None, None, None, None)
        })
        .map_err(|e| step_error(device, "create the storage key (SRK)", Some("owner hierarchy password"), e))?;
    with_transient(conn, srk.key_handle, |conn| f(conn, srk.key_handle))
}

fn key_type_of(public: &Public) -> Option<KeyType> {
    match public {
        Public::Rsa { .. } => Some(KeyType::Rsa2048),
        Public::Ecc { .. } => Some(KeyType::EccP256),
        _ => None,
    }
}

impl Tpm {
    /// Creates a DevID signing key of `key_type` under the H-1/H-2 SRK, protected by `devid` password.
    pub fn create_devid(&self, key_type: KeyType, owner: &Password, devid: &Password) -> Result<DevIdBlobs, TpmError> {
        let device = self.device().to_string();
        self.with_context("create DevID", |conn| {
            with_srk(conn, &device, key_type, owner, |conn, srk| {
                let template = signing_template(key_type)?;
                let created = conn.ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
                    ctx.create(srk, template, Some(devid.auth()?), None, None, None)
                })?;
                let der = spki_der(&created.out_public).map_err(|_| {
                    OpError::Final(TpmError::BadBlob { what: "DevID public key", reason: "not exportable".into() })
                })?;
                Ok(DevIdBlobs {
                    private: created.out_private.value().to_vec(),
                    public: created.out_public.marshall()?,
                    key: PublicKey::new(key_type, der),
                })
            })
        })
    }

    /// Loads the DevID from its blobs under the SRK and signs a SHA-256 digest with it (the key's own scheme).
    /// Returns the raw RSA signature, or `r || s` (32 bytes each) for ECDSA.
    pub fn sign_with_devid(
        &self,
        blobs: &DevIdBlobs,
        owner: &Password,
        devid: &Password,
        digest: &[u8; 32],
    ) -> Result<Vec<u8>, TpmError> {
        let public = Public::unmarshall(&blobs.public)
            .map_err(|_| TpmError::BadBlob { what: "devid.pub.blob", reason: "not a TPMT_PUBLIC".into() })?;
        let key_type = key_type_of(&public)
            .ok_or(TpmError::BadBlob { what: "devid.pub.blob", reason: "neither RSA nor ECC".into() })?;
        let device = self.device().to_string();
        let signature = self.with_context("sign with DevID", |conn| {
            let private = Private::try_from(blobs.private.clone())?;
            let loaded = with_srk(conn, &device, key_type, owner, |conn, srk| {
                Ok(conn
                    .ctx
                    .execute_with_session(Some(AuthSession::Password), |ctx| ctx.load(srk, private, public.clone()))?)
            })?;
            with_transient(conn, loaded, |conn| {
                conn.ctx.tr_set_auth(ObjectHandle::from(loaded), devid.auth()?)?;
                let scheme = match key_type {
                    KeyType::Rsa2048 => {
                        SignatureScheme::RsaSsa { hash_scheme: HashScheme::new(HashingAlgorithm::Sha256) }
                    }
                    KeyType::EccP256 => {
                        SignatureScheme::EcDsa { hash_scheme: HashScheme::new(HashingAlgorithm::Sha256) }
                    }
                };
                let digest = Digest::try_from(digest.to_vec())?;
                let ticket = crate::esapi::null_ticket()?;
                Ok(conn.ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
                    ctx.sign(loaded, digest, scheme, ticket)
                })?)
            })
        })?;
        match signature {
            Signature::RsaSsa(s) => Ok(s.signature().value().to_vec()),
            Signature::EcDsa(s) => {
                let (r, sv) = (s.signature_r().value(), s.signature_s().value());
                let mut out = vec![0u8; 64];
                if r.len() > 32 || sv.len() > 32 {
                    return Err(TpmError::BadBlob {
                        what: "DevID signature",
                        reason: "ECDSA component longer than 32 bytes".into(),
                    });
                }
                out[32 - r.len()..32].copy_from_slice(r);
                out[64 - sv.len()..].copy_from_slice(sv);
                Ok(out)
            }
            _ => Err(TpmError::BadBlob { what: "DevID signature", reason: "unexpected signature scheme".into() }),
        }
    }
}
