//! Resolution: the merged layer's values, each parsed once into its typed setting (the
//! engine's [`Settings`], the client's [`ClientConfig`], the command line's own). Keys with a
//! default in `config/default.toml` are always set once the layers are merged; resolution
//! does not repeat those defaults.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use vtbulk_engine::{
    CacheSettings, Concurrency, Freshness, QuotaSettings, Settings, SubmitPolicy, WallClock,
};
use vtbulk_ioc::reader::FieldPath;
use vtbulk_ioc::{Column, InputFormat};
use vtbulk_output::{Field, Format, parse_fields};
use vtbulk_quota::{BackoffPolicy, Rate, Reserve, SchedulerConfig, Tier, parse_tiers};
use vtbulk_vt::{ApiKey, ClientConfig};

use super::{KeySource, Layer, TIERS_TOML};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Progress {
    /// A bar on a terminal, a status line every 10 s otherwise.
    Auto,
    /// Always a bar.
    Always,
    /// Nothing while running.
    Never,
}

/// The resolved configuration.
#[derive(Debug)]
pub struct Resolved {
    /// For the engine.
    pub settings: Settings,
    /// For the client.
    pub client: ClientConfig,
    /// The key, if any.
    pub key: Option<ApiKey>,
    /// Where it came from.
    pub key_source: KeySource,
    /// The tier used, and its profile.
    pub tier: (String, Tier),
    /// Progress display.
    pub progress: Progress,
    /// Runtime threads.
    pub threads: usize,
    /// Where the run's Prometheus metrics go, if anywhere.
    pub metrics_file: Option<PathBuf>,
    /// How long `--api-key-command` may run.
    pub key_command_timeout: Duration,
    /// The merged layer it came from (for `vtbulk config`).
    pub layer: Layer,
}

/// A key's value; every key with a default has one once the embedded defaults are merged.
fn need<'a, T>(value: &'a Option<T>, key: &str) -> Result<&'a T, String> {
    value
        .as_ref()
        .ok_or_else(|| format!("the setting {key} has no value (config/default.toml gives it one)"))
}

fn duration(key: &str, value: &Option<String>) -> Result<Duration, String> {
    let v = need(value, key)?;
    humantime::parse_duration(v).map_err(|e| format!("bad {key} {v:?}: {e} (e.g. 7d, 12h, 30m)"))
}

/// A size: a number of bytes, or with `KiB`, `MiB`, `GiB` (or `KB`, `MB`, `GB`, taken as the
/// same powers of two).
fn bytes(key: &str, value: &str) -> Result<usize, String> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("bad {key} {value:?}: a size such as 64MiB")),
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("bad {key} {value:?}: a size such as 64MiB"))
}

fn seconds(key: &str, value: &Option<String>) -> Result<i64, String> {
    duration(key, value).map(|d| d.as_secs() as i64)
}

/// Resolves the layers into typed settings.
pub fn resolve(layer: &Layer, inputs: Vec<String>) -> Result<Resolved, String> {
    let tier = tier(layer)?;
    let settings = Settings {
        inputs,
        fail_on: layer
            .fail_on
            .as_deref()
            .map(str::parse::<vtbulk_output::FailOn>)
            .transpose()
            .map_err(|e| e.to_string())?,
        only_new: *need(&layer.only_new, "only_new")?,
        raw: *need(&layer.raw, "raw")?,
        format: need(&layer.format, "format")?.parse::<Format>()?,
        fields: fields(layer)?,
        scheduler: scheduler(layer, tier.1)?,
        concurrency: concurrency(layer)?,
        backoff: BackoffPolicy {
            max_retries: *need(&layer.retries, "retries")?,
            ..BackoffPolicy::doubling(
                duration("backoff_base", &layer.backoff_base)?,
                duration("backoff_cap", &layer.backoff_cap)?,
            )
        },
        max_rate_limited: duration("max_rate_limited", &layer.max_rate_limited)?,
        cache: cache_settings(layer)?,
        quota: QuotaSettings {
            offline: *need(&layer.offline_quota, "offline_quota")?,
            wait_for_reset: *need(&layer.wait_for_reset, "wait_for_reset")?,
        },
        ..Settings::default()
    };
    let settings = fleet(layer, inputs_read(layer, settings)?)?;
    check(&settings)?;
    Ok(Resolved {
        client: client(layer, &settings)?,
        settings,
        key: None,
        key_source: KeySource::Missing,
        tier,
        progress: match need(&layer.progress, "progress")?.as_str() {
            "auto" => Progress::Auto,
            "always" => Progress::Always,
            "never" => Progress::Never,
            p => return Err(format!("bad progress {p:?}: auto, always or never")),
        },
        threads: (*need(&layer.threads, "threads")?).max(1),
        metrics_file: layer.metrics_file.as_ref().map(PathBuf::from),
        key_command_timeout: duration("api_key_command_timeout", &layer.api_key_command_timeout)?,
        layer: layer.clone(),
    })
}

