//! CSV and TSV: every column that holds hashes, with each record's true starting line.
//!
//! Exports carry several hash columns (MD5, SHA-1 and SHA-256 of a process and of its
//! parent) beside columns that look like hashes and are not (machine and tenant ids,
//! pseudonymised names, import hashes). Columns are chosen from the header and from the
//! first [`SAMPLE`] records: a column named like a hash (`SHA256`, `InitiatingProcessMD5`,
//! `FileHash`) is read, and its cells that are not hashes are `invalid`; a column with another
//! name whose cells include bare hashes (a feed's `Data` column mixing hashes, URLs and IPs)
//! is read for its hashes only; a column named like an id or another digest (`DeviceId`,
//! `imphash`, `Thumbprint`) is left out and its hashes counted as excluded. When `--kinds`
//! takes URLs, domains or IPs (not the default for CSV), a column named for them (`url`,
//! `domain`, `ip`, `ioc`, `indicator`) is read too, each cell one IOC. `--column` picks
//! columns by name or position instead (and its cells may be any kind `--kinds` takes).
//!
//! The other columns (a command line, a message) are read as free text, by the same context
//! rules as a report's prose (a pseudonym or an id stays out), and what they give is counted
//! apart (`from_text_columns`); `--columns-only` turns that off, and `--column` implies it.
//! A typed-row feed (a column naming each row's type) is read by [`super::typed`].
//!
//! Records are parsed with `csv-core` directly, so that the line of each record is counted
//! here from the bytes themselves: exact across CRLF, blank lines, `#` comment lines before
//! the header and quoted fields that span lines.

use std::io::{self, BufRead};

use super::sniff::{delimiter, records};
use super::{Column, MAX_LINE, Sink, trim};
use crate::Hash;
use crate::context::{self, Exclusion};
use crate::indicator::Kinds;

/// Records sampled to choose the columns.
pub(crate) const SAMPLE: usize = 256;

/// Cells that mean "no value" in exports.
const PLACEHOLDERS: &[&[u8]] = &[
    b"-", b"--", b"n/a", b"na", b"null", b"none", b"(null)", b"nil",
];

/// What a chosen column is read for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Named like a hash column (or chosen by the user): every value should be a hash.
    Named,
    /// Found by content: its bare hashes are read, other values passed over.
    Found,
    /// Named like something else that looks like a hash: its hashes are counted, not read.
    Excluded(Exclusion),
}

pub(crate) struct Chosen {
    index: usize,
    role: Role,
}

impl Chosen {
    /// The column's position (0-based).
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// Its hashes are read (it is not left out).
    pub(crate) fn reads(&self) -> bool {
        !matches!(self.role, Role::Excluded(_))
    }

    /// A value in it that is not a hash is `invalid` (it is named like a hash column).
    pub(crate) fn strict(&self) -> bool {
        self.role == Role::Named
    }
}

/// A cell that means "no value" (`-`, `N/A`, `null`...).
pub(crate) fn placeholder(cell: &[u8]) -> bool {
    PLACEHOLDERS.iter().any(|p| cell.eq_ignore_ascii_case(p))
}

/// One record: its starting line and its fields (and, when its reader captures, its bytes).
#[derive(Default)]
pub(crate) struct Record {
    pub(crate) line: u64,
    fields: Vec<u8>,
    ends: Vec<usize>,
    overlong: bool,
    /// Captured: the blank and `#` comment lines read before the record.
    pub(crate) lead: Vec<u8>,
    /// Captured: the record's bytes as they came, its line terminator included.
    pub(crate) raw: Vec<u8>,
}

impl Record {
    pub(crate) fn field(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.fields.get(start..end)
    }

    /// The number of fields.
    pub(crate) fn columns(&self) -> usize {
        self.ends.len()
    }
}

/// Reads records off a buffered input, counting physical lines.
pub(crate) struct Records<'a> {
    input: &'a mut dyn BufRead,
    core: csv_core::Reader,
    /// The physical line at the read position.
    line: u64,
    last: Option<u8>,
    scratch: Vec<u8>,
    scratch_ends: Vec<usize>,
    /// Keep each record's bytes (`--annotate` writes them back unchanged).
    capture: bool,
}

/// The most a captured record may hold.
const MAX_CAPTURE: usize = 64 << 20;

