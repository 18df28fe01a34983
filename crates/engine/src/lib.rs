//! `vtbulk-engine`: the enrichment pipeline, from inputs to records and a summary.
//!
//! ```text
//! inputs --read+dedup (blocking thread)--> unique entries --cache check (1-2 threads)-->
//!   fresh hits: records | the rest --workers (connection ready, scheduler grant, send;
//!   decide() on failure)--> answers --journal thread (commit)--> records
//!   --bounded channel--> one writer task (Sink)
//! counters --> summary
//! ```
//!
//! Reading and deduplication finish before the first lookup: an output record carries the
//! IOC's occurrence count, which is only known once the whole input is read (reading runs at
//! millions of lines a second, so this costs seconds on the largest inputs, against minutes
//! to days of lookups). Invalid values are written as they are found.
//!
//! Every unique IOC gets exactly one record: each entry is taken by exactly one worker (an
//! atomic cursor), a worker always produces a record for what it took, and entries nobody
//! took when the run stops become `skipped`.
#![deny(missing_docs)]

pub mod annotate;
mod budget;
mod cache;
mod convert;
mod counters;
pub mod decide;
mod entries;
mod fleet;
mod history;
mod journal;
mod keyquota;
mod lookup;
mod packed;
mod peers;
mod pipeline;
mod plan;
mod prepare;
mod probe;
mod run;
mod settings;
mod workers;
mod writer;

pub use cache::stored_attributes;
pub use counters::{Counters, QuotaReport, StopReport, Summary};
pub use decide::HaltCause;
pub use fleet::{FleetView, fleet_view};
pub use history::{History, MonthOutlook, SpendRow};
pub use keyquota::{KeyQuota, QuotaSource, Refused, ledger_minute, ledger_usage, rfc3339};
pub use pipeline::run;
pub use plan::{Plan, QuotaRow, QuotaView, plan, quota_view};
pub use probe::{ProbeReport, ProbeSettings, ProbeStep, probe, run_probe};
pub use run::{EngineError, Outcome, StopHandle};
pub use settings::{
    CacheSettings, Concurrency, InputHook, KeyReload, QuotaSettings, Settings, SubmitPolicy,
};
pub use vtbulk_quota::WallClock;
pub use vtbulk_store::Freshness;
