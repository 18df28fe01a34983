//! The client against vt-mock on loopback, and the models against recorded VirusTotal JSON.
//!
//! Every answer the client can meet is produced for real by the mock: 200 (gzipped or not),
//! 404, 401, 429, 503, 500 without a JSON body, a truncated body, a reset, a stall that only a
//! timeout ends (under tokio's paused clock, so the test does not wait).

use std::path::PathBuf;
use std::time::Duration;

use vtbulk_ioc::{Hash, HashKind};
use vtbulk_mock::{Fault, Faults, KeyConfig, Limits, MockConfig, MockServer};
use vtbulk_vt::models::{self, ErrorBody, FileObject, OverallQuotas, UserObject};
use vtbulk_vt::{
    ApiKey, Client, ClientConfig, ClientError, ErrorClass, ErrorKind, FileLookup, RateLimitKind,
};

const CANARY: &str = "CANARY-0f9a2c71-this-key-must-never-be-shown";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/vt")
}

fn client_for(mock: &MockServer, key: &str) -> Client {
    client_with(mock, key, |_| {})
}

fn client_with(mock: &MockServer, key: &str, tweak: impl FnOnce(&mut ClientConfig)) -> Client {
    let mut config = ClientConfig {
        host: mock.url(),
        ..ClientConfig::default()
    };
    tweak(&mut config);
    Client::new(ApiKey::new(key).expect("valid key"), &config).expect("client builds")
}

async fn start(config: MockConfig) -> MockServer {
    MockServer::start(config).await.expect("mock starts")
}

fn found(lookup: FileLookup) -> Box<FileObject> {
    match lookup {
        FileLookup::Found(file) => file,
        FileLookup::NotFound => panic!("expected a file, got not found"),
    }
}

#[tokio::test]
async fn a_lookup_by_md5_returns_the_file_with_its_sha256_id_and_parsed_attributes() {
    let mock = start(MockConfig::default()).await;
    let client = client_for(&mock, "testkey");
    let hashes = mock.universe().hashes(17);
    let file = found(client.get_file(&hashes.md5).await.expect("lookup"));
    assert_eq!(file.id, hashes.sha256.to_string());
    assert_eq!(file.object_type, "file");
    let a = &file.attributes;
    assert_eq!(a.md5.as_deref(), Some(hashes.md5.to_string().as_str()));
    assert_eq!(a.sha1.as_deref(), Some(hashes.sha1.to_string().as_str()));
    let stats = a.last_analysis_stats.expect("stats");
    assert_eq!(
        stats.engines_total() as usize,
        a.last_analysis_results.parse().expect("results").len()
    );
    assert_eq!(a.last_analysis_results.parse().expect("results").len(), 70);
    assert!(a.size.is_some() && a.type_description.is_some() && a.meaningful_name.is_some());
    assert!(a.first_submission_date <= a.last_analysis_date);
    assert!(file.raw.is_none(), "raw is kept only on request");
    // The same file by sha1 is the same object.
    let again = found(client.get_file(&hashes.sha1).await.expect("lookup"));
    assert_eq!(again.id, file.id);
}

