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
//! the kinds `--kinds` did not choose. Reports repeat their words, so what a token gave is
//! kept in the sink's [`Memo`] and replayed when the same token comes again.

use std::borrow::Cow;

use super::{IS_HEX, MAX_LINE, Sink};
use crate::context::Exclusion;
use crate::indicator::{self, Indicator};

/// Splits buffers into lines for [`scan`], keeping at most [`MAX_LINE`] bytes of a line,
/// and follows Markdown's fenced code blocks and AsciiDoc's `[source,LANG]` listing blocks (a
/// block tagged with a programming language holds code, whose plain names are member
/// accesses, not hosts).
#[derive(Default)]
pub(crate) struct Lines {
    partial: Vec<u8>,
    line: u64,
    /// Inside a fenced block: whether it is tagged with a programming language.
    fence: Option<bool>,
    /// The language of an AsciiDoc `[source,LANG]` line, for the `----` block under it.
    source: Option<bool>,
    /// Inside an AsciiDoc listing block: whether its language is a programming language.
    listing: Option<bool>,
    /// Where the current line's dots, colons and brackets are (from the buffer's pass).
    marks: Vec<usize>,
}

impl Lines {
    /// Scans the complete lines of `chunk`, whose line breaks are at `breaks` (the start of
    /// the first line may have come in earlier chunks); keeps the incomplete end for the next
    /// call.
    pub(crate) fn feed(&mut self, chunk: &[u8], breaks: &[usize], sink: &mut Sink<'_>) {
        // The buffer's dots, colons and brackets, and its defanged `[dot]`s and `(dot)`s,
        // found in one pass each: a line with no dot, colon or defanged dot holds no
        // indicator and is not scanned (the check `scan` makes, made for the whole buffer at
        // once); the others' token loop starts from the marks found.
        let mut marks = memchr::memchr3_iter(b'.', b':', b'[', chunk).peekable();
        let mut dots = memchr::memchr2_iter(b'[', b'(', chunk)
            .filter(|&i| dot_after(chunk, i))
            .peekable();
        let mut start = 0;
        for &end in breaks {
            self.line += 1;
            if self.partial.is_empty() {
                let mut has = Marks::default();
                self.marks.clear();
                while let Some(m) = marks.next_if(|&m| m < end) {
                    has.any |= chunk[m] != b'[';
                    self.marks.push(m - start);
                }
                while let Some(d) = dots.next_if(|&d| d < end) {
                    has.any = true;
                    has.paren_dot |= chunk[d] == b'(';
                }
                self.one(&chunk[start..end], Some(has), sink);
            } else {
                let room = MAX_LINE.saturating_sub(self.partial.len());
                let take = (end - start).min(room);
                self.partial.extend_from_slice(&chunk[start..start + take]);
                let line = std::mem::take(&mut self.partial);
                self.one(&line, None, sink);
                self.partial = line;
                self.partial.clear();
                while marks.next_if(|&m| m < end).is_some() {}
                while dots.next_if(|&d| d < end).is_some() {}
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
            self.one(&last, None, sink);
        }
    }

    /// One line: a fence opens or closes a code block; any other line is scanned (with its
    /// marks when the buffer's pass found them).
    fn one(&mut self, line: &[u8], marks: Option<Marks>, sink: &mut Sink<'_>) {
        if marks.is_some_and(|m| !m.any) {
            // Most lines: nothing to read, and no fence, listing delimiter or `[source,…]`
            // line (each starts with one of these bytes), which a line only ends.
            let first = line.iter().find(|b| !b.is_ascii_whitespace());
            if !first.is_some_and(|b| matches!(b, b'`' | b'~' | b'-' | b'[')) {
                self.source = None;
                return;
            }
        }
        let trimmed = line.trim_ascii();
        if trimmed.starts_with(b"```") || trimmed.starts_with(b"~~~") {
            self.fence = match self.fence {
                Some(_) => None,
                None => Some(code_language(&trimmed[3..])),
            };
            return;
        }
        if self.fence.is_none() && trimmed.len() >= 4 && trimmed.iter().all(|&b| b == b'-') {
            // AsciiDoc's listing delimiter, closing a listing or opening one under a
            // `[source,LANG]` line; any other run of dashes (a rule, a heading's underline)
            // is prose.
            if self.listing.take().is_some() {
                return;
            }
            if let Some(code) = self.source.take() {
                self.listing = Some(code);
                return;
            }
        }
        self.source = trimmed
            .strip_prefix(b"[source,")
            .and_then(|rest| rest.strip_suffix(b"]"))
            .map(code_language);
        let prose = Prose {
            code: self.fence == Some(true) || self.listing == Some(true),
            ..Prose::default()
        };
        // Marks passed in come with their places in `self.marks`; otherwise `tokens` finds them.
        let at = marks.is_some().then_some(&self.marks[..]);
        let marks = marks.unwrap_or_else(|| Marks::of(line));
        if marks.any {
            tokens(line, self.line, prose, at, marks.paren_dot, sink);
        }
    }
}

/// What a line holds that an indicator needs: a dot, a colon or a defanged `[dot]`
/// (`any`), and whether a `(dot)` is among them.
#[derive(Clone, Copy, Default)]
struct Marks {
    any: bool,
    paren_dot: bool,
}

impl Marks {
    fn of(line: &[u8]) -> Marks {
        let paren_dot = dot_word(line, b'(');
        Marks {
            any: paren_dot || memchr::memchr2(b'.', b':', line).is_some() || dot_word(line, b'['),
            paren_dot,
        }
    }
}

/// Whether a fence's info string names a programming language with member access
/// (`js`, `python`...): not a shell (`nslookup evil.com` names a host) nor plain text.
fn code_language(info: &[u8]) -> bool {
    let word = info
        .trim_ascii()
        .split(|b| b.is_ascii_whitespace() || *b == b'{' || *b == b',')
        .next()
        .unwrap_or(b"");
    let word = String::from_utf8_lossy(word).to_ascii_lowercase();
    [
        "c",
        "c#",
        "c++",
        "cpp",
        "cs",
        "csharp",
        "go",
        "golang",
        "java",
        "javascript",
        "js",
        "jsx",
        "kotlin",
        "lua",
        "php",
        "py",
        "python",
        "rb",
        "ruby",
        "rust",
        "swift",
        "ts",
        "typescript",
        "vb",
        "vba",
        "vbs",
        "vbscript",
    ]
    .contains(&word.as_str())
}

/// Whether `line` has a `[dot]` (with `open` `[`) or a `(dot)` (with `(`), in any case.
fn dot_word(line: &[u8], open: u8) -> bool {
    memchr::memchr_iter(open, line).any(|i| dot_after(line, i))
}

/// Whether `dot` (any case) follows the bracket at `bytes[i]`.
fn dot_after(bytes: &[u8], i: usize) -> bool {
    bytes
        .get(i + 1..i + 4)
        .is_some_and(|w| w.eq_ignore_ascii_case(b"dot"))
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

/// How a line of prose is read.
#[derive(Clone, Copy, Default)]
pub(crate) struct Prose {
    /// The comment of a `hash;comment` list entry (LOKI): a plain URL with a scheme there is
    /// the entry's source (`Turla Carbon - https://vendor.com/report`), not an indicator.
    pub(crate) comment: bool,
    /// A line of a code block tagged with a programming language: a plain name outside a
    /// string literal is code (`x.name`), not a host.
    pub(crate) code: bool,
    /// A cell of an export's command line or message: a URL there is what the process
    /// fetched (`iwr https://raw.githubusercontent.com/…/p.ps1`), never a report's source,
    /// so the reference-site rule does not apply to URLs.
    pub(crate) command: bool,
}

/// The URLs, domains and IP addresses of one line, read as `prose` says.
pub(crate) fn scan(line: &[u8], line_no: u64, prose: Prose, sink: &mut Sink<'_>) {
    // A line can hold an indicator only with a dot, a colon or a defanged `[dot]`.
    let marks = Marks::of(line);
    if marks.any {
        tokens(line, line_no, prose, None, marks.paren_dot, sink);
    }
}

/// The tokens of a line that holds a mark ([`scan`]); `marks`: where its dots, colons and
/// brackets are, when the buffer's pass found them; `paren_dot` when it has a `(dot)`.
fn tokens(
    line: &[u8],
    line_no: u64,
    prose: Prose,
    marks: Option<&[usize]>,
    paren_dot: bool,
    sink: &mut Sink<'_>,
) {
    let mut known = marks.unwrap_or(&[]).iter();
    // Tokens are cut on bytes; only a token with a mark is decoded and looked at. The marks
    // come from the buffer's pass (or `memchr` on the line) and each is widened to its token,
    // so that the bytes of a line without one (a table row of hashes, most of prose) are
    // passed over at memchr's speed; a line with a `(dot)` (no other mark in its token) is
    // split whole.
    let mut from = 0;
    while from < line.len() {
        let mark = if paren_dot {
            line[from..]
                .iter()
                .position(|&b| MARK[b as usize])
                .map(|m| from + m)
        } else if marks.is_some() {
            known.find(|&&m| m >= from).copied()
        } else {
            memchr::memchr3(b'.', b':', b'[', &line[from..]).map(|m| from + m)
        };
        let Some(at) = mark else {
            return;
        };
        let start = line[..at]
            .iter()
            .rposition(|&b| BOUNDARY[b as usize])
            .map_or(0, |i| i + 1);
        let end = line[at..]
            .iter()
            .position(|&b| BOUNDARY[b as usize])
            .map_or(line.len(), |i| at + i);
        from = end + 1;
        let raw = &line[start..end];
        // A word that ends a sentence (`seconds.`, `(see above):`) holds no indicator.
        let core = raw
            .trim_ascii_end()
            .strip_suffix(b".")
            .or_else(|| raw.strip_suffix(b":"))
            .or_else(|| raw.strip_suffix(b"),"))
            .or_else(|| raw.strip_suffix(b")."))
            .unwrap_or(raw);
        // The mark found is in the core unless it was the punctuation cut off.
        if core.len() < 4 || !(at - start < core.len() || core.iter().any(|&b| MARK[b as usize])) {
            continue;
        }
        let quoted = start > 0 && matches!(line[start - 1], b'"' | b'\'');
        let code = prose.code && !quoted;
        remembered(raw, line_no, Prose { code, ..prose }, sink);
    }
}

/// Whether `raw` is a plain dotted word that [`token`] would find nothing in, told at a
/// glance: only letters, digits, dots and dashes (no scheme, path, defang or port), not
/// `hxxp…`, and its one piece not a host by [`maybe_host`] (`T1021.001`, `<sha256>.bin`,
/// `invoke.png`): most of a report's dotted words, told before any decoding or refanging.
fn plain_and_no_host(raw: &[u8]) -> bool {
    if !raw
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        || raw
            .get(..4)
            .is_some_and(|h| h.eq_ignore_ascii_case(b"hxxp"))
    {
        return false;
    }
    let start = raw.iter().position(|&b| b.is_ascii_alphanumeric());
    let end = raw.iter().rposition(|&b| b.is_ascii_alphanumeric());
    let piece = match (start, end) {
        (Some(s), Some(e)) => &raw[s..=e],
        _ => return true,
    };
    // Checked in `token`'s order: too short or no dot, then not a host's shape.
    let text = std::str::from_utf8(piece).unwrap_or_default();
    text.len() < 4 || !text.contains('.') || !maybe_host(text)
}

/// A token's outcome: an indicator taken, or what was left out and why.
type Judged = Result<Indicator, Exclusion>;

/// What recent tokens of prose gave, by their bytes and how they were read. Reports repeat
/// their words (a domain named ten times over, `e.g.`, a table's file names, the same link
/// under every section), so a token met again is not judged again. [`MEMO_SLOTS`] slots in
/// sets of two, allocated on first use: a new token takes the first slot of its set and
/// moves the one there to the second, evicting that one. Each slot has a 4-byte tag (the
/// hash's other bits and the length) in a table of its own, 16 KiB that stay cached, so that
/// a token not there is told without touching its slot; tokens longer than [`MEMO_TOKEN`]
/// (URLs with paths, mostly distinct) and tokens holding a digest ([`holds_digest`]) are not
/// kept.
#[derive(Default)]
pub(crate) struct Memo {
    tags: Vec<u32>,
    slots: Vec<Slot>,
    /// What the token being judged gives, before it goes into its slot.
    scratch: Vec<Judged>,
}

/// A token's hash for the [`Memo`]: its bytes eight at a time, each word mixed in, and its
/// [`Prose`] flags (fixed, so that a run's work, and its benchmark, do not depend on a
/// random seed).
fn memo_hash(raw: &[u8], flags: u8) -> u64 {
    let mix = |h: u64, word: u64| {
        (h ^ word)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29)
    };
    let mut words = raw.chunks_exact(8);
    let mut h = raw.len() as u64 | u64::from(flags) << 8;
    for word in &mut words {
        h = mix(h, u64::from_le_bytes(word.try_into().unwrap_or_default()));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        // Byte by byte: a copy of a few bytes is a call to `memcpy`, slower than the loop.
        let word = rest.iter().rev().fold(0u64, |w, &b| w << 8 | u64::from(b));
        h = mix(h, word);
    }
    vtbulk_rng::mix64(h)
}

/// One remembered token: what it gave, and its bytes and the byte of its [`Prose`] flags.
/// What it gave comes first and is kept in the slot when it is one thing or nothing (nearly
/// always), so that a hit reads one cache line for a short token, not a vector elsewhere.
#[derive(Clone)]
#[repr(C)]
struct Slot {
    gave: Gave,
    key: [u8; MEMO_TOKEN + 1],
}

/// What a token gave.
#[derive(Clone)]
enum Gave {
    /// One indicator or one exclusion (most tokens that give anything).
    One(Judged),
    /// Nothing (an empty vector, which allocates nothing) or several.
    Many(Vec<Judged>),
}

impl Gave {
    fn of(judged: &mut Vec<Judged>) -> Gave {
        match judged.len() {
            0 => Gave::Many(Vec::new()),
            1 => Gave::One(judged.remove(0)),
            _ => Gave::Many(std::mem::take(judged)),
        }
    }

