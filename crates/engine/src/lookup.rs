//! One IOC (a hash; a URL, domain or IP address), from the queue to its final record: the
//! only place that talks to VirusTotal during a run.
//!
//! Each attempt is three steps, in this order, so the request leaves the moment it is allowed
//! to: take a connection with nothing left to wait for ([`vtbulk_vt::Client::ready`]; a
//! failure here spends nothing), wait for the scheduler's grant (the 429 gate, the spacing
//! from the last real departure, the calendar budgets), then send at once, handing the grant
//! to the request's departure callback. A failed attempt goes to [`decide`] and the answer
//! is carried out here: retry, requeue, close the gate, record, or stop the run.
//!
//! Answers are journaled (committed to the cache) before their record is released.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use vtbulk_ioc::{Named, Names, Seen, Unique};
use vtbulk_output::{Record, Status};
use vtbulk_quota::{Exhausted, Scheduler};
use vtbulk_store::Put;
use vtbulk_vt::models::{FileSummary, ObjectSummary};
use vtbulk_vt::{Client, ErrorClass, ErrorKind, FileLookup};

use crate::cache;
use crate::convert;
use crate::counters::{Counters, bump, bump_map};
use crate::decide::{Failure, HaltCause, Next, Policy, Situation, Tracker, decide};
use crate::fleet;
use crate::keyquota;
use crate::pipeline::{Halt, StopHandle};
use crate::prepare::{base, other_base};

/// What every worker shares.
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) scheduler: Scheduler,
    pub(crate) counters: std::sync::Arc<Counters>,
    pub(crate) policy: Policy,
    /// Recent 429s and connection failures, read by [`decide`].
    pub(crate) tracker: Mutex<Tracker>,
    /// When the workers started (the tracker's time origin).
    pub(crate) started: Instant,
    pub(crate) halt: std::sync::Arc<Halt>,
    pub(crate) stop: StopHandle,
    pub(crate) names: Vec<String>,
    pub(crate) latency_ewma_us: AtomicU64,
    /// The journal thread, when the cache is on.
    pub(crate) journal: Option<cache::JournalTx>,
    /// Keep VirusTotal's `data` in records (`--raw`).
    pub(crate) raw: bool,
    /// `--only-new`: what the cache knows is neither written nor looked up.
    pub(crate) only_new: bool,
    /// The dedup set, to find an answer's other hashes among the inputs.
    pub(crate) seen: std::sync::Arc<Seen>,
    /// The unique URLs, domains and IP addresses (entries after the hashes').
    pub(crate) others: std::sync::Arc<Names>,
    /// Answers for entries not yet looked up, learned from a twin (same file, another hash).
    pub(crate) twins: Mutex<HashMap<usize, Box<FileSummary>>>,
    /// The budget was read live: an unexpected QuotaExceededError re-reads it.
    pub(crate) quota_live: bool,
    /// When it was last re-read (at most once a minute).
    pub(crate) last_resync: Mutex<Option<Instant>>,
    /// Sleep through an exhausted window instead of stopping.
    pub(crate) wait_for_reset: bool,
    /// Submit unknown URLs (`--submit-unknown-urls`), and how.
    pub(crate) submit: Option<SubmitPolicy>,
    /// URLs an earlier run submitted, with their analysis ids (from the cache).
    pub(crate) pending: Mutex<HashMap<String, String>>,
    /// The fleet's shared pacing and budgets (`--coordinator`), when other processes share
    /// the key.
    pub(crate) fleet: Option<Fleet>,
    /// What stopped the run, in words (the last connection error, for `api_unreachable`).
    pub(crate) halt_detail: Mutex<Option<String>>,
    /// Reads the key again (a file, a command) when VirusTotal refuses it.
    pub(crate) key_reload: Option<crate::KeyReload>,
    /// How many times the key was rotated in this run.
    pub(crate) key_generation: AtomicU64,
    /// One reader of the key at a time.
    pub(crate) rotation: tokio::sync::Mutex<()>,
}

