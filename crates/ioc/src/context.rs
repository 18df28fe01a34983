//! What a hash-shaped token is, judged from the words around it.
//!
//! A 32, 40 or 64 hex-digit token is not always a file: reports and exports carry import hashes
//! (`imphash`), Authenticode hashes, certificate thumbprints, TLS fingerprints (`ja3`),
//! pseudonymised names (`UserPII_<hex>`) and machine or tenant ids, all of the same length as
//! a file hash. Looking those up spends quota on answers that mean nothing. Every reader asks
//! the same two questions here: what does the label in front of a token say ([`before`]), and
//! what does the name of the field or column holding it say ([`field`]). An exclusion is
//! counted by its [`Exclusion`] reason, never silently dropped, and `--keep-all-hex` turns all
//! of it off.

use std::fmt;

/// Why a hash-shaped token was not taken as a file hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Exclusion {
    /// An import hash (`imphash`, "import hash").
    ImportHash,
    /// An Authenticode hash (`authentihash`).
    Authentihash,
    /// A certificate's thumbprint or fingerprint, or any hash of an X.509 certificate.
    Certificate,
    /// A TLS client or server fingerprint (`ja3`, `ja3s`, `jarm`).
    TlsFingerprint,
    /// Another digest that is not a file id (`pehash`, `tlsh`, `ssdeep`, `sha512`, `vhash`...).
    OtherDigest,
    /// A pseudonym (`UserPII_<hex>`): a name hashed for privacy.
    Pseudonym,
    /// A value of a field or column named like an id (`DeviceId`, `TenantId`, `…Guid`).
    Id,
    /// A commented-out line of a plain list (`# <hash>`).
    Commented,
    /// A structured value typed as something other than a file (a MISP `domain`, say).
    NotAFile,
    /// An IP address nothing on the internet can say anything about (private, loopback,
    /// documentation...): named by its scope.
    Scoped(crate::indicator::Scope),
    /// A name reserved for documentation (`example.com`, `in-addr.arpa`).
    DocumentationDomain,
    /// A plain (not defanged) link or name of a reference site in prose (`attack.mitre.org`,
    /// `virustotal.com`): the report's sources, not its indicators.
    Reference,
    /// A plain name in prose that reads as a file name (`install.sh`, `notes.md`) although
    /// its last label is a top-level domain.
    FileName,
    /// A URL, domain or IP address of a kind `--kinds` did not choose.
    KindNotChosen,
    /// A name under a top-level name reserved by RFC 2606/6761 (`.test`, `.invalid`,
    /// `.example`, `.localhost`) or `.local` (RFC 6762).
    ReservedName,
    /// The bare name of a well-known hosting, paste or link site (`pastebin.com`) in prose.
    WellKnownSite,
    /// A plain name in prose that is an antivirus detection (`Trojan.Win32.Agent.ac`).
    DetectionName,
    /// A plain name in code: a member access or call (`req.open(`, `list.map(`), or any name
    /// in a code block tagged with a programming language.
    Code,
    /// A typed row of a feed whose type is no kind VirusTotal looks up (`email`, `mutex`,
    /// `filename`, a `Description` row).
    OtherType,
}

impl Exclusion {
    /// Every reason a hash-shaped token is left out, in report order.
    pub const ALL: [Exclusion; 9] = [
        Exclusion::ImportHash,
        Exclusion::Authentihash,
        Exclusion::Certificate,
        Exclusion::TlsFingerprint,
        Exclusion::OtherDigest,
        Exclusion::Pseudonym,
        Exclusion::Id,
        Exclusion::Commented,
        Exclusion::NotAFile,
    ];

    /// The name used in summaries (`import_hash`, `certificate`...).
    pub fn name(self) -> &'static str {
        match self {
            Exclusion::ImportHash => "import_hash",
            Exclusion::Authentihash => "authentihash",
            Exclusion::Certificate => "certificate",
            Exclusion::TlsFingerprint => "tls_fingerprint",
            Exclusion::OtherDigest => "other_digest",
            Exclusion::Pseudonym => "pseudonym",
            Exclusion::Id => "id",
            Exclusion::Commented => "commented",
            Exclusion::NotAFile => "not_a_file",
            Exclusion::Scoped(scope) => scope.name(),
            Exclusion::DocumentationDomain => "documentation_domain",
            Exclusion::Reference => "reference_site",
            Exclusion::FileName => "file_name",
            Exclusion::KindNotChosen => "kind_not_chosen",
            Exclusion::ReservedName => "reserved_name",
            Exclusion::WellKnownSite => "well_known_site",
            Exclusion::DetectionName => "detection_name",
            Exclusion::Code => "code",
            Exclusion::OtherType => "other_type",
        }
    }
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a name says about the values under it: the name of a JSON key, a CSV column, an XML
/// element or attribute, or the label in front of a token in text (`IMPHASH=`, `Thumbprint:`).
/// `None`: nothing against it being a file hash.
pub fn field(name: &[u8]) -> Option<Exclusion> {
    let squashed = Squashed::of(name);
    let s = squashed.as_bytes();
    if let Some(reason) = digest_word(s) {
        return Some(reason);
    }
    id_name(name, s).then_some(Exclusion::Id)
}

