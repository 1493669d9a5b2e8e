//! The agent side of SPIRE's `tpm_devid` node attestation, TPM command by command (SPIRE
//! `pkg/agent/plugin/nodeattestor/tpmdevid/tpmutil/session.go`; reference `tpm-devid.md` §4).
//!
//! [`Tpm::devid_evidence`] loads the DevID under its H-1/H-2 SRK, creates an ephemeral RSA AK (RSASSA-SHA256,
//! restricted) under the H-1 SRK, regenerates the RSA EK from the TCG default template, reads the EK certificate
//! from NV 0x01C00002 and has the AK certify the DevID. [`PendingAttestation::respond`] answers the server's
//! challenge: the DevID signs the nonce (proof of possession) and the AK activates the credential made for it and
//! the EK (proof of residency).
//!
//! Invariants: no TPM object or session outlives a call. Between the two halves the AK exists only as its
//! SRK-wrapped private blob in memory (usable on this TPM alone), so a server that never answers, a dropped
//! stream or a crash leaves nothing in the TPM's three transient slots. Every transient object and session is
//! flushed on every path. Passwords are zeroized and never appear in errors.

use std::convert::TryFrom;

use tss_esapi::abstraction::ek::create_ek_public_from_default_template;
use tss_esapi::abstraction::nv;
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{KeyHandle, NvIndexTpmHandle, ObjectHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{AsymmetricAlgorithm, HashingAlgorithm};
use tss_esapi::interface_types::resource_handles::{Hierarchy, NvAuth};
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Attest, Data, Digest, EncryptedSecret, HashScheme, IdObject, MaxBuffer, Nonce, Private, Public, Signature,
    SignatureScheme, SymmetricDefinition,
};
use tss_esapi::traits::Marshall;
use zeroize::Zeroizing;

use crate::devid::DevIdBlobs;
use crate::error::TpmError;
use crate::esapi::{step_error, Conn, OpError, Tpm};
use crate::key::KeyType;
use crate::objects::{with_srk, with_transient};
use crate::secret::{random_password, Password};
use crate::templates::{ak_template, raw_signature};

mod quote;
use quote::QuoteArgs;

/// NV index of the RSA-2048 EK certificate (TCG EK Credential Profile 2.0, §2.2.1.4; SPIRE reads only this one).
pub const EK_CERT_NV_INDEX: u32 = 0x01C0_0002;

/// The hierarchy passwords SPIRE's agent plugin takes (`owner_hierarchy_password`,
/// `endorsement_hierarchy_password`).
#[derive(Debug, Clone, Default)]
pub struct Hierarchies {
    /// Owner hierarchy: the SRKs are created under it.
    pub owner: Password,
    /// Endorsement hierarchy: the EK is created under it, and PolicySecret authorizes the EK with it.
    pub endorsement: Password,
}

/// What the TPM produced for SPIRE's `AttestationRequest` (everything but the DevID certificate chain).
#[derive(Debug, Clone)]
pub struct Evidence {
    /// `DevIDPub`: the DevID's TPMT_PUBLIC, as in `devid.pub.blob`.
    pub devid_pub: Vec<u8>,
    /// `EKCert`: the EK certificate (DER), trimmed to its first DER element; `None` for a TPM without one in
    /// NV (a virtual TPM), whose EK a server can accept only by its hash.
    pub ek_cert: Option<Vec<u8>>,
    /// `EKPub`: the regenerated EK's TPMT_PUBLIC.
    pub ek_pub: Vec<u8>,
    /// `AKPub`: the ephemeral AK's TPMT_PUBLIC.
    pub ak_pub: Vec<u8>,
    /// `CertifiedDevID`: the TPMS_ATTEST the AK signed.
    pub certified_devid: Vec<u8>,
    /// `CertificationSignature`: the TPMT_SIGNATURE over it.
    pub certification_signature: Vec<u8>,
}

