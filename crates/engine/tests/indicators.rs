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

use crate::common::*;

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
            read_only: false,
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
    // Every found record comes back the same from the cache, whatever its kind.
    for a in first.rows.iter().filter(|r| r["status"] == "ok") {
        let b = second
            .rows
            .iter()
            .find(|r| r["input"] == a["input"])
            .unwrap_or_else(|| panic!("{} in the second run", a["input"]));
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

/// URLs of which the mock knows `known` and not `unknown`.
fn urls(mock: &MockServer, known: usize, unknown: usize) -> (Vec<String>, Vec<String>) {
    let seed = mock.universe().seed();
    let (mut k, mut u) = (Vec::new(), Vec::new());
    for i in 0.. {
        if k.len() == known && u.len() == unknown {
            break;
        }
        let url = format!("http://drop-{i}.bad-host.ru/p/{i}.bin");
        let exists = render(seed, ObjectKind::Url, &url_id(&url)).is_some();
        match exists {
            true if k.len() < known => k.push(url),
            false if u.len() < unknown => u.push(url),
            _ => {}
        }
    }
    (k, u)
}

fn count(mock: &MockServer, route: Route) -> usize {
    mock.stats(true)
        .log
        .as_ref()
        .expect("log")
        .iter()
        .filter(|e| e.route == route)
        .count()
}

#[tokio::test(start_paused = true)]
async fn unknown_urls_are_submitted_polled_and_recorded_within_the_quota() {
    let mock = MockServer::start(MockConfig {
        keys: vec![KeyConfig::unlimited("k")],
        follow_tokio_clock: true,
        analysis_delay: Duration::from_secs(40),
        ..MockConfig::default()
    })
    .await
    .expect("mock");
    let dir = temp_dir("submit");
    let (known, unknown) = urls(&mock, 2, 3);
    let list = dir.join("urls.txt");
    let text: String = known
        .iter()
        .chain(&unknown)
        .map(|u| format!("{u}\n"))
        .collect();
    std::fs::write(&list, text).expect("list");
    let mut s = settings(&list, Format::Ndjson);
    s.scheduler.rate = Some("4/min".parse().expect("rate"));
    s.concurrency = Concurrency::Auto { max: 8 };
    s.submit_urls = Some(vtbulk_engine::SubmitPolicy::default());
    let run = enrich(&mock, "k", s).await;
    assert_eq!(run.outcome, Outcome::Completed);
    assert_eq!(run.rows.len(), 5);
    assert!(
        run.rows.iter().all(|r| r["status"] == "ok"),
        "the submitted URLs are found once analysed: {:?}",
        run.rows
    );
    // Each unknown URL submitted once, its analysis polled until completed (20-60 s), then
    // read; every one of those requests paced like a lookup.
    assert_eq!(count(&mock, Route::SubmitUrl), 3);
    let polls = count(&mock, Route::Analyses);
    assert!(polls >= 3, "{polls} polls");
    assert_eq!(run.summary.urls_submitted, 3);
    assert_eq!(run.summary.analysis_polls as usize, polls);
    assert_eq!(
        count(&mock, Route::Objects),
        5 + 3,
        "a lookup each, and again after analysis"
    );
    assert_eq!(
        run.summary.requests as usize,
        5 + 3 + 3 + polls,
        "lookups, submissions, polls and lookups after analysis, all counted"
    );
    let stats = mock.stats(true);
    assert_eq!(stats.max_in_window(60_000, |_| true), 4);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn an_analysis_not_done_in_time_is_an_error_and_the_next_run_polls_it_not_resubmits() {
    let mock = MockServer::start(MockConfig {
        keys: vec![KeyConfig::unlimited("k")],
        follow_tokio_clock: true,
        // Long: while a worker waits for the journal thread (real time), the paused clock
        // jumps to the next timer, and a loaded machine can make that minutes.
        analysis_delay: Duration::from_secs(86_400),
        ..MockConfig::default()
    })
    .await
    .expect("mock");
    let dir = temp_dir("submit-wait");
    let (_, unknown) = urls(&mock, 0, 2);
    let list = dir.join("urls.txt");
    std::fs::write(&list, unknown.join("\n")).expect("list");
    let now = 1_790_000_000;
    let with = |wait: u64| {
        let mut s = settings(&list, Format::Ndjson);
        s.submit_urls = Some(vtbulk_engine::SubmitPolicy {
            wait: Duration::from_secs(wait),
            ..vtbulk_engine::SubmitPolicy::default()
        });
        s.cache = Some(CacheSettings {
            path: dir.join("cache.sqlite3"),
            freshness: Freshness::default(),
            refresh: false,
            read_only: false,
            clock: WallClock::Fixed(now),
        });
        s
    };
    // The analyses take half a day or more; 30 s is not enough.
    let first = enrich(&mock, "k", with(30)).await;
    assert_eq!(first.outcome, Outcome::CompletedWithErrors);
    for row in &first.rows {
        assert_eq!(row["status"], "error");
        assert_eq!(row["error_code"], "AnalysisPending");
        assert!(row["error_message"].contains("analysis u-"), "{row:?}");
    }
    assert_eq!(count(&mock, Route::SubmitUrl), 2);
    // The next run, once the analyses are done, submits nothing again. (That it polls an
    // analysis still going on is `resume.rs`'s kill test, with real processes.)
    mock.clock().advance_ms(2 * 86_400_000);
    let second = enrich(&mock, "k", with(600)).await;
    assert!(
        second.rows.iter().all(|r| r["status"] == "ok"),
        "{:?}",
        second.rows
    );
    assert_eq!(count(&mock, Route::SubmitUrl), 2, "submitted once in all");
    assert_eq!(second.summary.urls_submitted, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn polls_back_off_by_half_again_to_a_minute_and_the_worst_case_is_counted() {
    let p = vtbulk_engine::SubmitPolicy::default();
    assert_eq!(p.pause(0), Duration::from_secs(15));
    assert_eq!(p.pause(1), Duration::from_millis(22_500));
    assert_eq!(p.pause(4), Duration::from_secs(60));
    assert_eq!(p.pause(40), Duration::from_secs(60));
    // 15 + 22.5 + 33.75 + 50.6 s, then a minute each until 10 minutes: 12 polls, plus the
    // lookup, the submission and the lookup after the analysis.
    assert_eq!(p.max_requests(), 15);
}
