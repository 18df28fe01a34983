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

#[tokio::test]
async fn an_output_that_is_an_input_is_refused_before_anything_is_read_or_spent() {
    let mock = MockServer::start(MockConfig::default()).await.expect("mock");
    let dir = temp("output-is-input");
    let list = known_list(&mock, &dir, "list.txt", 0, 5);
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
        let mut args = vec!["enrich", s(&list), "--api-url", &url, "--cache", "off", "-q"];
        args.extend_from_slice(extra);
        let out = run(&args).await;
        let (_, stderr) = assert_exit(&out, 2);
        assert!(stderr.contains("is the input"), "{extra:?}: {stderr}");
        assert_eq!(std::fs::read(&list).expect("list"), before, "{extra:?}");
    }
    assert_eq!(mock.stats(false).total, 0, "nothing was looked up");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_output_in_a_missing_directory_is_refused_before_the_first_request() {
    let mock = MockServer::start(MockConfig::default()).await.expect("mock");
    let dir = temp("output-missing-dir");
    let list = known_list(&mock, &dir, "list.txt", 0, 5);
    let missing = dir.join("no/such/dir");
    let url = mock.url();
    for flag in ["--summary-json", "--metrics-file", "-o"] {
        let target = missing.join("x.out");
        let out = run(&[
            "enrich",
            s(&list),
            "--api-url",
            &url,
            "--cache",
            "off",
            "-q",
            flag,
            s(&target),
        ])
        .await;
        let (_, stderr) = assert_exit(&out, 2);
        assert!(
            stderr.contains(flag) && stderr.contains("does not exist"),
            "{flag}: {stderr}"
        );
    }
    let report = dir.join("gone/report.html");
    let output = dir.join("out.csv");
    let out = run(&[
        "enrich",
        s(&list),
        "--api-url",
        &url,
        "--cache",
        "off",
        "-q",
        "-o",
        s(&output),
        "--report",
        s(&report),
    ])
    .await;
    assert_exit(&out, 2);
    assert_eq!(mock.stats(false).total, 0, "no request was spent");
    assert!(!output.exists(), "no output left behind");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_summary_that_cannot_be_written_at_the_end_exits_2_and_the_records_stay() {
    let mock = MockServer::start(MockConfig::default()).await.expect("mock");
    let dir = temp("summary-full");
    let list = known_list(&mock, &dir, "list.txt", 0, 5);
    let output = dir.join("out.ndjson");
    let url = mock.url();
    // /dev/full takes the open and refuses the write (ENOSPC), as a full disk does.
    let out = run(&[
        "enrich",
        s(&list),
        "--api-url",
        &url,
        "--cache",
        "off",
        "--rate",
        "unlimited",
        "--format",
        "ndjson",
        "-q",
        "-o",
        s(&output),
        "--summary-json",
        "/dev/full",
    ])
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
    let mock = MockServer::start(MockConfig::default()).await.expect("mock");
    let dir = temp("quiet-refused");
    let list = known_list(&mock, &dir, "list.txt", 0, 5);
    let out = vtbulk()
        .args(["enrich", s(&list), "--api-url", &mock.url(), "--cache", "off"])
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
