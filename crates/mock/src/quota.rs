//! API keys and their quotas, enforced the way VirusTotal documents them.
//!
//! Per minute is a sliding window ("at most 4 requests of any nature in any given 1 minute time
//! frame"): a request is admitted when fewer than the limit were admitted in the 60 s before
//! it. A key may also have a strict spacing limiter (`strict=N/min`: one request per `60/N` s,
//! no burst, measured in whole milliseconds, as nginx's `limit_req` does), applied to requests
//! of any nature, `/users` included: the strictest limiter a client can meet. Hour, day and month are calendar windows in UTC: the day resets at 00:00 UTC, the month
//! at 00:00 UTC on the 1st. A refused request (429) spends nothing. Usage can be preloaded, to
//! stand for other users of the same key.

use std::collections::VecDeque;
use std::fmt;

use serde::Serialize;

/// Length of the sliding minute window.
pub const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// Allowances of one key; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Requests in any 60 s.
    pub per_minute: Option<u64>,
    /// Requests per UTC hour.
    pub hourly: Option<u64>,
    /// Requests per UTC day.
    pub daily: Option<u64>,
    /// Requests per UTC month.
    pub monthly: Option<u64>,
}

impl Limits {
    /// VirusTotal's public API: 4/min, 240/hour, 500/day, 15,500/month.
    pub const PUBLIC: Limits = Limits {
        per_minute: Some(4),
        hourly: Some(240),
        daily: Some(500),
        monthly: Some(15_500),
    };
}

/// Usage already spent at start (or after a reset) by other users of the key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Preload {
    /// Spent this UTC hour.
    pub hour: u64,
    /// Spent this UTC day.
    pub day: u64,
    /// Spent this UTC month.
    pub month: u64,
}

/// One configured key.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyConfig {
    /// The key as clients send it in `x-apikey`.
    pub key: String,
    /// The user id `/users/{id}` also answers to.
    pub user: String,
    /// Its allowances.
    pub limits: Limits,
    /// Usage spent by others at start.
    pub preload: Preload,
    /// `/users/{key}` answers 403 (some key types cannot read their own quotas).
    pub users_forbidden: bool,
    /// A strict spacing limiter: at most this many a minute, one per `60/N` s, no burst.
    pub strict_per_minute: Option<u64>,
}

impl fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Even a mock's keys stay out of logs: people point it at copies of real configs.
        f.debug_struct("KeyConfig")
            .field("key_id", &crate::key_id(&self.key))
            .field("user", &self.user)
            .field("limits", &self.limits)
            .field("preload", &self.preload)
            .field("users_forbidden", &self.users_forbidden)
            .field("strict_per_minute", &self.strict_per_minute)
            .finish()
    }
}

impl KeyConfig {
    /// An unlimited key.
    pub fn unlimited(key: impl Into<String>) -> KeyConfig {
        let key = key.into();
        KeyConfig {
            user: default_user(&key),
            key,
            limits: Limits::default(),
            preload: Preload::default(),
            users_forbidden: false,
            strict_per_minute: None,
        }
    }

    /// A key with the given limits.
    pub fn with_limits(key: impl Into<String>, limits: Limits) -> KeyConfig {
        KeyConfig {
            limits,
            ..KeyConfig::unlimited(key)
        }
    }

