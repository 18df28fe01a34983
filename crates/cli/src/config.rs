//! Configuration in two levels: raw layers (embedded defaults, user file, environment, flags;
//! strings and options) resolved once into typed settings the engine sees.
//!
//! The engine never reads the environment, a file or a flag: everything it needs is in
//! [`Resolved`], built here and printable (key redacted) by `vtbulk config`.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vtbulk_engine::{CacheSettings, Concurrency, Freshness, QuotaSettings, Settings, WallClock};
use vtbulk_ioc::reader::FieldPath;
use vtbulk_ioc::{Column, InputFormat};
use vtbulk_output::{Field, Format, parse_fields};
use vtbulk_quota::{BackoffPolicy, Rate, Reserve, SchedulerConfig, Tier, parse_tiers};
use vtbulk_vt::{ApiKey, ClientConfig};

/// The embedded defaults.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");
/// The embedded tier profiles.
pub const TIERS_TOML: &str = include_str!("../../../config/tiers.toml");

/// One layer of configuration: every key optional.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub api_url: Option<String>,
    pub tier: Option<String>,
    pub rate: Option<String>,
    pub safety_margin: Option<f64>,
    pub concurrency: Option<String>,
    pub max_concurrency: Option<usize>,
    pub input_format: Option<String>,
    /// One column or a list (`column = "SHA256"`, `column = ["SHA256", "MD5"]`).
    pub column: Option<Columns>,
    pub keep_all_hex: Option<bool>,
    /// The kinds of IOC taken: `file,url,domain,ip` or `all` (default: per input format).
    pub kinds: Option<String>,
    /// Submit URLs VirusTotal does not know, and wait for their analysis.
    pub submit_unknown_urls: Option<bool>,
    /// A Redis URL shared by every process that uses the key (`VTBULK_REDIS_URL`).
    pub coordinator: Option<String>,
    /// `local-share=F`: when the coordinator cannot be reached at the start, run alone at
    /// that share of the rate.
    pub coordinator_fallback: Option<String>,
    /// A file holding the Redis password (for a URL without one; `VTBULK_REDIS_PASSWORD`
    /// too).
    pub coordinator_password_file: Option<String>,
    /// How long Redis may stay lost mid-run before the run stops (`60s`).
    pub coordinator_grace: Option<String>,
    /// How long to wait for a submitted URL's analysis (`10m`).
    pub submit_wait: Option<String>,
    /// The first poll of an analysis after its submission (`15s`; then half again each time,
    /// up to a minute).
    pub submit_poll: Option<String>,
    /// JSON fields holding hashes (`field = "process.hash.sha256"` or a list).
    pub field: Option<Columns>,
    pub fail_on: Option<String>,
    pub metrics_file: Option<String>,
    pub only_new: Option<bool>,
    pub format: Option<String>,
    pub fields: Option<String>,
    pub raw: Option<bool>,
    pub retries: Option<u32>,
    pub backoff_base: Option<String>,
    pub backoff_cap: Option<String>,
    pub max_rate_limited: Option<String>,
    pub connect_timeout: Option<String>,
    pub request_timeout: Option<String>,
    /// Extra certificate authorities to trust (a PEM bundle).
    pub ca_cert: Option<String>,
    /// The proxy URL, or "off" (unset: the environment's).
    pub proxy: Option<String>,
    pub progress: Option<String>,
    pub threads: Option<usize>,
    /// The cache file, or "off".
    pub cache: Option<String>,
    /// How long a found answer stays fresh.
    pub ttl: Option<String>,
    /// How long a not-found answer stays fresh.
    pub not_found_ttl: Option<String>,
    /// For one run: use nothing older than this.
    pub max_age: Option<String>,
    /// Look everything up again (and update the cache).
    pub refresh: Option<bool>,
    /// What the cache keeps of an answer: "full" or "summary".
    pub cache_answers: Option<String>,
    /// Requests of every window left for the key's other users: "N" or "N%".
    pub reserve: Option<String>,
    /// Plan against the tier's profile and the ledger; never call GET /users.
    pub offline_quota: Option<bool>,
    /// When a window runs out, sleep to its reset and carry on instead of stopping.
    pub wait_for_reset: Option<bool>,
    /// Extra or replacement tier profiles.
    pub tiers: Option<toml::Table>,
}

/// `column` in a configuration file: one name or position, or a list of them.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Columns {
    /// One column.
    One(String),
    /// Several.
    Many(Vec<String>),
}

