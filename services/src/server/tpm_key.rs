//! Opening a daemon's TPM key (signer-unix's, the enrollment CA's) at start-up, waiting out a TPM that is there but
//! not available yet.
//!
//! Invariant: a transient failure (the TPM busy, restarting, or `/dev/tpm0` held by another process) is logged
//! with its cause and retried with a backoff until the key opens or the daemon is told to stop; a permanent one
//! (no key at the handle, a key of the wrong kind, no permission) ends the start-up at once.

use std::future::Future;
use std::time::Duration;

use tpm::{PersistentHandle, TpmDevice, TpmError, TpmKey};

/// First and longest wait between two attempts.
const FIRST_WAIT: Duration = Duration::from_millis(250);
const LONGEST_WAIT: Duration = Duration::from_secs(5);

/// Opens the key at `handle` on `device`, to sign with password `auth`, and signs once, so that a key that does
/// not take it (or a TPM that cannot sign) stops the start-up with its reason; `None` when `shutdown` came first.
pub async fn wait_for_key(
    device: &TpmDevice,
    handle: PersistentHandle,
    auth: &tpm::Password,
    shutdown: impl Future<Output = ()>,
) -> Result<Option<TpmKey>, TpmError> {
    tokio::pin!(shutdown);
    let mut wait = FIRST_WAIT;
    loop {
        let (d, h, a) = (device.clone(), handle, auth.clone());
        let open = move || -> Result<TpmKey, TpmError> {
            let key = tpm::Tpm::open(&d)?.signing_key(h)?.with_auth(a);
            tpm::KeySigner::sign_digest(&key, &[0u8; 32])?;
            Ok(key)
        };
        let opened = match tokio::task::spawn_blocking(open).await {
            Ok(opened) => opened,
            // A panic in the TPM code is a bug: let it surface. Cancelled only when the runtime shuts down.
            Err(join) => match join.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => return Ok(None),
            },
        };
        match opened {
            Ok(key) => {
                tracing::info!(tpm = %device, handle = %handle, "signing key opened");
                return Ok(Some(key));
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(tpm = %device, error = %e, retry_in_ms = wait.as_millis() as u64, "TPM not available; waiting for it");
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            () = &mut shutdown => return Ok(None),
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(LONGEST_WAIT);
    }
}
