//! Persistent-handle TPM signing behind one narrow trait.
//!
//! This crate is the only one in the workspace that links tss-esapi. It owns:
//! - [`TpmDevice`]: where the TPM is (a character device, or swtpm over TCP), parsed once at the edge;
//! - [`Tpm`]: the single owner of a TPM connection; every command is serialized through it, it reconnects
//!   after the TPM restarts and retries `TPM_RC_RETRY`;
//! - [`KeySigner`]: the trait the services sign through (public key + signature over a SHA-256 digest);
//! - provisioning of a signing key at a persistent handle ([`provision`]);
//! - keys that exist outside the TPM only as wrapped blobs, for the KeyManager plugins ([`wrapped`]);
//! - DevID keys for SPIRE's `tpm_devid`, kept as blobs under the H-1/H-2 storage key ([`devid`]), and the
//!   agent side of its attestation: AK, EK, EK certificate, Certify, credential activation ([`attest`]).
//!
//! Everything that talks to a TPM is behind the `esapi` feature (on by default); without it the crate is the
//! trait, key types, handles, device names and passwords, and builds with no system library (the unit lane).
//!
//! Invariant: the signature algorithm is fixed by the key's type (RSA-2048 -> RS256, ECC P-256 -> ES256); no
//! caller can choose a scheme. Software keys exist only behind the `mock` feature, which only dev-dependencies
//! enable.

#[cfg(feature = "esapi")]
pub mod attest;
mod device;
#[cfg(feature = "esapi")]
pub mod devid;
mod error;
#[cfg(feature = "esapi")]
mod esapi;
mod handle;
mod key;
#[cfg(feature = "mock")]
pub mod mock;
#[cfg(feature = "esapi")]
mod objects;
#[cfg(feature = "esapi")]
pub mod provision;
mod secret;
#[cfg(feature = "esapi")]
mod templates;
#[cfg(feature = "esapi")]
pub mod wrapped;

pub use device::TpmDevice;
pub use error::TpmError;
#[cfg(feature = "esapi")]
pub use esapi::{Tpm, TpmKey, DEFAULT_RECHECK};
pub use handle::PersistentHandle;
pub use key::{KeyType, PublicKey};
pub use secret::Password;

/// Something that signs SHA-256 digests with one fixed key.
///
/// Implemented by [`TpmKey`] (swtpm or a real device) and, for unit tests only, by `mock::SoftwareKey`.
pub trait KeySigner: std::fmt::Debug + Send + Sync {
    /// The key's type; it fixes the JWS algorithm.
    fn key_type(&self) -> KeyType;
    /// The public key, as read from the TPM when the key was opened.
    fn public_key(&self) -> &PublicKey;
    /// Signs a SHA-256 digest. Returns the signature in JWS form: RS256 = 256-byte PKCS#1 v1.5 signature,
    /// ES256 = `r || s`, each left-padded to 32 bytes.
    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, TpmError>;
}
