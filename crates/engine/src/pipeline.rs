//! The run, as the list of its stages: [`prepare`] (open, read, dedup, check the cache), the
//! writer, the key's budget, the workers (each hash through [`lookup`]), the skipped tail,
//! and the finish (journal, ledger, summary).
//!
//! Exactly one record per unique IOC: each entry is taken by exactly one worker (an atomic
//! cursor), a worker always turns what it took into a record, and entries nobody took when the
//! run stops become `skipped` with the halt's cause.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use vtbulk_ioc::reader::InputFormat;
use vtbulk_ioc::{Column, InputReport};
use vtbulk_output::{CsvSink, EcsSink, Field, Format, LookupSink, NdjsonSink, Sink};
use vtbulk_quota::{BackoffPolicy, Rate, Scheduler, SchedulerConfig, Window};
use vtbulk_store::{RunRecord, SqliteStore, StoreError};
use vtbulk_vt::Client;

use crate::cache::{self, CacheSettings, Journal};
use crate::claims;
use crate::counters::{Counters, QuotaReport, Summary, bump};
use crate::decide::{HaltCause, Policy, Tracker};
use crate::keyquota::{self, KeyQuota, QuotaSettings, QuotaSource};
use crate::lookup::{Shared, lock, lookup, skipped};
use crate::prepare::{Prepared, prepare};
use crate::writer::{self, Out};

/// How many lookups may be in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Concurrency {
    /// Enough for the rate at the observed latency (Little's law), within 1..=`max`.
    Auto {
        /// The ceiling.
        max: usize,
    },
    /// Exactly this many.
    Fixed(usize),
}

/// Everything the engine needs, typed and resolved (no raw strings from the command line).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Input paths; `-` is stdin.
    pub inputs: Vec<String>,
    /// How inputs are laid out.
    pub input_format: InputFormat,
    /// The CSV columns chosen (none: every column that holds hashes).
    pub columns: Vec<Column>,
    /// Take every hash-shaped token, whatever its context says (`--keep-all-hex`).
    pub keep_all_hex: bool,
    /// JSON fields chosen (`--field`; none: every hash by the JSON reader's rules).
    pub json_fields: Vec<vtbulk_ioc::reader::FieldPath>,
    /// The kinds of IOC taken (`--kinds`; `None`: each input format's default).
    pub kinds: Option<vtbulk_ioc::Kinds>,
    /// Submit URLs VirusTotal does not know and wait for their analysis
    /// (`--submit-unknown-urls`); `None`: an unknown URL is `not_found`.
    pub submit_urls: Option<crate::lookup::SubmitPolicy>,
    /// Called as each input (or archive member) has been read, with what reading it did:
    /// the command line says on stderr when `auto` fell back to text or an input was damaged.
    pub on_input: Option<InputHook>,
    /// Records that make the run end with exit 5 (`--fail-on`), counted as they are written.
    pub fail_on: Option<vtbulk_output::FailOn>,
    /// Only hashes the cache had not seen before this run are looked up and written (the
    /// nightly delta); needs the cache.
    pub only_new: bool,
    /// Output format.
    pub format: Format,
    /// Output fields, in order.
    pub fields: Vec<Field>,
    /// Add VirusTotal's `data` object to NDJSON records.
    pub raw: bool,
    /// Rate, caps and margin.
    pub scheduler: SchedulerConfig,
    /// Lookups in flight.
    pub concurrency: Concurrency,
    /// Retries of retryable failures.
    pub backoff: BackoffPolicy,
    /// How long 429s may go on with no success in between before the run stops as if the
    /// quota were spent (exit 4): the key is shared, or its quota is lower than configured.
    pub max_rate_limited: Duration,
    /// The cache and journal; `None` is `--cache off` (and no spend ledger).
    pub cache: Option<CacheSettings>,
    /// How the key's budget is read, and what happens when it runs out.
    pub quota: QuotaSettings,
    /// A Redis URL (`--coordinator`): the processes that use this key share its pace and its
    /// budgets through it. `None`: this process paces itself alone.
    pub coordinator: Option<vtbulk_coord::Endpoint>,
    /// When the coordinator cannot be reached at the start: run alone at this share of the
    /// rate (`--coordinator-fallback local-share=F`) instead of stopping with exit 2.
    pub coordinator_fallback: Option<f64>,
    /// How long the coordinator may stay lost mid-run before the run stops
    /// ([`Outcome::CoordinatorLost`]); meanwhile no request leaves.
    pub coordinator_grace: Duration,
    /// Reads the key again from where it came (a file, a command): a 401 in a long run takes
    /// up a key rotated at its source instead of stopping. `None`: the key cannot change.
    pub key_reload: Option<KeyReload>,
}

