//! The run: read and dedup, check the cache, then bounded workers through the scheduler
//! (each answer journaled before its record is released), then one writer.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use vtbulk_ioc::reader::{self, InputFormat};
use vtbulk_ioc::{Column, Item, Seen, Unique};
use vtbulk_output::{CsvSink, Field, Format, NdjsonSink, Record, Sink, Status};
use vtbulk_quota::{BackoffPolicy, Exhausted, Scheduler, SchedulerConfig, Window};
use vtbulk_store::{Put, RunRecord, Store, StoreError};
use vtbulk_vt::models::FileSummary;
use vtbulk_vt::{Client, ErrorClass, FileLookup, RateLimitKind};

use crate::cache::{self, CacheSettings, Journal};
use crate::convert;
use crate::counters::{Counters, QuotaReport, Summary, bump, bump_map};
use crate::keyquota::{self, QuotaSettings, QuotaSource};

/// Hashes handed to the dedup set at once (see `Seen::insert_batch`).
const DEDUP_BATCH: usize = 256;

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
    /// The CSV column.
    pub column: Option<Column>,
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
    /// Consecutive 429s (with no success in between) after which the run stops as if the
    /// quota were spent: the key is shared, or its quota is lower than configured.
    pub max_consecutive_429: u32,
    /// The cache and journal; `None` is `--cache off` (and no spend ledger).
    pub cache: Option<CacheSettings>,
    /// How the key's budget is read, and what happens when it runs out.
    pub quota: QuotaSettings,
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

/// Why workers stopped taking work (first reason wins).
#[derive(Debug, Default)]
struct Halt {
    reason: Mutex<Option<(Outcome, String)>>,
    flag: AtomicBool,
}

impl Halt {
    fn set(&self, outcome: Outcome, skip_reason: impl Into<String>, wake: &tokio::sync::Notify) {
        let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = Some((outcome, skip_reason.into()));
        }
        self.flag.store(true, Ordering::SeqCst);
        wake.notify_waiters();
    }

    fn get(&self) -> Option<(Outcome, String)> {
        if !self.flag.load(Ordering::SeqCst) {
            return None;
        }
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

struct Shared {
    client: Client,
    scheduler: Scheduler,
    counters: Arc<Counters>,
    backoff: BackoffPolicy,
    max_consecutive_429: u32,
    consecutive_429: AtomicU64,
    halt: Halt,
    stop: StopHandle,
    names: Vec<String>,
    latency_ewma_us: AtomicU64,
    /// The journal thread, when the cache is on.
    journal: Option<cache::JournalTx>,
    /// Keep VirusTotal's `data` in records (`--raw`).
    raw: bool,
    /// The dedup set, to find an answer's other hashes among the inputs.
    seen: Arc<Seen>,
    /// Answers for entries not yet looked up, learned from a twin (same file, another hash).
    twins: Mutex<HashMap<usize, Box<FileSummary>>>,
    /// The budget was read live: an unexpected QuotaExceededError re-reads it.
    quota_live: bool,
    /// When it was last re-read (at most once a minute).
    last_resync: Mutex<Option<tokio::time::Instant>>,
    /// Sleep through an exhausted window instead of stopping.
    wait_for_reset: bool,
}

/// Re-reads the key's quotas after a QuotaExceededError our books did not expect (at most
/// once a minute; the request passes the rate gate like any other).
async fn resync(shared: &Shared) {
    if !shared.quota_live {
        return;
    }
    {
        let mut last = shared.last_resync.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
            return;
        }
        *last = Some(tokio::time::Instant::now());
    }
    shared.scheduler.acquire_rate().await;
    let clock = shared.scheduler.clock();
    if let Ok(user) = shared.client.get_own_user().await
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
    woken: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
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
        () = woken => {}
    }
    shared.counters.waiting_until.store(0, Ordering::Relaxed);
    resync(shared).await;
}

fn origin_text(names: &[String], origin: vtbulk_ioc::Origin) -> String {
    let name = names.get(origin.input as usize).map_or("?", String::as_str);
    format!("{name}:{}", origin.line)
}

