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
//! attributes a record needs, in the caller's packed form) and where VirusTotal's answer
//! lies: the answer itself, still gzipped as it came, is in a segment file beside the
//! database (see the `segment` module), so any field can be rendered later without a lookup
//! while the database stays small enough to be read through a memory map. A not-found answer
//! is a row keyed by the digest that was asked for. Errors, quota refusals and skips are
//! never stored.
//!
//! Writes are appends to plain files: [`Store::put_batch`] writes the bodies and one
//! checksummed log entry per answer to this process's segment, touching no SQLite page;
//! [`Store::compact`] imports the logs into the indexed tables in one sorted transaction, at
//! the end of a run and whenever the store is opened (so the answers of a killed run are
//! there for the next). Times are Unix seconds passed in by the caller, so tests control the
//! clock.
#![deny(missing_docs)]

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use vtbulk_ioc::Hash;

mod claims;
mod objects;
mod segment;

pub use claims::{Claim, ClaimKey, ClaimRules};
pub use objects::{ObjectHit, ObjectPut};

use segment::{BodyRef, Encoding, Entry};

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
    // 2: bodies and the journal move to segment files (`segments`); `files` points into
    // them. Rows journaled by a killed run of version 1 are kept; version 1's bodies are
    // dropped (their summaries stay, so only `--raw` would look those files up again).
    "CREATE TABLE segments (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        imported_to INTEGER NOT NULL DEFAULT 0,
        sealed INTEGER NOT NULL DEFAULT 0
     );
     CREATE TABLE files_v2 (
        sha256 BLOB PRIMARY KEY,
        md5 BLOB,
        sha1 BLOB,
        fetched_at INTEGER NOT NULL,
        summary BLOB NOT NULL,
        body_seg INTEGER,
        body_enc INTEGER,
        body_off INTEGER,
        body_len INTEGER
     ) WITHOUT ROWID;
     INSERT INTO files_v2 (sha256, md5, sha1, fetched_at, summary)
        SELECT sha256, md5, sha1, fetched_at, summary FROM files WHERE true;
     INSERT INTO files_v2 (sha256, md5, sha1, fetched_at, summary)
        SELECT digest, md5, sha1, fetched_at, summary FROM journal
        WHERE found = 1 ORDER BY digest, id
        ON CONFLICT(sha256) DO UPDATE SET md5 = coalesce(excluded.md5, md5),
            sha1 = coalesce(excluded.sha1, sha1), fetched_at = excluded.fetched_at,
            summary = excluded.summary;
     INSERT INTO missing (digest, fetched_at)
        SELECT digest, fetched_at FROM journal WHERE found = 0 ORDER BY digest, id
        ON CONFLICT(digest) DO UPDATE SET fetched_at = excluded.fetched_at;
     DROP TABLE files;
     DROP TABLE journal;
     DROP TABLE bodies;
     DROP TABLE dicts;
     ALTER TABLE files_v2 RENAME TO files;
     CREATE INDEX files_md5 ON files(md5);
     CREATE INDEX files_sha1 ON files(sha1);",
    // 3: the spend ledger: requests sent per key (by fingerprint, never the key) and window.
    "CREATE TABLE ledger (
        key_id TEXT NOT NULL,
        window TEXT NOT NULL,
        id INTEGER NOT NULL,
        spent INTEGER NOT NULL,
        PRIMARY KEY (key_id, window, id)
     ) WITHOUT ROWID;",
    // 4: URLs, domains and IP addresses (kind 1, 2, 3) by canonical text: found (with the
    // record's attributes and, unless the cache keeps summaries only, the gzip answer) or not.
    "CREATE TABLE objects (
        kind INTEGER NOT NULL,
        id TEXT NOT NULL,
        fetched_at INTEGER NOT NULL,
        found INTEGER NOT NULL,
        summary BLOB,
        body BLOB,
        PRIMARY KEY (kind, id)
     ) WITHOUT ROWID;
     CREATE TABLE submissions (
        url TEXT PRIMARY KEY,
        analysis TEXT NOT NULL,
        submitted_at INTEGER NOT NULL
     ) WITHOUT ROWID;",
    // 5: claims on lookups in flight, so processes sharing the file pay once (see `claims`).
    "CREATE TABLE claims (
        kind INTEGER NOT NULL,
        id BLOB NOT NULL,
        owner TEXT NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (kind, id)
     ) WITHOUT ROWID;",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// True for a not-found row whose digest now names a found file: such rows are left behind
