//! Claims: processes sharing one cache file pay once for what their lists have in common.
//!
//! Two runs over overlapping lists used to pay twice for the overlap: each checks the cache
//! once, before its first lookup, and each one's answers reach the index only when its
//! segment is imported (at its end). So, just before a lookup, a process asks the store
//! ([`Store::claim`]), in one immediate transaction:
//!
//! 1. the other processes' segments are imported up to their last complete entry, so an
//!    answer another process has already journaled is in the index whether or not that
//!    process has finished (its own segment is not: a process never looks one IOC up twice);
//! 2. a fresh answer in the index is returned instead of a lookup;
//! 3. otherwise a claim held by another live process means it is paying for the lookup
//!    now: [`Claim::Busy`], and the caller comes back later (by then the answer is in that
//!    process's segment, which step 1 imports, or the claim was given up);
//! 4. otherwise the lookup is claimed ([`Claim::Mine`]).
//!
//! The write lock makes the three steps one: a holder's claim cannot vanish between another
//! process's reading of the index and of the claims. A holder journals its answer before it
//! gives the claim up, so a claim given up on an answered IOC always leaves the answer
//! where the next claimant's import finds it; the release can therefore wait for the next
//! batch. Liveness is a lock, not a timer: each claiming process holds an exclusive `flock`
//! on `<cache>-answers/<owner>.owner` for as long as it runs, so the claims of a process
//! that was killed are taken over at once, whatever their age; a live process's claims are
//! never stolen (a process that waits behind one for longer than it will tolerate looks the
//! IOC up itself: the engine's business).
//!
//! Claims are keyed by what was asked: a file by the digest in the input (a process asking
//! for a file's MD5 while another asks for its SHA-256 can both pay, once each, while both
//! are in flight; after that the aliases find it), a URL, domain or IP address by kind and
//! canonical text.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use vtbulk_ioc::Hash;

use crate::answer::{Freshness, Hit, ObjectHit};
use crate::error::sqlite_error;
use crate::files::{Bodies, read_hits};
use crate::import::import_segments;
use crate::sql::write_transaction;
use crate::{Store, StoreError};

/// What a lookup is about, as claims name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClaimKey {
    /// A file, by the digest asked for.
    File(Hash),
    /// A URL (1), domain (2) or IP address (3), by its canonical text.
    Object {
        /// 1 URL, 2 domain, 3 IP.
        kind: u8,
        /// The canonical text.
        id: String,
    },
}

impl ClaimKey {
    /// The row's key: kind 0 and the digest's bytes for a file, the object's kind and text.
    fn row(&self) -> (u8, &[u8]) {
        match self {
            ClaimKey::File(hash) => (0, hash.as_bytes()),
            ClaimKey::Object { kind, id } => (*kind, id.as_bytes()),
        }
    }
}

/// The store's answer to one claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// A fresh answer for a file (with its `data` when asked for): no lookup.
    File(Hit),
    /// A fresh answer for a URL, domain or IP address: no lookup.
    Object(ObjectHit),
    /// Claimed for this process: look it up, then [`Store::claim`] it released.
    Mine,
    /// Another live process is looking it up: ask again later.
    Busy,
}

/// What counts as an answer when claiming.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClaimRules {
    /// How old an answer may be.
    pub freshness: Freshness,
    /// Now (Unix seconds).
    pub now: i64,
    /// Only answers fetched at or after this (a `--refresh` run takes what another process
    /// fetched since it started, nothing older).
    pub since: Option<i64>,
    /// The caller needs VirusTotal's whole answer (`--raw`): an answer stored without it
    /// does not count.
    pub with_data: bool,
}

impl ClaimRules {
    fn usable(&self, fetched_at: i64) -> bool {
        self.since.is_none_or(|since| fetched_at >= since)
    }
}

/// This process as a claim holder: the owner file, locked while it lives.
#[derive(Debug)]
pub(crate) struct Owner {
    pub(crate) name: String,
    path: PathBuf,
    /// Held locked (exclusive) until dropped.
    _lock: File,
}

