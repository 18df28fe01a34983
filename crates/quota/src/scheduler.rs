//! The one gate every request passes right before it is sent.
//!
//! Four checks, in order: the 429 gate (closed for everyone when 429s repeat), the pacer's
//! turn and spacing (the next request leaves at least one interval after the last one
//! *really left*; see [`crate::pace`]), the GCRA limiter (burst 1, the sliding-minute
//! guarantee from grants), and the calendar budgets (hour, day, month in UTC). A request that
//! passes all four holds a [`Grant`] until it departs, and has spent quota: budgets are
//! charged at that moment, so retries are charged too. The budgets start from the key's usage
//! at the start of the run (everybody's, read live, or ours from the ledger) and leave the
//! reserve untouched; each charge is also kept for the ledger until [`Scheduler::drain_spend`].

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

use crate::budget::{Reserve, Spend, Usage};
use crate::clock::WallClock;
use crate::pace::{Departure, Grant, Pacer, PacingReport};
use crate::rate::{Rate, Tier};
use crate::window::{LedgerWindow, Window};

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
    /// Hour, day and month allowances (the tier's per-minute figure is ignored here; see
    /// `rate`).
    pub caps: Tier,
    /// Spent already when the run starts (by everyone, or by us per the ledger); `None`: 0.
    pub used: Option<Usage>,
    /// Left untouched in every window, for the key's other users.
    pub reserve: Reserve,
    /// UTC time for the calendar windows.
    pub clock: WallClock,
    /// Keep every charge for [`Scheduler::drain_spend`] (only when a ledger drains it: with
    /// nobody draining, the pending spend would grow for as long as the run).
    pub keep_spend: bool,
    /// Stretch of the interval, e.g. 0.002: over any 60 s window this leaves 0.2% (120 ms) of
    /// slack for network jitter between us and VirusTotal's counter.
    pub safety_margin: f64,
    /// Finish each wait by spinning through its last moments (intervals of 4 ms or more).
    /// tokio's timer wakes on millisecond ticks, up to a tick late (more on a busy host), and
    /// the next interval is measured from that late departure: at 600/min a tick's drift
    /// alone costs 1%. The spin starts 1 ms before the deadline, 2 ms at most when the timer
    /// has been waking late. Real clocks only: under tokio's paused test clock a spin would never
    /// end, so tests leave this off.
    pub precise: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            rate: None,
            caps: Tier::default(),
            used: None,
            reserve: Reserve::Nothing,
            clock: WallClock::System,
            keep_spend: false,
            safety_margin: 0.002,
            precise: false,
        }
    }
}

/// Spend per window: (window id, requests) for hour, day, month, and what the ledger has not
/// been given yet.
#[derive(Debug, Default)]
struct Spent {
    windows: [(i64, u64); 3],
    unflushed: BTreeMap<(LedgerWindow, i64), u64>,
}

/// One window's budget at a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WindowBudget {
    /// Which window.
    pub window: Window,
    /// The allowance; `None` is unlimited.
    pub allowed: Option<u64>,
    /// Spent in it (by everyone we know of).
    pub used: u64,
    /// Kept back for others.
    pub reserve: u64,
    /// What we may still send in it; `None` is unlimited.
    pub remaining: Option<u64>,
    /// When it resets, Unix seconds.
    pub resets_at: i64,
}

/// The 429 gate: closed for everyone until `until`; `cycle` counts its closures.
#[derive(Debug, Default)]
struct Gate {
    until: Option<Instant>,
    cycle: u64,
}

/// Shared by every worker.
#[derive(Debug)]
pub struct Scheduler {
    limiter: Option<Limiter>,
    pacer: Arc<Pacer>,
    precise: bool,
    /// How long before a deadline the wait stops sleeping and spins: grows with the timer's
    /// observed lateness (a busy host), microseconds.
    spin_us: std::sync::atomic::AtomicU64,
    caps: Tier,
    reserve: Reserve,
    clock: WallClock,
    keep_spend: bool,
    spent: Mutex<Spent>,
    gate: Mutex<Gate>,
}

#[cfg(test)]
fn next_month_start(secs: i64) -> i64 {
    Window::Month.end(secs)
}

