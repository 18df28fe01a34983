//! Importing journaled answers into the indexed tables: at the end of a run, whenever the
//! store is opened (so a killed run's answers are there for the next), and, for the other
//! processes' segments, just before a claim (see [`crate::claims`]).
//!
//! One sorted transaction under the write lock, so two processes never import the same bytes
//! twice and every index page is written once however many answers land on it.

use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

use crate::error::sqlite_error;
use crate::segment::{self, Entry, FoundEntry};
use crate::sql::READ_CACHE_KIB;
use crate::sql::write_transaction;
use crate::{Store, StoreError};

impl Store {
    /// Seals this process's segment and imports every journaled answer that is complete
    /// into the indexed tables (done on open and at the end of a run); returns how many.
    pub fn compact(&mut self) -> Result<u64, StoreError> {
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
}

/// What the unsealed segments hold past what was imported: the found answers (their segment,
/// the log whose bytes their summaries point into, the entry), the not-found answers, and the
/// logs' bytes.
#[derive(Default)]
struct Pending {
    found: Vec<(i64, usize, FoundEntry)>,
    missing: Vec<(vtbulk_ioc::Hash, i64)>,
    logs: Vec<Vec<u8>>,
}

/// Imports every complete entry of the unsealed segments (all but `skip`'s) in `tx`, the
/// caller's write transaction, and seals the logs whose writer is gone; returns how many
/// answers were imported and the sealed logs, to delete once the transaction commits.
pub(crate) fn import_segments(
    tx: &Connection,
    dir: &Path,
    path: &Path,
    skip: Option<i64>,
) -> Result<(u64, Vec<PathBuf>), StoreError> {
    let (mut pending, sealed_logs) = read_segments(tx, dir, path, skip)?;
    let imported = (pending.found.len() + pending.missing.len()) as u64;
    write_answers(tx, path, &mut pending)?;
    Ok((imported, sealed_logs))
}

/// Reads the unsealed segments' new entries, moving each segment's mark past them (and
/// sealing a log whose writer is gone, returned to be deleted after the commit).
fn read_segments(
    tx: &Connection,
    dir: &Path,
    path: &Path,
    skip: Option<i64>,
) -> Result<(Pending, Vec<PathBuf>), StoreError> {
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
    let mut pending = Pending::default();
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
        pending.found.reserve(read.entries.len());
        for entry in read.entries {
            match entry {
                Entry::Found(file) => pending.found.push((id, pending.logs.len(), file)),
                Entry::NotFound { fetched_at, digest } => {
                    pending.missing.push((digest, fetched_at))
                }
            }
        }
        pending.logs.push(read.data);
        tx.execute(
            "UPDATE segments SET imported_to = ?2, sealed = ?3 WHERE id = ?1",
            params![id, end as i64, writer_gone],
        )
        .map_err(e)?;
        if writer_gone {
            sealed_logs.push(log_path);
        }
    }
    Ok((pending, sealed_logs))
}

/// Writes the answers into the indexed tables, in key order, with a page cache big enough
/// that every index page is written once however many answers land on it. The newest answer
/// for a file wins, whatever order segments are imported in.
fn write_answers(tx: &Connection, path: &Path, pending: &mut Pending) -> Result<(), StoreError> {
    let e = sqlite_error(path);
    tx.pragma_update(None, "cache_size", READ_CACHE_KIB)
        .map_err(e)?;
    pending
        .found
        .sort_unstable_by_key(|(_, _, file)| (file.sha256, file.fetched_at));
    pending.missing.sort_unstable();
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
    for (seg, log, file) in &pending.found {
        let body = file.body;
        upsert
            .execute(params![
                &file.sha256[..],
                file.md5.as_ref().map(|d| &d[..]),
                file.sha1.as_ref().map(|d| &d[..]),
                file.fetched_at,
                &pending.logs[*log][file.summary.clone()],
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
    for (digest, fetched_at) in &pending.missing {
        miss.execute(params![digest.as_bytes(), fetched_at])
            .map_err(e)?;
    }
    Ok(())
}
