//! The commands other than `enrich` (`enrich.rs`): each loads what it needs, asks the engine
//! (or the store, or clap), and prints text or JSON.

use std::io;
use std::path::Path;

use vtbulk_cli::config;
use vtbulk_engine::EngineError;
use vtbulk_vt::Client;

use crate::args::{CacheArgs, CommonArgs};
use crate::failure::{Failure, codes};
use crate::load::{eprint, load, load_with_client, print, runtime};
use crate::{cache_cmd, html_report, report};

/// `vtbulk config`.
pub fn config(common: &CommonArgs) -> Result<u8, Failure> {
    let resolved = load(common, vec![])?;
    print(&format!("{}\n", config::describe(&resolved)))?;
    Ok(codes::OK)
}

/// Runs one of the commands that print what the engine works out (`quota`, `plan`, `fleet`):
/// the engine's struct as JSON with `--json`, else `text` of it.
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

/// `vtbulk quota [--history SPAN]`.
pub fn quota(common: &CommonArgs, json: bool, history: Option<&str>) -> Result<u8, Failure> {
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
    if days.is_some() && common.settings.cache.as_deref() == Some("off") {
        return Err(Failure::Usage(
            "--history reads the spend ledger in the cache file: not with --cache off".into(),
        ));
    }
    let work = move |settings, client| async move {
        vtbulk_engine::quota_view(&settings, &client, days).await
    };
    engine_command(common, vec![], json, work, report::quota)
}

/// `vtbulk fleet`.
pub fn fleet(common: &CommonArgs, json: bool) -> Result<u8, Failure> {
    let work =
        |settings, client| async move { vtbulk_engine::fleet_view(&settings, &client).await };
    engine_command(common, vec![], json, work, report::fleet)
}

/// `vtbulk plan`.
pub fn plan(common: &CommonArgs, inputs: Vec<String>, json: bool) -> Result<u8, Failure> {
    let work = |settings, client| async move { vtbulk_engine::plan(&settings, &client).await };
    engine_command(common, inputs, json, work, report::plan)
}

/// `vtbulk report RESULTS -o PAGE`.
pub fn report_page(
    results: &Path,
    output: &Path,
    summary: Option<&Path>,
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

/// `vtbulk probe --max-requests N`: refused on the public tier without `--yes`; says what it
/// may spend before it spends it.
pub fn probe(common: &CommonArgs, max: u64, yes: bool, json: bool) -> Result<u8, Failure> {
    let (resolved, client) = load_with_client(common, vec![])?;
    if resolved.tier.0 == "public" && !yes {
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

/// `vtbulk cache ...`.
pub fn cache(args: CacheArgs) -> Result<u8, Failure> {
    let resolved = load(args.action.common(), vec![])?;
    let settings = resolved.settings.cache.ok_or_else(|| {
        Failure::Cache(
            "the cache is off (--cache off or cache = \"off\"): nothing to look at".into(),
        )
    })?;
    let stdout = io::stdout();
    cache_cmd::run(&args.action, &settings, &mut stdout.lock())?;
    Ok(codes::OK)
}
