//! signer-http: the network co-signer. It accepts a token already signed by an approved SPIRE server key, and
//! has its own TPM (through the local signer-unix) add a signature on top (a nested token).
//!
//! Invariants: the address allow-list runs before any byte of a request body is read; only tokens whose
//! outermost signature verifies with `primary` (or `backup`, logged) are forwarded; a 200 always carries a token.

mod allow;
mod config;
mod metrics;
mod refusal;
mod server;

pub use allow::{AllowEntry, AllowError, AllowList};
pub use config::{parse_listen, SignerHttpConfig, TlsFiles};
pub use server::{run, run_with, RunError};