fn base_record(shared: &Shared, entry: &Unique) -> Record {
    base(&shared.names, entry)
}

fn base(names: &[String], entry: &Unique) -> Record {
    let hash = entry.hash();
    Record {
        input: hash.to_string(),
        kind: Some(hash.kind()),
        occurrences: entry.count,
        first_origin: origin_text(names, entry.first()),
        ..Record::default()
    }
}

/// What the writer is sent: one record, or a batch of them (the cache check's hits, one
/// message per store batch instead of a hand-over and a wake-up per record).
#[allow(
    clippy::large_enum_variant,
    reason = "records went through the channel by value before; boxing would cost an allocation per lookup"
)]
pub(crate) enum Out {
    One(Record),
    Many(Vec<Record>),
}

/// One thread's share of the cache check before the lookups.
pub(crate) struct CacheCheck {
    pub(crate) seen: Arc<Seen>,
    /// Where hits go as records; `None` only counts them (`vtbulk plan`).
    pub(crate) tx: Option<mpsc::Sender<Out>>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) names: Vec<String>,
    pub(crate) freshness: vtbulk_store::Freshness,
    pub(crate) raw: bool,
    pub(crate) now: i64,
}

impl CacheCheck {
    /// Checks the entries `order[range]` (sort keys and entry indices, in hash order, so the
    /// store's B-trees are swept, not jumped about): fresh hits are written as records; the
    /// indices of the rest are returned, to look up.
    pub(crate) fn run(
        self,
        mut store: vtbulk_store::SqliteStore,
        order: &[(u32, u32)],
    ) -> Result<(Vec<u32>, vtbulk_store::SqliteStore), StoreError> {
        let mut todo = Vec::new();
        let entries = self.seen.entries();
        for chunk in order.chunks(cache::CHECK_BATCH) {
            let hashes: Vec<_> = chunk
                .iter()
                .map(|&(_, i)| entries[i as usize].hash())
                .collect();
            let hits = store.get_many(&hashes, self.raw)?;
            let mut records = Vec::with_capacity(chunk.len());
            for (&(_, index), hit) in chunk.iter().zip(hits) {
                let entry = &entries[index as usize];
                let record = hit
                    .filter(|h| self.freshness.is_fresh(h, self.now))
                    .and_then(|h| cache::hit_record(base(&self.names, entry), h, self.raw));
                let Some(record) = record else {
                    todo.push(index);
                    continue;
                };
                match record.status {
                    Some(Status::Ok) => bump(&self.counters.ok),
                    _ => bump(&self.counters.not_found),
                }
                bump(&self.counters.cache_hits);
                bump(&self.counters.done);
                records.push(record);
            }
            // The writer only goes away on a write error, reported by the run. A batch of
            // misses (a cold cache) sends nothing.
            if let (Some(tx), false) = (&self.tx, records.is_empty()) {
                let _ = tx.blocking_send(Out::Many(records));
            }
        }
        Ok((todo, store))
    }
}

