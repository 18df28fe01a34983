//! The workers: each takes entries from the one queue and turns every entry it took into
//! exactly one record, in named steps ([`Worker::run`]):
//!
//! 1. **take** a chunk of the list (one entry unless claims are worth batching), else an
//!    entry put back earlier, when it is due;
//! 2. **twin**: answered already under another of its hashes in this run (no request);
//! 3. **ask the peers** whether another process has it in hand (`peers`): its answer, busy
//!    (put back for later), or this process's to look up;
//! 4. **look it up** (`lookup`), then give the peers' claim back;
//! 5. **write** the record (the writer's channel is bounded: a slow output slows the workers).
//!
//! Exactly one record per unique IOC: each entry is taken by exactly one worker (an atomic
//! cursor), an entry put back is either taken again or returned as left over when the run
//! stops, and a worker writes a record for everything else it took. A semaphore bounds the
//! lookups in flight; its permits grow with the observed latency (Little's law) and never
//! shrink.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use vtbulk_output::Record;
use vtbulk_quota::Rate;

use crate::counters::{Counters, bump};
use crate::entries::{Target, Work};
use crate::lookup::Lookup;
use crate::peers::{Before, Peers};
use crate::run::{Halt, lock};
use crate::settings::Concurrency;
use crate::writer::Out;

/// An entry of the list, by its place in the list (for the retry seed) and its index in the
/// work's numbering.
#[derive(Clone, Copy, Debug)]
struct Entry {
    place: usize,
    index: u32,
}

/// An entry another process was looking up: taken again once the list is done, at `due`.
#[derive(Debug)]
struct PutBack {
    entry: Entry,
    /// When it was first found busy.
    since: Instant,
    /// Times it was found busy.
    tries: u32,
    due: Instant,
}

/// What the workers share: the list, its cursor, the entries put back, the permits.
struct Queue {
    todo: Arc<Vec<u32>>,
    cursor: AtomicUsize,
    put_back: Mutex<VecDeque<PutBack>>,
    permits: Arc<Semaphore>,
    /// Entries taken from the list at once.
    chunk: usize,
}

/// An entry a worker took, with its waits when it was put back before.
type TakenEntry = (Entry, Option<PutBack>);

/// What a worker took: entries of the list, or one put back.
struct Taken {
    entries: Vec<TakenEntry>,
    _permit: OwnedSemaphorePermit,
}

/// The entries the workers left when the run stopped: those of the list nobody took, then
/// those put back and never taken again (in the work's numbering).
pub(crate) struct Left(pub(crate) Vec<u32>);

/// The parts of a run the workers use.
#[derive(Clone)]
pub(crate) struct Crew {
    pub(crate) work: Arc<Work>,
    pub(crate) lookup: Arc<Lookup>,
    pub(crate) peers: Arc<Peers>,
    pub(crate) halt: Arc<Halt>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) tx: mpsc::Sender<Out>,
}

