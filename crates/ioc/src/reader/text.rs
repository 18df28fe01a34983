//! Free text: every 32, 40 or 64 hex-digit token that is not part of a longer hex run, judged
//! by the words in front of it ([`crate::context::before`]); and, when `--kinds` takes them,
//! the URLs, domains and IP addresses of each line ([`super::indicators`]).
//!
//! The scanner streams: it keeps the current run of hex digits (at most 64 of them matter)
//! and the last [`HISTORY`] bytes of the previous buffer, so a token's context is there even
//! when the token straddles two reads, and memory stays constant whatever the line length.
//! It also keeps the table rows that end a buffer (at most [`ABOVE`] bytes), so that a pipe
//! table's header judges its column's values whatever the reads' sizes (a gzip member's are
//! 32 KiB).
//! The same scan reads one value of a structured input ([`scan_value`]): a JSON string, an XML
//! text node, a CSV cell that is more than a bare hash.

use std::io::{self, BufRead};

use super::indicators::Lines;
use super::{IS_HEX, Sink};
use crate::context::{self, BEFORE, Exclusion};

/// Bytes of earlier buffers kept for context: a token (64) and its context ([`BEFORE`]).
const HISTORY: usize = 64 + BEFORE;

/// Where the header row of a pipe table is, as [`find_header`] sees it.
#[derive(Debug, PartialEq)]
enum Header<'a> {
    /// This row.
    Row(&'a [u8]),
    /// The table has none (a line that is not a row, or the start of the input, above it).
    Missing,
    /// Above the text given: every line of it is a row.
    Above,
}

/// The header row of the pipe table whose rows end `text` (the text before a row): walking
/// up the rows, a Markdown separator row (`|---|:---:|`) has the header above it, an AsciiDoc
/// `|===` the header below it. `starts_input`: `text` begins the input (running out of rows
/// there means no header); otherwise its first line may be the end of one that began
/// earlier, and is not looked at.
fn find_header(text: &[u8], starts_input: bool) -> Header<'_> {
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    let (text, out) = if starts_input {
        (text, Header::Missing)
    } else {
        match memchr::memchr(b'\n', text) {
            Some(i) => (&text[i + 1..], Header::Above),
            None => return Header::Above,
        }
    };
    let mut lines = text.rsplit(|&b| b == b'\n').map(<[u8]>::trim_ascii);
    let mut below: Option<&[u8]> = None;
    for _ in 0..10_000 {
        let Some(line) = lines.next() else {
            return out;
        };
        if !line.starts_with(b"|") {
            return Header::Missing;
        }
        if line.starts_with(b"|===") {
            return below.map_or(Header::Missing, Header::Row);
        }
        if boundary(line) {
            return match lines.next() {
                Some(header) if header.starts_with(b"|") => Header::Row(header),
                Some(_) => Header::Missing,
                None => out,
            };
        }
        below = Some(line);
    }
    Header::Missing
}

/// A table's boundary: AsciiDoc's `|===` or a Markdown separator row (`|---|:---:|`), the
/// start of another table whatever the rows around it.
fn boundary(line: &[u8]) -> bool {
    line.starts_with(b"|===")
        || (line.len() > 2
            && line
                .iter()
                .all(|&b| matches!(b, b'|' | b'-' | b':' | b' ' | b'\t'))
            && line.contains(&b'-'))
}

/// The verdicts of a header row's cells (`| File | Imphash |`); none for no row.
fn cells(header: &[u8]) -> Vec<Option<Exclusion>> {
    if header.is_empty() {
        return Vec::new();
    }
    let header = header.strip_prefix(b"|").unwrap_or(header);
    header
        .split(|&b| b == b'|')
        .map(|cell| context::field(cell.trim_ascii()))
        .collect()
}

/// The newlines in `b`: a few dozen to a few hundred bytes between two tokens, too short for
/// a searcher's setup to pay; 32 bytes at a time in a form the compiler vectorises.
fn newlines(b: &[u8]) -> u64 {
    let mut blocks = b.chunks_exact(32);
    let mut n = 0u64;
    for block in &mut blocks {
        n += u64::from(block.iter().map(|&c| u8::from(c == b'\n')).sum::<u8>());
    }
    n + blocks.remainder().iter().filter(|&&c| c == b'\n').count() as u64
}

