//! `--schema ecs`: records as Elastic Common Schema threat-enrichment documents (NDJSON), so
//! an Elastic or OpenSearch pipeline indexes them without a mapping of its own.
//!
//! Each record is one document. A file VirusTotal knows is a `threat.enrichments` entry: its
//! `indicator` (type `file`, provider `VirusTotal`, the file's three hashes, size, name, first
//! seen, last analysed, the number of engines flagging it as `scanner_stats`, the suggested
//! threat label as `description`, a confidence from the share of engines, a reference to
//! VirusTotal's page) and what it `matched` (the hash as given, the ECS field of its kind).
//! A file VirusTotal does not know is an indicator with only the hash (`event.outcome:
//! unknown`); invalid, error and skipped records carry no indicator (`event.outcome: failure`)
//! and their reason in `error`. Every document keeps vtbulk's own fields under `vtbulk`.

use std::io::{self, Write};

use serde_json::{Map, Value, json};

use crate::record::{Field, Record, Status, Val, rfc3339};
use crate::sink::Sink;

/// ECS NDJSON.
#[derive(Debug)]
pub struct EcsSink<W: Write> {
    out: W,
}

impl<W: Write> EcsSink<W> {
    /// A sink writing ECS documents to `out`.
    pub fn new(out: W) -> EcsSink<W> {
        EcsSink { out }
    }
}

/// ECS's `threat.indicator.confidence` from the share of engines that flag the file.
fn confidence(malicious: u32, total: u32) -> &'static str {
    match (malicious, total) {
        (0, _) | (_, 0) => "None",
        (m, t) if m * 2 >= t => "High",
        (m, t) if m * 10 >= t => "Medium",
        _ => "Low",
    }
}

/// The document of one record.
pub fn document(record: &Record) -> Value {
    let mut vtbulk = Map::new();
    for field in Field::ALL {
        let value = match field.value(record) {
            Val::Null => continue,
            Val::Str(s) => json!(s),
            Val::Owned(s) => json!(s),
            Val::U64(n) => json!(n),
            Val::I64(n) => json!(n),
            Val::List([]) => continue,
            Val::List(l) => json!(l),
        };
        vtbulk.insert(field.name().to_owned(), value);
    }
    let matched_field = record
        .kind
        .map(|k| format!("file.hash.{}", k.as_str()))
        .unwrap_or_default();
    let mut event = json!({
        "kind": "enrichment",
        "category": ["threat"],
        "type": ["indicator"],
        "dataset": "vtbulk.file",
    });
    let mut doc = json!({ "event": Value::Null, "vtbulk": vtbulk });
    match record.status {
        Some(Status::Ok) => {
            let stats = record.stats.unwrap_or_default();
            let mut hash = Map::new();
            for (name, value) in [
                ("sha256", &record.sha256),
                ("md5", &record.md5),
                ("sha1", &record.sha1),
            ] {
                if let Some(v) = value {
                    hash.insert(name.to_owned(), json!(v));
                }
            }
            let mut indicator = json!({
                "type": "file",
                "provider": "VirusTotal",
                "file": { "hash": hash },
                "scanner_stats": stats.malicious,
                "confidence": confidence(stats.malicious, stats.total()),
            });
            let put = |indicator: &mut Value, key: &str, value: Value| {
                if let Some(map) = indicator.as_object_mut() {
                    map.insert(key.to_owned(), value);
                }
            };
            if let Some(size) = record.size {
                indicator["file"]["size"] = json!(size);
            }
            if let Some(name) = &record.meaningful_name {
                indicator["file"]["name"] = json!(name);
            }
            if let Some(t) = record.first_submission_date {
                put(&mut indicator, "first_seen", json!(rfc3339(t)));
            }
            if let Some(t) = record.last_analysis_date {
                put(&mut indicator, "modified_at", json!(rfc3339(t)));
            }
            if let Some(label) = &record.threat_label {
                put(&mut indicator, "description", json!(label));
            }
            if let Some(sha256) = &record.sha256 {
                put(
                    &mut indicator,
                    "reference",
                    json!(format!("https://www.virustotal.com/gui/file/{sha256}")),
                );
            }
            event["outcome"] = json!("success");
            doc["threat"] = json!({ "enrichments": [{
                "indicator": indicator,
                "matched": {
                    "atomic": record.input,
                    "field": matched_field,
                    "type": "indicator_match_rule",
                },
            }]});
        }
        Some(Status::NotFound) => {
            event["outcome"] = json!("unknown");
            let kind = record.kind.map_or("sha256", |k| k.as_str());
            doc["threat"] = json!({ "enrichments": [{
                "indicator": {
                    "type": "file",
                    "provider": "VirusTotal",
                    "file": { "hash": { kind: record.input } },
                },
                "matched": {
                    "atomic": record.input,
                    "field": matched_field,
                    "type": "indicator_match_rule",
                },
            }]});
        }
        _ => {
            event["outcome"] = json!("failure");
            let code = record.error_code.clone().unwrap_or_default();
            let message = record.error_message.clone().unwrap_or_default();
            doc["error"] = json!({ "code": code, "message": message });
        }
    }
    doc["event"] = event;
    doc
}

