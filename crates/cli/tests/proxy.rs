//! Proxies as SOCs run them: a real proxy server (Debian's `tinyproxy`, started here on a free
//! loopback port; `.ci/run` installs it) with vt-mock behind it over TLS. Every request
//! tunnels through the proxy when it is given by `--proxy` or by the environment
//! (`HTTPS_PROXY` with a `NO_PROXY` that does not name loopback), goes straight when
//! `NO_PROXY` names the host or `--proxy off`, and carries the proxy's credentials from its
//! URL, never shown. Missing or wrong credentials stop the run at once (exit 3).

use crate::common::{https_mock, known_list, ok_records, temp};

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use vtbulk_mock::MockServer;
use vtbulk_mock::tls::Flaw;

const CANARY: &str = "CANARY-proxy-key-8e0f-never-shown";
const PASSWORD: &str = "CANARY-proxy-password-3b7d";

/// A tinyproxy on a free loopback port, its log (the requests it saw) kept in memory.
struct Proxy {
    child: tokio::process::Child,
    port: u16,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Proxy {
    /// Starts one (with basic auth `alice:PASSWORD` when `auth`) and waits for its "accepting
    /// connections" line.
    async fn start(dir: &Path, auth: bool) -> Proxy {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogLevel Info\nMaxClients 64\nAllow 127.0.0.1\n"
        );
        if auth {
            conf.push_str(&format!("BasicAuth alice {PASSWORD}\n"));
        }
        let path = dir.join(format!("tinyproxy-{port}.conf"));
        std::fs::write(&path, conf).expect("conf");
        let mut child = tokio::process::Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("tinyproxy not found: install Debian's tinyproxy (.ci/run does)");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        loop {
            let line = lines
                .next_line()
                .await
                .expect("read tinyproxy's log")
                .expect("tinyproxy exited before it was ready");
            if line.contains("Accepting connections") {
                break;
            }
        }
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                keep.lock().expect("log").push(line);
            }
        });
        Proxy { child, port, log }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// CONNECTs to `target` (host:port) the proxy logged so far. The log is read as it comes:
    /// this asks after the run has ended, and waits for the proxy to have written it out.
    async fn connects_to(&self, target: &str, at_least: usize) -> usize {
        let wanted = format!("CONNECT {target} ");
        let count = || {
            self.log
                .lock()
                .expect("log")
                .iter()
                .filter(|l| l.contains(&wanted))
                .count()
        };
        // The proxy logs each CONNECT before it answers it, and the run has ended, so the
        // lines are written; the pipe may still hold them: read until they are in.
        for _ in 0..1000 {
            if count() >= at_least {
                break;
            }
            tokio::task::yield_now().await;
        }
        count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn list(mock: &MockServer, dir: &Path) -> PathBuf {
    known_list(mock, dir, "list.txt", 1, 4)
}

/// `vtbulk enrich` against `mock`, trusting its CA, with a clean proxy environment.
fn vtbulk(mock: &MockServer, ca: &Path, input: &Path, extra: &[&str]) -> tokio::process::Command {
    let mut cmd = crate::common::vtbulk();
    cmd.args([
        "enrich",
        "--format",
        "ndjson",
        "--tier",
        "unlimited",
        "--cache",
        "off",
    ])
    .arg(input)
    .args(["--api-url", &mock.url()])
    .arg("--ca-cert")
    .arg(ca)
    .args(extra)
    .env("VT_API_KEY", CANARY);
    cmd
}

fn assert_ok(out: &std::process::Output, records: usize) {
    let (stdout, _) = crate::common::assert_exit(out, 0);
    assert_eq!(ok_records(&out.stdout), records, "{stdout}");
}

#[tokio::test]
async fn requests_tunnel_through_the_proxy_given_by_flag_or_environment_and_not_when_excluded() {
    let dir = temp("route");
    let proxy = Proxy::start(&dir, false).await;
    let (mock, ca) = https_mock(Flaw::None, &dir, CANARY).await;
    let input = list(&mock, &dir);
    let target = mock.url().trim_start_matches("https://").to_owned();

    // --proxy: every request through it (the quota read and the four lookups).
    let out = vtbulk(&mock, &ca, &input, &["--proxy", &proxy.url()])
        .output()
        .await
        .expect("runs");
    assert_ok(&out, 4);
    let through_flag = proxy.connects_to(&target, 1).await;
    assert!(
        through_flag >= 1,
        "no CONNECT to {target} in the proxy's log"
    );

    // The environment: HTTPS_PROXY, with a NO_PROXY that does not name loopback.
    let out = vtbulk(&mock, &ca, &input, &[])
        .env("HTTPS_PROXY", proxy.url())
        .env("NO_PROXY", "corp.example")
        .output()
        .await
        .expect("runs");
    assert_ok(&out, 4);
    let through_env = proxy.connects_to(&target, through_flag + 1).await;
    assert!(through_env > through_flag, "HTTPS_PROXY was not used");

    // Straight past it: NO_PROXY names the host (and with NO_PROXY unset, loopback is
    // excluded by default); `--proxy off` whatever the environment says.
    for (no_proxy, flag) in [(Some("127.0.0.1"), None), (None, None), (None, Some("off"))] {
        let extra: Vec<&str> = flag.map_or(vec![], |f| vec!["--proxy", f]);
        let mut cmd = vtbulk(&mock, &ca, &input, &extra);
        cmd.env("HTTPS_PROXY", proxy.url());
        if let Some(no) = no_proxy {
            cmd.env("NO_PROXY", no);
        }
        if flag.is_some() {
            cmd.env("NO_PROXY", "corp.example");
        }
        let out = cmd.output().await.expect("runs");
        assert_ok(&out, 4);
    }
    assert_eq!(
        proxy.connects_to(&target, through_env).await,
        through_env,
        "a run that should have gone straight went through the proxy"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn proxy_credentials_come_from_its_url_are_never_shown_and_missing_ones_stop_the_run() {
    let dir = temp("auth");
    let proxy = Proxy::start(&dir, true).await;
    let (mock, ca) = https_mock(Flaw::None, &dir, CANARY).await;
    let input = list(&mock, &dir);
    let with_creds = format!("http://alice:{PASSWORD}@127.0.0.1:{}", proxy.port);

    let out = vtbulk(&mock, &ca, &input, &["--proxy", &with_creds])
        .output()
        .await
        .expect("runs");
    assert_ok(&out, 4);
    let from_env = vtbulk(&mock, &ca, &input, &[])
        .env("HTTPS_PROXY", &with_creds)
        .env("NO_PROXY", "")
        .output()
        .await
        .expect("runs");
    assert_ok(&from_env, 4);
    // `vtbulk config` shows where requests go, without the password.
    let config = crate::common::vtbulk()
        .args(["config", "--proxy", &with_creds])
        .output()
        .await
        .expect("config");
    let shown = String::from_utf8_lossy(&config.stdout);
    assert!(
        shown.contains(&format!(
            "proxy = http://[redacted]@127.0.0.1:{}",
            proxy.port
        )),
        "{shown}"
    );

    // No credentials, then wrong ones: exit 3 at once, the reason on one line.
    let out = vtbulk(&mock, &ca, &input, &["--proxy", &proxy.url()])
        .output()
        .await
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("the proxy wants credentials"), "{stderr}");
    let wrong = format!("http://alice:not-{PASSWORD}@127.0.0.1:{}", proxy.port);
    let bad = vtbulk(&mock, &ca, &input, &["--proxy", &wrong])
        .output()
        .await
        .expect("runs");
    let bad_stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(3), "{bad_stderr}");
    assert!(
        bad_stderr.contains("refused its credentials"),
        "{bad_stderr}"
    );
    // The two runs with credentials: a quota read and four lookups each.
    assert_eq!(
        mock.stats(false).total,
        10,
        "only the runs with credentials got through"
    );

    // The password and the key appear in no output of any run.
    for o in [&out, &from_env, &bad, &config] {
        for text in [&o.stdout, &o.stderr] {
            let text = String::from_utf8_lossy(text);
            assert!(!text.contains(PASSWORD) && !text.contains(CANARY), "{text}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
