//! `vtbulk`: the thin binary. Flags and configuration in, the engine run, progress and the
//! summary on stderr, and the exit code from one mapping ([`exit_code`]).

mod annotate;
mod cache_cmd;
mod failure;
mod html_report;
mod metrics;
mod progress;
mod report;

/// mimalloc instead of the system allocator: records are built on the cache-check threads
/// and freed on the writer's, a pattern glibc's allocator serves slowly (measured: malloc
/// and free were about a sixth of a cached re-run's profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, CommandFactory, Parser, Subcommand};
use vtbulk_engine::{Counters, EngineError, StopHandle, Summary};
use vtbulk_vt::Client;

use crate::failure::{Failure, codes, run_exit_code};
use vtbulk_cli::config::{self, Layer, Progress, Resolved};

/// Enrich lists of file hashes from VirusTotal v3 as fast as the key's quota allows.
#[derive(Parser, Debug)]
#[command(name = "vtbulk", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Look up every hash of the inputs; one record per unique hash (and per invalid value).
    Enrich(EnrichArgs),
    /// Print the resolved configuration (the API key redacted).
    Config(CommonArgs),
    /// Inspect or maintain the cache.
    Cache(CacheArgs),
    /// The key's quotas now, per window (minute, hour, day, month): allowed, used,
    /// remaining, when each resets; and when today's budget would run out at full speed.
    Quota {
        /// As JSON.
        #[arg(long)]
        json: bool,
        /// Also the spend over this span (e.g. 7d, up to 35d) from the cache's ledger: per
        /// UTC day and hour against each window's allowance, the busiest minute, the share of
        /// the month used and where the recent pace takes it.
        #[arg(long, value_name = "SPAN")]
        history: Option<String>,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// The processes sharing this key through the coordinator (`--coordinator`): host, pid,
    /// requests in all and in the last minute; and what the fleet spent this hour, day and
    /// month, by Redis's books.
    Fleet {
        /// As JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// One self-contained HTML page of a run's results (NDJSON or CSV as `enrich` wrote them):
    /// verdicts, detections, top threat labels and families, first submissions by year, the
    /// inputs, what was spent, the flagged files. No script, no external asset, no network.
    Report {
        /// The results (NDJSON; CSV when it ends in .csv or starts with a header line).
        results: PathBuf,
        /// Where the page goes.
        #[arg(long, short, value_name = "FILE")]
        output: PathBuf,
        /// The run's `--summary-json`, for its exact figures (requests, quota, inputs).
        #[arg(long, value_name = "FILE")]
        summary: Option<PathBuf>,
        /// The page's title.
        #[arg(long)]
        title: Option<String>,
    },
    /// Measure the rate the key really sustains: lookups of files VirusTotal knows at rising
    /// rates until the first 429 or the tier's figure, then between the last clean and the
    /// first refused rate to within 4%. Spends quota: at most --max-requests, printed first.
    Probe {
        /// The most requests it may spend.
        #[arg(long, value_name = "N")]
        max_requests: u64,
        /// Run on the public tier too (4 a minute, 500 a day: a probe spends a real share).
        #[arg(long)]
        yes: bool,
        /// As JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// What `enrich` would do with these inputs, without looking anything up: unique hashes,
    /// fresh in the cache, requests needed, time at the rate, share of today's and this
    /// month's budget, and the days it takes when it does not fit today.
    Plan {
        /// Input files (`-` or none: stdin), as for `enrich`.
        inputs: Vec<String>,
        /// As JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// A completion script for this shell on stdout (bash: `vtbulk completions bash >
    /// /etc/bash_completion.d/vtbulk`; zsh: into a directory of `$fpath` as `_vtbulk`; fish:
    /// `~/.config/fish/completions/vtbulk.fish`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// The manual pages (roff), from the same definitions as `--help`: `vtbulk.1` and one per
    /// subcommand, written into DIR (`make man`).
    #[command(hide = true)]
    Man {
        /// Where to write them.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Args, Debug)]
struct CacheArgs {
    #[command(subcommand)]
    action: CacheAction,
}

#[derive(Subcommand, Debug)]
enum CacheAction {
    /// Entries by status, size, oldest and newest, and the last run's hit ratio.
    Stats {
        /// As JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// The stored answer for a hash (any of md5, sha1, sha256), a URL, a domain or an IP
    /// address (defanged or not), as JSON.
    Get {
        /// The hash, URL, domain or IP address.
        hash: String,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Drop the answers that are no longer fresh (per --ttl and --not-found-ttl).
    Prune {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Every stored answer as NDJSON on stdout.
    Export {
        #[command(flatten)]
        common: CommonArgs,
    },
}

impl CacheAction {
    fn common(&self) -> &CommonArgs {
        match self {
            CacheAction::Stats { common, .. }
            | CacheAction::Get { common, .. }
            | CacheAction::Prune { common }
            | CacheAction::Export { common } => common,
        }
    }
}

#[derive(Args, Debug, Default)]
struct CommonArgs {
    /// A configuration file (default: $XDG_CONFIG_HOME/vtbulk/config.toml if it exists).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Read the API key from this file (`-`: stdin) instead of VT_API_KEY / VTCLI_APIKEY.
    #[arg(long, value_name = "PATH")]
    api_key_file: Option<PathBuf>,
    /// Run this command and take the key from its stdout, trimmed (a vault's CLI:
    /// `vault kv get -field=key secret/vt`); no shell unless the command is one
    /// (`sh -c '...'`); never logged.
    #[arg(long, value_name = "COMMAND")]
    api_key_command: Option<String>,
    /// VirusTotal's base URL (https; http only on loopback, e.g. vt-mock).
    #[arg(long, value_name = "URL")]
    api_url: Option<String>,
    /// Also trust these certificate authorities (a PEM bundle; e.g. a TLS-inspecting proxy's
    /// CA), besides the operating system's trust store.
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// The proxy: http://[user:password@]host:port (an HTTP CONNECT tunnel, for every host
    /// but NO_PROXY's), or off [default: HTTPS_PROXY/ALL_PROXY and NO_PROXY, loopback never].
    #[arg(long, value_name = "URL|off")]
    proxy: Option<String>,
    /// Quota profile from config/tiers.toml (public, premium-example, or your own).
    #[arg(long)]
    tier: Option<String>,
    /// Request rate: N/min, N/s, N/hour, or unlimited (overrides the tier's per-minute rate).
    #[arg(long)]
    rate: Option<String>,
    /// Lookups in flight: auto or N.
    #[arg(long)]
    concurrency: Option<String>,
    /// Input layout: auto (decided per input, by content), lines, csv, text, json, xml.
    #[arg(long)]
    input_format: Option<String>,
    /// A CSV column holding hashes, by header name or 1-based position; repeat for several
    /// (default: every column that holds hashes).
    #[arg(long, value_name = "NAME|INDEX")]
    column: Vec<String>,
    /// A JSON field holding hashes, as a dotted path (`process.hash.sha256`) or a JSON
    /// pointer (`/process/hash/sha256`); repeat for several. Only these are read, one JSON
    /// object per line (default: every hash, by the JSON reader's rules).
    #[arg(long, value_name = "PATH")]
    field: Vec<String>,
    /// Take every 32/40/64-hex token, even those whose context says they are not file
    /// hashes (import hashes, certificate thumbprints, ids, pseudonyms).
    #[arg(long)]
    keep_all_hex: bool,
    /// The kinds of IOC to take: file, url, domain, ip (comma-separated) or all. Default:
    /// all from lists, free text and XML/HTML; file hashes only from CSV and JSON exports.
    #[arg(long, value_name = "KINDS")]
    kinds: Option<String>,
    /// Submit URLs VirusTotal does not know (`POST /urls`) and poll their analysis (first
    /// after 15 s, backing off to a minute, for up to --submit-wait), then write the record.
    /// Every submission and poll is a request of the quota. Submissions are visible to
    /// VirusTotal's community.
    #[arg(long)]
    submit_unknown_urls: bool,
    /// How long to wait for a submitted URL's analysis before writing an `error` record
    /// (`AnalysisPending`; a later run with the cache polls it again).
    #[arg(long, value_name = "DURATION")]
    submit_wait: Option<String>,
    /// The first poll of a submitted URL's analysis comes this long after the submission
    /// (default 15s; then half again each time, up to a minute; at least 100ms).
    #[arg(long, value_name = "DURATION")]
    submit_poll: Option<String>,
    /// Share this key's pace and budgets with every vtbulk process that uses it, through
    /// Redis: `redis://[:password@]host:port/db` or `rediss://` (also `VTBULK_REDIS_URL`;
    /// `off` for none). Unreachable at start: exit 2, nothing spent.
    #[arg(long, value_name = "URL")]
    coordinator: Option<String>,
    /// When the coordinator cannot be reached at the start: `local-share=F` runs alone at
    /// that share of the rate (e.g. 0.33 for one of three processes) instead of exit 2.
    #[arg(long, value_name = "local-share=F")]
    coordinator_fallback: Option<String>,
    /// A file holding the Redis password, for a coordinator URL without one (else
    /// `VTBULK_REDIS_PASSWORD`); never printed.
    #[arg(long, value_name = "FILE")]
    coordinator_password_file: Option<String>,
    /// How long Redis may stay lost mid-run (no request leaves without its grant) before the
    /// run stops with exit 7 (default 60s).
    #[arg(long, value_name = "DURATION")]
    coordinator_grace: Option<String>,
    /// Exit 5 when any record matches: `FIELD OP VALUE` (`malicious>=5`,
    /// `threat_category==ransomware`), several separated by commas (any).
    #[arg(long, value_name = "CONDITIONS")]
    fail_on: Option<String>,
    /// Write the run's figures in Prometheus's text format to PATH at the end (atomically;
    /// for node_exporter's textfile collector).
    #[arg(long, value_name = "PATH")]
    metrics_file: Option<String>,
    /// Only hashes the cache had not seen before this run (the nightly delta): the others are
    /// neither looked up nor written.
    #[arg(long)]
    only_new: bool,
    /// Output format: csv, ndjson, splunk-lookup (keyed by every hash), ecs (NDJSON in the
    /// Elastic Common Schema).
    #[arg(long)]
    format: Option<String>,
    /// NDJSON in a SIEM's schema: `ecs` (the same as `--format ecs`).
    #[arg(long, value_name = "ecs")]
    schema: Option<String>,
    /// Output fields, comma-separated (see README), or `default`.
    #[arg(long)]
    fields: Option<String>,
    /// NDJSON only: add VirusTotal's whole `data` object as `raw`.
    #[arg(long)]
    raw: bool,
    /// Retries of transient failures.
    #[arg(long)]
    retries: Option<u32>,
    /// Progress on stderr: auto, always, never.
    #[arg(long)]
    progress: Option<String>,
    /// Runtime threads (1 measured fastest on 2 cores).
    #[arg(long)]
    threads: Option<usize>,
    /// The cache file, or `off` (default: $XDG_CACHE_HOME/vtbulk/cache.sqlite3).
    #[arg(long, value_name = "PATH|off")]
    cache: Option<String>,
    /// How long a found answer stays fresh in the cache (e.g. 7d, 12h).
    #[arg(long, value_name = "DURATION")]
    ttl: Option<String>,
    /// How long a not-found answer stays fresh in the cache.
    #[arg(long, value_name = "DURATION")]
    not_found_ttl: Option<String>,
    /// For this run: use no cached answer older than this.
    #[arg(long, value_name = "DURATION")]
    max_age: Option<String>,
    /// Look everything up again, ignoring the cache (and update it).
    #[arg(long)]
    refresh: bool,
    /// What the cache keeps of an answer: `full` (VirusTotal's whole answer, gzipped as
    /// received, so any field can be rendered later) or `summary` (the record's fields only:
    /// about 320 bytes an answer instead of ~2.7 KB; `--raw` runs still keep whole answers).
    #[arg(long, value_name = "full|summary")]
    cache_answers: Option<String>,
    /// Leave this much of every window (hour, day, month) to the key's other users: N
    /// requests or N% of the allowance.
    #[arg(long, value_name = "N|N%")]
    reserve: Option<String>,
    /// Do not read the key's live quotas (GET /users/{key}): plan against the tier's profile
    /// minus the spend ledger.
    #[arg(long)]
    offline_quota: bool,
}

#[derive(Args, Debug)]
struct EnrichArgs {
    /// Input files (`-` or none: stdin). Plain lines, CSV or free text; .gz is read as is.
    inputs: Vec<String>,
    #[command(flatten)]
    common: CommonArgs,
    /// Write here (as FILE.partial, renamed when complete) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    summary_json: Option<PathBuf>,
    /// Also write a one-page HTML report of the results here (self-contained: no script, no
    /// network). Reads the output back: needs -o FILE in csv or ndjson.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// No progress and no summary table on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// When a quota window runs out, sleep until it resets (the progress shows the
    /// countdown) and carry on, instead of stopping with the rest `skipped` (exit 4).
    #[arg(long)]
    wait_for_reset: bool,
    /// Write the input's own rows (CSV/TSV or NDJSON), in order and unchanged, with
    /// VirusTotal's fields appended for each hash column (`--fields` picks them; default
    /// status,malicious,engines_total,threat_label,first_submission_date).
    #[arg(long)]
    annotate: bool,
    /// With --annotate: the prefix of the appended names.
    #[arg(long, value_name = "PREFIX", default_value = "vt_")]
    prefix: String,
}

fn eprint(message: &str) {
    let _ = writeln!(io::stderr(), "vtbulk: {message}");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config(common) => config_command(&common),
        Command::Enrich(args) => enrich(args),
        Command::Cache(args) => cache_command(args),
        Command::Quota {
            json,
            history,
            common,
        } => quota_command(&common, json, history.as_deref()),
        Command::Fleet { json, common } => {
            let work = |settings, client| async move {
                vtbulk_engine::fleet_view(&settings, &client).await
            };
            engine_command(&common, vec![], json, work, report::fleet)
        }
        Command::Plan {
            inputs,
            json,
            common,
        } => plan_command(&common, inputs, json),
        Command::Report {
            results,
            output,
            summary,
            title,
        } => report_command(&results, &output, summary.as_deref(), title),
        Command::Probe {
            max_requests,
            yes,
            json,
            common,
        } => probe_command(&common, max_requests, yes, json),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "vtbulk", &mut script);
            print(&String::from_utf8_lossy(&script)).map(|()| 0)
        }
        Command::Man { dir } => std::fs::create_dir_all(&dir)
            .and_then(|()| clap_mangen::generate_to(Cli::command(), &dir))
            .map(|()| 0)
            .map_err(|e| Failure::Usage(format!("failed to write the manual pages: {e}"))),
    };
    ExitCode::from(match result {
        Ok(code) => code,
        Err(failure) => {
            if let Some(message) = failure.message() {
                eprint(message);
            }
            failure.code()
        }
    })
}

/// Writes `text` to stdout (a closed pipe is [`Failure::BrokenPipe`]).
fn print(text: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Failure::write(e, "stdout"))
}

fn config_command(common: &CommonArgs) -> Result<u8, Failure> {
    let resolved = load(common, vec![]).map_err(Failure::Usage)?;
    print(&format!("{}\n", config::describe(&resolved)))?;
    Ok(codes::OK)
}

/// Loads the configuration and builds a client, for the commands that call VirusTotal.
fn load_with_client(
    common: &CommonArgs,
    inputs: Vec<String>,
) -> Result<(Resolved, Client), Failure> {
    let resolved = load(common, inputs).map_err(Failure::Usage)?;
    let Some(key) = resolved.key.clone() else {
        return Err(Failure::Usage(
            "no API key: set VT_API_KEY (or VTCLI_APIKEY), or pass --api-key-file PATH".into(),
        ));
    };
    let client = Client::new(key, &resolved.client).map_err(|e| Failure::Usage(e.to_string()))?;
    Ok((resolved, client))
}

/// A runtime for `threads` (1: a current-thread runtime, measured fastest on 2 cores).
fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, Failure> {
    let built = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    built.map_err(|e| Failure::Usage(format!("failed to start the runtime: {e}")))
}

/// Runs one of the commands that print what the engine works out (`quota`, `plan`): the
/// engine's struct as JSON with `--json`, else `text` of it.
fn engine_command<T, Fut>(
    common: &CommonArgs,
    inputs: Vec<String>,
    json: bool,
    work: impl FnOnce(vtbulk_engine::Settings, Client) -> Fut,
    text: fn(&T) -> String,
) -> Result<u8, Failure>
where
    T: serde::Serialize,
    Fut: std::future::Future<Output = Result<T, EngineError>>,
{
    let (resolved, client) = load_with_client(common, inputs)?;
    let value = runtime(1)?.block_on(work(resolved.settings, client))?;
    let out = if json {
        serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
    } else {
        text(&value)
    };
    print(&out)?;
    Ok(codes::OK)
}

fn quota_command(common: &CommonArgs, json: bool, history: Option<&str>) -> Result<u8, Failure> {
    let days = match history {
        None => None,
        Some(span) => {
            let secs = humantime::parse_duration(span)
                .map_err(|e| Failure::Usage(format!("--history {span:?}: {e} (e.g. 7d)")))?
                .as_secs();
            let days = secs.div_ceil(86_400).max(1);
            if days > 35 {
                return Err(Failure::Usage(format!(
                    "--history {span}: the ledger keeps 35 days of hours and minutes"
                )));
            }
            Some(days as u32)
        }
    };
    if days.is_some() && common.cache.as_deref() == Some("off") {
        return Err(Failure::Usage(
            "--history reads the spend ledger in the cache file: not with --cache off".into(),
        ));
    }
    let work = move |settings, client| async move {
        vtbulk_engine::quota_view(&settings, &client, days).await
    };
    engine_command(common, vec![], json, work, report::quota)
}

fn report_command(
    results: &std::path::Path,
    output: &std::path::Path,
    summary: Option<&std::path::Path>,
    title: Option<String>,
) -> Result<u8, Failure> {
    let head = {
        use std::io::Read;
        let mut start = [0u8; 4096];
        let n = std::fs::File::open(results)
            .and_then(|mut f| f.read(&mut start))
            .map_err(|e| Failure::Usage(format!("{}: {e}", results.display())))?;
        start[..n]
            .iter()
            .copied()
            .find(|c| !c.is_ascii_whitespace())
    };
    let csv = results
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        || head.is_some_and(|c| c != b'{');
    let records = html_report::read(results, csv)?;
    let summary = match summary {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
                .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?,
        ),
        None => None,
    };
    let title = title.unwrap_or_else(|| format!("vtbulk report: {}", results.display()));
    html_report::write(output, &records.render(&title, summary.as_ref()))?;
    Ok(codes::OK)
}

fn probe_command(common: &CommonArgs, max: u64, yes: bool, json: bool) -> Result<u8, Failure> {
    let (resolved, client) = load_with_client(common, vec![])?;
    if resolved.tier_name == "public" && !yes {
        return Err(Failure::Usage(format!(
            "probe spends real quota ({max} requests of a public key's 500 a day): pass --yes \
             to run it on the public tier"
        )));
    }
    if max < 2 {
        return Err(Failure::Usage("--max-requests: at least 2".into()));
    }
    eprint(&format!(
        "probe: will spend at most {max} requests of key {}'s quota (they count in its hour, \
         day and month), looking up files VirusTotal knows",
        client.key_fingerprint()
    ));
    let report =
        runtime(1)?.block_on(vtbulk_engine::run_probe(&resolved.settings, &client, max))?;
    let out = if json {
        serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
    } else {
        report::probe(&report)
    };
    print(&out)?;
    Ok(codes::OK)
}

fn plan_command(common: &CommonArgs, inputs: Vec<String>, json: bool) -> Result<u8, Failure> {
    let work = |settings, client| async move { vtbulk_engine::plan(&settings, &client).await };
    engine_command(common, inputs, json, work, report::plan)
}

/// Embedded defaults, then the user file, then flags; the key from its own sources.
fn load(common: &CommonArgs, inputs: Vec<String>) -> Result<Resolved, String> {
    let mut layer = Layer::from_toml(config::DEFAULT_TOML, "defaults")?;
    if let Some((path, text)) = config::user_file(common.config.as_deref())? {
        layer = layer.merged(Layer::from_toml(&text, &path.display().to_string())?);
    }
    if let Ok(url) = std::env::var("VTBULK_REDIS_URL") {
        layer.coordinator = Some(url);
    }
    if let Ok(url) = std::env::var("VTBULK_API_URL") {
        layer.api_url = Some(url);
    }
    let flags = Layer {
        api_url: common.api_url.clone(),
        ca_cert: common.ca_cert.as_ref().map(|p| p.display().to_string()),
        proxy: common.proxy.clone(),
        tier: common.tier.clone(),
        rate: common.rate.clone(),
        concurrency: common.concurrency.clone(),
        input_format: common.input_format.clone(),
        column: (!common.column.is_empty()).then(|| config::Columns::Many(common.column.clone())),
        keep_all_hex: common.keep_all_hex.then_some(true),
        kinds: common.kinds.clone(),
        submit_unknown_urls: common.submit_unknown_urls.then_some(true),
        submit_wait: common.submit_wait.clone(),
        submit_poll: common.submit_poll.clone(),
        coordinator: common.coordinator.clone(),
        coordinator_fallback: common.coordinator_fallback.clone(),
        coordinator_password_file: common.coordinator_password_file.clone(),
        coordinator_grace: common.coordinator_grace.clone(),
        field: (!common.field.is_empty()).then(|| config::Columns::Many(common.field.clone())),
        fail_on: common.fail_on.clone(),
        metrics_file: common.metrics_file.clone(),
        only_new: common.only_new.then_some(true),
        format: schema_format(common.schema.as_deref(), common.format.clone())?,
        fields: common.fields.clone(),
        raw: common.raw.then_some(true),
        retries: common.retries,
        progress: common.progress.clone(),
        threads: common.threads,
        cache: common.cache.clone(),
        ttl: common.ttl.clone(),
        not_found_ttl: common.not_found_ttl.clone(),
        max_age: common.max_age.clone(),
        refresh: common.refresh.then_some(true),
        cache_answers: common.cache_answers.clone(),
        reserve: common.reserve.clone(),
        offline_quota: common.offline_quota.then_some(true),
        ..Layer::default()
    };
    let mut resolved = config::resolve(&layer.merged(flags), inputs)?;
    resolved.settings.on_input = Some(vtbulk_engine::InputHook(Arc::new(|input| {
        let mut err = io::stderr().lock();
        if let Some(fallback) = &input.fallback {
            let _ = writeln!(err, "vtbulk: {}: {fallback}", input.name);
        }
        if let Some(damage) = &input.damage {
            let _ = writeln!(
                err,
                "vtbulk: {}: {damage}; what was read before it is kept",
                input.name
            );
        }
    })));
    let (key, source) = config::read_key(
        common.api_key_file.as_deref(),
        common.api_key_command.as_deref(),
    )?;
    // A key from a file or a command can be rotated at its source during a long run: on a 401
    // it is read again (never stdin: it was read once).
    resolved.settings.key_reload = match (&source, &common.api_key_command) {
        (config::KeySource::Command(_), Some(command)) => {
            let command = command.clone();
            Some(vtbulk_engine::KeyReload(Arc::new(move || {
                config::key_from_command(&command).map(|(key, _)| key)
            })))
        }
        (config::KeySource::File(path), _) if path != std::path::Path::new("-") => {
            let path = path.clone();
            Some(vtbulk_engine::KeyReload(Arc::new(move || {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("failed to read the API key file again: {e}"))?;
                vtbulk_vt::ApiKey::new(text).map_err(|e| e.to_string())
            })))
        }
        _ => None,
    };
    resolved.key = key;
    resolved.key_source = source;
    Ok(resolved)
}

fn cache_command(args: CacheArgs) -> Result<u8, Failure> {
    let resolved = load(args.action.common(), vec![]).map_err(Failure::Usage)?;
    let settings = resolved.settings.cache.ok_or_else(|| {
        Failure::Cache(
            "the cache is off (--cache off or cache = \"off\"): nothing to look at".into(),
        )
    })?;
    let stdout = io::stdout();
    cache_cmd::run(&args.action, &settings, &mut stdout.lock())?;
    Ok(codes::OK)
}

/// Where an output file really goes: the file itself, or the file a symlink points to (so the
/// link survives the rename). `None` when `path` exists and is not a regular file (a device
/// such as `/dev/null`, a FIFO, a socket): those are written in place, never renamed over
/// (renaming a finished `.partial` over `/dev/null` would replace the device with a file).
fn regular_target(path: &std::path::Path) -> Option<PathBuf> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => None,
        Ok(_) => Some(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())),
        Err(_) => Some(path.to_owned()),
    }
}