#[tokio::test]
async fn the_lean_summary_holds_the_same_values_as_the_full_object() {
    let mock = start(MockConfig::default()).await;
    for keep_raw in [false, true] {
        let client = client_with(&mock, "testkey", |c| c.keep_raw = keep_raw);
        let eicar = Hash::parse("44d88612fea8a8f36de82e1278abb02f").expect("hash");
        for hash in [eicar, mock.universe().hashes(17).sha1] {
            let full = found(client.get_file(&hash).await.expect("lookup"));
            let FileLookup::Found(lean) = client.get_file_summary(&hash).await.expect("lookup")
            else {
                panic!("expected a file");
            };
            let (f, l) = (&full.attributes, &lean.attributes);
            assert_eq!(lean.id, full.id);
            assert_eq!((&l.md5, &l.sha1, &l.sha256), (&f.md5, &f.sha1, &f.sha256));
            assert_eq!(
                (l.size, &l.type_description, &l.type_tag),
                (f.size, &f.type_description, &f.type_tag)
            );
            assert_eq!(
                (&l.meaningful_name, &l.tags, l.reputation),
                (&f.meaningful_name, &f.tags, f.reputation)
            );
            assert_eq!(
                (
                    l.times_submitted,
                    l.first_submission_date,
                    l.last_analysis_date
                ),
                (
                    f.times_submitted,
                    f.first_submission_date,
                    f.last_analysis_date
                )
            );
            assert_eq!(l.last_analysis_stats, f.last_analysis_stats);
            assert_eq!(
                l.popular_threat_classification.as_ref().map(|c| (
                    c.suggested_threat_label.clone(),
                    c.top_category().map(str::to_owned),
                    c.top_name().map(str::to_owned)
                )),
                f.popular_threat_classification.as_ref().map(|c| (
                    c.suggested_threat_label.clone(),
                    c.top_category().map(str::to_owned),
                    c.top_name().map(str::to_owned)
                ))
            );
            assert!(l.md5.is_some() && l.last_analysis_stats.is_some());
            assert_eq!(
                lean.raw.as_ref().map(|r| r.get()),
                full.raw.as_ref().map(|r| r.get())
            );
            assert_eq!(lean.raw.is_some(), keep_raw);
        }
    }
}

#[tokio::test]
async fn keep_raw_keeps_the_data_object_as_sent() {
    let mock = start(MockConfig::default()).await;
    let client = client_with(&mock, "testkey", |c| c.keep_raw = true);
    let eicar = Hash::parse("275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f")
        .expect("hash");
    let file = found(client.get_file(&eicar).await.expect("lookup"));
    let raw: serde_json::Value =
        serde_json::from_str(file.raw.as_ref().expect("raw").get()).expect("json");
    assert_eq!(raw["attributes"]["meaningful_name"], "eicar.com-32189");
    assert_eq!(
        file.attributes.last_analysis_stats.map(|s| s.malicious),
        Some(66)
    );
}

#[tokio::test]
async fn an_unknown_hash_is_a_not_found_result_not_an_error() {
    let mock = start(MockConfig::default()).await;
    let client = client_for(&mock, "testkey");
    let unknown = mock.universe().unknown_hash(HashKind::Sha256, 3);
    assert!(matches!(
        client.get_file(&unknown).await,
        Ok(FileLookup::NotFound)
    ));
}

#[tokio::test]
async fn a_wrong_key_is_fatal_and_its_error_never_shows_the_key() {
    let mock = start(MockConfig::default()).await;
    let client = client_for(&mock, CANARY);
    let err = client
        .get_file(&mock.universe().hashes(1).sha256)
        .await
        .expect_err("wrong key");
    assert_eq!(err.kind(), ErrorKind::WrongCredentials);
    assert_eq!(err.class(), ErrorClass::Fatal);
    assert_eq!(err.status(), Some(401));
    let err = client.get_own_user().await.expect_err("wrong key");
    assert_eq!(err.class(), ErrorClass::Fatal);
    let shown = format!("{err} {err:?} {client:?}");
    assert!(!shown.contains(CANARY), "{shown}");
}

#[tokio::test]
async fn transport_errors_on_the_users_path_never_show_the_key() {
    // The users URL holds the key: no error may carry a URL, and the key is scrubbed.
    let mock = start(MockConfig::default()).await;
    let url = mock.url();
    drop(mock);
    let config = ClientConfig {
        host: url,
        connect_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    };
    let client = Client::new(ApiKey::new(CANARY).expect("key"), &config).expect("client");
    let err = client.get_own_user().await.expect_err("nothing listens");
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert_eq!(err.class(), ErrorClass::Retry);
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(CANARY), "{shown}");
    let err = client
        .own_overall_quotas()
        .await
        .expect_err("nothing listens");
    assert!(!format!("{err} {err:?}").contains(CANARY));
}

