//! What the binary's tests share: the repository root, a fresh temporary directory per test,
//! the binary's command cut off from the caller's configuration, key, API URL, proxies and
//! trust, lists of files vt-mock knows, an HTTPS vt-mock, and reading what a run wrote.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use vtbulk_mock::tls::{Flaw, MockTls};
use vtbulk_mock::{KeyConfig, MockConfig, MockServer};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh directory for `tag`, its own whichever test asks (every test of the binary runs in
/// one process: a counter keeps two tests with the same tag apart).
pub fn temp(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("vtbulk-test-{tag}-{pid}-{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// `vtbulk` run from the repository root with no user configuration, no key, no
/// `VTBULK_API_URL` or `VTBULK_REDIS_URL`, no proxy and no extra trust from the environment,
/// stdin closed, outputs piped. A test adds the key it means.
pub fn vtbulk() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(vtbulk_bin());
    cmd.current_dir(root())
        .env("XDG_CONFIG_HOME", root().join("target/no-user-config"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in [
        "VT_API_KEY",
        "VTCLI_APIKEY",
        "VTBULK_API_URL",
        "VTBULK_REDIS_URL",
        "VTBULK_REDIS_PASSWORD",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// The binary under test: this build's, or another (`VTBULK_BIN`, e.g. the release build).
fn vtbulk_bin() -> String {
    std::env::var("VTBULK_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_vtbulk").to_owned())
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `dir/name`: the SHA-256s of `count` files the mock knows, from file `first` on.
pub fn known_list(mock: &MockServer, dir: &Path, name: &str, first: u64, count: u64) -> PathBuf {
    let u = mock.universe();
    let list: String = (first..first + count)
        .map(|i| format!("{}\n", u.hashes(i).sha256))
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, list).expect("list");
    path
}

/// An HTTPS vt-mock for `key` whose server certificate has `flaw`; its CA written to
/// `dir/ca.pem`.
pub async fn https_mock(flaw: Flaw, dir: &Path, key: &str) -> (MockServer, PathBuf) {
    let tls = MockTls::generate(flaw).expect("certificates");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &tls.ca_pem).expect("write ca");
    let mock = MockServer::start(MockConfig {
        keys: vec![KeyConfig::unlimited(key)],
        tls: Some(tls),
        ..MockConfig::default()
    })
    .await
    .expect("mock");
    assert!(mock.url().starts_with("https://127.0.0.1:"));
    (mock, ca)
}

/// NDJSON records with status `ok` in `stdout`.
pub fn ok_records(stdout: &[u8]) -> usize {
    text(stdout)
        .lines()
        .filter(|l| l.contains("\"status\":\"ok\""))
        .count()
}

/// Asserts the process exited `code` (its stderr shown when not); its stdout and stderr.
pub fn assert_exit(out: &std::process::Output, code: i32) -> (String, String) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    (stdout, stderr)
}