impl Owner {
    fn create(dir: &Path) -> std::io::Result<Owner> {
        crate::private::create_private_dir(dir)?;
        let name = crate::segment::unique_name();
        let path = owner_path(dir, &name);
        let lock = crate::private::create_new_private(&path)?;
        lock.try_lock().map_err(std::io::Error::other)?;
        Ok(Owner {
            name,
            path,
            _lock: lock,
        })
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn owner_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.owner"))
}

/// True while the process named `name` runs: its owner file is locked. A missing file is a
/// process that is gone (or a name that is not an owner's).
fn alive(dir: &Path, name: &str) -> bool {
    if name.contains(['/', '\0']) {
        return false;
    }
    crate::segment::locked(&owner_path(dir, name))
}

impl Store {
    /// Gives up `releases` (this process's claims, looked up or failed), then answers each
    /// of `keys` in order, in one immediate transaction (see the module's steps): a fresh
    /// answer by `rules`, [`Claim::Mine`], or [`Claim::Busy`].
    pub fn claim(
        &mut self,
        keys: &[ClaimKey],
        releases: &[ClaimKey],
        rules: &ClaimRules,
    ) -> Result<Vec<Claim>, StoreError> {
        if self.owner.is_none() {
            let owner = Owner::create(&self.dir).map_err(|source| StoreError::Io {
                path: self.dir.clone(),
                source,
            })?;
            self.owner = Some(owner);
        }
        let me = self
            .owner
            .as_ref()
            .map(|o| o.name.clone())
            .unwrap_or_default();
        let own_segment = self.writer.as_ref().map(|w| w.id);
        let path = self.path.clone();
        let e = sqlite_error(&path);
        let tx = write_transaction(&mut self.conn).map_err(e)?;
        let (_, sealed_logs) = import_segments(&tx, &self.dir, &path, own_segment)?;
        {
            let mut release = tx
                .prepare_cached("DELETE FROM claims WHERE kind = ?1 AND id = ?2 AND owner = ?3")
                .map_err(e)?;
            for key in releases {
                let (kind, id) = key.row();
                release.execute(params![kind, id, me]).map_err(e)?;
            }
        }
        let (answers, bodies) = known(&tx, &path, keys, rules)?;
        let mut out = take_claims(&tx, &path, &self.dir, &me, keys, answers, rules.now)?;
        tx.commit().map_err(e)?;
        for log in sealed_logs {
            let _ = std::fs::remove_file(log);
        }
        if !bodies.is_empty() {
            // Only `--raw` claims read bodies: the hits are copied out for them alone.
            let mut hits: Vec<Option<Hit>> = out
                .iter()
                .map(|c| match c {
                    Claim::File(hit) => Some(hit.clone()),
                    _ => None,
                })
                .collect();
            self.attach_bodies(&mut hits, bodies);
            for (claim, hit) in out.iter_mut().zip(hits) {
                if let (Claim::File(_), Some(hit)) = (&claim, hit) {
                    *claim = Claim::File(hit);
                }
            }
        }
        Ok(out)
    }

