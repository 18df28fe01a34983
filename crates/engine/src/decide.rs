//! What to do after a failed attempt, as one pure function: [`decide`].
//!
//! The lookup loop only does I/O and waiting; every choice (retry after a delay, requeue
//! after a 429, close the gate for everyone, write an error record, stop the run) is made here
//! from plain values: the error's kind and class, how many retries the item had, what the
//! recent 429s and connection failures look like ([`Tracker`]), and whether our books say the
//! quota has room. So the rules are tested row by row, without a runtime or a server.
//!
//! The rules, in order:
//! - 404 is a result; 400-like errors are error records; 401/403 stop the run (that item an
//!   error record, the rest `skipped`).
//! - Transient failures are retried with capped exponential backoff and full jitter, up to the
//!   policy's retries; then an error record. Connection failures in a row with no answer from
//!   the API at all end the run as [`HaltCause::Unreachable`]: five when nothing has answered
//!   yet in this run, or after a minute when something had. Silence is an outage too: when
//!   requests in a row time out and nothing has answered for [`Policy::silence_limit`] (two
//!   request timeouts), the run ends as unreachable rather than retrying into the void; and
//!   replies that are not HTTP, or not JSON (an HTML page where the API should be),
//!   [`Policy::protocol_after`] in a row, say the URL is not an HTTP API at all: the same stop.
//! - A 429 is never an error and never an attempt. One answering a request that was already in
//!   flight when the gate closed says nothing new: wait at the gate. One that our books
//!   expected (a calendar window is spent) goes back to the scheduler, which stops or waits
//!   for the reset. One we did not expect is a timing miss: requeue the item after about one
//!   interval and widen the safety margin; only the [`Policy::escalate_after`]th in one gate
//!   cycle closes the gate for everyone, for the [`Tracker`]'s streak-th pause of
//!   `vtbulk-quota`'s backoff. 429s with no success in between for
//!   [`Policy::give_up_after`] end the run as [`HaltCause::RateLimited`].

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use vtbulk_quota::{BackoffPolicy, Window};
use vtbulk_vt::{ErrorClass, ErrorKind, RateLimitKind};

/// Why a run stopped taking lookups. Every item not looked up gets a `skipped` record whose
/// `error_code` is [`HaltCause::name`] (the skip reason, counted by it in the summary).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HaltCause {
    /// VirusTotal refused the key (401/403): `stopped_<code>`.
    Refused(ErrorKind),
    /// A calendar budget ran out: `quota_hourly`, `quota_daily`, `quota_monthly`.
    Quota(Window),
    /// 429s went on with no success for the policy's time: `quota_rate_limited`.
    RateLimited,
    /// The API could not be reached: `api_unreachable`.
    Unreachable,
    /// SIGINT/SIGTERM: `interrupted`.
    Interrupted,
    /// The output was closed (a pipe's reader went away): `output_closed`.
    OutputClosed,
    /// The fleet's coordinator (Redis) stayed lost longer than its grace: `coordinator_lost`.
    CoordinatorLost,
}

impl HaltCause {
    /// The skip reason written on the records this cause leaves unlooked-up.
    pub fn name(self) -> Cow<'static, str> {
        match self {
            HaltCause::Refused(kind) => Cow::Owned(format!("stopped_{}", kind.code())),
            HaltCause::Quota(Window::Hour) => Cow::Borrowed("quota_hourly"),
            HaltCause::Quota(Window::Day) => Cow::Borrowed("quota_daily"),
            HaltCause::Quota(Window::Month) => Cow::Borrowed("quota_monthly"),
            HaltCause::RateLimited => Cow::Borrowed("quota_rate_limited"),
            HaltCause::Unreachable => Cow::Borrowed("api_unreachable"),
            HaltCause::Interrupted => Cow::Borrowed("interrupted"),
            HaltCause::OutputClosed => Cow::Borrowed("output_closed"),
            HaltCause::CoordinatorLost => Cow::Borrowed("coordinator_lost"),
        }
    }
}

