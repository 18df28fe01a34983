//! `--annotate`: the input's own rows written back, in order and unchanged, with VirusTotal's
//! verdicts appended for each hash column (or NDJSON field) of each row.
//!
//! Two passes. The first is the ordinary run (read, dedup, cache, look up), its records
//! written as NDJSON to a spool; [`JoinTable::load`] keeps of them only what the rows need,
//! one compact entry per unique hash, so memory follows the unique hashes, not the rows. The
//! second pass, [`annotate`], re-reads the inputs as rows ([`vtbulk_ioc::reader::Rows`]) and
//! joins: a CSV row gets its cells appended before its line terminator (quoted as CSV needs,
//! text through the spreadsheet guard), an NDJSON object gets members inserted before its
//! closing brace; every other byte is the input's.
//!
//! Names: with one hash column the appended columns are `{prefix}{field}` (`vt_status`); with
//! several, each column's group is named after it (`SHA256_vt_status`,
//! `InitiatingProcessSHA256_vt_status`). A cell that is empty (or a placeholder such as `N/A`)
//! gets empty cells; one that should hold a hash and does not gets the status `invalid`.

use hashbrown::HashMap;
use std::io::{self, BufRead, Write};

use serde_json::Value;
use vtbulk_ioc::Hash;
use vtbulk_ioc::reader::{Cell, Layout, RowKind, Rows};
use vtbulk_output::{Field, neutralise};

/// Separates values within an entry.
const UNIT: u8 = 0x1f;
/// Separates an entry's CSV cells from its JSON values.
const RECORD: u8 = 0x1e;

/// What `--annotate` appends, and how it names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnotateSpec {
    /// The record fields appended, in order.
    pub fields: Vec<Field>,
    /// The prefix of the appended names (`vt_`).
    pub prefix: String,
}

impl AnnotateSpec {
    /// The fields appended by default.
    pub const DEFAULT_FIELDS: [Field; 5] = [
        Field::Status,
        Field::Malicious,
        Field::EnginesTotal,
        Field::ThreatLabel,
        Field::FirstSubmissionDate,
    ];

    /// The appended name of `field` for the hash column or field `group`: `{prefix}{field}`
    /// when the input has one (`plain`), `{group}_{prefix}{field}` otherwise.
    pub fn name(&self, plain: bool, group: &str, field: Field) -> String {
        if plain {
            format!("{}{}", self.prefix, field.name())
        } else {
            format!("{group}_{}{}", self.prefix, field.name())
        }
    }

    /// The fields the first pass must write for the join: `input` and the appended ones.
    pub fn record_fields(&self) -> Vec<Field> {
        let mut fields = vec![Field::Input];
        fields.extend(self.fields.iter().copied().filter(|f| *f != Field::Input));
        fields
    }
}

/// The first pass's results by hash: per unique hash one byte string holding its CSV cells
/// and its JSON values.
#[derive(Debug, Default)]
pub struct JoinTable {
    map: HashMap<Hash, Box<[u8]>>,
    bytes: usize,
}

impl JoinTable {
    /// Reads the first pass's NDJSON records (written with [`AnnotateSpec::record_fields`]),
    /// keeping `fields` for each record whose `input` is a hash.
    pub fn load(records: &mut dyn BufRead, fields: &[Field]) -> io::Result<JoinTable> {
        let mut table = JoinTable::default();
        let mut line = Vec::new();
        let mut entry = Vec::new();
        loop {
            line.clear();
            if records.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            let Ok(Value::Object(record)) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            let Some(Ok(hash)) = record.get("input").and_then(Value::as_str).map(Hash::parse)
            else {
                continue;
            };
            entry.clear();
            for (i, field) in fields.iter().enumerate() {
                if i > 0 {
                    entry.push(UNIT);
                }
                let value = record.get(field.name()).unwrap_or(&Value::Null);
                let cell = csv_cell(value);
                let cell = if field.is_text() {
                    neutralise(&cell).into_owned()
                } else {
                    cell
                };
                entry.extend(cell.bytes().map(|b| match b {
                    UNIT | RECORD => b' ',
                    b => b,
                }));
            }
            entry.push(RECORD);
            for (i, field) in fields.iter().enumerate() {
                if i > 0 {
                    entry.push(UNIT);
                }
                let value = record.get(field.name()).unwrap_or(&Value::Null);
                serde_json::to_writer(&mut entry, value).map_err(io::Error::other)?;
            }
            table.bytes += entry.len();
            table.map.insert(hash, entry.as_slice().into());
        }
        Ok(table)
    }

