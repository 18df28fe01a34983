//! `vtbulk-store`: the cache of VirusTotal answers, which is also the run's journal.
//!
//! Nightly inputs are mostly the hashes of last night, and a public key has 500 lookups a
//! day, so an answer is never paid for twice: every API answer (found or not found) is
//! committed here before its record is released to the output. A run killed at any moment
//! and started again finds what it already paid for and asks only for the rest.
//!
//! [`Store`] is an embedded SQLite file (rusqlite with its bundled SQLite, so no system
//! library is needed): WAL, so readers never
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
//!
//! One type, [`Store`], its methods by concern: `open` (identity, `schema`, migrations),
//! `files` (file answers and the journal), `objects` (URLs, domains, IP addresses),
//! `import` (journal to index), `claims` (processes sharing the file), `ledger` (spend),
//! `export`, `maintain` (stats, prune); `segment` is the journal's file format.
#![deny(missing_docs)]

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;

use rusqlite::Connection;

mod answer;
mod claims;
mod error;
mod export;
mod files;
mod import;
mod ledger;
mod maintain;
mod objects;
mod open;
mod private;
mod schema;
mod segment;
mod sql;

pub use answer::{Body, FoundFile, Freshness, Hit, ObjectHit, ObjectPut, Put};
pub use claims::{Claim, ClaimKey, ClaimRules};
pub use error::StoreError;
pub use export::Exported;
pub use maintain::{RunRecord, Stats};
pub use open::not_writable;
pub use schema::{APPLICATION_ID, SCHEMA_VERSION};

/// The embedded SQLite store.
#[derive(Debug)]
pub struct Store {
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

#[cfg(test)]
mod tests;