/// The output format `--schema` asks for, checked against `--format`.
fn schema_format(schema: Option<&str>, format: Option<String>) -> Result<Option<String>, String> {
    match (schema, format.as_deref()) {
        (None, _) => Ok(format),
        (Some("ecs"), None | Some("ndjson") | Some("ecs")) => Ok(Some("ecs".into())),
        (Some("ecs"), Some(other)) => Err(format!(
            "--schema ecs writes NDJSON; it cannot be --format {other}"
        )),
        (Some(other), _) => Err(format!("unknown schema {other:?} (ecs)")),
    }
}

fn partial_path(path: &std::path::Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    path.with_file_name(name)
}

/// Whether stdin is `/dev/null`: closed when the process started (Rust's runtime reopens a
/// closed standard descriptor on `/dev/null`), or given so.
fn stdin_is_null() -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata("/dev/stdin"),
        std::fs::metadata("/dev/null"),
    ) {
        (Ok(stdin), Ok(null)) => stdin.dev() == null.dev() && stdin.ino() == null.ino(),
        _ => false,
    }
}

fn enrich(args: EnrichArgs) -> Result<u8, Failure> {
    let stdin_input = args.inputs.is_empty() || args.inputs.iter().any(|i| i == "-");
    if stdin_input && args.common.api_key_file.as_deref() == Some(std::path::Path::new("-")) {
        return Err(Failure::Usage(
            "the API key and the input cannot both come from stdin: give the input as a file"
                .into(),
        ));
    }
    if stdin_input && stdin_is_null() {
        // Closed (`<&-`: the runtime reopens it on /dev/null) or /dev/null itself: a run
        // would read nothing and say nothing.
        return Err(Failure::Usage(
            "stdin is closed (or /dev/null): there is no list to read; give it as a file, or \
             pipe it in"
                .into(),
        ));
    }
    let (mut resolved, client) = load_with_client(&args.common, args.inputs.clone())?;
    resolved.settings.quota.wait_for_reset |= args.wait_for_reset;
    // --report reads the records back from the output file.
    let report_is_csv = resolved.settings.format == vtbulk_output::Format::Csv;
    if args.report.is_some() {
        let readable = matches!(
            resolved.settings.format,
            vtbulk_output::Format::Csv | vtbulk_output::Format::Ndjson
        );
        if args.output.is_none() || args.annotate || !readable {
            return Err(Failure::Usage(
                "--report reads the records back from the output: it needs -o FILE in csv or \
                 ndjson (not --annotate)"
                    .into(),
            ));
        }
    }
    if resolved.settings.submit_urls.is_some() && resolved.tier_name == "public" {
        let _ = writeln!(
            io::stderr(),
            "vtbulk: warning: --submit-unknown-urls on a public key: VirusTotal shares what is \
             submitted with its community, and each submission and poll spends the key's quota"
        );
    }
    // --annotate: stdin spooled, inputs checked, the run's records spooled for the join.
    let mut stdin_spool = None;
    let mut records_spool = None;
    let annotate = if args.annotate {
        if args.common.format.is_some() || args.common.schema.is_some() || args.common.raw {
            return Err(Failure::Usage(
                "--annotate writes the input's own rows: it takes no --format, --schema or --raw"
                    .into(),
            ));
        }
        if resolved.settings.only_new {
            return Err(Failure::Usage(
                "--annotate writes every row back; --only-new leaves out the hashes the cache \
                 knew: use one or the other"
                    .into(),
            ));
        }
        if resolved
            .settings
            .kinds
            .is_some_and(vtbulk_ioc::Kinds::any_indicator)
        {
            return Err(Failure::Usage(
                "--annotate joins rows by their file hashes; it cannot annotate URLs, domains or \
                 IPs yet: drop --kinds (or use --kinds file)"
                    .into(),
            ));
        }
        let fields = match &args.common.fields {
            Some(list) => {
                vtbulk_output::parse_fields(list).map_err(|e| Failure::Usage(e.to_string()))?
            }
            None => vtbulk_engine::annotate::AnnotateSpec::DEFAULT_FIELDS.to_vec(),
        };
        let spec = vtbulk_engine::annotate::AnnotateSpec {
            fields,
            prefix: args.prefix.clone(),
        };
        let inputs = &mut resolved.settings.inputs;
        if inputs.iter().any(|i| i == "-") {
            let path = annotate::spool_stdin()?;
            let shown = path.to_string_lossy().into_owned();
            for input in inputs.iter_mut().filter(|i| *i == "-") {
                input.clone_from(&shown);
            }
            stdin_spool = Some(path);
        }
        let options = resolved.settings.read_options();
        annotate::check_inputs(&resolved.settings.inputs, &options)?;
        resolved.settings.format = vtbulk_output::Format::Ndjson;
        resolved.settings.fields = spec.record_fields();
        let spool = tempfile::Builder::new()
            .prefix("vtbulk-records-")
            .tempfile()
            .map_err(|e| Failure::Usage(format!("failed to create the records spool: {e}")))?;
        records_spool = Some(spool);
        Some((spec, options))
    } else {
        None
    };
    // (partial, final): a regular file is written as FILE.partial and renamed when complete.
    type Renamed = Option<(PathBuf, PathBuf)>;
    let (out, partial): (Box<dyn Write + Send>, Renamed) = match &args.output {
        Some(path) => match regular_target(path) {
            Some(target) => {
                let partial = partial_path(&target);
                let file = std::fs::File::create(&partial).map_err(|e| {
                    Failure::Usage(format!("failed to create {}: {e}", partial.display()))
                })?;
                (
                    Box::new(io::BufWriter::with_capacity(256 * 1024, file)),
                    Some((partial, target)),
                )
            }
            None => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| {
                        Failure::Usage(format!("failed to open {}: {e}", path.display()))
                    })?;
                (
                    Box::new(io::BufWriter::with_capacity(256 * 1024, file)),
                    None,
                )
            }
        },
        None => (
            Box::new(io::BufWriter::with_capacity(64 * 1024, io::stdout())),
            None,
        ),
    };
    // With --annotate the run writes its records to the spool; `out` waits for the rows.
    let (run_out, mut out): (Box<dyn Write + Send>, Option<Box<dyn Write + Send>>) =
        match &records_spool {
            Some(spool) => {
                let file = spool.reopen().map_err(|e| {
                    Failure::Usage(format!("failed to open the records spool: {e}"))
                })?;
                (
                    Box::new(io::BufWriter::with_capacity(256 * 1024, file)),
                    Some(out),
                )
            }
            None => (out, None),
        };
    let inputs = resolved.settings.inputs.clone();
    let runtime = runtime(resolved.threads)?;
    let counters = Arc::new(Counters::default());
    let stop = StopHandle::default();
    let show = match (args.quiet, resolved.progress) {
        (true, _) | (_, Progress::Never) => progress::Mode::Off,
        (false, Progress::Always) => progress::Mode::Bar,
        (false, Progress::Auto) => {
            progress::resolve(io::stderr().is_terminal(), std::env::var_os("CI").is_some())
        }
    };
    let interval = resolved.settings.scheduler.rate.map(|r| r.interval());
    let result = runtime.block_on(async {
        let display = progress::spawn(show, counters.clone(), interval);
        let signals = tokio::spawn(watch_signals(stop.clone()));
        let result =
            vtbulk_engine::run(resolved.settings, client, run_out, counters.clone(), stop).await;
        signals.abort();
        display.finish().await;
        result
    });
    let (outcome, mut summary) = match result {
        Ok(done) => done,
        Err(e) => {
            // Nothing complete was written: leave no half file behind.
            if let Some((partial, _)) = &partial {
                let _ = std::fs::remove_file(partial);
            }
            return Err(e.into());
        }
    };
    if let (Some((spec, options)), Some(spool), Some(out)) =
        (&annotate, &records_spool, out.as_mut())
    {
        let second = annotate::second_pass(spool.path(), &inputs, options, spec, out);
        let done = match second {
            Ok(done) => done,
            Err(e) => {
                if let Some((partial, _)) = &partial {
                    let _ = std::fs::remove_file(partial);
                }
                return Err(e);
            }
        };
        summary.annotate = Some(done);
    }
    drop(stdin_spool);
    let code = run_exit_code(outcome, summary.fail_on_matches);
    summary.exit_code = i32::from(code);
    if let Some(path) = &resolved.metrics_file {
        let now = jiff::Timestamp::now().as_second();
        let text = metrics::render(&summary, now, metrics::previous_success(path));
        if let Err(e) = metrics::write_atomically(path, &text) {
            let _ = writeln!(
                io::stderr(),
                "vtbulk: failed to write the metrics file {}: {e}",
                path.display()
            );
        }
    }
    if let Some((partial, path)) = &partial {
        std::fs::rename(partial, path).map_err(|e| {
            Failure::Usage(format!(
                "failed to rename {} to {}: {e}",
                partial.display(),
                path.display()
            ))
        })?;
    }
    report(&args, &summary);
    if let (Some(page), Some(output)) = (&args.report, &args.output) {
        let records = html_report::read(output, report_is_csv)?;
        let summary = serde_json::to_value(&summary).ok();
        let title = format!("vtbulk report: {}", output.display());
        html_report::write(page, &records.render(&title, summary.as_ref()))?;
    }
    Ok(code)
}

