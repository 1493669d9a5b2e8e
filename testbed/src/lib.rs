//! Dev-only harnesses: real swtpm processes, real nginx, the project's real binaries.
//!
//! Everything here starts processes it owns, waits for readiness instead of sleeping, and kills exactly the
//! processes it started (by PID) when dropped. Nothing here is linked into a shipped binary.

pub mod agent;
pub mod devid;
pub mod devid_ca;
pub mod devid_scenario;
pub mod fleet;
pub mod ha;
pub mod heal;
pub mod host;
pub mod keys_in_tpm;
pub mod load;
pub mod logs;
pub mod nginx;
pub mod pki;
pub mod ports;
pub mod process;
pub mod real_spire;
pub mod single;
pub mod spire;
pub mod swtpm;
pub mod vm;
pub mod wait;
