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
//! and their reason in `error`. A URL, domain or IP address is an indicator of type `url`
//! (`url.full`), `domain-name` (`url.domain`) or `ipv4-addr`/`ipv6-addr` (`ip`, with `as` and
//! `geo`). Every document keeps vtbulk's own fields under `vtbulk`.

use std::io::{self, Write};

use serde_json::{Map, Value, json};

use crate::record::{Field, Record, Status, Val, rfc3339};
use crate::sink::Sink;
use vtbulk_ioc::Kind;

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
    let matched_field = match (record.kind, record.ioc_kind) {
        (Some(k), _) => format!("file.hash.{}", k.as_str()),
        (None, Some(Kind::Url)) => "url.full".to_owned(),
        (None, Some(Kind::Domain)) => "url.domain".to_owned(),
        (None, Some(Kind::Ip)) => "destination.ip".to_owned(),
        _ => String::new(),
    };
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
            let mut indicator = match record.ioc_kind {
                Some(kind) => network_indicator(record, kind),
                None => json!({ "type": "file", "file": { "hash": hash } }),
            };
            if let Some(map) = indicator.as_object_mut() {
                map.insert("provider".into(), json!("VirusTotal"));
                map.insert("scanner_stats".into(), json!(stats.malicious));
                map.insert(
                    "confidence".into(),
                    json!(confidence(stats.malicious, stats.total())),
                );
            }
            let put = |indicator: &mut Value, key: &str, value: Value| {
                if let Some(map) = indicator.as_object_mut() {
                    map.insert(key.to_owned(), value);
                }
            };
            if let Some(size) = record.size.filter(|_| record.ioc_kind.is_none()) {
                indicator["file"]["size"] = json!(size);
            }
            if let Some(name) = record
                .meaningful_name
                .as_ref()
                .filter(|_| record.ioc_kind.is_none())
            {
                indicator["file"]["name"] = json!(name);
            }
            if let Some(t) = record.first_submission_date {
                put(&mut indicator, "first_seen", json!(rfc3339(t)));
            }
            if let Some(t) = record.last_analysis_date {
                put(&mut indicator, "modified_at", json!(rfc3339(t)));
            }
            if let Some(label) = record.threat_label.as_ref().or(record.threat_name.as_ref()) {
                put(&mut indicator, "description", json!(label));
            }
            let page = match record.ioc_kind {
                Some(Kind::Domain) => Some(format!("domain/{}", record.input)),
                Some(Kind::Ip) => Some(format!("ip-address/{}", record.input)),
                _ => None,
            };
            if let Some(page) = page {
                put(
                    &mut indicator,
                    "reference",
                    json!(format!("https://www.virustotal.com/gui/{page}")),
                );
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
            let mut indicator = match record.ioc_kind {
                Some(other) => network_indicator(record, other),
                None => json!({ "type": "file", "file": { "hash": { kind: record.input } } }),
            };
            indicator["provider"] = json!("VirusTotal");
            doc["threat"] = json!({ "enrichments": [{
                "indicator": indicator,
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

/// The indicator of a URL, domain or IP address record: its ECS type and where its value
/// goes (`url.full`, `url.domain`, `ip`), with an address's `as` and `geo`.
fn network_indicator(record: &Record, kind: Kind) -> Value {
    match kind {
        Kind::Url => json!({ "type": "url", "url": { "full": record.input } }),
        Kind::Domain => json!({ "type": "domain-name", "url": { "domain": record.input } }),
        _ => {
            let v6 = record.input.contains(':');
            let mut indicator = json!({
                "type": if v6 { "ipv6-addr" } else { "ipv4-addr" },
                "ip": record.input,
            });
            if let Some(asn) = record.asn {
                indicator["as"] = json!({ "number": asn });
                if let Some(owner) = &record.as_owner {
                    indicator["as"]["organization"] = json!({ "name": owner });
                }
            }
            if let Some(country) = &record.country {
                indicator["geo"] = json!({ "country_iso_code": country });
            }
            indicator
        }
    }
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
    fn urls_domains_and_addresses_are_indicators_of_their_own_type() {
        let ip = Record {
            input: "185.220.101.47".into(),
            ioc_kind: Some(vtbulk_ioc::Kind::Ip),
            status: Some(Status::Ok),
            stats: Some(Stats {
                malicious: 9,
                harmless: 60,
                ..Stats::default()
            }),
            asn: Some(20473),
            as_owner: Some("AS-CHOOPA".into()),
            country: Some("US".into()),
            ..Record::default()
        };
        let doc = document(&ip);
        let i = &doc["threat"]["enrichments"][0]["indicator"];
        assert_eq!(i["type"], "ipv4-addr");
        assert_eq!(i["ip"], "185.220.101.47");
        assert_eq!(i["as"]["number"], 20473);
        assert_eq!(i["as"]["organization"]["name"], "AS-CHOOPA");
        assert_eq!(i["geo"]["country_iso_code"], "US");
        assert_eq!(i["provider"], "VirusTotal");
        assert!(i.get("file").is_none());
        assert_eq!(
            doc["threat"]["enrichments"][0]["matched"]["field"],
            "destination.ip"
        );
        let url = Record {
            input: "http://evil.com/a".into(),
            ioc_kind: Some(vtbulk_ioc::Kind::Url),
            status: Some(Status::NotFound),
            ..Record::default()
        };
        let doc = document(&url);
        let e = &doc["threat"]["enrichments"][0];
        assert_eq!(e["indicator"]["type"], "url");
        assert_eq!(e["indicator"]["url"]["full"], "http://evil.com/a");
        assert_eq!(e["matched"]["field"], "url.full");
        assert_eq!(doc["event"]["outcome"], "unknown");
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
