//! The three daemons run in-process on software keys (the `mock` feature, a dev-dependency only): signer-unix
//! signs and publishes, signer-http co-signs through it, the verifier serves what it verified. Real sockets, no
//! TPM, no nginx, no other process: the unit lane's view of the handlers. The same paths with swtpm, nginx and
//! the real binaries are in `testbed/tests/e2e_*`.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod signers;
mod support;
mod times;
mod verifier;
mod walls;
