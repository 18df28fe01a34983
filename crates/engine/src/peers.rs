//! "Has another process this IOC in hand?": asked once, by the worker, just before a lookup,
//! whoever the other processes are.
//!
//! A run checks the cache once for its whole list before the first lookup; a second run
//! started on an overlapping list a minute later would otherwise pay again for every IOC the
//! first had not yet reached or answered. So each lookup first asks its peers:
//!
//! - **Processes sharing the cache file** ([`Peers::Cache`]): the store, through the journal
//!   thread, batched with its commits (see `vtbulk_store::claims` for the steps). An answer
//!   another process journaled during this run makes the record; a lookup another live
//!   process has claimed is busy; otherwise the lookup is claimed here until it is over.
//! - **A fleet sharing the key through Redis** ([`Peers::Fleet`]): the fleet's published
//!   answer for the IOC, else a claim of its lookup (a key with a 30 s expiry, taken over
//!   sooner when its holder stops saying it is alive: a killed holder blocks no one longer
//!   than 5 s). Every answer this process gets is published for the others: a found file
//!   under each of its three digests, with the record's attributes gzipped (`{"id",
//!   "attributes"}`, a few hundred bytes) for the cache's TTLs; a process run with `--raw`
//!   adds VirusTotal's whole `data` object, and takes only answers that have it.
//!
//! Either way the answer is one of [`Before`]'s: a record from another process's answer
//! (`source=cache`, counted as a cache hit and as `shared_answers` or `fleet_answers`), busy
//! (the worker puts the entry back and asks again later, with pauses from [`Peers::waits`],
//! for at most [`Peers::patience`]; then it looks the IOC up itself), or this process's to
//! look up (given back by [`Peers::after`]).

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use vtbulk_coord::{Coordinator, Subject};
use vtbulk_output::{Record, Source, Status};
use vtbulk_quota::BackoffPolicy;
use vtbulk_store::{ClaimKey, Freshness};
use vtbulk_vt::models::{FileSummary, ObjectAttributes, ObjectSummary, SummaryAttributes};

use crate::cache::{self, Digests};
use crate::convert;
use crate::counters::{Counters, bump};
use crate::entries::{Target, Work};
use crate::journal::JournalTx;
use crate::run::lock;

/// How long a fleet claim on a lookup lasts: a holder killed mid-lookup delays the others
/// this much at most (less once its heartbeat lapses).
const FLEET_CLAIM: Duration = Duration::from_secs(30);

/// Entries claimed at once in a shared cache when the rate is at least [`CHUNK_RATE`] a
/// second: measured at zero latency (100k hashes, 64 in flight), claiming one at a time cost
/// about a fifth of the throughput; see `benches/RESULTS.md`.
const CLAIM_CHUNK: usize = 8;
const CHUNK_RATE: f64 = 50.0;

/// Who else may have an IOC in hand.
pub(crate) enum Peers {
    /// Nobody this run can know of (no cache, or `--cache off`).
    Alone,
    /// Processes sharing the cache file.
    Cache(Shared<JournalTx>),
    /// A fleet sharing the key through Redis (boxed: the connection is large, and there is
    /// one `Peers` a run).
    Fleet(Box<Shared<Coordinator>>),
}

/// Who the peers are: what the worker's policies (claims at once, waits, patience) depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Alone,
    Cache,
    Fleet,
}

impl Who {
    /// Entries a worker asks about at once at `rate_per_sec` (`None`: unlimited): a chunk of
    /// claims in one store transaction at high rates; one at a time otherwise (a claim taken
    /// long before its lookup would make another process wait for it), and always for a
    /// fleet (one Redis round trip each anyway).
    fn chunk(self, rate_per_sec: Option<f64>) -> usize {
        match self {
            Who::Cache if rate_per_sec.is_none_or(|r| r >= CHUNK_RATE) => CLAIM_CHUNK,
            Who::Alone | Who::Cache | Who::Fleet => 1,
        }
    }

    /// The pauses between asks about an entry another process is looking up: a quarter
    /// second, doubling to 5 s (a fleet's answers come sooner: a tenth of a second each).
    fn waits(self) -> BackoffPolicy {
        match self {
            Who::Fleet => {
                BackoffPolicy::doubling(Duration::from_millis(100), Duration::from_millis(100))
            }
            Who::Alone | Who::Cache => {
                BackoffPolicy::doubling(Duration::from_millis(250), Duration::from_secs(5))
            }
        }
    }

