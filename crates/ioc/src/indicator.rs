//! URLs, domains and IP addresses as incident reports write them (defanged, in upper case,
//! with trailing dots) turned into the one form VirusTotal identifies them by, or a reason why
//! not, and (for the readers) which of them are not worth a lookup: private and documentation
//! addresses, documentation names, and in prose a report's plain links to its sources.
//!
//! - [`refang`] undoes the usual defanging: `hxxp(s)`, `[.]`, `(.)`, `{.}`, `[dot]`, `(dot)`,
//!   `[:]`, `[://]`, `[@]`, `[at]`, `[/]`, and the half-typed `.]` and `[.` of a hurried
//!   analyst (`cdn-files.]com`).
//! - A **domain** is lower-cased, its trailing dot dropped, IDNA-encoded to punycode
//!   (`bücher.example` -> `xn--bcher-kva.example`), its labels checked (1-63 letters, digits or
//!   hyphens, no hyphen at either end, 253 bytes in all), and its suffix must be one the Public
//!   Suffix List knows (the `psl` crate, compiled in): `setup.exe`, `invoice.pdf` are not
//!   domains.
//! - An **IP** is parsed (v4 dotted quad, v6 in any of its forms) and written canonically (v6
//!   compressed, lower case). Private, loopback, link-local, shared (CGNAT), documentation,
//!   multicast, reserved and unspecified addresses are [`Scope`]d: nothing VirusTotal can say
//!   about them is about the incident.
//! - A **URL** has a scheme VirusTotal keeps ([`SCHEMES`]: `http`, `https`, `ftp`, `smb`,
//!   `tcp`...) and a host that is a domain or an IP by the rules above. A `host/path` without
//!   a scheme (`dropzone[.]site/B7x2Q9k`, `185.7.214.9/t4`) is `http://host/path`, as
//!   VirusTotal itself reads it; an address with a prefix length (`185.7.214.0/24`) is a
//!   network, not a URL. We lower-case the scheme and the host and change nothing else (no
//!   trailing slash added, no path or query rewritten): VirusTotal's URL identifier
//!   ([`url_id`]) is the unpadded base64url of the URL as submitted, so every byte we changed
//!   would change the id.
//! - Names reserved by RFC 2606 and RFC 6761 (`.test`, `.example`, `.invalid`, `.localhost`,
//!   and `.local` of RFC 6762) parse, so that they can be counted, and are never looked up
//!   ([`Indicator::exclusion`]).

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::Engine;

/// A URL, a domain or an IP address in canonical form.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Indicator {
    /// A URL: scheme and host lower-cased, the rest as written.
    Url(String),
    /// A registrable name under a known public suffix, lower case, ASCII (punycode).
    Domain(String),
    /// An IP address.
    Ip(IpAddr),
}

impl Indicator {
    /// The kind's name (`url`, `domain`, `ip`).
    pub fn kind(&self) -> &'static str {
        match self {
            Indicator::Url(_) => "url",
            Indicator::Domain(_) => "domain",
            Indicator::Ip(_) => "ip",
        }
    }

    /// The canonical text.
    pub fn canonical(&self) -> String {
        match self {
            Indicator::Url(u) | Indicator::Domain(u) => u.clone(),
            Indicator::Ip(ip) => ip.to_string(),
        }
    }

    /// The canonical text without allocating: a URL's or a domain's as stored, an address
    /// written into `buf` (the longest, an IPv4-mapped IPv6 address, takes 45 bytes). For
    /// the paths that meet every occurrence and keep only what is new.
    pub fn text_in<'a>(&'a self, buf: &'a mut [u8; 48]) -> &'a str {
        match self {
            Indicator::Url(u) | Indicator::Domain(u) => u,
            Indicator::Ip(ip) => {
                use std::io::Write;
                let mut rest = &mut buf[..];
                // 48 bytes hold any address; a failed write would only shorten the text.
                let _ = write!(rest, "{ip}");
                let n = 48 - rest.len();
                std::str::from_utf8(&buf[..n]).unwrap_or_default()
            }
        }
    }
}

/// What an IOC is, as `--kinds` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A file, by MD5, SHA-1 or SHA-256.
    File,
    /// A URL.
    Url,
    /// A domain or host name.
    Domain,
    /// An IPv4 or IPv6 address.
    Ip,
}

impl Kind {
    /// Every kind, in output order.
    pub const ALL: [Kind; 4] = [Kind::File, Kind::Url, Kind::Domain, Kind::Ip];

    /// `file`, `url`, `domain`, `ip`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Url => "url",
            Kind::Domain => "domain",
            Kind::Ip => "ip",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }

    /// The kind's number where it is stored (the dedup set's entries, the cache's `objects`
    /// table): 1 URL, 2 domain, 3 IP (0 file).
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The kind of a stored number (see [`Kind::code`]).
    pub fn from_code(code: u8) -> Option<Kind> {
        Kind::ALL.get(usize::from(code)).copied()
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`Kind`]s (`--kinds file,url,domain,ip`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kinds(u8);

impl Kinds {
    /// File hashes only: the default for CSV and JSON inputs (EDR exports, whose host names
    /// and addresses are the network's own, not indicators).
    pub const FILES: Kinds = Kinds(1);
    /// Every kind: the default for lists, free text and XML/HTML (IOC lists and reports).
    pub const ALL: Kinds = Kinds(0b1111);

    /// Whether `kind` is in the set.
    pub fn has(self, kind: Kind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// Whether any of URL, domain or IP is in the set (a reader has to look for them).
    pub fn any_indicator(self) -> bool {
        self.0 & !Kind::File.bit() != 0
    }

    /// The kinds in the set.
    pub fn iter(self) -> impl Iterator<Item = Kind> {
        Kind::ALL.into_iter().filter(move |k| self.has(*k))
    }
}

impl std::fmt::Display for Kinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.iter().map(Kind::as_str).collect();
        f.write_str(&names.join(","))
    }
}

