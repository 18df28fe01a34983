//! Sinks: where records go. One writer owns a sink; formats are swappable behind [`Sink`].

use std::io::{self, Write};
use std::str::FromStr;

use crate::record::{Field, Record, Val};

/// Output formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// RFC 4180 CSV with a header row.
    #[default]
    Csv,
    /// One JSON object per line.
    Ndjson,
    /// A Splunk lookup table: CSV keyed by every hash of a file (`hash` first, then the
    /// fields), so that a join on MD5, SHA-1 or SHA-256 finds it.
    SplunkLookup,
    /// NDJSON in the Elastic Common Schema's threat-enrichment fields (`--schema ecs`).
    Ecs,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "csv" => Ok(Format::Csv),
            "ndjson" | "jsonl" => Ok(Format::Ndjson),
            "splunk-lookup" => Ok(Format::SplunkLookup),
            "ecs" => Ok(Format::Ecs),
            _ => Err(format!(
                "unknown format {s:?} (csv, ndjson, splunk-lookup, ecs)"
            )),
        }
    }
}

/// A destination for records.
pub trait Sink {
    /// Writes one record.
    fn write(&mut self, record: &Record) -> io::Result<()>;
    /// Flushes everything.
    fn finish(&mut self) -> io::Result<()>;
}

/// Prefixes `'` to text a spreadsheet would run as a formula, and replaces control characters
/// other than tab, line feed and carriage return (a NUL from a careless export, an escape
/// sequence) with U+FFFD: a CSV cell never carries them raw.
pub fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    let control = |c: char| c.is_ascii_control() && !matches!(c, '\t' | '\n' | '\r');
    let cell: std::borrow::Cow<'_, str> = if cell.contains(control) {
        cell.replace(control, "\u{FFFD}").into()
    } else {
        cell.into()
    };
    match cell.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{cell}").into(),
        _ => cell,
    }
}

/// CSV with a header row of field names.
#[derive(Debug)]
pub struct CsvSink<W: Write> {
    writer: csv::Writer<W>,
    fields: Vec<Field>,
    header_done: bool,
}

impl<W: Write> CsvSink<W> {
    /// A sink writing `fields` to `out`.
    pub fn new(out: W, fields: Vec<Field>) -> CsvSink<W> {
        CsvSink {
            writer: csv::WriterBuilder::new()
                .terminator(csv::Terminator::CRLF)
                .from_writer(out),
            fields,
            header_done: false,
        }
    }

    fn header(&mut self) -> io::Result<()> {
        if !self.header_done {
            self.header_done = true;
            self.writer
                .write_record(self.fields.iter().map(|f| f.name()))
                .map_err(into_io)?;
        }
        Ok(())
    }
}

/// `fields` of `record` as cells of the current CSV row, text cells through the guard.
fn write_cells<W: Write>(
    writer: &mut csv::Writer<W>,
    fields: &[Field],
    record: &Record,
) -> io::Result<()> {
    for field in fields {
        let cell = field.cell(record);
        // Borrowed all the way unless the guard has to prefix the cell.
        let guarded = if field.is_text() {
            neutralise(&cell)
        } else {
            std::borrow::Cow::Borrowed(&*cell)
        };
        writer.write_field(guarded.as_bytes()).map_err(into_io)?;
    }
    Ok(())
}

fn into_io(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => io::Error::other(format!("{other:?}")),
    }
}

impl<W: Write> Sink for CsvSink<W> {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        self.header()?;
        write_cells(&mut self.writer, &self.fields, record)?;
        self.writer.write_record(None::<&[u8]>).map_err(into_io)
    }

    fn finish(&mut self) -> io::Result<()> {
        self.header()?;
        self.writer.flush()
    }
}

