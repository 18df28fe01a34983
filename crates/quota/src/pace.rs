//! Spacing from real departures: the interval holds between the moments requests leave, not
//! between the moments they were allowed to.
//!
//! A grant is not a departure. A request granted on time can leave late (a busy host wakes the
//! sender a few milliseconds late, a connection is not ready), and a strict limiter on the
//! other side (one request per `60/q` s, no burst) then refuses the *next* request, which left
//! on its schedule. So a grant holds the pacer's one [`Slot`] until its request has left (the
//! transport reports the first write to the socket), and the next grant waits for
//! `last departure + interval`: a late request pushes the next one back. GCRA (governor, burst
//! 1) still runs beside it, so the sliding-minute guarantee holds from grants as well.
//!
//! The interval is the rate's, stretched by the configured safety margin and by an adaptive
//! one. A 429 our books did not expect is a timing miss ([`Pacer::widen`]): the extra margin
//! grows by a step (0.25% of the interval, at least 0.25 ms: servers count in whole
//! milliseconds) up to +5%. It decays back by half every [`HALF_LIFE`] departures, but not
//! below one step above the level at which the last miss happened (that level is known to be
//! too little); that memory itself fades, by half every [`FLOOR_HALF_LIFE`] departures. So a
//! passing hiccup costs a little for a while, and a server that needs more spacing than the
//! quota says (nginx's integer arithmetic makes 1000/min a 61 ms spacing) costs a few misses
//! once, not one every few hundred requests.
//!
//! The answer says something too. A strict limiter stamps a request when it handles it, and a
//! server that woke late stamps late: the next request, on time by our clock, then looks early
//! to it. An answer that comes back later than the quickest recent round trip shows that the
//! server handled its request late by up to that much, so when nothing else has left since,
//! the next request waits that much longer ([`Pacer::answered`]; at most 5 ms and 5% of the
//! interval, so a slow, jittery network costs little; each timing miss doubles that cap, up to
//! a quarter of the interval, since a refusal shows the server stamps later than it allowed
//! for). The answer's time is when its first bytes reached this host (the kernel's receive
//! timestamp, `vtbulk_vt::Arrival`), not when this process got round to reading them: on a busy
//! host the reader wakes milliseconds late, and counting that as the server's lateness made
//! every request wait for it (0.6-0.8 s in 50 s with a CPU hog per core). Where round trips are
//! longer than the interval (several requests in flight), answers come too late to matter and
//! change nothing.
//!
//! The lateness that remains is kept in [`Histogram`]s and reported: from the moment a
//! request was allowed to leave to its grant (how late this process woke), and from the
//! grant to its departure (how long the send took to reach the socket).

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

/// One step of the adaptive margin, as a share of the interval (at least [`MARGIN_STEP_MS`]).
pub const MARGIN_STEP: f64 = 0.0025;
/// The smallest step of the adaptive margin, milliseconds: servers count whole milliseconds.
pub const MARGIN_STEP_MS: f64 = 0.25;
/// The most the adaptive margin adds.
pub const MARGIN_MAX: f64 = 0.05;
/// Departures over which the adaptive margin halves.
pub const HALF_LIFE: f64 = 64.0;
/// Departures over which the memory of the last miss's level halves.
pub const FLOOR_HALF_LIFE: f64 = 4096.0;

/// The turn to send: held from a grant until its request departs.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// When the last request really left.
    pub(crate) last_departure: Option<Instant>,
}

/// The most an answer pushes the next request back at first: this, and 5% of the interval.
/// Each timing miss doubles the cap, up to [`ANSWER_PUSH_LIMIT`] of the interval: a server
/// that refused a request has shown that it stamps later than the cap allowed for.
pub const ANSWER_PUSH_MAX: Duration = Duration::from_millis(5);
/// The most the answer-push cap grows to, as a share of the interval.
pub const ANSWER_PUSH_LIMIT: f64 = 0.25;

/// A request that left: what its answer is matched against (`Pacer::answered`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Departure {
    /// The departure's number in the run (the pacer counts them).
    seq: u64,
    /// When it left.
    at: Instant,
}

impl Departure {
    /// When the request left.
    pub fn at(&self) -> Instant {
        self.at
    }
}

/// What answers taught the pacer: the quickest recent round trip, and how far answers pushed
/// the next request.
#[derive(Debug, Default)]
struct Answers {
    /// A decaying minimum of round trips (creeps up to the typical one, drops at once).
    quickest: Option<Duration>,
    /// The next request may not leave before this.
    not_before: Option<Instant>,
    /// The most one answer pushes the next request now (`None`: the starting cap).
    cap: Option<Duration>,

