//! Reads one file as free text with every kind, as `vtbulk plan` does (dedup included), and
//! prints what it found and how long it took: the text reader alone, for profiling with
//! `perf` without building the whole binary.
//!
//!     cargo run --release -p vtbulk-ioc --example read_text -- FILE [file|all] [dump]
//!
//! With `dump`, every item is written to stdout (kind, value, line) instead, to compare two
//! builds' findings on the same file.

use std::io::{BufReader, Write};
use std::time::Instant;

use vtbulk_ioc::reader::{InputFormat, ReadOptions, read_plain};
use vtbulk_ioc::{Item, Kinds, Names, Seen};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: read_text FILE [file|all]");
    let kinds = match args.next().as_deref() {
        Some("file") => Kinds::FILES,
        _ => Kinds::ALL,
    };
    let options = ReadOptions {
        kinds: Some(kinds),
        ..ReadOptions::default()
    };
    let dump = args.next().as_deref() == Some("dump");
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let started = Instant::now();
    let mut input = BufReader::with_capacity(256 << 10, std::fs::File::open(&path)?);
    let (mut seen, mut names) = (Seen::new(), Names::new());
    let mut batch = Vec::with_capacity(256);
    let report = read_plain(
        &mut input,
        0,
        InputFormat::Text,
        &options,
        &mut |item| match item {
            item if dump => {
                let _ = match item {
                    Item::Hash(h, o) => writeln!(out, "hash {h} {}", o.line),
                    Item::Indicator(i, o) => {
                        writeln!(out, "{} {} {}", i.kind(), i.canonical(), o.line)
                    }
                    Item::Invalid { origin, reason, .. } => {
                        writeln!(out, "invalid {reason} {}", origin.line)
                    }
                };
            }
            Item::Hash(h, origin) => {
                batch.push((h, origin));
                if batch.len() == 256 {
                    seen.insert_batch(&batch);
                    batch.clear();
                }
            }
            Item::Indicator(found, origin) => {
                names.insert(found, origin);
            }
            _ => {}
        },
    )?;
    seen.insert_batch(&batch);
    let secs = started.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&path)?.len() as f64;
    if dump {
        return out.flush();
    }
    drop(out);
    writeln!(
        std::io::stdout(),
        "{:.3} s, {:.0} MB/s: hashes {} indicators {} unique {} + {} excluded {:?}",
        secs,
        bytes / secs / (1 << 20) as f64,
        report.hashes,
        report.indicators,
        seen.len(),
        names.len(),
        report.excluded_by_reason
    )?;
    Ok(())
}
