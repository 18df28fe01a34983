//! One IOC (a hash; a URL, domain or IP address), from the worker's hands to its final
//! record: the only place that talks to VirusTotal during a run.
//!
//! Each attempt is three steps, in this order, so the request leaves the moment it is allowed
//! to (`attempt`): take a connection with nothing left to wait for
//! ([`vtbulk_vt::Client::ready`]; a failure here spends nothing), wait for the scheduler's
//! grant (the 429 gate, the spacing from the last real departure, the calendar budgets) and
//! the fleet's, then send at once, handing the grant to the request's departure callback. A
//! failed attempt goes to [`decide`] and the answer is carried out here: retry, requeue,
//! close the gate, record, or stop the run. An unknown URL may be submitted and its analysis
//! polled (`--submit-unknown-urls`).
//!
//! Answers are journaled (committed to the cache) before their record is released
//! (`records`); a rotated key and a spent window are the key's business (`key`).
//!
//! The stage owns what it uses: the [`Sender`] (client, scheduler, rules, the fleet's
//! pacing), the [`KeyBudget`] (rotation, re-reads of the quota, waiting for a reset),
//! [`Submissions`], and the [`Keeper`] of answers (journal, twins, peers).

mod attempt;
mod key;
mod records;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use vtbulk_output::Record;
use vtbulk_quota::Scheduler;
use vtbulk_store::Put;
use vtbulk_vt::Client;
use vtbulk_vt::models::FileSummary;

use crate::counters::{Counters, bump};
use crate::decide::{Failure, HaltCause, Next, Policy, Throttle, Tracker, decide};
use crate::entries::{Target, Work};
use crate::fleet::Fleet;
use crate::journal::JournalTx;
use crate::peers::Peers;
use crate::run::{Halt, lock};
use crate::settings::SubmitPolicy;

pub(crate) use key::KeyBudget;

use attempt::{Answer, Attempt};

/// Sends requests: the client, the scheduler every request passes, the rules a failure goes
/// through and what they look at, and the fleet's pacing when there is one.
pub(crate) struct Sender {
    pub(crate) client: Client,
    pub(crate) scheduler: Scheduler,
    policy: Policy,
    /// Recent 429s and connection failures, read by [`decide`].
    tracker: Mutex<Tracker>,
    /// When the workers started (the tracker's time origin).
    started: Instant,
    /// Latency of answers, an exponential moving average in microseconds (the workers'
    /// concurrency follows it).
    latency_ewma_us: AtomicU64,
    /// The fleet's shared pacing and budgets (`--coordinator`).
    pub(crate) fleet: Option<Fleet>,
}

impl Sender {
    /// A sender with `client` through `scheduler`, under `policy`.
    pub(crate) fn new(
        client: Client,
        scheduler: Scheduler,
        policy: Policy,
        fleet: Option<Fleet>,
    ) -> Sender {
        Sender {
            client,
            scheduler,
            policy,
            tracker: Mutex::new(Tracker::default()),
            started: Instant::now(),
            latency_ewma_us: AtomicU64::new(0),
            fleet,
        }
    }

    /// The answers' latency lately (zero before the first).
    pub(crate) fn latency(&self) -> Duration {
        Duration::from_micros(self.latency_ewma_us.load(Ordering::Relaxed))
    }

    fn note_latency(&self, took: Duration) {
        let micros = took.as_micros() as u64;
        let old = self.latency_ewma_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            micros
        } else {
            (old * 7 + micros) / 8
        };
        self.latency_ewma_us.store(new, Ordering::Relaxed);
    }

    /// The spacing of requests now (`None`: unlimited); under a fleet's leases the local
    /// pacer is off and the fleet's spacing is the rate's.
    fn interval(&self) -> Option<Duration> {
        self.fleet
            .as_ref()
            .map(|f| f.interval)
            .filter(|i| !i.is_zero())
            .or(self.scheduler.interval())
    }
}

/// Submits URLs VirusTotal does not know (`--submit-unknown-urls`), and how.
pub(crate) struct Submissions {
    policy: Option<SubmitPolicy>,
    /// URLs an earlier run submitted, with their analysis ids (from the cache).
    pending: Mutex<HashMap<String, String>>,
}

impl Submissions {
    pub(crate) fn new(policy: Option<SubmitPolicy>, pending: HashMap<String, String>) -> Self {
        Submissions {
            policy,
            pending: Mutex::new(pending),
        }
    }
}