/// This process's part in a fleet sharing one key through Redis: every request also takes
/// the fleet's turn (spaced one interval from the last departure of any process, charged to
/// the fleet's hour/day/month counters) and gives it back the moment it leaves; at high rates
/// it takes a slot of the process's lease instead.
#[derive(Clone, Debug)]
pub(crate) struct Fleet {
    pub(crate) coord: vtbulk_coord::Coordinator,
    pub(crate) allow: vtbulk_coord::Allowances,
    pub(crate) seeds: vtbulk_coord::Seeds,
    /// The fleet's spacing, margin included (zero: no rate to keep): a turn per request, or
    /// leased slots below [`vtbulk_coord::LEASE_BELOW`] (then the local pacer is off).
    pub(crate) interval: Duration,
    /// How long Redis may stay lost before the run stops.
    pub(crate) grace: Duration,
    /// Since when Redis has been failing (`None`: it answered last time).
    pub(crate) lost_since: std::sync::Arc<Mutex<Option<Instant>>>,
}

impl Fleet {
    /// The fleet's grant for one request at `interval`: a turn or a leased slot to give back
    /// at departure, or a charge (`None`), or the spent window.
    async fn grant(
        &self,
        interval: Duration,
    ) -> Result<Result<Option<Hold>, (vtbulk_coord::Window, i64)>, vtbulk_coord::CoordError> {
        let coord = &self.coord;
        if interval.is_zero() {
            // No rate to keep (`--rate unlimited`): no turn, only the fleet's books.
            Ok(coord.charge(self.allow, self.seeds).await?.map(|()| None))
        } else if vtbulk_coord::lease_size(interval) > 1 {
            Ok(coord
                .acquire_slot(interval, self.allow, self.seeds)
                .await?
                .map(|slot| Some(Hold::Slot(slot))))
        } else {
            Ok(coord
                .acquire_turn(interval, self.allow, self.seeds)
                .await?
                .map(|turn| Some(Hold::Turn(turn))))
        }
    }

    /// Notes that Redis answered.
    fn reached(&self) {
        lock(&self.lost_since).take();
    }

    /// Notes that Redis failed; how long it has been failing.
    fn failed(&self) -> Duration {
        let now = Instant::now();
        now - *lock(&self.lost_since).get_or_insert(now)
    }
}

/// What a request holds of the fleet until it leaves: the fleet's turn, or a slot of this
/// process's lease.
#[derive(Debug)]
enum Hold {
    Turn(vtbulk_coord::Turn),
    Slot(vtbulk_coord::Slot),
}

/// A fleet turn or slot to give back: at the request's departure, or (when it never left)
/// after.
type HeldTurn = std::sync::Arc<Mutex<Option<Hold>>>;

/// Gives the hold back, its request having left at `at` (a turn through a task: the caller
/// does not wait for Redis; a slot at once, locally).
fn give_back(fleet: &Fleet, turn: &HeldTurn, at: Instant, interval: Duration) {
    match lock(turn).take() {
        Some(Hold::Turn(turn)) => {
            let coord = fleet.coord.clone();
            tokio::spawn(async move {
                // A failure leaves the turn to its lease: the fleet waits, it never overspends.
                let _ = coord.departed(turn, at, interval).await;
            });
        }
        Some(Hold::Slot(slot)) => slot.departed(at),
        None => {}
    }
}

/// What one entry of the work list is.
#[derive(Clone, Copy)]
pub(crate) enum Target<'a> {
    /// A hash: its index in the dedup set, and its entry.
    File(usize, &'a Unique),
    /// A URL, domain or IP address.
    Other(&'a Named),
}

impl Shared {
    /// The entry at `index` of the work list's numbering (hashes first, then the rest).
    pub(crate) fn target(&self, index: usize) -> Target<'_> {
        let files = self.seen.entries();
        match files.get(index) {
            Some(entry) => Target::File(index, entry),
            None => Target::Other(&self.others.entries()[index - files.len()]),
        }
    }

    /// The record every outcome of `target` starts from.
    pub(crate) fn base(&self, target: Target<'_>) -> Record {
        match target {
            Target::File(_, entry) => base(&self.names, entry),
            Target::Other(entry) => other_base(&self.names, &self.others, entry),
        }
    }
}