/// Reads the API key again from its source (errors name no key).
#[derive(Clone)]
pub struct KeyReload(pub Arc<dyn Fn() -> Result<vtbulk_vt::ApiKey, String> + Send + Sync>);

impl std::fmt::Debug for KeyReload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyReload")
    }
}

impl Settings {
    /// How the inputs are read (the run's reader and `--annotate`'s second pass agree).
    pub fn read_options(&self) -> vtbulk_ioc::ReadOptions {
        vtbulk_ioc::ReadOptions {
            format: self.input_format,
            columns: self.columns.clone(),
            keep_all_hex: self.keep_all_hex,
            fields: self.json_fields.clone(),
            kinds: self.kinds,
        }
    }
}

/// A callback for each input read (see [`Settings::on_input`]).
#[derive(Clone)]
pub struct InputHook(pub Arc<dyn Fn(&InputReport) + Send + Sync>);

impl std::fmt::Debug for InputHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InputHook")
    }
}

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

    pub(crate) fn requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// Why workers stopped taking work: the first cause wins; setting it wakes every waiting
/// worker (at the gate, the limiter, a backoff), which records its item as `skipped`.
#[derive(Debug)]
pub(crate) struct Halt {
    cause: Mutex<Option<HaltCause>>,
    flag: AtomicBool,
    pub(crate) wake: Arc<tokio::sync::Notify>,
}

impl Halt {
    fn new(wake: Arc<tokio::sync::Notify>) -> Halt {
        Halt {
            cause: Mutex::new(None),
            flag: AtomicBool::new(false),
            wake,
        }
    }

    pub(crate) fn set(&self, cause: HaltCause) {
        self.cause
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(cause);
        self.flag.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
    }

