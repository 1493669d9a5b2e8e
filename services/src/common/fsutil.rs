//! Durable, atomic file replacement: a reader sees the old file or the new one, never a partial one, and a
//! crash right after the call returns does not lose the new content.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Writes `data` to `tmp`, fsyncs it, sets `mode`, renames it over `dest`, and fsyncs the directory.
/// `tmp` and `dest` must be in the same directory. On error the destination is untouched and the temporary
/// file is removed.
pub fn write_atomic(dest: &Path, tmp: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let result = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(tmp)?;
        file.write_all(data)?;
        // The mode given to open() is masked by the umask; the published file must be readable by the web server.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(tmp, dest)?;
        if let Some(dir) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        let tmp = dir.path().join("f.tmp");
        std::fs::write(&dest, b"old").unwrap();
        write_atomic(&dest, &tmp, b"new", 0o644).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        assert!(!tmp.exists());
        assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777, 0o644);
    }

    #[test]
    fn failure_leaves_destination_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        std::fs::write(&dest, b"old").unwrap();
        // The temporary file cannot be created: its directory does not exist.
        let tmp = dir.path().join("missing/f.tmp");
        assert!(write_atomic(&dest, &tmp, b"new", 0o644).is_err());
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
    }
}