/// Whether `name` (squashed: `s`) is named like an id: `DeviceId`, `TENANT_ID`, `ReportID`,
/// `ProcessGuid`, `uuid`; not "paid" or "void".
fn id_name(name: &[u8], s: &[u8]) -> bool {
    let trimmed = trim_ascii(name);
    let lower_ends = |suffix: &[u8]| s.ends_with(suffix);
    // CrowdStrike's agent and customer ids are bare `aid` and `cid`.
    s == b"id"
        || s == b"aid"
        || s == b"cid"
        || lower_ends(b"guid")
        || lower_ends(b"uuid")
        || trimmed.ends_with(b"Id")
        || trimmed.ends_with(b"ID")
        || trimmed.ends_with(b"_id")
        || trimmed.ends_with(b"-id")
        || trimmed.ends_with(b".id")
}

/// Words naming digests that are not file ids, each with the reason it gives; where a name
/// holds words of several reasons, the first reason in this order wins (MISP's
/// `ja3-fingerprint-md5` is a TLS fingerprint, not a certificate's).
const DIGEST_WORDS: [(&[u8], Exclusion); 27] = [
    (b"imphash", Exclusion::ImportHash),
    (b"importhash", Exclusion::ImportHash),
    (b"authentihash", Exclusion::Authentihash),
    (b"authenticode", Exclusion::Authentihash),
    (b"ja3", Exclusion::TlsFingerprint),
    (b"jarm", Exclusion::TlsFingerprint),
    (b"ja4", Exclusion::TlsFingerprint),
    (b"hassh", Exclusion::TlsFingerprint),
    (b"thumbprint", Exclusion::Certificate),
    (b"fingerprint", Exclusion::Certificate),
    (b"x509", Exclusion::Certificate),
    (b"certificate", Exclusion::Certificate),
    (b"certhash", Exclusion::Certificate),
    (b"serialnumber", Exclusion::Certificate),
    (b"pehash", Exclusion::OtherDigest),
    (b"tlsh", Exclusion::OtherDigest),
    (b"ssdeep", Exclusion::OtherDigest),
    (b"sha512", Exclusion::OtherDigest),
    (b"sha384", Exclusion::OtherDigest),
    (b"sha224", Exclusion::OtherDigest),
    (b"vhash", Exclusion::OtherDigest),
    (b"telfhash", Exclusion::OtherDigest),
    (b"richhash", Exclusion::OtherDigest),
    (b"richpe", Exclusion::OtherDigest),
    (b"dhash", Exclusion::OtherDigest),
    (b"icondhash", Exclusion::OtherDigest),
    (b"permhash", Exclusion::OtherDigest),
];

/// The slot of a pair of bytes in [`DIGEST_STARTS`].
const fn pair(a: u8, b: u8) -> usize {
    ((a as usize) << 5 ^ b as usize) & 1023
}

/// Bit `i` of `DIGEST_STARTS[pair(a, b)]` is set when `DIGEST_WORDS[i]` starts with `a, b`:
/// a position of a name is compared only with the words that can start there (a slot may
/// hold words of other pairs too; the comparison decides).
static DIGEST_STARTS: [u32; 1024] = {
    let mut table = [0u32; 1024];
    let mut i = 0;
    while i < DIGEST_WORDS.len() {
        let w = DIGEST_WORDS[i].0;
        table[pair(w[0], w[1])] |= 1 << i;
        i += 1;
    }
    table
};

