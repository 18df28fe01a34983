//! The journal: one thread that owns the store's connection during a run and commits answers
//! in groups, answers claims, and keeps the spend ledger.
//!
//! A worker hands over its answer and waits for the write before it releases the record and
//! takes new work, so at any moment at most `concurrency` answers are paid for and not yet
//! journaled: that is what bounds the cost of a SIGKILL. A commit is two positioned writes to
//! this process's segment of the store; at the end the journal is imported into the store's
//! index (`Store::compact`). Claims (processes sharing the cache file, see `peers`) go
//! through the same thread, batched with the commits, because the connection is its.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use vtbulk_quota::{Spend, WallClock};
use vtbulk_store::{Claim, ClaimKey, ClaimRules, Freshness, Put, RunRecord, Store, StoreError};

use crate::run::lock;

/// Answers journaled per group write at most.
const COMMIT_BATCH: usize = 1024;

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

/// A message to the journal thread: an answer to commit and who to tell, or the end.
#[derive(Debug)]
enum Msg {
    /// Commit this and say whether it worked.
    Put(Put, oneshot::Sender<bool>),
    /// Check the store once more and claim the lookups, in order.
    Claim(Vec<ClaimKey>, ClaimReply),
    /// Give a claim up (its lookup is over), with the next batch of claims.
    Release(ClaimKey),
    /// Requests spent, for the ledger.
    Spend(Vec<Spend>),
    /// No more answers: finish.
    Stop,
}

/// Where the answers to a batch of claims go, in order (`None`: the store failed).
type ClaimReply = oneshot::Sender<Option<Vec<Claim>>>;

/// What counts as an answer at the check before a lookup: the run's freshness, `--refresh`'s
/// start, `--raw`'s need of whole answers (the time is the batch's).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClaimSettings {
    pub(crate) freshness: Freshness,
    pub(crate) since: Option<i64>,
    pub(crate) with_data: bool,
}

/// A handle to the journal thread: what workers send answers, claims and spend through.
#[derive(Clone, Debug)]
pub(crate) struct JournalTx(std::sync::mpsc::Sender<Msg>);

impl JournalTx {
    /// Commits `put` and waits for it; false if the store failed (the run goes on uncached).
    pub(crate) async fn commit(&self, put: Put) -> bool {
        let (ack, done) = oneshot::channel();
        if self.0.send(Msg::Put(put, ack)).is_err() {
            return false;
        }
        done.await.unwrap_or(false)
    }

    /// Checks the store once more for `keys` and claims their lookups (`None`: the store
    /// could not say; look them up anyway).
    pub(crate) async fn claim(&self, keys: Vec<ClaimKey>) -> Option<Vec<Claim>> {
        let (reply, answer) = oneshot::channel();
        self.0.send(Msg::Claim(keys, reply)).ok()?;
        answer.await.ok().flatten()
    }

    /// Gives a claim up: its lookup is over (answered and journaled, or failed).
    pub(crate) fn release(&self, key: ClaimKey) {
        let _ = self.0.send(Msg::Release(key));
    }

    /// Hands requests spent to the ledger (written between answer batches).
    pub(crate) fn spend(&self, spends: Vec<Spend>) {
        if !spends.is_empty() {
            let _ = self.0.send(Msg::Spend(spends));
        }
    }
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
        store: Store,
        clock: WallClock,
        run: Arc<std::sync::Mutex<RunRecord>>,
        key_id: String,
        claim_settings: ClaimSettings,
    ) -> std::io::Result<Journal> {
        let (tx, rx) = std::sync::mpsc::channel::<Msg>();
        // Acks go back in one message per batch to a task on the runtime, which completes
        // them there: one cross-thread wake-up per batch instead of one per answer.
        // Unbounded: at most one message per batch, and batches wait for their acks.
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
                let mut batch = Batch {
                    store,
                    clock,
                    key_id,
                    claim_settings,
                    ack_tx,
                    written: 0,
                    failure: None,
                    puts: Vec::with_capacity(COMMIT_BATCH),
                    acks: Vec::with_capacity(COMMIT_BATCH),
                    claims: Vec::new(),
                    releases: Vec::new(),
                    released_at: Instant::now(),
                };
                batch.serve(&rx);
                batch.finish(*lock(&run))
            })?;
        Ok(Journal {
            tx: JournalTx(tx),
            thread,
        })
    }

    /// A handle for workers.
    pub(crate) fn sender(&self) -> JournalTx {
        self.tx.clone()
    }

    /// Tells the thread to finish and waits for the last commit; the answers written, or
    /// the first store error.
    pub(crate) fn finish(self) -> Result<u64, StoreError> {
        let _ = self.tx.0.send(Msg::Stop);
        self.thread.join().unwrap_or_else(|_| {
            Err(StoreError::Sqlite {
                path: PathBuf::new(),
                reason: "the journal thread panicked".into(),
            })
        })
    }
}

