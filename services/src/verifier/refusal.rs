//! Every way an agent's bundle request is refused, with its HTTP status decided here once; the agent gets the
//! reason.

use http::StatusCode;

/// Every way a bundle request is refused, with its status decided here once.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("no such endpoint {0:?}; use /trustbundle?instance=NAME")]
    NoEndpoint(String),
    #[error("query parameter instance is required")]
    NoInstance,
    #[error("format {0:?}: use pem or spiffe")]
    Format(String),
    #[error("unknown instance {0:?}")]
    UnknownInstance(String),
    #[error("instance {instance:?} serves trust domain {serves}, not {asked}")]
    TrustDomain { instance: String, serves: String, asked: String },
    #[error("no valid bundle for {0:?}: no source has a token that verifies and has not expired")]
    NoBundle(String),
}

impl crate::server::http::Refusal for Refusal {
    /// Agents on the local socket: one peer as far as the log goes.
    type Peer = ();

    fn status(&self) -> StatusCode {
        match self {
            Refusal::NoEndpoint(_) | Refusal::UnknownInstance(_) => StatusCode::NOT_FOUND,
            Refusal::NoInstance | Refusal::Format(_) => StatusCode::BAD_REQUEST,
            Refusal::TrustDomain { .. } => StatusCode::FORBIDDEN,
            Refusal::NoBundle(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn log(&self, _: &()) {
        tracing::debug!(reason = %self, "request refused");
    }
}