    /// Parses `KEY[:ITEM,ITEM...]`, items being `public`, `unlimited`, `N/min`, `N/hour`,
    /// `N/day`, `N/month`, `strict=N/min` (one request per 60/N s, no burst, any nature),
    /// `used-hour=N`, `used-day=N`, `used-month=N`, `user=NAME`, `users-forbidden` (its
    /// `/users` answers 403).
    pub fn parse(spec: &str) -> Result<KeyConfig, String> {
        let (key, items) = spec.split_once(':').unwrap_or((spec, ""));
        if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("a key must be non-empty, without spaces or control characters".into());
        }
        let mut config = KeyConfig::unlimited(key);
        for item in items.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let bad = || format!("bad key item {item:?} (see vt-mock --help)");
            match item {
                "public" => config.limits = Limits::PUBLIC,
                "unlimited" => config.limits = Limits::default(),
                "users-forbidden" => config.users_forbidden = true,
                _ => {
                    if let Some((name, value)) = item.split_once('=') {
                        let n = || value.parse::<u64>().map_err(|_| bad());
                        match name {
                            "used-hour" => config.preload.hour = n()?,
                            "used-day" => config.preload.day = n()?,
                            "used-month" => config.preload.month = n()?,
                            "user" if !value.is_empty() => config.user = value.to_owned(),
                            "strict" => {
                                let n = value
                                    .strip_suffix("/min")
                                    .and_then(|n| n.parse::<u64>().ok())
                                    .filter(|&n| n > 0)
                                    .ok_or_else(bad)?;
                                config.strict_per_minute = Some(n);
                            }
                            _ => return Err(bad()),
                        }
                    } else if let Some((n, unit)) = item.split_once('/') {
                        let n = Some(n.parse::<u64>().map_err(|_| bad())?);
                        match unit {
                            "min" | "minute" | "m" => config.limits.per_minute = n,
                            "hour" | "h" => config.limits.hourly = n,
                            "day" | "d" => config.limits.daily = n,
                            "month" | "mo" => config.limits.monthly = n,
                            _ => return Err(bad()),
                        }
                    } else {
                        return Err(bad());
                    }
                }
            }
        }
        Ok(config)
    }
}

fn default_user(key: &str) -> String {
    format!("mock-user-{}", &crate::key_id(key)[..8])
}

/// Which window refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    /// The sliding minute.
    Minute,
    /// The UTC hour.
    Hour,
    /// The UTC day.
    Day,
    /// The UTC month.
    Month,
}

/// A calendar window: which period it is, and what was spent in it.
#[derive(Clone, Copy, Debug, Default)]
struct Period {
    id: i64,
    used: u64,
}

impl Period {
    fn used_at(&self, id: i64) -> u64 {
        if self.id == id { self.used } else { 0 }
    }

    fn spend(&mut self, id: i64) {
        if self.id != id {
            *self = Period { id, used: 0 };
        }
        self.used += 1;
    }
}

/// The UTC month of a Unix-millisecond time, as `year * 12 + month0` (jiff does the calendar).
pub fn month_id(ms: i64) -> i64 {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_zoned_datetime(jiff::tz::TimeZone::UTC))
        .map_or(0, |z| i64::from(z.year()) * 12 + i64::from(z.month()) - 1)
}

/// Live usage of one key.
#[derive(Debug)]
pub struct KeyUsage {
    limits: Limits,
    preload: Preload,
    /// The strict spacing limiter's rate, and when it last admitted a request.
    strict: Option<(u64, Option<i64>)>,
    /// Admission times in the last minute; at most `per_minute` entries.
    minute: VecDeque<i64>,
    hour: Period,
    day: Period,
    month: Period,
}

/// What `/users` reports for one window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Allowance {
    /// The allowance (10^9 stands for unlimited, as on premium keys).
    pub allowed: u64,
    /// Spent in the current window.
    pub used: u64,
}

/// What VirusTotal shows as the allowance of an unlimited window.
pub const UNLIMITED: u64 = 1_000_000_000;

impl KeyUsage {
    /// Fresh usage for a key, with its preload spent in the windows around `now_ms`.
    pub fn new(config: &KeyConfig, now_ms: i64) -> KeyUsage {
        let mut usage = KeyUsage {
            limits: config.limits,
            preload: config.preload,
            strict: config.strict_per_minute.map(|n| (n, None)),
            minute: VecDeque::new(),
            hour: Period::default(),
            day: Period::default(),
            month: Period::default(),
        };
        usage.reset(now_ms);
        usage
    }

    /// Forgets all usage except the preload.
    pub fn reset(&mut self, now_ms: i64) {
        if let Some((_, last)) = &mut self.strict {
            *last = None;
        }
        self.minute.clear();
        self.hour = Period {
            id: now_ms.div_euclid(HOUR_MS),
            used: self.preload.hour,
        };
        self.day = Period {
            id: now_ms.div_euclid(DAY_MS),
            used: self.preload.day,
        };
        self.month = Period {
            id: month_id(now_ms),
            used: self.preload.month,
        };
    }