    fn as_slice(&self) -> &[Judged] {
        match self {
            Gave::One(one) => std::slice::from_ref(one),
            Gave::Many(many) => many,
        }
    }
}

/// Slots of a [`Memo`] (a power of two), in sets of two: 16 KiB of tags, slots of about
/// 450 KiB (touched only when a tag matches).
const MEMO_SLOTS: usize = 1 << 12;

/// The longest token a [`Memo`] keeps.
const MEMO_TOKEN: usize = 80;

/// Whether `raw` holds a run of at least 32 hex digits (`<sha256>.bin`, a link to a file's
/// page): such a token is nearly always met once, so it is judged without the [`Memo`], where
/// it would only push out tokens that do come back. Any 32 bytes in a row hold one position
/// that is 31 more than a multiple of 32 (from the token's start, then from each run's end),
/// so only those are probed.
fn holds_digest(raw: &[u8]) -> bool {
    let is_hex = |b: &u8| IS_HEX[*b as usize];
    let mut probe = 31;
    while probe < raw.len() {
        if !is_hex(&raw[probe]) {
            probe += 32;
            continue;
        }
        let start = raw[..probe]
            .iter()
            .rposition(|b| !is_hex(b))
            .map_or(0, |i| i + 1);
        let end = raw[probe..]
            .iter()
            .position(|b| !is_hex(b))
            .map_or(raw.len(), |i| probe + i);
        if end - start >= 32 {
            return true;
        }
        probe = end + 32;
    }
    false
}

/// [`token`], through the sink's [`Memo`]: what it gives, counted at `line_no`.
fn remembered(raw: &[u8], line_no: u64, prose: Prose, sink: &mut Sink<'_>) {
    if raw.len() > MEMO_TOKEN || holds_digest(raw) {
        let mut found = Vec::new();
        token(raw, prose, sink, &mut found);
        return tell(&found, line_no, sink);
    }
    let flags = u8::from(prose.comment) | u8::from(prose.code) << 1 | u8::from(prose.command) << 2;
    let mut memo = std::mem::take(&mut sink.memo);
    if memo.slots.is_empty() {
        let empty = Slot {
            gave: Gave::Many(Vec::new()),
            key: [0; MEMO_TOKEN + 1],
        };
        memo.slots = vec![empty; MEMO_SLOTS];
        memo.tags = vec![0; MEMO_SLOTS];
    }
    let hash = memo_hash(raw, flags);
    // A set of two slots, so that two frequent tokens of one set do not evict each other
    // at every turn: the newer in the first, the one it displaced in the second.
    let set = (hash >> (64 - MEMO_SLOTS.trailing_zeros())) as usize & !1;
    // Never 0 (an empty slot): the length with the flags' byte is at least 1.
    let tag = (hash as u32 & !0x7f) | (raw.len() + 1) as u32;
    // A slot's key: the token's bytes, then its flags.
    let holds = |memo: &Memo, at: usize| {
        let key = &memo.slots[at].key;
        memo.tags[at] == tag && key[..raw.len()] == *raw && key[raw.len()] == flags
    };
    let at = if holds(&memo, set) {
        set
    } else if holds(&memo, set + 1) {
        set + 1
    } else {
        memo.tags.swap(set, set + 1);
        memo.slots.swap(set, set + 1);
        memo.tags[set] = tag;
        memo.scratch.clear();
        token(raw, prose, sink, &mut memo.scratch);
        let slot = &mut memo.slots[set];
        slot.gave = Gave::of(&mut memo.scratch);
        slot.key[..raw.len()].copy_from_slice(raw);
        slot.key[raw.len()] = flags;
        set
    };
    tell(memo.slots[at].gave.as_slice(), line_no, sink);
    sink.memo = memo;
}

/// Counts (and hands on) what a token gave.
fn tell(judged: &[Judged], line_no: u64, sink: &mut Sink<'_>) {
    for j in judged {
        match j {
            Ok(found) => sink.take(found, line_no),
            Err(why) => sink.excluded(*why),
        }
    }
}

/// One token of prose: a URL (with a scheme, or a `host/path`), or the hosts in it; what
/// each gives (judged by the sink) goes to `out`.
fn token(raw: &[u8], prose: Prose, sink: &Sink<'_>, out: &mut Vec<Judged>) {
    if !plain_and_no_host(raw) {
        read_token(raw, prose, sink, out);
    }
}

/// [`token`] without the glance of [`plain_and_no_host`].
fn read_token(raw: &[u8], prose: Prose, sink: &Sink<'_>, out: &mut Vec<Judged>) {
    // Valid UTF-8 (nearly always ASCII) is borrowed after a fast check.
    let text =
        std::str::from_utf8(raw).map_or_else(|_| String::from_utf8_lossy(raw), Cow::Borrowed);
    let token: &str = &text;
    let refanged = indicator::refang(token);
    let defanged = matches!(refanged, Cow::Owned(_));
    // A URL written plainly in prose may be the report's source; in a command line, never.
    let plain_url = !defanged && !prose.command;
    let t: &str = &refanged;
    let scheme = indicator::scheme_at(t);
    if let Some(at) = scheme {
        // After the last character that is not a scheme's letter (found by fuzzing: it
        // may be a multi-byte one, a replaced invalid byte, so step over all of it).
        let scheme_start = t[..at]
            .char_indices()
            .rev()
            .find(|&(_, c)| !c.is_ascii_alphabetic())
            .map_or(0, |(i, c)| i + c.len_utf8());
        let url = trim_url(&t[scheme_start..]);
        let url = match url.get(..4) {
            Some(h) if h.eq_ignore_ascii_case("hxxp") => Cow::Owned(format!("http{}", &url[4..])),
            _ => Cow::Borrowed(url),
        };
        if !defanged && (plain_url || prose.comment) && indicator::reference_link(&url) {
            // A plain link to a source, whether in prose or a list's comment.
            out.push(Err(Exclusion::Reference));
        } else if let Ok(found) = indicator::parse(&url) {
            if prose.comment && !defanged && found.exclusion().is_none() {
                out.push(Err(Exclusion::Reference));
            } else {
                out.push(sink.judge(found, plain_url));
            }
        }
        return;
    }
    if memchr::memchr(b'@', t.as_bytes()).is_some() {
        // An e-mail address: VirusTotal has no such object.
        return;
    }
    if memchr::memchr(b'/', t.as_bytes()).is_some()
        && let Some(found) = schemeless(t, defanged)
    {
        out.push(sink.judge(found, plain_url));
        return;
    }
    let ascii = t.is_ascii();
    let mut rest = t;
    while !rest.is_empty() {
        // What cannot be in a host name ends a piece; in ASCII, byte by byte.
        let end = if ascii {
            rest.bytes()
                .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':')))
        } else {
            rest.find(|c: char| !(c.is_alphanumeric() || matches!(c, '.' | '-' | ':')))
        }
        .unwrap_or(rest.len());
        let (piece, after) = rest.split_at(end);
        let next = after.chars().next();
        rest = next.map_or("", |c| &after[c.len_utf8()..]);
        let piece = piece.trim_matches(|c| matches!(c, '.' | '-' | ':'));
        if piece.len() < 4 || !(piece.contains('.') || piece.matches(':').count() >= 2) {
            continue;
        }
        if !maybe_host(piece) {
            continue;
        }
        let Some(found) = host(piece) else {
            continue;
        };
        // `req.open(`, `list.map(`: a call on a member; any plain name in tagged code.
        let call = next == Some('(');
        if !defanged && matches!(found, Indicator::Domain(_)) {
            if prose.code || call {
                out.push(Err(Exclusion::Code));
                continue;
            }
            if indicator::detection_word(piece) {
                out.push(Err(Exclusion::DetectionName));
                continue;
            }
        }
        out.push(sink.judge(found, !defanged));
    }
}