impl std::str::FromStr for Kinds {
    type Err = String;

    /// `file,url,domain,ip` in any order and case, or `all`; `hash` is `file`.
    fn from_str(s: &str) -> Result<Kinds, String> {
        let mut set = 0u8;
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            set |= match word.to_ascii_lowercase().as_str() {
                "all" => Kinds::ALL.0,
                "file" | "files" | "hash" | "hashes" => Kind::File.bit(),
                "url" | "urls" => Kind::Url.bit(),
                "domain" | "domains" => Kind::Domain.bit(),
                "ip" | "ips" => Kind::Ip.bit(),
                other => {
                    return Err(format!(
                        "unknown kind {other:?} (expected file, url, domain, ip or all)"
                    ));
                }
            };
        }
        if set == 0 {
            return Err("no kind given (expected file, url, domain, ip or all)".into());
        }
        Ok(Kinds(set))
    }
}

/// Sites a threat report cites as its sources (vendors, references, code hosting, social
/// networks). A plain (not defanged) link to one of them, or its name, in prose is the
/// report's bibliography, not an indicator: it is counted as `reference_site` and not looked
/// up. A defanged one is always taken: defanging is the author saying "this is an IOC".
/// Sorted (looked up by binary search).
const REFERENCE_SITES: &[&str] = &[
    "abuse.ch",
    "alienvault.com",
    "any.run",
    "bleepingcomputer.com",
    "censys.io",
    "checkpoint.com",
    "cisa.gov",
    "crowdstrike.com",
    "cve.org",
    "elastic.co",
    "eset.com",
    "facebook.com",
    "first.org",
    "fortinet.com",
    "github.com",
    "githubusercontent.com",
    "gitlab.com",
    "google.com",
    "hybrid-analysis.com",
    "joesandbox.com",
    "kaspersky.com",
    "learn.microsoft.com",
    "linkedin.com",
    "mandiant.com",
    "medium.com",
    "microsoft.com",
    "misp-project.org",
    "mitre.org",
    "nist.gov",
    "oasis-open.org",
    "paloaltonetworks.com",
    "proofpoint.com",
    "recordedfuture.com",
    "schema.org",
    "securelist.com",
    "sentinelone.com",
    "shodan.io",
    "sophos.com",
    "splunk.com",
    "t.co",
    "talosintelligence.com",
    "thedfirreport.com",
    "trendmicro.com",
    "twitter.com",
    "urlscan.io",
    "virustotal.com",
    "w3.org",
    "welivesecurity.com",
    "wikipedia.org",
    "x.com",
    "youtube.com",
];

/// Top-level domains that are also common file extensions (`.zip`, `.mov`, `.md`, `.sh`,
/// `.py`, `.pl`, `.rs`, `.ps`, `.so`, `.ml`, `.pm`, OneNote's `.one`, Publisher's `.pub`): a
/// plain `install.sh` in prose is a file. Not `.app`: hosting sites live under it
/// (`ngrok-free.app`, `web.app`).
const FILE_LIKE_TLDS: &[&str] = &[
    "zip", "mov", "md", "sh", "py", "pl", "rs", "ps", "so", "ml", "pm", "one", "pub",
];

/// Hosting, paste, file-sharing and link-shortening sites whose bare name in prose is no
/// indicator ("staged on pastebin.com"), while a URL on them is (`pastebin.com/raw/Xk2p`, a
/// paste; `bit.ly/3Xa9`, a link) and so is a name under them (`evil.ngrok-free.app`). Sorted.
const WELL_KNOWN_SITES: &[&str] = &[
    "0x0.st",
    "anonfiles.com",
    "bit.ly",
    "catbox.moe",
    "cutt.ly",
    "discord.com",
    "discordapp.com",
    "dropbox.com",
    "file.io",
    "gofile.io",
    "hastebin.com",
    "is.gd",
    "mega.nz",
    "ngrok-free.app",
    "ngrok.io",
    "paste.ee",
    "pastebin.com",
    "rentry.co",
    "t.me",
    "telegram.org",
    "temp.sh",
    "tinyurl.com",
    "transfer.sh",
    "trycloudflare.com",
    "workers.dev",
];

/// The first words of antivirus detection names (`Trojan.Win32.Agent.ac`,
/// `Backdoor.MSIL.Rat.gen`): a plain name in prose written as vendors write detections,
/// capitalised, that starts with one ([`detection_word`]), or one with a platform label
/// (`win32`, `msil`...) anywhere, is a detection, not a host (`dropper.evil-site.top`, in
/// lower case, is a host).
const DETECTION_WORDS: &[&str] = &[
    "adware",
    "backdoor",
    "downloader",
    "dropper",
    "exploit",
    "hacktool",
    "heur",
    "not-a-virus",
    "pua",
    "ransom",
    "riskware",
    "spyware",
    "trojan",
    "trojan-downloader",
    "trojan-dropper",
    "trojan-spy",
    "trojandownloader",
    "trojanspy",
    "virus",
    "worm",
];

/// Platform labels of detection names.
const DETECTION_PLATFORMS: &[&str] = &["msil", "w32", "w64", "win32", "win64"];

