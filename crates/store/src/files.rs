//! File answers: what the store knows of a hash, and how answers are journaled.
//!
//! A found file is one row keyed by its SHA-256 with its MD5 and SHA-1 as indexed alias keys
//! (a later input of the same file by another hash costs nothing) and a compact summary; the
//! answer itself lies in a segment file (see [`crate::segment`]). A not-found answer is a row
//! keyed by the digest asked for. Writes go to this process's segment ([`Store::put_batch`])
//! and reach the indexed tables when it is imported ([`Store::compact`], `import`).

use std::fs::File;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension};
use vtbulk_ioc::Hash;

use crate::answer::{FoundFile, Hit, Put};
use crate::error::sqlite_error;
use crate::private::create_private_dir;
use crate::segment::{self, BodyRef, Encoding};
use crate::sql::READ_CACHE_KIB;
use crate::{Store, StoreError};

impl Store {
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
    pub(crate) fn attach_bodies(
        &mut self,
        out: &mut [Option<Hit>],
        bodies: Vec<(usize, i64, BodyRef)>,
    ) {
        for (i, seg, body) in bodies {
            let data = self.body(seg, body);
            if let Some(Hit::Found(f)) = &mut out[i] {
                f.data = data;
            }
        }
    }

    /// What is known of one hash, with its `data` object.
    pub fn get(&mut self, hash: &Hash) -> Result<Option<Hit>, StoreError> {
        Ok(self
            .get_many(std::slice::from_ref(hash), true)?
            .pop()
            .flatten())
    }

    /// What is known of each hash, in order (`None`: nothing). `with_data` also reads the
    /// `data` objects (for `--raw`).
    pub fn get_many(
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

    /// Journals answers fetched at `now` (appends to this process's segment; durable against
    /// the process being killed once this returns; visible to lookups after
    /// [`Store::compact`]).
    pub fn put_batch(&mut self, items: &[Put], now: i64) -> Result<(), StoreError> {
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
}

impl Store {
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

/// Answers' bodies to read once a transaction is over: (the answer's index, its segment,
/// where in it).
pub(crate) type Bodies = Vec<(usize, i64, BodyRef)>;

/// Hits for `hashes` (in their order) read in `conn`'s current transaction, and the bodies to
/// read afterwards when `with_data`.
pub(crate) fn read_hits(
    conn: &Connection,
    path: &Path,
    hashes: &[Hash],
    with_data: bool,
) -> Result<(Vec<Option<Hit>>, Bodies), StoreError> {
    let e = sqlite_error(path);
    let mut out = vec![None; hashes.len()];
    let mut bodies: Bodies = Vec::new();
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

/// Reads a digest column (`None` for NULL or a wrong length).
pub(crate) fn digest_column<const N: usize>(
    row: &rusqlite::Row<'_>,
    at: usize,
) -> rusqlite::Result<Option<[u8; N]>> {
    let value = row.get_ref(at)?;
    Ok(value.as_blob_or_null()?.and_then(|b| b.try_into().ok()))
}

/// Reads `body_seg, body_enc, body_off, body_len` starting at column `at`.
pub(crate) fn body_columns(
    row: &rusqlite::Row<'_>,
    at: usize,
) -> rusqlite::Result<Option<(i64, BodyRef)>> {
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
