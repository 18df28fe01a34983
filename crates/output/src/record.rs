//! The record schema: one row per unique IOC, and the named fields it is projected to.
//!
//! One column set for every kind: the fields all kinds share (status, verdict counts,
//! reputation, tags, threat names, dates), then each kind's own (a file's digests, type and
//! size; a URL's final URL, title and HTTP code; a domain's registrar, creation date and
//! popularity rank; an address's ASN, owner, country and network), empty where a kind has no
//! such field. The spreadsheet guard applies to every text cell: URLs, titles and names are
//! whatever an attacker chose.

use std::borrow::Cow;
use std::fmt;

use serde_json::value::RawValue;
use vtbulk_ioc::{HashKind, Kind};

/// What happened to an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// VirusTotal knows the file.
    Ok,
    /// VirusTotal has never seen it.
    NotFound,
    /// Not a hash; never sent.
    Invalid,
    /// The lookup failed (retries exhausted, or a permanent error).
    Error,
    /// Not looked up (quota spent, run stopped).
    Skipped,
}

impl Status {
    /// `ok`, `not_found`, `invalid`, `error`, `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::NotFound => "not_found",
            Status::Invalid => "invalid",
            Status::Error => "error",
            Status::Skipped => "skipped",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a result came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A lookup in this run.
    Api,
    /// The local cache.
    Cache,
}

impl Source {
    /// `api` or `cache`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Cache => "cache",
        }
    }
}

/// The 8 verdict counters of the last analysis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[expect(
    missing_docs,
    reason = "VirusTotal's own names for its verdicts (last_analysis_stats), documented in docs/output.md"
)]
pub struct Stats {
    pub malicious: u32,
    pub suspicious: u32,
    pub undetected: u32,
    pub harmless: u32,
    pub timeout: u32,
    pub confirmed_timeout: u32,
    pub failure: u32,
    pub type_unsupported: u32,
}

impl Stats {
    /// All engines that took part.
    pub fn total(&self) -> u32 {
        self.malicious
            + self.suspicious
            + self.undetected
            + self.harmless
            + self.timeout
            + self.confirmed_timeout
            + self.failure
            + self.type_unsupported
    }
}

/// One output row.
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// The hash as normalised (lower-case hex), or the invalid value as read.
    pub input: String,
    /// The kind of hash (none for invalid values and for URLs, domains and IPs).
    pub kind: Option<HashKind>,
    /// URL, domain or IP (none for files and invalid values): the `kind` column says it.
    pub ioc_kind: Option<Kind>,
    /// What happened.
    pub status: Option<Status>,
    /// SHA-256 of the file.
    pub sha256: Option<String>,
    /// MD5 of the file.
    pub md5: Option<String>,
    /// SHA-1 of the file.
    pub sha1: Option<String>,
    /// Verdict counters.
    pub stats: Option<Stats>,
    /// `popular_threat_classification.suggested_threat_label`.
    pub threat_label: Option<String>,
    /// The most voted threat category.
    pub threat_category: Option<String>,
    /// The most voted threat name.
    pub threat_name: Option<String>,
    /// e.g. "Win32 EXE".
    pub type_description: Option<String>,
    /// e.g. "peexe".
    pub type_tag: Option<String>,
    /// Bytes.
    pub size: Option<u64>,
    /// The most interesting submitted name.
    pub meaningful_name: Option<String>,
    /// VirusTotal's tags.
    pub tags: Vec<String>,
    /// Community reputation.
    pub reputation: Option<i64>,
    /// Unix seconds.
    pub first_submission_date: Option<i64>,
    /// Unix seconds.
    pub last_analysis_date: Option<i64>,
    /// Submissions.
    pub times_submitted: Option<u64>,
    /// URL and domain: the categories given by the services that categorise them, distinct
    /// values sorted.
    pub categories: Vec<String>,
    /// URL: where it led after redirects.
    pub final_url: Option<String>,
    /// URL: the page's title.
    pub title: Option<String>,
    /// URL: the HTTP status of the last fetch.
    pub http_code: Option<u32>,
    /// Domain: the registrar.
    pub registrar: Option<String>,
    /// Domain: registration, Unix seconds.
    pub creation_date: Option<i64>,
    /// Domain: the best (smallest) rank in any popularity list.
    pub popularity_rank: Option<u64>,
    /// IP: autonomous system number.
    pub asn: Option<u32>,
    /// IP: the autonomous system's owner.
    pub as_owner: Option<String>,
    /// IP: ISO 3166 country code.
    pub country: Option<String>,
    /// IP: the announced network (CIDR).
    pub network: Option<String>,
    /// Times the IOC appeared in the input.
    pub occurrences: u32,
    /// `FILE:LINE` of its first appearance.
    pub first_origin: String,
    /// Where the result came from (none for invalid and skipped).
    pub source: Option<Source>,
    /// VirusTotal's error code (or ours for transport failures), or the skip reason.
    pub error_code: Option<String>,
    /// The error's message.
    pub error_message: Option<String>,
    /// VirusTotal's `data` object, for `--raw` NDJSON.
    pub raw: Option<Box<RawValue>>,
    /// Text fields from VirusTotal cut to [`FIELD_CAP`] (not an output column: the cut cells
    /// end with [`CUT_MARK`], and the summary counts them).
    pub cut: u32,
}