/// The tier named, among the shipped profiles and the user's own.
fn tier(layer: &Layer) -> Result<(String, Tier), String> {
    let mut tiers = parse_tiers(TIERS_TOML).map_err(|e| e.to_string())?;
    if let Some(extra) = &layer.tiers {
        let text = toml::to_string(extra).map_err(|e| e.to_string())?;
        tiers.extend(parse_tiers(&text).map_err(|e| e.to_string())?);
    }
    let name = need(&layer.tier, "tier")?;
    let tier = *tiers.get(name).ok_or_else(|| {
        format!(
            "unknown tier {name:?} (known: {})",
            tiers.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })?;
    Ok((name.clone(), tier))
}

/// The rate (`--rate`, else the tier's), caps, reserve and margin.
fn scheduler(layer: &Layer, tier: Tier) -> Result<SchedulerConfig, String> {
    let rate = match layer.rate.as_deref() {
        None => tier.rate(),
        Some("unlimited") => None,
        Some(r) => Some(r.parse::<Rate>()?),
    };
    let margin = *need(&layer.safety_margin, "safety_margin")?;
    if !(0.0..=0.5).contains(&margin) {
        return Err(format!("bad safety_margin {margin}: between 0 and 0.5"));
    }
    Ok(SchedulerConfig {
        rate,
        caps: tier,
        used: None,
        reserve: need(&layer.reserve, "reserve")?.parse::<Reserve>()?,
        clock: WallClock::System,
        // The engine keeps charges for the ledger when it has one (a cache).
        keep_spend: false,
        safety_margin: margin,
        precise: true,
    })
}

fn concurrency(layer: &Layer) -> Result<Concurrency, String> {
    let max = (*need(&layer.max_concurrency, "max_concurrency")?).max(1);
    Ok(match need(&layer.concurrency, "concurrency")?.as_str() {
        "auto" => Concurrency::Auto { max },
        n => Concurrency::Fixed(
            n.parse::<NonZeroU32>()
                .map_err(|_| format!("bad concurrency {n:?}: auto or a positive number"))?
                .get() as usize,
        ),
    })
}

fn fields(layer: &Layer) -> Result<Vec<Field>, String> {
    Ok(match need(&layer.fields, "fields")?.as_str() {
        "default" | "all" => Field::ALL.to_vec(),
        list => parse_fields(list).map_err(|e| e.to_string())?,
    })
}

/// How the inputs are read: layout, columns, fields, kinds, and URL submission.
fn inputs_read(layer: &Layer, settings: Settings) -> Result<Settings, String> {
    let list = |value: &Option<Vec<String>>| value.clone().unwrap_or_default();
    Ok(Settings {
        input_format: need(&layer.input_format, "input_format")?.parse::<InputFormat>()?,
        columns: list(&layer.column)
            .iter()
            .map(|c| c.parse::<Column>())
            .collect::<Result<_, _>>()?,
        json_fields: list(&layer.field)
            .iter()
            .map(|f| f.parse::<FieldPath>().map_err(|e| format!("--field: {e}")))
            .collect::<Result<_, _>>()?,
        keep_all_hex: *need(&layer.keep_all_hex, "keep_all_hex")?,
        columns_only: *need(&layer.columns_only, "columns_only")?,
        kinds: layer
            .kinds
            .as_deref()
            .map(|k| {
                k.parse::<vtbulk_ioc::Kinds>()
                    .map_err(|e| format!("--kinds: {e}"))
            })
            .transpose()?,
        submit_urls: match need(&layer.submit_unknown_urls, "submit_unknown_urls")? {
            true => Some(SubmitPolicy {
                wait: Duration::from_secs(seconds("submit_wait", &layer.submit_wait)?.max(1) as u64),
                first_poll: duration("submit_poll", &layer.submit_poll)?
                    .max(Duration::from_millis(100)),
                ..SubmitPolicy::default()
            }),
            false => None,
        },
        ..settings
    })
}

/// The fleet: the coordinator's URL (with its password), the fallback and the grace.
fn fleet(layer: &Layer, settings: Settings) -> Result<Settings, String> {
    Ok(Settings {
        coordinator: layer
            .coordinator
            .as_deref()
            .filter(|u| !u.is_empty() && *u != "off")
            .map(|url| {
                vtbulk_coord::Endpoint::parse(url, coordinator_password(layer)?)
                    .map_err(|e| format!("--coordinator: {e}"))
            })
            .transpose()?,
        coordinator_grace: duration("coordinator_grace", &layer.coordinator_grace)?,
        coordinator_fallback: layer
            .coordinator_fallback
            .as_deref()
            .map(local_share)
            .transpose()?,
        ..settings
    })
}

/// Settings that contradict each other.
fn check(settings: &Settings) -> Result<(), String> {
    if settings.only_new {
        match &settings.cache {
            None => {
                return Err(
                    "--only-new needs the cache (it is the memory of what was seen): drop --cache off"
                        .into(),
                );
            }
            Some(c) if c.refresh => {
                return Err("--only-new and --refresh contradict each other: choose one".into());
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The client: where VirusTotal is, timeouts, trust, proxy, and what answers are kept.
fn client(layer: &Layer, settings: &Settings) -> Result<ClientConfig, String> {
    let keep_raw = settings.raw && settings.format == Format::Ndjson;
    // By default the cache keeps VirusTotal's whole answer, so any field can be rendered
    // later; with `cache_answers = "summary"` only the record's fields, unless this run
    // wants the whole object anyway (`--raw`).
    let whole_answers = match need(&layer.cache_answers, "cache_answers")?.as_str() {
        "full" => true,
        "summary" => false,
        v => return Err(format!("bad cache_answers {v:?}: full or summary")),
    };
    let max = match settings.concurrency {
        Concurrency::Auto { max } | Concurrency::Fixed(max) => max,
    };
    Ok(ClientConfig {
        host: need(&layer.api_url, "api_url")?.clone(),
        connect_timeout: duration("connect_timeout", &layer.connect_timeout)?,
        request_timeout: duration("request_timeout", &layer.request_timeout)?,
        pool_max_idle_per_host: max.max(64),
        gzip: true,
        keep_raw,
        keep_body: settings.cache.is_some() && (whole_answers || keep_raw),
        departure_delay: None,
        ca_cert: layer.ca_cert.as_ref().map(PathBuf::from),
        answer_budget: bytes(
            "answer_budget",
            need(&layer.answer_budget, "answer_budget")?,
        )?,
        proxy: match layer.proxy.as_deref() {
            None | Some("") => vtbulk_vt::ProxySetting::Environment,
            Some(value) => vtbulk_vt::ProxySetting::parse(value)?,
        },
    })
}

/// The cache: `cache = "off"`, a path, or the default path under the XDG cache directory.
pub fn cache_settings(layer: &Layer) -> Result<Option<CacheSettings>, String> {
    let path = match layer.cache.as_deref() {
        Some("off") => return Ok(None),
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => vtbulk_store::default_path()
            .ok_or("no cache directory: set XDG_CACHE_HOME or HOME, or pass --cache PATH|off")?,
    };
    Ok(Some(CacheSettings {
        path,
        freshness: Freshness {
            found_ttl: seconds("ttl", &layer.ttl)?,
            not_found_ttl: seconds("not_found_ttl", &layer.not_found_ttl)?,
            max_age: match &layer.max_age {
                Some(_) => Some(seconds("max_age", &layer.max_age)?),
                None => None,
            },
        },
        refresh: *need(&layer.refresh, "refresh")?,
        read_only: match need(&layer.cache_mode, "cache_mode")?.as_str() {
            "read-write" => false,
            "read-only" => true,
            m => return Err(format!("bad cache_mode {m:?}: read-write or read-only")),
        },
        clock: WallClock::System,
    }))
}

/// The Redis password for a URL without one: `--coordinator-password-file` (trimmed), else
/// `VTBULK_REDIS_PASSWORD`.
fn coordinator_password(layer: &Layer) -> Result<Option<String>, String> {
    if let Some(path) = &layer.coordinator_password_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("failed to read the Redis password file {path}: {e}"))?;
        return Ok(Some(text.trim().to_owned()).filter(|p| !p.is_empty()));
    }
    Ok(std::env::var("VTBULK_REDIS_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty()))
}

/// `local-share=F` with F in (0, 1].
fn local_share(spec: &str) -> Result<f64, String> {
    let bad =
        || format!("--coordinator-fallback {spec:?}: expected local-share=F with F in (0, 1]");
    let f: f64 = spec
        .trim()
        .strip_prefix("local-share=")
        .ok_or_else(bad)?
        .parse()
        .map_err(|_| bad())?;
    if f > 0.0 && f <= 1.0 {
        Ok(f)
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::bytes;

    #[test]
    fn sizes_take_binary_units_and_refuse_the_rest() {
        assert_eq!(bytes("k", "64MiB"), Ok(64 << 20));
        assert_eq!(bytes("k", "512 KiB"), Ok(512 << 10));
        assert_eq!(bytes("k", "1gb"), Ok(1 << 30));
        assert_eq!(bytes("k", "4096"), Ok(4096));
        for bad in ["", "MiB", "0", "12 parsecs", "-5MiB", "1.5GiB"] {
            assert!(bytes("k", bad).is_err(), "{bad:?}");
        }
    }
}