macro_rules! merge {
    ($base:ident, $top:ident, $($f:ident),*) => { $( if $top.$f.is_some() { $base.$f = $top.$f; } )* };
}

impl Layer {
    /// Parses a TOML layer; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Layer, String> {
        toml::from_str(text).map_err(|e| format!("failed to read configuration {origin}: {e}"))
    }

    /// `self` with every key set in `top` replaced.
    pub fn merged(mut self, top: Layer) -> Layer {
        merge!(
            self,
            top,
            api_url,
            tier,
            rate,
            safety_margin,
            concurrency,
            max_concurrency,
            input_format,
            column,
            keep_all_hex,
            kinds,
            submit_unknown_urls,
            coordinator,
            coordinator_fallback,
            coordinator_password_file,
            coordinator_grace,
            submit_wait,
            submit_poll,
            field,
            fail_on,
            metrics_file,
            only_new,
            format,
            fields,
            raw,
            retries,
            backoff_base,
            backoff_cap,
            max_rate_limited,
            connect_timeout,
            request_timeout,
            ca_cert,
            proxy,
            progress,
            threads,
            cache,
            ttl,
            not_found_ttl,
            max_age,
            refresh,
            cache_answers,
            reserve,
            offline_quota,
            wait_for_reset,
            tiers
        );
        self
    }
}

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

/// Where the key came from (for `vtbulk config`; never the key).
#[derive(Clone, Debug)]
pub enum KeySource {
    /// `--api-key-file`.
    File(PathBuf),
    /// `--api-key-command`: the program it ran (its arguments are not shown).
    Command(String),
    /// An environment variable.
    Env(&'static str),
    /// Nowhere.
    Missing,
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
    /// The tier used.
    pub tier_name: String,
    /// Progress display.
    pub progress: Progress,
    /// Runtime threads.
    pub threads: usize,
    /// Where the run's Prometheus metrics go, if anywhere.
    pub metrics_file: Option<PathBuf>,
}

fn duration(name: &str, value: &Option<String>) -> Result<Duration, String> {
    let v = value.as_deref().unwrap_or("0s");
    humantime::parse_duration(v).map_err(|e| format!("bad {name} {v:?}: {e}"))
}

/// The user file: `--config`, else `$XDG_CONFIG_HOME/vtbulk/config.toml`, else
/// `~/.config/vtbulk/config.toml`, if it exists.
pub fn user_file(explicit: Option<&Path>) -> Result<Option<(PathBuf, String)>, String> {
    if let Some(path) = explicit {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("failed to read --config {}: {e}", path.display()))?;
        return Ok(Some((path.to_owned(), text)));
    }
    let dir = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    let Some(path) = dir.map(|d| d.join("vtbulk").join("config.toml")) else {
        return Ok(None);
    };
    default_file(path)
}

/// The default file at `path`. Missing is never an error, nor is a path that cannot be
/// reached (an inherited `HOME` that is another user's, or not a directory: `sudo`, a
/// service's environment): no file. A file that is there but cannot be read is ignored with
/// a warning; one that can be read but is not text is an error (someone wrote it).
fn default_file(path: PathBuf) -> Result<Option<(PathBuf, String)>, String> {
    use std::io::ErrorKind;
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some((path, text))),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::NotFound | ErrorKind::PermissionDenied | ErrorKind::NotADirectory
            ) =>
        {
            if path.is_file() {
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "vtbulk: warning: the configuration file {} cannot be read ({e}): ignored",
                    path.display()
                );
            }
            Ok(None)
        }
        Err(e) => Err(format!("failed to read {}: {e}", path.display())),
    }
}

/// Runs `--api-key-command`: the command line split into words as a POSIX shell would (no
/// shell runs unless the command is one, `sh -c '...'`), stdin closed, stderr passed through;
/// its stdout, trimmed, is the key. Errors name the program only (its arguments may say where
/// a vault keeps the key) and never the output.
pub fn key_from_command(command: &str) -> Result<(ApiKey, KeySource), String> {
    let words = shlex::split(command)
        .filter(|w| !w.is_empty())
        .ok_or_else(|| "--api-key-command: not a command line (unbalanced quotes?)".to_owned())?;
    let program = words[0].clone();
    let out = std::process::Command::new(&program)
        .args(&words[1..])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("--api-key-command: failed to run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "--api-key-command: {program} failed ({}); no key",
            out.status
        ));
    }
    let text = String::from_utf8(out.stdout)
        .map_err(|_| format!("--api-key-command: {program} printed something that is not text"))?;
    let key = ApiKey::new(text).map_err(|e| format!("{e} (from --api-key-command {program})"))?;
    Ok((key, KeySource::Command(program)))
}

