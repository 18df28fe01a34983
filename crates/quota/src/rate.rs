//! Rates (`4/min`, `10/s`, `unlimited`) and tier profiles (`config/tiers.toml`).

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// A request rate: `count` per `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Requests...
    pub count: NonZeroU32,
    /// ...per this long.
    pub per: Duration,
}

impl Rate {
    /// `n` per minute.
    pub fn per_minute(n: NonZeroU32) -> Rate {
        Rate {
            count: n,
            per: Duration::from_secs(60),
        }
    }

    /// Requests per second.
    pub fn per_second(&self) -> f64 {
        f64::from(self.count.get()) / self.per.as_secs_f64()
    }

    /// The spacing of requests at this rate.
    pub fn interval(&self) -> Duration {
        self.per / self.count.get()
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.per.as_secs() {
            1 => write!(f, "{}/s", self.count),
            60 => write!(f, "{}/min", self.count),
            3600 => write!(f, "{}/hour", self.count),
            _ => write!(f, "{}/{:?}", self.count, self.per),
        }
    }
}

impl FromStr for Rate {
    type Err = String;

    /// `N/s`, `N/sec`, `N/min`, `N/m`, `N/hour`, `N/h`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (n, unit) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("bad rate {s:?}: expected N/s, N/min or N/hour"))?;
        let count = n
            .trim()
            .parse::<NonZeroU32>()
            .map_err(|_| format!("bad rate {s:?}: {n:?} is not a positive whole number"))?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => return Err(format!("bad rate {s:?}: unknown unit {other:?}")),
        };
        Ok(Rate { count, per })
    }
}

/// A key's allowances; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Requests in any 60 s.
    pub per_minute: Option<NonZeroU32>,
    /// Per UTC hour.
    pub hourly: Option<u64>,
    /// Per UTC day.
    pub daily: Option<u64>,
    /// Per UTC month.
    pub monthly: Option<u64>,
}

impl Tier {
    /// The per-minute allowance as a rate.
    pub fn rate(&self) -> Option<Rate> {
        self.per_minute.map(Rate::per_minute)
    }
}

/// A tiers file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("failed to read the tier profiles: {0}")]
pub struct TierError(String);

/// Parses `config/tiers.toml`: one table per tier.
pub fn parse_tiers(text: &str) -> Result<BTreeMap<String, Tier>, TierError> {
    toml::from_str(text).map_err(|e| TierError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates_in_each_unit() {
        let r: Rate = "4/min".parse().expect("rate");
        assert_eq!(r.interval(), Duration::from_secs(15));
        assert_eq!(r.to_string(), "4/min");
        let r: Rate = "10/s".parse().expect("rate");
        assert_eq!(r.interval(), Duration::from_millis(100));
        assert!((r.per_second() - 10.0).abs() < 1e-9);
        assert!("0/min".parse::<Rate>().is_err());
        assert!("4 per minute".parse::<Rate>().is_err());
        assert!("4/fortnight".parse::<Rate>().is_err());
    }

    #[test]
    fn the_shipped_tiers_file_has_the_public_tier() {
        let tiers = parse_tiers(include_str!("../../../config/tiers.toml")).expect("valid");
        let public = tiers["public"];
        assert_eq!(public.per_minute.map(NonZeroU32::get), Some(4));
        assert_eq!(
            (public.hourly, public.daily, public.monthly),
            (Some(240), Some(500), Some(15_500))
        );
        assert!(tiers.contains_key("premium-example"));
        assert!(
            parse_tiers("[x]\nper_hour = 3\n").is_err(),
            "unknown keys are refused"
        );
    }
}
