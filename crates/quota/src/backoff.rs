//! Retry delays: capped exponential backoff with full jitter, as an iterator.
//!
//! Attempt n (0-based) waits a uniform random time in `[0, min(cap, base * 2^n)]` ("full
//! jitter"): retries of many workers spread out instead of colliding. The iterator ends after
//! `max_retries` delays, which is how callers know to give up.

use std::time::Duration;

/// How retries are spaced and how many there are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// The ceiling of the first delay.
    pub base: Duration,
    /// The ceiling of any delay.
    pub cap: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            max_retries: 5,
        }
    }
}

impl BackoffPolicy {
    /// The delays before each retry, drawn from `seed`.
    pub fn iter(&self, seed: u64) -> Backoff {
        Backoff {
            policy: *self,
            attempt: 0,
            state: seed ^ 0x2545_f491_4f6c_dd1d,
        }
    }

    /// The ceiling of the delay before retry `attempt` (0-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(31));
        self.base.saturating_mul(factor).min(self.cap)
    }
}

/// The delays of one item's retries.
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: BackoffPolicy,
    attempt: u32,
    state: u64,
}

impl Backoff {
    fn next_unit(&mut self) -> f64 {
        // SplitMix64: enough randomness for jitter, deterministic for tests.
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.attempt >= self.policy.max_retries {
            return None;
        }
        let ceiling = self.policy.ceiling(self.attempt);
        self.attempt += 1;
        Some(ceiling.mul_f64(self.next_unit()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_a_doubling_capped_ceiling_and_stop_after_max_retries() {
        let policy = BackoffPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            max_retries: 6,
        };
        let delays: Vec<Duration> = policy.iter(7).collect();
        assert_eq!(delays.len(), 6);
        let ceilings = [100, 200, 400, 800, 1000, 1000];
        for (d, c) in delays.iter().zip(ceilings) {
            assert!(*d <= Duration::from_millis(c), "{d:?} over {c} ms");
        }
    }

    #[test]
    fn jitter_spreads_delays_and_is_reproducible() {
        let policy = BackoffPolicy::default();
        let firsts: Vec<Duration> = (0..200)
            .map(|s| policy.iter(s).next().unwrap_or_default())
            .collect();
        let min = firsts.iter().min().copied().unwrap_or_default();
        let max = firsts.iter().max().copied().unwrap_or_default();
        assert!(
            min < Duration::from_millis(50) && max > Duration::from_millis(450),
            "{min:?}..{max:?}"
        );
        assert_eq!(
            policy.iter(3).collect::<Vec<_>>(),
            policy.iter(3).collect::<Vec<_>>()
        );
    }

    #[test]
    fn zero_retries_means_no_delays() {
        let policy = BackoffPolicy {
            max_retries: 0,
            ..BackoffPolicy::default()
        };
        assert_eq!(policy.iter(1).next(), None);
    }
}
