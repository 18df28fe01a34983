//! The one writer: a task on the runtime that owns the sink, fed by a bounded channel.
//!
//! A task, not a thread: the sink writes into a large buffer, and a thread would cost a futex
//! wake-up per record. What was written is flushed at least every tenth of a second, so a slow
//! or long run's records reach a pipe (a SIEM, `tail -f`) promptly, and a killed run's output
//! holds nearly everything it had committed. When a write fails (the reader of a pipe went
//! away, a disk filled) the writer stops the run at once: no more lookups are paid for output
//! that cannot be written.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use vtbulk_output::{FailOn, Record, Sink};

use crate::counters::{Counters, bump};
use crate::decide::HaltCause;
use crate::run::Halt;

/// Messages waiting for the writer, at most: with [`MANY`] records a batch, at most
/// `QUEUE * MANY` records (a fully cached run's hits come faster than they are written, and
/// an unbounded queue held them all: 450 MB for 400 k records).
const QUEUE: usize = 1024;

/// Records per batch message at most ([`send_batch`]).
const MANY: usize = 16;

/// What the writer is sent: one record, or a batch of them (the cache check's hits, one
/// message per store batch instead of a hand-over and a wake-up per record).
#[expect(
    clippy::large_enum_variant,
    reason = "records went through the channel by value before; boxing would cost an allocation per lookup"
)]
pub(crate) enum Out {
    One(Record),
    Many(Vec<Record>),
}

/// Sends `records` from a blocking thread in batches of at most [`MANY`], so the queue's
/// bound holds in records. Stops early when the writer is gone (a write error, reported by
/// the run).
pub(crate) fn send_batch(tx: &mpsc::Sender<Out>, records: Vec<Record>) {
    let mut records = records.into_iter().peekable();
    while records.peek().is_some() {
        let part: Vec<Record> = records.by_ref().take(MANY).collect();
        if tx.blocking_send(Out::Many(part)).is_err() {
            return;
        }
    }
}

/// Starts the writer: records sent to the returned channel are written in order (and those
/// matching `fail_on` counted); the handle gives the first write error, if any.
pub(crate) fn spawn(
    mut sink: Box<dyn Sink + Send>,
    halt: Arc<Halt>,
    fail_on: Option<FailOn>,
    counters: Arc<Counters>,
) -> (
    mpsc::Sender<Out>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let (tx, mut rx) = mpsc::channel::<Out>(QUEUE);
    let task = tokio::spawn(async move {
        let check = |record: &Record| {
            if fail_on.as_ref().is_some_and(|f| f.matches(record)) {
                bump(&counters.fail_on_matches);
            }
            if record.cut > 0 {
                counters
                    .fields_cut
                    .fetch_add(u64::from(record.cut), std::sync::atomic::Ordering::Relaxed);
            }
        };
        let written = async {
            let mut dirty = false;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    out = rx.recv() => match out {
                        Some(Out::One(record)) => {
                            check(&record);
                            sink.write(&record)?;
                            dirty = true;
                        }
                        Some(Out::Many(records)) => {
                            for record in &records {
                                check(record);
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
        }
        .await;
        if written.is_err() {
            halt.set(HaltCause::OutputClosed);
        }
        written
    });
    (tx, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_goes_in_order_in_messages_of_at_most_many_records() {
        let (tx, mut rx) = mpsc::channel::<Out>(QUEUE);
        let records: Vec<Record> = (0..100)
            .map(|i| Record {
                input: format!("item-{i}"),
                ..Record::default()
            })
            .collect();
        send_batch(&tx, records);
        drop(tx);
        let mut got = Vec::new();
        while let Ok(out) = rx.try_recv() {
            let Out::Many(part) = out else {
                panic!("a single record sent")
            };
            assert!(
                !part.is_empty() && part.len() <= MANY,
                "{} records",
                part.len()
            );
            got.extend(part.into_iter().map(|r| r.input));
        }
        let want: Vec<String> = (0..100).map(|i| format!("item-{i}")).collect();
        assert_eq!(got, want);
    }
}
