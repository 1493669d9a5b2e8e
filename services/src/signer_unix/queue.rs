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
#[non_exhaustive]
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

/// What the queue reports: each TPM signature's duration, and the requests waiting or in the TPM.
#[derive(Debug, Clone)]
pub struct QueueMetrics {
    /// Seconds per TPM signature.
    pub latency: prometheus::Histogram,
    /// Requests queued or being signed.
    pub depth: prometheus::IntGauge,
}

/// Handle to the owner thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SignQueue {
    tx: mpsc::Sender<Job>,
    depth: usize,
    metrics: Option<QueueMetrics>,
}

impl SignQueue {
    /// Starts the owner thread for `key` with room for `depth` waiting requests, reporting to `metrics`.
    pub fn start(key: Arc<dyn KeySigner>, depth: usize, metrics: Option<QueueMetrics>) -> std::io::Result<SignQueue> {
        let (tx, mut rx) = mpsc::channel::<Job>(depth);
        let owner_metrics = metrics.clone();
        std::thread::Builder::new().name("tpm-owner".into()).spawn(move || {
            while let Some(job) = rx.blocking_recv() {
                if job.reply.is_closed() {
                    tracing::debug!("caller gone before its turn; skipping TPM sign");
                    if let Some(m) = &owner_metrics {
                        m.depth.dec();
                    }
                    continue;
                }
                let waited = job.enqueued.elapsed();
                let started = Instant::now();
                let result = key.sign_digest(&job.digest);
                if let Some(m) = &owner_metrics {
                    m.latency.observe(started.elapsed().as_secs_f64());
                    m.depth.dec();
                }
                tracing::debug!(
                    waited_us = waited.as_micros() as u64,
                    tpm_us = started.elapsed().as_micros() as u64,
                    ok = result.is_ok(),
                    "tpm sign"
                );
                let _ = job.reply.send(result);
            }
        })?;
        Ok(SignQueue { tx, depth, metrics })
    }

    /// Signs `digest`, waiting for its turn; refuses at once when the queue is full.
    pub async fn sign(&self, digest: [u8; 32]) -> Result<Vec<u8>, QueueError> {
        let (reply, rx) = oneshot::channel();
        let job = Job { digest, enqueued: Instant::now(), reply };
        // Counted before the owner can see it, so that the gauge never goes below zero.
        if let Some(m) = &self.metrics {
            m.depth.inc();
        }
        self.tx.try_send(job).map_err(|e| {
            if let Some(m) = &self.metrics {
                m.depth.dec();
            }
            match e {
                mpsc::error::TrySendError::Full(_) => QueueError::Full(self.depth),
                mpsc::error::TrySendError::Closed(_) => QueueError::Stopped,
            }
        })?;
        Ok(rx.await.map_err(|_| QueueError::Stopped)??)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc as std_mpsc;
    use std::sync::Mutex;

    /// A key whose signatures wait until the test releases them.
    #[derive(Debug)]
    struct Gated {
        inner: tpm::mock::SoftwareKey,
        started: Mutex<std_mpsc::Sender<()>>,
        release: Mutex<std_mpsc::Receiver<()>>,
    }

    impl KeySigner for Gated {
        fn key_type(&self) -> tpm::KeyType {
            self.inner.key_type()
        }
        fn public_key(&self) -> &tpm::PublicKey {
            self.inner.public_key()
        }
        fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, TpmError> {
            let _ = self.started.lock().unwrap().send(());
            let _ = self.release.lock().unwrap().recv();
            self.inner.sign_digest(digest)
        }
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once_and_the_rest_complete() {
        let (started_tx, started_rx) = std_mpsc::channel();
        let (release_tx, release_rx) = std_mpsc::channel();
        let key = Arc::new(Gated {
            inner: tpm::mock::SoftwareKey::generate(tpm::KeyType::EccP256),
            started: Mutex::new(started_tx),
            release: Mutex::new(release_rx),
        });
        let queue = SignQueue::start(key, 1, None).unwrap();
        let first = tokio::spawn({
            let q = queue.clone();
            async move { q.sign([1; 32]).await }
        });
        // The owner thread holds the first request in the "TPM".
        tokio::task::spawn_blocking(move || started_rx.recv().unwrap()).await.unwrap();
        let second = tokio::spawn({
            let q = queue.clone();
            async move { q.sign([2; 32]).await }
        });
        // Let the second request take the one queue slot.
        while queue.tx.capacity() != 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(queue.sign([3; 32]).await, Err(QueueError::Full(1))));
        release_tx.send(()).unwrap();
        release_tx.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap().len(), 64);
        assert_eq!(second.await.unwrap().unwrap().len(), 64);
    }

    #[tokio::test]
    async fn tpm_errors_reach_the_caller_with_their_kind() {
        let queue =
            SignQueue::start(Arc::new(tpm::mock::SoftwareKey::failing(tpm::KeyType::Rsa2048)), 4, None).unwrap();
        match queue.sign([0; 32]).await {
            Err(QueueError::Tpm(e)) => assert!(e.is_transient()),
            other => panic!("{other:?}"),
        }
    }
}
