//! URLs, domains and IP addresses through the whole pipeline against vt-mock: a mixed,
//! defanged list gives one record per unique IOC of every kind with the mock's answer, under
//! faults too; the cache answers a re-run; a 4-a-minute key paces them like files.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use vtbulk_engine::{CacheSettings, Concurrency, Freshness, Outcome};
use vtbulk_ioc::indicator::url_id;
use vtbulk_ioc::{Hash, HashKind, Kind};
use vtbulk_mock::objects::{ObjectKind, render};
use vtbulk_mock::stats::Route;
use vtbulk_mock::{Faults, KeyConfig, MockConfig, MockServer};
use vtbulk_output::Format;
use vtbulk_quota::WallClock;

mod common;
use common::*;

/// A report's IOC list: hashes, then URLs, domains and addresses as analysts write them
/// (defanged, upper case, repeated), and what the run must leave out or call invalid.
fn mixed_list(mock: &MockServer, urls: usize) -> (String, BTreeMap<String, (Kind, &'static str)>) {
    let mut text = String::from("# IOCs, INC-4711\n");
    let mut expected = BTreeMap::new();
    let seed = mock.universe().seed();
    let status = |found: bool| if found { "ok" } else { "not_found" };
    for i in 0..20u64 {
        let hash = if i % 4 == 3 {
            mock.universe().unknown_hash(HashKind::Sha256, i)
        } else {
            mock.universe()
                .hashes(i)
                .of_kind(HashKind::ALL[(i % 3) as usize])
        };
        let found = mock.universe().lookup(&hash).is_some();
        text.push_str(&format!("{hash}\n"));
        expected.insert(hash.to_string(), (Kind::File, status(found)));
    }
    for i in 0..urls {
        let url = format!("https://login-{i}.evil-{}.com/path/{i}?id={i}&x=Y", i % 7);
        let defanged = url.replace("https", "hxxps").replace(".com", "[.]com");
        text.push_str(&format!("{defanged}\n"));
        if i % 3 == 0 {
            // The same URL again, fanged, with the host in upper case.
            let upper = url.replace("login-", "LOGIN-");
            text.push_str(&format!("{upper}\n"));
        }
        let found = render(seed, ObjectKind::Url, &url_id(&url)).is_some();
        expected.insert(url, (Kind::Url, status(found)));
    }
    for i in 0..15 {
        let domain = format!("cdn{i}.bad-updates.net");
        text.push_str(&format!("{}\n", domain.replace(".net", "[.]NET")));
        let found = render(seed, ObjectKind::Domain, &domain).is_some();
        expected.insert(domain, (Kind::Domain, status(found)));
    }
    for i in 0..10 {
        let ip = format!("45.77.{i}.9");
        text.push_str(&format!("{}\n", ip.replace(".9", "[.]9")));
        expected.insert(ip, (Kind::Ip, "ok"));
    }
    text.push_str("2606:4700:4700:0000:0000:0000:0000:1111\n");
    expected.insert("2606:4700:4700::1111".into(), (Kind::Ip, "ok"));
    // Left out (counted), and one invalid line.
    text.push_str("10.0.0.5\n192.168.1.20\nwww.example.com\nsetup.exe\n");
    (text, expected)
}

/// One record per unique IOC, each with the kind and status the mock implies.
fn check(run: &Run, expected: &BTreeMap<String, (Kind, &'static str)>) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for row in &run.rows {
        if row["status"] == "invalid" {
            assert_eq!(row["input"], "setup.exe");
            continue;
        }
        let input = row["input"].as_str();
        *seen.entry(input).or_default() += 1;
        let (kind, status) = expected
            .get(input)
            .unwrap_or_else(|| panic!("unexpected record {input}"));
        assert_eq!(row["status"], *status, "status of {input}");
        match kind {
            Kind::File => assert!(Hash::parse(input).is_ok()),
            other => assert_eq!(row["kind"], other.as_str(), "kind of {input}"),
        }
    }
    assert_eq!(seen.len(), expected.len(), "every unique IOC has a record");
    assert!(seen.values().all(|&n| n == 1), "and only one");
}

#[tokio::test]
async fn a_mixed_defanged_list_gives_one_record_per_unique_ioc_of_every_kind() {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let dir = temp_dir("mixed");
    let (text, expected) = mixed_list(&mock, 30);
    let list = dir.join("iocs.txt");
    std::fs::write(&list, text).expect("list");
    let mut s = settings(&list, Format::Ndjson);
    s.input_format = vtbulk_ioc::InputFormat::Auto;
    let run = enrich(&mock, "testkey", s).await;
    check(&run, &expected);
    assert_eq!(run.outcome, Outcome::Completed);
    let summary = &run.summary;
    assert_eq!(summary.unique, expected.len() as u64);
    assert_eq!(summary.unique_indicators, expected.len() as u64 - 20);
    assert_eq!(summary.duplicates, 10, "the URLs given twice");
    assert_eq!(summary.requests, expected.len() as u64, "one request each");
    assert_eq!(summary.invalid, 1);
    assert_eq!(summary.excluded_by_reason.get("private_address"), Some(&2));
    assert_eq!(
        summary.excluded_by_reason.get("documentation_domain"),
        Some(&1)
    );
    assert!(summary.indicator_dedup_bytes > 0);
    // The mock saw one object request per unique URL, domain and address.
    let stats = mock.stats(true);
    let objects = stats
        .log
        .as_ref()
        .expect("log")
        .iter()
        .filter(|e| e.route == Route::Objects)
        .count();
    assert_eq!(objects, expected.len() - 20);
    // Each kind's own fields are there.
    let ip = run
        .rows
        .iter()
        .find(|r| r["input"] == "45.77.3.9")
        .expect("ip record");
    assert_eq!(ip["network"], "45.77.3.0/24");
    assert!(!ip["as_owner"].is_empty() && !ip["asn"].is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn under_injected_faults_urls_domains_and_ips_are_all_accounted_for() {
    let faults: Faults = "503=0.08,reset=0.04,truncate=0.02".parse().expect("faults");
    let mock = MockServer::start(MockConfig {
        faults,
        seed: 11,
        ..MockConfig::default()
    })
    .await
    .expect("mock");
    let dir = temp_dir("mixed-faults");
    let (text, expected) = mixed_list(&mock, 60);
    let list = dir.join("iocs.txt");
    std::fs::write(&list, text).expect("list");
    let run = enrich(&mock, "testkey", settings(&list, Format::Csv)).await;
    check(&run, &expected);
    assert!(run.summary.retries > 0, "the faults were met");
    assert_eq!(run.outcome, Outcome::Completed);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_second_run_takes_urls_domains_and_ips_from_the_cache() {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let dir = temp_dir("mixed-cache");
    let (text, expected) = mixed_list(&mock, 12);
    let list = dir.join("iocs.txt");
    std::fs::write(&list, text).expect("list");
    let with_cache = |now: i64| {
        let mut s = settings(&list, Format::Ndjson);
        s.cache = Some(CacheSettings {
            path: dir.join("cache.sqlite3"),
            freshness: Freshness::default(),
            refresh: false,
            clock: WallClock::Fixed(now),
        });
        s
    };
    let now = 1_790_000_000;
    let first = enrich(&mock, "testkey", with_cache(now)).await;
    check(&first, &expected);
    let second = enrich(&mock, "testkey", with_cache(now + 3600)).await;
    check(&second, &expected);
    assert_eq!(second.summary.requests, 0, "nothing looked up again");
    assert_eq!(second.summary.cache_hits, expected.len() as u64);
    for (a, b) in first.rows.iter().zip(&second.rows) {
        if a["status"] == "ok" && a["kind"] != "md5" && a["kind"] != "sha1" {
            let b = second
                .rows
                .iter()
                .find(|r| r["input"] == a["input"])
                .unwrap_or(b);
            for field in [
                "malicious",
                "reputation",
                "categories",
                "registrar",
                "asn",
                "title",
            ] {
                assert_eq!(a[field], b[field], "{field} of {}", a["input"]);
            }
            assert_eq!(b["source"], "cache");
        }
    }
    // Not-found answers are fresh for a day: two days on, they are asked again.
    let later = enrich(&mock, "testkey", with_cache(now + 2 * 86_400)).await;
    let not_found = expected.values().filter(|(_, s)| *s == "not_found").count() as u64;
    assert_eq!(later.summary.requests, not_found);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn at_4_a_minute_urls_domains_and_ips_keep_every_60_second_window_to_4() {
    let mock = MockServer::start(MockConfig {
        keys: vec![KeyConfig::unlimited("k")],
        follow_tokio_clock: true,
        ..MockConfig::default()
    })
    .await
    .expect("mock");
    let dir = temp_dir("mixed-window");
    let list = dir.join("iocs.txt");
    let mut text = String::new();
    for i in 0..4 {
        text.push_str(&format!(
            "hxxp://a{i}.evil[.]com/x\nb{i}.evil[.]org\n45.77.1{i}[.]1\n"
        ));
    }
    std::fs::write(&list, text).expect("list");
    let mut s = settings(&list, Format::Csv);
    s.scheduler.rate = Some("4/min".parse().expect("rate"));
    s.concurrency = Concurrency::Auto { max: 16 };
    let started = tokio::time::Instant::now();
    let run = enrich(&mock, "k", s).await;
    assert_eq!(run.rows.len(), 12);
    let stats = mock.stats(true);
    assert_eq!(stats.total, 13, "12 lookups and the GET /users");
    assert_eq!(stats.max_in_window(60_000, |_| true), 4);
    assert!(started.elapsed() >= Duration::from_millis(12 * 15_030));
    let _ = std::fs::remove_dir_all(&dir);
}
