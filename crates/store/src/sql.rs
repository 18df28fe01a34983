//! The SQLite helpers every concern of the store uses: the write transaction that queues
//! behind another process's instead of failing, a retry for what SQLite's busy handler does
//! not cover, and the page cache size of bulk reads.

use rusqlite::Connection;

/// Page cache for lookups, in KiB (as `PRAGMA cache_size` takes it, negated).
pub(crate) const READ_CACHE_KIB: i64 = -262_144;

/// How long a writer waits for another process's transaction before giving up.
pub(crate) const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A transaction that takes the write lock at once (`BEGIN IMMEDIATE`): another process's
/// writer makes it wait (busy timeout) instead of failing half-way with "database is locked".
pub(crate) fn write_transaction(
    conn: &mut Connection,
) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
}

/// Runs `f` again while SQLite says the database is busy, up to [`BUSY_TIMEOUT`]: for the
/// few operations its busy handler does not cover.
pub(crate) fn retry_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                #[expect(
                    clippy::disallowed_methods,
                    reason = "the store is blocking by design (callers run it off the runtime or at open), and this waits only while another process opens the same new file"
                )]
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            result => return result,
        }
    }
}
