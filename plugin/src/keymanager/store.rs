//! The KeyManager's keys on disk: one SQLite database (`keys.sqlite` in `directory`, 0600) holding, per key ID,
//! the key's type and its TPM-wrapped blobs (its fingerprint is derived from its public key, not stored). Nothing in it is usable off the TPM that made it.
//! A new key for an ID replaces the old one in one transaction, and the old blob is then gone from every file in
//! `directory` (SQLite's `secure_delete` zeroes what it frees, and the write-ahead log is emptied after each
//! change): with it goes the key, for a TPM-wrapped key exists nowhere else. The database file is never opened
//! through a symbolic link.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OpenFlags};
use tpm::wrapped::{WrappedKey, WrappedKind};

/// The database's file name in `directory`.
pub const FILE: &str = "keys.sqlite";

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed.
    #[error("{path}: {cause}")]
    Sqlite {
        /// The database.
        path: PathBuf,
        /// Why.
        cause: rusqlite::Error,
    },
    /// The directory or the file could not be made private.
    #[error("{path}: {cause}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// A stored key that does not parse.
    #[error("{path}: key {id:?}: {reason}")]
    Corrupt {
        /// The database.
        path: PathBuf,
        /// The key ID.
        id: String,
        /// Why.
        reason: String,
    },
}

/// A stored key and its fingerprint ([`Stored::new`] derives it).
#[derive(Debug, Clone)]
pub struct Stored {
    /// The key.
    pub key: WrappedKey,
    /// Its fingerprint (lowercase hex SHA-256 of its SubjectPublicKeyInfo).
    pub fingerprint: String,
}

impl Stored {
    /// `key`, with its fingerprint.
    pub fn new(key: WrappedKey) -> Stored {
        use sha2::Digest;
        let fingerprint = sha2::Sha256::digest(&key.spki_der).iter().map(|b| format!("{b:02x}")).collect();
        Stored { key, fingerprint }
    }
}

/// The database.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
}

fn kind_code(kind: WrappedKind) -> i64 {
    match kind {
        WrappedKind::EcP256 => 1,
        WrappedKind::EcP384 => 2,
        WrappedKind::Rsa2048 => 3,
        WrappedKind::Rsa4096 => 4,
    }
}

fn kind_of(code: i64) -> Option<WrappedKind> {
    match code {
        1 => Some(WrappedKind::EcP256),
        2 => Some(WrappedKind::EcP384),
        3 => Some(WrappedKind::Rsa2048),
        4 => Some(WrappedKind::Rsa4096),
        _ => None,
    }
}

impl Store {
    /// Opens (creating them if needed) `directory` (0700) and its database (0600).
    pub fn open(directory: &Path) -> Result<Store, StoreError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Io { path, cause: source }
        };
        std::fs::create_dir_all(directory).map_err(io(directory))?;
        std::fs::set_permissions(directory, std::fs::Permissions::from_mode(0o700)).map_err(io(directory))?;
        let path = directory.join(FILE);
        let sqlite = |source| StoreError::Sqlite { path: path.clone(), cause: source };
        // No symbolic link is followed; the file is made private before anything is written to it, and the
        // write-ahead log and its index take its mode.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NOFOLLOW
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(sqlite)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io(&path))?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sqlite)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(sqlite)?;
        conn.pragma_update(None, "secure_delete", "ON").map_err(sqlite)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(sqlite)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS keys (
                id TEXT PRIMARY KEY,
                kind INTEGER NOT NULL,
                public BLOB NOT NULL,
                private BLOB NOT NULL,
                created INTEGER NOT NULL
            );",
        )
        .map_err(sqlite)?;
        Ok(Store { path, conn: Mutex::new(conn) })
    }

    fn sqlite(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite { path: self.path.clone(), cause: source }
    }

    /// Every key, by ID.
    pub fn load(&self) -> Result<Vec<(String, Stored)>, StoreError> {
        let conn = common::sync::lock(&self.conn);
        let mut stmt =
            conn.prepare("SELECT id, kind, public, private FROM keys ORDER BY id").map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?, r.get::<_, Vec<u8>>(3)?))
            })
            .map_err(|e| self.sqlite(e))?
            .collect::<Result<Vec<(String, i64, Vec<u8>, Vec<u8>)>, _>>()
            .map_err(|e| self.sqlite(e))?;
        rows.into_iter()
            .map(|(id, code, public, private)| {
                let corrupt = |reason: String| StoreError::Corrupt { path: self.path.clone(), id: id.clone(), reason };
                let kind = kind_of(code).ok_or_else(|| corrupt(format!("unknown key type {code}")))?;
                let key = WrappedKey::from_blobs(kind, public, private).map_err(|e| corrupt(e.to_string()))?;
                Ok((id.clone(), Stored::new(key)))
            })
            .collect()
    }

    /// Stores `stored` under `id`, replacing what was there, durably.
    pub fn put(&self, id: &str, stored: &Stored, now: u64) -> Result<(), StoreError> {
        let conn = common::sync::lock(&self.conn);
        conn.execute(
            "INSERT INTO keys (id, kind, public, private, created) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (id) DO UPDATE SET kind = ?2, public = ?3, private = ?4, created = ?5",
            params![id, kind_code(stored.key.kind), stored.key.public, stored.key.private, now as i64],
        )
        .map_err(|e| self.sqlite(e))?;
        // The log still holds the page with the replaced blob: copied into the database (where `secure_delete`
        // zeroed the old cell) and emptied, it holds nothing.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(|e| self.sqlite(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A `keys.sqlite` planted as a link to another file: refused, and the file it names keeps its bytes and mode.
    #[test]
    fn a_database_planted_as_a_link_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let (km, target) = (dir.path().join("km"), dir.path().join("elsewhere"));
        std::fs::create_dir(&km).unwrap();
        std::fs::write(&target, b"not a database").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&target, km.join(FILE)).unwrap();
        let err = Store::open(&km).unwrap_err();
        assert!(matches!(err, StoreError::Sqlite { .. }), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"not a database");
        assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o644);
        // Without the link, the same directory opens.
        std::fs::remove_file(km.join(FILE)).unwrap();
        Store::open(&km).unwrap();
    }
}