    pub(crate) fn get(&self) -> Option<HaltCause> {
        if !self.flag.load(Ordering::SeqCst) {
            return None;
        }
        *self.cause.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs the whole pipeline, writing records to `out`. `counters` is shared with whoever
/// shows progress; `stop` ends the run early.
pub async fn run(
    settings: Settings,
    client: Client,
    out: Box<dyn Write + Send>,
    counters: Arc<Counters>,
    stop: StopHandle,
) -> Result<(Outcome, Summary), EngineError> {
    let started = std::time::Instant::now();
    // The fleet's coordinator first: unreachable, the run stops before anything is read or
    // spent.
    let mut settings = settings;
    let mut coordinator_note = None;
    let coord = match &settings.coordinator {
        Some(url) => {
            let connected = vtbulk_coord::Coordinator::connect(
                url,
                &client.key_fingerprint(),
                Duration::from_secs(5),
            )
            .await;
            match (connected, settings.coordinator_fallback) {
                (Ok(coord), _) => Some(coord),
                (Err(e), Some(share)) => {
                    // Alone, at a share of the rate: the others (if any) are presumed to do
                    // the same.
                    let base = settings.scheduler.rate.or(settings.scheduler.caps.rate());
                    settings.scheduler.rate = base.map(|r| vtbulk_quota::Rate {
                        count: r.count,
                        per: r.per.div_f64(share),
                    });
                    coordinator_note = Some(format!(
                        "{e}; running alone at {:.0}% of the rate (--coordinator-fallback)",
                        share * 100.0
                    ));
                    None
                }
                (Err(e), None) => return Err(e.into()),
            }
        }
        None => None,
    };
    let halt = Arc::new(Halt::new(stop.wake.clone()));
    let (tx, writer) = writer::spawn(
        make_sink(&settings, out),
        halt.clone(),
        settings.fail_on.clone(),
        counters.clone(),
    );
    let prepared = match prepare(&settings, &counters, Some(&tx)).await {
        Ok(prepared) => prepared,
        Err(e) => {
            drop(tx);
            let _ = writer.await;
            return Err(e);
        }
    };
    let Prepared {
        seen,
        others,
        todo,
        mut store,
        names,
        pending,
    } = prepared;
    let clock = settings.cache.as_ref().map(|c| c.clock).unwrap_or_default();
    let run_figures = Arc::new(Mutex::new(RunRecord {
        started_at: clock.now(),
        unique_hashes: (seen.len() + others.len()) as u64,
        ..RunRecord::default()
    }));
    let budget = Budget::read(
        &settings,
        &client,
        store.as_mut(),
        todo.is_empty(),
        coord.as_ref(),
    )
    .await;
    let fleet = coord.map(|coord| {
        fleet(
            coord,
            &settings,
            budget.quota.as_ref(),
            budget.fleet_interval,
        )
    });
    let key_id = client.key_fingerprint();
    let claim_settings = cache::ClaimSettings {
        freshness: settings
            .cache
            .as_ref()
            .map(|c| c.freshness)
            .unwrap_or_default(),
        // A refreshing run takes what another process fetched since it started.
        since: settings.cache.as_ref().filter(|c| c.refresh).map(|_| {
            run_figures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .started_at
        }),
        with_data: settings.raw,
    };
    let journal = store
        .map(|store| Journal::start(store, clock, run_figures.clone(), key_id, claim_settings))
        .transpose()
        .map_err(EngineError::Output)?;
    let policy = Policy::new(
        settings.backoff,
        budget.scheduler.interval(),
        settings.max_rate_limited,
    );
    let rate = budget.rate;
    let shared = Arc::new(Shared {
        client,
        scheduler: budget.scheduler,
        counters: counters.clone(),
        policy,
        tracker: Mutex::new(Tracker::default()),
        started: tokio::time::Instant::now(),
        halt: halt.clone(),
        stop,
        names,
        latency_ewma_us: AtomicU64::new(0),
        journal: journal.as_ref().map(Journal::sender),
        raw: settings.raw,
        only_new: settings.only_new,
        seen,
        others,
        twins: Mutex::new(HashMap::new()),
        quota_live: budget
            .quota
            .as_ref()
            .is_some_and(|q| q.source == QuotaSource::Live),
        last_resync: Mutex::new(None),
        wait_for_reset: settings.quota.wait_for_reset,
        submit: settings.submit_urls,
        pending: Mutex::new(pending),
        fleet,
        halt_detail: Mutex::new(None),
        key_reload: settings.key_reload.clone(),
        key_generation: AtomicU64::new(0),
        rotation: tokio::sync::Mutex::new(()),
    });
    if let Some(e) = &budget.refused {
        // The key (or the server's certificate) was refused: no lookup can succeed.
        shared
            .halt_detail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(|| e.to_string());
        halt.set(HaltCause::Refused(e.kind()));
    }
    let ledger = journal.as_ref().map(|_| spawn_ledger(shared.clone()));
    let heartbeat = match shared.fleet.clone() {
        Some(fleet) => Some(crate::fleet::spawn_heartbeat(fleet, counters.clone()).await),
        None => None,
    };
    let todo = Arc::new(todo);
    let (taken, left) = run_workers(&shared, &todo, &tx, settings.concurrency, rate).await;
    skip_rest(&shared, todo[taken..].iter().chain(&left), &tx).await;
    drop(tx);
    if let Some(ledger) = ledger {
        ledger.abort();
    }
    if let (Some((task, me)), Some(fleet)) = (heartbeat, &shared.fleet) {
        task.abort();
        // What is left of a lease goes back to the fleet (and off its books).
        let _ = fleet.coord.end_lease().await;
        let _ = fleet.coord.leave(&me).await;
    }
    finish_journal(&shared, journal, &run_figures);
    let written = writer
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("the writer panicked")));
    let outcome = match (written, halt.get()) {
        (Err(e), _) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(EngineError::Output(e));
        }
        (_, Some(cause)) => cause.outcome(),
        (Ok(()), None) if Counters::get(&counters.errors) > 0 || counters.any_input_damaged() => {
            Outcome::CompletedWithErrors
        }
        (_, None) => Outcome::Completed,
    };
    let mut summary = counters.summary(started.elapsed().as_secs_f64(), outcome.as_str());
    summary.quota = Some(quota_report(
        &shared,
        budget.quota.as_ref(),
        budget.refused.as_ref(),
        rate,
    ));
    summary.pacing = Some(shared.scheduler.pacing_report());
    summary.coordinator = match (&shared.fleet, coordinator_note) {
        (_, Some(note)) => Some(note),
        (Some(_), None) => Some("shared through Redis".into()),
        (None, None) => None,
    };
    summary.stopped = halt.get().map(|cause| crate::counters::StopReport {
        cause: cause.name().into_owned(),
        detail: shared
            .halt_detail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
    });
    Ok((outcome, summary))
}