/// Whether `between` (the bytes between two tokens) holds nothing but label separators
/// ([`context::is_separator`]) and at most one line break (`\n` or `\r\n`).
fn separators_and_a_line_break(between: &[u8]) -> bool {
    let mut breaks = 0;
    for (i, &b) in between.iter().enumerate() {
        match b {
            b'\n' => breaks += 1,
            b'\r' if between.get(i + 1) == Some(&b'\n') => {}
            b if context::is_separator(b) => {}
            _ => return false,
        }
    }
    breaks <= 1
}

/// The sixteen bytes of `chunk` from `at`.
fn block(chunk: &[u8], at: usize) -> [u8; 16] {
    chunk[at..at + 16].try_into().unwrap_or([0; 16])
}

/// Where the run of hex digits holding `chunk[at - 1]` starts, at `floor` at the earliest:
/// sixteen bytes a step ([`crate::hash::not_hex_mask`]; a step may look below `floor`, whose
/// bytes only cut the answer at `floor`), then byte by byte in the buffer's first bytes.
fn run_start(chunk: &[u8], floor: usize, at: usize) -> usize {
    let mut start = at;
    while start >= 16 && start > floor {
        let not_hex = crate::hash::not_hex_mask(block(chunk, start - 16));
        if not_hex != 0 {
            // The last byte that is not a digit.
            return (start - 16 + (31 - not_hex.leading_zeros() as usize) + 1).max(floor);
        }
        start -= 16;
    }
    if start <= floor {
        return floor;
    }
    while start > floor && IS_HEX[chunk[start - 1] as usize] {
        start -= 1;
    }
    start
}

/// Where the run of hex digits going on at `chunk[from]` ends (the first byte that is not a
/// digit, or the end): sixteen bytes a step, then byte by byte.
fn run_end(chunk: &[u8], from: usize) -> usize {
    let mut end = from;
    while end + 16 <= chunk.len() {
        let not_hex = crate::hash::not_hex_mask(block(chunk, end));
        if not_hex != 0 {
            return end + not_hex.trailing_zeros() as usize;
        }
        end += 16;
    }
    while end < chunk.len() && IS_HEX[chunk[end] as usize] {
        end += 1;
    }
    end
}

/// Reads free text; returns the number of lines.
pub(crate) fn read(input: &mut dyn BufRead, sink: &mut Sink<'_>) -> io::Result<u64> {
    let mut scan = Stream::default();
    // URLs, domains and IPs, a line at a time, when `--kinds` takes them.
    let mut others = sink.kinds.any_indicator().then(Lines::default);
    let mut last = None;
    // The buffer's line breaks, found once for both scanners.
    let mut breaks = Vec::new();
    loop {
        let chunk = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let Some(&end) = chunk.last() else {
            scan.finish(sink);
            if let Some(others) = &mut others {
                others.finish(sink);
            }
            return Ok(super::lines_read(scan.line, last));
        };
        breaks.clear();
        breaks.extend(memchr::memchr_iter(b'\n', chunk));
        scan.feed(chunk, &breaks, sink);
        if let Some(others) = &mut others {
            others.feed(chunk, &breaks, sink);
        }
        last = Some(end);
        let n = chunk.len();
        input.consume(n);
    }
}

/// How many of a buffer's line breaks the scanner has counted.
struct Counted<'b> {
    breaks: &'b [usize],
    seen: usize,
}

impl Counted<'_> {
    /// The line breaks before `pos` not counted yet (now counted). A walk, not a binary
    /// search: tokens come a few lines apart, and a walk's branch is predictable.
    fn to(&mut self, pos: usize) -> u64 {
        let from = self.seen;
        while self.breaks.get(self.seen).is_some_and(|&b| b < pos) {
            self.seen += 1;
        }
        (self.seen - from) as u64
    }

    /// The line breaks not counted yet.
    fn rest(self) -> u64 {
        (self.breaks.len() - self.seen) as u64
    }
}