#[tokio::test]
async fn quota_exhaustion_is_rate_limited_quota_exceeded() {
    let mock = start(MockConfig::with_keys(vec![KeyConfig::with_limits(
        "k",
        Limits {
            per_minute: Some(1),
            ..Limits::default()
        },
    )]))
    .await;
    let client = client_for(&mock, "k");
    client
        .get_file(&mock.universe().hashes(1).md5)
        .await
        .expect("first passes");
    let err = client
        .get_file(&mock.universe().hashes(2).md5)
        .await
        .expect_err("second is over the minute quota");
    assert_eq!(err.kind(), ErrorKind::QuotaExceeded);
    assert_eq!(
        err.class(),
        ErrorClass::RateLimited(RateLimitKind::QuotaExceeded)
    );
    assert_eq!(err.code(), "QuotaExceededError");
}

async fn error_under(fault: Fault) -> vtbulk_vt::Error {
    let mock = start(MockConfig {
        faults: Faults::always(fault),
        ..MockConfig::default()
    })
    .await;
    let client = client_for(&mock, "testkey");
    client
        .get_file(&mock.universe().hashes(5).sha256)
        .await
        .expect_err("the fault must surface")
}

#[tokio::test]
async fn server_side_failures_are_retryable_with_their_codes() {
    let err = error_under(Fault::Transient).await;
    assert_eq!(
        (err.kind(), err.status(), err.class()),
        (ErrorKind::Transient, Some(503), ErrorClass::Retry)
    );
    let err = error_under(Fault::DeadlineExceeded).await;
    assert_eq!(
        (err.kind(), err.class()),
        (ErrorKind::DeadlineExceeded, ErrorClass::Retry)
    );
    let err = error_under(Fault::ServerError).await;
    assert_eq!(
        (err.kind(), err.status(), err.class()),
        (ErrorKind::ServerError, Some(500), ErrorClass::Retry)
    );
    let err = error_under(Fault::TooManyRequests).await;
    assert_eq!(
        err.class(),
        ErrorClass::RateLimited(RateLimitKind::TooManyRequests)
    );
}

#[tokio::test]
async fn a_truncated_body_is_retryable() {
    let err = error_under(Fault::Truncate).await;
    assert_eq!(err.kind(), ErrorKind::TruncatedBody);
    assert_eq!(err.class(), ErrorClass::Retry);
}