/// What a request answered.
enum Answer {
    File(Box<FileSummary>),
    Object(Box<ObjectSummary>),
    NotFound,
    /// `POST /urls`: the analysis to poll.
    Submitted(String),
    /// `GET /analyses/{id}`.
    Analysis(Box<vtbulk_vt::models::Analysis>),
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

/// How unknown URLs are submitted (`--submit-unknown-urls`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubmitPolicy {
    /// The first poll of an analysis comes this long after the submission.
    pub first_poll: Duration,
    /// Polls back off by half again each time, up to this.
    pub max_poll: Duration,
    /// An analysis not completed this long after its submission gives an `error` record
    /// (`AnalysisPending`); the next run polls the same analysis again.
    pub wait: Duration,
}

impl Default for SubmitPolicy {
    fn default() -> Self {
        SubmitPolicy {
            first_poll: Duration::from_secs(15),
            max_poll: Duration::from_secs(60),
            wait: Duration::from_secs(600),
        }
    }
}

impl SubmitPolicy {
    /// The pause before poll number `polls` (0-based): `first_poll`, then half again each
    /// time, up to `max_poll`.
    pub fn pause(&self, polls: u32) -> Duration {
        let grown = self.first_poll.as_secs_f64() * 1.5f64.powi(polls.min(32) as i32);
        Duration::from_secs_f64(grown.min(self.max_poll.as_secs_f64()))
    }

