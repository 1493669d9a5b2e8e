//! The enrollment CA's state, in SQLite (`state-dir/devid-ca.sqlite`): the certificates it issued (serial, EK
//! hash, name, validity), its one-time tokens (hashed), its revocations and its CRL number.
//!
//! How a certificate is issued, so that a crash at any point (kill -9 included) leaves the database consistent:
//! 1. one durable commit reserves a fresh serial (`pending`, unique) and spends the token, if one approved the node;
//! 2. the TPM signs the certificate with that serial;
//! 3. one durable commit stores it (`issued`); only then does the node get it.
//!
//! A crash between 1 and 3 leaves a `pending` row: at the next start it becomes `abandoned` (its certificate never
//! left the process) and its token is unspent again, in one transaction. So no serial is used twice, no token is
//! both spent and unspent, and every certificate a node holds is recorded. Revocations are committed before the
//! command that asks for them returns (`synchronous = FULL`, WAL).
//!
//! Steps 1 and 3 of enrollments arriving together share one transaction and so one fsync (group commit): the
//! first to get the connection commits every write waiting, each in its own savepoint, so that one refused write
//! (a spent token) undoes only itself. None of them is answered before that commit is durable.
//!
//! Invariants: tokens are stored as SHA-256 hashes; every change is atomic (a transaction of its own, or a
//! savepoint of a shared one); every query is bound, never formatted.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, DropBehavior, OpenFlags, OptionalExtension, TransactionBehavior};
use sha2::Digest;

/// Why the database refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// SQLite failed (I/O, a locked database past the busy timeout, corruption).
    #[error("database")]
    Sqlite(#[from] rusqlite::Error),
    /// No such token.
    #[error("unknown enrollment token")]
    UnknownToken,
    /// The token was used already.
    #[error("the enrollment token was used already")]
    SpentToken,
    /// The token expired.
    #[error("the enrollment token expired at {0}")]
    ExpiredToken(u64),
    /// The EK was revoked.
    #[error("EK {0} was revoked: it may not enroll again")]
    RevokedEk(String),
    /// No certificate has this serial.
    #[error("no certificate with serial {0}")]
    UnknownSerial(String),
    /// The certificate being renewed was revoked.
    #[error("certificate {0} was revoked")]
    RevokedCertificate(String),
    /// A revocation committed between the reservation and the issue covers the new certificate.
    #[error("EK {ek} or the renewal line of certificate {serial} was revoked during this enrollment")]
    RevokedSince {
        /// The serial reserved.
        serial: String,
        /// Its EK.
        ek: String,
    },
    /// The certificate being renewed is not one this CA issued to that EK.
    #[error("certificate {serial} was not issued to EK {ek}")]
    OtherEk {
        /// Its serial.
        serial: String,
        /// The EK asking.
        ek: String,
    },
    /// A concurrent reservation took the serial (16 random bytes: never, in practice).
    #[error("serial {0} is taken")]
    SerialTaken(String),
    /// The commit this write shared with others failed: none of them took effect.
    #[error("database: the commit of {writes} writes together failed: {cause}")]
    SharedCommit {
        /// How many writes it carried.
        writes: usize,
        /// SQLite's error.
        cause: Arc<rusqlite::Error>,
    },
    /// The writer that took this write up panicked before committing it (a bug, reported by its panic).
    #[error("database: the write was lost with the thread committing it")]
    Lost,
}

/// How a node was approved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approval {
    /// Its EK is listed in the inventory with this name.
    Inventory,
    /// A one-time token (the token itself, as the node sent it).
    Token(String),
    /// The renewal of the certificate with this serial.
    Renewal(String),
}

/// A token, as looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The name it binds.
    pub name: String,
    /// When it expires.
    pub expires: u64,
}

/// A certificate, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRecord {
    /// Serial, hex.
    pub serial: String,
    /// The EK's hash (`sha256:...`).
    pub ek_hash: String,
    /// The approved name.
    pub name: String,
    /// notBefore.
    pub not_before: u64,
    /// notAfter.
    pub not_after: u64,
    /// `pending`, `issued` or `abandoned`.
    pub state: String,
    /// Whether it is revoked (itself, or its EK).
    pub revoked: bool,
}

