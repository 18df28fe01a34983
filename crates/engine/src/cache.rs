//! The store in the pipeline: cache hits before lookups, and the journal after them.
//!
//! Before any lookup, the unique hashes are checked against the store in batches on a
//! blocking thread; fresh hits become `source=cache` records at once and never reach the
//! scheduler. During the run one thread owns the store and journals answers in groups (two
//! positioned writes to this process's segment of the store): a worker hands
//! over its answer and waits for the write before it releases the record and takes new
//! work, so at any moment at most `concurrency` answers are paid for and not yet journaled.
//! That is what bounds the cost of a SIGKILL. At the end the journal is imported into the
//! store's index (`Store::compact`).

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::value::RawValue;
use std::sync::mpsc::TryRecvError;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use vtbulk_ioc::Hash;
use vtbulk_output::{Record, Source, Status};
use vtbulk_quota::WallClock;
use vtbulk_store::{
    Body, Claim, ClaimKey, ClaimRules, FoundFile, Freshness, Hit, ObjectHit, ObjectPut, Put,
    RunRecord, SqliteStore, Store, StoreError,
};
use vtbulk_vt::models::{self, FileSummary, ObjectAttributes, ObjectSummary, SummaryAttributes};

use crate::{convert, packed};

/// Hashes checked against the store per read transaction.
pub(crate) const CHECK_BATCH: usize = 2048;

/// Answers journaled per group write at most.
const COMMIT_BATCH: usize = 1024;

/// How a run uses the cache.
#[derive(Clone, Debug)]
pub struct CacheSettings {
    /// The SQLite file.
    pub path: PathBuf,
    /// What counts as fresh.
    pub freshness: Freshness,
    /// Look everything up again (and update the store).
    pub refresh: bool,
    /// The clock for freshness and fetch times.
    pub clock: WallClock,
}

/// Opens the store (an error here stops the run before anything is spent).
pub(crate) fn open(settings: &CacheSettings) -> Result<SqliteStore, StoreError> {
    SqliteStore::open(&settings.path)
}

/// A stored file's attributes (digests included), as the record of a lookup would have
/// them; `None` if the stored summary does not decode.
pub fn stored_attributes(file: &FoundFile) -> Option<SummaryAttributes> {
    let hex = |h: Hash| h.to_string();
    packed::unpack(
        &file.summary,
        file.md5.map(Hash::Md5).map(hex),
        file.sha1.map(Hash::Sha1).map(hex),
        hex(Hash::Sha256(file.sha256)),
    )
}

/// The record of a cache hit, built on `base` (input, kind, occurrences, origin).
pub(crate) fn hit_record(base: Record, hit: Hit, raw: bool) -> Option<Record> {
    match hit {
        Hit::Found(file) => {
            let attributes = stored_attributes(&file)?;
            let raw = if raw {
                // The stored answer is the body as received: `{"data": {...}}`.
                let envelope: Envelope = serde_json::from_slice(&file.data?).ok()?;
                Some(envelope.data)
            } else {
                None
            };
            let id = Hash::Sha256(file.sha256).to_string();
            let mut record = convert::stored_file(base, id, attributes, raw);
            record.source = Some(Source::Cache);
            Some(record)
        }
        Hit::NotFound { .. } => Some(Record {
            status: Some(Status::NotFound),
            source: Some(Source::Cache),
            ..base
        }),
    }
}

/// What the store keeps of a URL, domain or IP address answer (`None`: a 404): the
/// record's attributes as JSON and the answer as it came.
pub(crate) fn put_object(
    kind: vtbulk_ioc::Kind,
    canonical: &str,
    object: Option<&ObjectSummary>,
) -> Put {
    Put::Object(ObjectPut {
        kind: kind.code(),
        id: canonical.to_owned(),
        summary: object.and_then(|o| serde_json::to_vec(&o.attributes).ok()),
        body: object.and_then(|o| o.body.as_ref()).map(|body| match body {
            models::Body::Gzip(z) => Body::Gzip(z.clone()),
            models::Body::Json(json) => Body::Json(json.clone()),
        }),
    })
}

