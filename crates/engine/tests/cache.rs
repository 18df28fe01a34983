//! The cache in the pipeline, against vt-mock on loopback: what a re-run costs, aliases
//! across runs and within one, freshness under a controlled clock, and what is never stored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vtbulk_engine::{
    CacheSettings, Concurrency, Freshness, Outcome, QuotaSettings, Settings, Summary, WallClock,
};
use vtbulk_ioc::{Hash, HashKind};
use vtbulk_mock::{Fault, Faults, MockConfig, MockServer};

use crate::common::{run_to_text, temp_dir};
use vtbulk_output::Format;
use vtbulk_quota::BackoffPolicy;
use vtbulk_vt::{ApiKey, Client, ClientConfig};

const T0: i64 = 1_790_000_000;
const DAY: i64 = 86_400;

fn temp(tag: &str) -> PathBuf {
    let dir = temp_dir(&format!("cache-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A run of `input` (plain lines) as NDJSON, one lookup in flight, with the cache at `cache`
/// on a clock fixed at `now`.
fn settings(input: &Path, cache: &Path, now: i64) -> Settings {
    Settings {
        concurrency: Concurrency::Fixed(1),
        backoff: BackoffPolicy::doubling(Duration::from_millis(1), Duration::from_millis(2)),
        cache: Some(CacheSettings {
            path: cache.to_owned(),
            freshness: Freshness::default(),
            refresh: false,
            read_only: false,
            clock: WallClock::Fixed(now),
        }),
        // These tests count the mock's file lookups; the key's budget is another test's.
        quota: QuotaSettings {
            offline: true,
            ..QuotaSettings::default()
        },
        ..crate::common::settings(input, Format::Ndjson)
    }
}

struct Run {
    outcome: Outcome,
    summary: Summary,
    /// input -> record (as JSON), and the requests the mock saw in this run.
    rows: HashMap<String, serde_json::Value>,
    requests: u64,
}

async fn enrich(mock: &MockServer, settings: Settings) -> Run {
    mock.reset();
    // As the CLI builds it: answers are kept whole (gzipped as sent) when there is a cache.
    let config = ClientConfig {
        host: mock.url(),
        keep_raw: true,
        keep_body: settings.cache.is_some(),
        ..ClientConfig::default()
    };
    let client = Client::new(ApiKey::new("testkey").expect("key"), &config).expect("client");
    let (outcome, summary, text) = run_to_text(client, settings).await;
    let rows = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            (v["input"].as_str().expect("input").to_owned(), v)
        })
        .collect();
    Run {
        outcome,
        summary,
        rows,
        requests: mock.stats(false).total,
    }
}

fn write_lines(path: &Path, hashes: &[Hash]) {
    let text: String = hashes.iter().map(|h| format!("{h}\n")).collect();
    std::fs::write(path, text).expect("write");
}

/// Every field but `source` (and the origin, which depends on the input file).
fn without_source(v: &serde_json::Value) -> serde_json::Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("source");
    }
    v
}

#[tokio::test]
async fn a_rerun_is_answered_from_the_cache_with_no_request_and_the_same_records() {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let dir = temp("rerun");
    let (input, cache) = (dir.join("in.txt"), dir.join("cache.sqlite3"));
    let u = mock.universe();
    let mut hashes: Vec<Hash> = (0..30).map(|i| u.hashes(i).sha256).collect();
    hashes.extend((0..5).map(|n| u.unknown_hash(HashKind::Md5, n)));
    write_lines(&input, &hashes);

    let first = enrich(&mock, settings(&input, &cache, T0)).await;
    assert_eq!(first.outcome, Outcome::Completed);
    assert_eq!(first.requests, 35);
    assert_eq!(first.summary.cache_writes, 35);
    assert_eq!(first.summary.cache_hits, 0);

    let second = enrich(&mock, settings(&input, &cache, T0 + 60)).await;
    assert_eq!(second.requests, 0, "a re-run spends nothing");
    assert_eq!(second.summary.cache_hits, 35);
    assert_eq!(second.summary.lookups, 0);
    assert_eq!((second.summary.ok, second.summary.not_found), (30, 5));
    for (input, record) in &first.rows {
        let again = &second.rows[input];
        assert_eq!(again["source"], "cache");
        assert_eq!(without_source(again), without_source(record), "{input}");
    }
}