/// What the TPM produced for an enrollment request: the EK, a fresh AK and the DevID, all as TPMT_PUBLIC.
#[derive(Debug, Clone)]
pub struct EnrollEvidence {
    /// The EK's TPMT_PUBLIC (TCG default RSA template).
    pub ek_pub: Vec<u8>,
    /// The EK certificate (DER) from NV 0x01C00002, when the TPM has one (a virtual TPM may not).
    pub ek_cert: Option<Vec<u8>>,
    /// The AK's TPMT_PUBLIC.
    pub ak_pub: Vec<u8>,
    /// The DevID's TPMT_PUBLIC.
    pub devid_pub: Vec<u8>,
}

/// The TPM's answers to the enrollment CA's challenge.
#[derive(Debug)]
pub struct EnrollProof {
    /// TPMS_ATTEST of TPM2_Certify(DevID, AK) with the nonce as qualifying data.
    pub certify_info: Vec<u8>,
    /// The AK's TPMT_SIGNATURE over it.
    pub certify_signature: Vec<u8>,
    /// The DevID's signature over the nonce, as the TPM made it (PKCS#1 v1.5, or `r || s` for ECDSA).
    pub devid_signature: Vec<u8>,
    /// The secret the AK recovered from the credential.
    pub activated_secret: Zeroizing<Vec<u8>>,
}

/// A TPM2_Quote by the exchange's AK and the values of the PCRs it covers.
#[derive(Debug, Clone)]
pub struct Quote {
    /// The TPMS_ATTEST.
    pub quoted: Vec<u8>,
    /// The TPMT_SIGNATURE over it.
    pub signature: Vec<u8>,
    /// The PCR values, in ascending PCR order.
    pub values: Vec<Vec<u8>>,
}

/// The TPM's answers to SPIRE's `ChallengeRequest`.
#[derive(Debug)]
pub struct Response {
    /// The DevID's signature over the nonce as the TPM made it: PKCS#1 v1.5 for RSA, `r || s` (32 bytes each) for
    /// ECDSA. SPIRE's `DevID` field wants ECDSA in DER (`plugin::devid::signature::der`).
    pub devid_signature: Vec<u8>,
    /// `CredActivation`: the secret the TPM recovered from the credential.
    pub activated_secret: Zeroizing<Vec<u8>>,
}

/// The state kept between the payload and the challenge: nothing of it is loaded in the TPM.
pub struct PendingAttestation {
    tpm: Tpm,
    devid: DevIdBlobs,
    devid_auth: Password,
    hierarchies: Hierarchies,
    ak_private: Vec<u8>,
    ak_public: Public,
    ak_auth: Password,
}

impl std::fmt::Debug for PendingAttestation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAttestation").field("tpm", &self.tpm).field("devid", &self.devid.key).finish()
    }
}

/// Loads the DevID from its blobs under the H-1/H-2 SRK; the SRK is flushed before returning.
fn load_devid(conn: &mut Conn, device: &str, devid: &DevIdBlobs, owner: &Password) -> Result<KeyHandle, OpError> {
    let public = devid.tpm_public()?;
    let private = Private::try_from(devid.private.clone()).map_err(|_| {
        OpError::Final(TpmError::BadBlob { what: "devid.priv.blob", reason: "longer than a TPM2B_PRIVATE".into() })
    })?;
    with_srk(conn, device, devid.key.key_type(), owner, |conn, srk| {
        conn.ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| ctx.load(srk, private.clone(), public.clone()))
            .map_err(|e| crate::esapi::load_error(device, "load DevID", None, e))
    })
}

