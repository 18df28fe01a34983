//! `vtbulk probe`: an opt-in measurement of the rate a key really sustains, for teams sizing
//! a premium key whose contract says one thing and whose gateway may do another.
//!
//! It looks up files VirusTotal knows (found answers from the cache, else EICAR) at a rate
//! raised step by step, each step a handful of requests spaced exactly, until the first 429
//! or the tier's figure; after a 429 it bisects between the last clean step and the refused
//! one until they are within 4% of each other, pausing a minute after each refused step so
//! VirusTotal's sliding minute is clear again. Every request spends quota: the caller states
//! the most it may spend (`max_requests`), and the probe never exceeds it.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use vtbulk_ioc::Hash;
use vtbulk_vt::{Client, ErrorKind};

/// EICAR's SHA-256: a file VirusTotal (and vt-mock) always knows.
const EICAR: &str = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";

/// Requests per step: about ten seconds' worth, between 5 and 40.
fn step_size(per_min: f64) -> u64 {
    ((per_min / 6.0).ceil() as u64).clamp(5, 40)
}

/// How the probe goes.
#[derive(Clone, Copy, Debug)]
pub struct ProbeSettings {
    /// Requests it may spend, at most.
    pub max_requests: u64,
    /// The first step's rate, a minute.
    pub start_per_min: f64,
    /// The tier's figure, a minute: reaching it cleanly ends the probe (`None`: no ceiling).
    pub ceiling_per_min: Option<f64>,
    /// The pause after a refused step (VirusTotal's minute is sliding).
    pub cool_down: Duration,
}

/// One step.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ProbeStep {
    /// Requests a minute it was paced at.
    pub per_min: f64,
    /// Requests sent.
    pub requests: u64,
    /// Answered (found or not).
    pub answered: u64,
    /// Refused with a 429.
    pub rate_limited: u64,
    /// Other failures.
    pub errors: u64,
    /// Latency of its answers, median and 99th percentile, ms.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
}

/// What the probe found.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ProbeReport {
    /// The key's fingerprint (never the key).
    pub key: String,
    /// The most it was allowed to spend, and what it spent.
    pub max_requests: u64,
    /// See `max_requests`.
    pub requests: u64,
    /// The fastest clean step, requests a minute (`None`: even the first was refused).
    pub sustained_per_min: Option<f64>,
    /// The slowest refused step, requests a minute (`None`: none was).
    pub refused_at_per_min: Option<f64>,
    /// The first 429's code (`TooManyRequestsError`, `QuotaExceededError`).
    pub first_429: Option<String>,
    /// Latency over every answer, median and 99th percentile, ms.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// Why it stopped: `bracketed` (within 4%), `ceiling` (the tier's rate, clean),
    /// `max_requests`, `refused` (a 401/403), `unreachable`.
    pub stopped: String,
    /// Every step, in order.
    pub steps: Vec<ProbeStep>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the probe on `known` hashes (EICAR when empty).
pub async fn probe(client: &Client, known: Vec<Hash>, settings: ProbeSettings) -> ProbeReport {
    let known = if known.is_empty() {
        vec![Hash::parse(EICAR).unwrap_or(Hash::Sha256([0; 32]))]
    } else {
        known
    };
    let mut steps = Vec::new();
    let mut all_latency = Vec::new();
    let (mut lo, mut hi): (Option<f64>, Option<f64>) = (None, None);
    let mut first_429 = None;
    let mut spent = 0u64;
    let mut rate = settings.start_per_min.max(1.0);
    let stopped = loop {
        let size = step_size(rate).min(settings.max_requests.saturating_sub(spent));
        if size < 2 {
            break "max_requests";
        }
        let hashes = (spent..spent + size).map(|i| known[i as usize % known.len()]);
        let done = step(client, hashes.collect(), rate).await;
        spent += size;
        all_latency.extend(done.latency);
        if first_429.is_none() {
            first_429 = done.first_429;
        }
        let refused = done.step.rate_limited > 0;
        steps.push(done.step);
        if let Some(why) = done.fatal {
            break why;
        }
        if refused {
            hi = Some(hi.map_or(rate, |h: f64| h.min(rate)));
        } else {
            lo = Some(lo.map_or(rate, |l: f64| l.max(rate)));
        }
        rate = match next_rate(lo, hi, rate, settings.ceiling_per_min) {
            Ok(rate) => rate,
            Err(why) => break why,
        };
        if refused {
            tokio::time::sleep(settings.cool_down).await;
        }
    };
    all_latency.sort_by(f64::total_cmp);
    ProbeReport {
        key: client.key_fingerprint(),
        max_requests: settings.max_requests,
        requests: spent,
        sustained_per_min: lo.map(|l| (l * 10.0).round() / 10.0),
        refused_at_per_min: hi.map(|h| (h * 10.0).round() / 10.0),
        first_429,
        p50_ms: percentile(&all_latency, 0.5),
        p99_ms: percentile(&all_latency, 0.99),
        stopped: stopped.to_owned(),
        steps,
    }
}