/// The scanner's state between buffers.
struct Stream {
    /// The current run's first 64 digits.
    run: [u8; 64],
    /// Digits in the current run (counts past 64).
    run_len: usize,
    /// Absolute offset where the current run started.
    run_start: u64,
    /// Line where it started.
    run_line: u64,
    /// Current line.
    line: u64,
    /// Absolute offset of the current buffer's first byte.
    offset: u64,
    /// The last bytes before the current buffer.
    history: [u8; HISTORY],
    history_len: usize,
    /// The pipe table the last token was in, if any.
    table: Option<Table>,
    /// Absolute start and end of the last token flushed.
    previous: (u64, u64),
    /// The verdicts of recent tables' header rows.
    headers: Headers,
    /// The verdicts of recent short lines in front of a token.
    labels: Labels,
    /// The table rows that end the text before this buffer, from a line's start (at most
    /// [`ABOVE`] bytes; see [`Stream::keep_above`]): a row or a table's header there still
    /// counts for the rows of this buffer.
    above: Vec<u8>,
    /// Whether `above` starts at a line's start (not when one line outgrew it).
    above_whole: bool,
}

/// The most bytes of table rows kept from one buffer for the next.
const ABOVE: usize = 64 * 1024;

/// The verdicts of the last few distinct header rows met: reports repeat their tables (a
/// table of hashes and one of sample names in every section), so a table's header is
/// usually one of these and is not judged again, cell by cell.
#[derive(Default)]
struct Headers(Vec<(Vec<u8>, Vec<Option<Exclusion>>)>);

impl Headers {
    /// The most header rows kept.
    const KEPT: usize = 4;

    /// Each cell's verdict for the header row `row` (none for no row).
    fn verdicts(&mut self, row: &[u8]) -> Vec<Option<Exclusion>> {
        if let Some(i) = self.0.iter().position(|(kept, _)| kept == row) {
            let hit = self.0.remove(i);
            let verdicts = hit.1.clone();
            self.0.insert(0, hit);
            return verdicts;
        }
        let verdicts = cells(row);
        self.0.truncate(Self::KEPT - 1);
        self.0.insert(0, (row.to_vec(), verdicts.clone()));
        verdicts
    }
}

/// What the text in front of a token says ([`context::before`]), remembered for the start of
/// a table row when it is short and holds a word: a table's first hex cell has the same text
/// in front of it in every copy of the table (`| stage3.dll | `), and [`context::on_line`]
/// depends on that text alone. Other lines (prose: rarely the same twice) are judged as
/// they come. [`Labels::SLOTS`] slots, direct-mapped by the line's bytes.
#[derive(Default)]
struct Labels {
    slots: [Label; Labels::SLOTS],
}

/// A remembered line: its bytes (zero-padded), its length plus one (0 for an empty slot) and
/// its verdict.
#[derive(Clone, Copy, Default)]
struct Label {
    key: [u8; Labels::LINE],
    len: u8,
    verdict: Option<Exclusion>,
}

impl Labels {
    /// Slots (a power of two).
    const SLOTS: usize = 16;
    /// The longest line remembered.
    const LINE: usize = 32;

