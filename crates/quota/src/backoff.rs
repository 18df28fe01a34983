//! Retry delays and gate pauses: capped exponential backoff with jitter.
//!
//! Attempt n (0-based) waits a uniform random time in `[0, min(cap, base * 2^n)]` ("full
//! jitter", [`BackoffPolicy::delay`]): retries of many workers spread out instead of
//! colliding. The iterator ends after `max_retries` delays, which is how callers know to give
//! up. A pause of everyone (the 429 gate, [`BackoffPolicy::pause`]) uses "equal jitter",
//! `[c/2, c]`: it must really slow the key down, so it never draws near zero. The random unit
//! comes from [`unit`], seeded, so a schedule is tested by computing it, not by sleeping.

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

    /// The delay before retry `attempt` for a random `unit` in `[0, 1)`: full jitter.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        self.ceiling(attempt).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The `n`th pause in a row (0-based) for a random `unit` in `[0, 1)`: equal jitter,
    /// between half the ceiling and the ceiling.
    pub fn pause(&self, n: u32, unit: f64) -> Duration {
        self.ceiling(n).mul_f64(0.5 + unit.clamp(0.0, 1.0) / 2.0)
    }
}

/// A uniform number in `[0, 1)` from `seed` (SplitMix64's output function): enough randomness
/// for jitter, the same for the same seed.
pub fn unit(seed: u64) -> f64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
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
        let u = unit(self.state);
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        u
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.attempt >= self.policy.max_retries {
            return None;
        }
        let u = self.next_unit();
        let delay = self.policy.delay(self.attempt, u);
        self.attempt += 1;
        Some(delay)
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
    fn pauses_never_draw_below_half_the_ceiling() {
        let policy = BackoffPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(60),
            max_retries: 0,
        };
        for n in 0..12 {
            let ceiling = policy.ceiling(n);
            for seed in 0..50 {
                let p = policy.pause(n, unit(seed));
                assert!(p >= ceiling / 2 && p <= ceiling, "pause {n}: {p:?}");
            }
        }
        assert_eq!(
            policy.pause(20, 0.999_999),
            policy.pause(30, 0.999_999),
            "capped"
        );
        assert!(policy.pause(20, 0.0) >= Duration::from_secs(30));
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
