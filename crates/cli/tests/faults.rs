//! The faults a hostile probe found (issue 27), as a user meets them: an output that would
//! destroy an input, an output that cannot be written, a stop behind `-q`, a server that is
//! silent or not HTTP at all, a key command that hangs. Each runs the binary against vt-mock
//! or a listener of the test's own on loopback; nothing here waits on a clock to assert.

use std::path::Path;

use vtbulk_mock::{MockConfig, MockServer};

use crate::common::{assert_exit, known_list, temp, text, vtbulk};

async fn run(args: &[&str]) -> std::process::Output {
    vtbulk()
        .args(args)
        .env("VT_API_KEY", "testkey")
        .output()
        .await
        .expect("run vtbulk")
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf8 path")
}

/// vt-mock, a fresh directory for `tag`, and in it a list of `count` hashes the mock knows.
async fn mock_and_list(
    tag: &str,
    count: u64,
) -> (MockServer, std::path::PathBuf, std::path::PathBuf) {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let dir = temp(tag);
    let list = known_list(&mock, &dir, "list.txt", 0, count);
    (mock, dir, list)
}

/// `vtbulk enrich LIST` against `url` with no cache, no pacing, NDJSON, `-q`; then `extra`.
async fn enrich(list: &Path, url: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["enrich", s(list), "--api-url", url, "--cache", "off"];
    args.extend(["--rate", "unlimited", "--format", "ndjson", "-q"]);
    args.extend_from_slice(extra);
    run(&args).await
}

