//! `vtbulk quota --history SPAN`: what the key spent per UTC day and hour against each
//! window's allowance, its busiest minute, and whether the month will last at the recent
//! pace. Teams sizing a key need the shape of its use over days, not only the present moment.
//!
//! The figures are the spend ledger's (`ledger` in the cache file: every request a run on
//! this cache made, by minute, hour, day and month; 35 days of minutes and hours are kept):
//! this host's use of the key. The month's total is the live `/users` figure when it could be
//! read (everybody's use), else the ledger's; the projection adds this host's recent pace.

use serde::Serialize;
use vtbulk_output::rfc3339;
use vtbulk_quota::{LedgerWindow, Tier, Window};
use vtbulk_store::Store;

/// Spend over a span.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct History {
    /// The first UTC day shown starts here (RFC 3339).
    pub since: String,
    /// Up to this moment (RFC 3339).
    pub until: String,
    /// Where the figures come from.
    pub source: String,
    /// Every UTC day of the span, oldest first (days without spend too).
    pub days: Vec<SpendRow>,
    /// The UTC hours of the span with any spend, oldest first.
    pub hours: Vec<SpendRow>,
    /// The clock minute with the most requests (the earliest of equals), if any.
    pub peak_minute: Option<SpendRow>,
    /// The current month.
    pub month: MonthOutlook,
}

/// One window's spend.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SpendRow {
    /// When the window starts (RFC 3339, UTC).
    pub start: String,
    /// Requests spent in it.
    pub spent: u64,
    /// The window's allowance, when it has one.
    pub allowed: Option<u64>,
    /// `spent / allowed`.
    pub share: Option<f64>,
}

/// The month so far and where the recent pace takes it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MonthOutlook {
    /// `YYYY-MM`.
    pub month: String,
    /// Used so far (live when read, else the ledger's).
    pub used: u64,
    /// The month's allowance.
    pub allowed: Option<u64>,
    /// `used / allowed`.
    pub share: Option<f64>,
    /// This host's requests a day over the span (its last full days and today so far).
    pub recent_per_day: f64,
    /// `used` plus that pace until the month ends.
    pub projected: u64,
    /// When the allowance would run out at that pace (RFC 3339), if before the month ends.
    pub runs_out_at: Option<String>,
    /// When the month ends (RFC 3339).
    pub ends_at: String,
}

fn row(start: i64, spent: u64, allowed: Option<u64>) -> SpendRow {
    SpendRow {
        start: rfc3339(start),
        spent,
        allowed,
        share: allowed.filter(|&a| a > 0).map(|a| spent as f64 / a as f64),
    }
}

/// The history of `key_id` over the `days` UTC days up to `now` (today included), against
/// `caps` (and `per_minute` for the busiest minute); `month_used` is the month's use so far.
pub fn build(
    store: &Store,
    key_id: &str,
    now: i64,
    days: u32,
    caps: &Tier,
    per_minute: Option<u64>,
    month_used: u64,
) -> History {
    let days = i64::from(days.max(1));
    let today = Window::Day.id(now);
    let first_day = today - days + 1;
    let since = first_day * 86_400;
    let rows = |window: LedgerWindow, ids: std::ops::RangeInclusive<i64>| {
        store.spent_rows(key_id, window, ids).unwrap_or_default()
    };
    let by_day: std::collections::BTreeMap<i64, u64> = rows(LedgerWindow::Day, first_day..=today)
        .into_iter()
        .collect();
    let day_rows: Vec<SpendRow> = (first_day..=today)
        .map(|d| row(d * 86_400, by_day.get(&d).copied().unwrap_or(0), caps.daily))
        .collect();
    let hour_rows: Vec<SpendRow> = rows(
        LedgerWindow::Hour,
        since.div_euclid(3600)..=Window::Hour.id(now),
    )
    .into_iter()
    .filter(|&(_, spent)| spent > 0)
    .map(|(h, spent)| row(h * 3600, spent, caps.hourly))
    .collect();
    let peak_minute = rows(
        LedgerWindow::Minute,
        since.div_euclid(60)..=now.div_euclid(60),
    )
    .into_iter()
    .filter(|&(_, spent)| spent > 0)
    // The most requests; the earliest of equals (ids ascend).
    .fold(None::<(i64, u64)>, |best, (m, spent)| match best {
        Some((_, b)) if b >= spent => best,
        _ => Some((m, spent)),
    })
    .map(|(m, spent)| row(m * 60, spent, per_minute));
    // The pace: this host's spend over the span's elapsed time (at least an hour).
    let spent: u64 = by_day.values().sum();
    let elapsed_days = ((now - since) as f64 / 86_400.0).max(1.0 / 24.0);
    let per_day = spent as f64 / elapsed_days;
    let ends = Window::Month.end(now);
    let projected = month_used + (per_day * (ends - now) as f64 / 86_400.0).round() as u64;
    let runs_out_at = caps.monthly.and_then(|allowed| {
        if month_used >= allowed {
            return Some(now);
        }
        (per_day > 0.0)
            .then(|| now + ((allowed - month_used) as f64 / per_day * 86_400.0).ceil() as i64)
            .filter(|&t| t < ends)
    });
    let month_start = jiff::Timestamp::from_second(now)
        .map(|t| t.to_zoned_datetime(jiff::tz::TimeZone::UTC))
        .map_or_else(
            |_| String::new(),
            |z| format!("{:04}-{:02}", z.year(), z.month()),
        );
    History {
        since: rfc3339(since),
        until: rfc3339(now),
        source: "the spend ledger of this cache file (this host's runs)".into(),
        days: day_rows,
        hours: hour_rows,
        peak_minute,
        month: MonthOutlook {
            month: month_start,
            used: month_used,
            allowed: caps.monthly,
            share: caps
                .monthly
                .filter(|&a| a > 0)
                .map(|a| month_used as f64 / a as f64),
            recent_per_day: (per_day * 10.0).round() / 10.0,
            projected,
            runs_out_at: runs_out_at.map(rfc3339),
            ends_at: rfc3339(ends),
        },
    }
}