/// The entries in (nearly) hash order, so the store's B-trees are swept: (32-bit key, index)
/// pairs, 8 bytes an entry. Measured on a 1M re-run: sorting bare indices by a key read
/// through them (a cache miss per comparison) took 4.2-4.3 s, (Hash, index) pairs 3.5-3.7 s
/// but 40 bytes an entry, unsorted 5.4-5.6 s.
pub(crate) fn check_order(seen: &Seen) -> Vec<(u32, u32)> {
    let mut order: Vec<(u32, u32)> = seen
        .entries()
        .iter()
        .enumerate()
        .map(|(i, entry)| (entry.sort_key(), i as u32))
        .collect();
    order.sort_unstable();
    order
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

/// The record of a 404, journaled first.
async fn not_found(shared: &Shared, entry: &Unique) -> Record {
    journal(shared, || Some(Put::NotFound(entry.hash()))).await;
    bump(&shared.counters.not_found);
    Record {
        status: Some(Status::NotFound),
        source: Some(vtbulk_output::Source::Api),
        ..base_record(shared, entry)
    }
}

/// Remembers a found file for the entries that are the same file by another hash.
fn note_twins(shared: &Shared, index: usize, file: &FileSummary, digests: cache::Digests) {
    for hash in digests.hashes() {
        if let Some(j) = shared.seen.position(&hash)
            && j != index
        {
            let mut twins = shared.twins.lock().unwrap_or_else(|e| e.into_inner());
            twins.insert(j, Box::new(file.clone()));
        }
    }
}

fn skipped(shared: &Shared, entry: &Unique, reason: &str) -> Record {
    bump(&shared.counters.skipped);
    bump_map(&shared.counters.skipped_by_reason, reason);
    Record {
        status: Some(Status::Skipped),
        error_code: Some(reason.to_owned()),
        ..base_record(shared, entry)
    }
}

fn error_record(shared: &Shared, entry: &Unique, err: &vtbulk_vt::Error) -> Record {
    bump(&shared.counters.errors);
    bump_map(&shared.counters.errors_by_code, err.code());
    Record {
        status: Some(Status::Error),
        source: Some(vtbulk_output::Source::Api),
        error_code: Some(err.code().to_owned()),
        error_message: Some(err.message().to_owned()),
        ..base_record(shared, entry)
    }
}

/// Looks one entry up to a final record: retries, 429s and stops included.
async fn lookup(shared: &Shared, index: usize, entry: &Unique, seed: u64) -> Record {
    // Answered already under another of its hashes, earlier in this run: no request.
    let twin = shared
        .twins
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&index);
    if let Some(mut file) = twin {
        if !shared.raw {
            file.raw = None;
        }
        bump(&shared.counters.ok);
        bump(&shared.counters.cache_hits);
        let mut record = convert::found(base_record(shared, entry), file);
        record.source = Some(vtbulk_output::Source::Cache);
        return record;
    }
    let mut backoff = shared.backoff.iter(seed);
    loop {
        // Registered before the checks, so a stop between the checks and the wait wakes us.
        let woken = shared.stop.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if shared.stop.requested() {
            shared
                .halt
                .set(Outcome::Interrupted, "interrupted", &shared.stop.wake);
        }
        if let Some((_, reason)) = shared.halt.get() {
            return skipped(shared, entry, &reason);
        }
        let acquired = tokio::select! {
            acquired = shared.scheduler.acquire() => acquired,
            () = &mut woken => continue,
        };
        if let Err(exhausted) = acquired {
            if shared.wait_for_reset {
                wait_for_reset(shared, exhausted, woken.as_mut()).await;
                continue;
            }
            shared.halt.set(
                Outcome::QuotaExhausted,
                exhausted.window.skip_reason(),
                &shared.stop.wake,
            );
            return skipped(shared, entry, exhausted.window.skip_reason());
        }
        if shared.halt.get().is_some() || shared.stop.requested() {
            continue;
        }
        bump(&shared.counters.requests);
        let started = Instant::now();
        let result = shared.client.get_file_summary(&entry.hash()).await;
        let micros = started.elapsed().as_micros() as u64;
        let old = shared.latency_ewma_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            micros
        } else {
            (old * 7 + micros) / 8
        };
        shared.latency_ewma_us.store(new, Ordering::Relaxed);
        let err = match result {
            Ok(FileLookup::Found(mut file)) => {
                shared.consecutive_429.store(0, Ordering::Relaxed);
                let digests = cache::Digests::of(&file);
                journal(shared, || cache::put_found(&file, digests)).await;
                note_twins(shared, index, &file, digests);
                if !shared.raw {
                    file.raw = None;
                }
                bump(&shared.counters.ok);
                return convert::found(base_record(shared, entry), file);
            }
            Ok(FileLookup::NotFound) => {
                shared.consecutive_429.store(0, Ordering::Relaxed);
                return not_found(shared, entry).await;
            }
            Err(err) => err,
        };
        match err.class() {
            ErrorClass::NotFound => return not_found(shared, entry).await,
            ErrorClass::RateLimited(kind) => {
                // Not an error and not an attempt: close the gate for everyone, then requeue
                // (this worker keeps the item and waits at the gate like everyone else).
                bump(&shared.counters.rate_limited);
                bump_map(&shared.counters.rate_limited_by_code, err.code());
                let streak = shared.consecutive_429.fetch_add(1, Ordering::Relaxed) + 1;
                if streak > u64::from(shared.max_consecutive_429) {
                    shared.halt.set(
                        Outcome::QuotaExhausted,
                        "quota_rate_limited",
                        &shared.stop.wake,
                    );
                    continue;
                }
                if kind == RateLimitKind::QuotaExceeded {
                    // Our books said there was budget: someone else spends on this key, or
                    // a window ran out. Re-read; the next acquire stops if it really did.
                    resync(shared).await;
                }
                let base = match kind {
                    // The minute window frees a slot within one interval of our schedule.
                    RateLimitKind::QuotaExceeded => shared
                        .scheduler
                        .interval()
                        .unwrap_or(Duration::from_secs(1))
                        .max(Duration::from_secs(1)),
                    RateLimitKind::TooManyRequests => Duration::from_secs(1),
                };
                let factor = 2u32.saturating_pow((streak.min(16) - 1) as u32);
                let wait = base.saturating_mul(factor).min(Duration::from_secs(60));
                // Jitter in [wait/2, wait]: workers that met the same 429 do not return at once.
                let jitter = (seed.wrapping_mul(streak | 1) % 1000) as f64 / 2000.0;
                shared.scheduler.close_gate(wait.mul_f64(0.5 + jitter));
            }
            ErrorClass::Fatal => {
                shared.halt.set(
                    Outcome::AuthFailed,
                    format!("stopped_{}", err.code()),
                    &shared.stop.wake,
                );
                return error_record(shared, entry, &err);
            }
            ErrorClass::Permanent => return error_record(shared, entry, &err),
            ErrorClass::Retry => match backoff.next() {
                Some(delay) => {
                    bump(&shared.counters.retries);
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = &mut woken => {}
                    }
                }
                None => return error_record(shared, entry, &err),
            },
        }
    }
}

