//! `enrich --annotate`: the glue of the two passes around the engine's run.
//!
//! Before the run: stdin is spooled to a temporary file (gzip, level 1, unless it came
//! compressed), since the second pass reads every input again; each input is checked to be
//! rows `--annotate` can write back (CSV/TSV, a plain list, NDJSON), so a free-text input is
//! refused before any quota is spent. The run writes its records as NDJSON to a spool of its
//! own; after it, [`second_pass`] loads them into the join table and writes the annotated rows
//! to the real output.

use std::io::{self, BufRead, Write};

use vtbulk_engine::annotate::{AnnotateReport, AnnotateSpec, Annotator, JoinTable};
use vtbulk_ioc::ReadOptions;
use vtbulk_ioc::reader;

use crate::failure::Failure;

/// Copies stdin to a temporary file (compressed unless it is already) for both passes.
pub fn spool_stdin() -> Result<tempfile::TempPath, Failure> {
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
pub fn check_inputs(inputs: &[String], options: &ReadOptions) -> Result<(), Failure> {
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
pub fn second_pass(
    records: &std::path::Path,
    inputs: &[String],
    options: &ReadOptions,
    spec: &AnnotateSpec,
    out: &mut dyn Write,
) -> Result<AnnotateReport, Failure> {
    let started = std::time::Instant::now();
    let file = std::fs::File::open(records)
        .map_err(|e| Failure::Usage(format!("failed to read the records spool: {e}")))?;
    let mut spool = io::BufReader::with_capacity(256 * 1024, file);
    let table = JoinTable::load(&mut spool, &spec.fields)
        .map_err(|e| Failure::Usage(format!("failed to read the records spool: {e}")))?;
    let mut annotator = Annotator::default();
    annotator.report.load_ms = started.elapsed().as_millis() as u64;
    for input in inputs {
        let opened = reader::open(input)
            .map_err(|e| Failure::Usage(format!("failed to open {input} again: {e}")))?;
        opened
            .for_each_part(&mut |part| {
                reader::read_rows(part, options, &mut |rows| {
                    annotator.write(rows, &table, spec, out)
                })
            })
            .map_err(|e| match e.kind() {
                io::ErrorKind::BrokenPipe => Failure::BrokenPipe,
                _ => Failure::Usage(format!("--annotate: {input}: {e}")),
            })?;
    }
    out.flush().map_err(|e| Failure::write(e, "the output"))?;
    annotator.report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(annotator.report)
}
