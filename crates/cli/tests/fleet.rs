//! Several vtbulk processes sharing one key through a real Redis (`--coordinator`): together
//! they keep one pace (never the sum of theirs), share their books and their answers, survive
//! a restarted or lost Redis and a killed member, and leave the key nowhere in Redis.
//!
//! What is asserted is what the design guarantees whatever the host's load: the fleet's books,
//! each lookup paid once, every input in the output once, and a pace that can only be slower
//! than the key's rate (the span of the mock's arrivals, with a second of slack for one late
//! arrival). That the pace holds to the millisecond against a strict limiter (0 x 429, within
//! 2% of the ideal) is a timing promise, proven by `benches/fleet.sh` and `benches/strict.sh`,
//! not here.

use std::path::{Path, PathBuf};

use vtbulk_coord::test_server::RedisServer;
use vtbulk_mock::{KeyConfig, MockConfig, MockServer};

const CANARY: &str = "CANARY-fleet-7d1c-this-key-must-never-be-shown";

use crate::common::{known_list, temp};

/// `vtbulk ARGS` with the canary key, isolated.
fn command(args: &[&str]) -> tokio::process::Command {
    let mut cmd = crate::common::vtbulk();
    cmd.args(args).env("VT_API_KEY", CANARY);
    cmd
}

fn vtbulk(url: &str, input: &Path, coordinator: &str, rate: &str) -> tokio::process::Command {
    let mut cmd = command(&["enrich", "--format", "ndjson", "--quiet", "--cache", "off"]);
    cmd.args(["--tier", "unlimited", "--rate", rate])
        .arg(input)
        .args(["--api-url", url, "--coordinator", coordinator]);
    cmd
}

/// vt-mock with the canary key, no limit: the fleet's pace is read from its arrivals.
async fn open_mock() -> MockServer {
    MockServer::start(MockConfig::with_keys(vec![KeyConfig::unlimited(CANARY)]))
        .await
        .expect("mock")
}

/// The span of the mock's arrivals, first to last (ms).
fn arrival_span(mock: &MockServer) -> i64 {
    let stats = mock.stats(true);
    let times: Vec<i64> = stats.log.iter().flatten().map(|e| e.t_ms).collect();
    times.iter().max().copied().unwrap_or(0) - times.iter().min().copied().unwrap_or(0)
}