impl fmt::Display for HaltCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// What a 429 meant, as the summary counts them (`rate_limited_by_kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Throttle {
    /// Our books had room: the item was requeued and the margin widened.
    TimingMiss,
    /// Repeated in one gate cycle: the gate closed for everyone.
    Escalated,
    /// It answered a request sent before the gate closed: waited at the gate.
    InFlight,
    /// A window our books knew was spent.
    BudgetSpent,
    /// 429s went on too long: the run stopped.
    GaveUp,
}

impl Throttle {
    /// `timing_miss`, `escalated`, `in_flight`, `budget_spent`, `gave_up`.
    pub fn name(self) -> &'static str {
        match self {
            Throttle::TimingMiss => "timing_miss",
            Throttle::Escalated => "escalated",
            Throttle::InFlight => "in_flight",
            Throttle::BudgetSpent => "budget_spent",
            Throttle::GaveUp => "gave_up",
        }
    }
}

/// The rules' parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// Retries of transient failures, and their delays.
    pub retry: BackoffPolicy,
    /// The pauses of everyone when 429s repeat (equal jitter; `max_retries` unused).
    pub gate: BackoffPolicy,
    /// Unexpected 429s in one gate cycle that close the gate.
    pub escalate_after: u32,
    /// 429s with no success in between for this long stop the run.
    pub give_up_after: Duration,
    /// Connection failures in a row (no answer between) that stop a run nothing answered yet.
    pub unreachable_after: u32,
    /// How long connection failures in a row may last once the API had answered.
    pub outage_limit: Duration,
    /// The requeue delay after a timing miss when the rate is unlimited (no interval).
    pub unpaced_requeue: Duration,
    /// How long no request may have had any answer (timeouts in a row) before the run stops
    /// as unreachable: two request timeouts.
    pub silence_limit: Duration,
    /// Timeouts in a row (at least) before silence can stop the run.
    pub silent_after: u32,
    /// Replies in a row that are not HTTP or not JSON before the run stops as unreachable.
    pub protocol_after: u32,
}

impl Policy {
    /// The rules for a run at `interval` (`None`: unlimited) with these retries, this
    /// patience for 429s, and requests that wait `request_timeout` for their answer.
    pub fn new(
        retry: BackoffPolicy,
        interval: Option<Duration>,
        give_up_after: Duration,
        request_timeout: Duration,
    ) -> Self {
        Policy {
            retry,
            // One interval (at least 50 ms) first, doubling to a minute.
            gate: BackoffPolicy::doubling(
                interval.unwrap_or_default().max(Duration::from_millis(50)),
                Duration::from_secs(60),
            ),
            escalate_after: 3,
            give_up_after,
            unreachable_after: 5,
            outage_limit: Duration::from_secs(60),
            unpaced_requeue: Duration::from_millis(10),
            silence_limit: request_timeout.saturating_mul(2),
            silent_after: 3,
            protocol_after: 3,
        }
    }
}

/// Whether a failure says the server is not VirusTotal's JSON API: not HTTP at all, or a
/// success that is not JSON.
pub fn is_protocol_failure(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::NotHttp | ErrorKind::UnexpectedContentType)
}

/// A failed attempt, as the rules see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong.
    pub kind: ErrorKind,
    /// What its class says to do.
    pub class: ErrorClass,
}

impl Failure {
    /// The failure of a client error.
    pub fn of(e: &vtbulk_vt::Error) -> Failure {
        Failure {
            kind: e.kind(),
            class: e.class(),
        }
    }
}

/// Everything else the rules look at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Situation {
    /// Retries this item already had.
    pub attempt: u32,
    /// Our books say every calendar window has room now.
    pub books_have_room: bool,
    /// The request was granted before the 429 gate last closed (it was in flight).
    pub stale: bool,
    /// Unexpected 429s in this gate cycle, this one included.
    pub misses: u32,
    /// Gate closures in a row with no success.
    pub streak: u32,
    /// Since the first 429 with no success after it.
    pub limited_for: Duration,
    /// Connection failures in a row with no answer from the API between, this one included.
    pub connect_failures: u32,
    /// Since the first of them.
    pub failing_for: Duration,
    /// The API answered anything at all in this run.
    pub answered: bool,
    /// Requests in a row that timed out with no answer from the API between, this one
    /// included.
    pub silent_attempts: u32,
    /// How long nothing has answered: since the first of those requests was sent.
    pub silent_for: Duration,
    /// Replies in a row that were not HTTP or not JSON, this one included.
    pub protocol_failures: u32,
    /// The request spacing now (`None`: unlimited).
    pub interval: Option<Duration>,
    /// The budget was read live (an unexpected QuotaExceededError re-reads it).
    pub quota_live: bool,
    /// A random number in `[0, 1)` for jitter.
    pub unit: f64,
}