#[tokio::test]
async fn a_reset_mid_body_is_retryable() {
    let err = error_under(Fault::Reset).await;
    assert!(
        matches!(
            err.kind(),
            ErrorKind::ConnectionReset | ErrorKind::TruncatedBody
        ),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Retry);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_request_ends_in_a_retryable_timeout() {
    // The mock holds the request for 120 s; the client gives up at 30 s. With the clock
    // paused, tokio jumps to the client's deadline as soon as nothing else can happen.
    let mock = start(MockConfig {
        faults: Faults::always(Fault::Stall),
        ..MockConfig::default()
    })
    .await;
    let client = client_with(&mock, "testkey", |c| {
        c.request_timeout = Duration::from_secs(30)
    });
    let started = tokio::time::Instant::now();
    let err = client
        .get_file(&mock.universe().hashes(5).sha256)
        .await
        .expect_err("stalls");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert_eq!(err.class(), ErrorClass::Retry);
    assert_eq!(started.elapsed().as_secs(), 30);
}

#[tokio::test]
async fn gzip_on_and_off_both_parse_and_the_mock_saw_which() {
    let mock = start(MockConfig::default()).await;
    let hash = mock.universe().hashes(9).sha256;
    let gz = found(
        client_for(&mock, "testkey")
            .get_file(&hash)
            .await
            .expect("gzip"),
    );
    let plain_client = client_with(&mock, "testkey", |c| c.gzip = false);
    let plain = found(plain_client.get_file(&hash).await.expect("plain"));
    assert_eq!(gz.id, plain.id);
    assert_eq!(
        gz.attributes.last_analysis_stats,
        plain.attributes.last_analysis_stats
    );
    let log = mock.stats(true).log.expect("log");
    assert_eq!(
        log.iter().map(|e| e.gzip).collect::<Vec<_>>(),
        [true, false]
    );
}

#[tokio::test]
async fn a_kept_body_is_the_answer_as_sent_gzipped_or_plain() {
    use std::io::Read;
    let mock = start(MockConfig::default()).await;
    let hash = mock.universe().hashes(11).sha256;
    let mut bodies = Vec::new();
    for gzip in [true, false] {
        let client = client_with(&mock, "testkey", |c| {
            c.gzip = gzip;
            c.keep_body = true;
        });
        let FileLookup::Found(file) = client.get_file_summary(&hash).await.expect("lookup") else {
            panic!("expected a file");
        };
        bodies.push(file.body.expect("body kept"));
    }
    let [models::Body::Gzip(zipped), models::Body::Json(plain)] = &bodies[..] else {
        panic!("expected a gzip body then a plain one, got {bodies:?}");
    };
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_end(&mut inflated)
        .expect("a gzip stream");
    assert_eq!(inflated, plain.to_vec());
    let answer: serde_json::Value = serde_json::from_slice(plain).expect("JSON");
    assert_eq!(answer["data"]["id"], hash.to_string());
}

#[tokio::test]
async fn own_user_and_overall_quotas_read_back_what_was_spent() {
    let mut key = KeyConfig::parse("k:public,used-day=10").expect("spec");
    key.user = "alice".into();
    let mock = start(MockConfig::with_keys(vec![key])).await;
    let client = client_for(&mock, "k");
    for i in 0..2 {
        client
            .get_file(&mock.universe().hashes(i).sha256)
            .await
            .expect("lookup");
    }
    let user = client.get_own_user().await.expect("user");
    assert_eq!(user.id, "alice");
    let daily = user.attributes.quotas[models::quota_names::DAILY];
    assert_eq!(
        (daily.allowed, daily.used, daily.remaining()),
        (500, 12, 488)
    );
    assert_eq!(user.attributes.quotas[models::quota_names::HOURLY].used, 2);
    let by_id = client.get_user("alice").await.expect("user by id");
    assert_eq!(
        by_id.attributes.quotas[models::quota_names::MONTHLY].allowed,
        15_500
    );
    let overall = client.own_overall_quotas().await.expect("overall");
    assert_eq!(
        overall[models::quota_names::DAILY].user.map(|q| q.used),
        Some(12)
    );
    let err = client.get_user("nobody").await.expect_err("no such user");
    assert_eq!(err.class(), ErrorClass::NotFound);
}

#[test]
fn plain_http_is_refused_off_loopback() {
    let config = ClientConfig {
        host: "http://www.virustotal.com".into(),
        ..ClientConfig::default()
    };
    let err = Client::new(ApiKey::new(CANARY).expect("key"), &config).expect_err("insecure");
    assert!(matches!(err, ClientError::Insecure { .. }));
    assert!(!err.to_string().contains(CANARY));
}

#[test]
fn models_parse_the_recorded_eicar_answer() {
    let text = std::fs::read_to_string(fixtures().join("file_eicar.json")).expect("fixture");
    let file: models::Envelope<FileObject> = serde_json::from_str(&text).expect("parses");
    let a = &file.data.attributes;
    assert_eq!(
        file.data.id,
        "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"
    );
    let stats = a.last_analysis_stats.expect("stats");
    assert_eq!(
        (stats.malicious, stats.undetected, stats.type_unsupported),
        (66, 5, 7)
    );
    assert_eq!(stats.engines_total(), 78);
    let ptc = a
        .popular_threat_classification
        .as_ref()
        .expect("classification");
    assert_eq!(
        ptc.suggested_threat_label.as_deref(),
        Some("virus.eicar/test")
    );
    assert_eq!(ptc.top_category(), Some("virus"));
    assert_eq!(ptc.top_name(), Some("eicar"));
    let results = a.last_analysis_results.parse().expect("results");
    assert_eq!(results["CMC"].result, None);
    assert_eq!(
        results["Kaspersky"].result.as_deref(),
        Some("EICAR-Test-File")
    );
    assert_eq!(a.sandbox_verdicts["Lastline"].confidence, None);
    assert_eq!(a.total_votes.map(|v| v.harmless), Some(2145));
    assert_eq!(a.size, Some(68));
    assert_eq!(a.names.len(), 6);
    assert_eq!(a.first_seen_itw_date, Some(1_582_585_760));
}

#[test]
fn models_parse_the_documented_user_and_quota_examples() {
    let text = std::fs::read_to_string(fixtures().join("user_docs_example.json")).expect("fixture");
    let user: models::Envelope<UserObject> = serde_json::from_str(&text).expect("parses");
    assert_eq!(
        user.data.attributes.quotas[models::quota_names::DAILY].allowed,
        1_000_000_000
    );
    assert_eq!(
        user.data.attributes.quotas["intelligence_downloads_monthly"].used,
        5
    );
    let text = std::fs::read_to_string(fixtures().join("overall_quotas_docs_example.json"))
        .expect("fixture");
    let overall: models::Envelope<OverallQuotas> = serde_json::from_str(&text).expect("parses");
    let daily = &overall.data[models::quota_names::DAILY];
    assert_eq!(daily.group.as_ref().map(|g| g.quota().used), Some(45_073));
    assert_eq!(
        daily
            .group
            .as_ref()
            .and_then(|g| g.inherited_from.as_deref()),
        Some("company")
    );
    assert_eq!(daily.user.map(|q| q.used), Some(17));
}

#[test]
fn every_recorded_error_body_parses_and_classifies_by_its_code() {
    let mut seen = 0;
    for entry in std::fs::read_dir(fixtures().join("errors")).expect("dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("name")
            .to_owned();
        let (status, code) = name.split_once('_').expect("STATUS_CODE.json");
        let bytes = std::fs::read(&path).expect("read");
        let body: ErrorBody = serde_json::from_slice(&bytes).expect("parses");
        assert_eq!(body.error.code, code);
        let err = vtbulk_vt::Error::from_response(status.parse().expect("status"), Some(&bytes));
        assert_eq!(
            err.kind(),
            ErrorKind::from_code(code).expect("known code"),
            "{name}"
        );
        assert_eq!(err.kind().code(), code);
        seen += 1;
    }
    assert_eq!(seen, 16, "one fixture per documented code");
}

#[test]
fn models_tolerate_missing_and_unknown_fields() {
    let json = r#"{"data": {"id": "x", "type": "file", "attributes": {"brand_new_field": [1, 2],
        "last_analysis_stats": {"malicious": 3}}, "relationships": {}}}"#;
    let file: models::Envelope<FileObject> = serde_json::from_str(json).expect("parses");
    let stats = file.data.attributes.last_analysis_stats.expect("stats");
    assert_eq!((stats.malicious, stats.engines_total()), (3, 3));
    assert!(file.data.attributes.popular_threat_classification.is_none());
    assert!(file.data.attributes.names.is_empty());
}

