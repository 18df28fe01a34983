//! The key's live budget end to end against vt-mock, under tokio's paused clock (the mock's
//! clock and ours follow it): crossing 00:00 UTC, a key shared with others, the ledger when
//! `/users` is refused, `plan` against the run it predicts, `quota` against vt-mock's view,
//! and a key of 1 a minute, 1 a day, 31 a month.

use vtbulk_engine::{Concurrency, Outcome, Settings, WallClock, plan, quota_view};
use vtbulk_mock::generate::GenSpec;
use vtbulk_mock::quota::Preload;
use vtbulk_mock::{KeyConfig, Limits, MockConfig, MockServer};
use vtbulk_output::Format;
use vtbulk_quota::{Reserve, Tier};

use crate::common::*;

/// 2026-11-26T23:58:00Z, Unix milliseconds.
const BEFORE_MIDNIGHT_MS: i64 = 1_795_737_480_000;
/// 2026-11-26T12:00:00Z.
const NOON_MS: i64 = 1_795_694_400_000;

async fn mock_at(key: KeyConfig, start_ms: i64) -> MockServer {
    MockServer::start(MockConfig {
        keys: vec![key],
        follow_tokio_clock: true,
        clock_start_ms: Some(start_ms),
        ..MockConfig::default()
    })
    .await
    .expect("mock")
}

/// Settings for `list` with our clock on the mock's.
fn at(mock: &MockServer, list: &std::path::Path) -> Settings {
    let mut s = settings(list, Format::Csv);
    s.scheduler.clock = WallClock::following_tokio(mock.clock().now_ms());
    s.scheduler.rate = Some("60/min".parse().expect("rate"));
    s.concurrency = Concurrency::Fixed(4);
    s
}

/// `s` with a cache (and so a ledger) at `path`, its clock fixed at noon.
fn with_cache(mut s: Settings, path: std::path::PathBuf) -> Settings {
    s.cache = Some(vtbulk_engine::CacheSettings {
        path,
        freshness: vtbulk_engine::Freshness::default(),
        refresh: false,
        read_only: false,
        clock: WallClock::Fixed(NOON_MS / 1000),
    });
    s
}

fn sha256_list(
    mock: &MockServer,
    dir: &std::path::Path,
    name: &str,
    count: u64,
    seed: u64,
) -> std::path::PathBuf {
    let spec = GenSpec {
        count,
        unknown: 0.2,
        seed,
        ..GenSpec::default()
    };
    write_list(dir, name, mock, &spec).0
}

fn refused_by_quota(mock: &MockServer) -> u64 {
    mock.stats(false).status_count(429)
}