    /// How long another process's lookup of an entry is waited for before this process makes
    /// its own (a process that holds a claim and is alive but stuck, e.g. sleeping through a
    /// quota window, does not hold this one up for ever).
    fn patience(self) -> Duration {
        match self {
            Who::Fleet => 2 * FLEET_CLAIM,
            Who::Alone | Who::Cache => Duration::from_secs(120),
        }
    }
}

/// A backend and what turning its answers into records takes.
pub(crate) struct Shared<B> {
    backend: B,
    work: Arc<Work>,
    counters: Arc<Counters>,
    /// `--raw`: the records carry VirusTotal's whole object, so only whole answers count.
    raw: bool,
    /// `--only-new`: what the cache knows is neither written nor looked up.
    only_new: bool,
    /// What this process is telling the fleet (answers published, claims given up): waited
    /// for at the end ([`Peers::flush`]), so a run that ends does not take its last answers
    /// with it and leave their claims to be taken over and paid for again.
    telling: std::sync::Mutex<tokio::task::JoinSet<()>>,
}

/// How long the end of a run waits for what it is still telling the fleet.
const FLUSH_WITHIN: Duration = Duration::from_millis(300);

/// What the peers said before this process's own request.
pub(crate) enum Before {
    /// Another process's answer: the record, no request.
    Answered(Box<Record>),
    /// Another process's answer, and `--only-new` leaves what the cache knows out.
    Known,
    /// Another process is looking it up now: ask again later.
    Busy,
    /// This process's to look up, and to give up once looked up ([`Peers::after`]).
    Mine(Claim),
    /// Nobody to ask, or they could not say: look it up.
    Alone,
}

/// A lookup this process claimed from its peers.
#[derive(Debug)]
pub(crate) enum Claim {
    /// In the shared cache file.
    Cache(ClaimKey),
    /// In the fleet's Redis.
    Fleet(Subject),
}

impl Peers {
    /// The peers of a run with a cache (`journal`) and/or a fleet (`coord`): a fleet's claims
    /// take precedence (its processes may be on other hosts).
    pub(crate) fn new(
        journal: Option<JournalTx>,
        coord: Option<Coordinator>,
        work: Arc<Work>,
        counters: Arc<Counters>,
        raw: bool,
        only_new: bool,
    ) -> Peers {
        fn shared<B>(
            backend: B,
            work: Arc<Work>,
            counters: Arc<Counters>,
            raw: bool,
            only_new: bool,
        ) -> Shared<B> {
            Shared {
                backend,
                work,
                counters,
                raw,
                only_new,
                telling: std::sync::Mutex::default(),
            }
        }
        match (coord, journal) {
            (Some(coord), _) => {
                Peers::Fleet(Box::new(shared(coord, work, counters, raw, only_new)))
            }
            (None, Some(journal)) => Peers::Cache(shared(journal, work, counters, raw, only_new)),
            (None, None) => Peers::Alone,
        }
    }

    /// Who the peers are, for the policies that depend on it alone.
    fn who(&self) -> Who {
        match self {
            Peers::Alone => Who::Alone,
            Peers::Cache(_) => Who::Cache,
            Peers::Fleet(_) => Who::Fleet,
        }
    }

    /// Whether there is anyone to ask (with nobody, the worker skips the question).
    pub(crate) fn present(&self) -> bool {
        self.who() != Who::Alone
    }

    /// See [`Who::chunk`].
    pub(crate) fn chunk(&self, rate_per_sec: Option<f64>) -> usize {
        self.who().chunk(rate_per_sec)
    }

    /// See [`Who::waits`].
    pub(crate) fn waits(&self) -> BackoffPolicy {
        self.who().waits()
    }

    /// See [`Who::patience`].
    pub(crate) fn patience(&self) -> Duration {
        self.who().patience()
    }

