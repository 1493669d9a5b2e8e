//! The TPM owner: one tss-esapi context behind a mutex, used by every operation of the crate. The same code
//! serves swtpm and `/dev/tpmrm0`; only the TCTI differs.
//!
//! Invariants: TPM commands are strictly serialized; after any reconnect a key's public area is re-read and must
//! be the key callers were given.
//!
//! The one retry policy of the crate lives here, in [`Tpm::with_context`]. libtss2's ESAPI resubmits a command
//! that answers `TPM_RC_RETRY`/`YIELDED`/`TESTING` by itself, a few times, without delay; when the TPM still asks
//! to retry, the operation is run again from its start after a backoff (10 ms doubling up to 320 ms, `RETRIES`
//! times), and
//! a connection-level failure drops the context and runs it once more on a new one. Nothing else in the crate
//! retries, so an operation's worst case is bounded: `RETRIES + 2` runs.

use std::collections::HashMap;
use std::convert::TryFrom;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tss_esapi::constants::response_code::{Tss2ResponseCode, Tss2ResponseCodeKind};
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::handles::{KeyHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Digest, EccScheme, HashScheme, HashcheckTicket, Public, RsaScheme};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;
use tss_esapi::Context;

use crate::device::TpmDevice;
use crate::error::TpmError;
use crate::handle::PersistentHandle;
use crate::key::{KeyType, PublicKey};
use crate::secret::Password;
use crate::templates::{raw_signature, signature_scheme};
use crate::KeySigner;

/// How often an operation is run again while the TPM keeps asking to retry.
pub(crate) const RETRIES: u32 = 8;

/// One live connection and the ESYS handles resolved on it (valid only for this connection).
pub(crate) struct Conn {
    pub(crate) ctx: Context,
    keys: HashMap<u32, KeyHandle>,
}

/// Why an operation inside [`Tpm::with_context`] failed.
pub(crate) enum OpError {
    /// A TSS/TPM error: classified by the owner (retry, reconnect, or give up).
    Tss(tss_esapi::Error),
    /// A decided, final error.
    Final(TpmError),
}

impl From<tss_esapi::Error> for OpError {
    fn from(e: tss_esapi::Error) -> Self {
        OpError::Tss(e)
    }
}

#[derive(Debug)]
enum Class {
    Retry,
    Tpm,
    Connection,
}

fn classify(e: &tss_esapi::Error) -> Class {
    match e {
        tss_esapi::Error::WrapperError(_) => Class::Tpm,
        tss_esapi::Error::Tss2Error(rc) => match (rc, rc.kind()) {
            (_, Some(Tss2ResponseCodeKind::Retry | Tss2ResponseCodeKind::Yielded | Tss2ResponseCodeKind::Testing)) => {
                Class::Retry
            }
            // Format-one codes name a handle, session or parameter: the TPM itself answered.
            (Tss2ResponseCode::FormatOne(_), _) => Class::Tpm,
            // Format-zero codes include TCTI and ESAPI layer failures (connection refused, I/O error), which
            // tss-esapi 7.7 does not let us tell apart from TPM codes: reconnecting once decides.
            _ => Class::Connection,
        },
    }
}

/// Maps a failed command of one step of a multi-command operation: retry and connection-level errors go back to the owner loop
/// (which retries or reconnects); a refused password names which one; any other TPM answer names the step.
pub(crate) fn step_error(
    device: &str,
    step: &'static str,
    secret: Option<&'static str>,
    e: tss_esapi::Error,
) -> OpError {
    use tss_esapi::constants::response_code::Tss2ResponseCode;
    let (kind, format_one) = match &e {
        tss_esapi::Error::Tss2Error(rc) => (rc.kind(), matches!(rc, Tss2ResponseCode::FormatOne(_))),
        tss_esapi::Error::WrapperError(_) => (None, true),
    };
    match (kind, secret) {
        (Some(Tss2ResponseCodeKind::AuthFail | Tss2ResponseCodeKind::BadAuth), Some(what)) => {
            OpError::Final(TpmError::AuthFailed { device: device.to_string(), step, what })
        }
        (Some(Tss2ResponseCodeKind::Retry | Tss2ResponseCodeKind::Yielded | Tss2ResponseCodeKind::Testing), _) => {
            OpError::Tss(e)
        }
        (Some(Tss2ResponseCodeKind::Lockout), _) => {
            OpError::Final(TpmError::Command { device: device.to_string(), op: step, cause: e })
        }
        _ if format_one => OpError::Final(TpmError::Command { device: device.to_string(), op: step, cause: e }),
        _ => OpError::Tss(e),
    }
}

