//! Typed-row feeds: CSV whose rows name their own kind in one column (`URL`, `IPv4`,
//! `FileHash-SHA256`, `ip:port`, `sha256_hash`, even `Description`) and give the value in
//! another, as OTX pulses, ThreatFox and vendor feeds are published.
//!
//! Reading only the columns that hold hashes would miss every URL, domain and address of
//! such a feed, and reading every column as text would take the feed's reference links for
//! indicators. So the type column decides how its row's value is read: a hash type as a
//! file hash (a value that is none is `invalid`), a URL, domain or address type as one
//! (`185.7.214.9/t4` typed `url` is `http://185.7.214.9/t4`; `91.215.85.17:8443` typed
//! `ip:port` is the address), another digest type by its name (`imphash`), and any other
//! type (`email`, `mutex`, `filename`, a `Description` row) is counted as `other_type`. The
//! feed's other columns (notes, references) are not read. A feed is a list of indicators,
//! not an export of a network's own traffic: its URLs, domains and addresses are taken
//! even when `--kinds` is not given (CSV's default is file hashes only).

use crate::context::{self, Exclusion};
use crate::indicator::Kind;

use super::csv::Record;
use super::{Sink, trim};

/// The columns of a typed-row feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Typed {
    /// The column that names each row's kind.
    pub(crate) kind: usize,
    /// The column of values.
    pub(crate) value: usize,
    /// The first record is a row, not a header (the header was commented out, as
    /// ThreatFox's is).
    pub(crate) first_is_row: bool,
}

/// What a row's type says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RowType {
    /// A file hash.
    File,
    /// A URL, a domain or an address.
    Network(Kind),
    /// Another digest, excluded for the reason its name gives (`imphash`).
    Digest(Exclusion),
    /// A known type that VirusTotal does not look up.
    Other,
}

/// Header names of a type column (squashed: lower case, alphanumerics only).
const TYPE_NAMES: &[&str] = &[
    "attributetype",
    "indicatortype",
    "ioctype",
    "kind",
    "observabletype",
    "type",
];

/// Type words of rows that are no IOC VirusTotal looks up (squashed).
const OTHER_TYPES: &[&str] = &[
    "asn",
    "btc",
    "comment",
    "cve",
    "cidr",
    "description",
    "email",
    "emaildst",
    "emailsrc",
    "filename",
    "filepath",
    "mutex",
    "mutant",
    "path",
    "regkey",
    "registry",
    "sigma",
    "snort",
    "text",
    "useragent",
    "yara",
];

/// What a type cell says, if it is a known type word.
fn row_type(cell: &[u8]) -> Option<RowType> {
    let squashed: String = String::from_utf8_lossy(unquote(trim(cell)))
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let s = squashed.as_str();
    let file = matches!(
        s,
        "md5"
            | "sha1"
            | "sha256"
            | "md5hash"
            | "sha1hash"
            | "sha256hash"
            | "filehash"
            | "filehashmd5"
            | "filehashsha1"
            | "filehashsha256"
            | "hash"
    );
    if file {
        return Some(RowType::File);
    }
    let network = match s {
        "url" | "uri" | "urls" => Some(Kind::Url),
        "domain" | "domainname" | "hostname" | "fqdn" | "host" => Some(Kind::Domain),
        "ip" | "ipv4" | "ipv6" | "ipdst" | "ipsrc" | "ipport" | "ipdstport" | "ipsrcport"
        | "ipv4addr" | "ipv6addr" | "ipaddress" | "ipaddr" => Some(Kind::Ip),
        _ => None,
    };
    if let Some(kind) = network {
        return Some(RowType::Network(kind));
    }
    if OTHER_TYPES.contains(&s) {
        return Some(RowType::Other);
    }
    if s.starts_with("filehash") || s.ends_with("hash") || s.starts_with("sha") {
        return context::field(s.as_bytes()).map(RowType::Digest);
    }
    None
}

