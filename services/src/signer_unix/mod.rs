//! signer-unix: the daemon that owns the TPM. It signs bundles (`POST /sign`), keyset documents (`POST /sign`
//! with `Content-Type: application/spiffe-keyset+json`), wraps tokens and keyset updates already signed
//! elsewhere (`POST /sign` with `Content-Type: application/jwt`), publishes a token atomically (`POST
//! /publish`) into the directory a web server serves, and answers its publish policy (`GET /policy`).
//!
//! Invariants: only bodies that parse as a bundle or a token are signed; only tokens whose outermost signature
//! verifies with this signer's own key are published; every reply carries a status with a reason and a 200
//! always carries a body.

#[cfg(feature = "tpm")]
pub mod cli;
mod config;
mod metrics;
mod queue;
mod refusal;
mod server;

#[cfg(feature = "tpm")]
pub use crate::server::tpm_key::wait_for_key;
pub use config::{SignerUnixConfig, DEFAULT_SOCKET, MAX_DURATION};
pub use queue::{QueueError, QueueMetrics, SignQueue};
pub use server::{run, run_with, RunError};
