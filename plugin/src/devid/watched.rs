//! Files the server plugin reads again when they change: `devid_crl_path` (the DevID CA's CRL) and
//! `endorsement_hashes_path` (the inventory of EK hashes). Each is looked at (one `stat`) at every attestation and
//! read again when it changed (size, modification time or inode: an atomic rename counts), so an edit takes
//! effect at the next attestation without a SPIRE reload.
//!
//! What the new version says is checked before it is taken: a CRL that does not verify, or is older by CRL number
//! than the one in use, or an inventory that does not parse, is not taken. The last good version stays, and the
//! refusal is logged naming the key. The first version must be good, or the plugin does not configure.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crypto::devid::crl::{Crl, MAX_CRL};
use crypto::devid::ek::Inventory;
use crypto::devid::{Cert, DevIdVerifier};

use crate::config::ConfigError;

/// Largest inventory read (100 000 lines are about 8 MB).
const MAX_INVENTORY: usize = 16 * 1024 * 1024;

/// What identifies one version of a file.
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

/// Reads `path`, at most `max` bytes (one more, so that a larger file is seen as such), with its stamp taken from
/// the open file.
fn read(path: &Path, max: usize) -> Result<(Stamp, Vec<u8>), String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let stamp = Stamp::of(&file.metadata().map_err(|e| e.to_string())?);
    let mut bytes = Vec::new();
    file.take(max as u64 + 1).read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    if bytes.len() > max {
        return Err(format!("larger than the {max} bytes allowed"));
    }
    Ok((stamp, bytes))
}

/// How a watched file's bytes become its value, and whether a new value may replace the one in use.
type Parse<T> = Box<dyn Fn(&[u8]) -> Result<T, String> + Send + Sync>;
type MayReplace<T> = fn(&T, &T) -> bool;

/// A file, and the last good value read from it.
pub struct Watched<T> {
    key: &'static str,
    path: PathBuf,
    max: usize,
    parse: Parse<T>,
    may_replace: MayReplace<T>,
    current: Mutex<(Stamp, Arc<T>)>,
}

impl<T> std::fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched").field("key", &self.key).field("path", &self.path).finish_non_exhaustive()
    }
}

impl<T> Watched<T> {
    fn load(
        key: &'static str,
        path: &Path,
        max: usize,
        parse: Parse<T>,
        may_replace: MayReplace<T>,
    ) -> Result<Watched<T>, ConfigError> {
        let (stamp, bytes) = read(path, max).map_err(|e| ConfigError::file(key, path, e))?;
        let value = parse(&bytes).map_err(|e| ConfigError::file(key, path, e))?;
        Ok(Watched {
            key,
            path: path.to_owned(),
            max,
            parse,
            may_replace,
            current: Mutex::new((stamp, Arc::new(value))),
        })
    }

    /// The value in force: the file's, read again if it changed since, or the last good one.
    pub fn current(&self) -> Arc<T> {
        let mut current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = match std::fs::metadata(&self.path) {
            Ok(meta) => Stamp::of(&meta) != current.0,
            Err(e) => {
                tracing::warn!(key = self.key, path = %self.path.display(), error = %e, "cannot stat the file; keeping the last good version");
                false
            }
        };
        if changed {
            match read(&self.path, self.max) {
                Err(e) => {
                    tracing::warn!(key = self.key, path = %self.path.display(), error = %e, "cannot read the file; keeping the last good version");
                }
                // Not read again until it changes once more: one warning per bad version.
                Ok((stamp, bytes)) => match (self.parse)(&bytes) {
                    Ok(value) if (self.may_replace)(&value, &current.1) => {
                        tracing::info!(key = self.key, path = %self.path.display(), "reloaded");
                        *current = (stamp, Arc::new(value));
                    }
                    Ok(_) => {
                        tracing::warn!(key = self.key, path = %self.path.display(), "another CA's, or older than the version in use (CRL number): not taken; keeping the last good version");
                        current.0 = stamp;
                    }
                    Err(e) => {
                        tracing::warn!(key = self.key, path = %self.path.display(), error = %e, "refused; keeping the last good version");
                        current.0 = stamp;
                    }
                },
            }
        }
        current.1.clone()
    }
}

/// `devid_crl_path`: the CRL, verified against the DevID CAs of `devid_ca_path`.
pub type CrlFile = Watched<Crl>;

impl Watched<Crl> {
    /// Loads the CRL at `path`, verified against `anchors`.
    pub fn crl(path: &Path, anchors: &[Cert]) -> Result<CrlFile, ConfigError> {
        let anchors = anchors.to_vec();
        let parse: Parse<Crl> = Box::new(move |bytes| Crl::parse(bytes, &anchors).map_err(|e| e.to_string()));
        Watched::load("devid_crl_path", path, MAX_CRL, parse, |new, old| new.may_replace(old))
    }
}

/// `endorsement_hashes_path`: the verifier under the EK policy with the inventory the file holds.
pub type HashesFile = Watched<DevIdVerifier>;

impl Watched<DevIdVerifier> {
    /// Loads the inventory at `path` into `base`'s EK policy.
    pub fn inventory(path: &Path, base: DevIdVerifier) -> Result<HashesFile, ConfigError> {
        let parse: Parse<DevIdVerifier> = Box::new(move |bytes| {
            let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
            let inventory = Inventory::parse(text).map_err(|e| e.to_string())?;
            Ok(base.with_policy(base.ek_policy().with_inventory(Some(inventory))))
        });
        Watched::load("endorsement_hashes_path", path, MAX_INVENTORY, parse, |_, _| true)
    }
}