/// A cell without the quotes of a `", "`-separated export (ThreatFox puts a space after each
/// comma, so its quotes are not CSV's).
fn unquote(cell: &[u8]) -> &[u8] {
    match cell {
        [b'"', inner @ .., b'"'] => trim(inner),
        _ => cell,
    }
}

/// The type and value columns of `sampled`, if it is a typed-row feed: a column named like
/// a type column most of whose cells are type words, or (no such name: the header may be
/// commented out) one nearly all of whose cells are; and the column whose cells most often
/// parse as their row's type says.
pub(crate) fn detect(sampled: &[Record]) -> Option<Typed> {
    let width = sampled.iter().map(Record::columns).max().unwrap_or(0);
    let first = sampled.first()?;
    let name = |i: usize| -> String {
        String::from_utf8_lossy(first.field(i).unwrap_or(b""))
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let mut best: Option<(usize, bool)> = None;
    for i in 0..width {
        let named = TYPE_NAMES.contains(&name(i).as_str());
        let rows = &sampled[usize::from(named)..];
        let cells: Vec<&[u8]> = rows
            .iter()
            .filter_map(|r| r.field(i))
            .filter(|c| !trim(c).is_empty())
            .collect();
        if cells.is_empty() {
            continue;
        }
        let known = cells.iter().filter(|c| row_type(c).is_some()).count();
        let iocs = cells
            .iter()
            .filter(|c| matches!(row_type(c), Some(RowType::File | RowType::Network(_))))
            .count();
        let enough = if named {
            known * 2 >= cells.len()
        } else {
            known * 10 >= cells.len() * 9
        };
        if enough && iocs > 0 {
            // Found by content: the first record is a row when its cell is a type word too
            // (ThreatFox's header is a comment), else it is a header of another name.
            let first_is_row = !named && first.field(i).and_then(row_type).is_some();
            best = Some((i, first_is_row));
            break;
        }
    }
    let (kind, first_is_row) = best?;
    let rows = &sampled[usize::from(!first_is_row)..];
    let value = (0..width)
        .filter(|&j| j != kind)
        .map(|j| {
            let fits = rows
                .iter()
                .filter(|r| match (r.field(kind).and_then(row_type), r.field(j)) {
                    (Some(t), Some(cell)) => fits(t, unquote(trim(cell))),
                    _ => false,
                })
                .count();
            (fits, std::cmp::Reverse(j))
        })
        .max()
        .filter(|&(fits, _)| fits > 0)
        .map(|(_, std::cmp::Reverse(j))| j)?;
    Some(Typed {
        kind,
        value,
        first_is_row,
    })
}

/// Whether `value` parses as a row of type `t` says.
fn fits(t: RowType, value: &[u8]) -> bool {
    match t {
        RowType::File => crate::Hash::parse_bytes(value).is_ok(),
        RowType::Network(_) => network(value).is_ok(),
        RowType::Digest(_) | RowType::Other => false,
    }
}

/// A network value: a URL, domain or address; an address's port (`ip:port`, MISP's
/// `ip|port`) dropped.
fn network(value: &[u8]) -> Result<crate::Indicator, String> {
    let value = match memchr::memchr(b'|', value) {
        Some(i) => &value[..i],
        None => value,
    };
    match super::indicators::value(value) {
        Ok(found) => Ok(found),
        Err(why) => {
            let text = String::from_utf8_lossy(value);
            let ip = text
                .rsplit_once(':')
                .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|(ip, _)| ip.parse::<std::net::Ipv4Addr>().ok());
            ip.map(|ip| crate::Indicator::Ip(ip.into())).ok_or(why)
        }
    }
}

