//! TLS as a SOC meets it: vt-mock serving HTTPS with a certificate from a CA made at its start
//! (a TLS-inspecting proxy's CA, in effect). Trusted through `--ca-cert` or the system's store
//! (`SSL_CERT_FILE`), the run works; untrusted, expired or another host's, the run stops at
//! once with exit 3 and a line naming the certificate problem, nothing looked up, no retry
//! and no fallback to plain HTTP.

use crate::common::{known_list, ok_records, temp};

use std::path::{Path, PathBuf};

use vtbulk_mock::MockServer;
use vtbulk_mock::tls::Flaw;

const CANARY: &str = "CANARY-tls-51c2-this-key-must-never-be-shown";

async fn https_mock(flaw: Flaw, dir: &Path) -> (MockServer, PathBuf) {
    crate::common::https_mock(flaw, dir, CANARY).await
}

fn list(mock: &MockServer, dir: &Path) -> PathBuf {
    known_list(mock, dir, "list.txt", 1, 5)
}

fn vtbulk(url: &str, input: &Path, extra: &[&str]) -> tokio::process::Command {
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
    .args(["--api-url", url])
    .args(extra)
    .env("VT_API_KEY", CANARY);
    cmd
}

#[tokio::test]
async fn a_corporate_ca_is_trusted_through_ca_cert_or_the_system_store() {
    let dir = temp("trusted");
    let (mock, ca) = https_mock(Flaw::None, &dir).await;
    let input = list(&mock, &dir);
    let ca_arg = ca.to_str().expect("utf-8 path");
    let out = vtbulk(&mock.url(), &input, &["--ca-cert", ca_arg])
        .output()
        .await
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(ok_records(&out.stdout), 5);
    // The same CA in the operating system's store (as a SOC installs it): no flag needed.
    let out = vtbulk(&mock.url(), &input, &[])
        .env("SSL_CERT_FILE", &ca)
        .output()
        .await
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ok_records(&out.stdout), 5);
    // `vtbulk config` says what is trusted.
    let out = crate::common::vtbulk()
        .args(["config", "--ca-cert", ca_arg])
        .output()
        .await
        .expect("config");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("ca_cert = "), "{shown}");
    assert!(
        shown.contains(&format!(
            "ca_cert = {ca_arg:?} (and the system's trust store)"
        )),
        "{shown}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs against a mock whose certificate is refused: exit 3 at once, the problem named, no
/// lookup made, no record but `skipped`, the key nowhere.
async fn refused(flaw: Flaw, trust: bool, words: &[&str]) {
    let dir = temp(&format!("{flaw:?}-{trust}"));
    let (mock, ca) = https_mock(flaw, &dir).await;
    let input = list(&mock, &dir);
    let ca_arg = ca.to_str().expect("utf-8 path").to_owned();
    let extra: Vec<&str> = if trust {
        vec!["--ca-cert", &ca_arg]
    } else {
        vec![]
    };
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        vtbulk(&mock.url(), &input, &extra).output(),
    )
    .await
    .expect("stops at once, no retries")
    .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    for word in words {
        assert!(stderr.contains(word), "{word:?} not in: {stderr}");
    }
    assert!(
        stderr.contains("refused the TLS certificate of 127.0.0.1"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 5);
    assert!(
        stdout.lines().all(|l| l.contains("\"status\":\"skipped\"")),
        "{stdout}"
    );
    assert_eq!(mock.stats(false).total, 0, "no request reached the server");
    assert!(!stderr.contains(CANARY) && !stdout.contains(CANARY));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_untrusted_certificate_stops_the_run_with_exit_3_naming_the_problem() {
    refused(Flaw::None, false, &["does not trust", "--ca-cert"]).await;
}

#[tokio::test]
async fn an_expired_certificate_is_refused_even_from_a_trusted_ca() {
    refused(Flaw::Expired, true, &["expired"]).await;
}

#[tokio::test]
async fn another_hosts_certificate_is_refused_even_from_a_trusted_ca() {
    refused(Flaw::WrongHost, true, &["not valid for 127.0.0.1"]).await;
}

#[tokio::test]
async fn a_ca_cert_that_is_not_a_pem_bundle_is_exit_2_naming_the_file() {
    let dir = temp("bad-bundle");
    let (mock, _) = https_mock(Flaw::None, &dir).await;
    let input = list(&mock, &dir);
    let bad = dir.join("not-a-bundle.txt");
    std::fs::write(&bad, "this is not a certificate\n").expect("write");
    let out = vtbulk(
        &mock.url(),
        &input,
        &["--ca-cert", bad.to_str().expect("path")],
    )
    .output()
    .await
    .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("not-a-bundle.txt") && stderr.contains("no certificate"),
        "{stderr}"
    );
    assert_eq!(mock.stats(false).total, 0);
    let _ = std::fs::remove_dir_all(&dir);
}
