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
use crate::failure::{Failure, run_exit_code};
use crate::load::{eprint, load_with_client, runtime};
use crate::output_file::OutputFile;
use crate::{annotate, html_report, metrics, progress};

/// Runs `vtbulk enrich`; the exit code.
pub fn enrich(args: EnrichArgs) -> Result<u8, Failure> {
    check_stdin(&args)?;
    let (mut resolved, client) = load_with_client(&args.common, args.inputs.clone())?;
    check_report(&args, &resolved)?;
    if resolved.settings.submit_urls.is_some() && resolved.tier.0 == "public" {
        eprint(
            "warning: --submit-unknown-urls on a public key: VirusTotal shares what is \
             submitted with its community, and each submission and poll spends the key's quota",
        );
    }
    let annotation = match args.annotate {
        true => Some(annotate::Annotation::prepare(&args, &mut resolved)?),
        false => None,
    };
    let (out, file) = OutputFile::create(args.output.as_deref())?;
    // With --annotate the run writes its records to the spool; `out` waits for the rows.
    let (run_out, rows_out) = match &annotation {
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
    let code = run_exit_code(outcome, summary.fail_on_matches);
    summary.exit_code = i32::from(code);
    if let Some(path) = &resolved.metrics_file {
        write_metrics(path, &summary);
    }
    file.commit()?;
    report(&args, &summary);
    if let (Some(page), Some(output)) = (&args.report, &args.output) {
        let records = html_report::read(output, report_format == Format::Csv)?;
        let summary = serde_json::to_value(&summary).ok();
        let title = format!("vtbulk report: {}", output.display());
        html_report::write(page, &records.render(&title, summary.as_ref()))?;
    }
    Ok(code)
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

/// The run's figures in Prometheus's text format (a failure is said, not fatal: the run's
/// output is what matters).
fn write_metrics(path: &Path, summary: &Summary) {
    let now = jiff::Timestamp::now().as_second();
    let text = metrics::render(summary, now, metrics::previous_success(path));
    if let Err(e) = metrics::write_atomically(path, &text) {
        eprint(&format!(
            "failed to write the metrics file {}: {e}",
            path.display()
        ));
    }
}

/// The summary on stderr (the table, or with `-q` only why the run stopped), and as JSON.
fn report(args: &EnrichArgs, summary: &Summary) {
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
    if let Some(path) = &args.summary_json {
        let json = serde_json::to_string_pretty(summary).unwrap_or_default();
        if let Err(e) = std::fs::write(path, json + "\n") {
            eprint(&format!("failed to write {}: {e}", path.display()));
        }
    }
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