/// The key's budget for this run, and the scheduler that enforces it.
struct Budget {
    /// Read (live, or from the ledger); `None` when nothing needs looking up or the key was
    /// refused.
    quota: Option<KeyQuota>,
    /// VirusTotal refused the key when its quotas were read.
    refused: Option<vtbulk_vt::Error>,
    rate: Option<Rate>,
    scheduler: Scheduler,
    /// The fleet's spacing (margin included; zero: no rate to keep).
    fleet_interval: Duration,
}

impl Budget {
    /// One `GET /users` unless offline (or nothing to look up); the scheduler is sized from
    /// it, and spaces the first lookup from that request's answer.
    async fn read(
        settings: &Settings,
        client: &Client,
        store: Option<&mut SqliteStore>,
        nothing_to_do: bool,
        coord: Option<&vtbulk_coord::Coordinator>,
    ) -> Budget {
        let has_store = store.is_some();
        // `GET /users` takes the fleet's turn too ("requests of any nature"), charged to no
        // window, and gives it back once answered (its departure was before that).
        let interval = settings
            .scheduler
            .rate
            .map_or(Duration::ZERO, |r| r.interval());
        let users_turn = match coord {
            Some(c) if !nothing_to_do && !settings.quota.offline => {
                c.acquire_free_turn(interval).await.ok()
            }
            _ => None,
        };
        let (quota, refused) = if nothing_to_do {
            (None, None)
        } else {
            match keyquota::read(
                client,
                settings.scheduler.caps,
                settings.quota.offline,
                store,
                settings.scheduler.clock,
            )
            .await
            {
                Ok(quota) => (Some(quota), None),
                Err(keyquota::Refused(e)) => (None, Some(e)),
            }
        };
        if let (Some(c), Some(turn)) = (coord, users_turn) {
            // Answered, so it left before now: the fleet's next slot errs long, never short.
            let _ = c
                .departed(turn, tokio::time::Instant::now(), interval)
                .await;
        }
        let config = SchedulerConfig {
            // The ledger (in the store) drains what is charged.
            keep_spend: has_store,
            ..quota
                .as_ref()
                .map_or(settings.scheduler, |q| q.schedule(settings.scheduler))
        };
        let fleet_interval = config.rate.map_or(Duration::ZERO, |r| {
            r.interval().mul_f64(1.0 + config.safety_margin.max(0.0))
        });
        // A fleet that leases its slots (high rates) is paced by them: the slots come one
        // interval apart on Redis's clock, each waited for precisely in turn, which a local
        // pacer spacing each departure from the last would only slow down (a timer tick late
        // each time: half the rate at 1 ms) or, on top of the slots, jostle. Its windows and
        // 429 gate stay.
        let leased = coord.is_some() && vtbulk_coord::lease_size(fleet_interval) > 1;
        let scheduler = Scheduler::new(SchedulerConfig {
            rate: if leased { None } else { config.rate },
            ..config
        });
        if let Some(at) = quota.as_ref().and_then(|q| q.handled_by) {
            // The users request counts against the per-minute rate ("requests of any nature"):
            // the first lookup is spaced from its answer, by when the server had handled it.
            scheduler.note_departure(at).await;
        }
        Budget {
            quota,
            refused,
            rate: config.rate,
            scheduler,
            fleet_interval,
        }
    }
}