/// The record of a stored URL, domain or IP address answer, built on `base`; `None` when
/// the stored attributes do not decode (looked up again).
pub(crate) fn object_hit_record(base: Record, hit: ObjectHit, raw: bool) -> Option<Record> {
    let Some(summary) = &hit.summary else {
        return Some(Record {
            status: Some(Status::NotFound),
            source: Some(Source::Cache),
            ..base
        });
    };
    let attributes: ObjectAttributes = serde_json::from_slice(summary).ok()?;
    let raw = match (&hit.gzip, raw) {
        (Some(z), true) => {
            let mut json = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&z[..]), &mut json)
                .ok()?;
            let envelope: Envelope = serde_json::from_slice(&json).ok()?;
            Some(envelope.data)
        }
        _ => None,
    };
    let mut record = convert::stored_object(base, attributes, raw);
    record.source = Some(Source::Cache);
    Some(record)
}

#[derive(serde::Deserialize)]
struct Envelope {
    data: Box<RawValue>,
}

/// A found file's three digests, parsed once per answer from its attributes (the id stands
/// in for a missing SHA-256): both the journal and the twin search need them.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Digests {
    pub(crate) sha256: Option<[u8; 32]>,
    pub(crate) md5: Option<[u8; 16]>,
    pub(crate) sha1: Option<[u8; 20]>,
}

fn digest<const N: usize>(hex: Option<&str>) -> Option<[u8; N]> {
    let hash = Hash::parse(hex?).ok()?;
    hash.as_bytes().try_into().ok()
}

impl Digests {
    pub(crate) fn of(file: &FileSummary) -> Digests {
        let a = &file.attributes;
        Digests {
            sha256: digest(a.sha256.as_deref().or(Some(&file.id))),
            md5: digest(a.md5.as_deref()),
            sha1: digest(a.sha1.as_deref()),
        }
    }

    /// The digests as hashes.
    pub(crate) fn hashes(self) -> impl Iterator<Item = Hash> {
        [
            self.md5.map(Hash::Md5),
            self.sha1.map(Hash::Sha1),
            self.sha256.map(Hash::Sha256),
        ]
        .into_iter()
        .flatten()
    }
}

/// What the store keeps of a found answer: the three digests, the summary and `data`.
pub(crate) fn put_found(file: &FileSummary, digests: Digests) -> Option<Put> {
    Some(Put::Found {
        sha256: digests.sha256?,
        md5: digests.md5,
        sha1: digests.sha1,
        summary: {
            let mut summary = Vec::with_capacity(160);
            packed::pack(&file.attributes, &mut summary);
            summary
        },
        body: file.body.as_ref().map(|body| match body {
            models::Body::Gzip(z) => Body::Gzip(z.clone()),
            models::Body::Json(json) => Body::Json(json.clone()),
        }),
    })
}

/// A message to the journal thread: an answer to commit and who to tell, or the end.
#[derive(Debug)]
pub(crate) enum Msg {
    /// Commit this and say whether it worked.
    Put(Put, oneshot::Sender<bool>),
    /// Check the store once more and claim the lookups, in order.
    Claim(Vec<ClaimKey>, ClaimReply),
    /// Give a claim up (its lookup is over), with the next batch of claims.
    Release(ClaimKey),
    /// Requests spent, for the ledger.
    Spend(Vec<vtbulk_quota::Spend>),
    /// No more answers: finish.
    Stop,
}

/// Where the answers to a batch of claims go, in order (`None`: the store failed).
pub(crate) type ClaimReply = oneshot::Sender<Option<Vec<Claim>>>;

/// A handle workers send answers through.
pub(crate) type JournalTx = std::sync::mpsc::Sender<Msg>;

/// How long the journal gathers answers after the first one of a batch before committing.
/// Workers wait for their commit, so a batch is at most the answers in flight; waiting a
/// little makes it most of them, and one pair of writes (and one wake-up of the workers)
/// serves them all. Measured when a commit was an SQLite transaction: 300 µs took a
/// zero-latency run from 4.7 s to 3.6 s; 1 ms was no better.
const GATHER: Duration = Duration::from_micros(300);