#[tokio::test]
async fn an_output_that_is_an_input_is_refused_before_anything_is_read_or_spent() {
    let (mock, dir, list) = mock_and_list("output-is-input", 5).await;
    let before = std::fs::read(&list).expect("list");
    let link = dir.join("link.txt");
    std::os::unix::fs::symlink(&list, &link).expect("symlink");
    let url = mock.url();
    for extra in [
        &["-o", s(&list)][..],
        &["-o", s(&link), "--annotate"][..],
        &["--summary-json", s(&link)][..],
        &["--metrics-file", s(&list)][..],
    ] {
        let out = enrich(&list, &url, extra).await;
        let (_, stderr) = assert_exit(&out, 2);
        assert!(stderr.contains("is the input"), "{extra:?}: {stderr}");
        assert_eq!(std::fs::read(&list).expect("list"), before, "{extra:?}");
    }
    assert_eq!(mock.stats(false).total, 0, "nothing was looked up");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_output_in_a_missing_directory_is_refused_before_the_first_request() {
    let (mock, dir, list) = mock_and_list("output-missing-dir", 5).await;
    let missing = dir.join("no/such/dir");
    let url = mock.url();
    for flag in ["--summary-json", "--metrics-file", "-o"] {
        let target = missing.join("x.out");
        let out = enrich(&list, &url, &[flag, s(&target)]).await;
        let (_, stderr) = assert_exit(&out, 2);
        assert!(
            stderr.contains(flag) && stderr.contains("does not exist"),
            "{flag}: {stderr}"
        );
    }
    let report = dir.join("gone/report.html");
    let output = dir.join("out.csv");
    let out = enrich(&list, &url, &["-o", s(&output), "--report", s(&report)]).await;
    assert_exit(&out, 2);
    assert_eq!(mock.stats(false).total, 0, "no request was spent");
    assert!(!output.exists(), "no output left behind");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_summary_that_cannot_be_written_at_the_end_exits_2_and_the_records_stay() {
    let (mock, dir, list) = mock_and_list("summary-full", 5).await;
    let output = dir.join("out.ndjson");
    let url = mock.url();
    // /dev/full takes the open and refuses the write (ENOSPC), as a full disk does.
    let out = enrich(
        &list,
        &url,
        &["-o", s(&output), "--summary-json", "/dev/full"],
    )
    .await;
    let (_, stderr) = assert_exit(&out, 2);
    assert!(
        stderr.contains("failed to write the summary /dev/full"),
        "{stderr}"
    );
    let records = std::fs::read_to_string(&output).expect("the records stay");
    assert_eq!(records.lines().count(), 5);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn quiet_still_prints_the_line_that_says_why_the_key_stopped_the_run() {
    let (mock, dir, list) = mock_and_list("quiet-refused", 5).await;
    let out = vtbulk()
        .args([
            "enrich",
            s(&list),
            "--api-url",
            &mock.url(),
            "--cache",
            "off",
        ])
        .args(["--rate", "unlimited", "-q"])
        .env("VT_API_KEY", "wrong-key")
        .output()
        .await
        .expect("run");
    let (_, stderr) = assert_exit(&out, 3);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("stopped: VirusTotal refused the key")
            && stderr.contains("WrongCredentialsError")
            && !stderr.contains("wrong-key"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_password_in_a_url_flag_draws_one_warning_and_is_not_shown() {
    let out = vtbulk()
        .args(["config", "--proxy", "http://alice:hunter2@127.0.0.1:3128"])
        .output()
        .await
        .expect("run");
    let (_, stderr) = assert_exit(&out, 0);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("HTTPS_PROXY"), "{stderr}");
    assert!(!text(&out.stdout).contains("hunter2") && !stderr.contains("hunter2"));
}

/// A listener on loopback that accepts connections, reads what comes, and then answers with
/// `reply` (nothing at all when `None`: a silent server), holding every connection open;
/// counts the requests it read.
async fn odd_server(reply: Option<&'static [u8]>) -> (String, Seen) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Seen::default();
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {
                            counter.count.fetch_add(1, Ordering::SeqCst);
                            counter.read.notify_waiters();
                            if let Some(reply) = reply {
                                let _ = socket.write_all(reply).await;
                                let _ = socket.shutdown().await;
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (url, seen)
}

/// The requests an [`odd_server`] read, and a wake-up at each.
#[derive(Clone, Default)]
struct Seen {
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
    read: std::sync::Arc<tokio::sync::Notify>,
}

impl Seen {
    fn load(&self, order: std::sync::atomic::Ordering) -> u64 {
        self.count.load(order)
    }

    /// Returns once the server has read `n` requests.
    async fn reached(&self, n: u64) {
        loop {
            let read = self.read.notified();
            tokio::pin!(read);
            read.as_mut().enable();
            if self.count.load(std::sync::atomic::Ordering::SeqCst) >= n {
                return;
            }
            read.await;
        }
    }
}

/// A config file setting the request timeout (a file-only key).
fn timeout_config(dir: &Path, timeout: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, format!("request_timeout = \"{timeout}\"\n")).expect("config");
    path
}

/// Every record of `stdout` (NDJSON) is `skipped` for `reason`.
fn all_skipped(stdout: &str, reason: &str, count: usize) {
    let records: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("ndjson"))
        .collect();
    assert_eq!(records.len(), count, "{stdout}");
    for r in &records {
        assert_eq!(r["status"], "skipped", "{r}");
        assert_eq!(r["error_code"], reason, "{r}");
    }
}

#[tokio::test]
async fn a_server_that_never_answers_stops_the_run_as_unreachable_with_items_skipped() {
    let (url, seen) = odd_server(None).await;
    let (_mock, dir, list) = mock_and_list("silent", 8).await;
    let config = timeout_config(&dir, "1s");
    let out = enrich(&list, &url, &["--config", s(&config)]).await;
    let (stdout, stderr) = assert_exit(&out, 6);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("stopped:") && stderr.contains(&format!("no answer from {url}")),
        "{stderr}"
    );
    all_skipped(&stdout, "api_unreachable", 8);
    assert!(seen.load(std::sync::atomic::Ordering::SeqCst) >= 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_reply_that_is_not_http_or_not_the_apis_json_stops_the_run_not_a_retry_storm() {
    let (_mock, dir, list) = mock_and_list("garbage", 30).await;
    // Not HTTP; a web page where the API should be; a web server's bare 404 (which must not
    // become thirty `not_found` records).
    let replies: [&'static [u8]; 3] = [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage that is no protocol at all\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 24\r\n\r\n<html>a web page</html>\n",
        b"HTTP/1.1 404 Not Found\r\ncontent-type: text/html\r\ncontent-length: 25\r\n\r\n<html>no such page</html>",
    ];
    for reply in replies {
        let (url, seen) = odd_server(Some(reply)).await;
        let out = enrich(&list, &url, &["--concurrency", "1"]).await;
        let (stdout, stderr) = assert_exit(&out, 6);
        assert!(
            stderr.contains(&format!("not an HTTP API at {url}")),
            "{stderr}"
        );
        let records = stdout.lines().count();
        assert_eq!(records, 30, "{stdout}");
        assert!(!stdout.contains("\"status\":\"not_found\""), "{stdout}");
        // A few replies decide it: not the whole list times the retries.
        let requests = seen.load(std::sync::atomic::Ordering::SeqCst);
        assert!((3..=6).contains(&requests), "{requests} requests");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sigterm_with_requests_stuck_in_flight_ends_the_run_with_every_item_skipped() {
    let (_mock, dir, list) = mock_and_list("silent-term", 6).await;
    // Without the grace for requests in flight, this run would wait ten minutes. The first
    // request is the key's quota (`GET /users`), or with --offline-quota the lookups.
    let config = timeout_config(&dir, "600s");
    for quota in ["--tier=public", "--offline-quota"] {
        let (url, seen) = odd_server(None).await;
        let child = vtbulk()
            .args([
                "enrich",
                s(&list),
                "--config",
                s(&config),
                "--api-url",
                &url,
                quota,
            ])
            .args([
                "--cache",
                "off",
                "--rate",
                "unlimited",
                "--format",
                "ndjson",
                "-q",
            ])
            .env("VT_API_KEY", "testkey")
            .spawn()
            .expect("spawn");
        // Requests are in flight (read by the server, never to be answered).
        seen.reached(if quota == "--offline-quota" { 6 } else { 1 })
            .await;
        let pid = child.id().expect("pid").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        let out = tokio::time::timeout(
            std::time::Duration::from_secs(120),
            child.wait_with_output(),
        )
        .await
        .expect("the run ended long before its requests' timeout")
        .expect("wait");
        let (stdout, _) = assert_exit(&out, 130);
        all_skipped(&stdout, "interrupted", 6);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether process `pid` is gone (or a zombie waiting for its reaper: it runs no more).
fn process_ended(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

/// A FIFO at `dir/name`: a command that writes its pid there waits for the test to read it.
fn fifo(dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    path
}

async fn read_pid(fifo: std::path::PathBuf) -> String {
    tokio::task::spawn_blocking(move || std::fs::read_to_string(fifo).expect("read fifo"))
        .await
        .expect("reader")
        .trim()
        .to_owned()
}

#[tokio::test]
async fn a_key_command_that_hangs_is_killed_with_its_children_at_its_timeout() {
    let dir = temp("key-timeout");
    let pids = fifo(&dir, "pids");
    // The shell starts a child and waits: both must go when the timeout comes.
    let command = format!(
        "sh -c 'sleep 1000 & echo $! > {}; wait' secret-vault-path",
        pids.display()
    );
    let child = vtbulk()
        .args(["config", "--api-key-command", &command])
        .args(["--api-key-command-timeout", "1s"])
        .spawn()
        .expect("spawn");
    let sleeper = read_pid(pids).await;
    let out = child.wait_with_output().await.expect("wait");
    let (_, stderr) = assert_exit(&out, 2);
    assert!(
        stderr.contains("--api-key-command: sh gave no key within 1s"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret-vault-path") && !stderr.contains("sleep"));
    assert!(
        process_ended(&sleeper),
        "the command's child {sleeper} runs on"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sigterm_while_the_key_command_runs_kills_it_and_exits_130() {
    let dir = temp("key-sigterm");
    let pids = fifo(&dir, "pids");
    let command = format!("sh -c 'echo $$ > {}; exec sleep 1000'", pids.display());
    let child = vtbulk()
        .args(["config", "--api-key-command", &command])
        .spawn()
        .expect("spawn");
    let key_command = read_pid(pids).await;
    let pid = child.id().expect("pid").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    let out = child.wait_with_output().await.expect("wait");
    let (_, stderr) = assert_exit(&out, 130);
    assert!(
        stderr.contains("interrupted while --api-key-command sh ran"),
        "{stderr}"
    );
    assert!(
        process_ended(&key_command),
        "the key command {key_command} runs on"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every file of a cache with a digest of its bytes (the SQLite file, its answers'
/// segments), SQLite's shared-memory index and empty WAL left out: a reader may make those.
fn cache_files(dir: &Path) -> std::collections::BTreeMap<String, (usize, u64)> {
    use std::hash::{Hash, Hasher};
    let mut files = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.display().to_string();
                let bytes = std::fs::read(&path).unwrap_or_default();
                if name.ends_with("-shm") || (name.ends_with("-wal") && bytes.is_empty()) {
                    continue;
                }
                let mut h = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut h);
                files.insert(name, (bytes.len(), h.finish()));
            }
        }
    }
    files
}

#[tokio::test]
async fn a_read_only_cache_answers_without_being_written_and_is_never_called_damaged() {
    use std::os::unix::fs::PermissionsExt;
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let dir = temp("read-only-cache");
    let store = dir.join("store");
    std::fs::create_dir(&store).expect("mkdir");
    let cache = store.join("cache.sqlite3");
    let first = known_list(&mock, &dir, "first.txt", 0, 5);
    let both = known_list(&mock, &dir, "both.txt", 0, 7);
    let url = mock.url();
    let enrich = |list: &Path, extra: &[&str]| {
        let mut args = vec![
            "enrich".to_owned(),
            s(list).to_owned(),
            "--api-url".into(),
            url.clone(),
            "--cache".into(),
            s(&cache).to_owned(),
            "--rate".into(),
            "unlimited".into(),
            "--format".into(),
            "ndjson".into(),
            "-q".into(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args
    };
    let args = enrich(&first, &[]);
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_exit(&out, 0);
    let before = cache_files(&store);
    // Asked for: the five from the cache, two looked up, the cache untouched, no warning.
    let args = enrich(&both, &["--cache-mode", "read-only"]);
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let (stdout, stderr) = assert_exit(&out, 0);
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(
        stdout.matches("\"source\":\"cache\"").count(),
        5,
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 7);
    assert_eq!(
        cache_files(&store),
        before,
        "a read-only run wrote to the cache"
    );
    // Not writable by this user: read-only with one warning, never "damaged".
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    let root = std::fs::OpenOptions::new().write(true).open(&cache).is_ok();
    if !root {
        let args = enrich(&both, &[]);
        let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        let (stdout, stderr) = assert_exit(&out, 0);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("is read-only") && !stderr.contains("damaged"));
        assert_eq!(stdout.matches("\"source\":\"cache\"").count(), 5);
    }
    // (As root, permissions do not stop a write: `make chaos` mounts a read-only filesystem.)
    let cache_arg = s(&cache).to_owned();
    let out = run(&[
        "cache",
        "stats",
        "--cache",
        &cache_arg,
        "--cache-mode",
        "read-only",
    ])
    .await;
    let (stats, _) = assert_exit(&out, 0);
    assert!(stats.contains('5'), "{stats}");
    assert_eq!(cache_files(&store), before);
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let _ = std::fs::remove_dir_all(&dir);
}