/// The most bytes a text field from VirusTotal keeps (a name, label, title, tag, URL...): an
/// answer's 20 MB `meaningful_name` must not become a 20 MB cell.
pub const FIELD_CAP: usize = 4096;

/// What a cut field ends with.
pub const CUT_MARK: &str = "…[cut]";

impl Record {
    /// Cuts every text field from VirusTotal longer than [`FIELD_CAP`] bytes (on a character
    /// boundary, [`CUT_MARK`] appended, within the cap) and keeps at most 256 tags and
    /// categories; counts the cuts in `cut`.
    pub fn cap_fields(&mut self) {
        fn cap(text: &mut String) -> u32 {
            if text.len() <= FIELD_CAP {
                return 0;
            }
            let mut end = FIELD_CAP - CUT_MARK.len();
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push_str(CUT_MARK);
            1
        }
        let mut cut = 0;
        for field in [
            &mut self.threat_label,
            &mut self.threat_category,
            &mut self.threat_name,
            &mut self.type_description,
            &mut self.type_tag,
            &mut self.meaningful_name,
            &mut self.final_url,
            &mut self.title,
            &mut self.registrar,
            &mut self.as_owner,
            &mut self.country,
            &mut self.network,
        ]
        .into_iter()
        .flatten()
        {
            cut += cap(field);
        }
        for list in [&mut self.tags, &mut self.categories] {
            if list.len() > 256 {
                list.truncate(256);
                cut += 1;
            }
            cut += list.iter_mut().map(cap).sum::<u32>();
        }
        self.cut += cut;
    }
}

/// A named output field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[expect(
    missing_docs,
    reason = "each field is documented by its name in docs/output.md, which a test checks"
)]
pub enum Field {
    Input,
    Kind,
    Status,
    Sha256,
    Md5,
    Sha1,
    Malicious,
    Suspicious,
    Undetected,
    Harmless,
    Timeout,
    ConfirmedTimeout,
    Failure,
    TypeUnsupported,
    EnginesTotal,
    ThreatLabel,
    ThreatCategory,
    ThreatName,
    TypeDescription,
    TypeTag,
    Size,
    MeaningfulName,
    Tags,
    Reputation,
    FirstSubmissionDate,
    LastAnalysisDate,
    TimesSubmitted,
    Categories,
    FinalUrl,
    Title,
    HttpCode,
    Registrar,
    CreationDate,
    PopularityRank,
    Asn,
    AsOwner,
    Country,
    Network,
    Occurrences,
    FirstOrigin,
    Source,
    ErrorCode,
    ErrorMessage,
}

