//! Live counters (read by the progress display while the run goes) and the end-of-run summary.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use serde::Serialize;

use crate::decide::{HaltCause, Throttle};

/// Counters shared by the stages; every field only grows.
#[derive(Debug, Default)]
pub struct Counters {
    /// Lines read from all inputs.
    pub lines: AtomicU64,
    /// Invalid values.
    pub invalid: AtomicU64,
    /// Distinct valid IOCs.
    pub unique: AtomicU64,
    /// Bytes the dedup table occupies once every input is read.
    pub dedup_bytes: AtomicU64,
    /// Distinct URLs, domains and IP addresses (part of `unique`).
    pub unique_others: AtomicU64,
    /// Unknown URLs submitted for scanning (`POST /urls`).
    pub urls_submitted: AtomicU64,
    /// Polls of their analyses (`GET /analyses/{id}`).
    pub analysis_polls: AtomicU64,
    /// Records made from an answer another process of the fleet published.
    pub fleet_answers: AtomicU64,
    /// Records made from an answer another process sharing the cache file stored during
    /// this run (found at the check just before the lookup).
    pub shared_answers: AtomicU64,
    /// IOCs another process sharing the cache file was looking up when this one reached
    /// them: put back and taken later.
    pub claims_waited: AtomicU64,
    /// Requests in flight when the run stopped whose answer did not come within the grace:
    /// abandoned, their items `skipped` (spent, and looked up again by a re-run).
    pub abandoned: AtomicU64,
    /// Bytes their dedup set occupies (part of `dedup_bytes`).
    pub dedup_other_bytes: AtomicU64,
    /// Repeated occurrences.
    pub duplicates: AtomicU64,
    /// Unique IOCs with a final record.
    pub done: AtomicU64,
    /// `ok` records.
    pub ok: AtomicU64,
    /// `not_found` records.
    pub not_found: AtomicU64,
    /// `error` records.
    pub errors: AtomicU64,
    /// `skipped` records.
    pub skipped: AtomicU64,
    /// Retries after a retryable failure.
    pub retries: AtomicU64,
    /// 429 answers.
    pub rate_limited: AtomicU64,
    /// HTTP requests sent (each spends quota).
    pub requests: AtomicU64,
    /// Records answered from the cache (or from a twin answered earlier in the run).
    pub cache_hits: AtomicU64,
    /// Answers committed to the cache.
    pub cache_writes: AtomicU64,
    /// Answers the cache failed to keep (the run goes on; they will be looked up again).
    pub cache_write_errors: AtomicU64,
    /// Error records by code.
    pub errors_by_code: Mutex<BTreeMap<String, u64>>,
    /// 429s by code.
    pub rate_limited_by_code: Mutex<BTreeMap<String, u64>>,
    /// 429s by what they meant (see [`Summary::rate_limited_by_kind`]).
    pub rate_limited_by_kind: Mutex<HashMap<Throttle, u64>>,
    /// Records that matched `--fail-on`.
    pub fail_on_matches: AtomicU64,
    /// Text fields from VirusTotal cut to `FIELD_CAP` bytes.
    pub fields_cut: AtomicU64,
    /// Times the key was read again after a 401 and a new one taken up.
    pub key_rotations: AtomicU64,
    /// Hashes left out by `--only-new` (the cache knew them).
    pub already_seen: AtomicU64,
    /// What reading each input did, in order.
    pub inputs: Mutex<Vec<vtbulk_ioc::InputReport>>,
    /// Skipped records by reason.
    pub skipped_by_reason: Mutex<HashMap<HaltCause, u64>>,
    /// While the run waits for a quota window to reset (`--wait-for-reset`): when, Unix
    /// seconds (0: not waiting).
    pub waiting_until: AtomicI64,
    /// Re-reads of the key's quotas after an unexpected QuotaExceededError.
    pub quota_resyncs: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn bump_map(map: &Mutex<BTreeMap<String, u64>>, key: &str) {
    *map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key.to_owned())
        .or_default() += 1;
}

/// One more in `map` under `key` (an enum: rendered to its name in the summary).
pub(crate) fn bump_by<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, u64>>, key: K) {
    *map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_default() += 1;
}

/// `map` by its keys' names, in name order (what the summary shows).
fn by_name<K: Copy>(
    map: &Mutex<HashMap<K, u64>>,
    name: impl Fn(K) -> String,
) -> BTreeMap<String, u64> {
    map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(&k, &n)| (name(k), n))
        .collect()
}

impl Counters {
    /// A record the cache answered (at the check before the lookups, or just before one):
    /// `ok` or `not_found` by its status, and a cache hit.
    pub(crate) fn cache_answered(&self, status: Option<vtbulk_output::Status>) {
        match status {
            Some(vtbulk_output::Status::Ok) => bump(&self.ok),
            _ => bump(&self.not_found),
        }
        bump(&self.cache_hits);
    }

    /// Keeps what reading one input did, for the summary.
    pub(crate) fn record_input(&self, report: vtbulk_ioc::InputReport) {
        self.inputs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(report);
    }

