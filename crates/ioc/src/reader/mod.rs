//! Reading IOCs out of the files people hand us: plain lists, CSV and TSV exports, free-text
//! reports, JSON and NDJSON (MISP, STIX 2, Windows events, EDR exports), XML (OpenIOC), in
//! UTF-8 or UTF-16, plain or compressed.
//!
//! Synchronous and streaming: memory does not grow with the input (a line or record longer
//! than [`MAX_LINE`] is reported and skipped, never held whole), and no byte sequence can make
//! it panic. Every item carries its origin (input and true physical 1-based line), so a bad
//! value becomes an `invalid` record that says where.
//!
//! `auto` decides per input, by content ([`sniff`]), and then tries the guess on the input's
//! first megabyte: a CSV with no column of hashes or a list whose lines are mostly not hashes
//! is read as free text instead, and the [`InputReport`] says so (`fallback`). Each reader
//! asks [`crate::context`] whether a hash-shaped token is a file hash at all (not an import
//! hash, a certificate thumbprint, a pseudonym or an id) and counts what it leaves out.
//! URLs, domains and IP addresses are taken where `--kinds` asks for them (by default from
//! lists, prose and XML/HTML, not from CSV and JSON exports: [`default_kinds`]), refanged
//! and canonical ([`crate::indicator`]), private and documentation addresses and a report's
//! own reference links left out and counted.

mod ahead;
mod csv;
mod indicators;
mod json;
mod lines;
mod rows;
mod sniff;
mod source;
mod text;
mod typed;
mod xml;

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read};
use std::str::FromStr;

use crate::context::Exclusion;
use crate::indicator::{Indicator, Kinds};
use crate::{Hash, ParseHashError};

pub use rows::{Cell, FieldPath, Layout, Row, RowKind, Rows, read_rows, row_layout};
pub use sniff::{binary, sniff};
pub use source::{Opened, Part, compressed, open};

/// Longest line (or CSV record, or JSON string) kept; longer ones become one `invalid` item
/// (lines, CSV) or are scanned as they stream (text).
pub const MAX_LINE: usize = 1 << 20;

/// How much of an input `auto` looks at (and tries its guess on) before reading it.
pub const HEAD: usize = 1 << 20;

/// How an input is laid out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InputFormat {
    /// Decide per input from its content (and its name), then check the guess.
    #[default]
    Auto,
    /// A plain list: the first token of each line (`HASH`, `HASH;comment`, `HASH  name`).
    Lines,
    /// CSV or TSV: every column that holds hashes (or the `--column`s chosen).
    Csv,
    /// Free text: every 32/40/64-hex token that is not part of a longer hex run.
    Text,
    /// JSON or NDJSON, read by its structure (MISP, STIX 2, events; other strings as text).
    Json,
    /// XML, read by its structure (OpenIOC; other text and attributes as text).
    Xml,
}

impl InputFormat {
    /// The name used on the command line and in summaries.
    pub fn name(self) -> &'static str {
        match self {
            InputFormat::Auto => "auto",
            InputFormat::Lines => "lines",
            InputFormat::Csv => "csv",
            InputFormat::Text => "text",
            InputFormat::Json => "json",
            InputFormat::Xml => "xml",
        }
    }
}

impl FromStr for InputFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(InputFormat::Auto),
            "lines" => Ok(InputFormat::Lines),
            "csv" | "tsv" => Ok(InputFormat::Csv),
            "text" => Ok(InputFormat::Text),
            "json" | "ndjson" => Ok(InputFormat::Json),
            "xml" => Ok(InputFormat::Xml),
            _ => Err(format!(
                "unknown input format {s:?} (auto, lines, csv, text, json, xml)"
            )),
        }
    }
}

/// Which CSV column holds hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Column {
    /// By header name (case-insensitive).
    Name(String),
    /// By 1-based position.
    Index(usize),
}

impl FromStr for Column {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<usize>() {
            Ok(0) => Err("column positions start at 1".into()),
            Ok(n) => Ok(Column::Index(n)),
            Err(_) if !s.is_empty() => Ok(Column::Name(s.to_owned())),
            Err(_) => Err("empty column name".into()),
        }
    }
}