/// What one step did.
struct StepDone {
    step: ProbeStep,
    /// Its answers' latencies, ms, sorted.
    latency: Vec<f64>,
    /// The first 429's code, if any.
    first_429: Option<String>,
    /// Why the probe must stop (`refused`: the key; `unreachable`), if it must.
    fatal: Option<&'static str>,
}

/// One step: `hashes` looked up at `rate` a minute, every request on its own connection made
/// ready first and sent at its slot (the spacing is the slots', not a connection set-up's).
async fn step(client: &Client, hashes: Vec<Hash>, rate: f64) -> StepDone {
    let interval = Duration::from_secs_f64(60.0 / rate);
    let start = Instant::now() + Duration::from_millis(500);
    let mut tasks = tokio::task::JoinSet::new();
    let size = hashes.len() as u64;
    for (i, hash) in hashes.into_iter().enumerate() {
        let client = client.clone();
        let slot = start + interval.mul_f64(i as f64);
        tasks.spawn(async move {
            let ready = match client.ready().await {
                Ok(ready) => ready,
                Err(e) => return (Duration::ZERO, Err(e.kind())),
            };
            tokio::time::sleep_until(slot).await;
            let sent = Instant::now();
            let result = ready.get_file_summary(&hash, |_| ()).await;
            (sent.elapsed(), result.map(|_| ()).map_err(|e| e.kind()))
        });
    }
    let mut done = StepDone {
        step: ProbeStep {
            per_min: (rate * 10.0).round() / 10.0,
            requests: size,
            answered: 0,
            rate_limited: 0,
            errors: 0,
            p50_ms: 0.0,
            p99_ms: 0.0,
        },
        latency: Vec::new(),
        first_429: None,
        fatal: None,
    };
    while let Some(Ok((took, result))) = tasks.join_next().await {
        match result {
            Ok(()) | Err(ErrorKind::NotFound) => {
                done.step.answered += 1;
                done.latency.push(took.as_secs_f64() * 1000.0);
            }
            Err(kind @ (ErrorKind::TooManyRequests | ErrorKind::QuotaExceeded)) => {
                done.step.rate_limited += 1;
                done.first_429.get_or_insert_with(|| kind.code().to_owned());
            }
            Err(kind) => {
                done.step.errors += 1;
                if kind.class() == vtbulk_vt::ErrorClass::Fatal {
                    done.fatal = Some("refused");
                } else if kind == ErrorKind::Connect {
                    done.fatal = done.fatal.or(Some("unreachable"));
                }
            }
        }
    }
    done.latency.sort_by(f64::total_cmp);
    done.step.p50_ms = percentile(&done.latency, 0.5);
    done.step.p99_ms = percentile(&done.latency, 0.99);
    done
}

/// The next step's rate from the last clean (`lo`) and first refused (`hi`) rates: half
/// way between them until they are within 4% (`bracketed`), half of a refused rate, half
/// again above a clean one up to the ceiling (`ceiling` once it is reached clean).
fn next_rate(
    lo: Option<f64>,
    hi: Option<f64>,
    rate: f64,
    ceiling: Option<f64>,
) -> Result<f64, &'static str> {
    match (lo, hi) {
        (Some(l), Some(h)) if (h - l) / l < 0.04 => Err("bracketed"),
        (Some(l), Some(h)) => Ok((l + h) / 2.0),
        (None, Some(h)) => Ok(h / 2.0),
        (Some(l), None) => match ceiling {
            Some(c) if l >= c => Err("ceiling"),
            Some(c) => Ok((l * 1.5).min(c)),
            None => Ok(l * 1.5),
        },
        (None, None) => Ok(rate),
    }
}

/// `vtbulk probe`: known hashes from the cache (its found files), the rate from the settings
/// (`--rate`, else the tier's) as the ceiling, the first step at half of it.
pub async fn run_probe(
    settings: &crate::Settings,
    client: &Client,
    max_requests: u64,
) -> Result<ProbeReport, crate::EngineError> {
    let known = match &settings.cache {
        Some(cache) => crate::cache::open(cache)?
            .found_sample(64)?
            .into_iter()
            .map(Hash::Sha256)
            .collect(),
        None => Vec::new(),
    };
    let ceiling = settings
        .scheduler
        .rate
        .or(settings.scheduler.caps.rate())
        .map(|r| r.per_second() * 60.0);
    Ok(probe(
        client,
        known,
        ProbeSettings {
            max_requests,
            start_per_min: ceiling.map_or(60.0, |c| (c / 2.0).max(1.0)),
            ceiling_per_min: ceiling,
            cool_down: Duration::from_secs(60),
        },
    )
    .await)
}