/// A TPM2_Load's failure: a blob whose integrity or size the TPM refuses was made under another storage key
/// (another TPM, or this one before it was cleared), otherwise what [`step_error`] makes of it.
pub(crate) fn load_error(
    device: &str,
    step: &'static str,
    secret: Option<&'static str>,
    e: tss_esapi::Error,
) -> OpError {
    match &e {
        tss_esapi::Error::Tss2Error(rc)
            if matches!(
                rc.kind(),
                Some(Tss2ResponseCodeKind::Integrity | Tss2ResponseCodeKind::Size | Tss2ResponseCodeKind::Value)
            ) =>
        {
            OpError::Final(TpmError::ForeignBlob { device: device.to_string() })
        }
        _ => step_error(device, step, secret, e),
    }
}

/// What the owner does after a failed run of an operation.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// The TPM asked to retry: run the operation again after this delay.
    RetryAfter(Duration),
    /// The connection failed: drop it and run the operation again on a new one.
    Reconnect,
    /// Return the error.
    GiveUp,
}

/// The crate's one retry policy, for one operation.
#[derive(Debug, Default)]
struct Attempts {
    /// Runs repeated because the TPM asked to retry.
    retries: u32,
    /// The connection was made during this operation: a connection failure on it is final.
    fresh_connection: bool,
}

impl Attempts {
    fn after(&mut self, class: &Class) -> Next {
        match class {
            Class::Retry if self.retries < RETRIES => {
                self.retries += 1;
                Next::RetryAfter(Duration::from_millis(5 << self.retries.min(6)))
            }
            Class::Connection if !self.fresh_connection => Next::Reconnect,
            _ => Next::GiveUp,
        }
    }
}

pub(crate) fn is_handle_error(e: &tss_esapi::Error) -> bool {
    matches!(e, tss_esapi::Error::Tss2Error(rc) if rc.kind() == Some(Tss2ResponseCodeKind::Handle))
}

struct Shared {
    device: TpmDevice,
    conn: Mutex<Option<Conn>>,
}

/// The owner of one TPM. Cheap to clone; every clone shares the one serialized connection.
#[derive(Clone)]
pub struct Tpm(Arc<Shared>);

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tpm").field("device", &self.0.device).finish()
    }
}

impl Tpm {
    /// Connects to the TPM at `device`.
    pub fn open(device: &TpmDevice) -> Result<Tpm, TpmError> {
        let tpm = Tpm(Arc::new(Shared { device: device.clone(), conn: Mutex::new(None) }));
        tpm.with_context("connect", |_| Ok(()))?;
        Ok(tpm)
    }

    /// The device this owner talks to.
    pub fn device(&self) -> &TpmDevice {
        &self.0.device
    }

