//! The verifier's metrics (`spire_attestor_tpm_verifier_*`), every one per keyset; the label values are the
//! config's keyset names and sources and fixed result names.

use prometheus::{GaugeVec, IntCounterVec};

use super::config::Rejection;
use crate::metrics::{Metrics, MetricsError};

/// The verifier's metrics.
#[derive(Debug, Clone)]
pub struct VerifierMetrics {
    /// Every metric, for rendering.
    pub all: Metrics,
    /// Seconds until the served token expires (0 when none is served); set at each scrape.
    pub expires_in: GaugeVec,
    /// When the served bundle was signed (innermost `iat`).
    pub signed_at: GaugeVec,
    /// When a source last gave or confirmed a valid token.
    pub last_success: GaugeVec,
    /// The refresh interval, for alert rules.
    pub refresh_interval: GaugeVec,
    /// Fetches by source and result: `accepted`, `not_modified`, `failed`, `rejected`.
    pub fetches: IntCounterVec,
    /// Refused tokens by reason (the policy's class, `rollback`, `trust_domain`, `retired_key`).
    pub rejections: IntCounterVec,
    /// 1 while the served token verified with the backup key standing in.
    pub backup_in_use: GaugeVec,
    /// Requests answered, by HTTP status.
    pub requests: IntCounterVec,
    /// The version of the keys trusted (0: the config's).
    pub keys_version: GaugeVec,
    /// Keyset updates by result: `accepted`, `refused`, `stale`.
    pub keys_updates: IntCounterVec,
}

impl VerifierMetrics {
    /// Registers every metric.
    pub fn new() -> Result<VerifierMetrics, MetricsError> {
        let m = Metrics::new("verifier");
        let ks = &["keyset"];
        Ok(VerifierMetrics {
            expires_in: m.gauge_vec(
                "token_expires_in_seconds",
                "Seconds until the served token expires (0: none served).",
                ks,
            )?,
            signed_at: m.gauge_vec(
                "bundle_signed_timestamp_seconds",
                "When the served bundle was signed (unix seconds).",
                ks,
            )?,
            last_success: m.gauge_vec(
                "last_successful_fetch_timestamp_seconds",
                "When a source last gave or confirmed a valid token (unix seconds; 0: never).",
                ks,
            )?,
            refresh_interval: m.gauge_vec("refresh_interval_seconds", "The configured refresh interval.", ks)?,
            fetches: m.counter(
                "fetches_total",
                "Token fetches by source and result.",
                &["keyset", "source", "result"],
            )?,
            rejections: m.counter("rejections_total", "Tokens refused, by reason.", &["keyset", "reason"])?,
            backup_in_use: m.gauge_vec(
                "backup_key_in_use",
                "1 while the served token verified with the backup key.",
                ks,
            )?,
            requests: m.counter(
                "requests_total",
                "Requests answered, by keyset and HTTP status.",
                &["keyset", "status"],
            )?,
            keys_version: m.gauge_vec("keys_version", "Version of the keys trusted (0: the config's keydir).", ks)?,
            keys_updates: m.counter("keyset_updates_total", "Keyset updates by result.", &["keyset", "result"])?,
            all: m,
        })
    }

    /// Counts a refused token.
    pub fn rejected(&self, keyset: &str, source: &str, why: &Rejection) {
        let reason = match why {
            Rejection::Policy(e) => e.kind.class(),
            Rejection::TrustDomain(_) => "trust_domain",
            Rejection::Retired { .. } => "retired_key",
            Rejection::KeysState(_) => "keys_state",
        };
        self.rejections.with_label_values(&[keyset, reason]).inc();
        self.fetches.with_label_values(&[keyset, source, "rejected"]).inc();
    }
}
