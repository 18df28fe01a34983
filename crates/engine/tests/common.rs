//! Helpers shared by the engine's integration tests: settings for a run against vt-mock, a
//! run whose output is read back as rows, generated input lists.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vtbulk_engine::{Concurrency, Counters, Outcome, Settings, StopHandle, Summary, run};
use vtbulk_ioc::InputFormat;
use vtbulk_mock::MockServer;
use vtbulk_mock::generate::{GenSpec, generate};
use vtbulk_output::Format;
use vtbulk_quota::BackoffPolicy;
use vtbulk_vt::{ApiKey, Client, ClientConfig};

/// A `Write` the test can read back after the engine is done with it.
#[derive(Clone, Default)]
pub struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf8")
    }
}

/// A run of `input` (plain lines) in `format`, 8 in flight, retries 10..100 ms apart, the
/// rest as the engine's defaults (no rate, no cache).
pub fn settings(input: &std::path::Path, format: Format) -> Settings {
    Settings {
        inputs: vec![input.to_string_lossy().into_owned()],
        input_format: InputFormat::Lines,
        format,
        concurrency: Concurrency::Fixed(8),
        backoff: BackoffPolicy {
            max_retries: 5,
            ..BackoffPolicy::doubling(Duration::from_millis(10), Duration::from_millis(100))
        },
        ..Settings::default()
    }
}

pub fn client(mock: &MockServer, key: &str) -> Client {
    let config = ClientConfig {
        host: mock.url(),
        ..ClientConfig::default()
    };
    Client::new(ApiKey::new(key).expect("key"), &config).expect("client")
}

pub struct Run {
    pub outcome: Outcome,
    pub summary: Summary,
    pub rows: Vec<HashMap<String, String>>,
}

/// A run with `client` and `settings` to its end: its outcome, summary and output.
pub async fn run_to_text(client: Client, settings: Settings) -> (Outcome, Summary, String) {
    let out = Shared::default();
    let (outcome, summary) = run(
        settings,
        client,
        Box::new(out.clone()),
        Arc::new(Counters::default()),
        StopHandle::default(),
    )
    .await
    .expect("run");
    (outcome, summary, out.text())
}

pub async fn enrich(mock: &MockServer, key: &str, settings: Settings) -> Run {
    let format = settings.format;
    let (outcome, summary, text) = run_to_text(client(mock, key), settings).await;
    let rows = match format {
        Format::Csv | Format::SplunkLookup => {
            let mut reader = csv::Reader::from_reader(text.as_bytes());
            let headers = reader.headers().expect("header").clone();
            reader
                .records()
                .map(|r| {
                    let r = r.expect("record");
                    headers
                        .iter()
                        .zip(r.iter())
                        .map(|(h, v)| (h.to_owned(), v.to_owned()))
                        .collect()
                })
                .collect()
        }
        Format::Ndjson | Format::Ecs => text
            .lines()
            .map(|l| {
                let v: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(l).expect("json line");
                v.into_iter()
                    .map(|(k, v)| {
                        (
                            k,
                            match v {
                                serde_json::Value::String(s) => s,
                                serde_json::Value::Null => String::new(),
                                o => o.to_string(),
                            },
                        )
                    })
                    .collect()
            })
            .collect(),
    };
    Run {
        outcome,
        summary,
        rows,
    }
}

pub fn write_list(
    dir: &std::path::Path,
    name: &str,
    mock: &MockServer,
    spec: &GenSpec,
) -> (std::path::PathBuf, vtbulk_mock::generate::GenMeta) {
    let path = dir.join(name);
    let mut out = Vec::new();
    let meta = generate(mock.universe(), spec, &mut out).expect("generate");
    std::fs::write(&path, out).expect("write list");
    (path, meta)
}

/// A fresh directory for `tag`, its own whichever test asks (every test of the binary runs in
/// one process: a counter keeps two tests with the same tag apart).
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("vtbulk-engine-{tag}-{pid}-{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