/// The shortest spin before a deadline, and the longest: spinning longer than the host's
/// scheduling slice invites being preempted at the deadline (measured under two CPU hogs on two
/// cores: a 5 ms cap was slower than 2 ms; benches/RESULTS.md).
const SPIN_MIN: Duration = Duration::from_millis(1);
const SPIN_MAX: Duration = Duration::from_millis(2);

impl Scheduler {
    /// A scheduler for `config`.
    pub fn new(config: SchedulerConfig) -> Scheduler {
        let margin = config.safety_margin.max(0.0);
        let base = config.rate.map(|r| r.interval());
        let limiter = base.map(|i| i.mul_f64(1.0 + margin)).and_then(|i| {
            let quota = Quota::with_period(i)?.allow_burst(NonZeroU32::MIN);
            Some(RateLimiter::direct_with_clock(quota, TokioClock))
        });
        let scheduler = Scheduler {
            limiter,
            pacer: Arc::new(Pacer::new(base, margin)),
            precise: config.precise && base.is_some_and(|i| i >= Duration::from_millis(4)),
            spin_us: std::sync::atomic::AtomicU64::new(SPIN_MIN.as_micros() as u64),
            caps: config.caps,
            reserve: config.reserve,
            clock: config.clock,
            keep_spend: config.keep_spend,
            spent: Mutex::new(Spent::default()),
            gate: Mutex::new(Gate::default()),
        };
        if let Some(used) = config.used {
            scheduler.resync(used);
        }
        scheduler
    }

    /// Sets the spend of the windows containing `usage.at` to `usage` (a fresh read of the
    /// key's quotas: everybody's spend, ours included).
    pub fn resync(&self, usage: Usage) {
        let mut spent = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        for (slot, window) in spent.windows.iter_mut().zip(Window::ALL) {
            *slot = (window.id(usage.at), usage.get(window));
        }
    }

    /// Each window's budget now.
    pub fn budgets(&self) -> [WindowBudget; 3] {
        let now = self.clock.now();
        let spent = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        Window::ALL.map(|window| {
            let (id, n) = spent.windows[window as usize];
            let used = if id == window.id(now) { n } else { 0 };
            let allowed = window.cap(&self.caps);
            let reserve = allowed.map_or(0, |a| self.reserve.of(a));
            WindowBudget {
                window,
                allowed,
                used,
                reserve,
                remaining: allowed.map(|a| a.saturating_sub(used).saturating_sub(reserve)),
                resets_at: window.end(now),
            }
        })
    }

    /// The first window with nothing left now, if any.
    pub fn exhausted(&self) -> Option<Exhausted> {
        self.check_budgets(self.clock.now(), false).err()
    }

