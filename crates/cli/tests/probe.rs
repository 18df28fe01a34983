//! `vtbulk probe` through the binary: it will not spend a public key's quota unless told
//! `--yes`, and says what it may spend before it starts. (The measurement itself is tested
//! against vt-mock's strict limiter in `crates/engine/tests/quota.rs`.)

use vtbulk_mock::{KeyConfig, MockConfig, MockServer};

#[tokio::test]
async fn a_public_key_is_not_probed_without_yes_and_nothing_is_sent() {
    let mock = MockServer::start(MockConfig {
        keys: vec![KeyConfig::parse("probe-key:public").expect("key")],
        ..MockConfig::default()
    })
    .await
    .expect("mock");
    let out = crate::common::vtbulk()
        .args(["probe", "--max-requests", "20", "--tier", "public"])
        .args(["--api-url", &mock.url(), "--cache", "off"])
        .env("VT_API_KEY", "probe-key")
        .output()
        .await
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--yes") && stderr.contains("20 requests"),
        "{stderr}"
    );
    assert_eq!(mock.stats(false).total, 0, "nothing spent");
}