#[tokio::test]
async fn a_raw_rerun_renders_virustotals_whole_object_from_the_stored_answer() {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let dir = temp("raw");
    let (input, cache) = (dir.join("in.txt"), dir.join("cache.sqlite3"));
    let u = mock.universe();
    let hashes: Vec<Hash> = (0..12).map(|i| u.hashes(i).md5).collect();
    write_lines(&input, &hashes);
    let raw = |now| Settings {
        raw: true,
        ..settings(&input, &cache, now)
    };
    let first = enrich(&mock, raw(T0)).await;
    assert_eq!(first.requests, 12);
    let again = enrich(&mock, raw(T0 + 60)).await;
    assert_eq!(again.requests, 0, "answered from the cache");
    assert_eq!(again.summary.cache_hits, 12);
    for (input, record) in &first.rows {
        let stored = &again.rows[input];
        assert_eq!(stored["source"], "cache");
        assert!(record["raw"]["attributes"]["last_analysis_results"].is_object());
        assert_eq!(
            stored["raw"], record["raw"],
            "{input}: the whole object, as fetched"
        );
        assert_eq!(without_source(stored), without_source(record));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_file_first_seen_by_md5_costs_nothing_later_by_sha1_or_sha256() {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let dir = temp("alias-runs");
    let (input, cache) = (dir.join("in.txt"), dir.join("cache.sqlite3"));
    let u = mock.universe();
    write_lines(
        &input,
        &(0..10).map(|i| u.hashes(i).md5).collect::<Vec<_>>(),
    );
    assert_eq!(
        enrich(&mock, settings(&input, &cache, T0)).await.requests,
        10
    );

    let mut others: Vec<Hash> = (0..10).map(|i| u.hashes(i).sha256).collect();
    others.extend((0..10).map(|i| u.hashes(i).sha1));
    write_lines(&input, &others);
    let later = enrich(&mock, settings(&input, &cache, T0 + 60)).await;
    assert_eq!(later.requests, 0);
    assert_eq!(later.summary.ok, 20);
    for i in 0..10 {
        let record = &later.rows[&u.hashes(i).sha1.to_string()];
        assert_eq!(record["sha256"], u.hashes(i).sha256.to_string());
        assert_eq!(record["source"], "cache");
    }
}

#[tokio::test]
async fn within_one_run_a_twin_waiting_in_the_queue_is_answered_from_the_first() {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let dir = temp("alias-run");
    let (input, cache) = (dir.join("in.txt"), dir.join("cache.sqlite3"));
    let u = mock.universe();
    // The md5 of file 0 first, ten others, then file 0 again by sha256 and by sha1.
    let mut hashes = vec![u.hashes(0).md5];
    hashes.extend((1..11).map(|i| u.hashes(i).sha256));
    hashes.extend([u.hashes(0).sha256, u.hashes(0).sha1]);
    write_lines(&input, &hashes);
    let run = enrich(&mock, settings(&input, &cache, T0)).await;
    assert_eq!(run.requests, 11, "the twins cost nothing");
    assert_eq!(run.summary.ok, 13);
    assert_eq!(run.summary.cache_hits, 2);
    let twin = &run.rows[&u.hashes(0).sha256.to_string()];
    assert_eq!(twin["source"], "cache");
    assert_eq!(twin["md5"], u.hashes(0).md5.to_string());
    let stats = mock.stats(false);
    assert_eq!(stats.by_id.get(&u.hashes(0).sha256.to_string()), None);
    assert_eq!(stats.by_id.get(&u.hashes(0).sha1.to_string()), None);
    assert_eq!(stats.by_file.get(&u.hashes(0).sha256.to_string()), Some(&1));
}

#[tokio::test]
async fn not_found_answers_expire_after_a_day_and_found_ones_after_seven() {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let dir = temp("ttl");
    let (input, cache) = (dir.join("in.txt"), dir.join("cache.sqlite3"));
    let u = mock.universe();
    let mut hashes: Vec<Hash> = (0..8).map(|i| u.hashes(i).sha256).collect();
    hashes.extend((0..3).map(|n| u.unknown_hash(HashKind::Sha256, n)));
    write_lines(&input, &hashes);
    assert_eq!(
        enrich(&mock, settings(&input, &cache, T0)).await.requests,
        11
    );
    // A day later to the second: everything still fresh.
    assert_eq!(
        enrich(&mock, settings(&input, &cache, T0 + DAY))
            .await
            .requests,
        0
    );
    // One second more: the three not-found answers are asked again, the rest are not.
    let later = enrich(&mock, settings(&input, &cache, T0 + DAY + 1)).await;
    assert_eq!(later.requests, 3);
    assert_eq!(later.summary.cache_hits, 8);
    // Seven days after the first fetch the found ones are still fresh (to the second); the
    // not-found ones, fetched again a day in, are stale again.
    let week = enrich(&mock, settings(&input, &cache, T0 + 7 * DAY)).await;
    assert_eq!(week.requests, 3);
    // One second more and the found ones expire too.
    let expired = enrich(&mock, settings(&input, &cache, T0 + 7 * DAY + 1)).await;
    assert_eq!(expired.requests, 8);
    // --max-age for one run: nothing older than an hour.
    let mut strict = settings(&input, &cache, T0 + 7 * DAY + 3602);
    if let Some(c) = strict.cache.as_mut() {
        c.freshness.max_age = Some(3600);
    }
    assert_eq!(enrich(&mock, strict).await.requests, 11);
}

#[tokio::test]
async fn refresh_looks_everything_up_again_and_updates_the_cache() {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let dir = temp("refresh");
    let (input, cache) = (dir.join("in.txt"), dir.join("cache.sqlite3"));
    let u = mock.universe();
    write_lines(
        &input,
        &(0..6).map(|i| u.hashes(i).sha1).collect::<Vec<_>>(),
    );
    enrich(&mock, settings(&input, &cache, T0)).await;
    let mut refresh = settings(&input, &cache, T0 + 30 * DAY);
    if let Some(c) = refresh.cache.as_mut() {
        c.refresh = true;
    }
    let again = enrich(&mock, refresh).await;
    assert_eq!((again.requests, again.summary.cache_writes), (6, 6));
    // Fresh again as of the refresh.
    assert_eq!(
        enrich(&mock, settings(&input, &cache, T0 + 31 * DAY))
            .await
            .requests,
        0
    );
}

#[tokio::test]
async fn errors_are_never_cached() {
    let config = MockConfig {
        faults: Faults::always(Fault::Transient),
        ..MockConfig::default()
    };
    let mock = MockServer::start(config).await.expect("mock");
    let dir = temp("errors");
    let (input, cache) = (dir.join("in.txt"), dir.join("cache.sqlite3"));
    let u = mock.universe();
    write_lines(
        &input,
        &(0..4).map(|i| u.hashes(i).sha256).collect::<Vec<_>>(),
    );
    let run = enrich(&mock, settings(&input, &cache, T0)).await;
    assert_eq!(run.outcome, Outcome::CompletedWithErrors);
    assert_eq!((run.summary.errors, run.summary.cache_writes), (4, 0));
    let again = enrich(&mock, settings(&input, &cache, T0 + 1)).await;
    assert_eq!(again.requests, 4, "failed lookups are asked again");
    assert_eq!(again.summary.cache_hits, 0);
}