#[tokio::test]
async fn urls_domains_and_addresses_are_read_by_virustotals_ids_with_their_own_attributes() {
    use vtbulk_ioc::Kind;
    let mock = start(MockConfig::default()).await;
    let client = client_for(&mock, "testkey");
    let seed = mock.universe().seed();
    // A URL is asked for by its identifier (unpadded base64url): the mock decodes it back.
    let mut known_url = None;
    for i in 0..20 {
        let url = format!("https://login-{i}.evil.com/a/b?c=d&e=f");
        let id = vtbulk_ioc::indicator::url_id(&url);
        let expected =
            vtbulk_mock::objects::render(seed, vtbulk_mock::objects::ObjectKind::Url, &id);
        match client
            .get_object_summary(Kind::Url, &url)
            .await
            .expect("answer")
        {
            FileLookup::Found(object) => {
                assert!(expected.is_some(), "{url} found only if the mock knows it");
                assert_eq!(object.id, id);
                assert_eq!(object.kind, "url");
                assert_eq!(object.attributes.url.as_deref(), Some(url.as_str()));
                known_url.get_or_insert(object);
            }
            FileLookup::NotFound => assert!(expected.is_none(), "{url}"),
        }
    }
    let url = known_url.expect("some URL is known");
    assert!(url.attributes.last_final_url.is_some() && url.attributes.title.is_some());
    assert!(url.attributes.last_analysis_stats.is_some());
    let FileLookup::Found(ip) = client
        .get_object_summary(Kind::Ip, "2606:4700:4700::1111")
        .await
        .expect("answer")
    else {
        panic!("every address is known");
    };
    assert_eq!(ip.kind, "ip_address");
    assert_eq!(
        ip.attributes.network.as_deref(),
        Some("2606:4700:4700::/48")
    );
    assert!(ip.attributes.asn.is_some() && ip.attributes.country.is_some());
    let domain = (0..10)
        .map(|i| format!("shop{i}.example-store.com"))
        .find(|d| {
            vtbulk_mock::objects::render(seed, vtbulk_mock::objects::ObjectKind::Domain, d)
                .is_some()
        })
        .expect("a known domain");
    let FileLookup::Found(found) = client
        .get_object_summary(Kind::Domain, &domain)
        .await
        .expect("answer")
    else {
        panic!("{domain} is known");
    };
    assert!(found.attributes.registrar.is_some() && found.attributes.creation_date.is_some());
    assert!(!found.attributes.categories.is_empty());
}