impl<'a> Records<'a> {
    /// Records of `input` split by `delim`; with `capture`, each record keeps its bytes.
    pub(crate) fn new(input: &'a mut dyn BufRead, delim: u8, capture: bool) -> Records<'a> {
        Records {
            input,
            core: csv_core::ReaderBuilder::new().delimiter(delim).build(),
            line: 1,
            last: None,
            scratch: vec![0; 64 * 1024],
            scratch_ends: vec![0; 1024],
            capture,
        }
    }

    /// The next record into `record`; false at the end of input.
    pub(crate) fn next(&mut self, record: &mut Record) -> io::Result<bool> {
        record.lead.clear();
        record.raw.clear();
        // Blank lines and `#` comment lines between records.
        loop {
            let buf = self.input.fill_buf()?;
            let Some(&b) = buf.first() else {
                return Ok(false);
            };
            match b {
                b'\n' => {
                    self.line += 1;
                    self.last = Some(b);
                    self.input.consume(1);
                    if self.capture {
                        record.lead.push(b);
                    }
                }
                b'\r' => {
                    self.last = Some(b);
                    self.input.consume(1);
                    if self.capture {
                        record.lead.push(b);
                    }
                }
                b'#' => {
                    let lead = self.capture.then_some(&mut record.lead);
                    self.skip_line(lead)?;
                }
                _ => break,
            }
        }
        record.line = self.line;
        record.fields.clear();
        record.ends.clear();
        record.overlong = false;
        if record.fields.capacity() < 1024 {
            record.fields.reserve(1024);
        }
        let (mut out_len, mut ends_len) = (0usize, 0usize);
        record.fields.resize(record.fields.capacity(), 0);
        record.ends.resize(64, 0);
        loop {
            let buf = self.input.fill_buf()?;
            let (result, read, written, ended) = if record.overlong {
                let (r, n, _, _) =
                    self.core
                        .read_record(buf, &mut self.scratch[..], &mut self.scratch_ends[..]);
                (r, n, 0, 0)
            } else {
                self.core.read_record(
                    buf,
                    &mut record.fields[out_len..],
                    &mut record.ends[ends_len..],
                )
            };
            self.line += memchr::memchr_iter(b'\n', &buf[..read]).count() as u64;
            if read > 0 {
                self.last = Some(buf[read - 1]);
            }
            if self.capture {
                if record.raw.len() + read > MAX_CAPTURE {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "the record at line {} is longer than {} MiB",
                            record.line,
                            MAX_CAPTURE >> 20
                        ),
                    ));
                }
                record.raw.extend_from_slice(&buf[..read]);
            }
            self.input.consume(read);
            out_len += written;
            ends_len += ended;
            match result {
                csv_core::ReadRecordResult::InputEmpty => {}
                csv_core::ReadRecordResult::OutputFull => {
                    if record.fields.len() >= MAX_LINE {
                        record.overlong = true;
                    } else {
                        let grown = (record.fields.len() * 2).min(MAX_LINE);
                        record.fields.resize(grown, 0);
                    }
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    if record.ends.len() >= 1 << 16 {
                        record.overlong = true;
                    } else {
                        let grown = record.ends.len() * 2;
                        record.ends.resize(grown, 0);
                    }
                }
                csv_core::ReadRecordResult::Record => {
                    record.fields.truncate(out_len);
                    record.ends.truncate(ends_len);
                    return Ok(true);
                }
                csv_core::ReadRecordResult::End => {
                    record.fields.truncate(out_len);
                    record.ends.truncate(ends_len);
                    return Ok(ends_len > 0 || record.overlong);
                }
            }
        }
    }

    /// Skips the rest of the current line, its newline included (kept in `keep`).
    fn skip_line(&mut self, mut keep: Option<&mut Vec<u8>>) -> io::Result<()> {
        loop {
            let buf = self.input.fill_buf()?;
            if buf.is_empty() {
                return Ok(());
            }
            let (n, done) = match memchr::memchr(b'\n', buf) {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            if let Some(keep) = keep.as_deref_mut() {
                if keep.len() + n > MAX_CAPTURE {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("a comment line longer than {} MiB", MAX_CAPTURE >> 20),
                    ));
                }
                keep.extend_from_slice(&buf[..n]);
            }
            self.last = Some(buf[n - 1]);
            self.input.consume(n);
            if done {
                self.line += 1;
                return Ok(());
            }
        }
    }

    /// Physical lines read.
    fn lines(&self) -> u64 {
        super::lines_read(self.line, self.last)
    }
}

