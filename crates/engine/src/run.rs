//! The run-wide types: how a run ends ([`Outcome`]), why it cannot start or write
//! ([`EngineError`]), and how it is stopped, from outside ([`StopHandle`]) or from within
//! ([`Halt`]).
//!
//! Every stage sees these, so they sit at the bottom of the engine: this module imports only
//! `decide`'s [`HaltCause`] (the rules name why a run stops), and nothing imports back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use vtbulk_store::StoreError;

use crate::decide::HaltCause;

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every IOC has a final record, none an error.
    Completed,
    /// Every IOC has a final record, some are errors.
    CompletedWithErrors,
    /// VirusTotal refused the key (401/403): the rest is `skipped`.
    AuthFailed,
    /// A budget ran out (or 429s would not stop): the rest is `skipped`.
    QuotaExhausted,
    /// Stopped from outside (SIGINT/SIGTERM): the rest is `skipped`.
    Interrupted,
    /// The API could not be reached (connections failed in a row): the rest is `skipped`.
    Unreachable,
    /// The output was closed (a pipe's reader went away): no more lookups.
    OutputClosed,
    /// The fleet's coordinator (Redis) was lost mid-run for longer than its grace: no request
    /// left while it was gone; the rest is `skipped`.
    CoordinatorLost,
}

impl Outcome {
    /// The name in the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::CompletedWithErrors => "completed_with_errors",
            Outcome::AuthFailed => "auth_failed",
            Outcome::QuotaExhausted => "quota_exhausted",
            Outcome::Interrupted => "interrupted",
            Outcome::Unreachable => "unreachable",
            Outcome::OutputClosed => "output_closed",
            Outcome::CoordinatorLost => "coordinator_lost",
        }
    }
}

impl From<HaltCause> for Outcome {
    /// How a run that halted for `cause` ends.
    fn from(cause: HaltCause) -> Outcome {
        match cause {
            HaltCause::Refused(_) => Outcome::AuthFailed,
            HaltCause::Quota(_) | HaltCause::RateLimited => Outcome::QuotaExhausted,
            HaltCause::Unreachable => Outcome::Unreachable,
            HaltCause::Interrupted => Outcome::Interrupted,
            HaltCause::OutputClosed => Outcome::OutputClosed,
            HaltCause::CoordinatorLost => Outcome::CoordinatorLost,
        }
    }
}

/// A run cannot start or cannot write.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// An input cannot be opened or read.
    #[error("failed to read input {name}: {source}")]
    Input {
        /// The input.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// The output cannot be written.
    #[error("failed to write the output: {0}")]
    Output(std::io::Error),
    /// The cache cannot be opened (foreign, damaged, newer, unreadable).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// VirusTotal refused the key when its quotas were read (`vtbulk plan`).
    #[error("VirusTotal refused the key: {0}")]
    Refused(vtbulk_vt::Error),
    /// The coordinator (`--coordinator`) cannot be used: nothing was looked up.
    #[error(transparent)]
    Coordinator(#[from] vtbulk_coord::CoordError),
}

impl EngineError {
    /// A blocking task of the run died (a panic): reported as an output failure, the run's
    /// records being incomplete.
    pub(crate) fn task(join: tokio::task::JoinError) -> EngineError {
        EngineError::Output(std::io::Error::other(join.to_string()))
    }
}

/// Stops a run from outside: no new lookups, in-flight ones finish, the rest is `skipped`.
#[derive(Clone, Debug, Default)]
pub struct StopHandle {
    flag: Arc<AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
}

impl StopHandle {
    /// Asks the run to stop.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
    }

    fn requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// Why workers stopped taking work: the first cause wins; setting it (or a stop from outside)
/// wakes every waiting worker (at the gate, the limiter, a backoff), which records its item
/// as `skipped`.
#[derive(Debug)]
pub(crate) struct Halt {
    cause: Mutex<Option<HaltCause>>,
    flag: AtomicBool,
    /// What stopped the run, in words (the last connection error, for `api_unreachable`).
    detail: Mutex<Option<String>>,
    stop: StopHandle,
}

impl Halt {
    /// A run's halt, woken by `stop` too.
    pub(crate) fn new(stop: StopHandle) -> Halt {
        Halt {
            cause: Mutex::new(None),
            flag: AtomicBool::new(false),
            detail: Mutex::new(None),
            stop,
        }
    }

    /// Halts the run for `cause` (unless it halted already) and wakes every waiter.
    pub(crate) fn set(&self, cause: HaltCause) {
        lock(&self.cause).get_or_insert(cause);
        self.flag.store(true, Ordering::SeqCst);
        self.stop.wake.notify_waiters();
    }

    /// Halts the run for `cause`, saying why in words (the first words stay).
    pub(crate) fn set_because(&self, cause: HaltCause, detail: impl std::fmt::Display) {
        lock(&self.detail).get_or_insert_with(|| detail.to_string());
        self.set(cause);
    }

    /// Why the run halted, if it did.
    pub(crate) fn get(&self) -> Option<HaltCause> {
        if !self.flag.load(Ordering::SeqCst) {
            return None;
        }
        *lock(&self.cause)
    }

    /// Why the run halted, a stop from outside becoming [`HaltCause::Interrupted`] here: a
    /// worker about to take or send work checks this, so whoever looks first halts the run.
    pub(crate) fn check(&self) -> Option<HaltCause> {
        if self.stop.requested() {
            self.set(HaltCause::Interrupted);
        }
        self.get()
    }

    /// What stopped the run, in words.
    pub(crate) fn detail(&self) -> Option<String> {
        lock(&self.detail).clone()
    }

    /// A wake-up for the next halt or stop. Register it (`enable`) before checking
    /// [`Halt::get`], so a halt between the check and the wait is not missed.
    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.stop.wake.notified()
    }
}

/// The mutex's value, whoever panicked holding it (every value here stays consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_cause_wins_and_a_stop_from_outside_is_an_interruption() {
        let stop = StopHandle::default();
        let halt = Halt::new(stop.clone());
        assert_eq!(halt.get(), None);
        halt.set_because(HaltCause::Unreachable, "connection refused");
        halt.set_because(HaltCause::OutputClosed, "later");
        assert_eq!(halt.get(), Some(HaltCause::Unreachable));
        assert_eq!(halt.detail().as_deref(), Some("connection refused"));
        let halt = Halt::new(stop.clone());
        stop.stop();
        assert_eq!(halt.get(), None, "not looked at yet");
        assert_eq!(halt.check(), Some(HaltCause::Interrupted));
        assert_eq!(halt.get(), Some(HaltCause::Interrupted));
    }

    #[test]
    fn every_halt_cause_ends_the_run_its_way() {
        use vtbulk_quota::Window;
        use vtbulk_vt::ErrorKind;
        let rows = [
            (
                HaltCause::Refused(ErrorKind::WrongCredentials),
                Outcome::AuthFailed,
            ),
            (HaltCause::Quota(Window::Day), Outcome::QuotaExhausted),
            (HaltCause::RateLimited, Outcome::QuotaExhausted),
            (HaltCause::Unreachable, Outcome::Unreachable),
            (HaltCause::Interrupted, Outcome::Interrupted),
            (HaltCause::OutputClosed, Outcome::OutputClosed),
            (HaltCause::CoordinatorLost, Outcome::CoordinatorLost),
        ];
        for (cause, outcome) in rows {
            assert_eq!(Outcome::from(cause), outcome, "{cause}");
        }
    }
}
