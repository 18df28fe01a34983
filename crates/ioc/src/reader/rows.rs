//! Rows for `--annotate` and `--field`: an export read back row by row, each row's bytes as
//! they came and the hash values it holds, grouped by the column or field they came from.
//!
//! `--annotate` writes the input's own rows with VirusTotal's verdicts appended, so it needs
//! what the other readers throw away: the exact bytes of each row (CSV quoting, embedded
//! newlines, CRLF, comment lines; NDJSON objects with every member) and which hash sits in
//! which column. CSV rows come from the same record reader and column choice as
//! [`super::csv`], with the record's bytes captured. NDJSON rows are parsed one line at a time
//! with `serde_json`; a row's hash fields are found by name (any key that names a hash, such
//! as `SHA256`, `InitiatingProcessMD5`, `tgtFileSha256`, `SHA256HashData`, `process_hash`, and
//! ECS's `process.hash.sha256`, unless [`crate::context::field`] says it is an id or another
//! digest) or taken from `--field` paths. A Sysmon-style `Hashes` string
//! (`SHA1=…,MD5=…,SHA256=…,IMPHASH=…`) gives one group per algorithm (`Hashes.SHA256`), an array
//! of hashes (Carbon Black's `process_hash: [md5, sha256]`) one per kind
//! (`process_hash.sha256`).

use std::io::{self, BufRead, Read};
use std::str::FromStr;

use serde_json::Value;

use super::csv::{self, Records};
use super::sniff::{delimiter, records};
use super::{Column, InputFormat, Part, ReadOptions, source, trim};
use crate::Hash;
use crate::context;

/// Rows sampled to choose an NDJSON input's hash fields (as for CSV columns).
const SAMPLE: usize = 256;

/// A field of a JSON object: a dotted path (`process.hash.sha256`; at each level the longest
/// run of segments that is a key is taken, so ECS's flattened `"process.hash.sha256"` key is
/// found too) or a JSON pointer (`/process/hash/sha256`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldPath {
    segments: Vec<String>,
    /// Dotted segments may join across levels; a pointer's may not.
    dotted: bool,
    shown: String,
}

impl FromStr for FieldPath {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() || s == "/" {
            return Err("an empty field path".into());
        }
        let (segments, dotted): (Vec<String>, bool) = match s.strip_prefix('/') {
            Some(pointer) => (
                pointer
                    .split('/')
                    .map(|p| p.replace("~1", "/").replace("~0", "~"))
                    .collect(),
                false,
            ),
            None => (s.split('.').map(str::to_owned).collect(), true),
        };
        if segments.iter().any(String::is_empty) {
            return Err(format!("{s:?}: an empty segment"));
        }
        Ok(FieldPath {
            shown: segments.join("."),
            segments,
            dotted,
        })
    }
}

impl FieldPath {
    /// The path as a group name: its segments joined by dots.
    pub fn name(&self) -> &str {
        &self.shown
    }

    /// The value at this path in `value`.
    pub fn find<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        find(value, &self.segments, self.dotted)
    }
}

fn find<'v>(value: &'v Value, segments: &[String], dotted: bool) -> Option<&'v Value> {
    let Some(first) = segments.first() else {
        return Some(value);
    };
    match value {
        Value::Object(map) => {
            if dotted {
                // The longest run of segments that is a key first.
                let mut key = segments.join(".");
                for take in (1..=segments.len()).rev() {
                    if let Some(v) = map.get(&key)
                        && let Some(found) = find(v, &segments[take..], dotted)
                    {
                        return Some(found);
                    }
                    if take > 1 {
                        let cut = key.len() - segments[take - 1].len() - 1;
                        key.truncate(cut);
                    }
                }
                None
            } else {
                find(map.get(first)?, &segments[1..], dotted)
            }
        }
        Value::Array(items) => {
            let i: usize = first.parse().ok()?;
            find(items.get(i)?, &segments[1..], dotted)
        }
        _ => None,
    }
}

