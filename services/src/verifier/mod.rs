//! The verifier: runs on every node, follows the keyset's signed updates (`keys-url`), fetches the signed
//! token, checks every signature against the policy the keyset trusts now (chain plus backup, or a threshold),
//! and serves the verified bundle to the SPIRE agent on a unix socket; metrics and `/healthz` on `metrics-addr`.
//!
//! Invariants: never serves an unverified, expired or rolled-back bundle; keeps serving the last good bundle
//! while sources are down, until that token's `exp`; the rollback floor and the trusted keys' version survive
//! restarts, and neither ever goes back.

pub mod cli;
mod config;
mod fetch;
mod keyset;
mod metrics;
mod oneshot;
mod refusal;
mod server;
mod trusted;

pub use config::{parse_source, KeysetConfig, Source, VerifierConfig, DEFAULT_SOCKET, DEFAULT_STATE_DIR};
pub use oneshot::{describe_keys, verify_once, OneShotError};
pub use server::{run, run_with, RunError, RunOptions, Verifier};
pub use trusted::{Origin, Trusted};
