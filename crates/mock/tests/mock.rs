//! vt-mock over loopback, spoken to with raw HTTP/1.1 so that every header and byte of the
//! answer is what the test sees: statuses, error envelopes, gzip rules, quota windows under a
//! frozen clock, `/users` usage, faults and stats.

use std::io::Read;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vtbulk_ioc::HashKind;
use vtbulk_mock::clock::parse_rfc3339_ms;
use vtbulk_mock::stats::Route;
use vtbulk_mock::{Fault, Faults, KeyConfig, Limits, MockConfig, MockServer};

/// An answer as it came off the wire.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

/// Sends one request on a fresh connection and reads the whole answer.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<Raw> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(req.as_bytes()).await?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).await?;
    let mut headers_buf = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers_buf);
    let head_len = match response.parse(&bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no complete head",
            ));
        }
    };
    Ok(Raw {
        status: response.code.unwrap_or(0),
        headers: response
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: bytes[head_len..].to_vec(),
    })
}

async fn get(addr: SocketAddr, path: &str, key: &str) -> Raw {
    request(addr, "GET", path, &[("x-apikey", key)], "")
        .await
        .expect("answer")
}

async fn start(config: MockConfig) -> MockServer {
    MockServer::start(config).await.expect("mock starts")
}

fn limited(key: &str, limits: Limits) -> MockConfig {
    MockConfig::with_keys(vec![KeyConfig::with_limits(key, limits)])
}

#[tokio::test]
async fn a_file_is_found_by_each_of_its_hashes_in_any_case_with_its_sha256_as_id() {
    let mock = start(MockConfig::default()).await;
    let file = mock.universe().hashes(42);
    let sha256 = file.sha256.to_string();
    for kind in HashKind::ALL {
        let id = file.of_kind(kind).to_string().to_ascii_uppercase();
        let raw = get(mock.addr(), &format!("/api/v3/files/{id}"), "testkey").await;
        assert_eq!(raw.status, 200, "{kind}");
        assert_eq!(raw.header("content-type"), Some("application/json"));
        assert_eq!(raw.header("content-encoding"), None);
        let v = raw.json();
        assert_eq!(v["data"]["id"], sha256.as_str());
        assert_eq!(v["data"]["type"], "file");
        assert_eq!(v["data"]["attributes"]["md5"], file.md5.to_string());
    }
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_404_not_found() {
    let mock = start(MockConfig::default()).await;
    let unknown = mock.universe().unknown_hash(HashKind::Md5, 1).to_string();
    for id in [unknown.as_str(), "not-a-hash", "abc"] {
        let raw = get(mock.addr(), &format!("/api/v3/files/{id}"), "testkey").await;
        assert_eq!(raw.status, 404, "{id}");
        assert_eq!(raw.error_code(), "NotFoundError");
        assert_eq!(
            raw.json()["error"]["message"],
            format!("File \"{id}\" not found")
        );
    }
}

#[tokio::test]
async fn the_real_eicar_answer_is_served_verbatim() {
    let mock = start(MockConfig::default()).await;
    let raw = get(
        mock.addr(),
        "/api/v3/files/44d88612fea8a8f36de82e1278abb02f",
        "testkey",
    )
    .await;
    assert_eq!(raw.status, 200);
    assert_eq!(raw.body, vtbulk_mock::universe::EICAR_JSON.as_bytes());
}

#[tokio::test]
async fn missing_and_wrong_keys_are_401_with_their_codes() {
    let mock = start(MockConfig::default()).await;
    let path = format!("/api/v3/files/{}", mock.universe().hashes(1).sha256);
    let raw = request(mock.addr(), "GET", &path, &[], "")
        .await
        .expect("answer");
    assert_eq!(
        (raw.status, raw.error_code().as_str()),
        (401, "AuthenticationRequiredError")
    );
    let raw = get(mock.addr(), &path, "wrong-key").await;
    assert_eq!(
        (raw.status, raw.error_code().as_str()),
        (401, "WrongCredentialsError")
    );
    let stats = mock.stats(true);
    assert!(stats.by_key.keys().any(|k| k == "missing"));
    assert!(stats.by_key.keys().any(|k| k.starts_with("unknown:")));
    assert!(
        !serde_json::to_string(&stats)
            .expect("json")
            .contains("wrong-key")
    );
}

#[tokio::test]
async fn gzip_only_for_clients_that_ask_the_way_virustotal_requires() {
    let mock = start(MockConfig::default()).await;
    let path = format!("/api/v3/files/{}", mock.universe().hashes(3).sha256);
    let plain = get(mock.addr(), &path, "testkey").await;

    let gz_headers = [
        ("x-apikey", "testkey"),
        ("accept-encoding", "gzip"),
        ("user-agent", "probe; gzip"),
    ];
    let gz = request(mock.addr(), "GET", &path, &gz_headers, "")
        .await
        .expect("answer");
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_end(&mut decoded)
        .expect("valid gzip");
    assert_eq!(decoded, plain.body);
    assert!(gz.body.len() * 3 < plain.body.len());

    // Accept-Encoding alone is not enough: the User-Agent must say gzip too.
    let no_ua = [
        ("x-apikey", "testkey"),
        ("accept-encoding", "gzip"),
        ("user-agent", "curl/8"),
    ];
    let raw = request(mock.addr(), "GET", &path, &no_ua, "")
        .await
        .expect("answer");
    assert_eq!(raw.header("content-encoding"), None);
    assert_eq!(raw.body, plain.body);

    // Error bodies stay uncompressed even when gzip is asked for.
    let unknown = format!(
        "/api/v3/files/{}",
        mock.universe().unknown_hash(HashKind::Sha256, 9)
    );
    let raw = request(mock.addr(), "GET", &unknown, &gz_headers, "")
        .await
        .expect("answer");
    assert_eq!(raw.status, 404);
    assert_eq!(raw.header("content-encoding"), None);
    assert_eq!(raw.error_code(), "NotFoundError");

    let log = mock.stats(true).log.expect("log");
    assert_eq!(
        log.iter().map(|e| e.gzip).collect::<Vec<_>>(),
        [false, true, false, false]
    );
}

#[tokio::test]
async fn the_minute_window_slides_under_a_frozen_clock() {
    let mock = start(limited("k", Limits::PUBLIC)).await;
    let t0 = parse_rfc3339_ms("2026-11-26T10:00:00Z").expect("time");
    mock.clock().freeze();
    mock.clock().set_ms(t0);
    let file = |i| format!("/api/v3/files/{}", mock.universe().hashes(i).sha256);
    for i in 0..4 {
        mock.clock().set_ms(t0 + i * 1_000);
        assert_eq!(
            get(mock.addr(), &file(i as u64), "k").await.status,
            200,
            "request {i}"
        );
    }
    mock.clock().set_ms(t0 + 59_000);
    let refused = get(mock.addr(), &file(4), "k").await;
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (429, "QuotaExceededError")
    );
    mock.clock().set_ms(t0 + 60_001);
    assert_eq!(
        get(mock.addr(), &file(4), "k").await.status,
        200,
        "first request left the window"
    );
    mock.clock().set_ms(t0 + 60_500);
    assert_eq!(get(mock.addr(), &file(5), "k").await.status, 429);

    let stats = mock.stats(true);
    let spent = |e: &vtbulk_mock::stats::LogEntry| e.status == 200;
    assert_eq!(stats.max_in_window(60_000, spent), 4);
    let key = &stats.by_key[&vtbulk_mock::key_id("k")];
    assert_eq!((key.total, key.spent), (7, 5), "refusals spend nothing");
}