/// How to read inputs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// The layout (`Auto`: decided per input).
    pub format: InputFormat,
    /// CSV columns chosen by the user (none: every column that holds hashes).
    pub columns: Vec<Column>,
    /// Take every hash-shaped token, whatever its context says (`--keep-all-hex`).
    pub keep_all_hex: bool,
    /// JSON fields chosen by the user (`--field`): only their values are read, one JSON
    /// object per line.
    pub fields: Vec<FieldPath>,
    /// The kinds of IOC to take (`--kinds`); `None`: each format's default
    /// ([`default_kinds`]).
    pub kinds: Option<Kinds>,
    /// CSV: read only the columns chosen for their IOCs, not the other columns as free text
    /// (`--columns-only`).
    pub columns_only: bool,
}

/// The kinds taken from an input of `format` when `--kinds` is not given: every kind from
/// lists, free text and XML/HTML (IOC lists and reports); file hashes only from CSV and JSON
/// (EDR and SIEM exports, whose host names and addresses are the network's own, not
/// indicators: a nightly run over them must not start spending quota on them).
pub fn default_kinds(format: InputFormat) -> Kinds {
    match format {
        InputFormat::Csv | InputFormat::Json => Kinds::FILES,
        _ => Kinds::ALL,
    }
}

/// Where an item came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// Index of the input (or of the archive member) in the run's list of inputs.
    pub input: u32,
    /// 1-based physical line (for a CSV record, the line where it starts).
    pub line: u64,
}

/// One thing found in an input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// A valid hash.
    Hash(Hash, Origin),
    /// A URL, domain or IP address in canonical form (borrowed: a token met again hands on
    /// what it gave the first time, and the receiver keeps a copy only of what is new).
    Indicator(&'a Indicator, Origin),
    /// A value that should have been a hash and is not.
    Invalid {
        /// The value, cut to 100 characters, lossily decoded.
        value: String,
        /// Where.
        origin: Origin,
        /// Why, e.g. "39 hex digits (a hash has 32, 40 or 64)".
        reason: String,
    },
}

/// What reading one input did: the format used, what was found, what was left out and why.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct InputReport {
    /// The input's display name (`stdin`; `archive.zip:member.csv` for an archive member).
    pub name: String,
    /// The format it was read as.
    pub format: &'static str,
    /// Why `auto` read it as text instead of its first guess.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// The compression undone (`gzip`, `zstd`, `bzip2`, `xz`, `zip`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<&'static str>,
    /// The text encoding, when not UTF-8 (`utf-16le`, `utf-16be`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<&'static str>,
    /// The CSV columns read, by header name (or `#N` without a header).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// The CSV columns read as free text (a command line), unless `--columns-only`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub text_columns: Vec<String>,
    /// Hashes, URLs, domains and IPs taken from those (counted in `hashes` and `indicators`
    /// too).
    #[serde(skip_serializing_if = "is_zero")]
    pub from_text_columns: u64,
    /// Physical lines read.
    pub lines: u64,
    /// Valid hashes found (every occurrence).
    pub hashes: u64,
    /// URLs, domains and IP addresses taken (every occurrence).
    #[serde(skip_serializing_if = "is_zero")]
    pub indicators: u64,
    /// The same by kind (`url`, `domain`, `ip`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub indicators_by_kind: BTreeMap<&'static str, u64>,
    /// Values that should have been hashes and are not.
    pub invalid: u64,
    /// Hash-shaped tokens left out (not file hashes), all reasons.
    pub excluded: u64,
    /// The same by reason (`import_hash`, `certificate`, `id`...).
    pub excluded_by_reason: BTreeMap<&'static str, u64>,
    /// Damage that ended the input early (a truncated or corrupt compressed stream, a JSON
    /// document cut short, a read error): what was read before it is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damage: Option<String>,
    /// Why the input was not read at all (a binary file given by mistake).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Where readers put what they find: counts it in the input's report and hands items on.