/// Reads CSV or TSV; returns the number of lines and the names of the columns read. Errors
/// (kind `InvalidInput`) when a `--column` is not there, and (kind `InvalidData`) when no
/// column holds hashes and none was chosen.
pub(crate) fn read(
    input: &mut dyn BufRead,
    columns: &[Column],
    sink: &mut Sink<'_>,
) -> io::Result<(u64, Vec<String>)> {
    let head = input.fill_buf()?;
    let sample = records(head, 50);
    let delim = delimiter(&sample).unwrap_or(b',');
    let mut records = Records::new(input, delim, false);
    // The sample: the first records, to choose the columns.
    let mut sampled: Vec<Record> = Vec::new();
    loop {
        let mut record = Record::default();
        if sampled.len() == SAMPLE || !records.next(&mut record)? {
            break;
        }
        sampled.push(record);
    }
    if columns.is_empty()
        && let Some(typed) = super::typed::detect(&sampled)
    {
        return read_typed(&mut records, &sampled, typed, sink);
    }
    let (header, chosen) = choose(&sampled, columns, sink.keeps_all(), sink.kinds)?;
    let names: Vec<String> = chosen
        .iter()
        .filter(|c| !matches!(c.role, Role::Excluded(_)))
        .map(|c| column_name(header, c.index))
        .collect();
    let text = if columns.is_empty() && !sink.columns_only {
        text_columns(&sampled, header, &chosen)
    } else {
        Vec::new()
    };
    sink.report.text_columns = text.iter().map(|&i| column_name(header, i)).collect();
    let skip = usize::from(header.is_some());
    for record in sampled.iter().skip(skip) {
        take(record, &chosen, sink);
        take_text(record, &text, sink);
    }
    let mut record = Record::default();
    while records.next(&mut record)? {
        take(&record, &chosen, sink);
        take_text(&record, &text, sink);
    }
    Ok((records.lines(), names))
}

/// Column `i` as the input's report names it: its header, or `#N` (1-based) without one.
fn column_name(header: Option<&Record>, i: usize) -> String {
    match header {
        Some(h) => String::from_utf8_lossy(trim(h.field(i).unwrap_or(b""))).into_owned(),
        None => format!("#{}", i + 1),
    }
}

/// The columns read as free text: every column not chosen for its hashes and not named like
/// an id or another digest (`DeviceId`, `Imphash`). A command line holds what an analyst
/// reads in it (`$h.Hash -eq '<sha256>'`, a download URL), judged by the same context rules
/// as a report's prose (`UserPII_<hex>` is a pseudonym).
fn text_columns(sampled: &[Record], header: Option<&Record>, chosen: &[Chosen]) -> Vec<usize> {
    let width = sampled.iter().map(Record::columns).max().unwrap_or(0);
    (0..width)
        .filter(|i| !chosen.iter().any(|c| c.index == *i))
        .filter(|&i| {
            let name = header.and_then(|h| h.field(i)).map(trim).unwrap_or(b"");
            context::field(name).is_none()
        })
        .collect()
}

/// The free-text columns of one record, read as text (hashes by context; URLs, domains and
/// IPs when `--kinds` takes them), counted apart in the input's report.
fn take_text(record: &Record, text: &[usize], sink: &mut Sink<'_>) {
    if record.overlong || text.is_empty() {
        return;
    }
    let before = sink.report.hashes + sink.report.indicators;
    for &i in text {
        let cell = record.field(i).unwrap_or(b"");
        if cell.len() < 4 {
            continue;
        }
        super::text::scan_value(cell, record.line, None, sink);
        if sink.kinds.any_indicator() {
            let command = super::indicators::Prose {
                command: true,
                ..Default::default()
            };
            super::indicators::scan(cell, record.line, command, sink);
        }
    }
    sink.report.from_text_columns += sink.report.hashes + sink.report.indicators - before;
}

/// Reads a typed-row feed ([`super::typed`]): each row's value as its type says. Its
/// network indicators are taken unless `--kinds` says otherwise.
fn read_typed(
    records: &mut Records<'_>,
    sampled: &[Record],
    typed: super::typed::Typed,
    sink: &mut Sink<'_>,
) -> io::Result<(u64, Vec<String>)> {
    if !sink.kinds_given {
        sink.kinds = Kinds::ALL;
    }
    let header = sampled.first().filter(|_| !typed.first_is_row);
    let names = vec![format!(
        "{} (typed by {})",
        column_name(header, typed.value),
        column_name(header, typed.kind)
    )];
    for record in sampled.iter().skip(usize::from(header.is_some())) {
        super::typed::take(record, typed, sink);
    }
    let mut record = Record::default();
    while records.next(&mut record)? {
        super::typed::take(&record, typed, sink);
    }
    Ok((records.lines(), names))
}