/// by the import (clearing them would cost a B-tree probe per digest per answer), never
/// consulted by lookups (which try `files` first), hidden from `stats` and `export`, and
/// dropped by `prune`.
const SUPERSEDED: &str = "(EXISTS (SELECT 1 FROM files WHERE sha256 = missing.digest)
    OR EXISTS (SELECT 1 FROM files WHERE md5 = missing.digest)
    OR EXISTS (SELECT 1 FROM files WHERE sha1 = missing.digest))";

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
    /// Its MD5, when VirusTotal gave it.
    pub md5: Option<[u8; 16]>,
    /// Its SHA-1, when VirusTotal gave it.
    pub sha1: Option<[u8; 20]>,
    /// When the answer was fetched (Unix seconds).
    pub fetched_at: i64,
    /// The attributes a record needs (the engine's format; opaque here).
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

/// VirusTotal's answer to a file lookup, as it came off the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Gzip-compressed JSON: stored as it is.
    Gzip(bytes::Bytes),
    /// Plain JSON: LZ4-compressed on the way in.
    Json(bytes::Bytes),
}

/// One answer to store.
#[derive(Clone, Debug)]
pub enum Put {
    /// A found file: its three digests, the summary, and the answer.
    Found {
        /// SHA-256.
        sha256: [u8; 32],
        /// MD5, when VirusTotal gave it.
        md5: Option<[u8; 16]>,
        /// SHA-1, when VirusTotal gave it.
        sha1: Option<[u8; 20]>,
        /// The record's attributes (the engine's format; opaque here).
        summary: Vec<u8>,
        /// VirusTotal's answer (`{"data": ...}`) as received.
        body: Option<Body>,
    },
    /// A 404 for this digest.
    NotFound(Hash),
    /// A URL, domain or IP address (found or not): written straight to the index in the
    /// batch's transaction, not to the segment (see [`objects`]).
    Object(ObjectPut),
    /// A URL submitted for scanning (`POST /urls`) and its analysis id, so that a run killed
    /// while it polls picks the analysis up again instead of submitting twice.
    Submission {
        /// The URL as submitted.
        url: String,
        /// VirusTotal's analysis id.
        analysis: String,
    },
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
    /// Bytes of the segment files (the answers as received, and unimported logs).
    pub segment_bytes: u64,
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
    /// A found file with its answer (`data` is `None` when the answer is gone).
    Found(FoundFile),
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
    /// Journals answers fetched at `now` (appends to this process's segment; durable against
    /// the process being killed once this returns; visible to lookups after
    /// [`Store::compact`]).
    fn put_batch(&mut self, items: &[Put], now: i64) -> Result<(), StoreError>;
    /// Records a finished run's figures.
    fn record_run(&mut self, run: RunRecord) -> Result<(), StoreError>;
    /// Seals this process's segment and imports every journaled answer that is complete
    /// into the indexed tables (done on open and at the end of a run); returns how many.
    fn compact(&mut self) -> Result<u64, StoreError>;
    /// Adds requests spent with the key `key_id` (a fingerprint, never the key) to the
    /// ledger: (window name, window id, requests) each. Rows too old to matter go.
    fn add_spend(
        &mut self,
        key_id: &str,
        spends: &[(&str, i64, u64)],
        now: i64,
    ) -> Result<(), StoreError>;
    /// Requests the ledger holds for `key_id` in windows `window` numbered `ids`, and the
    /// first of those windows with any.
    fn spent(
        &mut self,
        key_id: &str,
        window: &str,
        ids: std::ops::RangeInclusive<i64>,
    ) -> Result<(u64, Option<i64>), StoreError>;
}

/// How long the ledger keeps rows of each window (in that window's units): enough for the
/// sliding minute, 35 days of minutes and hours (`quota --history` up to a month), two
/// months of days; months stay. Only windows with spend have a row.
const LEDGER_KEEP: [(&str, i64, i64); 4] = [
    ("second", 1, 120),
    ("minute", 60, 35 * 1440),
    ("hour", 3600, 35 * 24),
    ("day", 86_400, 62),
];

/// The embedded SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// The segment directory (`<file>-answers`).
    dir: PathBuf,
    /// This process's segment, from its first answer until [`Store::compact`].
    writer: Option<segment::Writer>,
    /// Body files opened for reading, by segment id (`None`: gone).
    bodies: HashMap<i64, Option<File>>,
    /// This process as a claim holder, from its first claim until [`Store::compact`].
    owner: Option<claims::Owner>,
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