pub(crate) struct Sink<'a> {
    input: u32,
    keep_all: bool,
    /// The kinds taken (set by [`run`] for the format read).
    pub(crate) kinds: Kinds,
    /// Whether `--kinds` chose them (else a reader may widen its format's default: a
    /// typed-row feed's network indicators are taken).
    pub(crate) kinds_given: bool,
    /// CSV: only the IOC columns, no free-text column (`--columns-only`).
    pub(crate) columns_only: bool,
    /// Counting only: nothing is emitted (`auto`'s trial of a guess).
    trial: bool,
    /// What each recent token of prose gave (reports repeat their words).
    pub(crate) memo: indicators::Memo,
    /// The report's `indicators_by_kind` and `excluded_by_reason`, counted here while the
    /// input is read and added to the report when the sink goes.
    by_kind: Tally,
    by_reason: Tally,
    report: &'a mut InputReport,
    emit: &'a mut dyn FnMut(Item<'_>),
}

/// Counts by name, in a short list: a report's map entry for every token found cost as
/// much as the rest of a remembered token's handling; a handful of names, each met again
/// and again, are found at once here.
#[derive(Default)]
struct Tally(Vec<(&'static str, u64)>);

impl Tally {
    fn add(&mut self, name: &'static str) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, count)) => *count += 1,
            None => self.0.push((name, 1)),
        }
    }

    /// Adds the counts to `map` and empties the tally.
    fn drain_into(&mut self, map: &mut BTreeMap<&'static str, u64>) {
        for (name, count) in self.0.drain(..) {
            *map.entry(name).or_default() += count;
        }
    }
}

impl Drop for Sink<'_> {
    fn drop(&mut self) {
        self.by_kind.drain_into(&mut self.report.indicators_by_kind);
        self.by_reason
            .drain_into(&mut self.report.excluded_by_reason);
    }
}

impl<'a> Sink<'a> {
    /// A sink for input `index` into `report`; a `trial` one only counts.
    pub(crate) fn new(
        index: u32,
        options: &ReadOptions,
        trial: bool,
        report: &'a mut InputReport,
        emit: &'a mut dyn FnMut(Item<'_>),
    ) -> Sink<'a> {
        Sink {
            input: index,
            keep_all: options.keep_all_hex,
            kinds: options.kinds.unwrap_or(Kinds::FILES),
            kinds_given: options.kinds.is_some(),
            columns_only: options.columns_only,
            trial,
            memo: indicators::Memo::default(),
            by_kind: Tally::default(),
            by_reason: Tally::default(),
            report,
            emit,
        }
    }
}

