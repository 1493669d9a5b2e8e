//! The one owner of the TPM key: a dedicated thread that signs digests one at a time from a bounded queue.
//!
//! Invariants: TPM commands are strictly serialized; at most `depth` requests wait; a request whose caller
//! has gone away is dropped before it reaches the TPM; a full queue is refused at once (the caller answers 503).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tpm::{KeySigner, TpmError};

struct Job {
    digest: [u8; 32],
    enqueued: Instant,
    reply: oneshot::Sender<Result<Vec<u8>, TpmError>>,
}

/// Why a signature could not be had.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Too many requests are already waiting for the TPM.
    #[error("TPM queue full ({0} requests waiting)")]
    Full(usize),
    /// The owner thread is gone (shutdown).
    #[error("TPM owner stopped")]
    Stopped,
    /// The TPM refused or failed.
    #[error(transparent)]
    Tpm(#[from] TpmError),
}

/// Handle to the owner thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SignQueue {
    tx: mpsc::Sender<Job>,
    depth: usize,
}

impl SignQueue {
    /// Starts the owner thread for `key` with room for `depth` waiting requests.
    pub fn start(key: Arc<dyn KeySigner>, depth: usize) -> std::io::Result<SignQueue> {
        let (tx, mut rx) = mpsc::channel::<Job>(depth);
        std::thread::Builder::new().name("tpm-owner".into()).spawn(move || {
            while let Some(job) = rx.blocking_recv() {
                if job.reply.is_closed() {
                    tracing::debug!("caller gone before its turn; skipping TPM sign");
                    continue;
                }
                let waited = job.enqueued.elapsed();
                let started = Instant::now();
                let result = key.sign_digest(&job.digest);
                tracing::debug!(
                    waited_us = waited.as_micros() as u64,
                    tpm_us = started.elapsed().as_micros() as u64,
                    ok = result.is_ok(),
                    "tpm sign"
                );
                let _ = job.reply.send(result);
            }
        })?;
        Ok(SignQueue { tx, depth })
    }

    /// Signs `digest`, waiting for its turn; refuses at once when the queue is full.
    pub async fn sign(&self, digest: [u8; 32]) -> Result<Vec<u8>, QueueError> {
        let (reply, rx) = oneshot::channel();
        let job = Job { digest, enqueued: Instant::now(), reply };
        self.tx.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => QueueError::Full(self.depth),
            mpsc::error::TrySendError::Closed(_) => QueueError::Stopped,
        })?;
        Ok(rx.await.map_err(|_| QueueError::Stopped)??)
    }
}