/// Where answers go before their records: the journal (the cache), the twins (the same
/// file under another of the inputs' hashes), and the peers (a fleet).
pub(crate) struct Keeper {
    journal: Option<JournalTx>,
    /// Keep VirusTotal's `data` in records (`--raw`).
    raw: bool,
    /// Answers for entries not yet looked up, learned from a twin (same file, another hash).
    twins: Mutex<HashMap<usize, Box<FileSummary>>>,
    peers: Arc<Peers>,
}

impl Keeper {
    pub(crate) fn new(journal: Option<JournalTx>, raw: bool, peers: Arc<Peers>) -> Keeper {
        Keeper {
            journal,
            raw,
            twins: Mutex::new(HashMap::new()),
            peers,
        }
    }
}

/// The lookup stage.
pub(crate) struct Lookup {
    pub(crate) sender: Sender,
    pub(crate) key: KeyBudget,
    submissions: Submissions,
    keeper: Keeper,
    work: Arc<Work>,
    halt: Arc<Halt>,
    counters: Arc<Counters>,
}

/// Where an entry's lookup is: the object itself, or (an unknown URL, with
/// `--submit-unknown-urls`) its submission and the polls of its analysis.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// `GET` the object.
    Lookup,
    /// `POST /urls`.
    Submit,
    /// `GET /analyses/{id}`, the `polls`-th time.
    Poll { id: String, polls: u32 },
}

/// One entry's way through its attempts.
struct Progress {
    step: Step,
    /// Retries of this step.
    retries: u32,
    /// Random draws so far (jitter), mixed into the seed.
    draws: u64,
    seed: u64,
    /// When it was submitted (in this run, or by an earlier one stopped while polling).
    submitted: Option<Instant>,
}

/// What an answer to an attempt leads to.
#[expect(
    clippy::large_enum_variant,
    reason = "one per attempt, moved once to the caller; boxing the record would cost an allocation per lookup"
)]
enum Then {
    /// The final record.
    Done(Record),
    /// Another attempt (the next step of a submission).
    Again,
    /// A failure for the rules.
    Failed(vtbulk_vt::Error),
}

type Woken<'a, 'b> = std::pin::Pin<&'a mut tokio::sync::futures::Notified<'b>>;

impl Lookup {
    pub(crate) fn new(
        sender: Sender,
        key: KeyBudget,
        submissions: Submissions,
        keeper: Keeper,
        work: Arc<Work>,
        halt: Arc<Halt>,
        counters: Arc<Counters>,
    ) -> Lookup {
        Lookup {
            sender,
            key,
            submissions,
            keeper,
            work,
            halt,
            counters,
        }
    }

    /// Answered already under another of its hashes, earlier in this run: the record, no
    /// request (the worker asks before anything else).
    pub(crate) fn twin(&self, target: Target<'_>) -> Option<Record> {
        let Target::File(index, _) = target else {
            return None;
        };
        let file = lock(&self.keeper.twins).remove(&index)?;
        Some(self.twin_record(target, file))
    }

    /// Looks `target` up to a final record: retries, 429s, URL submission and stops
    /// included; `seed` draws its jitter.
    pub(crate) async fn look_up(&self, target: Target<'_>, seed: u64) -> Record {
        let mut progress = Progress {
            step: Step::Lookup,
            retries: 0,
            draws: 0,
            seed,
            submitted: None,
        };
        loop {
            // Registered before the checks, so a stop between the checks and a wait wakes us.
            let woken = self.halt.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Some(cause) = self.halt.check() {
                return self.skipped(target, cause);
            }
            let generation = self.key.generation();
            let (result, cycle) = match self.attempt(target, &progress.step, woken.as_mut()).await {
                Attempt::Sent(result, cycle) => (result, cycle),
                Attempt::Woken => continue,
                Attempt::Exhausted(exhausted) => {
                    if self.key.wait_for_reset {
                        self.wait_for_reset(exhausted, woken.as_mut()).await;
                        continue;
                    }
                    let cause = HaltCause::Quota(exhausted.window);
                    self.halt.set(cause);
                    return self.skipped(target, cause);
                }
            };
            let err = match self
                .answered(target, result, &mut progress, woken.as_mut())
                .await
            {
                Then::Done(record) => return record,
                Then::Again => continue,
                Then::Failed(err) => err,
            };
            if let Some(record) = self
                .failed(
                    target,
                    &err,
                    cycle,
                    generation,
                    &mut progress,
                    woken.as_mut(),
                )
                .await
            {
                return record;
            }
        }
    }

