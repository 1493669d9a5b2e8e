//! DevID provisioning for SPIRE's `tpm_devid` node attestation: the key is made inside the agent's TPM, its
//! blobs are written in SPIRE's format, and a PKCS#10 request signed inside the TPM goes to the DevID CA; the
//! agent and server NodeAttestor plugins ([`agent`], [`server`]); and `check`, the whole exchange run locally.

pub mod agent;
pub mod ca;
pub mod check;
pub mod csr;
pub mod provision;
pub mod server;
