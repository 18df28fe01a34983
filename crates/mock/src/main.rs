//! The `vt-mock` binary: serve a local VirusTotal v3, or print an input list from its universe.
//!
//! Serving prints the base URL alone on the first line of stdout (so scripts can read it when
//! the port was chosen by the OS), then logs to stderr, and stops on SIGINT or SIGTERM.

use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use vtbulk_ioc::HashKind;
use vtbulk_mock::generate::{GenSpec, generate};
use vtbulk_mock::universe::{DEFAULT_SIZE, Fixture};
use vtbulk_mock::{Faults, KeyConfig, Latency, MockConfig, MockServer, Universe};

/// A local VirusTotal API v3: quotas, latency, faults and a settable clock.
#[derive(Parser, Debug)]
#[command(name = "vt-mock", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the API (the default).
    Serve(ServeArgs),
    /// Print an input list drawn from the universe, with exact counts.
    Hashes(HashesArgs),
}

#[derive(Args, Debug, Clone)]
struct UniverseArgs {
    /// Seed of the universe (and of latencies and faults).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of generated files.
    #[arg(long, default_value_t = DEFAULT_SIZE)]
    universe: u64,
}

#[derive(Args, Debug, Clone)]
struct ServeArgs {
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port; 0 lets the OS pick (the URL is printed on stdout's first line).
    #[arg(long, short, default_value_t = 0)]
    port: u16,
    /// A key and its quotas: KEY[:ITEM,...] with items public | unlimited | N/min | N/hour |
    /// N/day | N/month | strict=N/min (one request per 60/N s, no burst, requests of any
    /// nature) | used-hour=N | used-day=N | used-month=N | user=NAME | users-forbidden (its
    /// /users answers 403). Repeatable.
    /// Default: one unlimited key, `testkey`.
    #[arg(long = "key", value_name = "SPEC")]
    keys: Vec<String>,
    #[command(flatten)]
    universe: UniverseArgs,
    /// Engines in each generated file's results (1 to 70; 18 makes bodies the size of the
    /// shared nginx mock's).
    #[arg(long, default_value_t = vtbulk_mock::universe::ENGINE_COUNT)]
    engines: usize,
    /// Delay of each API answer: 0, 150ms, or lognormal:median=100ms,p99=800ms.
    #[arg(long, default_value = "0")]
    latency: String,
    /// How long a submitted URL's analysis takes (`POST /urls`, then `GET /analyses/{id}`):
    /// each URL between half and one and a half times this, seeded.
    #[arg(long, default_value = "30s")]
    analysis_delay: String,
    /// Injected faults of file lookups, each a probability:
    /// 500=P,503=P,504=P,429=P,reset=P,truncate=P,stall=P, plus burst=N (429 burst length)
    /// and stall-for=DURATION.
    #[arg(long, default_value = "")]
    faults: String,
    /// Start the clock at this RFC 3339 time instead of now, or offset it from now with a
    /// signed duration (`+36h`, `-10m`).
    #[arg(long, value_name = "TIME|±DURATION", allow_hyphen_values = true)]
    clock: Option<String>,
    /// Start with the clock frozen (move it with POST /_mock/clock).
    #[arg(long)]
    freeze: bool,
    /// A directory of extra file answers (*.json, each a whole GET /files answer).
    #[arg(long, value_name = "DIR")]
    fixtures: Option<PathBuf>,
    /// Runtime worker threads (1 = a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Most request-log entries kept for /_mock/stats.
    #[arg(long, default_value_t = 1_000_000)]
    log_limit: usize,
    /// Serve HTTPS: a CA and a server certificate (127.0.0.1, ::1, localhost) are made at
    /// start and the CA is written to --tls-ca (a client must trust it: `vtbulk --ca-cert`).
    #[arg(long)]
    tls: bool,
    /// Where --tls writes its CA certificate (PEM) [default: vt-mock-ca-PORT.pem in the
    /// temporary directory]; its path is on the second line of stdout.
    #[arg(long, value_name = "FILE", requires = "tls")]
    tls_ca: Option<PathBuf>,
    /// Serve a broken certificate on purpose: expired, or for another host (with --tls).
    #[arg(long, value_name = "expired|wrong-host", requires = "tls")]
    tls_flaw: Option<String>,
}

#[derive(Args, Debug)]
struct HashesArgs {
    /// Lines holding a hash (repeats included).
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Share of unique hashes unknown to the mock (answered 404).
    #[arg(long, default_value_t = 0.0)]
    unknown: f64,
    /// Share of hash lines repeating an earlier one.
    #[arg(long, default_value_t = 0.0)]
    dup: f64,
    /// Kinds to draw from: md5,sha1,sha256.
    #[arg(long, default_value = "sha256", value_delimiter = ',')]
    mix: Vec<HashKind>,
    /// Junk lines, as a share of --count, added on top.
    #[arg(long, default_value_t = 0.0)]
    junk: f64,
    /// Share of hash lines in upper case.
    #[arg(long, default_value_t = 0.0)]
    upper: f64,
    /// Seed of this list.
    #[arg(long, default_value_t = 1)]
    list_seed: u64,
    #[command(flatten)]
    universe: UniverseArgs,
    /// Write the list here instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Write the exact counts (JSON) here.
    #[arg(long)]
    meta: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Hashes(args)) => hashes(args),
        Some(Command::Serve(args)) => serve(args),
        None => serve(cli.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            let _ = writeln!(io::stderr(), "vt-mock: {message}");
            ExitCode::from(2)
        }
    }
}

