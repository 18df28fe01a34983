//! The `vtbulk` binary as a user runs it, against vt-mock on loopback: golden output files,
//! exit codes, the output file protocol, and a canary key that must never show anywhere.

use std::path::{Path, PathBuf};
use std::process::Output;

use vtbulk_mock::{KeyConfig, MockConfig, MockServer};

use crate::common::{root, temp as temp_dir, text};

const CANARY: &str = "CANARY-3e1d9b5f-vtbulk-key-must-never-appear";

/// A cache directory of its own for every call, unless the arguments name a cache: no test
/// sees another's answers, and none touches the user's cache.
fn fresh_cache_home() -> PathBuf {
    temp_dir("cache-home")
}

/// Runs `vtbulk ARGS` (isolated, with `key` if any, and a cache directory of its own).
async fn vtbulk(args: &[&str], key: Option<&str>) -> Output {
    let cache_home = fresh_cache_home();
    let mut cmd = crate::common::vtbulk();
    cmd.args(args).env("XDG_CACHE_HOME", &cache_home);
    if let Some(key) = key {
        cmd.env("VT_API_KEY", key);
    }
    let out = cmd.output().await.expect("vtbulk runs");
    let _ = std::fs::remove_dir_all(&cache_home);
    out
}

async fn golden(format: &str, file: &str) {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let url = mock.url();
    let out = vtbulk(
        &[
            "enrich",
            "fixtures/iocs/incident.txt",
            "--api-url",
            &url,
            "--rate",
            "unlimited",
            "--concurrency",
            "1",
            "--format",
            format,
            "--quiet",
        ],
        Some("testkey"),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let path = root().join("fixtures/golden").join(file);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        std::fs::write(&path, &out.stdout).expect("write golden");
    }
    let expected = std::fs::read(&path).expect("golden file (UPDATE_GOLDEN=1 regenerates it)");
    assert_eq!(
        text(&out.stdout),
        text(&expected),
        "output differs from {}",
        path.display()
    );
}

#[tokio::test]
async fn csv_output_matches_the_golden_file() {
    golden("csv", "incident.csv").await;
}

#[tokio::test]
async fn ndjson_output_matches_the_golden_file() {
    golden("ndjson", "incident.ndjson").await;
}

#[tokio::test]
async fn the_golden_csv_header_is_the_documented_field_list() {
    let golden =
        std::fs::read_to_string(root().join("fixtures/golden/incident.csv")).expect("golden");
    let header = golden.lines().next().expect("header");
    let fields: Vec<&str> = vtbulk_output::Field::ALL.iter().map(|f| f.name()).collect();
    assert_eq!(header, fields.join(","));
    let guide = std::fs::read_to_string(root().join("docs/output.md")).expect("guide");
    for field in fields {
        assert!(
            guide.contains(&format!("`{field}`")),
            "docs/output.md documents field {field}"
        );
    }
}

fn assert_no_canary(what: &str, bytes: &[u8]) {
    assert!(!text(bytes).contains(CANARY), "the key leaked into {what}");
}

#[tokio::test]
async fn a_canary_key_never_appears_in_stdout_stderr_files_or_summary() {
    let mock = MockServer::start(MockConfig::with_keys(vec![KeyConfig::unlimited(CANARY)]))
        .await
        .expect("mock");
    let dir = temp_dir("canary");
    let (out_file, summary) = (dir.join("out.ndjson"), dir.join("summary.json"));
    let cache = dir.join("cache.sqlite3");
    let cache_arg = cache.to_str().expect("utf8").to_owned();
    let url = mock.url();
    for args in [
        vec![
            "enrich",
            "fixtures/iocs/incident.txt",
            "--api-url",
            &url,
            "--rate",
            "unlimited",
            "--format",
            "ndjson",
            "--raw",
            "--progress",
            "always",
            "--cache",
            &cache_arg,
        ],
        vec![
            "enrich",
            "fixtures/iocs/incident.txt",
            "--api-url",
            &url,
            "--rate",
            "unlimited",
            "-o",
            out_file.to_str().expect("utf8"),
            "--summary-json",
            summary.to_str().expect("utf8"),
            "--cache",
            &cache_arg,
            "--refresh",
        ],
        vec!["config", "--api-url", &url],
        vec!["quota", "--api-url", &url, "--cache", &cache_arg],
        vec![
            "plan",
            "fixtures/iocs/incident.txt",
            "--api-url",
            &url,
            "--cache",
            &cache_arg,
            "--json",
        ],
        vec!["cache", "stats", "--cache", &cache_arg],
        vec!["cache", "export", "--cache", &cache_arg],
    ] {
        let out = vtbulk(&args, Some(CANARY)).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert_no_canary("stdout", &out.stdout);
        assert_no_canary("stderr", &out.stderr);
    }
    assert_no_canary(
        "the output file",
        &std::fs::read(&out_file).expect("output"),
    );
    assert_no_canary("the summary", &std::fs::read(&summary).expect("summary"));
    // The cache (its WAL and its segment files included) holds answers, never the key; the
    // stored answers are gzipped as they came, so they are read inflated too.
    for suffix in ["", "-wal"] {
        let file = PathBuf::from(format!("{}{suffix}", cache.display()));
        if let Ok(bytes) = std::fs::read(&file) {
            assert_no_canary("the cache", &bytes);
        }
    }
    let answers = PathBuf::from(format!("{}-answers", cache.display()));
    let mut bodies = 0;
    for entry in std::fs::read_dir(&answers).expect("the answers directory") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read");
        assert_no_canary("a cache segment", &bytes);
        if path.extension().is_some_and(|x| x == "bodies") {
            use std::io::Read;
            let mut inflated = Vec::new();
            flate2::read::MultiGzDecoder::new(&bytes[..])
                .read_to_end(&mut inflated)
                .expect("gzip members");
            assert!(inflated.starts_with(b"{\"data\""), "answers as received");
            assert_no_canary("a stored answer", &inflated);
            bodies += 1;
        }
    }
    assert!(bodies > 0, "no stored answers were checked");
    // A wrong canary key: errors all around, and still no key anywhere.
    let wrong = format!("{CANARY}-wrong");
    let out = vtbulk(
        &[
            "enrich",
            "fixtures/iocs/incident.txt",
            "--api-url",
            &url,
            "--rate",
            "unlimited",
        ],
        Some(&wrong),
    )
    .await;
    assert_eq!(out.status.code(), Some(3));
    assert_no_canary("stdout", &out.stdout);
    assert_no_canary("stderr", &out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn quota_plan_and_a_spent_day_speak_of_the_keys_live_budget() {
    let key = KeyConfig::parse("k:public,used-day=123,used-hour=3").expect("key");
    let small = KeyConfig::parse("small:2/day").expect("key");
    let mock = MockServer::start(MockConfig::with_keys(vec![key, small]))
        .await
        .expect("mock");
    let url = mock.url();
    let out = vtbulk(&["quota", "--api-url", &url, "--json"], Some("k")).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(view["source"], "live");
    let day = &view["windows"][2];
    assert_eq!(
        (
            &day["window"],
            &day["allowed"],
            &day["used"],
            &day["remaining"]
        ),
        (
            &serde_json::json!("day"),
            &serde_json::json!(500),
            &serde_json::json!(123),
            &serde_json::json!(377)
        )
    );
    let table = vtbulk(&["quota", "--api-url", &url], Some("k")).await;
    // 377 left at 4/min take 5,655 s: the day's budget runs out today unless the test runs
    // in the last 94 minutes of the UTC day (a window of two minutes around the edge takes
    // either answer).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let left_today = 86_400 - now % 86_400;
    let table = text(&table.stdout);
    let runs_out = table.contains("today's budget would run out at");
    let lasts = table.contains("today's budget lasts the day");
    match left_today.abs_diff(5_655) {
        0..=120 => assert!(runs_out || lasts, "{table}"),
        _ if left_today > 5_655 => assert!(runs_out, "{table}"),
        _ => assert!(lasts, "{table}"),
    }

    let out = vtbulk(
        &[
            "plan",
            "fixtures/iocs/incident.txt",
            "--api-url",
            &url,
            "--json",
        ],
        Some("k"),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        plan["to_query"], plan["unique"],
        "a fresh cache: all to query"
    );
    // At 4/min the lookups take `requests_needed / 4` minutes: they fit today unless the
    // test runs that close to the end of the UTC day (two minutes around the edge take either
    // answer, as above).
    let needed = plan["seconds_at_rate"].as_f64().expect("seconds") as u64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let left_today = 86_400 - now % 86_400;
    let fits = plan["fits_today"].as_bool().expect("fits_today");
    match left_today.abs_diff(needed) {
        0..=120 => {}
        _ => assert_eq!(fits, left_today > needed, "{plan}"),
    }
    assert_eq!(mock.stats(false).by_id.len(), 0, "plan looked nothing up");

    let out = vtbulk(&["quota", "--api-url", &url], Some("wrong")).await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "a refused key: {}",
        text(&out.stderr)
    );

    // A key of 2 a day: the run stops, says which window and when it resets, exits 4.
    let out = vtbulk(
        &[
            "enrich",
            "fixtures/iocs/incident.txt",
            "--api-url",
            &url,
            "--rate",
            "unlimited",
        ],
        Some("small"),
    )
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("the day budget ran out") && stderr.contains("run again after"),
        "{stderr}"
    );
    assert!(text(&out.stdout).contains("quota_daily"));
}

