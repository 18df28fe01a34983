//! The cache as a journal, with real processes: a run killed with SIGKILL at several points
//! (by records seen, not by time) and run again gives the complete output at the price of at
//! most the in-flight requests; SIGTERM stops cleanly with exit 130; two processes share one
//! cache file; a foreign cache file is refused with exit 2 and left untouched.

use crate::common::temp;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use vtbulk_ioc::HashKind;
use vtbulk_mock::{MockConfig, MockServer};

/// Workers in flight in these runs: the bound on what a kill can cost.
const CONCURRENCY: u64 = 4;

/// A vt-mock, a fresh directory for `tag`, and the cache file path in it.
async fn setup(tag: &str) -> (MockServer, PathBuf, PathBuf) {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let dir = temp(tag);
    let cache = dir.join("cache.sqlite3");
    (mock, dir, cache)
}

/// 100 unique hashes (85 known, 15 unknown, mixed kinds) plus a few repeats and a junk line.
fn input(mock: &MockServer, dir: &Path, first: u64, count: u64) -> (PathBuf, usize) {
    let u = mock.universe();
    let mut lines = Vec::new();
    for i in first..first + count {
        let h = u.hashes(i);
        lines.push(match i % 3 {
            0 => h.md5,
            1 => h.sha1,
            _ => h.sha256,
        });
    }
    for n in 0..count / 6 {
        lines.push(u.unknown_hash(HashKind::Sha256, first + n));
    }
    let unique = lines.len();
    let mut text: String = lines.iter().map(|h| format!("{h}\n")).collect();
    text.push_str("not-a-hash\n");
    text.push_str(&format!("{}\n", lines[0]));
    let path = dir.join(format!("in-{first}-{count}.txt"));
    std::fs::write(&path, text).expect("write input");
    (path, unique)
}

fn command(url: &str, input: &Path, cache: &Path, rate: &str) -> tokio::process::Command {
    let mut cmd = crate::common::vtbulk();
    cmd.args([
        "enrich",
        "--format",
        "ndjson",
        "--quiet",
        "--tier",
        "unlimited",
    ])
    .arg(input)
    .args(["--api-url", url, "--rate", rate])
    .args(["--concurrency", &CONCURRENCY.to_string()])
    .arg("--cache")
    .arg(cache)
    .env("VT_API_KEY", "testkey");
    cmd
}

/// Records by input, without `source` (cache or api) and `first_origin`-independent.
/// File lookups the mock answered (each run also reads the key's quotas once).
fn lookups(mock: &MockServer) -> u64 {
    mock.stats(false).by_id.values().sum()
}

fn records(stdout: &[u8]) -> BTreeMap<String, serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("json line");
            let input = v["input"].as_str().expect("input").to_owned();
            if let Some(o) = v.as_object_mut() {
                o.remove("source");
            }
            (input, v)
        })
        .collect()
}

async fn complete_run(
    url: &str,
    input: &Path,
    cache: &Path,
) -> BTreeMap<String, serde_json::Value> {
    let out = command(url, input, cache, "unlimited")
        .output()
        .await
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    records(&out.stdout)
}

/// Starts a run and kills it with SIGKILL once `after` records have been read from it.
async fn killed_run(url: &str, input: &Path, cache: &Path, after: usize) -> usize {
    let mut child = command(url, input, cache, "100/s").spawn().expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = 0;
    while seen < after {
        match lines.next_line().await.expect("read") {
            Some(_) => seen += 1,
            None => break,
        }
    }
    child.start_kill().expect("kill");
    let status = child.wait().await.expect("wait");
    assert_eq!(
        status.code(),
        None,
        "killed by a signal, not finished: {status}"
    );
    seen
}

