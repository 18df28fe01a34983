//! The run, as the list of its stages ([`run`]): the fleet's coordinator, the writer,
//! `prepare` (open, read, dedup, check the cache), the key's budget, the journal, the
//! workers (each entry through the peers and `lookup`), the skipped tail, and the finish
//! (journal, ledger, summary).
//!
//! Exactly one record per unique IOC: each entry is taken by exactly one worker, a worker
//! always turns what it took into a record (or puts it back, and what was put back and never
//! taken again is in the tail), and entries nobody took when the run stops become `skipped`
//! with the halt's cause.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use vtbulk_coord::Coordinator;
use vtbulk_output::{CsvSink, EcsSink, Format, LookupSink, NdjsonSink, Sink};
use vtbulk_quota::{Scheduler, Window};
use vtbulk_store::RunRecord;
use vtbulk_vt::Client;

use crate::budget::Budget;
use crate::counters::{Counters, QuotaReport, StopReport, Summary, bump};
use crate::decide::{HaltCause, Policy};
use crate::entries::Work;
use crate::fleet::{Fleet, Membership};
use crate::journal::{ClaimSettings, Journal, JournalTx};
use crate::keyquota::{self, QuotaSource};
use crate::lookup::{Keeper, KeyBudget, Lookup, Sender, Submissions};
use crate::peers::Peers;
use crate::prepare::{Prepared, prepare};
use crate::run::{EngineError, Halt, Outcome, StopHandle, lock};
use crate::settings::Settings;
use crate::workers::{self, Crew};
use crate::writer::{self, Out};

/// Runs the whole pipeline, writing records to `out`. `counters` is shared with whoever
/// shows progress; `stop` ends the run early.
pub async fn run(
    mut settings: Settings,
    client: Client,
    out: Box<dyn Write + Send>,
    counters: Arc<Counters>,
    stop: StopHandle,
) -> Result<(Outcome, Summary), EngineError> {
    let started = std::time::Instant::now();
    // The fleet's coordinator first: unreachable, the run stops before anything is read or
    // spent.
    let (coord, coordinator_note) = connect(&mut settings, &client).await?;
    let halt = Arc::new(Halt::new(stop));
    let (tx, writer) = writer::spawn(
        make_sink(&settings, out),
        halt.clone(),
        settings.fail_on.clone(),
        counters.clone(),
    );
    let prepared = match prepare(&settings, &counters, Some(&tx)).await {
        Ok(prepared) => prepared,
        Err(e) => {
            drop(tx);
            let _ = writer.await;
            return Err(e);
        }
    };
    let Prepared {
        work,
        todo,
        mut store,
        pending,
    } = prepared;
    let clock = settings.cache.as_ref().map(|c| c.clock).unwrap_or_default();
    let figures = Arc::new(Mutex::new(RunRecord {
        started_at: clock.now(),
        unique_hashes: work.len() as u64,
        ..RunRecord::default()
    }));
    let nothing_to_do = todo.is_empty();
    let read = Budget::read(
        &settings,
        &client,
        store.as_mut(),
        nothing_to_do,
        coord.as_ref(),
        &halt,
    );
    let (budget, scheduler) = read.await;
    let claims = claim_settings(&settings, &figures);
    let key_id = client.key_fingerprint();
    // A read-only cache answered the check; nothing is journaled into it.
    let read_only = settings.cache.as_ref().is_some_and(|c| c.read_only);
    let journal = store
        .filter(|_| !read_only)
        .map(|store| Journal::start(store, clock, figures.clone(), key_id, claims))
        .transpose()
        .map_err(EngineError::Output)?;
    let stages = Stages::build(
        &settings,
        (client, scheduler),
        coord,
        &budget,
        Arc::new(work),
        pending,
        journal.as_ref().map(Journal::sender),
        &halt,
        &counters,
    );
    if let Some(e) = &budget.refused {
        // The key (or the server's certificate) was refused: no lookup can succeed.
        halt.set_because(HaltCause::Refused(e.kind()), e);
    }
    let background = stages.start_background().await;
    let crew = stages.crew(tx.clone());
    let left = workers::run(crew, todo, settings.concurrency, budget.rate).await;
    skip_rest(&stages, left.0, &tx).await;
    drop(tx);
    stages.peers.flush().await;
    stages.stop_background(background).await;
    // The writer first: every record is out (and the sink let go, which `--annotate`'s
    // loader waits for) while the journal's last import, which blocks, runs after it.
    let written = writer
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("the writer panicked")));
    finish_journal(&stages, journal, &figures);
    let outcome = outcome(written, &halt, &counters)?;
    let elapsed = started.elapsed().as_secs_f64();
    let summary = summarise(&stages, &budget, outcome, elapsed, coordinator_note);
    Ok((outcome, summary))
}