#[tokio::test]
async fn a_wrong_key_exits_3_with_no_ok_records() {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let url = mock.url();
    let out = vtbulk(
        &[
            "enrich",
            "fixtures/iocs/incident.txt",
            "--api-url",
            &url,
            "--rate",
            "unlimited",
        ],
        Some("wrong"),
    )
    .await;
    assert_eq!(out.status.code(), Some(3));
    let stdout = text(&out.stdout);
    assert!(!stdout.lines().any(|l| l.contains(",ok,")));
    assert!(stdout.contains("WrongCredentialsError"));
    assert!(text(&out.stderr).contains("auth_failed"));
}

#[tokio::test]
async fn output_goes_to_a_partial_file_renamed_when_complete() {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let dir = temp_dir("partial");
    let target = dir.join("result.csv");
    let url = mock.url();
    let out = vtbulk(
        &[
            "enrich",
            "fixtures/iocs/incident.txt",
            "--api-url",
            &url,
            "--rate",
            "unlimited",
            "-q",
            "-o",
            target.to_str().expect("utf8"),
        ],
        Some("testkey"),
    )
    .await;
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert!(target.exists());
    assert!(!Path::new(&format!("{}.partial", target.display())).exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn usage_errors_exit_2_with_a_clear_message() {
    let out = vtbulk(
        &[
            "enrich",
            "no/such/file.txt",
            "--api-url",
            "http://127.0.0.1:9",
        ],
        Some("k"),
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("failed to read input no/such/file.txt"),
        "{}",
        text(&out.stderr)
    );
    let dir = temp_dir("usage");
    let target = dir.join("never.csv");
    let out = vtbulk(
        &[
            "enrich",
            "no/such/file.txt",
            "--api-url",
            "http://127.0.0.1:9",
            "-o",
            target.to_str().expect("utf8"),
        ],
        Some("k"),
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        !target.exists() && !dir.join("never.csv.partial").exists(),
        "no half file left behind"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let out = vtbulk(&["enrich", "--api-key-file", "-"], None).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("both come from stdin"),
        "{}",
        text(&out.stderr)
    );
    let out = vtbulk(&["enrich", "fixtures/iocs/incident.txt"], None).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no API key"));
    let out = vtbulk(
        &["enrich", "x", "--api-url", "http://example.com"],
        Some("k"),
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unencrypted"));
    let out = vtbulk(&["enrich", "x", "--fields", "input,colour"], Some("k")).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("colour"));
}

/// A generated list of `count` hashes the mock knows (mixed kinds), in a file of its own.
fn generated_list(mock: &MockServer, tag: &str, count: u64) -> PathBuf {
    let dir = temp_dir(tag);
    let path = dir.join("list.txt");
    let mut out = Vec::new();
    vtbulk_mock::generate::generate(
        mock.universe(),
        &vtbulk_mock::generate::GenSpec {
            count,
            ..Default::default()
        },
        &mut out,
    )
    .expect("list");
    std::fs::write(&path, out).expect("write list");
    path
}

#[tokio::test]
async fn a_closed_stdout_stops_the_lookups_and_exits_141() {
    use tokio::io::AsyncBufReadExt;
    let mock = MockServer::start(MockConfig {
        latency: vtbulk_mock::Latency::Fixed {
            delay: std::time::Duration::from_millis(5),
        },
        ..MockConfig::default()
    })
    .await
    .expect("mock");
    let list = generated_list(&mock, "pipe", 3000);
    let cache_home = fresh_cache_home();
    let mut child = crate::common::vtbulk()
        .args([
            "enrich",
            &list.display().to_string(),
            "--api-url",
            &mock.url(),
        ])
        .args([
            "--rate",
            "unlimited",
            "--concurrency",
            "4",
            "-q",
            "--cache",
            "off",
        ])
        .env("XDG_CACHE_HOME", &cache_home)
        .env("VT_API_KEY", "testkey")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("vtbulk starts");
    // `| head -1`: read one line, then close the pipe.
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = lines.next_line().await.expect("read").expect("a line");
    assert!(first.starts_with("input,"), "{first}");
    drop(lines);
    let out = child.wait_with_output().await.expect("vtbulk ends");
    assert_eq!(
        out.status.code(),
        Some(141),
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "a closed pipe is not an error to report"
    );
    let sent = mock.stats(false).total;
    assert!(
        sent < 1500,
        "{sent} of 3000 looked up after the output was closed"
    );
    let _ = std::fs::remove_dir_all(&cache_home);
}

#[tokio::test]
async fn an_unreachable_api_exits_6_with_one_clear_line_and_every_item_skipped() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let dir = temp_dir("unreachable");
    let summary = dir.join("summary.json");
    let url = format!("http://127.0.0.1:{port}");
    let out = vtbulk(
        &[
            "enrich",
            "fixtures/iocs/incident.txt",
            "--api-url",
            &url,
            "--rate",
            "unlimited",
            "-q",
            "--summary-json",
            &summary.display().to_string(),
        ],
        Some("testkey"),
    )
    .await;
    assert_eq!(out.status.code(), Some(6), "stderr: {}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("could not be reached"), "{stderr}");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).expect("summary")).expect("json");
    assert_eq!(s["outcome"], "unreachable");
    assert_eq!(s["exit_code"], 6);
    assert_eq!(s["requests"], 0);
    assert_eq!(s["skipped"], s["unique"]);
    let rows = text(&out.stdout);
    assert!(
        rows.lines()
            .skip(1)
            .all(|l| l.contains(",invalid,") || l.contains("api_unreachable")),
        "{rows}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The corpus's expected hashes, all files (the damaged file's expectation is a superset).
type Expectations = (
    Vec<String>,
    std::collections::BTreeSet<String>,
    std::collections::BTreeSet<String>,
    usize,
);

/// The corpus's files, expected hashes (exact sets; the sets of files cut short are
/// supersets, left out), expected URLs, domains and IPs (canonical, default kinds), and how
/// many files are damaged.
fn corpus_expectations() -> Expectations {
    let dir = root().join("fixtures/corpus");
    let mut files = Vec::new();
    let mut want = std::collections::BTreeSet::new();
    let mut others = std::collections::BTreeSet::new();
    let mut subset = 0;
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    names.sort();
    for name in names {
        if [".py", ".expected", ".indicators", ".indicators-all"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
        {
            continue;
        }
        if let Ok(list) = std::fs::read_to_string(dir.join(format!("{name}.indicators"))) {
            others.extend(
                list.lines()
                    .filter_map(|l| l.split_once(':'))
                    .map(|(_, v)| v.to_owned()),
            );
        }
        let expected =
            std::fs::read_to_string(dir.join(format!("{name}.expected"))).expect("expected");
        let mode = expected
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# "))
            .unwrap_or("");
        subset += usize::from(mode.contains("damaged"));
        if !mode.contains("at least") {
            want.extend(
                expected
                    .lines()
                    .filter(|l| !l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        files.push(format!("fixtures/corpus/{name}"));
    }
    (files, want, others, subset)
}

#[tokio::test]
async fn the_ioc_corpus_gives_its_hashes_in_both_output_formats_and_names_each_input() {
    let (files, want, want_others, damaged) = corpus_expectations();
    assert_eq!(
        damaged, 3,
        "three damaged files in the corpus: a gzip and a JSON array cut short, an NDJSON \
         whose last line is"
    );
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let url = mock.url();
    let dir = temp_dir("corpus");
    for format in ["csv", "ndjson"] {
        let summary = dir.join(format!("summary-{format}.json"));
        let summary_arg = summary.to_str().expect("utf-8").to_owned();
        let mut args: Vec<&str> = vec!["enrich"];
        args.extend(files.iter().map(String::as_str));
        args.extend([
            "--api-url",
            &url,
            "--rate",
            "unlimited",
            "--cache",
            "off",
            "--format",
            format,
            "--quiet",
            "--summary-json",
            &summary_arg,
        ]);
        let out = vtbulk(&args, Some("testkey")).await;
        // The truncated gzip, the JSON cut short and the binary are damage: everything else
        // completes, the run exits 1.
        assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
        let stderr = text(&out.stderr);
        for said in [
            "truncated_list.txt.gz: gzip data damaged or cut short",
            "truncated_array.json: the JSON ends inside",
            "mistaken_upload.elf: not read: an ELF executable",
        ] {
            assert!(stderr.contains(said), "{said}: {stderr}");
        }
        let mut found = std::collections::BTreeSet::new();
        let mut found_others = std::collections::BTreeSet::new();
        let mut invalid_origins = Vec::new();
        let mut keep = |status: &str, kind: &str, input: &str, origin: &str| {
            if status == "invalid" {
                invalid_origins.push(origin.to_owned());
            } else if matches!(kind, "url" | "domain" | "ip") {
                found_others.insert(input.to_owned());
            } else {
                found.insert(input.to_owned());
            }
        };
        if format == "csv" {
            let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
            let header = reader.headers().expect("header").clone();
            let col = |name: &str| header.iter().position(|h| h == name).expect(name);
            let (status, kind, input, origin) = (
                col("status"),
                col("kind"),
                col("input"),
                col("first_origin"),
            );
            for row in reader.records() {
                let row = row.expect("row");
                keep(&row[status], &row[kind], &row[input], &row[origin]);
            }
        } else {
            for line in text(&out.stdout).lines() {
                let v: serde_json::Value = serde_json::from_str(line).expect("ndjson");
                let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
                keep(&s("status"), &s("kind"), &s("input"), &s("first_origin"));
            }
        }
        let missed: Vec<_> = want.difference(&found).collect();
        assert!(missed.is_empty(), "{format}: missed {missed:?}");
        assert_eq!(found_others, want_others, "{format}: URLs, domains and IPs");
        // The rest of what was found comes from the lists cut short, which hold 1,000 and 10.
        let extra = found.difference(&want).count();
        assert!((404..=1010).contains(&extra), "{format}: {extra}");
        // Invalid values say where they are: the bad lines of the careless list and the
        // MISP md5 that is not one, and the damage itself.
        assert!(
            invalid_origins
                .iter()
                .any(|o| o == "fixtures/corpus/careless_list.txt.bz2:4"),
            "{invalid_origins:?}"
        );
        let s: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&summary).expect("summary")).expect("json");
        let inputs = s["inputs"].as_array().expect("inputs");
        assert_eq!(inputs.len(), files.len() + 1, "a zip's two members");
        assert_eq!(
            s["unique_indicators"].as_u64(),
            Some(want_others.len() as u64)
        );
        let by_name = |n: &str| {
            inputs
                .iter()
                .find(|i| i["name"].as_str().is_some_and(|x| x.ends_with(n)))
                .unwrap_or_else(|| panic!("{n} in {inputs:?}"))
        };
        assert_eq!(by_name("report.md")["format"], "text");
        assert_eq!(by_name("misp_event.json")["format"], "json");
        assert_eq!(by_name("crowdstrike_events.csv.zst")["compression"], "zstd");
        assert_eq!(by_name("get_filehash_utf16.csv")["encoding"], "utf-16le");
        assert!(by_name("truncated_list.txt.gz")["damage"].is_string());
        assert!(by_name("truncated_array.json")["damage"].is_string());
        assert_eq!(by_name("mistaken_upload.elf")["format"], "binary");
        assert!(by_name("mistaken_upload.elf")["skipped"].is_string());
        let cmdline = by_name("defender_cmdline_export.csv");
        assert_eq!(cmdline["from_text_columns"], 1, "{cmdline}");
        assert!(
            cmdline["text_columns"]
                .as_array()
                .is_some_and(|c| c.iter().any(|n| n == "ProcessCommandLine")),
            "{cmdline}"
        );
        assert_eq!(
            by_name("otx_pulse.csv")["excluded_by_reason"]["other_type"],
            3
        );
        assert!(s["excluded_by_reason"]["import_hash"].as_u64().unwrap_or(0) >= 5);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn fail_on_exits_5_when_a_record_matches_and_says_how_many_in_the_summary() {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let url = mock.url();
    let dir = temp_dir("fail-on");
    let summary = dir.join("summary.json");
    let summary_arg = summary.to_str().expect("utf-8").to_owned();
    let out_arg = dir.join("out.csv").to_str().expect("utf-8").to_owned();
    let run = |condition: &'static str| {
        let (url, summary_arg, out_arg) = (url.clone(), summary_arg.clone(), out_arg.clone());
        async move {
            vtbulk(
                &[
                    "enrich",
                    "fixtures/iocs/incident.txt",
                    "--api-url",
                    &url,
                    "--rate",
                    "unlimited",
                    "--quiet",
                    "--fail-on",
                    condition,
                    "--summary-json",
                    &summary_arg,
                    "-o",
                    &out_arg,
                ],
                Some("testkey"),
            )
            .await
        }
    };
    // The incident list holds EICAR (66 engines say malicious).
    let out = run("malicious>=50").await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).expect("summary")).expect("json");
    assert!(s["fail_on_matches"].as_u64().unwrap_or(0) >= 1, "{s}");
    assert_eq!(s["exit_code"], 5);
    let out = run("malicious>=1000, threat_category==nothing-like-this").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run("threat_label>=3").await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("is text"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The samples of a metrics file, parsed by a Prometheus text-format parser: name and labels
/// to value.
/// A metric's name, its labels (sorted) and its value.
type Sample = (String, Vec<(String, String)>, f64);

fn scrape(path: &Path) -> Vec<Sample> {
    let text = std::fs::read_to_string(path).expect("metrics file");
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid text format");
    scrape
        .samples
        .into_iter()
        .map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => v,
                other => panic!("unexpected {other:?}"),
            };
            let mut labels: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.sort();
            (s.metric, labels, value)
        })
        .collect()
}

#[tokio::test]
async fn the_metrics_file_parses_as_prometheus_text_and_keeps_the_last_success() {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let url = mock.url();
    let dir = temp_dir("metrics");
    let metrics = dir.join("vtbulk.prom");
    let summary = dir.join("summary.json");
    let (metrics_arg, summary_arg) = (
        metrics.to_str().expect("utf-8").to_owned(),
        summary.to_str().expect("utf-8").to_owned(),
    );
    let args = || {
        vec![
            "enrich".to_owned(),
            "fixtures/iocs/incident.txt".to_owned(),
            "--api-url".to_owned(),
            url.clone(),
            "--rate".to_owned(),
            "unlimited".to_owned(),
            "--quiet".to_owned(),
            "--metrics-file".to_owned(),
            metrics_arg.clone(),
            "--summary-json".to_owned(),
            summary_arg.clone(),
            "-o".to_owned(),
            dir.join("out.csv").to_str().expect("utf-8").to_owned(),
        ]
    };
    let first = args();
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    let out = vtbulk(&first, Some("testkey")).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).expect("summary")).expect("json");
    let samples = scrape(&metrics);
    let get = |name: &str, label: Option<(&str, &str)>| {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name && label.is_none_or(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| *v)
            .unwrap_or_else(|| panic!("{name} {label:?} in {samples:?}"))
    };
    assert_eq!(
        get("vtbulk_records", Some(("status", "ok"))),
        s["ok"].as_f64().expect("ok")
    );
    assert_eq!(
        get("vtbulk_records", Some(("status", "invalid"))),
        s["invalid"].as_f64().expect("invalid")
    );
    assert_eq!(
        get("vtbulk_requests", None),
        s["requests"].as_f64().expect("n")
    );
    assert_eq!(get("vtbulk_exit_code", None), 0.0);
    let success = get("vtbulk_last_success_timestamp_seconds", None);
    assert!(success > 1.7e9, "{success}");
    assert!(get("vtbulk_quota_remaining", Some(("window", "day"))) >= 0.0);
    // A run refused for its key writes its figures too, and keeps the last success.
    let out = vtbulk(&first, Some("wrong-key")).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let samples = scrape(&metrics);
    let again = |name: &str| {
        samples
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, v)| *v)
            .unwrap_or_else(|| panic!("{name}"))
    };
    assert_eq!(again("vtbulk_exit_code"), 3.0);
    assert_eq!(again("vtbulk_last_success_timestamp_seconds"), success);
    assert!(again("vtbulk_last_run_timestamp_seconds") >= success);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| n != "vtbulk.prom" && n != "summary.json" && n != "out.csv")
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn only_new_writes_and_looks_up_only_what_the_cache_had_not_seen() {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let url = mock.url();
    let dir = temp_dir("only-new");
    let cache = dir.join("cache.sqlite3");
    let fresh = dir.join("tonight.txt");
    let new = [
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "fedcba9876543210fedcba9876543210",
    ];
    std::fs::write(&fresh, format!("{}\n{}\n", new[0], new[1])).expect("list");
    let (cache_arg, fresh_arg) = (
        cache.to_str().expect("utf-8").to_owned(),
        fresh.to_str().expect("utf-8").to_owned(),
    );
    let summary = dir.join("summary.json");
    let summary_arg = summary.to_str().expect("utf-8").to_owned();
    let run = |inputs: Vec<String>, only_new: bool| {
        let (url, cache_arg, summary_arg) = (url.clone(), cache_arg.clone(), summary_arg.clone());
        async move {
            let mut args: Vec<String> = vec!["enrich".into()];
            args.extend(inputs);
            args.extend(
                [
                    "--api-url",
                    &url,
                    "--rate",
                    "unlimited",
                    "--cache",
                    &cache_arg,
                    "--format",
                    "ndjson",
                    "--quiet",
                    "--summary-json",
                    &summary_arg,
                ]
                .map(str::to_owned),
            );
            if only_new {
                args.push("--only-new".into());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            vtbulk(&args, Some("testkey")).await
        }
    };
    let yesterday = "fixtures/iocs/incident.txt".to_owned();
    let out = run(vec![yesterday.clone()], false).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let first: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).expect("summary")).expect("json");
    let lookups = || mock.stats(false).by_id.values().sum::<u64>();
    let lookups_before = lookups();
    let out = run(vec![yesterday, fresh_arg], true).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let written: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("ndjson"))
        .collect();
    let hashes: std::collections::BTreeSet<&str> = written
        .iter()
        .filter(|r| r["status"] != "invalid")
        .filter_map(|r| r["input"].as_str())
        .collect();
    assert_eq!(hashes, new.into_iter().collect());
    let second: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).expect("summary")).expect("json");
    assert_eq!(second["already_seen"], first["unique"]);
    assert_eq!(lookups() - lookups_before, 2, "only the new were asked");
    // Without the cache there is nothing to compare with.
    let out = vtbulk(
        &[
            "enrich",
            "fixtures/iocs/incident.txt",
            "--cache",
            "off",
            "--only-new",
        ],
        Some("testkey"),
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--only-new needs the cache"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_splunk_lookup_has_a_row_for_every_hash_of_every_file() {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let url = mock.url();
    let out = vtbulk(
        &[
            "enrich",
            "fixtures/iocs/incident.txt",
            "--api-url",
            &url,
            "--rate",
            "unlimited",
            "--quiet",
            "--format",
            "splunk-lookup",
            "--fields",
            "status,sha256,malicious,threat_label",
        ],
        Some("testkey"),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    assert_eq!(
        reader.headers().expect("header").iter().collect::<Vec<_>>(),
        ["hash", "status", "sha256", "malicious", "threat_label"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
    // EICAR is in the list by its MD5 and its SHA-1: every one of its hashes is a key, once.
    let eicar: Vec<&csv::StringRecord> = rows
        .iter()
        .filter(|r| &r[2] == "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f")
        .collect();
    let keys: std::collections::BTreeSet<&str> = eicar.iter().map(|r| &r[0]).collect();
    assert!(
        keys.contains("44d88612fea8a8f36de82e1278abb02f"),
        "{keys:?}"
    );
    assert!(keys.contains("3395856ce81f2b7382dee72602f798b642f14140"));
    assert!(keys.contains("275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"));
    let all: Vec<&str> = rows.iter().map(|r| &r[0]).collect();
    let unique: std::collections::BTreeSet<&str> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len(), "each key once");
    // Every found file is keyed by its SHA-256 at least (the hash a join most often has).
    // (URLs, domains and IPs are keyed by their canonical form, the input.)
    for row in rows.iter().filter(|r| &r[1] == "ok" && !r[2].is_empty()) {
        assert!(unique.contains(&row[2]), "{row:?} not keyed by its sha256");
    }
    assert_eq!(eicar.len(), 3);
    // Invalid values have no row; a file not found has its own hash as key.
    assert!(rows.iter().all(|r| &r[1] != "invalid"));
    assert!(
        rows.iter()
            .any(|r| &r[1] == "not_found" && r[0].len() == 64)
    );
}

#[tokio::test]
async fn output_to_a_symlink_or_a_fifo_keeps_what_the_path_is() {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let url = mock.url();
    let dir = temp_dir("special-outputs");
    // A symlink: the finished file replaces its target, the link stays a link.
    let target = dir.join("real.csv");
    let link = dir.join("link.csv");
    std::fs::write(&target, "old").expect("target");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let link_arg = link.to_str().expect("utf-8").to_owned();
    let base = [
        "enrich",
        "fixtures/iocs/incident.txt",
        "--api-url",
        &url,
        "--rate",
        "unlimited",
        "--quiet",
        "-o",
    ];
    let mut args = base.to_vec();
    args.push(&link_arg);
    let out = vtbulk(&args, Some("testkey")).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        std::fs::symlink_metadata(&link)
            .expect("link")
            .file_type()
            .is_symlink()
    );
    assert!(
        std::fs::read_to_string(&target)
            .expect("target")
            .starts_with("input,")
    );
    // A FIFO (like /dev/null or /dev/stdout, not a regular file): written in place, never
    // renamed over.
    let fifo = dir.join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let _ = tx.send(std::fs::read_to_string(fifo));
        });
    }
    let fifo_arg = fifo.to_str().expect("utf-8").to_owned();
    let mut args = base.to_vec();
    args.push(&fifo_arg);
    let out = vtbulk(&args, Some("testkey")).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // A bound, not a sleep: were the FIFO renamed over, its reader would wait for ever.
    let read = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the output reached the FIFO")
        .expect("read the fifo");
    assert!(read.starts_with("input,"), "{read}");
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(&fifo)
            .expect("fifo")
            .file_type()
            .is_fifo()
    );
    assert!(!dir.join("pipe.partial").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn schema_ecs_writes_threat_enrichment_documents_for_every_record() {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let url = mock.url();
    let out = vtbulk(
        &[
            "enrich",
            "fixtures/iocs/incident.txt",
            "--api-url",
            &url,
            "--rate",
            "unlimited",
            "--quiet",
            "--schema",
            "ecs",
        ],
        Some("testkey"),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let docs: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("ndjson"))
        .collect();
    let eicar = docs
        .iter()
        .find(|d| d["vtbulk"]["input"] == "44d88612fea8a8f36de82e1278abb02f")
        .expect("EICAR's document");
    let e = &eicar["threat"]["enrichments"][0];
    assert_eq!(e["indicator"]["type"], "file");
    assert_eq!(e["indicator"]["provider"], "VirusTotal");
    assert_eq!(e["matched"]["field"], "file.hash.md5");
    assert!(e["indicator"]["scanner_stats"].as_u64().unwrap_or(0) > 0);
    assert_eq!(eicar["event"]["kind"], "enrichment");
    // Every record is a document: invalid values too, as failures with their reason.
    assert!(
        docs.iter()
            .any(|d| d["event"]["outcome"] == "failure" && d["error"]["message"].is_string())
    );
    let out = vtbulk(
        &[
            "enrich",
            "fixtures/iocs/incident.txt",
            "--schema",
            "ecs",
            "--format",
            "csv",
        ],
        Some("testkey"),
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--schema ecs writes NDJSON"));
}

/// `vtbulk enrich --annotate` of `input` (a fixture path, or `-` with `stdin`) against a
/// fresh vt-mock: its exit status, stdout and stderr.
async fn annotate(input: &str, stdin: Option<Vec<u8>>, extra: &[&str]) -> Output {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let url = mock.url();
    let mut args = vec![
        "enrich",
        input,
        "--annotate",
        "--api-url",
        &url,
        "--rate",
        "unlimited",
        "--concurrency",
        "1",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    let Some(bytes) = stdin else {
        return vtbulk(&args, Some("testkey")).await;
    };
    let cache_home = fresh_cache_home();
    let mut child = crate::common::vtbulk()
        .args(&args)
        .env("XDG_CACHE_HOME", &cache_home)
        .env("VT_API_KEY", "testkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("vtbulk runs");
    let mut pipe = child.stdin.take().expect("stdin");
    let feed = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        pipe.write_all(&bytes).await.expect("feed stdin");
    });
    let out = child.wait_with_output().await.expect("vtbulk ends");
    feed.await.expect("fed");
    let _ = std::fs::remove_dir_all(&cache_home);
    out
}

fn check_golden(bytes: &[u8], file: &str) {
    let path = root().join("fixtures/golden").join(file);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, bytes).expect("write golden");
    }
    let expected = std::fs::read(&path).expect("golden file (UPDATE_GOLDEN=1 regenerates it)");
    assert_eq!(
        text(bytes),
        text(&expected),
        "differs from {}",
        path.display()
    );
}

