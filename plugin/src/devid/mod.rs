//! DevID provisioning for SPIRE's `tpm_devid` node attestation: the key is made inside the agent's TPM, its
//! blobs are written in SPIRE's format, and a PKCS#10 request signed inside the TPM goes to the DevID CA; the
//! agent and server NodeAttestor plugins ([`agent`], [`server`]); and `check`, the whole exchange run locally.
//! Everything that opens a TPM is behind the `tpm` feature; the server side needs none.

#[cfg(feature = "tpm")]
pub mod agent;
pub mod ca;
#[cfg(feature = "tpm")]
pub mod check;
#[cfg(feature = "tpm")]
pub mod cli;
#[cfg(feature = "tpm")]
pub mod csr;
#[cfg(feature = "tpm")]
pub mod enroll;
#[cfg(feature = "tpm")]
pub mod provision;
pub mod server;
#[cfg(feature = "tpm")]
pub mod signature;
pub mod watched;