    fn connect(&self) -> Result<Conn, TpmError> {
        if let TpmDevice::Device(path) = &self.0.device {
            // libtss2's device TCTI reports a device it cannot open as a bare I/O error (its own log says why, and
            // that log is off): open it once ourselves to tell "busy" and "permission denied" apart.
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|source| TpmError::DeviceOpen { device: self.0.device.to_string(), cause: source })?;
        }
        let tcti = self.0.device.tcti()?;
        let ctx = Context::new(tcti).map_err(|source| TpmError::Unavailable {
            device: self.0.device.to_string(),
            op: "connect",
            cause: source,
        })?;
        Ok(Conn { ctx, keys: HashMap::new() })
    }

    /// Runs `f` on the connection: serialized, retried on TPM_RC_RETRY, reconnected once on a connection-level
    /// failure. `f` may run more than once, so it must be safe to repeat.
    pub(crate) fn with_context<R>(
        &self,
        op: &'static str,
        mut f: impl FnMut(&mut Conn) -> Result<R, OpError>,
    ) -> Result<R, TpmError> {
        let device = self.0.device.to_string();
        let mut guard = self.0.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let mut attempts = Attempts::default();
        loop {
            let conn = match guard.as_mut() {
                Some(c) => c,
                None => {
                    *guard = Some(self.connect()?);
                    attempts.fresh_connection = true;
                    match guard.as_mut() {
                        Some(c) => c,
                        None => continue,
                    }
                }
            };
            let err = match f(conn) {
                Ok(r) => return Ok(r),
                Err(OpError::Final(e)) => return Err(e),
                Err(OpError::Tss(e)) => e,
            };
            let class = classify(&err);
            match attempts.after(&class) {
                Next::RetryAfter(delay) => std::thread::sleep(delay),
                Next::Reconnect => {
                    tracing::warn!(tpm = %device, op, error = %err, "TPM command failed; reconnecting once");
                    *guard = None;
                }
                Next::GiveUp => {
                    return Err(match class {
                        Class::Retry => TpmError::Busy { device, op, attempts: attempts.retries + 1 },
                        Class::Tpm => TpmError::Command { device, op, cause: err },
                        Class::Connection => TpmError::Unavailable { device, op, cause: err },
                    })
                }
            }
        }
    }

    /// Opens the signing key at `handle`: checks it is a key we can sign with and reads its public key.
    pub fn signing_key(&self, handle: PersistentHandle) -> Result<TpmKey, TpmError> {
        let public = self.with_context("read signing key", |conn| {
            let (_, public) = resolve(conn, handle, &self.0.device)?;
            check_signing_key(handle, &public).map_err(OpError::Final)
        })?;
        Ok(TpmKey {
            tpm: self.clone(),
            handle,
            public,
            recheck: DEFAULT_RECHECK,
            checked: Arc::new(Mutex::new(Some(Instant::now()))),
            auth: Password::default(),
        })
    }
}

/// Resolves `handle` on this connection (cached), returning the ESYS key handle and the public area.
pub(crate) fn resolve(
    conn: &mut Conn,
    handle: PersistentHandle,
    device: &TpmDevice,
) -> Result<(KeyHandle, Public), OpError> {
    let tpm_handle = PersistentTpmHandle::new(handle.value()).map_err(OpError::Tss)?;
    let key = match conn.keys.get(&handle.value()) {
        Some(k) => *k,
        None => {
            let obj = conn.ctx.tr_from_tpm_public(TpmHandle::Persistent(tpm_handle)).map_err(|e| {
                if is_handle_error(&e) {
                    OpError::Final(TpmError::HandleNotFound { handle, device: device.to_string() })
                } else {
                    OpError::Tss(e)
                }
            })?;
            let key = KeyHandle::from(obj);
            conn.keys.insert(handle.value(), key);
            key
        }
    };
    let (public, _, _) = conn.ctx.read_public(key)?;
    Ok((key, public))
}

/// Why a TPM public area has no SubjectPublicKeyInfo.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExportError {
    /// Not a key type SubjectPublicKeyInfo can carry.
    #[error(transparent)]
    Convert(tss_esapi::Error),
    /// The DER encoder failed.
    #[error(transparent)]
    Encode(picky_asn1_der::Asn1DerError),
}

/// SubjectPublicKeyInfo DER of a TPM public area.
pub(crate) fn spki_der(public: &Public) -> Result<Vec<u8>, ExportError> {
    let spki = picky_asn1_x509::SubjectPublicKeyInfo::try_from(public.clone()).map_err(ExportError::Convert)?;
    picky_asn1_der::to_vec(&spki).map_err(ExportError::Encode)
}