impl Sink<'_> {
    fn origin(&self, line: u64) -> Origin {
        Origin {
            input: self.input,
            line,
        }
    }

    /// A valid hash.
    pub(crate) fn hash(&mut self, hash: Hash, line: u64) {
        self.report.hashes += 1;
        if !self.trial {
            let origin = self.origin(line);
            (self.emit)(Item::Hash(hash, origin));
        }
    }

    /// A URL, domain or IP address found; `plain` when it was written plainly (not
    /// defanged) in prose, where links to the report's sources and file names are left out.
    /// Excluded (and counted) when its scope says so or `--kinds` did not choose its kind.
    pub(crate) fn indicator(&mut self, found: Indicator, line: u64, plain: bool) {
        match self.judge(found, plain) {
            Ok(found) => self.take(&found, line),
            Err(why) => self.excluded(why),
        }
    }

    /// What [`Sink::indicator`] makes of `found`: taken, or left out and why (its scope,
    /// prose's rules when `plain`, a kind `--kinds` did not choose). Counts nothing.
    pub(crate) fn judge(&self, found: Indicator, plain: bool) -> Result<Indicator, Exclusion> {
        let why = found
            .exclusion()
            .or_else(|| plain.then(|| found.prose_exclusion()).flatten());
        match why {
            Some(why) => Err(why),
            None if !self.kinds.has(found.kind_of()) => Err(Exclusion::KindNotChosen),
            None => Ok(found),
        }
    }

    /// An indicator [`Sink::judge`] took: counted and handed on.
    pub(crate) fn take(&mut self, found: &Indicator, line: u64) {
        self.report.indicators += 1;
        self.by_kind.add(found.kind_of().as_str());
        if !self.trial {
            let origin = self.origin(line);
            (self.emit)(Item::Indicator(found, origin));
        }
    }

    /// A hash-shaped token (32, 40 or 64 hex digits) and what its context says about it.
    pub(crate) fn token(&mut self, hex: &[u8], line: u64, why: Option<Exclusion>) {
        match why {
            Some(why) if !self.keep_all => self.excluded(why),
            _ => {
                if let Ok(hash) = Hash::parse_bytes(hex) {
                    self.hash(hash, line);
                }
            }
        }
    }

    /// A hash-shaped token left out, and why.
    pub(crate) fn excluded(&mut self, why: Exclusion) {
        self.report.excluded += 1;
        self.by_reason.add(why.name());
    }

    /// IOCs met so far (taken or left out).
    pub(crate) fn seen(&self) -> u64 {
        self.report.hashes + self.report.indicators + self.report.excluded
    }

    /// Whether exclusions are off (`--keep-all-hex`).
    pub(crate) fn keeps_all(&self) -> bool {
        self.keep_all
    }

    /// Damage that ended the input (a truncated or corrupt compressed stream, a JSON
    /// document cut short): an `invalid` item on `line`, and the report's `damage`. Said last,
    /// the stream's damage wins: it is the cause of any the reader saw.
    pub(crate) fn damaged(&mut self, line: u64, what: String) {
        self.invalid(b"", line, what.clone());
        self.report.damage = Some(what);
    }

    /// A value that should have been a hash.
    pub(crate) fn invalid(&mut self, value: &[u8], line: u64, reason: impl Into<String>) {
        self.report.invalid += 1;
        if !self.trial {
            let origin = self.origin(line);
            (self.emit)(Item::Invalid {
                value: shown(value),
                origin,
                reason: reason.into(),
            });
        }
    }

    /// A value that should hold file hashes (a CSV column named like one, an OpenIOC hash
    /// item): a bare hash, or the hashes inside it judged by context (`SHA256=…,IMPHASH=…`,
    /// `md5:…`), or else an invalid item saying why it is not one.
    /// When `--kinds` takes URLs, domains or IPs, a value that is none of the above may be
    /// one of those (`--column url`, a list's line).
    pub(crate) fn hash_value(&mut self, value: &[u8], line: u64) {
        match Hash::parse_bytes(value) {
            Ok(h) => self.hash(h, line),
            Err(e) => {
                let before = self.seen();
                text::scan_value(value, line, None, self);
                if self.seen() != before {
                    return;
                }
                self.other_value(value, line, &e);
            }
        }
    }

    /// A value that should have been one IOC and is not a hash (`e` says why): a URL,
    /// domain or IP address when `--kinds` takes them, else invalid. A value of hex digits
    /// only keeps the hash's reason ("39 hex digits").
    pub(crate) fn other_value(&mut self, value: &[u8], line: u64, e: &ParseHashError) {
        let hex = value.iter().all(|&b| IS_HEX[b as usize]);
        if !self.kinds.any_indicator() || hex {
            return self.invalid(value, line, reason(e));
        }
        match indicators::value(value) {
            Ok(found) => self.indicator(found, line, false),
            Err(why) => self.invalid(value, line, why),
        }
    }

    /// A value parsed as a hash: the hash, or an invalid item saying why not.
    pub(crate) fn value(&mut self, value: &[u8], line: u64) {
        match Hash::parse_bytes(value) {
            Ok(h) => self.hash(h, line),
            Err(e) => self.invalid(value, line, reason(&e)),
        }
    }
}