/// `--fields` named something that does not exist.
#[derive(Debug, thiserror::Error)]
#[error("unknown field {0:?}; the fields are: {1}")]
pub struct FieldsError(String, String);

/// RFC 3339 UTC, e.g. `2024-07-17T21:12:40Z` (the seconds themselves when out of range).
/// The one home of this format: the engine and the binary use it too.
pub fn rfc3339(unix_seconds: i64) -> String {
    jiff::Timestamp::from_second(unix_seconds)
        .map_or_else(|_| unix_seconds.to_string(), |t| t.to_string())
}

/// Parses a comma-separated `--fields` list.
pub fn parse_fields(list: &str) -> Result<Vec<Field>, FieldsError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|name| {
            Field::ALL
                .iter()
                .find(|f| f.name() == name)
                .copied()
                .ok_or_else(|| {
                    let all: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
                    FieldsError(name.to_owned(), all.join(","))
                })
        })
        .collect()
}

impl Field {
    /// Every field, in the default column order.
    pub const ALL: [Field; 43] = [
        Field::Input,
        Field::Kind,
        Field::Status,
        Field::Sha256,
        Field::Md5,
        Field::Sha1,
        Field::Malicious,
        Field::Suspicious,
        Field::Undetected,
        Field::Harmless,
        Field::Timeout,
        Field::ConfirmedTimeout,
        Field::Failure,
        Field::TypeUnsupported,
        Field::EnginesTotal,
        Field::ThreatLabel,
        Field::ThreatCategory,
        Field::ThreatName,
        Field::TypeDescription,
        Field::TypeTag,
        Field::Size,
        Field::MeaningfulName,
        Field::Tags,
        Field::Reputation,
        Field::FirstSubmissionDate,
        Field::LastAnalysisDate,
        Field::TimesSubmitted,
        Field::Categories,
        Field::FinalUrl,
        Field::Title,
        Field::HttpCode,
        Field::Registrar,
        Field::CreationDate,
        Field::PopularityRank,
        Field::Asn,
        Field::AsOwner,
        Field::Country,
        Field::Network,
        Field::Occurrences,
        Field::FirstOrigin,
        Field::Source,
        Field::ErrorCode,
        Field::ErrorMessage,
    ];

