//! Pacing that holds on a jittery host, and runs that end the right way when the API says
//! 429 in bursts, cannot be reached, or the output goes away. Against vt-mock on loopback,
//! under tokio's paused clock (the mock's clock follows it): no test sleeps.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use vtbulk_engine::{Concurrency, Counters, Outcome, StopHandle, run};
use vtbulk_mock::generate::GenSpec;
use vtbulk_mock::stats::Route;
use vtbulk_mock::{Faults, KeyConfig, Latency, MockConfig, MockServer};
use vtbulk_output::Format;
use vtbulk_vt::{ApiKey, Client, ClientConfig, DepartureDelay};

use crate::common::*;

/// vt-mock with one key, `k`, of this spec, its clock following tokio's.
async fn mock_with(key: &str) -> MockServer {
    MockServer::start(MockConfig {
        keys: vec![KeyConfig::parse(&format!("k:{key}")).expect("spec")],
        follow_tokio_clock: true,
        ..MockConfig::default()
    })
    .await
    .expect("mock")
}

/// A list of `count` hashes the mock knows (a tenth unknown with `unknown`), in a temp dir of
/// its own: (dir, list).
fn list(
    mock: &MockServer,
    tag: &str,
    count: u64,
    unknown: f64,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = temp_dir(tag);
    let (list, _) = write_list(
        &dir,
        "list.txt",
        mock,
        &GenSpec {
            count,
            unknown,
            ..GenSpec::default()
        },
    );
    (dir, list)
}

/// The mock's arrival times (ms) of every request the key sent, in order.
fn arrivals(mock: &MockServer) -> Vec<i64> {
    let mut t: Vec<i64> = mock
        .stats(true)
        .log
        .expect("log")
        .iter()
        .map(|e| e.t_ms)
        .collect();
    t.sort_unstable();
    t
}

