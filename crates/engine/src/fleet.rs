//! Answers shared by a fleet (`--coordinator`): a lookup another process already made, or is
//! making now, is not paid twice.
//!
//! Before its own request, a worker reads the fleet's answer for the IOC from Redis; if there
//! is none it claims the lookup (a key with a 30 s expiry, taken over sooner when its holder
//! stops saying it is alive: a killed holder blocks no one longer than 5 s). A claim held
//! elsewhere means another process is paying for it now: the worker waits for its answer
//! (asking every 100 ms), or takes the claim over once it lapses. Every answer
//! this process gets (found or not) is published for the others: a found file under each of
//! its three digests, with the record's attributes gzipped (`{"id", "attributes"}`, a few
//! hundred bytes), for the cache's TTLs (found 7 days, not found 1 day); a process run with
//! `--raw` adds VirusTotal's whole `data` object, and a process run with `--raw` takes only
//! answers that have it (else it looks the IOC up itself: its output must hold the whole
//! object). A record made from a fleet answer is `source=cache`, counted as `fleet_answers`
//! and as a cache hit.

use std::io::{Read, Write};
use std::time::Duration;

use vtbulk_output::{Record, Source, Status};
use vtbulk_store::Freshness;
use vtbulk_vt::models::{FileSummary, ObjectAttributes, ObjectSummary, SummaryAttributes};

use crate::convert;
use crate::counters::bump;
use crate::lookup::{Fleet, Shared, Target};

/// How long a claim on a lookup lasts: a holder killed mid-lookup delays the others this much.
const CLAIM: Duration = Duration::from_secs(30);

/// How often a process waiting for another's answer asks for it.
const POLL: Duration = Duration::from_millis(100);

/// What the fleet had for an IOC before this process's own request.
pub(crate) enum Before {
    /// Its answer: the record, no request.
    Answered(Box<Record>),
    /// Nobody had it: this process claimed the lookup (to release if it makes no answer).
    Claimed(String),
    /// The fleet could not say (Redis failed): look it up alone.
    Alone,
}

/// The fleet's name for `target`: `file:<hex>`, `url:<url>`, `domain:<name>`, `ip:<ip>`.
pub(crate) fn id(shared: &Shared, target: Target<'_>) -> String {
    match target {
        Target::File(_, entry) => format!("file:{}", entry.hash()),
        Target::Other(entry) => format!("{}:{}", entry.kind(), shared.others.text(entry)),
    }
}

