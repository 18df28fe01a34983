//! `vtbulk-store`: the cache of VirusTotal answers, which is also the run's journal.
//!
//! Nightly inputs are mostly the hashes of last night, and a public key has 500 lookups a
//! day, so an answer is never paid for twice: every API answer (found or not found) is
//! committed here before its record is released to the output. A run killed at any moment
//! and started again finds what it already paid for and asks only for the rest.
//!
//! [`Store`] is the interface the engine uses; [`SqliteStore`] is the embedded default
//! (rusqlite with its bundled SQLite, so no system library is needed): WAL, so readers never
//! wait for the writer and two processes can share one file; `BEGIN IMMEDIATE` with a busy
//! timeout, so concurrent writers queue instead of failing with "database is locked"; a
//! versioned schema (`PRAGMA user_version`, migrations in order) and an application id, so a
//! foreign or corrupt file is refused without being touched.
//!
//! A found file is one row keyed by its SHA-256 with its MD5 and SHA-1 as indexed alias keys
//! (a later input of the same file by another hash costs nothing), a compact summary (the
//! attributes a record needs, as JSON) and, in a separate table, VirusTotal's answer as
//! received, LZ4-compressed against a dictionary (the first answer the store kept), so any
//! field can be rendered later without a lookup. A not-found answer is a row keyed by the
//! digest that was asked for. Errors, quota refusals and skips are never stored.
//!
//! Writes are appends: [`Store::put_batch`] adds to `bodies` and `journal`, touching no random
//! index page; [`Store::compact`] moves the journal into the indexed tables in one sorted
//! transaction, at the end of a run and whenever the store is opened (so the answers of a
//! killed run are there for the next). Times are Unix seconds passed in by the caller, so
//! tests control the clock.
#![deny(missing_docs)]

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use vtbulk_ioc::{Hash, HashKind};

/// `PRAGMA application_id` of a vtbulk cache ("vtbk").
pub const APPLICATION_ID: i32 = 0x7674_626b;

/// Schema migrations; `user_version` is how many have been applied.
const MIGRATIONS: &[&str] = &[
    // 1: files with aliases, bodies, not-found answers, the journal, runs.
    "CREATE TABLE files (
        sha256 BLOB PRIMARY KEY,
        md5 BLOB,
        sha1 BLOB,
        fetched_at INTEGER NOT NULL,
        summary BLOB NOT NULL,
        body_id INTEGER
     ) WITHOUT ROWID;
     CREATE INDEX files_md5 ON files(md5);
     CREATE INDEX files_sha1 ON files(sha1);
     CREATE TABLE bodies (id INTEGER PRIMARY KEY, data BLOB NOT NULL, dict_id INTEGER);
     CREATE TABLE dicts (id INTEGER PRIMARY KEY, data BLOB NOT NULL);
     CREATE TABLE journal (
        id INTEGER PRIMARY KEY,
        found INTEGER NOT NULL,
        digest BLOB NOT NULL,
        md5 BLOB,
        sha1 BLOB,
        fetched_at INTEGER NOT NULL,
        summary BLOB,
        body_id INTEGER
     );
     CREATE TABLE missing (digest BLOB PRIMARY KEY, fetched_at INTEGER NOT NULL) WITHOUT ROWID;
     CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        started_at INTEGER NOT NULL,
        finished_at INTEGER NOT NULL,
        unique_hashes INTEGER NOT NULL,
        hits INTEGER NOT NULL,
        lookups INTEGER NOT NULL
     );",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Page cache for lookups, in KiB (as `PRAGMA cache_size` takes it, negated).
const READ_CACHE_KIB: i64 = -262_144;

