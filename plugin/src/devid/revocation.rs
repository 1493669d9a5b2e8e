//! `devid_crl_path`: the DevID CA's CRL, as the server plugin uses it. The file is looked at (one `stat`) at
//! every attestation and read again when it changed (size, modification time or inode: an atomic rename counts),
//! so a revocation takes effect at the next attestation without a SPIRE reload.
//!
//! A CRL that does not verify, or whose CRL number is lower than the one in use, is not taken: the last good
//! CRL stays, and the refusal is logged naming `devid_crl_path`. The first CRL must be good, or the plugin does
//! not configure. A CRL past its nextUpdate refuses its issuer's certificates ([`crypto::devid::crl`]).

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crypto::devid::crl::{Crl, CrlError, MAX_CRL};
use crypto::devid::Cert;

use crate::config::ConfigError;

/// What identifies one version of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp { dev: meta.dev(), ino: meta.ino(), len: meta.len(), mtime: meta.mtime(), mtime_nsec: meta.mtime_nsec() }
    }
}

/// Why the file could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum CrlFileError {
    /// It could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// It is not a CRL this plugin uses.
    #[error("{0}")]
    Crl(#[from] CrlError),
    /// Its CRL number is lower than the one in use: an older CRL put back.
    #[error("its CRL number is lower than the one in use: an older CRL would undo revocations")]
    Older,
}

/// The CRL file and the last good CRL read from it.
#[derive(Debug)]
pub struct CrlFile {
    path: PathBuf,
    anchors: Vec<Cert>,
    current: Mutex<(Stamp, Arc<Crl>)>,
}

/// Reads the file, at most [`MAX_CRL`] bytes, with its stamp taken from the open file.
fn read(path: &Path) -> Result<(Stamp, Vec<u8>), std::io::Error> {
    let file = std::fs::File::open(path)?;
    let stamp = Stamp::of(&file.metadata()?);
    let mut bytes = Vec::new();
    file.take(MAX_CRL as u64 + 1).read_to_end(&mut bytes)?;
    Ok((stamp, bytes))
}

impl CrlFile {
    /// Loads the CRL at `path`, verified against `anchors` (the DevID CAs of `devid_ca_path`).
    pub fn load(path: &Path, anchors: &[Cert]) -> Result<CrlFile, ConfigError> {
        let (stamp, bytes) = read(path).map_err(|e| ConfigError::file("devid_crl_path", path, e))?;
        let crl = Crl::parse(&bytes, anchors).map_err(|e| ConfigError::file("devid_crl_path", path, e))?;
        Ok(CrlFile { path: path.to_owned(), anchors: anchors.to_vec(), current: Mutex::new((stamp, Arc::new(crl))) })
    }

    /// The CRL in force: the file's, read again if it changed since, or the last good one.
    pub fn current(&self) -> Arc<Crl> {
        let mut current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = match std::fs::metadata(&self.path) {
            Ok(meta) => Stamp::of(&meta) != current.0,
            Err(e) => {
                tracing::warn!(devid_crl_path = %self.path.display(), error = %e, "cannot stat the CRL; keeping the last good one");
                false
            }
        };
        if changed {
            match self.reload(&current.1) {
                Ok((stamp, crl)) => {
                    tracing::info!(devid_crl_path = %self.path.display(), issuer = crl.issuer(), revoked = crl.len(), next_update = crl.next_update(), "CRL loaded");
                    *current = (stamp, Arc::new(crl));
                }
                Err((stamp, e)) => {
                    tracing::warn!(devid_crl_path = %self.path.display(), error = %e, "CRL refused; keeping the last good one");
                    // Not read again until it changes once more: one warning per bad version.
                    if let Some(stamp) = stamp {
                        current.0 = stamp;
                    }
                }
            }
        }
        current.1.clone()
    }

    fn reload(&self, current: &Crl) -> Result<(Stamp, Crl), (Option<Stamp>, CrlFileError)> {
        let (stamp, bytes) = read(&self.path).map_err(|e| (None, e.into()))?;
        let crl = Crl::parse(&bytes, &self.anchors).map_err(|e| (Some(stamp), e.into()))?;
        if !crl.may_replace(current) {
            return Err((Some(stamp), CrlFileError::Older));
        }
        Ok((stamp, crl))
    }
}
