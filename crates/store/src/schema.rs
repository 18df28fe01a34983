//! The cache file's schema: its application id and the migrations in order (`PRAGMA
//! user_version` is how many have been applied). Only text here; `open` applies it.

/// `PRAGMA application_id` of a vtbulk cache ("vtbk").
pub const APPLICATION_ID: i32 = 0x7674_626b;

/// Schema migrations; `user_version` is how many have been applied.
pub(crate) const MIGRATIONS: &[&str] = &[
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