const DEFENDER: &str = "fixtures/annotate/defender_process_events.csv";
const ECS: &str = "fixtures/annotate/elastic_process.ndjson";

#[tokio::test]
async fn annotate_writes_every_csv_row_back_unchanged_with_a_group_of_columns_per_hash_column() {
    let out = annotate(DEFENDER, None, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    check_golden(&out.stdout, "annotate_defender.csv");
    // Read both as CSV: each output record is its input record (quoting, the embedded line
    // break and all) followed by 5 cells for each of the 4 hash columns.
    let read = |bytes: &[u8]| -> Vec<csv::StringRecord> {
        csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(bytes)
            .records()
            .map(|r| r.expect("csv"))
            .collect()
    };
    let input = std::fs::read(root().join(DEFENDER)).expect("fixture");
    let (before, after) = (read(&input), read(&out.stdout));
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.len(), b.len() + 20);
        assert_eq!(
            a.iter().take(b.len()).collect::<Vec<_>>(),
            b.iter().collect::<Vec<_>>()
        );
    }
    let header: Vec<&str> = after[0].iter().skip(before[0].len()).collect();
    assert_eq!(
        header[..5],
        [
            "SHA1_vt_status",
            "SHA1_vt_malicious",
            "SHA1_vt_engines_total",
            "SHA1_vt_threat_label",
            "SHA1_vt_first_submission_date"
        ]
    );
    assert_eq!(header[5], "SHA256_vt_status");
    assert_eq!(header[10], "MD5_vt_status");
    assert_eq!(header[15], "InitiatingProcessSHA256_vt_status");
    let status = |row: usize, group: usize| after[row][before[row].len() + 5 * group].to_owned();
    assert_eq!(status(1, 0), "ok");
    assert_eq!(status(3, 1), "", "a row without hashes has empty cells");
    assert_eq!(status(4, 0), "", "a placeholder is no value");
    assert_eq!(status(4, 1), "ok", "an upper-case hash is joined");
    assert_eq!(status(4, 3), "not_found");
    assert_eq!(status(5, 1), "invalid", "63 digits in a hash column");
    assert_eq!(status(5, 3), "ok", "spaces around a hash");
    // The DeviceId looks like a SHA-1 and is an id: no group of its own.
    assert!(!header.iter().any(|h| h.starts_with("DeviceId")));
    // The line breaks are the input's: CRLF, and the one inside the quoted command line.
    assert!(text(&out.stdout).contains("whoami\"\"\r\nnext-line\","));
    assert_eq!(
        text(&out.stdout).matches("\r\n").count(),
        text(&input).matches("\r\n").count()
    );
}

