//! `--metrics-file`: the run's figures in Prometheus's text format, for node_exporter's
//! textfile collector (the nightly job's monitor alerts on `vtbulk_exit_code` and on the age of
//! `vtbulk_last_success_timestamp_seconds`).
//!
//! Written once, at the end of a run, whatever its outcome (a stop for the quota writes its
//! figures too), and atomically: to a temporary file in the same directory, then renamed over
//! the old one, so the collector never reads half a file. Every value is a gauge of this run.
//! The last success time is carried over from the previous file when this run did not
//! complete, so an alert on its age fires after a night of failures, not after the first.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::Path;

use vtbulk_engine::Summary;

/// A gauge of one count: its name, its help, the figure from the summary.
type Count = (&'static str, &'static str, fn(&Summary) -> u64);

/// The run's counts, one gauge each.
const COUNTS: &[Count] = &[
    ("lines_read", "Lines read from the inputs.", |s| {
        s.lines_read
    }),
    (
        "unique",
        "Unique IOCs in the inputs (hashes, URLs, domains, IPs).",
        |s| s.unique,
    ),
    ("lookups", "IOCs looked up to a final answer.", |s| {
        s.lookups
    }),
    (
        "cache_hits",
        "Records answered from the cache (no request spent).",
        |s| s.cache_hits,
    ),
    ("requests", "Requests sent (quota spent).", |s| s.requests),
    ("rate_limited", "429 answers.", |s| s.rate_limited),
    (
        "urls_submitted",
        "Unknown URLs submitted for scanning (--submit-unknown-urls).",
        |s| s.urls_submitted,
    ),
    ("fail_on_matches", "Records that matched --fail-on.", |s| {
        s.fail_on_matches
    }),
];

/// The metrics of `summary`, a run that ended at `now` (Unix seconds); `last_success` is the
/// previous success's time when this run did not complete.
pub fn render(summary: &Summary, now: i64, last_success: Option<i64>) -> String {
    let mut t = String::new();
    let mut gauge = |name: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(t, "# HELP vtbulk_{name} {help}");
        let _ = writeln!(t, "# TYPE vtbulk_{name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(t, "vtbulk_{name}{labels} {value}");
        }
    };
    let one = |v: f64| [(String::new(), v)];
    gauge(
        "records",
        "Records written by the last run, by status.",
        &records(summary),
    );
    for (name, help, figure) in COUNTS {
        gauge(name, help, &one(figure(summary) as f64));
    }
    let windows = quota_remaining(summary);
    if !windows.is_empty() {
        gauge(
            "quota_remaining",
            "Requests the key may still send in each calendar window, at the end of the run.",
            &windows,
        );
    }
    gauge(
        "duration_seconds",
        "Wall time of the last run.",
        &one((summary.elapsed_secs * 1000.0).round() / 1000.0),
    );
    gauge(
        "exit_code",
        "The last run's exit code (0 complete, 1 with errors, 5 findings, see docs/exit-codes.md).",
        &one(f64::from(summary.exit_code.max(0))),
    );
    gauge(
        "last_run_timestamp_seconds",
        "When the last run ended, Unix seconds.",
        &one(now as f64),
    );
    let success = if completed(summary.exit_code) {
        Some(now)
    } else {
        last_success
    };
    if let Some(at) = success {
        gauge(
            "last_success_timestamp_seconds",
            "When a run last completed (exit 0, 1 or 5), Unix seconds.",
            &one(at as f64),
        );
    }
    t
}

/// Records by status.
fn records(summary: &Summary) -> Vec<(String, f64)> {
    [
        ("ok", summary.ok),
        ("not_found", summary.not_found),
        ("invalid", summary.invalid),
        ("error", summary.errors),
        ("skipped", summary.skipped),
    ]
    .iter()
    .map(|(status, n)| (format!("{{status=\"{status}\"}}"), *n as f64))
    .collect()
}

/// What each calendar window has left, where it has a limit.
fn quota_remaining(summary: &Summary) -> Vec<(String, f64)> {
    let Some(quota) = &summary.quota else {
        return Vec::new();
    };
    quota
        .windows
        .iter()
        .filter_map(|w| {
            w.remaining
                .map(|left| (format!("{{window=\"{}\"}}", w.window.name()), left as f64))
        })
        .collect()
}

/// Exit codes of a run that went through its whole input.
fn completed(code: i32) -> bool {
    matches!(code, 0 | 1 | 5 | 8)
}

/// The last success time recorded in an earlier metrics file at `path`, if any.
pub fn previous_success(path: &Path) -> Option<i64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("vtbulk_last_success_timestamp_seconds "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as i64)
}

/// Writes `text` to `path` atomically (a temporary file beside it, then a rename; through a
/// symlink, beside its target). A path that exists and is not a regular file (a device, a
/// FIFO) is written in place: a rename would replace it.
pub fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let resolved = match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => {
            let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
            return f.write_all(text.as_bytes());
        }
        Ok(_) => std::fs::canonicalize(path)?,
        Err(_) => path.to_owned(),
    };
    let path = resolved.as_path();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    // The collector reads files as they are: keep the usual permissions of a metrics file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