    /// The spend not yet given to the ledger, per window; taking it empties it.
    pub fn drain_spend(&self) -> Vec<Spend> {
        let mut spent = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut spent.unflushed)
            .into_iter()
            .map(|((window, id), count)| Spend { window, id, count })
            .collect()
    }

    /// The clock the windows are read with.
    pub fn clock(&self) -> WallClock {
        self.clock
    }

    /// The spacing of requests now, both margins included; `None` when unlimited.
    pub fn interval(&self) -> Option<Duration> {
        self.pacer.spacing()
    }

    /// Waits until one request may be sent, and charges it to the budgets. The request must
    /// leave at once; hand the [`Grant`] to its departure callback.
    pub async fn acquire(&self) -> Result<Grant, Exhausted> {
        self.check_budgets(self.clock.now(), false)?;
        let grant = self.acquire_rate().await;
        // On a refusal the grant is dropped: its turn counts as used now.
        self.check_budgets(self.clock.now(), true)?;
        Ok(grant)
    }

    /// Waits for the 429 gate and the rate only, charging no budget: for requests that
    /// count against the per-minute rate ("requests of any nature") but not against the
    /// calendar quotas, such as `GET /users/{key}`.
    pub async fn acquire_rate(&self) -> Grant {
        loop {
            self.wait_for_gate().await;
            let cycle = self.gate_cycle();
            let slot = if self.pacer.interval.is_some() {
                // Our turn: held until the request departs, so the next grant knows when.
                let slot = self.pacer.slot.clone().lock_owned().await;
                let mut allowed = None;
                if let (Some(last), Some(spacing)) = (slot.last_departure, self.pacer.spacing()) {
                    allowed = Some(last + spacing);
                    self.wait_until(last + spacing).await;
                }
                // An answer that came back late while we waited may push us back further.
                while let Some(later) = self.pacer.not_before().filter(|&t| t > Instant::now()) {
                    allowed = Some(later);
                    self.wait_until(later).await;
                }
                if let Some(allowed) = allowed {
                    self.pacer
                        .granted_late(Instant::now().saturating_duration_since(allowed));
                }
                Some(slot)
            } else {
                None
            };
            if let Some(limiter) = &self.limiter {
                while let Err(not_until) = limiter.check() {
                    let wait = not_until.wait_time_from(TokioClock.now());
                    self.wait_until(Instant::now() + wait).await;
                }
            }
            if self.gate_cycle() != cycle || self.gate_closed() {
                // Closed while we waited: the turn goes back, unused.
                continue;
            }
            return Grant {
                pacer: self.pacer.clone(),
                slot,
                granted_at: Instant::now(),
                cycle,
                done: false,
            };
        }
    }

    /// A request that left outside [`Scheduler::acquire`] (the first read of the key's
    /// quotas, made before the scheduler existed): the next one is spaced from it.
    pub async fn note_departure(&self, at: Instant) {
        let mut slot = self.pacer.slot.lock().await;
        slot.last_departure = Some(slot.last_departure.map_or(at, |d| d.max(at)));
    }

    /// The answer to a request that left (`departure`) arrived at `at`: a round trip slower
    /// than the quickest recent one pushes the next request back (see `crate::pace`).
    /// Returns how far the next request was pushed (zero: not at all).
    pub fn answered(&self, departure: Departure, at: Instant) -> std::time::Duration {
        self.pacer.answered(departure, at)
    }

    /// A 429 our books did not expect: widen the adaptive margin a step.
    pub fn widen_margin(&self) {
        self.pacer.widen();
    }

    /// What the pacer did so far.
    pub fn pacing_report(&self) -> PacingReport {
        let closures = self.gate_cycle();
        self.pacer.report(closures)
    }

    async fn wait_for_gate(&self) {
        loop {
            let until = self.gate.lock().unwrap_or_else(|e| e.into_inner()).until;
            match until {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until).await,
                _ => return,
            }
        }
    }

    fn gate_closed(&self) -> bool {
        self.gate
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .until
            .is_some_and(|u| u > Instant::now())
    }

    /// How many times the 429 gate has closed.
    pub fn gate_cycle(&self) -> u64 {
        self.gate.lock().unwrap_or_else(|e| e.into_inner()).cycle
    }

    /// Sleeps until `deadline`; with `precise`, sleeps to a little before it and spins the
    /// rest, the spin growing with how late the timer has been waking (a busy host).
    async fn wait_until(&self, deadline: Instant) {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.precise {
            if deadline > Instant::now() {
                tokio::time::sleep_until(deadline).await;
            }
            return;
        }
        let spin = Duration::from_micros(self.spin_us.load(Relaxed));
        let wake = deadline.checked_sub(spin).unwrap_or(deadline);
        if wake > Instant::now() {
            tokio::time::sleep_until(wake).await;
            let late = Instant::now().saturating_duration_since(wake);
            // A timer that wakes late needs a longer spin; one that wakes on time, a shorter
            // one (slowly: a busy host comes and goes).
            let cap = SPIN_MAX.min(self.pacer.interval.map_or(SPIN_MAX, |i| i / 4));
            let want = (late + Duration::from_micros(500)).clamp(SPIN_MIN, cap.max(SPIN_MIN));
            let now_us = spin.as_micros() as u64;
            let want_us = want.as_micros() as u64;
            let next = if want_us > now_us {
                want_us
            } else {
                now_us - (now_us - want_us) / 16
            };
            self.spin_us.store(next, Relaxed);
        }
        while Instant::now() < deadline {
            std::hint::spin_loop();
        }
    }

    /// Gives back the charge of a request VirusTotal refused with a 429 (a refused request
    /// spends nothing): without this our books would count every 429 as spent, and a burst of
    /// them would end the day's budget early. Refunds the windows of now (a window that has
    /// rolled over since the charge keeps it: the safe side).
    pub fn refund(&self) {
        let now = self.clock.now();
        let mut guard = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        let spent = &mut *guard;
        for (slot, window) in spent.windows.iter_mut().zip(Window::ALL) {
            if slot.0 == window.id(now) {
                slot.1 = slot.1.saturating_sub(1);
                if let Some(n) = spent.unflushed.get_mut(&(window.into(), slot.0)) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        // The minute's history bucket with the windows (the sliding-minute seconds keep the
        // attempt: they are the pacing's books, not the quota's).
        if let Some(n) = spent
            .unflushed
            .get_mut(&(LedgerWindow::Minute, now.div_euclid(60)))
        {
            *n = n.saturating_sub(1);
        }
    }

    /// Checks the calendar budgets at `now` (Unix seconds) and, with `charge`, spends one.
    fn check_budgets(&self, now: i64, charge: bool) -> Result<(), Exhausted> {
        let mut guard = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        let spent = &mut *guard;
        for (slot, window) in spent.windows.iter_mut().zip(Window::ALL) {
            let id = window.id(now);
            if slot.0 != id {
                // A new window: everybody's spend starts again from 0.
                *slot = (id, 0);
            }
            if let Some(allowed) = window.cap(&self.caps)
                && slot.1 + self.reserve.of(allowed) >= allowed
            {
                return Err(Exhausted {
                    window,
                    resets_at: window.end(now),
                });
            }
        }
        if charge {
            for (slot, window) in spent.windows.iter_mut().zip(Window::ALL) {
                slot.1 += 1;
                if self.keep_spend {
                    *spent.unflushed.entry((window.into(), slot.0)).or_default() += 1;
                }
            }
            if self.keep_spend {
                *spent
                    .unflushed
                    .entry((LedgerWindow::Second, now))
                    .or_default() += 1;
                *spent
                    .unflushed
                    .entry((LedgerWindow::Minute, now.div_euclid(60)))
                    .or_default() += 1;
            }
        }
        Ok(())
    }

    /// Closes the gate for everyone for `wait` (never shortens an existing closure), and
    /// starts a new gate cycle.
    pub fn close_gate(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        if gate.until.is_none_or(|g| g < until) {
            gate.until = Some(until);
        }
        gate.cycle += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::at;

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
    async fn a_late_departure_pushes_the_next_grant_back() {
        let scheduler = Scheduler::new(SchedulerConfig {
            rate: Some("600/min".parse().expect("rate")),
            safety_margin: 0.0,
            ..SchedulerConfig::default()
        });
        let start = Instant::now();
        let first = scheduler.acquire().await.expect("no caps");
        // The first request leaves 30 ms after its grant (a busy host).
        first.departed(start + Duration::from_millis(30));
        let second = scheduler.acquire().await.expect("no caps");
        assert_eq!(
            second.granted_at() - start,
            Duration::from_millis(130),
            "spaced from the departure, not from the grant"
        );
        second.departed(Instant::now());
        let third = scheduler.acquire().await.expect("no caps");
        assert_eq!(third.granted_at() - start, Duration::from_millis(230));
        drop(third);
        let report = scheduler.pacing_report();
        assert_eq!(report.departures, 2);
        assert_eq!(report.released_unsent, 1);
        assert_eq!(report.lateness_us.max, 30_000);
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_grant_waits_for_the_previous_request_to_leave() {
        let scheduler = Arc::new(Scheduler::new(SchedulerConfig {
            rate: Some("600/min".parse().expect("rate")),
            safety_margin: 0.0,
            ..SchedulerConfig::default()
        }));
        let start = Instant::now();
        let first = scheduler.acquire().await.expect("no caps");
        let waiting = tokio::spawn({
            let scheduler = scheduler.clone();
            async move { scheduler.acquire().await.map(|g| g.granted_at()) }
        });
        // Held 500 ms (a connection that was not ready after all): nobody may go meanwhile.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiting.is_finished(), "granted while the turn was held");
        first.departed(Instant::now());
        let granted = waiting.await.expect("task").expect("no caps");
        assert_eq!(granted - start, Duration::from_millis(600));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timing_miss_widens_the_spacing() {
        let scheduler = Scheduler::new(SchedulerConfig {
            rate: Some("600/min".parse().expect("rate")),
            safety_margin: 0.002,
            ..SchedulerConfig::default()
        });
        assert_eq!(scheduler.interval(), Some(Duration::from_micros(100_200)));
        scheduler.widen_margin();
        assert_eq!(scheduler.interval(), Some(Duration::from_micros(100_450)));
        assert_eq!(scheduler.pacing_report().widened, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn each_closure_of_the_gate_starts_a_new_cycle() {
        let scheduler = Scheduler::new(SchedulerConfig::default());
        let before = scheduler.acquire().await.expect("no caps");
        assert_eq!(before.cycle(), 0);
        scheduler.close_gate(Duration::from_secs(1));
        let after = scheduler.acquire().await.expect("no caps");
        assert_eq!(after.cycle(), 1, "sent after the gate reopened");
        assert!(
            before.cycle() < scheduler.gate_cycle(),
            "in flight when it closed"
        );
        assert_eq!(scheduler.pacing_report().gate_closures, 1);
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
        assert!(
            scheduler.drain_spend().is_empty(),
            "without a ledger nothing is kept for it"
        );
    }

    #[test]
    fn a_refused_request_gives_its_charge_back() {
        let now = at(2026, 11, 26) + 12 * 3600;
        let scheduler = Scheduler::new(SchedulerConfig {
            caps: Tier {
                daily: Some(2),
                ..Tier::default()
            },
            clock: WallClock::Fixed(now),
            keep_spend: true,
            ..SchedulerConfig::default()
        });
        assert_eq!(scheduler.check_budgets(now, true), Ok(()));
        assert_eq!(scheduler.check_budgets(now, true), Ok(()));
        assert!(scheduler.exhausted().is_some());
        scheduler.refund();
        assert_eq!(scheduler.exhausted(), None, "the refused one spent nothing");
        assert_eq!(scheduler.budgets()[Window::Day as usize].used, 1);
        let day = scheduler
            .drain_spend()
            .into_iter()
            .find(|s| s.window == LedgerWindow::Day)
            .expect("day spend");
        assert_eq!(day.count, 1, "the ledger is not charged for it either");
    }

    #[test]
    fn a_half_used_key_leaves_only_the_rest_minus_the_reserve() {
        let now = at(2026, 11, 26) + 12 * 3600;
        let scheduler = Scheduler::new(SchedulerConfig {
            caps: Tier {
                daily: Some(100),
                ..Tier::default()
            },
            used: Some(Usage {
                at: now,
                hour: 0,
                day: 50,
                month: 50,
            }),
            reserve: Reserve::Count(10),
            clock: WallClock::Fixed(now),
            keep_spend: true,
            ..SchedulerConfig::default()
        });
        let day = scheduler.budgets()[Window::Day as usize];
        assert_eq!((day.used, day.reserve, day.remaining), (50, 10, Some(40)));
        for i in 0..40 {
            assert_eq!(scheduler.check_budgets(now, true), Ok(()), "request {i}");
        }
        assert_eq!(
            scheduler.check_budgets(now, true).map_err(|e| e.window),
            Err(Window::Day)
        );
        assert_eq!(scheduler.exhausted().map(|e| e.window), Some(Window::Day));
        let mut spend = scheduler.drain_spend();
        spend.sort();
        let day_id = now.div_euclid(86_400);
        assert!(spend.contains(&Spend {
            window: LedgerWindow::Day,
            id: day_id,
            count: 40
        }));
        assert!(spend.contains(&Spend {
            window: LedgerWindow::Second,
            id: now,
            count: 40
        }));
        assert!(scheduler.drain_spend().is_empty(), "drained");
        // A resync says someone else spent less than we thought: room again.
        scheduler.resync(Usage {
            at: now,
            hour: 0,
            day: 80,
            month: 80,
        });
        assert_eq!(
            scheduler.budgets()[Window::Day as usize].remaining,
            Some(10)
        );
    }
}