/// Whether `name` (canonical) has a detection name's platform label.
fn detection_name(name: &str) -> bool {
    name.split('.')
        .any(|label| DETECTION_PLATFORMS.contains(&label))
}

/// Whether `written` (a name as it was written) starts as a detection name does: a
/// capitalised detection word (`Trojan.`, `Backdoor.`, `HEUR`).
pub fn detection_word(written: &str) -> bool {
    let first = written.split('.').next().unwrap_or("");
    first.starts_with(|c: char| c.is_ascii_uppercase())
        && DETECTION_WORDS.contains(&first.to_ascii_lowercase().as_str())
}

/// Top-level names reserved by RFC 2606 and RFC 6761 (and `.local`, RFC 6762): no such name
/// exists on the internet.
pub(crate) const RESERVED_TLDS: &[&str] = &["example", "invalid", "local", "localhost", "test"];

/// Whether `host` (canonical) is under a reserved top-level name.
fn reserved(host: &str) -> bool {
    let tld = host.rsplit('.').next().unwrap_or(host);
    RESERVED_TLDS.contains(&tld)
}

/// URL schemes kept: the web's, file transfer's and the network ones sandboxes and feeds
/// report (`smb://`, `tcp://`, `udp://`), all of which VirusTotal stores as URLs.
pub const SCHEMES: &[&str] = &[
    "ftp", "ftps", "http", "https", "irc", "sftp", "smb", "tcp", "udp", "ws", "wss",
];

/// Whether `host` is one of [`REFERENCE_SITES`] or under one: each of its suffixes at a
/// label boundary is looked up in the sorted list.
fn reference_site(host: &str) -> bool {
    let mut rest = host;
    loop {
        if REFERENCE_SITES.binary_search(&rest).is_ok() {
            return true;
        }
        match memchr::memchr(b'.', rest.as_bytes()) {
            // A dot is one byte: the tail starts on a character boundary.
            Some(dot) if rest[dot + 1..].contains('.') || rest.len() - dot - 1 > 1 => {
                rest = &rest[dot + 1..];
            }
            _ => return false,
        }
    }
}

/// Whether `domain` (canonical) is `site` or under it.
fn under(domain: &str, site: &str) -> bool {
    domain == site
        || (domain.len() > site.len()
            && domain.ends_with(site)
            && domain.as_bytes()[domain.len() - site.len() - 1] == b'.')
}

impl Indicator {
    /// The [`Kind`].
    pub fn kind_of(&self) -> Kind {
        match self {
            Indicator::Url(_) => Kind::Url,
            Indicator::Domain(_) => Kind::Domain,
            Indicator::Ip(_) => Kind::Ip,
        }
    }

    /// The host a URL names (a domain, an IP, `[v6]`), or the domain or IP itself.
    pub fn host(&self) -> Cow<'_, str> {
        match self {
            Indicator::Url(u) => {
                let rest = u.split_once("://").map_or(u.as_str(), |(_, r)| r);
                let end = authority_end(rest);
                let authority = &rest[..end];
                let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                let host = match host.strip_prefix('[') {
                    Some(v6) => v6.split(']').next().unwrap_or(v6),
                    None => host.rsplit_once(':').map_or(host, |(h, _)| h),
                };
                Cow::Borrowed(host)
            }
            Indicator::Domain(d) => Cow::Borrowed(d),
            Indicator::Ip(ip) => Cow::Owned(ip.to_string()),
        }
    }

    /// Why this indicator is not looked up wherever it was found: an address no one outside
    /// the network can say anything about, a name reserved for documentation (a URL's host
    /// included).
    pub fn exclusion(&self) -> Option<crate::Exclusion> {
        let host = self.host();
        if let Some(ip) = address(&host) {
            return scope(ip).map(crate::Exclusion::Scoped);
        }
        let documentation = ["example.com", "example.net", "example.org", "arpa"]
            .iter()
            .any(|site| under(&host, site));
        if documentation {
            return Some(crate::Exclusion::DocumentationDomain);
        }
        reserved(&host).then_some(crate::Exclusion::ReservedName)
    }

    /// Why this indicator, found written plainly (not defanged) in prose, is not looked up:
    /// a reference site, the bare name of a well-known hosting site, a file name, a
    /// detection name. Over and above [`Indicator::exclusion`].
    pub fn prose_exclusion(&self) -> Option<crate::Exclusion> {
        let host = self.host();
        if reference_site(&host) {
            return Some(crate::Exclusion::Reference);
        }
        if let Indicator::Domain(d) = self {
            if WELL_KNOWN_SITES.binary_search(&d.as_str()).is_ok() {
                return Some(crate::Exclusion::WellKnownSite);
            }
            let tld = d.rsplit('.').next().unwrap_or("");
            if FILE_LIKE_TLDS.contains(&tld) {
                return Some(crate::Exclusion::FileName);
            }
            if detection_name(d) {
                return Some(crate::Exclusion::DetectionName);
            }
        }
        None
    }
}

/// Why an address is not looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// RFC 1918 (v4), unique local `fc00::/7` (v6).
    Private,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `169.254.0.0/16`, `fe80::/10`.
    LinkLocal,
    /// `100.64.0.0/10` (carrier-grade NAT).
    Shared,
    /// `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32`.
    Documentation,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `0.0.0.0/8`, `240.0.0.0/4` (broadcast included), `::`.
    Reserved,
}

impl Scope {
    /// The reason's name, for summaries.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Private => "private_address",
            Scope::Loopback => "loopback_address",
            Scope::LinkLocal => "link_local_address",
            Scope::Shared => "shared_address",
            Scope::Documentation => "documentation_address",
            Scope::Multicast => "multicast_address",
            Scope::Reserved => "reserved_address",
        }
    }
}

