//! The daemons of spire-server-attestor-tpm and the plumbing they share.
//!
//! - [`signer_unix`]: owns the TPM, signs bundles and tokens on a unix socket, publishes the token atomically.
//! - [`verifier`]: fetches, verifies and serves the bundle to the SPIRE agent on each node.
//! - [`signer_client`]: the client side of signer-unix's socket API (used by the sign CLI/plugin and signer-http).
//! - [`common`]: config loading, unix sockets, the HTTP server and client, logging, shutdown.
//!
//! Data flows one way: bundle -> sign -> publish -> fetch -> verify -> serve.

pub mod common;
pub mod signer_client;
pub mod signer_http;
pub mod signer_unix;
pub mod verifier;
