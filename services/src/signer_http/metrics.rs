//! signer-http's metrics (`spire_attestor_tpm_signer_http_*`).

use crate::metrics::Metrics;

/// signer-http's metrics (`spire_attestor_tpm_signer_http_*`).
#[derive(Clone)]
pub(crate) struct SignerHttpMetrics {
    pub(crate) all: Metrics,
    /// Requests and connections by result: `refused_at_door` (not in allowed-addrs), `too_many_connections`,
    /// `bad_token`, `keyset_update`, `cosigned`, `upstream_failed`, `busy`, `no_endpoint`.
    requests: prometheus::IntCounterVec,
}

impl SignerHttpMetrics {
    pub(crate) fn new() -> Result<SignerHttpMetrics, crate::metrics::MetricsError> {
        let all = Metrics::new("signer_http");
        let requests =
            all.counter("requests_total", "Co-sign requests and refused connections, by result.", &["result"])?;
        for r in [
            "refused_at_door",
            "too_many_connections",
            "bad_token",
            "keyset_update",
            "cosigned",
            "upstream_failed",
            "busy",
        ] {
            requests.with_label_values(&[r]);
        }
        Ok(SignerHttpMetrics { all, requests })
    }

    pub(crate) fn count(&self, result: &str) {
        self.requests.with_label_values(&[result]).inc();
    }
}