fn report(args: &EnrichArgs, summary: &Summary) {
    if !args.quiet {
        let _ = io::stderr().write_all(progress::table(summary).as_bytes());
    } else if let Some(q) = &summary.quota
        && let (Some(window), Some(at)) = (&q.exhausted, &q.resets_at)
    {
        // Quiet or not, a nightly job's log must say why it stopped and when to go on.
        eprint(&format!(
            "the {window} quota budget ran out: {} items skipped; it resets at {at}",
            q.items_left
        ));
    }
    // Quiet or not: one line that says what failed, for the stops that are an outage.
    if let Some(stopped) = &summary.stopped {
        use vtbulk_engine::HaltCause;
        let outage = if stopped.cause == HaltCause::Unreachable.name() {
            Some((
                "VirusTotal could not be reached",
                "connection failed",
                "",
                "the network",
            ))
        } else if stopped.cause == HaltCause::CoordinatorLost.name() {
            Some((
                "the coordinator (Redis) was lost for longer than --coordinator-grace",
                "no answer",
                " no request left without its grant;",
                "Redis",
            ))
        } else {
            None
        };
        let refused = |kind| stopped.cause == HaltCause::Refused(kind).name();
        if refused(vtbulk_vt::ErrorKind::ProxyAuth) {
            eprint(&format!(
                "stopped: {}; {} items skipped; nothing was lost: run again with the proxy's \
                 credentials",
                stopped
                    .detail
                    .as_deref()
                    .unwrap_or("the proxy wants credentials"),
                summary.skipped
            ));
        }
        if refused(vtbulk_vt::ErrorKind::Certificate) {
            eprint(&format!(
                "stopped: {}; {} items skipped (no request goes over a connection whose \
                 certificate is refused); nothing was lost: run again once it is trusted",
                stopped
                    .detail
                    .as_deref()
                    .unwrap_or("the API's TLS certificate was refused"),
                summary.skipped
            ));
        }
        if let Some((what, default, note, back)) = outage {
            eprint(&format!(
                "stopped: {what} ({});{note} {} items skipped, nothing was lost: run again when {back} is back",
                stopped.detail.as_deref().unwrap_or(default),
                summary.skipped
            ));
        }
    }
    if let Some(path) = &args.summary_json {
        let json = serde_json::to_string_pretty(summary).unwrap_or_default();
        if let Err(e) = std::fs::write(path, json + "\n") {
            eprint(&format!("failed to write {}: {e}", path.display()));
        }
    }
}

async fn watch_signals(stop: StopHandle) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprint("stopping: in-flight lookups finish, the rest is recorded as skipped");
            stop.stop();
            return;
        }
    }
    if tokio::signal::ctrl_c().await.is_ok() {
        stop.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_files_sit_next_to_the_output() {
        assert_eq!(
            partial_path(std::path::Path::new("out/x.csv")),
            PathBuf::from("out/x.csv.partial")
        );
    }
}
