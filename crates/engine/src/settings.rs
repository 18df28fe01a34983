//! Everything a run needs, typed and resolved: the engine never sees a raw string from the
//! command line, a file or the environment (the binary resolves them once).
//!
//! A leaf: it imports nothing of the engine, so every stage can take the part of the settings
//! it uses without importing the stage that runs it. [`Settings::default`] is the embedded
//! defaults as the engine sees them (the command line's tests check that they agree), for
//! tests and library users.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vtbulk_ioc::reader::{FieldPath, InputFormat};
use vtbulk_ioc::{Column, InputReport};
use vtbulk_output::{Field, Format};
use vtbulk_quota::{BackoffPolicy, SchedulerConfig, WallClock};
use vtbulk_store::Freshness;

/// How many lookups may be in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Concurrency {
    /// Enough for the rate at the observed latency (Little's law), within 1..=`max`.
    Auto {
        /// The ceiling.
        max: usize,
    },
    /// Exactly this many.
    Fixed(usize),
}

/// Everything the engine needs, typed and resolved (no raw strings from the command line).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Input paths; `-` is stdin.
    pub inputs: Vec<String>,
    /// How inputs are laid out.
    pub input_format: InputFormat,
    /// The CSV columns chosen (none: every column that holds hashes).
    pub columns: Vec<Column>,
    /// Take every hash-shaped token, whatever its context says (`--keep-all-hex`).
    pub keep_all_hex: bool,
    /// CSV: only the IOC columns, not the others as free text (`--columns-only`).
    pub columns_only: bool,
    /// JSON fields chosen (`--field`; none: every hash by the JSON reader's rules).
    pub json_fields: Vec<FieldPath>,
    /// The kinds of IOC taken (`--kinds`; `None`: each input format's default).
    pub kinds: Option<vtbulk_ioc::Kinds>,
    /// Submit URLs VirusTotal does not know and wait for their analysis
    /// (`--submit-unknown-urls`); `None`: an unknown URL is `not_found`.
    pub submit_urls: Option<SubmitPolicy>,
    /// Called as each input (or archive member) has been read, with what reading it did:
    /// the command line says on stderr when `auto` fell back to text or an input was damaged.
    pub on_input: Option<InputHook>,
    /// Records that make the run end with exit 5 (`--fail-on`), counted as they are written.
    pub fail_on: Option<vtbulk_output::FailOn>,
    /// Only hashes the cache had not seen before this run are looked up and written (the
    /// nightly delta); needs the cache.
    pub only_new: bool,
    /// Output format.
    pub format: Format,
    /// Output fields, in order.
    pub fields: Vec<Field>,
    /// Add VirusTotal's `data` object to NDJSON records.
    pub raw: bool,
    /// Rate, caps and margin.
    pub scheduler: SchedulerConfig,
    /// Lookups in flight.
    pub concurrency: Concurrency,
    /// Retries of retryable failures.
    pub backoff: BackoffPolicy,
    /// How long 429s may go on with no success in between before the run stops as if the
    /// quota were spent (exit 4): the key is shared, or its quota is lower than configured.
    pub max_rate_limited: Duration,
    /// The cache and journal; `None` is `--cache off` (and no spend ledger).
    pub cache: Option<CacheSettings>,
    /// How the key's budget is read, and what happens when it runs out.
    pub quota: QuotaSettings,
    /// A Redis URL (`--coordinator`): the processes that use this key share its pace and its
    /// budgets through it. `None`: this process paces itself alone.
    pub coordinator: Option<vtbulk_coord::Endpoint>,
    /// When the coordinator cannot be reached at the start: run alone at this share of the
    /// rate (`--coordinator-fallback local-share=F`) instead of stopping with exit 2.
    pub coordinator_fallback: Option<f64>,
    /// How long the coordinator may stay lost mid-run before the run stops
    /// (`Outcome::CoordinatorLost`); meanwhile no request leaves.
    pub coordinator_grace: Duration,
    /// Reads the key again from where it came (a file, a command): a 401 in a long run takes
    /// up a key rotated at its source instead of stopping. `None`: the key cannot change.
    pub key_reload: Option<KeyReload>,
}

impl Default for Settings {
    /// The embedded defaults (`config/default.toml`) as the engine sees them, reading stdin,
    /// with the cache off (a test or a library user names its own file).
    fn default() -> Settings {
        Settings {
            inputs: Vec::new(),
            input_format: InputFormat::Auto,
            columns: Vec::new(),
            keep_all_hex: false,
            columns_only: false,
            json_fields: Vec::new(),
            kinds: None,
            submit_urls: None,
            on_input: None,
            fail_on: None,
            only_new: false,
            format: Format::Csv,
            fields: Field::ALL.to_vec(),
            raw: false,
            scheduler: SchedulerConfig::default(),
            concurrency: Concurrency::Auto { max: 256 },
            backoff: BackoffPolicy::default(),
            max_rate_limited: Duration::from_secs(300),
            cache: None,
            quota: QuotaSettings::default(),
            coordinator: None,
            coordinator_fallback: None,
            coordinator_grace: Duration::from_secs(60),
            key_reload: None,
        }
    }
}

