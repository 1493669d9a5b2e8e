//! What the daemons (`services`) and the SPIRE plugins (`plugin`) share. No TPM, no server: a binary that only
//! fetches, verifies or forwards builds without libtss2.
//!
//! - [`signer_client`]: the client side of signer-unix's socket API and of co-signer (signer-http) URLs.
//! - [`client`]: HTTP(S) and unix-socket requests with timeouts, bounded bodies and conditional GET.
//! - [`config`]: YAML loading, `${VAR}` expansion, key files, the errors that name the key.
//! - [`duration`]: Go's `time.ParseDuration` syntax, overflow-checked.
//! - [`fsutil`]: atomic writes that never follow a planted link.
//! - [`logging`]: the tracing subscriber the binaries install.
//! - [`report`]: an error and its causes on one line, each once.
//! - [`sync`]: the one lock-poisoning policy.

pub mod client;
pub mod clock;
pub mod config;
pub mod duration;
pub mod fsutil;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod logging;
pub mod report;
pub mod signer_client;
pub mod sync;
