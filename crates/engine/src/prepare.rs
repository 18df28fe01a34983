//! The first stage of a run and of `vtbulk plan`: open everything, read and dedup the inputs,
//! check the cache. What is left is the list of entries to look up.
//!
//! Inputs and the cache are opened before anything else, so a missing file or a foreign cache
//! stops the run before a request is spent. Reading and deduplication run on a blocking
//! thread; invalid values become records at once. The cache check sweeps the unique entries
//! in hash order (two threads on two halves of the key range for large inputs: a re-run of a
//! big list is bound by reading the store); fresh hits become records in batches, and the
//! rest, in input order, is what the workers take.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use vtbulk_ioc::reader;
use vtbulk_ioc::{Item, Names, Seen};
use vtbulk_output::{Record, Status};
use vtbulk_store::{Store, StoreError};

use crate::cache;
use crate::counters::{Counters, bump};
use crate::entries::{Work, file_base, other_base};
use crate::run::EngineError;
use crate::settings::{CacheSettings, Settings};
use crate::writer::{self, Out};

/// Hashes handed to the dedup set at once (see `Seen::insert_batch`).
const DEDUP_BATCH: usize = 256;

/// The inputs read and deduplicated, the cache checked.
pub(crate) struct Prepared {
    /// The unique entries and the inputs' names.
    pub(crate) work: Work,
    /// Entries left to look up, in input order (the work list's numbering: hashes first).
    pub(crate) todo: Vec<u32>,
    /// The store, when the cache is on.
    pub(crate) store: Option<Store>,
    /// URLs submitted by an earlier run whose analysis may still be going (URL -> analysis
    /// id), with `--submit-unknown-urls` and the cache.
    pub(crate) pending: HashMap<String, String>,
}

/// Opens the inputs and the store, reads, dedups and checks the cache. Invalid values and
/// cache hits go to `out` as records (`None`: only counted, for `plan`).
pub(crate) async fn prepare(
    settings: &Settings,
    counters: &Arc<Counters>,
    out: Option<&mpsc::Sender<Out>>,
) -> Result<Prepared, EngineError> {
    let opened = open_all(&settings.input_paths())?;
    // The cache too: a foreign or damaged file stops the run before anything is spent.
    let store = settings.cache.as_ref().map(cache::open).transpose()?;
    let invalid = out.cloned();
    let read = read_inputs(settings, opened, counters.clone(), move |r| {
        if let Some(tx) = &invalid {
            // The writer only goes away on a write error, which the run reports.
            let _ = tx.blocking_send(Out::One(r));
        }
    });
    let (seen, others, names) = read.await.map_err(|join| EngineError::Input {
        name: "input".into(),
        source: std::io::Error::other(join.to_string()),
    })??;
    let work = Work {
        seen: Arc::new(seen),
        others: Arc::new(others),
        names,
    };
    let checking = settings.cache.as_ref().filter(|c| !c.refresh);
    let (todo, store) = match (store, checking) {
        (Some(store), Some(cache)) => {
            check_all(settings, cache, store, &work, counters, out).await?
        }
        (store, _) => ((0..work.len() as u32).collect(), store),
    };
    let pending = match (&store, &settings.cache, settings.submit_urls) {
        (Some(store), Some(cache), Some(policy)) => {
            let since = cache.clock.now() - policy.wait.as_secs() as i64 - 3600;
            store
                .submissions_since(since)?
                .into_iter()
                .map(|(url, analysis, _)| (url, analysis))
                .collect()
        }
        _ => HashMap::new(),
    };
    Ok(Prepared {
        work,
        todo,
        store,
        pending,
    })
}

/// The cache check of every entry: hashes, then URLs, domains and IP addresses; returns
/// what is left to look up, in input order, and the store.
async fn check_all(
    settings: &Settings,
    cache: &CacheSettings,
    store: Store,
    work: &Work,
    counters: &Arc<Counters>,
    out: Option<&mpsc::Sender<Out>>,
) -> Result<(Vec<u32>, Option<Store>), EngineError> {
    let (mut todo, store) = check_cache(
        settings,
        cache,
        store,
        &work.seen,
        &work.names,
        counters,
        out,
    )
    .await?;
    let offset = work.seen.len();
    let (others, store) = match store {
        Some(store) if !work.others.is_empty() => {
            let check = OthersCheck {
                others: work.others.clone(),
                offset,
                names: work.names.clone(),
                counters: counters.clone(),
                tx: out.cloned(),
                freshness: cache.freshness,
                now: cache.clock.now(),
                raw: settings.raw,
                only_new: settings.only_new,
            };
            let (todo, store) = tokio::task::spawn_blocking(move || check.run(store))
                .await
                .map_err(EngineError::task)??;
            (todo, Some(store))
        }
        store => (
            (0..work.others.len())
                .map(|i| (offset + i) as u32)
                .collect(),
            store,
        ),
    };
    todo.extend(others);
    Ok((todo, store))
}

