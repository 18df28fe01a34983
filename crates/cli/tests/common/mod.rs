//! What the binary's tests share: the repository root, a fresh temporary directory per test,
//! and the binary's command cut off from the caller's configuration, API URL and proxies.
#![allow(dead_code, reason = "each test file uses a part of it")]

use std::path::PathBuf;
use std::process::Stdio;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh directory for `tag` (per test process).
pub fn temp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vtbulk-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// `vtbulk` run from the repository root with no user configuration, no `VTBULK_API_URL`, no
/// proxy and no extra trust from the environment, stdin closed, outputs piped.
pub fn vtbulk() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_vtbulk"));
    cmd.current_dir(root())
        .env("XDG_CONFIG_HOME", root().join("target/no-user-config"))
        .env_remove("VTBULK_API_URL")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in [
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