/// Creates the EK from the TCG default RSA-2048 template (attributes 0x000300B2, PolicyA) in the endorsement
/// hierarchy.
fn create_ek(conn: &mut Conn, device: &str, endorsement: &Password) -> Result<KeyHandle, OpError> {
    let template = create_ek_public_from_default_template(AsymmetricAlgorithm::Rsa, None)?;
    conn.ctx.tr_set_auth(ObjectHandle::Endorsement, endorsement.auth()?)?;
    conn.ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.create_primary(Hierarchy::Endorsement, template.clone(), None, None, None, None)
        })
        .map(|r| r.key_handle)
        .map_err(|e| step_error(device, "create EK", Some("endorsement hierarchy password"), e))
}

/// A fresh ephemeral RSA AK (RSASSA-SHA256, restricted) under the H-1 SRK, with a random password: its wrapped
/// private blob, its public area and the password; and, when `load`, its handle (the caller flushes it).
#[allow(clippy::type_complexity)]
fn create_ak(
    conn: &mut Conn,
    dev: &str,
    owner: &Password,
    load: bool,
) -> Result<(Vec<u8>, Public, Password, Option<KeyHandle>), OpError> {
    let ak_auth = random_password(conn)?;
    let (private, public, handle) = with_srk(conn, dev, KeyType::Rsa2048, owner, |conn, srk| {
        let created = conn
            .ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.create(srk, ak_template()?, Some(ak_auth.auth()?), None, None, None)
            })
            .map_err(|e| step_error(dev, "create AK", Some("owner hierarchy password"), e))?;
        let handle = match load {
            true => Some(
                conn.ctx
                    .execute_with_session(Some(AuthSession::Password), |ctx| {
                        ctx.load(srk, created.out_private.clone(), created.out_public.clone())
                    })
                    .map_err(|e| step_error(dev, "load AK", None, e))?,
            ),
            false => None,
        };
        Ok((created.out_private.value().to_vec(), created.out_public, handle))
    })?;
    Ok((private, public, ak_auth, handle))
}

/// Loads the AK from its wrapped blob under a fresh H-1 SRK.
fn load_ak(conn: &mut Conn, device: &str, pending: &PendingAttestation) -> Result<KeyHandle, OpError> {
    let private = Private::try_from(pending.ak_private.clone())?;
    let ak = with_srk(conn, device, KeyType::Rsa2048, &pending.hierarchies.owner, |conn, srk| {
        conn.ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.load(srk, private.clone(), pending.ak_public.clone())
            })
            .map_err(|e| step_error(device, "load AK", None, e))
    })?;
    conn.ctx.tr_set_auth(ObjectHandle::from(ak), pending.ak_auth.auth()?)?;
    Ok(ak)
}

/// TPM2_Certify of the loaded DevID by the loaded AK (RSASSA-SHA256; both authorized by their passwords, already
/// set on their handles), `qualifying` as the qualifying data: the attest structure and its signature.
fn certify_devid(
    conn: &mut Conn,
    device: &str,
    devid: KeyHandle,
    ak: KeyHandle,
    qualifying: Data,
) -> Result<(Attest, Signature), OpError> {
    let scheme = SignatureScheme::RsaSsa { hash_scheme: HashScheme::new(HashingAlgorithm::Sha256) };
    conn.ctx
        .execute_with_sessions((Some(AuthSession::Password), Some(AuthSession::Password), None), |ctx| {
            ctx.certify(ObjectHandle::from(devid), ak, qualifying, scheme)
        })
        .map_err(|e| step_error(device, "certify the DevID with the AK", Some("DevID password"), e))
}

