//! The enrollment CA (`spire-server-attestor-tpm-devid-ca`): issues, renews and revokes DevID certificates for
//! nodes that prove, in one enrollment session, a genuine TPM the operator approved, an AK in it, and a DevID key
//! fixed in it. Its signing key lives in a TPM; its state (certificates, tokens, revocations) in SQLite.

#[cfg(feature = "tpm")]
pub mod cli;
pub mod config;
pub mod db;
mod metrics;
mod refusal;
pub mod server;
mod sessions;
pub use sessions::PER_EK;
pub mod x509;