    pushes: u64,
    pushed: Duration,
}

/// Counts of a distribution of durations, in log-linear buckets (16 per power of two, so a
/// quantile is within about 6%); the maximum is exact.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

const SUB: u32 = 16;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; (SUB as usize) * 61],
            total: 0,
            max: 0,
        }
    }
}

impl Histogram {
    fn bucket(v: u64) -> usize {
        if v < u64::from(SUB) {
            return v as usize;
        }
        let exp = 63 - v.leading_zeros(); // >= 4
        let shift = exp - SUB.trailing_zeros();
        (SUB * (exp - SUB.trailing_zeros() + 1) + ((v >> shift) as u32 & (SUB - 1))) as usize
    }

    /// The largest value that falls into `bucket`.
    fn upper(bucket: usize) -> u64 {
        let b = bucket as u32;
        if b < SUB {
            return u64::from(b);
        }
        let exp = b / SUB - 1 + SUB.trailing_zeros();
        let shift = exp - SUB.trailing_zeros();
        let low = (u64::from(SUB) | u64::from(b % SUB)) << shift;
        low + (1u64 << shift) - 1
    }

    /// Adds one value.
    pub fn record(&mut self, v: u64) {
        let b = Self::bucket(v).min(self.counts.len() - 1);
        self.counts[b] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The exact maximum (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1): the upper bound of its bucket, never above the
    /// maximum; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Self::upper(b).min(self.max);
            }
        }
        self.max
    }
}

/// The adaptive part of the margin: a share of the interval that decays with departures.
#[derive(Debug, Default)]
struct Adaptive {
    extra: f64,
    /// The extra margin in force at the last miss (known to be too little), fading.
    floor: f64,
    peak: f64,
    widened: u64,
}

/// What the pacer did, for the summary.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PacingReport {
    /// The interval the rate asks for, milliseconds (`None`: unlimited).
    pub interval_ms: Option<f64>,
    /// The configured safety margin (a share of the interval).
    pub margin_base: f64,
    /// The adaptive margin in force at the end (added to the base).
    pub margin_end: f64,
    /// The largest adaptive margin of the run.
    pub margin_peak: f64,
    /// Timing misses that widened the margin.
    pub widened: u64,
    /// Answers slower than the quickest recent round trip that pushed the next request back.
    pub answer_pushes: u64,
    /// How far they pushed, in all, milliseconds.
    pub answer_pushed_ms: f64,
    /// Requests that left (their bytes were handed to the kernel).
    pub departures: u64,
    /// Grants given back without a request leaving (a connection failed first, the run
    /// stopped): their slot counted as used at release.
    pub released_unsent: u64,
    /// Grant to departure, microseconds.
    pub lateness_us: Lateness,
    /// The moment a request was allowed to leave (its spacing from the last departure) to
    /// its grant, microseconds: how late this process woke (a busy host).
    pub grant_lateness_us: Lateness,
    /// Times the 429 gate closed for everyone.
    pub gate_closures: u64,
}

/// A distribution's summary, microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Lateness {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

impl Lateness {
    fn of(h: &Histogram) -> Lateness {
        Lateness {
            p50: h.quantile(0.5),
            p99: h.quantile(0.99),
            max: h.max(),
        }
    }
}

/// The departure-spacing state shared by the scheduler and its outstanding grants.
#[derive(Debug)]
pub(crate) struct Pacer {
    /// The rate's interval (no margin); `None`: unlimited (no spacing, lateness still kept).
    pub(crate) interval: Option<Duration>,
    /// The configured margin.
    pub(crate) margin: f64,
    pub(crate) slot: Arc<tokio::sync::Mutex<Slot>>,
    adaptive: Mutex<Adaptive>,
    lateness: Mutex<Histogram>,
    grant_lateness: Mutex<Histogram>,
    released_unsent: std::sync::atomic::AtomicU64,
    /// Departures so far (a departure's `seq` is the count before it).
    departures: std::sync::atomic::AtomicU64,
    answers: Mutex<Answers>,
}

impl Pacer {
    pub(crate) fn new(interval: Option<Duration>, margin: f64) -> Pacer {
        Pacer {
            interval,
            margin: margin.max(0.0),
            slot: Arc::new(tokio::sync::Mutex::new(Slot::default())),
            adaptive: Mutex::new(Adaptive::default()),
            lateness: Mutex::new(Histogram::default()),
            grant_lateness: Mutex::new(Histogram::default()),
            released_unsent: std::sync::atomic::AtomicU64::new(0),
            departures: std::sync::atomic::AtomicU64::new(0),
            answers: Mutex::new(Answers::default()),
        }
    }