/// Reads the RSA EK certificate from NV 0x01C00002 with the index's own (empty) auth, in chunks of the TPM's
/// NV buffer size, and keeps its first DER element (some TPMs pad the NV area).
fn read_ek_cert(conn: &mut Conn, device: &str) -> Result<Vec<u8>, OpError> {
    let index = NvIndexTpmHandle::new(EK_CERT_NV_INDEX)?;
    let handle =
        conn.ctx.execute_without_session(|ctx| ctx.tr_from_tpm_public(TpmHandle::NvIndex(index))).map_err(|e| {
            match crate::esapi::is_handle_error(&e) {
                true => OpError::Final(TpmError::NoEkCertificate { device: device.to_string() }),
                false => step_error(device, "find the EK certificate", None, e),
            }
        })?;
    // read_full closes the ESYS handle of the index when it is done.
    let read = conn.ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
        nv::read_full(ctx, NvAuth::NvIndex(handle.into()), index)
    });
    let raw = read.map_err(|e| step_error(device, "read the EK certificate", None, e))?;
    first_der_element(&raw).map(<[u8]>::to_vec).ok_or_else(|| {
        OpError::Final(TpmError::BadBlob {
            what: "EK certificate in NV 0x01C00002",
            reason: format!("{} bytes that do not start with a complete DER element", raw.len()),
        })
    })
}

/// The EK certificate, or `None` when the TPM has none in NV (a virtual TPM); any other failure is an error.
fn optional_ek_cert(conn: &mut Conn, device: &str) -> Result<Option<Vec<u8>>, OpError> {
    match read_ek_cert(conn, device) {
        Ok(cert) => Ok(Some(cert)),
        Err(OpError::Final(TpmError::NoEkCertificate { .. })) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The loaded EK's TPMT_PUBLIC, and its certificate when NV holds one.
fn read_ek(conn: &mut Conn, device: &str, ek: KeyHandle) -> Result<(Vec<u8>, Option<Vec<u8>>), OpError> {
    let (public, _, _) = conn.ctx.read_public(ek)?;
    Ok((public.marshall()?, optional_ek_cert(conn, device)?))
}

/// The first complete DER element of `bytes` (tag, definite length, contents).
pub(crate) fn first_der_element(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.len() < 2 || bytes[0] != 0x30 {
        return None;
    }
    let (len, header) = match bytes[1] {
        n if n < 0x80 => (usize::from(n), 2),
        n @ 0x81..=0x84 => {
            let count = usize::from(n & 0x7f);
            let len_bytes = bytes.get(2..2 + count)?;
            (len_bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)), 2 + count)
        }
        _ => return None,
    };
    bytes.get(..header.checked_add(len)?)
}

impl Tpm {
    /// The first half of a `tpm_devid` attestation (SPIRE §4 steps 3-8): returns the evidence for the payload and
    /// the state [`PendingAttestation::respond`] needs. Nothing stays loaded in the TPM.
    pub fn devid_evidence(
        &self,
        devid: &DevIdBlobs,
        devid_auth: &Password,
        hierarchies: &Hierarchies,
    ) -> Result<(Evidence, PendingAttestation), TpmError> {
        let device = self.device().to_string();
        let dev = device.as_str();
        let (evidence, ak) = self.with_context("DevID attestation", |conn| {
            let devid_handle = load_devid(conn, dev, devid, &hierarchies.owner)?;
            with_transient(conn, devid_handle, |conn| {
                conn.ctx.tr_set_auth(ObjectHandle::from(devid_handle), devid_auth.auth()?)?;
                let (ak_private, ak_public, ak_auth, ak) = create_ak(conn, dev, &hierarchies.owner, true)?;
                let ak = ak.ok_or(OpError::Final(TpmError::BadBlob { what: "AK", reason: "not loaded".into() }))?;
                with_transient(conn, ak, |conn| {
                    conn.ctx.tr_set_auth(ObjectHandle::from(ak), ak_auth.auth()?)?;
                    let ek = create_ek(conn, dev, &hierarchies.endorsement)?;
                    with_transient(conn, ek, |conn| {
                        let (ek_pub, ek_cert) = read_ek(conn, dev, ek)?;
                        let (attest, signature) = certify_devid(conn, dev, devid_handle, ak, Data::default())?;
                        let evidence = Evidence {
                            devid_pub: devid.public.clone(),
                            ek_cert,
                            ek_pub,
                            ak_pub: ak_public.marshall()?,
                            certified_devid: attest.marshall()?,
                            certification_signature: signature.marshall()?,
                        };
                        Ok((evidence, (ak_private.clone(), ak_public.clone(), ak_auth.clone())))
                    })
                })
            })
        })?;
        Ok((evidence, self.pending(devid, devid_auth, hierarchies, ak)))
    }
}