/// Checks that `public` is a signing key this project signs with, and exports it.
pub(crate) fn check_signing_key(handle: PersistentHandle, public: &Public) -> Result<PublicKey, TpmError> {
    let wrong = |found: String| TpmError::WrongKey { handle, found };
    let sha256 = HashScheme::new(HashingAlgorithm::Sha256);
    let attrs = public.object_attributes();
    if !attrs.sign_encrypt() || attrs.decrypt() || attrs.restricted() {
        return Err(wrong(format!(
            "not an unrestricted signing key (sign={}, decrypt={}, restricted={})",
            attrs.sign_encrypt(),
            attrs.decrypt(),
            attrs.restricted()
        )));
    }
    let key_type = match public {
        Public::Rsa { parameters, .. } => {
            if parameters.key_bits() != RsaKeyBits::Rsa2048 {
                return Err(wrong(format!("RSA key of {:?}; only RSA-2048 is supported", parameters.key_bits())));
            }
            let e = parameters.exponent().value();
            if e != 0 && e != 65537 {
                return Err(wrong(format!("RSA exponent {e}; only 65537 is supported")));
            }
            match parameters.rsa_scheme() {
                RsaScheme::RsaSsa(h) if h == sha256 => {}
                RsaScheme::Null => {}
                other => return Err(wrong(format!("RSA scheme {other:?}; only RSASSA-SHA256 (or null) signs RS256"))),
            }
            KeyType::Rsa2048
        }
        Public::Ecc { parameters, .. } => {
            if parameters.ecc_curve() != EccCurve::NistP256 {
                return Err(wrong(format!("ECC curve {:?}; only NIST P-256 is supported", parameters.ecc_curve())));
            }
            match parameters.ecc_scheme() {
                EccScheme::EcDsa(h) if h == sha256 => {}
                EccScheme::Null => {}
                other => return Err(wrong(format!("ECC scheme {other:?}; only ECDSA-SHA256 (or null) signs ES256"))),
            }
            KeyType::EccP256
        }
        _ => return Err(wrong("neither an RSA nor an ECC key".into())),
    };
    let der = spki_der(public).map_err(|e| wrong(format!("public key not exportable: {e}")))?;
    Ok(PublicKey::new(key_type, der))
}

/// Checks that `public` is a DevID SPIRE can use (a signing key, RSA-2048 RSASSA-SHA256 or P-256
/// ECDSA-SHA256: SPIRE's server verifies the proof of possession with SHA256WithRSA or ECDSAWithSHA256 only) and
/// exports it.
pub(crate) fn check_devid_key(public: &Public) -> Result<PublicKey, TpmError> {
    let bad = |reason: String| TpmError::BadBlob { what: "devid.pub.blob", reason };
    let sha256 = HashScheme::new(HashingAlgorithm::Sha256);
    if !public.object_attributes().sign_encrypt() {
        return Err(bad("not a signing key (sign attribute clear)".into()));
    }
    let key_type = match public {
        Public::Rsa { parameters, .. } => match (parameters.key_bits(), parameters.rsa_scheme()) {
            (RsaKeyBits::Rsa2048, RsaScheme::RsaSsa(h)) if h == sha256 => KeyType::Rsa2048,
            (bits, scheme) => {
                return Err(bad(format!("RSA {bits:?} {scheme:?}; a DevID must be RSA-2048 RSASSA-SHA256")))
            }
        },
        Public::Ecc { parameters, .. } => match (parameters.ecc_curve(), parameters.ecc_scheme()) {
            (EccCurve::NistP256, EccScheme::EcDsa(h)) if h == sha256 => KeyType::EccP256,
            (curve, scheme) => {
                return Err(bad(format!("ECC {curve:?} {scheme:?}; a DevID must be P-256 ECDSA-SHA256")))
            }
        },
        _ => return Err(bad("neither an RSA nor an ECC key".into())),
    };
    let der = spki_der(public).map_err(|e| bad(format!("public key not exportable: {e}")))?;
    Ok(PublicKey::new(key_type, der))
}

pub(crate) fn null_ticket() -> Result<HashcheckTicket, tss_esapi::Error> {
    // An unrestricted signing key accepts the NULL hashcheck ticket (TPM 2.0 Part 3, 20.2 TPM2_Sign).
    HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
        tag: TPM2_ST_HASHCHECK,
        hierarchy: TPM2_RH_NULL,
        digest: Default::default(),
    })
}

/// How often a key's public area is re-read to make sure the handle still holds the same key. The swtpm TCTI
/// opens a connection per command, so a TPM replaced behind the same address is not seen as a reconnect; an
/// operator can also evict and re-create a key at the handle while we run.
pub const DEFAULT_RECHECK: Duration = Duration::from_secs(5);

/// A signing key at a persistent handle, opened through its [`Tpm`] owner.
#[derive(Clone)]
pub struct TpmKey {
    tpm: Tpm,
    handle: PersistentHandle,
    public: PublicKey,
    recheck: Duration,
    checked: Arc<Mutex<Option<Instant>>>,
    /// The key's password (empty: none).
    auth: Password,
}

impl std::fmt::Debug for TpmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmKey")
            .field("device", &self.tpm.0.device)
            .field("handle", &self.handle)
            .field("key_type", &self.public.key_type())
            .finish()
    }
}

impl TpmKey {
    /// The key's handle.
    pub fn handle(&self) -> PersistentHandle {
        self.handle
    }

