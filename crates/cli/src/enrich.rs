//! `vtbulk enrich`: check what can be checked before anything is spent, open the output, run
//! the engine with progress and signals, then (with `--annotate`) write the input's rows
//! joined with the records, and finish: the exit code, the metrics file, the output renamed
//! into place, the summary, the HTML report.

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

use vtbulk_cli::config::{Progress, Resolved};
use vtbulk_engine::{Counters, EngineError, Outcome, StopHandle, Summary};
use vtbulk_output::Format;
use vtbulk_vt::Client;

use crate::args::EnrichArgs;
use crate::destinations::{self, Destination};
use crate::failure::{self, Failure, run_exit_code};
use crate::load::{eprint, load_with_client, runtime};
use crate::output_file::OutputFile;
use crate::{annotate, html_report, metrics, progress};

/// Runs `vtbulk enrich`; the exit code.
pub fn enrich(args: EnrichArgs) -> Result<u8, Failure> {
    check_stdin(&args)?;
    let (mut resolved, client) = load_with_client(&args.common, args.inputs.clone())?;
    check_report(&args, &resolved)?;
    check_destinations(&args, &resolved)?;
    if resolved.settings.submit_urls.is_some() && resolved.tier.0 == "public" {
        eprint(
            "warning: --submit-unknown-urls on a public key: VirusTotal shares what is \
             submitted with its community, and each submission and poll spends the key's quota",
        );
    }
    let mut annotation = match args.annotate {
        true => Some(annotate::Annotation::prepare(&args, &mut resolved)?),
        false => None,
    };
    let (out, file) = OutputFile::create(args.output.as_deref())?;
    // With --annotate the run writes its records to the spool; `out` waits for the rows.
    let (run_out, rows_out) = match &mut annotation {
        Some(annotation) => (annotation.records_writer()?, Some(out)),
        None => (out, None),
    };
    let inputs = resolved.settings.inputs.clone();
    let report_format = resolved.settings.format;
    let runtime = runtime(resolved.threads)?;
    let settings = std::mem::take(&mut resolved.settings);
    let run = run(
        &args,
        &runtime,
        settings,
        resolved.progress,
        client,
        run_out,
    );
    let (outcome, mut summary) = match run {
        Ok(done) => done,
        Err(e) => {
            file.discard();
            return Err(e.into());
        }
    };
    if let (Some(annotation), Some(mut out)) = (annotation, rows_out) {
        match annotation.second_pass(&inputs, &mut out) {
            Ok(done) => summary.annotate = Some(done),
            Err(e) => {
                file.discard();
                return Err(e);
            }
        }
    }
    let code = run_exit_code(outcome, summary.fail_on_matches, summary.cache_write_errors);
    summary.exit_code = i32::from(code);
    let mut written = true;
    if let Some(path) = &resolved.metrics_file {
        written &= write_metrics(path, &summary);
    }
    file.commit()?;
    written &= report(&args, &summary);
    if let (Some(page), Some(output)) = (&args.report, &args.output) {
        let records = html_report::read(output, report_format == Format::Csv)?;
        let summary = serde_json::to_value(&summary).ok();
        let title = format!("vtbulk report: {}", output.display());
        written &= html_report::write(page, &records.render(&title, summary.as_ref()))
            .map_err(|e| e.message().map(eprint))
            .is_ok();
    }
    Ok(match written {
        true => code,
        false => failure::after_output_failure(code),
    })
}

/// Every place the run writes, checked before anything is read or spent (`destinations`).
fn check_destinations(args: &EnrichArgs, resolved: &Resolved) -> Result<(), Failure> {
    let named = [
        ("-o", args.output.as_deref()),
        ("--summary-json", args.summary_json.as_deref()),
        ("--report", args.report.as_deref()),
        ("--metrics-file", resolved.metrics_file.as_deref()),
    ];
    let destinations: Vec<Destination<'_>> = named
        .into_iter()
        .filter_map(|(flag, path)| Some(Destination { flag, path: path? }))
        .collect();
    destinations::check(&destinations, &resolved.settings.inputs)
}

/// A list on stdin that cannot be read: the key is on stdin too, or stdin is closed.
fn check_stdin(args: &EnrichArgs) -> Result<(), Failure> {
    let stdin_input = args.inputs.is_empty() || args.inputs.iter().any(|i| i == "-");
    if stdin_input && args.common.api_key_file.as_deref() == Some(Path::new("-")) {
        return Err(Failure::Usage(
            "the API key and the input cannot both come from stdin: give the input as a file"
                .into(),
        ));
    }
    if stdin_input && stdin_is_null() {
        // Closed (`<&-`: the runtime reopens it on /dev/null) or /dev/null itself: a run
        // would read nothing and say nothing.
        return Err(Failure::Usage(
            "stdin is closed (or /dev/null): there is no list to read; give it as a file, or \
             pipe it in"
                .into(),
        ));
    }
    Ok(())
}

/// `--report` reads the records back from the output file.
fn check_report(args: &EnrichArgs, resolved: &Resolved) -> Result<(), Failure> {
    let readable = matches!(resolved.settings.format, Format::Csv | Format::Ndjson);
    if args.report.is_some() && (args.output.is_none() || args.annotate || !readable) {
        return Err(Failure::Usage(
            "--report reads the records back from the output: it needs -o FILE in csv or \
             ndjson (not --annotate)"
                .into(),
        ));
    }
    Ok(())
}

/// Whether stdin is `/dev/null`: closed when the process started (Rust's runtime reopens a
/// closed standard descriptor on `/dev/null`), or given so.
fn stdin_is_null() -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata("/dev/stdin"),
        std::fs::metadata("/dev/null"),
    ) {
        (Ok(stdin), Ok(null)) => stdin.dev() == null.dev() && stdin.ino() == null.ino(),
        _ => false,
    }
}