/// One hash value of a row, and the group (column or field) it belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cell {
    /// The value as the row holds it (a CSV cell unquoted, a JSON string), trimmed.
    pub value: Vec<u8>,
    /// The row has this group at all.
    pub present: bool,
    /// A value that is not a hash is `invalid` (a column named like a hash, a `--field`);
    /// otherwise it is passed over.
    pub strict: bool,
}

/// What a row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowKind {
    /// A CSV header: the appended columns get their names here.
    Header,
    /// A row of data.
    Data,
    /// Passed through untouched (an NDJSON line that is not a JSON object).
    Other,
}

/// One row: its bytes in three parts (`lead` + `body` + `end` is exactly what the input held)
/// and its cells by group ([`Rows::groups`]).
#[derive(Debug)]
pub struct Row<'r> {
    /// Blank and comment lines before the row.
    pub lead: &'r [u8],
    /// The row, without its line terminator.
    pub body: &'r [u8],
    /// Its line terminator (`\n`, `\r\n`, `\r`, or nothing at the end of the input).
    pub end: &'r [u8],
    /// The physical line it starts on (1-based).
    pub line: u64,
    /// What it is.
    pub kind: RowKind,
    /// Its cells, one per group.
    pub cells: &'r [Cell],
    /// The groups' names (as many as `cells`).
    pub groups: &'r [String],
}

/// How the rows are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// CSV or TSV with this delimiter.
    Csv {
        /// The delimiter.
        delimiter: u8,
    },
    /// One JSON object per line.
    Ndjson,
}

/// An input read back as rows.
pub struct Rows<'a> {
    inner: Inner<'a>,
    groups: Vec<String>,
    cells: Vec<Cell>,
}

impl std::fmt::Debug for Rows<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows")
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

enum Inner<'a> {
    Csv {
        /// Boxed: the CSV parser's state is most of it.
        records: Box<Records<'a>>,
        /// The sampled records not handed out yet (the header first, when there is one).
        pending: std::collections::VecDeque<csv::Record>,
        header: bool,
        columns: Vec<(usize, bool)>,
        delimiter: u8,
        current: csv::Record,
        first: bool,
        /// What followed the last record when the sample reached the end.
        tail: Vec<u8>,
    },
    Json {
        input: &'a mut dyn BufRead,
        fields: Vec<FieldPath>,
        pending: std::collections::VecDeque<(Vec<u8>, u64)>,
        line: u64,
        current: Vec<u8>,
        current_line: u64,
        found: Vec<(String, Vec<u8>, bool)>,
    },
}

impl<'a> Rows<'a> {
    /// CSV rows of `input`: its hash columns chosen as the CSV reader chooses them (or
    /// `columns`), one group per column, named after its header (`#N` without one).
    pub fn csv(input: &'a mut dyn BufRead, columns: &[Column], keep_all: bool) -> io::Result<Self> {
        let head = input.fill_buf()?;
        let sample = records(head, 50);
        let delim = delimiter(&sample).unwrap_or(b',');
        let mut records = Records::new(input, delim, true);
        let mut sampled = Vec::new();
        let mut tail = Vec::new();
        while sampled.len() < csv::SAMPLE {
            let mut record = csv::Record::default();
            if !records.next(&mut record)? {
                tail = record.lead;
                break;
            }
            sampled.push(record);
        }
        let (header, chosen) = csv::choose(&sampled, columns, keep_all, crate::Kinds::FILES)?;
        let header = header.is_some();
        let mut groups = Vec::new();
        let mut picked = Vec::new();
        for c in chosen.iter().filter(|c| c.reads()) {
            groups.push(match sampled.first().filter(|_| header) {
                Some(h) => {
                    String::from_utf8_lossy(trim(h.field(c.index()).unwrap_or(b""))).into_owned()
                }
                None => format!("#{}", c.index() + 1),
            });
            picked.push((c.index(), c.strict()));
        }
        let cells = vec![Cell::default(); groups.len()];
        Ok(Rows {
            inner: Inner::Csv {
                records: Box::new(records),
                pending: sampled.into(),
                header,
                columns: picked,
                delimiter: delim,
                current: csv::Record::default(),
                first: true,
                tail,
            },
            groups,
            cells,
        })
    }