/// The next step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Next {
    /// A `not_found` record.
    NotFound,
    /// An `error` record with the failure's code.
    Fail,
    /// An `error` record, and the run stops.
    FailAndHalt(HaltCause),
    /// The run stops; this item is `skipped` too.
    Halt(HaltCause),
    /// Wait, then try again through the scheduler (an attempt).
    Retry(Duration),
    /// A 429: wait, then try again (not an attempt). `widen`: a timing miss, widen the margin;
    /// `resync`: re-read the key's quotas first.
    Requeue {
        /// The wait before going back to the scheduler.
        after: Duration,
        /// Widen the adaptive safety margin.
        widen: bool,
        /// Re-read the key's quotas.
        resync: bool,
    },
    /// Repeated 429s: close the gate for everyone for `pause`, then try again.
    CloseGate {
        /// How long everyone waits.
        pause: Duration,
        /// Re-read the key's quotas.
        resync: bool,
    },
}

/// The one place that decides what follows a failed attempt (see the module's rules).
pub fn decide(policy: &Policy, s: &Situation, failure: Failure) -> Next {
    if is_protocol_failure(failure.kind) && s.protocol_failures >= policy.protocol_after {
        return Next::Halt(HaltCause::Unreachable);
    }
    match failure.class {
        ErrorClass::NotFound => Next::NotFound,
        ErrorClass::Permanent => Next::Fail,
        ErrorClass::Fatal => Next::FailAndHalt(HaltCause::Refused(failure.kind)),
        ErrorClass::Retry => {
            if failure.kind == ErrorKind::Connect
                && s.connect_failures >= policy.unreachable_after
                && (!s.answered || s.failing_for >= policy.outage_limit)
            {
                return Next::Halt(HaltCause::Unreachable);
            }
            if failure.kind == ErrorKind::Timeout
                && s.silent_attempts >= policy.silent_after
                && s.silent_for >= policy.silence_limit
            {
                return Next::Halt(HaltCause::Unreachable);
            }
            if s.attempt < policy.retry.max_retries {
                Next::Retry(policy.retry.delay(s.attempt, s.unit))
            } else {
                Next::Fail
            }
        }
        ErrorClass::RateLimited(kind) => {
            if s.limited_for >= policy.give_up_after {
                return Next::Halt(HaltCause::RateLimited);
            }
            if s.stale || (kind == RateLimitKind::QuotaExceeded && !s.books_have_room) {
                // In flight when the gate closed, or a window our books know is spent: the
                // gate, or the scheduler's budget check, takes it from here.
                return Next::Requeue {
                    after: Duration::ZERO,
                    widen: false,
                    resync: false,
                };
            }
            let resync = kind == RateLimitKind::QuotaExceeded && s.quota_live;
            if s.misses >= policy.escalate_after {
                Next::CloseGate {
                    pause: policy.gate.pause(s.streak, s.unit),
                    resync,
                }
            } else {
                Next::Requeue {
                    after: s.interval.unwrap_or(policy.unpaced_requeue),
                    widen: true,
                    resync,
                }
            }
        }
    }
}

/// The run's recent 429s and connection failures: the state [`Situation`] is read from.
#[derive(Clone, Debug, Default)]
pub struct Tracker {
    cycle: u64,
    misses: u32,
    streak: u32,
    limited_since: Option<Duration>,
    connect_failures: u32,
    failing_since: Option<Duration>,
    answered: bool,
    silent: u32,
    silent_since: Option<Duration>,
    protocol: u32,
}

