//! From VirusTotal's objects (a file; a URL, domain or IP address) to an output record.

use vtbulk_output::{Record, Source, Stats, Status};
use vtbulk_vt::models::{AnalysisStats, FileSummary, ObjectSummary, ThreatClassification};

/// What every kind's record takes alike from its object: the verdict counts and the
/// crowd-sourced threat classification.
fn verdict(record: &mut Record, stats: Option<AnalysisStats>, ptc: Option<&ThreatClassification>) {
    record.stats = stats.map(|s| Stats {
        malicious: s.malicious,
        suspicious: s.suspicious,
        undetected: s.undetected,
        harmless: s.harmless,
        timeout: s.timeout,
        confirmed_timeout: s.confirmed_timeout,
        failure: s.failure,
        type_unsupported: s.type_unsupported,
    });
    if let Some(ptc) = ptc {
        record.threat_label = ptc.suggested_threat_label.clone();
        record.threat_category = ptc.top_category().map(str::to_owned);
        record.threat_name = ptc.top_name().map(str::to_owned);
    }
}

/// The record for a found file.
pub(crate) fn found(mut record: Record, file: Box<FileSummary>) -> Record {
    let FileSummary {
        id,
        attributes: a,
        raw,
        ..
    } = *file;
    record.status = Some(Status::Ok);
    record.source = Some(Source::Api);
    record.sha256 = a.sha256.or(Some(id));
    record.md5 = a.md5;
    record.sha1 = a.sha1;
    verdict(
        &mut record,
        a.last_analysis_stats,
        a.popular_threat_classification.as_ref(),
    );
    record.type_description = a.type_description;
    record.type_tag = a.type_tag;
    record.size = a.size;
    record.meaningful_name = a.meaningful_name;
    record.tags = a.tags;
    record.reputation = a.reputation;
    record.first_submission_date = a.first_submission_date;
    record.last_analysis_date = a.last_analysis_date;
    record.times_submitted = a.times_submitted;
    record.raw = raw;
    record.cap_fields();
    record
}

/// The record of a found file from stored attributes (the cache's, the fleet's): no body.
pub(crate) fn stored_file(
    base: Record,
    id: String,
    attributes: vtbulk_vt::models::SummaryAttributes,
    raw: Option<Box<serde_json::value::RawValue>>,
) -> Record {
    let file = FileSummary {
        id,
        attributes,
        raw,
        body: None,
    };
    found(base, Box::new(file))
}

/// The record of a found URL, domain or IP address from stored attributes (the cache's, the
/// fleet's): named by its input, no body.
pub(crate) fn stored_object(
    base: Record,
    attributes: vtbulk_vt::models::ObjectAttributes,
    raw: Option<Box<serde_json::value::RawValue>>,
) -> Record {
    let object = ObjectSummary {
        id: base.input.clone(),
        kind: String::new(),
        attributes,
        raw,
        body: None,
    };
    self::object(base, Box::new(object))
}

/// The record of a found URL, domain or IP address, built on `base` (input, kind, count,
/// origin): the fields every kind shares, then the object's own.
pub(crate) fn object(mut record: Record, object: Box<ObjectSummary>) -> Record {
    let ObjectSummary {
        attributes: a, raw, ..
    } = *object;
    record.status = Some(Status::Ok);
    record.source = Some(Source::Api);
    verdict(
        &mut record,
        a.last_analysis_stats,
        a.popular_threat_classification.as_ref(),
    );
    if record.threat_name.is_none() {
        record.threat_name = a.threat_names.into_iter().next();
    }
    let mut categories: Vec<String> = a.categories.into_values().collect();
    categories.sort_unstable();
    categories.dedup();
    record.categories = categories;
    record.tags = a.tags;
    record.reputation = a.reputation;
    record.first_submission_date = a.first_submission_date;
    record.last_analysis_date = a.last_analysis_date;
    record.times_submitted = a.times_submitted;
    record.final_url = a.last_final_url;
    record.title = a.title;
    record.http_code = a.last_http_response_code;
    record.registrar = a.registrar;
    record.creation_date = a.creation_date;
    record.popularity_rank = a.popularity_ranks.values().map(|r| r.rank).min();
    record.asn = a.asn;
    record.as_owner = a.as_owner;
    record.country = a.country;
    record.network = a.network;
    record.raw = raw;
    record.cap_fields();
    record
}
