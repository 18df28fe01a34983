//! Reading IOCs out of inputs: plain lines, a CSV column, or free text; gzip transparently.
//!
//! Synchronous and streaming: memory does not grow with the input (a line longer than
//! [`MAX_LINE`] is reported and skipped, never held whole), and no byte sequence can make it
//! panic (NUL bytes, invalid UTF-8, a BOM and CRLF are all handled). Every item carries its
//! origin (input and 1-based line), so a bad line becomes an `invalid` record that says where.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::str::FromStr;

use crate::{Hash, ParseHashError};

/// Longest line kept in `lines` and `csv` modes; longer ones become one `invalid` item.
pub const MAX_LINE: usize = 1 << 20;

/// How an input is laid out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InputFormat {
    /// Decide from the name (`.csv`, `.tsv`) and the first lines.
    #[default]
    Auto,
    /// One value per line; `#` comments and blank lines skipped; anything else must be a hash.
    Lines,
    /// A CSV column (chosen by `--column`, or the first column that holds hashes).
    Csv,
    /// Free text: every 32/40/64-hex token that is not part of a longer hex run.
    Text,
}

impl FromStr for InputFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(InputFormat::Auto),
            "lines" => Ok(InputFormat::Lines),
            "csv" => Ok(InputFormat::Csv),
            "text" => Ok(InputFormat::Text),
            _ => Err(format!(
                "unknown input format {s:?} (auto, lines, csv, text)"
            )),
        }
    }
}

/// Which CSV column holds the hashes.
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

/// Where an item came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// Index of the input in the list of inputs.
    pub input: u32,
    /// 1-based line (for CSV, the line where the record starts).
    pub line: u64,
}

/// One thing found in an input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A valid hash.
    Hash(Hash, Origin),
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

/// Opens `path` (`-` is stdin), un-gzipping when the content starts with the gzip magic.
pub fn open(path: &str) -> io::Result<Box<dyn BufRead + Send>> {
    let raw: Box<dyn Read + Send> = if path == "-" {
        Box::new(io::stdin())
    } else {
        Box::new(File::open(Path::new(path))?)
    };
    let mut reader = BufReader::with_capacity(256 * 1024, raw);
    let is_gzip = reader.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if is_gzip {
        Box::new(BufReader::with_capacity(
            256 * 1024,
            flate2::bufread::MultiGzDecoder::new(reader),
        ))
    } else {
        Box::new(reader)
    })
}

/// Decides the format of an input from its name and its first buffered bytes: CSV by name
/// (`.csv`, `.tsv`, also gzipped) or by a delimiter on the first line; `lines` when at least
/// 80% of the first 50 non-comment lines are a single token (an IOC list with a stray note
/// still reports the note as invalid); free text otherwise.
pub fn sniff(name: &str, head: &[u8]) -> InputFormat {
    let lower = name.to_ascii_lowercase();
    let base = lower.strip_suffix(".gz").unwrap_or(&lower);
    if base.ends_with(".csv") || base.ends_with(".tsv") {
        return InputFormat::Csv;
    }
    let head = strip_bom(head);
    let (mut lines, mut single) = (0usize, 0usize);
    for (i, line) in head.split(|&b| b == b'\n').take(50).enumerate() {
        let line = trim(line);
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        if lines == 0
            && i < 50
            && (line.contains(&b',') || line.contains(&b';') || line.contains(&b'\t'))
        {
            return InputFormat::Csv;
        }
        lines += 1;
        single += usize::from(!line.iter().any(|b| b.is_ascii_whitespace()));
    }
    if lines == 0 || single * 5 >= lines * 4 {
        InputFormat::Lines
    } else {
        InputFormat::Text
    }
}

