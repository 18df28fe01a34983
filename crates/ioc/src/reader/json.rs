//! JSON and NDJSON read by their structure: MISP events, STIX 2 bundles, Windows event logs,
//! EDR exports, and any other JSON as its string values.
//!
//! A small streaming lexer (no tree is built: an export of millions of events is read in
//! constant memory) keeps a stack of the open objects; each object's string members are held
//! until it closes, so that rules can look at siblings whatever their order:
//!
//! - a **MISP attribute** (`type`, `value`, and `category` or `to_ids`...): the file hash
//!   types (`md5`, `sha1`, `sha256`, `filename|…`, `malware-sample`) are read, and a value that
//!   is not a hash is `invalid`; `imphash`, `authentihash`, `pehash`, `tlsh`, `ssdeep`,
//!   `x509-fingerprint-*`, `ja3*`... are excluded by their type; other types (domains, URLs,
//!   comments) are not files and their hash-shaped tokens are counted as `not_a_file`;
//! - MISP attributes typed as URLs, domains or addresses (`url`, `domain`, `hostname`,
//!   `ip-src`, `ip-dst`, `domain|ip`, `ip-dst|port`) give those, when `--kinds` takes them
//!   (not by default for JSON: they are counted as `kind_not_chosen`), and so do STIX
//!   patterns' `url:value`, `domain-name:value`, `ipv4-addr:value` and `ipv6-addr:value`;
//! - **STIX 2** objects by `type`: an indicator's `pattern` gives the `file:hashes.*` (and
//!   `artifact:hashes.*`) values, not `x509-certificate:hashes`; a `file`'s `hashes`
//!   dictionary by algorithm (MD5, SHA-1, SHA-256; `SSDEEP`, `TLSH`, `SHA-512` excluded); an
//!   `x509-certificate`'s hashes are certificates; the prose of `attack-pattern`,
//!   `course-of-action`, `identity`, `location` and `marking-definition` objects is not read;
//! - **everything else** (Windows events, Sysmon's `Hashes`, EDR fields): every string value
//!   as text, judged by its key (`DeviceId`, `imphash`) and by the words in front of each
//!   token within it (`SHA256=…,IMPHASH=…`); and, when `--kinds` takes them, the URLs, hosts
//!   and addresses of the event's network fields (ECS's `url.full`, `destination.ip`,
//!   `dns.question.name`; Sysmon's `DestinationIp`, `QueryName`: [`network`]).
//!
//! Lines are physical lines (the line a string starts on), so NDJSON gives the event's line
//! and a pretty-printed document the line of the value. Broken JSON is read as far as it goes:
//! the lexer never fails, it skips what it does not understand; a document that ends with
//! objects or arrays still open (an export cut short) is reported as damaged.

use std::io::{self, BufRead};

use super::text::{scan_value, tokens};
use super::{MAX_LINE, Sink, trim};
use crate::context::{self, Exclusion};

/// String members an object holds before its oldest are read without waiting for its end.
const MAX_MEMBERS: usize = 4096;

/// Reads JSON or NDJSON; returns the number of lines.
pub(crate) fn read(input: &mut dyn BufRead, sink: &mut Sink<'_>) -> io::Result<u64> {
    let mut lx = Lexer {
        input,
        line: 1,
        last: None,
    };
    let mut stack: Vec<Frame> = Vec::new();
    while let Some(b) = lx.next_token()? {
        match b {
            b'{' | b'[' => {
                lx.bump(1);
                let key = match stack.last() {
                    Some(Frame::Object(o)) => o.key_for_value(),
                    Some(Frame::Array { key }) => key.clone(),
                    None => None,
                };
                stack.push(if b == b'{' {
                    Frame::Object(Obj::new(key))
                } else {
                    Frame::Array { key }
                });
            }
            b'}' | b']' => {
                lx.bump(1);
                if let Some(frame) = stack.pop() {
                    if let Frame::Object(obj) = frame {
                        finish(obj, &mut stack, sink);
                    }
                    if let Some(Frame::Object(parent)) = stack.last_mut() {
                        parent.value_done();
                    }
                }
            }
            b'"' => {
                let line = lx.line;
                let s = lx.string()?;
                match stack.last_mut() {
                    Some(Frame::Object(o)) if !o.after_colon => o.cur_key = Some(s),
                    Some(Frame::Object(o)) => {
                        let key = o.cur_key.take().unwrap_or_default();
                        o.after_colon = false;
                        o.members.push(Member {
                            key,
                            value: s,
                            line,
                        });
                        if o.members.len() > MAX_MEMBERS {
                            let early: Vec<Member> = o.members.drain(..MAX_MEMBERS / 2).collect();
                            let parent_why = o.parent_reason();
                            for m in early {
                                plain(&m, parent_why, sink);
                            }
                        }
                    }
                    Some(Frame::Array { key }) => {
                        let why = key.as_deref().and_then(context::field);
                        if let Some(key) = key {
                            network(None, key, &s, line, sink);
                        }
                        scan_value(&s, line, why, sink);
                    }
                    None => scan_value(&s, line, None, sink),
                }
            }
            b':' => {
                lx.bump(1);
                if let Some(Frame::Object(o)) = stack.last_mut() {
                    o.after_colon = true;
                }
            }
            b',' => {
                lx.bump(1);
                if let Some(Frame::Object(o)) = stack.last_mut() {
                    o.value_done();
                }
            }
            _ => {
                lx.skip_scalar()?;
                if let Some(Frame::Object(o)) = stack.last_mut()
                    && o.after_colon
                {
                    o.value_done();
                }
            }
        }
    }
    cut_short(stack, lx.lines(), sink);
    Ok(lx.lines())
}