/// A Splunk lookup table: one CSV row per hash of each file, keyed by a first `hash` column
/// (the file's SHA-256, MD5 and SHA-1 for a found file; the hash asked for otherwise), so a
/// search joins on whichever hash its events carry; each key once. Invalid values have no
/// row.
#[derive(Debug)]
pub struct LookupSink<W: Write> {
    writer: csv::Writer<W>,
    fields: Vec<Field>,
    header_done: bool,
    /// Keys written: a file met under two of its hashes (two records) gets one row per key.
    written: std::collections::HashSet<String>,
}

impl<W: Write> LookupSink<W> {
    /// A lookup sink writing `hash` and `fields` to `out`.
    pub fn new(out: W, fields: Vec<Field>) -> LookupSink<W> {
        LookupSink {
            writer: csv::WriterBuilder::new()
                .terminator(csv::Terminator::CRLF)
                .from_writer(out),
            fields,
            header_done: false,
            written: std::collections::HashSet::new(),
        }
    }

    fn header(&mut self) -> io::Result<()> {
        if !self.header_done {
            self.header_done = true;
            let names = std::iter::once("hash").chain(self.fields.iter().map(|f| f.name()));
            self.writer.write_record(names).map_err(into_io)?;
        }
        Ok(())
    }
}

impl<W: Write> Sink for LookupSink<W> {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        self.header()?;
        if record.status == Some(crate::record::Status::Invalid) {
            return Ok(());
        }
        let mut keys: Vec<&str> = vec![record.input.as_str()];
        for other in [&record.sha256, &record.md5, &record.sha1]
            .into_iter()
            .flatten()
        {
            if !keys.contains(&other.as_str()) {
                keys.push(other);
            }
        }
        for key in keys {
            if !self.written.insert(key.to_owned()) {
                continue;
            }
            self.writer.write_field(key).map_err(into_io)?;
            write_cells(&mut self.writer, &self.fields, record)?;
            self.writer.write_record(None::<&[u8]>).map_err(into_io)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.header()?;
        self.writer.flush()
    }
}

/// NDJSON: one object per record with the chosen fields (and `raw` when asked).
#[derive(Debug)]
pub struct NdjsonSink<W: Write> {
    out: W,
    fields: Vec<Field>,
    raw: bool,
}

impl<W: Write> NdjsonSink<W> {
    /// A sink writing `fields` (plus VirusTotal's `data` as `raw` when `raw`) to `out`.
    pub fn new(out: W, fields: Vec<Field>, raw: bool) -> NdjsonSink<W> {
        NdjsonSink { out, fields, raw }
    }
}

impl<W: Write> Sink for NdjsonSink<W> {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        // Written directly: field names are plain ASCII, strings go through serde_json's
        // escaping, and nothing is built in between.
        let mut line = Vec::with_capacity(1024);
        let mut number = itoa::Buffer::new();
        line.push(b'{');
        for (i, field) in self.fields.iter().enumerate() {
            if i > 0 {
                line.push(b',');
            }
            line.push(b'"');
            line.extend_from_slice(field.name().as_bytes());
            line.extend_from_slice(b"\":");
            match field.value(record) {
                Val::Null => line.extend_from_slice(b"null"),
                Val::Str(s) => serde_json::to_writer(&mut line, s).map_err(io::Error::other)?,
                Val::Owned(s) => serde_json::to_writer(&mut line, &s).map_err(io::Error::other)?,
                Val::U64(n) => line.extend_from_slice(number.format(n).as_bytes()),
                Val::I64(n) => line.extend_from_slice(number.format(n).as_bytes()),
                Val::List(l) => serde_json::to_writer(&mut line, l).map_err(io::Error::other)?,
            }
        }
        if self.raw {
            line.extend_from_slice(if self.fields.is_empty() {
                b"\"raw\":"
            } else {
                b",\"raw\":"
            });
            match &record.raw {
                Some(raw) => line.extend_from_slice(raw.get().as_bytes()),
                None => line.extend_from_slice(b"null"),
            }
        }
        line.extend_from_slice(b"}\n");
        self.out.write_all(&line)
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Status;