impl Settings {
    /// How the inputs are read (the run's reader and `--annotate`'s second pass agree).
    pub fn read_options(&self) -> vtbulk_ioc::ReadOptions {
        vtbulk_ioc::ReadOptions {
            format: self.input_format,
            columns: self.columns.clone(),
            keep_all_hex: self.keep_all_hex,
            fields: self.json_fields.clone(),
            kinds: self.kinds,
            columns_only: self.columns_only,
        }
    }

    /// The inputs as given (none: stdin).
    pub(crate) fn input_paths(&self) -> Vec<String> {
        if self.inputs.is_empty() {
            vec!["-".to_owned()]
        } else {
            self.inputs.clone()
        }
    }
}

/// How a run uses the cache.
#[derive(Clone, Debug)]
pub struct CacheSettings {
    /// The SQLite file.
    pub path: PathBuf,
    /// What counts as fresh.
    pub freshness: Freshness,
    /// Look everything up again (and update the store).
    pub refresh: bool,
    /// Answer from the cache without writing to it (`--cache-mode read-only`, or a cache
    /// this process may not write): no answer, claim or spend is kept, nothing is migrated
    /// or compacted; another process sharing it is not told what this one looks up.
    pub read_only: bool,
    /// The clock for freshness and fetch times.
    pub clock: WallClock,
}

/// How a run reads the key's budget and meets its end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuotaSettings {
    /// Do not ask VirusTotal (`--offline-quota`): the tier's profile minus the ledger.
    pub offline: bool,
    /// When a window runs out, sleep until it resets and carry on (`--wait-for-reset`)
    /// instead of stopping with the rest `skipped`.
    pub wait_for_reset: bool,
}

/// How unknown URLs are submitted (`--submit-unknown-urls`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubmitPolicy {
    /// The first poll of an analysis comes this long after the submission.
    pub first_poll: Duration,
    /// Polls back off by half again each time, up to this.
    pub max_poll: Duration,
    /// An analysis not completed this long after its submission gives an `error` record
    /// (`AnalysisPending`); the next run polls the same analysis again.
    pub wait: Duration,
}

impl Default for SubmitPolicy {
    fn default() -> Self {
        SubmitPolicy {
            first_poll: Duration::from_secs(15),
            max_poll: Duration::from_secs(60),
            wait: Duration::from_secs(600),
        }
    }
}

impl SubmitPolicy {
    /// The polls' backoff: `first_poll`, then half again each time, up to `max_poll`.
    pub fn polls(&self) -> BackoffPolicy {
        BackoffPolicy {
            base: self.first_poll,
            cap: self.max_poll,
            max_retries: 0,
            growth_percent: 150,
        }
    }

    /// The pause before poll number `polls` (0-based).
    pub fn pause(&self, polls: u32) -> Duration {
        self.polls().ceiling(polls)
    }

    /// The most requests one unknown URL can cost: the lookup, the submission, the polls
    /// that fit in `wait`, and the lookup after completion.
    pub fn max_requests(&self) -> u64 {
        let mut waited = Duration::ZERO;
        let polls = self
            .polls()
            .ceilings()
            .take(10_000)
            .take_while(|pause| {
                let more = waited < self.wait;
                waited += *pause;
                more
            })
            .count() as u64;
        3 + polls
    }
}

/// Reads the API key again from its source (errors name no key).
#[derive(Clone)]
pub struct KeyReload(pub Arc<dyn Fn() -> Result<vtbulk_vt::ApiKey, String> + Send + Sync>);

impl std::fmt::Debug for KeyReload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyReload")
    }
}

/// A callback for each input read (see [`Settings::on_input`]).
#[derive(Clone)]
pub struct InputHook(pub Arc<dyn Fn(&InputReport) + Send + Sync>);

impl std::fmt::Debug for InputHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InputHook")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_back_off_by_half_again_and_the_worst_case_counts_them() {
        let policy = SubmitPolicy::default();
        let pauses: Vec<u64> = (0..5).map(|n| policy.pause(n).as_millis() as u64).collect();
        assert_eq!(pauses, [15_000, 22_500, 33_750, 50_625, 60_000]);
        // 10 minutes: a poll is due while less than 600 s have gone, so 12 polls (the 12th
        // at 541.9 s, the next would come at 601.9 s).
        assert_eq!(policy.max_requests(), 3 + 12);
        let short = SubmitPolicy {
            wait: Duration::from_secs(15),
            ..policy
        };
        assert_eq!(short.max_requests(), 3 + 1);
    }
}