/// How long given-up claims may wait for a batch of claims to go with: an unanswered one
/// keeps another process waiting that long at most (an answered one costs nobody: its answer
/// is found first).
const RELEASE_WAIT: Duration = Duration::from_millis(500);

/// What counts as an answer at the check before a lookup: the run's freshness, `--refresh`'s
/// start, `--raw`'s need of whole answers (the time is the batch's).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClaimSettings {
    pub(crate) freshness: Freshness,
    pub(crate) since: Option<i64>,
    pub(crate) with_data: bool,
}

/// The journal: a thread owning the store's connection.
#[derive(Debug)]
pub(crate) struct Journal {
    tx: JournalTx,
    thread: std::thread::JoinHandle<Result<u64, StoreError>>,
}

impl Journal {
    /// Starts the thread; it commits what it is given in group writes and, when told
    /// to stop, records the run's figures and compacts.
    pub(crate) fn start(
        mut store: SqliteStore,
        clock: WallClock,
        run: Arc<std::sync::Mutex<RunRecord>>,
        key_id: String,
        claim_settings: ClaimSettings,
    ) -> std::io::Result<Journal> {
        let (tx, rx) = std::sync::mpsc::channel::<Msg>();
        let window = GATHER;
        // Acks go back in one message per batch to a task on the runtime, which completes
        // them there: one cross-thread wake-up per batch instead of one per answer.
        let (ack_tx, mut ack_rx) =
            tokio::sync::mpsc::unbounded_channel::<(Vec<oneshot::Sender<bool>>, bool)>();
        tokio::spawn(async move {
            while let Some((acks, ok)) = ack_rx.recv().await {
                for ack in acks {
                    let _ = ack.send(ok);
                }
            }
        });
        let thread = std::thread::Builder::new()
            .name("vtbulk-journal".into())
            .spawn(move || {
                let mut written = 0u64;
                let mut failure = None;
                let mut puts: Vec<Put> = Vec::with_capacity(COMMIT_BATCH);
                let mut acks = Vec::with_capacity(COMMIT_BATCH);
                let mut claims: Vec<(Vec<ClaimKey>, ClaimReply)> = Vec::new();
                let mut releases: Vec<ClaimKey> = Vec::new();
                let mut released_at = Instant::now();
                let mut stop = false;
                // A failed ledger write costs only the fallback's memory of this spend.
                let spend = |store: &mut SqliteStore, spends: Vec<vtbulk_quota::Spend>| {
                    let rows: Vec<_> = spends.iter().map(|s| (s.window, s.id, s.count)).collect();
                    let _ = store.add_spend(&key_id, &rows, clock.now());
                };
                let rules = |now| ClaimRules {
                    freshness: claim_settings.freshness,
                    now,
                    since: claim_settings.since,
                    with_data: claim_settings.with_data,
                };
                while !stop {
                    // Given-up claims wait for a batch of claims, or RELEASE_WAIT.
                    let first = if releases.is_empty() {
                        rx.recv().ok()
                    } else {
                        match rx.recv_timeout(RELEASE_WAIT.saturating_sub(released_at.elapsed())) {
                            Ok(msg) => Some(msg),
                            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                                let _ = store.claim(&[], &releases, &rules(clock.now()));
                                releases.clear();
                                continue;
                            }
                            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
                        }
                    };
                    match first {
                        Some(Msg::Put(put, ack)) => {
                            puts.push(put);
                            acks.push(ack);
                        }
                        Some(Msg::Claim(key, reply)) => claims.push((key, reply)),
                        Some(Msg::Release(key)) => {
                            if releases.is_empty() {
                                released_at = Instant::now();
                            }
                            releases.push(key);
                            continue;
                        }
                        Some(Msg::Spend(spends)) => {
                            spend(&mut store, spends);
                            continue;
                        }
                        Some(Msg::Stop) | None => break,
                    }
                    // Let the batch gather without listening (a listening receiver is woken
                    // by every send), then take everything that came.
                    let deadline = Instant::now() + window;
                    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                        std::thread::park_timeout(left);
                    }
                    while puts.len() < COMMIT_BATCH && claims.len() < COMMIT_BATCH {
                        match rx.try_recv() {
                            Ok(Msg::Put(put, ack)) => {
                                puts.push(put);
                                acks.push(ack);
                            }
                            Ok(Msg::Claim(key, reply)) => claims.push((key, reply)),
                            Ok(Msg::Release(key)) => releases.push(key),
                            Ok(Msg::Spend(spends)) => spend(&mut store, spends),
                            Ok(Msg::Stop) | Err(TryRecvError::Disconnected) => {
                                stop = true;
                                break;
                            }
                            Err(TryRecvError::Empty) => break,
                        }
                    }
                    // Answers first: a claim given up in this batch leaves its answer where
                    // the other processes' next claim finds it.
                    if !puts.is_empty() {
                        let ok = match store.put_batch(&puts, clock.now()) {
                            Ok(()) => {
                                written += puts.len() as u64;
                                true
                            }
                            Err(e) => {
                                failure.get_or_insert(e);
                                false
                            }
                        };
                        puts.clear();
                        let _ = ack_tx.send((std::mem::take(&mut acks), ok));
                    }
                    if !claims.is_empty() {
                        let keys: Vec<ClaimKey> =
                            claims.iter().flat_map(|(k, _)| k.iter().cloned()).collect();
                        let answers = store.claim(&keys, &releases, &rules(clock.now()));
                        releases.clear();
                        match answers {
                            Ok(answers) => {
                                let mut answers = answers.into_iter();
                                for (keys, reply) in claims.drain(..) {
                                    let mine = answers.by_ref().take(keys.len()).collect();
                                    let _ = reply.send(Some(mine));
                                }
                            }
                            // The lookups go ahead unclaimed.
                            Err(_) => {
                                for (_, reply) in claims.drain(..) {
                                    let _ = reply.send(None);
                                }
                            }
                        }
                    }
                }
                let mut figures = *run.lock().unwrap_or_else(|e| e.into_inner());
                figures.finished_at = clock.now();
                let recorded = store.record_run(figures);
                // The run's answers become visible to lookups (a killed run's are moved by
                // the next open instead).
                let compacted = store.compact();
                match failure {
                    Some(e) => Err(e),
                    None => recorded.and(compacted).map(|_| written),
                }
            })?;
        Ok(Journal { tx, thread })
    }

    /// A handle for workers.
    pub(crate) fn sender(&self) -> JournalTx {
        self.tx.clone()
    }

    /// Tells the thread to finish and waits for the last commit; the answers written, or
    /// the first store error.
    pub(crate) fn finish(self) -> Result<u64, StoreError> {
        let _ = self.tx.send(Msg::Stop);
        self.thread.join().unwrap_or_else(|_| {
            Err(StoreError::Sqlite {
                path: PathBuf::new(),
                reason: "the journal thread panicked".into(),
            })
        })
    }
}

/// Hands requests spent to the ledger (the journal writes them between answer batches).
pub(crate) fn spend(journal: &JournalTx, spends: Vec<vtbulk_quota::Spend>) {
    if !spends.is_empty() {
        let _ = journal.send(Msg::Spend(spends));
    }
}

/// Checks the store once more for `keys` and claims their lookups (`None`: the store could
/// not say; look them up anyway).
pub(crate) async fn claim(journal: &JournalTx, keys: Vec<ClaimKey>) -> Option<Vec<Claim>> {
    let (reply, answer) = oneshot::channel();
    journal.send(Msg::Claim(keys, reply)).ok()?;
    answer.await.ok().flatten()
}

/// Gives a claim up: its lookup is over (answered and journaled, or failed).
pub(crate) fn release(journal: &JournalTx, key: ClaimKey) {
    let _ = journal.send(Msg::Release(key));
}

/// Commits `put` and waits for it; false if the store failed (the run goes on uncached).
pub(crate) async fn commit(journal: &JournalTx, put: Put) -> bool {
    let (ack, done) = oneshot::channel();
    if journal.send(Msg::Put(put, ack)).is_err() {
        return false;
    }
    done.await.unwrap_or(false)
}