fn strip_bom(b: &[u8]) -> &[u8] {
    b.strip_prefix(b"\xef\xbb\xbf").unwrap_or(b)
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

fn shown(value: &[u8]) -> String {
    let cut = &value[..value.len().min(100)];
    String::from_utf8_lossy(cut).into_owned()
}

fn invalid(value: &[u8], origin: Origin, reason: impl Into<String>) -> Item {
    Item::Invalid {
        value: shown(value),
        origin,
        reason: reason.into(),
    }
}

fn reason(e: &ParseHashError) -> String {
    e.to_string()
}

/// Calls `f(line, cut)` for every line (without its `\n`), keeping at most `MAX_LINE` bytes of
/// each (`cut` says a line was longer). Lines that lie whole in the reader's buffer are passed
/// without a copy: this is the hot path of every run.
fn for_each_line(input: &mut dyn BufRead, f: &mut dyn FnMut(&[u8], bool)) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    let mut cut = false;
    loop {
        let available = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            if !buf.is_empty() || cut {
                f(&buf, cut);
            }
            return Ok(());
        }
        let mut start = 0;
        // Whole lines in the buffer: no copy.
        if buf.is_empty() && !cut {
            while let Some(i) = memchr::memchr(b'\n', &available[start..]) {
                let line = &available[start..start + i];
                if line.len() > MAX_LINE {
                    f(&line[..MAX_LINE], true);
                } else {
                    f(line, false);
                }
                start += i + 1;
            }
        } else if let Some(i) = memchr::memchr(b'\n', available) {
            // The end of a line that began in an earlier buffer.
            let room = MAX_LINE.saturating_sub(buf.len());
            cut |= i > room;
            buf.extend_from_slice(&available[..i.min(room)]);
            f(&buf, cut);
            buf.clear();
            cut = false;
            start = i + 1;
            let n = start;
            input.consume(n);
            continue;
        }
        // A partial line at the end of the buffer: keep (up to MAX_LINE of) it.
        let rest = &available[start..];
        let room = MAX_LINE.saturating_sub(buf.len());
        cut |= rest.len() > room;
        buf.extend_from_slice(&rest[..rest.len().min(room)]);
        let n = available.len();
        input.consume(n);
    }
}

/// Reads `lines` format, calling `emit` for every hash and invalid value.
pub fn read_lines(
    input: &mut dyn BufRead,
    index: u32,
    emit: &mut dyn FnMut(Item),
) -> io::Result<u64> {
    let mut line_no = 0u64;
    for_each_line(input, &mut |raw, cut| {
        line_no += 1;
        let origin = Origin {
            input: index,
            line: line_no,
        };
        let mut value = trim(raw);
        if line_no == 1 {
            value = trim(strip_bom(value));
        }
        if cut {
            emit(invalid(
                value,
                origin,
                format!("line longer than {MAX_LINE} bytes"),
            ));
            return;
        }
        if value.is_empty() || value.starts_with(b"#") {
            return;
        }
        match Hash::parse_bytes(value) {
            Ok(h) => emit(Item::Hash(h, origin)),
            Err(e) => emit(invalid(value, origin, reason(&e))),
        }
    })?;
    Ok(line_no)
}

/// Extracts every 32/40/64-hex token that is not part of a longer hex run, from any bytes.
/// A streaming scanner: constant memory whatever the line length.
pub fn read_text(
    input: &mut dyn BufRead,
    index: u32,
    emit: &mut dyn FnMut(Item),
) -> io::Result<u64> {
    let mut run = [0u8; 64];
    let mut run_len = 0usize; // hex digits in the current run (counts past 64)
    let mut line = 1u64;
    let mut run_line = 1u64;
    let mut seen_any = false;
    let mut last_newline = false;
    let flush = |run: &[u8; 64], run_len: usize, run_line: u64, emit: &mut dyn FnMut(Item)| {
        if matches!(run_len, 32 | 40 | 64)
            && let Ok(h) = Hash::parse_bytes(&run[..run_len])
        {
            emit(Item::Hash(
                h,
                Origin {
                    input: index,
                    line: run_line,
                },
            ));
        }
    };
    loop {
        let available = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            flush(&run, run_len, run_line, emit);
            return Ok(if !seen_any {
                0
            } else if last_newline {
                line - 1
            } else {
                line
            });
        }
        seen_any = true;
        for &b in available {
            if b.is_ascii_hexdigit() {
                if run_len == 0 {
                    run_line = line;
                }
                if run_len < 64 {
                    run[run_len] = b;
                }
                run_len = run_len.saturating_add(1);
            } else {
                if run_len > 0 {
                    flush(&run, run_len, run_line, emit);
                    run_len = 0;
                }
                if b == b'\n' {
                    line += 1;
                }
            }
        }
        let n = available.len();
        last_newline = available[n - 1] == b'\n';
        input.consume(n);
    }
}