    /// Asks about each of `targets` (a cache: one message, one transaction), claiming the
    /// lookups nobody has answered or is making.
    pub(crate) async fn before(&self, targets: &[Target<'_>]) -> Vec<Before> {
        let alone = || targets.iter().map(|_| Before::Alone).collect();
        match self {
            Peers::Alone => alone(),
            Peers::Cache(shared) => {
                let keys: Vec<ClaimKey> = targets.iter().map(|&t| shared.claim_key(t)).collect();
                let Some(answers) = shared.backend.claim(keys.clone()).await else {
                    return alone();
                };
                keys.into_iter()
                    .zip(answers)
                    .zip(targets)
                    .map(|((key, claim), &target)| shared.cache_answer(target, key, claim))
                    .collect()
            }
            Peers::Fleet(shared) => {
                let mut out = Vec::with_capacity(targets.len());
                for &target in targets {
                    out.push(shared.fleet_answer(target).await);
                }
                out
            }
        }
    }

    /// Gives a claim up, the lookup over with a record of `status`: in a cache always (the
    /// answer, if any, journaled first); in a fleet when it made no answer (an answer was
    /// published, which ended the claim).
    pub(crate) fn after(&self, claim: Claim, status: Option<Status>) {
        match (self, claim) {
            (Peers::Cache(shared), Claim::Cache(key)) => shared.backend.release(key),
            (Peers::Fleet(shared), Claim::Fleet(id))
                if matches!(status, Some(Status::Error | Status::Skipped)) =>
            {
                let coord = shared.backend.clone();
                shared.tell(async move {
                    let _ = coord.release(&id).await;
                });
            }
            _ => {}
        }
    }

    /// Waits (a moment at most: Redis may be gone) for what this process is still telling the
    /// fleet, before it leaves.
    pub(crate) async fn flush(&self) {
        let Peers::Fleet(shared) = self else { return };
        let mut telling = std::mem::take(&mut *lock(&shared.telling));
        let _ = tokio::time::timeout(FLUSH_WITHIN, async {
            while telling.join_next().await.is_some() {}
        })
        .await;
    }

    /// Tells the fleet a file was found (under each of its digests). Processes sharing the
    /// cache file learn it from the journal.
    pub(crate) fn share_file(&self, file: &FileSummary, digests: Digests) {
        if let Peers::Fleet(shared) = self {
            let value = gzip(&serde_json::json!({
                "id": file.id,
                "attributes": file.attributes,
                "raw": file.raw,
            }));
            let ids = digests.hashes().map(|h| Subject::File(h.to_string()));
            shared.publish(ids.collect(), value, true);
        }
    }

    /// Tells the fleet a URL, domain or IP address was found.
    pub(crate) fn share_object(&self, target: Target<'_>, object: &ObjectSummary) {
        if let Peers::Fleet(shared) = self {
            let value = gzip(&serde_json::json!({
                "attributes": object.attributes,
                "raw": object.raw,
            }));
            shared.publish(vec![shared.subject(target)], value, true);
        }
    }

    /// Tells the fleet VirusTotal does not know `target`.
    pub(crate) fn share_not_found(&self, target: Target<'_>) {
        if let Peers::Fleet(shared) = self {
            shared.publish(vec![shared.subject(target)], b"404".to_vec(), false);
        }
    }
}

impl<B> Shared<B> {
    /// The claim's name for `target` in the cache file.
    fn claim_key(&self, target: Target<'_>) -> ClaimKey {
        match target {
            Target::File(_, entry) => ClaimKey::File(entry.hash()),
            Target::Other(entry) => ClaimKey::Object {
                kind: entry.kind().code(),
                id: self.work.text(entry).to_owned(),
            },
        }
    }

    /// The fleet's name for `target`.
    fn subject(&self, target: Target<'_>) -> Subject {
        match target {
            Target::File(_, entry) => Subject::File(entry.hash().to_string()),
            Target::Other(entry) => {
                let text = self.work.text(entry).to_owned();
                match entry.kind() {
                    vtbulk_ioc::Kind::Url => Subject::Url(text),
                    vtbulk_ioc::Kind::Domain => Subject::Domain(text),
                    vtbulk_ioc::Kind::Ip => Subject::Ip(text),
                    // Files are entries of the dedup set, never of the names.
                    vtbulk_ioc::Kind::File => Subject::File(text),
                }
            }
        }
    }