/// Reads the key: `--api-key-file` (`-` is stdin), else `--api-key-command`, else
/// `VT_API_KEY`, else `VTCLI_APIKEY`.
pub fn read_key(
    file: Option<&Path>,
    command: Option<&str>,
) -> Result<(Option<ApiKey>, KeySource), String> {
    if file.is_some() && command.is_some() {
        return Err("give the key by --api-key-file or by --api-key-command, not both".into());
    }
    if let Some(command) = command {
        let (key, source) = key_from_command(command)?;
        return Ok((Some(key), source));
    }
    if let Some(path) = file {
        let text = if path == Path::new("-") {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| format!("failed to read the API key from stdin: {e}"))?;
            s
        } else {
            std::fs::read_to_string(path)
                .map_err(|e| format!("failed to read the API key file {}: {e}", path.display()))?
        };
        let key = ApiKey::new(text).map_err(|e| format!("{e} (in {})", path.display()))?;
        return Ok((Some(key), KeySource::File(path.to_owned())));
    }
    for var in ["VT_API_KEY", "VTCLI_APIKEY"] {
        if let Ok(value) = std::env::var(var)
            && !value.trim().is_empty()
        {
            let key = ApiKey::new(value).map_err(|e| format!("{e} (in {var})"))?;
            return Ok((Some(key), KeySource::Env(var)));
        }
    }
    Ok((None, KeySource::Missing))
}

