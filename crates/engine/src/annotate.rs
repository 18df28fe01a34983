//! `--annotate`: the input's own rows written back, in order and unchanged, with VirusTotal's
//! verdicts appended for each hash column (or NDJSON field) of each row.
//!
//! Two passes. The first is the ordinary run (read, dedup, cache, look up), its records
//! written as NDJSON to a spool; [`JoinTable::load`] keeps of them only what the rows need,
//! one compact entry per unique hash, so memory follows the unique hashes, not the rows. The
//! second pass, [`Annotator`], re-reads the inputs as rows ([`vtbulk_ioc::reader::Rows`]) and
//! joins: a CSV row gets its cells appended before its line terminator (quoted as CSV needs,
//! text through the spreadsheet guard), an NDJSON object gets members inserted before its
//! closing brace; every other byte is the input's.
//!
//! Names: with one hash column the appended columns are `{prefix}{field}` (`vt_status`); with
//! several, each column's group is named after it (`SHA256_vt_status`,
//! `InitiatingProcessSHA256_vt_status`). A cell that is empty (or a placeholder such as `N/A`)
//! gets empty cells; one that should hold a hash and does not gets the status `invalid`.

use std::io::{self, BufRead, Write};

use serde_json::Value;
use vtbulk_ioc::Hash;
use vtbulk_ioc::dedup::{fingerprint, home};
use vtbulk_ioc::reader::{Cell, Layout, RowKind, Rows};
use vtbulk_ioc::table::Table;
use vtbulk_output::{Field, neutralise};

/// Separates values within an entry's CSV cells and within its JSON values.
const UNIT: u8 = 0x1f;

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

/// The first pass's results by hash, laid out for the join's millions of random look-ups.
///
/// One arena of entries (each: kind, digest, CSV cells, JSON values; 8-aligned) and an
/// open-addressing table of 8-byte slots (`fingerprint << 32 | entry offset / 8 + 1`, at most
/// half full, homes by the fingerprint's top bits) pointing into it. A look-up touches one slot
/// and one entry, both in huge pages once large ([`Table`]), so a cell costs one or two cache
/// misses and no TLB walk; a row's cells are touched together before they are used
/// (`JoinTable::touch`) so their misses overlap. Fingerprints and homes are the dedup
/// table's ([`vtbulk_ioc::dedup::fingerprint`]).
#[derive(Debug, Default)]
pub struct JoinTable {
    slots: Table<u64>,
    arena: Table<u8>,
    len: usize,
}

/// An entry's head: kind code, digest length, [`PLAIN`] flag, a spare byte, CSV length, JSON
/// length.
const HEAD: usize = 12;

/// An entry whose CSV cells hold no quote, line break or delimiter (tab, comma, semicolon,
/// bar): written as they are, separators set to the row's delimiter, with no cell to scan.
const PLAIN: u8 = 1;

/// The delimiters a CSV input may have (the reader's sniffer's).
fn common_delimiter(delim: u8) -> bool {
    matches!(delim, b'\t' | b',' | b';' | b'|')
}