/// A `host/path` token without a scheme as a URL (`dropzone[.]site/B7x2Q9k`,
/// `185.7.214.9/t4`), when its host parses; a plain one only when its host is written in
/// lower case, as hosts are (`ASP.NET/Core` is a technology).
fn schemeless(t: &str, defanged: bool) -> Option<Indicator> {
    let t = t.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let url = trim_url(t);
    let slash = url.find('/')?;
    if !defanged && url[..slash].bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    match indicator::parse(url) {
        Ok(found @ Indicator::Url(_)) => Some(found),
        _ => None,
    }
}

/// Whether `piece` can be a host at all, decided without parsing it: an address's shape
/// (digits and dots, or colons), or a last label that is a top-level domain the Public
/// Suffix List knows (or a reserved one). Most dotted words of prose (`config.json`,
/// `invoke.png`, `T1021.001`) fail here, before any allocation.
fn maybe_host(piece: &str) -> bool {
    let bytes = piece.as_bytes();
    if !piece.is_ascii()
        || memchr::memchr(b':', bytes).is_some()
        || bytes.iter().all(|&b| b.is_ascii_digit() || b == b'.')
    {
        return true;
    }
    let label = match memchr::memrchr(b'.', bytes) {
        Some(i) => &bytes[i + 1..],
        None => return false,
    };
    if label.is_empty() || label.len() > 63 {
        return false;
    }
    // `psl` judges a name; `a.<label>` asks about the label alone.
    let mut name = [0u8; 65];
    name[..2].copy_from_slice(b"a.");
    for (to, from) in name[2..].iter_mut().zip(label) {
        *to = from.to_ascii_lowercase();
    }
    let name = &name[..2 + label.len()];
    psl::suffix(name).is_some_and(|s| s.is_known())
        || indicator::RESERVED_TLDS.contains(&std::str::from_utf8(&name[2..]).unwrap_or(""))
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

    fn breaks(chunk: &[u8]) -> Vec<usize> {
        memchr::memchr_iter(b'\n', chunk).collect()
    }

    fn scan(text: &str) -> (Vec<String>, InputReport) {
        let mut found = Vec::new();
        let mut report = InputReport::default();
        let options = ReadOptions::default();
        let mut emit = |item: Item<'_>| {
            if let Item::Indicator(i, _) = item {
                found.push(format!("{}:{}", i.kind(), i.canonical()));
            }
        };
        let mut sink = Sink::new(0, &options, false, &mut report, &mut emit);
        sink.kinds = crate::indicator::Kinds::ALL;
        let mut lines = Lines::default();
        lines.feed(text.as_bytes(), &breaks(text.as_bytes()), &mut sink);
        lines.finish(&mut sink);
        drop(sink);
        (found, report)
    }

    proptest::proptest! {
        /// A word told at a glance to hold no host gives nothing when read in full: dotted
        /// words of letters, digits and dashes, ending in top-level domains and not, file
        /// extensions, numbers, `hxxp`.
        #[test]
        fn a_word_passed_over_at_a_glance_gives_nothing_when_read_in_full(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "a", "0", "1.2", "-", ".", "evil", "com", "bin", "ac", "png", "top",
                    "hxxp", "d41d8cd98f00b204e9800998ecf8427e", "Win32", "test", "256", "x",
                ]),
                1..7,
            ),
            dots in proptest::collection::vec(proptest::bool::ANY, 7),
        ) {
            let word: String = parts
                .iter()
                .zip(&dots)
                .map(|(p, dot)| if *dot { format!("{p}.") } else { (*p).to_owned() })
                .collect();
            let mut report = InputReport::default();
            let mut nothing = |_: Item<'_>| {};
            let options = ReadOptions::default();
            let mut sink = Sink::new(0, &options, false, &mut report, &mut nothing);
            sink.kinds = crate::indicator::Kinds::ALL;
            if plain_and_no_host(word.as_bytes()) {
                for prose in [Prose::default(), Prose { code: true, ..Prose::default() }] {
                    let mut found = Vec::new();
                    read_token(word.as_bytes(), prose, &sink, &mut found);
                    proptest::prop_assert!(found.is_empty(), "{} gave {:?}", word, found);
                }
            }
        }
    }

    #[test]
    fn a_digest_in_a_token_is_found_as_a_search_finds_it() {
        // Every layout of a lead of 0 to 40 other bytes, then two or three hex runs of the
        // lengths around the probes' spacing, one or two other bytes apart: the probing says
        // what a search of every window of 32 bytes says.
        let lengths = [1, 2, 15, 16, 30, 31, 32, 33, 40];
        for lead in 0..=40 {
            for &a in &lengths {
                for &b in &lengths {
                    for &c in &[0, 2, 32] {
                        for gap in ["x", "[.]"] {
                            let word = format!(
                                "{}{}{gap}{}{gap}{}",
                                "-".repeat(lead),
                                "f".repeat(a),
                                "0".repeat(b),
                                "e".repeat(c)
                            );
                            let bytes = word.as_bytes();
                            let search = bytes
                                .windows(32)
                                .any(|w| w.iter().all(u8::is_ascii_hexdigit));
                            assert_eq!(holds_digest(bytes), search, "{word}");
                        }
                    }
                }
            }
        }
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
    fn a_tagged_code_block_is_code_but_its_string_literals_and_urls_are_read() {
        let (found, report) = scan(
            "```js\nreq.open(\"GET\", \"cdn.evil-site.top\");\nreturn x.name;\n\
             fetch('http://185.7.214.9/x');\n```\n\
             ```\nupdate-check.net\n```\n\
             ```bash\nnslookup beacon.evil-site.top\n```\n\
             After: list.map(f) and dropper.evil-site.top, not Trojan.Agent.ac.\n",
        );
        assert_eq!(
            found,
            [
                "domain:cdn.evil-site.top",
                "url:http://185.7.214.9/x",
                "domain:update-check.net",
                "domain:beacon.evil-site.top",
                "domain:dropper.evil-site.top",
            ]
        );
        // `req.open(` and `x.name` in the js block, `list.map(` in prose.
        assert_eq!(
            report.excluded_by_reason.get("code"),
            Some(&3),
            "{report:?}"
        );
    }

    #[test]
    fn an_asciidoc_source_block_in_a_programming_language_is_code_too() {
        let (found, report) = scan(
            "[source,javascript]\n----\nreturn x.name;\n----\n\
             [source,text]\n----\nupdate-check.net\n----\n\
             Heading\n-------\n\
             [source,js]\n----\nlist.size;\n----\n\
             ----\nbeacon.evil-site.top\n----\n",
        );
        assert_eq!(
            found,
            ["domain:update-check.net", "domain:beacon.evil-site.top"]
        );
        assert_eq!(
            report.excluded_by_reason.get("code"),
            Some(&1),
            "{report:?}"
        );
    }

    #[test]
    fn a_schemeless_url_is_taken_defanged_anywhere_and_plain_when_written_as_a_host() {
        let (found, _) = scan(
            "- dropzone[.]site/B7x2Q9k/tool_rar\n\
             seen at update-cdn.top/a.exe and (185.7.214.9/t4).\n\
             not ASP.NET/Core, TCP/IP, and/or, 24/7 or 10.0.0.0/8; but 185.7.214.0/24 is\n",
        );
        assert_eq!(
            found,
            [
                "url:http://dropzone.site/B7x2Q9k/tool_rar",
                "url:http://update-cdn.top/a.exe",
                "url:http://185.7.214.9/t4",
                // The policy for a network in prose: its address, as before this rule.
                "domain:asp.net",
                "ip:185.7.214.0",
            ]
        );
    }

    #[test]
    fn lines_are_numbered_across_buffers() {
        let mut found = Vec::new();
        let mut report = InputReport::default();
        let options = ReadOptions::default();
        let mut emit = |item: Item<'_>| {
            if let Item::Indicator(i, o) = item {
                found.push((i.canonical(), o.line));
            }
        };
        let mut sink = Sink::new(0, &options, false, &mut report, &mut emit);
        sink.kinds = crate::indicator::Kinds::ALL;
        let mut lines = Lines::default();
        let text = b"a\nevil[.]com b\n\nx 8.8.4[.]4";
        for chunk in text.chunks(3) {
            lines.feed(chunk, &breaks(chunk), &mut sink);
        }
        lines.finish(&mut sink);
        drop(sink);
        assert_eq!(
            found,
            [("evil.com".to_owned(), 2), ("8.8.4.4".to_owned(), 4)]
        );
    }
}