    /// This process's claims given up (the run is over) and those of processes that are
    /// gone; the owner file removed. Part of [`crate::Store::compact`].
    pub(crate) fn end_claims(&mut self) -> Result<(), StoreError> {
        let owner = self.owner.take();
        let path = self.path.clone();
        let e = sqlite_error(&path);
        let any: bool = self
            .conn
            .query_row("SELECT EXISTS (SELECT 1 FROM claims)", [], |r| r.get(0))
            .map_err(e)?;
        if any {
            let tx = write_transaction(&mut self.conn).map_err(e)?;
            let owners: Vec<String> = {
                let mut stmt = tx.prepare("SELECT DISTINCT owner FROM claims").map_err(e)?;
                stmt.query_map([], |r| r.get(0))
                    .map_err(e)?
                    .collect::<Result<_, _>>()
                    .map_err(e)?
            };
            for name in owners {
                let mine = owner.as_ref().is_some_and(|o| o.name == name);
                if mine || !alive(&self.dir, &name) {
                    tx.execute("DELETE FROM claims WHERE owner = ?1", [&name])
                        .map_err(e)?;
                    if !mine && !name.contains(['/', '\0']) {
                        let _ = std::fs::remove_file(owner_path(&self.dir, &name));
                    }
                }
            }
            tx.commit().map_err(e)?;
        }
        // Unlocked and removed only now: until the claims were gone, they were alive.
        drop(owner);
        Ok(())
    }
}

/// Each of `keys` without an `answer`: claimed for `me` (nobody held it, or its holder is
/// gone), or busy (a live process holds it).
fn take_claims(
    tx: &Connection,
    path: &Path,
    dir: &Path,
    me: &str,
    keys: &[ClaimKey],
    answers: Vec<Option<Claim>>,
    now: i64,
) -> Result<Vec<Claim>, StoreError> {
    let e = sqlite_error(path);
    let mut out = Vec::with_capacity(keys.len());
    let mut living: HashMap<String, bool> = HashMap::new();
    // The usual case first: nobody holds it, and the insert is the whole claim.
    let mut take = tx
        .prepare_cached(
            "INSERT INTO claims (kind, id, owner, at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (kind, id) DO NOTHING",
        )
        .map_err(e)?;
    let mut holder = tx
        .prepare_cached("SELECT owner FROM claims WHERE kind = ?1 AND id = ?2")
        .map_err(e)?;
    let mut take_over = tx
        .prepare_cached("UPDATE claims SET owner = ?3, at = ?4 WHERE kind = ?1 AND id = ?2")
        .map_err(e)?;
    for (key, answer) in keys.iter().zip(answers) {
        if let Some(answer) = answer {
            out.push(answer);
            continue;
        }
        let (kind, id) = key.row();
        if take.execute(params![kind, id, me, now]).map_err(e)? == 1 {
            out.push(Claim::Mine);
            continue;
        }
        let held: Option<String> = holder
            .query_row(params![kind, id], |r| r.get(0))
            .optional()
            .map_err(e)?;
        let busy = held.is_some_and(|owner| {
            owner != me
                && *living
                    .entry(owner)
                    .or_insert_with_key(|owner| alive(dir, owner))
        });
        if busy {
            out.push(Claim::Busy);
        } else {
            take_over.execute(params![kind, id, me, now]).map_err(e)?;
            out.push(Claim::Mine);
        }
    }
    Ok(out)
}

/// The fresh answers for `keys` (by `rules`), `None` where there is none, and the file
/// bodies to read after the transaction.
fn known(
    conn: &Connection,
    path: &Path,
    keys: &[ClaimKey],
    rules: &ClaimRules,
) -> Result<(Vec<Option<Claim>>, Bodies), StoreError> {
    let e = sqlite_error(path);
    let files: Vec<(usize, Hash)> = keys
        .iter()
        .enumerate()
        .filter_map(|(i, k)| match k {
            ClaimKey::File(hash) => Some((i, *hash)),
            ClaimKey::Object { .. } => None,
        })
        .collect();
    let mut out: Vec<Option<Claim>> = vec![None; keys.len()];
    let mut bodies = Vec::new();
    if !files.is_empty() {
        let hashes: Vec<Hash> = files.iter().map(|&(_, h)| h).collect();
        let (hits, body_refs) = read_hits(conn, path, &hashes, rules.with_data)?;
        let with_body: std::collections::HashSet<usize> =
            body_refs.iter().map(|&(i, _, _)| i).collect();
        for (j, hit) in hits.into_iter().enumerate() {
            let Some(hit) = hit else { continue };
            let fetched_at = match &hit {
                Hit::Found(f) => f.fetched_at,
                Hit::NotFound { fetched_at } => *fetched_at,
            };
            let whole =
                !rules.with_data || matches!(hit, Hit::NotFound { .. }) || with_body.contains(&j);
            if rules.freshness.is_fresh(&hit, rules.now) && rules.usable(fetched_at) && whole {
                out[files[j].0] = Some(Claim::File(hit));
            }
        }
        for (j, seg, body) in body_refs {
            if out[files[j].0].is_some() {
                bodies.push((files[j].0, seg, body));
            }
        }
    }
    let mut object = conn
        .prepare_cached(
            "SELECT fetched_at, found, summary, body FROM objects WHERE kind = ?1 AND id = ?2",
        )
        .map_err(e)?;
    for (i, key) in keys.iter().enumerate() {
        let ClaimKey::Object { kind, id } = key else {
            continue;
        };
        let hit = object
            .query_row(params![kind, id], |r| {
                let found: bool = r.get(1)?;
                Ok(ObjectHit {
                    fetched_at: r.get(0)?,
                    summary: if found { r.get(2)? } else { None },
                    gzip: if rules.with_data { r.get(3)? } else { None },
                })
            })
            .optional()
            .map_err(e)?;
        let Some(hit) = hit else { continue };
        let whole = !rules.with_data || hit.summary.is_none() || hit.gzip.is_some();
        if rules.freshness.is_fresh_object(&hit, rules.now) && rules.usable(hit.fetched_at) && whole
        {
            out[i] = Some(Claim::Object(hit));
        }
    }
    Ok((out, bodies))
}