    /// The strict spacing limiter (any request of the key): admits a request at `now_ms` when
    /// at least `60/N` s passed since the last one it admitted (whole milliseconds); a refused
    /// request leaves it as it was.
    pub fn admit_spacing(&mut self, now_ms: i64) -> Result<(), Window> {
        let Some((per_minute, last)) = &mut self.strict else {
            return Ok(());
        };
        if let Some(last) = *last
            && (now_ms - last).saturating_mul(*per_minute as i64) < MINUTE_MS
        {
            return Err(Window::Minute);
        }
        *last = Some(now_ms);
        Ok(())
    }

    /// Admits and counts a request at `now_ms`, or says which window refuses it.
    pub fn admit(&mut self, now_ms: i64) -> Result<(), Window> {
        while self
            .minute
            .front()
            .is_some_and(|&t| t <= now_ms - MINUTE_MS)
        {
            self.minute.pop_front();
        }
        let (hour, day, month) = (
            now_ms.div_euclid(HOUR_MS),
            now_ms.div_euclid(DAY_MS),
            month_id(now_ms),
        );
        let over = |limit: Option<u64>, used: u64| limit.is_some_and(|l| used >= l);
        if over(self.limits.per_minute, self.minute.len() as u64) {
            return Err(Window::Minute);
        }
        if over(self.limits.hourly, self.hour.used_at(hour)) {
            return Err(Window::Hour);
        }
        if over(self.limits.daily, self.day.used_at(day)) {
            return Err(Window::Day);
        }
        if over(self.limits.monthly, self.month.used_at(month)) {
            return Err(Window::Month);
        }
        if self.limits.per_minute.is_some() {
            self.minute.push_back(now_ms);
        }
        self.hour.spend(hour);
        self.day.spend(day);
        self.month.spend(month);
        Ok(())
    }