    /// [`context::before`] of `before` (the text in front of a token).
    fn before(&mut self, before: &[u8]) -> Option<Exclusion> {
        let (line, earlier) = context::last_line(before);
        // Only a table row's first cells repeat often enough to pay for the memo.
        if line.first() != Some(&b'|') || line.len() > Self::LINE || !context::has_word(line) {
            return context::before_line(line, earlier);
        }
        let mut key = [0u8; Self::LINE];
        key[..line.len()].copy_from_slice(line);
        let word = |i: usize| u64::from_le_bytes(key[i..i + 8].try_into().unwrap_or([0; 8]));
        let mixed = (word(0) ^ word(8).rotate_left(17) ^ word(16).rotate_left(31) ^ word(24))
            .wrapping_add(line.len() as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let slot = &mut self.slots[(mixed >> (64 - Self::SLOTS.trailing_zeros())) as usize];
        let len = line.len() as u8 + 1;
        if slot.len != len || slot.key != key {
            *slot = Label {
                key,
                len,
                verdict: context::on_line(line),
            };
        }
        slot.verdict
    }
}

/// A Markdown (or AsciiDoc) pipe table: what each column's header says about its values,
/// and how far down its rows have been checked.
struct Table {
    /// Per column (0 = the first cell), the header's verdict.
    header: Vec<Option<Exclusion>>,
    /// Absolute offset just after the last row known to belong to the table.
    checked_to: u64,
    /// Absolute offset of that row's start (the next token of the same row needs no check).
    row: u64,
    /// The last token looked up in the table: its line, absolute end and column. The next
    /// token of the same line is that column plus the pipes between them.
    last: (u64, u64, usize),
}

impl Default for Stream {
    fn default() -> Stream {
        Stream {
            run: [0; 64],
            run_len: 0,
            run_start: 0,
            run_line: 1,
            line: 1,
            offset: 0,
            history: [0; HISTORY],
            history_len: 0,
            table: None,
            previous: (0, 0),
            headers: Headers::default(),
            labels: Labels::default(),
            above: Vec::new(),
            above_whole: true,
        }
    }
}

impl Stream {
    /// Scans one buffer, whose line breaks are at `breaks`. A run of 32 or more hex digits
    /// covers one of every 32nd position, so only those are probed; a hex probe is widened to
    /// its run. Lines are counted up to a token and at the end of the buffer. A run that
    /// touches the end is carried into the next buffer.
    fn feed(&mut self, chunk: &[u8], breaks: &[usize], sink: &mut Sink<'_>) {
        let len = chunk.len();
        let is_hex = |b: u8| IS_HEX[b as usize];
        let mut counted = Counted { breaks, seen: 0 };
        let mut i = 0;
        if self.run_len > 0 {
            // The run carried from the previous buffer goes on here.
            let k = chunk.iter().position(|&b| !is_hex(b)).unwrap_or(len);
            let take = k.min(64usize.saturating_sub(self.run_len));
            let at = self.run_len.min(64);
            self.run[at..at + take].copy_from_slice(&chunk[..take]);
            self.run_len = self.run_len.saturating_add(k);
            if k == len {
                self.end_of_buffer(chunk, counted);
                return;
            }
            self.flush(chunk, k, sink);
            i = k;
        }
        while i + 32 <= len {
            let probe = i + 31;
            if !is_hex(chunk[probe]) {
                i = probe + 1;
                continue;
            }
            let start = run_start(chunk, i, probe);
            let end = run_end(chunk, probe + 1);
            if end == len {
                self.carry(chunk, start, &mut counted);
                self.end_of_buffer(chunk, counted);
                return;
            }
            if matches!(end - start, 32 | 40 | 64) {
                self.line += counted.to(start);
                self.run_start = self.offset + start as u64;
                self.run_line = self.line;
                self.run[..end - start].copy_from_slice(&chunk[start..end]);
                self.run_len = end - start;
                self.flush(chunk, end, sink);
            }
            i = end + 1;
        }
        // The tail, shorter than a probe's reach: only a run touching the end can matter.
        let mut start = len;
        while start > i && is_hex(chunk[start - 1]) {
            start -= 1;
        }
        if start < len {
            self.carry(chunk, start, &mut counted);
        }
        self.end_of_buffer(chunk, counted);
    }

    /// Keeps the run from `start` to the end of `chunk` for the next buffer.
    fn carry(&mut self, chunk: &[u8], start: usize, counted: &mut Counted<'_>) {
        self.line += counted.to(start);
        self.run_start = self.offset + start as u64;
        self.run_line = self.line;
        let take = (chunk.len() - start).min(64);
        self.run[..take].copy_from_slice(&chunk[start..start + take]);
        self.run_len = chunk.len() - start;
    }

    /// Counts the rest of the buffer's lines and keeps its end for the context of what comes
    /// next.
    fn end_of_buffer(&mut self, chunk: &[u8], counted: Counted<'_>) {
        self.keep_above(chunk, counted.breaks);
        self.line += counted.rest();
        if chunk.len() >= HISTORY {
            self.history
                .copy_from_slice(&chunk[chunk.len() - HISTORY..]);
            self.history_len = HISTORY;
        } else {
            let drop = (self.history_len + chunk.len()).saturating_sub(HISTORY);
            self.history.copy_within(drop..self.history_len, 0);
            self.history_len -= drop;
            self.history[self.history_len..self.history_len + chunk.len()].copy_from_slice(chunk);
            self.history_len += chunk.len();
        }
        self.offset += chunk.len() as u64;
    }

