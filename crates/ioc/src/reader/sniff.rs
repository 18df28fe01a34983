//! `auto`'s first guess at an input's layout, from its name and its first megabyte.
//!
//! Content decides; the name only breaks ties (a `.csv` that starts like a list of hashes is
//! read as a list, which finds the same hashes). JSON and XML are recognised by their first
//! character; a plain list by the first token of most lines being a hash (or their first word
//! a URL, domain or IP address); CSV or TSV by one
//! delimiter appearing the same number of times on most lines; anything else is free text.
//! The guess is then tried (see [`super::read_input`]): a wrong one falls back to text.

use super::{InputFormat, trim};
use crate::Hash;

/// Lines of the head looked at.
const SAMPLE_LINES: usize = 200;

/// Guesses the format of an input named `name` whose (decoded) content starts with `head`.
pub fn sniff(name: &str, head: &[u8]) -> InputFormat {
    let lower = name.to_ascii_lowercase();
    let base = ["gz", "zst", "bz2", "xz"]
        .iter()
        .find_map(|ext| lower.strip_suffix(&format!(".{ext}")))
        .unwrap_or(&lower);
    let first = head.iter().find(|b| !b.is_ascii_whitespace()).copied();
    match first {
        Some(b'{') | Some(b'[') => return InputFormat::Json,
        Some(b'<') => return InputFormat::Xml,
        _ => {}
    }
    let lines: Vec<&[u8]> = head
        .split(|&b| b == b'\n')
        .map(trim)
        .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
        .take(SAMPLE_LINES)
        .collect();
    if lines.is_empty() {
        return InputFormat::Lines;
    }
    let listed = lines
        .iter()
        .filter(|l| first_token_is_hash(l) || first_word_is_indicator(l))
        .count();
    if listed * 2 >= lines.len() {
        return InputFormat::Lines;
    }
    if delimiter(&records(head, SAMPLE_LINES)).is_some() {
        return InputFormat::Csv;
    }
    if base.ends_with(".csv") || base.ends_with(".tsv") {
        return InputFormat::Csv;
    }
    InputFormat::Text
}

/// Bytes of the head looked at for [`binary`].
const BINARY_PROBE: usize = 8 * 1024;

/// What a binary input is, if its (decoded) head says it is one: a known executable,
/// document or database signature, or control bytes (NUL and the like) in more than one in
/// 32 of its first 8 KiB. Text has none (UTF-16 was decoded before this), so an ELF or a
/// PDF handed over by mistake is reported and skipped, not read as junk "indicators".
pub fn binary(head: &[u8]) -> Option<&'static str> {
    // Signature, what it is, and whether the signature alone says so (`MZ` could start a
    // line of text: it needs the control bytes too).
    const MAGIC: &[(&[u8], &str, bool)] = &[
        (b"\x7fELF", "an ELF executable", true),
        (b"MZ", "a Windows executable", false),
        (b"\xcf\xfa\xed\xfe", "a Mach-O executable", true),
        (b"\xfe\xed\xfa\xce", "a Mach-O executable", true),
        (b"\xfe\xed\xfa\xcf", "a Mach-O executable", true),
        (b"\xca\xfe\xba\xbe", "a Mach-O or Java class file", true),
        (b"%PDF-", "a PDF document", true),
        (
            b"\xd0\xcf\x11\xe0",
            "an OLE document (Office 97-2003)",
            true,
        ),
        (b"SQLite format 3\0", "an SQLite database", true),
        (b"\x89PNG", "a PNG image", true),
        (b"\xff\xd8\xff", "a JPEG image", true),
    ];
    let probe = &head[..head.len().min(BINARY_PROBE)];
    let control = probe
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c | 0x1b))
        .count();
    let binary = control > probe.len() / 32;
    match MAGIC.iter().find(|(m, _, _)| probe.starts_with(m)) {
        Some(&(_, what, sure)) if sure || binary => Some(what),
        _ => binary.then_some("binary data (control bytes)"),
    }
}

/// The first token of a list line (`HASH`, `HASH;comment`, `HASH  name`, `HASH,name`,
/// `"HASH"`, `\\HASH  escaped\\name`), without its quotes.
pub(crate) fn first_token(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .position(|&b| b.is_ascii_whitespace() || matches!(b, b';' | b',' | b'|'))
        .unwrap_or(line.len());
    let token = &line[..end];
    // `sha256sum` marks a line whose name it had to escape with a leading backslash.
    let token = token.strip_prefix(b"\\").unwrap_or(token);
    let token = token.strip_prefix(b"\"").unwrap_or(token);
    token.strip_suffix(b"\"").unwrap_or(token)
}

