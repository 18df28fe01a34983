//! XML read by its structure: OpenIOC's file hash items, and any other XML (or HTML) as its
//! text and attribute values.
//!
//! In OpenIOC an indicator item says what it matches in a `Context` element
//! (`search="FileItem/Md5sum"`) and gives the value in the `Content` beside it: the values of
//! `…/Md5sum`, `…/Sha1sum` and `…/Sha256sum` items are file hashes (a bad one is `invalid`);
//! a hash-shaped value of any other item (an import hash, a certificate) is excluded by what
//! its search names; network items (`Network/DNS`, `Network/URI`, `PortItem/remoteIP`,
//! `Network/String`...) give their URL, host or address ([`network_item`]). Elsewhere, text
//! is read as text, judged by the element's name or its `type` attribute (`<Imphash>`,
//! `<Hash type="imphash">`) and by the words before each token. The tokenizer is lenient
//! (HTML reports go through it): it never fails, and it keeps physical line numbers.

use std::io::{self, BufRead};

use super::text::scan_value;
use super::{MAX_LINE, Sink, trim};
use crate::context::{self, Exclusion};

/// Reads XML; returns the number of lines.
pub(crate) fn read(input: &mut dyn BufRead, sink: &mut Sink<'_>) -> io::Result<u64> {
    let mut x = Tokens {
        input,
        line: 1,
        last: None,
    };
    // Open elements: local name and `type` attribute.
    let mut stack: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    let mut search: Option<Vec<u8>> = None;
    loop {
        let line = x.line;
        let (text, more) = x.take_until(b"<")?;
        if !trim(&text).is_empty() {
            on_text(&text, line, stack.last(), search.as_deref(), sink);
        }
        if !more {
            break;
        }
        let line = x.line;
        let (tag, _) = x.take_until(b">")?;
        if tag.starts_with(b"!--") {
            if !tag.ends_with(b"--") {
                x.take_until(b"-->")?;
            }
        } else if let Some(cdata) = tag.strip_prefix(b"![CDATA[") {
            let mut text = cdata.to_vec();
            text.push(b'>');
            if !tag.ends_with(b"]]") {
                let (rest, _) = x.take_until(b"]]>")?;
                text.extend_from_slice(&rest);
            } else {
                text.truncate(text.len().saturating_sub(3));
            }
            on_text(&text, line, stack.last(), search.as_deref(), sink);
        } else if tag.starts_with(b"!") || tag.starts_with(b"?") {
            // A declaration or processing instruction.
        } else if let Some(name) = tag.strip_prefix(b"/") {
            let name = local(name.trim_ascii());
            if name.eq_ignore_ascii_case(b"IndicatorItem") {
                search = None;
            }
            if let Some(at) = stack.iter().rposition(|(n, _)| n.as_slice() == name) {
                stack.truncate(at);
            }
        } else {
            let self_closing = tag.ends_with(b"/");
            let body = if self_closing {
                &tag[..tag.len() - 1]
            } else {
                &tag[..]
            };
            let (name, attributes) = parse_tag(body);
            let element_why = context::field(&name);
            let mut kind = None;
            for (attr, value) in &attributes {
                if attr.eq_ignore_ascii_case(b"type") {
                    kind = Some(value.clone());
                }
                if name.eq_ignore_ascii_case(b"Context") && attr.eq_ignore_ascii_case(b"search") {
                    search = Some(value.clone());
                }
                if value.len() >= 32 {
                    let why = context::field(attr).or(element_why);
                    scan_value(value, line, why, sink);
                }
            }
            if !self_closing {
                stack.push((name, kind));
            }
        }
    }
    Ok(x.lines())
}

/// A text node inside `element` (its name and `type`), with OpenIOC's `search` in force.
fn on_text(
    text: &[u8],
    line: u64,
    element: Option<&(Vec<u8>, Option<Vec<u8>>)>,
    search: Option<&[u8]>,
    sink: &mut Sink<'_>,
) {
    // Line breaks before the first character belong to the text's lines.
    let (name, kind) = match element {
        Some((n, k)) => (n.as_slice(), k.as_deref()),
        None => (&b""[..], None),
    };
    if name.eq_ignore_ascii_case(b"Content")
        && let Some(search) = search
    {
        let item = search.rsplit(|&b| b == b'/').next().unwrap_or(search);
        let is_file_hash = [&b"md5sum"[..], b"sha1sum", b"sha256sum"]
            .iter()
            .any(|w| item.eq_ignore_ascii_case(w));
        if is_file_hash {
            let value = trim(text);
            if !value.is_empty() {
                sink.hash_value(value, value_line(text, line));
            }
        } else {
            network_item(search, text, line, sink);
            let why = context::field(item).unwrap_or(Exclusion::NotAFile);
            scan_value(text, line, Some(why), sink);
        }
        return;
    }
    let why = context::field(name).or_else(|| kind.and_then(context::field));
    scan_value(text, line, why, sink);
}

