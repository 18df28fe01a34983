//! The one gate every request passes right before it is sent.
//!
//! Three checks, in order: the 429 gate (closed for everyone after VirusTotal refused), the
//! GCRA limiter (burst 1, interval stretched by the safety margin), and the calendar budgets
//! (hour, day, month in UTC, counted within the run). A request that passes all three has
//! spent quota: budgets are charged at that moment, so retries are charged too.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

use crate::rate::{Rate, Tier};

/// governor's clock, reading tokio's time so that a paused test clock drives the limiter.
#[derive(Clone, Copy, Debug, Default)]
struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;

/// A calendar window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Window {
    /// The UTC hour.
    Hour,
    /// The UTC day (resets 00:00 UTC).
    Day,
    /// The UTC month (resets on the 1st, 00:00 UTC).
    Month,
}

impl Window {
    /// `quota_hourly`, `quota_daily`, `quota_monthly`: the reason on `skipped` records.
    pub fn skip_reason(self) -> &'static str {
        match self {
            Window::Hour => "quota_hourly",
            Window::Day => "quota_daily",
            Window::Month => "quota_monthly",
        }
    }
}

/// A budget ran out: nothing more may be sent until `resets_at` (Unix seconds, UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the {window:?} budget is spent; it resets at Unix time {resets_at}")]
pub struct Exhausted {
    /// Which window.
    pub window: Window,
    /// When it resets, Unix seconds.
    pub resets_at: i64,
}

/// What the scheduler enforces.
#[derive(Clone, Copy, Debug)]
pub struct SchedulerConfig {
    /// Requests per time; `None` sends as fast as the workers go.
    pub rate: Option<Rate>,
    /// Hour, day and month caps (the tier's per-minute figure is ignored here; see `rate`).
    pub caps: Tier,
    /// Stretch of the interval, e.g. 0.002: over any 60 s window this leaves 0.2% (120 ms) of
    /// slack for network jitter between us and VirusTotal's counter.
    pub safety_margin: f64,
    /// Finish each wait by spinning through its last millisecond (rates of at most 100/s).
    /// tokio's timer wakes on millisecond ticks, up to a tick late, and GCRA measures the next
    /// interval from that late grant: at 600/min that drift alone costs 1%. Real clocks only:
    /// under tokio's paused test clock a spin would never end, so tests leave this off.
    pub precise: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            rate: None,
            caps: Tier::default(),
            safety_margin: 0.002,
            precise: false,
        }
    }
}

#[derive(Debug, Default)]
struct Spent {
    hour: (i64, u64),
    day: (i64, u64),
    month: (i64, u64),
}

/// Shared by every worker.
#[derive(Debug)]
pub struct Scheduler {
    limiter: Option<Limiter>,
    interval: Option<Duration>,
    precise: bool,
    caps: Tier,
    spent: Mutex<Spent>,
    gate: Mutex<Option<Instant>>,
}

fn utc_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// (year, month) of a UTC time in Unix seconds (jiff does the calendar).
fn year_month(secs: i64) -> (i64, i64) {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.to_zoned_datetime(jiff::tz::TimeZone::UTC))
        .map_or((1970, 1), |z| (i64::from(z.year()), i64::from(z.month())))
}

/// Start of the next UTC month after `secs`, in Unix seconds.
pub(crate) fn next_month_start(secs: i64) -> i64 {
    let (y, m) = year_month(secs);
    let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    jiff::civil::Date::new(y as i16, m as i8, 1)
        .and_then(|d| d.to_zoned_datetime(jiff::tz::TimeZone::UTC))
        .map_or(i64::MAX, |z| z.timestamp().as_second())
}

impl Scheduler {
    /// A scheduler for `config`.
    pub fn new(config: SchedulerConfig) -> Scheduler {
        let interval = config
            .rate
            .map(|r| r.interval().mul_f64(1.0 + config.safety_margin.max(0.0)));
        let limiter = interval.and_then(|i| {
            let quota = Quota::with_period(i)?.allow_burst(NonZeroU32::MIN);
            Some(RateLimiter::direct_with_clock(quota, TokioClock))
        });
        Scheduler {
            limiter,
            precise: config.precise && interval.is_some_and(|i| i >= Duration::from_millis(10)),
            interval,
            caps: config.caps,
            spent: Mutex::new(Spent::default()),
            gate: Mutex::new(None),
        }
    }

    /// The spacing of requests, safety margin included; `None` when unlimited.
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// Waits until one request may be sent, and charges it to the budgets.
    pub async fn acquire(&self) -> Result<(), Exhausted> {
        self.check_budgets(utc_now(), false)?;
        loop {
            let closed = *self.gate.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(until) = closed
                && until > Instant::now()
            {
                tokio::time::sleep_until(until).await;
                continue;
            }
            let Some(limiter) = &self.limiter else { break };
            match limiter.check() {
                Ok(()) => break,
                Err(not_until) => {
                    let wait = not_until.wait_time_from(TokioClock.now());
                    let tick = Duration::from_millis(1);
                    if !self.precise {
                        tokio::time::sleep(wait).await;
                    } else if wait > 2 * tick {
                        // Wake within the last millisecond, then spin to the deadline.
                        tokio::time::sleep(wait - tick).await;
                    } else {
                        let deadline = std::time::Instant::now() + wait;
                        while std::time::Instant::now() < deadline {
                            std::hint::spin_loop();
                        }
                    }
                }
            }
        }
        self.check_budgets(utc_now(), true)
    }