    /// NDJSON rows of `input`: the hash fields at `fields`, or (none given) those found by
    /// name in the first rows, in the order first met (an object's members by name); a field
    /// first met later adds a group then.
    pub fn ndjson(input: &'a mut dyn BufRead, fields: &[FieldPath]) -> io::Result<Self> {
        let mut rows = Rows {
            inner: Inner::Json {
                input,
                fields: fields.to_vec(),
                pending: Default::default(),
                line: 1,
                current: Vec::new(),
                current_line: 0,
                found: Vec::new(),
            },
            groups: fields.iter().map(|f| f.name().to_owned()).collect(),
            cells: Vec::new(),
        };
        if fields.is_empty() {
            rows.sample_json()?;
        }
        Ok(rows)
    }

    /// Reads the first rows ahead to learn the groups in the order they first appear.
    fn sample_json(&mut self) -> io::Result<()> {
        let Inner::Json {
            input,
            fields,
            pending,
            line,
            ..
        } = &mut self.inner
        else {
            return Ok(());
        };
        let mut found = Vec::new();
        while pending.len() < SAMPLE {
            let mut buf = Vec::new();
            let at = *line;
            if read_line(&mut **input, &mut buf)? == 0 {
                break;
            }
            *line += 1;
            if let Ok(value) = serde_json::from_slice::<Value>(split_end(&buf).0) {
                found.clear();
                json_cells(&value, fields, &mut found);
                for (name, _, _) in &found {
                    if !self.groups.contains(name) {
                        self.groups.push(name.clone());
                    }
                }
            }
            pending.push_back((buf, at));
        }
        Ok(())
    }

    /// The groups: one per hash column or field, in order.
    pub fn groups(&self) -> &[String] {
        &self.groups
    }

    /// How the rows are laid out.
    pub fn layout(&self) -> Layout {
        match &self.inner {
            Inner::Csv { delimiter, .. } => Layout::Csv {
                delimiter: *delimiter,
            },
            Inner::Json { .. } => Layout::Ndjson,
        }
    }

    /// The next row.
    pub fn next_row(&mut self) -> io::Result<Option<Row<'_>>> {
        match &mut self.inner {
            Inner::Csv {
                records,
                pending,
                header,
                columns,
                current,
                first,
                tail,
                ..
            } => {
                match pending.pop_front() {
                    Some(r) => *current = r,
                    None => {
                        if !records.next(current)? {
                            // What followed the last record (the `\n` of its CRLF, blank or
                            // comment lines) is handed out once, as a row of its own.
                            if current.lead.is_empty() {
                                current.lead = std::mem::take(tail);
                            }
                            if current.lead.is_empty() {
                                return Ok(None);
                            }
                            current.raw.clear();
                            for cell in &mut self.cells {
                                cell.present = false;
                                cell.value.clear();
                            }
                            let lead = std::mem::take(&mut current.lead);
                            current.raw = lead;
                            return Ok(Some(Row {
                                lead: &current.raw,
                                body: b"",
                                end: b"",
                                line: current.line,
                                kind: RowKind::Other,
                                cells: &self.cells,
                                groups: &self.groups,
                            }));
                        }
                    }
                }
                let kind = if std::mem::take(first) && *header {
                    RowKind::Header
                } else {
                    RowKind::Data
                };
                for (cell, &(index, strict)) in self.cells.iter_mut().zip(columns.iter()) {
                    cell.value.clear();
                    let value = current.field(index);
                    cell.present = value.is_some();
                    cell.strict = strict;
                    if let Some(v) = value {
                        let v = trim(v);
                        if !csv::placeholder(v) {
                            cell.value.extend_from_slice(v);
                        }
                    }
                }
                let (body, end) = split_end(&current.raw);
                Ok(Some(Row {
                    lead: &current.lead,
                    body,
                    end,
                    line: current.line,
                    kind,
                    cells: &self.cells,
                    groups: &self.groups,
                }))
            }
            Inner::Json {
                input,
                fields,
                pending,
                line,
                current,
                current_line,
                found,
            } => {
                match pending.pop_front() {
                    Some((buf, at)) => {
                        *current = buf;
                        *current_line = at;
                    }
                    None => {
                        current.clear();
                        *current_line = *line;
                        if read_line(&mut **input, current)? == 0 {
                            return Ok(None);
                        }
                        *line += 1;
                    }
                }
                let (body, end) = split_end(current);
                let parsed = serde_json::from_slice::<Value>(body)
                    .ok()
                    .filter(Value::is_object);
                let kind = if parsed.is_some() {
                    RowKind::Data
                } else {
                    RowKind::Other
                };
                found.clear();
                if let Some(value) = &parsed {
                    json_cells(value, fields, found);
                }
                for (name, _, _) in found.iter() {
                    if !self.groups.contains(name) {
                        self.groups.push(name.clone());
                    }
                }
                self.cells.resize(self.groups.len(), Cell::default());
                for cell in &mut self.cells {
                    cell.present = false;
                    cell.value.clear();
                }
                for (name, value, strict) in found.iter() {
                    if let Some(i) = self.groups.iter().position(|g| g == name) {
                        let cell = &mut self.cells[i];
                        cell.present = true;
                        cell.strict = *strict;
                        cell.value.extend_from_slice(value);
                    }
                }
                Ok(Some(Row {
                    lead: b"",
                    body,
                    end,
                    line: *current_line,
                    kind,
                    cells: &self.cells,
                    groups: &self.groups,
                }))
            }
        }
    }
}

