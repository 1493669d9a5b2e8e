//! The verifier daemon (in progress).
