//! The cache's binary form of a record's attributes.
//!
//! Every answer's summary is written once per lookup and read once per cache hit, and the
//! summaries are most of the index database: as JSON they were about 600 bytes (a third of
//! it the three digests, which the store keeps as key columns anyway) and their parsing was
//! a large part of a cached re-run. Packed, they are about 130 bytes: a version byte, a
//! bitmap of the fields present, integers as LEB128 varints (signed ones zigzagged) and
//! strings with a varint length. The digests are left out; [`unpack`] takes them from the
//! row. A summary that starts with `{` is the JSON of an older cache and is still read.

use vtbulk_vt::models::{AnalysisStats, CountedValue, SummaryAttributes, ThreatClassification};

/// The first byte of a packed summary (never `{`).
const VERSION: u8 = 1;

const SIZE: u16 = 1;
const TYPE_DESCRIPTION: u16 = 1 << 1;
const TYPE_TAG: u16 = 1 << 2;
const MEANINGFUL_NAME: u16 = 1 << 3;
const REPUTATION: u16 = 1 << 4;
const TIMES_SUBMITTED: u16 = 1 << 5;
const FIRST_SUBMISSION: u16 = 1 << 6;
const LAST_ANALYSIS: u16 = 1 << 7;
const STATS: u16 = 1 << 8;
const THREAT: u16 = 1 << 9;
const THREAT_LABEL: u16 = 1 << 10;