/// A squashed (lower-case, alphanumerics only) name of a digest that is not a file id: the
/// reason of the first of [`DIGEST_WORDS`] anywhere in it, or `Certificate` for a name
/// starting `cert`.
fn digest_word(s: &[u8]) -> Option<Exclusion> {
    // Every name below has a letter past `f`: a word of hex digits (the hash in the cell
    // before, in a table of hashes) names nothing. The common case in tables, at once.
    if s.iter().all(|&b| is(b, HEX)) {
        return None;
    }
    let mut found = 0u32;
    for (at, w) in s.windows(2).enumerate() {
        let mut words = DIGEST_STARTS[pair(w[0], w[1])];
        while words != 0 {
            let i = words.trailing_zeros();
            words &= words - 1;
            if s[at..].starts_with(DIGEST_WORDS[i as usize].0) {
                found |= 1 << i;
            }
        }
    }
    if found == 0 {
        return s.starts_with(b"cert").then_some(Exclusion::Certificate);
    }
    let first = DIGEST_WORDS[found.trailing_zeros() as usize].1;
    // `cert…` ranks with the certificate words, below the import, Authenticode and TLS ones.
    match first {
        Exclusion::OtherDigest if s.starts_with(b"cert") => Some(Exclusion::Certificate),
        reason => Some(reason),
    }
}

fn trim_ascii(b: &[u8]) -> &[u8] {
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

/// Byte classes of the label scan, one table lookup per byte (this runs per token):
/// [`SEPARATOR`]s stand between a label and its value (`IMPHASH=`, `"imphash": "`,
/// `**Imphash:** `, `| Thumbprint | `, `imphash (`); [`WORD`] bytes make up a label
/// (`SHA-256`, `ja3_hash`, `x.509`); [`HEX`] digits make up the hash of the cell before.
static CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let separators = b" \t:=\"'`|*([{<>-,;";
    let mut i = 0;
    while i < separators.len() {
        table[separators[i] as usize] |= SEPARATOR;
        i += 1;
    }
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-' {
            table[b] |= WORD;
        }
        if c.is_ascii_hexdigit() {
            table[b] |= HEX;
        }
        b += 1;
    }
    table
};
const SEPARATOR: u8 = 1;
const WORD: u8 = 2;
const HEX: u8 = 4;

fn is(b: u8, class: u8) -> bool {
    CLASS[b as usize] & class != 0
}

/// Whether `b` may stand between a label and its value (see [`CLASS`]).
pub(crate) fn is_separator(b: u8) -> bool {
    is(b, SEPARATOR)
}

/// Whether `b` may be part of a label (see [`CLASS`]).
pub(crate) fn is_word(b: u8) -> bool {
    is(b, WORD)
}

/// What the text just in front of a token says about it. `before` is the text before it (the
/// reader passes up to [`BEFORE`] bytes).
///
/// A pseudonym is a token glued to a `…PII_` prefix. Otherwise the label is the last word
/// before the token on its line (`IMPHASH` in `SHA256=…,IMPHASH=`), with the word before it
/// when the last one is generic (`Import Hash:`, `Certificate SHA1:`, `Authenticode SHA-256:`);
/// in a `Key=value` or `Key: value` form, a key named like an id (`DeviceId=`, `TenantID:`)
/// too. When nothing but separators precede the token on its line (a table cell of its own,
/// `|<hash>`), the label is the last word of the line before (`|ImpHash`).
pub fn before(before: &[u8]) -> Option<Exclusion> {
    let (line, earlier) = last_line(before);
    before_line(line, earlier)
}

/// `before` cut at its last line break: the token's own line, and the text above it if any.
pub(crate) fn last_line(before: &[u8]) -> (&[u8], Option<&[u8]>) {
    match memchr::memrchr(b'\n', before) {
        Some(i) => (&before[i + 1..], Some(&before[..i])),
        None => (before, None),
    }
}

/// [`before`] of a text already cut by [`last_line`].
pub(crate) fn before_line(line: &[u8], earlier: Option<&[u8]>) -> Option<Exclusion> {
    if !has_word(line) {
        let earlier = earlier?;
        let earlier = earlier.strip_suffix(b"\r").unwrap_or(earlier);
        let previous = match memchr::memrchr(b'\n', earlier) {
            Some(i) => &earlier[i + 1..],
            None => earlier,
        };
        return labelled(previous);
    }
    on_line(line)
}

/// Whether `line` holds a letter or a digit: then [`before`] judges a token by its own line.
pub(crate) fn has_word(line: &[u8]) -> bool {
    line.iter().any(u8::is_ascii_alphanumeric)
}

/// [`before`] for a token whose own line holds a word ([`has_word`]): `line` is the text from
/// the line's start (or the window's) to the token. The verdict depends on those bytes alone,
/// so a reader may remember it for a line it meets again (a table's first hex cell).
pub(crate) fn on_line(line: &[u8]) -> Option<Exclusion> {
    if line.len() >= 4 && line[line.len() - 4..].eq_ignore_ascii_case(b"pii_") {
        return Some(Exclusion::Pseudonym);
    }
    labelled(line)
}

