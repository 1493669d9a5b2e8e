//! The daemons of spire-server-attestor-tpm and the plumbing they share.
//!
//! - [`devid_ca`]: the enrollment CA: DevID certificates for nodes that prove an approved TPM.
//! - [`signer_unix`]: owns the TPM, signs bundles and tokens on a unix socket, publishes the token atomically.
//! - [`verifier`]: fetches, verifies and serves the bundle to the SPIRE agent on each node.
//! - [`signer_http`]: co-signs tokens already signed by an approved server key, through the local signer-unix.
//! - [`server`]: unix sockets and the HTTP server they all run.
//! - [`metrics`]: Prometheus metrics and `/healthz` on the optional `metrics-addr`.
//!
//! Only signer-unix opens a TPM: that part (and its binary) is behind the `tpm` feature (on by default). Built
//! with `--no-default-features`, every daemon's handlers, the verifier and signer-http need no libtss2. The clients and helpers the daemons
//! share with the plugins live in the `common` crate.
//!
//! Data flows one way: bundle -> sign -> publish -> fetch -> verify -> serve.

pub mod devid_ca;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod metrics;
pub mod server;
pub mod signer_http;
pub mod signer_unix;
pub mod verifier;

/// `load` and `parse` of every daemon's config.
pub use common::config::ConfigFile;