/// How long a writer waits for another process's transaction before giving up.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Why the store cannot be used. Messages name the file, never a key.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file exists and is not a vtbulk cache: left untouched.
    #[error("{path} is not a vtbulk cache ({reason}); it was left untouched")]
    Foreign {
        /// The file.
        path: PathBuf,
        /// What it looks like.
        reason: String,
    },
    /// The file is a vtbulk cache that SQLite cannot read.
    #[error("the cache {path} is damaged ({reason}); move it away or pass --cache off")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// SQLite's words.
        reason: String,
    },
    /// Written by a newer vtbulk.
    #[error(
        "the cache {path} has schema version {found}, newer than this vtbulk's {SCHEMA_VERSION}"
    )]
    Newer {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: i64,
    },
    /// The file or its directory cannot be created or opened.
    #[error("failed to open the cache {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// SQLite failed during use.
    #[error("cache {path}: {reason}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// SQLite's words.
        reason: String,
    },
}

/// How old an answer may be and still be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freshness {
    /// Seconds a found answer stays fresh (7 days by default).
    pub found_ttl: i64,
    /// Seconds a not-found answer stays fresh (1 day by default).
    pub not_found_ttl: i64,
    /// For one run: nothing older than this many seconds, whatever the TTLs say.
    pub max_age: Option<i64>,
}

impl Default for Freshness {
    fn default() -> Self {
        Freshness {
            found_ttl: 7 * 86_400,
            not_found_ttl: 86_400,
            max_age: None,
        }
    }
}

impl Freshness {
    /// True when `hit`, read at `now`, may be used instead of a lookup.
    pub fn is_fresh(&self, hit: &Hit, now: i64) -> bool {
        let (fetched_at, ttl) = match hit {
            Hit::Found(f) => (f.fetched_at, self.found_ttl),
            Hit::NotFound { fetched_at } => (*fetched_at, self.not_found_ttl),
        };
        let limit = self.max_age.map_or(ttl, |m| m.min(ttl));
        now.saturating_sub(fetched_at) <= limit
    }
}

/// A found file as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundFile {
    /// Its SHA-256.
    pub sha256: [u8; 32],
    /// When the answer was fetched (Unix seconds).
    pub fetched_at: i64,
    /// The attributes a record needs, as JSON (the engine's format; opaque here).
    pub summary: Vec<u8>,
    /// VirusTotal's `data` object, when asked for.
    pub data: Option<Vec<u8>>,
}

/// What the store knows of a hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hit {
    /// VirusTotal knew the file.
    Found(FoundFile),
    /// VirusTotal answered 404 for this digest.
    NotFound {
        /// When (Unix seconds).
        fetched_at: i64,
    },
}

/// One answer to store.
#[derive(Clone, Debug)]
pub enum Put {
    /// A found file: its three digests, the summary, and the `data` object (JSON).
    Found {
        /// SHA-256.
        sha256: [u8; 32],
        /// MD5, when VirusTotal gave it.
        md5: Option<[u8; 16]>,
        /// SHA-1, when VirusTotal gave it.
        sha1: Option<[u8; 20]>,
        /// The record's attributes (opaque JSON).
        summary: Vec<u8>,
        /// VirusTotal's answer as received (JSON), compressed on the way in.
        data: Option<bytes::Bytes>,
    },
    /// A 404 for this digest.
    NotFound(Hash),
}

/// The last run's figures, for `vtbulk cache stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunRecord {
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds.
    pub finished_at: i64,
    /// Unique hashes of the run.
    pub unique_hashes: u64,
    /// Answered from the store.
    pub hits: u64,
    /// Looked up.
    pub lookups: u64,
}

/// What the store holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Found files.
    pub found: u64,
    /// Not-found answers.
    pub not_found: u64,
    /// Bytes of the database file (WAL excluded).
    pub bytes: u64,
    /// Oldest answer (Unix seconds).
    pub oldest: Option<i64>,
    /// Newest answer (Unix seconds).
    pub newest: Option<i64>,
    /// The last run recorded.
    pub last_run: Option<RunRecord>,
}

/// One stored answer, for `vtbulk cache export`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exported {
    /// A found file with its `data` object (JSON).
    Found {
        /// SHA-256.
        sha256: [u8; 32],
        /// When.
        fetched_at: i64,
        /// VirusTotal's `data` object, or the summary when the body is missing.
        data: Vec<u8>,
    },
    /// A not-found answer.
    NotFound {
        /// The digest asked for.
        digest: Hash,
        /// When.
        fetched_at: i64,
    },
}

