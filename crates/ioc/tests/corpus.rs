//! The IOC file corpus (`fixtures/corpus/`, written by its `make.py`): files shaped like the
//! real published ones (vendor CSV feeds, a LOKI list, EDR exports, MISP, STIX, Sysmon,
//! OpenIOC, Markdown and AsciiDoc reports, UTF-16, compressed and damaged files), each with
//! the exact set of file hashes a reader must find in `auto` mode. A hash found that is not in
//! the set is as much a failure as one missed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use vtbulk_ioc::reader::{self, ReadOptions};
use vtbulk_ioc::{InputReport, Item};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/corpus")
}

/// Every fixture of the corpus (not the expectations or the generator).
fn fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus())
        .expect("corpus")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            ![".expected", ".indicators", ".indicators-all", ".py"]
                .iter()
                .any(|suffix| name.ends_with(suffix))
        })
        .collect();
    files.sort();
    files
}

/// Reads one file as `vtbulk` does: every part (archive members too), `auto`.
fn read(path: &Path) -> (BTreeSet<String>, Vec<InputReport>) {
    let (hashes, _, reports) = read_with(path, &ReadOptions::default());
    (hashes, reports)
}

/// Reads one file with `options`: its hashes, its URLs, domains and IPs (`kind:canonical`)
/// and the reports.
fn read_with(
    path: &Path,
    options: &ReadOptions,
) -> (BTreeSet<String>, BTreeSet<String>, Vec<InputReport>) {
    let opened = reader::open(path.to_str().expect("utf-8 path")).expect("opens");
    let mut found = BTreeSet::new();
    let mut others = BTreeSet::new();
    let mut reports = Vec::new();
    opened
        .for_each_part(&mut |part| {
            let report = reader::read_input(part, 0, options, &mut |item| match item {
                Item::Hash(h, _) => {
                    found.insert(h.to_string());
                }
                Item::Indicator(i, _) => {
                    others.insert(format!("{}:{}", i.kind(), i.canonical()));
                }
                Item::Invalid { .. } => {}
            })?;
            reports.push(report);
            Ok(())
        })
        .expect("reads");
    (found, others, reports)
}

