//! `spire-server-attestor-tpm-sign`: takes a SPIRE bundle, has it signed by the local signer-unix and by each
//! co-signer in order, and publishes the result through signer-unix. Two modes: the CLI ([`cli`]) and the SPIRE
//! BundlePublisher plugin ([`publisher`]) served over hashicorp go-plugin ([`goplugin`]). [`devid`] holds SPIRE's
//! `tpm_devid`: DevID provisioning and `check` (the `spire-server-attestor-tpm-devid` binary) and the agent and
//! server NodeAttestor plugins (`spire-agent-nodeattestor-tpm-devid`, `spire-server-nodeattestor-tpm-devid`).
//! [`keymanager`] holds the KeyManager plugins (`spire-agent-keymanager-tpm`, `spire-server-keymanager-tpm`).

pub mod cli;
pub mod config;
pub mod devid;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod goplugin;
pub mod hcl;
pub mod hclog;
#[cfg(feature = "tpm")]
pub mod keymanager;
pub mod keyset_update;
pub mod pb;
pub mod publisher;
pub mod stream;

pub use cli::sign_and_publish;