/// The cache as the engine uses it.
pub trait Store: Send {
    /// What is known of each hash, in order (`None`: nothing). `with_data` also reads the
    /// `data` objects (for `--raw`).
    fn get_many(
        &mut self,
        hashes: &[Hash],
        with_data: bool,
    ) -> Result<Vec<Option<Hit>>, StoreError>;
    /// Journals answers fetched at `now`, in one transaction (appends only; visible to
    /// lookups after [`Store::compact`]).
    fn put_batch(&mut self, items: &[Put], now: i64) -> Result<(), StoreError>;
    /// Records a finished run's figures.
    fn record_run(&mut self, run: RunRecord) -> Result<(), StoreError>;
    /// Moves journaled answers into the indexed tables (done on open and at the end of a
    /// run); returns how many moved.
    fn compact(&mut self) -> Result<u64, StoreError>;
}

/// The embedded SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// The dictionary new bodies are compressed against (id, bytes), once there is one.
    dict: Option<(i64, Vec<u8>)>,
    /// Dictionaries read back for decompression.
    dicts: std::collections::HashMap<i64, std::sync::Arc<[u8]>>,
}

/// The default location: `$XDG_CACHE_HOME/vtbulk/cache.sqlite3`, else
/// `~/.cache/vtbulk/cache.sqlite3`.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("vtbulk").join("cache.sqlite3"))
}

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

fn kind_column(kind: HashKind) -> &'static str {
    match kind {
        HashKind::Md5 => "md5",
        HashKind::Sha1 => "sha1",
        HashKind::Sha256 => "sha256",
    }
}

/// Answers of one service share most of their text (field names, the same 70-odd engine
/// names, versions and verdict words), so bodies are compressed against a dictionary: the
/// first answer the store ever kept. Measured on vt-mock's 12 KB answers: 4.5 KB stored per
/// answer with plain LZ4, 3.3 KB with the dictionary (indexes and summary included).
fn compress(data: &[u8], dict: Option<&[u8]>) -> Vec<u8> {
    match dict {
        Some(dict) => lz4_flex::block::compress_prepend_size_with_dict(data, dict),
        None => lz4_flex::compress_prepend_size(data),
    }
}

fn decompress(z: &[u8], dict: Option<&[u8]>) -> Option<Vec<u8>> {
    match dict {
        Some(dict) => lz4_flex::block::decompress_size_prepended_with_dict(z, dict).ok(),
        None => lz4_flex::decompress_size_prepended(z).ok(),
    }
}

impl SqliteStore {
    /// The dictionary `id` (cached after the first read).
    fn dict_bytes(&mut self, id: i64) -> Option<std::sync::Arc<[u8]>> {
        if !self.dicts.contains_key(&id) {
            let data: Vec<u8> = self
                .conn
                .query_row("SELECT data FROM dicts WHERE id = ?1", [id], |r| r.get(0))
                .ok()?;
            self.dicts.insert(id, data.into());
        }
        self.dicts.get(&id).cloned()
    }

    /// Decompresses a stored body.
    fn body(&mut self, z: &[u8], dict_id: Option<i64>) -> Option<Vec<u8>> {
        match dict_id {
            Some(id) => decompress(z, Some(&self.dict_bytes(id)?)),
            None => decompress(z, None),
        }
    }

    /// The dictionary for new bodies: the newest stored, else `sample` becomes the first.
    fn ensure_dict(&mut self, sample: &[u8]) -> Result<(), StoreError> {
        if self.dict.is_some() {
            return Ok(());
        }
        let newest = self
            .conn
            .query_row(
                "SELECT id, data FROM dicts ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let dict = match newest {
            Some(found) => found,
            None => {
                self.conn
                    .execute("INSERT INTO dicts (data) VALUES (?1)", [sample])
                    .map_err(|e| self.err(e))?;
                (self.conn.last_insert_rowid(), sample.to_vec())
            }
        };
        self.dict = Some(dict);
        Ok(())
    }
}

