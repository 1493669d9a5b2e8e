//! Durable, atomic file replacement that never writes through a link: a reader sees the old file or the new one,
//! never a partial one; a crash right after the call returns does not lose the new content; and nobody who can
//! write the target's directory (a web root's deploy user, say) can redirect the write.
//!
//! The temporary file is created exclusively (`O_CREAT | O_EXCL`, which refuses any existing name, a symlink
//! included) with a random name in the target's directory, its mode is set on the open descriptor, and it is
//! renamed over the target, which replaces a link planted at the target's name instead of following it. The
//! result is always a regular file created by this process.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes `data` to a fresh temporary file named `<prefix>.<random>` next to `dest`, fsyncs it, sets `mode`,
/// renames it over `dest`, and fsyncs the directory. On error `dest` is untouched and the temporary file is gone.
pub fn write_atomic(dest: &Path, prefix: &str, data: &[u8], mode: u32) -> std::io::Result<()> {
    replace(dest, prefix, data, mode, false)
}

/// [`write_atomic`] for a file a web server publishes: the new file's modification time is also made later than
/// the old one's by at least a second. Web servers derive `ETag` and `Last-Modified` from the mtime in whole
/// seconds and the size, so a token replaced within the same second by one of the same length would otherwise be
/// answered `304 Not Modified` to every node that fetched the old one, until the next publish.
pub fn publish_atomic(dest: &Path, prefix: &str, data: &[u8], mode: u32) -> std::io::Result<()> {
    replace(dest, prefix, data, mode, true)
}

fn replace(dest: &Path, prefix: &str, data: &[u8], mode: u32, newer: bool) -> std::io::Result<()> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new().prefix(&format!("{prefix}.")).rand_bytes(12).tempfile_in(dir)?;
    file.write_all(data)?;
    // On the descriptor, not the path: the mode given at creation is masked by the umask, and the published file
    // must be readable by the web server.
    file.as_file().set_permissions(std::fs::Permissions::from_mode(mode))?;
    if newer {
        let now = std::time::SystemTime::now();
        let after_old = std::fs::metadata(dest)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|old| old.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|old| std::time::UNIX_EPOCH + std::time::Duration::from_secs(old.as_secs() + 1));
        file.as_file().set_modified(after_old.filter(|t| *t > now).unwrap_or(now))?;
    }
    file.as_file().sync_all()?;
    file.persist(dest).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        std::fs::write(&dest, b"old").unwrap();
        write_atomic(&dest, "f.tmp", b"new", 0o644).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777, 0o644);
        assert_eq!(leftovers(dir.path()), ["f"]);
    }

    #[test]
    fn failure_leaves_destination_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        std::fs::write(&dest, b"old").unwrap();
        // The target's name is a non-empty directory: the rename fails after the temporary file was written.
        let blocked = dir.path().join("d");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("x"), b"").unwrap();
        assert!(write_atomic(&blocked, "d.tmp", b"new", 0o644).is_err());
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        assert_eq!(leftovers(dir.path()), ["d", "f"], "a temporary file was left behind");
        // The directory itself does not exist.
        assert!(write_atomic(&dir.path().join("missing/f"), "f.tmp", b"new", 0o644).is_err());
    }

    /// Two publishes of same-sized tokens within one second: the second must look modified to a web server.
    #[test]
    fn a_republished_file_always_looks_modified() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("t");
        let mut last = None;
        for data in [b"aaaa", b"bbbb", b"cccc"] {
            publish_atomic(&dest, "t.tmp", data, 0o644).unwrap();
            let mtime = std::fs::metadata(&dest).unwrap().mtime();
            if let Some(prev) = last {
                assert!(mtime > prev, "mtime {mtime} not after {prev}: a web server would answer 304");
            }
            last = Some(mtime);
        }
        assert_eq!(std::fs::read(&dest).unwrap(), b"cccc");
    }

    /// The attack on the old code: a link planted at the fixed temporary name made the publish overwrite the
    /// link's target (as root) and chmod it 0644; a link at the published name was followed by readers.
    #[test]
    fn planted_links_are_never_written_through() {
        // Both writers: the state files' and the one signer-unix's /publish (and `sign keys --out`) use.
        type Writer = fn(&Path, &str, &[u8], u32) -> std::io::Result<()>;
        for (name, write) in [("write_atomic", write_atomic as Writer), ("publish_atomic", publish_atomic)] {
            let dir = tempfile::tempdir().unwrap();
            let victim = dir.path().join("victim");
            std::fs::write(&victim, b"precious").unwrap();
            std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
            let www = dir.path().join("www");
            std::fs::create_dir(&www).unwrap();
            let dest = www.join("spiffetrustbundle.token");
            // The old fixed temporary name, and the published name itself, both point at the victim.
            symlink(&victim, www.join("spiffetrustbundle.token.tmp")).unwrap();
            symlink(&victim, &dest).unwrap();
            write(&dest, "spiffetrustbundle.token.tmp", b"token", 0o644).unwrap();
            assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "{name}: the victim was overwritten");
            assert_eq!(std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777, 0o600, "{name}: chmod");
            let meta = std::fs::symlink_metadata(&dest).unwrap();
            assert!(meta.file_type().is_file(), "{name}: the published file is not a regular file");
            assert_eq!(std::fs::read(&dest).unwrap(), b"token", "{name}");
            assert_eq!(meta.permissions().mode() & 0o777, 0o644, "{name}: the mode asked for");
            // The planted temporary-name link is left alone (not followed, not used).
            let tmp = std::fs::symlink_metadata(www.join("spiffetrustbundle.token.tmp")).unwrap();
            assert!(tmp.file_type().is_symlink(), "{name}");
        }
    }
}