/// What the tracker says about one 429.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limited {
    /// In flight when the gate closed.
    pub stale: bool,
    /// Unexpected 429s in this cycle, this one included (0 when stale).
    pub misses: u32,
    /// Gate closures in a row with no success.
    pub streak: u32,
    /// Since the first 429 with no success after it.
    pub limited_for: Duration,
}

impl Tracker {
    /// The API answered (any status): connection failures are over. (Times given to the
    /// tracker are any monotonic clock's, as durations: the run's elapsed time.)
    pub fn answered(&mut self) {
        self.answered = true;
        self.connect_failures = 0;
        self.failing_since = None;
        self.silent = 0;
        self.silent_since = None;
        self.protocol = 0;
    }

    /// A found or not-found answer: the 429 streak is over.
    pub fn succeeded(&mut self) {
        self.answered();
        self.misses = 0;
        self.streak = 0;
        self.limited_since = None;
    }

    /// A 429 for a request granted in gate cycle `granted`, the gate being in `current`.
    pub fn rate_limited(&mut self, granted: u64, current: u64, now: Duration) -> Limited {
        self.answered();
        let since = *self.limited_since.get_or_insert(now);
        let stale = granted < current;
        if !stale {
            if self.cycle != current {
                self.cycle = current;
                self.misses = 0;
            }
            self.misses += 1;
        }
        Limited {
            stale,
            misses: if stale { 0 } else { self.misses },
            streak: self.streak,
            limited_for: now.saturating_sub(since),
        }
    }

    /// The gate closed for everyone: one more closure in the streak.
    pub fn gate_closed(&mut self) {
        self.streak = self.streak.saturating_add(1);
    }

    /// A connection could not be made: (failures in a row, how long they have lasted, whether
    /// the API ever answered).
    pub fn connect_failed(&mut self, now: Duration) -> (u32, Duration, bool) {
        self.connect_failures += 1;
        let since = *self.failing_since.get_or_insert(now);
        (
            self.connect_failures,
            now.saturating_sub(since),
            self.answered,
        )
    }

    /// A request sent at least `timeout` ago had no answer in time: (timeouts in a row with no
    /// answer between, how long nothing has answered: since the first of them was sent).
    pub fn timed_out(&mut self, now: Duration, timeout: Duration) -> (u32, Duration) {
        self.reached();
        self.silent += 1;
        let since = *self.silent_since.get_or_insert(now.saturating_sub(timeout));
        (self.silent, now.saturating_sub(since))
    }

    /// A reply that is not HTTP, or not JSON: such replies in a row (a reply is something
    /// heard: the silence is over).
    pub fn protocol_failed(&mut self) -> u32 {
        self.reached();
        self.silent = 0;
        self.silent_since = None;
        self.protocol += 1;
        self.protocol
    }

