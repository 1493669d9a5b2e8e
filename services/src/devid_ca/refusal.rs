//! Every way an enrollment is refused or fails, with its HTTP status and metric label decided here once. The node
//! gets the variant's text (it prints it); the log gets the same reason with the EK, once, and the detail of an
//! internal failure.

use http::StatusCode;

use super::db::DbError;

/// Why an enrollment request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("no such endpoint {0:?}; use /v1/enroll, /v1/enroll/answer, /v1/ca or /v1/crl")]
    NoEndpoint(String),
    #[error("body is not {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("{0}")]
    Proof(crypto::devid::DevIdError),
    #[error("EK {hash} is neither in the inventory nor holding an enrollment token")]
    NotApproved { hash: String },
    #[error("EK {hash} is in the inventory without a name: give it one there, or enroll with a token")]
    Unnamed { hash: String },
    #[error("EK {hash} is in the inventory as {listed}; the token is for {token}")]
    OtherName { hash: String, listed: String, token: String },
    #[error("{0}")]
    Denied(DbError),
    #[error("the certificate to renew: {0}")]
    Renewal(String),
    #[error("unknown, used or expired enrollment session (a replayed answer, or one older than 60 s)")]
    UnknownSession,
    #[error("too many enrollments in progress; retry")]
    Busy,
    #[error("{limit} enrollments of this EK are in progress already; finish one, or retry in a minute")]
    TooManyForEk { limit: usize },
    #[error("the CA failed; see its log")]
    Internal(String),
}

impl From<DbError> for Refusal {
    fn from(e: DbError) -> Refusal {
        match e {
            DbError::Sqlite(e) => Refusal::Internal(format!("database: {e}")),
            e => Refusal::Denied(e),
        }
    }
}

impl crate::server::http::Refusal for Refusal {
    /// The EK hash (when known) or the peer address.
    type Peer = str;

    fn status(&self) -> StatusCode {
        use crypto::devid::DevIdError as E;
        match self {
            Refusal::NoEndpoint(_) => StatusCode::NOT_FOUND,
            Refusal::Malformed { .. } => StatusCode::BAD_REQUEST,
            Refusal::Proof(E::Json { .. } | E::TooLarge { .. } | E::Tpm2 { .. } | E::Missing(_)) => {
                StatusCode::BAD_REQUEST
            }
            Refusal::Proof(_)
            | Refusal::NotApproved { .. }
            | Refusal::Unnamed { .. }
            | Refusal::OtherName { .. }
            | Refusal::Denied(_)
            | Refusal::Renewal(_)
            | Refusal::UnknownSession => StatusCode::FORBIDDEN,
            Refusal::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::TooManyForEk { .. } => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn log(&self, who: &str) {
        match self {
            Refusal::Internal(detail) => tracing::error!(%who, %detail, "enrollment failed"),
            Refusal::NoEndpoint(_) | Refusal::Malformed { .. } => {
                tracing::debug!(%who, reason = %self, "request refused")
            }
            other => tracing::warn!(%who, reason = %other, "enrollment refused"),
        }
    }
}