    /// What an attempt's answer leads to: a record, the next step of a submission, or a
    /// failure for the rules.
    async fn answered(
        &self,
        target: Target<'_>,
        result: Result<Answer, vtbulk_vt::Error>,
        progress: &mut Progress,
        woken: Woken<'_, '_>,
    ) -> Then {
        match (result, target) {
            (Ok(Answer::File(file)), Target::File(index, entry)) => {
                Then::Done(self.found(index, entry, file).await)
            }
            (Ok(Answer::Object(object)), Target::Other(entry)) => {
                Then::Done(self.found_object(entry, object).await)
            }
            (Ok(Answer::NotFound), Target::Other(entry))
                if progress.step == Step::Lookup
                    && entry.kind() == vtbulk_ioc::Kind::Url
                    && self.submissions.policy.is_some()
                    && progress.submitted.is_none() =>
            {
                // Unknown: submit it, or poll the analysis an earlier run submitted.
                progress.retries = 0;
                progress.step = match lock(&self.submissions.pending).remove(self.work.text(entry))
                {
                    Some(id) => {
                        progress.submitted = Some(Instant::now());
                        Step::Poll { id, polls: 0 }
                    }
                    None => Step::Submit,
                };
                Then::Again
            }
            (Ok(Answer::Submitted(id)), Target::Other(entry)) => {
                self.submitted(entry, id, progress, woken).await;
                Then::Again
            }
            (Ok(Answer::Analysis(analysis)), Target::Other(_)) => {
                self.polled(target, analysis.completed(), progress, woken)
                    .await
            }
            (Ok(_), _) => Then::Done(self.not_found(target).await),
            (Err(err), _) => Then::Failed(err),
        }
    }

    /// A URL was submitted: the analysis is polled from now on, the first poll after the
    /// policy's first pause.
    async fn submitted(
        &self,
        entry: &vtbulk_ioc::Named,
        id: String,
        progress: &mut Progress,
        woken: Woken<'_, '_>,
    ) {
        bump(&self.counters.urls_submitted);
        let url = self.work.text(entry).to_owned();
        self.journal(|| {
            Some(Put::Submission {
                url,
                analysis: id.clone(),
            })
        })
        .await;
        progress.submitted = Some(Instant::now());
        progress.retries = 0;
        progress.step = Step::Poll { id, polls: 0 };
        let first = self
            .submissions
            .policy
            .map(|p| p.pause(0))
            .unwrap_or_default();
        pause(first, woken).await;
    }

    /// An analysis was polled: done (the URL is looked up again), or polled again later, or
    /// given up on after the policy's wait (an `AnalysisPending` error record).
    async fn polled(
        &self,
        target: Target<'_>,
        completed: bool,
        progress: &mut Progress,
        woken: Woken<'_, '_>,
    ) -> Then {
        bump(&self.counters.analysis_polls);
        progress.retries = 0;
        let Step::Poll { id, polls } = progress.step.clone() else {
            return Then::Again;
        };
        if completed {
            // Done: the URL object now exists; read it.
            progress.step = Step::Lookup;
            return Then::Again;
        }
        let policy = self.submissions.policy.unwrap_or_default();
        let waited = progress.submitted.map_or(Duration::ZERO, |t| t.elapsed());
        if waited >= policy.wait {
            return Then::Done(self.pending_record(target, &id, waited));
        }
        progress.step = Step::Poll {
            id,
            polls: polls + 1,
        };
        let next = policy.pause(polls + 1).min(policy.wait - waited);
        pause(next, woken).await;
        Then::Again
    }

    /// Carries out the rules' answer to a failed attempt: `Some` record when it is final,
    /// `None` to try again (after the wait it asked for).
    async fn failed(
        &self,
        target: Target<'_>,
        err: &vtbulk_vt::Error,
        cycle: Option<u64>,
        generation: u64,
        progress: &mut Progress,
        mut woken: Woken<'_, '_>,
    ) -> Option<Record> {
        progress.draws += 1;
        let unit = vtbulk_quota::unit(progress.seed ^ progress.draws.rotate_left(32));
        let s = self.situation(err, cycle, progress.retries, unit);
        let next = decide(&self.sender.policy, &s, Failure::of(err));
        if let Next::Halt(HaltCause::Refused(_)) | Next::FailAndHalt(HaltCause::Refused(_)) = next
            && self.rotated(generation).await
        {
            // The key was rotated at its source: the same request with the new key.
            return None;
        }
        match next {
            Next::NotFound => return Some(self.not_found(target).await),
            Next::Fail => return Some(self.error_record(target, err)),
            Next::FailAndHalt(cause) => {
                self.halt.set_because(cause, err);
                return Some(self.error_record(target, err));
            }
            Next::Halt(cause) => {
                if cause == HaltCause::RateLimited {
                    self.count_429(err, Throttle::GaveUp);
                }
                self.halt.set_because(cause, self.halt_detail(err, &s));
                return Some(self.skipped(target, cause));
            }
            Next::Retry(delay) => {
                progress.retries += 1;
                bump(&self.counters.retries);
                pause(delay, woken).await;
            }
            Next::Requeue {
                after,
                widen,
                resync,
            } => {
                let kind = match (widen, s.stale) {
                    (true, _) => Throttle::TimingMiss,
                    (false, true) => Throttle::InFlight,
                    (false, false) => Throttle::BudgetSpent,
                };
                self.count_429(err, kind);
                if widen {
                    self.sender.scheduler.widen_margin();
                }
                if resync {
                    self.resync(woken.as_mut()).await;
                }
                pause(after, woken).await;
            }
            Next::CloseGate { pause, resync } => {
                self.count_429(err, Throttle::Escalated);
                lock(&self.sender.tracker).gate_closed();
                self.sender.scheduler.close_gate(pause);
                if resync {
                    self.resync(woken).await;
                }
            }
        }
        None
    }

