//! Progress while running and the summary table at the end, both on stderr.
//!
//! One task owns the display and reads the engine's counters; workers never touch it. Whether
//! to draw a bar is decided once, by a pure function of the terminal and CI state.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vtbulk_engine::{Counters, Summary};

/// What to show while running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A live bar (a terminal).
    Bar,
    /// One status line every 10 s (logs, CI, pipes).
    Lines,
    /// Nothing.
    Off,
}

/// The mode for `--progress auto`: a bar on an interactive terminal, status lines otherwise.
pub fn resolve(stderr_is_terminal: bool, is_ci: bool) -> Mode {
    if stderr_is_terminal && !is_ci {
        Mode::Bar
    } else {
        Mode::Lines
    }
}

/// The running display; `finish` stops it.
pub struct Display {
    task: Option<tokio::task::JoinHandle<()>>,
    bar: Option<indicatif::ProgressBar>,
}

impl Display {
    /// Stops and clears the display.
    pub async fn finish(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

fn status(c: &Counters, started: Instant, interval: Option<Duration>) -> String {
    let get = Counters::get;
    let (done, unique) = (get(&c.done), get(&c.unique));
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let left = unique.saturating_sub(done);
    let eta = interval.map_or(String::new(), |i| {
        format!(
            ", eta {}",
            humantime::format_duration(Duration::from_secs((i.as_secs_f64() * left as f64) as u64))
        )
    });
    let until = c.waiting_until.load(std::sync::atomic::Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let waiting = if until > now {
        format!(
            ", quota spent: waiting {} for the reset at {}",
            humantime::format_duration(Duration::from_secs((until - now) as u64)),
            vtbulk_engine::rfc3339(until)
        )
    } else {
        String::new()
    };
    format!(
        "{done}/{unique} done, {:.1} req/s, {} ok, {} not found, {} errors, {} retries, {} 429s{eta}{waiting}",
        get(&c.requests) as f64 / elapsed,
        get(&c.ok),
        get(&c.not_found),
        get(&c.errors),
        get(&c.retries),
        get(&c.rate_limited),
    )
}

/// Starts the display for `mode`.
pub fn spawn(mode: Mode, counters: Arc<Counters>, interval: Option<Duration>) -> Display {
    let started = Instant::now();
    match mode {
        Mode::Off => Display {
            task: None,
            bar: None,
        },
        Mode::Lines => {
            let task = tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(10));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let _ = writeln!(
                        std::io::stderr(),
                        "vtbulk: {}",
                        status(&counters, started, interval)
                    );
                }
            });
            Display {
                task: Some(task),
                bar: None,
            }
        }
        Mode::Bar => {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let shown = bar.clone();
            let task = tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                loop {
                    tick.tick().await;
                    shown.set_length(Counters::get(&counters.unique));
                    shown.set_position(Counters::get(&counters.done));
                    shown.set_message(status(&counters, started, interval));
                }
            });
            Display {
                task: Some(task),
                bar: Some(bar),
            }
        }
    }
}

/// One `  key   value` line of a table whose keys are `width` wide.
pub fn row(t: &mut String, width: usize, key: &str, value: String) {
    let _ = writeln!(t, "  {key:<width$} {value}");
}

/// One row per input (when there are several, or when one needs a word): how it was read
/// and what it gave.
pub fn inputs(t: &mut String, width: usize, inputs: &[vtbulk_ioc::InputReport]) {
    let worth = inputs.len() > 1
        || inputs.iter().any(|i| {
            i.fallback.is_some() || i.damage.is_some() || i.skipped.is_some() || i.excluded > 0
        });
    if !worth {
        return;
    }
    for i in inputs {
        let mut how = i.format.to_owned();
        for extra in [i.compression, i.encoding].into_iter().flatten() {
            how.push_str(&format!(", {extra}"));
        }
        if let Some(f) = &i.fallback {
            how.push_str(&format!("; {f}"));
        }
        let reasons: BTreeMap<String, u64> = i
            .excluded_by_reason
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect();
        let others = if i.indicators > 0 {
            let kinds: BTreeMap<String, u64> = i
                .indicators_by_kind
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect();
            format!(", {} URLs/domains/IPs{}", i.indicators, by_code(&kinds))
        } else {
            String::new()
        };
        let mut line = format!(
            "{} ({how}): {} lines, {} hashes{others}, {} invalid, {} excluded{}",
            i.name,
            i.lines,
            i.hashes,
            i.invalid,
            i.excluded,
            by_code(&reasons)
        );
        if let Some(d) = &i.damage {
            line.push_str(&format!("; DAMAGED: {d}"));
        }
        if let Some(s) = &i.skipped {
            line.push_str(&format!("; SKIPPED: {s}"));
        }
        row(t, width, "input", line);
    }
}

/// The end-of-run table: what was read, what answered it, what was spent, how it ended.
pub fn table(s: &Summary) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "vtbulk summary");
    read_rows(&mut t, s);
    answer_rows(&mut t, s);
    request_rows(&mut t, s);
    if let Some(p) = &s.pacing {
        pacing_row(&mut t, p);
    }
    if s.cache_write_errors > 0 {
        row16(
            &mut t,
            "cache failures",
            format!(
                "{} answers not kept in the cache (they will be looked up again)",
                s.cache_write_errors
            ),
        );
    }
    if s.abandoned > 0 {
        row16(
            &mut t,
            "abandoned",
            format!(
                "{} requests in flight at the stop had no answer in time (spent; their items \
                 are skipped, a re-run looks them up)",
                s.abandoned
            ),
        );
    }
    if let Some(q) = &s.quota {
        quota_rows(&mut t, q);
    }
    row16(&mut t, "elapsed", format!("{:.2} s", s.elapsed_secs));
    row16(&mut t, "rate", format!("{:.1} req/s", s.requests_per_sec));
    row16(
        &mut t,
        "outcome",
        format!("{} (exit {})", s.outcome, s.exit_code),
    );
    t
}

