//! `vtbulk`: the thin binary. Parses the command line, dispatches to the command, and maps
//! the result to the exit code in one place (`failure`); the commands live in `enrich` and
//! `commands`, the clap types in `args`, the settings in the `vtbulk_cli` library.

mod annotate;
mod args;
mod cache_cmd;
mod commands;
mod destinations;
mod enrich;
mod failure;
mod html_report;
mod load;
mod metrics;
mod output_file;
mod progress;
mod report;

/// mimalloc instead of the system allocator: records are built on the cache-check threads
/// and freed on the writer's, a pattern glibc's allocator serves slowly (measured: malloc
/// and free were about a sixth of a cached re-run's profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::args::{Cli, Command};
use crate::failure::Failure;

fn main() -> ExitCode {
    let result = dispatch(Cli::parse().command);
    ExitCode::from(match result {
        Ok(code) => code,
        Err(failure) => {
            if let Some(message) = failure.message() {
                load::eprint(message);
            }
            failure.code()
        }
    })
}

/// Runs `command`; its exit code, or the failure that ended it.
fn dispatch(command: Command) -> Result<u8, Failure> {
    match command {
        Command::Enrich(args) => enrich::enrich(args),
        Command::Config(common) => commands::config(&common),
        Command::Cache(args) => commands::cache(args),
        Command::Quota {
            json,
            history,
            common,
        } => commands::quota(&common, json, history.as_deref()),
        Command::Fleet { json, common } => commands::fleet(&common, json),
        Command::Plan {
            inputs,
            json,
            common,
        } => commands::plan(&common, inputs, json),
        Command::Report {
            results,
            output,
            summary,
            title,
        } => commands::report_page(&results, &output, summary.as_deref(), title),
        Command::Probe {
            max_requests,
            yes,
            json,
            common,
        } => commands::probe(&common, max_requests, yes, json),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "vtbulk", &mut script);
            load::print(&String::from_utf8_lossy(&script)).map(|()| failure::codes::OK)
        }
        Command::Man { dir } => std::fs::create_dir_all(&dir)
            .and_then(|()| clap_mangen::generate_to(Cli::command(), &dir))
            .map(|()| failure::codes::OK)
            .map_err(|e| Failure::Usage(format!("failed to write the manual pages: {e}"))),
    }
}