/// This process's part in the fleet: the key's allowances less the reserve (the fleet's
/// counters in Redis start from VirusTotal's `used`, read live by this process).
fn fleet(
    coord: vtbulk_coord::Coordinator,
    settings: &Settings,
    quota: Option<&KeyQuota>,
    interval: Duration,
) -> crate::lookup::Fleet {
    let caps = quota.map_or(settings.scheduler.caps, |q| q.caps);
    let reserve = settings.scheduler.reserve;
    let allow = |cap: Option<u64>| cap.map(|c| c.saturating_sub(reserve.of(c)));
    let used = quota.map(|q| q.used).unwrap_or_default();
    crate::lookup::Fleet {
        coord,
        allow: vtbulk_coord::Allowances {
            hour: allow(caps.hourly),
            day: allow(caps.daily),
            month: allow(caps.monthly),
        },
        seeds: vtbulk_coord::Seeds {
            hour: used.hour,
            day: used.day,
            month: used.month,
        },
        interval,
        grace: settings.coordinator_grace,
        lost_since: Default::default(),
    }
}

/// The workers: `workers` tasks, of which `permits` may be in a lookup at once, taking
/// entries through one cursor, then the entries sent back because another process was
/// looking them up. Returns how many entries were taken, and those sent back and never
/// taken again (the run stopped).
async fn run_workers(
    shared: &Arc<Shared>,
    todo: &Arc<Vec<u32>>,
    tx: &mpsc::Sender<Out>,
    concurrency: Concurrency,
    rate: Option<Rate>,
) -> (usize, Vec<u32>) {
    let rate_per_sec = rate.map(|r| r.per_second());
    let (workers, initial) = match concurrency {
        Concurrency::Fixed(n) => (n.max(1), n.max(1)),
        Concurrency::Auto { max } => {
            let max = max.max(1);
            // Little's law with a 0.5 s latency guess until real latencies come in.
            let start = rate_per_sec.map_or(max, |r| ((r * 0.5).ceil() as usize + 1).clamp(1, max));
            (max, start)
        }
    };
    // No more workers than entries to look up (but at least one).
    let cap = todo.len().max(1);
    let (workers, initial) = (workers.min(cap), initial.min(cap));
    let permits = Arc::new(Semaphore::new(initial));
    let cursor = Arc::new(AtomicUsize::new(0));
    let waiting: Arc<Mutex<VecDeque<Waiting>>> = Arc::default();
    // Claims in a shared cache go a chunk of entries at a time when the rate is high (one
    // transaction for many), one at a time when it is low (a claim taken long before its
    // lookup would make another process wait for it).
    let claiming = shared.journal.is_some() && shared.fleet.is_none();
    let chunk = if claiming && rate_per_sec.is_none_or(|r| r >= CHUNK_RATE) {
        CLAIM_CHUNK
    } else {
        1
    };
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (shared, todo, cursor, permits, tx) = (
            shared.clone(),
            todo.clone(),
            cursor.clone(),
            permits.clone(),
            tx.clone(),
        );
        let waiting = waiting.clone();
        tasks.spawn(async move {
            'work: loop {
                let Ok(mut permit) = permits.acquire().await else {
                    break;
                };
                // A chunk of the list (one entry unless claims are worth batching), else an
                // entry another process was looking up, when it is due.
                let first = cursor.fetch_add(chunk, Ordering::SeqCst);
                let mut taken: Vec<(usize, u32, Option<Waiting>)> = (first..first + chunk)
                    .filter_map(|i| todo.get(i).map(|&index| (i, index, None)))
                    .collect();
                if taken.is_empty() {
                    let Some(entry) = lock(&waiting).pop_front() else {
                        break;
                    };
                    if entry.at > tokio::time::Instant::now() {
                        // Not due: wait without a permit (a stop cuts it short).
                        drop(permit);
                        let woken = shared.halt.wake.notified();
                        if shared.halt.get().is_none() {
                            tokio::select! {
                                () = tokio::time::sleep_until(entry.at) => {}
                                () = woken => {}
                            }
                        }
                        let Ok(again) = permits.acquire().await else {
                            lock(&waiting).push_front(entry);
                            break;
                        };
                        permit = again;
                    }
                    taken.push((entry.i, entry.index, Some(entry)));
                }
                let targets: Vec<_> = taken
                    .iter()
                    .map(|&(_, index, _)| shared.target(index as usize))
                    .collect();
                // Another process's lookup is waited for so long, then made here too.
                let patient = taken.iter().all(|(_, _, w)| {
                    w.as_ref()
                        .is_none_or(|e| e.since.elapsed() < CLAIM_PATIENCE)
                });
                let befores = if patient {
                    claims::before(&shared, &targets).await
                } else {
                    targets.iter().map(|_| claims::Before::Alone).collect()
                };
                for ((i, index, waited), (target, before)) in
                    taken.into_iter().zip(targets.into_iter().zip(befores))
                {
                    let seed = (i as u64) << 8 | w as u64;
                    let record = match before {
                        claims::Before::Answered(record) => *record,
                        claims::Before::Known => {
                            bump(&shared.counters.done);
                            continue;
                        }
                        claims::Before::Busy => {
                            let now = tokio::time::Instant::now();
                            let entry = match waited {
                                Some(e) => Waiting {
                                    tries: e.tries + 1,
                                    at: now + Waiting::pause(e.tries + 1),
                                    ..e
                                },
                                None => {
                                    bump(&shared.counters.claims_waited);
                                    Waiting {
                                        i,
                                        index,
                                        since: now,
                                        tries: 0,
                                        at: now + Waiting::pause(0),
                                    }
                                }
                            };
                            lock(&waiting).push_back(entry);
                            continue;
                        }
                        claims::Before::Claimed(key) => {
                            let record = lookup(&shared, target, seed).await;
                            claims::release(&shared, key);
                            record
                        }
                        claims::Before::Alone => lookup(&shared, target, seed).await,
                    };
                    bump(&shared.counters.done);
                    if tx.send(Out::One(record)).await.is_err() {
                        break 'work;
                    }
                }
                drop(permit);
            }
        });
    }
    // Grow the permits as real latencies come in (never shrink: a slow patch should not
    // strand workers mid-request).
    let controller = {
        let (shared, permits) = (shared.clone(), permits.clone());
        let mut current = initial;
        tokio::spawn(async move {
            let Some(rate) = rate_per_sec else { return };
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let latency = shared.latency_ewma_us.load(Ordering::Relaxed) as f64 / 1e6;
                let wanted = ((rate * latency * 1.5).ceil() as usize + 1).clamp(1, workers);
                if wanted > current {
                    permits.add_permits(wanted - current);
                    current = wanted;
                }
            }
        })
    };
    while tasks.join_next().await.is_some() {}
    controller.abort();
    let left = lock(&waiting).drain(..).map(|e| e.index).collect();
    (cursor.load(Ordering::SeqCst).min(todo.len()), left)
}

