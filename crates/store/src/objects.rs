//! URLs, domains and IP addresses in the store: one row per canonical text and kind.
//!
//! Their answers are written to the index directly, in one immediate transaction per group
//! commit, not through the segment journal that file answers take (decision 22): they are a
//! small share of a run (a public key's 4 a minute, a premium key's few thousand), and a WAL
//! commit already survives the process being killed, which is what the journal is for. So
//! a run killed mid-way loses none of them that were acknowledged. The summary is the
//! record's attributes (the engine's format, opaque here); the body is VirusTotal's answer
//! gzipped as it came, kept unless the cache keeps summaries only.

use rusqlite::params;

use crate::answer::{Body, ObjectHit, Put};
use crate::error::sqlite_error;
use crate::sql::write_transaction;
use crate::{Store, StoreError};

impl Store {
    /// Writes answers for URLs, domains and IP addresses (a later answer replaces an
    /// earlier one).
    pub(crate) fn put_objects(&mut self, items: &[&Put], now: i64) -> Result<(), StoreError> {
        let path = self.path.clone();
        let e = sqlite_error(&path);
        let tx = write_transaction(&mut self.conn).map_err(e)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO objects (kind, id, fetched_at, found, summary, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(e)?;
            let mut submit = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO submissions (url, analysis, submitted_at)
                     VALUES (?1, ?2, ?3)",
                )
                .map_err(e)?;
            for put in items {
                let item = match put {
                    Put::Object(item) => item,
                    Put::Submission { url, analysis } => {
                        submit.execute(params![url, analysis, now]).map_err(e)?;
                        continue;
                    }
                    _ => continue,
                };
                let gzip = match &item.body {
                    Some(Body::Gzip(z)) => Some(z.as_ref()),
                    _ => None,
                };
                insert
                    .execute(params![
                        item.kind,
                        item.id,
                        now,
                        item.summary.is_some(),
                        item.summary,
                        gzip
                    ])
                    .map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    /// What is known of each `(kind, id)`, in order; bodies only when `with_body`.
    pub fn get_objects(
        &mut self,
        keys: &[(u8, &str)],
        with_body: bool,
    ) -> Result<Vec<Option<ObjectHit>>, StoreError> {
        let path = self.path.clone();
        let e = sqlite_error(&path);
        let sql = if with_body {
            "SELECT fetched_at, found, summary, body FROM objects WHERE kind = ?1 AND id = ?2"
        } else {
            "SELECT fetched_at, found, summary, NULL FROM objects WHERE kind = ?1 AND id = ?2"
        };
        let mut select = self.conn.prepare_cached(sql).map_err(e)?;
        keys.iter()
            .map(|(kind, id)| {
                let row = select.query_row(params![kind, id], |r| {
                    let found: bool = r.get(1)?;
                    Ok(ObjectHit {
                        fetched_at: r.get(0)?,
                        summary: if found { r.get(2)? } else { None },
                        gzip: r.get(3)?,
                    })
                });
                match row {
                    Ok(hit) => Ok(Some(hit)),
                    Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
                    Err(err) => Err(e(err)),
                }
            })
            .collect()
    }

    /// Calls `f` with every stored URL, domain and IP answer (its kind, its text, and the
    /// answer with its gzip body when kept), by kind and text; how many.
    pub fn export_objects(
        &self,
        f: &mut dyn FnMut(u8, &str, ObjectHit) -> std::io::Result<()>,
    ) -> Result<Result<u64, std::io::Error>, StoreError> {
        let e = sqlite_error(&self.path);
        let mut q = self
            .conn
            .prepare(
                "SELECT kind, id, fetched_at, found, summary, body FROM objects ORDER BY kind, id",
            )
            .map_err(e)?;
        let mut rows = q.query([]).map_err(e)?;
        let mut n = 0;
        while let Some(r) = rows.next().map_err(e)? {
            let found: bool = r.get(3).map_err(e)?;
            let kind: u8 = r.get(0).map_err(e)?;
            let id: String = r.get(1).map_err(e)?;
            let at: i64 = r.get(2).map_err(e)?;
            let summary: Option<Vec<u8>> = if found { r.get(4).map_err(e)? } else { None };
            let body: Option<Vec<u8>> = r.get(5).map_err(e)?;
            let hit = ObjectHit {
                fetched_at: at,
                summary,
                gzip: body,
            };
            if let Err(io) = f(kind, &id, hit) {
                return Ok(Err(io));
            }
            n += 1;
        }
        Ok(Ok(n))
    }

    /// URL submissions made since `since` (Unix seconds): URL, analysis id, when.
    pub fn submissions_since(&self, since: i64) -> Result<Vec<(String, String, i64)>, StoreError> {
        let e = sqlite_error(&self.path);
        let mut q = self
            .conn
            .prepare("SELECT url, analysis, submitted_at FROM submissions WHERE submitted_at >= ?1")
            .map_err(e)?;
        let rows = q
            .query_map([since], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(e)?;
        rows.collect::<Result<_, _>>().map_err(e)
    }

    /// Found and not-found objects stored, by kind (1 URL, 2 domain, 3 IP).
    pub fn object_counts(&self) -> Result<Vec<(u8, i64, i64)>, StoreError> {
        let e = sqlite_error(&self.path);
        let mut q = self
            .conn
            .prepare(
                "SELECT kind, sum(found), sum(1 - found) FROM objects GROUP BY kind ORDER BY kind",
            )
            .map_err(e)?;
        let rows = q
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(e)?;
        rows.collect::<Result<_, _>>().map_err(e)
    }
}