    /// The run ended at position `at` of `chunk`.
    fn flush(&mut self, chunk: &[u8], at: usize, sink: &mut Sink<'_>) {
        let len = self.run_len;
        self.run_len = 0;
        if !matches!(len, 32 | 40 | 64) {
            return;
        }
        let why = if sink.keeps_all() {
            None
        } else {
            let mut context = [0u8; BEFORE];
            let before = if self.after_hex_cell(chunk) {
                // Every test that reads a table checks the shortcut against the rule.
                debug_assert_eq!(
                    context::before(self.context_before(chunk, &mut context)),
                    None
                );
                None
            } else {
                let before = self.context_before(chunk, &mut context);
                let verdict = self.labels.before(before);
                // And every test that reads text checks the memo against the rule.
                debug_assert_eq!(verdict, context::before(before));
                verdict
            };
            before
                .or_else(|| context::after(&chunk[at..chunk.len().min(at + 32)]))
                .or_else(|| self.column(chunk, at))
        };
        let end = self.offset + at as u64;
        self.previous = (end - len as u64, end);
        let run = self.run;
        sink.token(&run[..len], self.run_line, why);
    }

    /// Whether nothing but separators stand between the last token and the current run, on
    /// one line (`| <md5> | <sha1>`) or across one line break (a list of hashes, a line
    /// each, bare or as `- ` items): then the label in front of the run is that token's hex,
    /// which names nothing ([`context::before`] would say `None`, at the cost of a scan of
    /// the text before; across a line break it reads the line above, which ends with the
    /// token). The token must fill at least 16 bytes of that text and be a word of its own
    /// there (`x_<hex> | ` is left to the full rule).
    fn after_hex_cell(&self, chunk: &[u8]) -> bool {
        let ((start, end), run) = (self.previous, self.run_start);
        if end < self.offset || run < end {
            return false;
        }
        let at = |abs: u64| (abs - self.offset) as usize;
        if !separators_and_a_line_break(&chunk[at(end)..at(run)]) {
            return false;
        }
        let window = run.saturating_sub(BEFORE as u64);
        let from = start.max(window);
        if end < from + 16 {
            return false;
        }
        // Inside the window the token is a whole word when it starts the window, or the
        // text before it does, or the byte before it is no word's.
        from > start
            || start == window
            || (start > self.offset && !context::is_word(chunk[at(start) - 1]))
    }

    /// What the header of the table column holding the current run says (`| File | SHA256 |
    /// Imphash |`: the third column's values are import hashes). The row and the table's
    /// header are looked for in this buffer, and above it in the rows kept from earlier ones
    /// when they began there.
    fn column(&mut self, chunk: &[u8], at: usize) -> Option<Exclusion> {
        let end = self.offset + at as u64;
        let start = self.run_start.checked_sub(self.offset).map(|s| s as usize);
        if let Some(start) = start
            && let Some(verdict) = self.next_cell(chunk, start, end)
        {
            return verdict;
        }
        let after = &chunk[at..];
        let Some(start) = start else {
            // The run began in an earlier buffer, on the line kept above this one.
            let base = self.offset - self.above.len() as u64;
            let upto = usize::try_from(self.run_start.checked_sub(base)?).ok()?;
            let above = std::mem::take(&mut self.above);
            let verdict = self.row_column(&above[..upto], base, self.above_whole, end, after);
            self.above = above;
            return verdict.flatten();
        };
        let here = &chunk[..start];
        if let Some(verdict) = self.row_column(here, self.offset, self.offset == 0, end, after) {
            return verdict;
        }
        // The row or the table's header began in an earlier buffer.
        let joined = [&self.above[..], here].concat();
        let base = self.offset - self.above.len() as u64;
        self.row_column(&joined, base, self.above_whole, end, after)
            .flatten()
    }