/// The journal thread's state: what it gathered since the last write.
struct Batch {
    store: Store,
    clock: WallClock,
    key_id: String,
    claim_settings: ClaimSettings,
    ack_tx: tokio::sync::mpsc::UnboundedSender<(Vec<oneshot::Sender<bool>>, bool)>,
    written: u64,
    failure: Option<StoreError>,
    puts: Vec<Put>,
    acks: Vec<oneshot::Sender<bool>>,
    claims: Vec<(Vec<ClaimKey>, ClaimReply)>,
    releases: Vec<ClaimKey>,
    released_at: Instant,
}

impl Batch {
    /// Serves messages until told to stop (or every sender is gone): each batch is the first
    /// message, what came while it gathered, then one write and one claim transaction.
    fn serve(&mut self, rx: &std::sync::mpsc::Receiver<Msg>) {
        loop {
            let Some(first) = self.wait(rx) else { return };
            if matches!(first, Msg::Stop) {
                return;
            }
            if !self.take(first) {
                continue;
            }
            // Let the batch gather without listening (a listening receiver is woken by every
            // send), then take everything that came.
            let deadline = Instant::now() + GATHER;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                std::thread::park_timeout(left);
            }
            let stop = self.gather(rx);
            // Answers first: a claim given up in this batch leaves its answer where the
            // other processes' next claim finds it.
            self.commit();
            self.answer_claims();
            if stop {
                return;
            }
        }
    }

    /// The next message; given-up claims wait for a batch of claims, or [`RELEASE_WAIT`].
    fn wait(&mut self, rx: &std::sync::mpsc::Receiver<Msg>) -> Option<Msg> {
        loop {
            if self.releases.is_empty() {
                return rx.recv().ok();
            }
            match rx.recv_timeout(RELEASE_WAIT.saturating_sub(self.released_at.elapsed())) {
                Ok(msg) => return Some(msg),
                Err(RecvTimeoutError::Timeout) => {
                    let rules = self.rules();
                    let _ = self.store.claim(&[], &self.releases, &rules);
                    self.releases.clear();
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Files a message; true when it starts a batch (an answer or a claim).
    fn take(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Put(put, ack) => {
                self.puts.push(put);
                self.acks.push(ack);
                true
            }
            Msg::Claim(keys, reply) => {
                self.claims.push((keys, reply));
                true
            }
            Msg::Release(key) => {
                if self.releases.is_empty() {
                    self.released_at = Instant::now();
                }
                self.releases.push(key);
                false
            }
            Msg::Spend(spends) => {
                // A failed ledger write costs only the fallback's memory of this spend.
                let rows: Vec<_> = spends.iter().map(|s| (s.window, s.id, s.count)).collect();
                let _ = self.store.add_spend(&self.key_id, &rows, self.clock.now());
                false
            }
            Msg::Stop => false,
        }
    }

    /// Takes what came while the batch gathered, up to a batch's worth; true when told to
    /// stop (or every sender is gone).
    fn gather(&mut self, rx: &std::sync::mpsc::Receiver<Msg>) -> bool {
        while self.puts.len() < COMMIT_BATCH && self.claims.len() < COMMIT_BATCH {
            match rx.try_recv() {
                Ok(Msg::Stop) | Err(TryRecvError::Disconnected) => return true,
                Ok(msg) => {
                    self.take(msg);
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        false
    }

    /// Writes the gathered answers and tells their workers.
    fn commit(&mut self) {
        if self.puts.is_empty() {
            return;
        }
        let ok = match self.store.put_batch(&self.puts, self.clock.now()) {
            Ok(()) => {
                self.written += self.puts.len() as u64;
                true
            }
            Err(e) => {
                self.failure.get_or_insert(e);
                false
            }
        };
        self.puts.clear();
        let _ = self.ack_tx.send((std::mem::take(&mut self.acks), ok));
    }

    /// Answers the gathered claims in one transaction (with the given-up ones).
    fn answer_claims(&mut self) {
        if self.claims.is_empty() {
            return;
        }
        let keys: Vec<ClaimKey> = self
            .claims
            .iter()
            .flat_map(|(k, _)| k.iter().cloned())
            .collect();
        let rules = self.rules();
        let answers = self.store.claim(&keys, &self.releases, &rules);
        self.releases.clear();
        match answers {
            Ok(answers) => {
                let mut answers = answers.into_iter();
                for (keys, reply) in self.claims.drain(..) {
                    let mine = answers.by_ref().take(keys.len()).collect();
                    let _ = reply.send(Some(mine));
                }
            }
            // The lookups go ahead unclaimed.
            Err(_) => {
                for (_, reply) in self.claims.drain(..) {
                    let _ = reply.send(None);
                }
            }
        }
    }

    fn rules(&self) -> ClaimRules {
        ClaimRules {
            freshness: self.claim_settings.freshness,
            now: self.clock.now(),
            since: self.claim_settings.since,
            with_data: self.claim_settings.with_data,
        }
    }

    /// Records the run's figures and imports its answers into the index (a killed run's are
    /// moved by the next open instead): the answers written, or the first store error.
    fn finish(mut self, mut figures: RunRecord) -> Result<u64, StoreError> {
        figures.finished_at = self.clock.now();
        let recorded = self.store.record_run(figures);
        let compacted = self.store.compact();
        match self.failure {
            Some(e) => Err(e),
            None => recorded.and(compacted).map(|_| self.written),
        }
    }
}
