//! `vtbulk cache stats|get|prune|export`: looking into the cache without spending quota.
//!
//! All four open the same file `enrich` would (`--cache`, the user file, or the default
//! path) and refuse a foreign or damaged one the same way, with exit code 2.

use std::io::{self, Write};

use serde_json::json;
use vtbulk_engine::{CacheSettings, WallClock, stored_attributes};
use vtbulk_ioc::Hash;
use vtbulk_store::{Exported, Hit, Stats, Store};

use vtbulk_output::rfc3339;

use crate::args::CacheAction;
use crate::failure::Failure;

/// A stored URL, domain or IP answer as JSON: its kind and text, found or not, when, and
/// VirusTotal's `data` (the stored answer, or the attributes kept when it was not kept).
fn object_json(
    kind: &str,
    text: &str,
    fetched_at: i64,
    summary: Option<&[u8]>,
    gzip: Option<&[u8]>,
) -> serde_json::Value {
    let Some(summary) = summary else {
        return json!({
            "kind": kind,
            "input": text,
            "status": "not_found",
            "fetched_at": rfc3339(fetched_at),
        });
    };
    let data = gzip
        .and_then(|z| {
            let mut json = Vec::new();
            io::Read::read_to_end(&mut flate2::read::GzDecoder::new(z), &mut json).ok()?;
            Some(data_of(&json))
        })
        .unwrap_or_else(|| {
            json!({
                "type": kind,
                "attributes": serde_json::from_slice::<serde_json::Value>(summary).unwrap_or_default(),
            })
        });
    json!({
        "kind": kind,
        "input": text,
        "status": "found",
        "fetched_at": rfc3339(fetched_at),
        "data": data,
    })
}

/// The `data` object of a stored answer (the body as received, `{"data": {...}}`).
fn data_of(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|mut v| v.get_mut("data").map(serde_json::Value::take))
        .unwrap_or_default()
}

fn open(settings: &CacheSettings) -> Result<Store, Failure> {
    if !settings.path.exists() {
        return Err(Failure::Cache(format!(
            "no cache at {} yet (it is created by the first `vtbulk enrich`)",
            settings.path.display()
        )));
    }
    let mut settings = settings.clone();
    crate::load::read_only_fallback(&mut settings);
    match settings.read_only {
        true => Store::open_read_only(&settings.path),
        false => Store::open(&settings.path),
    }
    .map_err(store_error)
}

fn store_error(e: vtbulk_store::StoreError) -> Failure {
    Failure::Cache(e.to_string())
}

fn stats_json(path: &str, s: &Stats) -> serde_json::Value {
    let run = s.last_run.map(|r| {
        let ratio = if r.unique_hashes > 0 {
            r.hits as f64 / r.unique_hashes as f64
        } else {
            0.0
        };
        json!({
            "started_at": rfc3339(r.started_at),
            "finished_at": rfc3339(r.finished_at),
            "unique": r.unique_hashes,
            "cache_hits": r.hits,
            "requests": r.lookups,
            "hit_ratio": (ratio * 1000.0).round() / 1000.0,
        })
    });
    json!({
        "path": path,
        "found": s.found,
        "not_found": s.not_found,
        "bytes": s.bytes + s.segment_bytes,
        "index_bytes": s.bytes,
        "answers_bytes": s.segment_bytes,
        "oldest": s.oldest.map(rfc3339),
        "newest": s.newest.map(rfc3339),
        "last_run": run,
    })
}

/// A write to stdout failed.
fn io(e: io::Error) -> Failure {
    Failure::write(e, "stdout")
}

/// Runs one cache action.
pub fn run(
    action: &CacheAction,
    settings: &CacheSettings,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    match action {
        CacheAction::Stats { json, .. } => stats(settings, *json, out)?,
        CacheAction::Get { hash, .. } if Hash::parse(hash.trim()).is_err() => {
            get_object(settings, hash, out)?
        }
        CacheAction::Get { hash, .. } => get_file(settings, hash, out)?,
        CacheAction::Prune { .. } => {
            let mut store = open(settings)?;
            let (found, missing) = store
                .prune(WallClock::System.now(), settings.freshness)
                .map_err(store_error)?;
            writeln!(
                out,
                "pruned {found} found and {missing} not-found answers from {}",
                settings.path.display()
            )
            .map_err(io)?;
        }
        CacheAction::Export { .. } => export(settings, out)?,
    }
    out.flush().map_err(io)
}