/// The end of the input with `stack` still open (empty for a whole document): what the open
/// objects hold is still read, and a document cut short is reported as damage, as a
/// truncated compressed file is.
fn cut_short(mut stack: Vec<Frame>, lines: u64, sink: &mut Sink<'_>) {
    if !stack.is_empty() {
        let line = lines.max(1);
        sink.damaged(
            line,
            format!(
                "the JSON ends inside {} open object(s) or array(s) at line {line}: cut short",
                stack.len()
            ),
        );
    }
    while let Some(frame) = stack.pop() {
        if let Frame::Object(obj) = frame {
            finish(obj, &mut stack, sink);
        }
    }
}

enum Frame {
    Object(Obj),
    Array { key: Option<Vec<u8>> },
}

struct Member {
    key: Vec<u8>,
    value: Vec<u8>,
    line: u64,
}

struct Obj {
    /// The key this object is the value of (for an array's element, the array's key).
    key: Option<Vec<u8>>,
    /// The key whose value comes next.
    cur_key: Option<Vec<u8>>,
    after_colon: bool,
    /// String members, in order.
    members: Vec<Member>,
    /// Members of a `hashes` dictionary inside it (algorithm, value).
    hashes: Vec<Member>,
}

impl Obj {
    fn new(key: Option<Vec<u8>>) -> Obj {
        Obj {
            key,
            cur_key: None,
            after_colon: false,
            members: Vec::new(),
            hashes: Vec::new(),
        }
    }

    fn key_for_value(&self) -> Option<Vec<u8>> {
        if self.after_colon {
            self.cur_key.clone()
        } else {
            None
        }
    }

    fn value_done(&mut self) {
        self.cur_key = None;
        self.after_colon = false;
    }

    fn get(&self, key: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.key == key.as_bytes())
    }

    /// What the object's own key says about its members (`"certificate": {...}`), ids aside.
    fn parent_reason(&self) -> Option<Exclusion> {
        self.key
            .as_deref()
            .and_then(context::field)
            .filter(|&why| why != Exclusion::Id)
    }
}

/// An object closed: apply the rule its members call for.
fn finish(obj: Obj, stack: &mut [Frame], sink: &mut Sink<'_>) {
    // A `hashes` dictionary belongs to the object around it, which knows what it hashes.
    if obj.key.as_deref() == Some(b"hashes")
        && let Some(Frame::Object(parent)) = stack.last_mut()
        && parent.after_colon
    {
        let Obj {
            members, hashes, ..
        } = obj;
        parent.hashes.extend(members);
        parent.hashes.extend(hashes);
        return;
    }
    let kind = obj.get("type").map(|m| lower(&m.value));
    let is_misp = obj.get("value").is_some()
        && ["category", "to_ids", "object_relation", "event_id", "uuid"]
            .iter()
            .any(|k| obj.get(k).is_some());
    match kind.as_deref() {
        Some(t) if is_misp => misp(&obj, t, sink),
        Some("indicator") if obj.get("pattern").is_some() => stix_indicator(&obj, sink),
        Some("x509-certificate") => {
            for m in obj.members.iter().chain(&obj.hashes) {
                scan_value(&m.value, m.line, Some(Exclusion::Certificate), sink);
            }
        }
        Some(
            "attack-pattern" | "course-of-action" | "identity" | "location" | "marking-definition",
        ) => {
            for m in &obj.members {
                scan_value(&m.value, m.line, Some(Exclusion::NotAFile), sink);
            }
        }
        _ => {
            let parent_why = obj.parent_reason();
            for m in &obj.members {
                network(obj.key.as_deref(), &m.key, &m.value, m.line, sink);
                plain(m, parent_why, sink);
            }
            // A `hashes` dictionary of a file (STIX, or anything else): by algorithm.
            for m in &obj.hashes {
                scan_value(
                    &m.value,
                    m.line,
                    context::field(&m.key).or(parent_why),
                    sink,
                );
            }
        }
    }
}

