//! Opening a cache file: identity, version, migrations, and the files it is made of.
//!
//! A file that is not a vtbulk cache (another program's SQLite database, or no database at
//! all) or a damaged one is refused before SQLite writes to it; a newer schema is refused; an
//! older one is migrated in one immediate transaction (another process may be migrating the
//! same file). Everything the store creates is private to the user (0700 directories, 0600
//! files).

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::error::sqlite_error;
use crate::private::{create_private_dir, create_private_file};
use crate::schema::{APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION};
use crate::sql::{BUSY_TIMEOUT, retry_busy, write_transaction};
use crate::{Store, StoreError, segment};

pub(crate) const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

impl Store {
    /// Opens (creating with mode 0600 if missing) the cache at `path`. A file that is not a
    /// vtbulk cache, or a damaged one, is an error and is not modified.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(io)?;
        }
        let existing = match std::fs::metadata(path) {
            Ok(m) => m.len() > 0,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create_private_file(path).map_err(io)?;
                false
            }
            Err(e) => return Err(io(e)),
        };
        if existing {
            check_header(path)?;
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let mut store = Store::on(conn, path);
        store.prepare(existing)?;
        Ok(store)
    }

    /// The store of the file at `path` through `conn`, nothing written yet.
    fn on(conn: Connection, path: &Path) -> Store {
        Store {
            conn,
            path: path.to_owned(),
            dir: segment::dir_of(path),
            writer: None,
            bodies: HashMap::new(),
            owner: None,
        }
    }

    /// Opens the cache at `path` for reading only (a file or directory this user may not
    /// write, a read-only mount): nothing is created, migrated, compacted or written, and a
    /// write through it fails. WAL's shared-memory file cannot be made beside a file in a
    /// directory that is not writable; SQLite then reads the file as immutable.
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        check_header(path)?;
        let mut last = None;
        for mode in ["mode=ro", "immutable=1"] {
            let uri = format!("file:{}?{mode}", uri_path(path));
            let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let opened = Connection::open_with_flags(&uri, flags).and_then(|conn| {
                conn.busy_timeout(BUSY_TIMEOUT)?;
                let ids = identity(&conn)?;
                Ok((conn, ids))
            });
            match opened {
                Ok((conn, (app, version, tables))) => {
                    let store = Store::on(conn, path);
                    store.check_identity(true, app, version, tables)?;
                    if version < SCHEMA_VERSION {
                        return Err(StoreError::Corrupt {
                            path: path.to_owned(),
                            reason: format!(
                                "made by an older vtbulk (schema {version}): open it once where \
                                 it can be written, to migrate it, before reading it read-only"
                            ),
                        });
                    }
                    let _ = store.conn.pragma_update(None, "mmap_size", "17179869184");
                    return Ok(store);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(StoreError::Corrupt {
            path: path.to_owned(),
            reason: last.map_or_else(String::new, |e| e.to_string()),
        })
    }

    /// Checks identity and version (read-only), then sets the connection up and migrates.
    fn prepare(&mut self, existing: bool) -> Result<(), StoreError> {
        let corrupt = |e: rusqlite::Error| StoreError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        self.conn.busy_timeout(BUSY_TIMEOUT).map_err(corrupt)?;
        // The three in one read transaction: another process creating the file commits its
        // tables and its application id together, and two separate reads could straddle
        // that commit (tables seen, id not yet: "another program's database").
        let (app, version, tables) = identity(&self.conn).map_err(corrupt)?;
        self.check_identity(existing, app, version, tables)?;
        // Identity checked: from here on the file may be written. A new file gets 16 KiB
        // pages: measured on a 100k-answer import, the WAL then stays under the
        // auto-checkpoint size (4096 pages) and the commit took 30 ms instead of 220 ms.
        if tables == 0 {
            self.conn
                .pragma_update(None, "page_size", 16384)
                .map_err(|e| self.err(e))?;
        }
        // WAL with NORMAL sync: a commit survives the process being killed (the OS has
        // it); a checkpoint every 4096 pages (64 MB), so hot pages reach the database
        // once rather than once per commit. Reads through a memory map (up to 16 GiB of
        // file): a cached re-run of 300k hashes went from 3.4-4.1 s to 2.4-2.8 s, the page
        // copies of `pread` gone.
        for (name, value) in [
            ("journal_mode", "WAL"),
            ("synchronous", "NORMAL"),
            ("wal_autocheckpoint", "4096"),
            ("mmap_size", "17179869184"),
        ] {
            // Switching a new file to WAL takes an exclusive lock, and SQLite answers "database
            // is locked" at once (no busy handler) when another process is opening it too.
            retry_busy(|| self.conn.pragma_update(None, name, value)).map_err(|e| self.err(e))?;
        }
        if version < SCHEMA_VERSION {
            self.migrate()?;
        }
        // Answers journaled by a run that was killed (or is still going) become visible.
        self.compact()?;
        Ok(())
    }

    /// Refuses another program's database and a newer vtbulk's.
    fn check_identity(
        &self,
        existing: bool,
        app: i32,
        version: i64,
        tables: i64,
    ) -> Result<(), StoreError> {
        if existing && app != APPLICATION_ID && (app != 0 || tables > 0) {
            return Err(StoreError::Foreign {
                path: self.path.clone(),
                reason: if app == 0 {
                    "an SQLite database of another program".into()
                } else {
                    format!("an SQLite database with application id {app:#x}")
                },
            });
        }
        if version > SCHEMA_VERSION {
            return Err(StoreError::Newer {
                path: self.path.clone(),
                found: version,
            });
        }
        Ok(())
    }

    /// Applies the missing migrations in one immediate transaction (another process may be
    /// doing the same: the version is read again under the lock).
    fn migrate(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let e = sqlite_error(&path);
        let tx = write_transaction(&mut self.conn).map_err(e)?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(e)?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            tx.execute_batch(sql).map_err(e)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)
                .map_err(e)?;
        }
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(e)?;
        tx.commit().map_err(e)
    }

    /// The path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why the file at `path` cannot be written by this process (`None`: it can, or it does not