/// A server whose every answer is a 200 with a chunked body that never ends.
async fn endless_bodies() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = vec![0u8; 8192];
                if socket.read(&mut request).await.unwrap_or(0) == 0 {
                    return;
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                            transfer-encoding: chunked\r\n\r\n";
                let mut chunk = b"10000\r\n".to_vec();
                chunk.extend(std::iter::repeat_n(b' ', 0x10000));
                chunk.extend_from_slice(b"\r\n");
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                while socket.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    url
}

#[tokio::test]
async fn endless_bodies_on_every_connection_each_end_as_an_error_within_the_budget() {
    let url = endless_bodies().await;
    let config = ClientConfig {
        host: url,
        // A deadlock between readers would wait for this; the test's own bound fails first.
        request_timeout: Duration::from_secs(600),
        answer_budget: vtbulk_vt::MAX_BODY,
        ..ClientConfig::default()
    };
    let client = Client::new(ApiKey::new("k").expect("key"), &config).expect("client");
    let hash = Hash::parse(&"ab".repeat(32)).expect("hash");
    let lookups = (0..8).map(|_| client.get_file_summary(&hash));
    let results = tokio::time::timeout(
        Duration::from_secs(120),
        futures_join_all(lookups.collect()),
    )
    .await
    .expect("no reader waits on another for ever");
    for result in results {
        let err = result.expect_err("an endless body is never an answer");
        assert_eq!(err.kind(), ErrorKind::InvalidBody, "{err}");
        assert_eq!(err.class(), ErrorClass::Retry);
        let text = err.to_string();
        assert!(
            text.contains("larger than") || text.contains("answer_budget"),
            "{text}"
        );
    }
}

/// Runs the futures together (on this task), their outputs in order.
async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futures.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}