/// Why a value is not an indicator.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IndicatorError {
    /// Empty after trimming.
    #[error("empty")]
    Empty,
    /// A URL with a scheme VirusTotal does not scan.
    #[error("unsupported URL scheme {0:?}")]
    Scheme(String),
    /// Not a host name by the label rules, or IDNA refused it.
    #[error("not a valid host name: {0}")]
    BadName(String),
    /// A name whose last labels are no public suffix (`setup.exe`, `invoice.pdf`).
    #[error("no known public suffix: {0}")]
    UnknownSuffix(String),
    /// An address with a prefix length (`185.7.214.0/24`): a network, not one address.
    #[error("a network, not an address: {0}")]
    Network(String),
}

/// Undoes the usual defanging of URLs, domains and addresses, until nothing is left to undo:
/// a defang inside another (`[[.]]`, a half-typed `.]]`) leaves one more, and a refanged form
/// must refang to itself (a canonical form parses to itself; found by fuzzing).
pub fn refang(s: &str) -> Cow<'_, str> {
    let mut out = refang_once(s);
    // Each pass that changes anything shortens the text, so this ends.
    while let Cow::Owned(text) = &out {
        match refang_once(text) {
            Cow::Borrowed(_) => break,
            Cow::Owned(again) => out = Cow::Owned(again),
        }
    }
    out
}

/// One pass of [`refang`].
fn refang_once(s: &str) -> Cow<'_, str> {
    // Longest first where one is the start of another (`[:/]` before `[:]`).
    const PAIRS: [(&str, &str); 11] = [
        ("[://]", "://"),
        ("[:/]", ":/"),
        ("[.]", "."),
        ("(.)", "."),
        ("{.}", "."),
        ("[dot]", "."),
        ("(dot)", "."),
        ("[:]", ":"),
        ("[@]", "@"),
        ("[at]", "@"),
        ("[/]", "/"),
    ];
    // One pass, and no allocation unless something was defanged: every defanging but
    // `hxxp` has a bracket. Most tokens have none: they are passed back at once.
    let bytes = s.as_bytes();
    let hxxp = bytes
        .get(..4)
        .is_some_and(|h| h.eq_ignore_ascii_case(b"hxxp"));
    if !hxxp
        && memchr::memchr3(b'[', b'(', b'{', bytes).is_none()
        && memchr::memchr(b']', bytes).is_none()
    {
        return Cow::Borrowed(s);
    }
    let mut out: Option<String> = None;
    let (mut i, mut copied) = (0, 0);
    while i < bytes.len() {
        // `cdn-files.]com`, `cdn-files[.com`: the half of a `[.]` typed in a hurry.
        let half = (bytes[i] == b']' && i > 0 && bytes[i - 1] == b'.')
            || (bytes[i] == b'['
                && bytes.get(i + 1) == Some(&b'.')
                && bytes.get(i + 2) != Some(&b']'));
        if half {
            let o = out.get_or_insert_with(|| String::with_capacity(s.len()));
            o.push_str(&s[copied..i]);
            i += 1;
            copied = i;
            continue;
        }
        if matches!(bytes[i], b'[' | b'(' | b'{') {
            let pair = PAIRS.iter().find(|(from, _)| {
                bytes
                    .get(i..i + from.len())
                    .is_some_and(|b| b.eq_ignore_ascii_case(from.as_bytes()))
            });
            if let Some((from, to)) = pair {
                let o = out.get_or_insert_with(|| String::with_capacity(s.len()));
                o.push_str(&s[copied..i]);
                o.push_str(to);
                i += from.len();
                copied = i;
                continue;
            }
        }
        i += 1;
    }
    let mut out = match out {
        Some(mut o) => {
            o.push_str(&s[copied..]);
            o
        }
        None if hxxp => s.to_owned(),
        None => return Cow::Borrowed(s),
    };
    if hxxp {
        out.replace_range(..4, "http");
    }
    Cow::Owned(out)
}

/// Parses a URL, a domain or an IP address (refanged first).
pub fn parse(value: &str) -> Result<Indicator, IndicatorError> {
    let refanged = refang(value.trim());
    let s = refanged.trim();
    if s.is_empty() {
        return Err(IndicatorError::Empty);
    }
    if let Some(at) = scheme_at(s) {
        return url(&s[..at], &s[at + 3..]);
    }
    if let Some(ip) = ip(s) {
        return Ok(Indicator::Ip(ip));
    }
    if let Some(slash) = s.find('/') {
        return schemeless(s, slash);
    }
    domain(s).map(Indicator::Domain)
}

/// Whether `value` parses ([`parse`]) to a URL with a scheme whose host is a reference site
/// and nothing else keeps it out ([`Indicator::exclusion`] says nothing,
/// [`Indicator::prose_exclusion`] says [`crate::Exclusion::Reference`]), told without
/// building the URL: a report links to its sources often, each link a distinct address.
pub fn reference_link(value: &str) -> bool {
    let refanged = refang(value.trim());
    let s = refanged.trim();
    let Some(at) = scheme_at(s) else {
        return false;
    };
    if !SCHEMES.iter().any(|k| k.eq_ignore_ascii_case(&s[..at])) {
        return false;
    }
    let Ok(Authority { host, .. }) = authority(&s[at + 3..]) else {
        return false;
    };
    if ip(host).is_some() {
        return false;
    }
    // Most links are not to a source: told by the name in lower case, before parsing it.
    // An ASCII name parses to that same lower-case name, so the site is not asked again.
    let name = host.strip_suffix('.').unwrap_or(host);
    let ascii = name.is_ascii() && name.len() <= 253;
    if ascii {
        let mut lower = [0u8; 253];
        lower[..name.len()].copy_from_slice(name.as_bytes());
        lower[..name.len()].make_ascii_lowercase();
        if !std::str::from_utf8(&lower[..name.len()]).is_ok_and(reference_site) {
            return false;
        }
    }
    domain(host)
        .is_ok_and(|d| (ascii || reference_site(&d)) && Indicator::Domain(d).exclusion().is_none())
}

