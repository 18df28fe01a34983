//! What the mock saw: requests per key, per status, per id and per file, and a timestamped log.
//!
//! Tests use it to check what a client spent: that no 60 s window held more than the quota,
//! that a hash was asked for once, that a retry really happened. Keys appear only as
//! [`crate::key_id`] fingerprints. The log is capped so that a long benchmark cannot grow the
//! mock without bound; `log_dropped` says how much was left out.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
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
    /// `GET /api/v3/urls/{id}`, `/domains/{name}`, `/ip_addresses/{ip}`.
    Objects,
    /// `POST /api/v3/urls`.
    SubmitUrl,
    /// `GET /api/v3/analyses/{id}`.
    Analyses,
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

/// Who sent a request.
#[derive(Clone, Debug)]
pub enum KeyRef {
    /// No `x-apikey` header.
    Missing,
    /// A configured key, by position.
    Known(usize),
    /// A key the mock does not know, by fingerprint.
    Unknown(Box<str>),
}

/// The id a file lookup asked for.
#[derive(Clone, Debug)]
pub enum IdRef {
    /// Not a file lookup.
    None,
    /// A well-formed hash.
    Hash(Hash),
    /// Anything else, lower-cased.
    Text(Box<str>),
}

/// One request as the server reports it: compact, no formatting on the hot path.
#[derive(Clone, Debug)]
pub struct Record {
    /// Mock clock, Unix milliseconds.
    pub t_ms: i64,
    /// Who.
    pub key: KeyRef,
    /// Where.
    pub route: Route,
    /// The HTTP status sent (0: none).
    pub status: u16,
    /// The error code of the answer.
    pub code: Option<&'static str>,
    /// The id asked for.
    pub id: IdRef,
    /// The file found.
    pub sha256: Option<Hash>,
    /// Which window refused it.
    pub window: Option<Window>,
    /// An injected fault.
    pub fault: Option<crate::behavior::Fault>,
    /// Gzipped answer.
    pub gzip: bool,
    /// Whether it spent quota.
    pub spent: bool,
}

impl Record {
    /// A request that arrived at `t_ms` on `route`, not yet answered.
    pub fn new(t_ms: i64, route: Route) -> Record {
        Record {
            t_ms,
            key: KeyRef::Missing,
            route,
            status: 0,
            code: None,
            id: IdRef::None,
            sha256: None,
            window: None,
            fault: None,
            gzip: false,
            spent: false,
        }
    }
}

/// FxHash-style hasher: digests are already uniformly random, SipHash's protection against
/// crafted keys buys nothing here and costs a measurable share of each request.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type DigestMap = HashMap<Hash, u64, BuildHasherDefault<DigestHasher>>;

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
    /// Configured keys by position; missing and unknown keys in `other_keys`.
    known_keys: Vec<KeyCounts>,
    other_keys: HashMap<String, KeyCounts>,
    by_id: DigestMap,
    by_text_id: HashMap<Box<str>, u64>,
    by_file: DigestMap,
    log: Vec<Record>,
    log_dropped: u64,
}

/// The request record.
#[derive(Debug)]
pub struct Stats {
    inner: Mutex<Inner>,
    log_limit: usize,
    key_ids: Vec<String>,
    /// Woken at every request recorded (tests wait for an event, not for time).
    recorded: tokio::sync::Notify,
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
    /// An empty record keeping at most `log_limit` log entries; `key_ids` names the configured
    /// keys by position.
    pub fn new(log_limit: usize, key_ids: Vec<String>) -> Stats {
        Stats {
            inner: Mutex::new(Inner::default()),
            log_limit,
            key_ids,
            recorded: tokio::sync::Notify::new(),
        }
    }

    /// Resolves at the next request recorded.
    pub fn recorded(&self) -> tokio::sync::futures::Notified<'_> {
        self.recorded.notified()
    }

    fn key_name(&self, key: &KeyRef) -> String {
        match key {
            KeyRef::Missing => "missing".to_owned(),
            KeyRef::Known(i) => self.key_ids.get(*i).cloned().unwrap_or_default(),
            KeyRef::Unknown(id) => format!("unknown:{id}"),
        }
    }

    fn entry(&self, r: &Record) -> LogEntry {
        LogEntry {
            t_ms: r.t_ms,
            key: self.key_name(&r.key),
            route: r.route,
            status: r.status,
            code: r.code,
            id: match &r.id {
                IdRef::None => None,
                IdRef::Hash(h) => Some(h.to_string()),
                IdRef::Text(t) => Some(t.to_string()),
            },
            sha256: r.sha256.map(|h| h.to_string()),
            window: r.window,
            fault: r.fault,
            gzip: r.gzip,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one request.
    pub fn record(&self, record: Record) {
        let mut s = self.lock();
        s.total += 1;
        *s.by_status.entry(record.status).or_default() += 1;
        let key = match &record.key {
            KeyRef::Known(i) => {
                if s.known_keys.len() <= *i {
                    s.known_keys.resize(*i + 1, KeyCounts::default());
                }
                &mut s.known_keys[*i]
            }
            other => s.other_keys.entry(self.key_name(other)).or_default(),
        };
        key.total += 1;
        key.spent += u64::from(record.spent);
        *key.by_status.entry(record.status).or_default() += 1;
        match &record.id {
            IdRef::None => {}
            IdRef::Hash(h) => *s.by_id.entry(*h).or_default() += 1,
            IdRef::Text(t) => *s.by_text_id.entry(t.clone()).or_default() += 1,
        }
        if let Some(file) = record.sha256 {
            *s.by_file.entry(file).or_default() += 1;
        }
        if s.log.len() < self.log_limit {
            s.log.push(record);
        } else {
            s.log_dropped += 1;
        }
        drop(s);
        self.recorded.notify_waiters();
    }

    /// Forgets everything.
    pub fn reset(&self) {
        *self.lock() = Inner::default();
    }

    /// A copy, with or without the log.
    pub fn snapshot(&self, now_ms: i64, with_log: bool) -> Snapshot {
        let s = self.lock();
        let hex = |m: &DigestMap| -> BTreeMap<String, u64> {
            m.iter().map(|(h, n)| (h.to_string(), *n)).collect()
        };
        let mut by_id = hex(&s.by_id);
        by_id.extend(s.by_text_id.iter().map(|(t, n)| (t.to_string(), *n)));
        Snapshot {
            now_ms,
            total: s.total,
            by_status: s.by_status.clone(),
            by_key: s
                .known_keys
                .iter()
                .enumerate()
                .map(|(i, v)| (self.key_name(&KeyRef::Known(i)), v.clone()))
                .chain(s.other_keys.iter().map(|(k, v)| (k.clone(), v.clone())))
                .collect(),
            by_id,
            by_file: hex(&s.by_file),
            log: with_log.then(|| s.log.iter().map(|r| self.entry(r)).collect()),
            log_dropped: s.log_dropped,
        }
    }
}