    /// Unique hashes held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// About how much memory it holds: the entries' bytes and the map's slots.
    pub fn memory(&self) -> usize {
        self.bytes + self.map.capacity() * (std::mem::size_of::<(Hash, Box<[u8]>)>() + 1)
    }

    /// The entry of `hash`: its CSV cells and its JSON values.
    fn entry(&self, hash: &Hash) -> Option<(&[u8], &[u8])> {
        let e = self.map.get(hash)?;
        let cut = e.iter().position(|&b| b == RECORD)?;
        Some((&e[..cut], &e[cut + 1..]))
    }
}

/// A JSON value as the CSV output writes it: empty for null, lists joined with `;`.
fn csv_cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(";"),
        other => other.to_string(),
    }
}

/// What the second pass wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AnnotateReport {
    /// Rows written (CSV headers and lines passed through included).
    pub rows: u64,
    /// Hash cells joined with a result.
    pub joined: u64,
    /// Cells that should have held a hash and did not (`invalid`).
    pub invalid: u64,
    /// Hash cells with no result (the first pass stopped before them; not expected).
    pub missing: u64,
    /// Unique hashes in the join table.
    pub unique: u64,
    /// About the table's memory, bytes.
    pub table_bytes: u64,
    /// Time spent loading the table, milliseconds.
    pub load_ms: u64,
    /// Time spent on the second pass in all (loading included), milliseconds.
    pub elapsed_ms: u64,
}

/// What one cell joins to.
enum Joined<'t> {
    /// Nothing to say (empty, a placeholder, not a hash where that is allowed).
    Empty,
    /// Not a hash where one was due.
    Invalid,
    /// Found: CSV cells and JSON values.
    Found(&'t [u8], &'t [u8]),
    /// A hash with no result.
    Missing,
}

fn join<'t>(cell: &Cell, table: &'t JoinTable) -> Joined<'t> {
    if !cell.present || cell.value.is_empty() {
        return Joined::Empty;
    }
    match Hash::parse_bytes(&cell.value) {
        Ok(h) => match table.entry(&h) {
            Some((csv, json)) => Joined::Found(csv, json),
            None => Joined::Missing,
        },
        Err(_) if cell.strict => Joined::Invalid,
        Err(_) => Joined::Empty,
    }
}

/// The second pass over one input's rows, state kept across inputs (the first CSV header).
#[derive(Debug, Default)]
pub struct Annotator {
    first_header: Option<Vec<u8>>,
    /// What was written so far.
    pub report: AnnotateReport,
}

impl Annotator {
    /// Writes `rows` annotated from `table` to `out`. A CSV header equal to an earlier
    /// input's is not written again (parts of one export).
    pub fn write(
        &mut self,
        rows: &mut Rows<'_>,
        table: &JoinTable,
        spec: &AnnotateSpec,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        self.report.unique = table.len() as u64;
        self.report.table_bytes = table.memory() as u64;
        match rows.layout() {
            Layout::Csv { delimiter } => self.csv(rows, table, spec, delimiter, out),
            Layout::Ndjson => self.ndjson(rows, table, spec, out),
        }
    }