/// A `host/path` without a scheme: `http://host/path`, as VirusTotal reads it, when the host
/// is a domain or an IPv4 address (with or without a port). `185.7.214.0/24` is a network.
fn schemeless(s: &str, slash: usize) -> Result<Indicator, IndicatorError> {
    let (host, path) = s.split_at(slash);
    let prefix = path[1..].parse::<u8>().is_ok_and(|n| n <= 32);
    if prefix && host.parse::<Ipv4Addr>().is_ok() {
        return Err(IndicatorError::Network(s.to_owned()));
    }
    if host.is_empty() || host.contains(['@', '\\']) {
        return Err(IndicatorError::BadName(host.to_owned()));
    }
    url("http", s)
}

/// The scope that keeps `ip` from being looked up, if any.
pub fn scope(ip: IpAddr) -> Option<Scope> {
    match ip {
        IpAddr::V4(v4) => scope_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => scope_v4(v4),
            None => scope_v6(v6),
        },
    }
}

fn scope_v4(ip: Ipv4Addr) -> Option<Scope> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (10, _, _) | (192, 168, _) => Scope::Private,
        (172, 16..=31, _) => Scope::Private,
        (127, _, _) => Scope::Loopback,
        (169, 254, _) => Scope::LinkLocal,
        (100, 64..=127, _) => Scope::Shared,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Scope::Documentation,
        (224..=239, _, _) => Scope::Multicast,
        (0, _, _) | (240..=255, _, _) => Scope::Reserved,
        _ => return None,
    })
}

fn scope_v6(ip: Ipv6Addr) -> Option<Scope> {
    let first = ip.segments()[0];
    Some(if ip.is_unspecified() {
        Scope::Reserved
    } else if ip.is_loopback() {
        Scope::Loopback
    } else if first & 0xfe00 == 0xfc00 {
        Scope::Private
    } else if first & 0xffc0 == 0xfe80 {
        Scope::LinkLocal
    } else if first & 0xff00 == 0xff00 {
        Scope::Multicast
    } else if first == 0x2001 && ip.segments()[1] == 0x0db8 {
        Scope::Documentation
    } else {
        return None;
    })
}

/// VirusTotal's identifier of a URL: the unpadded base64url of the URL as submitted.
pub fn url_id(url: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url.as_bytes())
}

fn ip(s: &str) -> Option<IpAddr> {
    let s = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    // Only the dotted quad: `1.2.3` and `0x7f.1` parse in some libraries and are not IOCs.
    address(s)
}

/// `s` as an IP address: a v4 address starts with a digit and a v6 one has a colon, so a
/// name (nearly every host) is told at once, without the parser's attempts.
fn address(s: &str) -> Option<IpAddr> {
    let maybe = s.as_bytes().first().is_some_and(u8::is_ascii_digit) || s.contains(':');
    maybe.then(|| s.parse::<IpAddr>().ok()).flatten()
}

/// Where a URL's authority ends in `rest` (what follows `scheme://`): at its path, query or
/// fragment, or the end.
fn authority_end(rest: &str) -> usize {
    memchr::memchr3(b'/', b'?', b'#', rest.as_bytes()).unwrap_or(rest.len())
}

fn domain(s: &str) -> Result<String, IndicatorError> {
    let name = s.strip_suffix('.').unwrap_or(s);
    // ASCII names (nearly all) only need lower-casing; IDNA is for the rest.
    let ascii = if name.is_ascii() {
        name.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(name).map_err(|_| IndicatorError::BadName(name.to_owned()))?
    };
    if ascii.is_empty() || ascii.len() > 253 || !ascii.contains('.') {
        return Err(IndicatorError::BadName(name.to_owned()));
    }
    for label in ascii.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(IndicatorError::BadName(name.to_owned()));
        }
    }
    match psl::suffix(ascii.as_bytes()) {
        Some(suffix) if suffix.is_known() && suffix.as_bytes().len() < ascii.len() => Ok(ascii),
        // Parsed, so that it is counted and never looked up.
        _ if reserved(&ascii) => Ok(ascii),
        _ => Err(IndicatorError::UnknownSuffix(ascii)),
    }
}

/// Where the `://` after a URL's scheme is in `s`, if it has one.
pub(crate) fn scheme_at(s: &str) -> Option<usize> {
    memchr::memchr_iter(b':', s.as_bytes()).find(|&i| s.as_bytes().get(i + 1..i + 3) == Some(b"//"))
}

/// What follows a URL's `scheme://`, cut into its parts: any user, the host (an IPv6 one in
/// its brackets), a port of digits with its colon, and the path, query and fragment.
struct Authority<'a> {
    userinfo: Option<&'a str>,
    host: &'a str,
    port: &'a str,
    tail: &'a str,
}