    /// The verdict for the next cell of the row the table last looked at (`| <md5> | <sha1>`:
    /// that cell's column plus the pipes between them), if the run is one.
    fn next_cell(&mut self, chunk: &[u8], start: usize, end: u64) -> Option<Option<Exclusion>> {
        let table = self.table.as_mut()?;
        let (last_line, last_end, last_column) = table.last;
        if last_line != self.run_line || last_end < self.offset || last_end > self.run_start {
            return None;
        }
        let between = &chunk[(last_end - self.offset) as usize..start];
        let column = last_column + between.iter().filter(|&&b| b == b'|').count();
        table.last = (self.run_line, end, column);
        Some(table.header.get(column).copied().flatten())
    }

    /// The column verdict for the run that `text` (starting at absolute offset `base`) is the
    /// text before, and the table it is in; `None` when `text` does not reach up far enough
    /// (the row, or the table's header, begins before it). `starts_input`: `text` begins at
    /// a line's start with nothing above it that matters. `end`: where the run ends
    /// (absolute); `after`: the buffer's bytes from there.
    fn row_column(
        &mut self,
        text: &[u8],
        base: u64,
        starts_input: bool,
        end: u64,
        after: &[u8],
    ) -> Option<Option<Exclusion>> {
        let line_start = memchr::memrchr(b'\n', text).map_or(0, |i| i + 1);
        if line_start == 0 && !starts_input {
            return None;
        }
        let row = text[line_start..].trim_ascii_start();
        if !row.starts_with(b"|") {
            return Some(None);
        }
        let column = memchr::memchr_iter(b'|', row).count() - 1;
        let abs = |i: usize| base + i as u64;
        // The cached table still holds for another token of the row it last checked, and if
        // every line from that row to this one is a row too.
        let cached = self.table.as_ref().is_some_and(|t| {
            t.row == abs(line_start)
                || (t.checked_to >= base
                    && t.checked_to <= abs(line_start)
                    && text[(t.checked_to - base) as usize..line_start]
                        .split(|&b| b == b'\n')
                        .map(<[u8]>::trim_ascii)
                        .filter(|l| !l.is_empty())
                        .all(|l| l.starts_with(b"|") && !boundary(l)))
        });
        if !cached {
            // A table without a header is cached too (as no verdicts), so that its rows do not
            // each walk up through all the rows above them.
            let row = match find_header(&text[..line_start], starts_input) {
                Header::Row(row) => row,
                Header::Missing => b"",
                Header::Above => return None,
            };
            self.table = Some(Table {
                header: self.headers.verdicts(row),
                checked_to: 0,
                row: 0,
                last: (0, 0, 0),
            });
        }
        let table = self.table.as_mut()?;
        // Checked up to the start of the next line (or the buffer's end).
        table.checked_to = end + memchr::memchr(b'\n', after).map_or(after.len(), |i| i + 1) as u64;
        table.row = abs(line_start);
        table.last = (self.run_line, end, column);
        Some(table.header.get(column).copied().flatten())
    }

    /// Keeps, for the next buffer, the table rows that end the text read so far: this
    /// buffer's last lines while they are rows (and the rows kept before it, when every line
    /// of this one is a row), and the line it ends in the middle of. A table straddling two
    /// buffers (a gzip member's reads are 32 KiB) is then read as a whole, the same whatever
    /// the buffers. At most [`ABOVE`] bytes, cut at a line's start (a longer table's rows
    /// rely on the table cached from the earlier buffer).
    fn keep_above(&mut self, chunk: &[u8], breaks: &[usize]) {
        let row = |l: &[u8]| l.trim_ascii_start().starts_with(b"|");
        let Some(&last) = breaks.last() else {
            // The line kept goes on through this whole buffer.
            self.extend_above(chunk);
            return;
        };
        let mut from = last + 1;
        for (i, &line_end) in breaks.iter().enumerate().rev() {
            let line_start = if i == 0 { 0 } else { breaks[i - 1] + 1 };
            let line = &chunk[line_start..line_end];
            let is_row = if line_start == 0 && self.offset > 0 {
                // The end of the line kept from the earlier buffer.
                let kept = memchr::memrchr(b'\n', &self.above)
                    .map_or(&self.above[..], |i| &self.above[i + 1..]);
                if kept.len() == self.above.len() && !self.above_whole {
                    false
                } else if kept.trim_ascii_start().is_empty() {
                    row(line)
                } else {
                    row(kept)
                }
            } else {
                row(line)
            };
            if !is_row {
                break;
            }
            from = line_start;
        }
        if from == 0 && self.offset > 0 {
            self.extend_above(chunk);
        } else {
            self.above.clear();
            self.above_whole = true;
            self.extend_above(&chunk[from..]);
        }
    }