/// Fresh answers from the cache become records now (in hash order); the rest is to look up,
/// returned in input order.
async fn check_cache(
    settings: &Settings,
    cache_settings: &CacheSettings,
    store: Store,
    seen: &Arc<Seen>,
    names: &[String],
    counters: &Arc<Counters>,
    out: Option<&mpsc::Sender<Out>>,
) -> Result<(Vec<u32>, Option<Store>), EngineError> {
    // Large inputs are checked by two threads, each with its own connection (WAL readers do
    // not block each other), on two halves of the key range.
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
    let order = Arc::new(check_order(seen));
    let per = order.len().div_ceil(stores.len()).max(1);
    let checks: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(part, store)| {
            let order = order.clone();
            let check = CacheCheck {
                seen: seen.clone(),
                tx: out.cloned(),
                counters: counters.clone(),
                names: names.to_vec(),
                freshness: cache_settings.freshness,
                raw: settings.raw,
                now: cache_settings.clock.now(),
                only_new: settings.only_new,
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
                failed.get_or_insert(EngineError::task(join));
            }
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    // Looked up in input order.
    todo.sort_unstable();
    Ok((todo, kept))
}

/// The cache check of the URLs, domains and IP addresses: fresh answers become records
/// now; the indices (after the hashes') of the rest are returned, in input order. One
/// thread: they are a small share of a run.
struct OthersCheck {
    others: Arc<Names>,
    /// Their first index in the work list (the number of hashes).
    offset: usize,
    names: Vec<String>,
    counters: Arc<Counters>,
    tx: Option<mpsc::Sender<Out>>,
    freshness: vtbulk_store::Freshness,
    now: i64,
    raw: bool,
    only_new: bool,
}

impl OthersCheck {
    fn run(self, mut store: Store) -> Result<(Vec<u32>, Store), StoreError> {
        let mut todo = Vec::new();
        let entries = self.others.entries();
        for (chunk_no, chunk) in entries.chunks(cache::CHECK_BATCH).enumerate() {
            let keys: Vec<(u8, &str)> = chunk
                .iter()
                .map(|e| (e.kind().code(), self.others.text(e)))
                .collect();
            let hits = store.get_objects(&keys, self.raw)?;
            let mut records = Vec::new();
            for (i, (entry, hit)) in chunk.iter().zip(hits).enumerate() {
                let index = (self.offset + chunk_no * cache::CHECK_BATCH + i) as u32;
                if self.only_new && hit.is_some() {
                    bump(&self.counters.already_seen);
                    bump(&self.counters.done);
                    continue;
                }
                let record = hit
                    .filter(|h| self.freshness.is_fresh_object(h, self.now))
                    .and_then(|h| {
                        let base = other_base(&self.names, &self.others, entry);
                        cache::object_hit_record(base, h, self.raw)
                    });
                let Some(record) = record else {
                    todo.push(index);
                    continue;
                };
                self.counters.cache_answered(record.status);
                bump(&self.counters.done);
                records.push(record);
            }
            if let (Some(tx), false) = (&self.tx, records.is_empty()) {
                writer::send_batch(tx, records);
            }
        }
        Ok((todo, store))
    }
}

/// One thread's share of the cache check before the lookups.
struct CacheCheck {
    seen: Arc<Seen>,
    /// Where hits go as records; `None` only counts them (`vtbulk plan`).
    tx: Option<mpsc::Sender<Out>>,
    counters: Arc<Counters>,
    names: Vec<String>,
    freshness: vtbulk_store::Freshness,
    raw: bool,
    now: i64,
    /// `--only-new`: what the cache knows is neither written nor looked up.
    only_new: bool,
}

impl CacheCheck {
    /// Checks the entries `order[range]` (sort keys and entry indices, in hash order, so the
    /// store's B-trees are swept, not jumped about): fresh hits are written as records; the
    /// indices of the rest are returned, to look up.
    fn run(self, mut store: Store, order: &[(u32, u32)]) -> Result<(Vec<u32>, Store), StoreError> {
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
                // The nightly delta: a hash the cache knows, fresh or not, is left out.
                if self.only_new && hit.is_some() {
                    bump(&self.counters.already_seen);
                    bump(&self.counters.done);
                    continue;
                }
                let record = hit
                    .filter(|h| self.freshness.is_fresh(h, self.now))
                    .and_then(|h| {
                        let base = file_base(&self.names, &self.seen, index as usize, entry);
                        cache::hit_record(base, h, self.raw)
                    });
                let Some(record) = record else {
                    todo.push(index);
                    continue;
                };
                self.counters.cache_answered(record.status);
                bump(&self.counters.done);
                records.push(record);
            }
            // The writer only goes away on a write error, reported by the run. A batch of
            // misses (a cold cache) sends nothing.
            if let (Some(tx), false) = (&self.tx, records.is_empty()) {
                writer::send_batch(tx, records);
            }
        }
        Ok((todo, store))
    }
}

