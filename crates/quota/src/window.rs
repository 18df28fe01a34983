//! The windows VirusTotal counts a key's requests in, and the ledger's buckets of them.
//!
//! Hour, day and month are calendar windows in UTC ([`Window`]): the day resets at 00:00 UTC,
//! the month at 00:00 UTC on the 1st. The minute is a sliding window the rate limiter keeps;
//! the ledger remembers it as one-second buckets, and clock minutes for the busiest minute of
//! `quota --history` ([`LedgerWindow`]). Both live here, apart from the scheduler and the
//! budgets that use them, so neither of those imports the other for a window.

use crate::rate::Tier;

/// A calendar window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    /// The UTC hour.
    Hour,
    /// The UTC day (resets 00:00 UTC).
    Day,
    /// The UTC month (resets on the 1st, 00:00 UTC).
    Month,
}

impl Window {
    /// Every calendar window, shortest first.
    pub const ALL: [Window; 3] = [Window::Hour, Window::Day, Window::Month];

    /// `hour`, `day`, `month`.
    pub fn name(self) -> &'static str {
        LedgerWindow::from(self).name()
    }

    /// The allowance of this window in `caps`.
    pub fn cap(self, caps: &Tier) -> Option<u64> {
        match self {
            Window::Hour => caps.hourly,
            Window::Day => caps.daily,
            Window::Month => caps.monthly,
        }
    }

    /// The number of the window containing `secs` (hours or days since the epoch; months as
    /// `year * 12 + month - 1`).
    pub fn id(self, secs: i64) -> i64 {
        match self {
            Window::Hour => secs.div_euclid(3600),
            Window::Day => secs.div_euclid(86_400),
            Window::Month => {
                let (y, m) = year_month(secs);
                y * 12 + m - 1
            }
        }
    }

    /// When the window containing `secs` ends (the next one starts), Unix seconds.
    pub fn end(self, secs: i64) -> i64 {
        match self {
            Window::Hour => (secs.div_euclid(3600) + 1) * 3600,
            Window::Day => (secs.div_euclid(86_400) + 1) * 86_400,
            Window::Month => {
                let (y, m) = year_month(secs);
                let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                jiff::civil::Date::new(y as i16, m as i8, 1)
                    .and_then(|d| d.to_zoned_datetime(jiff::tz::TimeZone::UTC))
                    .map_or(i64::MAX, |z| z.timestamp().as_second())
            }
        }
    }
}

/// (year, month) of a UTC time in Unix seconds.
fn year_month(secs: i64) -> (i64, i64) {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.to_zoned_datetime(jiff::tz::TimeZone::UTC))
        .map_or((1970, 1), |z| (i64::from(z.year()), i64::from(z.month())))
}

/// The buckets the spend ledger keeps: the calendar windows, plus one-second buckets for the
/// sliding minute and clock minutes for the busiest minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LedgerWindow {
    /// One-second buckets (Unix seconds), for the sliding minute.
    Second,
    /// Clock minutes (Unix seconds / 60), for the busiest minute of `quota --history`.
    Minute,
    /// The UTC hour.
    Hour,
    /// The UTC day.
    Day,
    /// The UTC month.
    Month,
}

impl LedgerWindow {
    /// The name the ledger stores: `second`, `minute`, `hour`, `day`, `month`.
    pub fn name(self) -> &'static str {
        match self {
            LedgerWindow::Second => "second",
            LedgerWindow::Minute => "minute",
            LedgerWindow::Hour => "hour",
            LedgerWindow::Day => "day",
            LedgerWindow::Month => "month",
        }
    }
}

impl From<Window> for LedgerWindow {
    fn from(window: Window) -> LedgerWindow {
        match window {
            Window::Hour => LedgerWindow::Hour,
            Window::Day => LedgerWindow::Day,
            Window::Month => LedgerWindow::Month,
        }
    }
}

/// 00:00 UTC of a date, Unix seconds (tests).
#[cfg(test)]
pub(crate) fn at(y: i16, m: i8, d: i8) -> i64 {
    jiff::civil::date(y, m, d)
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .expect("valid date")
        .timestamp()
        .as_second()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_end_at_utc_boundaries() {
        let t = at(2026, 11, 30) + 23 * 3600 + 59 * 60;
        assert_eq!(Window::Hour.end(t), at(2026, 12, 1));
        assert_eq!(Window::Day.end(t), at(2026, 12, 1));
        assert_eq!(Window::Month.end(t), at(2026, 12, 1));
        assert_eq!(Window::Month.end(at(2026, 12, 31)), at(2027, 1, 1));
        assert_eq!(Window::Month.end(at(2024, 2, 29)), at(2024, 3, 1));
        assert_eq!(Window::Month.id(at(2026, 12, 1)), 2026 * 12 + 11);
        assert_eq!(Window::Day.id(at(2026, 12, 1)) - Window::Day.id(t), 1);
    }

    #[test]
    fn the_ledger_names_the_calendar_windows_as_they_are_named() {
        let names = Window::ALL.map(Window::name);
        assert_eq!(names, ["hour", "day", "month"]);
        for window in Window::ALL {
            assert_eq!(LedgerWindow::from(window).name(), window.name());
        }
        assert_eq!(LedgerWindow::Second.name(), "second");
        assert_eq!(LedgerWindow::Minute.name(), "minute");
    }
}