impl SqliteStore {
    /// Opens (creating with mode 0600 if missing) the cache at `path`. A file that is not a
    /// vtbulk cache, or a damaged one, is an error and is not modified.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
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
        let mut store = SqliteStore {
            conn,
            path: path.to_owned(),
            dict: None,
            dicts: std::collections::HashMap::new(),
        };
        store.prepare(existing)?;
        Ok(store)
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        sqlite_error(&self.path)(e)
    }

    /// Checks identity and version (read-only), then sets the connection up and migrates.
    fn prepare(&mut self, existing: bool) -> Result<(), StoreError> {
        let corrupt = |e: rusqlite::Error| StoreError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        self.conn.busy_timeout(BUSY_TIMEOUT).map_err(corrupt)?;
        let read = |conn: &Connection| -> rusqlite::Result<(i32, i64, i64)> {
            let app: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
            let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            let tables: i64 =
                conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
            Ok((app, version, tables))
        };
        let (app, version, tables) = read(&self.conn).map_err(corrupt)?;
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
        // Identity checked: from here on the file may be written. A new file gets 16 KiB
        // pages: a compressed answer (4-5 KB) then fits a page with others instead of
        // spilling into overflow pages, which halves the WAL frames written per answer.
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
            self.conn
                .pragma_update(None, name, value)
                .map_err(|e| self.err(e))?;
        }
        if version < SCHEMA_VERSION {
            self.migrate()?;
        }
        // Answers journaled by a run that was killed (or is still going) become visible.
        self.compact()?;
        Ok(())
    }

    /// Applies the missing migrations in one immediate transaction (another process may be
    /// doing the same: the version is read again under the lock).
    fn migrate(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let e = sqlite_error(&path);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(e)?;
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

    /// Sets the connection up for a stream of small appending transactions: SQLite's
    /// default page cache, since a large one costs time at every commit (measured: 7% of
    /// the journal's CPU spent truncating a 64 MB page cache).
    pub fn for_appends(&mut self) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "cache_size", -2000)
            .map_err(|e| self.err(e))
    }

    /// The path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What is known of one hash, with its `data` object.
    pub fn get(&mut self, hash: &Hash) -> Result<Option<Hit>, StoreError> {
        Ok(self
            .get_many(std::slice::from_ref(hash), true)?
            .pop()
            .flatten())
    }

    /// Counts, size, age range and the last run.
    pub fn stats(&self) -> Result<Stats, StoreError> {
        let q = || -> rusqlite::Result<Stats> {
            let c = &self.conn;
            let found: i64 = c.query_row("SELECT count(*) FROM files", [], |r| r.get(0))?;
            let not_found: i64 = c.query_row("SELECT count(*) FROM missing", [], |r| r.get(0))?;
            let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            let page: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            let (oldest, newest): (Option<i64>, Option<i64>) = c.query_row(
                "SELECT min(t), max(t) FROM (SELECT fetched_at AS t FROM files
                 UNION ALL SELECT fetched_at FROM missing)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let last_run = c
                .query_row(
                    "SELECT started_at, finished_at, unique_hashes, hits, lookups FROM runs
                     ORDER BY id DESC LIMIT 1",
                    [],
                    |r| {
                        Ok(RunRecord {
                            started_at: r.get(0)?,
                            finished_at: r.get(1)?,
                            unique_hashes: r.get::<_, i64>(2)? as u64,
                            hits: r.get::<_, i64>(3)? as u64,
                            lookups: r.get::<_, i64>(4)? as u64,
                        })
                    },
                )
                .optional()?;
            Ok(Stats {
                found: found as u64,
                not_found: not_found as u64,
                bytes: (pages * page) as u64,
                oldest,
                newest,
                last_run,
            })
        };
        q().map_err(|e| self.err(e))
    }

    /// Drops answers that are no longer fresh at `now`; returns (found, not found) dropped.
    pub fn prune(&mut self, now: i64, freshness: Freshness) -> Result<(u64, u64), StoreError> {
        let path = self.path.clone();
        let e = sqlite_error(&path);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(e)?;
        let found_before = now - freshness.found_ttl;
        tx.execute(
            "DELETE FROM bodies WHERE id IN (SELECT body_id FROM files WHERE fetched_at < ?1)",
            [found_before],
        )
        .map_err(e)?;
        let found = tx
            .execute("DELETE FROM files WHERE fetched_at < ?1", [found_before])
            .map_err(e)?;
        let missing = tx
            .execute(
                "DELETE FROM missing WHERE fetched_at < ?1",
                [now - freshness.not_found_ttl],
            )
            .map_err(e)?;
        tx.commit().map_err(e)?;
        Ok((found as u64, missing as u64))
    }

    /// Calls `f` for every stored answer (found files first, by SHA-256); returns how many.
    pub fn export(
        &self,
        f: &mut dyn FnMut(Exported) -> std::io::Result<()>,
    ) -> Result<u64, StoreError> {
        let mut n = 0u64;
        let mut run = || -> rusqlite::Result<std::io::Result<()>> {
            let mut dicts = std::collections::HashMap::new();
            let mut stmt = self.conn.prepare("SELECT id, data FROM dicts")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                dicts.insert(row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?);
            }
            drop(rows);
            let mut stmt = self.conn.prepare(
                "SELECT f.sha256, f.fetched_at, b.data, f.summary, b.dict_id FROM files f
                 LEFT JOIN bodies b ON b.id = f.body_id ORDER BY f.sha256",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let sha: Vec<u8> = row.get(0)?;
                let Ok(sha256) = <[u8; 32]>::try_from(sha.as_slice()) else {
                    continue;
                };
                let data = match row.get::<_, Option<Vec<u8>>>(2)? {
                    Some(z) => {
                        let dict = row.get::<_, Option<i64>>(4)?.and_then(|id| dicts.get(&id));
                        decompress(&z, dict.map(Vec::as_slice)).unwrap_or_default()
                    }
                    None => row.get(3)?,
                };
                if let Err(e) = f(Exported::Found {
                    sha256,
                    fetched_at: row.get(1)?,
                    data,
                }) {
                    return Ok(Err(e));
                }
                n += 1;
            }
            let mut stmt = self
                .conn
                .prepare("SELECT digest, fetched_at FROM missing ORDER BY digest")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let digest: Vec<u8> = row.get(0)?;
                let Some(digest) = Hash::from_digest(&digest) else {
                    continue;
                };
                if let Err(e) = f(Exported::NotFound {
                    digest,
                    fetched_at: row.get(1)?,
                }) {
                    return Ok(Err(e));
                }
                n += 1;
            }
            Ok(Ok(()))
        };
        match run() {
            Ok(Ok(())) => Ok(n),
            Ok(Err(io)) => Err(StoreError::Io {
                path: self.path.clone(),
                source: io,
            }),
            Err(e) => Err(self.err(e)),
        }
    }
}