/// The entries in (nearly) hash order, so the store's B-trees are swept: (32-bit key, index)
/// pairs, 8 bytes an entry. Measured on a 1M re-run: sorting bare indices by a key read
/// through them (a cache miss per comparison) took 4.2-4.3 s, (Hash, index) pairs 3.5-3.7 s
/// but 40 bytes an entry, unsorted 5.4-5.6 s.
fn check_order(seen: &Seen) -> Vec<(u32, u32)> {
    let mut order: Vec<(u32, u32)> = seen
        .entries()
        .iter()
        .enumerate()
        .map(|(i, entry)| (entry.sort_key(), i as u32))
        .collect();
    order.sort_unstable();
    order
}

/// Opens every input first, so a missing file fails the run before anything is spent.
fn open_all(inputs: &[String]) -> Result<Vec<reader::Opened>, EngineError> {
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

/// The unique hashes, the unique URLs, domains and IPs, and the inputs' display names.
type ReadAll = (Seen, Names, Vec<String>);

/// Reads and dedups every input (each member of an archive is an input of its own) on a
/// blocking thread; each invalid value goes to `invalid` as its record. Returns the unique
/// hashes and the display names of the inputs, indexed like the items' origins.
fn read_inputs(
    settings: &Settings,
    opened: Vec<reader::Opened>,
    counters: Arc<Counters>,
    mut invalid: impl FnMut(Record) + Send + 'static,
) -> tokio::task::JoinHandle<Result<ReadAll, EngineError>> {
    let options = settings.read_options();
    let hook = settings.on_input.clone();
    tokio::task::spawn_blocking(move || -> Result<ReadAll, EngineError> {
        let mut seen = Seen::new();
        let mut others = Names::new();
        let mut names: Vec<String> = Vec::new();
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
        for input in opened {
            let mut current = String::new();
            let read = input.for_each_part(&mut |part| {
                let name = part.name.clone();
                current.clone_from(&name);
                let index = names.len() as u32;
                let mut emit = |item: Item<'_>| match item {
                    Item::Hash(hash, origin) => {
                        batch.push((hash, origin));
                        if batch.len() == DEDUP_BATCH {
                            flush(&mut seen, &mut batch);
                        }
                    }
                    Item::Indicator(found, origin) => {
                        let new = others.insert(found, origin);
                        let counter = if new {
                            &counters.unique
                        } else {
                            &counters.duplicates
                        };
                        bump(counter);
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
                            first_origin: format!("{name}:{}", origin.line),
                            error_code: Some("invalid".to_owned()),
                            error_message: Some(reason),
                            ..Record::default()
                        });
                    }
                };
                let report = reader::read_input(part, index, &options, &mut emit)?;
                counters.lines.fetch_add(report.lines, Ordering::Relaxed);
                if let Some(hook) = &hook {
                    (hook.0)(&report);
                }
                counters.record_input(report);
                names.push(name);
                Ok(())
            });
            read.map_err(|source| EngineError::Input {
                name: current,
                source,
            })?;
        }
        flush(&mut seen, &mut batch);
        counters
            .dedup_bytes
            .store((seen.memory() + others.memory()) as u64, Ordering::Relaxed);
        counters
            .dedup_other_bytes
            .store(others.memory() as u64, Ordering::Relaxed);
        counters
            .unique_others
            .store(others.len() as u64, Ordering::Relaxed);
        Ok((seen, others, names))
    })
}