#[tokio::test]
async fn the_daily_quota_resets_at_midnight_utc_and_the_monthly_on_the_first() {
    let limits = Limits {
        daily: Some(2),
        monthly: Some(3),
        ..Limits::default()
    };
    let mock = start(limited("k", limits)).await;
    mock.clock().freeze();
    let at = |s: &str| parse_rfc3339_ms(s).expect("time");
    let file = format!("/api/v3/files/{}", mock.universe().hashes(7).md5);
    let status_at = |t: &'static str| {
        mock.clock().set_ms(at(t));
        let file = file.clone();
        let addr = mock.addr();
        async move { get(addr, &file, "k").await }
    };
    assert_eq!(status_at("2026-11-30T23:59:00Z").await.status, 200);
    assert_eq!(status_at("2026-11-30T23:59:10Z").await.status, 200);
    let refused = status_at("2026-11-30T23:59:59.999Z").await;
    assert_eq!(refused.status, 429);
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("daily")
    );
    assert_eq!(
        status_at("2026-12-01T00:00:00Z").await.status,
        200,
        "new day, new month"
    );
    assert_eq!(status_at("2026-12-01T10:00:00Z").await.status, 200);
    assert_eq!(
        status_at("2026-12-02T00:00:01Z").await.status,
        200,
        "new day"
    );
    let refused = status_at("2026-12-02T00:00:02Z").await;
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("monthly")
    );
    assert_eq!(
        status_at("2027-01-01T00:00:00Z").await.status,
        200,
        "new month"
    );
    let windows: Vec<_> = mock
        .stats(true)
        .log
        .expect("log")
        .iter()
        .filter_map(|e| e.window)
        .collect();
    assert_eq!(windows.len(), 2);
}