/// An entry another process sharing the cache file was looking up: taken again once the
/// list is done, at `at` (a quarter second after, then twice as long each time, up to 5 s).
struct Waiting {
    /// Its place in the list (for the retry seed) and its entry.
    i: usize,
    index: u32,
    /// When it was first found busy.
    since: tokio::time::Instant,
    tries: u32,
    at: tokio::time::Instant,
}

impl Waiting {
    fn pause(tries: u32) -> Duration {
        Duration::from_millis(250)
            .saturating_mul(1 << tries.min(5))
            .min(Duration::from_secs(5))
    }
}

/// Entries claimed at once by a worker when the rate is at least [`CHUNK_RATE`] a second:
/// measured at zero latency (100k hashes, 64 in flight), claiming one at a time cost about
/// a fifth of the throughput; see `benches/RESULTS.md`.
const CLAIM_CHUNK: usize = 8;
const CHUNK_RATE: f64 = 50.0;

/// How long a worker waits for another process's lookup of an entry before making its own
/// (a process that holds a claim and is alive but stuck, e.g. sleeping through a quota
/// window, does not hold this one up for ever).
const CLAIM_PATIENCE: Duration = Duration::from_secs(120);

/// Entries nobody took: the run stopped before reaching them.
async fn skip_rest(shared: &Shared, rest: impl Iterator<Item = &u32>, tx: &mpsc::Sender<Out>) {
    // Workers only stop early when the run halts (or the writer is gone, which halts it).
    let cause = shared.halt.get().unwrap_or(HaltCause::OutputClosed);
    for &index in rest {
        let target = shared.target(index as usize);
        bump(&shared.counters.done);
        if tx
            .send(Out::One(skipped(shared, target, cause)))
            .await
            .is_err()
        {
            break;
        }
    }
}