    fn record(input: &str) -> Record {
        Record {
            input: input.to_owned(),
            status: Some(Status::Invalid),
            reputation: Some(-5),
            occurrences: 1,
            first_origin: "in.txt:3".into(),
            ..Record::default()
        }
    }

    #[test]
    fn a_nul_or_other_control_character_never_reaches_a_csv_cell_raw() {
        let mut out = Vec::new();
        let mut sink = CsvSink::new(&mut out, vec![Field::Input, Field::Reputation]);
        sink.write(&record("ab\0c\x1b[31m\x7f")).expect("write");
        sink.write(&record("\0=1+1")).expect("write");
        sink.write(&record("two\tparts\r\nkept")).expect("write");
        sink.finish().expect("finish");
        drop(sink);
        let text = String::from_utf8(out).expect("utf8");
        assert!(!text.contains(['\0', '\x1b', '\x7f']), "{text:?}");
        assert!(
            text.contains("ab\u{FFFD}c\u{FFFD}[31m\u{FFFD},-5"),
            "{text:?}"
        );
        assert!(text.contains("\u{FFFD}=1+1"), "{text:?}");
        assert!(text.contains("\"two\tparts\r\nkept\""), "{text:?}");
        assert_eq!(neutralise("44d8"), "44d8");
    }

    #[test]
    fn formula_starters_are_neutralised_in_text_cells_only() {
        for bad in [
            "=cmd|' /C calc'!A0",
            "+1+1",
            "-2+3",
            "@SUM(A1)",
            "\tx",
            "\rx",
        ] {
            assert!(neutralise(bad).starts_with('\''), "{bad:?}");
        }
        assert_eq!(neutralise("44d8"), "44d8");
        let mut out = Vec::new();
        let mut sink = CsvSink::new(&mut out, vec![Field::Input, Field::Reputation]);
        sink.write(&record("=HYPERLINK(\"x\")")).expect("write");
        sink.finish().expect("finish");
        drop(sink);
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(
            text,
            "input,reputation\r\n\"'=HYPERLINK(\"\"x\"\")\",-5\r\n"
        );
    }

    #[test]
    fn attacker_chosen_url_fields_go_through_the_guard_too() {
        let mut out = Vec::new();
        let fields = vec![
            Field::Input,
            Field::Kind,
            Field::Title,
            Field::FinalUrl,
            Field::Categories,
            Field::AsOwner,
            Field::HttpCode,
        ];
        let mut sink = CsvSink::new(&mut out, fields);
        let record = Record {
            input: "http://evil.com/".into(),
            ioc_kind: Some(vtbulk_ioc::Kind::Url),
            title: Some("=HYPERLINK(\"http://x\",\"y\")".into()),
            final_url: Some("@SUM(1)".into()),
            categories: vec!["+phish".into(), "malware".into()],
            as_owner: Some("-AS".into()),
            http_code: Some(200),
            ..Record::default()
        };
        sink.write(&record).expect("write");
        sink.finish().expect("finish");
        drop(sink);
        let text = String::from_utf8(out).expect("utf8");
        let row = text.lines().nth(1).expect("row");
        assert_eq!(
            row,
            "http://evil.com/,url,\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\",'@SUM(1),'+phish;malware,'-AS,200"
        );
    }

    #[test]
    fn an_empty_run_still_writes_the_header() {
        let mut out = Vec::new();
        CsvSink::new(&mut out, vec![Field::Input, Field::Status])
            .finish()
            .expect("finish");
        assert_eq!(out, b"input,status\r\n");
    }

    #[test]
    fn ndjson_keeps_types_and_projects_fields() {
        let mut out = Vec::new();
        let mut sink = NdjsonSink::new(
            &mut out,
            vec![Field::Input, Field::Reputation, Field::Tags, Field::Size],
            false,
        );
        sink.write(&record("=x")).expect("write");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"input": "=x", "reputation": -5, "tags": [], "size": null})
        );
    }
}
