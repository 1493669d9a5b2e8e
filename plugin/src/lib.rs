//! `spire-server-attestor-tpm-sign`: takes a SPIRE bundle, has it signed by the local signer-unix and by each
//! co-signer in order, and publishes the result through signer-unix.
//!
//! This module holds the CLI mode; the SPIRE BundlePublisher plugin mode builds on the same [`sign_and_publish`].

pub mod cli;

pub use cli::sign_and_publish;