impl Tpm {
    /// What an exchange keeps between its halves: the DevID's blobs and passwords and the AK as its wrapped blob.
    fn pending(
        &self,
        devid: &DevIdBlobs,
        devid_auth: &Password,
        hierarchies: &Hierarchies,
        (ak_private, ak_public, ak_auth): (Vec<u8>, Public, Password),
    ) -> PendingAttestation {
        PendingAttestation {
            tpm: self.clone(),
            devid: devid.clone(),
            devid_auth: devid_auth.clone(),
            hierarchies: hierarchies.clone(),
            ak_private,
            ak_public,
            ak_auth,
        }
    }

    /// The EK's TPMT_PUBLIC (TCG default RSA template), for its hash (`devid ek-hash`).
    pub fn ek_public(&self, hierarchies: &Hierarchies) -> Result<Vec<u8>, TpmError> {
        let device = self.device().to_string();
        let dev = device.as_str();
        self.with_context("read the EK", |conn| {
            let ek = create_ek(conn, dev, &hierarchies.endorsement)?;
            with_transient(conn, ek, |conn| {
                let (public, _, _) = conn.ctx.read_public(ek)?;
                Ok(public.marshall()?)
            })
        })
    }

    /// The first half of an enrollment: the EK (and its certificate when NV holds one), a fresh AK and the DevID's
    /// public area (the DevID is loaded once, so that a blob of another TPM is refused now, not after the CA's
    /// challenge). Nothing stays loaded in the TPM.
    pub fn enrollment_evidence(
        &self,
        devid: &DevIdBlobs,
        devid_auth: &Password,
        hierarchies: &Hierarchies,
    ) -> Result<(EnrollEvidence, PendingAttestation), TpmError> {
        let device = self.device().to_string();
        let dev = device.as_str();
        let (evidence, ak) = self.with_context("DevID enrollment", |conn| {
            let devid_handle = load_devid(conn, dev, devid, &hierarchies.owner)?;
            with_transient(conn, devid_handle, |_| Ok(()))?;
            let (ak_private, ak_public, ak_auth, _) = create_ak(conn, dev, &hierarchies.owner, false)?;
            let ek = create_ek(conn, dev, &hierarchies.endorsement)?;
            with_transient(conn, ek, |conn| {
                let (ek_pub, ek_cert) = read_ek(conn, dev, ek)?;
                let evidence =
                    EnrollEvidence { ek_pub, ek_cert, ak_pub: ak_public.marshall()?, devid_pub: devid.public.clone() };
                Ok((evidence, (ak_private.clone(), ak_public.clone(), ak_auth.clone())))
            })
        })?;
        Ok((evidence, self.pending(devid, devid_auth, hierarchies, ak)))
    }
}

impl PendingAttestation {
    /// The second half of an enrollment: the AK certifies the DevID with `nonce` as qualifying data, the DevID
    /// signs `nonce`, and the AK activates the credential with the EK.
    pub fn answer_enrollment(&self, nonce: &[u8], credential: &[u8], secret: &[u8]) -> Result<EnrollProof, TpmError> {
        let device = self.tpm.device().to_string();
        let dev = device.as_str();
        let qualifying = Data::try_from(nonce.to_vec())
            .map_err(|_| TpmError::BadBlob { what: "enrollment nonce", reason: format!("{} bytes", nonce.len()) })?;
        let (certify_info, certify_signature) = self.tpm.with_context("DevID certification", |conn| {
            let devid = load_devid(conn, dev, &self.devid, &self.hierarchies.owner)?;
            with_transient(conn, devid, |conn| {
                conn.ctx.tr_set_auth(ObjectHandle::from(devid), self.devid_auth.auth()?)?;
                let ak = load_ak(conn, dev, self)?;
                with_transient(conn, ak, |conn| {
                    let (attest, signature) = certify_devid(conn, dev, devid, ak, qualifying.clone())?;
                    Ok((attest.marshall()?, signature.marshall()?))
                })
            })
        })?;
        let response = self.respond(nonce, credential, secret)?;
        Ok(EnrollProof {
            certify_info,
            certify_signature,
            devid_signature: response.devid_signature,
            activated_secret: response.activated_secret,
        })
    }