    /// Whether reading an input ended on damage (a truncated or corrupt compressed stream, a
    /// JSON document cut short) or an input was skipped (a binary file).
    pub(crate) fn any_input_damaged(&self) -> bool {
        self.inputs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|i| i.damage.is_some() || i.skipped.is_some())
    }

    /// What reading each input did, and the exclusions of all of them by reason.
    pub fn inputs(&self) -> (Vec<vtbulk_ioc::InputReport>, u64, BTreeMap<String, u64>) {
        let inputs = self
            .inputs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut by_reason = BTreeMap::new();
        for report in &inputs {
            for (reason, n) in &report.excluded_by_reason {
                *by_reason.entry((*reason).to_owned()).or_default() += n;
            }
        }
        let excluded = by_reason.values().sum();
        (inputs, excluded, by_reason)
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// The summary as of now.
    pub fn summary(&self, elapsed_secs: f64, outcome: &str) -> Summary {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let map =
            |m: &Mutex<BTreeMap<String, u64>>| m.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let requests = get(&self.requests);
        let (inputs, excluded, excluded_by_reason) = self.inputs();
        Summary {
            lines_read: get(&self.lines),
            invalid: get(&self.invalid),
            excluded,
            excluded_by_reason,
            inputs,
            fail_on_matches: get(&self.fail_on_matches),
            fields_cut: get(&self.fields_cut),
            key_rotations: get(&self.key_rotations),
            already_seen: get(&self.already_seen),
            unique: get(&self.unique),
            dedup_bytes: get(&self.dedup_bytes),
            unique_indicators: get(&self.unique_others),
            urls_submitted: get(&self.urls_submitted),
            analysis_polls: get(&self.analysis_polls),
            fleet_answers: get(&self.fleet_answers),
            shared_answers: get(&self.shared_answers),
            claims_waited: get(&self.claims_waited),
            abandoned: get(&self.abandoned),
            indicator_dedup_bytes: get(&self.dedup_other_bytes),
            duplicates: get(&self.duplicates),
            lookups: (get(&self.ok) + get(&self.not_found) + get(&self.errors))
                .saturating_sub(get(&self.cache_hits)),
            cache_hits: get(&self.cache_hits),
            cache_writes: get(&self.cache_writes),
            cache_write_errors: get(&self.cache_write_errors),
            ok: get(&self.ok),
            not_found: get(&self.not_found),
            errors: get(&self.errors),
            errors_by_code: map(&self.errors_by_code),
            skipped: get(&self.skipped),
            skipped_by_reason: by_name(&self.skipped_by_reason, |c| c.name().into_owned()),
            retries: get(&self.retries),
            rate_limited: get(&self.rate_limited),
            rate_limited_by_code: map(&self.rate_limited_by_code),
            rate_limited_by_kind: by_name(&self.rate_limited_by_kind, |k| k.name().to_owned()),
            requests,
            elapsed_secs,
            requests_per_sec: if elapsed_secs > 0.0 {
                requests as f64 / elapsed_secs
            } else {
                0.0
            },
            outcome: outcome.to_owned(),
            exit_code: 0,
            annotate: None,
            coordinator: None,
            quota: None,
            pacing: None,
            stopped: None,
        }
    }
}