    /// The column and key name.
    pub fn name(self) -> &'static str {
        match self {
            Field::Input => "input",
            Field::Kind => "kind",
            Field::Status => "status",
            Field::Sha256 => "sha256",
            Field::Md5 => "md5",
            Field::Sha1 => "sha1",
            Field::Malicious => "malicious",
            Field::Suspicious => "suspicious",
            Field::Undetected => "undetected",
            Field::Harmless => "harmless",
            Field::Timeout => "timeout",
            Field::ConfirmedTimeout => "confirmed_timeout",
            Field::Failure => "failure",
            Field::TypeUnsupported => "type_unsupported",
            Field::EnginesTotal => "engines_total",
            Field::ThreatLabel => "threat_label",
            Field::ThreatCategory => "threat_category",
            Field::ThreatName => "threat_name",
            Field::TypeDescription => "type_description",
            Field::TypeTag => "type_tag",
            Field::Size => "size",
            Field::MeaningfulName => "meaningful_name",
            Field::Tags => "tags",
            Field::Reputation => "reputation",
            Field::FirstSubmissionDate => "first_submission_date",
            Field::LastAnalysisDate => "last_analysis_date",
            Field::TimesSubmitted => "times_submitted",
            Field::Categories => "categories",
            Field::FinalUrl => "final_url",
            Field::Title => "title",
            Field::HttpCode => "http_code",
            Field::Registrar => "registrar",
            Field::CreationDate => "creation_date",
            Field::PopularityRank => "popularity_rank",
            Field::Asn => "asn",
            Field::AsOwner => "as_owner",
            Field::Country => "country",
            Field::Network => "network",
            Field::Occurrences => "occurrences",
            Field::FirstOrigin => "first_origin",
            Field::Source => "source",
            Field::ErrorCode => "error_code",
            Field::ErrorMessage => "error_message",
        }
    }

    /// True for fields holding free text (the ones the CSV injection guard applies to).
    pub fn is_text(self) -> bool {
        matches!(
            self,
            Field::Input
                | Field::ThreatLabel
                | Field::ThreatCategory
                | Field::ThreatName
                | Field::TypeDescription
                | Field::TypeTag
                | Field::MeaningfulName
                | Field::Tags
                | Field::Categories
                | Field::FinalUrl
                | Field::Title
                | Field::Registrar
                | Field::AsOwner
                | Field::Country
                | Field::Network
                | Field::FirstOrigin
                | Field::ErrorCode
                | Field::ErrorMessage
        )
    }

    fn stat(self, s: &Stats) -> Option<u32> {
        Some(match self {
            Field::Malicious => s.malicious,
            Field::Suspicious => s.suspicious,
            Field::Undetected => s.undetected,
            Field::Harmless => s.harmless,
            Field::Timeout => s.timeout,
            Field::ConfirmedTimeout => s.confirmed_timeout,
            Field::Failure => s.failure,
            Field::TypeUnsupported => s.type_unsupported,
            Field::EnginesTotal => s.total(),
            _ => return None,
        })
    }

    /// The value, borrowed from the record where possible.
    pub fn value(self, r: &Record) -> Val<'_> {
        fn text(v: &Option<String>) -> Val<'_> {
            v.as_deref().map_or(Val::Null, Val::Str)
        }
        match self {
            Field::Input => Val::Str(&r.input),
            Field::Kind => match (r.kind, r.ioc_kind) {
                (Some(k), _) => Val::Str(k.as_str()),
                (None, Some(k)) => Val::Str(k.as_str()),
                (None, None) => Val::Null,
            },
            Field::Status => r.status.map_or(Val::Null, |s| Val::Str(s.as_str())),
            Field::Sha256 => text(&r.sha256),
            Field::Md5 => text(&r.md5),
            Field::Sha1 => text(&r.sha1),
            Field::ThreatLabel => text(&r.threat_label),
            Field::ThreatCategory => text(&r.threat_category),
            Field::ThreatName => text(&r.threat_name),
            Field::TypeDescription => text(&r.type_description),
            Field::TypeTag => text(&r.type_tag),
            Field::Size => r.size.map_or(Val::Null, Val::U64),
            Field::MeaningfulName => text(&r.meaningful_name),
            Field::Tags => Val::List(&r.tags),
            Field::Reputation => r.reputation.map_or(Val::Null, Val::I64),
            Field::FirstSubmissionDate => r
                .first_submission_date
                .map_or(Val::Null, |t| Val::Owned(rfc3339(t))),
            Field::LastAnalysisDate => r
                .last_analysis_date
                .map_or(Val::Null, |t| Val::Owned(rfc3339(t))),
            Field::TimesSubmitted => r.times_submitted.map_or(Val::Null, Val::U64),
            Field::Categories => Val::List(&r.categories),
            Field::FinalUrl => text(&r.final_url),
            Field::Title => text(&r.title),
            Field::HttpCode => r.http_code.map_or(Val::Null, |n| Val::U64(u64::from(n))),
            Field::Registrar => text(&r.registrar),
            Field::CreationDate => r
                .creation_date
                .map_or(Val::Null, |t| Val::Owned(rfc3339(t))),
            Field::PopularityRank => r.popularity_rank.map_or(Val::Null, Val::U64),
            Field::Asn => r.asn.map_or(Val::Null, |n| Val::U64(u64::from(n))),
            Field::AsOwner => text(&r.as_owner),
            Field::Country => text(&r.country),
            Field::Network => text(&r.network),
            Field::Occurrences => Val::U64(u64::from(r.occurrences)),
            Field::FirstOrigin => Val::Str(&r.first_origin),
            Field::Source => r.source.map_or(Val::Null, |s| Val::Str(s.as_str())),
            Field::ErrorCode => text(&r.error_code),
            Field::ErrorMessage => text(&r.error_message),
            stat => r
                .stats
                .and_then(|s| stat.stat(&s))
                .map_or(Val::Null, |n| Val::U64(u64::from(n))),
        }
    }

    /// The value as a CSV cell (empty when absent; tags joined with `;`), borrowed from the
    /// record when it is text.
    pub fn cell(self, r: &Record) -> Cow<'_, str> {
        match self.value(r) {
            Val::Null => Cow::Borrowed(""),
            Val::Str(s) => Cow::Borrowed(s),
            Val::Owned(s) => Cow::Owned(s),
            Val::U64(n) => Cow::Owned(itoa::Buffer::new().format(n).to_owned()),
            Val::I64(n) => Cow::Owned(itoa::Buffer::new().format(n).to_owned()),
            Val::List(l) => Cow::Owned(l.join(";")),
        }
    }
}