/// The label at the end of `line` (see [`before`]).
fn labelled(line: &[u8]) -> Option<Exclusion> {
    let (mut last, mut rest) = last_word(line);
    // The hash of the cell before (a table of hashes): no label. The common case, at once.
    if last.len() >= 16 && last.iter().all(|&b| is(b, HEX)) {
        return None;
    }
    // "its import hash is …", "the thumbprint was …": the label is before the verb.
    let filler = [&b"is"[..], b"was", b"are", b"were", b"of", b"equals"];
    if filler.iter().any(|f| last.eq_ignore_ascii_case(f)) {
        (last, rest) = last_word(rest);
    }
    if last.is_empty() {
        return None;
    }
    // The word squashed once for the three questions below.
    let squashed = Squashed::of(last);
    let s = squashed.as_bytes();
    if let Some(reason) = digest_word(s) {
        return Some(reason);
    }
    // A key named like an id, in a `Key=value` or `Key: value` form (as `field` judges it).
    let key_value = line[rest.len() + last.len()..]
        .iter()
        .any(|&b| b == b'=' || b == b':');
    if key_value && id_name(last, s) {
        return Some(Exclusion::Id);
    }
    // A generic last word takes its meaning from the one before: "Import Hash", "Cert SHA1".
    let generic = matches!(
        s,
        b"hash" | b"hashes" | b"md5" | b"sha1" | b"sha256" | b"digest" | b"value"
    );
    if generic {
        let (previous, _) = last_word(rest);
        return match Squashed::of(previous).as_bytes() {
            b"import" | b"imports" => Some(Exclusion::ImportHash),
            b"authenticode" | b"authentihash" => Some(Exclusion::Authentihash),
            b"certificate" | b"cert" | b"signer" | b"signing" | b"x509" => {
                Some(Exclusion::Certificate)
            }
            b"ja3" | b"ja3s" => Some(Exclusion::TlsFingerprint),
            _ => None,
        };
    }
    None
}

/// What a parenthesised label just after a token says (`<hash> (imphash)`). Only that form:
/// a bare word after a token usually labels the next one (`… Imphash: …`).
pub fn after(after: &[u8]) -> Option<Exclusion> {
    let rest = after.trim_ascii_start();
    let inner = rest.strip_prefix(b"(")?;
    let close = inner.iter().position(|&b| b == b')')?;
    label(inner[..close].trim_ascii())
}

/// A label in running text: digest names only. The id rule needs a field's name (in prose,
/// "paid" and "Android" end like ids), so it applies to labels only in a `Key: value` or
/// `Key=value` form, which [`before`] cannot tell from prose; it is left to [`field`].
fn label(word: &[u8]) -> Option<Exclusion> {
    digest_word(Squashed::of(word).as_bytes())
}

/// A name squashed for matching: lower-case, alphanumerics only (`SHA-256` is `sha256`,
/// `Import_Hash` is `importhash`), at most 48 bytes, on the stack (this runs per token).
struct Squashed {
    buf: [u8; 48],
    len: usize,
}