/// The lines of `path` + `suffix`, or none when there is no such file.
fn lines_of(path: &Path, suffix: &str) -> Option<BTreeSet<String>> {
    let text = std::fs::read_to_string(format!("{}{suffix}", path.display())).ok()?;
    Some(
        text.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

#[test]
fn every_fixture_gives_exactly_its_expected_urls_domains_and_ips() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for path in fixtures() {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        let (_, found, _) = read_with(&path, &ReadOptions::default());
        let want = lines_of(&path, ".indicators").unwrap_or_default();
        if found != want {
            failures.push(format!(
                "{name} (default kinds): missed {:?}, extra {:?}",
                want.difference(&found).collect::<Vec<_>>(),
                found.difference(&want).collect::<Vec<_>>()
            ));
        }
        checked += usize::from(!want.is_empty());
        if let Some(want) = lines_of(&path, ".indicators-all") {
            let all = ReadOptions {
                kinds: Some(vtbulk_ioc::Kinds::ALL),
                ..ReadOptions::default()
            };
            let (_, found, _) = read_with(&path, &all);
            if found != want {
                failures.push(format!(
                    "{name} (--kinds all): missed {:?}, extra {:?}",
                    want.difference(&found).collect::<Vec<_>>(),
                    found.difference(&want).collect::<Vec<_>>()
                ));
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 6,
        "only {checked} fixtures hold network indicators"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The expected set, and the mode line when not exact: `# subset of, at least N, damaged`
/// (a file cut short: some of the set, and the damage reported), `# damaged` (the exact set,
/// and the damage reported).
fn expected(path: &Path) -> (BTreeSet<String>, Option<String>) {
    let text = std::fs::read_to_string(format!("{}.expected", path.display())).expect("expected");
    let mode = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# "))
        .map(str::to_owned);
    let set = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(str::to_owned)
        .collect();
    (set, mode)
}

#[test]
fn the_corpus_has_every_shape_the_issue_names() {
    let names: Vec<String> = fixtures()
        .iter()
        .map(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert!(names.len() >= 14, "{names:?}");
    for needle in [
        "sophos",
        "loki",
        "defender",
        "misp",
        "stix",
        "sysmon",
        "openioc",
        ".md",
        ".adoc",
        "utf16",
        "truncated",
        ".zst",
        ".zip",
        ".xz",
        ".bz2",
        "network_iocs",
        "urlhaus",
        "report_appendix",
        "otx_pulse",
        "threatfox",
        "openioc_network",
        "loki_c2",
        "cmdline",
        "elastic_network",
        "sysmon_network",
        ".elf",
        "truncated_array",
    ] {
        assert!(
            names.iter().any(|n| n.contains(needle)),
            "no {needle} fixture"
        );
    }
}

#[test]
fn every_fixture_gives_exactly_its_expected_hashes() {
    let mut failures = Vec::new();
    for path in fixtures() {
        let (found, reports) = read(&path);
        let (want, mode) = expected(&path);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        let mode = mode.unwrap_or_default();
        let damaged = mode.contains("damaged");
        let at_least: Option<usize> = mode
            .split(", ")
            .find_map(|p| p.strip_prefix("at least "))
            .and_then(|n| n.parse().ok());
        match at_least {
            None => {
                let missed: Vec<_> = want.difference(&found).collect();
                let extra: Vec<_> = found.difference(&want).collect();
                if !missed.is_empty() || !extra.is_empty() {
                    failures.push(format!(
                        "{name}: missed {missed:?}, extra {extra:?} ({reports:?})"
                    ));
                }
            }
            Some(at_least) => {
                let extra: Vec<_> = found.difference(&want).collect();
                if !extra.is_empty() || found.len() < at_least {
                    failures.push(format!(
                        "{name}: {} found (at least {at_least}), extra {extra:?}",
                        found.len()
                    ));
                }
            }
        }
        let reported = reports.iter().any(|r| r.damage.is_some());
        if damaged && !reported {
            failures.push(format!("{name}: the damage is not reported"));
        }
        if !damaged && reported {
            failures.push(format!("{name}: damage reported on a sound file"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn structured_files_are_read_by_their_structure_and_reports_as_text() {
    let format_of = |name: &str| {
        let (_, reports) = read(&corpus().join(name));
        reports[0].format
    };
    assert_eq!(format_of("misp_event.json"), "json");
    assert_eq!(format_of("stix_bundle.json"), "json");
    assert_eq!(format_of("sysmon_events.ndjson"), "json");
    assert_eq!(format_of("openioc.ioc"), "xml");
    assert_eq!(format_of("report.md"), "text");
    assert_eq!(format_of("report.adoc"), "text");
    assert_eq!(format_of("loki_hash_iocs.txt"), "lines");
    assert_eq!(format_of("sophos_feed.csv"), "csv");
    assert_eq!(format_of("defender_export.csv"), "csv");
    let (_, reports) = read(&corpus().join("defender_export.csv"));
    assert_eq!(reports[0].columns.len(), 6, "{:?}", reports[0].columns);
    assert_eq!(reports[0].excluded_by_reason.get("id"), Some(&6));
    let (_, reports) = read(&corpus().join("misp_event.json"));
    let reasons = &reports[0].excluded_by_reason;
    for reason in [
        "import_hash",
        "authentihash",
        "other_digest",
        "tls_fingerprint",
    ] {
        assert_eq!(reasons.get(reason), Some(&1), "{reason}: {reasons:?}");
    }
    assert_eq!(reasons.get("certificate"), Some(&1), "{reasons:?}");
    let (_, reports) = read(&corpus().join("ticket_attachments.zip"));
    let names: Vec<&str> = reports.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names.len(),
        2,
        "two file members, the directory skipped: {names:?}"
    );
}