impl JoinTable {
    /// Reads the first pass's NDJSON records (written with [`AnnotateSpec::record_fields`]),
    /// keeping `fields` for each record whose `input` is a hash.
    pub fn load(records: &mut dyn BufRead, fields: &[Field]) -> io::Result<JoinTable> {
        let mut arena: Vec<u8> = Vec::new();
        let mut keys: Vec<(u32, usize)> = Vec::new();
        let mut line = Vec::new();
        let mut csv = Vec::new();
        let mut json = Vec::new();
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
            csv.clear();
            json.clear();
            for (i, field) in fields.iter().enumerate() {
                if i > 0 {
                    csv.push(UNIT);
                    json.push(UNIT);
                }
                let value = record.get(field.name()).unwrap_or(&Value::Null);
                let cell = csv_cell(value);
                let cell = if field.is_text() {
                    neutralise(&cell).into_owned()
                } else {
                    cell
                };
                csv.extend(cell.bytes().map(|b| match b {
                    UNIT => b' ',
                    b => b,
                }));
                serde_json::to_writer(&mut json, value).map_err(io::Error::other)?;
            }
            let at = arena.len();
            if at / 8 + 1 > u32::MAX as usize {
                // A slot holds an entry's offset in 8-byte units in 32 bits: 32 GiB of results.
                return Err(io::Error::other(
                    "more results than --annotate can join at once (32 GiB); split the input",
                ));
            }
            let digest = hash.as_bytes();
            let plain = !csv
                .iter()
                .any(|&b| matches!(b, b'"' | b'\n' | b'\r') || common_delimiter(b));
            arena.push(hash.kind().code());
            arena.push(digest.len() as u8);
            arena.extend_from_slice(&[if plain { PLAIN } else { 0 }, 0]);
            arena.extend_from_slice(&(csv.len() as u32).to_le_bytes());
            arena.extend_from_slice(&(json.len() as u32).to_le_bytes());
            arena.extend_from_slice(digest);
            arena.extend_from_slice(&csv);
            arena.extend_from_slice(&json);
            arena.resize(arena.len().next_multiple_of(8), 0);
            keys.push((fingerprint(&hash), at));
        }
        Ok(JoinTable::build(&arena, &keys))
    }

    /// The table over `arena`'s entries (a later entry of the same hash replaces the earlier).
    fn build(arena: &[u8], keys: &[(u32, usize)]) -> JoinTable {
        let mut table = JoinTable {
            slots: Table::zeroed((keys.len() * 2).next_power_of_two().max(64)),
            arena: Table::zeroed(arena.len()),
            len: 0,
        };
        table.arena.copy_from_slice(arena);
        let mask = table.slots.len() - 1;
        for &(fp, at) in keys {
            let slot = (u64::from(fp) << 32) | (at / 8 + 1) as u64;
            let mut i = home(fp, table.slots.len());
            loop {
                let old = table.slots[i];
                if old == 0 {
                    table.slots[i] = slot;
                    table.len += 1;
                    break;
                }
                if (old >> 32) as u32 == fp && table.key_at(old) == table.key_at(slot) {
                    table.slots[i] = slot;
                    break;
                }
                i = (i + 1) & mask;
            }
        }
        table
    }

    /// The kind code and digest of the entry a slot points to.
    fn key_at(&self, slot: u64) -> (u8, &[u8]) {
        let at = ((slot as u32 - 1) as usize) * 8;
        let len = usize::from(self.arena[at + 1]);
        (self.arena[at], &self.arena[at + HEAD..at + HEAD + len])
    }

    /// Unique hashes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// About how much memory it holds: the arena's and the slots' bytes.
    pub fn memory(&self) -> usize {
        self.slots.resident_bytes() + self.arena.resident_bytes()
    }

    /// The entry of `hash` (whose fingerprint is `fp`): its CSV cells, its JSON values and
    /// whether its cells are plain.
    fn entry(&self, hash: &Hash, fp: u32) -> Option<(&[u8], &[u8], bool)> {
        if self.len == 0 {
            return None;
        }
        let want = (hash.kind().code(), hash.as_bytes());
        let mask = self.slots.len() - 1;
        let mut i = home(fp, self.slots.len());
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                return None;
            }
            if (slot >> 32) as u32 == fp && self.key_at(slot) == want {
                let at = ((slot as u32 - 1) as usize) * 8;
                let word = |o: usize| {
                    let mut b = [0u8; 4];
                    b.copy_from_slice(&self.arena[at + o..at + o + 4]);
                    u32::from_le_bytes(b) as usize
                };
                let (csv, json) = (word(4), word(8));
                let start = at + HEAD + want.1.len();
                return Some((
                    &self.arena[start..start + csv],
                    &self.arena[start + csv..start + csv + json],
                    self.arena[at + 2] == PLAIN,
                ));
            }
            i = (i + 1) & mask;
        }
    }

    /// Touches the slot and the first entry each of a row's hash cells will read, all before
    /// any is used, so that their cache misses overlap instead of following one another.
    fn touch(&self, parsed: &[Parsed]) {
        if self.len == 0 {
            return;
        }
        let len = self.slots.len();
        let mut touched = 0u64;
        for p in parsed {
            if let Parsed::Hash(_, fp) = p {
                touched ^= self.slots[home(*fp, len)];
            }
        }
        for p in parsed {
            if let Parsed::Hash(_, fp) = p {
                let slot = self.slots[home(*fp, len)];
                if slot != 0 {
                    let at = ((slot as u32 - 1) as usize) * 8;
                    touched ^= u64::from(self.arena[at + HEAD]);
                }
            }
        }
        std::hint::black_box(touched);
    }
}