fn load_fixtures(dir: &PathBuf) -> Result<Vec<Fixture>, String> {
    let mut fixtures = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("failed to read fixtures dir {}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("failed to read {}: {e}", path.display()))?;
        // Only whole file answers are fixtures; other JSON in the folder is skipped.
        if let Ok(fixture) = Fixture::from_json(&text) {
            fixtures.push(fixture);
        }
    }
    Ok(fixtures)
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let config = config_of(&args)?;
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .map_err(|e| format!("failed to start the runtime: {e}"))?;
    runtime.block_on(async move {
        let server = MockServer::start(config.clone())
            .await
            .map_err(|e| format!("failed to listen on {}: {e}", config.listen))?;
        announce(&server, &config, args.tls_ca.clone())?;
        wait_for_signal().await;
        let _ = writeln!(io::stderr(), "vt-mock: stopping");
        Ok(())
    })
}

/// The server's configuration from the command line.
fn config_of(args: &ServeArgs) -> Result<MockConfig, String> {
    let keys = if args.keys.is_empty() {
        vec![KeyConfig::unlimited("testkey")]
    } else {
        args.keys
            .iter()
            .map(|s| KeyConfig::parse(s))
            .collect::<Result<_, _>>()?
    };
    let tls = match (args.tls, args.tls_flaw.as_deref()) {
        (false, _) => None,
        (true, None) => Some(vtbulk_mock::tls::Flaw::None),
        (true, Some("expired")) => Some(vtbulk_mock::tls::Flaw::Expired),
        (true, Some("wrong-host")) => Some(vtbulk_mock::tls::Flaw::WrongHost),
        (true, Some(other)) => {
            return Err(format!(
                "--tls-flaw {other:?}: expected expired or wrong-host"
            ));
        }
    };
    Ok(MockConfig {
        listen: SocketAddr::new(args.host, args.port),
        keys,
        seed: args.universe.seed,
        universe_size: args.universe.universe,
        engines: args.engines,
        latency: args.latency.parse::<Latency>()?,
        faults: args.faults.parse::<Faults>()?,
        fixtures: match &args.fixtures {
            Some(dir) => load_fixtures(dir)?,
            None => Vec::new(),
        },
        log_limit: args.log_limit,
        clock_start_ms: args.clock.as_deref().map(clock_start).transpose()?,
        freeze_clock: args.freeze,
        follow_tokio_clock: false,
        analysis_delay: humantime::parse_duration(&args.analysis_delay)
            .map_err(|e| format!("--analysis-delay: {e}"))?,
        tls: tls.map(vtbulk_mock::tls::MockTls::generate).transpose()?,
    })
}

/// Says where the server is: its URL on stdout's first line (and the CA's path on the second,
/// with TLS), and what it serves on stderr.
fn announce(
    server: &MockServer,
    config: &MockConfig,
    tls_ca: Option<PathBuf>,
) -> Result<(), String> {
    let ca_file = match &config.tls {
        Some(tls) => {
            let path = tls_ca.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("vt-mock-ca-{}.pem", server.addr().port()))
            });
            std::fs::write(&path, &tls.ca_pem)
                .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
            Some(path)
        }
        None => None,
    };
    {
        let mut out = io::stdout().lock();
        writeln!(out, "{}", server.url()).map_err(|e| e.to_string())?;
        if let Some(path) = &ca_file {
            writeln!(out, "{}", path.display()).map_err(|e| e.to_string())?;
        }
        out.flush().map_err(|e| e.to_string())?;
    }
    if let Some(path) = &ca_file {
        let _ = writeln!(
            io::stderr(),
            "vt-mock: TLS with a certificate from a CA made at start; trust it with \
             --ca-cert {}",
            path.display()
        );
    }
    let key_ids: Vec<String> = config
        .keys
        .iter()
        .map(|k| vtbulk_mock::key_id(&k.key))
        .collect();
    let _ = writeln!(
        io::stderr(),
        "vt-mock: serving VirusTotal v3 at {} (keys {}, universe {} files, seed {}); \
         GET /_mock/stats, POST /_mock/reset, GET|POST /_mock/clock",
        server.url(),
        key_ids.join(", "),
        config.universe_size,
        config.seed
    );
    Ok(())
}

/// `--clock`: an RFC 3339 time, or `+D` / `-D` from now.
fn clock_start(spec: &str) -> Result<i64, String> {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    };
    let offset = |d: &str| vtbulk_mock::behavior::parse_duration(d).map(|d| d.as_millis() as i64);
    match spec.as_bytes().first() {
        Some(b'+') => Ok(now() + offset(&spec[1..])?),
        Some(b'-') => Ok(now() - offset(&spec[1..])?),
        _ => vtbulk_mock::clock::parse_rfc3339_ms(spec),
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn hashes(args: HashesArgs) -> Result<(), String> {
    let universe = Universe::new(args.universe.seed, args.universe.universe);
    let spec = GenSpec {
        count: args.count,
        unknown: args.unknown,
        dup: args.dup,
        mix: args.mix,
        junk: args.junk,
        upper: args.upper,
        seed: args.list_seed,
    };
    let meta = match &args.output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .map_err(|e| format!("failed to create {}: {e}", path.display()))?;
            let mut out = BufWriter::new(file);
            let meta = generate(&universe, &spec, &mut out).map_err(|e| e.to_string())?;
            out.flush().map_err(|e| e.to_string())?;
            meta
        }
        None => {
            let mut out = BufWriter::new(io::stdout().lock());
            let meta = match generate(&universe, &spec, &mut out) {
                Ok(meta) => meta,
                // A closed pipe (`| head`) is not an error.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            let _ = out.flush();
            meta
        }
    };
    if let Some(path) = &args.meta {
        let json = serde_json::to_string_pretty(&meta).map_err(|e| e.to_string())?;
        std::fs::write(path, json + "\n")
            .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
    }
    Ok(())
}
