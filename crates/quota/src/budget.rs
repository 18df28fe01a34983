//! What a key may still spend: usage at a moment, the reserve left for its other users, the
//! calendar arithmetic of the UTC windows, and the spend records the ledger keeps.
//!
//! VirusTotal counts hour, day and month as calendar windows in UTC (the day resets at 00:00
//! UTC, the month at 00:00 UTC on the 1st); the minute is a sliding window the rate limiter
//! keeps. A window's budget is `allowed - used - reserve`, where `used` is everybody's spend
//! (read live from `GET /users/{key}`) or, when that cannot be read, ours from the ledger.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use serde::Serialize;

use crate::rate::{Rate, Tier};
use crate::window::{LedgerWindow, Window};

/// Requests spent in the hour, day and month containing `at`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// The moment, Unix seconds.
    pub at: i64,
    /// Spent in that UTC hour.
    pub hour: u64,
    /// Spent in that UTC day.
    pub day: u64,
    /// Spent in that UTC month.
    pub month: u64,
}

impl Usage {
    /// The spend in `window`.
    pub fn get(&self, window: Window) -> u64 {
        match window {
            Window::Hour => self.hour,
            Window::Day => self.day,
            Window::Month => self.month,
        }
    }
}

/// What is left for the key's other users: a count or a share of each window's allowance.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Reserve {
    /// None.
    #[default]
    Nothing,
    /// This many requests of every window.
    Count(u64),
    /// This percentage of every window's allowance (rounded up).
    Percent(f64),
}

impl Reserve {
    /// The reserve out of `allowed`.
    pub fn of(self, allowed: u64) -> u64 {
        match self {
            Reserve::Nothing => 0,
            Reserve::Count(n) => n,
            Reserve::Percent(p) => ((allowed as f64) * p / 100.0).ceil() as u64,
        }
    }
}

impl fmt::Display for Reserve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reserve::Nothing => f.write_str("0"),
            Reserve::Count(n) => write!(f, "{n}"),
            Reserve::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl FromStr for Reserve {
    type Err = String;

    /// `N` (requests) or `N%` (of each window's allowance).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("bad reserve {s:?}: expected N or N%"))?;
            if !(0.0..=100.0).contains(&p) {
                return Err(format!("bad reserve {s:?}: a percentage is 0 to 100"));
            }
            return Ok(if p == 0.0 {
                Reserve::Nothing
            } else {
                Reserve::Percent(p)
            });
        }
        match s.parse::<u64>() {
            Ok(0) => Ok(Reserve::Nothing),
            Ok(n) => Ok(Reserve::Count(n)),
            Err(_) => Err(format!("bad reserve {s:?}: expected N or N%")),
        }
    }
}

/// Requests spent in one window, as the ledger stores them: `id` is the window's number (Unix
/// seconds, clock minutes, hours or days since the epoch; months as `year * 12 + month - 1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Spend {
    /// The window.
    pub window: LedgerWindow,
    /// Which one.
    pub id: i64,
    /// Requests.
    pub count: u64,
}

/// The request rate to schedule at: the configured one (`--rate` or the tier's per-minute
/// figure), lowered so that no minute sends more than any calendar window allows in all (a key
/// allowed 1 a day is sent at most 1 a minute, not the tier's 4).
pub fn effective_rate(rate: Option<Rate>, caps: &Tier) -> Option<Rate> {
    let smallest = [caps.hourly, caps.daily, caps.monthly]
        .into_iter()
        .flatten()
        .min()
        .map(|n| {
            NonZeroU32::new(n.clamp(1, u64::from(u32::MAX)) as u32).unwrap_or(NonZeroU32::MIN)
        });
    match (rate, smallest) {
        (Some(rate), Some(cap)) if rate.per_second() * 60.0 > f64::from(cap.get()) => {
            Some(Rate::per_minute(cap))
        }
        (rate, _) => rate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_parse_as_counts_or_percentages() {
        assert_eq!("25".parse::<Reserve>(), Ok(Reserve::Count(25)));
        assert_eq!("10%".parse::<Reserve>(), Ok(Reserve::Percent(10.0)));
        assert_eq!("0".parse::<Reserve>(), Ok(Reserve::Nothing));
        assert!("-3".parse::<Reserve>().is_err());
        assert!("150%".parse::<Reserve>().is_err());
        assert_eq!(Reserve::Percent(10.0).of(500), 50);
        assert_eq!(Reserve::Percent(10.0).of(31), 4, "rounded up");
        assert_eq!(Reserve::Count(7).of(3), 7);
    }

    #[test]
    fn the_rate_never_exceeds_the_smallest_window() {
        let public = Tier {
            per_minute: NonZeroU32::new(4),
            hourly: Some(240),
            daily: Some(500),
            monthly: Some(15_500),
        };
        assert_eq!(
            effective_rate(public.rate(), &public).map(|r| r.to_string()),
            Some("4/min".into())
        );
        let tiny = Tier {
            daily: Some(1),
            monthly: Some(31),
            ..public
        };
        assert_eq!(
            effective_rate(public.rate(), &tiny).map(|r| r.to_string()),
            Some("1/min".into())
        );
        assert_eq!(effective_rate(None, &Tier::default()), None, "unlimited");
    }
}