/// The fleet's answer for `target`, waiting for a lookup another process is making; or the
/// claim of the lookup for this process.
pub(crate) async fn before(shared: &Shared, fleet: &Fleet, target: Target<'_>) -> Before {
    let id = id(shared, target);
    let deadline = tokio::time::Instant::now() + 2 * CLAIM;
    loop {
        match fleet.coord.answer_or_claim(&id, CLAIM).await {
            Ok(vtbulk_coord::Claim::Answer(value)) => {
                if let Some(record) = record(shared, target, &value) {
                    return Before::Answered(Box::new(record));
                }
                // Undecodable (another version's): look it up alone.
                return Before::Alone;
            }
            Ok(vtbulk_coord::Claim::Claimed) => return Before::Claimed(id),
            Ok(vtbulk_coord::Claim::Busy) => {}
            Err(_) => return Before::Alone,
        }
        if tokio::time::Instant::now() >= deadline || shared.halt.get().is_some() {
            return Before::Alone;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Gives a claim up (its lookup made no answer): another process may try.
pub(crate) fn release(fleet: &Fleet, id: String) {
    let coord = fleet.coord.clone();
    tokio::spawn(async move {
        let _ = coord.release(&id).await;
    });
}

fn gzip(json: &serde_json::Value) -> Vec<u8> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = z.write_all(json.to_string().as_bytes());
    z.finish().unwrap_or_default()
}

fn publish(fleet: &Fleet, ids: Vec<String>, value: Vec<u8>, ttl: Duration) {
    let coord = fleet.coord.clone();
    tokio::spawn(async move {
        let _ = coord.publish(&ids, &value, ttl).await;
    });
}

fn ttl(found: bool) -> Duration {
    let f = Freshness::default();
    Duration::from_secs(if found { f.found_ttl } else { f.not_found_ttl } as u64)
}

/// Publishes a found file under each of its digests.
pub(crate) fn publish_file(
    fleet: &Fleet,
    file: &FileSummary,
    digests: impl Iterator<Item = String>,
) {
    let value = gzip(&serde_json::json!({
        "id": file.id,
        "attributes": file.attributes,
        "raw": file.raw,
    }));
    let ids = digests.map(|hex| format!("file:{hex}")).collect();
    publish(fleet, ids, value, ttl(true));
}

/// Publishes a found URL, domain or IP address.
pub(crate) fn publish_object(fleet: &Fleet, id: String, object: &ObjectSummary) {
    let value = gzip(&serde_json::json!({"attributes": object.attributes, "raw": object.raw}));
    publish(fleet, vec![id], value, ttl(true));
}

/// Publishes a 404.
pub(crate) fn publish_not_found(fleet: &Fleet, id: String) {
    publish(fleet, vec![id], b"404".to_vec(), ttl(false));
}

/// The record of a fleet answer (`None` when it does not decode: looked up instead).
fn record(shared: &Shared, target: Target<'_>, value: &[u8]) -> Option<Record> {
    let base = shared.base(target);
    if value == b"404" {
        bump(&shared.counters.not_found);
        bump(&shared.counters.cache_hits);
        bump(&shared.counters.fleet_answers);
        return Some(Record {
            status: Some(Status::NotFound),
            source: Some(Source::Cache),
            ..base
        });
    }
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(value)
        .read_to_end(&mut json)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&json).ok()?;
    // `--raw` wants the whole object: an answer published without it is looked up again.
    let raw = match &v["raw"] {
        serde_json::Value::Null if shared.raw => return None,
        data if shared.raw => {
            Some(serde_json::value::RawValue::from_string(data.to_string()).ok()?)
        }
        _ => None,
    };
    let mut record = match target {
        Target::File(..) => {
            let attributes: SummaryAttributes =
                serde_json::from_value(v["attributes"].clone()).ok()?;
            convert::stored_file(base, v["id"].as_str()?.to_owned(), attributes, raw)
        }
        Target::Other(_) => {
            let attributes: ObjectAttributes =
                serde_json::from_value(v["attributes"].clone()).ok()?;
            convert::stored_object(base, attributes, raw)
        }
    };
    record.source = Some(Source::Cache);
    bump(&shared.counters.ok);
    bump(&shared.counters.cache_hits);
    bump(&shared.counters.fleet_answers);
    Some(record)
}

/// `vtbulk fleet`: the processes sharing this key through the coordinator, and what the fleet
/// spent in the current UTC hour, day and month (Redis's books).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FleetView {
    /// What the fleet spent.
    pub spent: vtbulk_coord::Spent,
    /// The live processes (a heartbeat in the last 5 s).
    pub members: Vec<vtbulk_coord::Member>,
}

/// Reads the fleet's view (needs `--coordinator`).
pub async fn fleet_view(
    settings: &crate::Settings,
    client: &vtbulk_vt::Client,
) -> Result<FleetView, crate::EngineError> {
    let url = settings.coordinator.as_ref().ok_or_else(|| {
        vtbulk_coord::CoordError::Url(
            "no coordinator: give --coordinator redis://... (or VTBULK_REDIS_URL)".into(),
        )
    })?;
    let coord =
        vtbulk_coord::Coordinator::connect(url, &client.key_fingerprint(), Duration::from_secs(5))
            .await?;
    Ok(FleetView {
        spent: coord.spent().await?,
        members: coord.members().await?,
    })
}

/// This host's name, for the fleet's list of processes.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Says every second that this process is in the fleet, with its requests in all and in the
/// last minute and its lease (`vtbulk fleet` lists them); the entry lapses 5 s after the last,
/// and with it the claims this process holds. The first is said before any claim is made.
pub(crate) async fn spawn_heartbeat(
    fleet: Fleet,
    counters: std::sync::Arc<crate::Counters>,
) -> (tokio::task::JoinHandle<()>, vtbulk_coord::Member) {
    let unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    };
    let me = vtbulk_coord::Member {
        host: host_name(),
        pid: std::process::id(),
        started: unix(),
        ..vtbulk_coord::Member::default()
    };
    let _ = fleet.coord.heartbeat(&me).await;
    let task = {
        let mut me = me.clone();
        tokio::spawn(async move {
            let mut history = std::collections::VecDeque::new();
            loop {
                let requests = crate::Counters::get(&counters.requests);
                let now = tokio::time::Instant::now();
                history.push_back((now, requests));
                while history
                    .front()
                    .is_some_and(|&(t, _)| now.duration_since(t) > Duration::from_secs(60))
                {
                    history.pop_front();
                }
                me.requests = requests;
                me.leased = fleet.coord.leased();
                me.last_minute = requests - history.front().map_or(requests, |&(_, n)| n);
                me.seen = unix();
                let _ = fleet.coord.heartbeat(&me).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    (task, me)
}