/// A token as `token list` shows it (never the token, nor its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The name it binds.
    pub name: String,
    /// When it was created (unix seconds).
    pub created: u64,
    /// When it expires (unix seconds).
    pub expires: u64,
    /// The serial of the reservation or certificate that spent it.
    pub spent_serial: Option<String>,
}

/// A certificate to reserve a serial for.
#[derive(Debug, Clone)]
pub struct Reservation {
    /// The serial, hex.
    pub serial: String,
    /// The EK's hash.
    pub ek_hash: String,
    /// The approved name.
    pub name: String,
    /// notBefore.
    pub not_before: u64,
    /// notAfter.
    pub not_after: u64,
    /// How the node was approved.
    pub approval: Approval,
}

/// A write of an enrollment, which may share its commit with others.
#[derive(Debug)]
enum Write {
    Reserve(Reservation, u64),
    Issue { serial: String, der: Vec<u8> },
}

/// Where the committing thread leaves a waiting write's outcome.
type Slot = Arc<Mutex<Option<Result<(), DbError>>>>;

/// The database: one connection behind a lock (every call is short and runs off the event loop), and the
/// enrollment writes waiting for the next shared commit.
#[derive(Debug)]
pub struct Db {
    conn: Mutex<Connection>,
    waiting: Mutex<Vec<(Write, Slot)>>,
}

fn token_hash(token: &str) -> String {
    sha2::Sha256::digest(token.trim().as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY,
    ek_hash TEXT NOT NULL,
    name TEXT NOT NULL,
    not_before INTEGER NOT NULL,
    not_after INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'issued', 'abandoned')),
    approval TEXT NOT NULL,
    renewed_from TEXT,
    der BLOB,
    reserved_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS certificates_ek ON certificates (ek_hash);
CREATE INDEX IF NOT EXISTS certificates_renewed_from ON certificates (renewed_from);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    spent_at INTEGER,
    spent_serial TEXT
);
CREATE TABLE IF NOT EXISTS revocations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    serial TEXT,
    ek_hash TEXT,
    revoked_at INTEGER NOT NULL,
    CHECK ((serial IS NULL) != (ek_hash IS NULL))
);
CREATE TABLE IF NOT EXISTS crl (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    number INTEGER NOT NULL
);
";

