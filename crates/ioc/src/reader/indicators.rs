//! URLs, domains and IP addresses found in prose and in values, for the readers.
//!
//! Free text is scanned line by line ([`Lines`]: a line at a time, whatever the buffers) for
//! tokens that can hold an indicator: a token is cut at white space, quotes, angle brackets,
//! commas, semicolons and pipes. A token with `://` (once refanged) is a URL from its scheme
//! on, its trailing punctuation and unbalanced closing brackets dropped (`(see hxxp://a[.]b/c).`
//! gives `http://a.b/c`); any other token is split at what cannot be in a host name, and each
//! piece with a dot is tried as an IP address (`1.2.3.4:443` included) and then as a domain.
//! What does not parse is passed over: prose is not a list, and a sentence's `e.g.` is no
//! error. What parses is judged ([`crate::indicator::Indicator::exclusion`]; and, for a value
//! written plainly, not defanged, [`crate::indicator::Indicator::prose_exclusion`]: a report's
//! links to its sources and file names are not its IOCs) and handed to the sink, which counts
//! the kinds `--kinds` did not choose.

use std::borrow::Cow;

use super::{MAX_LINE, Sink};
use crate::indicator::{self, Indicator};

/// Splits buffers into lines for [`scan_line`], keeping at most [`MAX_LINE`] bytes of a line.
#[derive(Default)]
pub(crate) struct Lines {
    partial: Vec<u8>,
    line: u64,
}

impl Lines {
    /// Scans the complete lines of `chunk` (the start of the first one may have come in
    /// earlier chunks); keeps the incomplete end for the next call.
    pub(crate) fn feed(&mut self, chunk: &[u8], sink: &mut Sink<'_>) {
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', chunk) {
            self.line += 1;
            if self.partial.is_empty() {
                scan_line(&chunk[start..end], self.line, sink);
            } else {
                let room = MAX_LINE.saturating_sub(self.partial.len());
                let take = (end - start).min(room);
                self.partial.extend_from_slice(&chunk[start..start + take]);
                scan_line(&self.partial, self.line, sink);
                self.partial.clear();
            }
            start = end + 1;
        }
        let rest = &chunk[start..];
        let room = MAX_LINE.saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&rest[..rest.len().min(room)]);
    }

    /// Scans the last line, if it had no newline.
    pub(crate) fn finish(&mut self, sink: &mut Sink<'_>) {
        if !self.partial.is_empty() {
            self.line += 1;
            let last = std::mem::take(&mut self.partial);
            scan_line(&last, self.line, sink);
        }
    }
}

/// Whether a line can hold an indicator at all: a dot, a colon or a defanged `[dot]`.
fn may_hold(line: &[u8]) -> bool {
    memchr::memchr2(b'.', b':', line).is_some()
        || memchr::memmem::find(line, b"dot").is_some()
        || memchr::memmem::find(line, b"DOT").is_some()
}

/// Token boundaries in prose (ASCII: a byte of a multi-byte character is never one).
static BOUNDARY: [bool; 256] = {
    let mut table = [false; 256];
    let bytes = b" \t\r\n\x0b\x0c\"'<>,;|`\\";
    let mut i = 0;
    while i < bytes.len() {
        table[bytes[i] as usize] = true;
        i += 1;
    }
    table
};

/// Bytes that a token needs one of to hold an indicator: a dot, a colon (IPv6, a URL) or an
/// opening bracket (`evil[dot]com`).
static MARK: [bool; 256] = {
    let mut table = [false; 256];
    let bytes = b".:[({";
    let mut i = 0;
    while i < bytes.len() {
        table[bytes[i] as usize] = true;
        i += 1;
    }
    table
};

