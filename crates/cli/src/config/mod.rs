//! Configuration in two levels: raw layers (embedded defaults, user file, environment, flags;
//! strings and options) resolved once into typed settings the engine sees.
//!
//! **A setting is declared once**, as a field of [`Layer`]: its doc comment is its `--help`
//! text, its `#[arg]` makes it a flag (or `#[arg(skip)]` a file-only key), its serde name is
//! its key in a file, and its default is in `config/default.toml` (commented out when it has
//! none). Everything else follows from that one declaration: the flags ([`clap::Args`]), the
//! file layer ([`Layer::from_toml`], unknown keys refused), the environment layer ([`ENV`]),
//! merging ([`Layer::merged`], through TOML tables), the list of keys ([`keys`]) and `vtbulk
//! config` ([`describe`]: every key with its value). Resolution ([`resolve`]) turns each value
//! into its typed setting; tests check that `config/default.toml` and the settings reference
//! name every key and that every flag is a key or a flag-only argument of its command.
//!
//! The engine never reads the environment, a file or a flag: everything it needs is in
//! [`Resolved`], built here and printable (key redacted) by `vtbulk config`.

mod describe;
mod key;
mod resolve;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use describe::describe;
pub use key::{KeyError, KeySource, key_from_command, read_key};
pub use resolve::{Progress, Resolved, cache_settings, resolve};

/// The embedded defaults.
pub const DEFAULT_TOML: &str = include_str!("../../../../config/default.toml");
/// The embedded tier profiles.
pub const TIERS_TOML: &str = include_str!("../../../../config/tiers.toml");

/// Environment variables that set a key: a layer between the user file and the flags.
pub const ENV: &[(&str, &str)] = &[
    ("VTBULK_API_URL", "api_url"),
    ("VTBULK_REDIS_URL", "coordinator"),
];