impl Db {
    /// Opens (creating it if needed) the database at `path`. The daemon then calls [`Db::recover`]; the command
    /// line, which may run beside a serving daemon, does not.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        // Never through a symbolic link.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NOFOLLOW
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Db { conn: Mutex::new(conn), waiting: Mutex::new(Vec::new()) })
    }

    /// At the daemon's start, before it serves: every reservation a crash left pending is abandoned and its token
    /// given back (its certificate was never delivered). Returns how many.
    pub fn recover(&self) -> Result<usize, DbError> {
        let abandoned = self.abandon_pending()?;
        if abandoned > 0 {
            tracing::warn!(
                abandoned,
                "certificates reserved but never delivered before a crash: abandoned, their tokens usable again"
            );
        }
        Ok(abandoned)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        common::sync::lock(&self.conn)
    }

    /// Queues `write` and returns once a durable commit holds it (or refused it). Whoever gets the connection
    /// first commits every write queued by then, its own included; the others find their outcome waiting.
    fn grouped(&self, write: Write) -> Result<(), DbError> {
        let slot = Slot::default();
        common::sync::lock(&self.waiting).push((write, slot.clone()));
        let mut conn = self.conn();
        if let Some(done) = common::sync::lock(&slot).take() {
            return done;
        }
        let batch = std::mem::take(&mut *common::sync::lock(&self.waiting));
        let writes = batch.len();
        match commit_together(&mut conn, &batch) {
            Ok(outcomes) => {
                for ((_, s), outcome) in batch.iter().zip(outcomes) {
                    *common::sync::lock(s) = Some(outcome);
                }
            }
            Err(e) => {
                let cause = Arc::new(e);
                for (_, s) in &batch {
                    *common::sync::lock(s) = Some(Err(DbError::SharedCommit { writes, cause: cause.clone() }));
                }
            }
        }
        drop(conn);
        let outcome = common::sync::lock(&slot).take();
        outcome.unwrap_or(Err(DbError::Lost))
    }

    /// Every `pending` reservation becomes `abandoned` and gives its token back; returns how many.
    fn abandon_pending(&self) -> Result<usize, DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE tokens SET spent_at = NULL, spent_serial = NULL
             WHERE spent_serial IN (SELECT serial FROM certificates WHERE state = 'pending')",
            [],
        )?;
        let n = tx.execute("UPDATE certificates SET state = 'abandoned' WHERE state = 'pending'", [])?;
        tx.commit()?;
        Ok(n)
    }

    /// A new one-time token binding `name`, valid for `ttl` from `now`; only its hash is stored.
    pub fn create_token(&self, name: &str, ttl: Duration, now: u64) -> Result<String, DbError> {
        use base64::Engine;
        let mut raw = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut raw);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        self.conn().execute(
            "INSERT INTO tokens (hash, name, created, expires) VALUES (?1, ?2, ?3, ?4)",
            params![token_hash(&token), name, now as i64, now.saturating_add(ttl.as_secs()) as i64],
        )?;
        Ok(token)
    }

    /// The token's name, if it is unspent and unexpired at `now`.
    pub fn token(&self, token: &str, now: u64) -> Result<TokenInfo, DbError> {
        let row: Option<(String, i64, Option<i64>)> = self
            .conn()
            .query_row("SELECT name, expires, spent_at FROM tokens WHERE hash = ?1", params![token_hash(token)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let (name, expires, spent) = row.ok_or(DbError::UnknownToken)?;
        let expires = expires as u64;
        if spent.is_some() {
            return Err(DbError::SpentToken);
        }
        if now >= expires {
            return Err(DbError::ExpiredToken(expires));
        }
        Ok(TokenInfo { name, expires })
    }

    /// Whether EK `ek_hash` was revoked.
    pub fn ek_revoked(&self, ek_hash: &str) -> Result<bool, DbError> {
        Ok(self.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM revocations WHERE ek_hash = ?1)",
            params![ek_hash],
            |r| r.get(0),
        )?)
    }

    /// The certificate with `serial`.
    pub fn certificate(&self, serial: &str) -> Result<Option<CertRecord>, DbError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT serial, ek_hash, name, not_before, not_after, state,
                    EXISTS (SELECT 1 FROM revocations r WHERE r.serial = c.serial OR r.ek_hash = c.ek_hash)
                 FROM certificates c WHERE serial = ?1",
                params![serial],
                record,
            )
            .optional()?)
    }

    /// Every certificate, oldest first.
    pub fn certificates(&self) -> Result<Vec<CertRecord>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT serial, ek_hash, name, not_before, not_after, state,
                EXISTS (SELECT 1 FROM revocations r WHERE r.serial = c.serial OR r.ek_hash = c.ek_hash)
             FROM certificates c ORDER BY reserved_at, serial",
        )?;
        let rows = stmt.query_map([], record)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Every token, oldest first.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, DbError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT name, created, expires, spent_serial FROM tokens ORDER BY created, name")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(TokenRecord {
                    name: r.get(0)?,
                    created: r.get::<_, i64>(1)? as u64,
                    expires: r.get::<_, i64>(2)? as u64,
                    spent_serial: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Step 1: in one transaction, checks the EK is not revoked (and a renewed certificate neither), spends the
    /// token if one approved the node, and reserves the serial.
    pub fn reserve(&self, r: Reservation, now: u64) -> Result<(), DbError> {
        self.grouped(Write::Reserve(r, now))
    }

    /// Step 3: the signed certificate of a reserved serial is stored; it is issued.
    pub fn issue(&self, serial: &str, der: &[u8]) -> Result<(), DbError> {
        self.grouped(Write::Issue { serial: serial.to_owned(), der: der.to_vec() })
    }

    /// A reservation whose signing failed: abandoned, its token unspent again.
    pub fn abandon(&self, serial: &str) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("UPDATE tokens SET spent_at = NULL, spent_serial = NULL WHERE spent_serial = ?1", params![serial])?;
        tx.execute(
            "UPDATE certificates SET state = 'abandoned' WHERE serial = ?1 AND state = 'pending'",
            params![serial],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Revokes the certificate with `serial` (it must be one this CA reserved) and the rest of its renewal line:
    /// the certificates it was renewed from and those renewed from it, pending ones included. They all certify the
    /// same DevID key, and a node must not renew its way back from an older one. Returns how many certificates
    /// the revocation covers.
    pub fn revoke_serial(&self, serial: &str, now: u64) -> Result<usize, DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let known: bool =
            tx.query_row("SELECT EXISTS (SELECT 1 FROM certificates WHERE serial = ?1)", params![serial], |r| {
                r.get(0)
            })?;
        if !known {
            return Err(DbError::UnknownSerial(serial.to_owned()));
        }
        let n = tx.execute(
            "WITH RECURSIVE
                older(serial, renewed_from) AS (
                    SELECT serial, renewed_from FROM certificates WHERE serial = ?1
                    UNION SELECT c.serial, c.renewed_from FROM certificates c JOIN older o ON c.serial = o.renewed_from),
                newer(serial) AS (
                    SELECT ?1
                    UNION SELECT c.serial FROM certificates c JOIN newer n ON c.renewed_from = n.serial)
             INSERT INTO revocations (serial, revoked_at)
             SELECT serial, ?2 FROM (SELECT serial FROM older UNION SELECT serial FROM newer)",
            params![serial, now as i64],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Revokes EK `ek_hash`: every certificate issued to it, and any later enrollment. Returns how many issued
    /// certificates it holds.
    pub fn revoke_ek(&self, ek_hash: &str, now: u64) -> Result<usize, DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("INSERT INTO revocations (ek_hash, revoked_at) VALUES (?1, ?2)", params![ek_hash, now as i64])?;
        let n: i64 = tx.query_row(
            "SELECT COUNT(*) FROM certificates WHERE ek_hash = ?1 AND state = 'issued'",
            params![ek_hash],
            |r| r.get(0),
        )?;
        tx.commit()?;
        Ok(n as usize)
    }

    /// The revoked certificates the CRL lists (revoked themselves or through their EK, issued ones only), with
    /// the time of the earliest revocation that covers each; and a mark that changes with every revocation.
    pub fn revoked(&self) -> Result<(Vec<(String, u64)>, i64), DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT c.serial, MIN(r.revoked_at) FROM certificates c
             JOIN revocations r ON r.serial = c.serial OR r.ek_hash = c.ek_hash
             WHERE c.state = 'issued' GROUP BY c.serial ORDER BY c.serial",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
        let revoked = rows.collect::<Result<Vec<_>, _>>()?;
        let mark: i64 = conn.query_row("SELECT COALESCE(MAX(id), 0) FROM revocations", [], |r| r.get(0))?;
        Ok((revoked, mark))
    }

    /// The next CRL number (only ever increases).
    pub fn next_crl_number(&self) -> Result<u64, DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO crl (id, number) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET number = number + 1",
            [],
        )?;
        let n: i64 = tx.query_row("SELECT number FROM crl WHERE id = 1", [], |r| r.get(0))?;
        tx.commit()?;
        Ok(n as u64)
    }
}

