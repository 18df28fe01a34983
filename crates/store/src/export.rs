//! `vtbulk cache export`: every stored file answer, found files first by SHA-256, then the
//! not-found answers (URLs, domains and IP addresses are exported by [`crate::objects`]).

use std::collections::HashMap;
use std::fs::File;

use vtbulk_ioc::Hash;

use crate::answer::FoundFile;
use crate::files::{body_columns, digest_column};
use crate::maintain::SUPERSEDED;
use crate::{Store, StoreError, segment};

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

impl Store {
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