impl Store for SqliteStore {
    fn get_many(
        &mut self,
        hashes: &[Hash],
        with_data: bool,
    ) -> Result<Vec<Option<Hit>>, StoreError> {
        let path = self.path.clone();
        let e = sqlite_error(&path);
        // One read transaction for the batch: one snapshot, one lock. Reads are random over
        // the whole file, so they get a larger page cache than the writer needs.
        self.conn
            .pragma_update(None, "cache_size", READ_CACHE_KIB)
            .map_err(e)?;
        let tx = self.conn.transaction().map_err(e)?;
        let mut out = vec![None; hashes.len()];
        let mut bodies: Vec<(usize, Vec<u8>, Option<i64>)> = Vec::new();
        {
            // Two passes, each in key order, so that neighbouring lookups share B-tree pages
            // (callers that sort their whole input make every pass a sequential sweep):
            // 1. MD5 and SHA-1 to SHA-256 through the alias indexes (which hold the SHA-256,
            //    `files` being keyed by it), and the not-found answers of the unresolved;
            // 2. every SHA-256 to its row.
            let mut alias = [HashKind::Md5, HashKind::Sha1].map(|k| {
                tx.prepare_cached(&format!(
                    "SELECT sha256 FROM files WHERE {} = ?1",
                    kind_column(k)
                ))
            });
            let mut missing = tx
                .prepare_cached("SELECT fetched_at FROM missing WHERE digest = ?1")
                .map_err(e)?;
            let mut order: Vec<usize> = (0..hashes.len()).collect();
            order.sort_unstable_by(|&a, &b| hashes[a].cmp(&hashes[b]));
            let mut by_sha256: Vec<([u8; 32], usize)> = Vec::with_capacity(hashes.len());
            for i in order {
                let hash = &hashes[i];
                let sha256 = match hash {
                    Hash::Sha256(d) => Some(*d),
                    Hash::Md5(_) | Hash::Sha1(_) => {
                        let slot = usize::from(matches!(hash, Hash::Sha1(_)));
                        let stmt = alias[slot].as_mut().map_err(|x| StoreError::Sqlite {
                            path: self.path.clone(),
                            reason: x.to_string(),
                        })?;
                        stmt.query_row([hash.as_bytes()], |r| r.get::<_, Vec<u8>>(0))
                            .optional()
                            .map_err(e)?
                            .and_then(|d| <[u8; 32]>::try_from(d.as_slice()).ok())
                    }
                };
                match sha256 {
                    Some(d) => by_sha256.push((d, i)),
                    None => {
                        out[i] = missing
                            .query_row([hash.as_bytes()], |r| r.get::<_, i64>(0))
                            .optional()
                            .map_err(e)?
                            .map(|fetched_at| Hit::NotFound { fetched_at });
                    }
                }
            }
            by_sha256.sort_unstable();
            let mut file = tx
                .prepare_cached("SELECT body_id, fetched_at, summary FROM files WHERE sha256 = ?1")
                .map_err(e)?;
            let mut body = tx
                .prepare_cached("SELECT data, dict_id FROM bodies WHERE id = ?1")
                .map_err(e)?;
            for (sha256, i) in by_sha256 {
                let row = file
                    .query_row([&sha256[..]], |r| {
                        Ok((
                            r.get::<_, Option<i64>>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, Vec<u8>>(2)?,
                        ))
                    })
                    .optional()
                    .map_err(e)?;
                out[i] = match row {
                    Some((body_id, fetched_at, summary)) => {
                        if let Some(id) = body_id.filter(|_| with_data)
                            && let Some((z, dict_id)) = body
                                .query_row([id], |r| {
                                    Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Option<i64>>(1)?))
                                })
                                .optional()
                                .map_err(e)?
                        {
                            bodies.push((i, z, dict_id));
                        }
                        Some(Hit::Found(FoundFile {
                            sha256,
                            fetched_at,
                            summary,
                            data: None,
                        }))
                    }
                    // A SHA-256 never stored: perhaps a 404 for it.
                    None => missing
                        .query_row([&sha256[..]], |r| r.get::<_, i64>(0))
                        .optional()
                        .map_err(e)?
                        .map(|fetched_at| Hit::NotFound { fetched_at }),
                };
            }
        }
        tx.commit().map_err(e)?;
        for (i, z, dict_id) in bodies {
            let data = self.body(&z, dict_id);
            if let Some(Hit::Found(f)) = &mut out[i] {
                f.data = data;
            }
        }
        Ok(out)
    }

    fn put_batch(&mut self, items: &[Put], now: i64) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        if let Some(sample) = items.iter().find_map(|i| match i {
            Put::Found { data: Some(d), .. } => Some(d.clone()),
            _ => None,
        }) {
            self.ensure_dict(&sample)?;
        }
        let dict = self.dict.clone();
        let path = self.path.clone();
        let e = sqlite_error(&path);
        // Appends only (bodies, journal): no random index page is touched per answer.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(e)?;
        {
            let mut body = tx
                .prepare_cached("INSERT INTO bodies (data, dict_id) VALUES (?1, ?2)")
                .map_err(e)?;
            let mut entry = tx
                .prepare_cached(
                    "INSERT INTO journal (found, digest, md5, sha1, fetched_at, summary, body_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(e)?;
            for item in items {
                match item {
                    Put::Found {
                        sha256,
                        md5,
                        sha1,
                        summary,
                        data,
                    } => {
                        let body_id = match data {
                            Some(data) => {
                                let (dict_id, dict) = match &dict {
                                    Some((id, d)) => (Some(*id), Some(d.as_slice())),
                                    None => (None, None),
                                };
                                body.execute(params![compress(data, dict), dict_id])
                                    .map_err(e)?;
                                Some(tx.last_insert_rowid())
                            }
                            None => None,
                        };
                        entry
                            .execute(params![
                                1,
                                &sha256[..],
                                md5.as_ref().map(|d| &d[..]),
                                sha1.as_ref().map(|d| &d[..]),
                                now,
                                summary,
                                body_id
                            ])
                            .map_err(e)?;
                    }
                    Put::NotFound(hash) => {
                        entry
                            .execute(params![
                                0,
                                hash.as_bytes(),
                                None::<&[u8]>,
                                None::<&[u8]>,
                                now,
                                None::<&[u8]>,
                                None::<i64>
                            ])
                            .map_err(e)?;
                    }
                }
            }
        }
        tx.commit().map_err(e)
    }

    fn compact(&mut self) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let e = sqlite_error(&path);
        let pending: i64 = self
            .conn
            .query_row("SELECT count(*) FROM journal", [], |r| r.get(0))
            .map_err(e)?;
        if pending == 0 {
            return Ok(0);
        }
        // One transaction, in key order, with a page cache big enough that every index page
        // is written once however many answers land on it.
        self.conn
            .pragma_update(None, "cache_size", READ_CACHE_KIB)
            .map_err(e)?;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(e)?;
        tx.execute_batch(
            "DELETE FROM bodies WHERE id IN (
                SELECT f.body_id FROM files f JOIN journal j ON j.digest = f.sha256
                WHERE j.found = 1 AND f.body_id IS NOT j.body_id);
             INSERT INTO files (sha256, md5, sha1, fetched_at, summary, body_id)
                SELECT digest, md5, sha1, fetched_at, summary, body_id FROM journal
                WHERE found = 1 ORDER BY digest, id
                ON CONFLICT(sha256) DO UPDATE SET md5 = coalesce(excluded.md5, md5),
                    sha1 = coalesce(excluded.sha1, sha1), fetched_at = excluded.fetched_at,
                    summary = excluded.summary, body_id = excluded.body_id;
             INSERT INTO missing (digest, fetched_at)
                SELECT digest, fetched_at FROM journal WHERE found = 0 ORDER BY digest, id
                ON CONFLICT(digest) DO UPDATE SET fetched_at = excluded.fetched_at;
             DELETE FROM missing WHERE digest IN (
                SELECT digest FROM journal WHERE found = 1
                UNION ALL SELECT md5 FROM journal WHERE found = 1 AND md5 IS NOT NULL
                UNION ALL SELECT sha1 FROM journal WHERE found = 1 AND sha1 IS NOT NULL);
             DELETE FROM journal;",
        )
        .map_err(e)?;
        tx.commit().map_err(e)?;
        Ok(pending as u64)
    }

    fn record_run(&mut self, run: RunRecord) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO runs (started_at, finished_at, unique_hashes, hits, lookups)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    run.started_at,
                    run.finished_at,
                    run.unique_hashes as i64,
                    run.hits as i64,
                    run.lookups as i64
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}

/// Maps SQLite's errors during use to [`StoreError::Sqlite`] naming `path`.
fn sqlite_error(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + Copy + '_ {
    move |e| StoreError::Sqlite {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// Refuses anything that is not an SQLite database before SQLite opens it.
fn check_header(path: &Path) -> Result<(), StoreError> {
    use std::io::Read;
    let mut head = [0u8; 16];
    let read = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|source| StoreError::Io {
            path: path.to_owned(),
            source,
        })?;
    if read < 16 || &head != SQLITE_MAGIC {
        return Err(StoreError::Foreign {
            path: path.to_owned(),
            reason: "not an SQLite database".into(),
        });
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        // Another process created it first: fine.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
