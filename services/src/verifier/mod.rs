//! The verifier: runs on every node, fetches the signed token, checks every signature against the keyset's
//! policy (chain plus backup), and serves the verified bundle to the SPIRE agent on a unix socket.
//!
//! Invariants: never serves an unverified, expired or rolled-back bundle; keeps serving the last good bundle
//! while sources are down, until that token's `exp`; the rollback floor survives restarts.

mod config;
mod fetch;
mod keys;
mod keyset;
mod metrics;
mod oneshot;
mod server;

pub use config::{parse_source, KeysetConfig, Source, VerifierConfig, DEFAULT_SOCKET, DEFAULT_STATE_DIR};
pub use keys::{Origin, Trusted};
pub use oneshot::{describe_keys, verify_once, OneShotError};
pub use server::{query_pairs, run, RunError, Verifier};
