//! Provisioning a signing key at a persistent handle, idempotently.
//!
//! On a blank TPM: the storage primary key (SRK) is created at 0x81000001 with the template tpm2-tools'
//! `tpm2_createprimary -C o -g sha256 -G rsa2048:aes128cfb` uses, a signing key is created under it, loaded and
//! persisted at the handle, with the password given (empty: none) and noDA. Invariants: an existing signing key
//! of the requested type is kept, and must take the password given; nothing at a handle is ever overwritten;
//! every transient object is flushed on every path (swtpm has no resource manager and only three object slots).

use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::resource_handles::{Hierarchy, Provision};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::Public;

use crate::device::TpmDevice;
use crate::error::TpmError;
use crate::esapi::{check_signing_key, resolve, Conn, OpError, Tpm};
use crate::handle::PersistentHandle;
use crate::key::{KeyType, PublicKey};
use crate::objects::with_transient;
use crate::secret::Password;
use crate::templates::{signing_template, storage_template};
use crate::KeySigner;

/// What provisioning did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new key was created and persisted.
    Created,
    /// A suitable key was already there and was kept.
    Existing,
}

/// The result of [`provision`].
#[derive(Debug, Clone)]
pub struct Provisioned {
    /// Created or kept.
    pub outcome: Outcome,
    /// The key's public half.
    pub public: PublicKey,
}

fn persistent(handle: PersistentHandle) -> Result<Persistent, tss_esapi::Error> {
    Ok(Persistent::Persistent(PersistentTpmHandle::new(handle.value())?))
}

/// Looks at `handle`: `None` when empty.
fn probe(
    conn: &mut Conn,
    handle: PersistentHandle,
    device: &TpmDevice,
) -> Result<Option<(KeyHandle, Public)>, OpError> {
    match resolve(conn, handle, device) {
        Ok(found) => Ok(Some(found)),
        Err(OpError::Final(TpmError::HandleNotFound { .. })) => Ok(None),
        Err(e) => Err(e),
    }
}

fn ensure_srk(conn: &mut Conn, device: &TpmDevice) -> Result<KeyHandle, OpError> {
    let srk = PersistentHandle::SRK;
    if let Some((key, public)) = probe(conn, srk, device)? {
        let a = public.object_attributes();
        if !(a.restricted() && a.decrypt() && !a.sign_encrypt()) {
            return Err(OpError::Final(TpmError::WrongKey {
                handle: srk,
                found: "not a storage key (restricted decrypt); refusing to create the signing key under it".into(),
            }));
        }
        return Ok(key);
    }
    tracing::info!(tpm = %device, handle = %srk, "creating the storage primary key");
    let template = storage_template(KeyType::Rsa2048, false)?;
    let primary = conn.ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
        ctx.create_primary(Hierarchy::Owner, template, None, None, None, None)
    })?;
    with_transient(conn, primary.key_handle, |conn| {
        conn.ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.evict_control(Provision::Owner, ObjectHandle::from(primary.key_handle), persistent(srk)?)
        })?;
        Ok(())
    })?;
    // The persistent copy is resolved fresh.
    probe(conn, srk, device)?
        .map(|(k, _)| k)
        .ok_or(OpError::Final(TpmError::HandleNotFound { handle: srk, device: device.to_string() }))
}

/// Creates (or finds) a `key_type` signing key at `handle` on the TPM at `device`, whose password is `auth`
/// (empty: none). An existing key must sign with `auth`: it is tried once.
pub fn provision(
    device: &TpmDevice,
    handle: PersistentHandle,
    key_type: KeyType,
    auth: &Password,
) -> Result<Provisioned, TpmError> {
    if handle == PersistentHandle::SRK {
        return Err(TpmError::WrongKey { handle, found: "reserved for the storage primary key".into() });
    }
    let tpm = Tpm::open(device)?;
    let dev = device.clone();
    let provisioned = tpm.with_context("provision", |conn| {
        if let Some((_, public)) = probe(conn, handle, &dev)? {
            let existing = check_signing_key(handle, &public).map_err(|e| match e {
                TpmError::WrongKey { found, .. } => OpError::Final(TpmError::WrongKey {
                    handle,
                    found: format!("{found}; it is left untouched (choose another --handle)"),
                }),
                other => OpError::Final(other),
            })?;
            if existing.key_type() != key_type {
                return Err(OpError::Final(TpmError::WrongKey {
                    handle,
                    found: format!("holds a {} signing key, not {key_type}; it is left untouched", existing.key_type()),
                }));
            }
            return Ok(Provisioned { outcome: Outcome::Existing, public: existing });
        }
        let srk = ensure_srk(conn, &dev)?;
        tracing::info!(tpm = %dev, %handle, %key_type, "creating the signing key");
        let template = signing_template(key_type, true)?;
        let created = conn.ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.create(srk, template, Some(auth.auth()?), None, None, None)
        })?;
        let loaded = conn.ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.load(srk, created.out_private.clone(), created.out_public.clone())
        })?;
        with_transient(conn, loaded, |conn| {
            conn.ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.evict_control(Provision::Owner, ObjectHandle::from(loaded), persistent(handle)?)
            })?;
            Ok(())
        })?;
        let (_, public) = probe(conn, handle, &dev)?
            .ok_or(OpError::Final(TpmError::HandleNotFound { handle, device: dev.to_string() }))?;
        let public = check_signing_key(handle, &public).map_err(OpError::Final)?;
        Ok(Provisioned { outcome: Outcome::Created, public })
    })?;
    if provisioned.outcome == Outcome::Existing {
        // The key the daemon will sign with must take the password it will be given.
        tpm.signing_key(handle)?.with_auth(auth.clone()).sign_digest(&[0u8; 32])?;
    }
    Ok(provisioned)
}
