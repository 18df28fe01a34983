//! The coordinator against a real `redis-server` (Debian's package; `.ci/run` installs it),
//! started by this harness on a free loopback port and stopped with it: several connections
//! sharing one key's pace and budgets, the calendar the scripts compute, the key names, and
//! an unreachable server.

use std::collections::BTreeSet;
use std::time::Duration;

use vtbulk_coord::test_server::RedisServer;
use vtbulk_coord::{
    Allowances, Answer, CALENDAR_CHECK, CoordError, Coordinator, Endpoint, Seeds, Subject, Window,
};

async fn coordinator(server: &RedisServer, fingerprint: &str) -> Coordinator {
    let endpoint = Endpoint::parse(&server.url(), None).expect("url");
    Coordinator::connect(&endpoint, fingerprint, Duration::from_secs(5))
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
    let endpoint = Endpoint::parse(&format!("redis://127.0.0.1:{port}/0"), None).expect("url");
    let err = Coordinator::connect(&endpoint, "fp", Duration::from_secs(5))
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, CoordError::Unreachable(_)), "{err}");
    let bad = Endpoint::parse("http://127.0.0.1/", None).expect_err("not a Redis URL");
    assert!(matches!(bad, CoordError::Url(_)), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_is_held_until_its_request_left_and_the_next_is_an_interval_after() {
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

/// The Redis script calls (`EVALSHA`, and `EVAL` when a script was not cached yet) so far.
async fn script_calls(server: &RedisServer) -> u64 {
    let client = redis::Client::open(server.url()).expect("client");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut con)
        .await
        .expect("info");
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_a_high_rate_leases_share_the_slots_with_a_grant_per_lease_not_per_request() {
    let server = RedisServer::start().await;
    let interval = Duration::from_millis(1);
    assert_eq!(vtbulk_coord::lease_size(interval), 50);
    assert_eq!(vtbulk_coord::lease_size(Duration::from_millis(100)), 1);
    let before = script_calls(&server).await;
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let c = coordinator(&server, "fp-lease").await;
        tasks.push(tokio::spawn(async move {
            let mut slots = Vec::new();
            for _ in 0..100 {
                match c
                    .acquire_slot(interval, Allowances::default(), Seeds::default())
                    .await
                {
                    Ok(Ok(slot)) => {
                        slots.push(slot.at());
                        slot.departed(tokio::time::Instant::now());
                    }
                    other => panic!("{other:?}"),
                }
            }
            c.end_lease().await.expect("end");
            slots
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all.sort();
    // One process's clock for all three: the slots read from Redis's clock are never early,
    // so 300 slots one interval apart span at least 299 intervals less one round trip.
    let span = *all.last().expect("slots") - all[0];
    assert!(
        span >= Duration::from_millis(297),
        "300 slots in {span:?}: granted faster than the interval"
    );
    let calls = script_calls(&server).await - before;
    assert!(
        calls <= 60,
        "{calls} script calls for 300 slots: a lease should cover about 50"
    );
    // Every slot charged once, unused ones refunded at the end.
    let c = coordinator(&server, "fp-lease").await;
    assert_eq!(c.spent().await.expect("spent").day, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_ended_early_gives_its_slots_back_to_the_fleet_and_the_books() {
    let server = RedisServer::start().await;
    let interval = Duration::from_millis(1);
    // Two fleets (two keys): in one the holder gives its lease back, in the other not.
    for (fingerprint, give_back) in [("fp-back", true), ("fp-kept", false)] {
        let holder = coordinator(&server, fingerprint).await;
        let other = coordinator(&server, fingerprint).await;
        let leased_at = std::time::Instant::now();
        holder
            .acquire_slot(interval, Allowances::default(), Seeds::default())
            .await
            .expect("redis")
            .expect("slot");
        if give_back {
            holder.end_lease().await.expect("end");
        }
        let spent = other.spent().await.expect("spent").day;
        let asked = other.grant(interval, Allowances::default()).await;
        // The kept lease's 50 slots run 49 ms from when it was taken: the other waits for its
        // end (a busy host may ask so late that the lease has run out: then it is granted).
        let since = leased_at.elapsed();
        match asked {
            Ok(Answer::Granted { .. }) => assert!(
                give_back || since >= Duration::from_millis(45),
                "granted {since:?} after a lease of 49 ms was taken: its slots were not held"
            ),
            Ok(Answer::Wait(d)) if give_back => {
                assert!(
                    d < Duration::from_millis(5),
                    "49 slots not given back: {d:?}"
                );
            }
            Ok(Answer::Wait(d)) => {
                assert!(
                    d + since >= Duration::from_millis(45),
                    "the lease held only {:?}",
                    d + since
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(spent, if give_back { 1 } else { 50 }, "{fingerprint}");
    }
}

#[tokio::test]
async fn a_lease_is_no_bigger_than_what_the_window_has_left_and_a_429_is_refunded() {
    let server = RedisServer::start().await;
    let c = coordinator(&server, "fp-lease-day").await;
    let allow = Allowances {
        day: Some(5),
        ..Allowances::default()
    };
    let interval = Duration::from_millis(1);
    for i in 0..5 {
        let slot = c
            .acquire_slot(interval, allow, Seeds::default())
            .await
            .expect("redis");
        assert!(slot.is_ok(), "slot {i}: {slot:?}");
    }
    let sixth = c
        .acquire_slot(interval, allow, Seeds::default())
        .await
        .expect("redis");
    assert!(
        matches!(sixth, Err((Window::Day, _))),
        "a sixth slot of a day of 5: {sixth:?}"
    );
    assert_eq!(c.spent().await.expect("spent").day, 5);
    // One of them drew a 429 (nothing spent): refunded, it can be spent again.
    c.refund().await.expect("refund");
    assert_eq!(c.spent().await.expect("spent").day, 4);
    let again = c
        .acquire_slot(interval, allow, Seeds::default())
        .await
        .expect("redis");
    assert!(again.is_ok(), "{again:?}");
    assert_eq!(c.spent().await.expect("spent").day, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_never_given_back_blocks_the_fleet_only_until_its_lease_ends() {
    let server = RedisServer::start().await;
    let interval = Duration::from_millis(50);
    let holder = coordinator(&server, "fp-dead").await;
    let other = coordinator(&server, "fp-dead").await;
    // The holder takes the turn and dies before its request leaves (never departs).
    let turn = holder
        .acquire_turn(interval, Allowances::default(), Seeds::default())
        .await
        .expect("redis")
        .expect("turn");
    drop((turn, holder));
    let asked = tokio::time::Instant::now();
    let next = tokio::time::timeout(
        vtbulk_coord::LEASE * 5,
        other.acquire_turn(interval, Allowances::default(), Seeds::default()),
    )
    .await
    .expect("the fleet was blocked for good by a dead holder")
    .expect("redis");
    assert!(next.is_ok(), "{next:?}");
    let waited = asked.elapsed();
    assert!(
        waited >= vtbulk_coord::LEASE / 2,
        "granted after {waited:?}: the dead holder's turn was not held"
    );
}

#[tokio::test]
async fn a_password_and_tls_are_honoured_and_the_password_is_never_in_an_error() {
    use vtbulk_coord::test_server::Options;
    const PASSWORD: &str = "CanaryRedisPass-5e1";
    let server = RedisServer::start_with(Options {
        password: Some(PASSWORD.into()),
        tls: false,
    })
    .await;
    // From elsewhere (a file, the environment), and in the URL.
    let given = Endpoint::parse(&server.url(), Some(PASSWORD.into())).expect("url");
    let c = Coordinator::connect(&given, "fp-auth", Duration::from_secs(5))
        .await
        .expect("the right password");
    c.spent().await.expect("a command");
    let url = server
        .url()
        .replace("redis://", &format!("redis://:{PASSWORD}@"));
    let in_url = Endpoint::parse(&url, None).expect("url");
    Coordinator::connect(&in_url, "fp-auth", Duration::from_secs(5))
        .await
        .expect("the password in the URL");
    // Wrong or missing: a clear error that shows no password.
    let wrong_url = server
        .url()
        .replace("redis://", "redis://:CanaryWrongPass-77@");
    for endpoint in [
        Endpoint::parse(&server.url(), None).expect("url"),
        Endpoint::parse(&wrong_url, None).expect("url"),
    ] {
        let shown = format!("{endpoint:?}");
        let result = Coordinator::connect(&endpoint, "fp-auth", Duration::from_secs(5)).await;
        // Redis may accept the connection and refuse the first command instead.
        let err = match result {
            Err(e) => e.to_string(),
            Ok(c) => c.spent().await.expect_err("no password").to_string(),
        };
        for text in [&err, &shown] {
            assert!(
                !text.contains(PASSWORD) && !text.contains("CanaryWrongPass"),
                "{text}"
            );
        }
        assert!(
            err.to_lowercase().contains("auth")
                || err.contains("NOAUTH")
                || err.contains("WRONGPASS"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_claim_is_awaited_while_its_holder_lives_and_taken_over_once_it_is_dead() {
    use vtbulk_coord::{Claim, Member};
    let server = RedisServer::start().await;
    let holder = coordinator(&server, "fp-claim").await;
    let other = coordinator(&server, "fp-claim").await;
    let me = Member {
        host: "h".into(),
        pid: 1,
        ..Member::default()
    };
    holder.heartbeat(&me).await.expect("heartbeat");
    let lease = Duration::from_secs(30);
    assert_eq!(
        holder
            .answer_or_claim(&Subject::File("aa".into()), lease)
            .await
            .expect("redis"),
        Claim::Claimed
    );
    assert_eq!(
        other
            .answer_or_claim(&Subject::File("aa".into()), lease)
            .await
            .expect("redis"),
        Claim::Busy,
        "a live holder's claim is awaited"
    );
    // The holder is killed: its liveness lapses (as its expiry would, 5 s on).
    let client = redis::Client::open(server.url()).expect("client");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    let alive: Vec<String> = redis::cmd("KEYS")
        .arg("vtbulk:fp-claim:alive:*")
        .query_async(&mut con)
        .await
        .expect("keys");
    assert_eq!(alive.len(), 1, "{alive:?}");
    let _: () = redis::cmd("DEL")
        .arg(&alive)
        .query_async(&mut con)
        .await
        .expect("del");
    assert_eq!(
        other
            .answer_or_claim(&Subject::File("aa".into()), lease)
            .await
            .expect("redis"),
        Claim::Claimed,
        "a dead holder's claim is taken over"
    );
    other
        .publish(
            &[Subject::File("aa".into())],
            b"404",
            Duration::from_secs(60),
        )
        .await
        .expect("publish");
    assert_eq!(
        holder
            .answer_or_claim(&Subject::File("aa".into()), lease)
            .await
            .expect("redis"),
        Claim::Answer(b"404".to_vec())
    );
}

#[tokio::test]
async fn a_leased_slot_is_spaced_from_the_last_request_s_departure_and_skipped_slots_refunded() {
    let server = RedisServer::start().await;
    let c = coordinator(&server, "fp-depart").await;
    let interval = Duration::from_millis(2);
    let take = || c.acquire_slot(interval, Allowances::default(), Seeds::default());
    let first = take().await.expect("redis").expect("slot");
    let at = first.at();
    // Its request left 3 ms late (a busy host): the next may not follow it within 2 ms.
    let departure = at + Duration::from_millis(3);
    first.departed(departure);
    let second = take().await.expect("redis").expect("slot");
    assert!(
        second.at() >= departure + interval,
        "{:?} after a departure {:?} after its slot",
        second.at() - at,
        departure - at
    );
    drop(second);
    // The slots passed over meanwhile were never used: only the two are on the books.
    c.end_lease().await.expect("end");
    assert_eq!(c.spent().await.expect("spent").day, 2);
}