/// One layer of configuration, every key optional: the embedded defaults, a user file, the
/// environment, the flags. Each field is a setting (see the module's documentation).
#[derive(Clone, Debug, Default, PartialEq, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    // -- Where VirusTotal is, and how to reach it.
    /// VirusTotal's base URL (https; http only on loopback, e.g. vt-mock).
    #[arg(long, value_name = "URL")]
    pub api_url: Option<String>,
    /// Also trust these certificate authorities (a PEM bundle; e.g. a TLS-inspecting proxy's
    /// CA), besides the operating system's trust store.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<String>,
    /// The proxy: `http://[user:password@]host:port` (an HTTP CONNECT tunnel, for every host
    /// but NO_PROXY's), or off [default: HTTPS_PROXY/ALL_PROXY and NO_PROXY, loopback never].
    #[arg(long, value_name = "URL|off")]
    pub proxy: Option<String>,
    /// How long to wait for a connection.
    #[arg(skip)]
    pub connect_timeout: Option<String>,
    /// How long to wait for an answer.
    #[arg(skip)]
    pub request_timeout: Option<String>,
    /// Bytes of VirusTotal's answers read at once, across all connections, at most (e.g.
    /// `64MiB`; each answer is also capped at 32 MiB on the wire, 64 MiB inflated): a server
    /// sending endless bodies holds this much memory, whatever the concurrency.
    #[arg(skip)]
    pub answer_budget: Option<String>,
    /// How long `--api-key-command` may run before it is killed (with its process group) and
    /// the command fails: a vault that waits for a login must not hang a nightly job.
    #[arg(long, value_name = "DURATION")]
    pub api_key_command_timeout: Option<String>,

    // -- The key's quota and the pace.
    /// Quota profile from config/tiers.toml (public, premium-example, or your own).
    #[arg(long)]
    pub tier: Option<String>,
    /// Request rate: N/min, N/s, N/hour, or unlimited (overrides the tier's per-minute rate).
    #[arg(long)]
    pub rate: Option<String>,
    /// Leave this much of every window (hour, day, month) to the key's other users: N
    /// requests or N% of the allowance.
    #[arg(long, value_name = "N|N%")]
    pub reserve: Option<String>,
    /// Do not read the key's live quotas (GET /users/{key}): plan against the tier's profile
    /// minus the spend ledger.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub offline_quota: Option<bool>,
    /// When a quota window runs out, sleep until it resets (the progress shows the
    /// countdown) and carry on, instead of stopping with the rest `skipped` (exit 4).
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub wait_for_reset: Option<bool>,
    /// The request interval's stretch, a share (0.002: 120 ms of every minute as slack).
    #[arg(skip)]
    pub safety_margin: Option<f64>,
    /// Lookups in flight: auto or N.
    #[arg(long)]
    pub concurrency: Option<String>,
    /// The most lookups in flight `auto` goes to.
    #[arg(skip)]
    pub max_concurrency: Option<usize>,
    /// Extra or replacement tier profiles (`[tiers.NAME]` tables, as in config/tiers.toml).
    #[arg(skip)]
    pub tiers: Option<toml::Table>,

    // -- Inputs.
    /// Input layout: auto (decided per input, by content), lines, csv, text, json, xml.
    #[arg(long)]
    pub input_format: Option<String>,
    /// A CSV column holding hashes, by header name or 1-based position; repeat for several
    /// (default: every column that holds hashes).
    #[arg(long, value_name = "NAME|INDEX")]
    #[serde(default, deserialize_with = "one_or_many")]
    pub column: Option<Vec<String>>,
    /// A JSON field holding hashes, as a dotted path (`process.hash.sha256`) or a JSON
    /// pointer (`/process/hash/sha256`); repeat for several. Only these are read, one JSON
    /// object per line (default: every hash, by the JSON reader's rules).
    #[arg(long, value_name = "PATH")]
    #[serde(default, deserialize_with = "one_or_many")]
    pub field: Option<Vec<String>>,
    /// Take every 32/40/64-hex token, even those whose context says they are not file
    /// hashes (import hashes, certificate thumbprints, ids, pseudonyms).
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub keep_all_hex: Option<bool>,
    /// CSV: read only the columns that hold IOCs, not the other columns (a command line, a
    /// message) as free text.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub columns_only: Option<bool>,
    /// The kinds of IOC to take: file, url, domain, ip (comma-separated) or all. Default:
    /// all from lists, free text and XML/HTML; file hashes only from CSV and JSON exports.
    #[arg(long, value_name = "KINDS")]
    pub kinds: Option<String>,
    /// Submit URLs VirusTotal does not know (`POST /urls`) and poll their analysis (first
    /// after --submit-poll, backing off to a minute, for up to --submit-wait), then write the
    /// record. Every submission and poll is a request of the quota. Submissions are visible
    /// to VirusTotal's community.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub submit_unknown_urls: Option<bool>,
    /// How long to wait for a submitted URL's analysis before writing an `error` record
    /// (`AnalysisPending`; a later run with the cache polls it again).
    #[arg(long, value_name = "DURATION")]
    pub submit_wait: Option<String>,
    /// The first poll of a submitted URL's analysis comes this long after the submission
    /// (then half again each time, up to a minute; at least 100ms).
    #[arg(long, value_name = "DURATION")]
    pub submit_poll: Option<String>,

    // -- A fleet of processes on one key.
    /// Share this key's pace and budgets with every vtbulk process that uses it, through
    /// Redis: `redis://[:password@]host:port/db` or `rediss://` (also `VTBULK_REDIS_URL`;
    /// `off` for none). Unreachable at start: exit 2, nothing spent.
    #[arg(long, value_name = "URL")]
    pub coordinator: Option<String>,
    /// When the coordinator cannot be reached at the start: `local-share=F` runs alone at
    /// that share of the rate (e.g. 0.33 for one of three processes) instead of exit 2.
    #[arg(long, value_name = "local-share=F")]
    pub coordinator_fallback: Option<String>,
    /// A file holding the Redis password, for a coordinator URL without one (else
    /// `VTBULK_REDIS_PASSWORD`); never printed.
    #[arg(long, value_name = "FILE")]
    pub coordinator_password_file: Option<String>,
    /// How long Redis may stay lost mid-run (no request leaves without its grant) before the
    /// run stops with exit 7.
    #[arg(long, value_name = "DURATION")]
    pub coordinator_grace: Option<String>,

    // -- Output.
    /// Output format: csv, ndjson, splunk-lookup (keyed by every hash), ecs (NDJSON in the
    /// Elastic Common Schema).
    #[arg(long)]
    pub format: Option<String>,
    /// Output fields, comma-separated (see the output fields in the guide), or `default`.
    #[arg(long)]
    pub fields: Option<String>,
    /// NDJSON only: add VirusTotal's whole `data` object as `raw`.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub raw: Option<bool>,
    /// Exit 5 when any record matches: `FIELD OP VALUE` (`malicious>=5`,
    /// `threat_category==ransomware`), several separated by commas (any).
    #[arg(long, value_name = "CONDITIONS")]
    pub fail_on: Option<String>,
    /// Write the run's figures in Prometheus's text format to PATH at the end (atomically;
    /// for node_exporter's textfile collector).
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<String>,
    /// Only hashes the cache had not seen before this run (the nightly delta): the others are
    /// neither looked up nor written.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub only_new: Option<bool>,

    // -- Retries.
    /// Retries of transient failures.
    #[arg(long)]
    pub retries: Option<u32>,
    /// The ceiling of the first retry's delay (doubling, full jitter).
    #[arg(skip)]
    pub backoff_base: Option<String>,
    /// The ceiling of any retry's delay.
    #[arg(skip)]
    pub backoff_cap: Option<String>,
    /// How long 429s may go on with no success in between before the run stops as if the
    /// quota were spent (exit 4).
    #[arg(skip)]
    pub max_rate_limited: Option<String>,

    // -- The process.
    /// Progress on stderr: auto, always, never.
    #[arg(long)]
    pub progress: Option<String>,
    /// Runtime threads (1 measured fastest on 2 cores).
    #[arg(long)]
    pub threads: Option<usize>,

    // -- The cache.
    /// The cache file, or `off` (default: $XDG_CACHE_HOME/vtbulk/cache.sqlite3).
    #[arg(long, value_name = "PATH|off")]
    pub cache: Option<String>,
    /// `read-write`, or `read-only`: answer from the cache without writing to it (a shared
    /// or archived cache). A cache this user may not write is read read-only, with a warning.
    #[arg(long, value_name = "read-write|read-only")]
    pub cache_mode: Option<String>,
    /// How long a found answer stays fresh in the cache (e.g. 7d, 12h).
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
    /// How long a not-found answer stays fresh in the cache.
    #[arg(long, value_name = "DURATION")]
    pub not_found_ttl: Option<String>,
    /// For this run: use no cached answer older than this.
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<String>,
    /// Look everything up again, ignoring the cache (and update it).
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub refresh: Option<bool>,
    /// What the cache keeps of an answer: `full` (VirusTotal's whole answer, gzipped as
    /// received, so any field can be rendered later) or `summary` (the record's fields only:
    /// about 320 bytes an answer instead of ~2.7 KB; `--raw` runs still keep whole answers).
    #[arg(long, value_name = "full|summary")]
    pub cache_answers: Option<String>,
}

