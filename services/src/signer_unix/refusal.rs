//! Every way a signer-unix request can fail, with its HTTP status decided here once. The peer gets the
//! variant's text (a stable reason, never a TPM's internals); the log gets the detail, once.

use http::StatusCode;

use super::queue::QueueError;

/// Why a request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("no such endpoint {0:?}; use /sign, /publish or /policy")]
    NoEndpoint(String),
    #[error("trust-domain: {0}")]
    BadTrustDomain(crypto::BadTrustDomain),
    #[error("trust-domain binds a bundle; a token is wrapped as it is")]
    TrustDomainOnToken,
    #[error("the bundle holds a CA certificate of trust domain {other}, not {trust_domain}")]
    ForeignCa { trust_domain: String, other: String },
    #[error("body is not a token: {0}")]
    NotAToken(crypto::VerifyError),
    #[error("body is not a keyset document: {0}")]
    NotAKeysetDocument(crypto::keyset::DocumentError),
    #[error("the keyset document expired at {0}")]
    KeysetExpired(u64),
    #[error(
        "body is not a trust bundle ({0}); send a PEM or SPIFFE bundle, or a token with Content-Type: application/jwt"
    )]
    NotABundle(crypto::BundleError),
    #[error("TPM busy: too many sign requests waiting; retry")]
    QueueFull(usize),
    #[error("shutting down")]
    ShuttingDown,
    #[error("TPM sign failed; see signer-unix log")]
    Tpm(tpm::TpmError),
    #[error("TPM returned an unusable signature")]
    UnusableSignature(crypto::TokenError),
    #[error("signed token failed self-check; see signer-unix log")]
    SelfCheck(crypto::VerifyError),
    #[error("the token would be {len} bytes, more than the {max} a verifier takes: send a smaller bundle")]
    TokenTooLarge { len: usize, max: usize },
    #[error("refusing to publish: not a valid token carrying this signer's signature: {0}")]
    NotOurs(crypto::VerifyError),
    #[error("refusing to publish: {error}; checked against the publish policy ({policy})")]
    NotVerified { error: crypto::VerifyError, policy: String },
    #[error(
        "peer uid {0} may not have keyset updates signed (keyset-uids; root only by default): run `sign keys` as root"
    )]
    KeysetNotAllowed(u32),
    #[error(
        "peer uid {0} may not have a bundle signed or a token published (bundle-uids; root only by default): it may only add layers to tokens, as signer-http does"
    )]
    BundleNotAllowed(u32),
    #[error("refusing to publish a token signed at {signed_at}, before the one published ({published})")]
    Older { signed_at: u64, published: u64 },
    #[error("publish failed; previous token kept; see signer-unix log")]
    Write(std::io::Error),
    #[error("publish task failed; previous token kept")]
    Task,
}

impl From<QueueError> for Refusal {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Full(n) => Refusal::QueueFull(n),
            QueueError::Stopped => Refusal::ShuttingDown,
            QueueError::Tpm(e) => Refusal::Tpm(e),
        }
    }
}

impl crate::server::http::Refusal for Refusal {
    type Peer = u32;

    fn status(&self) -> StatusCode {
        match self {
            Refusal::NoEndpoint(_) => StatusCode::NOT_FOUND,
            Refusal::KeysetNotAllowed(_) | Refusal::BundleNotAllowed(_) => StatusCode::FORBIDDEN,
            Refusal::Older { .. } => StatusCode::CONFLICT,
            Refusal::TokenTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BadTrustDomain(_)
            | Refusal::TrustDomainOnToken
            | Refusal::ForeignCa { .. }
            | Refusal::NotAToken(_)
            | Refusal::NotAKeysetDocument(_)
            | Refusal::KeysetExpired(_)
            | Refusal::NotABundle(_) => StatusCode::BAD_REQUEST,
            Refusal::QueueFull(_) | Refusal::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Tpm(e) if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::NotOurs(_) | Refusal::NotVerified { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Refusal::Tpm(_)
            | Refusal::UnusableSignature(_)
            | Refusal::SelfCheck(_)
            | Refusal::Write(_)
            | Refusal::Task => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn log(&self, peer_uid: &u32) {
        let peer_uid = *peer_uid;
        match self {
            Refusal::QueueFull(waiting) => tracing::warn!(waiting, peer_uid, "TPM queue full; refusing sign request"),
            Refusal::Tpm(e) => tracing::error!(error = %e, transient = e.is_transient(), peer_uid, "TPM sign failed"),
            Refusal::UnusableSignature(e) => tracing::error!(error = %e, "TPM returned an unusable signature"),
            Refusal::SelfCheck(e) => {
                tracing::error!(error = %e, "freshly signed token does not verify with our own key")
            }
            Refusal::NotOurs(e) => tracing::warn!(error = %e, peer_uid, "refusing to publish"),
            Refusal::NotVerified { error, policy } => {
                tracing::warn!(%error, %policy, peer_uid, "refusing to publish: the token does not verify as nodes verify it")
            }
            Refusal::KeysetNotAllowed(_) => {
                tracing::warn!(peer_uid, "refusing to sign a keyset update for a peer outside keyset-uids")
            }
            Refusal::BundleNotAllowed(_) => {
                tracing::warn!(peer_uid, "refusing to sign a bundle or publish for a peer outside bundle-uids")
            }
            Refusal::Older { signed_at, published } => {
                tracing::warn!(
                    signed_at,
                    published,
                    peer_uid,
                    "refusing to publish a token older than the one published"
                )
            }
            Refusal::Write(e) => tracing::error!(error = %e, "publish write failed"),
            other => tracing::debug!(reason = %other, peer_uid, "request refused"),
        }
    }
}