/// The event fields that name the other end of a connection or a lookup: ECS's `url.full`,
/// `url.original`, `destination.ip`, `source.ip`, `dns.question.name`, `dns.resolved_ip`...
/// (nested or flattened) and Sysmon's `DestinationIp`, `DestinationHostname`, `QueryName`,
/// `QueryResults`. Read when `--kinds` takes URLs, domains or IPs (not JSON's default); the
/// host's own address is private and left out by its scope. A value that is none (a
/// relative `url.original`) is passed over: an export is not a list.
fn network(parent: Option<&[u8]>, key: &[u8], value: &[u8], line: u64, sink: &mut Sink<'_>) {
    if !sink.kinds.any_indicator() || value.len() < 4 {
        return;
    }
    // `parent.key` (nested), or the key alone (flattened, or Sysmon's flat names).
    let named = |name: &str| {
        let name = name.as_bytes();
        key.eq_ignore_ascii_case(name)
            || name.iter().rposition(|&b| b == b'.').is_some_and(|dot| {
                key.eq_ignore_ascii_case(&name[dot + 1..])
                    && parent.is_some_and(|p| p.eq_ignore_ascii_case(&name[..dot]))
            })
    };
    let one = NETWORK_FIELDS.iter().any(|f| named(f));
    let list = named("QueryResults");
    if !one && !list {
        return;
    }
    for v in value.split(|&b| list && b == b';') {
        let v = trim(v);
        // Sysmon writes a v4 answer as a mapped v6 address.
        let v = v.strip_prefix(b"::ffff:").unwrap_or(v);
        if let Ok(found) = super::indicators::value(v) {
            sink.indicator(found, line, false);
        }
    }
}

/// The event fields [`network`] reads, one value each.
const NETWORK_FIELDS: &[&str] = &[
    "url.full",
    "url.original",
    "url.domain",
    "destination.ip",
    "destination.domain",
    "destination.address",
    "source.ip",
    "source.domain",
    "source.address",
    "server.ip",
    "server.domain",
    "client.ip",
    "question.name",
    "dns.question.name",
    "resolved_ip",
    "DestinationIp",
    "DestinationHostname",
    "SourceIp",
    "QueryName",
];

/// A string member read as text, judged by its key (and the object's key).
fn plain(m: &Member, parent_why: Option<Exclusion>, sink: &mut Sink<'_>) {
    // Most values (names, times, paths) are too short to hold a token: skip the key's check.
    if m.value.len() < 32 {
        return;
    }
    scan_value(
        &m.value,
        m.line,
        context::field(&m.key).or(parent_why),
        sink,
    );
}

/// A MISP attribute of type `t`.
fn misp(obj: &Obj, t: &str, sink: &mut Sink<'_>) {
    for m in &obj.members {
        match m.key.as_slice() {
            b"type" => {}
            b"value" => {
                let file = matches!(
                    t,
                    "md5"
                        | "sha1"
                        | "sha256"
                        | "filename|md5"
                        | "filename|sha1"
                        | "filename|sha256"
                        | "malware-sample"
                );
                if file {
                    let value = trim(&m.value);
                    let hex = match memchr::memrchr(b'|', value) {
                        Some(i) if t.contains('|') || t == "malware-sample" => {
                            trim(&value[i + 1..])
                        }
                        _ => value,
                    };
                    sink.value(hex, m.line);
                } else {
                    misp_indicator(t, &m.value, m.line, sink);
                    let why = context::field(t.as_bytes()).unwrap_or(Exclusion::NotAFile);
                    scan_value(&m.value, m.line, Some(why), sink);
                }
            }
            // Ids and references of the attribute itself.
            _ => plain(m, None, sink),
        }
    }
}