#[tokio::test]
async fn the_clock_control_endpoint_moves_the_windows() {
    let mock = start(limited(
        "k",
        Limits {
            daily: Some(1),
            ..Limits::default()
        },
    ))
    .await;
    let set = r#"{"freeze": true, "set": "2026-11-26T23:59:59Z"}"#;
    let raw = request(
        mock.addr(),
        "POST",
        "/_mock/clock",
        &[("content-type", "application/json")],
        set,
    )
    .await
    .expect("answer");
    assert_eq!(raw.status, 200);
    assert_eq!(raw.json()["now"], "2026-11-26T23:59:59.000Z");
    assert_eq!(raw.json()["frozen"], true);
    let file = format!("/api/v3/files/{}", mock.universe().hashes(1).sha1);
    assert_eq!(get(mock.addr(), &file, "k").await.status, 200);
    assert_eq!(get(mock.addr(), &file, "k").await.status, 429);
    let raw = request(
        mock.addr(),
        "POST",
        "/_mock/clock",
        &[],
        r#"{"advance": "2s"}"#,
    )
    .await
    .expect("answer");
    assert_eq!(raw.json()["now"], "2026-11-27T00:00:01.000Z");
    assert_eq!(get(mock.addr(), &file, "k").await.status, 200);
    let raw = request(mock.addr(), "POST", "/_mock/clock", &[], r#"{"sett": 1}"#)
        .await
        .expect("answer");
    assert_eq!(raw.status, 400, "unknown fields are refused");
}

#[tokio::test]
async fn users_report_allowances_and_real_usage_including_the_preload() {
    let mut key = KeyConfig::parse("k:public,used-day=100,user=alice").expect("spec");
    key.preload.month = 1_000;
    let other = KeyConfig::unlimited("other");
    let mock = start(MockConfig::with_keys(vec![key, other])).await;
    for i in 0..3 {
        get(
            mock.addr(),
            &format!("/api/v3/files/{}", mock.universe().hashes(i).sha256),
            "k",
        )
        .await;
    }
    for id in ["k", "alice"] {
        let raw = get(mock.addr(), &format!("/api/v3/users/{id}"), "k").await;
        assert_eq!(raw.status, 200);
        let v = raw.json();
        assert_eq!(v["data"]["type"], "user");
        assert_eq!(v["data"]["id"], "alice");
        let q = &v["data"]["attributes"]["quotas"];
        assert_eq!(
            q["api_requests_hourly"],
            serde_json::json!({"allowed": 240, "used": 3})
        );
        assert_eq!(
            q["api_requests_daily"],
            serde_json::json!({"allowed": 500, "used": 103})
        );
        assert_eq!(
            q["api_requests_monthly"],
            serde_json::json!({"allowed": 15500, "used": 1003})
        );
    }
    let raw = get(mock.addr(), "/api/v3/users/k/overall_quotas", "k").await;
    assert_eq!(
        raw.json()["data"]["api_requests_daily"]["user"]["used"],
        103
    );
    // Another user's object has no quotas; its quota summary is forbidden.
    let raw = get(mock.addr(), "/api/v3/users/alice", "other").await;
    assert!(raw.json()["data"]["attributes"].get("quotas").is_none());
    let raw = get(mock.addr(), "/api/v3/users/alice/overall_quotas", "other").await;
    assert_eq!(
        (raw.status, raw.error_code().as_str()),
        (403, "ForbiddenError")
    );
    let raw = get(mock.addr(), "/api/v3/users/nobody", "k").await;
    assert_eq!(
        (raw.status, raw.error_code().as_str()),
        (404, "NotFoundError")
    );
    // Unlimited windows read as VirusTotal's premium allowances.
    let raw = get(mock.addr(), "/api/v3/users/other", "other").await;
    assert_eq!(
        raw.json()["data"]["attributes"]["quotas"]["api_requests_daily"]["allowed"],
        1_000_000_000
    );
}

fn with_faults(faults: Faults) -> MockConfig {
    MockConfig {
        faults,
        ..MockConfig::default()
    }
}

#[tokio::test]
async fn injected_server_errors_spend_quota_and_carry_their_codes() {
    for (fault, status, code) in [
        (Fault::Transient, 503, Some("TransientError")),
        (Fault::DeadlineExceeded, 504, Some("DeadlineExceededError")),
        (Fault::ServerError, 500, None),
    ] {
        let mock = start(with_faults(Faults::always(fault))).await;
        let raw = get(
            mock.addr(),
            &format!("/api/v3/files/{}", mock.universe().hashes(1).sha256),
            "testkey",
        )
        .await;
        assert_eq!(raw.status, status);
        match code {
            Some(code) => assert_eq!(raw.error_code(), code),
            None => assert!(
                raw.header("content-type")
                    .unwrap_or("")
                    .starts_with("text/html")
            ),
        }
        let stats = mock.stats(true);
        assert_eq!(stats.by_key[&vtbulk_mock::key_id("testkey")].spent, 1);
        assert_eq!(stats.log.expect("log")[0].fault, Some(fault));
    }
}

#[tokio::test]
async fn a_truncated_answer_is_a_complete_message_with_cut_json() {
    let mock = start(with_faults(Faults::always(Fault::Truncate))).await;
    let raw = get(
        mock.addr(),
        &format!("/api/v3/files/{}", mock.universe().hashes(1).sha256),
        "testkey",
    )
    .await;
    assert_eq!(raw.status, 200);
    assert_eq!(
        raw.header("content-length"),
        Some(raw.body.len().to_string().as_str())
    );
    let err = serde_json::from_slice::<serde_json::Value>(&raw.body).expect_err("cut JSON");
    assert!(err.is_eof());
}

#[tokio::test]
async fn a_reset_sends_half_the_announced_body_then_drops_the_connection() {
    let mock = start(with_faults(Faults::always(Fault::Reset))).await;
    let path = format!("/api/v3/files/{}", mock.universe().hashes(1).sha256);
    let mut stream = TcpStream::connect(mock.addr()).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nx-apikey: testkey\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("send");
    let mut bytes = Vec::new();
    let end = stream.read_to_end(&mut bytes).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200"), "{text:.100}");
    let announced: usize = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse().expect("number"))
        })
        .expect("content-length");
    let head = text.find("\r\n\r\n").expect("head") + 4;
    assert!(bytes.len() - head < announced, "the body stops short");
    assert!(bytes.len() - head > 0, "part of the body arrives");
    // Either the RST arrived as an error or the peer closed: both end the stream early.
    if let Err(e) = end {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
    }
}

