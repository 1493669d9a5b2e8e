//! `spire-server-attestor-tpm-sign`: takes a SPIRE bundle, has it signed by the local signer-unix and by each
//! co-signer in order, and publishes the result through signer-unix. Two modes: the CLI ([`cli`]) and the SPIRE
//! BundlePublisher plugin ([`publisher`]) served over hashicorp go-plugin ([`goplugin`]). [`devid`] holds DevID
//! provisioning for `tpm_devid` (the `spire-server-attestor-tpm-devid` binary).

pub mod cli;
pub mod devid;
pub mod goplugin;
pub mod hcl;
pub mod hclog;
pub mod pb;
pub mod publisher;

pub use cli::sign_and_publish;