/// The URLs, domains and IP addresses of one line of prose.
pub(crate) fn scan_line(line: &[u8], line_no: u64, sink: &mut Sink<'_>) {
    if !may_hold(line) {
        return;
    }
    // Tokens are cut on bytes; only a token with a mark is decoded and looked at.
    let tokens = line
        .split(|&b| BOUNDARY[b as usize])
        .filter(|t| t.len() >= 4 && t.iter().any(|&b| MARK[b as usize]));
    for raw in tokens {
        let text = String::from_utf8_lossy(raw);
        let token: &str = &text;
        let refanged = indicator::refang(token);
        let defanged = matches!(refanged, Cow::Owned(_));
        let t: &str = &refanged;
        if let Some(at) = t.find("://") {
            // After the last character that is not a scheme's letter (found by fuzzing: it
            // may be a multi-byte one, a replaced invalid byte, so step over all of it).
            let scheme_start = t[..at]
                .char_indices()
                .rev()
                .find(|&(_, c)| !c.is_ascii_alphabetic())
                .map_or(0, |(i, c)| i + c.len_utf8());
            let url = trim_url(&t[scheme_start..]);
            let url = match url.get(..4) {
                Some(h) if h.eq_ignore_ascii_case("hxxp") => {
                    Cow::Owned(format!("http{}", &url[4..]))
                }
                _ => Cow::Borrowed(url),
            };
            if let Ok(found) = indicator::parse(&url) {
                sink.indicator(found, line_no, !defanged);
            }
            continue;
        }
        if t.contains('@') {
            // An e-mail address: VirusTotal has no such object.
            continue;
        }
        for piece in t.split(|c: char| !(c.is_alphanumeric() || matches!(c, '.' | '-' | ':'))) {
            let piece = piece.trim_matches(|c| matches!(c, '.' | '-' | ':'));
            if piece.len() < 4 || !(piece.contains('.') || piece.matches(':').count() >= 2) {
                continue;
            }
            if let Some(found) = host(piece) {
                sink.indicator(found, line_no, !defanged);
            }
        }
    }
}

/// An IP address (with or without a port) or a domain, if `piece` is one.
fn host(piece: &str) -> Option<Indicator> {
    if let Ok(ip) = piece.parse::<std::net::IpAddr>() {
        return Some(Indicator::Ip(ip));
    }
    if let Some((ip, port)) = piece.rsplit_once(':')
        && port.bytes().all(|b| b.is_ascii_digit())
        && let Ok(ip) = ip.parse::<std::net::Ipv4Addr>()
    {
        return Some(Indicator::Ip(ip.into()));
    }
    if piece.contains(':') || piece.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    indicator::parse(piece).ok()
}

/// A URL cut out of prose: trailing punctuation and unbalanced closing brackets dropped.
fn trim_url(url: &str) -> &str {
    let mut u = url;
    loop {
        let Some(last) = u.chars().last() else {
            return u;
        };
        let unbalanced =
            |open: char, close: char| u.matches(close).count() > u.matches(open).count();
        let drop = match last {
            '.' | ',' | ';' | ':' | '!' | '?' | '*' => true,
            ')' => unbalanced('(', ')'),
            ']' => unbalanced('[', ']'),
            '}' => unbalanced('{', '}'),
            _ => false,
        };
        if !drop {
            return u;
        }
        u = &u[..u.len() - last.len_utf8()];
    }
}