/// Packs `a` (its digests excepted) into `out`.
pub(crate) fn pack(a: &SummaryAttributes, out: &mut Vec<u8>) {
    let threat = a.popular_threat_classification.as_ref();
    let mut present = 0u16;
    for (bit, set) in [
        (SIZE, a.size.is_some()),
        (TYPE_DESCRIPTION, a.type_description.is_some()),
        (TYPE_TAG, a.type_tag.is_some()),
        (MEANINGFUL_NAME, a.meaningful_name.is_some()),
        (REPUTATION, a.reputation.is_some()),
        (TIMES_SUBMITTED, a.times_submitted.is_some()),
        (FIRST_SUBMISSION, a.first_submission_date.is_some()),
        (LAST_ANALYSIS, a.last_analysis_date.is_some()),
        (STATS, a.last_analysis_stats.is_some()),
        (THREAT, threat.is_some()),
        (
            THREAT_LABEL,
            threat.is_some_and(|t| t.suggested_threat_label.is_some()),
        ),
    ] {
        if set {
            present |= bit;
        }
    }
    out.push(VERSION);
    out.extend_from_slice(&present.to_le_bytes());
    let text = |out: &mut Vec<u8>, s: &str| {
        varint(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    };
    if let Some(v) = a.size {
        varint(out, v);
    }
    for s in [&a.type_description, &a.type_tag, &a.meaningful_name]
        .into_iter()
        .flatten()
    {
        text(out, s);
    }
    if let Some(v) = a.reputation {
        varint(out, zigzag(v));
    }
    if let Some(v) = a.times_submitted {
        varint(out, v);
    }
    for v in [a.first_submission_date, a.last_analysis_date]
        .into_iter()
        .flatten()
    {
        varint(out, zigzag(v));
    }
    if let Some(s) = &a.last_analysis_stats {
        for v in s.counts() {
            varint(out, u64::from(v));
        }
    }
    varint(out, a.tags.len() as u64);
    for tag in &a.tags {
        text(out, tag);
    }
    if let Some(t) = threat {
        if let Some(label) = &t.suggested_threat_label {
            text(out, label);
        }
        for list in [&t.popular_threat_category, &t.popular_threat_name] {
            varint(out, list.len() as u64);
            for v in list {
                varint(out, v.count);
                text(out, &v.value);
            }
        }
    }
}

/// The attributes back from a stored summary (packed, or the JSON of an older cache), with
/// the digests of the row; `None` if the bytes do not decode.
pub(crate) fn unpack(
    stored: &[u8],
    md5: Option<String>,
    sha1: Option<String>,
    sha256: String,
) -> Option<SummaryAttributes> {
    let mut a = if stored.first() == Some(&b'{') {
        serde_json::from_slice(stored).ok()?
    } else {
        read(stored)?
    };
    a.md5 = a.md5.or(md5);
    a.sha1 = a.sha1.or(sha1);
    a.sha256 = a.sha256.or(Some(sha256));
    Some(a)
}

fn read(stored: &[u8]) -> Option<SummaryAttributes> {
    let mut r = Reader(stored);
    if r.byte()? != VERSION {
        return None;
    }
    let present = u16::from_le_bytes([r.byte()?, r.byte()?]);
    let has = |bit: u16| present & bit != 0;
    let mut a = SummaryAttributes::default();
    if has(SIZE) {
        a.size = Some(r.varint()?);
    }
    for (bit, field) in [
        (TYPE_DESCRIPTION, &mut a.type_description),
        (TYPE_TAG, &mut a.type_tag),
        (MEANINGFUL_NAME, &mut a.meaningful_name),
    ] {
        if has(bit) {
            *field = Some(r.text()?);
        }
    }
    if has(REPUTATION) {
        a.reputation = Some(unzigzag(r.varint()?));
    }
    if has(TIMES_SUBMITTED) {
        a.times_submitted = Some(r.varint()?);
    }
    for (bit, field) in [
        (FIRST_SUBMISSION, &mut a.first_submission_date),
        (LAST_ANALYSIS, &mut a.last_analysis_date),
    ] {
        if has(bit) {
            *field = Some(unzigzag(r.varint()?));
        }
    }
    if has(STATS) {
        let mut v = [0u32; 8];
        for slot in &mut v {
            *slot = u32::try_from(r.varint()?).ok()?;
        }
        a.last_analysis_stats = Some(AnalysisStats::from(v));
    }
    let tags = r.varint()?;
    a.tags = (0..tags).map(|_| r.text()).collect::<Option<_>>()?;
    if has(THREAT) {
        let mut t = ThreatClassification {
            suggested_threat_label: if has(THREAT_LABEL) {
                Some(r.text()?)
            } else {
                None
            },
            ..ThreatClassification::default()
        };
        for list in [&mut t.popular_threat_category, &mut t.popular_threat_name] {
            let n = r.varint()?;
            *list = (0..n)
                .map(|_| {
                    Some(CountedValue {
                        count: r.varint()?,
                        value: r.text()?,
                    })
                })
                .collect::<Option<_>>()?;
        }
        a.popular_threat_classification = Some(t);
    }
    r.0.is_empty().then_some(a)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn text(&mut self) -> Option<String> {
        let n = usize::try_from(self.varint()?).ok()?;
        let (s, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        String::from_utf8(s.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn json(a: &SummaryAttributes) -> serde_json::Value {
        serde_json::to_value(a).expect("serialises")
    }

    fn digests() -> (Option<String>, Option<String>, String) {
        (Some("m".repeat(32)), Some("s".repeat(40)), "f".repeat(64))
    }

    fn with_digests(mut a: SummaryAttributes) -> SummaryAttributes {
        let (md5, sha1, sha256) = digests();
        (a.md5, a.sha1, a.sha256) = (md5, sha1, Some(sha256));
        a
    }

    fn round_trip(a: &SummaryAttributes) -> SummaryAttributes {
        let mut packed = Vec::new();
        pack(a, &mut packed);
        assert_ne!(packed[0], b'{');
        let (md5, sha1, sha256) = digests();
        unpack(&packed, md5, sha1, sha256).expect("unpacks")
    }

    #[test]
    fn an_empty_summary_and_a_full_one_come_back_equal() {
        let empty = SummaryAttributes::default();
        assert_eq!(json(&round_trip(&empty)), json(&with_digests(empty)));
        let full = SummaryAttributes {
            size: Some(u64::MAX),
            type_description: Some("Win32 EXE".into()),
            type_tag: Some("peexe".into()),
            meaningful_name: Some("ünïcode name.exe".into()),
            tags: vec!["peexe".into(), String::new()],
            reputation: Some(i64::MIN),
            times_submitted: Some(0),
            first_submission_date: Some(-1),
            last_analysis_date: Some(i64::MAX),
            last_analysis_stats: Some(AnalysisStats {
                malicious: u32::MAX,
                type_unsupported: 7,
                ..AnalysisStats::default()
            }),
            popular_threat_classification: Some(ThreatClassification {
                suggested_threat_label: Some("trojan.emotet/heodo".into()),
                popular_threat_category: vec![CountedValue {
                    count: 12,
                    value: "trojan".into(),
                }],
                popular_threat_name: vec![],
            }),
            ..SummaryAttributes::default()
        };
        assert_eq!(json(&round_trip(&full)), json(&with_digests(full)));
    }

    #[test]
    fn an_older_caches_json_summary_is_still_read() {
        let a = SummaryAttributes {
            md5: Some("a".repeat(32)),
            size: Some(68),
            ..SummaryAttributes::default()
        };
        let stored = serde_json::to_vec(&a).expect("json");
        let (md5, sha1, sha256) = digests();
        let back = unpack(&stored, md5, sha1, sha256).expect("reads");
        assert_eq!(back.md5, a.md5, "the stored digest wins");
        assert_eq!(back.size, Some(68));
        assert_eq!(back.sha256, Some("f".repeat(64)));
    }

    #[test]
    fn damaged_bytes_are_refused_not_misread() {
        let a = SummaryAttributes {
            meaningful_name: Some("x".into()),
            tags: vec!["t".into()],
            ..SummaryAttributes::default()
        };
        let mut packed = Vec::new();
        pack(&a, &mut packed);
        for cut in 0..packed.len() {
            assert!(read(&packed[..cut]).is_none(), "cut at {cut}");
        }
        let mut longer = packed.clone();
        longer.push(0);
        assert!(read(&longer).is_none(), "trailing bytes");
        let mut other = packed;
        other[0] = 2;
        assert!(read(&other).is_none(), "another version");
    }

    proptest! {
        #[test]
        fn any_summary_round_trips(
            size in proptest::option::of(any::<u64>()),
            name in proptest::option::of(".{0,40}"),
            tags in proptest::collection::vec("[a-z0-9-]{0,12}", 0..6),
            reputation in proptest::option::of(any::<i64>()),
            dates in (proptest::option::of(any::<i64>()), proptest::option::of(any::<i64>())),
            stats in proptest::option::of(proptest::array::uniform8(any::<u32>())),
            threat in proptest::option::of((
                proptest::option::of(".{0,20}"),
                proptest::collection::vec((any::<u64>(), ".{0,10}"), 0..3),
            )),
        ) {
            let a = SummaryAttributes {
                size,
                meaningful_name: name,
                tags,
                reputation,
                first_submission_date: dates.0,
                last_analysis_date: dates.1,
                last_analysis_stats: stats.map(AnalysisStats::from),
                popular_threat_classification: threat.map(|(label, names)| ThreatClassification {
                    suggested_threat_label: label,
                    popular_threat_category: vec![],
                    popular_threat_name: names
                        .into_iter()
                        .map(|(count, value)| CountedValue { count, value })
                        .collect(),
                }),
                ..SummaryAttributes::default()
            };
            prop_assert_eq!(json(&round_trip(&a)), json(&with_digests(a)));
        }
    }
}