/// The layout `--annotate` reads `part` as (CSV for a plain list: a one-column CSV), from
/// `options` or its content; `Err` names the format it cannot annotate.
pub fn row_layout(
    name: &str,
    head: &[u8],
    options: &ReadOptions,
) -> Result<InputFormat, InputFormat> {
    match super::first_guess(name, head, options) {
        InputFormat::Csv | InputFormat::Lines => Ok(InputFormat::Csv),
        InputFormat::Json => Ok(InputFormat::Json),
        other => Err(other),
    }
}

/// Reads `part` (decoded from UTF-16 when it is) as rows and hands them to `read`. Errors
/// (kind `InvalidInput`) when its layout is not one `--annotate` can write back: free text,
/// XML, a JSON document that is not one object per line is still read line by line.
pub fn read_rows(
    part: Part<'_>,
    options: &ReadOptions,
    read: &mut dyn FnMut(&mut Rows<'_>) -> io::Result<()>,
) -> io::Result<()> {
    let Part {
        name, mut reader, ..
    } = part;
    let (mut decoded, _) = source::decode(&mut *reader)?;
    let head = super::head(&mut decoded, options)?;
    let layout = row_layout(&name, &head, options).map_err(|f| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{name} reads as {}: --annotate writes back CSV/TSV and NDJSON rows only",
                f.name()
            ),
        )
    })?;
    let mut whole = io::BufReader::with_capacity(256 * 1024, io::Cursor::new(head).chain(decoded));
    let mut rows = match layout {
        InputFormat::Json => Rows::ndjson(&mut whole, &options.fields)?,
        _ => Rows::csv(&mut whole, &options.columns, options.keep_all_hex)?,
    };
    read(&mut rows)
}

/// `--field`: reads the values at `fields` of each line's JSON object into `sink` (a value
/// that is not a hash is `invalid`; a line that is not a JSON object too, blank lines aside);
/// returns the number of lines.
pub(crate) fn read_fields(
    input: &mut dyn BufRead,
    fields: &[FieldPath],
    sink: &mut super::Sink<'_>,
) -> io::Result<u64> {
    let mut rows = Rows::ndjson(input, fields)?;
    let mut lines = 0;
    while let Some(row) = rows.next_row()? {
        lines = row.line;
        match row.kind {
            RowKind::Other if !trim(row.body).is_empty() => {
                sink.invalid(row.body, row.line, "not a JSON object");
            }
            RowKind::Other | RowKind::Header => {}
            RowKind::Data => {
                for cell in row.cells.iter().filter(|c| c.present) {
                    if !cell.value.is_empty() && !csv::placeholder(&cell.value) {
                        sink.value(&cell.value, row.line);
                    }
                }
            }
        }
    }
    Ok(lines)
}