/// A value that should be one IOC (a list's line, a cell of a column named for IOCs): the
/// indicator, or why it is not one.
pub(crate) fn value(value: &[u8]) -> Result<Indicator, String> {
    let text = String::from_utf8_lossy(value);
    let text = text.trim();
    let text = text.trim_end_matches(['.', ',', ';']);
    indicator::parse(text).map_err(|e| format!("not a hash, URL, domain or IP address ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::{InputReport, Item, ReadOptions};

    fn scan(text: &str) -> (Vec<String>, InputReport) {
        let mut found = Vec::new();
        let mut report = InputReport::default();
        let options = ReadOptions::default();
        let mut emit = |item: Item| {
            if let Item::Indicator(i, _) = item {
                found.push(format!("{}:{}", i.kind(), i.canonical()));
            }
        };
        let mut sink = Sink::new(0, &options, false, &mut report, &mut emit);
        sink.kinds = crate::indicator::Kinds::ALL;
        let mut lines = Lines::default();
        lines.feed(text.as_bytes(), &mut sink);
        lines.finish(&mut sink);
        (found, report)
    }

    #[test]
    fn a_multi_byte_character_before_a_scheme_is_stepped_over_not_split() {
        // Found by fuzzing (fuzz/seeds/read_input/regression-scheme-boundary): an invalid
        // byte inside "https" became U+FFFD, and the scheme's start fell inside it (a panic).
        let (found, _) = scan("- h\u{FFFD}tps://evil-host.top/a and \u{e9}http://bad-site.ru/x\n");
        assert!(
            found.contains(&"url:http://bad-site.ru/x".to_owned()),
            "{found:?}"
        );
        assert!(found.iter().all(|f| !f.contains('\u{FFFD}')), "{found:?}");
    }

    #[test]
    fn prose_gives_defanged_and_plain_indicators_with_punctuation_dropped() {
        let (found, report) = scan(
            "The loader (hxxps://evil[.]com/a/b.php?id=1) contacted 45.77.12[.]9:443 and\n\
             cdn.bad-domain[.]net. It resolved update.evil-cdn.ru, see https://attack.mitre.org/T1059.\n\
             Files: install.sh, notes.md; mail admin@corp-mail.com; version 1.2; e.g. this.\n\
             Internal: 10.0.0.5 and 2001:db8::1 and fe80::1; v6 C2 2606:4700:4700::1111.\n",
        );
        assert_eq!(
            found,
            [
                "url:https://evil.com/a/b.php?id=1",
                "ip:45.77.12.9",
                "domain:cdn.bad-domain.net",
                "domain:update.evil-cdn.ru",
                "ip:2606:4700:4700::1111",
            ]
        );
        let by = &report.excluded_by_reason;
        assert_eq!(by.get("reference_site"), Some(&1), "{by:?}");
        assert_eq!(by.get("file_name"), Some(&2), "{by:?}");
        assert_eq!(by.get("private_address"), Some(&1), "{by:?}");
        assert_eq!(by.get("documentation_address"), Some(&1), "{by:?}");
        assert_eq!(by.get("link_local_address"), Some(&1), "{by:?}");
        assert_eq!(report.indicators, 5);
    }

    #[test]
    fn a_defanged_reference_site_is_an_indicator() {
        let (found, _) = scan("payload on hxxps://raw.githubusercontent[.]com/x/y/main/p.ps1\n");
        assert_eq!(
            found,
            ["url:https://raw.githubusercontent.com/x/y/main/p.ps1"]
        );
    }

    #[test]
    fn markdown_links_and_brackets_keep_the_url_whole() {
        let (found, _) = scan(
            "[C2](hxxp://c2[.]evil.org/gate.php) and <http://198.51.100.20/x> and \
             http://en.site.io/wiki/Foo_(bar)\n",
        );
        assert_eq!(
            found,
            [
                "url:http://c2.evil.org/gate.php",
                "url:http://en.site.io/wiki/Foo_(bar)"
            ]
        );
    }

    #[test]
    fn lines_are_numbered_across_buffers() {
        let mut found = Vec::new();
        let mut report = InputReport::default();
        let options = ReadOptions::default();
        let mut emit = |item: Item| {
            if let Item::Indicator(i, o) = item {
                found.push((i.canonical(), o.line));
            }
        };
        let mut sink = Sink::new(0, &options, false, &mut report, &mut emit);
        sink.kinds = crate::indicator::Kinds::ALL;
        let mut lines = Lines::default();
        let text = b"a\nevil[.]com b\n\nx 8.8.4[.]4";
        for chunk in text.chunks(3) {
            lines.feed(chunk, &mut sink);
        }
        lines.finish(&mut sink);
        assert_eq!(
            found,
            [("evil.com".to_owned(), 2), ("8.8.4.4".to_owned(), 4)]
        );
    }
}
