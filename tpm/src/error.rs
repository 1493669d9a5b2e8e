//! The tpm crate's one error type. Transient failures (the TPM is unreachable or asked us to retry) are told
//! apart from permanent ones (wrong handle, wrong key, refused command) by [`TpmError::is_transient`].

use crate::handle::PersistentHandle;

/// What went wrong talking to the TPM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    /// A handle string that is not a persistent handle.
    #[error("{input:?} is not a persistent handle (0x81000000..0x81FFFFFF, written as 0x81008006)")]
    BadHandle {
        /// The input.
        input: String,
    },
    /// A device string we do not accept.
    #[error("tpm device {input:?}: {reason}")]
    BadDevice {
        /// The input.
        input: String,
        /// Why.
        reason: &'static str,
    },
    /// A key type name we do not know.
    #[error("key type {input:?}: use rsa2048 or ecc-p256")]
    BadKeyType {
        /// The input.
        input: String,
    },
    /// No TPM device to autodetect.
    #[error("no TPM found: neither /dev/tpmrm0 nor /dev/tpm0 exists (set tpm-device)")]
    NoDevice,
    /// The TPM device file could not be opened (another process holds `/dev/tpm0`, or no permission).
    #[error("cannot open TPM device {device}: {cause}{hint}", hint = open_hint(cause))]
    DeviceOpen {
        /// The device path.
        device: String,
        /// Why.
        cause: std::io::Error,
    },
    /// The TPM could not be reached (connection refused, device gone, TPM restarting).
    #[cfg(feature = "esapi")]
    #[error("TPM {device} unavailable during {op}: {cause}")]
    Unavailable {
        /// The device.
        device: String,
        /// The operation.
        op: &'static str,
        /// The TSS error.
        cause: tss_esapi::Error,
    },
    /// The TPM kept answering TPM_RC_RETRY / YIELDED / TESTING.
    #[error("TPM {device} busy during {op} (still asking to retry after {attempts} attempts)")]
    Busy {
        /// The device.
        device: String,
        /// The operation.
        op: &'static str,
        /// Attempts made.
        attempts: u32,
    },
    /// The TPM refused a command.
    #[cfg(feature = "esapi")]
    #[error("TPM {device}: {op} failed: {cause}")]
    Command {
        /// The device.
        device: String,
        /// The operation.
        op: &'static str,
        /// The TSS error.
        cause: tss_esapi::Error,
    },
    /// Nothing at the handle.
    #[error("no object at persistent handle {handle} on TPM {device}")]
    HandleNotFound {
        /// The handle.
        handle: PersistentHandle,
        /// The device.
        device: String,
    },
    /// An object we will not sign with (or, for provisioning, will not overwrite) is at the handle.
    #[error("persistent handle {handle}: {found}")]
    WrongKey {
        /// The handle.
        handle: PersistentHandle,
        /// What is there and why it does not fit.
        found: String,
    },
    /// After a reconnect the handle holds a different key than the one whose public key callers were given.
    #[error("persistent handle {handle} now holds a different key than at start-up; refusing to sign")]
    KeyChanged {
        /// The handle.
        handle: PersistentHandle,
    },
    /// The TPM returned a signature of an unexpected form.
    #[error("TPM returned an unexpected signature for {handle}: {reason}")]
    BadSignature {
        /// The handle.
        handle: PersistentHandle,
        /// Why.
        reason: &'static str,
    },
    /// The TPM refused a password (no secret is ever part of the message).
    #[error("TPM {device}: {step}: the {what} was refused")]
    AuthFailed {
        /// The device.
        device: String,
        /// The step that needed it.
        step: &'static str,
        /// Which password (e.g. "owner hierarchy password").
        what: &'static str,
    },
    /// NV index 0x01C00002 holds no RSA EK certificate.
    #[error("TPM {device} has no RSA EK certificate at NV index 0x01C00002 (tpm_devid needs the manufacturer's EK certificate)")]
    NoEkCertificate {
        /// The device.
        device: String,
    },
    /// The DevID blob does not load under this TPM's SRK.
    #[error(
        "TPM {device} refused the DevID blob: it was made on another TPM, under another storage key, or is corrupt"
    )]
    ForeignBlob {
        /// The device.
        device: String,
    },
    /// A blob, file or TPM output of the wrong shape.
    #[error("{what}: {reason}")]
    BadBlob {
        /// What was being read.
        what: &'static str,
        /// Why it does not fit.
        reason: String,
    },
    /// ActivateCredential refused the challenge: it was not made for this TPM's EK and this AK.
    #[cfg(feature = "esapi")]
    #[error("TPM {device} refused to activate the credential (not made for this EK and AK): {cause}")]
    CredentialRefused {
        /// The device.
        device: String,
        /// The TSS error.
        cause: tss_esapi::Error,
    },
    /// Software key failure (mock only).
    #[error("software key: {0}")]
    Software(&'static str),
}

/// What an operator can do about a device that does not open.
fn open_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(16) => {
            " (/dev/tpm0 admits one process at a time and another holds it open; /dev/tpmrm0, the kernel's \
                     resource manager, is shared)"
        }
        Some(13) => " (the daemon's user needs read-write access: group tss on Debian)",
        _ => "",
    }
}

impl TpmError {
    /// True when trying again later may succeed (the TPM was unreachable, busy, or held by another process).
    pub fn is_transient(&self) -> bool {
        match self {
            #[cfg(feature = "esapi")]
            TpmError::Unavailable { .. } => true,
            TpmError::Busy { .. } => true,
            TpmError::DeviceOpen { cause: source, .. } => source.raw_os_error() == Some(16),
            _ => false,
        }
    }
}
