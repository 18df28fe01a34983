//! Keeping the file healthy and saying what it holds: counts and sizes (`cache stats`), the
//! runs' figures, dropping what is no longer fresh (`cache prune`), and a sample of known
//! files (for `vtbulk probe`).

use rusqlite::{OptionalExtension, params};

use crate::answer::Freshness;
use crate::error::sqlite_error;
use crate::sql::write_transaction;
use crate::{Store, StoreError, segment};

/// True for a not-found row whose digest now names a found file: such rows are left behind
/// by the import (clearing them would cost a B-tree probe per digest per answer), never
/// consulted by lookups (which try `files` first), hidden from `stats` and `export`, and
/// dropped by `prune`.
pub(crate) const SUPERSEDED: &str = "(EXISTS (SELECT 1 FROM files WHERE sha256 = missing.digest)
    OR EXISTS (SELECT 1 FROM files WHERE md5 = missing.digest)
    OR EXISTS (SELECT 1 FROM files WHERE sha1 = missing.digest))";

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

impl Store {
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

    /// Records a finished run's figures.
    pub fn record_run(&mut self, run: RunRecord) -> Result<(), StoreError> {
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