/// The summary's quota part: the budget's source, each window now, and why the run stopped.
fn quota_report(
    shared: &Shared,
    quota: Option<&keyquota::KeyQuota>,
    refused: Option<&vtbulk_vt::Error>,
    rate: Option<vtbulk_quota::Rate>,
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
    }
}

/// Opens every input first, so a missing file fails the run before anything is spent.
pub(crate) fn open_all(
    inputs: &[String],
) -> Result<Vec<Box<dyn std::io::BufRead + Send>>, EngineError> {
    inputs
        .iter()
        .map(|name| {
            reader::open(name).map_err(|source| EngineError::Input {
                name: name.clone(),
                source,
            })
        })
        .collect()
}

/// Reads and dedups every input on a blocking thread; each invalid value goes to `invalid`
/// as its record.
pub(crate) fn read_inputs(
    settings: &Settings,
    opened: Vec<Box<dyn std::io::BufRead + Send>>,
    inputs: &[String],
    names: &[String],
    counters: Arc<Counters>,
    mut invalid: impl FnMut(Record) + Send + 'static,
) -> tokio::task::JoinHandle<Result<Seen, EngineError>> {
    let (format, column) = (settings.input_format, settings.column.clone());
    let (inputs, names) = (inputs.to_vec(), names.to_vec());
    tokio::task::spawn_blocking(move || -> Result<Seen, EngineError> {
        let mut seen = Seen::new();
        // Hashes go to the dedup set in batches: it overlaps the batch's cache misses.
        let mut batch = Vec::with_capacity(DEDUP_BATCH);
        let flush = |seen: &mut Seen, batch: &mut Vec<_>| {
            let new = seen.insert_batch(batch) as u64;
            counters.unique.fetch_add(new, Ordering::Relaxed);
            counters
                .duplicates
                .fetch_add(batch.len() as u64 - new, Ordering::Relaxed);
            batch.clear();
        };
        for (index, (mut input, name)) in opened.into_iter().zip(&inputs).enumerate() {
            let display = &names[index];
            let mut emit = |item: Item| match item {
                Item::Hash(hash, origin) => {
                    batch.push((hash, origin));
                    if batch.len() == DEDUP_BATCH {
                        flush(&mut seen, &mut batch);
                    }
                }
                Item::Invalid {
                    value,
                    origin,
                    reason,
                } => {
                    bump(&counters.invalid);
                    invalid(Record {
                        input: value,
                        status: Some(Status::Invalid),
                        occurrences: 1,
                        first_origin: origin_text(&names, origin),
                        error_code: Some("invalid".to_owned()),
                        error_message: Some(reason),
                        ..Record::default()
                    });
                }
            };
            let (_, lines) = reader::read_input(
                name,
                &mut *input,
                index as u32,
                format,
                column.as_ref(),
                &mut emit,
            )
            .map_err(|source| EngineError::Input {
                name: display.clone(),
                source,
            })?;
            counters.lines.fetch_add(lines, Ordering::Relaxed);
        }
        flush(&mut seen, &mut batch);
        Ok(seen)
    })
}