#[tokio::test]
async fn annotate_of_a_gzipped_stdin_is_the_same_as_of_the_file() {
    use std::io::Write as _;
    let input = std::fs::read(root().join(DEFENDER)).expect("fixture");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&input).expect("gzip");
    let out = annotate("-", Some(gz.finish().expect("gzip")), &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    check_golden(&out.stdout, "annotate_defender.csv");
}

#[tokio::test]
async fn annotate_keeps_every_ndjson_member_and_appends_fields_per_hash_field() {
    let out = annotate(
        ECS,
        None,
        &["--fields", "status,malicious", "--prefix", "vt."],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    check_golden(&out.stdout, "annotate_elastic.ndjson");
    let input = std::fs::read_to_string(root().join(ECS)).expect("fixture");
    let output = text(&out.stdout);
    assert_eq!(input.lines().count(), output.lines().count());
    for (i, o) in input.lines().zip(output.lines()) {
        let Ok(serde_json::Value::Object(before)) = serde_json::from_str(i) else {
            assert_eq!(i, o, "a line that is not a JSON object passes through");
            continue;
        };
        let after: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(o).expect("still JSON");
        for (k, v) in &before {
            assert_eq!(after.get(k), Some(v), "member {k} kept");
        }
        for k in after.keys().filter(|k| !before.contains_key(*k)) {
            assert!(
                k.ends_with("_vt.status") || k.ends_with("_vt.malicious"),
                "{k}"
            );
        }
    }
    let docs: Vec<serde_json::Value> = output
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(docs[0]["process.hash.sha256_vt.status"], "ok");
    assert_eq!(docs[0]["process.parent.hash.sha256_vt.status"], "ok");
    assert_eq!(docs[2]["process.hash.sha256_vt.status"], "not_found");
    assert_eq!(
        docs[2]["file.hash.sha256_vt.status"], "ok",
        "a flattened ECS key"
    );
    assert_eq!(docs[3], serde_json::json!({}));
    assert_eq!(docs[4]["process.hash.sha256_vt.status"], "ok");
    assert!(
        docs[4].get("process.hash.md5_vt.status").is_none(),
        "not a hash: no verdict"
    );
}

#[tokio::test]
async fn field_reads_only_the_named_json_fields_and_annotate_refuses_free_text_before_spending() {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let url = mock.url();
    let out = vtbulk(
        &[
            "enrich",
            ECS,
            "--field",
            "/process/hash/sha256",
            "--field",
            "process.hash.md5",
            "--api-url",
            &url,
            "--rate",
            "unlimited",
            "--format",
            "ndjson",
            "--quiet",
        ],
        Some("testkey"),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let records: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("ndjson"))
        .collect();
    let statuses: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["input"].as_str().unwrap_or(""),
                r["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    // Three process hashes and an MD5 (the parent's and file.hash are not named), one value
    // that is not a hash, and the line that is not JSON.
    assert_eq!(
        statuses.iter().filter(|(_, s)| *s == "invalid").count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(records.len(), 6, "{statuses:?}");
    let requests_before = mock.stats(false).by_id.values().sum::<u64>();
    let out = vtbulk(
        &[
            "enrich",
            "fixtures/iocs/incident.txt",
            "--annotate",
            "--input-format",
            "text",
            "--api-url",
            &url,
            "--rate",
            "unlimited",
            "--quiet",
        ],
        Some("testkey"),
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--annotate writes back CSV/TSV and NDJSON rows only"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    assert_eq!(
        mock.stats(false).by_id.values().sum::<u64>(),
        requests_before
    );
}

#[tokio::test]
async fn annotate_and_only_new_together_exit_2_before_any_lookup() {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let url = mock.url();
    let out = vtbulk(
        &[
            "enrich",
            DEFENDER,
            "--annotate",
            "--only-new",
            "--api-url",
            &url,
            "--quiet",
        ],
        Some("testkey"),
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--only-new"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    assert_eq!(mock.stats(false).by_id.values().sum::<u64>(), 0);
}

#[tokio::test]
async fn cache_get_stats_and_export_take_urls_domains_and_ips() {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let url = mock.url();
    let dir = temp_dir("cache-others");
    let cache = dir.join("cache.sqlite3");
    let cache_arg = cache.to_str().expect("utf-8").to_owned();
    let out = vtbulk(
        &[
            "enrich",
            "fixtures/corpus/network_iocs.txt",
            "--api-url",
            &url,
            "--rate",
            "unlimited",
            "--cache",
            &cache_arg,
            "--quiet",
        ],
        Some("testkey"),
    )
    .await;
    // The list's bad line makes the run exit 0 with an invalid record (no lookup failed).
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Asked for as written in a report (defanged, upper case): the canonical entry answers.
    let got = vtbulk(
        &["cache", "get", "185.244.25[.]13", "--cache", &cache_arg],
        None,
    )
    .await;
    assert_eq!(got.status.code(), Some(0), "{}", text(&got.stderr));
    let v: serde_json::Value = serde_json::from_slice(&got.stdout).expect("json");
    assert_eq!(v["kind"], "ip");
    assert_eq!(v["input"], "185.244.25.13");
    assert_eq!(v["status"], "found");
    assert_eq!(v["fresh"], true);
    assert_eq!(v["data"]["type"], "ip_address");
    assert!(v["data"]["attributes"]["asn"].is_u64());
    let missing = vtbulk(
        &["cache", "get", "never-seen.org", "--cache", &cache_arg],
        None,
    )
    .await;
    assert_ne!(missing.status.code(), Some(0));
    assert!(text(&missing.stderr).contains("never-seen.org is not in the cache"));
    let stats = vtbulk(&["cache", "stats", "--json", "--cache", &cache_arg], None).await;
    let s: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("json");
    let total = |k: &str| {
        s["objects"][k]["found"].as_i64().unwrap_or(0)
            + s["objects"][k]["not_found"].as_i64().unwrap_or(0)
    };
    assert_eq!((total("url"), total("domain"), total("ip")), (3, 3, 3));
    let export = vtbulk(&["cache", "export", "--cache", &cache_arg], None).await;
    assert_eq!(export.status.code(), Some(0));
    let lines: Vec<serde_json::Value> = text(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("ndjson"))
        .collect();
    assert_eq!(lines.len(), 9, "every stored URL, domain and IP once");
    assert!(lines.iter().any(|l| l["input"] == "panel.bad-cdn.top"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn plan_counts_what_submissions_can_cost_and_a_public_key_is_warned() {
    let plan = vtbulk(
        &[
            "plan",
            "fixtures/corpus/network_iocs.txt",
            "--submit-unknown-urls",
            "--offline-quota",
            "--cache",
            "off",
            "--json",
        ],
        Some("testkey"),
    )
    .await;
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stderr));
    let p: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("json");
    // Three URLs, each at worst a submission, 12 polls in 10 minutes and a second lookup.
    assert_eq!(p["to_query"], 9);
    assert_eq!(p["submission_requests_max"], 3 * 14);
    assert_eq!(p["requests_needed"], 9 + 3 * 14);
    let dir = temp_dir("submit-public");
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "").expect("write");
    let run = vtbulk(
        &[
            "enrich",
            empty.to_str().expect("utf-8"),
            "--submit-unknown-urls",
            "--tier",
            "public",
            "--api-url",
            "http://127.0.0.1:9",
            "--cache",
            "off",
            "--quiet",
        ],
        Some("testkey"),
    )
    .await;
    assert!(
        text(&run.stderr).contains("shares what is submitted with its community"),
        "{}",
        text(&run.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_closed_stdin_is_a_clear_error_not_a_silent_empty_run() {
    // Closed (`<&-`), and /dev/null: exit 2 with one line, whatever --quiet says.
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("exec \"$0\" enrich - --offline-quota --cache off --quiet <&-")
        .arg(env!("CARGO_BIN_EXE_vtbulk"))
        .env("VT_API_KEY", "k")
        .output()
        .await
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("stdin is closed"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "no records, no header");
    let out = vtbulk(&["enrich", "--offline-quota", "--cache", "off"], Some("k")).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("stdin is closed"));
    // An empty pipe is an empty list: a completed run.
    let mut child = crate::common::vtbulk()
        .args(["enrich", "--offline-quota", "--cache", "off", "--quiet"])
        .env("VT_API_KEY", "k")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdin.take());
    let out = child.wait_with_output().await.expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[tokio::test]
async fn a_key_from_a_command_is_used_and_never_shown_nor_its_arguments() {
    let mock = MockServer::start(MockConfig::with_keys(vec![KeyConfig::unlimited(CANARY)]))
        .await
        .expect("mock");
    let url = mock.url();
    // No shell: the words are the program and its arguments (a vault CLI's shape).
    let command = format!("printf '%s\\n' {CANARY}");
    let out = vtbulk(
        &[
            "enrich",
            "fixtures/iocs/incident.txt",
            "--api-url",
            &url,
            "--rate",
            "unlimited",
            "--cache",
            "off",
            "--format",
            "ndjson",
            "--api-key-command",
            &command,
        ],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("\"status\":\"ok\""));
    assert_no_canary("stdout", &out.stdout);
    assert_no_canary("stderr", &out.stderr);
    let out = vtbulk(&["config", "--api-key-command", &command], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("[redacted] (from --api-key-command printf)"),
        "{}",
        text(&out.stdout)
    );
    assert_no_canary("config", &out.stdout);
    // A shell only when the command is one; a failing or missing program: exit 2, named,
    // its arguments not shown.
    let shell = format!("sh -c 'echo {CANARY}'");
    let out = vtbulk(&["config", "--api-key-command", &shell], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for (command, says) in [
        ("false secret-path-arg", "false failed"),
        (
            "no-such-vault-cli-7q secret-path-arg",
            "failed to run no-such-vault-cli-7q",
        ),
        ("printf ''", "empty"),
    ] {
        let out = vtbulk(&["config", "--api-key-command", command], None).await;
        assert_eq!(out.status.code(), Some(2), "{command}");
        let err = text(&out.stderr);
        assert!(err.contains(says), "{command}: {err}");
        assert!(!err.contains("secret-path-arg"), "{err}");
    }
    let out = vtbulk(
        &["config", "--api-key-command", "true", "--api-key-file", "k"],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn completions_and_manual_pages_come_from_the_same_definitions_as_help() {
    let out = vtbulk(&["completions", "bash"], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let script = text(&out.stdout);
    for word in [
        "enrich",
        "fleet",
        "--api-key-command",
        "--coordinator-grace",
    ] {
        assert!(
            script.contains(word),
            "{word} missing from the bash completion"
        );
    }
    // The script parses as bash.
    let dir = temp_dir("completions");
    let file = dir.join("vtbulk.bash");
    std::fs::write(&file, &script).expect("script");
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&file)
        .output()
        .expect("bash");
    assert!(check.status.success(), "{}", text(&check.stderr));
    for shell in ["zsh", "fish"] {
        let out = vtbulk(&["completions", shell], None).await;
        assert_eq!(out.status.code(), Some(0));
        assert!(text(&out.stdout).contains("enrich"), "{shell}");
    }
    assert_eq!(
        vtbulk(&["completions", "tcsh"], None).await.status.code(),
        Some(2)
    );
    let man = dir.join("man");
    let out = vtbulk(&["man", "--dir", man.to_str().expect("utf8")], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let page = std::fs::read_to_string(man.join("vtbulk.1")).expect("vtbulk.1");
    assert!(page.contains(".TH vtbulk 1"), "{page}");
    let enrich = std::fs::read_to_string(man.join("vtbulk-enrich.1")).expect("enrich page");
    assert!(enrich.contains("api\\-key\\-command"), "{enrich}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_at_its_file_or_command_mid_run_is_taken_up_on_the_401() {
    const OLD: &str = "CANARY-rotate-old-4c1e-never-shown";
    const NEW: &str = "CANARY-rotate-new-9b7a-never-shown";
    for via_command in [false, true] {
        let mock = MockServer::start(MockConfig::with_keys(vec![
            KeyConfig::unlimited(OLD),
            KeyConfig::unlimited(NEW),
        ]))
        .await
        .expect("mock");
        let dir = temp_dir(if via_command {
            "rotate-cmd"
        } else {
            "rotate-file"
        });
        let key_file = dir.join("vt.key");
        std::fs::write(&key_file, format!("{OLD}\n")).expect("key file");
        let list = dir.join("list.txt");
        let hashes: String = (0..40)
            .map(|i| format!("{}\n", mock.universe().hashes(i).sha256))
            .collect();
        std::fs::write(&list, hashes).expect("list");
        let summary = dir.join("summary.json");
        let key_path = key_file.to_str().expect("utf8").to_owned();
        let command = format!("cat {key_path}");
        let mut cmd = crate::common::vtbulk();
        cmd.args([
            "enrich",
            "--rate",
            "1200/min",
            "--tier",
            "unlimited",
            "--cache",
            "off",
        ])
        .args(["--format", "ndjson", "--quiet", "--api-url", &mock.url()])
        .arg("--summary-json")
        .arg(&summary)
        .arg(&list)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        if via_command {
            cmd.args(["--api-key-command", &command]);
        } else {
            cmd.args(["--api-key-file", &key_path]);
        }
        let run = tokio::spawn(cmd.output());
        // A third of the way: the key is rotated at its source, the old one revoked.
        mock.wait_for(|s| s.total >= 14).await;
        std::fs::write(&key_file, format!("{NEW}\n")).expect("rotate");
        assert!(mock.revoke(OLD));
        let out = run.await.expect("task").expect("runs");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let records = text(&out.stdout);
        assert_eq!(
            records.matches("\"status\":\"ok\"").count(),
            40,
            "{records}"
        );
        for bytes in [&out.stdout, &out.stderr] {
            for key in [OLD, NEW] {
                assert!(!text(bytes).contains(key));
            }
        }
        let s: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&summary).expect("summary")).expect("json");
        assert_eq!(s["key_rotations"], 1, "{s}");
        let log = mock.stats(true).log.expect("log");
        let refused = log.iter().filter(|e| e.status == 401).count();
        assert!(refused >= 1, "the old key was refused at least once");
        let new_id = vtbulk_mock::key_id(NEW);
        assert!(log.iter().filter(|e| e.key == new_id).count() >= 20);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[tokio::test]
async fn a_huge_field_from_virustotal_is_cut_in_the_record_and_counted_in_the_summary() {
    // VirusTotal's EICAR answer with other hashes and a 1 MB name.
    let mut answer: serde_json::Value =
        serde_json::from_str(vtbulk_mock::universe::EICAR_JSON).expect("json");
    let sha256 = "ab".repeat(32);
    let attrs = &mut answer["data"]["attributes"];
    attrs["sha256"] = sha256.clone().into();
    attrs["sha1"] = "cd".repeat(20).into();
    attrs["md5"] = "ef".repeat(16).into();
    attrs["meaningful_name"] = "x".repeat(1 << 20).into();
    answer["data"]["id"] = sha256.clone().into();
    let fixture = vtbulk_mock::universe::Fixture::from_json(&answer.to_string()).expect("fixture");
    let mock = MockServer::start(MockConfig {
        fixtures: vec![fixture],
        ..MockConfig::with_keys(vec![KeyConfig::unlimited(CANARY)])
    })
    .await
    .expect("mock");
    let dir = temp_dir("huge-field");
    let list = dir.join("list.txt");
    std::fs::write(&list, format!("{sha256}\n")).expect("list");
    let summary = dir.join("summary.json");
    let url = mock.url();
    let out = vtbulk(
        &[
            "enrich",
            list.to_str().expect("utf8"),
            "--api-url",
            &url,
            "--tier",
            "unlimited",
            "--rate",
            "unlimited",
            "--cache",
            "off",
            "--format",
            "ndjson",
            "--quiet",
            "--summary-json",
            summary.to_str().expect("utf8"),
        ],
        Some(CANARY),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one record");
    let name = record["meaningful_name"].as_str().expect("name");
    assert!(
        name.len() <= vtbulk_output::FIELD_CAP,
        "{} bytes",
        name.len()
    );
    assert!(name.ends_with(vtbulk_output::CUT_MARK));
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).expect("summary")).expect("json");
    assert_eq!(s["fields_cut"], 1, "{s}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_exports_other_columns_are_text_unless_columns_only_and_a_binary_is_skipped() {
    let plan = |extra: &'static [&'static str]| async move {
        let mut args = vec![
            "plan",
            "fixtures/corpus/defender_cmdline_export.csv",
            "fixtures/corpus/mistaken_upload.elf",
            "--kinds",
            "all",
            "--offline-quota",
            "--cache",
            "off",
            "--json",
        ];
        args.extend(extra);
        let out = vtbulk(&args, Some("testkey")).await;
        let p: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        (out, p)
    };
    let (out, p) = plan(&[]).await;
    assert!(
        text(&out.stderr).contains("mistaken_upload.elf: not read: an ELF executable"),
        "{}",
        text(&out.stderr)
    );
    let export = &p["inputs"][0];
    // The PowerShell comparison's hash and two URLs come from the command-line column.
    assert_eq!(export["from_text_columns"], 3, "{export}");
    assert_eq!(export["hashes"], 4, "{export}");
    assert_eq!(p["inputs"][1]["format"], "binary");
    let (_, p) = plan(&["--columns-only"]).await;
    let export = &p["inputs"][0];
    assert_eq!(export["hashes"], 3, "{export}");
    assert!(export["from_text_columns"].is_null(), "{export}");
    assert!(export["text_columns"].is_null(), "{export}");
    // Forced to text, the binary is read (its strings hold one MD5-shaped token).
    let (_, p) = plan(&["--input-format", "text"]).await;
    assert_eq!(p["inputs"][1]["format"], "text");
    assert_eq!(p["inputs"][1]["hashes"], 1);
}