    /// The DevID's key type (it fixes the signature's form).
    pub fn key_type(&self) -> KeyType {
        self.devid.key.key_type()
    }

    /// The second half (SPIRE §4 steps 10-11): the DevID signs `nonce` (hashed by the TPM with SHA-256, the hash
    /// of the DevID's scheme), and the AK activates `credential`/`secret` (TPM2B_ID_OBJECT and
    /// TPM2B_ENCRYPTED_SECRET contents) with the EK authorized by PolicySecret(endorsement).
    pub fn respond(&self, nonce: &[u8], credential: &[u8], secret: &[u8]) -> Result<Response, TpmError> {
        self.respond_and_quote(nonce, credential, secret, None).map(|(response, _)| response)
    }

    /// [`PendingAttestation::respond`], and beyond SPIRE's, when `quote` names a bank (TPM_ALG_ID) and PCRs: a
    /// TPM2_Quote of them by the AK just activated, qualified by the same `nonce`, with their values.
    pub fn respond_and_quote(
        &self,
        nonce: &[u8],
        credential: &[u8],
        secret: &[u8],
        quote: Option<(u16, &[u8])>,
    ) -> Result<(Response, Option<Quote>), TpmError> {
        let quote = quote.map(|(bank, pcrs)| QuoteArgs::new(nonce, bank, pcrs)).transpose()?;
        let device = self.tpm.device().to_string();
        let dev = device.as_str();
        let data = MaxBuffer::try_from(nonce.to_vec())
            .map_err(|_| TpmError::BadBlob { what: "challenge nonce", reason: format!("{} bytes", nonce.len()) })?;
        let credential = IdObject::try_from(credential.to_vec()).map_err(|_| TpmError::BadBlob {
            what: "credential",
            reason: format!("{} bytes is too long for a TPM2B_ID_OBJECT", credential.len()),
        })?;
        let secret = EncryptedSecret::try_from(secret.to_vec()).map_err(|_| TpmError::BadBlob {
            what: "encrypted secret",
            reason: format!("{} bytes is too long for a TPM2B_ENCRYPTED_SECRET", secret.len()),
        })?;
        let signature = self.tpm.with_context("DevID proof of possession", |conn| {
            let devid = load_devid(conn, dev, &self.devid, &self.hierarchies.owner)?;
            with_transient(conn, devid, |conn| {
                conn.ctx.tr_set_auth(ObjectHandle::from(devid), self.devid_auth.auth()?)?;
                let (digest, ticket) = conn
                    .ctx
                    .execute_without_session(|ctx| ctx.hash(data.clone(), HashingAlgorithm::Sha256, Hierarchy::Owner))
                    .map_err(|e| step_error(dev, "hash the nonce", None, e))?;
                conn.ctx
                    .execute_with_session(Some(AuthSession::Password), |ctx| {
                        ctx.sign(devid, digest.clone(), SignatureScheme::Null, ticket.clone())
                    })
                    .map_err(|e| step_error(dev, "sign the nonce with the DevID", Some("DevID password"), e))
            })
        })?;
        let devid_signature = raw_signature(self.key_type(), signature)
            .map_err(|reason| TpmError::BadBlob { what: "DevID signature", reason: reason.into() })?;
        let (activated, quoted) = self.tpm.with_context("DevID credential activation", |conn| {
            let ak = load_ak(conn, dev, self)?;
            with_transient(conn, ak, |conn| {
                let ek = create_ek(conn, dev, &self.hierarchies.endorsement)?;
                let activated =
                    with_transient(conn, ek, |conn| activate(conn, dev, self, ak, ek, &credential, &secret))?;
                let quoted = match &quote {
                    Some(q) => Some(q.run(conn, dev, ak)?),
                    None => None,
                };
                Ok((activated, quoted))
            })
        })?;
        Ok((Response { devid_signature, activated_secret: activated }, quoted))
    }
}

