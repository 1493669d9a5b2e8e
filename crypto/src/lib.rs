//! The token format, the verification policy, and key and bundle parsing. Pure: no I/O, no clock (callers pass
//! `now` as unix seconds, read from `common::clock`), no TPM.
//!
//! - [`token`]: compact JWS tokens bit-compatible with the Go original (claims `spiffetb` or a nested `jwt`,
//!   plus `iss`, `exp`, `nbf`, `iat`); building signing inputs and verifying one layer.
//! - [`policy`]: a chain of keys in signing order plus an optional backup key that may stand in for at most
//!   one layer, or a threshold of a key set; every layer must verify.
//! - [`keyset`]: signed keyset updates: a new policy, signed under the current one and by every key it
//!   introduces, with a version that only goes up.
//! - [`keys`]: public keys from PEM, with the algorithm pinned to the key type.
//! - [`bundle`]: X.509 trust bundles in PEM and SPIFFE JSON form.
//! - [`TrustDomain`]: a SPIFFE trust domain name, validated once at the edge.
//! - [`devid`]: the server side of SPIRE's `tpm_devid` node attestation (checks, MakeCredential, selectors).
//!
//! Invariant: nothing in this crate accepts a signature made with an algorithm other than the one the key's
//! type fixes (RSA >= 2048 bits: RS256; P-256: ES256).

pub mod bundle;
pub mod devid;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod keys;
pub mod keyset;
pub mod pem;
pub mod policy;
pub mod token;
mod trust_domain;

pub use error::{BundleError, KeyError, PolicyError, TokenError, VerifyError, VerifyErrorKind};
pub use trust_domain::{BadTrustDomain, TrustDomain};

/// A JWS algorithm this project signs and verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RSA keys of 2048 bits or more).
    Rs256,
    /// ECDSA P-256 with SHA-256, signature `r || s`.
    Es256,
}

impl Alg {
    /// The JWS `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }

    /// The algorithm named `name` in a JWS header, if it is one we use.
    pub fn from_name(name: &str) -> Option<Alg> {
        match name {
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            _ => None,
        }
    }
}

impl std::fmt::Display for Alg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bounds applied to every token before and while it is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
    /// Longest accepted validity (`exp - iat`), in seconds.
    pub max_lifetime_secs: u64,
    /// Longest accepted token, in bytes.
    pub max_token_len: usize,
    /// Most layers a token may have.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { leeway_secs: 5, max_lifetime_secs: 24 * 3600, max_token_len: 1 << 20, max_depth: 8 }
    }
}