/// exist yet and can be created): the file refuses a write open, or its directory (where a
/// cache's WAL files and answers' segments go, and an output's temporary file before its
/// rename) refuses a new file. Nothing is changed:
/// the file is opened without truncation and closed, the probe file removed.
pub fn not_writable(path: &Path) -> Option<String> {
    let denied = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
        )
    };
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(_) => {}
        Err(e) if denied(&e) => return Some(format!("the file is not writable ({e})")),
        Err(_) => return None,
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let probe = dir.join(format!(".vtbulk-write-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            None
        }
        Err(e) if denied(&e) => Some(format!(
            "its directory {} is not writable ({e})",
            dir.display()
        )),
        Err(_) => None,
    }
}

/// The application id, schema version and number of schema objects, in one read transaction
/// (another process creating the file commits its tables and its id together, and two
/// separate reads could straddle that commit: "tables seen, id not yet").
fn identity(conn: &Connection) -> rusqlite::Result<(i32, i64, i64)> {
    let tx = conn.unchecked_transaction()?;
    let app: i32 = tx.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let tables: i64 = tx.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    tx.commit()?;
    Ok((app, version, tables))
}

/// A path as a `file:` URI's path: `%`, `?` and `#` escaped.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3f"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

/// Refuses anything that is not an SQLite database before SQLite opens it.
fn check_header(path: &Path) -> Result<(), StoreError> {
    use std::io::Read;
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    let mut head = [0u8; 18];
    let mut file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let read = file.read(&mut head).map_err(io)?;
    if read < 16 || &head[..16] != SQLITE_MAGIC {
        return Err(StoreError::Foreign {
            path: path.to_owned(),
            reason: "not an SQLite database".into(),
        });
    }
    // SQLite writes whole pages: a file that is not a whole number of its header's pages
    // was cut short (or is not SQLite's). Opening it would let SQLite rewrite its first
    // page (found by fuzzing: a 107-byte file grew to 16 KiB before it was refused).
    let page = match u16::from_be_bytes([head[16], head.get(17).copied().unwrap_or(0)]) {
        1 => 65536,
        n => u64::from(n),
    };
    if read < 18 || !(512..=65536).contains(&page) || !page.is_power_of_two() || len % page != 0 {
        return Err(StoreError::Corrupt {
            path: path.to_owned(),
            reason: format!(
                "damaged: {len} bytes is not a whole number of the header's {page}-byte pages"
            ),
        });
    }
    Ok(())
}
