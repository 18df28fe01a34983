//! Why the store cannot be used. Every message names the file, never a key: a cache path is
//! safe to show, and the store never holds a key (the ledger is keyed by fingerprint).

use std::path::{Path, PathBuf};

use crate::Store;
use crate::schema::SCHEMA_VERSION;

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

/// Maps SQLite's errors during use to [`StoreError::Sqlite`] naming `path`.
pub(crate) fn sqlite_error(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + Copy + '_ {
    move |e| StoreError::Sqlite {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

impl Store {
    /// SQLite's error during use, naming this store's file.
    pub(crate) fn err(&self, e: rusqlite::Error) -> StoreError {
        sqlite_error(&self.path)(e)
    }
}