/// Reads `csv` format: the chosen column of every record; a header is detected when the first
/// record has no hash in it.
pub fn read_csv(
    input: &mut dyn BufRead,
    index: u32,
    column: Option<&Column>,
    emit: &mut dyn FnMut(Item),
) -> io::Result<u64> {
    let mut head = input.fill_buf()?;
    head = strip_bom(head);
    let delimiter = detect_delimiter(head);
    let bom = input.fill_buf()?.starts_with(b"\xef\xbb\xbf");
    if bom {
        input.consume(3);
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .buffer_capacity(64 * 1024)
        .from_reader(input);
    let mut record = csv::ByteRecord::new();
    let mut chosen: Option<usize> = None;
    let mut first = true;
    let mut line_count = 0u64;
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => return Ok(reader.position().line().saturating_sub(1).max(line_count)),
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                emit(Item::Invalid {
                    value: String::new(),
                    origin: Origin { input: index, line },
                    reason: format!("unreadable CSV record: {e}"),
                });
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    return Err(io::Error::other(e.to_string()));
                }
                continue;
            }
        }
        let line = record.position().map_or(0, |p| p.line());
        line_count = line;
        let origin = Origin { input: index, line };
        if first {
            first = false;
            let cells: Vec<&[u8]> = record.iter().map(trim).collect();
            let is_header = !cells.iter().any(|c| Hash::parse_bytes(c).is_ok());
            chosen = match column {
                Some(Column::Index(n)) => Some(n - 1),
                Some(Column::Name(name)) => {
                    if !is_header {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("--column {name:?}: the CSV has no header row"),
                        ));
                    }
                    let found = cells
                        .iter()
                        .position(|c| String::from_utf8_lossy(c).eq_ignore_ascii_case(name));
                    match found {
                        Some(i) => Some(i),
                        None => {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidInput,
                                format!(
                                    "--column {name:?}: no such column (the header has {})",
                                    cells
                                        .iter()
                                        .map(|c| String::from_utf8_lossy(c).into_owned())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            ));
                        }
                    }
                }
                None if is_header => cells.iter().position(|c| {
                    let c = String::from_utf8_lossy(c).to_ascii_lowercase();
                    [
                        "sha256",
                        "sha1",
                        "md5",
                        "hash",
                        "sha-256",
                        "sha-1",
                        "filehash",
                        "file_hash",
                    ]
                    .iter()
                    .any(|n| c == *n || c.ends_with(n))
                }),
                None => cells.iter().position(|c| Hash::parse_bytes(c).is_ok()),
            };
            if is_header {
                if chosen.is_none() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "no column looks like hashes; choose one with --column NAME|INDEX",
                    ));
                }
                continue;
            }
        }
        let Some(col) = chosen else {
            // No header and no hash in the first record: nothing identifies the column.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no column looks like hashes; choose one with --column NAME|INDEX",
            ));
        };
        let value = record.get(col).map(trim).unwrap_or(b"");
        if value.is_empty() || value.starts_with(b"#") {
            continue;
        }
        match Hash::parse_bytes(value) {
            Ok(h) => emit(Item::Hash(h, origin)),
            Err(e) => emit(invalid(value, origin, reason(&e))),
        }
    }
}

fn detect_delimiter(head: &[u8]) -> u8 {
    let first = head.split(|&b| b == b'\n').next().unwrap_or(b"");
    let count = |d: u8| first.iter().filter(|&&b| b == d).count();
    [b',', b'\t', b';', b'|']
        .into_iter()
        .max_by_key(|&d| count(d))
        .filter(|&d| count(d) > 0)
        .unwrap_or(b',')
}