/// `cache stats`: as JSON, or as lines.
fn stats(settings: &CacheSettings, json: bool, out: &mut dyn Write) -> Result<(), Failure> {
    let store = open(settings)?;
    let stats = store.stats().map_err(store_error)?;
    let mut value = stats_json(&settings.path.display().to_string(), &stats);
    let mut objects = serde_json::Map::new();
    for (kind, found, missing) in store.object_counts().map_err(store_error)? {
        let name = vtbulk_ioc::Kind::from_code(kind).map_or("?", vtbulk_ioc::Kind::as_str);
        objects.insert(name.into(), json!({"found": found, "not_found": missing}));
    }
    value["objects"] = serde_json::Value::Object(objects);
    if json {
        return writeln!(out, "{value:#}").map_err(io);
    }
    let show = |k: &str| match &value[k] {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    writeln!(out, "cache      {}", show("path")).map_err(io)?;
    writeln!(out, "found      {}", show("found")).map_err(io)?;
    writeln!(out, "not found  {}", show("not_found")).map_err(io)?;
    if let Some(objects) = value["objects"].as_object().filter(|o| !o.is_empty()) {
        let parts: Vec<String> = objects
            .iter()
            .map(|(k, v)| format!("{k} {} found, {} not found", v["found"], v["not_found"]))
            .collect();
        writeln!(out, "others     {}", parts.join("; ")).map_err(io)?;
    }
    writeln!(
        out,
        "size       {:.1} MB ({:.1} MB index, {:.1} MB answers)",
        (stats.bytes + stats.segment_bytes) as f64 / 1e6,
        stats.bytes as f64 / 1e6,
        stats.segment_bytes as f64 / 1e6
    )
    .map_err(io)?;
    writeln!(out, "oldest     {}", show("oldest")).map_err(io)?;
    writeln!(out, "newest     {}", show("newest")).map_err(io)?;
    match &value["last_run"] {
        serde_json::Value::Null => writeln!(out, "last run   -").map_err(io),
        r => writeln!(
            out,
            "last run   {}: {} unique, {} from the cache (hit ratio {}), {} requests",
            r["finished_at"].as_str().unwrap_or("-"),
            r["unique"],
            r["cache_hits"],
            r["hit_ratio"],
            r["requests"]
        )
        .map_err(io),
    }
}

/// `cache get` of a URL, domain or IP address (defanged or not).
fn get_object(settings: &CacheSettings, text: &str, out: &mut dyn Write) -> Result<(), Failure> {
    let found = vtbulk_ioc::indicator::parse(text).map_err(|e| {
        Failure::Usage(format!(
            "{text:?}: not a hash, URL, domain or IP address ({e})"
        ))
    })?;
    let canonical = found.canonical();
    let mut store = open(settings)?;
    let code = found.kind_of().code();
    let hit = store
        .get_objects(&[(code, &canonical)], true)
        .map_err(store_error)?
        .pop()
        .flatten()
        .ok_or_else(|| Failure::Cache(format!("{canonical} is not in the cache")))?;
    let fresh = settings
        .freshness
        .is_fresh_object(&hit, WallClock::System.now());
    let mut value = object_json(
        found.kind_of().as_str(),
        &canonical,
        hit.fetched_at,
        hit.summary.as_deref(),
        hit.gzip.as_deref(),
    );
    value["fresh"] = json!(fresh);
    writeln!(out, "{value:#}").map_err(io)
}

/// `cache get` of a hash (any of a file's three).
fn get_file(settings: &CacheSettings, hash: &str, out: &mut dyn Write) -> Result<(), Failure> {
    let parsed = Hash::parse(hash.trim()).map_err(|e| Failure::Usage(format!("{hash:?}: {e}")))?;
    let mut store = open(settings)?;
    let hit = store
        .get(&parsed)
        .map_err(store_error)?
        .ok_or_else(|| Failure::Cache(format!("{parsed} is not in the cache")))?;
    let fresh = settings.freshness.is_fresh(&hit, WallClock::System.now());
    let value = match hit {
        Hit::Found(f) => {
            let data = f.data.as_deref().map_or(serde_json::Value::Null, data_of);
            let summary = stored_attributes(&f)
                .and_then(|a| serde_json::to_value(a).ok())
                .unwrap_or_default();
            json!({
                "hash": parsed.to_string(),
                "status": "found",
                "sha256": Hash::Sha256(f.sha256).to_string(),
                "fetched_at": rfc3339(f.fetched_at),
                "fresh": fresh,
                "summary": summary,
                "data": data,
            })
        }
        Hit::NotFound { fetched_at } => json!({
            "hash": parsed.to_string(),
            "status": "not_found",
            "fetched_at": rfc3339(fetched_at),
            "fresh": fresh,
        }),
    };
    writeln!(out, "{value:#}").map_err(io)
}

/// `cache export`: every stored answer as NDJSON, files first, then the other objects.
fn export(settings: &CacheSettings, out: &mut dyn Write) -> Result<(), Failure> {
    let store = open(settings)?;
    // A failed write ends the export; it is reported as a write, not a cache problem.
    let mut write_failed = None;
    let exported = store.export(&mut |row| {
        writeln!(out, "{}", exported_json(row)).inspect_err(|e| write_failed = Some(e.kind()))
    });
    if let Some(kind) = write_failed {
        return Err(Failure::write(io::Error::from(kind), "stdout"));
    }
    exported.map_err(store_error)?;
    // Then the URLs, domains and IP addresses.
    let objects = store
        .export_objects(&mut |kind, text, hit| {
            let name = vtbulk_ioc::Kind::from_code(kind).map_or("?", vtbulk_ioc::Kind::as_str);
            let value = object_json(
                name,
                text,
                hit.fetched_at,
                hit.summary.as_deref(),
                hit.gzip.as_deref(),
            );
            writeln!(out, "{value}")
        })
        .map_err(store_error)?;
    objects.map(|_| ()).map_err(io)
}

/// One exported file answer.
fn exported_json(row: Exported) -> serde_json::Value {
    match row {
        Exported::Found(f) => {
            let sha256 = Hash::Sha256(f.sha256).to_string();
            // Without the answer (a cache from before answers were kept), the attributes a
            // record needs stand in for it.
            let data = match f.data.as_deref() {
                Some(body) => data_of(body),
                None => json!({
                    "id": sha256,
                    "type": "file",
                    "attributes": stored_attributes(&f),
                }),
            };
            json!({
                "sha256": sha256,
                "status": "found",
                "fetched_at": rfc3339(f.fetched_at),
                "data": data,
            })
        }
        Exported::NotFound { digest, fetched_at } => json!({
            "hash": digest.to_string(),
            "status": "not_found",
            "fetched_at": rfc3339(fetched_at),
        }),
    }
}