impl Squashed {
    fn of(name: &[u8]) -> Squashed {
        let mut squashed = Squashed {
            buf: [0; 48],
            len: 0,
        };
        for &b in name.iter().filter(|b| b.is_ascii_alphanumeric()) {
            if squashed.len == squashed.buf.len() {
                break;
            }
            squashed.buf[squashed.len] = b.to_ascii_lowercase();
            squashed.len += 1;
        }
        squashed
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The last word of `text` after trailing separators, and the text before that word.
fn last_word(text: &[u8]) -> (&[u8], &[u8]) {
    let mut end = text.len();
    while end > 0 && is(text[end - 1], SEPARATOR) {
        end -= 1;
    }
    let mut start = end;
    while start > 0 && is(text[start - 1], WORD) {
        start -= 1;
    }
    (&text[start..end], &text[..start])
}

/// How many bytes before a token [`before`] looks at.
pub const BEFORE: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The rule [`digest_word`] implements, written plainly: each reason's words searched
    /// in turn.
    fn digest_word_by_search(s: &[u8]) -> Option<Exclusion> {
        if s.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let has = |w: &[u8]| s.windows(w.len()).any(|x| x == w);
        let reasons = [
            Exclusion::ImportHash,
            Exclusion::Authentihash,
            Exclusion::TlsFingerprint,
            Exclusion::Certificate,
            Exclusion::OtherDigest,
        ];
        reasons.into_iter().find(|&reason| {
            (reason == Exclusion::Certificate && s.starts_with(b"cert"))
                || DIGEST_WORDS.iter().any(|&(w, r)| r == reason && has(w))
        })
    }

    proptest! {
        #[test]
        fn digest_words_are_found_wherever_they_are_as_a_plain_search_finds_them(
            parts in prop::collection::vec(
                prop_oneof![
                    (0..DIGEST_WORDS.len()).prop_map(|i| DIGEST_WORDS[i].0.to_vec()),
                    (0..DIGEST_WORDS.len(), 1..4usize).prop_map(|(i, cut)| {
                        let w = DIGEST_WORDS[i].0;
                        w[..w.len().saturating_sub(cut).max(1)].to_vec()
                    }),
                    "[a-z0-9]{0,6}".prop_map(String::into_bytes),
                    Just(b"cert".to_vec()),
                ],
                0..6,
            )
        ) {
            let name: Vec<u8> = parts.concat();
            prop_assert_eq!(digest_word(&name), digest_word_by_search(&name), "{:?}", String::from_utf8_lossy(&name));
        }
    }

    #[test]
    fn labels_in_front_of_a_token_name_what_it_is() {
        let cases: &[(&str, Option<Exclusion>)] = &[
            (
                "SHA1=ab,MD5=cd,SHA256=ef,IMPHASH=",
                Some(Exclusion::ImportHash),
            ),
            ("SHA1=ab,IMPHASH=cd,SHA256=", None),
            ("\"imphash\": \"", Some(Exclusion::ImportHash)),
            ("**Imphash:** ", Some(Exclusion::ImportHash)),
            ("Import Hash: ", Some(Exclusion::ImportHash)),
            ("| Authentihash | ", Some(Exclusion::Authentihash)),
            ("Authenticode SHA-256: ", Some(Exclusion::Authentihash)),
            ("Certificate thumbprint ", Some(Exclusion::Certificate)),
            ("Cert SHA1: ", Some(Exclusion::Certificate)),
            ("ja3_hash=", Some(Exclusion::TlsFingerprint)),
            ("UserPII_", Some(Exclusion::Pseudonym)),
            ("pehash: ", Some(Exclusion::OtherDigest)),
            ("The dropper (SHA256: ", None),
            ("https://www.virustotal.com/gui/file/", None),
            ("imphash\nsha256: ", None),
            ("", None),
            ("MD5 hash ", None),
            ("its import hash is ", Some(Exclusion::ImportHash)),
            ("the thumbprint was ", Some(Exclusion::Certificate)),
            ("the dropper is ", None),
            ("Machine id DeviceId=", Some(Exclusion::Id)),
            ("It was paid: ", None),
            ("|ImpHash\n|", Some(Exclusion::ImportHash)),
            ("|ImpHash\r\n|", Some(Exclusion::ImportHash)),
            ("|SHA256\n|", None),
            ("## Import hashes\n", Some(Exclusion::ImportHash)),
        ];
        for (text, want) in cases {
            assert_eq!(before(text.as_bytes()), *want, "{text:?}");
        }
    }

    #[test]
    fn a_parenthesised_label_after_a_token_counts() {
        assert_eq!(after(b" (imphash) and"), Some(Exclusion::ImportHash));
        assert_eq!(after(b" (sample from the sandbox)"), None);
        assert_eq!(after(b" Imphash: "), None);
        assert_eq!(after(b""), None);
    }

    #[test]
    fn field_names_that_hold_no_file_hashes() {
        let cases: &[(&str, Option<Exclusion>)] = &[
            ("DeviceId", Some(Exclusion::Id)),
            ("TenantId", Some(Exclusion::Id)),
            ("ReportID", Some(Exclusion::Id)),
            ("ProcessGuid", Some(Exclusion::Id)),
            ("event_id", Some(Exclusion::Id)),
            ("uuid", Some(Exclusion::Id)),
            ("id", Some(Exclusion::Id)),
            ("imphash", Some(Exclusion::ImportHash)),
            ("x509-fingerprint-sha1", Some(Exclusion::Certificate)),
            ("ja3s", Some(Exclusion::TlsFingerprint)),
            ("ja3-fingerprint-md5", Some(Exclusion::TlsFingerprint)),
            ("jarm-fingerprint", Some(Exclusion::TlsFingerprint)),
            ("ssdeep", Some(Exclusion::OtherDigest)),
            ("aid", Some(Exclusion::Id)),
            ("cid", Some(Exclusion::Id)),
            ("SHA256", None),
            ("InitiatingProcessSHA256", None),
            ("InitiatingProcessMD5", None),
            ("Hashes", None),
            ("paid", None),
            ("value", None),
        ];
        for (name, want) in cases {
            assert_eq!(field(name.as_bytes()), *want, "{name:?}");
        }
    }
}
