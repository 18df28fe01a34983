//! `enrich --annotate`: the glue of the two passes around the engine's run.
//!
//! Before the run: stdin is spooled to a temporary file (gzip, level 1, unless it came
//! compressed), since the second pass reads every input again; each input is checked to be
//! rows `--annotate` can write back (CSV/TSV, a plain list, NDJSON), so a free-text input is
//! refused before any quota is spent. The run writes its records as NDJSON to a spool of its
//! own; a thread loads them into the join table as soon as the run's writer lets go of the
//! spool (while the run finishes: the cache's import), and [`Annotation::second_pass`] writes
//! the annotated rows to the real output.

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
    /// The join table, loaded on a thread of its own as soon as the run's writer lets go of
    /// the spool (the run's own finish, the cache's import, goes on meanwhile).
    loading: Option<std::thread::JoinHandle<io::Result<Loaded>>>,
}

/// The join table and how long loading it took.
type Loaded = (JoinTable, std::time::Duration);

/// The records spool as the run writes it: when the run's writer drops it (all records
/// written and flushed), the loader thread is told.
struct SpoolWriter {
    out: io::BufWriter<std::fs::File>,
    done: Option<std::sync::mpsc::Sender<()>>,
}

impl Write for SpoolWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        // The writer flushed and reported any error already; this flush is a no-op then.
        let _ = self.out.flush();
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
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
            loading: None,
        })
    }

    /// Where the run writes its records; the join table is loaded from them on a thread of
    /// its own once the run's writer is done with them.
    pub fn records_writer(&mut self) -> Result<Box<dyn Write + Send>, Failure> {
        let file = self
            .records
            .reopen()
            .map_err(|e| Failure::Usage(format!("failed to open the records spool: {e}")))?;
        let (done, written) = std::sync::mpsc::channel();
        let path = self.records.path().to_owned();
        let fields = self.spec.fields.clone();
        let loader = std::thread::Builder::new()
            .name("vtbulk-join-load".into())
            .spawn(move || {
                // No word (the writer never let go): nothing to load.
                written.recv().map_err(io::Error::other)?;
                let started = std::time::Instant::now();
                let file = std::fs::File::open(path)?;
                let mut spool = io::BufReader::with_capacity(256 * 1024, file);
                let table = JoinTable::load(&mut spool, &fields)?;
                Ok((table, started.elapsed()))
            })
            .map_err(|e| Failure::Usage(format!("failed to start the join's loader: {e}")))?;
        self.loading = Some(loader);
        Ok(Box::new(SpoolWriter {
            out: io::BufWriter::with_capacity(256 * 1024, file),
            done: Some(done),
        }))
    }

    /// The second pass: every input's rows, annotated, into `out`.
    pub fn second_pass(
        mut self,
        inputs: &[String],
        out: &mut (dyn Write + Send),
    ) -> Result<AnnotateReport, Failure> {
        let started = std::time::Instant::now();
        let failed =
            |e: io::Error| Failure::Usage(format!("failed to read the records spool: {e}"));
        let (table, load) = match self.loading.take() {
            Some(loader) => loader
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the loader panicked")))
                .map_err(failed)?,
            None => return Err(failed(io::Error::other("the run wrote no records spool"))),
        };
        let mut annotator = Annotator::default();
        annotator.report.load_ms = load.as_millis() as u64;
        second_pass(
            &mut annotator,
            &table,
            inputs,
            &self.options,
            &self.spec,
            out,
        )?;
        annotator.report.elapsed_ms = started.elapsed().as_millis() as u64;
        Ok(annotator.report)
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

/// The second pass: every input's rows annotated from `table` into `out`.
fn second_pass(
    annotator: &mut Annotator,
    table: &JoinTable,
    inputs: &[String],
    options: &ReadOptions,
    spec: &AnnotateSpec,
    out: &mut (dyn Write + Send),
) -> Result<(), Failure> {
    // The rows are put together here and copied to the output by a thread of its own.
    let mut failed_input = String::new();
    write_behind(out, |out| {
        for input in inputs {
            failed_input.clone_from(input);
            let opened = reader::open(input)?;
            opened.for_each_part(&mut |part| {
                reader::read_rows(part, options, &mut |rows| {
                    annotator.write(rows, table, spec, out)
                })
            })?;
        }
        Ok(())
    })
    .map_err(|e| match e {
        BehindError::Output(e) => Failure::write(e, "the output"),
        BehindError::Body(e) => Failure::Usage(format!("--annotate: {failed_input}: {e}")),
    })
}