fn row16(t: &mut String, k: &str, v: String) {
    row(t, 16, k, v);
}

/// Lines, invalid values, exclusions, each input, unique IOCs and repeats.
fn read_rows(t: &mut String, s: &Summary) {
    row16(t, "lines read", s.lines_read.to_string());
    row16(t, "invalid", s.invalid.to_string());
    row16(
        t,
        "excluded",
        format!("{}{}", s.excluded, by_code(&s.excluded_by_reason)),
    );
    inputs(t, 16, &s.inputs);
    let unique = match s.unique_indicators {
        0 => s.unique.to_string(),
        n => format!(
            "{} ({} hashes, {n} URLs/domains/IPs)",
            s.unique,
            s.unique - n
        ),
    };
    row16(t, "unique", unique);
    row16(t, "duplicates", s.duplicates.to_string());
}

/// Where the answers came from: the cache (and whose), the lookups, and what they said.
fn answer_rows(t: &mut String, s: &Summary) {
    let from_cache = if s.fleet_answers > 0 {
        format!(
            "{} ({} answered by another process of the fleet)",
            s.cache_hits, s.fleet_answers
        )
    } else if s.shared_answers > 0 {
        format!(
            "{} ({} stored by another process during this run)",
            s.cache_hits, s.shared_answers
        )
    } else {
        s.cache_hits.to_string()
    };
    row16(t, "from cache", from_cache);
    if s.claims_waited > 0 {
        row16(
            t,
            "waited for",
            format!(
                "{} (another process sharing the cache was looking them up)",
                s.claims_waited
            ),
        );
    }
    if s.fields_cut > 0 {
        row16(
            t,
            "fields cut",
            format!(
                "{} (text from VirusTotal over {} bytes: the cells end with {})",
                s.fields_cut,
                vtbulk_output::FIELD_CAP,
                vtbulk_output::CUT_MARK
            ),
        );
    }
    if s.already_seen > 0 {
        row16(
            t,
            "already seen",
            format!("{} (--only-new: not written)", s.already_seen),
        );
    }
    row16(t, "lookups", s.lookups.to_string());
    row16(t, "ok", s.ok.to_string());
    row16(t, "not found", s.not_found.to_string());
    row16(
        t,
        "errors",
        format!("{}{}", s.errors, by_code(&s.errors_by_code)),
    );
    row16(
        t,
        "skipped",
        format!("{}{}", s.skipped, by_code(&s.skipped_by_reason)),
    );
}

/// Retries, 429s, requests, and how the key was shared.
fn request_rows(t: &mut String, s: &Summary) {
    row16(t, "retries", s.retries.to_string());
    row16(
        t,
        "429s",
        format!(
            "{}{}{}",
            s.rate_limited,
            by_code(&s.rate_limited_by_code),
            by_code(&s.rate_limited_by_kind)
        ),
    );
    row16(t, "requests", s.requests.to_string());
    if let Some(c) = &s.coordinator {
        row16(t, "coordinator", c.clone());
    }
}

/// The pacing: the interval, the margins, the answers' pushes, the lateness.
fn pacing_row(t: &mut String, p: &vtbulk_quota::PacingReport) {
    let Some(interval) = p.interval_ms else {
        return;
    };
    let ms = |us: u64| us as f64 / 1000.0;
    row16(
        t,
        "pacing",
        format!(
            "every {:.1} ms (+{:.2}% margin, +{:.2}% adaptive at the end, +{:.2}% at most; \
             {} slow answers pushed {:.1} ms in all); allowed to grant p50 {:.2} ms, p99 \
             {:.2} ms; grant to departure p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            interval,
            p.margin_base * 100.0,
            p.margin_end * 100.0,
            p.margin_peak * 100.0,
            p.answer_pushes,
            p.answer_pushed_ms,
            ms(p.grant_lateness_us.p50),
            ms(p.grant_lateness_us.p99),
            ms(p.lateness_us.p50),
            ms(p.lateness_us.p99),
            ms(p.lateness_us.max)
        ),
    );
}

/// The budget's source and rate, what each window has left, and the window that ran out.
fn quota_rows(t: &mut String, q: &vtbulk_engine::QuotaReport) {
    let note = q
        .note
        .as_deref()
        .map_or(String::new(), |n| format!(" ({n})"));
    row16(t, "quota", format!("{}{note}, rate {}", q.source, q.rate));
    for w in &q.windows {
        if let Some(remaining) = w.remaining {
            row16(
                t,
                &format!("  {} left", w.window.name()),
                format!(
                    "{remaining} (resets {})",
                    vtbulk_engine::rfc3339(w.resets_at)
                ),
            );
        }
    }
    if let (Some(window), Some(at)) = (&q.exhausted, &q.resets_at) {
        row16(
            t,
            "quota spent",
            format!(
                "the {window} budget ran out: {} items skipped, run again after {at}",
                q.items_left
            ),
        );
    }
}

pub fn by_code(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = map.iter().map(|(k, v)| format!("{k} {v}")).collect();
    format!(" ({})", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_only_on_an_interactive_terminal() {
        assert_eq!(resolve(true, false), Mode::Bar);
        assert_eq!(resolve(true, true), Mode::Lines);
        assert_eq!(resolve(false, false), Mode::Lines);
        assert_eq!(resolve(false, true), Mode::Lines);
    }
}