/// List `p` of `count` distinct hashes the mock knows (lists of different `p` do not
/// overlap).
fn list(mock: &MockServer, dir: &Path, p: u64, count: u64) -> PathBuf {
    known_list(mock, dir, &format!("list-{p}.txt"), p * 100_000, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_one_key_share_its_rate_through_redis() {
    let redis = RedisServer::start().await;
    let mock = open_mock().await;
    let url = mock.url();
    let dir = temp("three");
    let mut runs = Vec::new();
    for p in 0..3u64 {
        let list = list(&mock, &dir, p, 20);
        runs.push(vtbulk(&url, &list, &redis.url(), "600/min").output());
    }
    let runs: Vec<_> = runs.into_iter().map(tokio::spawn).collect();
    // While they run (once the mock has seen a few of their requests): `vtbulk fleet` lists
    // the three.
    mock.wait_for(|s| s.total >= 12).await;
    let during = fleet_view(&redis.url()).await;
    let members = during["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{during}");
    assert!(members.iter().all(|m| m["pid"].as_u64().is_some()));
    let mut outs = Vec::new();
    for run in runs {
        outs.push(run.await.expect("task"));
    }
    for out in outs {
        let out = out.expect("runs");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines = String::from_utf8_lossy(&out.stdout).lines().count();
        assert_eq!(lines, 20);
        assert!(!String::from_utf8_lossy(&out.stderr).contains(CANARY));
    }
    // Done: they left, and the fleet's books hold the 60 lookups (`/users` is charged to no
    // window).
    let after = fleet_view(&redis.url()).await;
    assert_eq!(
        after["members"].as_array().map(Vec::len),
        Some(0),
        "{after}"
    );
    assert_eq!(after["spent"]["day"], 60, "{after}");
    assert_eq!(
        mock.stats(false).total,
        63,
        "60 lookups and three GET /users"
    );
    // One pace for the three: every request waits for the fleet's turn, spaced an interval
    // (100 ms) from the last departure of any of them, so the 63 arrivals span at least 62
    // intervals; a late arrival can shorten that by its delay (a second allowed here). Three
    // processes pacing alone would have finished in a third of it (about 2.1 s).
    let span = arrival_span(&mock);
    assert!(
        span >= 62 * 100 - 1000,
        "{span} ms for 63 requests at 600/min"
    );
    // The key is nowhere in Redis: not in a key name, not in a value.
    let client = redis::Client::open(redis.url()).expect("url");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut con)
        .await
        .expect("keys");
    assert!(
        keys.iter().any(|k| k.contains(":answer:")),
        "the fleet's answers are there to check: {keys:?}"
    );
    for key in &keys {
        assert!(!key.contains(CANARY), "{key}");
        // Values as bytes (the fleet's answers are gzipped), inflated when they are gzip.
        let value: Vec<u8> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut con)
            .await
            .expect("a string value");
        let mut text = value.clone();
        if value.starts_with(&[0x1f, 0x8b]) {
            text.clear();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&value[..]), &mut text)
                .expect("gzip");
        }
        assert!(
            !String::from_utf8_lossy(&text).contains(CANARY),
            "the key in the value of {key}"
        );
    }
    // `vtbulk quota` shows the same books beside the key's own (last: its own
    // `GET /users` would count in the mock's log above).
    let quota = command(&[
        "quota",
        "--json",
        "--coordinator",
        &redis.url(),
        "--api-url",
        &url,
    ])
    .output()
    .await
    .expect("vtbulk quota");
    let q: serde_json::Value = serde_json::from_slice(&quota.stdout).expect("quota json");
    assert_eq!(q["fleet"]["spent"]["day"], 60, "{q}");
    assert!(!String::from_utf8_lossy(&quota.stdout).contains(CANARY));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_given_the_same_list_pay_for_each_hash_once() {
    let redis = RedisServer::start().await;
    let mock = MockServer::start(MockConfig::with_keys(vec![KeyConfig::unlimited(CANARY)]))
        .await
        .expect("mock");
    let url = mock.url();
    let dir = temp("same-list");
    let list = dir.join("list.txt");
    let u = mock.universe();
    let mut text = String::new();
    for i in 0..30 {
        text.push_str(&format!("{}\n", u.hashes(i).md5));
    }
    for i in 0..10 {
        text.push_str(&format!(
            "{}\n",
            u.unknown_hash(vtbulk_ioc::HashKind::Sha256, i)
        ));
    }
    std::fs::write(&list, text).expect("list");
    let summaries: Vec<PathBuf> = (0..2).map(|i| dir.join(format!("s{i}.json"))).collect();
    let runs: Vec<_> = summaries
        .iter()
        .map(|summary| {
            let mut cmd = vtbulk(&url, &list, &redis.url(), "unlimited");
            cmd.arg("--summary-json").arg(summary);
            cmd.output()
        })
        .collect();
    for out in futures_join(runs).await {
        let out = out.expect("runs");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(text.lines().count(), 40, "every hash in each output");
        assert_eq!(text.matches("\"status\":\"not_found\"").count(), 10);
    }
    // Each hash was asked of the API once, by one of the two.
    let stats = mock.stats(false);
    assert_eq!(stats.by_id.len(), 40);
    assert!(
        stats.by_id.values().all(|&n| n == 1),
        "a hash looked up twice: {:?}",
        stats.by_id.values().filter(|&&n| n > 1).count()
    );
    let answered: u64 = summaries
        .iter()
        .map(|s| {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(s).expect("summary")).expect("json");
            v["fleet_answers"].as_u64().unwrap_or(0)
        })
        .sum();
    assert_eq!(
        answered, 40,
        "each record one process paid for, the other read"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_goes_on_when_redis_restarts_under_it() {
    let mut redis = RedisServer::start().await;
    let mock = MockServer::start(MockConfig::with_keys(vec![KeyConfig::unlimited(CANARY)]))
        .await
        .expect("mock");
    let dir = temp("restart");
    let list = dir.join("list.txt");
    let text: String = (0..30)
        .map(|i| format!("{}\n", mock.universe().hashes(i).sha256))
        .collect();
    std::fs::write(&list, text).expect("list");
    let run = tokio::spawn(vtbulk(&mock.url(), &list, &redis.url(), "1200/min").output());
    // Restarted (its state lost) once a third of the lookups were made.
    mock.wait_for(|s| s.total >= 10).await;
    redis.restart().await;
    let out = run.await.expect("task").expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(text.lines().count(), 30);
    assert_eq!(text.matches("\"status\":\"ok\"").count(), 30, "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_mid_run_leaves_the_others_to_finish_at_the_pace() {
    let redis = RedisServer::start().await;
    let mock = open_mock().await;
    let url = mock.url();
    let dir = temp("kill");
    let lists: Vec<PathBuf> = (0..2u64).map(|p| list(&mock, &dir, p, 15)).collect();
    let mut victim = vtbulk(&url, &lists[0], &redis.url(), "600/min")
        .spawn()
        .expect("spawn");
    let survivor = tokio::spawn(vtbulk(&url, &lists[1], &redis.url(), "600/min").output());
    // Killed mid-run, whatever it holds then (a turn, a claim).
    mock.wait_for(|s| s.total >= 8).await;
    victim.start_kill().expect("kill");
    let _ = victim.wait().await;
    let out = survivor.await.expect("task").expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(text.lines().count(), 15, "the survivor finished its list");
    assert_eq!(text.matches("\"status\":\"ok\"").count(), 15, "{text}");
    // Whatever the victim held when it died (a turn, a claim), the fleet went on at one pace:
    // the survivor's 15 lookups and /users, after the victim's 8 and more, span at least the
    // intervals between them (a second of slack for a late arrival).
    let total = mock.stats(false).total as i64;
    let span = arrival_span(&mock);
    assert!(
        span >= (total - 1) * 100 - 1000,
        "{span} ms for {total} requests at 600/min"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_unreachable_coordinator_stops_the_run_before_anything_is_spent() {
    let mock = MockServer::start(MockConfig::with_keys(vec![KeyConfig::unlimited(CANARY)]))
        .await
        .expect("mock");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let dir = temp("unreachable");
    let list = dir.join("list.txt");
    std::fs::write(&list, format!("{}\n", mock.universe().hashes(1).sha256)).expect("list");
    let out = vtbulk(
        &mock.url(),
        &list,
        &format!("redis://127.0.0.1:{port}/0"),
        "600/min",
    )
    .output()
    .await
    .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("coordinator (Redis) cannot be reached"),
        "{stderr}"
    );
    assert_eq!(mock.stats(false).total, 0, "nothing was sent");
    // With a fallback, it runs alone at that share of the rate, and says so.
    let summary = dir.join("summary.json");
    let out = vtbulk(
        &mock.url(),
        &list,
        &format!("redis://127.0.0.1:{port}/0"),
        "600/min",
    )
    .args([
        "--coordinator-fallback",
        "local-share=0.5",
        "--summary-json",
    ])
    .arg(&summary)
    .output()
    .await
    .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).expect("summary")).expect("json");
    assert!(
        s["coordinator"]
            .as_str()
            .is_some_and(|c| c.contains("running alone at 50% of the rate")),
        "{s}"
    );
    assert_eq!(s["pacing"]["interval_ms"], 200.0, "600/min halved");
    assert_eq!(s["ok"], 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `vtbulk fleet --json` for the canary key's fleet.
async fn fleet_view(coordinator: &str) -> serde_json::Value {
    let out = command(&["fleet", "--json", "--coordinator", coordinator])
        .output()
        .await
        .expect("vtbulk fleet");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!text.contains(CANARY));
    serde_json::from_str(&text).expect("json")
}

/// Awaits every future, in order.
async fn futures_join<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

/// The run exited 7 with its stop line, and every one of its `count` inputs is in the output
/// once: looked up, or skipped for the lost coordinator; (ok, skipped).
fn stopped_as_lost(out: &std::process::Output, count: usize) -> (usize, usize) {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert!(
        stderr.contains("the coordinator (Redis) was lost"),
        "{stderr}"
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(text.lines().count(), count, "{text}");
    let ok = text.matches("\"status\":\"ok\"").count();
    let skipped = text.matches("\"error_code\":\"coordinator_lost\"").count();
    assert_eq!(ok + skipped, count, "ok {ok}, skipped {skipped}");
    (ok, skipped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lost_for_good_stops_the_run_with_exit_7_and_nothing_leaves_blind() {
    let mut redis = RedisServer::start().await;
    let mock = MockServer::start(MockConfig::with_keys(vec![KeyConfig::unlimited(CANARY)]))
        .await
        .expect("mock");
    let dir = temp("lost");
    let list = list(&mock, &dir, 0, 40);
    let summary = dir.join("summary.json");
    let run = tokio::spawn(
        vtbulk(&mock.url(), &list, &redis.url(), "300/min")
            .args(["--coordinator-grace", "2s", "--summary-json"])
            .arg(&summary)
            .output(),
    );
    mock.wait_for(|s| s.total >= 6).await;
    // Counted once Redis is gone (stopping it takes a while on a busy host, and requests
    // leave with its grants until then).
    redis.stop().await;
    let before = mock.stats(false).total;
    let out = run.await.expect("task").expect("runs");
    // At 300/min, two seconds blind would have been ten requests: only a turn granted before
    // Redis went (and the one being granted then) may have left after.
    let after = mock.stats(false).total;
    assert!(
        after - before <= 2,
        "{} requests left blind",
        after - before
    );
    let (ok, skipped) = stopped_as_lost(&out, 40);
    assert!(skipped > 0 && ok >= 5, "ok {ok}, skipped {skipped}");
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).expect("summary")).expect("json");
    assert_eq!(s["outcome"], "coordinator_lost", "{s}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_hangs_under_a_long_list_stops_the_run_as_lost_with_every_item_once() {
    let mut redis = RedisServer::start().await;
    let mock = open_mock().await;
    let dir = temp("frozen");
    let list = list(&mock, &dir, 0, 2000);
    let run = tokio::spawn(
        vtbulk(&mock.url(), &list, &redis.url(), "1200/min")
            .args(["--coordinator-grace", "2s"])
            .output(),
    );
    mock.wait_for(|s| s.total >= 6).await;
    // Frozen, not gone: every call to it waits instead of failing.
    redis.freeze();
    let out = run.await.expect("task").expect("runs");
    let (ok, skipped) = stopped_as_lost(&out, 2000);
    assert!(skipped > 1000, "ok {ok}, skipped {skipped}");
    redis.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_while_holding_a_lease_leaves_the_others_to_finish_and_loses_nothing() {
    let redis = RedisServer::start().await;
    let mock = MockServer::start(MockConfig::with_keys(vec![KeyConfig::unlimited(CANARY)]))
        .await
        .expect("mock");
    let url = mock.url();
    let dir = temp("lease-kill");
    // The victim's list takes ~7 s at the rate, so it is seen holding a lease long before it
    // could finish (300 took 1.5 s, and a loaded host once missed it).
    let lists: Vec<PathBuf> = [(0u64, 1500u64), (1, 300)]
        .iter()
        .map(|&(p, n)| list(&mock, &dir, p, n))
        .collect();
    let cache = dir.join("victim.sqlite");
    // 12,000/min: an interval of 5 ms, leases of 4 slots.
    let victim_cmd = || {
        let mut cmd = command(&["enrich", "--format", "ndjson", "--quiet"]);
        cmd.args(["--tier", "unlimited", "--rate", "12000/min", "--cache"])
            .arg(&cache)
            .arg("-o")
            .arg(dir.join("victim.ndjson"))
            .arg(&lists[0])
            .args(["--api-url", &url, "--coordinator", &redis.url()]);
        cmd
    };
    let mut victim = victim_cmd().spawn().expect("spawn");
    let survivor = tokio::spawn(vtbulk(&url, &lists[1], &redis.url(), "12000/min").output());
    // Killed once `vtbulk fleet` shows it holding leased slots.
    let pid = victim.id().expect("pid");
    loop {
        let view = fleet_view(&redis.url()).await;
        let holds = view["members"].as_array().is_some_and(|m| {
            m.iter()
                .any(|m| m["pid"] == pid && m["leased"].as_u64().is_some_and(|n| n > 0))
        });
        if holds {
            break;
        }
        assert!(
            victim.try_wait().expect("wait").is_none(),
            "the victim finished before it was seen holding a lease"
        );
    }
    victim.start_kill().expect("kill");
    let _ = victim.wait().await;
    let out = survivor.await.expect("task").expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        text.matches("\"status\":\"ok\"").count(),
        300,
        "the survivor finished"
    );
    // Nothing lost: the victim's list, run again on its cache, comes out whole (its dead
    // claims are taken over, its lease's slots are simply gone).
    let out = victim_cmd().output().await.expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(dir.join("victim.ndjson")).expect("output");
    assert_eq!(text.matches("\"status\":\"ok\"").count(), 1500);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_from_a_file_or_the_environment_and_tls_with_its_ca_reach_redis_unshown() {
    use vtbulk_coord::test_server::Options;
    const PASSWORD: &str = "CanaryRedisPass-fleet-93a";
    let redis = RedisServer::start_with(Options {
        password: Some(PASSWORD.into()),
        tls: true,
    })
    .await;
    let ca = redis.ca_file().expect("ca");
    let mock = MockServer::start(MockConfig::with_keys(vec![KeyConfig::unlimited(CANARY)]))
        .await
        .expect("mock");
    let dir = temp("auth");
    let list = list(&mock, &dir, 0, 3);
    let password_file = dir.join("redis-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).expect("password file");
    let url = redis.url();
    assert!(url.starts_with("rediss://"));
    let check = |out: &std::process::Output, code: i32| {
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(code), "{all}");
        assert!(!all.contains(PASSWORD), "the password was shown: {all}");
        assert!(!all.contains(CANARY));
        all
    };
    // The CA trusted (the system's trust store, pointed at it), the password from a file.
    let mut cmd = vtbulk(&mock.url(), &list, &url, "600/min");
    cmd.env("SSL_CERT_FILE", &ca)
        .arg("--coordinator-password-file")
        .arg(&password_file);
    let all = check(&cmd.output().await.expect("runs"), 0);
    assert_eq!(all.matches("\"status\":\"ok\"").count(), 3, "{all}");
    // From the environment; `vtbulk config` shows the URL, never the password.
    let mut cmd = vtbulk(&mock.url(), &list, &url, "600/min");
    cmd.env("SSL_CERT_FILE", &ca)
        .env("VTBULK_REDIS_PASSWORD", PASSWORD);
    check(&cmd.output().await.expect("runs"), 0);
    let in_url = url.replace("rediss://", &format!("rediss://:{PASSWORD}@"));
    let out = command(&["config", "--coordinator", &in_url])
        .output()
        .await
        .expect("config");
    let shown = check(&out, 0);
    assert!(shown.contains("rediss://[redacted]@127.0.0.1"), "{shown}");
    // Without the CA the certificate is refused (never a fallback to plain text): exit 2;
    // without the password, refused too.
    let stranger = RedisServer::start_with(Options {
        password: None,
        tls: true,
    })
    .await;
    let mut cmd = vtbulk(&mock.url(), &list, &url, "600/min");
    cmd.env("SSL_CERT_FILE", stranger.ca_file().expect("another CA"))
        .env("VTBULK_REDIS_PASSWORD", PASSWORD);
    let all = check(&cmd.output().await.expect("runs"), 2);
    assert!(all.to_lowercase().contains("certificate"), "{all}");
    let mut cmd = vtbulk(&mock.url(), &list, &url, "600/min");
    cmd.env("SSL_CERT_FILE", &ca);
    check(&cmd.output().await.expect("runs"), 2);
    assert_eq!(
        mock.stats(false).total,
        5,
        "3 lookups and a /users, then a /users: the second run's answers came from Redis"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_raw_a_process_takes_only_whole_answers_from_the_fleet() {
    let redis = RedisServer::start().await;
    let mock = MockServer::start(MockConfig::with_keys(vec![KeyConfig::unlimited(CANARY)]))
        .await
        .expect("mock");
    let dir = temp("raw");
    let list = list(&mock, &dir, 0, 3);
    let run = |raw: bool| {
        let mut cmd = vtbulk(&mock.url(), &list, &redis.url(), "1200/min");
        if raw {
            cmd.arg("--raw");
        }
        cmd.output()
    };
    let requests = || mock.stats(false).total;
    // Published without the whole object: a `--raw` run looks the three up itself.
    let out = run(false).await.expect("runs");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(requests(), 4, "3 lookups and a /users");
    let out = run(true).await.expect("runs");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(requests(), 8, "looked up again for the whole objects");
    // Published with it (by the `--raw` run): the next `--raw` run takes them from Redis.
    let out = run(true).await.expect("runs");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(requests(), 9, "only its /users");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        assert_eq!(v["source"], "cache", "{line}");
        assert_eq!(v["raw"]["type"], "file", "the whole object: {line}");
        assert!(
            v["raw"]["attributes"]["last_analysis_results"].is_object(),
            "{line}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