/// `rest` (what follows `scheme://`) cut into an [`Authority`]; an IPv6 host without its
/// closing bracket is no name.
fn authority(rest: &str) -> Result<Authority<'_>, IndicatorError> {
    let (authority, tail) = rest.split_at(authority_end(rest));
    // `@` and `:` are single bytes: cutting at them keeps both sides on char boundaries.
    let (userinfo, hostport) = match memchr::memrchr(b'@', authority.as_bytes()) {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, p)) => (&hostport[..h.len() + 2], p),
            None => return Err(IndicatorError::BadName(hostport.to_owned())),
        },
        None => match memchr::memrchr(b':', hostport.as_bytes()) {
            Some(colon)
                if hostport.as_bytes()[colon + 1..]
                    .iter()
                    .all(u8::is_ascii_digit) =>
            {
                hostport.split_at(colon)
            }
            _ => (hostport, ""),
        },
    };
    Ok(Authority {
        userinfo,
        host,
        port,
        tail,
    })
}

fn url(scheme: &str, rest: &str) -> Result<Indicator, IndicatorError> {
    let scheme = scheme.to_ascii_lowercase();
    if !SCHEMES.contains(&scheme.as_str()) {
        return Err(IndicatorError::Scheme(scheme));
    }
    let Authority {
        userinfo,
        host,
        port,
        tail,
    } = authority(rest)?;
    let host = match ip(host) {
        Some(IpAddr::V6(v6)) => format!("[{v6}]"),
        Some(IpAddr::V4(v4)) => v4.to_string(),
        None => domain(host)?,
    };
    // Built in one allocation of the right size.
    let len = scheme.len() + 3 + userinfo.map_or(0, |u| u.len() + 1) + host.len();
    let mut out = String::with_capacity(len + port.len() + tail.len());
    out.push_str(&scheme);
    out.push_str("://");
    if let Some(u) = userinfo {
        out.push_str(u);
        out.push('@');
    }
    out.push_str(&host);
    out.push_str(port);
    out.push_str(tail);
    Ok(Indicator::Url(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Indicator {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn defanged_forms_come_back_to_the_fanged_one() {
        assert_eq!(refang("hxxps://evil[.]com/a"), "https://evil.com/a");
        assert_eq!(refang("hXXp://evil(.)com[/]x"), "http://evil.com/x");
        assert_eq!(refang("1.2.3[.]4"), "1.2.3.4");
        assert_eq!(refang("evil[DOT]com"), "evil.com");
        assert_eq!(refang("user[@]evil{.}com"), "user@evil.com");
        assert_eq!(refang("http[:]//a.com"), "http://a.com");
        assert_eq!(refang("hxxp[://]a.com"), "http://a.com");
        assert!(matches!(refang("plain.example.com"), Cow::Borrowed(_)));
    }

    #[test]
    fn the_reference_list_is_sorted_and_matches_subdomains_only_at_label_boundaries() {
        assert!(REFERENCE_SITES.windows(2).all(|w| w[0] < w[1]));
        assert!(reference_site("attack.mitre.org"));
        assert!(reference_site("virustotal.com"));
        assert!(reference_site("www.virustotal.com"));
        assert!(!reference_site("notvirustotal.com"));
        assert!(!reference_site("virustotal.com.evil.ru"));
        assert!(!reference_site("com"));
        assert_eq!(refang("[.]a(.)b{.}c[DOT]d[:/]/e"), ".a.b.c.d://e");
        assert_eq!(refang("hXXps[:]//x[.]y"), "https://x.y");
        assert_eq!(refang("(SHA256:"), "(SHA256:");
    }

    #[test]
    fn domains_are_lower_case_punycode_under_a_known_suffix() {
        assert_eq!(ok("Evil[.]COM."), Indicator::Domain("evil.com".into()));
        assert_eq!(
            ok("bücher.example.de"),
            Indicator::Domain("xn--bcher-kva.example.de".into())
        );
        assert_eq!(ok("a.b.co.uk"), Indicator::Domain("a.b.co.uk".into()));
        for not in [
            "setup.exe",
            "invoice.pdf",
            "notes.txt",
            "co.uk",
            "-a.com",
            "a_b.com",
            "com",
            "a..com",
        ] {
            assert!(parse(not).is_err(), "{not}");
        }
        assert!(matches!(
            parse("setup.exe"),
            Err(IndicatorError::UnknownSuffix(_))
        ));
    }

    #[test]
    fn addresses_are_canonical_and_the_private_ones_are_scoped() {
        assert_eq!(
            ok("8.8.8[.]8"),
            Indicator::Ip("8.8.8.8".parse().expect("ip"))
        );
        assert_eq!(
            ok("2001:0DB8:0000:0000:0000:0000:0000:0001").canonical(),
            "2001:db8::1"
        );
        assert_eq!(ok("[2606:4700::1111]").canonical(), "2606:4700::1111");
        let s = |a: &str| scope(a.parse().expect("ip"));
        assert_eq!(s("10.1.2.3"), Some(Scope::Private));
        assert_eq!(s("172.31.255.1"), Some(Scope::Private));
        assert_eq!(s("172.32.0.1"), None);
        assert_eq!(s("192.168.0.1"), Some(Scope::Private));
        assert_eq!(s("127.0.0.1"), Some(Scope::Loopback));
        assert_eq!(s("169.254.1.1"), Some(Scope::LinkLocal));
        assert_eq!(s("100.64.0.1"), Some(Scope::Shared));
        assert_eq!(s("203.0.113.7"), Some(Scope::Documentation));
        assert_eq!(s("239.1.1.1"), Some(Scope::Multicast));
        assert_eq!(s("255.255.255.255"), Some(Scope::Reserved));
        assert_eq!(s("0.0.0.0"), Some(Scope::Reserved));
        assert_eq!(s("8.8.8.8"), None);
        assert_eq!(s("::1"), Some(Scope::Loopback));
        assert_eq!(s("fd00::1"), Some(Scope::Private));
        assert_eq!(s("fe80::1"), Some(Scope::LinkLocal));
        assert_eq!(s("ff02::1"), Some(Scope::Multicast));
        assert_eq!(s("2001:db8::1"), Some(Scope::Documentation));
        assert_eq!(s("::ffff:10.0.0.1"), Some(Scope::Private));
        assert_eq!(s("2606:4700::1111"), None);
        assert!(parse("1.2.3").is_err(), "not a dotted quad");
    }

    #[test]
    fn urls_keep_everything_but_the_case_of_scheme_and_host() {
        assert_eq!(
            ok("hxxps://Evil[.]COM:8443/Path?Q=1#F"),
            Indicator::Url("https://evil.com:8443/Path?Q=1#F".into())
        );
        assert_eq!(
            ok("HTTP://1.2.3[.]4/x"),
            Indicator::Url("http://1.2.3.4/x".into())
        );
        assert_eq!(
            ok("http://[2001:DB8::1]:80/"),
            Indicator::Url("http://[2001:db8::1]:80/".into())
        );
        assert_eq!(
            ok("http://u:p@a.com"),
            Indicator::Url("http://u:p@a.com".into())
        );
        assert!(matches!(
            parse("javascript://x.com"),
            Err(IndicatorError::Scheme(_))
        ));
        assert!(parse("http://setup.exe/").is_err());
    }

    #[test]
    fn url_ids_are_unpadded_base64url_as_virustotal_documents() {
        // VirusTotal's API reference: the id of "http://www.somedomain.com/this/is/my/url"
        // is "aHR0cDovL3d3dy5zb21lZG9tYWluLmNvbS90aGlzL2lzL215L3VybA".
        assert_eq!(
            url_id("http://www.somedomain.com/this/is/my/url"),
            "aHR0cDovL3d3dy5zb21lZG9tYWluLmNvbS90aGlzL2lzL215L3VybA"
        );
        assert!(!url_id("http://a.com/?").contains('='));
        assert_eq!(url_id("http://a.com/>?"), "aHR0cDovL2EuY29tLz4_");
    }
}

#[cfg(test)]
mod properties {
    //! The refang and schemeless rules as properties: whatever the defanging, a canonical
    //! form comes back to itself, and a `host/path` is the `http://` URL.
    use super::*;
    use proptest::prelude::*;

    /// A host label: lower-case letters and digits, a hyphen inside.
    fn label() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?"
    }

    /// A domain under a suffix the Public Suffix List knows.
    fn domain_name() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(label(), 1..4),
            prop::sample::select(vec!["com", "net", "site", "top", "ru", "co.uk", "ly"]),
        )
            .prop_map(|(labels, suffix)| format!("{}.{suffix}", labels.join(".")))
            // `gb.net`, `co.ly`...: some generated names are public suffixes themselves.
            .prop_filter("a registrable name", |d| domain(d).as_deref() == Ok(d))
    }

    /// A public IPv4 address (not one of the scoped ranges).
    fn address() -> impl Strategy<Value = String> {
        (1u8..=223, any::<u8>(), any::<u8>(), 1u8..=254)
            .prop_filter("public", |&(a, b, c, d)| {
                scope(IpAddr::V4(Ipv4Addr::new(a, b, c, d))).is_none()
            })
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}"))
    }

    /// A path of URL-safe characters, never a bare prefix length.
    fn path() -> impl Strategy<Value = String> {
        "[A-Za-z_][A-Za-z0-9_./=?&-]{0,24}"
    }

    /// The ways analysts defang a canonical form.
    fn defang(canonical: &str, style: u8) -> String {
        let (scheme, rest) = canonical
            .split_once("://")
            .map_or(("", canonical), |(s, r)| (s, r));
        let (host, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let dot = ["[.]", "(.)", "{.}", "[dot]", ".]", "[."][usize::from(style % 6)];
        // Only the host's last dot, as analysts usually do (the half-typed forms too).
        let host = match host.rfind('.') {
            Some(i) => format!("{}{dot}{}", &host[..i], &host[i + 1..]),
            None => host.to_owned(),
        };
        let scheme = match (scheme, style % 3) {
            ("", _) => String::new(),
            ("http", 0) => "hxxp://".to_owned(),
            ("https", 1) => "hXXps[://]".to_owned(),
            (s, _) => format!("{s}[:]//"),
        };
        format!("{scheme}{host}{tail}")
    }

    #[test]
    fn a_refanged_form_refangs_to_itself_and_a_canonical_one_parses_to_itself() {
        // Found by fuzzing (fuzz/seeds/indicator/regression-nested-defang): each pass undid
        // one `.]` of `k.]]]`, so the canonical URL changed at every parse.
        let cases = [
            "hxx.]tk/upda\0\0#\0\0\0\u{10}k[.]]]]]:]]]]]]]]neinvci]",
            "http://x.com/[[.]]",
            "evil[[.]]com",
            "cdn-files.]]com",
            "a[.[.x.com",
        ];
        for case in cases {
            let once = refang(case);
            assert_eq!(refang(&once), once, "{case:?}");
            if let Ok(found) = parse(case) {
                let canonical = found.canonical();
                assert_eq!(
                    parse(&canonical).map(|i| i.canonical()),
                    Ok(canonical),
                    "{case:?}"
                );
            }
        }
        assert_eq!(refang("evil[[.]]com"), "evil.com");
    }

    proptest! {
        #[test]
        fn a_canonical_form_parses_to_itself_and_so_does_any_defanging_of_it(
            host in prop_oneof![domain_name(), address()],
            path in path(),
            scheme in prop::sample::select(SCHEMES.to_vec()),
            style in any::<u8>(),
        ) {
            let url = format!("{scheme}://{host}/{path}");
            for canonical in [url.as_str(), host.as_str()] {
                let parsed = parse(canonical).map(|i| i.canonical());
                prop_assert_eq!(parsed.as_deref(), Ok(canonical));
                let defanged = defang(canonical, style);
                let parsed = parse(&defanged).map(|i| i.canonical());
                prop_assert_eq!(parsed.as_deref(), Ok(canonical), "defanged {}", defanged);
            }
        }

        #[test]
        fn an_address_is_told_as_the_parser_tells_it(
            text in prop_oneof![
                address(),
                "[0-9a-fA-F:.]{0,20}",
                "[a-z0-9.:-]{0,12}",
                Just("::1".to_owned()),
                Just("fe80::1".to_owned()),
                Just("abcd::".to_owned()),
            ]
        ) {
            prop_assert_eq!(super::address(&text), text.parse::<IpAddr>().ok(), "{}", text);
        }

        #[test]
        fn a_reference_link_is_told_as_parsing_and_judging_it_tells_it(
            scheme in prop::sample::select(vec!["http", "HTTPS", "ftp", "git", "smb"]),
            user in prop::sample::select(vec!["", "u@", "a:b@"]),
            host in prop_oneof![
                prop::sample::select(REFERENCE_SITES.to_vec()).prop_map(str::to_owned),
                prop::sample::select(REFERENCE_SITES.to_vec()).prop_map(|h| format!("www.{h}")),
                prop::sample::select(REFERENCE_SITES.to_vec()).prop_map(|h| format!("x..{h}")),
                prop::sample::select(REFERENCE_SITES.to_vec()).prop_map(|h| format!("-a.{}", h.to_uppercase())),
                prop::sample::select(REFERENCE_SITES.to_vec()).prop_map(|h| format!("{h}.")),
                domain_name(),
                address(),
                Just("github.io".to_owned()),
                Just("[2606:4700::1]".to_owned()),
                Just("example.com".to_owned()),
            ],
            port in prop::sample::select(vec!["", ":443", ":x", ":"]),
            tail in prop::sample::select(vec!["", "/", "/a/b?c#d", "?q", "#f"]),
        ) {
            let url = format!("{scheme}://{user}{host}{port}{tail}");
            let judged = parse(&url).ok().filter(|i| matches!(i, Indicator::Url(_))).is_some_and(|i| {
                i.exclusion().is_none() && i.prose_exclusion() == Some(crate::Exclusion::Reference)
            });
            prop_assert_eq!(reference_link(&url), judged, "{}", url);
        }

        #[test]
        fn a_host_and_path_without_a_scheme_is_the_http_url(
            host in prop_oneof![domain_name(), address()],
            path in path(),
            style in any::<u8>(),
        ) {
            let bare = format!("{host}/{path}");
            let want = format!("http://{bare}");
            prop_assert_eq!(parse(&bare).map(|i| i.canonical()), Ok(want.clone()));
            let defanged = defang(&bare, style);
            prop_assert_eq!(parse(&defanged).map(|i| i.canonical()), Ok(want));
        }

        #[test]
        fn an_address_with_a_prefix_length_is_a_network_never_a_url(
            ip in address(),
            prefix in 0u8..=32,
        ) {
            let cidr = format!("{ip}/{prefix}");
            prop_assert!(matches!(parse(&cidr), Err(IndicatorError::Network(_))), "{}", cidr);
        }
    }

    #[test]
    fn reserved_and_documentation_names_parse_and_are_never_looked_up() {
        for name in [
            "c2.test",
            "beacon.invalid",
            "printer.localhost",
            "relay.example",
            "nas.local",
        ] {
            let found = parse(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                found.exclusion(),
                Some(crate::Exclusion::ReservedName),
                "{name}"
            );
        }
        let url = parse("http://c2.test/gate.php").expect("url");
        assert_eq!(url.exclusion(), Some(crate::Exclusion::ReservedName));
        assert_eq!(
            parse("login.example.com").expect("name").exclusion(),
            Some(crate::Exclusion::DocumentationDomain)
        );
        assert!(parse("localhost").is_err(), "one label is no domain");
    }

    #[test]
    fn prose_names_that_are_not_hosts_say_what_they_are() {
        let why = |s: &str| parse(s).expect(s).prose_exclusion();
        assert_eq!(
            why("Trojan.Win32.Agent.ac"),
            Some(crate::Exclusion::DetectionName)
        );
        assert_eq!(
            why("Backdoor.MSIL.Rat.ac"),
            Some(crate::Exclusion::DetectionName)
        );
        assert_eq!(why("dropper.evil-site.top"), None);
        assert!(detection_word("Trojan.Agent.ac"));
        assert!(!detection_word("trojan.agent.ac"));
        assert_eq!(why("pastebin.com"), Some(crate::Exclusion::WellKnownSite));
        assert_eq!(why("notes.one"), Some(crate::Exclusion::FileName));
        // A name under a hosting site, and a URL on one, are indicators.
        assert_eq!(why("evil-actor.ngrok-free.app"), None);
        assert_eq!(why("evil-actor.workers.dev"), None);
        assert_eq!(why("http://pastebin.com/raw/Xk2pQ9Lm"), None);
        assert!(WELL_KNOWN_SITES.windows(2).all(|w| w[0] < w[1]));
    }
}