#[tokio::test(start_paused = true)]
async fn late_departures_push_the_next_request_back_so_a_strict_limiter_refuses_none() {
    let mock = mock_with("strict=600/min").await;
    let (dir, list) = list(&mock, "late", 120, 0.0);
    // A busy host: every third request leaves 7 ms after its grant, every tenth 150 ms
    // (longer than the interval).
    let delay = DepartureDelay(Arc::new(|n| match n {
        n if n % 10 == 5 => Duration::from_millis(150),
        n if n % 3 == 1 => Duration::from_millis(7),
        _ => Duration::ZERO,
    }));
    let client = Client::new(
        ApiKey::new("k").expect("key"),
        &ClientConfig {
            host: mock.url(),
            departure_delay: Some(delay),
            ..ClientConfig::default()
        },
    )
    .expect("client");
    let mut s = settings(&list, Format::Csv);
    s.scheduler.rate = Some("600/min".parse().expect("rate"));
    s.concurrency = Concurrency::Auto { max: 16 };
    let out = Shared::default();
    let (outcome, summary) = run(
        s,
        client,
        Box::new(out),
        Arc::new(Counters::default()),
        StopHandle::default(),
    )
    .await
    .expect("run");
    assert_eq!(outcome, Outcome::Completed);
    assert_eq!(summary.ok + summary.not_found, 120);
    assert_eq!(
        summary.rate_limited, 0,
        "{:?}",
        summary.rate_limited_by_kind
    );
    let t = arrivals(&mock);
    assert_eq!(t.len(), 121, "120 lookups and the users read");
    for (i, w) in t.windows(2).enumerate() {
        assert!(
            w[1] - w[0] >= 100,
            "requests {i} and {} {} ms apart",
            i + 1,
            w[1] - w[0]
        );
    }
    assert!(mock.stats(true).max_in_window(60_000, |_| true) <= 600);
    let pacing = summary.pacing.expect("pacing report");
    // Every lookup's departure was seen (the users read, made before the scheduler existed,
    // is noted as the first departure but not measured).
    assert_eq!(pacing.departures, 120);
    assert_eq!(
        pacing.lateness_us.max, 150_000,
        "the injected lateness is measured"
    );
    assert!(pacing.lateness_us.p50 < 1_000, "{:?}", pacing.lateness_us);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn a_strict_600_a_minute_limiter_refuses_none_of_1200_lookups_at_our_600_a_minute() {
    let mock = mock_with("strict=600/min").await;
    let (dir, list) = list(&mock, "strict", 1200, 0.1);
    let mut s = settings(&list, Format::Ndjson);
    s.scheduler.rate = Some("600/min".parse().expect("rate"));
    s.concurrency = Concurrency::Auto { max: 64 };
    let started = tokio::time::Instant::now();
    let run = enrich(&mock, "k", s).await;
    assert_eq!(run.outcome, Outcome::Completed);
    assert_eq!(run.rows.len(), 1200);
    assert_eq!(run.summary.rate_limited, 0);
    let stats = mock.stats(false);
    assert_eq!(
        stats.total, 1201,
        "every request admitted: 1200 lookups and /users"
    );
    // 1200 intervals of 100.2 ms; the paused clock's timer wakes on whole milliseconds.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(1200 * 100), "{elapsed:?}");
    assert!(elapsed <= Duration::from_millis(1200 * 102), "{elapsed:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn the_users_re_read_after_an_unexpected_quota_exceeded_is_paced_and_not_refused() {
    // The key's sliding minute allows 20, but we send at 30/min: QuotaExceededErrors our books
    // do not expect; each re-reads /users, through the same strict spacing as lookups.
    let mock = mock_with("20/min,strict=30/min").await;
    let (dir, list) = list(&mock, "resync", 40, 0.0);
    let mut s = settings(&list, Format::Csv);
    s.scheduler.rate = Some("30/min".parse().expect("rate"));
    s.concurrency = Concurrency::Fixed(4);
    let run = enrich(&mock, "k", s).await;
    assert_eq!(run.outcome, Outcome::Completed);
    assert_eq!(run.rows.len(), 40);
    assert!(
        run.summary.rate_limited > 0,
        "the sliding minute refused some"
    );
    let quota = run.summary.quota.expect("quota");
    assert!(quota.resyncs >= 1, "the budget was re-read");
    let log = mock.stats(true).log.expect("log");
    let users: Vec<_> = log.iter().filter(|e| e.route == Route::Users).collect();
    assert!(users.len() >= 2, "the first read and at least one re-read");
    assert!(
        users.iter().all(|e| e.status == 200),
        "no users read refused"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A run at unlimited rate against 429 bursts of `burst` requests.
async fn burst_run(burst: u32) {
    let mock = MockServer::start(MockConfig {
        faults: format!("429=0.05,burst={burst}")
            .parse::<Faults>()
            .expect("faults"),
        follow_tokio_clock: true,
        latency: Latency::Fixed {
            delay: Duration::from_millis(2),
        },
        ..MockConfig::default()
    })
    .await
    .expect("mock");
    let dir = temp_dir(&format!("burst{burst}"));
    let (list, _) = write_list(
        &dir,
        "list.txt",
        &mock,
        &GenSpec {
            count: 2000,
            unknown: 0.1,
            ..GenSpec::default()
        },
    );
    let mut s = settings(&list, Format::Ndjson);
    s.scheduler.rate = None;
    s.concurrency = Concurrency::Fixed(64);
    let started = tokio::time::Instant::now();
    let run = enrich(&mock, "testkey", s).await;
    let elapsed = started.elapsed();
    assert_eq!(run.outcome, Outcome::Completed, "{:?}", run.summary);
    assert_eq!(run.summary.skipped, 0);
    assert_eq!(run.summary.errors, 0, "429s are never errors");
    let mut seen = std::collections::HashSet::new();
    for row in &run.rows {
        assert!(seen.insert(row["input"].clone()), "{} twice", row["input"]);
    }
    assert_eq!(seen.len(), 2000, "every item answered once");
    let by_kind = &run.summary.rate_limited_by_kind;
    assert!(run.summary.rate_limited > 0);
    assert!(by_kind.get("escalated").is_some(), "{by_kind:?}");
    assert!(by_kind.get("gave_up").is_none(), "{by_kind:?}");
    // Each burst costs one short pause, not a storm of growing ones: 2000 lookups at 64 in
    // flight take 63 ms of latency; bursts add at most a few tens of ms each.
    let bursts = by_kind.get("escalated").copied().unwrap_or(0);
    assert!(
        elapsed < Duration::from_millis(200 + bursts * 150),
        "{elapsed:?} for {bursts} escalations: {by_kind:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn bursts_of_5_429s_end_with_every_item_answered_once_at_full_pace() {
    burst_run(5).await;
}

#[tokio::test(start_paused = true)]
async fn bursts_of_20_429s_end_with_every_item_answered_once_at_full_pace() {
    burst_run(20).await;
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_api_stops_after_five_connection_failures_with_the_rest_skipped() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let dir = temp_dir("unreachable");
    let list = dir.join("list.txt");
    let hashes: Vec<String> = (0..300u32).map(|i| format!("{:064x}", i + 1)).collect();
    std::fs::write(&list, hashes.join("\n")).expect("list");
    let client = Client::new(
        ApiKey::new("k").expect("key"),
        &ClientConfig {
            host: format!("http://127.0.0.1:{port}"),
            ..ClientConfig::default()
        },
    )
    .expect("client");
    let mut s = settings(&list, Format::Csv);
    s.concurrency = Concurrency::Fixed(8);
    let started = tokio::time::Instant::now();
    let (outcome, summary, text) = run_to_text(client, s).await;
    assert_eq!(outcome, Outcome::Unreachable);
    assert_eq!(summary.requests, 0, "nothing was sent, nothing spent");
    assert_eq!(summary.errors, 0, "no error records");
    assert_eq!(summary.skipped, 300, "every item skipped");
    assert_eq!(summary.skipped_by_reason.get("api_unreachable"), Some(&300));
    let stopped = summary.stopped.expect("stop report");
    assert_eq!(stopped.cause, "api_unreachable");
    assert!(
        stopped
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("ConnectFailed"),
        "{stopped:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        text.lines().count(),
        301,
        "a header and one record per item"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A writer whose reader went away: every write fails like a closed pipe.
struct ClosedPipe(Arc<AtomicUsize>);

impl Write for ClosedPipe {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Err(std::io::ErrorKind::BrokenPipe.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Err(std::io::ErrorKind::BrokenPipe.into())
    }
}

#[tokio::test(start_paused = true)]
async fn a_closed_output_stops_the_lookups_at_once() {
    let mock = MockServer::start(MockConfig {
        follow_tokio_clock: true,
        latency: Latency::Fixed {
            delay: Duration::from_millis(10),
        },
        ..MockConfig::default()
    })
    .await
    .expect("mock");
    let (dir, list) = list(&mock, "closed", 1000, 0.0);
    let mut s = settings(&list, Format::Csv);
    s.concurrency = Concurrency::Fixed(4);
    let attempts = Arc::new(AtomicUsize::new(0));
    let (outcome, summary) = run(
        s,
        client(&mock, "testkey"),
        Box::new(ClosedPipe(attempts.clone())),
        Arc::new(Counters::default()),
        StopHandle::default(),
    )
    .await
    .expect("a closed pipe is an outcome, not an error");
    assert_eq!(outcome, Outcome::OutputClosed);
    assert!(attempts.load(Ordering::Relaxed) >= 1, "the writer tried");
    // The first flush (within 100 ms) finds the pipe closed; the 4 lookups in flight finish.
    assert!(
        summary.requests < 100,
        "{} of 1000 looked up after the output closed",
        summary.requests
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_a_429_storm_ends_the_run_at_once() {
    // The key's minute allows none; we are told 600/min: every request meets
    // QuotaExceededError, our books see room, the gate closes for longer and longer, and each
    // escalation re-reads /users through that closed gate.
    let mock = mock_with("0/min").await;
    let (dir, list) = list(&mock, "storm-stop", 50, 0.0);
    let mut s = settings(&list, Format::Csv);
    s.scheduler.rate = Some("600/min".parse().expect("rate"));
    s.concurrency = Concurrency::Fixed(4);
    let stop = StopHandle::default();
    let stopper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(200)).await;
            stop.stop();
            tokio::time::Instant::now()
        })
    };
    let (outcome, summary) = run(
        s,
        client(&mock, "k"),
        Box::new(Shared::default()),
        Arc::new(Counters::default()),
        stop,
    )
    .await
    .expect("run");
    let stopped_at = stopper.await.expect("stopper");
    assert_eq!(outcome, Outcome::Interrupted);
    assert!(
        stopped_at.elapsed() < Duration::from_secs(1),
        "the run went on {:?} after the stop",
        stopped_at.elapsed()
    );
    assert!(summary.rate_limited > 0);
    assert_eq!(
        summary.ok + summary.not_found + summary.skipped,
        50,
        "{summary:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn refused_requests_are_not_charged_to_the_days_budget() {
    // A day of exactly 200 and 200 hashes, through 429 bursts: each refusal spent nothing, so
    // all 200 fit.
    let mock = MockServer::start(MockConfig {
        faults: "429=0.05,burst=5".parse::<Faults>().expect("faults"),
        follow_tokio_clock: true,
        ..MockConfig::default()
    })
    .await
    .expect("mock");
    let (dir, list) = list(&mock, "refund", 200, 0.0);
    let mut s = settings(&list, Format::Csv);
    s.quota.offline = true;
    s.scheduler.caps.daily = Some(200);
    s.concurrency = Concurrency::Fixed(8);
    let run = enrich(&mock, "testkey", s).await;
    assert_eq!(run.outcome, Outcome::Completed, "{:?}", run.summary);
    assert_eq!(run.summary.ok, 200);
    assert!(run.summary.rate_limited > 0, "the bursts refused some");
    assert!(run.summary.requests > 200, "{}", run.summary.requests);
    let day = run.summary.quota.expect("quota").windows[1];
    assert_eq!(day.used, 200, "only what VirusTotal admitted is spent");
    let _ = std::fs::remove_dir_all(&dir);
}