#[tokio::test]
async fn a_too_many_requests_burst_refuses_without_spending() {
    let faults: Faults = "429=1,burst=3".parse().expect("spec");
    let mock = start(with_faults(faults)).await;
    for i in 0..3 {
        let raw = get(
            mock.addr(),
            &format!("/api/v3/files/{}", mock.universe().hashes(i).sha256),
            "testkey",
        )
        .await;
        assert_eq!(
            (raw.status, raw.error_code().as_str()),
            (429, "TooManyRequestsError")
        );
    }
    assert_eq!(
        mock.stats(false).by_key[&vtbulk_mock::key_id("testkey")].spent,
        0
    );
}

#[tokio::test]
async fn stats_count_ids_files_and_statuses_and_reset_clears_them() {
    let mock = start(limited(
        "k",
        Limits {
            daily: Some(3),
            ..Limits::default()
        },
    ))
    .await;
    let file = mock.universe().hashes(11);
    for h in [file.md5, file.sha256, file.sha256] {
        get(mock.addr(), &format!("/api/v3/files/{h}"), "k").await;
    }
    let unknown = mock.universe().unknown_hash(HashKind::Sha1, 2);
    assert_eq!(
        get(mock.addr(), &format!("/api/v3/files/{unknown}"), "k")
            .await
            .status,
        429
    );
    let stats = mock.stats(true);
    assert_eq!(stats.total, 4);
    assert_eq!(
        stats.by_file[&file.sha256.to_string()],
        3,
        "md5 and sha256 are one file"
    );
    assert_eq!(stats.by_id[&file.sha256.to_string()], 2);
    assert_eq!(stats.by_id[&file.md5.to_string()], 1);
    assert_eq!(stats.status_count(200), 3);
    assert_eq!(stats.status_count(429), 1);
    let log = stats.log.expect("log");
    assert!(log.iter().all(|e| e.route == Route::Files));
    assert_eq!(
        log[0].sha256.as_deref(),
        Some(file.sha256.to_string().as_str())
    );

    let raw = request(mock.addr(), "POST", "/_mock/reset", &[], "")
        .await
        .expect("answer");
    assert_eq!(raw.status, 200);
    assert_eq!(mock.stats(true).total, 0);
    assert_eq!(
        get(mock.addr(), &format!("/api/v3/files/{}", file.sha1), "k")
            .await
            .status,
        200,
        "usage reset too"
    );
    let over_http = get(mock.addr(), "/_mock/stats?log=0", "").await.json();
    assert_eq!(over_http["total"], 1);
    assert!(over_http.get("log").is_none());
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let mock = start(MockConfig::default()).await;
    let mut stream = TcpStream::connect(mock.addr()).await.expect("connect");
    let mut all = Vec::new();
    for i in 0..5u64 {
        let req = format!(
            "GET /api/v3/files/{} HTTP/1.1\r\nHost: x\r\nx-apikey: testkey\r\n\r\n",
            mock.universe().hashes(i).sha256
        );
        stream.write_all(req.as_bytes()).await.expect("send");
    }
    stream
        .write_all(b"GET /_mock/config HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    stream.read_to_end(&mut all).await.expect("read");
    let text = String::from_utf8_lossy(&all);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 6);
    assert_eq!(mock.stats(false).total, 5);
}