/// `column` and `field` in a file: one name, or a list of them.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(Some(match OneOrMany::deserialize(d)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    }))
}

impl Layer {
    /// Parses a TOML layer; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Layer, String> {
        toml::from_str(text).map_err(|e| format!("failed to read configuration {origin}: {e}"))
    }

    /// The environment's layer ([`ENV`]), read through `var`.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Layer, String> {
        let mut table = toml::Table::new();
        for (name, key) in ENV {
            if let Some(value) = var(name) {
                table.insert((*key).to_owned(), toml::Value::String(value));
            }
        }
        table
            .try_into()
            .map_err(|e| format!("failed to read the environment's settings: {e}"))
    }

    /// `self` with every key set in `top` replaced (a whole value: `tiers` and lists too).
    pub fn merged(self, top: Layer) -> Result<Layer, String> {
        let table = |layer: &Layer| {
            toml::Table::try_from(layer).map_err(|e| format!("failed to merge settings: {e}"))
        };
        let mut base = table(&self)?;
        base.extend(table(&top)?);
        base.try_into()
            .map_err(|e| format!("failed to merge settings: {e}"))
    }

    /// Every key that is set, with its value, in [`keys`] order.
    pub fn entries(&self) -> Vec<(&'static str, toml::Value)> {
        let mut table = toml::Table::try_from(self).unwrap_or_default();
        keys()
            .iter()
            .filter_map(|&key| table.remove(key).map(|value| (key, value)))
            .collect()
    }
}

/// Every key of a configuration layer, in declaration order: serde's own list of
/// [`Layer`]'s fields, so it cannot disagree with the declaration.
pub fn keys() -> &'static [&'static str] {
    use serde::de::value::Error;
    /// A deserializer that only asks `Layer` for its fields' names.
    struct Fields(&'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for &mut Fields {
        type Error = Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
            Err(serde::de::Error::custom("only the fields' names"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Error> {
            self.0 = fields;
            Err(serde::de::Error::custom("only the fields' names"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields = Fields(&[]);
    let _ = Layer::deserialize(&mut fields);
    fields.0
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

/// The layers in order: the embedded defaults, the user file (`config`), the environment
/// (`var`), then `flags`.
pub fn layered(
    config: Option<&Path>,
    var: impl Fn(&str) -> Option<String>,
    flags: Layer,
) -> Result<Layer, String> {
    let mut layer = Layer::from_toml(DEFAULT_TOML, "defaults")?;
    if let Some((path, text)) = user_file(config)? {
        layer = layer.merged(Layer::from_toml(&text, &path.display().to_string())?)?;
    }
    layer.merged(Layer::from_env(var)?)?.merged(flags)
}

#[cfg(test)]
mod tests;
