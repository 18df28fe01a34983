//! How a command ends, as exit codes: the one mapping (documented in docs/exit-codes.md).
//!
//! A run's [`Outcome`] maps to its code in [`exit_code`]; everything that stops a command
//! before or outside a run is a [`Failure`], whose code is [`Failure::code`]. A closed stdout
//! (`vtbulk ... | head -1`) is handled here and only here: every command that writes to stdout
//! turns an `EPIPE` into [`Failure::BrokenPipe`], which exits 141 (128 + SIGPIPE, what a tool
//! ended by SIGPIPE reports) without a message: the reader chose to stop reading.

use std::io;

use vtbulk_engine::{EngineError, Outcome};

/// Exit codes, in one place.
pub mod codes {
    /// Every input has a final record, none an error.
    pub const OK: u8 = 0;
    /// Every input has a final record, some are errors.
    pub const COMPLETED_WITH_ERRORS: u8 = 1;
    /// Usage, configuration, or an input or output that cannot be opened or written (nothing
    /// looked up; but an output that fails mid-run, a full disk, comes after lookups: they
    /// are in the cache).
    pub const USAGE: u8 = 2;
    /// The cache file is foreign, damaged or unreadable: a configuration problem too.
    pub const CACHE: u8 = USAGE;
    /// VirusTotal refused the key (401/403).
    pub const AUTH: u8 = 3;
    /// A quota budget ran out (or 429s would not stop): the rest is `skipped`.
    pub const QUOTA: u8 = 4;
    /// A record matched `--fail-on` (and the run completed).
    pub const FINDINGS: u8 = 5;
    /// VirusTotal could not be reached (connections failed in a row): the rest is `skipped`.
    pub const UNREACHABLE: u8 = 6;
    /// The fleet's coordinator (Redis) was lost mid-run for longer than `--coordinator-grace`:
    /// no request left while it was gone; the rest is `skipped`.
    pub const COORDINATOR_LOST: u8 = 7;
    /// Every input has a final record, but the cache could not keep some answers (a full
    /// disk, a file that is not writable): a later run will look them up again.
    pub const CACHE_WRITE: u8 = 8;
    /// Interrupted (SIGINT/SIGTERM) after writing what was fetched.
    pub const INTERRUPTED: u8 = 130;
    /// The output was closed before the end (a pipe's reader went away): 128 + SIGPIPE.
    pub const BROKEN_PIPE: u8 = 141;
}

/// The exit code of a run's outcome.
pub fn exit_code(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Completed => codes::OK,
        Outcome::CompletedWithErrors => codes::COMPLETED_WITH_ERRORS,
        Outcome::AuthFailed => codes::AUTH,
        Outcome::QuotaExhausted => codes::QUOTA,
        Outcome::Unreachable => codes::UNREACHABLE,
        Outcome::Interrupted => codes::INTERRUPTED,
        Outcome::OutputClosed => codes::BROKEN_PIPE,
        Outcome::CoordinatorLost => codes::COORDINATOR_LOST,
    }
}

/// The exit code of a run: its outcome's, or when the run completed, [`codes::FINDINGS`] if
/// records matched `--fail-on`, else [`codes::CACHE_WRITE`] if the cache failed to keep
/// answers (a stop for the key, the quota, an outage, a signal or a closed output says more,
/// and wins; findings are what the job is for, and win over the cache's trouble).
pub fn run_exit_code(outcome: Outcome, findings: u64, cache_failures: u64) -> u8 {
    match outcome {
        Outcome::Completed | Outcome::CompletedWithErrors if findings > 0 => codes::FINDINGS,
        Outcome::Completed | Outcome::CompletedWithErrors if cache_failures > 0 => {
            codes::CACHE_WRITE
        }
        _ => exit_code(outcome),
    }
}

/// The exit code when an output (the summary, the metrics file, the report) could not be
/// written at the end: a run that completed exits [`codes::USAGE`] (its records stay); a stop
/// keeps its own code, which says more.
pub fn after_output_failure(code: u8) -> u8 {
    match code {
        codes::OK | codes::COMPLETED_WITH_ERRORS | codes::FINDINGS | codes::CACHE_WRITE => {
            codes::USAGE
        }
        stop => stop,
    }
}

/// Why a command stopped without its result.
#[derive(Debug)]
pub enum Failure {
    /// Bad flags, configuration, key, input or output: a message for stderr.
    Usage(String),
    /// The cache cannot be used.
    Cache(String),
    /// VirusTotal refused the key.
    Refused(String),
    /// stdout was closed by its reader.
    BrokenPipe,
    /// SIGINT or SIGTERM before the run began (while the key's command ran).
    Interrupted(String),
}

impl Failure {
    /// The exit code.
    pub fn code(&self) -> u8 {
        match self {
            Failure::Usage(_) => codes::USAGE,
            Failure::Cache(_) => codes::CACHE,
            Failure::Refused(_) => codes::AUTH,
            Failure::BrokenPipe => codes::BROKEN_PIPE,
            Failure::Interrupted(_) => codes::INTERRUPTED,
        }
    }