#[tokio::test]
async fn a_run_killed_at_any_point_and_run_again_is_complete_and_pays_at_most_what_was_in_flight() {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let url = mock.url();
    let dir = temp("kill");
    let (list, unique) = input(&mock, &dir, 0, 90);
    let expected = complete_run(&url, &list, &dir.join("baseline.sqlite3")).await;
    assert_eq!(
        expected.len(),
        unique + 1,
        "every unique hash and the junk line"
    );

    for after in [1, 30, 70] {
        mock.reset();
        let cache = dir.join(format!("cache-{after}.sqlite3"));
        let seen = killed_run(&url, &list, &cache, after).await;
        assert_eq!(seen, after, "the run was killed before it finished");
        let resumed = complete_run(&url, &list, &cache).await;
        assert_eq!(
            resumed, expected,
            "kill after {after} records: output differs"
        );
        let stats = mock.stats(false);
        assert!(
            lookups(&mock) <= unique as u64 + CONCURRENCY,
            "kill after {after}: {} requests for {unique} unique hashes",
            lookups(&mock)
        );
        assert!(
            stats.by_id.values().all(|&n| n <= 2),
            "no hash asked more than twice"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sigterm_stops_cleanly_with_exit_130_writing_everything_fetched() {
    let (mock, dir, cache) = setup("term").await;
    let url = mock.url();
    let (list, unique) = input(&mock, &dir, 200, 90);
    let mut child = command(&url, &list, &cache, "50/s").spawn().expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let pid = child.id().expect("pid");
    let reader = tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        let mut all = Vec::new();
        let mut signalled = false;
        while let Some(line) = lines.next_line().await.expect("read") {
            all.push(line);
            if all.len() == 10 && !signalled {
                let status = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .expect("kill");
                assert!(status.success());
                signalled = true;
            }
        }
        all
    });
    let status = child.wait().await.expect("wait");
    let lines = reader.await.expect("reader");
    assert_eq!(status.code(), Some(130));
    let got = records(lines.join("\n").as_bytes());
    assert_eq!(
        got.len(),
        unique + 1,
        "every input has a record, fetched or skipped"
    );
    let skipped = got.values().filter(|r| r["status"] == "skipped").count();
    assert!(skipped > 0, "the rest was recorded as skipped");
    assert!(got.values().all(|r| r["status"] != "error"));
    // What was fetched is in the cache: the next run asks only for the skipped ones.
    mock.reset();
    let resumed = complete_run(&url, &list, &cache).await;
    assert_eq!(resumed.len(), unique + 1);
    assert!(lookups(&mock) <= skipped as u64);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn two_processes_share_one_cache_file_and_both_outputs_are_complete() {
    let (mock, dir, cache) = setup("shared").await;
    let url = mock.url();
    let (a, unique_a) = input(&mock, &dir, 1000, 120);
    let (b, unique_b) = input(&mock, &dir, 1060, 120);
    let (ra, rb) = tokio::join!(
        command(&url, &a, &cache, "unlimited").output(),
        command(&url, &b, &cache, "unlimited").output()
    );
    for (out, unique) in [(ra.expect("a"), unique_a), (rb.expect("b"), unique_b)] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(!stderr.contains("locked"), "{stderr}");
        let got = records(&out.stdout);
        assert_eq!(got.len(), unique + 1);
        assert!(
            got.values()
                .all(|r| r["status"] != "error" && r["status"] != "skipped")
        );
    }
    // Both runs' answers are in the one file: a third run over both lists asks nothing.
    mock.reset();
    complete_run(&url, &a, &cache).await;
    complete_run(&url, &b, &cache).await;
    assert_eq!(lookups(&mock), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A vt-mock whose every answer takes `delay` (it counts a request when it arrives).
async fn slow_mock(delay: std::time::Duration) -> MockServer {
    MockServer::start(MockConfig {
        latency: vtbulk_mock::Latency::Fixed { delay },
        ..MockConfig::default()
    })
    .await
    .expect("mock")
}

fn write_list(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .expect("write list");
    path
}

/// Waits until `child`'s request for `id` has reached `mock` (a child that exits first is
/// a failure, not a hang).
async fn out_for(mock: &MockServer, child: &mut tokio::process::Child, id: &str) {
    tokio::select! {
        () = mock.wait_for(|s| s.by_id.contains_key(id)) => {}
        status = child.wait() => panic!("exited before asking for {id}: {status:?}"),
    }
}

fn summary(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("summary")).expect("summary json")
}

#[tokio::test]
async fn two_runs_on_overlapping_lists_sharing_a_cache_pay_once_for_the_overlap() {
    // The probe's case: two processes started together on lists with a common part paid
    // for it twice (each checked the cache once, before the other had answered anything).
    let mock = slow_mock(std::time::Duration::from_millis(20)).await;
    let dir = temp("overlap");
    let cache = dir.join("cache.sqlite3");
    let u = mock.universe();
    let known = |i: u64| u.hashes(i).sha256.to_string();
    let unknown = |i: u64| u.unknown_hash(HashKind::Sha256, i).to_string();
    // The common part first in both lists, so both reach it at once.
    let common: Vec<String> = (5000..5120)
        .map(known)
        .chain((0..30).map(unknown))
        .collect();
    let a: Vec<String> = common
        .iter()
        .cloned()
        .chain((5200..5300).map(known))
        .collect();
    let b: Vec<String> = common
        .iter()
        .cloned()
        .chain((30..60).map(unknown))
        .collect();
    let unique = common.len() + 100 + 30;
    let (list_a, list_b) = (write_list(&dir, "a.txt", &a), write_list(&dir, "b.txt", &b));
    let (sum_a, sum_b) = (dir.join("a.json"), dir.join("b.json"));
    let url = mock.url();
    let mut run_a = command(&url, &list_a, &cache, "unlimited");
    run_a.arg("--summary-json").arg(&sum_a);
    let mut run_b = command(&url, &list_b, &cache, "unlimited");
    run_b.arg("--summary-json").arg(&sum_b);
    let (ra, rb) = tokio::join!(run_a.output(), run_b.output());
    for (out, list) in [(ra.expect("a"), &a), (rb.expect("b"), &b)] {
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = records(&out.stdout);
        assert_eq!(got.len(), list.len(), "one record per input");
        assert!(
            got.values()
                .all(|r| r["status"] == "ok" || r["status"] == "not_found")
        );
    }
    // Every IOC once, whoever paid for it.
    let stats = mock.stats(false);
    let twice: Vec<_> = stats.by_id.iter().filter(|&(_, &n)| n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} looked up more than once, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(3)]
    );
    assert_eq!(lookups(&mock), unique as u64);
    // The common part came from the cache in one of the two runs, IOC by IOC.
    let (sa, sb) = (summary(&sum_a), summary(&sum_b));
    let hits = |s: &serde_json::Value| s["cache_hits"].as_u64().unwrap_or(0);
    assert_eq!(hits(&sa) + hits(&sb), common.len() as u64, "{sa}\n{sb}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_lookup_another_process_is_making_is_waited_for_and_its_answer_taken() {
    // A's request is held 3 s by its mock; B (its own mock, answering at once) reaches the
    // same hash while A's request is out: B waits for A's answer instead of paying again.
    let slow = slow_mock(std::time::Duration::from_secs(3)).await;
    let fast = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let dir = temp("claimed");
    let cache = dir.join("cache.sqlite3");
    let x = slow.universe().hashes(7001).sha256.to_string();
    let others: Vec<String> = (7100..7110)
        .map(|i| fast.universe().hashes(i).sha256.to_string())
        .collect();
    let list_a = write_list(&dir, "a.txt", std::slice::from_ref(&x));
    let list_b = write_list(&dir, "b.txt", &[vec![x.clone()], others.clone()].concat());
    let mut a = command(&slow.url(), &list_a, &cache, "unlimited")
        // No quota read first: its mock would hold that too.
        .arg("--offline-quota")
        .spawn()
        .expect("spawn a");
    out_for(&slow, &mut a, &x).await;
    let sum_b = dir.join("b.json");
    let mut run_b = command(&fast.url(), &list_b, &cache, "unlimited");
    run_b.arg("--summary-json").arg(&sum_b);
    let out_b = run_b.output().await.expect("b");
    let out_a = a.wait_with_output().await.expect("a");
    assert_eq!(
        out_a.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out_a.stderr)
    );
    assert_eq!(
        out_b.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out_b.stderr)
    );
    let got = records(&out_b.stdout);
    assert_eq!(got.len(), 11);
    assert_eq!(got[&x]["status"], "ok");
    assert_eq!(slow.stats(false).by_id.get(&x), Some(&1));
    assert_eq!(
        fast.stats(false).by_id.get(&x),
        None,
        "B never asked for it"
    );
    assert_eq!(lookups(&fast), 10);
    let s = summary(&sum_b);
    assert_eq!(s["claims_waited"], 1, "{s}");
    assert_eq!(s["shared_answers"], 1, "{s}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_claim_of_a_killed_process_is_taken_over_at_once() {
    // A is killed with its request out (its mock holds it a minute): its claim must not
    // hold B up (B would otherwise wait two minutes before looking it up itself).
    let stuck = slow_mock(std::time::Duration::from_secs(60)).await;
    let fast = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let dir = temp("dead-claim");
    let cache = dir.join("cache.sqlite3");
    let x = stuck.universe().hashes(7201).sha256.to_string();
    let list = write_list(&dir, "x.txt", std::slice::from_ref(&x));
    let mut a = command(&stuck.url(), &list, &cache, "unlimited")
        // No quota read first: its mock would hold that too.
        .arg("--offline-quota")
        .spawn()
        .expect("spawn a");
    out_for(&stuck, &mut a, &x).await;
    a.start_kill().expect("kill");
    a.wait().await.expect("reaped");
    let sum_b = dir.join("b.json");
    let mut run_b = command(&fast.url(), &list, &cache, "unlimited");
    run_b.arg("--summary-json").arg(&sum_b);
    let out_b = tokio::time::timeout(std::time::Duration::from_secs(60), run_b.output())
        .await
        .expect("B is not held up by a dead claim")
        .expect("b");
    assert_eq!(
        out_b.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out_b.stderr)
    );
    assert_eq!(records(&out_b.stdout)[&x]["status"], "ok");
    assert_eq!(fast.stats(false).by_id.get(&x), Some(&1));
    assert!(summary(&sum_b).get("claims_waited").is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_foreign_or_damaged_cache_file_is_refused_with_exit_2_and_left_untouched() {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let url = mock.url();
    let dir = temp("foreign");
    let (list, _) = input(&mock, &dir, 0, 12);
    let mut damaged = b"SQLite format 3\0".to_vec();
    damaged.extend(std::iter::repeat_n(0x5a_u8, 4096));
    for (name, bytes) in [
        ("notes.txt", b"not a cache\n".to_vec()),
        ("damaged.sqlite3", damaged),
    ] {
        let file = dir.join(name);
        std::fs::write(&file, &bytes).expect("write");
        let out = command(&url, &list, &file, "unlimited")
            .output()
            .await
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(&file.display().to_string()), "{stderr}");
        assert!(stderr.contains("cache"), "{stderr}");
        assert_eq!(
            std::fs::read(&file).expect("read"),
            bytes,
            "{name} was modified"
        );
        assert!(
            out.stdout.is_empty(),
            "no records before the cache is usable"
        );
    }
    assert_eq!(lookups(&mock), 0, "nothing was spent");
    let _ = std::fs::remove_dir_all(&dir);
}

