//! The pipeline end to end against vt-mock on loopback, in process: every input accounted
//! for, faults survived, quotas kept, all without sleeping (tokio's paused clock drives the
//! scheduler, the mock's clock follows it).

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use vtbulk_engine::{Concurrency, Outcome};
use vtbulk_ioc::{Hash, HashKind};
use vtbulk_mock::generate::GenSpec;
use vtbulk_mock::stats::Route;
use vtbulk_mock::{Faults, KeyConfig, Limits, MockConfig, MockServer};
use vtbulk_output::Format;

use crate::common::*;

/// Checks that every unique valid hash of the list has exactly one record with the status the
/// mock's universe implies, and every invalid line one `invalid` record.
fn check_accounting(mock: &MockServer, list: &std::path::Path, run: &Run) {
    let text = std::fs::read_to_string(list).expect("list");
    let mut expected: HashMap<Hash, &str> = HashMap::new();
    let mut invalid = 0;
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        match Hash::parse(line) {
            Ok(h) => {
                expected.insert(
                    h,
                    if mock.universe().lookup(&h).is_some() {
                        "ok"
                    } else {
                        "not_found"
                    },
                );
            }
            Err(_) => invalid += 1,
        }
    }
    let mut seen: HashMap<Hash, usize> = HashMap::new();
    let mut invalid_rows = 0;
    for row in &run.rows {
        if row["status"] == "invalid" {
            invalid_rows += 1;
            continue;
        }
        let h = Hash::parse(&row["input"]).expect("record input is a hash");
        *seen.entry(h).or_default() += 1;
        assert_eq!(row["status"], expected[&h], "status of {h}");
    }
    assert_eq!(invalid_rows, invalid);
    assert_eq!(seen.len(), expected.len(), "every unique hash has a record");
    assert!(seen.values().all(|&n| n == 1), "and only one");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]
    #[test]
    fn every_unique_input_appears_exactly_once_with_its_status(
        count in 1u64..300, dup in 0.0f64..0.5, unknown in 0.0f64..0.5, junk in 0.0f64..0.2,
        seed in 0u64..1000, ndjson in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let mock = MockServer::start(MockConfig::default()).await.expect("mock");
            let dir = temp_dir(&format!("prop{seed}"));
            let spec = GenSpec { count, dup, unknown, junk, upper: 0.3, mix: HashKind::ALL.to_vec(), seed };
            let (list, meta) = write_list(&dir, "list.txt", &mock, &spec);
            let format = if ndjson { Format::Ndjson } else { Format::Csv };
            let run = enrich(&mock, "testkey", settings(&list, format)).await;
            check_accounting(&mock, &list, &run);
            assert_eq!(run.outcome, Outcome::Completed);
            assert_eq!(run.summary.unique, meta.unique);
            assert_eq!(run.summary.duplicates, meta.duplicates);
            assert_eq!(run.summary.invalid, meta.junk);
            assert_eq!(run.summary.ok, meta.known);
            assert_eq!(run.summary.not_found, meta.unknown);
            assert_eq!(run.summary.requests, meta.unique, "one request per unique hash");
            let _ = std::fs::remove_dir_all(&dir);
        });
    }
}