/// Runs every write of `batch` in one transaction, each in its own savepoint: the outcome of each, or the error
/// that kept the whole transaction from committing.
fn commit_together(conn: &mut Connection, batch: &[(Write, Slot)]) -> rusqlite::Result<Vec<Result<(), DbError>>> {
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for (write, _) in batch {
        let mut sp = tx.savepoint()?;
        let outcome = match write {
            Write::Reserve(r, now) => reserve_in(&sp, r, *now),
            Write::Issue { serial, der } => issue_in(&sp, serial, der),
        };
        sp.set_drop_behavior(if outcome.is_ok() { DropBehavior::Commit } else { DropBehavior::Rollback });
        sp.finish()?;
        outcomes.push(outcome);
    }
    tx.commit()?;
    Ok(outcomes)
}

/// Step 1 of one enrollment, inside a shared transaction.
fn reserve_in(tx: &Connection, r: &Reservation, now: u64) -> Result<(), DbError> {
    let ek_revoked: bool =
        tx.query_row("SELECT EXISTS (SELECT 1 FROM revocations WHERE ek_hash = ?1)", params![r.ek_hash], |x| x.get(0))?;
    if ek_revoked {
        return Err(DbError::RevokedEk(r.ek_hash.clone()));
    }
    let (approval, renewed_from) = match &r.approval {
        Approval::Inventory => ("inventory", None),
        Approval::Token(token) => {
            let spent = tx.execute(
                "UPDATE tokens SET spent_at = ?1, spent_serial = ?2
                 WHERE hash = ?3 AND spent_at IS NULL AND expires > ?1",
                params![now as i64, r.serial, token_hash(token)],
            )?;
            if spent != 1 {
                return Err(DbError::SpentToken);
            }
            ("token", None)
        }
        Approval::Renewal(old) => {
            let row: Option<(String, bool)> = tx
                .query_row(
                    "SELECT ek_hash, EXISTS (SELECT 1 FROM revocations r WHERE r.serial = c.serial OR r.ek_hash = c.ek_hash)
                     FROM certificates c WHERE serial = ?1 AND state = 'issued'",
                    params![old],
                    |x| Ok((x.get(0)?, x.get(1)?)),
                )
                .optional()?;
            match row {
                None => return Err(DbError::UnknownSerial(old.clone())),
                Some((_, true)) => return Err(DbError::RevokedCertificate(old.clone())),
                Some((ek, false)) if ek != r.ek_hash => {
                    return Err(DbError::OtherEk { serial: old.clone(), ek: r.ek_hash.clone() })
                }
                Some(_) => ("renewal", Some(old.clone())),
            }
        }
    };
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO certificates
            (serial, ek_hash, name, not_before, not_after, state, approval, renewed_from, reserved_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7, ?8)",
        params![
            r.serial,
            r.ek_hash,
            r.name,
            r.not_before as i64,
            r.not_after as i64,
            approval,
            renewed_from,
            now as i64
        ],
    )?;
    if inserted != 1 {
        return Err(DbError::SerialTaken(r.serial.clone()));
    }
    Ok(())
}

