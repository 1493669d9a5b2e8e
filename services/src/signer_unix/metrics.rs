//! signer-unix's metrics (`spire_attestor_tpm_signer_unix_*`).

use prometheus::{Gauge, Histogram, IntCounterVec, IntGauge};

use crate::metrics::{Metrics, MetricsError};

/// TPM sign latency buckets, seconds: a software TPM signs in a few ms, a hardware one in 5-600 ms.
const TPM_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// signer-unix's metrics.
#[derive(Debug, Clone)]
pub struct SignerUnixMetrics {
    /// Every metric, for rendering.
    pub all: Metrics,
    /// Sign requests by kind (`bundle`, `token`, `keyset`) and result (`ok`, `refused`, `busy`, `failed`).
    pub signs: IntCounterVec,
    /// Time the TPM took for one signature.
    pub tpm_sign: Histogram,
    /// Sign requests waiting for the TPM or in it.
    pub queue_depth: IntGauge,
    /// Publish requests by result (`ok`, `refused`, `failed`).
    pub publishes: IntCounterVec,
    /// `exp` of the token published last (unix seconds; 0: none since start).
    pub published_expiry: Gauge,
    /// Seconds until the token published last expires (0: none, or expired); set at each scrape.
    pub published_expires_in: Gauge,
}

impl SignerUnixMetrics {
    /// Registers every metric.
    pub fn new() -> Result<SignerUnixMetrics, MetricsError> {
        let m = Metrics::new("signer_unix");
        Ok(SignerUnixMetrics {
            signs: m.counter("signs_total", "Sign requests by kind and result.", &["kind", "result"])?,
            tpm_sign: m.histogram("tpm_sign_seconds", "Time the TPM took for one signature.", TPM_BUCKETS.to_vec())?,
            queue_depth: m.int_gauge("queue_depth", "Sign requests waiting for the TPM or in it.")?,
            publishes: m.counter("publishes_total", "Publish requests by result.", &["result"])?,
            published_expiry: m.gauge(
                "published_token_expiry_timestamp_seconds",
                "exp of the token published last (unix seconds; 0: none since start).",
            )?,
            published_expires_in: m.gauge(
                "published_token_expires_in_seconds",
                "Seconds until the token published last expires (0: none, or expired).",
            )?,
            all: m,
        })
    }
}