/// A field's value, borrowed where possible so that sinks write without building JSON values.
#[derive(Clone, Debug, PartialEq)]
pub enum Val<'a> {
    /// Absent.
    Null,
    /// Text borrowed from the record.
    Str(&'a str),
    /// Text made for output (dates).
    Owned(String),
    /// A count or size.
    U64(u64),
    /// A signed number (reputation).
    I64(i64),
    /// A list of text (tags).
    List(&'a [String]),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_text_field_from_virustotal_is_cut_to_the_cap_and_flagged() {
        let mut r = Record {
            meaningful_name: Some("é".repeat(10 << 20)),
            title: Some("short".into()),
            tags: (0..1000).map(|i| format!("tag{i}")).collect(),
            categories: vec!["x".repeat(5000)],
            ..Record::default()
        };
        r.cap_fields();
        let name = r.meaningful_name.as_deref().expect("name");
        assert!(name.len() <= FIELD_CAP, "{}", name.len());
        assert!(name.ends_with(CUT_MARK) && name.starts_with("éé"));
        assert_eq!(r.title.as_deref(), Some("short"));
        assert_eq!(r.tags.len(), 256);
        assert!(r.categories[0].ends_with(CUT_MARK) && r.categories[0].len() <= FIELD_CAP);
        assert_eq!(r.cut, 3, "the name, the tag list, the category");
        // Within the cap: untouched, nothing counted.
        let mut fine = Record {
            meaningful_name: Some("x".repeat(FIELD_CAP)),
            ..Record::default()
        };
        fine.cap_fields();
        assert_eq!(fine.meaningful_name.map(|n| n.len()), Some(FIELD_CAP));
        assert_eq!(fine.cut, 0);
    }

    #[test]
    fn field_names_are_unique_and_parse_back() {
        let names: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        let parsed = parse_fields(&names.join(",")).expect("all known");
        assert_eq!(parsed, Field::ALL.to_vec());
        let err = parse_fields("input,colour").expect_err("unknown");
        assert!(err.to_string().contains("\"colour\""));
    }

    #[test]
    fn dates_are_rfc3339_utc_and_absent_values_are_empty() {
        let r = Record {
            last_analysis_date: Some(1_721_250_760),
            stats: Some(Stats {
                malicious: 66,
                undetected: 5,
                type_unsupported: 7,
                ..Stats::default()
            }),
            ..Record::default()
        };
        assert_eq!(Field::LastAnalysisDate.cell(&r), "2024-07-17T21:12:40Z");
        assert_eq!(Field::EnginesTotal.cell(&r), "78");
        assert_eq!(Field::Size.cell(&r), "");
        assert_eq!(Field::Size.value(&r), Val::Null);
    }
}