    /// Another kind of transport failure (the connection was made): the API is reachable.
    pub fn reached(&mut self) {
        self.connect_failures = 0;
        self.failing_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn policy() -> Policy {
        Policy::new(
            BackoffPolicy {
                max_retries: 3,
                ..BackoffPolicy::doubling(100 * MS, 1000 * MS)
            },
            Some(100 * MS),
            Duration::from_secs(300),
            Duration::from_secs(30),
        )
    }

    fn calm() -> Situation {
        Situation {
            attempt: 0,
            books_have_room: true,
            stale: false,
            misses: 1,
            streak: 0,
            limited_for: Duration::ZERO,
            connect_failures: 0,
            failing_for: Duration::ZERO,
            answered: true,
            silent_attempts: 0,
            silent_for: Duration::ZERO,
            protocol_failures: 0,
            interval: Some(100 * MS),
            quota_live: false,
            unit: 0.5,
        }
    }

    fn failure(kind: ErrorKind) -> Failure {
        Failure {
            kind,
            class: kind.class(),
        }
    }

    #[test]
    fn every_error_kind_has_a_decision_by_its_class_at_every_attempt() {
        let p = policy();
        for kind in ErrorKind::ALL {
            for attempt in 0..=4 {
                let s = Situation { attempt, ..calm() };
                let next = decide(&p, &s, failure(kind));
                let expected = match kind.class() {
                    ErrorClass::NotFound => Next::NotFound,
                    ErrorClass::Permanent => Next::Fail,
                    ErrorClass::Fatal => Next::FailAndHalt(HaltCause::Refused(kind)),
                    ErrorClass::Retry if attempt < 3 => Next::Retry(p.retry.delay(attempt, 0.5)),
                    ErrorClass::Retry => Next::Fail,
                    ErrorClass::RateLimited(_) => Next::Requeue {
                        after: 100 * MS,
                        widen: true,
                        resync: false,
                    },
                };
                assert_eq!(next, expected, "{kind:?} at attempt {attempt}");
            }
        }
    }

    #[test]
    fn retry_delays_double_under_full_jitter_up_to_the_cap() {
        let p = policy();
        for (attempt, ceiling) in [(0, 100), (1, 200), (2, 400)] {
            for unit in [0.0, 0.25, 0.999] {
                let s = Situation {
                    attempt,
                    unit,
                    ..calm()
                };
                match decide(&p, &s, failure(ErrorKind::Transient)) {
                    Next::Retry(d) => assert!(d <= ceiling * MS, "{attempt}: {d:?}"),
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    #[test]
    fn a_429_escalates_only_at_the_third_unexpected_miss_of_a_cycle() {
        let p = policy();
        for kind in [ErrorKind::TooManyRequests, ErrorKind::QuotaExceeded] {
            for misses in 1..=5 {
                for streak in 0..4 {
                    let s = Situation {
                        misses,
                        streak,
                        ..calm()
                    };
                    let next = decide(&p, &s, failure(kind));
                    if misses < 3 {
                        assert_eq!(
                            next,
                            Next::Requeue {
                                after: 100 * MS,
                                widen: true,
                                resync: false
                            },
                            "{kind:?} miss {misses}"
                        );
                    } else {
                        // One interval, doubling with the streak, equal jitter (unit 0.5).
                        let ceiling = (100 * MS) * 2u32.pow(streak);
                        assert_eq!(
                            next,
                            Next::CloseGate {
                                pause: ceiling.mul_f64(0.75),
                                resync: false
                            },
                            "{kind:?} miss {misses} streak {streak}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_429_for_a_request_in_flight_when_the_gate_closed_only_waits_at_the_gate() {
        let s = Situation {
            stale: true,
            misses: 0,
            streak: 5,
            ..calm()
        };
        for kind in [ErrorKind::TooManyRequests, ErrorKind::QuotaExceeded] {
            assert_eq!(
                decide(&policy(), &s, failure(kind)),
                Next::Requeue {
                    after: Duration::ZERO,
                    widen: false,
                    resync: false
                }
            );
        }
    }

    #[test]
    fn an_expected_quota_exceeded_goes_back_to_the_budget_check() {
        let s = Situation {
            books_have_room: false,
            misses: 7,
            quota_live: true,
            ..calm()
        };
        assert_eq!(
            decide(&policy(), &s, failure(ErrorKind::QuotaExceeded)),
            Next::Requeue {
                after: Duration::ZERO,
                widen: false,
                resync: false
            }
        );
        // TooManyRequests is not a budget: it is a miss whatever the books say.
        assert!(matches!(
            decide(&policy(), &s, failure(ErrorKind::TooManyRequests)),
            Next::CloseGate { resync: false, .. }
        ));
    }

    #[test]
    fn an_unexpected_quota_exceeded_on_a_live_budget_re_reads_it() {
        let s = Situation {
            quota_live: true,
            ..calm()
        };
        assert_eq!(
            decide(&policy(), &s, failure(ErrorKind::QuotaExceeded)),
            Next::Requeue {
                after: 100 * MS,
                widen: true,
                resync: true
            }
        );
        assert_eq!(
            decide(&policy(), &s, failure(ErrorKind::TooManyRequests)),
            Next::Requeue {
                after: 100 * MS,
                widen: true,
                resync: false
            }
        );
    }

    #[test]
    fn unpaced_runs_requeue_after_a_short_fixed_wait() {
        let s = Situation {
            interval: None,
            ..calm()
        };
        let p = Policy::new(
            BackoffPolicy::default(),
            None,
            Duration::from_secs(300),
            Duration::from_secs(60),
        );
        assert_eq!(p.gate.base, 50 * MS);
        assert_eq!(
            decide(&p, &s, failure(ErrorKind::TooManyRequests)),
            Next::Requeue {
                after: 10 * MS,
                widen: true,
                resync: false
            }
        );
    }

    #[test]
    fn rate_limits_that_persist_past_the_patience_stop_the_run() {
        let p = policy();
        for (limited_for, stale) in [(299, false), (300, false), (301, true)] {
            let s = Situation {
                limited_for: Duration::from_secs(limited_for),
                stale,
                ..calm()
            };
            let next = decide(&p, &s, failure(ErrorKind::TooManyRequests));
            assert_eq!(
                next == Next::Halt(HaltCause::RateLimited),
                limited_for >= 300,
                "{limited_for} s: {next:?}"
            );
        }
    }

    #[test]
    fn connection_failures_stop_a_run_that_never_reached_the_api_after_five() {
        let p = policy();
        for n in 1..=6 {
            let s = Situation {
                connect_failures: n,
                answered: false,
                attempt: 0,
                ..calm()
            };
            let next = decide(&p, &s, failure(ErrorKind::Connect));
            if n < 5 {
                assert!(matches!(next, Next::Retry(_)), "{n}: {next:?}");
            } else {
                assert_eq!(next, Next::Halt(HaltCause::Unreachable), "{n}");
            }
        }
        // Other transport failures reached the server: never "unreachable".
        let s = Situation {
            connect_failures: 9,
            answered: false,
            ..calm()
        };
        assert!(matches!(
            decide(&p, &s, failure(ErrorKind::Timeout)),
            Next::Retry(_)
        ));
    }

    #[test]
    fn once_the_api_answered_an_outage_must_last_a_minute_to_stop_the_run() {
        let p = policy();
        for (secs, halts) in [(0, false), (59, false), (60, true), (600, true)] {
            let s = Situation {
                connect_failures: 50,
                failing_for: Duration::from_secs(secs),
                answered: true,
                ..calm()
            };
            let next = decide(&p, &s, failure(ErrorKind::Connect));
            assert_eq!(
                next == Next::Halt(HaltCause::Unreachable),
                halts,
                "{secs} s"
            );
        }
    }

    #[test]
    fn silence_stops_the_run_after_two_request_timeouts_and_three_timeouts_in_a_row() {
        // The policy's request timeout is 30 s: silence of 60 s is the limit.
        let p = policy();
        for (attempts, secs, halts) in [
            (1, 600, false),
            (2, 600, false),
            (3, 59, false),
            (3, 60, true),
            (40, 61, true),
        ] {
            for attempt in [0, 3] {
                let s = Situation {
                    silent_attempts: attempts,
                    silent_for: Duration::from_secs(secs),
                    attempt,
                    ..calm()
                };
                let next = decide(&p, &s, failure(ErrorKind::Timeout));
                assert_eq!(
                    next == Next::Halt(HaltCause::Unreachable),
                    halts,
                    "{attempts} timeouts over {secs} s, attempt {attempt}: {next:?}"
                );
            }
        }
        // Silence counts timeouts only: a reset in the middle of it is retried as before.
        let s = Situation {
            silent_attempts: 9,
            silent_for: Duration::from_secs(600),
            ..calm()
        };
        assert!(matches!(
            decide(&p, &s, failure(ErrorKind::ConnectionReset)),
            Next::Retry(_)
        ));
    }

    #[test]
    fn replies_that_are_not_http_or_not_json_stop_the_run_at_the_third_in_a_row() {
        let p = policy();
        for kind in [ErrorKind::NotHttp, ErrorKind::UnexpectedContentType] {
            for n in 1..=4 {
                let s = Situation {
                    protocol_failures: n,
                    ..calm()
                };
                let next = decide(&p, &s, failure(kind));
                assert_eq!(
                    next == Next::Halt(HaltCause::Unreachable),
                    n >= 3,
                    "{kind:?} x{n}: {next:?}"
                );
            }
        }
        // A count left over says nothing about another kind of failure.
        let s = Situation {
            protocol_failures: 5,
            ..calm()
        };
        assert!(matches!(
            decide(&p, &s, failure(ErrorKind::Transient)),
            Next::Retry(_)
        ));
    }

    #[test]
    fn the_tracker_times_silence_from_the_first_unanswered_request_until_any_answer() {
        let mut t = Tracker::default();
        let s = Duration::from_secs;
        // Sent at 0, timed out at 30 (a 30 s timeout): silent since 0.
        assert_eq!(t.timed_out(s(30), s(30)), (1, s(30)));
        assert_eq!(t.timed_out(s(31), s(30)), (2, s(31)));
        // A reply that is not HTTP is heard: the silence is over, the protocol count starts.
        assert_eq!(t.protocol_failed(), 1);
        assert_eq!(t.timed_out(s(70), s(30)), (1, s(30)));
        assert_eq!(t.protocol_failed(), 2);
        t.answered();
        assert_eq!(t.protocol_failed(), 1);
        t.answered();
        assert_eq!(t.timed_out(s(100), s(30)), (1, s(30)));
    }

    #[test]
    fn the_tracker_counts_a_streak_once_per_gate_cycle() {
        let mut t = Tracker::default();
        let s = Duration::from_secs;
        // Three misses in cycle 0; the third closes the gate (cycle 1).
        assert_eq!(t.rate_limited(0, 0, s(0)).misses, 1);
        assert_eq!(t.rate_limited(0, 0, s(0)).misses, 2);
        let third = t.rate_limited(0, 0, s(1));
        assert_eq!((third.misses, third.streak), (3, 0));
        t.gate_closed();
        // Seventeen more answers to requests sent before the closure: stale, not counted.
        for _ in 0..17 {
            let late = t.rate_limited(0, 1, s(1));
            assert!(late.stale);
            assert_eq!((late.misses, late.streak), (0, 1));
        }
        // Sent after it reopened: counted in the new cycle.
        let next = t.rate_limited(1, 1, s(2));
        assert_eq!((next.stale, next.misses, next.streak), (false, 1, 1));
        assert_eq!(next.limited_for, s(2));
        // A success ends it all.
        t.succeeded();
        let fresh = t.rate_limited(1, 1, s(9));
        assert_eq!((fresh.misses, fresh.streak), (1, 0));
        assert_eq!(fresh.limited_for, Duration::ZERO);
    }

    #[test]
    fn the_tracker_counts_connection_failures_until_any_answer() {
        let mut t = Tracker::default();
        let s = Duration::from_secs;
        assert_eq!(t.connect_failed(s(1)), (1, s(0), false));
        assert_eq!(t.connect_failed(s(3)), (2, s(2), false));
        t.reached();
        assert_eq!(t.connect_failed(s(4)), (1, s(0), false));
        t.answered();
        assert_eq!(t.connect_failed(s(5)), (1, s(0), true));
    }

    #[test]
    fn halt_causes_name_their_skip_reasons() {
        let rows = [
            (
                HaltCause::Refused(ErrorKind::WrongCredentials),
                "stopped_WrongCredentialsError",
            ),
            (HaltCause::Quota(Window::Day), "quota_daily"),
            (HaltCause::RateLimited, "quota_rate_limited"),
            (HaltCause::Unreachable, "api_unreachable"),
            (HaltCause::Interrupted, "interrupted"),
            (HaltCause::OutputClosed, "output_closed"),
            (HaltCause::CoordinatorLost, "coordinator_lost"),
        ];
        for (cause, name) in rows {
            assert_eq!(cause.name(), name);
            assert_eq!(cause.to_string(), name);
        }
        assert_eq!(HaltCause::Quota(Window::Hour).name(), "quota_hourly");
        assert_eq!(HaltCause::Quota(Window::Month).name(), "quota_monthly");
    }
}