    /// Appends `bytes` to the rows kept, keeping at most [`ABOVE`] bytes: from the first
    /// line's start among the last [`ABOVE`] (from within a line when one line is longer:
    /// then they are not whole).
    fn extend_above(&mut self, bytes: &[u8]) {
        let kept = self.above.len();
        let total = kept + bytes.len();
        if total <= ABOVE {
            self.above.extend_from_slice(bytes);
            return;
        }
        // Positions count through the bytes kept, then `bytes`; a line starts after a `\n`.
        let cut = total - ABOVE;
        let newline = if cut - 1 < kept {
            memchr::memchr(b'\n', &self.above[cut - 1..])
                .map(|i| cut - 1 + i)
                .or_else(|| memchr::memchr(b'\n', bytes).map(|i| kept + i))
        } else {
            memchr::memchr(b'\n', &bytes[cut - 1 - kept..]).map(|i| cut - 1 + i)
        };
        self.above_whole = newline.is_some();
        let from = newline.map_or(cut, |n| n + 1);
        if from <= kept {
            self.above.drain(..from);
            self.above.extend_from_slice(bytes);
        } else {
            self.above.clear();
            self.above.extend_from_slice(&bytes[from - kept..]);
        }
    }

    /// The bytes just before the current run (at most [`BEFORE`]): borrowed from this buffer
    /// when it holds them all, else copied from it and the history of earlier ones.
    fn context_before<'c>(&self, chunk: &'c [u8], out: &'c mut [u8; BEFORE]) -> &'c [u8] {
        let history = &self.history[..self.history_len];
        let mut n = 0;
        if self.run_start >= self.offset {
            let start = (self.run_start - self.offset) as usize;
            if start >= BEFORE {
                // Nearly always: all of it in this buffer.
                return &chunk[start - BEFORE..start];
            }
            let from_chunk = &chunk[start.saturating_sub(BEFORE)..start];
            if from_chunk.len() < BEFORE {
                let want = (BEFORE - from_chunk.len()).min(history.len());
                out[..want].copy_from_slice(&history[history.len() - want..]);
                n = want;
            }
            out[n..n + from_chunk.len()].copy_from_slice(from_chunk);
            n += from_chunk.len();
        } else {
            // The run began in an earlier buffer: its context is in the history.
            let into = (self.offset - self.run_start) as usize;
            let end = history.len().saturating_sub(into);
            let from = end.saturating_sub(BEFORE);
            out[..end - from].copy_from_slice(&history[from..end]);
            n = end - from;
        }
        &out[..n]
    }