/// What a hash cell holds, parsed once per row: nothing, a hash (with its fingerprint), or
/// something else.
#[derive(Clone, Copy)]
enum Parsed {
    Empty,
    Hash(Hash, u32),
    Other,
}

impl Parsed {
    fn of(cell: &Cell) -> Parsed {
        if !cell.present || cell.value.is_empty() {
            return Parsed::Empty;
        }
        match Hash::parse_bytes(&cell.value) {
            Ok(h) => Parsed::Hash(h, fingerprint(&h)),
            Err(_) => Parsed::Other,
        }
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
    /// Found: CSV cells, JSON values, and whether the cells are plain ([`PLAIN`]).
    Found(&'t [u8], &'t [u8], bool),
    /// A hash with no result.
    Missing,
}

/// What `cell` (parsed as `parsed`) joins to in `table`.
fn join<'t>(cell: &Cell, parsed: Parsed, table: &'t JoinTable) -> Joined<'t> {
    match parsed {
        Parsed::Empty => Joined::Empty,
        Parsed::Hash(h, fp) => match table.entry(&h, fp) {
            Some((csv, json, plain)) => Joined::Found(csv, json, plain),
            None => Joined::Missing,
        },
        Parsed::Other if cell.strict => Joined::Invalid,
        Parsed::Other => Joined::Empty,
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
        // Rows are put together here and written a batch at a time (one call per batch, not
        // per cell).
        let mut line: Vec<u8> = Vec::with_capacity(BATCH_BYTES + 4096);
        let fast = common_delimiter(delim);
        let mut parsed: Vec<Parsed> = Vec::new();
        while let Some(row) = rows.next_row()? {
            if line.len() >= BATCH_BYTES {
                out.write_all(&line)?;
                line.clear();
            }
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
                    parsed.clear();
                    parsed.extend(row.cells.iter().map(Parsed::of));
                    table.touch(&parsed);
                    for (cell, &p) in row.cells.iter().zip(&parsed) {
                        match join(cell, p, table) {
                            Joined::Found(cells, _, true) if fast => {
                                self.report.joined += 1;
                                line.push(delim);
                                let start = line.len();
                                line.extend_from_slice(cells);
                                for b in &mut line[start..] {
                                    if *b == UNIT {
                                        *b = delim;
                                    }
                                }
                            }
                            Joined::Found(cells, _, _) => {
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
        }
        out.write_all(&line)
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
                let values: &[&[u8]] = match join(cell, Parsed::of(cell), table) {
                    Joined::Empty => continue,
                    Joined::Found(_, json, _) => {
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

/// Bytes of rows gathered before they are written.
const BATCH_BYTES: usize = 64 * 1024;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(seed: u64, len: usize) -> String {
        let mut s = String::new();
        let mut x = seed;
        while s.len() < len {
            x = vtbulk_rng::mix64(x.wrapping_add(0x9e37_79b9_7f4a_7c15));
            s.push_str(&format!("{x:016x}"));
        }
        s.truncate(len);
        s
    }

    #[test]
    fn every_loaded_hash_finds_its_own_entry_and_no_other() {
        let fields = [Field::Status, Field::Malicious, Field::ThreatLabel];
        let mut spool = Vec::new();
        let mut hashes = Vec::new();
        for i in 0..5000u64 {
            // Every kind, in both cases; a label with a comma and a quote in it.
            let h = hex(i, [32, 40, 64][(i % 3) as usize]);
            let input = if i % 7 == 0 {
                h.to_uppercase()
            } else {
                h.clone()
            };
            let record = serde_json::json!({
                "input": input, "status": "ok", "malicious": i,
                "threat_label": format!("trojan,x\"{i}"),
            });
            spool.extend_from_slice(record.to_string().as_bytes());
            spool.push(b'\n');
            hashes.push(h);
        }
        // Lines the table must pass over: not JSON, no input, an input that is not a hash.
        spool.extend_from_slice(b"garbage\n{\"status\":\"ok\"}\n{\"input\":\"evil.example\"}\n");
        // A later record of the same hash replaces the earlier.
        let again = serde_json::json!({"input": hashes[3], "status": "error", "malicious": null});
        spool.extend_from_slice(format!("{again}\n").as_bytes());
        let table = JoinTable::load(&mut spool.as_slice(), &fields).expect("loads");
        assert_eq!(table.len(), 5000);
        for (i, h) in hashes.iter().enumerate() {
            let hash = Hash::parse(h).expect("a hash");
            let (csv, json, plain) = table.entry(&hash, fingerprint(&hash)).expect("found");
            let cells: Vec<&[u8]> = csv.split(|&b| b == UNIT).collect();
            let values: Vec<&[u8]> = json.split(|&b| b == UNIT).collect();
            // Only cells with no quote, line break or delimiter are plain.
            assert_eq!(plain, i == 3, "entry {i}");
            if i == 3 {
                assert_eq!(cells, [&b"error"[..], b"", b""]);
                assert_eq!(values, [&b"\"error\""[..], b"null", b"null"]);
                continue;
            }
            let label = format!("trojan,x\"{i}");
            assert_eq!(
                cells,
                [&b"ok"[..], i.to_string().as_bytes(), label.as_bytes()]
            );
            assert_eq!(values[1], i.to_string().as_bytes());
        }
        for i in 5000..6000u64 {
            let unknown = Hash::parse(&hex(i, 64)).expect("a hash");
            assert!(table.entry(&unknown, fingerprint(&unknown)).is_none());
        }
        let first = Hash::parse(&hashes[0]).expect("a hash");
        assert!(
            JoinTable::default()
                .entry(&first, fingerprint(&first))
                .is_none()
        );
    }

    #[test]
    fn plain_and_quoted_entries_are_written_the_same_for_every_delimiter() {
        let fields = [Field::Status, Field::ThreatLabel, Field::Malicious];
        let sha = |i: u64| hex(i, 64);
        // Labels that need no quoting anywhere, and ones that need it under some delimiter.
        let labels = [
            "trojan.x/y",
            "a,b",
            "a;b",
            "a|b",
            "a\tb",
            "say \"hi\"",
            "two\nlines",
            "",
        ];
        let mut spool = Vec::new();
        for (i, label) in labels.iter().enumerate() {
            let record = serde_json::json!({
                "input": sha(i as u64), "status": "ok", "threat_label": label, "malicious": i,
            });
            spool.extend_from_slice(format!("{record}\n").as_bytes());
        }
        let table = JoinTable::load(&mut spool.as_slice(), &fields).expect("loads");
        let spec = AnnotateSpec {
            fields: fields.to_vec(),
            prefix: "vt_".into(),
        };
        for delim in [b',', b';', b'\t', b'|'] {
            let d = char::from(delim);
            let mut input = format!("name{d}sha256\n");
            for i in 0..labels.len() as u64 {
                input.push_str(&format!("f{i}{d}{}\n", sha(i)));
            }
            let part = vtbulk_ioc::reader::Part::from_bytes("rows.csv", input.into_bytes());
            let options = vtbulk_ioc::reader::ReadOptions::default();
            let mut out = Vec::new();
            vtbulk_ioc::reader::read_rows(part, &options, &mut |rows| {
                Annotator::default().write(rows, &table, &spec, &mut out)
            })
            .expect("annotates");
            let rows: Vec<csv::StringRecord> = csv::ReaderBuilder::new()
                .delimiter(delim)
                .from_reader(out.as_slice())
                .records()
                .map(|r| r.expect("valid CSV"))
                .collect();
            assert_eq!(rows.len(), labels.len(), "delimiter {d:?}");
            for (i, (row, label)) in rows.iter().zip(labels).enumerate() {
                let want = ["ok".to_string(), label.to_string(), i.to_string()];
                let got: Vec<&str> = row.iter().skip(2).collect();
                assert_eq!(got, want, "delimiter {d:?}, row {i}");
            }
        }
    }
}