/// The URL, domain or address of a MISP attribute typed as one (`url`, `domain`,
/// `hostname`, `ip-src`, `ip-dst`, `domain|ip`, `ip-dst|port`...); `link` is the event's
/// reference, not an indicator. A value of such a type that is none is `invalid`.
fn misp_indicator(t: &str, value: &[u8], line: u64, sink: &mut Sink<'_>) {
    let (first, second) = match t {
        "url" | "uri" | "domain" | "hostname" | "ip-src" | "ip-dst" => (Some(value), None),
        "ip-src|port" | "ip-dst|port" | "hostname|port" => {
            (value.split(|&b| b == b'|').next(), None)
        }
        "domain|ip" => {
            let mut parts = value.splitn(2, |&b| b == b'|');
            (parts.next(), parts.next())
        }
        _ => return,
    };
    for v in [first, second].into_iter().flatten() {
        let v = trim(v);
        match super::indicators::value(v) {
            Ok(found) => sink.indicator(found, line, false),
            Err(why) if sink.kinds.any_indicator() => sink.invalid(v, line, why),
            Err(_) => {}
        }
    }
}

/// The URLs, domains and addresses a STIX pattern compares (`[url:value = '…']`,
/// `[domain-name:value = '…']`, `[ipv4-addr:value = '…']`, `[ipv6-addr:value = '…']`).
fn pattern_indicators(p: &[u8], line: u64, sink: &mut Sink<'_>) {
    for object in [
        &b"url:value"[..],
        b"domain-name:value",
        b"ipv4-addr:value",
        b"ipv6-addr:value",
    ] {
        for at in memchr::memmem::find_iter(p, object) {
            let rest = &p[at + object.len()..];
            let Some(open) = rest.iter().position(|&b| b == b'\'') else {
                continue;
            };
            let value = &rest[open + 1..];
            // `\'` escapes a quote inside the value.
            let mut end = 0;
            while end < value.len()
                && !(value[end] == b'\'' && (end == 0 || value[end - 1] != b'\\'))
            {
                end += 1;
            }
            let v = &value[..end];
            match super::indicators::value(v) {
                Ok(found) => sink.indicator(found, line, false),
                Err(why) if sink.kinds.any_indicator() => sink.invalid(v, line, why),
                Err(_) => {}
            }
        }
    }
}

/// A STIX indicator: its pattern's comparisons, and its other members as text.
fn stix_indicator(obj: &Obj, sink: &mut Sink<'_>) {
    for m in &obj.members {
        if m.key == b"pattern" {
            pattern_indicators(&m.value, m.line, sink);
            pattern(&m.value, m.line, sink);
        } else {
            plain(m, None, sink);
        }
    }
}

/// The hash-shaped tokens of a STIX pattern, judged by the comparison they are in:
/// `[file:hashes.'SHA-256' = '…']` is a file, `[x509-certificate:hashes.'SHA-1' = '…']` a
/// certificate, `file:hashes.SSDEEP` another digest.
fn pattern(p: &[u8], line: u64, sink: &mut Sink<'_>) {
    for (start, len) in tokens(p) {
        let before = &p[..start];
        let comparison = match before.iter().rposition(|&b| b == b'[' || b == b'(') {
            Some(i) => &before[i + 1..],
            None => before,
        };
        let why = match find_last(comparison, b":hashes") {
            Some(i) => {
                let object_start = comparison[..i]
                    .iter()
                    .rposition(|b| b.is_ascii_whitespace())
                    .map_or(0, |k| k + 1);
                let object = &comparison[object_start..i];
                let algo: Vec<u8> = comparison[i + 7..]
                    .iter()
                    .skip_while(|&&b| b == b'.')
                    .take_while(|&&b| b != b'=' && !b.is_ascii_whitespace())
                    .filter(|&&b| b != b'\'' && b != b'"')
                    .copied()
                    .collect();
                if object.eq_ignore_ascii_case(b"x509-certificate") {
                    Some(Exclusion::Certificate)
                } else {
                    context::field(&algo)
                }
            }
            None => context::before(&before[before.len().saturating_sub(context::BEFORE)..]),
        };
        sink.token(&p[start..start + len], line, why);
    }
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

fn lower(b: &[u8]) -> String {
    String::from_utf8_lossy(trim(b)).to_ascii_lowercase()
}

/// The lexer: tokens off a buffered input, counting lines.
struct Lexer<'a> {
    input: &'a mut dyn BufRead,
    line: u64,
    last: Option<u8>,
}