    fn csv(
        &mut self,
        rows: &mut Rows<'_>,
        table: &JoinTable,
        spec: &AnnotateSpec,
        delim: u8,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        let plain = rows.groups().len() == 1;
        let names: Vec<String> = rows
            .groups()
            .iter()
            .flat_map(|g| spec.fields.iter().map(move |&f| spec.name(plain, g, f)))
            .collect();
        let n = spec.fields.len();
        let status_at = spec.fields.iter().position(|f| *f == Field::Status);
        // Each row is put together here and written at once (one call per row, not per cell).
        let mut line: Vec<u8> = Vec::with_capacity(4096);
        while let Some(row) = rows.next_row()? {
            line.clear();
            if row.kind == RowKind::Header {
                match &self.first_header {
                    Some(h) if h.as_slice() == row.body => continue,
                    Some(_) => {}
                    None => self.first_header = Some(row.body.to_vec()),
                }
            }
            if row.kind != RowKind::Other || !row.body.is_empty() {
                self.report.rows += 1;
            }
            line.extend_from_slice(row.lead);
            line.extend_from_slice(row.body);
            match row.kind {
                RowKind::Header => {
                    for name in &names {
                        line.push(delim);
                        write_csv_cell(&mut line, name.as_bytes(), delim);
                    }
                }
                RowKind::Data => {
                    for cell in row.cells {
                        match join(cell, table) {
                            Joined::Found(cells, _) => {
                                self.report.joined += 1;
                                for c in cells.split(|&b| b == UNIT) {
                                    line.push(delim);
                                    write_csv_cell(&mut line, c, delim);
                                }
                            }
                            other => {
                                let status: &[u8] = match other {
                                    Joined::Invalid => {
                                        self.report.invalid += 1;
                                        b"invalid"
                                    }
                                    Joined::Missing => {
                                        self.report.missing += 1;
                                        b""
                                    }
                                    _ => b"",
                                };
                                for i in 0..n {
                                    line.push(delim);
                                    if Some(i) == status_at {
                                        line.extend_from_slice(status);
                                    }
                                }
                            }
                        }
                    }
                }
                RowKind::Other => {}
            }
            line.extend_from_slice(row.end);
            out.write_all(&line)?;
        }
        Ok(())
    }

    fn ndjson(
        &mut self,
        rows: &mut Rows<'_>,
        table: &JoinTable,
        spec: &AnnotateSpec,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        // One field found in the first rows: plain names for it.
        let plain = rows.groups().len() == 1;
        let status_at = spec.fields.iter().position(|f| *f == Field::Status);
        let invalid: Vec<&[u8]> = (0..spec.fields.len())
            .map(|i| {
                if Some(i) == status_at {
                    &b"\"invalid\""[..]
                } else {
                    b"null"
                }
            })
            .collect();
        let nulls: Vec<&[u8]> = vec![&b"null"[..]; spec.fields.len()];
        let mut key = Vec::new();
        while let Some(row) = rows.next_row()? {
            self.report.rows += 1;
            let close = match row.kind {
                RowKind::Data => row.body.iter().rposition(|&b| b == b'}'),
                _ => None,
            };
            let Some(close) = close else {
                out.write_all(row.body)?;
                out.write_all(row.end)?;
                continue;
            };
            let (front, back) = row.body.split_at(close);
            out.write_all(front)?;
            let mut empty = front
                .iter()
                .rev()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|&b| b == b'{');
            for (g, cell) in row.cells.iter().enumerate() {
                let found: Vec<&[u8]>;
                let values: &[&[u8]] = match join(cell, table) {
                    Joined::Empty => continue,
                    Joined::Found(_, json) => {
                        self.report.joined += 1;
                        found = json.split(|&b| b == UNIT).collect();
                        &found
                    }
                    Joined::Invalid => {
                        self.report.invalid += 1;
                        &invalid
                    }
                    Joined::Missing => {
                        self.report.missing += 1;
                        &nulls
                    }
                };
                for (f, value) in spec.fields.iter().zip(values) {
                    if !empty {
                        out.write_all(b",")?;
                    }
                    empty = false;
                    let name = spec.name(plain && g == 0, &row.groups[g], *f);
                    key.clear();
                    serde_json::to_writer(&mut key, &name).map_err(io::Error::other)?;
                    out.write_all(&key)?;
                    out.write_all(b":")?;
                    out.write_all(value)?;
                }
            }
            out.write_all(back)?;
            out.write_all(row.end)?;
        }
        Ok(())
    }
}

/// Quotes a CSV cell when it holds the delimiter, a quote or a line break.
fn write_csv_cell(out: &mut Vec<u8>, cell: &[u8], delim: u8) {
    if !cell
        .iter()
        .any(|&b| b == delim || b == b'"' || b == b'\n' || b == b'\r')
    {
        out.extend_from_slice(cell);
        return;
    }
    out.push(b'"');
    for part in cell.split_inclusive(|&b| b == b'"') {
        out.extend_from_slice(part);
        if part.ends_with(b"\"") {
            out.push(b'"');
        }
    }
    out.push(b'"');
}