/// One row of a typed feed.
pub(crate) fn take(record: &Record, typed: Typed, sink: &mut Sink<'_>) {
    let cell = trim(record.field(typed.kind).unwrap_or(b""));
    if cell.is_empty() {
        return;
    }
    // An unknown type word: a row of a kind we do not read.
    let t = row_type(cell).unwrap_or(RowType::Other);
    let value = unquote(trim(record.field(typed.value).unwrap_or(b"")));
    if value.is_empty() || super::csv::placeholder(value) {
        return;
    }
    match t {
        RowType::File => sink.hash_value(value, record.line),
        RowType::Network(_) => match network(value) {
            Ok(found) => sink.indicator(found, record.line, false),
            Err(why) => sink.invalid(value, record.line, why),
        },
        RowType::Digest(why) => sink.token(value, record.line, Some(why)),
        RowType::Other => sink.excluded(Exclusion::OtherType),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_words_of_the_feeds_we_know_name_their_kind() {
        assert_eq!(row_type(b"FileHash-SHA256"), Some(RowType::File));
        assert_eq!(row_type(b"sha256_hash"), Some(RowType::File));
        assert_eq!(row_type(b" \"md5_hash\" "), Some(RowType::File));
        assert_eq!(row_type(b"URL"), Some(RowType::Network(Kind::Url)));
        assert_eq!(row_type(b"ip:port"), Some(RowType::Network(Kind::Ip)));
        assert_eq!(row_type(b"ip-dst|port"), Some(RowType::Network(Kind::Ip)));
        assert_eq!(row_type(b"hostname"), Some(RowType::Network(Kind::Domain)));
        assert_eq!(row_type(b"Description"), Some(RowType::Other));
        assert_eq!(row_type(b"email"), Some(RowType::Other));
        assert_eq!(
            row_type(b"imphash"),
            Some(RowType::Digest(Exclusion::ImportHash))
        );
        assert_eq!(row_type(b"Payload delivery"), None);
        assert_eq!(row_type(b"2026-12-01"), None);
    }

    fn records(text: &str) -> Vec<Record> {
        let mut input = text.as_bytes();
        let mut records = super::super::csv::Records::new(&mut input, b',', false);
        let mut out = Vec::new();
        loop {
            let mut record = Record::default();
            if !records.next(&mut record).expect("reads") {
                return out;
            }
            out.push(record);
        }
    }

    #[test]
    fn the_type_column_is_found_by_name_or_by_content_and_a_header_is_never_a_row() {
        let rows = "url,185.7.214.9/t4\nip,185.7.214.9\nsha256,\
                    275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f\n";
        let typed = |text: &str| detect(&records(text));
        // Named: `Type`; the header is the first record.
        assert_eq!(
            typed(&format!("Type,Value\n{rows}")),
            Some(Typed {
                kind: 0,
                value: 1,
                first_is_row: false
            })
        );
        // No header at all (ThreatFox's is a comment): the first record is a row.
        assert_eq!(
            typed(rows),
            Some(Typed {
                kind: 0,
                value: 1,
                first_is_row: true
            })
        );
        // A header of another name over type words: still a header.
        let many: String = (0..10).map(|_| "url,185.7.214.9/t4\n").collect();
        assert_eq!(
            typed(&format!("Category,Observable\n{many}")),
            Some(Typed {
                kind: 0,
                value: 1,
                first_is_row: false
            })
        );
        assert_eq!(
            typed(
                "name,sha256\na.exe,275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f\n"
            ),
            None
        );
    }

    #[test]
    fn an_address_with_a_port_is_the_address() {
        assert_eq!(
            network(b"91.215.85.17:8443").map(|i| i.canonical()),
            Ok("91.215.85.17".to_owned())
        );
        assert_eq!(
            network(b"91.215.85.17|8443").map(|i| i.canonical()),
            Ok("91.215.85.17".to_owned())
        );
        assert_eq!(
            network(b"185.7.214.9/t4").map(|i| i.canonical()),
            Ok("http://185.7.214.9/t4".to_owned())
        );
        assert!(network(b"not a host").is_err());
    }
}