impl<W: Write> Sink for EcsSink<W> {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        let mut line = serde_json::to_vec(&document(record)).map_err(io::Error::other)?;
        line.push(b'\n');
        self.out.write_all(&line)
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Stats;
    use vtbulk_ioc::HashKind;

    #[test]
    fn a_known_file_is_an_enrichment_with_its_indicator_and_match() {
        let record = Record {
            input: "44d88612fea8a8f36de82e1278abb02f".into(),
            kind: Some(HashKind::Md5),
            status: Some(Status::Ok),
            sha256: Some("275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f".into()),
            md5: Some("44d88612fea8a8f36de82e1278abb02f".into()),
            stats: Some(Stats {
                malicious: 60,
                undetected: 10,
                ..Stats::default()
            }),
            threat_label: Some("virus.eicar/test".into()),
            size: Some(68),
            first_submission_date: Some(1_148_301_722),
            ..Record::default()
        };
        let doc = document(&record);
        let e = &doc["threat"]["enrichments"][0];
        assert_eq!(e["indicator"]["type"], "file");
        assert_eq!(
            e["indicator"]["file"]["hash"]["sha256"],
            "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"
        );
        assert_eq!(e["indicator"]["file"]["size"], 68);
        assert_eq!(e["indicator"]["scanner_stats"], 60);
        assert_eq!(e["indicator"]["confidence"], "High");
        assert_eq!(e["indicator"]["first_seen"], "2006-05-22T12:42:02Z");
        assert_eq!(e["matched"]["field"], "file.hash.md5");
        assert_eq!(e["matched"]["atomic"], "44d88612fea8a8f36de82e1278abb02f");
        assert_eq!(doc["event"]["kind"], "enrichment");
        assert_eq!(doc["event"]["outcome"], "success");
        assert_eq!(doc["vtbulk"]["malicious"], 60);
    }

    #[test]
    fn unknown_and_failed_records_say_so() {
        let not_found = Record {
            input: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
            kind: Some(HashKind::Sha256),
            status: Some(Status::NotFound),
            ..Record::default()
        };
        let doc = document(&not_found);
        assert_eq!(doc["event"]["outcome"], "unknown");
        assert_eq!(
            doc["threat"]["enrichments"][0]["indicator"]["file"]["hash"]["sha256"],
            not_found.input
        );
        let invalid = Record {
            input: "oops".into(),
            status: Some(Status::Invalid),
            error_code: Some("invalid".into()),
            error_message: Some("not hex".into()),
            ..Record::default()
        };
        let doc = document(&invalid);
        assert_eq!(doc["event"]["outcome"], "failure");
        assert!(doc.get("threat").is_none());
        assert_eq!(doc["error"]["message"], "not hex");
        assert_eq!(confidence(3, 70), "Low");
        assert_eq!(confidence(10, 70), "Medium");
    }
}
