//! signer-unix: the daemon that owns the TPM. It signs bundles (`POST /sign`), wraps tokens already signed
//! elsewhere (`POST /sign` with `Content-Type: application/jwt`), and publishes a token atomically
//! (`POST /publish`) into the directory a web server serves.
//!
//! Invariants: only bodies that parse as a bundle or a token are signed; only tokens whose outermost signature
//! verifies with this signer's own key are published; every reply carries a status with a reason and a 200
//! always carries a body.

mod config;
mod queue;
mod refusal;
mod server;
mod tpm_open;

pub use config::{SignerUnixConfig, DEFAULT_SOCKET, MAX_DURATION};
pub use queue::{QueueError, SignQueue};
pub use server::{run, RunError};
pub use tpm_open::wait_for_key;