/// Resolves the layers into typed settings.
pub fn resolve(layer: &Layer, inputs: Vec<String>) -> Result<Resolved, String> {
    let mut tiers = parse_tiers(TIERS_TOML).map_err(|e| e.to_string())?;
    if let Some(extra) = &layer.tiers {
        let text = toml::to_string(extra).map_err(|e| e.to_string())?;
        tiers.extend(parse_tiers(&text).map_err(|e| e.to_string())?);
    }
    let tier_name = layer.tier.clone().unwrap_or_else(|| "public".into());
    let tier: Tier = *tiers.get(&tier_name).ok_or_else(|| {
        format!(
            "unknown tier {tier_name:?} (known: {})",
            tiers.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })?;
    let rate = match layer.rate.as_deref() {
        None => tier.rate(),
        Some("unlimited") => None,
        Some(r) => Some(r.parse::<Rate>()?),
    };
    let max = layer.max_concurrency.unwrap_or(256).max(1);
    let concurrency = match layer.concurrency.as_deref().unwrap_or("auto") {
        "auto" => Concurrency::Auto { max },
        n => Concurrency::Fixed(
            n.parse::<NonZeroU32>()
                .map_err(|_| format!("bad concurrency {n:?}: auto or a positive number"))?
                .get() as usize,
        ),
    };
    let fields: Vec<Field> = match layer.fields.as_deref().unwrap_or("default") {
        "default" | "all" => Field::ALL.to_vec(),
        list => parse_fields(list).map_err(|e| e.to_string())?,
    };
    let margin = layer.safety_margin.unwrap_or(0.002);
    if !(0.0..=0.5).contains(&margin) {
        return Err(format!("bad safety_margin {margin}: between 0 and 0.5"));
    }
    let settings = Settings {
        inputs,
        input_format: layer
            .input_format
            .as_deref()
            .unwrap_or("auto")
            .parse::<InputFormat>()?,
        columns: match &layer.column {
            None => Vec::new(),
            Some(Columns::One(c)) => vec![c.parse::<Column>()?],
            Some(Columns::Many(list)) => list
                .iter()
                .map(|c| c.parse::<Column>())
                .collect::<Result<_, _>>()?,
        },
        keep_all_hex: layer.keep_all_hex.unwrap_or(false),
        kinds: layer
            .kinds
            .as_deref()
            .map(|k| {
                k.parse::<vtbulk_ioc::Kinds>()
                    .map_err(|e| format!("--kinds: {e}"))
            })
            .transpose()?,
        coordinator: layer
            .coordinator
            .as_deref()
            .filter(|u| !u.is_empty() && *u != "off")
            .map(|url| {
                vtbulk_coord::Endpoint::parse(url, coordinator_password(layer)?)
                    .map_err(|e| format!("--coordinator: {e}"))
            })
            .transpose()?,
        key_reload: None,
        coordinator_grace: humantime::parse_duration(
            layer.coordinator_grace.as_deref().unwrap_or("60s"),
        )
        .map_err(|e| format!("bad coordinator_grace: {e}"))?,
        coordinator_fallback: layer
            .coordinator_fallback
            .as_deref()
            .map(local_share)
            .transpose()?,
        submit_urls: match layer.submit_unknown_urls {
            Some(true) => Some(vtbulk_engine::SubmitPolicy {
                wait: std::time::Duration::from_secs(
                    seconds("submit_wait", layer.submit_wait.as_deref(), "10m")?.max(1) as u64,
                ),
                first_poll: humantime::parse_duration(
                    layer.submit_poll.as_deref().unwrap_or("15s"),
                )
                .map_err(|e| format!("bad submit_poll: {e}"))?
                .max(std::time::Duration::from_millis(100)),
                ..vtbulk_engine::SubmitPolicy::default()
            }),
            _ => None,
        },
        json_fields: match &layer.field {
            None => Vec::new(),
            Some(Columns::One(f)) => vec![
                f.parse::<FieldPath>()
                    .map_err(|e| format!("--field: {e}"))?,
            ],
            Some(Columns::Many(list)) => list
                .iter()
                .map(|f| f.parse::<FieldPath>().map_err(|e| format!("--field: {e}")))
                .collect::<Result<_, _>>()?,
        },
        on_input: None,
        fail_on: layer
            .fail_on
            .as_deref()
            .map(str::parse::<vtbulk_output::FailOn>)
            .transpose()
            .map_err(|e| e.to_string())?,
        only_new: layer.only_new.unwrap_or(false),
        format: layer.format.as_deref().unwrap_or("csv").parse::<Format>()?,
        fields,
        raw: layer.raw.unwrap_or(false),
        scheduler: SchedulerConfig {
            rate,
            caps: tier,
            used: None,
            reserve: layer
                .reserve
                .as_deref()
                .map(str::parse::<Reserve>)
                .transpose()?
                .unwrap_or_default(),
            clock: WallClock::System,
            // The engine keeps charges for the ledger when it has one (a cache).
            keep_spend: false,
            safety_margin: margin,
            precise: true,
        },
        concurrency,
        backoff: BackoffPolicy {
            max_retries: layer.retries.unwrap_or(5),
            ..BackoffPolicy::doubling(
                duration("backoff_base", &layer.backoff_base)?,
                duration("backoff_cap", &layer.backoff_cap)?,
            )
        },
        max_rate_limited: duration("max_rate_limited", &layer.max_rate_limited)?,
        cache: cache_settings(layer)?,
        quota: QuotaSettings {
            offline: layer.offline_quota.unwrap_or(false),
            wait_for_reset: layer.wait_for_reset.unwrap_or(false),
        },
    };
    let keep_raw = settings.raw && settings.format == Format::Ndjson;
    // By default the cache keeps VirusTotal's whole answer, so any field can be rendered
    // later; with `cache_answers = "summary"` only the record's fields, unless this run
    // wants the whole object anyway (`--raw`).
    let whole_answers = match layer.cache_answers.as_deref().unwrap_or("full") {
        "full" => true,
        "summary" => false,
        v => return Err(format!("bad cache_answers {v:?}: full or summary")),
    };
    let keep_body = settings.cache.is_some() && (whole_answers || keep_raw);
    let client = ClientConfig {
        host: layer
            .api_url
            .clone()
            .unwrap_or_else(|| vtbulk_vt::DEFAULT_HOST.into()),
        connect_timeout: duration("connect_timeout", &layer.connect_timeout)?,
        request_timeout: duration("request_timeout", &layer.request_timeout)?,
        pool_max_idle_per_host: max.max(64),
        gzip: true,
        keep_raw,
        keep_body,
        departure_delay: None,
        ca_cert: layer.ca_cert.as_ref().map(PathBuf::from),
        proxy: match layer.proxy.as_deref() {
            None | Some("") => vtbulk_vt::ProxySetting::Environment,
            Some(value) => vtbulk_vt::ProxySetting::parse(value)?,
        },
    };
    let progress = match layer.progress.as_deref().unwrap_or("auto") {
        "auto" => Progress::Auto,
        "always" => Progress::Always,
        "never" => Progress::Never,
        p => return Err(format!("bad progress {p:?}: auto, always or never")),
    };
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
    Ok(Resolved {
        settings,
        client,
        key: None,
        key_source: KeySource::Missing,
        tier_name,
        progress,
        threads: layer.threads.unwrap_or(1).max(1),
        metrics_file: layer.metrics_file.as_ref().map(PathBuf::from),
    })
}

fn seconds(name: &str, value: Option<&str>, default: &str) -> Result<i64, String> {
    let v = value.unwrap_or(default);
    humantime::parse_duration(v)
        .map(|d| d.as_secs() as i64)
        .map_err(|e| format!("bad {name} {v:?}: {e} (e.g. 7d, 12h, 30m)"))
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
            found_ttl: seconds("ttl", layer.ttl.as_deref(), "7d")?,
            not_found_ttl: seconds("not_found_ttl", layer.not_found_ttl.as_deref(), "1d")?,
            max_age: layer
                .max_age
                .as_deref()
                .map(|v| seconds("max_age", Some(v), v))
                .transpose()?,
        },
        refresh: layer.refresh.unwrap_or(false),
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

/// `vtbulk config`: the resolved settings as TOML-like lines, the key redacted.
pub fn describe(r: &Resolved) -> String {
    let s = &r.settings;
    let key = match &r.key_source {
        KeySource::File(p) => format!("[redacted] (from --api-key-file {})", p.display()),
        KeySource::Command(program) => format!("[redacted] (from --api-key-command {program})"),
        KeySource::Env(v) => format!("[redacted] (from {v})"),
        KeySource::Missing => {
            "none (set VT_API_KEY, or pass --api-key-file or --api-key-command)".into()
        }
    };
    let rate = s
        .scheduler
        .rate
        .map_or("unlimited".to_owned(), |r| r.to_string());
    let caps = s.scheduler.caps;
    let cap = |c: Option<u64>| c.map_or("unlimited".to_owned(), |c| c.to_string());
    let fields: Vec<&str> = s.fields.iter().map(|f| f.name()).collect();
    [
        format!("api_key = {key}"),
        format!("api_url = {:?}", r.client.host),
        format!("tier = {:?}", r.tier_name),
        format!("rate = {rate:?}"),
        format!("hourly = {}", cap(caps.hourly)),
        format!("daily = {}", cap(caps.daily)),
        format!("monthly = {}", cap(caps.monthly)),
        format!("reserve = {:?}", s.scheduler.reserve.to_string()),
        format!("offline_quota = {}", s.quota.offline),
        format!("wait_for_reset = {}", s.quota.wait_for_reset),
        format!("safety_margin = {}", s.scheduler.safety_margin),
        format!("concurrency = {:?}", s.concurrency),
        format!("input_format = {:?}", s.input_format),
        format!("columns = {:?}", s.columns),
        format!("keep_all_hex = {}", s.keep_all_hex),
        format!(
            "coordinator = {:?}",
            s.coordinator
                .as_ref()
                .map_or("off".to_owned(), |e| e.shown())
        ),
        format!(
            "coordinator_grace = {:?}",
            humantime::format_duration(s.coordinator_grace).to_string()
        ),
        format!(
            "submit_unknown_urls = {}",
            s.submit_urls.map_or_else(
                || "false".to_owned(),
                |p| format!("true (wait {:?})", p.wait)
            )
        ),
        format!(
            "kinds = {:?}",
            s.kinds
                .map_or_else(|| "per input format".to_owned(), |k| k.to_string())
        ),
        format!(
            "field = {:?}",
            s.json_fields.iter().map(|f| f.name()).collect::<Vec<_>>()
        ),
        format!(
            "fail_on = {:?}",
            s.fail_on
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        ),
        format!("format = {:?}", s.format),
        format!("fields = {:?}", fields.join(",")),
        format!("raw = {}", s.raw),
        format!("retries = {}", s.backoff.max_retries),
        format!("backoff = {:?}..{:?}", s.backoff.base, s.backoff.cap),
        format!("max_rate_limited = {:?}", s.max_rate_limited),
        format!("connect_timeout = {:?}", r.client.connect_timeout),
        format!("request_timeout = {:?}", r.client.request_timeout),
        match &r.client.ca_cert {
            Some(path) => format!(
                "ca_cert = {:?} (and the system's trust store)",
                path.display()
            ),
            None => "ca_cert = none (the system's trust store)".to_owned(),
        },
        format!("proxy = {}", r.client.proxy.shown()),
        format!("progress = {:?}", r.progress),
        format!("threads = {}", r.threads),
        match &s.cache {
            None => "cache = off".to_owned(),
            Some(c) => format!(
                "cache = {:?} (ttl {}s, not_found_ttl {}s, max_age {}, refresh {}, answers {})",
                c.path.display().to_string(),
                c.freshness.found_ttl,
                c.freshness.not_found_ttl,
                c.freshness
                    .max_age
                    .map_or("none".to_owned(), |m| format!("{m}s")),
                c.refresh,
                if r.client.keep_body {
                    "full"
                } else {
                    "summary"
                }
            ),
        },
    ]
    .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_unreachable_default_file_is_no_file_and_never_an_error() {
        let dir =
            std::env::temp_dir().join(format!("vtbulk-default-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        // HOME inherited as a file (or another user's home): the path cannot be reached.
        let home_file = dir.join("home-is-a-file");
        std::fs::write(&home_file, "").expect("file");
        let under_file = home_file.join(".config/vtbulk/config.toml");
        assert_eq!(default_file(under_file), Ok(None));
        assert_eq!(default_file(dir.join("missing/config.toml")), Ok(None));
        // There and readable: read; there but not text: an error naming it.
        let good = dir.join("config.toml");
        std::fs::write(&good, "tier = \"public\"\n").expect("file");
        assert_eq!(
            default_file(good.clone()).map(|f| f.map(|(_, t)| t)),
            Ok(Some("tier = \"public\"\n".to_owned()))
        );
        std::fs::write(&good, [0xff, 0xfe, 0x00]).expect("file");
        let err = default_file(good).expect_err("not text");
        assert!(err.contains("config.toml"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_embedded_defaults_resolve_to_the_public_tier() {
        let layer = Layer::from_toml(DEFAULT_TOML, "defaults").expect("valid");
        let r = resolve(&layer, vec![]).expect("resolves");
        assert_eq!(
            r.settings.scheduler.rate.map(|r| r.to_string()).as_deref(),
            Some("4/min")
        );
        assert_eq!(r.settings.scheduler.caps.daily, Some(500));
        assert_eq!(r.settings.fields, Field::ALL.to_vec());
        assert_eq!(r.client.host, "https://www.virustotal.com");
    }

    #[test]
    fn later_layers_win_and_unknown_keys_are_errors() {
        let base = Layer::from_toml(DEFAULT_TOML, "defaults").expect("valid");
        let user =
            Layer::from_toml("rate = \"600/min\"\nformat = \"ndjson\"\n", "user").expect("valid");
        let flags = Layer {
            rate: Some("10/s".into()),
            ..Layer::default()
        };
        let r = resolve(&base.merged(user).merged(flags), vec![]).expect("resolves");
        assert_eq!(
            r.settings.scheduler.rate.map(|r| r.to_string()).as_deref(),
            Some("10/s")
        );
        assert_eq!(r.settings.format, Format::Ndjson);
        let err = Layer::from_toml("colour = \"blue\"\n", "user").expect_err("unknown key");
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn user_tiers_extend_the_shipped_ones() {
        let base = Layer::from_toml(DEFAULT_TOML, "defaults").expect("valid");
        let user = Layer::from_toml(
            "tier = \"team\"\n[tiers.team]\nper_minute = 300\ndaily = 100000\n",
            "user",
        )
        .expect("valid");
        let r = resolve(&base.merged(user), vec![]).expect("resolves");
        assert_eq!(
            r.settings.scheduler.rate.map(|r| r.to_string()).as_deref(),
            Some("300/min")
        );
        assert_eq!(r.settings.scheduler.caps.daily, Some(100_000));
    }

    #[test]
    fn describe_never_shows_the_key() {
        let base = Layer::from_toml(DEFAULT_TOML, "defaults").expect("valid");
        let mut r = resolve(&base, vec![]).expect("resolves");
        r.key = Some(ApiKey::new("CANARY-describe-key").expect("key"));
        r.key_source = KeySource::Env("VT_API_KEY");
        let text = describe(&r);
        assert!(text.contains("[redacted] (from VT_API_KEY)"));
        assert!(!text.contains("CANARY"));
    }
}