    /// The rules' view of this failure, updating the tracker with it.
    fn situation(
        &self,
        err: &vtbulk_vt::Error,
        cycle: Option<u64>,
        attempt: u32,
        unit: f64,
    ) -> crate::decide::Situation {
        use vtbulk_vt::{ErrorClass, ErrorKind};
        let sender = &self.sender;
        let now = sender.started.elapsed();
        let mut s = crate::decide::Situation {
            attempt,
            books_have_room: sender.scheduler.exhausted().is_none(),
            stale: false,
            misses: 0,
            streak: 0,
            limited_for: Duration::ZERO,
            connect_failures: 0,
            failing_for: Duration::ZERO,
            answered: true,
            silent_attempts: 0,
            silent_for: Duration::ZERO,
            protocol_failures: 0,
            interval: sender.interval(),
            quota_live: self.key.quota_live,
            unit,
        };
        let gate = sender.scheduler.gate_cycle();
        if matches!(err.class(), ErrorClass::RateLimited(_)) && cycle.is_some() {
            // VirusTotal refused it: nothing was spent, and the books must not say otherwise
            // (the fleet's neither).
            sender.scheduler.refund();
            if let Some(fleet) = &sender.fleet {
                fleet.refund();
            }
            s.books_have_room = sender.scheduler.exhausted().is_none();
        }
        let mut tracker = lock(&sender.tracker);
        match err.class() {
            ErrorClass::RateLimited(_) => {
                let l = tracker.rate_limited(cycle.unwrap_or(gate), gate, now);
                (s.stale, s.misses, s.streak, s.limited_for) =
                    (l.stale, l.misses, l.streak, l.limited_for);
            }
            _ if crate::decide::is_protocol_failure(err.kind()) => {
                s.protocol_failures = tracker.protocol_failed();
            }
            _ if err.kind() == ErrorKind::Connect => {
                (s.connect_failures, s.failing_for, s.answered) = tracker.connect_failed(now);
            }
            _ if err.kind() == ErrorKind::Timeout => {
                let timeout = sender.client.request_timeout();
                (s.silent_attempts, s.silent_for) = tracker.timed_out(now, timeout);
            }
            _ if err.status().is_some() => tracker.answered(),
            // The connection was made; the failure came after (a reset, a timeout).
            _ => tracker.reached(),
        }
        s
    }

    /// Why the run stops, in words: the error, or for silence and replies that are not the
    /// API's, what was seen and where.
    fn halt_detail(&self, err: &vtbulk_vt::Error, s: &crate::decide::Situation) -> String {
        let url = self.sender.client.base_url();
        if crate::decide::is_protocol_failure(err.kind()) {
            return format!(
                "not an HTTP API at {url}: {} replies in a row were not VirusTotal's ({err})",
                s.protocol_failures
            );
        }
        if err.kind() == vtbulk_vt::ErrorKind::Timeout {
            return format!(
                "no answer from {url}: {} requests in a row had none within the request \
                 timeout, nothing answered for {} s",
                s.silent_attempts,
                s.silent_for.as_secs()
            );
        }
        err.to_string()
    }

    fn count_429(&self, err: &vtbulk_vt::Error, kind: Throttle) {
        bump(&self.counters.rate_limited);
        crate::counters::bump_map(&self.counters.rate_limited_by_code, err.code());
        crate::counters::bump_by(&self.counters.rate_limited_by_kind, kind);
    }
}

/// Sleeps `delay`, or less when the run is stopped meanwhile.
async fn pause(delay: Duration, woken: Woken<'_, '_>) {
    if delay.is_zero() {
        return;
    }
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = woken => {}
    }
}