/// Reads one input in `format` (resolving `Auto` first), calling `emit` for each item.
/// Returns the format used and the number of lines read.
pub fn read_input(
    name: &str,
    input: &mut dyn BufRead,
    index: u32,
    format: InputFormat,
    column: Option<&Column>,
    emit: &mut dyn FnMut(Item),
) -> io::Result<(InputFormat, u64)> {
    let format = match format {
        InputFormat::Auto if column.is_some() => InputFormat::Csv,
        InputFormat::Auto => sniff(name, input.fill_buf()?),
        f => f,
    };
    let lines = match format {
        InputFormat::Lines | InputFormat::Auto => read_lines(input, index, emit)?,
        InputFormat::Csv => read_csv(input, index, column, emit)?,
        InputFormat::Text => read_text(input, index, emit)?,
    };
    Ok((format, lines))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD5: &str = "44d88612fea8a8f36de82e1278abb02f";
    const SHA1: &str = "3395856ce81f2b7382dee72602f798b642f14140";
    const SHA256: &str = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";

    fn collect(format: InputFormat, column: Option<Column>, bytes: &[u8]) -> Vec<Item> {
        let mut items = Vec::new();
        let mut input: &[u8] = bytes;
        read_input("x", &mut input, 0, format, column.as_ref(), &mut |i| {
            items.push(i)
        })
        .expect("reads");
        items
    }

    fn hashes(items: &[Item]) -> Vec<(String, u64)> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Hash(h, o) => Some((h.to_string(), o.line)),
                _ => None,
            })
            .collect()
    }

    fn invalids(items: &[Item]) -> Vec<(u64, String)> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Invalid { origin, reason, .. } => Some((origin.line, reason.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn lines_skip_comments_and_blanks_and_report_bad_values_with_their_line() {
        let text = format!(
            "\u{feff}# header\r\n{MD5}\r\n\r\n  {}  \n{}\nnot-a-hash\n",
            SHA1.to_uppercase(),
            &SHA256[..63]
        );
        let items = collect(InputFormat::Lines, None, text.as_bytes());
        assert_eq!(hashes(&items), [(MD5.to_owned(), 2), (SHA1.to_owned(), 4)]);
        let bad = invalids(&items);
        assert_eq!(
            bad[0],
            (5, "63 hex digits (a hash has 32, 40 or 64)".to_owned())
        );
        assert_eq!(bad[1].0, 6);
        assert!(bad[1].1.starts_with("not hex"));
    }

    #[test]
    fn a_bom_on_the_first_line_is_not_part_of_the_hash() {
        let text = format!("\u{feff}{MD5}\n");
        assert_eq!(
            hashes(&collect(InputFormat::Lines, None, text.as_bytes())).len(),
            1
        );
    }

    #[test]
    fn nul_bytes_and_invalid_utf8_are_invalid_values_not_panics() {
        let bytes = b"ab\x00cd\n\xff\xfe\xfd\n".to_vec();
        let items = collect(InputFormat::Lines, None, &bytes);
        assert_eq!(invalids(&items).len(), 2);
        let items = collect(InputFormat::Text, None, &bytes);
        assert!(items.is_empty());
    }

    #[test]
    fn an_overlong_line_is_one_invalid_item_and_reading_goes_on() {
        let mut bytes = vec![b'a'; MAX_LINE + 10];
        bytes.push(b'\n');
        bytes.extend_from_slice(MD5.as_bytes());
        let items = collect(InputFormat::Lines, None, &bytes);
        assert_eq!(hashes(&items), [(MD5.to_owned(), 2)]);
        assert!(invalids(&items)[0].1.starts_with("line longer than"));
    }

    #[test]
    fn text_finds_hashes_in_prose_but_not_inside_longer_hex_runs() {
        let text = format!(
            "Report: dropper {MD5} wrote ({SHA1}) and\n\"sha256\": \"{SHA256}\", not {SHA256}00 or x{MD5}y\n0x{}",
            &SHA256[..40]
        );
        let items = collect(InputFormat::Text, None, text.as_bytes());
        assert_eq!(
            hashes(&items),
            [
                (MD5.to_owned(), 1),
                (SHA1.to_owned(), 1),
                (SHA256.to_owned(), 2),
                (MD5.to_owned(), 2),
                (SHA256[..40].to_owned(), 3)
            ]
        );
    }

    #[test]
    fn lines_split_across_reader_buffers_are_reassembled() {
        let text = format!("{MD5}\r\n# c\n{SHA256}\nbad\n{SHA1}");
        for capacity in [1, 7, 33, 64] {
            let mut input = std::io::BufReader::with_capacity(capacity, text.as_bytes());
            let mut items = Vec::new();
            let lines = read_lines(&mut input, 0, &mut |i| items.push(i)).expect("reads");
            assert_eq!(lines, 5, "capacity {capacity}");
            assert_eq!(
                hashes(&items),
                [
                    (MD5.to_owned(), 1),
                    (SHA256.to_owned(), 3),
                    (SHA1.to_owned(), 5)
                ],
                "capacity {capacity}"
            );
            assert_eq!(invalids(&items).len(), 1);
        }
    }

    #[test]
    fn text_scans_a_huge_line_in_constant_memory() {
        let mut bytes = vec![b' '; 3 * MAX_LINE];
        bytes.extend_from_slice(MD5.as_bytes());
        let items = collect(InputFormat::Text, None, &bytes);
        assert_eq!(hashes(&items), [(MD5.to_owned(), 1)]);
    }

    #[test]
    fn csv_finds_the_hash_column_by_header_and_by_choice() {
        let text = format!(
            "host,SHA256,user\nh1,{SHA256},alice\nh2,\"{}\",bob\nh3,oops,carol\n",
            SHA256.to_uppercase()
        );
        let items = collect(InputFormat::Csv, None, text.as_bytes());
        assert_eq!(
            hashes(&items),
            [(SHA256.to_owned(), 2), (SHA256.to_owned(), 3)]
        );
        assert_eq!(invalids(&items)[0].0, 4);
        let items = collect(InputFormat::Csv, Some(Column::Index(2)), text.as_bytes());
        assert_eq!(hashes(&items).len(), 2);
        let text = format!("a;b\nx;{MD5}\n");
        let items = collect(
            InputFormat::Csv,
            Some(Column::Name("B".into())),
            text.as_bytes(),
        );
        assert_eq!(hashes(&items), [(MD5.to_owned(), 2)]);
    }

    #[test]
    fn csv_without_a_header_uses_the_first_column_holding_a_hash() {
        let text = format!("h1,{MD5}\nh2,{SHA1}\n");
        let items = collect(InputFormat::Csv, None, text.as_bytes());
        assert_eq!(hashes(&items), [(MD5.to_owned(), 1), (SHA1.to_owned(), 2)]);
    }

    #[test]
    fn each_format_counts_the_lines_it_read() {
        let count = |f, b: &[u8]| {
            let mut input: &[u8] = b;
            read_input("x", &mut input, 0, f, None, &mut |_| {})
                .expect("reads")
                .1
        };
        assert_eq!(count(InputFormat::Lines, b"a\nb\n\nc"), 4);
        assert_eq!(count(InputFormat::Text, b"a\nb\n"), 2);
        assert_eq!(count(InputFormat::Text, b"a\nb"), 2);
        let csv = format!("sha256\n{MD5}\n{MD5}\n");
        assert_eq!(count(InputFormat::Csv, csv.as_bytes()), 3);
        assert_eq!(count(InputFormat::Lines, b""), 0);
    }

    #[test]
    fn auto_picks_the_format_from_name_and_content() {
        assert_eq!(sniff("edr.csv.gz", b""), InputFormat::Csv);
        assert_eq!(
            sniff("x", format!("# c\n{MD5}\n{SHA1}\n").as_bytes()),
            InputFormat::Lines
        );
        assert_eq!(
            sniff("x", b"The dropper 44d8 was seen\n"),
            InputFormat::Text
        );
        assert_eq!(sniff("x", b"a,b\n1,2\n"), InputFormat::Csv);
    }

    #[test]
    fn gzip_inputs_are_read_transparently() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("vtbulk-ioc-gz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("list.txt.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(format!("{MD5}\n{SHA1}\n").as_bytes())
            .expect("gzip");
        std::fs::write(&path, gz.finish().expect("gzip")).expect("write");
        let mut input = open(path.to_str().expect("utf8")).expect("open");
        let mut items = Vec::new();
        read_input(
            "list.txt.gz",
            &mut *input,
            0,
            InputFormat::Auto,
            None,
            &mut |i| items.push(i),
        )
        .expect("read");
        assert_eq!(hashes(&items).len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