/// Runs the engine on `runtime`, with the progress display and the signals that stop it.
fn run(
    args: &EnrichArgs,
    runtime: &tokio::runtime::Runtime,
    settings: vtbulk_engine::Settings,
    progress: Progress,
    client: Client,
    out: Box<dyn Write + Send>,
) -> Result<(Outcome, Summary), EngineError> {
    let counters = Arc::new(Counters::default());
    let stop = StopHandle::default();
    let show = match (args.quiet, progress) {
        (true, _) | (_, Progress::Never) => progress::Mode::Off,
        (false, Progress::Always) => progress::Mode::Bar,
        (false, Progress::Auto) => {
            progress::resolve(io::stderr().is_terminal(), std::env::var_os("CI").is_some())
        }
    };
    let interval = settings.scheduler.rate.map(|r| r.interval());
    runtime.block_on(async {
        let display = progress::spawn(show, counters.clone(), interval);
        let signals = tokio::spawn(watch_signals(stop.clone()));
        let result = vtbulk_engine::run(settings, client, out, counters.clone(), stop).await;
        signals.abort();
        display.finish().await;
        result
    })
}

/// The run's figures in Prometheus's text format; whether they were written (a failure is
/// said, and changes the exit code, but the records stay).
fn write_metrics(path: &Path, summary: &Summary) -> bool {
    let now = jiff::Timestamp::now().as_second();
    let text = metrics::render(summary, now, metrics::previous_success(path));
    let written = metrics::write_atomically(path, &text);
    if let Err(e) = &written {
        eprint(&format!(
            "failed to write the metrics file {}: {e}",
            path.display()
        ));
    }
    written.is_ok()
}

/// The summary on stderr (the table, or with `-q` only why the run stopped and the warnings
/// that change the exit code), and as JSON; whether the JSON was written (when asked for).
fn report(args: &EnrichArgs, summary: &Summary) -> bool {
    if !args.quiet {
        let _ = io::stderr().write_all(progress::table(summary).as_bytes());
    } else if let Some(q) = &summary.quota
        && let (Some(window), Some(at)) = (&q.exhausted, &q.resets_at)
    {
        // Quiet or not, a nightly job's log must say why it stopped and when to go on.
        eprint(&format!(
            "the {window} quota budget ran out: {} items skipped; it resets at {at}",
            q.items_left
        ));
    }
    // Quiet or not: one line that says what failed, for the stops that are an outage.
    if let Some(line) = summary
        .stopped
        .as_ref()
        .and_then(|s| stop_line(s, summary.skipped))
    {
        eprint(&line);
    }
    if summary.cache_write_errors > 0 {
        eprint(&format!(
            "warning: {} answers could not be kept in the cache (its disk is full, or the \
             file is not writable); their records are written, and a later run will look them \
             up again",
            summary.cache_write_errors
        ));
    }
    let Some(path) = &args.summary_json else {
        return true;
    };
    let json = serde_json::to_string_pretty(summary).unwrap_or_default();
    let written = metrics::write_atomically(path, &(json + "\n"));
    if let Err(e) = &written {
        eprint(&format!(
            "failed to write the summary {}: {e}; the records are complete",
            path.display()
        ));
    }
    written.is_ok()
}

/// The line that says why a run stopped, for the stops that are an outage or a refusal.
fn stop_line(stopped: &vtbulk_engine::StopReport, skipped: u64) -> Option<String> {
    use vtbulk_engine::HaltCause;
    let detail = |default: &'static str| stopped.detail.clone().unwrap_or(default.into());
    let refused = |kind| stopped.cause == HaltCause::Refused(kind).name();
    if refused(vtbulk_vt::ErrorKind::ProxyAuth) {
        return Some(format!(
            "stopped: {}; {skipped} items skipped; nothing was lost: run again with the proxy's \
             credentials",
            detail("the proxy wants credentials")
        ));
    }
    if refused(vtbulk_vt::ErrorKind::Certificate) {
        return Some(format!(
            "stopped: {}; {skipped} items skipped (no request goes over a connection whose \
             certificate is refused); nothing was lost: run again once it is trusted",
            detail("the API's TLS certificate was refused")
        ));
    }
    if stopped.cause.starts_with("stopped_") {
        // Any other refusal of the key (401 WrongCredentialsError, 403 ...).
        return Some(format!(
            "stopped: VirusTotal refused the key ({}); {skipped} items skipped; nothing was \
             lost: run again with a key it accepts",
            detail("refused")
        ));
    }
    if stopped.cause == HaltCause::RateLimited.name() {
        return Some(format!(
            "stopped: VirusTotal kept answering 429 with no success between ({}); {skipped} \
             items skipped; another client may share the key: run again later",
            detail("too many requests")
        ));
    }
    let (what, default, note, back) = if stopped.cause == HaltCause::Unreachable.name() {
        (
            "VirusTotal could not be reached",
            "connection failed",
            "",
            "the network",
        )
    } else if stopped.cause == HaltCause::CoordinatorLost.name() {
        (
            "the coordinator (Redis) was lost for longer than --coordinator-grace",
            "no answer",
            " no request left without its grant;",
            "Redis",
        )
    } else {
        return None;
    };
    Some(format!(
        "stopped: {what} ({});{note} {skipped} items skipped, nothing was lost: run again when \
         {back} is back",
        detail(default)
    ))
}

/// SIGINT or SIGTERM: in-flight lookups finish, the rest is recorded as skipped.
async fn watch_signals(stop: StopHandle) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprint("stopping: in-flight lookups finish, the rest is recorded as skipped");
            stop.stop();
            return;
        }
    }
    if tokio::signal::ctrl_c().await.is_ok() {
        stop.stop();
    }
}