    /// Checks the calendar budgets at `now` (Unix seconds) and, with `charge`, spends one.
    fn check_budgets(&self, now: i64, charge: bool) -> Result<(), Exhausted> {
        let mut guard = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        let spent = &mut *guard;
        let hour = now.div_euclid(3600);
        let day = now.div_euclid(86_400);
        let (y, m) = year_month(now);
        let month = y * 12 + m;
        let windows = [
            (
                Window::Hour,
                self.caps.hourly,
                &mut spent.hour,
                hour,
                (hour + 1) * 3600,
            ),
            (
                Window::Day,
                self.caps.daily,
                &mut spent.day,
                day,
                (day + 1) * 86_400,
            ),
            (
                Window::Month,
                self.caps.monthly,
                &mut spent.month,
                month,
                next_month_start(now),
            ),
        ];
        let mut counters = Vec::with_capacity(3);
        for (window, cap, counter, id, resets_at) in windows {
            if counter.0 != id {
                *counter = (id, 0);
            }
            if let Some(cap) = cap
                && counter.1 >= cap
            {
                return Err(Exhausted { window, resets_at });
            }
            counters.push(counter);
        }
        if charge {
            for counter in counters {
                counter.1 += 1;
            }
        }
        Ok(())
    }

    /// Closes the gate for everyone for `wait` (never shortens an existing closure).
    pub fn close_gate(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        if gate.is_none_or(|g| g < until) {
            *gate = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i16, m: i8, d: i8) -> i64 {
        jiff::civil::date(y, m, d)
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .expect("valid date")
            .timestamp()
            .as_second()
    }

    #[test]
    fn month_arithmetic_crosses_years_and_leap_days() {
        assert_eq!(next_month_start(at(2026, 11, 26)), at(2026, 12, 1));
        assert_eq!(next_month_start(at(2026, 12, 31) + 86_399), at(2027, 1, 1));
        assert_eq!(next_month_start(at(2024, 2, 29)), at(2024, 3, 1));
        assert_eq!(at(1970, 1, 1), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn burst_one_spaces_every_request_by_the_interval() {
        let scheduler = Scheduler::new(SchedulerConfig {
            rate: Some("4/min".parse().expect("rate")),
            safety_margin: 0.0,
            ..SchedulerConfig::default()
        });
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..9 {
            scheduler.acquire().await.expect("no caps");
            times.push(start.elapsed());
        }
        // The first passes at once; each next one 15 s later. So any 60 s holds at most 4.
        for (i, t) in times.iter().enumerate() {
            assert_eq!(*t, Duration::from_secs(15 * i as u64), "request {i}");
        }
        for w in times.windows(5) {
            assert!(w[4] - w[0] >= Duration::from_secs(60));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_safety_margin_stretches_the_interval() {
        let scheduler = Scheduler::new(SchedulerConfig {
            rate: Some("600/min".parse().expect("rate")),
            safety_margin: 0.002,
            ..SchedulerConfig::default()
        });
        assert_eq!(scheduler.interval(), Some(Duration::from_micros(100_200)));
        let start = Instant::now();
        let mut last = start;
        for i in 0..11 {
            scheduler.acquire().await.expect("no caps");
            if i > 0 {
                assert!(
                    last.elapsed() >= Duration::from_micros(100_200),
                    "gap before {i}"
                );
            }
            last = Instant::now();
        }
        // tokio's paused clock has millisecond ticks: each wait ends on the next tick.
        assert!(start.elapsed() >= Duration::from_micros(1_002_000));
        assert!(start.elapsed() <= Duration::from_millis(1_012));
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_gate_holds_everyone() {
        let scheduler = Scheduler::new(SchedulerConfig::default());
        scheduler.close_gate(Duration::from_secs(30));
        scheduler.close_gate(Duration::from_secs(5));
        let start = Instant::now();
        scheduler.acquire().await.expect("no caps");
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(30),
            "a shorter closure does not reopen it"
        );
    }

    #[test]
    fn caps_refuse_once_spent_and_reset_with_the_window() {
        let scheduler = Scheduler::new(SchedulerConfig {
            caps: Tier {
                daily: Some(2),
                monthly: Some(3),
                ..Tier::default()
            },
            ..SchedulerConfig::default()
        });
        let day1 = at(2026, 11, 30) + 3600;
        assert_eq!(scheduler.check_budgets(day1, true), Ok(()));
        assert_eq!(scheduler.check_budgets(day1 + 1, true), Ok(()));
        let err = scheduler
            .check_budgets(day1 + 2, true)
            .expect_err("daily cap");
        assert_eq!(
            err,
            Exhausted {
                window: Window::Day,
                resets_at: at(2026, 12, 1)
            }
        );
        let day2 = at(2026, 12, 1) + 10;
        assert_eq!(
            scheduler.check_budgets(day2, true),
            Ok(()),
            "new day, new month"
        );
        assert_eq!(scheduler.check_budgets(day2 + 1, true), Ok(()));
        assert_eq!(
            scheduler.check_budgets(at(2026, 12, 2), true),
            Ok(()),
            "new day"
        );
        let err = scheduler
            .check_budgets(at(2026, 12, 2) + 1, true)
            .expect_err("monthly cap");
        assert_eq!(err.window, Window::Month);
        assert_eq!(err.resets_at, at(2027, 1, 1));
        assert_eq!(Window::Day.skip_reason(), "quota_daily");
    }
}