    /// A record made from another process's answer: counted as a cache hit (and `ok` or
    /// `not_found`).
    fn answered(&self, mut record: Record, counter: &std::sync::atomic::AtomicU64) -> Before {
        record.source = Some(Source::Cache);
        self.counters.cache_answered(record.status);
        bump(counter);
        Before::Answered(Box::new(record))
    }
}

impl Shared<JournalTx> {
    fn cache_answer(
        &self,
        target: Target<'_>,
        key: ClaimKey,
        claim: vtbulk_store::Claim,
    ) -> Before {
        use vtbulk_store::Claim as Store;
        let base = self.work.base(target);
        let record = match claim {
            Store::Mine => return Before::Mine(Claim::Cache(key)),
            Store::Busy => return Before::Busy,
            _ if self.only_new => {
                bump(&self.counters.already_seen);
                return Before::Known;
            }
            Store::File(hit) => cache::hit_record(base, hit, self.raw),
            Store::Object(hit) => cache::object_hit_record(base, hit, self.raw),
        };
        // Undecodable (another version's summary): looked up, unclaimed.
        match record {
            Some(record) => self.answered(record, &self.counters.shared_answers),
            None => Before::Alone,
        }
    }
}

impl Shared<Coordinator> {
    /// The fleet's answer for `target`, or the claim of its lookup; busy when another
    /// process holds the claim; alone when Redis fails (the pacing then halts the run if it
    /// stays lost) or the answer does not decode.
    async fn fleet_answer(&self, target: Target<'_>) -> Before {
        let id = self.subject(target);
        match self.backend.answer_or_claim(&id, FLEET_CLAIM).await {
            Ok(vtbulk_coord::Claim::Answer(value)) => match self.fleet_record(target, &value) {
                Some(record) => self.answered(record, &self.counters.fleet_answers),
                None => Before::Alone,
            },
            Ok(vtbulk_coord::Claim::Claimed) => Before::Mine(Claim::Fleet(id)),
            Ok(vtbulk_coord::Claim::Busy) => Before::Busy,
            Err(_) => Before::Alone,
        }
    }

    /// The record of a fleet answer (`None` when it does not decode, or `--raw` wants the
    /// whole object and the answer has none: looked up instead).
    fn fleet_record(&self, target: Target<'_>, value: &[u8]) -> Option<Record> {
        let base = self.work.base(target);
        if value == b"404" {
            return Some(Record {
                status: Some(Status::NotFound),
                ..base
            });
        }
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(value)
            .read_to_end(&mut json)
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&json).ok()?;
        let raw = match &v["raw"] {
            serde_json::Value::Null if self.raw => return None,
            data if self.raw => {
                Some(serde_json::value::RawValue::from_string(data.to_string()).ok()?)
            }
            _ => None,
        };
        Some(match target {
            Target::File(..) => {
                let attributes: SummaryAttributes =
                    serde_json::from_value(v["attributes"].clone()).ok()?;
                convert::stored_file(base, v["id"].as_str()?.to_owned(), attributes, raw)
            }
            Target::Other(_) => {
                let attributes: ObjectAttributes =
                    serde_json::from_value(v["attributes"].clone()).ok()?;
                convert::stored_object(base, attributes, raw)
            }
        })
    }

    /// Publishes `value` under `ids` for the cache's TTL of a found (or not-found) answer.
    fn publish(&self, ids: Vec<Subject>, value: Vec<u8>, found: bool) {
        let f = Freshness::default();
        let ttl = Duration::from_secs(if found { f.found_ttl } else { f.not_found_ttl } as u64);
        let coord = self.backend.clone();
        self.tell(async move {
            let _ = coord.publish(&ids, &value, ttl).await;
        });
    }
}

impl<B> Shared<B> {
    /// Runs `message` to the fleet in the background, kept to be waited for at the end (the
    /// ones already done are let go first).
    fn tell(&self, message: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut telling = lock(&self.telling);
        while telling.try_join_next().is_some() {}
        telling.spawn(message);
    }
}

fn gzip(json: &serde_json::Value) -> Vec<u8> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = z.write_all(json.to_string().as_bytes());
    z.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_entry_is_asked_about_again_on_the_peers_backoff_and_chunks_follow_the_rate() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        let cache: Vec<Duration> = Who::Cache.waits().ceilings().take(7).collect();
        assert_eq!(cache, ms(&[250, 500, 1000, 2000, 4000, 5000, 5000]));
        let fleet: Vec<Duration> = Who::Fleet.waits().ceilings().take(3).collect();
        assert_eq!(fleet, ms(&[100, 100, 100]));
        assert_eq!(Who::Cache.patience(), Duration::from_secs(120));
        assert_eq!(Who::Fleet.patience(), Duration::from_secs(60));
        // Claims in a cache go eight at a time at 50/s and more (or unlimited), one below.
        assert_eq!(Who::Cache.chunk(None), 8);
        assert_eq!(Who::Cache.chunk(Some(50.0)), 8);
        assert_eq!(Who::Cache.chunk(Some(10.0)), 1);
        assert_eq!(Who::Fleet.chunk(None), 1, "a Redis round trip each anyway");
        assert_eq!(Who::Alone.chunk(None), 1, "nobody to claim from");
        assert!(!Peers::Alone.present());
    }
}