/// The URL, host or address of an OpenIOC network item: `Network/DNS`, `DnsEntryItem/Host`,
/// `Network/URI`, `UrlHistoryItem/URL`, `PortItem/remoteIP` as one value each (a `URI` that
/// is only a path is passed over); `Network/String` (a request, a header) as prose. The
/// victim's own side (`PortItem/localIP`) is not an indicator.
fn network_item(search: &[u8], text: &[u8], line: u64, sink: &mut Sink<'_>) {
    let search = String::from_utf8_lossy(search).to_ascii_lowercase();
    let (document, item) = search.split_once('/').unwrap_or(("", &search));
    let value = matches!(
        (document, item),
        ("network", "dns" | "uri" | "url")
            | ("dnsentryitem", "host" | "recordname")
            | ("urlhistoryitem", "url" | "hostname")
            | ("portitem", "remoteip")
            | ("processitem", "portlist/portitem/remoteip")
    );
    let line = value_line(text, line);
    if value {
        if let Ok(found) = super::indicators::value(trim(text)) {
            sink.indicator(found, line, false);
        }
    } else if (document, item) == ("network", "string") {
        super::indicators::scan(trim(text), line, super::indicators::Prose::default(), sink);
    }
}

/// The line of a text node's value: the node's `line` and the line breaks before its first
/// character.
fn value_line(text: &[u8], line: u64) -> u64 {
    let lead = text.len() - trim_start(text).len();
    line + memchr::memchr_iter(b'\n', &text[..lead]).count() as u64
}

fn trim_start(b: &[u8]) -> &[u8] {
    let i = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    &b[i..]
}

/// A tag's local name (namespace prefix dropped) and its attributes (`name="value"`).
/// An attribute: name and value.
type Attribute = (Vec<u8>, Vec<u8>);

fn parse_tag(body: &[u8]) -> (Vec<u8>, Vec<Attribute>) {
    let end = body
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .unwrap_or(body.len());
    let name = local(&body[..end]).to_vec();
    let mut attributes = Vec::new();
    let mut rest = &body[end..];
    while let Some(eq) = rest.iter().position(|&b| b == b'=') {
        let attr = local(rest[..eq].trim_ascii()).to_vec();
        let after = rest[eq + 1..].trim_ascii_start();
        let (value, next) = match after.first() {
            Some(&q) if q == b'"' || q == b'\'' => match memchr::memchr(q, &after[1..]) {
                Some(close) => (&after[1..1 + close], &after[close + 2..]),
                None => (&after[1..], &b""[..]),
            },
            _ => {
                let stop = after
                    .iter()
                    .position(|b| b.is_ascii_whitespace())
                    .unwrap_or(after.len());
                (&after[..stop], &after[stop..])
            }
        };
        attributes.push((attr, value.to_vec()));
        rest = next;
    }
    (name, attributes)
}

fn local(name: &[u8]) -> &[u8] {
    match memchr::memrchr(b':', name) {
        Some(i) => &name[i + 1..],
        None => name,
    }
}

struct Tokens<'a> {
    input: &'a mut dyn BufRead,
    line: u64,
    last: Option<u8>,
}

impl Tokens<'_> {
    /// The bytes up to `stop` (consumed, not returned), at most [`MAX_LINE`] of them kept;
    /// false when the input ended first.
    fn take_until(&mut self, stop: &[u8]) -> io::Result<(Vec<u8>, bool)> {
        let mut out = Vec::new();
        let first = stop[0];
        loop {
            let buf = self.input.fill_buf()?;
            if buf.is_empty() {
                return Ok((out, false));
            }
            match memchr::memchr(first, buf) {
                Some(i) => {
                    self.line += memchr::memchr_iter(b'\n', &buf[..=i]).count() as u64;
                    if out.len() < MAX_LINE {
                        out.extend_from_slice(&buf[..i.min(MAX_LINE)]);
                    }
                    self.last = Some(buf[i]);
                    self.input.consume(i + 1);
                    if stop.len() == 1 {
                        return Ok((out, true));
                    }
                    // A longer terminator: check the bytes after this one.
                    let rest = &stop[1..];
                    let next = self.peek(rest.len())?;
                    if next == rest {
                        self.input.consume(rest.len());
                        self.last = rest.last().copied();
                        return Ok((out, true));
                    }
                    out.push(first);
                }
                None => {
                    let n = buf.len();
                    self.line += memchr::memchr_iter(b'\n', buf).count() as u64;
                    if out.len() < MAX_LINE {
                        out.extend_from_slice(&buf[..n.min(MAX_LINE - out.len())]);
                    }
                    self.last = Some(buf[n - 1]);
                    self.input.consume(n);
                }
            }
        }
    }

    /// Up to `n` next bytes, not consumed (fewer when the buffer holds fewer: a terminator
    /// split across reads is then missed once and found at its next occurrence; lenient).
    fn peek(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let buf = self.input.fill_buf()?;
        Ok(buf[..n.min(buf.len())].to_vec())
    }

    /// Physical lines read.
    fn lines(&self) -> u64 {
        super::lines_read(self.line, self.last)
    }
}
