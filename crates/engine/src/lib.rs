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
mod cache;
mod claims;
mod convert;
mod counters;
pub mod decide;
mod fleet;
mod history;
mod keyquota;
mod lookup;
mod packed;
mod pipeline;
mod plan;
mod prepare;
mod probe;
mod writer;

pub use cache::{CacheSettings, stored_attributes};
pub use counters::{Counters, QuotaReport, StopReport, Summary};
pub use decide::HaltCause;
pub use fleet::{FleetView, fleet_view};
pub use history::{History, MonthOutlook, SpendRow};
pub use keyquota::{
    KeyQuota, QuotaSettings, QuotaSource, Refused, ledger_minute, ledger_usage, rfc3339,
};
pub use lookup::SubmitPolicy;
pub use pipeline::{
    Concurrency, EngineError, InputHook, KeyReload, Outcome, Settings, StopHandle, run,
};
pub use plan::{Plan, QuotaRow, QuotaView, plan, quota_view};
pub use probe::{ProbeReport, ProbeSettings, ProbeStep, probe, run_probe};
pub use vtbulk_quota::WallClock;
pub use vtbulk_store::Freshness;