async fn cache_cmd(args: &[&str], cache: &Path) -> (Option<i32>, String, String) {
    let out = crate::common::vtbulk()
        .arg("cache")
        .args(args)
        .arg("--cache")
        .arg(cache)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn cache_stats_get_export_and_prune_show_what_the_runs_stored() {
    let (mock, dir, cache) = setup("cache-cmd").await;
    let url = mock.url();
    let (list, unique) = input(&mock, &dir, 500, 30);
    complete_run(&url, &list, &cache).await;
    complete_run(&url, &list, &cache).await;

    let (code, out, err) = cache_cmd(&["stats", "--json"], &cache).await;
    assert_eq!(code, Some(0), "{err}");
    let stats: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(stats["found"], 30);
    assert_eq!(stats["not_found"], (unique - 30) as u64);
    assert_eq!(stats["last_run"]["cache_hits"], unique as u64);
    assert_eq!(stats["last_run"]["requests"], 0);
    assert_eq!(stats["last_run"]["hit_ratio"], 1.0);

    let file = mock.universe().hashes(501);
    let (code, out, err) = cache_cmd(&["get", &file.md5.to_string().to_uppercase()], &cache).await;
    assert_eq!(code, Some(0), "{err}");
    let got: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(got["status"], "found");
    assert_eq!(got["sha256"], file.sha256.to_string());
    assert_eq!(got["fresh"], true);
    assert_eq!(got["data"]["attributes"]["md5"], file.md5.to_string());

    let (code, _, err) = cache_cmd(&["get", &"ab".repeat(32)], &cache).await;
    assert_eq!(code, Some(2));
    assert!(err.contains("not in the cache"), "{err}");

    let (code, out, _) = cache_cmd(&["export"], &cache).await;
    assert_eq!(code, Some(0));
    assert_eq!(out.lines().count(), unique);
    assert!(
        out.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
    );

    let (code, out, _) = cache_cmd(&["prune"], &cache).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("pruned 0 found and 0 not-found"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_summary_only_cache_answers_records_and_refetches_only_for_raw() {
    let (mock, dir, cache) = setup("summary-only").await;
    let url = mock.url();
    let (list, unique) = input(&mock, &dir, 700, 12);
    let run = |extra: &'static [&'static str]| {
        let mut cmd = command(&url, &list, &cache, "unlimited");
        cmd.args(extra);
        async move {
            let out = cmd.output().await.expect("runs");
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            records(&out.stdout)
        }
    };
    let answers_bytes = || async {
        let (code, out, err) = cache_cmd(&["stats", "--json"], &cache).await;
        assert_eq!(code, Some(0), "{err}");
        let stats: serde_json::Value = serde_json::from_str(&out).expect("json");
        stats["answers_bytes"].as_u64().expect("answers_bytes")
    };
    let first = run(&["--cache-answers", "summary"]).await;
    assert_eq!(lookups(&mock), unique as u64);
    assert_eq!(answers_bytes().await, 0, "no whole answers kept");
    // Every record renders from the summaries alone: no request.
    mock.reset();
    assert_eq!(run(&["--cache-answers", "summary"]).await, first);
    assert_eq!(lookups(&mock), 0);
    // `--raw` needs the whole objects: the 12 found files are looked up again, and kept whole.
    let raw = run(&["--cache-answers", "summary", "--raw"]).await;
    assert_eq!(lookups(&mock), 12);
    assert!(
        raw.values()
            .filter(|r| r["status"] == "ok")
            .all(|r| r["raw"].is_object())
    );
    assert!(answers_bytes().await > 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_default_cache_is_private_under_xdg_cache_home_and_off_creates_nothing() {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let url = mock.url();
    let dir = temp("default-path");
    let (list, _) = input(&mock, &dir, 0, 6);
    for (cache_flag, home) in [
        (None, dir.join("home-a")),
        (Some("off"), dir.join("home-b")),
    ] {
        let mut cmd = crate::common::vtbulk();
        cmd.args([
            "enrich",
            "--quiet",
            "--tier",
            "unlimited",
            "--rate",
            "unlimited",
        ])
        .arg(&list)
        .args(["--api-url", &url])
        .env("VT_API_KEY", "testkey")
        .env("XDG_CACHE_HOME", &home)
        .stdin(Stdio::null());
        if let Some(flag) = cache_flag {
            cmd.args(["--cache", flag]);
        }
        let out = cmd.output().await.expect("runs");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let file = home.join("vtbulk").join("cache.sqlite3");
        match cache_flag {
            None => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode =
                        |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode();
                    assert_eq!(mode(&file) & 0o777, 0o600);
                    assert_eq!(mode(&home.join("vtbulk")) & 0o777, 0o700);
                    let answers = home.join("vtbulk").join("cache.sqlite3-answers");
                    assert_eq!(mode(&answers) & 0o777, 0o700);
                    let segments: Vec<_> = std::fs::read_dir(&answers)
                        .expect("answers")
                        .map(|e| e.expect("entry").path())
                        .collect();
                    assert!(!segments.is_empty());
                    for segment in segments {
                        assert_eq!(mode(&segment) & 0o777, 0o600, "{}", segment.display());
                    }
                }
            }
            Some(_) => assert!(!home.exists(), "--cache off wrote {}", home.display()),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_run_killed_while_it_polls_an_analysis_resumes_the_poll_and_submits_nothing_twice() {
    use vtbulk_ioc::indicator::url_id;
    use vtbulk_mock::objects::{ObjectKind, render};
    use vtbulk_mock::stats::Route;
    let mock = MockServer::start(MockConfig {
        analysis_delay: std::time::Duration::from_secs(3),
        ..MockConfig::default()
    })
    .await
    .expect("mock");
    let url = mock.url();
    let dir = temp("submit-kill");
    let cache = dir.join("cache.sqlite3");
    // Two URLs the mock does not know.
    let seed = mock.universe().seed();
    let unknown: Vec<String> = (0..)
        .map(|i| format!("http://drop-{i}.bad-host.ru/p.bin"))
        .filter(|u| render(seed, ObjectKind::Url, &url_id(u)).is_none())
        .take(2)
        .collect();
    let list = dir.join("urls.txt");
    std::fs::write(&list, unknown.join("\n")).expect("list");
    let submit = ["--submit-unknown-urls", "--submit-poll", "200ms"];
    let routes = |route: Route| {
        mock.stats(true)
            .log
            .as_ref()
            .expect("log")
            .iter()
            .filter(|e| e.route == route)
            .count()
    };
    let mut child = command(&url, &list, &cache, "unlimited")
        .args(submit)
        .spawn()
        .expect("spawn");
    // Killed once both analyses have been polled: both submissions were journaled first.
    mock.wait_for(|s| {
        let log = s.log.as_deref().unwrap_or_default();
        let polled: std::collections::BTreeSet<&str> = log
            .iter()
            .filter(|e| e.route == Route::Analyses)
            .filter_map(|e| e.id.as_deref())
            .collect();
        polled.len() == 2
    })
    .await;
    child.start_kill().expect("kill");
    let status = child.wait().await.expect("wait");
    assert_eq!(status.code(), None, "killed, not finished: {status}");
    assert_eq!(routes(Route::SubmitUrl), 2);
    // The next run with the same cache polls the same analyses until they complete.
    let out = command(&url, &list, &cache, "unlimited")
        .args(submit)
        .output()
        .await
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = records(&out.stdout);
    assert_eq!(got.len(), 2);
    assert!(got.values().all(|r| r["status"] == "ok"), "{got:?}");
    assert_eq!(routes(Route::SubmitUrl), 2, "nothing submitted twice");
    let _ = std::fs::remove_dir_all(&dir);
}