    /// Signs with `auth`, the key's password (`provision` sets it; empty: none).
    pub fn with_auth(mut self, auth: Password) -> TpmKey {
        self.auth = auth;
        self
    }

    /// Sets how often the key's identity is re-checked before signing (`Duration::ZERO`: before every sign).
    pub fn with_recheck_interval(mut self, every: Duration) -> TpmKey {
        self.recheck = every;
        self
    }

    fn due_for_check(&self) -> bool {
        // Poisoned or not: the value is an Option<Instant> written in one statement (common::sync's policy).
        match *self.checked.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(at) => at.elapsed() >= self.recheck,
            None => true,
        }
    }

    fn mark_checked(&self) {
        *self.checked.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }
}

impl KeySigner for TpmKey {
    fn key_type(&self) -> KeyType {
        self.public.key_type()
    }

    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, TpmError> {
        let handle = self.handle;
        let scheme = signature_scheme(self.public.key_type());
        let device = self.tpm.0.device.to_string();
        let signature = self.tpm.with_context("sign", |conn| {
            let key = match conn.keys.get(&handle.value()) {
                Some(k) if !self.due_for_check() => *k,
                _ => {
                    // First use on this connection, or time to re-check: make sure it is still our key.
                    conn.keys.remove(&handle.value());
                    let (key, public) = resolve(conn, handle, &self.tpm.0.device)?;
                    let now = check_signing_key(handle, &public)
                        .map_err(|_| OpError::Final(TpmError::KeyChanged { handle }))?;
                    if now != self.public {
                        conn.keys.remove(&handle.value());
                        return Err(OpError::Final(TpmError::KeyChanged { handle }));
                    }
                    self.mark_checked();
                    key
                }
            };
            let digest = Digest::try_from(digest.to_vec())?;
            let ticket = null_ticket()?;
            conn.ctx.tr_set_auth(tss_esapi::handles::ObjectHandle::from(key), self.auth.auth()?)?;
            conn.ctx
                .execute_with_session(Some(AuthSession::Password), |ctx| ctx.sign(key, digest, scheme, ticket))
                .map_err(|e| step_error(&device, "sign", Some("signing key's password"), e))
        })?;
        raw_signature(self.public.key_type(), signature).map_err(|reason| TpmError::BadSignature { handle, reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs of one operation whose every run fails with `class`, under the policy (connection made before it).
    fn runs_until_given_up(class: Class, mut connection_after_reconnect: Option<Class>) -> u32 {
        let mut attempts = Attempts::default();
        let mut runs = 0;
        let mut current = class;
        loop {
            runs += 1;
            match attempts.after(&current) {
                Next::RetryAfter(delay) => assert!(delay <= Duration::from_millis(320), "{delay:?}"),
                Next::Reconnect => {
                    attempts.fresh_connection = true;
                    if let Some(next) = connection_after_reconnect.take() {
                        current = next;
                    }
                }
                Next::GiveUp => return runs,
            }
            assert!(runs < 100, "the policy never gives up");
        }
    }

    #[test]
    fn one_policy_bounds_every_operation() {
        // A TPM that keeps asking to retry: the operation runs RETRIES + 1 times, then Busy.
        assert_eq!(runs_until_given_up(Class::Retry, None), RETRIES + 1);
        // A connection that stays broken: one reconnect, then Unavailable.
        assert_eq!(runs_until_given_up(Class::Connection, None), 2);
        // The TPM answered: never repeated.
        assert_eq!(runs_until_given_up(Class::Tpm, None), 1);
        // Broken connection, then a TPM that keeps asking to retry on the new one: still bounded.
        assert_eq!(runs_until_given_up(Class::Connection, Some(Class::Retry)), RETRIES + 2);
        // A second connection failure after the reconnect is final.
        let mut a = Attempts { retries: 0, fresh_connection: true };
        assert_eq!(a.after(&Class::Connection), Next::GiveUp);
    }

    #[test]
    fn backoff_doubles_from_10_ms_and_stops_at_320_ms() {
        let mut a = Attempts::default();
        let delays: Vec<u64> = (0..RETRIES)
            .map(|_| match a.after(&Class::Retry) {
                Next::RetryAfter(d) => d.as_millis() as u64,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 320, 320]);
        assert_eq!(a.after(&Class::Retry), Next::GiveUp);
    }
}
