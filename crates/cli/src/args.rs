//! The command line's shape: commands and their arguments, as clap types.
//!
//! Every setting is a field of [`Layer`] (flattened into [`CommonArgs`]): declared once, it
//! is a flag, a file key and a line of `vtbulk config` at the same time. The arguments here
//! are the rest, each listed in `FLAG_ONLY`: where the key and the configuration come from,
//! what a command writes where, and what only one command does; a test checks that every
//! flag of every command is one or the other.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use vtbulk_cli::config::Layer;

/// Enrich lists of file hashes from VirusTotal v3 as fast as the key's quota allows.
#[derive(Parser, Debug)]
#[command(name = "vtbulk", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
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
pub struct CacheArgs {
    #[command(subcommand)]
    pub action: CacheAction,
}

#[derive(Subcommand, Debug)]
pub enum CacheAction {
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
    pub fn common(&self) -> &CommonArgs {
        match self {
            CacheAction::Stats { common, .. }
            | CacheAction::Get { common, .. }
            | CacheAction::Prune { common }
            | CacheAction::Export { common } => common,
        }
    }
}

/// What every command that reads the configuration takes: where the configuration and the
/// key come from, and every setting as a flag.
#[derive(Args, Debug, Default)]
pub struct CommonArgs {
    /// A configuration file (default: $XDG_CONFIG_HOME/vtbulk/config.toml if it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Read the API key from this file (`-`: stdin) instead of VT_API_KEY / VTCLI_APIKEY.
    #[arg(long, value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,
    /// Run this command and take the key from its stdout, trimmed (a vault's CLI:
    /// `vault kv get -field=key secret/vt`); no shell unless the command is one
    /// (`sh -c '...'`); never logged.
    #[arg(long, value_name = "COMMAND")]
    pub api_key_command: Option<String>,
    /// NDJSON in a SIEM's schema: `ecs` (the same as `--format ecs`).
    #[arg(long, value_name = "ecs")]
    pub schema: Option<String>,
    /// The settings (see `vtbulk config` and the settings reference).
    #[command(flatten)]
    pub settings: Layer,
}

#[derive(Args, Debug)]
pub struct EnrichArgs {
    /// Input files (`-` or none: stdin). Plain lines, CSV or free text; .gz is read as is.
    pub inputs: Vec<String>,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Write here (as FILE.partial, renamed when complete) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
    /// Also write a one-page HTML report of the results here (self-contained: no script, no
    /// network). Reads the output back: needs -o FILE in csv or ndjson.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// No progress and no summary table on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// Write the input's own rows (CSV/TSV or NDJSON), in order and unchanged, with
    /// VirusTotal's fields appended for each hash column (`--fields` picks them; default
    /// status,malicious,engines_total,threat_label,first_submission_date).
    #[arg(long)]
    pub annotate: bool,
    /// With --annotate: the prefix of the appended names.
    #[arg(long, value_name = "PREFIX", default_value = "vt_")]
    pub prefix: String,
}

/// The arguments that are not settings, with what they are for: everything else on the
/// command line is a key of the configuration (checked by the test below).
#[cfg(test)]
const FLAG_ONLY: &[(&str, &str)] = &[
    ("config", "where the configuration file is"),
    (
        "api_key_file",
        "where the key is (never in a configuration file)",
    ),
    (
        "api_key_command",
        "where the key is (never in a configuration file)",
    ),
    (
        "schema",
        "another name for a format (`--schema ecs` is `format = \"ecs\"`)",
    ),
    ("output", "enrich: where this run writes"),
    ("summary_json", "enrich: where this run's summary goes"),
    ("report", "enrich: where this run's HTML page goes"),
    ("quiet", "enrich: this run's stderr"),
    ("annotate", "enrich: this run writes the input's rows"),
    ("prefix", "enrich --annotate: names of the appended columns"),
    (
        "json",
        "quota, fleet, plan, probe, cache stats: the answer as JSON",
    ),
    ("history", "quota: the span of spend to show"),
    ("max_requests", "probe: what it may spend"),
    ("yes", "probe: consent to spend a public key's quota"),
    ("summary", "report: the run's summary file"),
    ("title", "report: the page's title"),
    ("dir", "man: where the pages go"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every flag (an argument with a long name) of `command` and its subcommands.
    fn flags(command: &clap::Command, out: &mut Vec<String>) {
        for arg in command.get_arguments() {
            if arg.get_long().is_some() && !["help", "version"].contains(&arg.get_id().as_str()) {
                out.push(arg.get_id().to_string());
            }
        }
        for sub in command.get_subcommands() {
            flags(sub, out);
        }
    }

    #[test]
    fn every_flag_is_a_setting_or_listed_as_flag_only() {
        let mut all = Vec::new();
        flags(&Cli::command(), &mut all);
        let keys = vtbulk_cli::config::keys();
        for flag in &all {
            assert!(
                keys.contains(&flag.as_str()) || FLAG_ONLY.iter().any(|(f, _)| f == flag),
                "--{} is neither a setting nor listed in FLAG_ONLY",
                flag.replace('_', "-")
            );
        }
        // And the list holds no stale names: each is a flag somewhere, none a setting.
        for (only, _) in FLAG_ONLY {
            assert!(all.iter().any(|f| f == only), "{only} is no flag");
            assert!(!keys.contains(only), "{only} is a setting");
        }
    }

    #[test]
    fn the_flags_parse_into_the_settings_layer() {
        let cli = Cli::parse_from([
            "vtbulk",
            "enrich",
            "--raw",
            "--column",
            "SHA256",
            "--column",
            "MD5",
            "--wait-for-reset",
            "--rate",
            "10/s",
            "list.txt",
        ]);
        let Command::Enrich(args) = cli.command else {
            panic!("enrich");
        };
        let layer = args.common.settings;
        assert_eq!(layer.raw, Some(true));
        assert_eq!(layer.wait_for_reset, Some(true));
        assert_eq!(layer.column, Some(vec!["SHA256".into(), "MD5".into()]));
        assert_eq!(layer.rate.as_deref(), Some("10/s"));
        assert_eq!(layer.only_new, None, "a flag not given is not set");
    }
}