/// The header (when the first record is one) and the columns to read.
pub(crate) fn choose<'r>(
    sampled: &'r [Record],
    columns: &[Column],
    keep_all: bool,
    kinds: Kinds,
) -> io::Result<(Option<&'r Record>, Vec<Chosen>)> {
    let Some(first) = sampled.first() else {
        return Ok((None, Vec::new()));
    };
    let cell_is_hash = |c: &[u8]| Hash::parse_bytes(trim(c)).is_ok();
    let is_header =
        !(0..first.columns()).any(|i| first.field(i).is_some_and(cell_is_hash)) && !first.overlong;
    let header = is_header.then_some(first);
    let name_of = |i: usize| -> String {
        header
            .and_then(|h| h.field(i))
            .map(|c| String::from_utf8_lossy(trim(c)).into_owned())
            .unwrap_or_default()
    };
    let width = sampled.iter().map(Record::columns).max().unwrap_or(0);
    if !columns.is_empty() {
        let mut chosen = Vec::new();
        for column in columns {
            let index = match column {
                Column::Index(n) => n - 1,
                Column::Name(name) => {
                    let Some(h) = header else {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("--column {name:?}: the CSV has no header row"),
                        ));
                    };
                    let found =
                        (0..h.columns()).find(|&i| name_of(i).eq_ignore_ascii_case(name.trim()));
                    match found {
                        Some(i) => i,
                        None => {
                            let all: Vec<String> = (0..h.columns()).map(name_of).collect();
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidInput,
                                format!(
                                    "--column {name:?}: no such column (the header has {})",
                                    all.join(", ")
                                ),
                            ));
                        }
                    }
                }
            };
            chosen.push(Chosen {
                index,
                role: Role::Named,
            });
        }
        return Ok((header, chosen));
    }
    let data = &sampled[usize::from(is_header)..];
    let mut chosen = Vec::new();
    for i in 0..width {
        let hashes = data
            .iter()
            .filter(|r| r.field(i).is_some_and(cell_is_hash))
            .count();
        let name = name_of(i);
        let role = match header {
            Some(_) => match context::field(name.as_bytes()) {
                Some(_) if keep_all && hashes > 0 => Some(Role::Found),
                Some(why) => (hashes > 0).then_some(Role::Excluded(why)),
                None if hashy(&name) => Some(Role::Named),
                None if kinds.any_indicator() && names_iocs(&name) => Some(Role::Named),
                None => (hashes > 0).then_some(Role::Found),
            },
            None => (hashes > 0).then_some(Role::Found),
        };
        if let Some(role) = role {
            chosen.push(Chosen { index: i, role });
        }
    }
    if !chosen.iter().any(|c| !matches!(c.role, Role::Excluded(_))) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no column holds hashes; choose one with --column NAME|INDEX",
        ));
    }
    Ok((header, chosen))
}

/// A header name that says its column holds file hashes.
pub(crate) fn hashy(name: &str) -> bool {
    let squashed: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    ["md5", "sha1", "sha256", "hash", "checksum", "digest"]
        .iter()
        .any(|w| squashed.contains(w))
}

/// A header name that says its column holds URLs, domains, IP addresses or IOCs of any
/// kind (`url`, `Domain`, `ip_address`, `ioc_value`, `Indicator`): read when `--kinds` takes
/// those; exact names only, so that an EDR export's `RemoteUrl` or `RemoteIP` is not.
pub(crate) fn names_iocs(name: &str) -> bool {
    let squashed: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    [
        "url",
        "urls",
        "uri",
        "domain",
        "domains",
        "domainname",
        "hostname",
        "fqdn",
        "host",
        "ip",
        "ips",
        "ipaddress",
        "ipaddr",
        "ipv4",
        "ipv6",
        "ioc",
        "iocs",
        "iocvalue",
        "indicator",
        "indicatorvalue",
        "observable",
        "observablevalue",
    ]
    .contains(&squashed.as_str())
}

/// The hashes of one record's chosen columns.
fn take(record: &Record, chosen: &[Chosen], sink: &mut Sink<'_>) {
    if record.overlong {
        sink.invalid(
            b"",
            record.line,
            format!("record longer than {MAX_LINE} bytes"),
        );
        return;
    }
    for c in chosen {
        let cell = trim(record.field(c.index).unwrap_or(b""));
        if cell.is_empty() || placeholder(cell) {
            continue;
        }
        match c.role {
            Role::Named => sink.hash_value(cell, record.line),
            Role::Found => {
                if let Ok(h) = Hash::parse_bytes(cell) {
                    sink.hash(h, record.line);
                }
            }
            Role::Excluded(why) => {
                if Hash::parse_bytes(cell).is_ok() {
                    sink.token(cell, record.line, Some(why));
                }
            }
        }
    }
}