    /// What to print on stderr (`None`: nothing, for a closed pipe).
    pub fn message(&self) -> Option<&str> {
        match self {
            Failure::Usage(m)
            | Failure::Cache(m)
            | Failure::Refused(m)
            | Failure::Interrupted(m) => Some(m),
            Failure::BrokenPipe => None,
        }
    }

    /// A failed write to stdout or to the output file.
    pub fn write(e: io::Error, what: &str) -> Failure {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Failure::BrokenPipe
        } else {
            Failure::Usage(format!("failed to write {what}: {e}"))
        }
    }
}

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Failure {
        match e {
            EngineError::Output(e) => Failure::write(e, "the output"),
            EngineError::Store(e) => Failure::Cache(e.to_string()),
            e @ EngineError::Refused(_) => Failure::Refused(e.to_string()),
            e @ EngineError::Input { .. } => Failure::Usage(e.to_string()),
            // Nothing was read or spent: a setup problem, like a bad cache file.
            e @ EngineError::Coordinator(_) => Failure::Cache(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guide_documents_every_exit_code_and_no_other() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/exit-codes.md");
        let guide = std::fs::read_to_string(path).expect("docs/exit-codes.md");
        let documented: std::collections::BTreeSet<u8> = guide
            .lines()
            .filter_map(|l| l.strip_prefix("| ")?.split(' ').next()?.parse().ok())
            .collect();
        let codes = [
            codes::OK,
            codes::COMPLETED_WITH_ERRORS,
            codes::USAGE,
            codes::CACHE,
            codes::AUTH,
            codes::QUOTA,
            codes::FINDINGS,
            codes::UNREACHABLE,
            codes::COORDINATOR_LOST,
            codes::CACHE_WRITE,
            codes::INTERRUPTED,
            codes::BROKEN_PIPE,
        ];
        assert_eq!(documented, codes.into_iter().collect());
    }

    #[test]
    fn every_outcome_and_failure_has_a_distinct_exit_code() {
        let outcomes = [
            Outcome::Completed,
            Outcome::CompletedWithErrors,
            Outcome::AuthFailed,
            Outcome::QuotaExhausted,
            Outcome::Unreachable,
            Outcome::Interrupted,
            Outcome::OutputClosed,
            Outcome::CoordinatorLost,
        ];
        let mut seen: Vec<u8> = outcomes.iter().map(|&o| exit_code(o)).collect();
        seen.push(Failure::Usage(String::new()).code());
        seen.push(codes::FINDINGS);
        seen.push(codes::CACHE_WRITE);
        let n = seen.len();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), n, "{seen:?}");
        assert_eq!(exit_code(Outcome::Interrupted), 130);
        assert_eq!(exit_code(Outcome::OutputClosed), 141);
        assert_eq!(Failure::BrokenPipe.code(), exit_code(Outcome::OutputClosed));
        assert_eq!(
            Failure::Refused(String::new()).code(),
            exit_code(Outcome::AuthFailed)
        );
    }

    #[test]
    fn findings_exit_5_only_when_the_run_completed() {
        assert_eq!(run_exit_code(Outcome::Completed, 1, 0), 5);
        assert_eq!(run_exit_code(Outcome::CompletedWithErrors, 3, 0), 5);
        assert_eq!(run_exit_code(Outcome::Completed, 0, 0), 0);
        assert_eq!(run_exit_code(Outcome::CompletedWithErrors, 0, 0), 1);
        for stop in [
            Outcome::AuthFailed,
            Outcome::QuotaExhausted,
            Outcome::Unreachable,
            Outcome::Interrupted,
            Outcome::OutputClosed,
            Outcome::CoordinatorLost,
        ] {
            assert_eq!(run_exit_code(stop, 7, 7), exit_code(stop), "{stop:?}");
            assert_eq!(after_output_failure(exit_code(stop)), exit_code(stop));
        }
    }

    #[test]
    fn cache_failures_exit_8_when_the_run_completed_and_findings_win() {
        assert_eq!(run_exit_code(Outcome::Completed, 0, 2), codes::CACHE_WRITE);
        assert_eq!(run_exit_code(Outcome::CompletedWithErrors, 0, 1), 8);
        assert_eq!(run_exit_code(Outcome::Completed, 1, 2), codes::FINDINGS);
        assert_eq!(run_exit_code(Outcome::QuotaExhausted, 0, 2), codes::QUOTA);
    }

    #[test]
    fn an_output_lost_at_the_end_turns_a_completed_run_into_exit_2() {
        for code in [0, 1, 5, 8] {
            assert_eq!(after_output_failure(code), codes::USAGE, "{code}");
        }
    }

    #[test]
    fn a_closed_pipe_is_quiet_and_any_other_write_error_is_a_usage_failure() {
        let pipe = Failure::write(io::Error::from(io::ErrorKind::BrokenPipe), "stdout");
        assert!(matches!(pipe, Failure::BrokenPipe));
        assert_eq!(pipe.message(), None);
        let full = Failure::write(io::Error::other("no space left on device"), "out.csv");
        assert_eq!(full.code(), codes::USAGE);
        assert_eq!(
            full.message(),
            Some("failed to write out.csv: no space left on device")
        );
        let engine = Failure::from(EngineError::Output(io::Error::from(
            io::ErrorKind::BrokenPipe,
        )));
        assert!(matches!(engine, Failure::BrokenPipe));
    }
}
