//! Every way a signer-http request can fail, with its HTTP status and metric label decided here once. The peer
//! gets the variant's text (a stable reason); the log gets the detail (signer-unix's own error), once.

use std::net::IpAddr;

use http::StatusCode;

use common::signer_client::SignerClientError;

/// Every way a co-sign request can fail, with its status decided here once; the peer gets the variant's text, the
/// log the detail.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("no such endpoint {0:?}; use /sign")]
    NoEndpoint(String),
    #[error("too many verifications in progress; retry")]
    Busy,
    #[error("token refused: {0}")]
    Token(crypto::VerifyError),
    #[error(
        "signer-http does not co-sign keyset updates: root on this host adds its layer with \
         `spire-server-attestor-tpm-sign keys --add-layer`"
    )]
    KeysetUpdate,
    /// signer-unix answered 503 (its TPM queue is full, or it is stopping).
    #[error("local signer busy; retry")]
    LocalBusy(SignerClientError),
    /// Any other signer-unix failure: its text (socket path included) stays in our log.
    #[error("local signer failed; see signer-http's log")]
    Local(SignerClientError),
}

impl crate::server::http::Refusal for Refusal {
    type Peer = IpAddr;

    fn status(&self) -> StatusCode {
        match self {
            Refusal::NoEndpoint(_) => StatusCode::NOT_FOUND,
            Refusal::Busy | Refusal::LocalBusy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Token(_) => StatusCode::BAD_REQUEST,
            Refusal::KeysetUpdate => StatusCode::FORBIDDEN,
            Refusal::Local(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// `bad_token`, `keyset_update`, `busy`, `upstream_failed` or `no_endpoint`.
    fn label(&self) -> &'static str {
        match self {
            Refusal::NoEndpoint(_) => "no_endpoint",
            Refusal::Busy | Refusal::LocalBusy(_) => "busy",
            Refusal::Token(_) => "bad_token",
            Refusal::KeysetUpdate => "keyset_update",
            Refusal::Local(_) => "upstream_failed",
        }
    }

    fn log(&self, peer: &IpAddr) {
        match self {
            Refusal::Token(e) => tracing::warn!(%peer, error = %e, "refusing to co-sign"),
            Refusal::KeysetUpdate => tracing::warn!(%peer, "refusing to co-sign a keyset update"),
            Refusal::LocalBusy(e) | Refusal::Local(e) => tracing::error!(%peer, error = %e, "signer-unix failed"),
            other => tracing::debug!(%peer, reason = %other, "request refused"),
        }
    }
}
