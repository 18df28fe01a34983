//! `vtbulk-quota`: sending as fast as the key's quota allows, and never faster.
//!
//! - [`Rate`] and [`Tier`]: what a key may spend (per minute, hour, day, month), from
//!   `config/tiers.toml` or `--rate`.
//! - [`Scheduler`]: the one gate every request passes, right before it is sent (retries too).
//!   Requests are spaced from their real departures ([`Grant`]: a request that leaves late
//!   pushes the next one back), beside a governor GCRA limiter with **burst 1**: VirusTotal
//!   counts "any 1 minute time frame", and only burst 1 keeps every sliding 60 s window at the
//!   quota (governor's default burst would let a 4/min key send 7 in the first minute). A
//!   small safety margin stretches the interval, and an adaptive one widens after a timing
//!   miss and decays back. Hour, day and month caps are counted here too (UTC calendar
//!   windows). Repeated 429s close one gate for every worker.
//! - [`Usage`], [`Reserve`], [`WallClock`]: the key's spend at the start of a run (read live
//!   or from the ledger), the share kept back for its other users, and the UTC time the
//!   windows are read with (tests make it follow tokio's paused clock across midnight).
//! - [`Backoff`]: capped exponential backoff with full jitter, as an iterator, so its schedule
//!   is tested by iterating, not by sleeping.
//!
//! Time is tokio's (`tokio::time::Instant`), so tests run the whole schedule under a paused
//! clock.
#![deny(missing_docs)]

mod backoff;
mod budget;
mod clock;
mod pace;
mod rate;
mod scheduler;
mod window;

pub use backoff::{Backoff, BackoffPolicy, unit};
pub use budget::{Reserve, Spend, Usage, effective_rate};
pub use clock::WallClock;
pub use pace::{
    ANSWER_PUSH_LIMIT, ANSWER_PUSH_MAX, Departure, Grant, Histogram, Lateness, MARGIN_MAX,
    MARGIN_STEP, MARGIN_STEP_MS, PacingReport,
};
pub use rate::{Rate, Tier, TierError, parse_tiers};
pub use scheduler::{Exhausted, Scheduler, SchedulerConfig, WindowBudget};
pub use window::{LedgerWindow, Window};