/// What a run did, for the table on stderr and `--summary-json`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Summary {
    /// Lines read from all inputs.
    pub lines_read: u64,
    /// Values that are not hashes.
    pub invalid: u64,
    /// Hash-shaped tokens left out as not file hashes (import hashes, certificates, ids...).
    pub excluded: u64,
    /// The same by reason.
    pub excluded_by_reason: BTreeMap<String, u64>,
    /// Each input (each archive member): the format it was read as (and why, when `auto`
    /// fell back to text), its compression and encoding, lines, hashes, invalid values,
    /// exclusions by reason, and any damage that ended it early.
    pub inputs: Vec<vtbulk_ioc::InputReport>,
    /// Records that matched `--fail-on` (the run exits 5 when any did and nothing worse
    /// happened).
    pub fail_on_matches: u64,
    /// Text fields from VirusTotal longer than 4,096 bytes, cut (their cells end with
    /// `…[cut]`).
    #[serde(skip_serializing_if = "is_zero")]
    pub fields_cut: u64,
    /// Times VirusTotal refused the key and its source (a file, a command) held a new one,
    /// taken up without stopping.
    #[serde(skip_serializing_if = "is_zero")]
    pub key_rotations: u64,
    /// Unique hashes left out by `--only-new`: the cache had seen them before this run.
    pub already_seen: u64,
    /// Distinct valid IOCs.
    pub unique: u64,
    /// Bytes the dedup tables occupied (entries and slots, as allocated; hashes and the
    /// rest together).
    pub dedup_bytes: u64,
    /// Distinct URLs, domains and IP addresses (part of `unique`).
    #[serde(skip_serializing_if = "is_zero")]
    pub unique_indicators: u64,
    /// Bytes their dedup set occupied (part of `dedup_bytes`): their canonical text, a
    /// 24-byte entry and a table slot each.
    #[serde(skip_serializing_if = "is_zero")]
    pub indicator_dedup_bytes: u64,
    /// Unknown URLs submitted for scanning (`--submit-unknown-urls`); each is a request.
    #[serde(skip_serializing_if = "is_zero")]
    pub urls_submitted: u64,
    /// Polls of their analyses; each is a request.
    #[serde(skip_serializing_if = "is_zero")]
    pub analysis_polls: u64,
    /// Records made from an answer another process of the fleet published (`--coordinator`;
    /// part of `cache_hits`): no request.
    #[serde(skip_serializing_if = "is_zero")]
    pub fleet_answers: u64,
    /// Records made from an answer another process sharing the cache file stored while
    /// this run went (part of `cache_hits`): found at the check made just before each
    /// lookup, no request.
    #[serde(skip_serializing_if = "is_zero")]
    pub shared_answers: u64,
    /// IOCs another process sharing the cache file was looking up when this run reached
    /// them: put back, and taken later (its answer, or a lookup if it gave up).
    #[serde(skip_serializing_if = "is_zero")]
    pub claims_waited: u64,
    /// Requests in flight when the run stopped that had no answer within a moment (under a
    /// second after a signal, a few seconds after a stop from within): abandoned, their items
    /// `skipped` with the stop's reason. They were spent; a re-run looks them up again.
    #[serde(skip_serializing_if = "is_zero")]
    pub abandoned: u64,
    /// How the key was shared (`--coordinator`): through Redis, or alone at a share of the
    /// rate because Redis could not be reached (`--coordinator-fallback`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<String>,
    /// Repeated occurrences of them.
    pub duplicates: u64,
    /// Unique IOCs looked up to a final answer (ok + not_found + errors - cache_hits).
    pub lookups: u64,
    /// Found (looked up or from the cache).
    pub ok: u64,
    /// Not known to VirusTotal (looked up or from the cache).
    pub not_found: u64,
    /// Records answered from the cache, or from a twin (the same file by another hash)
    /// answered earlier in the run: no request spent.
    pub cache_hits: u64,
    /// Answers committed to the cache.
    pub cache_writes: u64,
    /// Answers the cache failed to keep.
    pub cache_write_errors: u64,
    /// Failed.
    pub errors: u64,
    /// Failed, by error code.
    pub errors_by_code: BTreeMap<String, u64>,
    /// Not looked up.
    pub skipped: u64,
    /// Not looked up, by reason.
    pub skipped_by_reason: BTreeMap<String, u64>,
    /// Retries.
    pub retries: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// 429 answers by code.
    pub rate_limited_by_code: BTreeMap<String, u64>,
    /// 429 answers by what they meant: `timing_miss` (our books had room: requeued, margin
    /// widened), `escalated` (repeated in one gate cycle: the gate closed for everyone),
    /// `in_flight` (answering a request sent before the gate closed: waited at the gate),
    /// `budget_spent` (a window our books knew was spent), `gave_up` (429s went on too long).
    pub rate_limited_by_kind: BTreeMap<String, u64>,
    /// Requests sent (quota spent).
    pub requests: u64,
    /// Wall time of the run.
    pub elapsed_secs: f64,
    /// Requests per second over the run.
    pub requests_per_sec: f64,
    /// `completed`, `completed_with_errors`, `auth_failed`, `quota_exhausted`, `interrupted`,
    /// `unreachable`, `output_closed`.
    pub outcome: String,
    /// The process exit code (set by the binary, which owns the mapping).
    pub exit_code: i32,
    /// `--annotate`'s second pass: rows written, cells joined, the join table's size (set
    /// by the binary, which runs it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotate: Option<crate::annotate::AnnotateReport>,
    /// The key's budget: where it came from, what is left, and why the run stopped early.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaReport>,
    /// How requests were paced: the interval, the margins (configured, adaptive at the end
    /// and at its peak), departures, and the lateness from grant to departure (p50, p99, max).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pacing: Option<vtbulk_quota::PacingReport>,
    /// Why the run stopped before the end, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<StopReport>,
}

/// Why a run stopped early.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StopReport {
    /// The skip reason of the items left (`api_unreachable`, `quota_daily`, ...).
    pub cause: String,
    /// The error behind it, when there is one (e.g. the last connection failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The quota part of a summary.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct QuotaReport {
    /// `live` (GET /users), `ledger` (the tier's profile minus our recorded spend, because
    /// /users was refused or unreachable), `offline` (--offline-quota), `not_read`.
    pub source: String,
    /// Why the budget is not live, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The per-minute rate scheduled at (`unlimited`: none).
    pub rate: String,
    /// Each window at the end of the run.
    pub windows: Vec<vtbulk_quota::WindowBudget>,
    /// The window that ran out and stopped the run (`hour`, `day`, `month`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exhausted: Option<String>,
    /// When that window resets, RFC 3339 UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<String>,
    /// Items skipped for the quota, to be looked up after the reset.
    pub items_left: u64,
    /// Re-reads of the key's quotas after an unexpected QuotaExceededError.
    pub resyncs: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
