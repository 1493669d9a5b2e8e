//! DevID keys as SPIRE's `tpm_devid` plugins use them: created under the TCG "H-1" (RSA) or "H-2" (ECC) storage
//! primary key, which is never persisted but re-derived from the owner seed, and kept outside the TPM as
//! blobs in SPIRE's format (`devid.priv.blob` = TPM2B_PRIVATE contents, `devid.pub.blob` = TPMT_PUBLIC, both
//! without the 2-byte size).
//!
//! Invariants: the SRK is exactly H-1/H-2 (noDA set, unique empty; `templates`), or blobs would not load where
//! SPIRE loads them; every transient object is flushed on every path (`objects`).

use std::convert::TryFrom;

use tss_esapi::handles::ObjectHandle;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Digest, Private, Public};
use tss_esapi::traits::{Marshall, UnMarshall};

use crate::error::TpmError;
use crate::esapi::{null_ticket, spki_der, OpError, Tpm};
use crate::key::{KeyType, PublicKey};
use crate::objects::{with_srk, with_transient};
use crate::secret::Password;
use crate::templates::{raw_signature, signature_scheme, signing_template};

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
        let key = crate::esapi::check_devid_key(&parsed)?;
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
                let template = signing_template(key_type, false)?;
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
                let scheme = signature_scheme(key_type);
                let digest = Digest::try_from(digest.to_vec())?;
                let ticket = null_ticket()?;
                Ok(conn.ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
                    ctx.sign(loaded, digest, scheme, ticket)
                })?)
            })
        })?;
        raw_signature(key_type, signature)
            .map_err(|reason| TpmError::BadBlob { what: "DevID signature", reason: reason.into() })
    }
}