    fn answers(&self) -> std::sync::MutexGuard<'_, Answers> {
        self.answers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The earliest the next request may leave because of an answer (see the module doc).
    pub(crate) fn not_before(&self) -> Option<Instant> {
        self.answers().not_before
    }

    /// A grant came `late` after the moment its request was allowed to leave.
    pub(crate) fn granted_late(&self, late: Duration) {
        self.grant_lateness
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(late.as_micros() as u64);
    }

    /// The answer to `departure` arrived at `at`: when it took longer than the quickest
    /// recent round trip and nothing has left since, the next request waits the difference
    /// (capped).
    pub(crate) fn answered(&self, departure: Departure, at: Instant) -> Duration {
        let Some(interval) = self.interval else {
            return Duration::ZERO;
        };
        let took = at.saturating_duration_since(departure.at);
        let mut a = self.answers();
        let quickest = match a.quickest {
            Some(q) if took >= q => q + (took - q) / 256,
            _ => took,
        };
        a.quickest = Some(quickest);
        let last = self.departures.load(std::sync::atomic::Ordering::SeqCst);
        if departure.seq + 1 != last {
            // Another request left since: too late to help it.
            return Duration::ZERO;
        }
        let cap = a.cap.unwrap_or_else(|| ANSWER_PUSH_MAX.min(interval / 20));
        let push = took.saturating_sub(quickest).min(cap);
        if push.is_zero() {
            return push;
        }
        let spacing = self.spacing().unwrap_or(interval);
        let until = departure.at + spacing + push;
        if a.not_before.is_none_or(|t| t < until) {
            a.not_before = Some(until);
            a.pushes += 1;
            a.pushed += push;
        }
        push
    }

    fn adaptive(&self) -> std::sync::MutexGuard<'_, Adaptive> {
        self.adaptive.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The spacing in force now: the interval stretched by both margins.
    pub(crate) fn spacing(&self) -> Option<Duration> {
        let extra = self.adaptive().extra;
        self.interval.map(|i| i.mul_f64(1.0 + self.margin + extra))
    }

    /// One step of the adaptive margin: [`MARGIN_STEP`] of the interval, at least
    /// [`MARGIN_STEP_MS`].
    fn step(&self) -> f64 {
        let ms = self
            .interval
            .map_or(f64::INFINITY, |i| i.as_secs_f64() * 1000.0);
        MARGIN_STEP.max(MARGIN_STEP_MS / ms)
    }

    /// A timing miss: widen the adaptive margin by one step (up to the maximum), and remember
    /// that the level in force was too little.
    pub(crate) fn widen(&self) {
        if let Some(interval) = self.interval {
            let mut answers = self.answers();
            let cap = answers
                .cap
                .unwrap_or_else(|| ANSWER_PUSH_MAX.min(interval / 20));
            answers.cap = Some((cap * 2).min(interval.mul_f64(ANSWER_PUSH_LIMIT)));
        }
        let step = self.step();
        let mut a = self.adaptive();
        a.floor = a.floor.max(a.extra);
        a.extra = (a.extra + step).min(MARGIN_MAX);
        a.peak = a.peak.max(a.extra);
        a.widened += 1;
    }

    /// The adaptive margin now.
    #[cfg(test)]
    pub(crate) fn extra(&self) -> f64 {
        self.adaptive().extra
    }

    fn departed(&self, slot: &mut Slot, granted: Instant, at: Instant) -> Departure {
        slot.last_departure = Some(slot.last_departure.map_or(at, |d| d.max(at)));
        let seq = self
            .departures
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let late = at.saturating_duration_since(granted).as_micros() as u64;
        self.lateness
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(late);
        let step = self.step();
        let mut a = self.adaptive();
        if a.extra > 0.0 {
            a.floor *= 0.5f64.powf(1.0 / FLOOR_HALF_LIFE);
            if a.floor < step / 2.0 {
                a.floor = 0.0;
            }
            let bound = if a.floor > 0.0 {
                (a.floor + step).min(MARGIN_MAX)
            } else {
                0.0
            };
            a.extra = (a.extra * 0.5f64.powf(1.0 / HALF_LIFE)).max(bound.min(a.extra));
            if a.extra < 1e-6 {
                a.extra = 0.0;
            }
        }
        Departure { seq, at }
    }