/// PolicySecret(endorsement) on a fresh policy session, then ActivateCredential(AK, EK). The session is flushed
/// whatever happens.
fn activate(
    conn: &mut Conn,
    dev: &str,
    pending: &PendingAttestation,
    ak: KeyHandle,
    ek: KeyHandle,
    credential: &IdObject,
    secret: &EncryptedSecret,
) -> Result<Zeroizing<Vec<u8>>, OpError> {
    let session = conn
        .ctx
        .start_auth_session(None, None, None, SessionType::Policy, SymmetricDefinition::Null, HashingAlgorithm::Sha256)?
        .ok_or(OpError::Final(TpmError::BadBlob { what: "policy session", reason: "TPM returned none".into() }))?;
    let result = (|| {
        let policy = PolicySession::try_from(session)?;
        conn.ctx.tr_set_auth(ObjectHandle::Endorsement, pending.hierarchies.endorsement.auth()?)?;
        conn.ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.policy_secret(
                    policy,
                    tss_esapi::handles::AuthHandle::Endorsement,
                    Nonce::default(),
                    Digest::default(),
                    Nonce::default(),
                    None,
                )
            })
            .map_err(|e| step_error(dev, "PolicySecret(endorsement)", Some("endorsement hierarchy password"), e))?;
        let info = conn
            .ctx
            .execute_with_sessions((Some(AuthSession::Password), Some(session), None), |ctx| {
                ctx.activate_credential(ak, ek, credential.clone(), secret.clone())
            })
            .map_err(|e| match &e {
                tss_esapi::Error::Tss2Error(rc)
                    if matches!(
                        rc.kind(),
                        Some(
                            Tss2ResponseCodeKind::Integrity
                                | Tss2ResponseCodeKind::Value
                                | Tss2ResponseCodeKind::Size
                                | Tss2ResponseCodeKind::Scheme
                        )
                    ) =>
                {
                    OpError::Final(TpmError::CredentialRefused { device: dev.to_string(), cause: e })
                }
                _ => step_error(dev, "activate the credential", None, e),
            })?;
        Ok(Zeroizing::new(info.value().to_vec()))
    })();
    // A successful command with continueSession set leaves the session loaded; a failed one always does.
    let _ = conn.ctx.flush_context(ObjectHandle::from(tss_esapi::handles::SessionHandle::from(session)));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_der_element_trims_padding_and_refuses_truncation() {
        let cert = [0x30, 0x03, 1, 2, 3];
        let padded = [&cert[..], &[0xff; 7]].concat();
        assert_eq!(first_der_element(&padded), Some(&cert[..]));
        let long = [&[0x30, 0x82, 0x01, 0x00][..], &[0u8; 256]].concat();
        assert_eq!(first_der_element(&long).map(<[u8]>::len), Some(260));
        for bad in [&[][..], &[0x30][..], &[0x30, 0x05, 1][..], &[0x02, 0x01, 0][..], &[0x30, 0x80, 0, 0][..]] {
            assert_eq!(first_der_element(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ak_template_is_go_tpm_tools_ak_rsa() {
        // 0001 000b 00050072 0000 0010 0014 000b 0800 00000000 0000 (tpm-devid.md §3).
        let hex = "0001000b00050072000000100014000b0800000000000000";
        let bytes = ak_template().unwrap().marshall().unwrap();
        let got: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, hex);
    }
}