#[tokio::test]
async fn under_injected_faults_every_input_is_accounted_for_and_retries_add_up() {
    let faults: Faults = "503=0.05,reset=0.02,truncate=0.01,504=0.01"
        .parse()
        .expect("faults");
    let mock = MockServer::start(MockConfig {
        faults,
        seed: 3,
        ..MockConfig::default()
    })
    .await
    .expect("mock");
    let dir = temp_dir("faults");
    let spec = GenSpec {
        count: 600,
        unknown: 0.1,
        dup: 0.1,
        mix: HashKind::ALL.to_vec(),
        ..GenSpec::default()
    };
    let (list, _) = write_list(&dir, "list.txt", &mock, &spec);
    let run = enrich(&mock, "testkey", settings(&list, Format::Csv)).await;
    check_accounting(&mock, &list, &run);
    let stats = mock.stats(true);
    let s = &run.summary;
    let files = stats
        .log
        .as_ref()
        .expect("log")
        .iter()
        .filter(|e| e.route == Route::Files)
        .count() as u64;
    assert_eq!(
        s.requests, files,
        "every request we counted reached the mock"
    );
    assert_eq!(stats.total, files + 1, "and one GET /users for the budget");
    assert_eq!(
        s.requests,
        s.lookups + s.retries,
        "each retry is exactly one extra request"
    );
    let faulted = stats
        .log
        .as_ref()
        .expect("log")
        .iter()
        .filter(|e| e.fault.is_some())
        .count() as u64;
    assert!(faulted > 20, "faults were injected ({faulted})");
    assert_eq!(
        s.retries + s.errors,
        faulted,
        "every fault was retried or became the final error"
    );
    let error_rows = run.rows.iter().filter(|r| r["status"] == "error").count() as u64;
    assert_eq!(error_rows, s.errors);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn exhausted_retries_become_error_records_with_the_virustotal_code() {
    let mock = MockServer::start(MockConfig {
        faults: Faults::always(vtbulk_mock::Fault::Transient),
        ..MockConfig::default()
    })
    .await
    .expect("mock");
    let dir = temp_dir("always503");
    let (list, _) = write_list(
        &dir,
        "list.txt",
        &mock,
        &GenSpec {
            count: 3,
            ..GenSpec::default()
        },
    );
    let run = enrich(&mock, "testkey", settings(&list, Format::Csv)).await;
    assert_eq!(run.outcome, Outcome::CompletedWithErrors);
    assert_eq!(run.rows.len(), 3);
    for row in &run.rows {
        assert_eq!(row["status"], "error");
        assert_eq!(row["error_code"], "TransientError");
        assert!(!row["error_message"].is_empty());
    }
    assert_eq!(run.summary.requests, 3 * 6, "1 attempt + 5 retries each");
    assert_eq!(run.summary.errors_by_code["TransientError"], 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn a_mock_quota_below_our_rate_brings_429s_but_loses_nothing() {
    let mock = MockServer::start(MockConfig {
        keys: vec![KeyConfig::with_limits(
            "k",
            Limits {
                per_minute: Some(30),
                ..Limits::default()
            },
        )],
        follow_tokio_clock: true,
        ..MockConfig::default()
    })
    .await
    .expect("mock");
    let dir = temp_dir("lowquota");
    let (list, _) = write_list(
        &dir,
        "list.txt",
        &mock,
        &GenSpec {
            count: 80,
            unknown: 0.2,
            ..GenSpec::default()
        },
    );
    let mut s = settings(&list, Format::Ndjson);
    s.scheduler.rate = Some("120/min".parse().expect("rate"));
    let run = enrich(&mock, "k", s).await;
    check_accounting(&mock, &list, &run);
    assert_eq!(run.outcome, Outcome::Completed);
    assert!(run.summary.rate_limited > 0, "the mock refused some");
    assert_eq!(run.summary.errors, 0, "429s are not errors");
    assert_eq!(
        run.summary.rate_limited_by_code.get("QuotaExceededError"),
        Some(&run.summary.rate_limited)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn at_4_a_minute_no_60_second_window_of_the_mock_log_holds_more_than_4() {
    let mock = MockServer::start(MockConfig {
        keys: vec![KeyConfig::unlimited("k")],
        follow_tokio_clock: true,
        ..MockConfig::default()
    })
    .await
    .expect("mock");
    let dir = temp_dir("window");
    let (list, _) = write_list(
        &dir,
        "list.txt",
        &mock,
        &GenSpec {
            count: 20,
            ..GenSpec::default()
        },
    );
    let mut s = settings(&list, Format::Csv);
    s.scheduler.rate = Some("4/min".parse().expect("rate"));
    s.concurrency = Concurrency::Auto { max: 16 };
    let started = tokio::time::Instant::now();
    let run = enrich(&mock, "k", s).await;
    assert_eq!(run.rows.len(), 20);
    let stats = mock.stats(true);
    assert_eq!(
        stats.total, 21,
        "20 lookups and the GET /users that read the budget"
    );
    // Requests "of any nature" count: the users request passed the same gate.
    assert_eq!(stats.max_in_window(60_000, |_| true), 4);
    // 20 intervals of 15 s stretched by the 0.2% margin: the quota is used, not wasted.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(20 * 15_030), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(20 * 15 + 5), "{elapsed:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_wrong_key_stops_the_run_with_auth_failed_and_no_ok_records() {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let dir = temp_dir("wrongkey");
    let (list, _) = write_list(
        &dir,
        "list.txt",
        &mock,
        &GenSpec {
            count: 50,
            ..GenSpec::default()
        },
    );
    // The budget's GET /users refuses the key: no file is looked up at all.
    let run = enrich(&mock, "not-the-key", settings(&list, Format::Csv)).await;
    assert_eq!(run.outcome, Outcome::AuthFailed);
    assert_eq!(run.rows.len(), 50, "every input still has a record");
    assert!(
        run.rows
            .iter()
            .all(|r| r["status"] == "skipped" && r["error_code"] == "stopped_WrongCredentialsError")
    );
    assert_eq!(run.summary.requests, 0);
    let quota = run.summary.quota.as_ref().expect("quota report");
    assert!(
        quota
            .note
            .as_deref()
            .is_some_and(|n| n.contains("WrongCredentialsError")),
        "{quota:?}"
    );
    assert_eq!(mock.stats(false).total, 1, "only the users request");
    // Offline (no users request), the first lookups meet the refusal.
    let mut offline = settings(&list, Format::Csv);
    offline.quota.offline = true;
    let run = enrich(&mock, "not-the-key", offline).await;
    assert_eq!(run.outcome, Outcome::AuthFailed);
    assert_eq!(run.rows.len(), 50, "every input still has a record");
    assert!(
        run.rows
            .iter()
            .all(|r| r["status"] == "error" || r["status"] == "skipped")
    );
    assert!(
        run.rows
            .iter()
            .any(|r| r["error_code"] == "WrongCredentialsError")
    );
    assert!(
        run.summary.requests <= 8,
        "at most the first wave of workers was sent ({})",
        run.summary.requests
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_daily_cap_stops_the_run_with_exact_skipped_records() {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let dir = temp_dir("dailycap");
    let (list, _) = write_list(
        &dir,
        "list.txt",
        &mock,
        &GenSpec {
            count: 30,
            ..GenSpec::default()
        },
    );
    // The tier's profile caps the day (offline: the mock's key itself is unlimited).
    let mut s = settings(&list, Format::Csv);
    s.quota.offline = true;
    s.scheduler.caps.daily = Some(10);
    s.concurrency = Concurrency::Fixed(1);
    let run = enrich(&mock, "testkey", s).await;
    assert_eq!(run.outcome, Outcome::QuotaExhausted);
    assert_eq!(run.summary.requests, 10);
    assert_eq!(run.summary.skipped, 20);
    assert_eq!(run.summary.skipped_by_reason.get("quota_daily"), Some(&20));
    assert_eq!(
        run.rows.iter().filter(|r| r["status"] == "skipped").count(),
        20
    );
    let _ = std::fs::remove_dir_all(&dir);
}