    pub(crate) fn report(&self, gate_closures: u64) -> PacingReport {
        let h = self
            .lateness
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (answer_pushes, answer_pushed) = {
            let answers = self.answers();
            (answers.pushes, answers.pushed)
        };
        let a = self.adaptive();
        PacingReport {
            interval_ms: self.interval.map(|i| i.as_secs_f64() * 1000.0),
            margin_base: self.margin,
            margin_end: a.extra,
            margin_peak: a.peak,
            widened: a.widened,
            answer_pushes,
            answer_pushed_ms: answer_pushed.as_secs_f64() * 1000.0,
            departures: h.count(),
            released_unsent: self
                .released_unsent
                .load(std::sync::atomic::Ordering::Relaxed),
            lateness_us: Lateness::of(&h),
            grant_lateness_us: Lateness::of(
                &self
                    .grant_lateness
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()),
            ),
            gate_closures,
        }
    }
}

/// Permission to send one request now. Pass it to the request's departure callback
/// ([`Grant::departed`]); dropped without that (the request never left), its slot counts as
/// used at the moment of the drop, which is safe: the next request waits a full interval.
#[derive(Debug)]
pub struct Grant {
    pub(crate) pacer: Arc<Pacer>,
    /// The turn, when the rate is limited.
    pub(crate) slot: Option<OwnedMutexGuard<Slot>>,
    pub(crate) granted_at: Instant,
    pub(crate) cycle: u64,
    pub(crate) done: bool,
}

impl Grant {
    /// The request left at `at`: the next one is spaced from here. Give the returned
    /// [`Departure`] to [`crate::Scheduler::answered`] when the answer arrives.
    pub fn departed(mut self, at: Instant) -> Departure {
        self.done = true;
        let mut slot = self.slot.take();
        let mut scratch = Slot::default();
        let target = slot.as_deref_mut().unwrap_or(&mut scratch);
        self.pacer.departed(target, self.granted_at, at)
    }

    /// The 429 gate's cycle when this was granted: a 429 answering a request from an earlier
    /// cycle was already in flight when the gate closed, and says nothing new.
    pub fn cycle(&self) -> u64 {
        self.cycle
    }

    /// When it was granted.
    pub fn granted_at(&self) -> Instant {
        self.granted_at
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(slot) = self.slot.as_deref_mut() {
            slot.last_departure = Some(Instant::now());
        }
        self.pacer
            .released_unsent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_within_a_bucket_and_the_max_is_exact() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        let p50 = h.quantile(0.5);
        assert!((5_000..=5_000 + 5_000 / 16 + 1).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99);
        assert!((9_900..=10_000).contains(&p99), "{p99}");
        assert_eq!(h.max(), 10_000);
        assert_eq!(h.quantile(1.0), 10_000);
        assert_eq!(Histogram::default().quantile(0.5), 0);
        // Every value lies at or below its bucket's upper bound, above the previous one's.
        for v in [0u64, 15, 16, 17, 31, 32, 1_000, 123_456_789, u64::MAX >> 4] {
            let b = Histogram::bucket(v);
            assert!(Histogram::upper(b) >= v, "{v}");
            if b > 0 {
                assert!(Histogram::upper(b - 1) < v, "{v}");
            }
        }
    }

    #[test]
    fn the_adaptive_margin_widens_by_steps_up_to_a_cap_and_halves_over_its_half_life() {
        let pacer = Pacer::new(Some(Duration::from_millis(100)), 0.002);
        assert_eq!(pacer.spacing(), Some(Duration::from_micros(100_200)));
        // One miss from nothing: the floor is 0, so the step decays all the way back.
        pacer.widen();
        assert!((pacer.extra() - MARGIN_STEP).abs() < 1e-12);
        assert_eq!(pacer.spacing(), Some(Duration::from_micros(100_450)));
        let t = Instant::now();
        let mut slot = Slot::default();
        for _ in 0..HALF_LIFE as usize {
            pacer.departed(&mut slot, t, t);
        }
        assert!(
            (pacer.extra() - MARGIN_STEP / 2.0).abs() < 1e-9,
            "{}",
            pacer.extra()
        );
        for _ in 0..100 {
            pacer.widen();
        }
        assert!((pacer.extra() - MARGIN_MAX).abs() < 1e-12, "capped");
        let report = pacer.report(0);
        assert_eq!(report.widened, 101);
        assert!((report.margin_peak - MARGIN_MAX).abs() < 1e-12);
        assert_eq!(report.departures, HALF_LIFE as u64);
    }