/// Runs the workers over `todo` until it is done or the run halts.
pub(crate) async fn run(
    crew: Crew,
    todo: Vec<u32>,
    concurrency: Concurrency,
    rate: Option<Rate>,
) -> Left {
    let rate_per_sec = rate.map(|r| r.per_second());
    let (workers, initial) = sizes(concurrency, rate_per_sec, todo.len());
    let queue = Arc::new(Queue {
        todo: Arc::new(todo),
        cursor: AtomicUsize::new(0),
        put_back: Mutex::default(),
        permits: Arc::new(Semaphore::new(initial)),
        chunk: crew.peers.chunk(rate_per_sec),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..workers {
        let worker = Worker {
            id,
            crew: crew.clone(),
            queue: queue.clone(),
        };
        tasks.spawn(worker.run());
    }
    let controller = rate_per_sec.map(|rate| {
        let (permits, lookup) = (queue.permits.clone(), crew.lookup.clone());
        tokio::spawn(grow(permits, lookup, rate, initial, workers))
    });
    while tasks.join_next().await.is_some() {}
    if let Some(controller) = controller {
        controller.abort();
    }
    let taken = queue.cursor.load(Ordering::SeqCst).min(queue.todo.len());
    let put_back = lock(&queue.put_back)
        .drain(..)
        .map(|p| p.entry.index)
        .collect::<Vec<_>>();
    Left(
        queue.todo[taken..]
            .iter()
            .copied()
            .chain(put_back)
            .collect(),
    )
}

/// (workers, permits at first): `Fixed(n)` is n of each; `Auto` starts from Little's law with
/// a 0.5 s latency guess until real latencies come in. No more than the entries to look up
/// (but at least one).
fn sizes(concurrency: Concurrency, rate_per_sec: Option<f64>, todo: usize) -> (usize, usize) {
    let (workers, initial) = match concurrency {
        Concurrency::Fixed(n) => (n.max(1), n.max(1)),
        Concurrency::Auto { max } => {
            let max = max.max(1);
            let start = rate_per_sec.map_or(max, |r| ((r * 0.5).ceil() as usize + 1).clamp(1, max));
            (max, start)
        }
    };
    let cap = todo.max(1);
    (workers.min(cap), initial.min(cap))
}

/// Grows the permits as real latencies come in (never shrinks: a slow patch should not
/// strand workers mid-request).
async fn grow(permits: Arc<Semaphore>, lookup: Arc<Lookup>, rate: f64, initial: usize, max: usize) {
    let mut current = initial;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let latency = lookup.sender.latency().as_secs_f64();
        let wanted = ((rate * latency * 1.5).ceil() as usize + 1).clamp(1, max);
        if wanted > current {
            permits.add_permits(wanted - current);
            current = wanted;
        }
    }
}

/// One worker.
struct Worker {
    id: usize,
    crew: Crew,
    queue: Arc<Queue>,
}

impl Worker {
    /// Takes work until there is none (or the writer is gone).
    async fn run(self) {
        while let Some(taken) = self.take().await {
            for ((entry, put_back), before) in self.ask_peers(taken.entries).await {
                let target = self.crew.work.target(entry.index as usize);
                let record = match before {
                    Before::Answered(record) => *record,
                    Before::Known => {
                        bump(&self.crew.counters.done);
                        continue;
                    }
                    Before::Busy => {
                        self.put_back(entry, put_back);
                        continue;
                    }
                    Before::Mine(claim) => {
                        let record = self.look_up(target, entry).await;
                        self.crew.peers.after(claim, record.status);
                        record
                    }
                    Before::Alone => self.look_up(target, entry).await,
                };
                if !self.write(record).await {
                    return;
                }
            }
        }
    }

    /// The next chunk of the list, else an entry put back once it is due (waiting for it
    /// without a permit; a stop cuts the wait short); `None` when there is nothing left.
    async fn take(&self) -> Option<Taken> {
        let queue = &self.queue;
        let permit = queue.permits.clone().acquire_owned().await.ok()?;
        let first = queue.cursor.fetch_add(queue.chunk, Ordering::SeqCst);
        let entries: Vec<_> = (first..first + queue.chunk)
            .filter_map(|place| {
                let index = *queue.todo.get(place)?;
                Some((Entry { place, index }, None))
            })
            .collect();
        if !entries.is_empty() {
            return Some(Taken {
                entries,
                _permit: permit,
            });
        }
        let put_back = lock(&queue.put_back).pop_front()?;
        let permit = if put_back.due > Instant::now() {
            drop(permit);
            let woken = self.crew.halt.notified();
            if self.crew.halt.get().is_none() {
                tokio::select! {
                    () = tokio::time::sleep_until(put_back.due) => {}
                    () = woken => {}
                }
            }
            match queue.permits.clone().acquire_owned().await {
                Ok(permit) => permit,
                Err(_) => {
                    lock(&queue.put_back).push_front(put_back);
                    return None;
                }
            }
        } else {
            permit
        };
        Some(Taken {
            entries: vec![(put_back.entry, Some(put_back))],
            _permit: permit,
        })
    }

    /// Each entry with what the peers said of it (nothing is asked when the run halted, or of
    /// a twin answered already, or once another process's lookup was waited for long enough).
    async fn ask_peers(&self, entries: Vec<TakenEntry>) -> Vec<(TakenEntry, Before)> {
        let crew = &self.crew;
        let mut told: Vec<(TakenEntry, Option<Before>)> = entries
            .into_iter()
            .map(|taken| {
                let target = crew.work.target(taken.0.index as usize);
                let twin = crew.lookup.twin(target);
                (taken, twin.map(|r| Before::Answered(Box::new(r))))
            })
            .collect();
        let patient = told.iter().all(|((_, put_back), _)| {
            put_back
                .as_ref()
                .is_none_or(|p| p.since.elapsed() < crew.peers.patience())
        });
        let ask = crew.peers.present() && patient && crew.halt.get().is_none();
        let asked: Vec<usize> = match ask {
            true => (0..told.len()).filter(|&i| told[i].1.is_none()).collect(),
            false => Vec::new(),
        };
        if !asked.is_empty() {
            let targets: Vec<Target<'_>> = asked
                .iter()
                .map(|&i| crew.work.target(told[i].0.0.index as usize))
                .collect();
            // A stop (or the coordinator's loss) cuts the ask short: a Redis that hangs must
            // not hold the worker for its response timeout; the entries go on alone, to be
            // skipped at the lookup's first check.
            let woken = crew.halt.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let answers = match crew.halt.get() {
                Some(_) => Vec::new(),
                None => tokio::select! {
                    answers = crew.peers.before(&targets) => answers,
                    () = woken => Vec::new(),
                },
            };
            for (i, before) in asked.iter().zip(answers) {
                told[*i].1 = Some(before);
            }
        }
        told.into_iter()
            .map(|(taken, before)| (taken, before.unwrap_or(Before::Alone)))
            .collect()
    }

    /// Puts an entry another process is looking up back in the queue, due after the peers'
    /// next pause.
    fn put_back(&self, entry: Entry, earlier: Option<PutBack>) {
        let now = Instant::now();
        let waits = self.crew.peers.waits();
        let put_back = match earlier {
            Some(p) => PutBack {
                tries: p.tries + 1,
                due: now + waits.ceiling(p.tries + 1),
                ..p
            },
            None => {
                bump(&self.crew.counters.claims_waited);
                PutBack {
                    entry,
                    since: now,
                    tries: 0,
                    due: now + waits.ceiling(0),
                }
            }
        };
        lock(&self.queue.put_back).push_back(put_back);
    }

    /// Looks `target` up (its jitter seeded by its place and this worker).
    async fn look_up(&self, target: Target<'_>, entry: Entry) -> Record {
        let seed = (entry.place as u64) << 8 | self.id as u64;
        self.crew.lookup.look_up(target, seed).await
    }

    /// Writes a record; false when the writer is gone (the run halts for it).
    async fn write(&self, record: Record) -> bool {
        bump(&self.crew.counters.done);
        self.crew.tx.send(Out::One(record)).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_and_permits_follow_the_concurrency_the_rate_and_the_list() {
        let auto = Concurrency::Auto { max: 256 };
        // 10/s at a guessed 0.5 s: 6 in flight at first, up to 256 workers.
        assert_eq!(sizes(auto, Some(10.0), 10_000), (256, 6));
        // Unlimited: all of them at once.
        assert_eq!(sizes(auto, None, 10_000), (256, 256));
        // Never more than the list, never none.
        assert_eq!(sizes(Concurrency::Fixed(64), None, 3), (3, 3));
        assert_eq!(sizes(Concurrency::Fixed(0), None, 0), (1, 1));
    }
}