/// How the run ended: the writer's result, why it halted, what the records say.
fn outcome(
    written: std::io::Result<()>,
    halt: &Halt,
    counters: &Counters,
) -> Result<Outcome, EngineError> {
    Ok(match (written, halt.get()) {
        (Err(e), _) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(EngineError::Output(e));
        }
        (_, Some(cause)) => cause.into(),
        (Ok(()), None) if Counters::get(&counters.errors) > 0 || counters.any_input_damaged() => {
            Outcome::CompletedWithErrors
        }
        (_, None) => Outcome::Completed,
    })
}

/// The run's summary: the counters, the key's budget, the pacing, how the key was shared and
/// why the run stopped early, if it did.
fn summarise(
    stages: &Stages,
    budget: &Budget,
    outcome: Outcome,
    elapsed: f64,
    coordinator_note: Option<String>,
) -> Summary {
    let mut summary = stages.counters.summary(elapsed, outcome.as_str());
    summary.quota = Some(quota_report(stages, budget));
    summary.pacing = Some(stages.lookup.sender.scheduler.pacing_report());
    summary.coordinator = match (&stages.lookup.sender.fleet, coordinator_note) {
        (_, Some(note)) => Some(note),
        (Some(_), None) => Some("shared through Redis".into()),
        (None, None) => None,
    };
    summary.stopped = stages.halt.get().map(|cause| StopReport {
        cause: cause.name().into_owned(),
        detail: stages.halt.detail(),
    });
    summary
}

/// Connects to the fleet's coordinator, when there is one. Unreachable: the run stops (exit
/// 2), unless `--coordinator-fallback` says to run alone at a share of the rate, which is
/// then set in `settings` and said in the note.
async fn connect(
    settings: &mut Settings,
    client: &Client,
) -> Result<(Option<Coordinator>, Option<String>), EngineError> {
    let Some(url) = &settings.coordinator else {
        return Ok((None, None));
    };
    let fingerprint = client.key_fingerprint();
    let connected = Coordinator::connect(url, &fingerprint, Duration::from_secs(5)).await;
    match (connected, settings.coordinator_fallback) {
        (Ok(coord), _) => Ok((Some(coord), None)),
        (Err(e), Some(share)) => {
            // Alone, at a share of the rate: the others (if any) are presumed to do the same.
            let base = settings.scheduler.rate.or(settings.scheduler.caps.rate());
            settings.scheduler.rate = base.map(|r| vtbulk_quota::Rate {
                count: r.count,
                per: r.per.div_f64(share),
            });
            let note = format!(
                "{e}; running alone at {:.0}% of the rate (--coordinator-fallback)",
                share * 100.0
            );
            Ok((None, Some(note)))
        }
        (Err(e), None) => Err(e.into()),
    }
}

/// What counts as an answer at the check before a lookup (see `peers`).
fn claim_settings(settings: &Settings, figures: &Mutex<RunRecord>) -> ClaimSettings {
    let cache = settings.cache.as_ref();
    ClaimSettings {
        freshness: cache.map(|c| c.freshness).unwrap_or_default(),
        // A refreshing run takes what another process fetched since it started.
        since: cache
            .filter(|c| c.refresh)
            .map(|_| lock(figures).started_at),
        with_data: settings.raw,
    }
}

/// The tasks that run beside the workers.
struct Background {
    ledger: Option<tokio::task::JoinHandle<()>>,
    membership: Option<Membership>,
}

/// The stages after `prepare`, each with the part of the run it owns.
struct Stages {
    work: Arc<Work>,
    peers: Arc<Peers>,
    lookup: Arc<Lookup>,
    journal: Option<JournalTx>,
    halt: Arc<Halt>,
    counters: Arc<Counters>,
}

