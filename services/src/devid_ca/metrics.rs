//! The enrollment CA's metrics (`spire_attestor_tpm_devid_ca_*`).

use prometheus::{Gauge, Histogram, IntCounterVec};

use crate::metrics::{Metrics, MetricsError};

/// TPM sign latency buckets, seconds.
const TPM_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// The CA's metrics.
#[derive(Debug, Clone)]
pub struct CaMetrics {
    /// Every metric, for rendering.
    pub all: Metrics,
    /// Enrollment exchanges by step (`begin`, `answer`) and result (`ok`, `refused`, `busy`, `failed`).
    pub enrollments: IntCounterVec,
    /// Time the TPM took for one certificate or CRL signature.
    pub tpm_sign: Histogram,
    /// thisUpdate of the CRL written last (unix seconds; 0: none yet).
    pub crl_this_update: Gauge,
    /// nextUpdate of the CRL written last (unix seconds; 0: none yet).
    pub crl_next_update: Gauge,
    /// Seconds since the CRL written last was signed; set at each scrape.
    pub crl_age: Gauge,
}

impl CaMetrics {
    /// Registers every metric.
    pub fn new() -> Result<CaMetrics, MetricsError> {
        let m = Metrics::new("devid_ca");
        let enrollments =
            m.counter("enrollments_total", "Enrollment exchanges by step and result.", &["step", "result"])?;
        for step in ["begin", "answer"] {
            for result in ["ok", "refused", "busy", "failed"] {
                enrollments.with_label_values(&[step, result]);
            }
        }
        Ok(CaMetrics {
            enrollments,
            tpm_sign: m.histogram("tpm_sign_seconds", "Time the TPM took for one signature.", TPM_BUCKETS.to_vec())?,
            crl_this_update: m.gauge("crl_this_update_timestamp_seconds", "thisUpdate of the CRL written last.")?,
            crl_next_update: m.gauge("crl_next_update_timestamp_seconds", "nextUpdate of the CRL written last.")?,
            crl_age: m.gauge("crl_age_seconds", "Seconds since the CRL written last was signed.")?,
            all: m,
        })
    }
}