#[tokio::test(start_paused = true)]
async fn a_run_that_crosses_midnight_stops_at_the_daily_budget_or_waits_for_the_reset() {
    let limits = Limits {
        daily: Some(10),
        ..Limits::default()
    };
    let mock = mock_at(KeyConfig::with_limits("k", limits), BEFORE_MIDNIGHT_MS).await;
    let dir = temp_dir("midnight");
    let list = sha256_list(&mock, &dir, "list.txt", 30, 1);

    let run = enrich(&mock, "k", at(&mock, &list)).await;
    assert_eq!(run.outcome, Outcome::QuotaExhausted);
    assert_eq!(run.summary.requests, 10);
    assert_eq!(run.summary.skipped_by_reason.get("quota_daily"), Some(&20));
    assert_eq!(run.rows.len(), 30, "every input has its record");
    let quota = run.summary.quota.as_ref().expect("quota report");
    assert_eq!(quota.source, "live");
    assert_eq!(quota.exhausted.as_deref(), Some("day"));
    assert_eq!(quota.resets_at.as_deref(), Some("2026-11-27T00:00:00Z"));
    assert_eq!(quota.items_left, 20);

    // Again with --wait-for-reset: today is spent (the mock says so), so it sleeps to 00:00,
    // spends the new day's 10, sleeps again, and finishes on the third day.
    let mut s = at(&mock, &list);
    s.quota.wait_for_reset = true;
    let run = enrich(&mock, "k", s).await;
    assert_eq!(run.outcome, Outcome::Completed);
    assert_eq!(run.summary.requests, 30);
    assert_eq!(run.summary.skipped, 0);
    assert_eq!(run.rows.len(), 30);
    assert_eq!(refused_by_quota(&mock), 0, "never a QuotaExceededError");
    let quota = run.summary.quota.as_ref().expect("quota report");
    assert!(
        quota.resyncs >= 2,
        "the budget is read again after each reset ({})",
        quota.resyncs
    );
    let log = mock.stats(true).log.expect("log");
    let mut per_day = std::collections::BTreeMap::<i64, u64>::new();
    for e in log
        .iter()
        .filter(|e| e.route == vtbulk_mock::stats::Route::Files)
    {
        *per_day.entry(e.t_ms.div_euclid(86_400_000)).or_default() += 1;
    }
    assert_eq!(
        per_day.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10, 10]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn a_key_half_used_by_others_spends_exactly_the_rest_minus_the_reserve() {
    let mut key = KeyConfig::with_limits(
        "k",
        Limits {
            daily: Some(100),
            ..Limits::default()
        },
    );
    key.preload = Preload {
        hour: 50,
        day: 50,
        month: 50,
    };
    let mock = mock_at(key, NOON_MS).await;
    let dir = temp_dir("halfused");
    let list = sha256_list(&mock, &dir, "list.txt", 60, 2);
    let mut s = at(&mock, &list);
    s.scheduler.reserve = Reserve::Count(10);
    let run = enrich(&mock, "k", s).await;
    assert_eq!(
        run.summary.requests, 40,
        "100 - 50 used by others - 10 reserved"
    );
    assert_eq!(run.summary.skipped_by_reason.get("quota_daily"), Some(&20));
    assert_eq!(run.outcome, Outcome::QuotaExhausted);
    assert_eq!(refused_by_quota(&mock), 0, "vt-mock refused nothing");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn the_ledger_carries_across_two_runs_when_users_answers_403() {
    let mut key = KeyConfig::with_limits(
        "k",
        Limits {
            daily: Some(10),
            ..Limits::default()
        },
    );
    key.users_forbidden = true;
    let mock = mock_at(key, NOON_MS).await;
    let dir = temp_dir("ledger403");
    let first = sha256_list(&mock, &dir, "a.txt", 6, 3);
    let second = sha256_list(&mock, &dir, "b.txt", 6, 4);
    let cached = |list: &std::path::Path| {
        let mut s = at(&mock, list);
        s.scheduler.caps = Tier {
            daily: Some(10),
            ..Tier::default()
        };
        with_cache(s, dir.join("cache.sqlite3"))
    };
    let run = enrich(&mock, "k", cached(&first)).await;
    assert_eq!(run.summary.requests, 6);
    let quota = run.summary.quota.as_ref().expect("quota");
    assert_eq!(quota.source, "ledger");
    assert!(
        quota.note.as_deref().is_some_and(|n| n.contains("403")),
        "{quota:?}"
    );
    // The second run knows the first spent 6 of the profile's 10.
    let run = enrich(&mock, "k", cached(&second)).await;
    assert_eq!(run.summary.requests, 4);
    assert_eq!(run.summary.skipped_by_reason.get("quota_daily"), Some(&2));
    assert_eq!(refused_by_quota(&mock), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn plan_predicts_the_run_and_quota_matches_the_mock() {
    let mut key = KeyConfig::with_limits("k", Limits::PUBLIC);
    key.preload = Preload {
        hour: 5,
        day: 120,
        month: 3_000,
    };
    let mock = mock_at(key, NOON_MS).await;
    let dir = temp_dir("plan");
    let cache = dir.join("cache.sqlite3");
    let cached = |list: &std::path::Path| {
        let mut s = at(&mock, list);
        s.scheduler.rate = Some("4/min".parse().expect("rate"));
        s.scheduler.caps = Tier {
            per_minute: std::num::NonZeroU32::new(4),
            hourly: Some(240),
            daily: Some(500),
            monthly: Some(15_500),
        };
        with_cache(s, cache.clone())
    };
    // Part of the list is in the cache already.
    let warm = sha256_list(&mock, &dir, "warm.txt", 8, 5);
    let list = dir.join("list.txt");
    let more = sha256_list(&mock, &dir, "more.txt", 12, 6);
    std::fs::write(
        &list,
        std::fs::read_to_string(&warm).expect("warm")
            + &std::fs::read_to_string(&more).expect("more")
            + "not-a-hash\n",
    )
    .expect("list");
    enrich(&mock, "k", cached(&warm)).await;

    let client = client(&mock, "k");
    let view = quota_view(&cached(&list), &client, None)
        .await
        .expect("quota");
    assert_eq!(view.source, "live");
    let by_window: std::collections::HashMap<_, _> = view
        .windows
        .iter()
        .map(|r| (r.window, (r.allowed, r.used)))
        .collect();
    assert_eq!(by_window["hour"], (Some(240), 5 + 8));
    assert_eq!(by_window["day"], (Some(500), 120 + 8));
    assert_eq!(by_window["month"], (Some(15_500), 3_000 + 8));
    assert_eq!(by_window["minute"].0, Some(4));

    let planned = plan(&cached(&list), &client).await.expect("plan");
    assert_eq!(
        (planned.lines, planned.invalid, planned.unique),
        (21, 1, 20)
    );
    assert_eq!(planned.fresh_in_cache, 8);
    assert_eq!(planned.to_query, 12);
    assert!(planned.fits_today);
    assert_eq!(planned.days_needed, Some(1));
    let run = enrich(&mock, "k", cached(&list)).await;
    assert_eq!(run.summary.cache_hits, planned.fresh_in_cache);
    assert_eq!(run.summary.requests, planned.requests_needed);
    assert_eq!(run.summary.invalid, planned.invalid);
    assert_eq!(run.summary.unique, planned.unique);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn a_key_of_one_a_minute_one_a_day_31_a_month_is_paced_and_planned_sensibly() {
    let limits = Limits {
        per_minute: Some(1),
        hourly: None,
        daily: Some(1),
        monthly: Some(31),
    };
    let mock = mock_at(KeyConfig::with_limits("k", limits), NOON_MS).await;
    let dir = temp_dir("tiny");
    let list = sha256_list(&mock, &dir, "list.txt", 5, 7);
    // The public profile's 4/min, lowered to what the key's day allows.
    let mut s = at(&mock, &list);
    s.scheduler.rate = Some("4/min".parse().expect("rate"));
    let planned = plan(&s, &client(&mock, "k")).await.expect("plan");
    assert_eq!(planned.rate, "1/min");
    assert_eq!(planned.days_needed, Some(5));
    assert!(!planned.fits_today);
    let run = enrich(&mock, "k", s).await;
    assert_eq!(run.outcome, Outcome::QuotaExhausted);
    assert_eq!(run.summary.requests, 1);
    assert_eq!(run.summary.skipped_by_reason.get("quota_daily"), Some(&4));
    assert_eq!(
        refused_by_quota(&mock),
        0,
        "the users request and the lookup a minute apart"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn two_runs_sharing_a_key_resync_on_quota_exceeded_and_stop_at_the_real_budget() {
    let limits = Limits {
        daily: Some(10),
        ..Limits::default()
    };
    let mock = mock_at(KeyConfig::with_limits("k", limits), NOON_MS).await;
    let dir = temp_dir("shared");
    let a = sha256_list(&mock, &dir, "a.txt", 10, 8);
    let b = sha256_list(&mock, &dir, "b.txt", 10, 9);
    // Both read "0 of 10 used" at the start; together they would send 20.
    let (ra, rb) = tokio::join!(
        enrich(&mock, "k", at(&mock, &a)),
        enrich(&mock, "k", at(&mock, &b))
    );
    let admitted = mock.stats(false).by_id.values().sum::<u64>() - refused_by_quota(&mock);
    assert_eq!(admitted, 10, "the key's day was spent, no more");
    for run in [&ra, &rb] {
        assert_eq!(run.rows.len(), 10, "every input has its record");
        assert!(run.summary.errors == 0, "429s are not errors");
    }
    let resyncs: u64 = [&ra, &rb]
        .iter()
        .map(|r| r.summary.quota.as_ref().expect("quota").resyncs)
        .sum();
    assert!(
        resyncs >= 1,
        "an unexpected QuotaExceededError re-read /users"
    );
    assert!(
        [&ra, &rb]
            .iter()
            .any(|r| r.outcome == Outcome::QuotaExhausted
                && r.summary.skipped_by_reason.contains_key("quota_daily")),
        "the resync found the day spent and stopped the run"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// 2026-11-30T23:50:00Z: ten minutes before both a UTC midnight and a month end.
const BEFORE_MONTH_END_MS: i64 = 1_796_082_600_000;
/// 2026-12-01T00:00:00Z.
const DECEMBER_MS: i64 = 1_796_083_200_000;

#[tokio::test(start_paused = true)]
async fn history_splits_spend_across_a_utc_midnight_and_a_month_end() {
    let limits = Limits {
        hourly: Some(1_000),
        daily: Some(10_000),
        monthly: Some(100_000),
        ..Limits::default()
    };
    let mock = mock_at(KeyConfig::with_limits("k", limits), BEFORE_MONTH_END_MS).await;
    let dir = temp_dir("history");
    let with_ledger = |list: &std::path::Path| {
        let mut s = at(&mock, list);
        s.cache = Some(vtbulk_engine::CacheSettings {
            path: dir.join("cache.sqlite3"),
            freshness: vtbulk_engine::Freshness::default(),
            refresh: false,
            read_only: false,
            clock: WallClock::following_tokio(mock.clock().now_ms()),
        });
        s
    };
    // 30 lookups on the evening of the 30th (at 60 a minute: done before midnight),
    // then, past midnight, 40 on the 1st of December.
    let evening = sha256_list(&mock, &dir, "evening.txt", 30, 9);
    let run = enrich(&mock, "k", with_ledger(&evening)).await;
    assert_eq!(run.summary.requests, 30);
    let now = mock.clock().now_ms();
    assert!(now < DECEMBER_MS, "still the 30th");
    tokio::time::advance(std::time::Duration::from_millis(
        (DECEMBER_MS + 60_000 - now) as u64,
    ))
    .await;
    let morning = sha256_list(&mock, &dir, "morning.txt", 40, 10);
    let s = with_ledger(&morning);
    let run = enrich(&mock, "k", s.clone()).await;
    assert_eq!(run.summary.requests, 40);

    let view = quota_view(&s, &client(&mock, "k"), Some(7))
        .await
        .expect("quota");
    let h = view.history.expect("history");
    assert_eq!(h.days.len(), 7, "seven UTC days, today included");
    assert_eq!(h.since, "2026-11-25T00:00:00Z");
    let (nov30, dec1) = (&h.days[5], &h.days[6]);
    assert_eq!(nov30.start, "2026-11-30T00:00:00Z");
    assert_eq!((nov30.spent, dec1.spent), (30, 40));
    assert!(h.days[..5].iter().all(|d| d.spent == 0));
    assert_eq!(nov30.allowed, Some(10_000));
    let hours: Vec<(&str, u64)> = h
        .hours
        .iter()
        .map(|r| (r.start.as_str(), r.spent))
        .collect();
    assert_eq!(
        hours,
        [("2026-11-30T23:00:00Z", 30), ("2026-12-01T00:00:00Z", 40)]
    );
    assert_eq!(h.hours[0].allowed, Some(1_000));
    let peak = h.peak_minute.expect("a busiest minute");
    // Under the paused clock a run's virtual length stretches (a wait on the journal thread
    // or a blocking stage lets tokio jump to its next timer; on a loaded host the morning's
    // run once began at 00:10), so the 30 of the evening may fall in two or three minutes:
    // the busiest has at least a third of them, never more than the rate allows, and lies in
    // one of the two runs' hours.
    assert!((10..=60).contains(&peak.spent), "{peak:?}");
    assert!(
        peak.start.starts_with("2026-11-30T23:") || peak.start.starts_with("2026-12-01T00:"),
        "{peak:?}"
    );
    assert_eq!(peak.allowed, Some(60), "the rate's minute");
    // The month is December's: the mock's live figure for it is the morning's 40.
    assert_eq!(h.month.month, "2026-12");
    assert_eq!(h.month.used, 40);
    assert_eq!(h.month.allowed, Some(100_000));
    assert_eq!(h.month.ends_at, "2027-01-01T00:00:00Z");
    // 70 requests over the span's elapsed time (six days and a few minutes): the pace goes
    // on to the month's end, 31 days on.
    assert!(
        h.month.recent_per_day > 10.0 && h.month.recent_per_day < 12.0,
        "{:?}",
        h.month
    );
    assert!(h.month.projected > 40 + 300, "{:?}", h.month);
    assert_eq!(h.month.runs_out_at, None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn probe_finds_a_strict_limiters_rate_within_five_percent_and_spends_no_more_than_allowed() {
    // vt-mock's strict limiter at 300/min: one request per 200 ms, no burst.
    let key = KeyConfig::parse("k:unlimited,strict=300/min").expect("key");
    let mock = mock_at(key, NOON_MS).await;
    let client = client(&mock, "k");
    let report = vtbulk_engine::probe(
        &client,
        Vec::new(),
        vtbulk_engine::ProbeSettings {
            max_requests: 400,
            start_per_min: 60.0,
            ceiling_per_min: None,
            cool_down: std::time::Duration::from_secs(60),
        },
    )
    .await;
    let sustained = report.sustained_per_min.expect("a clean step");
    let refused = report.refused_at_per_min.expect("a refused step");
    assert!(
        (285.0..=300.0).contains(&sustained),
        "sustained {sustained}/min against 300: {report:#?}"
    );
    assert!(
        refused > 300.0 && refused <= sustained * 1.04 + 1.0,
        "{report:#?}"
    );
    assert_eq!(report.stopped, "bracketed");
    // vt-mock answers its strict limiter as VirusTotal does an exceeded minute.
    assert_eq!(report.first_429.as_deref(), Some("QuotaExceededError"));
    assert!(report.requests <= 400);
    assert_eq!(
        mock.stats(false).total,
        report.requests,
        "every request counted"
    );
    assert!(report.steps.len() >= 4);

    // A budget smaller than one full step: it stops there, spending at most that.
    let small = vtbulk_engine::probe(
        &client,
        Vec::new(),
        vtbulk_engine::ProbeSettings {
            max_requests: 7,
            start_per_min: 60.0,
            ceiling_per_min: Some(120.0),
            cool_down: std::time::Duration::from_secs(60),
        },
    )
    .await;
    assert!(small.requests <= 7, "{small:#?}");
    assert_eq!(small.stopped, "max_requests");
}