    /// The most requests one unknown URL can cost: the lookup, the submission, the polls
    /// that fit in `wait`, and the lookup after completion.
    pub fn max_requests(&self) -> u64 {
        let (mut polls, mut waited) = (0u64, Duration::ZERO);
        while waited < self.wait && polls < 10_000 {
            waited += self.pause(polls as u32);
            polls += 1;
        }
        3 + polls
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Looks one entry up to a final record: retries, 429s and stops included. (A cache shared
/// with other processes was asked first, by the worker: [`crate::claims`].)
pub(crate) async fn lookup(shared: &Shared, target: Target<'_>, seed: u64) -> Record {
    if let Target::File(index, entry) = target
        && let Some(record) = twin(shared, index, entry)
    {
        return record;
    }
    // A fleet: the answer another process has or is getting now is not paid twice.
    let claimed = match &shared.fleet {
        Some(fleet) => match fleet::before(shared, fleet, target).await {
            fleet::Before::Answered(record) => return *record,
            fleet::Before::Claimed(id) => Some((fleet, id)),
            fleet::Before::Alone => None,
        },
        None => None,
    };
    let record = look_up(shared, target, seed).await;
    if let (Some((fleet, id)), Some(Status::Error | Status::Skipped)) = (claimed, record.status) {
        fleet::release(fleet, id);
    }
    record
}

/// [`lookup`]'s requests: the lookup itself, retries, 429s, URL submission and stops.
async fn look_up(shared: &Shared, target: Target<'_>, seed: u64) -> Record {
    let mut retries = 0u32;
    let mut draws = 0u64;
    let mut step = Step::Lookup;
    // Submitted already (in this run, or by an earlier one that was stopped while polling).
    let mut submitted = None;
    loop {
        // Registered before the checks, so a stop between the checks and a wait wakes us.
        let woken = shared.halt.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if shared.stop.requested() {
            shared.halt.set(HaltCause::Interrupted);
        }
        if let Some(cause) = shared.halt.get() {
            return skipped(shared, target, cause);
        }
        let generation = shared
            .key_generation
            .load(std::sync::atomic::Ordering::Acquire);
        let (result, cycle) = match attempt(shared, target, &step, woken.as_mut()).await {
            Attempt::Sent(result, cycle) => (result, cycle),
            Attempt::Woken => continue,
            Attempt::Exhausted(exhausted) => {
                if shared.wait_for_reset {
                    wait_for_reset(shared, exhausted, woken.as_mut()).await;
                    continue;
                }
                let cause = HaltCause::Quota(exhausted.window);
                shared.halt.set(cause);
                return skipped(shared, target, cause);
            }
        };
        let err = match (result, target) {
            (Ok(Answer::File(file)), Target::File(index, entry)) => {
                return found(shared, index, entry, file).await;
            }
            (Ok(Answer::Object(object)), Target::Other(entry)) => {
                return found_object(shared, entry, object).await;
            }
            (Ok(Answer::NotFound), Target::Other(entry))
                if step == Step::Lookup
                    && entry.kind() == vtbulk_ioc::Kind::Url
                    && shared.submit.is_some()
                    && submitted.is_none() =>
            {
                // Unknown: submit it, or poll the analysis an earlier run submitted.
                retries = 0;
                let text = shared.others.text(entry);
                step = match lock(&shared.pending).remove(text) {
                    Some(id) => {
                        submitted = Some(Instant::now());
                        Step::Poll { id, polls: 0 }
                    }
                    None => Step::Submit,
                };
                continue;
            }
            (Ok(Answer::Submitted(id)), Target::Other(entry)) => {
                bump(&shared.counters.urls_submitted);
                let url = shared.others.text(entry).to_owned();
                journal(shared, || {
                    Some(Put::Submission {
                        url,
                        analysis: id.clone(),
                    })
                })
                .await;
                submitted = Some(Instant::now());
                retries = 0;
                step = Step::Poll { id, polls: 0 };
                let first = shared.submit.map(|p| p.pause(0)).unwrap_or_default();
                pause(first, woken.as_mut()).await;
                continue;
            }
            (Ok(Answer::Analysis(analysis)), Target::Other(_)) => {
                bump(&shared.counters.analysis_polls);
                retries = 0;
                let Step::Poll { id, polls } = step.clone() else {
                    continue;
                };
                if analysis.completed() {
                    // Done: the URL object now exists; read it.
                    step = Step::Lookup;
                    continue;
                }
                let policy = shared.submit.unwrap_or_default();
                let waited = submitted.map_or(Duration::ZERO, |t| t.elapsed());
                if waited >= policy.wait {
                    return pending_record(shared, target, &id, waited);
                }
                step = Step::Poll {
                    id,
                    polls: polls + 1,
                };
                let next = policy.pause(polls + 1).min(policy.wait - waited);
                pause(next, woken.as_mut()).await;
                continue;
            }
            (Ok(_), _) => return not_found(shared, target).await,
            (Err(err), _) => err,
        };
        draws += 1;
        let s = situation(
            shared,
            &err,
            cycle,
            retries,
            vtbulk_quota::unit(seed ^ draws.rotate_left(32)),
        );
        let next = decide(&shared.policy, &s, Failure::of(&err));
        if let Next::Halt(HaltCause::Refused(_)) | Next::FailAndHalt(HaltCause::Refused(_)) = next
            && rotated(shared, generation).await
        {
            // The key was rotated at its source: the same request with the new key.
            continue;
        }
        match next {
            Next::NotFound => return not_found(shared, target).await,
            Next::Fail => return error_record(shared, target, &err),
            Next::FailAndHalt(cause) => {
                lock(&shared.halt_detail).get_or_insert_with(|| err.to_string());
                shared.halt.set(cause);
                return error_record(shared, target, &err);
            }
            Next::Halt(cause) => {
                lock(&shared.halt_detail).get_or_insert_with(|| err.to_string());
                if cause == HaltCause::RateLimited {
                    count_429(shared, &err, "gave_up");
                }
                shared.halt.set(cause);
                return skipped(shared, target, cause);
            }
            Next::Retry(delay) => {
                retries += 1;
                bump(&shared.counters.retries);
                pause(delay, woken.as_mut()).await;
            }
            Next::Requeue {
                after,
                widen,
                resync,
            } => {
                let kind = match (widen, s.stale) {
                    (true, _) => "timing_miss",
                    (false, true) => "in_flight",
                    (false, false) => "budget_spent",
                };
                count_429(shared, &err, kind);
                if widen {
                    shared.scheduler.widen_margin();
                }
                if resync {
                    self::resync(shared, woken.as_mut()).await;
                }
                pause(after, woken.as_mut()).await;
            }
            Next::CloseGate { pause, resync } => {
                count_429(shared, &err, "escalated");
                lock(&shared.tracker).gate_closed();
                shared.scheduler.close_gate(pause);
                if resync {
                    self::resync(shared, woken.as_mut()).await;
                }
            }
        }
    }
}

/// How one attempt went.
enum Attempt {
    /// A connection failed (no request left: `None`), or the request was sent in the gate
    /// cycle given.
    Sent(Result<Answer, vtbulk_vt::Error>, Option<u64>),
    /// The run was stopped while waiting.
    Woken,
    /// A calendar budget is spent.
    Exhausted(Exhausted),
}

/// One attempt, in the order that lets the request leave the moment it may: a connection
/// with nothing left to wait for, then the scheduler's grant, then the send, the grant going
/// with the request to be released at its departure.
async fn attempt(
    shared: &Shared,
    target: Target<'_>,
    step: &Step,
    mut woken: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
) -> Attempt {
    let ready = tokio::select! {
        ready = shared.client.ready() => ready,
        () = woken.as_mut() => return Attempt::Woken,
    };
    let ready = match ready {
        Ok(ready) => ready,
        Err(e) => return Attempt::Sent(Err(e), None),
    };
    let grant = tokio::select! {
        acquired = shared.scheduler.acquire() => match acquired {
            Ok(grant) => grant,
            Err(exhausted) => return Attempt::Exhausted(exhausted),
        },
        () = woken.as_mut() => return Attempt::Woken,
    };
    if shared.halt.get().is_some() || shared.stop.requested() {
        return Attempt::Woken;
    }
    let interval = match &shared.fleet {
        Some(fleet) => fleet.interval,
        None => shared.scheduler.interval().unwrap_or_default(),
    };
    // Only a fleet has a turn to hold: a lone process allocates nothing here.
    let held: Option<HeldTurn> = shared.fleet.as_ref().map(|_| Default::default());
    let mut fleet_seq = None;
    if let Some(fleet) = &shared.fleet {
        let turn = loop {
            let asked = tokio::select! {
                turn = fleet.grant(interval) => turn,
                () = woken.as_mut() => return Attempt::Woken,
            };
            match asked {
                Ok(turn) => {
                    fleet.reached();
                    break turn;
                }
                Err(e) => {
                    // Blind: nothing leaves without the fleet's grant. Ask again (the
                    // connection reconnects itself) until the grace runs out, then stop.
                    let lost = fleet.failed();
                    if lost >= fleet.grace {
                        lock(&shared.halt_detail).get_or_insert_with(|| e.to_string());
                        shared.halt.set(HaltCause::CoordinatorLost);
                        return Attempt::Woken;
                    }
                    let wait = (lost / 4).clamp(Duration::from_millis(250), Duration::from_secs(5));
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = woken.as_mut() => return Attempt::Woken,
                    }
                }
            }
        };
        match turn {
            Ok(None) => {}
            Ok(Some(hold)) => {
                if let Hold::Turn(turn) = &hold {
                    fleet_seq = Some(turn.seq());
                }
                if let Some(held) = &held {
                    *lock(held) = Some(hold);
                }
            }
            Err((window, resets_at)) => {
                let window = match window {
                    vtbulk_coord::Window::Hour => vtbulk_quota::Window::Hour,
                    vtbulk_coord::Window::Day => vtbulk_quota::Window::Day,
                    vtbulk_coord::Window::Month => vtbulk_quota::Window::Month,
                };
                return Attempt::Exhausted(Exhausted { window, resets_at });
            }
        }
    }
    let cycle = grant.cycle();
    bump(&shared.counters.requests);
    let sent = Instant::now();
    let departure = std::sync::Arc::new(std::sync::OnceLock::new());
    let left = departure.clone();
    let arrival = vtbulk_vt::Arrival::new();
    let fleet_turn = shared.fleet.clone().zip(held.clone());
    let departed = move |at| {
        let _ = left.set(grant.departed(at));
        if let Some((fleet, held)) = &fleet_turn {
            give_back(fleet, held, at, interval);
        }
    };
    let ready = ready.with_arrival(&arrival);
    let result =
        match (target, step) {
            (Target::Other(entry), Step::Submit) => ready
                .submit_url(shared.others.text(entry), departed)
                .await
                .map(Answer::Submitted),
            (_, Step::Poll { id, .. }) => ready
                .get_analysis(id, departed)
                .await
                .map(|a| Answer::Analysis(Box::new(a))),
            (Target::File(_, entry), _) => ready
                .get_file_summary(&entry.hash(), departed)
                .await
                .map(|answer| match answer {
                    FileLookup::Found(file) => Answer::File(file),
                    FileLookup::NotFound => Answer::NotFound,
                }),
            (Target::Other(entry), _) => ready
                .get_object_summary(entry.kind(), shared.others.text(entry), departed)
                .await
                .map(|answer| match answer {
                    FileLookup::Found(object) => Answer::Object(object),
                    FileLookup::NotFound => Answer::NotFound,
                }),
        };
    let now = Instant::now();
    note_latency(shared, now - sent);
    if let (Some(fleet), Some(held)) = (&shared.fleet, &held) {
        // Never sent (the connection failed first): the turn goes back all the same.
        give_back(fleet, held, Instant::now(), interval);
    }
    // The server answered: how long its first bytes took to arrive tells the pacer when
    // the server handled it (the kernel's arrival stamp: not when this process got round
    // to reading them).
    let answered = result
        .as_ref()
        .map_or_else(|e| e.status().is_some(), |_| true);
    if let (Some(&departure), true) = (departure.get(), answered) {
        let at = arrival.get().unwrap_or(now);
        let push = shared.scheduler.answered(departure, at);
        // The server handled it late: the fleet's next slot moves back too, not only ours.
        if let (Some(fleet), Some(seq), false) = (&shared.fleet, fleet_seq, push.is_zero()) {
            let coord = fleet.coord.clone();
            tokio::spawn(async move {
                let _ = coord.push(seq, push).await;
            });
        }
    }
    Attempt::Sent(result, Some(cycle))
}

/// VirusTotal refused the key a request was sent with (`generation`): true when the request
/// should go again, because another worker rotated the key since, or because the key's source
/// (a file, a command) now holds another key, taken up from here on. A key read again that
/// is the one refused is not: the run stops as before.
async fn rotated(shared: &Shared, generation: u64) -> bool {
    use std::sync::atomic::Ordering::{AcqRel, Acquire};
    let Some(reload) = &shared.key_reload else {
        return false;
    };
    let _one = shared.rotation.lock().await;
    if shared.key_generation.load(Acquire) != generation {
        return true;
    }
    let read = reload.0.clone();
    let Ok(Ok(key)) = tokio::task::spawn_blocking(move || read()).await else {
        return false;
    };
    if shared.client.uses(&key) || shared.client.set_key(key).is_err() {
        return false;
    }
    shared.key_generation.fetch_add(1, AcqRel);
    bump(&shared.counters.key_rotations);
    true
}

/// The rules' view of this failure, updating the tracker with it.
fn situation(
    shared: &Shared,
    err: &vtbulk_vt::Error,
    cycle: Option<u64>,
    attempt: u32,
    unit: f64,
) -> Situation {
    let now = shared.started.elapsed();
    let mut s = Situation {
        attempt,
        books_have_room: shared.scheduler.exhausted().is_none(),
        stale: false,
        misses: 0,
        streak: 0,
        limited_for: Duration::ZERO,
        connect_failures: 0,
        failing_for: Duration::ZERO,
        answered: true,
        // Under a fleet's leases the local pacer is off: the fleet's spacing is the rate's.
        interval: shared
            .fleet
            .as_ref()
            .map(|f| f.interval)
            .filter(|i| !i.is_zero())
            .or(shared.scheduler.interval()),
        quota_live: shared.quota_live,
        unit,
    };
    let gate = shared.scheduler.gate_cycle();
    if matches!(err.class(), ErrorClass::RateLimited(_)) && cycle.is_some() {
        // VirusTotal refused it: nothing was spent, and the books must not say otherwise
        // (the fleet's neither).
        shared.scheduler.refund();
        if let Some(fleet) = &shared.fleet {
            let coord = fleet.coord.clone();
            tokio::spawn(async move {
                let _ = coord.refund().await;
            });
        }
        s.books_have_room = shared.scheduler.exhausted().is_none();
    }
    let mut tracker = lock(&shared.tracker);
    match err.class() {
        ErrorClass::RateLimited(_) => {
            let l = tracker.rate_limited(cycle.unwrap_or(gate), gate, now);
            (s.stale, s.misses, s.streak, s.limited_for) =
                (l.stale, l.misses, l.streak, l.limited_for);
        }
        _ if err.kind() == ErrorKind::Connect => {
            (s.connect_failures, s.failing_for, s.answered) = tracker.connect_failed(now);
        }
        _ if err.status().is_some() => tracker.answered(),
        // The connection was made; the failure came after (a reset, a timeout).
        _ => tracker.reached(),
    }
    s
}

fn count_429(shared: &Shared, err: &vtbulk_vt::Error, kind: &str) {
    bump(&shared.counters.rate_limited);
    bump_map(&shared.counters.rate_limited_by_code, err.code());
    bump_map(&shared.counters.rate_limited_by_kind, kind);
}

/// Sleeps `delay`, or less when the run is stopped meanwhile.
async fn pause(delay: Duration, woken: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>) {
    if delay.is_zero() {
        return;
    }
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = woken => {}
    }
}

fn note_latency(shared: &Shared, took: Duration) {
    let micros = took.as_micros() as u64;
    let old = shared.latency_ewma_us.load(Ordering::Relaxed);
    let new = if old == 0 {
        micros
    } else {
        (old * 7 + micros) / 8
    };
    shared.latency_ewma_us.store(new, Ordering::Relaxed);
}

/// Answered already under another of its hashes, earlier in this run: no request.
fn twin(shared: &Shared, index: usize, entry: &Unique) -> Option<Record> {
    let mut file = lock(&shared.twins).remove(&index)?;
    if !shared.raw {
        file.raw = None;
    }
    bump(&shared.counters.ok);
    bump(&shared.counters.cache_hits);
    let mut record = convert::found(base(&shared.names, entry), file);
    record.source = Some(vtbulk_output::Source::Cache);
    Some(record)
}

/// Journals an answer (when the cache is on) and waits for the commit.
async fn journal(shared: &Shared, put: impl FnOnce() -> Option<Put>) {
    if let Some(journal) = &shared.journal {
        let committed = match put() {
            Some(put) => cache::commit(journal, put).await,
            None => false,
        };
        if committed {
            bump(&shared.counters.cache_writes);
        } else {
            bump(&shared.counters.cache_write_errors);
        }
    }
}

/// The record of a found file, journaled first; its twins among the inputs learn it too.
async fn found(
    shared: &Shared,
    index: usize,
    entry: &Unique,
    mut file: Box<FileSummary>,
) -> Record {
    lock(&shared.tracker).succeeded();
    let digests = cache::Digests::of(&file);
    journal(shared, || cache::put_found(&file, digests)).await;
    if let Some(fleet) = &shared.fleet {
        fleet::publish_file(fleet, &file, digests.hashes().map(|h| h.to_string()));
    }
    for hash in digests.hashes() {
        if let Some(j) = shared.seen.position(&hash)
            && j != index
        {
            lock(&shared.twins).insert(j, Box::new((*file).clone()));
        }
    }
    if !shared.raw {
        file.raw = None;
    }
    bump(&shared.counters.ok);
    convert::found(base(&shared.names, entry), file)
}

/// The record of a found URL, domain or IP address, journaled first.
async fn found_object(shared: &Shared, entry: &Named, mut object: Box<ObjectSummary>) -> Record {
    lock(&shared.tracker).succeeded();
    let text = shared.others.text(entry);
    journal(shared, || {
        Some(cache::put_object(entry.kind(), text, Some(&object)))
    })
    .await;
    if let Some(fleet) = &shared.fleet {
        fleet::publish_object(fleet, fleet::id(shared, Target::Other(entry)), &object);
    }
    object.body = None;
    if !shared.raw {
        object.raw = None;
    }
    bump(&shared.counters.ok);
    convert::object(other_base(&shared.names, &shared.others, entry), object)
}

/// The record of a 404, journaled first.
async fn not_found(shared: &Shared, target: Target<'_>) -> Record {
    lock(&shared.tracker).succeeded();
    journal(shared, || {
        Some(match target {
            Target::File(_, entry) => Put::NotFound(entry.hash()),
            Target::Other(entry) => {
                cache::put_object(entry.kind(), shared.others.text(entry), None)
            }
        })
    })
    .await;
    if let Some(fleet) = &shared.fleet {
        fleet::publish_not_found(fleet, fleet::id(shared, target));
    }
    bump(&shared.counters.not_found);
    Record {
        status: Some(Status::NotFound),
        source: Some(vtbulk_output::Source::Api),
        ..shared.base(target)
    }
}

/// The record of an entry not looked up because the run stopped.
pub(crate) fn skipped(shared: &Shared, target: Target<'_>, cause: HaltCause) -> Record {
    let reason = cause.name();
    bump(&shared.counters.skipped);
    bump_map(&shared.counters.skipped_by_reason, &reason);
    Record {
        status: Some(Status::Skipped),
        error_code: Some(reason.into_owned()),
        ..shared.base(target)
    }
}

/// The record of a URL whose analysis had not completed within `--submit-wait`: an error
/// with our code `AnalysisPending`; the next run polls the same analysis (kept in the cache).
fn pending_record(shared: &Shared, target: Target<'_>, id: &str, waited: Duration) -> Record {
    bump(&shared.counters.errors);
    bump_map(&shared.counters.errors_by_code, "AnalysisPending");
    Record {
        status: Some(Status::Error),
        source: Some(vtbulk_output::Source::Api),
        error_code: Some("AnalysisPending".to_owned()),
        error_message: Some(format!(
            "submitted; analysis {id} not completed after {} s (a later run with the cache polls it again)",
            waited.as_secs()
        )),
        ..shared.base(target)
    }
}

fn error_record(shared: &Shared, target: Target<'_>, err: &vtbulk_vt::Error) -> Record {
    bump(&shared.counters.errors);
    bump_map(&shared.counters.errors_by_code, err.code());
    Record {
        status: Some(Status::Error),
        source: Some(vtbulk_output::Source::Api),
        error_code: Some(err.code().to_owned()),
        error_message: Some(err.message().to_owned()),
        ..shared.base(target)
    }
}

/// Re-reads the key's quotas after a QuotaExceededError our books did not expect (at most
/// once a minute). The request is paced like any other (VirusTotal counts "requests of any
/// nature"), so the re-read cannot itself be refused by the per-minute limit; a stop while
/// it waits (for the gate, the pacer) ends it at once.
async fn resync(shared: &Shared, woken: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>) {
    if !shared.quota_live {
        return;
    }
    {
        let mut last = lock(&shared.last_resync);
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
            return;
        }
        *last = Some(Instant::now());
    }
    let read = async {
        let ready = shared.client.ready().await.ok()?;
        let grant = shared.scheduler.acquire_rate().await;
        // The fleet's turn too: "requests of any nature" count, charged to no window.
        let interval = shared.fleet.as_ref().map_or(Duration::ZERO, |f| f.interval);
        let turn = match &shared.fleet {
            Some(fleet) => Some(fleet.coord.acquire_free_turn(interval).await.ok()?),
            None => None,
        };
        let departure = std::sync::Arc::new(std::sync::OnceLock::new());
        let left = departure.clone();
        let arrival = vtbulk_vt::Arrival::new();
        let user = ready
            .with_arrival(&arrival)
            .get_own_user(move |at| {
                let _ = left.set(grant.departed(at));
            })
            .await;
        if let (Some(fleet), Some(turn)) = (&shared.fleet, turn) {
            let _ = fleet.coord.departed(turn, Instant::now(), interval).await;
        }
        if let Some(&departure) = departure.get() {
            let at = arrival.get().unwrap_or_else(Instant::now);
            shared.scheduler.answered(departure, at);
        }
        user.ok()
    };
    let user = tokio::select! {
        user = read => user,
        () = woken => None,
    };
    let clock = shared.scheduler.clock();
    if let Some(user) = user
        && let Some((_, usage)) = keyquota::from_user(&user, Default::default(), clock.now())
    {
        shared.scheduler.resync(usage);
        bump(&shared.counters.quota_resyncs);
    }
}

/// How long after a window's reset the run goes on: our clock and VirusTotal's need not agree
/// to the second, and a request a moment early would meet the old window.
const RESET_MARGIN: Duration = Duration::from_secs(5);

/// Sleeps until `exhausted` resets, plus [`RESET_MARGIN`] (or until the run is stopped),
/// showing when in the counters; then, when the budget was read live, reads it again: other
/// users of the key may have spent in the new window already.
async fn wait_for_reset(
    shared: &Shared,
    exhausted: Exhausted,
    mut woken: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
) {
    let clock = shared.scheduler.clock();
    let wait = Duration::from_millis(
        exhausted
            .resets_at
            .saturating_mul(1000)
            .saturating_sub(clock.now_ms())
            .max(0) as u64,
    ) + RESET_MARGIN;
    shared
        .counters
        .waiting_until
        .store(exhausted.resets_at, Ordering::Relaxed);
    tokio::select! {
        () = tokio::time::sleep(wait) => {}
        () = woken.as_mut() => {}
    }
    shared.counters.waiting_until.store(0, Ordering::Relaxed);
    resync(shared, woken).await;
}
