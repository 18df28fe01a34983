//! Latency and fault injection: how slow and how unreliable the mock pretends VirusTotal is.
//!
//! Both are deterministic under a seed. Faults are drawn from the seed, the requested id and how
//! many times that id was asked for, so the same client run meets the same faults whatever order
//! its concurrent requests arrive in. A retried lookup draws again and can succeed.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use vtbulk_rng::{Rng, seed_of};

/// How long each API answer is held back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Latency {
    /// Answer at once.
    #[default]
    None,
    /// The same delay every time.
    Fixed {
        /// The delay.
        #[serde(with = "ser_duration")]
        delay: Duration,
    },
    /// A lognormal delay given by its median and 99th percentile.
    LogNormal {
        /// Half of the answers are faster than this.
        #[serde(with = "ser_duration")]
        median: Duration,
        /// 99% of the answers are faster than this.
        #[serde(with = "ser_duration")]
        p99: Duration,
    },
}

mod ser_duration {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }
}

/// z-score of the 99th percentile of a standard normal.
const Z99: f64 = 2.326_347_874;

impl Latency {
    /// A delay for the `n`-th request.
    pub fn sample(&self, seed: u64, n: u64) -> Duration {
        match *self {
            Latency::None => Duration::ZERO,
            Latency::Fixed { delay } => delay,
            Latency::LogNormal { median, p99 } => {
                let mu = median.as_secs_f64().max(1e-6).ln();
                let sigma = ((p99.as_secs_f64().max(1e-6).ln() - mu) / Z99).max(0.0);
                let z = Rng::new(seed_of(&[seed, 0x1a7e, n])).normal();
                // Cap at 10x p99 so one sample cannot stall a test for minutes.
                let secs = (mu + sigma * z).exp().min(p99.as_secs_f64() * 10.0);
                Duration::from_secs_f64(secs)
            }
        }
    }
}

impl FromStr for Latency {
    type Err = String;

    /// `0`, `150ms`, or `lognormal:median=100ms,p99=800ms`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() || s == "0" || s == "none" {
            return Ok(Latency::None);
        }
        if let Some(rest) = s.strip_prefix("lognormal:") {
            let (mut median, mut p99) = (None, None);
            for item in rest.split(',') {
                match item.split_once('=') {
                    Some(("median", v)) => median = Some(parse_duration(v)?),
                    Some(("p99", v)) => p99 = Some(parse_duration(v)?),
                    _ => return Err(format!("bad lognormal item {item:?}")),
                }
            }
            let median = median.ok_or("lognormal needs median=")?;
            let p99 = p99.unwrap_or(median);
            if p99 < median {
                return Err("p99 must not be below the median".into());
            }
            return Ok(Latency::LogNormal { median, p99 });
        }
        Ok(Latency::Fixed {
            delay: parse_duration(s)?,
        })
    }
}

/// Parses `150ms`, `2s`, `1m30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("bad duration {s:?}: {e}"))
}

/// One injected failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// 500 with a non-JSON body, as a broken front end sends.
    ServerError,
    /// 503 TransientError.
    Transient,
    /// 504 DeadlineExceededError.
    DeadlineExceeded,
    /// 429 TooManyRequestsError, starting a burst of them.
    TooManyRequests,
    /// Headers and half the body, then a TCP reset.
    Reset,
    /// A complete HTTP answer whose JSON is cut short.
    Truncate,
    /// No answer until the client gives up (or the stall ends and the connection is dropped).
    Stall,
}

impl Fault {
    const ALL: [(Fault, &'static [&'static str]); 7] = [
        (Fault::ServerError, &["500", "server-error"]),
        (Fault::Transient, &["503", "transient"]),
        (Fault::DeadlineExceeded, &["504", "deadline"]),
        (Fault::TooManyRequests, &["429", "too-many"]),
        (Fault::Reset, &["reset"]),
        (Fault::Truncate, &["truncate"]),
        (Fault::Stall, &["stall"]),
    ];
}

/// Fault rates (each a probability per file lookup) and their shapes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Faults {
    /// `(fault, probability)` in the order they are drawn.
    pub rates: Vec<(Fault, f64)>,
    /// Length of a TooManyRequestsError burst, in requests.
    pub burst: u32,
    /// How long a stalled request is held before its connection is dropped.
    #[serde(with = "ser_duration")]
    pub stall_for: Duration,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            rates: Vec::new(),
            burst: 5,
            stall_for: Duration::from_secs(120),
        }
    }
}

impl Faults {
    /// True when no fault can happen.
    pub fn is_empty(&self) -> bool {
        self.rates.iter().all(|&(_, p)| p <= 0.0)
    }

    /// The same faults with every request failing with `fault` (for tests).
    pub fn always(fault: Fault) -> Faults {
        Faults {
            rates: vec![(fault, 1.0)],
            ..Faults::default()
        }
    }
}

impl FromStr for Faults {
    type Err = String;