    #[test]
    fn a_slow_answer_pushes_the_next_request_back_by_its_excess_capped_and_only_when_it_is_next() {
        let ms = Duration::from_millis;
        let pacer = Pacer::new(Some(ms(100)), 0.0);
        let t = Instant::now();
        let mut slot = Slot::default();
        // Quick round trips set the floor: no push.
        for i in 0..4 {
            let d = pacer.departed(&mut slot, t + ms(100 * i), t + ms(100 * i));
            pacer.answered(d, d.at() + Duration::from_micros(300));
        }
        assert_eq!(pacer.not_before(), None);
        // The server handled this one 3 ms late: the next waits 3 ms more (less the creep).
        let d = pacer.departed(&mut slot, t + ms(400), t + ms(400));
        pacer.answered(d, d.at() + Duration::from_micros(3_300));
        let pushed = pacer.not_before().expect("pushed") - (t + ms(500));
        assert!(
            pushed > Duration::from_micros(2_900) && pushed <= ms(3),
            "{pushed:?}"
        );
        // 40 ms late: capped at 5 ms (and 5% of the interval).
        let d = pacer.departed(&mut slot, t + ms(510), t + ms(510));
        pacer.answered(d, d.at() + ms(40));
        assert_eq!(pacer.not_before(), Some(t + ms(615)));
        // An answer that comes after another request left changes nothing.
        let d1 = pacer.departed(&mut slot, t + ms(620), t + ms(620));
        let _d2 = pacer.departed(&mut slot, t + ms(720), t + ms(720));
        pacer.answered(d1, d1.at() + ms(4));
        assert_eq!(pacer.not_before(), Some(t + ms(615)));
        let report = pacer.report(0);
        assert_eq!(report.answer_pushes, 2);
        // Unlimited: nothing to push.
        let free = Pacer::new(None, 0.0);
        let d = free.departed(&mut slot, t, t);
        free.answered(d, t + ms(50));
        assert_eq!(free.not_before(), None);
    }

    #[test]
    fn each_timing_miss_doubles_the_answer_push_cap_up_to_a_quarter_of_the_interval() {
        let ms = Duration::from_millis;
        let pacer = Pacer::new(Some(ms(100)), 0.0);
        let t = Instant::now();
        let mut slot = Slot::default();
        let d = pacer.departed(&mut slot, t, t);
        pacer.answered(d, t + Duration::from_micros(300));
        // How far an answer `late` after the quickest round trip pushes the next request.
        let mut push_for = |at: u64, late: Duration| {
            let d = pacer.departed(&mut slot, t + ms(at), t + ms(at));
            pacer.answered(d, d.at() + Duration::from_micros(300) + late);
            let spacing = pacer.spacing().expect("limited");
            pacer.not_before().expect("pushed") - (d.at() + spacing)
        };
        // A server 14 ms late: a push of 5 ms at first (the creeping minimum takes a little).
        let near = |got: Duration, want: Duration| want - got < Duration::from_micros(200);
        assert!(near(push_for(100, ms(14)), ms(5)));
        pacer.widen();
        assert!(near(push_for(200, ms(14)), ms(10)));
        pacer.widen();
        let third = push_for(300, ms(14));
        assert!(near(third, ms(14)) && third < ms(14), "{third:?}");
        for _ in 0..10 {
            pacer.widen();
        }
        assert_eq!(
            push_for(400, ms(90)),
            ms(25),
            "capped at a quarter of the interval"
        );
    }

    #[test]
    fn after_repeated_misses_the_margin_stays_a_step_above_the_level_that_missed() {
        // 1000/min against a server that needs 61 ms: misses at +0, +0.42%, +0.83%, +1.25%.
        let pacer = Pacer::new(Some(Duration::from_millis(60)), 0.002);
        let step = 0.25 / 60.0;
        for _ in 0..4 {
            pacer.widen();
        }
        assert!((pacer.extra() - 4.0 * step).abs() < 1e-12);
        let t = Instant::now();
        let mut slot = Slot::default();
        for _ in 0..2_000 {
            pacer.departed(&mut slot, t, t);
        }
        // Not back to the level that missed last (3 steps) within the floor's half-life.
        assert!(pacer.extra() > 3.0 * step, "{}", pacer.extra());
        // The memory fades: after many floor half-lives the margin is gone.
        for _ in 0..(FLOOR_HALF_LIFE as usize * 8) {
            pacer.departed(&mut slot, t, t);
        }
        assert_eq!(pacer.extra(), 0.0);
    }
}