/// Reads one line, its `\n` included; 0 at the end.
fn read_line(input: &mut dyn BufRead, buf: &mut Vec<u8>) -> io::Result<usize> {
    input.read_until(b'\n', buf)
}

/// Bytes split before their trailing line terminator (`\r\n`, `\n` or `\r`).
fn split_end(raw: &[u8]) -> (&[u8], &[u8]) {
    let mut cut = raw.len();
    if raw[..cut].ends_with(b"\n") {
        cut -= 1;
    }
    if raw[..cut].ends_with(b"\r") {
        cut -= 1;
    }
    raw.split_at(cut)
}

/// The hash cells of one JSON row: `(group, value, strict)`, by `fields` or by name.
fn json_cells(value: &Value, fields: &[FieldPath], out: &mut Vec<(String, Vec<u8>, bool)>) {
    if fields.is_empty() {
        walk(value, &mut String::new(), out);
        return;
    }
    for field in fields {
        match field.find(value) {
            Some(Value::String(s)) => out.push((field.name().to_owned(), s.trim().into(), true)),
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::String(s) = item {
                        let name = match Hash::parse(s.trim()) {
                            Ok(h) => format!("{}.{}", field.name(), h.kind().as_str()),
                            Err(_) => format!("{}[{i}]", field.name()),
                        };
                        out.push((name, s.trim().into(), true));
                    }
                }
            }
            Some(Value::Null) | None => {}
            Some(other) => out.push((field.name().to_owned(), other.to_string().into(), true)),
        }
    }
}

/// Finds hash fields by name under `value` (see the module doc).
fn walk(value: &Value, path: &mut String, out: &mut Vec<(String, Vec<u8>, bool)>) {
    let Value::Object(map) = value else {
        return;
    };
    for (key, v) in map {
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
        let named = csv::hashy(key) && context::field(key.as_bytes()).is_none();
        match v {
            Value::Object(_) => walk(v, path, out),
            Value::String(s) if named => {
                let s = s.trim();
                if Hash::parse(s).is_ok() {
                    out.push((path.clone(), s.into(), false));
                } else {
                    labelled(s, path, out);
                }
            }
            Value::Array(items) if named => {
                for item in items {
                    if let Value::String(s) = item
                        && let Ok(h) = Hash::parse(s.trim())
                    {
                        let name = format!("{path}.{}", h.kind().as_str());
                        out.push((name, s.trim().into(), false));
                    }
                }
            }
            _ => {}
        }
        path.truncate(len);
    }
}