impl SqliteStore {
    /// The answer stored for a file, decoded to JSON (`None` if its segment is gone).
    fn body(&mut self, seg: i64, body: BodyRef) -> Option<Vec<u8>> {
        if !self.bodies.contains_key(&seg) {
            let name: Option<String> = self
                .conn
                .query_row("SELECT name FROM segments WHERE id = ?1", [seg], |r| {
                    r.get(0)
                })
                .ok();
            let file = name.and_then(|n| File::open(segment::bodies_path(&self.dir, &n)).ok());
            self.bodies.insert(seg, file);
        }
        segment::read_body(self.bodies.get(&seg)?.as_ref()?, body)
    }

    /// Reads the bodies [`read_hits`] pointed at into their hits.
    fn attach_bodies(&mut self, out: &mut [Option<Hit>], bodies: Vec<(usize, i64, BodyRef)>) {
        for (i, seg, body) in bodies {
            let data = self.body(seg, body);
            if let Some(Hit::Found(f)) = &mut out[i] {
                f.data = data;
            }
        }
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
            dir: segment::dir_of(path),
            writer: None,
            bodies: HashMap::new(),
            owner: None,
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
        // The three in one read transaction: another process creating the file commits its
        // tables and its application id together, and two separate reads could straddle
        // that commit (tables seen, id not yet: "another program's database").
        let read = |conn: &Connection| -> rusqlite::Result<(i32, i64, i64)> {
            let tx = conn.unchecked_transaction()?;
            let app: i32 = tx.query_row("PRAGMA application_id", [], |r| r.get(0))?;
            let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            let tables: i64 =
                tx.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
            tx.commit()?;
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

    /// Up to `n` SHA-256s of found files (for `vtbulk probe`: files VirusTotal knows).
    pub fn found_sample(&self, n: usize) -> Result<Vec<[u8; 32]>, StoreError> {
        let e = sqlite_error(&self.path);
        let mut q = self
            .conn
            .prepare("SELECT sha256 FROM files LIMIT ?1")
            .map_err(e)?;
        let rows = q
            .query_map([n as i64], |r| r.get::<_, Vec<u8>>(0))
            .map_err(e)?;
        Ok(rows
            .filter_map(|r| r.ok().and_then(|d| <[u8; 32]>::try_from(d.as_slice()).ok()))
            .collect())
    }

    /// The ledger's rows for `key_id` in windows `window` numbered `ids`: (window id,
    /// requests), in order; windows without spend have none.
    pub fn spent_rows(
        &self,
        key_id: &str,
        window: &str,
        ids: std::ops::RangeInclusive<i64>,
    ) -> Result<Vec<(i64, u64)>, StoreError> {
        let e = sqlite_error(&self.path);
        let mut q = self
            .conn
            .prepare_cached(
                "SELECT id, spent FROM ledger
                 WHERE key_id = ?1 AND window = ?2 AND id BETWEEN ?3 AND ?4 ORDER BY id",
            )
            .map_err(e)?;
        let rows = q
            .query_map(params![key_id, window, ids.start(), ids.end()], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
            })
            .map_err(e)?;
        rows.collect::<Result<_, _>>().map_err(e)
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
            let not_found: i64 = c.query_row(
                &format!("SELECT count(*) FROM missing WHERE NOT {SUPERSEDED}"),
                [],
                |r| r.get(0),
            )?;
            let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            let page: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            let (oldest, newest): (Option<i64>, Option<i64>) = c.query_row(
                &format!(
                    "SELECT min(t), max(t) FROM (SELECT fetched_at AS t FROM files
                     UNION ALL SELECT fetched_at FROM missing WHERE NOT {SUPERSEDED})"
                ),
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
                segment_bytes: std::fs::read_dir(&self.dir).map_or(0, |entries| {
                    entries
                        .filter_map(|e| e.ok()?.metadata().ok())
                        .map(|m| m.len())
                        .sum()
                }),
                oldest,
                newest,
                last_run,
            })
        };
        q().map_err(|e| self.err(e))
    }

    /// Drops answers that are no longer fresh at `now` (and not-found answers superseded by
    /// a found file), and the segments no row points into any more; returns (found, not
    /// found) dropped. A segment that still holds one
    /// fresh answer is kept whole.
    pub fn prune(&mut self, now: i64, freshness: Freshness) -> Result<(u64, u64), StoreError> {
        let path = self.path.clone();
        let e = sqlite_error(&path);
        let tx = write_transaction(&mut self.conn).map_err(e)?;
        let found = tx
            .execute(
                "DELETE FROM files WHERE fetched_at < ?1",
                [now - freshness.found_ttl],
            )
            .map_err(e)?;
        let missing = tx
            .execute(
                &format!("DELETE FROM missing WHERE fetched_at < ?1 OR {SUPERSEDED}"),
                [now - freshness.not_found_ttl],
            )
            .map_err(e)?;
        // URLs, domains and IPs by the same TTLs; URL submissions older than a day.
        let found = found
            + tx.execute(
                "DELETE FROM objects WHERE found = 1 AND fetched_at < ?1",
                [now - freshness.found_ttl],
            )
            .map_err(e)?;
        let missing = missing
            + tx.execute(
                "DELETE FROM objects WHERE found = 0 AND fetched_at < ?1",
                [now - freshness.not_found_ttl],
            )
            .map_err(e)?;
        tx.execute(
            "DELETE FROM submissions WHERE submitted_at < ?1",
            [now - 86_400],
        )
        .map_err(e)?;
        let unused: Vec<(i64, String)> = {
            let mut stmt = tx
                .prepare(
                    "SELECT id, name FROM segments WHERE sealed = 1 AND id NOT IN
                     (SELECT body_seg FROM files WHERE body_seg IS NOT NULL)",
                )
                .map_err(e)?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(e)?
                .collect::<Result<_, _>>()
                .map_err(e)?
        };
        for (id, _) in &unused {
            tx.execute("DELETE FROM segments WHERE id = ?1", [id])
                .map_err(e)?;
        }
        let registered: std::collections::HashSet<String> = {
            let mut stmt = tx.prepare("SELECT name FROM segments").map_err(e)?;
            stmt.query_map([], |r| r.get(0))
                .map_err(e)?
                .collect::<Result<_, _>>()
                .map_err(e)?
        };
        tx.commit().map_err(e)?;
        for (id, name) in unused {
            self.bodies.remove(&id);
            let _ = std::fs::remove_file(segment::bodies_path(&self.dir, &name));
        }
        segment::remove_orphans(&self.dir, &registered);
        Ok((found as u64, missing as u64))
    }

    /// Calls `f` for every stored answer (found files first, by SHA-256); returns how many.
    pub fn export(
        &self,
        f: &mut dyn FnMut(Exported) -> std::io::Result<()>,
    ) -> Result<u64, StoreError> {
        let mut n = 0u64;
        let mut run = || -> rusqlite::Result<std::io::Result<()>> {
            let mut segments: HashMap<i64, Option<File>> = HashMap::new();
            let mut stmt = self.conn.prepare("SELECT id, name FROM segments")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let name: String = row.get(1)?;
                let file = File::open(segment::bodies_path(&self.dir, &name)).ok();
                segments.insert(row.get(0)?, file);
            }
            drop(rows);
            let mut stmt = self.conn.prepare(
                "SELECT sha256, md5, sha1, fetched_at, summary,
                    body_seg, body_enc, body_off, body_len
                 FROM files ORDER BY sha256",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let sha: Vec<u8> = row.get(0)?;
                let Ok(sha256) = <[u8; 32]>::try_from(sha.as_slice()) else {
                    continue;
                };
                let data = body_columns(row, 5)?.and_then(|(seg, body)| {
                    segment::read_body(segments.get(&seg)?.as_ref()?, body)
                });
                if let Err(e) = f(Exported::Found(FoundFile {
                    sha256,
                    md5: digest_column(row, 1)?,
                    sha1: digest_column(row, 2)?,
                    fetched_at: row.get(3)?,
                    summary: row.get(4)?,
                    data,
                })) {
                    return Ok(Err(e));
                }
                n += 1;
            }
            let mut stmt = self.conn.prepare(&format!(
                "SELECT digest, fetched_at FROM missing WHERE NOT {SUPERSEDED} ORDER BY digest"
            ))?;
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

/// Reads a digest column (`None` for NULL or a wrong length).
fn digest_column<const N: usize>(
    row: &rusqlite::Row<'_>,
    at: usize,
) -> rusqlite::Result<Option<[u8; N]>> {
    let value = row.get_ref(at)?;
    Ok(value.as_blob_or_null()?.and_then(|b| b.try_into().ok()))
}

/// Reads `body_seg, body_enc, body_off, body_len` starting at column `at`.
fn body_columns(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Option<(i64, BodyRef)>> {
    let seg: Option<i64> = row.get(at)?;
    let encoding = row
        .get::<_, Option<i64>>(at + 1)?
        .and_then(Encoding::from_i64);
    let (Some(seg), Some(encoding)) = (seg, encoding) else {
        return Ok(None);
    };
    Ok(Some((
        seg,
        BodyRef {
            encoding,
            offset: row.get::<_, i64>(at + 2)? as u64,
            len: row.get::<_, i64>(at + 3)? as u32,
        },
    )))
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
        let (mut out, bodies) = read_hits(&tx, &path, hashes, with_data)?;
        tx.commit().map_err(e)?;
        self.attach_bodies(&mut out, bodies);
        Ok(out)
    }

    fn put_batch(&mut self, items: &[Put], now: i64) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let direct: Vec<&Put> = items
            .iter()
            .filter(|p| matches!(p, Put::Object(_) | Put::Submission { .. }))
            .collect();
        if !direct.is_empty() {
            self.put_objects(&direct, now)?;
            if direct.len() == items.len() {
                return Ok(());
            }
        }
        let writer = match self.writer.take() {
            Some(writer) => writer,
            None => self.new_segment()?,
        };
        let writer = self.writer.insert(writer);
        writer.append(items, now).map_err(|source| StoreError::Io {
            path: self.dir.clone(),
            source,
        })
    }

    fn compact(&mut self) -> Result<u64, StoreError> {
        // This process's segment is sealed: what it holds is imported below, and answers
        // from here on go to a new one.
        self.writer = None;
        let path = self.path.clone();
        let e = sqlite_error(&path);
        let open: i64 = self
            .conn
            .query_row("SELECT count(*) FROM segments WHERE sealed = 0", [], |r| {
                r.get(0)
            })
            .map_err(e)?;
        let mut imported = 0;
        if open > 0 {
            // Under the write lock, so two processes never import the same bytes twice.
            let tx = write_transaction(&mut self.conn).map_err(e)?;
            let sealed_logs;
            (imported, sealed_logs) = import_segments(&tx, &self.dir, &path, None)?;
            tx.commit().map_err(e)?;
            for log in sealed_logs {
                let _ = std::fs::remove_file(log);
            }
        }
        // The answers are in the index: this process's claims go (and a dead one's).
        self.end_claims()?;
        Ok(imported)
    }

    fn add_spend(
        &mut self,
        key_id: &str,
        spends: &[(&str, i64, u64)],
        now: i64,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let e = sqlite_error(&path);
        let tx = write_transaction(&mut self.conn).map_err(e)?;
        {
            let mut add = tx
                .prepare_cached(
                    "INSERT INTO ledger (key_id, window, id, spent) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (key_id, window, id) DO UPDATE SET spent = spent + excluded.spent",
                )
                .map_err(e)?;
            for &(window, id, count) in spends {
                add.execute(params![key_id, window, id, count as i64])
                    .map_err(e)?;
            }
            let mut old = tx
                .prepare_cached("DELETE FROM ledger WHERE window = ?1 AND id < ?2")
                .map_err(e)?;
            for (window, unit, keep) in LEDGER_KEEP {
                old.execute(params![window, now.div_euclid(unit) - keep])
                    .map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    fn spent(
        &mut self,
        key_id: &str,
        window: &str,
        ids: std::ops::RangeInclusive<i64>,
    ) -> Result<(u64, Option<i64>), StoreError> {
        self.conn
            .query_row(
                "SELECT coalesce(sum(spent), 0), min(id) FROM ledger
                 WHERE key_id = ?1 AND window = ?2 AND id BETWEEN ?3 AND ?4",
                params![key_id, window, ids.start(), ids.end()],
                |r| Ok((r.get::<_, i64>(0)?.max(0) as u64, r.get(1)?)),
            )
            .map_err(|e| self.err(e))
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

impl SqliteStore {
    /// Creates this process's segment (two new private files, the log locked) and
    /// registers it; files first, so a segment is never seen unlocked while its writer lives.
    fn new_segment(&mut self) -> Result<segment::Writer, StoreError> {
        let io = |source| StoreError::Io {
            path: self.dir.clone(),
            source,
        };
        create_private_dir(&self.dir).map_err(io)?;
        let name = segment::unique_name();
        let mut writer = segment::Writer::create(&self.dir, &name).map_err(io)?;
        self.conn
            .execute("INSERT INTO segments (name) VALUES (?1)", [&name])
            .map_err(|e| self.err(e))?;
        writer.id = self.conn.last_insert_rowid();
        Ok(writer)
    }
}

/// Imports every complete entry of the unsealed segments (all but `skip`'s) in `tx`, the
/// caller's write transaction, and seals the logs whose writer is gone; returns how many
/// answers were imported and the sealed logs, to delete once the transaction commits.
fn import_segments(
    tx: &Connection,
    dir: &Path,
    path: &Path,
    skip: Option<i64>,
) -> Result<(u64, Vec<PathBuf>), StoreError> {
    let e = sqlite_error(path);
    let segments: Vec<(i64, String, i64)> = {
        let mut stmt = tx
            .prepare_cached(
                "SELECT id, name, imported_to FROM segments WHERE sealed = 0 AND id IS NOT ?1",
            )
            .map_err(e)?;
        stmt.query_map([skip], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(e)?
            .collect::<Result<_, _>>()
            .map_err(e)?
    };
    let mut found = Vec::new();
    let mut missing = Vec::new();
    // The logs' bytes, which the found entries' summaries point into.
    let mut logs: Vec<Vec<u8>> = Vec::new();
    let mut sealed_logs = Vec::new();
    for (id, name, imported_to) in segments {
        let log_path = segment::log_path(dir, &name);
        let log = match File::open(&log_path) {
            Ok(log) => log,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                tx.execute("UPDATE segments SET sealed = 1 WHERE id = ?1", [id])
                    .map_err(e)?;
                continue;
            }
            Err(source) => {
                return Err(StoreError::Io {
                    path: log_path,
                    source,
                });
            }
        };
        // A log nobody holds locked belongs to a writer that is gone: after this import
        // it can only have a torn tail, so it is sealed and removed.
        let writer_gone = log.try_lock().is_ok();
        let read =
            segment::read_log(&log, imported_to as u64).map_err(|source| StoreError::Io {
                path: log_path.clone(),
                source,
            })?;
        let end = read.end;
        found.reserve(read.entries.len());
        for entry in read.entries {
            match entry {
                Entry::Found(file) => found.push((id, logs.len(), file)),
                Entry::NotFound { fetched_at, digest } => missing.push((digest, fetched_at)),
            }
        }
        logs.push(read.data);
        tx.execute(
            "UPDATE segments SET imported_to = ?2, sealed = ?3 WHERE id = ?1",
            params![id, end as i64, writer_gone],
        )
        .map_err(e)?;
        if writer_gone {
            sealed_logs.push(log_path);
        }
    }
    let imported = (found.len() + missing.len()) as u64;
    // In key order, with a page cache big enough that every index page is written once
    // however many answers land on it.
    tx.pragma_update(None, "cache_size", READ_CACHE_KIB)
        .map_err(e)?;
    found.sort_unstable_by_key(|(_, _, file)| (file.sha256, file.fetched_at));
    missing.sort_unstable();
    {
        // The newest answer for a file wins, whatever order segments are imported in.
        let mut upsert = tx
            .prepare_cached(
                "INSERT INTO files (sha256, md5, sha1, fetched_at, summary,
                    body_seg, body_enc, body_off, body_len)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(sha256) DO UPDATE SET md5 = coalesce(excluded.md5, md5),
                    sha1 = coalesce(excluded.sha1, sha1), fetched_at = excluded.fetched_at,
                    summary = excluded.summary, body_seg = excluded.body_seg,
                    body_enc = excluded.body_enc, body_off = excluded.body_off,
                    body_len = excluded.body_len
                 WHERE excluded.fetched_at >= files.fetched_at",
            )
            .map_err(e)?;
        for (seg, log, file) in &found {
            let body = file.body;
            upsert
                .execute(params![
                    &file.sha256[..],
                    file.md5.as_ref().map(|d| &d[..]),
                    file.sha1.as_ref().map(|d| &d[..]),
                    file.fetched_at,
                    &logs[*log][file.summary.clone()],
                    body.map(|_| seg),
                    body.map(|b| b.encoding as i64),
                    body.map(|b| b.offset as i64),
                    body.map(|b| i64::from(b.len)),
                ])
                .map_err(e)?;
        }
        let mut miss = tx
            .prepare_cached(
                "INSERT INTO missing (digest, fetched_at) VALUES (?1, ?2)
                 ON CONFLICT(digest) DO UPDATE SET fetched_at = excluded.fetched_at
                 WHERE excluded.fetched_at >= missing.fetched_at",
            )
            .map_err(e)?;
        for (digest, fetched_at) in &missing {
            miss.execute(params![digest.as_bytes(), fetched_at])
                .map_err(e)?;
        }
    }
    Ok((imported, sealed_logs))
}

/// Hits for `hashes` (in their order) read in `conn`'s current transaction, and the bodies to
/// read afterwards when `with_data` (entry index, segment, where).
#[allow(clippy::type_complexity)]
fn read_hits(
    conn: &Connection,
    path: &Path,
    hashes: &[Hash],
    with_data: bool,
) -> Result<(Vec<Option<Hit>>, Vec<(usize, i64, BodyRef)>), StoreError> {
    let e = sqlite_error(path);
    let mut out = vec![None; hashes.len()];
    let mut bodies: Vec<(usize, i64, BodyRef)> = Vec::new();
    {
        // Two passes, each in key order, so that neighbouring lookups share B-tree pages
        // (callers that sort their whole input make every pass a sequential sweep):
        // 1. MD5 and SHA-1 to SHA-256 through the alias indexes (which hold the SHA-256,
        //    `files` being keyed by it), and the not-found answers of the unresolved;
        // 2. every SHA-256 to its row.
        let mut md5 = conn
            .prepare_cached("SELECT sha256 FROM files WHERE md5 = ?1")
            .map_err(e)?;
        let mut sha1 = conn
            .prepare_cached("SELECT sha256 FROM files WHERE sha1 = ?1")
            .map_err(e)?;
        let mut missing = conn
            .prepare_cached("SELECT fetched_at FROM missing WHERE digest = ?1")
            .map_err(e)?;
        let mut order: Vec<usize> = (0..hashes.len()).collect();
        order.sort_unstable_by(|&a, &b| hashes[a].cmp(&hashes[b]));
        let mut by_sha256: Vec<([u8; 32], usize)> = Vec::with_capacity(hashes.len());
        for i in order {
            let hash = &hashes[i];
            let sha256 = match hash {
                Hash::Sha256(d) => Some(*d),
                Hash::Md5(_) | Hash::Sha1(_) => if matches!(hash, Hash::Md5(_)) {
                    &mut md5
                } else {
                    &mut sha1
                }
                .query_row([hash.as_bytes()], |r| r.get::<_, Vec<u8>>(0))
                .optional()
                .map_err(e)?
                .and_then(|d| <[u8; 32]>::try_from(d.as_slice()).ok()),
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
        let mut file = conn
            .prepare_cached(
                "SELECT fetched_at, summary, md5, sha1,
                    body_seg, body_enc, body_off, body_len
                 FROM files WHERE sha256 = ?1",
            )
            .map_err(e)?;
        for (sha256, i) in by_sha256 {
            let row = file
                .query_row([&sha256[..]], |r| {
                    Ok((
                        FoundFile {
                            sha256,
                            md5: digest_column(r, 2)?,
                            sha1: digest_column(r, 3)?,
                            fetched_at: r.get(0)?,
                            summary: r.get(1)?,
                            data: None,
                        },
                        if with_data { body_columns(r, 4)? } else { None },
                    ))
                })
                .optional()
                .map_err(e)?;
            out[i] = match row {
                Some((file, body)) => {
                    if let Some((seg, body)) = body {
                        bodies.push((i, seg, body));
                    }
                    Some(Hit::Found(file))
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
    Ok((out, bodies))
}

/// A transaction that takes the write lock at once (`BEGIN IMMEDIATE`): another process's
/// writer makes it wait (busy timeout) instead of failing half-way with "database is locked".
fn write_transaction(conn: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
}

/// Runs `f` again while SQLite says the database is busy, up to [`BUSY_TIMEOUT`]: for the
/// few operations its busy handler does not cover.
fn retry_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                #[allow(
                    clippy::disallowed_methods,
                    reason = "the store is blocking by design (callers run it off the runtime or at open), and this waits only while another process opens the same new file"
                )]
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            result => return result,
        }
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

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates `path` (mode 0600), failing if it exists.
pub(crate) fn create_new_private(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
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