fn first_token_is_hash(line: &[u8]) -> bool {
    Hash::parse_bytes(first_token(line)).is_ok()
}

/// A list line of a URL, domain or IP address (defanged or not), with or without a comment
/// after it: its first word is one, and holds no CSV delimiter (a URL-first CSV row is not a
/// list line).
fn first_word_is_indicator(line: &[u8]) -> bool {
    let word = line.split(u8::is_ascii_whitespace).next().unwrap_or(line);
    !word.iter().any(|b| matches!(b, b',' | b';' | b'|')) && super::indicators::value(word).is_ok()
}

/// The first `max` CSV records of `head` as candidate rows for [`delimiter`]: split at line
/// breaks outside double quotes (an export's quoted command line may hold one), trimmed,
/// blank and `#` comment lines left out.
pub(crate) fn records(head: &[u8], max: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, &b) in head.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => {
                let line = trim(&head[start..i]);
                if !line.is_empty() && !line.starts_with(b"#") {
                    out.push(line);
                    if out.len() == max {
                        return out;
                    }
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    let line = trim(&head[start..]);
    if !line.is_empty() && !line.starts_with(b"#") && !quoted {
        out.push(line);
    }
    out
}

/// The delimiter that appears (outside double quotes) the same number of times, at least once,
/// on at least 80% of `lines`, and on two of them at least, preferring tab, then comma,
/// semicolon and pipe.
pub(crate) fn delimiter(lines: &[&[u8]]) -> Option<u8> {
    let mut best: Option<(usize, u8)> = None;
    for d in [b'\t', b',', b';', b'|'] {
        let counts: Vec<usize> = lines
            .iter()
            .map(|l| {
                let mut quoted = false;
                l.iter()
                    .filter(|&&b| {
                        if b == b'"' {
                            quoted = !quoted;
                        }
                        b == d && !quoted
                    })
                    .count()
            })
            .collect();
        // The most common count, among lines that have the delimiter at all.
        let mut modes: Vec<(usize, usize)> = Vec::new();
        for &c in counts.iter().filter(|&&c| c > 0) {
            match modes.iter_mut().find(|(k, _)| *k == c) {
                Some((_, n)) => *n += 1,
                None => modes.push((c, 1)),
            }
        }
        let Some(&(_, agree)) = modes.iter().max_by_key(|(_, n)| *n) else {
            continue;
        };
        if agree >= 2 && agree * 5 >= lines.len() * 4 && best.is_none_or(|(n, _)| agree > n) {
            best = Some((agree, d));
        }
    }
    best.map(|(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD5: &str = "44d88612fea8a8f36de82e1278abb02f";

    #[test]
    fn layouts_are_told_apart_by_content() {
        let list = format!("# LOKI\n{MD5};Sakula\n{MD5};x\n");
        assert_eq!(sniff("hash-iocs.txt", list.as_bytes()), InputFormat::Lines);
        let sums = format!("{MD5}  a.exe\n{MD5} *b.dll\n");
        assert_eq!(sniff("x", sums.as_bytes()), InputFormat::Lines);
        let csv = format!("Indicator_type,Data,Note\nsha256,{MD5},x\nurl,http://a/,y\n");
        assert_eq!(sniff("feed.csv", csv.as_bytes()), InputFormat::Csv);
        let tsv = "a\tb\tc\n1\t2\t3\n";
        assert_eq!(sniff("x", tsv.as_bytes()), InputFormat::Csv);
        assert_eq!(sniff("x", b"{\"a\": 1}\n{\"a\": 2}\n"), InputFormat::Json);
        assert_eq!(sniff("x", b"  [1, 2]"), InputFormat::Json);
        assert_eq!(sniff("x", b"<?xml version=\"1.0\"?><a/>"), InputFormat::Xml);
        let md = "# Report\n\nThe dropper, seen in March, wrote files.\n";
        assert_eq!(sniff("r.md", md.as_bytes()), InputFormat::Text);
        assert_eq!(sniff("x.csv.gz", b""), InputFormat::Lines);
        // Quoted delimiters and a quoted line break do not hide a CSV without a .csv name.
        let export = format!(
            "Time,SHA256,Cmd\r\n1,{MD5},\"a, b\"\r\n2,{MD5},\"x\r\ny, \"\"z\"\"\"\r\n3,,c\r\n"
        );
        assert_eq!(sniff("stdin", export.as_bytes()), InputFormat::Csv);
    }
}