    fn finish(&mut self, sink: &mut Sink<'_>) {
        if self.run_len > 0 {
            self.flush(&[], 0, sink);
        }
    }
}

/// Scans one value of a structured input (starting on `line`) for hash-shaped tokens. `field`
/// is what the field's name says (`imphash`, `DeviceId`): when it says something, every token
/// of the value is left out for that reason. Otherwise each token is judged by the text in
/// front of it within the value (`SHA256=…,IMPHASH=…`).
pub(crate) fn scan_value(value: &[u8], line: u64, field: Option<Exclusion>, sink: &mut Sink<'_>) {
    if value.len() < 32 {
        return;
    }
    let (mut line, mut counted) = (line, 0);
    for (start, len) in tokens(value) {
        line += newlines(&value[counted..start]);
        counted = start;
        let why = if sink.keeps_all() {
            None
        } else {
            field
                .or_else(|| context::before(&value[start.saturating_sub(BEFORE)..start]))
                .or_else(|| context::after(&value[start + len..value.len().min(start + len + 32)]))
        };
        sink.token(&value[start..start + len], line, why);
    }
}

/// The hash-shaped tokens of `bytes` (held whole): every maximal run of 32, 40 or 64 hex
/// digits, as (start, length). Any 32 consecutive bytes hold exactly one position that is 31
/// more than a multiple of 32, so probing only those finds every run of 32 or more; a hex
/// probe is widened to its run (as [`Stream::feed`] does). A command-line cell or a JSON
/// string without a token costs a 32nd of its bytes.
pub(crate) fn tokens(bytes: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let is_hex = |b: u8| IS_HEX[b as usize];
    let mut probe = 31;
    std::iter::from_fn(move || {
        while probe < bytes.len() {
            if !is_hex(bytes[probe]) {
                probe += 32;
                continue;
            }
            let start = run_start(bytes, 0, probe);
            let end = run_end(bytes, probe + 1);
            // The next probe at or after `end + 1` (a run starts after a non-hex byte).
            probe = end + 1 + (31 - (end + 1) % 32) % 32;
            if matches!(end - start, 32 | 40 | 64) {
                return Some((start, end - start));
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The rows kept between buffers are the longest suffix of all the text given that
        /// starts a line and fits in [`ABOVE`] bytes (the last [`ABOVE`] bytes, not whole,
        /// when no line starts there), whatever the pieces it came in.
        #[test]
        fn the_rows_kept_are_the_longest_whole_lines_that_fit(
            pieces in prop::collection::vec((0usize..40_000, any::<bool>()), 1..12),
        ) {
            let mut stream = Stream::default();
            let mut all = Vec::new();
            for (k, (len, newline)) in pieces.into_iter().enumerate() {
                let mut piece = vec![b'a' + (k % 26) as u8; len];
                if newline {
                    piece.push(b'\n');
                }
                stream.extend_above(&piece);
                all.extend_from_slice(&piece);
                let cut = all.len().saturating_sub(ABOVE);
                let line = (cut..=all.len()).find(|&p| p == 0 || all[p - 1] == b'\n');
                // Compared by length and then bytes, so that a failure prints little.
                let (want, whole) = match line {
                    Some(p) => (&all[p..], true),
                    None => (&all[cut..], false),
                };
                prop_assert_eq!((stream.above.len(), stream.above_whole), (want.len(), whole));
                prop_assert!(stream.above == want);
            }
        }
    }

    proptest! {
        /// Newlines counted in 32-byte blocks are those a byte-by-byte count finds.
        #[test]
        fn newlines_are_counted_as_a_byte_by_byte_count_counts_them(
            bytes in prop::collection::vec(
                prop_oneof![prop::sample::select(b"\n\x0a\x8a\x0b\x09\x00\xff a".to_vec()), any::<u8>()],
                0..100,
            )
        ) {
            let want = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
            prop_assert_eq!(newlines(&bytes), want);
        }

        /// The eight-at-a-time run bounds are the byte-by-byte ones, whatever the bytes
        /// (digits of both cases, their neighbours `/`, `:`, `@`, `G`, `` ` ``, `g`, and bytes
        /// of 0x80 or more).
        #[test]
        fn hex_runs_end_where_a_byte_by_byte_walk_ends_them(
            bytes in prop::collection::vec(
                prop_oneof![
                    prop::sample::select(b"0123456789abcdefABCDEF/:@G`g\xb0\xc6\xe6 ".to_vec()),
                    any::<u8>(),
                ],
                1..80,
            ),
            at in any::<prop::sample::Index>(),
            floor in any::<prop::sample::Index>(),
        ) {
            let at = at.index(bytes.len()) + 1;
            let floor = floor.index(at);
            let mut start = at;
            while start > floor && bytes[start - 1].is_ascii_hexdigit() {
                start -= 1;
            }
            prop_assert_eq!(run_start(&bytes, floor, at), start);
            let mut end = at;
            while end < bytes.len() && bytes[end].is_ascii_hexdigit() {
                end += 1;
            }
            prop_assert_eq!(run_end(&bytes, at), end);
        }
    }
}