impl Stages {
    #[expect(
        clippy::too_many_arguments,
        reason = "the run's parts, each handed to the stage that owns it"
    )]
    fn build(
        settings: &Settings,
        (client, scheduler): (Client, Scheduler),
        coord: Option<Coordinator>,
        budget: &Budget,
        work: Arc<Work>,
        pending: std::collections::HashMap<String, String>,
        journal: Option<JournalTx>,
        halt: &Arc<Halt>,
        counters: &Arc<Counters>,
    ) -> Stages {
        let fleet = coord.map(|coord| {
            Fleet::new(
                coord,
                settings,
                budget.quota.as_ref(),
                budget.fleet_interval,
            )
        });
        let peers = Arc::new(Peers::new(
            journal.clone(),
            fleet.as_ref().map(|f| f.coord.clone()),
            work.clone(),
            counters.clone(),
            settings.raw,
            settings.only_new,
        ));
        let policy = Policy::new(
            settings.backoff,
            scheduler.interval(),
            settings.max_rate_limited,
            client.request_timeout(),
        );
        let lookup = Lookup::new(
            Sender::new(client, scheduler, policy, fleet),
            KeyBudget::new(
                settings.key_reload.clone(),
                budget.live(),
                settings.quota.wait_for_reset,
            ),
            Submissions::new(settings.submit_urls, pending),
            Keeper::new(journal.clone(), settings.raw, peers.clone()),
            work.clone(),
            halt.clone(),
            counters.clone(),
        );
        Stages {
            work,
            peers,
            lookup: Arc::new(lookup),
            journal,
            halt: halt.clone(),
            counters: counters.clone(),
        }
    }

    /// The tasks beside the workers: the ledger's writes (with a cache), the fleet's
    /// heartbeat (with a coordinator).
    async fn start_background(&self) -> Background {
        let ledger = self
            .journal
            .clone()
            .map(|j| spawn_ledger(j, self.lookup.clone()));
        let membership = match &self.lookup.sender.fleet {
            Some(fleet) => Some(Membership::join(fleet, self.counters.clone()).await),
            None => None,
        };
        Background { ledger, membership }
    }

    async fn stop_background(&self, background: Background) {
        if let Some(ledger) = background.ledger {
            ledger.abort();
        }
        if let (Some(membership), Some(fleet)) = (background.membership, &self.lookup.sender.fleet)
        {
            membership.leave(fleet).await;
        }
    }

    fn crew(&self, tx: mpsc::Sender<Out>) -> Crew {
        Crew {
            work: self.work.clone(),
            lookup: self.lookup.clone(),
            peers: self.peers.clone(),
            halt: self.halt.clone(),
            counters: self.counters.clone(),
            tx,
        }
    }
}

/// Entries nobody took (the run stopped before reaching them), and those put back and never
/// taken again: `skipped` with the halt's cause.
async fn skip_rest(stages: &Stages, left: Vec<u32>, tx: &mpsc::Sender<Out>) {
    // Workers only stop early when the run halts (or the writer is gone, which halts it).
    let cause = stages.halt.get().unwrap_or(HaltCause::OutputClosed);
    for index in left {
        let target = stages.work.target(index as usize);
        bump(&stages.counters.done);
        let record = stages.lookup.skipped(target, cause);
        if tx.send(Out::One(record)).await.is_err() {
            break;
        }
    }
}

/// What the scheduler charges goes to the ledger every second (and at the end).
fn spawn_ledger(journal: JournalTx, lookup: Arc<Lookup>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            journal.spend(lookup.sender.scheduler.drain_spend());
        }
    })
}

/// The journal's last commit, the ledger's last spend, and the run's figures for
/// `vtbulk cache stats`.
fn finish_journal(stages: &Stages, journal: Option<Journal>, figures: &Mutex<RunRecord>) {
    let Some(journal) = journal else { return };
    journal
        .sender()
        .spend(stages.lookup.sender.scheduler.drain_spend());
    {
        let mut figures = lock(figures);
        figures.hits = Counters::get(&stages.counters.cache_hits);
        figures.lookups = Counters::get(&stages.counters.requests);
    }
    if journal.finish().is_err() {
        bump(&stages.counters.cache_write_errors);
    }
}

/// The summary's quota part: the budget's source, each window now, and why the run stopped.
fn quota_report(stages: &Stages, budget: &Budget) -> QuotaReport {
    let skipped = lock(&stages.counters.skipped_by_reason).clone();
    let for_window = |w: Window| skipped.get(&HaltCause::Quota(w)).copied();
    let exhausted = Window::ALL.into_iter().find(|&w| for_window(w).is_some());
    let windows = stages.lookup.sender.scheduler.budgets();
    let quota = budget.quota.as_ref();
    QuotaReport {
        source: quota
            .map_or(QuotaSource::NotRead, |q| q.source)
            .as_str()
            .to_owned(),
        note: match &budget.refused {
            Some(e) => Some(format!(
                "GET /users refused the key: {} {}",
                e.code(),
                e.message()
            )),
            None => quota.and_then(|q| q.note.clone()),
        },
        rate: budget
            .rate
            .map_or_else(|| "unlimited".to_owned(), |r| r.to_string()),
        exhausted: exhausted.map(|w| w.name().to_owned()),
        resets_at: exhausted.map(|w| keyquota::rfc3339(windows[w as usize].resets_at)),
        items_left: Window::ALL.into_iter().filter_map(for_window).sum(),
        windows: windows.to_vec(),
        resyncs: Counters::get(&stages.counters.quota_resyncs),
    }
}

fn make_sink(settings: &Settings, out: Box<dyn Write + Send>) -> Box<dyn Sink + Send> {
    match settings.format {
        Format::Csv => Box::new(CsvSink::new(out, settings.fields.clone())),
        Format::Ndjson => Box::new(NdjsonSink::new(out, settings.fields.clone(), settings.raw)),
        Format::SplunkLookup => Box::new(LookupSink::new(out, settings.fields.clone())),
        Format::Ecs => Box::new(EcsSink::new(out)),
    }
}