/// Step 3 of one enrollment, inside a shared transaction.
fn issue_in(tx: &Connection, serial: &str, der: &[u8]) -> Result<(), DbError> {
    // A revocation committed since the reservation (of the EK, or of the renewal line) wins: the certificate is
    // not delivered. Committed after this, it finds the certificate issued, and the next CRL lists it.
    let revoked: Option<String> = tx
        .query_row(
            "SELECT c.ek_hash FROM certificates c
             WHERE c.serial = ?1 AND EXISTS (SELECT 1 FROM revocations r WHERE r.serial = c.serial OR r.ek_hash = c.ek_hash)",
            params![serial],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(ek) = revoked {
        return Err(DbError::RevokedSince { serial: serial.to_owned(), ek });
    }
    let n = tx.execute(
        "UPDATE certificates SET der = ?1, state = 'issued' WHERE serial = ?2 AND state = 'pending'",
        params![der, serial],
    )?;
    match n {
        1 => Ok(()),
        _ => Err(DbError::UnknownSerial(serial.to_owned())),
    }
}

fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<CertRecord> {
    Ok(CertRecord {
        serial: r.get(0)?,
        ek_hash: r.get(1)?,
        name: r.get(2)?,
        not_before: r.get::<_, i64>(3)? as u64,
        not_after: r.get::<_, i64>(4)? as u64,
        state: r.get(5)?,
        revoked: r.get(6)?,
    })
}

#[cfg(test)]
mod tests;
