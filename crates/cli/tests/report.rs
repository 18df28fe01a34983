//! The HTML report as people will open it: a run on a list holding a file whose name, label,
//! family and tags are hostile HTML (`fixtures/vt/file_hostile_names.json`), written with
//! `enrich --report` and `vtbulk report`; checked by Debian's HTML Tidy (no errors) and
//! rendered by Debian's headless Chromium, started here: the DOM after load holds the hostile
//! strings as text, no script ran (the title is still the report's), and a screenshot is made.
//! `.ci/run` installs both; a machine without them fails here loudly.

use crate::common::{root, temp};

use std::path::Path;
use std::process::Stdio;

use vtbulk_mock::universe::Fixture;
use vtbulk_mock::{MockConfig, MockServer};

/// Headless Chromium on `page`: (the DOM after load, a screenshot's size in bytes).
async fn chromium(page: &Path, dir: &Path) -> (String, u64) {
    let url = format!("file://{}", page.display());
    let run = |args: Vec<String>| async move {
        tokio::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
            ])
            .arg(format!(
                "--user-data-dir={}",
                dir.join("chromium-profile").display()
            ))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("chromium not found: install Debian's chromium (.ci/run does)")
    };
    let dom = run(vec!["--dump-dom".into(), url.clone()]).await;
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let shot = dir.join("report.png");
    let png = run(vec![
        format!("--screenshot={}", shot.display()),
        "--window-size=1200,1600".into(),
        url,
    ])
    .await;
    assert!(
        png.status.success(),
        "{}",
        String::from_utf8_lossy(&png.stderr)
    );
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    (String::from_utf8_lossy(&dom.stdout).into_owned(), size)
}

/// HTML Tidy's verdict: its exit code (0 clean, 1 warnings, 2 errors) and messages.
async fn tidy(page: &Path) -> (i32, String) {
    let out = tokio::process::Command::new("tidy")
        .args(["-errors", "-quiet", "--show-warnings", "yes"])
        .arg(page)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("tidy not found: install Debian's tidy (.ci/run does)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_report_with_hostile_names_renders_them_as_text_validates_and_runs_no_script() {
    let fixture = std::fs::read_to_string(root().join("fixtures/vt/file_hostile_names.json"))
        .expect("fixture");
    let fixture = Fixture::from_json(&fixture).expect("fixture parses");
    let hostile = fixture.hashes.sha256;
    let mock = MockServer::start(MockConfig {
        fixtures: vec![fixture],
        ..MockConfig::default()
    })
    .await
    .expect("mock");
    let dir = temp("hostile");
    let u = mock.universe();
    let mut lines: Vec<String> = (1..=12).map(|i| u.hashes(i).sha256.to_string()).collect();
    lines.push(hostile.to_string());
    lines.push("44d88612fea8a8f36de82e1278abb02f".into());
    lines.push("<script>not-a-hash</script>".into());
    let list = dir.join("list.txt");
    std::fs::write(&list, lines.join("\n") + "\n").expect("list");
    let (ndjson, page) = (dir.join("out.ndjson"), dir.join("report.html"));
    let out = crate::common::vtbulk()
        .args([
            "enrich",
            "--format",
            "ndjson",
            "--tier",
            "unlimited",
            "--cache",
            "off",
            "-q",
        ])
        .arg(&list)
        .args(["--api-url", &mock.url(), "-o"])
        .arg(&ndjson)
        .arg("--report")
        .arg(&page)
        .env("VT_API_KEY", "testkey")
        .output()
        .await
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&page).expect("the report was written");
    for raw in ["<script", "<img", "<svg onload", "<b onmouseover"] {
        assert!(!html.contains(raw), "{raw} in the page");
    }
    assert!(
        html.contains("&lt;img src=x onerror="),
        "the name is there, as text"
    );

    let (code, messages) = tidy(&page).await;
    assert!(code <= 1, "tidy found errors:\n{messages}");

    let (dom, png) = chromium(&page, &dir).await;
    assert!(
        dom.contains("<title>vtbulk report: "),
        "the title is the report's: {dom}"
    );
    assert!(!dom.contains("pwned</title>"), "a script changed the title");
    assert!(
        dom.contains("&lt;img src=x onerror="),
        "the hostile name is text in the DOM"
    );
    assert!(!dom.contains("<img"), "no element was made from a name");
    assert!(png > 10_000, "a screenshot of the page ({png} bytes)");

    // The same page from `vtbulk report` on the NDJSON, with a title of its own.
    let again = dir.join("again.html");
    let out = crate::common::vtbulk()
        .arg("report")
        .arg(&ndjson)
        .arg("-o")
        .arg(&again)
        .args(["--title", "<i>incident 42</i>"])
        .output()
        .await
        .expect("report runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = std::fs::read_to_string(&again).expect("written");
    assert!(again.contains("<title>&lt;i&gt;incident 42&lt;/i&gt;</title>"));
    let _ = std::fs::remove_dir_all(&dir);
}