impl Lexer<'_> {
    fn bump(&mut self, n: usize) {
        self.input.consume(n);
    }

    /// The first byte of the next token (whitespace skipped), not consumed.
    fn next_token(&mut self) -> io::Result<Option<u8>> {
        loop {
            let buf = self.input.fill_buf()?;
            if buf.is_empty() {
                return Ok(None);
            }
            match buf.iter().position(|b| !b.is_ascii_whitespace()) {
                Some(i) => {
                    self.line += memchr::memchr_iter(b'\n', &buf[..i]).count() as u64;
                    let b = buf[i];
                    self.last = Some(b);
                    self.input.consume(i);
                    return Ok(Some(b));
                }
                None => {
                    let n = buf.len();
                    self.line += memchr::memchr_iter(b'\n', buf).count() as u64;
                    self.last = Some(buf[n - 1]);
                    self.input.consume(n);
                }
            }
        }
    }

    /// A string (the opening quote next), unescaped; escaped line breaks become spaces (they
    /// are not physical lines). Ends at its closing quote, or at a raw line break (broken
    /// JSON: the damage stays on its line). At most [`MAX_LINE`] bytes are kept.
    fn string(&mut self) -> io::Result<Vec<u8>> {
        self.input.consume(1);
        let mut out = Vec::new();
        let mut escape: Option<Vec<u8>> = None;
        loop {
            let buf = self.input.fill_buf()?;
            if buf.is_empty() {
                return Ok(out);
            }
            let mut i = 0;
            while i < buf.len() {
                if let Some(esc) = &mut escape {
                    esc.push(buf[i]);
                    i += 1;
                    if let Some(done) = unescape(esc) {
                        if out.len() < MAX_LINE {
                            out.extend_from_slice(&done);
                        }
                        escape = None;
                    }
                    continue;
                }
                let Some(k) = memchr::memchr3(b'"', b'\\', b'\n', &buf[i..]) else {
                    if out.len() < MAX_LINE {
                        out.extend_from_slice(&buf[i..]);
                    }
                    break;
                };
                if out.len() < MAX_LINE {
                    out.extend_from_slice(&buf[i..i + k]);
                }
                i += k;
                match buf[i] {
                    b'"' => {
                        self.last = Some(b'"');
                        self.input.consume(i + 1);
                        return Ok(out);
                    }
                    b'\n' => {
                        self.line += 1;
                        self.last = Some(b'\n');
                        self.input.consume(i + 1);
                        return Ok(out);
                    }
                    _ => {
                        escape = Some(Vec::with_capacity(6));
                        i += 1;
                    }
                }
            }
            let n = buf.len();
            self.last = Some(buf[n - 1]);
            self.input.consume(n);
        }
    }

    /// Skips a number, `true`, `false`, `null`, or anything else up to the next structural
    /// character.
    fn skip_scalar(&mut self) -> io::Result<()> {
        loop {
            let buf = self.input.fill_buf()?;
            if buf.is_empty() {
                return Ok(());
            }
            let stop = buf.iter().position(|&b| {
                b.is_ascii_whitespace()
                    || matches!(b, b',' | b'}' | b']' | b':' | b'"' | b'{' | b'[')
            });
            match stop {
                Some(0) => {
                    // A stray structural byte the caller did not take: skip it.
                    self.last = Some(buf[0]);
                    self.input.consume(1);
                    return Ok(());
                }
                Some(i) => {
                    self.last = Some(buf[i - 1]);
                    self.input.consume(i);
                    return Ok(());
                }
                None => {
                    let n = buf.len();
                    self.last = Some(buf[n - 1]);
                    self.input.consume(n);
                }
            }
        }
    }

    /// Physical lines read.
    fn lines(&self) -> u64 {
        super::lines_read(self.line, self.last)
    }
}

/// The bytes an escape sequence (after its backslash) stands for, once it is complete.
fn unescape(esc: &[u8]) -> Option<Vec<u8>> {
    let first = *esc.first()?;
    let simple = |b: u8| Some(vec![b]);
    match first {
        b'"' => simple(b'"'),
        b'\\' => simple(b'\\'),
        b'/' => simple(b'/'),
        b'n' | b'r' | b't' | b'b' | b'f' => simple(b' '),
        b'u' => {
            if esc.len() < 5 {
                return None;
            }
            let hex = std::str::from_utf8(&esc[1..5]).ok();
            let code = hex.and_then(|h| u32::from_str_radix(h, 16).ok());
            let c = code.and_then(char::from_u32).unwrap_or('\u{fffd}');
            let mut buf = [0u8; 4];
            Some(c.encode_utf8(&mut buf).as_bytes().to_vec())
        }
        // Not a JSON escape (broken JSON): kept as written, so that it still separates what
        // stands on either side (`MD5\MD5` is two tokens, not one of 64 digits).
        other => Some(vec![b'\\', other]),
    }
}