    /// `503=0.05,reset=0.02,truncate=0.01,504=0.01,500=0.01,429=0.005,stall=0.001`, plus
    /// `burst=N` and `stall-for=DURATION`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut faults = Faults::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| format!("bad fault item {item:?}: expected NAME=VALUE"))?;
            match name {
                "burst" => {
                    faults.burst = value
                        .parse::<u32>()
                        .ok()
                        .filter(|&b| b > 0)
                        .ok_or_else(|| format!("bad burst {value:?}"))?;
                }
                "stall-for" => faults.stall_for = parse_duration(value)?,
                _ => {
                    let fault = Fault::ALL
                        .iter()
                        .find(|(_, names)| names.contains(&name))
                        .map(|&(f, _)| f)
                        .ok_or_else(|| format!("unknown fault {name:?}"))?;
                    let p: f64 = value
                        .parse()
                        .ok()
                        .filter(|p: &f64| (0.0..=1.0).contains(p))
                        .ok_or_else(|| format!("bad rate {value:?} (0 to 1)"))?;
                    faults.rates.retain(|&(f, _)| f != fault);
                    faults.rates.push((fault, p));
                }
            }
        }
        let total: f64 = faults.rates.iter().map(|&(_, p)| p).sum();
        if total > 1.0 + 1e-9 {
            return Err(format!("fault rates add up to {total}, more than 1"));
        }
        Ok(faults)
    }
}

/// The draw state: attempts per id and the current burst.
#[derive(Debug, Default)]
pub struct FaultState {
    attempts: Mutex<HashMap<Box<str>, u32>>,
    burst_left: AtomicU32,
    requests: AtomicU64,
}

impl FaultState {
    /// Forgets attempts and bursts.
    pub fn reset(&self) {
        self.attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.burst_left.store(0, Ordering::Relaxed);
        self.requests.store(0, Ordering::Relaxed);
    }

    /// A sequence number for each API request (for latency draws).
    pub fn next_request(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed)
    }

    /// Decides the fault (if any) for this lookup of `id`.
    pub fn draw(&self, faults: &Faults, seed: u64, id: &str) -> Option<Fault> {
        if faults.is_empty() {
            return None;
        }
        // Inside a burst every request is refused, whatever it asks for.
        let in_burst = self
            .burst_left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if in_burst {
            return Some(Fault::TooManyRequests);
        }
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
            let n = attempts.entry(id.into()).or_insert(0);
            *n += 1;
            *n
        };
        let id_seed = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let u = Rng::new(seed_of(&[seed, 0xfa17, id_seed, u64::from(attempt)])).next_f64();
        let mut acc = 0.0;
        for &(fault, p) in &faults.rates {
            acc += p;
            if u < acc {
                if fault == Fault::TooManyRequests {
                    self.burst_left
                        .store(faults.burst.saturating_sub(1), Ordering::Relaxed);
                }
                return Some(fault);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_latency_forms() {
        assert_eq!("0".parse::<Latency>(), Ok(Latency::None));
        assert_eq!(
            "150ms".parse::<Latency>(),
            Ok(Latency::Fixed {
                delay: Duration::from_millis(150)
            })
        );
        let l: Latency = "lognormal:median=100ms,p99=800ms".parse().expect("valid");
        let mut samples: Vec<Duration> = (0..2000).map(|n| l.sample(3, n)).collect();
        samples.sort();
        let median = samples[1000].as_secs_f64();
        let p99 = samples[1980].as_secs_f64();
        assert!((0.08..0.12).contains(&median), "median {median}");
        assert!((0.5..1.2).contains(&p99), "p99 {p99}");
        assert!("lognormal:p99=1s".parse::<Latency>().is_err());
    }

    #[test]
    fn parses_fault_specs_and_rejects_nonsense() {
        let f: Faults = "503=0.05,reset=0.02,truncate=0.01,burst=3,stall-for=2s"
            .parse()
            .expect("valid");
        assert_eq!(f.rates.len(), 3);
        assert_eq!(f.burst, 3);
        assert_eq!(f.stall_for, Duration::from_secs(2));
        assert!("503=2".parse::<Faults>().is_err());
        assert!("teapot=0.1".parse::<Faults>().is_err());
        assert!("503=0.6,504=0.6".parse::<Faults>().is_err());
    }

    #[test]
    fn draws_are_deterministic_per_id_and_attempt() {
        let faults: Faults = "503=0.5".parse().expect("valid");
        let run = || {
            let state = FaultState::default();
            (0..50)
                .map(|i| state.draw(&faults, 9, &format!("id{}", i % 10)))
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let hits = a.iter().filter(|f| f.is_some()).count();
        assert!((10..40).contains(&hits), "{hits} of 50 at p=0.5");
    }

    #[test]
    fn a_too_many_requests_draw_starts_a_burst() {
        let faults: Faults = "429=1,burst=4".parse().expect("valid");
        let state = FaultState::default();
        assert_eq!(state.draw(&faults, 1, "a"), Some(Fault::TooManyRequests));
        for _ in 0..3 {
            assert_eq!(state.draw(&faults, 1, "b"), Some(Fault::TooManyRequests));
        }
        // "b" was never drawn for: the burst refused it without a draw.
        assert!(state.attempts.lock().expect("lock").get("b").is_none());
    }
}