/// Reads one input (or archive member), calling `emit` for each item; the report says what
/// was read and how. Damage in the input (a read error, a truncated or corrupt compressed
/// stream) ends it with an `invalid` item and the report's `damage`; it is not an error here,
/// so that the other inputs are read. Errors are the user's choices that cannot hold: a
/// `--column` the CSV does not have, a CSV with no hash column when `csv` was asked for.
pub fn read_input(
    part: Part<'_>,
    index: u32,
    options: &ReadOptions,
    emit: &mut dyn FnMut(Item<'_>),
) -> io::Result<InputReport> {
    let Part {
        name,
        mut reader,
        damage,
        compression,
    } = part;
    let mut report = InputReport {
        name,
        compression,
        ..InputReport::default()
    };
    let (mut decoded, encoding) = source::decode(&mut *reader)?;
    report.encoding = encoding;
    let head = head(&mut decoded, options)?;
    if options.format == InputFormat::Auto
        && let Some(what) = sniff::binary(&head)
    {
        return Ok(skip_binary(report, what, index, options, emit));
    }
    let mut format = first_guess(&report.name, &head, options);
    if options.format == InputFormat::Auto
        && let Some(reason) = fallback(format, &head, options)
    {
        report.fallback = Some(format!("read as text: {reason}"));
        format = InputFormat::Text;
    }
    let mut whole = io::BufReader::with_capacity(256 * 1024, io::Cursor::new(head).chain(decoded));
    let mut sink = Sink::new(index, options, false, &mut report, emit);
    run(format, &mut whole, options, &mut sink)?;
    if let Some(what) = damage.take() {
        let line = sink.report.lines.max(1);
        sink.damaged(line, what);
    }
    drop(sink);
    Ok(report)
}

/// The first [`HEAD`] bytes of a decoded input, for `auto` to guess its format from (put back
/// in front when it is read); none when a format is given, which is read as it is.
pub(crate) fn head(decoded: &mut dyn io::Read, options: &ReadOptions) -> io::Result<Vec<u8>> {
    if options.format == InputFormat::Auto {
        source::peek(decoded, HEAD)
    } else {
        Ok(Vec::new())
    }
}

/// A binary input, not read: its report says what it is (and it ends the run with exit code
/// 1, as damage does), and one `invalid` item says so in the output.
fn skip_binary(
    mut report: InputReport,
    what: &str,
    index: u32,
    options: &ReadOptions,
    emit: &mut dyn FnMut(Item<'_>),
) -> InputReport {
    report.format = "binary";
    let why = format!("not read: {what}; --input-format text reads it as text");
    Sink::new(index, options, false, &mut report, emit).invalid(b"", 1, why.clone());
    report.skipped = Some(why);
    report
}

/// The format `options` ask for, or `auto`'s guess from the name and the decoded head:
/// `--column` means CSV, `--field` JSON.
pub(crate) fn first_guess(name: &str, head: &[u8], options: &ReadOptions) -> InputFormat {
    match options.format {
        InputFormat::Auto if !options.columns.is_empty() => InputFormat::Csv,
        InputFormat::Auto if !options.fields.is_empty() => InputFormat::Json,
        InputFormat::Auto => sniff(name, head),
        f => f,
    }
}

/// Reads `input` in one known `format` (not `Auto`): no decompression, no decoding, no
/// guess. The hot path on its own, for benchmarks and for callers that know the layout.
pub fn read_plain(
    input: &mut dyn BufRead,
    index: u32,
    format: InputFormat,
    options: &ReadOptions,
    emit: &mut dyn FnMut(Item<'_>),
) -> io::Result<InputReport> {
    let mut report = InputReport::default();
    run(
        format,
        input,
        options,
        &mut Sink::new(index, options, false, &mut report, emit),
    )?;
    Ok(report)
}

/// Runs `format`'s reader over `input` into `sink`, and notes in its report the format, the
/// lines read and (CSV) the columns read.
fn run(
    format: InputFormat,
    input: &mut dyn BufRead,
    options: &ReadOptions,
    sink: &mut Sink<'_>,
) -> io::Result<()> {
    sink.report.format = format.name();
    sink.kinds = options.kinds.unwrap_or_else(|| default_kinds(format));
    sink.report.lines = match format {
        InputFormat::Lines | InputFormat::Auto => lines::read(input, sink)?,
        InputFormat::Csv => {
            let (lines, columns) = csv::read(input, &options.columns, sink)?;
            sink.report.columns = columns;
            lines
        }
        InputFormat::Text => text::read(input, sink)?,
        InputFormat::Json if !options.fields.is_empty() => {
            rows::read_fields(input, &options.fields, sink)?
        }
        InputFormat::Json => json::read(input, sink)?,
        InputFormat::Xml => xml::read(input, sink)?,
    };
    Ok(())
}

/// `auto`'s check of its guess: runs `format`'s reader over `head` (whole lines only),
/// counting, and says why the input should be read as text instead, if it should: a CSV with
/// no column of hashes, a list whose values are mostly not hashes.
fn fallback(format: InputFormat, head: &[u8], options: &ReadOptions) -> Option<String> {
    let mut whole = match memchr::memrchr(b'\n', head) {
        Some(i) if head.len() == HEAD => &head[..=i],
        _ => head,
    };
    let mut report = InputReport::default();
    let mut nothing = |_: Item<'_>| {};
    let mut sink = Sink::new(0, options, true, &mut report, &mut nothing);
    sink.kinds = options.kinds.unwrap_or_else(|| default_kinds(format));
    match format {
        InputFormat::Csv => match csv::read(&mut whole, &options.columns, &mut sink) {
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                Some("no column holds hashes".to_owned())
            }
            _ => None,
        },
        InputFormat::Lines => {
            let _ = lines::read(&mut whole, &mut sink);
            drop(sink);
            let taken = report.hashes + report.indicators;
            (report.invalid > taken).then(|| {
                format!(
                    "{} of the first {} values are not IOCs",
                    report.invalid,
                    report.invalid + taken
                )
            })
        }
        _ => None,
    }
}

/// The physical lines read, from the line at the read position (1-based) and the last byte
/// read: a final line without its newline counts.
pub(crate) fn lines_read(line: u64, last: Option<u8>) -> u64 {
    match last {
        None => 0,
        Some(b'\n') => line - 1,
        Some(_) => line,
    }
}

/// Trims ASCII whitespace and the Unicode spaces that exports put around cells: NBSP
/// (U+00A0), zero-width spaces (U+200B, U+FEFF), the en/em spaces (U+2000-U+200A), the
/// narrow NBSP (U+202F) and the ideographic space (U+3000).
pub(crate) fn trim(b: &[u8]) -> &[u8] {
    let mut b = b.trim_ascii();
    // The common case, ASCII at both ends, costs two comparisons.
    while b.first().is_some_and(|&c| c >= 0x80) || b.last().is_some_and(|&c| c >= 0x80) {
        let before = b.len();
        for space in UNICODE_SPACES {
            if let Some(rest) = b.strip_prefix(*space) {
                b = rest;
            }
            if let Some(rest) = b.strip_suffix(*space) {
                b = rest;
            }
        }
        b = b.trim_ascii();
        if b.len() == before {
            break;
        }
    }
    b
}

const UNICODE_SPACES: &[&[u8]] = &[
    b"\xc2\xa0",
    b"\xe2\x80\x8b",
    b"\xef\xbb\xbf",
    b"\xe2\x80\xaf",
    b"\xe3\x80\x80",
    b"\xe2\x80\x80",
    b"\xe2\x80\x81",
    b"\xe2\x80\x82",
    b"\xe2\x80\x83",
    b"\xe2\x80\x84",
    b"\xe2\x80\x85",
    b"\xe2\x80\x86",
    b"\xe2\x80\x87",
    b"\xe2\x80\x88",
    b"\xe2\x80\x89",
    b"\xe2\x80\x8a",
];

/// A value as an `invalid` record shows it: at most 100 bytes, lossily decoded.
fn shown(value: &[u8]) -> String {
    let cut = &value[..value.len().min(100)];
    String::from_utf8_lossy(cut).into_owned()
}

fn reason(e: &ParseHashError) -> String {
    e.to_string()
}

/// Hex digits by byte (true for 0-9, a-f, A-F).
pub(crate) static IS_HEX: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_hexdigit();
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests;
