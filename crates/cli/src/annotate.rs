//! `enrich --annotate`: the glue of the two passes around the engine's run.
//!
//! Before the run: stdin is spooled to a temporary file (gzip, level 1, unless it came
//! compressed), since the second pass reads every input again; each input is checked to be
//! rows `--annotate` can write back (CSV/TSV, a plain list, NDJSON), so a free-text input is
//! refused before any quota is spent. The run writes its records as NDJSON to a spool of its
//! own; after it, [`Annotation::second_pass`] loads them into the join table and writes the
//! annotated rows to the real output.

use std::io::{self, BufRead, Write};

use vtbulk_cli::config::Resolved;
use vtbulk_engine::annotate::{AnnotateReport, AnnotateSpec, Annotator, JoinTable};
use vtbulk_ioc::ReadOptions;
use vtbulk_ioc::reader;
use vtbulk_output::Format;
use vtbulk_output::behind::{BehindError, write_behind};

use crate::args::EnrichArgs;
use crate::failure::Failure;

/// An `--annotate` run's two passes: what they join, and the spools between them.
#[derive(Debug)]
pub struct Annotation {
    spec: AnnotateSpec,
    options: ReadOptions,
    /// stdin, read once and read again (removed when done).
    _stdin: Option<tempfile::TempPath>,
    /// The run's records, as NDJSON.
    records: tempfile::NamedTempFile,
}

impl Annotation {
    /// Checks that the run can be annotated (before anything is spent), spools stdin, and
    /// sets the run to write the records the join needs as NDJSON.
    pub fn prepare(args: &EnrichArgs, resolved: &mut Resolved) -> Result<Annotation, Failure> {
        let usage = |text: &str| Err(Failure::Usage(text.to_owned()));
        let common = &args.common;
        if common.settings.format.is_some()
            || common.schema.is_some()
            || common.settings.raw.is_some()
        {
            return usage(
                "--annotate writes the input's own rows: it takes no --format, --schema or --raw",
            );
        }
        let settings = &mut resolved.settings;
        if settings.only_new {
            return usage(
                "--annotate writes every row back; --only-new leaves out the hashes the cache \
                 knew: use one or the other",
            );
        }
        if settings.kinds.is_some_and(vtbulk_ioc::Kinds::any_indicator) {
            return usage(
                "--annotate joins rows by their file hashes; it cannot annotate URLs, domains or \
                 IPs yet: drop --kinds (or use --kinds file)",
            );
        }
        let fields = match &common.settings.fields {
            Some(list) => {
                vtbulk_output::parse_fields(list).map_err(|e| Failure::Usage(e.to_string()))?
            }
            None => AnnotateSpec::DEFAULT_FIELDS.to_vec(),
        };
        let spec = AnnotateSpec {
            fields,
            prefix: args.prefix.clone(),
        };
        let mut stdin = None;
        if settings.inputs.iter().any(|i| i == "-") {
            let path = spool_stdin()?;
            let shown = path.to_string_lossy().into_owned();
            for input in settings.inputs.iter_mut().filter(|i| *i == "-") {
                input.clone_from(&shown);
            }
            stdin = Some(path);
        }
        let options = settings.read_options();
        check_inputs(&settings.inputs, &options)?;
        settings.format = Format::Ndjson;
        settings.fields = spec.record_fields();
        let records = tempfile::Builder::new()
            .prefix("vtbulk-records-")
            .tempfile()
            .map_err(|e| Failure::Usage(format!("failed to create the records spool: {e}")))?;
        Ok(Annotation {
            spec,
            options,
            _stdin: stdin,
            records,
        })
    }

    /// Where the run writes its records.
    pub fn records_writer(&self) -> Result<Box<dyn Write + Send>, Failure> {
        let file = self
            .records
            .reopen()
            .map_err(|e| Failure::Usage(format!("failed to open the records spool: {e}")))?;
        Ok(Box::new(io::BufWriter::with_capacity(256 * 1024, file)))
    }

    /// The second pass: every input's rows, annotated, into `out`.
    pub fn second_pass(
        self,
        inputs: &[String],
        out: &mut (dyn Write + Send),
    ) -> Result<AnnotateReport, Failure> {
        second_pass(self.records.path(), inputs, &self.options, &self.spec, out)
    }
}

/// Copies stdin to a temporary file (compressed unless it is already) for both passes.
fn spool_stdin() -> Result<tempfile::TempPath, Failure> {
    let fail = |e: io::Error| Failure::Usage(format!("failed to spool stdin: {e}"));
    let mut stdin = io::stdin().lock();
    let head = stdin.fill_buf().map_err(fail)?.to_vec();
    let file = tempfile::Builder::new()
        .prefix("vtbulk-stdin-")
        .tempfile()
        .map_err(fail)?;
    let (file, path) = file.into_parts();
    let mut out = io::BufWriter::with_capacity(256 * 1024, file);
    if reader::compressed(&head) {
        io::copy(&mut stdin, &mut out).map_err(fail)?;
        out.flush().map_err(fail)?;
    } else {
        let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
        io::copy(&mut stdin, &mut gz).map_err(fail)?;
        gz.finish().map_err(fail)?.flush().map_err(fail)?;
    }
    Ok(path)
}

/// Refuses, before the run, an input `--annotate` cannot write back.
fn check_inputs(inputs: &[String], options: &ReadOptions) -> Result<(), Failure> {
    for input in inputs {
        let opened = reader::open(input)
            .map_err(|e| Failure::Usage(format!("failed to open {input}: {e}")))?;
        opened
            .for_each_part(&mut |part| reader::read_rows(part, options, &mut |_| Ok(())))
            .map_err(|e| Failure::Usage(format!("--annotate: {e}")))?;
    }
    Ok(())
}

/// The second pass: the records spooled by the run into the join table, then every input's
/// rows annotated into `out`.
fn second_pass(
    records: &std::path::Path,
    inputs: &[String],
    options: &ReadOptions,
    spec: &AnnotateSpec,
    out: &mut (dyn Write + Send),
) -> Result<AnnotateReport, Failure> {
    let started = std::time::Instant::now();
    let file = std::fs::File::open(records)
        .map_err(|e| Failure::Usage(format!("failed to read the records spool: {e}")))?;
    let mut spool = io::BufReader::with_capacity(256 * 1024, file);
    let table = JoinTable::load(&mut spool, &spec.fields)
        .map_err(|e| Failure::Usage(format!("failed to read the records spool: {e}")))?;
    let mut annotator = Annotator::default();
    annotator.report.load_ms = started.elapsed().as_millis() as u64;
    // The rows are put together here and copied to the output by a thread of its own.
    let mut failed_input = String::new();
    write_behind(out, |out| {
        for input in inputs {
            failed_input.clone_from(input);
            let opened = reader::open(input)?;
            opened.for_each_part(&mut |part| {
                reader::read_rows(part, options, &mut |rows| {
                    annotator.write(rows, &table, spec, out)
                })
            })?;
        }
        Ok(())
    })
    .map_err(|e| match e {
        BehindError::Output(e) => Failure::write(e, "the output"),
        BehindError::Body(e) => Failure::Usage(format!("--annotate: {failed_input}: {e}")),
    })?;
    annotator.report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(annotator.report)
}