    /// Hourly, daily and monthly allowance and use as of `now_ms`.
    pub fn allowances(&self, now_ms: i64) -> [Allowance; 3] {
        let a = |limit: Option<u64>, unlimited: u64, used: u64| Allowance {
            allowed: limit.unwrap_or(unlimited),
            used,
        };
        [
            a(
                self.limits.hourly,
                60 * UNLIMITED,
                self.hour.used_at(now_ms.div_euclid(HOUR_MS)),
            ),
            a(
                self.limits.daily,
                UNLIMITED,
                self.day.used_at(now_ms.div_euclid(DAY_MS)),
            ),
            a(
                self.limits.monthly,
                UNLIMITED,
                self.month.used_at(month_id(now_ms)),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::parse_rfc3339_ms;

    fn at(s: &str) -> i64 {
        parse_rfc3339_ms(s).expect("valid time")
    }

    #[test]
    fn parses_key_specs() {
        let k = KeyConfig::parse("k1:public,used-day=250,user=alice").expect("valid");
        assert_eq!(k.key, "k1");
        assert_eq!(k.user, "alice");
        assert_eq!(k.limits, Limits::PUBLIC);
        assert_eq!(k.preload.day, 250);
        let k = KeyConfig::parse("k2:1/min,1/day,31/month").expect("valid");
        assert_eq!(k.limits.per_minute, Some(1));
        assert_eq!(k.limits.hourly, None);
        assert_eq!(k.limits.monthly, Some(31));
        assert_eq!(
            KeyConfig::parse("k3").expect("valid").limits,
            Limits::default()
        );
        assert!(KeyConfig::parse("k4:4/fortnight").is_err());
        assert!(KeyConfig::parse(":public").is_err());
        let k = KeyConfig::parse("k:public,users-forbidden").expect("spec");
        assert!(k.users_forbidden);
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let k = KeyConfig::parse("secret-canary-key:public").expect("valid");
        assert!(!format!("{k:?}").contains("secret-canary-key"));
    }

    #[test]
    fn civil_months_are_right_across_leap_years() {
        assert_eq!(month_id(at("2024-02-29T23:59:59Z")), 2024 * 12 + 1);
        assert_eq!(month_id(at("2024-03-01T00:00:00Z")), 2024 * 12 + 2);
        assert_eq!(month_id(at("1970-01-01T00:00:00Z")), 1970 * 12);
        assert_eq!(month_id(at("2026-12-31T23:59:59.999Z")), 2026 * 12 + 11);
        assert_eq!(month_id(at("2027-01-01T00:00:00Z")), 2027 * 12);
    }

    #[test]
    fn sliding_minute_counts_any_sixty_seconds() {
        let mut u = KeyUsage::new(&KeyConfig::with_limits("k", Limits::PUBLIC), 0);
        let t0 = at("2026-11-26T10:00:00Z");
        for i in 0..4 {
            assert_eq!(u.admit(t0 + i * 1_000), Ok(()), "request {i}");
        }
        assert_eq!(u.admit(t0 + 59_000), Err(Window::Minute));
        assert_eq!(u.admit(t0 + 59_999), Err(Window::Minute));
        assert_eq!(u.admit(t0 + 60_001), Ok(()), "the first left the window");
        assert_eq!(u.admit(t0 + 60_500), Err(Window::Minute));
    }

    #[test]
    fn the_strict_limiter_wants_a_whole_interval_between_admissions_and_ignores_refusals() {
        let k = KeyConfig::parse("k:strict=600/min").expect("spec");
        assert_eq!(k.strict_per_minute, Some(600));
        assert!(KeyConfig::parse("k:strict=600/hour").is_err());
        assert!(KeyConfig::parse("k:strict=0/min").is_err());
        let t0 = at("2026-11-26T10:00:00Z");
        let mut u = KeyUsage::new(&k, t0);
        assert_eq!(u.admit_spacing(t0), Ok(()));
        assert_eq!(u.admit_spacing(t0 + 99), Err(Window::Minute), "99 ms after");
        assert_eq!(
            u.admit_spacing(t0 + 100),
            Ok(()),
            "100 ms after the last admitted"
        );
        assert_eq!(u.admit_spacing(t0 + 150), Err(Window::Minute));
        assert_eq!(
            u.admit_spacing(t0 + 200),
            Ok(()),
            "the refusal at 150 did not move it"
        );
        // Without the item there is no spacing.
        let mut free = KeyUsage::new(&KeyConfig::unlimited("k"), t0);
        assert_eq!(free.admit_spacing(t0), Ok(()));
        assert_eq!(free.admit_spacing(t0), Ok(()));
    }

    #[test]
    fn day_resets_at_midnight_utc_and_month_on_the_first() {
        let limits = Limits {
            daily: Some(2),
            monthly: Some(3),
            ..Limits::default()
        };
        let mut u = KeyUsage::new(&KeyConfig::with_limits("k", limits), 0);
        assert_eq!(u.admit(at("2026-11-30T23:59:00Z")), Ok(()));
        assert_eq!(u.admit(at("2026-11-30T23:59:30Z")), Ok(()));
        assert_eq!(u.admit(at("2026-11-30T23:59:59.999Z")), Err(Window::Day));
        assert_eq!(
            u.admit(at("2026-12-01T00:00:00Z")),
            Ok(()),
            "new day and month"
        );
        assert_eq!(u.admit(at("2026-12-01T00:00:01Z")), Ok(()));
        assert_eq!(u.admit(at("2026-12-02T00:00:01Z")), Ok(()));
        assert_eq!(u.admit(at("2026-12-02T00:00:02Z")), Err(Window::Month));
        let [_, day, month] = u.allowances(at("2026-12-02T00:00:03Z"));
        assert_eq!((day.allowed, day.used), (2, 1));
        assert_eq!((month.allowed, month.used), (3, 3));
    }

    #[test]
    fn preload_stands_for_other_users_and_refusals_spend_nothing() {
        let mut config = KeyConfig::with_limits("k", Limits::PUBLIC);
        config.preload.day = 499;
        let now = at("2026-11-26T10:00:00Z");
        let mut u = KeyUsage::new(&config, now);
        assert_eq!(u.admit(now), Ok(()));
        assert_eq!(u.admit(now + 20_000), Err(Window::Day));
        let [hour, day, _] = u.allowances(now + 20_000);
        assert_eq!(day.used, 500);
        assert_eq!(hour.used, 1);
    }
}