/// `ALGO=HEX` pairs in one string (Sysmon's `Hashes`), file hashes only.
fn labelled(s: &str, path: &str, out: &mut Vec<(String, Vec<u8>, bool)>) {
    for pair in s.split([',', ';', ' ']) {
        let Some((algo, hex)) = pair.split_once(['=', ':']) else {
            continue;
        };
        let squashed: String = algo
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if matches!(squashed.as_str(), "md5" | "sha1" | "sha256") && Hash::parse(hex.trim()).is_ok()
        {
            out.push((format!("{path}.{}", algo.trim()), hex.trim().into(), false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";
    const MD5: &str = "44d88612fea8a8f36de82e1278abb02f";

    fn rows_of(rows: &mut Rows<'_>) -> Vec<(Vec<u8>, RowKind, Vec<Cell>)> {
        let mut all = Vec::new();
        while let Some(r) = rows.next_row().expect("row") {
            let mut bytes = r.lead.to_vec();
            bytes.extend_from_slice(r.body);
            bytes.extend_from_slice(r.end);
            all.push((bytes, r.kind, r.cells.to_vec()));
        }
        all
    }

    #[test]
    fn csv_rows_come_back_byte_for_byte_with_their_hash_cells() {
        let input = format!(
            "# exported\r\nDeviceId,SHA256,Note,MD5\r\n{},{SHA},\"two\r\nlines, and \"\"quotes\"\"\",{MD5}\r\n\r\nx,,plain,N/A\r\nlast,notahash,,{MD5}",
            "a".repeat(40)
        );
        let mut bytes = input.as_bytes();
        let mut rows = Rows::csv(&mut bytes, &[], false).expect("rows");
        assert_eq!(rows.groups(), ["SHA256", "MD5"]);
        assert_eq!(rows.layout(), Layout::Csv { delimiter: b',' });
        let all = rows_of(&mut rows);
        let joined: Vec<u8> = all.iter().flat_map(|(b, _, _)| b.clone()).collect();
        assert_eq!(String::from_utf8(joined).expect("utf8"), input);
        assert_eq!(all[0].1, RowKind::Header);
        assert_eq!(all[1].2[0].value, SHA.as_bytes());
        assert_eq!(all[1].2[1].value, MD5.as_bytes());
        assert!(all[1].2[0].strict);
        // The placeholder and the empty cell are empty; a bad value is kept (invalid later).
        assert!(all[2].2.iter().all(|c| c.value.is_empty()));
        assert_eq!(all[3].2[0].value, b"notahash");
        assert_eq!(all.len(), 4);
        // A last record ended by CRLF: its `\n` comes back too.
        let crlf = format!("SHA256\r\n{SHA}\r\n");
        let mut bytes = crlf.as_bytes();
        let mut rows = Rows::csv(&mut bytes, &[], false).expect("rows");
        let all = rows_of(&mut rows);
        let joined: Vec<u8> = all.iter().flat_map(|(b, _, _)| b.clone()).collect();
        assert_eq!(joined, crlf.as_bytes());
    }

    #[test]
    fn ndjson_rows_find_edr_and_ecs_hash_fields_by_name() {
        let input = format!(
            concat!(
                r#"{{"DeviceId":"{a}","SHA256":"{s}","InitiatingProcessMD5":"{m}"}}"#,
                "\n",
                r#"{{"process":{{"hash":{{"sha256":"{s}"}},"parent":{{"hash":{{"md5":"{m}"}}}}}}}}"#,
                "\r\n",
                "not json\n",
                r#"{{"process_hash":["{m}","{s}"],"Hashes":"SHA1={h},MD5={m},IMPHASH={m}"}}"#,
            ),
            a = "a".repeat(40),
            s = SHA,
            m = MD5,
            h = "b".repeat(40)
        );
        let mut bytes = input.as_bytes();
        let mut rows = Rows::ndjson(&mut bytes, &[]).expect("rows");
        assert_eq!(
            rows.groups(),
            [
                "InitiatingProcessMD5",
                "SHA256",
                "process.hash.sha256",
                "process.parent.hash.md5",
                "Hashes.SHA1",
                "Hashes.MD5",
                "process_hash.md5",
                "process_hash.sha256",
            ]
        );
        let all = rows_of(&mut rows);
        let joined: Vec<u8> = all.iter().flat_map(|(b, _, _)| b.clone()).collect();
        assert_eq!(joined, input.as_bytes());
        assert_eq!(all[2].1, RowKind::Other);
        let present = |row: usize| -> Vec<usize> {
            (0..all[row].2.len())
                .filter(|&i| all[row].2[i].present)
                .collect()
        };
        assert_eq!(present(0), [0, 1]);
        assert_eq!(present(1), [2, 3]);
        assert_eq!(present(3), [4, 5, 6, 7]);
        assert_eq!(all[3].2[6].value, MD5.as_bytes());
    }

    #[test]
    fn field_paths_take_dots_pointers_and_flattened_keys() {
        let v: Value = serde_json::json!({
            "process": {"hash": {"sha256": "x"}},
            "file.hash.md5": "y",
            "a/b": {"c": "z"},
        });
        let p = |s: &str| s.parse::<FieldPath>().expect("path");
        assert_eq!(p("process.hash.sha256").find(&v), Some(&Value::from("x")));
        assert_eq!(p("/process/hash/sha256").find(&v), Some(&Value::from("x")));
        assert_eq!(p("file.hash.md5").find(&v), Some(&Value::from("y")));
        assert_eq!(p("/a~1b/c").find(&v), Some(&Value::from("z")));
        assert_eq!(p("process.hash.md5").find(&v), None);
        assert!("".parse::<FieldPath>().is_err());
        assert!("a..b".parse::<FieldPath>().is_err());
    }
}
