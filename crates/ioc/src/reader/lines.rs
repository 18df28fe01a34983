//! Plain lists: one IOC per line, as analysts and tools write them.
//!
//! A line is a hash or (when `--kinds` takes them, the default for lists) a URL, a domain or
//! an IP address, defanged or not: its first word, or its first token as below.
//!
//! The value is the first token of the line, so the common shapes read the same: a bare hash,
//! `HASH;comment` (LOKI), `HASH  name` and `HASH *name` (`sha256sum`), `HASH,name`, `"HASH"`.
//! A line whose first token is not a hash is an `invalid` record with its line. Blank lines
//! are skipped; so are `#` comment lines, which is the one policy for a commented-out hash
//! (`# <hash>`): the list's author disabled it, so it is not looked up, and it is counted as
//! excluded (`commented`) so that the summary shows it was seen. The comment of a
//! `HASH;comment` entry is read as prose for URLs, domains and IPs (C2s named there); a plain
//! link in it is the entry's source (`reference_site`).

use std::io::{self, BufRead};

use super::sniff::first_token;
use super::{MAX_LINE, Sink, trim};
use crate::context::Exclusion;

/// Reads a plain list; returns the number of lines.
pub(crate) fn read(input: &mut dyn BufRead, sink: &mut Sink<'_>) -> io::Result<u64> {
    let mut line_no = 0u64;
    for_each_line(input, &mut |raw, cut| {
        line_no += 1;
        let line = trim(raw);
        if cut {
            sink.invalid(line, line_no, format!("line longer than {MAX_LINE} bytes"));
            return;
        }
        if line.is_empty() {
            return;
        }
        if let Some(comment) = line.strip_prefix(b"#") {
            let token = first_token(trim(comment));
            if matches!(token.len(), 32 | 40 | 64) && token.iter().all(u8::is_ascii_hexdigit) {
                sink.token(token, line_no, Some(Exclusion::Commented));
            }
            return;
        }
        // The common case, a bare hash, parses at once; otherwise its first token.
        let whole = match crate::Hash::parse_bytes(line) {
            Ok(h) => return sink.hash(h, line_no),
            Err(e) => e,
        };
        match crate::Hash::parse_bytes(first_token(line)) {
            Ok(h) => {
                sink.hash(h, line_no);
                comment(line, line_no, sink);
            }
            Err(_) if sink.kinds.any_indicator() => indicator(line, line_no, &whole, sink),
            // The reason describes the value shown: the whole line.
            Err(_) => sink.invalid(line, line_no, whole.to_string()),
        }
    })?;
    Ok(line_no)
}

/// The comment of a `HASH;comment` entry (LOKI, signature-base), read as prose when
/// `--kinds` takes URLs, domains or IPs: it names C2s (`C2 45.77.12[.]9:443`), and a plain
/// link in it is the entry's source, not an indicator ([`super::indicators::Prose`]).
fn comment(line: &[u8], line_no: u64, sink: &mut Sink<'_>) {
    if !sink.kinds.any_indicator() {
        return;
    }
    if let Some(at) = memchr::memchr(b';', line) {
        let prose = super::indicators::Prose {
            comment: true,
            ..Default::default()
        };
        super::indicators::scan(&line[at + 1..], line_no, prose, sink);
    }
}

/// A line that is no hash, when `--kinds` takes URLs, domains or IPs: its first word
/// (`hxxp://a[.]b/c?x=1,2  phishing`), or else its first token as for hashes (`evil.com;C2`),
/// or an invalid item.
fn indicator(line: &[u8], line_no: u64, not_hash: &crate::ParseHashError, sink: &mut Sink<'_>) {
    let word = line.split(u8::is_ascii_whitespace).next().unwrap_or(line);
    let why = match super::indicators::value(word) {
        Ok(found) => return sink.indicator(found, line_no, false),
        Err(why) => why,
    };
    let token = first_token(line);
    if token.len() < word.len()
        && let Ok(found) = super::indicators::value(token)
    {
        return sink.indicator(found, line_no, false);
    }
    if line.iter().all(|&b| super::IS_HEX[b as usize]) {
        return sink.invalid(line, line_no, not_hash.to_string());
    }
    sink.invalid(line, line_no, why);
}

/// Calls `f(line, cut)` for every line (without its `\n`), keeping at most `MAX_LINE` bytes of
/// each (`cut` says a line was longer). Lines that lie whole in the reader's buffer are passed
/// without a copy: this is the hot path of every run.
pub(crate) fn for_each_line(
    input: &mut dyn BufRead,
    f: &mut dyn FnMut(&[u8], bool),
) -> io::Result<()> {
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