/// The inputs as given (none: stdin) and their display names.
pub(crate) fn input_names(settings: &Settings) -> (Vec<String>, Vec<String>) {
    let inputs = if settings.inputs.is_empty() {
        vec!["-".to_owned()]
    } else {
        settings.inputs.clone()
    };
    let names = inputs
        .iter()
        .map(|n| {
            if n == "-" {
                "stdin".to_owned()
            } else {
                n.clone()
            }
        })
        .collect();
    (inputs, names)
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
    let started = Instant::now();
    let (inputs, names) = input_names(&settings);
    let opened = open_all(&inputs)?;
    // The cache too: a foreign or damaged file stops the run before anything is spent.
    let store = settings.cache.as_ref().map(cache::open).transpose()?;
    let clock = settings.cache.as_ref().map(|c| c.clock).unwrap_or_default();
    let run_started_at = clock.now();

    // One writer task owns the sink; a bounded channel holds records waiting for it. It runs
    // on the runtime, not on a thread of its own: the sink writes into a large buffer, and a
    // thread would cost a futex wake-up per record.
    let (tx, mut rx) = mpsc::channel::<Out>(1024);
    let mut sink = make_sink(&settings, out);
    // The sink buffers; what was written is flushed at least every tenth of a second, so a
    // slow or a long run's records reach a pipe (a SIEM, `tail -f`) promptly, and a killed
    // run's output holds nearly everything it had committed.
    let writer = tokio::spawn(async move {
        let mut dirty = false;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Some(Out::One(record)) => {
                        sink.write(&record)?;
                        dirty = true;
                    }
                    Some(Out::Many(records)) => {
                        for record in &records {
                            sink.write(record)?;
                        }
                        dirty = true;
                    }
                    None => break,
                },
                _ = tick.tick(), if dirty => {
                    sink.finish()?;
                    dirty = false;
                }
            }
        }
        sink.finish()
    });

    // Read and dedup on a blocking thread; invalid values go straight to the writer.
    let read_tx = tx.clone();
    let read = read_inputs(
        &settings,
        opened,
        &inputs,
        &names,
        counters.clone(),
        move |record| {
            // The writer only goes away on a write error, reported below.
            let _ = read_tx.blocking_send(Out::One(record));
        },
    );
    let seen = match read.await {
        Ok(result) => result,
        Err(join) => Err(EngineError::Input {
            name: "input".into(),
            source: std::io::Error::other(join.to_string()),
        }),
    };
    let seen = match seen {
        Ok(seen) => seen,
        Err(e) => {
            drop(tx);
            let _ = writer.await;
            return Err(e);
        }
    };
    let seen = Arc::new(seen);

    // Fresh answers from the cache become records now (in hash order); the rest is to look
    // up. Large inputs are checked by two threads (each with its own connection; WAL readers
    // do not block each other) on two halves of the key range: a re-run of a big list is
    // bound by reading the store, and the writer has room for both.
    let (todo, store) = match (store, &settings.cache) {
        (Some(store), Some(cache_settings)) if !cache_settings.refresh => {
            let parts = if seen.len() >= 4 * cache::CHECK_BATCH {
                2
            } else {
                1
            };
            let mut stores = vec![store];
            for _ in 1..parts {
                match cache::open(cache_settings) {
                    Ok(extra) => stores.push(extra),
                    Err(_) => break,
                }
            }
            // Split into one contiguous key range per thread.
            let order = Arc::new(check_order(&seen));
            let per = order.len().div_ceil(stores.len()).max(1);
            let checks: Vec<_> = stores
                .into_iter()
                .enumerate()
                .map(|(part, store)| {
                    let order = order.clone();
                    let check = CacheCheck {
                        seen: seen.clone(),
                        tx: Some(tx.clone()),
                        counters: counters.clone(),
                        names: names.clone(),
                        freshness: cache_settings.freshness,
                        raw: settings.raw,
                        now: clock.now(),
                    };
                    tokio::task::spawn_blocking(move || {
                        let lo = (part * per).min(order.len());
                        let hi = ((part + 1) * per).min(order.len());
                        check.run(store, &order[lo..hi])
                    })
                })
                .collect();
            let mut todo = Vec::new();
            let mut kept = None;
            let mut failed = None;
            for check in checks {
                match check.await {
                    Ok(Ok((part_todo, store))) => {
                        todo.extend(part_todo);
                        kept.get_or_insert(store);
                    }
                    Ok(Err(e)) => {
                        failed.get_or_insert(EngineError::from(e));
                    }
                    Err(join) => {
                        failed.get_or_insert(EngineError::Output(std::io::Error::other(
                            join.to_string(),
                        )));
                    }
                }
            }
            if let Some(e) = failed {
                drop(tx);
                let _ = writer.await;
                return Err(e);
            }
            // Looked up in input order.
            todo.sort_unstable();
            (todo, kept)
        }
        (store, _) => ((0..seen.len() as u32).collect(), store),
    };
    let todo = Arc::new(todo);
    let run_figures = Arc::new(Mutex::new(RunRecord {
        started_at: run_started_at,
        unique_hashes: seen.len() as u64,
        ..RunRecord::default()
    }));
    // The key's budget (one GET /users unless offline), when anything needs looking up.
    let key_id = client.key_fingerprint();
    let mut store = store;
    let (quota, refused) = if todo.is_empty() {
        (None, None)
    } else {
        match keyquota::read(
            &client,
            settings.scheduler.caps,
            settings.quota.offline,
            store.as_mut(),
            settings.scheduler.clock,
        )
        .await
        {
            Ok(quota) => (Some(quota), None),
            Err(keyquota::Refused(e)) => (None, Some(e)),
        }
    };
    let scheduler = SchedulerConfig {
        // The ledger (in the store) drains what is charged.
        keep_spend: store.is_some(),
        ..quota
            .as_ref()
            .map_or(settings.scheduler, |q| q.schedule(settings.scheduler))
    };
    let rate = scheduler.rate;
    let scheduler = Scheduler::new(scheduler);
    if !todo.is_empty() && !settings.quota.offline {
        // The users request counts against the per-minute rate ("requests of any nature").
        scheduler.acquire_rate().await;
    }

    let journal = match store {
        Some(store) => Some(
            Journal::start(store, clock, run_figures.clone(), key_id)
                .map_err(EngineError::Output)?,
        ),
        None => None,
    };

    let shared = Arc::new(Shared {
        client,
        scheduler,
        counters: counters.clone(),
        backoff: settings.backoff,
        max_consecutive_429: settings.max_consecutive_429,
        consecutive_429: AtomicU64::new(0),
        halt: Halt::default(),
        stop,
        names,
        latency_ewma_us: AtomicU64::new(0),
        journal: journal.as_ref().map(Journal::sender),
        raw: settings.raw,
        seen: seen.clone(),
        twins: Mutex::new(HashMap::new()),
        quota_live: quota
            .as_ref()
            .is_some_and(|q| q.source == QuotaSource::Live),
        last_resync: Mutex::new(None),
        wait_for_reset: settings.quota.wait_for_reset,
    });
    if let Some(e) = &refused {
        // The key itself was refused: no lookup can succeed.
        shared.halt.set(
            Outcome::AuthFailed,
            format!("stopped_{}", e.code()),
            &shared.stop.wake,
        );
    }
    // What the scheduler charges goes to the ledger every second (and at the end).
    let ledger = journal.as_ref().map(|_| {
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Some(tx) = &shared.journal {
                    cache::spend(tx, shared.scheduler.drain_spend());
                }
            }
        })
    });

    // Bounded concurrency: `workers` tasks, of which `permits` may be in a lookup at once.
    let rate_per_sec = rate.map(|r| r.per_second());
    let (workers, initial) = match settings.concurrency {
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
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (shared, todo, cursor, permits, tx) = (
            shared.clone(),
            todo.clone(),
            cursor.clone(),
            permits.clone(),
            tx.clone(),
        );
        tasks.spawn(async move {
            loop {
                let Ok(permit) = permits.acquire().await else {
                    break;
                };
                let i = cursor.fetch_add(1, Ordering::SeqCst);
                let Some(&index) = todo.get(i) else { break };
                let index = index as usize;
                let entry = &shared.seen.entries()[index];
                let record = lookup(&shared, index, entry, (i as u64) << 8 | w as u64).await;
                drop(permit);
                bump(&shared.counters.done);
                if tx.send(Out::One(record)).await.is_err() {
                    break;
                }
            }
        });
    }
    // Grow the permits as real latencies come in (never shrink: a slow patch should not
    // strand workers mid-request).
    let controller = {
        let (shared, permits) = (shared.clone(), permits.clone());
        let mut current = initial;
        let max = workers;
        tokio::spawn(async move {
            let Some(rate) = rate_per_sec else { return };
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let latency = shared.latency_ewma_us.load(Ordering::Relaxed) as f64 / 1e6;
                let wanted = ((rate * latency * 1.5).ceil() as usize + 1).clamp(1, max);
                if wanted > current {
                    permits.add_permits(wanted - current);
                    current = wanted;
                }
            }
        })
    };
    while tasks.join_next().await.is_some() {}
    controller.abort();

    // Entries nobody took: the run stopped before reaching them.
    let taken = cursor.load(Ordering::SeqCst).min(todo.len());
    let reason = shared
        .halt
        .get()
        .map_or_else(|| "stopped".to_owned(), |(_, r)| r);
    for &index in &todo[taken..] {
        let entry = &shared.seen.entries()[index as usize];
        bump(&counters.done);
        if tx
            .send(Out::One(skipped(&shared, entry, &reason)))
            .await
            .is_err()
        {
            break;
        }
    }
    drop(tx);
    if let Some(ledger) = ledger {
        ledger.abort();
    }
    // The journal's last commit, the ledger's last spend, and the run's figures for
    // `vtbulk cache stats`.
    if let Some(journal) = journal {
        cache::spend(&journal.sender(), shared.scheduler.drain_spend());
        {
            let mut figures = run_figures.lock().unwrap_or_else(|e| e.into_inner());
            figures.hits = Counters::get(&counters.cache_hits);
            figures.lookups = Counters::get(&counters.requests);
        }
        if journal.finish().is_err() {
            bump(&counters.cache_write_errors);
        }
    }
    let written = writer
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("the writer panicked")));
    written.map_err(EngineError::Output)?;

    let outcome = match shared.halt.get() {
        Some((outcome, _)) => outcome,
        None if Counters::get(&counters.errors) > 0 => Outcome::CompletedWithErrors,
        None => Outcome::Completed,
    };
    let mut summary = counters.summary(started.elapsed().as_secs_f64(), outcome.as_str());
    summary.quota = Some(quota_report(
        &shared,
        quota.as_ref(),
        refused.as_ref(),
        rate,
    ));
    Ok((outcome, summary))
}