/// What the scheduler charges goes to the ledger every second (and at the end).
fn spawn_ledger(shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Some(tx) = &shared.journal {
                cache::spend(tx, shared.scheduler.drain_spend());
            }
        }
    })
}

/// The journal's last commit, the ledger's last spend, and the run's figures for
/// `vtbulk cache stats`.
fn finish_journal(shared: &Shared, journal: Option<Journal>, figures: &Mutex<RunRecord>) {
    let Some(journal) = journal else { return };
    cache::spend(&journal.sender(), shared.scheduler.drain_spend());
    {
        let mut figures = figures.lock().unwrap_or_else(|e| e.into_inner());
        figures.hits = Counters::get(&shared.counters.cache_hits);
        figures.lookups = Counters::get(&shared.counters.requests);
    }
    if journal.finish().is_err() {
        bump(&shared.counters.cache_write_errors);
    }
}

/// The summary's quota part: the budget's source, each window now, and why the run stopped.
fn quota_report(
    shared: &Shared,
    quota: Option<&keyquota::KeyQuota>,
    refused: Option<&vtbulk_vt::Error>,
    rate: Option<Rate>,
) -> QuotaReport {
    let skipped = shared
        .counters
        .skipped_by_reason
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let exhausted = Window::ALL
        .into_iter()
        .find(|w| skipped.contains_key(w.skip_reason()));
    let windows = shared.scheduler.budgets();
    QuotaReport {
        source: quota
            .map_or(QuotaSource::NotRead, |q| q.source)
            .as_str()
            .to_owned(),
        note: match refused {
            Some(e) => Some(format!(
                "GET /users refused the key: {} {}",
                e.code(),
                e.message()
            )),
            None => quota.and_then(|q| q.note.clone()),
        },
        rate: rate.map_or_else(|| "unlimited".to_owned(), |r| r.to_string()),
        exhausted: exhausted.map(|w| w.name().to_owned()),
        resets_at: exhausted.map(|w| keyquota::rfc3339(windows[w as usize].resets_at)),
        items_left: Window::ALL
            .iter()
            .filter_map(|w| skipped.get(w.skip_reason()))
            .sum(),
        windows: windows.to_vec(),
        resyncs: Counters::get(&shared.counters.quota_resyncs),
    }
}

fn make_sink(settings: &Settings, out: Box<dyn Write + Send>) -> Box<dyn Sink + Send> {
    match settings.format {
        Format::Csv => Box::new(CsvSink::new(out, settings.fields.clone())),
        Format::Ndjson => Box::new(NdjsonSink::new(out, settings.fields.clone(), settings.raw)),
        Format::SplunkLookup => Box::new(LookupSink::new(out, settings.fields.clone())),
        Format::Ecs => Box::new(EcsSink::new(out)),
    }
}
