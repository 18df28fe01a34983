//! What the mock saw: requests per key, per status, per id and per file, and a timestamped log.
//!
//! Tests use it to check what a client spent: that no 60 s window held more than the quota,
//! that a hash was asked for once, that a retry really happened. Keys appear only as
//! [`crate::key_id`] fingerprints. The log is capped so that a long benchmark cannot grow the
//! mock without bound; `log_dropped` says how much was left out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::Serialize;
use vtbulk_ioc::Hash;

use crate::quota::Window;

/// Which endpoint a request hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// `GET /api/v3/files/{id}`.
    Files,
    /// `GET /api/v3/users/{id}`.
    Users,
    /// `GET /api/v3/users/{id}/overall_quotas`.
    OverallQuotas,
    /// Any other `/api/v3/` path.
    Other,
}

/// One request as the log keeps it.
#[derive(Clone, Debug, Serialize)]
pub struct LogEntry {
    /// Mock clock, Unix milliseconds, when the request was decided.
    pub t_ms: i64,
    /// Key fingerprint, `missing` or `unknown:<fingerprint>`.
    pub key: String,
    /// The endpoint.
    pub route: Route,
    /// The HTTP status sent (0 for a stall or a reset before the status line).
    pub status: u16,
    /// VirusTotal's error code, for error answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    /// The file id as requested, lower-cased (files only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The sha256 of the file found (files only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Which quota window refused it, for a QuotaExceededError.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// An injected fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<crate::behavior::Fault>,
    /// True when the body went out gzipped.
    pub gzip: bool,
}

/// Counters of one key.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KeyCounts {
    /// All requests.
    pub total: u64,
    /// Requests that spent quota.
    pub spent: u64,
    /// By status.
    pub by_status: BTreeMap<u16, u64>,
}

#[derive(Debug, Default)]
struct Inner {
    total: u64,
    by_status: BTreeMap<u16, u64>,
    by_key: BTreeMap<String, KeyCounts>,
    by_id: HashMap<Hash, u64>,
    by_file: HashMap<Hash, u64>,
    log: Vec<LogEntry>,
    log_dropped: u64,
}

/// The request record.
#[derive(Debug)]
pub struct Stats {
    inner: Mutex<Inner>,
    log_limit: usize,
}

/// A copy of the stats, as `GET /_mock/stats` serves it.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    /// Mock clock when taken.
    pub now_ms: i64,
    /// All requests (control endpoints excluded).
    pub total: u64,
    /// By HTTP status.
    pub by_status: BTreeMap<u16, u64>,
    /// By key fingerprint.
    pub by_key: BTreeMap<String, KeyCounts>,
    /// File lookups by id as requested (lower-case hex).
    pub by_id: BTreeMap<String, u64>,
    /// File lookups by the sha256 of the file found (known files only).
    pub by_file: BTreeMap<String, u64>,
    /// The request log, oldest first (omitted with `?log=0`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<Vec<LogEntry>>,
    /// Entries left out of the log because it was full.
    pub log_dropped: u64,
}

impl Snapshot {
    /// Requests with this status.
    pub fn status_count(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    /// The largest number of `filter`ed log entries inside any window of `window_ms`
    /// (half-open: an entry exactly `window_ms` after another is in the next window).
    pub fn max_in_window(&self, window_ms: i64, filter: impl Fn(&LogEntry) -> bool) -> usize {
        let times: Vec<i64> = self
            .log
            .iter()
            .flatten()
            .filter(|e| filter(e))
            .map(|e| e.t_ms)
            .collect();
        let mut best = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end] - times[start] >= window_ms {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }
}

impl Stats {
    /// An empty record keeping at most `log_limit` log entries.
    pub fn new(log_limit: usize) -> Stats {
        Stats {
            inner: Mutex::new(Inner::default()),
            log_limit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one request.
    pub fn record(&self, entry: LogEntry, spent: bool, id: Option<Hash>, file: Option<Hash>) {
        let mut s = self.lock();
        s.total += 1;
        *s.by_status.entry(entry.status).or_default() += 1;
        let key = s.by_key.entry(entry.key.clone()).or_default();
        key.total += 1;
        key.spent += u64::from(spent);
        *key.by_status.entry(entry.status).or_default() += 1;
        if let Some(id) = id {
            *s.by_id.entry(id).or_default() += 1;
        }
        if let Some(file) = file {
            *s.by_file.entry(file).or_default() += 1;
        }
        if s.log.len() < self.log_limit {
            s.log.push(entry);
        } else {
            s.log_dropped += 1;
        }
    }

    /// Forgets everything.
    pub fn reset(&self) {
        *self.lock() = Inner::default();
    }

    /// A copy, with or without the log.
    pub fn snapshot(&self, now_ms: i64, with_log: bool) -> Snapshot {
        let s = self.lock();
        let hex = |m: &HashMap<Hash, u64>| m.iter().map(|(h, n)| (h.to_string(), *n)).collect();
        Snapshot {
            now_ms,
            total: s.total,
            by_status: s.by_status.clone(),
            by_key: s.by_key.clone(),
            by_id: hex(&s.by_id),
            by_file: hex(&s.by_file),
            log: with_log.then(|| s.log.clone()),
            log_dropped: s.log_dropped,
        }
    }
}
