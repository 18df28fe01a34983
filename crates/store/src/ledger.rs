//! The spend ledger: requests sent per key (by fingerprint, never the key) and window, so
//! that back-to-back runs know what the earlier ones spent when VirusTotal's live quotas
//! cannot be read, and `quota --history` can show the spend over a month.
//!
//! Windows are quota's [`LedgerWindow`]: the calendar hour, day and month, one-second buckets
//! for the sliding minute, and clock minutes for the busiest minute.

use rusqlite::params;
use vtbulk_quota::LedgerWindow;

use crate::error::sqlite_error;
use crate::sql::write_transaction;
use crate::{Store, StoreError};

/// How long the ledger keeps rows of each window (in that window's units): enough for the
/// sliding minute, 35 days of minutes and hours (`quota --history` up to a month), two
/// months of days; months stay. Only windows with spend have a row.
const LEDGER_KEEP: [(LedgerWindow, i64, i64); 4] = [
    (LedgerWindow::Second, 1, 120),
    (LedgerWindow::Minute, 60, 35 * 1440),
    (LedgerWindow::Hour, 3600, 35 * 24),
    (LedgerWindow::Day, 86_400, 62),
];

impl Store {
    /// Adds requests spent with the key `key_id` (a fingerprint, never the key) to the
    /// ledger: (window, window id, requests) each. Rows too old to matter go.
    pub fn add_spend(
        &mut self,
        key_id: &str,
        spends: &[(LedgerWindow, i64, u64)],
        now: i64,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let e = sqlite_error(&path);
        let tx = write_transaction(&mut self.conn).map_err(e)?;
        {
            let mut add = tx
                .prepare_cached(
                    "INSERT INTO ledger (key_id, window, id, spent) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (key_id, window, id) DO UPDATE SET spent = spent + excluded.spent",
                )
                .map_err(e)?;
            for &(window, id, count) in spends {
                add.execute(params![key_id, window.name(), id, count as i64])
                    .map_err(e)?;
            }
            let mut old = tx
                .prepare_cached("DELETE FROM ledger WHERE window = ?1 AND id < ?2")
                .map_err(e)?;
            for (window, unit, keep) in LEDGER_KEEP {
                old.execute(params![window.name(), now.div_euclid(unit) - keep])
                    .map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    /// Requests the ledger holds for `key_id` in windows `window` numbered `ids`, and the
    /// first of those windows with any.
    pub fn spent(
        &mut self,
        key_id: &str,
        window: LedgerWindow,
        ids: std::ops::RangeInclusive<i64>,
    ) -> Result<(u64, Option<i64>), StoreError> {
        self.conn
            .query_row(
                "SELECT coalesce(sum(spent), 0), min(id) FROM ledger
                 WHERE key_id = ?1 AND window = ?2 AND id BETWEEN ?3 AND ?4",
                params![key_id, window.name(), ids.start(), ids.end()],
                |r| Ok((r.get::<_, i64>(0)?.max(0) as u64, r.get(1)?)),
            )
            .map_err(|e| self.err(e))
    }

    /// The ledger's rows for `key_id` in windows `window` numbered `ids`: (window id,
    /// requests), in order; windows without spend have none.
    pub fn spent_rows(
        &self,
        key_id: &str,
        window: LedgerWindow,
        ids: std::ops::RangeInclusive<i64>,
    ) -> Result<Vec<(i64, u64)>, StoreError> {
        let e = sqlite_error(&self.path);
        let mut q = self
            .conn
            .prepare_cached(
                "SELECT id, spent FROM ledger
                 WHERE key_id = ?1 AND window = ?2 AND id BETWEEN ?3 AND ?4 ORDER BY id",
            )
            .map_err(e)?;
        let rows = q
            .query_map(
                params![key_id, window.name(), ids.start(), ids.end()],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?.max(0) as u64)),
            )
            .map_err(e)?;
        rows.collect::<Result<_, _>>().map_err(e)
    }
}
