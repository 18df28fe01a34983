//! The coordinator against a real `redis-server` (Debian's package; `.ci/run` installs it),
//! started by this harness on a free loopback port and stopped with it: several connections
//! sharing one key's pace and budgets, the calendar the scripts compute, the key names, and
//! an unreachable server.

use std::collections::BTreeSet;
use std::time::Duration;

use vtbulk_coord::test_server::RedisServer;
use vtbulk_coord::{Allowances, Answer, CALENDAR_CHECK, CoordError, Coordinator, Window};

async fn coordinator(server: &RedisServer, fingerprint: &str) -> Coordinator {
    Coordinator::connect(&server.url(), fingerprint, Duration::from_secs(5))
        .await
        .expect("connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_to_several_processes_are_spaced_by_the_interval_on_redis_clock() {
    let server = RedisServer::start().await;
    let interval = Duration::from_millis(10);
    let mut tasks = Vec::new();
    for _ in 0..3 {
        // Each its own connection, as each process has.
        let c = coordinator(&server, "fp-spacing").await;
        tasks.push(tokio::spawn(async move {
            let mut at = Vec::new();
            for _ in 0..10 {
                match c.acquire(interval, Allowances::default()).await {
                    Ok(Ok(t)) => at.push(t),
                    other => panic!("{other:?}"),
                }
            }
            at
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all.sort_unstable();
    assert_eq!(all.len(), 30);
    for pair in all.windows(2) {
        assert!(
            pair[1] - pair[0] >= interval.as_micros() as i64,
            "two grants {} µs apart",
            pair[1] - pair[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_allowance_is_spent_exactly_once_by_the_whole_fleet() {
    let server = RedisServer::start().await;
    let allow = Allowances {
        day: Some(25),
        ..Allowances::default()
    };
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let c = coordinator(&server, "fp-day").await;
        tasks.push(tokio::spawn(async move {
            let mut granted = 0u64;
            loop {
                match c.grant(Duration::ZERO, allow).await.expect("grant") {
                    Answer::Granted { .. } => granted += 1,
                    Answer::Exhausted { window, resets_at } => return (granted, window, resets_at),
                    Answer::Wait(_) => {}
                }
            }
        }));
    }
    let mut total = 0;
    let c = coordinator(&server, "fp-day").await;
    for t in tasks {
        let (granted, window, resets_at) = t.await.expect("task");
        total += granted;
        assert_eq!(window, Window::Day);
        assert_eq!(resets_at % 86_400, 0, "a UTC midnight");
    }
    assert_eq!(total, 25, "no more, no less than the allowance");
    let spent = c.spent().await.expect("spent");
    assert_eq!((spent.day, spent.hour, spent.month), (25, 25, 25));
    // Another key's fleet has its own books.
    let other = coordinator(&server, "fp-other").await;
    assert!(matches!(
        other.grant(Duration::ZERO, allow).await.expect("grant"),
        Answer::Granted { .. }
    ));
}

#[tokio::test]
async fn the_scripts_calendar_knows_month_ends_and_leap_years() {
    let server = RedisServer::start().await;
    let client = redis::Client::open(server.url()).expect("url");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    let check = redis::Script::new(CALENDAR_CHECK);
    let day = |y: i32, m: u32, d: u32| {
        // Days since 1970-01-01, by chrono-free arithmetic on a known date.
        let date = std::time::UNIX_EPOCH
            + Duration::from_secs(0)
            + Duration::from_secs(86_400 * days_from_civil(y, m, d) as u64);
        date.duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
            / 86_400
    };
    for (y, m, d, next) in [
        (2026, 11, 30, (2026, 12, 1)),
        (2026, 12, 31, (2027, 1, 1)),
        (2028, 2, 29, (2028, 3, 1)),
        (2027, 2, 28, (2027, 3, 1)),
        (2100, 2, 28, (2100, 3, 1)),
    ] {
        let (yy, mm, first): (i64, i64, i64) = check
            .arg(day(y, m, d))
            .invoke_async(&mut con)
            .await
            .expect("script");
        assert_eq!((yy, mm), (i64::from(y), i64::from(m)), "{y}-{m}-{d}");
        assert_eq!(first as u64, day(next.0, next.1, next.2), "after {y}-{m}");
    }
}

/// Days since 1970-01-01 of a civil date (the test's own, to check the script's).
fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(if m <= 2 { y - 1 } else { y });
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[tokio::test]
async fn every_key_in_redis_is_named_by_the_fingerprint() {
    let server = RedisServer::start().await;
    let c = coordinator(&server, "5f1e2d3c4b5a6978").await;
    for _ in 0..3 {
        c.grant(Duration::from_micros(1), Allowances::default())
            .await
            .expect("grant");
    }
    let client = redis::Client::open(server.url()).expect("url");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut con)
        .await
        .expect("keys");
    let keys: BTreeSet<String> = keys.into_iter().collect();
    assert!(keys.len() >= 4, "{keys:?}");
    assert!(
        keys.iter()
            .all(|k| k.starts_with("vtbulk:5f1e2d3c4b5a6978:")),
        "{keys:?}"
    );
    assert_eq!(c.prefix(), "vtbulk:5f1e2d3c4b5a6978");
}

#[tokio::test]
async fn an_unreachable_redis_is_a_clear_error_at_once() {
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let err = Coordinator::connect(
        &format!("redis://127.0.0.1:{port}/0"),
        "fp",
        Duration::from_secs(5),
    )
    .await
    .expect_err("nothing listens");
    assert!(matches!(err, CoordError::Unreachable(_)), "{err}");
    let bad = Coordinator::connect("http://127.0.0.1/", "fp", Duration::from_secs(1))
        .await
        .expect_err("not a Redis URL");
    assert!(matches!(bad, CoordError::Url(_)), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_is_held_until_its_request_left_and_the_next_is_an_interval_after() {
    use vtbulk_coord::Seeds;
    let server = RedisServer::start().await;
    let interval = Duration::from_millis(10);
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let c = coordinator(&server, "fp-turn").await;
        tasks.push(tokio::spawn(async move {
            let mut left = Vec::new();
            for _ in 0..8 {
                let turn = c
                    .acquire_turn(interval, Allowances::default(), Seeds::default())
                    .await
                    .expect("redis")
                    .expect("no window spent");
                // The request "leaves" a moment after the grant, as a busy host's would.
                tokio::task::yield_now().await;
                left.push(std::time::Instant::now());
                c.departed(turn, tokio::time::Instant::now(), interval)
                    .await
                    .expect("departed");
            }
            left
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all.sort_unstable();
    assert_eq!(all.len(), 24);
    for pair in all.windows(2) {
        assert!(
            pair[1] - pair[0] >= interval,
            "{:?} apart",
            pair[1] - pair[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_start_from_what_virustotal_said_was_used() {
    use vtbulk_coord::Seeds;
    let server = RedisServer::start().await;
    let c = coordinator(&server, "fp-seeds").await;
    let allow = Allowances {
        day: Some(10),
        ..Allowances::default()
    };
    let seeds = Seeds {
        hour: 3,
        day: 8,
        month: 100,
    };
    let mut granted = 0;
    loop {
        match c
            .acquire_turn(Duration::ZERO, allow, seeds)
            .await
            .expect("redis")
        {
            Ok(turn) => {
                granted += 1;
                c.departed(turn, tokio::time::Instant::now(), Duration::ZERO)
                    .await
                    .expect("departed");
            }
            Err((window, _)) => {
                assert_eq!(window, Window::Day);
                break;
            }
        }
    }
    assert_eq!(granted, 2, "10 allowed, 8 used by others before");
    let spent = c.spent().await.expect("spent");
    assert_eq!((spent.hour, spent.day, spent.month), (5, 10, 102));
}
